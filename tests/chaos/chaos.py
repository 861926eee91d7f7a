# SPDX-License-Identifier: Apache-2.0
"""The chaos harness behind scripts/chaos.sh (../shared/reliability-matrix.md).

It starts a mesh (2 schedulers, 3 executors of which one lives in a network
namespace of its own, 2 sinks; room for a 4th executor, 3rd scheduler and 3rd
sink added at run time) on devkafka or the real broker, drives executions with
unique ids at a fixed rate (half Submit, half produced to the requests topic),
plays a fault schedule, heals, drains, then reads the results topic from the
start and counts:
  lost        acked ids (Submit OK or produce delivered) with no terminal result
  duplicates  sum over ids of (results - 1)
  failed Submit calls, by code
  lag_end     records of the requests topic the schedulers' group has not
              committed LAG_BOUND_S after the load stopped
and per fault: the work in flight on the victim when it fired, proof that it
took effect, and the time to reroute (to the durable result of the last
execution the victim held) or to take over (to the new owner's first commit of
each partition the victim held). A fault fires only while its victim has work
in flight. Prints a table per fault, a `GOAL FAILED name: figure (detail)` line
per goal missed, and ends with one line
  RESULT executions=N faults=F lost=L duplicates=D max_reroute_ms=R max_takeover_ms=T ...
It exits non-zero on loss, on duplicates or failed Submits on a clean path
(CLEAN), on the group's lag not back to 0 (at the end, after the churn of
schedulers, after a cold start), and if a fault could not be applied or shown
to take effect; in long mode also on a missed timing goal (GOALS), which
--quick reports without failing.
"""
import argparse
import calendar
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import grpc  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from hosts import Network  # noqa: E402
from mesh import ROOT, Mesh, Proc, free_port, execution, pb, pb_grpc, probe, wait_for  # noqa: E402

# The timing goals: figure -> (bound, the fault kinds that measure it). They
# fail the long mode; --quick (CI) reports them.
GOALS = {
    "reroute_ms": (100, ("kill9_executor", "kill9_sink")),                  # echo handler
    "out_of_picks_ms": (3000, ("stop_executor", "partition_executor")),     # frozen or partitioned executor
    "takeover_ms": (10000, ("kill9_scheduler", "stop_scheduler")),          # 6 s session + group join
}
HARD = {"kill9_executor", "kill9_sink", "kill9_scheduler", "stop_executor", "stop_scheduler", "partition_executor",
        "broker_down"}
LIVES_ON = {"stop_executor", "partition_executor"}  # the victim runs on after the heal
# Clean paths: 0 duplicates and 0 failed Submits, in every mode.
CLEAN = {"sigterm_executor", "sigterm_sink", "sigterm_scheduler", "notserving_executor", "add_executor",
         "add_scheduler", "add_sink", "remove_added", "churn_scheduler"}
SESSION_S = 6                 # kafka.session_timeout_ms the services ship with (the matrix's one config)
LAG_BOUND_S = SESSION_S + 10  # the group's lag back to 0 within this (end of run, churn, cold start)
BASE = ("sink-0", "sink-1", "executor-0", "executor-1", "executor-2", "scheduler-0", "scheduler-1")


def now_ms():
    return int(time.time() * 1000)


