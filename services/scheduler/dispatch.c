/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Items (one per execution read from Kafka), the pending queue, and
 * batches to executors: packing, the Execute call, its answer (done in the
 * watermark, or back to the queue as a new attempt). Every function named
 * *_locked runs with s->lock held.
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
    scheduler_t *s;
    int n;
    sc_item_t *items[];
} sc_call_t;

#define SC_MAX_FREE_ITEMS 65536

sc_item_t *sc_item_new_locked(scheduler_t *s) {
    sc_item_t *it = s->free_items;
    if (it) {
        s->free_items = it->next;
        s->nfree_items--;
        memset(it, 0, sizeof(*it));
        return it;
    }
    return calloc(1, sizeof(*it));
}

static void item_free_locked(scheduler_t *s, sc_item_t *it) {
    if (it->raw)
        rd_kafka_message_destroy(it->raw);
    if (it->has_body)
        grpc_slice_unref(it->body);
    free(it->dead_reason);
    it->dead_reason = NULL;
    if (s->nfree_items < SC_MAX_FREE_ITEMS) {
        it->next = s->free_items;
        s->free_items = it;
        s->nfree_items++;
    } else {
        free(it);
    }
}

void sc_items_release_all(scheduler_t *s) {
    while (s->pend_head) {
        sc_item_t *it = s->pend_head;
        s->pend_head = it->next;
        item_free_locked(s, it); /* recycled or freed; the recycled are freed below */
    }
    s->pend_tail = NULL;
    s->npending = 0;
    while (s->free_items) {
        sc_item_t *it = s->free_items;
        s->free_items = it->next;
        free(it);
    }
    s->nfree_items = 0;
}

void sc_item_done_locked(scheduler_t *s, sc_item_t *it, int durable) {
    sc_part_t *p = it->part;
    if (durable && p->owned)
        em_watermark_done(p->wm, it->seq);
    p->inflight--;
    if (p->inflight == 0)
        p->progress_ms = em_mono_ms(); /* the stall watchdog's clock starts when it holds nothing */
    if (!p->owned || p->revoking)
        pthread_cond_broadcast(&s->cond);
    if (!p->owned && p->inflight == 0)
        sc_part_free(p);
    item_free_locked(s, it);
}

void sc_pending_drop_revoking_locked(scheduler_t *s) {
    sc_item_t **pp = &s->pend_head;
    s->pend_tail = NULL;
    while (*pp) {
        sc_item_t *it = *pp;
        if (it->part->revoking) {
            *pp = it->next;
            s->npending--;
            sc_item_done_locked(s, it, 0);
        } else {
            s->pend_tail = it;
            pp = &it->next;
        }
    }
}

void sc_pending_push_back_locked(scheduler_t *s, sc_item_t *it) {
    it->next = NULL;
    if (s->pend_tail)
        s->pend_tail->next = it;
    else
        s->pend_head = it;
    s->pend_tail = it;
    s->npending++;
}

/* Puts items back at the front, keeping their order. */
static void pending_push_front(scheduler_t *s, sc_item_t **items, int n) {
    for (int i = n - 1; i >= 0; i--) {
        items[i]->next = s->pend_head;
        s->pend_head = items[i];
        if (!s->pend_tail)
            s->pend_tail = items[i];
        s->npending++;
    }
}

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

