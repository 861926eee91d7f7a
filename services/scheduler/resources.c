/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Mesh-wide resource limits. A handler names the resources it touches
 * (handlers.NAME.resources = ["db:orders"]); each resource has a
 * concurrency limit and a token-bucket rate (rate per per_ms, burst) that
 * hold across the whole mesh. Every scheduler reads the same resources.*
 * and handlers.* (one file @included by each scheduler's config), and the
 * executors need none of it: every execution reaches an executor through a
 * scheduler's dispatch, so the schedulers together are the admission.
 *
 * The share. No coordinator: a scheduler takes the part of each limit
 * proportional to the partitions of the requests topic it owns (owned / P),
 * recomputed on every assign and revoke, the way Temporal divides a task
 * queue's rate among its partitions:
 *   concurrency  floor(C * owned / P), at least 1 while it owns any
 *                partition (a share of 0 would leave its partitions'
 *                executions of that resource waiting forever);
 *   rate         rate * owned / P per period, bucket max(1, burst * owned / P).
 * Partitions are owned by one member at a time, so the shares add up to at
 * most the limits; the exceptions are the worst case of docs/architecture.md
 * ("Resources"): a scheduler whose share rounds below 1 (C < P / its
 * partitions) still runs 1, and executions that outlast their partition's
 * hand-over. A revoke hands the share over only once the running
 * executions fit the smaller share (the revoke waits for it, up to
 * revoke.timeout_ms); a new bucket starts empty, and a smaller share keeps
 * no more tokens than its new bucket holds.
 *
 * Running. An execution holds its resources' concurrency from its dispatch
 * until its executor says it ran to its end (the call asks for that with
 * ExecuteRequest.report_finished), or its result, a refusal or the call's
 * end comes first.
 *
 * Waiting. Executions of a handler wait in its own queue (pending.c): one
 * whose resource is at its limit waits without holding up the others. At
 * most max_waiting executions of a resource wait in its queues; the next
 * one read from Kafka is parked in its partition, and the partition is
 * held: librdkafka fetches nothing more of it. A poll may still hand over
 * more of that partition's records (fetched before the hold): records of
 * other handlers go to their queues, those of a full resource are parked
 * up to SC_PARK_MAX, and at the next one the partition is sought back to
 * it, the rest of the poll's records of it are dropped, and they wait in
 * Kafka. The consumer thread moves parked records to their queues as room
 * appears, one per held partition in turn, and releases a partition once
 * none of it is parked: it fetches again from where it was sought back.
 * Other partitions flow; an execution of another handler waits only
 * behind the records before it in its own partition.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_log.h"
#include "em_util.h"
#include "scheduler.h"

/* ---- configuration ------------------------------------------------------ */

typedef struct res_conf {
    char group[128]; /* resources.GROUP */
    const char *name;
} res_conf_t;

/* The groups named in keys "PREFIX.GROUP.rest" that the file or --set gave. */
static size_t groups_of(const em_config_t *cfg, const char *prefix, char (*out)[128], size_t max) {
    size_t n = 0, plen = strlen(prefix);
    const char *key;
    for (size_t i = 0; (key = em_config_instance_key(cfg, i)) != NULL; i++) {
        if (strncmp(key, prefix, plen) != 0)
            continue;
        const char *g = key + plen, *dot = strchr(g, '.');
        size_t gl = dot ? (size_t)(dot - g) : strlen(g);
        if (gl == 0 || gl >= sizeof(out[0]))
            continue;
        size_t k;
        for (k = 0; k < n; k++)
            if (strlen(out[k]) == gl && memcmp(out[k], g, gl) == 0)
                break;
        if (k == n && n < max) {
            memcpy(out[n], g, gl);
            out[n][gl] = 0;
            n++;
        }
    }
    return n;
}

static const char *res_name(const em_config_t *cfg, const char *group, char *key, size_t n) {
    snprintf(key, n, "resources.%.127s.name", group);
    const char *name = em_config_str(cfg, key);
    return name[0] ? name : group;
}

static int name_ok(const char *s) {
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || strchr("_.:/-", *s)))
            return 0;
    return 1;
}

