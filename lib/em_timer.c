/* SPDX-License-Identifier: Apache-2.0 */
/* A binary min-heap of deadlines served by one thread. */
#include "em_timer.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "em_util.h"

typedef struct em_timer_ent {
    int64_t due_ns;
    uint64_t order; /* FIFO among equal deadlines */
    em_timer_fn fn;
    void *arg;
} em_timer_ent_t;

struct em_timers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    int running;
    em_timer_ent_t *heap;
    size_t n, cap;
    uint64_t order;
};

static int before(const em_timer_ent_t *a, const em_timer_ent_t *b) {
    return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->order < b->order);
}

static void sift_up(em_timers_t *t, size_t i) {
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&t->heap[i], &t->heap[parent]))
            break;
        em_timer_ent_t tmp = t->heap[i];
        t->heap[i] = t->heap[parent];
        t->heap[parent] = tmp;
        i = parent;
    }
}

static void sift_down(em_timers_t *t, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->n && before(&t->heap[l], &t->heap[m]))
            m = l;
        if (r < t->n && before(&t->heap[r], &t->heap[m]))
            m = r;
        if (m == i)
            return;
        em_timer_ent_t tmp = t->heap[i];
        t->heap[i] = t->heap[m];
        t->heap[m] = tmp;
        i = m;
    }
}

static void *timer_main(void *arg) {
    em_timers_t *t = arg;
    pthread_mutex_lock(&t->lock);
    while (t->running) {
        if (t->n == 0) {
            pthread_cond_wait(&t->cond, &t->lock);
            continue;
        }
        int64_t now = em_mono_ns();
        if (t->heap[0].due_ns > now) {
            /* the condvar uses CLOCK_MONOTONIC (see em_timers_new) */
            struct timespec ts = {.tv_sec = t->heap[0].due_ns / 1000000000,
                                  .tv_nsec = t->heap[0].due_ns % 1000000000};
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
            continue;
        }
        em_timer_ent_t e = t->heap[0];
        t->heap[0] = t->heap[--t->n];
        sift_down(t, 0);
        pthread_mutex_unlock(&t->lock);
        e.fn(e.arg);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

em_timers_t *em_timers_new(void) {
    em_timers_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    em_cond_init(&t->cond);
    pthread_mutex_init(&t->lock, NULL);
    t->running = 1;
    if (pthread_create(&t->thread, NULL, timer_main, t) != 0) {
        pthread_cond_destroy(&t->cond);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return NULL;
    }
    return t;
}

void em_timers_destroy(em_timers_t *t) {
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->running = 0;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    while (t->n > 0) {
        em_timer_ent_t e = t->heap[0];
        t->heap[0] = t->heap[--t->n];
        sift_down(t, 0);
        e.fn(e.arg);
    }
    free(t->heap);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

em_err_t em_timer_after(em_timers_t *t, int64_t delay_ms, em_timer_fn fn, void *arg) {
    em_err_t rc = EM_OK;
    pthread_mutex_lock(&t->lock);
    if (!t->running) {
        rc = EM_ESHUTDOWN;
        goto out;
    }
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 64;
        em_timer_ent_t *nh = realloc(t->heap, ncap * sizeof(*nh));
        if (!nh) {
            rc = EM_ENOMEM;
            goto out;
        }
        t->heap = nh;
        t->cap = ncap;
    }
    t->heap[t->n] = (em_timer_ent_t){
        .due_ns = em_mono_ns() + (delay_ms > 0 ? delay_ms : 0) * 1000000, .order = t->order++, .fn = fn, .arg = arg};
    sift_up(t, t->n);
    t->n++;
    if (t->heap[0].fn == fn && t->heap[0].arg == arg)
        pthread_cond_signal(&t->cond);
out:
    pthread_mutex_unlock(&t->lock);
    return rc;
}

int em_timers_pending(em_timers_t *t) {
    pthread_mutex_lock(&t->lock);
    int n = (int)t->n;
    pthread_mutex_unlock(&t->lock);
    return n;
}
