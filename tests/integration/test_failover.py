# SPDX-License-Identifier: Apache-2.0
"""Failover. (1) kill -9 of an executor while it has executions in flight
(waited for on its in-flight metric): the executions it held are run again
elsewhere with attempt >= 2, none is lost, duplicates are counted. (2) SIGTERM
of a sink while it has results in flight (its in-flight metric > 0): it drains,
exits 0, nothing is lost and no call failed anywhere."""
import signal
import threading
import time

from mesh import Mesh, execution, pb, results_by_id, status_name, wait_for


def submit_all(m, sched, ids, handler, payload, batch=50, pause=None):
    stub = m.stub(sched)
    for i in range(0, len(ids), batch):
        chunk = [execution(x, handler, payload) for x in ids[i:i + batch]]
        resp = stub.Submit(pb.SubmitRequest(executions=chunk), timeout=30)
        assert list(resp.ids) == ids[i:i + batch]
        if pause:
            pause()


def read_all(m, ids, timeout=120):
    want = set(ids)
    recs = m.kafka.read(m.topics["execmesh.results"], m.results_start,
                        until=lambda r: want <= set(results_by_id(r)), timeout=timeout,
                        what=f"a result for each of {len(ids)} ids")
    return results_by_id(recs)


def test_kill9_executor_in_flight_reruns_with_higher_attempt():
    m = Mesh("failover-exec")
    try:
        sinks = [m.start_sink(f"sink-{i}") for i in range(2)]
        conc = ["--set", "handlers.concurrency=200"]
        execs = [m.start_executor(sinks, f"executor-{i}", conc) for i in range(2)]
        sched = m.start_scheduler(execs, args=["--set", "dispatch.max_inflight=400",
                                               "--set", "dispatch.batch_max=20"])
        m.wait_assigned([sched], 6)
        ids = [f"k9-{i}" for i in range(600)]
        t = threading.Thread(target=submit_all, args=(m, sched, ids, "sleep", b"300"))
        t.start()
        victim = execs[0]
        wait_for(lambda: victim.metric("execmesh_inflight") >= 20, 60,
                 "executor-0 to hold at least 20 executions in flight (execmesh_inflight)")
        held = victim.metric("execmesh_inflight")
        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert victim.wait_exit(10) == -signal.SIGKILL
        t.join(120)
        got = read_all(m, ids)
        lost = [i for i in ids if i not in got]
        duplicates = sum(len(v) - 1 for v in got.values())
        rerun = sorted(i for i, rs in got.items() if any(r.attempt >= 2 for r in rs))
        print(f"\nFAILOVER kill9_executor in_flight_at_kill={held:.0f} lost={len(lost)} "
              f"duplicates={duplicates} rerun_attempt_ge_2={len(rerun)} "
              f"completed_s_after_kill={time.monotonic() - killed_at:.2f}")
        assert not lost, f"lost: {lost[:10]}"
        assert rerun, "no execution was run again with attempt >= 2: the kill did not take effect"
        assert all(status_name(r.status) == "SUCCEEDED" for rs in got.values() for r in rs)
        # the survivor ran the re-runs
        assert all(r.executor == "executor-1" for i in rerun for r in got[i] if r.attempt >= 2)
    finally:
        m.close()


def test_sigterm_sink_in_flight_drains_without_loss_or_failed_calls():
    m = Mesh("failover-sink")
    try:
        # the victim lingers 300 ms before producing, so results sit in flight on it
        victim = m.start_sink("sink-0", ["--set", "kafka.linger_ms=300", "--set", "drain.notserving_ms=300"])
        other = m.start_sink("sink-1")
        execs = [m.start_executor([victim, other], f"executor-{i}") for i in range(2)]
        sched = m.start_scheduler(execs)
        m.wait_assigned([sched], 6)
        ids = [f"st-{i}" for i in range(3000)]
        t = threading.Thread(target=submit_all, args=(m, sched, ids, "echo", b"drain-me"),
                             kwargs={"pause": lambda: time.sleep(0.01)})  # ok-sleep: paces the load
        t.start()
        wait_for(lambda: victim.metric("execmesh_inflight") > 0, 60,
                 "sink-0 to hold results in flight (execmesh_inflight)")
        held = victim.metric("execmesh_inflight")
        victim.signal(signal.SIGTERM)
        code = victim.wait_exit(40)
        t.join(120)
        got = read_all(m, ids)
        lost = [i for i in ids if i not in got]
        duplicates = sum(len(v) - 1 for v in got.values())
        failed_publish = sum(e.metric("execmesh_executor_publish_failed_total") for e in execs)
        failed_execute = sched.metric("execmesh_executions_failed_total")
        print(f"\nFAILOVER sigterm_sink in_flight_at_term={held:.0f} exit={code} lost={len(lost)} "
              f"duplicates={duplicates} failed_publish_calls={failed_publish:.0f} "
              f"failed_execute={failed_execute:.0f}")
        assert code == 0
        assert not lost, f"lost: {lost[:10]}"
        assert failed_publish == 0 and failed_execute == 0
        assert duplicates == 0
    finally:
        m.close()