static int refuse(const em_config_t *cfg, const char *key, const char *why) {
    fprintf(stderr, "execmesh-scheduler: config refused: %s: key '%s': %s\n", em_config_source(cfg, key), key, why);
    return -1;
}

#define MAX_RESOURCES 256
#define MAX_HANDLERS 1024

int sc_resources_check(const em_config_t *cfg) {
    static char groups[MAX_RESOURCES][128], handlers[MAX_HANDLERS][128];
    char key[300], why[512], known[400];
    size_t nr = groups_of(cfg, "resources.", groups, MAX_RESOURCES);
    size_t known_len = 0;
    known[0] = 0;
    for (size_t i = 0; i < nr; i++) {
        const char *name = res_name(cfg, groups[i], key, sizeof(key));
        if (!name_ok(name) || strlen(name) >= 64)
            return refuse(cfg, key, "a resource name is 1 to 63 letters, digits and _ . : / -");
        for (size_t j = 0; j < i; j++) {
            char k2[300];
            if (strcmp(res_name(cfg, groups[j], k2, sizeof(k2)), name) == 0) {
                snprintf(why, sizeof(why), "resource '%s' is named twice (resources.%.127s and resources.%.127s)", name,
                         groups[j], groups[i]);
                return refuse(cfg, key, why);
            }
        }
        int w = snprintf(known + known_len, sizeof(known) - known_len, "%s%s", i ? ", " : "", name);
        if (w > 0 && known_len + (size_t)w < sizeof(known))
            known_len += (size_t)w;
    }
    size_t nh = groups_of(cfg, "handlers.", handlers, MAX_HANDLERS);
    for (size_t i = 0; i < nh; i++) {
        snprintf(key, sizeof(key), "handlers.%s.resources", handlers[i]);
        size_t n = em_config_list_len(cfg, key);
        for (size_t k = 0; k < n; k++) {
            const char *want = em_config_list_get(cfg, key, k);
            size_t j;
            char k2[300];
            for (j = 0; j < nr; j++)
                if (strcmp(res_name(cfg, groups[j], k2, sizeof(k2)), want) == 0)
                    break;
            if (j == nr) {
                snprintf(why, sizeof(why), "handler %s names unknown resource '%s' (resources: %s)", handlers[i],
                         want, nr ? known : "none configured");
                return refuse(cfg, key, why);
            }
        }
    }
    return 0;
}

static em_metric_t *res_metric(scheduler_t *s, int counter, const char *name, const char *res, const char *help) {
    char labels[96];
    snprintf(labels, sizeof(labels), "resource=\"%s\"", res);
    return counter ? em_metrics_counter(s->svc.metrics, name, labels, help)
                   : em_metrics_gauge(s->svc.metrics, name, labels, help);
}

