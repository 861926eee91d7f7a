/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Scheduler.Cancel: each id becomes a durable record on the cancels topic
 * (lib/em_cancels: keyed by the id), and the call is answered with the ids
 * once Kafka acknowledged every one. Every scheduler reads every cancel;
 * the one that holds the execution ends it CANCELLED: at intake (it waited
 * in Kafka, or in the delay topic for a retry), or before dispatch (it
 * waited in the pending queue). A cancel read before its execution arrives
 * is remembered, so it still wins.
 *
 * An execution already dispatched is stopped by the executor that accepted
 * it: the scheduler asks that one (Executor.Cancel to the call's peer
 * address, over a channel of its own, from the timer thread), when the
 * cancel is read or, for a call not accepted yet, when its headers come.
 * The executor ends it CANCELLED (out of its queue, or stopped: an exec
 * child's process group killed) and answers that result on the Execute call
 * as any other. If the executor cannot be reached, the call fails too, and
 * the execution, dispatched again, is found cancelled and ends so here.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_authz.h"
#include "em_cancels.h"
#include "em_log.h"
#include "em_pbwire.h"
#include "em_util.h"
#include "scheduler.h"

#define CANCEL_MAX_ID SC_CANCEL_MAX_ID

typedef struct cancel_call {
    em_delivery_t dr;
    scheduler_t *s;
    em_rpc_call_t *call;
    Execmesh__V1__CancelRequest *req;
    atomic_int pending;
    atomic_int failed;
    _Atomic rd_kafka_resp_err_t first_err;
} cancel_call_t;

static void cancel_finish(cancel_call_t *cc) {
    scheduler_t *s = cc->s;
    int failed = atomic_load(&cc->failed);
    if (failed) {
        char msg[256];
        snprintf(msg, sizeof(msg), "kafka: %d of %zu cancels not stored (%s); cancel them again", failed,
                 cc->req->n_ids, rd_kafka_err2str(atomic_load(&cc->first_err)));
        em_rpc_call_fail(cc->call, GRPC_STATUS_UNAVAILABLE, msg);
    } else {
        em_metric_add(s->m_cancel_requests, (int64_t)cc->req->n_ids);
        Execmesh__V1__CancelResponse resp = EXECMESH__V1__CANCEL_RESPONSE__INIT;
        resp.n_ids = cc->req->n_ids;
        resp.ids = cc->req->ids;
        em_rpc_call_reply(cc->call, &resp.base);
    }
    execmesh__v1__cancel_request__free_unpacked(cc->req, NULL);
    free(cc);
}

static void cancel_release(cancel_call_t *cc, int n) {
    if (atomic_fetch_sub(&cc->pending, n) == n)
        cancel_finish(cc);
}

/* Producer poll thread. */
static void on_cancel_stored(em_delivery_t *d, const rd_kafka_message_t *m) {
    cancel_call_t *cc = (cancel_call_t *)d;
    if (m->err) {
        rd_kafka_resp_err_t none = RD_KAFKA_RESP_ERR_NO_ERROR;
        atomic_compare_exchange_strong(&cc->first_err, &none, m->err);
        atomic_fetch_add(&cc->failed, 1);
    }
    cancel_release(cc, 1);
}

/* Loop thread. */
void sc_on_cancel(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len) {
    scheduler_t *s = ctx;
    char msg[256];
    em_metric_add(s->m_cancel_calls, 1);
    if (s->authz && !em_authz_may_cancel(s->authz, em_rpc_call_identity(call))) {
        snprintf(msg, sizeof(msg), "identity '%s' may not cancel (scheduler authz)", em_rpc_call_identity(call));
        EM_WARN("cancel refused", EM_F_STR("identity", em_rpc_call_identity(call)));
        em_rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED, msg);
        return;
    }
    Execmesh__V1__CancelRequest *in = sc_cancel_decode(req, len, msg, sizeof(msg));
    if (!in) {
        em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    cancel_call_t *cc = calloc(1, sizeof(*cc));
    if (!cc) {
        execmesh__v1__cancel_request__free_unpacked(in, NULL);
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "scheduler: out of memory");
        return;
    }
    cc->dr.done = on_cancel_stored;
    cc->s = s;
    cc->call = call;
    cc->req = in;
    atomic_init(&cc->pending, (int)in->n_ids + 1);
    int not_queued = 0;
    for (size_t i = 0; i < in->n_ids; i++)
        if (em_cancels_send(s->producer, s->t_cancels, in->ids[i], strlen(in->ids[i]), &cc->dr) != EM_OK) {
            rd_kafka_resp_err_t none = RD_KAFKA_RESP_ERR_NO_ERROR;
            atomic_compare_exchange_strong(&cc->first_err, &none, RD_KAFKA_RESP_ERR__QUEUE_FULL);
            not_queued++;
        }
    if (not_queued) {
        atomic_fetch_add(&cc->failed, not_queued);
        cancel_release(cc, not_queued);
    }
    cancel_release(cc, 1);
}

void sc_cancel_seen(void *ctx, const uint8_t *id, size_t len) {
    scheduler_t *s = ctx;
    char idz[CANCEL_MAX_ID + 1];
    snprintf(idz, sizeof(idz), "%.*s", (int)(len > CANCEL_MAX_ID ? CANCEL_MAX_ID : len), (const char *)id);
    em_metric_add(s->m_cancels_seen, 1);
    EM_DEBUG("cancel read", EM_F_STR("id", idz));
    pthread_mutex_lock(&s->lock);
    sc_dispatch_cancel_seen_locked(s, id, len);
    pthread_mutex_unlock(&s->lock);
}

