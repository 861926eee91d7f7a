/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmeshctl get, tail and trace: the readers of the results topic.
 *
 * get and trace look for one id, so they read only the partition the id's
 * results are produced to (the sink keys them by id with librdkafka's
 * default partitioner; --all-partitions reads every partition, for a topic
 * whose partitions were added since or written by another partitioner),
 * from the beginning of what the topic keeps (or --lookback-ms). tail reads
 * every partition from the end (or --from-beginning) and prints each
 * result that passes its filters, one JSON line each.
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "em_trace.h"
#include "em_util.h"

#define RESULTS_DEFAULT_TOPIC "execmesh.results"
#define RESULTS_MAX_STATUSES 16

static volatile sig_atomic_t stop_asked;

static void on_stop(int sig) {
    (void)sig;
    stop_asked = 1;
}

/* SIGINT and SIGTERM end a follow cleanly (the consumer is closed). */
static void catch_stop(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* The options the three commands share. */
typedef struct rargs {
    const char *bootstrap, *topic;
    int64_t timeout_ms, lookback_ms;
    int all_partitions, json;
    const char *sec[EM_KAFKA_MAX_SECURITY];
    size_t nsec;
} rargs_t;

enum { OPT_BOOTSTRAP = 1000, OPT_TOPIC, OPT_TIMEOUT, OPT_LOOKBACK, OPT_ALL, OPT_SET, OPT_HELP, OPT_JSON,
       OPT_PREFIX, OPT_STATUS, OPT_HANDLER, OPT_BEGINNING, OPT_COUNT, OPT_FINAL };

#define RESULTS_COMMON_OPTS                                                                                          \
    {"bootstrap", required_argument, NULL, OPT_BOOTSTRAP}, {"results-topic", required_argument, NULL, OPT_TOPIC},   \
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT}, {"set", required_argument, NULL, OPT_SET},            \
        {"help", no_argument, NULL, OPT_HELP}
#define RESULTS_COMMON_HELP                                                                                          \
    "  --bootstrap     Kafka bootstrap servers (default 127.0.0.1:9092)\n"                                           \
    "  --results-topic the results topic (default " RESULTS_DEFAULT_TOPIC ")\n" CTL_KAFKA_SET_HELP

/* One common option: 0 taken, 2 refused, -1 not one of them. */
static int common_opt(const char *cmd, int c, rargs_t *a) {
    switch (c) {
    case OPT_BOOTSTRAP: a->bootstrap = optarg; return 0;
    case OPT_TOPIC: a->topic = optarg; return 0;
    case OPT_TIMEOUT: return ctl_parse_i64(cmd, "timeout-ms", optarg, 0, INT32_MAX, &a->timeout_ms);
    case OPT_LOOKBACK: return ctl_parse_i64(cmd, "lookback-ms", optarg, 1, INT64_MAX / 2, &a->lookback_ms);
    case OPT_ALL: a->all_partitions = 1; return 0;
    case OPT_JSON: a->json = 1; return 0;
    case OPT_SET: return ctl_set(cmd, optarg) != 0 ? 2 : 0;
    default: return -1;
    }
}

static ctl_reader_t *open_reader(const char *cmd, rargs_t *a, ctl_from_t from, const char *key) {
    char err[512];
    ctl_reader_opts_t o = {.bootstrap = a->bootstrap, .topic = a->topic, .sec = a->sec, .nsec = a->nsec,
                           .from = from, .timeout_ms = 10000};
    if (a->lookback_ms)
        o.since_unix_ms = em_now_unix_ms() - a->lookback_ms;
    if (key && !a->all_partitions) {
        o.key = key;
        o.key_len = strlen(key);
    }
    ctl_reader_t *r = ctl_reader_new(&o, err, sizeof(err));
    if (!r)
        fprintf(stderr, "execmeshctl %s: %s\n", cmd, err);
    return r;
}

static int key_is(const rd_kafka_message_t *m, const char *id) {
    return m->key && m->key_len == strlen(id) && memcmp(m->key, id, m->key_len) == 0;
}

/* ---- get ---------------------------------------------------------------- */