em_err_t sc_resources_init(scheduler_t *s, const em_config_t *cfg) {
    static char groups[MAX_RESOURCES][128], handlers[MAX_HANDLERS][128];
    char key[300];
    size_t nr = groups_of(cfg, "resources.", groups, MAX_RESOURCES);
    size_t nh = groups_of(cfg, "handlers.", handlers, MAX_HANDLERS);
    s->res = calloc(nr ? nr : 1, sizeof(*s->res));
    s->hres = calloc(nh ? nh : 1, sizeof(*s->hres));
    if (!s->res || !s->hres)
        return EM_ENOMEM;
    for (size_t i = 0; i < nr; i++) {
        sc_resource_t *r = &s->res[s->nres++];
        snprintf(r->name, sizeof(r->name), "%s", res_name(cfg, groups[i], key, sizeof(key)));
#define RES_INT(field, what)                                                                                        \
    snprintf(key, sizeof(key), "resources.%s." what, groups[i]);                                                     \
    r->field = em_config_int(cfg, key)
        RES_INT(concurrency, "concurrency");
        RES_INT(rate, "rate");
        RES_INT(per_ms, "per_ms");
        RES_INT(burst, "burst");
        RES_INT(max_waiting, "max_waiting");
#undef RES_INT
        r->share_conc = r->concurrency ? 0 : -1;
        r->share_rate_ms = r->rate ? 0 : -1;
        r->tokens_ms = em_mono_ms();
        r->m_admitted = res_metric(s, 1, "execmesh_resource_admitted_total", r->name,
                                   "Executions this scheduler dispatched that touch the resource.");
        r->m_throttled = res_metric(s, 1, "execmesh_resource_throttled_total", r->name,
                                    "Executions that had to wait for the resource's limits (counted once each).");
        r->m_running = res_metric(s, 0, "execmesh_resource_running", r->name,
                                  "Executions of the resource dispatched by this scheduler and not yet finished.");
        r->m_waiting = res_metric(s, 0, "execmesh_resource_waiting", r->name,
                                  "Executions of the resource waiting in this scheduler (queued or parked).");
        r->m_share_conc = res_metric(s, 0, "execmesh_resource_share_concurrency", r->name,
                                     "This scheduler's share of the resource's concurrency (-1: unlimited).");
        r->m_share_rate = res_metric(s, 0, "execmesh_resource_share_rate_per_minute", r->name,
                                     "This scheduler's share of the resource's rate, per minute (-1: unlimited).");
        em_metric_set(r->m_share_conc, r->share_conc);
        em_metric_set(r->m_share_rate, r->rate ? 0 : -1);
        EM_INFO("resource", EM_F_STR("name", r->name), EM_F_INT("concurrency", r->concurrency),
                EM_F_INT("rate", r->rate), EM_F_INT("per_ms", r->per_ms), EM_F_INT("burst", r->burst),
                EM_F_INT("max_waiting", r->max_waiting));
    }
    for (size_t i = 0; i < nh; i++) {
        struct sc_handler_res *h = &s->hres[s->nhres];
        snprintf(key, sizeof(key), "handlers.%s.resources", handlers[i]);
        size_t n = em_config_list_len(cfg, key);
        for (size_t k = 0; k < n && h->nres < SC_MAX_HANDLER_RESOURCES; k++)
            for (int j = 0; j < s->nres; j++)
                if (strcmp(s->res[j].name, em_config_list_get(cfg, key, k)) == 0)
                    h->res[h->nres++] = j;
        if (!h->nres)
            continue;
        if (!(h->handler = strdup(handlers[i])))
            return EM_ENOMEM;
        s->nhres++;
    }
    /* class 0: the handlers past SC_MAX_CLASSES, sharing one queue */
    if (em_grow(&s->classes, &s->cap_classes, 1, sizeof(*s->classes)) != 0 ||
        !(s->classes[0] = calloc(1, sizeof(sc_class_t))) || !(s->classes[0]->handler = strdup("*")))
        return EM_ENOMEM;
    s->classes[0]->len = 1;
    s->nclasses = 1;
    s->m_held = em_metrics_gauge(s->svc.metrics, "execmesh_scheduler_held_partitions", NULL,
                                 "Partitions held in Kafka because an execution read from them waits for a "
                                 "resource whose queue is full (resources.NAME.max_waiting).");
    s->m_rewinds = em_metrics_counter(s->svc.metrics, "execmesh_scheduler_partition_rewinds_total", NULL,
                                      "Held partitions sought back to their first record not kept in memory (the "
                                      "rest waits in Kafka, read again on release).");
    s->m_refused_handler = em_metrics_counter(s->svc.metrics, "execmesh_scheduler_refused_total",
                                              "reason=\"handler_busy\"",
                                              "Executions an executor refused (nothing ran; dispatched again): "
                                              "its handler at its concurrency, or the executor full.");
    s->m_refused_full = em_metrics_counter(s->svc.metrics, "execmesh_scheduler_refused_total", "reason=\"max_inflight\"",
                                           "Executions an executor refused (nothing ran; dispatched again): "
                                           "its handler at its concurrency, or the executor full.");
    return EM_OK;
}

