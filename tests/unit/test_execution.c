/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_execution: the one-pass check of an Execution's wire
 * bytes (what is refused and why), UTF-8 validation, and the appended mesh
 * fields, which protobuf-c (the executor's reader) must see as overriding
 * the record's own ("the last value of a field wins").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_execution.h"
#include "em_trace.h"
#include "execmesh/v1/execmesh.pb-c.h"

static size_t pack(const Execmesh__V1__Execution *ex, uint8_t *buf) { return execmesh__v1__execution__pack(ex, buf); }

static void utf8_table(void **state) {
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
        int valid;
    } rows[] = {
        {"", 0, 1},
        {"plain ascii", 11, 1},
        {"caf\xc3\xa9", 5, 1},                 /* 2-byte */
        {"\xe2\x82\xac", 3, 1},                /* euro sign, 3-byte */
        {"\xf0\x9f\x98\x80", 4, 1},            /* emoji, 4-byte */
        {"a\0b", 3, 0},                        /* NUL */
        {"\xc3", 1, 0},                        /* truncated */
        {"\xe2\x82", 2, 0},                    /* truncated */
        {"\xc0\xaf", 2, 0},                    /* overlong '/' */
        {"\xe0\x80\xaf", 3, 0},                /* overlong */
        {"\xed\xa0\x80", 3, 0},                /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 4, 0},            /* beyond U+10FFFF */
        {"\xff", 1, 0},                        /* never valid */
        {"\x80", 1, 0},                        /* lone continuation */
        {"ok\xc3\xa9\xc3", 6, 0},              /* valid then truncated */
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int got = em_utf8_valid((const uint8_t *)rows[i].bytes, rows[i].len);
        if (got != rows[i].valid)
            fail_msg("row %zu: em_utf8_valid = %d, want %d", i, got, rows[i].valid);
    }
}

static void inspect_reads_the_fields(void **state) {
    (void)state;
    uint8_t buf[512];
    Execmesh__V1__Execution ex = EXECMESH__V1__EXECUTION__INIT;
    ex.id = (char *)(uintptr_t)"job-7";
    ex.handler = (char *)(uintptr_t)"echo";
    ex.timeout_ms = 2500;
    ex.submitted_unix_ms = 1700000000123;
    Execmesh__V1__Execution__HeadersEntry h = EXECMESH__V1__EXECUTION__HEADERS_ENTRY__INIT, *hp = &h;
    h.key = (char *)(uintptr_t)"tenant";
    h.value = (char *)(uintptr_t)"acme";
    ex.n_headers = 1;
    ex.headers = &hp;
    size_t n = pack(&ex, buf);
    em_exec_info_t info;
    char why[128] = "";
    assert_int_equal(em_execution_inspect(buf, n, &info, why, sizeof(why)), EM_OK);
    assert_int_equal(info.id_len, 5);
    assert_memory_equal(info.id, "job-7", 5);
    assert_int_equal(info.handler_len, 4);
    assert_int_equal(info.timeout_ms, 2500);
    assert_int_equal(info.submitted_unix_ms, 1700000000123);

    /* an empty message is a valid (if useless) Execution: the executor rejects it */
    assert_int_equal(em_execution_inspect(buf, 0, &info, why, sizeof(why)), EM_OK);
    assert_null(info.id);
    /* librdkafka hands an empty or null record value as NULL (found by tests/fuzz: no arithmetic on it) */
    assert_int_equal(em_execution_inspect(NULL, 0, &info, why, sizeof(why)), EM_OK);
    assert_null(info.handler);
}

