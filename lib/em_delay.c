/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The delay runner: a consumer of its own (raw librdkafka, because its
 * pauses are per partition and its own, where em_consumer's pause flag is
 * all-or-nothing for the scheduler), a small state machine per partition,
 * and the mailbox through which delivery reports come back from the
 * producer's poll thread.
 *
 * A partition is in one state:
 *   RUN        fetching: each record is forwarded, skipped, or makes it hold
 *   WAIT_DUE   held at a record not due yet, until its due time
 *   WAIT_ROOM  held at a record that found the in-flight window full
 *   FAILING    a forward failed: paused until its other forwards are reported
 *   RETRY      held at the lowest failed offset, until a backoff ran out
 * Holding is always "pause, then seek back to the record to read next":
 * librdkafka resumes a paused partition after the last record the
 * application read, which is the held record itself. Each held record is
 * read again from Kafka when the partition resumes; nothing is kept.
 */
#include "em_delay.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "em_kafka.h"
#include "em_log.h"
#include "em_util.h"
#include "em_watermark.h"

#define EM_DELAY_DRAIN_MS 5000     /* destroy waits this long for forwards in flight */
#define EM_DELAY_BACKOFF_MIN_MS 100
#define EM_DELAY_BACKOFF_MAX_MS 10000
#define EM_DELAY_POLL_MAX_MS 1000  /* the loop's longest sleep; a report or a stop wakes it at once */
#define EM_DELAY_BATCH 1024        /* records handled between two looks at reports, holds, commits */
#define EM_DELAY_SEEK_MS 5000
#define EM_DELAY_UNTRACKED UINT64_MAX

typedef enum pstate { P_RUN, P_WAIT_DUE, P_WAIT_ROOM, P_FAILING, P_RETRY } pstate_t;

/* One forward in flight. */
typedef struct fwd {
    em_delivery_t d;
    struct box *box;
    struct fwd *next;       /* in the box's list once reported */
    int32_t partition;
    uint64_t gen;           /* the partition's incarnation it belongs to */
    uint64_t seq;           /* its watermark handle, EM_DELAY_UNTRACKED when tracking failed */
    int64_t offset;         /* of the delay record */
    rd_kafka_resp_err_t err;
} fwd_t;

/* Where delivery reports wait for the runner's thread. It may outlive the
 * runner (a forward reported after destroy): the runner and every forward
 * in flight hold a reference, and the last one out frees it. */
typedef struct box {
    pthread_mutex_t lock;
    pthread_cond_t cond;    /* a report arrived (destroy's drain waits on it) */
    fwd_t *head, *tail;     /* reported, not yet taken */
    int nlist;
    int refs;
    int closed;             /* the runner is gone: reports are dropped */
    rd_kafka_queue_t *wake; /* the consumer queue, yielded on each report */
} box_t;

/* What the runner knows of one assigned partition. */
typedef struct part {
    int32_t partition;
    uint64_t gen;           /* unique per assignment: reports of an earlier one are told apart */
    pstate_t state;
    em_watermark_t *wm;     /* forwards of this incarnation, by offset */
    int64_t next;           /* the offset to handle next; -1 until the first record */
    int64_t expect;         /* after a resume: the offset the fetch must start at, else -1 */
    int64_t resume_at;      /* monotonic ms (held states) */
    int sought;             /* the hold's seek was accepted */
    int64_t failed_at;      /* FAILING: the lowest offset whose forward failed */
    int fail_streak;        /* failures in a row: the backoff's exponent */
    int inflight;           /* forwards of this incarnation not yet reported */
    int64_t commit_at;      /* one past the forwarded prefix, -1 when none */
    int64_t committed;      /* the last offset committed (or sent asynchronously), -1 when none */
} part_t;

struct em_delay {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    em_producer_t *producer; /* borrowed */
    char *topic;
    box_t *box;
    pthread_t thread;
    int started;
    atomic_int stop;
    int commit_interval_ms;
    int max_inflight;
    part_t **parts;         /* indexed by partition; NULL when not assigned */
    int nparts;
    uint64_t gens;
    int inflight;           /* forwards produced whose reports were not taken yet */
    int waiting;            /* partitions in WAIT_DUE */
    int64_t next_commit;    /* monotonic ms */
    struct {
        em_metric_t *forwarded, *failures, *skipped, *waiting, *lateness, *inflight;
    } m;
};

static void m_add(em_metric_t *x, int64_t v) {
    if (x)
        em_metric_add(x, v);
}

static void m_set(em_metric_t *x, int64_t v) {
    if (x)
        em_metric_set(x, v);
}

