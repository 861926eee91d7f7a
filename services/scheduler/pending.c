/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Items (one per execution read from Kafka) and the pending queue. The
 * queue is one FIFO per handler ("class"), created when a handler is first
 * seen (past SC_MAX_CLASSES handlers, the rest share class 0), and the
 * classes with executions waiting form a ring that dispatch serves in turn:
 * a handler whose resource is throttled, or that an executor said is at its
 * concurrency, waits without holding up the others. npending counts every
 * queue. Every function named *_locked runs with s->lock held.
 */
#include <stdlib.h>
#include <string.h>

#include "em_log.h"
#include "em_util.h"
#include "scheduler.h"

#define SC_MAX_FREE_ITEMS 65536

sc_item_t *sc_item_new_locked(scheduler_t *s) {
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
    sc_item_settled_locked(s, it, 0);
    if (it->raw)
        rd_kafka_message_destroy(it->raw);
    if (it->has_body)
        grpc_slice_unref(it->body);
    free(it->dead_reason);
    it->dead_reason = NULL;
    free(it->out_rec);
    it->out_rec = NULL;
    if (s->nfree_items < SC_MAX_FREE_ITEMS) {
        it->next = s->free_items;
        s->free_items = it;
        s->nfree_items++;
    } else {
        free(it);
    }
}

void sc_item_done_locked(scheduler_t *s, sc_item_t *it, int durable) {
    sc_part_t *p = it->part;
    if (durable && p->owned)
        em_watermark_done(p->wm, it->seq);
    p->inflight--;
    if (p->inflight == 0)
        p->progress_ms = em_mono_ms(); /* the stall watchdog's clock starts when it holds nothing */
    if (!p->owned || p->revoking)
        pthread_cond_broadcast(&s->cond);
    if (!p->owned && p->inflight == 0)
        sc_part_free(p);
    item_free_locked(s, it);
}

/* ---- classes ------------------------------------------------------------ */

static sc_class_t *class_make(scheduler_t *s, const uint8_t *h, size_t n, uint32_t hash) {
    sc_class_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->handler = malloc(n + 1))) {
        free(c);
        return NULL;
    }
    memcpy(c->handler, h, n);
    c->handler[n] = 0;
    c->len = n;
    c->hash = hash;
    /* the resources the configuration names for this handler */
    for (int i = 0; i < s->nhres; i++)
        if (strlen(s->hres[i].handler) == n && memcmp(s->hres[i].handler, h, n) == 0) {
            c->nres = s->hres[i].nres;
            memcpy(c->res, s->hres[i].res, sizeof(c->res));
        }
    return c;
}

static int slots_grow(scheduler_t *s) {
    int n = s->nslots ? s->nslots * 2 : 64;
    int *t = calloc((size_t)n, sizeof(*t));
    if (!t)
        return -1;
    for (int k = 1; k < s->nclasses; k++) {
        uint32_t i = s->classes[k]->hash & (uint32_t)(n - 1);
        while (t[i])
            i = (i + 1) & (uint32_t)(n - 1);
        t[i] = k + 1;
    }
    free(s->class_slots);
    s->class_slots = t;
    s->nslots = n;
    return 0;
}

int sc_class_of_locked(scheduler_t *s, const uint8_t *h, size_t n) {
    uint32_t hash = (uint32_t)em_fnv1a(h, n);
    if (s->nslots) {
        uint32_t mask = (uint32_t)(s->nslots - 1);
        for (uint32_t i = hash & mask; s->class_slots[i]; i = (i + 1) & mask) {
            sc_class_t *c = s->classes[s->class_slots[i] - 1];
            if (c->hash == hash && c->len == n && memcmp(c->handler, h, n) == 0)
                return s->class_slots[i] - 1;
        }
    }
    if (s->nclasses >= SC_MAX_CLASSES)
        return 0;
    if ((s->nclasses + 1) * 2 > s->nslots && slots_grow(s) != 0)
        return 0;
    if (em_grow(&s->classes, &s->cap_classes, (size_t)s->nclasses + 1, sizeof(*s->classes)) != 0)
        return 0;
    sc_class_t *c = class_make(s, h, n, hash);
    if (!c)
        return 0;
    int k = s->nclasses++;
    s->classes[k] = c;
    uint32_t mask = (uint32_t)(s->nslots - 1), i = hash & mask;
    while (s->class_slots[i])
        i = (i + 1) & mask;
    s->class_slots[i] = k + 1;
    return k;
}

static void ring_link(scheduler_t *s, sc_class_t *c) {
    c->active = 1;
    if (!s->act) {
        c->act_next = c->act_prev = c;
        s->act = c;
        return;
    }
    /* joins just before the one served next: served last in this turn */
    c->act_next = s->act;
    c->act_prev = s->act->act_prev;
    c->act_prev->act_next = c;
    s->act->act_prev = c;
}

