# SPDX-License-Identifier: Apache-2.0
"""A test's own multi-broker Kafka cluster (scripts/kafka.sh start --brokers N
in a folder of the test), controlled node by node through kafka.sh by PID. A
Mesh on it (bootstrap_file=cluster.bootstrap_file) makes its topics with the
cluster's replication settings (Mesh._real_topics copies them)."""
import json
import os
import shutil
import subprocess

from confluent_kafka.admin import AdminClient, ConfigResource

from mesh import ROOT, wait_for


KAFKA_SH = os.path.join(ROOT, "scripts", "kafka.sh")


class KafkaCluster:
    """N combined broker+controller nodes (scripts/kafka.sh --brokers N) in dir."""

    def __init__(self, dir, brokers=3, partitions=6):
        self.dir, self.brokers, self.partitions = dir, brokers, partitions
        self.started = False

    def sh(self, *args, timeout=240):
        env = dict(os.environ)
        # C1 only: a node starts in about half the time on a busy 2-core machine; the test's rates are small
        env.setdefault("EM_KAFKA_JVM_OPTS", "-XX:TieredStopAtLevel=1")
        r = subprocess.run([KAFKA_SH] + list(args) + ["--dir", self.dir], capture_output=True, text=True,
                           timeout=timeout, env=env)
        assert r.returncode == 0, f"kafka.sh {' '.join(args)} failed (exit {r.returncode}):\n{r.stderr}"
        return r

    def start(self):
        # without Java (or Maven and no cached jars) kafka.sh exits 3 naming what is missing: a failure
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.started = True  # from here close() stops whatever started
        self.sh("start", "--brokers", str(self.brokers), "--partitions", str(self.partitions))
        self.bootstrap = open(self.bootstrap_file).read().strip()
        self.admin_bootstrap = open(os.path.join(self.dir, "admin-bootstrap")).read().strip()

    @property
    def bootstrap_file(self):
        return os.path.join(self.dir, "bootstrap")

    def node_dir(self, k):
        return self.dir if self.brokers == 1 else os.path.join(self.dir, f"node{k}")

    def pid(self, k):
        try:
            return int(open(os.path.join(self.node_dir(k), "kafka.pid")).read())
        except OSError:
            return None

    def kill(self, k):
        self.sh("kill", "--node", str(k))

    def stop(self, k):
        self.sh("stop", "--node", str(k))

    def start_node(self, k):
        self.sh("start", "--node", str(k))

    def close(self):
        """kill -9 every node by PID (the storage is the test's to throw away)."""
        if self.started:
            self.sh("kill", timeout=60)

    def quorum_leader(self):
        """The metadata quorum's leader as the nodes last recorded it (the
        quorum-state file of the highest epoch)."""
        best = (-1, None)
        for k in range(1, self.brokers + 1):
            try:
                with open(os.path.join(self.node_dir(k), "data", "__cluster_metadata-0", "quorum-state")) as f:
                    q = json.load(f)
            except (OSError, ValueError):
                continue
            if q.get("leaderId", -1) >= 0 and q.get("leaderEpoch", -1) > best[0]:
                best = (q["leaderEpoch"], q["leaderId"])
        return best[1]

    def admin(self):
        """One AdminClient for the test (its futures fail if it is collected before they finish)."""
        if getattr(self, "_admin", None) is None:
            self._admin = AdminClient({"bootstrap.servers": self.admin_bootstrap})
        return self._admin

    def partitions_of(self, topic):
        """{partition: (leader, replicas, isr)} from the cluster's metadata."""
        md = self.admin().list_topics(topic, timeout=10)
        return {p: (pm.leader, list(pm.replicas), list(pm.isrs)) for p, pm in md.topics[topic].partitions.items()}

    def full_isr(self, topics):
        """True when every partition of topics has a leader and all N replicas in its ISR."""
        try:
            for t in topics:
                for leader, replicas, isr in self.partitions_of(t).values():
                    if leader < 0 or len(isr) != self.brokers:
                        return False
            return True
        except Exception:  # a node answering while it starts: not yet
            return False

    def topic_configs(self, topic):
        (f,) = self.admin().describe_configs([ConfigResource("topic", topic)]).values()
        return {k: v.value for k, v in f.result(30).items()}

    def broker_configs(self, k):
        (f,) = self.admin().describe_configs([ConfigResource("broker", str(k))]).values()
        return {k: v.value for k, v in f.result(30).items()}


def read_keys(m, topic, start=None, timeout=120):
    """The keys (str) of every record of topic from start (default: the
    topic's start offsets) to its end offsets as they are now."""
    from confluent_kafka import TopicPartition
    start = start if start is not None else m.kafka.start_offsets(topic)
    end = m.kafka.end_offsets(topic)
    todo = {p for p, o in end.items() if o > start.get(p, 0)}
    c = m.kafka.consumer()
    c.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    keys = []

    def drained():
        for msg in c.consume(5000, 0.5):
            if msg.error():
                continue
            keys.append(msg.key().decode() if msg.key() else "")
            if msg.offset() + 1 >= end[msg.partition()]:
                todo.discard(msg.partition())
        return not todo
    try:
        wait_for(drained, timeout, f"reading {topic} to its end offsets {end}", interval=0)
    finally:
        c.close()
    return keys
