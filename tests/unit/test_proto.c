/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Round trips of the public messages through protobuf-c, and the wire facts
 * the services rely on: ExecuteResponse and PublishRequest are the same
 * bytes for the same results (the executor forwards one as the other),
 * unknown fields are skipped, and a repeated scalar field's last value wins.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_pbwire.h"
#include "em_util.h"
#include "execmesh/v1/execmesh.pb-c.h"
#include "execmesh/v1/internal.pb-c.h"

#define NHDR 3

/* An Execution with every field set; strings live in the struct because
 * the generated fields are `char *`. */
typedef struct full_exec {
    char id[32], handler[32];
    uint8_t payload[8];
    char keys[NHDR][16], values[NHDR][32];
    Execmesh__V1__Execution__HeadersEntry hdr[NHDR];
    Execmesh__V1__Execution__HeadersEntry *hdrp[NHDR];
    Execmesh__V1__Execution e;
} full_exec_t;

static void full_exec_init(full_exec_t *x, int n) {
    static const uint8_t payload[8] = {0x00, 'a', 0x00, 0xff, 0x00, '\n', 0x00, 0x00};
    static const char *const keys[NHDR] = {"traceparent", "tenant", "empty"};
    static const char *const values[NHDR] = {"00-0af7651916cd43dd-01", "acme", ""};
    memset(x, 0, sizeof(*x));
    snprintf(x->id, sizeof(x->id), "orders/3/%d", 1000 + n);
    snprintf(x->handler, sizeof(x->handler), "sha256");
    memcpy(x->payload, payload, sizeof(payload));
    for (int i = 0; i < NHDR; i++) {
        Execmesh__V1__Execution__HeadersEntry he = EXECMESH__V1__EXECUTION__HEADERS_ENTRY__INIT;
        x->hdr[i] = he;
        snprintf(x->keys[i], sizeof(x->keys[i]), "%s", keys[i]);
        snprintf(x->values[i], sizeof(x->values[i]), "%s", values[i]);
        x->hdr[i].key = x->keys[i];
        x->hdr[i].value = x->values[i];
        x->hdrp[i] = &x->hdr[i];
    }
    Execmesh__V1__Execution e = EXECMESH__V1__EXECUTION__INIT;
    x->e = e;
    x->e.id = x->id;
    x->e.handler = x->handler;
    x->e.payload.data = x->payload;
    x->e.payload.len = sizeof(x->payload) - (size_t)n; /* trailing NULs kept */
    x->e.n_headers = NHDR;
    x->e.headers = x->hdrp;
    x->e.timeout_ms = 30000u + (uint32_t)n;
    x->e.max_attempts = 5;
    x->e.attempt = UINT32_MAX - (uint32_t)n;
    x->e.submitted_unix_ms = 1732530000123LL + n;
}

static void assert_exec_equal(const Execmesh__V1__Execution *a, const Execmesh__V1__Execution *b) {
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->handler, b->handler);
    assert_int_equal(a->payload.len, b->payload.len);
    if (a->payload.len)
        assert_memory_equal(a->payload.data, b->payload.data, a->payload.len);
    assert_int_equal(a->n_headers, b->n_headers);
    for (size_t i = 0; i < a->n_headers; i++) {
        assert_string_equal(a->headers[i]->key, b->headers[i]->key);
        assert_string_equal(a->headers[i]->value, b->headers[i]->value);
    }
    assert_int_equal(a->timeout_ms, b->timeout_ms);
    assert_int_equal(a->max_attempts, b->max_attempts);
    assert_int_equal(a->attempt, b->attempt);
    assert_int_equal(a->submitted_unix_ms, b->submitted_unix_ms);
}

static uint8_t *pack_exec(const Execmesh__V1__Execution *e, size_t *len, size_t extra) {
    *len = execmesh__v1__execution__get_packed_size(e);
    uint8_t *buf = malloc(*len + extra + 1);
    assert_non_null(buf);
    assert_int_equal(execmesh__v1__execution__pack(e, buf), *len);
    return buf;
}

static void execution_round_trips_every_field(void **state) {
    (void)state;
    full_exec_t x;
    size_t len;
    full_exec_init(&x, 0);
    uint8_t *buf = pack_exec(&x.e, &len, 0);

    Execmesh__V1__Execution *out = execmesh__v1__execution__unpack(NULL, len, buf);
    assert_non_null(out);
    assert_exec_equal(&x.e, out);
    assert_int_equal(out->payload.len, 8);
    assert_int_equal(out->payload.data[0], 0);
    assert_int_equal(out->payload.data[7], 0);
    assert_int_equal(out->base.n_unknown_fields, 0);

    /* packing the decoded message gives the same bytes */
    size_t len2;
    uint8_t *buf2 = pack_exec(out, &len2, 0);
    assert_int_equal(len2, len);
    assert_memory_equal(buf2, buf, len);

    execmesh__v1__execution__free_unpacked(out, NULL);
    free(buf2);
    free(buf);
}

