# SPDX-License-Identifier: Apache-2.0
"""Bad input gets a clear error and loses nothing: garbage bytes, a truncated
protobuf and an oversize record on the requests topic go to the dead-letter
topic with the reason in header execmesh-error (the original bytes kept), and
the offset moves on; an unknown handler gets a REJECTED result; an empty or
invalid Submit gets INVALID_ARGUMENT naming the index and field and writes
nothing; a config file with a wrong type or an unknown key is refused at
start naming file, line and key."""
import os
import subprocess

import grpc
import pytest

from mesh import BIN, Mesh, execution, pb, probe, results_by_id, status_name


def test_bad_records_and_bad_submits():
    m = Mesh("bad-input")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink])
        sched = m.start_scheduler([ex], args=["--set", "input.max_bytes=4096"])
        m.wait_assigned([sched], 6)
        req = m.topics["execmesh.requests"]
        req_start = m.kafka.end_offsets(req)

        good = execution("bad-good-1", "echo", b"still fine").SerializeToString()
        whole = execution("bad-trunc", "echo", b"y" * 100).SerializeToString()
        truncated = whole[:len(whole) - 40]  # cut inside the payload field
        with pytest.raises(Exception):
            pb.Execution.FromString(truncated)  # the reference decoder refuses it too
        oversize = execution("bad-big", "echo", b"z" * 10000).SerializeToString()
        # well-formed protobuf, but the id is not UTF-8: no reader could use it
        bad_utf8 = b"\x0a\x03\xff\xfe\xfd\x12\x04echo"
        bad = {b"garbage": b"\xff\xfe\x00 this is not protobuf \x07\x07",
               b"truncated": truncated,
               b"oversize": oversize,
               b"bad-utf8": bad_utf8}
        p = m.kafka.producer()
        for k, v in bad.items():
            p.produce(req, v, key=k)
        p.produce(req, execution("bad-unknown-kafka", "nope", b"").SerializeToString(), key=b"bad-unknown-kafka")
        p.produce(req, good, key=b"bad-good-1")
        assert p.flush(30) == 0

        stub = m.stub(sched)
        # an unknown handler through Submit: accepted, then REJECTED by the executor
        stub.Submit(pb.SubmitRequest(executions=[execution("bad-unknown-submit", "../../bin/sh", b"")]), timeout=10)

        # invalid Submits: INVALID_ARGUMENT naming index and field; nothing written
        before = m.kafka.end_offsets(req)
        cases = [
            (pb.SubmitRequest(), "executions: empty"),
            (pb.SubmitRequest(executions=[execution("a", "echo"), execution("b", "")]), "executions[1].handler: required"),
            (pb.SubmitRequest(executions=[execution("c", "echo", b"x" * (2 << 20))]), "executions[0].payload"),
        ]
        for request, text in cases:
            with pytest.raises(grpc.RpcError) as e:
                stub.Submit(request, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
            assert text in e.value.details(), (text, e.value.details())
        # undecodable bytes on Submit itself
        raw = sched.channel().unary_unary("/execmesh.v1.Scheduler/Submit")
        with pytest.raises(grpc.RpcError) as e:
            raw(b"\xff\xff\xff\xff", timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "cannot decode" in e.value.details()
        # an execution the intake would dead-letter (an id not UTF-8; found by tests/fuzz) is refused
        # by Submit itself, naming it, instead of answered OK and never run
        with pytest.raises(grpc.RpcError) as e:
            raw(b"\x0a" + bytes([len(bad_utf8)]) + bad_utf8, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
        assert "executions[0]: field 1 (id): not valid UTF-8" in e.value.details(), e.value.details()
        assert m.kafka.end_offsets(req) == before, "a refused Submit wrote to the requests topic"

        # the dead-letter topic has each bad record, with its reason, bytes intact
        dead = m.kafka.read(m.topics["execmesh.dead"], m.dead_start, until=lambda r: len(r) >= 4, timeout=30,
                            what="4 dead-letter records")
        reasons = {}
        for key, value, headers in dead:
            h = dict(headers)
            assert key in bad, key
            assert value == bad[key], f"dead letter {key} changed the bytes"
            reasons[key] = h["execmesh-error"].decode()
            assert h["execmesh-source"].decode().startswith(req + "/")
        assert reasons[b"garbage"].startswith("undecodable"), reasons
        assert reasons[b"truncated"].startswith("undecodable"), reasons
        assert reasons[b"oversize"].startswith("too_large"), reasons
        assert reasons[b"bad-utf8"].startswith("undecodable") and "field 1 (id): not valid UTF-8" in reasons[b"bad-utf8"]
        assert sched.metric("execmesh_dead_lettered_total") == 4

        # unknown handlers: REJECTED, naming the handler; the good record after the garbage ran
        got = results_by_id(m.kafka.read(m.topics["execmesh.results"], m.results_start,
                                         until=lambda r: len(results_by_id(r)) >= 3, timeout=30,
                                         what="3 results"))
        for eid, name in (("bad-unknown-kafka", "nope"), ("bad-unknown-submit", "../../bin/sh")):
            r = got[eid][0]
            assert status_name(r.status) == "REJECTED" and f"unknown handler '{name}'" in r.error, r
        assert status_name(got["bad-good-1"][0].status) == "SUCCEEDED"

        # the offsets moved on past every bad record
        end = m.kafka.end_offsets(req)
        assert sum(end.values()) - sum(req_start.values()) == 7
        m.wait_committed(req_start, end)
    finally:
        m.close()


COMMON_BAD = [
    # (file text, the line it is on, the key, what the message says)
    ('grpc = {\n  listn = "127.0.0.1:1";\n};\n', 2, "grpc.listn", "unknown key"),
    ('\n\nmetrics = { listen = 9000; };\n', 3, "metrics.listen", "expected string, got integer"),
    ('drain = {\n timeout_ms = 99999999;\n};\n', 2, "drain.timeout_ms", "above the maximum"),
    # who may reach what (docs/security.md)
    ('admin = {\n  enabled = true;\n};\n', 2, "admin.enabled", "true needs admin.token_file"),
    ('admin = {\n  token_file = "/nonexistent/admin.token";\n};\n', 2, "admin.token_file",
     "cannot read the token file '/nonexistent/admin.token'"),
    ('grpc = {\n  listen = "0.0.0.0:0";\n};\n', 2, "grpc.listen",
     "is not a loopback address and TLS is off: set tls.cert_file, tls.key_file and tls.ca_file, or "
     "security.allow_plaintext = true"),
]
KAFKA_WRONG_TYPE = ('kafka = {\n  linger_ms = "five";\n};\n', 2, "kafka.linger_ms", "expected integer, got string")
ROLE_BAD = {
    "scheduler": [KAFKA_WRONG_TYPE,
                  ('authz = {\n  ops = {\n    handlers = ["echo"];\n  };\n};\n', 3, "authz.ops.handlers",
                   "authz group 'ops' names no identity (authz.ops.identity)"),
                  ('authz = {\n  a = { identity = "spiffe://x/y"; };\n  b = { identity = "spiffe://x/y"; };\n};\n', 3,
                   "authz.b.identity", "identity 'spiffe://x/y' is named by authz groups 'a' and 'b'")],
    "sink": [KAFKA_WRONG_TYPE],
    # the executor never talks to Kafka: a kafka group is unknown to it
    "executor": [('handlers = {\n  concurrency = "eight";\n};\n', 2, "handlers.concurrency",
                  "expected integer, got string"),
                 ('kafka = { bootstrap = "x:1"; };\n', 1, "kafka", "unknown key")],
}
CASES = [(role,) + c for role in ROLE_BAD for c in COMMON_BAD + ROLE_BAD[role]]


@pytest.mark.parametrize("role,text,line,key,reason", CASES)
def test_bad_config_refused_naming_file_line_key(tmp_path, role, text, line, key, reason):
    path = tmp_path / f"{role}.cfg"
    path.write_text(text)
    r = subprocess.run([BIN[role], "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"{path}:{line}:" in r.stderr and f"'{key}'" in r.stderr and reason in r.stderr, r.stderr


@pytest.mark.parametrize("role", ["scheduler", "executor", "sink", "devkafka"])
def test_unreadable_config_and_help(tmp_path, role):
    missing = tmp_path / "absent.cfg"
    r = subprocess.run([BIN[role], "--config", str(missing)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and f"{missing}: cannot read" in r.stderr, r.stderr
    h = subprocess.run([BIN[role], "--help"], capture_output=True, text=True, timeout=30)
    assert h.returncode == 0 and "--config FILE" in h.stdout and "grpc.listen" in h.stdout
    v = subprocess.run([BIN[role], "--version"], capture_output=True, text=True, timeout=30)
    assert v.returncode == 0 and v.stdout.startswith(f"execmesh-{role} ")


def _field(number, wire, data):
    """One protobuf field: key varint (small numbers only) and, for length-delimited, the length."""
    key = bytes([(number << 3) | wire])
    if wire == 2:
        n, out = len(data), b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                break
        return key + out + data
    return key + data


def _exec_bytes(eid, handler=b"echo", extra=b""):
    return _field(1, 2, eid) + _field(2, 2, handler) + extra


def test_bad_bytes_and_protocol():
    """The bad-input rows beyond test_bad_records_and_bad_submits: NUL and
    invalid UTF-8 in every string, nested groups, an overlong varint and a
    huge repeated field on the requests topic (dead-lettered with the reason,
    or run when within the size caps); the same shapes and too many
    executions through Submit (INVALID_ARGUMENT naming them, nothing
    written); gRPC metadata too large or too many; HTTP/1.1 and random bytes
    on the gRPC port (connection closed). The services stay up and SERVING,
    the offsets move on, no sanitizer report."""
    import random
    import socket
    m = Mesh("bad-bytes")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink])
        sched = m.start_scheduler([ex])
        m.wait_assigned([sched], 6)
        req = m.topics["execmesh.requests"]
        req_start = m.kafka.end_offsets(req)

        header = lambda k, v: _field(4, 2, _field(1, 2, k) + _field(2, 2, v))  # noqa: E731
        dead_cases = {
            b"nul-id": (_exec_bytes(b"a\x00b"), "field 1 (id): not valid UTF-8 (or has a NUL byte)"),
            b"bad-utf8-handler": (_exec_bytes(b"bb-h", b"\xc3\x28"), "field 2 (handler): not valid UTF-8"),
            b"nul-header-value": (_exec_bytes(b"bb-hv", extra=header(b"k", b"a\x00b")),
                                  "field 4 (headers): value is not valid UTF-8 (or has NUL)"),
            b"bad-utf8-header-key": (_exec_bytes(b"bb-hk", extra=header(b"\xed\xa0\x80", b"v")),
                                     "field 4 (headers): key is not valid UTF-8"),
            b"nested-groups": (b"\x0b" * 5000, "undecodable"),
            b"overlong-varint": (_exec_bytes(b"bb-v") + b"\x28" + b"\xff" * 10 + b"\x01", "undecodable"),
        }
        # a huge repeated field within the size caps decodes and runs: 20,000 header entries
        many = _exec_bytes(b"bb-many-headers", extra=b"".join(header(b"h%d" % i, b"v") for i in range(20000)))
        p = m.kafka.producer()
        for k, (v, _) in dead_cases.items():
            p.produce(req, v, key=k)
        p.produce(req, many, key=b"bb-many-headers")
        p.produce(req, execution("bb-good").SerializeToString(), key=b"bb-good")
        assert p.flush(30) == 0

        # Submit: the same shapes, and too many executions; nothing written
        before = m.kafka.end_offsets(req)
        raw = sched.channel().unary_unary("/execmesh.v1.Scheduler/Submit")
        submit_cases = [
            (_field(1, 2, _exec_bytes(b"a\x00b")), "executions[0]: field 1 (id): not valid UTF-8 (or has a NUL byte)"),
            (_field(1, 2, _exec_bytes(b"ok")) + _field(1, 2, _exec_bytes(b"x", b"\xff")),
             "executions[1]: field 2 (handler): not valid UTF-8"),
            (_field(1, 2, _exec_bytes(b"x", extra=header(b"k", b"\x00"))), "field 4 (headers)"),
            (b"\x0b" * 5000, "cannot decode"),
            (_field(1, 2, b"") * 10001, "executions: 10001 executions, at most 10000 per Submit"),
        ]
        for body, text in submit_cases:
            with pytest.raises(grpc.RpcError) as e:
                raw(body, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (text, e.value.code(), e.value.details())
            assert text in e.value.details(), (text, e.value.details())

        # gRPC metadata over the limits (gRPC's 8 KiB soft / 16 KiB hard): refused, the server unharmed
        stub = m.stub(sched)
        small = pb.SubmitRequest(executions=[execution("bb-md")])
        for what, md in (("one 64 KiB header", [("x-big", "a" * 65536)]),
                         ("3,000 headers", [(f"x-h{i}", "v") for i in range(3000)])):
            with pytest.raises(grpc.RpcError) as e:
                stub.Submit(small, metadata=md, timeout=10)
            # one header over the limit fails the call; a header block past what HPACK takes closes the
            # connection (the client sees UNAVAILABLE)
            assert e.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE), \
                (what, e.value.code(), e.value.details())
            print(f"\n{what}: {e.value.code()} {e.value.details()}")
            assert probe(sched.grpc_addr) == 0, f"{what}: the scheduler is not SERVING after it"
        assert m.kafka.end_offsets(req) == before, "a refused Submit wrote to the requests topic"

        # not HTTP/2 on the gRPC port: the connection is closed
        host, port = sched.grpc_addr.rsplit(":", 1)
        rng = random.Random(15)
        for what, data in (("HTTP/1.1", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                           ("random bytes", bytes(rng.getrandbits(8) for _ in range(65536)))):
            with socket.create_connection((host, int(port)), timeout=10) as s:
                try:
                    s.sendall(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # closed while we were still sending: what we want
                s.settimeout(10)
                got = b""
                try:
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                        assert len(got) < 1 << 20, f"{what}: the server keeps answering"
                except ConnectionResetError:
                    pass
                except socket.timeout:
                    raise AssertionError(f"{what}: the connection was still open 10 s later")
        for proc in (sched, ex, sink):
            assert proc.alive() and probe(proc.grpc_addr) == 0, proc.name

        # the dead letters, named
        dead = m.kafka.read(m.topics["execmesh.dead"], m.dead_start, until=lambda r: len(r) >= len(dead_cases),
                            timeout=30, what=f"{len(dead_cases)} dead-letter records")
        reasons = {k: dict(h)["execmesh-error"].decode() for k, v, h in dead}
        assert set(reasons) == set(dead_cases), reasons
        for k, (_, text) in dead_cases.items():
            assert text in reasons[k], (k, reasons[k])
        got = results_by_id(m.kafka.read(m.topics["execmesh.results"], m.results_start,
                                         until=lambda r: {"bb-good", "bb-many-headers"} <= set(results_by_id(r)),
                                         timeout=30, what="the good and the many-headers results"))
        assert len(got["bb-good"]) == 1 and len(got["bb-many-headers"]) == 1, "an execution ran more than once"
        assert status_name(got["bb-good"][0].status) == "SUCCEEDED"
        assert status_name(got["bb-many-headers"][0].status) == "SUCCEEDED"
        # its 20,000 headers, as they came (produced without a traceparent: none is added)
        assert len(got["bb-many-headers"][0].headers) == 20000
        end = m.kafka.end_offsets(req)
        assert sum(end.values()) - sum(req_start.values()) == len(dead_cases) + 2
        m.wait_committed(req_start, end)
    finally:
        m.close()
