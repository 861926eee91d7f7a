/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_health: blockers decide the status, "draining" latches,
 * and a watcher hears once at registration and then only on changes. The
 * block/unblock sequences are a table: after each step, the expected
 * status, blockers text and number of notifications so far.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "em_health.h"
#include "em_log.h"
#include "em_service.h"
#include "em_util.h"

#define SVC "execmesh.v1.Scheduler"

/* What a watcher heard. */
typedef struct heard {
    int calls;
    em_health_status_t last;
} heard_t;

static void on_status(void *arg, em_health_status_t status) {
    heard_t *h = arg;
    h->calls++;
    h->last = status;
}

static void starts_not_serving_with_starting(void **state) {
    (void)state;
    em_health_t *h = em_health_new();
    em_health_status_t st = EM_HEALTH_UNKNOWN;
    char buf[64];
    assert_non_null(h);
    assert_int_equal(em_health_overall(h), EM_HEALTH_NOT_SERVING);
    em_health_blockers(h, buf, sizeof(buf));
    assert_string_equal(buf, EM_HEALTH_STARTING);
    /* no service names yet: even "" is unknown */
    assert_int_equal(em_health_get(h, "", &st), EM_ENOTFOUND);
    assert_int_equal(st, EM_HEALTH_SERVICE_UNKNOWN);
    em_health_destroy(h);
    em_health_destroy(NULL);
}

static void services_are_known_once_added(void **state) {
    (void)state;
    em_health_t *h = em_health_new();
    em_health_status_t st = EM_HEALTH_UNKNOWN;
    assert_int_equal(em_health_add_service(h, ""), EM_OK);
    assert_int_equal(em_health_add_service(h, SVC), EM_OK);
    assert_int_equal(em_health_add_service(h, SVC), EM_OK); /* twice is fine */

    assert_int_equal(em_health_get(h, "", &st), EM_OK);
    assert_int_equal(st, EM_HEALTH_NOT_SERVING);
    assert_int_equal(em_health_get(h, SVC, &st), EM_OK);
    assert_int_equal(st, EM_HEALTH_NOT_SERVING);

    static const char *const unknown[] = {"nope", "execmesh.v1.Scheduler2", "execmesh.v1", " "};
    for (size_t i = 0; i < EM_ARRAY_LEN(unknown); i++) {
        st = EM_HEALTH_UNKNOWN;
        assert_int_equal(em_health_get(h, unknown[i], &st), EM_ENOTFOUND);
        assert_int_equal(st, EM_HEALTH_SERVICE_UNKNOWN);
    }

    em_health_block(h, EM_HEALTH_STARTING, 0);
    assert_int_equal(em_health_get(h, "", &st), EM_OK);
    assert_int_equal(st, EM_HEALTH_SERVING);
    assert_int_equal(em_health_get(h, SVC, &st), EM_OK);
    assert_int_equal(st, EM_HEALTH_SERVING);
    assert_int_equal(em_health_get(h, "nope", &st), EM_ENOTFOUND);
    assert_int_equal(st, EM_HEALTH_SERVICE_UNKNOWN);
    em_health_destroy(h);
}

/* One step of a sequence and the state expected after it. */
typedef struct step {
    const char *reason;
    int blocked;
    em_health_status_t status;
    const char *blockers;
    int calls; /* notifications so far, the one at registration included */
} step_t;

#define S EM_HEALTH_SERVING
#define N EM_HEALTH_NOT_SERVING
#define MAX_STEPS 8

typedef struct sequence {
    const char *name;
    step_t steps[MAX_STEPS];
} sequence_t;

static const sequence_t sequences[] = {
    {"start, then serve",
     {{"starting", 0, S, "", 2}, {"starting", 0, S, "", 2}}},
    {"kafka flaps",
     {{"starting", 0, S, "", 2},
      {"kafka", 1, N, "kafka", 3},
      {"kafka", 1, N, "kafka", 3},
      {"kafka", 0, S, "", 4},
      {"kafka", 0, S, "", 4},
      {"kafka", 1, N, "kafka", 5},
      {"kafka", 0, S, "", 6}}},
    {"two blockers, one status change",
     {{"kafka", 1, N, "starting,kafka", 1},
      {"starting", 0, N, "kafka", 1},
      {"admin", 1, N, "kafka,admin", 1},
      {"admin", 0, N, "kafka", 1},
      {"kafka", 0, S, "", 2}}},
    {"draining latches",
     {{"starting", 0, S, "", 2},
      {"draining", 1, N, "draining", 3},
      {"draining", 0, N, "draining", 3},
      {"kafka", 1, N, "draining,kafka", 3},
      {"kafka", 0, N, "draining", 3},
      {"draining", 1, N, "draining", 3}}},
    {"draining while starting",
     {{"draining", 1, N, "starting,draining", 1},
      {"starting", 0, N, "draining", 1},
      {"draining", 0, N, "draining", 1}}},
    {"clearing a blocker never set",
     {{"admin", 0, N, "starting", 1},
      {"starting", 0, S, "", 2},
      {"admin", 0, S, "", 2},
      {"kafka", 0, S, "", 2}}},
    {"admin drain and back",
     {{"starting", 0, S, "", 2},
      {"admin", 1, N, "admin", 3},
      {"admin", 0, S, "", 4}}},
};

