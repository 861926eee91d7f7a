/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmesh-executor: runs configured handlers. Serves Executor.Execute: a
 * batch of executions is run (each by its handler, within the handler's
 * concurrency and the executor's in-flight bound), the batch's results are
 * published to a result sink, and only after the sink acknowledged them is
 * the call answered, carrying the results. Never talks to Kafka, so it stays
 * SERVING through a broker outage.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_arena.h"
#include "em_journal.h"
#include "em_log.h"
#include "em_pbwire.h"
#include "em_metrics.h"
#include "em_rpc_channel.h"
#include "em_rpc_server.h"
#include "em_service.h"
#include "em_util.h"
#include "execmesh/v1/internal.pb-c.h"
#include "executor.h"

#define EX_MAX_HANDLERS 32

static const em_setting_t executor_settings[] = {
    EM_SERVICE_SETTINGS("127.0.0.1:7200", "127.0.0.1:9200"),
    {"sinks.target", EM_CFG_STR, "ipv4:127.0.0.1:7300", 1, 4095,
     "gRPC target of the result sinks: ipv4:H:P,H:P... or dns:///name:port (round_robin over all)."},
    {"executor.max_inflight", EM_CFG_INT, "4096", 1, 1000000,
     "Executions accepted and not yet answered; a batch beyond it gets RESOURCE_EXHAUSTED."},
    {"handlers.builtin", EM_CFG_STRLIST, "echo,sleep,fail,sha256", 0, 32,
     "Builtin handlers to offer: any of echo, fail, sha256, sleep."},
    {"handlers.concurrency", EM_CFG_INT, "8", 1, 100000,
     "Per handler: executions running at once (for handlers that wait, like sleep); more wait in the executor."},
    {"handlers.default_timeout_ms", EM_CFG_INT, "30000", 1, 86400000,
     "Timeout of an execution that sets none (timeout_ms = 0)."},
    {"handlers.exec", EM_CFG_STRLIST, "", 0, 32,
     "Exec handlers to offer, by name; each is configured by the exec.NAME.* keys below (exec.NAME.argv is required)."},
    {"exec.*.argv", EM_CFG_STRLIST, "", 0, 256,
     "Exec handler NAME: the command, an absolute path to an executable file, then its arguments. "
     "It gets the payload on stdin; its stdout is the output; exit 0 is SUCCEEDED, another exit or a signal FAILED."},
    {"exec.*.env", EM_CFG_STRLIST, "", 0, 256,
     "Exec handler NAME: the child's whole environment as NAME=VALUE; empty: PATH=/usr/local/bin:/usr/bin:/bin only."},
    {"exec.*.concurrency", EM_CFG_INT, "0", 0, 100000,
     "Exec handler NAME: children running at once (more executions wait in the executor); 0: handlers.concurrency."},
    {"exec.*.default_timeout_ms", EM_CFG_INT, "0", 0, 86400000,
     "Exec handler NAME: timeout of an execution that sets none; 0: handlers.default_timeout_ms. "
     "Past the timeout: TIMED_OUT, SIGTERM to the child's process group, SIGKILL after kill_grace_ms."},
    {"exec.*.kill_grace_ms", EM_CFG_INT, "2000", 0, 600000,
     "Exec handler NAME: wait between SIGTERM and SIGKILL to the child's process group on a timeout."},
    {"exec.*.max_output_bytes", EM_CFG_INT, "1048576", 0, 16777216,
     "Exec handler NAME: stdout beyond this many bytes FAILS the execution (the child is killed; output is never truncated)."},
    {"exec.*.cpu_seconds", EM_CFG_INT, "0", 0, 604800,
     "Exec handler NAME: RLIMIT_CPU of the child (SIGXCPU, then SIGKILL a second later); 0: the executor's own."},
    {"exec.*.memory_mb", EM_CFG_INT, "0", 0, 4194304,
     "Exec handler NAME: RLIMIT_AS of the child in MiB (allocations beyond it fail); 0: the executor's own."},
    {"exec.*.open_files", EM_CFG_INT, "0", 0, 1048576,
     "Exec handler NAME: RLIMIT_NOFILE of the child; 0: the executor's own."},
    {"exec.*.processes", EM_CFG_INT, "0", 0, 4194304,
     "Exec handler NAME: RLIMIT_NPROC of the child; it counts every process of the executor's user, and root ignores it; "
     "0: the executor's own."},
    {"executor.journal", EM_CFG_STR, "", 0, 4095,
     "If set, a line per execution started (S), finished (E), answered after its result was stored (D) or answered with an error (X) is appended here (for fault tests)."},
    {"publish.timeout_ms", EM_CFG_INT, "10000", 100, 600000, "Deadline of one Publish call to a sink."},
    {"publish.retry_backoff_ms", EM_CFG_INT, "50", 1, 60000,
     "Wait before publishing a batch's results again after a failed Publish."},
};

static int validate_handlers(const em_config_t *cfg);

static const em_service_desc_t executor_desc = {
    .name = "executor",
    .program = "execmesh-executor",
    .summary = "runs execution handlers and hands each result to a sink (Executor.Execute)",
    .settings = executor_settings,
    .nsettings = EM_ARRAY_LEN(executor_settings),
    .validate = validate_handlers,
};

ex_env_t ex_env;

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
    atomic_int inflight;
    atomic_int batches;
    em_journal_t *journal;
    size_t replica_len;
    em_metric_t *m_in, *m_out, *m_failed, *m_inflight, *m_busy, *m_publish_failed;
    em_metric_t *m_status[6];
} executor_t;

