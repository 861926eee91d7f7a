/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by the benchmark tools in tests/bench: the tuned librdkafka
 * settings from ../shared/kafka-and-speed-notes.md and a tiny option parser.
 * These tools are not part of the mesh; scripts/bench.sh drives them.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "--name value" from argv, or def. */
static inline const char *bench_opt(int argc, char **argv, const char *name, const char *def) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return def;
}

static inline long long bench_opt_ll(int argc, char **argv, const char *name, long long def) {
    const char *v = bench_opt(argc, argv, name, NULL);
    return v ? strtoll(v, NULL, 10) : def;
}

/* A latency histogram of n+1 buckets (the last one: everything beyond):
 * the number of buckets up to the one holding quantile q, i.e. the upper
 * bound of that bucket in bucket units; 0 when empty. */
static inline int bench_hist_quantile(const int64_t *hist, int n, double q) {
    int64_t total = 0, acc = 0;
    for (int i = 0; i <= n; i++)
        total += hist[i];
    for (int i = 0; i <= n; i++) {
        acc += hist[i];
        if (total && (double)acc >= q * (double)total)
            return i + 1;
    }
    return 0;
}

static inline void bench_set(rd_kafka_conf_t *c, const char *k, const char *v) {
    char e[512];
    if (rd_kafka_conf_set(c, k, v, e, sizeof(e)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka property %s=%s: %s\n", k, v, e);
        exit(2);
    }
}

/* The tuned producer: idempotent, acks=all, big batches. */
static inline rd_kafka_conf_t *bench_producer_conf(const char *bootstrap, const char *linger) {
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    bench_set(c, "bootstrap.servers", bootstrap);
    bench_set(c, "enable.idempotence", "true");
    bench_set(c, "acks", "all");
    bench_set(c, "linger.ms", linger);
    bench_set(c, "batch.size", "1000000");
    bench_set(c, "queue.buffering.max.messages", "2000000");
    bench_set(c, "queue.buffering.max.kbytes", "2097151");
    bench_set(c, "message.timeout.ms", "300000");
    bench_set(c, "socket.nagle.disable", "true");
    return c;
}

/* The tuned consumer (librdkafka 2.0 stalls fetching with the defaults). */
static inline rd_kafka_conf_t *bench_consumer_conf(const char *bootstrap, const char *group) {
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    bench_set(c, "bootstrap.servers", bootstrap);
    bench_set(c, "group.id", group);
    bench_set(c, "enable.auto.commit", "false");
    bench_set(c, "enable.auto.offset.store", "false");
    bench_set(c, "auto.offset.reset", "earliest");
    bench_set(c, "queued.min.messages", "1000000");
    bench_set(c, "queued.max.messages.kbytes", "524288");
    bench_set(c, "fetch.wait.max.ms", "10");
    bench_set(c, "socket.nagle.disable", "true");
    return c;
}

#endif
