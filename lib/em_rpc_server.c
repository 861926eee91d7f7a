/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The server: registered-call requests kept posted per method, a catch-all
 * for unknown methods, unary and server-streaming answers, and the health
 * service's Check and Watch. Each tag is the first field of a typed context
 * that owns the memory its ops point into; a call is unref'd when its last
 * batch is done.
 */
#include "em_rpc_server.h"

#include <grpc/slice_buffer.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <limits.h>
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
#include "grpc/health/v1/health.pb-c.h"

#define EM_RPC_MAX_METHODS 8
#define EM_RPC_UNKNOWN_PREPOST 4
#define EM_HEALTH_PREPOST 8

enum method_kind { MK_UNARY, MK_HEALTH_CHECK, MK_HEALTH_WATCH };

typedef struct em_rpc_method {
    em_rpc_server_t *srv;
    char *path;
    void *handle;
    enum method_kind kind;
    em_rpc_method_fn fn;
    void *ctx;
    int prepost;
    char **allow; /* with TLS on, the identities that may call it; NULL: any (the handler decides) */
    size_t nallow;
} em_rpc_method_t;

typedef struct em_rpc_watch em_rpc_watch_t;

struct em_rpc_server {
    em_rpc_loop_t *loop;
    grpc_completion_queue *cq;
    grpc_server *server;
    em_health_t *health;
    char listen[256];
    em_tls_opts_t tls; /* its strings borrowed from the opts' owner (the service's config) */
    em_rpc_method_t methods[EM_RPC_MAX_METHODS];
    int nmethods;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    int started;
    int shutting_down;
    int shutdown_done;
    int destroyed_core;
    em_rpc_watch_t *watches;
    em_rpc_tag_t shutdown_tag;
    atomic_int active_calls;
    atomic_int draining; /* shutdown began: the last call gone wakes destroy */
};

/* ---- posted requests ---------------------------------------------------- */

typedef struct em_rpc_req {
    em_rpc_tag_t tag;
    em_rpc_method_t *method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
} em_rpc_req_t;

typedef struct em_rpc_unknown {
    em_rpc_tag_t tag;
    em_rpc_server_t *srv;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    int answered;
    int cancelled;
    grpc_slice status_details;
    grpc_op ops[3];
} em_rpc_unknown_t;

/* The state of a streaming answer, allocated by the owner's first
 * em_rpc_call_send_headers or _send_slice (a unary answer never pays for
 * it): a queue of messages and one send batch in flight at a time, the final
 * status riding on the last message's batch. The owner's calls and the
 * completions on the loop thread meet under lock. */
typedef struct em_rpc_stream {
    em_rpc_tag_t send_tag;
    struct em_rpc_call *call;
    pthread_mutex_t lock;
    grpc_slice_buffer queue; /* messages not yet sent, one slice each */
    grpc_metadata header;    /* the extra response header */
    size_t header_count;     /* 0 or 1 */
    int headers_wanted;      /* em_rpc_call_send_headers was called */
    int headers_sent;        /* SEND_INITIAL_METADATA started */
    int send_busy;           /* a send batch is in flight */
    int ending;              /* the owner gave the final status */
    grpc_status_code end_code;
    int has_details;
    int status_sent;         /* the batch with SEND_STATUS_FROM_SERVER started */
    int dead;                /* a send failed: the caller is gone */
    int owner_released;      /* the owner's ref was dropped */
} em_rpc_stream_t;

/* A call to a registered method. A unary answer is one batch (reply_tag),
 * as cheap as gRPC allows; a streaming one goes through st.
 *
 * refs counts the close batch, the owner's answer (for a stream: dropped
 * when the final status batch completes, or at once when the call is dead),
 * and each streaming batch in flight. */
struct em_rpc_call {
    em_rpc_tag_t close_tag;
    em_rpc_tag_t reply_tag;
    em_rpc_server_t *srv;
    grpc_call *call;
    gpr_timespec deadline;
    int prev_attempts;
    int stream_oom;       /* the stream state could not be allocated: call cancelled */
    grpc_slice req;
    atomic_int refs;
    atomic_int cancelled;
    atomic_int answered;
    int close_cancelled;
    grpc_byte_buffer *resp; /* the message of the batch in flight */
    grpc_slice details;
    grpc_op ops[3];
    grpc_op close_op;
    em_rpc_stream_t *st;  /* set by the owner, before any streaming batch */
    char identity[EM_RPC_IDENTITY_MAX]; /* the TLS peer's; "" without TLS */
};

static void post_request(em_rpc_method_t *m);
static void post_unknown(em_rpc_server_t *srv);
static void health_check(em_rpc_server_t *srv, em_rpc_call_t *call, const uint8_t *req, size_t len);
static void health_watch_start(em_rpc_server_t *srv, grpc_call *gcall, grpc_byte_buffer *payload);

/* A call context was freed; the caller must not touch srv after this.
 * While draining, under srv->lock, so em_rpc_server_destroy (which waits for
 * none to be left) cannot free srv under our feet; otherwise lock-free, the
 * unary fast path. A decrement racing the flag only misses a wake-up, and
 * destroy re-checks on a short period. */
