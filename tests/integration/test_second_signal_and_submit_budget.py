# SPDX-License-Identifier: Apache-2.0
"""Two behaviours of a running mesh, each through real processes:

- A second SIGTERM during a drain that is stuck (an executor holding a 60 s
  sleep under a 60 s drain timeout) ends the process at once with exit code
  128 + SIGTERM and a log line saying so, while the first SIGTERM alone
  leaves it draining.
- Submit has an in-flight byte budget (submit.max_inflight_bytes): a Submit
  beyond it is refused with RESOURCE_EXHAUSTED naming the budget and writes
  nothing, while Submits within it still run, one after the other (the
  budget is released when a call is answered), and their results arrive."""
import signal
import time

import grpc
import pytest

from mesh import Mesh, execution, pb, results_by_id, status_name, wait_for

SECOND_SIGNAL_LOG = "second signal during the drain: exiting now without finishing in-flight work"


def test_second_sigterm_ends_a_stuck_drain_at_once():
    m = Mesh("second-signal")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "drain.timeout_ms=60000"])
        sched = m.start_scheduler([ex], args=["--set", "drain.timeout_ms=1000"])
        m.wait_assigned([sched], 6)
        m.stub(sched).Submit(pb.SubmitRequest(executions=[
            execution("stuck-sleep", "sleep", b"60000", timeout_ms=120000)]), timeout=30)
        wait_for(lambda: ex.metric("execmesh_inflight") >= 1, 30, "the executor to hold the 60 s sleep")

        ex.signal(signal.SIGTERM)
        wait_for(lambda: ex.log_has("signal received, draining"), 10, "the executor to log that it drains")
        # the drain waits for the sleep: one SIGTERM alone has not ended it
        assert ex.metric("execmesh_inflight") >= 1, "the sleep is no longer held: the drain is not stuck"
        assert ex.alive(), f"the executor exited on the first SIGTERM; log:\n{ex.log_tail()}"
        assert not ex.log_has(SECOND_SIGNAL_LOG)

        t0 = time.monotonic()
        ex.signal(signal.SIGTERM)
        code = ex.wait_exit(5)
        took = time.monotonic() - t0
        m.procs.remove(ex)  # its non-zero exit is the point, not a failure of close()
        assert code == 128 + signal.SIGTERM, f"exit code {code}; log:\n{ex.log_tail()}"
        events = ex.log_events(SECOND_SIGNAL_LOG)
        assert events and events[0].get("level") == "error", f"no error line saying why; log:\n{ex.log_tail()}"
        print(f"\nSECOND_SIGNAL exit_code={code} seconds_after_second_signal={took:.2f}")
    finally:
        m.close()


def test_submit_beyond_the_inflight_budget_is_refused_and_small_ones_still_run():
    m = Mesh("submit-budget")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink])
        budget = 65536
        sched = m.start_scheduler([ex], args=["--set", f"submit.max_inflight_bytes={budget}"])
        m.wait_assigned([sched], 6)
        stub = m.stub(sched)
        requests = m.topics["execmesh.requests"]

        before = m.kafka.end_offsets(requests)
        big = [execution(f"big-{i}", "echo", b"x" * 20000) for i in range(4)]  # 80 KB of payloads
        with pytest.raises(grpc.RpcError) as e:
            stub.Submit(pb.SubmitRequest(executions=big), timeout=30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        details = e.value.details()
        assert details.startswith("submit: ") and f"bytes in flight, limit {budget} (submit.max_inflight_bytes)" \
            in details, details
        assert m.kafka.end_offsets(requests) == before, "the refused Submit wrote executions"

        # each a quarter of the budget and more when charged (3 x its size): four pass one after the other only
        # if every answered call gave its bytes back
        ids = []
        for i in range(4):
            resp = stub.Submit(pb.SubmitRequest(executions=[execution(f"small-{i}", "echo", b"y" * 6000)]),
                               timeout=30)
            ids += list(resp.ids)
        assert ids == [f"small-{i}" for i in range(4)]
        want = set(ids)
        got = results_by_id(m.kafka.read(m.topics["execmesh.results"], m.results_start,
                                         until=lambda r: want <= set(results_by_id(r)), timeout=60,
                                         what="the small Submits' results"))
        for i in ids:
            assert status_name(got[i][0].status) == "SUCCEEDED", got[i][0]
            assert got[i][0].output == b"y" * 6000
        assert not [i for i in got if i.startswith("big-")], "a refused execution ran"
    finally:
        m.close()
