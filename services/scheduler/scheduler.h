/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The scheduler's state. One execution's path through it:
 *   Kafka record → intake (decode or dead-letter; tracked in its partition's
 *   watermark) → pending queue → dispatch (a batch in one Executor.Execute
 *   call) → results streamed back, each checked against what was sent:
 *   final → done in the watermark; a failed attempt with attempts left →
 *   the next attempt waits in the delay topic (outcome.c), done once that
 *   is stored → commit tick: the watermark is committed. A call that fails
 *   sends what it did not answer back to the queue: the same attempt when
 *   no executor took it, the next attempt alone when its executor died
 *   (isolation), and an execution whose executor died while it ran alone
 *   counts a death, kept in the execution itself, up to the quarantine.
 *
 * The files:
 *   intake.c      records in: accept or dead-letter, the intake hold and
 *                 the partition pauses (flow control and operator)
 *   pending.c     items and the pending queue: one FIFO per handler, served
 *                 round-robin
 *   resources.c   mesh-wide resource limits: this scheduler's share of
 *                 each resource (by the partitions it owns), admission,
 *                 executions parked while their resource's queue is full
 *                 (their partition held in Kafka), executor refusals
 *   dispatch.c    Execute batches and their answers
 *   outcome.c     what follows an attempt: retries and deaths through the
 *                 delay topic, the mesh's own final results (quarantine)
 *   partitions.c  assign, revoke, the commit tick and commit answers
 *   watchdog.c    per-partition liveness: lag, oldest waiting, the stall
 *                 watchdog and its heals, the per-partition metrics
 *   submit.c      Scheduler.Submit
 *   requests.c    Submit's and Cancel's requests decoded and checked (pure; fuzzed)
 *   records.c     the final results the scheduler writes itself (pure; fuzzed)
 *
 * Threads: the consumer thread polls Kafka, accepts, dispatches, commits,
 * handles rebalances and performs heals; the gRPC loop thread handles
 * Execute replies and Submit calls; the producer's poll thread handles
 * delivery reports; the watchdog thread asks Kafka for end and committed
 * offsets. All scheduler state below `lock` is guarded by it.
 */
#ifndef SCHEDULER_H
#define SCHEDULER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "em_consumer.h"
#include "em_execution.h"
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

    /* liveness (watchdog.c) */
    int64_t next_offset;      /* one past the last record taken; -1 before the first */
    int64_t progress_ms;      /* monotonic: last record taken, assign, or last moment it held executions */
    int64_t end_offset;       /* the leader's end offset at the watchdog's last ask; -1 unknown */
    int64_t committed_offset; /* the group's committed offset at the last ask; -1 none or unknown */
    int64_t start_offset;     /* the oldest offset stored, asked when there is no commit; -1 unknown */
    int64_t last_heal_ms;     /* monotonic: the last restart the watchdog asked for */
    int64_t unread_since_ms;  /* unix ms: since when records wait in Kafka while it holds none; 0 otherwise */
    int64_t stalled_since_ms; /* monotonic: when the watchdog found it stalled; 0 while it flows */
    int heal_wanted;          /* the consumer thread restarts it on its next turn */
    int heals;                /* restarts since it stalled */

    /* resources.c: records whose resource's queue was full (at most
     * SC_PARK_MAX); while any is parked the partition is held in Kafka
     * (fetches nothing) */
    struct sc_item *park_head, *park_tail;
    int nparked;
    int held;
    int rewound;              /* sought back to the first record not kept: what the poll still gives of it is dropped */
} sc_part_t;

/* The most uncharged executor deaths an execution keeps (at least the
 * largest quarantine.executor_deaths). */
