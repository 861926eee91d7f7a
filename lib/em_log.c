/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON-lines logger. A line is built in a stack buffer and written with
 * one write(2) so that lines from different threads never interleave.
 */
#include "em_log.h"

#include <grpc/support/log.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define EM_LOG_LINE_MAX 8192

static char em_log_service[64] = "execmesh";
static char em_log_replica[128] = "";
static atomic_int em_log_level = EM_LOG_INFO;

static const char *const em_level_names[] = {"debug", "info", "warn", "error", "off"};

void em_log_init(const char *service, const char *replica, em_log_level_t level) {
    snprintf(em_log_service, sizeof(em_log_service), "%s", service ? service : "execmesh");
    snprintf(em_log_replica, sizeof(em_log_replica), "%s", replica ? replica : "");
    atomic_store(&em_log_level, (int)level);
}

void em_log_set_level(em_log_level_t level) { atomic_store(&em_log_level, (int)level); }

int em_log_enabled(em_log_level_t level) { return (int)level >= atomic_load(&em_log_level); }

int em_log_level_parse(const char *name) {
    for (int i = 0; i <= EM_LOG_OFF; i++)
        if (strcasecmp(name, em_level_names[i]) == 0)
            return i;
    return -1;
}

size_t em_json_escape(char *buf, size_t cap, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc = 0;
        switch (c) {
        case '"': esc = '"'; break;
        case '\\': esc = '\\'; break;
        case '\n': esc = 'n'; break;
        case '\r': esc = 'r'; break;
        case '\t': esc = 't'; break;
        default: break;
        }
        if (esc) {
            if (o + 2 >= cap)
                break;
            buf[o++] = '\\';
            buf[o++] = esc;
        } else if (c < 0x20 || c == 0x7f) {
            if (o + 6 >= cap)
                break;
            buf[o++] = '\\';
            buf[o++] = 'u';
            buf[o++] = '0';
            buf[o++] = '0';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        } else {
            if (o + 1 >= cap)
                break;
            buf[o++] = (char)c;
        }
    }
    buf[o] = '\0';
    return o;
}

/* Appends to a fixed line buffer; silently truncates (a log line is never
 * worth failing for). */
typedef struct em_line {
    char buf[EM_LOG_LINE_MAX];
    size_t len;
} em_line_t;

static void line_putf(em_line_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line_putf(em_line_t *l, const char *fmt, ...) {
    if (l->len >= sizeof(l->buf) - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->buf + l->len, sizeof(l->buf) - l->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        l->len += (size_t)n < sizeof(l->buf) - l->len ? (size_t)n : sizeof(l->buf) - l->len - 1;
}

static void line_putstrn(em_line_t *l, const char *s, size_t n) {
    if (!s)
        s = "";
    if (l->len + 3 >= sizeof(l->buf))
        return;
    l->buf[l->len++] = '"';
    l->len += em_json_escape(l->buf + l->len, sizeof(l->buf) - l->len - 1, s, n);
    l->buf[l->len++] = '"';
    l->buf[l->len] = '\0';
}

static void line_putstr(em_line_t *l, const char *s) { line_putstrn(l, s, s ? strlen(s) : 0); }

static void line_start(em_line_t *l, em_log_level_t level, const char *msg) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    l->len = 0;
    line_putf(l, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"service\":",
              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
              ts.tv_nsec / 1000000, em_level_names[level]);
    line_putstr(l, em_log_service);
    line_putf(l, ",\"replica\":");
    line_putstr(l, em_log_replica);
    line_putf(l, ",\"msg\":");
    line_putstr(l, msg);
}

static void line_finish(em_line_t *l) {
    if (l->len > sizeof(l->buf) - 3)
        l->len = sizeof(l->buf) - 3;
    l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    ssize_t off = 0;
    while ((size_t)off < l->len) {
        ssize_t n = write(STDERR_FILENO, l->buf + off, l->len - (size_t)off);
        if (n <= 0)
            break;
        off += n;
    }
}

void em_log_emit(em_log_level_t level, const char *msg, ...) {
    em_line_t l;
    va_list ap;
    int first = 1;

    if (level < EM_LOG_DEBUG || level >= EM_LOG_OFF)
        level = EM_LOG_ERROR;
    line_start(&l, level, msg);
    va_start(ap, msg);
    for (;;) {
        em_field_t f = va_arg(ap, em_field_t);
        if (f.type == EM_FT_END_)
            break;
        line_putf(&l, "%s", first ? ",\"fields\":{" : ",");
        first = 0;
        line_putstr(&l, f.key);
        line_putf(&l, ":");
        switch (f.type) {
        case EM_FT_STR: line_putstr(&l, f.v.s); break;
        case EM_FT_INT: line_putf(&l, "%lld", (long long)f.v.i); break;
        case EM_FT_UINT: line_putf(&l, "%llu", (unsigned long long)f.v.u); break;
        case EM_FT_DBL: line_putf(&l, "%.6g", f.v.d); break;
        case EM_FT_BOOL: line_putf(&l, "%s", f.v.i ? "true" : "false"); break;
        case EM_FT_RAW: line_putf(&l, "%s", f.v.s ? f.v.s : "null"); break;
        case EM_FT_STRN: line_putstrn(&l, f.v.s, f.v.s ? f.n : 0); break;
        case EM_FT_END_: break;
        }
    }
    va_end(ap);
    if (!first)
        line_putf(&l, "}");
    line_finish(&l);
}

void em_log_rdkafka_cb(const struct rd_kafka_s *rk, int level, const char *fac, const char *buf) {
    /* syslog levels: 0..3 error, 4 warning, 5..6 info, 7 debug */
    em_log_level_t lvl = level <= 3 ? EM_LOG_ERROR : level == 4 ? EM_LOG_WARN
                                                 : level <= 6   ? EM_LOG_INFO
                                                                : EM_LOG_DEBUG;
    if (!em_log_enabled(lvl))
        return;
    em_log_emit(lvl, buf, EM_F_STR("source", "librdkafka"), EM_F_STR("facility", fac),
                EM_F_STR("client", rd_kafka_name((const rd_kafka_t *)rk)), EM_F_END);
}

static void em_log_grpc_cb(gpr_log_func_args *args) {
    /* gRPC's INFO lines are connection chatter (subchannel states): debug */
    em_log_level_t lvl = args->severity == GPR_LOG_SEVERITY_ERROR ? EM_LOG_ERROR : EM_LOG_DEBUG;
    if (!em_log_enabled(lvl))
        return;
    em_log_emit(lvl, args->message, EM_F_STR("source", "grpc"), EM_F_STR("file", args->file),
                EM_F_INT("line", args->line), EM_F_END);
}

void em_log_bridge_grpc(void) {
    gpr_set_log_function(em_log_grpc_cb);
    gpr_set_log_verbosity(em_log_enabled(EM_LOG_DEBUG) ? GPR_LOG_SEVERITY_DEBUG : GPR_LOG_SEVERITY_ERROR);
}
