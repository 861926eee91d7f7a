/* SPDX-License-Identifier: Apache-2.0 */
/* Blockers → status, and the watchers told of every change. */
#include "em_health.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_log.h"
#include "grpc/health/v1/health.pb-c.h"

#define EM_HEALTH_MAX_NAMES 8
#define EM_HEALTH_MAX_BLOCKERS 16

struct em_health_watch {
    struct em_health_watch *next;
    char *name;
    em_health_watch_fn fn;
    void *arg;
};

struct em_health {
    pthread_mutex_t lock;
    char *names[EM_HEALTH_MAX_NAMES];
    int nnames;
    char *blockers[EM_HEALTH_MAX_BLOCKERS];
    int nblockers;
    int draining;
    em_health_watch_t *watches;
};

em_health_t *em_health_new(void) {
    em_health_t *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    pthread_mutex_init(&h->lock, NULL);
    h->blockers[0] = strdup(EM_HEALTH_STARTING);
    if (!h->blockers[0]) {
        free(h);
        return NULL;
    }
    h->nblockers = 1;
    return h;
}

void em_health_destroy(em_health_t *h) {
    if (!h)
        return;
    for (int i = 0; i < h->nnames; i++)
        free(h->names[i]);
    for (int i = 0; i < h->nblockers; i++)
        free(h->blockers[i]);
    while (h->watches) {
        em_health_watch_t *w = h->watches;
        h->watches = w->next;
        free(w->name);
        free(w);
    }
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static int has_name(const em_health_t *h, const char *name) {
    for (int i = 0; i < h->nnames; i++)
        if (strcmp(h->names[i], name) == 0)
            return 1;
    return 0;
}

static em_health_status_t status_locked(const em_health_t *h, const char *name) {
    if (!has_name(h, name))
        return EM_HEALTH_SERVICE_UNKNOWN;
    return h->nblockers ? EM_HEALTH_NOT_SERVING : EM_HEALTH_SERVING;
}

em_err_t em_health_add_service(em_health_t *h, const char *name) {
    em_err_t rc = EM_OK;
    pthread_mutex_lock(&h->lock);
    if (has_name(h, name))
        goto out;
    if (h->nnames == EM_HEALTH_MAX_NAMES) {
        rc = EM_EINVAL;
        goto out;
    }
    if (!(h->names[h->nnames] = strdup(name))) {
        rc = EM_ENOMEM;
        goto out;
    }
    h->nnames++;
    for (em_health_watch_t *w = h->watches; w; w = w->next)
        if (strcmp(w->name, name) == 0)
            w->fn(w->arg, status_locked(h, name));
out:
    pthread_mutex_unlock(&h->lock);
    return rc;
}

void em_health_block(em_health_t *h, const char *reason, int blocked) {
    int idx = -1;
    pthread_mutex_lock(&h->lock);
    int was_blocked = h->nblockers > 0;
    for (int i = 0; i < h->nblockers; i++)
        if (strcmp(h->blockers[i], reason) == 0)
            idx = i;
    if (blocked && idx < 0 && h->nblockers < EM_HEALTH_MAX_BLOCKERS) {
        char *r = strdup(reason);
        if (r)
            h->blockers[h->nblockers++] = r;
    } else if (!blocked && idx >= 0 && strcmp(reason, EM_HEALTH_DRAINING) != 0) {
        free(h->blockers[idx]);
        h->blockers[idx] = h->blockers[--h->nblockers];
    }
    int now_blocked = h->nblockers > 0;
    if (was_blocked != now_blocked) {
        EM_INFO("health changed", EM_F_STR("status", now_blocked ? "NOT_SERVING" : "SERVING"),
                EM_F_STR("reason", reason), EM_F_BOOL("blocked", blocked));
        for (em_health_watch_t *w = h->watches; w; w = w->next)
            w->fn(w->arg, status_locked(h, w->name));
    }
    pthread_mutex_unlock(&h->lock);
}

em_err_t em_health_get(em_health_t *h, const char *name, em_health_status_t *status) {
    pthread_mutex_lock(&h->lock);
    em_health_status_t s = status_locked(h, name);
    pthread_mutex_unlock(&h->lock);
    *status = s;
    return s == EM_HEALTH_SERVICE_UNKNOWN ? EM_ENOTFOUND : EM_OK;
}

em_health_status_t em_health_overall(em_health_t *h) {
    pthread_mutex_lock(&h->lock);
    em_health_status_t s = h->nblockers ? EM_HEALTH_NOT_SERVING : EM_HEALTH_SERVING;
    pthread_mutex_unlock(&h->lock);
    return s;
}

void em_health_blockers(em_health_t *h, char *buf, size_t n) {
    size_t o = 0;
    if (n == 0)
        return;
    buf[0] = '\0';
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->nblockers && o < n; i++) {
        int w = snprintf(buf + o, n - o, "%s%s", i ? "," : "", h->blockers[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    pthread_mutex_unlock(&h->lock);
}

em_health_watch_t *em_health_watch(em_health_t *h, const char *name, em_health_watch_fn fn, void *arg) {
    em_health_watch_t *w = calloc(1, sizeof(*w));
    if (!w || !(w->name = strdup(name))) {
        free(w);
        return NULL;
    }
    w->fn = fn;
    w->arg = arg;
    pthread_mutex_lock(&h->lock);
    w->next = h->watches;
    h->watches = w;
    fn(arg, status_locked(h, name));
    pthread_mutex_unlock(&h->lock);
    return w;
}

void em_health_unwatch(em_health_t *h, em_health_watch_t *w) {
    if (!w)
        return;
    pthread_mutex_lock(&h->lock);
    for (em_health_watch_t **p = &h->watches; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    pthread_mutex_unlock(&h->lock);
    free(w->name);
    free(w);
}

const char *em_health_status_name(em_health_status_t s) {
    switch (s) {
    case EM_HEALTH_UNKNOWN: return "UNKNOWN";
    case EM_HEALTH_SERVING: return "SERVING";
    case EM_HEALTH_NOT_SERVING: return "NOT_SERVING";
    case EM_HEALTH_SERVICE_UNKNOWN: return "SERVICE_UNKNOWN";
    }
    return "?";
}

em_err_t em_health_request_decode(const uint8_t *req, size_t len, char **service) {
    *service = NULL;
    Grpc__Health__V1__HealthCheckRequest *in = grpc__health__v1__health_check_request__unpack(NULL, len, req);
    if (!in)
        return EM_EINVAL;
    *service = strdup(in->service);
    grpc__health__v1__health_check_request__free_unpacked(in, NULL);
    return *service ? EM_OK : EM_ENOMEM;
}
