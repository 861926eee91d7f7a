/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmeshctl: the operator's command-line client.
 *   submit   submits one execution through Scheduler.Submit, then waits for
 *            its result on the results topic and prints it as JSON
 *   health   asks every replica behind a target for its health
 *   status   shows the consumer group's partitions, owners and lag
 *            (status.c)
 * Exit codes: 0 success (result SUCCEEDED / all SERVING / report printed),
 * 1 the execution ended otherwise or a replica is not SERVING, 2 usage
 * error, 3 a call or the wait for the result failed, or Kafka unreachable.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>

#include "ctl.h"
#include "em_config.h"
#include "em_kafka.h"
#include "em_log.h"
#include "em_rpc.h"
#include "em_rpc_channel.h"
#include "em_service.h"
#include "em_util.h"
#include "execmesh/v1/execmesh.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

/* ---- --set of the services' Kafka security and TLS keys ----------------- */

static em_config_t *ctl_cfg; /* made by the first --set */

int ctl_set(const char *cmd, const char *assignment) {
    static const em_setting_t table[] = {EM_KAFKA_SECURITY_SETTINGS, EM_TLS_SETTINGS};
    char err[512];
    if (!ctl_cfg && !(ctl_cfg = em_config_new("execmeshctl", table, EM_ARRAY_LEN(table), err, sizeof(err)))) {
        fprintf(stderr, "execmeshctl %s: %s\n", cmd, err);
        return 2;
    }
    if (em_config_set(ctl_cfg, assignment, err, sizeof(err)) != EM_OK) {
        fprintf(stderr, "execmeshctl %s: --set %s: %s (the Kafka security and tls.* keys only)\n", cmd, assignment,
                err);
        return 2;
    }
    return 0;
}

/* The tls.* of --set into *t (zero: plaintext): 0, or 2 after printing the
 * refusal naming the key (some of the three files only, an unreadable one). */
static int ctl_tls(const char *cmd, em_tls_opts_t *t) {
    const char *key = "tls.cert_file";
    char err[512];
    memset(t, 0, sizeof(*t));
    if (!ctl_cfg)
        return 0;
    em_service_tls_opts(ctl_cfg, t);
    if (em_tls_check(t, &key, err, sizeof(err)) != 0) {
        fprintf(stderr, "execmeshctl %s: --set %s: %s\n", cmd, key, err);
        return 2;
    }
    return 0;
}

int ctl_kafka_props(const char *cmd, const char *props[EM_KAFKA_MAX_SECURITY], size_t *n) {
    const char *key = NULL;
    char err[800];
    *n = 0;
    if (!ctl_cfg)
        return 0;
    if (em_kafka_security_check(ctl_cfg, &key, err, sizeof(err)) != 0) {
        fprintf(stderr, "execmeshctl %s: --set %s: %s\n", cmd, key, err);
        return 2;
    }
    *n = em_kafka_security_props(ctl_cfg, props);
    return 0;
}

/* ---- a blocking unary call over the async channel ---------------------- */

typedef struct sync_call {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    grpc_status_code code;
    char details[512];
    uint8_t *resp;
    size_t len;
} sync_call_t;

static void on_reply(void *arg, grpc_status_code code, const char *details, const uint8_t *resp, size_t len) {
    sync_call_t *c = arg;
    pthread_mutex_lock(&c->lock);
    c->code = code;
    snprintf(c->details, sizeof(c->details), "%s", details);
    if (resp && len) {
        c->resp = malloc(len);
        if (c->resp) {
            memcpy(c->resp, resp, len);
            c->len = len;
        }
    }
    c->done = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* Calls method on ch with msg; waits for the answer (bounded by timeout_ms). */
static grpc_status_code call_sync(em_rpc_channel_t *ch, const char *method, const ProtobufCMessage *msg,
                                  int64_t timeout_ms, sync_call_t *c) {
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    em_rpc_method_ref_t *m = em_rpc_channel_method(ch, method);
    if (!m || em_rpc_channel_call(ch, m, em_rpc_pack(msg), timeout_ms, on_reply, c) != EM_OK) {
        snprintf(c->details, sizeof(c->details), "cannot start the call");
        return GRPC_STATUS_INTERNAL;
    }
    pthread_mutex_lock(&c->lock);
    while (!c->done)
        pthread_cond_wait(&c->cond, &c->lock); /* the call's deadline bounds this */
    pthread_mutex_unlock(&c->lock);
    return c->code;
}

static void sync_call_cleanup(sync_call_t *c) {
    free(c->resp);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
}

static void channel_opts(em_rpc_channel_opts_t *o, int probe, const em_tls_opts_t *tls) {
    memset(o, 0, sizeof(*o));
    o->tls = *tls;
    o->keepalive_time_ms = 10000;
    o->keepalive_timeout_ms = 5000;
    o->reconnect_min_ms = 100;
    o->reconnect_max_ms = 1000;
    o->retry_max_attempts = probe ? 1 : 3;
    o->max_message_bytes = 64 * 1024 * 1024;
    o->dns_min_resolution_ms = 1000;
    o->no_health_check = probe;
    o->fail_fast = probe;
}

/* ---- JSON output -------------------------------------------------------- */

static int is_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 99;
        if (k == 99 || i + k >= n + (k ? 0 : 1))
            return 0;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k + 1;
    }
    return 1;
}

