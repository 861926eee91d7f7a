/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Executor.Execute: one call is a batch of executions.
 *
 *   1. count the executions and take room for as many as fit in
 *      executor.max_inflight before allocating anything for them (none:
 *      RESOURCE_EXHAUSTED, the call refused whole);
 *   2. read them in place (views into the request, alive until the batch
 *      is freed), in order: one fits while the executor has room left and
 *      its handler a free slot (handlers.c; the slot is taken now); the
 *      others are refused one by one, each named in a Refused entry (the
 *      limit it met and its value), and nothing of them runs or stays
 *      here. When every one met its handler's concurrency, the call is
 *      answered with the refusals alone (OK: the caller learns which
 *      handlers to delay); none fits for want of room: refused whole,
 *      RESOURCE_EXHAUSTED. An unknown handler is no refusal: its execution
 *      ends REJECTED;
 *   3. tell the caller the batch is accepted (the response headers carry
 *      "execmesh-accepted: <replica>": from then on the caller knows this
 *      executor had it, and gRPC retries it no more), then send the
 *      refusals, all in one message before any other;
 *   4. start every job taken, at once; each ends with job_finish →
 *      ex_batch_job_done, which first sends a `finished` message naming it
 *      when the caller asked (ExecuteRequest.report_finished) or the call
 *      carried one execution;
 *   5. finished results are published to a sink in groups and, once the
 *      sink acknowledged a group, streamed to the caller as one response
 *      message: what finished while the first jobs ran goes out as soon
 *      as they are started; later completions go out one publish round
 *      trip (or execute.flush_ms) later, grouped. A group holds at most
 *      publish.group_max_bytes (a larger one is split, the rest following
 *      at once), so no message passes gRPC's cap. A long execution holds
 *      back nothing but itself. After the last result the call ends OK.
 *
 * A group whose publish fails for good (a sink answering INVALID_ARGUMENT
 * at once: it would refuse it again), or a drain past its deadline, ends
 * the call with ABORTED (the executor is alive: the scheduler dispatches
 * every execution not yet answered again, counting no executor death);
 * jobs still running finish, unpublished, and the batch is freed after the
 * last.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_arena.h"
#include "em_execution.h"
#include "em_log.h"
#include "em_pbwire.h"
#include "em_rpc_server.h"
#include "em_util.h"
#include "executor.h"

struct ex_batch {
    struct ex_batch *live_prev, *live_next; /* the batches held here (under live_lock), for cancels */
    em_arena_t *arena; /* the batch, the views of its request and its bookkeeping */
    em_rpc_call_t *call;
    size_t n;
    ex_exec_t *execs;
    ex_job_t *jobs;
    ex_result_t *res;
    pthread_mutex_t lock;
    size_t *ready, nready; /* finished and not yet published */
    size_t *pub, npub;     /* in the publish under way */
    size_t unfinished;     /* jobs not yet finished */
    size_t answered;       /* results streamed to the caller */
    size_t released;       /* of executor.max_inflight, given back */
    int starting;          /* ex_on_execute is still starting jobs */
    int publishing;        /* a publish (or its retry timer) is under way */
    int flush_armed;
    int call_ended;        /* answered for good: later results are dropped */
    int split;             /* the last group left ready results behind (publish.group_max_bytes): next at once */
    grpc_slice packed;     /* the group being published, as PublishRequest == ExecuteResponse bytes */
    int publish_tries;
    int64_t publish_start_us; /* monotonic: the try under way began */
    int report_finished;   /* a `finished` message for each execution as it ends */
    grpc_slice refused;    /* the executions of the call not taken (ExecuteResponse bytes), until sent */
};

ex_result_t *ex_batch_result(ex_batch_t *b, size_t idx) { return &b->res[idx]; }
const ex_exec_t *ex_batch_exec(const ex_batch_t *b, size_t idx) { return &b->execs[idx]; }

/* ---- the batches held here, for cancels ---------------------------------- */

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static ex_batch_t *live_head;

static void live_link(ex_batch_t *b) {
    pthread_mutex_lock(&live_lock);
    b->live_prev = NULL;
    b->live_next = live_head;
    if (live_head)
        live_head->live_prev = b;
    live_head = b;
    pthread_mutex_unlock(&live_lock);
}

static void live_unlink(ex_batch_t *b) {
    pthread_mutex_lock(&live_lock);
    if (b->live_prev)
        b->live_prev->live_next = b->live_next;
    else
        live_head = b->live_next;
    if (b->live_next)
        b->live_next->live_prev = b->live_prev;
    pthread_mutex_unlock(&live_lock);
}