#define SC_MAX_SUSPECTS 6

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
    int64_t deadline_ms;         /* monotonic: the caller's deadline_unix_ms turned on arrival; 0: none */
    int need_id;                 /* no id in the record: "<topic>/<partition>/<offset>" is appended */
    uint32_t id_rel, id_len;     /* the id's bytes in the execution (from its start; valid once dispatched) */
    uint32_t deaths;             /* executors that died running it alone (from the record) */
    int isolate;                 /* a call of its own: in flight at an executor death, or it has deaths */
    uint32_t nsuspect;           /* executor deaths it was running in, not yet charged (others ran there
                                  * too): charged all at once if it then kills an executor alone */
    struct {
        uint32_t attempt;
        char executor[64];
    } suspect[SC_MAX_SUSPECTS];  /* those deaths, for its history */
    int ran;                     /* its executor said it ran to its end (result not yet stored) */
    uint16_t cls;                /* its handler's queue (pending.c) */
    uint8_t holding;             /* it holds its resources' concurrency (dispatched, not yet finished) */
    uint8_t dispatched;          /* counted in its class's inflight */
    uint8_t throttled;           /* it waited for a resource (counted once) */
    uint8_t *out_rec;            /* a record outcome.c is storing for it (malloc'd), or NULL */
    size_t out_len;
    int out_kind;                /* what out_rec is: SC_OUT_DELAY or SC_OUT_RESULT */
    int64_t out_due_unix_ms;     /* SC_OUT_DELAY: when the next attempt may run */
    int64_t submitted_unix_ms;   /* appended when the record had none (its Kafka timestamp), else 0 */
    int64_t kafka_ms;            /* its record's Kafka timestamp (queue wait: until its first dispatch) */
    char trace_id[33];           /* its traceparent's trace id; "" until a log line derives it from its id */
    em_delivery_t dr;
    struct scheduler *s;
    char *dead_reason;           /* a dead-lettered record's reason (malloc'd; NULL for the others) */
    size_t dead_max;             /* 0, or the record size a broker's refusal lowered its dead letter to */
} sc_item_t;

/* A debug hook's request (EM_DEBUG_HOOKS builds), applied by the consumer thread. */
typedef struct sc_debug_req {
    int pending;
    int32_t partition;
    em_consumer_stall_t kind;
} sc_debug_req_t;

/* A resource a handler touches (resources.c): the mesh-wide limits and
 * this scheduler's share of them. */
typedef struct sc_resource {
    char name[64];
    int64_t concurrency;      /* mesh-wide; 0: unlimited */
    int64_t rate, per_ms;     /* mesh-wide: rate executions per per_ms; rate 0: unlimited */
    int64_t burst;            /* mesh-wide token bucket size */
    int64_t max_waiting;      /* executions queued here for it; more are parked in their partition */
    /* this scheduler's share: by the partitions it owns */
    int share_conc;           /* -1: unlimited */
    double share_rate_ms;     /* tokens per ms; < 0: unlimited */
    double share_burst;
    double tokens;
    int64_t tokens_ms;        /* monotonic: when tokens was last brought up to date */
    int running;              /* dispatched and not finished */
    int waiting;              /* queued (pending) here */
    int parked;               /* parked in held partitions */
    em_metric_t *m_admitted, *m_throttled, *m_running, *m_waiting, *m_share_conc, *m_share_rate;
} sc_resource_t;

#define SC_MAX_HANDLER_RESOURCES 8
/* The most records a held partition keeps parked in memory; past them it is
 * sought back and the rest waits in Kafka. */
#define SC_PARK_MAX 16
#define SC_MAX_CLASSES 1024

/* The executions of one handler waiting for dispatch (pending.c). Class 0
 * takes the handlers past SC_MAX_CLASSES. */
typedef struct sc_class {
    char *handler;            /* NUL-terminated copy */
    size_t len;
    uint32_t hash;
    struct sc_item *head, *tail;
    int n;
    int nres;
    int res[SC_MAX_HANDLER_RESOURCES]; /* indexes into s->res */
    int64_t busy_until_ms;    /* monotonic: an executor said the handler is at its concurrency */
    int inflight;             /* dispatched, not yet finished, refused or back */
    int window;               /* 0: no bound; else at most this many in flight: set to what the executors
                               * held when one refused the handler, one more per window that finished */
    int window_acked;         /* finished since the window last grew */
    struct sc_class *act_prev, *act_next; /* the ring of classes with executions waiting */
    int active;
} sc_class_t;

