/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Kafka producer: idempotent, acks=all, tuned for batches (see
 * docs/performance.md). Every message carries an em_delivery_t whose done()
 * runs on the producer's poll thread with the delivery report; that report is
 * the only thing that makes a message "stored".
 *
 * A probe thread asks the cluster for metadata every probe interval and sets
 * or clears the health blocker "kafka", so a service whose job needs the
 * producer is SERVING only while the cluster answers.
 *
 * A fatal error of the idempotent producer (RD_KAFKA_RESP_ERR__FATAL, after
 * which librdkafka refuses every produce) is recovered from inside: the
 * health blocker "kafka fatal error: NAME" is set (NAME: the underlying
 * error, e.g. OUT_OF_ORDER_SEQUENCE_NUMBER), a new librdkafka producer
 * replaces the dead one, and the blocker is cleared once the probe reached
 * the cluster through the new one. Messages the dead producer still held
 * get their delivery report with err RD_KAFKA_RESP_ERR__FATAL (or their
 * broker's answer, when they were in flight), so callers fail or retry
 * them; a send in the moment between the error and the replacement fails
 * at once (EM_EKAFKA, no done()). When no new producer can be created the
 * process exits with status 1 after an error log line: a supervisor
 * restarts it.
 */
#ifndef EM_PRODUCER_H
#define EM_PRODUCER_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "em_config.h"
#include "em_error.h"
#include "em_health.h"
#include "em_kafka.h"

#include "em_sizes.h"

/* The Kafka settings of a service that produces (see em_producer_opts_from_config). */
#define EM_KAFKA_SETTINGS                                                                                    \
    {"kafka.bootstrap", EM_CFG_STR, "127.0.0.1:9092", 1, 4095, "Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]."}, \
    {"kafka.max_message_bytes", EM_CFG_INT, "1000000", 131072, 100000000,                                     \
     "The producer's message.max.bytes, the one limit every size of the mesh derives from (the largest "       \
     "execution is this minus 65536). Must not exceed the topics' max.message.bytes minus 588 (the broker "    \
     "default 1048588 allows up to 1048000); set it alike on every scheduler and sink, and set the "          \
     "executors' publish.max_result_bytes to it. Not settable through kafka.properties."},                   \
    {"kafka.properties", EM_CFG_STRLIST, "", 0, EM_KAFKA_MAX_PROPERTIES,                                                        \
     "Extra librdkafka properties as \"key=value\" strings, applied last. Not for what the kafka.security.*, "   \
     "kafka.ssl.* and kafka.sasl.* keys set (refused; never sasl.password)."},                                  \
    EM_KAFKA_SECURITY_SETTINGS,                                                                                 \
    {"kafka.topic_requests", EM_CFG_STR, "execmesh.requests", 1, 249, "Topic of incoming executions."},        \
    {"kafka.topic_results", EM_CFG_STR, "execmesh.results", 1, 249, "Topic every result is written to."},     \
    {"kafka.topic_dead", EM_CFG_STR, "execmesh.dead", 1, 249, "Topic for input that cannot be read (reason in header execmesh-error)."}, \
    {"kafka.linger_ms", EM_CFG_INT, "5", 0, 10000, "Producer linger.ms: how long to wait to fill a batch."},  \
    {"kafka.batch_size", EM_CFG_INT, "1000000", 1000, 100000000, "Producer batch.size in bytes."},             \
    {"kafka.message_timeout_ms", EM_CFG_INT, "30000", 1000, 3600000,                                            \
     "Producer message.timeout.ms: a message not stored by then fails (and its caller is told)."},           \
    {"kafka.queue_max_messages", EM_CFG_INT, "1000000", 1000, 10000000, "Producer queue.buffering.max.messages."}, \
    {"kafka.queue_max_kbytes", EM_CFG_INT, "1048576", 1024, 2097151, "Producer queue.buffering.max.kbytes."},    \
    {"kafka.probe_interval_ms", EM_CFG_INT, "1000", 100, 60000,                                                \
     "How often the producer asks the cluster for metadata; health is NOT_SERVING while it gets no answer."}

typedef struct em_producer em_producer_t;

/* Embed in the context that waits for deliveries. done() runs on the poll
 * thread once per message, with msg->err the outcome. */
typedef struct em_delivery {
    void (*done)(struct em_delivery *d, const rd_kafka_message_t *msg);
} em_delivery_t;

typedef struct em_producer_opts {
    const char *bootstrap;
    const char *client_id;
    const char *probe_topic;     /* must exist for the probe to pass */
    int linger_ms;
    int batch_size;
    int message_timeout_ms;
    int queue_max_messages;
    int queue_max_kbytes;
    int max_message_bytes;       /* message.max.bytes; 0: librdkafka's default (1000000) */
    int probe_interval_ms;
    const char *const *extra;    /* "key=value" librdkafka properties */
    size_t nextra;
    em_health_t *health;         /* optional: gets the "kafka" blocker */
} em_producer_opts_t;

/* Fills opts from the EM_KAFKA_SETTINGS keys of cfg (strings borrowed from
 * cfg); extra holds the kafka.properties strings (at most
 * EM_KAFKA_MAX_EXTRA are used). probe_topic and health are left for the caller. */
void em_producer_opts_from_config(const em_config_t *cfg, const char *client_id, const char *extra[EM_KAFKA_MAX_EXTRA],
                                  em_producer_opts_t *opts);

/* A service's validate hook checks these settings with em_kafka_check_config
 * (message.max.bytes and the security properties in kafka.properties are
 * refused: kafka.max_message_bytes and the kafka.security/ssl/sasl keys set
 * them). em_producer_new refuses (NULL, errstr naming the user or the CA) a
 * start whose brokers refuse the SASL credentials or fail the TLS checks
 * (em_kafka_preflight, only when security.protocol is not plaintext). */

em_producer_t *em_producer_new(const em_producer_opts_t *opts, char *errstr, size_t errstr_size);
/* Stops the threads and destroys the handle; messages still queued are
 * purged and their deliveries fail with _PURGE_QUEUE. Flush first. */
void em_producer_destroy(em_producer_t *p);

/* The handle of topic name (copied), created on first use and valid for the
 * producer's life, also across its recovery from a fatal error. Any thread.
 * NULL when out of memory or past 8 topics.
 *
 * An escape hatch kept for the callers' types only: the handle is the
 * producer's own token typed as rd_kafka_topic_t *, not a librdkafka
 * handle (those die with the producer they belong to). Pass it to
 * em_producer_send and em_producer_send_batch of the same producer, never
 * to an rd_kafka_* function. */
rd_kafka_topic_t *em_producer_topic(em_producer_t *p, const char *name);

/* Enqueues one message for t (from em_producer_topic; EM_EINVAL for
 * anything else). key/val are copied when copy is set, else they must live
 * until d->done runs. headers (may be NULL) is taken on success. On failure
 * d->done is never called and the caller still owns headers. Any thread. */
em_err_t em_producer_send(em_producer_t *p, rd_kafka_topic_t *t, const void *key, size_t klen, const void *val,
                          size_t vlen, rd_kafka_headers_t *headers, int copy, em_delivery_t *d);

/* Enqueues msgs[0..n) for t (no headers; payloads not copied, so they must
 * live until their done() ran; msgs[i]._private is the em_delivery_t). Returns
 * how many were enqueued; the others have msgs[i].err set and get no done(). */
int em_producer_send_batch(em_producer_t *p, rd_kafka_topic_t *t, rd_kafka_message_t *msgs, int n);

/* Waits up to timeout_ms for every queued message's delivery report (also
 * when the producer is replaced meanwhile). */
em_err_t em_producer_flush(em_producer_t *p, int timeout_ms);

/* 1 when the last probe reached the cluster. */
int em_producer_reachable(em_producer_t *p);
/* Messages queued and not yet reported. */
int em_producer_outq(em_producer_t *p);
/* The librdkafka producer in use now, for tests and diagnostics: it is
 * destroyed when a fatal error replaces it, so do not keep it. */
rd_kafka_t *em_producer_handle(em_producer_t *p);

#endif
