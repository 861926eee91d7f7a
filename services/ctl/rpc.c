/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A blocking unary gRPC call for a command-line client: the project's async
 * channel (lib/em_rpc_channel.h) with its reply callback (the rpc loop's
 * thread) handing the answer over through a mutex and a condition variable
 * to the command's thread, which waits for it; the call's deadline bounds
 * the wait.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "em_rpc.h"

typedef struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    ctl_call_t *c;
} waiter_t;

/* The rpc loop's thread. */
static void on_reply(void *arg, grpc_status_code code, const char *details, const uint8_t *resp, size_t len) {
    waiter_t *w = arg;
    pthread_mutex_lock(&w->lock);
    w->c->code = code;
    snprintf(w->c->details, sizeof(w->c->details), "%s", details ? details : "");
    if (resp && len) {
        w->c->resp = malloc(len);
        if (w->c->resp) {
            memcpy(w->c->resp, resp, len);
            w->c->len = len;
        }
    }
    w->done = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

grpc_status_code ctl_call(em_rpc_channel_t *ch, em_rpc_method_ref_t *m, const ProtobufCMessage *msg,
                          int64_t timeout_ms, ctl_call_t *c) {
    memset(c, 0, sizeof(*c));
    waiter_t w = {.c = c};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    if (!m || em_rpc_channel_call(ch, m, em_rpc_pack(msg), timeout_ms, on_reply, &w) != EM_OK) {
        snprintf(c->details, sizeof(c->details), "cannot start the call");
        c->code = GRPC_STATUS_INTERNAL;
    } else {
        pthread_mutex_lock(&w.lock);
        while (!w.done)
            pthread_cond_wait(&w.cond, &w.lock); /* the call's deadline bounds this */
        pthread_mutex_unlock(&w.lock);
    }
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
    return c->code;
}

void ctl_call_cleanup(ctl_call_t *c) {
    free(c->resp);
    c->resp = NULL;
    c->len = 0;
}

void ctl_channel_opts(em_rpc_channel_opts_t *o, int probe, const em_tls_opts_t *tls) {
    memset(o, 0, sizeof(*o));
    o->tls = *tls;
    o->keepalive_time_ms = 10000;
    o->keepalive_timeout_ms = 5000;
    o->reconnect_min_ms = 100;
    o->reconnect_max_ms = 1000;
    o->retry_max_attempts = probe ? 1 : 3;
    o->max_message_bytes = 64 * 1024 * 1024;
    o->dns_min_resolution_ms = 1000;
    o->no_health_check = probe;
    o->fail_fast = probe;
}

int ctl_sched_open(const char *cmd, const char *target, const em_tls_opts_t *tls, ctl_sched_t *s) {
    char err[512];
    em_rpc_channel_opts_t co;
    memset(s, 0, sizeof(*s));
    s->loop = em_rpc_loop_new();
    if (!s->loop || em_rpc_loop_start(s->loop) != EM_OK) {
        fprintf(stderr, "execmeshctl %s: cannot start the gRPC loop\n", cmd);
        ctl_sched_close(s);
        return 3;
    }
    ctl_channel_opts(&co, 0, tls);
    s->ch = em_rpc_channel_new(s->loop, target, "execmesh.v1.Scheduler", &co, err, sizeof(err));
    if (!s->ch) {
        fprintf(stderr, "execmeshctl %s: --target %s: %s\n", cmd, target, err);
        ctl_sched_close(s);
        return 2;
    }
    s->submit = em_rpc_channel_method(s->ch, "/execmesh.v1.Scheduler/Submit");
    s->cancel = em_rpc_channel_method(s->ch, "/execmesh.v1.Scheduler/Cancel");
    return 0;
}

void ctl_sched_close(ctl_sched_t *s) {
    if (s->ch)
        em_rpc_channel_destroy(s->ch);
    if (s->loop)
        em_rpc_loop_destroy(s->loop);
    s->ch = NULL;
    s->loop = NULL;
}
