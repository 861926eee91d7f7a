# SPDX-License-Identifier: Apache-2.0
"""The integration harness: real execmesh binaries as separate processes over
real TCP, against a Kafka chosen by the environment (EM_KAFKA=dev starts an
execmesh-devkafka per test; EM_KAFKA=real uses the broker that
scripts/kafka.sh started, read from EM_KAFKA_BOOTSTRAP_FILE).

Every wait is on a condition with a bound (a ports file, a health Watch, a
metric, a log line), and fails naming what it waited for. Processes are
tracked by PID and stopped by PID. Under a sanitizer build, each process
writes its reports into the test's folder; `Mesh.close()` fails the test if
any report exists.
"""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("EM_BUILD_DIR", os.path.join(HERE, "..", "..", "build"))
sys.path.insert(0, os.path.join(BUILD, "py"))

import grpc  # noqa: E402  (python3-grpcio from Debian: a client this project did not write)
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from execmesh.v1 import execmesh_pb2 as pb  # noqa: E402
from execmesh.v1 import execmesh_pb2_grpc as pb_grpc  # noqa: E402
from em_health import health_pb2  # noqa: E402

BIN = {
    "scheduler": os.path.join(BUILD, "services", "scheduler", "execmesh-scheduler"),
    "executor": os.path.join(BUILD, "services", "executor", "execmesh-executor"),
    "sink": os.path.join(BUILD, "services", "sink", "execmesh-sink"),
    "devkafka": os.path.join(BUILD, "services", "devkafka", "execmesh-devkafka"),
    "ctl": os.path.join(BUILD, "services", "ctl", "execmeshctl"),
}
TOOLS = os.environ.get("EM_TOOLS_BIN", os.path.join(HERE, "..", "..", ".cache", "bin"))
TOOL = {
    "grpc-health-probe": os.path.join(TOOLS, "grpc-health-probe"),  # go install (scripts/deps.sh)
    "grpcurl": os.path.join(TOOLS, "grpcurl"),
    "kcat": "/usr/bin/kcat",  # Debian
}


def _source_root():
    """The source tree: this file's, or (the tests copied elsewhere to run
    them) the one the build EM_BUILD_DIR was configured from."""
    here = os.path.abspath(os.path.join(HERE, "..", ".."))
    if os.path.exists(os.path.join(here, "scripts", "kafka.sh")):
        return here
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_HOME_DIRECTORY:"):
                    return line.strip().split("=", 1)[1]
    except OSError:
        pass
    return here


ROOT = _source_root()
TOPICS = ("execmesh.requests", "execmesh.results", "execmesh.dead", "execmesh.delay", "execmesh.cancels")
# the topic settings a test's own topics copy from the broker's execmesh.* topics
REPLICATION_CONFIGS = ("min.insync.replicas", "unclean.leader.election.enable")
SERVING, NOT_SERVING = 1, 2


class WaitTimeout(AssertionError):
    pass


def pid_gone(pid):
    """No such process, or a zombie waiting for its parent (or init) to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def assert_config_refused(role, tmp_path, cases):
    """Each (config text, line, key, reason) of cases, through ROLE's
    --check-config (the checks start-up runs): exit 2, the error naming the
    file, the line, the key and the reason."""
    for i, (text, line, key, reason) in enumerate(cases):
        path = tmp_path / f"bad{i}.cfg"
        path.write_text(text)
        r = subprocess.run([BIN[role], "--config", str(path), "--check-config"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2, (text, r)
        assert f"{path}:{line}: key '{key}'" in r.stderr and reason in r.stderr, (text, r.stderr)


def wait_for(cond, timeout, what, interval=0.02):
    """Polls cond() until it returns a truthy value, at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)  # ok-sleep: the poll interval of a bounded wait


