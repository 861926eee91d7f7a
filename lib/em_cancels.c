/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cancels reader: one consumer assigned every partition of the cancels
 * topic, one thread, one set of ids (a chained hash table whose entries
 * also form a list in arrival order, so forgetting is popping the oldest).
 */
#include "em_cancels.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_kafka.h"
#include "em_log.h"
#include "em_pbwire.h"
#include "em_util.h"

typedef struct entry {
    struct entry *chain;       /* the bucket's next */
    struct entry *newer;       /* arrival order */
    int64_t at_unix_ms;        /* the record's timestamp */
    uint64_t hash;
    size_t len;
    uint8_t id[];
} entry_t;

struct em_cancels {
    rd_kafka_t *rk;
    char *topic;
    int64_t remember_ms;
    size_t max_ids;
    void (*on_cancel)(void *ctx, const uint8_t *id, size_t len);
    void *ctx;
    pthread_t thread;
    atomic_int stopping;
    atomic_int ready;
    int nparts;
    int64_t *start_end; /* per partition: the end offset at start (caught up once read past it) */
    int *caught_up;
    int ncaught;

    pthread_mutex_t lock; /* the set below */
    entry_t **buckets;
    size_t nbuckets;
    entry_t *oldest, *newest;
    atomic_size_t count; /* written under lock; read without it by em_cancels_empty */

    em_metric_t *m_read, *m_remembered, *m_forgotten;
};

/* The metrics are optional. */
static void metric_add(em_metric_t *m, int64_t d) {
    if (m)
        em_metric_add(m, d);
}

static void metric_set(em_metric_t *m, int64_t v) {
    if (m)
        em_metric_set(m, v);
}

static entry_t **bucket_of(em_cancels_t *c, uint64_t h) { return &c->buckets[h & (c->nbuckets - 1)]; }

static entry_t *find_locked(em_cancels_t *c, const uint8_t *id, size_t len, uint64_t h) {
    for (entry_t *e = *bucket_of(c, h); e; e = e->chain)
        if (e->hash == h && e->len == len && memcmp(e->id, id, len) == 0)
            return e;
    return NULL;
}

/* Forgets the oldest entry (c->lock held). */
static void forget_oldest_locked(em_cancels_t *c) {
    entry_t *e = c->oldest;
    for (entry_t **pp = bucket_of(c, e->hash); *pp; pp = &(*pp)->chain)
        if (*pp == e) {
            *pp = e->chain;
            break;
        }
    c->oldest = e->newer;
    if (!c->oldest)
        c->newest = NULL;
    c->count--;
    free(e);
    metric_add(c->m_forgotten, 1);
}

static void expire_locked(em_cancels_t *c, int64_t now) {
    while (c->oldest && (c->count > c->max_ids || now - c->oldest->at_unix_ms > c->remember_ms))
        forget_oldest_locked(c);
    metric_set(c->m_remembered, (int64_t)c->count);
}

/* Remembers id; 1 when it is new. Records arrive roughly in time order,
 * so arrival order is expiry order (a late old record is simply forgotten
 * with the ones before it). */
static int remember(em_cancels_t *c, const uint8_t *id, size_t len, int64_t at) {
    uint64_t h = em_fnv1a(id, len);
    pthread_mutex_lock(&c->lock);
    if (find_locked(c, id, len, h)) {
        pthread_mutex_unlock(&c->lock);
        return 0;
    }
    entry_t *e = malloc(sizeof(*e) + len);
    if (!e) {
        pthread_mutex_unlock(&c->lock);
        EM_ERROR("cancels: out of memory remembering a cancel");
        return 0;
    }
    e->hash = h;
    e->len = len;
    e->at_unix_ms = at;
    e->newer = NULL;
    memcpy(e->id, id, len);
    e->chain = *bucket_of(c, h);
    *bucket_of(c, h) = e;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
    c->count++;
    expire_locked(c, em_now_unix_ms());
    pthread_mutex_unlock(&c->lock);
    return 1;
}

int em_cancels_has(em_cancels_t *c, const uint8_t *id, size_t len) {
    uint64_t h = em_fnv1a(id, len);
    pthread_mutex_lock(&c->lock);
    entry_t *e = find_locked(c, id, len, h);
    int yes = e && em_now_unix_ms() - e->at_unix_ms <= c->remember_ms;
    pthread_mutex_unlock(&c->lock);
    return yes;
}