static void usage_get(FILE *out) {
    fprintf(out, "Usage: execmeshctl get ID [--timeout-ms N] [--lookback-ms N] [--all-partitions]\n"
                 "                       [--bootstrap HOST:PORT] [--results-topic T] [--set KEY=VALUE]...\n"
                 "Waits for the final result of execution ID on the results topic (one already there counts)\n"
                 "and prints it as JSON. Exit 0 SUCCEEDED, 1 another final status, 3 none within --timeout-ms.\n"
                 "  --timeout-ms    how long to wait (default 30000)\n"
                 "  --lookback-ms   look only at results of the last N ms (default: all the topic keeps)\n"
                 "  --all-partitions read every partition, not only the one the id is produced to\n"
                 RESULTS_COMMON_HELP);
}

/* The options of get and trace, which name one execution: -1 with *id set
 * when the command goes on, else its exit code (help 0, usage 2). */
static int one_id_args(const char *cmd, int argc, char **argv, const struct option *opts, void (*usage)(FILE *out),
                       rargs_t *a, const char **id) {
    int c;
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == OPT_HELP)
            return ctl_usage_exit(usage, 1);
        int r = common_opt(cmd, c, a);
        if (r == 0)
            continue;
        return r > 0 ? r : ctl_usage_exit(usage, 0);
    }
    if (optind + 1 != argc || !*argv[optind]) {
        fprintf(stderr, "execmeshctl %s: name exactly one execution id (%s --help)\n", cmd, cmd);
        return 2;
    }
    *id = argv[optind];
    return ctl_kafka_props(cmd, a->sec, &a->nsec) != 0 ? 2 : -1;
}

int ctl_get(int argc, char **argv) {
    static const struct option opts[] = {RESULTS_COMMON_OPTS,
                                         {"lookback-ms", required_argument, NULL, OPT_LOOKBACK},
                                         {"all-partitions", no_argument, NULL, OPT_ALL},
                                         {NULL, 0, NULL, 0}};
    rargs_t a = {.bootstrap = "127.0.0.1:9092", .topic = RESULTS_DEFAULT_TOPIC, .timeout_ms = 30000};
    const char *id;
    int exit_code = one_id_args("get", argc, argv, opts, usage_get, &a, &id);
    if (exit_code >= 0)
        return exit_code;
    ctl_reader_t *rd = open_reader("get", &a, CTL_FROM_BEGINNING, id);
    if (!rd)
        return 3;
    int rc = 3;
    uint32_t last_attempt = 0;
    int last_status = 0;
    int64_t until = em_mono_ms() + a.timeout_ms;
    catch_stop();
    while (rc == 3 && !stop_asked) {
        int64_t left = until - em_mono_ms();
        rd_kafka_message_t *m = ctl_reader_next(rd, (int)(left < 0 ? 0 : left > 100 ? 100 : left));
        if (m && key_is(m, id)) {
            Execmesh__V1__Result *r = execmesh__v1__result__unpack(NULL, m->len, m->payload);
            if (r && strcmp(r->id, id) == 0) {
                if (r->final) {
                    ctl_print_result(stdout, r, -1);
                    rc = r->status == EXECMESH__V1__STATUS__SUCCEEDED ? 0 : 1;
                } else if (r->attempt >= last_attempt) {
                    last_attempt = r->attempt;
                    last_status = r->status;
                }
            }
            if (r)
                execmesh__v1__result__free_unpacked(r, NULL);
        }
        if (m)
            rd_kafka_message_destroy(m);
        if (em_mono_ms() >= until)
            break;
    }
    if (rc == 3) {
        if (last_attempt)
            fprintf(stderr, "execmeshctl get: no final result for %s within %" PRId64 " ms (attempt %u ended %s and "
                            "is to be retried)\n", id, a.timeout_ms, last_attempt, ctl_status_name(last_status));
        else
            fprintf(stderr, "execmeshctl get: no result for %s on %s within %" PRId64 " ms\n", id, a.topic,
                    a.timeout_ms);
    }
    ctl_reader_destroy(rd);
    return rc;
}

/* ---- tail --------------------------------------------------------------- */