def read_ports(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            out[k] = v
    return out


def sanitizer_env(folder):
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = f"log_path={folder}/asan:halt_on_error=1:detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = f"log_path={folder}/ubsan:halt_on_error=1:print_stacktrace=1"
    env["LSAN_OPTIONS"] = f"suppressions={os.path.join(HERE, '..', 'lsan.supp')}:print_suppressions=0"
    return env


def admin_token(folder):
    """The admin token file of a test folder (made once, mode 0600) and its token."""
    path = os.path.join(folder, "admin.token")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(uuid.uuid4().hex + uuid.uuid4().hex + "\n")
        os.rename(tmp, path)
    with open(path) as f:
        return path, f.read().strip()


class Proc:
    """One execmesh process: its PID, log, ports and metrics."""

    def __init__(self, mesh, role, name, args, grpc_listen="127.0.0.1:0", metrics_listen="127.0.0.1:0",
                 wrap=(), binary=None):
        """wrap: a command prefix (e.g. ip netns exec NS); binary: another build of the role."""
        self.mesh, self.role, self.name = mesh, role, name
        self.dir = mesh.dir
        self.ports_file = os.path.join(self.dir, f"{name}.ports")
        # a restarted replica keeps the earlier incarnations' logs: name.log, name.1.log, ...
        k = 0
        while os.path.exists(os.path.join(self.dir, f"{name}{'.' + str(k) if k else ''}.log")):
            k += 1
        tag = f".{k}" if k else ""
        self.log_path = os.path.join(self.dir, f"{name}{tag}.log")
        self.out_path = os.path.join(self.dir, f"{name}{tag}.out")
        for p in (self.ports_file,):
            if os.path.exists(p):
                os.unlink(p)
        # Admin actions on (they are off by default) with the folder's token, which post() presents;
        # a test's args may turn them off again.
        self.admin_token_file, self.admin_token = admin_token(self.dir)
        cmd = list(wrap) + [binary or BIN[role], "--set", f"grpc.listen={grpc_listen}",
                            "--set", f"metrics.listen={metrics_listen}",
                            "--set", f"replica={name}", "--ports-file", self.ports_file,
                            "--set", "admin.enabled=true", "--set", f"admin.token_file={self.admin_token_file}"] + list(args)
        self.cmd = cmd
        self.started_ms = int(time.time() * 1000)
        self.p = subprocess.Popen(cmd, stdout=open(self.out_path, "wb"), stderr=open(self.log_path, "wb"),
                                  env=sanitizer_env(self.dir), start_new_session=True)
        self.pid = self.p.pid
        with open(os.path.join(self.dir, f"{name}.pid"), "w") as f:
            f.write(str(self.pid))
        self.ports = None
        self._channel = None

    def wait_ports(self, timeout=30):
        def ready():
            if self.p.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.p.returncode} at start; log:\n{self.log_tail()}")
            return os.path.exists(self.ports_file) and read_ports(self.ports_file)
        self.ports = wait_for(ready, timeout, f"{self.name}'s ports file {self.ports_file}")
        return self.ports

    @property
    def grpc_addr(self):
        return self.ports["grpc"]

    @property
    def metrics_url(self):
        return f"http://{self.ports['metrics']}/metrics"

    def channel(self):
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_addr)
        return self._channel

    def health_check(self, service="", timeout=2):
        stub = self.channel().unary_unary("/grpc.health.v1.Health/Check",
                                          request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                          response_deserializer=health_pb2.HealthCheckResponse.FromString)
        return stub(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status

    def health_watch(self, service="", timeout=None):
        stub = self.channel().unary_stream("/grpc.health.v1.Health/Watch",
                                           request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                           response_deserializer=health_pb2.HealthCheckResponse.FromString)
        return stub(health_pb2.HealthCheckRequest(service=service), timeout=timeout)

    def wait_serving(self, timeout=30):
        """Waits on a health Watch stream until it says SERVING."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stream = self.health_watch(timeout=max(0.1, deadline - time.monotonic()))
            try:
                for resp in stream:
                    if resp.status == SERVING:
                        stream.cancel()
                        return
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    break
                if self.p.poll() is not None:
                    raise AssertionError(f"{self.name} exited with {self.p.returncode}; log:\n{self.log_tail()}")
                time.sleep(0.05)  # ok-sleep: not listening yet; poll interval of a bounded wait
        raise WaitTimeout(f"timed out after {timeout} s waiting for {self.name} to be SERVING "
                          f"(health Watch); log:\n{self.log_tail()}")

    def metrics(self):
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            key, _, val = line.rpartition(" ")
            out[key] = float(val)
        return out

    def metric(self, name):
        return self.metrics().get(name, 0.0)

    def log_lines(self):
        out = []
        with open(self.log_path, errors="replace") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"msg": line.rstrip(), "level": "raw"})
        return out

    def log_has(self, msg):
        return any(l.get("msg") == msg for l in self.log_lines())

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def alive(self):
        return self.p.poll() is None

    def post(self, path, timeout=5, method="POST", token=True):
        """POST (or GET) to the metrics port (admin, debug and /livez routes); returns (status, body).
        token: True presents the folder's admin token, a string presents that, None no credential."""
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {self.admin_token if token is True else token}"
        req = urllib.request.Request(f"http://{self.ports['metrics']}{path}", method=method,
                                     data=b"" if method == "POST" else None, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def log_events(self, msg):
        """The log lines with this msg, as dicts (their fields under "fields")."""
        return [l for l in self.log_lines() if l.get("msg") == msg]

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(f"{self.name} (pid {self.pid}) still running {timeout} s after the signal; "
                              f"log:\n{self.log_tail()}")

    def stop(self, timeout=30):
        """SIGTERM, and SIGKILL if it does not exit within timeout; returns the exit code."""
        if not self.alive():
            return self.p.returncode
        os.kill(self.pid, signal.SIGTERM)
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.p.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout} s of SIGTERM")


class Kafka:
    """The Kafka the test runs against: a devkafka of its own, or the real broker."""

    def __init__(self, mesh, partitions=6, bootstrap_file=None):
        self.kind = os.environ.get("EM_KAFKA", "dev")
        self.proc = None
        if self.kind == "dev":
            self.proc = Proc(mesh, "devkafka", "devkafka", ["--partitions", str(partitions)])
            path = self.proc.out_path
            self.bootstrap = wait_for(lambda: self._first_line(path), 30, "devkafka's bootstrap= line on stdout")
            self.proc.wait_ports()
        elif self.kind == "real":
            path = bootstrap_file or os.environ.get("EM_KAFKA_BOOTSTRAP_FILE", "")
            if not path or not os.path.exists(path):
                raise AssertionError("EM_KAFKA=real needs EM_KAFKA_BOOTSTRAP_FILE from scripts/kafka.sh start")
            self.bootstrap = open(path).read().strip()
        else:
            raise AssertionError(f"EM_KAFKA={self.kind}: expected dev or real")

    @staticmethod
    def _first_line(path):
        """The bootstrap servers once devkafka printed its complete first line."""
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            return None
        line, nl, _ = text.partition("\n")
        return line[len("bootstrap="):] if nl and line.startswith("bootstrap=") else None

    def producer(self):
        return Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5})

    def consumer(self, group=None, **extra):
        conf = {"bootstrap.servers": self.bootstrap, "group.id": group or f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest", "enable.auto.commit": False}
        conf.update(extra)
        return Consumer(conf)

    def partitions(self, topic):
        c = self.consumer()
        try:
            md = c.list_topics(topic, timeout=10)
            return sorted(md.topics[topic].partitions.keys())
        finally:
            c.close()

    def end_offsets(self, topic):
        c = self.consumer()
        try:
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in self.partitions(topic)}
        finally:
            c.close()

    def start_offsets(self, topic):
        c = self.consumer()
        try:
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0] for p in self.partitions(topic)}
        finally:
            c.close()

    def committed(self, group, topic):
        c = self.consumer(group=group)
        try:
            tps = c.committed([TopicPartition(topic, p) for p in self.partitions(topic)], timeout=10)
            return {tp.partition: tp.offset for tp in tps}
        finally:
            c.close()

    def lag(self, group, topic):
        """{partition: end offset - committed offset} of group on topic (a
        partition without a commit counts from its start offset)."""
        c = self.consumer(group=group)
        try:
            parts = self.partitions(topic)
            tps = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
            out = {}
            for tp in tps:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
                out[tp.partition] = hi - (tp.offset if tp.offset >= 0 else lo)
            return out
        finally:
            c.close()

    def read(self, topic, start, until, timeout, what):
        """Reads topic from the offsets in start (partition -> offset) until
        until(records) is true; returns the records as (key, value, headers)."""
        c = self.consumer()
        c.assign([TopicPartition(topic, p, o) for p, o in start.items()])
        records = []
        deadline = time.monotonic() + timeout
        try:
            while not until(records):
                if time.monotonic() > deadline:
                    raise WaitTimeout(f"timed out after {timeout} s reading {topic}: {what} "
                                      f"({len(records)} records read)")
                for m in c.consume(1000, 0.2):
                    if m.error():
                        continue
                    records.append((m.key(), m.value(), m.headers() or []))
        finally:
            c.close()
        return records


