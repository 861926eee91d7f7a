# SPDX-License-Identifier: Apache-2.0
"""The benchmark behind scripts/bench.sh: in one run, on one machine, with the
same Kafka, partition counts, message size and load, it measures

  passthrough   em-bench-passthrough: consume -> produce -> commit delivered
                offsets, no gRPC, no decoding (the Kafka limit)
  mesh 1/1/1    N pre-filled executions (100-byte payload, builtin echo)
  mesh 2/2/2    drained through 1 scheduler, 1 executor, 1 sink, and 2/2/2,
                timed from the first consume to the last committed offset,
                every result checked present (em-bench-check)
  1/1/1 TLS     the 1/1/1 mesh again with mutual TLS on every gRPC hop
                (certificates from scripts/test-ca.sh): tls_ratio beside ratio
  open loop     a coordinated-omission-free generator (em-bench-fill --rate)
                at 1,000/s and at half the closed-loop maximum; latency from
                each execution's scheduled time to its result's delivery
                report (the sink's execmesh_sink_end_to_end_seconds histogram); and
                before each, Kafka alone at the same rate: the generator into
                em-bench-passthrough --latency (consume -> produce, no gRPC)

with CPU seconds per execution for every service and the broker, and each
service's peak RSS. Prints a table and one line
  RESULT passthrough_per_min=P e2e_per_min=E ratio=E/P p50_ms=.. p99_ms=.. ...
and exits non-zero when an execution was lost or fewer results were checked
than sent.
"""
import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from mesh import BUILD, ROOT, Proc, mesh_dir, probe, wait_for  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

TOOLS = os.path.join(BUILD, "tests", "bench")
# An open-loop phase on devkafka sends at most this many: a result is ~250 bytes
# with its batch overhead, and devkafka keeps 5 MiB per partition (128 result
# partitions hold ~2.6 M); a result lost to retention would count as lost.
DEV_OPEN_LOOP_MAX = 1_500_000

# The settings profiles. Throughput: big batches all along the path.
# Latency: small batches, nothing waits to fill one.
THROUGHPUT = {
    "scheduler": {"dispatch.batch_max": 1000, "dispatch.max_inflight": 64000, "dispatch.max_calls": 64,
                  "dispatch.max_pending": 200000, "kafka.poll_batch": 10000,
                  "kafka.queued_max_kbytes": 131072, "kafka.fetch_wait_max_ms": 10, "kafka.linger_ms": 5},
    "executor": {"executor.max_inflight": 200000},
    "sink": {"kafka.linger_ms": 5, "kafka.batch_size": 1000000, "sink.max_inflight_results": 2000000},
}
LATENCY = {
    "scheduler": dict(THROUGHPUT["scheduler"], **{"kafka.fetch_wait_max_ms": 1, "kafka.linger_ms": 0}),
    "executor": THROUGHPUT["executor"],
    "sink": dict(THROUGHPUT["sink"], **{"kafka.linger_ms": 1}),
}


def ol_topics(i):
    """The topics of open-loop phase i: the mesh's and Kafka alone's."""
    return {"requests": f"bench.ol{i}.requests", "results": f"bench.ol{i}.results",
            "floor": f"bench.ol{i}.floor", "floor_out": f"bench.ol{i}.floor.out"}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sets(d):
    out = []
    for k, v in d.items():
        out += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    return out


