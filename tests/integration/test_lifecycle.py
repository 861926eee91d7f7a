# SPDX-License-Identifier: Apache-2.0
"""The life of an execution, through the real mesh: every execution ends
with one final outcome in bounded time, and one bad execution holds up or
takes down nothing else.

- retries: FAILED attempts run again up to max_attempts, each after its
  backoff, the waits stored in the delay topic; the last ends EXHAUSTED with
  the whole history; REJECTED and single-attempt failures end at once; a
  waiting retry survives a kill -9 of the scheduler;
(deadlines, final exit codes and the executor's own bounds:
test_executor_lifecycle.py)
- long jobs run once: a job longer than the executors' connection age runs
  once, and the short executions dispatched with it are stored and
  committed while it runs;
- poison: an execution that kills its executor is quarantined (EXHAUSTED)
  after quarantine.executor_deaths deaths, with executors restarted as a
  supervisor would, and every other execution of the run completes.

Every test also checks liveness: the group's committed offsets reach the
end of the requests topic and of the delay topic."""
import os
import signal
import time

from mesh import Mesh, execution, free_port, pb, read_all_results, wait_for

LONG = os.environ.get("EM_LONG") == "1"
FAILED, TIMED_OUT, EXHAUSTED, SUCCEEDED = pb.FAILED, pb.TIMED_OUT, pb.EXHAUSTED, pb.SUCCEEDED


def submit(m, sched, executions):
    return list(m.stub(sched).Submit(pb.SubmitRequest(executions=executions), timeout=30).ids)


def wait_results(m, want, timeout, what):
    """Waits until every id in want has a final result; returns {id: [Result]}."""
    last = {}

    def done():
        got = read_all_results(m)
        last.clear()
        last.update(got)
        return all(any(r.final for r in got.get(i, [])) for i in want)
    try:
        wait_for(done, timeout, what, interval=0.5)
    except AssertionError as e:
        missing = [i for i in want if not any(r.final for r in last.get(i, []))]
        raise AssertionError(f"{e}: {len(missing)} without a final result, e.g. {missing[:5]}") from None
    return last


def report(name, got, ids):
    """One line of figures per test: executions, attempts (records), final statuses, lost, and
    duplicates: final records beyond one per execution (a re-run after a crash)."""
    records = [r for i in ids for r in got.get(i, [])]
    finals = {}
    for r in records:
        if r.final:
            finals[pb.Status.Name(r.status)] = finals.get(pb.Status.Name(r.status), 0) + 1
    lost = sum(1 for i in ids if not any(r.final for r in got.get(i, [])))
    dups = sum(max(0, sum(1 for r in got.get(i, []) if r.final) - 1) for i in ids)
    print(f"\nLIFECYCLE {name}: executions={len(ids)} attempts={len(records)} finals={dict(sorted(finals.items()))} "
          f"lost={lost} duplicates={dups}")


def wait_delay_drained(m, timeout=60):
    """The delay runners' group committed the end of the delay topic: no
    retry is left waiting or half forwarded."""
    topic = m.topics["execmesh.delay"]
    wait_for(lambda: not any(m.kafka.lag(m.group + ".delay", topic).values()), timeout,
             "the delay topic's committed offsets to reach its end", interval=0.3)


