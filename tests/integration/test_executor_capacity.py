# SPDX-License-Identifier: Apache-2.0
"""An executor bounds the executions it holds: a batch beyond
executor.max_inflight gets RESOURCE_EXHAUSTED naming the limit and runs
nothing; a scheduler that meets the bound backs off and every execution still
completes, none lost."""

import grpc
import pytest

from mesh import Mesh, execution, pb, results_by_id, status_name, wait_for
from execmesh.v1 import internal_pb2, internal_pb2_grpc


def test_resource_exhausted_beyond_the_bound_then_everything_completes():
    m = Mesh("capacity")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "executor.max_inflight=4", "--set", "handlers.concurrency=2"])
        stub = internal_pb2_grpc.ExecutorStub(ex.channel())

        # 4 sleeps fill the executor (2 run, 2 wait for a handler slot)
        first = stub.Execute.future(internal_pb2.ExecuteRequest(executions=[
            execution(f"cap-{i}", "sleep", b"1500", attempt=1) for i in range(4)]), timeout=30)
        wait_for(lambda: ex.metric("execmesh_inflight") == 4, 10, "the executor to hold 4 executions")
        with pytest.raises(grpc.RpcError) as e:
            stub.Execute(internal_pb2.ExecuteRequest(executions=[execution("cap-x", "echo", b"", attempt=1)]),
                         timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit 4" in e.value.details(), e.value.details()
        resp = first.result(timeout=30)
        assert [status_name(r.status) for r in resp.results] == ["SUCCEEDED"] * 4
        assert ex.metric("execmesh_executor_busy_total") == 1

        # through a scheduler: it meets the bound, backs off, and still completes everything
        sched = m.start_scheduler([ex], args=["--set", "dispatch.batch_max=4", "--set", "dispatch.max_calls=4",
                                              "--set", "dispatch.retry_backoff_ms=20"])
        m.wait_assigned([sched], 6)
        ids = [f"cap-s-{i}" for i in range(40)]
        m.stub(sched).Submit(pb.SubmitRequest(executions=[execution(i, "sleep", b"50") for i in ids]), timeout=30)
        want = set(ids)
        got = results_by_id(m.kafka.read(m.topics["execmesh.results"], m.results_start,
                                         until=lambda r: want <= set(results_by_id(r)), timeout=60,
                                         what="all 40 results"))
        assert all(status_name(got[i][0].status) == "SUCCEEDED" for i in ids)
        busy = sched.metric("execmesh_scheduler_busy_total")
        print(f"\nCAPACITY scheduler_busy_answers={busy:.0f} executor_busy={ex.metric('execmesh_executor_busy_total'):.0f}")
        assert busy > 0, "the scheduler never met the executor's bound"
    finally:
        m.close()