static void block_sequences(void **state) {
    (void)state;
    for (size_t q = 0; q < EM_ARRAY_LEN(sequences); q++) {
        const sequence_t *seq = &sequences[q];
        em_health_t *h = em_health_new();
        heard_t all = {0}, svc = {0};
        assert_int_equal(em_health_add_service(h, ""), EM_OK);
        assert_int_equal(em_health_add_service(h, SVC), EM_OK);
        em_health_watch_t *w1 = em_health_watch(h, "", on_status, &all);
        em_health_watch_t *w2 = em_health_watch(h, SVC, on_status, &svc);
        assert_non_null(w1);
        assert_non_null(w2);
        assert_int_equal(all.calls, 1);
        assert_int_equal(all.last, EM_HEALTH_NOT_SERVING);

        for (size_t i = 0; i < MAX_STEPS && seq->steps[i].reason; i++) {
            const step_t *s = &seq->steps[i];
            char buf[128];
            em_health_status_t st;
            em_health_block(h, s->reason, s->blocked);
            assert_int_equal(em_health_get(h, "", &st), EM_OK);
            em_health_blockers(h, buf, sizeof(buf));
            if (st != s->status || em_health_overall(h) != s->status)
                fail_msg("%s, step %zu (%s %s): status %s, want %s", seq->name, i, s->blocked ? "block" : "clear",
                         s->reason, em_health_status_name(st), em_health_status_name(s->status));
            if (strcmp(buf, s->blockers) != 0)
                fail_msg("%s, step %zu: blockers \"%s\", want \"%s\"", seq->name, i, buf, s->blockers);
            if (all.calls != s->calls || svc.calls != s->calls)
                fail_msg("%s, step %zu: %d and %d notifications, want %d", seq->name, i, all.calls, svc.calls,
                         s->calls);
            if (all.last != s->status || svc.last != s->status)
                fail_msg("%s, step %zu: watchers last heard %s / %s", seq->name, i,
                         em_health_status_name(all.last), em_health_status_name(svc.last));
        }
        em_health_unwatch(h, w1);
        em_health_unwatch(h, w2);
        em_health_destroy(h);
    }
}

static void watch_reports_current_status_at_registration(void **state) {
    (void)state;
    em_health_t *h = em_health_new();
    heard_t a = {0}, b = {0};
    assert_int_equal(em_health_add_service(h, ""), EM_OK);
    em_health_block(h, EM_HEALTH_STARTING, 0);

    em_health_watch_t *wa = em_health_watch(h, "", on_status, &a);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.last, EM_HEALTH_SERVING);

    /* a name added after the watch started: SERVICE_UNKNOWN, then its
     * status when it appears */
    em_health_watch_t *wb = em_health_watch(h, SVC, on_status, &b);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.last, EM_HEALTH_SERVICE_UNKNOWN);
    assert_int_equal(em_health_add_service(h, SVC), EM_OK);
    assert_int_equal(b.calls, 2);
    assert_int_equal(b.last, EM_HEALTH_SERVING);
    assert_int_equal(em_health_add_service(h, SVC), EM_OK); /* no change, no call */
    assert_int_equal(b.calls, 2);
    assert_int_equal(a.calls, 1);

    em_health_unwatch(h, wa);
    em_health_unwatch(h, wb);
    em_health_destroy(h);
}

static void unwatch_stops_notifications(void **state) {
    (void)state;
    em_health_t *h = em_health_new();
    heard_t kept = {0}, gone = {0};
    assert_int_equal(em_health_add_service(h, ""), EM_OK);
    em_health_watch_t *wk = em_health_watch(h, "", on_status, &kept);
    em_health_watch_t *wg = em_health_watch(h, "", on_status, &gone);
    em_health_block(h, EM_HEALTH_STARTING, 0);
    assert_int_equal(kept.calls, 2);
    assert_int_equal(gone.calls, 2);

    em_health_unwatch(h, wg);
    em_health_block(h, "kafka", 1);
    em_health_block(h, "kafka", 0);
    assert_int_equal(kept.calls, 4);
    assert_int_equal(gone.calls, 2);
    assert_int_equal(gone.last, EM_HEALTH_SERVING);

    em_health_unwatch(h, NULL);
    /* a watch still registered at destroy is freed with the state */
    (void)wk;
    em_health_destroy(h);
}

