# SPDX-License-Identifier: Apache-2.0
"""The resource-backlog measurement behind scripts/resource-backlog.sh: the
scheduler's and the executor's memory while a backlog of N executions waits
in Kafka for a throttled resource (resources.*: concurrency, rate, burst).

  1. N executions of handler `sleep` (payload "5": 5 ms) in the requests topic
  2. 1 sink, 1 executor, 1 scheduler whose config limits `sleep` to the
     resource (so only `rate` per second run); the throughput profile of
     tests/bench/bench.py for everything else
  3. every 5 s for --observe-s seconds: VmRSS/VmHWM of the three, the
     scheduler's resource metrics, held partitions, pending, and the group's
     lag (what is left in Kafka, from the committed offsets)
  4. optionally (--compare-s S, 0 to skip): the same backlog through a
     scheduler without the resource (a group of its own on the same topic,
     so no second fill): its RSS after S seconds at full speed

Prints the tables and one line
  RESULT backlog=N scheduler_rss_mb=.. scheduler_hwm_mb=.. executor_rss_mb=.. ...
and exits 1 when the admitted rate beat the limit (burst + rate x time), a
HWM passed --max-hwm-mb, or the backlog was not in Kafka (lag_left below
N - admitted - slack).
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402  (its profiles, its devkafka start, its helpers; imports tests/integration/mesh)
from bench import THROUGHPUT, cpu_seconds, sets  # noqa: E402
from mesh import BUILD, mesh_dir, wait_for  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

REQUESTS, RESULTS = "backlog.requests", "backlog.results"
GROUP_RES, GROUP_NORES = "backlog-res", "backlog-nores"
SAMPLE_S = 5


def log(msg):
    print(f"[resource-backlog {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mem_mb(pid):
    """(VmRSS, VmHWM) in MB from /proc/PID/status; (0, 0) when gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


def msum(m, name):
    """A metric summed over its label sets (or the one without labels)."""
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


class RealKafka:
    """The broker the shell script started (scripts/kafka.sh --dir DIR)."""

    def __init__(self, kdir, topics):
        self.bootstrap = open(os.path.join(kdir, "bootstrap")).read().strip()
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        have = admin.list_topics(timeout=10).topics
        new = [NewTopic(t, p, 1) for t, p in topics.items() if t not in have]
        for f in (admin.create_topics(new).values() if new else []):
            f.result(60)

        def leaders():
            md = admin.list_topics(timeout=10).topics
            return all(t in md and len(md[t].partitions) == p and all(x.leader >= 0 for x in md[t].partitions.values())
                       for t, p in topics.items())
        wait_for(leaders, 60, "leaders for every partition of the new topics", interval=0.2)

    def stop(self):
        pass  # the shell script stops the broker (trap on exit)


class Lag:
    """The group's lag on the requests topic: end offsets minus committed ones
    (a partition without a commit counts from its start offset)."""

    def __init__(self, bootstrap, group, topic, parts):
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.tps = [TopicPartition(topic, p) for p in range(parts)]

    def watermarks(self):
        return [self.c.get_watermark_offsets(tp, timeout=10) for tp in self.tps]

    def __call__(self):
        wm = self.watermarks()
        committed = self.c.committed(self.tps, timeout=10)
        return sum(hi - (c.offset if c.offset >= 0 else lo) for (lo, hi), c in zip(wm, committed))

    def close(self):
        self.c.close()


def encode(i, payload):
    """An Execution by hand (proto3: id = 1, handler = 2, payload = 3), keyed by its id."""
    k = b"r-%d" % i
    return k, b"\x0a" + bytes([len(k)]) + k + b"\x12\x05sleep\x1a" + bytes([len(payload)]) + payload


def fill_python(bootstrap, topic, n, payload):
    """The producer of em-bench-fill (idempotent, acks=all, linger 5 ms,
    1 MB batches), with a payload the sleep handler reads. Returns records/s."""
    sys.path.insert(0, os.path.join(BUILD, "py"))
    from execmesh.v1 import execmesh_pb2 as pb
    ex = pb.Execution.FromString(encode(7, payload)[1])
    assert (ex.id, ex.handler, ex.payload) == ("r-7", "sleep", payload), ex
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                  "batch.size": 1000000, "queue.buffering.max.messages": 2000000,
                  "queue.buffering.max.kbytes": 1048576})
    t0 = time.monotonic()
    for i in range(n):
        k, v = encode(i, payload)
        for _ in range(100000):  # bounded: the queue drains as the broker acknowledges
            try:
                p.produce(topic, v, k)
                break
            except BufferError:
                p.poll(0.005)
        else:
            raise SystemExit("the producer's queue did not drain")
        if (i & 4095) == 0:
            p.poll(0)
    left = p.flush(300)
    if left:
        raise SystemExit(f"{left} records not delivered within 300 s")
    return n / (time.monotonic() - t0)


