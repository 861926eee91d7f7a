/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A PublishRequest read in place: its results, each checked and keyed by its
 * id, as Kafka messages pointing into the request (no copy). Pure functions
 * of the bytes and the size limit, so the sink's Publish handler (main.c)
 * and the fuzz target (tests/fuzz/fuzz_publish.c) run the same code.
 */
#ifndef SINK_PUBLISH_H
#define SINK_PUBLISH_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "em_error.h"

/* The results of the request (its top level, field 1): 0 or more, or -1
 * when the request cannot be decoded ("PublishRequest: cannot decode"). */
int sink_publish_count(const uint8_t *req, size_t len);

/* Fills msgs[0..n) (n from sink_publish_count; zeroed by the caller) with
 * each result's bytes as payload and its id as key, pointing into req.
 * EM_OK; EM_EINVAL when a result is not a Result ("results[i]: not a valid
 * execmesh.v1.Result"); EM_ETOOBIG when one, with its key and Kafka's
 * framing, is over max_message_bytes (it can never be stored). The reason
 * is in msg; either refusal stores nothing of the call. */
em_err_t sink_publish_read(const uint8_t *req, size_t len, int64_t max_message_bytes, rd_kafka_message_t *msgs,
                           int n, char *msg, size_t msg_size);

#endif
