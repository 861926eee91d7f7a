/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sizes that agree end to end: the one size model every service derives
 * its byte limits from (no Kafka or gRPC here: the executor, which never
 * talks to Kafka, includes it too).
 */
#ifndef EM_SIZES_H
#define EM_SIZES_H

#include "em_config.h"

/*
 * The size model: every byte limit of the mesh derives from one setting,
 * kafka.max_message_bytes (L, default 1,000,000), so that a valid
 * execution's result always fits in Kafka.
 *
 *   - Every producer's message.max.bytes is L. It must not exceed the
 *     topics' max.message.bytes minus a record batch's framing (the broker
 *     default, 1,048,588, leaves room for L up to 1,048,000): then the
 *     broker never refuses what a producer accepted.
 *   - EM_SIZE_RESERVE (64 KiB) is kept for what the mesh adds to an
 *     execution on its way to its result: the id as the record key, the
 *     attempt, timestamps, the executor's name, the error (at most
 *     EM_SIZE_ERROR_MAX), the headers copied, and the attempt history.
 *   - The largest execution is L - EM_SIZE_RESERVE (934,464 by default):
 *     Submit refuses a bigger one (its packed size), and it is the default
 *     and the maximum of the scheduler's input.max_bytes.
 *   - The history grows by one entry per failed attempt (at most
 *     EM_SIZE_ERROR_MAX of error each) and per executor death: the executor
 *     retries only while the next attempt's record stays within
 *     L - EM_SIZE_RETRY_ROOM, deaths add at most EM_SIZE_DEATH_MAX each up
 *     to quarantine.executor_deaths, and the scheduler takes a record that
 *     carries an attempt (a retry) up to L - EM_SIZE_RESULT_ROOM.
 *   - What an executor adds to an execution to make its result (errors,
 *     its name, the last history entry, the key) is less than
 *     EM_SIZE_RESULT_ROOM; an exec handler's output is capped at
 *     publish.max_result_bytes - EM_SIZE_RESERVE by default, and a result
 *     that would still exceed publish.max_result_bytes (which must not
 *     exceed the sinks' L) ends FAILED with its output dropped.
 *   - gRPC: a dispatch batch and an Execute answer group are capped in bytes
 *     (at least L, at most grpc.max_message_bytes - EM_SIZE_GRPC_MARGIN).
 *   - A dead letter larger than L is written with its value truncated to
 *     fit, its original size in header EM_HDR_ORIGINAL_BYTES.
 */
#define EM_SIZE_RESERVE 65536
#define EM_SIZE_ERROR_MAX 2048
#define EM_SIZE_RETRY_ROOM 24576
#define EM_SIZE_RESULT_ROOM 16384
#define EM_SIZE_DEATH_MAX 1280
#define EM_SIZE_GRPC_MARGIN 65536
/* What a Kafka record adds to its key, value and headers (librdkafka's
 * message.max.bytes check counts at most 36 bytes of it). */
#define EM_SIZE_RECORD_OVERHEAD 64
/* The header of a truncated dead letter: the value's size before it was cut. */
#define EM_HDR_ORIGINAL_BYTES "execmesh-original-bytes"
#define EM_KAFKA_MAX_MESSAGE_DEFAULT 1000000

/* The largest execution for a given kafka.max_message_bytes. */
static inline long long em_size_max_execution(long long max_message_bytes) {
    return max_message_bytes - EM_SIZE_RESERVE;
}

/* Prints "PROGRAM: config refused: SOURCE: key 'K': WHY", blaming key when
 * the operator set it, else other (the limit it must agree with); -1. */
int em_sizes_refuse(const em_config_t *cfg, const char *program, const char *key, const char *other, const char *why);

/* A byte cap (key) must hold at least floor_key's value and fit one gRPC
 * message (grpc.max_message_bytes - EM_SIZE_GRPC_MARGIN); what names the
 * unit ("an Execute batch"). 0, or -1 after em_sizes_refuse. */
int em_sizes_check_cap(const em_config_t *cfg, const char *program, const char *key, const char *floor_key,
                       const char *what);

#endif
