/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Client channel: the service config (round_robin + healthCheckConfig +
 * retryPolicy) and keepalive/backoff args from grpc-core-notes.md, unary
 * calls as one batch whose completion is the only place the call is
 * released, and server-streaming calls as a chain of batches, one at a time
 * (see em_rpc_scall_t).
 */
#include "em_rpc_channel.h"

#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_log.h"
#include "em_rpc_int.h"
#include <grpc/grpc_security.h>
#include <stdint.h>
#include "em_util.h"

#define EM_MAX_METHOD_REFS 8

struct em_rpc_method_ref {
    void *handle;
};

/* An open call of either kind in the channel's list, so destroy can cancel it. */
typedef struct em_rpc_clink {
    struct em_rpc_clink *prev, *next;
    grpc_call *call;
} em_rpc_clink_t;

struct em_rpc_channel {
    grpc_channel *channel;
    grpc_completion_queue *cq;
    em_rpc_method_ref_t refs[EM_MAX_METHOD_REFS];
    int nrefs;
    int fail_fast;
    atomic_int active;
    atomic_int closing;  /* set under lock: a call is linked before it, or refused */
    em_rpc_clink_t *calls; /* open calls */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* The connectivity watch (see on_connectivity). */
    em_rpc_tag_t watch_tag;
    grpc_connectivity_state last_state;
    atomic_int watching;
};

/* How long one connectivity watch waits before it is re-armed; bounds how
 * long em_rpc_channel_destroy waits for the last one. */
#define EM_WATCH_SLICE_MS 250

static void watch_arm(em_rpc_channel_t *ch) {
    grpc_channel_watch_connectivity_state(ch->channel, ch->last_state, em_rpc_deadline_ms(EM_WATCH_SLICE_MS), ch->cq,
                                          &ch->watch_tag);
}

/* When the channel stops being READY, no replica is usable: the others may
 * be waiting out a reconnect backoff (up to grpc.reconnect_max_ms) although
 * they came back long ago, e.g. a sink that restarted while its peer lived.
 * Resetting the backoff makes every replica be tried now, so the calls that
 * wait for a ready replica move within a connect, not within a backoff. */
static void on_connectivity(em_rpc_tag_t *tag, int ok) {
    em_rpc_channel_t *ch = EM_CONTAINER_OF(tag, em_rpc_channel_t, watch_tag);
    if (atomic_load(&ch->closing)) {
        pthread_mutex_lock(&ch->lock);
        atomic_store(&ch->watching, 0);
        pthread_cond_broadcast(&ch->cond);
        pthread_mutex_unlock(&ch->lock);
        return;
    }
    if (ok) {
        grpc_connectivity_state now = grpc_channel_check_connectivity_state(ch->channel, 0);
        if (ch->last_state == GRPC_CHANNEL_READY && now != GRPC_CHANNEL_READY && now != GRPC_CHANNEL_SHUTDOWN) {
            grpc_channel_reset_connect_backoff(ch->channel);
            EM_DEBUG("rpc: no replica ready; reconnecting to every replica now", EM_F_INT("state", now));
        }
        ch->last_state = now;
    }
    watch_arm(ch);
}

typedef struct em_rpc_ccall {
    em_rpc_tag_t tag;
    em_rpc_clink_t link;
    em_rpc_channel_t *ch;
    grpc_call *call;
    em_rpc_reply_fn fn;
    void *arg;
    grpc_byte_buffer *send;
    grpc_byte_buffer *recv;
    grpc_metadata_array md_initial;
    grpc_metadata_array md_trailing;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    grpc_op ops[6];
} em_rpc_ccall_t;

