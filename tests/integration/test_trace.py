# SPDX-License-Identifier: Apache-2.0
"""Trace context and correlatable logs (issue 16, part 4).

One mesh (1 scheduler, 1 executor, 1 sink, executors logging at debug) runs:
- Submit calls with a caller's traceparent, without one, and with a broken one;
- records produced straight to the requests topic without a traceparent (with
  and without an id);
- failing executions that retry (attempts 1..3).
Checked on the results topic: every result of a submitted execution carries
a valid traceparent; the caller's trace id is kept, a broken one replaced;
every attempt of an execution has the same trace id; a record produced
without one keeps its bytes (no header added) and its trace id is the one
derived from its id, the same on every replica and attempt and in
`execmeshctl trace`; the result names its handler and when it was dispatched
(submitted <= dispatched <= started <= finished). Checked in the logs: every
line that names an execution (field id) also carries its attempt and its trace
id, and that trace id is the one its results carry. Liveness: the group's
committed offsets reach the end; nothing final twice."""
import json
import re
import subprocess

from mesh import BIN, Mesh, execution, pb, read_all_results, wait_for

TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def trace_id(result):
    tp = result.headers.get("traceparent", "")
    m = TP.match(tp)
    assert m, f"{result.id} attempt {result.attempt}: no valid traceparent in its result's headers: {tp!r}"
    assert m.group(1) != "0" * 32 and m.group(2) != "0" * 16, tp
    return m.group(1)


def test_traceparent_through_every_hop_and_in_every_log_line():
    m = Mesh("trace")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "log.level=debug",
                                            "--set", "builtin.fail.retry_initial_ms=100",
                                            "--set", "builtin.fail.retry_max_ms=200"])
        sched = m.start_scheduler([ex])
        m.wait_assigned([sched], 6)
        req = m.topics["execmesh.requests"]
        start = m.kafka.end_offsets(req)

        given = [execution(f"given-{i}", headers={"traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01",
                                                  "tenant": "t1"}) for i in range(5)]
        absent = [execution(f"absent-{i}") for i in range(5)]
        broken = [execution(f"broken-{i}", headers={"traceparent": "00-zz-nothex-01"}) for i in range(3)]
        fails = [execution(f"fail-{i}", "fail", b"boom", max_attempts=3) for i in range(4)]
        ids = list(m.stub(sched).Submit(pb.SubmitRequest(executions=given + absent + broken + fails), timeout=30).ids)
        assert len(ids) == 17

        # records straight to Kafka: no traceparent; one without an id (the mesh names it)
        p = m.kafka.producer()
        offs = {}
        for i in range(3):
            p.produce(req, execution(f"raw-{i}", "fail" if i == 0 else "echo", b"raw",
                                     max_attempts=2).SerializeToString(), key=f"raw-{i}")
        p.produce(req, execution("").SerializeToString(),
                  on_delivery=lambda err, msg: offs.update(anon=f"{msg.topic()}/{msg.partition()}/{msg.offset()}"))
        assert p.flush(30) == 0
        raw_ids = [f"raw-{i}" for i in range(3)] + [offs["anon"]]
        all_ids = ids + raw_ids

        def finals():
            got = read_all_results(m)
            return got if all(any(r.final for r in got.get(i, [])) for i in all_ids) else None
        got = wait_for(finals, 90, "a final result for every execution", interval=0.5)
        m.wait_committed(start, m.kafka.end_offsets(req), timeout=60)

        traces = {}
        for i in all_ids:
            rs = sorted(got[i], key=lambda r: r.attempt)
            assert sum(r.final for r in rs) == 1, (i, [(r.attempt, r.final) for r in rs])
            if i in raw_ids:  # produced without one: none added, the trace id is derived (checked below)
                assert all("traceparent" not in r.headers for r in rs), (i, [dict(r.headers) for r in rs])
                continue
            ts = {trace_id(r) for r in rs}
            assert len(ts) == 1, f"{i}: its attempts carry different trace ids {ts}"
            traces[i] = ts.pop()
            for r in rs:
                handler = "fail" if i.startswith("fail-") or i == "raw-0" else "echo"
                assert r.handler == handler, (i, r.handler)
                assert r.submitted_unix_ms <= r.dispatched_unix_ms <= r.started_unix_ms <= r.finished_unix_ms, \
                    (i, r.attempt, r.submitted_unix_ms, r.dispatched_unix_ms, r.started_unix_ms, r.finished_unix_ms)
        for e in given:
            assert traces[e.id] == CALLER_TRACE, (e.id, traces[e.id])
            assert got[e.id][0].headers["tenant"] == "t1"
        # Submit made new ones: distinct per execution, not the caller's
        made = [traces[e.id] for e in absent + broken + fails]
        assert len(set(made)) == len(made) and CALLER_TRACE not in made, made
        # execmeshctl trace names each execution's trace id: the traceparent's, or the derived one
        for i in all_ids:
            r = subprocess.run([BIN["ctl"], "trace", i, "--json", "--bootstrap", m.kafka.bootstrap,
                                "--results-topic", m.topics["execmesh.results"]],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, (i, r.stderr)
            t = json.loads(r.stdout)
            assert re.match(r"^[0-9a-f]{32}$", t["trace_id"]) and t["trace_id"] != "0" * 32, t
            assert [a["attempt"] for a in t["attempts"]] == sorted(x.attempt for x in got[i]), t
            if i in raw_ids:
                traces[i] = t["trace_id"]
            else:
                assert t["trace_id"] == traces[i], (i, t["trace_id"], traces[i])
        assert len({traces[i] for i in raw_ids} | set(made)) == len(raw_ids) + len(made)
        for i in [e.id for e in fails] + ["raw-0"]:
            assert [r.attempt for r in sorted(got[i], key=lambda r: r.attempt)] == \
                ([1, 2, 3] if i != "raw-0" else [1, 2]), i

        # the logs: every line about an execution names id, attempt and trace id, the results' trace id
        seen = {}
        for proc in (sched, ex, sink):
            for line in proc.log_lines():
                f = line.get("fields", {})
                if "id" not in f or f["id"] not in traces:
                    continue
                assert "attempt" in f and "trace_id" in f, f"{proc.name}: a line about {f['id']} without " \
                                                           f"attempt or trace_id: {line}"
                assert f["trace_id"] == traces[f["id"]], (proc.name, line, traces[f["id"]])
                seen.setdefault(f["id"], set()).add((proc.name, line["msg"], f["attempt"]))
        # the executor logs each attempt's end (debug), the scheduler each retry it stores
        for i in all_ids:
            attempts = {a for (_, msg, a) in seen.get(i, ()) if msg == "execution finished"}
            assert attempts == {r.attempt for r in got[i]}, (i, seen.get(i))
        for e in fails:
            retries = {a for (n, msg, a) in seen[e.id] if msg == "attempt failed; the next waits in the delay topic"}
            assert retries == {1, 2}, (e.id, seen[e.id])
    finally:
        m.close()
