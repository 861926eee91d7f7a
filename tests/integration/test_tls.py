# SPDX-License-Identifier: Apache-2.0
"""Mutual TLS: certificates from scripts/test-ca.sh, a sink, an executor and a
scheduler each with its own certificate (tls.cert_file / tls.key_file /
tls.ca_file). 500 executions submitted by python grpcio over a channel with
the client certificate each get exactly one result, through the scheduler ->
executor and executor -> sink channels (both mutual TLS, the host name checked
against 127.0.0.1), and the committed offsets reach the end. A plaintext
client, a client whose certificate another CA signed, and a client with no
certificate are all refused (UNAVAILABLE), and nothing they sent reaches the
requests topic. grpc-health-probe with its TLS flags says SERVING for each
service and fails without them; grpcurl with -cacert/-cert/-key calls
grpc.health.v1.Health/Check and Submit. Authorization (deny by default): the
executor takes Execute/Cancel only from the scheduler's identity, the sink
Publish only from the executor's, the scheduler Submit only of the handlers
its authz table grants the caller (PERMISSION_DENIED naming the identity and
the handler, nothing written). execmeshctl health, submit and cancel with
--set tls.* work; without them health fails. Setting only some of the tls.* keys
is refused at start (exit 2, naming the missing key)."""
import json
import os
import socket
import ssl
import subprocess
import time

import grpc

from mesh import (BIN, ROOT, SERVING, TOOL, Mesh, WaitTimeout, check_results, execution, health_pb2, pb, pb_grpc,
                  probe, wait_for)

N = 500


SRC = ROOT  # the source tree (mesh.ROOT finds it also when these files are copied)
PARTITIONS = 6
SERVICES = {"scheduler": "execmesh.v1.Scheduler", "executor": "execmesh.v1.Executor", "sink": "execmesh.v1.ResultSink"}