/* ---- headers ------------------------------------------------------------ */

/* Kafka's rule: 1 to 249 of [A-Za-z0-9._-], and not "." or "..". */
static int topic_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 249 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Decimal unix ms, digits only (at most 18: no overflow); -1 when not. */
static int64_t parse_due(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 18)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* The last value of header name as a string in buf; NULL when absent or
 * longer than buf holds. */
static const char *header_str(const rd_kafka_headers_t *h, const char *name, char *buf, size_t n) {
    const void *v = NULL;
    size_t sz = 0;
    if (!h || rd_kafka_header_get_last(h, name, &v, &sz) != RD_KAFKA_RESP_ERR_NO_ERROR || sz >= n)
        return NULL;
    if (sz)
        memcpy(buf, v, sz);
    buf[sz] = '\0';
    return buf;
}

static int is_delay_header(const char *name) {
    return strcmp(name, EM_DELAY_HDR_DUE) == 0 || strcmp(name, EM_DELAY_HDR_TARGET) == 0 ||
           strcmp(name, EM_DELAY_HDR_FROM) == 0; /* a record delayed twice names only its last wait */
}

/* The forward's headers: the record's own, minus the delay headers, plus
 * where it waited. */
static rd_kafka_headers_t *forward_headers(const em_delay_t *d, const rd_kafka_message_t *m) {
    rd_kafka_headers_t *in = NULL;
    if (rd_kafka_message_headers(m, &in) != RD_KAFKA_RESP_ERR_NO_ERROR)
        in = NULL;
    size_t n = in ? rd_kafka_header_cnt(in) : 0;
    rd_kafka_headers_t *out = rd_kafka_headers_new(n + 1);
    for (size_t i = 0; i < n; i++) {
        const char *name;
        const void *v;
        size_t sz;
        if (rd_kafka_header_get_all(in, i, &name, &v, &sz) != RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        if (!is_delay_header(name))
            rd_kafka_header_add(out, name, -1, v, (ssize_t)sz);
    }
    char from[320];
    snprintf(from, sizeof(from), "%s/%d/%lld", d->topic, (int)m->partition, (long long)m->offset);
    rd_kafka_header_add(out, EM_DELAY_HDR_FROM, -1, from, -1);
    return out;
}

/* ---- the mailbox (any thread) ---------------------------------------------- */

static box_t *box_new(void) {
    box_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    pthread_mutex_init(&b->lock, NULL);
    em_cond_init(&b->cond);
    b->refs = 1; /* the runner's */
    return b;
}

static void box_free(box_t *b) {
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    free(b);
}

static void box_ref(box_t *b) {
    pthread_mutex_lock(&b->lock);
    b->refs++;
    pthread_mutex_unlock(&b->lock);
}

static void box_unref(box_t *b) {
    pthread_mutex_lock(&b->lock);
    int last = --b->refs == 0;
    pthread_mutex_unlock(&b->lock);
    if (last)
        box_free(b);
}

/* Takes every report waiting; the caller owns them (and their references
 * are dropped: the runner's own keeps the box). */
static fwd_t *box_take(box_t *b) {
    pthread_mutex_lock(&b->lock);
    fwd_t *f = b->head;
    b->refs -= b->nlist;
    b->head = b->tail = NULL;
    b->nlist = 0;
    pthread_mutex_unlock(&b->lock);
    return f;
}

/* The runner is gone: later reports are freed where they arrive. */
static void box_close(box_t *b) {
    pthread_mutex_lock(&b->lock);
    b->closed = 1;
    b->wake = NULL;
    fwd_t *f = b->head;
    b->refs -= b->nlist + 1;
    b->head = b->tail = NULL;
    b->nlist = 0;
    int last = b->refs == 0;
    pthread_mutex_unlock(&b->lock);
    while (f) {
        fwd_t *next = f->next;
        free(f);
        f = next;
    }
    if (last)
        box_free(b);
}

/* Delivery report of a forward: the producer's poll thread. */
static void on_delivered(em_delivery_t *dv, const rd_kafka_message_t *msg) {
    fwd_t *f = EM_CONTAINER_OF(dv, fwd_t, d);
    box_t *b = f->box;
    f->err = msg->err;
    if (msg->err)
        EM_WARN("delayed record not forwarded", EM_F_INT("partition", f->partition), EM_F_INT("offset", f->offset),
                EM_F_STR("target", rd_kafka_topic_name(msg->rkt)), EM_F_STR("error", rd_kafka_err2name(msg->err)));
    pthread_mutex_lock(&b->lock);
    if (!b->closed) {
        f->next = NULL;
        if (b->tail)
            b->tail->next = f;
        else
            b->head = f;
        b->tail = f;
        b->nlist++;
        pthread_cond_signal(&b->cond);
        rd_kafka_queue_yield(b->wake); /* the runner may be waiting in the consumer poll */
        pthread_mutex_unlock(&b->lock);
        return;
    }
    int last = --b->refs == 0;
    pthread_mutex_unlock(&b->lock);
    free(f);
    if (last)
        box_free(b);
}

/* ---- partitions (the runner's thread from here on) ------------------------ */

static part_t *part_get(const em_delay_t *d, int32_t partition) {
    return partition >= 0 && partition < d->nparts ? d->parts[partition] : NULL;
}

static rd_kafka_topic_partition_list_t *one(const em_delay_t *d, int32_t partition, int64_t offset) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, d->topic, partition)->offset = offset;
    return l;
}