static void print_json_str(FILE *out, const char *s, size_t n) {
    size_t cap = n * 6 + 1;
    char *buf = malloc(cap);
    if (!buf)
        return;
    em_json_escape(buf, cap, s, n);
    fprintf(out, "\"%s\"", buf);
    free(buf);
}

static void print_base64(FILE *out, const uint8_t *s, size_t n) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputc('"', out);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
        fputc(t[v >> 18 & 63], out);
        fputc(t[v >> 12 & 63], out);
        fputc(i + 1 < n ? t[v >> 6 & 63] : '=', out);
        fputc(i + 2 < n ? t[v & 63] : '=', out);
    }
    fputc('"', out);
}

static void print_result(const Execmesh__V1__Result *r, int64_t latency_ms) {
    const char *status = "STATUS_UNSPECIFIED";
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(&execmesh__v1__status__descriptor, r->status);
    if (ev)
        status = ev->name;
    printf("{\"id\":");
    print_json_str(stdout, r->id, strlen(r->id));
    printf(",\"attempt\":%u,\"status\":\"%s\",", r->attempt, status);
    if (is_utf8(r->output.data, r->output.len)) {
        printf("\"output\":");
        print_json_str(stdout, (const char *)r->output.data, r->output.len);
    } else {
        printf("\"output_base64\":");
        print_base64(stdout, r->output.data, r->output.len);
    }
    printf(",\"error\":");
    print_json_str(stdout, r->error, strlen(r->error));
    printf(",\"exit_code\":%d,\"executor\":", r->exit_code);
    print_json_str(stdout, r->executor, strlen(r->executor));
    printf(",\"run_ms\":%lld,\"latency_ms\":%lld}\n", (long long)(r->finished_unix_ms - r->started_unix_ms),
           (long long)latency_ms);
}

/* ---- submit ------------------------------------------------------------- */

static void usage_submit(FILE *out) {
    fprintf(out,
            "Usage: execmeshctl submit --handler NAME [--payload TEXT | --payload-file FILE | (stdin)]\n"
            "                          [--target TARGET] [--bootstrap HOST:PORT] [--id ID] [--timeout-ms N]\n"
            "                          [--header K=V]... [--wait-ms N] [--results-topic T] [--no-wait]\n"
            "                          [--set KEY=VALUE]...\n\n"
            "Submits one execution through Scheduler.Submit and prints its result (JSON) from the results topic.\n"
            "  --target        schedulers, e.g. ipv4:127.0.0.1:7100,127.0.0.1:7101 (default ipv4:127.0.0.1:7100)\n"
            "  --bootstrap     Kafka bootstrap servers to read the result from (default 127.0.0.1:9092)\n"
            "  --wait-ms       how long to wait for the result (default 30000)\n"
            "  --no-wait       print the id once Submit returned, do not wait for the result\n"
            CTL_KAFKA_SET_HELP CTL_TLS_SET_HELP);
}

static uint8_t *read_all(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    *len = n;
    return buf;
}

/* Positions a group-less consumer at the end of every partition of topic,
 * before the Submit, so the result cannot be missed. */