static void server_call_gone(em_rpc_server_t *srv) {
    if (!atomic_load(&srv->draining)) {
        atomic_fetch_sub(&srv->active_calls, 1);
        return;
    }
    pthread_mutex_lock(&srv->lock);
    if (atomic_fetch_sub(&srv->active_calls, 1) == 1)
        pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
}

static void call_unref(em_rpc_call_t *c) {
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    em_rpc_server_t *srv = c->srv;
    grpc_slice_unref(c->req);
    if (c->resp)
        grpc_byte_buffer_destroy(c->resp);
    grpc_slice_unref(c->details);
    if (c->st) {
        grpc_slice_buffer_destroy(&c->st->queue);
        if (c->st->header_count) {
            grpc_slice_unref(c->st->header.key);
            grpc_slice_unref(c->st->header.value);
        }
        pthread_mutex_destroy(&c->st->lock);
        free(c->st);
    }
    grpc_call_unref(c->call);
    free(c);
    server_call_gone(srv); /* last: destroy may free srv right after */
}

static void call_close_done(em_rpc_tag_t *tag, int ok) {
    em_rpc_call_t *c = EM_CONTAINER_OF(tag, em_rpc_call_t, close_tag);
    if (!ok || c->close_cancelled)
        atomic_store(&c->cancelled, 1);
    call_unref(c);
}

static void call_reply_done(em_rpc_tag_t *tag, int ok) {
    em_rpc_call_t *c = EM_CONTAINER_OF(tag, em_rpc_call_t, reply_tag);
    (void)ok; /* a failed send means the caller left; nothing to retry */
    call_unref(c);
}

static int read_prev_attempts(const grpc_metadata_array *md) {
    for (size_t i = 0; i < md->count; i++) {
        const grpc_metadata *e = &md->metadata[i];
        if (grpc_slice_str_cmp(e->key, "grpc-previous-rpc-attempts") == 0) {
            char buf[16] = {0};
            size_t n = GRPC_SLICE_LENGTH(e->value);
            if (n >= sizeof(buf))
                n = sizeof(buf) - 1;
            memcpy(buf, GRPC_SLICE_START_PTR(e->value), n);
            return atoi(buf);
        }
    }
    return 0;
}

static em_rpc_call_t *call_new(em_rpc_server_t *srv, em_rpc_req_t *r) {
    em_rpc_call_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->close_tag.done = call_close_done;
    c->reply_tag.done = call_reply_done;
    c->srv = srv;
    c->call = r->call;
    c->deadline = r->deadline;
    c->prev_attempts = read_prev_attempts(&r->md);
    c->req = em_rpc_take_bb(r->payload);
    c->details = grpc_empty_slice();
    r->payload = NULL;
    atomic_init(&c->refs, 2); /* the close batch and the reply */
    atomic_fetch_add(&srv->active_calls, 1);

    c->close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    c->close_op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    if (grpc_call_start_batch(c->call, &c->close_op, 1, &c->close_tag, NULL) != GRPC_CALL_OK) {
        atomic_store(&c->cancelled, 1);
        atomic_fetch_sub(&c->refs, 1);
    }
    return c;
}

static void send_reply(em_rpc_call_t *c, grpc_status_code code, grpc_byte_buffer *resp, const char *details) {
    if (atomic_exchange(&c->answered, 1)) {
        EM_ERROR("rpc: a call was answered twice (programming error)");
        if (resp)
            grpc_byte_buffer_destroy(resp);
        return;
    }
    size_t n = 0;
    c->resp = resp;
    c->details = grpc_slice_from_copied_string(details ? details : "");
    memset(c->ops, 0, sizeof(c->ops));
    c->ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    n++;
    if (resp) {
        c->ops[n].op = GRPC_OP_SEND_MESSAGE;
        c->ops[n].data.send_message.send_message = resp;
        n++;
    }
    c->ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    c->ops[n].data.send_status_from_server.status = code;
    c->ops[n].data.send_status_from_server.status_details = details ? &c->details : NULL;
    n++;
    grpc_call_error e = grpc_call_start_batch(c->call, c->ops, n, &c->reply_tag, NULL);
    if (e != GRPC_CALL_OK) {
        EM_WARN("rpc: cannot send reply", EM_F_INT("grpc_call_error", e));
        call_unref(c);
    }
}

/* ---- streaming answers -------------------------------------------------- */

/* Starts the next send batch of a streaming answer unless one is in flight:
 * the response headers if not sent yet, the oldest queued message, and the
 * final status once the queue is empty. Called with st->lock held; returns
 * how many refs the caller drops after unlocking (never under the lock: the
 * last one frees the call and its lock). */