static void set_state(em_delay_t *d, part_t *p, pstate_t st) {
    d->waiting += (st == P_WAIT_DUE) - (p->state == P_WAIT_DUE);
    p->state = st;
    m_set(d->m.waiting, d->waiting);
}

static part_t *part_new(em_delay_t *d, int32_t partition) {
    if (partition < 0)
        return NULL;
    if (partition >= d->nparts) {
        int n = partition + 1 > d->nparts * 2 ? partition + 1 : d->nparts * 2;
        part_t **a = realloc(d->parts, (size_t)n * sizeof(*a));
        if (!a)
            return NULL;
        memset(a + d->nparts, 0, (size_t)(n - d->nparts) * sizeof(*a));
        d->parts = a;
        d->nparts = n;
    }
    part_t *p = calloc(1, sizeof(*p));
    if (!p || !(p->wm = em_watermark_new())) {
        free(p);
        return NULL;
    }
    p->partition = partition;
    p->gen = ++d->gens;
    p->state = P_RUN;
    p->next = p->expect = p->failed_at = -1;
    p->commit_at = p->committed = -1;
    d->parts[partition] = p;
    return p;
}

static void part_forget(em_delay_t *d, int32_t partition) {
    part_t *p = part_get(d, partition);
    if (!p)
        return;
    set_state(d, p, P_RUN);
    em_watermark_destroy(p->wm);
    free(p);
    d->parts[partition] = NULL;
}

/* Pauses (1) or resumes (0) one partition in librdkafka; 0 on success. */
static int set_paused(em_delay_t *d, part_t *p, int pause) {
    rd_kafka_topic_partition_list_t *l = one(d, p->partition, RD_KAFKA_OFFSET_INVALID);
    rd_kafka_resp_err_t err = pause ? rd_kafka_pause_partitions(d->rk, l) : rd_kafka_resume_partitions(d->rk, l);
    if (!err)
        err = l->elems[0].err;
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        EM_WARN(pause ? "cannot pause a delay partition" : "cannot resume a delay partition",
                EM_F_STR("topic", d->topic), EM_F_INT("partition", p->partition),
                EM_F_STR("error", rd_kafka_err2name(err)));
    return err ? -1 : 0;
}

/* Moves p's fetch position to offset; 0 on success. */
static int seek_to(em_delay_t *d, part_t *p, int64_t offset) {
    rd_kafka_topic_partition_list_t *l = one(d, p->partition, offset);
    rd_kafka_error_t *e = rd_kafka_seek_partitions(d->rk, l, EM_DELAY_SEEK_MS);
    rd_kafka_resp_err_t err = e ? rd_kafka_error_code(e) : l->elems[0].err;
    if (e)
        rd_kafka_error_destroy(e);
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        EM_WARN("cannot seek a held delay partition back; it stays paused until a seek succeeds",
                EM_F_STR("topic", d->topic), EM_F_INT("partition", p->partition), EM_F_INT("offset", offset),
                EM_F_STR("error", rd_kafka_err2name(err)));
    return err ? -1 : 0;
}

/* Stops fetching p and, when offset >= 0, moves its fetch position back to
 * offset: the record it reads first when it resumes. */
static void hold(em_delay_t *d, part_t *p, pstate_t st, int64_t offset, int64_t resume_at) {
    if (p->state == P_RUN)
        set_paused(d, p, 1); /* pause first: a pause sets the position to after the last record read */
    set_state(d, p, st);
    p->resume_at = resume_at;
    if (offset >= 0) {
        p->next = offset;
        p->sought = seek_to(d, p, offset) == 0;
    }
}