typedef struct scheduler {
    em_service_t svc;
    struct em_authz *authz; /* with TLS on: who may Submit which handlers, and Cancel; NULL: no TLS, no identities */
    em_consumer_t *consumer;
    em_producer_t *producer;
    rd_kafka_topic_t *t_requests, *t_dead, *t_delay, *t_results;
    const char *topic_requests;
    struct em_delay *delay;   /* forwards due retries from the delay topic to the requests topic */
    struct em_cancels *cancels; /* every durable cancel, read from the cancels topic */
    rd_kafka_topic_t *t_cancels;
    em_rpc_channel_t *executors;
    em_rpc_method_ref_t *m_execute;
    /* cancels for executions an executor holds (cancel.c): queued under
     * lock, sent from the timer thread over a channel to that executor */
    struct sc_cancel_out *cancel_out_head, *cancel_out_tail;
    int cancel_out_armed;
    struct sc_peer {
        char addr[96];
        em_rpc_channel_t *ch;
        em_rpc_method_ref_t *m_cancel;
        int64_t used_ms;
    } peers[16]; /* the timer thread's (and the exit's, after the timers) */
    pthread_t consumer_thread;
    pthread_t watchdog_thread;
    atomic_int stopping;

    /* settings */
    int batch_max, max_inflight, max_calls, max_pending, poll_batch;
    int64_t batch_max_bytes;      /* dispatch.batch_max_bytes */
    int64_t batch_bytes_now;      /* the byte cap in use: halved when an executor refused a batch as too large */
    int64_t kafka_max_message_bytes; /* the size model's L (lib/em_sizes.h) */
    int64_t session_timeout_ms;
    int64_t default_timeout_ms, deadline_grace_ms, retry_backoff_ms, commit_interval_ms, revoke_timeout_ms;
    int64_t input_max_bytes, submit_max_executions, submit_max_payload, submit_max_inflight_bytes;
    atomic_llong submit_inflight_bytes; /* Submit requests' bytes held until Kafka acknowledged them */
    int64_t hold_pause_ms, stall_ms, watchdog_interval_ms;
    int64_t quarantine_deaths;
    struct sc_call *calls;        /* Execute calls in flight (dispatch.c) */

    /* resources.c, pending.c */
    sc_resource_t *res;
    int nres;
    struct sc_handler_res {       /* handlers.NAME.resources from the config */
        char *handler;
        int nres;
        int res[SC_MAX_HANDLER_RESOURCES];
    } *hres;
    int nhres;
    sc_class_t **classes;         /* by index; classes[0] is the overflow class */
    int nclasses;
    size_t cap_classes;
    int *class_slots;             /* open addressing by handler hash: class index + 1, 0 empty */
    int nslots;
    sc_class_t *act;              /* the ring of classes with executions waiting; the next served */
    int topic_partitions;         /* the requests topic's partitions (the shares' denominator) */
    int owned_parts;              /* partitions owned and not being revoked */
    int nheld;                    /* partitions held for parked records */
    int unpark_next;              /* where the next unpark round starts (fairness among held partitions) */
    int64_t res_wake_ms;          /* monotonic: when the armed wake-up fires; 0 none */
    em_metric_t *m_held, *m_rewinds, *m_refused_handler, *m_refused_full;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_cond_t watchdog_cond; /* wakes the watchdog thread early (stopping) */
    sc_part_t **parts; /* by partition id; NULL when not owned */
    int nparts;
    sc_item_t *free_items; /* recycled items: no allocation per execution */
    int nfree_items;
    int npending;
    int inflight_items;
    int inflight_calls;
    int paused;               /* the assigned partitions are paused in Kafka (flow control or operator) */
    int64_t held_since;       /* 0, or since when the consumer takes nothing: pending is full */
    int64_t excluded_ms;      /* monotonic: the last moment the intake was held or paused */
    int admin_paused;         /* an operator paused consumption (POST /admin/pause) */
    int64_t backoff_until_ms;
    int backoff_armed;
    int consecutive_failures;
    int64_t drain_deadline_ms;
    int dispatch_closed;          /* exiting: no more Execute calls, no more backoff timers */
    int64_t commit_stalled_since; /* 0, or when commits started being refused (rebalance) */
    int commit_outstanding;       /* an asynchronous commit is unanswered */
    int64_t commit_sent_ms;
    int64_t consumer_alive_ms;    /* the consumer loop's last turn (a long gap: the process was frozen) */
    int64_t rebalances;           /* assign and revoke events */
    int64_t last_rebalance_ms;    /* monotonic; 0 before the first */
    int64_t started_ms;           /* monotonic: process start */
    int nstalled;                 /* partitions found stalled and not flowing again */
    sc_debug_req_t debug;

    em_metric_t *m_in_kafka, *m_in_submit, *m_out, *m_failed, *m_dead, *m_inflight, *m_pending, *m_assigned;
    em_metric_t *m_redispatched, *m_busy, *m_commits, *m_commit_failed, *m_submit_calls, *m_submit_failed;
    em_metric_t *m_paused, *m_holds, *m_flow_pauses, *m_rebalances, *m_stalled, *m_stalls, *m_heals;
    em_metric_t *m_retries, *m_deaths, *m_quarantined, *m_protocol_errors, *m_isolated;
    em_metric_t *m_cancelled, *m_cancel_calls, *m_cancel_requests, *m_cancels_seen, *m_cancels_sent;
    em_metric_t *m_queue_wait, *m_execute_seconds; /* histograms, seconds */
    em_metric_t *m_calls, *m_byte_cuts, *m_dead_truncated, *m_too_large_refused;
} scheduler_t;

