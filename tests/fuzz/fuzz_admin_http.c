/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: one HTTP request to a metrics port, as em_metrics_answer
 * (lib/em_metrics.c) decides it without libmicrohttpd: the route, the
 * admin credential (Authorization: Bearer TOKEN against a token file), and
 * the admin routes the services add (the scheduler's /admin/pause|resume,
 * devkafka's /admin/brokers/ and /admin/rtt/; services.h), plus
 * GET /metrics rendering a registry with each kind of metric.
 *
 * Input: "METHOD\nURL\nAUTHORIZATION" (no third line: no header); the
 * first byte picks admin.enabled (odd) or not. Properties: a non-GET
 * answered 2xx only with admin enabled and the exact token; every answer
 * has a body (or the request was out of memory); a refusal for a missing
 * or wrong credential says how to authenticate (WWW-Authenticate).
 */
#include <string.h>
#include <unistd.h>

#include "em_metrics.h"
#include "fuzz.h"
#include "services.h"

#define TOKEN "fuzz-admin-token-0123456789abcdef"

static char token_path[64];
static em_metrics_t *on, *off; /* admin enabled, and not */

static void remove_token(void) { unlink(token_path); }

static void collect(void *ctx, em_metrics_out_t *out) {
    (void)ctx;
    em_metrics_out_family(out, "execmesh_fuzz_partition_lag", "gauge", "Lag per partition.");
    em_metrics_out_sample(out, "execmesh_fuzz_partition_lag", "partition=\"0\"", 3);
}

static em_metrics_t *registry(int admin) {
    static const int64_t bounds[] = {1, 10, 100};
    em_metrics_t *m = em_metrics_new();
    if (!m)
        abort();
    em_metric_add(em_metrics_counter(m, "execmesh_fuzz_total", "status=\"ok\"", "Requests."), 7);
    em_metric_set(em_metrics_gauge(m, "execmesh_fuzz_inflight", NULL, "In flight."), 2);
    em_metric_observe(em_metrics_histogram(m, "execmesh_fuzz_latency_seconds", "k=\"v\"", "Latency.", bounds, 3, EM_METRICS_US), 42);
    em_metrics_collector(m, collect, NULL);
    fuzz_scheduler_routes(m);
    fuzz_devkafka_routes(m);
    if (em_metrics_admin(m, admin, token_path) != EM_OK)
        abort();
    return m;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_quiet();
    snprintf(token_path, sizeof(token_path), "/tmp/em-fuzz-token-%d", (int)getpid());
    FILE *f = fopen(token_path, "w");
    if (!f || fputs(TOKEN "\n", f) < 0 || fclose(f) != 0)
        abort();
    atexit(remove_token);
    on = registry(1);
    off = registry(0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 8192)
        return 0;
    em_metrics_t *m = data[0] & 1 ? on : off;
    /* libmicrohttpd hands NUL-terminated strings: the parts end at a NUL */
    char *text = malloc(size);
    FUZZ_CHECK(text, "out of memory");
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    char *method = text, *url = text + strlen(text), *auth = NULL; /* no URL: the empty string */
    char *nl = strchr(method, '\n');
    if (nl) {
        *nl = '\0';
        url = nl + 1;
        if ((nl = strchr(url, '\n'))) {
            *nl = '\0';
            auth = nl + 1;
        }
    }
    em_http_answer_t a;
    em_metrics_answer(m, method, url, auth, &a);
    FUZZ_CHECK(a.body, "no body");
    FUZZ_CHECK(a.code >= 200 && a.code <= 599, "status %u", a.code);
    int admin = strcmp(method, "GET") != 0;
    if (admin && a.code < 300)
        FUZZ_CHECK(m == on && auth && strncasecmp(auth, "Bearer ", 7) == 0 && strcmp(auth + 7, TOKEN) == 0,
                   "an admin action was answered %u without admin enabled and the token", a.code);
    if (a.code == 401)
        FUZZ_CHECK(a.www_authenticate, "401 without WWW-Authenticate");
    free(a.body);
    free(text);
    return 0;
}