def test_failed_attempts_retry_then_exhausted_with_history():
    m = Mesh("lifecycle-retry")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "builtin.fail.retry_initial_ms=300",
                                            "--set", "builtin.fail.retry_max_ms=600"])
        sched = m.start_scheduler([ex])
        m.wait_assigned([sched], 6)
        fails = [f"fail-{i}" for i in range(20)]
        echoes = [f"echo-{i}" for i in range(20)]
        once = [f"once-{i}" for i in range(5)]
        rejected = ["nohandler-0"]
        submit(m, sched, [execution(i, "fail", b"boom \xff", max_attempts=3) for i in fails]
               + [execution(i, "echo", b"hi", max_attempts=3) for i in echoes]
               + [execution(i, "fail", b"once") for i in once]
               + [execution(i, "no-such-handler", b"", max_attempts=3) for i in rejected])
        got = wait_results(m, fails + echoes + once + rejected, 90, "every execution's final result")
        for i in fails:
            rs = sorted(got[i], key=lambda r: r.attempt)
            assert [r.attempt for r in rs] == [1, 2, 3], (i, [(r.attempt, r.status) for r in rs])
            assert [r.final for r in rs] == [False, False, True], i
            assert [r.status for r in rs] == [FAILED, FAILED, EXHAUSTED], i
            assert rs[2].error.startswith("exhausted: 3 attempts"), rs[2].error
            assert [h.attempt for h in rs[2].history] == [1, 2, 3], rs[2].history
            assert all(h.status == FAILED and h.executor and h.error for h in rs[2].history), rs[2].history
            assert "\ufffd" in rs[2].history[0].error or "?" in rs[2].history[0].error  # the \xff made valid UTF-8
            for a, b in zip(rs, rs[1:]):
                assert 0 <= a.retry_delay_ms <= 600, a.retry_delay_ms
                # the next attempt waited (in the delay topic) at least its backoff
                assert b.started_unix_ms >= a.finished_unix_ms + a.retry_delay_ms - 2, (i, a, b)
        for i in echoes:
            assert [(r.status, r.final, r.attempt) for r in got[i]] == [(SUCCEEDED, True, 1)], got[i]
        for i in once:  # the handler's default: one attempt, the failure is final, not EXHAUSTED
            assert [(r.status, r.final) for r in got[i]] == [(FAILED, True)], got[i]
        assert [(r.status, r.final) for r in got["nohandler-0"]] == [(pb.REJECTED, True)]
        assert sched.metric("execmesh_scheduler_retries_total") == 40
        m.wait_lag_zero(60)
        wait_delay_drained(m)
        report("retries", got, fails + echoes + once + rejected)
    finally:
        m.close()


def test_a_waiting_retry_survives_a_scheduler_crash():
    m = Mesh("lifecycle-retry-crash")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "builtin.fail.retry_initial_ms=4000",
                                            "--set", "builtin.fail.retry_factor=1",
                                            "--set", "builtin.fail.retry_max_ms=4000"])
        sched = m.start_scheduler([ex], args=["--set", "kafka.commit_interval_ms=100"])
        m.wait_assigned([sched], 6)
        ids = [f"crash-{i}" for i in range(10)]
        submit(m, sched, [execution(i, "fail", b"x", max_attempts=2) for i in ids])
        # every first attempt failed and its retry is stored in the delay topic ...
        wait_for(lambda: sched.metric("execmesh_scheduler_retries_total") == 10, 30,
                 "the 10 retries to be stored in the delay topic")
        m.wait_lag_zero(30)
        # ... then the scheduler dies: the retries live in Kafka, not in it
        sched.signal(signal.SIGKILL)
        sched.wait_exit(10)
        sched2 = m.start_scheduler([ex], name="scheduler-1")
        got = wait_results(m, ids, 90, "the retries to run after the scheduler's crash")
        for i in ids:
            final = [r for r in got[i] if r.final]
            assert final and all(r.status == EXHAUSTED and r.attempt == 2 for r in final), got[i]
            assert max(r.attempt for r in got[i]) == 2, got[i]
        m.wait_lag_zero(60)
        wait_delay_drained(m)
        assert sched2.alive()
        report("retry_survives_crash", read_all_results(m), ids)
    finally:
        m.close()


def long_job_ms():
    return [600_000, 3_600_000] if LONG else [15_000]


def test_a_long_job_runs_once_and_holds_back_nothing():
    for ms in long_job_ms():
        m = Mesh(f"lifecycle-long-{ms}", partitions=1)
        try:
            sink = m.start_sink()
            journal = os.path.join(m.dir, "executor.journal")
            ex = m.start_executor([sink], args=["--set", "grpc.max_connection_age_ms=2000",
                                                "--set", f"builtin.sleep.default_timeout_ms={ms + 60_000}",
                                                "--set", f"executor.journal={journal}"])
            sched = m.start_scheduler([ex], args=["--set", "kafka.start_paused=true",
                                                  "--set", "kafka.commit_interval_ms=100",
                                                  "--set", "grpc.max_connection_age_ms=2000"])
            m.wait_assigned([sched], 1)
            # 63 echoes and the long sleep (last, timeout_ms 0: the handler's default) in one batch
            topic = m.topics["execmesh.requests"]
            p = m.kafka.producer()
            echoes = [f"short-{i}" for i in range(63)]
            for i in echoes:
                p.produce(topic, execution(i, "echo", b"quick").SerializeToString(), key=i, partition=0)
            p.produce(topic, execution("long", "sleep", str(ms).encode()).SerializeToString(), key="long", partition=0)
            assert p.flush(30) == 0
            t0 = time.monotonic()
            sched.post("/admin/resume")
            # the echoes are stored and committed while the sleep runs
            start = {0: 0}
            m.wait_committed(start, {0: 63}, timeout=30)
            assert time.monotonic() - t0 < ms / 1000, "the echoes waited for the long job"
            early = read_all_results(m)
            assert "long" not in early and all(i in early for i in echoes), sorted(early)[:5]
            got = wait_results(m, ["long"], ms / 1000 + 90, "the long job's result")
            assert [(r.status, r.attempt, r.final) for r in got["long"]] == [(SUCCEEDED, 1, True)], got["long"]
            assert all(len(got[i]) == 1 for i in echoes)
            with open(journal) as f:
                starts = [line for line in f if line.split()[1:3] == ["S", "long"]]  # "<ms> S <id> <attempt>"
            assert len(starts) == 1, starts  # ran once: no connection age, deadline or retry repeated it
            m.wait_lag_zero(30)
            report(f"long_job_{ms}ms", read_all_results(m), echoes + ["long"])
        finally:
            m.close()


