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
    const uint8_t *handler; /* the handler's name inside the buffer (not NUL-terminated), NULL when absent */
    size_t handler_len;
    uint32_t timeout_ms;
    uint32_t max_attempts;
    uint32_t attempt;          /* 0 when absent (a first attempt) */
    uint32_t executor_deaths;
    size_t nhistory;
    int64_t submitted_unix_ms;
    int64_t deadline_unix_ms;
    int64_t dispatched_unix_ms;
    const uint8_t *traceparent; /* the traceparent header's value inside the buffer when valid, else NULL */
    size_t traceparent_len;
} em_exec_info_t;

/* What the scheduler reads of a Result an executor answered with (and the
 * sink of each result it stored). */
typedef struct em_result_info {
    const uint8_t *id;
    size_t id_len;
    uint32_t attempt;
    int status;
    int final;
    uint32_t retry_delay_ms;
    const uint8_t *error, *executor;
    size_t error_len, executor_len;
    int32_t exit_code;
    int64_t submitted_unix_ms, started_unix_ms, finished_unix_ms, dispatched_unix_ms;
    const uint8_t *handler; /* NULL when absent */
    size_t handler_len;
} em_result_info_t;

/* Checks that buf is an Execution the executors can read: well-formed wire
 * format, the known fields with their wire types, strings (id, handler,
 * header keys and values) valid UTF-8 without NUL bytes. EM_EINVAL with the
 * reason in reason (e.g. "field 2 (handler): invalid UTF-8"). */
em_err_t em_execution_inspect(const uint8_t *buf, size_t len, em_exec_info_t *info, char *reason, size_t reason_size);

/* Is s[0..n) valid UTF-8 without NUL bytes? */
int em_utf8_valid(const uint8_t *s, size_t n);

/* The fields dispatch appends to an execution. */
typedef struct em_exec_append {
    uint32_t attempt;              /* field 7, always written */
    const char *id;                /* field 1 when id_len > 0 */
    size_t id_len;
    int64_t submitted_unix_ms;     /* field 8 when not 0 */
    int64_t dispatched_unix_ms;    /* field 12 when not 0 */
} em_exec_append_t;

/* The size of the fields em_execution_append writes. */
size_t em_execution_append_size(const em_exec_append_t *a);

/* Writes a's fields at out; returns the end. out must hold
 * em_execution_append_size bytes. */
uint8_t *em_execution_append(uint8_t *out, const em_exec_append_t *a);

/* Reads the fields of a Result the scheduler needs; EM_EINVAL when malformed. */
em_err_t em_result_read(const uint8_t *buf, size_t len, em_result_info_t *info);

/* An execmesh.v1.Attempt as a length-delimited field `number` (10 in an
 * Execution's history, 13 in a Result's): its size, and writing it at out
 * (returns the end). error and executor may be NULL. */
typedef struct em_attempt {
    uint32_t attempt;
    int status;
    const char *executor;
    size_t executor_len;
    const char *error;
    size_t error_len;
    int32_t exit_code;
    int64_t started_unix_ms, finished_unix_ms;
} em_attempt_t;
size_t em_attempt_field_size(uint32_t number, const em_attempt_t *a);
uint8_t *em_attempt_field_write(uint8_t *out, uint32_t number, const em_attempt_t *a);

/* Bytes of a varint. */
size_t em_varint_size(uint64_t v);

#endif