def fill_tool(bootstrap, topic, n, payload):
    """em-bench-fill: fast, but its payload is letters ('a', 'b', ...), which
    the sleep handler refuses (FAILED, and retried up to max_attempts)."""
    r = subprocess.run([os.path.join(bench.TOOLS, "em-bench-fill"), "--bootstrap", bootstrap, "--topic", topic,
                        "--count", str(n), "--handler", "sleep", "--payload", str(len(payload)), "--prefix", "r-"],
                       capture_output=True, text=True, timeout=1800)
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode:
        raise SystemExit(f"em-bench-fill exited {r.returncode}: {line} {r.stderr[-500:]}")
    return float(dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv).get("rate", 0))


class Run:
    def __init__(self, dir_):
        self.dir = dir_
        self.procs = []

    def start(self, role, name, args):
        return bench.start_serving(self, role, name, args)

    def scheduler(self, name, kafka, exec_target, group, extra):
        return self.start("scheduler", name, kafka + ["--set", f"executors.target={exec_target}",
                                                      "--set", f"kafka.group_id={group}",
                                                      "--set", "kafka.start_paused=false"]
                          + sets(THROUGHPUT["scheduler"]) + extra)

    def stop(self, p, timeout=60):
        if p.alive():
            try:
                p.stop(timeout=timeout)
            except AssertionError as e:
                log(str(e))

    def close(self):
        for p in reversed(self.procs):
            self.stop(p)


def fmt_row(r):
    return (f"{r['t']:>5.0f} {r['s_rss']:>8.1f} {r['s_hwm']:>8.1f} {r['e_rss']:>8.1f} {r['e_hwm']:>8.1f} "
            f"{r['k_rss']:>8.1f} {r['s_cpu']:>6.1f} {r['waiting']:>7.0f} {r['running']:>4.0f} {r['admitted']:>9.0f} "
            f"{r['held']:>5.0f} {r['pending']:>8.0f} {r['lag']:>9d}")


HEADER = (f"{'t_s':>5} {'sch_rss':>8} {'sch_hwm':>8} {'exe_rss':>8} {'exe_hwm':>8} {'snk_rss':>8} {'sch_cpu':>6} "
          f"{'waiting':>7} {'run':>4} {'admitted':>9} {'held':>5} {'pending':>8} {'lag':>9}")


