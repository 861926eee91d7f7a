/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Producer: the tuned librdkafka settings, a poll thread for delivery
 * reports, and a metadata probe thread for health.
 */
#include "em_producer.h"

#include <pthread.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_log.h"
#include "em_util.h"

#define EM_MAX_TOPICS 8

struct em_producer {
    rd_kafka_t *rk;
    em_health_t *health;
    char probe_topic[256];
    int probe_interval_ms;
    pthread_t poll_thread, probe_thread;
    int poll_started, probe_started;
    atomic_int running;
    atomic_int reachable;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct {
        char *name;
        rd_kafka_topic_t *rkt;
    } topics[EM_MAX_TOPICS];
    int ntopics;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    em_delivery_t *d = msg->_private;
    if (d)
        d->done(d, msg);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));
        EM_ERROR("kafka producer fatal error", EM_F_STR("error", rd_kafka_err2name(orig)),
                 EM_F_STR("reason", buf));
        return;
    }
    EM_WARN("kafka producer error", EM_F_STR("error", rd_kafka_err2name((rd_kafka_resp_err_t)err)),
            EM_F_STR("reason", reason));
}

static void *poll_main(void *arg) {
    em_producer_t *p = arg;
    while (atomic_load(&p->running))
        rd_kafka_poll(p->rk, 100);
    return NULL;
}

/* One metadata round trip for the probe topic: the cluster answers and the
 * topic has partitions, each with a leader. */
static int probe_once(em_producer_t *p, rd_kafka_topic_t *rkt, char *why, size_t n) {
    const struct rd_kafka_metadata *md = NULL;
    int timeout = p->probe_interval_ms * 2;
    if (timeout < 1000)
        timeout = 1000;
    rd_kafka_resp_err_t err = rd_kafka_metadata(p->rk, 0, rkt, &md, timeout);
    if (err) {
        snprintf(why, n, "metadata: %s", rd_kafka_err2str(err));
        return 0;
    }
    int ok = md->topic_cnt == 1 && md->topics[0].err == 0 && md->topics[0].partition_cnt > 0;
    if (!ok)
        snprintf(why, n, "topic %s: %s", p->probe_topic,
                 md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "missing");
    for (int i = 0; ok && i < md->topics[0].partition_cnt; i++)
        if (md->topics[0].partitions[i].leader < 0) {
            ok = 0;
            snprintf(why, n, "topic %s partition %d has no leader", p->probe_topic, i);
        }
    rd_kafka_metadata_destroy(md);
    return ok;
}

