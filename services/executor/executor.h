/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The executor's parts: a job is one execution of an Execute batch; a
 * handler runs jobs (builtins in-process, exec handlers as child processes;
 * each handler has a concurrency limit, and jobs beyond it wait in the
 * handler's queue); a job ends with job_finish, from any thread, exactly once.
 */
#ifndef EXECUTOR_H
#define EXECUTOR_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "em_config.h"
#include "em_metrics.h"
#include "em_timer.h"
#include "execmesh/v1/execmesh.pb-c.h"

typedef struct ex_batch ex_batch_t;
typedef struct ex_handler ex_handler_t;
typedef struct ex_exec_conf ex_exec_conf_t;

/* Bytes inside the request (valid until the batch is answered). */
typedef struct ex_span {
    const uint8_t *p;
    size_t n;
} ex_span_t;

/* An execution as it came in, read off the wire without copying. */
typedef struct ex_exec {
    ex_span_t id, handler, payload;
    ex_span_t *headers; /* each map entry's encoded bytes, copied to the result as they are */
    size_t nheaders;
    uint32_t timeout_ms, attempt;
    int64_t submitted_unix_ms;
} ex_exec_t;

typedef struct ex_job {
    ex_batch_t *batch;
    size_t idx;
    const ex_exec_t *ex;
    ex_handler_t *handler;
    int64_t timeout_ms;
    int64_t started_unix_ms;
    struct ex_job *next; /* the handler's wait queue */
} ex_job_t;

typedef void (*ex_run_fn)(ex_job_t *job);

struct ex_handler {
    const char *name;
    ex_run_fn run;
    int async;        /* finishes later, from another thread: counts against concurrency */
    int concurrency;  /* async jobs running at once */
    int64_t default_timeout_ms;
    void *ctx; /* the handler's own settings (an exec handler's ex_exec_conf_t), or NULL */
    pthread_mutex_t lock;
    int running;
    ex_job_t *wait_head, *wait_tail;
};

/* Process-wide context the builtins need. */
typedef struct ex_env {
    em_timers_t *timers;
    volatile int abandon; /* drain deadline passed: finish jobs without publishing */
} ex_env_t;

extern ex_env_t ex_env;

/* Ends job with its outcome. output (may be NULL) is borrowed when owned is
 * 0, or taken (free'd with the batch) when owned is 1. error may be NULL. */
void job_finish(ex_job_t *job, Execmesh__V1__Status status, const uint8_t *output, size_t len, int owned,
                const char *error, int exit_code);

/* The builtin named name, or NULL. */
ex_run_fn builtin_lookup(const char *name, int *async);
/* "echo, fail, sha256, sleep" */
const char *builtin_names(void);

/* Exec handlers (exec_handler.c). */
/* Refuses (-1, reason on stderr naming file, line and key) a bad name in
 * handlers.exec, exec.NAME.* keys of a NAME not in handlers.exec, or an exec
 * handler whose argv[0] is not an absolute path to an executable file or
 * whose env entries are not NAME=VALUE. */
int ex_exec_check(const em_config_t *cfg, const char *program);
/* The settings of exec handler name (which ex_exec_check accepted, when the
 * config was loaded), with its metrics registered; NULL after printing why on
 * stderr (out of memory). */
ex_exec_conf_t *ex_exec_conf_new(const em_config_t *cfg, const char *name, em_metrics_t *metrics,
                                 const char *program);
void ex_exec_conf_free(ex_exec_conf_t *conf);
/* Starts the child supervisor (once; before the first ex_exec_run). */
em_err_t ex_exec_start(char *errstr, size_t errstr_size);
/* Kills and reaps every child still running; their jobs finish FAILED as
 * abandoned, on this thread's watch (bounded). Later runs fail at once. Call
 * after the gRPC server is shut down. */
void ex_exec_stop(void);
/* The run function of every exec handler (an async handler). */
void ex_exec_run(ex_job_t *job);

#endif