static void usage_tail(FILE *out) {
    fprintf(out,
            "Usage: execmeshctl tail [--from-beginning] [--id-prefix P] [--status S[,S...]] [--handler H] [--final]\n"
            "                        [--count N] [--timeout-ms N] [--bootstrap HOST:PORT] [--results-topic T]\n"
            "                        [--set KEY=VALUE]...\n"
            "Follows the results topic and prints each result (one JSON line) that passes every filter, until\n"
            "--count results were printed, --timeout-ms passed, or Ctrl-C. Exit 0; 1 when --count was not\n"
            "reached in time.\n"
            "  --from-beginning start at the oldest result the topic keeps (default: only new ones)\n"
            "  --id-prefix     only ids that start with P\n"
            "  --status        only these statuses (SUCCEEDED, FAILED, TIMED_OUT, REJECTED, EXHAUSTED, CANCELLED)\n"
            "  --handler       only this handler\n"
            "  --final         only results that end their execution (no attempt follows)\n"
            RESULTS_COMMON_HELP);
}

int ctl_tail(int argc, char **argv) {
    static const struct option opts[] = {RESULTS_COMMON_OPTS,
                                         {"from-beginning", no_argument, NULL, OPT_BEGINNING},
                                         {"id-prefix", required_argument, NULL, OPT_PREFIX},
                                         {"status", required_argument, NULL, OPT_STATUS},
                                         {"handler", required_argument, NULL, OPT_HANDLER},
                                         {"final", no_argument, NULL, OPT_FINAL},
                                         {"count", required_argument, NULL, OPT_COUNT},
                                         {NULL, 0, NULL, 0}};
    rargs_t a = {.bootstrap = "127.0.0.1:9092", .topic = RESULTS_DEFAULT_TOPIC, .timeout_ms = 0};
    const char *prefix = "", *handler = NULL;
    int statuses[RESULTS_MAX_STATUSES], nstatus = 0, from_beginning = 0, final_only = 0, c;
    int64_t count = 0;
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_HELP: return ctl_usage_exit(usage_tail, 1);
        case OPT_BEGINNING: from_beginning = 1; continue;
        case OPT_PREFIX: prefix = optarg; continue;
        case OPT_HANDLER: handler = optarg; continue;
        case OPT_FINAL: final_only = 1; continue;
        case OPT_COUNT:
            if (ctl_parse_i64("tail", "count", optarg, 1, INT64_MAX, &count) != 0)
                return 2;
            continue;
        case OPT_STATUS: {
            char *copy = strdup(optarg);
            for (char *save = NULL, *s = strtok_r(copy, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
                int v = ctl_status_parse(s);
                if (v <= 0 || nstatus == RESULTS_MAX_STATUSES) {
                    fprintf(stderr, "execmeshctl tail: --status %s: '%s' is not a status (SUCCEEDED, FAILED, "
                                    "TIMED_OUT, REJECTED, EXHAUSTED, CANCELLED)\n", optarg, s);
                    free(copy);
                    return 2;
                }
                statuses[nstatus++] = v;
            }
            free(copy);
            if (!nstatus) {
                fprintf(stderr, "execmeshctl tail: --status needs at least one status\n");
                return 2;
            }
            continue;
        }
        default: {
            int r = common_opt("tail", c, &a);
            if (r == 0)
                continue;
            return r > 0 ? r : ctl_usage_exit(usage_tail, 0);
        }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "execmeshctl tail: unexpected argument '%s' (tail --help)\n", argv[optind]);
        return 2;
    }
    if (ctl_kafka_props("tail", a.sec, &a.nsec) != 0)
        return 2;
    ctl_reader_t *rd = open_reader("tail", &a, from_beginning ? CTL_FROM_BEGINNING : CTL_FROM_END, NULL);
    if (!rd)
        return 3;
    /* from here nothing written to the topic can be missed: say so (a script may wait for it) */
    fprintf(stderr, "execmeshctl tail: following %s from the %s\n", a.topic, from_beginning ? "beginning" : "end");
    fflush(stderr);
    catch_stop();
    int64_t printed = 0, until = a.timeout_ms ? em_mono_ms() + a.timeout_ms : INT64_MAX;
    size_t plen = strlen(prefix);
    while (!stop_asked && (!count || printed < count) && em_mono_ms() < until) {
        rd_kafka_message_t *m = ctl_reader_next(rd, 100);
        if (!m)
            continue;
        Execmesh__V1__Result *r = execmesh__v1__result__unpack(NULL, m->len, m->payload);
        int ok = r && strncmp(r->id, prefix, plen) == 0 && (!handler || strcmp(r->handler, handler) == 0) &&
                 (!final_only || r->final);
        if (ok && nstatus) {
            ok = 0;
            for (int i = 0; i < nstatus; i++)
                ok |= (int)r->status == statuses[i];
        }
        if (ok) {
            ctl_print_result(stdout, r, -1);
            fflush(stdout);
            printed++;
        }
        if (r)
            execmesh__v1__result__free_unpacked(r, NULL);
        rd_kafka_message_destroy(m);
    }
    ctl_reader_destroy(rd);
    if (count && printed < count) {
        fprintf(stderr, "execmeshctl tail: %" PRId64 " of --count %" PRId64 " results%s\n", printed, count,
                stop_asked ? " before the signal" : " within --timeout-ms");
        return 1;
    }
    return 0;
}

