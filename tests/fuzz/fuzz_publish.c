/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: a ResultSink.Publish request's bytes, read as the sink reads
 * them (services/sink/publish.c): counted, then each result checked and
 * keyed by its id as a Kafka message pointing into the request. The first
 * byte picks the size limit (kafka.max_message_bytes), so refusals for
 * size are reached too; the rest is the request.
 *
 * Properties: every message lies in the request and its key in its
 * payload; a request protobuf-c decodes, encoded again canonically, is one
 * the sink reads whole.
 */
#include <string.h>

#include "execmesh/v1/internal.pb-c.h"
#include "fuzz.h"
#include "publish.h"

FUZZ_QUIET_INITIALIZE

/* Reads the request as the sink does; canonical: protobuf-c's encoding of
 * what it decoded, which the sink must take whole (unless too large). */
static void read_request(const uint8_t *data, size_t size, int64_t limit, int canonical) {
    int n = sink_publish_count(data, size);
    if (canonical)
        FUZZ_CHECK(n >= 0, "the sink cannot count the results of a canonical request");
    if (n <= 0)
        return;
    rd_kafka_message_t *msgs = calloc((size_t)n, sizeof(*msgs));
    FUZZ_CHECK(msgs, "out of memory");
    char msg[512];
    msg[0] = '\0';
    em_err_t rc = sink_publish_read(data, size, limit, msgs, n, msg, sizeof(msg));
    if (rc == EM_OK) {
        for (int i = 0; i < n; i++) {
            FUZZ_CHECK(msgs[i].payload, "results[%d] not filled", i);
            FUZZ_CHECK(fuzz_within(msgs[i].payload, msgs[i].len, data, size), "results[%d] outside the request", i);
            FUZZ_CHECK(fuzz_within(msgs[i].key, msgs[i].key_len, msgs[i].payload, msgs[i].len),
                       "results[%d]'s key outside it", i);
            FUZZ_CHECK((int64_t)(msgs[i].len + msgs[i].key_len + 64) <= limit, "results[%d] over the limit", i);
        }
    } else {
        FUZZ_CHECK((rc == EM_EINVAL || rc == EM_ETOOBIG) && msg[0], "rc %d, reason '%s'", rc, msg);
        FUZZ_CHECK(!canonical || rc == EM_ETOOBIG, "the sink refuses a canonical request: %s", msg);
    }
    free(msgs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    int64_t limit = data[0] < 128 ? 1000000 : 64 + data[0]; /* the record overhead (64) and a little */
    data++;
    size--;
    read_request(data, size, limit, 0);
    /* protobuf-c accepts some malformed input the sink rightly refuses
     * (field numbers 0 or past 2^29 - 1, which it writes back: dropped here):
     * its canonical encoding is compared */
    Execmesh__V1__PublishRequest *pr = execmesh__v1__publish_request__unpack(NULL, size, data);
    if (pr) {
        fuzz_drop_bad_unknown(&pr->base);
        size_t n = execmesh__v1__publish_request__get_packed_size(pr);
        uint8_t *buf = malloc(n ? n : 1);
        FUZZ_CHECK(buf, "out of memory");
        execmesh__v1__publish_request__pack(pr, buf);
        FUZZ_CHECK(sink_publish_count(buf, n) == (int)pr->n_results, "counted results differ from protobuf-c's");
        read_request(buf, n, limit, 1);
        free(buf);
        execmesh__v1__publish_request__free_unpacked(pr, NULL);
    }
    return 0;
}
