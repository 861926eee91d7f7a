# SPDX-License-Identifier: Apache-2.0
"""The mesh on a replicated Kafka: a 3-node KRaft cluster of its own
(scripts/kafka.sh start --brokers 3: each node a combined broker+controller,
3 voters), topics with replication factor 3, min.insync.replicas=2 and no
unclean leader election, the internal topics at RF 3 / min ISR 2.

(a) kill -9 of the broker leading the most partitions of the test's requests
    and results topics, under load (Submit via gRPC and records produced
    straight to the requests topic), restarted after an outage: 0 lost (every
    acknowledged execution has a result), duplicates counted, throughput
    before / during / after the outage printed, every Submit answered OK has
    its executions on the requests topic, and the group's committed offsets
    reach the end of every partition.
(b) two of the three brokers stopped (SIGTERM: the metadata quorum's leader
    and one follower; the quorum is lost): Submit fails with UNAVAILABLE
    naming Kafka and no Submit sent during the outage is answered OK; with
    the quorum leader back (2 of 3) Submits succeed again, results flow,
    nothing acknowledged is lost and the committed offsets reach the end.

Bounded by default (the whole file ~2-3 min with the cluster's start);
EM_LONG=1 runs longer outages at a higher rate."""
import os
import threading
import time

import grpc
import pytest
from confluent_kafka import Producer

from kafka_cluster import KafkaCluster, read_keys
from mesh import Mesh, execution, mesh_dir, pb, read_all_results, wait_for

LONG = os.environ.get("EM_LONG") == "1"
PARTITIONS = 6
OUTAGE_S = 30 if LONG else 10          # (a): how long the killed broker stays down
OUTAGE2_MIN_S = 20 if LONG else 8      # (b): the least time two brokers stay down
SUBMIT_BATCH = 20 if LONG else 10      # per Submit call
PRODUCE_BATCH = 10 if LONG else 5      # straight to the requests topic, per pace
PACE_S = 0.05                          # between calls of each load thread
MAX_IDS = 400000 if LONG else 60000    # per load thread: the load loops are bounded in count


class Load:
    """Submit (one thread per scheduler) and produce straight to the requests
    topic (one thread), paced, bounded in count; records the time of every
    acknowledgement (Submit OK, or a delivery report without error) and of
    every Submit failure."""

    def __init__(self, m, scheds, prefix, submit_timeout, produce_timeout_ms):
        self.m, self.scheds, self.prefix = m, scheds, prefix
        self.submit_timeout, self.produce_timeout_ms = submit_timeout, produce_timeout_ms
        self.lock = threading.Lock()
        self.acked = {}            # id -> monotonic time of its acknowledgement
        self.submit_ok = []        # (sent, answered, ids)
        self.submit_failed = []    # (sent, answered, code name, details)
        self.produce_failed = {}   # error name -> count
        self.produce_unknown = 0   # still undelivered at the end (indeterminate, not acked)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._submit, args=(i, s)) for i, s in enumerate(scheds)]
        self.threads.append(threading.Thread(target=self._produce))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self, timeout=90):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), f"a load thread still running {timeout} s after the stop"

    def count(self):
        with self.lock:
            return len(self.acked)

    def acked_since(self, t0):
        with self.lock:
            return sum(1 for t in self.acked.values() if t >= t0)

    def _submit(self, k, sched):
        stub = self.m.stub(sched)
        n = 0
        while not self.stop.is_set() and n < MAX_IDS:
            ids = [f"{self.prefix}-s{k}-{n + j}" for j in range(SUBMIT_BATCH)]
            n += SUBMIT_BATCH
            sent = time.monotonic()
            try:
                resp = stub.Submit(pb.SubmitRequest(executions=[execution(i) for i in ids]),
                                   timeout=self.submit_timeout)
                now = time.monotonic()
                assert list(resp.ids) == ids
                with self.lock:
                    self.submit_ok.append((sent, now, ids))
                    for i in ids:
                        self.acked[i] = now
            except grpc.RpcError as e:  # indeterminate: not acknowledged
                with self.lock:
                    self.submit_failed.append((sent, time.monotonic(), e.code().name, e.details() or ""))
            self.stop.wait(PACE_S)  # ok-sleep: paces the load

    def _produce(self):
        p = Producer({"bootstrap.servers": self.m.kafka.bootstrap, "enable.idempotence": True, "linger.ms": 5,
                      "message.timeout.ms": self.produce_timeout_ms})
        topic = self.m.topics["execmesh.requests"]

        def delivered(err, msg):
            with self.lock:
                if err is None:
                    self.acked[msg.key().decode()] = time.monotonic()
                else:
                    self.produce_failed[err.name()] = self.produce_failed.get(err.name(), 0) + 1
        n = 0
        while not self.stop.is_set() and n < MAX_IDS:
            for j in range(PRODUCE_BATCH):
                eid = f"{self.prefix}-p-{n + j}"
                p.produce(topic, execution(eid).SerializeToString(), key=eid, on_delivery=delivered)
            n += PRODUCE_BATCH
            p.poll(0)
            self.stop.wait(PACE_S)  # ok-sleep: paces the load
        self.produce_unknown = p.flush(self.produce_timeout_ms / 1000 + 10)


