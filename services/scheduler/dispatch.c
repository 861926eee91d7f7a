/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Batches to executors: packing, the Execute call, its answer (done in the
 * watermark, back to the queue as a new attempt, or refused by the executor
 * and queued again as the same attempt). Every function named *_locked runs
 * with s->lock held.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_execution.h"
#include "em_log.h"
#include "em_pbwire.h"
#include "em_util.h"
#include "execmesh/v1/internal.pb-c.h"
#include "scheduler.h"

typedef struct sc_call {
    struct sc_call *prev, *next; /* s->calls */
    scheduler_t *s;
    int n;
    int nanswered;
    int hint;                /* where the next result's item probably is (results come in order) */
    int accepted;            /* an executor said it took the batch (response header) */
    int alone;               /* ExecuteRequest.alone: its one execution runs with nothing beside it */
    int report_finished;     /* ExecuteRequest.report_finished: an execution of it holds a resource */
    int protocol_errors;
    char executor[128];      /* which one */
    char peer[96];           /* its address, where a cancel for one of its executions goes */
    int64_t start_us;        /* monotonic: when the call started */
    sc_item_t *items[];
} sc_call_t;

/* ---- dispatch ----------------------------------------------------------- */

static void backoff_fire(void *arg) {
    scheduler_t *s = arg;
    pthread_mutex_lock(&s->lock);
    s->backoff_armed = 0;
    sc_dispatch_locked(s);
    pthread_mutex_unlock(&s->lock);
}

static void backoff_locked(scheduler_t *s, int64_t ms) {
    s->backoff_until_ms = em_mono_ms() + ms;
    if (s->dispatch_closed)
        return; /* exiting: the timers may be gone */
    if (!s->backoff_armed && em_timer_after(s->svc.timers, ms, backoff_fire, s) == EM_OK)
        s->backoff_armed = 1;
}

const uint8_t *sc_item_id(const sc_item_t *it) { return GRPC_SLICE_START_PTR(it->body) + it->body_off + it->id_rel; }

/* The call's item a result belongs to: dispatched in it, not yet answered
 * (an answered item leaves the call: its slot is NULL, the item may already
 * serve another execution), with the id and the attempt the scheduler sent. */
static int find_item(sc_call_t *c, const em_result_info_t *r) {
    for (int k = 0; k < c->n; k++) {
        int i = (c->hint + k) % c->n;
        sc_item_t *it = c->items[i];
        if (it && it->attempt == r->attempt && it->id_len == r->id_len &&
            memcmp(sc_item_id(it), r->id, r->id_len) == 0) {
            c->hint = i + 1;
            return i;
        }
    }
    return -1;
}

static void protocol_error_locked(scheduler_t *s, sc_call_t *c, const char *what) {
    em_metric_add(s->m_protocol_errors, 1);
    if (c->protocol_errors++ == 0)
        EM_ERROR("protocol error in an Execute answer", EM_F_STR("error", what), EM_F_STR("executor", c->executor),
                 EM_F_INT("executions", c->n));
}

/* One result of the call: the attempt's outcome. */
static void take_result_locked(scheduler_t *s, sc_call_t *c, const uint8_t *buf, size_t len) {
    em_result_info_t r;
    if (em_result_read(buf, len, &r) != EM_OK) {
        protocol_error_locked(s, c, "a result that is not an execmesh.v1.Result");
        return;
    }
    int i = find_item(c, &r);
    if (i < 0) {
        protocol_error_locked(s, c, "a result whose id and attempt match no execution of the call");
        return;
    }
    sc_item_t *it = c->items[i];
    c->items[i] = NULL;
    c->nanswered++;
    s->inflight_items--;
    sc_item_settled_locked(s, it, 1);
    int failed = r.status == EXECMESH__V1__STATUS__FAILED || r.status == EXECMESH__V1__STATUS__TIMED_OUT;
    if (!r.final && failed) {
        sc_retry_later_locked(s, it, &r);
        return;
    }
    em_metric_add(s->m_out, 1);
    sc_item_done_locked(s, it, 1);
}

