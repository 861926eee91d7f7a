/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_watermark: the committable offset only ever covers a
 * finished prefix, whatever order offsets finish in, with gaps between
 * offsets and across ring growth. Long random runs are checked step by step
 * against a plain array model; the seed is fixed so a failure repeats.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "em_util.h"
#include "em_watermark.h"

/* ---- a reference model: offsets in tracking order, a done flag each ---- */

typedef struct model {
    int64_t *offsets;
    uint8_t *done;
    size_t tracked;  /* offsets tracked so far */
    size_t prefix;   /* length of the finished prefix */
} model_t;

static void model_init(model_t *m, size_t cap) {
    m->offsets = calloc(cap, sizeof(*m->offsets));
    m->done = calloc(cap, 1);
    assert_non_null(m->offsets);
    assert_non_null(m->done);
    m->tracked = m->prefix = 0;
}

static void model_cleanup(model_t *m) {
    free(m->offsets);
    free(m->done);
}

static void model_done(model_t *m, size_t seq) {
    m->done[seq] = 1;
    while (m->prefix < m->tracked && m->done[m->prefix])
        m->prefix++;
}

static int64_t model_committable(const model_t *m) {
    return m->prefix ? m->offsets[m->prefix - 1] + 1 : -1;
}

/* Checks wm against m, naming the step on a mismatch. */
static void check_model(const em_watermark_t *wm, const model_t *m, size_t step) {
    if (em_watermark_committable(wm) != model_committable(m))
        fail_msg("step %zu: committable %lld, model %lld", step, (long long)em_watermark_committable(wm),
                 (long long)model_committable(m));
    if (em_watermark_pending(wm) != m->tracked - m->prefix)
        fail_msg("step %zu: pending %zu, model %zu", step, em_watermark_pending(wm), m->tracked - m->prefix);
}

/* xorshift64*: a fixed, libc-independent sequence */
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static void shuffle(size_t *v, size_t n, uint64_t *seed) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_next(seed) % i);
        size_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* ---- tests ---------------------------------------------------------------- */

static void nothing_committable_before_a_done(void **state) {
    (void)state;
    em_watermark_t *wm = em_watermark_new();
    uint64_t seq;
    assert_non_null(wm);
    assert_int_equal(em_watermark_committable(wm), -1);
    assert_int_equal(em_watermark_pending(wm), 0);
    for (int64_t off = 100; off < 103; off++) {
        assert_int_equal(em_watermark_track(wm, off, &seq), EM_OK);
        assert_int_equal(em_watermark_committable(wm), -1);
    }
    assert_int_equal(em_watermark_pending(wm), 3);
    em_watermark_destroy(wm);
    em_watermark_destroy(NULL);
}

static void first_offset_may_be_zero(void **state) {
    (void)state;
    em_watermark_t *wm = em_watermark_new();
    uint64_t seq;
    assert_int_equal(em_watermark_track(wm, 0, &seq), EM_OK);
    assert_int_equal(em_watermark_done(wm, seq), EM_OK);
    assert_int_equal(em_watermark_committable(wm), 1);
    assert_int_equal(em_watermark_pending(wm), 0);
    em_watermark_destroy(wm);
}

/* One scenario: offsets tracked in order, then finished by index in
 * `order`; after each done, the expected committable offset and pending. */
#define WM_MAX 8
typedef struct wm_case {
    const char *name;
    int64_t offsets[WM_MAX];
    size_t n;
    size_t order[WM_MAX];
    int64_t committable[WM_MAX];
    size_t pending[WM_MAX];
} wm_case_t;

static const wm_case_t wm_cases[] = {
    {"in order", {1, 2, 3}, 3, {0, 1, 2}, {2, 3, 4}, {2, 1, 0}},
    {"3,1,2", {1, 2, 3}, 3, {2, 0, 1}, {-1, 2, 4}, {3, 2, 0}},
    {"1,3,2", {1, 2, 3}, 3, {0, 2, 1}, {2, 2, 4}, {2, 2, 0}},
    {"reverse", {1, 2, 3, 4}, 4, {3, 2, 1, 0}, {-1, -1, -1, 5}, {4, 4, 4, 0}},
    {"gaps in order", {10, 11, 15, 20}, 4, {0, 1, 2, 3}, {11, 12, 16, 21}, {3, 2, 1, 0}},
    {"gaps out of order", {10, 11, 15, 20}, 4, {1, 0, 3, 2}, {-1, 12, 12, 21}, {4, 2, 2, 0}},
    {"gap then last first", {10, 11, 15, 20}, 4, {3, 2, 0, 1}, {-1, -1, 11, 21}, {4, 4, 3, 0}},
    {"middle first", {5, 6, 7}, 3, {1, 0, 2}, {-1, 7, 8}, {3, 1, 0}},
    {"huge offsets", {INT64_MAX - 3, INT64_MAX - 1}, 2, {1, 0}, {-1, INT64_MAX}, {2, 0}},
};

