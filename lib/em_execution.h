/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An execmesh.v1.Execution at the wire level, for the scheduler's hot path:
 * a record from the requests topic is checked and read in one pass without
 * decoding it into memory, and is sent on to the executors as the same
 * bytes with the mesh's fields appended (protobuf's "the last value of a
 * field wins": attempt, and id and submit time when the record had none).
 */
#ifndef EM_EXECUTION_H
#define EM_EXECUTION_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"

typedef struct em_exec_info {
    const uint8_t *id;  /* the id's bytes inside the buffer, NULL when absent */
    size_t id_len;
    size_t handler_len;
    uint32_t timeout_ms;
    int64_t submitted_unix_ms;
} em_exec_info_t;

/* Checks that buf is an Execution the executors can read: well-formed wire
 * format, the known fields with their wire types, strings (id, handler,
 * header keys and values) valid UTF-8 without NUL bytes. EM_EINVAL with the
 * reason in reason (e.g. "field 2 (handler): invalid UTF-8"). */
em_err_t em_execution_inspect(const uint8_t *buf, size_t len, em_exec_info_t *info, char *reason, size_t reason_size);

/* Is s[0..n) valid UTF-8 without NUL bytes? */
int em_utf8_valid(const uint8_t *s, size_t n);

/* The size of the fields em_execution_append writes. id may be NULL (not
 * written); submitted_unix_ms 0 is not written. */
size_t em_execution_append_size(uint32_t attempt, size_t id_len, int64_t submitted_unix_ms);

/* Writes attempt (field 7), id (field 1) and submit time (field 8) at out;
 * returns the end. out must hold em_execution_append_size bytes. */
uint8_t *em_execution_append(uint8_t *out, uint32_t attempt, const char *id, size_t id_len, int64_t submitted_unix_ms);

/* Bytes of a varint. */
size_t em_varint_size(uint64_t v);

#endif
