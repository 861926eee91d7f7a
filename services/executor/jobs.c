/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Jobs: one execution of a batch, from its start to its outcome.
 *
 * Nothing waits in the executor for a handler: an execution is taken only
 * when its handler has a free slot (handlers.c; the others are refused on
 * arrival, batch.c), and a taken job starts at once, holding its slot until
 * job_finish gives it back. Its deadline is monotonic: the execution's
 * timeout counted from its batch's start here (a call that runs alone
 * starts once it is accepted, alone.c), or sooner the caller's absolute
 * deadline turned into "so many ms from now" then, so a wall-clock jump
 * fires nothing early or late. A job whose deadline passed already (the
 * caller's, before it arrived) does not start and ends TIMED_OUT saying so;
 * nor does one a cancel reached first (CANCELLED).
 *
 * job_finish records the outcome and decides what follows: FAILED and
 * TIMED_OUT run again (the scheduler makes the retry wait durably in Kafka)
 * while attempts are left, after a backoff with full jitter chosen here,
 * where the handler's policy is configured; the last failing attempt ends
 * EXHAUSTED when the execution had more than one attempt allowed. REJECTED
 * and the exit codes an exec handler names as final never run again.
 *
 * Sizes (the model in lib/em_sizes.h): an error is kept to
 * EM_SIZE_ERROR_MAX bytes; a result that would exceed
 * publish.max_result_bytes ends FAILED, final, its output dropped; a failed
 * attempt is not retried once the next attempt's record (this execution
 * plus this attempt's history entry) would pass publish.max_result_bytes -
 * EM_SIZE_RETRY_ROOM: the execution ends EXHAUSTED saying the history is
 * full.
 *
 * A cancel (cancel.c) stops a running job through what its handler armed,
 * and keeps one not begun yet from starting (ex_job_start ends it
 * CANCELLED).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "em_execution.h"
#include "em_log.h"
#include "em_result_counts.h"
#include "em_util.h"
#include "executor.h"

/* ---- the retry policy --------------------------------------------------- */

void ex_retry_policy_read(const em_config_t *cfg, const char *prefix, ex_retry_policy_t *p) {
    char key[160];
#define OR_DEFAULT(k, def) (snprintf(key, sizeof(key), "%s%s", prefix, k), em_config_int(cfg, key) ? em_config_int(cfg, key) : em_config_int(cfg, def))
    p->max_attempts = (uint32_t)OR_DEFAULT("max_attempts", "handlers.max_attempts");
    p->initial_ms = OR_DEFAULT("retry_initial_ms", "handlers.retry_initial_ms");
    p->max_ms = OR_DEFAULT("retry_max_ms", "handlers.retry_max_ms");
    p->factor = OR_DEFAULT("retry_factor", "handlers.retry_factor");
#undef OR_DEFAULT
    p->n_no_retry = 0;
    if (strncmp(prefix, "exec.", 5) != 0)
        return; /* exit codes are an exec handler's */
    snprintf(key, sizeof(key), "%sno_retry_exit_codes", prefix);
    size_t n = em_config_list_len(cfg, key);
    for (size_t i = 0; i < n && p->n_no_retry < EM_ARRAY_LEN(p->no_retry_codes); i++)
        p->no_retry_codes[p->n_no_retry++] = atoi(em_config_list_get(cfg, key, i));
}

int ex_retry_policy_check(const em_config_t *cfg, const char *prefix, const char *program) {
    char key[160];
    snprintf(key, sizeof(key), "%sno_retry_exit_codes", prefix);
    size_t n = em_config_list_len(cfg, key);
    ex_retry_policy_t p;
    if (n > EM_ARRAY_LEN(p.no_retry_codes)) {
        fprintf(stderr, "%s: config refused: %s: key '%s': at most %zu exit codes\n", program,
                em_config_source(cfg, key), key, EM_ARRAY_LEN(p.no_retry_codes));
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *v = em_config_list_get(cfg, key, i);
        char *end;
        long code = strtol(v, &end, 10);
        if (!*v || *end || code < 1 || code > 255) {
            fprintf(stderr, "%s: config refused: %s: key '%s': '%s' is not an exit code (1 to 255)\n", program,
                    em_config_source(cfg, key), key, v);
            return -1;
        }
    }
    return 0;
}

/* The wait before attempt `attempt + 1`: full jitter over the capped
 * exponential backoff of the attempt-th retry. */
static uint32_t backoff_ms(const ex_retry_policy_t *p, uint32_t attempt) {
    int64_t cap = p->initial_ms;
    for (uint32_t i = 1; i < attempt && cap < p->max_ms; i++)
        cap = cap * p->factor;
    if (cap > p->max_ms)
        cap = p->max_ms;
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = (uint64_t)em_mono_ms() * 2654435761u;
    return (uint32_t)(r % (uint64_t)(cap + 1));
}

static int no_retry_code(const ex_retry_policy_t *p, int code) {
    for (size_t i = 0; i < p->n_no_retry; i++)
        if (p->no_retry_codes[i] == code)
            return 1;
    return 0;
}

/* This attempt as the history entry the scheduler appends to the next
 * attempt's record (and the last one of a final result's history). */
static size_t history_entry_bytes(const ex_result_t *r) {
    em_attempt_t a = {.attempt = r->attempt,
                      .status = r->attempt_status,
                      .executor = EX.svc.replica,
                      .executor_len = EX.replica_len,
                      .error = r->error,
                      .error_len = r->error ? strlen(r->error) : 0,
                      .exit_code = r->exit_code,
                      .started_unix_ms = r->started_unix_ms,
                      .finished_unix_ms = r->finished_unix_ms};
    return em_attempt_field_size(10, &a);
}

/* Decides whether the execution runs again, and the record's status. */
static void decide(ex_job_t *job, ex_result_t *r) {
    const ex_exec_t *ex = job->ex;
    const ex_handler_t *h = job->handler;
    r->final = 1;
    if (r->too_large) /* it would be as large again */
        return;
    if (!h || (r->status != EXECMESH__V1__STATUS__FAILED && r->status != EXECMESH__V1__STATUS__TIMED_OUT))
        return;
    uint32_t max = ex->max_attempts ? ex->max_attempts : h->retry.max_attempts;
    if (r->status == EXECMESH__V1__STATUS__FAILED && r->exit_code && no_retry_code(&h->retry, r->exit_code))
        return; /* the handler says this exit is final */
    if (ex->deadline_unix_ms && em_now_unix_ms() >= ex->deadline_unix_ms)
        return; /* the caller's deadline passed: another attempt could not start */
    /* The next attempt's record is this execution plus this attempt's
     * history entry (and two varints): it must stay within the size model's
     * room for a retry (lib/em_sizes.h), so the history cannot grow
     * without bound however many attempts are allowed. */
    size_t next = ex->wire_len + history_entry_bytes(r) + 24;
    int history_full = (int64_t)next > EX.max_result_bytes - EM_SIZE_RETRY_ROOM;
    if (r->attempt < max && !history_full) {
        r->final = 0;
        r->retry_delay_ms = backoff_ms(&h->retry, r->attempt);
        em_metric_add(EX.m_retries, 1);
        return;
    }
    if (r->attempt < max)
        em_metric_add(EX.m_history_full, 1);
    if (max > 1) {
        char msg[1200], full[200] = "";
        if (r->attempt < max)
            snprintf(full, sizeof(full),
                     " of %u allowed: the attempt history is full (the next attempt would be %zu bytes, limit %" PRId64
                     " = publish.max_result_bytes - %d)",
                     max, next, EX.max_result_bytes - EM_SIZE_RETRY_ROOM, EM_SIZE_RETRY_ROOM);
        snprintf(msg, sizeof(msg), "exhausted: %u attempts%s; the last: %s", r->attempt, full,
                 r->error ? r->error : (r->status == EXECMESH__V1__STATUS__TIMED_OUT ? "timed out" : "failed"));
        em_utf8_trim(msg);
        r->final_error = strdup(msg);
        r->status = EXECMESH__V1__STATUS__EXHAUSTED;
        em_metric_add(EX.m_exhausted, 1);
    }
}

/* ---- starting --------------------------------------------------------- */

void ex_job_start(ex_job_t *job) {
    int64_t now = em_mono_ms();
    int64_t left = job->deadline_ms - now;
    if (atomic_load(&job->cancel)) {
        job_finish(job, EXECMESH__V1__STATUS__CANCELLED, NULL, 0, 0, "cancelled before it started", 0);
        return;
    }
    if (left <= 0) {
        char msg[256];
        int64_t waited = now - job->arrived_ms;
        snprintf(msg, sizeof(msg), "not started: %s passed before it could start (waited %" PRId64 " ms in the executor)",
                 job->deadline_why, waited);
        em_metric_add(EX.m_expired, 1);
        job_finish(job, EXECMESH__V1__STATUS__TIMED_OUT, NULL, 0, 0, msg, 0);
        return;
    }
    job->run_ms = left;
    job->started_unix_ms = em_now_unix_ms();
    em_metric_add(EX.m_running, 1); /* the gauge is the count */
    em_journal_write(EX.journal, "S %.*s %u", (int)job->ex->id.n, (const char *)job->ex->id.p,
                     ex_batch_result(job->batch, job->idx)->attempt);
    job->handler->run(job);
}

/* A copy of error[0..n) as valid UTF-8, cut to EM_SIZE_ERROR_MAX - 1 bytes
 * (never inside a code point); NULL when out of memory. */
static char *error_copy(const char *error) {
    size_t n = strlen(error);
    if (n > EM_SIZE_ERROR_MAX - 1)
        n = EM_SIZE_ERROR_MAX - 1;
    char *e = malloc(n + 1);
    if (e)
        em_utf8_clean(e, n + 1, (const uint8_t *)error, n);
    return e;
}

/* The record of result r at its largest: the Result final, with the
 * history and an EXHAUSTED error (at most 1200 bytes), its key and Kafka's
 * framing. */
static size_t record_bytes(ex_job_t *job, ex_result_t *r) {
    int final = r->final;
    r->final = 1;
    size_t bytes = ex_batch_result_bytes(job->batch, job->idx) + job->ex->id.n + EM_SIZE_RECORD_OVERHEAD + 1200 + 16;
    r->final = final;
    return bytes;
}

/* A result that would not fit the sinks' Kafka limit ends FAILED, final,
 * with its output dropped and the sizes named: never published oversize.
 * When even that does not fit (publish.max_result_bytes set below the
 * schedulers' kafka.max_message_bytes), its headers and history are left
 * out too. */
static void check_size(ex_job_t *job, ex_result_t *r) {
    size_t bytes = record_bytes(job, r);
    if ((int64_t)bytes <= EX.max_result_bytes)
        return;
    char msg[EM_SIZE_ERROR_MAX];
    size_t output_len = r->output_len;
    char trace[33];
    EM_WARN("result too large: it ends FAILED with its output dropped", EX_F_EXEC(job->ex, r->attempt, trace),
            EM_F_UINT("bytes", bytes),
            EM_F_INT("limit", EX.max_result_bytes), EM_F_UINT("output_bytes", output_len),
            EM_F_INT("handler_status", r->status));
    free(r->owned_output);
    r->owned_output = NULL;
    r->output = NULL;
    r->output_len = 0;
    r->status = EXECMESH__V1__STATUS__FAILED;
    r->attempt_status = EXECMESH__V1__STATUS__FAILED;
    r->too_large = 1;
    em_metric_add(EX.m_too_large, 1);
    char *was = r->error; /* the attempt's own error, quoted */
    r->error = NULL;
    for (int pass = 0; pass < 2; pass++) {
        snprintf(msg, sizeof(msg),
                 "result too large: %zu bytes, limit %" PRId64 " (publish.max_result_bytes); its output of %zu bytes "
                 "was dropped%s%s%s",
                 bytes, EX.max_result_bytes, output_len, r->bare ? ", and its headers and history" : "",
                 was ? "; the attempt's error: " : "", was ? was : "");
        em_utf8_trim(msg);
        free(r->error);
        r->error = error_copy(msg);
        if (r->bare || (int64_t)record_bytes(job, r) <= EX.max_result_bytes)
            break;
        r->bare = 1;
    }
    free(was);
}

void job_finish(ex_job_t *job, Execmesh__V1__Status status, const uint8_t *output, size_t len, int owned,
                const char *error, int exit_code) {
    ex_batch_t *b = job->batch;
    ex_result_t *r = ex_batch_result(b, job->idx);
    atomic_store(&job->done, 1);
    r->status = (int)status;
    r->attempt_status = (int)status;
    r->output = output;
    r->output_len = output ? len : 0;
    if (owned)
        r->owned_output = (char *)(uintptr_t)output;
    if (error)
        r->error = error_copy(error); /* NULL when out of memory: the status still says what happened */
    r->exit_code = exit_code;
    r->started_unix_ms = job->started_unix_ms ? job->started_unix_ms : em_now_unix_ms();
    r->finished_unix_ms = em_now_unix_ms();
    check_size(job, r);
    decide(job, r);
    em_journal_write(EX.journal, "E %.*s %u %d", (int)job->ex->id.n, (const char *)job->ex->id.p, r->attempt,
                     r->status);
    const ex_exec_t *ex = job->ex;
    em_result_counts_add(EX.results, ex->handler.p, ex->handler.n, r->status, r->final);
    if (job->started_unix_ms) { /* it ran: its handler's run time */
        int64_t ms = r->finished_unix_ms - r->started_unix_ms;
        em_metric_observe(job->handler ? job->handler->m_run : EX.m_run_other, (ms > 0 ? ms : 0) * 1000);
        em_metric_add(EX.m_running, -1);
    }
    char trace[33];
    EM_DEBUG("execution finished", EX_F_EXEC(ex, r->attempt, trace), EM_F_STRN("handler", ex->handler.p, ex->handler.n),
             EM_F_STR("status", em_status_label(r->status)), EM_F_BOOL("final", r->final),
             EM_F_INT("run_ms", job->started_unix_ms ? r->finished_unix_ms - r->started_unix_ms : 0));
    if (r->status != EXECMESH__V1__STATUS__SUCCEEDED)
        em_metric_add(EX.m_failed, 1);

    if (job->slot) {
        job->slot = 0;
        ex_handler_put(job->handler);
    }
    ex_batch_job_done(b, job->idx); /* b and job may be gone after this */
}
