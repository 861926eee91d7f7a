# SPDX-License-Identifier: Apache-2.0
"""Sizes that agree end to end (the size model in lib/em_producer.h): every
limit derives from kafka.max_message_bytes (L = 1,000,000 here), and 65,536
bytes of it are kept for what the mesh adds to an execution's result, so the
largest execution is 934,464 bytes.

- A 900,000-byte `echo` through Submit and one produced straight to the
  requests topic end SUCCEEDED, their output byte-equal.
- 999,000 and 1,040,000 bytes through Submit get INVALID_ARGUMENT naming the
  index and the limit (also beside a valid execution, and when only the
  execution as written to Kafka, not its payload, is too large), and write
  nothing.
- The same sizes produced straight to the topic are dead-lettered, the reason
  naming the size and the limit; the one too large to dead-letter whole is
  cut to fit, its original size in header execmesh-original-bytes.
- An exec handler writing 1,040,000 bytes (its max_output_bytes raised to
  let it through) ends FAILED, final, naming the result's size and
  publish.max_result_bytes, its output dropped.
- A Submit of 5 x 900,000 bytes is dispatched in several Execute batches
  (dispatch.batch_max_bytes = 2 MiB, the executor's gRPC cap 2.2 MB) and its
  results published in groups of one (publish.group_max_bytes = 1 MiB, the
  sink's gRPC cap 1.2 MB): no gRPC message passes a cap, and all complete.
- A retry record (attempt 2) of 976,000 bytes is taken past input.max_bytes,
  and its failure ends EXHAUSTED although an attempt is left: the next
  attempt's record would pass publish.max_result_bytes - 24,576.
- Afterwards the group's committed offsets reach the end of every partition
  and every execution has exactly one result, final.
On the real broker, also: a dead-letter topic whose max.message.bytes is
below L refuses a dead letter, which is sent again cut smaller until it fits.
"""
import os
import re
import types

import grpc
import pytest
from confluent_kafka import Producer

from mesh import Mesh, execution, free_port, pb, read_all_results, status_name, wait_for

L = 1_000_000
LARGEST = L - 65536  # 934,464: the largest execution


def executor_config(d):
    path = os.path.join(d, "executor.cfg")
    with open(path, "w") as f:
        f.write("""
handlers = {
  builtin = [ "echo", "fail" ];
  exec = [ "big" ];
};
exec = {
  big = { argv = [ "/bin/sh", "-c", "head -c 1040000 /dev/zero" ]; max_output_bytes = 2000000; };
};
""")
    return path