void sc_resources_free(scheduler_t *s) {
    for (int i = 0; i < s->nhres; i++)
        free(s->hres[i].handler);
    free(s->hres);
    free(s->res);
    s->hres = NULL;
    s->res = NULL;
    s->nres = s->nhres = 0;
}

/* ---- shares ------------------------------------------------------------- */

void sc_resources_learn_partitions(scheduler_t *s) {
    if (!s->nres)
        return;
    rd_kafka_t *rk = em_consumer_handle(s->consumer);
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, s->topic_requests, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (!t)
        return;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, t, &md, 2000);
    if (!err && md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0) {
        pthread_mutex_lock(&s->lock);
        if (s->topic_partitions != md->topics[0].partition_cnt)
            EM_INFO("requests topic partitions (the resource shares' denominator)",
                    EM_F_INT("partitions", md->topics[0].partition_cnt));
        s->topic_partitions = md->topics[0].partition_cnt;
        pthread_mutex_unlock(&s->lock);
    } else {
        EM_WARN("cannot learn the requests topic's partitions; resource shares use the last known count",
                EM_F_STR("error", rd_kafka_err2name(err ? err : md && md->topic_cnt ? md->topics[0].err : err)));
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
}

/* Brings r's tokens up to now. */
static void refill(sc_resource_t *r, int64_t now) {
    if (r->share_rate_ms < 0)
        return;
    double cap = r->share_burst;
    r->tokens += (double)(now - r->tokens_ms) * r->share_rate_ms;
    if (r->tokens > cap)
        r->tokens = cap;
    r->tokens_ms = now;
}

void sc_resources_reshare_locked(scheduler_t *s) {
    int owned = 0, maxid = -1;
    for (int i = 0; i < s->nparts; i++) {
        sc_part_t *p = s->parts[i];
        if (p && p->owned && !p->revoking) {
            owned++;
            maxid = i;
        }
    }
    s->owned_parts = owned;
    if (!s->nres)
        return;
    int P = s->topic_partitions;
    if (P <= maxid)
        P = maxid + 1; /* never less than what we own: the share stays at most the whole */
    if (P <= 0)
        P = 1;
    int64_t now = em_mono_ms();
    for (int i = 0; i < s->nres; i++) {
        sc_resource_t *r = &s->res[i];
        if (r->concurrency) {
            int64_t c = r->concurrency * owned / P;
            r->share_conc = (int)(c == 0 && owned > 0 ? 1 : c);
            em_metric_set(r->m_share_conc, r->share_conc);
        }
        if (r->rate) {
            refill(r, now);
            double f = (double)owned / P;
            r->share_rate_ms = (double)r->rate * f / (double)r->per_ms;
            r->share_burst = owned ? fmax(1.0, (double)r->burst * f) : 0;
            if (r->tokens > r->share_burst)
                r->tokens = r->share_burst;
            em_metric_set(r->m_share_rate, (int64_t)llround(r->share_rate_ms * 60000.0));
        }
        EM_INFO("resource share", EM_F_STR("resource", r->name), EM_F_INT("owned_partitions", owned),
                EM_F_INT("partitions", P), EM_F_INT("concurrency", r->share_conc),
                EM_F_INT("rate_per_minute", r->share_rate_ms < 0 ? -1 : (int64_t)llround(r->share_rate_ms * 60000.0)));
    }
}

int sc_resources_within_share_locked(const scheduler_t *s) {
    for (int i = 0; i < s->nres; i++)
        if (s->res[i].share_conc >= 0 && s->res[i].running > s->res[i].share_conc)
            return 0;
    return 1;
}

