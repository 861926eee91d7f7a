# SPDX-License-Identifier: Apache-2.0
"""The executor's side of an execution's life, through the real mesh:
deadlines (timeout_ms bounds builtins, a caller's absolute deadline that
passed is not started, an execution refused while its handler is full runs
later with its whole timeout), exit codes an exec handler names as final, a
deep backlog on a handler of concurrency 1 (refused, never queued in the
executor), an oversized batch refused before allocation, and a scheduler stopped
while its calls outlive its drain. Liveness: the group's committed offsets
reach the end."""
import os
import signal
import time

from mesh import Mesh, execution, wait_for
from pg import max_overlap
from test_lifecycle import EXHAUSTED, FAILED, SUCCEEDED, TIMED_OUT, submit, wait_delay_drained, wait_results


def test_deadlines_bound_builtins_queue_time_and_callers_deadline():
    m = Mesh("lifecycle-deadline")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "handlers.concurrency=1"])
        sched = m.start_scheduler([ex])
        m.wait_assigned([sched], 6)
        past = int(time.time() * 1000) - 1000
        submit(m, sched, [execution("slow", "sleep", b"2000", timeout_ms=300),
                          execution("late", "echo", b"x", deadline_unix_ms=past, max_attempts=3)])
        got = wait_results(m, ["slow", "late"], 30, "the timed-out executions' results")
        assert [(r.status, r.final) for r in got["slow"]] == [(TIMED_OUT, True)], got["slow"]
        assert [(r.status, r.final) for r in got["late"]] == [(TIMED_OUT, True)], got["late"]
        assert "caller's deadline" in got["late"][0].error, got["late"][0].error
        # concurrency 1: the executor refuses the second while the first runs (nothing waits in
        # its memory); it waits in the scheduler, which knows no deadline for it (timeout_ms bounds
        # its run, not its wait), and runs after the first, its own full timeout
        submit(m, sched, [execution("q1", "sleep", b"1500", timeout_ms=1000),
                          execution("q2", "sleep", b"1500", timeout_ms=1000)])
        got = wait_results(m, ["q1", "q2"], 30, "the sleeps' results")
        assert all(len(got[i]) == 1 and got[i][0].status == TIMED_OUT for i in ("q1", "q2")), got
        assert all(got[i][0].error.startswith("sleep: timed out after 1000 ms") for i in ("q1", "q2")), got
        first, second = sorted((got[i][0] for i in ("q1", "q2")), key=lambda r: r.started_unix_ms)
        assert second.started_unix_ms >= first.finished_unix_ms - 5, "both ran at once on a handler of concurrency 1"
        m.wait_lag_zero(30)
    finally:
        m.close()


def test_exit_codes_named_final_are_not_retried():
    m = Mesh("lifecycle-exit-codes")
    try:
        sink = m.start_sink()
        cfg = os.path.join(m.dir, "executor.cfg")
        with open(cfg, "w") as f:
            f.write('handlers = { builtin = [ "echo" ]; exec = [ "bad", "flaky" ]; };\n'
                    'exec = {\n'
                    '  bad = { argv = [ "/bin/sh", "-c", "exit 3" ]; max_attempts = 3; no_retry_exit_codes = [ "3" ];\n'
                    '          retry_initial_ms = 50; };\n'
                    '  flaky = { argv = [ "/bin/sh", "-c", "exit 4" ]; max_attempts = 3; no_retry_exit_codes = [ "3" ];\n'
                    '            retry_initial_ms = 50; };\n'
                    '};\n')
        ex = m.start("executor", "executor-0", ["--config", cfg, "--set", f"sinks.target=ipv4:{sink.grpc_addr}"])
        sched = m.start_scheduler([ex])
        m.wait_assigned([sched], 6)
        submit(m, sched, [execution("bad", "bad", b""), execution("flaky", "flaky", b"")])
        got = wait_results(m, ["bad", "flaky"], 60, "the exec handlers' final results")
        assert [(r.status, r.exit_code, r.final) for r in got["bad"]] == [(FAILED, 3, True)], got["bad"]
        assert [(r.status, r.attempt) for r in sorted(got["flaky"], key=lambda r: r.attempt)] == \
            [(FAILED, 1), (FAILED, 2), (EXHAUSTED, 3)], got["flaky"]
        m.wait_lag_zero(30)
        wait_delay_drained(m)
    finally:
        m.close()