def rate(times, t0, t1):
    return sum(1 for t in times if t0 <= t < t1) / max(t1 - t0, 1e-9)


def longest_gap(times, t0, t1):
    """The longest stretch of [t0, t1] without an event of times."""
    pts = [t0] + sorted(t for t in times if t0 <= t <= t1) + [t1]
    return max(b - a for a, b in zip(pts, pts[1:]))


def build_mesh(name, cluster, sched_args=()):
    m = Mesh(name, PARTITIONS, bootstrap_file=cluster.bootstrap_file)
    sinks = [m.start_sink(f"sink-{i}") for i in range(2)]
    execs = [m.start_executor(sinks, f"executor-{i}") for i in range(2)]
    scheds = [m.start_scheduler(execs, f"scheduler-{i}", list(sched_args)) for i in range(2)]
    m.wait_assigned(scheds, PARTITIONS)
    return m, scheds


def check_outcome(m, load, label):
    """lost (acknowledged without a result), duplicates, Submit OK => stored,
    committed offsets at the end; returns (lost, duplicates, lag_s, results)."""
    lag_s = m.wait_lag_zero(120)
    got = read_all_results(m)
    acked = set(load.acked)
    lost = sorted(acked - set(got))
    duplicates = sum(len(v) - 1 for v in got.values())
    stored = set(read_keys(m, m.topics["execmesh.requests"]))
    submit_ok_ids = {i for _, _, ids in load.submit_ok for i in ids}
    not_stored = sorted(submit_ok_ids - stored)
    ends = m.kafka.lag(m.group, m.topics["execmesh.requests"])
    print(f"\n{label} acked={len(acked)} (submit_ok={len(submit_ok_ids)} produced={len(acked) - len(submit_ok_ids)}) "
          f"lost={len(lost)} duplicates={duplicates} results={sum(len(v) for v in got.values())} "
          f"submit_ok_not_on_requests_topic={len(not_stored)} produce_failed={load.produce_failed} "
          f"produce_undelivered_at_end={load.produce_unknown} lag_zero_after_load_s={lag_s:.1f} "
          f"lag={ends}")
    assert not lost, f"{label}: lost {len(lost)} acknowledged executions, e.g. {lost[:10]}"
    assert not not_stored, (f"{label}: Submit answered OK for {len(not_stored)} ids not on the requests topic: "
                            f"{not_stored[:10]}")
    assert not any(ends.values()), f"{label}: committed offsets short of the end (lag per partition): {ends}"
    return lost, duplicates, lag_s, got


@pytest.fixture(scope="module")
def cluster():
    # this file always runs on the cluster it starts, whatever EM_KAFKA says (the Mesh reads it)
    saved = os.environ.get("EM_KAFKA")
    os.environ["EM_KAFKA"] = "real"
    c = KafkaCluster(os.path.join(mesh_dir("kafka-replicated-cluster"), "kafka"), brokers=3, partitions=PARTITIONS)
    t0 = time.monotonic()
    try:
        c.start()
        print(f"\nREPLICATED cluster of 3 started in {time.monotonic() - t0:.1f} s at {c.bootstrap}")
        yield c
    finally:
        try:
            c.close()
        finally:
            if saved is None:
                os.environ.pop("EM_KAFKA", None)
            else:
                os.environ["EM_KAFKA"] = saved


def whole(cluster):
    """Every node running and every execmesh.* topic fully replicated."""
    for k in range(1, cluster.brokers + 1):
        cluster.start_node(k)  # no-op when running
    wait_for(lambda: cluster.full_isr(["execmesh.requests", "execmesh.results"]), 60,
             "every node back in the ISR of the cluster's topics", interval=0.2)


