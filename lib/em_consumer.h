/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Kafka consumer-group member: manual commits only (the owner commits
 * its watermarks), earliest reset, the tuned fetch settings, and the
 * rebalance protocol handled here (cooperative incremental or eager) so the
 * owner only hears "assigned" and "revoked". All callbacks run on the thread
 * that calls em_consumer_poll (or em_consumer_close).
 */
#ifndef EM_CONSUMER_H
#define EM_CONSUMER_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "em_config.h"
#include "em_error.h"
#include "em_kafka.h"

/* The consumer-group settings (see em_consumer_opts_from_config). */
#define EM_CONSUMER_SETTINGS                                                                                 \
    {"kafka.group_id", EM_CFG_STR, "execmesh", 1, 249, "Consumer group of the schedulers."},                  \
    {"kafka.instance_id", EM_CFG_STR, "", 0, 249,                                                               \
     "Static membership (group.instance.id): a restart within the session timeout keeps the partitions."},    \
    {"kafka.assignor", EM_CFG_STR, "roundrobin", 1, 255,                                                       \
     "partition.assignment.strategy. Eager (roundrobin, range) by default: before librdkafka 2.10 a commit "  \
     "during a cooperative-sticky rebalance can lose the assignment (librdkafka issue 4059, fixed by PR 4908 in 2.10.0)."}, \
    {"kafka.session_timeout_ms", EM_CFG_INT, "6000", 1000, 3600000,                                            \
     "A scheduler silent this long loses its partitions to the others."},                                     \
    {"kafka.heartbeat_ms", EM_CFG_INT, "1000", 100, 3600000, "Group heartbeat interval."},                      \
    {"kafka.max_poll_interval_ms", EM_CFG_INT, "300000", 1000, 86400000, "max.poll.interval.ms."},             \
    {"kafka.queued_min_messages", EM_CFG_INT, "1000000", 1, 10000000,                                          \
     "queued.min.messages: prefetch target; librdkafka 2.0 stalls fetching below the limit otherwise."},     \
    {"kafka.queued_max_kbytes", EM_CFG_INT, "16384", 1024, 2097151,                                             \
     "queued.max.messages.kbytes: the prefetch bound. It counts record bytes only: with 100-byte executions "  \
     "the prefetch costs about 6x this in RSS (16384: ~180 MB peak with a backlog)."},                        \
    {"kafka.fetch_wait_max_ms", EM_CFG_INT, "10", 0, 10000, "fetch.wait.max.ms."},                             \
    {"kafka.commit_interval_ms", EM_CFG_INT, "100", 10, 60000,                                                 \
     "How often finished offsets are committed (asynchronously; synchronously on revoke and drain)."},        \
    {"kafka.poll_batch", EM_CFG_INT, "1024", 1, 100000, "Most messages taken from the consumer per poll."}

typedef struct em_consumer em_consumer_t;

typedef struct em_consumer_opts {
    const char *bootstrap;
    const char *client_id;
    const char *group_id;
    const char *instance_id;     /* static membership when non-empty */
    const char *assignor;        /* partition.assignment.strategy */
    int session_timeout_ms;
    int heartbeat_ms;
    int max_poll_interval_ms;
    int queued_min_messages;
    int queued_max_kbytes;
    int fetch_wait_max_ms;
    const char *const *extra;    /* "key=value" librdkafka properties */
    size_t nextra;

    void *ctx;
    /* parts now belong to this member; called before fetching starts. */
    void (*on_assign)(void *ctx, const rd_kafka_topic_partition_list_t *parts);
    /* parts are leaving; lost=1 when they were taken away (no commit is
     * possible). The partitions are given up when this returns. */
    void (*on_revoke)(void *ctx, const rd_kafka_topic_partition_list_t *parts, int lost);
    /* The outcome of an asynchronous commit. */
    void (*on_commit)(void *ctx, rd_kafka_resp_err_t err, const rd_kafka_topic_partition_list_t *offsets);
} em_consumer_opts_t;

/* Fills opts from the EM_CONSUMER_SETTINGS and kafka.bootstrap/properties
 * keys (strings borrowed from cfg); the callbacks are left for the caller. */
void em_consumer_opts_from_config(const em_config_t *cfg, const char *client_id, const char *extra[EM_KAFKA_MAX_EXTRA],
                                  em_consumer_opts_t *opts);

em_consumer_t *em_consumer_new(const em_consumer_opts_t *opts, char *errstr, size_t errstr_size);
void em_consumer_destroy(em_consumer_t *c);

em_err_t em_consumer_subscribe(em_consumer_t *c, const char *topic, char *errstr, size_t errstr_size);

