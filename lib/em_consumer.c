/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Consumer-group membership, rebalance protocol handling, manual commits,
 * and the pause flags. librdkafka keeps one pause flag per partition; this
 * module derives it from the owner's two wishes (the consumer-wide pause and
 * the per-partition hold) and writes it whenever either wish or the
 * assignment changes, so librdkafka's flag is want_paused || held[p] for
 * every assigned partition and clear for every partition given up.
 */
#include "em_consumer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_log.h"
#include "em_util.h"

struct em_consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    em_consumer_opts_t o;
    char *topic;      /* the subscribed topic */
    int closed;
    int want_paused;  /* the owner's wish, applied to every assignment */
    /* Per partition id (dense: Kafka numbers a topic's partitions from 0),
     * EM_PART_ASSIGNED and EM_PART_HELD; ids at or past cappart are
     * neither. Grown on assign only, so a bad id never allocates. */
    uint8_t *part;
    size_t cappart;
    int in_assign;    /* on_assign is running: holds are applied after the assign */
    /* partitions assigned while em_consumer_poll runs (see there) */
    int in_poll;
    int32_t *fresh;
    int nfresh, capfresh;
};

#define EM_PART_ASSIGNED 0x1 /* in this member's assignment, as the rebalance callbacks told the owner */
#define EM_PART_HELD 0x2     /* held by the owner (em_consumer_hold_partition) */

static int part_flags(const em_consumer_t *c, int32_t partition) {
    return partition >= 0 && (size_t)partition < c->cappart ? c->part[partition] : 0;
}

/* librdkafka's pause flag partition should have. */
static int should_pause(const em_consumer_t *c, int32_t partition) {
    return c->want_paused || (part_flags(c, partition) & EM_PART_HELD);
}

/* Marks parts assigned (and not held). 0, or -1 when out of memory: then
 * the partitions past the old capacity are not marked, and cannot be held. */
static int parts_assigned(em_consumer_t *c, const rd_kafka_topic_partition_list_t *parts) {
    int32_t max = -1;
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition > max)
            max = parts->elems[i].partition;
    int rc = 0;
    size_t old = c->cappart;
    if (max >= 0 && em_grow(&c->part, &c->cappart, (size_t)max + 1, sizeof(*c->part)) != 0)
        rc = -1;
    else if (c->cappart > old)
        memset(c->part + old, 0, c->cappart - old);
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (p >= 0 && (size_t)p < c->cappart)
            c->part[p] = EM_PART_ASSIGNED;
    }
    return rc;
}

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

/* Pauses or resumes parts in librdkafka; per-partition errors are logged,
 * the first one returned. */
static rd_kafka_resp_err_t set_pause(em_consumer_t *c, const rd_kafka_topic_partition_list_t *parts, int pause) {
    if (!parts || parts->cnt == 0)
        return RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t err = pause ? rd_kafka_pause_partitions(c->rk, l) : rd_kafka_resume_partitions(c->rk, l);
    for (int i = 0; !err && i < l->cnt; i++)
        if (l->elems[i].err) {
            err = l->elems[i].err;
            EM_WARN(pause ? "cannot pause a partition" : "cannot resume a partition",
                    EM_F_INT("partition", l->elems[i].partition), EM_F_STR("error", rd_kafka_err2name(err)));
        }
    if (err && l->cnt && !l->elems[0].err)
        EM_WARN(pause ? "cannot pause partitions" : "cannot resume partitions",
                EM_F_STR("error", rd_kafka_err2name(err)));
    rd_kafka_topic_partition_list_destroy(l);
    return err;
}

/* Sets librdkafka's pause flag of each partition in parts to what the
 * owner wants of it (should_pause). skip_held leaves held partitions
 * alone (their flag is set whatever the consumer-wide wish). */
static void apply_pause(em_consumer_t *c, const rd_kafka_topic_partition_list_t *parts, int skip_held) {
    if (!parts || parts->cnt == 0)
        return;
    rd_kafka_topic_partition_list_t *l[2] = {rd_kafka_topic_partition_list_new(parts->cnt),
                                             rd_kafka_topic_partition_list_new(parts->cnt)};
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (skip_held && (part_flags(c, p) & EM_PART_HELD))
            continue;
        rd_kafka_topic_partition_list_add(l[should_pause(c, p)], parts->elems[i].topic, p);
    }
    set_pause(c, l[0], 0);
    set_pause(c, l[1], 1);
    rd_kafka_topic_partition_list_destroy(l[0]);
    rd_kafka_topic_partition_list_destroy(l[1]);
}

