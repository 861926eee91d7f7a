/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Scheduler.Submit: validate every execution (an invalid one fails the whole
 * call with INVALID_ARGUMENT naming its index and field, and nothing is
 * written; so does one larger, as written to Kafka, than the largest
 * execution of the size model in lib/em_sizes.h), give empty ids a fresh
 * unique id, produce each execution to the requests topic keyed by id, and
 * answer OK only after Kafka acknowledged every one of them.
 *
 * Memory is bounded by an in-flight byte budget over all calls
 * (submit.max_inflight_bytes): a call is charged before it is decoded and
 * released when it is answered; one beyond the budget gets
 * RESOURCE_EXHAUSTED at once, before it costs more than the request gRPC
 * already read.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_authz.h"
#include "em_log.h"
#include "em_trace.h"
#include "em_util.h"
#include "scheduler.h"

/* What a call holds per byte of its request until Kafka acknowledged it: the
 * request itself (the call keeps it until answered), its decoded copy
 * (protobuf-c copies ids, handlers and payloads) and the packed executions
 * the producer sends without copying. Headers, ids and struct overhead are
 * small beside the payloads. */
#define SUBMIT_BYTES_PER_BYTE 3

typedef struct submit {
    em_delivery_t dr;
    scheduler_t *s;
    em_rpc_call_t *call;
    Execmesh__V1__SubmitRequest *req;
    size_t n;
    char **ids;    /* the id of each execution (into req or idmem) */
    char *idmem;   /* generated ids, 33 bytes each */
    uint8_t *buf;  /* the packed executions, back to back */
    atomic_int pending;
    atomic_int failed;
    _Atomic rd_kafka_resp_err_t first_err;
    int64_t charged; /* bytes of s->submit_inflight_bytes this call holds */
} submit_t;

/* Charges a call of len request bytes to the in-flight budget; on refusal
 * writes the reason to msg and charges nothing. Loop thread (any thread). */
static int budget_charge(scheduler_t *s, size_t len, int64_t *charged, char *msg, size_t n) {
    int64_t want = (int64_t)len * SUBMIT_BYTES_PER_BYTE;
    int64_t before = atomic_fetch_add(&s->submit_inflight_bytes, want);
    if (before + want > s->submit_max_inflight_bytes) {
        atomic_fetch_sub(&s->submit_inflight_bytes, want);
        snprintf(msg, n, "submit: %" PRId64 " bytes in flight, limit %" PRId64 " (submit.max_inflight_bytes)",
                 before + want, s->submit_max_inflight_bytes);
        return 0;
    }
    *charged = want;
    return 1;
}

static void budget_release(scheduler_t *s, int64_t charged) {
    if (charged)
        atomic_fetch_sub(&s->submit_inflight_bytes, charged);
}

/* Trace context starts here: an execution without a valid traceparent
 * header gets a new one (a broken one is replaced). The decoded message is
 * changed in place with malloc'd parts, which free_unpacked (the default
 * allocator) frees. 0, or -1 when out of memory. */
static int ensure_traceparent(Execmesh__V1__Execution *e) {
    Execmesh__V1__Execution__HeadersEntry *found = NULL;
    for (size_t i = 0; i < e->n_headers; i++)
        if (strcmp(e->headers[i]->key, EM_TRACEPARENT) == 0)
            found = e->headers[i]; /* the last one wins */
    if (found && em_traceparent_trace_id((const uint8_t *)found->value, strlen(found->value)))
        return 0;
    char tp[EM_TRACEPARENT_LEN + 1];
    em_traceparent_random(tp);
    char *value = strdup(tp);
    if (!value)
        return -1;
    if (found) {
        free(found->value);
        found->value = value;
        return 0;
    }
    Execmesh__V1__Execution__HeadersEntry *entry = malloc(sizeof(*entry));
    char *key = strdup(EM_TRACEPARENT);
    Execmesh__V1__Execution__HeadersEntry **grown = realloc(e->headers, (e->n_headers + 1) * sizeof(*grown));
    if (grown)
        e->headers = grown;
    if (!entry || !key || !grown) {
        free(entry);
        free(key);
        free(value);
        return -1;
    }
    execmesh__v1__execution__headers_entry__init(entry);
    entry->key = key;
    entry->value = value;
    e->headers[e->n_headers++] = entry;
    return 0;
}