_taken_ports = set()


def free_port():
    """A loopback port for a replica whose address must be known before it
    starts (replicas started all at once, or restarted on the same address).
    Picked below the kernel's ephemeral range, so no outgoing connection can
    take it between this check and the replica's bind."""
    import random
    import socket
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    rnd = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(1000):
        port = rnd.randrange(max(1024, lo - 12000), lo)
        if port in _taken_ports:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _taken_ports.add(port)
        return port
    raise AssertionError("no free port below the ephemeral range")


def mesh_dir(name):
    """The test's folder (logs, ports, PID files, sanitizer reports), made empty."""
    root = os.environ.get("EM_TEST_DIR", os.path.join(BUILD, "test-runs"))
    d = os.path.join(root, f"{name}-{os.environ.get('EM_KAFKA', 'dev')}-{os.getpid()}")
    os.makedirs(d, exist_ok=True)
    for f in glob.glob(os.path.join(d, "*")):
        if os.path.isfile(f):
            os.unlink(f)
    return d


class Mesh:
    """A mesh for one test: a folder, a Kafka, and the processes started in it."""

    def __init__(self, name, partitions=6, bootstrap_file=None):
        """bootstrap_file: a real broker of the test's own (EM_KAFKA=real only)."""
        self.dir = mesh_dir(name)
        self.procs = []
        self.group = f"execmesh-{uuid.uuid4().hex[:12]}"
        self.topics = {t: t for t in TOPICS}
        self.kafka = Kafka(self, partitions, bootstrap_file)
        if self.kafka.proc:
            self.procs.append(self.kafka.proc)
        # On a shared real broker every test gets topics of its own.
        if self.kafka.kind == "real":
            self.topics = self._real_topics(name, partitions)
        # what was on the topics before this test
        self.results_start = self.kafka.end_offsets(self.topics["execmesh.results"])
        self.dead_start = self.kafka.end_offsets(self.topics["execmesh.dead"])

    def _real_topics(self, name, partitions):
        """The test's own topics, made like the broker's execmesh.* topics
        (scripts/kafka.sh made those): the same replication factor,
        min.insync.replicas and unclean.leader.election.enable, so a test on a
        replicated cluster runs on replicated topics."""
        from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
        suffix = f"{name}-{uuid.uuid4().hex[:8]}"
        topics = {t: f"{t}.{suffix}" for t in TOPICS}
        admin = AdminClient({"bootstrap.servers": self.kafka.bootstrap})
        have = admin.list_topics(timeout=10).topics
        new = []
        for base, t in topics.items():
            rf, conf = 1, {}
            if base in have and have[base].partitions:
                rf = len(next(iter(have[base].partitions.values())).replicas)
                (f,) = admin.describe_configs([ConfigResource("topic", base)]).values()
                conf = {k: v.value for k, v in f.result(30).items() if k in REPLICATION_CONFIGS}
            new.append(NewTopic(t, partitions, rf, config=conf))
        for f in admin.create_topics(new).values():
            f.result(30)

        def ready():  # every partition led, with all its replicas in sync, and answering offsets
            try:
                md = admin.list_topics(timeout=5).topics
                if not all(t in md and len(md[t].partitions) == partitions and
                           all(pm.leader >= 0 and len(pm.isrs) == len(pm.replicas) for pm in md[t].partitions.values())
                           for t in topics.values()):
                    return False
                return all(len(self.kafka.end_offsets(t)) == partitions for t in topics.values())
            except Exception:  # not yet: NOT_LEADER / UNKNOWN_TOPIC while the new topic propagates
                return False
        wait_for(ready, 30, "the test's new topics to have a leader and a full ISR on every partition", interval=0.1)
        return topics

    def kafka_args(self):
        return ["--set", f"kafka.bootstrap={self.kafka.bootstrap}",
                "--set", f"kafka.topic_requests={self.topics['execmesh.requests']}",
                "--set", f"kafka.topic_results={self.topics['execmesh.results']}",
                "--set", f"kafka.topic_dead={self.topics['execmesh.dead']}"]

    def start(self, role, name, args=(), wait=True, **kw):
        p = Proc(self, role, name, args, **kw)
        self.procs.append(p)
        if wait:
            p.wait_ports()
            p.wait_serving()
        return p

    def start_sink(self, name="sink-0", args=()):
        return self.start("sink", name, self.kafka_args() + list(args))

    def start_executor(self, sinks, name="executor-0", args=()):
        target = "ipv4:" + ",".join(s.grpc_addr for s in sinks)
        return self.start("executor", name, ["--set", f"sinks.target={target}"] + list(args))

    def start_scheduler(self, executors, name="scheduler-0", args=(), wait=True):
        target = "ipv4:" + ",".join(e.grpc_addr for e in executors)
        return self.start("scheduler", name, self.kafka_args() + [
            "--set", f"kafka.topic_delay={self.topics['execmesh.delay']}",
            "--set", f"kafka.topic_cancels={self.topics['execmesh.cancels']}",
            "--set", f"executors.target={target}", "--set", f"kafka.group_id={self.group}",
            "--set", "kafka.session_timeout_ms=6000"] + list(args), wait=wait)

    def wait_assigned(self, schedulers, partitions, timeout=60):
        """Waits until the schedulers together own every partition and each
        owns some (their execmesh_scheduler_assigned_partitions metric): the
        group is settled."""
        def settled():
            owned = [s.metric("execmesh_scheduler_assigned_partitions") for s in schedulers]
            return sum(owned) == partitions and all(o > 0 for o in owned[:partitions])
        wait_for(settled, timeout, f"the schedulers to own all {partitions} partitions, each some "
                                   f"(execmesh_scheduler_assigned_partitions)", interval=0.1)

    def wait_committed(self, start, end, timeout=30):
        """Waits until the group's committed offsets reach end on every
        partition that received records since start; returns them."""
        topic = self.topics["execmesh.requests"]

        def covered():
            c = self.kafka.committed(self.group, topic)
            return all(end[p] == start.get(p, 0) or c.get(p, -1) >= end[p] for p in end) and (c or True)
        return wait_for(covered, timeout, f"the committed offsets of {self.group} to reach {end}", interval=0.2)

    def wait_lag_zero(self, timeout):
        """Waits until the group's committed offsets on the requests topic
        reach the end of every partition; returns the seconds it took."""
        t0 = time.monotonic()
        topic = self.topics["execmesh.requests"]
        last = {}

        def zero():
            last.clear()
            last.update({p: v for p, v in self.kafka.lag(self.group, topic).items() if v})
            return not last
        try:
            wait_for(zero, timeout, f"the lag of group {self.group} to reach 0", interval=0.2)
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}; partitions still behind: {dict(sorted(last.items()))}")
        return time.monotonic() - t0

    def stub(self, scheduler):
        return pb_grpc.SchedulerStub(scheduler.channel())

    def sanitizer_reports(self):
        return sorted(glob.glob(os.path.join(self.dir, "asan*")) + glob.glob(os.path.join(self.dir, "ubsan*")))

    def close(self):
        """Stops every process still running (SIGTERM, in reverse order of
        start), then fails if a sanitizer wrote a report."""
        errors = []
        # The test's own gRPC channels first: a server's drain waits until
        # its clients' connections are gone, and an idle python channel keeps
        # its connection for seconds after the GOAWAY (3 to 5 s per replica).
        for p in self.procs:
            if getattr(p, "_channel", None) is not None:
                p._channel.close()
                p._channel = None
        for p in reversed(self.procs):
            try:
                code = p.stop(timeout=40)
                if code not in (0, None, -9) and p.role != "devkafka":
                    errors.append(f"{p.name} exited with {code}")
            except AssertionError as e:
                errors.append(str(e))
        reports = self.sanitizer_reports()
        for r in reports:
            with open(r, errors="replace") as f:
                errors.append(f"sanitizer report {r}:\n{f.read()[:4000]}")
        if errors:
            raise AssertionError("\n".join(errors))