def observe(sched, ex, sink, lag, resource, seconds, t_start, label):
    """A sample every SAMPLE_S seconds (the first at once), printed as it comes."""
    rows = []
    log(f"{label}: sampling every {SAMPLE_S} s for {seconds} s (MB; t from the scheduler's assignment)")
    print(HEADER, flush=True)
    t0 = time.monotonic()
    for k in range(seconds // SAMPLE_S + 1):
        due = t0 + k * SAMPLE_S
        time.sleep(max(0.0, due - time.monotonic()))  # ok-sleep: the sampling period, bounded by the loop
        if not sched.alive():
            raise SystemExit(f"{sched.name} exited ({sched.p.returncode}); log:\n{sched.log_tail()}")
        m = sched.metrics()
        r = {"t": time.monotonic() - t0, "since_start": time.monotonic() - t_start}
        r["s_rss"], r["s_hwm"] = mem_mb(sched.pid)
        r["e_rss"], r["e_hwm"] = mem_mb(ex.pid)
        r["k_rss"], r["k_hwm"] = mem_mb(sink.pid)
        r["s_cpu"] = cpu_seconds(sched.pid)
        lbl = f'{{resource="{resource}"}}'
        r["waiting"] = m.get("execmesh_resource_waiting" + lbl, 0)
        r["running"] = m.get("execmesh_resource_running" + lbl, 0)
        r["admitted"] = m.get("execmesh_resource_admitted_total" + lbl, 0)
        r["throttled"] = m.get("execmesh_resource_throttled_total" + lbl, 0)
        r["held"] = msum(m, "execmesh_scheduler_held_partitions")
        r["pending"] = msum(m, "execmesh_scheduler_pending")
        r["consumed"] = msum(m, "execmesh_executions_in_total")
        r["lag"] = lag()
        rows.append(r)
        print(fmt_row(r), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kafka", choices=["dev", "real"], default="real")
    ap.add_argument("--kafka-dir", help="the broker scripts/kafka.sh started (--kafka real)")
    ap.add_argument("--config", required=True, help="the scheduler's resources config file")
    ap.add_argument("--resource", default="db:slow")
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--per-ms", type=float, default=1000)
    ap.add_argument("--burst", type=float, default=4)
    ap.add_argument("--max-waiting", type=int, default=64, help="the resource's max_waiting (for the printed bound)")
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=64)
    ap.add_argument("--observe-s", type=int, default=60)
    ap.add_argument("--compare-s", type=int, default=30)
    ap.add_argument("--fill", choices=["python", "bench-fill"], default="python")
    ap.add_argument("--payload", default="5")
    ap.add_argument("--max-hwm-mb", type=float, default=512)
    ap.add_argument("--slack", type=int, default=1000)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="ROLE:KEY=VALUE",
                    help="a setting of the throughput profile (repeatable), e.g. scheduler:kafka.poll_batch=1000")
    args = ap.parse_args()
    for kv in args.sets:
        role, _, rest = kv.partition(":")
        key, _, value = rest.partition("=")
        if role not in THROUGHPUT or not key or not value:
            ap.error(f"--set {kv}: expected ROLE:KEY=VALUE with ROLE one of {', '.join(THROUGHPUT)}")
        THROUGHPUT[role][key] = value
    signal.signal(signal.SIGTERM, lambda sig, frame: sys.exit(f"resource-backlog: stopped by signal {sig}"))
    t_wall = time.monotonic()
    run = Run(mesh_dir("resource-backlog"))
    args.topics = {REQUESTS: args.partitions, RESULTS: 128, "execmesh.dead": 6, "execmesh.delay": 6,
                   "execmesh.cancels": 6}
    kafka = None
    lags = []
    try:
        kafka = bench.Kafka(args, run.dir) if args.kafka == "dev" else RealKafka(args.kafka_dir, args.topics)
        log(f"kafka={args.kafka} at {kafka.bootstrap}; logs in {run.dir}")

        # 1. the backlog
        payload = args.payload.encode()
        log(f"filling {args.count} executions of handler sleep (payload {args.payload!r}) into {REQUESTS} "
            f"({args.partitions} partitions) with {args.fill}")
        fill_rate = (fill_python if args.fill == "python" else fill_tool)(kafka.bootstrap, REQUESTS, args.count,
                                                                          payload)
        probe_lag = Lag(kafka.bootstrap, "backlog-probe", REQUESTS, args.partitions)
        in_topic = sum(hi - lo for lo, hi in probe_lag.watermarks())
        probe_lag.close()
        log(f"filled at {fill_rate:.0f}/s; {in_topic} records in {REQUESTS}")
        if in_topic != args.count:
            raise SystemExit(f"{REQUESTS} holds {in_topic} records, not {args.count}")

        # 2. the mesh, the scheduler limited by the resource
        kafka_args = ["--set", f"kafka.bootstrap={kafka.bootstrap}", "--set", f"kafka.topic_requests={REQUESTS}",
                      "--set", f"kafka.topic_results={RESULTS}"]
        sink = run.start("sink", "sink-0", kafka_args + sets(THROUGHPUT["sink"]))
        ex = run.start("executor", "executor-0", ["--set", f"sinks.target=ipv4:{sink.grpc_addr}"]
                       + sets(THROUGHPUT["executor"]))
        exec_target = f"ipv4:{ex.grpc_addr}"
        t_sched = time.monotonic()
        sched = run.scheduler("scheduler-res", kafka_args, exec_target, GROUP_RES, ["--config", args.config])
        wait_for(lambda: sched.metric("execmesh_scheduler_assigned_partitions") == args.partitions, 90,
                 f"the scheduler to own the {args.partitions} partitions", interval=0.2)
        m, lbl = sched.metrics(), f'{{resource="{args.resource}"}}'
        log(f"scheduler assigned; its share: concurrency {m.get('execmesh_resource_share_concurrency' + lbl, 0):.0f}, "
            f"rate per minute {m.get('execmesh_resource_share_rate_per_minute' + lbl, 0):.0f}")
        lag = Lag(kafka.bootstrap, GROUP_RES, REQUESTS, args.partitions)
        lags.append(lag)
        rows = observe(sched, ex, sink, lag, args.resource, args.observe_s, t_sched, "with the resource")
        last = rows[-1]
        by_status = {}
        for k, v in ex.metrics().items():
            if k.startswith("execmesh_executor_results_total{") and v:
                st = re.search(r'status="([^"]+)"', k).group(1)
                by_status[st] = by_status.get(st, 0) + v
        statuses = " ".join(f"{st}:{v:.0f}" for st, v in sorted(by_status.items()))
        retries = msum(sched.metrics(), "execmesh_scheduler_retries_total")
        # 3. the comparison: the same backlog, a scheduler without the resource
        cmp_rows = []
        if args.compare_s > 0:
            log(f"stopping {sched.name}; comparison: a scheduler without the resource, group {GROUP_NORES}")
            run.stop(sched)
            t_sched2 = time.monotonic()
            sched2 = run.scheduler("scheduler-nores", kafka_args, exec_target, GROUP_NORES, [])
            wait_for(lambda: sched2.metric("execmesh_scheduler_assigned_partitions") == args.partitions, 90,
                     f"the comparison scheduler to own the {args.partitions} partitions", interval=0.2)
            lag2 = Lag(kafka.bootstrap, GROUP_NORES, REQUESTS, args.partitions)
            lags.append(lag2)
            cmp_rows = observe(sched2, ex, sink, lag2, args.resource, args.compare_s, t_sched2, "without the resource")
            run.stop(sched2)

        # 4. the verdict
        observed_s = last["since_start"]
        allowed = args.burst + args.rate * observed_s * 1000 / args.per_ms
        admitted = last["admitted"]
        s_hwm = max(r["s_hwm"] for r in rows)
        e_hwm = max(r["e_hwm"] for r in rows)
        mid = rows[len(rows) // 2]
        fails = []
        if admitted > allowed:
            fails.append(f"admitted {admitted:.0f} in {observed_s:.1f} s: above burst + rate x time = {allowed:.0f}")
        if s_hwm > args.max_hwm_mb:
            fails.append(f"the scheduler's HWM {s_hwm:.0f} MB is above {args.max_hwm_mb:.0f} MB")
        if e_hwm > args.max_hwm_mb:
            fails.append(f"the executor's HWM {e_hwm:.0f} MB is above {args.max_hwm_mb:.0f} MB")
        if last["lag"] < args.count - admitted - args.slack:
            fails.append(f"lag_left {last['lag']} < backlog {args.count} - admitted {admitted:.0f} - slack "
                         f"{args.slack}: the backlog is not in Kafka")
        if admitted == 0:
            fails.append("nothing was admitted")
        print()
        print(f"settings: throughput profile {THROUGHPUT}; resource {args.resource} rate {args.rate:g}/{args.per_ms:g} ms "
              f"burst {args.burst:g} (config {args.config})")
        print(f"scheduler RSS growth over the second half of the observation: {last['s_rss'] - mid['s_rss']:+.1f} MB; "
              f"throttled_total {last['throttled']:.0f}; scheduler CPU {last['s_cpu']:.1f} s in {observed_s:.0f} s; "
              f"executor results by status {statuses or 'none'}; scheduler retries {retries:.0f}")
        park_max = 16  # SC_PARK_MAX in services/scheduler/scheduler.h
        bound = args.max_waiting + args.partitions * park_max
        most = max(r["waiting"] for r in rows)
        print(f"waiting in the scheduler's memory at most {most:.0f}; the documented bound "
              f"max_waiting + partitions x {park_max} parked = {args.max_waiting} + {args.partitions} x {park_max} "
              f"= {bound}")
        if most > bound:
            fails.append(f"{most:.0f} executions waited in the scheduler's memory, above the bound {bound}")
        window = last["t"] - rows[0]["t"]
        cmp = cmp_rows[-1] if cmp_rows else None
        cmp_txt = (f"nores_scheduler_rss_mb={cmp['s_rss']:.1f} nores_scheduler_hwm_mb={max(r['s_hwm'] for r in cmp_rows):.1f} "
                   f"nores_at_s={cmp['t']:.0f} nores_pending={cmp['pending']:.0f} "
                   f"nores_done={args.count - cmp['lag']} " if cmp else "nores=skipped ")
        print(f"RESULT backlog={args.count} scheduler_rss_mb={last['s_rss']:.1f} scheduler_hwm_mb={s_hwm:.1f} "
              f"executor_rss_mb={last['e_rss']:.1f} executor_hwm_mb={e_hwm:.1f} sink_rss_mb={last['k_rss']:.1f} "
              f"admitted={admitted:.0f} admitted_per_s={(admitted - rows[0]['admitted']) / window:.1f} "
              f"held_partitions={last['held']:.0f} waiting_max={max(r['waiting'] for r in rows):.0f} "
              f"lag_left={last['lag']} allowed_max={allowed:.0f} observed_s={observed_s:.0f} {cmp_txt}"
              f"fill={args.fill} fill_per_s={fill_rate:.0f} kafka={args.kafka} wall_s={time.monotonic() - t_wall:.0f}")
        for f in fails:
            print(f"FAIL {f}")
        return 1 if fails else 0
    finally:
        for lg in lags:
            lg.close()
        run.close()
        if kafka:
            kafka.stop()


if __name__ == "__main__":
    sys.exit(main())
