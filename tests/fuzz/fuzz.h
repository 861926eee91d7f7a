/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the fuzz targets share: a check that aborts with the property it
 * found broken (libFuzzer keeps the input as a crash), bounds checks for
 * the views decoders hand back, and quiet logs.
 */
#ifndef EM_FUZZ_H
#define EM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <protobuf-c/protobuf-c.h>

#include "em_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property of the code under test that the input broke. */
#define FUZZ_CHECK(cond, ...)                                                                   \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "FUZZ CHECK FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                       \
            fputc('\n', stderr);                                                                \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

/* Is [p, p + n) inside [buf, buf + size)? (NULL with n 0 is.) */
static inline int fuzz_within(const void *p, size_t n, const uint8_t *buf, size_t size) {
    const uint8_t *q = p;
    if (!q)
        return n == 0;
    return q >= buf && q <= buf + size && n <= (size_t)(buf + size - q);
}

/* protobuf-c decodes unknown fields numbered 0 (in a padded key) or past
 * 2^29 - 1 (no conforming writer makes them; our readers refuse them) and
 * writes them back when packing: drop them from m and every message in it, so that
 * packing m gives the canonical encoding of what it holds. */
static inline void fuzz_drop_bad_unknown(ProtobufCMessage *m) {
    size_t k = 0;
    for (size_t i = 0; i < m->n_unknown_fields; i++) {
        if (m->unknown_fields[i].tag >= 1 && m->unknown_fields[i].tag <= 0x1fffffff)
            m->unknown_fields[k++] = m->unknown_fields[i];
        else
            free(m->unknown_fields[i].data); /* protobuf-c's default allocator: malloc */
    }
    m->n_unknown_fields = k;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        char *base = (char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(size_t *)(void *)(base + f->quantifier_offset);
            ProtobufCMessage **sub = *(ProtobufCMessage ***)(void *)(base + f->offset);
            for (size_t j = 0; j < n; j++)
                fuzz_drop_bad_unknown(sub[j]);
        } else {
            ProtobufCMessage *sub = *(ProtobufCMessage **)(void *)(base + f->offset);
            if (sub)
                fuzz_drop_bad_unknown(sub);
        }
    }
}

/* Libraries log warnings for bad input: keep the fuzzer's output readable. */
static inline void fuzz_quiet(void) { em_log_set_level(EM_LOG_OFF); }

/* The LLVMFuzzerInitialize of a target that needs nothing but quiet logs. */
#define FUZZ_QUIET_INITIALIZE                                                                                  \
    int LLVMFuzzerInitialize(int *argc, char ***argv) {                                                        \
        (void)argc;                                                                                            \
        (void)argv;                                                                                            \
        fuzz_quiet();                                                                                          \
        return 0;                                                                                              \
    }

#endif
