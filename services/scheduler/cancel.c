/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Scheduler.Cancel: each id becomes a durable record on the cancels topic
 * (lib/em_cancels: keyed by the id), and the call is answered with the ids
 * once Kafka acknowledged every one. Every scheduler reads every cancel;
 * the one that holds the execution ends it CANCELLED: at intake (it waited
 * in Kafka, or in the delay topic for a retry), or before dispatch (it
 * waited in the pending queue). A cancel read before its execution arrives
 * is remembered, so it still wins.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_cancels.h"
#include "em_log.h"
#include "em_util.h"
#include "scheduler.h"

#define CANCEL_MAX_IDS 10000
#define CANCEL_MAX_ID 256

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
    Execmesh__V1__CancelRequest *in = execmesh__v1__cancel_request__unpack(NULL, len, req);
    if (!in) {
        em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "CancelRequest: cannot decode");
        return;
    }
    const char *bad = NULL;
    if (in->n_ids == 0)
        bad = "ids: empty; a Cancel names at least one execution";
    else if (in->n_ids > CANCEL_MAX_IDS) {
        snprintf(msg, sizeof(msg), "ids: %zu ids, at most %d per Cancel", in->n_ids, CANCEL_MAX_IDS);
        bad = msg;
    }
    for (size_t i = 0; !bad && i < in->n_ids; i++) {
        size_t n = strlen(in->ids[i]);
        if (n == 0 || n > CANCEL_MAX_ID) {
            snprintf(msg, sizeof(msg), "ids[%zu]: %zu bytes, 1 to %d", i, n, CANCEL_MAX_ID);
            bad = msg;
        }
    }
    if (bad) {
        execmesh__v1__cancel_request__free_unpacked(in, NULL);
        em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, bad);
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
}
