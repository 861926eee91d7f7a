# SPDX-License-Identifier: Apache-2.0
"""Resources a handler touches, limited by the schedulers (resources.*,
handlers.*.resources): the configuration's refusals, a resource's
concurrency and rate holding (read from the results' start and end times),
other handlers flowing past a throttled one, and a backlog larger than a
resource's queue waiting in Kafka (its partitions held) with nothing lost.
The mesh-wide share across schedulers and PostgreSQL as the neighbour are
in test_resource_flood.py."""
import os
import subprocess
import time

from mesh import BIN, Mesh, assert_config_refused, execution, pb, results_by_id, status_name, wait_for
from pg import max_overlap, max_starts_in_window


def test_check_config_refuses_bad_resources(tmp_path):
    """--check-config (the checks start-up runs): exit 2, naming the file, the
    line and the key."""
    cases = [  # (config text, line, key, reason)
        ('resources = { pg = { concurrency = 4; }; };\nhandlers = {\n  psql = { resources = [ "db:pg" ]; };\n};\n',
         3, "handlers.psql.resources", "handler psql names unknown resource 'db:pg' (resources: pg)"),
        ('resources = {\n  a = { name = "db:x"; };\n  b = { name = "db:x"; };\n};\n',
         3, "resources.b.name", "resource 'db:x' is named twice"),
        ('resources = {\n  a = { name = "db pg"; };\n};\n', 2, "resources.a.name", "a resource name is"),
        ('resources = { a = { concurrency = -1; }; };\n', 1, "resources.a.concurrency", "-1 is below the minimum 0"),
        ('handlers = { psql = { resources = [ "nope" ]; }; };\n', 1, "handlers.psql.resources",
         "unknown resource 'nope' (resources: none configured)"),
    ]
    assert_config_refused("scheduler", tmp_path, cases)
    good = tmp_path / "good.cfg"
    good.write_text('resources = { pg = { name = "db:pg"; concurrency = 4; rate = 40; burst = 4; }; };\n'
                    'handlers = { psql = { resources = [ "db:pg" ]; }; };\n')
    r = subprocess.run([BIN["scheduler"], "--config", str(good), "--check-config"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r


def resource_config(m, text):
    path = os.path.join(m.dir, "resources.cfg")
    with open(path, "w") as f:
        f.write(text)
    return path


def submit_and_wait(m, sched, execs, timeout=120):
    want = {e.id for e in execs}
    t0 = time.time()
    for i in range(0, len(execs), 500):
        m.stub(sched).Submit(pb.SubmitRequest(executions=execs[i:i + 500]), timeout=30)
    got = results_by_id(m.kafka.read(m.topics["execmesh.results"], m.results_start,
                                     until=lambda r: want <= set(results_by_id(r)), timeout=timeout,
                                     what=f"all {len(want)} results"))
    bad = {i: status_name(got[i][0].status) for i in want if status_name(got[i][0].status) != "SUCCEEDED"}
    assert not bad, bad
    twice = {i: len(got[i]) for i in want if len(got[i]) > 1}
    assert not twice, f"ran more than once: {twice}"
    return got, t0


def test_a_throttled_resource_holds_only_its_own_handler():
    """One scheduler owns every partition: its share is the whole limit. 60
    sleeps touching db:one (concurrency 2, 20 per second, burst 2) run within
    both limits, read from the results' own start and end times; 200 echoes
    submitted after them do not wait for them."""
    m = Mesh("res-throttle")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "handlers.concurrency=16", "--set", "executor.max_inflight=64"])
        cfg = resource_config(m, 'resources = { one = { name = "db:one"; concurrency = 2; rate = 20; burst = 2; }; };\n'
                                 'handlers = { sleep = { resources = [ "db:one" ]; }; };\n')
        sched = m.start_scheduler([ex], args=["--config", cfg])
        m.wait_assigned([sched], 6)
        sleeps = [execution(f"s-{i}", "sleep", b"30") for i in range(60)]
        echoes = [execution(f"e-{i}", "echo", b"x") for i in range(200)]
        got, t0 = submit_and_wait(m, sched, sleeps + echoes)
        iv = [(got[e.id][0].started_unix_ms, got[e.id][0].finished_unix_ms) for e in sleeps]
        starts = sorted(s for s, _ in iv)
        span = (starts[-1] - starts[0]) / 1000
        echo_last = max(got[e.id][0].finished_unix_ms for e in echoes)
        print(f"\nTHROTTLE overlap={max_overlap(iv)} max_1s={max_starts_in_window(starts, 1000)} "
              f"rate={(len(starts) - 1) / span:.1f}/s echoes_done_after={echo_last / 1000 - t0:.2f}s "
              f"sleeps_span={span:.2f}s")
        assert max_overlap(iv) <= 2
        assert max_starts_in_window(starts, 1000) <= 20 + 2
        assert span >= (60 - 2) / 20 * 0.95, "the rate was not held"
        # the echoes were not queued behind the throttled sleeps
        assert echo_last < starts[-1], "the echoes waited for the throttled handler"
        mt = sched.metrics()
        assert mt['execmesh_resource_admitted_total{resource="db:one"}'] == 60
        assert mt['execmesh_resource_throttled_total{resource="db:one"}'] > 0
        assert mt['execmesh_resource_share_concurrency{resource="db:one"}'] == 2
        assert mt['execmesh_resource_share_rate_per_minute{resource="db:one"}'] == 1200
        wait_for(lambda: sched.metric('execmesh_resource_running{resource="db:one"}') == 0, 10,
                 "the resource's running count to go back to 0")
        m.wait_lag_zero(30)
    finally:
        m.close()


