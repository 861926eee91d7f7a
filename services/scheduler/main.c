/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmesh-scheduler: the durable door in. A member of the consumer group on
 * the requests topic; serves Scheduler.Submit, which writes to that topic;
 * dispatches batches of executions to executors and commits each
 * partition's offset only up to the contiguous watermark of executions whose
 * results are durable. SERVING while its Submit path works (its producer
 * reaches the cluster); its group assignment is a metric and a log line,
 * not health.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_authz.h"
#include "em_cancels.h"
#include "em_delay.h"
#include "em_log.h"
#include "em_util.h"
#include "scheduler.h"

static const em_setting_t scheduler_settings[] = {
    EM_SERVICE_SETTINGS("127.0.0.1:7100", "127.0.0.1:9100"),
    EM_KAFKA_SETTINGS,
    EM_CONSUMER_SETTINGS,
    {"executors.target", EM_CFG_STR, "ipv4:127.0.0.1:7200", 1, 4095,
     "gRPC target of the executors: ipv4:H:P,H:P... or dns:///name:port (round_robin over all)."},
    {"dispatch.batch_max", EM_CFG_INT, "64", 1, 100000, "Most executions in one Execute call."},
    {"dispatch.batch_max_bytes", EM_CFG_INT, "4194304", 131072, 268435456,
     "Most bytes of executions in one Execute call (a batch closes at dispatch.batch_max executions or at this "
     "many bytes, whichever comes first). At least kafka.max_message_bytes (one execution always fits) and at "
     "most grpc.max_message_bytes - 65536, else refused at start; the executors' grpc.max_message_bytes must be "
     "at least this + 65536."},
    {"dispatch.max_inflight", EM_CFG_INT, "256", 1, 10000000,
     "Executions dispatched and not yet answered, over all executors."},
    {"dispatch.max_calls", EM_CFG_INT, "16", 1, 10000, "Execute calls in flight at once."},
    {"dispatch.max_pending", EM_CFG_INT, "2048", 1, 10000000,
     "Executions read from Kafka and waiting for dispatch; above it consumption pauses (resumes at half)."},
    {"dispatch.default_timeout_ms", EM_CFG_INT, "86400000", 1, 86400000,
     "Call deadline for an execution that sets no timeout_ms: the executors enforce each handler's default "
     "timeout, which the scheduler does not know, so this must be at least the longest handler default "
     "(a hung executor holds such an execution this long; a dead one is found by keepalive)."},
    {"dispatch.deadline_grace_ms", EM_CFG_INT, "2000", 0, 600000,
     "Added to the longest execution timeout of a batch to make its call deadline."},
    {"dispatch.retry_backoff_ms", EM_CFG_INT, "100", 1, 60000,
     "Pause before dispatching again after executors answered RESOURCE_EXHAUSTED or failed twice in a row."},
    {"kafka.topic_delay", EM_CFG_STR, "execmesh.delay", 1, 249,
     "Topic where the next attempt of a failed execution waits for its backoff (durably: no scheduler memory); "
     "every scheduler forwards due records from it back to the requests topic."},
    {"kafka.topic_cancels", EM_CFG_STR, "execmesh.cancels", 1, 249,
     "Topic of durable cancels (keyed by execution id; give it a retention of about cancel.remember_ms). Every "
     "scheduler reads all of it: the one that holds a cancelled execution ends it CANCELLED."},
    {"cancel.remember_ms", EM_CFG_INT, "86400000", 1000, 2592000000,
     "How long a cancel is remembered: an execution that arrives within it after its cancel still ends CANCELLED."},
    {"cancel.max_remembered", EM_CFG_INT, "1000000", 1, 100000000,
     "Most cancels remembered (the oldest forgotten first); each costs about 100 bytes of memory."},
    {"quarantine.executor_deaths", EM_CFG_INT, "3", 2, 6,
     "Executor deaths that end an execution EXHAUSTED, never dispatched again: a poison execution costs at most "
     "this many executors. A death beside other executions is charged to no one at first (each execution in "
     "flight there is re-dispatched in a call of its own); one that was in flight at this many deaths minus one "
     "runs alone (the executor runs nothing beside it), and its death there is its own, charged with the "
     "earlier ones. At least 2 (one death cannot tell the poison from its batch-mates); each death adds up to "
     "1280 bytes of history to the execution, within the size reserve: at most 6."},
    {"revoke.timeout_ms", EM_CFG_INT, "5000", 0, 600000,
     "On losing partitions: longest wait for their in-flight executions before committing and giving them up."},
    {"input.max_bytes", EM_CFG_INT, "0", 0, 268435456,
     "Records on the requests topic larger than this go to the dead-letter topic (too_large; a record too large "
     "to dead-letter whole is cut to fit, its size in header execmesh-original-bytes). 0: the largest "
     "execution, kafka.max_message_bytes - 65536; a larger value is refused at start. A retry (a record "
     "carrying attempt 2 or more and its history) may be up to kafka.max_message_bytes - 16384."},
    {"flow.hold_pause_ms", EM_CFG_INT, "5000", 0, 600000,
     "A hold of the intake (dispatch.max_pending executions waiting) lasting this long turns into paused "
     "partitions (librdkafka drops their prefetch). A hold while the group refuses commits (a rebalance) "
     "pauses at once, so the poll can serve the rebalance."},
    {"watchdog.stall_ms", EM_CFG_INT, "15000", 500, 3600000,
     "A partition with records waiting in Kafka that delivers none for this long, while the intake is neither "
     "paused nor held and none of its executions is held, is stalled: logged as an error, counted in "
     "execmesh_scheduler_stalled_partitions, and restarted."},
    {"watchdog.interval_ms", EM_CFG_INT, "1000", 100, 600000,
     "How often the stall watchdog asks Kafka for each owned partition's end and committed offsets "
     "(also the refresh of the per-partition lag metrics)."},
    {"kafka.start_paused", EM_CFG_BOOL, "false", 0, 0,
     "Join the group but consume nothing until POST /admin/resume on the metrics port."},
    {"resources.*.name", EM_CFG_STR, "", 0, 63,
     "A resource handlers touch (resources = { pg = { name = \"db:pg\"; ... }; }): its name in handlers.*.resources "
     "and in the metrics (letters, digits and _ . : / -); empty: the group's own name. Every scheduler must have the "
     "same resources.* and handlers.* (one file @included by each)."},
    {"resources.*.concurrency", EM_CFG_INT, "0", 0, 1000000,
     "Executions touching the resource at once across the whole mesh (each scheduler takes the share of the "
     "partitions it owns); 0: no limit."},
    {"resources.*.rate", EM_CFG_INT, "0", 0, 1000000000,
     "Executions of the resource started per resources.*.per_ms across the whole mesh (a token bucket, shared out "
     "like the concurrency); 0: no limit."},
    {"resources.*.per_ms", EM_CFG_INT, "1000", 1, 86400000, "The period of resources.*.rate."},
    {"resources.*.burst", EM_CFG_INT, "1", 1, 1000000,
     "The token bucket's size across the mesh: the most executions started at once after a quiet time (each "
     "scheduler's bucket holds at least 1)."},
    {"resources.*.max_waiting", EM_CFG_INT, "64", 1, 1000000,
     "Executions of the resource waiting in this scheduler's memory; the next one read holds its partition in "
     "Kafka (fetching nothing more of it) until room appears, so a backlog waits in Kafka."},
    {"handlers.*.resources", EM_CFG_STRLIST, "", 0, 8,
     "The resources (resources.*.name) handler NAME touches: its executions start only within every one's limits. "
     "A name no resource has is refused."},
    EM_AUTHZ_SETTINGS,
    {"submit.max_executions", EM_CFG_INT, "10000", 1, 1000000, "Most executions in one Submit call."},
    {"submit.max_payload_bytes", EM_CFG_INT, "0", 0, 268435456,
     "Largest payload Submit accepts. 0: the largest execution, kafka.max_message_bytes - 65536, which also "
     "bounds each whole execution as written to Kafka (INVALID_ARGUMENT naming its index, size and the limit); "
     "a larger value is refused at start."},
    {"submit.max_inflight_bytes", EM_CFG_INT, "268435456", 65536, 17179869184,
     "Bytes of Submit requests accepted and not yet acknowledged by Kafka, over all calls; a Submit beyond it "
     "gets RESOURCE_EXHAUSTED (each call holds about three times its size until Kafka acknowledged it)."},
};