em_rpc_channel_t *em_rpc_channel_new(em_rpc_loop_t *loop, const char *target, const char *service,
                                     const em_rpc_channel_opts_t *o, char *errstr, size_t errstr_size) {
    char sc[1024];
    em_rpc_channel_t *ch = calloc(1, sizeof(*ch));
    if (!ch) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    ch->cq = em_rpc_loop_cq(loop);
    pthread_mutex_init(&ch->lock, NULL);
    em_cond_init(&ch->cond);

    char health[300] = "", retry[300] = "";
    if (!o->no_health_check)
        snprintf(health, sizeof(health), "\"healthCheckConfig\":{\"serviceName\":\"%s\"},", service);
    if (o->retry_max_attempts > 1)
        snprintf(retry, sizeof(retry),
                 ",\"retryPolicy\":{\"maxAttempts\":%d,\"initialBackoff\":\"0.01s\",\"maxBackoff\":\"0.1s\","
                 "\"backoffMultiplier\":2,\"retryableStatusCodes\":[\"UNAVAILABLE\"]}",
                 o->retry_max_attempts);
    snprintf(sc, sizeof(sc),
             "{\"loadBalancingConfig\":[{\"round_robin\":{}}],%s"
             "\"methodConfig\":[{\"name\":[{\"service\":\"%s\"}],\"waitForReady\":%s%s}]}",
             health, service, o->fail_fast ? "false" : "true", retry);
    ch->fail_fast = o->fail_fast;

    grpc_arg args[] = {
        em_str_arg(GRPC_ARG_SERVICE_CONFIG, sc),
        em_int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, o->keepalive_time_ms),
        em_int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, o->keepalive_timeout_ms),
        em_int_arg(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1),
        em_int_arg(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0),
        em_int_arg(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, o->reconnect_min_ms),
        em_int_arg(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, o->reconnect_min_ms),
        em_int_arg(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, o->reconnect_max_ms),
        em_int_arg(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, o->dns_min_resolution_ms),
        em_int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, o->max_message_bytes),
        em_int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, o->max_message_bytes),
        em_int_arg(GRPC_ARG_PER_RPC_RETRY_BUFFER_SIZE, o->max_message_bytes),
        em_int_arg(GRPC_ARG_ENABLE_RETRIES, o->retry_max_attempts > 1),
        /* last: passed only with TLS and a server name configured */
        em_str_arg(GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, o->tls.server_name ? o->tls.server_name : ""),
    };
    int override_name = em_tls_on(&o->tls) && o->tls.server_name && *o->tls.server_name;
    grpc_channel_args ca = {EM_ARRAY_LEN(args) - (override_name ? 0 : 1), args};
    grpc_channel_credentials *creds = NULL;
    if (em_tls_check_target(&o->tls, target, errstr, errstr_size) != 0 ||
        !(creds = em_tls_channel_credentials(&o->tls, errstr, errstr_size)))
        goto fail;
    ch->channel = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    if (!ch->channel) {
        snprintf(errstr, errstr_size, "grpc: cannot create a channel to '%s'", target);
        goto fail;
    }
    /* A target gRPC cannot resolve gives a "lame" channel that fails every
     * call; say so at start rather than at the first call. */
    if (grpc_channel_check_connectivity_state(ch->channel, 1) == GRPC_CHANNEL_SHUTDOWN) {
        snprintf(errstr, errstr_size, "grpc: target '%s' is not usable", target);
        grpc_channel_destroy(ch->channel);
        free(ch);
        return NULL;
    }
    ch->watch_tag.done = on_connectivity;
    ch->last_state = GRPC_CHANNEL_IDLE;
    atomic_store(&ch->watching, 1);
    watch_arm(ch);
    return ch;

fail:
    pthread_mutex_destroy(&ch->lock);
    pthread_cond_destroy(&ch->cond);
    free(ch);
    return NULL;
}

em_rpc_method_ref_t *em_rpc_channel_method(em_rpc_channel_t *ch, const char *method) {
    if (ch->nrefs == EM_MAX_METHOD_REFS)
        return NULL;
    em_rpc_method_ref_t *r = &ch->refs[ch->nrefs];
    r->handle = grpc_channel_register_call(ch->channel, method, NULL, NULL);
    if (!r->handle)
        return NULL;
    ch->nrefs++;
    return r;
}

/* Adds an open call to the list; EM_ESHUTDOWN (and not linked) once
 * em_rpc_channel_destroy began, so no call escapes its cancel. */