void ex_batches_find(const uint8_t *id, size_t len, void (*fn)(ex_job_t *job, void *ctx), void *ctx) {
    if (len == 0)
        return; /* no execution has an empty id here (the scheduler gives one) */
    pthread_mutex_lock(&live_lock);
    for (ex_batch_t *b = live_head; b; b = b->live_next)
        for (size_t k = 0; k < b->n; k++)
            if (b->execs[k].id.n == len && memcmp(b->execs[k].id.p, id, len) == 0)
                fn(&b->jobs[k], ctx);
    pthread_mutex_unlock(&live_lock);
}

static void release_inflight(ex_batch_t *b, size_t k) {
    b->released += k;
    atomic_fetch_sub(&EX.inflight, (int)k);
    em_metric_add(EX.m_inflight, -(int64_t)k);
}

static void batch_free(ex_batch_t *b) {
    live_unlink(b);
    for (size_t i = 0; i < b->n; i++) {
        free(b->res[i].owned_output);
        free(b->res[i].error);
        free(b->res[i].final_error);
    }
    grpc_slice_unref(b->packed);
    grpc_slice_unref(b->refused);
    release_inflight(b, b->n - b->released);
    atomic_fetch_sub(&EX.batches, 1);
    ex_alone_freed(b);
    pthread_mutex_destroy(&b->lock);
    em_arena_destroy(b->arena); /* the request, the results' arrays and b itself */
}

/* ---- results on the wire ------------------------------------------------ */

/* This attempt as an execmesh.v1.Attempt (the last history entry). */
static em_attempt_t attempt_of(const ex_result_t *r) {
    return (em_attempt_t){.attempt = r->attempt,
                          .status = r->attempt_status,
                          .executor = EX.svc.replica,
                          .executor_len = EX.replica_len,
                          .error = r->error,
                          .error_len = r->error ? strlen(r->error) : 0,
                          .exit_code = r->exit_code,
                          .started_unix_ms = r->started_unix_ms,
                          .finished_unix_ms = r->finished_unix_ms};
}

/* The final result of an execution that had earlier attempts carries them
 * all, this one last. */
static int with_history(const ex_exec_t *ex, const ex_result_t *r) {
    return r->final && ex->nhistory > 0 && !r->bare;
}

static const char *record_error(const ex_result_t *r) { return r->final_error ? r->final_error : r->error; }

/* One Result's bytes (proto3: zero and empty fields are left out). */
static size_t result_size(const ex_batch_t *b, size_t i) {
    const ex_exec_t *ex = &b->execs[i];
    const ex_result_t *r = &b->res[i];
    size_t n = 0;
    if (ex->id.n)
        n += em_pb_len_field_size(1, ex->id.n);
    n += em_pb_varint_field_size(2, r->attempt);
    if (r->status)
        n += em_pb_varint_field_size(3, (uint64_t)r->status);
    if (r->output_len)
        n += em_pb_len_field_size(4, r->output_len);
    if (record_error(r))
        n += em_pb_len_field_size(5, strlen(record_error(r)));
    if (r->exit_code)
        n += em_pb_varint_field_size(6, (uint64_t)(int64_t)r->exit_code);
    n += em_pb_len_field_size(7, EX.replica_len);
    if (ex->submitted_unix_ms)
        n += em_pb_varint_field_size(8, (uint64_t)ex->submitted_unix_ms);
    n += em_pb_varint_field_size(9, (uint64_t)r->started_unix_ms) + em_pb_varint_field_size(10, (uint64_t)r->finished_unix_ms);
    for (size_t k = 0; k < ex->nheaders && !r->bare; k++)
        n += em_pb_len_field_size(11, ex->headers[k].n);
    if (r->final)
        n += em_pb_varint_field_size(12, 1);
    if (with_history(ex, r)) {
        for (size_t k = 0; k < ex->nhistory; k++)
            n += em_pb_len_field_size(13, ex->history[k].n);
        em_attempt_t a = attempt_of(r);
        n += em_attempt_field_size(13, &a);
    }
    if (r->retry_delay_ms)
        n += em_pb_varint_field_size(14, r->retry_delay_ms);
    if (ex->handler.n)
        n += em_pb_len_field_size(15, ex->handler.n);
    if (ex->dispatched_unix_ms)
        n += em_pb_varint_field_size(16, (uint64_t)ex->dispatched_unix_ms);
    return n;
}

