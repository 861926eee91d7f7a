#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/)
from the inputs the unit and integration tests use: the table rows of
tests/unit/test_execution.c, the bad records and requests of
tests/integration/test_bad_input.py, the example configs in deploy/ and
the configs the integration tests write. The files are committed; run this
again after changing it (it rewrites corpus/ and leaves regressions/ alone).
Self-contained: a few lines of protobuf encoding, no generated stubs."""
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "corpus")


def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def vfield(n, v):
    return varint(n << 3) + varint(v)


def lfield(n, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(n << 3 | 2) + varint(len(data)) + data


def attempt(a, status, executor="", error="", exit_code=0, started=0, finished=0):
    b = vfield(1, a) + vfield(2, status)
    if executor:
        b += lfield(3, executor)
    if error:
        b += lfield(4, error)
    if exit_code:
        b += vfield(5, exit_code)
    if started:
        b += vfield(6, started)
    if finished:
        b += vfield(7, finished)
    return b


def execution(id="", handler="echo", payload=b"", headers=(), timeout=0, max_attempts=0, attempt_no=0,
              submitted=0, deadline=0, history=(), deaths=0):
    b = b""
    if id:
        b += lfield(1, id)
    if handler:
        b += lfield(2, handler)
    if payload:
        b += lfield(3, payload)
    for k, v in headers:
        b += lfield(4, lfield(1, k) + lfield(2, v))
    if timeout:
        b += vfield(5, timeout)
    if max_attempts:
        b += vfield(6, max_attempts)
    if attempt_no:
        b += vfield(7, attempt_no)
    if submitted:
        b += vfield(8, submitted)
    if deadline:
        b += vfield(9, deadline)
    for h in history:
        b += lfield(10, h)
    if deaths:
        b += vfield(11, deaths)
    return b


def result(id="abc", attempt_no=1, status=1, output=b"", error="", exit_code=0, executor="executor-1",
           submitted=0, started=0, finished=0, headers=(), final=True, history=(), retry_delay=0):
    b = lfield(1, id) + vfield(2, attempt_no) + vfield(3, status)
    if output:
        b += lfield(4, output)
    if error:
        b += lfield(5, error)
    if exit_code:
        b += vfield(6, exit_code)
    b += lfield(7, executor)
    if submitted:
        b += vfield(8, submitted)
    b += vfield(9, started) + vfield(10, finished)
    for k, v in headers:
        b += lfield(11, lfield(1, k) + lfield(2, v))
    if final:
        b += vfield(12, 1)
    for h in history:
        b += lfield(13, h)
    if retry_delay:
        b += vfield(14, retry_delay)
    return b


T0 = 1700000000123
EXECUTIONS = {
    "echo": execution("job-7", "echo", b"hello, execmesh", timeout=2500, submitted=T0,
                      headers=[("tenant", "acme")]),
    "no-id": execution("", "sha256", b"pay\0load", submitted=T0),
    "retry": execution("r-1", "fail", b"x", max_attempts=3, attempt_no=2, submitted=T0,
                       history=[attempt(1, 2, "executor-1", "exit 1", 1, T0, T0 + 5)]),
    "quarantine": execution("poison", "exec-crash", b"", attempt_no=3, deaths=2, deadline=T0 + 60000,
                            history=[attempt(1, 2, "", "the executor died", 0, 0, T0),
                                     attempt(2, 2, "executor-2", "the executor died running it alone")]),
    "lifecycle": bytes([0x48, 0x90, 0x4E, 0x52, 0x04, 0x08, 0x01, 0x10, 0x02, 0x52, 0x02, 0x08, 0x02,
                        0x58, 0x02, 0x38, 0x03, 0x30, 0x05]),
    "unknown-fields": bytes([0x12, 0x01, ord("x"), 0xA0, 0x01, 0x05, 0xAA, 0x01, 0x01, ord("y"), 0xAD, 0x01,
                             1, 2, 3, 4]),
    "utf8-names": execution("caf\u00e9-\u20ac", "\U0001F600", b"\xff\xfe", headers=[("k\u00e9", "v\u20ac")]),
    "empty": b"",
}
# tests/unit/test_execution.c inspect_refuses_with_a_reason and test_bad_input.py's bad records
BAD_RECORDS = {
    "bad-id-utf8": b"\x0a\x05ab\xffcd",
    "handler-nul": b"\x12\x03a\0b",
    "id-as-varint": b"\x08\x01",
    "payload-i32": b"\x1d\x01\x02\x03\x04",
    "header-key-utf8": b"\x22\x04\x0a\x02\xc3\x28",
    "header-entry-varint": b"\x22\x02\x08\x01",
    "truncated": b"\x0a\x09short",
    "overlong-varint": b"\x38\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    "group": b"\x0b\x0c",
    "garbage": b"\xff\xfe\x00 this is not protobuf \x07\x07",
    "history-bad-utf8": b"\x52\x04\x22\x02\xc3\x28",
    "history-attempt-bytes": b"\x52\x02\x0a\x00",
    "bad-utf8-id": b"\x0a\x03\xff\xfe\xfd\x12\x04echo",
}
RESULTS = {
    "succeeded": result("abc", 1, 1, b"hello", "", 0, "executor-1", T0, T0 + 1, T0 + 2, [("tenant", "acme")]),
    "timed-out-retry": result("abc", 2, 3, b"", "too slow", 0, "executor-7", T0, T0, T0 + 30000, final=False,
                              retry_delay=1500, history=[attempt(1, 2, "executor-1", "exit 3", 3)]),
    "failed-exit": result("f3-1", 1, 2, b"", "exit 3", 3, "executor-2", final=True),
    "negative-exit": result("sig", 1, 2, b"", "killed by signal 9", -9, "executor-1"),
    "exhausted": result("p", 3, 5, b"", "quarantined after 2 executor deaths", 0, "",
                        history=[attempt(1, 2), attempt(2, 2, "executor-2")]),
    "cancelled": result("c-1", 1, 6, b"", "cancelled while it waited in Kafka", 0, ""),
    "bare": lfield(1, "x"),
}


def submit(*execs):
    return b"".join(lfield(1, e) for e in execs)


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    for name, b in list(EXECUTIONS.items()) + list(BAD_RECORDS.items()):
        write("records", name, b)
    for name, b in RESULTS.items():
        write("result", name, b)
    write("result", "garbage", BAD_RECORDS["garbage"])

    # Submit: test_bad_input.py's refusals, and accepted batches
    write("submit", "one", submit(EXECUTIONS["echo"]))
    write("submit", "batch", submit(*(execution(f"e-{i}", "echo", f"payload {i}".encode()) for i in range(5))))
    write("submit", "no-ids", submit(execution("", "sleep", b"20"), execution("", "sha256", b"abc")))
    write("submit", "full", submit(execution("full", "echo", b"p", [("a", "b"), ("c", "d")], 100, 3, 9, 5,
                                             T0 + 1000, [attempt(1, 2)], 1)))
    write("submit", "empty", b"")
    write("submit", "handler-missing", submit(execution("a", "echo"), execution("b", "")))
    write("submit", "payload-large", submit(execution("c", "echo", b"x" * 2048)))
    write("submit", "undecodable", b"\xff\xff\xff\xff")
    write("submit", "bad-utf8", submit(BAD_RECORDS["bad-utf8-id"]))

    write("cancel", "one", lfield(1, "job-7"))
    write("cancel", "several", b"".join(lfield(1, f"id-{i}") for i in range(4)))
    write("cancel", "empty-id", lfield(1, "") + lfield(1, "x"))
    write("cancel", "long-id", lfield(1, "i" * 300))
    write("cancel", "none", b"")
    write("cancel", "undecodable", b"\xff\xff\xff\xff")

    # Execute: what dispatch sends (records with the mesh's fields appended)
    dispatched = [EXECUTIONS[k] + vfield(7, 1) for k in ("echo", "no-id", "retry")]
    write("execute", "batch", b"".join(lfield(1, e) for e in dispatched))
    write("execute", "alone", lfield(1, EXECUTIONS["quarantine"] + vfield(7, 3)) + vfield(2, 1) + vfield(3, 1))
    write("execute", "alone-two", lfield(1, dispatched[0]) + lfield(1, dispatched[1]) + vfield(2, 1))
    write("execute", "report-finished", lfield(1, dispatched[0]) + vfield(3, 1))
    write("execute", "empty", b"")
    write("execute", "not-an-execution", lfield(1, b"\x08\x01"))
    write("execute", "undecodable", b"\xff\xff\xff\xff")

    # Publish: a byte for the size limit (< 128: 1 MB), then the request
    pub = b"".join(lfield(1, r) for r in RESULTS.values())
    write("publish", "batch", b"\x00" + pub)
    write("publish", "tight-limit", b"\xf0" + lfield(1, RESULTS["succeeded"]))
    write("publish", "no-id", b"\x00" + lfield(1, vfield(2, 1)))
    write("publish", "bad-result", b"\x00" + lfield(1, b"\x0a\x09short"))
    write("publish", "empty", b"\x00")

    for name, svc in (("overall", ""), ("scheduler", "execmesh.v1.Scheduler"), ("executor", "execmesh.v1.Executor"),
                      ("unknown", "no.such.Service")):
        write("health", name, lfield(1, svc) if svc else b"")
    write("health", "undecodable", b"\x0a\x05ab")

    # config: the service byte (0 scheduler, 1 executor, 2 sink, 3 devkafka), then the file
    svc_byte = {"scheduler": b"\x00", "executor": b"\x01", "sink": b"\x02", "devkafka": b"\x03"}
    for role in ("scheduler", "executor", "sink"):
        with open(os.path.join(ROOT, "deploy", f"{role}.cfg"), "rb") as f:
            write("config", f"deploy-{role}", svc_byte[role] + f.read())
    texts = {
        "scheduler": [
            b'kafka = {\n  linger_ms = "five";\n};\n',
            b'grpc = {\n  listen = "0.0.0.0:0";\n};\n',
            b'resources = { pg = { name = "db:pg"; concurrency = 4; rate = 40; burst = 4; }; };\n'
            b'handlers = { psql = { resources = [ "db:pg" ]; }; };\n',
            b'resources = {\n  a = { name = "db:x"; };\n  b = { name = "db:x"; };\n};\n',
            b'resources = { pg = { concurrency = 4; }; };\nhandlers = {\n  psql = { resources = [ "db:pg" ]; };\n};\n',
            b'kafka = { bootstrap = "127.0.0.1:9092"; };\n--set\nkafka.linger_ms=5\nsubmit.max_executions=10\n',
            b'admin = { enabled = true; };\n',
        ],
        "executor": [
            b'handlers = {\n  concurrency = "eight";\n};\n',
            b'kafka = { bootstrap = "x:1"; };\n',
            b'handlers = {\n  builtin = [ "echo" ];\n  exec = [ "upper", "slow" ];\n};\nexec = {\n'
            b'  upper = { argv = [ "/usr/bin/tr", "a-z", "A-Z" ]; memory_mb = 512; open_files = 64; };\n'
            b'  slow = { argv = [ "/bin/sleep", "1" ]; default_timeout_ms = 400; no_retry_exit_codes = [ "3" ]; };\n};\n',
            b'handlers = { exec = [ "gone" ]; };\nexec = {\n  gone = { argv = [ "/nonexistent/tool" ]; };\n};\n',
            b'builtin = { echo = { max_attempts = 3; retry_factor = 2; }; };\n',
            b'tls = { cert_file = "a.pem"; };\n',
            b'--set\nexec.x.argv=/bin/true,a\nhandlers.exec=x\n',
        ],
        "sink": [b'kafka = {\n  linger_ms = "five";\n};\n', b'sink = { max_inflight_results = 0; };\n'],
        "devkafka": [b'devkafka = { brokers = 3; partitions = 2; topics = [ "a:1", "b" ]; };\n'],
    }
    for role, items in texts.items():
        for i, t in enumerate(items):
            write("config", f"{role}-{i}", svc_byte[role] + t)

    # admin HTTP: the admin byte (odd: admin.enabled), then METHOD\nURL[\nAUTHORIZATION]
    tok = b"Bearer fuzz-admin-token-0123456789abcdef"
    for name, req in {"metrics": b"\x00GET\n/metrics", "pause": b"\x01POST\n/admin/pause\n" + tok,
                      "resume-wrong-token": b"\x01POST\n/admin/resume\nBearer nope",
                      "no-credential": b"\x01POST\n/admin/pause", "admin-off": b"\x00POST\n/admin/pause\n" + tok,
                      "brokers": b"\x01POST\n/admin/brokers/down\n" + tok, "rtt": b"\x01POST\n/admin/rtt/250\n" + tok,
                      "rtt-bad": b"\x01POST\n/admin/rtt/-1\n" + tok, "unknown": b"\x00GET\n/nope",
                      "put": b"\x01PUT\n/metrics"}.items():
        write("admin_http", name, req)


if __name__ == "__main__":
    main()