static int validate_sizes(const em_config_t *cfg);

static const em_service_desc_t scheduler_desc = {
    .name = "scheduler",
    .program = "execmesh-scheduler",
    .summary = "takes executions from Kafka and Submit, dispatches them to executors, commits durable offsets",
    .settings = scheduler_settings,
    .nsettings = EM_ARRAY_LEN(scheduler_settings),
    .validate = validate_sizes,
};

/* Refuses a pair of settings that disagree, naming the one the file (or
 * --set) gave: key when it was set, else other (a default cannot be wrong
 * alone). Returns -1. */
/* quarantine.executor_deaths (at most 6) deaths add at most this much
 * history, within what the executors leave for them (lib/em_sizes.h). */
_Static_assert(6 * EM_SIZE_DEATH_MAX <= EM_SIZE_RETRY_ROOM - EM_SIZE_RESULT_ROOM,
               "the deaths' history entries must fit between the retry room and the result room");

/* The size model (lib/em_sizes.h): the byte limits derive from
 * kafka.max_message_bytes and must agree with it and with gRPC's cap. */
static int validate_sizes(const em_config_t *cfg) {
    char why[512], key[320];
    if (em_kafka_check_config(cfg, scheduler_desc.program) != 0 || sc_resources_check(cfg) != 0)
        return -1;
    em_authz_t *authz = em_authz_from_config(cfg, why, sizeof(why), key, sizeof(key));
    if (!authz) {
        fprintf(stderr, "%s: config refused: %s: key '%s': %s\n", scheduler_desc.program, em_config_source(cfg, key),
                key, why);
        return -1;
    }
    em_authz_destroy(authz);
    int64_t L = em_config_int(cfg, "kafka.max_message_bytes");
    int64_t E = em_size_max_execution(L);
    static const char *const limits[] = {"input.max_bytes", "submit.max_payload_bytes"};
    for (size_t i = 0; i < EM_ARRAY_LEN(limits); i++) {
        int64_t v = em_config_int(cfg, limits[i]);
        if (v > E) {
            snprintf(why, sizeof(why),
                     "%" PRId64 " is more than the largest execution, %" PRId64 " (kafka.max_message_bytes %" PRId64
                     " - %d kept for what the mesh adds to its result); 0 means that limit",
                     v, E, L, EM_SIZE_RESERVE);
            return em_sizes_refuse(cfg, scheduler_desc.program, limits[i], "kafka.max_message_bytes", why);
        }
    }
    return em_sizes_check_cap(cfg, scheduler_desc.program, "dispatch.batch_max_bytes", "kafka.max_message_bytes",
                              "an Execute batch");
}