static uint8_t *result_write(uint8_t *o, const ex_batch_t *b, size_t i) {
    const ex_exec_t *ex = &b->execs[i];
    const ex_result_t *r = &b->res[i];
    if (ex->id.n)
        o = em_pb_write_len_field(o, 1, ex->id.p, ex->id.n);
    o = em_pb_write_varint_field(o, 2, r->attempt);
    if (r->status)
        o = em_pb_write_varint_field(o, 3, (uint64_t)r->status);
    if (r->output_len)
        o = em_pb_write_len_field(o, 4, r->output, r->output_len);
    if (record_error(r))
        o = em_pb_write_len_field(o, 5, record_error(r), strlen(record_error(r)));
    if (r->exit_code)
        o = em_pb_write_varint_field(o, 6, (uint64_t)(int64_t)r->exit_code); /* int32: sign-extended */
    o = em_pb_write_len_field(o, 7, EX.svc.replica, EX.replica_len);
    if (ex->submitted_unix_ms)
        o = em_pb_write_varint_field(o, 8, (uint64_t)ex->submitted_unix_ms);
    o = em_pb_write_varint_field(o, 9, (uint64_t)r->started_unix_ms);
    o = em_pb_write_varint_field(o, 10, (uint64_t)r->finished_unix_ms);
    for (size_t k = 0; k < ex->nheaders && !r->bare; k++) /* the map entries, as they came */
        o = em_pb_write_len_field(o, 11, ex->headers[k].p, ex->headers[k].n);
    if (r->final)
        o = em_pb_write_varint_field(o, 12, 1);
    if (with_history(ex, r)) {
        for (size_t k = 0; k < ex->nhistory; k++)
            o = em_pb_write_len_field(o, 13, ex->history[k].p, ex->history[k].n);
        em_attempt_t a = attempt_of(r);
        o = em_attempt_field_write(o, 13, &a);
    }
    if (r->retry_delay_ms)
        o = em_pb_write_varint_field(o, 14, r->retry_delay_ms);
    if (ex->handler.n)
        o = em_pb_write_len_field(o, 15, ex->handler.p, ex->handler.n);
    if (ex->dispatched_unix_ms)
        o = em_pb_write_varint_field(o, 16, (uint64_t)ex->dispatched_unix_ms);
    return o;
}

size_t ex_batch_result_bytes(const ex_batch_t *b, size_t idx) { return result_size(b, idx); }

/* The results of idx[0..n) as ExecuteResponse bytes, which are also
 * PublishRequest bytes (both are repeated Result results = 1): written
 * once, sent both ways. */
static grpc_slice pack_results(const ex_batch_t *b, const size_t *idx, size_t n) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += em_pb_len_field_size(1, result_size(b, idx[i]));
    grpc_slice s = grpc_slice_malloc(total);
    uint8_t *o = GRPC_SLICE_START_PTR(s);
    for (size_t i = 0; i < n; i++) {
        o = em_pb_write_raw_varint(o, (1 << 3) | EM_PB_LEN);
        o = em_pb_write_raw_varint(o, result_size(b, idx[i]));
        o = result_write(o, b, idx[i]);
    }
    return s;
}

/* ---- publishing groups -------------------------------------------------- */

typedef enum { ACT_NONE, ACT_PUBLISH, ACT_ARM_FLUSH, ACT_FREE } action_t;

/* What the batch does next, with b->lock held. */
static action_t next_action_locked(ex_batch_t *b) {
    if (b->publishing || b->starting)
        return ACT_NONE;
    if (b->call_ended)
        return b->unfinished == 0 && !b->flush_armed ? ACT_FREE : ACT_NONE;
    if (b->nready == 0)
        return ACT_NONE;
    if (b->unfinished == 0 || EX.flush_ms == 0 || b->split)
        return ACT_PUBLISH;
    if (b->flush_armed)
        return ACT_NONE;
    b->flush_armed = 1;
    return ACT_ARM_FLUSH;
}

static void publish_start(ex_batch_t *b);
static void flush_fire(void *arg);

static void act(ex_batch_t *b, action_t a) {
    switch (a) {
    case ACT_NONE: break;
    case ACT_PUBLISH: publish_start(b); break;
    case ACT_FREE: batch_free(b); break;
    case ACT_ARM_FLUSH:
        if (em_timer_after(ex_env.timers, EX.flush_ms, flush_fire, b) != EM_OK)
            flush_fire(b); /* no timers (exiting): what the timer would do, now */
        break;
    }
}

/* Takes the next group (b->lock held): the ready results, in order, up to
 * publish.group_max_bytes (one at least: a result fits, validate_sizes saw
 * to it), so no Publish and no Execute answer message passes gRPC's cap.
 * What is left goes in the next group, at once. */