static void ring_unlink(scheduler_t *s, sc_class_t *c) {
    c->active = 0;
    if (c->act_next == c) {
        s->act = NULL;
    } else {
        c->act_prev->act_next = c->act_next;
        c->act_next->act_prev = c->act_prev;
        if (s->act == c)
            s->act = c->act_next;
    }
    c->act_next = c->act_prev = NULL;
}

static void queued(scheduler_t *s, sc_class_t *c, int delta) {
    c->n += delta;
    s->npending += delta;
    if (c->nres)
        sc_resources_queued_locked(s, c, delta);
    if (c->n > 0 && !c->active)
        ring_link(s, c);
    else if (c->n == 0 && c->active)
        ring_unlink(s, c);
}

/* ---- a handler's window --------------------------------------------------
 * An executor that refuses a handler's execution (its concurrency there is
 * full) sets the handler's window to what the executors hold of it now;
 * each execution of it that finishes frees its place in the window and ends
 * the backoff (a slot is free again), and a window's worth of them opens
 * the window by one (probing for more executors or slots), so the next
 * batches carry about what the executors can take instead of a refusal for
 * most of each batch. A window that grew past dispatch.max_inflight is
 * lifted. */

void sc_item_settled_locked(scheduler_t *s, sc_item_t *it, int ran) {
    if (it->dispatched) {
        sc_class_t *c = s->classes[it->cls];
        it->dispatched = 0;
        c->inflight--;
        if (ran && c->window) {
            c->busy_until_ms = 0;
            if (++c->window_acked >= c->window) { /* a window's worth finished: try one more */
                c->window_acked = 0;
                if (++c->window > s->max_inflight)
                    c->window = 0;
            }
        }
    }
    sc_resources_release_locked(s, it);
}

void sc_class_refused_locked(scheduler_t *s, sc_class_t *c, int64_t until_ms) {
    (void)s;
    c->window = c->inflight > 0 ? c->inflight : 1;
    c->window_acked = 0;
    c->busy_until_ms = until_ms;
}

/* ---- the queues --------------------------------------------------------- */

void sc_pending_push_back_locked(scheduler_t *s, sc_item_t *it) {
    sc_class_t *c = s->classes[it->cls];
    it->next = NULL;
    if (c->tail)
        c->tail->next = it;
    else
        c->head = it;
    c->tail = it;
    queued(s, c, 1);
}

void sc_pending_push_front_locked(scheduler_t *s, sc_item_t **items, int n) {
    for (int i = n - 1; i >= 0; i--) {
        sc_class_t *c = s->classes[items[i]->cls];
        items[i]->next = c->head;
        c->head = items[i];
        if (!c->tail)
            c->tail = items[i];
        queued(s, c, 1);
    }
}

sc_item_t *sc_pending_pop_locked(scheduler_t *s, sc_class_t *c) {
    sc_item_t *it = c->head;
    if (!it)
        return NULL;
    c->head = it->next;
    if (!c->head)
        c->tail = NULL;
    it->next = NULL;
    queued(s, c, -1);
    return it;
}

void sc_pending_drop_revoking_locked(scheduler_t *s) {
    for (int k = 0; k < s->nclasses; k++) {
        sc_class_t *c = s->classes[k];
        sc_item_t **pp = &c->head;
        c->tail = NULL;
        while (*pp) {
            sc_item_t *it = *pp;
            if (it->part->revoking) {
                *pp = it->next;
                queued(s, c, -1);
                sc_item_done_locked(s, it, 0);
            } else {
                c->tail = it;
                pp = &it->next;
            }
        }
    }
    sc_resources_drop_parked_locked(s);
}

void sc_items_release_all(scheduler_t *s) {
    for (int k = 0; k < s->nclasses; k++) {
        sc_class_t *c = s->classes[k];
        while (c->head) {
            sc_item_t *it = sc_pending_pop_locked(s, c);
            item_free_locked(s, it); /* recycled or freed; the recycled are freed below */
        }
    }
    for (int i = 0; i < s->nparts; i++) {
        sc_part_t *p = s->parts[i];
        while (p && p->park_head) {
            sc_item_t *it = p->park_head;
            p->park_head = it->next;
            item_free_locked(s, it);
        }
        if (p) {
            p->park_tail = NULL;
            p->nparked = 0;
        }
    }
    s->npending = 0;
    while (s->free_items) {
        sc_item_t *it = s->free_items;
        s->free_items = it->next;
        free(it);
    }
    s->nfree_items = 0;
    for (int k = 0; k < s->nclasses; k++) {
        free(s->classes[k]->handler);
        free(s->classes[k]);
    }
    free(s->classes);
    s->classes = NULL;
    s->nclasses = s->cap_classes = 0;
    free(s->class_slots);
    s->class_slots = NULL;
    s->nslots = 0;
    s->act = NULL;
}