static executor_t X;

/* One Execute call: its executions, their results, and the publish of them. */
/* One execution's outcome, encoded into the response when the batch is done. */
typedef struct ex_result {
    int status;
    uint32_t attempt;
    int32_t exit_code;
    const uint8_t *output;
    size_t output_len;
    char *owned_output; /* output memory to free, or NULL */
    char *error;        /* malloc'd, or NULL */
    int64_t started_unix_ms, finished_unix_ms;
} ex_result_t;

struct ex_batch {
    em_arena_t *arena; /* the batch, the views of its request and its bookkeeping */
    em_rpc_call_t *call;
    size_t n;
    ex_exec_t *execs;
    ex_job_t *jobs;
    ex_result_t *res;
    int prev_attempts;
    atomic_size_t pending;
    grpc_slice packed;
    int publish_tries;
};

static void batch_free(ex_batch_t *b) {
    for (size_t i = 0; i < b->n; i++) {
        free(b->res[i].owned_output);
        free(b->res[i].error);
    }
    grpc_slice_unref(b->packed);
    atomic_fetch_sub(&X.inflight, (int)b->n);
    em_metric_add(X.m_inflight, -(int64_t)b->n);
    atomic_fetch_sub(&X.batches, 1);
    em_arena_destroy(b->arena); /* the request, the results' arrays and b itself */
}

static void publish(ex_batch_t *b);

/* Journal: D for each execution answered OK (its result is durable), X for
 * each answered with an error (the scheduler runs it again). */
static void batch_journal(ex_batch_t *b, char tag) {
    for (size_t i = 0; X.journal && i < b->n; i++)
        em_journal_write(X.journal, "%c %.*s %u", tag, (int)b->execs[i].id.n, (const char *)b->execs[i].id.p,
                         b->res[i].attempt);
}

/* Answers the Execute call with an error and frees the batch. */
static void batch_fail(ex_batch_t *b, const char *msg) {
    batch_journal(b, 'X');
    em_rpc_call_fail(b->call, GRPC_STATUS_UNAVAILABLE, msg);
    batch_free(b);
}

static void publish_retry(void *arg) {
    ex_batch_t *b = arg;
    if (ex_env.abandon) {
        batch_fail(b, "executor draining: results not published");
        return;
    }
    publish(b);
}