static void take_group_locked(ex_batch_t *b) {
    size_t k = 0, bytes = 0;
    while (k < b->nready) {
        size_t w = em_pb_len_field_size(1, result_size(b, b->ready[k]));
        if (k > 0 && (int64_t)(bytes + w) > EX.group_max_bytes)
            break;
        bytes += w;
        k++;
    }
    memcpy(b->pub, b->ready, k * sizeof(*b->pub));
    memmove(b->ready, b->ready + k, (b->nready - k) * sizeof(*b->ready));
    b->npub = k;
    b->nready -= k;
    b->split = b->nready > 0;
    if (b->split)
        em_metric_add(EX.m_group_splits, 1);
    b->publishing = 1;
    b->publish_tries = 0;
}

static void flush_fire(void *arg) {
    ex_batch_t *b = arg;
    pthread_mutex_lock(&b->lock);
    b->flush_armed = 0;
    action_t a = ACT_NONE;
    if (b->call_ended)
        a = next_action_locked(b);
    else if (!b->publishing && b->nready)
        a = ACT_PUBLISH;
    if (a == ACT_PUBLISH)
        take_group_locked(b);
    pthread_mutex_unlock(&b->lock);
    act(b, a);
}

/* Journal: D for each execution answered (its result is durable), X for
 * each that gets no result (the scheduler dispatches it again). */
static void journal_group(ex_batch_t *b, const size_t *idx, size_t n, char tag) {
    for (size_t i = 0; EX.journal && i < n; i++)
        em_journal_write(EX.journal, "%c %.*s %u", tag, (int)b->execs[idx[i]].id.n,
                         (const char *)b->execs[idx[i]].id.p, b->res[idx[i]].attempt);
}

/* Ends the call with an error: every execution not yet answered gets no
 * result from this call. Jobs still running finish unpublished. */
static void batch_fail(ex_batch_t *b, grpc_status_code code, const char *msg) {
    pthread_mutex_lock(&b->lock);
    b->call_ended = 1;
    b->publishing = 0;
    journal_group(b, b->pub, b->npub, 'X');
    journal_group(b, b->ready, b->nready, 'X');
    b->npub = b->nready = 0;
    em_rpc_call_fail(b->call, code, msg);
    action_t a = next_action_locked(b);
    pthread_mutex_unlock(&b->lock);
    act(b, a);
}

static void publish_send(ex_batch_t *b);

static void publish_retry(void *arg) {
    ex_batch_t *b = arg;
    if (ex_env.abandon) {
        batch_fail(b, GRPC_STATUS_ABORTED, "executor draining: results not published");
        return;
    }
    publish_send(b);
}

/* Runs on the loop thread. */
static void on_published(void *arg, grpc_status_code code, const char *details, const uint8_t *resp, size_t len) {
    ex_batch_t *b = arg;
    (void)resp;
    (void)len;
    em_metric_observe(EX.m_publish_seconds, em_mono_us() - b->publish_start_us);
    if (code == GRPC_STATUS_OK) {
        em_metric_add(EX.m_out, (int64_t)b->npub);
        journal_group(b, b->pub, b->npub, 'D');
        pthread_mutex_lock(&b->lock);
        b->answered += b->npub;
        release_inflight(b, b->npub);
        b->npub = 0;
        b->publishing = 0;
        grpc_slice group = b->packed;
        b->packed = grpc_empty_slice();
        if (b->answered == b->n) {
            b->call_ended = 1;
            em_rpc_call_reply_slice(b->call, group); /* the last message and OK in one batch */
        } else {
            em_rpc_call_send_slice(b->call, group);
        }
        action_t a = next_action_locked(b);
        if (a == ACT_PUBLISH)
            take_group_locked(b);
        pthread_mutex_unlock(&b->lock);
        act(b, a);
        return;
    }
    em_metric_add(EX.m_publish_failed, 1);
    if (code == GRPC_STATUS_INVALID_ARGUMENT) {
        /* the sink will refuse these results however often they are sent
         * (a result over its Kafka limit: publish.max_result_bytes is above
         * the sinks' kafka.max_message_bytes); the scheduler decides what
         * runs again */
        char msg[512];
        EM_ERROR("a sink refused results as invalid; the batch ends ABORTED, not published again",
                 EM_F_STR("details", details), EM_F_INT("results", b->npub));
        snprintf(msg, sizeof(msg), "result sink refused the results: %s", details);
        batch_fail(b, GRPC_STATUS_ABORTED, msg);
        return;
    }
    int64_t left = em_rpc_call_remaining_ms(b->call);
    EM_WARN("publish to sink failed", EM_F_STR("code", em_rpc_status_name(code)), EM_F_STR("details", details),
            EM_F_INT("results", b->npub), EM_F_INT("try", b->publish_tries), EM_F_INT("call_ms_left", left));
    if (left > 2 * EX.publish_backoff_ms + 100 && !ex_env.abandon && !em_rpc_call_cancelled(b->call) &&
        em_timer_after(ex_env.timers, EX.publish_backoff_ms, publish_retry, b) == EM_OK)
        return;
    char msg[512];
    snprintf(msg, sizeof(msg), "result sink: %s: %s", em_rpc_status_name(code), details);
    batch_fail(b, GRPC_STATUS_ABORTED, msg);
}

