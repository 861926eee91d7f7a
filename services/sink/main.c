/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmesh-sink: the durable door out. Serves ResultSink.Publish: each call
 * carries a batch of results, which are produced to the results topic
 * without being decoded or copied (the gRPC buffer is the Kafka payload),
 * and the call is answered only after Kafka's delivery report for every one
 * of them. SERVING only while its producer reaches the cluster. A result
 * Kafka would refuse as too large (over kafka.max_message_bytes, or refused
 * by the broker as MSG_SIZE_TOO_LARGE) is answered INVALID_ARGUMENT, not
 * UNAVAILABLE: sending it again could never succeed.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_execution.h"
#include "em_journal.h"
#include "em_log.h"
#include "em_metrics.h"
#include "em_pbwire.h"
#include "em_producer.h"
#include "em_result_counts.h"
#include "em_rpc_server.h"
#include "em_service.h"
#include "em_util.h"
#include "execmesh/v1/internal.pb-c.h"
#include "publish.h"

static const em_setting_t sink_settings[] = {
    EM_SERVICE_SETTINGS("127.0.0.1:7300", "127.0.0.1:9300"),
    EM_KAFKA_SETTINGS,
    {"authz.executors", EM_CFG_STRLIST, "spiffe://execmesh/executor", 0, 64,
     "With TLS on: the identities (certificate URI SAN, else DNS SAN, else CN) that may call Publish; any "
     "other caller gets PERMISSION_DENIED."},
    {"sink.journal", EM_CFG_STR, "", 0, 4095,
     "If set, a line per result received (R), stored (A) or not stored (N) is appended here (for fault tests; costs a write each)."},
    {"sink.max_inflight_results", EM_CFG_INT, "200000", 1, 10000000,
     "Results accepted and awaiting Kafka's delivery report; beyond it Publish answers RESOURCE_EXHAUSTED."},
};

static int validate_sizes(const em_config_t *cfg) { return em_kafka_check_config(cfg, "execmesh-sink"); }

static const em_service_desc_t sink_desc = {
    .name = "sink",
    .program = "execmesh-sink",
    .summary = "writes execution results durably to Kafka (ResultSink.Publish)",
    .settings = sink_settings,
    .nsettings = EM_ARRAY_LEN(sink_settings),
    .validate = validate_sizes,
};

typedef struct sink {
    em_service_t svc;
    em_producer_t *producer;
    rd_kafka_topic_t *results;
    int max_inflight;
    int64_t max_message_bytes; /* kafka.max_message_bytes: the producer's message.max.bytes */
    atomic_int inflight;
    em_journal_t *journal;
    em_metric_t *m_in, *m_out, *m_failed, *m_inflight, *m_calls, *m_calls_failed, *m_end_to_end, *m_too_large;
    em_result_counts_t *counts; /* stored results by handler, status, final */
} sink_t;

/* One Publish call waiting for its delivery reports. */
typedef struct publish {
    em_delivery_t dr;
    sink_t *sink;
    em_rpc_call_t *call;
    const uint8_t *req; /* the request, alive until the call is answered */
    size_t len;
    uint8_t *copy;      /* EM_TEST_EARLY_ACK only: the request outlives the call */
    int n;
    atomic_int pending; /* reports still due, plus one held while producing */
    atomic_int failed;
    atomic_int too_large; /* results Kafka refused as too large: sending them again cannot help */
    _Atomic rd_kafka_resp_err_t first_err;
} publish_t;

/* Writes one journal line per result of the request: tag R (received), A
 * (stored, acknowledged) or N (not stored, answered with an error). */
static void journal_ids(sink_t *s, const uint8_t *req, size_t len, char tag) {
    const uint8_t *p = req, *end = req + len;
    em_pb_field_t f;
    if (!s->journal)
        return;
    while (em_pb_next(&p, end, &f) == EM_OK) {
        const uint8_t *id;
        size_t idlen;
        if (f.number == 1 && f.wire_type == EM_PB_LEN && em_pb_find_len(f.data, f.len, 1, &id, &idlen) == EM_OK)
            em_journal_write(s->journal, "%c %.*s", tag, (int)idlen, (const char *)id);
    }
}