/* pending.c */
sc_item_t *sc_item_new_locked(scheduler_t *s);
/* The queue of the handler named h[0..n) (created on first sight). */
int sc_class_of_locked(scheduler_t *s, const uint8_t *h, size_t n);
/* Puts items back at the front of their handlers' queues, keeping their order. */
void sc_pending_push_front_locked(scheduler_t *s, sc_item_t **items, int n);
/* The next execution to dispatch from class c (removed from its queue). */
sc_item_t *sc_pending_pop_locked(scheduler_t *s, sc_class_t *c);
/* it leaves its executor: finished there (ran: its handler has room again
 * there) or not (refused, its call ended, dropped). Frees its resources. */
void sc_item_settled_locked(scheduler_t *s, sc_item_t *it, int ran);
/* An executor refused it: its handler is at its concurrency there. */
void sc_class_refused_locked(scheduler_t *s, sc_class_t *c, int64_t until_ms);
/* The item leaves the scheduler: durable means its result (or dead letter)
 * is stored, so its offset may be committed. */
void sc_item_done_locked(scheduler_t *s, sc_item_t *it, int durable);
void sc_pending_push_back_locked(scheduler_t *s, sc_item_t *it);
/* Drops the pending items of partitions being revoked. */
void sc_pending_drop_revoking_locked(scheduler_t *s);
/* At exit: frees the executions still pending (never dispatched: nothing
 * to commit for them) and the recycled items. Call before the consumer goes. */
void sc_items_release_all(scheduler_t *s);
void sc_dispatch_locked(scheduler_t *s);
/* At exit, before the executors' channel and the timers go: the channel's
 * cancelled calls and the timers' last callbacks dispatch nothing more. */
void sc_dispatch_close(scheduler_t *s);
/* The group confirmed the partitions (a commit accepted, an assignment):
 * dispatch may go on. */
void sc_commit_stall_clear_locked(scheduler_t *s, const char *why);
/* The consumer loop turned (called each turn): notices a frozen process. */
void sc_consumer_turn_locked(scheduler_t *s);

/* outcome.c */
enum { SC_OUT_DELAY = 1, SC_OUT_RESULT = 2, SC_OUT_CANCELLED = 3 };
/* The answer says the attempt failed with attempts left: the next attempt
 * waits durably in the delay topic; the item is done once that is stored. */