/* ---- trace -------------------------------------------------------------- */

/* One result record of the execution, or one attempt known only from the
 * final result's history. */
typedef struct hop {
    uint32_t attempt;
    int status, final, from_history;
    char *executor, *error;
    int32_t exit_code;
    int64_t submitted, dispatched, started, finished, published; /* unix ms, 0 unknown */
    int32_t partition;
    int64_t offset;
    uint32_t retry_delay_ms;
    char trace_id[64];
    int records; /* result records of this attempt (more than one: a counted duplicate) */
} hop_t;

static void fmt_time(char *buf, size_t n, int64_t ms) {
    if (!ms) {
        snprintf(buf, n, "-");
        return;
    }
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, n, "%s.%03dZ", base, (int)(ms % 1000));
}

static void usage_trace(FILE *out) {
    fprintf(out,
            "Usage: execmeshctl trace ID [--json] [--timeout-ms N] [--lookback-ms N] [--all-partitions]\n"
            "                         [--bootstrap HOST:PORT] [--results-topic T] [--set KEY=VALUE]...\n"
            "Shows the journey of execution ID from its results: per attempt when it was submitted,\n"
            "dispatched to an executor, started, finished and published (the result record's Kafka time), the\n"
            "executor, status, error and the trace id of its traceparent header (without one: the trace id\n"
            "every replica derives from its id). Attempts that never reached\n"
            "a sink come from the final result's history. Exit 0 printed, 1 no result of ID, 3 Kafka\n"
            "unreachable.\n"
            "  --json          one JSON object instead of text\n"
            "  --timeout-ms    wait this long for the final result when it is not there yet (default 0)\n"
            "  --lookback-ms   look only at results of the last N ms (default: all the topic keeps)\n"
            "  --all-partitions read every partition, not only the one the id is produced to\n"
            RESULTS_COMMON_HELP);
}

static int hop_cmp(const void *x, const void *y) {
    const hop_t *a = x, *b = y;
    if (a->attempt != b->attempt)
        return a->attempt < b->attempt ? -1 : 1;
    return a->from_history - b->from_history;
}

static void json_hop(const hop_t *h) {
    printf("{\"attempt\":%u,\"status\":\"%s\",\"final\":%s,\"source\":\"%s\",\"executor\":", h->attempt,
           ctl_status_name(h->status), h->final ? "true" : "false", h->from_history ? "history" : "result");
    ctl_json_str(stdout, h->executor, strlen(h->executor));
    printf(",\"error\":");
    ctl_json_str(stdout, h->error, strlen(h->error));
    printf(",\"exit_code\":%d,\"submitted_unix_ms\":%" PRId64 ",\"dispatched_unix_ms\":%" PRId64
           ",\"started_unix_ms\":%" PRId64 ",\"finished_unix_ms\":%" PRId64 ",\"published_unix_ms\":%" PRId64,
           h->exit_code, h->submitted, h->dispatched, h->started, h->finished, h->published);
    if (!h->from_history)
        printf(",\"partition\":%d,\"offset\":%" PRId64 ",\"records\":%d", h->partition, h->offset, h->records);
    if (!h->final && h->retry_delay_ms)
        printf(",\"retry_delay_ms\":%u", h->retry_delay_ms);
    printf(",\"trace_id\":");
    ctl_json_str(stdout, h->trace_id, strlen(h->trace_id));
    printf("}");
}