static void *consumer_main(void *arg) {
    scheduler_t *s = arg;
    rd_kafka_message_t **msgs = calloc((size_t)s->poll_batch, sizeof(*msgs));
    int64_t next_commit = em_mono_ms() + s->commit_interval_ms;
    if (!msgs) {
        EM_ERROR("out of memory in the consumer thread");
        return NULL;
    }
    /* A cancel written before this scheduler started must be known before
     * any execution is taken in: wait until the cancels are read. */
    int64_t t0 = em_mono_ms();
    while (!atomic_load(&s->stopping) && !em_cancels_ready(s->cancels)) {
        pthread_mutex_lock(&s->lock);
        em_cond_wait_ms(&s->cond, &s->lock, 20);
        pthread_mutex_unlock(&s->lock);
    }
    EM_INFO("cancels read; taking executions", EM_F_INT("waited_ms", em_mono_ms() - t0),
            EM_F_UINT("remembered", em_cancels_count(s->cancels)));
    while (!atomic_load(&s->stopping)) {
        int64_t now = em_mono_ms();
        int timeout = s->paused ? 10 : 100;
        if (next_commit - now < timeout)
            timeout = next_commit - now > 0 ? (int)(next_commit - now) : 0;
        size_t n = 0;
        pthread_mutex_lock(&s->lock);
        size_t room = sc_intake_room_locked(s);
        if (room == 0) { /* pending is full: wait for dispatch to make room */
            em_cond_wait_ms(&s->cond, &s->lock, timeout);
            pthread_mutex_unlock(&s->lock);
        } else {
            pthread_mutex_unlock(&s->lock);
            n = em_consumer_poll(s->consumer, msgs, room, timeout);
        }
        rd_kafka_topic_partition_list_t *commit = NULL;
        pthread_mutex_lock(&s->lock);
        sc_consumer_turn_locked(s);
        for (size_t i = 0; i < n; i++)
            sc_accept_locked(s, msgs[i]);
        sc_resources_unpark_locked(s);
        sc_dispatch_locked(s);
        sc_flow_control_locked(s);
        now = em_mono_ms();
        if (now >= next_commit) {
            sc_commit_tick_locked(s, &commit);
            next_commit = now + s->commit_interval_ms;
        }
        pthread_mutex_unlock(&s->lock);
        if (commit) {
            em_consumer_commit(s->consumer, commit, 1);
            rd_kafka_topic_partition_list_destroy(commit);
        }
        sc_watchdog_heal(s);
    }
    /* Leaving the group runs the final revoke here: in-flight work gets
     * until the drain deadline, then the watermarks are committed. */
    em_consumer_close(s->consumer);
    free(msgs);
    return NULL;
}