/* Runs on the loop thread. */
static void on_published(void *arg, grpc_status_code code, const char *details, const uint8_t *resp, size_t len) {
    ex_batch_t *b = arg;
    if (code == GRPC_STATUS_OK) {
        em_metric_add(X.m_out, (int64_t)b->n);
        batch_journal(b, 'D');
        em_rpc_call_reply_slice(b->call, grpc_slice_ref(b->packed));
        batch_free(b);
        return;
    }
    em_metric_add(X.m_publish_failed, 1);
    int64_t left = em_rpc_call_remaining_ms(b->call);
    EM_WARN("publish to sink failed", EM_F_STR("code", em_rpc_status_name(code)), EM_F_STR("details", details),
            EM_F_INT("results", b->n), EM_F_INT("try", b->publish_tries), EM_F_INT("call_ms_left", left));
    if (left > 2 * X.publish_backoff_ms + 100 && !ex_env.abandon && !em_rpc_call_cancelled(b->call) &&
        em_timer_after(ex_env.timers, X.publish_backoff_ms, publish_retry, b) == EM_OK)
        return;
    char msg[512];
    snprintf(msg, sizeof(msg), "result sink: %s: %s", em_rpc_status_name(code), details);
    batch_fail(b, msg);
}

static void publish(ex_batch_t *b) {
    int64_t timeout = X.publish_timeout_ms;
    int64_t left = em_rpc_call_remaining_ms(b->call);
    if (left - 50 < timeout)
        timeout = left - 50 > 100 ? left - 50 : 100;
    b->publish_tries++;
    /* PublishRequest and ExecuteResponse are the same wire message
     * (repeated Result results = 1): pack once, send it both ways. */
    if (em_rpc_channel_call(X.sinks, X.m_publish, grpc_slice_ref(b->packed), timeout, on_published, b) != EM_OK)
        batch_fail(b, "executor: cannot call a result sink");
}

/* One Result's bytes (proto3: zero and empty fields are left out). */
static size_t result_size(const ex_batch_t *b, size_t i) {
    const ex_exec_t *ex = &b->execs[i];
    const ex_result_t *r = &b->res[i];
    size_t n = 0;
    if (ex->id.n)
        n += em_pb_len_field_size(1, ex->id.n);
    n += em_pb_varint_field_size(2, r->attempt);
    if (r->status)
        n += em_pb_varint_field_size(3, (uint64_t)r->status);
    if (r->output_len)
        n += em_pb_len_field_size(4, r->output_len);
    if (r->error)
        n += em_pb_len_field_size(5, strlen(r->error));
    if (r->exit_code)
        n += em_pb_varint_field_size(6, (uint64_t)(int64_t)r->exit_code);
    n += em_pb_len_field_size(7, X.replica_len);
    if (ex->submitted_unix_ms)
        n += em_pb_varint_field_size(8, (uint64_t)ex->submitted_unix_ms);
    n += em_pb_varint_field_size(9, (uint64_t)r->started_unix_ms) + em_pb_varint_field_size(10, (uint64_t)r->finished_unix_ms);
    for (size_t k = 0; k < ex->nheaders; k++)
        n += em_pb_len_field_size(11, ex->headers[k].n);
    return n;
}

static uint8_t *result_write(uint8_t *o, const ex_batch_t *b, size_t i) {
    const ex_exec_t *ex = &b->execs[i];
    const ex_result_t *r = &b->res[i];
    if (ex->id.n)
        o = em_pb_write_len_field(o, 1, ex->id.p, ex->id.n);
    o = em_pb_write_varint_field(o, 2, r->attempt);
    if (r->status)
        o = em_pb_write_varint_field(o, 3, (uint64_t)r->status);
    if (r->output_len)
        o = em_pb_write_len_field(o, 4, r->output, r->output_len);
    if (r->error)
        o = em_pb_write_len_field(o, 5, r->error, strlen(r->error));
    if (r->exit_code)
        o = em_pb_write_varint_field(o, 6, (uint64_t)(int64_t)r->exit_code); /* int32: sign-extended */
    o = em_pb_write_len_field(o, 7, X.svc.replica, X.replica_len);
    if (ex->submitted_unix_ms)
        o = em_pb_write_varint_field(o, 8, (uint64_t)ex->submitted_unix_ms);
    o = em_pb_write_varint_field(o, 9, (uint64_t)r->started_unix_ms);
    o = em_pb_write_varint_field(o, 10, (uint64_t)r->finished_unix_ms);
    for (size_t k = 0; k < ex->nheaders; k++) /* the map entries, as they came */
        o = em_pb_write_len_field(o, 11, ex->headers[k].p, ex->headers[k].n);
    return o;
}

