# SPDX-License-Identifier: Apache-2.0
"""A test's own Kafka broker whose client listener is SASL_SSL
(scripts/kafka.sh start --sasl-ssl in a folder of the test): TLS with a test
CA made by keytool, then SASL/SCRAM-SHA-512 (or -256) for a user written at
format time. The broker's INTERNAL listener stays PLAINTEXT on loopback; a
Mesh on it (bootstrap_file=SecureKafka.admin_bootstrap_file) makes its topics
and reads offsets and results there, while the services get the SASL_SSL
bootstrap and the kafka.security/ssl/sasl keys (service_args).

The harness's Python client cannot take the SASL_SSL listener: Debian's
librdkafka 2.0.2 under confluent_kafka sends a SCRAM proof Kafka 3.8.1 and
later refuse (fixed in librdkafka 2.6.1, librdkafka#4895); the services use
the project's 2.8.0."""
import os
import shutil

from kafka_cluster import KafkaCluster


class SecureKafka(KafkaCluster):
    """One broker (scripts/kafka.sh start --sasl-ssl) in dir; stopped by PID (close)."""

    def __init__(self, dir, partitions=6):
        super().__init__(dir, brokers=1, partitions=partitions)

    def start(self):
        # without Java (or Maven and no cached jars, or keytool) kafka.sh exits 3 naming what is missing: a failure
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.started = True  # from here close() stops whatever started
        self.sh("start", "--sasl-ssl", "--partitions", str(self.partitions))
        self.bootstrap = open(self.bootstrap_file).read().strip()
        self.admin_bootstrap = open(self.admin_bootstrap_file).read().strip()
        self.client_dir = os.path.join(self.dir, "client")
        self.username = open(os.path.join(self.client_dir, "username")).read().strip()
        self.password_file = os.path.join(self.client_dir, "password")
        self.ca_file = os.path.join(self.client_dir, "ca.pem")
        with open(os.path.join(self.client_dir, "execmesh.set")) as f:
            self.settings = [line.strip() for line in f if line.strip()]

    @property
    def admin_bootstrap_file(self):
        """The PLAINTEXT INTERNAL listener: for the harness's own clients only."""
        return os.path.join(self.dir, "admin-bootstrap")

    def security_args(self, **override):
        """["--set", "kafka.security.protocol=sasl_ssl", ...] for a service or execmeshctl;
        override replaces a key's value: security_args(**{"kafka.sasl.password_file": path})."""
        out = []
        for line in self.settings:
            key, _, value = line.partition("=")
            out += ["--set", f"{key}={override.get(key, value)}"]
        return out

    def service_args(self, **override):
        """The SASL_SSL bootstrap and the security keys; after Mesh.kafka_args() they win."""
        return ["--set", f"kafka.bootstrap={self.bootstrap}"] + self.security_args(**override)
