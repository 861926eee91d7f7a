/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: a Scheduler.Submit request's bytes, as any caller sends
 * them. sc_submit_decode (services/scheduler/requests.c) decodes and
 * checks them as the handler does; then each accepted execution is written
 * as submit.c writes it to the requests topic (an id given when it had
 * none, attempt 0, the submit time) and must pass the scheduler's own
 * intake check (em_execution_inspect): a Submit answered OK must never
 * turn into a dead letter.
 */
#include <string.h>

#include "em_execution.h"
#include "execmesh/v1/execmesh.pb-c.h"
#include "fuzz.h"
#include "scheduler.h"

FUZZ_QUIET_INITIALIZE

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const sc_submit_limits_t lim = {.max_executions = 1000, .max_payload = 1048576};
    char msg[512];
    msg[0] = '\0';
    Execmesh__V1__SubmitRequest *in = sc_submit_decode(data, size, &lim, msg, sizeof(msg));
    if (!in) {
        FUZZ_CHECK(msg[0], "a refusal without a reason");
        return 0;
    }
    FUZZ_CHECK(in->n_executions >= 1 && in->n_executions <= 1000, "%zu executions accepted", in->n_executions);
    for (size_t i = 0; i < in->n_executions; i++) {
        Execmesh__V1__Execution e = *in->executions[i];
        if (!*e.id)
            e.id = (char *)(uintptr_t)"0123456789abcdef0123456789abcdef";
        e.attempt = 0;
        e.submitted_unix_ms = 1700000000000;
        size_t n = execmesh__v1__execution__get_packed_size(&e);
        uint8_t *buf = malloc(n ? n : 1);
        FUZZ_CHECK(buf, "out of memory");
        FUZZ_CHECK(execmesh__v1__execution__pack(&e, buf) == n, "packed size differs");
        em_exec_info_t info;
        char why[128];
        FUZZ_CHECK(em_execution_inspect(buf, n, &info, why, sizeof(why)) == EM_OK,
                   "Submit accepted executions[%zu], which the intake would dead-letter: %s", i, why);
        FUZZ_CHECK(info.handler_len >= 1 && info.handler_len <= 128, "handler of %zu bytes accepted",
                   info.handler_len);
        FUZZ_CHECK(info.id_len >= 1 && info.id_len <= 256, "id of %zu bytes accepted", info.id_len);
        free(buf);
    }
    execmesh__v1__submit_request__free_unpacked(in, NULL);
    return 0;
}
