/* SPDX-License-Identifier: Apache-2.0 */
/*
 * em-bench-passthrough: the Kafka limit the mesh is measured against, in the
 * same run on the same machine. Consumes the requests topic in a group,
 * produces each value unchanged to the output topic (idempotent, acks=all)
 * and commits a partition's offset only up to the contiguous watermark of
 * delivered messages (the same em_watermark the scheduler uses). No gRPC, no
 * decoding: the tuned settings of ../shared/kafka-and-speed-notes.md.
 *
 *   em-bench-passthrough --bootstrap B --group G --in T --out T2 --count N
 * Prints "passthrough count=N seconds=S rate=R" where S runs from the first
 * record consumed to the final commit of the last offset.
 */
#include "bench_common.h"
#include "em_util.h"
#include "em_watermark.h"

#define MAXP 4096

static em_watermark_t *wm[MAXP];
static int64_t delivered, failed;

static void dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    uintptr_t tag = (uintptr_t)m->_private;
    if (m->err) {
        failed++;
        return;
    }
    delivered++;
    em_watermark_done(wm[tag >> 40], tag & ((1ull << 40) - 1));
}

static int commit(rd_kafka_t *c, const char *topic, int64_t *last, int sync) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(64);
    for (int p = 0; p < MAXP; p++) {
        if (!wm[p])
            continue;
        int64_t off = em_watermark_committable(wm[p]);
        if (off >= 0 && off != last[p]) {
            rd_kafka_topic_partition_list_add(l, topic, p)->offset = off;
            last[p] = off;
        }
    }
    int n = l->cnt;
    if (n)
        rd_kafka_commit(c, l, !sync);
    rd_kafka_topic_partition_list_destroy(l);
    return n;
}

int main(int argc, char **argv) {
    const char *bootstrap = bench_opt(argc, argv, "--bootstrap", "127.0.0.1:9092");
    const char *in = bench_opt(argc, argv, "--in", "execmesh.requests");
    const char *out = bench_opt(argc, argv, "--out", "execmesh.results");
    long long count = bench_opt_ll(argc, argv, "--count", 1000);
    char err[512];
    static int64_t last[MAXP];
    for (int p = 0; p < MAXP; p++)
        last[p] = -1;

    rd_kafka_conf_t *pc = bench_producer_conf(bootstrap, "5");
    rd_kafka_conf_set_dr_msg_cb(pc, dr);
    rd_kafka_t *prod = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof(err));
    rd_kafka_t *cons = rd_kafka_new(RD_KAFKA_CONSUMER,
                                    bench_consumer_conf(bootstrap, bench_opt(argc, argv, "--group", "passthrough")),
                                    err, sizeof(err));
    if (!prod || !cons) {
        fprintf(stderr, "kafka: %s\n", err);
        return 2;
    }
    rd_kafka_poll_set_consumer(cons);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, in, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(cons, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(cons);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(prod, out, NULL);

    rd_kafka_message_t *msgs[1000];
    int64_t consumed = 0, t_first = 0, next_commit = 0, give_up = em_mono_ms() + 600000;
    while (delivered + failed < count && em_mono_ms() < give_up) {
        ssize_t n = rd_kafka_consume_batch_queue(q, 100, msgs, 1000);
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (!m->err && m->partition < MAXP) {
                if (!t_first)
                    t_first = em_mono_ns();
                if (!wm[m->partition])
                    wm[m->partition] = em_watermark_new();
                uint64_t seq;
                if (em_watermark_track(wm[m->partition], m->offset, &seq) == EM_OK) {
                    uintptr_t tag = ((uintptr_t)m->partition << 40) | seq;
                    while (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, m->payload, m->len, m->key,
                                            m->key_len, (void *)tag) != 0)
                        rd_kafka_poll(prod, 1);
                    consumed++;
                }
            }
            rd_kafka_message_destroy(m);
        }
        rd_kafka_poll(prod, 0);
        if (em_mono_ms() >= next_commit) {
            commit(cons, in, last, 0);
            next_commit = em_mono_ms() + 100;
        }
    }
    while (rd_kafka_outq_len(prod) > 0)
        rd_kafka_poll(prod, 10);
    commit(cons, in, last, 1);
    double secs = t_first ? (double)(em_mono_ns() - t_first) / 1e9 : 0;
    printf("passthrough count=%lld consumed=%lld delivered=%lld failed=%lld seconds=%.3f rate=%.0f\n", count,
           (long long)consumed, (long long)delivered, (long long)failed, secs, secs > 0 ? (double)delivered / secs : 0);
    rd_kafka_consumer_close(cons);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(cons);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(prod);
    for (int p = 0; p < MAXP; p++)
        em_watermark_destroy(wm[p]);
    return delivered == count ? 0 : 1;
}
