/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JSON in and out for execmeshctl. Out: a Result as one JSON line (what
 * submit, get and tail print). In: one JSON object per line of a submit
 * file, read by a small recursive-descent parser that knows exactly what
 * such a line needs: strings with every escape (\uXXXX and surrogate pairs
 * included; a string may carry NUL bytes, for payloads), integers, null,
 * true/false and nested objects (headers). Arrays and fractions are refused
 * with the column. A general JSON library is not worth a dependency for it.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl.h"
#include "em_execution.h"
#include "em_log.h"

/* ---- out ---------------------------------------------------------------- */

void ctl_json_str(FILE *out, const char *s, size_t n) {
    size_t cap = n * 6 + 1;
    char *buf = malloc(cap);
    if (!buf) {
        fputs("\"\"", out);
        return;
    }
    em_json_escape(buf, cap, s, n);
    fprintf(out, "\"%s\"", buf);
    free(buf);
}

static void json_base64(FILE *out, const uint8_t *s, size_t n) {
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

void ctl_json_bytes(FILE *out, const char *name, const uint8_t *s, size_t n) {
    if (n == 0 || em_utf8_valid(s, n)) {
        fprintf(out, "\"%s\":", name);
        ctl_json_str(out, (const char *)s, n);
    } else {
        fprintf(out, "\"%s_base64\":", name);
        json_base64(out, s, n);
    }
}

const char *ctl_status_name(int status) {
    static char other[32];
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(&execmesh__v1__status__descriptor, status);
    if (ev)
        return ev->name;
    snprintf(other, sizeof(other), "STATUS_%d", status);
    return other;
}

int ctl_status_parse(const char *name) {
    const ProtobufCEnumDescriptor *d = &execmesh__v1__status__descriptor;
    for (unsigned i = 0; i < d->n_values; i++)
        if (strcasecmp(d->values[i].name, name) == 0)
            return d->values[i].value;
    return -1;
}

void ctl_print_result(FILE *out, const Execmesh__V1__Result *r, int64_t latency_ms) {
    if (latency_ms < 0)
        latency_ms = r->submitted_unix_ms && r->finished_unix_ms ? r->finished_unix_ms - r->submitted_unix_ms : 0;
    fputs("{\"id\":", out);
    ctl_json_str(out, r->id, strlen(r->id));
    fprintf(out, ",\"attempt\":%u,\"status\":\"%s\",", r->attempt, ctl_status_name(r->status));
    ctl_json_bytes(out, "output", r->output.data, r->output.len);
    fputs(",\"error\":", out);
    ctl_json_str(out, r->error, strlen(r->error));
    fprintf(out, ",\"exit_code\":%d,\"executor\":", r->exit_code);
    ctl_json_str(out, r->executor, strlen(r->executor));
    fprintf(out, ",\"run_ms\":%lld,\"latency_ms\":%lld,\"final\":%s,\"handler\":",
            (long long)(r->finished_unix_ms - r->started_unix_ms), (long long)latency_ms,
            r->final ? "true" : "false");
    ctl_json_str(out, r->handler ? r->handler : "", r->handler ? strlen(r->handler) : 0);
    fprintf(out,
            ",\"submitted_unix_ms\":%" PRId64 ",\"dispatched_unix_ms\":%" PRId64 ",\"started_unix_ms\":%" PRId64
            ",\"finished_unix_ms\":%" PRId64,
            r->submitted_unix_ms, r->dispatched_unix_ms, r->started_unix_ms, r->finished_unix_ms);
    if (!r->final && r->retry_delay_ms)
        fprintf(out, ",\"retry_delay_ms\":%u", r->retry_delay_ms);
    fputs(",\"headers\":{", out);
    for (size_t i = 0; i < r->n_headers; i++) {
        if (i)
            fputc(',', out);
        ctl_json_str(out, r->headers[i]->key, strlen(r->headers[i]->key));
        fputc(':', out);
        ctl_json_str(out, r->headers[i]->value, strlen(r->headers[i]->value));
    }
    fputs("}}\n", out);
}

/* ---- in ----------------------------------------------------------------- */

typedef struct jp {
    const char *s, *p, *e;
    char *err;
    size_t errn;
    int failed;
} jp_t;

#define JSON_MAX_DEPTH 4

static int jp_fail(jp_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int jp_fail(jp_t *j, const char *fmt, ...) {
    if (!j->failed) {
        char msg[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        snprintf(j->err, j->errn, "column %zu: %s", (size_t)(j->p - j->s) + 1, msg);
        j->failed = 1;
    }
    return -1;
}

static void jp_ws(jp_t *j) {
    while (j->p < j->e && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
        j->p++;
}

static int hex4(const char *p, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 99u;
        if (d == 99u)
            return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string at j->p (the opening quote): malloc'd, decoded, in *out and *len. */
static int jp_string(jp_t *j, char **out, size_t *len) {
    j->p++;
    /* the decoded string is never longer than the escaped one */
    const char *q = j->p;
    while (q < j->e && *q != '"')
        q += *q == '\\' && q + 1 < j->e ? 2 : 1;
    if (q >= j->e)
        return jp_fail(j, "unterminated string");
    char *o = malloc((size_t)(q - j->p) + 1);
    if (!o)
        return jp_fail(j, "out of memory");
    size_t n = 0;
    while (*j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) {
            free(o);
            return jp_fail(j, "control character in a string (escape it)");
        }
        if (c != '\\') {
            o[n++] = (char)c;
            j->p++;
            continue;
        }
        j->p++;
        char esc = *j->p++;
        switch (esc) {
        case '"': o[n++] = '"'; break;
        case '\\': o[n++] = '\\'; break;
        case '/': o[n++] = '/'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (j->e - j->p < 4 || hex4(j->p, &cp) != 0) {
                free(o);
                return jp_fail(j, "\\u needs 4 hex digits");
            }
            j->p += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                free(o);
                return jp_fail(j, "a lone low surrogate \\u%04x", cp);
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (j->e - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || hex4(j->p + 2, &lo) != 0 || lo < 0xdc00 ||
                    lo > 0xdfff) {
                    free(o);
                    return jp_fail(j, "a high surrogate \\u%04x without its low one", cp);
                }
                j->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            n += put_utf8(o + n, cp); /* \uXXXX (6 bytes) or a pair (12) always holds its UTF-8 (<= 4) */
            break;
        }
        default:
            free(o);
            j->p -= 2;
            return jp_fail(j, "unknown escape \\%c", esc);
        }
    }
    j->p++;
    o[n] = '\0';
    *out = o;
    *len = n;
    return 0;
}

static int jp_object(jp_t *j, ctl_json_obj_t *o, int depth);

static int jp_value(jp_t *j, ctl_json_member_t *m, int depth) {
    jp_ws(j);
    if (j->p >= j->e)
        return jp_fail(j, "a value expected, the line ended");
    char c = *j->p;
    if (c == '"') {
        m->kind = CTL_JSON_STR;
        return jp_string(j, &m->str, &m->len);
    }
    if (c == '{') {
        if (depth >= JSON_MAX_DEPTH)
            return jp_fail(j, "objects nested deeper than %d", JSON_MAX_DEPTH);
        m->kind = CTL_JSON_OBJ;
        return jp_object(j, &m->obj, depth + 1);
    }
    if (c == '[')
        return jp_fail(j, "arrays are not used in a submit line");
    if (c == '-' || (c >= '0' && c <= '9')) {
        const char *start = j->p;
        if (*j->p == '-')
            j->p++;
        while (j->p < j->e && isdigit((unsigned char)*j->p))
            j->p++;
        if (j->p < j->e && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
            return jp_fail(j, "an integer expected (no fraction or exponent)");
        char num[32];
        size_t l = (size_t)(j->p - start);
        if (l == 0 || l >= sizeof(num) || (l == 1 && *start == '-')) {
            j->p = start;
            return jp_fail(j, "a bad number");
        }
        memcpy(num, start, l);
        num[l] = '\0';
        errno = 0;
        m->num = strtoll(num, NULL, 10);
        if (errno) {
            j->p = start;
            return jp_fail(j, "%s is out of range", num);
        }
        m->kind = CTL_JSON_INT;
        return 0;
    }
    static const struct {
        const char *word;
        ctl_json_kind_t kind;
        int64_t v;
    } words[] = {{"null", CTL_JSON_NULL, 0}, {"true", CTL_JSON_BOOL, 1}, {"false", CTL_JSON_BOOL, 0}};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t l = strlen(words[i].word);
        if ((size_t)(j->e - j->p) >= l && memcmp(j->p, words[i].word, l) == 0) {
            j->p += l;
            m->kind = words[i].kind;
            m->num = words[i].v;
            return 0;
        }
    }
    return jp_fail(j, "a value expected (a string, an integer, an object, true, false or null)");
}

static int jp_object(jp_t *j, ctl_json_obj_t *o, int depth) {
    size_t cap = 0;
    memset(o, 0, sizeof(*o));
    j->p++; /* { */
    jp_ws(j);
    if (j->p < j->e && *j->p == '}') {
        j->p++;
        return 0;
    }
    for (;;) {
        jp_ws(j);
        if (j->p >= j->e || *j->p != '"')
            return jp_fail(j, "a member name (a string) expected");
        if (o->n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            ctl_json_member_t *nm = realloc(o->m, ncap * sizeof(*nm));
            if (!nm)
                return jp_fail(j, "out of memory");
            o->m = nm;
            cap = ncap;
        }
        ctl_json_member_t *m = &o->m[o->n];
        memset(m, 0, sizeof(*m));
        size_t klen;
        const char *kstart = j->p;
        if (jp_string(j, &m->key, &klen) != 0)
            return -1;
        o->n++; /* from here ctl_json_free frees it */
        for (size_t i = 0; i + 1 < o->n; i++)
            if (strcmp(o->m[i].key, m->key) == 0) {
                j->p = kstart;
                return jp_fail(j, "\"%s\" given twice", m->key);
            }
        jp_ws(j);
        if (j->p >= j->e || *j->p != ':')
            return jp_fail(j, "':' expected after \"%s\"", m->key);
        j->p++;
        if (jp_value(j, m, depth) != 0)
            return -1;
        jp_ws(j);
        if (j->p < j->e && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->e && *j->p == '}') {
            j->p++;
            return 0;
        }
        return jp_fail(j, "',' or '}' expected");
    }
}

int ctl_json_parse_object(const char *text, size_t n, ctl_json_obj_t *o, char *errstr, size_t errstr_size) {
    jp_t j = {.s = text, .p = text, .e = text + n, .err = errstr, .errn = errstr_size};
    memset(o, 0, sizeof(*o));
    jp_ws(&j);
    if (j.p >= j.e || *j.p != '{') {
        jp_fail(&j, "a JSON object ({...}) expected");
        return -1;
    }
    if (jp_object(&j, o, 1) != 0) {
        ctl_json_free(o);
        return -1;
    }
    jp_ws(&j);
    if (j.p != j.e) {
        jp_fail(&j, "text after the object");
        ctl_json_free(o);
        return -1;
    }
    return 0;
}

void ctl_json_free(ctl_json_obj_t *o) {
    for (size_t i = 0; i < o->n; i++) {
        free(o->m[i].key);
        free(o->m[i].str);
        if (o->m[i].kind == CTL_JSON_OBJ)
            ctl_json_free(&o->m[i].obj);
    }
    free(o->m);
    o->m = NULL;
    o->n = 0;
}

int ctl_base64_decode(const char *s, size_t n, uint8_t **out, size_t *len) {
    while (n && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    uint8_t *o = malloc(n / 4 * 3 + 3);
    if (!o)
        return -1;
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int v = c >= 'A' && c <= 'Z' ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '+' || c == '-' ? 62
                : c == '/' || c == '_' ? 63
                                       : -1;
        if (v < 0) {
            free(o);
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (uint8_t)(acc >> bits);
        }
    }
    *out = o;
    *len = k;
    return 0;
}
