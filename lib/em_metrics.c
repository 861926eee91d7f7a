/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metrics registry and its HTTP endpoint. The list only grows, under
 * the lock, which a scrape holds while it renders (a metric may be
 * registered while serving: em_result_counts adds label sets as they are
 * first seen); values are atomics, updated without it.
 */
#include "em_metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "em_util.h"

struct em_metric {
    struct em_metric *next;
    char *name;
    char *labels;
    char *help;
    int is_counter;
    _Atomic int64_t value; /* histograms: the sum of observations */
    int nbounds;           /* > 0 for a histogram */
    int64_t scale;         /* observation units per exposed unit */
    int64_t *bounds;
    _Atomic int64_t *buckets; /* nbounds + 1, the last for +Inf */
};

#define EM_MAX_ROUTES 16
#define EM_MAX_COLLECTORS 4

typedef struct em_route {
    char method[8];
    char prefix[128];
    em_http_fn fn;
    void *ctx;
} em_route_t;

struct em_metrics {
    pthread_mutex_t lock; /* guards the list while registering */
    em_metric_t *head, *tail;
    struct MHD_Daemon *httpd;
    em_route_t routes[EM_MAX_ROUTES];
    int nroutes;
    struct {
        em_metrics_collect_fn fn;
        void *ctx;
    } collectors[EM_MAX_COLLECTORS];
    int ncollectors;
    int admin_enabled;
    char *token_file;
};

em_metrics_t *em_metrics_new(void) {
    em_metrics_t *m = calloc(1, sizeof(*m));
    if (m)
        pthread_mutex_init(&m->lock, NULL);
    return m;
}

