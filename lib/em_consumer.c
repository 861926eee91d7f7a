/* SPDX-License-Identifier: Apache-2.0 */
/* Consumer-group membership, rebalance protocol handling, manual commits. */
#include "em_consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_log.h"
#include "em_util.h"

struct em_consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    em_consumer_opts_t o;
    int closed;
};

static void parts_text(const rd_kafka_topic_partition_list_t *parts, char *buf, size_t n) {
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < parts->cnt && o < n; i++) {
        int w = snprintf(buf + o, n - o, "%s%d", i ? "," : "", parts->elems[i].partition);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    em_consumer_t *c = opaque;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    char list[1024];
    parts_text(parts, list, sizeof(list));

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        EM_INFO("partitions assigned", EM_F_STR("partitions", list), EM_F_INT("count", parts->cnt),
                EM_F_STR("protocol", coop ? "cooperative" : "eager"));
        if (c->o.on_assign)
            c->o.on_assign(c->o.ctx, parts);
        if (coop) {
            rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
            if (e) {
                EM_ERROR("incremental assign failed", EM_F_STR("error", rd_kafka_error_string(e)));
                rd_kafka_error_destroy(e);
            }
        } else {
            rd_kafka_assign(rk, parts);
        }
        return;
    }
    int lost = err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS || rd_kafka_assignment_lost(rk);
    EM_INFO("partitions revoked", EM_F_STR("partitions", list), EM_F_INT("count", parts->cnt),
            EM_F_BOOL("lost", lost), EM_F_STR("reason", rd_kafka_err2name(err)));
    if (c->o.on_revoke)
        c->o.on_revoke(c->o.ctx, parts, lost);
    if (coop) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
        if (e) {
            EM_ERROR("incremental unassign failed", EM_F_STR("error", rd_kafka_error_string(e)));
            rd_kafka_error_destroy(e);
        }
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
                      void *opaque) {
    em_consumer_t *c = opaque;
    if (c->o.on_commit)
        c->o.on_commit(c->o.ctx, err, offsets);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    EM_WARN("kafka consumer error", EM_F_STR("error", rd_kafka_err2name((rd_kafka_resp_err_t)err)),
            EM_F_STR("reason", reason));
}

void em_consumer_opts_from_config(const em_config_t *cfg, const char *client_id, const char *extra[EM_KAFKA_MAX_EXTRA],
                                  em_consumer_opts_t *o) {
    memset(o, 0, sizeof(*o));
    o->bootstrap = em_config_str(cfg, "kafka.bootstrap");
    o->client_id = client_id;
    o->group_id = em_config_str(cfg, "kafka.group_id");
    o->instance_id = em_config_str(cfg, "kafka.instance_id");
    o->assignor = em_config_str(cfg, "kafka.assignor");
    o->session_timeout_ms = (int)em_config_int(cfg, "kafka.session_timeout_ms");
    o->heartbeat_ms = (int)em_config_int(cfg, "kafka.heartbeat_ms");
    o->max_poll_interval_ms = (int)em_config_int(cfg, "kafka.max_poll_interval_ms");
    o->queued_min_messages = (int)em_config_int(cfg, "kafka.queued_min_messages");
    o->queued_max_kbytes = (int)em_config_int(cfg, "kafka.queued_max_kbytes");
    o->fetch_wait_max_ms = (int)em_config_int(cfg, "kafka.fetch_wait_max_ms");
    o->nextra = em_kafka_extra_from_config(cfg, extra);
    o->extra = extra;
}