/* The batch's results as ExecuteResponse bytes, which are also PublishRequest
 * bytes (both are repeated Result results = 1): written once, sent both ways. */
static grpc_slice pack_results(const ex_batch_t *b) {
    size_t total = 0;
    for (size_t i = 0; i < b->n; i++) {
        size_t rs = result_size(b, i);
        total += em_pb_len_field_size(1, rs);
    }
    grpc_slice s = grpc_slice_malloc(total);
    uint8_t *o = GRPC_SLICE_START_PTR(s);
    for (size_t i = 0; i < b->n; i++) {
        o = em_pb_write_raw_varint(o, (1 << 3) | EM_PB_LEN);
        o = em_pb_write_raw_varint(o, result_size(b, i));
        o = result_write(o, b, i);
    }
    return s;
}

/* All jobs of b finished (on whichever thread finished the last one). */
static void batch_done(ex_batch_t *b) {
    if (ex_env.abandon) {
        batch_fail(b, "executor draining: results not published");
        return;
    }
    b->packed = pack_results(b);
    publish(b);
}

static void handler_start(ex_job_t *job);

void job_finish(ex_job_t *job, Execmesh__V1__Status status, const uint8_t *output, size_t len, int owned,
                const char *error, int exit_code) {
    ex_batch_t *b = job->batch;
    ex_result_t *r = &b->res[job->idx];
    r->status = (int)status;
    r->output = output;
    r->output_len = output ? len : 0;
    if (owned)
        r->owned_output = (char *)(uintptr_t)output;
    if (error)
        r->error = strdup(error); /* NULL when out of memory: the status still says what happened */
    r->exit_code = exit_code;
    em_journal_write(X.journal, "E %.*s %u %d", (int)job->ex->id.n, (const char *)job->ex->id.p, r->attempt,
                     (int)status);
    r->started_unix_ms = job->started_unix_ms ? job->started_unix_ms : em_now_unix_ms();
    r->finished_unix_ms = em_now_unix_ms();
    if ((unsigned)status < EM_ARRAY_LEN(X.m_status))
        em_metric_add(X.m_status[status], 1);
    if (status != EXECMESH__V1__STATUS__SUCCEEDED)
        em_metric_add(X.m_failed, 1);

    /* free the handler slot and start the next waiting job, if any */
    ex_handler_t *h = job->handler;
    if (h && h->async) {
        ex_job_t *next = NULL;
        pthread_mutex_lock(&h->lock);
        if (h->wait_head) {
            next = h->wait_head;
            h->wait_head = next->next;
            if (!h->wait_head)
                h->wait_tail = NULL;
        } else {
            h->running--;
        }
        pthread_mutex_unlock(&h->lock);
        if (next) {
            next->started_unix_ms = em_now_unix_ms();
            next->handler->run(next);
        }
    }
    if (atomic_fetch_sub(&b->pending, 1) == 1)
        batch_done(b);
}

static void handler_start(ex_job_t *job) {
    ex_handler_t *h = job->handler;
    em_journal_write(X.journal, "S %.*s %u", (int)job->ex->id.n, (const char *)job->ex->id.p,
                     job->batch->res[job->idx].attempt);
    if (h->async) {
        pthread_mutex_lock(&h->lock);
        if (h->running >= h->concurrency) {
            job->next = NULL;
            if (h->wait_tail)
                h->wait_tail->next = job;
            else
                h->wait_head = job;
            h->wait_tail = job;
            pthread_mutex_unlock(&h->lock);
            return;
        }
        h->running++;
        pthread_mutex_unlock(&h->lock);
    }
    job->started_unix_ms = em_now_unix_ms();
    h->run(job);
}