static void text_step(const char *name, int64_t t, int64_t base) {
    char ts[40];
    fmt_time(ts, sizeof(ts), t);
    if (t && base)
        printf("  %-10s %s  (+%" PRId64 " ms)\n", name, ts, t - base);
    else
        printf("  %-10s %s\n", name, ts);
}

int ctl_trace(int argc, char **argv) {
    static const struct option opts[] = {RESULTS_COMMON_OPTS,
                                         {"lookback-ms", required_argument, NULL, OPT_LOOKBACK},
                                         {"all-partitions", no_argument, NULL, OPT_ALL},
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {NULL, 0, NULL, 0}};
    rargs_t a = {.bootstrap = "127.0.0.1:9092", .topic = RESULTS_DEFAULT_TOPIC, .timeout_ms = 0};
    const char *id;
    int exit_code = one_id_args("trace", argc, argv, opts, usage_trace, &a, &id);
    if (exit_code >= 0)
        return exit_code;
    ctl_reader_t *rd = open_reader("trace", &a, CTL_FROM_BEGINNING, id);
    if (!rd)
        return 3;
    hop_t *hops = NULL;
    size_t nh = 0, cap = 0;
    Execmesh__V1__Result *final = NULL;
    int64_t final_published = 0;
    char handler[256] = "", trace_id[64] = "";
    int64_t until = em_mono_ms() + a.timeout_ms;
    int rc = 0;
    catch_stop();
    /* read everything there is now, then (--timeout-ms) wait for the final result */
    while (!stop_asked && (!ctl_reader_caught_up(rd) || (!final && em_mono_ms() < until))) {
        rd_kafka_message_t *m = ctl_reader_next(rd, 100);
        if (!m)
            continue;
        Execmesh__V1__Result *r = key_is(m, id) ? execmesh__v1__result__unpack(NULL, m->len, m->payload) : NULL;
        if (r && strcmp(r->id, id) == 0) {
            rd_kafka_timestamp_type_t tt;
            int64_t ts = rd_kafka_message_timestamp(m, &tt);
            hop_t *same = NULL;
            for (size_t i = 0; i < nh; i++)
                if (hops[i].attempt == r->attempt && !hops[i].from_history)
                    same = &hops[i];
            if (same) {
                same->records++; /* a duplicate: the first one stays */
            } else if (em_grow(&hops, &cap, nh + 1, sizeof(*hops)) == 0) {
                hop_t *h = &hops[nh++];
                memset(h, 0, sizeof(*h));
                h->attempt = r->attempt;
                h->status = r->status;
                h->final = r->final;
                h->executor = strdup(r->executor);
                h->error = strdup(r->error);
                h->exit_code = r->exit_code;
                h->submitted = r->submitted_unix_ms;
                h->dispatched = r->dispatched_unix_ms;
                h->started = r->started_unix_ms;
                h->finished = r->finished_unix_ms;
                h->published = ts > 0 ? ts : 0;
                h->partition = m->partition;
                h->offset = m->offset;
                h->retry_delay_ms = r->retry_delay_ms;
                h->records = 1;
                const char *tp = NULL;
                for (size_t i = 0; i < r->n_headers; i++)
                    if (strcmp(r->headers[i]->key, "traceparent") == 0)
                        tp = r->headers[i]->value;
                char kh[256];
                if (!tp && ctl_kafka_header(m, "traceparent", kh, sizeof(kh)))
                    tp = kh;
                /* its traceparent's trace id; without one (a record produced
                 * straight to Kafka), the one every replica derives from its id */
                em_trace_id_of((const uint8_t *)tp, tp ? strlen(tp) : 0, (const uint8_t *)id, strlen(id), h->trace_id);
                snprintf(trace_id, sizeof(trace_id), "%s", h->trace_id);
                if (*r->handler)
                    snprintf(handler, sizeof(handler), "%s", r->handler);
            }
            if (r->final && !final) {
                final = r;
                final_published = ts > 0 ? ts : 0;
                r = NULL;
            }
        }
        if (r)
            execmesh__v1__result__free_unpacked(r, NULL);
        rd_kafka_message_destroy(m);
    }
    ctl_reader_destroy(rd);
    /* attempts known only from the final result's history: they never reached a sink */
    for (size_t k = 0; final && k < final->n_history; k++) {
        const Execmesh__V1__Attempt *at = final->history[k];
        int have = 0;
        for (size_t i = 0; i < nh; i++)
            have |= hops[i].attempt == at->attempt && !hops[i].from_history;
        if (have || em_grow(&hops, &cap, nh + 1, sizeof(*hops)) != 0)
            continue;
        hop_t *h = &hops[nh++];
        memset(h, 0, sizeof(*h));
        h->attempt = at->attempt;
        h->status = at->status;
        h->from_history = 1;
        h->executor = strdup(at->executor);
        h->error = strdup(at->error);
        h->exit_code = at->exit_code;
        h->started = at->started_unix_ms;
        h->finished = at->finished_unix_ms;
        h->submitted = final->submitted_unix_ms;
    }
    if (nh > 1)
        qsort(hops, nh, sizeof(*hops), hop_cmp);
    if (nh == 0) {
        fprintf(stderr, "execmeshctl trace: no result of %s on %s\n", id, a.topic);
        rc = 1;
    } else if (a.json) {
        printf("{\"id\":");
        ctl_json_str(stdout, id, strlen(id));
        printf(",\"handler\":");
        ctl_json_str(stdout, handler, strlen(handler));
        printf(",\"trace_id\":");
        ctl_json_str(stdout, trace_id, strlen(trace_id));
        printf(",\"final_status\":%s%s%s,\"attempts\":[", final ? "\"" : "",
               final ? ctl_status_name(final->status) : "null", final ? "\"" : "");
        for (size_t i = 0; i < nh; i++) {
            if (i)
                putchar(',');
            json_hop(&hops[i]);
        }
        printf("]}\n");
    } else {
        printf("execution %s  handler %s  trace %s\n", id, *handler ? handler : "?", *trace_id ? trace_id : "-");
        for (size_t i = 0; i < nh; i++) {
            const hop_t *h = &hops[i];
            printf("attempt %u  %s%s  executor %s%s\n", h->attempt, ctl_status_name(h->status),
                   h->final ? " (final)" : "", *h->executor ? h->executor : "?",
                   h->from_history ? "  [no result record: it never reached a sink; from the final result's history]"
                                   : "");
            int64_t base = h->submitted;
            text_step("submitted", h->submitted, 0);
            if (!h->from_history)
                text_step("dispatched", h->dispatched, base);
            text_step("started", h->started, base);
            text_step("finished", h->finished, base);
            if (!h->from_history) {
                text_step("published", h->published, base);
                printf("  record     %s/%d@%" PRId64 "%s\n", a.topic, h->partition, h->offset,
                       h->records > 1 ? "  (and duplicates)" : "");
            }
            if (*h->error || h->exit_code)
                printf("  error      %s (exit code %d)\n", *h->error ? h->error : "-", h->exit_code);
            if (!h->final && h->retry_delay_ms)
                printf("  retry      after %u ms\n", h->retry_delay_ms);
        }
        if (final)
            printf("final: %s after %u attempt%s, %" PRId64 " ms from submit to publish\n",
                   ctl_status_name(final->status), final->attempt, final->attempt == 1 ? "" : "s",
                   final_published && final->submitted_unix_ms ? final_published - final->submitted_unix_ms : 0);
        else
            printf("final: none yet (no final result on %s)\n", a.topic);
    }
    for (size_t i = 0; i < nh; i++) {
        free(hops[i].executor);
        free(hops[i].error);
    }
    free(hops);
    if (final)
        execmesh__v1__result__free_unpacked(final, NULL);
    return rc;
}