def run_tool(name, *args, timeout=900):
    r = subprocess.run([os.path.join(TOOLS, f"em-bench-{name}")] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    if r.returncode != 0:
        log(f"em-bench-{name} exited {r.returncode}: {line} {r.stderr.strip()[-500:]}")
    return fields, r.returncode


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def machine_ticks():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return sum(v) - idle, sum(v)


def busy_cores(t0, t1):
    """Cores busy on average between two machine_ticks() readings."""
    db, dt = t1[0] - t0[0], t1[1] - t0[1]
    return db / dt * os.cpu_count() if dt > 0 else float("nan")


def settle(limit_s=60, quiet=0.5):
    """Before a latency phase: dirty pages written (the closed loop leaves
    gigabytes in the page cache on the real broker) and the machine quiet
    (fewer than `quiet` cores busy over half a second), at most limit_s.
    Returns the busy cores of the last half second."""
    os.sync()
    deadline = time.monotonic() + limit_s
    while True:
        t0 = machine_ticks()
        time.sleep(0.5)  # ok-sleep: the measuring window of a bounded wait
        busy = busy_cores(t0, machine_ticks())
        if busy < quiet or time.monotonic() >= deadline:
            return busy


def peak_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Kafka:
    def __init__(self, args, run_dir):
        self.args, self.dir = args, run_dir
        self.proc = None
        self.kdir = None
        if args.kafka == "dev":
            self.proc = Proc(self, "devkafka", "devkafka", ["--partitions", "1", "--set", "devkafka.topics=" + ",".join(
                f"{t}:{p}" for t, p in args.topics.items())])
            self.procs = [self.proc]
            self.bootstrap = wait_for(lambda: self._bootstrap(), 30, "devkafka's bootstrap line")
            self.pid = self.proc.pid
        else:
            self.kdir = os.path.join(BUILD, "bench-kafka")
            ks = os.path.join(ROOT, "scripts", "kafka.sh")
            subprocess.run([ks, "stop", "--dir", self.kdir], capture_output=True)
            subprocess.run(["rm", "-rf", self.kdir])
            subprocess.run([ks, "start", "--dir", self.kdir], check=True, timeout=300)
            self.bootstrap = open(os.path.join(self.kdir, "bootstrap")).read().strip()
            self.pid = int(open(os.path.join(self.kdir, "kafka.pid")).read())
            admin = AdminClient({"bootstrap.servers": self.bootstrap})
            fs = admin.create_topics([NewTopic(t, p, 1) for t, p in args.topics.items()])
            for f in fs.values():
                f.result(60)

    def _bootstrap(self):
        try:
            line = open(self.proc.out_path).readline()
        except OSError:
            return None
        return line.strip()[len("bootstrap="):] if line.startswith("bootstrap=") and line.endswith("\n") else None

    def end_offsets(self, topic):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-offsets"})
        md = c.list_topics(topic, timeout=10)
        out = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.topics[topic].partitions}
        c.close()
        return out

    def committed_total(self, group, topic, parts):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        tps = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        c.close()
        return sum(max(tp.offset, 0) for tp in tps)

    def stop(self):
        if self.proc:
            self.proc.stop()
        if self.kdir:
            subprocess.run([os.path.join(ROOT, "scripts", "kafka.sh"), "stop", "--dir", self.kdir], capture_output=True)


def start_serving(owner, role, name, args, tls=None):
    """Starts a replica for owner (its .dir and .procs, as mesh.Proc wants)
    and waits until it is SERVING. tls: the certificate folder of
    scripts/test-ca.sh (mutual TLS with ROLE's certificate), or None."""
    if tls:
        args = args + ["--set", f"tls.cert_file={tls}/{role}.pem", "--set", f"tls.key_file={tls}/{role}.key",
                       "--set", f"tls.ca_file={tls}/ca.pem", "--set", "tls.server_name=localhost"]
    p = Proc(owner, role, name, args)
    owner.procs.append(p)
    p.wait_ports()
    creds = (f"{tls}/ca.pem", f"{tls}/client.pem", f"{tls}/client.key") if tls else None
    wait_for(lambda: probe(p.grpc_addr, tls=creds) == 0, 60, f"{name} SERVING", interval=0.1)
    return p


