/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Executor.Cancel: the scheduler that dispatched an execution here asks to
 * stop it. Nothing waits here for a handler (an execution beyond its
 * handler's concurrency is refused on arrival and waits in Kafka), so each
 * job of the batches held here with that id, not finished, is:
 *
 *   - running, with a stop armed by its handler (ex_stop_t): the cancel
 *     takes the stop and calls it once: a sleep ends CANCELLED at once, an
 *     exec child's process group gets SIGTERM, then SIGKILL after
 *     kill_grace_ms, and the job ends CANCELLED when the child is reaped;
 *   - taken and not begun yet (its batch held to run alone, or still
 *     starting, or an exec child not spawned yet): ex_job_start (or the
 *     handler arming its stop) ends it CANCELLED instead of starting it;
 *   - a synchronous builtin ends on its own, within microseconds.
 *
 * Each outcome goes out as every result does (published, then answered on
 * its Execute call): one CANCELLED result, final. The jobs are found and
 * claimed with the batches' lock held (no batch is freed meanwhile); a
 * claimed job cannot finish otherwise, so its batch stays until the
 * claim's action, run after the lock, has finished it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_log.h"
#include "em_pbwire.h"
#include "em_rpc_server.h"
#include "em_util.h"
#include "executor.h"

static pthread_mutex_t stop_lock = PTHREAD_MUTEX_INITIALIZER;

int ex_stop_arm(ex_job_t *job, ex_stop_t *st) {
    pthread_mutex_lock(&stop_lock);
    int cancelled = atomic_load(&job->cancel);
    st->taken = 0;
    if (!cancelled)
        job->stop = st;
    pthread_mutex_unlock(&stop_lock);
    return cancelled;
}

int ex_stop_disarm(ex_job_t *job, ex_stop_t *st) {
    pthread_mutex_lock(&stop_lock);
    int mine = !st->taken;
    if (mine && job->stop == st)
        job->stop = NULL;
    pthread_mutex_unlock(&stop_lock);
    return mine;
}

int ex_stop_taken(const ex_stop_t *st) {
    pthread_mutex_lock(&stop_lock);
    int taken = st->taken;
    pthread_mutex_unlock(&stop_lock);
    return taken;
}

/* What a cancel does once the batches' lock is released: the stop it took. */
typedef struct action {
    ex_job_t *job; /* claimed: only this action finishes it */
    void (*stop)(ex_job_t *job, uint64_t key);
    uint64_t key;
} action_t;

typedef struct claims {
    action_t *a;
    size_t n, cap;
    size_t found; /* unfinished jobs with the id */
} claims_t;

static void claim(ex_job_t *job, void *ctx) {
    claims_t *c = ctx;
    if (atomic_load(&job->done))
        return;
    c->found++;
    atomic_store(&job->cancel, 1); /* not begun yet: it never starts */
    action_t a = {job, NULL, 0};
    pthread_mutex_lock(&stop_lock);
    ex_stop_t *st = job->stop;
    if (st) {
        st->taken = 1;
        job->stop = NULL;
        a.stop = st->fn;
        a.key = st->key;
    }
    pthread_mutex_unlock(&stop_lock);
    if (!a.stop)
        return; /* not begun, or a synchronous builtin: ends on its own */
    if (em_grow(&c->a, &c->cap, c->n + 1, sizeof(*c->a)) != 0) {
        /* the claim stands and nothing else would end the job: give up loudly */
        EM_ERROR("out of memory cancelling a job");
        abort();
    }
    c->a[c->n++] = a;
}

static void act(const action_t *a) { a->stop(a->job, a->key); }

#define CANCEL_MAX_IDS 1024

void ex_on_cancel(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len) {
    (void)ctx;
    const uint8_t *p = req, *end = req + len;
    em_pb_field_t f;
    em_err_t rc;
    claims_t c = {0};
    /* the answer: the ids found unfinished here, as CancelResponse bytes */
    uint8_t *out = malloc(len ? len : 1), *o = out;
    size_t nids = 0;
    if (!out) {
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "executor: out of memory");
        return;
    }
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        if (f.number != 1 || f.wire_type != EM_PB_LEN)
            continue;
        if (++nids > CANCEL_MAX_IDS) {
            free(out);
            em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "ids: more than 1024 in one Cancel");
            return;
        }
        size_t before = c.found;
        ex_batches_find(f.data, f.len, claim, &c);
        if (c.found > before)
            o = em_pb_write_len_field(o, 1, f.data, f.len);
    }
    if (rc != EM_ENOTFOUND) {
        free(out);
        em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "CancelRequest: cannot decode");
        return;
    }
    for (size_t i = 0; i < c.n; i++)
        act(&c.a[i]);
    EM_INFO("cancel asked", EM_F_UINT("ids", nids), EM_F_UINT("found", c.found), EM_F_UINT("stopped", c.n));
    free(c.a);
    em_rpc_call_reply_slice(call, grpc_slice_from_copied_buffer((const char *)out, (size_t)(o - out)));
    free(out);
}
