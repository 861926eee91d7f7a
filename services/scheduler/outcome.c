/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What follows an attempt that did not end its execution.
 *
 * A retry waits durably in Kafka, never in this process: the next attempt
 * is written to the delay topic (the execution's bytes as dispatched, with
 * attempt + 1 and the failed attempt appended to its history), due after
 * the backoff the executor chose from the handler's policy; the delay
 * runner (lib/em_delay) hands it back to the requests topic when due, and
 * it comes in again as a new record. The original record's offset is done
 * once the delay record is stored, so a crash or a rebalance in between
 * runs the attempt again (at least once), and nothing is lost.
 *
 * An executor death with executions in flight on it is recorded in each
 * one's history. Charged to no one at first (a batch-mate may be the
 * poison), each runs again in a call of its own; one that was in flight
 * at quarantine.executor_deaths - 1 deaths runs alone (ExecuteRequest.alone:
 * the executor runs nothing beside it, dispatch.c), and a death then is
 * its own: all its deaths are charged at once (executor_deaths, which
 * travels in the record, so a scheduler crash does not reset it), it
 * reaches quarantine.executor_deaths and ends EXHAUSTED with a result the
 * scheduler writes itself, never dispatched again. A poison execution
 * thus costs at most quarantine.executor_deaths executors. (The uncharged
 * deaths live in the scheduler's memory until charged: a scheduler crash
 * in between forgets them, and the count starts again.)
 *
 * Storing fails rarely (Kafka down): the record is kept with the item and
 * sent again after dispatch.retry_backoff_ms; the partition's watermark
 * waits for it. Every function named *_locked runs with s->lock held.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_cancels.h"
#include "em_delay.h"
#include "em_log.h"
#include "em_result_counts.h"
#include "em_trace.h"
#include "em_pbwire.h"
#include "em_util.h"
#include "execmesh/v1/execmesh.pb-c.h"
#include "scheduler.h"

static void store_locked(scheduler_t *s, sc_item_t *it);

static void store_retry(void *arg) {
    sc_item_t *it = arg;
    scheduler_t *s = it->s;
    pthread_mutex_lock(&s->lock);
    if (!it->part->owned || it->part->revoking)
        sc_item_done_locked(s, it, 0); /* the next owner runs the attempt again */
    else
        store_locked(s, it);
    pthread_mutex_unlock(&s->lock);
}

/* Producer poll thread. */
static void on_stored(em_delivery_t *d, const rd_kafka_message_t *msg) {
    sc_item_t *it = EM_CONTAINER_OF(d, sc_item_t, dr);
    scheduler_t *s = it->s;
    if (msg->err) {
        char idbuf[300];
        EM_WARN(it->out_kind == SC_OUT_DELAY ? "next attempt not stored in the delay topic, retrying"
                                             : "final result not stored, retrying",
                SC_F_EXEC(s, it, idbuf), EM_F_STR("error", rd_kafka_err2name(msg->err)),
                EM_F_INT("partition", it->part->id), EM_F_INT("offset", it->offset));
        if (em_timer_after(s->svc.timers, s->retry_backoff_ms, store_retry, it) == EM_OK)
            return;
        pthread_mutex_lock(&s->lock); /* exiting: the next owner runs it again */
        sc_item_done_locked(s, it, 0);
        pthread_mutex_unlock(&s->lock);
        return;
    }
    pthread_mutex_lock(&s->lock);
    em_metric_add(it->out_kind == SC_OUT_DELAY ? s->m_retries : s->m_out, 1);
    if (it->out_kind == SC_OUT_CANCELLED)
        em_metric_add(s->m_cancelled, 1);
    sc_item_done_locked(s, it, 1);
    pthread_mutex_unlock(&s->lock);
}

static void store_locked(scheduler_t *s, sc_item_t *it) {
    char buf[300];
    size_t idl;
    const uint8_t *id = sc_item_key(s, it, buf, sizeof(buf), &idl);
    em_err_t rc;
    it->dr.done = on_stored;
    if (it->out_kind == SC_OUT_DELAY)
        rc = em_delay_send(s->producer, s->t_delay, id, idl, it->out_rec, it->out_len, NULL, it->out_due_unix_ms,
                           s->topic_requests, &it->dr);
    else
        rc = em_producer_send(s->producer, s->t_results, id, idl, it->out_rec, it->out_len, NULL, 0, &it->dr);
    if (rc != EM_OK && em_timer_after(s->svc.timers, s->retry_backoff_ms, store_retry, it) != EM_OK)
        sc_item_done_locked(s, it, 0);
}