/* /livez: the consumer loop's last turn (it turns at least every 100 ms
 * while it runs, also while paused or held, and during a revoke's wait). */
static int64_t consumer_turned(void *ctx) {
    scheduler_t *s = ctx;
    pthread_mutex_lock(&s->lock);
    int64_t t = s->consumer_alive_ms;
    pthread_mutex_unlock(&s->lock);
    return t;
}

/* POST /admin/pause and /admin/resume on the metrics port: stop and restart
 * consuming (the partitions stay assigned; Submit keeps working). */
static int admin_consume(void *ctx, const char *rest, char *out, size_t n) {
    scheduler_t *s = ctx;
    int pause;
    if (strcmp(rest, "pause") == 0)
        pause = 1;
    else if (strcmp(rest, "resume") == 0)
        pause = 0;
    else {
        snprintf(out, n, "unknown action '%s': use /admin/pause or /admin/resume\n", rest);
        return 404;
    }
    pthread_mutex_lock(&s->lock);
    s->admin_paused = pause;
    pthread_mutex_unlock(&s->lock);
    EM_INFO(pause ? "consumption paused by an operator" : "consumption resumed by an operator");
    snprintf(out, n, "%s\n", pause ? "paused" : "resumed");
    return 200;
}

/* Executions dispatched or waiting for dispatch (the gauges the dispatch
 * keeps: read without the scheduler's lock, which the metrics thread must
 * not take). A stop would give their partitions to another scheduler,
 * which runs them again. */
static int holds_work(void *ctx) {
    scheduler_t *s = ctx;
    return em_metric_get(s->m_inflight) > 0 || em_metric_get(s->m_pending) > 0;
}