static void empty_execution_is_empty_on_the_wire(void **state) {
    (void)state;
    Execmesh__V1__Execution e = EXECMESH__V1__EXECUTION__INIT;
    assert_int_equal(execmesh__v1__execution__get_packed_size(&e), 0);
    Execmesh__V1__Execution *out = execmesh__v1__execution__unpack(NULL, 0, NULL);
    assert_non_null(out);
    assert_string_equal(out->id, "");
    assert_int_equal(out->payload.len, 0);
    assert_int_equal(out->n_headers, 0);
    assert_int_equal(out->attempt, 0);
    execmesh__v1__execution__free_unpacked(out, NULL);
}

static void submit_request_round_trips(void **state) {
    (void)state;
    enum { N = 4 };
    full_exec_t x[N];
    Execmesh__V1__Execution *ep[N];
    for (int i = 0; i < N; i++) {
        full_exec_init(&x[i], i);
        ep[i] = &x[i].e;
    }
    x[2].e.n_headers = 0; /* a mix: one without headers ... */
    x[3].e.payload.len = 0; /* ... and one without payload */

    Execmesh__V1__SubmitRequest req = EXECMESH__V1__SUBMIT_REQUEST__INIT;
    req.n_executions = N;
    req.executions = ep;
    size_t len = execmesh__v1__submit_request__get_packed_size(&req);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    assert_int_equal(execmesh__v1__submit_request__pack(&req, buf), len);

    Execmesh__V1__SubmitRequest *out = execmesh__v1__submit_request__unpack(NULL, len, buf);
    assert_non_null(out);
    assert_int_equal(out->n_executions, N);
    for (int i = 0; i < N; i++)
        assert_exec_equal(&x[i].e, out->executions[i]);

    /* the same bytes are an ExecuteRequest */
    Execmesh__V1__ExecuteRequest *er = execmesh__v1__execute_request__unpack(NULL, len, buf);
    assert_non_null(er);
    assert_int_equal(er->n_executions, N);
    assert_string_equal(er->executions[3]->id, x[3].id);
    execmesh__v1__execute_request__free_unpacked(er, NULL);

    execmesh__v1__submit_request__free_unpacked(out, NULL);
    free(buf);
}

/* A Result with every field set. */
typedef struct full_result {
    char id[32], error[32], executor[32], hk[16], hv[16];
    uint8_t output[5];
    Execmesh__V1__Result__HeadersEntry hdr;
    Execmesh__V1__Result__HeadersEntry *hdrp[1];
    Execmesh__V1__Result r;
} full_result_t;

static void full_result_init(full_result_t *x, int n) {
    memset(x, 0, sizeof(*x));
    snprintf(x->id, sizeof(x->id), "job-%d", n);
    snprintf(x->error, sizeof(x->error), "exit status %d", n);
    snprintf(x->executor, sizeof(x->executor), "executor-host-%d", n);
    snprintf(x->hk, sizeof(x->hk), "tenant");
    snprintf(x->hv, sizeof(x->hv), "t%d", n);
    memcpy(x->output, "\0\1\0\2\0", 5);
    Execmesh__V1__Result__HeadersEntry he = EXECMESH__V1__RESULT__HEADERS_ENTRY__INIT;
    x->hdr = he;
    x->hdr.key = x->hk;
    x->hdr.value = x->hv;
    x->hdrp[0] = &x->hdr;
    Execmesh__V1__Result r = EXECMESH__V1__RESULT__INIT;
    x->r = r;
    x->r.id = x->id;
    x->r.attempt = 2u + (uint32_t)n;
    x->r.status = (Execmesh__V1__Status)(1 + n % 5);
    x->r.output.data = x->output;
    x->r.output.len = sizeof(x->output);
    x->r.error = x->error;
    x->r.exit_code = n % 2 ? -(n + 1) : INT32_MAX - n;
    x->r.executor = x->executor;
    x->r.submitted_unix_ms = 1732530000000LL + n;
    x->r.started_unix_ms = 1732530000100LL + n;
    x->r.finished_unix_ms = 1732530000200LL + n;
    x->r.n_headers = 1;
    x->r.headers = x->hdrp;
}

static void assert_result_equal(const Execmesh__V1__Result *a, const Execmesh__V1__Result *b) {
    assert_string_equal(a->id, b->id);
    assert_int_equal(a->attempt, b->attempt);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->output.len, b->output.len);
    assert_memory_equal(a->output.data, b->output.data, a->output.len);
    assert_string_equal(a->error, b->error);
    assert_int_equal(a->exit_code, b->exit_code);
    assert_string_equal(a->executor, b->executor);
    assert_int_equal(a->submitted_unix_ms, b->submitted_unix_ms);
    assert_int_equal(a->started_unix_ms, b->started_unix_ms);
    assert_int_equal(a->finished_unix_ms, b->finished_unix_ms);
    assert_int_equal(a->n_headers, b->n_headers);
    for (size_t i = 0; i < a->n_headers; i++) {
        assert_string_equal(a->headers[i]->key, b->headers[i]->key);
        assert_string_equal(a->headers[i]->value, b->headers[i]->value);
    }
}