static int stream_pump(em_rpc_stream_t *st) {
    em_rpc_call_t *c = st->call;
    if (st->send_busy || st->status_sent)
        return 0;
    if (st->dead) {
        grpc_slice_buffer_reset_and_unref(&st->queue);
        if (st->ending && !st->owner_released) {
            st->owner_released = 1;
            return 1;
        }
        return 0;
    }
    size_t n = 0;
    memset(c->ops, 0, sizeof(c->ops));
    if (!st->headers_sent) {
        if (!st->headers_wanted && st->queue.count == 0 && !st->ending)
            return 0;
        c->ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->ops[n].data.send_initial_metadata.count = st->header_count;
        c->ops[n].data.send_initial_metadata.metadata = st->header_count ? &st->header : NULL;
        n++;
        st->headers_sent = 1;
    }
    if (st->queue.count > 0) {
        grpc_slice msg = grpc_slice_buffer_take_first(&st->queue);
        if (c->resp)
            grpc_byte_buffer_destroy(c->resp);
        c->resp = grpc_raw_byte_buffer_create(&msg, 1);
        grpc_slice_unref(msg);
        c->ops[n].op = GRPC_OP_SEND_MESSAGE;
        c->ops[n].data.send_message.send_message = c->resp;
        n++;
    }
    if (st->ending && st->queue.count == 0) {
        c->ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        c->ops[n].data.send_status_from_server.status = st->end_code;
        c->ops[n].data.send_status_from_server.status_details = st->has_details ? &c->details : NULL;
        n++;
        st->status_sent = 1;
    }
    if (n == 0)
        return 0;
    st->send_busy = 1;
    atomic_fetch_add(&c->refs, 1); /* the owner's ref is held: this never frees */
    grpc_call_error e = grpc_call_start_batch(c->call, c->ops, n, &st->send_tag, NULL);
    if (e == GRPC_CALL_OK)
        return 0;
    EM_WARN("rpc: cannot send a streaming answer; cancelling the call", EM_F_INT("grpc_call_error", e));
    atomic_fetch_sub(&c->refs, 1);
    st->send_busy = 0;
    st->status_sent = 0;
    st->dead = 1;
    /* ends the close batch too, so the call does not wait for its deadline */
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "server: cannot send the answer", NULL);
    return stream_pump(st);
}

/* The loop thread: a streaming send batch completed. */
static void stream_send_done(em_rpc_tag_t *tag, int ok) {
    em_rpc_stream_t *st = EM_CONTAINER_OF(tag, em_rpc_stream_t, send_tag);
    em_rpc_call_t *c = st->call;
    int drops = 1; /* the batch's own ref */
    pthread_mutex_lock(&st->lock);
    st->send_busy = 0;
    if (st->status_sent) { /* that was the last batch, whatever ok says */
        st->owner_released = 1;
        drops++;
    } else {
        if (!ok)
            st->dead = 1; /* the caller left: drop what is queued */
        drops += stream_pump(st);
    }
    pthread_mutex_unlock(&st->lock);
    while (drops-- > 0)
        call_unref(c);
}

/* The owner's thread: the stream state, made before the first streaming
 * batch (nothing else touches it until a batch is started). NULL when out
 * of memory: the call is cancelled, its streaming output dropped, and its
 * answer (a unary one then) fails at once and frees it. */
static em_rpc_stream_t *stream_get(em_rpc_call_t *c) {
    if (c->st || c->stream_oom)
        return c->st;
    em_rpc_stream_t *st = calloc(1, sizeof(*st));
    if (!st) {
        EM_ERROR("rpc: out of memory for a streaming answer; cancelling the call");
        c->stream_oom = 1;
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "server: out of memory", NULL);
        return NULL;
    }
    st->send_tag.done = stream_send_done;
    st->call = c;
    pthread_mutex_init(&st->lock, NULL);
    grpc_slice_buffer_init(&st->queue);
    c->st = st;
    return st;
}

/* Queues the final status (and msg, when has_msg) of a streaming answer. */
static void stream_end(em_rpc_call_t *c, grpc_status_code code, const char *details, int has_msg, grpc_slice msg) {
    em_rpc_stream_t *st = c->st;
    if (atomic_exchange(&c->answered, 1)) {
        EM_ERROR("rpc: a call was answered twice (programming error)");
        grpc_slice_unref(msg);
        return;
    }
    pthread_mutex_lock(&st->lock);
    if (has_msg && !st->dead)
        grpc_slice_buffer_add_indexed(&st->queue, msg); /* never merged with a neighbour */
    else
        grpc_slice_unref(msg);
    st->ending = 1;
    st->end_code = code;
    if (details) {
        c->details = grpc_slice_from_copied_string(details);
        st->has_details = 1;
    }
    int drops = stream_pump(st);
    pthread_mutex_unlock(&st->lock);
    while (drops-- > 0)
        call_unref(c);
}

