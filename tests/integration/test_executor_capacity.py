# SPDX-License-Identifier: Apache-2.0
"""An executor bounds the executions it holds, and nothing waits in it: on
the arrival of an Execute call it takes the executions that fit (their
handler below its concurrency, the executor below executor.max_inflight,
counting those taken before them in the same call) and refuses the others
one by one, naming each in one message before any result (ExecuteResponse
.refused: the limit met and its value, handler_busy for a handler's limit);
nothing of them runs and they get no result. A call all of whose
executions meet their handlers' concurrency is answered with the refusals
alone (OK, so the caller knows which handlers to delay); one that finds no
room at all in executor.max_inflight is refused whole with
RESOURCE_EXHAUSTED. With
report_finished every execution is named in a `finished` message as soon as
it ran to its end, before its result. Called with python grpcio on a real
executor and sink; then through a scheduler that meets the bounds, backs
off and still completes everything, none lost."""

import grpc
import pytest

from mesh import Mesh, execution, pb, read_all_results, results_by_id, status_name, wait_for
from execmesh.v1 import internal_pb2, internal_pb2_grpc

REFUSED_BUSY = 'execmesh_executor_executions_refused_total{reason="handler_busy"}'
REFUSED_FULL = 'execmesh_executor_executions_refused_total{reason="max_inflight"}'
LONG = b"600000"  # a sleep that ends only when cancelled


def sleeps(prefix, n, payload=LONG):
    return [execution(f"{prefix}-{i}", "sleep", payload, attempt=1, timeout_ms=600_000) for i in range(n)]


def kinds(msg):
    """What one ExecuteResponse message carries, e.g. {"refused", "results"}."""
    return {k for k in ("results", "finished", "refused") if len(getattr(msg, k))}


def execute(stub, executions, **kw):
    """Every message of an Execute answer, in order."""
    return list(stub.Execute(internal_pb2.ExecuteRequest(executions=executions, **kw), timeout=60))


def refused_whole(stub, executions):
    with pytest.raises(grpc.RpcError) as e:
        execute(stub, executions)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    return e.value.details()


def test_a_batch_beyond_its_handlers_concurrency_is_refused_one_by_one():
    K, N = 3, 5
    m = Mesh("capacity-handler")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", f"handlers.concurrency={K}"])
        stub = internal_pb2_grpc.ExecutorStub(ex.channel())

        # N sleeps of a handler of concurrency K: K taken, N - K refused in the first message
        first = stub.Execute(internal_pb2.ExecuteRequest(executions=sleeps("busy", N)), timeout=60)
        assert dict(first.initial_metadata()).get("execmesh-accepted") == "executor-0"
        msg = next(first)
        assert kinds(msg) == {"refused"}, msg
        assert [(r.id, r.attempt, r.handler, r.handler_busy) for r in msg.refused] == \
            [(f"busy-{i}", 1, "sleep", True) for i in range(K, N)], msg.refused
        for r in msg.refused:
            assert r.reason == f"handler sleep runs {K} executions, its concurrency {K}", r.reason
        assert ex.metric("execmesh_inflight") == K
        assert ex.metric(REFUSED_BUSY) == N - K and ex.metric(REFUSED_FULL) == 0

        # while they run: a sleep is refused, an echo (no concurrency of its own) is taken, an unknown
        # handler is no refusal (REJECTED)
        got = execute(stub, [execution("more-sleep", "sleep", b"10", attempt=1), execution("more-echo", "echo", b"e", attempt=1),
                             execution("more-nohandler", "nohandler", b"", attempt=1)])
        assert kinds(got[0]) == {"refused"}, got
        assert [(r.id, r.handler_busy) for r in got[0].refused] == [("more-sleep", True)], got[0]
        assert all("refused" not in kinds(g) for g in got[1:]), got
        res = {r.id: r for g in got for r in g.results}
        assert sorted(res) == ["more-echo", "more-nohandler"], res
        assert res["more-echo"].status == pb.SUCCEEDED and res["more-nohandler"].status == pb.REJECTED, res
        assert "unknown handler 'nohandler'" in res["more-nohandler"].error

        # a second batch none of which fits: answered with its refusals alone, OK, nothing run
        got = execute(stub, sleeps("second", 2, b"10"))
        assert len(got) == 1 and kinds(got[0]) == {"refused"}, got
        assert [(r.id, r.handler_busy) for r in got[0].refused] == [("second-0", True), ("second-1", True)], got
        assert ex.metric("execmesh_executor_busy_total") == 0
        assert ex.metric(REFUSED_BUSY) == N - K + 1 + 2

        # the K running end (cancelled): exactly K results, none for the refused
        cancel = stub.Cancel(pb.CancelRequest(ids=[f"busy-{i}" for i in range(N)]), timeout=10)
        assert sorted(cancel.ids) == [f"busy-{i}" for i in range(K)], cancel.ids
        rest = list(first)
        assert all("refused" not in kinds(g) for g in rest), rest
        results = [r for g in rest for r in g.results]
        assert sorted((r.id, r.status) for r in results) == [(f"busy-{i}", pb.CANCELLED) for i in range(K)], results

        # their slots are free again: K sleeps are all taken, and run
        got = execute(stub, sleeps("again", K, b"10"))
        assert all("refused" not in kinds(g) for g in got), got
        assert sorted((r.id, r.status) for g in got for r in g.results) == \
            [(f"again-{i}", pb.SUCCEEDED) for i in range(K)]
        wait_for(lambda: ex.metric("execmesh_inflight") == 0, 10, "the executor to hold nothing")

        # nothing of the refused ran or was stored
        stored = read_all_results(m)
        for i in [f"busy-{k}" for k in range(K, N)] + ["more-sleep", "second-0", "second-1"]:
            assert i not in stored, (i, stored.get(i))
        assert [r.status for r in stored["busy-0"]] == [pb.CANCELLED]
    finally:
        m.close()