/* The execution as dispatched, with the next attempt's fields appended
 * (the last value of a field wins; a history entry adds to the list). */
static uint8_t *next_attempt_record(const sc_item_t *it, const em_attempt_t *a, int na, uint32_t deaths,
                                    size_t *len) {
    const uint8_t *body = GRPC_SLICE_START_PTR(it->body) + it->body_off;
    size_t n = it->body_len + em_pb_varint_field_size(7, it->attempt + 1);
    for (int i = 0; i < na; i++)
        n += em_attempt_field_size(10, &a[i]);
    if (deaths)
        n += em_pb_varint_field_size(11, deaths);
    uint8_t *rec = malloc(n), *o = rec;
    if (!rec)
        return NULL;
    memcpy(o, body, it->body_len);
    o += it->body_len;
    o = em_pb_write_varint_field(o, 7, it->attempt + 1);
    for (int i = 0; i < na; i++)
        o = em_attempt_field_write(o, 10, &a[i]);
    if (deaths)
        o = em_pb_write_varint_field(o, 11, deaths);
    *len = (size_t)(o - rec);
    return rec;
}

void sc_retry_later_locked(scheduler_t *s, sc_item_t *it, const em_result_info_t *r) {
    if (!it->part->owned || it->part->revoking) {
        sc_item_done_locked(s, it, 0); /* the next owner runs this attempt again */
        return;
    }
    em_attempt_t a = {.attempt = r->attempt,
                      .status = r->status,
                      .executor = (const char *)r->executor,
                      .executor_len = r->executor_len,
                      .error = (const char *)r->error,
                      .error_len = r->error_len,
                      .exit_code = r->exit_code,
                      .started_unix_ms = r->started_unix_ms,
                      .finished_unix_ms = r->finished_unix_ms};
    it->out_rec = next_attempt_record(it, &a, 1, it->deaths, &it->out_len);
    if (!it->out_rec) {
        EM_ERROR("out of memory writing a retry; the attempt runs again", EM_F_INT("partition", it->part->id));
        sc_item_done_locked(s, it, 0);
        return;
    }
    it->out_kind = SC_OUT_DELAY;
    it->out_due_unix_ms = em_now_unix_ms() + r->retry_delay_ms;
    char idbuf[300];
    EM_INFO("attempt failed; the next waits in the delay topic", SC_F_EXEC(s, it, idbuf),
            EM_F_STR("status", em_status_label(r->status)), EM_F_INT("retry_delay_ms", r->retry_delay_ms),
            EM_F_INT("partition", it->part->id));
    store_locked(s, it);
}

void sc_executor_died_locked(scheduler_t *s, sc_item_t *it, const char *executor, const char *why) {
    em_metric_add(s->m_deaths, 1);
    if (!it->part->owned || it->part->revoking) {
        sc_item_done_locked(s, it, 0);
        return;
    }
    /* the deaths it was running in before, not charged then (others ran
     * there too), are charged now that it killed an executor alone */
    uint32_t deaths = it->deaths + 1 + it->nsuspect;
    int64_t now = em_now_unix_ms();
    char suspect_why[SC_MAX_SUSPECTS][160];
    em_attempt_t a[SC_MAX_SUSPECTS + 1];
    int na = 0;
    for (uint32_t i = 0; i < it->nsuspect; i++) {
        snprintf(suspect_why[i], sizeof(suspect_why[i]),
                 "executor %s died while it ran there (charged once it killed an executor alone)",
                 it->suspect[i].executor[0] ? it->suspect[i].executor : "?");
        a[na++] = (em_attempt_t){.attempt = it->suspect[i].attempt,
                                 .status = EXECMESH__V1__STATUS__FAILED,
                                 .executor = it->suspect[i].executor,
                                 .executor_len = strlen(it->suspect[i].executor),
                                 .error = suspect_why[i],
                                 .error_len = strlen(suspect_why[i])};
    }
    it->nsuspect = 0;
    a[na++] = (em_attempt_t){.attempt = it->attempt,
                             .status = EXECMESH__V1__STATUS__FAILED,
                             .executor = executor,
                             .executor_len = executor ? strlen(executor) : 0,
                             .error = why,
                             .error_len = strlen(why),
                             .finished_unix_ms = now};
    if (deaths >= (uint32_t)s->quarantine_deaths) {
        char error[768];
        snprintf(error, sizeof(error),
                 "quarantined: %u executors died running it (quarantine.executor_deaths = %" PRId64 "); the last: %s",
                 deaths, s->quarantine_deaths, why);
        em_utf8_trim(error);
        it->out_rec = sc_own_result(GRPC_SLICE_START_PTR(it->body) + it->body_off, it->body_len, NULL,
                                    it->attempt, EXECMESH__V1__STATUS__EXHAUSTED, a, na, error, &it->out_len);
        it->out_kind = SC_OUT_RESULT;
        em_metric_add(s->m_quarantined, 1);
        char idbuf[300];
        EM_ERROR("execution quarantined: it ends EXHAUSTED", SC_F_EXEC(s, it, idbuf), EM_F_INT("deaths", deaths),
                 EM_F_STR("last", why), EM_F_INT("partition", it->part->id), EM_F_INT("offset", it->offset));
    } else {
        it->out_rec = next_attempt_record(it, a, na, deaths, &it->out_len);
        it->out_kind = SC_OUT_DELAY;
        it->out_due_unix_ms = now;
        char idbuf[300];
        EM_WARN("executor died running an execution alone", SC_F_EXEC(s, it, idbuf), EM_F_INT("deaths", deaths),
                EM_F_STR("why", why), EM_F_INT("partition", it->part->id), EM_F_INT("offset", it->offset));
    }
    if (!it->out_rec) {
        EM_ERROR("cannot write what follows an executor death; the attempt runs again",
                 EM_F_INT("partition", it->part->id));
        sc_item_done_locked(s, it, 0);
        return;
    }
    store_locked(s, it);
}