def read_all_results(m):
    """{id: [Result]}: every record of the results topic since the test began,
    up to the end offsets as they are now."""
    topic = m.topics["execmesh.results"]
    end = m.kafka.end_offsets(topic)
    c = m.kafka.consumer()
    c.assign([TopicPartition(topic, p, o) for p, o in m.results_start.items()])
    todo = {p for p, o in end.items() if o > m.results_start.get(p, 0)}
    got = {}
    deadline = time.monotonic() + 120
    try:
        while todo:
            if time.monotonic() > deadline:
                raise WaitTimeout(f"reading {topic} to its end: partitions {sorted(todo)} unfinished")
            for msg in c.consume(5000, 0.5):
                if msg.error():
                    continue
                r = pb.Result.FromString(msg.value())
                got.setdefault(r.id, []).append(r)
                if msg.offset() + 1 >= end[msg.partition()]:
                    todo.discard(msg.partition())
    finally:
        c.close()
    return got


def check_results(m, ids):
    """Every id has a result, and nothing ran twice: these are clean paths
    (drains, joins, pauses, restarts; no crash), where the final commit of a
    revoke is accepted during the rebalance (devkafka's mock too, with our
    patch in scripts/patches/). Returns the results by id."""
    got = read_all_results(m)
    lost = [i for i in ids if i not in got]
    assert not lost, f"{len(lost)} of {len(ids)} executions have no result, e.g. {lost[:5]}"
    dups = {i: len(v) for i, v in got.items() if len(v) > 1}
    assert not dups, f"{sum(v - 1 for v in dups.values())} duplicates on a clean path, e.g. {list(dups.items())[:5]}"
    return got