static void register_metrics(scheduler_t *s) {
    em_metrics_t *m = s->svc.metrics;
    s->m_in_kafka = em_metrics_counter(m, "execmesh_executions_in_total", "source=\"kafka\"",
                                       "Executions taken in: read from the requests topic, or accepted by Submit.");
    s->m_in_submit = em_metrics_counter(m, "execmesh_executions_in_total", "source=\"submit\"",
                                        "Executions taken in: read from the requests topic, or accepted by Submit.");
    s->m_out = em_metrics_counter(m, "execmesh_executions_out_total", NULL,
                                  "Executions whose result is durable (executor answered OK).");
    s->m_failed = em_metrics_counter(m, "execmesh_executions_failed_total", NULL,
                                     "Executions whose Execute call failed (each is dispatched again).");
    s->m_dead = em_metrics_counter(m, "execmesh_dead_lettered_total", NULL,
                                   "Records written to the dead-letter topic.");
    s->m_inflight = em_metrics_gauge(m, "execmesh_inflight", NULL, "Executions dispatched and not yet answered.");
    s->m_pending = em_metrics_gauge(m, "execmesh_scheduler_pending", NULL, "Executions waiting for dispatch.");
    s->m_assigned = em_metrics_gauge(m, "execmesh_scheduler_assigned_partitions", NULL,
                                     "Partitions of the requests topic this replica owns.");
    s->m_redispatched = em_metrics_counter(m, "execmesh_scheduler_redispatched_total", NULL,
                                           "Executions dispatched again with a higher attempt number.");
    s->m_busy = em_metrics_counter(m, "execmesh_scheduler_busy_total", NULL,
                                   "Execute calls answered RESOURCE_EXHAUSTED.");
    s->m_commits = em_metrics_counter(m, "execmesh_scheduler_commits_total", NULL, "Partition offsets committed.");
    s->m_commit_failed = em_metrics_counter(m, "execmesh_scheduler_commit_failures_total", NULL,
                                            "Partition offset commits that failed (retried).");
    s->m_submit_calls = em_metrics_counter(m, "execmesh_submit_calls_total", NULL, "Submit calls received.");
    s->m_submit_failed = em_metrics_counter(m, "execmesh_submit_failed_total", NULL,
                                            "Submit calls answered with an error.");
    s->m_paused = em_metrics_gauge(m, "execmesh_scheduler_paused", NULL,
                                   "1 while the intake is held (dispatch.max_pending executions wait) or the "
                                   "partitions are paused (flow control or an operator).");
    s->m_holds = em_metrics_counter(m, "execmesh_scheduler_intake_holds_total", NULL,
                                    "Times the intake was held because dispatch.max_pending executions waited.");
    s->m_flow_pauses = em_metrics_counter(m, "execmesh_scheduler_flow_pauses_total", NULL,
                                          "Times a hold of the intake turned into paused partitions.");
    s->m_retries = em_metrics_counter(m, "execmesh_scheduler_retries_total", NULL,
                                      "Next attempts of failed executions stored in the delay topic.");
    s->m_deaths = em_metrics_counter(m, "execmesh_scheduler_executor_deaths_total", NULL,
                                     "Executions whose executor died while running them alone.");
    s->m_quarantined = em_metrics_counter(m, "execmesh_scheduler_quarantined_total", NULL,
                                          "Executions ended EXHAUSTED after quarantine.executor_deaths deaths.");
    s->m_isolated = em_metrics_counter(m, "execmesh_scheduler_isolated_total", NULL,
                                       "Executions in flight at an executor death, dispatched again in a call of their own.");
    s->m_protocol_errors = em_metrics_counter(m, "execmesh_scheduler_protocol_errors_total", NULL,
                                              "Execute answers that did not match what was dispatched.");
    s->m_calls = em_metrics_counter(m, "execmesh_scheduler_execute_calls_total", NULL, "Execute calls started.");
    s->m_queue_wait = em_metrics_histogram(m, "execmesh_scheduler_queue_wait_seconds", NULL,
                                           "Seconds from an execution's record reaching Kafka (its timestamp) to "
                                           "its dispatch to an executor (each attempt's record once).",
                                           em_metrics_duration_us, em_metrics_nduration, EM_METRICS_US);
    s->m_execute_seconds = em_metrics_histogram(m, "execmesh_scheduler_execute_duration_seconds", NULL,
                                                "Seconds an Execute call took, from its start to its end (its "
                                                "executions ran and their results were stored).",
                                                em_metrics_duration_us, em_metrics_nduration, EM_METRICS_US);
    s->m_byte_cuts = em_metrics_counter(m, "execmesh_scheduler_batch_byte_cuts_total", NULL,
                                        "Execute batches closed early because the next execution would have "
                                        "passed dispatch.batch_max_bytes.");
    s->m_dead_truncated = em_metrics_counter(m, "execmesh_scheduler_dead_truncated_total", NULL,
                                             "Dead letters written with their value cut to fit Kafka's limit "
                                             "(header execmesh-original-bytes).");
    s->m_too_large_refused = em_metrics_counter(m, "execmesh_scheduler_batches_refused_too_large_total", NULL,
                                                "Execute batches an executor refused as larger than its "
                                                "grpc.max_message_bytes (the byte cap is halved).");
    s->m_cancelled = em_metrics_counter(m, "execmesh_scheduler_cancelled_total", NULL,
                                        "Executions ended CANCELLED by this scheduler (their result stored).");
    s->m_cancel_calls = em_metrics_counter(m, "execmesh_cancel_calls_total", NULL, "Cancel calls received.");
    s->m_cancel_requests = em_metrics_counter(m, "execmesh_cancel_requests_total", NULL,
                                              "Cancels stored by Cancel calls (one per id).");
    s->m_cancels_seen = em_metrics_counter(m, "execmesh_scheduler_cancels_seen_total", NULL,
                                           "New cancels read from the cancels topic.");
    s->m_cancels_sent = em_metrics_counter(m, "execmesh_scheduler_executor_cancels_total", NULL,
                                           "Executor.Cancel calls made to the executor holding a cancelled execution.");
    sc_watchdog_register(s);
}

