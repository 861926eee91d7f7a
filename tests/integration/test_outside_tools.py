# SPDX-License-Identifier: Apache-2.0
"""The tools operators use, against every role: grpc-health-probe's exit code
follows each service through start-up (nothing listening: 2), SERVING (0),
NOT_SERVING during the drain after SIGTERM (4) and a killed process (2), as a
Kubernetes gRPC/exec probe would see it. grpcurl, with our .proto files (the
C core serves no reflection), calls Submit from the command line; kcat
(someone else's Kafka client) produces a raw execution and reads its result
back, so our wire format is checked by someone else's decoder."""
import json
import os
import signal
import subprocess

from mesh import ROOT, TOOL, Mesh, pb, probe, wait_for

SERVING_CODE, CONN_FAIL, NOT_SERVING_CODE = 0, 2, 4


def test_grpc_health_probe_follows_each_state():
    m = Mesh("probe")
    try:
        drain = ["--set", "drain.notserving_ms=3000"]
        sink = m.start("sink", "sink-0", m.kafka_args() + drain, wait=False)
        # start-up: nothing listens until the ports file exists
        sink.wait_ports()
        wait_for(lambda: probe(sink.grpc_addr) == SERVING_CODE, 30, "grpc-health-probe to exit 0 on the sink")
        ex = m.start_executor([sink], args=drain)
        sched = m.start_scheduler([ex], args=drain)
        for proc, svc in ((sched, "execmesh.v1.Scheduler"), (ex, "execmesh.v1.Executor"),
                          (sink, "execmesh.v1.ResultSink")):
            assert probe(proc.grpc_addr) == SERVING_CODE, proc.name
            assert probe(proc.grpc_addr, svc) == SERVING_CODE, proc.name
            assert probe(proc.grpc_addr, "no.such.Service") == 3, proc.name  # NOT_FOUND is an RPC failure
            addr = proc.grpc_addr
            proc.signal(signal.SIGTERM)
            wait_for(lambda: probe(addr) == NOT_SERVING_CODE, 3, f"the probe to exit 4 while {proc.name} drains")
            assert proc.wait_exit(40) == 0
            assert probe(addr) == CONN_FAIL, f"{proc.name} gone, yet the probe connected"
        # a killed process: connection failure
        k = m.start_sink("sink-k")
        assert probe(k.grpc_addr) == SERVING_CODE
        k.signal(signal.SIGKILL)
        k.wait_exit(10)
        assert probe(k.grpc_addr) == CONN_FAIL
    finally:
        m.close()


def test_grpcurl_submit_and_kcat_round_trip():
    m = Mesh("tools")
    try:
        sink = m.start_sink()
        ex = m.start_executor([sink])
        sched = m.start_scheduler([ex])
        m.wait_assigned([sched], 6)

        # grpcurl: Submit from the command line, with the .proto files
        body = json.dumps({"executions": [{"id": "grpcurl-1", "handler": "echo", "payload": "aGVsbG8="}]})
        r = subprocess.run([TOOL["grpcurl"], "-plaintext", "-import-path", os.path.join(ROOT, "protos"),
                            "-proto", "execmesh/v1/execmesh.proto", "-d", body, sched.grpc_addr,
                            "execmesh.v1.Scheduler/Submit"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"ids": ["grpcurl-1"]}
        # grpcurl sees a refused Submit's status and message
        r = subprocess.run([TOOL["grpcurl"], "-plaintext", "-import-path", os.path.join(ROOT, "protos"),
                            "-proto", "execmesh/v1/execmesh.proto", "-d", "{}", sched.grpc_addr,
                            "execmesh.v1.Scheduler/Submit"], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "InvalidArgument" in r.stderr and "executions: empty" in r.stderr, r.stderr

        # kcat: produce a raw execution (serialized by python protobuf), read results with kcat
        raw = pb.Execution(id="kcat-1", handler="sha256", payload=b"abc").SerializeToString()
        req = m.topics["execmesh.requests"]
        rawfile = os.path.join(m.dir, "kcat-1.bin")  # a file is one message (stdin would split at newlines)
        with open(rawfile, "wb") as f:
            f.write(raw)
        r = subprocess.run([TOOL["kcat"], "-b", m.kafka.bootstrap, "-P", "-t", req, "-k", "kcat-1", rawfile],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr

        res = m.topics["execmesh.results"]

        def kcat_results():
            out = subprocess.run([TOOL["kcat"], "-b", m.kafka.bootstrap, "-C", "-t", res, "-o", "beginning", "-e",
                                  "-q", "-f", "%k\\t%S\\n"], capture_output=True, timeout=30)
            keys = dict(line.split(b"\t") for line in out.stdout.splitlines() if b"\t" in line)
            return keys if {b"grpcurl-1", b"kcat-1"} <= set(keys) else None
        keys = wait_for(kcat_results, 30, "kcat to read results for grpcurl-1 and kcat-1", interval=0.3)
        assert int(keys[b"kcat-1"]) > 0
        # and the value decodes as a Result with python protobuf
        got = m.kafka.read(res, m.results_start, until=lambda recs: any(k == b"kcat-1" for k, _, _ in recs),
                           timeout=30, what="the kcat-1 result")
        result = pb.Result.FromString(next(v for k, v, _ in got if k == b"kcat-1"))
        assert result.output == b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    finally:
        m.close()