def make_certs(d):
    r = subprocess.run([os.path.join(SRC, "scripts", "test-ca.sh"), d, "--force", "--days", "2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"test-ca.sh: {r.stderr}"
    assert r.stdout == "" and r.stderr == "", f"test-ca.sh is not quiet on success: {r.stdout!r} {r.stderr!r}"
    for name in ("ca", "scheduler", "executor", "sink", "client", "rogue-ca", "rogue-client"):
        assert os.path.exists(os.path.join(d, f"{name}.pem")), name
        if name not in ("ca", "rogue-ca"):
            assert os.stat(os.path.join(d, f"{name}.key")).st_mode & 0o777 == 0o600, name
    # idempotent: a second run without --force changes nothing
    before = open(os.path.join(d, "ca.pem"), "rb").read()
    r = subprocess.run([os.path.join(SRC, "scripts", "test-ca.sh"), d], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
    assert open(os.path.join(d, "ca.pem"), "rb").read() == before, "test-ca.sh without --force remade the CA"


def tls_args(d, name):
    return ["--set", f"tls.cert_file={d}/{name}.pem", "--set", f"tls.key_file={d}/{name}.key",
            "--set", f"tls.ca_file={d}/ca.pem"]


def read(d, f):
    with open(os.path.join(d, f), "rb") as fh:
        return fh.read()


def creds(d, client="client", ca="ca"):
    """grpcio channel credentials: trust ca.pem, present CLIENT.pem (None: no client certificate)."""
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=read(d, f"{ca}.pem"))
    return grpc.ssl_channel_credentials(root_certificates=read(d, f"{ca}.pem"), private_key=read(d, f"{client}.key"),
                                        certificate_chain=read(d, f"{client}.pem"))


def health_check(channel, service="", timeout=2):
    stub = channel.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                               response_deserializer=health_pb2.HealthCheckResponse.FromString)
    return stub(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


def wait_serving_tls(proc, d, timeout=30):
    """Proc.wait_serving speaks plaintext; this asks Health/Check over mutual TLS until SERVING."""
    proc.wait_ports()
    ch = grpc.secure_channel(proc.grpc_addr, creds(d))
    last = []

    def serving():
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited with {proc.p.returncode}; log:\n{proc.log_tail()}")
        try:
            return health_check(ch, timeout=1) == SERVING
        except grpc.RpcError as e:
            last[:] = [f"{e.code()}: {e.details()}"]
            return False
    try:
        wait_for(serving, timeout, f"{proc.name} to be SERVING over mutual TLS (Health/Check)", interval=0.05)
    except WaitTimeout as e:
        raise WaitTimeout(f"{e}; last error {last}; log:\n{proc.log_tail()}")
    finally:
        ch.close()


def tls_probe(addr, d, client="client", service="", timeout_s=2):
    """grpc-health-probe's exit code over TLS presenting CLIENT.pem (0 SERVING)."""
    r = subprocess.run([TOOL["grpc-health-probe"], f"-addr={addr}", f"-service={service}",
                        f"-connect-timeout={timeout_s}s", f"-rpc-timeout={timeout_s}s",
                        "-tls", "-tls-ca-cert", f"{d}/ca.pem", "-tls-client-cert", f"{d}/{client}.pem",
                        "-tls-client-key", f"{d}/{client}.key", "-tls-server-name", "localhost"],
                       capture_output=True, text=True, timeout=timeout_s * 3 + 5)
    return r.returncode, r.stderr.strip()


def grpcurl(d, addr, method, body, proto, client="client", plaintext=False):
    """grpcurl presenting CLIENT.pem (trusting ca.pem), or speaking plaintext."""
    how = ["-plaintext"] if plaintext else ["-cacert", f"{d}/ca.pem", "-cert", f"{d}/{client}.pem",
                                            "-key", f"{d}/{client}.key"]
    return subprocess.run([TOOL["grpcurl"], *how, "-connect-timeout", "5", "-import-path", os.path.join(SRC, "protos"),
                           "-proto", proto, "-d", body, addr, method], capture_output=True, text=True, timeout=30)


def server_certificate_cn(addr, d):
    """The CN of the certificate the server at addr presents (Python's ssl, ALPN h2, our client cert)."""
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
    ctx.load_cert_chain(f"{d}/client.pem", f"{d}/client.key")
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=host) as t:
            cert = t.getpeercert()
    return dict(x[0] for x in cert["subject"])["commonName"], cert["subjectAltName"]


def test_tls_config_refused(tmp_path):
    """Only some of the three keys, or a key file that holds no private key: exit 2 at start, naming the key."""
    d = str(tmp_path)
    make_certs(d)
    for role in ("scheduler", "executor", "sink"):
        full = dict(cert_file=f"{d}/{role}.pem", key_file=f"{d}/{role}.key", ca_file=f"{d}/ca.pem")
        for missing in ("cert_file", "key_file", "ca_file"):
            args = []
            for k, v in full.items():
                if k != missing:
                    args += ["--set", f"tls.{k}={v}"]
            r = subprocess.run([BIN[role], "--set", "grpc.listen=127.0.0.1:0", "--set", "metrics.listen=127.0.0.1:0"]
                               + args, capture_output=True, text=True, timeout=15)
            assert r.returncode == 2, (role, missing, r.returncode, r.stderr[-2000:])
            assert f"tls.{missing}" in r.stderr, (role, missing, r.stderr[-2000:])
        r = subprocess.run([BIN[role], "--set", "grpc.listen=127.0.0.1:0", "--set", "metrics.listen=127.0.0.1:0",
                            "--set", f"tls.cert_file={d}/{role}.pem", "--set", f"tls.key_file={d}/{role}.pem",
                            "--set", f"tls.ca_file={d}/ca.pem"], capture_output=True, text=True, timeout=15)
        assert r.returncode == 2 and "tls.key_file" in r.stderr, (role, "key_file=a certificate", r.stderr[-2000:])


def logs(*procs, n=15):
    return "".join(f"\n--- {p.name} ({p.log_path}):\n{p.log_tail(n)}" for p in procs)


# The scheduler's authz table: the client certificate may submit echo and cancel; nobody else may do either.
CLIENT_ID = "spiffe://execmesh/client"
AUTHZ = ["--set", f"authz.clients.identity={CLIENT_ID}", "--set", "authz.clients.handlers=echo"]


def start_tls_mesh(m, d, sinks=1, extra=()):
    """Sinks, one executor (sinks.target ipv4:A[,B]) and one scheduler, each with its own certificate,
    waited on over mutual TLS (the harness's wait speaks plaintext); the scheduler with AUTHZ."""
    ss = []
    for i in range(sinks):
        ss.append(m.start("sink", f"sink-{i}", m.kafka_args() + tls_args(d, "sink"), wait=False))
        wait_serving_tls(ss[-1], d)
    ex = m.start("executor", "executor-0", ["--set", "sinks.target=ipv4:" + ",".join(s.grpc_addr for s in ss)]
                 + tls_args(d, "executor") + list(extra), wait=False)
    wait_serving_tls(ex, d)
    sched = m.start_scheduler([ex], args=tls_args(d, "scheduler") + AUTHZ + list(extra), wait=False)
    wait_serving_tls(sched, d)
    m.wait_assigned([sched], PARTITIONS)  # the metrics port stays plaintext HTTP
    return ss, ex, sched


def wait_results(m, ids, procs, timeout=30):
    want = set(ids)
    try:
        m.kafka.read(m.topics["execmesh.results"], m.results_start,
                     until=lambda recs: want <= {pb.Result.FromString(v).id for _, v, _ in recs},
                     timeout=timeout, what=f"a result for each of the {len(ids)} executions")
    except WaitTimeout as e:
        raise WaitTimeout(f"{e}{logs(*procs)}")


def test_mutual_tls_end_to_end():
    t0 = time.monotonic()
    m = Mesh("tls", partitions=PARTITIONS)
    try:
        d = os.path.join(m.dir, "certs")
        make_certs(d)
        (sink,), ex, sched = start_tls_mesh(m, d)

        # each server presents its own certificate
        for proc, name in ((sched, "scheduler"), (ex, "executor"), (sink, "sink")):
            cn, sans = server_certificate_cn(proc.grpc_addr, d)
            assert cn == name and ("URI", f"spiffe://execmesh/{name}") in sans, (proc.name, cn, sans)

        req_topic = m.topics["execmesh.requests"]
        req_start = m.kafka.end_offsets(req_topic)

        # N executions from grpcio over mutual TLS
        ids = []
        good = grpc.secure_channel(sched.grpc_addr, creds(d))
        stub = pb_grpc.SchedulerStub(good)
        for b in range(N // 100):
            batch = [execution(f"tls-{b * 100 + k}", payload=f"p-{b * 100 + k}".encode()) for k in range(100)]
            resp = stub.Submit(pb.SubmitRequest(executions=batch), timeout=30)
            assert list(resp.ids) == [e.id for e in batch]
            ids += resp.ids

        # grpcurl over mutual TLS: Health/Check on each service, and one Submit
        for proc in (sched, ex, sink):
            r = grpcurl(d, proc.grpc_addr, "grpc.health.v1.Health/Check", "{}", "grpc/health/v1/health.proto")
            assert r.returncode == 0 and json.loads(r.stdout) == {"status": "SERVING"}, (proc.name, r.stderr)
        body = json.dumps({"executions": [{"id": "grpcurl-tls-1", "handler": "echo", "payload": "aGVsbG8="}]})
        r = grpcurl(d, sched.grpc_addr, "execmesh.v1.Scheduler/Submit", body, "execmesh/v1/execmesh.proto")
        assert r.returncode == 0 and json.loads(r.stdout) == {"ids": ["grpcurl-tls-1"]}, r.stderr
        ids.append("grpcurl-tls-1")

        # every execution has exactly one result, SUCCEEDED, its payload echoed
        want = set(ids)
        wait_results(m, ids, (sched, ex, sink))
        got = check_results(m, ids)
        unknown = set(got) - want
        assert not unknown, f"results for ids never submitted: {sorted(unknown)[:5]}"
        for eid in ids:
            (res,) = got[eid]
            assert pb.Status.Name(res.status) == "SUCCEEDED", (eid, pb.Status.Name(res.status), res.error)
            expect = b"hello" if eid == "grpcurl-tls-1" else f"p-{eid[4:]}".encode()
            assert res.output == expect, (eid, res.output)
        req_end = m.kafka.end_offsets(req_topic)
        assert sum(req_end.values()) - sum(req_start.values()) == len(ids)
        lag_s = m.wait_lag_zero(30)

        # refused: plaintext, a certificate from another CA, no certificate
        bad = {"plaintext": grpc.insecure_channel(sched.grpc_addr),
               "rogue client certificate": grpc.secure_channel(sched.grpc_addr, creds(d, client="rogue-client")),
               "no client certificate": grpc.secure_channel(sched.grpc_addr, creds(d, client=None))}
        for what, ch in bad.items():
            try:
                pb_grpc.SchedulerStub(ch).Submit(pb.SubmitRequest(executions=[execution(f"refused-{what}")]),
                                                 timeout=5)
                raise AssertionError(f"Submit from a client with {what} was accepted")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, (what, e.code(), e.details())
            finally:
                ch.close()
        # and grpcurl: plaintext, and with the rogue CA's client certificate
        body = json.dumps({"executions": [{"id": "grpcurl-refused", "handler": "echo"}]})
        for what, kw in (("plaintext", {"plaintext": True}), ("rogue client certificate", {"client": "rogue-client"})):
            r = grpcurl(d, sched.grpc_addr, "execmesh.v1.Scheduler/Submit", body, "execmesh/v1/execmesh.proto", **kw)
            assert r.returncode != 0 and "grpcurl-refused" not in r.stdout, (what, r.returncode, r.stdout, r.stderr)
        # the good channel still works after the refusals, and nothing refused was written
        assert health_check(good, "execmesh.v1.Scheduler") == SERVING
        good.close()
        assert m.kafka.end_offsets(req_topic) == req_end, "a refused client's Submit reached the requests topic"

        check_authorization(m, d, sched, ex, sink)
        assert m.kafka.end_offsets(req_topic) == req_end, "a denied Submit reached the requests topic"
        ids.append(check_ctl(m, d, sched, ex, sink))
        end = m.kafka.end_offsets(req_topic)
        assert sum(end.values()) - sum(req_end.values()) == 1, "execmeshctl's Submit: one record"
        assert len(check_results(m, [ids[-1]])[ids[-1]]) == 1, "execmeshctl's execution ran more than once"
        m.wait_lag_zero(30)  # its partition too

        # grpc-health-probe: SERVING with the TLS flags, on each service; fails without them or with the rogue cert
        for proc, role in ((sched, "scheduler"), (ex, "executor"), (sink, "sink")):
            assert tls_probe(proc.grpc_addr, d) == (0, "status: SERVING"), proc.name
            assert tls_probe(proc.grpc_addr, d, service=SERVICES[role])[0] == 0, proc.name
            assert probe(proc.grpc_addr) != 0, f"{proc.name}: a plaintext probe passed"
            assert tls_probe(proc.grpc_addr, d, client="rogue-client")[0] != 0, f"{proc.name}: rogue cert passed"

        assert all(p.alive() for p in (sched, ex, sink))
        print(f"\nTLS executions={len(ids)} lag_zero_s={lag_s:.2f} wall_s={time.monotonic() - t0:.2f}")
    finally:
        m.close()


def denied(call, what):
    """call() must fail with PERMISSION_DENIED; returns its details."""
    try:
        call()
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED, (what, e.code(), e.details())
        return e.details()
    raise AssertionError(f"{what}: accepted")


def check_authorization(m, d, sched, ex, sink):
    """Deny by default with TLS on: the internal methods take only their own callers, Submit and Cancel
    only what the scheduler's authz table grants; a denial names the identity (and the handler), and
    nothing of a denied request is written."""
    client = grpc.secure_channel(sched.grpc_addr, creds(d))
    as_executor = grpc.secure_channel(sched.grpc_addr, creds(d, client="executor"))
    try:
        stub = pb_grpc.SchedulerStub(client)
        # a handler the table does not grant, alone and beside a granted one: the whole call is refused
        for batch in ([execution("authz-sha", handler="sha256")],
                      [execution("authz-ok", handler="echo"), execution("authz-sha2", handler="sha256")]):
            why = denied(lambda: stub.Submit(pb.SubmitRequest(executions=batch), timeout=10), "Submit sha256")
            assert f"identity '{CLIENT_ID}' may not submit handler 'sha256'" in why, why
        # a handler named like a path is just another name the table does not grant
        why = denied(lambda: stub.Submit(pb.SubmitRequest(executions=[execution("authz-path", handler="../../bin/sh")]),
                                         timeout=10), "Submit ../../bin/sh")
        assert "handler '../../bin/sh'" in why, why
        # an identity the table does not name: neither Submit nor Cancel
        other = pb_grpc.SchedulerStub(as_executor)
        why = denied(lambda: other.Submit(pb.SubmitRequest(executions=[execution("authz-ex")]), timeout=10),
                     "Submit as the executor")
        assert "identity 'spiffe://execmesh/executor' may not submit handler 'echo'" in why, why
        why = denied(lambda: other.Cancel(pb.CancelRequest(ids=["authz-ex"]), timeout=10), "Cancel as the executor")
        assert "identity 'spiffe://execmesh/executor' may not cancel" in why, why
        # the client may cancel (granted by default): an unknown id is accepted
        assert list(stub.Cancel(pb.CancelRequest(ids=["authz-none"]), timeout=10).ids) == ["authz-none"]
    finally:
        client.close()
        as_executor.close()
    # the internal services take only their own callers: Execute the scheduler's identity, Publish the executor's
    for proc, method, owner in ((ex, "/execmesh.v1.Executor/Execute", "scheduler"),
                                (ex, "/execmesh.v1.Executor/Cancel", "scheduler"),
                                (sink, "/execmesh.v1.ResultSink/Publish", "executor")):
        for who in ("client", "sink" if owner == "scheduler" else "scheduler"):
            ch = grpc.secure_channel(proc.grpc_addr, creds(d, client=who))
            try:
                why = denied(lambda: ch.unary_unary(method)(b"", timeout=10), f"{method} as {who}")
                assert why == f"identity 'spiffe://execmesh/{who}' may not call {method}", why
            finally:
                ch.close()
        assert proc.log_events("call refused"), f"{proc.name} logged no refusal"


def check_ctl(m, d, sched, ex, sink):
    """execmeshctl with --set tls.*: health of every service, a Submit waited to its result, a Cancel;
    without them (plaintext) health fails, and half the tls keys are refused naming the missing one.
    Returns the id it submitted."""
    tls = ["--set", f"tls.cert_file={d}/client.pem", "--set", f"tls.key_file={d}/client.key",
           "--set", f"tls.ca_file={d}/ca.pem"]
    addrs = ",".join(p.grpc_addr for p in (sched, ex, sink))

    def ctl(*args):
        return subprocess.run([BIN["ctl"], *args], capture_output=True, text=True, timeout=60)
    r = ctl("health", "--target", f"ipv4:{addrs}", *tls, "--set", "tls.server_name=localhost")
    assert r.returncode == 0 and r.stdout.count(" SERVING") == 3, (r.returncode, r.stdout, r.stderr)
    r = ctl("health", "--target", f"ipv4:{sched.grpc_addr}")
    assert r.returncode == 1 and "SERVING" not in r.stdout.replace("NOT_SERVING", ""), (r.stdout, r.stderr)
    r = ctl("health", "--target", f"ipv4:{sched.grpc_addr}", *tls[:4])
    assert r.returncode == 2 and "tls.ca_file" in r.stderr, r.stderr
    r = ctl("submit", "--handler", "echo", "--payload", "over tls", "--id", "ctl-tls-1", "--target",
            f"ipv4:{sched.grpc_addr}", "--bootstrap", m.kafka.bootstrap, "--results-topic",
            m.topics["execmesh.results"], *tls)
    assert r.returncode == 0, (r.stdout, r.stderr)
    res = json.loads(r.stdout)
    assert res["id"] == "ctl-tls-1" and res["status"] == "SUCCEEDED", res
    r = ctl("cancel", "--target", f"ipv4:{sched.grpc_addr}", *tls, "ctl-none")
    assert r.returncode == 0 and "ctl-none" in r.stdout, (r.stdout, r.stderr)
    return "ctl-tls-1"


def test_mutual_tls_multi_address_target():
    """The ipv4:H:P,H:P form (the harness's own start_executor uses it) names
    no one host to check the servers' certificates against: with TLS on, a
    service refuses it at start, naming tls.server_name; with
    tls.server_name=localhost (a name the certificates carry), two sinks
    behind one sinks.target take the executor's results."""
    m = Mesh("tls-multi", partitions=PARTITIONS)
    try:
        d = os.path.join(m.dir, "certs")
        make_certs(d)
        # refused at start (the channel is made before anything is dialled: no sinks needed)
        r = subprocess.run([BIN["executor"], "--set", "grpc.listen=127.0.0.1:0", "--set", "metrics.listen=127.0.0.1:0",
                            "--set", "sinks.target=ipv4:127.0.0.1:1,127.0.0.1:2"] + tls_args(d, "executor"),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "sinks.target" in r.stderr and "tls.server_name" in r.stderr, \
            (r.returncode, r.stderr[-2000:])
        # a short drain: should the sinks be unreachable, the close would wait out the in-flight executions
        sinks, ex, sched = start_tls_mesh(m, d, sinks=2, extra=["--set", "drain.timeout_ms=3000",
                                                                "--set", "tls.server_name=localhost"])
        ch = grpc.secure_channel(sched.grpc_addr, creds(d))
        ids = [f"multi-{i}" for i in range(100)]
        resp = pb_grpc.SchedulerStub(ch).Submit(pb.SubmitRequest(executions=[execution(i) for i in ids]), timeout=30)
        assert list(resp.ids) == ids
        ch.close()
        wait_results(m, ids, (sched, ex, *sinks), timeout=30)
        got = check_results(m, ids)
        assert all(pb.Status.Name(got[i][0].status) == "SUCCEEDED" for i in ids)
        m.wait_lag_zero(30)  # no partition left behind
    finally:
        m.close()


# --- rotation under load ------------------------------------------------------

ROLES = ("scheduler", "executor", "sink")
ROTATION_FAILED_LOGS = ("execute call failed before an executor took it, dispatching again",
                        "executor lost with executions in flight", "publish to sink failed")


def install(src, dst):
    """Copies src over dst by rename, so the file watcher never reads half a file."""
    tmp = f"{dst}.new"
    with open(src, "rb") as f, open(tmp, "wb") as g:
        g.write(f.read())
    os.chmod(tmp, 0o600)
    os.rename(tmp, dst)


def bundle(path, *cas):
    tmp = f"{path}.new"
    with open(tmp, "wb") as g:
        for ca in cas:
            g.write(read(os.path.dirname(ca), os.path.basename(ca)))
    os.rename(tmp, path)


def serials(d):
    return dict(line.split() for line in open(os.path.join(d, "serials.txt")))


def server_serial(addr, trust, cert, key):
    """The serial (hex, as openssl prints it) of the certificate the server at addr presents on a new connection."""
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=trust)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=host) as t:
            return t.getpeercert()["serialNumber"].upper()


def handshake_ok(addr, trust, cert, key):
    """Does the server at addr accept a new connection presenting cert (a health check over it)?"""
    c = grpc.ssl_channel_credentials(root_certificates=open(trust, "rb").read(),
                                     private_key=open(key, "rb").read(), certificate_chain=open(cert, "rb").read())
    ch = grpc.secure_channel(addr, c)
    try:
        return health_check(ch, timeout=2) == SERVING
    except grpc.RpcError:
        return False
    finally:
        ch.close()


class SubmitLoad:
    """Submits batches of echo executions without pause from a thread, over a
    channel made from self.creds (set another to move to new credentials: the
    next batch goes over a new channel); records every id acknowledged and
    every failed call."""

    def __init__(self, addr, creds, batch=20):
        import threading
        self.addr, self.creds, self.batch = addr, creds, batch
        self.acked, self.failed, self.calls = [], [], 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        used, ch, k = None, None, 0
        while not self.stop_flag.is_set():
            if self.creds is not used:
                if ch:
                    ch.close()
                used = self.creds
                ch = grpc.secure_channel(self.addr, used)
                stub = pb_grpc.SchedulerStub(ch)
            batch = [execution(f"rot-{k + i}") for i in range(self.batch)]
            k += self.batch
            self.calls += 1
            try:
                resp = stub.Submit(pb.SubmitRequest(executions=batch), timeout=10)
                self.acked += list(resp.ids)
            except grpc.RpcError as e:
                self.failed.append((time.monotonic(), str(e.code()), e.details()))
        ch.close()


def test_rotation_under_load():
    """Certificates and CA rotated on every service without a restart while
    Submit load runs: (1) the bundles take the new CA beside the old, (2)
    every service's certificate and key are replaced by ones the new CA
    signed, and new connections see the new serial, (3) the old CA leaves the
    bundles, and a certificate it signed is refused on new connections. The
    servers' max connection age (1.5 s) makes every channel reconnect and
    handshake again throughout. 0 failed Submit calls, 0 failed Execute and
    Publish calls logged, every acknowledged execution exactly one result, the
    committed offsets at the end."""
    t0 = time.monotonic()
    m = Mesh("tls-rotate", partitions=PARTITIONS)
    load = None
    try:
        old, new, live = (os.path.join(m.dir, x) for x in ("ca-old", "ca-new", "live"))
        make_certs(old)
        r = subprocess.run([os.path.join(SRC, "scripts", "test-ca.sh"), new, "--days", "2"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        os.makedirs(live)
        for role in ROLES:
            install(f"{old}/{role}.pem", f"{live}/{role}.pem")
            install(f"{old}/{role}.key", f"{live}/{role}.key")
        bundle(f"{live}/ca.pem", f"{old}/ca.pem")
        both = os.path.join(m.dir, "client-trust.pem")  # the load client trusts both CAs throughout
        bundle(both, f"{old}/ca.pem", f"{new}/ca.pem")
        fast = ["--set", "tls.refresh_s=1", "--set", "grpc.max_connection_age_ms=1500"]
        sink = m.start("sink", "sink-0", m.kafka_args() + tls_args(live, "sink") + fast, wait=False)
        wait_serving_tls(sink, old)
        ex = m.start("executor", "executor-0", [f"--set", f"sinks.target=ipv4:{sink.grpc_addr}"]
                     + tls_args(live, "executor") + fast, wait=False)
        wait_serving_tls(ex, old)
        sched = m.start_scheduler([ex], args=tls_args(live, "scheduler") + AUTHZ + fast, wait=False)
        wait_serving_tls(sched, old)
        m.wait_assigned([sched], PARTITIONS)
        procs = {"scheduler": sched, "executor": ex, "sink": sink}
        old_serial, new_serial = serials(old), serials(new)

        def client_creds(d):
            return grpc.ssl_channel_credentials(root_certificates=open(both, "rb").read(),
                                                private_key=read(d, "client.key"), certificate_chain=read(d, "client.pem"))
        load = SubmitLoad(sched.grpc_addr, client_creds(old))
        load.thread.start()
        wait_for(lambda: len(load.acked) >= 200, 30, "the Submit load to get going", interval=0.05)
        marks = {"start": len(load.acked)}

        # (1) the new CA joins every bundle: a client certificate it signed is taken on new connections
        bundle(f"{live}/ca.pem", f"{old}/ca.pem", f"{new}/ca.pem")
        for role, p in procs.items():
            wait_for(lambda: handshake_ok(p.grpc_addr, both, f"{new}/client.pem", f"{new}/client.key"), 15,
                     f"{role} to trust the new CA", interval=0.2)
        marks["bundles"] = len(load.acked)

        # (2) new certificates and keys: new connections see the new serial
        for role in ROLES:
            install(f"{new}/{role}.key", f"{live}/{role}.key")
            install(f"{new}/{role}.pem", f"{live}/{role}.pem")
        seen = {}
        for role, p in procs.items():
            assert server_serial(p.grpc_addr, both, f"{old}/client.pem", f"{old}/client.key") in (
                old_serial[role], new_serial[role])
            wait_for(lambda: server_serial(p.grpc_addr, both, f"{old}/client.pem", f"{old}/client.key")
                     == new_serial[role], 15, f"{role} to present its new certificate (serial {new_serial[role]})",
                     interval=0.2)
            seen[role] = new_serial[role]
        load.creds = client_creds(new)  # the client moves to its new certificate too
        marks["certificates"] = len(load.acked)

        # (3) the old CA leaves the bundles: its certificates are refused on new connections
        bundle(f"{live}/ca.pem", f"{new}/ca.pem")
        for role, p in procs.items():
            wait_for(lambda: not handshake_ok(p.grpc_addr, both, f"{old}/client.pem", f"{old}/client.key"), 15,
                     f"{role} to refuse a certificate of the old CA", interval=0.2)
            assert handshake_ok(p.grpc_addr, both, f"{new}/client.pem", f"{new}/client.key"), role
        marks["old CA gone"] = len(load.acked)
        # a few more connection ages under load on the new credentials only
        target = len(load.acked) + 400
        wait_for(lambda: len(load.acked) >= target, 30, "more load after the rotation", interval=0.05)
        load.stop_flag.set()
        load.thread.join(30)
        assert not load.thread.is_alive()
        assert not load.failed, f"{len(load.failed)} of {load.calls} Submit calls failed: {load.failed[:3]}"
        steps = list(marks.values())
        assert all(b > a for a, b in zip(steps, steps[1:])), f"the load stalled during a step: {marks}"
        # every acknowledged execution: exactly one result; nothing failed between the services
        ids = load.acked
        wait_results(m, ids, (sched, ex, sink), timeout=60)
        got = check_results(m, ids)
        assert all(len(got[i]) == 1 and pb.Status.Name(got[i][0].status) == "SUCCEEDED" for i in ids)
        failed_logs = [(p.name, msg) for p in procs.values() for msg in ROTATION_FAILED_LOGS if p.log_events(msg)]
        assert not failed_logs, f"calls between the services failed during the rotation: {failed_logs}"
        lag_s = m.wait_lag_zero(30)
        print(f"\nROTATION submit_calls={load.calls} failed_calls={len(load.failed)} acked={len(ids)} "
              f"serials={seen} marks={marks} lag_zero_s={lag_s:.2f} wall_s={time.monotonic() - t0:.2f}")
    finally:
        if load:
            load.stop_flag.set()
        m.close()
