# SPDX-License-Identifier: Apache-2.0
"""GET /livez on the metrics port, the Kubernetes liveness probe
(deploy/k8s): 200 while the process's loops turn (the gRPC loop, the
scheduler's consumer loop), whatever the health says. With Kafka gone the
scheduler and the sink go NOT_SERVING (no restart wanted: they recover when
the broker is back) and /livez stays 200 for several times
liveness.stall_ms. The verdict itself (503 naming a stalled loop) is a unit
test (tests/unit/test_health.c)."""
import signal
import time

from mesh import NOT_SERVING, Mesh, wait_for

STALL_MS = 1000


def test_livez_stays_live_through_a_broker_outage():
    m = Mesh("livez")
    try:
        args = ["--set", f"liveness.stall_ms={STALL_MS}"]
        sink = m.start_sink(args=args)
        ex = m.start_executor([sink], args=args)
        sched = m.start_scheduler([ex], args=args)
        m.wait_assigned([sched], 6)
        procs = [sink, ex, sched]
        for p in procs:
            assert p.post("/livez", method="GET") == (200, "live\n"), p.name
        assert sched.post("/livez/x", method="GET")[0] == 404

        m.kafka.proc.signal(signal.SIGKILL)  # the broker is gone
        wait_for(lambda: sched.health_check() == NOT_SERVING and sink.health_check() == NOT_SERVING, 60,
                 "the scheduler and the sink to go NOT_SERVING without Kafka", interval=0.2)
        seen = 0
        end = time.monotonic() + 4 * STALL_MS / 1000
        while time.monotonic() < end:  # several stall bounds, every process asked again and again
            for p in procs:
                code, body = p.post("/livez", method="GET")
                assert code == 200, f"{p.name} /livez during the outage: {code} {body}"
                seen += 1
        assert all(p.alive() for p in procs)
        print(f"\nLIVEZ answers during the outage: {seen}, all 200 (liveness.stall_ms {STALL_MS})")
    finally:
        m.close()