void em_rpc_call_send_headers(em_rpc_call_t *call, const char *key, const char *value) {
    if (atomic_load(&call->answered)) {
        EM_ERROR("rpc: response headers after the answer (programming error)");
        return;
    }
    em_rpc_stream_t *st = stream_get(call);
    if (!st)
        return;
    pthread_mutex_lock(&st->lock);
    if (st->headers_wanted || st->headers_sent) {
        pthread_mutex_unlock(&st->lock);
        EM_ERROR("rpc: response headers sent twice or after a message (programming error)");
        return;
    }
    st->headers_wanted = 1;
    if (key) {
        grpc_slice k = grpc_slice_from_copied_string(key);
        grpc_slice v = grpc_slice_from_copied_string(value ? value : "");
        /* gRPC would refuse the whole batch; send the headers without it */
        if (!grpc_header_key_is_legal(k) || grpc_is_binary_header(k) || !grpc_header_nonbin_value_is_legal(v)) {
            EM_ERROR("rpc: illegal response header left out (programming error)", EM_F_STR("key", key));
            grpc_slice_unref(k);
            grpc_slice_unref(v);
        } else {
            st->header.key = k;
            st->header.value = v;
            st->header_count = 1;
        }
    }
    int drops = stream_pump(st);
    pthread_mutex_unlock(&st->lock);
    while (drops-- > 0)
        call_unref(call);
}

void em_rpc_call_send_slice(em_rpc_call_t *call, grpc_slice msg) {
    if (atomic_load(&call->answered)) {
        EM_ERROR("rpc: a message after the answer (programming error)");
        grpc_slice_unref(msg);
        return;
    }
    em_rpc_stream_t *st = NULL;
    if (atomic_load(&call->cancelled) || !(st = stream_get(call))) { /* nobody to read it */
        grpc_slice_unref(msg);
        return;
    }
    pthread_mutex_lock(&st->lock);
    int drops = 0;
    if (st->dead) {
        grpc_slice_unref(msg);
    } else {
        grpc_slice_buffer_add_indexed(&st->queue, msg);
        drops = stream_pump(st);
    }
    pthread_mutex_unlock(&st->lock);
    while (drops-- > 0)
        call_unref(call);
}

void em_rpc_call_finish(em_rpc_call_t *call) {
    if (!call->st) {
        send_reply(call, GRPC_STATUS_OK, NULL, NULL);
        return;
    }
    stream_end(call, GRPC_STATUS_OK, NULL, 0, grpc_empty_slice());
}

/* ---- answers -------------------------------------------------------------- */

void em_rpc_call_reply_slice(em_rpc_call_t *call, grpc_slice msg) {
    if (call->st) {
        stream_end(call, GRPC_STATUS_OK, NULL, 1, msg);
        return;
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&msg, 1);
    grpc_slice_unref(msg);
    send_reply(call, GRPC_STATUS_OK, bb, NULL);
}

void em_rpc_call_reply(em_rpc_call_t *call, const ProtobufCMessage *msg) {
    em_rpc_call_reply_slice(call, em_rpc_pack(msg));
}

void em_rpc_call_fail(em_rpc_call_t *call, grpc_status_code code, const char *details) {
    const char *d = details ? details : em_rpc_status_name(code);
    if (call->st) {
        stream_end(call, code, d, 0, grpc_empty_slice());
        return;
    }
    send_reply(call, code, NULL, d);
}

int em_rpc_call_previous_attempts(const em_rpc_call_t *call) { return call->prev_attempts; }

int64_t em_rpc_call_remaining_ms(const em_rpc_call_t *call) {
    gpr_timespec d = gpr_convert_clock_type(call->deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
        return INT64_MAX;
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
    return gpr_time_to_millis(left);
}

int em_rpc_call_cancelled(em_rpc_call_t *call) { return atomic_load(&call->cancelled); }

const char *em_rpc_call_identity(const em_rpc_call_t *call) { return call->identity; }

/* ---- registered requests ------------------------------------------------ */

static int allowed(const em_rpc_method_t *m, const char *identity) {
    if (!*identity)
        return 0;
    for (size_t i = 0; i < m->nallow; i++)
        if (strcmp(m->allow[i], identity) == 0)
            return 1;
    return 0;
}

static void req_done(em_rpc_tag_t *tag, int ok) {
    em_rpc_req_t *r = EM_CONTAINER_OF(tag, em_rpc_req_t, tag);
    em_rpc_method_t *m = r->method;
    em_rpc_server_t *srv = m->srv;

    if (!ok) { /* the server is shutting down */
        if (r->payload)
            grpc_byte_buffer_destroy(r->payload);
        grpc_metadata_array_destroy(&r->md);
        free(r);
        return;
    }
    post_request(m);
    if (m->kind == MK_HEALTH_WATCH) {
        health_watch_start(srv, r->call, r->payload);
        r->payload = NULL;
        grpc_metadata_array_destroy(&r->md);
        free(r);
        return;
    }
    em_rpc_call_t *c = call_new(srv, r);
    grpc_metadata_array_destroy(&r->md);
    if (!c) {
        if (r->payload)
            grpc_byte_buffer_destroy(r->payload);
        grpc_call_cancel_with_status(r->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        grpc_call_unref(r->call);
        free(r);
        return;
    }
    free(r);
    if (em_tls_on(&srv->tls)) {
        em_tls_peer_identity(c->call, c->identity, sizeof(c->identity));
        if (m->allow && !allowed(m, c->identity)) {
            char why[EM_RPC_IDENTITY_MAX + 256];
            snprintf(why, sizeof(why), "identity '%s' may not call %s", c->identity, m->path);
            EM_WARN("call refused", EM_F_STR("identity", c->identity), EM_F_STR("method", m->path));
            em_rpc_call_fail(c, GRPC_STATUS_PERMISSION_DENIED, why);
            return;
        }
    }
    const uint8_t *p = GRPC_SLICE_START_PTR(c->req);
    size_t n = GRPC_SLICE_LENGTH(c->req);
    if (m->kind == MK_HEALTH_CHECK)
        health_check(srv, c, p, n);
    else
        m->fn(m->ctx, c, p, n);
}

static void post_request(em_rpc_method_t *m) {
    em_rpc_server_t *srv = m->srv;
    em_rpc_req_t *r = calloc(1, sizeof(*r));
    if (!r) {
        EM_ERROR("rpc: out of memory posting a request", EM_F_STR("method", m->path));
        return;
    }
    r->tag.done = req_done;
    r->method = m;
    grpc_metadata_array_init(&r->md);
    grpc_call_error e = grpc_server_request_registered_call(srv->server, m->handle, &r->call, &r->deadline,
                                                            &r->md, &r->payload, srv->cq, srv->cq, &r->tag);
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&r->md);
        free(r);
    }
}

