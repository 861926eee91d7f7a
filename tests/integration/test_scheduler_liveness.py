# SPDX-License-Identifier: Apache-2.0
"""No partition ever stalls: the schedulers keep consuming through rebalances,
pauses and scale events, and a stall that happens anyway is found and healed.

- churn: executions flow while a third scheduler joins and leaves (drain)
  every 3-5 s, at least 6 times, with dispatch.max_pending reached; every
  execution gets its result and the group's lag is 0 within session timeout
  + 10 s of the last scale event; no partition was ever found stalled.
- cold start: every replica started at once on a fresh Kafka (fresh topics
  and group on the real broker), traffic (Submit and produced) as soon as
  they are SERVING; every execution gets its result; repeated.
- operator pause/resume toggled every few hundred ms on one scheduler while
  the other is paused by an operator for 30 s and executions flow, then a
  hold of the intake longer than flow.hold_pause_ms that turns into paused
  partitions: lost 0, lag back to 0, and no stall reported (the watchdog's
  negative control).
- the watchdog: two stalls injected through the scheduler's debug hook (the
  partition paused inside librdkafka, and dropped from librdkafka's
  assignment) are each logged, counted and healed with nothing lost.

Counts are bounded for CI (the operator pause is 10 s there); EM_LONG=1 (scripts/test.sh --long) runs the full counts on both Kafkas:
100,000 executions through the churn, 10 cold starts, 200,000 through the
pause toggling.
"""
import os
import random
import signal
import threading
import time

import grpc

from mesh import Mesh, check_results, execution, free_port, pb, pb_grpc, wait_for

LONG = os.environ.get("EM_LONG") == "1"
REAL = os.environ.get("EM_KAFKA", "dev") == "real"
SESSION_S = 6
# devkafka keeps 5 MiB per partition: many partitions for large runs
PARTITIONS = 16 if REAL else 64
WATCH = ["--set", "watchdog.stall_ms=5000", "--set", "watchdog.interval_ms=500"]


def pace(seconds):
    """The test's schedule (a scale event every few seconds), not a synchronisation."""
    time.sleep(seconds)  # ok-sleep: the churn's pacing is the point


class Producer(threading.Thread):
    """Produces one execution per id to the requests topic (keyed by id) and
    records what Kafka acknowledged."""

    def __init__(self, m, ids, payload=b"x"):
        super().__init__(daemon=True)
        self.m, self.ids, self.payload = m, ids, payload
        self.acked = 0
        self.failed = []
        self.error = None

    def run(self):
        try:
            p = self.m.kafka.producer()
            topic = self.m.topics["execmesh.requests"]

            def dr(err, msg):
                if err:
                    self.failed.append(str(err))
                else:
                    self.acked += 1
            for i in self.ids:
                while True:
                    try:
                        p.produce(topic, execution(i, payload=self.payload).SerializeToString(), key=i,
                                  on_delivery=dr)
                        break
                    except BufferError:
                        p.poll(0.05)
                p.poll(0)
            left = p.flush(120)
            if left:
                self.failed.append(f"{left} records not delivered within 120 s")
        except Exception as e:  # reported by check()
            self.error = e

    def check(self, timeout=180):
        self.join(timeout)
        assert not self.is_alive(), f"the producer did not finish within {timeout} s"
        assert self.error is None, f"producer failed: {self.error!r}"
        assert not self.failed and self.acked == len(self.ids), \
            f"{self.acked} of {len(self.ids)} produced, failures: {self.failed[:3]}"


def scheduler_counters(procs):
    names = ("execmesh_scheduler_stalls_total", "execmesh_scheduler_intake_holds_total",
             "execmesh_scheduler_flow_pauses_total", "execmesh_scheduler_rebalances_total")
    out = dict.fromkeys(names, 0.0)
    for p in procs:
        if p.alive():
            mt = p.metrics()
            for n in names:
                out[n] += mt.get(n, 0.0)
    return out


def stall_lines(procs):
    return [(p.name, l.get("fields", {}).get("partition")) for p in procs
            for l in p.log_events("partition stalled: records wait in Kafka and none arrive")]


