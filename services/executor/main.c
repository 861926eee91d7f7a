/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmesh-executor: runs configured handlers. Serves Executor.Execute: of
 * a batch of executions, those within their handler's concurrency and the
 * executor's in-flight bound are taken and run at once (each by its
 * handler, never past its deadline), the others refused one by one on
 * arrival (they wait in Kafka, not here); the results are published to a
 * result sink as they finish, and each group the sink acknowledged is
 * streamed back to the caller (batch.c, handlers.c, jobs.c). Never talks to
 * Kafka, so it stays SERVING through a broker outage.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_child.h"
#include "em_log.h"
#include "em_result_counts.h"
#include "em_rpc_server.h"
#include "em_util.h"
#include "executor.h"

static const em_setting_t executor_settings[] = {
    EM_SERVICE_SETTINGS("127.0.0.1:7200", "127.0.0.1:9200"),
    {"sinks.target", EM_CFG_STR, "ipv4:127.0.0.1:7300", 1, 4095,
     "gRPC target of the result sinks: ipv4:H:P,H:P... or dns:///name:port (round_robin over all)."},
    {"executor.max_inflight", EM_CFG_INT, "4096", 1, 1000000,
     "Executions taken and not yet answered. Of an Execute call, the executions beyond it are refused one by one "
     "(ExecuteResponse.refused, handler_busy false; they wait in Kafka); a call none of whose executions fits is "
     "refused whole with RESOURCE_EXHAUSTED."},
    {"authz.schedulers", EM_CFG_STRLIST, "spiffe://execmesh/scheduler", 0, 64,
     "With TLS on: the identities (certificate URI SAN, else DNS SAN, else CN) that may call Execute and "
     "Cancel; any other caller gets PERMISSION_DENIED."},
    {"handlers.builtin", EM_CFG_STRLIST, "echo,sleep,fail,sha256", 0, 32,
     "Builtin handlers to offer: any of echo, fail, sha256, sleep."},
    {"handlers.concurrency", EM_CFG_INT, "8", 1, 100000,
     "Per handler: executions running at once (for handlers that wait, like sleep, and exec handlers). Beyond it "
     "an Execute call's executions of the handler are refused one by one (ExecuteResponse.refused, handler_busy "
     "true) and wait in Kafka, never in the executor; a call none of whose executions fits is refused whole with "
     "RESOURCE_EXHAUSTED."},
    {"handlers.default_timeout_ms", EM_CFG_INT, "30000", 1, 86400000,
     "Timeout of an execution that sets none (timeout_ms = 0), counted from its start at the executor "
     "(for a call that runs alone, from when it is accepted)."},
    {"handlers.max_attempts", EM_CFG_INT, "1", 1, 1000,
     "Attempts of an execution that sets none (max_attempts = 0): FAILED and TIMED_OUT run again until this many "
     "attempts ran; the last failing one ends EXHAUSTED (when more than 1 was allowed)."},
    {"handlers.retry_initial_ms", EM_CFG_INT, "1000", 1, 86400000,
     "Backoff before the first retry (full jitter: a random wait between 0 and the backoff)."},
    {"handlers.retry_factor", EM_CFG_INT, "2", 1, 100, "Each further retry's backoff is this many times the previous one."},
    {"handlers.retry_max_ms", EM_CFG_INT, "60000", 1, 86400000,
     "Cap of the backoff. Retries wait durably in Kafka (the scheduler's delay topic)."},
    {"builtin.*.max_attempts", EM_CFG_INT, "0", 0, 1000, "Builtin handler NAME: handlers.max_attempts for it; 0: the default."},
    {"builtin.*.retry_initial_ms", EM_CFG_INT, "0", 0, 86400000, "Builtin handler NAME: handlers.retry_initial_ms for it; 0: the default."},
    {"builtin.*.retry_factor", EM_CFG_INT, "0", 0, 100, "Builtin handler NAME: handlers.retry_factor for it; 0: the default."},
    {"builtin.*.retry_max_ms", EM_CFG_INT, "0", 0, 86400000, "Builtin handler NAME: handlers.retry_max_ms for it; 0: the default."},
    {"builtin.*.default_timeout_ms", EM_CFG_INT, "0", 0, 86400000, "Builtin handler NAME: handlers.default_timeout_ms for it; 0: the default."},
    {"handlers.exec", EM_CFG_STRLIST, "", 0, 32,
     "Exec handlers to offer, by name; each is configured by the exec.NAME.* keys below (exec.NAME.argv is required)."},
    {"exec.*.argv", EM_CFG_STRLIST, "", 0, 256,
     "Exec handler NAME: the command, an absolute path to an executable file, then its arguments. "
     "It gets the payload on stdin; its stdout is the output; exit 0 is SUCCEEDED, another exit or a signal FAILED."},
    {"exec.*.env", EM_CFG_STRLIST, "", 0, 256,
     "Exec handler NAME: the child's whole environment as NAME=VALUE; empty: PATH=/usr/local/bin:/usr/bin:/bin only."},
    {"exec.*.concurrency", EM_CFG_INT, "0", 0, 100000,
     "Exec handler NAME: children running at once; beyond it executions are refused one by one "
     "(ExecuteResponse.refused, handler_busy true) and wait in Kafka, never in the executor. 0: handlers.concurrency."},
    {"exec.*.default_timeout_ms", EM_CFG_INT, "0", 0, 86400000,
     "Exec handler NAME: timeout of an execution that sets none; 0: handlers.default_timeout_ms. "
     "Past the timeout: TIMED_OUT, SIGTERM to the child's process group, SIGKILL after kill_grace_ms."},
    {"exec.*.max_attempts", EM_CFG_INT, "0", 0, 1000, "Exec handler NAME: handlers.max_attempts for it; 0: the default."},
    {"exec.*.retry_initial_ms", EM_CFG_INT, "0", 0, 86400000, "Exec handler NAME: handlers.retry_initial_ms for it; 0: the default."},
    {"exec.*.retry_factor", EM_CFG_INT, "0", 0, 100, "Exec handler NAME: handlers.retry_factor for it; 0: the default."},
    {"exec.*.retry_max_ms", EM_CFG_INT, "0", 0, 86400000, "Exec handler NAME: handlers.retry_max_ms for it; 0: the default."},
    {"exec.*.no_retry_exit_codes", EM_CFG_STRLIST, "", 0, 32,
     "Exec handler NAME: exit codes (1 to 255) that end the execution FAILED at once, never retried."},
    {"exec.*.kill_grace_ms", EM_CFG_INT, "2000", 0, 600000,
     "Exec handler NAME: wait between SIGTERM and SIGKILL to the child's process group on a timeout."},
    {"exec.*.max_output_bytes", EM_CFG_INT, "0", 0, 16777216,
     "Exec handler NAME: stdout beyond this many bytes FAILS the execution (the child is killed; output is never "
     "truncated). 0: publish.max_result_bytes - 65536, which leaves room for the rest of the result; more lets a "
     "larger output through to the result size check (publish.max_result_bytes)."},
    {"exec.*.cpu_seconds", EM_CFG_INT, "0", 0, 604800,
     "Exec handler NAME: RLIMIT_CPU of the child (SIGXCPU, then SIGKILL a second later); 0: the executor's own."},
    {"exec.*.memory_mb", EM_CFG_INT, "0", 0, 4194304,
     "Exec handler NAME: memory of one execution's processes together, in MiB: its cgroup's limit (past it the "
     "kernel's OOM killer ends the execution, FAILED naming it); without cgroups RLIMIT_AS of the child "
     "(allocations beyond it fail). 0: no limit of its own."},
    {"exec.*.cpu_millis", EM_CFG_INT, "0", 0, 1024000,
     "Exec handler NAME: CPU time of one execution's processes per second of wall time (1000 = one core), its "
     "cgroup's quota; without cgroups not applied (cpu_seconds is). 0: no limit."},
    {"exec.*.user", EM_CFG_STR, "", 0, 64,
     "Exec handler NAME: run the child as this user (its uid and primary group, no supplementary groups) with "
     "no_new_privs; empty: the executor's own user. The executor must be able to switch (root)."},
    {"exec.*.open_files", EM_CFG_INT, "0", 0, 1048576,
     "Exec handler NAME: RLIMIT_NOFILE of the child; 0: the executor's own."},
    {"exec.*.processes", EM_CFG_INT, "0", 0, 4194304,
     "Exec handler NAME: processes of one execution at once: its cgroup's pids.max (a fork past it fails; the "
     "result names the limit); without cgroups RLIMIT_NPROC of the child, which counts every process of the user "
     "and which root ignores. 0: no limit of its own."},
    {"executor.cgroups", EM_CFG_STR, "auto", 2, 8,
     "Containment of exec handlers' children: \"auto\" puts each execution in a cgroup of its own (memory, "
     "pids, cpu limits; killed whole, escapes included) when this process's cgroups allow it, else rlimits and "
     "process groups only, logged once naming what is missing; \"required\" refuses to start without; "
     "\"off\" never uses cgroups."},
    {"executor.workdir_base", EM_CFG_STR, "/tmp", 1, 1024,
     "Each exec execution runs in a fresh directory made under BASE/execmesh-REPLICA and removed after it."},
    {"executor.journal", EM_CFG_STR, "", 0, 4095,
     "If set, a line per execution started (S), finished (E), answered after its result was stored (D) or answered with an error (X) is appended here (for fault tests)."},
    {"publish.timeout_ms", EM_CFG_INT, "10000", 100, 600000, "Deadline of one Publish call to a sink."},
    {"publish.max_result_bytes", EM_CFG_INT, "1000000", 131072, 100000000,
     "Largest result published, counted as its Kafka record (the Result, its id as the key, framing): a result "
     "that would be larger ends FAILED, final, naming its size and this limit, its output dropped (never "
     "published oversize). Must not exceed the sinks' kafka.max_message_bytes (set it equal); a failed attempt "
     "is retried only while its next record stays within this - 24576 (the attempt history cannot grow "
     "without bound)."},
    {"publish.group_max_bytes", EM_CFG_INT, "4194304", 131072, 268435456,
     "Most bytes of results in one Publish call and one Execute answer message (a larger group of finished "
     "results is split). At least publish.max_result_bytes and at most grpc.max_message_bytes - 65536, else "
     "refused at start; the sinks' and schedulers' grpc.max_message_bytes must be at least this + 65536."},
    {"publish.retry_backoff_ms", EM_CFG_INT, "50", 1, 60000,
     "Wait before publishing a batch's results again after a failed Publish."},
    {"execute.flush_ms", EM_CFG_INT, "5", 0, 10000,
     "Once the first results of a batch are out, later completions are gathered this long before they are "
     "published and streamed back as one group (0: each at once)."},
};