/* ---- cancels sent to the executor that holds the execution --------------- */

typedef struct sc_cancel_out {
    struct sc_cancel_out *next;
    char peer[96];
    size_t len;
    uint8_t id[];
} sc_cancel_out_t;

/* What an answer needs to be logged. */
typedef struct sent {
    char peer[96];
    char id[CANCEL_MAX_ID + 1];
} sent_t;

static void cancel_flush(void *arg);

void sc_cancel_on_executor_locked(scheduler_t *s, const char *peer, const uint8_t *id, size_t len) {
    if (s->dispatch_closed || !peer || !peer[0])
        return;
    sc_cancel_out_t *o = malloc(sizeof(*o) + len);
    if (!o) {
        EM_ERROR("out of memory queueing a cancel for an executor; the execution runs to its end");
        return;
    }
    o->next = NULL;
    snprintf(o->peer, sizeof(o->peer), "%s", peer);
    o->len = len;
    memcpy(o->id, id, len);
    if (s->cancel_out_tail)
        s->cancel_out_tail->next = o;
    else
        s->cancel_out_head = o;
    s->cancel_out_tail = o;
    if (!s->cancel_out_armed && em_timer_after(s->svc.timers, 0, cancel_flush, s) == EM_OK)
        s->cancel_out_armed = 1;
}

/* A channel to one executor (the timer thread): no health check (a
 * draining executor still runs what it holds), one of SC_PEERS, the least
 * recently used replaced. */
static struct sc_peer *peer_channel(scheduler_t *s, const char *addr) {
    struct sc_peer *lru = &s->peers[0];
    for (size_t i = 0; i < EM_ARRAY_LEN(s->peers); i++) {
        struct sc_peer *p = &s->peers[i];
        if (p->ch && strcmp(p->addr, addr) == 0) {
            p->used_ms = em_mono_ms();
            return p;
        }
        if (!p->ch || (lru->ch && p->used_ms < lru->used_ms))
            lru = p;
    }
    if (lru->ch)
        em_rpc_channel_destroy(lru->ch); /* its calls in flight end CANCELLED: logged */
    lru->ch = NULL;
    em_rpc_channel_opts_t co;
    em_service_channel_opts(&s->svc, &co);
    co.no_health_check = 1;
    char err[256];
    lru->ch = em_rpc_channel_new(s->svc.loop, addr, "execmesh.v1.Executor", &co, err, sizeof(err));
    if (!lru->ch) {
        EM_ERROR("cannot make a channel to an executor to cancel on it", EM_F_STR("executor", addr),
                 EM_F_STR("error", err));
        return NULL;
    }
    lru->m_cancel = em_rpc_channel_method(lru->ch, "/execmesh.v1.Executor/Cancel");
    snprintf(lru->addr, sizeof(lru->addr), "%s", addr);
    lru->used_ms = em_mono_ms();
    return lru;
}

/* Loop thread. */
static void on_executor_cancel(void *arg, grpc_status_code code, const char *details, const uint8_t *resp,
                               size_t len) {
    sent_t *t = arg;
    if (code != GRPC_STATUS_OK) {
        /* unreachable: it died or is cut off, and the Execute call fails;
         * the execution is re-dispatched, found cancelled and ended so */
        EM_WARN("cannot ask the executor to stop a cancelled execution; it ends when its call does",
                EM_F_STR("executor", t->peer), EM_F_STR("id", t->id), EM_F_STR("code", em_rpc_status_name(code)),
                EM_F_STR("details", details));
    } else {
        EM_INFO(len ? "executor stops a cancelled execution" : "executor holds no unfinished run of a cancelled execution",
                EM_F_STR("executor", t->peer), EM_F_STR("id", t->id));
    }
    free(t);
}

static void cancel_flush(void *arg) {
    scheduler_t *s = arg;
    pthread_mutex_lock(&s->lock);
    sc_cancel_out_t *o = s->cancel_out_head;
    s->cancel_out_head = s->cancel_out_tail = NULL;
    s->cancel_out_armed = 0;
    int closed = s->dispatch_closed;
    pthread_mutex_unlock(&s->lock);
    while (o) {
        sc_cancel_out_t *next = o->next;
        struct sc_peer *p = closed ? NULL : peer_channel(s, o->peer);
        sent_t *t = p ? malloc(sizeof(*t)) : NULL;
        if (t) {
            snprintf(t->peer, sizeof(t->peer), "%s", o->peer);
            snprintf(t->id, sizeof(t->id), "%.*s", (int)(o->len > CANCEL_MAX_ID ? CANCEL_MAX_ID : o->len),
                     (const char *)o->id);
            grpc_slice req = grpc_slice_malloc(em_pb_len_field_size(1, o->len));
            em_pb_write_len_field(GRPC_SLICE_START_PTR(req), 1, o->id, o->len);
            if (em_rpc_channel_call(p->ch, p->m_cancel, req, 10000, on_executor_cancel, t) == EM_OK)
                em_metric_add(s->m_cancels_sent, 1);
            else
                free(t);
        }
        free(o);
        o = next;
    }
}

void sc_cancel_peers_close(scheduler_t *s) {
    for (size_t i = 0; i < EM_ARRAY_LEN(s->peers); i++)
        if (s->peers[i].ch) {
            em_rpc_channel_destroy(s->peers[i].ch);
            s->peers[i].ch = NULL;
        }
    while (s->cancel_out_head) {
        sc_cancel_out_t *next = s->cancel_out_head->next;
        free(s->cancel_out_head);
        s->cancel_out_head = next;
    }
    s->cancel_out_tail = NULL;
}