static void fresh_add(em_consumer_t *c, int32_t partition) {
    if (c->nfresh == c->capfresh) {
        int n = c->capfresh ? c->capfresh * 2 : 64;
        int32_t *f = realloc(c->fresh, (size_t)n * sizeof(*f));
        if (!f)
            return; /* out of memory: at worst a stale record reaches the owner, who ignores lower offsets */
        c->fresh = f;
        c->capfresh = n;
    }
    c->fresh[c->nfresh++] = partition;
}

static int fresh_has(const em_consumer_t *c, int32_t partition) {
    for (int i = 0; i < c->nfresh; i++)
        if (c->fresh[i] == partition)
            return 1;
    return 0;
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
        /* assigned before the owner hears it, so on_assign may hold them */
        if (parts_assigned(c, parts) != 0)
            EM_ERROR("out of memory: newly assigned partitions cannot be held", EM_F_STR("partitions", list));
        c->in_assign = 1;
        if (c->o.on_assign)
            c->o.on_assign(c->o.ctx, parts);
        c->in_assign = 0;
        if (coop) {
            rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
            if (e) {
                EM_ERROR("incremental assign failed", EM_F_STR("error", rd_kafka_error_string(e)));
                rd_kafka_error_destroy(e);
            }
        } else {
            rd_kafka_assign(rk, parts);
        }
        /* librdkafka keeps a partition's pause flag across unassign and
         * assign: say explicitly what each new partition should be (paused
         * when the consumer is, or when on_assign held it) */
        apply_pause(c, parts, 0);
        if (c->in_poll)
            for (int i = 0; i < parts->cnt; i++)
                fresh_add(c, parts->elems[i].partition);
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
    /* a partition given up paused would come back paused on its next
     * assign, to this member or (after a restart of librdkafka's state)
     * never: clear the flag now. Its hold ends here too. */
    rd_kafka_topic_partition_list_t *paused = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (should_pause(c, p))
            rd_kafka_topic_partition_list_add(paused, parts->elems[i].topic, p);
        if (p >= 0 && (size_t)p < c->cappart)
            c->part[p] = 0;
    }
    set_pause(c, paused, 0);
    rd_kafka_topic_partition_list_destroy(paused);
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
    free(c->topic);
    c->topic = strdup(topic);
    if (!c->topic) {
        snprintf(errstr, errstr_size, "out of memory");
        return EM_ENOMEM;
    }
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

/* Moves each partition in parts (offsets ignored) to its committed offset,
 * or to the beginning when the group has none (auto.offset.reset=earliest). */
static void seek_committed(em_consumer_t *c, rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_resp_err_t err = rd_kafka_committed(c->rk, parts, 10000);
    if (err) {
        EM_ERROR("cannot read committed offsets to restart newly assigned partitions",
                 EM_F_STR("error", rd_kafka_err2name(err)), EM_F_INT("partitions", parts->cnt));
        return; /* the stall watchdog restarts them */
    }
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].offset < 0)
            parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    /* a partition whose fetcher has not started yet refuses the seek; it
     * starts at the committed offset anyway */
    rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, parts, 10000);
    if (e) {
        EM_INFO("seek of newly assigned partitions refused", EM_F_STR("error", rd_kafka_error_string(e)));
        rd_kafka_error_destroy(e);
    }
}

size_t em_consumer_poll(em_consumer_t *c, rd_kafka_message_t **msgs, size_t max, int timeout_ms) {
    /* consume_batch waits for a *full* batch until the timeout: wait for the
     * first message only, then take what is already there without waiting,
     * or a trickle of records would each wait out the timeout. */
    c->in_poll = 1;
    c->nfresh = 0;
    ssize_t n = rd_kafka_consume_batch_queue(c->queue, timeout_ms, msgs, 1);
    if (n > 0 && max > 1) {
        ssize_t more = rd_kafka_consume_batch_queue(c->queue, 0, msgs + 1, max - 1);
        if (more > 0)
            n += more;
    }
    c->in_poll = 0;
    if (n <= 0)
        return 0;
    /* A rebalance served in this call may have assigned partitions whose
     * records in the batch were fetched before it: librdkafka drops a
     * revoked partition's queued records only when its version barrier is
     * reached, which can be after the batch ended. Such a record can be
     * ahead of where the new assignment starts; taking it would make the
     * owner skip the offsets before it. Drop every record of a fresh
     * partition and start it again from its committed offset. */
    rd_kafka_topic_partition_list_t *restart = NULL;
    size_t out = 0;
    for (ssize_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = msgs[i];
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                EM_WARN("kafka consume error", EM_F_STR("error", rd_kafka_err2name(m->err)),
                        EM_F_STR("reason", rd_kafka_message_errstr(m)));
            rd_kafka_message_destroy(m);
            continue;
        }
        if (c->nfresh && fresh_has(c, m->partition)) {
            if (!restart)
                restart = rd_kafka_topic_partition_list_new(c->nfresh);
            if (!rd_kafka_topic_partition_list_find(restart, c->topic, m->partition))
                rd_kafka_topic_partition_list_add(restart, c->topic, m->partition);
            rd_kafka_message_destroy(m);
            continue;
        }
        msgs[out++] = m;
    }
    if (restart) {
        EM_DEBUG("records of partitions assigned during the poll dropped; restarting them at their committed offsets",
                 EM_F_INT("partitions", restart->cnt));
        seek_committed(c, restart);
        rd_kafka_topic_partition_list_destroy(restart);
    }
    return out;
}

