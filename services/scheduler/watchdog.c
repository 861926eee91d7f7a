/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every owned partition makes progress, or the scheduler says so and heals
 * it. A partition is stalled when it is assigned (not being revoked), the
 * intake is neither paused (operator, flow control) nor held (pending
 * full), the leader holds records beyond the partition's position, and for
 * watchdog.stall_ms the scheduler has taken none of them and holds none of
 * its executions. A stalled partition is logged as an error naming it,
 * counted, and restarted on the consumer thread: put back into librdkafka's
 * assignment if librdkafka dropped it, its pause flag cleared, its fetch
 * moved to the position (em_consumer_restart_partition); again every
 * stall_ms while it stays stalled.
 *
 * The watchdog thread asks Kafka every watchdog.interval_ms for the end
 * offset and the group's committed offset of each owned partition (blocking
 * calls, never on the consumer thread) and judges the partitions; the
 * consumer thread performs the restarts (librdkafka's pause, seek and
 * assign are kept on the thread that consumes). The per-partition figures
 * (lag, position, oldest waiting execution) are rendered at each scrape by
 * a metrics collector.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_log.h"
#include "em_util.h"
#include "scheduler.h"

#define SC_WATCHDOG_ASK_MS 2000 /* bound of each ask to Kafka */

/* The next offset the scheduler reads from p: one past its last record,
 * else the group's committed offset, else the oldest stored; -1 unknown. */
