/* SPDX-License-Identifier: Apache-2.0 */
/* Reading a PublishRequest in place (publish.h). */
#include "publish.h"

#include <inttypes.h>
#include <stdio.h>

#include "em_pbwire.h"
#include "em_sizes.h"

int sink_publish_count(const uint8_t *req, size_t len) {
    const uint8_t *p = req, *end = req + len;
    em_pb_field_t f;
    em_err_t rc;
    int n = 0;
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK)
        n += f.number == 1;
    return rc == EM_ENOTFOUND ? n : -1;
}

em_err_t sink_publish_read(const uint8_t *req, size_t len, int64_t max_message_bytes, rd_kafka_message_t *msgs,
                           int n, char *msg, size_t msg_size) {
    const uint8_t *p = req, *end = req + len;
    em_pb_field_t f;
    int i = 0;
    while (i < n && em_pb_next(&p, end, &f) == EM_OK) {
        const uint8_t *id = NULL;
        size_t idlen = 0;
        if (f.number != 1)
            continue;
        if (f.wire_type != EM_PB_LEN || em_pb_find_len(f.data, f.len, 1, &id, &idlen) == EM_EINVAL) {
            snprintf(msg, msg_size, "results[%d]: not a valid execmesh.v1.Result", i);
            return EM_EINVAL;
        }
        if ((int64_t)(f.len + idlen + EM_SIZE_RECORD_OVERHEAD) > max_message_bytes) {
            /* Kafka would refuse it, now and every time it is sent again.
             * Never sent by an executor whose publish.max_result_bytes is at
             * most our limit. */
            snprintf(msg, msg_size,
                     "results[%d]: %zu bytes with its key, limit %" PRId64
                     " (kafka.max_message_bytes): it can never be stored; the executors' "
                     "publish.max_result_bytes must not exceed it",
                     i, f.len + idlen + EM_SIZE_RECORD_OVERHEAD, max_message_bytes);
            return EM_ETOOBIG;
        }
        msgs[i].payload = (void *)(uintptr_t)f.data;
        msgs[i].len = f.len;
        msgs[i].key = (void *)(uintptr_t)id;
        msgs[i].key_len = idlen;
        i++;
    }
    return EM_OK;
}