class MeshRun:
    """One mesh of n schedulers, executors and sinks with a settings profile."""

    def __init__(self, bench, tag, n, profile, requests, results, group, start_paused, tls=None):
        self.dir = bench.dir
        self.procs = []
        self.tls = tls
        bench.runs.append(self)
        k = bench.kafka
        kafka = ["--set", f"kafka.bootstrap={k.bootstrap}", "--set", f"kafka.topic_requests={requests}",
                 "--set", f"kafka.topic_results={results}"]
        sinks = [self._start("sink", f"{tag}-sink-{i}", kafka + sets(profile["sink"])) for i in range(n)]
        st = "ipv4:" + ",".join(p.grpc_addr for p in sinks)
        execs = [self._start("executor", f"{tag}-executor-{i}", ["--set", f"sinks.target={st}"] + sets(profile["executor"]))
                 for i in range(n)]
        et = "ipv4:" + ",".join(p.grpc_addr for p in execs)
        self.schedulers = [self._start("scheduler", f"{tag}-scheduler-{i}", kafka + [
            "--set", f"executors.target={et}", "--set", f"kafka.group_id={group}",
            "--set", f"kafka.start_paused={'true' if start_paused else 'false'}"] + sets(profile["scheduler"]))
            for i in range(n)]
        self.sinks, self.executors = sinks, execs
        parts = bench.args.topics[requests]
        wait_for(lambda: sum(s.metric("execmesh_scheduler_assigned_partitions") for s in self.schedulers) == parts
                 and all(s.metric("execmesh_scheduler_assigned_partitions") > 0 for s in self.schedulers),
                 90, f"the {n} schedulers to share the {parts} partitions", interval=0.2)

    def _start(self, role, name, args):
        return start_serving(self, role, name, args, tls=self.tls)

    def resume(self):
        for s in self.schedulers:
            code, body = s.post("/admin/resume", timeout=10)
            if code != 200:
                raise RuntimeError(f"{s.name} /admin/resume: {code} {body}")

    def cpu(self):
        return {p.name: cpu_seconds(p.pid) for p in self.procs}

    def rss(self):
        return {p.name: peak_rss_mb(p.pid) for p in self.procs}

    def latency(self):
        buckets = {}
        for s in self.sinks:
            for k, v in s.metrics().items():
                m = re.match(r'execmesh_sink_end_to_end_seconds_bucket\{le="([^"]+)"\}', k)
                if m:  # seconds in the exposition, milliseconds in the report
                    le = float("inf") if m.group(1) == "+Inf" else round(float(m.group(1)) * 1000, 3)
                    buckets[le] = buckets.get(le, 0) + v
        return sorted(buckets.items())

    def stop(self):
        for p in reversed(self.procs):
            if p.alive():
                p.stop(timeout=60)


def percentile(cum, q):
    """The upper bound of the bucket holding quantile q of a cumulative histogram."""
    total = cum[-1][1] if cum else 0
    if not total:
        return float("nan")
    for le, c in cum:
        if c >= q * total:
            return le
    return float("inf")


