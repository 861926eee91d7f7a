# SPDX-License-Identifier: Apache-2.0
"""The metrics as an operator consumes them: a real Prometheus (Debian's 2.42)
scrapes a real mesh (devkafka, 1 scheduler, 2 executors, 1 sink) every second
and evaluates the shipped alert rules.

- rules: `promtool check rules deploy/prometheus/alerts.yml` and `promtool
  test rules deploy/prometheus/alerts_test.yml` pass; every alert has a
  severity, summary, description and a runbook_url whose anchor is a heading
  of docs/alerts.md, and the unit tests show each alert firing and not firing.
- under a Submit load the test sends at a known rate (50/s for 24 s, the
  builtin sleep handler with run times of 15, 60 and 150 ms):
  `promtool check metrics` finds nothing in any service's exposition
  (scheduler, both executors, sink, devkafka); Prometheus's rate() of
  executions in and results out is within 10 % of the rate the test sent;
  no alert is pending or firing at any time of the load (the rules' `for:`
  shortened to 0s, so this is stricter than the shipped rules).
- after quiescence the counts Prometheus holds are exact (results, executions
  in and out, histogram counts == executions submitted), and
  histogram_quantile() of the run-time and end-to-end histograms falls in the
  bucket holding the true p50 / p90 computed from the results' own timestamps.
- every expr of deploy/grafana/execmesh.json returns data from this
  Prometheus (evaluated during the load).
- a stall injected with the scheduler's debug hook fires
  ExecmeshPartitionStalled (and nothing else), which resolves once the
  watchdog heals the partition.
"""
import json
import math
import os
import re
import threading
import time
import urllib.request

import pytest
import yaml

import grpc
from mesh import ROOT, Mesh, TopicPartition, WaitTimeout, execution, pb, pb_grpc, wait_for
from prom import Prometheus, parse_exposition, promtool

