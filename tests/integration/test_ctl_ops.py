# SPDX-License-Identifier: Apache-2.0
"""execmeshctl as the daily-operations tool, every subcommand against a real
mesh (devkafka, one sink, one executor, one scheduler whose input.max_bytes
is small so oversize records are dead-lettered):

- submit --file: the acknowledged ids are exactly the good lines sent, the
  bad lines are named by line number and skipped (exit 1), --strict refuses
  the whole file and writes nothing (exit 2); --wait prints every final
  result; every execution ran exactly once and the group's committed
  offsets reach the end of the requests topic;
- the progress line on a terminal (tmux): rate, done/total and ETA while it
  runs, rewritten in place, ending at total;
- get (0 SUCCEEDED, 1 another final status, 3 nothing in time), tail (its
  filters, --count, a live follow), trace (both attempts of a retried
  execution with their times, executor and trace id; an attempt known only
  from the final result's history);
- health over ipv4: and dns:///; pause and resume (the scheduler's paused
  gauge), a wrong token refused; drain --wait stops a scheduler (exit 0);
- execmesh_safe_to_stop: 1 on idle replicas, 0 where an execution runs or
  waits for its result, 1 again once it is stored;
- dead list shows each dead letter with its reason and whether it is valid
  now; dead replay (after a scheduler with a larger input.max_bytes took
  over) resubmits exactly the now-valid records, an id-less one under the id
  of its origin, skips the invalid ones, commits its group to the end, and
  a second run replays nothing;
- usage errors exit 2 naming the bad input.
"""
import base64
import json
import os
import re
import socket
import subprocess
import time
import uuid

from mesh import BIN, Mesh, execution, pb, read_all_results, wait_for

PARTITIONS = 4
REQ, RES, DEAD = "execmesh.requests", "execmesh.results", "execmesh.dead"


def ctl(*args, input=None, timeout=60):
    return subprocess.run([BIN["ctl"], *args], capture_output=True, text=True, input=input, timeout=timeout)


def kargs(m):
    return ["--bootstrap", m.kafka.bootstrap]


def write_lines(path, lines):
    with open(path, "w") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def check_usage_errors(m, sched):
    for cmd in (["submit"], ["cancel"], ["get"], ["tail"], ["trace"], ["health"], ["drain"], ["pause"],
                ["resume"], ["dead"], ["dead", "replay"], ["status"]):
        r = ctl(*cmd, "--help")
        assert r.returncode == 0 and "Usage: execmeshctl" in r.stdout, (cmd, r)
    r = ctl("--help")
    assert r.returncode == 0 and all(f"  {c} " in r.stdout for c in ("get", "tail", "trace", "drain", "dead")), r.stdout
    cases = [
        (["submit", "--file", "/nonexistent/jobs.jsonl"], "/nonexistent/jobs.jsonl"),
        (["submit", "--file", "-", "--rate", "fast"], "--rate fast"),
        (["submit", "--file", "-", "--handler", "echo"], "--handler"),
        (["get"], "exactly one execution id"),
        (["tail", "--status", "SUCCEEDED,BOGUS"], "'BOGUS' is not a status"),
        (["tail", "--count", "-3"], "--count -3"),
        (["health", "--target", "unix:/tmp/x"], "unix:/tmp/x"),
        (["drain", "127.0.0.1:1"], "--token-file is required"),
        (["pause", "--token-file", "/nonexistent/token", "127.0.0.1:1"], "/nonexistent/token"),
        (["resume", "--token-file", sched.admin_token_file, "no-port"], "no-port"),
        (["dead", "purge"], "unknown subcommand 'purge'"),
        (["frobnicate"], "unknown command 'frobnicate'"),
    ]
    for args, text in cases:
        r = ctl(*args)
        assert r.returncode == 2 and text in r.stderr, (args, r.returncode, r.stderr)
    r = ctl("health", "--target", "dns:///no-such-host.invalid:7100")
    assert r.returncode == 3 and "cannot resolve no-such-host.invalid" in r.stderr, r


