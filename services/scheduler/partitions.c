/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The partitions this scheduler owns: assign, revoke (stop dispatching,
 * wait a bounded time for in-flight work, commit the final watermark), the
 * periodic commit of each partition's watermark and the answers to it.
 * The Kafka callbacks (sc_on_*) run on the consumer thread and take the
 * lock; functions named *_locked run with it held.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_log.h"
#include "em_util.h"
#include "scheduler.h"

sc_part_t *sc_part_get(scheduler_t *s, int32_t id) { return id >= 0 && id < s->nparts ? s->parts[id] : NULL; }

void sc_part_free(sc_part_t *p) {
    em_watermark_destroy(p->wm);
    free(p);
}

/* ---- commits ------------------------------------------------------------ */

/* One asynchronous commit in flight at a time: librdkafka starts newly
 * assigned partitions only when no commit is outstanding (it may have to
 * read that commit back as their start), so commits sent back to back
 * faster than they are answered keep new partitions from ever fetching. */
void sc_commit_tick_locked(scheduler_t *s, rd_kafka_topic_partition_list_t **out) {
    *out = NULL;
    int64_t now = em_mono_ms();
    if (s->commit_outstanding) {
        if (now - s->commit_sent_ms < s->session_timeout_ms)
            return;
        EM_WARN("an offset commit went unanswered for a session timeout; committing again",
                EM_F_INT("waited_ms", now - s->commit_sent_ms));
    }
    rd_kafka_topic_partition_list_t *list = NULL;
    for (int i = 0; i < s->nparts; i++) {
        sc_part_t *p = s->parts[i];
        if (!p || !p->owned)
            continue;
        int64_t c = em_watermark_committable(p->wm);
        /* while dispatch is held, commit again even unchanged offsets: the
         * answer says whether the partitions are still ours */
        if (c < 0 || (c == p->last_commit_sent && !s->commit_stalled_since))
            continue;
        if (!list)
            list = rd_kafka_topic_partition_list_new(8);
        rd_kafka_topic_partition_list_add(list, s->topic_requests, p->id)->offset = c;
        p->last_commit_sent = c;
    }
    if (list) {
        s->commit_outstanding = 1;
        s->commit_sent_ms = now;
    }
    *out = list;
}

void sc_on_commit(void *ctx, rd_kafka_resp_err_t err, const rd_kafka_topic_partition_list_t *offsets) {
    scheduler_t *s = ctx;
    pthread_mutex_lock(&s->lock);
    s->commit_outstanding = 0;
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &offsets->elems[i];
        rd_kafka_resp_err_t perr = e->err ? e->err : err;
        sc_part_t *p = sc_part_get(s, e->partition);
        if (!perr) {
            em_metric_add(s->m_commits, 1);
            sc_commit_stall_clear_locked(s, "a commit was accepted");
            if (p && p->owned) {
                if (e->offset > p->committed_offset)
                    p->committed_offset = e->offset;
                if (!p->committed_once) {
                    /* the moment a new owner took over the partition */
                    p->committed_once = 1;
                    EM_INFO("partition first commit", EM_F_INT("partition", e->partition),
                            EM_F_INT("offset", e->offset));
                }
            }
            continue;
        }
        em_metric_add(s->m_commit_failed, 1);
        if ((perr == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS || perr == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION) &&
            !s->commit_stalled_since) {
            s->commit_stalled_since = em_mono_ms();
            EM_INFO("commits refused during a rebalance; holding new dispatches",
                    EM_F_STR("error", rd_kafka_err2name(perr)));
        }
        if (p && p->last_commit_sent == e->offset)
            p->last_commit_sent = -1; /* send it again next tick */
        if (em_kafka_err_retriable(perr) || perr == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS)
            EM_DEBUG("offset commit failed, will retry", EM_F_STR("error", rd_kafka_err2name(perr)),
                     EM_F_INT("partition", e->partition), EM_F_INT("offset", e->offset));
        else
            EM_WARN("offset commit failed", EM_F_STR("error", rd_kafka_err2name(perr)),
                    EM_F_INT("partition", e->partition), EM_F_INT("offset", e->offset));
    }
    pthread_mutex_unlock(&s->lock);
}

/* ---- rebalance ---------------------------------------------------------- */

static int ensure_parts_locked(scheduler_t *s, int32_t id) {
    if (id < s->nparts)
        return 0;
    int n = s->nparts ? s->nparts : 16;
    while (n <= id)
        n *= 2;
    sc_part_t **np = realloc(s->parts, (size_t)n * sizeof(*np));
    if (!np)
        return -1;
    memset(np + s->nparts, 0, (size_t)(n - s->nparts) * sizeof(*np));
    s->parts = np;
    s->nparts = n;
    return 0;
}

static int count_owned_locked(scheduler_t *s) {
    int n = 0;
    for (int i = 0; i < s->nparts; i++)
        n += s->parts[i] != NULL;
    return n;
}

static void rebalanced_locked(scheduler_t *s) {
    s->rebalances++;
    s->last_rebalance_ms = em_mono_ms();
    em_metric_add(s->m_rebalances, 1);
}

