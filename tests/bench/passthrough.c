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
 *                        [--linger 5] [--fetch-wait 10] [--latency 1]
 * Prints "passthrough count=N seconds=S rate=R" where S runs from the first
 * record consumed to the final commit of the last offset.
 *
 * --latency 1 is the open-loop floor: the same three Kafka legs as the mesh
 * (the generator's produce, this consume, this produce) without gRPC. It
 * reads from the end of the topic as it is when it gets its partitions (run
 * it before the generator; it prints
 * "passthrough assigned" once it owns its partitions), takes each record as
 * soon as it is fetched, gives the output record the input's timestamp (the
 * generator's scheduled time) and adds "p50_ms= p99_ms= p999_ms=" from
 * that time to the output's delivery report.
 */
#include "bench_common.h"
#include "em_util.h"
#include "em_watermark.h"

#define MAXP 4096

static em_watermark_t *wm[MAXP];
static int64_t delivered, failed;
/* --latency: delivery latency from the record's timestamp, in ms buckets */
#define LAT_BUCKETS 60000
static int64_t lat_hist[LAT_BUCKETS + 1];
static int latency_mode;

/* --latency: the opaque of a produced record (its tag and its input's
 * timestamp; the mock cluster answers produces with a dummy LogAppendTime,
 * so the delivery report's own timestamp cannot be used) */
typedef struct {
    uintptr_t tag;
    int64_t ts;
} lat_rec_t;

static void dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    uintptr_t tag = (uintptr_t)m->_private;
    if (latency_mode) {
        lat_rec_t *r = m->_private;
        tag = r->tag;
        if (!m->err) {
            int64_t ms = em_now_unix_ms() - r->ts;
            lat_hist[ms < 0 ? 0 : ms < LAT_BUCKETS ? ms : LAT_BUCKETS]++;
        }
        free(r);
    }
    if (m->err) {
        failed++;
        return;
    }
    delivered++;
    em_watermark_done(wm[tag >> 40], tag & ((1ull << 40) - 1));
}

/* The upper bound of the ms bucket holding quantile q. */
static int64_t lat_quantile(double q) { return bench_hist_quantile(lat_hist, LAT_BUCKETS, q); }

static void rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque) {
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* start at the end as it is now, so every record the generator
         * sends after "assigned" is read */
        for (int i = 0; i < parts->cnt; i++) {
            int64_t lo, hi;
            if (rd_kafka_query_watermark_offsets(rk, parts->elems[i].topic, parts->elems[i].partition, &lo, &hi,
                                                 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
                fprintf(stderr, "passthrough: cannot read the end offset of partition %d\n", parts->elems[i].partition);
                exit(2);
            }
            parts->elems[i].offset = hi;
        }
        rd_kafka_assign(rk, parts);
        printf("passthrough assigned %d\n", parts->cnt);
        fflush(stdout);
    } else {
        rd_kafka_assign(rk, NULL);
    }
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

    latency_mode = bench_opt_ll(argc, argv, "--latency", 0) != 0;
    rd_kafka_conf_t *pc = bench_producer_conf(bootstrap, bench_opt(argc, argv, "--linger", "5"));
    rd_kafka_conf_set_dr_msg_cb(pc, dr);
    rd_kafka_t *prod = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof(err));
    rd_kafka_conf_t *cc = bench_consumer_conf(bootstrap, bench_opt(argc, argv, "--group", "passthrough"));
    bench_set(cc, "fetch.wait.max.ms", bench_opt(argc, argv, "--fetch-wait", "10"));
    if (latency_mode) {
        bench_set(cc, "auto.offset.reset", "latest");
        rd_kafka_conf_set_rebalance_cb(cc, rebalance);
    }
    rd_kafka_t *cons = rd_kafka_new(RD_KAFKA_CONSUMER, cc, err, sizeof(err));
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
        ssize_t n = rd_kafka_consume_batch_queue(q, 100, msgs, latency_mode ? 1 : 1000);
        if (latency_mode && n == 1) { /* take what is already fetched, without waiting for a full batch */
            ssize_t more = rd_kafka_consume_batch_queue(q, 0, msgs + 1, 999);
            if (more > 0)
                n += more;
        }
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
                    if (latency_mode) {
                        lat_rec_t *r = malloc(sizeof(*r));
                        if (!r)
                            abort();
                        *r = (lat_rec_t){tag, rd_kafka_message_timestamp(m, NULL)};
                        while (rd_kafka_producev(prod, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                                 RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_KEY(m->key, m->key_len),
                                                 RD_KAFKA_V_TIMESTAMP(r->ts), RD_KAFKA_V_OPAQUE(r),
                                                 RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR)
                            rd_kafka_poll(prod, 1);
                    } else {
                        while (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, m->payload, m->len,
                                                m->key, m->key_len, (void *)tag) != 0)
                            rd_kafka_poll(prod, 1);
                    }
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
    printf("passthrough count=%lld consumed=%lld delivered=%lld failed=%lld seconds=%.3f rate=%.0f", count,
           (long long)consumed, (long long)delivered, (long long)failed, secs, secs > 0 ? (double)delivered / secs : 0);
    if (latency_mode)
        printf(" p50_ms=%lld p99_ms=%lld p999_ms=%lld", (long long)lat_quantile(0.5), (long long)lat_quantile(0.99),
               (long long)lat_quantile(0.999));
    printf("\n");
    rd_kafka_consumer_close(cons);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(cons);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(prod);
    for (int p = 0; p < MAXP; p++)
        em_watermark_destroy(wm[p]);
    return delivered == count ? 0 : 1;
}
