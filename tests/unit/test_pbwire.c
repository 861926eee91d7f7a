/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_pbwire: walking buffers that protobuf-c packed from the
 * generated messages, finding a field's last occurrence, and refusing
 * malformed input without reading past the end. Inputs under test are
 * copied into heap blocks of exactly their length, so under ASan a read one
 * byte too far is a failure, not luck.
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

/* A heap copy of exactly len bytes (one byte allocated for len 0). */
static uint8_t *exact_copy(const uint8_t *src, size_t len) {
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    if (len)
        memcpy(p, src, len);
    return p;
}

/* Three results with every kind of field filled in. */
typedef struct results3 {
    char ids[3][16];
    char executor[16];
    char err[16];
    uint8_t output[4];
    char hk[8], hv[8];
    Execmesh__V1__Result__HeadersEntry header;
    Execmesh__V1__Result__HeadersEntry *headers[1];
    Execmesh__V1__Result r[3];
    Execmesh__V1__Result *rp[3];
} results3_t;

static void results3_init(results3_t *x) {
    memset(x, 0, sizeof(*x));
    snprintf(x->executor, sizeof(x->executor), "exec-1");
    snprintf(x->err, sizeof(x->err), "boom");
    snprintf(x->hk, sizeof(x->hk), "tenant");
    snprintf(x->hv, sizeof(x->hv), "acme");
    memcpy(x->output, "\0o\0k", 4);
    Execmesh__V1__Result__HeadersEntry he = EXECMESH__V1__RESULT__HEADERS_ENTRY__INIT;
    x->header = he;
    x->header.key = x->hk;
    x->header.value = x->hv;
    x->headers[0] = &x->header;
    for (int i = 0; i < 3; i++) {
        Execmesh__V1__Result init = EXECMESH__V1__RESULT__INIT;
        x->r[i] = init;
        snprintf(x->ids[i], sizeof(x->ids[i]), "job-%d", i + 1);
        x->r[i].id = x->ids[i];
        x->r[i].attempt = (uint32_t)i + 1;
        x->r[i].status = i == 1 ? EXECMESH__V1__STATUS__FAILED : EXECMESH__V1__STATUS__SUCCEEDED;
        x->r[i].output.data = x->output;
        x->r[i].output.len = sizeof(x->output);
        x->r[i].error = i == 1 ? x->err : x->r[i].error;
        x->r[i].exit_code = i == 1 ? -9 : 0;
        x->r[i].executor = x->executor;
        x->r[i].submitted_unix_ms = 1732530000000 + i;
        x->r[i].started_unix_ms = -1; /* a 10-byte varint */
        x->r[i].finished_unix_ms = 1732530000500 + i;
        x->r[i].n_headers = 1;
        x->r[i].headers = x->headers;
        x->rp[i] = &x->r[i];
    }
}

/* Packs a PublishRequest of the three results into a malloc'd buffer. */
static uint8_t *pack_publish(results3_t *x, size_t *len) {
    Execmesh__V1__PublishRequest req = EXECMESH__V1__PUBLISH_REQUEST__INIT;
    req.n_results = 3;
    req.results = x->rp;
    *len = execmesh__v1__publish_request__get_packed_size(&req);
    uint8_t *buf = malloc(*len);
    assert_non_null(buf);
    assert_int_equal(execmesh__v1__publish_request__pack(&req, buf), *len);
    return buf;
}

