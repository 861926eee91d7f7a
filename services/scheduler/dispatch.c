/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Partition state, the pending queue, batches to executors, the watermark
 * commits and rebalances. Every function named *_locked runs with s->lock
 * held; the Kafka callbacks (sc_on_*) run on the consumer thread and take it.
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

static sc_part_t *part_get(scheduler_t *s, int32_t id) {
    return id >= 0 && id < s->nparts ? s->parts[id] : NULL;
}

static void part_free(sc_part_t *p) {
    em_watermark_destroy(p->wm);
    free(p);
}

#define SC_MAX_FREE_ITEMS 65536

static sc_item_t *item_new_locked(scheduler_t *s) {
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

/* The item leaves the scheduler: durable means its result (or dead letter)
 * is stored, so its offset may be committed. */
static void item_done_locked(scheduler_t *s, sc_item_t *it, int durable) {
    sc_part_t *p = it->part;
    if (durable && p->owned)
        em_watermark_done(p->wm, it->seq);
    p->inflight--;
    if (!p->owned || p->revoking)
        pthread_cond_broadcast(&s->cond);
    if (!p->owned && p->inflight == 0)
        part_free(p);
    item_free_locked(s, it);
}

static void pending_push_back(scheduler_t *s, sc_item_t *it) {
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

/* ---- dead letters ------------------------------------------------------- */

static void dead_send_locked(scheduler_t *s, sc_item_t *it);

static void dead_retry(void *arg) {
    sc_item_t *it = arg;
    scheduler_t *s = it->s;
    pthread_mutex_lock(&s->lock);
    if (!it->part->owned || it->part->revoking)
        item_done_locked(s, it, 0);
    else
        dead_send_locked(s, it);
    pthread_mutex_unlock(&s->lock);
}

/* Producer poll thread. */
static void on_dead_delivery(em_delivery_t *d, const rd_kafka_message_t *msg) {
    sc_item_t *it = EM_CONTAINER_OF(d, sc_item_t, dr);
    scheduler_t *s = it->s;
    if (msg->err) {
        EM_WARN("dead letter not stored, retrying", EM_F_STR("error", rd_kafka_err2name(msg->err)),
                EM_F_INT("partition", it->part->id), EM_F_INT("offset", it->offset));
        if (em_timer_after(s->svc.timers, s->retry_backoff_ms, dead_retry, it) == EM_OK)
            return;
        /* shutting down: leave the offset uncommitted, the next owner retries */
        pthread_mutex_lock(&s->lock);
        item_done_locked(s, it, 0);
        pthread_mutex_unlock(&s->lock);
        return;
    }
    em_metric_add(s->m_dead, 1);
    pthread_mutex_lock(&s->lock);
    item_done_locked(s, it, 1);
    pthread_mutex_unlock(&s->lock);
}

static void dead_send_locked(scheduler_t *s, sc_item_t *it) {
    const rd_kafka_message_t *m = it->raw;
    char source[300];
    snprintf(source, sizeof(source), "%s/%" PRId32 "/%" PRId64, s->topic_requests, it->part->id, it->offset);
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    rd_kafka_header_add(h, "execmesh-error", -1, it->dead_reason ? it->dead_reason : "unreadable", -1);
    rd_kafka_header_add(h, "execmesh-source", -1, source, -1);
    em_err_t rc = em_producer_send(s->producer, s->t_dead, m->key, m->key_len, m->payload, m->len, h, 0, &it->dr);
    if (rc != EM_OK) {
        rd_kafka_headers_destroy(h);
        if (em_timer_after(s->svc.timers, s->retry_backoff_ms, dead_retry, it) != EM_OK)
            item_done_locked(s, it, 0);
    }
}

static void dead_letter_locked(scheduler_t *s, sc_item_t *it, const char *reason) {
    rd_kafka_message_t *msg = it->raw;
    it->dr.done = on_dead_delivery;
    free(it->dead_reason);
    it->dead_reason = strdup(reason); /* NULL (out of memory) still dead-letters, as "unreadable" */
    EM_WARN("input dead-lettered", EM_F_STR("reason", reason), EM_F_INT("partition", it->part->id),
            EM_F_INT("offset", it->offset), EM_F_UINT("bytes", msg->len));
    dead_send_locked(s, it);
}

/* ---- accepting records -------------------------------------------------- */

void sc_accept_locked(scheduler_t *s, rd_kafka_message_t *msg) {
    sc_part_t *p = part_get(s, msg->partition);
    uint64_t seq;
    if (!p || !p->owned || p->revoking) {
        rd_kafka_message_destroy(msg);
        return;
    }
    if (em_watermark_track(p->wm, msg->offset, &seq) != EM_OK) {
        EM_DEBUG("record delivered twice, ignored", EM_F_INT("partition", msg->partition),
                 EM_F_INT("offset", msg->offset));
        rd_kafka_message_destroy(msg);
        return;
    }
    sc_item_t *it = item_new_locked(s);
    if (!it) {
        /* tracked but never done: the watermark stops here, so nothing past
         * it is committed and the record is read again after a restart */
        EM_ERROR("out of memory accepting a record", EM_F_INT("partition", msg->partition));
        rd_kafka_message_destroy(msg);
        return;
    }
    it->s = s;
    it->part = p;
    it->seq = seq;
    it->offset = msg->offset;
    it->attempt = 1;
    it->raw = msg;
    p->inflight++;
    em_metric_add(s->m_in_kafka, 1);

    char reason[256];
    if ((int64_t)msg->len > s->input_max_bytes) {
        snprintf(reason, sizeof(reason), "too_large: %zu bytes, limit %" PRId64, msg->len, s->input_max_bytes);
        dead_letter_locked(s, it, reason);
        return;
    }
    /* One pass over the bytes: checked and read, not decoded; they go to the
     * executor as they are, with the mesh's fields appended at dispatch. */
    em_exec_info_t info;
    char why[128];
    if (em_execution_inspect(msg->payload, msg->len, &info, why, sizeof(why)) != EM_OK) {
        snprintf(reason, sizeof(reason), "undecodable: not an execmesh.v1.Execution: %s", why);
        dead_letter_locked(s, it, reason);
        return;
    }
    it->timeout_ms = info.timeout_ms;
    it->need_id = info.id_len == 0;
    if (info.submitted_unix_ms == 0) {
        rd_kafka_timestamp_type_t tt;
        int64_t ts = rd_kafka_message_timestamp(msg, &tt);
        it->submitted_unix_ms = ts > 0 ? ts : em_now_unix_ms();
    }
    pending_push_back(s, it);
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
            item_done_locked(s, c->items[i], 1);
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
                item_done_locked(s, it, 0);
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

static void commit_stall_clear_locked(scheduler_t *s, const char *why) {
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
    if (em_mono_ms() < s->backoff_until_ms || commit_stalled_locked(s))
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
                item_done_locked(s, it, 0);
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

/* ---- flow control ------------------------------------------------------- */

/* A held intake turns into paused partitions after this long. */
#define SC_HOLD_PAUSE_MS 5000

/* While dispatch.max_pending executions wait, the consumer takes nothing
 * and librdkafka's prefetch (kafka.queued_max_kbytes) fills and stops
 * fetching: the backlog waits in Kafka, not in memory. Pausing partitions
 * would do the same, but librdkafka drops a paused partition's prefetched
 * records and fetches them again on resume, which costs most of the
 * throughput when the mark is reached many times a second. */
size_t sc_intake_room_locked(scheduler_t *s) {
    size_t room = 0;
    if (s->paused) { /* paused partitions deliver nothing: the poll serves the group's events */
        s->held_since = 0;
        room = (size_t)s->poll_batch;
    } else if (s->npending < s->max_pending) { /* re-dispatches may push pending past the mark */
        s->held_since = 0;
        int left = s->max_pending - s->npending;
        room = (size_t)(left < s->poll_batch ? left : s->poll_batch);
    } else if (!s->held_since) {
        s->held_since = em_mono_ms();
    }
    em_metric_set(s->m_paused, s->paused || s->held_since);
    return room;
}

/* Pauses the assigned partitions while an operator paused consumption, or
 * when the intake was held for SC_HOLD_PAUSE_MS (the executors are not
 * keeping up for long: stop fetching for good, and keep the consumer
 * polling so the group sees it alive); resumes at half the mark.
 * Partitions assigned while paused are paused too. */
void sc_flow_control_locked(scheduler_t *s) {
    int want_pause = s->admin_paused || (s->held_since && em_mono_ms() - s->held_since >= SC_HOLD_PAUSE_MS);
    int want_resume = !s->admin_paused && s->npending <= s->max_pending / 2;
    int stale = s->paused && s->paused_gen != s->assign_gen;
    if (!stale && (s->paused ? !want_resume : !want_pause))
        return;
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(em_consumer_handle(s->consumer), &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a)
        return;
    if (stale && !want_resume) {
        em_consumer_pause(s->consumer, a);
        s->paused_gen = s->assign_gen;
        rd_kafka_topic_partition_list_destroy(a);
        return;
    }
    if (s->paused)
        em_consumer_resume(s->consumer, a);
    else
        em_consumer_pause(s->consumer, a);
    s->paused = !s->paused;
    s->paused_gen = s->assign_gen;
    s->held_since = 0;
    EM_DEBUG(s->paused ? "consumption paused" : "consumption resumed", EM_F_INT("pending", s->npending));
    rd_kafka_topic_partition_list_destroy(a);
}

/* ---- commits ------------------------------------------------------------ */

void sc_commit_tick_locked(scheduler_t *s, rd_kafka_topic_partition_list_t **out) {
    rd_kafka_topic_partition_list_t *list = NULL;
    for (int i = 0; i < s->nparts; i++) {
        sc_part_t *p = s->parts[i];
        if (!p || !p->owned)
            continue;
        int64_t c = em_watermark_committable(p->wm);
        /* while dispatch is held, commit again even unchanged offsets: the
         * answer says whether the partitions are still ours */
        if (c < 0 || (c == p->last_commit_sent && !s->commit_stalled_since))
            continue;
        if (!list)
            list = rd_kafka_topic_partition_list_new(8);
        rd_kafka_topic_partition_list_add(list, s->topic_requests, p->id)->offset = c;
        p->last_commit_sent = c;
    }
    *out = list;
}

void sc_on_commit(void *ctx, rd_kafka_resp_err_t err, const rd_kafka_topic_partition_list_t *offsets) {
    scheduler_t *s = ctx;
    if (!offsets)
        return;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &offsets->elems[i];
        rd_kafka_resp_err_t perr = e->err ? e->err : err;
        if (!perr) {
            em_metric_add(s->m_commits, 1);
            commit_stall_clear_locked(s, "a commit was accepted");
            sc_part_t *p = part_get(s, e->partition);
            if (p && p->owned && !p->committed_once) {
                /* the moment a new owner took over the partition */
                p->committed_once = 1;
                EM_INFO("partition first commit", EM_F_INT("partition", e->partition), EM_F_INT("offset", e->offset));
            }
            continue;
        }
        em_metric_add(s->m_commit_failed, 1);
        if ((perr == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS || perr == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION) &&
            !s->commit_stalled_since) {
            s->commit_stalled_since = em_mono_ms();
            EM_INFO("commits refused during a rebalance; holding new dispatches",
                    EM_F_STR("error", rd_kafka_err2name(perr)));
        }
        sc_part_t *p = part_get(s, e->partition);
        if (p && p->last_commit_sent == e->offset)
            p->last_commit_sent = -1; /* send it again next tick */
        if (em_kafka_err_retriable(perr) || perr == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS)
            EM_DEBUG("offset commit failed, will retry", EM_F_STR("error", rd_kafka_err2name(perr)),
                     EM_F_INT("partition", e->partition), EM_F_INT("offset", e->offset));
        else
            EM_WARN("offset commit failed", EM_F_STR("error", rd_kafka_err2name(perr)),
                    EM_F_INT("partition", e->partition), EM_F_INT("offset", e->offset));
    }
    pthread_mutex_unlock(&s->lock);
}

/* ---- rebalance ---------------------------------------------------------- */

static int ensure_parts_locked(scheduler_t *s, int32_t id) {
    if (id < s->nparts)
        return 0;
    int n = s->nparts ? s->nparts : 16;
    while (n <= id)
        n *= 2;
    sc_part_t **np = realloc(s->parts, (size_t)n * sizeof(*np));
    if (!np)
        return -1;
    memset(np + s->nparts, 0, (size_t)(n - s->nparts) * sizeof(*np));
    s->parts = np;
    s->nparts = n;
    return 0;
}

static int count_owned_locked(scheduler_t *s) {
    int n = 0;
    for (int i = 0; i < s->nparts; i++)
        n += s->parts[i] != NULL;
    return n;
}

void sc_on_assign(void *ctx, const rd_kafka_topic_partition_list_t *parts) {
    scheduler_t *s = ctx;
    pthread_mutex_lock(&s->lock);
    s->assign_gen++;
    commit_stall_clear_locked(s, "partitions assigned");
    for (int i = 0; i < parts->cnt; i++) {
        int32_t id = parts->elems[i].partition;
        if (ensure_parts_locked(s, id) != 0) {
            EM_ERROR("out of memory on assign");
            continue;
        }
        if (s->parts[id])
            continue; /* already ours */
        sc_part_t *p = calloc(1, sizeof(*p));
        if (!p || !(p->wm = em_watermark_new())) {
            free(p);
            EM_ERROR("out of memory on assign");
            continue;
        }
        p->id = id;
        p->owned = 1;
        p->last_commit_sent = -1;
        s->parts[id] = p;
    }
    int owned = count_owned_locked(s);
    em_metric_set(s->m_assigned, owned);
    pthread_mutex_unlock(&s->lock);
    EM_INFO("assignment now", EM_F_INT("partitions", owned));
}

void sc_on_revoke(void *ctx, const rd_kafka_topic_partition_list_t *parts, int lost) {
    scheduler_t *s = ctx;
    rd_kafka_topic_partition_list_t *commit = NULL;
    int64_t start = em_mono_ms();
    int64_t deadline = start + s->revoke_timeout_ms;
    if (atomic_load(&s->stopping) && s->drain_deadline_ms > deadline)
        deadline = s->drain_deadline_ms;

    pthread_mutex_lock(&s->lock);
    /* 1. stop dispatching from them: drop what waits in the queue */
    for (int i = 0; i < parts->cnt; i++) {
        sc_part_t *p = part_get(s, parts->elems[i].partition);
        if (p)
            p->revoking = 1;
    }
    sc_item_t **pp = &s->pend_head;
    s->pend_tail = NULL;
    while (*pp) {
        sc_item_t *it = *pp;
        if (it->part->revoking) {
            *pp = it->next;
            s->npending--;
            item_done_locked(s, it, 0);
        } else {
            s->pend_tail = it;
            pp = &it->next;
        }
    }
    /* 2. wait (bounded) for what is in flight, unless already lost */
    int waiting = 0;
    for (;;) {
        waiting = 0;
        for (int i = 0; i < parts->cnt; i++) {
            sc_part_t *p = part_get(s, parts->elems[i].partition);
            if (p)
                waiting += p->inflight;
        }
        if (waiting == 0 || lost || em_mono_ms() >= deadline)
            break;
        s->consumer_alive_ms = em_mono_ms(); /* waiting here is not a stall */
        em_cond_wait_ms(&s->cond, &s->lock, deadline - em_mono_ms());
    }
    /* 3. the final watermark, then give them up */
    for (int i = 0; i < parts->cnt; i++) {
        int32_t id = parts->elems[i].partition;
        sc_part_t *p = part_get(s, id);
        if (!p)
            continue;
        int64_t c = em_watermark_committable(p->wm);
        if (!lost && c >= 0) {
            if (!commit)
                commit = rd_kafka_topic_partition_list_new(parts->cnt);
            rd_kafka_topic_partition_list_add(commit, s->topic_requests, id)->offset = c;
        }
        s->parts[id] = NULL;
        p->owned = 0;
        if (p->inflight == 0)
            part_free(p);
    }
    int owned = count_owned_locked(s);
    em_metric_set(s->m_assigned, owned);
    em_metric_set(s->m_pending, s->npending);
    pthread_mutex_unlock(&s->lock);

    EM_INFO("revoke finished", EM_F_INT("partitions", parts->cnt), EM_F_INT("abandoned_in_flight", waiting),
            EM_F_INT("waited_ms", em_mono_ms() - start), EM_F_BOOL("lost", lost));
    if (commit) {
        em_err_t rc = em_consumer_commit(s->consumer, commit, 0);
        if (rc != EM_OK)
            EM_WARN("final commit on revoke failed", EM_F_STR("error", em_strerror(rc)));
        else
            em_metric_add(s->m_commits, commit->cnt);
        rd_kafka_topic_partition_list_destroy(commit);
    }
}