static ex_handler_t *handler_find(const uint8_t *name, size_t n) {
    for (int i = 0; i < X.nhandlers; i++)
        if (strlen(X.handlers[i].name) == n && memcmp(X.handlers[i].name, name, n) == 0)
            return &X.handlers[i];
    return NULL;
}

/* Reads one Execution's fields (the last value of a field wins); headers
 * are kept as their encoded entries. EM_EINVAL when malformed. */
static em_err_t read_execution(em_arena_t *a, const uint8_t *buf, size_t len, ex_exec_t *ex) {
    const uint8_t *p = buf, *end = buf + len;
    em_pb_field_t f;
    em_err_t rc;
    size_t nh = 0;
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK) {
        int want_len = f.number >= 1 && f.number <= 4;
        int want_varint = f.number >= 5 && f.number <= 8;
        if ((want_len && f.wire_type != EM_PB_LEN) || (want_varint && f.wire_type != EM_PB_VARINT))
            return EM_EINVAL;
        switch (f.number) {
        case 1: ex->id = (ex_span_t){f.data, f.len}; break;
        case 2: ex->handler = (ex_span_t){f.data, f.len}; break;
        case 3: ex->payload = (ex_span_t){f.data, f.len}; break;
        case 4: nh++; break;
        case 5: ex->timeout_ms = (uint32_t)f.varint; break;
        case 7: ex->attempt = (uint32_t)f.varint; break;
        case 8: ex->submitted_unix_ms = (int64_t)f.varint; break;
        default: break;
        }
    }
    if (rc != EM_ENOTFOUND)
        return EM_EINVAL;
    if (nh == 0) /* the common case: one pass */
        return EM_OK;
    if (!(ex->headers = em_arena_alloc(a, nh * sizeof(*ex->headers), 0)))
        return EM_ENOMEM;
    for (p = buf; em_pb_next(&p, end, &f) == EM_OK;)
        if (f.number == 4)
            ex->headers[ex->nheaders++] = (ex_span_t){f.data, f.len};
    return EM_OK;
}