static int64_t backoff_ms(int streak) {
    int64_t ms = EM_DELAY_BACKOFF_MIN_MS;
    for (int i = 0; i < streak && ms < EM_DELAY_BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < EM_DELAY_BACKOFF_MAX_MS ? ms : EM_DELAY_BACKOFF_MAX_MS;
}

/* The record at offset was not forwarded: read it again after a backoff. */
static void retry_later(em_delay_t *d, part_t *p, int64_t offset, const char *why) {
    int64_t ms = backoff_ms(p->fail_streak++);
    EM_WARN("delayed record not forwarded; retrying", EM_F_STR("topic", d->topic), EM_F_INT("partition", p->partition),
            EM_F_INT("offset", offset), EM_F_STR("reason", why), EM_F_INT("backoff_ms", ms));
    hold(d, p, P_RETRY, offset, em_mono_ms() + ms);
}

static void resume(em_delay_t *d, part_t *p) {
    if (!p->sought) {
        p->sought = seek_to(d, p, p->next) == 0;
        if (!p->sought) {
            p->resume_at = em_mono_ms() + EM_DELAY_BACKOFF_MIN_MS;
            return;
        }
    }
    if (set_paused(d, p, 0) != 0) {
        p->resume_at = em_mono_ms() + EM_DELAY_BACKOFF_MIN_MS;
        return;
    }
    set_state(d, p, P_RUN);
    p->expect = p->next;
}

/* Every forward of a FAILING partition has been reported: start again at
 * the lowest failed offset after a backoff. The offsets from there on are
 * tracked again, in a fresh watermark; commit_at, below them, stays. */
static void retry_failed(em_delay_t *d, part_t *p) {
    em_watermark_t *wm = em_watermark_new();
    if (!wm)
        return; /* out of memory: the next turn tries again */
    em_watermark_destroy(p->wm);
    p->wm = wm;
    retry_later(d, p, p->failed_at, "delivery to the target failed");
}

/* Resumes the partitions whose wait is over. */
static void release_holds(em_delay_t *d) {
    int64_t now = em_mono_ms();
    int room = d->inflight <= d->max_inflight / 2; /* low mark: no resume per report */
    for (int i = 0; i < d->nparts; i++) {
        part_t *p = d->parts[i];
        if (!p || p->state == P_RUN)
            continue;
        if (p->state == P_FAILING) {
            if (p->inflight == 0)
                retry_failed(d, p);
            continue;
        }
        if (now >= p->resume_at && (p->state != P_WAIT_ROOM || room))
            resume(d, p);
    }
}

/* How long the consumer poll may wait: until the next resume or commit. */
static int next_timeout(const em_delay_t *d) {
    int64_t now = em_mono_ms();
    int64_t until = now + EM_DELAY_POLL_MAX_MS;
    if (d->next_commit < until)
        until = d->next_commit;
    for (int i = 0; i < d->nparts; i++) {
        const part_t *p = d->parts[i];
        if (!p || p->state == P_RUN || p->state == P_FAILING)
            continue;
        if (p->state == P_WAIT_ROOM && p->resume_at <= now)
            continue; /* a report wakes the poll */
        if (p->resume_at < until)
            until = p->resume_at;
    }
    return until <= now ? 0 : (int)(until - now);
}

static void note_done(part_t *p) {
    int64_t c = em_watermark_committable(p->wm);
    if (c > p->commit_at)
        p->commit_at = c;
}

/* ---- records -------------------------------------------------------------- */

/* A record nobody can forward: logged, and committed with the others. */
static void skip(em_delay_t *d, part_t *p, const rd_kafka_message_t *m, const char *why) {
    EM_ERROR("delayed record skipped: no valid target topic", EM_F_STR("topic", d->topic),
             EM_F_INT("partition", m->partition), EM_F_INT("offset", m->offset), EM_F_STR("reason", why));
    uint64_t seq;
    if (em_watermark_track(p->wm, m->offset, &seq) != EM_OK) {
        retry_later(d, p, m->offset, "out of memory");
        return;
    }
    em_watermark_done(p->wm, seq);
    p->next = m->offset + 1;
    note_done(p);
    m_add(d->m.skipped, 1);
}

static void forward(em_delay_t *d, part_t *p, const rd_kafka_message_t *m, const char *target, int64_t late_ms) {
    fwd_t *f = calloc(1, sizeof(*f));
    if (!f) {
        retry_later(d, p, m->offset, "out of memory");
        return;
    }
    f->d.done = on_delivered;
    f->box = d->box;
    f->partition = m->partition;
    f->gen = p->gen;
    f->offset = m->offset;
    /* through a topic of the producer, not its rd_kafka_t: the producer
     * may replace its librdkafka handle (a fatal idempotence error) */
    rd_kafka_topic_t *t = em_producer_topic(d->producer, target);
    if (!t) {
        free(f);
        retry_later(d, p, m->offset, "the producer has no room for another topic");
        return;
    }
    rd_kafka_headers_t *h = forward_headers(d, m);
    box_ref(d->box); /* before the produce: the report may come at once */
    em_err_t rc = em_producer_send(d->producer, t, m->key, m->key_len, m->payload, m->len, h, 1, &f->d);
    if (rc != EM_OK) {
        rd_kafka_headers_destroy(h);
        box_unref(d->box);
        free(f);
        retry_later(d, p, m->offset, em_errname(rc));
        return;
    }
    /* Tracked after the produce (its report is handled on this thread, so
     * not before this): a failed produce leaves no offset tracked that would
     * never finish. A failed track makes the report count as a failure, so
     * the partition reads the record again. */
    if (em_watermark_track(p->wm, m->offset, &f->seq) != EM_OK)
        f->seq = EM_DELAY_UNTRACKED;
    p->inflight++;
    d->inflight++;
    p->next = m->offset + 1;
    m_set(d->m.inflight, d->inflight);
    m_set(d->m.lateness, late_ms * 1000); /* microseconds, exposed as seconds */
}

static void handle_record(em_delay_t *d, const rd_kafka_message_t *m) {
    part_t *p = part_get(d, m->partition);
    /* a record of a partition not ours, of a held one, or from before a
     * seek: the fetch position already says where reading goes on */
    if (!p || p->state != P_RUN || m->offset < p->next)
        return;
    if (p->expect >= 0 && m->offset != p->expect)
        EM_WARN("resumed delay partition did not start at its held record", EM_F_STR("topic", d->topic),
                EM_F_INT("partition", m->partition), EM_F_INT("expected", p->expect), EM_F_INT("offset", m->offset));
    p->expect = -1;

    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
        h = NULL;
    char tbuf[256], dbuf[32];
    const char *target = header_str(h, EM_DELAY_HDR_TARGET, tbuf, sizeof(tbuf));
    if (!target || !topic_valid(target)) {
        skip(d, p, m, target ? "invalid " EM_DELAY_HDR_TARGET : "no " EM_DELAY_HDR_TARGET);
        return;
    }
    const char *due_s = header_str(h, EM_DELAY_HDR_DUE, dbuf, sizeof(dbuf));
    int64_t due = due_s ? parse_due(due_s) : -1;
    if (due < 0)
        EM_WARN("delayed record without a valid due time: forwarded at once", EM_F_STR("topic", d->topic),
                EM_F_INT("partition", m->partition), EM_F_INT("offset", m->offset));
    int64_t now = em_now_unix_ms();
    if (due > now) {
        hold(d, p, P_WAIT_DUE, m->offset, em_mono_ms() + (due - now));
        return;
    }
    if (d->inflight >= d->max_inflight) {
        hold(d, p, P_WAIT_ROOM, m->offset, 0);
        return;
    }
    forward(d, p, m, target, due >= 0 ? now - due : 0);
}

static void handle_report(em_delay_t *d, fwd_t *f) {
    d->inflight--;
    part_t *p = part_get(d, f->partition);
    if (!p || p->gen != f->gen) {
        /* its partition was revoked: the next owner reads it again */
        if (!f->err)
            m_add(d->m.forwarded, 1);
        return;
    }
    p->inflight--;
    if (!f->err && f->seq != EM_DELAY_UNTRACKED) {
        em_watermark_done(p->wm, f->seq);
        note_done(p);
        m_add(d->m.forwarded, 1);
        if (p->state == P_RUN)
            p->fail_streak = 0;
        return;
    }
    if (f->err)
        m_add(d->m.failures, 1);
    /* neither forwarding nor the commit passes a failed record: stop the
     * partition, let its other forwards report, then read again from the
     * lowest failed offset (release_holds) */
    if (p->state != P_FAILING) {
        p->failed_at = f->offset;
        hold(d, p, P_FAILING, -1, 0);
    } else if (f->offset < p->failed_at) {
        p->failed_at = f->offset;
    }
}

static void take_reports(em_delay_t *d) {
    fwd_t *f = box_take(d->box);
    while (f) {
        fwd_t *next = f->next;
        handle_report(d, f);
        free(f);
        f = next;
    }
    m_set(d->m.inflight, d->inflight);
}

/* ---- commits and rebalances ----------------------------------------------- */

/* Commits each partition's forwarded prefix that moved (only the partitions
 * in only, when given). */
static void commit(em_delay_t *d, const rd_kafka_topic_partition_list_t *only, int async) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (int i = 0; i < d->nparts; i++) {
        part_t *p = d->parts[i];
        /* a synchronous commit (revoke, close) sends even what an
         * asynchronous one may still be sending: it must be done when this
         * returns */
        if (!p || p->commit_at < 0 || (async && p->commit_at == p->committed))
            continue;
        if (only && !rd_kafka_topic_partition_list_find(only, d->topic, p->partition))
            continue;
        rd_kafka_topic_partition_list_add(l, d->topic, p->partition)->offset = p->commit_at;
    }
    if (l->cnt) {
        rd_kafka_resp_err_t err = rd_kafka_commit(d->rk, l, async);
        if (err)
            EM_WARN("delay offset commit failed", EM_F_STR("topic", d->topic), EM_F_INT("partitions", l->cnt),
                    EM_F_STR("error", rd_kafka_err2name(err)));
        /* an asynchronous commit is taken as done; commit_cb undoes that on failure */
        for (int i = 0; !err && i < l->cnt; i++) {
            part_t *p = part_get(d, l->elems[i].partition);
            if (p)
                p->committed = l->elems[i].offset;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
                      void *opaque) {
    em_delay_t *d = opaque;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    int failed = 0;
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        if (!err && !offsets->elems[i].err)
            continue;
        failed++;
        part_t *p = part_get(d, offsets->elems[i].partition);
        if (p && p->committed == offsets->elems[i].offset)
            p->committed = -1; /* the next commit sends it again */
    }
    if (!failed && !err)
        return;
    if (em_kafka_err_retriable(err))
        EM_DEBUG("delay offset commit failed; retried", EM_F_STR("error", rd_kafka_err2name(err)));
    else
        EM_WARN("delay offset commit failed; retried", EM_F_STR("topic", d->topic), EM_F_INT("partitions", failed),
                EM_F_STR("error", rd_kafka_err2name(err ? err : offsets->elems[0].err)));
}

/* Clears librdkafka's pause flag of parts (a copy: the callback's list is
 * handed on to assign and unassign untouched). */
static void resume_all(em_delay_t *d, const rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t err = rd_kafka_resume_partitions(d->rk, l);
    if (err)
        EM_WARN("cannot resume delay partitions", EM_F_STR("topic", d->topic),
                EM_F_STR("error", rd_kafka_err2name(err)));
    rd_kafka_topic_partition_list_destroy(l);
}

static void on_assign(em_delay_t *d, rd_kafka_topic_partition_list_t *parts, int coop) {
    for (int i = 0; i < parts->cnt; i++) {
        part_forget(d, parts->elems[i].partition); /* none expected: an eager revoke forgot them all */
        if (!part_new(d, parts->elems[i].partition))
            EM_ERROR("out of memory for an assigned delay partition: its records wait until the next rebalance",
                     EM_F_STR("topic", d->topic), EM_F_INT("partition", parts->elems[i].partition));
    }
    if (coop) {
        rd_kafka_error_t *e = rd_kafka_incremental_assign(d->rk, parts);
        if (e) {
            EM_ERROR("delay incremental assign failed", EM_F_STR("error", rd_kafka_error_string(e)));
            rd_kafka_error_destroy(e);
        }
    } else {
        rd_kafka_resp_err_t err = rd_kafka_assign(d->rk, parts);
        if (err)
            EM_ERROR("delay assign failed", EM_F_STR("error", rd_kafka_err2name(err)));
    }
    /* librdkafka keeps a partition's pause flag across unassign and assign */
    resume_all(d, parts);
    EM_INFO("delay partitions assigned", EM_F_STR("topic", d->topic), EM_F_INT("count", parts->cnt),
            EM_F_STR("protocol", coop ? "cooperative" : "eager"));
}

static void on_revoke(em_delay_t *d, rd_kafka_topic_partition_list_t *parts, int coop, int lost) {
    take_reports(d); /* what is stored by now is committed below */
    if (!lost)
        commit(d, parts, 0);
    int unreported = 0;
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = part_get(d, parts->elems[i].partition);
        if (p)
            unreported += p->inflight;
    }
    EM_INFO("delay partitions revoked", EM_F_STR("topic", d->topic), EM_F_INT("count", parts->cnt),
            EM_F_BOOL("lost", lost), EM_F_INT("unreported_forwards", unreported));
    /* held partitions are paused; the flag would outlive the assignment */
    resume_all(d, parts);
    if (coop) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(d->rk, parts);
        if (e) {
            EM_ERROR("delay incremental unassign failed", EM_F_STR("error", rd_kafka_error_string(e)));
            rd_kafka_error_destroy(e);
        }
        for (int i = 0; i < parts->cnt; i++)
            part_forget(d, parts->elems[i].partition);
    } else {
        rd_kafka_assign(d->rk, NULL);
        for (int32_t i = 0; i < d->nparts; i++)
            part_forget(d, i);
    }
}