/* ---- unknown methods ---------------------------------------------------- */

static void unknown_done(em_rpc_tag_t *tag, int ok) {
    em_rpc_unknown_t *u = EM_CONTAINER_OF(tag, em_rpc_unknown_t, tag);
    em_rpc_server_t *srv = u->srv;
    if (!ok && !u->answered) { /* shutting down */
        grpc_call_details_destroy(&u->details);
        grpc_metadata_array_destroy(&u->md);
        free(u);
        return;
    }
    if (!u->answered) {
        post_unknown(srv);
        char msg[512];
        char *method = grpc_slice_to_c_string(u->details.method);
        snprintf(msg, sizeof(msg), "unknown method %s", method);
        EM_DEBUG("rpc: unknown method", EM_F_STR("method", method));
        gpr_free(method);
        u->answered = 1;
        u->status_details = grpc_slice_from_copied_string(msg);
        memset(u->ops, 0, sizeof(u->ops));
        u->ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        u->ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        u->ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
        u->ops[1].data.send_status_from_server.status_details = &u->status_details;
        u->ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        u->ops[2].data.recv_close_on_server.cancelled = &u->cancelled;
        if (grpc_call_start_batch(u->call, u->ops, 3, &u->tag, NULL) == GRPC_CALL_OK)
            return;
    }
    grpc_slice_unref(u->status_details);
    grpc_call_unref(u->call);
    grpc_call_details_destroy(&u->details);
    grpc_metadata_array_destroy(&u->md);
    free(u);
}

static void post_unknown(em_rpc_server_t *srv) {
    em_rpc_unknown_t *u = calloc(1, sizeof(*u));
    if (!u)
        return;
    u->tag.done = unknown_done;
    u->srv = srv;
    u->status_details = grpc_empty_slice();
    grpc_call_details_init(&u->details);
    grpc_metadata_array_init(&u->md);
    if (grpc_server_request_call(srv->server, &u->call, &u->details, &u->md, srv->cq, srv->cq, &u->tag) !=
        GRPC_CALL_OK) {
        grpc_call_details_destroy(&u->details);
        grpc_metadata_array_destroy(&u->md);
        free(u);
    }
}

/* ---- health: Check ------------------------------------------------------ */

static void health_check(em_rpc_server_t *srv, em_rpc_call_t *call, const uint8_t *req, size_t len) {
    char *service;
    em_err_t rc = em_health_request_decode(req, len, &service);
    if (rc != EM_OK) {
        em_rpc_call_fail(call, rc == EM_ENOMEM ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INVALID_ARGUMENT,
                         rc == EM_ENOMEM ? "out of memory" : "HealthCheckRequest: cannot decode");
        return;
    }
    em_health_status_t st;
    if (em_health_get(srv->health, service, &st) != EM_OK) {
        char msg[300];
        snprintf(msg, sizeof(msg), "unknown service '%.200s'", service);
        em_rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, msg);
    } else {
        Grpc__Health__V1__HealthCheckResponse out = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        out.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
        em_rpc_call_reply(call, &out.base);
    }
    free(service);
}

/* ---- health: Watch -------------------------------------------------------
 * One send in flight per stream; the health callback records the latest
 * status and sends only when idle, the send completion re-sends when the
 * status moved meanwhile. A separate RECV_CLOSE batch tells when the client
 * left. On shutdown the stream ends with UNAVAILABLE so the server can stop.
 */
struct em_rpc_watch {
    em_rpc_tag_t send_tag;
    em_rpc_tag_t close_tag;
    em_rpc_watch_t *next;
    em_rpc_server_t *srv;
    grpc_call *call;
    em_health_watch_t *hw;