def refused(stub, executions):
    with pytest.raises(grpc.RpcError) as e:
        stub.Submit(pb.SubmitRequest(executions=executions), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    return e.value.details()


def test_sizes_end_to_end():
    m = Mesh("sizes", partitions=12)
    try:
        # Nothing runs until every execution waits in the scheduler: its
        # executor starts last, and one Execute call at a time, so the
        # batches are formed by the byte cap, not by arrival times.
        sink = m.start_sink(args=["--set", "grpc.max_message_bytes=1200000"])
        ex_addr = f"127.0.0.1:{free_port()}"
        sched = m.start_scheduler([types.SimpleNamespace(grpc_addr=ex_addr)],
                                  args=["--set", "dispatch.batch_max_bytes=2097152", "--set", "dispatch.max_calls=1"])
        m.wait_assigned([sched], 12)
        stub = m.stub(sched)
        req = m.topics["execmesh.requests"]

        # refused by Submit, naming the index, the size and the limit; nothing written
        before = m.kafka.end_offsets(req)
        for n in (999_000, 1_040_000):
            d = refused(stub, [execution(f"sz-refused-{n}", "echo", b"r" * n)])
            assert "executions[0]" in d and str(n) in d and str(LARGEST) in d, d
            d = refused(stub, [execution(f"sz-fine-{n}", "echo", b"ok"), execution(f"sz-refused2-{n}", "echo", b"r" * n)])
            assert "executions[1]" in d and str(n) in d and str(LARGEST) in d, d
        # a payload under the limit whose execution, with its id, is over it
        d = refused(stub, [execution("i" * 200, "echo", b"p" * (LARGEST - 100))])
        got = re.search(r"executions\[0\]: (\d+) bytes as written to Kafka, at most (\d+)", d)
        assert got and int(got.group(1)) > LARGEST and int(got.group(2)) == LARGEST, d
        assert m.kafka.end_offsets(req) == before, "a refused Submit wrote to the requests topic"

        # accepted: through Submit, and straight to the topic
        want = {"sz-submit-900k": os.urandom(900_000)}
        multi = {f"sz-multi-{i}": os.urandom(900_000) for i in range(5)}
        stub.Submit(pb.SubmitRequest(executions=[execution("sz-submit-900k", "echo", want["sz-submit-900k"])]),
                    timeout=60)
        stub.Submit(pb.SubmitRequest(executions=[execution("sz-exec-big", "big", b"")]), timeout=60)
        stub.Submit(pb.SubmitRequest(executions=[execution(k, "echo", v) for k, v in multi.items()]), timeout=60)
        want.update(multi)
        want["sz-direct-900k"] = os.urandom(900_000)
        direct_big = {"sz-direct-999k": execution("sz-direct-999k", "echo", b"d" * 999_000).SerializeToString(),
                      "sz-direct-1040k": execution("sz-direct-1040k", "echo", b"e" * 1_040_000).SerializeToString()}
        p = Producer({"bootstrap.servers": m.kafka.bootstrap, "enable.idempotence": True, "linger.ms": 5,
                      "message.max.bytes": 2_000_000})
        p.produce(req, execution("sz-direct-900k", "echo", want["sz-direct-900k"]).SerializeToString(),
                  key=b"sz-direct-900k")
        for k, v in direct_big.items():
            p.produce(req, v, key=k.encode())
        # a retry (attempt 2, as the mesh writes them) is taken past input.max_bytes, up to L - 16384
        p.produce(req, execution("sz-direct-retry", "fail", b"f" * 976_000, attempt=2, max_attempts=3)
                  .SerializeToString(), key=b"sz-direct-retry")
        assert p.flush(60) == 0
        ids = set(want) | {"sz-exec-big", "sz-direct-retry"}

        # every execution waits in the scheduler (one in its blocked call)
        wait_for(lambda: sched.metric("execmesh_scheduler_pending") + sched.metric("execmesh_inflight") == len(ids),
                 60, f"all {len(ids)} executions to wait in the scheduler")
        ex = m.start("executor", "executor-0",
                     ["--set", f"sinks.target=ipv4:{sink.grpc_addr}", "--config", executor_config(m.dir),
                      "--set", "grpc.max_message_bytes=2200000", "--set", "publish.group_max_bytes=1048576"],
                     grpc_listen=ex_addr)

        res = read_all_results_until(m, ids)
        for k, payload in want.items():
            r = res[k][0]
            assert status_name(r.status) == "SUCCEEDED" and r.final, (k, status_name(r.status), r.error)
            assert r.output == payload, f"{k}: output of {len(r.output)} bytes differs from the payload"
        big = res["sz-exec-big"][0]
        assert status_name(big.status) == "FAILED" and big.final and big.output == b"", (big.status, big.error)
        got = re.search(r"result too large: (\d+) bytes, limit (\d+) \(publish.max_result_bytes\)", big.error)
        assert got and int(got.group(1)) > 1_040_000 and int(got.group(2)) == L, big.error
        # its failure is not retried although an attempt is left: the next record would pass L - 24576
        retry = res["sz-direct-retry"][0]
        assert status_name(retry.status) == "EXHAUSTED" and retry.final and retry.attempt == 2, retry
        assert "of 3 allowed: the attempt history is full" in retry.error and str(L - 24576) in retry.error, retry.error

        # the byte caps shaped the traffic: several batches, groups split
        # (7 of about 900,000 bytes or more, 2 per 2 MiB batch, besides the call that waited for the executor)
        calls = sched.metric("execmesh_scheduler_execute_calls_total")
        cuts = sched.metric("execmesh_scheduler_batch_byte_cuts_total")
        splits = ex.metric("execmesh_executor_group_splits_total")
        assert cuts >= 2 and calls >= 4, (cuts, calls)
        assert splits >= 1, splits
        assert sched.metric("execmesh_scheduler_busy_total") == 0
        assert ex.metric("execmesh_executor_publish_failed_total") == 0
        assert ex.metric("execmesh_executor_results_too_large_total") == 1
        assert ex.metric("execmesh_executor_history_full_total") == 1

        # the direct oversize records: dead letters naming size and limit; the one over L cut to fit
        dead = m.kafka.read(m.topics["execmesh.dead"], m.dead_start, until=lambda r: len(r) >= 2, timeout=60,
                            what="2 dead letters")
        assert len(dead) == 2, [d[0] for d in dead]
        for key, value, headers in dead:
            h = {k: v.decode() for k, v in headers}
            orig = direct_big[key.decode()]
            err = h["execmesh-error"]
            assert err.startswith("too_large") and str(len(orig)) in err and str(LARGEST) in err, err
            size = len(key) + len(value) + sum(len(k) + len(v) for k, v in headers)
            assert size <= L, f"dead letter {key} is {size} bytes"
            if len(orig) + len(key) + 64 + 200 <= L:
                assert value == orig and "execmesh-original-bytes" not in h, (key, len(value), err)
            else:
                assert "truncated" in err and h["execmesh-original-bytes"] == str(len(orig)), h
                assert len(value) < len(orig) and value == orig[:len(value)], (key, len(value))
        assert sched.metric("execmesh_scheduler_dead_truncated_total") == 1

        # every offset committed; every execution exactly one result, final
        took = m.wait_lag_zero(60)
        every = read_all_results(m)
        assert set(every) == ids, set(every) ^ ids
        for k, rs in every.items():
            assert len(rs) == 1 and rs[0].final, (k, [(status_name(r.status), r.attempt, r.final) for r in rs])
        print(f"\nSIZES executions={len(ids)} lost=0 duplicates=0 batches={calls:.0f} byte_cuts={cuts:.0f} "
              f"group_splits={splits:.0f} dead_letters=2 lag_zero_s={took:.1f}")
    finally:
        m.close()


def read_all_results_until(m, ids, timeout=120):
    """{id: [Result]} once every id in ids has a result."""
    out = {}

    def done():
        out.clear()
        out.update(read_all_results(m))
        return ids <= set(out)
    wait_for(done, timeout, f"results for all {len(ids)} executions", interval=0.5)
    return out