static void walks_results_of_a_publish_request(void **state) {
    (void)state;
    results3_t x;
    size_t len;
    results3_init(&x);
    uint8_t *buf = pack_publish(&x, &len);
    const uint8_t *p = buf, *end = buf + len;
    em_pb_field_t f;
    int n = 0;
    em_err_t rc;

    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        assert_true(n < 3);
        assert_int_equal(f.number, 1);
        assert_int_equal(f.wire_type, EM_PB_LEN);
        assert_true(f.data >= buf && f.data + f.len <= end);
        Execmesh__V1__Result *r = execmesh__v1__result__unpack(NULL, f.len, f.data);
        assert_non_null(r);
        assert_string_equal(r->id, x.ids[n]);
        assert_int_equal(r->attempt, n + 1);
        assert_int_equal(r->started_unix_ms, -1);
        execmesh__v1__result__free_unpacked(r, NULL);

        /* the id found in place is the same one */
        const uint8_t *id;
        size_t idlen;
        assert_int_equal(em_pb_find_len(f.data, f.len, 1, &id, &idlen), EM_OK);
        assert_int_equal(idlen, strlen(x.ids[n]));
        assert_memory_equal(id, x.ids[n], idlen);
        n++;
    }
    assert_int_equal(rc, EM_ENOTFOUND);
    assert_int_equal(n, 3);
    assert_ptr_equal(p, end);
    free(buf);
}

static void reads_every_wire_type(void **state) {
    (void)state;
    /* 1: varint 300; 2: I64 0x0102030405060708; 3: LEN "hi"; 4: I32 0xdeadbeef;
     * 5: LEN empty; 0x1fffffff: varint 1 (the largest field number) */
    static const uint8_t msg[] = {0x08, 0xac, 0x02,
                                  0x11, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
                                  0x1a, 0x02, 'h',  'i',
                                  0x25, 0xef, 0xbe, 0xad, 0xde,
                                  0x2a, 0x00,
                                  0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01};
    static const struct {
        uint32_t number, wire_type;
        uint64_t varint;
        const char *data;
    } want[] = {
        {1, EM_PB_VARINT, 300, NULL},   {2, EM_PB_I64, 0x0102030405060708ULL, NULL},
        {3, EM_PB_LEN, 0, "hi"},        {4, EM_PB_I32, 0xdeadbeefULL, NULL},
        {5, EM_PB_LEN, 0, ""},          {0x1fffffff, EM_PB_VARINT, 1, NULL},
    };
    uint8_t *buf = exact_copy(msg, sizeof(msg));
    const uint8_t *p = buf, *end = buf + sizeof(msg);
    em_pb_field_t f;
    for (size_t i = 0; i < EM_ARRAY_LEN(want); i++) {
        assert_int_equal(em_pb_next(&p, end, &f), EM_OK);
        assert_int_equal(f.number, want[i].number);
        assert_int_equal(f.wire_type, want[i].wire_type);
        if (want[i].data) {
            assert_int_equal(f.len, strlen(want[i].data));
            assert_memory_equal(f.data, want[i].data, f.len);
        } else {
            assert_int_equal(f.varint, want[i].varint);
        }
    }
    assert_int_equal(em_pb_next(&p, end, &f), EM_ENOTFOUND);
    assert_int_equal(em_pb_next(&p, end, &f), EM_ENOTFOUND);
    free(buf);
}

static void find_len_takes_the_last_occurrence(void **state) {
    (void)state;
    results3_t x;
    results3_init(&x);
    size_t len = execmesh__v1__result__get_packed_size(&x.r[0]);
    static const char second[] = "job-override";
    size_t total = len + 2 + strlen(second);
    uint8_t *buf = malloc(total);
    assert_non_null(buf);
    execmesh__v1__result__pack(&x.r[0], buf);
    /* append field 1 again: protobuf says the last one wins */
    buf[len] = 0x0a;
    buf[len + 1] = (uint8_t)strlen(second);
    memcpy(buf + len + 2, second, strlen(second));

    const uint8_t *d;
    size_t dl;
    assert_int_equal(em_pb_find_len(buf, total, 1, &d, &dl), EM_OK);
    assert_int_equal(dl, strlen(second));
    assert_memory_equal(d, second, dl);
    /* protobuf-c agrees */
    Execmesh__V1__Result *r = execmesh__v1__result__unpack(NULL, total, buf);
    assert_non_null(r);
    assert_string_equal(r->id, second);
    execmesh__v1__result__free_unpacked(r, NULL);

    /* other fields: a LEN field is found, a varint one is not a LEN field,
     * an absent one is not found */
    assert_int_equal(em_pb_find_len(buf, total, 7, &d, &dl), EM_OK);
    assert_memory_equal(d, "exec-1", dl);
    assert_int_equal(em_pb_find_len(buf, total, 2, &d, &dl), EM_ENOTFOUND);
    assert_int_equal(em_pb_find_len(buf, total, 12, &d, &dl), EM_ENOTFOUND);
    assert_int_equal(em_pb_find_len(buf, 0, 1, &d, &dl), EM_ENOTFOUND);
    free(buf);
}

