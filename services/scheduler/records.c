/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The final results the scheduler writes itself (EXHAUSTED after the
 * quarantine, CANCELLED), made from an execution's bytes as they came from
 * the requests topic (or as dispatched): a pure function of those bytes, so
 * outcome.c and the fuzz target of the Kafka path (tests/fuzz/fuzz_records.c)
 * run the same code.
 */
#include <stdint.h>
#include <stdlib.h>

#include "em_util.h"
#include "execmesh/v1/execmesh.pb-c.h"
#include "scheduler.h"

uint8_t *sc_own_result(const uint8_t *exec, size_t exec_len, const char *id, uint32_t attempt, int status,
                       const em_attempt_t *add, int nadd, const char *error, size_t *len) {
    Execmesh__V1__Execution *ex = execmesh__v1__execution__unpack(NULL, exec_len, exec);
    if (!ex)
        return NULL;
    Execmesh__V1__Result r = EXECMESH__V1__RESULT__INIT;
    Execmesh__V1__Attempt la[SC_MAX_SUSPECTS + 1];
    for (int i = 0; i < nadd && i < SC_MAX_SUSPECTS + 1; i++) {
        execmesh__v1__attempt__init(&la[i]);
        la[i].attempt = add[i].attempt;
        la[i].status = (Execmesh__V1__Status)add[i].status;
        la[i].executor = (char *)(uintptr_t)(add[i].executor ? add[i].executor : "");
        la[i].error = (char *)(uintptr_t)add[i].error; /* NUL-terminated: ours */
        la[i].finished_unix_ms = add[i].finished_unix_ms;
    }
    Execmesh__V1__Attempt **hist = calloc(ex->n_history + (size_t)nadd, sizeof(*hist));
    Execmesh__V1__Result__HeadersEntry *hv = calloc(ex->n_headers + 1, sizeof(*hv));
    Execmesh__V1__Result__HeadersEntry **hp = calloc(ex->n_headers + 1, sizeof(*hp));
    uint8_t *out = NULL;
    if (hist && hv && hp) {
        for (size_t i = 0; i < ex->n_history; i++)
            hist[i] = ex->history[i];
        for (int i = 0; i < nadd && i < SC_MAX_SUSPECTS + 1; i++)
            hist[ex->n_history + (size_t)i] = &la[i];
        for (size_t i = 0; i < ex->n_headers; i++) {
            execmesh__v1__result__headers_entry__init(&hv[i]);
            hv[i].key = ex->headers[i]->key;
            hv[i].value = ex->headers[i]->value;
            hp[i] = &hv[i];
        }
        r.id = id ? (char *)(uintptr_t)id : ex->id;
        r.attempt = attempt;
        r.status = (Execmesh__V1__Status)status;
        r.error = (char *)(uintptr_t)error;
        r.executor = nadd ? la[nadd - 1].executor : (char *)(uintptr_t)"";
        r.submitted_unix_ms = ex->submitted_unix_ms;
        r.handler = ex->handler;
        r.dispatched_unix_ms = ex->dispatched_unix_ms;
        r.finished_unix_ms = nadd ? add[nadd - 1].finished_unix_ms : em_now_unix_ms();
        r.n_headers = ex->n_headers;
        r.headers = hp;
        r.final = 1;
        r.n_history = ex->n_history + (size_t)nadd;
        r.history = hist;
        *len = execmesh__v1__result__get_packed_size(&r);
        if ((out = malloc(*len ? *len : 1)))
            execmesh__v1__result__pack(&r, out);
    }
    free(hist);
    free(hv);
    free(hp);
    execmesh__v1__execution__free_unpacked(ex, NULL);
    return out;
}