    pthread_mutex_t lock;
    int refs;      /* outstanding batches */
    int latest;    /* newest status from em_health */
    int sent;      /* last status sent, -1 before the first */
    int send_busy;
    int ending;    /* shutdown asked for the status to be sent */
    int status_sent;
    int closed;
    int close_cancelled;
    int unwatched;
    grpc_byte_buffer *bb;
    grpc_slice details;
    grpc_op ops[3];
    grpc_op close_op;
};

static void watch_free(em_rpc_watch_t *w) {
    if (w->bb)
        grpc_byte_buffer_destroy(w->bb);
    grpc_slice_unref(w->details);
    grpc_call_unref(w->call);
    pthread_mutex_destroy(&w->lock);
    em_rpc_server_t *srv = w->srv;
    free(w);
    server_call_gone(srv);
}

/* Starts the next send if idle; called with w->lock held. */
static void watch_pump(em_rpc_watch_t *w) {
    if (w->send_busy || w->status_sent || w->closed)
        return;
    size_t n = 0;
    memset(w->ops, 0, sizeof(w->ops));
    if (w->sent < 0) {
        w->ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    }
    if (w->ending) {
        w->details = grpc_slice_from_static_string("server draining");
        w->ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        w->ops[n].data.send_status_from_server.status = GRPC_STATUS_UNAVAILABLE;
        w->ops[n].data.send_status_from_server.status_details = &w->details;
        n++;
        w->status_sent = 1;
    } else if (w->latest != w->sent) {
        Grpc__Health__V1__HealthCheckResponse out = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        out.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)w->latest;
        grpc_slice s = em_rpc_pack(&out.base);
        if (w->bb)
            grpc_byte_buffer_destroy(w->bb);
        w->bb = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        w->ops[n].op = GRPC_OP_SEND_MESSAGE;
        w->ops[n].data.send_message.send_message = w->bb;
        n++;
        w->sent = w->latest;
    } else {
        return;
    }
    w->send_busy = 1;
    w->refs++;
    if (grpc_call_start_batch(w->call, w->ops, n, &w->send_tag, NULL) != GRPC_CALL_OK) {
        w->send_busy = 0;
        w->refs--;
        w->closed = 1;
    }
}

static void watch_on_health(void *arg, em_health_status_t st) {
    em_rpc_watch_t *w = arg;
    pthread_mutex_lock(&w->lock);
    w->latest = (int)st;
    watch_pump(w);
    pthread_mutex_unlock(&w->lock);
}

static void watch_release(em_rpc_watch_t *w) {
    /* w->lock held; unlocks */
    int last = --w->refs == 0;
    pthread_mutex_unlock(&w->lock);
    if (last)
        watch_free(w);
}

static void watch_send_done(em_rpc_tag_t *tag, int ok) {
    em_rpc_watch_t *w = EM_CONTAINER_OF(tag, em_rpc_watch_t, send_tag);
    pthread_mutex_lock(&w->lock);
    w->send_busy = 0;
    if (!ok)
        w->closed = 1;
    watch_pump(w);
    watch_release(w);
}

static void watch_close_done(em_rpc_tag_t *tag, int ok) {
    em_rpc_watch_t *w = EM_CONTAINER_OF(tag, em_rpc_watch_t, close_tag);
    em_rpc_server_t *srv = w->srv;
    em_health_watch_t *hw;

    pthread_mutex_lock(&srv->lock);
    for (em_rpc_watch_t **p = &srv->watches; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);

    pthread_mutex_lock(&w->lock);
    w->closed = 1;
    hw = w->hw;
    w->hw = NULL;
    pthread_mutex_unlock(&w->lock);
    em_health_unwatch(srv->health, hw); /* never under w->lock: lock order is health, then watch */

    pthread_mutex_lock(&w->lock);
    watch_release(w);
}