static void publish_finish(publish_t *p) {
    sink_t *s = p->sink;
    int failed = atomic_load(&p->failed);
    atomic_fetch_sub(&s->inflight, p->n);
    em_metric_add(s->m_inflight, -p->n);
    em_metric_add(s->m_out, p->n - failed);
    em_metric_add(s->m_failed, failed);
#ifndef EM_TEST_EARLY_ACK
    int too_large = atomic_load(&p->too_large);
    if (too_large) {
        /* not "try again": the same results would be refused again. Never
         * sent by an executor whose publish.max_result_bytes is at most our
         * kafka.max_message_bytes; here the results topic's
         * max.message.bytes is below it, or the settings disagree. */
        char msg[384];
        snprintf(msg, sizeof(msg),
                 "kafka refused %d of %d results as too large (MSG_SIZE_TOO_LARGE; kafka.max_message_bytes %" PRId64
                 "): the results topic's max.message.bytes must be at least kafka.max_message_bytes + 588, and the "
                 "executors' publish.max_result_bytes at most kafka.max_message_bytes",
                 too_large, p->n, s->max_message_bytes);
        EM_ERROR("results refused by Kafka as too large; Publish answered INVALID_ARGUMENT", EM_F_STR("reason", msg));
        em_metric_add(s->m_calls_failed, 1);
        em_metric_add(s->m_too_large, too_large);
        journal_ids(s, p->req, p->len, 'N');
        em_rpc_call_fail(p->call, GRPC_STATUS_INVALID_ARGUMENT, msg);
    } else if (failed) {
        char msg[256];
        snprintf(msg, sizeof(msg), "kafka: %d of %d results not stored: %s", failed, p->n,
                 rd_kafka_err2str(atomic_load(&p->first_err)));
        em_metric_add(s->m_calls_failed, 1);
        journal_ids(s, p->req, p->len, 'N');
        em_rpc_call_fail(p->call, GRPC_STATUS_UNAVAILABLE, msg);
    } else {
        Execmesh__V1__PublishResponse resp = EXECMESH__V1__PUBLISH_RESPONSE__INIT;
        resp.stored = (uint32_t)p->n;
        journal_ids(s, p->req, p->len, 'A');
        em_rpc_call_reply(p->call, &resp.base);
    }
#endif
    free(p->copy);
    free(p);
}

static void publish_release(publish_t *p, int count) {
    if (atomic_fetch_sub(&p->pending, count) == count)
        publish_finish(p);
}

/* Runs on the producer's poll thread. */
static void on_delivery(em_delivery_t *d, const rd_kafka_message_t *msg) {
    publish_t *p = (publish_t *)d;
    if (!msg->err) {
        /* stored: counted by handler and status, and its end-to-end time
         * observed, from the execution's submit time (a Submit's arrival,
         * the requests record's timestamp, or an open-loop generator's
         * scheduled time) to this delivery report */
        em_result_info_t r; /* one em_result_read refuses (a foreign executor's) counts as _unknown, unspecified */
        if (em_result_read(msg->payload, msg->len, &r) != EM_OK)
            memset(&r, 0, sizeof(r));
        em_result_counts_add(p->sink->counts, r.handler, r.handler_len, r.status, r.final);
        if (r.submitted_unix_ms > 0) {
            int64_t ms = em_now_unix_ms() - r.submitted_unix_ms;
            em_metric_observe(p->sink->m_end_to_end, (ms > 0 ? ms : 0) * 1000);
        }
    }
    if (msg->err) {
        rd_kafka_resp_err_t none = RD_KAFKA_RESP_ERR_NO_ERROR;
        atomic_compare_exchange_strong(&p->first_err, &none, msg->err);
        atomic_fetch_add(&p->failed, 1);
        if (msg->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
            atomic_fetch_add(&p->too_large, 1);
    }
    publish_release(p, 1);
}

/* Runs on the gRPC loop thread. */
static void on_publish(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len) {
    sink_t *s = ctx;
    char msg[512];

    em_metric_add(s->m_calls, 1);
    /* Count the results (the top level only). */
    int n = sink_publish_count(req, len);
    if (n < 0) {
        em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "PublishRequest: cannot decode");
        return;
    }
    if (n == 0) {
        Execmesh__V1__PublishResponse resp = EXECMESH__V1__PUBLISH_RESPONSE__INIT;
        em_rpc_call_reply(call, &resp.base);
        return;
    }
    if (atomic_load(&s->inflight) + n > s->max_inflight) {
        snprintf(msg, sizeof(msg), "sink at capacity: %d results awaiting Kafka, limit %d", atomic_load(&s->inflight),
                 s->max_inflight);
        em_metric_add(s->m_calls_failed, 1);
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return;
    }

    publish_t *pub = calloc(1, sizeof(*pub));
    rd_kafka_message_t *msgs = calloc((size_t)n, sizeof(*msgs));
    if (!pub || !msgs) {
        free(pub);
        free(msgs);
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "sink: out of memory");
        return;
    }