size_t em_cancels_count(em_cancels_t *c) {
    pthread_mutex_lock(&c->lock);
    size_t n = c->count;
    pthread_mutex_unlock(&c->lock);
    return n;
}

int em_cancels_ready(em_cancels_t *c) { return atomic_load(&c->ready); }

int em_cancels_empty(em_cancels_t *c) { return atomic_load_explicit(&c->count, memory_order_relaxed) == 0; }

static void caught_up(em_cancels_t *c, int32_t partition) {
    if (partition < 0 || partition >= c->nparts || c->caught_up[partition])
        return;
    c->caught_up[partition] = 1;
    if (++c->ncaught == c->nparts) {
        atomic_store(&c->ready, 1);
        EM_INFO("cancels read up to the end", EM_F_STR("topic", c->topic), EM_F_UINT("remembered", em_cancels_count(c)));
    }
}

static void take(em_cancels_t *c, const rd_kafka_message_t *m) {
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        caught_up(c, m->partition);
        return;
    }
    if (m->err) {
        EM_WARN("cancels: consume error", EM_F_STR("error", rd_kafka_message_errstr(m)));
        return;
    }
    if (m->partition >= 0 && m->partition < c->nparts && m->offset + 1 >= c->start_end[m->partition])
        caught_up(c, m->partition);
    if (!m->key || m->key_len == 0)
        return; /* a cancel names its execution in its key */
    metric_add(c->m_read, 1);
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    if (ts <= 0)
        ts = em_now_unix_ms();
    if (em_now_unix_ms() - ts > c->remember_ms)
        return; /* older than the window (the start offset is found by time; partitions differ) */
    if (remember(c, m->key, m->key_len, ts) && c->on_cancel)
        c->on_cancel(c->ctx, m->key, m->key_len);
}

static void *reader_main(void *arg) {
    em_cancels_t *c = arg;
    int64_t next_expiry = em_mono_ms() + 1000;
    while (!atomic_load(&c->stopping)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 100);
        if (m) {
            take(c, m);
            rd_kafka_message_destroy(m);
        }
        if (em_mono_ms() >= next_expiry) {
            pthread_mutex_lock(&c->lock);
            expire_locked(c, em_now_unix_ms());
            pthread_mutex_unlock(&c->lock);
            next_expiry = em_mono_ms() + 1000;
        }
    }
    return NULL;
}