static void health_watch_start(em_rpc_server_t *srv, grpc_call *gcall, grpc_byte_buffer *payload) {
    grpc_slice req = em_rpc_take_bb(payload);
    char *service;
    em_err_t rc = em_health_request_decode(GRPC_SLICE_START_PTR(req), GRPC_SLICE_LENGTH(req), &service);
    grpc_slice_unref(req);
    if (rc != EM_OK) {
        grpc_call_cancel_with_status(gcall, GRPC_STATUS_INVALID_ARGUMENT, "HealthCheckRequest: cannot decode",
                                     NULL);
        grpc_call_unref(gcall);
        return;
    }
    em_rpc_watch_t *w = calloc(1, sizeof(*w));
    if (!w) {
        free(service);
        grpc_call_cancel_with_status(gcall, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        grpc_call_unref(gcall);
        return;
    }
    w->send_tag.done = watch_send_done;
    w->close_tag.done = watch_close_done;
    w->srv = srv;
    w->call = gcall;
    w->sent = -1;
    w->details = grpc_empty_slice();
    pthread_mutex_init(&w->lock, NULL);
    atomic_fetch_add(&srv->active_calls, 1);

    w->refs = 1; /* the close batch */
    w->close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    w->close_op.data.recv_close_on_server.cancelled = &w->close_cancelled;
    if (grpc_call_start_batch(gcall, &w->close_op, 1, &w->close_tag, NULL) != GRPC_CALL_OK) {
        free(service);
        watch_free(w);
        return;
    }
    pthread_mutex_lock(&srv->lock);
    w->next = srv->watches;
    srv->watches = w;
    int ending = srv->shutting_down;
    pthread_mutex_unlock(&srv->lock);

    if (ending) {
        pthread_mutex_lock(&w->lock);
        w->ending = 1;
        watch_pump(w);
        pthread_mutex_unlock(&w->lock);
    } else {
        em_health_watch_t *hw = em_health_watch(srv->health, service, watch_on_health, w);
        pthread_mutex_lock(&w->lock);
        if (w->closed) {
            pthread_mutex_unlock(&w->lock);
            em_health_unwatch(srv->health, hw);
        } else {
            w->hw = hw;
            pthread_mutex_unlock(&w->lock);
        }
    }
    free(service);
}

/* ---- server lifecycle --------------------------------------------------- */

static void shutdown_done(em_rpc_tag_t *tag, int ok) {
    em_rpc_server_t *srv = EM_CONTAINER_OF(tag, em_rpc_server_t, shutdown_tag);
    (void)ok;
    pthread_mutex_lock(&srv->lock);
    srv->shutdown_done = 1;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
}

em_rpc_server_t *em_rpc_server_new(em_rpc_loop_t *loop, em_health_t *health, const em_rpc_server_opts_t *opts,
                                   char *errstr, size_t errstr_size) {
    em_rpc_server_t *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    srv->loop = loop;
    srv->cq = em_rpc_loop_cq(loop);
    srv->health = health;
    snprintf(srv->listen, sizeof(srv->listen), "%s", opts->listen);
    srv->tls = opts->tls;
    srv->shutdown_tag.done = shutdown_done;
    pthread_mutex_init(&srv->lock, NULL);
    em_cond_init(&srv->cond);

    /* INT_MAX is gRPC's "never" for both. A grace <= 0 must not mean 0:
     * that would close the connection right after the GOAWAY and cut every
     * call still open on it, streams that run for hours included. */
    int age_ms = opts->max_connection_age_ms > 0 ? opts->max_connection_age_ms : INT_MAX;
    int grace_ms = opts->max_connection_age_grace_ms > 0 ? opts->max_connection_age_grace_ms : INT_MAX;
    grpc_arg args[] = {
        em_int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0),
        em_int_arg(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, opts->min_ping_interval_ms),
        em_int_arg(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1),
        em_int_arg(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0),
        em_int_arg(GRPC_ARG_MAX_CONNECTION_AGE_MS, age_ms),
        em_int_arg(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, grace_ms),
        em_int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, opts->max_message_bytes),
        em_int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, opts->max_message_bytes),
    };
    grpc_channel_args ca = {EM_ARRAY_LEN(args), args};
    srv->server = grpc_server_create(&ca, NULL);
    if (!srv->server) {
        snprintf(errstr, errstr_size, "grpc_server_create failed");
        free(srv);
        return NULL;
    }
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);

    struct {
        const char *path;
        enum method_kind kind;
        grpc_server_register_method_payload_handling ph;
    } hm[] = {{"/grpc.health.v1.Health/Check", MK_HEALTH_CHECK, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER},
              {"/grpc.health.v1.Health/Watch", MK_HEALTH_WATCH, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER}};
    for (size_t i = 0; i < EM_ARRAY_LEN(hm); i++) {
        em_rpc_method_t *m = &srv->methods[srv->nmethods++];
        m->srv = srv;
        m->path = strdup(hm[i].path);
        m->kind = hm[i].kind;
        m->prepost = EM_HEALTH_PREPOST;
        m->handle = grpc_server_register_method(srv->server, m->path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    }
    em_health_add_service(health, "");
    return srv;
}