def check_submit_file(m, tmp):
    """Good and bad lines; the ids acknowledged are exactly the good lines."""
    good = [{"id": f"f-{i}", "handler": "echo", "payload": f"hello {i} \u00e9\\n", "headers": {"tenant": "t1"},
             "timeout_ms": 10000, "max_attempts": 1} for i in range(40)]
    good.append({"id": "f-b64", "handler": "echo", "payload_b64": base64.b64encode(b"\x00\x01bin").decode()})
    lines = [json.dumps(g) for g in good[:10]]
    lines += ['{"id": "bad-json", "handler": "echo"', "",  # a blank line is no line
              '{"id": "no-handler", "payload": "x"}', '{"id": "typo", "handler": "echo", "paylod": "x"}']
    lines += [json.dumps(g) for g in good[10:]]
    lines.append(json.dumps({"handler": "echo", "payload": "no id"}))
    path = write_lines(os.path.join(tmp, "jobs.jsonl"), lines)
    r = ctl("submit", "--file", path, "--target", f"ipv4:{m.sched_addr}", "--rate", "400/s", "--batch", "7",
            "--no-progress")
    assert r.returncode == 1, (r.returncode, r.stderr)  # lines were refused: not everything went in
    for no, what in ((11, "column"), (13, "\"handler\" is required"), (14, "unknown key \"paylod\"")):
        assert re.search(rf"{re.escape(path)}:{no}: .*{re.escape(what)}.*\(line skipped\)", r.stderr), (no, r.stderr)
    ids = r.stdout.split()
    assert ids[:-1] == [g["id"] for g in good] and len(ids) == len(good) + 1, ids
    assert re.fullmatch(r"[0-9a-f]{32}", ids[-1]), ids[-1]  # the id-less line got a fresh id
    assert f"{len(good) + 1} of {len(good) + 4} lines acknowledged, 3 refused (lines 11, 13, 14)" in r.stderr, r.stderr

    # --strict from stdin: one bad line and nothing is written
    before = m.kafka.end_offsets(m.topics[REQ])
    r = ctl("submit", "--file", "-", "--strict", "--target", f"ipv4:{m.sched_addr}",
            input='{"id":"s-1","handler":"echo"}\n{"id":"s-2"}\n')
    assert r.returncode == 2 and "(stdin):2: \"handler\" is required" in r.stderr and "nothing submitted" in r.stderr, r
    assert m.kafka.end_offsets(m.topics[REQ]) == before

    # --wait: every final result, as JSON lines, exit 0 when all SUCCEEDED
    waited = [{"id": f"w-{i}", "handler": "echo", "payload": f"w{i}"} for i in range(12)]
    r = ctl("submit", "--file", "-", "--wait", "--wait-ms", "30000", "--target", f"ipv4:{m.sched_addr}",
            "--results-topic", m.topics[RES], *kargs(m), input="".join(json.dumps(w) + "\n" for w in waited))
    assert r.returncode == 0, (r.returncode, r.stderr)
    res = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(x["id"] for x in res) == sorted(w["id"] for w in waited), res
    assert all(x["status"] == "SUCCEEDED" and x["final"] and x["output"] == f"w{x['id'][2:]}" for x in res), res

    # the one-execution form still works: waits for the final result
    r = ctl("submit", "--handler", "echo", "--payload", "single", "--id", "one-1", "--header", "tenant=t2",
            "--target", f"ipv4:{m.sched_addr}", "--results-topic", m.topics[RES], *kargs(m))
    assert r.returncode == 0, r
    one = json.loads(r.stdout)
    assert (one["id"], one["status"], one["output"], one["headers"]["tenant"]) == ("one-1", "SUCCEEDED", "single",
                                                                                  "t2"), one
    return ids + [w["id"] for w in waited] + ["one-1"]