/* librdkafka's rebalance callback: the runner's thread, inside its poll. */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    em_delay_t *d = opaque;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        on_assign(d, parts, coop);
    else
        on_revoke(d, parts, coop, err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS || rd_kafka_assignment_lost(rk));
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    EM_WARN("kafka delay consumer error", EM_F_STR("error", rd_kafka_err2name((rd_kafka_resp_err_t)err)),
            EM_F_STR("reason", reason));
}

/* ---- the thread ------------------------------------------------------------ */

/* Waits (bounded) for the forwards in flight to be reported. */
static void drain(em_delay_t *d) {
    int64_t until = em_mono_ms() + EM_DELAY_DRAIN_MS;
    take_reports(d);
    while (d->inflight > 0) {
        int64_t left = until - em_mono_ms();
        if (left <= 0)
            break;
        pthread_mutex_lock(&d->box->lock);
        if (!d->box->head)
            em_cond_wait_ms(&d->box->cond, &d->box->lock, left);
        pthread_mutex_unlock(&d->box->lock);
        take_reports(d);
    }
    if (d->inflight > 0)
        EM_WARN("delay runner stopping with forwards unreported: the next owner forwards them again",
                EM_F_STR("topic", d->topic), EM_F_INT("unreported_forwards", d->inflight));
}

