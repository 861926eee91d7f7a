/* SPDX-License-Identifier: Apache-2.0 */
#include "em_trace.h"

#include <string.h>

#include "em_pbwire.h"
#include "em_util.h"

static int lower_hex(const uint8_t *p, size_t n, int *nonzero) {
    *nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
        if (p[i] != '0')
            *nonzero = 1;
    }
    return 1;
}

int em_traceparent_trace_id(const uint8_t *p, size_t n) {
    int nz, trace_nz, parent_nz;
    if (n < EM_TRACEPARENT_LEN || p[2] != '-' || p[35] != '-' || p[52] != '-')
        return 0;
    if (!lower_hex(p, 2, &nz) || (p[0] == 'f' && p[1] == 'f')) /* version ff is invalid */
        return 0;
    if (p[0] == '0' && p[1] == '0' && n != EM_TRACEPARENT_LEN)
        return 0;
    if (n > EM_TRACEPARENT_LEN && p[EM_TRACEPARENT_LEN] != '-')
        return 0;
    return lower_hex(p + 3, 32, &trace_nz) && trace_nz && lower_hex(p + 36, 16, &parent_nz) && parent_nz &&
           lower_hex(p + 53, 2, &nz);
}

static void put_hex(char *out, const uint8_t *b, size_t n) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
}

/* out from 24 bytes of ids (16 trace, 8 parent; a zero id made non-zero). */
static void format(char out[EM_TRACEPARENT_LEN + 1], uint8_t b[24]) {
    int nz = 0;
    for (int i = 0; i < 16; i++)
        nz |= b[i];
    if (!nz)
        b[15] = 1;
    nz = 0;
    for (int i = 16; i < 24; i++)
        nz |= b[i];
    if (!nz)
        b[23] = 1;
    memcpy(out, "00-", 3);
    put_hex(out + 3, b, 16);
    out[35] = '-';
    put_hex(out + 36, b + 16, 8);
    memcpy(out + 52, "-01", 4); /* sampled; with the NUL */
}

void em_traceparent_random(char out[EM_TRACEPARENT_LEN + 1]) {
    uint8_t b[24];
    em_random_bytes(b, sizeof(b));
    format(out, b);
}

void em_traceparent_derive(const uint8_t *id, size_t n, char out[EM_TRACEPARENT_LEN + 1]) {
    uint8_t b[24];
    for (int k = 0; k < 3; k++) { /* three 64-bit hashes of the id, each with its own prefix */
        uint8_t buf[256 + 1];
        size_t m = n < 256 ? n : 256;
        buf[0] = (uint8_t)('t' + k);
        memcpy(buf + 1, id, m);
        uint64_t h = em_fnv1a(buf, m + 1);
        if (n > 256) /* a long id: its tail counts too */
            h ^= em_fnv1a(id + 256, n - 256) * 0x9e3779b97f4a7c15ULL;
        for (int i = 0; i < 8; i++)
            b[8 * k + i] = (uint8_t)(h >> (56 - 8 * i));
    }
    format(out, b);
}

char *em_trace_id_of(const uint8_t *tp, size_t tp_len, const uint8_t *id, size_t id_len, char out[33]) {
    char derived[EM_TRACEPARENT_LEN + 1];
    if (!tp || !em_traceparent_trace_id(tp, tp_len)) {
        em_traceparent_derive(id ? id : (const uint8_t *)"", id ? id_len : 0, derived);
        tp = (const uint8_t *)derived;
    }
    memcpy(out, tp + 3, 32);
    out[32] = '\0';
    return out;
}

int em_header_is(const uint8_t *entry, size_t n, const char *key, const uint8_t **value, size_t *vn) {
    const uint8_t *k;
    size_t kn;
    if (em_pb_find_len(entry, n, 1, &k, &kn) != EM_OK || kn != strlen(key) || memcmp(k, key, kn) != 0)
        return 0;
    if (em_pb_find_len(entry, n, 2, value, vn) != EM_OK) {
        *value = (const uint8_t *)"";
        *vn = 0;
    }
    return 1;
}