void sc_retry_later_locked(scheduler_t *s, sc_item_t *it, const em_result_info_t *r);
/* The executor that ran it alone died: one more death in its history; the
 * next attempt (at once, through the delay topic), or past the quarantine
 * its final EXHAUSTED result. */
void sc_executor_died_locked(scheduler_t *s, sc_item_t *it, const char *executor, const char *why);
/* The id of a dispatched item. */
const uint8_t *sc_item_id(const sc_item_t *it);

/* The log fields that name an execution (every line about one carries
 * them): its id (NUL-terminated into buf, which must hold 300 bytes),
 * attempt and trace id. */
const char *sc_item_log_id(const struct scheduler *s, const sc_item_t *it, char *buf);
const char *sc_item_trace_id(const struct scheduler *s, sc_item_t *it);
#define SC_F_EXEC(s, it, buf)                                                                \
    EM_F_STR("id", sc_item_log_id((s), (it), (buf))), EM_F_UINT("attempt", (it)->attempt), \
        EM_F_STR("trace_id", sc_item_trace_id((s), (it)))
/* The id of any item (dispatched or not; a generated one written to buf). */
const uint8_t *sc_item_key(const scheduler_t *s, const sc_item_t *it, char *buf, size_t n, size_t *len);
/* Is the item's execution cancelled? */
int sc_cancelled_locked(scheduler_t *s, const sc_item_t *it);
/* Ends it CANCELLED (a final result the scheduler writes); where says
 * where it was ("while waiting in Kafka", ...). */
void sc_cancel_item_locked(scheduler_t *s, sc_item_t *it, const char *where);

/* records.c */
/* A final result the scheduler writes itself (EXHAUSTED after the
 * quarantine, CANCELLED), as malloc'd Result bytes (*len of them; the caller
 * frees): the execution's whole history, then the attempts in add (may be
 * none), headers copied. exec/exec_len: the execution's bytes (borrowed);
 * id: its id when the bytes have none (generated), else NULL. NULL when the
 * bytes cannot be decoded or out of memory. */
uint8_t *sc_own_result(const uint8_t *exec, size_t exec_len, const char *id, uint32_t attempt, int status,
                       const em_attempt_t *add, int nadd, const char *error, size_t *len);

/* cancel.c */
void sc_on_cancel(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len);
/* The cancels reader told a new cancel (its thread). */
void sc_cancel_seen(void *ctx, const uint8_t *id, size_t len);
/* Asks the executor at peer (a call's server address) to stop execution
 * id: queued here, sent from the timer thread (Executor.Cancel). */
void sc_cancel_on_executor_locked(scheduler_t *s, const char *peer, const uint8_t *id, size_t len);
/* At exit, after the timers: closes the channels to single executors. */
void sc_cancel_peers_close(scheduler_t *s);

/* resources.c */
/* Reads resources.* and handlers.*.resources; 0, or -1 with the reason
 * printed naming file, line and key (also --check-config). */
int sc_resources_check(const em_config_t *cfg);
em_err_t sc_resources_init(scheduler_t *s, const em_config_t *cfg);
void sc_resources_free(scheduler_t *s);
/* The requests topic's partition count, asked of Kafka (consumer thread,
 * outside the lock). */
void sc_resources_learn_partitions(scheduler_t *s);
/* Recomputes this scheduler's shares from the partitions it owns, leaving
 * out those being revoked. */
void sc_resources_reshare_locked(scheduler_t *s);
/* Does every resource's running count fit its share? (revoke waits for it) */
int sc_resources_within_share_locked(const scheduler_t *s);
/* May the head of class c run now? Takes its resources if so; else 0,
 * with *wake_ms lowered to when it may (0: when something finishes). */