/* ---- admission ---------------------------------------------------------- */

int sc_resources_take_locked(scheduler_t *s, sc_class_t *c, sc_item_t *it, int64_t now, int64_t *wake_ms) {
    int ok = 1;
    sc_resource_t *blocker = NULL;
    for (int k = 0; k < c->nres; k++) {
        sc_resource_t *r = &s->res[c->res[k]];
        if (r->share_conc >= 0 && r->running >= r->share_conc) {
            ok = 0; /* woken when one of its executions finishes */
            blocker = r;
        }
        if (r->share_rate_ms >= 0) {
            refill(r, now);
            if (r->tokens < 1.0) {
                ok = 0;
                blocker = r;
                if (r->share_rate_ms > 0) {
                    int64_t at = now + (int64_t)ceil((1.0 - r->tokens) / r->share_rate_ms);
                    if (!*wake_ms || at < *wake_ms)
                        *wake_ms = at;
                }
            }
        }
    }
    if (!ok) {
        if (!it->throttled) {
            it->throttled = 1;
            em_metric_add(blocker->m_throttled, 1);
        }
        return 0;
    }
    for (int k = 0; k < c->nres; k++) {
        sc_resource_t *r = &s->res[c->res[k]];
        r->running++;
        if (r->share_rate_ms >= 0)
            r->tokens -= 1.0;
        em_metric_add(r->m_admitted, 1);
        em_metric_set(r->m_running, r->running);
    }
    it->holding = 1;
    return 1;
}

void sc_resources_release_locked(scheduler_t *s, sc_item_t *it) {
    if (!it->holding)
        return;
    it->holding = 0;
    sc_class_t *c = s->classes[it->cls];
    for (int k = 0; k < c->nres; k++) {
        sc_resource_t *r = &s->res[c->res[k]];
        r->running--;
        em_metric_set(r->m_running, r->running);
    }
    if (s->nres)
        pthread_cond_broadcast(&s->cond); /* a revoke may wait for the running to fit a smaller share */
}

static void wake_fire(void *arg) {
    scheduler_t *s = arg;
    pthread_mutex_lock(&s->lock);
    s->res_wake_ms = 0;
    sc_dispatch_locked(s);
    pthread_mutex_unlock(&s->lock);
}

void sc_resources_wake_at_locked(scheduler_t *s, int64_t wake_ms) {
    if (s->dispatch_closed)
        return; /* exiting: the timers may be gone */
    if (s->res_wake_ms && s->res_wake_ms <= wake_ms)
        return; /* one armed sooner wakes dispatch, which arms the next */
    int64_t delay = wake_ms - em_mono_ms();
    if (em_timer_after(s->svc.timers, delay > 0 ? delay : 0, wake_fire, s) == EM_OK)
        s->res_wake_ms = wake_ms;
}

void sc_resources_queued_locked(scheduler_t *s, const sc_class_t *c, int delta) {
    for (int k = 0; k < c->nres; k++) {
        sc_resource_t *r = &s->res[c->res[k]];
        r->waiting += delta;
        em_metric_set(r->m_waiting, r->waiting + r->parked);
    }
}

/* ---- parking ------------------------------------------------------------ */

/* Is a queue of one of c's resources full? */
static int full(const scheduler_t *s, const sc_class_t *c) {
    for (int k = 0; k < c->nres; k++) {
        const sc_resource_t *r = &s->res[c->res[k]];
        if (r->waiting >= r->max_waiting)
            return 1;
    }
    return 0;
}

static void parked(scheduler_t *s, const sc_class_t *c, int delta) {
    for (int k = 0; k < c->nres; k++) {
        sc_resource_t *r = &s->res[c->res[k]];
        r->parked += delta;
        em_metric_set(r->m_waiting, r->waiting + r->parked);
    }
}

