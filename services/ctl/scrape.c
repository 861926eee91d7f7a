/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading a replica's Prometheus /metrics from the command line (fetched by
 * http.c): a reader of the text exposition format that yields (name,
 * partition label, value).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* ---- the Prometheus text format ----------------------------------------- */

static int name_char(char c, int first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' || (!first && c >= '0' && c <= '9');
}

/* Parses one line [p, e) into s; 0 if it is no sample. */
static int parse_line(const char *p, const char *e, ctl_prom_sample_t *s) {
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    if (p == e || *p == '#' || !name_char(*p, 1))
        return 0;
    s->name = p;
    while (p < e && name_char(*p, 0))
        p++;
    s->name_len = (size_t)(p - s->name);
    s->partition = -1;
    if (p < e && *p == '{') {
        p++;
        for (;;) {
            while (p < e && (*p == ' ' || *p == ','))
                p++;
            if (p < e && *p == '}') {
                p++;
                break;
            }
            const char *k = p;
            while (p < e && name_char(*p, 0))
                p++;
            size_t kl = (size_t)(p - k);
            if (kl == 0 || p + 1 >= e || p[0] != '=' || p[1] != '"')
                return 0;
            p += 2;
            const char *v = p;
            while (p < e && *p != '"')
                p += *p == '\\' && p + 1 < e ? 2 : 1;
            if (p >= e)
                return 0;
            if (kl == 9 && memcmp(k, "partition", 9) == 0) {
                char num[24];
                size_t vl = (size_t)(p - v);
                char *end;
                if (vl == 0 || vl >= sizeof(num))
                    return 0;
                memcpy(num, v, vl);
                num[vl] = '\0';
                long long pv = strtoll(num, &end, 10);
                if (*end || pv < 0)
                    return 0;
                s->partition = pv;
            }
            p++; /* the closing quote */
        }
    }
    if (p == e || (*p != ' ' && *p != '\t'))
        return 0;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    char num[64];
    size_t vl = 0;
    while (p + vl < e && p[vl] != ' ' && p[vl] != '\t' && p[vl] != '\r')
        vl++;
    if (vl == 0 || vl >= sizeof(num))
        return 0;
    memcpy(num, p, vl);
    num[vl] = '\0';
    char *end;
    s->value = strtod(num, &end);
    return *end == '\0';
}

int ctl_prom_next(const char **cursor, const char *end, ctl_prom_sample_t *s) {
    while (*cursor < end) {
        const char *p = *cursor;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        *cursor = nl ? nl + 1 : end;
        if (parse_line(p, e, s))
            return 1;
    }
    return 0;
}

int ctl_prom_is(const ctl_prom_sample_t *s, const char *name) {
    return strlen(name) == s->name_len && memcmp(s->name, name, s->name_len) == 0;
}

double ctl_prom_value(const char *text, size_t len, const char *name, double def) {
    const char *cur = text;
    ctl_prom_sample_t s;
    while (ctl_prom_next(&cur, text + len, &s))
        if (ctl_prom_is(&s, name))
            return s.value;
    return def;
}