static void submit_free(submit_t *sub) {
    budget_release(sub->s, sub->charged);
    execmesh__v1__submit_request__free_unpacked(sub->req, NULL);
    free(sub->ids);
    free(sub->idmem);
    free(sub->buf);
    free(sub);
}

static void submit_finish(submit_t *sub) {
    scheduler_t *s = sub->s;
    int failed = atomic_load(&sub->failed);
    /* before the answer: a caller that sends its next Submit on the answer
     * must find the budget released */
    budget_release(s, sub->charged);
    sub->charged = 0;
    if (failed) {
        char msg[512];
        snprintf(msg, sizeof(msg),
                 "kafka: %d of %zu executions not stored (%s); the others may be stored: resubmit with the same ids",
                 failed, sub->n, rd_kafka_err2str(atomic_load(&sub->first_err)));
        em_metric_add(s->m_submit_failed, 1);
        EM_WARN("submit failed", EM_F_STR("reason", msg));
        em_rpc_call_fail(sub->call, GRPC_STATUS_UNAVAILABLE, msg);
    } else {
        Execmesh__V1__SubmitResponse resp = EXECMESH__V1__SUBMIT_RESPONSE__INIT;
        resp.n_ids = sub->n;
        resp.ids = sub->ids;
        em_metric_add(s->m_in_submit, (int64_t)sub->n);
        em_rpc_call_reply(sub->call, &resp.base);
    }
    submit_free(sub);
}

static void submit_release(submit_t *sub, int count) {
    if (atomic_fetch_sub(&sub->pending, count) == count)
        submit_finish(sub);
}

/* Producer poll thread. */
static void on_submit_delivery(em_delivery_t *d, const rd_kafka_message_t *msg) {
    submit_t *sub = (submit_t *)d;
    if (msg->err) {
        rd_kafka_resp_err_t none = RD_KAFKA_RESP_ERR_NO_ERROR;
        atomic_compare_exchange_strong(&sub->first_err, &none, msg->err);
        atomic_fetch_add(&sub->failed, 1);
    }
    submit_release(sub, 1);
}