static int validate(const em_config_t *cfg);

static const em_service_desc_t executor_desc = {
    .name = "executor",
    .program = "execmesh-executor",
    .summary = "runs execution handlers and hands each result to a sink (Executor.Execute)",
    .settings = executor_settings,
    .nsettings = EM_ARRAY_LEN(executor_settings),
    .validate = validate,
};

ex_env_t ex_env;

executor_t EX;

/* The settings that depend on each other: the handlers' (handlers.c), and
 * the size model (lib/em_sizes.h): a result always fits a group, and a
 * group one gRPC message. Refusals name file, line and key. */
static int validate(const em_config_t *cfg) {
    if (ex_handlers_check(cfg, executor_desc.program) != 0)
        return -1;
    return em_sizes_check_cap(cfg, executor_desc.program, "publish.group_max_bytes", "publish.max_result_bytes",
                              "a group (one Publish, one Execute answer)");
}

/* Executions taken and not answered: a stop now would run them again. */
static int holds_work(void *ctx) {
    (void)ctx;
    return atomic_load(&EX.inflight) > 0;
}

static void register_metrics(void) {
    em_metrics_t *m = EX.svc.metrics;
    EX.m_in = em_metrics_counter(m, "execmesh_executions_in_total", NULL,
                                 "Executions taken by Execute (those refused are not counted).");
    EX.m_out = em_metrics_counter(m, "execmesh_executions_out_total", NULL,
                                 "Executions whose result a sink acknowledged.");
    EX.m_failed = em_metrics_counter(m, "execmesh_executions_failed_total", NULL,
                                    "Executions that ended other than SUCCEEDED.");
    EX.m_inflight = em_metrics_gauge(m, "execmesh_inflight", NULL, "Executions taken and not yet answered.");
    EX.m_busy = em_metrics_counter(m, "execmesh_executor_busy_total", NULL,
                                  "Execute calls refused whole with RESOURCE_EXHAUSTED: none of their executions "
                                  "fit (executor.max_inflight, handler concurrency), or an execution runs alone here.");
    static const char refused_help[] =
        "Executions of accepted Execute calls refused one by one (ExecuteResponse.refused), by the limit they met: "
        "handler_busy (their handler's concurrency) or max_inflight (executor.max_inflight).";
    EX.m_refused_busy = em_metrics_counter(m, "execmesh_executor_executions_refused_total", "reason=\"handler_busy\"",
                                           refused_help);
    EX.m_refused_inflight = em_metrics_counter(m, "execmesh_executor_executions_refused_total",
                                               "reason=\"max_inflight\"", refused_help);
    EX.m_publish_failed =
        em_metrics_counter(m, "execmesh_executor_publish_failed_total", NULL, "Publish calls to sinks that failed.");
    EX.m_retries = em_metrics_counter(m, "execmesh_executor_retries_total", NULL,
                                      "Failed attempts with attempts left: the scheduler runs them again after a backoff.");
    EX.m_exhausted = em_metrics_counter(m, "execmesh_executor_exhausted_total", NULL,
                                        "Executions whose last allowed attempt failed (ended EXHAUSTED).");
    EX.m_expired = em_metrics_counter(m, "execmesh_executor_expired_total", NULL,
                                      "Executions not started because their deadline passed first (TIMED_OUT).");
    EX.m_too_large = em_metrics_counter(m, "execmesh_executor_results_too_large_total", NULL,
                                        "Results that would have exceeded publish.max_result_bytes: ended FAILED "
                                        "with their output dropped.");
    EX.m_history_full = em_metrics_counter(m, "execmesh_executor_history_full_total", NULL,
                                           "Failed attempts not retried although attempts were left: the next "
                                           "attempt's record would have passed publish.max_result_bytes - 24576.");
    EX.m_group_splits = em_metrics_counter(m, "execmesh_executor_group_splits_total", NULL,
                                           "Groups of finished results split to stay within "
                                           "publish.group_max_bytes.");
    EX.m_alone = em_metrics_counter(m, "execmesh_executor_alone_runs_total", NULL,
                                    "Executions run alone (ExecuteRequest.alone: one was in flight at an executor "
                                    "death), other work refused meanwhile.");
    EX.results = em_result_counts_new(m, "execmesh_executor_results_total",
                                      "Results by handler and status (one per attempt that ran or was refused "
                                      "here); handler _other: names no configured handler has.",
                                      0, EX.nhandlers + 1);
    static const char run_help[] =
        "Seconds an execution's handler ran (from its start to its end), by handler; _other: names no configured "
        "handler has (they end REJECTED at once).";
    for (int i = 0; i < EX.nhandlers; i++) {
        char labels[160];
        snprintf(labels, sizeof(labels), "handler=\"%s\"", EX.handlers[i].name);
        EX.handlers[i].m_run = em_metrics_histogram(m, "execmesh_executor_run_seconds", labels, run_help,
                                                    em_metrics_duration_us, em_metrics_nduration, EM_METRICS_US);
        if (EX.results)
            em_result_counts_declare(EX.results, EX.handlers[i].name);
    }
    EX.m_run_other = em_metrics_histogram(m, "execmesh_executor_run_seconds", "handler=\"_other\"", run_help,
                                          em_metrics_duration_us, em_metrics_nduration, EM_METRICS_US);
    EX.m_publish_seconds = em_metrics_histogram(m, "execmesh_executor_publish_duration_seconds", NULL,
                                                "Seconds a Publish call to a sink took (each try), from its start "
                                                "to the sink's answer.",
                                                em_metrics_duration_us, em_metrics_nduration, EM_METRICS_US);
    EX.m_running = em_metrics_gauge(m, "execmesh_executor_running", NULL,
                                    "Executions running now (started, not finished); execmesh_inflight also "
                                    "counts those waiting for a slot or for their result's publish.");
    em_metric_set(em_metrics_gauge(m, "execmesh_executor_capacity", NULL,
                                   "Executions this executor holds at most (executor.max_inflight): "
                                   "execmesh_inflight / this is its saturation; at 1 it refuses work."),
                  em_config_int(EX.svc.cfg, "executor.max_inflight"));
    em_metrics_counter(m, "execmesh_dead_lettered_total", NULL, "Records sent to the dead-letter topic (none here).");
}

