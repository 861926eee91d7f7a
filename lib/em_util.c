/* SPDX-License-Identifier: Apache-2.0 */
/* Clocks, address parsing, atomic file writes, random ids and UTF-8 repair. */
#include "em_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

int64_t em_now_unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t em_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t em_mono_ms(void) { return em_mono_ns() / 1000000; }
int64_t em_mono_us(void) { return em_mono_ns() / 1000; }

void em_cond_init(pthread_cond_t *cond) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &a);
    pthread_condattr_destroy(&a);
}

int em_cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *mutex, int64_t ms) {
    int64_t due = em_mono_ns() + (ms > 0 ? ms : 0) * 1000000;
    struct timespec ts = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
    return pthread_cond_timedwait(cond, mutex, &ts);
}

int em_host_is_loopback(const char *host) {
    struct in_addr a4;
    struct in6_addr a6;
    if (strcmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

em_err_t em_parse_hostport(const char *s, char *host, size_t host_size, int *port, char *errstr,
                           size_t errstr_size) {
    const char *colon;
    const char *h = s;
    size_t hl;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            goto bad;
        h = s + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            goto bad;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= host_size)
        goto bad;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 0 || p > 65535)
        goto bad;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return EM_OK;
bad:
    snprintf(errstr, errstr_size, "'%s' is not HOST:PORT (port 0..65535; 0 picks a free port)", s);
    return EM_EINVAL;
}

em_err_t em_write_file_atomic(const char *path, const char *data, size_t len) {
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
        return EM_EINVAL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return EM_EIO;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n <= 0) {
            close(fd);
            unlink(tmp);
            return EM_EIO;
        }
        off += (size_t)n;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return EM_EIO;
    }
    return EM_OK;
}

void em_random_bytes(void *buf, size_t len) {
    uint8_t *b = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(b + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            abort(); /* the kernel has no entropy source: nothing sane to do */
        got += (size_t)n;
    }
}

void em_random_id(char out[33]) {
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    em_random_bytes(b, sizeof(b));
    for (size_t i = 0; i < sizeof(b); i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[32] = '\0';
}

void em_default_replica(const char *service, char *out, size_t n) {
    char host[64] = "localhost";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(out, n, "%s-%s-%d", service, host, (int)getpid());
}

/* The length of the UTF-8 sequence lead byte c starts (2..4), with the
 * range its second byte must be in (which rules out overlong forms,
 * surrogates and code points beyond U+10FFFF, RFC 3629 section 4); 0 when c
 * cannot start a multi-byte sequence. */
static size_t utf8_lead(uint8_t c, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        return 2;
    if (c >= 0xe0 && c <= 0xef) {
        if (c == 0xe0)
            *lo = 0xa0; /* below: overlong */
        else if (c == 0xed)
            *hi = 0x9f; /* above: U+D800..U+DFFF, surrogates */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (c == 0xf0)
            *lo = 0x90; /* below: overlong */
        else if (c == 0xf4)
            *hi = 0x8f; /* above: beyond U+10FFFF */
        return 4;
    }
    return 0; /* ASCII, a continuation byte, C0/C1 (always overlong) or F5..FF */
}

/* How many bytes at s[0..n) form a well-formed sequence: its length when
 * whole, else 0 with *bad set to the length of the ill-formed prefix to
 * replace by one '?' (at least 1). s[0] is not ASCII. */
static size_t utf8_seq(const uint8_t *s, size_t n, size_t *bad) {
    uint8_t lo, hi;
    size_t len = utf8_lead(s[0], &lo, &hi);
    size_t i = 1;
    if (len == 0) {
        *bad = 1;
        return 0;
    }
    for (; i < len && i < n; i++) {
        if (s[i] < lo || s[i] > hi)
            break;
        lo = 0x80; /* only the second byte has a narrower range */
        hi = 0xbf;
    }
    if (i == len)
        return len;
    *bad = i; /* the lead and the continuation bytes that still fitted */
    return 0;
}

size_t em_utf8_clean(char *dst, size_t cap, const uint8_t *src, size_t n) {
    size_t o = 0, i = 0;
    if (cap == 0)
        return 0;
    while (i < n) {
        size_t take = 1, bad = 0;
        if (src[i] == 0 || src[i] >= 0x80) {
            take = src[i] ? utf8_seq(src + i, n - i, &bad) : 0;
            if (take == 0)
                take = 1; /* one '?' for the ill-formed part (or the NUL) */
        }
        if (o + take > cap - 1)
            break; /* the whole code point does not fit: stop before it */
        if (bad || src[i] == 0) {
            dst[o++] = '?';
            i += bad ? bad : 1;
        } else {
            memcpy(dst + o, src + i, take);
            o += take;
            i += take;
        }
    }
    dst[o] = '\0';
    return o;
}

void em_utf8_trim(char *s) {
    size_t n = strlen(s);
    size_t start = n;
    /* back over the continuation bytes a cut sequence can end with (3 at most) */
    while (start > 0 && n - start < 3 && ((uint8_t)s[start - 1] & 0xc0) == 0x80)
        start--;
    if (start == 0)
        return;
    start--; /* the byte before them: ASCII, a lead, or a fourth continuation byte */
    uint8_t lo, hi;
    size_t need = utf8_lead((uint8_t)s[start], &lo, &hi);
    if (need > n - start)
        s[start] = '\0';
}

int em_grow(void *array_ptr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 8;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem)
            return -1;
        nc *= 2;
    }
    void *old;
    memcpy(&old, array_ptr, sizeof(old));
    void *p = realloc(old, nc * elem);
    if (!p)
        return -1;
    memcpy(array_ptr, &p, sizeof(p));
    *cap = nc;
    return 0;
}

uint64_t em_fnv1a(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 14695981039346656037ull; /* the offset basis */
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}