def test_topics_and_internal_topics_are_replicated(cluster):
    """What kafka.sh created: RF 3, min ISR 2, no unclean election, on every
    mesh topic; RF 3 / min ISR 2 for the offsets and transaction topics."""
    for t in ("execmesh.requests", "execmesh.results", "execmesh.dead", "execmesh.delay", "execmesh.cancels"):
        parts = cluster.partitions_of(t)
        assert len(parts) == PARTITIONS, (t, parts)
        assert all(len(r) == 3 and len(isr) == 3 for _, r, isr in parts.values()), (t, parts)
        conf = cluster.topic_configs(t)
        assert conf["min.insync.replicas"] == "2" and conf["unclean.leader.election.enable"] == "false", (t, conf)
    for k in (1, 2, 3):
        b = cluster.broker_configs(k)
        want = {"offsets.topic.replication.factor": "3", "transaction.state.log.replication.factor": "3",
                "transaction.state.log.min.isr": "2", "min.insync.replicas": "2",
                "unclean.leader.election.enable": "false", "auto.create.topics.enable": "false"}
        assert {key: b.get(key) for key in want} == want, (k, {key: b.get(key) for key in want})


def test_kill9_one_broker_under_load_loses_nothing(cluster):
    whole(cluster)
    m, scheds = build_mesh("kafka-repl-kill9", cluster)
    load = None
    try:
        # the victim: the broker leading the most partitions of the requests and results topics
        leads = {}
        for t in (m.topics["execmesh.requests"], m.topics["execmesh.results"]):
            for leader, _, _ in cluster.partitions_of(t).values():
                leads[leader] = leads.get(leader, 0) + 1
        victim = max(sorted(leads), key=lambda k: leads[k])
        quorum_leader = cluster.quorum_leader()

        load = Load(m, scheds, "k9", submit_timeout=45, produce_timeout_ms=60000).start()
        t_load = time.monotonic()
        wait_for(lambda: load.count() >= 1000 and time.monotonic() - t_load >= 8, 60,
                 "1000 executions acknowledged and 8 s of load before the kill", interval=0.05)
        t_kill = time.monotonic()
        cluster.kill(victim)
        # the kill took effect: leadership moves off the victim (after its broker session times out)
        wait_for(lambda: all(l != victim for t in (m.topics["execmesh.requests"], m.topics["execmesh.results"])
                             for l, _, _ in cluster.partitions_of(t).values()), 30,
                 f"the partitions led by node {victim} to get another leader", interval=0.2)
        t_moved = time.monotonic()
        wait_for(lambda: time.monotonic() - t_kill >= OUTAGE_S, OUTAGE_S + 1, f"{OUTAGE_S} s of outage", interval=0.1)
        acked_down = load.acked_since(t_kill)
        t_restart = time.monotonic()
        cluster.start_node(victim)
        t_started = time.monotonic()
        behind = {}

        def rejoined():
            behind.clear()
            for t in m.topics.values():
                for p, (_, _, isr) in cluster.partitions_of(t).items():
                    if victim not in isr:
                        behind[f"{t.split('.')[1]}/{p}"] = isr
            return not behind
        try:
            wait_for(rejoined, 90, f"node {victim} back in the ISR of every partition of the test's topics",
                     interval=0.2)
        finally:
            print(f"\nREPLICATED_KILL9 node{victim}: kafka.sh start --node {t_started - t_restart:.1f} s, then "
                  f"in every ISR {time.monotonic() - t_started:.1f} s later (still out of: {behind})")
        t_back = time.monotonic()
        wait_for(lambda: load.acked_since(t_back) >= 1000, 60, "1000 executions acknowledged after the restart",
                 interval=0.05)
        t_end = time.monotonic()
        load.finish()
        lost, dups, lag_s, got = check_outcome(m, load, "REPLICATED_KILL9")

        acks = list(load.acked.values())
        submit_acks = [a for _, a, _ in load.submit_ok]
        # results by the time they finished (wall clock), mapped onto the monotonic clock
        off = time.time() - time.monotonic()
        done = [min(r.finished_unix_ms for r in rs) / 1000 - off for i, rs in got.items() if i in load.acked]
        print(f"REPLICATED_KILL9 victim=node{victim} (led {leads[victim]} of {2 * PARTITIONS} test partitions; "
              f"quorum leader node{quorum_leader}) leadership_moved_s={t_moved - t_kill:.1f} "
              f"down_s={t_restart - t_kill:.1f} restart_to_full_isr_s={t_back - t_restart:.1f}\n"
              f"REPLICATED_KILL9 acks/s last_5s_before={rate(acks, t_kill - 5, t_kill):.0f} "
              f"down={rate(acks, t_kill, t_restart):.0f} rejoining={rate(acks, t_restart, t_back):.0f} "
              f"after={rate(acks, t_back, t_end):.0f}; "
              f"results/s last_5s_before={rate(done, t_kill - 5, t_kill):.0f} down={rate(done, t_kill, t_restart):.0f} "
              f"rejoining={rate(done, t_restart, t_back):.0f} after={rate(done, t_back, t_end):.0f}; "
              f"acked while down={acked_down}\n"
              f"REPLICATED_KILL9 longest stall after the kill: acks {longest_gap(acks, t_kill, t_back):.2f} s, "
              f"Submit OKs {longest_gap(submit_acks, t_kill, t_back):.2f} s, "
              f"results {longest_gap(done, t_kill, t_back):.2f} s; "
              f"submit_failed={[(c, d[:120]) for _, _, c, d in load.submit_failed][:5]} "
              f"({len(load.submit_failed)} calls)")
        assert acked_down > 0, "nothing was acknowledged while one broker of three was down"
    finally:
        if load:
            load.finish()
        m.close()