int main(int argc, char **argv) {
    char err[512];
    if (argc > 1 && strcmp(argv[1], EM_CHILD_GUARDIAN_ARG) == 0)
        return em_child_guardian_main(argc, argv); /* this executor's guardian (lib/em_child.h) */
    int rc = em_service_init(&EX.svc, &executor_desc, argc, argv);
    if (rc >= 0)
        return rc;
    const em_config_t *cfg = EX.svc.cfg;
    rc = 1;

    /* the parts */
    if (ex_handlers_setup(cfg, executor_desc.program) != 0) {
        rc = 2;
        goto out;
    }
    register_metrics();
    em_service_work_source(&EX.svc, holds_work, NULL);
    EX.replica_len = strlen(EX.svc.replica);
    em_err_t jerr;
    EX.journal = em_journal_open(em_config_str(cfg, "executor.journal"), &jerr);
    if (jerr != EM_OK) {
        fprintf(stderr, "execmesh-executor: config refused: %s: key 'executor.journal': cannot open '%s'\n",
                em_config_source(cfg, "executor.journal"), em_config_str(cfg, "executor.journal"));
        rc = 2;
        goto out;
    }
    ex_env.timers = EX.svc.timers;
    EX.max_inflight = (int)em_config_int(cfg, "executor.max_inflight");
    EX.publish_timeout_ms = em_config_int(cfg, "publish.timeout_ms");
    EX.publish_backoff_ms = em_config_int(cfg, "publish.retry_backoff_ms");
    EX.flush_ms = em_config_int(cfg, "execute.flush_ms");
    EX.max_result_bytes = em_config_int(cfg, "publish.max_result_bytes");
    EX.group_max_bytes = em_config_int(cfg, "publish.group_max_bytes");
    em_rpc_channel_opts_t co;
    em_service_channel_opts(&EX.svc, &co);
    EX.sinks = em_rpc_channel_new(EX.svc.loop, em_config_str(cfg, "sinks.target"), "execmesh.v1.ResultSink", &co, err,
                                 sizeof(err));
    if (!EX.sinks) {
        fprintf(stderr, "execmesh-executor: config refused: %s: key 'sinks.target': %s\n",
                em_config_source(cfg, "sinks.target"), err);
        rc = 2;
        goto out;
    }
    EX.m_publish = em_rpc_channel_method(EX.sinks, "/execmesh.v1.ResultSink/Publish");
    if (em_rpc_server_add_method(EX.svc.server, "execmesh.v1.Executor", "Execute", ex_on_execute, &EX, 256) != EM_OK ||
        em_rpc_server_add_method(EX.svc.server, "execmesh.v1.Executor", "Cancel", ex_on_cancel, &EX, 16) != EM_OK ||
        em_service_allow(&EX.svc, "execmesh.v1.Executor", "Execute", "authz.schedulers") != EM_OK ||
        em_service_allow(&EX.svc, "execmesh.v1.Executor", "Cancel", "authz.schedulers") != EM_OK)
        goto out;

    /* serve */
    if (em_service_start(&EX.svc) != EM_OK)
        goto out;
    EM_INFO("handlers ready", EM_F_STR("handlers", EX.handler_list));
    em_health_block(EX.svc.health, EM_HEALTH_STARTING, 0);
    em_service_wait(&EX.svc);

    /* drain: NOT_SERVING, answer the Execute calls in flight (each after its
     * results were published); past the deadline abandon what still runs:
     * its results are not published and the scheduler runs it again. */
    int64_t deadline = em_service_drain_begin(&EX.svc);
    em_rpc_server_shutdown(EX.svc.server, deadline);
    rc = 0;
out:
    ex_env.abandon = 1;
    em_rpc_server_shutdown(EX.svc.server, em_mono_ms());
    if (EX.svc.timers) {
        em_timers_destroy(EX.svc.timers); /* runs the pending timers now, as abandoned */
        EX.svc.timers = NULL;
        ex_env.timers = NULL;
    }
    ex_exec_stop(); /* kills and reaps the children still running; their jobs end as abandoned */
    em_rpc_channel_destroy(EX.sinks); /* cancels open Publish calls; their batches are freed */
    if (atomic_load(&EX.batches) > 0)
        EM_WARN("batches still open at exit", EM_F_INT("batches", atomic_load(&EX.batches)));
    EM_INFO("stopped", EM_F_INT("exit_code", rc));
    em_journal_close(EX.journal);
    ex_handlers_cleanup();
    em_service_cleanup(&EX.svc);
    em_result_counts_destroy(EX.results);
    return rc;
}