def check_progress_on_a_terminal(m, tmp):
    """tmux: the progress line shows rate, done/total and ETA while it runs and ends at total."""
    n = 60
    path = write_lines(os.path.join(tmp, "tty.jsonl"),
                       [{"id": f"tty-{i}", "handler": "echo", "payload": "t"} for i in range(n)])
    sock = os.path.join(tmp, "tmux.sock")
    tmux = ["tmux", "-S", sock]
    subprocess.run(tmux + ["-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "50", "sh"], check=True,
                   timeout=10, env={**os.environ, "PS1": "$ "})
    try:
        cmd = (f"{BIN['ctl']} submit --file {path} --rate 30/s --target ipv4:{m.sched_addr} > {tmp}/tty.ids;"
               f" echo EXIT=$?")
        subprocess.run(tmux + ["send-keys", cmd, "Enter"], check=True, timeout=10)
        seen = []

        def pane():
            return subprocess.run(tmux + ["capture-pane", "-p"], capture_output=True, text=True, timeout=10).stdout

        def done():
            text = pane()
            seen.extend(re.findall(r"submitted (\d+)/60 \(\d+%\) [0-9.]+/s ETA \d+s", text))
            return re.search(r"^EXIT=\d+", text, re.M) and text
        text = wait_for(done, 30, "execmeshctl submit in tmux to finish", interval=0.05)
        mid = [int(x) for x in seen if 0 < int(x) < n]
        assert mid, f"no progress line with an ETA while it ran; last screen:\n{text}"
        final = re.findall(r"submitted (\d+)/60 \(100%\) ([0-9.]+)/s in \d+s", text)
        assert final and final[-1][0] == "60", text
        assert 15 <= float(final[-1][1]) <= 45, text  # the rate it was paced at, 30/s
        assert re.search(r"^EXIT=0$", text, re.M), text
        # in place: one progress line on the screen, not one per update
        assert len(re.findall(r"^submitted ", text, re.M)) == 1, text
        with open(f"{tmp}/tty.ids") as f:
            assert f.read().split() == [f"tty-{i}" for i in range(n)]
    finally:
        subprocess.run(tmux + ["kill-server"], timeout=10)
    return [f"tty-{i}" for i in range(n)]


def check_get_tail_trace(m, tmp):
    trace_id = uuid.uuid4().hex
    tp = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    jobs = [{"id": "g-fail", "handler": "fail", "payload": "boom", "max_attempts": 2, "headers": {"traceparent": tp}}]
    r = ctl("submit", "--file", "-", "--target", f"ipv4:{m.sched_addr}", input=json.dumps(jobs[0]) + "\n")
    assert r.returncode == 0 and r.stdout.split() == ["g-fail"], r

    # get: the final result; 0 SUCCEEDED, 1 otherwise, 3 none in time
    r = ctl("get", "f-3", "--results-topic", m.topics[RES], *kargs(m))
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    assert got["id"] == "f-3" and got["status"] == "SUCCEEDED" and got["output"] == "hello 3 \u00e9\\n", got
    assert got["handler"] == "echo" and got["headers"]["tenant"] == "t1", got
    r = ctl("get", "f-b64", "--results-topic", m.topics[RES], *kargs(m))
    assert r.returncode == 0 and json.loads(r.stdout)["output_base64"] == base64.b64encode(b"\x00\x01bin").decode()
    r = ctl("get", "g-fail", "--results-topic", m.topics[RES], "--timeout-ms", "30000", *kargs(m))
    assert r.returncode == 1, r
    fin = json.loads(r.stdout)
    assert fin["final"] and fin["attempt"] == 2 and fin["status"] in ("FAILED", "EXHAUSTED"), fin
    r = ctl("get", "no-such-execution", "--results-topic", m.topics[RES], "--timeout-ms", "1500", *kargs(m))
    assert r.returncode == 3 and "no result for no-such-execution" in r.stderr, r

    # trace: both attempts reached a sink; their times in order, the executor, the trace id
    r = ctl("trace", "g-fail", "--json", "--results-topic", m.topics[RES], *kargs(m))
    assert r.returncode == 0, r
    t = json.loads(r.stdout)
    assert t["trace_id"] == trace_id and t["handler"] == "fail" and t["final_status"] == fin["status"], t
    assert [a["attempt"] for a in t["attempts"]] == [1, 2] and [a["final"] for a in t["attempts"]] == [False, True]
    for a in t["attempts"]:
        assert a["source"] == "result" and a["executor"] == "executor-0" and "boom" in a["error"], a
        assert 0 < a["submitted_unix_ms"] <= a["dispatched_unix_ms"] <= a["started_unix_ms"] <= \
            a["finished_unix_ms"] <= a["published_unix_ms"], a
        assert a["trace_id"] == trace_id, a
    assert t["attempts"][0]["status"] == "FAILED", t
    r = ctl("trace", "g-fail", "--results-topic", m.topics[RES], *kargs(m))
    assert r.returncode == 0 and f"trace {trace_id}" in r.stdout and "attempt 2" in r.stdout, r.stdout
    print(r.stdout)

    # an attempt that never reached a sink (its executor died) is only in the final result's history
    p = m.kafka.producer()
    hist = [pb.Attempt(attempt=1, status=pb.FAILED, executor="executor-x", error="first", started_unix_ms=1000,
                       finished_unix_ms=1100),
            pb.Attempt(attempt=2, status=pb.FAILED, executor="", error="executor died", started_unix_ms=2000),
            pb.Attempt(attempt=3, status=pb.EXHAUSTED, executor="executor-y", error="last", started_unix_ms=3000,
                       finished_unix_ms=3100)]
    for res in (pb.Result(id="synthetic-1", attempt=1, status=pb.FAILED, executor="executor-x", error="first",
                          submitted_unix_ms=900, started_unix_ms=1000, finished_unix_ms=1100, handler="echo"),
                pb.Result(id="synthetic-1", attempt=3, status=pb.EXHAUSTED, executor="executor-y", error="last",
                          submitted_unix_ms=900, started_unix_ms=3000, finished_unix_ms=3100, final=True,
                          history=hist, handler="echo")):
        p.produce(m.topics[RES], res.SerializeToString(), key="synthetic-1")
    assert p.flush(30) == 0
    r = ctl("trace", "synthetic-1", "--json", "--results-topic", m.topics[RES], *kargs(m))
    assert r.returncode == 0, r
    t = json.loads(r.stdout)
    assert [(a["attempt"], a["source"]) for a in t["attempts"]] == [(1, "result"), (2, "history"), (3, "result")], t
    assert t["attempts"][1]["error"] == "executor died" and t["final_status"] == "EXHAUSTED", t
    r = ctl("trace", "synthetic-1", "--results-topic", m.topics[RES], *kargs(m))
    assert "never reached a sink" in r.stdout, r.stdout
    r = ctl("trace", "no-such-execution", "--results-topic", m.topics[RES], *kargs(m))
    assert r.returncode == 1 and "no result of no-such-execution" in r.stderr, r

    # tail: filters over what is there, then a live follow
    r = ctl("tail", "--from-beginning", "--id-prefix", "f-", "--count", "41", "--timeout-ms", "20000",
            "--results-topic", m.topics[RES], *kargs(m))
    assert r.returncode == 0, r
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 41 and all(x["id"].startswith("f-") for x in lines), lines
    r = ctl("tail", "--from-beginning", "--status", "failed,exhausted", "--handler", "fail", "--final", "--count",
            "1", "--timeout-ms", "20000", "--results-topic", m.topics[RES], *kargs(m))
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == "g-fail", r
    r = ctl("tail", "--from-beginning", "--handler", "no-such-handler", "--count", "1", "--timeout-ms", "1500",
            "--results-topic", m.topics[RES], *kargs(m))
    assert r.returncode == 1 and r.stdout == "" and "0 of --count 1" in r.stderr, r
    err = open(os.path.join(tmp, "tail.err"), "w+")
    live = subprocess.Popen([BIN["ctl"], "tail", "--id-prefix", "live-", "--count", "3", "--timeout-ms", "30000",
                             "--results-topic", m.topics[RES], *kargs(m)], stdout=subprocess.PIPE, stderr=err,
                            text=True)
    try:
        wait_for(lambda: "following" in open(err.name).read(), 20, "tail to be following the results topic")
        r = ctl("submit", "--file", "-", "--target", f"ipv4:{m.sched_addr}",
                input="".join(json.dumps({"id": i, "handler": "echo"}) + "\n" for i in ("x-0", "live-1", "live-2",
                                                                                         "live-3")))
        assert r.returncode == 0, r
        out, _ = live.communicate(timeout=40)
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    assert live.returncode == 0 and sorted(json.loads(x)["id"] for x in out.splitlines()) == \
        ["live-1", "live-2", "live-3"], out
    return ["g-fail", "x-0", "live-1", "live-2", "live-3"]


def check_health_pause(m, procs):
    sched = procs[-1]
    r = ctl("health", "--target", "ipv4:" + ",".join(p.grpc_addr for p in procs))
    assert r.returncode == 0 and r.stdout.count(" SERVING") == 3, r
    port = sched.grpc_addr.rsplit(":", 1)[1]
    addrs = sorted({ai[4][0] for ai in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)})
    r = ctl("health", "--target", f"dns:///localhost:{port}")
    rows = dict(re.findall(r"^\[?([0-9a-f.:]+)\]?:\d+ \(localhost\) (\S+)", r.stdout, re.M))
    assert sorted(rows) == addrs and rows.get("127.0.0.1") == "SERVING", (addrs, r.stdout)
    assert r.returncode == (0 if all(v == "SERVING" for v in rows.values()) else 1), r

    metrics = sched.ports["metrics"]
    r = ctl("pause", "--token-file", sched.admin_token_file, metrics)
    assert r.returncode == 0 and r.stdout.strip() == f"{metrics} paused", r
    wait_for(lambda: sched.metric("execmesh_scheduler_paused") == 1, 20, "the scheduler's paused gauge to be 1")
    bad = os.path.join(m.dir, "wrong.token")
    with open(bad, "w") as f:
        f.write("not-the-token-" + uuid.uuid4().hex + "\n")
    r = ctl("resume", "--token-file", bad, metrics)
    assert r.returncode == 3 and "HTTP 403" in r.stderr, r
    assert sched.metric("execmesh_scheduler_paused") == 1
    r = ctl("resume", "--token-file", sched.admin_token_file, metrics)
    assert r.returncode == 0 and r.stdout.strip() == f"{metrics} resumed", r
    wait_for(lambda: sched.metric("execmesh_scheduler_paused") == 0, 20, "the scheduler's paused gauge to be 0")