static void publish_send(ex_batch_t *b) {
    int64_t timeout = EX.publish_timeout_ms;
    int64_t left = em_rpc_call_remaining_ms(b->call);
    if (left - 50 < timeout)
        timeout = left - 50 > 100 ? left - 50 : 100;
    b->publish_tries++;
    b->publish_start_us = em_mono_us();
    if (em_rpc_channel_call(EX.sinks, EX.m_publish, grpc_slice_ref(b->packed), timeout, on_published, b) != EM_OK)
        batch_fail(b, GRPC_STATUS_ABORTED, "executor: cannot call a result sink");
}

/* Publishes the group taken by take_group_locked. */
static void publish_start(ex_batch_t *b) {
    if (ex_env.abandon) {
        batch_fail(b, GRPC_STATUS_ABORTED, "executor draining: results not published");
        return;
    }
    grpc_slice_unref(b->packed);
    b->packed = pack_results(b, b->pub, b->npub);
    publish_send(b);
}

/* An ExecuteResponse naming an execution that ran to its end. */
static grpc_slice finished_msg(const ex_batch_t *b, size_t idx) {
    const ex_span_t *id = &b->execs[idx].id;
    grpc_slice s = grpc_slice_malloc(em_pb_len_field_size(2, id->n));
    em_pb_write_len_field(GRPC_SLICE_START_PTR(s), 2, id->p, id->n);
    return s;
}

void ex_batch_job_done(ex_batch_t *b, size_t idx) {
    pthread_mutex_lock(&b->lock);
    b->unfinished--;
    action_t a = ACT_NONE;
    /* the caller asked, or may charge a death to it (a call of one): say it
     * ended, at once, before its result */
    if (b->report_finished && !b->call_ended)
        em_rpc_call_send_slice(b->call, finished_msg(b, idx));
    if (!b->call_ended) {
        b->ready[b->nready++] = idx;
        a = next_action_locked(b);
        if (a == ACT_PUBLISH)
            take_group_locked(b);
    } else {
        journal_group(b, &idx, 1, 'X');
        a = next_action_locked(b);
    }
    pthread_mutex_unlock(&b->lock);
    act(b, a);
}

/* ---- reading the request: request.c ------------------------------------ */

/* The job's deadline: its timeout from now, or the caller's absolute
 * deadline when sooner, both made monotonic here. */
static void set_deadline(ex_job_t *job, int64_t now_mono, int64_t now_unix) {
    const ex_exec_t *ex = job->ex;
    job->timeout_ms = ex->timeout_ms ? (int64_t)ex->timeout_ms : job->handler->default_timeout_ms;
    job->deadline_ms = now_mono + job->timeout_ms;
    job->deadline_why = ex->timeout_ms ? "its timeout_ms" : "its handler's default timeout";
    if (ex->deadline_unix_ms && now_mono + (ex->deadline_unix_ms - now_unix) < job->deadline_ms) {
        job->deadline_ms = now_mono + (ex->deadline_unix_ms - now_unix);
        job->deadline_why = "the caller's deadline (deadline_unix_ms)";
    }
}

/* ---- admission: take what fits, refuse the rest one by one -------------- */

/* Reads the request's top level without allocating; refuses the call (-1)
 * when it cannot be read or asks for what cannot be. */
static int scan_request(em_rpc_call_t *call, const uint8_t *req, size_t len, ex_request_info_t *ri) {
    char msg[256];
    if (ex_request_scan(req, len, ri, msg, sizeof(msg)) == 0)
        return 0;
    em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
    return -1;
}

/* The executions refused one by one, as ExecuteResponse bytes (`refused`
 * entries, field 3) for the one message that names them all: at most
 * publish.group_max_bytes, like every answer message. */
typedef struct refusals {
    uint8_t *buf;
    size_t len, cap;
    size_t handler_busy, max_inflight; /* how many met each limit */
    char first[200];                   /* the first reason, for a call refused whole */
} refusals_t;