static rd_kafka_t *results_reader(const char *bootstrap, const char *topic, const char *const *sec, size_t nsec,
                                  int64_t timeout_ms, char *err, size_t errn) {
    em_kafka_prop_t props[] = {{"group.id", "execmeshctl"}, {"enable.auto.commit", "false"},
                               {"fetch.wait.max.ms", "10"}};
    rd_kafka_conf_t *conf =
        em_kafka_conf_new(bootstrap, "execmeshctl", props, EM_ARRAY_LEN(props), sec, nsec, err, errn);
    if (!conf)
        return NULL;
    if (em_kafka_preflight(conf, RD_KAFKA_CONSUMER, (int)timeout_ms, err, errn) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errn);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, (int)timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (e || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0) {
        snprintf(err, errn, "kafka %s: cannot read topic %s: %s", bootstrap, topic,
                 e ? rd_kafka_err2str(e) : md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "missing");
        if (md)
            rd_kafka_metadata_destroy(md);
        rd_kafka_destroy(rk);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++) {
        int64_t lo, hi;
        int32_t p = md->topics[0].partitions[i].id;
        e = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, (int)timeout_ms);
        if (e) {
            snprintf(err, errn, "kafka %s: offsets of %s/%d: %s", bootstrap, topic, p, rd_kafka_err2str(e));
            rd_kafka_topic_partition_list_destroy(parts);
            rd_kafka_metadata_destroy(md);
            rd_kafka_destroy(rk);
            return NULL;
        }
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = hi;
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    return rk;
}

