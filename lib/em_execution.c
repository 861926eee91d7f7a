/* SPDX-License-Identifier: Apache-2.0 */
/* One-pass checking and reading of an Execution's wire bytes. */
#include "em_execution.h"

#include <stdio.h>
#include <string.h>

#include "em_pbwire.h"
#include "em_trace.h"

int em_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) {
            k = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + k >= n)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

static const char *const field_names[] = {"",        "id",      "handler",           "payload",
                                          "headers", "timeout_ms", "max_attempts",  "attempt",
                                          "submitted_unix_ms", "deadline_unix_ms", "history", "executor_deaths",
                                          "dispatched_unix_ms"};

static em_err_t bad(char *reason, size_t n, uint32_t field, const char *what) {
    if (field >= 1 && field <= 12)
        snprintf(reason, n, "field %u (%s): %s", field, field_names[field], what);
    else
        snprintf(reason, n, "%s", what);
    return EM_EINVAL;
}

static em_err_t check_header(const uint8_t *p, size_t len, char *reason, size_t n) {
    const uint8_t *end = p + len;
    em_pb_field_t f;
    em_err_t rc;
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        if (f.number == 1 || f.number == 2) {
            if (f.wire_type != EM_PB_LEN)
                return bad(reason, n, 4, "map entry field of the wrong wire type");
            if (!em_utf8_valid(f.data, f.len))
                return bad(reason, n, 4, f.number == 1 ? "key is not valid UTF-8 (or has NUL)"
                                                       : "value is not valid UTF-8 (or has NUL)");
        }
    }
    return rc == EM_ENOTFOUND ? EM_OK : bad(reason, n, 4, "malformed map entry");
}

/* An Attempt entry: well-formed, its strings (executor, error) valid UTF-8. */
static em_err_t check_attempt(const uint8_t *p, size_t len) {
    const uint8_t *end = p + len;
    em_pb_field_t f;
    em_err_t rc;
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        int is_str = f.number == 3 || f.number == 4;
        if (is_str && (f.wire_type != EM_PB_LEN || !em_utf8_valid(f.data, f.len)))
            return EM_EINVAL;
        if (!is_str && f.number >= 1 && f.number <= 7 && f.wire_type != EM_PB_VARINT)
            return EM_EINVAL;
    }
    return rc == EM_ENOTFOUND ? EM_OK : EM_EINVAL;
}

em_err_t em_execution_inspect(const uint8_t *buf, size_t len, em_exec_info_t *info, char *reason, size_t n) {
    memset(info, 0, sizeof(*info));
    if (len == 0) /* an empty Execution; librdkafka hands an empty or null value as NULL: no arithmetic on it */
        return EM_OK;
    const uint8_t *p = buf, *end = buf + len;
    em_pb_field_t f;
    em_err_t rc;
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        switch (f.number) {
        case 1:
        case 2:
            if (f.wire_type != EM_PB_LEN)
                return bad(reason, n, f.number, "wrong wire type, expected length-delimited");
            if (!em_utf8_valid(f.data, f.len))
                return bad(reason, n, f.number, "not valid UTF-8 (or has a NUL byte)");
            if (f.number == 1) {
                info->id = f.data;
                info->id_len = f.len;
            } else {
                info->handler = f.data;
                info->handler_len = f.len;
            }
            break;
        case 3:
            if (f.wire_type != EM_PB_LEN)
                return bad(reason, n, 3, "wrong wire type, expected length-delimited");
            break;
        case 4:
            if (f.wire_type != EM_PB_LEN)
                return bad(reason, n, 4, "wrong wire type, expected length-delimited");
            if (check_header(f.data, f.len, reason, n) != EM_OK)
                return EM_EINVAL;
            const uint8_t *v;
            size_t vn;
            if (em_header_is(f.data, f.len, EM_TRACEPARENT, &v, &vn)) { /* the last one wins, valid or not */
                int ok = em_traceparent_trace_id(v, vn);
                info->traceparent = ok ? v : NULL;
                info->traceparent_len = ok ? vn : 0;
            }
            break;
        case 5:
        case 6:
        case 7:
        case 8:
        case 9:
        case 11:
        case 12:
            if (f.wire_type != EM_PB_VARINT)
                return bad(reason, n, f.number, "wrong wire type, expected varint");
            switch (f.number) {
            case 5: info->timeout_ms = (uint32_t)f.varint; break;
            case 6: info->max_attempts = (uint32_t)f.varint; break;
            case 7: info->attempt = (uint32_t)f.varint; break;
            case 8: info->submitted_unix_ms = (int64_t)f.varint; break;
            case 9: info->deadline_unix_ms = (int64_t)f.varint; break;
            case 12: info->dispatched_unix_ms = (int64_t)f.varint; break;
            default: info->executor_deaths = (uint32_t)f.varint; break;
            }
            break;
        case 10:
            if (f.wire_type != EM_PB_LEN)
                return bad(reason, n, 10, "wrong wire type, expected length-delimited");
#ifdef EM_FUZZ_PLANTED_BUG
            /* TEST ONLY (cmake -DEM_FUZZ_PLANTED_BUG=ON, fuzz builds only): a
             * planted bug for scripts/fuzz.sh --planted to prove its CI mode
             * finds: the Attempt's first byte is read without checking there
             * is one, so an empty history entry at the end of a record reads
             * one byte past it. */
            if (f.data[0] == 0xff)
                return bad(reason, n, 10, "planted");
#endif
            if (check_attempt(f.data, f.len) != EM_OK)
                return bad(reason, n, 10, "malformed Attempt (or a string in it not valid UTF-8)");
            info->nhistory++;
            break;
        default: break; /* unknown fields are skipped, as any reader would */
        }
    }
    if (rc != EM_ENOTFOUND)
        return bad(reason, n, 0, "malformed protobuf (truncated, overlong varint or bad wire type)");
    return EM_OK;
}