/* The bytes of a Refused message (without its tag and length). */
static size_t refusal_inner(const ex_exec_t *ex, uint32_t attempt, size_t reason_n, int busy) {
    return (ex->id.n ? em_pb_len_field_size(1, ex->id.n) : 0) + em_pb_varint_field_size(2, attempt) +
           (ex->handler.n ? em_pb_len_field_size(3, ex->handler.n) : 0) + em_pb_len_field_size(4, reason_n) +
           (busy ? em_pb_varint_field_size(5, 1) : 0);
}

/* Names ex refused for reason (busy: its handler's limit, else the
 * executor's): 0, or -1 when it would not fit the message (or out of
 * memory). */
static int refusal_add(refusals_t *rf, const ex_exec_t *ex, const char *reason, int busy) {
    uint32_t attempt = ex->attempt ? ex->attempt : 1; /* as its result would say */
    size_t rl = strlen(reason);
    size_t inner = refusal_inner(ex, attempt, rl, busy);
    size_t w = em_pb_len_field_size(3, inner);
    if ((int64_t)(rf->len + w) > EX.group_max_bytes || em_grow(&rf->buf, &rf->cap, rf->len + w, 1) != 0)
        return -1;
    uint8_t *o = rf->buf + rf->len;
    o = em_pb_write_raw_varint(o, (3 << 3) | EM_PB_LEN);
    o = em_pb_write_raw_varint(o, inner);
    if (ex->id.n)
        o = em_pb_write_len_field(o, 1, ex->id.p, ex->id.n);
    o = em_pb_write_varint_field(o, 2, attempt);
    if (ex->handler.n)
        o = em_pb_write_len_field(o, 3, ex->handler.p, ex->handler.n);
    o = em_pb_write_len_field(o, 4, reason, rl);
    if (busy)
        o = em_pb_write_varint_field(o, 5, 1);
    rf->len = (size_t)(o - rf->buf);
    if (busy)
        rf->handler_busy++;
    else
        rf->max_inflight++;
    if (!rf->first[0])
        snprintf(rf->first, sizeof(rf->first), "%s", reason);
    return 0;
}

static ex_batch_t *batch_new(size_t n, size_t len) {
    em_arena_t *arena = em_arena_new(len + 4096);
    if (!arena)
        return NULL;
    ex_batch_t *b = em_arena_alloc(arena, sizeof(*b), 1);
    if (b) {
        b->arena = arena;
        b->execs = em_arena_alloc(arena, n * sizeof(*b->execs), 1);
        b->jobs = em_arena_alloc(arena, n * sizeof(*b->jobs), 1);
        b->res = em_arena_alloc(arena, n * sizeof(*b->res), 1);
        b->ready = em_arena_alloc(arena, n * sizeof(*b->ready), 0);
        b->pub = em_arena_alloc(arena, n * sizeof(*b->pub), 0);
    }
    if (!b || !b->execs || !b->jobs || !b->res || !b->ready || !b->pub) {
        em_arena_destroy(arena);
        return NULL;
    }
    b->n = n;
    b->packed = grpc_empty_slice();
    b->refused = grpc_empty_slice();
    pthread_mutex_init(&b->lock, NULL);
    return b;
}

/* Gives back the handler slots b's jobs hold. */
static void put_slots(ex_batch_t *b, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (b->jobs[k].slot) {
            b->jobs[k].slot = 0;
            ex_handler_put(b->jobs[k].handler);
        }
}

/* Takes the executions of the request that fit into b (its arrays sized
 * for room of them): those whose handler takes a slot, up to room, in
 * request order; names the others in rf. Returns how many were taken
 * (their slots held); else, with every slot given back and the call's
 * refusal in code and msg, -2 when the refusals would not fit one message
 * (a refusal for want of room), -1 when an execution cannot be read. */
