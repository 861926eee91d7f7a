# SPDX-License-Identifier: Apache-2.0
"""Cancellation through the real mesh. Scheduler.Cancel stores each cancel
durably (the cancels topic) and every scheduler reads every cancel, so the
one that holds the execution ends it with one CANCELLED result, and it never
runs (again):
- an execution still waiting in Kafka (the scheduler paused);
- a cancel that arrives before its execution: it still wins;
- an execution waiting in the delay topic for its next attempt;
- executions an executor holds (the scheduler asks that executor): a
  running builtin sleep, and a running exec child of 600 s that ignores
  SIGTERM, whose process group is gone within kill_grace_ms + 1 s of the
  cancel; and, asked of the executor directly, one it took and has not begun
  (nothing waits in an executor for a handler, but a call that runs alone is
  held until nothing else runs there), which never starts.
Ordinary executions beside them run once. The group's committed offsets
reach the end of the requests and delay topics."""
import os
import signal
import subprocess
import time

import grpc
import pytest

from mesh import BIN, Mesh, execution, pb, wait_for
from execmesh.v1 import internal_pb2, internal_pb2_grpc
from test_lifecycle import wait_delay_drained, wait_results

CANCELLED, SUCCEEDED, FAILED = pb.CANCELLED, pb.SUCCEEDED, pb.FAILED


def started(journal, eid):
    """The attempts of eid the executor started (its journal's S lines)."""
    if not os.path.exists(journal):
        return []
    with open(journal) as f:
        return [int(p[3]) for p in (line.split() for line in f) if p[1:3] == ["S", eid]]


