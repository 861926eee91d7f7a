/* SPDX-License-Identifier: Apache-2.0 */
/* Bounded protobuf wire-format reading. */
#include "em_pbwire.h"

em_err_t em_pb_find_len(const uint8_t *buf, size_t len, uint32_t number, const uint8_t **data, size_t *dlen) {
    const uint8_t *p = buf, *end = buf + len;
    em_pb_field_t f;
    em_err_t rc;
    int found = 0;
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        if (f.number == number && f.wire_type == EM_PB_LEN) {
            *data = f.data;
            *dlen = f.len;
            found = 1;
        }
    }
    if (rc != EM_ENOTFOUND)
        return rc;
    return found ? EM_OK : EM_ENOTFOUND;
}

size_t em_pb_put_varint(uint8_t *out, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}