def diff_hist(after, before):
    b = dict(before)
    return [(le, c - b.get(le, 0)) for le, c in after]


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = mesh_dir(f"bench-{args.kafka}")
        self.kafka = Kafka(args, self.dir)
        self.runs = []

    def close(self):
        for r in self.runs:
            r.stop()
        self.kafka.stop()

    def closed_loop(self, n_replicas, requests, results, group, tls=None):
        a = self.args
        log(f"closed loop {n_replicas}/{n_replicas}/{n_replicas}{' with mutual TLS' if tls else ''}: "
            f"{a.count} executions from {requests}")
        m = MeshRun(self, f"c{n_replicas}{'t' if tls else ''}", n_replicas, THROUGHPUT, requests, results, group,
                    start_paused=True, tls=tls)
        parts = list(range(a.topics[requests]))
        cpu0, bcpu0 = m.cpu(), cpu_seconds(self.kafka.pid)
        m.resume()
        wait_for(lambda: sum(s.metric('execmesh_executions_in_total{source="kafka"}') for s in m.schedulers) > 0,
                 60, "the first execution consumed", interval=0.01)
        t0 = time.monotonic()
        wait_for(lambda: self.kafka.committed_total(group, requests, parts) >= a.count, 900,
                 f"all {a.count} offsets committed", interval=0.1)
        secs = time.monotonic() - t0
        cpu1, bcpu1 = m.cpu(), cpu_seconds(self.kafka.pid)
        rss = m.rss()
        m.stop()
        chk, _ = run_tool("check", "--bootstrap", self.kafka.bootstrap, "--topic", results, "--count", a.count,
                          "--prefix", "b-", "--quiet-s", 10)
        cpu = {k: (cpu1[k] - cpu0[k]) / a.count * 1e6 for k in cpu1}
        return {"rate": a.count / secs, "seconds": secs, "cpu_us": cpu, "broker_cpu_us": (bcpu1 - bcpu0) / a.count * 1e6,
                "rss": rss, "found": int(chk.get("found", 0)), "missing": int(chk.get("missing", a.count)),
                "duplicates": int(chk.get("duplicates", 0))}

    def open_loop(self, rates, duration):
        """Each rate twice: Kafka alone (em-bench-passthrough --latency: the
        generator's produce, a consume and a produce, with the latency
        profile's fetch wait and linger, no gRPC: the floor under any figure
        of ours), then the mesh."""
        out, rss = [], {}
        for i, rate in enumerate(rates):
            count = int(rate * duration)
            if self.args.kafka == "dev":
                count = min(count, DEV_OPEN_LOOP_MAX)  # devkafka keeps 5 MiB per partition
            # Each phase on topics of its own: devkafka's log lookup walks every
            # batch a partition holds, so a phase on used topics would pay
            # for the phases before it.
            t = ol_topics(i)
            prefix = f"o{i}-"
            log(f"open loop at {rate:.0f}/s: settled, {settle():.2f} cores busy")
            log(f"open loop at {rate:.0f}/s: Kafka alone (consume -> produce, no gRPC), {count} records")
            floor = self.kafka_floor(rate, count, prefix, t["floor"], t["floor_out"])
            log(f"open loop at {rate:.0f}/s: the mesh, {count} executions")
            m = MeshRun(self, f"o{i}", 1, LATENCY, t["requests"], t["results"], f"bench-ol{i}", start_paused=False)
            log(f"open loop at {rate:.0f}/s: settled, {settle():.2f} cores busy")
            before = m.latency()
            t0 = machine_ticks()
            fill = self.open_loop_fill(t["requests"], rate, count, prefix)
            busy = busy_cores(t0, machine_ticks())
            wait_for(lambda: diff_hist(m.latency(), before)[-1][1] >= count, 120,
                     f"all {count} open-loop results delivered (the sink's latency histogram)", interval=0.2)
            h = diff_hist(m.latency(), before)
            chk, _ = run_tool("check", "--bootstrap", self.kafka.bootstrap, "--topic", t["results"],
                              "--count", count, "--prefix", prefix, "--quiet-s", 5)
            out.append({"rate": rate, "count": count, "p50": percentile(h, 0.5), "p99": percentile(h, 0.99),
                        "p999": percentile(h, 0.999), "max": self._max(h),
                        "behind_ms": float(fill.get("behind_max_ms", 0)), "busy": busy,
                        "kafka_busy": float(floor.get("busy", "nan")),
                        "kafka_p50": float(floor.get("p50_ms", "nan")),
                        "kafka_p99": float(floor.get("p99_ms", "nan")),
                        "kafka_p999": float(floor.get("p999_ms", "nan")),
                        "found": int(chk.get("found", 0)), "missing": int(chk.get("missing", count))})
            for k, v in m.rss().items():
                rss[k] = max(rss.get(k, 0), v)
            m.stop()
        return out, rss

    def open_loop_fill(self, topic, rate, count, prefix):
        """The generator at a fixed rate, warmed up first; its summary fields."""
        fill, rc = run_tool("fill", "--bootstrap", self.kafka.bootstrap, "--topic", topic, "--count", count,
                            "--rate", int(rate), "--prefix", prefix, "--linger", self.args.generator_linger,
                            "--warmup-topic", "bench.warmup",
                            timeout=count / rate * 4 + 120)
        if rc:
            raise SystemExit(f"the open-loop fill of {topic} failed")
        return fill

    def kafka_floor(self, rate, count, prefix, topic, topic_out):
        pt = subprocess.Popen([os.path.join(TOOLS, "em-bench-passthrough"), "--bootstrap", self.kafka.bootstrap,
                               "--group", f"bench-floor-{prefix}", "--in", topic, "--out", topic_out,
                               "--count", str(count), "--latency", "1",
                               "--linger", str(LATENCY["sink"]["kafka.linger_ms"]),
                               "--fetch-wait", str(LATENCY["scheduler"]["kafka.fetch_wait_max_ms"])],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            ready, _, _ = select.select([pt.stdout], [], [], 60)  # bounded: its first line, or nothing
            line = pt.stdout.readline() if ready else ""
            if not line.startswith("passthrough assigned"):
                raise SystemExit(f"em-bench-passthrough --latency did not get its partitions: {line!r}")
            t0 = machine_ticks()
            self.open_loop_fill(topic, rate, count, prefix)
            busy = busy_cores(t0, machine_ticks())
            rest, _ = pt.communicate(timeout=120)
        finally:
            if pt.poll() is None:
                pt.kill()
                pt.wait()
        last = rest.strip().splitlines()[-1] if rest.strip() else ""
        if pt.returncode != 0:
            raise SystemExit(f"em-bench-passthrough --latency exited {pt.returncode}: {last}")
        return dict([kv.split("=", 1) for kv in last.split()[1:] if "=" in kv] + [("busy", busy)])

    @staticmethod
    def _max(h):
        """The upper bound of the highest non-empty bucket."""
        prev = 0
        top = 0
        for le, c in h:
            if c > prev:
                top = le
            prev = c
        return top


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kafka", choices=["dev", "real"], default="dev")
    ap.add_argument("--count", type=int, default=2_000_000)
    ap.add_argument("--quick", action="store_true", help="fewer executions and shorter open-loop phases (CI)")
    ap.add_argument("--open-loop-s", type=int, default=20)
    ap.add_argument("--generator-linger", type=int, default=0,
                    help="the open-loop generator's linger.ms (default 0: each record sent at once; the same for Kafka alone and the mesh)")
    ap.add_argument("--open-loop-rates", default="",
                    help="extra open-loop rates after 1,000/s and half max, e.g. 20000,50000,100000 (a latency-vs-rate sweep)")
    ap.add_argument("--skip-222", action="store_true")
    ap.add_argument("--skip-tls", action="store_true", help="skip the 1/1/1 run with mutual TLS on every gRPC hop")
    ap.add_argument("--skip-open-loop", action="store_true")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="ROLE:KEY=VALUE",
                    help="override a setting of the throughput profile (repeatable), e.g. scheduler:dispatch.max_pending=20000")
    ap.add_argument("--prefetch-kb", type=int, default=0,
                    help="the schedulers' kafka.queued_max_kbytes in the throughput profile (default 131072)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda sig, frame: sys.exit(f"bench: stopped by signal {sig}"))
    if args.prefetch_kb:
        THROUGHPUT["scheduler"]["kafka.queued_max_kbytes"] = args.prefetch_kb
    for kv in args.sets:
        role, _, rest = kv.partition(":")
        key, _, value = rest.partition("=")
        if role not in THROUGHPUT or not key or not value:
            ap.error(f"--set {kv}: expected ROLE:KEY=VALUE with ROLE one of {', '.join(THROUGHPUT)}")
        THROUGHPUT[role][key] = value
    if args.quick:
        args.count = min(args.count, 300_000)
        args.open_loop_s = 8
    extra_rates = [float(r) for r in args.open_loop_rates.split(",") if r]
    args.topics = {"bench.requests": 64, "bench.pt.results": 128, "bench.c1.results": 128, "bench.c2.results": 128,
                   "bench.c1t.results": 128,
                   "bench.warmup": 1, "execmesh.delay": 6, "execmesh.cancels": 6}
    for i in range(0 if args.skip_open_loop else 2 + len(extra_rates)):
        t = ol_topics(i)
        args.topics.update({t["requests"]: 64, t["results"]: 128, t["floor"]: 64, t["floor_out"]: 128})
    t_start = time.monotonic()
    b = Bench(args)
    lost = 1
    try:
        log(f"kafka={args.kafka} at {b.kafka.bootstrap}; filling {args.count} executions")
        fill, rc = run_tool("fill", "--bootstrap", b.kafka.bootstrap, "--topic", "bench.requests", "--count", args.count,
                            "--prefix", "b-")
        if rc:
            raise SystemExit("fill failed")
        log(f"filled at {float(fill['rate']):.0f}/s")
        cpu0 = cpu_seconds(b.kafka.pid)
        pt, rc = run_tool("passthrough", "--bootstrap", b.kafka.bootstrap, "--group", "bench-pt", "--in", "bench.requests",
                          "--out", "bench.pt.results", "--count", args.count)
        pt_broker_us = (cpu_seconds(b.kafka.pid) - cpu0) / args.count * 1e6
        pt_rate = float(pt.get("rate", 0))
        log(f"passthrough {pt_rate:.0f}/s")
        c1 = b.closed_loop(1, "bench.requests", "bench.c1.results", "bench-c1")
        log(f"mesh 1/1/1 {c1['rate']:.0f}/s, checked {c1['found']}/{args.count}")
        c2 = None
        if not args.skip_222:
            c2 = b.closed_loop(2, "bench.requests", "bench.c2.results", "bench-c2")
            log(f"mesh 2/2/2 {c2['rate']:.0f}/s, checked {c2['found']}/{args.count}")
        c1t = None
        if not args.skip_tls:  # the same mesh with mutual TLS on every gRPC hop
            certs = os.path.join(b.dir, "certs")
            r = subprocess.run([os.path.join(ROOT, "scripts", "test-ca.sh"), certs, "--days", "2"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode:
                raise SystemExit(f"test-ca.sh failed: {r.stderr}")
            c1t = b.closed_loop(1, "bench.requests", "bench.c1t.results", "bench-c1t", tls=certs)
            log(f"mesh 1/1/1 TLS {c1t['rate']:.0f}/s, checked {c1t['found']}/{args.count}")
        best = max(c1["rate"], c2["rate"] if c2 else 0)
        ol, ol_rss = ([], {}) if args.skip_open_loop else b.open_loop(
            [1000, best / 2] + extra_rates, args.open_loop_s)

        print()
        print(f"{'run':14} {'execs/s':>10} {'per min':>12} {'ratio':>6}  cpu us/exec (service: us)   rss MB")
        print(f"{'passthrough':14} {pt_rate:>10.0f} {pt_rate * 60:>12.0f} {1:>6.2f}  broker {pt_broker_us:.1f}")
        for name, c in (("mesh 1/1/1", c1), ("mesh 2/2/2", c2), ("1/1/1 TLS", c1t)):
            if not c:
                continue
            cpu = " ".join(f"{k.split('-', 1)[1]}:{v:.1f}" for k, v in c["cpu_us"].items())
            rss = " ".join(f"{k.split('-', 1)[1]}:{v:.0f}" for k, v in c["rss"].items())
            print(f"{name:14} {c['rate']:>10.0f} {c['rate'] * 60:>12.0f} {c['rate'] / pt_rate:>6.3f}  {cpu} "
                  f"broker:{c['broker_cpu_us']:.1f}   {rss}")
        for o in ol:
            print(f"open loop {o['rate']:>8.0f}/s x {o['count']}: mesh p50={o['p50']} p99={o['p99']} p999={o['p999']} "
                  f"max={o['max']} ms, machine {o['busy']:.2f} of {os.cpu_count()} cores busy (generator behind at most "
                  f"{o['behind_ms']:.1f} ms); Kafka alone (produce, consume, produce): "
                  f"p50={o['kafka_p50']} p99={o['kafka_p99']} p999={o['kafka_p999']} ms, {o['kafka_busy']:.2f} cores busy")
        print("settings: throughput " + json.dumps(THROUGHPUT))
        print("settings: latency " + json.dumps(LATENCY) + f"; open-loop generator linger.ms={args.generator_linger}")
        runs = [c for c in (c1, c2, c1t) if c]
        lost = sum(c["missing"] for c in runs) + sum(o["missing"] for o in ol)
        checked = min(c["found"] for c in runs)
        rss_max = max(max(c["rss"].values(), default=0) for c in runs + [{"rss": ol_rss}])
        e2e = c1["rate"]
        nan = float("nan")
        none = {"p50": nan, "p99": nan, "p999": nan, "rate": 0, "kafka_p99": nan, "busy": nan, "kafka_busy": nan}
        half = ol[1] if ol else none
        ol1k = ol[0] if ol else none
        print(f"RESULT passthrough_per_min={pt_rate * 60:.0f} e2e_per_min={e2e * 60:.0f} ratio={e2e / pt_rate:.3f} "
              f"e2e222_per_min={(c2['rate'] * 60 if c2 else 0):.0f} "
              f"tls_per_min={(c1t['rate'] * 60 if c1t else 0):.0f} tls_ratio={(c1t['rate'] / pt_rate if c1t else nan):.3f} "
              f"p50_ms={half['p50']} p99_ms={half['p99']} "
              f"p999_ms={half['p999']} half_max_rate={half['rate']:.0f} p99_ms_1k={ol1k['p99']} "
              f"kafka_p99_ms={half['kafka_p99']} kafka_p99_ms_1k={ol1k['kafka_p99']} "
              f"busy_cores_half={half['busy']:.2f} kafka_busy_cores_half={half['kafka_busy']:.2f} "
              f"rss_mb_max={rss_max:.0f} prefetch_kb={THROUGHPUT['scheduler']['kafka.queued_max_kbytes']} lost={lost} results_checked={checked} executions={args.count} "
              f"kafka={args.kafka} wall_s={time.monotonic() - t_start:.0f}")
    finally:
        b.close()
    sys.exit(1 if lost or checked < args.count else 0)


if __name__ == "__main__":
    main()