/* Loop thread: the answer to one Execute batch. */
static void on_execute_reply(void *arg, grpc_status_code code, const char *details, const uint8_t *resp,
                             size_t len) {
    sc_call_t *c = arg;
    scheduler_t *s = c->s;
    int n = c->n;

    pthread_mutex_lock(&s->lock);
    s->inflight_calls--;
    s->inflight_items -= n;
    if (code == GRPC_STATUS_OK) {
        s->consecutive_failures = 0;
        for (int i = 0; i < n; i++)
            sc_item_done_locked(s, c->items[i], 1);
        em_metric_add(s->m_out, n);
    } else if (code == GRPC_STATUS_RESOURCE_EXHAUSTED) {
        /* nothing ran: same attempt, after a pause */
        em_metric_add(s->m_busy, 1);
        EM_DEBUG("executors busy, backing off", EM_F_STR("details", details), EM_F_INT("executions", n));
        pending_push_front(s, c->items, n);
        backoff_locked(s, s->retry_backoff_ms);
    } else {
        /* the executor may have run some of it: run again as a new attempt */
        s->consecutive_failures++;
        em_metric_add(s->m_failed, n);
        EM_WARN("execute batch failed, dispatching again", EM_F_STR("code", em_rpc_status_name(code)),
                EM_F_STR("details", details), EM_F_INT("executions", n),
                EM_F_INT("consecutive_failures", s->consecutive_failures));
        int k = 0;
        for (int i = 0; i < n; i++) {
            sc_item_t *it = c->items[i];
            if (!it->part->owned || it->part->revoking) {
                sc_item_done_locked(s, it, 0);
                continue;
            }
            it->attempt++;
            c->items[k++] = it;
        }
        em_metric_add(s->m_redispatched, k);
        pending_push_front(s, c->items, k);
        if (s->consecutive_failures > 1)
            backoff_locked(s, s->retry_backoff_ms);
    }
    em_metric_set(s->m_inflight, s->inflight_items);
    sc_dispatch_locked(s);
    pthread_mutex_unlock(&s->lock);
    free(c);
    (void)resp;
    (void)len;
}

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

/* The ExecuteRequest for items, written straight into one slice: each
 * execution is its bytes plus the appended mesh fields (repeated Execution
 * executions = 1 is a sequence of length-delimited field 1s). A first
 * dispatch copies the record and appends attempt, and id and submit time
 * when missing; the record is then released (holding it would pin its
 * whole fetch buffer) and the item keeps a reference to its bytes in this
 * slice. A later dispatch copies those and appends the new attempt. */
static grpc_slice pack_batch(const scheduler_t *s, sc_item_t **items, int n) {
    size_t total = 0;
    char id[300];
    for (int i = 0; i < n; i++) {
        const sc_item_t *it = items[i];
        size_t body;
        if (it->raw) {
            size_t idl = it->need_id ? generated_id(s, it, id, sizeof(id)) : 0;
            body = it->raw->len + em_execution_append_size(it->attempt, idl, it->submitted_unix_ms);
        } else {
            body = it->body_len + em_execution_append_size(it->attempt, 0, 0);
        }
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
        size_t body = srclen + em_execution_append_size(it->attempt, idl, it->raw ? it->submitted_unix_ms : 0);
        *out++ = (1 << 3) | EM_PB_LEN;
        out += em_pb_put_varint(out, body);
        uint8_t *body_start = out;
        memcpy(out, src, srclen);
        out += srclen;
        out = em_execution_append(out, it->attempt, id, idl, it->raw ? it->submitted_unix_ms : 0);
        if (it->raw) {
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

void sc_dispatch_locked(scheduler_t *s) {
    if (s->dispatch_closed || em_mono_ms() < s->backoff_until_ms || commit_stalled_locked(s))
        return;
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
        c->s = s;
        c->n = 0;
        int64_t timeout = 0;
        for (int i = 0; i < k; i++) {
            sc_item_t *it = s->pend_head;
            s->pend_head = it->next;
            if (!s->pend_head)
                s->pend_tail = NULL;
            s->npending--;
            if (!it->part->owned || it->part->revoking) {
                sc_item_done_locked(s, it, 0);
                continue;
            }
            int64_t t = it->timeout_ms ? (int64_t)it->timeout_ms : s->default_timeout_ms;
            if (t > timeout)
                timeout = t;
            c->items[c->n++] = it;
        }
        if (c->n == 0) {
            free(c);
            continue;
        }
        grpc_slice slice = pack_batch(s, c->items, c->n);
        if (em_rpc_channel_call(s->executors, s->m_execute, slice, timeout + s->deadline_grace_ms, on_execute_reply,
                                c) != EM_OK) {
            EM_WARN("cannot start an Execute call", EM_F_INT("executions", c->n));
            pending_push_front(s, c->items, c->n);
            free(c);
            backoff_locked(s, s->retry_backoff_ms);
            break;
        }
        s->inflight_calls++;
        s->inflight_items += c->n;
    }
    em_metric_set(s->m_inflight, s->inflight_items);
    em_metric_set(s->m_pending, s->npending);
    if (s->held_since && s->npending <= s->max_pending / 4 * 3)
        pthread_cond_broadcast(&s->cond); /* the consumer may take records again */
}

