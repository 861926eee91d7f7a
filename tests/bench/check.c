/* SPDX-License-Identifier: Apache-2.0 */
/*
 * em-bench-check: reads a topic from the beginning and checks that each of
 * the N ids PREFIX0 .. PREFIX(N-1) has a record (a Result or an Execution:
 * the id is field 1 of both), counting the missing and the duplicated.
 * Stops when all are found, or when no record came for --quiet-s seconds.
 *
 *   em-bench-check --bootstrap B --topic T --count N [--prefix b-] [--quiet-s 10]
 * Prints "check count=N found=F missing=M duplicates=D records=R".
 */
#include "bench_common.h"
#include "em_pbwire.h"
#include "em_util.h"

int main(int argc, char **argv) {
    const char *bootstrap = bench_opt(argc, argv, "--bootstrap", "127.0.0.1:9092");
    const char *topic = bench_opt(argc, argv, "--topic", "execmesh.results");
    const char *prefix = bench_opt(argc, argv, "--prefix", "b-");
    long long count = bench_opt_ll(argc, argv, "--count", 1000);
    long long quiet_ms = bench_opt_ll(argc, argv, "--quiet-s", 10) * 1000;
    size_t plen = strlen(prefix);
    char err[512];
    uint8_t *seen = calloc((size_t)count, 1);
    long long found = 0, dups = 0, records = 0;

    rd_kafka_conf_t *c = bench_consumer_conf(bootstrap, "em-bench-check");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "consumer: %s\n", err);
        return 2;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) || md->topic_cnt != 1 || md->topics[0].partition_cnt == 0) {
        fprintf(stderr, "no such topic %s\n", topic);
        return 2;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_message_t *msgs[1000];
    int64_t last_new = em_mono_ms();
    while (found < count && em_mono_ms() - last_new < quiet_ms) {
        ssize_t n = rd_kafka_consume_batch_queue(q, 200, msgs, 1000);
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            const uint8_t *id;
            size_t idlen;
            if (!m->err) {
                records++;
                last_new = em_mono_ms();
                if (em_pb_find_len(m->payload, m->len, 1, &id, &idlen) == EM_OK && idlen > plen &&
                    memcmp(id, prefix, plen) == 0) {
                    long long k = 0;
                    for (size_t j = plen; j < idlen && id[j] >= '0' && id[j] <= '9'; j++)
                        k = k * 10 + (id[j] - '0');
                    if (k < count) {
                        if (seen[k])
                            dups++;
                        else
                            found++;
                        seen[k] = 1;
                    }
                }
            }
            rd_kafka_message_destroy(m);
        }
    }
    printf("check count=%lld found=%lld missing=%lld duplicates=%lld records=%lld\n", count, found, count - found,
           dups, records);
    rd_kafka_queue_destroy(q);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(seen);
    return found == count ? 0 : 1;
}