#ifdef EM_TEST_EARLY_ACK
    /* the call is answered before the deliveries: keep the bytes ourselves */
    pub->copy = malloc(len);
    if (!pub->copy)
        abort();
    memcpy(pub->copy, req, len);
    req = pub->copy;
#endif
    /* Each result once: checked whole (a malformed batch stores nothing),
     * keyed by its id, pointing into the request, which stays alive until
     * the call is answered, i.e. after the last delivery report. */
    em_err_t rc = sink_publish_read(req, len, s->max_message_bytes, msgs, n, msg, sizeof(msg));
    if (rc != EM_OK) {
        if (rc == EM_ETOOBIG) { /* refused whole, nothing of the call stored */
            EM_ERROR("publish refused: a result larger than Kafka's limit", EM_F_STR("reason", msg));
            em_metric_add(s->m_calls_failed, 1);
            em_metric_add(s->m_too_large, 1);
        }
        free(pub->copy);
        free(pub);
        free(msgs);
        em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    for (int i = 0; i < n; i++)
        msgs[i]._private = &pub->dr;
    em_metric_add(s->m_in, n);
    pub->dr.done = on_delivery;
    pub->sink = s;
    pub->call = call;
    pub->req = req;
    pub->len = len;
    pub->n = n;
    journal_ids(s, req, len, 'R');
    atomic_init(&pub->pending, n + 1);
    atomic_fetch_add(&s->inflight, n);
    em_metric_add(s->m_inflight, n);
#ifdef EM_TEST_EARLY_ACK
    /* TEST ONLY: acknowledge before Kafka has the results. */
    {
        Execmesh__V1__PublishResponse resp = EXECMESH__V1__PUBLISH_RESPONSE__INIT;
        resp.stored = (uint32_t)n;
        em_rpc_call_reply(call, &resp.base);
    }
#endif
    int queued = em_producer_send_batch(s->producer, s->results, msgs, n);
    if (queued < n) {
        int not_queued = 0;
        for (int k = 0; k < n; k++)
            if (msgs[k].err) {
                rd_kafka_resp_err_t none = RD_KAFKA_RESP_ERR_NO_ERROR;
                atomic_compare_exchange_strong(&pub->first_err, &none, msgs[k].err);
                if (msgs[k].err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
                    atomic_fetch_add(&pub->too_large, 1);
                not_queued++;
            }
        atomic_fetch_add(&pub->failed, not_queued);
        publish_release(pub, not_queued);
    }
    free(msgs);
    publish_release(pub, 1);
}

static void register_metrics(sink_t *s) {
    em_metrics_t *m = s->svc.metrics;
    s->m_in = em_metrics_counter(m, "execmesh_executions_in_total", NULL, "Results received by Publish.");
    s->m_out = em_metrics_counter(m, "execmesh_executions_out_total", NULL, "Results stored in Kafka (delivery report OK).");
    s->m_failed = em_metrics_counter(m, "execmesh_executions_failed_total", NULL, "Results Kafka did not store.");
    s->m_inflight = em_metrics_gauge(m, "execmesh_inflight", NULL, "Results awaiting Kafka's delivery report.");
    s->m_calls = em_metrics_counter(m, "execmesh_sink_publish_calls_total", NULL, "Publish calls received.");
    s->m_calls_failed =
        em_metrics_counter(m, "execmesh_sink_publish_failed_total", NULL, "Publish calls answered with an error.");
    em_metrics_counter(m, "execmesh_dead_lettered_total", NULL, "Records sent to the dead-letter topic (none here).");
    s->m_too_large = em_metrics_counter(m, "execmesh_sink_results_too_large_total", NULL,
                                        "Results refused as larger than kafka.max_message_bytes (Publish answered "
                                        "INVALID_ARGUMENT).");
    /* fine buckets below a second: the bench reads its latency percentiles here */
    static const int64_t bounds[] = {
        1000,     2000,     3000,     4000,     5000,     6000,     7000,     8000,      9000,      10000,
        12000,    14000,    16000,    18000,    20000,    25000,    30000,    35000,     40000,     45000,
        50000,    60000,    70000,    80000,    90000,    100000,   125000,   150000,    200000,    250000,
        300000,   400000,   500000,   750000,   1000000,  1500000,  2000000,  3000000,   5000000,   10000000,
        30000000, 60000000, 300000000, 600000000, 1800000000, 3600000000};
    s->m_end_to_end = em_metrics_histogram(m, "execmesh_sink_end_to_end_seconds", NULL,
                                           "Seconds from an execution's submit time to its result's delivery "
                                           "report (the result is durable).",
                                           bounds, (int)EM_ARRAY_LEN(bounds), EM_METRICS_US);
    s->counts = em_result_counts_new(m, "execmesh_sink_results_total",
                                      "Results stored in Kafka by handler, status and whether final (the "
                                      "execution's end); handlers past the first 64 names count as _other.",
                                      1, 64);
}

/* Results received and not yet answered: a stop now would make their
 * executors publish them again. */
static int sink_holds_work(void *ctx) {
    sink_t *s = ctx;
    return atomic_load(&s->inflight) > 0;
}

int main(int argc, char **argv) {
    static sink_t s;
    char err[512];
    int rc = em_service_init(&s.svc, &sink_desc, argc, argv);
    if (rc >= 0)
        return rc;
    const em_config_t *cfg = s.svc.cfg;
    rc = 1;

    /* the parts */
    register_metrics(&s);
    em_service_work_source(&s.svc, sink_holds_work, &s);
    em_err_t jerr;
    s.journal = em_journal_open(em_config_str(cfg, "sink.journal"), &jerr);
    if (jerr != EM_OK) {
        fprintf(stderr, "execmesh-sink: config refused: %s: key 'sink.journal': cannot open '%s'\n",
                em_config_source(cfg, "sink.journal"), em_config_str(cfg, "sink.journal"));
        rc = 2;
        goto out;
    }
    s.max_inflight = (int)em_config_int(cfg, "sink.max_inflight_results");
    s.max_message_bytes = em_config_int(cfg, "kafka.max_message_bytes");
    const char *extra[EM_KAFKA_MAX_EXTRA];
    em_producer_opts_t po;
    em_producer_opts_from_config(cfg, s.svc.replica, extra, &po);
    po.probe_topic = em_config_str(cfg, "kafka.topic_results");
    po.health = s.svc.health;
    s.producer = em_producer_new(&po, err, sizeof(err));
    if (!s.producer) {
        EM_ERROR("cannot create the Kafka producer", EM_F_STR("error", err));
        goto out;
    }
    s.results = em_producer_topic(s.producer, em_config_str(cfg, "kafka.topic_results"));
    if (em_rpc_server_add_method(s.svc.server, "execmesh.v1.ResultSink", "Publish", on_publish, &s, 256) != EM_OK ||
        em_service_allow(&s.svc, "execmesh.v1.ResultSink", "Publish", "authz.executors") != EM_OK)
        goto out;

    /* serve */
    if (em_service_start(&s.svc) != EM_OK)
        goto out;
    em_health_block(s.svc.health, EM_HEALTH_STARTING, 0);
    em_service_wait(&s.svc);

    /* drain: NOT_SERVING, then answer every Publish in flight (each waits
     * for its delivery reports), then make sure Kafka has everything. */
    int64_t deadline = em_service_drain_begin(&s.svc);
    em_rpc_server_shutdown(s.svc.server, deadline);
    int64_t left = deadline - em_mono_ms();
    if (em_producer_flush(s.producer, left > 1000 ? (int)left : 1000) != EM_OK)
        EM_WARN("drain: results still unreported at the deadline", EM_F_INT("queued", em_producer_outq(s.producer)));
    rc = 0;
out:
    em_rpc_server_shutdown(s.svc.server, em_mono_ms());
    em_producer_destroy(s.producer);
    EM_INFO("stopped", EM_F_INT("exit_code", rc));
    em_journal_close(s.journal);
    em_service_cleanup(&s.svc);
    em_result_counts_destroy(s.counts);
    return rc;
}