/* One execution the executor refused (ExecuteResponse.refused): nothing of
 * it ran; the same attempt waits in its handler's queue again. A handler at
 * its concurrency there delays only that handler's executions; an executor
 * at executor.max_inflight delays dispatch a little (the next call may go
 * to another executor). */
static void take_refused_locked(scheduler_t *s, sc_call_t *c, const uint8_t *buf, size_t len) {
    const uint8_t *p = buf, *end = buf + len;
    em_pb_field_t f;
    em_result_info_t r = {0};
    const uint8_t *reason = NULL;
    size_t reason_len = 0;
    int busy = 0;
    while (em_pb_next(&p, end, &f) == EM_OK) {
        if (f.number == 1 && f.wire_type == EM_PB_LEN) {
            r.id = f.data;
            r.id_len = f.len;
        } else if (f.number == 2 && f.wire_type == EM_PB_VARINT) {
            r.attempt = (uint32_t)f.varint;
        } else if (f.number == 4 && f.wire_type == EM_PB_LEN) {
            reason = f.data;
            reason_len = f.len;
        } else if (f.number == 5 && f.wire_type == EM_PB_VARINT) {
            busy = f.varint != 0;
        }
    }
    int i = r.id ? find_item(c, &r) : -1;
    if (i < 0) {
        protocol_error_locked(s, c, "a refusal whose id and attempt match no execution of the call");
        return;
    }
    sc_item_t *it = c->items[i];
    c->items[i] = NULL;
    c->nanswered++;
    s->inflight_items--;
    sc_item_settled_locked(s, it, 0);
    sc_pending_push_front_locked(s, &it, 1);
    int64_t until = em_mono_ms() + s->retry_backoff_ms;
    if (busy) {
        em_metric_add(s->m_refused_handler, 1);
        sc_class_refused_locked(s, s->classes[it->cls], until);
        sc_resources_wake_at_locked(s, until);
    } else {
        em_metric_add(s->m_refused_full, 1);
        backoff_locked(s, s->retry_backoff_ms);
    }
    char why[256];
    snprintf(why, sizeof(why), "%.*s", (int)(reason_len < 255 ? reason_len : 255), reason ? (const char *)reason : "");
    char idbuf[300];
    EM_DEBUG("executor refused an execution", SC_F_EXEC(s, it, idbuf), EM_F_STR("executor", c->executor),
             EM_F_STR("handler", s->classes[it->cls]->handler), EM_F_STR("reason", why));
}

/* Loop thread: the executor that took the call. */
static void on_execute_headers(void *arg, const char *value, const char *peer) {
    sc_call_t *c = arg;
    scheduler_t *s = c->s;
    if (!value)
        return;
    pthread_mutex_lock(&s->lock);
    c->accepted = 1;
    snprintf(c->executor, sizeof(c->executor), "%s", value);
    snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "");
    /* a cancel read while the call was on its way: the executor stops it */
    for (int i = 0; i < c->n; i++)
        if (c->items[i] && sc_cancelled_locked(s, c->items[i]))
            sc_cancel_on_executor_locked(s, c->peer, sc_item_id(c->items[i]), c->items[i]->id_len);
    pthread_mutex_unlock(&s->lock);
}

void sc_dispatch_cancel_seen_locked(scheduler_t *s, const uint8_t *id, size_t len) {
    for (sc_call_t *c = s->calls; c; c = c->next) {
        if (!c->accepted)
            continue; /* its headers will find the cancel */
        for (int i = 0; i < c->n; i++) {
            const sc_item_t *it = c->items[i];
            if (it && it->id_len == len && memcmp(sc_item_id(it), id, len) == 0)
                sc_cancel_on_executor_locked(s, c->peer, id, len);
        }
    }
}

