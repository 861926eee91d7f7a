/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JSON-lines logging: one object per line on stderr with ts, level, service,
 * replica, msg and fields. Messages are constant text; what varies goes in
 * typed fields, so logs can be queried:
 *
 *     EM_INFO("partitions assigned", EM_F_INT("count", n), EM_F_STR("topic", t));
 *
 * The level macros skip evaluating their arguments when the level is off.
 * librdkafka's and gRPC's own logs are bridged in (em_log_rdkafka_cb,
 * em_log_bridge_grpc). Any thread may log; each line is one write(2).
 */
#ifndef EM_LOG_H
#define EM_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum em_log_level {
    EM_LOG_DEBUG = 0,
    EM_LOG_INFO,
    EM_LOG_WARN,
    EM_LOG_ERROR,
    EM_LOG_OFF
} em_log_level_t;

typedef enum em_field_type {
    EM_FT_END_ = 0,
    EM_FT_STR,
    EM_FT_INT,
    EM_FT_UINT,
    EM_FT_DBL,
    EM_FT_BOOL,
    EM_FT_RAW, /* already valid JSON */
    EM_FT_STRN /* a string of n bytes, not NUL-terminated */
} em_field_type_t;

typedef struct em_field {
    em_field_type_t type;
    const char *key;
    union {
        const char *s;
        int64_t i;
        uint64_t u;
        double d;
    } v;
    size_t n; /* EM_FT_STRN */
} em_field_t;

#define EM_F_STR(k, x) ((em_field_t){.type = EM_FT_STR, .key = (k), .v.s = (x)})
#define EM_F_INT(k, x) ((em_field_t){.type = EM_FT_INT, .key = (k), .v.i = (int64_t)(x)})
#define EM_F_UINT(k, x) ((em_field_t){.type = EM_FT_UINT, .key = (k), .v.u = (uint64_t)(x)})
#define EM_F_DBL(k, x) ((em_field_t){.type = EM_FT_DBL, .key = (k), .v.d = (double)(x)})
#define EM_F_BOOL(k, x) ((em_field_t){.type = EM_FT_BOOL, .key = (k), .v.i = !!(x)})
#define EM_F_RAW(k, x) ((em_field_t){.type = EM_FT_RAW, .key = (k), .v.s = (x)})
#define EM_F_STRN(k, p, len) ((em_field_t){.type = EM_FT_STRN, .key = (k), .v.s = (const char *)(p), .n = (len)})
#define EM_F_END ((em_field_t){.type = EM_FT_END_})

/* Sets the service and replica names printed on every line (copied). */
void em_log_init(const char *service, const char *replica, em_log_level_t level);
void em_log_set_level(em_log_level_t level);
int em_log_enabled(em_log_level_t level);
/* Parses "debug", "info", "warn", "error", "off"; -1 when unknown. */
int em_log_level_parse(const char *name);

/* Writes one line; the variadic part is em_field_t values ending in EM_F_END. */
void em_log_emit(em_log_level_t level, const char *msg, ...);

#define EM_LOG_AT(lvl, ...)                                                  \
    do {                                                                     \
        if (em_log_enabled(lvl))                                             \
            em_log_emit((lvl), __VA_ARGS__);                                 \
    } while (0)
#define EM_DEBUG(...) EM_LOG_AT(EM_LOG_DEBUG, __VA_ARGS__, EM_F_END)
#define EM_INFO(...) EM_LOG_AT(EM_LOG_INFO, __VA_ARGS__, EM_F_END)
#define EM_WARN(...) EM_LOG_AT(EM_LOG_WARN, __VA_ARGS__, EM_F_END)
#define EM_ERROR(...) EM_LOG_AT(EM_LOG_ERROR, __VA_ARGS__, EM_F_END)

/* Writes s as a JSON string body (no quotes) into buf; returns the length
 * written, truncating at cap - 1 and always NUL-terminating. */
size_t em_json_escape(char *buf, size_t cap, const char *s, size_t len);

/* librdkafka log_cb: set with rd_kafka_conf_set_log_cb. */
struct rd_kafka_s;
void em_log_rdkafka_cb(const struct rd_kafka_s *rk, int level, const char *fac, const char *buf);

/* Routes gRPC's own log lines (gpr_log) into this log. Call before grpc_init. */
void em_log_bridge_grpc(void);

#endif
