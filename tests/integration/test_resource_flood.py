# SPDX-License-Identifier: Apache-2.0
"""Mesh-wide resource limits against a real PostgreSQL: the handler psql
touches resource db:pg (concurrency 4, rate 40/s, burst 4, in the
schedulers' configuration), and its statements record in PostgreSQL itself
when each began and ended (pg.py). 1,200 executions (5,000 with EM_LONG=1)
flood the requests topic at once; 2 schedulers and 3 executors (each able to
run 16 psql at once, so the executors are not the limit) run them. Both
phases run on one mesh (and one PostgreSQL), one after the other.

- steady: every execution ends SUCCEEDED, each ran exactly once (a row per
  id, no duplicates), the group's committed offsets reach the end of every
  partition, at most 4 statements overlap, no 1 s window holds more than
  40 + 4 starts, and the rate used is at least 0.8 * 40/s;
- rebalance: the next flood while a third scheduler joins and one executor
  drains (SIGTERM): nothing lost, offsets committed to the end, at most
  4 + 2 statements overlap (the worst case while partitions move).

The figures (limit, max overlap, max starts in 1 s, rate used, duplicates)
are printed one per line. EM_FLOOD_UNLIMITED=1 runs the same flood with the
resources left out of the schedulers' configuration: the negative control,
which must fail on the overlap."""
import math
import os
import signal
import subprocess
import time

import pytest

from mesh import Mesh, execution, mesh_dir, pb, wait_for
from pg import Postgres, max_overlap, max_starts_in_window, rate_used, write_psql_handler
from test_lifecycle import wait_results

LONG = os.environ.get("EM_LONG") == "1"
UNLIMITED = os.environ.get("EM_FLOOD_UNLIMITED") == "1"
N = 5000 if LONG else 1200
PARTITIONS = 6
CONCURRENCY, RATE, BURST = 4, 40, 4
REBALANCE_EXTRA = 2  # overlap allowed beyond the limit while partitions move
SLEEP_US = 50_000  # the statement's pg_sleep(0.05)


def violations(rows, concurrency, rate, burst, min_rate_share=0.8, check_rate=True, slack=0):
    """The limits rows [(id, start_us, end_us)] break, as sentences (empty:
    none). slack: starts a 1 s window of statements may hold beyond rate +
    burst because the statements begin a varying time after the mesh admits
    them (psql's start-up and connection: rate x that delay's spread)."""
    starts = [s for _, s, _ in rows]
    out = []
    ov = max_overlap([(s, e) for _, s, e in rows])
    if ov > concurrency:
        out.append(f"max overlap {ov} > concurrency {concurrency}")
    win = max_starts_in_window(starts)
    if check_rate and win > rate + burst + slack:
        out.append(f"{win} starts in a 1 s window > rate {rate:g} + burst {burst}"
                   + (f" + {slack} (the statements' start delay spread)" if slack else ""))
    used = rate_used(starts)
    if check_rate and used < min_rate_share * rate:
        out.append(f"rate used {used:.1f}/s < {min_rate_share:g} * {rate:g}/s")
    return out