def test_a_backlog_beyond_the_resource_queue_waits_in_kafka():
    """resources.*.max_waiting 4: the scheduler keeps at most 4 executions of
    the resource in its queue and 16 parked per partition; the records after
    them wait in Kafka, their partitions held
    (execmesh_scheduler_held_partitions) and sought back
    (execmesh_scheduler_partition_rewinds_total). Everything still runs
    exactly once, and the group's committed offsets reach the end."""
    m = Mesh("res-backlog")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--set", "handlers.concurrency=16"])
        cfg = resource_config(m, 'resources = { one = { name = "db:one"; concurrency = 4; rate = 100; burst = 4; '
                                 'max_waiting = 4; }; };\nhandlers = { sleep = { resources = [ "db:one" ]; }; };\n')
        sched = m.start_scheduler([ex], args=["--config", cfg])
        m.wait_assigned([sched], 6)
        held, waiting = [], []

        execs = [execution(f"b-{i}", "sleep", b"5") for i in range(300)]
        for i in range(0, len(execs), 100):
            m.stub(sched).Submit(pb.SubmitRequest(executions=execs[i:i + 100]), timeout=30)

        def sample():
            mt = sched.metrics()
            held.append(mt["execmesh_scheduler_held_partitions"])
            waiting.append(mt['execmesh_resource_waiting{resource="db:one"}'])
            return mt['execmesh_resource_admitted_total{resource="db:one"}'] >= 300
        wait_for(sample, 60, "all 300 executions admitted", interval=0.05)
        got = results_by_id(m.kafka.read(m.topics["execmesh.results"], m.results_start,
                                         until=lambda r: {e.id for e in execs} <= set(results_by_id(r)),
                                         timeout=60, what="all 300 results"))
        assert all(status_name(got[e.id][0].status) == "SUCCEEDED" and len(got[e.id]) == 1 for e in execs)
        rewinds = sched.metric("execmesh_scheduler_partition_rewinds_total")
        print(f"\nBACKLOG most_held_partitions={max(held):.0f} most_waiting_in_memory={max(waiting):.0f} "
              f"rewinds={rewinds:.0f} samples={len(held)}")
        assert max(held) > 0, "no partition was ever held"
        assert rewinds > 0, "no held partition was ever sought back: the backlog never waited in Kafka"
        # in memory: the queue (4) plus at most 16 parked in each of the 6 partitions
        assert max(waiting) <= 4 + 6 * 16
        wait_for(lambda: sched.metric("execmesh_scheduler_held_partitions") == 0, 10, "every partition released")
        m.wait_lag_zero(30)
    finally:
        m.close()