def test_beyond_max_inflight_the_excess_is_refused_as_the_executors_limit():
    m = Mesh("capacity-inflight")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "executor.max_inflight=3", "--set", "handlers.concurrency=8",
                                            "--set", "publish.group_max_bytes=131072",
                                            "--set", "publish.max_result_bytes=131072"])
        stub = internal_pb2_grpc.ExecutorStub(ex.channel())

        # a batch larger than the executor's bound: the first 3 taken, the rest refused, not as a handler's
        got = execute(stub, [execution(f"big-{i}", "echo", b"b", attempt=2) for i in range(5)])
        assert kinds(got[0]) == {"refused"}, got
        assert [(r.id, r.attempt, r.handler, r.handler_busy, r.reason) for r in got[0].refused] == \
            [(f"big-{i}", 2, "echo", False, "executor at executor.max_inflight 3") for i in (3, 4)], got[0]
        assert sorted((r.id, r.status) for g in got[1:] for r in g.results) == \
            [(f"big-{i}", pb.SUCCEEDED) for i in range(3)], got
        assert ex.metric(REFUSED_FULL) == 2 and ex.metric(REFUSED_BUSY) == 0

        # refusals that would not fit one answer message (publish.group_max_bytes 128 KiB): refused whole
        details = refused_whole(stub, [execution(f"{i:04d}-" + "i" * 1000, "echo", b"", attempt=1) for i in range(300)])
        assert details.startswith("executor at capacity: batch of 300, 3 taken") and "group_max_bytes" in details, details
        assert ex.metric(REFUSED_FULL) == 2 and ex.metric("execmesh_inflight") == 0

        # full: a call finds no room at all and is refused whole, naming the limit
        fill = stub.Execute(internal_pb2.ExecuteRequest(executions=sleeps("fill", 3)), timeout=60)
        assert dict(fill.initial_metadata()).get("execmesh-accepted")
        wait_for(lambda: ex.metric("execmesh_inflight") == 3, 10, "the executor to hold 3 executions")
        details = refused_whole(stub, [execution("cap-x", "echo", b"", attempt=1)])
        assert details == "executor at capacity: 3 executions in flight, limit 3, batch of 1", details
        assert ex.metric("execmesh_executor_busy_total") == 2
        stub.Cancel(pb.CancelRequest(ids=[f"fill-{i}" for i in range(3)]), timeout=10)
        assert sorted((r.id, r.status) for g in fill for r in g.results) == [(f"fill-{i}", pb.CANCELLED) for i in range(3)]
    finally:
        m.close()


def test_report_finished_names_every_execution_before_its_result():
    m = Mesh("capacity-finished")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink])
        stub = internal_pb2_grpc.ExecutorStub(ex.channel())
        want = [execution("f-echo", "echo", b"e", attempt=1), execution("f-short", "sleep", b"20", attempt=1),
                execution("f-long", "sleep", b"600", attempt=1), execution("f-fail", "fail", b"x", attempt=1)]
        got = execute(stub, want, report_finished=True)
        order = [(k, i) for g in got for k in ("finished", "results")
                 for i in (getattr(g, k) if k == "finished" else [r.id for r in g.results])]
        finished = [i for k, i in order if k == "finished"]
        assert sorted(finished) == sorted(e.id for e in want), order  # each once
        for e in want:
            assert order.index(("finished", e.id)) < order.index(("results", e.id)), order
        # one is not held back for another: the short sleep is named before the long one ended
        assert order.index(("finished", "f-short")) < order.index(("finished", "f-long")), order

        # unset: a call of several executions gets no finished message, a call of one does (as before)
        got = execute(stub, [execution("n-a", "echo", b"a", attempt=1), execution("n-b", "echo", b"b", attempt=1)])
        assert not any(g.finished for g in got), got
        got = execute(stub, [execution("n-one", "echo", b"a", attempt=1)])
        assert [list(g.finished) for g in got if g.finished] == [["n-one"]], got
    finally:
        m.close()


def test_a_scheduler_that_meets_the_bounds_still_completes_everything():
    m = Mesh("capacity")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "executor.max_inflight=4", "--set", "handlers.concurrency=2"])
        sched = m.start_scheduler([ex], args=["--set", "dispatch.batch_max=4", "--set", "dispatch.max_calls=4",
                                              "--set", "dispatch.retry_backoff_ms=20"])
        m.wait_assigned([sched], 6)
        ids = [f"cap-s-{i}" for i in range(40)]
        m.stub(sched).Submit(pb.SubmitRequest(executions=[execution(i, "sleep", b"50") for i in ids]), timeout=30)
        want = set(ids)
        got = results_by_id(m.kafka.read(m.topics["execmesh.results"], m.results_start,
                                         until=lambda r: want <= set(results_by_id(r)), timeout=60,
                                         what="all 40 results"))
        assert all([status_name(r.status) for r in got[i]] == ["SUCCEEDED"] for i in ids), got
        busy, busy_refused, full_refused = (ex.metric(n) for n in ("execmesh_executor_busy_total", REFUSED_BUSY,
                                                                     REFUSED_FULL))
        print(f"\nCAPACITY executor_busy_calls={busy:.0f} refused_handler_busy={busy_refused:.0f} "
              f"refused_max_inflight={full_refused:.0f}")
        assert busy + busy_refused + full_refused > 0, "the scheduler never met the executor's bounds"
        m.wait_lag_zero(30)
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
