/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runs alone: an Execute call with ExecuteRequest.alone holds one
 * execution that was in flight when an executor died. The scheduler
 * charges a death only to an execution that ran with nothing beside it,
 * so this executor makes that true:
 *
 *   1. from the call's arrival it takes no other work: every other
 *      Execute call is refused whole, RESOURCE_EXHAUSTED (the scheduler
 *      sends it elsewhere, or later), and so is a second alone call; the
 *      alone call itself is taken or refused whole (executor.max_inflight),
 *      never refused execution by execution, and its handler's concurrency
 *      is no bar (nothing else runs beside it when it starts);
 *   2. it waits, unaccepted, until every job it holds has finished
 *      (polled every ALONE_POLL_MS on the timer thread);
 *   3. then it accepts the call (the "execmesh-accepted" header) and runs
 *      the execution; its timeout counts from then;
 *   4. when its batch is freed, the executor takes work again.
 *
 * A call whose caller gave up while it waited is dropped unrun: its caller
 * saw it unaccepted and dispatches the same attempt again. A drain drops
 * it too (UNAVAILABLE, unaccepted).
 */
#include <pthread.h>

#include "em_log.h"
#include "em_rpc_server.h"
#include "executor.h"

#define ALONE_POLL_MS 10

static struct {
    pthread_mutex_t lock;
    int reserved;         /* an alone call arrived: take no other work */
    ex_batch_t *waiting;  /* its batch, not started yet */
    ex_batch_t *running;  /* its batch, started */
} A = {.lock = PTHREAD_MUTEX_INITIALIZER};

long ex_alone_admit(size_t n, int alone, int *inflight_before) {
    pthread_mutex_lock(&A.lock);
    long taken = -1;
    if (!A.reserved) {
        *inflight_before = atomic_load(&EX.inflight);
        size_t room = *inflight_before < EX.max_inflight ? (size_t)(EX.max_inflight - *inflight_before) : 0;
        taken = (long)(n < room ? n : room);
        if (alone && (size_t)taken < n)
            taken = 0; /* all or none */
        atomic_fetch_add(&EX.inflight, (int)taken);
        if (taken > 0)
            A.reserved = alone;
    }
    pthread_mutex_unlock(&A.lock);
    return taken;
}

void ex_alone_cancel_reservation(void) {
    pthread_mutex_lock(&A.lock);
    if (!A.waiting && !A.running)
        A.reserved = 0;
    pthread_mutex_unlock(&A.lock);
}

static void poll_start(void *arg);

/* Takes the waiting batch when nothing else is held; NULL otherwise. */
static ex_batch_t *take_if_idle(void) {
    pthread_mutex_lock(&A.lock);
    ex_batch_t *b = NULL;
    if (A.waiting && atomic_load(&EX.inflight) == 1) {
        b = A.waiting;
        A.waiting = NULL;
        A.running = b;
    }
    pthread_mutex_unlock(&A.lock);
    return b;
}

static void drop_waiting(grpc_status_code code, const char *why) {
    pthread_mutex_lock(&A.lock);
    ex_batch_t *b = A.waiting;
    A.waiting = NULL;
    A.reserved = 0;
    pthread_mutex_unlock(&A.lock);
    if (b)
        ex_batch_drop(b, code, why);
}

static void poll_start(void *arg) {
    (void)arg;
    pthread_mutex_lock(&A.lock);
    ex_batch_t *w = A.waiting;
    pthread_mutex_unlock(&A.lock);
    if (!w)
        return;
    if (ex_env.abandon || !ex_env.timers) {
        drop_waiting(GRPC_STATUS_UNAVAILABLE, "executor draining: the execution that runs alone was not started");
        return;
    }
    if (em_rpc_call_cancelled(ex_batch_call(w))) {
        const ex_exec_t *ex = ex_batch_exec(w, 0);
        char trace[33];
        EM_INFO("the caller gave up on an execution waiting to run alone; dropped unrun",
                EX_F_EXEC(ex, ex->attempt, trace));
        drop_waiting(GRPC_STATUS_CANCELLED, "cancelled by the caller before it ran");
        return;
    }
    ex_batch_t *b = take_if_idle();
    if (b) {
        em_metric_add(EX.m_alone, 1);
        ex_batch_begin(b);
        return;
    }
    if (em_timer_after(ex_env.timers, ALONE_POLL_MS, poll_start, NULL) != EM_OK)
        drop_waiting(GRPC_STATUS_UNAVAILABLE, "executor stopping: the execution that runs alone was not started");
}

void ex_alone_hold(ex_batch_t *b) {
    pthread_mutex_lock(&A.lock);
    A.waiting = b;
    pthread_mutex_unlock(&A.lock);
    poll_start(NULL);
}

void ex_alone_freed(ex_batch_t *b) {
    pthread_mutex_lock(&A.lock);
    if (A.running == b) {
        A.running = NULL;
        A.reserved = 0;
    }
    pthread_mutex_unlock(&A.lock);
}