/* Every partition, from the first record of the last remember_ms. */
static em_err_t assign_all(em_cancels_t *c, char *errstr, size_t n) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(c->rk, c->topic, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(c->rk, 0, t, &md, 10000);
    rd_kafka_topic_destroy(t);
    if (err || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt <= 0) {
        snprintf(errstr, n, "cancels topic '%s': %s", c->topic,
                 err ? rd_kafka_err2str(err)
                     : rd_kafka_err2str(md->topic_cnt == 1 && md->topics[0].err ? md->topics[0].err
                                                                              : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
        if (md)
            rd_kafka_metadata_destroy(md);
        return EM_EINVAL;
    }
    c->nparts = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    c->start_end = calloc((size_t)c->nparts, sizeof(*c->start_end));
    c->caught_up = calloc((size_t)c->nparts, sizeof(*c->caught_up));
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(c->nparts);
    if (!c->start_end || !c->caught_up || !l) {
        snprintf(errstr, n, "out of memory");
        if (l)
            rd_kafka_topic_partition_list_destroy(l);
        return EM_ENOMEM;
    }
    /* From the oldest record kept: the topic's retention should be the
     * remember window (older records are skipped as they are read). Asking
     * Kafka for offsets by time would save reading them, but the mock
     * cluster answers such a query with the end offset. */
    for (int32_t p = 0; p < c->nparts; p++)
        rd_kafka_topic_partition_list_add(l, c->topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int32_t p = 0; !err && p < c->nparts; p++) {
        int64_t lo, hi;
        err = rd_kafka_query_watermark_offsets(c->rk, c->topic, p, &lo, &hi, 10000);
        c->start_end[p] = hi;
        if (!err && lo >= hi) { /* empty: nothing to read before it is ready */
            c->caught_up[p] = 1;
            c->ncaught++;
        }
    }
    if (!err)
        err = rd_kafka_assign(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        snprintf(errstr, n, "cancels topic '%s': %s", c->topic, rd_kafka_err2str(err));
        return EM_EINVAL;
    }
    if (c->ncaught == c->nparts)
        atomic_store(&c->ready, 1);
    return EM_OK;
}

em_cancels_t *em_cancels_new(const em_cancels_opts_t *o, char *errstr, size_t errstr_size) {
    static const em_kafka_prop_t props[] = {
        {"group.id", "execmesh-cancels-reader"}, /* required by the consumer; nothing is committed */
        {"enable.auto.commit", "false"},
        {"enable.partition.eof", "true"},
        {"fetch.wait.max.ms", "100"},
    };
    em_cancels_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->topic = strdup(o->topic))) {
        snprintf(errstr, errstr_size, "out of memory");
        free(c);
        return NULL;
    }
    c->remember_ms = o->remember_ms > 0 ? o->remember_ms : 86400000;
    c->max_ids = o->max_ids > 0 ? o->max_ids : 1000000;
    c->on_cancel = o->on_cancel;
    c->ctx = o->ctx;
    pthread_mutex_init(&c->lock, NULL);
    c->nbuckets = 1024;
    while (c->nbuckets < c->max_ids && c->nbuckets < (1u << 22))
        c->nbuckets <<= 1;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (o->metrics) {
        c->m_read = em_metrics_counter(o->metrics, "execmesh_cancels_read_total", NULL,
                                       "Cancel records read from the cancels topic.");
        c->m_remembered = em_metrics_gauge(o->metrics, "execmesh_cancels_remembered", NULL,
                                           "Cancelled execution ids remembered now.");
        c->m_forgotten = em_metrics_counter(o->metrics, "execmesh_cancels_forgotten_total", NULL,
                                            "Cancels forgotten: older than the remember window, or beyond the most kept.");
    }
    rd_kafka_conf_t *conf = NULL;
    if (c->buckets)
        conf = em_kafka_conf_new(o->bootstrap, o->client_id ? o->client_id : "execmesh-cancels", props,
                                 EM_ARRAY_LEN(props), o->extra, o->nextra, errstr, errstr_size);
    else
        snprintf(errstr, errstr_size, "out of memory");
    if (!conf)
        goto fail;
    char e[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
    if (!c->rk) {
        snprintf(errstr, errstr_size, "kafka cancels consumer: %s", e);
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_poll_set_consumer(c->rk);
    if (assign_all(c, errstr, errstr_size) != EM_OK)
        goto fail;
    if (pthread_create(&c->thread, NULL, reader_main, c) != 0) {
        snprintf(errstr, errstr_size, "cannot start the cancels reader thread");
        goto fail;
    }
    return c;
fail:
    if (c->rk) {
        rd_kafka_consumer_close(c->rk);
        rd_kafka_destroy(c->rk);
    }
    free(c->start_end);
    free(c->caught_up);
    free(c->buckets);
    free(c->topic);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return NULL;
}

void em_cancels_destroy(em_cancels_t *c) {
    if (!c)
        return;
    atomic_store(&c->stopping, 1);
    pthread_join(c->thread, NULL);
    rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
    while (c->oldest) {
        entry_t *e = c->oldest;
        c->oldest = e->newer;
        free(e);
    }
    free(c->buckets);
    free(c->start_end);
    free(c->caught_up);
    free(c->topic);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

em_err_t em_cancels_send(em_producer_t *p, rd_kafka_topic_t *topic, const char *id, size_t len, em_delivery_t *d) {
    /* value: execmesh.v1.CancelRecord {id = 1, requested_unix_ms = 2} */
    uint8_t val[600];
    if (len == 0 || em_pb_len_field_size(1, len) + em_pb_varint_field_size(2, UINT64_MAX) > sizeof(val))
        return EM_EINVAL;
    uint8_t *o = em_pb_write_len_field(val, 1, id, len);
    o = em_pb_write_varint_field(o, 2, (uint64_t)em_now_unix_ms());
    return em_producer_send(p, topic, id, len, val, (size_t)(o - val), NULL, 1, d);
}