/* Runs on the loop thread. */
static void on_execute(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len) {
    char msg[1024];
    /* one arena per batch: the decoded request and every array below */
    em_arena_t *arena = em_arena_new(2 * len + 4096);
    if (!arena) {
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "executor: out of memory");
        return;
    }
    /* the executions are read in place: views into the request, which the
     * call keeps alive until it is answered */
    const uint8_t *p = req, *end = req + len;
    em_pb_field_t f;
    em_err_t rc;
    size_t n = 0;
    while ((rc = em_pb_next(&p, end, &f)) == EM_OK)
        n += f.number == 1;
    if (rc != EM_ENOTFOUND) {
        em_arena_destroy(arena);
        em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "ExecuteRequest: cannot decode");
        return;
    }
    if (n == 0) {
        em_arena_destroy(arena);
        em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "executions: empty");
        return;
    }
    ex_batch_t *b = em_arena_alloc(arena, sizeof(*b), 1);
    if (b) {
        b->arena = arena;
        b->execs = em_arena_alloc(arena, n * sizeof(*b->execs), 1);
        b->jobs = em_arena_alloc(arena, n * sizeof(*b->jobs), 1);
        b->res = em_arena_alloc(arena, n * sizeof(*b->res), 1);
    }
    if (!b || !b->execs || !b->jobs || !b->res) {
        em_arena_destroy(arena);
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "executor: out of memory");
        return;
    }
    size_t i = 0;
    p = req;
    while (em_pb_next(&p, end, &f) == EM_OK) {
        if (f.number != 1)
            continue;
        if (f.wire_type != EM_PB_LEN || (rc = read_execution(arena, f.data, f.len, &b->execs[i])) != EM_OK) {
            snprintf(msg, sizeof(msg), "executions[%zu]: %s", i,
                     rc == EM_ENOMEM ? "out of memory" : "not a valid execmesh.v1.Execution");
            em_arena_destroy(arena);
            em_rpc_call_fail(call, rc == EM_ENOMEM ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INVALID_ARGUMENT,
                             msg);
            return;
        }
        i++;
    }
    int now_inflight = atomic_fetch_add(&X.inflight, (int)n);
    if (now_inflight + (int)n > X.max_inflight) {
        atomic_fetch_sub(&X.inflight, (int)n);
        em_arena_destroy(arena);
        snprintf(msg, sizeof(msg), "executor at capacity: %d executions in flight, limit %d, batch of %zu", now_inflight,
                 X.max_inflight, n);
        em_metric_add(X.m_busy, 1);
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return;
    }
    em_metric_add(X.m_in, (int64_t)n);
    em_metric_add(X.m_inflight, (int64_t)n);
    atomic_fetch_add(&X.batches, 1);
    b->call = call;
    b->n = n;
    b->packed = grpc_empty_slice();
    b->prev_attempts = em_rpc_call_previous_attempts(call);
    atomic_init(&b->pending, n);

    /* attempts first: a job may finish (and the batch complete) as soon as it starts */
    for (size_t k = 0; k < n; k++) {
        b->res[k].attempt = (b->execs[k].attempt ? b->execs[k].attempt : 1) + (uint32_t)b->prev_attempts;
        b->jobs[k].batch = b;
        b->jobs[k].idx = k;
        b->jobs[k].ex = &b->execs[k];
    }
    for (size_t k = 0; k < n; k++) {
        ex_job_t *job = &b->jobs[k];
        const ex_exec_t *ex = job->ex;
        ex_handler_t *hd = handler_find(ex->handler.p, ex->handler.n);
        if (!hd) {
            if (!ex->handler.n)
                snprintf(msg, sizeof(msg), "handler is required");
            else
                snprintf(msg, sizeof(msg), "unknown handler '%.*s' (configured: %s)",
                         (int)(ex->handler.n > 100 ? 100 : ex->handler.n), (const char *)ex->handler.p, X.handler_list);
            job_finish(job, EXECMESH__V1__STATUS__REJECTED, NULL, 0, 0, msg, 0);
            continue;
        }
        job->handler = hd;
        job->timeout_ms = ex->timeout_ms ? (int64_t)ex->timeout_ms : hd->default_timeout_ms;
        handler_start(job);
    }
}

/* Adds handler name to the list X.handler_list shows in errors. */
static void list_handler(const char *name) {
    size_t o = strlen(X.handler_list);
    snprintf(X.handler_list + o, sizeof(X.handler_list) - o, "%s%s", o ? ", " : "", name);
}

/* The handlers' settings as start-up needs them, checked when the config is
 * loaded (also by --check-config): known builtins, no name offered twice,
 * every exec handler's argv runnable. Refusals name file, line and key. */
static int validate_handlers(const em_config_t *cfg) {
    size_t nb = em_config_list_len(cfg, "handlers.builtin"), ne = em_config_list_len(cfg, "handlers.exec");
    for (size_t i = 0; i < nb; i++) {
        const char *name = em_config_list_get(cfg, "handlers.builtin", i);
        int async;
        if (!builtin_lookup(name, &async)) {
            fprintf(stderr, "execmesh-executor: config refused: %s: key 'handlers.builtin': unknown builtin '%s' (known: %s)\n",
                    em_config_source(cfg, "handlers.builtin"), name, builtin_names());
            return -1;
        }
    }
    for (size_t i = 0; i < ne; i++) {
        const char *name = em_config_list_get(cfg, "handlers.exec", i);
        int twice = 0;
        for (size_t j = 0; j < nb && !twice; j++)
            twice = strcmp(name, em_config_list_get(cfg, "handlers.builtin", j)) == 0;
        for (size_t j = 0; j < i && !twice; j++)
            twice = strcmp(name, em_config_list_get(cfg, "handlers.exec", j)) == 0;
        if (twice) {
            fprintf(stderr, "execmesh-executor: config refused: %s: key 'handlers.exec': handler '%s' is offered twice (handlers.builtin, handlers.exec)\n",
                    em_config_source(cfg, "handlers.exec"), name);
            return -1;
        }
    }
    size_t distinct = ne;
    for (size_t i = 0; i < nb; i++) {
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(em_config_list_get(cfg, "handlers.builtin", i), em_config_list_get(cfg, "handlers.builtin", j)) == 0;
        distinct += !seen;
    }
    if (distinct > EX_MAX_HANDLERS) {
        fprintf(stderr, "execmesh-executor: config refused: %s: key 'handlers.exec': more than %d handlers\n",
                em_config_source(cfg, "handlers.exec"), EX_MAX_HANDLERS);
        return -1;
    }
    return ex_exec_check(cfg, executor_desc.program);
}

