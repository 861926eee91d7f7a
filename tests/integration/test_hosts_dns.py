# SPDX-License-Identifier: Apache-2.0
"""Hosts and DNS (issue 14, point 1): every replica on a host of its own (a
network namespace with its own address on a bridge, tests/integration/hosts.py),
every channel through DNS names served by a real dnsmasq with one A record per
host, as a Kubernetes headless Service does:
    scheduler.mesh.test  executor.mesh.test  sink.mesh.test  kafka.mesh.test
targets dns:///executor.mesh.test:7200 (schedulers), dns:///sink.mesh.test:7300
(executors), dns:///scheduler.mesh.test:7100 (the Submit load), and a real
broker of the test's own bound on the root namespace's bridge address and
advertised as kafka.mesh.test. Submit + produce load runs throughout
(tests/chaos/chaos.py's Load). With the servers' grpc.max_connection_age_ms,
the clients' DNS min time between resolutions and keepalive made small, the
bounds are computed from those settings and asserted:
  scale-out  a new executor host and its A record → it takes executions within
             RESOLVE_BOUND_MS; no failed calls
  scale-in   an executor drained (SIGTERM), then its record removed → no failed
             calls, no duplicates, every execution ran once
  cut off    link down in an executor's namespace, and separately an iptables
             DROP inside another's, while its A record is still served → the
             schedulers drop it within KEEPALIVE_BOUND_MS
Each flow ends with the group's committed offsets at the end of every
partition; the last test checks nothing was lost and prints
  RESULT scale_out_pickup_ms=.. scale_in_failed_calls=.. ... lost=..
Needs root, iproute2, dnsmasq (Debian dnsmasq-base), iptables, Java + Maven for
scripts/kafka.sh; without them it fails (it never skips)."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import grpc
import pytest

import hosts
from mesh import ROOT, Mesh, execution, mesh_dir, pb, pb_grpc, read_all_results, wait_for

# The repository (scripts/kafka.sh, tests/chaos): mesh.ROOT finds it also when these files are copied.
SRC = ROOT
KAFKA_SH = os.path.join(SRC, "scripts", "kafka.sh")
sys.path.insert(0, os.path.join(SRC, "tests", "chaos"))
import chaos  # noqa: E402  (Load: Submit + produce at a rate; journal(), log_events())

DOMAIN = "mesh.test"
PORT = {"scheduler": 7100, "executor": 7200, "sink": 7300}
PARTITIONS = 6
RATE = 100              # executions/s: half Submit (batches of 10), half produced
# The settings under test, and the bounds computed from them.
AGE_MS = 1000           # servers' grpc.max_connection_age_ms (its minimum)
DNS_MIN_MS = 1000       # clients' dns min time between resolutions: lib/em_service.c, fixed
TTL_S = 1               # dnsmasq --local-ttl
KA_TIME_MS, KA_TIMEOUT_MS = 700, 700   # clients' keepalive (servers allow pings every 500 ms)
RECONNECT_MAX_MS = 1000
MARGIN_MS = 2000        # a loaded 2-core machine with sanitizer builds: scheduling, connect, health Watch
# A new address is used after: the next GOAWAY (within the age, jittered +-10 % by gRPC), the
# re-resolution it asks for (held back up to DNS_MIN_MS behind the previous one), a cached answer
# (up to the TTL; this c-ares does not cache, a deployment's resolver may), then connect + health.
RESOLVE_BOUND_MS = math.ceil(AGE_MS * 1.1) + DNS_MIN_MS + TTL_S * 1000 + MARGIN_MS
# A cut-off peer: the ping sent at most KA_TIME_MS after the last one, unanswered for KA_TIMEOUT_MS.
KEEPALIVE_BOUND_MS = KA_TIME_MS + KA_TIMEOUT_MS + MARGIN_MS
LAG_BOUND_S = 30        # a flow's committed offsets reach the end snapshot within this
FAILED_MSGS = ("executor lost with executions in flight", "execute call failed before an executor took it, "
               "dispatching again", "executor gave the executions back")


def now_ms():
    return int(time.time() * 1000)


def log(msg):
    print(f"[hosts {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def grpc_settings():
    return ["--set", f"grpc.max_connection_age_ms={AGE_MS}", "--set", f"grpc.keepalive_time_ms={KA_TIME_MS}",
            "--set", f"grpc.keepalive_timeout_ms={KA_TIMEOUT_MS}", "--set", f"grpc.reconnect_max_ms={RECONNECT_MAX_MS}",
            "--set", "security.allow_plaintext=true"]  # the hosts' own addresses; TLS is tests/integration/test_tls.py's


class World:
    """The network, DNS, broker, mesh and load of this module; the attributes
    chaos.Load reads (m, submit_target, dir) included."""

    def __init__(self):
        self.net = self.dns = self.m = self.load = None
        self.kdir = None
        self.procs = {}
        self.flows = {}       # name -> {figure: value}, in order
        self.windows = {}     # name -> (begin ms, end ms)
        self.held = []        # ids of the sleeps held on cut victims (not in the load's acked set)

    # --- set-up ------------------------------------------------------------
    def up(self):
        why = hosts.missing() or (None if shutil.which("dnsmasq") else "dnsmasq not found (Debian dnsmasq-base)") \
            or (None if shutil.which("iptables") else "iptables not found (Debian iptables)")
        if why:
            pytest.fail(f"hosts and DNS cannot run here: {why}")
        self.folder = mesh_dir("hosts-dns-net")
        # The test process resolves through dnsmasq too (the broker advertises kafka.mesh.test);
        # its own mount namespace, so the root one's /etc/resolv.conf stays as it is.
        self.resolv = os.path.join(self.folder, "resolv.conf")
        shutil.copyfile("/etc/resolv.conf", self.resolv)
        hosts.private_resolv(self.resolv)
        self.net = hosts.Network("hosts", third_octet=88)
        self.dns = self.net.start_dns(self.folder, DOMAIN, ttl=TTL_S)
        log(f"bridge {self.net.prefix}.0/24 (root {self.net.root_ip}, dnsmasq {self.dns.ip}), {self.folder}")
        self.dns.set(f"kafka.{DOMAIN}", [self.net.root_ip])
        self.kdir = os.path.join(self.folder, "kafka")
        shutil.rmtree(self.kdir, ignore_errors=True)
        r = subprocess.run([KAFKA_SH, "start", "--dir", self.kdir, "--partitions", str(PARTITIONS),
                            "--listen-host", self.net.root_ip, "--advertise-host", f"kafka.{DOMAIN}"],
                           capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, f"kafka.sh start failed:\n{r.stderr}"
        with open(self.resolv, "w") as f:  # in place: the bind mount shows this file
            f.write(f"nameserver {self.dns.ip}\noptions timeout:1 attempts:3\n")
        bootstrap = open(os.path.join(self.kdir, "bootstrap")).read().strip()
        assert bootstrap.startswith(f"kafka.{DOMAIN}:"), bootstrap
        os.environ["EM_KAFKA"] = "real"
        self.m = Mesh("hosts-dns", partitions=PARTITIONS, bootstrap_file=os.path.join(self.kdir, "bootstrap"))
        self.dir = self.m.dir
        self.submit_target = f"dns:///scheduler.{DOMAIN}:{PORT['scheduler']}"
        for i in range(2):
            self.start("sink", i)
        self.dns.set(f"sink.{DOMAIN}", self.ips("sink"))
        for i in range(3):
            self.start("executor", i)
        self.dns.set(f"executor.{DOMAIN}", self.ips("executor"))
        for i in range(2):
            self.start("scheduler", i)
        self.dns.set(f"scheduler.{DOMAIN}", self.ips("scheduler"))
        # every host resolves the names through dnsmasq (glibc, as librdkafka does)
        h = self.net.hosts["executor-0"]
        # bounded wait, not one look: a CI run once saw glibc answer nothing right after dnsmasq did
        for name, want in ((f"executor.{DOMAIN}", self.ips("executor")), (f"kafka.{DOMAIN}", [self.net.root_ip])):
            wait_for(lambda: h.resolve(name) == want, 15, f"glibc on executor-0 to resolve {name} to {want}",
                     interval=0.2)
        self.m.wait_assigned([self.procs["scheduler-0"], self.procs["scheduler-1"]], PARTITIONS)
        self.requests_start = self.m.kafka.start_offsets(self.m.topics["execmesh.requests"])
        self.load = chaos.Load(self, RATE, RATE * 200)
        self.load.start()
        wait_for(lambda: len(self.load.acked) >= RATE * 2, 60, "the load to get going", interval=0.1)
        log("mesh up, load running")

    def ips(self, role):
        return sorted(p.host.ip for n, p in self.procs.items() if n.startswith(role) and p.alive())

    def start(self, role, i):
        name = f"{role}-{i}"
        h = self.net.add_host(name)
        args = grpc_settings()
        if role == "sink":
            args = self.m.kafka_args() + args + ["--set", f"sink.journal={self.dir}/{name}.journal"]
        elif role == "executor":
            args += ["--set", f"sinks.target=dns:///sink.{DOMAIN}:{PORT['sink']}",
                     "--set", f"executor.journal={self.dir}/{name}.journal"]
        else:
            args = self.m.kafka_args() + args + [
                "--set", f"kafka.topic_delay={self.m.topics['execmesh.delay']}",
                "--set", f"kafka.topic_cancels={self.m.topics['execmesh.cancels']}",
                "--set", f"executors.target=dns:///executor.{DOMAIN}:{PORT['executor']}",
                "--set", f"kafka.group_id={self.m.group}", "--set", "kafka.session_timeout_ms=6000"]
        p = self.m.start(role, name, args, grpc_listen=f"{h.ip}:{PORT[role]}", metrics_listen=f"{h.ip}:0",
                         wrap=h.wrap())
        p.host = h
        self.procs[name] = p
        return p

    # --- evidence ----------------------------------------------------------
    def dns_lines(self):
        with open(self.dns.log_path) as f:
            return len(f.readlines())

    def wait_resolved(self, name, since_line):
        """Waits until both schedulers asked dnsmasq for name after line
        since_line of its query log (which names the asking host)."""
        sched = {self.procs[n].host.ip for n in ("scheduler-0", "scheduler-1")}

        def asked():
            with open(self.dns.log_path) as f:
                new = f.readlines()[since_line:]
            return all(any(f"query[A] {name} from {ip}" in line for line in new) for ip in sched)
        wait_for(asked, RESOLVE_BOUND_MS / 1000 + 10, f"both schedulers to resolve {name} again", interval=0.1)

    def failed_calls(self, begin, end):
        """Failed Submit calls started in [begin, end] and the schedulers'
        failed Execute calls logged then: (count, detail)."""
        subs = [e for e in list(self.load.submit_errors) if begin <= e[0] <= end]
        execs = []
        for n in ("scheduler-0", "scheduler-1"):
            for msg in FAILED_MSGS:
                execs += [(n, ts, msg, fl) for ts, fl in chaos.log_events(self.procs[n], msg) if begin <= ts <= end]
        return len(subs) + len(execs), f"submit {subs[:3]} execute {execs[:3]}"

    def wait_committed_end(self, flow):
        """The group's committed offsets reach the requests topic's end offsets as they are now."""
        t0 = time.monotonic()
        end = self.m.kafka.end_offsets(self.m.topics["execmesh.requests"])
        self.m.wait_committed(self.requests_start, end, timeout=LAG_BOUND_S)
        self.flows[flow]["committed_end_s"] = round(time.monotonic() - t0, 2)

    def begin(self, flow):
        self.flows[flow] = {}
        self.windows[flow] = [now_ms(), None]

    def end(self, flow):
        self.wait_committed_end(flow)
        self.windows[flow][1] = now_ms()
        log(f"{flow}: {self.flows[flow]}")

    def hold_sleep_on(self, victim, tag, timeout=20):
        """Submits one 3 s sleep at a time until the victim's journal shows
        one started and unanswered: it holds an Execute call when it is cut
        off, whose failure marks the moment the scheduler dropped it."""
        path = f"{self.dir}/{victim}.journal"
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.submit_target) as ch:
            stub = pb_grpc.SchedulerStub(ch)
            while time.monotonic() < deadline:
                i = f"hold-{tag}-{len(self.held)}"
                self.held.append(i)
                stub.Submit(pb.SubmitRequest(executions=[execution(i, "sleep", b"3000")]), timeout=10)
                try:
                    return wait_for(lambda: any(t == "S" and eid == i for _, t, eid, _ in chaos.journal(path)), 1.0,
                                    f"{i} started on {victim}")
                except AssertionError:
                    continue  # another executor took it
        pytest.fail(f"no sleep landed on {victim} within {timeout} s")

    def close(self):
        errors = []
        for step in (lambda: self.load and self.load.stop(),
                     lambda: [h.heal() or (h.dropped and h.undrop()) for h in self.net.hosts.values()]
                     if self.net else None,
                     lambda: self.m and self.m.close(),
                     lambda: self.kdir and subprocess.run([KAFKA_SH, "stop", "--dir", self.kdir], capture_output=True,
                                                          timeout=120),
                     lambda: self.net and self.net.close()):
            try:
                step()
            except Exception as e:
                errors.append(str(e))
        if errors:
            raise AssertionError("cleanup: " + "\n".join(errors))


@pytest.fixture(scope="module")
def world():
    w = World()
    try:
        w.up()
        yield w
    finally:
        w.close()


def test_scale_out_new_host_gets_calls_within_the_bound(world):
    w = world
    w.begin("scale_out")
    p = w.start("executor", 3)  # SERVING on its host, not yet in DNS
    # negative control: while it is not in DNS, both schedulers re-resolve and it gets nothing
    w.wait_resolved(f"executor.{DOMAIN}", w.dns_lines())
    assert p.metric("execmesh_executions_in_total") == 0, "executor-3 took executions before its A record"
    w.dns.set(f"executor.{DOMAIN}", w.ips("executor"))
    t_served = now_ms()
    path = f"{w.dir}/executor-3.journal"
    first = wait_for(lambda: next((ts for ts, t, _, _ in chaos.journal(path) if t == "S"), None),
                     RESOLVE_BOUND_MS / 1000 + 10, "executor-3's first execution")
    pickup = first - t_served
    w.flows["scale_out"].update(pickup_ms=pickup, bound_ms=RESOLVE_BOUND_MS)
    assert pickup <= RESOLVE_BOUND_MS, f"executor-3 took its first execution {pickup} ms after its A record"
    wait_for(lambda: p.metric("execmesh_executions_in_total") >= 20, 15, "executor-3 to take 20 executions")
    w.end("scale_out")
    failed, detail = w.failed_calls(*w.windows["scale_out"])
    w.flows["scale_out"]["failed_calls"] = failed
    assert failed == 0, detail


def test_scale_in_drain_then_record_removed_no_failed_calls(world):
    w = world
    w.begin("scale_in")
    p = w.procs["executor-3"]
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    code = p.wait_exit(30)
    w.flows["scale_in"]["drain_s"] = round(time.monotonic() - t0, 2)
    assert code == 0, f"executor-3 drained with exit {code}"
    lines = w.dns_lines()
    w.dns.set(f"executor.{DOMAIN}", w.ips("executor"))
    w.wait_resolved(f"executor.{DOMAIN}", lines)  # the schedulers saw the record gone
    w.net.remove_host("executor-3")
    w.end("scale_in")
    failed, detail = w.failed_calls(*w.windows["scale_in"])
    w.flows["scale_in"]["failed_calls"] = failed
    assert failed == 0, detail
    # what it took, it finished: every start on it has its done in its journal
    j = chaos.journal(f"{w.dir}/executor-3.journal")
    started = {(i, a) for _, t, i, a in j if t == "S"}
    done = {(i, a) for _, t, i, a in j if t == "D"}
    assert started <= done, f"executor-3 exited with {len(started - done)} unfinished: {sorted(started - done)[:5]}"


def cut_off(w, flow, victim, how):
    w.begin(flow)
    h = w.net.hosts[victim]
    w.hold_sleep_on(victim, flow)
    t_cut = now_ms()
    h.cut() if how == "link" else h.drop()
    try:
        assert h.ip in hosts.query_a(w.dns.ip, f"executor.{DOMAIN}"), "the victim's A record must stay served"

        def dropped():
            evs = [ts for n in ("scheduler-0", "scheduler-1") for msg in FAILED_MSGS[:2]
                   for ts, fl in chaos.log_events(w.procs[n], msg)
                   if ts >= t_cut and (fl.get("executor") in (victim, None))]
            return min(evs) if evs else None
        t_detect = wait_for(dropped, KEEPALIVE_BOUND_MS / 1000 + 10, f"a scheduler to drop {victim}", interval=0.05)
        detect = t_detect - t_cut
        w.flows[flow].update(detect_ms=detect, bound_ms=KEEPALIVE_BOUND_MS)
        # the load goes on around it: executions finish elsewhere while it is cut off
        base = sum(w.procs[n].metric("execmesh_executions_in_total") for n in w.procs
                   if n.startswith("executor") and n != victim and w.procs[n].alive())
        wait_for(lambda: sum(w.procs[n].metric("execmesh_executions_in_total") for n in w.procs
                             if n.startswith("executor") and n != victim and w.procs[n].alive()) >= base + 50,
                 15, "50 executions elsewhere while cut off")
        assert h.ip in hosts.query_a(w.dns.ip, f"executor.{DOMAIN}")
    finally:
        t_heal = now_ms()
        h.heal() if how == "link" else h.undrop()
    assert detect <= KEEPALIVE_BOUND_MS, f"{victim} dropped {detect} ms after the cut"
    # nothing reached it while cut off, and it takes executions again after the heal
    got = [ts for ts, t, _, _ in chaos.journal(f"{w.dir}/{victim}.journal") if t == "S" and t_cut + 200 <= ts < t_heal]
    assert not got, f"{victim} started {len(got)} executions while cut off"
    back = wait_for(lambda: next((ts for ts, t, _, _ in chaos.journal(f"{w.dir}/{victim}.journal")
                                  if t == "S" and ts >= t_heal), None), 20, f"{victim} to take executions again")
    w.flows[flow]["rejoin_ms"] = back - t_heal
    w.end(flow)


def test_cut_link_down_traffic_leaves_within_keepalive(world):
    cut_off(world, "cut_link", "executor-2", "link")


def test_cut_iptables_drop_traffic_leaves_within_keepalive(world):
    cut_off(world, "cut_drop", "executor-1", "drop")


def test_nothing_lost_and_clean_flows_ran_once(world):
    w = world
    w.load.stop()
    w.flows["end"] = {}
    w.wait_committed_end("end")
    acked = dict(w.load.acked)
    got = read_all_results(w.m)
    lost = [i for i in list(acked) + w.held if i not in got]
    done = {}
    for name in os.listdir(w.dir):
        if name.startswith("executor") and name.endswith(".journal"):
            for _, t, i, _ in chaos.journal(os.path.join(w.dir, name)):
                if t == "D":
                    done[i] = done.get(i, 0) + 1
    figures = {}
    for flow, (begin, end) in w.windows.items():
        end = end or now_ms()  # a flow that failed part-way
        ids = [i for i, t in acked.items() if begin <= t <= end]
        figures[flow] = {"ids": len(ids), "lost": sum(1 for i in ids if i not in got),
                         "dup": sum(len(got[i]) - 1 for i in ids if i in got),
                         "ran_twice": sum(1 for i in ids if done.get(i, 0) > 1)}
        w.flows[flow].update(figures[flow])
    f = {k: w.flows.get(k, {}) for k in ("scale_out", "scale_in", "cut_link", "cut_drop")}
    print("RESULT hosts_dns "
          f"scale_out_pickup_ms={f['scale_out'].get('pickup_ms')} resolve_bound_ms={RESOLVE_BOUND_MS} "
          f"scale_in_failed_calls={f['scale_in'].get('failed_calls')} scale_in_dup={f['scale_in'].get('dup')} "
          f"scale_in_ran_twice={f['scale_in'].get('ran_twice')} "
          f"cut_link_detect_ms={f['cut_link'].get('detect_ms')} cut_drop_detect_ms={f['cut_drop'].get('detect_ms')} "
          f"keepalive_bound_ms={KEEPALIVE_BOUND_MS} cut_link_rejoin_ms={f['cut_link'].get('rejoin_ms')} "
          f"cut_drop_rejoin_ms={f['cut_drop'].get('rejoin_ms')} executions={len(acked)} "
          f"failed_submits={len(w.load.submit_errors)} lost={len(lost)} "
          f"duplicates={sum(len(v) - 1 for v in got.values())}", flush=True)
    log(json.dumps(w.flows))
    assert not lost, f"{len(lost)} acked executions have no result, e.g. {lost[:5]}"
    for flow in ("scale_out", "scale_in"):
        assert figures[flow]["dup"] == 0 and figures[flow]["ran_twice"] == 0, (flow, figures[flow])
