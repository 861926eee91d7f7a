# SPDX-License-Identifier: Apache-2.0
"""An Execute call marked `alone` (its execution was in flight at an
executor death) runs with nothing beside it, so that a death there is its
own. Called with python grpcio on a real executor and sink: while a 1.5 s
sleep runs, the alone call is held unaccepted and every other call is
refused RESOURCE_EXHAUSTED naming why; it starts only after the sleep
ended, and once it is done the executor takes work again. A call marked
alone with two executions is refused INVALID_ARGUMENT."""
import time

import grpc

from mesh import Mesh, execution, pb, read_all_results, wait_for
from execmesh.v1 import internal_pb2, internal_pb2_grpc


def results_of(call):
    return [r for msg in call for r in msg.results]


def test_an_execution_that_runs_alone_has_nothing_beside_it():
    m = Mesh("execute-alone", partitions=1)
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink])
        stub = internal_pb2_grpc.ExecutorStub(grpc.insecure_channel(ex.grpc_addr))
        req = internal_pb2.ExecuteRequest
        sleep = stub.Execute(req(executions=[execution("sleep", "sleep", b"1500", attempt=1)]), timeout=30)
        assert dict(sleep.initial_metadata()).get("execmesh-accepted"), "the sleep was not accepted"
        alone = stub.Execute(req(executions=[execution("alone", "echo", b"a", attempt=1)], alone=True), timeout=30)

        refusal = []

        def another_is_refused():
            try:
                results_of(stub.Execute(req(executions=[execution("other", "echo", b"o", attempt=1)]), timeout=10))
            except grpc.RpcError as e:
                refusal.append(e)
                return True
            return False
        # the executor takes no other work from the alone call's arrival
        wait_for(another_is_refused, 5, "another call refused while the alone call waits")
        assert refusal[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refusal[0]
        assert "an execution runs alone here" in refusal[0].details(), refusal[0].details()
        assert not alone.done(), "the alone call ended while the sleep still ran"

        got_sleep = results_of(sleep)
        got_alone = results_of(alone)
        assert [(r.id, r.status) for r in got_sleep] == [("sleep", pb.SUCCEEDED)], got_sleep
        assert [(r.id, r.status) for r in got_alone] == [("alone", pb.SUCCEEDED)], got_alone
        assert dict(alone.initial_metadata()).get("execmesh-accepted"), "the alone call was not accepted"
        # it started once nothing ran beside it
        assert got_alone[0].started_unix_ms >= got_sleep[0].finished_unix_ms, (got_alone, got_sleep)
        assert ex.metric("execmesh_executor_alone_runs_total") == 1

        # done: work is taken again
        after = results_of(stub.Execute(req(executions=[execution("after", "echo", b"x", attempt=1)]), timeout=10))
        assert [(r.id, r.status) for r in after] == [("after", pb.SUCCEEDED)], after

        # alone carries one execution
        try:
            results_of(stub.Execute(req(executions=[execution("two-a"), execution("two-b")], alone=True), timeout=10))
            raise AssertionError("an alone call of two executions was taken")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert "carries one execution, not 2" in e.details(), e.details()

        # each result the executor answered is durable, once
        got = read_all_results(m)
        for i in ["sleep", "alone", "after"]:
            assert [r.status for r in got.get(i, [])] == [pb.SUCCEEDED], (i, got.get(i))
        assert "two-a" not in got and "two-b" not in got
    finally:
        m.close()