static em_err_t call_link(em_rpc_channel_t *ch, em_rpc_clink_t *l, grpc_call *call) {
    em_err_t rc = EM_OK;
    l->call = call;
    l->prev = NULL;
    pthread_mutex_lock(&ch->lock);
    if (atomic_load(&ch->closing)) {
        rc = EM_ESHUTDOWN;
    } else {
        l->next = ch->calls;
        if (ch->calls)
            ch->calls->prev = l;
        ch->calls = l;
        atomic_fetch_add(&ch->active, 1);
    }
    pthread_mutex_unlock(&ch->lock);
    return rc;
}

static void call_unlink(em_rpc_channel_t *ch, em_rpc_clink_t *l) {
    pthread_mutex_lock(&ch->lock);
    if (l->prev)
        l->prev->next = l->next;
    else
        ch->calls = l->next;
    if (l->next)
        l->next->prev = l->prev;
    pthread_mutex_unlock(&ch->lock);
}

/* After the last callback of a linked call: destroy may go on once none is left. */
static void call_release(em_rpc_channel_t *ch) {
    pthread_mutex_lock(&ch->lock);
    if (atomic_fetch_sub(&ch->active, 1) == 1)
        pthread_cond_broadcast(&ch->cond);
    pthread_mutex_unlock(&ch->lock);
}

/* What a client call (unary or streaming) holds from the core. */
static void call_parts_free(grpc_call *call, grpc_byte_buffer *send, grpc_byte_buffer *recv,
                            grpc_metadata_array *md_initial, grpc_metadata_array *md_trailing, grpc_slice details,
                            const char *error_string) {
    if (send)
        grpc_byte_buffer_destroy(send);
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_metadata_array_destroy(md_initial);
    grpc_metadata_array_destroy(md_trailing);
    grpc_slice_unref(details);
    if (error_string)
        gpr_free((void *)(uintptr_t)error_string);
    if (call)
        grpc_call_unref(call);
}

static void ccall_free(em_rpc_ccall_t *c) {
    call_parts_free(c->call, c->send, c->recv, &c->md_initial, &c->md_trailing, c->details, c->error_string);
    free(c);
}

static void ccall_done(em_rpc_tag_t *tag, int ok) {
    em_rpc_ccall_t *c = EM_CONTAINER_OF(tag, em_rpc_ccall_t, tag);
    em_rpc_channel_t *ch = c->ch;
    grpc_slice resp = grpc_empty_slice();
    grpc_status_code code = c->status;
    char details[512];

    if (!ok) {
        code = GRPC_STATUS_INTERNAL;
        snprintf(details, sizeof(details), "grpc: call batch failed");
    } else {
        char *d = grpc_slice_to_c_string(c->details);
        snprintf(details, sizeof(details), "%s", d);
        gpr_free(d);
    }
    call_unlink(ch, &c->link);
    if (c->recv)
        resp = em_rpc_take_bb(c->recv);
    c->recv = NULL;
    if (code == GRPC_STATUS_OK)
        c->fn(c->arg, code, details, GRPC_SLICE_START_PTR(resp), GRPC_SLICE_LENGTH(resp));
    else
        c->fn(c->arg, code, details, NULL, 0);
    grpc_slice_unref(resp);
    ccall_free(c);
    call_release(ch);
}