static void *run(void *arg) {
    em_delay_t *d = arg;
    d->next_commit = em_mono_ms() + d->commit_interval_ms;
    while (!atomic_load(&d->stop)) {
        take_reports(d);
        release_holds(d);
        if (em_mono_ms() >= d->next_commit) {
            commit(d, NULL, 1);
            d->next_commit = em_mono_ms() + d->commit_interval_ms;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(d->rk, next_timeout(d));
        /* one record per call: a rebalance served inside a call then
         * never leaves a record of the old assignment in our hands */
        for (int n = 1; m; n++) {
            if (!m->err)
                handle_record(d, m);
            else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                EM_WARN("kafka delay consume error", EM_F_STR("error", rd_kafka_err2name(m->err)),
                        EM_F_STR("reason", rd_kafka_message_errstr(m)));
            rd_kafka_message_destroy(m);
            m = n < EM_DELAY_BATCH && !atomic_load(&d->stop) ? rd_kafka_consumer_poll(d->rk, 0) : NULL;
        }
    }
    drain(d);
    /* the final revoke (on_revoke, on this thread) commits and forgets */
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(d->rk);
    if (err)
        EM_WARN("kafka delay consumer close", EM_F_STR("error", rd_kafka_err2name(err)));
    return NULL;
}

/* ---- life ---------------------------------------------------------------- */

static void register_metrics(em_delay_t *d, em_metrics_t *m) {
    if (!m)
        return;
    d->m.forwarded = em_metrics_counter(m, "execmesh_delay_forwarded_total", NULL,
                                        "Delayed records forwarded to their target topic (delivery report OK).");
    d->m.failures = em_metrics_counter(m, "execmesh_delay_forward_failures_total", NULL,
                                       "Forwards whose delivery failed (each is retried).");
    d->m.skipped = em_metrics_counter(m, "execmesh_delay_skipped_total", NULL,
                                      "Delayed records without a valid target topic, skipped.");
    d->m.waiting = em_metrics_gauge(m, "execmesh_delay_waiting_partitions", NULL,
                                    "Delay partitions paused because their next record is not due.");
    d->m.lateness = em_metrics_gauge_scaled(m, "execmesh_delay_last_lateness_seconds", NULL,
                                            "Seconds after its due time the last delayed record was forwarded.",
                                            EM_METRICS_US);
    d->m.inflight = em_metrics_gauge(m, "execmesh_delay_inflight", NULL,
                                     "Forwards produced and not yet reported (bounded by max_inflight).");
}

static void free_runner(em_delay_t *d) {
    if (d->box)
        box_close(d->box);
    if (d->queue)
        rd_kafka_queue_destroy(d->queue);
    if (d->rk)
        rd_kafka_destroy(d->rk);
    for (int32_t i = 0; i < d->nparts; i++)
        part_forget(d, i);
    free(d->parts);
    free(d->topic);
    free(d);
}

em_delay_t *em_delay_new(const em_delay_opts_t *o, char *errstr, size_t errstr_size) {
    if (!o || !o->bootstrap || !o->group || !o->topic || !o->producer) {
        snprintf(errstr, errstr_size, "delay runner: bootstrap, group, topic and producer are required");
        return NULL;
    }
    const em_kafka_prop_t props[] = {
        {"group.id", o->group},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        /* eager: before librdkafka 2.10 a commit during a cooperative
         * rebalance can lose the assignment (issue 4059) */
        {"partition.assignment.strategy", "roundrobin"},
        {"session.timeout.ms", "6000"},
        {"heartbeat.interval.ms", "1000"},
        /* waited-for records, not a stream: a small prefetch (a held
         * partition's prefetch is dropped anyway) and a short long-poll, so
         * a resumed partition is fetched again soon */
        {"queued.max.messages.kbytes", "16384"},
        {"fetch.wait.max.ms", "100"},
        {"socket.nagle.disable", "true"},
        {"reconnect.backoff.ms", "50"},
        {"reconnect.backoff.max.ms", "1000"},
    };
    em_delay_t *d = calloc(1, sizeof(*d));
    if (!d || !(d->topic = strdup(o->topic)) || !(d->box = box_new())) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    d->producer = o->producer;
    d->commit_interval_ms = o->commit_interval_ms > 0 ? o->commit_interval_ms : 1000;
    d->max_inflight = o->max_inflight > 0 ? o->max_inflight : 1000;

    rd_kafka_conf_t *conf = em_kafka_conf_new(o->bootstrap, o->client_id ? o->client_id : "execmesh-delay", props,
                                              EM_ARRAY_LEN(props), o->extra, o->nextra, errstr, errstr_size);
    if (!conf)
        goto fail;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, commit_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, d);
    char e[512];
    d->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
    if (!d->rk) {
        snprintf(errstr, errstr_size, "kafka delay consumer: %s", e);
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_poll_set_consumer(d->rk);
    d->queue = rd_kafka_queue_get_consumer(d->rk);
    d->box->wake = d->queue;

    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, d->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(d->rk, t);
    rd_kafka_topic_partition_list_destroy(t);
    if (err) {
        snprintf(errstr, errstr_size, "subscribe %s: %s", d->topic, rd_kafka_err2str(err));
        goto fail_close;
    }
    register_metrics(d, o->metrics);
    if (pthread_create(&d->thread, NULL, run, d) != 0) {
        snprintf(errstr, errstr_size, "delay runner: cannot start its thread");
        goto fail_close;
    }
    d->started = 1;
    EM_INFO("delay runner started", EM_F_STR("topic", d->topic), EM_F_STR("group", o->group),
            EM_F_INT("max_inflight", d->max_inflight));
    return d;
fail_close:
    rd_kafka_consumer_close(d->rk);
fail:
    if (d)
        free_runner(d);
    return NULL;
}

void em_delay_destroy(em_delay_t *d) {
    if (!d)
        return;
    atomic_store(&d->stop, 1);
    rd_kafka_queue_yield(d->queue);
    pthread_join(d->thread, NULL);
    free_runner(d);
}

/* ---- the writer (any thread) ---------------------------------------------- */

em_err_t em_delay_send(em_producer_t *p, rd_kafka_topic_t *delay_topic, const void *key, size_t klen,
                       const void *val, size_t vlen, rd_kafka_headers_t *headers, int64_t due_unix_ms,
                       const char *target_topic, em_delivery_t *d) {
    if (!p || !delay_topic || !d || due_unix_ms < 0 || !target_topic || !topic_valid(target_topic))
        return EM_EINVAL;
    /* a copy, so a failed call leaves the caller's headers as they were */
    rd_kafka_headers_t *h = headers ? rd_kafka_headers_copy(headers) : rd_kafka_headers_new(2);
    rd_kafka_header_remove(h, EM_DELAY_HDR_DUE);
    rd_kafka_header_remove(h, EM_DELAY_HDR_TARGET);
    char due[24];
    snprintf(due, sizeof(due), "%lld", (long long)due_unix_ms);
    rd_kafka_header_add(h, EM_DELAY_HDR_DUE, -1, due, -1);
    rd_kafka_header_add(h, EM_DELAY_HDR_TARGET, -1, target_topic, -1);
    em_err_t rc = em_producer_send(p, delay_topic, key, klen, val, vlen, h, 1, d);
    if (rc != EM_OK) {
        rd_kafka_headers_destroy(h);
        return rc;
    }
    if (headers)
        rd_kafka_headers_destroy(headers);
    return EM_OK;
}