static void hold(scheduler_t *s, sc_part_t *p, int on) {
    if (p->held == on)
        return;
    if (p->owned && em_consumer_hold_partition(s->consumer, p->id, on) != EM_OK)
        EM_WARN(on ? "cannot hold a partition" : "cannot release a partition", EM_F_INT("partition", p->id));
    p->held = on;
    s->nheld += on ? 1 : -1;
    em_metric_set(s->m_held, s->nheld);
    EM_DEBUG(on ? "partition held: an execution waits for a full resource queue" : "partition released",
             EM_F_INT("partition", p->id));
}

/* Parks it in its partition (held from the first one on). */
static void park(scheduler_t *s, sc_part_t *p, sc_item_t *it) {
    it->next = NULL;
    if (p->park_tail)
        p->park_tail->next = it;
    else
        p->park_head = it;
    p->park_tail = it;
    p->nparked++;
    parked(s, s->classes[it->cls], 1);
    hold(s, p, 1);
}

void sc_resources_accept_locked(scheduler_t *s, sc_item_t *it) {
    sc_part_t *p = it->part;
    sc_class_t *c = s->classes[it->cls];
    if (!c->nres || !full(s, c)) {
        sc_pending_push_back_locked(s, it);
        return;
    }
    if (p->nparked < SC_PARK_MAX) {
        park(s, p, it);
        return;
    }
    /* enough of this partition waits here: it and what follows go back to
     * Kafka (the partition, held, is sought back to it; the rest of this
     * poll's records of it are dropped as they come) */
    char what[160];
    if (em_consumer_restart_partition(s->consumer, p->id, it->offset, what, sizeof(what)) != EM_OK ||
        em_watermark_untrack_last(p->wm, it->seq) != EM_OK) {
        EM_WARN("cannot seek a held partition back; keeping the record parked", EM_F_INT("partition", p->id),
                EM_F_INT("offset", it->offset), EM_F_STR("what", what));
        park(s, p, it);
        return;
    }
    p->rewound = 1;
    p->next_offset = it->offset;
    em_metric_add(s->m_rewinds, 1);
    sc_item_done_locked(s, it, 0); /* untracked: nothing to commit for it */
}

void sc_resources_unpark_locked(scheduler_t *s) {
    if (!s->nheld)
        return;
    /* one parked record per held partition per round, from where the last
     * turn stopped: the partitions share the room fairly */
    int moved = 1;
    while (moved) {
        moved = 0;
        for (int k = 0; k < s->nparts; k++) {
            int i = (s->unpark_next + k) % s->nparts;
            sc_part_t *p = s->parts[i];
            if (!p || !p->held || !p->park_head)
                continue;
            sc_item_t *it = p->park_head;
            sc_class_t *c = s->classes[it->cls];
            if (c->nres && full(s, c))
                continue;
            p->park_head = it->next;
            if (!p->park_head)
                p->park_tail = NULL;
            p->nparked--;
            parked(s, c, -1);
            sc_pending_push_back_locked(s, it);
            s->unpark_next = (i + 1) % s->nparts;
            moved = 1;
        }
    }
    for (int i = 0; i < s->nparts; i++) {
        sc_part_t *p = s->parts[i];
        if (p && p->held && !p->park_head) {
            hold(s, p, 0); /* it fetches again: from where it was sought back to, when it was */
            p->rewound = 0;
        }
    }
}

void sc_resources_drop_parked_locked(scheduler_t *s) {
    for (int i = 0; i < s->nparts; i++) {
        sc_part_t *p = s->parts[i];
        if (!p || !p->revoking)
            continue;
        while (p->park_head) {
            sc_item_t *it = p->park_head;
            p->park_head = it->next;
            p->nparked--;
            parked(s, s->classes[it->cls], -1);
            sc_item_done_locked(s, it, 0);
        }
        p->park_tail = NULL;
        p->rewound = 0;
        if (p->held) { /* the revoke clears librdkafka's hold */
            p->held = 0;
            s->nheld--;
            em_metric_set(s->m_held, s->nheld);
        }
    }
}
