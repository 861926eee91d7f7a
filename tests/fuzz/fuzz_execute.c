/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: an Executor.Execute request's bytes, read as the executor
 * reads them (services/executor/request.c): the top level
 * (ex_request_scan), then each execution in place (ex_execution_read,
 * ex_execution_read_lists into an arena, as batch.c does).
 *
 * Properties: the views lie in the request; what protobuf-c decodes,
 * encoded again canonically, the executor reads too, with the same values (the scheduler's intake and
 * protobuf-c agree on what an Execution is; the executor must not refuse
 * what they accept).
 */
#include <string.h>

#include "em_arena.h"
#include "em_pbwire.h"
#include "execmesh/v1/internal.pb-c.h"
#include "executor.h"
#include "fuzz.h"

FUZZ_QUIET_INITIALIZE

static int span_is(ex_span_t s, const char *str) {
    size_t n = strlen(str);
    return n <= s.n && memcmp(s.p ? (const char *)s.p : "", str, n) == 0; /* protobuf-c's ends at a NUL */
}

/* Reads the request as the executor does; with pr (protobuf-c's reading of
 * the same bytes), every value must agree and nothing be refused. */
static void read_request(const uint8_t *data, size_t size, const Execmesh__V1__ExecuteRequest *pr) {
    ex_request_info_t ri;
    char msg[256];
    msg[0] = '\0';
    int scanned = ex_request_scan(data, size, &ri, msg, sizeof(msg));
    if (pr && pr->n_executions > 0 && !(pr->alone && pr->n_executions != 1))
        FUZZ_CHECK(scanned == 0, "the executor refuses a canonical request: %s", msg);
    if (scanned != 0) {
        FUZZ_CHECK(msg[0], "a refusal without a reason");
        return;
    }
    FUZZ_CHECK(ri.n >= 1 && (!ri.alone || ri.n == 1), "n %zu alone %d", ri.n, ri.alone);
    if (pr)
        FUZZ_CHECK(pr->n_executions == ri.n && (pr->alone != 0) == ri.alone &&
                       (pr->report_finished != 0) == ri.report_finished,
                   "the top level differs from protobuf-c's");

    em_arena_t *arena = em_arena_new(size + 4096);
    FUZZ_CHECK(arena, "out of memory");
    const uint8_t *p = data, *end = data + size;
    em_pb_field_t f;
    size_t i = 0;
    while (em_pb_next(&p, end, &f) == EM_OK) {
        if (f.number != 1)
            continue;
        ex_exec_t ex = {0};
        em_err_t rc = f.wire_type == EM_PB_LEN ? ex_execution_read(f.data, f.len, &ex) : EM_EINVAL;
        if (pr)
            FUZZ_CHECK(rc == EM_OK, "executions[%zu]: canonical, and the executor refuses it", i);
        if (rc == EM_OK) {
            FUZZ_CHECK(ex_execution_read_lists(arena, f.data, f.len, &ex) == EM_OK, "out of memory");
            FUZZ_CHECK(fuzz_within(ex.id.p, ex.id.n, data, size) &&
                           fuzz_within(ex.handler.p, ex.handler.n, data, size) &&
                           fuzz_within(ex.payload.p, ex.payload.n, data, size),
                       "a view outside the request");
            for (size_t k = 0; k < ex.nheaders; k++)
                FUZZ_CHECK(fuzz_within(ex.headers[k].p, ex.headers[k].n, data, size), "header outside the request");
            for (size_t k = 0; k < ex.nhistory; k++)
                FUZZ_CHECK(fuzz_within(ex.history[k].p, ex.history[k].n, data, size), "history outside the request");
            FUZZ_CHECK(ex.wire_len == f.len, "wire_len");
            if (pr) {
                const Execmesh__V1__Execution *pe = pr->executions[i];
                FUZZ_CHECK(span_is(ex.id, pe->id) && span_is(ex.handler, pe->handler), "id or handler differs");
                FUZZ_CHECK(ex.payload.n == pe->payload.len &&
                               (!ex.payload.n || memcmp(ex.payload.p, pe->payload.data, ex.payload.n) == 0),
                           "payload differs");
                FUZZ_CHECK(ex.nheaders == pe->n_headers && ex.nhistory == pe->n_history,
                           "headers %zu/%zu history %zu/%zu", ex.nheaders, pe->n_headers, ex.nhistory,
                           pe->n_history);
                FUZZ_CHECK(ex.timeout_ms == pe->timeout_ms && ex.attempt == pe->attempt &&
                               ex.max_attempts == pe->max_attempts && ex.submitted_unix_ms == pe->submitted_unix_ms &&
                               ex.deadline_unix_ms == pe->deadline_unix_ms,
                           "a scalar field differs");
            }
        }
        i++;
    }
    FUZZ_CHECK(i == ri.n, "scan counted %zu executions, the walk %zu", ri.n, i);
    em_arena_destroy(arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    read_request(data, size, NULL);
    /* protobuf-c accepts some malformed input (a bool of any wire type,
     * field numbers 0 or past 2^29 - 1, which it writes back: dropped here) the
     * executor rightly refuses: what is compared is the canonical encoding
     * of what protobuf-c decoded */
    Execmesh__V1__ExecuteRequest *pr = execmesh__v1__execute_request__unpack(NULL, size, data);
    if (pr) {
        fuzz_drop_bad_unknown(&pr->base);
        size_t n = execmesh__v1__execute_request__get_packed_size(pr);
        uint8_t *buf = malloc(n ? n : 1);
        FUZZ_CHECK(buf, "out of memory");
        execmesh__v1__execute_request__pack(pr, buf);
        read_request(buf, n, pr);
        free(buf);
        execmesh__v1__execute_request__free_unpacked(pr, NULL);
    }
    return 0;
}