static void completions_advance_only_over_a_finished_prefix(void **state) {
    (void)state;
    for (size_t c = 0; c < EM_ARRAY_LEN(wm_cases); c++) {
        const wm_case_t *k = &wm_cases[c];
        em_watermark_t *wm = em_watermark_new();
        uint64_t seqs[WM_MAX];
        assert_non_null(wm);
        for (size_t i = 0; i < k->n; i++)
            if (em_watermark_track(wm, k->offsets[i], &seqs[i]) != EM_OK)
                fail_msg("%s: track %lld refused", k->name, (long long)k->offsets[i]);
        for (size_t i = 0; i < k->n; i++) {
            if (em_watermark_done(wm, seqs[k->order[i]]) != EM_OK)
                fail_msg("%s: done #%zu refused", k->name, i);
            if (em_watermark_committable(wm) != k->committable[i])
                fail_msg("%s: after done #%zu committable %lld, want %lld", k->name, i,
                         (long long)em_watermark_committable(wm), (long long)k->committable[i]);
            if (em_watermark_pending(wm) != k->pending[i])
                fail_msg("%s: after done #%zu pending %zu, want %zu", k->name, i, em_watermark_pending(wm),
                         k->pending[i]);
        }
        em_watermark_destroy(wm);
    }
}

static void tracking_after_a_full_prefix_continues(void **state) {
    (void)state;
    em_watermark_t *wm = em_watermark_new();
    uint64_t a, b;
    assert_int_equal(em_watermark_track(wm, 7, &a), EM_OK);
    assert_int_equal(em_watermark_done(wm, a), EM_OK);
    assert_int_equal(em_watermark_committable(wm), 8);
    /* a new pending offset does not pull the watermark back */
    assert_int_equal(em_watermark_track(wm, 12, &b), EM_OK);
    assert_int_equal(em_watermark_committable(wm), 8);
    assert_int_equal(em_watermark_pending(wm), 1);
    assert_int_equal(em_watermark_done(wm, b), EM_OK);
    assert_int_equal(em_watermark_committable(wm), 13);
    em_watermark_destroy(wm);
}

#define BIG 10000

static void ten_thousand_shuffled_match_the_model(void **state) {
    (void)state;
    em_watermark_t *wm = em_watermark_new();
    uint64_t *seqs = calloc(BIG, sizeof(*seqs));
    size_t *order = calloc(BIG, sizeof(*order));
    uint64_t seed = 0x5eed1234abcdULL;
    model_t m;
    assert_non_null(wm);
    assert_non_null(seqs);
    assert_non_null(order);
    model_init(&m, BIG);

    /* offsets with gaps of 1..4, tracked all at once: the ring grows from
     * its initial size well past 10,000 slots */
    int64_t off = 1000;
    for (size_t i = 0; i < BIG; i++) {
        off += 1 + (int64_t)(rng_next(&seed) % 4);
        assert_int_equal(em_watermark_track(wm, off, &seqs[i]), EM_OK);
        m.offsets[m.tracked++] = off;
        order[i] = i;
    }
    check_model(wm, &m, 0);
    shuffle(order, BIG, &seed);
    for (size_t i = 0; i < BIG; i++) {
        assert_int_equal(em_watermark_done(wm, seqs[order[i]]), EM_OK);
        model_done(&m, order[i]);
        check_model(wm, &m, i + 1);
    }
    assert_int_equal(em_watermark_committable(wm), m.offsets[BIG - 1] + 1);
    assert_int_equal(em_watermark_pending(wm), 0);

    model_cleanup(&m);
    free(order);
    free(seqs);
    em_watermark_destroy(wm);
}

/* Tracking and finishing interleaved at random, so the ring grows while
 * its live part wraps around the end of the array. */
static void interleaved_with_wraparound_match_the_model(void **state) {
    (void)state;
    em_watermark_t *wm = em_watermark_new();
    uint64_t *seqs = calloc(BIG, sizeof(*seqs));
    size_t *open = calloc(BIG, sizeof(*open)); /* tracked, not yet done */
    size_t nopen = 0;
    uint64_t seed = 42;
    model_t m;
    assert_non_null(wm);
    assert_non_null(seqs);
    assert_non_null(open);
    model_init(&m, BIG);

    int64_t off = 0;
    size_t step = 0;
    while (m.tracked < BIG || nopen > 0) {
        /* track with probability 5/8 while offsets remain: the backlog
         * climbs into the thousands */
        int track = m.tracked < BIG && (nopen == 0 || rng_next(&seed) % 8 < 5);
        if (track) {
            off += 1 + (int64_t)(rng_next(&seed) % 3);
            assert_int_equal(em_watermark_track(wm, off, &seqs[m.tracked]), EM_OK);
            open[nopen++] = m.tracked;
            m.offsets[m.tracked++] = off;
        } else {
            size_t j = (size_t)(rng_next(&seed) % nopen);
            size_t idx = open[j];
            open[j] = open[--nopen];
            assert_int_equal(em_watermark_done(wm, seqs[idx]), EM_OK);
            model_done(&m, idx);
        }
        check_model(wm, &m, ++step);
    }
    assert_int_equal(em_watermark_committable(wm), off + 1);

    model_cleanup(&m);
    free(open);
    free(seqs);
    em_watermark_destroy(wm);
}

