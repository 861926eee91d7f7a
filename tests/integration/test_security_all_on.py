# SPDX-License-Identifier: Apache-2.0
"""The mesh over a SASL_SSL Kafka listener: a broker of the test's own
(scripts/kafka.sh start --sasl-ssl: TLS with a keytool-made test CA, SCRAM
users written at format time), the services given only the documented keys
(kafka.security.protocol, kafka.ssl.ca_file, kafka.sasl.mechanism,
kafka.sasl.username, kafka.sasl.password_file).

- 400 executions (300 through Scheduler.Submit, 100 produced straight to the
  requests topic) through a scheduler (SCRAM-SHA-512), an executor and a sink
  (SCRAM-SHA-256): every one has exactly one result on the results topic and
  the group's committed offsets reach the end of the requests topic;
  execmeshctl submit and status reach the broker through the same keys.
- A sink and a scheduler given a wrong password refuse to start: exit 1, with
  an error line naming the SASL authentication failure, the user and the
  mechanism; execmeshctl status names it too. A missing password file is
  refused by --check-config naming the key and the file.
- The password appears in no log.

Everything else on at once, as a hardened deployment runs it: mutual TLS on
every gRPC port and channel (scripts/test-ca.sh certificates), the
scheduler's authz table (the client may submit echo only: sha256 is
PERMISSION_DENIED and writes nothing), the admin actions behind the bearer
token (none: 401, a wrong one: 403, the right one pauses and resumes), and
execmeshctl over TLS and SASL_SSL together.

The harness's own Kafka clients (topics, offsets, reading the results) use
the broker's PLAINTEXT INTERNAL listener (kafka_secure.py says why)."""
import datetime
import json
import os
import subprocess
import threading
import time

import grpc

from kafka_secure import SecureKafka
from mesh import BIN, Mesh, check_results, execution, mesh_dir, pb, pb_grpc
from test_tls import AUTHZ, creds, denied, make_certs, tls_args, wait_serving_tls

PARTITIONS = 6
SUBMITTED = 300
PRODUCED = 100


def run(*args, timeout=60):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def settings_of(proc):
    """The effective configuration a service logged at start."""
    (line,) = proc.log_events("effective configuration")
    return line["fields"]["settings"]


