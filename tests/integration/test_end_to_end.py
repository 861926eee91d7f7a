# SPDX-License-Identifier: Apache-2.0
"""10,000 executions through 2 schedulers, 2 executors and 2 sinks: half
produced straight to the requests topic (half of those without an id, so the
mesh gives them "<topic>/<partition>/<offset>"), half through Scheduler.Submit
from python grpcio. Every id must have a terminal result on the results topic,
none missing, and the committed offsets must cover every input record."""
import threading
import time

from mesh import Mesh, execution, pb, results_by_id, status_name

N = 10_000
PARTITIONS = 6


def test_ten_thousand_executions_none_lost():
    m = Mesh("e2e", partitions=PARTITIONS)
    try:
        sinks = [m.start_sink(f"sink-{i}") for i in range(2)]
        execs = [m.start_executor(sinks, f"executor-{i}") for i in range(2)]
        scheds = [m.start_scheduler(execs, f"scheduler-{i}") for i in range(2)]
        m.wait_assigned(scheds, PARTITIONS)
        req_topic = m.topics["execmesh.requests"]
        req_start = m.kafka.end_offsets(req_topic)

        expected = {}  # id -> payload
        lock = threading.Lock()
        errors = []
        t0 = time.monotonic()

        def produce_half():
            p = m.kafka.producer()
            pending = []

            def on_delivery(err, msg, payload=None):
                if err:
                    errors.append(f"produce failed: {err}")
                    return
                if payload is not None:  # no id given: the mesh names it topic/partition/offset
                    with lock:
                        expected[f"{msg.topic()}/{msg.partition()}/{msg.offset()}"] = payload
            for i in range(N // 2):
                payload = f"kafka-payload-{i}".encode()
                if i % 2 == 0:
                    eid = f"kafka-{i}"
                    with lock:
                        expected[eid] = payload
                    p.produce(req_topic, execution(eid, payload=payload).SerializeToString(), key=eid,
                              on_delivery=on_delivery)
                else:
                    p.produce(req_topic, execution("", payload=payload).SerializeToString(),
                              on_delivery=lambda err, msg, pl=payload: on_delivery(err, msg, pl))
                p.poll(0)
            left = p.flush(60)
            if left:
                errors.append(f"{left} produced records not delivered")

        def submit_half():
            stubs = [m.stub(s) for s in scheds]
            for b in range(N // 2 // 100):
                batch = []
                for k in range(100):
                    i = b * 100 + k
                    payload = f"submit-payload-{i}".encode()
                    # every other batch leaves the ids to the scheduler
                    batch.append(execution(f"submit-{i}" if b % 2 == 0 else "", payload=payload))
                resp = stubs[b % 2].Submit(pb.SubmitRequest(executions=batch), timeout=30)
                assert len(resp.ids) == 100
                with lock:
                    for ex, eid in zip(batch, resp.ids):
                        assert eid, "Submit returned an empty id"
                        if ex.id:
                            assert eid == ex.id
                        expected[eid] = ex.payload

        threads = [threading.Thread(target=produce_half), threading.Thread(target=submit_half)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        assert len(expected) == N, f"{len(expected)} ids recorded, expected {N}"

        res_topic = m.topics["execmesh.results"]
        records = m.kafka.read(res_topic, m.results_start,
                               until=lambda recs: len(recs) >= N and set(expected) <= {
                                   r.id for r in map(lambda x: pb.Result.FromString(x[1]), recs)},
                               timeout=180, what=f"a result for each of the {N} ids")
        wall = time.monotonic() - t0
        got = results_by_id(records)
        lost = [i for i in expected if i not in got]
        duplicates = sum(len(v) - 1 for v in got.values())
        unknown = [i for i in got if i not in expected]
        assert not lost, f"{len(lost)} executions lost, e.g. {lost[:5]}"
        assert not unknown, f"results for ids never submitted: {unknown[:5]}"
        for eid, rs in got.items():
            for r in rs:
                assert status_name(r.status) == "SUCCEEDED", (eid, status_name(r.status), r.error)
                assert r.output == expected[eid], (eid, r.output, expected[eid])
                assert r.attempt >= 1 and r.executor.startswith("executor-")

        # the committed offsets cover every input record (wait: commits are every 100 ms)
        req_end = m.kafka.end_offsets(req_topic)
        assert sum(req_end.values()) - sum(req_start.values()) == N

        committed = m.wait_committed(req_start, req_end)
        print(f"\nE2E executions={N} lost={len(lost)} duplicates={duplicates} wall_s={wall:.2f} "
              f"results_read={len(records)} committed={sum(committed.values())}")
    finally:
        m.close()
