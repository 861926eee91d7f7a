/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The options every execmeshctl command shares: --set of the services'
 * Kafka security and TLS keys (validated by the services' own tables, so a
 * key means the same here as in a service's config file), numbers, rates,
 * the admin token file, and the usage/--help convention.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "em_config.h"
#include "em_service.h"
#include "em_util.h"

static em_config_t *ctl_cfg; /* made by the first --set; lives as long as the process */

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

int ctl_tls(const char *cmd, em_tls_opts_t *t) {
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

int ctl_parse_i64(const char *cmd, const char *flag, const char *arg, int64_t min, int64_t max, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (!*arg || *end || errno || v < min || v > max) {
        fprintf(stderr, "execmeshctl %s: --%s %s: expected an integer %" PRId64 "..%" PRId64 "\n", cmd, flag, arg,
                min, max);
        return 2;
    }
    *out = v;
    return 0;
}

int ctl_parse_rate(const char *cmd, const char *arg, double *per_s) {
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    double div = 1;
    int ok = end != arg && !errno;
    if (ok && (!strcmp(end, "/m") || !strcmp(end, "/min")))
        div = 60;
    else if (ok && *end && strcmp(end, "/s") != 0)
        ok = 0;
    if (!ok || !(v > 0) || v / div > 1e7) {
        fprintf(stderr, "execmeshctl %s: --rate %s: expected N, N/s or N/m with N > 0 (at most 10000000/s)\n", cmd,
                arg);
        return 2;
    }
    *per_s = v / div;
    return 0;
}

int ctl_read_token(const char *cmd, const char *path, char *tok, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "execmeshctl %s: --token-file %s: %s\n", cmd, path, strerror(errno));
        return 2;
    }
    size_t n = fread(tok, 1, cap - 1, f);
    int big = n == cap - 1 && fgetc(f) != EOF;
    fclose(f);
    tok[n] = '\0';
    while (n && isspace((unsigned char)tok[n - 1]))
        tok[--n] = '\0';
    if (big || n == 0 || strpbrk(tok, "\r\n")) {
        fprintf(stderr, "execmeshctl %s: --token-file %s: expected one token on one line (at most %zu bytes)\n", cmd,
                path, cap - 1);
        return 2;
    }
    return 0;
}

int ctl_usage_exit(void (*usage)(FILE *out), int is_help) {
    usage(is_help ? stdout : stderr);
    return is_help ? 0 : 2;
}