/* Up to max messages (caller destroys each with rd_kafka_message_destroy).
 * Serves rebalance and commit callbacks. Consumer errors are logged, not
 * returned.
 *
 * Every message returned belongs to the current assignment: a partition
 * assigned while this call ran (a rebalance callback served inside it) may
 * have records in the batch that were fetched for its previous assignment,
 * ahead of the offset the new assignment starts from. Those records are
 * dropped and the partition is sought back to its committed offset, so the
 * owner sees each new assignment's records from its start, in order. */
size_t em_consumer_poll(em_consumer_t *c, rd_kafka_message_t **msgs, size_t max, int timeout_ms);

/* Commits offsets (the next offset to read, per partition). */
em_err_t em_consumer_commit(em_consumer_t *c, const rd_kafka_topic_partition_list_t *offsets, int async);

/* Pauses (1) or resumes (0) fetching of every assigned partition, and of
 * every partition assigned later, until called again; a resume leaves held
 * partitions (em_consumer_hold_partition) paused. librdkafka keeps a
 * partition's pause flag across unassign and assign; this module clears it
 * when a partition is revoked and sets it explicitly on every assign, so a
 * partition never comes back paused behind the owner's back. Consumer
 * thread only. */
em_err_t em_consumer_set_paused(em_consumer_t *c, int paused);

/* Holds (held=1) or releases (held=0) one partition: librdkafka fetches an
 * assigned partition only while the consumer is not paused
 * (em_consumer_set_paused) and the partition is not held, so
 * em_consumer_set_paused(c, 0) leaves a held partition paused, and a
 * release while the consumer is paused leaves it paused until the consumer
 * resumes. A partition is assigned unheld; its hold ends when it is revoked
 * or lost (it comes back unheld on its next assignment).
 * em_consumer_restart_partition keeps it.
 *
 * The caller's contract: once a hold returns, em_consumer_poll returns no
 * record of partition; the records librdkafka had fetched ahead for it are
 * dropped. After the release, records come again from the one after the
 * last record of partition em_consumer_poll returned (from where the
 * assignment or the last restart started it when none was returned since):
 * none skipped, none returned twice. The same holds for
 * em_consumer_set_paused. It needs librdkafka 2.1 or later: 2.0's batch
 * consume intermittently skips offsets around a pause or resume (fixed by
 * librdkafka PR 4208).
 *
 * Holding a partition this member is not assigned (as the rebalance
 * callbacks told the owner; on_assign may already hold the partitions it
 * is given) is EM_EINVAL; releasing a partition not held, assigned or not,
 * is EM_OK and does nothing (a revoke has already released it). A call
 * that fails changes nothing. Consumer thread only. */
em_err_t em_consumer_hold_partition(em_consumer_t *c, int32_t partition, int held);

/* Is partition held (1) or not (0)? Consumer thread only. */
int em_consumer_partition_held(const em_consumer_t *c, int32_t partition);

/* Is partition in librdkafka's current assignment? */
int em_consumer_has_partition(em_consumer_t *c, int32_t partition);

/* Puts one owned partition back in step with its owner: added back to
 * librdkafka's assignment if it is missing, its pause flag set to the
 * owner's wish (paused when the consumer is paused or the partition held),
 * and its fetch position moved to offset (an absolute offset,
 * or RD_KAFKA_OFFSET_BEGINNING/STORED). what (n bytes) receives a short
 * description of the steps taken. Consumer thread only. */
em_err_t em_consumer_restart_partition(em_consumer_t *c, int32_t partition, int64_t offset, char *what, size_t n);

/* The committed offsets of partitions (blocking, at most timeout_ms):
 * offsets[i] is the next offset to read, or -1 when the group has none.
 * Any thread. */
em_err_t em_consumer_committed(em_consumer_t *c, const int32_t *partitions, int n, int64_t *offsets,
                               int timeout_ms);

/* The end offsets (the offset the next record will get) of partitions,
 * asked of their leaders (blocking, at most timeout_ms); -1 where unknown.
 * Any thread. */
em_err_t em_consumer_end_offsets(em_consumer_t *c, const int32_t *partitions, int n, int64_t *offsets,
                                 int timeout_ms);

/* The same for the start offsets (the oldest offset still stored). */
em_err_t em_consumer_start_offsets(em_consumer_t *c, const int32_t *partitions, int n, int64_t *offsets,
                                   int timeout_ms);

/* TEST ONLY (built with EM_DEBUG_HOOKS): put one partition into a state its
 * owner does not know about, the way a librdkafka defect would. */
typedef enum em_consumer_stall {
    EM_CONSUMER_STALL_PAUSE,    /* paused inside librdkafka */
    EM_CONSUMER_STALL_UNASSIGN, /* dropped from librdkafka's assignment */
} em_consumer_stall_t;
em_err_t em_consumer_debug_stall(em_consumer_t *c, int32_t partition, em_consumer_stall_t kind);

/* Leaves the group: the final revoke runs its callback on this thread. */
void em_consumer_close(em_consumer_t *c);

rd_kafka_t *em_consumer_handle(em_consumer_t *c);

#endif