static void blockers_text(void **state) {
    (void)state;
    em_health_t *h = em_health_new();
    char buf[64];
    em_health_block(h, "kafka", 1);
    em_health_block(h, "admin", 1);
    em_health_blockers(h, buf, sizeof(buf));
    assert_string_equal(buf, "starting,kafka,admin");

    /* truncated, still terminated, nothing written past n */
    static const struct {
        size_t n;
        const char *want;
    } cut[] = {{1, ""}, {2, "s"}, {9, "starting"}, {10, "starting,"}, {14, "starting,kafk"},
               {15, "starting,kafka"}, {16, "starting,kafka,"}, {21, "starting,kafka,admin"}};
    for (size_t i = 0; i < EM_ARRAY_LEN(cut); i++) {
        memset(buf, 'X', sizeof(buf));
        em_health_blockers(h, buf, cut[i].n);
        assert_string_equal(buf, cut[i].want);
        assert_int_equal(buf[cut[i].n], 'X');
    }
    memset(buf, 'X', sizeof(buf));
    em_health_blockers(h, buf, 0);
    assert_int_equal(buf[0], 'X');

    em_health_block(h, "starting", 0);
    em_health_block(h, "kafka", 0);
    em_health_block(h, "admin", 0);
    em_health_blockers(h, buf, sizeof(buf));
    assert_string_equal(buf, "");
    em_health_destroy(h);
}

static void status_names(void **state) {
    (void)state;
    assert_string_equal(em_health_status_name(EM_HEALTH_UNKNOWN), "UNKNOWN");
    assert_string_equal(em_health_status_name(EM_HEALTH_SERVING), "SERVING");
    assert_string_equal(em_health_status_name(EM_HEALTH_NOT_SERVING), "NOT_SERVING");
    assert_string_equal(em_health_status_name(EM_HEALTH_SERVICE_UNKNOWN), "SERVICE_UNKNOWN");
}

/* Check's and Watch's request: the service name, or a refusal. */
static void request_decode_table(void **state) {
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
        em_err_t rc;
        const char *service;
    } rows[] = {
        {"", 0, EM_OK, ""},                                             /* no name: the server as a whole */
        {"\x0a\x15" "execmesh.v1.Scheduler", 23, EM_OK, "execmesh.v1.Scheduler"},
        {"\x0a\x01x\x10\x01", 5, EM_OK, "x"},                         /* an unknown field is skipped */
        {"\x0a\x05" "ab", 4, EM_EINVAL, NULL},                            /* truncated */
        {"\x08\x01", 2, EM_EINVAL, NULL},                              /* service of the wrong wire type */
        {"\xff\xff\xff\xff", 4, EM_EINVAL, NULL},
    };
    for (size_t i = 0; i < EM_ARRAY_LEN(rows); i++) {
        char *service = (char *)(uintptr_t)"unset";
        em_err_t rc = em_health_request_decode((const uint8_t *)rows[i].bytes, rows[i].len, &service);
        if (rc != rows[i].rc)
            fail_msg("row %zu: rc %s, want %s", i, em_errname(rc), em_errname(rows[i].rc));
        if (rows[i].service)
            assert_string_equal(service, rows[i].service);
        else
            assert_null(service);
        free(service);
    }
}

/* /livez: 503 naming the first loop past the stall, 0 counts as not started. */
static void live_verdict_names_the_stalled_loop(void **state) {
    (void)state;
    const char *names[] = {"gRPC", "consumer"};
    char out[200];
    int64_t fresh[] = {9500, 9900};
    assert_int_equal(em_live_verdict(10000, names, fresh, 2, 1000, out, sizeof(out)), 200);
    assert_string_equal(out, "live\n");
    int64_t unstarted[] = {9999, 0};
    assert_int_equal(em_live_verdict(10000, names, unstarted, 2, 1000, out, sizeof(out)), 200);
    int64_t stuck[] = {9999, 8000};
    assert_int_equal(em_live_verdict(10000, names, stuck, 2, 1000, out, sizeof(out)), 503);
    assert_non_null(strstr(out, "the consumer loop has not turned for 2000 ms (liveness.stall_ms 1000)"));
    int64_t edge[] = {9000, 9000};
    assert_int_equal(em_live_verdict(10000, names, edge, 2, 1000, out, sizeof(out)), 200); /* exactly the bound */
}

int main(void) {
    /* status changes are logged at info; keep the test output to cmocka's */
    em_log_set_level(EM_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(starts_not_serving_with_starting),
        cmocka_unit_test(services_are_known_once_added),
        cmocka_unit_test(block_sequences),
        cmocka_unit_test(watch_reports_current_status_at_registration),
        cmocka_unit_test(unwatch_stops_notifications),
        cmocka_unit_test(blockers_text),
        cmocka_unit_test(status_names),
        cmocka_unit_test(request_decode_table),
        cmocka_unit_test(live_verdict_names_the_stalled_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