em_err_t em_consumer_commit(em_consumer_t *c, const rd_kafka_topic_partition_list_t *offsets, int async) {
    rd_kafka_resp_err_t err = rd_kafka_commit(c->rk, offsets, async);
    if (err && !async)
        EM_WARN("offset commit failed", EM_F_STR("error", rd_kafka_err2name(err)), EM_F_INT("partitions", offsets->cnt));
    return em_kafka_err(err);
}

em_err_t em_consumer_set_paused(em_consumer_t *c, int paused) {
    paused = !!paused;
    if (c->want_paused == paused)
        return EM_OK;
    c->want_paused = paused;
    rd_kafka_topic_partition_list_t *a = NULL;
    rd_kafka_resp_err_t err = rd_kafka_assignment(c->rk, &a);
    if (err)
        return em_kafka_err(err);
    /* held partitions are paused either way: left alone, so a resume does
     * not resume them and a pause does not disturb them */
    apply_pause(c, a, 1);
    rd_kafka_topic_partition_list_destroy(a);
    return EM_OK;
}

em_err_t em_consumer_hold_partition(em_consumer_t *c, int32_t partition, int held) {
    held = !!held;
    int flags = part_flags(c, partition);
    if (held == !!(flags & EM_PART_HELD))
        return EM_OK; /* also a release of a partition not assigned */
    if (!(flags & EM_PART_ASSIGNED) || !c->topic)
        return EM_EINVAL;
    /* librdkafka's flag changes only when the consumer-wide pause does not
     * already set it; inside on_assign, the assign that follows sets it */
    if (!c->want_paused && !c->in_assign) {
        rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(one, c->topic, partition);
        rd_kafka_resp_err_t err = set_pause(c, one, held);
        rd_kafka_topic_partition_list_destroy(one);
        if (err)
            return em_kafka_err(err); /* librdkafka's flag unchanged: so is the hold */
    }
    c->part[partition] = (uint8_t)(held ? flags | EM_PART_HELD : flags & ~EM_PART_HELD);
    return EM_OK;
}

int em_consumer_partition_held(const em_consumer_t *c, int32_t partition) {
    return !!(part_flags(c, partition) & EM_PART_HELD);
}

int em_consumer_has_partition(em_consumer_t *c, int32_t partition) {
    rd_kafka_topic_partition_list_t *a = NULL;
    if (!c->topic || rd_kafka_assignment(c->rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a)
        return 0;
    int has = rd_kafka_topic_partition_list_find(a, c->topic, partition) != NULL;
    rd_kafka_topic_partition_list_destroy(a);
    return has;
}

static int is_cooperative(em_consumer_t *c) { return strcmp(rd_kafka_rebalance_protocol(c->rk), "COOPERATIVE") == 0; }

em_err_t em_consumer_restart_partition(em_consumer_t *c, int32_t partition, int64_t offset, char *what, size_t n) {
    rd_kafka_topic_partition_list_t *a = NULL;
    rd_kafka_resp_err_t err = rd_kafka_assignment(c->rk, &a);
    if (err || !c->topic) {
        snprintf(what, n, "cannot read the assignment: %s", rd_kafka_err2name(err));
        return em_kafka_err(err);
    }
    rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(one, c->topic, partition)->offset = offset;
    em_err_t rc = EM_OK;
    if (!rd_kafka_topic_partition_list_find(a, c->topic, partition)) {
        /* librdkafka dropped it: add it back, starting at offset */
        rd_kafka_error_t *e = NULL;
        if (is_cooperative(c)) {
            e = rd_kafka_incremental_assign(c->rk, one);
        } else {
            /* eager: assign() replaces the whole assignment; the others
             * restart from their committed offsets (records the owner
             * already holds come again and are ignored as seen) */
            rd_kafka_topic_partition_list_add(a, c->topic, partition)->offset = offset;
            err = rd_kafka_assign(c->rk, a);
            if (err)
                e = rd_kafka_error_new(err, "assign: %s", rd_kafka_err2str(err));
        }
        if (e) {
            snprintf(what, n, "re-assign failed: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            rc = EM_EIO;
            goto out;
        }
        /* eager: every partition was assigned again; set every flag, as on
         * a rebalance (librdkafka keeps them, but says nothing about it) */
        apply_pause(c, is_cooperative(c) ? one : a, 0);
        snprintf(what, n, "re-assigned (librdkafka had dropped it)");
        goto out;
    }
    /* assigned: clear a pause nobody asked for (a held partition stays
     * paused), then fetch from offset */
    apply_pause(c, one, 0);
    const char *how = should_pause(c, partition) ? "kept paused (consumer paused or partition held)" : "resumed";
    rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, one, 5000);
    if (e || one->elems[0].err) {
        snprintf(what, n, "%s; seek failed: %s", how,
                 e ? rd_kafka_error_string(e) : rd_kafka_err2name(one->elems[0].err));
        if (e)
            rd_kafka_error_destroy(e);
        rc = EM_EIO;
        goto out;
    }
    snprintf(what, n, "%s and sought", how);
out:
    rd_kafka_topic_partition_list_destroy(one);
    rd_kafka_topic_partition_list_destroy(a);
    return rc;
}

static rd_kafka_topic_partition_list_t *list_of(em_consumer_t *c, const int32_t *partitions, int n) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n > 0 ? n : 1);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, c->topic, partitions[i]);
    return l;
}