em_err_t em_rpc_channel_call(em_rpc_channel_t *ch, em_rpc_method_ref_t *method, grpc_slice req,
                             int64_t timeout_ms, em_rpc_reply_fn fn, void *arg) {
    if (atomic_load(&ch->closing)) {
        grpc_slice_unref(req);
        return EM_ESHUTDOWN;
    }
    em_rpc_ccall_t *c = calloc(1, sizeof(*c));
    if (!c) {
        grpc_slice_unref(req);
        return EM_ENOMEM;
    }
    c->tag.done = ccall_done;
    c->ch = ch;
    c->fn = fn;
    c->arg = arg;
    c->details = grpc_empty_slice();
    c->send = grpc_raw_byte_buffer_create(&req, 1);
    grpc_slice_unref(req);
    grpc_metadata_array_init(&c->md_initial);
    grpc_metadata_array_init(&c->md_trailing);
    c->call = grpc_channel_create_registered_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, ch->cq,
                                                  method->handle, em_rpc_deadline_ms(timeout_ms), NULL);
    if (!c->call) {
        ccall_free(c);
        return EM_EGRPC;
    }
    grpc_op *op = c->ops;
    memset(c->ops, 0, sizeof(c->ops));
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET |
                (ch->fail_fast ? 0 : GRPC_INITIAL_METADATA_WAIT_FOR_READY);
    op++;
    op->op = GRPC_OP_SEND_MESSAGE;
    op->data.send_message.send_message = c->send;
    op++;
    op->op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    op++;
    op->op = GRPC_OP_RECV_INITIAL_METADATA;
    op->data.recv_initial_metadata.recv_initial_metadata = &c->md_initial;
    op++;
    op->op = GRPC_OP_RECV_MESSAGE;
    op->data.recv_message.recv_message = &c->recv;
    op++;
    op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op->data.recv_status_on_client.trailing_metadata = &c->md_trailing;
    op->data.recv_status_on_client.status = &c->status;
    op->data.recv_status_on_client.status_details = &c->details;
    op->data.recv_status_on_client.error_string = &c->error_string;
    op++;
    em_err_t rc = call_link(ch, &c->link, c->call);
    if (rc != EM_OK) {
        ccall_free(c);
        return rc;
    }
    grpc_call_error e = grpc_call_start_batch(c->call, c->ops, (size_t)(op - c->ops), &c->tag, NULL);
    if (e != GRPC_CALL_OK) {
        call_unlink(ch, &c->link);
        call_release(ch);
        ccall_free(c);
        EM_ERROR("rpc: cannot start a client call", EM_F_INT("grpc_call_error", e));
        return EM_EGRPC;
    }
    return EM_OK;
}

/* ---- server-streaming calls ----------------------------------------------
 * One batch in flight at a time, all on the same tag, each started from the
 * completion of the one before (on the loop thread):
 *
 *   SC_START    SEND_INITIAL_METADATA + SEND_MESSAGE + SEND_CLOSE_FROM_CLIENT
 *               + RECV_INITIAL_METADATA: completes when the server's response
 *               headers arrive (at once if it called em_rpc_call_send_headers)
 *   SC_MESSAGE  RECV_MESSAGE, again after each message; a NULL message (or
 *               a failed batch) means the stream ended
 *   SC_STATUS   RECV_STATUS_ON_CLIENT, then on_done and the call is freed
 *
 * so a call costs N + 3 completions for N messages, and every message is
 * delivered before on_done by construction. (RECV_STATUS started beside the
 * messages would save no completion: the NULL message is still needed to
 * know the last one was delivered.)
 *
 * gRPC cannot tell a failed call's trailers-only answer (no headers at all)
 * from headers that carry no metadata: both complete SC_START with an empty
 * array. So on_headers runs at once only when the array is not empty (the
 * header asked for, or any other); otherwise it is held back until the first
 * message or an OK status proves headers came, and never runs for a call
 * that fails without a message. */
typedef enum { SC_START, SC_MESSAGE, SC_STATUS } sc_phase_t;

typedef struct em_rpc_scall {
    em_rpc_tag_t tag;
    em_rpc_clink_t link;
    em_rpc_channel_t *ch;
    grpc_call *call;
    sc_phase_t phase;
    em_rpc_stream_cb_t cb; /* header_key points at key_copy */
    char *key_copy;
    void *arg;
    int headers_pending; /* on_headers(NULL) is still owed */
    grpc_byte_buffer *send;
    grpc_byte_buffer *recv;
    grpc_metadata_array md_initial;
    grpc_metadata_array md_trailing;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    grpc_op ops[4];
} em_rpc_scall_t;

/* on_headers with the header's value and the server's address. */
static void headers_to_cb(em_rpc_scall_t *s, const char *value) {
    if (!s->cb.on_headers)
        return;
    char *peer = grpc_call_get_peer(s->call);
    s->cb.on_headers(s->arg, value, peer);
    gpr_free(peer);
}

static void scall_free(em_rpc_scall_t *s) {
    call_parts_free(s->call, s->send, s->recv, &s->md_initial, &s->md_trailing, s->details, s->error_string);
    free(s->key_copy);
    free(s);
}

