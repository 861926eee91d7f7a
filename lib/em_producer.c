/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Producer: the tuned librdkafka settings, a poll thread for delivery
 * reports, a metadata probe thread for health, and recovery from a fatal
 * error of the idempotent producer.
 *
 * A fatal error (RD_KAFKA_RESP_ERR__FATAL: the idempotence guarantee is
 * broken, e.g. OUT_OF_ORDER_SEQUENCE_NUMBER) ends an rd_kafka_t for good:
 * every later produce fails. So the librdkafka handle and its topic handles
 * live in a generation that can be replaced. The poll thread notices the
 * fatal error after a poll, sets the health blocker "kafka fatal error:
 * NAME", builds the next generation from a copy of the configuration, swaps
 * it in, then lets the dead one finish: what it still held is reported
 * (purged messages as RD_KAFKA_RESP_ERR__FATAL), and it is destroyed once no
 * caller uses it. The blocker is cleared when the probe reaches the cluster
 * through the new generation. If the new generation cannot be built the
 * process exits: a supervisor restarts it.
 *
 * Callers keep what em_producer_topic gave them across generations: it is
 * the producer's own topic slot, not a librdkafka handle (see the header).
 * A send, a flush and a probe take a reference on the generation they use,
 * so none of them meets a destroyed rd_kafka_t.
 */
#include "em_producer.h"

#include <pthread.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "em_log.h"
#include "em_util.h"

#define EM_MAX_TOPICS 8
/* The longest wait for the dead generation's messages once purged (their
 * reports come from librdkafka itself, not from a broker). */
#define EM_PURGED_WAIT_MS 5000

/* One librdkafka producer and its topic handles. */
typedef struct gen {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt[EM_MAX_TOPICS]; /* for topics[i]; set under lock */
    int refs;                             /* under lock: callers using rk now */
    uint64_t id;                          /* 1, 2, ...: generations in order */
} gen_t;

/* What em_producer_topic hands out (cast): a slot that outlives generations. */
typedef struct topic_slot {
    char *name;
} topic_slot_t;

struct em_producer {
    em_health_t *health;
    rd_kafka_conf_t *conf; /* a copy of the first generation's, for the next ones */
    char probe_topic[256];
    int probe_slot; /* the probe topic's slot, or -1 */
    int probe_interval_ms;
    int message_timeout_ms;
    pthread_t poll_thread, probe_thread;
    int poll_started, probe_started;
    atomic_int running;
    atomic_int reachable;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* wakes the probe: stopping, or a new generation to probe */
    int probe_now;       /* under lock: probe at once (a new generation) */
    gen_t *gen;          /* under lock; replaced only by the poll thread */
    topic_slot_t topics[EM_MAX_TOPICS];
    int ntopics;                /* under lock */
    char blocker[160];          /* under lock: the fatal-error health blocker set, or "" */
    uint64_t blocker_clear_gen; /* under lock: a probe through this generation (or a later) clears it */
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)opaque;
    em_delivery_t *d = msg->_private;
    if (!d)
        return;
    char why[8];
    if ((msg->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || msg->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) &&
        rd_kafka_fatal_error(rk, why, sizeof(why)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* purged because the producer died: say so, so the caller fails or
         * retries its call (the next producer takes the retry) */
        rd_kafka_message_t m = *msg;
        m.err = RD_KAFKA_RESP_ERR__FATAL;
        d->done(d, &m);
        return;
    }
    d->done(d, msg);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));
        EM_ERROR("kafka producer fatal error: the producer is replaced", EM_F_STR("error", rd_kafka_err2name(orig)),
                 EM_F_STR("reason", buf));
        return;
    }
    EM_WARN("kafka producer error", EM_F_STR("error", rd_kafka_err2name((rd_kafka_resp_err_t)err)),
            EM_F_STR("reason", reason));
}

static rd_kafka_topic_t *slot_token(em_producer_t *p, int i) { return (rd_kafka_topic_t *)(void *)&p->topics[i]; }

/* The slot index of a token from em_producer_topic, or -1. */
static int slot_of(const em_producer_t *p, const rd_kafka_topic_t *t) {
    uintptr_t a = (uintptr_t)(const void *)t, base = (uintptr_t)(const void *)p->topics;
    if (a < base || a >= base + sizeof(p->topics) || (a - base) % sizeof(topic_slot_t) != 0)
        return -1;
    return (int)((a - base) / sizeof(topic_slot_t));
}

/* The current generation, held until gen_put. Any thread. */
static gen_t *gen_take(em_producer_t *p) {
    pthread_mutex_lock(&p->lock);
    gen_t *g = p->gen;
    g->refs++;
    pthread_mutex_unlock(&p->lock);
    return g;
}

