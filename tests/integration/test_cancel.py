# SPDX-License-Identifier: Apache-2.0
"""Cancellation through the real mesh, the parts a scheduler holds:
Scheduler.Cancel stores each cancel durably (the cancels topic) and every
scheduler reads every cancel, so the one that holds the execution ends it
with one CANCELLED result, and it never runs:
- an execution still waiting in Kafka (the scheduler paused);
- a cancel that arrives before its execution: it still wins;
- an execution waiting in the delay topic for its next attempt.
Ordinary executions beside them run once. The group's committed offsets
reach the end of the requests and delay topics."""
import os
import subprocess
import time

import grpc
import pytest

from mesh import BIN, Mesh, execution, pb, wait_for
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