static void result_round_trips_every_field(void **state) {
    (void)state;
    for (int n = 0; n < 6; n++) { /* every status; negative and large exit codes */
        full_result_t x;
        full_result_init(&x, n);
        size_t len = execmesh__v1__result__get_packed_size(&x.r);
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        assert_int_equal(execmesh__v1__result__pack(&x.r, buf), len);
        Execmesh__V1__Result *out = execmesh__v1__result__unpack(NULL, len, buf);
        assert_non_null(out);
        assert_result_equal(&x.r, out);
        execmesh__v1__result__free_unpacked(out, NULL);
        free(buf);
    }
}

static void execute_response_bytes_are_a_publish_request(void **state) {
    (void)state;
    enum { N = 3 };
    full_result_t x[N];
    Execmesh__V1__Result *rp[N];
    for (int i = 0; i < N; i++) {
        full_result_init(&x[i], i);
        rp[i] = &x[i].r;
    }
    for (size_t count = 0; count <= N; count++) {
        Execmesh__V1__ExecuteResponse er = EXECMESH__V1__EXECUTE_RESPONSE__INIT;
        Execmesh__V1__PublishRequest pr = EXECMESH__V1__PUBLISH_REQUEST__INIT;
        er.n_results = pr.n_results = count;
        er.results = pr.results = rp;
        size_t elen = execmesh__v1__execute_response__get_packed_size(&er);
        size_t plen = execmesh__v1__publish_request__get_packed_size(&pr);
        assert_int_equal(elen, plen);
        uint8_t *eb = malloc(elen + 1), *pb = malloc(plen + 1);
        assert_non_null(eb);
        assert_non_null(pb);
        assert_int_equal(execmesh__v1__execute_response__pack(&er, eb), elen);
        assert_int_equal(execmesh__v1__publish_request__pack(&pr, pb), plen);
        assert_memory_equal(eb, pb, elen);

        /* and the executor's bytes decode as the sink's request */
        Execmesh__V1__PublishRequest *out = execmesh__v1__publish_request__unpack(NULL, elen, eb);
        assert_non_null(out);
        assert_int_equal(out->n_results, count);
        for (size_t i = 0; i < count; i++)
            assert_result_equal(&x[i].r, out->results[i]);
        execmesh__v1__publish_request__free_unpacked(out, NULL);
        free(pb);
        free(eb);
    }
}

static void unknown_fields_are_skipped(void **state) {
    (void)state;
    full_exec_t x;
    size_t len;
    full_exec_init(&x, 1);
    static const char future[] = "from a newer schema";
    uint8_t *buf = pack_exec(&x.e, &len, 64);
    /* field 99, LEN; field 100, varint; field 101, I32; then field 102, I64 */
    len += em_pb_put_varint(buf + len, 99u << 3 | EM_PB_LEN);
    len += em_pb_put_varint(buf + len, sizeof(future) - 1);
    memcpy(buf + len, future, sizeof(future) - 1);
    len += sizeof(future) - 1;
    len += em_pb_put_varint(buf + len, 100u << 3 | EM_PB_VARINT);
    len += em_pb_put_varint(buf + len, UINT64_MAX);
    len += em_pb_put_varint(buf + len, 101u << 3 | EM_PB_I32);
    memset(buf + len, 0xab, 4);
    len += 4;
    len += em_pb_put_varint(buf + len, 102u << 3 | EM_PB_I64);
    memset(buf + len, 0xcd, 8);
    len += 8;

    Execmesh__V1__Execution *out = execmesh__v1__execution__unpack(NULL, len, buf);
    assert_non_null(out);
    assert_exec_equal(&x.e, out);
    assert_int_equal(out->base.n_unknown_fields, 4);
    execmesh__v1__execution__free_unpacked(out, NULL);
    free(buf);
}

static void last_attempt_wins(void **state) {
    (void)state;
    static const uint32_t later[] = {5, 0, 1, 300, UINT32_MAX};
    for (size_t i = 0; i < EM_ARRAY_LEN(later); i++) {
        full_exec_t x;
        size_t len;
        full_exec_init(&x, 0);
        x.e.attempt = 1;
        uint8_t *buf = pack_exec(&x.e, &len, 16);
        len += em_pb_put_varint(buf + len, 7u << 3 | EM_PB_VARINT);
        len += em_pb_put_varint(buf + len, later[i]);

        Execmesh__V1__Execution *out = execmesh__v1__execution__unpack(NULL, len, buf);
        assert_non_null(out);
        assert_int_equal(out->attempt, later[i]);
        x.e.attempt = later[i];
        assert_exec_equal(&x.e, out); /* nothing else moved */
        execmesh__v1__execution__free_unpacked(out, NULL);
        free(buf);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(execution_round_trips_every_field),
        cmocka_unit_test(empty_execution_is_empty_on_the_wire),
        cmocka_unit_test(submit_request_round_trips),
        cmocka_unit_test(result_round_trips_every_field),
        cmocka_unit_test(execute_response_bytes_are_a_publish_request),
        cmocka_unit_test(unknown_fields_are_skipped),
        cmocka_unit_test(last_attempt_wins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