/* Builds the exec handlers (validate_handlers accepted their settings). */
static int setup_exec_handlers(const em_config_t *cfg) {
    size_t n = em_config_list_len(cfg, "handlers.exec");
    for (size_t i = 0; i < n; i++) {
        const char *name = em_config_list_get(cfg, "handlers.exec", i);
        ex_exec_conf_t *conf = ex_exec_conf_new(cfg, name, X.svc.metrics, executor_desc.program);
        if (!conf)
            return -1;
        char key[128];
        ex_handler_t *h = &X.handlers[X.nhandlers++];
        h->name = name;
        h->run = ex_exec_run;
        h->async = 1;
        h->ctx = conf;
        snprintf(key, sizeof(key), "exec.%s.concurrency", name);
        h->concurrency = (int)em_config_int(cfg, key);
        if (!h->concurrency)
            h->concurrency = (int)em_config_int(cfg, "handlers.concurrency");
        snprintf(key, sizeof(key), "exec.%s.default_timeout_ms", name);
        h->default_timeout_ms = em_config_int(cfg, key);
        if (!h->default_timeout_ms)
            h->default_timeout_ms = em_config_int(cfg, "handlers.default_timeout_ms");
        pthread_mutex_init(&h->lock, NULL);
        list_handler(name);
    }
    if (n > 0) {
        char err[256];
        if (ex_exec_start(err, sizeof(err)) != EM_OK) {
            EM_ERROR("cannot start the child supervisor", EM_F_STR("error", err));
            return -1;
        }
    }
    return 0;
}

static int setup_handlers(const em_config_t *cfg) {
    size_t n = em_config_list_len(cfg, "handlers.builtin");
    for (size_t i = 0; i < n; i++) {
        const char *name = em_config_list_get(cfg, "handlers.builtin", i);
        int async = 0;
        ex_run_fn run = builtin_lookup(name, &async);
        if (!run) /* validate_handlers refused it already */
            return -1;
        if (handler_find((const uint8_t *)name, strlen(name)))
            continue;
        ex_handler_t *h = &X.handlers[X.nhandlers++];
        h->name = name;
        h->run = run;
        h->async = async;
        h->concurrency = (int)em_config_int(cfg, "handlers.concurrency");
        h->default_timeout_ms = em_config_int(cfg, "handlers.default_timeout_ms");
        pthread_mutex_init(&h->lock, NULL);
        list_handler(name);
    }
    return setup_exec_handlers(cfg);
}

static void register_metrics(void) {
    em_metrics_t *m = X.svc.metrics;
    X.m_in = em_metrics_counter(m, "execmesh_executions_in_total", NULL, "Executions received by Execute.");
    X.m_out = em_metrics_counter(m, "execmesh_executions_out_total", NULL,
                                 "Executions whose result a sink acknowledged.");
    X.m_failed = em_metrics_counter(m, "execmesh_executions_failed_total", NULL,
                                    "Executions that ended other than SUCCEEDED.");
    X.m_inflight = em_metrics_gauge(m, "execmesh_inflight", NULL, "Executions accepted and not yet answered.");
    X.m_busy = em_metrics_counter(m, "execmesh_executor_busy_total", NULL,
                                  "Execute calls refused with RESOURCE_EXHAUSTED (at capacity).");
    X.m_publish_failed =
        em_metrics_counter(m, "execmesh_executor_publish_failed_total", NULL, "Publish calls to sinks that failed.");
    static const char *const names[] = {"unspecified", "succeeded", "failed", "timed_out", "rejected", "exhausted"};
    for (size_t i = 0; i < EM_ARRAY_LEN(names); i++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "status=\"%s\"", names[i]);
        X.m_status[i] = em_metrics_counter(m, "execmesh_executor_results_total", labels, "Results by status.");
    }
    em_metrics_counter(m, "execmesh_dead_lettered_total", NULL, "Records sent to the dead-letter topic (none here).");
}

