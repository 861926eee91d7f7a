# SPDX-License-Identifier: Apache-2.0
"""The scheduler checks every Execute answer before it counts anything
durable: an answer must carry one result per dispatched execution, with the
id and the attempt the scheduler sent. A python grpcio executor (not ours)
answers the first call OK with results whose attempts do not match and the
second call correctly (after publishing the results to the real sink, as an
executor does): the first answer is logged as a protocol error and counted
nothing, the executions run again as attempt 2, and each ends with the
result of attempt 2; the group's committed offsets reach the end."""
import threading
from concurrent import futures

import grpc

from mesh import Mesh, execution, pb, read_all_results, wait_for
from execmesh.v1 import internal_pb2, internal_pb2_grpc


class FakeExecutor(internal_pb2_grpc.ExecutorServicer):
    def __init__(self, sink_addr):
        self.calls = 0
        self.lock = threading.Lock()
        self.sink = internal_pb2_grpc.ResultSinkStub(grpc.insecure_channel(sink_addr))

    def Execute(self, request, context):
        with self.lock:
            self.calls += 1
            call = self.calls
        context.send_initial_metadata((("execmesh-accepted", "fake-executor"),))
        results = [pb.Result(id=e.id, attempt=e.attempt, status=pb.SUCCEEDED, output=e.payload,
                             executor="fake-executor", final=True) for e in request.executions]
        if call == 1:
            for r in results:
                r.attempt += 5  # not what was dispatched
            yield internal_pb2.ExecuteResponse(results=results)
            return  # OK, without a result for any dispatched execution
        self.sink.Publish(internal_pb2.PublishRequest(results=results), timeout=10)
        yield internal_pb2.ExecuteResponse(results=results)


def test_an_answer_that_does_not_match_counts_nothing():
    m = Mesh("execute-answers", partitions=1)
    server = None
    try:
        sink = m.start_sink()
        fake = FakeExecutor(sink.grpc_addr)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        internal_pb2_grpc.add_ExecutorServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()

        class Addr:
            grpc_addr = f"127.0.0.1:{port}"
        # no health service on the fake: the channel must not wait for one
        sched = m.start_scheduler([Addr], args=["--set", "kafka.start_paused=true"])
        m.wait_assigned([sched], 1)
        ids = [f"a-{i}" for i in range(5)]
        m.stub(sched).Submit(pb.SubmitRequest(executions=[execution(i) for i in ids]), timeout=30)
        sched.post("/admin/resume")
        wait_for(lambda: all(i in read_all_results(m) for i in ids), 60, "the results of the second answer")
        got = read_all_results(m)
        assert all([(r.attempt, r.status) for r in got[i]] == [(2, pb.SUCCEEDED)] for i in ids), got
        assert sched.metric("execmesh_scheduler_protocol_errors_total") >= 1
        assert sched.log_has("protocol error in an Execute answer")
        assert fake.calls == 2, fake.calls
        m.wait_lag_zero(30)
    finally:
        if server:
            server.stop(0)
        m.close()
