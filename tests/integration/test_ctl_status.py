# SPDX-License-Identifier: Apache-2.0
"""`execmeshctl status` finds the stuck partitions: with 2 schedulers sharing
the requests topic, it shows every partition's owner (exactly the two
schedulers, each owning some), committed == end == the end offsets Kafka
gives the test, lag 0; once one scheduler is paused by an operator and more
records arrive, lag > 0 on exactly the partitions that scheduler owns (its
paused gauge and the age of the oldest waiting record say why) and 0
elsewhere; after the resume, lag 0 again. The plain-text form has a row per
partition and a total line; an unreachable Kafka or a missing topic exits 3,
a missing --bootstrap exits 2, a metrics endpoint that does not answer is a
note, not a failure.

On devkafka (no DescribeGroups) the owners come from the schedulers'
metrics; on a real broker also from the group, by replica name.
"""
import json
import os
import re
import subprocess

from mesh import BIN, Mesh, check_results, execution, free_port, wait_for

PARTITIONS = 6
PER_PARTITION = 10
REAL = os.environ.get("EM_KAFKA", "dev") == "real"


def run_ctl(*args, timeout=60):
    return subprocess.run([BIN["ctl"], *args], capture_output=True, text=True, timeout=timeout)


def status_args(m, scheds=(), json_out=True):
    args = ["status", "--bootstrap", m.kafka.bootstrap, "--group", m.group,
            "--topic", m.topics["execmesh.requests"], "--timeout-ms", "5000"]
    if scheds:
        args += ["--metrics", ",".join(s.ports["metrics"] for s in scheds)]
    if json_out:
        args.append("--json")
    return args


def status(m, scheds=()):
    r = run_ctl(*status_args(m, scheds))
    assert r.returncode == 0, f"execmeshctl status exited {r.returncode}: {r.stderr}"
    return json.loads(r.stdout)


def produce(m, tag):
    """PER_PARTITION executions to every partition of the requests topic, keyed by id."""
    p = m.kafka.producer()
    topic = m.topics["execmesh.requests"]
    failed = []
    ids = []
    for i in range(PER_PARTITION * PARTITIONS):
        eid = f"{tag}-{i}"
        ids.append(eid)
        p.produce(topic, execution(eid).SerializeToString(), key=eid, partition=i % PARTITIONS,
                  on_delivery=lambda err, msg: err and failed.append(str(err)))
    left = p.flush(60)
    assert not left and not failed, f"{left} records not delivered, failures: {failed[:3]}"
    return ids


def by_partition(doc):
    return {p["partition"]: p for p in doc["partitions"]}


def scheduler_views(doc):
    return {s["metrics"]: s for s in doc["schedulers"]}


def check_caught_up(m, doc, scheds):
    """Every partition committed to Kafka's end, lag 0, owned by one of the
    two schedulers, each owning some."""
    topic = m.topics["execmesh.requests"]
    ends = m.kafka.end_offsets(topic)
    parts = by_partition(doc)
    endpoints = {s.ports["metrics"] for s in scheds}
    assert sorted(parts) == sorted(ends) == list(range(PARTITIONS)), doc
    t = doc["total"]
    assert (t["partitions"], t["lag"], t["lagging"]) == (PARTITIONS, 0, 0), t
    for pid, p in parts.items():
        assert p["committed"] == p["end"] == ends[pid], (pid, p, ends)
        assert p["lag"] == 0 and p["error"] is None, (pid, p)
        assert p["owner_metrics"] in endpoints, (pid, p, endpoints)
        assert p["position"] == ends[pid], (pid, p)
        assert p["oldest_waiting_seconds"] is not None, (pid, p)
    owners = {p["owner_metrics"] for p in parts.values()}
    assert owners == endpoints, f"owners {owners}, schedulers {endpoints}"
    views = scheduler_views(doc)
    for s in scheds:
        v = views[s.ports["metrics"]]
        assert v["error"] is None and v["stalled_partitions"] == 0, v
        assert v["assigned_partitions"] == len(v["partitions"]) > 0, v
        assert set(v["partitions"]) == {pid for pid, p in parts.items() if p["owner_metrics"] == s.ports["metrics"]}
    if REAL:  # the broker describes the group: owners by replica name, each endpoint named
        assert doc["group_state"] == "Stable" and doc["total"]["members"] == 2, doc
        for pid, p in parts.items():
            owner = next(s for s in scheds if s.ports["metrics"] == p["owner_metrics"])
            assert p["owner"] == p["owner_client_id"] == owner.name, (pid, p)
        assert {v["name"] for v in views.values()} == {s.name for s in scheds}, views
    else:  # devkafka: no DescribeGroups, the owners come from the metrics
        assert doc["describe_groups_error"] and doc["members"] is None, doc
        assert all(p["owner"] == p["owner_metrics"] for p in parts.values()), doc
    return ends