int sc_resources_take_locked(scheduler_t *s, sc_class_t *c, sc_item_t *it, int64_t now, int64_t *wake_ms);
/* The item's resources are free again (it finished, was refused, or its call ended). */
void sc_resources_release_locked(scheduler_t *s, sc_item_t *it);
/* Arms a dispatch at wake_ms (monotonic). */
void sc_resources_wake_at_locked(scheduler_t *s, int64_t wake_ms);
/* The intake of a new item: queued, or parked in its partition when its
 * resource's queue is full (the partition is then held). Consumer thread. */
void sc_resources_accept_locked(scheduler_t *s, sc_item_t *it);
/* Consumer thread, each turn: parked records move to their queues as room
 * appears; a partition with none parked is released. */
void sc_resources_unpark_locked(scheduler_t *s);
/* Drops the parked items of partitions being revoked. */
void sc_resources_drop_parked_locked(scheduler_t *s);
/* pending.c bookkeeping of a class's queue length (waiting per resource). */
void sc_resources_queued_locked(scheduler_t *s, const sc_class_t *c, int delta);

/* dispatch.c: a new cancel for id: the executors that accepted it are asked to stop it */
void sc_dispatch_cancel_seen_locked(scheduler_t *s, const uint8_t *id, size_t len);

/* intake.c */
void sc_accept_locked(scheduler_t *s, rd_kafka_message_t *msg);
/* How many records the consumer may take now (0: pending is full, hold). */
size_t sc_intake_room_locked(scheduler_t *s);
void sc_flow_control_locked(scheduler_t *s);

/* partitions.c */
sc_part_t *sc_part_get(scheduler_t *s, int32_t id);
void sc_part_free(sc_part_t *p);
void sc_commit_tick_locked(scheduler_t *s, rd_kafka_topic_partition_list_t **out);
void sc_on_assign(void *ctx, const rd_kafka_topic_partition_list_t *parts);
void sc_on_revoke(void *ctx, const rd_kafka_topic_partition_list_t *parts, int lost);
void sc_on_commit(void *ctx, rd_kafka_resp_err_t err, const rd_kafka_topic_partition_list_t *offsets);

/* watchdog.c */
em_err_t sc_watchdog_start(scheduler_t *s);
void sc_watchdog_stop(scheduler_t *s);
/* Consumer thread, each turn: restarts the partitions the watchdog found
 * stalled and applies a debug hook's request. Takes the lock. */
void sc_watchdog_heal(scheduler_t *s);
/* Registers the per-partition metrics and the debug hooks' route. */
void sc_watchdog_register(scheduler_t *s);
/* Stops the per-partition metrics before the partitions are freed: a
 * scrape during the exit must not read them. */
void sc_watchdog_unregister(scheduler_t *s);

/* submit.c */
void sc_on_submit(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len);

/* requests.c: Submit's and Cancel's requests decoded and checked, without
 * the scheduler's state (also run by the fuzz targets in tests/fuzz/). */
#define SC_CANCEL_MAX_IDS 10000
#define SC_CANCEL_MAX_ID 256
typedef struct sc_submit_limits {
    int64_t max_executions; /* submit.max_executions */
    int64_t max_payload;    /* submit.max_payload_bytes */
} sc_submit_limits_t;
/* The decoded SubmitRequest (the caller frees it with
 * execmesh__v1__submit_request__free_unpacked), or NULL with the first
 * problem in msg ("SubmitRequest: cannot decode", "executions[i].field:
 * reason", or the intake's own refusal of an execution's bytes,
 * "executions[i]: field 1 (id): not valid UTF-8 (or has a NUL byte)"): the
 * call's INVALID_ARGUMENT. req is borrowed. */
Execmesh__V1__SubmitRequest *sc_submit_decode(const uint8_t *req, size_t len, const sc_submit_limits_t *lim,
                                              char *msg, size_t n);
/* The decoded CancelRequest (freed with
 * execmesh__v1__cancel_request__free_unpacked), or NULL with the first
 * problem in msg: 1 to SC_CANCEL_MAX_IDS ids of 1 to SC_CANCEL_MAX_ID bytes. */
Execmesh__V1__CancelRequest *sc_cancel_decode(const uint8_t *req, size_t len, char *msg, size_t n);

#endif