/* Top-level field boundaries of a valid buffer: offsets where a prefix is
 * itself a valid message. Returns how many (at most max). */
static size_t boundaries(const uint8_t *buf, size_t len, size_t *out, size_t max) {
    const uint8_t *p = buf;
    em_pb_field_t f;
    size_t n = 0;
    out[n++] = 0;
    while (em_pb_next(&p, buf + len, &f) == EM_OK) {
        assert_true(n < max);
        out[n++] = (size_t)(p - buf);
    }
    assert_int_equal(out[n - 1], len);
    return n;
}

static int is_boundary(const size_t *b, size_t nb, size_t at, size_t *index) {
    for (size_t i = 0; i < nb; i++)
        if (b[i] == at) {
            *index = i;
            return 1;
        }
    return 0;
}

/* Every prefix of a valid message either walks cleanly to a field boundary
 * (EM_ENOTFOUND after exactly the fields before it) or is EM_EINVAL. */
static void every_truncation_is_refused_or_consistent(void **state) {
    (void)state;
    results3_t x;
    size_t len, b[8], idx;
    results3_init(&x);
    uint8_t *full = pack_publish(&x, &len);
    size_t nb = boundaries(full, len, b, EM_ARRAY_LEN(b));
    assert_int_equal(nb, 4);

    for (size_t cut = 0; cut <= len; cut++) {
        uint8_t *buf = exact_copy(full, cut);
        const uint8_t *p = buf, *end = buf + cut;
        em_pb_field_t f;
        em_err_t rc;
        size_t fields = 0;
        while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
            assert_true(p <= end);
            assert_true(f.data >= buf && f.data + f.len <= end);
            fields++;
        }
        if (is_boundary(b, nb, cut, &idx)) {
            if (rc != EM_ENOTFOUND || fields != idx)
                fail_msg("cut %zu (a boundary): %s after %zu fields", cut, em_errname(rc), fields);
        } else if (rc != EM_EINVAL) {
            fail_msg("cut %zu: %s after %zu fields, want EINVAL", cut, em_errname(rc), fields);
        }
        const uint8_t *d;
        size_t dl;
        rc = em_pb_find_len(buf, cut, 1, &d, &dl);
        assert_true(rc == (cut == 0 ? EM_ENOTFOUND : is_boundary(b, nb, cut, &idx) ? EM_OK : EM_EINVAL));
        free(buf);
    }

    /* the same inside one result: the id is found only once it is whole
     * and only when the rest of the prefix is well-formed */
    size_t rlen = execmesh__v1__result__get_packed_size(&x.r[1]);
    uint8_t *rfull = malloc(rlen);
    assert_non_null(rfull);
    execmesh__v1__result__pack(&x.r[1], rfull);
    size_t rb[16];
    size_t nrb = boundaries(rfull, rlen, rb, EM_ARRAY_LEN(rb));
    assert_int_equal(nrb, 12); /* 11 fields, all set */
    for (size_t cut = 0; cut <= rlen; cut++) {
        uint8_t *buf = exact_copy(rfull, cut);
        const uint8_t *d;
        size_t dl;
        em_err_t rc = em_pb_find_len(buf, cut, 1, &d, &dl);
        em_err_t want = !is_boundary(rb, nrb, cut, &idx) ? EM_EINVAL : idx == 0 ? EM_ENOTFOUND : EM_OK;
        if (rc != want)
            fail_msg("result cut %zu: %s, want %s", cut, em_errname(rc), em_errname(want));
        if (rc == EM_OK) {
            assert_true(d >= buf && d + dl <= buf + cut);
            assert_memory_equal(d, "job-2", dl);
        }
        free(buf);
    }
    free(rfull);
    free(full);
}