em_err_t em_rpc_server_add_method(em_rpc_server_t *srv, const char *service, const char *method,
                                  em_rpc_method_fn fn, void *ctx, int prepost) {
    if (srv->started || srv->nmethods == EM_RPC_MAX_METHODS)
        return EM_EINVAL;
    char path[256];
    snprintf(path, sizeof(path), "/%s/%s", service, method);
    em_rpc_method_t *m = &srv->methods[srv->nmethods];
    m->srv = srv;
    m->path = strdup(path);
    if (!m->path)
        return EM_ENOMEM;
    m->kind = MK_UNARY;
    m->fn = fn;
    m->ctx = ctx;
    m->prepost = prepost > 0 ? prepost : 1;
    m->handle = grpc_server_register_method(srv->server, m->path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    if (!m->handle) {
        free(m->path);
        return EM_EINVAL;
    }
    srv->nmethods++;
    return em_health_add_service(srv->health, service);
}

static void allow_free(em_rpc_method_t *m) {
    for (size_t i = 0; i < m->nallow; i++)
        free(m->allow[i]);
    free(m->allow);
    m->allow = NULL;
    m->nallow = 0;
}

em_err_t em_rpc_server_allow(em_rpc_server_t *srv, const char *service, const char *method,
                             const char *const *identities, size_t n) {
    char path[256];
    snprintf(path, sizeof(path), "/%s/%s", service, method);
    for (int i = 0; i < srv->nmethods; i++) {
        em_rpc_method_t *m = &srv->methods[i];
        if (strcmp(m->path, path) != 0)
            continue;
        if (srv->started)
            return EM_EINVAL;
        allow_free(m);
        if (!(m->allow = calloc(n ? n : 1, sizeof(char *))))
            return EM_ENOMEM;
        for (; m->nallow < n; m->nallow++)
            if (!(m->allow[m->nallow] = strdup(identities[m->nallow])))
                return EM_ENOMEM;
        return EM_OK;
    }
    return EM_EINVAL;
}

em_err_t em_rpc_server_start(em_rpc_server_t *srv, int *bound_port, char *errstr, size_t errstr_size) {
    char host[256];
    int port;
    if (em_parse_hostport(srv->listen, host, sizeof(host), &port, errstr, errstr_size))
        return EM_EINVAL;
    grpc_server_credentials *creds = em_tls_server_credentials(&srv->tls, errstr, errstr_size);
    if (!creds)
        return EM_EINVAL;
    int p = grpc_server_add_http2_port(srv->server, srv->listen, creds);
    grpc_server_credentials_release(creds);
    if (p <= 0) {
        snprintf(errstr, errstr_size, "grpc: cannot listen on %s (address in use or not local?)", srv->listen);
        return EM_EIO;
    }
    *bound_port = p;
    grpc_server_start(srv->server);
    srv->started = 1;
    for (int i = 0; i < srv->nmethods; i++)
        for (int k = 0; k < srv->methods[i].prepost; k++)
            post_request(&srv->methods[i]);
    for (int k = 0; k < EM_RPC_UNKNOWN_PREPOST; k++)
        post_unknown(srv);
    return EM_OK;
}

static int wait_until(em_rpc_server_t *srv, int64_t deadline_ms) {
    /* srv->lock held */
    while (!srv->shutdown_done) {
        int64_t left = deadline_ms - em_mono_ms();
        if (left <= 0)
            return 0;
        em_cond_wait_ms(&srv->cond, &srv->lock, left);
    }
    return 1;
}

void em_rpc_server_shutdown(em_rpc_server_t *srv, int64_t deadline_ms) {
    atomic_store(&srv->draining, 1);
    pthread_mutex_lock(&srv->lock);
    if (srv->shutting_down || !srv->started) {
        srv->shutting_down = 1;
        pthread_mutex_unlock(&srv->lock);
        return;
    }
    srv->shutting_down = 1;
    for (em_rpc_watch_t *w = srv->watches; w; w = w->next) {
        pthread_mutex_lock(&w->lock);
        w->ending = 1;
        watch_pump(w);
        pthread_mutex_unlock(&w->lock);
    }
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
    if (!wait_until(srv, deadline_ms)) {
        EM_WARN("rpc: drain deadline passed, cancelling the calls still open",
                EM_F_INT("open_calls", atomic_load(&srv->active_calls)));
        grpc_server_cancel_all_calls(srv->server);
        wait_until(srv, em_mono_ms() + 5000);
    }
    pthread_mutex_unlock(&srv->lock);
}

/* Waits (srv->lock held) until every call context is freed: the core's
 * shutdown does not wait for the owners to answer their calls, and a call
 * answered late still has a completion to run that touches srv. */
static int wait_no_calls(em_rpc_server_t *srv, int64_t deadline_ms) {
    while (atomic_load(&srv->active_calls) > 0) {
        int64_t left = deadline_ms - em_mono_ms();
        if (left <= 0)
            return 0;
        em_cond_wait_ms(&srv->cond, &srv->lock, left < 50 ? left : 50);
    }
    return 1;
}

void em_rpc_server_destroy(em_rpc_server_t *srv) {
    if (!srv)
        return;
    if (srv->started) {
        em_rpc_server_shutdown(srv, em_mono_ms());
        pthread_mutex_lock(&srv->lock);
        if (!srv->shutdown_done || !wait_no_calls(srv, em_mono_ms() + 5000)) {
            /* the core did not finish within the bound, or a handler kept
             * its call: destroying now would free memory their tags still
             * point at, so leak it instead */
            int open = atomic_load(&srv->active_calls);
            pthread_mutex_unlock(&srv->lock);
            EM_ERROR("rpc: server did not shut down in time; leaking it", EM_F_INT("open_calls", open));
            return;
        }
        pthread_mutex_unlock(&srv->lock);
    } else if (srv->server) {
        grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
        pthread_mutex_lock(&srv->lock);
        wait_until(srv, em_mono_ms() + 5000);
        pthread_mutex_unlock(&srv->lock);
    }
    grpc_server_destroy(srv->server);
    for (int i = 0; i < srv->nmethods; i++) {
        free(srv->methods[i].path);
        allow_free(&srv->methods[i]);
    }
    pthread_cond_destroy(&srv->cond);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}

int em_rpc_server_active_calls(em_rpc_server_t *srv) { return atomic_load(&srv->active_calls); }
