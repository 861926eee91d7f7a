/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A growable ring of (offset, done) indexed by a sequence number: tracking
 * and finishing are O(1), advancing the watermark is amortised O(1).
 */
#include "em_watermark.h"

#include <stdlib.h>
#include <string.h>

typedef struct em_wm_slot {
    int64_t offset;
    int64_t stamp;
    uint8_t done;
} em_wm_slot_t;

struct em_watermark {
    em_wm_slot_t *ring;
    size_t cap;         /* a power of two */
    uint64_t head;      /* oldest slot still pending */
    uint64_t tail;      /* next seq to hand out */
    int64_t last;       /* largest offset tracked, -1 before any */
    int64_t committable;
};

em_watermark_t *em_watermark_new(void) {
    em_watermark_t *wm = calloc(1, sizeof(*wm));
    if (!wm)
        return NULL;
    wm->cap = 64;
    wm->ring = calloc(wm->cap, sizeof(*wm->ring));
    if (!wm->ring) {
        free(wm);
        return NULL;
    }
    wm->last = -1;
    wm->committable = -1;
    return wm;
}

void em_watermark_destroy(em_watermark_t *wm) {
    if (!wm)
        return;
    free(wm->ring);
    free(wm);
}

static em_err_t grow(em_watermark_t *wm) {
    size_t ncap = wm->cap * 2;
    em_wm_slot_t *nr = calloc(ncap, sizeof(*nr));
    if (!nr)
        return EM_ENOMEM;
    for (uint64_t s = wm->head; s < wm->tail; s++)
        nr[s & (ncap - 1)] = wm->ring[s & (wm->cap - 1)];
    free(wm->ring);
    wm->ring = nr;
    wm->cap = ncap;
    return EM_OK;
}

em_err_t em_watermark_track(em_watermark_t *wm, int64_t offset, uint64_t *seq) {
    return em_watermark_track_stamped(wm, offset, 0, seq);
}

em_err_t em_watermark_track_stamped(em_watermark_t *wm, int64_t offset, int64_t stamp, uint64_t *seq) {
    if (offset <= wm->last || offset < 0)
        return EM_EINVAL;
    if (wm->tail - wm->head == wm->cap && grow(wm) != EM_OK)
        return EM_ENOMEM;
    em_wm_slot_t *s = &wm->ring[wm->tail & (wm->cap - 1)];
    s->offset = offset;
    s->stamp = stamp;
    s->done = 0;
    wm->last = offset;
    *seq = wm->tail++;
    return EM_OK;
}

em_err_t em_watermark_untrack_last(em_watermark_t *wm, uint64_t seq) {
    if (wm->tail == wm->head || seq != wm->tail - 1 || wm->ring[seq & (wm->cap - 1)].done)
        return EM_EINVAL;
    wm->tail--;
    /* the largest offset still tracked, else the last finished one */
    wm->last = wm->tail > wm->head ? wm->ring[(wm->tail - 1) & (wm->cap - 1)].offset
                                   : (wm->committable >= 0 ? wm->committable - 1 : -1);
    return EM_OK;
}

em_err_t em_watermark_done(em_watermark_t *wm, uint64_t seq) {
    if (seq < wm->head || seq >= wm->tail)
        return EM_EINVAL;
    em_wm_slot_t *s = &wm->ring[seq & (wm->cap - 1)];
    if (s->done)
        return EM_EINVAL;
    s->done = 1;
    while (wm->head < wm->tail) {
        em_wm_slot_t *h = &wm->ring[wm->head & (wm->cap - 1)];
        if (!h->done)
            break;
        wm->committable = h->offset + 1;
        wm->head++;
    }
    return EM_OK;
}

int64_t em_watermark_committable(const em_watermark_t *wm) { return wm->committable; }

size_t em_watermark_pending(const em_watermark_t *wm) { return (size_t)(wm->tail - wm->head); }

int64_t em_watermark_oldest_stamp(const em_watermark_t *wm) {
    return wm->head < wm->tail ? wm->ring[wm->head & (wm->cap - 1)].stamp : -1;
}