static void read_settings(scheduler_t *s, const em_config_t *cfg) {
    s->batch_max = (int)em_config_int(cfg, "dispatch.batch_max");
    s->batch_max_bytes = em_config_int(cfg, "dispatch.batch_max_bytes");
    s->batch_bytes_now = s->batch_max_bytes;
    s->kafka_max_message_bytes = em_config_int(cfg, "kafka.max_message_bytes");
    s->max_inflight = (int)em_config_int(cfg, "dispatch.max_inflight");
    s->max_calls = (int)em_config_int(cfg, "dispatch.max_calls");
    s->max_pending = (int)em_config_int(cfg, "dispatch.max_pending");
    s->poll_batch = (int)em_config_int(cfg, "kafka.poll_batch");
    s->default_timeout_ms = em_config_int(cfg, "dispatch.default_timeout_ms");
    s->deadline_grace_ms = em_config_int(cfg, "dispatch.deadline_grace_ms");
    s->retry_backoff_ms = em_config_int(cfg, "dispatch.retry_backoff_ms");
    s->commit_interval_ms = em_config_int(cfg, "kafka.commit_interval_ms");
    s->revoke_timeout_ms = em_config_int(cfg, "revoke.timeout_ms");
    s->session_timeout_ms = em_config_int(cfg, "kafka.session_timeout_ms");
    /* 0: the largest execution (validate_sizes refused anything larger) */
    s->input_max_bytes = em_config_int(cfg, "input.max_bytes");
    if (!s->input_max_bytes)
        s->input_max_bytes = em_size_max_execution(s->kafka_max_message_bytes);
    s->submit_max_executions = em_config_int(cfg, "submit.max_executions");
    s->submit_max_payload = em_config_int(cfg, "submit.max_payload_bytes");
    if (!s->submit_max_payload)
        s->submit_max_payload = em_size_max_execution(s->kafka_max_message_bytes);
    s->submit_max_inflight_bytes = em_config_int(cfg, "submit.max_inflight_bytes");
    s->topic_requests = em_config_str(cfg, "kafka.topic_requests");
    s->admin_paused = em_config_bool(cfg, "kafka.start_paused");
    s->hold_pause_ms = em_config_int(cfg, "flow.hold_pause_ms");
    s->stall_ms = em_config_int(cfg, "watchdog.stall_ms");
    s->watchdog_interval_ms = em_config_int(cfg, "watchdog.interval_ms");
    s->quarantine_deaths = em_config_int(cfg, "quarantine.executor_deaths");
}