const uint8_t *sc_item_key(const scheduler_t *s, const sc_item_t *it, char *buf, size_t n, size_t *len) {
    if (!it->raw) {
        *len = it->id_len;
        return sc_item_id(it);
    }
    if (!it->need_id) {
        *len = it->id_len;
        return (const uint8_t *)it->raw->payload + it->id_rel;
    }
    int w = snprintf(buf, n, "%s/%" PRId32 "/%" PRId64, s->topic_requests, it->part->id, it->offset);
    *len = w > 0 && (size_t)w < n ? (size_t)w : 0;
    return (const uint8_t *)buf;
}

const char *sc_item_log_id(const scheduler_t *s, const sc_item_t *it, char *buf) {
    char key[300];
    size_t n;
    const uint8_t *id = sc_item_key(s, it, key, sizeof(key), &n);
    snprintf(buf, 300, "%.*s", (int)(n < 299 ? n : 299), (const char *)id);
    return buf;
}

const char *sc_item_trace_id(const scheduler_t *s, sc_item_t *it) {
    if (!it->trace_id[0]) { /* no traceparent: derived from its id, as every replica derives it */
        char key[300];
        size_t n;
        const uint8_t *id = sc_item_key(s, it, key, sizeof(key), &n);
        em_trace_id_of(NULL, 0, id, n, it->trace_id);
    }
    return it->trace_id;
}

int sc_cancelled_locked(scheduler_t *s, const sc_item_t *it) {
    if (!s->cancels || em_cancels_empty(s->cancels))
        return 0;
    char buf[300];
    size_t idl;
    const uint8_t *id = sc_item_key(s, it, buf, sizeof(buf), &idl);
    return idl && em_cancels_has(s->cancels, id, idl);
}

void sc_cancel_item_locked(scheduler_t *s, sc_item_t *it, const char *where) {
    char buf[300], error[200];
    size_t idl;
    const uint8_t *id = sc_item_key(s, it, buf, sizeof(buf), &idl);
    char idz[300];
    snprintf(idz, sizeof(idz), "%.*s", (int)idl, (const char *)id);
    snprintf(error, sizeof(error), "cancelled %s", where);
    const uint8_t *exec = it->raw ? it->raw->payload : GRPC_SLICE_START_PTR(it->body) + it->body_off;
    size_t exec_len = it->raw ? it->raw->len : it->body_len;
    it->out_rec = sc_own_result(exec, exec_len, idz, it->attempt, EXECMESH__V1__STATUS__CANCELLED, NULL, 0,
                                error, &it->out_len);
    if (!it->out_rec) {
        EM_ERROR("cannot write a cancelled execution's result; it stays for the next owner",
                 EM_F_INT("partition", it->part->id));
        sc_item_done_locked(s, it, 0);
        return;
    }
    it->out_kind = SC_OUT_CANCELLED;
    EM_INFO("execution cancelled", EM_F_STR("id", idz), EM_F_UINT("attempt", it->attempt),
            EM_F_STR("trace_id", sc_item_trace_id(s, it)), EM_F_STR("where", where));
    store_locked(s, it);
}