static void inspect_refuses_with_a_reason(void **state) {
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
        const char *reason;
    } rows[] = {
        {"\x0a\x05" "ab\xff" "cd", 7, "field 1 (id): not valid UTF-8"},
        {"\x12\x03" "a\0b", 5, "field 2 (handler): not valid UTF-8"},
        {"\x08\x01", 2, "field 1 (id): wrong wire type"},
        {"\x10\x01", 2, "field 2 (handler): wrong wire type"},
        {"\x1d\x01\x02\x03\x04", 5, "field 3 (payload): wrong wire type"},
        {"\x2a\x01\x00", 3, "field 5 (timeout_ms): wrong wire type"},
        {"\x22\x04\x0a\x02\xc3\x28", 6, "field 4 (headers): key is not valid UTF-8"},
        {"\x22\x04\x12\x02\xc3\x28", 6, "field 4 (headers): value is not valid UTF-8"},
        {"\x22\x02\x08\x01", 4, "field 4 (headers): map entry field of the wrong wire type"},
        {"\x0a\x09" "short", 7, "malformed protobuf"},
        {"\x38\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, "malformed protobuf"},
        {"\x0b\x0c", 2, "malformed protobuf"}, /* group */
        {"\xff\xfe garbage", 10, "malformed protobuf"},
        {"\x48\x01\x52\x01", 4, "malformed protobuf"},                 /* history truncated */
        {"\x52\x02\x1a\x05", 4, "field 10 (history): malformed Attempt"},
        {"\x52\x04\x22\x02\xc3\x28", 6, "field 10 (history): malformed Attempt"}, /* error not UTF-8 */
        {"\x52\x02\x0a\x00", 4, "field 10 (history): malformed Attempt"},           /* attempt as bytes */
        {"\x5a\x01\x00", 3, "field 11 (executor_deaths): wrong wire type"},
        {"\x4a\x00", 2, "field 9 (deadline_unix_ms): wrong wire type"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        em_exec_info_t info;
        char why[128] = "";
        em_err_t rc = em_execution_inspect((const uint8_t *)rows[i].bytes, rows[i].len, &info, why, sizeof(why));
        if (rc != EM_EINVAL || !strstr(why, rows[i].reason))
            fail_msg("row %zu: rc %d, reason \"%s\", want \"%s\"", i, rc, why, rows[i].reason);
    }
    /* unknown fields are skipped, whatever their (valid) wire type */
    static const uint8_t unknown[] = {0x12, 0x01, 'x', 0xa0, 0x01, 0x05, 0xaa, 0x01, 0x01, 'y', 0xad, 0x01, 1, 2, 3, 4};
    em_exec_info_t info;
    char why[128];
    assert_int_equal(em_execution_inspect(unknown, sizeof(unknown), &info, why, sizeof(why)), EM_OK);
    /* the lifecycle fields: deadline, two history entries, deaths, attempt, max_attempts */
    static const uint8_t life[] = {0x48, 0x90, 0x4e, 0x52, 0x04, 0x08, 0x01, 0x10, 0x02, 0x52, 0x02, 0x08, 0x02,
                                   0x58, 0x02, 0x38, 0x03, 0x30, 0x05};
    assert_int_equal(em_execution_inspect(life, sizeof(life), &info, why, sizeof(why)), EM_OK);
    assert_int_equal(info.deadline_unix_ms, 10000);
    assert_int_equal(info.nhistory, 2);
    assert_int_equal(info.executor_deaths, 2);
    assert_int_equal(info.attempt, 3);
    assert_int_equal(info.max_attempts, 5);
}

/* What the scheduler sends: the record's bytes + appended fields. */
static void appended_fields_override_for_protobuf_c(void **state) {
    (void)state;
    static const struct {
        const char *id;       /* in the record ("" = none) */
        uint32_t attempt;     /* in the record */
        int64_t submitted;    /* in the record */
        const char *new_id;   /* appended (NULL = none) */
        uint32_t new_attempt;
        int64_t new_submitted; /* appended (0 = none) */
    } rows[] = {
        {"", 0, 0, "execmesh.requests/3/41", 1, 1700000000000},
        {"given", 0, 0, NULL, 1, 1700000000001},
        {"given", 9, 1234, NULL, 2, 0},
        {"", 0, 555, "t/0/0", 300, 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        uint8_t buf[512];
        Execmesh__V1__Execution ex = EXECMESH__V1__EXECUTION__INIT;
        ex.id = (char *)(uintptr_t)rows[i].id;
        ex.handler = (char *)(uintptr_t)"echo";
        ex.payload.data = (uint8_t *)(uintptr_t)"pay\0load";
        ex.payload.len = 8;
        ex.attempt = rows[i].attempt;
        ex.submitted_unix_ms = rows[i].submitted;
        size_t n = pack(&ex, buf);
        size_t idl = rows[i].new_id ? strlen(rows[i].new_id) : 0;
        em_exec_append_t app = {.attempt = rows[i].new_attempt,
                                .id = rows[i].new_id,
                                .id_len = idl,
                                .submitted_unix_ms = rows[i].new_submitted,
                                .dispatched_unix_ms = i % 2 ? 1700000000123 : 0};
        size_t extra = em_execution_append_size(&app);
        uint8_t *end = em_execution_append(buf + n, &app);
        assert_int_equal((size_t)(end - buf), n + extra);

        Execmesh__V1__Execution *got = execmesh__v1__execution__unpack(NULL, n + extra, buf);
        assert_non_null(got);
        assert_string_equal(got->id, rows[i].new_id ? rows[i].new_id : rows[i].id);
        assert_int_equal(got->attempt, rows[i].new_attempt);
        assert_int_equal(got->submitted_unix_ms, rows[i].new_submitted ? rows[i].new_submitted : rows[i].submitted);
        assert_string_equal(got->handler, "echo");
        assert_int_equal(got->payload.len, 8);
        assert_memory_equal(got->payload.data, "pay\0load", 8);
        assert_int_equal(got->dispatched_unix_ms, app.dispatched_unix_ms);
        execmesh__v1__execution__free_unpacked(got, NULL);

        em_exec_info_t info;
        char why[128];
        assert_int_equal(em_execution_inspect(buf, n + extra, &info, why, sizeof(why)), EM_OK);
        assert_int_equal(info.id_len, rows[i].new_id ? idl : strlen(rows[i].id));
        assert_int_equal(info.dispatched_unix_ms, app.dispatched_unix_ms);
        assert_null(info.traceparent);
    }
}

/* W3C traceparent: what counts as valid, and the ones the mesh makes. */
static void traceparent_rules(void **state) {
    (void)state;
    static const struct {
        const char *tp;
        int ok;
    } rows[] = {
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 1},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", 1},
        {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later", 1}, /* a later version may add fields */
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", 0},     /* not version 00 */
        {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0},
        {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", 0},
        {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", 0},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", 0},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", 0},
        {"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_int_equal(em_traceparent_trace_id((const uint8_t *)rows[i].tp, strlen(rows[i].tp)), rows[i].ok);
    char a[EM_TRACEPARENT_LEN + 1], b[EM_TRACEPARENT_LEN + 1], c[EM_TRACEPARENT_LEN + 1];
    em_traceparent_derive((const uint8_t *)"job-1", 5, a);
    em_traceparent_derive((const uint8_t *)"job-1", 5, b);
    em_traceparent_derive((const uint8_t *)"job-2", 5, c);
    assert_string_equal(a, b); /* the same id, the same trace: on every scheduler and attempt */
    assert_string_not_equal(a, c);
    assert_true(em_traceparent_trace_id((const uint8_t *)a, strlen(a)));
    em_traceparent_random(a);
    em_traceparent_random(b);
    assert_string_not_equal(a, b);
    assert_true(em_traceparent_trace_id((const uint8_t *)a, strlen(a)));
    assert_int_equal(strlen(a), EM_TRACEPARENT_LEN);
}

static void varint_sizes(void **state) {
    (void)state;
    static const struct {
        uint64_t v;
        size_t n;
    } rows[] = {{0, 1}, {127, 1}, {128, 2}, {16383, 2}, {16384, 3}, {UINT32_MAX, 5}, {UINT64_MAX, 10}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_int_equal(em_varint_size(rows[i].v), rows[i].n);
}

/* A Result as protobuf-c writes it, read back by em_result_read; an
 * Attempt written by em_attempt_field_write, read back by protobuf-c as a
 * history entry of an Execution. */
static void results_and_attempts_round_trip(void **state) {
    (void)state;
    Execmesh__V1__Result r = EXECMESH__V1__RESULT__INIT;
    char id[] = "abc", error[] = "too slow", executor[] = "executor-7";
    r.id = id;
    r.attempt = 2;
    r.status = EXECMESH__V1__STATUS__TIMED_OUT;
    r.error = error;
    r.exit_code = -3;
    r.executor = executor;
    r.started_unix_ms = 1000;
    r.finished_unix_ms = 2000;
    r.final = 0;
    r.retry_delay_ms = 1234;
    char handler[] = "sha256";
    r.handler = handler;
    r.submitted_unix_ms = 900;
    r.dispatched_unix_ms = 950;
    uint8_t buf[256];
    size_t n = execmesh__v1__result__pack(&r, buf);
    em_result_info_t ri;
    assert_int_equal(em_result_read(buf, n, &ri), EM_OK);
    assert_int_equal(ri.id_len, 3);
    assert_memory_equal(ri.id, "abc", 3);
    assert_int_equal(ri.attempt, 2);
    assert_int_equal(ri.status, EXECMESH__V1__STATUS__TIMED_OUT);
    assert_int_equal(ri.final, 0);
    assert_int_equal(ri.retry_delay_ms, 1234);
    assert_int_equal(ri.exit_code, -3);
    assert_int_equal(ri.executor_len, 10);
    assert_int_equal(ri.error_len, 8);
    assert_int_equal(ri.started_unix_ms, 1000);
    assert_int_equal(ri.finished_unix_ms, 2000);
    assert_int_equal(ri.submitted_unix_ms, 900);
    assert_int_equal(ri.dispatched_unix_ms, 950);
    assert_int_equal(ri.handler_len, 6);
    assert_memory_equal(ri.handler, "sha256", 6);
    r.final = 1;
    n = execmesh__v1__result__pack(&r, buf);
    assert_int_equal(em_result_read(buf, n, &ri), EM_OK);
    assert_int_equal(ri.final, 1);
    static const uint8_t bad[] = {0x0a, 0x05, 'x'};
    assert_int_equal(em_result_read(bad, sizeof(bad), &ri), EM_EINVAL);
    static const uint8_t bad_handler[] = {(15 << 3) | 0, 0x01}; /* handler as a varint */
    assert_int_equal(em_result_read(bad_handler, sizeof(bad_handler), &ri), EM_EINVAL);

    em_attempt_t a = {.attempt = 4, .status = EXECMESH__V1__STATUS__FAILED, .executor = "ex", .executor_len = 2,
                      .error = "died", .error_len = 4, .exit_code = 9, .started_unix_ms = 5, .finished_unix_ms = 6};
    uint8_t ex[128], *o = ex;
    o = em_attempt_field_write(o, 10, &a);
    assert_int_equal((size_t)(o - ex), em_attempt_field_size(10, &a));
    o = em_attempt_field_write(o, 10, &a);
    Execmesh__V1__Execution *e = execmesh__v1__execution__unpack(NULL, (size_t)(o - ex), ex);
    assert_non_null(e);
    assert_int_equal(e->n_history, 2);
    assert_int_equal(e->history[1]->attempt, 4);
    assert_int_equal(e->history[1]->status, EXECMESH__V1__STATUS__FAILED);
    assert_string_equal(e->history[1]->executor, "ex");
    assert_string_equal(e->history[1]->error, "died");
    assert_int_equal(e->history[1]->exit_code, 9);
    assert_int_equal(e->history[1]->finished_unix_ms, 6);
    execmesh__v1__execution__free_unpacked(e, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(utf8_table),
        cmocka_unit_test(inspect_reads_the_fields),
        cmocka_unit_test(inspect_refuses_with_a_reason),
        cmocka_unit_test(appended_fields_override_for_protobuf_c),
        cmocka_unit_test(varint_sizes),
        cmocka_unit_test(traceparent_rules),
        cmocka_unit_test(results_and_attempts_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