int main(int argc, char **argv) {
    static scheduler_t s;
    char err[512];
    const char *extra[EM_KAFKA_MAX_EXTRA];
    int consumer_started = 0, watchdog_started = 0;
    int rc = em_service_init(&s.svc, &scheduler_desc, argc, argv);
    if (rc >= 0)
        return rc;
    const em_config_t *cfg = s.svc.cfg;
    rc = 1;
    pthread_mutex_init(&s.lock, NULL);
    em_cond_init(&s.cond);
    em_cond_init(&s.watchdog_cond);
    s.started_ms = em_mono_ms();

    /* the parts */
    read_settings(&s, cfg);
    register_metrics(&s);
    em_service_work_source(&s.svc, holds_work, &s);
    if (sc_resources_init(&s, cfg) != EM_OK) {
        EM_ERROR("out of memory reading the resources");
        goto out;
    }
    em_rpc_channel_opts_t co;
    em_service_channel_opts(&s.svc, &co);
    s.executors = em_rpc_channel_new(s.svc.loop, em_config_str(cfg, "executors.target"), "execmesh.v1.Executor", &co,
                                     err, sizeof(err));
    if (!s.executors) {
        fprintf(stderr, "execmesh-scheduler: config refused: %s: key 'executors.target': %s\n",
                em_config_source(cfg, "executors.target"), err);
        rc = 2;
        goto out;
    }
    s.m_execute = em_rpc_channel_method(s.executors, "/execmesh.v1.Executor/Execute");

    em_producer_opts_t po;
    em_producer_opts_from_config(cfg, s.svc.replica, extra, &po);
    po.probe_topic = s.topic_requests;
    po.health = s.svc.health;
    s.producer = em_producer_new(&po, err, sizeof(err));
    if (!s.producer) {
        EM_ERROR("cannot create the Kafka producer", EM_F_STR("error", err));
        goto out;
    }
    s.t_requests = em_producer_topic(s.producer, s.topic_requests);
    s.t_dead = em_producer_topic(s.producer, em_config_str(cfg, "kafka.topic_dead"));
    s.t_delay = em_producer_topic(s.producer, em_config_str(cfg, "kafka.topic_delay"));
    s.t_results = em_producer_topic(s.producer, em_config_str(cfg, "kafka.topic_results"));

    em_consumer_opts_t copts;
    em_consumer_opts_from_config(cfg, s.svc.replica, extra, &copts);
    copts.ctx = &s;
    copts.on_assign = sc_on_assign;
    copts.on_revoke = sc_on_revoke;
    copts.on_commit = sc_on_commit;
    s.consumer = em_consumer_new(&copts, err, sizeof(err));
    if (!s.consumer) {
        EM_ERROR("cannot create the Kafka consumer", EM_F_STR("error", err));
        goto out;
    }
    if (em_consumer_subscribe(s.consumer, s.topic_requests, err, sizeof(err)) != EM_OK) {
        EM_ERROR("cannot subscribe", EM_F_STR("error", err));
        goto out;
    }
    em_delay_opts_t dopts = {.bootstrap = copts.bootstrap,
                             .client_id = s.svc.replica,
                             .topic = em_config_str(cfg, "kafka.topic_delay"),
                             .extra = copts.extra,
                             .nextra = copts.nextra,
                             .producer = s.producer,
                             .commit_interval_ms = (int)s.commit_interval_ms,
                             .metrics = s.svc.metrics};
    char delay_group[300];
    snprintf(delay_group, sizeof(delay_group), "%s.delay", copts.group_id);
    dopts.group = delay_group;
    s.delay = em_delay_new(&dopts, err, sizeof(err));
    if (!s.delay) {
        EM_ERROR("cannot start the delay runner", EM_F_STR("error", err));
        goto out;
    }
    s.t_cancels = em_producer_topic(s.producer, em_config_str(cfg, "kafka.topic_cancels"));
    em_cancels_opts_t xopts = {.bootstrap = copts.bootstrap,
                               .client_id = s.svc.replica,
                               .topic = em_config_str(cfg, "kafka.topic_cancels"),
                               .extra = copts.extra,
                               .nextra = copts.nextra,
                               .remember_ms = em_config_int(cfg, "cancel.remember_ms"),
                               .max_ids = (size_t)em_config_int(cfg, "cancel.max_remembered"),
                               .on_cancel = sc_cancel_seen,
                               .ctx = &s,
                               .metrics = s.svc.metrics};
    s.cancels = em_cancels_new(&xopts, err, sizeof(err));
    if (!s.cancels) {
        EM_ERROR("cannot start the cancels reader", EM_F_STR("error", err));
        goto out;
    }
    if (*em_config_str(cfg, "tls.cert_file")) {
        char key[320];
        s.authz = em_authz_from_config(cfg, err, sizeof(err), key, sizeof(key)); /* validated: only OOM fails */
        if (!s.authz) {
            EM_ERROR("cannot build the authz table", EM_F_STR("error", err));
            goto out;
        }
        EM_INFO("authorization on", EM_F_INT("groups", (int64_t)em_authz_groups(s.authz)));
    }
    if (em_rpc_server_add_method(s.svc.server, "execmesh.v1.Scheduler", "Submit", sc_on_submit, &s, 128) != EM_OK ||
        em_rpc_server_add_method(s.svc.server, "execmesh.v1.Scheduler", "Cancel", sc_on_cancel, &s, 32) != EM_OK)
        goto out;
    em_metrics_route(s.svc.metrics, "POST", "/admin/", admin_consume, &s);
    em_service_live_source(&s.svc, "consumer", consumer_turned, &s);

    /* serve */
    if (em_service_start(&s.svc) != EM_OK)
        goto out;
    if (pthread_create(&s.consumer_thread, NULL, consumer_main, &s) != 0) {
        EM_ERROR("cannot start the consumer thread");
        goto out;
    }
    consumer_started = 1;
    if (sc_watchdog_start(&s) != EM_OK) {
        EM_ERROR("cannot start the stall watchdog thread");
        goto out;
    }
    watchdog_started = 1;
    em_health_block(s.svc.health, EM_HEALTH_STARTING, 0);
    em_service_wait(&s.svc);

    /* drain: NOT_SERVING; answer the Submit calls in flight; leave the group
     * (in-flight executions finish and are committed, the rest is left to
     * the next owner); make sure every accepted Submit reached Kafka. */
    s.drain_deadline_ms = em_service_drain_begin(&s.svc);
    em_rpc_server_shutdown(s.svc.server, s.drain_deadline_ms);
    atomic_store(&s.stopping, 1);
    pthread_join(s.consumer_thread, NULL);
    consumer_started = 0;
    sc_watchdog_stop(&s);
    watchdog_started = 0;
    int64_t left = s.drain_deadline_ms - em_mono_ms();
    em_producer_flush(s.producer, left > 1000 ? (int)left : 1000);
    rc = 0;
out:
    atomic_store(&s.stopping, 1);
    if (consumer_started)
        pthread_join(s.consumer_thread, NULL);
    if (watchdog_started)
        sc_watchdog_stop(&s);
    em_rpc_server_shutdown(s.svc.server, em_mono_ms());
    /* What fires callbacks goes first, in an order where no callback finds
     * its target gone: the executors' channel cancels its calls (their
     * answers put items back, dispatching and arming nothing: dispatch is
     * closed), then the timers run what is left (dead-letter retries reach
     * the producer, still here). */
    sc_dispatch_close(&s);
    em_rpc_channel_destroy(s.executors);
    s.executors = NULL;
    if (s.svc.timers) {
        em_timers_destroy(s.svc.timers);
        s.svc.timers = NULL;
    }
    sc_cancel_peers_close(&s); /* the timers sent the last cancels: nothing uses them now */
    sc_items_release_all(&s); /* their records go back to the consumer before the consumer goes */
    sc_resources_free(&s);
    em_delay_destroy(s.delay); /* commits what it forwarded; before the producer it uses goes */
    em_cancels_destroy(s.cancels);
    em_consumer_destroy(s.consumer);
    em_producer_destroy(s.producer);
    sc_watchdog_unregister(&s); /* the metrics server still answers scrapes until the cleanup */
    for (int i = 0; i < s.nparts; i++)
        if (s.parts[i]) {
            em_watermark_destroy(s.parts[i]->wm);
            free(s.parts[i]);
        }
    free(s.parts);
    EM_INFO("stopped", EM_F_INT("exit_code", rc));
    em_service_cleanup(&s.svc);
    em_authz_destroy(s.authz);
    return rc;
}