RULES = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
RULES_TEST = os.path.join(ROOT, "deploy", "prometheus", "alerts_test.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "execmesh.json")
RUNBOOK = os.path.join(ROOT, "docs", "alerts.md")
PARTITIONS = 6
RATE = 50  # executions per second the load sends
BATCH = 5  # per Submit call: a call every BATCH / RATE s
LOAD_S = 24
WINDOW_S = 15  # the rate() window, inside the load
# sleep payloads (ms) by i % 10: 30 % at 15 ms, 40 % at 60 ms, 30 % at 150 ms, so the
# true p50 (60 ms tier) and p90 (150 ms tier) of the run time, and of the end-to-end
# time (about 15 ms more here), sit inside a histogram bucket rather than on a bound
SLEEP_MS = [15, 15, 15, 60, 60, 60, 60, 150, 150, 150]
# the watchdog: a stall is found after stall_ms; the stalled gauge stays up
# until the next round (interval_ms) sees the partition flowing, so two
# rounds of 1 s scrapes see it
WATCH = ["--set", "watchdog.stall_ms=3000", "--set", "watchdog.interval_ms=2000"]


def alert_names():
    with open(RULES) as f:
        doc = yaml.safe_load(f)
    return [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_alert_rules_check_and_unit_tests():
    r = promtool("check", "rules", RULES)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, f"promtool check rules:\n{r.stdout}{r.stderr}"
    r = promtool("test", "rules", RULES_TEST, timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout + r.stderr, f"promtool test rules:\n{r.stdout}{r.stderr}"
    with open(RULES) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    with open(RUNBOOK) as f:
        anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                   for h in re.findall(r"^#+ (.+)$", f.read(), re.M)}
    names = [r["alert"] for r in rules]
    required = {"ExecmeshPartitionStalled", "ExecmeshLagGrowing", "ExecmeshDeadLetters", "ExecmeshExhausted",
                "ExecmeshNoReadyExecutor", "ExecmeshNoReadySink", "ExecmeshReplicaNotServing",
                "ExecmeshCommitFailures", "ExecmeshTargetDown"}
    assert required <= set(names), f"missing alerts: {required - set(names)}"
    assert len(set(names)) == len(names), f"duplicate alert names: {names}"
    for r in rules:
        a = r.get("annotations", {})
        assert r.get("labels", {}).get("severity") in ("critical", "warning", "info"), r
        assert a.get("summary") and a.get("description"), r
        url = a.get("runbook_url", "")
        assert url.startswith("docs/alerts.md#") and url.split("#", 1)[1] == r["alert"].lower(), r
        anchor = url.split("#", 1)[1]
        assert anchor in anchors, f"{r['alert']}: no heading for #{anchor} in docs/alerts.md"
    # the unit tests show every alert firing and not firing
    with open(RULES_TEST) as f:
        tests = yaml.safe_load(f)["tests"]
    firing, quiet = set(), set()
    for t in tests:
        for c in t.get("alert_rule_test", []):
            (firing if c.get("exp_alerts") else quiet).add(c["alertname"])
    assert firing >= set(names) and quiet >= set(names), \
        f"unit tests lack firing {set(names) - firing} / not firing {set(names) - quiet}"


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []
    for p in dash["panels"]:
        for sub in [p] + p.get("panels", []):
            for t in sub.get("targets", []):
                out.append((sub["title"], t["refId"], t["expr"]))
    return dash, out


def test_dashboard_is_well_formed():
    dash, exprs = dashboard_exprs()
    assert 36 <= dash["schemaVersion"] <= 39, dash["schemaVersion"]
    assert any(v["name"] == "DS_PROMETHEUS" and v["type"] == "datasource" and v["query"] == "prometheus"
               for v in dash["templating"]["list"]), dash["templating"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), ids
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"] and all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in p["targets"]), p["title"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, (p["title"], g)
    titles = " | ".join(p["title"] for p in dash["panels"])
    for want in ("Executions in", "Results out", "Results by handler and status", "Queue wait", "Run time",
                 "End to end", "Execute / Publish", "Lag per partition", "Oldest waiting", "Stalled partitions",
                 "Executor saturation", "Serving replicas", "Safe to stop", "Dead letters"):
        assert want in titles, f"no panel {want!r}: {titles}"
    exprs_text = "\n".join(e for _, _, e in exprs)
    for metric in ("execmesh_executions_in_total", "execmesh_sink_results_total",
                   "execmesh_scheduler_queue_wait_seconds",
                   "execmesh_executor_run_seconds", "execmesh_sink_end_to_end_seconds",
                   "execmesh_scheduler_execute_duration_seconds", "execmesh_executor_publish_duration_seconds",
                   "execmesh_scheduler_partition_lag", "execmesh_scheduler_partition_oldest_waiting_seconds",
                   "execmesh_scheduler_stalled_partitions", "execmesh_inflight{job=\"executor\"}", "execmesh_executor_capacity",
                   "execmesh_serving", "execmesh_safe_to_stop", "execmesh_dead_lettered_total"):
        assert metric in exprs_text, f"no panel queries {metric}"


class Env:
    pass


@pytest.fixture(scope="module")
def env():
    e = Env()
    e.m = Mesh("prometheus", partitions=PARTITIONS)
    e.prom = None
    try:
        e.sink = e.m.start_sink("sink-0")
        e.execs = [e.m.start_executor([e.sink], f"executor-{i}", ["--set", "handlers.concurrency=64"])
                   for i in range(2)]
        e.sched = e.m.start_scheduler(e.execs, "scheduler-0", WATCH)
        e.m.wait_assigned([e.sched], PARTITIONS)
        # the shipped rules with every `for:` rewritten to 0s (expressions unchanged):
        # an alert is pending-then-firing at its first true evaluation, so the
        # healthy-mesh check is stricter than the shipped rules and a stall that
        # lasts a few seconds fires
        with open(RULES) as f:
            text = f.read()
        e.fors = re.findall(r"^(\s+for:\s*)(\S+)\s*$", text, re.M)
        assert len(e.fors) == len(alert_names()), "every alert has a for:"
        e.shipped_for = dict(zip(alert_names(), (v for _, v in e.fors)))
        short = re.sub(r"^(\s+for:\s*)\S+\s*$", r"\g<1>0s", text, flags=re.M)
        e.rules_copy = os.path.join(e.m.dir, "alerts-for-0s.yml")
        with open(e.rules_copy, "w") as f:
            f.write(short)
        e.prom = Prometheus(e.m.dir, {"scheduler": [e.sched.ports["metrics"]],
                                      "executor": [x.ports["metrics"] for x in e.execs],
                                      "sink": [e.sink.ports["metrics"]]}, rule_files=[e.rules_copy])
        e.prom.wait_targets_up(30)
        e.prom.wait_rules_loaded(alert_names())
        e.loaded = False
        yield e
    finally:
        if e.prom:
            e.prom.stop()
        e.m.close()


class Load(threading.Thread):
    """Submits RATE executions per second in calls of BATCH, on a fixed
    schedule; records each call's (unix time it returned, count)."""

    def __init__(self, sched, ids, payload_of, handler="sleep"):
        super().__init__(daemon=True)
        self.stub = pb_grpc.SchedulerStub(grpc.insecure_channel(sched.grpc_addr))
        self.ids, self.payload_of, self.handler = ids, payload_of, handler
        self.sent = []  # (unix time the call returned, executions)
        self.error = None
        self.stop = threading.Event()

    def run(self):
        try:
            t0 = time.monotonic()
            for k in range(0, len(self.ids), BATCH):
                if self.stop.is_set():
                    break
                due = t0 + k / RATE
                if due > time.monotonic():
                    self.stop.wait(due - time.monotonic())  # ok-sleep: pacing the load at a known rate
                batch = self.ids[k:k + BATCH]
                self.stub.Submit(pb.SubmitRequest(executions=[
                    execution(i, handler=self.handler, payload=self.payload_of(i)) for i in batch]), timeout=30)
                self.sent.append((time.time(), len(batch)))
        except Exception as ex:  # reported by check()
            self.error = ex

    def check(self, timeout):
        self.join(timeout)
        assert not self.is_alive(), f"the load did not finish within {timeout} s"
        assert self.error is None, f"Submit failed: {self.error!r}"
        assert sum(n for _, n in self.sent) == len(self.ids)

    def rate_between(self, a, b):
        return sum(n for t, n in self.sent if a < t <= b) / (b - a)


def lint(proc):
    with urllib.request.urlopen(proc.metrics_url, timeout=5) as r:
        text = r.read().decode()
    res = promtool("check", "metrics", stdin=text)
    problems = (res.stdout + res.stderr).strip()
    return res.returncode, problems, text


def test_lint_rates_and_no_alerts_under_load(env):
    m, prom = env.m, env.prom
    n = RATE * LOAD_S
    env.ids = [f"prom-{i}" for i in range(n)]
    payload = {i: str(SLEEP_MS[k % 10]).encode() for k, i in enumerate(env.ids)}
    # a healthy mesh: nothing pending or firing once Prometheus has seen every target
    prom.wait_scraped_after(time.time())
    assert prom.alerts() == [], f"alerts before the load: {prom.alerts()}"
    env.t_watch = time.time()
    load = Load(env.sched, env.ids, payload.get)
    env.t_load = time.time()
    load.start()
    seen_alerts = []
    lints = {}
    deadline = time.monotonic() + LOAD_S + 30
    while load.is_alive() and time.monotonic() < deadline:
        for a in prom.alerts():
            seen_alerts.append((round(time.time() - env.t_load, 1), a["labels"]["alertname"], a["state"]))
        if not lints and time.time() - env.t_load > LOAD_S / 2:
            for p in [env.sched] + env.execs + [env.sink] + ([m.kafka.proc] if m.kafka.proc else []):
                lints[p.name] = lint(p)
        load.stop.wait(0.5)  # ok-sleep: the interval of the alert watch during the load
    load.check(30)
    env.t_load_end = load.sent[-1][0]
    env.load = load
    env.loaded = True
    # rates: a WINDOW_S window ending 1 s before the last Submit, so it holds load only
    t_eval = env.t_load_end - 1
    assert t_eval - WINDOW_S > env.t_load + 3, "the load is too short for the rate window"
    env.t_eval = t_eval
    prom.wait_scraped_after(t_eval + 1)
    sent_rate = load.rate_between(t_eval - WINDOW_S, t_eval)
    w = f"[{WINDOW_S}s]"
    got = {
        "in (submit)": prom.value(f'sum(rate(execmesh_executions_in_total{{job="scheduler",source="submit"}}{w}))',
                                  t_eval),
        "in (kafka)": prom.value(f'sum(rate(execmesh_executions_in_total{{job="scheduler",source="kafka"}}{w}))',
                                 t_eval),
        "out (scheduler)": prom.value(f'sum(rate(execmesh_executions_out_total{{job="scheduler"}}{w}))', t_eval),
        "results (sink)": prom.value(f"sum(rate(execmesh_sink_results_total{w}))", t_eval),
        "results (executors)": prom.value(f"sum(rate(execmesh_executor_results_total{w}))", t_eval),
    }
    print(f"\nPROM_RATES nominal={RATE}/s sent_in_window={sent_rate:.2f}/s window={WINDOW_S}s " +
          " ".join(f"{k.replace(' ', '_')}={v if v is None else round(v, 2)}/s" for k, v in got.items()))
    # the healthy mesh fired nothing: sampled during the load, and every rule evaluation since
    # the watch began (ALERTS holds a sample per pending or firing alert per evaluation)
    prom.wait_scraped_after(time.time())
    fired = prom.query_range("ALERTS", env.t_watch, time.time(), 1)
    env.lints = lints
    assert not seen_alerts and not fired, \
        f"alerts on a healthy mesh: polled {seen_alerts[:10]}; " \
        f"ALERTS {[(s['metric'], s['values'][:2]) for s in fired][:10]}"
    for k, v in got.items():
        assert v is not None, f"rate of {k}: no data (the metric is missing)"
        assert abs(v - sent_rate) <= 0.10 * sent_rate, f"rate of {k} {v:.2f}/s vs sent {sent_rate:.2f}/s: beyond 10 %"
    assert abs(sent_rate - RATE) <= 0.10 * RATE, f"the load itself did not hold its rate: {sent_rate:.2f}/s"


def test_promtool_check_metrics_under_load(env):
    """Each service's exposition, taken in the middle of the load: promtool check metrics finds nothing."""
    need_load(env)
    lints = env.lints
    assert sorted(lints) == sorted([env.sched.name, env.sink.name, "devkafka"] + [x.name for x in env.execs]) or \
        env.m.kafka.kind == "real", f"not every service was linted: {sorted(lints)}"
    for k, (rc, problems, text) in lints.items():
        print(f"\nPROM_LINT {k} rc={rc} problems={len(problems.splitlines()) if problems else 0} "
              f"samples={sum(1 for l in text.splitlines() if l and not l.startswith('#'))}")
    bad = {k: v[:2] for k, v in lints.items() if v[0] != 0 or v[1]}
    assert not bad, "promtool check metrics found problems:\n" + "\n".join(
        f"{k} (exit {rc}):\n{problems}" for k, (rc, problems) in bad.items())


def read_results(m, n, timeout=90):
    """Every record on the results topic since the test began, until n distinct
    final ids were read: [(Result, Kafka timestamp ms)]."""
    topic = m.topics["execmesh.results"]
    c = m.kafka.consumer()
    c.assign([TopicPartition(topic, p, o) for p, o in m.results_start.items()])
    out, finals = [], set()
    deadline = time.monotonic() + timeout
    try:
        while len(finals) < n:
            if time.monotonic() > deadline:
                raise WaitTimeout(f"{len(finals)} of {n} final results read from {topic} within {timeout} s")
            for msg in c.consume(1000, 0.2):
                if msg.error():
                    continue
                r = pb.Result.FromString(msg.value())
                out.append((r, msg.timestamp()[1]))
                if r.final:
                    finals.add(r.id)
    finally:
        c.close()
    return out


def need_load(env):
    assert getattr(env, "loaded", False), "the load test did not run (or failed before the load ended)"


def test_exact_counts_after_quiescence(env):
    need_load(env)
    m, prom, n = env.m, env.prom, len(env.ids)
    env.results = read_results(m, n)
    ids = {r.id for r, _ in env.results}
    assert ids == set(env.ids), f"results for {len(ids)} ids, {len(ids - set(env.ids))} unknown"
    assert len(env.results) == n, f"{len(env.results) - n} extra result records"
    assert all(r.status == pb.SUCCEEDED and r.final for r, _ in env.results), \
        [(r.id, pb.Status.Name(r.status), r.error) for r, _ in env.results if r.status != pb.SUCCEEDED][:5]
    m.wait_lag_zero(60)
    # the lag gauge is refreshed every watchdog round (interval_ms 2000): a scrape after the next one
    prom.wait_scraped_after(time.time() + 2.5)
    exprs = {
        "sum(execmesh_sink_results_total)": n,
        'sum(execmesh_sink_results_total{handler="sleep",status="succeeded",final="true"})': n,
        'sum(execmesh_executions_in_total{job="scheduler",source="submit"})': n,
        'sum(execmesh_executions_in_total{job="scheduler",source="kafka"})': n,
        'sum(execmesh_executions_out_total{job="scheduler"})': n,
        'sum(execmesh_executor_results_total{handler="sleep",status="succeeded"})': n,
        'sum(execmesh_executor_run_seconds_count{handler="sleep"})': n,
        "sum(execmesh_sink_end_to_end_seconds_count)": n,
        'sum(execmesh_executions_failed_total{job="scheduler"})': 0,
        "sum(execmesh_dead_lettered_total)": 0,
        "sum(execmesh_scheduler_partition_lag)": 0,
        "sum(execmesh_inflight)": 0,
    }
    got = {e: prom.value(e) for e in exprs}
    print("\nPROM_COUNTS submitted=%d %s" % (n, " ".join(f"{e}={v}" for e, v in got.items())))
    wrong = {e: (v, exprs[e]) for e, v in got.items() if v is None or v != exprs[e]}
    assert not wrong, f"counts in Prometheus after quiescence (got, want): {wrong}"


def bucket_of(bounds, v):
    """(lower, upper] of the bucket holding v (bounds sorted, +Inf last)."""
    lo = 0.0
    for b in bounds:
        if v <= b:
            return lo, b
        lo = b
    raise AssertionError(f"{v} beyond +Inf")


def bounds_of(proc, name):
    doc = parse_exposition(urllib.request.urlopen(proc.metrics_url, timeout=5).read().decode())
    les = sorted({float(lab["le"]) for lab, _ in doc.get(f"{name}_bucket", [])})
    assert les and les[-1] == math.inf, f"{name}: no buckets in {proc.name}'s exposition"
    return les


def check_quantile(prom, expr, q, values, bounds, below, above, what):
    """histogram_quantile lies in the bucket of the true q-quantile of values
    (the rank Prometheus uses: q * count). The histogram and the results
    measure at slightly different points, so a bucket also counts when it holds
    a value within [true - below, true + above]; the buckets accepted are printed."""
    vs = sorted(values)
    true = vs[max(0, math.ceil(q * len(vs)) - 1)]
    hq = prom.value(expr)
    ok = []
    lo = 0.0
    for b in bounds:
        if b >= true - below and lo < true + above:
            ok.append((lo, b))
        lo = b
    print(f"PROM_QUANTILE {what} q={q} true={true:.4f}s bucket={bucket_of(bounds, true)} accepted={ok} "
          f"histogram_quantile={hq if hq is None else round(hq, 4)}")
    assert hq is not None and not math.isnan(hq), f"{what}: histogram_quantile returned {hq}"
    assert any(a < hq <= b for a, b in ok), \
        f"{what} p{int(q * 100)}: histogram_quantile {hq:.4f} s outside the true value's bucket {ok} " \
        f"(true {true:.4f} s)"


def buckets_side_by_side(hist, values, bounds):
    """The cumulative bucket counts of the histogram and of the values, where either changes."""
    out, last = [], None
    for b in bounds:
        pair = (hist.get(b), sum(1 for v in values if v <= b))
        if pair != last:
            out.append(f"{b}:{pair[0]:.0f}/{pair[1]}" if pair[0] is not None else f"{b}:-/{pair[1]}")
        last = pair
    return " ".join(out)


def test_histogram_quantiles_match_the_results(env):
    need_load(env)
    assert getattr(env, "results", None), "the counts test did not read the results"
    prom = env.prom
    run = [(r.finished_unix_ms - r.started_unix_ms) / 1000 for r, _ in env.results]
    e2e = [(ts - r.submitted_unix_ms) / 1000 for r, ts in env.results]
    rb = bounds_of(env.execs[0], "execmesh_executor_run_seconds")
    eb = bounds_of(env.sink, "execmesh_sink_end_to_end_seconds")
    # the buckets side by side: the histogram's counts and the results' own
    hist = {float(s["metric"]["le"]): float(s["value"][1]) for s in
            prom.query('sum by (le) (execmesh_executor_run_seconds_bucket{handler="sleep"})')}
    print("\nPROM_RUN_BUCKETS (le:histogram/results) " + buckets_side_by_side(hist, run, rb))
    hist = {float(s["metric"]["le"]): float(s["value"][1]) for s in
            prom.query("sum by (le) (execmesh_sink_end_to_end_seconds_bucket)")}
    print("PROM_E2E_BUCKETS (le:histogram/results) " + buckets_side_by_side(hist, e2e, eb))
    for q in (0.5, 0.9):
        check_quantile(prom, f'histogram_quantile({q}, sum by (le) '
                             f'(execmesh_executor_run_seconds_bucket{{handler="sleep"}}))',
                       q, run, rb, 0.002, 0.002, "run time")  # both from the executor's clock, ms resolution
        # the results' end is the record's timestamp (the sink's produce call); the
        # histogram's is the delivery report, later by the producer's linger
        # (kafka.linger_ms, 5 ms) and Kafka's ack: 10 ms allowed
        check_quantile(prom, f"histogram_quantile({q}, sum by (le) (execmesh_sink_end_to_end_seconds_bucket))",
                       q, e2e, eb, 0.001, 0.010, "end to end")


def test_dashboard_queries_return_data(env):
    need_load(env)
    _, exprs = dashboard_exprs()
    empty = []
    for title, ref, expr in exprs:
        e = expr.replace("$__rate_interval", "15s").replace("$__interval", "15s").replace("$__range", "5m")
        assert "$" not in e, f"{title}/{ref}: an unknown variable in {expr}"
        res = env.prom.query(e, env.t_eval)
        if not res:
            empty.append(f"{title} [{ref}]: {expr}")
    print(f"\nPROM_DASHBOARD exprs={len(exprs)} empty={len(empty)}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def test_injected_stall_fires_partition_stalled(env):
    need_load(env)
    m, prom, sched = env.m, env.prom, env.sched
    code, body = sched.post("/debug/stall/nonsense/0")
    assert code == 404 and "unknown stall" in body, \
        f"the scheduler has no debug hooks ({code} {body.strip()}): build with -DEM_DEBUG_HOOKS=ON"
    # a trickle into every partition (records must wait for a stall to exist)
    ids = [f"stall-{i}" for i in range(RATE * 60)]
    trickle = Load(sched, ids, lambda i: b"x", handler="echo")
    trickle.start()
    try:
        wait_for(lambda: len(trickle.sent) > 10, 15, "the trickle to flow")
        assert prom.alerts() == [], prom.alerts()
        code, body = sched.post("/debug/stall/pause/0")
        assert code == 200, body
        t_inject = time.time()

        def fired():
            return [a for a in prom.alerts() if a["labels"]["alertname"] == "ExecmeshPartitionStalled"
                    and a["state"] == "firing"]
        alert = wait_for(fired, 30, "ExecmeshPartitionStalled firing after the injected stall", interval=0.1)[0]
        t_fired = time.time()
        assert alert["labels"]["severity"] == "critical" and alert["labels"]["job"] == "scheduler", alert
        assert alert["annotations"]["runbook_url"] == "docs/alerts.md#execmeshpartitionstalled", alert
        others = [a["labels"]["alertname"] for a in prom.alerts()
                  if a["labels"]["alertname"] != "ExecmeshPartitionStalled"]
        assert not others, f"a stall fired other alerts too: {others}"
        assert [l for l in sched.log_events("partition stalled: records wait in Kafka and none arrive")
                if l["fields"].get("partition") == 0], "the scheduler logged no stall of partition 0"
        wait_for(lambda: not prom.alerts(), 30, "the alert to resolve once the partition flows again", interval=0.2)
        t_resolved = time.time()
        # ALERTS over the stall holds it, and only it: the positive control of the
        # healthy-mesh check, which reads the same series
        fired = prom.query_range("ALERTS", t_inject - 1, time.time(), 1)
        names = {(s["metric"]["alertname"], s["metric"]["alertstate"]) for s in fired}
        assert names == {("ExecmeshPartitionStalled", "pending"), ("ExecmeshPartitionStalled", "firing")} or \
            names == {("ExecmeshPartitionStalled", "firing")}, f"ALERTS over the stall: {names}"
        print(f"\nPROM_STALL fired_after_s={t_fired - t_inject:.1f} resolved_after_s={t_resolved - t_fired:.1f} "
              f"stall_ms=3000 interval_ms=2000 for=0s (the copy; shipped "
              f"{env.shipped_for['ExecmeshPartitionStalled']})")
    finally:
        trickle.stop.set()
        trickle.join(30)
    assert trickle.error is None, trickle.error
    m.wait_lag_zero(60)