def test_two_brokers_stopped_submit_fails_named_then_resumes(cluster):
    whole(cluster)
    # Submit gives up after 5 s of Kafka not storing (kafka.message_timeout_ms), well inside the client's deadline
    m, scheds = build_mesh("kafka-repl-two-down", cluster, ["--set", "kafka.message_timeout_ms=5000"])
    load = None
    try:
        leader = cluster.quorum_leader()
        assert leader in (1, 2, 3), f"no metadata quorum leader recorded: {leader}"
        follower, survivor = [k for k in (1, 2, 3) if k != leader]
        load = Load(m, scheds, "two", submit_timeout=30, produce_timeout_ms=10000).start()
        wait_for(lambda: load.count() >= 500, 60, "500 executions acknowledged before the outage", interval=0.05)
        t_first = time.monotonic()
        cluster.stop(follower)
        t_stop1 = time.monotonic()
        cluster.stop(leader)
        t_down = time.monotonic()
        assert cluster.pid(follower) is None and cluster.pid(leader) is None

        def named_failure():
            return [f for f in load.submit_failed if f[0] >= t_down and f[2] == "UNAVAILABLE"
                    and "kafka" in f[3].lower()]
        wait_for(named_failure, 60, "a Submit sent with two brokers down to fail UNAVAILABLE naming Kafka",
                 interval=0.1)
        health = {p.name: p.health_check() for p in m.procs if p.role in ("scheduler", "sink")}
        wait_for(lambda: time.monotonic() - t_down >= OUTAGE2_MIN_S, OUTAGE2_MIN_S + 1,
                 f"{OUTAGE2_MIN_S} s with two brokers down", interval=0.1)
        t_up = time.monotonic()
        ok_while_down = [(s, a) for s, a, _ in load.submit_ok if s >= t_down and a < t_up]
        failed_while_down = [f for f in load.submit_failed if f[0] >= t_down and f[1] < t_up]
        cluster.start_node(leader)
        t_started = time.monotonic()
        # resumes: a Submit sent after the restart answered OK, and results of it
        wait_for(lambda: any(s >= t_up for s, _, _ in load.submit_ok), 60,
                 "a Submit sent after the broker's restart to succeed", interval=0.05)
        t_submit_ok = min(a for s, a, _ in load.submit_ok if s >= t_up)
        wait_for(lambda: load.acked_since(t_started) >= 500, 60, "500 executions acknowledged after the restart",
                 interval=0.05)
        t_end = time.monotonic()
        load.finish()
        lost, dups, lag_s, got = check_outcome(m, load, "REPLICATED_TWO_DOWN")
        acks = list(load.acked.values())
        codes = {}
        for f in failed_while_down:
            key = f"{f[2]}: {f[3][:160]}"
            codes[key] = codes.get(key, 0) + 1
        print(f"REPLICATED_TWO_DOWN stopped node{follower} (follower) in {t_stop1 - t_first:.1f} s, then "
              f"node{leader} (quorum leader) in {t_down - t_stop1:.1f} s; node{survivor} alone; restarted "
              f"node{leader} after {t_up - t_down:.1f} s (kafka.sh start --node took {t_started - t_up:.1f} s)\n"
              f"REPLICATED_TWO_DOWN Submit while down: ok={len(ok_while_down)} failed={len(failed_while_down)} "
              f"{codes}; health while down (1 SERVING, 2 NOT_SERVING)={health}\n"
              f"REPLICATED_TWO_DOWN acks/s before={rate(acks, t_first - 5, t_first):.0f} "
              f"down={rate(acks, t_down, t_up):.0f} after={rate(acks, t_started, t_end):.0f}; "
              f"first Submit OK {t_submit_ok - t_up:.1f} s after the restart began")
        assert not ok_while_down, f"Submit answered OK with two of three brokers down: {ok_while_down[:5]}"
        assert failed_while_down and all(f[2] == "UNAVAILABLE" and "kafka" in f[3].lower()
                                         for f in failed_while_down), codes
    finally:
        if load:
            load.finish()
        m.close()