static long take_executions(ex_batch_t *b, const uint8_t *req, size_t len, const ex_request_info_t *ri, size_t room,
                            refusals_t *rf, grpc_status_code *code, char *msg, size_t msg_size) {
    char reason[200];
    snprintf(reason, sizeof(reason), "executor at executor.max_inflight %d", EX.max_inflight);
    const uint8_t *p = req, *end = req + len;
    em_pb_field_t f;
    size_t i = 0, taken = 0;
    for (; em_pb_next(&p, end, &f) == EM_OK; i += f.number == 1) {
        if (f.number != 1)
            continue;
        ex_exec_t ex = {0};
        em_err_t rc = f.wire_type == EM_PB_LEN ? ex_execution_read(f.data, f.len, &ex) : EM_EINVAL;
        if (rc != EM_OK) {
            *code = GRPC_STATUS_INVALID_ARGUMENT;
            snprintf(msg, msg_size, "executions[%zu]: not a valid execmesh.v1.Execution", i);
            goto refuse;
        }
        ex_handler_t *hd = ex_handler_find(ex.handler.p, ex.handler.n);
        int slot = 0, running = 0;
        if (taken == room) {
            if (refusal_add(rf, &ex, reason, 0) != 0)
                goto too_many;
            continue;
        }
        if (hd && hd->async && !ri->alone) { /* an alone call takes its slot when it starts */
            if (!ex_handler_take(hd, 0, &running)) {
                char busy[200];
                snprintf(busy, sizeof(busy), "handler %s runs %d executions, its concurrency %d", hd->name, running,
                         hd->concurrency);
                if (refusal_add(rf, &ex, busy, 1) != 0)
                    goto too_many;
                continue;
            }
            slot = 1;
        }
        b->jobs[taken].handler = hd; /* NULL: unknown, it ends REJECTED */
        b->jobs[taken].slot = slot;
        if ((rc = ex_execution_read_lists(b->arena, f.data, f.len, &ex)) != EM_OK) {
            taken++; /* its slot is given back below */
            *code = GRPC_STATUS_RESOURCE_EXHAUSTED;
            snprintf(msg, msg_size, "executions[%zu]: out of memory", i);
            goto refuse;
        }
        b->execs[taken++] = ex;
    }
    return (long)taken;
too_many:
    *code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(msg, msg_size,
             "executor at capacity: batch of %zu, %zu taken (executor.max_inflight %d); the refusals of the rest "
             "would not fit one message (publish.group_max_bytes %lld)",
             ri->n, taken, EX.max_inflight, (long long)EX.group_max_bytes);
    put_slots(b, taken);
    return -2;
refuse:
    put_slots(b, taken);
    return -1;
}

/* Executor.Execute, on the loop thread. */
void ex_on_execute(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len) {
    char msg[1024];
    ex_request_info_t ri;
    refusals_t rf = {0};
    grpc_status_code code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    ex_batch_t *b = NULL;
    int busy = 1; /* a refusal for want of room (execmesh_executor_busy_total) */
    (void)ctx;
    if (scan_request(call, req, len, &ri) != 0)
        return;
    int before = 0;
    long room = ex_alone_admit(ri.n, ri.alone, &before);
    if (room <= 0) {
        if (room < 0)
            snprintf(msg, sizeof(msg), "executor busy: an execution runs alone here (batch of %zu)", ri.n);
        else
            snprintf(msg, sizeof(msg), "executor at capacity: %d executions in flight, limit %d, batch of %zu", before,
                     EX.max_inflight, ri.n);
        em_metric_add(EX.m_busy, 1);
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return;
    }
    /* from here room is taken: every refusal gives it back */
    /* the rest is refused at least for executor.max_inflight: when even the
     * smallest refusals of them pass one message, the call is refused whole
     * before anything is allocated for it */
    size_t over = ri.n - (size_t)room;
    if (over > 0) {
        ex_exec_t none = {0};
        snprintf(msg, sizeof(msg), "executor at executor.max_inflight %d", EX.max_inflight);
        size_t least = em_pb_len_field_size(3, refusal_inner(&none, 1, strlen(msg), 0));
        if (over > (size_t)EX.group_max_bytes / least) {
            snprintf(msg, sizeof(msg),
                     "executor at capacity: %d executions in flight, limit %d, batch of %zu: room for %ld, and the "
                     "refusals of the rest would not fit one message (publish.group_max_bytes %lld)",
                     before, EX.max_inflight, ri.n, room, (long long)EX.group_max_bytes);
            goto refuse;
        }
    }
    b = batch_new((size_t)room, len);
    if (!b) {
        snprintf(msg, sizeof(msg), "executor: out of memory");
        busy = 0;
        goto refuse;
    }
    long taken = take_executions(b, req, len, &ri, (size_t)room, &rf, &code, msg, sizeof(msg));
    if (taken == 0 && rf.handler_busy && !ri.alone) {
        /* every one met its handler's concurrency: accepted with nothing to
         * run, the refusals its only answer, so the caller delays those
         * handlers only (a call refused whole says nothing of which) */
        atomic_fetch_sub(&EX.inflight, (int)room);
        pthread_mutex_destroy(&b->lock);
        em_arena_destroy(b->arena);
        em_metric_add(EX.m_refused_busy, (int64_t)rf.handler_busy);
        em_metric_add(EX.m_refused_inflight, (int64_t)rf.max_inflight);
        em_rpc_call_send_headers(call, "execmesh-accepted", EX.svc.replica);
        em_rpc_call_send_slice(call, grpc_slice_from_copied_buffer((const char *)rf.buf, rf.len));
        free(rf.buf);
        em_rpc_call_finish(call);
        return;
    }
    if (taken == 0)
        snprintf(msg, sizeof(msg), "executor busy: no execution of the batch of %zu fits: %s", ri.n, rf.first);
    if (taken == -1)
        busy = 0; /* not a valid request, or out of memory */
    if (taken <= 0)
        goto refuse;
    atomic_fetch_sub(&EX.inflight, (int)(room - taken)); /* the room not used */
    b->n = (size_t)taken;
    b->unfinished = (size_t)taken;
    b->report_finished = ri.report_finished || ri.n == 1;
    if (rf.len)
        b->refused = grpc_slice_from_copied_buffer((const char *)rf.buf, rf.len);
    free(rf.buf);
    em_metric_add(EX.m_in, taken);
    em_metric_add(EX.m_inflight, taken);
    em_metric_add(EX.m_refused_busy, (int64_t)rf.handler_busy);
    em_metric_add(EX.m_refused_inflight, (int64_t)rf.max_inflight);
    atomic_fetch_add(&EX.batches, 1);
    b->call = call;
    live_link(b);
    if (ri.alone)
        ex_alone_hold(b); /* accepted and started once nothing else runs here */
    else
        ex_batch_begin(b);
    return;
refuse:
    if (busy)
        em_metric_add(EX.m_busy, 1);
    free(rf.buf);
    atomic_fetch_sub(&EX.inflight, (int)room);
    if (ri.alone)
        ex_alone_cancel_reservation();
    if (b) {
        pthread_mutex_destroy(&b->lock);
        em_arena_destroy(b->arena);
    }
    em_rpc_call_fail(call, code, msg);
}