def check_safe_to_stop(m, sched, ex, sink):
    """execmesh_safe_to_stop: 1 on idle replicas; 0 on the scheduler and the
    executor while they hold a running execution; 1 again once its result is
    stored. execmesh_serving 1 and execmesh_draining 0 meanwhile."""
    procs = (sched, ex, sink)
    for p in procs:
        wait_for(lambda p=p: p.metric("execmesh_safe_to_stop") == 1, 20, f"{p.name} idle: safe to stop")
        assert p.metric("execmesh_serving") == 1 and p.metric("execmesh_draining") == 0, p.name
    eid = f"hold-{uuid.uuid4().hex[:8]}"
    m.stub(sched).Submit(pb.SubmitRequest(executions=[execution(eid, "sleep", b"2500")]), timeout=30)
    wait_for(lambda: ex.metric("execmesh_executor_running") == 1, 20, "the sleep to run")
    assert ex.metric("execmesh_safe_to_stop") == 0 and sched.metric("execmesh_safe_to_stop") == 0
    for p in procs:
        wait_for(lambda p=p: p.metric("execmesh_safe_to_stop") == 1, 30, f"{p.name} safe to stop after the sleep")
    got = read_all_results(m)
    assert [r.status for r in got[eid]] == [pb.SUCCEEDED], got.get(eid)
    return [eid]


