# SPDX-License-Identifier: Apache-2.0
"""Static membership (kafka.instance_id) makes a rolling restart of a
scheduler cost no rebalance on a real broker: the restarted replica comes back
within the session timeout to the same partitions, the other scheduler never
loses or gains a partition, and the executions flowing meanwhile are neither
lost nor run twice."""
import signal
import threading
import time

from mesh import Mesh, execution, pb, results_by_id, wait_for


def test_rolling_restart_with_static_membership_moves_no_partition():
    m = Mesh("static")
    try:
        sinks = [m.start_sink()]
        execs = [m.start_executor(sinks)]
        static = ["--set", "kafka.session_timeout_ms=20000"]
        s0 = m.start_scheduler(execs, "scheduler-0", ["--set", "kafka.instance_id=static-0"] + static)
        s1 = m.start_scheduler(execs, "scheduler-1", ["--set", "kafka.instance_id=static-1"] + static)
        m.wait_assigned([s0, s1], 6)
        before = {p.name: p.metric("execmesh_scheduler_assigned_partitions") for p in (s0, s1)}
        s1_events = len([l for l in s1.log_lines() if l.get("msg") in ("partitions assigned", "partitions revoked")])

        acked = []
        stop = threading.Event()

        def load():
            n = 0
            while not stop.is_set():
                ids = [f"st-{n + k}" for k in range(10)]
                n += 10
                m.stub(s1).Submit(pb.SubmitRequest(executions=[execution(i) for i in ids]), timeout=10)
                acked.extend(ids)
                stop.wait(0.02)
        t = threading.Thread(target=load)
        t.start()

        # the rolling restart: drain scheduler-0 and start it again at once
        s0.signal(signal.SIGTERM)
        assert s0.wait_exit(40) == 0
        t_restart = time.monotonic()
        s0b = m.start_scheduler(execs, "scheduler-0", ["--set", "kafka.instance_id=static-0"] + static)
        wait_for(lambda: s0b.metric("execmesh_scheduler_assigned_partitions") == before["scheduler-0"], 30,
                 "the restarted scheduler-0 to own its partitions again")
        back_s = time.monotonic() - t_restart
        wait_for(lambda: len(acked) >= 1000, 60, "1000 executions acknowledged")
        stop.set()
        t.join(30)

        s1_after = [l for l in s1.log_lines() if l.get("msg") in ("partitions assigned", "partitions revoked")]
        got = results_by_id(m.kafka.read(m.topics["execmesh.results"], m.results_start,
                                         until=lambda r: set(acked) <= set(results_by_id(r)), timeout=60,
                                         what="every acknowledged execution's result"))
        duplicates = sum(len(v) - 1 for v in got.values())
        print(f"\nSTATIC_MEMBERSHIP back_in_s={back_s:.2f} other_scheduler_rebalance_events="
              f"{len(s1_after) - s1_events} acked={len(acked)} duplicates={duplicates}")
        assert len(s1_after) == s1_events, f"scheduler-1 saw a rebalance: {s1_after[s1_events:]}"
        assert s1.metric("execmesh_scheduler_assigned_partitions") == before["scheduler-1"]
        assert duplicates == 0
    finally:
        m.close()
