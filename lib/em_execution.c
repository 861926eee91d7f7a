/* SPDX-License-Identifier: Apache-2.0 */
/* One-pass checking and reading of an Execution's wire bytes. */
#include "em_execution.h"

#include <stdio.h>
#include <string.h>

#include "em_pbwire.h"

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

static const char *const field_names[] = {"", "id", "handler", "payload", "headers", "timeout_ms", "max_attempts",
                                          "attempt", "submitted_unix_ms"};

static em_err_t bad(char *reason, size_t n, uint32_t field, const char *what) {
    if (field >= 1 && field <= 8)
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

em_err_t em_execution_inspect(const uint8_t *buf, size_t len, em_exec_info_t *info, char *reason, size_t n) {
    const uint8_t *p = buf, *end = buf + len;
    em_pb_field_t f;
    em_err_t rc;
    memset(info, 0, sizeof(*info));
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
            break;
        case 5:
        case 6:
        case 7:
        case 8:
            if (f.wire_type != EM_PB_VARINT)
                return bad(reason, n, f.number, "wrong wire type, expected varint");
            if (f.number == 5)
                info->timeout_ms = (uint32_t)f.varint;
            else if (f.number == 8)
                info->submitted_unix_ms = (int64_t)f.varint;
            break;
        default: break; /* unknown fields are skipped, as any reader would */
        }
    }
    if (rc != EM_ENOTFOUND)
        return bad(reason, n, 0, "malformed protobuf (truncated, overlong varint or bad wire type)");
    return EM_OK;
}

size_t em_varint_size(uint64_t v) { return em_pb_varint_size(v); }

size_t em_execution_append_size(uint32_t attempt, size_t id_len, int64_t submitted_unix_ms) {
    size_t n = 1 + em_varint_size(attempt);
    if (id_len)
        n += 1 + em_varint_size(id_len) + id_len;
    if (submitted_unix_ms)
        n += 1 + em_varint_size((uint64_t)submitted_unix_ms);
    return n;
}

uint8_t *em_execution_append(uint8_t *out, uint32_t attempt, const char *id, size_t id_len, int64_t submitted_unix_ms) {
    if (id_len) {
        *out++ = (1 << 3) | EM_PB_LEN;
        out += em_pb_put_varint(out, id_len);
        memcpy(out, id, id_len);
        out += id_len;
    }
    *out++ = (7 << 3) | EM_PB_VARINT;
    out += em_pb_put_varint(out, attempt);
    if (submitted_unix_ms) {
        *out++ = (8 << 3) | EM_PB_VARINT;
        out += em_pb_put_varint(out, (uint64_t)submitted_unix_ms);
    }
    return out;
}