/* Ends the call: on_done with the status, then free. The loop thread. */
static void scall_finish(em_rpc_scall_t *s, grpc_status_code code, const char *details) {
    em_rpc_channel_t *ch = s->ch;
    call_unlink(ch, &s->link);
    if (s->headers_pending && code == GRPC_STATUS_OK)
        headers_to_cb(s, NULL);
    s->cb.on_done(s->arg, code, details);
    scall_free(s);
    call_release(ch);
}

/* Starts the batch of phase ph. EM_OK, or the call is beyond saving (the
 * caller ends it). */
static em_err_t scall_start(em_rpc_scall_t *s, sc_phase_t ph) {
    grpc_op *op = s->ops;
    memset(s->ops, 0, sizeof(s->ops));
    s->phase = ph;
    switch (ph) {
    case SC_START:
        op->op = GRPC_OP_SEND_INITIAL_METADATA;
        op->flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET |
                    (s->ch->fail_fast ? 0 : GRPC_INITIAL_METADATA_WAIT_FOR_READY);
        op++;
        op->op = GRPC_OP_SEND_MESSAGE;
        op->data.send_message.send_message = s->send;
        op++;
        op->op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        op++;
        op->op = GRPC_OP_RECV_INITIAL_METADATA;
        op->data.recv_initial_metadata.recv_initial_metadata = &s->md_initial;
        op++;
        break;
    case SC_MESSAGE:
        op->op = GRPC_OP_RECV_MESSAGE;
        op->data.recv_message.recv_message = &s->recv;
        op++;
        break;
    case SC_STATUS:
        op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        op->data.recv_status_on_client.trailing_metadata = &s->md_trailing;
        op->data.recv_status_on_client.status = &s->status;
        op->data.recv_status_on_client.status_details = &s->details;
        op->data.recv_status_on_client.error_string = &s->error_string;
        op++;
        break;
    }
    grpc_call_error e = grpc_call_start_batch(s->call, s->ops, (size_t)(op - s->ops), &s->tag, NULL);
    if (e != GRPC_CALL_OK) {
        EM_ERROR("rpc: cannot start a streaming call batch", EM_F_INT("grpc_call_error", e),
                 EM_F_INT("phase", (int)ph));
        return EM_EGRPC;
    }
    return EM_OK;
}

/* Moves on to phase ph from a completion; a batch that cannot start cancels
 * the call and collects its status, or ends it here if even that fails. */
static void scall_next(em_rpc_scall_t *s, sc_phase_t ph) {
    if (scall_start(s, ph) == EM_OK)
        return;
    grpc_call_cancel(s->call, NULL);
    if (ph != SC_STATUS && scall_start(s, SC_STATUS) == EM_OK)
        return;
    scall_finish(s, GRPC_STATUS_INTERNAL, "grpc: cannot start a call batch");
}

static void scall_headers(em_rpc_scall_t *s) {
    const grpc_metadata_array *md = &s->md_initial;
    if (md->count == 0) {
        s->headers_pending = 1; /* maybe trailers-only: wait for proof */
        return;
    }
    char *value = NULL;
    if (s->cb.header_key)
        for (size_t i = 0; i < md->count; i++)
            if (grpc_slice_str_cmp(md->metadata[i].key, s->cb.header_key) == 0) {
                value = grpc_slice_to_c_string(md->metadata[i].value);
                break;
            }
    headers_to_cb(s, value);
    gpr_free(value);
}

static void scall_done(em_rpc_tag_t *tag, int ok) {
    em_rpc_scall_t *s = EM_CONTAINER_OF(tag, em_rpc_scall_t, tag);
    switch (s->phase) {
    case SC_START:
        /* ok is 0 when the call failed (the status will say why), maybe
         * after headers or messages came: read on either way, a failed
         * call's RECV_MESSAGE just completes with no message */
        (void)ok;
        grpc_byte_buffer_destroy(s->send);
        s->send = NULL;
        scall_headers(s);
        scall_next(s, SC_MESSAGE);
        return;
    case SC_MESSAGE: {
        if (!ok || !s->recv) { /* the stream ended */
            if (s->recv)
                grpc_byte_buffer_destroy(s->recv);
            s->recv = NULL;
            scall_next(s, SC_STATUS);
            return;
        }
        grpc_slice msg = em_rpc_take_bb(s->recv);
        s->recv = NULL;
        if (s->headers_pending) { /* a message proves headers came */
            s->headers_pending = 0;
            headers_to_cb(s, NULL);
        }
        if (s->cb.on_message)
            s->cb.on_message(s->arg, GRPC_SLICE_START_PTR(msg), GRPC_SLICE_LENGTH(msg));
        grpc_slice_unref(msg);
        scall_next(s, SC_MESSAGE);
        return;
    }
    case SC_STATUS: {
        char details[512];
        grpc_status_code code = s->status;
        if (!ok) {
            code = GRPC_STATUS_INTERNAL;
            snprintf(details, sizeof(details), "grpc: call batch failed");
        } else {
            char *d = grpc_slice_to_c_string(s->details);
            snprintf(details, sizeof(details), "%s", d);
            gpr_free(d);
        }
        scall_finish(s, code, details);
        return;
    }
    }
}