def test_cancelled_before_it_runs_ends_cancelled_and_never_runs():
    m = Mesh("cancel")
    try:
        sink = m.start_sink()
        journal = os.path.join(m.dir, "executor.journal")
        ex = m.start_executor([sink], args=["--set", f"executor.journal={journal}"])
        sched = m.start_scheduler([ex], args=["--set", "kafka.start_paused=true"])
        m.wait_assigned([sched], 6)
        stub = m.stub(sched)

        # a cancel that comes before its execution
        assert list(stub.Cancel(pb.CancelRequest(ids=["early"]), timeout=30).ids) == ["early"]
        # executions waiting in Kafka (consumption paused), two of them cancelled
        waiting = [f"wait-{i}" for i in range(6)]
        stub.Submit(pb.SubmitRequest(executions=[execution(i) for i in waiting] + [execution("early")]), timeout=30)
        # one through the API, one with the operators' tool
        stub.Cancel(pb.CancelRequest(ids=waiting[:1]), timeout=30)
        r = subprocess.run([BIN["ctl"], "cancel", "--target", f"ipv4:{sched.grpc_addr}", waiting[1]],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout == f"cancelled {waiting[1]}\n", r
        wait_for(lambda: sched.metric("execmesh_scheduler_cancels_seen_total") == 3, 30,
                 "the scheduler to read the 3 cancels")
        sched.post("/admin/resume")
        got = wait_results(m, waiting + ["early"], 60, "the waiting executions' results")
        for i in waiting[:2] + ["early"]:
            assert [(r.status, r.final, r.attempt) for r in got[i]] == [(CANCELLED, True, 1)], (i, got[i])
            assert got[i][0].error.startswith("cancelled while it waited in Kafka"), got[i][0].error
            assert started(journal, i) == [], f"{i} ran although cancelled"
        for i in waiting[2:]:
            assert [(r.status, r.final) for r in got[i]] == [(SUCCEEDED, True)], (i, got[i])

        # an execution waiting in the delay topic for its next attempt, as a
        # scheduler writes it after a failed attempt (attempt 2, the first in
        # its history), due in 5 s
        retry = execution("retrying", "fail", b"x", max_attempts=3, attempt=2,
                          history=[pb.Attempt(attempt=1, status=FAILED, executor="executor-0", error="fail handler: x")])
        p = m.kafka.producer()
        due = int(time.time() * 1000) + 5000
        p.produce(m.topics["execmesh.delay"], retry.SerializeToString(), key="retrying",
                  headers=[("execmesh-due-ms", str(due).encode()),
                           ("execmesh-target", m.topics["execmesh.requests"].encode())])
        assert p.flush(30) == 0
        stub.Cancel(pb.CancelRequest(ids=["retrying"]), timeout=30)
        got = wait_results(m, ["retrying"], 60, "the cancelled retry's result")
        assert [(r.status, r.final, r.attempt) for r in got["retrying"]] == [(CANCELLED, True, 2)], got["retrying"]
        assert got["retrying"][0].error.startswith("cancelled while its next attempt waited"), got["retrying"][0]
        assert [h.attempt for h in got["retrying"][0].history] == [1], got["retrying"][0].history
        assert got["retrying"][0].finished_unix_ms >= due, "the retry came back before its due time"
        assert started(journal, "retrying") == [], "the cancelled next attempt ran"

        assert sched.metric("execmesh_scheduler_cancelled_total") == 4
        m.wait_lag_zero(30)
        wait_delay_drained(m)
        # a cancel of nothing is refused by name
        with pytest.raises(grpc.RpcError) as e:
            stub.Cancel(pb.CancelRequest(ids=[""]), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ids[0]" in e.value.details()
    finally:
        m.close()


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_a_cancel_reaches_the_executor_that_holds_it():
    m = Mesh("cancel-executor")
    pgid = None
    try:
        sink = m.start_sink()
        journal = os.path.join(m.dir, "executor.journal")
        pidfile = os.path.join(m.dir, "child.pid")
        cfg = os.path.join(m.dir, "executor.cfg")
        grace_ms = 1000
        with open(cfg, "w") as f:
            # the child ignores SIGTERM (inherited across exec): only the SIGKILL after the grace ends it
            f.write('handlers = { builtin = [ "echo", "sleep" ]; exec = [ "sleeper" ]; };\n'
                    'exec = { sleeper = { argv = [ "/bin/sh", "-c", "trap \'\' TERM; read f; echo $$ > $f; '
                    f'exec sleep 600" ]; kill_grace_ms = {grace_ms}; default_timeout_ms = 900000; }}; }};\n'  # ok-sleep: the child under test
                    'builtin = { sleep = { default_timeout_ms = 900000; }; };\n')
        ex = m.start_executor([sink], args=["--config", cfg, "--set", f"executor.journal={journal}"])
        sched = m.start_scheduler([ex])
        m.wait_assigned([sched], 6)
        stub = m.stub(sched)
        ordinary = [f"ok-{i}" for i in range(4)]
        stub.Submit(pb.SubmitRequest(executions=[execution("hold", "sleep", b"600000")]), timeout=30)
        wait_for(lambda: started(journal, "hold") == [1], 30, "the long builtin sleep to start")
        stub.Submit(pb.SubmitRequest(executions=[execution("child", "sleeper", (pidfile + "\n").encode())]
                                     + [execution(i) for i in ordinary]), timeout=30)
        wait_for(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(), 30, "the exec child to start")
        pgid = int(open(pidfile).read())
        got = wait_results(m, ordinary, 30, "the ordinary executions' results")
        for i in ordinary:
            assert [(r.status, r.final) for r in got[i]] == [(SUCCEEDED, True)], (i, got[i])

        # taken and not begun: a call that runs alone (as a scheduler sends one after an executor death)
        # is held unaccepted while hold and child run; a cancel finds it there, and it never starts
        exstub = internal_pb2_grpc.ExecutorStub(ex.channel())
        held = exstub.Execute(internal_pb2.ExecuteRequest(executions=[execution("held", "sleep", b"10", attempt=1)],
                                                          alone=True), timeout=60)
        wait_for(lambda: list(exstub.Cancel(pb.CancelRequest(ids=["held"]), timeout=10).ids) == ["held"], 10,
                 "the executor to hold the alone call and find it for the cancel")
        assert not held.done() and started(journal, "held") == []

        # the running builtin
        stub.Cancel(pb.CancelRequest(ids=["hold"]), timeout=30)
        got = wait_results(m, ["hold"], 30, "the running sleep's result")
        assert [(r.status, r.final, r.attempt) for r in got["hold"]] == [(CANCELLED, True, 1)], got["hold"]
        assert got["hold"][0].error.startswith("cancelled while running"), got["hold"][0].error

        # the running exec child: its process group is gone within kill_grace_ms + 1 s
        assert group_alive(pgid)
        t0 = time.monotonic()
        stub.Cancel(pb.CancelRequest(ids=["child"]), timeout=30)
        wait_for(lambda: not group_alive(pgid), (grace_ms + 1000) / 1000, "the child's process group to be gone",
                 interval=0.01)
        gone_ms = (time.monotonic() - t0) * 1000
        got = wait_results(m, ["child"], 30, "the cancelled child's result")
        assert [(r.status, r.final, r.attempt) for r in got["child"]] == [(CANCELLED, True, 1)], got["child"]
        assert "SIGTERM to its process group, then SIGKILL" in got["child"][0].error, got["child"][0].error
        pgid = None

        # nothing runs beside it now: the alone call is accepted, and its cancelled execution ends unstarted
        answer = [r for msg in held for r in msg.results]
        assert dict(held.initial_metadata()).get("execmesh-accepted"), "the alone call was not accepted"
        assert [(r.id, r.status, r.final) for r in answer] == [("held", CANCELLED, True)], answer
        assert answer[0].error == "cancelled before it started", answer[0].error

        # never run again; the rest ran once
        m.wait_lag_zero(30)
        assert started(journal, "held") == [] and started(journal, "hold") == [1] and started(journal, "child") == [1]
        got = wait_results(m, ["held", "hold", "child"] + ordinary, 30, "every result")
        assert all(len(got[i]) == 1 for i in ["held", "hold", "child"] + ordinary), got
        assert sched.metric("execmesh_scheduler_executor_cancels_total") >= 2
        print(f"CANCEL executor: one taken and not begun, a running builtin and an exec child cancelled; process "
              f"group gone in {gone_ms:.0f} ms (kill_grace_ms {grace_ms})")
    finally:
        if pgid is not None and group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        m.close()