/* Loop thread: one message of the answer, results the sink has stored. */
static void on_execute_message(void *arg, const uint8_t *msg, size_t len) {
    sc_call_t *c = arg;
    scheduler_t *s = c->s;
    const uint8_t *p = msg, *end = msg + len;
    em_pb_field_t f;
    em_err_t rc;
    pthread_mutex_lock(&s->lock);
    c->accepted = 1;
    s->consecutive_failures = 0;
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        if (f.number == 1 && f.wire_type == EM_PB_LEN)
            take_result_locked(s, c, f.data, f.len);
        else if (f.number == 2 && f.wire_type == EM_PB_LEN) {
            for (int i = 0; i < c->n; i++) /* finished, not yet stored: a death now is not its doing */
                if (c->items[i] && c->items[i]->id_len == f.len &&
                    memcmp(sc_item_id(c->items[i]), f.data, f.len) == 0) {
                    c->items[i]->ran = 1;
                    sc_item_settled_locked(s, c->items[i], 1); /* its resources are free again */
                }
        } else if (f.number == 3 && f.wire_type == EM_PB_LEN)
            take_refused_locked(s, c, f.data, f.len);
    }
    if (rc != EM_ENOTFOUND)
        protocol_error_locked(s, c, "an ExecuteResponse that cannot be decoded");
    em_metric_set(s->m_inflight, s->inflight_items);
    sc_dispatch_locked(s);
    pthread_mutex_unlock(&s->lock);
}

static void call_link(scheduler_t *s, sc_call_t *c) {
    c->prev = NULL;
    c->next = s->calls;
    if (s->calls)
        s->calls->prev = c;
    s->calls = c;
}

