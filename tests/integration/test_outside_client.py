# SPDX-License-Identifier: Apache-2.0
"""An outside client (python grpcio from Debian, not our code) calls Submit,
grpc.health.v1.Health/Check and Watch on every role, sees UNIMPLEMENTED for an
unknown method and NOT_FOUND for an unknown service name, and sees each
replica turn NOT_SERVING on its Watch stream after SIGTERM, then exit 0."""
import re
import signal
import threading

import grpc

from mesh import NOT_SERVING, SERVING, Mesh, execution, health_pb2, pb, results_by_id, status_name


def test_grpcio_submit_check_watch_and_drain():
    m = Mesh("outside")
    try:
        drain = ["--set", "drain.notserving_ms=1000"]
        sink = m.start_sink(args=drain)
        ex = m.start_executor([sink], args=drain)
        sched = m.start_scheduler([ex], args=drain)
        m.wait_assigned([sched], 6)

        # Check: "" and each service's own name; unknown name -> NOT_FOUND
        for proc, svc in ((sched, "execmesh.v1.Scheduler"), (ex, "execmesh.v1.Executor"),
                          (sink, "execmesh.v1.ResultSink")):
            assert proc.health_check("") == SERVING
            assert proc.health_check(svc) == SERVING
            try:
                proc.health_check("no.such.Service")
                raise AssertionError("Check of an unknown service name answered")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND, e

        # an unknown method is UNIMPLEMENTED, not a hang
        nope = sched.channel().unary_unary("/execmesh.v1.Scheduler/Nope")
        try:
            nope(b"", timeout=5)
            raise AssertionError("unknown method answered OK")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e

        # Submit from grpcio, results read back
        resp = m.stub(sched).Submit(pb.SubmitRequest(executions=[
            execution("oc-1", "echo", b"hi", headers={"tenant": "acme", "trace": "00-ab-cd-01"}),
            execution("", "sha256", b"abc")]), timeout=10)
        assert resp.ids[0] == "oc-1" and len(resp.ids[1]) == 32
        recs = m.kafka.read(m.topics["execmesh.results"], m.results_start,
                            until=lambda r: len(results_by_id(r)) >= 2, timeout=30, what="2 results")
        got = results_by_id(recs)
        assert got["oc-1"][0].output == b"hi"
        hs = dict(got["oc-1"][0].headers)  # copied from the execution, with the traceparent Submit gave it
        assert re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$", hs.pop("traceparent", "")), got["oc-1"][0].headers
        assert hs == {"tenant": "acme", "trace": "00-ab-cd-01"}, hs
        assert got["oc-1"][0].submitted_unix_ms > 0 and got["oc-1"][0].finished_unix_ms >= got["oc-1"][0].started_unix_ms
        assert got[resp.ids[1]][0].output == b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        assert all(status_name(r[0].status) == "SUCCEEDED" for r in got.values())

        # Watch on each, SIGTERM each (scheduler first: it needs the others to drain)
        for proc in (sched, ex, sink):
            seen = []
            ended = threading.Event()
            stream = proc.health_watch("", timeout=60)

            def watch():
                try:
                    for r in stream:
                        seen.append(r.status)
                        if r.status == SERVING and len(seen) == 1:
                            first.set()
                except grpc.RpcError as e:
                    seen.append(e.code())
                finally:
                    ended.set()
            first = threading.Event()
            t = threading.Thread(target=watch)
            t.start()
            assert first.wait(10), f"{proc.name}: no first Watch message"
            proc.signal(signal.SIGTERM)
            assert ended.wait(30), f"{proc.name}: Watch stream did not end after SIGTERM"
            assert seen[0] == SERVING and seen[1] == NOT_SERVING, (proc.name, seen)
            assert seen[-1] == grpc.StatusCode.UNAVAILABLE, (proc.name, seen)
            assert proc.wait_exit(40) == 0, f"{proc.name} exit code"
            t.join(5)
    finally:
        m.close()
