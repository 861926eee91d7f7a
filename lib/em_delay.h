/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Durable waits. Something that must wait (a retry waiting out its backoff;
 * later, an execution waiting for a resource) waits in Kafka, never in a
 * process's memory: em_delay_send writes it to a delay topic with two
 * headers, EM_DELAY_HDR_DUE (decimal unix milliseconds, "not before") and
 * EM_DELAY_HDR_TARGET (the topic to hand it to), and a delay runner
 * (em_delay_new: one per scheduler process, all in one consumer group of
 * their own) forwards it to its target once it is due: same key, same value,
 * same headers minus the two delay headers, plus EM_DELAY_HDR_FROM =
 * "<delay topic>/<partition>/<offset>".
 *
 * Guarantees. At least once, never lost: a delay record's offset is
 * committed only after the target's delivery report said the forward is
 * stored, so a crash or a rebalance forwards it again (a duplicate: the
 * reader dedups by id). A forward whose delivery fails is retried with a
 * bounded backoff and its partition moves past it neither in forwarding nor
 * in commits. A record without a valid due header is forwarded at once; one
 * without a valid target is logged (naming partition and offset), skipped and
 * committed, so no partition is ever stuck on it.
 *
 * Nothing waits in memory. A partition's records are forwarded in offset
 * order; when its next record is not due, the runner pauses the partition in
 * librdkafka, seeks it back to that record and resumes it when the record is
 * due (a monotonic wait computed from the wall-clock due time), so a backlog
 * of millions of waiting records costs no memory. The price is head-of-line
 * blocking: a record waits behind the records before it in its partition, so
 * it can be forwarded later than its due time by at most (the latest due time
 * of the records before it - its own due time); with every writer delaying by
 * at most the retry backoff cap, that is at most the cap. Due times are wall
 * clock (they cross processes): a record is never forwarded before its due
 * time by this host's clock.
 *
 * Threads: the runner has its own thread, which owns its consumer and all
 * its state; delivery reports arrive on the producer's poll thread and are
 * handed over through a locked list and a wake-up of the consumer queue.
 */
#ifndef EM_DELAY_H
#define EM_DELAY_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "em_error.h"
#include "em_metrics.h"
#include "em_producer.h"

/* Header names (the values are not NUL-terminated in Kafka). */
#define EM_DELAY_HDR_DUE "execmesh-due-ms"
#define EM_DELAY_HDR_TARGET "execmesh-target"
#define EM_DELAY_HDR_FROM "execmesh-delayed-from"

typedef struct em_delay em_delay_t;

typedef struct em_delay_opts {
    const char *bootstrap;
    const char *group;            /* the runners' own group, e.g. "<scheduler group>.delay" */
    const char *topic;            /* the delay topic */
    const char *client_id;        /* "execmesh-delay" when NULL */
    const char *const *extra;     /* "key=value" librdkafka properties, applied last */
    size_t nextra;
    em_producer_t *producer;      /* borrowed: forwards go out through it (each target topic takes one
                                   * of its em_producer_topic slots); must outlive the runner */
    int commit_interval_ms;       /* how often finished offsets are committed; 1000 when 0 */
    int max_inflight;             /* forwards produced and not yet reported; 1000 when 0 */
    em_metrics_t *metrics;        /* optional: registers the execmesh_delay_* metrics (so call
                                   * before em_metrics_start) */
} em_delay_opts_t;

/* Joins the group, subscribes to the delay topic and starts the runner's
 * thread. Strings in o are copied. NULL with the reason in errstr on error;
 * then nothing was started. */
em_delay_t *em_delay_new(const em_delay_opts_t *o, char *errstr, size_t errstr_size);

/* Stops the thread, waits a bounded time for forwards in flight to be
 * reported, commits what is done and leaves the group. A forward still
 * unreported then is forwarded again by the next owner. Call before the
 * producer is destroyed. NULL is a no-op. */
void em_delay_destroy(em_delay_t *d);

/* Writes a waiting record to delay_topic (em_producer_topic of p): key and val are
 * copied; headers (may be NULL) are the record's own headers and are taken
 * on success; the two delay headers are added (replacing any already there).
 * due_unix_ms: wall-clock unix milliseconds, not before which the record is
 * forwarded (>= 0). target_topic: where it is forwarded (a valid Kafka topic
 * name). d->done runs once on p's poll thread with the outcome of the write
 * to the delay topic, as em_producer_send. EM_EINVAL for a bad argument;
 * on any failure d->done never runs and the caller still owns headers,
 * unchanged. Any thread. */
em_err_t em_delay_send(em_producer_t *p, rd_kafka_topic_t *delay_topic, const void *key, size_t klen,
                       const void *val, size_t vlen, rd_kafka_headers_t *headers, int64_t due_unix_ms,
                       const char *target_topic, em_delivery_t *d);

#endif