/* Lets g go; returns 1 when g was still the current generation. */
static int gen_put(em_producer_t *p, gen_t *g) {
    pthread_mutex_lock(&p->lock);
    g->refs--;
    int current = g == p->gen;
    pthread_mutex_unlock(&p->lock);
    return current;
}

/* A generation around a new rd_kafka_t (conf is taken on success), without
 * topic handles yet. NULL with the reason in errstr. */
static gen_t *gen_new(rd_kafka_conf_t *conf, uint64_t id, char *errstr, size_t errstr_size) {
    gen_t *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    char e[512];
    g->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
    if (!g->rk) {
        snprintf(errstr, errstr_size, "kafka producer: %s", e);
        free(g);
        return NULL;
    }
    g->id = id;
    return g;
}

static void gen_destroy(gen_t *g) {
    for (int i = 0; i < EM_MAX_TOPICS; i++)
        if (g->rkt[i])
            rd_kafka_topic_destroy(g->rkt[i]);
    rd_kafka_destroy(g->rk);
    free(g);
}

/* Sets (name non-empty) or clears the fatal-error blocker. Under p->lock, so
 * that a set and the probe's clear reach em_health in the order they
 * happened (em_health's watchers never call back into the producer). */
static void blocker_set_locked(em_producer_t *p, const char *name, uint64_t clear_gen) {
    char prev[sizeof(p->blocker)];
    snprintf(prev, sizeof(prev), "%s", p->blocker);
    snprintf(p->blocker, sizeof(p->blocker), "%s", name);
    p->blocker_clear_gen = clear_gen;
    if (!p->health)
        return;
    if (*name)
        em_health_block(p->health, name, 1);
    if (*prev && strcmp(prev, name) != 0)
        em_health_block(p->health, prev, 0);
}

/* Polls the dead generation old (and the new one g beside it) until old has
 * nothing left to report, at most timeout_ms or until the producer stops. */
static void drain_old(em_producer_t *p, gen_t *old, gen_t *g, int64_t timeout_ms) {
    int64_t end = em_mono_ms() + timeout_ms;
    while (rd_kafka_outq_len(old->rk) > 0 && atomic_load(&p->running) && em_mono_ms() < end) {
        rd_kafka_poll(old->rk, 50);
        rd_kafka_poll(g->rk, 0);
    }
}

/* The poll thread, after a poll found the current generation dead: builds
 * the next one, swaps it in, finishes and destroys the dead one. Exits the
 * process when no new generation can be built. */
