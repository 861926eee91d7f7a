/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Records in: each record taken from Kafka is tracked in its partition's
 * watermark and either joins the pending queue or, when it is too large or
 * not an Execution, goes to the dead-letter topic (its offset is done once
 * that is stored; a record too large to dead-letter whole goes cut to fit,
 * so no dead letter is retried forever). And the two ways the intake
 * stops: the hold (pending is full: the consumer takes nothing,
 * librdkafka's prefetch fills and stops fetching) and the pause of every
 * assigned partition (an operator asked, or a hold lasted too long, or a
 * hold would keep a rebalance from being served). The pause itself is em_consumer's: it applies it to partitions
 * assigned later and clears it from partitions revoked, so librdkafka's
 * pause flags always match this file's one `paused`.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_execution.h"
#include "em_trace.h"
#include "em_log.h"
#include "em_util.h"
#include "scheduler.h"

/* ---- dead letters ------------------------------------------------------- */

/* A dead letter's key is kept whole up to this many bytes when its value
 * must be cut anyway. */
#define DEAD_KEY_KEEP 1024
/* Below this record size a refused dead letter is given up (never seen: a
 * broker that refuses a record this small refuses everything). */
#define DEAD_MIN_BYTES 1024

static void dead_send_locked(scheduler_t *s, sc_item_t *it);

static void dead_retry(void *arg) {
    sc_item_t *it = arg;
    scheduler_t *s = it->s;
    pthread_mutex_lock(&s->lock);
    if (!it->part->owned || it->part->revoking)
        sc_item_done_locked(s, it, 0);
    else
        dead_send_locked(s, it);
    pthread_mutex_unlock(&s->lock);
}

/* Kafka refused the dead letter as too large although it fit
 * kafka.max_message_bytes (the dead-letter topic's max.message.bytes is
 * smaller): the next try is cut to half as many bytes, so this ends. 0 when
 * there is nothing left to cut: the record is given up. */
static int dead_shrink_locked(scheduler_t *s, sc_item_t *it) {
    size_t was = it->dead_max ? it->dead_max : (size_t)s->kafka_max_message_bytes;
    if (!it->dead_max)
        EM_ERROR("the dead-letter topic refused a record as too large: its max.message.bytes is below "
                 "kafka.max_message_bytes; sending it cut to fit half as many bytes",
                 EM_F_INT("partition", it->part->id), EM_F_INT("offset", it->offset), EM_F_UINT("limit", was));
    it->dead_max = was / 2;
    if (it->dead_max >= DEAD_MIN_BYTES)
        return 1;
    EM_ERROR("dead letter refused as too large even cut to its headers; the record is given up and its offset "
             "moves on",
             EM_F_INT("partition", it->part->id), EM_F_INT("offset", it->offset), EM_F_UINT("bytes", it->raw->len));
    return 0;
}

/* Producer poll thread. */
static void on_dead_delivery(em_delivery_t *d, const rd_kafka_message_t *msg) {
    sc_item_t *it = EM_CONTAINER_OF(d, sc_item_t, dr);
    scheduler_t *s = it->s;
    if (msg->err) {
        EM_WARN("dead letter not stored, retrying", EM_F_STR("error", rd_kafka_err2name(msg->err)),
                EM_F_INT("partition", it->part->id), EM_F_INT("offset", it->offset));
        if (msg->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
            pthread_mutex_lock(&s->lock);
            int again = dead_shrink_locked(s, it);
            if (!again)
                sc_item_done_locked(s, it, 1); /* given up: logged; nothing would ever store it */
            pthread_mutex_unlock(&s->lock);
            if (!again)
                return;
        }
        if (em_timer_after(s->svc.timers, s->retry_backoff_ms, dead_retry, it) == EM_OK)
            return;
        /* shutting down: leave the offset uncommitted, the next owner retries */
        pthread_mutex_lock(&s->lock);
        sc_item_done_locked(s, it, 0);
        pthread_mutex_unlock(&s->lock);
        return;
    }
    em_metric_add(s->m_dead, 1);
    pthread_mutex_lock(&s->lock);
    sc_item_done_locked(s, it, 1);
    pthread_mutex_unlock(&s->lock);
}

/* Writes the record to the dead-letter topic with its reason (header
 * execmesh-error) and where it came from (execmesh-source): whole when it
 * fits kafka.max_message_bytes, else with its value cut to fit, the reason
 * saying so and the value's size before in header execmesh-original-bytes. */
static void dead_send_locked(scheduler_t *s, sc_item_t *it) {
    const rd_kafka_message_t *m = it->raw;
    const char *reason = it->dead_reason ? it->dead_reason : "unreadable";
    char source[300], why[768], orig[24];
    snprintf(source, sizeof(source), "%s/%" PRId32 "/%" PRId64, s->topic_requests, it->part->id, it->offset);
    for (;;) {
        size_t limit = it->dead_max ? it->dead_max : (size_t)s->kafka_max_message_bytes;
        /* each header: its name, its value and two length varints */
        size_t hdrs = strlen("execmesh-error") + strlen(reason) + strlen("execmesh-source") + strlen(source) + 20;
        size_t klen = m->key_len, vlen = m->len;
        int cut = EM_SIZE_RECORD_OVERHEAD + hdrs + klen + vlen > limit;
        if (cut) {
            /* the longer reason and the size header, at most this much more */
            hdrs += sizeof(why) + strlen(EM_HDR_ORIGINAL_BYTES) + sizeof(orig) + 20;
            if (klen > DEAD_KEY_KEEP)
                klen = DEAD_KEY_KEEP;
            size_t fixed = EM_SIZE_RECORD_OVERHEAD + hdrs + klen;
            vlen = limit > fixed ? limit - fixed : 0;
            if (vlen > m->len)
                vlen = m->len;
            snprintf(why, sizeof(why), "%s; truncated: value cut from %zu to %zu bytes%s to fit %s %zu", reason,
                     m->len, vlen, klen < m->key_len ? " and key to 1024" : "",
                     it->dead_max ? "the dead-letter topic's max.message.bytes, below" : "kafka.max_message_bytes",
                     it->dead_max ? (size_t)s->kafka_max_message_bytes : limit);
            em_utf8_trim(why);
            snprintf(orig, sizeof(orig), "%zu", m->len);
        }
        rd_kafka_headers_t *h = rd_kafka_headers_new(3);
        rd_kafka_header_add(h, "execmesh-error", -1, cut ? why : reason, -1);
        rd_kafka_header_add(h, "execmesh-source", -1, source, -1);
        if (cut)
            rd_kafka_header_add(h, EM_HDR_ORIGINAL_BYTES, -1, orig, -1);
        em_err_t rc = em_producer_send(s->producer, s->t_dead, m->key, klen, m->payload, vlen, h, 0, &it->dr);
        if (rc == EM_OK) {
            if (cut)
                em_metric_add(s->m_dead_truncated, 1);
            return;
        }
        rd_kafka_headers_destroy(h);
        if (rc != EM_ETOOBIG)
            break;
        if (!dead_shrink_locked(s, it)) { /* never seen: the sizes above leave room */
            sc_item_done_locked(s, it, 1);
            return;
        }
    }
    if (em_timer_after(s->svc.timers, s->retry_backoff_ms, dead_retry, it) != EM_OK)
        sc_item_done_locked(s, it, 0);
}

static void dead_letter_locked(scheduler_t *s, sc_item_t *it, const char *reason) {
    rd_kafka_message_t *msg = it->raw;
    it->dr.done = on_dead_delivery;
    free(it->dead_reason);
    it->dead_reason = strdup(reason); /* NULL (out of memory) still dead-letters, as "unreadable" */
    EM_WARN("input dead-lettered", EM_F_STR("reason", reason), EM_F_INT("partition", it->part->id),
            EM_F_INT("offset", it->offset), EM_F_UINT("bytes", msg->len));
    dead_send_locked(s, it);
}

/* ---- accepting records -------------------------------------------------- */

void sc_accept_locked(scheduler_t *s, rd_kafka_message_t *msg) {
    sc_part_t *p = sc_part_get(s, msg->partition);
    uint64_t seq;
    if (!p || !p->owned || p->revoking || p->rewound) { /* rewound: it comes again when the partition is released */
        rd_kafka_message_destroy(msg);
        return;
    }
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(msg, &tt);
    if (em_watermark_track_stamped(p->wm, msg->offset, ts > 0 ? ts : em_now_unix_ms(), &seq) != EM_OK) {
        EM_DEBUG("record delivered twice, ignored", EM_F_INT("partition", msg->partition),
                 EM_F_INT("offset", msg->offset));
        rd_kafka_message_destroy(msg);
        return;
    }
    p->next_offset = msg->offset + 1;
    p->progress_ms = s->consumer_alive_ms;
    sc_item_t *it = sc_item_new_locked(s);
    if (!it) {
        /* tracked but never done: the watermark stops here, so nothing past
         * it is committed and the record is read again after a restart */
        EM_ERROR("out of memory accepting a record", EM_F_INT("partition", msg->partition));
        rd_kafka_message_destroy(msg);
        return;
    }
    it->s = s;
    it->part = p;
    it->seq = seq;
    it->offset = msg->offset;
    it->attempt = 1;
    it->raw = msg;
    it->kafka_ms = ts > 0 ? ts : em_now_unix_ms();
    p->inflight++;
    em_metric_add(s->m_in_kafka, 1);

    char reason[256];
    em_exec_info_t info;
    char why[128];
    if ((int64_t)msg->len > s->input_max_bytes) {
        /* a retry (written by the mesh: it carries its attempt, 2 or more,
         * and its history) may have grown past input.max_bytes, up to
         * what still leaves room for its result (lib/em_sizes.h) */
        int retry = em_execution_inspect(msg->payload, msg->len, &info, why, sizeof(why)) == EM_OK &&
                    info.attempt >= 2;
        int64_t limit = retry ? s->kafka_max_message_bytes - EM_SIZE_RESULT_ROOM : s->input_max_bytes;
        if ((int64_t)msg->len > limit) {
            if (retry)
                snprintf(reason, sizeof(reason),
                         "too_large: %zu bytes, limit %" PRId64 " (a retry: kafka.max_message_bytes - %d)", msg->len,
                         limit, EM_SIZE_RESULT_ROOM);
            else
                snprintf(reason, sizeof(reason), "too_large: %zu bytes, limit %" PRId64 " (input.max_bytes)",
                         msg->len, limit);
            dead_letter_locked(s, it, reason);
            return;
        }
    }
    /* One pass over the bytes: checked and read, not decoded; they go to the
     * executor as they are, with the mesh's fields appended at dispatch. */
    if (em_execution_inspect(msg->payload, msg->len, &info, why, sizeof(why)) != EM_OK) {
        snprintf(reason, sizeof(reason), "undecodable: not an execmesh.v1.Execution: %s", why);
        dead_letter_locked(s, it, reason);
        return;
    }
    it->timeout_ms = info.timeout_ms;
    if (info.deadline_unix_ms) /* the caller's absolute deadline, monotonic from here on */
        it->deadline_ms = em_mono_ms() + (info.deadline_unix_ms - em_now_unix_ms());
    it->need_id = info.id_len == 0;
    if (info.id_len) {
        it->id_rel = (uint32_t)(info.id - (const uint8_t *)msg->payload);
        it->id_len = (uint32_t)info.id_len;
    }
    if (info.attempt) /* a retry, or a record whose executor died: it carries its attempt */
        it->attempt = info.attempt;
    if (info.traceparent) { /* without one, a log line derives it from the id (sc_item_trace_id) */
        memcpy(it->trace_id, info.traceparent + 3, 32);
        it->trace_id[32] = '\0';
    }
    it->deaths = info.executor_deaths;
    if (sc_cancelled_locked(s, it)) {
        sc_cancel_item_locked(s, it, it->attempt > 1 ? "while its next attempt waited" : "while it waited in Kafka");
        return;
    }
    it->isolate = it->deaths > 0; /* it killed an executor before: it runs alone, blaming no batch-mate */
    if (info.submitted_unix_ms == 0)
        it->submitted_unix_ms = ts > 0 ? ts : em_now_unix_ms();
    it->cls = (uint16_t)sc_class_of_locked(s, info.handler, info.handler_len);
    sc_resources_accept_locked(s, it);
}

/* ---- the hold and the pause --------------------------------------------- */

/* While dispatch.max_pending executions wait, the consumer takes nothing
 * and librdkafka's prefetch (kafka.queued_max_kbytes) fills and stops
 * fetching: the backlog waits in Kafka, not in memory. Pausing partitions
 * would do the same, but librdkafka drops a paused partition's prefetched
 * records and fetches them again on resume, which costs most of the
 * throughput when the mark is reached many times a second. */
size_t sc_intake_room_locked(scheduler_t *s) {
    size_t room = 0;
    int64_t now = em_mono_ms();
    if (s->paused) { /* paused partitions deliver nothing: the poll serves the group's events */
        s->held_since = 0;
        s->excluded_ms = now;
        room = (size_t)s->poll_batch;
    } else if (s->npending < s->max_pending) { /* re-dispatches may push pending past the mark */
        s->held_since = 0;
        int left = s->max_pending - s->npending;
        room = (size_t)(left < s->poll_batch ? left : s->poll_batch);
    } else {
        if (!s->held_since) {
            s->held_since = now;
            em_metric_add(s->m_holds, 1);
        }
        s->excluded_ms = now;
    }
    em_metric_set(s->m_paused, s->paused || s->held_since);
    return room;
}

/* Pauses the assigned partitions while an operator paused consumption, or
 * when the intake was held for flow.hold_pause_ms (the executors are not
 * keeping up for long: stop fetching for good, and keep the consumer
 * polling so the group sees it alive), or at once when the intake is held
 * while the group refuses commits: a rebalance is under way, and it is
 * served only by polling, which a hold does not do. Resumes at half the
 * mark. */
void sc_flow_control_locked(scheduler_t *s) {
    int64_t now = em_mono_ms();
    int want;
    if (s->admin_paused)
        want = 1;
    else if (s->paused)
        want = s->npending > s->max_pending / 2;
    else
        want = s->held_since && (now - s->held_since >= s->hold_pause_ms || s->commit_stalled_since);
    if (want == s->paused)
        return;
    em_err_t rc = em_consumer_set_paused(s->consumer, want);
    if (rc != EM_OK) {
        EM_WARN(want ? "cannot pause consumption" : "cannot resume consumption", EM_F_STR("error", em_strerror(rc)));
        return; /* tried again next turn */
    }
    if (want && !s->admin_paused) {
        em_metric_add(s->m_flow_pauses, 1);
        EM_INFO("intake held; partitions paused", EM_F_INT("pending", s->npending),
                EM_F_INT("held_ms", now - s->held_since),
                EM_F_STR("reason", s->commit_stalled_since ? "a rebalance is under way" : "held too long"));
    } else {
        EM_DEBUG(want ? "consumption paused" : "consumption resumed", EM_F_INT("pending", s->npending));
    }
    s->paused = want;
    s->held_since = 0;
    s->excluded_ms = now;
    em_metric_set(s->m_paused, s->paused);
}