static void *probe_main(void *arg) {
    em_producer_t *p = arg;
    rd_kafka_topic_t *rkt = em_producer_topic(p, p->probe_topic);
    int last = -1;
    while (atomic_load(&p->running)) {
        char why[512] = "";
        int ok = rkt && probe_once(p, rkt, why, sizeof(why));
        atomic_store(&p->reachable, ok);
        if (ok != last) {
            if (ok)
                EM_INFO("kafka reachable", EM_F_STR("topic", p->probe_topic));
            else
                EM_WARN("kafka unreachable", EM_F_STR("topic", p->probe_topic), EM_F_STR("reason", why));
            if (p->health)
                em_health_block(p->health, "kafka", !ok);
            last = ok;
        }
        pthread_mutex_lock(&p->lock);
        if (atomic_load(&p->running))
            em_cond_wait_ms(&p->cond, &p->lock, p->probe_interval_ms);
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

void em_producer_opts_from_config(const em_config_t *cfg, const char *client_id, const char *extra[EM_KAFKA_MAX_EXTRA],
                                  em_producer_opts_t *o) {
    memset(o, 0, sizeof(*o));
    o->bootstrap = em_config_str(cfg, "kafka.bootstrap");
    o->client_id = client_id;
    o->linger_ms = (int)em_config_int(cfg, "kafka.linger_ms");
    o->batch_size = (int)em_config_int(cfg, "kafka.batch_size");
    o->message_timeout_ms = (int)em_config_int(cfg, "kafka.message_timeout_ms");
    o->queue_max_messages = (int)em_config_int(cfg, "kafka.queue_max_messages");
    o->queue_max_kbytes = (int)em_config_int(cfg, "kafka.queue_max_kbytes");
    o->probe_interval_ms = (int)em_config_int(cfg, "kafka.probe_interval_ms");
    o->nextra = em_kafka_extra_from_config(cfg, extra);
    o->extra = extra;
}

em_producer_t *em_producer_new(const em_producer_opts_t *o, char *errstr, size_t errstr_size) {
    char linger[32], batch[32], timeout[32], qmsgs[32], qkb[32];
    snprintf(linger, sizeof(linger), "%d", o->linger_ms);
    snprintf(batch, sizeof(batch), "%d", o->batch_size);
    snprintf(timeout, sizeof(timeout), "%d", o->message_timeout_ms);
    snprintf(qmsgs, sizeof(qmsgs), "%d", o->queue_max_messages);
    snprintf(qkb, sizeof(qkb), "%d", o->queue_max_kbytes);
    const em_kafka_prop_t props[] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", linger},
        {"batch.size", batch},
        {"message.timeout.ms", timeout},
        {"queue.buffering.max.messages", qmsgs},
        {"queue.buffering.max.kbytes", qkb},
        {"compression.type", "none"},
        {"socket.nagle.disable", "true"},
        {"reconnect.backoff.ms", "50"},
        {"reconnect.backoff.max.ms", "1000"},
        {"topic.metadata.refresh.interval.ms", "10000"},
    };
    em_producer_t *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    em_cond_init(&p->cond);
    p->health = o->health;
    p->probe_interval_ms = o->probe_interval_ms > 0 ? o->probe_interval_ms : 1000;
    snprintf(p->probe_topic, sizeof(p->probe_topic), "%s", o->probe_topic);
    if (p->health)
        em_health_block(p->health, "kafka", 1);

    rd_kafka_conf_t *conf = em_kafka_conf_new(o->bootstrap, o->client_id, props, EM_ARRAY_LEN(props), o->extra,
                                              o->nextra, errstr, errstr_size);
    if (!conf)
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, p);
    char e[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
    if (!p->rk) {
        snprintf(errstr, errstr_size, "kafka producer: %s", e);
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    atomic_store(&p->running, 1);
    if (pthread_create(&p->poll_thread, NULL, poll_main, p) != 0)
        goto fail_threads;
    p->poll_started = 1;
    if (pthread_create(&p->probe_thread, NULL, probe_main, p) != 0)
        goto fail_threads;
    p->probe_started = 1;
    return p;
fail_threads:
    snprintf(errstr, errstr_size, "kafka producer: cannot start threads");
    em_producer_destroy(p);
    return NULL;
fail:
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
    return NULL;
}

void em_producer_destroy(em_producer_t *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->running, 0);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    if (p->probe_started)
        pthread_join(p->probe_thread, NULL);
    if (p->poll_started)
        pthread_join(p->poll_thread, NULL);
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(p->rk, 0); /* serve the purged messages' reports */
    for (int i = 0; i < p->ntopics; i++) {
        rd_kafka_topic_destroy(p->topics[i].rkt);
        free(p->topics[i].name);
    }
    rd_kafka_destroy(p->rk);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

rd_kafka_topic_t *em_producer_topic(em_producer_t *p, const char *name) {
    rd_kafka_topic_t *rkt = NULL;
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->ntopics; i++)
        if (strcmp(p->topics[i].name, name) == 0) {
            rkt = p->topics[i].rkt;
            goto out;
        }
    if (p->ntopics == EM_MAX_TOPICS)
        goto out;
    rkt = rd_kafka_topic_new(p->rk, name, NULL);
    if (!rkt)
        goto out;
    p->topics[p->ntopics].name = strdup(name);
    p->topics[p->ntopics].rkt = rkt;
    p->ntopics++;
out:
    pthread_mutex_unlock(&p->lock);
    return rkt;
}

em_err_t em_producer_send(em_producer_t *p, rd_kafka_topic_t *t, const void *key, size_t klen, const void *val,
                          size_t vlen, rd_kafka_headers_t *headers, int copy, em_delivery_t *d) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_RKT(t), RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
        RD_KAFKA_V_MSGFLAGS(copy ? RD_KAFKA_MSG_F_COPY : 0), RD_KAFKA_V_KEY(key, klen),
        RD_KAFKA_V_VALUE((void *)(uintptr_t)val, vlen), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
    return em_kafka_err(err);
}

int em_producer_send_batch(em_producer_t *p, rd_kafka_topic_t *t, rd_kafka_message_t *msgs, int n) {
    return rd_kafka_produce_batch(t, RD_KAFKA_PARTITION_UA, 0, msgs, n);
}

em_err_t em_producer_flush(em_producer_t *p, int timeout_ms) {
    return em_kafka_err(rd_kafka_flush(p->rk, timeout_ms));
}

int em_producer_reachable(em_producer_t *p) { return atomic_load(&p->reachable); }
int em_producer_outq(em_producer_t *p) { return rd_kafka_outq_len(p->rk); }
rd_kafka_t *em_producer_handle(em_producer_t *p) { return p->rk; }