static void call_unlink(scheduler_t *s, sc_call_t *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        s->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

/* What becomes of the executions a failed call did not answer. */
static void unanswered_locked(scheduler_t *s, sc_call_t *c, grpc_status_code code, const char *details, int k) {
    sc_item_t **left = c->items; /* the unanswered, compacted in place */
    if (!c->accepted) {
        /* no executor took it: nothing ran; the same attempt, after a pause
         * when executors are busy or failing */
        if (code == GRPC_STATUS_RESOURCE_EXHAUSTED && details && strstr(details, "larger than max")) {
            /* not busy: an executor's grpc.max_message_bytes is below our
             * dispatch.batch_max_bytes. Smaller batches from now on (one
             * execution per call at least: those fit when the executors'
             * cap is at least kafka.max_message_bytes + 65536) */
            em_metric_add(s->m_too_large_refused, 1);
            int64_t was = s->batch_bytes_now;
            if (c->n > 1 && s->batch_bytes_now > 1)
                s->batch_bytes_now /= 2;
            EM_ERROR("an executor refused an Execute batch as larger than its gRPC limit: set the executors' "
                     "grpc.max_message_bytes to at least dispatch.batch_max_bytes + 65536; dispatching smaller "
                     "batches meanwhile",
                     EM_F_STR("details", details), EM_F_INT("executions", c->n), EM_F_INT("batch_bytes_was", was),
                     EM_F_INT("batch_bytes_now", s->batch_bytes_now));
            sc_pending_push_front_locked(s, left, k);
            backoff_locked(s, s->retry_backoff_ms);
            return;
        }
        if (code == GRPC_STATUS_RESOURCE_EXHAUSTED) {
            em_metric_add(s->m_busy, 1);
            EM_DEBUG("executors busy, backing off", EM_F_STR("details", details), EM_F_INT("executions", k));
            sc_pending_push_front_locked(s, left, k);
            backoff_locked(s, s->retry_backoff_ms);
            return;
        }
        s->consecutive_failures++;
        EM_WARN("execute call failed before an executor took it, dispatching again",
                EM_F_STR("code", em_rpc_status_name(code)), EM_F_STR("details", details), EM_F_INT("executions", k),
                EM_F_INT("consecutive_failures", s->consecutive_failures));
        sc_pending_push_front_locked(s, left, k);
        if (s->consecutive_failures > 1)
            backoff_locked(s, s->retry_backoff_ms);
        return;
    }
    /* an executor took it and may have run some: the next attempt */
    s->consecutive_failures++;
    em_metric_add(s->m_failed, k);
    int died = code != GRPC_STATUS_ABORTED; /* ABORTED: alive, gave up publishing (sink down, drain) */
    EM_WARN(died ? "executor lost with executions in flight" : "executor gave the executions back",
            EM_F_STR("executor", c->executor), EM_F_STR("code", em_rpc_status_name(code)),
            EM_F_STR("details", details), EM_F_INT("executions", k), EM_F_INT("batch", c->n));
    if (died && c->alone && !left[0]->ran) {
        /* it ran with nothing beside it (the executor saw to it): the death is its own */
        char why[512];
        snprintf(why, sizeof(why), "executor %s died running it alone: %s: %s", c->executor[0] ? c->executor : "?",
                 em_rpc_status_name(code), details ? details : "");
        sc_executor_died_locked(s, left[0], c->executor, why);
        return;
    }
    int m = 0;
    for (int i = 0; i < k; i++) {
        sc_item_t *it = left[i];
        it->attempt++;
        if (died) {
            it->isolate = 1; /* its batch-mates are not blamed: each runs alone next */
            em_metric_add(s->m_isolated, 1);
            if (!it->ran && it->nsuspect < SC_MAX_SUSPECTS) { /* it was running there: a suspect */
                it->suspect[it->nsuspect].attempt = it->attempt - 1;
                snprintf(it->suspect[it->nsuspect].executor, sizeof(it->suspect[0].executor), "%.63s", c->executor);
                it->nsuspect++;
            }
        }
        left[m++] = it;
    }
    em_metric_add(s->m_redispatched, m);
    sc_pending_push_front_locked(s, left, m);
    if (s->consecutive_failures > 1)
        backoff_locked(s, s->retry_backoff_ms);
}

/* Loop thread: the call ended. */
static void on_execute_done(void *arg, grpc_status_code code, const char *details) {
    sc_call_t *c = arg;
    scheduler_t *s = c->s;
    em_metric_observe(s->m_execute_seconds, em_mono_us() - c->start_us);
    pthread_mutex_lock(&s->lock);
    s->inflight_calls--;
    int k = 0;
    for (int i = 0; i < c->n; i++) {
        sc_item_t *it = c->items[i];
        if (!it)
            continue; /* answered */
        sc_item_settled_locked(s, it, 0); /* it runs nowhere now */
        if (!it->part->owned || it->part->revoking) { /* the next owner runs it */
            sc_item_done_locked(s, it, 0);
            s->inflight_items--;
            continue;
        }
        c->items[k++] = it;
    }
    s->inflight_items -= k;
    if (k > 0 && code == GRPC_STATUS_OK) {
        char what[128];
        snprintf(what, sizeof(what), "the call ended OK without the results of %d executions", k);
        protocol_error_locked(s, c, what);
        /* the executor is alive but its answer cannot be trusted: the
         * unanswered run again (a new attempt), no death is counted */
        code = GRPC_STATUS_ABORTED;
        details = "protocol error: results missing from an OK answer";
    }
    if (k > 0)
        unanswered_locked(s, c, code, details, k);
    else if (code == GRPC_STATUS_OK)
        s->consecutive_failures = 0;
    call_unlink(s, c);
    em_metric_set(s->m_inflight, s->inflight_items);
    sc_dispatch_locked(s);
    pthread_mutex_unlock(&s->lock);
    free(c);
}

static const em_rpc_stream_cb_t execute_cb = {
    .header_key = "execmesh-accepted",
    .on_headers = on_execute_headers,
    .on_message = on_execute_message,
    .on_done = on_execute_done,
};

/* The group refuses our commits (a rebalance is under way): work finished
 * now could not be committed and would run again on the next owner, so hold
 * new dispatches until a commit is accepted or the rebalance reaches us, at
 * most one session timeout. */
static int commit_stalled_locked(scheduler_t *s) {
    int64_t now = em_mono_ms();
    if (s->consumer_alive_ms && now - s->consumer_alive_ms > s->session_timeout_ms / 2) {
        /* The consumer loop has not turned for half a session timeout: this
         * process was frozen (SIGSTOP, a stalled VM) and may have lost its
         * partitions meanwhile. Dispatch nothing stale until the group says
         * the partitions are still ours (a commit accepted, or a new assignment). */
        if (!s->commit_stalled_since) {
            s->commit_stalled_since = now;
            EM_WARN("the consumer loop stalled; holding dispatch until the group confirms the partitions",
                    EM_F_INT("stalled_ms", now - s->consumer_alive_ms));
        }
        return 1;
    }
    if (!s->commit_stalled_since)
        return 0;
    if (em_mono_ms() - s->commit_stalled_since < s->session_timeout_ms)
        return 1;
    EM_WARN("commits still refused after a session timeout; dispatching anyway");
    s->commit_stalled_since = 0;
    return 0;
}

void sc_commit_stall_clear_locked(scheduler_t *s, const char *why) {
    if (!s->commit_stalled_since)
        return;
    EM_INFO("dispatch resumed", EM_F_STR("reason", why),
            EM_F_INT("held_ms", em_mono_ms() - s->commit_stalled_since));
    s->commit_stalled_since = 0;
}

/* The id the mesh gives an execution that has none; returns its length. */
static size_t generated_id(const scheduler_t *s, const sc_item_t *it, char *buf, size_t n) {
    int w = snprintf(buf, n, "%s/%" PRId32 "/%" PRId64, s->topic_requests, it->part->id, it->offset);
    return w > 0 && (size_t)w < n ? (size_t)w : 0;
}

/* The fields a dispatch appends to it: attempt and dispatch time; on the
 * first (from the record) also the id and submit time the record lacks. id
 * is the generated id (idl bytes) when it has none. (A record without a
 * traceparent keeps its bytes: its trace id is derived from its id.) */
static em_exec_append_t item_append(const sc_item_t *it, const char *id, size_t idl, int64_t now_unix_ms) {
    em_exec_append_t a = {.attempt = it->attempt, .dispatched_unix_ms = now_unix_ms};
    if (it->raw) {
        a.id = id;
        a.id_len = it->need_id ? idl : 0;
        a.submitted_unix_ms = it->submitted_unix_ms;
    }
    return a;
}

/* The bytes of one execution as dispatched (its record or its last
 * dispatch's bytes, plus the fields appended now). A generated id counts
 * as the longest one: no id is written here. */
static size_t item_body_size(const sc_item_t *it, size_t generated_id_len) {
    em_exec_append_t a = item_append(it, NULL, generated_id_len, INT64_MAX);
    return (it->raw ? it->raw->len : it->body_len) + em_execution_append_size(&a);
}

/* Its bytes in the ExecuteRequest: the field's tag, length and body. */
static size_t item_wire_size(const sc_item_t *it) {
    size_t body = item_body_size(it, 299);
    return 1 + em_varint_size(body) + body;
}

/* The ExecuteRequest for items, written straight into one slice: each
 * execution is its bytes plus the appended mesh fields (repeated Execution
 * executions = 1 is a sequence of length-delimited field 1s). A first
 * dispatch copies the record and appends attempt, and id and submit time
 * when missing; the record is then released (holding it would pin its
 * whole fetch buffer) and the item keeps a reference to its bytes in this
 * slice. A later dispatch copies those and appends the new attempt. */
static grpc_slice pack_batch(const scheduler_t *s, sc_item_t **items, int n, int alone, int report_finished) {
    size_t total = (alone ? 2 : 0) + (report_finished ? 2 : 0); /* bool fields 2 and 3: tag and varint 1 */
    char id[300];
    int64_t now = em_now_unix_ms();
    for (int i = 0; i < n; i++) {
        const sc_item_t *it = items[i];
        size_t idl = it->raw && it->need_id ? generated_id(s, it, id, sizeof(id)) : 0;
        em_exec_append_t a = item_append(it, id, idl, now);
        size_t body = (it->raw ? it->raw->len : it->body_len) + em_execution_append_size(&a);
        total += 1 + em_varint_size(body) + body;
    }
    grpc_slice slice = grpc_slice_malloc(total);
    uint8_t *start = GRPC_SLICE_START_PTR(slice), *out = start;
    for (int i = 0; i < n; i++) {
        sc_item_t *it = items[i];
        const uint8_t *src;
        size_t srclen, idl = 0;
        if (it->raw) {
            src = it->raw->payload;
            srclen = it->raw->len;
            idl = it->need_id ? generated_id(s, it, id, sizeof(id)) : 0;
        } else {
            src = GRPC_SLICE_START_PTR(it->body) + it->body_off;
            srclen = it->body_len;
        }
        em_exec_append_t a = item_append(it, id, idl, now);
        size_t body = srclen + em_execution_append_size(&a);
        *out++ = (1 << 3) | EM_PB_LEN;
        out += em_pb_put_varint(out, body);
        uint8_t *body_start = out;
        memcpy(out, src, srclen);
        out += srclen;
        if (idl) { /* the generated id is written first of the appended fields */
            it->id_rel = (uint32_t)(srclen + 1 + em_varint_size(idl));
            it->id_len = (uint32_t)idl;
        }
        out = em_execution_append(out, &a);
        if (it->raw) { /* its first dispatch: it waited since its record was appended */
            em_metric_observe(s->m_queue_wait, (now > it->kafka_ms ? now - it->kafka_ms : 0) * 1000);
            rd_kafka_message_destroy(it->raw);
            it->raw = NULL;
        } else {
            grpc_slice_unref(it->body);
        }
        it->body = grpc_slice_ref(slice);
        it->has_body = 1;
        it->body_off = (uint32_t)(body_start - start);
        it->body_len = (uint32_t)body;
    }
    if (alone) {
        *out++ = (2 << 3) | EM_PB_VARINT;
        *out++ = 1;
    }
    if (report_finished) {
        *out++ = (3 << 3) | EM_PB_VARINT;
        *out++ = 1;
    }
    return slice;
}

void sc_dispatch_close(scheduler_t *s) {
    pthread_mutex_lock(&s->lock);
    s->dispatch_closed = 1;
    pthread_mutex_unlock(&s->lock);
}

void sc_consumer_turn_locked(scheduler_t *s) {
    int64_t now = em_mono_ms();
    if (s->consumer_alive_ms && now - s->consumer_alive_ms > s->session_timeout_ms / 2 && !s->commit_stalled_since) {
        s->commit_stalled_since = now;
        EM_WARN("the consumer loop stalled; holding dispatch until the group confirms the partitions",
                EM_F_INT("stalled_ms", now - s->consumer_alive_ms));
    }
    s->consumer_alive_ms = now;
}

/* An execution that was in flight at quarantine.executor_deaths - 1
 * executor deaths (charged or not) runs alone: with nothing beside it on
 * its executor (ExecuteRequest.alone), so that its death, if it kills that
 * one too, is its own and ends it. Before that, a death beside others is
 * charged to no one. A poison execution thus costs at most
 * quarantine.executor_deaths executors. */
static int runs_alone(const scheduler_t *s, const sc_item_t *it) {
    return (int64_t)it->deaths + it->nsuspect + 1 >= s->quarantine_deaths;
}

/* Fills c from the handlers' queues, serving them in turn from the ring's
 * head: from each, what its resources admit, until the batch is full. An
 * execution that must run in a call of its own ends the batch (it is taken
 * only as the first). *wake_ms: when a throttled handler may run again. */
static void fill_batch_locked(scheduler_t *s, sc_call_t *c, int k, int64_t *timeout, int64_t *wake_ms) {
    int64_t now = em_mono_ms();
    size_t bytes = 0;
    sc_class_t *ring[SC_MAX_CLASSES]; /* this turn's order; a class emptied leaves the ring meanwhile */
    int n = 0;
    if (s->act) {
        sc_class_t *cl = s->act;
        do {
            ring[n++] = cl;
            cl = cl->act_next;
        } while (cl != s->act && n < SC_MAX_CLASSES);
    }
    for (int j = 0; j < n && c->n < k; j++) {
        sc_class_t *cl = ring[j];
        if (cl->busy_until_ms > now) {
            if (!*wake_ms || cl->busy_until_ms < *wake_ms)
                *wake_ms = cl->busy_until_ms;
            continue;
        }
        int allow = cl->window ? cl->window - cl->inflight : k;
        while (c->n < k && cl->head && allow > 0) {
            sc_item_t *it = cl->head;
            if (it->isolate && c->n > 0)
                return; /* it goes in a call of its own, the next */
            /* one gRPC message: the batch stays within the byte cap (one
             * execution always fits, validate_sizes saw to it) */
            size_t w = item_wire_size(it);
            if (c->n > 0 && (int64_t)(bytes + w) > s->batch_bytes_now) {
                em_metric_add(s->m_byte_cuts, 1);
                return;
            }
            if (!it->part->owned || it->part->revoking) {
                sc_item_done_locked(s, sc_pending_pop_locked(s, cl), 0);
                continue;
            }
            if (sc_cancelled_locked(s, it)) {
                sc_cancel_item_locked(s, sc_pending_pop_locked(s, cl), "before it was dispatched");
                continue;
            }
            if (cl->nres && !sc_resources_take_locked(s, cl, it, now, wake_ms))
                break; /* its resource is at its limit: the next handler */
            sc_pending_pop_locked(s, cl);
            it->dispatched = 1;
            cl->inflight++;
            allow--;
            if (it->holding || cl->window)
                c->report_finished = 1; /* a slot of it frees when it finishes */
            /* the executors enforce each execution's timeout; the call's
             * deadline only bounds a hung executor, so it must not be
             * shorter than any handler's default */
            int64_t t = it->timeout_ms ? (int64_t)it->timeout_ms : s->default_timeout_ms;
            if (it->deadline_ms) { /* nor run past the caller's deadline */
                int64_t left = it->deadline_ms - now;
                if (left < t)
                    t = left > 0 ? left : 0;
            }
            if (t > *timeout)
                *timeout = t;
            it->ran = 0;
            bytes += w;
            c->items[c->n++] = it;
            if (it->isolate) {
                c->alone = runs_alone(s, it);
                return;
            }
        }
    }
}

void sc_dispatch_locked(scheduler_t *s) {
    if (s->dispatch_closed || em_mono_ms() < s->backoff_until_ms || commit_stalled_locked(s))
        return;
    int64_t wake_ms = 0;
    while (s->npending > 0 && s->inflight_calls < s->max_calls && s->inflight_items < s->max_inflight) {
        int room = s->max_inflight - s->inflight_items;
        int k = s->npending < s->batch_max ? s->npending : s->batch_max;
        if (k > room)
            k = room;
        sc_call_t *c = malloc(sizeof(*c) + (size_t)k * sizeof(sc_item_t *));
        if (!c) {
            EM_ERROR("out of memory building a batch");
            backoff_locked(s, s->retry_backoff_ms);
            return;
        }
        memset(c, 0, sizeof(*c));
        c->s = s;
        int64_t timeout = 0;
        int before = s->npending;
        fill_batch_locked(s, c, k, &timeout, &wake_ms);
        if (s->act)
            s->act = s->act->act_next; /* the next batch starts from the next handler */
        if (c->n == 0) {
            free(c);
            if (s->npending < before)
                continue; /* it dropped revoked or cancelled ones: look again */
            break;        /* everything waiting is throttled or its handler busy */
        }
        grpc_slice slice = pack_batch(s, c->items, c->n, c->alone, c->report_finished);
        if (em_rpc_channel_call_stream(s->executors, s->m_execute, slice, timeout + s->deadline_grace_ms, &execute_cb,
                                       c) != EM_OK) {
            EM_WARN("cannot start an Execute call", EM_F_INT("executions", c->n));
            for (int i = 0; i < c->n; i++)
                sc_item_settled_locked(s, c->items[i], 0);
            sc_pending_push_front_locked(s, c->items, c->n);
            free(c);
            backoff_locked(s, s->retry_backoff_ms);
            break;
        }
        c->start_us = em_mono_us();
        call_link(s, c);
        em_metric_add(s->m_calls, 1);
        s->inflight_calls++;
        s->inflight_items += c->n;
    }
    if (wake_ms && s->npending > 0)
        sc_resources_wake_at_locked(s, wake_ms);
    em_metric_set(s->m_inflight, s->inflight_items);
    em_metric_set(s->m_pending, s->npending);
    if (s->held_since && s->npending <= s->max_pending / 4 * 3)
        pthread_cond_broadcast(&s->cond); /* the consumer may take records again */
}