def test_status_shows_the_paused_schedulers_partitions_behind():
    m = Mesh("ctl-status", partitions=PARTITIONS)
    try:
        r = run_ctl("--version")
        assert r.returncode == 0 and re.match(r"execmeshctl \S+ \(librdkafka [0-9.]+, grpc [0-9.]+\)$",
                                              r.stdout.strip()), r.stdout
        sinks = [m.start_sink("sink-0")]
        execs = [m.start_executor(sinks, "executor-0")]
        scheds = [m.start_scheduler(execs, f"scheduler-{i}") for i in range(2)]
        m.wait_assigned(scheds, PARTITIONS)

        ids = produce(m, "first")
        m.wait_lag_zero(60)
        ends = check_caught_up(m, status(m, scheds), scheds)

        # the plain-text form: a row per partition and a total line
        r = run_ctl(*status_args(m, scheds, json_out=False))
        assert r.returncode == 0, r.stderr
        print(f"\n{r.stdout}")
        rows = {int(x.group(1)): x.group(0) for x in re.finditer(r"^\s*(\d+)\s+\S+\s+\d+\s+\d+\s+\d+\s+0\s+\S+$",
                                                                   r.stdout, re.M)}
        assert sorted(rows) == list(range(PARTITIONS)), r.stdout
        assert re.search(rf"^total: {PARTITIONS} partitions, lag 0, 0 partitions with lag > 0; ", r.stdout, re.M), \
            r.stdout
        assert len(re.findall(r"^scheduler \S+.*stalled_partitions 0, paused 0$", r.stdout, re.M)) == 2, r.stdout
        # without --metrics: the owners only the group can tell
        r = run_ctl(*status_args(m, json_out=False))
        assert r.returncode == 0, r.stderr
        if not REAL:
            assert re.search(r"^note: owner \?: the broker did not answer DescribeGroups", r.stdout, re.M), r.stdout
            assert all(row.split()[1] == "?" for row in r.stdout.splitlines()[2:2 + PARTITIONS]), r.stdout
        else:
            assert "2 members: " in r.stdout and "scheduler-0 (" in r.stdout and "scheduler-1 (" in r.stdout, \
                r.stdout

        # one scheduler paused: lag on exactly its partitions
        paused, other = scheds
        code, body = paused.post("/admin/pause")
        assert code == 200, body
        wait_for(lambda: scheduler_views(status(m, scheds))[paused.ports["metrics"]]["paused"] == 1, 30,
                 f"{paused.name}'s paused gauge in execmeshctl status")
        ids += produce(m, "second")
        last = {}

        def behind_on_paused_only():
            doc = status(m, scheds)
            last["doc"] = doc
            for pid, p in by_partition(doc).items():
                if p["owner_metrics"] == paused.ports["metrics"]:
                    if not (p["lag"] == PER_PARTITION and p["committed"] == ends[pid]
                            and p["position"] == ends[pid] and (p["oldest_waiting_seconds"] or 0) > 0):
                        return False
                elif p["owner_metrics"] != other.ports["metrics"] or p["lag"] != 0:
                    return False
            return doc
        try:
            doc = wait_for(behind_on_paused_only, 60, f"lag {PER_PARTITION} on {paused.name}'s partitions only, "
                                                      f"0 on {other.name}'s")
        except AssertionError as e:
            raise AssertionError(f"{e}; last status: {json.dumps(last.get('doc'), indent=1)}")
        lagging = {pid for pid, p in by_partition(doc).items() if p["lag"] > 0}
        views = scheduler_views(doc)
        assert lagging == set(views[paused.ports["metrics"]]["partitions"]) and lagging, doc
        assert doc["total"]["lag"] == PER_PARTITION * len(lagging) and doc["total"]["lagging"] == len(lagging)
        # an operator's pause is not a stall
        assert views[paused.ports["metrics"]]["stalled_partitions"] == 0, views
        r = run_ctl(*status_args(m, scheds, json_out=False))
        assert r.returncode == 0, r.stderr
        print(r.stdout)
        assert re.search(rf"^total: {PARTITIONS} partitions, lag {PER_PARTITION * len(lagging)}, "
                         rf"{len(lagging)} partitions? with lag > 0; ", r.stdout, re.M), r.stdout

        # resumed: everything caught up again
        code, body = paused.post("/admin/resume")
        assert code == 200, body
        m.wait_lag_zero(60)

        def resumed():
            doc = status(m, scheds)
            return doc if doc["total"]["lag"] == 0 and all(v["paused"] == 0 for v in doc["schedulers"]) else None
        check_caught_up(m, wait_for(resumed, 30, "execmeshctl status to show lag 0 and no scheduler paused"), scheds)
        check_results(m, ids)  # every execution once: the pause left nothing behind and re-ran nothing

        # what does not answer
        dead = f"127.0.0.1:{free_port()}"
        r = run_ctl("status", "--bootstrap", dead, "--timeout-ms", "2000")
        assert r.returncode == 3 and f"cannot reach Kafka at {dead}" in r.stderr, (r.returncode, r.stderr)
        r = run_ctl("status", "--bootstrap", m.kafka.bootstrap, "--topic", "execmesh.no-such-topic")
        assert r.returncode == 3 and "topic execmesh.no-such-topic does not exist" in r.stderr, (r.returncode,
                                                                                                  r.stderr)
        r = run_ctl("status", "--group", m.group)
        assert r.returncode == 2 and "--bootstrap is required" in r.stderr, (r.returncode, r.stderr)
        r = run_ctl("status", "--bootstrap", m.kafka.bootstrap, "--timeout-ms", "soon")
        assert r.returncode == 2 and "--timeout-ms" in r.stderr, (r.returncode, r.stderr)
        r = run_ctl(*status_args(m, scheds), "--metrics", dead)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert scheduler_views(doc)[dead]["error"].startswith("cannot connect"), doc["schedulers"]
        assert any(n.startswith(f"metrics {dead}: cannot connect") for n in doc["notes"]), doc["notes"]
        assert doc["total"]["lag"] == 0 and all(p["owner_metrics"] for p in doc["partitions"]), doc
        # a group that never committed: every committed offset "-" (null), lag from the start offset
        doc = json.loads(run_ctl("status", "--bootstrap", m.kafka.bootstrap, "--group", "execmesh-never-committed",
                                 "--topic", m.topics["execmesh.requests"], "--json").stdout)
        starts = m.kafka.start_offsets(m.topics["execmesh.requests"])
        ends = m.kafka.end_offsets(m.topics["execmesh.requests"])
        for p in doc["partitions"]:
            assert p["committed"] is None and p["lag"] == ends[p["partition"]] - starts[p["partition"]], p
    finally:
        m.close()