/* Asks Kafka one offset per partition: which = RD_KAFKA_OFFSET_STORED for
 * the group's committed offsets (OffsetFetch), RD_KAFKA_OFFSET_END or
 * RD_KAFKA_OFFSET_BEGINNING for the leaders' end or start offsets
 * (ListOffsets, one request per leader). -1 where unknown or none. */
static em_err_t ask_offsets(em_consumer_t *c, const int32_t *partitions, int n, int64_t which, int64_t *offsets,
                            int timeout_ms) {
    for (int i = 0; i < n; i++)
        offsets[i] = -1;
    if (!c->topic || n == 0)
        return n == 0 ? EM_OK : EM_EINVAL;
    rd_kafka_topic_partition_list_t *l = list_of(c, partitions, n);
    rd_kafka_resp_err_t err;
    if (which == RD_KAFKA_OFFSET_STORED) {
        err = rd_kafka_committed(c->rk, l, timeout_ms);
    } else {
        for (int i = 0; i < l->cnt; i++)
            l->elems[i].offset = which;
        err = rd_kafka_offsets_for_times(c->rk, l, timeout_ms);
    }
    if (!err)
        for (int i = 0; i < l->cnt && i < n; i++)
            offsets[i] = l->elems[i].err || l->elems[i].offset < 0 ? -1 : l->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(l);
    return em_kafka_err(err);
}

em_err_t em_consumer_committed(em_consumer_t *c, const int32_t *partitions, int n, int64_t *offsets,
                               int timeout_ms) {
    return ask_offsets(c, partitions, n, RD_KAFKA_OFFSET_STORED, offsets, timeout_ms);
}

em_err_t em_consumer_end_offsets(em_consumer_t *c, const int32_t *partitions, int n, int64_t *offsets,
                                 int timeout_ms) {
    return ask_offsets(c, partitions, n, RD_KAFKA_OFFSET_END, offsets, timeout_ms);
}

em_err_t em_consumer_start_offsets(em_consumer_t *c, const int32_t *partitions, int n, int64_t *offsets,
                                   int timeout_ms) {
    return ask_offsets(c, partitions, n, RD_KAFKA_OFFSET_BEGINNING, offsets, timeout_ms);
}

em_err_t em_consumer_debug_stall(em_consumer_t *c, int32_t partition, em_consumer_stall_t kind) {
    if (!c->topic)
        return EM_EINVAL;
    rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(one, c->topic, partition);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (kind == EM_CONSUMER_STALL_PAUSE) {
        err = rd_kafka_pause_partitions(c->rk, one); /* behind the owner's back: want_paused unchanged */
    } else if (is_cooperative(c)) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(c->rk, one);
        if (e) {
            err = rd_kafka_error_code(e);
            rd_kafka_error_destroy(e);
        }
    } else {
        rd_kafka_topic_partition_list_t *a = NULL;
        err = rd_kafka_assignment(c->rk, &a);
        if (!err) {
            rd_kafka_topic_partition_list_del(a, c->topic, partition);
            err = rd_kafka_assign(c->rk, a);
            rd_kafka_topic_partition_list_destroy(a);
        }
    }
    rd_kafka_topic_partition_list_destroy(one);
    return em_kafka_err(err);
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
    free(c->topic);
    free(c->fresh);
    free(c->part);
    free(c);
}

rd_kafka_t *em_consumer_handle(em_consumer_t *c) { return c->rk; }
