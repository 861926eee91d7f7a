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

#include "em_error.h"

enum { EM_PB_VARINT = 0, EM_PB_I64 = 1, EM_PB_LEN = 2, EM_PB_I32 = 5 };

typedef struct em_pb_field {
    uint32_t number;
    uint32_t wire_type;
    uint64_t varint;     /* EM_PB_VARINT, EM_PB_I64, EM_PB_I32 */
    const uint8_t *data; /* EM_PB_LEN */
    size_t len;          /* EM_PB_LEN */
} em_pb_field_t;

/* Reads the field at *p (advancing *p). EM_ENOTFOUND at the end of the
 * buffer, EM_EINVAL on malformed input (groups count as malformed). */
em_err_t em_pb_next(const uint8_t **p, const uint8_t *end, em_pb_field_t *f);

/* The last occurrence of length-delimited field `number` in buf (protobuf's
 * "last one wins"). EM_ENOTFOUND when absent, EM_EINVAL when malformed. */
em_err_t em_pb_find_len(const uint8_t *buf, size_t len, uint32_t number, const uint8_t **data, size_t *dlen);

/* Appends a varint; returns bytes written (at most 10). */
size_t em_pb_put_varint(uint8_t *out, uint64_t v);

#endif