static int64_t position_locked(const sc_part_t *p) {
    if (p->next_offset >= 0)
        return p->next_offset;
    if (p->committed_offset >= 0)
        return p->committed_offset;
    return p->start_offset;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Judges every owned partition after an ask (lock held). */
static void judge_locked(scheduler_t *s) {
    int64_t now = em_mono_ms();
    int excluded = s->paused || s->held_since || s->admin_paused;
    for (int i = 0; i < s->nparts; i++) {
        sc_part_t *p = s->parts[i];
        if (!p || !p->owned || p->revoking)
            continue;
        int64_t pos = position_locked(p);
        int unread = p->end_offset >= 0 && pos >= 0 && p->end_offset > pos;
        if (p->inflight > 0)
            p->progress_ms = now;
        if (unread && p->inflight == 0) {
            if (!p->unread_since_ms)
                p->unread_since_ms = em_now_unix_ms();
        } else {
            p->unread_since_ms = 0;
        }
        int64_t quiet_ms = now - max64(p->progress_ms, s->excluded_ms);
        if (p->stalled_since_ms) {
            /* flowing again: a record taken (or work held) since it stalled,
             * nothing left to read, or the intake stopped on purpose */
            const char *why = p->progress_ms > p->stalled_since_ms ? "records taken again"
                              : !unread                           ? "nothing left to read"
                              : excluded                          ? "intake paused or held"
                                                                  : NULL;
            if (why) {
                int64_t healed_ms = (p->progress_ms > p->stalled_since_ms ? p->progress_ms : now) - p->stalled_since_ms;
                EM_INFO("stalled partition flowing again", EM_F_INT("partition", p->id), EM_F_STR("reason", why),
                        EM_F_INT("stalled_for_ms", healed_ms), EM_F_INT("restarts", p->heals));
                p->stalled_since_ms = 0;
                p->heals = 0;
                s->nstalled--;
                em_metric_set(s->m_stalled, s->nstalled);
            }
        }
        if (excluded || !unread || p->inflight > 0 || quiet_ms < s->stall_ms)
            continue;
        if (!p->stalled_since_ms) {
            p->stalled_since_ms = now;
            s->nstalled++;
            em_metric_set(s->m_stalled, s->nstalled);
            em_metric_add(s->m_stalls, 1);
            EM_ERROR("partition stalled: records wait in Kafka and none arrive", EM_F_INT("partition", p->id),
                     EM_F_INT("position", pos), EM_F_INT("end_offset", p->end_offset),
                     EM_F_INT("committed_offset", p->committed_offset), EM_F_INT("quiet_ms", quiet_ms));
        }
        if (!p->heal_wanted && now - p->last_heal_ms >= s->stall_ms)
            p->heal_wanted = 1;
    }
}

/* The watchdog thread's arrays, one slot per partition id. */
typedef struct ask {
    int cap;
    int32_t *ids, *noc;
    int64_t *ends, *comms, *starts;
} ask_t;

static int ask_fit(ask_t *a, int n) {
    if (n <= a->cap)
        return 0;
    int32_t *ids = calloc((size_t)n, sizeof(*ids)), *noc = calloc((size_t)n, sizeof(*noc));
    int64_t *ends = calloc((size_t)n, sizeof(*ends)), *comms = calloc((size_t)n, sizeof(*comms));
    int64_t *starts = calloc((size_t)n, sizeof(*starts));
    if (!ids || !noc || !ends || !comms || !starts) {
        free(ids);
        free(noc);
        free(ends);
        free(comms);
        free(starts);
        return -1;
    }
    free(a->ids);
    free(a->noc);
    free(a->ends);
    free(a->comms);
    free(a->starts);
    *a = (ask_t){n, ids, noc, ends, comms, starts};
    return 0;
}

static void *watchdog_main(void *arg) {
    scheduler_t *s = arg;
    ask_t a = {0};
    pthread_mutex_lock(&s->lock);
    while (!atomic_load(&s->stopping)) {
        em_cond_wait_ms(&s->watchdog_cond, &s->lock, s->watchdog_interval_ms);
        if (atomic_load(&s->stopping))
            break;
        if (ask_fit(&a, s->nparts) != 0) {
            EM_ERROR("out of memory in the stall watchdog");
            continue;
        }
        int32_t *ids = a.ids, *noc = a.noc;
        int64_t *ends = a.ends, *comms = a.comms, *starts = a.starts;
        int n = 0;
        for (int i = 0; i < s->nparts; i++)
            if (s->parts[i] && s->parts[i]->owned && !s->parts[i]->revoking)
                ids[n++] = s->parts[i]->id;
        pthread_mutex_unlock(&s->lock);

        em_err_t e_end = em_consumer_end_offsets(s->consumer, ids, n, ends, SC_WATCHDOG_ASK_MS);
        em_err_t e_com = em_consumer_committed(s->consumer, ids, n, comms, SC_WATCHDOG_ASK_MS);
        /* no commit yet: the position is the oldest stored offset */
        int m = 0;
        for (int i = 0; e_com == EM_OK && i < n; i++)
            if (comms[i] < 0)
                noc[m++] = ids[i];
        em_err_t e_start = m ? em_consumer_start_offsets(s->consumer, noc, m, starts, SC_WATCHDOG_ASK_MS) : EM_OK;

        pthread_mutex_lock(&s->lock);
        if (e_end != EM_OK || e_com != EM_OK || e_start != EM_OK) {
            EM_DEBUG("stall watchdog: Kafka did not answer; judging nothing this round",
                     EM_F_STR("end_offsets", em_strerror(e_end)), EM_F_STR("committed", em_strerror(e_com)));
            continue;
        }
        for (int i = 0, k = 0; i < n; i++) {
            sc_part_t *p = sc_part_get(s, ids[i]);
            int64_t start = -1;
            if (comms[i] < 0 && k < m && noc[k] == ids[i])
                start = starts[k++];
            if (!p || !p->owned)
                continue;
            p->end_offset = ends[i];
            if (comms[i] >= 0)
                p->committed_offset = comms[i];
            if (start >= 0)
                p->start_offset = start;
        }
        judge_locked(s);
    }
    pthread_mutex_unlock(&s->lock);
    free(a.ids);
    free(a.noc);
    free(a.ends);
    free(a.comms);
    free(a.starts);
    return NULL;
}

em_err_t sc_watchdog_start(scheduler_t *s) {
    if (pthread_create(&s->watchdog_thread, NULL, watchdog_main, s) != 0)
        return EM_EIO;
    return EM_OK;
}

/* Call after setting s->stopping. */
void sc_watchdog_stop(scheduler_t *s) {
    pthread_mutex_lock(&s->lock);
    pthread_cond_broadcast(&s->watchdog_cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->watchdog_thread, NULL);
}

#define SC_MAX_HEALS_PER_TURN 64

void sc_watchdog_heal(scheduler_t *s) {
    struct {
        int32_t id;
        int64_t offset;
        int attempt;
    } heal[SC_MAX_HEALS_PER_TURN];
    int n = 0;
    sc_debug_req_t dbg;
    pthread_mutex_lock(&s->lock);
    dbg = s->debug;
    s->debug.pending = 0;
    if (s->nstalled) {
        int64_t now = em_mono_ms();
        for (int i = 0; i < s->nparts && n < SC_MAX_HEALS_PER_TURN; i++) {
            sc_part_t *p = s->parts[i];
            if (!p || !p->heal_wanted)
                continue;
            p->heal_wanted = 0;
            if (!p->owned || p->revoking || !p->stalled_since_ms)
                continue;
            int64_t pos = position_locked(p);
            p->heals++;
            p->last_heal_ms = now;
            heal[n].id = p->id;
            heal[n].offset = pos >= 0 ? pos : RD_KAFKA_OFFSET_BEGINNING;
            heal[n].attempt = p->heals;
            n++;
        }
    }
    pthread_mutex_unlock(&s->lock);

    if (dbg.pending) {
        em_err_t rc = em_consumer_debug_stall(s->consumer, dbg.partition, dbg.kind);
        EM_WARN("debug hook: partition put out of step with the scheduler on purpose",
                EM_F_INT("partition", dbg.partition),
                EM_F_STR("kind", dbg.kind == EM_CONSUMER_STALL_PAUSE ? "pause" : "unassign"),
                EM_F_STR("result", em_strerror(rc)));
    }
    for (int i = 0; i < n; i++) {
        char what[256];
        em_err_t rc = em_consumer_restart_partition(s->consumer, heal[i].id, heal[i].offset, what, sizeof(what));
        em_metric_add(s->m_heals, 1);
        if (rc == EM_OK)
            EM_WARN("stalled partition restarted", EM_F_INT("partition", heal[i].id),
                    EM_F_INT("offset", heal[i].offset), EM_F_INT("attempt", heal[i].attempt), EM_F_STR("how", what));
        else
            EM_ERROR("cannot restart a stalled partition; trying again", EM_F_INT("partition", heal[i].id),
                     EM_F_INT("offset", heal[i].offset), EM_F_INT("attempt", heal[i].attempt),
                     EM_F_STR("error", what));
    }
}

/* ---- metrics ------------------------------------------------------------ */

static const struct {
    const char *name, *help;
} families[] = {
    {"execmesh_scheduler_partition_lag",
     "Records of an owned partition not yet committed: the leader's end offset minus the group's committed offset."},
    {"execmesh_scheduler_partition_oldest_waiting_seconds",
     "Age of the oldest execution of an owned partition still waiting for its result: its Kafka timestamp when the "
     "scheduler holds it, else how long records have waited unread in Kafka; 0 when nothing waits."},
    {"execmesh_scheduler_partition_position", "The next offset the scheduler reads from an owned partition."},
    {"execmesh_scheduler_partition_committed_offset", "The group's committed offset of an owned partition (-1: none)."},
    {"execmesh_scheduler_partition_end_offset", "The leader's end offset of an owned partition (-1: not known yet)."},
};

static void collect(void *ctx, em_metrics_out_t *out) {
    scheduler_t *s = ctx;
    int64_t now_unix = em_now_unix_ms();
    pthread_mutex_lock(&s->lock);
    for (size_t f = 0; f < EM_ARRAY_LEN(families); f++) {
        em_metrics_out_family(out, families[f].name, "gauge", families[f].help);
        for (int i = 0; i < s->nparts; i++) {
            sc_part_t *p = s->parts[i];
            if (!p || !p->owned)
                continue;
            char labels[32];
            snprintf(labels, sizeof(labels), "partition=\"%d\"", p->id);
            double v = 0;
            switch (f) {
            case 0: {
                int64_t base = p->committed_offset >= 0 ? p->committed_offset : p->start_offset >= 0 ? p->start_offset : 0;
                v = p->end_offset >= 0 && p->end_offset > base ? (double)(p->end_offset - base) : 0;
                break;
            }
            case 1: {
                int64_t stamp = em_watermark_oldest_stamp(p->wm);
                if (stamp < 0 && p->unread_since_ms)
                    stamp = p->unread_since_ms;
                v = stamp > 0 && now_unix > stamp ? (double)(now_unix - stamp) / 1000.0 : 0;
                break;
            }
            case 2:
                v = (double)position_locked(p);
                break;
            case 3:
                v = (double)p->committed_offset;
                break;
            default:
                v = (double)p->end_offset;
                break;
            }
            em_metrics_out_sample(out, families[f].name, labels, v);
        }
    }
    em_metrics_out_family(out, "execmesh_scheduler_seconds_since_rebalance", "gauge",
                          "Seconds since this scheduler's last partition assignment or revocation (since start "
                          "before the first).");
    int64_t since = s->last_rebalance_ms ? s->last_rebalance_ms : s->started_ms;
    em_metrics_out_sample(out, "execmesh_scheduler_seconds_since_rebalance", NULL,
                          (double)(em_mono_ms() - since) / 1000.0);
    pthread_mutex_unlock(&s->lock);
}

#ifdef EM_DEBUG_HOOKS
/* POST /debug/stall/pause/N or /debug/stall/unassign/N on the metrics port
 * (test builds only): the consumer thread puts partition N out of step
 * with the scheduler, as a librdkafka defect would. */
static int debug_stall(void *ctx, const char *rest, char *out, size_t n) {
    scheduler_t *s = ctx;
    em_consumer_stall_t kind;
    const char *num;
    if (strncmp(rest, "pause/", 6) == 0) {
        kind = EM_CONSUMER_STALL_PAUSE;
        num = rest + 6;
    } else if (strncmp(rest, "unassign/", 9) == 0) {
        kind = EM_CONSUMER_STALL_UNASSIGN;
        num = rest + 9;
    } else {
        snprintf(out, n, "unknown stall '%s': use /debug/stall/pause/N or /debug/stall/unassign/N\n", rest);
        return 404;
    }
    char *end;
    long part = strtol(num, &end, 10);
    if (!*num || *end || part < 0 || part > INT32_MAX) {
        snprintf(out, n, "bad partition '%s'\n", num);
        return 400;
    }
    pthread_mutex_lock(&s->lock);
    int owned = sc_part_get(s, (int32_t)part) != NULL;
    if (owned) {
        s->debug.partition = (int32_t)part;
        s->debug.kind = kind;
        s->debug.pending = 1;
    }
    pthread_mutex_unlock(&s->lock);
    if (!owned) {
        snprintf(out, n, "partition %ld is not owned by this scheduler\n", part);
        return 409;
    }
    snprintf(out, n, "requested\n");
    return 200;
}
#endif

void sc_watchdog_register(scheduler_t *s) {
    em_metrics_t *m = s->svc.metrics;
    s->m_rebalances = em_metrics_counter(m, "execmesh_scheduler_rebalances_total", NULL,
                                         "Partition assignments and revocations this scheduler went through.");
    s->m_stalled = em_metrics_gauge(m, "execmesh_scheduler_stalled_partitions", NULL,
                                    "Owned partitions found stalled (records wait, none arrive) and not flowing again.");
    s->m_stalls = em_metrics_counter(m, "execmesh_scheduler_stalls_total", NULL,
                                     "Times an owned partition was found stalled.");
    s->m_heals = em_metrics_counter(m, "execmesh_scheduler_stall_restarts_total", NULL,
                                    "Restarts of stalled partitions (re-assign, resume, seek).");
    em_metrics_collector(m, collect, s);
#ifdef EM_DEBUG_HOOKS
    em_metrics_route(m, "POST", "/debug/stall/", debug_stall, s);
#endif
}

void sc_watchdog_unregister(scheduler_t *s) { em_metrics_collector_remove(s->svc.metrics, collect, s); }