em_consumer_t *em_consumer_new(const em_consumer_opts_t *o, char *errstr, size_t errstr_size) {
    char session[32], hb[32], poll_iv[32], qmin[32], qkb[32], fwait[32];
    snprintf(session, sizeof(session), "%d", o->session_timeout_ms);
    snprintf(hb, sizeof(hb), "%d", o->heartbeat_ms);
    snprintf(poll_iv, sizeof(poll_iv), "%d", o->max_poll_interval_ms);
    snprintf(qmin, sizeof(qmin), "%d", o->queued_min_messages);
    snprintf(qkb, sizeof(qkb), "%d", o->queued_max_kbytes);
    snprintf(fwait, sizeof(fwait), "%d", o->fetch_wait_max_ms);
    em_kafka_prop_t props[16];
    size_t n = 0;
    props[n++] = (em_kafka_prop_t){"group.id", o->group_id};
    props[n++] = (em_kafka_prop_t){"enable.auto.commit", "false"};
    props[n++] = (em_kafka_prop_t){"enable.auto.offset.store", "false"};
    props[n++] = (em_kafka_prop_t){"auto.offset.reset", "earliest"};
    props[n++] = (em_kafka_prop_t){"partition.assignment.strategy", o->assignor};
    props[n++] = (em_kafka_prop_t){"session.timeout.ms", session};
    props[n++] = (em_kafka_prop_t){"heartbeat.interval.ms", hb};
    props[n++] = (em_kafka_prop_t){"max.poll.interval.ms", poll_iv};
    props[n++] = (em_kafka_prop_t){"queued.min.messages", qmin};
    props[n++] = (em_kafka_prop_t){"queued.max.messages.kbytes", qkb};
    props[n++] = (em_kafka_prop_t){"fetch.wait.max.ms", fwait};
    props[n++] = (em_kafka_prop_t){"socket.nagle.disable", "true"};
    props[n++] = (em_kafka_prop_t){"reconnect.backoff.ms", "50"};
    props[n++] = (em_kafka_prop_t){"reconnect.backoff.max.ms", "1000"};
    if (o->instance_id && *o->instance_id)
        props[n++] = (em_kafka_prop_t){"group.instance.id", o->instance_id};

    em_consumer_t *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    c->o = *o;
    rd_kafka_conf_t *conf =
        em_kafka_conf_new(o->bootstrap, o->client_id, props, n, o->extra, o->nextra, errstr, errstr_size);
    if (!conf) {
        free(c);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, commit_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, c);
    char e[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
    if (!c->rk) {
        snprintf(errstr, errstr_size, "kafka consumer: %s", e);
        rd_kafka_conf_destroy(conf);
        free(c);
        return NULL;
    }
    rd_kafka_poll_set_consumer(c->rk);
    c->queue = rd_kafka_queue_get_consumer(c->rk);
    return c;
}

em_err_t em_consumer_subscribe(em_consumer_t *c, const char *topic, char *errstr, size_t errstr_size) {
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(c->rk, t);
    rd_kafka_topic_partition_list_destroy(t);
    if (err) {
        snprintf(errstr, errstr_size, "subscribe %s: %s", topic, rd_kafka_err2str(err));
        return em_kafka_err(err);
    }
    return EM_OK;
}

size_t em_consumer_poll(em_consumer_t *c, rd_kafka_message_t **msgs, size_t max, int timeout_ms) {
    /* consume_batch waits for a *full* batch until the timeout: wait for the
     * first message only, then take what is already there without waiting,
     * or a trickle of records would each wait out the timeout. */
    ssize_t n = rd_kafka_consume_batch_queue(c->queue, timeout_ms, msgs, 1);
    if (n <= 0)
        return 0;
    if (max > 1) {
        ssize_t more = rd_kafka_consume_batch_queue(c->queue, 0, msgs + 1, max - 1);
        if (more > 0)
            n += more;
    }
    size_t out = 0;
    for (ssize_t i = 0; i < n; i++) {
        if (msgs[i]->err) {
            if (msgs[i]->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                EM_WARN("kafka consume error", EM_F_STR("error", rd_kafka_err2name(msgs[i]->err)),
                        EM_F_STR("reason", rd_kafka_message_errstr(msgs[i])));
            rd_kafka_message_destroy(msgs[i]);
            continue;
        }
        msgs[out++] = msgs[i];
    }
    return out;
}

em_err_t em_consumer_commit(em_consumer_t *c, const rd_kafka_topic_partition_list_t *offsets, int async) {
    rd_kafka_resp_err_t err = rd_kafka_commit(c->rk, offsets, async);
    if (err && !async)
        EM_WARN("offset commit failed", EM_F_STR("error", rd_kafka_err2name(err)), EM_F_INT("partitions", offsets->cnt));
    return em_kafka_err(err);
}

em_err_t em_consumer_pause(em_consumer_t *c, rd_kafka_topic_partition_list_t *parts) {
    return em_kafka_err(rd_kafka_pause_partitions(c->rk, parts));
}

em_err_t em_consumer_resume(em_consumer_t *c, rd_kafka_topic_partition_list_t *parts) {
    return em_kafka_err(rd_kafka_resume_partitions(c->rk, parts));
}

void em_consumer_close(em_consumer_t *c) {
    if (c->closed)
        return;
    c->closed = 1;
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(c->rk);
    if (err)
        EM_WARN("kafka consumer close", EM_F_STR("error", rd_kafka_err2name(err)));
}

void em_consumer_destroy(em_consumer_t *c) {
    if (!c)
        return;
    em_consumer_close(c);
    rd_kafka_queue_destroy(c->queue);
    rd_kafka_destroy(c->rk);
    free(c);
}

rd_kafka_t *em_consumer_handle(em_consumer_t *c) { return c->rk; }