/* One malformed (or borderline valid) input and what the first em_pb_next
 * on it must return. */
typedef struct wire_case {
    const char *name;
    uint8_t bytes[16];
    size_t len;
    em_err_t rc;
} wire_case_t;

static const wire_case_t wire_cases[] = {
    {"empty", {0}, 0, EM_ENOTFOUND},
    {"overlong key varint", {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 11, EM_EINVAL},
    {"overlong value varint", {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 12,
     EM_EINVAL},
    {"overlong length varint", {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 12,
     EM_EINVAL},
    {"10-byte varint is fine", {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 11, EM_OK},
    {"key alone", {0x08}, 1, EM_EINVAL},
    {"varint cut", {0x08, 0x80}, 2, EM_EINVAL},
    {"key varint cut", {0x80}, 1, EM_EINVAL},
    {"length past the end", {0x0a, 0x05, 'a', 'b'}, 4, EM_EINVAL},
    {"length one past the end", {0x0a, 0x03, 'a', 'b'}, 4, EM_EINVAL},
    {"length exactly to the end", {0x0a, 0x02, 'a', 'b'}, 4, EM_OK},
    {"length 2^63", {0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, 11, EM_EINVAL},
    {"length 2^64-1", {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 11, EM_EINVAL},
    {"length missing", {0x0a}, 1, EM_EINVAL},
    {"I64 cut", {0x09, 1, 2, 3, 4, 5, 6, 7}, 8, EM_EINVAL},
    {"I32 cut", {0x0d, 1, 2, 3}, 4, EM_EINVAL},
    {"group start (3)", {0x0b, 0x08, 0x01, 0x0c}, 4, EM_EINVAL},
    {"group end (4)", {0x0c}, 1, EM_EINVAL},
    {"wire type 6", {0x0e, 0x00}, 2, EM_EINVAL},
    {"wire type 7", {0x0f, 0x00}, 2, EM_EINVAL},
    {"field 0 varint", {0x00, 0x01}, 2, EM_EINVAL},
    {"field 0 LEN", {0x02, 0x00}, 2, EM_EINVAL},
    {"field 0 in a padded key", {0x80, 0x00, 0x01}, 3, EM_EINVAL},
    {"field 2^29 (too large)", {0x80, 0x80, 0x80, 0x80, 0x10, 0x01}, 6, EM_EINVAL},
    {"field 2^29-1 (largest)", {0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01}, 6, EM_OK},
    /* found by tests/fuzz (records): protobuf-c refuses keys and lengths of
     * more than 5 bytes, so the intake must too */
    {"key padded to 5 bytes", {0x88, 0x80, 0x80, 0x80, 0x00, 0x01}, 6, EM_OK},
    {"key padded to 6 bytes", {0x88, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01}, 7, EM_EINVAL},
    {"length padded to 5 bytes", {0x0a, 0x80, 0x80, 0x80, 0x80, 0x00}, 6, EM_OK},
    {"length padded to 10 bytes", {0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 11,
     EM_EINVAL},
};

static void malformed_input_is_refused(void **state) {
    (void)state;
    for (size_t i = 0; i < EM_ARRAY_LEN(wire_cases); i++) {
        const wire_case_t *c = &wire_cases[i];
        uint8_t *buf = exact_copy(c->bytes, c->len);
        const uint8_t *p = buf, *end = buf + c->len;
        em_pb_field_t f;
        em_err_t rc = em_pb_next(&p, end, &f);
        if (rc != c->rc)
            fail_msg("%s: em_pb_next gave %s, want %s", c->name, em_errname(rc), em_errname(c->rc));
        assert_true(p >= buf && p <= end);
        if (rc == EM_OK) {
            assert_ptr_equal(p, end);
        } else {
            /* em_pb_find_len refuses or misses the same input, whatever field */
            const uint8_t *d;
            size_t dl;
            for (uint32_t n = 1; n <= 2; n++)
                if (em_pb_find_len(buf, c->len, n, &d, &dl) != rc)
                    fail_msg("%s: em_pb_find_len(%u) disagrees", c->name, n);
        }
        free(buf);
    }
}

static void malformed_tail_fails_the_whole_walk(void **state) {
    (void)state;
    /* a good field 1 followed by a group: find_len must not report the
     * earlier field as found */
    static const uint8_t msg[] = {0x0a, 0x02, 'o', 'k', 0x0b};
    uint8_t *buf = exact_copy(msg, sizeof(msg));
    const uint8_t *d = NULL;
    size_t dl = 0;
    assert_int_equal(em_pb_find_len(buf, sizeof(msg), 1, &d, &dl), EM_EINVAL);
    free(buf);
}

static void put_varint_round_trips(void **state) {
    (void)state;
    static const struct {
        uint64_t v;
        size_t len;
    } cases[] = {
        {0, 1},          {1, 1},           {127, 1},           {128, 2},           {300, 2},
        {16383, 2},      {16384, 3},       {UINT32_MAX, 5},    {1ULL << 35, 6},    {(1ULL << 56) - 1, 8},
        {1ULL << 56, 9}, {INT64_MAX, 9},   {1ULL << 63, 10},   {UINT64_MAX, 10},
    };
    for (size_t i = 0; i < EM_ARRAY_LEN(cases); i++) {
        uint8_t out[16];
        memset(out, 0xee, sizeof(out));
        out[0] = 0x08; /* field 1, varint */
        size_t n = em_pb_put_varint(out + 1, cases[i].v);
        if (n != cases[i].len)
            fail_msg("%llu: %zu bytes, want %zu", (unsigned long long)cases[i].v, n, cases[i].len);
        assert_int_equal(out[1 + n], 0xee); /* nothing written past the end */
        uint8_t *buf = exact_copy(out, n + 1);
        const uint8_t *p = buf;
        em_pb_field_t f;
        assert_int_equal(em_pb_next(&p, buf + n + 1, &f), EM_OK);
        assert_int_equal(f.number, 1);
        assert_int_equal(f.varint, cases[i].v);
        assert_ptr_equal(p, buf + n + 1);
        free(buf);

        /* byte for byte what protobuf-c writes for a uint32 field 1 */
        if (cases[i].v <= UINT32_MAX) {
            Execmesh__V1__PublishResponse resp = EXECMESH__V1__PUBLISH_RESPONSE__INIT;
            uint8_t pc[16];
            resp.stored = (uint32_t)cases[i].v;
            size_t pn = execmesh__v1__publish_response__pack(&resp, pc);
            if (cases[i].v == 0) {
                assert_int_equal(pn, 0); /* proto3 omits defaults */
            } else {
                assert_int_equal(pn, n + 1);
                assert_memory_equal(pc, out, pn);
            }
        }
    }
    uint8_t b[2];
    assert_int_equal(em_pb_put_varint(b, 300), 2);
    assert_int_equal(b[0], 0xac);
    assert_int_equal(b[1], 0x02);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(walks_results_of_a_publish_request),
        cmocka_unit_test(reads_every_wire_type),
        cmocka_unit_test(find_len_takes_the_last_occurrence),
        cmocka_unit_test(every_truncation_is_refused_or_consistent),
        cmocka_unit_test(malformed_input_is_refused),
        cmocka_unit_test(malformed_tail_fails_the_whole_walk),
        cmocka_unit_test(put_varint_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
