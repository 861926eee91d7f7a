/* SPDX-License-Identifier: Apache-2.0 */
/* librdkafka configuration building and error mapping. */
#include "em_kafka.h"

#include <stdio.h>
#include <string.h>

#include "em_config.h"
#include "em_log.h"

/* The headers must be those of the librdkafka CMake found and links
 * (cmake/Rdkafka.cmake): Debian's /usr/include/librdkafka may not win over
 * the EM_LIBRDKAFKA prefix. */
#ifdef EM_RDKAFKA_CONFIGURED_VERSION
#if RD_KAFKA_VERSION != EM_RDKAFKA_CONFIGURED_VERSION
#error "rdkafka.h is not the librdkafka version CMake configured (EM_LIBRDKAFKA): check the include order"
#endif
#endif

static int set_prop(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr, size_t n) {
    char e[512];
    if (rd_kafka_conf_set(conf, k, v, e, sizeof(e)) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, n, "kafka property %s=%s: %s", k, v, e);
        return -1;
    }
    return 0;
}

rd_kafka_conf_t *em_kafka_conf_new(const char *bootstrap, const char *client_id, const em_kafka_prop_t *props,
                                   size_t n, const char *const *extra, size_t nextra, char *errstr,
                                   size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (set_prop(conf, "bootstrap.servers", bootstrap, errstr, errstr_size) ||
        set_prop(conf, "client.id", client_id, errstr, errstr_size))
        goto fail;
    rd_kafka_conf_set_log_cb(conf, em_log_rdkafka_cb);
    for (size_t i = 0; i < n; i++)
        if (set_prop(conf, props[i].key, props[i].value, errstr, errstr_size))
            goto fail;
    for (size_t i = 0; i < nextra; i++) {
        char kv[1024];
        snprintf(kv, sizeof(kv), "%s", extra[i]);
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv) {
            snprintf(errstr, errstr_size, "kafka property '%s': expected key=value", extra[i]);
            goto fail;
        }
        *eq = '\0';
        if (set_prop(conf, kv, eq + 1, errstr, errstr_size))
            goto fail;
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

size_t em_kafka_extra_from_config(const struct em_config *cfg, const char *extra[EM_KAFKA_MAX_EXTRA]) {
    size_t n = em_config_list_len(cfg, "kafka.properties");
    if (n > EM_KAFKA_MAX_EXTRA)
        n = EM_KAFKA_MAX_EXTRA;
    for (size_t i = 0; i < n; i++)
        extra[i] = em_config_list_get(cfg, "kafka.properties", i);
    return n;
}

em_err_t em_kafka_err(rd_kafka_resp_err_t err) {
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR: return EM_OK;
    case RD_KAFKA_RESP_ERR__QUEUE_FULL: return EM_EAGAIN;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE: return EM_ETOOBIG;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT: return EM_ETIMEDOUT;
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__TRANSPORT: return EM_EUNAVAIL;
    case RD_KAFKA_RESP_ERR__STATE:
    case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID: return EM_ENOTMINE;
    default: return EM_EKAFKA;
    }
}

int em_kafka_err_retriable(rd_kafka_resp_err_t err) {
    switch (err) {
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
    case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL: return 1;
    default: return 0;
    }
}

const char *em_kafka_version(void) { return rd_kafka_version_str(); }