static int cmd_submit(int argc, char **argv) {
    static const struct option opts[] = {
        {"handler", required_argument, NULL, 'H'}, {"payload", required_argument, NULL, 'P'},
        {"payload-file", required_argument, NULL, 'F'}, {"target", required_argument, NULL, 't'},
        {"bootstrap", required_argument, NULL, 'b'}, {"id", required_argument, NULL, 'i'},
        {"timeout-ms", required_argument, NULL, 'T'}, {"header", required_argument, NULL, 'h'},
        {"wait-ms", required_argument, NULL, 'w'}, {"results-topic", required_argument, NULL, 'r'},
        {"no-wait", no_argument, NULL, 'n'}, {"set", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, '?'}, {NULL, 0, NULL, 0}};
    const char *handler = NULL, *payload = NULL, *payload_file = NULL, *target = "ipv4:127.0.0.1:7100";
    const char *bootstrap = "127.0.0.1:9092", *topic = "execmesh.results";
    char id[300] = "";
    long timeout = 0, wait_ms = 30000;
    int no_wait = 0, c, rc = 3;
    char *hdr_kv[64];
    int nhdr = 0;
    char err[512];

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'H': handler = optarg; break;
        case 'P': payload = optarg; break;
        case 'F': payload_file = optarg; break;
        case 't': target = optarg; break;
        case 'b': bootstrap = optarg; break;
        case 'i': snprintf(id, sizeof(id), "%s", optarg); break;
        case 'T': timeout = strtol(optarg, NULL, 10); break;
        case 'w': wait_ms = strtol(optarg, NULL, 10); break;
        case 'r': topic = optarg; break;
        case 'n': no_wait = 1; break;
        case 'S':
            if (ctl_set("submit", optarg) != 0)
                return 2;
            break;
        case 'h':
            if (nhdr == 64 || !strchr(optarg, '=')) {
                fprintf(stderr, "execmeshctl submit: --header takes KEY=VALUE (at most 64)\n");
                return 2;
            }
            hdr_kv[nhdr++] = optarg;
            break;
        default: usage_submit(c == '?' && optind > 0 && strcmp(argv[optind - 1], "--help") == 0 ? stdout : stderr);
                 return c == '?' && strcmp(argv[optind - 1], "--help") == 0 ? 0 : 2;
        }
    }
    em_tls_opts_t tls;
    if (ctl_tls("submit", &tls) != 0)
        return 2;
    if (!handler) {
        fprintf(stderr, "execmeshctl submit: --handler is required\n");
        usage_submit(stderr);
        return 2;
    }
    const char *sec[EM_KAFKA_MAX_SECURITY];
    size_t nsec;
    if (ctl_kafka_props("submit", sec, &nsec) != 0)
        return 2;
    uint8_t *data = NULL;
    size_t len = 0;
    if (payload) {
        len = strlen(payload);
        data = (uint8_t *)strdup(payload);
    } else {
        FILE *f = payload_file ? fopen(payload_file, "rb") : stdin;
        if (!f) {
            fprintf(stderr, "execmeshctl submit: cannot read --payload-file %s\n", payload_file);
            return 2;
        }
        data = read_all(f, &len);
        if (payload_file)
            fclose(f);
    }
    if (!*id)
        em_random_id(id);

    rd_kafka_t *reader = NULL;
    if (!no_wait) {
        reader = results_reader(bootstrap, topic, sec, nsec, 10000, err, sizeof(err));
        if (!reader) {
            fprintf(stderr, "execmeshctl submit: %s\n", err);
            free(data);
            return 3;
        }
    }

    em_rpc_loop_t *loop = em_rpc_loop_new();
    em_rpc_loop_start(loop);
    em_rpc_channel_opts_t co;
    channel_opts(&co, 0, &tls);
    em_rpc_channel_t *ch = em_rpc_channel_new(loop, target, "execmesh.v1.Scheduler", &co, err, sizeof(err));
    if (!ch) {
        fprintf(stderr, "execmeshctl submit: --target %s: %s\n", target, err);
        free(data);
        em_rpc_loop_destroy(loop);
        if (reader)
            rd_kafka_destroy(reader);
        return 2;
    }

    Execmesh__V1__Execution__HeadersEntry hdrs[64], *hp[64];
    char *hkeys[64];
    Execmesh__V1__Execution ex = EXECMESH__V1__EXECUTION__INIT;
    ex.id = id;
    ex.handler = (char *)(uintptr_t)handler;
    ex.payload.data = data;
    ex.payload.len = len;
    ex.timeout_ms = (uint32_t)timeout;
    for (int i = 0; i < nhdr; i++) {
        execmesh__v1__execution__headers_entry__init(&hdrs[i]);
        hkeys[i] = strdup(hdr_kv[i]);
        char *eq = strchr(hkeys[i], '=');
        *eq = '\0';
        hdrs[i].key = hkeys[i];
        hdrs[i].value = eq + 1;
        hp[i] = &hdrs[i];
    }
    ex.n_headers = (size_t)nhdr;
    ex.headers = hp;
    Execmesh__V1__Execution *exs[1] = {&ex};
    Execmesh__V1__SubmitRequest req = EXECMESH__V1__SUBMIT_REQUEST__INIT;
    req.n_executions = 1;
    req.executions = exs;

    int64_t t0 = em_mono_ms();
    sync_call_t sc;
    grpc_status_code code = call_sync(ch, "/execmesh.v1.Scheduler/Submit", &req.base, 10000, &sc);
    if (code != GRPC_STATUS_OK) {
        fprintf(stderr, "execmeshctl submit: Submit failed: %s: %s\n", em_rpc_status_name(code), sc.details);
        rc = 3;
        goto out;
    }
    fprintf(stderr, "submitted id=%s (durable in Kafka after %lld ms)\n", id, (long long)(em_mono_ms() - t0));
    if (no_wait) {
        printf("{\"id\":\"%s\"}\n", id);
        rc = 0;
        goto out;
    }
    rc = 3;
    while (em_mono_ms() - t0 < wait_ms) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(reader, 100);
        if (!m)
            continue;
        if (!m->err && m->key_len == strlen(id) && memcmp(m->key, id, m->key_len) == 0) {
            Execmesh__V1__Result *r = execmesh__v1__result__unpack(NULL, m->len, m->payload);
            if (r) {
                print_result(r, em_mono_ms() - t0);
                rc = r->status == EXECMESH__V1__STATUS__SUCCEEDED ? 0 : 1;
                execmesh__v1__result__free_unpacked(r, NULL);
                rd_kafka_message_destroy(m);
                break;
            }
        }
        rd_kafka_message_destroy(m);
    }
    if (rc == 3)
        fprintf(stderr, "execmeshctl submit: no result for %s on %s within %ld ms\n", id, topic, wait_ms);
out:
    sync_call_cleanup(&sc);
    for (int i = 0; i < nhdr; i++)
        free(hkeys[i]);
    free(data);
    em_rpc_channel_destroy(ch);
    em_rpc_loop_destroy(loop);
    if (reader) {
        rd_kafka_consumer_close(reader);
        rd_kafka_destroy(reader);
    }
    return rc;
}