em_rpc_call_t *ex_batch_call(ex_batch_t *b) { return b->call; }

void ex_batch_drop(ex_batch_t *b, grpc_status_code code, const char *why) {
    live_unlink(b);
    em_rpc_call_fail(b->call, code, why);
    put_slots(b, b->n);
    release_inflight(b, b->n);
    atomic_fetch_sub(&EX.batches, 1);
    grpc_slice_unref(b->refused);
    pthread_mutex_destroy(&b->lock);
    em_arena_destroy(b->arena);
}

void ex_batch_begin(ex_batch_t *b) {
    char msg[1024];
    size_t n = b->n;
    b->starting = 1;
    em_rpc_call_send_headers(b->call, "execmesh-accepted", EX.svc.replica);
    if (!GRPC_SLICE_IS_EMPTY(b->refused)) { /* the refusals, in one message before any other */
        em_rpc_call_send_slice(b->call, b->refused);
        b->refused = grpc_empty_slice();
    }

    /* attempts first: a job may finish as soon as it starts */
    int64_t now_mono = em_mono_ms(), now_unix = em_now_unix_ms();
    for (size_t k = 0; k < n; k++) {
        b->res[k].attempt = b->execs[k].attempt ? b->execs[k].attempt : 1;
        b->jobs[k].batch = b;
        b->jobs[k].idx = k;
        b->jobs[k].ex = &b->execs[k];
        b->jobs[k].arrived_ms = now_mono;
    }
    for (size_t k = 0; k < n; k++) {
        ex_job_t *job = &b->jobs[k];
        const ex_exec_t *ex = job->ex;
        ex_handler_t *hd = job->handler;
        if (!hd) {
            if (!ex->handler.n)
                snprintf(msg, sizeof(msg), "handler is required");
            else
                snprintf(msg, sizeof(msg), "unknown handler '%.*s' (configured: %s)",
                         (int)(ex->handler.n > 100 ? 100 : ex->handler.n), (const char *)ex->handler.p,
                         EX.handler_list);
            job_finish(job, EXECMESH__V1__STATUS__REJECTED, NULL, 0, 0, msg, 0);
            continue;
        }
        if (hd->async && !job->slot) { /* a call that runs alone: nothing runs beside it */
            int running;
            job->slot = ex_handler_take(hd, 1, &running);
        }
        set_deadline(job, now_mono, now_unix);
        ex_job_start(job);
    }
    /* what finished already goes out now, the rest as it finishes */
    pthread_mutex_lock(&b->lock);
    b->starting = 0;
    action_t a = ACT_NONE;
    if (b->nready) {
        take_group_locked(b);
        a = ACT_PUBLISH;
    }
    pthread_mutex_unlock(&b->lock);
    act(b, a);
}