void sc_on_assign(void *ctx, const rd_kafka_topic_partition_list_t *parts) {
    scheduler_t *s = ctx;
    int32_t maxid = -1;
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition > maxid)
            maxid = parts->elems[i].partition;
    /* the shares' denominator: asked once, and again when partitions were added */
    if (s->topic_partitions <= maxid && !atomic_load(&s->stopping))
        sc_resources_learn_partitions(s);
    pthread_mutex_lock(&s->lock);
    rebalanced_locked(s);
    sc_commit_stall_clear_locked(s, "partitions assigned");
    int64_t now = em_mono_ms();
    for (int i = 0; i < parts->cnt; i++) {
        int32_t id = parts->elems[i].partition;
        if (ensure_parts_locked(s, id) != 0) {
            EM_ERROR("out of memory on assign");
            continue;
        }
        if (s->parts[id])
            continue; /* already ours */
        sc_part_t *p = calloc(1, sizeof(*p));
        if (!p || !(p->wm = em_watermark_new())) {
            free(p);
            EM_ERROR("out of memory on assign");
            continue;
        }
        p->id = id;
        p->owned = 1;
        p->last_commit_sent = -1;
        p->next_offset = -1;
        p->end_offset = -1;
        p->committed_offset = -1;
        p->start_offset = -1;
        p->progress_ms = now;
        s->parts[id] = p;
    }
    int owned = count_owned_locked(s);
    em_metric_set(s->m_assigned, owned);
    sc_resources_reshare_locked(s);
    sc_dispatch_locked(s); /* a larger share may admit what waits */
    pthread_mutex_unlock(&s->lock);
    EM_INFO("assignment now", EM_F_INT("partitions", owned));
}

void sc_on_revoke(void *ctx, const rd_kafka_topic_partition_list_t *parts, int lost) {
    scheduler_t *s = ctx;
    rd_kafka_topic_partition_list_t *commit = NULL;
    int64_t start = em_mono_ms();
    int64_t deadline = start + s->revoke_timeout_ms;
    if (atomic_load(&s->stopping) && s->drain_deadline_ms > deadline)
        deadline = s->drain_deadline_ms;

    pthread_mutex_lock(&s->lock);
    rebalanced_locked(s);
    /* 1. stop dispatching from them: drop what waits in the queue */
    for (int i = 0; i < parts->cnt; i++) {
        sc_part_t *p = sc_part_get(s, parts->elems[i].partition);
        if (p)
            p->revoking = 1;
    }
    sc_pending_drop_revoking_locked(s);
    /* the resource shares without them: nothing more is admitted beyond
     * the smaller share */
    sc_resources_reshare_locked(s);
    /* 2. wait (bounded) for what is in flight, unless already lost, and
     * until the executions running fit the smaller shares: the next owner
     * may use the share the moment the partitions are its */
    int waiting = 0;
    for (;;) {
        waiting = 0;
        for (int i = 0; i < parts->cnt; i++) {
            sc_part_t *p = sc_part_get(s, parts->elems[i].partition);
            if (p)
                waiting += p->inflight;
        }
        if ((waiting == 0 && sc_resources_within_share_locked(s)) || lost || em_mono_ms() >= deadline)
            break;
        s->consumer_alive_ms = em_mono_ms(); /* waiting here is not a stall (nor dead: /livez) */
        int64_t left = deadline - em_mono_ms();
        em_cond_wait_ms(&s->cond, &s->lock, left < 1000 ? left : 1000);
    }
    /* 3. the final watermark, then give them up */
    for (int i = 0; i < parts->cnt; i++) {
        int32_t id = parts->elems[i].partition;
        sc_part_t *p = sc_part_get(s, id);
        if (!p)
            continue;
        int64_t c = em_watermark_committable(p->wm);
        if (!lost && c >= 0) {
            if (!commit)
                commit = rd_kafka_topic_partition_list_new(parts->cnt);
            rd_kafka_topic_partition_list_add(commit, s->topic_requests, id)->offset = c;
        }
        if (p->stalled_since_ms) {
            p->stalled_since_ms = 0;
            s->nstalled--;
            em_metric_set(s->m_stalled, s->nstalled);
        }
        s->parts[id] = NULL;
        p->owned = 0;
        if (p->inflight == 0)
            sc_part_free(p);
    }
    int owned = count_owned_locked(s);
    em_metric_set(s->m_assigned, owned);
    em_metric_set(s->m_pending, s->npending);
    pthread_mutex_unlock(&s->lock);

    EM_INFO("revoke finished", EM_F_INT("partitions", parts->cnt), EM_F_INT("abandoned_in_flight", waiting),
            EM_F_INT("waited_ms", em_mono_ms() - start), EM_F_BOOL("lost", lost));
    if (commit) {
        /* synchronous; its outcome is also counted by sc_on_commit */
        em_err_t rc = em_consumer_commit(s->consumer, commit, 0);
        if (rc != EM_OK)
            EM_WARN("final commit on revoke failed", EM_F_STR("error", em_strerror(rc)));
        rd_kafka_topic_partition_list_destroy(commit);
    }
}