def log(msg):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Load:
    """Executions with unique ids at a fixed rate: half Submit, half produce."""

    def __init__(self, cluster, rate, total):
        self.c, self.rate, self.total = cluster, rate, total
        self.acked = {}          # id -> ack time (unix ms)
        self.sent = 0
        self.submit_errors = []  # (call start unix ms, call end unix ms, code)
        self.bursts = 0          # executions produced by burst()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = []

    def start(self):
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self._submit, daemon=True),
                        threading.Thread(target=self._produce, daemon=True)]
        for t in self.threads:
            t.start()

    def _ids(self, kind, start, n):
        return [f"{kind}-{i}" for i in range(start, start + n)]

    def _submit(self):
        opts = [("grpc.service_config", json.dumps({
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": "execmesh.v1.Scheduler"},
            "methodConfig": [{"name": [{"service": "execmesh.v1.Scheduler"}], "waitForReady": True,
                              "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                                              "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})),
                ("grpc.keepalive_time_ms", 1000), ("grpc.keepalive_timeout_ms", 1000),
                ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0),
                ("grpc.max_reconnect_backoff_ms", 1000), ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200)]
        ch = grpc.insecure_channel(self.c.submit_target, options=opts)
        stub = pb_grpc.SchedulerStub(ch)
        batch = 10
        per_s = self.rate / 2 / batch
        n = 0
        k = 0
        while n < self.total // 2 and not self.done.is_set():
            due = self.t0 + k / per_s
            k += 1
            delay = due - time.monotonic()
            if delay > 0:
                self.done.wait(delay)  # the schedule's pacing, not a synchronisation
            ids = self._ids("s", n, min(batch, self.total // 2 - n))
            n += len(ids)
            t_call = now_ms()
            try:
                stub.Submit(pb.SubmitRequest(executions=[execution(i, "echo", b"chaos") for i in ids]), timeout=10)
                t = now_ms()
                with self.lock:
                    for i in ids:
                        self.acked[i] = t
            except grpc.RpcError as e:
                with self.lock:
                    self.submit_errors.append((t_call, now_ms(), e.code().name))
            with self.lock:
                self.sent += len(ids)
        ch.close()

    def _produce(self):
        p = self.c.m.kafka.producer()
        topic = self.c.m.topics["execmesh.requests"]
        per_s = self.rate / 2
        n = 0

        def delivered(err, msg):
            if err is None:
                with self.lock:
                    self.acked[msg.key().decode()] = now_ms()
        while n < self.total // 2 and not self.done.is_set():
            due = self.t0 + n / per_s
            delay = due - time.monotonic()
            if delay > 0:
                self.done.wait(delay)  # the schedule's pacing, not a synchronisation
            i = f"p-{n}"
            n += 1
            p.produce(topic, execution(i, "echo", b"chaos").SerializeToString(), key=i, on_delivery=delivered)
            p.poll(0)
            with self.lock:
                self.sent += 1
        p.flush(120)

    def burst(self, n, timeout=60):
        """Produces n more executions at once (ids b-<k>), on top of the
        paced load, and waits (at most timeout s) for their delivery reports;
        the delivered ones are acked like any other. Returns how many were
        delivered."""
        p = self.c.m.kafka.producer()
        topic = self.c.m.topics["execmesh.requests"]
        got = []

        def delivered(err, msg):
            if err is None:
                got.append(1)
                with self.lock:
                    self.acked[msg.key().decode()] = now_ms()
        first, self.bursts = self.bursts, self.bursts + n
        for k in range(first, first + n):
            i = f"b-{k}"
            p.produce(topic, execution(i, "echo", b"chaos").SerializeToString(), key=i, on_delivery=delivered)
            p.poll(0)
        p.flush(timeout)
        with self.lock:
            self.sent += n
        return len(got)

    def finished(self):
        return all(not t.is_alive() for t in self.threads)

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join(180)


class Cluster:
    """The mesh under test, with fixed addresses so replicas can come and go."""

    def __init__(self, args):
        self.args = args
        self.m = Mesh("chaos", partitions=args.partitions,
                      bootstrap_file=args.bootstrap_file if args.kafka == "real" else None)
        self.dir = self.m.dir
        # executor-2's host: a namespace of its own on a bridge (tests/integration/hosts.py);
        # the root namespace is on the bridge too (net.root_ip), where the sinks listen
        self.net = Network("chaos", third_octet=77)
        try:
            self.ns = self.net.add_host("executor-2")
        except Exception:
            self.net.close()
            raise
        self.sink_ports = [free_port() for _ in range(3)]
        self.exec_ports = [free_port() for _ in range(4)]  # executor-2 lives in the namespace
        self.ns_exec_port = 7299
        self.sched_ports = [free_port() for _ in range(3)]
        self.submit_target = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in self.sched_ports)
        self.procs = {}

    # --- addresses ---------------------------------------------------------
    def exec_addr(self, i):
        return f"{self.ns.ip}:{self.ns_exec_port}" if i == 2 else f"127.0.0.1:{self.exec_ports[i]}"

    def sinks_target(self, from_ns):
        host = self.net.root_ip if from_ns else "127.0.0.1"
        return "ipv4:" + ",".join(f"{host}:{p}" for p in self.sink_ports)

    def executors_target(self):
        return "ipv4:" + ",".join(self.exec_addr(i) for i in range(4))

    # --- replicas ----------------------------------------------------------
    def start_sink(self, i, wait=True):
        name = f"sink-{i}"
        extra = list(self.args.sink_args) if i == 0 else []
        p = self.m.start("sink", name, self.m.kafka_args() + [
            "--set", f"sink.journal={self.dir}/{name}.journal",
            # 0.0.0.0: the namespaced executor reaches it too; no TLS in the chaos mesh
            "--set", "security.allow_plaintext=true"] + extra, wait=False,
            grpc_listen=f"0.0.0.0:{self.sink_ports[i]}", binary=self.args.sink_bin if i == 0 else None)
        p.addr = f"127.0.0.1:{self.sink_ports[i]}"
        return self._started(name, p, wait)

    def start_executor(self, i, wait=True):
        name = f"executor-{i}"
        ns = i == 2
        p = self.m.start("executor", name, [
            "--set", f"sinks.target={self.sinks_target(ns)}",
            "--set", f"executor.journal={self.dir}/{name}.journal"]
            + (["--set", "security.allow_plaintext=true"] if ns else []), wait=False,
            grpc_listen=f"{self.ns.ip}:{self.ns_exec_port}" if ns else f"127.0.0.1:{self.exec_ports[i]}",
            metrics_listen=f"{self.ns.ip}:0" if ns else "127.0.0.1:0", wrap=self.ns.wrap() if ns else ())
        p.addr = self.exec_addr(i)
        return self._started(name, p, wait)

    def start_scheduler(self, i, wait=True, extra=()):
        name = f"scheduler-{i}"
        p = self.m.start("scheduler", name, self.m.kafka_args() + [
            "--set", f"executors.target={self.executors_target()}", "--set", f"kafka.group_id={self.m.group}"]
            + list(extra), wait=False, grpc_listen=f"127.0.0.1:{self.sched_ports[i]}")
        p.addr = f"127.0.0.1:{self.sched_ports[i]}"
        return self._started(name, p, wait)

    def _started(self, name, p, wait):
        self.procs[name] = p
        if wait:
            p.wait_ports()
            wait_for(lambda: probe(p.addr) == 0, 60, f"{name} SERVING (grpc-health-probe)", interval=0.1)
        return p

    def restart(self, name, wait=True):
        role, i = name.rsplit("-", 1)
        return getattr(self, f"start_{role}")(int(i), wait=wait)

    def up(self):
        for i in range(2):
            self.start_sink(i)
        for i in range(3):
            self.start_executor(i)
        for i in range(2):
            self.start_scheduler(i)
        self.m.wait_assigned([self.procs["scheduler-0"], self.procs["scheduler-1"]], self.args.partitions)
        self.requests_start = self.m.kafka.start_offsets(self.m.topics["execmesh.requests"])

    def running(self, role):
        return [p for n, p in sorted(self.procs.items()) if n.startswith(role) and p.alive()]

    def metric(self, name, metric):
        try:
            return self.procs[name].metric(metric)
        except Exception:
            return 0.0

    # --- the schedulers' consumer group ------------------------------------
    def end_offsets(self):
        return self.m.kafka.end_offsets(self.m.topics["execmesh.requests"])

    def behind(self, target):
        """{partition: records below target (partition -> offset) that the
        schedulers' group has not committed}, only the partitions behind."""
        committed = self.m.kafka.committed(self.m.group, self.m.topics["execmesh.requests"])
        out = {}
        for p, end in target.items():
            done = max(committed.get(p, -1), self.requests_start.get(p, 0))  # no commit yet: a negative offset
            if end > done:
                out[p] = end - done
        return out

    def wait_lag0(self, target, deadline):
        """Polls the group's committed offsets until they reach target on
        every partition or the monotonic deadline passes (one check at least).
        Returns (monotonic time reached or None, {partition: behind})."""
        while True:
            try:
                left = self.behind(target)
            except Exception as e:  # the broker briefly unanswering is not lag; the deadline bounds it
                left = {p: -1 for p in target}
                log(f"reading the group's offsets: {e}")
            if not left:
                return time.monotonic(), {}
            if time.monotonic() >= deadline:
                return None, left
            time.sleep(0.2)  # ok-sleep: the poll interval of a bounded wait

    def stall_report(self, left, target):
        """What the schedulers said while partitions stayed behind: logged,
        and returned as one line for the fault's effect."""
        topic = self.m.topics["execmesh.requests"]
        try:
            committed = self.m.kafka.committed(self.m.group, topic)
            end = self.m.kafka.end_offsets(topic)
        except Exception:
            committed, end = {}, {}
        owners = {}
        lines = []
        for q in self.running("scheduler"):
            for p in owned_partitions(q, now_ms() + 1):
                owners[p] = q.name
            try:
                m = q.metrics()
            except Exception:
                m = {}
            keys = ("execmesh_scheduler_assigned_partitions", "execmesh_scheduler_pending", "execmesh_inflight",
                    "execmesh_scheduler_paused", "execmesh_scheduler_commits_total",
                    "execmesh_scheduler_commit_failures_total", "execmesh_scheduler_redispatched_total")
            lines.append(f"{q.name}: " + " ".join(f"{k.replace('execmesh_', '')}={m.get(k, 0):g}" for k in keys))
        parts = ", ".join(f"p{p} committed {committed.get(p, '?')} target {target.get(p)} end {end.get(p, '?')} "
                          f"owner {owners.get(p, 'none')}" for p in sorted(left))
        log(f"partitions behind: {parts}")
        for line in lines:
            log(f"  {line}")
        return f"behind: {parts}; " + "; ".join(lines)

    def close(self):
        try:
            self.ns.heal()
        except Exception:
            pass
        for p in self.m.procs:  # a frozen replica would ignore SIGTERM
            if p.alive():
                os.kill(p.pid, signal.SIGCONT)
        try:
            self.m.close()
        finally:
            self.net.close()


# ---- evidence from the replicas' journals and logs -------------------------

def journal(path):
    """[(unix_ms, tag, id, attempt or "")] from an executor or sink journal
    (executor lines carry the attempt, sink lines do not)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    out.append((int(parts[0]), parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    except OSError:
        pass
    return out


def held_at(path, until_ms, start_tag, end_tags, since_ms):
    """{(id, attempt): taken at} of what the replica's incarnation started at
    since_ms had taken (start_tag) and not answered for (any of end_tags) by
    until_ms: matched per (id, attempt), in journal order, so an earlier
    attempt of the same id that it finished does not hide a later one it
    held (sink lines carry no attempt: 0). until_ms is when the fault was
    complete (the victim seen dead, stopped or cut off), not when it began:
    work taken in between was held too."""
    held = {}
    for ts, tag, eid, att in journal(path):
        if ts > until_ms or ts < since_ms:
            continue
        key = (eid, int(att) if att.isdigit() else 0)
        if tag == start_tag:
            held[key] = ts
        elif tag in end_tags:
            held.pop(key, None)
    return held


def log_events(proc, msg):
    out = []
    for line in proc.log_lines():
        if line.get("msg") == msg:
            ts = line.get("ts", "")
            try:
                t = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
                out.append((int(t * 1000) + int(ts[20:23]), line.get("fields", {})))
            except (ValueError, IndexError):
                pass
    return out


def owned_partitions(proc, at_ms):
    owned = set()
    for ts, f in sorted(log_events(proc, "partitions assigned") + [
            (t, dict(x, revoked=True)) for t, x in log_events(proc, "partitions revoked")], key=lambda e: e[0]):
        if ts > at_ms:
            break
        parts = {int(x) for x in str(f.get("partitions", "")).split(",") if x != ""}
        owned = owned - parts if f.get("revoked") else owned | parts
    return owned


# ---- the faults ------------------------------------------------------------

class Fault:
    def __init__(self, kind, victim, hold_s, cycles=0):
        self.kind, self.victim, self.hold_s = kind, victim, hold_s
        self.cycles = cycles     # churn_scheduler: join+leave cycles
        self.nth = 0             # this kind's how-manieth in the schedule (seeds the churn)
        self.t_ms = None
        self.done_ms = None      # the fault complete: the victim seen dead, stopped (state T) or cut off
        self.heal_ms = None
        self.lag_failed = None   # churn, cold start: what stayed behind the lag bound
        self.in_flight = None
        self.effect = ""
        self.ok = True
        self.figures = {}
        self.dup = 0
        self.submit_errors = 0
        self.victim_proc = None
        self.base_work = 0


def work_taken(c, name):
    """The work an executor or sink has taken so far (its calls in)."""
    role = name.split("-")[0]
    return c.metric(name, "execmesh_executions_in_total" if role == "executor" else "execmesh_sink_publish_calls_total")


def hold_work_on(c, victim, tag, timeout=15):
    """Makes the victim hold an execution when the fault fires: a short
    sleep is submitted at a time until the victim's journal shows one
    started and unanswered. Echoes alone are answered within a millisecond
    or two, so a cut can find the victim holding nothing, and then the
    fault proves nothing. These executions are not in the load's acked set;
    their results count in the duplicates like any other."""
    ch = grpc.insecure_channel(c.submit_target)
    stub = pb_grpc.SchedulerStub(ch)
    path = f"{c.dir}/{victim}.journal"
    deadline = time.monotonic() + timeout
    ids = []
    try:
        while time.monotonic() < deadline:
            ids.append(f"hold-{tag}-{len(ids)}")
            stub.Submit(pb.SubmitRequest(executions=[execution(ids[-1], "sleep", b"300")]), timeout=10)
            until = time.monotonic() + 0.3
            while time.monotonic() < until:
                rows = journal(path)
                started = {eid for _, t, eid, _ in rows if t == "S"}
                answered = {eid for _, t, eid, _ in rows if t in ("D", "X")}
                if any(i in started and i not in answered for i in ids):
                    return
                time.sleep(0.01)  # ok-sleep: a tight poll of a bounded wait
    finally:
        ch.close()
    raise AssertionError(f"{victim} took none of {len(ids)} sleeps within {timeout} s: the fault would prove nothing")


def wait_in_flight(c, name, timeout=30):
    """Polls the victim's in-flight gauge until it is > 0; returns it."""
    p = c.procs[name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = c.metric(name, "execmesh_inflight")
        if v > 0:
            return v
        time.sleep(0.002)  # ok-sleep: a tight poll of a bounded wait
    raise AssertionError(f"{name} never had work in flight within {timeout} s: the fault would prove nothing")


def hold(seconds, watch=None):
    """Keeps the fault applied for a while; watch() runs about every 100 ms."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if watch:
            watch()
        time.sleep(0.1)  # ok-sleep: the fault's hold time is the point


class GroupWatch(threading.Thread):
    """Watches the schedulers while a fault plays: whether any showed
    execmesh_scheduler_paused = 1 (its intake held because
    dispatch.max_pending executions wait, or its partitions paused), the
    most that waited, and per partition of the requests topic the longest
    time the group's committed offset stood still while records waited
    behind it. Polls every interval s, the group's offsets every
    offsets_every s; runs until stop() or its bound."""

    def __init__(self, c, bound_s, interval=0.05, offsets_every=0.5):
        super().__init__(daemon=True)
        self.c, self.interval, self.offsets_every = c, interval, offsets_every
        self.deadline = time.monotonic() + bound_s
        self.done = threading.Event()
        self.held_by = set()      # schedulers seen with execmesh_scheduler_paused = 1
        self.max_pending = 0
        self.holds = {}           # Proc -> [first, last] execmesh_scheduler_intake_holds_total (if it has one)
        self.stall = {}           # partition -> longest still stand with records waiting (s)
        self._moved = {}          # partition -> (committed offset, monotonic time it got there)

    def run(self):
        next_offsets = 0.0
        while not self.done.is_set() and time.monotonic() < self.deadline:
            try:
                procs = [q for q in list(self.c.procs.values()) if q.role == "scheduler" and q.alive()]
            except RuntimeError:  # the dict changed under us (a replica started): next round
                procs = []
            for q in procs:
                try:
                    m = q.metrics()
                except Exception:  # starting or leaving: no metrics port this instant
                    continue
                if m.get("execmesh_scheduler_paused", 0) >= 1:
                    self.held_by.add(q.name)
                self.max_pending = max(self.max_pending, int(m.get("execmesh_scheduler_pending", 0)))
                if "execmesh_scheduler_intake_holds_total" in m:
                    h = self.holds.setdefault(q, [m["execmesh_scheduler_intake_holds_total"]] * 2)
                    h[1] = m["execmesh_scheduler_intake_holds_total"]
            if time.monotonic() >= next_offsets:
                next_offsets = time.monotonic() + self.offsets_every
                self._offsets()
            self.done.wait(self.interval)  # the watch's poll interval, not a synchronisation

    def _offsets(self):
        try:
            committed = self.c.m.kafka.committed(self.c.m.group, self.c.m.topics["execmesh.requests"])
            end = self.c.end_offsets()
        except Exception:
            return
        t = time.monotonic()
        for p, e in end.items():
            off = max(committed.get(p, -1), self.c.requests_start.get(p, 0))  # no commit yet: from the start
            last = self._moved.get(p)
            if last is None or off != last[0] or e <= off:  # it moved, or nothing waits
                self._moved[p] = (off, t)
            else:
                self.stall[p] = max(self.stall.get(p, 0.0), t - last[1])

    def stop(self):
        self.done.set()
        self.join(10)

    def intake_holds(self):
        """Holds counted during the watch (None: the schedulers have no such counter)."""
        return int(sum(last - first for first, last in self.holds.values())) if self.holds else None

    def worst_stall(self):
        if not self.stall:
            return None, 0.0
        p = max(self.stall, key=self.stall.get)
        return p, round(self.stall[p], 1)


# The churning scheduler's intake: a small dispatch.max_pending (and few
# executions in flight), so the backlog a rebalance leaves on the partitions
# it gets (every rebalance stops consumption for seconds) fills it: the
# hold-during-a-rebalance path is played, not only the plain rebalance.
CHURN_SCHEDULER_SETTINGS = ("--set", "dispatch.max_pending=64", "--set", "dispatch.max_inflight=16")


def churn(c, f, args, load):
    """churn_scheduler (matrix row 24): scheduler-2 joins and leaves (SIGTERM,
    drain) f.cycles times, the next event 3-5 s (seeded) after the last
    (the first leave counts from the first join's assignment), while the
    load flows. A burst of args.burst produced executions once the first
    join owns partitions, and the churning scheduler's small
    dispatch.max_pending (CHURN_SCHEDULER_SETTINGS), make intakes hold:
    execmesh_scheduler_paused must be seen at 1. After the last leave the
    group's committed offsets must reach the end offsets read at that moment
    within LAG_BOUND_S."""
    name = "scheduler-2"
    q = c.procs.get(name)
    if q is not None and q.alive():  # left running (add_scheduler without remove_added): start from two
        q.stop(60)
    rnd = random.Random(f"{args.seed}:churn:{f.nth}")
    gaps = [rnd.uniform(3.0, 5.0) for _ in range(2 * f.cycles - 1)]
    watch = GroupWatch(c, bound_s=sum(gaps) + 10 * f.cycles + LAG_BOUND_S + 60)
    watch.start()
    f.t_ms = now_ms()
    try:
        events, drains, exits, assigned = [], [], [], 0
        at = time.monotonic()
        for k in range(f.cycles):
            hold(max(0.0, at - time.monotonic()))  # the churn's cadence is the point
            events.append(("join", now_ms(), time.monotonic()))
            q = c.start_scheduler(2, wait=False, extra=CHURN_SCHEDULER_SETTINGS)
            q.wait_ports()
            wait_for(lambda: probe(q.addr) == 0, 30, f"{name} SERVING (join {k + 1})", interval=0.05)
            if k == 0:
                # the first join stays until the group gave it partitions (a
                # real broker's join is quick; devkafka's takes ~5 s, longer
                # than the cadence, and a scheduler that leaves first never
                # holds its small intake), and the cadence counts from there
                t_join = time.monotonic()
                try:
                    wait_for(lambda: c.metric(name, "execmesh_scheduler_assigned_partitions") > 0, LAG_BOUND_S,
                             f"{name} owning partitions (first join)", interval=0.05)
                    f.figures["first_join_assigned_s"] = round(time.monotonic() - t_join, 2)
                except AssertionError:
                    f.figures["first_join_assigned_s"] = -1
                # the backlog lands once the churning scheduler owns partitions:
                # its small intake holds for sure (on a real broker the group
                # settles so fast that a burst during the join is taken by the
                # others' larger intakes before anything holds)
                f.figures["burst"] = load.burst(args.burst)
                at = time.monotonic()
            at += gaps[2 * k]
            hold(max(0.0, at - time.monotonic()))
            events.append(("leave", now_ms(), time.monotonic()))
            t_leave = time.monotonic()
            q.signal(signal.SIGTERM)
            exits.append(q.wait_exit(60))
            drains.append(time.monotonic() - t_leave)
            assigned += any(fl.get("partitions") for _, fl in log_events(q, "partitions assigned"))
            if k + 1 < f.cycles:
                at += gaps[2 * k + 1]
        _, f.heal_ms, last_mono = events[-1]  # the last scale event: the last leave's SIGTERM
        target = c.end_offsets()
        reached, left = c.wait_lag0(target, last_mono + LAG_BOUND_S)
    finally:
        watch.stop()
    joins = sum(1 for e, _, _ in events if e == "join")
    leaves = sum(1 for e, _, _ in events if e == "leave")
    f.figures.update(joins=joins, leaves=leaves, joins_with_partitions=assigned,
                     drain_s=round(max(drains), 2), held_seen=int(bool(watch.held_by)),
                     max_pending=watch.max_pending)
    if watch.intake_holds() is not None:
        f.figures["intake_holds"] = watch.intake_holds()
    p_stall, stall_s = watch.worst_stall()
    f.figures["max_stall_s"] = stall_s
    # the matrix's "no partition without progress beyond the takeover bound":
    # reported (the mock's slow joins alone stall partitions during churn)
    bound_s = GOALS["takeover_ms"][0] / 1000
    f.figures["partitions_stalled_over_10s"] = sum(1 for v in watch.stall.values() if v > bound_s)
    if reached is not None:
        f.figures["lag0_s"] = round(reached - last_mono, 2)
    else:
        f.lag_failed = c.stall_report(left, target)
    bad_exits = [x for x in exits if x != 0]
    f.ok = joins >= f.cycles and leaves >= f.cycles and not bad_exits and bool(watch.held_by)
    f.effect = (f"{joins} joins, {leaves} leaves (drained, exit " + (f"codes {bad_exits}" if bad_exits else "0")
                + f"); intake held on {', '.join(sorted(watch.held_by)) or 'no scheduler'}"
                + f"; longest commit standstill p{p_stall} {stall_s} s"
                + (f"; lag 0 {f.figures['lag0_s']} s after the last leave" if reached is not None
                   else f"; LAG NOT 0 within {LAG_BOUND_S} s of the last leave: {f.lag_failed}"))


def cold_start(c, f, args):
    """cold_start (matrix row 25): every replica SIGTERMed at once, then the
    base mesh (BASE) started at once while the load keeps producing (Submits
    wait or fail: no scheduler is up). Passes when every acked execution gets
    its result (the final read) and the group's committed offsets reach the
    end offsets read when every replica is SERVING, within LAG_BOUND_S of
    that moment."""
    procs = [q for _, q in sorted(c.procs.items()) if q.alive()]
    t0 = time.monotonic()
    for q in procs:
        q.signal(signal.SIGTERM)
    exits = {q.name: q.wait_exit(60) for q in procs}
    f.figures["stopped"] = len(procs)
    f.figures["stop_s"] = round(time.monotonic() - t0, 2)
    # where each sink journal ends: the first result after the start is a
    # line past these offsets
    journals = {}
    for i in range(3):
        path = os.path.join(c.dir, f"sink-{i}.journal")
        journals[path] = os.path.getsize(path) if os.path.exists(path) else 0
    t_start_ms, t_start = now_ms(), time.monotonic()
    started = [c.restart(n, wait=False) for n in BASE]
    for q in started:
        q.wait_ports()
    for q in started:
        wait_for(lambda: probe(q.addr) == 0, 60, f"{q.name} SERVING after the cold start", interval=0.05)
    t_serving = time.monotonic()
    f.figures["serving_s"] = round(t_serving - t_start, 2)
    f.heal_ms = now_ms()
    target = c.end_offsets()

    def first_result():
        firsts = []
        for path, off in journals.items():
            try:
                with open(path) as fh:
                    fh.seek(off)
                    for line in fh:
                        parts = line.split()
                        if len(parts) >= 3 and parts[1] == "A" and int(parts[0]) >= t_start_ms:
                            firsts.append(int(parts[0]))
                            break
            except OSError:
                pass
        return min(firsts) if firsts else None
    first = wait_for(first_result, 60, "a first result after the cold start (a sink's A journal line)", interval=0.1)
    f.figures["first_result_s"] = round((first - t_start_ms) / 1000, 2)
    reached, left = c.wait_lag0(target, t_serving + LAG_BOUND_S)
    if reached is not None:
        f.figures["lag0_s"] = round(reached - t_start, 2)
    else:
        f.lag_failed = c.stall_report(left, target)
    # the group settled (both own partitions) before the next fault
    c.m.wait_assigned([c.procs["scheduler-0"], c.procs["scheduler-1"]], args.partitions)
    # shown: all stopped, all back and SERVING, a result after the start; a
    # replica that did not exit 0 is the replica_exits goal's (named there)
    bad_exits = {n: x for n, x in exits.items() if x != 0}
    f.effect = (f"{len(procs)} stopped (" + (f"exit codes {bad_exits}" if bad_exits else "exit 0")
                + f"), {len(started)} started, SERVING after {f.figures['serving_s']} s"
                + (f"; lag 0 {f.figures['lag0_s']} s after the start" if reached is not None
                   else f"; LAG NOT 0 within {LAG_BOUND_S} s of SERVING: {f.lag_failed}"))


def apply(c, f, args, load):
    p = c.procs.get(f.victim)
    f.victim_proc = p
    kafka_sh = os.path.join(ROOT, "scripts", "kafka.sh")
    if f.kind in ("partition_executor", "stop_executor"):
        hold_work_on(c, f.victim, f.kind)  # before the fault's clock starts: it took these before the cut
    if f.kind.startswith(("kill9", "sigterm", "stop_", "notserving", "partition")):
        f.in_flight = wait_in_flight(c, f.victim)
    f.t_ms = now_ms()
    log(f"fault {f.kind} on {f.victim} (in flight {f.in_flight})")
    if f.kind == "churn_scheduler":
        churn(c, f, args, load)
    elif f.kind == "cold_start":
        cold_start(c, f, args)
    elif f.kind.startswith("kill9"):
        p.signal(signal.SIGKILL)
        code = p.wait_exit(10)
        f.done_ms = now_ms()
        f.effect = f"exit {code}"
        hold(f.hold_s)
        f.heal_ms = now_ms()
        c.restart(f.victim)
    elif f.kind.startswith("sigterm"):
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        code = p.wait_exit(60)
        f.figures["drain_s"] = round(time.monotonic() - t0, 2)
        f.effect = f"drained, exit {code}"
        f.ok = code == 0
        hold(f.hold_s)
        f.heal_ms = now_ms()
        c.restart(f.victim)
    elif f.kind.startswith("stop_"):
        f.base_work = work_taken(c, f.victim) if f.victim.startswith(("executor", "sink")) else 0
        p.signal(signal.SIGSTOP)

        def state():
            with open(f"/proc/{p.pid}/stat") as st:
                return st.read().split(")")[1].split()[0]
        wait_for(lambda: state() == "T", 5, f"{f.victim} stopped (state T in /proc)", interval=0.01)
        f.done_ms = now_ms()
        f.effect = "state T"
        hold(f.hold_s)
        f.heal_ms = now_ms()
        p.signal(signal.SIGCONT)
    elif f.kind == "notserving_executor":
        p.signal(signal.SIGUSR1)
        wait_for(lambda: probe(p.addr) == 4, 5, f"{f.victim} NOT_SERVING", interval=0.02)
        hold(1.0)  # clients stop picking it; from here on it must get no new work
        before = c.metric(f.victim, "execmesh_executions_in_total")
        hold(f.hold_s)
        after = c.metric(f.victim, "execmesh_executions_in_total")
        f.effect = f"new executions while NOT_SERVING: {after - before:.0f}"
        f.ok = after == before
        f.heal_ms = now_ms()
        f.base_work = work_taken(c, f.victim)
        p.signal(signal.SIGUSR2)
    elif f.kind == "partition_executor":
        f.base_work = work_taken(c, f.victim)  # read before the cut: its metrics port is behind the link
        c.ns.cut()
        f.done_ms = now_ms()
        f.effect = "link down"
        hold(f.hold_s)
        f.heal_ms = now_ms()
        c.ns.heal()
    elif f.kind == "broker_down":
        if args.kafka == "dev":
            code, body = c.m.kafka.proc.post("/admin/brokers/down", timeout=10)
            assert code == 200, f"devkafka /admin/brokers/down: {code} {body}"
        else:
            subprocess.run([kafka_sh, "stop", "--dir", args.kafka_dir], check=True, capture_output=True, timeout=120)
        watched = c.running("sink") + c.running("scheduler")
        seen = {}

        def watch():
            for q in watched:
                if q.name not in seen and probe(q.addr) == 4:
                    seen[q.name] = now_ms() - f.t_ms
        wait_for(lambda: (watch(), len(seen) == len(watched))[1], 15,
                 "sinks and schedulers NOT_SERVING with the broker down", interval=0.1)
        f.effect = "NOT_SERVING after " + ", ".join(f"{k} {v} ms" for k, v in sorted(seen.items()))
        f.figures["not_serving_ms_max"] = max(seen.values())
        hold(f.hold_s)
        f.heal_ms = now_ms()
        if args.kafka == "dev":
            code, body = c.m.kafka.proc.post("/admin/brokers/up", timeout=10)
            assert code == 200, f"devkafka /admin/brokers/up: {code} {body}"
        else:
            subprocess.run([kafka_sh, "start", "--dir", args.kafka_dir], check=True, capture_output=True, timeout=180)
        t_up = now_ms()
        wait_for(lambda: all(probe(q.addr) == 0 for q in watched), 60, "every service SERVING after the broker",
                 interval=0.1)
        f.figures["recovery_s"] = round((now_ms() - t_up) / 1000, 2)
    elif f.kind.startswith("add_"):
        role = f.kind[4:]
        q = c.restart(f.victim)
        metric = "execmesh_scheduler_assigned_partitions" if role == "scheduler" else "execmesh_executions_in_total"
        wait_for(lambda: c.metric(f.victim, metric) > 0, 60, f"{f.victim} to get work", interval=0.1)
        f.figures["first_work_ms"] = now_ms() - f.t_ms
        f.effect = f"{metric} > 0"
        f.heal_ms = now_ms()
    elif f.kind == "remove_added":
        for name in ("scheduler-2", "executor-3", "sink-2"):
            q = c.procs[name]
            q.signal(signal.SIGTERM)
            code = q.wait_exit(60)
            f.ok = f.ok and code == 0
        f.effect = "3 added replicas drained, exit 0" if f.ok else "a drain exited non-zero"
        f.heal_ms = now_ms()
    else:
        raise AssertionError(f"unknown fault {f.kind}")
    # back in the picks: a healed or restarted executor or sink takes work
    # again (the clients' reconnect backoff is up to grpc.reconnect_max_ms),
    # so the next fault on its role finds a survivor and measures a reroute,
    # not a reconnect
    role = f.victim.split("-")[0] if f.kind not in ("churn_scheduler", "cold_start") else ""
    if role in ("executor", "sink") and not f.kind.startswith(("add_", "remove")):
        base = 0 if f.kind.startswith(("kill9", "sigterm")) else f.base_work
        wait_for(lambda: work_taken(c, f.victim) > base, 20, f"{f.victim} taking work again after {f.kind}",
                 interval=0.02)
        f.figures["back_in_picks_ms"] = now_ms() - f.heal_ms
    # a scheduler that was killed, drained or frozen (the group dropped it)
    # rejoins: wait for the rebalance that brings it back to end, so its
    # re-runs are counted for this fault, not the next
    if role == "scheduler" and not f.kind.startswith(("add_", "remove")):
        nparts = len(c.m.kafka.end_offsets(c.m.topics["execmesh.requests"]))

        def rejoined():
            owned = [c.metric(q.name, "execmesh_scheduler_assigned_partitions") for q in c.running("scheduler")]
            return c.metric(f.victim, "execmesh_scheduler_assigned_partitions") > 0 and sum(owned) == nparts
        wait_for(rejoined, 60, f"{f.victim} owning partitions again after {f.kind}", interval=0.05)
        f.figures["rejoined_ms"] = now_ms() - f.heal_ms
    # settle: every replica that should run is SERVING again, and everything
    # that entered Kafka before the heal is committed (so the re-runs this
    # fault causes happen before the next fault, and are counted for it)
    for q in list(c.procs.values()):
        if q.alive():
            wait_for(lambda: probe(q.addr) == 0, 60, f"{q.name} SERVING after {f.kind}", interval=0.1)
    end = c.end_offsets()
    t_settle = time.monotonic()
    c.m.wait_committed({}, end, timeout=90)
    f.figures["settle_s"] = round(time.monotonic() - t_settle, 1)


def schedule(quick, rounds, seed):
    base = [("kill9_executor", "executor-0", 5), ("kill9_sink", "sink-0", 5), ("kill9_scheduler", "scheduler-0", 8),
            ("sigterm_executor", "executor-1", 3), ("sigterm_sink", "sink-1", 3),
            ("sigterm_scheduler", "scheduler-1", 3), ("stop_executor", "executor-0", 8),
            ("stop_scheduler", "scheduler-0", 14), ("notserving_executor", "executor-1", 5),
            ("partition_executor", "executor-2", 8), ("broker_down", "kafka", 6),
            ("add_executor", "executor-3", 0), ("add_scheduler", "scheduler-2", 0), ("add_sink", "sink-2", 0),
            ("remove_added", "added", 0)]
    # the scale-in/out churn, then a cold start of the whole mesh: each
    # round ends with them (the cold start also resets what the round left)
    if quick:
        faults = [Fault(k, v, h) for k, v, h in base] + [
            Fault("churn_scheduler", "scheduler-2", 0, cycles=6), Fault("cold_start", "all", 0)]
    else:
        rnd = random.Random(seed)
        faults = []
        for _ in range(rounds):
            middle = base[:11]
            rnd.shuffle(middle)
            faults += [Fault(k, v, h * 2) for k, v, h in middle] + [Fault(k, v, h) for k, v, h in base[11:]] + [
                Fault("churn_scheduler", "scheduler-2", 0, cycles=10), Fault("cold_start", "all", 0)]
    seen = {}
    for f in faults:
        f.nth = seen[f.kind] = seen.get(f.kind, -1) + 1
    return faults


def expected_s(f):
    """About how long a fault keeps the load busy (to size the load)."""
    if f.kind == "churn_scheduler":
        return 8 * f.cycles + LAG_BOUND_S + 10
    if f.kind == "cold_start":
        return 40
    return f.hold_s + 6


# ---- the final read and the figures -----------------------------------------

def read_results(c, want, quiet_s, timeout):
    """All records of the results topic, until every wanted id has one and the
    topic has been quiet for quiet_s."""
    cons = Consumer({"bootstrap.servers": c.m.kafka.bootstrap, "group.id": f"chaos-reader-{os.getpid()}",
                     "enable.auto.commit": False})
    topic = c.m.topics["execmesh.results"]
    cons.assign([TopicPartition(topic, p, o) for p, o in c.m.results_start.items()])
    recs, have = [], set()
    last_new = time.monotonic()
    deadline = time.monotonic() + timeout
    while True:
        msgs = cons.consume(1000, 0.2)
        for m in msgs:
            if m.error():
                continue
            r = pb.Result.FromString(m.value())
            recs.append((r.id, r.attempt, r.executor, m.timestamp()[1], r.status))
            have.add(r.id)
        if msgs:
            last_new = time.monotonic()
        if want <= have and time.monotonic() - last_new >= quiet_s:
            break
        if time.monotonic() - last_new >= max(5 * quiet_s, 20):  # quiet, yet ids missing: they are lost
            break
        if time.monotonic() > deadline:
            log(f"gave up waiting: {len(want - have)} acked ids still without a result")
            break
    cons.close()
    return recs


def journal_index(c, role, tag):
    """{id: [(unix_ms, replica, attempt)]} of the tag's lines in every journal of a role."""
    out = {}
    for name in os.listdir(c.dir):
        if name.startswith(role) and name.endswith(".journal"):
            replica = name[:-len(".journal")]
            for ts, t, eid, rest in journal(os.path.join(c.dir, name)):
                if t == tag:
                    out.setdefault(eid, []).append((ts, replica, int(rest) if rest.isdigit() else 0))
    return out


def completion(index, eid, attempt, victim, t_ms):
    """When the execution (id, attempt) the victim held became durable: the
    first acknowledgement after the fault of a run of that id by another
    replica (a re-run, whatever its attempt: a rebalance may have re-read
    the record), else the victim's own of that attempt or a later one once
    healed."""
    rows = index.get(eid, [])
    others = [ts for ts, r, _ in rows if ts >= t_ms and r != victim]
    if others:
        return min(others)
    own = [ts for ts, r, att in rows if ts >= t_ms and r == victim and att >= attempt]
    return min(own) if own else None


def charge_submit_errors(faults, errors):
    """Charges each failed Submit to one fault: the one under way when the
    call started; else the latest whose window (fault to heal + 5 s) holds
    the call's end; else the latest whose window holds its start. (A Submit
    waits for a scheduler up to its 10 s deadline: one that started in a
    cold start's outage and failed after the next fault began is the cold
    start's; one that started after a drain healed and failed in the next
    outage is the outage's.)"""
    played = [f for f in faults if f.t_ms]
    for f in played:
        f.submit_errors = 0
    for start, end, _ in errors:
        def window(f, t, slack):
            return f.t_ms <= t <= (f.heal_ms or f.t_ms) + slack
        owner = next((f for f in reversed(played) if window(f, start, 0)), None) or \
            next((f for f in reversed(played) if window(f, end, 5000)), None) or \
            next((f for f in reversed(played) if window(f, start, 5000)), None)
        if owner:
            owner.submit_errors += 1


def figures(c, faults, recs, load):
    with open(os.path.join(c.dir, "results.tsv"), "w") as out:  # for a post-mortem
        for r in recs:
            out.write("\t".join(str(x) for x in r) + "\n")
    by_id = {}
    for eid, attempt, executor, ts, status in recs:
        by_id.setdefault(eid, []).append((ts, attempt, executor))
    for v in by_id.values():
        v.sort()
    # duplicates, each attributed to the latest fault before the extra result;
    # but when the id was re-dispatched (an attempt >= 2) and a frozen or
    # cut-off executor produced one of its results after its fault began (it
    # re-published after the heal, perhaps while the next fault was on), to
    # that executor's fault
    fault_times = sorted((f.t_ms, f) for f in faults if f.t_ms)
    for eid, rs in by_id.items():
        rerun = any(att >= 2 for _, att, _ in rs)  # re-dispatched, not re-read from Kafka
        for ts, _, _ in rs[1:]:
            owner = None
            victim_fault = None
            for t, f in fault_times:
                if t <= ts:
                    owner = f
                    if f.kind in LIVES_ON and rerun and any(ex == f.victim and t <= rts <= (f.heal_ms or t) + 30000
                                                            for rts, _, ex in rs):
                        victim_fault = f
            owner = victim_fault or owner
            if owner:
                owner.dup += 1
    exec_done = journal_index(c, "executor", "D")
    sink_done = journal_index(c, "sink", "A")
    charge_submit_errors(faults, load.submit_errors)
    for f in faults:
        if not f.t_ms:
            continue
        until = f.done_ms or f.t_ms
        if f.kind in ("kill9_executor", "stop_executor", "partition_executor"):
            held = held_at(f"{c.dir}/{f.victim}.journal", until, "S", "DX", f.victim_proc.started_ms)
            done = [completion(exec_done, i, att, f.victim, f.t_ms) for i, att in held]
            rerun = [i for i, _ in held if any(att >= 2 for _, att, _ in by_id.get(i, []))]
            f.figures["held"] = len(held)
            f.figures["rerun_attempt_ge2"] = len(rerun)
            if f.kind == "kill9_executor":
                # reroute: to the durable re-run of the LAST execution it held
                if held and all(d is not None for d in done):
                    f.figures["reroute_ms"] = max(done) - f.t_ms
                elif held:
                    f.figures["reroute_unresolved"] = sum(1 for d in done if d is None)
                f.ok = f.ok and (not held or bool(rerun))
                f.effect += f"; {len(rerun)}/{len(held)} held ids re-run with attempt >= 2"
            else:
                # out of the picks: the last execution sent its way while it was
                # unreachable (held, or dispatched before the clients noticed) is
                # durable elsewhere as a re-run (attempt >= 2)
                moved = [ts for eid, rows in exec_done.items() for ts, r, att in rows
                         if r != f.victim and att >= 2 and f.t_ms <= ts <= f.heal_ms]
                late = [ts for ts in done if ts is not None]
                f.figures["rerun_during_fault"] = len(moved)
                if moved or late:
                    f.figures["out_of_picks_ms"] = max(moved + late) - f.t_ms
                # heal_ms is read just before the SIGCONT / link up: a start in that
                # same millisecond came after it (a call that waited in its socket)
                got = sum(1 for ts, t, _, _ in journal(f"{c.dir}/{f.victim}.journal")
                          if t == "S" and f.t_ms + 200 <= ts < f.heal_ms)
                f.ok = f.ok and bool(moved) and got == 0
                f.effect += f"; {len(moved)} executions re-run elsewhere while it was cut off; it took {got} new ones"
        elif f.kind == "kill9_sink":
            held = held_at(f"{c.dir}/{f.victim}.journal", until, "R", "AN", f.victim_proc.started_ms)
            done = [completion(sink_done, i, att, f.victim, f.t_ms) for i, att in held]
            f.figures["held"] = len(held)
            if held and all(d is not None for d in done):
                f.figures["reroute_ms"] = max(done) - f.t_ms
            elif held:
                f.figures["reroute_unresolved"] = sum(1 for d in done if d is None)
            f.effect += f"; {len(held)} results held by the dead sink"
        elif f.kind in ("kill9_scheduler", "stop_scheduler"):
            victim = f.victim_proc
            parts = owned_partitions(victim, f.t_ms)
            firsts = {}
            for q in c.m.procs:
                if q is victim or q.role != "scheduler":
                    continue
                for ts, fl in log_events(q, "partition first commit"):
                    pid = fl.get("partition")
                    if ts >= f.t_ms and pid in parts and (pid not in firsts or ts < firsts[pid]):
                        firsts[pid] = ts
            f.figures["partitions"] = len(parts)
            if parts and len(firsts) == len(parts):
                f.figures["takeover_ms"] = max(firsts.values()) - f.t_ms
            f.ok = f.ok and bool(parts) and len(firsts) == len(parts)
            f.effect += f"; {len(firsts)}/{len(parts)} of its partitions taken over"
            if f.kind == "stop_scheduler":
                refused = sum(1 for ts, fl in log_events(victim, "offset commit failed") if ts >= f.heal_ms)
                f.figures["stale_commits_refused"] = refused


def missed_goals(c, faults, lost, end_lag, quick):
    """[(goal, figure, detail, fails)] for every goal the run missed. Loss,
    clean-path duplicates and failed Submits, and the group's lag fail every
    mode; the timing goals (GOALS) fail the long mode and are reported by
    --quick."""
    out = []
    if lost:
        out.append(("lost", len(lost), "first: " + ", ".join(lost[:5]), True))
    # a replica that ended other than by a drain (0) or the harness's kill -9
    crashed = [f"{q.name} ({os.path.basename(q.log_path)}) exit {q.p.returncode}" for q in c.m.procs
               if q.role != "devkafka" and q.p.poll() not in (None, 0, -signal.SIGKILL)]
    if crashed:
        out.append(("replica_exits", len(crashed), ", ".join(crashed), True))

    def per_kind(attr):
        by = {}
        for f in faults:
            if f.kind in CLEAN and getattr(f, attr):
                by[f.kind] = by.get(f.kind, 0) + getattr(f, attr)
        return sum(by.values()), ", ".join(f"{k} {v}" for k, v in by.items())
    n, detail = per_kind("dup")
    if n:
        out.append(("clean_duplicates", n, detail, True))
    n, detail = per_kind("submit_errors")
    if n:
        out.append(("clean_failed_submits", n, detail, True))
    lag, left = end_lag
    if lag:
        out.append(("lag_end", lag, f"not 0 {LAG_BOUND_S} s after the load stopped: "
                    + ", ".join(f"p{p} {v}" for p, v in sorted(left.items())), True))
    for f in faults:
        if f.lag_failed:
            out.append((f"{f.kind}_lag0", f"not 0 within {LAG_BOUND_S} s", f.lag_failed, True))
    for fig, (bound, kinds) in GOALS.items():
        over, unmeasured, measured, played = [], [], 0, 0
        for f in faults:
            if f.kind not in kinds or not f.t_ms:
                continue
            played += 1
            v = f.figures.get(fig)
            if v is None:
                if fig != "reroute_ms" or f.figures.get("held"):  # nothing held at the kill: nothing to reroute
                    unmeasured.append(f"{f.kind} not measured")
            else:
                measured += 1
                if v >= bound if fig == "reroute_ms" else v > bound:  # reroute < 100 ms; the others <= bound
                    over.append((v, f"{f.kind} {v}"))
        if played and not measured and not unmeasured:  # every victim had finished its work when it died
            unmeasured.append(f"not measured in {played} faults: nothing held when the victim died")
        if over or unmeasured:
            worst = max(v for v, _ in over) if over else "-"
            out.append((fig, worst, f"goal {'<' if fig == 'reroute_ms' else '<='} {bound}: "
                        + ", ".join([d for _, d in over] + unmeasured), not quick))
    return out


def report(c, faults, load, recs, args, wall_s, end_lag):
    acked = set(load.acked)
    have = {}
    for eid, *_ in recs:
        have[eid] = have.get(eid, 0) + 1
    lost = sorted(acked - set(have))
    duplicates = sum(n - 1 for n in have.values())
    print()
    print(f"{'fault':22} {'victim':12} {'in_flight':>9} {'dup':>5} {'sub_err':>7}  figures / effect")
    for f in faults:
        figs = " ".join(f"{k}={v}" for k, v in f.figures.items())
        mark = "" if f.ok else "  <-- NOT SHOWN"
        print(f"{f.kind:22} {f.victim:12} {str(int(f.in_flight)) if f.in_flight else '-':>9} {f.dup:>5} "
              f"{f.submit_errors:>7}  {figs} | {f.effect}{mark}")

    def worst(fig, kinds=None):
        return max((f.figures[fig] for f in faults if fig in f.figures and (not kinds or f.kind in kinds)),
                   default=-1)
    clean_dup = sum(f.dup for f in faults if f.kind in CLEAN)
    clean_sub = sum(f.submit_errors for f in faults if f.kind in CLEAN)
    codes = {}
    for _, _, code in load.submit_errors:
        codes[code] = codes.get(code, 0) + 1
    churn_lag = [f.figures.get("lag0_s", -1) for f in faults if f.kind == "churn_scheduler" and f.t_ms]
    cold_lag = [f.figures.get("lag0_s", -1) for f in faults if f.kind == "cold_start" and f.t_ms]
    print()
    print(f"goals: lost 0 -> {len(lost)}; "
          + "; ".join(f"{k} {'<' if k == 'reroute_ms' else '<='} {b} -> {worst(k, kinds)}"
                      for k, (b, kinds) in GOALS.items())
          + f"; clean-path duplicates 0 -> {clean_dup}; clean-path failed Submits 0 -> {clean_sub}"
          + f"; lag at the end 0 within {LAG_BOUND_S} s -> {end_lag[0]}"
          + f"; churn lag 0 within {LAG_BOUND_S} s -> {churn_lag or '-'}"
          + f"; cold start lag 0 within {LAG_BOUND_S} s of SERVING -> {cold_lag or '-'} s after the start")
    if lost:
        print(f"LOST (first 20): {lost[:20]}")
    print(f"submit errors by code: {codes}")
    bad = [f.kind for f in faults if not f.ok]
    missed = missed_goals(c, faults, lost, end_lag, args.quick)
    for goal, fig, detail, fails in missed:
        tag = "GOAL FAILED" if fails else "GOAL MISSED (reported; fails the long mode, not --quick)"
        print(f"{tag} {goal}: {fig} ({detail})")
    failed = [g for g, _, _, fails in missed if fails]
    print(f"RESULT executions={len(acked)} faults={len(faults)} lost={len(lost)} duplicates={duplicates} "
          f"max_reroute_ms={worst('reroute_ms')} max_takeover_ms={worst('takeover_ms')} "
          f"max_out_of_picks_ms={worst('out_of_picks_ms')} failed_submits={len(load.submit_errors)} "
          f"clean_duplicates={clean_dup} clean_failed_submits={clean_sub} lag_end={end_lag[0]} "
          f"churn_lag0_s={max(churn_lag, default=-1)} cold_start_lag0_s={max(cold_lag, default=-1)} "
          f"faults_not_shown={len(bad)} goals_failed={','.join(failed) or 'none'} "
          f"kafka={args.kafka} wall_s={wall_s:.0f}")
    return lost, bad, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="each fault kind once (CI)")
    ap.add_argument("--rounds", type=int, default=3, help="long mode: every fault this many times")
    ap.add_argument("--seed", type=int, default=1, help="long mode: the schedule's shuffle")
    ap.add_argument("--rate", type=int, default=200, help="executions per second (half Submit, half produce)")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--kafka", choices=["dev", "real"], default="dev")
    ap.add_argument("--bootstrap-file", default="", help="real: the broker's bootstrap file")
    ap.add_argument("--kafka-dir", default="", help="real: the broker's scripts/kafka.sh --dir (to restart it)")
    ap.add_argument("--sink-bin", default=None, help="another sink binary for sink-0 (the negative control)")
    ap.add_argument("--sink-arg", dest="sink_args", action="append", default=[],
                    help="extra argument for sink-0 (repeatable)")
    ap.add_argument("--only", default="", help="comma-separated fault kinds to play (default: all)")
    ap.add_argument("--burst", type=int, default=6000,
                    help="churn_scheduler: executions produced at once when it starts (default: about 3 x "
                         "dispatch.max_pending, so both schedulers' intake holds)")
    args = ap.parse_args()
    os.environ["EM_KAFKA"] = args.kafka

    def stop_now(sig, frame):  # run the cleanup (processes, namespace) on SIGTERM/SIGINT
        raise SystemExit(f"chaos: stopped by signal {sig}")
    signal.signal(signal.SIGTERM, stop_now)
    signal.signal(signal.SIGINT, stop_now)

    faults = schedule(args.quick, args.rounds, args.seed)
    if args.only:
        keep = set(args.only.split(","))
        faults = [f for f in faults if f.kind in keep]
    total_hold = sum(expected_s(f) for f in faults) + 20
    total = args.rate * total_hold
    t_start = time.monotonic()
    c = Cluster(args)
    lost, bad, failed = [1], ["setup"], []
    try:
        log(f"mesh up in {c.dir} (kafka={args.kafka}, {args.partitions} partitions)")
        c.up()
        load = Load(c, args.rate, total)
        load.start()
        wait_for(lambda: len(load.acked) >= args.rate * 2, 60, "the load to get going")
        for f in faults:
            try:
                apply(c, f, args, load)
            except AssertionError as e:
                f.ok = False
                f.effect = (f.effect + "; " if f.effect else "") + f"NOT APPLIED: {e}".splitlines()[0]
                log(f"{f.kind}: NOT APPLIED: {e}".splitlines()[0])
        log("faults done; draining the load")
        load.stop()
        # the group's lag back to 0: with the load stopped, the end offsets
        # are final; the committed offsets must reach them within the bound
        t_stop = time.monotonic()
        end = c.end_offsets()
        reached, left = c.wait_lag0(end, t_stop + LAG_BOUND_S)
        if reached is None:
            c.stall_report(left, end)
        else:
            log(f"lag 0 {reached - t_stop:.1f} s after the load stopped")
        lag = sum(v for v in left.values() if v > 0)
        end_lag = (lag if reached is not None or lag else -1, left)  # -1: the offsets could not be read
        recs = read_results(c, set(load.acked), quiet_s=3 if args.quick else 10, timeout=180)
        figures(c, faults, recs, load)
        lost, bad, failed = report(c, faults, load, recs, args, time.monotonic() - t_start, end_lag)
    finally:
        try:
            c.close()
        except AssertionError as e:  # a replica that crashed (its exit code) or a sanitizer report
            log(f"CLEANUP FAILED: {e}")
            failed.append("cleanup")
    sys.exit(1 if lost or bad or failed else 0)


if __name__ == "__main__":
    main()
