/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to lib/em_rpc*.c: every completion-queue tag is one of these, the
 * first field of a typed context; the loop calls done(tag, ok).
 */
#ifndef EM_RPC_INT_H
#define EM_RPC_INT_H

#include <grpc/grpc.h>
#include <stdint.h>

#include "em_util.h"

typedef struct em_rpc_tag {
    void (*done)(struct em_rpc_tag *tag, int ok);
} em_rpc_tag_t;

/* grpc_arg keys are "char *" in the C core API although never written;
 * these keep string literals const-correct. */
static inline grpc_arg em_int_arg(const char *key, int value) {
    grpc_arg a;
    a.type = GRPC_ARG_INTEGER;
    a.key = (char *)(uintptr_t)key;
    a.value.integer = value;
    return a;
}

static inline grpc_arg em_str_arg(const char *key, const char *value) {
    grpc_arg a;
    a.type = GRPC_ARG_STRING;
    a.key = (char *)(uintptr_t)key;
    a.value.string = (char *)(uintptr_t)value;
    return a;
}


#endif
