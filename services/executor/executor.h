/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The executor's parts. One Execute call is a batch (batch.c): on its
 * arrival each execution is taken, when its handler has a free slot and the
 * executor has room in executor.max_inflight, or refused (named in the
 * answer's first message; it waits in Kafka, not here). Each taken one is
 * read in place from the request and becomes a job that starts at once,
 * run by its handler (jobs.c: the deadline, the outcome and the retry
 * decision), and results are published to a sink and streamed back to the
 * caller in groups as they finish, so a long execution does not hold back
 * the results of the short ones beside it.
 *
 *   main.c          settings, metrics, serve and drain
 *   handlers.c      the handler table: settings, lookup, concurrency slots
 *   batch.c         Execute: admit, read, accept, start, publish groups, answer
 *   request.c       reading an ExecuteRequest off the wire (pure; fuzzed)
 *   alone.c         a call whose execution runs with nothing beside it
 *   jobs.c          deadlines, job_finish, retry policy
 *   cancel.c        Executor.Cancel
 *   builtins.c      the in-process handlers
 *   exec_handler.c  the exec handlers (child processes)
 *
 * A job ends with job_finish, from any thread, exactly once.
 */
#ifndef EXECUTOR_H
#define EXECUTOR_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "em_config.h"
#include "em_journal.h"
#include "em_metrics.h"
#include "em_sizes.h"
#include "em_rpc_channel.h"
#include "em_rpc_server.h"
#include "em_service.h"
#include "em_timer.h"
#include "execmesh/v1/execmesh.pb-c.h"

#define EX_MAX_HANDLERS 32

typedef struct ex_batch ex_batch_t;
typedef struct ex_handler ex_handler_t;
struct ex_job;
typedef struct ex_exec_conf ex_exec_conf_t;

/* Bytes inside the request (valid until the batch is freed). */
typedef struct ex_span {
    const uint8_t *p;
    size_t n;
} ex_span_t;

/* An execution as it came in, read off the wire without copying. */
typedef struct ex_exec {
    ex_span_t id, handler, payload;
    ex_span_t trace_id;  /* the 32 hex digits of its traceparent header; empty when it has none */
    ex_span_t *headers; /* each map entry's encoded bytes, copied to the result as they are */
    size_t nheaders;
    ex_span_t *history; /* the earlier attempts' encoded Attempt messages */
    size_t nhistory;
    uint32_t timeout_ms, attempt, max_attempts;
    int64_t submitted_unix_ms, deadline_unix_ms;
    int64_t dispatched_unix_ms; /* when the scheduler sent this attempt (0: not said) */
    size_t wire_len; /* its encoded size as received: a retry's record is this plus one history entry */
} ex_exec_t;

/* How a running job is stopped by a cancel (cancel.c). A handler that runs
 * on after its run function returned arms one; a cancel that takes it
 * calls fn(job, key) once, after the cancel's locks are released. Either
 * fn finishes the job CANCELLED, and then the handler must not (a sleep:
 * its timer finds the stop taken), or fn only uses key to make the job end
 * through the handler (an exec child killed by key: exec_done finishes it,
 * maybe before fn ran, so fn must not touch job). */
typedef struct ex_stop {
    void (*fn)(struct ex_job *job, uint64_t key);
    uint64_t key;
    int taken; /* under the stop lock: a cancel took it */
} ex_stop_t;

typedef struct ex_job {
    ex_batch_t *batch;
    size_t idx;
    const ex_exec_t *ex;
    ex_handler_t *handler;
    int64_t timeout_ms;   /* the execution's timeout (its own, else the handler's default) */
    int64_t deadline_ms;  /* monotonic: when it must have ended (its batch's start + timeout, or the caller's deadline) */
    const char *deadline_why; /* what set deadline_ms, for messages */
    int64_t arrived_ms;   /* monotonic: when its batch started here (an alone call: was accepted) */
    int64_t run_ms;       /* the time left when it started: what a handler may run */
    int64_t started_unix_ms;
    int slot;             /* it holds a slot of its handler (given back by job_finish) */
    atomic_int done;      /* job_finish ran */
    atomic_int cancel;    /* a cancel came: it does not start, or stops */
    ex_stop_t *stop;      /* under the stop lock: how to stop it while it runs, or NULL */
} ex_job_t;

typedef void (*ex_run_fn)(ex_job_t *job);

/* When a FAILED or TIMED_OUT execution runs again: up to max_attempts
 * attempts in all, the n-th retry after a random wait in
 * [0, min(max_ms, initial_ms * factor^(n-1))] ("full jitter"). */
typedef struct ex_retry_policy {
    uint32_t max_attempts;
    int64_t initial_ms, max_ms;
    int64_t factor;
    int no_retry_codes[32]; /* exit codes that end the execution at once */
    size_t n_no_retry;
} ex_retry_policy_t;

struct ex_handler {
    const char *name;
    ex_run_fn run;
    int async;        /* finishes later, from another thread: counts against concurrency */
    int concurrency;  /* async jobs holding a slot at once (beyond it executions are refused) */
    int64_t default_timeout_ms;
    ex_retry_policy_t retry;
    void *ctx; /* the handler's own settings (an exec handler's ex_exec_conf_t), or NULL */
    pthread_mutex_t lock;
    int running;      /* slots held: jobs taken and not yet finished */
    em_metric_t *m_run; /* execmesh_executor_run_seconds{handler=name} */
};

/* One execution's outcome, encoded into the response. */
typedef struct ex_result {
    int status;         /* what the result record says (EXHAUSTED when retries are used up) */
    int attempt_status; /* what this attempt did (its history entry) */
    uint32_t attempt;
    int32_t exit_code;
    int final;          /* no attempt follows */
    uint32_t retry_delay_ms;
    const uint8_t *output;
    size_t output_len;
    char *owned_output; /* output memory to free, or NULL */
    char *error;        /* this attempt's error (malloc'd, valid UTF-8), or NULL */
    char *final_error;  /* the record's error when it differs (EXHAUSTED), or NULL */
    int64_t started_unix_ms, finished_unix_ms;
    int too_large;      /* it ended FAILED because it would have exceeded publish.max_result_bytes */
    int bare;           /* too large even without its output: headers and history left out too */
} ex_result_t;

/* The executor: one per process. */
typedef struct executor {
    em_service_t svc;
    em_rpc_channel_t *sinks;
    em_rpc_method_ref_t *m_publish;
    ex_handler_t handlers[EX_MAX_HANDLERS];
    int nhandlers;
    char handler_list[512];
    int max_inflight;
    int64_t publish_timeout_ms;
    int64_t publish_backoff_ms;
    int64_t flush_ms;
    int64_t max_result_bytes; /* publish.max_result_bytes: a result's Kafka record, key included */
    int64_t group_max_bytes;  /* publish.group_max_bytes: one Publish / one Execute answer message */
    atomic_int inflight;
    atomic_int batches;
    em_journal_t *journal;
    size_t replica_len;
    em_metric_t *m_in, *m_out, *m_failed, *m_inflight, *m_busy, *m_publish_failed, *m_retries, *m_exhausted;
    em_metric_t *m_refused_busy, *m_refused_inflight; /* executions refused one by one, by the limit met */
    em_metric_t *m_expired, *m_too_large, *m_history_full, *m_group_splits, *m_alone;
    em_metric_t *m_running, *m_publish_seconds;
    struct em_result_counts *results;  /* results by handler and status */
    em_metric_t *m_run_other;          /* run time of executions whose handler is not configured */
} executor_t;

extern executor_t EX;

/* Process-wide context the builtins need. */
typedef struct ex_env {
    em_timers_t *timers;
    volatile int abandon; /* drain deadline passed: finish jobs without publishing */
} ex_env_t;

extern ex_env_t ex_env;

/* batch.c */
/* Executor.Execute, on the loop thread. */
void ex_on_execute(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len);
/* A job of b finished (its result is in b's results). Any thread. */
void ex_batch_job_done(ex_batch_t *b, size_t idx);
ex_result_t *ex_batch_result(ex_batch_t *b, size_t idx);
const ex_exec_t *ex_batch_exec(const ex_batch_t *b, size_t idx);
/* Its trace id into buf (33 bytes): its traceparent's, else derived from its id. */
const char *ex_trace_id(const ex_exec_t *ex, char *buf);

/* The log fields that name an execution (every line about one carries
 * them): its id, attempt and trace id (its traceparent's, else derived from
 * its id into buf, 33 bytes). */
#define EX_F_EXEC(ex, attempt, buf)                                                             \
    EM_F_STRN("id", (ex)->id.p, (ex)->id.n), EM_F_UINT("attempt", (attempt) ? (attempt) : 1), \
        EM_F_STR("trace_id", ex_trace_id((ex), (buf)))
/* Accepts b's call (the "execmesh-accepted" header) and starts its jobs. */
void ex_batch_begin(ex_batch_t *b);
/* Ends b's call unaccepted with code and frees b, none of its jobs started. */
void ex_batch_drop(ex_batch_t *b, grpc_status_code code, const char *why);
em_rpc_call_t *ex_batch_call(ex_batch_t *b);

/* request.c: an ExecuteRequest read off the wire (pure: no executor state;
 * also run by the fuzz target tests/fuzz/fuzz_execute.c) */
typedef struct ex_request_info {
    size_t n; /* executions */
    int alone, report_finished;
} ex_request_info_t;
/* Reads the request's top level without allocating: 0, or -1 with the
 * reason the call is refused (INVALID_ARGUMENT) in msg: it cannot be
 * decoded, carries no execution, or asks to run several alone. */
int ex_request_scan(const uint8_t *req, size_t len, ex_request_info_t *ri, char *msg, size_t msg_size);
/* Reads one Execution's scalar fields into ex (zeroed by the caller; views
 * into buf; the last value of a field wins) and counts its headers and
 * history entries into ex->nheaders and ex->nhistory, which
 * ex_execution_read_lists then collects. EM_EINVAL when malformed. */
em_err_t ex_execution_read(const uint8_t *buf, size_t len, ex_exec_t *ex);
/* Keeps the headers and history entries of an execution ex_execution_read
 * accepted, as their encoded bytes, in arrays from a. EM_ENOMEM. */
struct em_arena;
em_err_t ex_execution_read_lists(struct em_arena *a, const uint8_t *buf, size_t len, ex_exec_t *ex);

/* alone.c: a call that runs its execution with nothing beside it */
/* Takes room in executor.max_inflight for a call of n executions (under the
 * alone lock): an alone call (this one runs alone) all or none, another as
 * many as fit, up to n. Returns how many were taken (0: none fit;
 * *inflight_before says how full it was), or -1 while an execution runs
 * alone here (or waits to). The caller gives back what it does not use. */
long ex_alone_admit(size_t n, int alone, int *inflight_before);
/* The alone call admitted could not be read: take work again. */
void ex_alone_cancel_reservation(void);
/* Holds b (admitted alone) until nothing else runs, then begins it. */
void ex_alone_hold(ex_batch_t *b);
/* b is freed: if it ran alone, work is taken again. */
void ex_alone_freed(ex_batch_t *b);
/* The bytes of result idx encoded as it stands now (the Result message,
 * without its Kafka key). Any thread, before ex_batch_job_done. */
size_t ex_batch_result_bytes(const ex_batch_t *b, size_t idx);

/* Calls fn(job, ctx) for each job of every batch held here whose
 * execution id is id, with the batches' lock held: no batch is freed
 * meanwhile (fn must not finish a job: it collects what to do after). */
void ex_batches_find(const uint8_t *id, size_t len, void (*fn)(ex_job_t *job, void *ctx), void *ctx);

/* cancel.c */
/* Executor.Cancel, on the loop thread. */
void ex_on_cancel(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len);
/* Arms st for job: 0, or 1 when a cancel already came (then the handler
 * does not run the job and finishes it CANCELLED itself). */
int ex_stop_arm(ex_job_t *job, ex_stop_t *st);
/* Disarms st: 1 when the handler still finishes the job, 0 when a cancel
 * took it (job is not touched then: it may be gone). */
int ex_stop_disarm(ex_job_t *job, ex_stop_t *st);
/* Was st taken by a cancel? (st stays the caller's.) */
int ex_stop_taken(const ex_stop_t *st);

/* handlers.c */
/* Refuses (-1, reason on stderr naming file, line and key) bad handler
 * settings: an unknown builtin, a name offered twice, too many handlers,
 * builtin.NAME.* of a builtin not offered, bad exec handlers or retry
 * policies. */
int ex_handlers_check(const em_config_t *cfg, const char *program);
/* Builds EX.handlers (and starts the child supervisor when exec handlers
 * are offered): 0, or -1 after logging why. */
int ex_handlers_setup(const em_config_t *cfg, const char *program);
/* Frees the handlers' settings; after every job ended. */
void ex_handlers_cleanup(void);
/* The handler named name[0..n), or NULL. */
ex_handler_t *ex_handler_find(const uint8_t *name, size_t n);
/* Takes a slot of h: 1, or 0 when h holds `concurrency` slots already
 * (force: taken anyway). *running: the slots h holds now. Any thread. */
int ex_handler_take(ex_handler_t *h, int force, int *running);
/* Gives back a slot of h. Any thread. */
void ex_handler_put(ex_handler_t *h);

/* jobs.c */
/* Starts job now (its slot, if its handler counts them, is taken already).
 * Cancelled or past its deadline, it ends CANCELLED or TIMED_OUT without
 * running. */
void ex_job_start(ex_job_t *job);
/* Ends job with its outcome and gives back its slot. output (may be NULL) is borrowed when owned is
 * 0, or taken (free'd with the batch) when owned is 1. error may be NULL;
 * it is copied as valid UTF-8. */
void job_finish(ex_job_t *job, Execmesh__V1__Status status, const uint8_t *output, size_t len, int owned,
                const char *error, int exit_code);
/* Reads a handler's retry policy: the KEY_PREFIX.* keys (e.g. "exec.NAME."
 * or "builtin.NAME."), where 0 or absent means the handlers.* default. */
void ex_retry_policy_read(const em_config_t *cfg, const char *prefix, ex_retry_policy_t *p);
/* Refuses (-1, naming file, line and key) a bad no_retry_exit_codes list. */
int ex_retry_policy_check(const em_config_t *cfg, const char *prefix, const char *program);

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
em_err_t ex_exec_start(const em_config_t *cfg, const char *replica, em_metrics_t *metrics, char *errstr,
                       size_t errstr_size);
/* Kills and reaps every child still running; their jobs finish FAILED as
 * abandoned, on this thread's watch (bounded). Later runs fail at once. Call
 * after the gRPC server is shut down. */
void ex_exec_stop(void);
/* The run function of every exec handler (an async handler). */
void ex_exec_run(ex_job_t *job);

#endif
