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
        # Execute streams its results back as they finish (the call starts at once)
        first = stub.Execute(internal_pb2.ExecuteRequest(executions=[
            execution(f"cap-{i}", "sleep", b"1500", attempt=1) for i in range(4)]), timeout=30)
        wait_for(lambda: ex.metric("execmesh_inflight") == 4, 10, "the executor to hold 4 executions")
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Execute(internal_pb2.ExecuteRequest(executions=[execution("cap-x", "echo", b"", attempt=1)]),
                              timeout=10))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit 4" in e.value.details(), e.value.details()
        results = [r for msg in first for r in msg.results]
        assert sorted((r.id, status_name(r.status)) for r in results) == [(f"cap-{i}", "SUCCEEDED") for i in range(4)]
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


def test_scheduler_holds_its_intake_at_the_pending_mark_and_loses_nothing():
    """dispatch.max_pending bounds what waits in the scheduler: at the mark
    the consumer takes nothing more (the backlog waits in Kafka), the
    scheduler says so (execmesh_scheduler_paused 1), and every execution
    still completes once the executor catches up."""
    m = Mesh("intake-hold")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink])
        mark = 5
        sched = m.start_scheduler([ex], args=["--set", f"dispatch.max_pending={mark}", "--set", "dispatch.batch_max=2",
                                              "--set", "dispatch.max_inflight=2", "--set", "dispatch.max_calls=1"])
        m.wait_assigned([sched], 6)
        ids = [f"hold-{i}" for i in range(60)]
        m.stub(sched).Submit(pb.SubmitRequest(executions=[execution(i, "sleep", b"200") for i in ids]), timeout=30)
        seen = {"pending": 0, "paused": 0}

        def held():
            seen["pending"] = max(seen["pending"], sched.metric("execmesh_scheduler_pending"))
            seen["paused"] = max(seen["paused"], sched.metric("execmesh_scheduler_paused"))
            return seen["paused"] == 1
        wait_for(held, 30, "the scheduler to hold its intake at the pending mark", interval=0.05)
        want = set(ids)
        got = results_by_id(m.kafka.read(m.topics["execmesh.results"], m.results_start,
                                         until=lambda r: (held(), want <= set(results_by_id(r)))[1], timeout=120,
                                         what="all 60 results"))
        assert all(status_name(got[i][0].status) == "SUCCEEDED" for i in ids)
        assert seen["pending"] <= mark, f"pending reached {seen['pending']}, past the mark {mark}"
        wait_for(lambda: sched.metric("execmesh_scheduler_paused") == 0, 30, "the scheduler to take records again")
        print(f"\nINTAKE_HOLD mark={mark} max_pending_seen={seen['pending']:.0f} executions={len(ids)} lost=0")
    finally:
        m.close()
