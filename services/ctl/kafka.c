/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading one topic from the command line: a consumer that is assigned the
 * partitions itself (it never joins a consumer group, so reading never
 * moves a partition away from a scheduler) and starts at the end, at the
 * beginning (or the first record since a time), or at a group's committed
 * offsets, which it can also commit (dead replay's progress). It remembers
 * the end offsets it saw at the start, so a command can read "everything
 * there is now" and stop. A reader for one key reads only the partition
 * the key is produced to (librdkafka's default partitioner, which the
 * services use: CRC32 of the key modulo the partition count).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "em_util.h"

struct ctl_reader {
    rd_kafka_t *rk;
    char *topic;
    int32_t nparts;  /* the topic's partition count */
    int32_t *ids;    /* the partitions read */
    int64_t *start;  /* offsets it started at */
    int64_t *end;    /* end offsets at creation */
    int64_t *pos;    /* next offset to read, as far as known */
    size_t n;        /* partitions read */
};

static ssize_t slot_of(const ctl_reader_t *r, int32_t partition) {
    for (size_t i = 0; i < r->n; i++)
        if (r->ids[i] == partition)
            return (ssize_t)i;
    return -1;
}

ctl_reader_t *ctl_reader_new(const ctl_reader_opts_t *o, char *err, size_t errn) {
    em_kafka_prop_t props[] = {{"group.id", o->group ? o->group : "execmeshctl"},
                               {"enable.auto.commit", "false"},
                               {"enable.auto.offset.store", "false"},
                               {"enable.partition.eof", "true"},
                               {"fetch.wait.max.ms", "50"}};
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    ctl_reader_t *r = calloc(1, sizeof(*r));
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_resp_err_t e;
    if (!r) {
        snprintf(err, errn, "out of memory");
        return NULL;
    }
    r->topic = strdup(o->topic);
    conf = em_kafka_conf_new(o->bootstrap, "execmeshctl", props, EM_ARRAY_LEN(props), o->sec, o->nsec, err, errn);
    if (!conf || !r->topic)
        goto fail;
    if (em_kafka_preflight(conf, RD_KAFKA_CONSUMER, o->timeout_ms, err, errn) != 0)
        goto fail;
    r->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errn);
    if (!r->rk)
        goto fail;
    conf = NULL; /* the handle owns it */
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(r->rk, o->topic, NULL);
    e = rd_kafka_metadata(r->rk, 0, rkt, &md, o->timeout_ms);
    if (e || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0) {
        if (!e && md->topic_cnt == 1 && (md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                                         md->topics[0].partition_cnt == 0))
            snprintf(err, errn, "kafka %s: topic %s does not exist", o->bootstrap, o->topic);
        else
            snprintf(err, errn, "kafka %s: cannot read topic %s: %s", o->bootstrap, o->topic,
                     e ? rd_kafka_err2str(e) : md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "no metadata");
        rd_kafka_topic_destroy(rkt);
        goto fail;
    }
    r->nparts = md->topics[0].partition_cnt;
    int32_t only = -1;
    if (o->key)
        only = rd_kafka_msg_partitioner_consistent(rkt, o->key, o->key_len, r->nparts, NULL, NULL);
    rd_kafka_topic_destroy(rkt);
    size_t cap = (size_t)r->nparts;
    r->ids = calloc(cap, sizeof(*r->ids));
    r->start = calloc(cap, sizeof(*r->start));
    r->end = calloc(cap, sizeof(*r->end));
    r->pos = calloc(cap, sizeof(*r->pos));
    parts = rd_kafka_topic_partition_list_new((int)cap);
    if (!r->ids || !r->start || !r->end || !r->pos || !parts) {
        snprintf(err, errn, "out of memory");
        goto fail;
    }
    for (int i = 0; i < md->topics[0].partition_cnt; i++) {
        int32_t p = md->topics[0].partitions[i].id;
        if (only >= 0 && p != only)
            continue;
        int64_t lo, hi;
        e = rd_kafka_query_watermark_offsets(r->rk, o->topic, p, &lo, &hi, o->timeout_ms);
        if (e) {
            snprintf(err, errn, "kafka %s: offsets of %s/%d: %s", o->bootstrap, o->topic, p, rd_kafka_err2str(e));
            goto fail;
        }
        r->ids[r->n] = p;
        r->start[r->n] = o->from == CTL_FROM_END ? hi : lo;
        r->end[r->n] = hi;
        r->n++;
        rd_kafka_topic_partition_list_add(parts, o->topic, p)->offset = o->from == CTL_FROM_END ? hi : lo;
    }
    if (o->from == CTL_FROM_BEGINNING && o->since_unix_ms > 0) {
        for (int i = 0; i < parts->cnt; i++)
            parts->elems[i].offset = o->since_unix_ms;
        e = rd_kafka_offsets_for_times(r->rk, parts, o->timeout_ms);
        if (e) {
            snprintf(err, errn, "kafka %s: offsets of %s since %" PRId64 ": %s", o->bootstrap, o->topic,
                     o->since_unix_ms, rd_kafka_err2str(e));
            goto fail;
        }
        for (int i = 0; i < parts->cnt; i++) {
            ssize_t s = slot_of(r, parts->elems[i].partition);
            if (parts->elems[i].offset < 0) /* nothing that recent: start at the end */
                parts->elems[i].offset = r->end[s];
            r->start[s] = parts->elems[i].offset;
        }
    }
    if (o->from == CTL_FROM_COMMITTED) {
        rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(parts);
        e = rd_kafka_committed(r->rk, c, o->timeout_ms);
        if (e) {
            snprintf(err, errn, "kafka %s: committed offsets of group %s: %s", o->bootstrap, o->group,
                     rd_kafka_err2str(e));
            rd_kafka_topic_partition_list_destroy(c);
            goto fail;
        }
        for (int i = 0; i < c->cnt; i++) {
            ssize_t s = slot_of(r, c->elems[i].partition);
            if (c->elems[i].offset >= 0) { /* else never committed: from the beginning */
                int64_t off = c->elems[i].offset;
                if (off < r->start[s]) /* retention removed what it had not read */
                    off = r->start[s];
                parts->elems[i].offset = off;
                r->start[s] = off;
            }
        }
        rd_kafka_topic_partition_list_destroy(c);
    }
    for (size_t i = 0; i < r->n; i++)
        r->pos[i] = r->start[i];
    e = rd_kafka_assign(r->rk, parts);
    if (e) {
        snprintf(err, errn, "kafka %s: cannot assign %s: %s", o->bootstrap, o->topic, rd_kafka_err2str(e));
        goto fail;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_metadata_destroy(md);
    return r;
fail:
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    if (md)
        rd_kafka_metadata_destroy(md);
    if (conf)
        rd_kafka_conf_destroy(conf);
    ctl_reader_destroy(r);
    return NULL;
}

rd_kafka_message_t *ctl_reader_next(ctl_reader_t *r, int timeout_ms) {
    int64_t deadline = em_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - em_mono_ms();
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, left > 0 ? (int)left : 0);
        if (!m)
            return NULL;
        ssize_t s = m->rkt ? slot_of(r, m->partition) : -1;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (s >= 0 && m->offset > r->pos[s])
                r->pos[s] = m->offset;
        } else if (!m->err) {
            if (s >= 0 && m->offset + 1 > r->pos[s])
                r->pos[s] = m->offset + 1;
            return m;
        }
        /* other errors are transient here (a broker reconnecting): librdkafka retries */
        rd_kafka_message_destroy(m);
        if (em_mono_ms() >= deadline)
            return NULL;
    }
}