def test_scheduler_churn_under_load():
    n = 100_000 if LONG else 30_000
    min_cycles, max_cycles = (10, 30) if LONG else (6, 20)
    gap = (3, 5) if LONG else (3, 3.5)  # seconds between scale events
    m = Mesh("churn", partitions=PARTITIONS)
    try:
        sinks = [m.start_sink(f"sink-{i}") for i in range(2)]
        execs = [m.start_executor(sinks, f"executor-{i}") for i in range(2)]
        scheds = [m.start_scheduler(execs, f"scheduler-{i}", WATCH) for i in range(2)]
        m.wait_assigned(scheds, PARTITIONS)
        ids = [f"churn-{i}" for i in range(n)]
        t0 = time.monotonic()
        prod = Producer(m, ids)
        prod.start()
        rnd = random.Random(11)
        joiners = []  # counters of each incarnation of the joining scheduler, read before it leaves
        cycles = 0
        topic = m.topics["execmesh.requests"]
        # join and leave every 3-5 s; at least min_cycles times, and until the
        # backlog is small enough that the lag bound after the last event means
        # "nothing left behind" rather than "the mesh is slow"
        while cycles < max_cycles:
            j = m.start_scheduler(execs, "scheduler-2", WATCH)
            wait_for(lambda: j.metric("execmesh_scheduler_assigned_partitions") > 0, 60,
                     "the joining scheduler to own partitions")
            pace(rnd.uniform(*gap))
            joiners.append(scheduler_counters([j]))
            stalls_j = stall_lines([j])
            j.signal(signal.SIGTERM)
            assert j.wait_exit(60) == 0, "the leaving scheduler's drain did not exit 0"
            assert not stalls_j, f"a partition stalled on the joining scheduler: {stalls_j}"
            m.procs.remove(j)
            t_last = time.monotonic()
            cycles += 1
            if cycles >= min_cycles and not prod.is_alive() and sum(m.kafka.lag(m.group, topic).values()) < 5000:
                break
            pace(rnd.uniform(*gap))
        prod.check()
        lag0_s = m.wait_lag_zero(SESSION_S + 10 - (time.monotonic() - t_last))
        lag0_after_last = time.monotonic() - t_last
        wall = time.monotonic() - t0
        totals = scheduler_counters(scheds)
        for k in totals:
            totals[k] += sum(c[k] for c in joiners)
        check_results(m, ids)
        stalls = stall_lines(scheds)
        print(f"\nCHURN kafka={'real' if REAL else 'dev'} executions={n} cycles={cycles} lost=0 duplicates=0 "
              f"lag0_after_last_event_s={lag0_after_last:.1f} holds={totals['execmesh_scheduler_intake_holds_total']:.0f} "
              f"flow_pauses={totals['execmesh_scheduler_flow_pauses_total']:.0f} "
              f"rebalances={totals['execmesh_scheduler_rebalances_total']:.0f} "
              f"stalls={totals['execmesh_scheduler_stalls_total']:.0f} wall_s={wall:.1f}")
        assert lag0_s >= 0
        assert cycles >= min_cycles
        assert totals["execmesh_scheduler_intake_holds_total"] > 0, \
            "dispatch.max_pending was never reached: the churn did not test the hold"
        assert totals["execmesh_scheduler_stalls_total"] == 0 and not stalls, f"partitions stalled: {stalls}"
    finally:
        m.close()


def start_all_at_once(m, submit_first=None):
    """2 sinks, 2 executors, 2 schedulers started together on fixed ports;
    returns (sinks, executors, schedulers) once every one is SERVING."""
    sp, ep, cp = [free_port() for _ in range(2)], [free_port() for _ in range(2)], [free_port() for _ in range(2)]
    sinks_t = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in sp)
    execs_t = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ep)
    procs = []
    for i, p in enumerate(sp):
        procs.append(m.start("sink", f"sink-{i}", m.kafka_args(), wait=False, grpc_listen=f"127.0.0.1:{p}"))
    for i, p in enumerate(ep):
        procs.append(m.start("executor", f"executor-{i}", ["--set", f"sinks.target={sinks_t}"], wait=False,
                             grpc_listen=f"127.0.0.1:{p}"))
    for i, p in enumerate(cp):
        procs.append(m.start("scheduler", f"scheduler-{i}", m.kafka_args() + [
            "--set", f"executors.target={execs_t}", "--set", f"kafka.group_id={m.group}",
            "--set", f"kafka.session_timeout_ms={SESSION_S * 1000}"] + WATCH, wait=False,
            grpc_listen=f"127.0.0.1:{p}"))
    for p in procs:
        p.wait_ports()
    return procs[:2], procs[2:4], procs[4:]