def test_a_poison_execution_is_quarantined_and_the_rest_complete():
    m = Mesh("lifecycle-poison")
    restarts = []
    try:
        sink = m.start_sink()
        cfg = os.path.join(m.dir, "executor.cfg")
        with open(cfg, "w") as f:
            f.write('handlers = { builtin = [ "echo" ]; exec = [ "poison" ]; };\n'
                    'exec = { poison = { argv = [ "/bin/sh", "-c", "kill -9 $PPID; sleep 5" ]; }; };\n')  # ok-sleep: the poison's child, nothing waits on it
        ports = [free_port(), free_port()]

        def start(k, n, wait=False):
            # a restarted executor may be killed again before it is SERVING: do not wait on it
            return m.start("executor", f"executor-{k}-{n}",
                           ["--config", cfg, "--set", f"sinks.target=ipv4:{sink.grpc_addr}"],
                           grpc_listen=f"127.0.0.1:{ports[k]}", wait=wait)
        exs = [start(0, 0, True), start(1, 0, True)]
        sched = m.start_scheduler(exs)
        m.wait_assigned([sched], 6)
        ids = [f"ok-{i}" for i in range(300)]
        execs = [execution(i, "echo", b"fine") for i in ids]
        execs.insert(150, execution("poison", "poison", b""))
        submit(m, sched, execs)

        def supervise():
            """Restarts dead executors on their ports, as a supervisor would;
            done once every execution has a final result."""
            for k, e in enumerate(exs):
                if not e.alive():
                    restarts.append(e.name)
                    assert len(restarts) <= 10, f"executors died {len(restarts)} times"
                    exs[k] = start(k, len(restarts))
            got = read_all_results(m)
            return all(any(r.final for r in got.get(i, [])) for i in ids + ["poison"])
        wait_for(supervise, 120, "every execution's final result, executors restarted as they die", interval=0.3)
        got = read_all_results(m)
        final = [r for r in got["poison"] if r.final]
        assert len(final) == 1 and final[0].status == EXHAUSTED, got["poison"]
        assert final[0].error.startswith("quarantined: 3 executors died"), final[0].error
        attempts = [h.attempt for h in final[0].history]
        assert len(attempts) == 3 and attempts == sorted(set(attempts)), final[0].history
        assert all("died" in h.error and h.executor for h in final[0].history), final[0].history
        supervise()  # counts the last death too (the quarantine followed it)
        assert len(restarts) <= 3, f"{len(restarts)} executor deaths: {restarts}"
        # at least once: an execution whose executor died after its result was stored runs again
        # (a counted duplicate), at most once per death; none fails, none is quarantined
        bad = {i: [(r.status, r.attempt) for r in got[i]] for i in ids
               if not got[i] or any(r.status != SUCCEEDED for r in got[i]) or len(got[i]) > 1 + len(restarts)}
        assert not bad, f"{len(bad)} ordinary executions did not end SUCCEEDED: {list(bad.items())[:5]}"
        report("poison", got, ids + ["poison"])
        print(f"LIFECYCLE poison: executor_deaths={len(restarts)} poison_attempts={len(final[0].history)}")
        assert sched.metric("execmesh_scheduler_quarantined_total") == 1
        m.wait_lag_zero(60)
        wait_delay_drained(m)
    finally:
        m.close()
