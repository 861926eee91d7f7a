/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_metrics: the Prometheus text rendering (HELP and TYPE
 * once per name, whatever the label sets), em_metric_max, and the HTTP
 * endpoint spoken to with a plain socket on 127.0.0.1 with port 0. Socket
 * reads are bounded by SO_RCVTIMEO, never by sleeping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "em_metrics.h"
#include "em_result_counts.h"
#include "em_util.h"
#include "unit_file.h"

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        const char *hay_ = (hay), *needle_ = (needle);                                             \
        if (!strstr(hay_, needle_))                                                                \
            fail_msg("expected \"%s\" in \"%s\"", needle_, hay_);                                  \
    } while (0)

static size_t count_of(const char *hay, const char *needle) {
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void renders_prometheus_text(void **state) {
    (void)state;
    em_metrics_t *m = em_metrics_new();
    assert_non_null(m);
    em_metric_t *ok = em_metrics_counter(m, "em_jobs_total", "status=\"ok\"", "Jobs finished.");
    em_metric_t *failed = em_metrics_counter(m, "em_jobs_total", "status=\"failed\"", "Jobs finished.");
    em_metric_t *depth = em_metrics_gauge(m, "em_queue_depth", NULL, "Jobs waiting.");
    /* the same name again after another metric: still one HELP/TYPE, and
     * its sample renders with the others of its family (the text format
     * wants a family's lines together) */
    em_metric_t *rej = em_metrics_counter(m, "em_jobs_total", "status=\"rejected\"", "Jobs finished.");
    assert_non_null(ok);
    assert_non_null(failed);
    assert_non_null(depth);
    assert_non_null(rej);

    em_metric_add(ok, 3);
    em_metric_add(ok, 2);
    em_metric_add(failed, 1);
    em_metric_set(depth, 42);
    em_metric_add(depth, -50);

    char *text = em_metrics_render(m);
    assert_non_null(text);
    assert_string_equal(text, "# HELP em_jobs_total Jobs finished.\n"
                              "# TYPE em_jobs_total counter\n"
                              "em_jobs_total{status=\"ok\"} 5\n"
                              "em_jobs_total{status=\"failed\"} 1\n"
                              "em_jobs_total{status=\"rejected\"} 0\n"
                              "# HELP em_queue_depth Jobs waiting.\n"
                              "# TYPE em_queue_depth gauge\n"
                              "em_queue_depth -8\n");
    assert_int_equal(count_of(text, "# HELP em_jobs_total "), 1);
    assert_int_equal(count_of(text, "# TYPE em_jobs_total "), 1);
    free(text);
    em_metrics_destroy(m);
    em_metrics_destroy(NULL);
}

static void empty_registry_renders_empty(void **state) {
    (void)state;
    em_metrics_t *m = em_metrics_new();
    char *text = em_metrics_render(m);
    assert_non_null(text);
    assert_string_equal(text, "");
    free(text);
    em_metrics_destroy(m);
}

static void large_registry_grows_the_buffer(void **state) {
    (void)state;
    em_metrics_t *m = em_metrics_new();
    char labels[64], want[128];
    for (int i = 0; i < 300; i++) {
        snprintf(labels, sizeof(labels), "partition=\"%d\",topic=\"execmesh.requests\"", i);
        em_metric_t *x = em_metrics_gauge(m, "em_consumer_lag", labels, "Messages behind the high watermark.");
        assert_non_null(x);
        em_metric_set(x, (int64_t)i * 1000);
    }
    char *text = em_metrics_render(m);
    assert_non_null(text);
    assert_true(strlen(text) > 4096);
    assert_int_equal(count_of(text, "# HELP "), 1);
    assert_int_equal(count_of(text, "\nem_consumer_lag{"), 300);
    snprintf(want, sizeof(want), "em_consumer_lag{partition=\"299\",topic=\"execmesh.requests\"} 299000\n");
    assert_contains(text, want);
    free(text);
    em_metrics_destroy(m);
}

static void metric_max_is_a_high_water_mark(void **state) {
    (void)state;
    static const struct {
        int64_t set;  /* value before (INT64_MIN: keep the previous one) */
        int64_t max;  /* em_metric_max argument */
        int64_t want;
    } steps[] = {
        {5, 3, 5},          {INT64_MIN, 7, 7},  {INT64_MIN, 7, 7},        {INT64_MIN, -1, 7},
        {-10, -20, -10},    {INT64_MIN, -5, -5}, {INT64_MIN, 0, 0},        {0, INT64_MAX, INT64_MAX},
    };
    em_metrics_t *m = em_metrics_new();
    em_metric_t *g = em_metrics_gauge(m, "em_peak", NULL, "Peak.");
    for (size_t i = 0; i < EM_ARRAY_LEN(steps); i++) {
        if (steps[i].set != INT64_MIN)
            em_metric_set(g, steps[i].set);
        em_metric_max(g, steps[i].max);
        if (em_metric_get(g) != steps[i].want)
            fail_msg("step %zu: %lld, want %lld", i, (long long)em_metric_get(g), (long long)steps[i].want);
    }
    em_metrics_destroy(m);
}

/* Sends request to 127.0.0.1:port and returns the whole reply (malloc'd),
 * read until the server closes; every read is bounded by a timeout. */
static char *http_exchange(int port, const char *request) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr), 1);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    size_t rl = strlen(request);
    assert_int_equal(write(fd, request, rl), rl);

    size_t cap = 1024, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (cap - len < 512) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            assert_non_null(nb);
            buf = nb;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0)
            fail_msg("read from the metrics endpoint failed or timed out");
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

