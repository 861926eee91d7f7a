/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: a record's value on the requests topic, as the scheduler
 * takes it (anyone who may produce to the topic writes these bytes).
 *
 *   em_execution_inspect   the intake's one-pass check and read
 *                          (services/scheduler/intake.c)
 *   em_execution_append    what dispatch sends: the bytes with the mesh's
 *                          fields appended, inspected again
 *   sc_own_result          the final result the scheduler writes itself
 *                          for a cancelled or quarantined record
 *                          (services/scheduler/records.c), read back by
 *                          em_result_read
 *
 * Properties beyond "no sanitizer report": the views inspect returns lie in
 * the record; a record inspect accepts is one protobuf-c (the executors'
 * and sc_own_result's reader) decodes, with the same values; the appended
 * fields win; the scheduler's own result of it is a Result carrying its id
 * and attempt.
 */
#include <string.h>

#include "em_execution.h"
#include "em_trace.h"
#include "execmesh/v1/execmesh.pb-c.h"
#include "fuzz.h"
#include "scheduler.h"

FUZZ_QUIET_INITIALIZE

static void check_protobuf_c_agrees(const uint8_t *data, size_t size, const em_exec_info_t *in) {
    Execmesh__V1__Execution *ex = execmesh__v1__execution__unpack(NULL, size, data);
    FUZZ_CHECK(ex, "em_execution_inspect accepted a record protobuf-c cannot decode (%zu bytes): the executors "
                   "could not read it, and the scheduler could not write its cancelled or quarantined result",
               size);
    FUZZ_CHECK(strlen(ex->id) == in->id_len && (!in->id_len || memcmp(ex->id, in->id, in->id_len) == 0),
               "id differs");
    FUZZ_CHECK(strlen(ex->handler) == in->handler_len &&
                   (!in->handler_len || memcmp(ex->handler, in->handler, in->handler_len) == 0),
               "handler differs");
    FUZZ_CHECK(ex->timeout_ms == in->timeout_ms && ex->max_attempts == in->max_attempts &&
                   ex->attempt == in->attempt && ex->executor_deaths == in->executor_deaths,
               "a uint32 field differs");
    FUZZ_CHECK(ex->submitted_unix_ms == in->submitted_unix_ms && ex->deadline_unix_ms == in->deadline_unix_ms,
               "a time differs");
    FUZZ_CHECK(ex->n_history == in->nhistory, "history: protobuf-c %zu entries, inspect %zu", ex->n_history,
               in->nhistory);
    execmesh__v1__execution__free_unpacked(ex, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    em_exec_info_t in;
    char why[128];
    why[0] = '\0';
    if (size == 0) /* librdkafka hands an empty (or null) value as NULL */
        FUZZ_CHECK(em_execution_inspect(NULL, 0, &in, why, sizeof(why)) == EM_OK && !in.id && !in.handler,
                   "an empty record");
    if (em_execution_inspect(data, size, &in, why, sizeof(why)) != EM_OK) {
        FUZZ_CHECK(why[0] && memchr(why, '\0', sizeof(why)), "a refusal without a reason");
        return 0;
    }
    FUZZ_CHECK(fuzz_within(in.id, in.id_len, data, size), "id outside the record");
    FUZZ_CHECK(fuzz_within(in.handler, in.handler_len, data, size), "handler outside the record");
    check_protobuf_c_agrees(data, size, &in);

    /* dispatch: the next attempt, an id when the record had none, its submit time */
    static const char gen_id[] = "execmesh.requests/3/41";
    uint32_t attempt = in.attempt ? in.attempt + 1 : 1;
    size_t idl = in.id_len ? 0 : sizeof(gen_id) - 1;
    int64_t submitted = in.submitted_unix_ms ? 0 : 1700000000000;
    em_exec_append_t app = {.attempt = attempt,
                            .id = idl ? gen_id : NULL,
                            .id_len = idl,
                            .submitted_unix_ms = submitted,
                            .dispatched_unix_ms = 1700000000500};
    size_t extra = em_execution_append_size(&app);
    uint8_t *sent = malloc(size + extra);
    FUZZ_CHECK(sent, "out of memory");
    if (size)
        memcpy(sent, data, size);
    uint8_t *end = em_execution_append(sent + size, &app);
    FUZZ_CHECK((size_t)(end - sent) == size + extra, "em_execution_append wrote %zu bytes, said %zu",
               (size_t)(end - sent) - size, extra);
    em_exec_info_t again;
    FUZZ_CHECK(em_execution_inspect(sent, size + extra, &again, why, sizeof(why)) == EM_OK,
               "the record as dispatched is refused: %s", why);
    FUZZ_CHECK(again.attempt == attempt, "the appended attempt does not win");
    if (idl)
        FUZZ_CHECK(again.id_len == idl && memcmp(again.id, gen_id, idl) == 0, "the appended id does not win");
    FUZZ_CHECK(again.dispatched_unix_ms == 1700000000500, "the appended dispatch time does not win");
    FUZZ_CHECK(!in.traceparent == !again.traceparent &&
                   (!in.traceparent || em_traceparent_trace_id(again.traceparent, again.traceparent_len)),
               "dispatch changed whether it has a valid traceparent");
    check_protobuf_c_agrees(sent, size + extra, &again);

    /* the scheduler's own final result: cancelled while it waited, with
     * the last attempt an executor death (as the quarantine writes it) */
    em_attempt_t died = {.attempt = attempt, .status = EXECMESH__V1__STATUS__FAILED, .executor = "executor-1",
                         .executor_len = 10, .error = "the executor died running it alone", .error_len = 34,
                         .finished_unix_ms = 1700000000999};
    for (int nadd = 0; nadd <= 1; nadd++) {
        size_t rlen = 0;
        uint8_t *rec = sc_own_result(sent, size + extra, NULL, attempt,
                                     nadd ? EXECMESH__V1__STATUS__EXHAUSTED : EXECMESH__V1__STATUS__CANCELLED,
                                     &died, nadd, "cancelled while it waited in Kafka", &rlen);
        FUZZ_CHECK(rec, "sc_own_result could not write the result of a record the intake accepted");
        em_result_info_t r;
        FUZZ_CHECK(em_result_read(rec, rlen, &r) == EM_OK, "the scheduler's own result is not a Result");
        FUZZ_CHECK(r.final && r.attempt == attempt, "final %d attempt %u", r.final, r.attempt);
        FUZZ_CHECK(r.id_len == again.id_len && (!r.id_len || memcmp(r.id, again.id, r.id_len) == 0),
                   "the result's id is not the execution's");
        free(rec);
    }
    free(sent);
    return 0;
}