def test_cold_start_under_traffic_repeatedly():
    loops = 10 if LONG else 2
    per = 10_000 if LONG else 3_000  # Submits and produced records each
    figures = []
    for k in range(loops):
        m = Mesh(f"coldstart{k}", partitions=PARTITIONS)
        try:
            t0 = time.monotonic()
            sinks, execs, scheds = start_all_at_once(m)
            # traffic at once: records go to Kafka now, Submits as soon as a scheduler is SERVING
            prod = Producer(m, [f"cold{k}-p-{i}" for i in range(per)])
            prod.start()
            scheds[0].wait_serving()
            ch = grpc.insecure_channel(scheds[0].grpc_addr)
            stub = pb_grpc.SchedulerStub(ch)
            submitted = []
            for b in range(per // 100):
                batch = [f"cold{k}-s-{b * 100 + i}" for i in range(100)]
                stub.Submit(pb.SubmitRequest(executions=[execution(i) for i in batch]), timeout=30)
                submitted += batch
            ch.close()
            prod.check()
            for p in sinks + execs + scheds[1:]:
                p.wait_serving()
            ids = submitted + prod.ids
            m.wait_lag_zero(90)
            wall = time.monotonic() - t0
            stalls = stall_lines(scheds)
            totals = scheduler_counters(scheds)
            check_results(m, ids)
            figures.append(wall)
            print(f"\nCOLD_START run={k + 1}/{loops} kafka={'real' if REAL else 'dev'} executions={len(ids)} lost=0 "
                  f"duplicates=0 all_done_s={wall:.1f} "
                  f"rebalances={totals['execmesh_scheduler_rebalances_total']:.0f} "
                  f"stalls={totals['execmesh_scheduler_stalls_total']:.0f}")
            assert totals["execmesh_scheduler_stalls_total"] == 0 and not stalls, f"partitions stalled: {stalls}"
        finally:
            m.close()
    print(f"\nCOLD_STARTS kafka={'real' if REAL else 'dev'} runs={loops} stalled=0 "
          f"worst_all_done_s={max(figures):.1f} duplicates=0")


def test_operator_pause_resume_toggling_and_a_long_hold():
    n = 200_000 if LONG else 15_000
    # the operator pause: 90 s in the long mode, 10 s in CI (still 5 x
    # stall_ms; the CI budget)
    pause_s = 90 if LONG else 10
    m = Mesh("pauseresume", partitions=PARTITIONS)
    try:
        sinks = [m.start_sink(f"sink-{i}") for i in range(2)]
        execs = [m.start_executor(sinks, f"executor-{i}") for i in range(2)]
        # a short stall_ms makes this a strict negative control of the watchdog
        watch = ["--set", "watchdog.stall_ms=2000", "--set", "watchdog.interval_ms=250"]
        scheds = [m.start_scheduler(execs, f"scheduler-{i}", watch) for i in range(2)]
        m.wait_assigned(scheds, PARTITIONS)
        ids = [f"pr-{i}" for i in range(n)]
        prod = Producer(m, ids)
        prod.start()
        rnd = random.Random(7)
        # scheduler-0: one operator pause of pause_s (at least 5 x stall_ms),
        # which is no stall; scheduler-1: paused and resumed every few hundred
        # ms meanwhile
        assert scheds[0].post("/admin/pause")[0] == 200
        t_pause = time.monotonic()
        toggles = 0
        worst = 0.0
        t_end = t_pause + pause_s
        while time.monotonic() < t_end or prod.is_alive():
            code, body = scheds[1].post("/admin/pause")
            assert code == 200, body
            pace(rnd.uniform(0.1, 0.3))
            code, body = scheds[1].post("/admin/resume")
            assert code == 200, body
            toggles += 1
            worst = max(worst, scheds[0].metric("execmesh_scheduler_stalled_partitions"),
                        scheds[1].metric("execmesh_scheduler_stalled_partitions"))
            pace(rnd.uniform(0.1, 0.3))
            assert time.monotonic() - t_pause < 300, "the producer did not finish within 300 s"
        paused_s = time.monotonic() - t_pause
        assert scheds[0].post("/admin/resume")[0] == 200
        prod.check()
        # a hold longer than flow.hold_pause_ms: the executors stop taking work
        # (NOT_SERVING), dispatch fails, pending fills and the intake holds;
        # more records arrive meanwhile
        for e in execs:
            e.signal(signal.SIGUSR1)
        more = [f"pr-hold-{i}" for i in range(20_000 if LONG else 10_000)]
        prod2 = Producer(m, more)
        prod2.start()
        wait_for(lambda: scheduler_counters(scheds)["execmesh_scheduler_flow_pauses_total"] > 0, 60,
                 "a hold of the intake to turn into paused partitions")
        for e in execs:
            e.signal(signal.SIGUSR2)
        prod2.check()
        m.wait_lag_zero(120)
        totals = scheduler_counters(scheds)
        check_results(m, ids + more)
        stalls = stall_lines(scheds)
        print(f"\nPAUSE_RESUME kafka={'real' if REAL else 'dev'} executions={len(ids) + len(more)} toggles={toggles} "
              f"operator_pause_s={paused_s:.0f} stalled_during_pauses={worst:.0f} lost=0 duplicates=0 "
              f"holds={totals['execmesh_scheduler_intake_holds_total']:.0f} "
              f"flow_pauses={totals['execmesh_scheduler_flow_pauses_total']:.0f} "
              f"stalls={totals['execmesh_scheduler_stalls_total']:.0f}")
        assert worst == 0 and totals["execmesh_scheduler_stalls_total"] == 0 and not stalls, \
            f"pauses and holds were taken for stalls: {stalls}"
    finally:
        m.close()


def test_stall_watchdog_finds_and_heals_injected_stalls():
    parts = 6
    m = Mesh("watchdog", partitions=parts)
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink])
        sched = m.start_scheduler([ex], args=["--set", "watchdog.stall_ms=2000", "--set", "watchdog.interval_ms=250"])
        m.wait_assigned([sched], parts)
        code, body = sched.post("/debug/stall/nonsense/0")
        assert code == 404 and "unknown stall" in body, \
            f"the scheduler has no debug hooks ({code} {body.strip()}): build with -DEM_DEBUG_HOOKS=ON " \
            "(scripts/test.sh does)"
        # a steady trickle into every partition
        stop = threading.Event()
        sent = []
        prod_err = []

        def trickle():
            try:
                p = m.kafka.producer()
                topic = m.topics["execmesh.requests"]
                i = 0
                while not stop.is_set():
                    for part in range(parts):
                        eid = f"wd-{i}"
                        i += 1
                        p.produce(topic, execution(eid).SerializeToString(), key=eid, partition=part)
                        sent.append(eid)
                    p.poll(0)
                    stop.wait(0.05)  # the trickle's rate, not a synchronisation
                assert p.flush(60) == 0
            except Exception as e:
                prod_err.append(e)
        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        wait_for(lambda: len(sent) > 100 and sched.metric("execmesh_executions_out_total") > 50, 30,
                 "the trickle to flow")
        figures = {}
        for kind, part in (("pause", 0), ("unassign", 3)):
            code, body = sched.post(f"/debug/stall/{kind}/{part}")
            assert code == 200, body
            t_inject = time.monotonic()

            def stalled():
                return [l for l in sched.log_events("partition stalled: records wait in Kafka and none arrive")
                        if l["fields"].get("partition") == part]
            wait_for(stalled, 30, f"the watchdog to report partition {part} stalled ({kind})", interval=0.05)
            t_detect = time.monotonic()

            def healed():
                for l in sched.log_events("stalled partition flowing again"):
                    if l["fields"].get("partition") == part:
                        return l
                return None
            line = wait_for(healed, 30, f"partition {part} flowing again after the {kind} stall", interval=0.05)
            restarts = [l for l in sched.log_events("stalled partition restarted") if l["fields"].get("partition") == part]
            assert restarts, f"partition {part} flowed again without a restart: the stall was not real"
            figures[kind] = (t_detect - t_inject, line["fields"]["stalled_for_ms"] / 1000, restarts[0]["fields"]["how"])
            wait_for(lambda: sched.metric("execmesh_scheduler_stalled_partitions") == 0, 10,
                     "the stalled gauge back to 0")
        assert sched.metric("execmesh_scheduler_stalls_total") == 2, "each injected stall is counted once"
        stop.set()
        t.join(60)
        assert not prod_err, prod_err
        m.wait_lag_zero(60)
        check_results(m, list(sent))
        for kind, (detect, heal, how) in figures.items():
            print(f"\nWATCHDOG kafka={'real' if REAL else 'dev'} kind={kind} detect_s={detect:.2f} heal_s={heal:.2f} "
                  f"how=\"{how}\" stall_ms=2000")
        print(f"\nWATCHDOG_TOTAL executions={len(sent)} lost=0 duplicates=0")
    finally:
        m.close()
