/* SPDX-License-Identifier: Apache-2.0 */
/* Bounded protobuf wire-format reading. */
#include "em_pbwire.h"

static em_err_t get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return EM_EINVAL;
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return EM_OK;
        }
    }
    return EM_EINVAL; /* overlong varint */
}

em_err_t em_pb_next(const uint8_t **p, const uint8_t *end, em_pb_field_t *f) {
    uint64_t key;
    if (*p >= end)
        return EM_ENOTFOUND;
    if (get_varint(p, end, &key))
        return EM_EINVAL;
    f->number = (uint32_t)(key >> 3);
    f->wire_type = (uint32_t)(key & 7);
    if (f->number == 0 || key >> 3 > 0x1fffffff)
        return EM_EINVAL;
    switch (f->wire_type) {
    case EM_PB_VARINT: return get_varint(p, end, &f->varint);
    case EM_PB_I64:
        if (end - *p < 8)
            return EM_EINVAL;
        f->varint = 0;
        for (int i = 7; i >= 0; i--)
            f->varint = (f->varint << 8) | (*p)[i];
        *p += 8;
        return EM_OK;
    case EM_PB_I32:
        if (end - *p < 4)
            return EM_EINVAL;
        f->varint = (uint64_t)(*p)[0] | (uint64_t)(*p)[1] << 8 | (uint64_t)(*p)[2] << 16 | (uint64_t)(*p)[3] << 24;
        *p += 4;
        return EM_OK;
    case EM_PB_LEN: {
        uint64_t len;
        if (get_varint(p, end, &len))
            return EM_EINVAL;
        if (len > (uint64_t)(end - *p))
            return EM_EINVAL;
        f->data = *p;
        f->len = (size_t)len;
        *p += len;
        return EM_OK;
    }
    default: return EM_EINVAL;
    }
}

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
