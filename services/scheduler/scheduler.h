/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The scheduler's state. One execution's path through it:
 *   Kafka record → accept (decode or dead-letter; tracked in its
 *   partition's watermark) → pending queue → dispatch (a batch in one
 *   Executor.Execute call) → reply: done in the watermark, or back to the
 *   queue (attempt + 1) → commit tick: the watermark is committed.
 *
 * Threads: the consumer thread polls Kafka, accepts, dispatches, commits
 * and handles rebalances; the gRPC loop thread handles Execute replies and
 * Submit calls; the producer's poll thread handles delivery reports. All
 * scheduler state below `lock` is guarded by it.
 */
#ifndef SCHEDULER_H
#define SCHEDULER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "em_consumer.h"
#include "em_metrics.h"
#include "em_producer.h"
#include "em_rpc_channel.h"
#include "em_service.h"
#include "em_watermark.h"
#include "execmesh/v1/execmesh.pb-c.h"

typedef struct sc_part {
    int32_t id;
    em_watermark_t *wm;
    int owned;                /* 0 once revoked: completions commit nothing */
    int revoking;             /* being revoked: dispatch nothing more from it */
    int inflight;             /* items accepted and not done (pending or dispatched) */
    int64_t last_commit_sent; /* -1: nothing sent since the last failure */
    int committed_once;       /* a commit succeeded since it was assigned */
} sc_part_t;

typedef struct sc_item {
    struct sc_item *next;
    sc_part_t *part;
    uint64_t seq;
    int64_t offset;
    rd_kafka_message_t *raw;     /* the record, until its first dispatch copied its bytes */
    grpc_slice body;             /* after: the last call's slice, holding the execution's bytes */
    uint32_t body_off, body_len;
    int has_body;
    uint32_t attempt;
    uint32_t timeout_ms;         /* from the record; 0: the default */
    int need_id;                 /* no id in the record: "<topic>/<partition>/<offset>" is appended */
    int64_t submitted_unix_ms;   /* appended when the record had none (its Kafka timestamp), else 0 */
    em_delivery_t dr;
    struct scheduler *s;
    char *dead_reason;           /* a dead-lettered record's reason (malloc'd; NULL for the others) */
} sc_item_t;

typedef struct scheduler {
    em_service_t svc;
    em_consumer_t *consumer;
    em_producer_t *producer;
    rd_kafka_topic_t *t_requests, *t_dead;
    const char *topic_requests;
    em_rpc_channel_t *executors;
    em_rpc_method_ref_t *m_execute;
    pthread_t consumer_thread;
    atomic_int stopping;

    /* settings */
    int batch_max, max_inflight, max_calls, max_pending, poll_batch;
    int64_t session_timeout_ms;
    int64_t default_timeout_ms, deadline_grace_ms, retry_backoff_ms, commit_interval_ms, revoke_timeout_ms;
    int64_t input_max_bytes, submit_max_executions, submit_max_payload;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    sc_part_t **parts; /* by partition id; NULL when not owned */
    int nparts;
    sc_item_t *pend_head, *pend_tail;
    sc_item_t *free_items; /* recycled items: no allocation per execution */
    int nfree_items;
    int npending;
    int inflight_items;
    int inflight_calls;
    int paused;
    int64_t held_since;       /* 0, or since when the consumer takes nothing: pending is full */
    int admin_paused;         /* an operator paused consumption (POST /admin/pause) */
    int assign_gen, paused_gen;
    int64_t backoff_until_ms;
    int backoff_armed;
    int consecutive_failures;
    int64_t drain_deadline_ms;
    int64_t commit_stalled_since; /* 0, or when commits started being refused (rebalance) */
    int64_t consumer_alive_ms;    /* the consumer loop's last turn (a long gap: the process was frozen) */

    em_metric_t *m_in_kafka, *m_in_submit, *m_out, *m_failed, *m_dead, *m_inflight, *m_pending, *m_assigned;
    em_metric_t *m_redispatched, *m_busy, *m_commits, *m_commit_failed, *m_submit_calls, *m_submit_failed;
    em_metric_t *m_paused;
} scheduler_t;

/* dispatch.c */
void sc_accept_locked(scheduler_t *s, rd_kafka_message_t *msg);
/* At exit: frees the executions still pending (never dispatched: nothing
 * to commit for them) and the recycled items. Call before the consumer goes. */
void sc_items_release_all(scheduler_t *s);
/* How many records the consumer may take now (0: pending is full, hold). */
size_t sc_intake_room_locked(scheduler_t *s);
void sc_dispatch_locked(scheduler_t *s);
void sc_commit_tick_locked(scheduler_t *s, rd_kafka_topic_partition_list_t **out);
void sc_on_assign(void *ctx, const rd_kafka_topic_partition_list_t *parts);
void sc_on_revoke(void *ctx, const rd_kafka_topic_partition_list_t *parts, int lost);
void sc_on_commit(void *ctx, rd_kafka_resp_err_t err, const rd_kafka_topic_partition_list_t *offsets);
void sc_flow_control_locked(scheduler_t *s);
/* The consumer loop turned (called each turn): notices a frozen process. */
void sc_consumer_turn_locked(scheduler_t *s);

/* submit.c */
void sc_on_submit(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len);

#endif
