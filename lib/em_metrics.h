/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus text exposition on its own HTTP port (libmicrohttpd), GET
 * /metrics. Metrics are registered (mostly at start-up; any time is safe) and updated lock-free
 * from any thread (C11 atomics). A metric name may be registered several
 * times with different label sets; a name's samples render together, under
 * one HELP and TYPE (the first registration's).
 */
#ifndef EM_METRICS_H
#define EM_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"

typedef struct em_metrics em_metrics_t;
typedef struct em_metric em_metric_t;

em_metrics_t *em_metrics_new(void);
/* Stops the HTTP endpoint (if started) and frees every metric. */
void em_metrics_destroy(em_metrics_t *m);

/* Registers a metric. labels is the text inside {} (e.g. "status=\"failed\"")
 * or NULL. Returns NULL only when out of memory. All strings are copied. */
em_metric_t *em_metrics_counter(em_metrics_t *m, const char *name, const char *labels, const char *help);
em_metric_t *em_metrics_gauge(em_metrics_t *m, const char *name, const char *labels, const char *help);
/* A gauge set in units of 1/scale (EM_METRICS_US: set microseconds,
 * exposed as seconds), rendered as an exact decimal. */
em_metric_t *em_metrics_gauge_scaled(em_metrics_t *m, const char *name, const char *labels, const char *help,
                                     int64_t scale);

/* A histogram of integer observations: bounds are the buckets' upper
 * bounds in the observations' unit (inclusive, increasing; copied),
 * rendered cumulatively with +Inf. labels as for counters, or NULL. scale
 * is how many observation units make one exposed unit: 1 exposes the
 * values as they are; EM_METRICS_US observes microseconds and exposes
 * seconds (Prometheus' base unit), bounds and _sum as exact decimals. */
#define EM_METRICS_US 1000000
em_metric_t *em_metrics_histogram(em_metrics_t *m, const char *name, const char *labels, const char *help,
                                  const int64_t *bounds, int nbounds, int64_t scale);
void em_metric_observe(em_metric_t *histogram, int64_t value);

/* The mesh's duration buckets in microseconds (1 ms to 1 h), for
 * em_metrics_histogram(..., EM_METRICS_US), and their count. */
extern const int64_t em_metrics_duration_us[];
extern const int em_metrics_nduration;

/* Registers execmesh_build_info{version,librdkafka,grpc} = 1. */
void em_metrics_build_info(em_metrics_t *m, const char *version, const char *librdkafka, const char *grpc);

void em_metric_add(em_metric_t *metric, int64_t delta);
void em_metric_set(em_metric_t *metric, int64_t value);
int64_t em_metric_get(em_metric_t *metric);
/* Raises a gauge to value if value is higher (a high-water mark). */
void em_metric_max(em_metric_t *metric, int64_t value);

/* A collector writes samples whose label sets change at run time (one per
 * owned partition, say), at each scrape: em_metrics_out_family() once per
 * metric name, then em_metrics_out_sample() per label set. It runs on the
 * HTTP thread with the registry's lock held: it must not register metrics. */
typedef struct em_metrics_out em_metrics_out_t;
typedef void (*em_metrics_collect_fn)(void *ctx, em_metrics_out_t *out);
em_err_t em_metrics_collector(em_metrics_t *m, em_metrics_collect_fn fn, void *ctx);
/* Unregisters fn/ctx; on return no scrape runs it any more (one running
 * now has finished): call it before freeing what the collector reads. */
void em_metrics_collector_remove(em_metrics_t *m, em_metrics_collect_fn fn, void *ctx);
/* type: "gauge" or "counter". */
void em_metrics_out_family(em_metrics_out_t *out, const char *name, const char *type, const char *help);
/* labels: the text inside {} or NULL. */
void em_metrics_out_sample(em_metrics_out_t *out, const char *name, const char *labels, double value);

/* Renders the exposition text into a malloc'd string (caller frees). */
char *em_metrics_render(em_metrics_t *m);

/* An admin endpoint: called on the HTTP thread for METHOD path-prefix...;
 * rest is what follows the prefix. Writes a text answer into out and returns
 * the HTTP status. */
typedef int (*em_http_fn)(void *ctx, const char *rest, char *out, size_t outn);

/* Adds a route (before em_metrics_start). method is "GET" or "POST". A GET
 * route is a public read, like /metrics; any other method is an admin
 * action, answered only as em_metrics_admin() allows. */
em_err_t em_metrics_route(em_metrics_t *m, const char *method, const char *prefix, em_http_fn fn, void *ctx);

/* Admin actions (non-GET routes): off unless enabled; then every request
 * must carry "Authorization: Bearer TOKEN" with TOKEN the content of
 * token_file (trailing white space ignored), read at each request so a
 * replaced file rotates the token at once. Before em_metrics_start; the
 * path is copied. EM_EINVAL when enabled without a token file. */
em_err_t em_metrics_admin(em_metrics_t *m, int enabled, const char *token_file);

/* Can path serve as a token file (readable, 16 to 4096 bytes of token)?
 * 0, or -1 with errstr saying why. */
int em_metrics_token_file_check(const char *path, char *errstr, size_t errstr_size);

/* The answer to one HTTP request, decided without an HTTP server (the
 * endpoint uses it, and so does its fuzz target). authorization is the
 * Authorization header or NULL. body is malloc'd (caller frees) or NULL when
 * out of memory; content_type and www_authenticate are static or NULL. */
typedef struct em_http_answer {
    unsigned code;
    char *body;
    const char *content_type;
    const char *www_authenticate;
} em_http_answer_t;
void em_metrics_answer(em_metrics_t *m, const char *method, const char *url, const char *authorization,
                       em_http_answer_t *answer);

/* Serves GET /metrics on listen ("HOST:PORT", port 0 picks one); the bound
 * port is stored in *bound_port. On failure nothing was started. */
em_err_t em_metrics_start(em_metrics_t *m, const char *listen, int *bound_port, char *errstr,
                          size_t errstr_size);

#endif