def test_a_deep_backlog_on_a_handler_of_concurrency_1_waits_in_the_scheduler():
    """1000 executions for a handler of concurrency 1, in batches of up to
    1000: the executor takes one at a time and refuses the rest (nothing
    queues in its memory: it never holds more than one), the scheduler sizes
    what it sends to what was taken, and every one runs exactly once."""
    m = Mesh("lifecycle-deep-backlog")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "handlers.concurrency=1", "--set", "executor.max_inflight=100000"])
        sched = m.start_scheduler([ex], args=["--set", "dispatch.max_inflight=100000",
                                              "--set", "dispatch.batch_max=1000", "--set", "dispatch.max_pending=100000"])
        m.wait_assigned([sched], 6)
        ids = [f"q-{i}" for i in range(1000)]
        submit(m, sched, [execution(i, "sleep", b"2") for i in ids])
        got = wait_results(m, ids, 180, "every execution's result")
        assert all(len(got[i]) == 1 and got[i][0].status == SUCCEEDED for i in ids)
        overlap = max_overlap([(got[i][0].started_unix_ms, got[i][0].finished_unix_ms) for i in ids])
        refused = sched.metric('execmesh_scheduler_refused_total{reason="handler_busy"}')
        taken = ex.metric("execmesh_executions_in_total")
        print(f"\nBACKLOG most_running_at_once={overlap} refused={refused:.0f} executor_took={taken:.0f}")
        assert overlap == 1, "the handler ran more than its concurrency at once"
        assert refused > 0, "the executor never refused: the test did not reach the handler's bound"
        assert taken == len(ids), "an execution was taken twice"
        m.wait_lag_zero(60)
    finally:
        m.close()


def test_an_oversized_batch_of_empty_executions_is_refused_before_allocating():
    """16 MiB of empty executions (8 million) exceed executor.max_inflight:
    refused RESOURCE_EXHAUSTED before anything is allocated for them (it
    used to cost about 1.7 GB)."""
    import grpc
    m = Mesh("lifecycle-empty-batch")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink])
        before = rss_kb(ex.p.pid)
        ch = grpc.insecure_channel(ex.grpc_addr, options=[("grpc.max_send_message_length", 32 << 20)])
        call = ch.unary_stream("/execmesh.v1.Executor/Execute", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
        body = b"\x0a\x00" * (8 * 1024 * 1024 - 64)
        try:
            list(call(body, timeout=30))
            raise AssertionError("the executor accepted 8 million executions")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            assert "at capacity" in e.details(), e.details()
        grown = rss_kb(ex.p.pid) - before
        assert grown < 200_000, f"the executor grew by {grown} KiB refusing it"
        ch.close()
    finally:
        m.close()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_a_scheduler_stopped_while_calls_outlive_its_drain_exits_cleanly():
    m = Mesh("lifecycle-drain-exit")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "handlers.concurrency=64"])
        sched = m.start_scheduler([ex], args=["--set", "drain.timeout_ms=500", "--set", "revoke.timeout_ms=200"])
        m.wait_assigned([sched], 6)
        submit(m, sched, [execution(f"s-{i}", "sleep", b"5000", timeout_ms=20000) for i in range(20)])
        wait_for(lambda: sched.metric("execmesh_inflight") == 20, 30, "the sleeps to be in flight")
        sched.signal(signal.SIGTERM)
        assert sched.wait_exit(20) == 0  # the cancelled calls' answers arm nothing on freed timers
        sched2 = m.start_scheduler([ex], name="scheduler-1")
        got = wait_results(m, [f"s-{i}" for i in range(20)], 60, "the sleeps' results")
        assert all(any(r.status == SUCCEEDED for r in got[f"s-{i}"]) for i in range(20)), \
            {i: [(r.attempt, r.status, r.error) for r in v] for i, v in got.items()}
        m.wait_lag_zero(30)
        assert sched2.alive()
    finally:
        m.close()
