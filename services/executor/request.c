/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading an ExecuteRequest off the wire, without copying and without the
 * executor's state: the top level (how many executions, alone,
 * report_finished) and each Execution's fields as views into the request.
 * Pure functions of the bytes, so batch.c and the fuzz target
 * (tests/fuzz/fuzz_execute.c) run the same code.
 */
#include <stdio.h>
#include <string.h>

#include "em_arena.h"
#include "em_pbwire.h"
#include "em_trace.h"
#include "executor.h"

int ex_request_scan(const uint8_t *req, size_t len, ex_request_info_t *ri, char *msg, size_t msg_size) {
    const uint8_t *p = req, *end = req + len;
    em_pb_field_t f;
    em_err_t rc;
    *ri = (ex_request_info_t){0};
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        ri->n += f.number == 1;
        if (f.number == 2 && f.wire_type == EM_PB_VARINT)
            ri->alone = f.varint != 0;
        if (f.number == 3 && f.wire_type == EM_PB_VARINT)
            ri->report_finished = f.varint != 0;
    }
    if (rc != EM_ENOTFOUND)
        snprintf(msg, msg_size, "ExecuteRequest: cannot decode");
    else if (ri->n == 0)
        snprintf(msg, msg_size, "executions: empty");
    else if (ri->alone && ri->n != 1)
        snprintf(msg, msg_size, "alone: a call that runs alone carries one execution, not %zu", ri->n);
    else
        return 0;
    return -1;
}

em_err_t ex_execution_read(const uint8_t *buf, size_t len, ex_exec_t *ex) {
    const uint8_t *p = buf, *end = buf + len;
    em_pb_field_t f;
    em_err_t rc;
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        int want_len = (f.number >= 1 && f.number <= 4) || f.number == 10;
        int want_varint = (f.number >= 5 && f.number <= 9) || f.number == 11 || f.number == 12;
        if ((want_len && f.wire_type != EM_PB_LEN) || (want_varint && f.wire_type != EM_PB_VARINT))
            return EM_EINVAL;
        switch (f.number) {
        case 1: ex->id = (ex_span_t){f.data, f.len}; break;
        case 2: ex->handler = (ex_span_t){f.data, f.len}; break;
        case 3: ex->payload = (ex_span_t){f.data, f.len}; break;
        case 4: ex->nheaders++; break;
        case 5: ex->timeout_ms = (uint32_t)f.varint; break;
        case 6: ex->max_attempts = (uint32_t)f.varint; break;
        case 7: ex->attempt = (uint32_t)f.varint; break;
        case 8: ex->submitted_unix_ms = (int64_t)f.varint; break;
        case 9: ex->deadline_unix_ms = (int64_t)f.varint; break;
        case 10: ex->nhistory++; break;
        case 12: ex->dispatched_unix_ms = (int64_t)f.varint; break;
        default: break;
        }
    }
    if (rc != EM_ENOTFOUND)
        return EM_EINVAL;
    ex->wire_len = len;
    return EM_OK;
}

const char *ex_trace_id(const ex_exec_t *ex, char *buf) {
    if (ex->trace_id.n) {
        memcpy(buf, ex->trace_id.p, 32);
        buf[32] = '\0';
        return buf;
    }
    return em_trace_id_of(NULL, 0, ex->id.p, ex->id.n, buf);
}

em_err_t ex_execution_read_lists(em_arena_t *a, const uint8_t *buf, size_t len, ex_exec_t *ex) {
    size_t nh = ex->nheaders, nhist = ex->nhistory;
    ex->nheaders = ex->nhistory = 0;
    if (nh == 0 && nhist == 0) /* the common case */
        return EM_OK;
    if ((nh && !(ex->headers = em_arena_alloc(a, nh * sizeof(*ex->headers), 0))) ||
        (nhist && !(ex->history = em_arena_alloc(a, nhist * sizeof(*ex->history), 0))))
        return EM_ENOMEM;
    em_pb_field_t f;
    for (const uint8_t *p = buf; em_pb_next(&p, buf + len, &f) == EM_OK;) {
        if (f.number == 4) {
            ex->headers[ex->nheaders++] = (ex_span_t){f.data, f.len};
            const uint8_t *v;
            size_t vn;
            if (em_header_is(f.data, f.len, EM_TRACEPARENT, &v, &vn) && em_traceparent_trace_id(v, vn))
                ex->trace_id = (ex_span_t){v + 3, 32};
        }
        else if (f.number == 10)
            ex->history[ex->nhistory++] = (ex_span_t){f.data, f.len};
    }
    return EM_OK;
}
