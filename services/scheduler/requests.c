/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Scheduler.Submit's and Scheduler.Cancel's requests, decoded and checked:
 * pure functions of the bytes (and the submit.* limits), so the handlers
 * (submit.c, cancel.c) and the fuzz targets (tests/fuzz/fuzz_submit.c,
 * fuzz_cancel.c) run the same code. Each answers the decoded request or
 * NULL with the first problem, which the handler sends as INVALID_ARGUMENT.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "em_execution.h"
#include "em_pbwire.h"
#include "scheduler.h"

#define SUBMIT_MAX_ID 256
#define SUBMIT_MAX_HANDLER 128

/* The first problem with req, as "executions[i].field: reason", or NULL. */
static const char *validate(const sc_submit_limits_t *lim, const Execmesh__V1__SubmitRequest *req, char *msg,
                            size_t n) {
    if (req->n_executions == 0) {
        snprintf(msg, n, "executions: empty; a Submit carries at least one execution");
        return msg;
    }
    if ((int64_t)req->n_executions > lim->max_executions) {
        snprintf(msg, n, "executions: %zu executions, at most %" PRId64 " per Submit", req->n_executions,
                 lim->max_executions);
        return msg;
    }
    for (size_t i = 0; i < req->n_executions; i++) {
        const Execmesh__V1__Execution *ex = req->executions[i];
        size_t hl = strlen(ex->handler);
        if (hl == 0) {
            snprintf(msg, n, "executions[%zu].handler: required", i);
            return msg;
        }
        if (hl > SUBMIT_MAX_HANDLER) {
            snprintf(msg, n, "executions[%zu].handler: %zu bytes, at most %d", i, hl, SUBMIT_MAX_HANDLER);
            return msg;
        }
        if ((int64_t)ex->payload.len > lim->max_payload) {
            snprintf(msg, n, "executions[%zu].payload: %zu bytes, at most %" PRId64 " (submit.max_payload_bytes)", i,
                     ex->payload.len, lim->max_payload);
            return msg;
        }
        if (strlen(ex->id) > SUBMIT_MAX_ID) {
            snprintf(msg, n, "executions[%zu].id: %zu bytes, at most %d", i, strlen(ex->id), SUBMIT_MAX_ID);
            return msg;
        }
    }
    return NULL;
}

/* Each execution as it came must pass the check the intake runs on the
 * requests topic (em_execution_inspect): else Submit would answer OK for an
 * execution that is then dead-lettered, never run, with no result. protobuf-c
 * decodes strings that are not UTF-8, and cuts them at a NUL byte, so the
 * bytes are checked, not the decoded request. The first problem, or NULL. */
static const char *check_wire(const uint8_t *req, size_t len, char *msg, size_t n) {
    const uint8_t *p = req, *end = req + len;
    em_pb_field_t f;
    em_err_t rc;
    size_t i = 0;
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        if (f.number != 1)
            continue;
        em_exec_info_t info;
        char why[128];
        if (f.wire_type != EM_PB_LEN || em_execution_inspect(f.data, f.len, &info, why, sizeof(why)) != EM_OK) {
            snprintf(msg, n, "executions[%zu]: %s", i, f.wire_type != EM_PB_LEN ? "not an Execution" : why);
            return msg;
        }
        i++;
    }
    if (rc != EM_ENOTFOUND) { /* what protobuf-c lets pass: field numbers past 2^29 - 1 */
        snprintf(msg, n, "SubmitRequest: cannot decode");
        return msg;
    }
    return NULL;
}

Execmesh__V1__SubmitRequest *sc_submit_decode(const uint8_t *req, size_t len, const sc_submit_limits_t *lim,
                                              char *msg, size_t n) {
    Execmesh__V1__SubmitRequest *in = execmesh__v1__submit_request__unpack(NULL, len, req);
    if (!in) {
        snprintf(msg, n, "SubmitRequest: cannot decode");
        return NULL;
    }
    if (validate(lim, in, msg, n) || check_wire(req, len, msg, n)) {
        execmesh__v1__submit_request__free_unpacked(in, NULL);
        return NULL;
    }
    return in;
}

Execmesh__V1__CancelRequest *sc_cancel_decode(const uint8_t *req, size_t len, char *msg, size_t n) {
    Execmesh__V1__CancelRequest *in = execmesh__v1__cancel_request__unpack(NULL, len, req);
    if (!in) {
        snprintf(msg, n, "CancelRequest: cannot decode");
        return NULL;
    }
    int bad = 1;
    if (in->n_ids == 0)
        snprintf(msg, n, "ids: empty; a Cancel names at least one execution");
    else if (in->n_ids > SC_CANCEL_MAX_IDS)
        snprintf(msg, n, "ids: %zu ids, at most %d per Cancel", in->n_ids, SC_CANCEL_MAX_IDS);
    else
        bad = 0;
    for (size_t i = 0; !bad && i < in->n_ids; i++) {
        size_t idl = strlen(in->ids[i]);
        if (idl == 0 || idl > SC_CANCEL_MAX_ID) {
            snprintf(msg, n, "ids[%zu]: %zu bytes, 1 to %d", i, idl, SC_CANCEL_MAX_ID);
            bad = 1;
        }
    }
    if (bad) {
        execmesh__v1__cancel_request__free_unpacked(in, NULL);
        return NULL;
    }
    return in;
}
