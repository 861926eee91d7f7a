/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Durable cancels. A cancel is a record on the cancels topic, keyed by the
 * execution's id, its value an execmesh.v1.CancelRecord. Whoever may hold
 * the execution must see it: the scheduler that owns its partition of the
 * requests topic (or of the delay topic, for a waiting retry) — and the
 * cancels topic is not co-partitioned with those under the group's
 * assignor, so every reader reads every partition of the cancels topic
 * (assigned, no group), from its oldest record; give the topic a retention
 * of about remember_ms (older records are skipped as they are read).
 *
 * The reader keeps the ids it read in a set that forgets them after
 * remember_ms (and the oldest first beyond max_ids), so a cancel that
 * arrives before its execution still wins while it is remembered. It tells
 * its owner of each new cancel (on_cancel, on the reader's thread), so
 * executions already dispatched can be stopped. em_cancels_ready says when
 * the reader has read up to the end of every partition as it was at start:
 * before that, an execution may be cancelled without the set knowing yet.
 */
#ifndef EM_CANCELS_H
#define EM_CANCELS_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"
#include "em_metrics.h"
#include "em_producer.h"

typedef struct em_cancels em_cancels_t;

typedef struct em_cancels_opts {
    const char *bootstrap;
    const char *topic;
    const char *client_id;        /* "execmesh-cancels" when NULL */
    const char *const *extra;     /* "key=value" librdkafka properties, applied last */
    size_t nextra;
    int64_t remember_ms;          /* cancels older than this are forgotten (and skipped when read); 86400000 when 0 */
    size_t max_ids;               /* most ids remembered, the oldest forgotten first; 1000000 when 0 */
    /* each cancel not already remembered, on the reader's thread (may be NULL) */
    void (*on_cancel)(void *ctx, const uint8_t *id, size_t len);
    void *ctx;
    em_metrics_t *metrics;        /* optional: execmesh_cancels_* metrics */
} em_cancels_opts_t;

/* Starts the reader (its own consumer and thread). NULL with the reason in
 * errstr (an unknown topic included). */
em_cancels_t *em_cancels_new(const em_cancels_opts_t *o, char *errstr, size_t errstr_size);
void em_cancels_destroy(em_cancels_t *c);

/* Is id cancelled (and still remembered)? Any thread. */
int em_cancels_has(em_cancels_t *c, const uint8_t *id, size_t len);

/* 1 once every partition was read up to its end offset as it was at start. */
int em_cancels_ready(em_cancels_t *c);

/* No cancel remembered: a check without taking the set's lock (the hot
 * path asks this before em_cancels_has). */
int em_cancels_empty(em_cancels_t *c);

/* Ids remembered now. */
size_t em_cancels_count(em_cancels_t *c);

/* Writes a cancel of id to topic (a handle of p). d->done runs once with the
 * outcome, as em_producer_send; on failure it never runs. */
em_err_t em_cancels_send(em_producer_t *p, rd_kafka_topic_t *topic, const char *id, size_t len, em_delivery_t *d);

#endif