int ctl_reader_caught_up(const ctl_reader_t *r) {
    for (size_t i = 0; i < r->n; i++)
        if (r->pos[i] < r->end[i])
            return 0;
    return 1;
}

int64_t ctl_reader_backlog(const ctl_reader_t *r) {
    int64_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->end[i] > r->start[i])
            n += r->end[i] - r->start[i];
    return n;
}

int64_t ctl_reader_position(const ctl_reader_t *r, int32_t partition) {
    ssize_t s = slot_of(r, partition);
    return s < 0 ? -1 : r->pos[s];
}

int32_t ctl_reader_partitions(const ctl_reader_t *r) {
    return r->nparts;
}

em_err_t ctl_reader_commit(ctl_reader_t *r, const int64_t *next, char *err, size_t errn) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(r->nparts);
    if (!l) {
        snprintf(err, errn, "out of memory");
        return EM_ENOMEM;
    }
    for (int32_t p = 0; p < r->nparts; p++)
        if (next[p] >= 0)
            rd_kafka_topic_partition_list_add(l, r->topic, p)->offset = next[p];
    rd_kafka_resp_err_t e = l->cnt ? rd_kafka_commit(r->rk, l, 0) : RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        snprintf(err, errn, "cannot commit the offsets: %s", rd_kafka_err2str(e));
        return EM_EIO;
    }
    return EM_OK;
}

void ctl_reader_destroy(ctl_reader_t *r) {
    if (!r)
        return;
    if (r->rk) {
        rd_kafka_consumer_close(r->rk);
        rd_kafka_destroy(r->rk);
    }
    free(r->topic);
    free(r->ids);
    free(r->start);
    free(r->end);
    free(r->pos);
    free(r);
}

int ctl_kafka_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t cap) {
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t n;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR || !h)
        return 0;
    if (rd_kafka_header_get_last(h, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    if (!v)
        n = 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, v ? v : "", n);
    buf[n] = '\0';
    return 1;
}