void em_metrics_destroy(em_metrics_t *m) {
    if (!m)
        return;
    if (m->httpd)
        MHD_stop_daemon(m->httpd);
    em_metric_t *x = m->head;
    while (x) {
        em_metric_t *next = x->next;
        free(x->name);
        free(x->labels);
        free(x->help);
        free(x->bounds);
        free((void *)(uintptr_t)x->buckets);
        free(x);
        x = next;
    }
    free(m->token_file);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static em_metric_t *reg(em_metrics_t *m, const char *name, const char *labels, const char *help,
                        int is_counter) {
    em_metric_t *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    x->name = strdup(name);
    x->labels = labels ? strdup(labels) : NULL;
    x->help = strdup(help ? help : "");
    x->is_counter = is_counter;
    if (!x->name || !x->help || (labels && !x->labels)) {
        free(x->name);
        free(x->labels);
        free(x->help);
        free(x);
        return NULL;
    }
    pthread_mutex_lock(&m->lock);
    if (m->tail)
        m->tail->next = x;
    else
        m->head = x;
    m->tail = x;
    pthread_mutex_unlock(&m->lock);
    return x;
}

em_metric_t *em_metrics_counter(em_metrics_t *m, const char *name, const char *labels, const char *help) {
    return reg(m, name, labels, help, 1);
}

em_metric_t *em_metrics_gauge(em_metrics_t *m, const char *name, const char *labels, const char *help) {
    return reg(m, name, labels, help, 0);
}

em_metric_t *em_metrics_gauge_scaled(em_metrics_t *m, const char *name, const char *labels, const char *help,
                                     int64_t scale) {
    if (scale <= 0)
        return NULL;
    em_metric_t *x = reg(m, name, labels, help, 0);
    if (x)
        x->scale = scale;
    return x;
}

em_metric_t *em_metrics_histogram(em_metrics_t *m, const char *name, const char *labels, const char *help,
                                  const int64_t *bounds, int nbounds, int64_t scale) {
    if (nbounds <= 0 || scale <= 0)
        return NULL;
    int64_t *b = malloc((size_t)nbounds * sizeof(*b));
    _Atomic int64_t *c = calloc((size_t)nbounds + 1, sizeof(*c));
    if (!b || !c) {
        free(b);
        free((void *)(uintptr_t)c);
        return NULL;
    }
    memcpy(b, bounds, (size_t)nbounds * sizeof(*b));
    em_metric_t *x = reg(m, name, labels, help, 0);
    if (!x) {
        free(b);
        free((void *)(uintptr_t)c);
        return NULL;
    }
    x->bounds = b;
    x->buckets = c;
    x->scale = scale;
    x->nbounds = nbounds;
    return x;
}

const int64_t em_metrics_duration_us[] = {1000,    2500,     5000,     10000,    25000,     50000,     100000,
                                          250000,  500000,   1000000,  2500000,  5000000,   10000000,  30000000,
                                          60000000, 120000000, 300000000, 600000000, 1800000000, 3600000000};
const int em_metrics_nduration = (int)(sizeof(em_metrics_duration_us) / sizeof(em_metrics_duration_us[0]));

void em_metrics_build_info(em_metrics_t *m, const char *version, const char *librdkafka, const char *grpc) {
    char labels[256];
    snprintf(labels, sizeof(labels), "version=\"%s\",librdkafka=\"%s\",grpc=\"%s\"", version, librdkafka, grpc);
    em_metric_t *x = em_metrics_gauge(m, "execmesh_build_info", labels,
                                      "Always 1; the labels say which build runs (execmesh, librdkafka and gRPC "
                                      "versions).");
    if (x)
        em_metric_set(x, 1);
}

void em_metric_observe(em_metric_t *x, int64_t v) {
    int lo = 0, hi = x->nbounds; /* the first bound >= v, or nbounds (+Inf) */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (x->bounds[mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&x->buckets[lo], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&x->value, v, memory_order_relaxed);
}

void em_metric_add(em_metric_t *x, int64_t d) { atomic_fetch_add_explicit(&x->value, d, memory_order_relaxed); }
void em_metric_set(em_metric_t *x, int64_t v) { atomic_store_explicit(&x->value, v, memory_order_relaxed); }
int64_t em_metric_get(em_metric_t *x) { return atomic_load_explicit(&x->value, memory_order_relaxed); }
void em_metric_max(em_metric_t *x, int64_t v) {
    int64_t cur = atomic_load_explicit(&x->value, memory_order_relaxed);
    while (v > cur && !atomic_compare_exchange_weak(&x->value, &cur, v)) {
    }
}

typedef struct em_buf {
    char *p;
    size_t len, cap;
    int oom;
} em_buf_t;

static void buf_printf(em_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(em_buf_t *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

struct em_metrics_out {
    em_buf_t *b;
};

em_err_t em_metrics_collector(em_metrics_t *m, em_metrics_collect_fn fn, void *ctx) {
    pthread_mutex_lock(&m->lock);
    int full = m->ncollectors == EM_MAX_COLLECTORS;
    if (!full) {
        m->collectors[m->ncollectors].fn = fn;
        m->collectors[m->ncollectors].ctx = ctx;
        m->ncollectors++;
    }
    pthread_mutex_unlock(&m->lock);
    return full ? EM_EINVAL : EM_OK;
}

void em_metrics_collector_remove(em_metrics_t *m, em_metrics_collect_fn fn, void *ctx) {
    if (!m)
        return;
    pthread_mutex_lock(&m->lock); /* a scrape renders with it held: none is running after this */
    int k = 0;
    for (int i = 0; i < m->ncollectors; i++)
        if (m->collectors[i].fn != fn || m->collectors[i].ctx != ctx)
            m->collectors[k++] = m->collectors[i];
    m->ncollectors = k;
    pthread_mutex_unlock(&m->lock);
}

void em_metrics_out_family(em_metrics_out_t *out, const char *name, const char *type, const char *help) {
    buf_printf(out->b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void em_metrics_out_sample(em_metrics_out_t *out, const char *name, const char *labels, double value) {
    if (labels)
        buf_printf(out->b, "%s{%s} %.17g\n", name, labels, value);
    else
        buf_printf(out->b, "%s %.17g\n", name, value);
}

/* v / scale as an exact decimal ("0.0025", "12", "-1.5"). */
static void put_scaled(em_buf_t *b, int64_t v, int64_t scale) {
    if (scale == 1) {
        buf_printf(b, "%lld", (long long)v);
        return;
    }
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    uint64_t whole = u / (uint64_t)scale, frac = u % (uint64_t)scale;
    buf_printf(b, "%s%llu", v < 0 ? "-" : "", (unsigned long long)whole);
    if (!frac)
        return;
    char digits[24];
    int w = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)scale) - 1; /* scale is a power of ten */
    snprintf(digits, sizeof(digits), "%0*llu", w, (unsigned long long)frac);
    while (w > 0 && digits[w - 1] == '0')
        digits[--w] = '\0';
    buf_printf(b, ".%s", digits);
}

static void render_histogram(em_buf_t *b, const em_metric_t *x) {
    const char *l = x->labels ? x->labels : "", *sep = x->labels ? "," : "";
    int64_t cum = 0;
    for (int i = 0; i <= x->nbounds; i++) {
        cum += atomic_load_explicit(&x->buckets[i], memory_order_relaxed);
        buf_printf(b, "%s_bucket{%s%sle=\"", x->name, l, sep);
        if (i < x->nbounds)
            put_scaled(b, x->bounds[i], x->scale);
        else
            buf_printf(b, "+Inf");
        buf_printf(b, "\"} %lld\n", (long long)cum);
    }
    buf_printf(b, x->labels ? "%s_sum{%s} " : "%s_sum%s ", x->name, l);
    put_scaled(b, em_metric_get((em_metric_t *)(uintptr_t)x), x->scale);
    buf_printf(b, x->labels ? "\n%s_count{%s} %lld\n" : "\n%s_count%s %lld\n", x->name, l, (long long)cum);
}

static void render_one(em_buf_t *b, em_metric_t *x) {
    if (x->nbounds)
        render_histogram(b, x);
    else if (x->scale > 1) {
        buf_printf(b, x->labels ? "%s{%s} " : "%s%s ", x->name, x->labels ? x->labels : "");
        put_scaled(b, em_metric_get(x), x->scale);
        buf_printf(b, "\n");
    } else if (x->labels)
        buf_printf(b, "%s{%s} %lld\n", x->name, x->labels, (long long)em_metric_get(x));
    else
        buf_printf(b, "%s %lld\n", x->name, (long long)em_metric_get(x));
}

char *em_metrics_render(em_metrics_t *m) {
    em_buf_t b = {.p = malloc(4096), .cap = 4096};
    if (!b.p)
        return NULL;
    b.p[0] = '\0';
    pthread_mutex_lock(&m->lock);
    /* one family per name, where the name was first registered: its HELP,
     * TYPE and every label set registered under it */
    for (em_metric_t *x = m->head; x && !b.oom; x = x->next) {
        int seen = 0;
        for (em_metric_t *y = m->head; y != x; y = y->next)
            if (strcmp(y->name, x->name) == 0) {
                seen = 1;
                break;
            }
        if (seen)
            continue;
        buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", x->name, x->help, x->name,
                   x->nbounds ? "histogram" : x->is_counter ? "counter" : "gauge");
        for (em_metric_t *y = x; y; y = y->next)
            if (y == x || strcmp(y->name, x->name) == 0)
                render_one(&b, y);
    }
    em_metrics_out_t out = {.b = &b};
    for (int i = 0; i < m->ncollectors && !b.oom; i++)
        m->collectors[i].fn(m->collectors[i].ctx, &out);
    pthread_mutex_unlock(&m->lock);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

em_err_t em_metrics_route(em_metrics_t *m, const char *method, const char *prefix, em_http_fn fn, void *ctx) {
    if (m->httpd || m->nroutes == EM_MAX_ROUTES)
        return EM_EINVAL;
    em_route_t *r = &m->routes[m->nroutes++];
    snprintf(r->method, sizeof(r->method), "%s", method);
    snprintf(r->prefix, sizeof(r->prefix), "%s", prefix);
    r->fn = fn;
    r->ctx = ctx;
    return EM_OK;
}

static const em_route_t *find_route(em_metrics_t *m, const char *method, const char *url) {
    for (int i = 0; i < m->nroutes; i++)
        if (strcmp(m->routes[i].method, method) == 0 &&
            strncmp(url, m->routes[i].prefix, strlen(m->routes[i].prefix)) == 0)
            return &m->routes[i];
    return NULL;
}

em_err_t em_metrics_admin(em_metrics_t *m, int enabled, const char *token_file) {
    if (m->httpd || (enabled && (!token_file || !*token_file)))
        return EM_EINVAL;
    char *copy = token_file && *token_file ? strdup(token_file) : NULL;
    if (token_file && *token_file && !copy)
        return EM_ENOMEM;
    free(m->token_file);
    m->token_file = copy;
    m->admin_enabled = enabled;
    return EM_OK;
}

#define EM_TOKEN_MIN 16
#define EM_TOKEN_MAX 4096

/* The token in path, trailing white space cut: its length, or -1 with
 * errstr saying why. */
static ssize_t read_token(const char *path, char *tok, size_t cap, char *errstr, size_t errstr_size) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, errstr_size, "cannot read the token file '%s': %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(tok, 1, cap - 1, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    while (n && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' ' || tok[n - 1] == '\t'))
        n--;
    tok[n] = '\0';
    if (more || n < EM_TOKEN_MIN || memchr(tok, '\0', n)) {
        snprintf(errstr, errstr_size, "the token file '%s' must hold one token of %d to %d bytes", path,
                 EM_TOKEN_MIN, EM_TOKEN_MAX - 1);
        return -1;
    }
    return (ssize_t)n;
}

int em_metrics_token_file_check(const char *path, char *errstr, size_t errstr_size) {
    char tok[EM_TOKEN_MAX];
    ssize_t n = read_token(path, tok, sizeof(tok), errstr, errstr_size);
    explicit_bzero(tok, sizeof(tok));
    return n < 0 ? -1 : 0;
}

/* Compares in time independent of where the first difference is. */
static int same_secret(const char *a, size_t an, const char *b, size_t bn) {
    unsigned char d = an != bn;
    for (size_t i = 0; i < an && i < bn; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* May this request run an admin action? 0, or the refusal's status with
 * its text in a. */
static unsigned admin_refusal(em_metrics_t *m, const char *authorization, em_http_answer_t *a) {
    static const char bearer[] = "Bearer ";
    if (!m->admin_enabled) {
        a->body = strdup("admin actions are off on this port (admin.enabled = false)\n");
        return 403;
    }
    if (!authorization || strncasecmp(authorization, bearer, sizeof(bearer) - 1) != 0) {
        a->www_authenticate = "Bearer realm=\"execmesh-admin\"";
        a->body = strdup("admin action refused: send 'Authorization: Bearer TOKEN' with the token of admin.token_file\n");
        return 401;
    }
    char tok[EM_TOKEN_MAX], err[512];
    ssize_t n = read_token(m->token_file, tok, sizeof(tok), err, sizeof(err));
    const char *given = authorization + sizeof(bearer) - 1;
    int ok = n >= 0 && same_secret(given, strlen(given), tok, (size_t)n);
    explicit_bzero(tok, sizeof(tok));
    if (n < 0) {
        char msg[640];
        snprintf(msg, sizeof(msg), "admin action refused: %s\n", err);
        a->body = strdup(msg);
        return 503;
    }
    if (!ok) {
        a->www_authenticate = "Bearer realm=\"execmesh-admin\", error=\"invalid_token\"";
        a->body = strdup("admin action refused: the bearer token does not match admin.token_file\n");
        return 403;
    }
    return 0;
}

void em_metrics_answer(em_metrics_t *m, const char *method, const char *url, const char *authorization,
                       em_http_answer_t *a) {
    memset(a, 0, sizeof(*a));
    a->code = 200;
    a->content_type = "text/plain; charset=utf-8";
    const em_route_t *route = find_route(m, method, url);
    if (route) {
        if (strcmp(method, "GET") != 0) {
            unsigned refused = admin_refusal(m, authorization, a);
            if (refused) {
                a->code = refused;
                return;
            }
        }
        a->body = malloc(1024);
        if (!a->body)
            return;
        a->body[0] = '\0';
        a->code = (unsigned)route->fn(route->ctx, url + strlen(route->prefix), a->body, 1024);
    } else if (strcmp(method, "GET") != 0) {
        a->code = 405;
        a->body = strdup("only GET is served here\n");
    } else if (strcmp(url, "/metrics") == 0) {
        a->body = em_metrics_render(m);
        a->content_type = "text/plain; version=0.0.4; charset=utf-8";
    } else {
        a->code = 404;
        a->body = strdup("not found: try /metrics\n");
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls) {
    em_metrics_t *m = cls;
    (void)version;
    (void)upload_data;
    /* a request body is not used: let MHD read it, answer at the end */
    if (!*req_cls) {
        *req_cls = (void *)(uintptr_t)1;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    em_http_answer_t a;
    em_metrics_answer(m, method, url, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"), &a);
    if (!a.body)
        return MHD_NO;
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(a.body), a.body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(a.body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", a.content_type);
    if (a.www_authenticate)
        MHD_add_response_header(resp, "WWW-Authenticate", a.www_authenticate);
    enum MHD_Result ret = MHD_queue_response(conn, a.code, resp);
    MHD_destroy_response(resp);
    return ret;
}

em_err_t em_metrics_start(em_metrics_t *m, const char *listen, int *bound_port, char *errstr,
                          size_t errstr_size) {
    char host[256];
    int port;
    struct sockaddr_in sa = {.sin_family = AF_INET};

    if (em_parse_hostport(listen, host, sizeof(host), &port, errstr, errstr_size))
        return EM_EINVAL;
    if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, &sa.sin_addr) != 1) {
        snprintf(errstr, errstr_size, "metrics listen '%s': host must be an IPv4 address", listen);
        return EM_EINVAL;
    }
    sa.sin_port = htons((uint16_t)port);
    m->httpd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, (uint16_t)port, NULL,
                                NULL, on_request, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!m->httpd) {
        snprintf(errstr, errstr_size, "metrics: cannot listen on %s (port in use?)", listen);
        return EM_EIO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(m->httpd, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = di ? di->port : port;
    return EM_OK;
}