def check_dead_and_drain(m, sched, ex):
    """Dead letters from the small input.max_bytes; the scheduler drained; a
    larger limit makes the oversize ones valid; replay resubmits exactly those."""
    p = m.kafka.producer()
    big = b"z" * 5000
    valid = {b"d-1": execution("d-1", "echo", big), b"d-2": execution("d-2", "echo", big)}
    for k, e in valid.items():
        p.produce(m.topics[REQ], e.SerializeToString(), key=k, partition=0)
    p.produce(m.topics[REQ], execution("", "echo", big).SerializeToString(), key=b"no-id", partition=1)
    p.produce(m.topics[REQ], b"\xff\xfe not protobuf", key=b"garbage", partition=1)
    p.produce(m.topics[REQ], b"\x0a\x03\xff\xfe\xfd\x12\x04echo", key=b"bad-utf8", partition=2)
    assert p.flush(30) == 0
    noid_offset = m.kafka.end_offsets(m.topics[REQ])[1] - 2
    m.kafka.read(m.topics[DEAD], m.dead_start, until=lambda r: len(r) >= 5, timeout=30, what="5 dead letters")
    dk = ["--dead-topic", m.topics[DEAD], *kargs(m)]
    r = ctl("dead", "list", "--json", *dk)
    assert r.returncode == 0, r
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 5 and "5 dead letters" in r.stderr and "3 valid now" in r.stderr, (rows, r.stderr)
    byk = {x["key"]: x for x in rows}
    origin = f"{m.topics[REQ]}/1/{noid_offset}"
    assert {k: (v["valid"], v["id"]) for k, v in byk.items()} == {
        "d-1": (True, "d-1"), "d-2": (True, "d-2"), "no-id": (True, origin),
        "garbage": (False, ""), "bad-utf8": (False, "")}, byk
    assert all(v["reason"].startswith("too_large") for k, v in byk.items() if v["valid"]), byk
    assert byk["garbage"]["reason"].startswith("undecodable") and byk["garbage"]["bytes"] == 15, byk
    r = ctl("dead", "list", *dk)
    assert r.returncode == 0 and r.stdout.count("VALID now") == 3 and r.stdout.count("INVALID") == 2, r.stdout

    # drain the strict scheduler through its admin endpoint; a lenient one takes over
    r = ctl("drain", "--token-file", sched.admin_token_file, "--wait", "--timeout-ms", "60000", sched.ports["metrics"])
    assert r.returncode == 0, r
    assert re.search(rf"^{re.escape(sched.ports['metrics'])} draining$", r.stdout, re.M) and \
        f"{sched.ports['metrics']} gone" in r.stdout, r.stdout
    assert sched.wait_exit(30) == 0
    new = m.start_scheduler([ex], "scheduler-1")
    m.wait_assigned([new], PARTITIONS)
    m.sched_addr = new.grpc_addr

    group = f"replay-{uuid.uuid4().hex[:8]}"
    rk = ["--target", f"ipv4:{new.grpc_addr}", "--group", group, "--no-progress", *dk]
    r = ctl("dead", "replay", "--dry-run", *rk)
    assert r.returncode == 0 and r.stdout.count("would replay") == 3, r
    assert all(v < 0 for v in m.kafka.committed(group, m.topics[DEAD]).values())  # a dry run commits nothing
    r = ctl("dead", "replay", "--rate", "20/s", *rk)
    assert r.returncode == 0, r
    replayed = sorted(x.split()[1] for x in r.stdout.splitlines())
    assert replayed == sorted(["d-1", "d-2", origin]), r.stdout
    assert r.stderr.count("still invalid") == 2 and "5 read, 3 replayed, 2 skipped" in r.stderr, r.stderr
    assert m.kafka.committed(group, m.topics[DEAD]) == m.kafka.end_offsets(m.topics[DEAD])
    r = ctl("dead", "replay", *rk)
    assert r.returncode == 0 and r.stdout == "" and "0 read, 0 replayed" in r.stderr, r
    return new, replayed


