# SPDX-License-Identifier: Apache-2.0
"""The container image (deploy/Containerfile), built by scripts/image.sh with
podman from the debootstrapped debian:bookworm-slim, as Kubernetes runs it:

- its filesystem holds no package manager (apt, apt-get, dpkg), no compiler
  (cc, gcc), no shell: the only programs are our five, /usr/bin/tr (the
  example exec handler) and /usr/local/bin/grpc-health-probe (the readiness
  probe of deploy/k8s); the configs are in /etc/execmesh, and
  /etc/execmesh/tls, the TLS Secret's mount point, is empty;
- its user is 65532:65532, and a service started from it runs as that uid
  with no capabilities (/proc/PID/status of the container's process);
- the mesh from the image (devkafka, a sink, an executor, a scheduler, each a
  container on the host network, loopback ports, a read-only root and a
  tmpfs /tmp, as deploy/k8s/base) with the image's own configs, mutual TLS
  as shipped: each service's certificate (scripts/test-ca.sh, with the
  Service names of deploy/k8s as DNS SANs) mounted at /etc/execmesh/tls as
  the kubernetes.io/tls Secret would be (tls.crt, tls.key, ca.crt; group
  65532, mode 0440, as fsGroup makes it), the channels verifying the peers by
  those Service names (tls.server_name: the loopback targets name none),
  carries 2,000 executions (builtin echo and the exec handler "upper", a
  child process in the container) submitted by python grpcio over TLS from
  the host, as spiffe://execmesh/client, the identity deploy/scheduler.cfg's
  example authz group grants (a handler it does not grant is refused): each
  has exactly one result on execmesh.results, and the group's committed
  offsets reach the end of every partition;
- the readiness probe of deploy/k8s/base/<service>.yaml, its command as
  written there (only the port changed), run in each service's container
  with podman exec, says SERVING (exit 0); without its TLS flags it fails;
- the executor says what it does about cgroups inside the container: with
  podman's defaults /sys/fs/cgroup is read-only, so executor.cgroups "auto"
  falls back to rlimits and process groups (one warning naming why,
  execmesh_exec_cgroups 0); a second executor whose container's cgroups are
  delegated to uid 65532 (delegate-cgroups.sh, an OCI hook; /sys/fs/cgroup
  mounted read-write) starts with "required" and runs its share of the exec
  executions each in a cgroup (metric 1), and the groups are gone with the
  container;
- `podman stop` (SIGTERM, no shell in between) makes each service drain and
  exit 0: its log says so and podman's exit code is 0.

Every container is started with a name of this run and removed by ID at the
end, also on failure. Needs root (rootful podman: the uid seen from the host
is the container's), podman and runc (scripts/image.sh installs them), and
the network for a cold build; a missing one fails the test, never skips it.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import grpc  # noqa: E402
from mesh import Kafka, check_results, execution, free_port, pb, pb_grpc, status_name, wait_for  # noqa: E402
from em_health import health_pb2  # noqa: E402

TAG = os.environ.get("EM_IMAGE_TAG", "execmesh:test")
# runc: crun refuses this machine's hybrid cgroup layout; ulimits: podman's
# default nofile/nproc exceed the hard limits here (scripts/image.sh says the same)
PODMAN = ["podman", "--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
N = 2000
N_UPPER = 400  # of N, through the exec handler "upper" (/usr/bin/tr): a child process each
PARTITIONS = 6
UID = 65532
PROGRAMS = {"usr/local/bin/execmesh-scheduler", "usr/local/bin/execmesh-executor", "usr/local/bin/execmesh-sink",
            "usr/local/bin/execmesh-devkafka", "usr/local/bin/execmeshctl", "usr/bin/tr",
            "usr/local/bin/grpc-health-probe"}  # the one program not ours: deploy/k8s's readiness probe
# The names the services' callers verify them by, in deploy/*.cfg and
# deploy/k8s (Services and readiness probes): the test certificates carry them.
SERVICE_NAMES = {"scheduler": "scheduler.execmesh.svc", "executor": "executor.execmesh.svc",
                 "sink": "sink.execmesh.svc"}
FORBIDDEN = ("apt", "apt-get", "apt-cache", "dpkg", "dpkg-query", "cc", "gcc", "c99", "sh", "bash", "dash",
             "perl", "python3")


def podman(*args, timeout=120, check=True):
    r = subprocess.run(PODMAN + list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {r.returncode}\n{r.stderr[-3000:]}")
    return r


class Container:
    """One service in a container of the image; tracked by ID for removal."""
    started = []

    def __init__(self, run_id, name, argv, grpc_port=None, metrics_port=None, podman_args=(), client_creds=None):
        self.name = f"em-image-{run_id}-{name}"
        self.grpc_port, self.metrics_port = grpc_port, metrics_port
        self.client_creds = client_creds  # grpc channel credentials when its gRPC port serves TLS
        # As deploy/k8s/base runs the pods: read-only root, /tmp writable
        # (the executor's workdir_base; an emptyDir there), no capabilities,
        # no privilege escalation, the image's own user.
        r = podman("run", "-d", "--name", self.name, "--network", "host", *ULIMITS, "--read-only",
                   "--tmpfs", "/tmp:rw,mode=1777", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                   *podman_args, TAG, *argv, check=False)
        if r.returncode != 0:  # it may exist, created but not started: remove it by its (our) name
            podman("rm", "--force", "--time", "0", self.name, check=False)
            raise AssertionError(f"podman run {self.name}: exit {r.returncode}\n{r.stderr[-3000:]}")
        self.id = r.stdout.strip()
        Container.started.append(self)

    def logs(self):
        r = podman("logs", self.id)
        return r.stdout, r.stderr

    def log_lines(self):
        out = []
        for line in self.logs()[1].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"msg": line, "level": "raw"})
        return out

    def log_tail(self, n=30):
        return "\n".join(self.logs()[1].splitlines()[-n:])

    def state(self):
        s = json.loads(podman("inspect", "--format", "{{json .State}}", self.id).stdout)
        return s["Status"], s["ExitCode"], s["Pid"]

    def running(self):
        status, code, _ = self.state()
        if status != "running":
            raise AssertionError(f"{self.name} is {status} (exit code {code}); log:\n{self.log_tail()}")
        return True

    def channel(self):
        addr = f"127.0.0.1:{self.grpc_port}"
        return grpc.secure_channel(addr, self.client_creds) if self.client_creds else grpc.insecure_channel(addr)

    def exec(self, *argv, timeout=30):
        """podman exec: argv run in the container, as its user (as the kubelet runs an exec probe)."""
        return podman("exec", self.id, *argv, timeout=timeout, check=False)

    def health(self):
        with self.channel() as ch:
            stub = ch.unary_unary("/grpc.health.v1.Health/Check",
                                  request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                  response_deserializer=health_pb2.HealthCheckResponse.FromString)
            return stub(health_pb2.HealthCheckRequest(service=""), timeout=1).status

    def wait_serving(self, timeout=60):
        def serving():
            self.running()
            try:
                return self.health() == 1
            except grpc.RpcError:
                return False
        wait_for(serving, timeout, f"{self.name} SERVING on 127.0.0.1:{self.grpc_port}", interval=0.1)

    def check_user(self):
        """The service, PID 1 of the container, as the host's kernel sees it
        (rootful podman, no user namespace): uid and gid 65532, no capabilities."""
        st = proc_status(self.state()[2])
        assert st["Uid"] == [str(UID)] * 4 and st["Gid"] == [str(UID)] * 4, (self.name, st["Uid"], st["Gid"])
        assert st["CapEff"] == ["0000000000000000"], (self.name, st["CapEff"])

    def cgroup_dirs(self):
        """The container's own cgroup v1 directories on the host."""
        out = []
        with open(f"/proc/{self.state()[2]}/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                if ctrls in ("memory", "pids", "freezer", "cpu"):
                    out.append(f"/sys/fs/cgroup/{ctrls}{path}")
        return out

    def cgroup_line(self):
        """The executor's one start-up line on exec children's containment."""
        cg = [l for l in self.log_lines() if l.get("msg", "").startswith("exec children are")]
        assert len(cg) == 1, f"{self.name}: not one cgroup line in the log: {cg}"
        return cg[0]

    def metric(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                key, _, val = line.rpartition(" ")
                if key == name:
                    return float(val)
        raise AssertionError(f"{self.name}: no metric {name}")

    def stop_and_check_drained(self):
        """podman stop: SIGTERM (the image's StopSignal) to the service, PID 1
        of the container; SIGKILL only after 45 s (the manifests' grace is 40)."""
        t0 = time.monotonic()
        podman("stop", "--time", "45", self.id, timeout=90)
        took = time.monotonic() - t0
        status, code, _ = self.state()
        lines = self.log_lines()
        msgs = [l.get("msg") for l in lines]
        assert status == "exited" and code == 0, \
            f"{self.name}: {status}, exit code {code} after podman stop ({took:.1f} s); log:\n{self.log_tail()}"
        sig = [l for l in lines if l.get("msg") == "signal received, draining"]
        assert sig and sig[0]["fields"]["signal"] == "SIGTERM", f"{self.name}: no SIGTERM drain in the log:\n{self.log_tail()}"
        assert "stopped" in msgs and {"exit_code": 0} in [l.get("fields") for l in lines if l.get("msg") == "stopped"], \
            f"{self.name}: no 'stopped' exit_code 0 in the log:\n{self.log_tail()}"
        assert msgs.index("signal received, draining") < msgs.index("stopped")
        warns = [l for l in lines[msgs.index("signal received, draining"):] if l.get("level") in ("warn", "error")]
        assert not warns, f"{self.name}: warnings during the drain: {warns}"
        print(f"{self.name}: SIGTERM -> drained, exit 0 in {took:.2f} s")


class ImageKafka(Kafka):
    """mesh.Kafka's readers (offsets, commits, topics) on the image's devkafka."""

    def __init__(self, bootstrap):  # noqa: super().__init__ would start a devkafka of its own
        self.kind, self.proc, self.bootstrap = "dev", None, bootstrap


def remove_all():
    errors = []
    for c in reversed(Container.started):
        r = podman("rm", "--force", "--time", "0", c.id, check=False)
        if r.returncode != 0 and "no such container" not in r.stderr.lower():
            errors.append(f"podman rm {c.name}: {r.stderr.strip()}")
    Container.started.clear()
    return errors


def preconditions():
    """What the test needs; a missing one fails it (in CI and out)."""
    assert os.geteuid() == 0, "needs root: rootful podman (the service's uid is read from the host's /proc)"
    build = os.environ.get("EM_BUILD_DIR", os.path.join(ROOT, "build"))
    assert os.path.exists(os.path.join(build, "py", "execmesh", "v1", "execmesh_pb2.py")), \
        f"no python stubs in {build}/py: build the project there (EM_BUILD_DIR) first"


def build_image():
    t0 = time.monotonic()
    r = subprocess.run([os.path.join(ROOT, "scripts", "image.sh"), "build", "--tag", TAG], capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, f"scripts/image.sh build failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-6000:]}"
    print(f"\nIMAGE build {time.monotonic() - t0:.1f} s: {r.stdout.strip().splitlines()[-1]}")


def check_filesystem():
    """The image's files, from `podman export` of a container never started."""
    cid = podman("create", TAG).stdout.strip()
    p = None
    try:
        p = subprocess.Popen(PODMAN + ["export", cid], stdout=subprocess.PIPE)
        names, programs = set(), set()
        with tarfile.open(fileobj=p.stdout, mode="r|") as tar:
            for m in tar:
                name = m.name[2:] if m.name.startswith("./") else m.name
                names.add(name)
                # etc/hostname, hosts, resolv.conf: podman's mount points, made at create
                if name in ("etc/hostname", "etc/hosts", "etc/resolv.conf"):
                    continue
                if (m.isfile() and m.mode & 0o111 and not name.startswith("usr/lib") and ".so" not in name) or \
                        (m.issym() and any(name.startswith(d) for d in ("usr/bin/", "usr/sbin/", "usr/local/bin/"))):
                    programs.add(name)
        assert p.wait(timeout=120) == 0, "podman export failed"
    finally:
        # an export left blocked on its pipe would hold the container's lock
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(timeout=30)
        podman("rm", "--force", cid, check=False)
    for tool in FORBIDDEN:
        for d in ("usr/bin", "usr/sbin", "bin", "sbin", "usr/local/bin"):
            assert f"{d}/{tool}" not in names, f"the image has {d}/{tool}"
    assert not [n for n in names if n.startswith(("var/lib/apt/", "etc/apt/", "usr/lib/apt/", "usr/lib/dpkg/"))], \
        "apt or dpkg files left in the image"
    assert programs == PROGRAMS, f"programs in the image: extra {sorted(programs - PROGRAMS)}, " \
                                 f"missing {sorted(PROGRAMS - programs)}"
    for cfg in ("scheduler", "executor", "sink"):
        assert f"etc/execmesh/{cfg}.cfg" in names, f"/etc/execmesh/{cfg}.cfg missing"
    # the TLS Secret's mount point, empty: no certificate or key in the image
    assert "etc/execmesh/tls" in names, "/etc/execmesh/tls (the TLS Secret's mount point) missing"
    assert not [n for n in names if n.startswith("etc/execmesh/tls/")], "files in /etc/execmesh/tls"
    assert "usr/local/lib/execmesh/librdkafka.so.1" in names
    print(f"IMAGE files={len(names)} programs={sorted(programs)}")


def make_certs(root):
    """scripts/test-ca.sh's CA and certificates, each service's with the name
    its callers verify (SERVICE_NAMES) as a DNS SAN; and per service a
    directory laid out as its kubernetes.io/tls Secret, to mount at
    /etc/execmesh/tls: tls.crt, tls.key, ca.crt, owned root:65532 with mode
    0440 (what the kubelet makes of deploy/k8s's defaultMode 0440 and fsGroup
    65532). Returns the CA's directory and {service: Secret directory}."""
    ca = os.path.join(root, "ca")
    dns = [a for role, name in SERVICE_NAMES.items() for a in ("--dns", f"{role}={name}")]
    r = subprocess.run([os.path.join(ROOT, "scripts", "test-ca.sh"), ca, "--days", "1", *dns], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, f"scripts/test-ca.sh: {r.stderr}"
    secrets = {}
    for role in SERVICE_NAMES:
        d = os.path.join(root, f"execmesh-{role}-tls")
        os.mkdir(d)
        os.chmod(d, 0o755)
        for dst, src in (("tls.crt", f"{role}.pem"), ("tls.key", f"{role}.key"), ("ca.crt", "ca.pem")):
            shutil.copyfile(os.path.join(ca, src), os.path.join(d, dst))
            os.chown(os.path.join(d, dst), 0, UID)
            os.chmod(os.path.join(d, dst), 0o440)
        secrets[role] = d
    return ca, secrets


def manifest_probe(role):
    """The readiness probe's command in deploy/k8s/base/<role>.yaml, written
    there as a flow sequence of double-quoted strings, which JSON reads."""
    path = os.path.join(ROOT, "deploy", "k8s", "base", f"{role}.yaml")
    with open(path) as f:
        m = re.search(r"readinessProbe:\s*\n\s*exec:\s*\n\s*command:\s*(\[[^\]]*\])", f.read())
    assert m, f"{path}: no readinessProbe with exec.command as a [...] list"
    return json.loads(m.group(1))


def check_readiness_probe(c, role):
    """deploy/k8s's readiness probe, as written there but for the port, run in
    the service's container: SERVING over mutual TLS; without its TLS flags
    (plaintext) it fails."""
    cmd = manifest_probe(role)
    addr = [a for a in cmd if a.startswith("-addr=")]
    assert len(addr) == 1 and addr[0].startswith("-addr=127.0.0.1:"), f"{role}.yaml: readiness -addr: {addr}"
    cmd = [f"-addr=127.0.0.1:{c.grpc_port}" if a.startswith("-addr=") else a for a in cmd]
    t0 = time.monotonic()
    r = c.exec(*cmd)
    took = time.monotonic() - t0
    assert r.returncode == 0 and "status: SERVING" in r.stdout + r.stderr, \
        f"{c.name}: readiness probe {cmd}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    r = c.exec(cmd[0], f"-addr=127.0.0.1:{c.grpc_port}")
    assert r.returncode not in (0, 4), f"{c.name}: a plaintext probe got an answer (exit {r.returncode}): {r.stdout}"
    print(f"IMAGE {c.name}: readiness probe of deploy/k8s/base/{role}.yaml SERVING in {took:.2f} s "
          f"(podman exec included); plaintext: exit {r.returncode} {r.stderr.strip()[:120]!r}")


def check_config():
    cfg = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", TAG).stdout)
    assert cfg.get("User") == f"{UID}:{UID}", f"image user {cfg.get('User')!r}"
    assert not cfg.get("Entrypoint"), f"entrypoint {cfg.get('Entrypoint')}: the service must be PID 1 itself"
    assert cfg["Cmd"][0].startswith("/usr/local/bin/execmesh-"), f"CMD {cfg['Cmd']} is not exec form"
    assert cfg.get("StopSignal") == "SIGTERM", cfg.get("StopSignal")
    size = int(podman("image", "inspect", "--format", "{{.Size}}", TAG).stdout)
    print(f"IMAGE size={size} bytes user={cfg['User']} cmd={cfg['Cmd']}")


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


def test_image_is_minimal_non_root_and_runs_the_mesh():
    preconditions()
    t_start = time.monotonic()
    build_image()
    check_config()
    check_filesystem()

    run_id = f"{os.getpid()}"
    hooks, cg_dirs = None, []
    certs = tempfile.mkdtemp(prefix="em-image-tls-")
    try:
        ca, secrets = make_certs(certs)

        def read(name):
            with open(os.path.join(ca, name), "rb") as f:
                return f.read()
        # the test's own client certificate (CN client), for Health and Submit from the host
        creds = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"), private_key=read("client.key"),
                                             certificate_chain=read("client.pem"))
        # devkafka: the mock broker's port is its own (ephemeral, loopback)
        kgrpc, kmet = free_port(), free_port()
        dk = Container(run_id, "devkafka", ["/usr/local/bin/execmesh-devkafka", "--partitions", str(PARTITIONS),
                                            "--set", f"grpc.listen=127.0.0.1:{kgrpc}",
                                            "--set", f"metrics.listen=127.0.0.1:{kmet}"], kgrpc, kmet)

        def bootstrap():
            dk.running()
            line = dk.logs()[0].partition("\n")
            return line[1] and line[0].startswith("bootstrap=") and line[0][len("bootstrap="):]
        boot = wait_for(bootstrap, 60, "devkafka's bootstrap= line", interval=0.1)
        dk.wait_serving()

        # Each service with its config as shipped (TLS files under
        # /etc/execmesh/tls, where its Secret is mounted read-only), on
        # loopback ports. The loopback targets name no host, so
        # tls.server_name gives the Service name deploy/'s targets carry.
        def svc(name, role, extra, podman_args=()):
            g, mp = free_port(), free_port()
            return Container(run_id, name, [f"/usr/local/bin/execmesh-{role}", "--config", f"/etc/execmesh/{role}.cfg",
                                            "--set", f"replica={name}", "--set", f"grpc.listen=127.0.0.1:{g}",
                                            "--set", f"metrics.listen=127.0.0.1:{mp}"] + extra, g, mp,
                             ["-v", f"{secrets[role]}:/etc/execmesh/tls:ro", *podman_args], creds)
        sink = svc("sink-0", "sink", ["--set", f"kafka.bootstrap={boot}"])
        sink.wait_serving()
        to_sink = ["--set", f"sinks.target=ipv4:127.0.0.1:{sink.grpc_port}",
                   "--set", f"tls.server_name={SERVICE_NAMES['sink']}"]
        ex = svc("executor-0", "executor", to_sink)
        ex.wait_serving()
        # A second executor with its container's cgroups delegated to it (an
        # OCI hook chowns them to 65532; /sys/fs/cgroup mounted read-write):
        # "required" must start, and its exec runs are each in a cgroup.
        hooks = tempfile.mkdtemp(prefix="em-image-hooks-")
        with open(os.path.join(hooks, "delegate-cgroups.json"), "w") as f:
            json.dump({"version": "1.0.0", "hook": {"path": os.path.join(HERE, "delegate-cgroups.sh")},
                       "when": {"annotations": {r"^io\.execmesh\.delegate-cgroups$": "^true$"}},
                       "stages": ["prestart"]}, f)
        ex_cg = svc("executor-cg", "executor", to_sink + ["--set", "executor.cgroups=required"],
                    ["--hooks-dir", hooks, "--annotation", "io.execmesh.delegate-cgroups=true",
                     "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"])
        ex_cg.wait_serving()
        sched = svc("scheduler-0", "scheduler", ["--set", f"kafka.bootstrap={boot}", "--set",
                                                 f"executors.target=ipv4:127.0.0.1:{ex.grpc_port},"
                                                 f"127.0.0.1:{ex_cg.grpc_port}",
                                                 "--set", f"tls.server_name={SERVICE_NAMES['executor']}"])
        sched.wait_serving()
        for c in (dk, sink, ex, ex_cg, sched):
            c.check_user()
        for c, role in ((sched, "scheduler"), (ex, "executor"), (sink, "sink")):
            check_readiness_probe(c, role)
        cg_dirs = ex_cg.cgroup_dirs()
        wait_for(lambda: sched.metric("execmesh_scheduler_assigned_partitions") == PARTITIONS, 60,
                 f"the scheduler to own all {PARTITIONS} partitions", interval=0.1)

        # cgroups in the container: /sys/fs/cgroup is read-only, so "auto"
        # falls back to rlimits and process groups (one warning, metric 0) ...
        cg = ex.cgroup_line()
        print(f"IMAGE executor-0 cgroups: {cg['msg']}: {cg.get('fields')}")
        assert cg["level"] == "warn" and "NOT contained" in cg["msg"] and "Read-only file system" in str(cg), cg
        assert ex.metric("execmesh_exec_cgroups") == 0.0
        # ... and delegated, each run in a cgroup of its own
        cg = ex_cg.cgroup_line()
        print(f"IMAGE executor-cg cgroups: {cg['msg']}: {cg.get('fields')}")
        assert cg["level"] == "info" and cg["msg"].startswith("exec children are contained"), cg
        assert ex_cg.metric("execmesh_exec_cgroups") == 1.0

        kafka = ImageKafka(boot)
        results_start = kafka.end_offsets("execmesh.results")
        req_start = kafka.end_offsets("execmesh.requests")

        t0 = time.monotonic()
        expected = {}
        with sched.channel() as ch:  # mutual TLS, the test's client certificate
            stub = pb_grpc.SchedulerStub(ch)
            # deploy/scheduler.cfg's authz grants spiffe://execmesh/client echo, sha256 and upper only
            try:
                stub.Submit(pb.SubmitRequest(executions=[execution("img-denied", handler="sleep", payload=b"1")]),
                            timeout=30)
                raise AssertionError("Submit of handler 'sleep' by spiffe://execmesh/client was accepted")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "spiffe://execmesh/client" in e.details(), \
                    (e.code(), e.details())
            for b in range(N // 100):
                batch = []
                for k in range(100):
                    i = b * 100 + k
                    handler = "upper" if i % (N // N_UPPER) == 0 else "echo"
                    batch.append(execution(f"img-{i}", handler=handler, payload=f"payload {i}".encode()))
                resp = stub.Submit(pb.SubmitRequest(executions=batch), timeout=30)
                assert list(resp.ids) == [e.id for e in batch]
                expected.update({e.id: e for e in batch})

        def all_results(records):
            return len(records) >= N and set(expected) <= {pb.Result.FromString(v).id for _, v, _ in records}
        kafka.read("execmesh.results", results_start, until=all_results, timeout=120,
                   what=f"a result for each of the {N} executions")
        wall = time.monotonic() - t0
        m = types.SimpleNamespace(topics={"execmesh.results": "execmesh.results"}, results_start=results_start,
                                  kafka=kafka)
        got = check_results(m, list(expected))  # every id, exactly once
        assert set(got) == set(expected), f"results for ids never submitted: {sorted(set(got) - set(expected))[:5]}"
        for eid, (r,) in got.items():
            ex_ = expected[eid]
            want = ex_.payload.upper() if ex_.handler == "upper" else ex_.payload
            assert status_name(r.status) == "SUCCEEDED" and r.output == want, (eid, status_name(r.status), r.error,
                                                                               r.output)
            assert r.executor in ("executor-0", "executor-cg"), r.executor
        by = {e: sum(1 for (r,) in got.values() if r.executor == e and expected[r.id].handler == "upper")
              for e in ("executor-0", "executor-cg")}
        assert all(by.values()), f"exec runs per executor: {by} (both must have run some)"

        # the committed offsets reach the end of every partition
        req_end = kafka.end_offsets("execmesh.requests")
        assert sum(req_end.values()) - sum(req_start.values()) == N
        wait_for(lambda: not any(kafka.lag("execmesh", "execmesh.requests").values()), 30,
                 "group execmesh's committed offsets to reach the end of every partition", interval=0.2)
        print(f"IMAGE mesh executions={N} (upper={N_UPPER}, exec runs per executor {by}) results=1 each "
              f"wall_s={wall:.2f}")

        # SIGTERM through podman stop: each tier drains and exits 0, upstream first
        for c in (sched, ex, ex_cg, sink, dk):
            c.stop_and_check_drained()
    finally:
        errors = remove_all()
        if hooks:
            shutil.rmtree(hooks, ignore_errors=True)
        shutil.rmtree(certs, ignore_errors=True)
    assert not errors, errors
    # runc removed the delegated container's cgroups, the executor's run groups in them too
    left = [d for d in cg_dirs if os.path.exists(d)]
    assert not left, f"cgroup directories left after the containers were removed: {left}"
    print(f"IMAGE test wall {time.monotonic() - t_start:.1f} s")
