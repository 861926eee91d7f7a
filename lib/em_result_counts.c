/* SPDX-License-Identifier: Apache-2.0 */
#include "em_result_counts.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EM_NSTATUS 7 /* execmesh.v1.Status: UNSPECIFIED .. CANCELLED */
#define EM_HANDLER_LABEL_MAX 128

typedef struct rc_handler {
    char *name; /* as the executions name it; NULL for "_other" */
    size_t len;
    _Atomic(em_metric_t *) m[EM_NSTATUS][2]; /* [status][final]; set once, under the lock */
} rc_handler_t;

struct em_result_counts {
    pthread_mutex_t lock;
    em_metrics_t *metrics;
    char *name, *help;
    int with_final;
    int max;
    atomic_int n;       /* entries of h in use: each is complete before n counts it */
    rc_handler_t *h;    /* max named ones; "_other" is other */
    rc_handler_t other;
};

const char *em_status_label(int status) {
    static const char *const names[EM_NSTATUS] = {"unspecified", "succeeded", "failed",   "timed_out",
                                                  "rejected",    "exhausted", "cancelled"};
    return status > 0 && status < EM_NSTATUS ? names[status] : names[0];
}

em_result_counts_t *em_result_counts_new(em_metrics_t *m, const char *name, const char *help, int with_final,
                                         int max_handlers) {
    em_result_counts_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->metrics = m;
    c->name = strdup(name);
    c->help = strdup(help);
    c->with_final = with_final;
    c->max = max_handlers > 0 ? max_handlers : 1;
    c->h = calloc((size_t)c->max, sizeof(*c->h));
    if (!c->name || !c->help || !c->h) {
        em_result_counts_destroy(c);
        return NULL;
    }
    return c;
}

void em_result_counts_destroy(em_result_counts_t *c) {
    if (!c)
        return;
    for (int i = 0; c->h && i < atomic_load(&c->n); i++)
        free(c->h[i].name);
    free(c->h);
    free(c->name);
    free(c->help);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* The label value of a handler name: printable, quotes and backslashes
 * escaped, cut at EM_HANDLER_LABEL_MAX bytes. */
static void label_value(char *out, size_t cap, const uint8_t *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 3 < cap && i < EM_HANDLER_LABEL_MAX; i++) {
        uint8_t ch = s[i];
        if (ch == '"' || ch == '\\') {
            out[k++] = '\\';
            out[k++] = (char)ch;
        } else if (ch == '\n') {
            out[k++] = '\\';
            out[k++] = 'n';
        } else
            out[k++] = ch < 0x20 ? '_' : (char)ch;
    }
    out[k] = '\0';
}

static em_metric_t *counter_locked(em_result_counts_t *c, rc_handler_t *h, int status, int final) {
    _Atomic(em_metric_t *) *slot = &h->m[status][c->with_final ? final : 0];
    em_metric_t *x = atomic_load(slot);
    if (!x) {
        char value[4 * EM_HANDLER_LABEL_MAX], labels[5 * EM_HANDLER_LABEL_MAX];
        if (!h->name)
            snprintf(value, sizeof(value), "_other");
        else if (!h->len)
            snprintf(value, sizeof(value), "_unknown");
        else
            label_value(value, sizeof(value), (const uint8_t *)h->name, h->len);
        if (c->with_final)
            snprintf(labels, sizeof(labels), "handler=\"%s\",status=\"%s\",final=\"%s\"", value,
                     em_status_label(status), final ? "true" : "false");
        else
            snprintf(labels, sizeof(labels), "handler=\"%s\",status=\"%s\"", value, em_status_label(status));
        x = em_metrics_counter(c->metrics, c->name, labels, c->help);
        atomic_store(slot, x);
    }
    return x;
}

/* The handler's entry, made when first seen (the shared "_other" past
 * max); NULL only when out of memory. */
/* The entry of a handler seen before, without the lock; NULL if none. */
static rc_handler_t *handler_find(em_result_counts_t *c, const uint8_t *handler, size_t handler_len) {
    int n = atomic_load_explicit(&c->n, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (c->h[i].len == handler_len && memcmp(c->h[i].name, handler, handler_len) == 0)
            return &c->h[i];
    return n == c->max ? &c->other : NULL;
}

static rc_handler_t *handler_locked(em_result_counts_t *c, const uint8_t *handler, size_t handler_len) {
    rc_handler_t *found = handler_find(c, handler, handler_len);
    if (found)
        return found;
    int n = atomic_load(&c->n);
    char *copy = malloc(handler_len + 1);
    if (!copy)
        return &c->other;
    memcpy(copy, handler, handler_len);
    copy[handler_len] = '\0';
    rc_handler_t *h = &c->h[n];
    h->name = copy;
    h->len = handler_len;
    atomic_store_explicit(&c->n, n + 1, memory_order_release); /* published whole */
    return h;
}

void em_result_counts_declare(em_result_counts_t *c, const char *handler) {
    pthread_mutex_lock(&c->lock);
    rc_handler_t *h = handler_locked(c, (const uint8_t *)handler, strlen(handler));
    for (int st = 1; st < EM_NSTATUS; st++)
        for (int f = 0; f <= c->with_final; f++)
            counter_locked(c, h, st, f);
    pthread_mutex_unlock(&c->lock);
}

void em_result_counts_add(em_result_counts_t *c, const uint8_t *handler, size_t handler_len, int status, int final) {
    if (!handler || !handler_len) { /* a result that names no handler (an older executor's) */
        handler = (const uint8_t *)"";
        handler_len = 0;
    }
    if (status < 0 || status >= EM_NSTATUS)
        status = 0;
    final = !!final;
    /* the common case without the lock: a handler and status seen before */
    rc_handler_t *seen = handler_find(c, handler, handler_len);
    em_metric_t *x = seen ? atomic_load(&seen->m[status][c->with_final ? final : 0]) : NULL;
    if (x) {
        em_metric_add(x, 1);
        return;
    }
    pthread_mutex_lock(&c->lock);
    em_metric_t *m = counter_locked(c, handler_locked(c, handler, handler_len), status, !!final);
    pthread_mutex_unlock(&c->lock);
    if (m)
        em_metric_add(m, 1);
}
