/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading the protobuf wire format without decoding whole messages: the sink
 * walks a PublishRequest's results and each result's id in place, so results
 * pass from the gRPC buffer to Kafka without a copy. Bounds are checked on
 * every step; malformed input gives EM_EINVAL, never a read past the end.
 */
#ifndef EM_PBWIRE_H
#define EM_PBWIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "em_error.h"

enum { EM_PB_VARINT = 0, EM_PB_I64 = 1, EM_PB_LEN = 2, EM_PB_I32 = 5 };

typedef struct em_pb_field {
    uint32_t number;
    uint32_t wire_type;
    uint64_t varint;     /* EM_PB_VARINT, EM_PB_I64, EM_PB_I32 */
    const uint8_t *data; /* EM_PB_LEN */
    size_t len;          /* EM_PB_LEN */
} em_pb_field_t;

/* Reads a varint of at most max_bytes bytes at *p (advancing *p); EM_EINVAL
 * when truncated or longer. */
static inline em_err_t em_pb_varint_max(const uint8_t **p, const uint8_t *end, uint64_t *v, int max_bytes) {
    uint64_t r = 0;
    for (int shift = 0; shift < 7 * max_bytes; shift += 7) {
        if (*p >= end)
            return EM_EINVAL;
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return EM_OK;
        }
    }
    return EM_EINVAL;
}

/* Reads the varint at *p (advancing *p); EM_EINVAL when truncated or overlong. */
static inline em_err_t em_pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    return em_pb_varint_max(p, end, v, 10);
}

/* A key or a length: a varint of at most 5 bytes. protobuf-c, which
 * decodes what these readers accept (the scheduler's own results, every
 * outside consumer), refuses a longer one, padded or not. */
static inline em_err_t em_pb_varint32(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    return em_pb_varint_max(p, end, v, 5);
}

/* Reads the field at *p (advancing *p). EM_ENOTFOUND at the end of the
 * buffer, EM_EINVAL on malformed input (groups count as malformed, and so
 * do keys and lengths of more than 5 bytes). Inline: it is the inner loop
 * of every wire-level reader on the hot path. */
static inline em_err_t em_pb_next(const uint8_t **p, const uint8_t *end, em_pb_field_t *f) {
    uint64_t key;
    f->varint = 0;
    f->data = NULL;
    f->len = 0;
    if (*p >= end)
        return EM_ENOTFOUND;
    if (em_pb_varint32(p, end, &key))
        return EM_EINVAL;
    f->number = (uint32_t)(key >> 3);
    f->wire_type = (uint32_t)(key & 7);
    if (f->number == 0 || key >> 3 > 0x1fffffff)
        return EM_EINVAL;
    switch (f->wire_type) {
    case EM_PB_VARINT: return em_pb_varint(p, end, &f->varint);
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
        if (em_pb_varint32(p, end, &len) || len > (uint64_t)(end - *p))
            return EM_EINVAL;
        f->data = *p;
        f->len = (size_t)len;
        *p += len;
        return EM_OK;
    }
    default: return EM_EINVAL;
    }
}

/* Bytes of a varint. */
static inline size_t em_pb_varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writing fields: the size a field takes, and writing it (returning the end). */
static inline size_t em_pb_varint_field_size(uint32_t number, uint64_t v) {
    return em_pb_varint_size((uint64_t)number << 3) + em_pb_varint_size(v);
}

static inline size_t em_pb_len_field_size(uint32_t number, size_t len) {
    return em_pb_varint_size((uint64_t)number << 3 | EM_PB_LEN) + em_pb_varint_size(len) + len;
}

static inline uint8_t *em_pb_write_raw_varint(uint8_t *out, uint64_t v) {
    while (v >= 0x80) {
        *out++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *out++ = (uint8_t)v;
    return out;
}

static inline uint8_t *em_pb_write_varint_field(uint8_t *out, uint32_t number, uint64_t v) {
    out = em_pb_write_raw_varint(out, (uint64_t)number << 3 | EM_PB_VARINT);
    return em_pb_write_raw_varint(out, v);
}

static inline uint8_t *em_pb_write_len_field(uint8_t *out, uint32_t number, const void *data, size_t len) {
    out = em_pb_write_raw_varint(out, (uint64_t)number << 3 | EM_PB_LEN);
    out = em_pb_write_raw_varint(out, len);
    if (len)
        memcpy(out, data, len);
    return out + len;
}

/* The last occurrence of length-delimited field `number` in buf (protobuf's
 * "last one wins"). EM_ENOTFOUND when absent, EM_EINVAL when malformed. */
em_err_t em_pb_find_len(const uint8_t *buf, size_t len, uint32_t number, const uint8_t **data, size_t *dlen);

/* Appends a varint; returns bytes written (at most 10). */
size_t em_pb_put_varint(uint8_t *out, uint64_t v);

#endif
