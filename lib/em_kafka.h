/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the producer and consumer modules share: building a librdkafka
 * configuration (bootstrap, client id, logs bridged into em_log, and extra
 * "key=value" properties from the service's config file), and turning
 * librdkafka error codes into the project's error enum.
 */
#ifndef EM_KAFKA_H
#define EM_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "em_error.h"

/* The most "key=value" extra properties a service takes from its config. */
#define EM_KAFKA_MAX_EXTRA 64

/* One librdkafka property. */
typedef struct em_kafka_prop {
    const char *key;
    const char *value;
} em_kafka_prop_t;

/* A configuration with bootstrap.servers, client.id and the log bridge set,
 * then the tuned defaults in props (n of them), then the operator's extra
 * "key=value" strings (nextra of them, applied last so they win). NULL with
 * errstr naming the bad property on error. */
rd_kafka_conf_t *em_kafka_conf_new(const char *bootstrap, const char *client_id, const em_kafka_prop_t *props,
                                   size_t n, const char *const *extra, size_t nextra, char *errstr,
                                   size_t errstr_size);

/* Fills extra with the "kafka.properties" strings of cfg (at most
 * EM_KAFKA_MAX_EXTRA, borrowed from cfg) and returns how many. */
struct em_config;
size_t em_kafka_extra_from_config(const struct em_config *cfg, const char *extra[EM_KAFKA_MAX_EXTRA]);

em_err_t em_kafka_err(rd_kafka_resp_err_t err);

/* Is err one Kafka may clear by itself (broker down, timeouts, rebalance)? */
int em_kafka_err_retriable(rd_kafka_resp_err_t err);

/* The version of the librdkafka loaded at run time ("2.8.0"), for
 * --version: the dynamic loader, not the headers, decides which copy runs.
 * A static string; never NULL. Any thread. */
const char *em_kafka_version(void);

#endif