/* The ring grows while head sits in the middle of it (a deterministic
 * version of the wrap-around case). */
static void growth_with_a_moved_head(void **state) {
    (void)state;
    em_watermark_t *wm = em_watermark_new();
    uint64_t seqs[300];
    model_t m;
    model_init(&m, 300);
    for (size_t i = 0; i < 40; i++) {
        assert_int_equal(em_watermark_track(wm, (int64_t)i * 10, &seqs[i]), EM_OK);
        m.offsets[m.tracked++] = (int64_t)i * 10;
    }
    for (size_t i = 0; i < 30; i++) {
        assert_int_equal(em_watermark_done(wm, seqs[i]), EM_OK);
        model_done(&m, i);
    }
    check_model(wm, &m, 0);
    for (size_t i = 40; i < 300; i++) {
        assert_int_equal(em_watermark_track(wm, (int64_t)i * 10, &seqs[i]), EM_OK);
        m.offsets[m.tracked++] = (int64_t)i * 10;
        check_model(wm, &m, i);
    }
    /* the odd ones from the back (nothing moves), then the even ones from
     * the front: the watermark steps over every slot the growth moved */
    for (size_t i = 299; i >= 30; i--) {
        if (i % 2 == 0)
            continue;
        assert_int_equal(em_watermark_done(wm, seqs[i]), EM_OK);
        model_done(&m, i);
        check_model(wm, &m, i);
    }
    for (size_t i = 30; i < 300; i += 2) {
        assert_int_equal(em_watermark_done(wm, seqs[i]), EM_OK);
        model_done(&m, i);
        check_model(wm, &m, i);
    }
    assert_int_equal(em_watermark_committable(wm), 2991);
    model_cleanup(&m);
    em_watermark_destroy(wm);
}

static void refusals_leave_the_state_alone(void **state) {
    (void)state;
    em_watermark_t *wm = em_watermark_new();
    uint64_t s0, s1, s2, unused = 777;

    /* unknown seq with nothing tracked */
    assert_int_equal(em_watermark_done(wm, 0), EM_EINVAL);
    assert_int_equal(em_watermark_track(wm, -1, &unused), EM_EINVAL);
    assert_int_equal(unused, 777);

    assert_int_equal(em_watermark_track(wm, 10, &s0), EM_OK);
    assert_int_equal(em_watermark_track(wm, 11, &s1), EM_OK);
    assert_int_equal(em_watermark_track(wm, 15, &s2), EM_OK);

    /* non-increasing offsets */
    static const int64_t bad_offsets[] = {15, 14, 11, 10, 0, -1, INT64_MIN};
    for (size_t i = 0; i < EM_ARRAY_LEN(bad_offsets); i++) {
        if (em_watermark_track(wm, bad_offsets[i], &unused) != EM_EINVAL)
            fail_msg("track %lld after 15 accepted", (long long)bad_offsets[i]);
        assert_int_equal(unused, 777);
    }
    assert_int_equal(em_watermark_pending(wm), 3);

    /* seqs never handed out */
    assert_int_equal(em_watermark_done(wm, s2 + 1), EM_EINVAL);
    assert_int_equal(em_watermark_done(wm, UINT64_MAX), EM_EINVAL);

    /* double done: once while still above the watermark ... */
    assert_int_equal(em_watermark_done(wm, s1), EM_OK);
    assert_int_equal(em_watermark_done(wm, s1), EM_EINVAL);
    assert_int_equal(em_watermark_committable(wm), -1);
    assert_int_equal(em_watermark_pending(wm), 3);
    /* ... and once after the watermark passed it */
    assert_int_equal(em_watermark_done(wm, s0), EM_OK);
    assert_int_equal(em_watermark_committable(wm), 12);
    assert_int_equal(em_watermark_done(wm, s0), EM_EINVAL);
    assert_int_equal(em_watermark_done(wm, s1), EM_EINVAL);
    assert_int_equal(em_watermark_committable(wm), 12);
    assert_int_equal(em_watermark_pending(wm), 1);

    /* still usable after every refusal */
    assert_int_equal(em_watermark_track(wm, 16, &unused), EM_OK);
    assert_int_equal(em_watermark_done(wm, s2), EM_OK);
    assert_int_equal(em_watermark_committable(wm), 16);
    assert_int_equal(em_watermark_done(wm, unused), EM_OK);
    assert_int_equal(em_watermark_committable(wm), 17);
    assert_int_equal(em_watermark_pending(wm), 0);
    em_watermark_destroy(wm);
}

