# SPDX-License-Identifier: Apache-2.0
"""A real broker only (devkafka's topics have no max.message.bytes): a
dead letter the broker refuses as too large is cut until it fits, never
retried forever, and the offset moves on (the size model of
test_sizes.py, for a misconfigured dead-letter topic)."""
from confluent_kafka import Producer

from mesh import Mesh, execution


def test_a_dead_letter_the_broker_refuses_is_cut_until_it_fits():
    """A dead-letter topic whose max.message.bytes is below kafka.max_message_bytes
    (a misconfiguration): the broker refuses the dead letter as too large, and
    it is sent again cut to half as many bytes until it fits, never retried
    forever; the offset moves on."""
    from confluent_kafka.admin import AdminClient, ConfigResource
    m = Mesh("sizes-topic-limit")
    try:
        admin = AdminClient({"bootstrap.servers": m.kafka.bootstrap})
        res = ConfigResource("topic", m.topics["execmesh.dead"], set_config={"max.message.bytes": "300000"})
        for f in admin.alter_configs([res]).values():
            f.result(30)
        sink = m.start_sink()
        ex = m.start_executor([sink])
        sched = m.start_scheduler([ex])
        m.wait_assigned([sched], 6)
        req = m.topics["execmesh.requests"]
        orig = execution("sz-dead-small-topic", "echo", b"d" * 999_000).SerializeToString()
        p = Producer({"bootstrap.servers": m.kafka.bootstrap, "enable.idempotence": True,
                      "message.max.bytes": 2_000_000})
        p.produce(req, orig, key=b"sz-dead-small-topic")
        assert p.flush(60) == 0
        dead = m.kafka.read(m.topics["execmesh.dead"], m.dead_start, until=lambda r: len(r) >= 1, timeout=60,
                            what="the dead letter")
        key, value, headers = dead[0]
        h = {k: v.decode() for k, v in headers}
        assert key == b"sz-dead-small-topic" and value == orig[:len(value)] and len(value) < 300_000, len(value)
        assert h["execmesh-original-bytes"] == str(len(orig)), h
        err = h["execmesh-error"]
        assert err.startswith("too_large") and "dead-letter topic's max.message.bytes" in err, err
        m.wait_lag_zero(60)
        assert sched.log_events("the dead-letter topic refused a record as too large: its max.message.bytes is "
                                "below kafka.max_message_bytes; sending it cut to fit half as many bytes")
        print(f"\nSIZES dead letter cut to {len(value)} bytes for a topic limit of 300000")
    finally:
        m.close()