def test_flood_analysis_on_synthetic_data():
    """The analysis is exact and its checks can fail (microseconds)."""
    S = 1_000_000
    # an end at the same instant as a start does not overlap it
    assert max_overlap([(0, 10), (10, 20), (20, 30)]) == 1
    assert max_overlap([(0, 10), (9, 20)]) == 2
    assert max_overlap([(0, 100), (10, 20), (15, 30), (20, 25), (29, 40)]) == 3
    assert max_overlap([(5, 6)] * 7) == 7
    assert max_overlap([]) == 0
    # [t, t + 1 s): a start exactly 1 s after another is in the next window
    assert max_starts_in_window([0, S]) == 1
    assert max_starts_in_window([0, S - 1]) == 2
    assert max_starts_in_window([0, S // 2, S - 1, S, S + S // 2 - 1, 3 * S], where=True) == (4, S // 2)
    assert max_starts_in_window([7] * 5) == 5
    # rate used: n - 1 gaps over the span
    assert rate_used([0, S]) == 1.0
    assert abs(rate_used([i * S // 40 for i in range(41)]) - 40.0) < 1e-9
    assert rate_used([3]) == 0.0

    # a compliant schedule: 4 lanes, each a 60 ms statement every 100 ms -> 40/s, 4 open at most
    ok = [(f"x{lane}-{k}", k * 100_000 + lane * 25_000, k * 100_000 + lane * 25_000 + 60_000)
          for lane in range(4) for k in range(100)]
    assert max_overlap([(s, e) for _, s, e in ok]) == 3
    assert violations(ok, CONCURRENCY, RATE, BURST) == []
    # five at once: the overlap check fails
    five = ok + [("extra", 1_000_010, 1_000_020)]
    assert any("max overlap 4" in v for v in violations(five, 3, RATE, BURST))
    # two more where three are open (lanes 1 to 3 at 80 ms): five
    v = violations(ok + [("a", 80_000, 80_010), ("b", 80_001, 80_011)], CONCURRENCY, RATE, BURST)
    assert v == ["max overlap 5 > concurrency 4"], v
    # 45 starts in one second: the window check fails
    burst = [(f"b{i}", 50 * S + i * 20_000, 50 * S + i * 20_000 + 1) for i in range(45)]
    v = violations(ok + burst, 100, RATE, BURST, min_rate_share=0)
    assert v == ["45 starts in a 1 s window > rate 40 + burst 4"], v
    # too slow: 20/s fails the rate check
    slow = [(f"s{i}", i * 50_000, i * 50_000 + 1) for i in range(200)]
    assert violations(slow, CONCURRENCY, RATE, BURST) == ["rate used 20.0/s < 0.8 * 40/s"]


@pytest.fixture(scope="module")
def pg():
    p = Postgres(mesh_dir("resource-flood-pg"))
    try:
        p.start()
        yield p
    finally:
        p.stop()


def scheduler_config(path):
    with open(path, "w") as f:
        if UNLIMITED:
            f.write("# EM_FLOOD_UNLIMITED=1: the negative control, no resource limits\n")
        else:
            f.write(f"""resources = {{
  pg = {{ name = "db:pg"; concurrency = {CONCURRENCY}; rate = {RATE}; per_ms = 1000; burst = {BURST}; }};
}};
handlers = {{
  psql = {{ resources = [ "db:pg" ]; }};
}};
""")
    return path


def executor_config(path, handler):
    with open(path, "w") as f:
        f.write(f"""handlers = {{
  exec = [ "psql" ];
}};
exec = {{
  psql = {{ argv = [ "{handler}" ]; concurrency = 16; env = [ "PATH=/usr/bin:/bin" ]; }};
}};
""")
    return path


def stop_by_role(m):
    """SIGTERM to every scheduler at once, then to every executor, then to
    every sink, each group waited for (bounded); Mesh.close() then checks
    their exit codes (one by one, its stops cost ~20 s here)."""
    for role in ("scheduler", "executor", "sink"):
        procs = [p for p in m.procs if p.role == role and p.alive()]
        for p in procs:
            p.signal(signal.SIGTERM)
        for p in procs:
            try:
                p.p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                pass  # Mesh.close() signals it again, kills it and reports it


class Flood:
    """The mesh both phases run on: 2 sinks, 3 executors offering psql, 2
    schedulers with db:pg in their configuration."""

    def __init__(self, m, pg):
        self.m, self.pg = m, pg
        handler = write_psql_handler(os.path.join(m.dir, "psql-handler.sh"), pg)
        ecfg = executor_config(os.path.join(m.dir, "executor.cfg"), handler)
        self.scfg = scheduler_config(os.path.join(m.dir, "scheduler.cfg"))
        sinks = [m.start_sink(f"sink-{i}") for i in range(2)]
        # cgroups off: containment is not what this test is about, and other tests use the cgroups
        self.execs = [m.start_executor(sinks, f"executor-{i}",
                                       ["--config", ecfg, "--set", "executor.max_inflight=100000",
                                        "--set", "executor.cgroups=off"]) for i in range(3)]
        self.scheds = [self.start_scheduler(f"scheduler-{i}") for i in range(2)]
        m.wait_assigned(self.scheds, PARTITIONS)

    def start_scheduler(self, name):
        return self.m.start_scheduler(self.execs, name, ["--config", self.scfg])

    def flood(self, prefix):
        """Produces N psql executions straight to the requests topic at once; the id is the payload."""
        ids = [f"{prefix}-{i:05d}" for i in range(N)]
        p = self.m.kafka.producer()
        errors = []
        for i in ids:
            p.produce(self.m.topics["execmesh.requests"], execution(i, "psql", i.encode()).SerializeToString(),
                      key=i, on_delivery=lambda err, msg: errors.append(err) if err else None)
            p.poll(0)
        assert p.flush(60) == 0 and not errors, errors[:5]
        return ids


@pytest.fixture(scope="module")
def flood(pg):
    m = Mesh("resource-flood", partitions=PARTITIONS)
    try:
        yield Flood(m, pg)
    finally:
        try:
            stop_by_role(m)
        finally:
            m.close()


def figures(name, rows, got, ids, limit_overlap):
    """Prints one line per figure; returns them."""
    starts = [s for _, s, _ in rows]
    row_count = {}
    for i, _, _ in rows:
        row_count[i] = row_count.get(i, 0) + 1
    window, window_at = max_starts_in_window(starts, where=True)
    f = {
        "overlap": max_overlap([(s, e) for _, s, e in rows]),
        "window": window,
        "rate": rate_used(starts),
        "row_dups": sum(c - 1 for c in row_count.values()),
        "result_dups": sum(max(0, sum(1 for r in got.get(i, []) if r.final) - 1) for i in ids),
        "missing_rows": [i for i in ids if i not in row_count],
        "unknown_rows": sorted(set(row_count) - set(ids)),
        "short_rows": [(i, e - s) for i, s, e in rows if e - s < SLEEP_US],
    }
    # the executors' view of the same runs (their clock, ms): the whole execution, psql's start-up included
    ex = [(r.started_unix_ms, r.finished_unix_ms) for i in ids for r in got.get(i, []) if r.started_unix_ms]
    first = min(starts) if starts else 0
    span = (max(starts) - first) / 1e6 if starts else 0.0
    print(f"\nFLOOD {name} limit: db:pg concurrency={CONCURRENCY} rate={RATE:g}/s burst={BURST}"
          f"{' (NOT CONFIGURED: EM_FLOOD_UNLIMITED=1)' if UNLIMITED else ''}; allowed overlap {limit_overlap}")
    print(f"FLOOD {name} executions={len(ids)} rows={len(rows)} missing_rows={len(f['missing_rows'])} "
          f"starts_span_s={span:.2f}")
    print(f"FLOOD {name} max_overlap={f['overlap']}")
    print(f"FLOOD {name} max_starts_in_1s={f['window']} (window from +{((window_at or first) - first) / 1e6:.2f} s)")
    print(f"FLOOD {name} rate_used={f['rate']:.2f}/s")
    print(f"FLOOD {name} duplicates: rows={f['row_dups']} final_results={f['result_dups']}")
    print(f"FLOOD {name} executor_side (result started/finished, ms): max_overlap={max_overlap(ex)} "
          f"max_starts_in_1s={max_starts_in_window([s for s, _ in ex], 1000)}")
    # how late each statement began after its executor started it (one host, one clock): psql's
    # start-up and connection; its spread is how far the statements' windows can differ from the mesh's
    once = {i: s for i, s, _ in rows if row_count[i] == 1}
    delays = sorted(once[i] / 1000 - rs[0].started_unix_ms for i, rs in got.items()
                    if i in once and len(rs) == 1 and rs[0].started_unix_ms)
    f["slack"] = 0
    if delays:
        f["slack"] = math.ceil(RATE * (delays[-1] - delays[0]) / 1000)
        print(f"FLOOD {name} statement_start_delay_ms: min={delays[0]:.1f} median={delays[len(delays) // 2]:.1f} "
              f"max={delays[-1]:.1f} (window slack {f['slack']})")
    return f


def check_runs(f, got, ids):
    """Every id ended SUCCEEDED, has a row, and every row is one real statement."""
    bad = {i: [(pb.Status.Name(r.status), r.error) for r in got.get(i, []) if r.final] for i in ids
           if any(r.final and r.status != pb.SUCCEEDED for r in got.get(i, []))}
    assert not bad, f"{len(bad)} executions did not end SUCCEEDED, e.g. {list(bad.items())[:3]}"
    assert not f["missing_rows"], f"{len(f['missing_rows'])} executions left no row, e.g. {f['missing_rows'][:5]}"
    assert not f["unknown_rows"], f"rows of ids never submitted: {f['unknown_rows'][:5]}"
    # t0 was taken before the sleep: each statement's interval covers its 50 ms
    assert not f["short_rows"], f"rows shorter than the statement's sleep: {f['short_rows'][:5]}"


def test_steady_flood_keeps_the_limits(flood, pg):
    m = flood.m
    ids = flood.flood("steady")
    got = wait_results(m, ids, N / RATE + 90, f"a final result for each of the {N} executions")
    m.wait_lag_zero(60)
    rows = pg.runs("steady-%")
    f = figures("steady", rows, got, ids, CONCURRENCY)
    check_runs(f, got, ids)
    assert f["row_dups"] == 0 and f["result_dups"] == 0, \
        f"duplicates without a scale event: rows={f['row_dups']} results={f['result_dups']}"
    v = violations(rows, CONCURRENCY, RATE, BURST, slack=f["slack"])
    assert not v, "limits broken: " + "; ".join(v)


def test_flood_through_a_join_and_a_drain_keeps_the_limits(flood, pg):
    """On the same mesh, after the steady flood: a third scheduler joins a
    quarter of the way into the next flood, executor-0 drains half way."""
    m = flood.m
    ids = flood.flood("rebal")
    t0 = time.monotonic()

    def ran():
        return pg.count("id LIKE 'rebal-%'")
    wait_for(lambda: ran() >= N // 4, N / RATE + 60, f"{N // 4} of the flood's statements to have run", interval=0.1)
    flood.scheds.append(flood.start_scheduler("scheduler-2"))
    m.wait_assigned(flood.scheds, PARTITIONS)
    joined_at = ran()
    wait_for(lambda: ran() >= N // 2, N / RATE + 60, f"{N // 2} of the flood's statements to have run", interval=0.1)
    victim = flood.execs[0]
    drained_at = ran()
    victim.signal(signal.SIGTERM)
    code = victim.wait_exit(60)
    print(f"\nFLOOD rebalance scheduler-2 settled at {joined_at} rows, executor-0 drained at {drained_at} rows "
          f"(exit {code}), {time.monotonic() - t0:.1f} s into the flood")
    assert code == 0, f"executor-0 did not drain cleanly: exit {code}"

    got = wait_results(m, ids, N / RATE + 120, f"a final result for each of the {N} executions")
    m.wait_lag_zero(60)
    rows = pg.runs("rebal-%")
    f = figures("rebalance", rows, got, ids, CONCURRENCY + REBALANCE_EXTRA)
    check_runs(f, got, ids)
    assert f["overlap"] <= CONCURRENCY + REBALANCE_EXTRA, \
        f"max overlap {f['overlap']} > concurrency {CONCURRENCY} + {REBALANCE_EXTRA} during a rebalance"
    # the scale events happened during the flood, else this tested nothing
    assert drained_at < N, f"the flood was over ({drained_at} rows) before executor-0 drained"
    assert any(r.executor == "executor-0" for i in ids for r in got.get(i, [])), "executor-0 ran nothing"
