/* SPDX-License-Identifier: Apache-2.0 */
/*
 * em-bench-fill: writes executions to the requests topic, as fast as it can
 * (--rate 0, the closed-loop backlog) or at a fixed rate (open loop). Open
 * loop is free of coordinated omission: execution i is *scheduled* at
 * t0 + i/rate and carries that time in submitted_unix_ms whatever happens
 * to the sending, so a stalled mesh shows up as latency, not as fewer sends.
 * The record's Kafka timestamp is that scheduled time too.
 *
 *   em-bench-fill --bootstrap B --topic T --count N [--rate R] [--payload 100]
 *                 [--prefix b-] [--handler echo] [--linger 5] [--measure-dr 1]
 *                 [--warmup-topic W]
 * --measure-dr 1 also reports the delivery-report latency of the messages it
 * sent, from each one's scheduled time when --rate is given: Kafka's own
 * produce latency at that rate on this machine, the floor under the mesh's.
 * --warmup-topic W: before starting the clock, learn the topic's leaders and
 * have one record delivered to W (the producer id acquired).
 * Prints "fill count=N seconds=S rate=R behind_max_ms=L".
 */
#include <time.h>

#include "bench_common.h"
#include "em_util.h"
#include "execmesh/v1/execmesh.pb-c.h"

static int64_t delivered, failed;
/* --measure-dr: each message's delivery-report latency, in 0.1 ms buckets */
#define DR_BUCKETS 20000
static int64_t dr_hist[DR_BUCKETS + 1];

static void dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    if (m->err)
        failed++;
    else
        delivered++;
    if (m->_private) {
        int64_t us = (em_mono_ns() - (int64_t)(uintptr_t)m->_private) / 1000;
        int64_t b = us / 100;
        dr_hist[b < DR_BUCKETS ? b : DR_BUCKETS]++;
    }
}

static double dr_quantile(double q) { return bench_hist_quantile(dr_hist, DR_BUCKETS, q) / 10.0; }

/* Before t0: the target topic's leaders known and, for the idempotent
 * producer, its producer id acquired (a fresh broker can take seconds to
 * answer InitProducerId): one record to another topic, delivered. Without
 * this an open loop would charge the generator's own start-up to the mesh. */
static int warm_up(rd_kafka_t *rk, rd_kafka_topic_t *rkt, const char *warmup) {
    const struct rd_kafka_metadata *md;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 30000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
    static char value[] = "warmup";
    rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(warmup), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                              RD_KAFKA_V_VALUE(value, sizeof(value) - 1), RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "warm-up produce to %s: %s\n", warmup, rd_kafka_err2str(e));
        return -1;
    }
    if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR || failed) {
        fprintf(stderr, "warm-up record to %s not delivered within 60 s\n", warmup);
        return -1;
    }
    delivered = 0;
    return 0;
}

int main(int argc, char **argv) {
    const char *bootstrap = bench_opt(argc, argv, "--bootstrap", "127.0.0.1:9092");
    const char *topic = bench_opt(argc, argv, "--topic", "execmesh.requests");
    const char *prefix = bench_opt(argc, argv, "--prefix", "b-");
    const char *handler = bench_opt(argc, argv, "--handler", "echo");
    long long count = bench_opt_ll(argc, argv, "--count", 1000);
    double rate = (double)bench_opt_ll(argc, argv, "--rate", 0);
    long long psize = bench_opt_ll(argc, argv, "--payload", 100);
    int measure = bench_opt_ll(argc, argv, "--measure-dr", 0) != 0;
    char err[512];

    rd_kafka_conf_t *conf = bench_producer_conf(bootstrap, bench_opt(argc, argv, "--linger", "5"));
    rd_kafka_conf_set_dr_msg_cb(conf, dr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "producer: %s\n", err);
        return 2;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const char *warmup = bench_opt(argc, argv, "--warmup-topic", NULL);
    if (warmup && warm_up(rk, rkt, warmup) != 0)
        return 2;
    uint8_t *payload = malloc((size_t)psize);
    for (long long i = 0; i < psize; i++)
        payload[i] = (uint8_t)('a' + i % 26);
    uint8_t buf[4096];
    char id[64];
    Execmesh__V1__Execution ex = EXECMESH__V1__EXECUTION__INIT;
    ex.handler = (char *)(uintptr_t)handler;
    ex.payload.data = payload;
    ex.payload.len = (size_t)psize;
    ex.id = id;

    int64_t t0_ns = em_mono_ns(), t0_wall = em_now_unix_ms(), behind_max = 0;
    for (long long i = 0; i < count; i++) {
        int64_t due_ns = 0;
        if (rate > 0) {
            due_ns = t0_ns + (int64_t)((double)i * 1e9 / rate);
            int64_t now = em_mono_ns();
            if (due_ns > now + 200000) { /* ahead: serve reports, then sleep until due */
                rd_kafka_poll(rk, 0);
                struct timespec ts = {.tv_sec = due_ns / 1000000000, .tv_nsec = due_ns % 1000000000};
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            } else if (now - due_ns > behind_max) {
                behind_max = now - due_ns;
            }
            ex.submitted_unix_ms = t0_wall + (due_ns - t0_ns) / 1000000; /* the scheduled time */
        }
        snprintf(id, sizeof(id), "%s%lld", prefix, i);
        size_t len = execmesh__v1__execution__pack(&ex, buf);
        for (;;) {
            rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                                      RD_KAFKA_V_KEY(id, strlen(id)), RD_KAFKA_V_VALUE(buf, len),
                                                      RD_KAFKA_V_TIMESTAMP(rate > 0 ? ex.submitted_unix_ms : 0),
                                                      RD_KAFKA_V_OPAQUE(measure ? (void *)(uintptr_t)(due_ns ? due_ns : em_mono_ns()) : NULL),
                                                      RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
                break;
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
                return 1;
            }
            rd_kafka_poll(rk, 1);
        }
        if ((i & 1023) == 0)
            rd_kafka_poll(rk, 0);
    }
    while (rd_kafka_outq_len(rk) > 0)
        rd_kafka_poll(rk, 50);
    double secs = (double)(em_mono_ns() - t0_ns) / 1e9;
    printf("fill count=%lld delivered=%lld failed=%lld seconds=%.3f rate=%.0f behind_max_ms=%.1f", count,
           (long long)delivered, (long long)failed, secs, (double)count / secs, (double)behind_max / 1e6);
    if (measure)
        printf(" dr_p50_ms=%.1f dr_p99_ms=%.1f dr_p999_ms=%.1f", dr_quantile(0.5), dr_quantile(0.99), dr_quantile(0.999));
    printf("\n");
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    free(payload);
    return failed ? 1 : 0;
}