int main(int argc, char **argv) {
    char err[512];
    int rc = em_service_init(&X.svc, &executor_desc, argc, argv);
    if (rc >= 0)
        return rc;
    const em_config_t *cfg = X.svc.cfg;
    rc = 1;

    /* the parts */
    if (setup_handlers(cfg) != 0) {
        rc = 2;
        goto out;
    }
    register_metrics();
    X.replica_len = strlen(X.svc.replica);
    em_err_t jerr;
    X.journal = em_journal_open(em_config_str(cfg, "executor.journal"), &jerr);
    if (jerr != EM_OK) {
        fprintf(stderr, "execmesh-executor: config refused: %s: key 'executor.journal': cannot open '%s'\n",
                em_config_source(cfg, "executor.journal"), em_config_str(cfg, "executor.journal"));
        rc = 2;
        goto out;
    }
    ex_env.timers = X.svc.timers;
    X.max_inflight = (int)em_config_int(cfg, "executor.max_inflight");
    X.publish_timeout_ms = em_config_int(cfg, "publish.timeout_ms");
    X.publish_backoff_ms = em_config_int(cfg, "publish.retry_backoff_ms");
    em_rpc_channel_opts_t co;
    em_service_channel_opts(&X.svc, &co);
    X.sinks = em_rpc_channel_new(X.svc.loop, em_config_str(cfg, "sinks.target"), "execmesh.v1.ResultSink", &co, err,
                                 sizeof(err));
    if (!X.sinks) {
        fprintf(stderr, "execmesh-executor: config refused: %s: key 'sinks.target': %s\n",
                em_config_source(cfg, "sinks.target"), err);
        rc = 2;
        goto out;
    }
    X.m_publish = em_rpc_channel_method(X.sinks, "/execmesh.v1.ResultSink/Publish");
    if (em_rpc_server_add_method(X.svc.server, "execmesh.v1.Executor", "Execute", on_execute, &X, 256) != EM_OK)
        goto out;

    /* serve */
    if (em_service_start(&X.svc) != EM_OK)
        goto out;
    EM_INFO("handlers ready", EM_F_STR("handlers", X.handler_list));
    em_health_block(X.svc.health, EM_HEALTH_STARTING, 0);
    em_service_wait(&X.svc);

    /* drain: NOT_SERVING, answer the Execute calls in flight (each after its
     * results were published); past the deadline abandon what still runs:
     * its results are not published and the scheduler runs it again. */
    int64_t deadline = em_service_drain_begin(&X.svc);
    em_rpc_server_shutdown(X.svc.server, deadline);
    rc = 0;
out:
    ex_env.abandon = 1;
    em_rpc_server_shutdown(X.svc.server, em_mono_ms());
    if (X.svc.timers) {
        em_timers_destroy(X.svc.timers); /* runs the pending timers now, as abandoned */
        X.svc.timers = NULL;
        ex_env.timers = NULL;
    }
    ex_exec_stop(); /* kills and reaps the children still running; their jobs end as abandoned */
    em_rpc_channel_destroy(X.sinks); /* cancels open Publish calls; their batches are freed */
    if (atomic_load(&X.batches) > 0)
        EM_WARN("batches still open at exit", EM_F_INT("batches", atomic_load(&X.batches)));
    EM_INFO("stopped", EM_F_INT("exit_code", rc));
    em_journal_close(X.journal);
    for (int i = 0; i < X.nhandlers; i++)
        if (X.handlers[i].run == ex_exec_run)
            ex_exec_conf_free(X.handlers[i].ctx);
    em_service_cleanup(&X.svc);
    return rc;
}