def probe(addr, service="", timeout_s=1, tls=None):
    """grpc-health-probe's exit code for addr, as a Kubernetes exec probe sees
    it: 0 SERVING, 2 connection failure, 3 RPC failure, 4 NOT_SERVING.
    tls: (ca, cert, key) files for mutual TLS, the server name localhost."""
    flags = []
    if tls:
        ca, cert, key = tls
        flags = ["-tls", "-tls-ca-cert", ca, "-tls-client-cert", cert, "-tls-client-key", key,
                 "-tls-server-name", "localhost"]
    r = subprocess.run([TOOL["grpc-health-probe"], f"-addr={addr}", f"-service={service}",
                        f"-connect-timeout={timeout_s}s", f"-rpc-timeout={timeout_s}s"] + flags,
                       capture_output=True, text=True, timeout=timeout_s * 3 + 5)
    return r.returncode


def execution(id, handler="echo", payload=b"x", **kw):
    return pb.Execution(id=id, handler=handler, payload=payload, **kw)


def parse_result(value):
    r = pb.Result()
    r.ParseFromString(value)
    return r


def results_by_id(records):
    out = {}
    for key, value, _ in records:
        r = parse_result(value)
        out.setdefault(r.id, []).append(r)
    return out


def status_name(code):
    return pb.Status.Name(code)