/* ---- health ------------------------------------------------------------- */

static int cmd_health(int argc, char **argv) {
    static const struct option opts[] = {{"target", required_argument, NULL, 't'},
                                         {"service", required_argument, NULL, 's'},
                                         {"timeout-ms", required_argument, NULL, 'T'},
                                         {"set", required_argument, NULL, 'S'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *target = NULL, *service = "";
    long timeout = 2000;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't': target = optarg; break;
        case 's': service = optarg; break;
        case 'T': timeout = strtol(optarg, NULL, 10); break;
        case 'S':
            if (ctl_set("health", optarg) != 0)
                return 2;
            break;
        case 'h':
            printf("Usage: execmeshctl health --target ipv4:HOST:PORT[,HOST:PORT...] [--service NAME] [--timeout-ms N]\n"
                   "                          [--set tls.KEY=VALUE]...\n"
                   "Asks each replica behind the target for grpc.health.v1 Check and prints one line each.\n"
                   CTL_TLS_SET_HELP);
            return 0;
        default: return 2;
        }
    }
    em_tls_opts_t tls;
    if (ctl_tls("health", &tls) != 0)
        return 2;
    if (!target) {
        fprintf(stderr, "execmeshctl health: --target is required (e.g. ipv4:127.0.0.1:7100,127.0.0.1:7101)\n");
        return 2;
    }
    const char *list = strncmp(target, "ipv4:", 5) == 0 ? target + 5 : target;
    char *copy = strdup(list);
    em_rpc_loop_t *loop = em_rpc_loop_new();
    em_rpc_loop_start(loop);
    int all_serving = 1, any = 0;
    for (char *save = NULL, *addr = strtok_r(copy, ",", &save); addr; addr = strtok_r(NULL, ",", &save)) {
        char one[300], err[512];
        snprintf(one, sizeof(one), "ipv4:%s", addr);
        em_rpc_channel_opts_t co;
        channel_opts(&co, 1, &tls);
        em_rpc_channel_t *ch = em_rpc_channel_new(loop, one, "grpc.health.v1.Health", &co, err, sizeof(err));
        any = 1;
        if (!ch) {
            printf("%s ERROR %s\n", addr, err);
            all_serving = 0;
            continue;
        }
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        req.service = (char *)(uintptr_t)service;
        sync_call_t sc;
        grpc_status_code code = call_sync(ch, "/grpc.health.v1.Health/Check", &req.base, timeout, &sc);
        if (code != GRPC_STATUS_OK) {
            printf("%s UNREACHABLE %s: %s\n", addr, em_rpc_status_name(code), sc.details);
            all_serving = 0;
        } else {
            Grpc__Health__V1__HealthCheckResponse *r =
                grpc__health__v1__health_check_response__unpack(NULL, sc.len, sc.resp);
            int st = r ? (int)r->status : 0;
            const char *names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
            printf("%s %s\n", addr, st >= 0 && st <= 3 ? names[st] : "UNKNOWN");
            all_serving &= st == 1;
            if (r)
                grpc__health__v1__health_check_response__free_unpacked(r, NULL);
        }
        sync_call_cleanup(&sc);
        em_rpc_channel_destroy(ch);
    }
    free(copy);
    em_rpc_loop_destroy(loop);
    return any && all_serving ? 0 : 1;
}

/* ---- cancel ------------------------------------------------------------- */

/* execmeshctl cancel --target T ID...: Scheduler.Cancel; prints the ids once
 * every cancel is durable. */