def ts(line):
    """A log line's time, in seconds."""
    return datetime.datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def test_mesh_over_sasl_ssl_and_wrong_password_refused():
    os.environ["EM_KAFKA"] = "real"  # the test's own broker, whatever the suite runs on
    t0 = time.monotonic()
    k = SecureKafka(os.path.join(mesh_dir("kafka-scram"), "kafka"), partitions=PARTITIONS)
    m = None
    try:
        k.start()
        t_broker = time.monotonic() - t0
        m = Mesh("kafka-scram", PARTITIONS, bootstrap_file=k.admin_bootstrap_file)
        wrong = os.path.join(m.dir, "wrong-password")
        with open(wrong, "w") as f:
            f.write("not-the-password\n")
        os.chmod(wrong, 0o600)
        bad_args = k.service_args(**{"kafka.sasl.password_file": wrong})

        # --check-config: a missing password file is refused naming the key and the file
        missing = os.path.join(m.dir, "no-such-password")
        r = run(BIN["sink"], "--check-config", *k.service_args(**{"kafka.sasl.password_file": missing}))
        assert r.returncode == 2, f"--check-config accepted a missing password file: {r.stdout}{r.stderr}"
        assert f"key 'kafka.sasl.password_file': cannot read {missing}" in r.stderr, r.stderr

        # the wrong password: started first, they refuse while the good mesh starts
        bad = [m.start("sink", "sink-wrong-password", m.kafka_args() + bad_args, wait=False)]
        certs = os.path.join(m.dir, "certs")
        make_certs(certs)
        sink = m.start("sink", "sink-0", m.kafka_args() + tls_args(certs, "sink")
                       + k.service_args(**{"kafka.sasl.mechanism": "SCRAM-SHA-256"}), wait=False)
        wait_serving_tls(sink, certs)
        ex = m.start("executor", "executor-0", ["--set", f"sinks.target=ipv4:{sink.grpc_addr}"]
                     + tls_args(certs, "executor"), wait=False)
        wait_serving_tls(ex, certs)
        bad.append(m.start_scheduler([ex], "scheduler-wrong-password", args=bad_args, wait=False))
        sched = m.start_scheduler([ex], "scheduler-0", args=k.service_args() + tls_args(certs, "scheduler") + AUTHZ,
                                  wait=False)
        wait_serving_tls(sched, certs)
        m.wait_assigned([sched], PARTITIONS)
        for p in (sink, sched):
            s = settings_of(p)
            assert s["kafka.bootstrap"] == k.bootstrap and s["kafka.security.protocol"] == "sasl_ssl", s
        assert settings_of(sink)["kafka.sasl.mechanism"] == "SCRAM-SHA-256"
        assert settings_of(sched)["kafka.sasl.mechanism"] == "SCRAM-SHA-512"

        req_topic = m.topics["execmesh.requests"]
        req_start = m.kafka.end_offsets(req_topic)
        ids, errors = [], []

        def produce():
            p = m.kafka.producer()
            for i in range(PRODUCED):
                eid = f"scram-p-{i}"
                ids.append(eid)
                p.produce(req_topic, execution(eid, payload=eid.encode()).SerializeToString(), key=eid,
                          on_delivery=lambda err, msg: err and errors.append(str(err)))
            left = p.flush(60)
            if left:
                errors.append(f"{left} produced records not delivered")
        t = threading.Thread(target=produce)
        t.start()
        channel = grpc.secure_channel(sched.grpc_addr, creds(certs))
        stub = pb_grpc.SchedulerStub(channel)
        for b in range(SUBMITTED // 50):
            batch = [execution(f"scram-s-{b * 50 + j}", payload=b"over sasl_ssl") for j in range(50)]
            resp = stub.Submit(pb.SubmitRequest(executions=batch), timeout=30)
            assert list(resp.ids) == [e.id for e in batch]
            ids.extend(resp.ids)
        t.join(90)
        assert not t.is_alive() and not errors, f"producing straight to the requests topic: {errors[:3]}"
        # a handler the authz table does not grant the client: refused, nothing written
        before = m.kafka.end_offsets(req_topic)
        why = denied(lambda: stub.Submit(pb.SubmitRequest(executions=[execution("scram-denied", handler="sha256")]),
                                         timeout=10), "Submit sha256")
        assert "identity 'spiffe://execmesh/client' may not submit handler 'sha256'" in why, why
        assert m.kafka.end_offsets(req_topic) == before, "a denied Submit reached the requests topic"
        channel.close()
        # the admin actions: the bearer token or nothing
        assert sched.post("/admin/pause", token=None)[0] == 401
        assert sched.post("/admin/pause", token="not-the-admin-token-at-all")[0] == 403
        assert sched.post("/admin/pause") == (200, "paused\n")
        assert sched.post("/admin/resume") == (200, "resumed\n")

        # execmeshctl over the same keys: submit waits for the result on the results topic
        r = run(BIN["ctl"], "submit", "--target", f"ipv4:{sched.grpc_addr}", "--bootstrap", k.bootstrap,
                "--results-topic", m.topics["execmesh.results"], "--handler", "echo", "--payload", "hello-scram",
                "--id", "scram-ctl-0", *k.security_args(), *tls_args(certs, "client"))
        assert r.returncode == 0, f"execmeshctl submit over SASL_SSL exited {r.returncode}: {r.stderr}"
        out = json.loads(r.stdout)
        assert out["status"] == "SUCCEEDED" and out["id"] == "scram-ctl-0", out
        ids.append("scram-ctl-0")

        # every execution exactly one result; the committed offsets reach the end
        req_end = m.kafka.end_offsets(req_topic)
        assert sum(req_end.values()) - sum(req_start.values()) == len(ids)
        m.wait_committed(req_start, req_end, timeout=60)
        got = check_results(m, ids)
        assert all(len(got[i]) == 1 for i in ids)
        assert all(got[i][0].status == pb.SUCCEEDED for i in ids), \
            [(i, pb.Status.Name(got[i][0].status)) for i in ids if got[i][0].status != pb.SUCCEEDED][:5]

        status_args = [BIN["ctl"], "status", "--bootstrap", k.bootstrap, "--group", m.group, "--topic", req_topic,
                       "--timeout-ms", "5000", "--json"]
        r = run(*status_args, *k.security_args())
        assert r.returncode == 0, f"execmeshctl status over SASL_SSL exited {r.returncode}: {r.stderr}"
        doc = json.loads(r.stdout)
        assert doc["total"]["partitions"] == PARTITIONS and doc["total"]["lag"] == 0, doc["total"]

        # the wrong password: refused at start, naming the failure, the user and the mechanism
        refused_s = []
        for p in bad:
            code = p.wait_exit(30)
            assert code == 1, f"{p.name} exited {code}, want 1; log:\n{p.log_tail()}"
            (line,) = p.log_events("cannot create the Kafka producer")
            err = line["fields"]["error"]
            assert f"kafka SASL authentication failed for user '{k.username}' (SCRAM-SHA-512)" in err, err
            assert "check kafka.sasl.username and kafka.sasl.password_file" in err, err
            (started,) = p.log_events("effective configuration")
            refused_s.append(ts(line) - ts(started))
            assert refused_s[-1] < 10, f"{p.name} took {refused_s[-1]:.1f} s to refuse the wrong password"
            m.procs.remove(p)  # its exit code 1 is the point; close() would report it
        r = run(*status_args[:-3], "--timeout-ms", "2000", *k.security_args(**{"kafka.sasl.password_file": wrong}))
        assert r.returncode == 3 and "SASL authentication error" in r.stderr, (r.returncode, r.stderr)

        # the password is in no log of the test (the services, execmeshctl, the broker)
        password = open(k.password_file).read().strip()
        logs = [os.path.join(m.dir, f) for f in os.listdir(m.dir) if f.endswith((".log", ".out"))]
        logs += [os.path.join(k.dir, f) for f in ("broker.log", "stdout.log")]
        for path in logs:
            with open(path, errors="replace") as f:
                assert password not in f.read(), f"the SASL password appears in {path}"
        print(f"kafka-scram: broker started in {t_broker:.1f} s; {len(ids)} executions over SASL_SSL, one result "
              f"each; wrong password refused by the sink and the scheduler {refused_s[0]:.1f} s and "
              f"{refused_s[1]:.1f} s after they started; "
              f"whole test {time.monotonic() - t0:.1f} s")
    finally:
        try:
            if m:
                m.close()
        finally:
            k.close()