/* Loop thread. */
void sc_on_submit(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len) {
    scheduler_t *s = ctx;
    char msg[512];
    int64_t charged = 0;
    em_metric_add(s->m_submit_calls, 1);

    if (!budget_charge(s, len, &charged, msg, sizeof(msg))) {
        em_metric_add(s->m_submit_failed, 1);
        EM_DEBUG("submit refused", EM_F_STR("reason", msg));
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return;
    }
    sc_submit_limits_t lim = {s->submit_max_executions, s->submit_max_payload};
    Execmesh__V1__SubmitRequest *in = sc_submit_decode(req, len, &lim, msg, sizeof(msg));
    if (!in) {
        budget_release(s, charged);
        em_metric_add(s->m_submit_failed, 1);
        em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    if (s->authz) {
        const char *who = em_rpc_call_identity(call);
        for (size_t i = 0; i < in->n_executions; i++) {
            const char *h = in->executions[i]->handler;
            if (em_authz_may_submit(s->authz, who, h))
                continue;
            /* nothing of the request is written */
            snprintf(msg, sizeof(msg), "executions[%zu]: identity '%s' may not submit handler '%s' (scheduler authz)",
                     i, who, h);
            EM_WARN("submit refused", EM_F_STR("identity", who), EM_F_STR("handler", h));
            execmesh__v1__submit_request__free_unpacked(in, NULL);
            budget_release(s, charged);
            em_metric_add(s->m_submit_failed, 1);
            em_rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED, msg);
            return;
        }
    }

    size_t n = in->n_executions;
    submit_t *sub = calloc(1, sizeof(*sub));
    if (!sub) {
        budget_release(s, charged);
        execmesh__v1__submit_request__free_unpacked(in, NULL);
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "scheduler: out of memory");
        return;
    }
    sub->charged = charged; /* from here submit_free releases it */
    sub->dr.done = on_submit_delivery;
    sub->s = s;
    sub->call = call;
    sub->req = in;
    sub->n = n;
    sub->ids = calloc(n, sizeof(char *));
    sub->idmem = calloc(n, 33);
    int64_t now = em_now_unix_ms();
    int64_t max_exec = em_size_max_execution(s->kafka_max_message_bytes);
    size_t total = 0;
    size_t *sizes = calloc(n, sizeof(size_t));
    if (!sub->ids || !sub->idmem || !sizes) {
        free(sizes);
        submit_free(sub);
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "scheduler: out of memory");
        return;
    }
    /* What goes to Kafka is a copy of each execution with the mesh's fields
     * set; the decoded request keeps its own, a traceparent added. */
    for (size_t i = 0; i < n; i++) {
        if (ensure_traceparent(in->executions[i]) != 0) {
            free(sizes);
            submit_free(sub);
            em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "scheduler: out of memory");
            return;
        }
        Execmesh__V1__Execution e = *in->executions[i];
        if (!*e.id) {
            em_random_id(sub->idmem + 33 * i);
            e.id = sub->idmem + 33 * i;
        }
        sub->ids[i] = e.id;
        e.attempt = 0;
        e.submitted_unix_ms = now;
        sizes[i] = execmesh__v1__execution__get_packed_size(&e);
        total += sizes[i];
        if ((int64_t)sizes[i] > max_exec) {
            /* its result could not be stored: refused before anything is written */
            char why[512];
            snprintf(why, sizeof(why),
                     "executions[%zu]: %zu bytes as written to Kafka, at most %" PRId64
                     " (the largest execution: kafka.max_message_bytes %" PRId64 " - %d kept for its result)",
                     i, sizes[i], max_exec, s->kafka_max_message_bytes, EM_SIZE_RESERVE);
            free(sizes);
            submit_free(sub);
            em_metric_add(s->m_submit_failed, 1);
            em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, why);
            return;
        }
    }
    sub->buf = malloc(total ? total : 1);
    if (!sub->buf) {
        free(sizes);
        submit_free(sub);
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "scheduler: out of memory");
        return;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        Execmesh__V1__Execution e = *in->executions[i];
        e.id = sub->ids[i];
        e.attempt = 0;
        e.submitted_unix_ms = now;
        execmesh__v1__execution__pack(&e, sub->buf + off);
        off += sizes[i];
    }

    atomic_init(&sub->pending, (int)n + 1);
    off = 0;
    int not_queued = 0;
    for (size_t i = 0; i < n; i++) {
        em_err_t rc = em_producer_send(s->producer, s->t_requests, sub->ids[i], strlen(sub->ids[i]), sub->buf + off,
                                       sizes[i], NULL, 0, &sub->dr);
        off += sizes[i];
        if (rc != EM_OK) {
            rd_kafka_resp_err_t none = RD_KAFKA_RESP_ERR_NO_ERROR;
            atomic_compare_exchange_strong(&sub->first_err, &none,
                                           rc == EM_EAGAIN ? RD_KAFKA_RESP_ERR__QUEUE_FULL : RD_KAFKA_RESP_ERR__FAIL);
            not_queued++;
        }
    }
    free(sizes);
    if (not_queued) {
        atomic_fetch_add(&sub->failed, not_queued);
        submit_release(sub, not_queued);
    }
    submit_release(sub, 1);
}