static int cmd_cancel(int argc, char **argv) {
    const char *target = "ipv4:127.0.0.1:7100";
    int first = 1;
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("Usage: execmeshctl cancel [--target ipv4:HOST:PORT[,...]] [--set tls.KEY=VALUE]... ID [ID...]\n"
               "Cancels executions by id (Scheduler.Cancel): each ends with one CANCELLED result and does not\n"
               "run again. Prints the ids once every cancel is durable in Kafka. --target: a scheduler\n"
               "(default ipv4:127.0.0.1:7100).\n" CTL_TLS_SET_HELP);
        return 0;
    }
    while (first + 1 < argc && (!strcmp(argv[first], "--target") || !strcmp(argv[first], "--set"))) {
        if (!strcmp(argv[first], "--target"))
            target = argv[first + 1];
        else if (ctl_set("cancel", argv[first + 1]) != 0)
            return 2;
        first += 2;
    }
    em_tls_opts_t tls;
    if (ctl_tls("cancel", &tls) != 0)
        return 2;
    if (first >= argc) {
        fprintf(stderr, "execmeshctl cancel: name at least one execution id (cancel --help)\n");
        return 2;
    }
    char err[512];
    em_rpc_loop_t *loop = em_rpc_loop_new();
    em_rpc_loop_start(loop);
    em_rpc_channel_opts_t co;
    channel_opts(&co, 0, &tls);
    em_rpc_channel_t *ch = em_rpc_channel_new(loop, target, "execmesh.v1.Scheduler", &co, err, sizeof(err));
    if (!ch) {
        fprintf(stderr, "execmeshctl cancel: --target %s: %s\n", target, err);
        em_rpc_loop_destroy(loop);
        return 2;
    }
    Execmesh__V1__CancelRequest req = EXECMESH__V1__CANCEL_REQUEST__INIT;
    req.n_ids = (size_t)(argc - first);
    req.ids = argv + first;
    sync_call_t sc;
    int rc = 0;
    grpc_status_code code = call_sync(ch, "/execmesh.v1.Scheduler/Cancel", &req.base, 10000, &sc);
    if (code != GRPC_STATUS_OK) {
        fprintf(stderr, "execmeshctl cancel: Cancel failed: %s: %s\n", em_rpc_status_name(code), sc.details);
        rc = 3;
    } else {
        Execmesh__V1__CancelResponse *resp = execmesh__v1__cancel_response__unpack(NULL, sc.len, sc.resp);
        for (size_t i = 0; resp && i < resp->n_ids; i++)
            printf("cancelled %s\n", resp->ids[i]);
        if (resp)
            execmesh__v1__cancel_response__free_unpacked(resp, NULL);
    }
    free(sc.resp);
    em_rpc_channel_destroy(ch);
    em_rpc_loop_destroy(loop);
    return rc;
}

static void usage(FILE *out) {
    fprintf(out, "execmeshctl %s: the execmesh command-line client\n\n"
                 "Usage: execmeshctl submit --handler NAME [--payload TEXT] ...   (submit --help for more)\n"
                 "       execmeshctl cancel [--target ipv4:HOST:PORT[,...]] [--set tls.KEY=VALUE]... ID [ID...]\n"
                 "       execmeshctl health --target ipv4:HOST:PORT[,HOST:PORT...] [--set tls.KEY=VALUE]...\n"
                 "       execmeshctl status --bootstrap HOST:PORT[,...] [--group G] [--topic T]\n"
                 "                          [--metrics HOST:PORT[,...]] [--json] [--timeout-ms N]   (status --help)\n"
                 "       execmeshctl --version | --help\n\n"
                 "  submit   submit one execution and print its result (JSON)\n"
                 "  cancel   cancel executions by id (each ends CANCELLED, durable before it returns)\n"
                 "  health   ask every replica behind a target for its gRPC health\n"
                 "  status   the schedulers' consumer group: each partition's owner, position, committed\n"
                 "           offset, end offset and lag, to find a stuck partition\n"
                 "Exit codes: 0 success, 1 an execution failed or a replica is not SERVING, 2 usage error,\n"
                 "3 a call failed (Submit, no result in time, Kafka unreachable, the topic missing).\n",
            EM_VERSION);
}

int main(int argc, char **argv) {
    em_log_init("execmeshctl", "", EM_LOG_WARN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("execmeshctl %s (librdkafka %s, grpc %s)\n", EM_VERSION, em_kafka_version(), grpc_version_string());
        return 0;
    }
    if (!strcmp(argv[1], "status")) /* Kafka and HTTP only: no gRPC */
        return ctl_status(argc - 1, argv + 1);
    em_log_bridge_grpc();
    if (!strcmp(argv[1], "submit"))
        return cmd_submit(argc - 1, argv + 1);
    if (!strcmp(argv[1], "health"))
        return cmd_health(argc - 1, argv + 1);
    if (!strcmp(argv[1], "cancel"))
        return cmd_cancel(argc - 1, argv + 1);
    fprintf(stderr, "execmeshctl: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