def test_execmeshctl_daily_operations():
    t0 = time.monotonic()
    m = Mesh("ctl-ops", partitions=PARTITIONS)
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "handlers.retry_initial_ms=50"])
        sched = m.start_scheduler([ex], args=["--set", "input.max_bytes=4096"])
        m.wait_assigned([sched], PARTITIONS)
        m.sched_addr = sched.grpc_addr
        tmp = m.dir
        check_usage_errors(m, sched)
        ids = check_submit_file(m, tmp)
        ids += check_progress_on_a_terminal(m, tmp)
        ids += check_get_tail_trace(m, tmp)
        check_health_pause(m, [sink, ex, sched])
        ids += check_safe_to_stop(m, sched, ex, sink)
        m.wait_lag_zero(30)
        new, replayed = check_dead_and_drain(m, sched, ex)
        ids += replayed
        m.wait_lag_zero(30)
        got = read_all_results(m)
        finals = {i: [r for r in got.get(i, []) if r.final] for i in ids}
        missing = [i for i, f in finals.items() if not f]
        assert not missing, f"no final result for {missing[:5]}"
        twice = {i: len(f) for i, f in finals.items() if len(f) != 1}
        assert not twice, f"ran more than once: {twice}"
        for i in replayed:
            assert finals[i][0].status == pb.SUCCEEDED and len(finals[i][0].output) == 5000, finals[i][0]
        print(f"execmeshctl ops test: {time.monotonic() - t0:.1f} s")
    finally:
        m.close()
