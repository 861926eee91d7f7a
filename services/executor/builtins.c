/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The in-process handlers, for tests and benchmarks:
 *   echo    output = payload
 *   fail    FAILED, exit code 1, error names the payload
 *   sha256  output = hex SHA-256 of the payload
 *   sleep   payload = milliseconds as decimal text; output = payload;
 *           TIMED_OUT when the execution's timeout comes first
 */
#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_util.h"
#include "executor.h"

static void run_echo(ex_job_t *job) {
    job_finish(job, EXECMESH__V1__STATUS__SUCCEEDED, job->ex->payload.p, job->ex->payload.n, 0, NULL, 0);
}

static void run_fail(ex_job_t *job) {
    char msg[300];
    int n = (int)(job->ex->payload.n > 200 ? 200 : job->ex->payload.n);
    snprintf(msg, sizeof(msg), "fail handler: %.*s", n, (const char *)job->ex->payload.p);
    job_finish(job, EXECMESH__V1__STATUS__FAILED, NULL, 0, 0, msg, 1); /* job_finish makes it valid UTF-8 */
}

static void run_sha256(ex_job_t *job) {
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(job->ex->payload.p, job->ex->payload.n, md, &mdlen, EVP_sha256(), NULL)) {
        job_finish(job, EXECMESH__V1__STATUS__FAILED, NULL, 0, 0, "sha256: digest failed", 1);
        return;
    }
    uint8_t *out = malloc(2 * (size_t)mdlen);
    if (!out) {
        job_finish(job, EXECMESH__V1__STATUS__FAILED, NULL, 0, 0, "sha256: out of memory", 1);
        return;
    }
    for (unsigned i = 0; i < mdlen; i++) {
        out[2 * i] = (uint8_t)hex[md[i] >> 4];
        out[2 * i + 1] = (uint8_t)hex[md[i] & 15];
    }
    job_finish(job, EXECMESH__V1__STATUS__SUCCEEDED, out, 2 * (size_t)mdlen, 1, NULL, 0);
}

/* A sleep in progress; finished by the timer thread, or sooner by a
 * cancel (then the timer only frees it). */
typedef struct sleep_job {
    ex_job_t *job;
    int timed_out;
    int64_t ms;
    ex_stop_t stop;
} sleep_job_t;

static void sleep_stop(ex_job_t *job, uint64_t key) {
    (void)key;
    job_finish(job, EXECMESH__V1__STATUS__CANCELLED, NULL, 0, 0, "cancelled while running (the sleep was cut short)", 0);
}

static void sleep_done(void *arg) {
    sleep_job_t *sj = arg;
    ex_job_t *job = sj->job;
    if (!ex_stop_disarm(job, &sj->stop)) {
        /* a cancel finished it already (job may be gone) */
    } else if (ex_env.abandon) {
        job_finish(job, EXECMESH__V1__STATUS__FAILED, NULL, 0, 0, "abandoned: executor drain deadline passed", 1);
    } else if (sj->timed_out) {
        char msg[128];
        snprintf(msg, sizeof(msg), "sleep: timed out after %lld ms (asked for %lld ms)", (long long)job->timeout_ms,
                 (long long)sj->ms);
        job_finish(job, EXECMESH__V1__STATUS__TIMED_OUT, NULL, 0, 0, msg, 0);
    } else {
        job_finish(job, EXECMESH__V1__STATUS__SUCCEEDED, job->ex->payload.p, job->ex->payload.n, 0, NULL, 0);
    }
    free(sj);
}

static void run_sleep(ex_job_t *job) {
    char buf[32];
    size_t n = job->ex->payload.n;
    if (n == 0 || n >= sizeof(buf)) {
        job_finish(job, EXECMESH__V1__STATUS__FAILED, NULL, 0, 0,
                   "sleep: payload must be a number of milliseconds (e.g. \"250\")", 1);
        return;
    }
    memcpy(buf, job->ex->payload.p, n);
    buf[n] = '\0';
    char *end;
    long long ms = strtoll(buf, &end, 10);
    while (*end && isspace((unsigned char)*end))
        end++;
    if (end == buf || *end || ms < 0) {
        job_finish(job, EXECMESH__V1__STATUS__FAILED, NULL, 0, 0,
                   "sleep: payload must be a number of milliseconds (e.g. \"250\")", 1);
        return;
    }
    sleep_job_t *sj = calloc(1, sizeof(*sj));
    if (!sj) {
        job_finish(job, EXECMESH__V1__STATUS__FAILED, NULL, 0, 0, "sleep: out of memory", 1);
        return;
    }
    sj->job = job;
    sj->ms = ms;
    sj->timed_out = ms > job->run_ms; /* run_ms: what is left of its timeout when it started */
    sj->stop.fn = sleep_stop;
    int64_t wait_ms = sj->timed_out ? job->run_ms : ms;
    if (ex_stop_arm(job, &sj->stop)) {
        free(sj);
        job_finish(job, EXECMESH__V1__STATUS__CANCELLED, NULL, 0, 0, "cancelled before it started", 0);
        return;
    }
    /* from here a cancel may finish job at any moment: only sj is ours */
    if (em_timer_after(ex_env.timers, wait_ms, sleep_done, sj) != EM_OK) {
        int mine = ex_stop_disarm(job, &sj->stop);
        free(sj);
        if (mine)
            job_finish(job, EXECMESH__V1__STATUS__FAILED, NULL, 0, 0, "sleep: cannot arm a timer", 1);
    }
}

static const struct {
    const char *name;
    ex_run_fn run;
    int async;
} builtins[] = {
    {"echo", run_echo, 0},
    {"fail", run_fail, 0},
    {"sha256", run_sha256, 0},
    {"sleep", run_sleep, 1},
};

ex_run_fn builtin_lookup(const char *name, int *async) {
    for (size_t i = 0; i < EM_ARRAY_LEN(builtins); i++)
        if (strcmp(builtins[i].name, name) == 0) {
            *async = builtins[i].async;
            return builtins[i].run;
        }
    return NULL;
}

const char *builtin_names(void) { return "echo, fail, sha256, sleep"; }