size_t em_varint_size(uint64_t v) { return em_pb_varint_size(v); }

size_t em_execution_append_size(const em_exec_append_t *a) {
    size_t n = 1 + em_varint_size(a->attempt);
    if (a->id_len)
        n += em_pb_len_field_size(1, a->id_len);
    if (a->submitted_unix_ms)
        n += 1 + em_varint_size((uint64_t)a->submitted_unix_ms);
    if (a->dispatched_unix_ms)
        n += 1 + em_varint_size((uint64_t)a->dispatched_unix_ms);
    return n;
}

uint8_t *em_execution_append(uint8_t *out, const em_exec_append_t *a) {
    if (a->id_len)
        out = em_pb_write_len_field(out, 1, a->id, a->id_len);
    *out++ = (7 << 3) | EM_PB_VARINT;
    out += em_pb_put_varint(out, a->attempt);
    if (a->submitted_unix_ms) {
        *out++ = (8 << 3) | EM_PB_VARINT;
        out += em_pb_put_varint(out, (uint64_t)a->submitted_unix_ms);
    }
    if (a->dispatched_unix_ms) {
        *out++ = (12 << 3) | EM_PB_VARINT;
        out += em_pb_put_varint(out, (uint64_t)a->dispatched_unix_ms);
    }
    return out;
}

em_err_t em_result_read(const uint8_t *buf, size_t len, em_result_info_t *info) {
    const uint8_t *p = buf, *end = buf + len;
    em_pb_field_t f;
    em_err_t rc;
    memset(info, 0, sizeof(*info));
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        int want_len = f.number == 1 || f.number == 4 || f.number == 5 || f.number == 7 || f.number == 11 ||
                       f.number == 13 || f.number == 15;
        if (f.number >= 1 && f.number <= 16 && (want_len ? f.wire_type != EM_PB_LEN : f.wire_type != EM_PB_VARINT))
            return EM_EINVAL;
        switch (f.number) {
        case 1: info->id = f.data; info->id_len = f.len; break;
        case 2: info->attempt = (uint32_t)f.varint; break;
        case 3: info->status = (int)f.varint; break;
        case 5: info->error = f.data; info->error_len = f.len; break;
        case 6: info->exit_code = (int32_t)f.varint; break;
        case 7: info->executor = f.data; info->executor_len = f.len; break;
        case 8: info->submitted_unix_ms = (int64_t)f.varint; break;
        case 9: info->started_unix_ms = (int64_t)f.varint; break;
        case 10: info->finished_unix_ms = (int64_t)f.varint; break;
        case 12: info->final = f.varint != 0; break;
        case 14: info->retry_delay_ms = (uint32_t)f.varint; break;
        case 15: info->handler = f.data; info->handler_len = f.len; break;
        case 16: info->dispatched_unix_ms = (int64_t)f.varint; break;
        default: break;
        }
    }
    return rc == EM_ENOTFOUND ? EM_OK : EM_EINVAL;
}

static size_t attempt_body_size(const em_attempt_t *a) {
    size_t n = em_pb_varint_field_size(1, a->attempt);
    if (a->status)
        n += em_pb_varint_field_size(2, (uint64_t)a->status);
    if (a->executor_len)
        n += em_pb_len_field_size(3, a->executor_len);
    if (a->error_len)
        n += em_pb_len_field_size(4, a->error_len);
    if (a->exit_code)
        n += em_pb_varint_field_size(5, (uint64_t)(int64_t)a->exit_code);
    if (a->started_unix_ms)
        n += em_pb_varint_field_size(6, (uint64_t)a->started_unix_ms);
    if (a->finished_unix_ms)
        n += em_pb_varint_field_size(7, (uint64_t)a->finished_unix_ms);
    return n;
}

size_t em_attempt_field_size(uint32_t number, const em_attempt_t *a) {
    return em_pb_len_field_size(number, attempt_body_size(a));
}

uint8_t *em_attempt_field_write(uint8_t *o, uint32_t number, const em_attempt_t *a) {
    o = em_pb_write_raw_varint(o, ((uint64_t)number << 3) | EM_PB_LEN);
    o = em_pb_write_raw_varint(o, attempt_body_size(a));
    o = em_pb_write_varint_field(o, 1, a->attempt);
    if (a->status)
        o = em_pb_write_varint_field(o, 2, (uint64_t)a->status);
    if (a->executor_len)
        o = em_pb_write_len_field(o, 3, a->executor, a->executor_len);
    if (a->error_len)
        o = em_pb_write_len_field(o, 4, a->error, a->error_len);
    if (a->exit_code)
        o = em_pb_write_varint_field(o, 5, (uint64_t)(int64_t)a->exit_code);
    if (a->started_unix_ms)
        o = em_pb_write_varint_field(o, 6, (uint64_t)a->started_unix_ms);
    if (a->finished_unix_ms)
        o = em_pb_write_varint_field(o, 7, (uint64_t)a->finished_unix_ms);
    return o;
}