static void recover(em_producer_t *p) {
    gen_t *old = p->gen; /* the poll thread is the only writer of p->gen */
    char reason[512] = "", errstr[512] = "", blocker[sizeof(p->blocker)];
    rd_kafka_resp_err_t err = rd_kafka_fatal_error(old->rk, reason, sizeof(reason));
    snprintf(blocker, sizeof(blocker), "kafka fatal error: %s", rd_kafka_err2name(err));
    EM_ERROR("kafka producer: fatal error, replacing the producer; health NOT_SERVING meanwhile",
             EM_F_STR("error", rd_kafka_err2name(err)), EM_F_STR("reason", reason), EM_F_STR("blocker", blocker),
             EM_F_UINT("generation", old->id));
    pthread_mutex_lock(&p->lock);
    blocker_set_locked(p, blocker, UINT64_MAX);
    pthread_mutex_unlock(&p->lock);

    rd_kafka_conf_t *conf = rd_kafka_conf_dup(p->conf);
    gen_t *g = conf ? gen_new(conf, old->id + 1, errstr, sizeof(errstr)) : NULL;
    if (conf && !g)
        rd_kafka_conf_destroy(conf);
    if (!conf)
        snprintf(errstr, sizeof(errstr), "out of memory copying the configuration");
    pthread_mutex_lock(&p->lock);
    for (int i = 0; g && i < p->ntopics; i++)
        if (!(g->rkt[i] = rd_kafka_topic_new(g->rk, p->topics[i].name, NULL)))
            snprintf(errstr, sizeof(errstr), "topic %s: %s", p->topics[i].name,
                     rd_kafka_err2str(rd_kafka_last_error()));
    if (g && !*errstr) {
        p->gen = g;
        p->blocker_clear_gen = g->id;
        p->probe_now = 1;
        pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    if (!g || *errstr) {
        /* nothing can be produced any more and nothing here can fix it */
        EM_ERROR("kafka producer: cannot replace the producer after its fatal error; exiting so that a supervisor "
                 "restarts the service",
                 EM_F_STR("fatal_error", rd_kafka_err2name(err)), EM_F_STR("error", errstr));
        _exit(EXIT_FAILURE); /* not exit(): the other threads still run and use what atexit would free */
    }
    EM_INFO("kafka producer replaced; waiting for the cluster to answer it", EM_F_UINT("generation", g->id));

    /* The dead one: what librdkafka purged at the fatal error is reported
     * now; what was in flight gets its broker's answer, until the message
     * timeout; the rest is purged. */
    drain_old(p, old, g, p->message_timeout_ms);
    rd_kafka_purge(old->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    drain_old(p, old, g, EM_PURGED_WAIT_MS);
    if (rd_kafka_outq_len(old->rk) > 0)
        EM_WARN("kafka producer: the replaced producer still holds messages; they are dropped unreported",
                EM_F_INT("messages", rd_kafka_outq_len(old->rk)));

    /* Wait for callers still inside old (a send, the probe's metadata call,
     * a flush), serving the new generation meanwhile. Each of them is
     * bounded; so is this wait. */
    int64_t hold = (p->probe_interval_ms * 2 > 1000 ? p->probe_interval_ms * 2 : 1000) + 10000;
    int64_t end = em_mono_ms() + hold;
    int refs;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        refs = old->refs;
        pthread_mutex_unlock(&p->lock);
        if (refs == 0 || em_mono_ms() >= end)
            break;
        rd_kafka_poll(g->rk, 20);
    }
    if (refs == 0)
        gen_destroy(old);
    else /* never seen: a caller stuck inside librdkafka; leaking beats a use after free */
        EM_ERROR("kafka producer: the replaced producer is still in use; it is left behind",
                 EM_F_INT("refs", refs), EM_F_UINT("generation", old->id));
}

static void *poll_main(void *arg) {
    em_producer_t *p = arg;
    while (atomic_load(&p->running)) {
        rd_kafka_t *rk = p->gen->rk; /* this thread is the only writer of p->gen */
        rd_kafka_poll(rk, 100);
        char why[8];
        if (rd_kafka_fatal_error(rk, why, sizeof(why)) != RD_KAFKA_RESP_ERR_NO_ERROR && atomic_load(&p->running))
            recover(p);
    }
    return NULL;
}

/* One metadata round trip for the probe topic through g: the cluster answers
 * and the topic has partitions, each with a leader. */
static int probe_once(em_producer_t *p, gen_t *g, char *why, size_t n) {
    const struct rd_kafka_metadata *md = NULL;
    int timeout = p->probe_interval_ms * 2;
    if (timeout < 1000)
        timeout = 1000;
    rd_kafka_resp_err_t err = rd_kafka_metadata(g->rk, 0, g->rkt[p->probe_slot], &md, timeout);
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
    int last = -1;
    while (atomic_load(&p->running)) {
        char why[512] = "";
        gen_t *g = gen_take(p);
        int ok = p->probe_slot >= 0 && probe_once(p, g, why, sizeof(why));
        if (p->probe_slot < 0)
            snprintf(why, sizeof(why), "topic %s: no topic handle", p->probe_topic);
        uint64_t gid = g->id;
        gen_put(p, g);
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
        if (ok && *p->blocker && gid >= p->blocker_clear_gen) {
            EM_INFO("kafka producer recovered from its fatal error: the new producer reached the cluster",
                    EM_F_STR("blocker", p->blocker), EM_F_UINT("generation", gid));
            blocker_set_locked(p, "", 0);
        }
        if (atomic_load(&p->running) && !p->probe_now)
            em_cond_wait_ms(&p->cond, &p->lock, p->probe_interval_ms);
        p->probe_now = 0;
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
    o->max_message_bytes = (int)em_config_int(cfg, "kafka.max_message_bytes");
    o->probe_interval_ms = (int)em_config_int(cfg, "kafka.probe_interval_ms");
    o->nextra = em_kafka_extra_from_config(cfg, extra);
    o->extra = extra;
}

em_producer_t *em_producer_new(const em_producer_opts_t *o, char *errstr, size_t errstr_size) {
    char linger[32], batch[32], timeout[32], qmsgs[32], qkb[32], maxmsg[32];
    snprintf(linger, sizeof(linger), "%d", o->linger_ms);
    snprintf(batch, sizeof(batch), "%d", o->batch_size);
    snprintf(timeout, sizeof(timeout), "%d", o->message_timeout_ms);
    snprintf(qmsgs, sizeof(qmsgs), "%d", o->queue_max_messages);
    snprintf(qkb, sizeof(qkb), "%d", o->queue_max_kbytes);
    snprintf(maxmsg, sizeof(maxmsg), "%d",
             o->max_message_bytes > 0 ? o->max_message_bytes : EM_KAFKA_MAX_MESSAGE_DEFAULT);
    const em_kafka_prop_t props[] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", linger},
        {"batch.size", batch},
        {"message.timeout.ms", timeout},
        {"queue.buffering.max.messages", qmsgs},
        {"queue.buffering.max.kbytes", qkb},
        {"message.max.bytes", maxmsg},
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
    p->probe_slot = -1;
    p->probe_interval_ms = o->probe_interval_ms > 0 ? o->probe_interval_ms : 1000;
    p->message_timeout_ms = o->message_timeout_ms > 0 ? o->message_timeout_ms : 30000;
    snprintf(p->probe_topic, sizeof(p->probe_topic), "%s", o->probe_topic);
    if (p->health)
        em_health_block(p->health, "kafka", 1);

    rd_kafka_conf_t *conf = em_kafka_conf_new(o->bootstrap, o->client_id, props, EM_ARRAY_LEN(props), o->extra,
                                              o->nextra, errstr, errstr_size);
    if (!conf)
        goto fail;
    /* wrong credentials (or CA) refuse the start, naming them, rather than a NOT_SERVING that never ends */
    if (em_kafka_preflight(conf, RD_KAFKA_PRODUCER, EM_KAFKA_PREFLIGHT_MS, errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->conf = rd_kafka_conf_dup(conf);
    if (!p->conf) {
        snprintf(errstr, errstr_size, "out of memory");
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    p->gen = gen_new(conf, 1, errstr, errstr_size);
    if (!p->gen) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_topic_t *probe = em_producer_topic(p, p->probe_topic);
    p->probe_slot = probe ? slot_of(p, probe) : -1;
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
    if (p->conf)
        rd_kafka_conf_destroy(p->conf);
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
    gen_t *g = p->gen;
    rd_kafka_purge(g->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(g->rk, 0); /* serve the purged messages' reports */
    gen_destroy(g);
    for (int i = 0; i < p->ntopics; i++)
        free(p->topics[i].name);
    rd_kafka_conf_destroy(p->conf);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

rd_kafka_topic_t *em_producer_topic(em_producer_t *p, const char *name) {
    rd_kafka_topic_t *t = NULL;
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->ntopics; i++)
        if (strcmp(p->topics[i].name, name) == 0) {
            t = slot_token(p, i);
            goto out;
        }
    if (p->ntopics == EM_MAX_TOPICS)
        goto out;
    int i = p->ntopics;
    char *copy = strdup(name);
    rd_kafka_topic_t *rkt = copy ? rd_kafka_topic_new(p->gen->rk, name, NULL) : NULL;
    if (!rkt) {
        free(copy);
        goto out;
    }
    p->topics[i].name = copy;
    p->gen->rkt[i] = rkt;
    p->ntopics++;
    t = slot_token(p, i);
out:
    pthread_mutex_unlock(&p->lock);
    return t;
}

em_err_t em_producer_send(em_producer_t *p, rd_kafka_topic_t *t, const void *key, size_t klen, const void *val,
                          size_t vlen, rd_kafka_headers_t *headers, int copy, em_delivery_t *d) {
    int i = slot_of(p, t);
    if (i < 0)
        return EM_EINVAL;
    gen_t *g = gen_take(p);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        g->rk, RD_KAFKA_V_RKT(g->rkt[i]), RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
        RD_KAFKA_V_MSGFLAGS(copy ? RD_KAFKA_MSG_F_COPY : 0), RD_KAFKA_V_KEY(key, klen),
        RD_KAFKA_V_VALUE((void *)(uintptr_t)val, vlen), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
    gen_put(p, g);
    return em_kafka_err(err);
}

int em_producer_send_batch(em_producer_t *p, rd_kafka_topic_t *t, rd_kafka_message_t *msgs, int n) {
    int i = slot_of(p, t);
    if (i < 0) {
        for (int k = 0; k < n; k++)
            msgs[k].err = RD_KAFKA_RESP_ERR__INVALID_ARG;
        return 0;
    }
    gen_t *g = gen_take(p);
    int queued = rd_kafka_produce_batch(g->rkt[i], RD_KAFKA_PARTITION_UA, 0, msgs, n);
    gen_put(p, g);
    return queued;
}

em_err_t em_producer_flush(em_producer_t *p, int timeout_ms) {
    int64_t end = em_mono_ms() + timeout_ms;
    for (;;) {
        gen_t *g = gen_take(p);
        int64_t left = end - em_mono_ms();
        rd_kafka_resp_err_t err = rd_kafka_flush(g->rk, left > 0 ? (int)left : 0);
        /* replaced meanwhile: what the dead one held was reported (failed);
         * flush the new one with the time left */
        if (gen_put(p, g) || em_mono_ms() >= end)
            return em_kafka_err(err);
    }
}

int em_producer_reachable(em_producer_t *p) { return atomic_load(&p->reachable); }

int em_producer_outq(em_producer_t *p) {
    gen_t *g = gen_take(p);
    int n = rd_kafka_outq_len(g->rk);
    gen_put(p, g);
    return n;
}

rd_kafka_t *em_producer_handle(em_producer_t *p) {
    pthread_mutex_lock(&p->lock);
    rd_kafka_t *rk = p->gen->rk;
    pthread_mutex_unlock(&p->lock);
    return rk;
}