/* The status code of an HTTP reply, and its body. */
static int http_status(const char *reply, const char **body) {
    int code = 0;
    if (sscanf(reply, "HTTP/1.%*d %d", &code) != 1)
        fail_msg("not an HTTP reply: \"%s\"", reply);
    const char *b = strstr(reply, "\r\n\r\n");
    assert_non_null(b);
    *body = b + 4;
    return code;
}

static void serves_metrics_over_http(void **state) {
    (void)state;
    em_metrics_t *m = em_metrics_new();
    char err[256] = "";
    int port = -1;
    em_metric_t *c = em_metrics_counter(m, "em_requests_total", "rpc=\"Submit\"", "Requests served.");
    em_metric_add(c, 7);
    assert_int_equal(em_metrics_start(m, "127.0.0.1:0", &port, err, sizeof(err)), EM_OK);
    assert_in_range(port, 1, 65535);

    const char *body;
    char *reply = http_exchange(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_int_equal(http_status(reply, &body), 200);
    assert_contains(reply, "text/plain; version=0.0.4");
    assert_contains(body, "# TYPE em_requests_total counter\n");
    assert_contains(body, "\nem_requests_total{rpc=\"Submit\"} 7\n");
    free(reply);

    /* a fresh render per request */
    em_metric_add(c, 1);
    reply = http_exchange(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_int_equal(http_status(reply, &body), 200);
    assert_contains(body, "em_requests_total{rpc=\"Submit\"} 8\n");
    free(reply);

    static const struct {
        const char *request;
        int code;
        const char *body;
    } others[] = {
        {"GET /other HTTP/1.0\r\n\r\n", 404, "not found"},
        {"GET / HTTP/1.0\r\n\r\n", 404, "not found"},
        {"GET /metrics/x HTTP/1.0\r\n\r\n", 404, "not found"},
        {"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", 405, "only GET"},
    };
    for (size_t i = 0; i < EM_ARRAY_LEN(others); i++) {
        reply = http_exchange(port, others[i].request);
        int code = http_status(reply, &body);
        if (code != others[i].code)
            fail_msg("%s: status %d, want %d", others[i].request, code, others[i].code);
        assert_contains(body, others[i].body);
        free(reply);
    }
    em_metrics_destroy(m); /* stops the endpoint */
}

static int pause_route(void *ctx, const char *rest, char *out, size_t n) {
    int *calls = ctx;
    (*calls)++;
    snprintf(out, n, "did %s\n", rest);
    return 200;
}

/* Admin routes (POST) are off by default, need the bearer token of the
 * token file when on, follow a replaced file at once, and leave GET routes
 * alone. Over real HTTP: the Authorization header travels through MHD. */
static void admin_routes_need_the_token(void **state) {
    (void)state;
    char dir[] = "/tmp/em-test-admin-XXXXXX", path[64], err[256] = "";
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/token", dir);
    unit_write_file(path, "first-token-0123456789\n");
    int calls = 0;
    static const struct {
        int enabled;
        const char *auth; /* the header line or "" */
        int code;
        const char *body;
    } cases[] = {
        {0, "Authorization: Bearer first-token-0123456789\r\n", 403, "admin actions are off"},
        {1, "", 401, "Authorization: Bearer TOKEN"},
        {1, "Authorization: Basic Zm9vOmJhcg==\r\n", 401, "Authorization: Bearer TOKEN"},
        {1, "Authorization: Bearer first-token-012345678\r\n", 403, "does not match"},
        {1, "Authorization: Bearer first-token-01234567890\r\n", 403, "does not match"},
        {1, "Authorization: Bearer first-token-0123456789\r\n", 200, "did pause"},
        {1, "Authorization: bearer first-token-0123456789\r\n", 200, "did pause"},
    };
    for (size_t i = 0; i < EM_ARRAY_LEN(cases); i++) {
        em_metrics_t *m = em_metrics_new();
        int port = -1, before = calls;
        assert_int_equal(em_metrics_route(m, "POST", "/admin/", pause_route, &calls), EM_OK);
        assert_int_equal(em_metrics_admin(m, cases[i].enabled, path), EM_OK);
        assert_int_equal(em_metrics_start(m, "127.0.0.1:0", &port, err, sizeof(err)), EM_OK);
        char req[256];
        const char *body;
        snprintf(req, sizeof(req), "POST /admin/pause HTTP/1.0\r\n%sContent-Length: 0\r\n\r\n", cases[i].auth);
        char *reply = http_exchange(port, req);
        int code = http_status(reply, &body);
        if (code != cases[i].code)
            fail_msg("case %zu: status %d, want %d: %s", i, code, cases[i].code, body);
        assert_contains(body, cases[i].body);
        assert_int_equal(calls - before, code == 200); /* a refused action never runs */
        if (code == 401)
            assert_contains(reply, "WWW-Authenticate: Bearer");
        free(reply);
        /* reads stay public */
        reply = http_exchange(port, "GET /metrics HTTP/1.0\r\n\r\n");
        assert_int_equal(http_status(reply, &body), 200);
        free(reply);
        em_metrics_destroy(m);
    }

    /* a replaced file rotates the token at once; an unreadable one refuses */
    em_metrics_t *m = em_metrics_new();
    int port = -1;
    const char *body;
    assert_int_equal(em_metrics_route(m, "POST", "/admin/", pause_route, &calls), EM_OK);
    assert_int_equal(em_metrics_admin(m, 1, path), EM_OK);
    assert_int_equal(em_metrics_start(m, "127.0.0.1:0", &port, err, sizeof(err)), EM_OK);
    unit_write_file(path, "second-token-0123456789");
    char *reply = http_exchange(port, "POST /admin/x HTTP/1.0\r\nAuthorization: Bearer first-token-0123456789\r\n"
                                      "Content-Length: 0\r\n\r\n");
    assert_int_equal(http_status(reply, &body), 403);
    free(reply);
    reply = http_exchange(port, "POST /admin/x HTTP/1.0\r\nAuthorization: Bearer second-token-0123456789\r\n"
                                "Content-Length: 0\r\n\r\n");
    assert_int_equal(http_status(reply, &body), 200);
    free(reply);
    unlink(path);
    reply = http_exchange(port, "POST /admin/x HTTP/1.0\r\nAuthorization: Bearer second-token-0123456789\r\n"
                                "Content-Length: 0\r\n\r\n");
    assert_int_equal(http_status(reply, &body), 503);
    assert_contains(body, "cannot read the token file");
    free(reply);
    em_metrics_destroy(m);

    /* enabled without a file is refused; token files are checked */
    m = em_metrics_new();
    assert_int_equal(em_metrics_admin(m, 1, ""), EM_EINVAL);
    em_metrics_destroy(m);
    assert_int_equal(em_metrics_token_file_check(path, err, sizeof(err)), -1);
    assert_contains(err, "cannot read the token file");
    unit_write_file(path, "short\n");
    assert_int_equal(em_metrics_token_file_check(path, err, sizeof(err)), -1);
    assert_contains(err, "16 to 4095 bytes");
    unit_write_file(path, "long-enough-token-here\n\n");
    assert_int_equal(em_metrics_token_file_check(path, err, sizeof(err)), 0);
    unlink(path);
    rmdir(dir);
}

static void bad_listen_addresses_are_refused(void **state) {
    (void)state;
    static const struct {
        const char *listen;
        em_err_t rc;
        const char *frag;
    } cases[] = {
        {"127.0.0.1", EM_EINVAL, "not HOST:PORT"},
        {"127.0.0.1:99999", EM_EINVAL, "not HOST:PORT"},
        {":9100", EM_EINVAL, "not HOST:PORT"},
        {"metrics.example:0", EM_EINVAL, "must be an IPv4 address"},
    };
    for (size_t i = 0; i < EM_ARRAY_LEN(cases); i++) {
        em_metrics_t *m = em_metrics_new();
        char err[256] = "";
        int port = -1;
        em_err_t rc = em_metrics_start(m, cases[i].listen, &port, err, sizeof(err));
        if (rc != cases[i].rc)
            fail_msg("%s: %s, want %s", cases[i].listen, em_errname(rc), em_errname(cases[i].rc));
        assert_contains(err, cases[i].frag);
        assert_int_equal(port, -1);
        em_metrics_destroy(m);
    }
}

static void port_in_use_is_refused(void **state) {
    (void)state;
    em_metrics_t *a = em_metrics_new(), *b = em_metrics_new();
    char err[256] = "", addr[32];
    int port = -1, port2 = -1;
    assert_int_equal(em_metrics_start(a, "localhost:0", &port, err, sizeof(err)), EM_OK);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    assert_int_equal(em_metrics_start(b, addr, &port2, err, sizeof(err)), EM_EIO);
    assert_contains(err, addr);
    assert_int_equal(port2, -1);
    em_metrics_destroy(b);
    em_metrics_destroy(a);
}

/* A histogram renders cumulative buckets, +Inf, _sum and _count; an
 * observation lands in the first bucket whose bound is >= it. */
static void histogram_buckets_are_cumulative(void **state) {
    (void)state;
    em_metrics_t *m = em_metrics_new();
    static const int64_t bounds[] = {1, 5, 10};
    em_metric_t *h = em_metrics_histogram(m, "em_latency_ms", NULL, "Latency.", bounds, 3, 1);
    assert_non_null(h);
    static const int64_t obs[] = {0, 1, 2, 5, 6, 10, 11, 1000};
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        em_metric_observe(h, obs[i]);
    char *text = em_metrics_render(m);
    assert_non_null(text);
    assert_contains(text, "# TYPE em_latency_ms histogram\n");
    assert_contains(text, "em_latency_ms_bucket{le=\"1\"} 2\n");
    assert_contains(text, "em_latency_ms_bucket{le=\"5\"} 4\n");
    assert_contains(text, "em_latency_ms_bucket{le=\"10\"} 6\n");
    assert_contains(text, "em_latency_ms_bucket{le=\"+Inf\"} 8\n");
    assert_contains(text, "em_latency_ms_sum 1035\n");
    assert_contains(text, "em_latency_ms_count 8\n");
    free(text);
    assert_null(em_metrics_histogram(m, "em_bad", NULL, "No buckets.", bounds, 0, 1));
    assert_null(em_metrics_histogram(m, "em_bad", NULL, "No scale.", bounds, 3, 0));
    em_metrics_destroy(m);
}

/* A histogram observed in microseconds renders seconds: bounds and _sum as
 * exact decimals; its labels go before le. A name registered with several
 * label sets renders as one family (one HELP and TYPE) even when other
 * names were registered between them. */
static void seconds_histogram_with_labels(void **state) {
    (void)state;
    em_metrics_t *m = em_metrics_new();
    em_metric_t *a = em_metrics_histogram(m, "em_run_seconds", "handler=\"a\"", "Run time.", em_metrics_duration_us,
                                          em_metrics_nduration, EM_METRICS_US);
    em_metric_t *other = em_metrics_counter(m, "em_between_total", NULL, "Registered in between.");
    em_metric_t *b = em_metrics_histogram(m, "em_run_seconds", "handler=\"b\"", "Run time.", em_metrics_duration_us,
                                          em_metrics_nduration, EM_METRICS_US);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(other);
    em_metric_observe(a, 2000);    /* 2 ms: in le 0.0025 */
    em_metric_observe(a, 1000);    /* 1 ms: in le 0.001 (inclusive) */
    em_metric_observe(b, 7500001); /* 7.500001 s: in le 10 */
    em_metric_t *g = em_metrics_gauge_scaled(m, "em_late_seconds", NULL, "Lateness.", EM_METRICS_US);
    assert_non_null(g);
    em_metric_set(g, -1250000);
    char *text = em_metrics_render(m);
    assert_non_null(text);
    assert_contains(text, "em_run_seconds_bucket{handler=\"a\",le=\"0.001\"} 1\n");
    assert_contains(text, "em_run_seconds_bucket{handler=\"a\",le=\"0.0025\"} 2\n");
    assert_contains(text, "em_run_seconds_bucket{handler=\"a\",le=\"3600\"} 2\n");
    assert_contains(text, "em_run_seconds_bucket{handler=\"a\",le=\"+Inf\"} 2\n");
    assert_contains(text, "em_run_seconds_sum{handler=\"a\"} 0.003\n");
    assert_contains(text, "em_run_seconds_count{handler=\"a\"} 2\n");
    assert_contains(text, "em_run_seconds_bucket{handler=\"b\",le=\"5\"} 0\n");
    assert_contains(text, "em_run_seconds_bucket{handler=\"b\",le=\"10\"} 1\n");
    assert_contains(text, "em_run_seconds_sum{handler=\"b\"} 7.500001\n");
    assert_contains(text, "em_late_seconds -1.25\n");
    /* one family: b's samples come before the counter registered between */
    const char *type = strstr(text, "# TYPE em_run_seconds histogram\n");
    assert_non_null(type);
    assert_null(strstr(type + 1, "# TYPE em_run_seconds"));
    assert_true(strstr(text, "em_run_seconds_count{handler=\"b\"}") < strstr(text, "em_between_total 0"));
    free(text);
    em_metrics_destroy(m);
}

/* Results by handler: a declared handler shows every status at 0; names
 * past the bound count as _other; label values are escaped. */
static void result_counts_bounded(void **state) {
    (void)state;
    em_metrics_t *m = em_metrics_new();
    em_result_counts_t *c = em_result_counts_new(m, "em_results_total", "Results.", 1, 3);
    assert_non_null(c);
    em_result_counts_declare(c, "echo");
    em_result_counts_add(c, (const uint8_t *)"echo", 4, 1, 1);
    em_result_counts_add(c, (const uint8_t *)"echo", 4, 1, 1);
    em_result_counts_add(c, (const uint8_t *)"a\"b", 3, 2, 0);
    em_result_counts_add(c, NULL, 0, 1, 1); /* no handler named (an older executor's): a name of its own */
    em_result_counts_add(c, (const uint8_t *)"third", 5, 5, 1); /* past the bound of 3 names */
    em_result_counts_add(c, (const uint8_t *)"fourth", 6, 5, 1);
    em_result_counts_add(c, (const uint8_t *)"echo", 4, 99, 1); /* an unknown status */
    char *text = em_metrics_render(m);
    assert_non_null(text);
    assert_contains(text, "em_results_total{handler=\"echo\",status=\"succeeded\",final=\"true\"} 2\n");
    assert_contains(text, "em_results_total{handler=\"echo\",status=\"cancelled\",final=\"false\"} 0\n");
    assert_contains(text, "em_results_total{handler=\"a\\\"b\",status=\"failed\",final=\"false\"} 1\n");
    assert_contains(text, "em_results_total{handler=\"_other\",status=\"exhausted\",final=\"true\"} 2\n");
    assert_contains(text, "em_results_total{handler=\"echo\",status=\"unspecified\",final=\"true\"} 1\n");
    assert_contains(text, "em_results_total{handler=\"_unknown\",status=\"succeeded\",final=\"true\"} 1\n");
    assert_null(strstr(text, "third"));
    assert_int_equal(count_of(text, "# TYPE em_results_total counter"), 1);
    free(text);
    em_result_counts_destroy(c);
    em_metrics_destroy(m);
}

/* build_info is a gauge of 1 whose labels carry the versions. */
static void build_info_labels(void **state) {
    (void)state;
    em_metrics_t *m = em_metrics_new();
    em_metrics_build_info(m, "1.2.3", "2.8.0", "29.0.0");
    char *text = em_metrics_render(m);
    assert_non_null(text);
    assert_contains(text, "execmesh_build_info{version=\"1.2.3\",librdkafka=\"2.8.0\",grpc=\"29.0.0\"} 1\n");
    free(text);
    em_metrics_destroy(m);
}

/* A collector's families follow the registered metrics; its samples change
 * from one scrape to the next (label sets come and go), and values print
 * exactly whether whole or fractional. */
static int collected_parts;

static void collect_parts(void *ctx, em_metrics_out_t *out) {
    const char *name = ctx;
    em_metrics_out_family(out, name, "gauge", "Records waiting per partition.");
    for (int i = 0; i < collected_parts; i++) {
        char labels[32];
        snprintf(labels, sizeof(labels), "partition=\"%d\"", i);
        em_metrics_out_sample(out, name, labels, i * 10);
    }
    em_metrics_out_family(out, "em_age_seconds", "gauge", "Age.");
    em_metrics_out_sample(out, "em_age_seconds", NULL, 1.25);
}

static char lag_name[] = "em_lag", other_name[] = "em_other";

static void collector_samples_change_per_scrape(void **state) {
    (void)state;
    em_metrics_t *m = em_metrics_new();
    em_metric_add(em_metrics_counter(m, "em_jobs_total", NULL, "Jobs."), 7);
    assert_int_equal(em_metrics_collector(m, collect_parts, lag_name), EM_OK);
    collected_parts = 3;
    char *text = em_metrics_render(m);
    assert_non_null(text);
    assert_contains(text, "em_jobs_total 7\n# HELP em_lag Records waiting per partition.\n# TYPE em_lag gauge\n");
    assert_contains(text, "em_lag{partition=\"0\"} 0\nem_lag{partition=\"1\"} 10\nem_lag{partition=\"2\"} 20\n");
    assert_contains(text, "em_age_seconds 1.25\n");
    free(text);
    collected_parts = 1;
    text = em_metrics_render(m);
    assert_int_equal(count_of(text, "em_lag{"), 1);
    assert_int_equal(count_of(text, "# TYPE em_lag gauge"), 1);
    free(text);
    /* a bounded number of collectors */
    for (int i = 1; i < 4; i++)
        assert_int_equal(em_metrics_collector(m, collect_parts, other_name), EM_OK);
    assert_int_equal(em_metrics_collector(m, collect_parts, other_name), EM_EINVAL);
    /* removed (what it reads is about to be freed): no scrape runs it, the
     * others stay, and its slot is free again */
    em_metrics_collector_remove(m, collect_parts, lag_name);
    text = em_metrics_render(m);
    assert_int_equal(count_of(text, "# TYPE em_lag gauge"), 0);
    assert_int_equal(count_of(text, "# TYPE em_other gauge"), 3);
    free(text);
    assert_int_equal(em_metrics_collector(m, collect_parts, lag_name), EM_OK);
    em_metrics_destroy(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(renders_prometheus_text),
        cmocka_unit_test(collector_samples_change_per_scrape),
        cmocka_unit_test(histogram_buckets_are_cumulative),
        cmocka_unit_test(seconds_histogram_with_labels),
        cmocka_unit_test(build_info_labels),
        cmocka_unit_test(result_counts_bounded),
        cmocka_unit_test(empty_registry_renders_empty),
        cmocka_unit_test(large_registry_grows_the_buffer),
        cmocka_unit_test(metric_max_is_a_high_water_mark),
        cmocka_unit_test(serves_metrics_over_http),
        cmocka_unit_test(admin_routes_need_the_token),
        cmocka_unit_test(bad_listen_addresses_are_refused),
        cmocka_unit_test(port_in_use_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