em_err_t em_rpc_channel_call_stream(em_rpc_channel_t *ch, em_rpc_method_ref_t *method, grpc_slice req,
                                    int64_t timeout_ms, const em_rpc_stream_cb_t *cb, void *arg) {
    em_err_t rc = EM_OK;
    em_rpc_scall_t *s = NULL;
    if (!cb || !cb->on_done) {
        grpc_slice_unref(req);
        return EM_EINVAL;
    }
    if (atomic_load(&ch->closing)) {
        grpc_slice_unref(req);
        return EM_ESHUTDOWN;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        grpc_slice_unref(req);
        return EM_ENOMEM;
    }
    s->tag.done = scall_done;
    s->ch = ch;
    s->cb = *cb;
    s->arg = arg;
    s->details = grpc_empty_slice();
    s->send = grpc_raw_byte_buffer_create(&req, 1);
    grpc_slice_unref(req);
    grpc_metadata_array_init(&s->md_initial);
    grpc_metadata_array_init(&s->md_trailing);
    if (cb->header_key) {
        s->key_copy = strdup(cb->header_key);
        if (!s->key_copy) {
            rc = EM_ENOMEM;
            goto fail;
        }
        s->cb.header_key = s->key_copy;
    }
    gpr_timespec deadline = timeout_ms > 0 ? em_rpc_deadline_ms(timeout_ms) : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    s->call = grpc_channel_create_registered_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, ch->cq, method->handle,
                                                  deadline, NULL);
    if (!s->call) {
        rc = EM_EGRPC;
        goto fail;
    }
    rc = call_link(ch, &s->link, s->call);
    if (rc != EM_OK)
        goto fail;
    if (scall_start(s, SC_START) != EM_OK) {
        call_unlink(ch, &s->link);
        call_release(ch);
        rc = EM_EGRPC;
        goto fail;
    }
    return EM_OK;
fail:
    scall_free(s);
    return rc;
}

int em_rpc_channel_active_calls(em_rpc_channel_t *ch) { return atomic_load(&ch->active); }

void em_rpc_channel_destroy(em_rpc_channel_t *ch) {
    if (!ch)
        return;
    /* Cancel the open calls, unary and streaming; their completions still
     * arrive on the loop and free the call contexts. Wait for them (bounded)
     * so no callback runs after the owner freed its state. */
    pthread_mutex_lock(&ch->lock);
    atomic_store(&ch->closing, 1);
    for (em_rpc_clink_t *l = ch->calls; l; l = l->next)
        grpc_call_cancel(l->call, NULL);
    int64_t deadline = em_mono_ms() + 5000;
    while ((atomic_load(&ch->active) > 0 || atomic_load(&ch->watching)) && em_mono_ms() < deadline)
        em_cond_wait_ms(&ch->cond, &ch->lock, deadline - em_mono_ms());
    int left = atomic_load(&ch->active) + atomic_load(&ch->watching);
    pthread_mutex_unlock(&ch->lock);
    grpc_channel_destroy(ch->channel);
    if (left > 0) {
        EM_ERROR("rpc: channel calls still open after 5 s; leaking the channel", EM_F_INT("open_calls", left));
        return;
    }
    pthread_cond_destroy(&ch->cond);
    pthread_mutex_destroy(&ch->lock);
    free(ch);
}