/* The oldest unfinished offset's stamp follows the head across growth and
 * out-of-order completions; -1 once everything is finished. */
static void oldest_stamp_is_the_first_unfinished(void **state) {
    (void)state;
    em_watermark_t *wm = em_watermark_new();
    uint64_t seq[200];
    assert_int_equal(em_watermark_oldest_stamp(wm), -1);
    for (int i = 0; i < 200; i++) /* past the initial ring of 64: it grows */
        assert_int_equal(em_watermark_track_stamped(wm, 100 + 2 * i, 1000 + i, &seq[i]), EM_OK);
    assert_int_equal(em_watermark_oldest_stamp(wm), 1000);
    /* finishing later ones first moves nothing */
    for (int i = 199; i >= 100; i--)
        assert_int_equal(em_watermark_done(wm, seq[i]), EM_OK);
    assert_int_equal(em_watermark_oldest_stamp(wm), 1000);
    for (int i = 0; i < 99; i++) {
        assert_int_equal(em_watermark_done(wm, seq[i]), EM_OK);
        assert_int_equal(em_watermark_oldest_stamp(wm), 1000 + i + 1);
    }
    assert_int_equal(em_watermark_done(wm, seq[99]), EM_OK);
    assert_int_equal(em_watermark_oldest_stamp(wm), -1);
    assert_int_equal(em_watermark_committable(wm), 100 + 2 * 199 + 1);
    /* em_watermark_track stamps 0 */
    assert_int_equal(em_watermark_track(wm, 1000, &seq[0]), EM_OK);
    assert_int_equal(em_watermark_oldest_stamp(wm), 0);
    em_watermark_destroy(wm);
}

/* A record given back to Kafka: the last tracked offset is forgotten and may
 * be tracked again; only the last, and only unfinished. */
static void untrack_last_gives_the_offset_back(void **state) {
    (void)state;
    em_watermark_t *wm = em_watermark_new();
    uint64_t s10, s11, s12, again;
    assert_int_equal(em_watermark_track(wm, 10, &s10), EM_OK);
    assert_int_equal(em_watermark_track(wm, 11, &s11), EM_OK);
    assert_int_equal(em_watermark_untrack_last(wm, s10), EM_EINVAL); /* not the last */
    assert_int_equal(em_watermark_untrack_last(wm, s11), EM_OK);
    assert_int_equal(em_watermark_pending(wm), 1);
    assert_int_equal(em_watermark_track(wm, 11, &again), EM_OK); /* read again */
    assert_int_equal(em_watermark_untrack_last(wm, again), EM_OK);
    assert_int_equal(em_watermark_done(wm, s10), EM_OK);
    assert_int_equal(em_watermark_committable(wm), 11);
    /* empty: the offset after the finished prefix may be tracked again, not one below */
    assert_int_equal(em_watermark_track(wm, 12, &s12), EM_OK);
    assert_int_equal(em_watermark_done(wm, s12), EM_OK);
    assert_int_equal(em_watermark_untrack_last(wm, s12), EM_EINVAL); /* finished */
    assert_int_equal(em_watermark_track(wm, 13, &s12), EM_OK);
    assert_int_equal(em_watermark_untrack_last(wm, s12), EM_OK);
    assert_int_equal(em_watermark_track(wm, 12, &again), EM_EINVAL);
    assert_int_equal(em_watermark_track(wm, 13, &again), EM_OK);
    assert_int_equal(em_watermark_done(wm, again), EM_OK);
    assert_int_equal(em_watermark_committable(wm), 14);
    em_watermark_destroy(wm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(oldest_stamp_is_the_first_unfinished),
        cmocka_unit_test(nothing_committable_before_a_done),
        cmocka_unit_test(first_offset_may_be_zero),
        cmocka_unit_test(completions_advance_only_over_a_finished_prefix),
        cmocka_unit_test(tracking_after_a_full_prefix_continues),
        cmocka_unit_test(ten_thousand_shuffled_match_the_model),
        cmocka_unit_test(interleaved_with_wraparound_match_the_model),
        cmocka_unit_test(growth_with_a_moved_head),
        cmocka_unit_test(refusals_leave_the_state_alone),
        cmocka_unit_test(untrack_last_gives_the_offset_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
