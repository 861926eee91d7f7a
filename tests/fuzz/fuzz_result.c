/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: a Result as the scheduler reads it from an executor's
 * Execute answer (em_result_read, services/scheduler/dispatch.c), and what
 * it writes from one that failed with attempts left: the failed attempt as
 * a history entry (em_attempt_field_write) appended to the execution's
 * record, which comes back through the intake (outcome.c).
 *
 * Properties: the views lie in the buffer; a Result protobuf-c decodes,
 * encoded again canonically, is one em_result_read accepts, with the same
 * values; the attempt entry
 * written from it is read back by protobuf-c with the same values, and an
 * execution carrying it passes the intake's check when the strings it
 * copies are valid UTF-8.
 */
#include <string.h>

#include "em_execution.h"
#include "execmesh/v1/execmesh.pb-c.h"
#include "fuzz.h"

FUZZ_QUIET_INITIALIZE

/* A Result as a conforming writer encodes it (protobuf-c's pack of what it
 * decoded) must be read by em_result_read with the same values. protobuf-c
 * itself accepts some malformed input (a bool of any wire type, field
 * numbers 0 or past 2^29 - 1, which it writes back: fuzz_drop_bad_unknown),
 * which em_result_read rightly refuses: the raw bytes are not compared,
 * their canonical encoding is. */
static void check_canonical(const Execmesh__V1__Result *pr) {
    size_t n = execmesh__v1__result__get_packed_size(pr);
    uint8_t *buf = malloc(n ? n : 1);
    FUZZ_CHECK(buf, "out of memory");
    execmesh__v1__result__pack(pr, buf);
    em_result_info_t r;
    FUZZ_CHECK(em_result_read(buf, n, &r) == EM_OK, "em_result_read refuses a canonical Result (%zu bytes)", n);
    FUZZ_CHECK(r.attempt == pr->attempt && r.status == (int)pr->status && r.final == (pr->final != 0) &&
                   r.exit_code == pr->exit_code && r.retry_delay_ms == pr->retry_delay_ms &&
                   r.started_unix_ms == pr->started_unix_ms && r.finished_unix_ms == pr->finished_unix_ms,
               "a scalar field differs from protobuf-c's");
    FUZZ_CHECK(r.id_len == strlen(pr->id) && (!r.id_len || memcmp(r.id, pr->id, r.id_len) == 0),
               "id differs from protobuf-c's");
    FUZZ_CHECK(r.error_len == strlen(pr->error) && r.executor_len == strlen(pr->executor),
               "error or executor differs from protobuf-c's");
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Execmesh__V1__Result *pr = execmesh__v1__result__unpack(NULL, size, data);
    if (pr) {
        fuzz_drop_bad_unknown(&pr->base);
        check_canonical(pr);
        execmesh__v1__result__free_unpacked(pr, NULL);
    }
    em_result_info_t r;
    if (em_result_read(data, size, &r) != EM_OK)
        return 0;
    FUZZ_CHECK(fuzz_within(r.id, r.id_len, data, size), "id outside the buffer");
    FUZZ_CHECK(fuzz_within(r.error, r.error_len, data, size), "error outside the buffer");
    FUZZ_CHECK(fuzz_within(r.executor, r.executor_len, data, size), "executor outside the buffer");

    /* the failed attempt, as the retry's history entry (outcome.c) */
    em_attempt_t a = {.attempt = r.attempt,
                      .status = r.status,
                      .executor = (const char *)r.executor,
                      .executor_len = r.executor_len,
                      .error = (const char *)r.error,
                      .error_len = r.error_len,
                      .exit_code = r.exit_code,
                      .started_unix_ms = r.started_unix_ms,
                      .finished_unix_ms = r.finished_unix_ms};
    static const uint8_t head[] = {0x12, 0x04, 'e', 'c', 'h', 'o'}; /* handler "echo" */
    size_t n = sizeof(head) + em_attempt_field_size(10, &a);
    uint8_t *rec = malloc(n);
    FUZZ_CHECK(rec, "out of memory");
    memcpy(rec, head, sizeof(head));
    uint8_t *end = em_attempt_field_write(rec + sizeof(head), 10, &a);
    FUZZ_CHECK((size_t)(end - rec) == n, "em_attempt_field_write wrote %zu bytes, em_attempt_field_size said %zu",
               (size_t)(end - rec), n);
    Execmesh__V1__Execution *ex = execmesh__v1__execution__unpack(NULL, n, rec);
    FUZZ_CHECK(ex && ex->n_history == 1, "protobuf-c cannot read the attempt entry");
    const Execmesh__V1__Attempt *h = ex->history[0];
    FUZZ_CHECK(h->attempt == a.attempt && (int)h->status == a.status && h->exit_code == a.exit_code &&
                   h->started_unix_ms == a.started_unix_ms && h->finished_unix_ms == a.finished_unix_ms,
               "the attempt entry reads back different");
    execmesh__v1__execution__free_unpacked(ex, NULL);
    em_exec_info_t in;
    char why[128];
    if (em_utf8_valid(r.executor ? r.executor : (const uint8_t *)"", r.executor_len) &&
        em_utf8_valid(r.error ? r.error : (const uint8_t *)"", r.error_len))
        FUZZ_CHECK(em_execution_inspect(rec, n, &in, why, sizeof(why)) == EM_OK && in.nhistory == 1,
                   "the retry's record would be dead-lettered: %s", why);
    free(rec);
    return 0;
}
