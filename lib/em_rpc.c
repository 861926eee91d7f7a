/* SPDX-License-Identifier: Apache-2.0 */
/* The completion-queue loop and the byte-buffer helpers. */
#include "em_rpc.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

#include "em_log.h"
#include "em_rpc_int.h"
#include "em_util.h"

struct em_rpc_loop {
    grpc_completion_queue *cq;
    pthread_t thread;
    int started;
    atomic_llong turned_ms; /* monotonic: the loop's last wake-up (at least every 250 ms) */
};

static void *loop_main(void *arg) {
    em_rpc_loop_t *loop = arg;
    for (;;) {
        /* a wake-up at least every 250 ms: the liveness heartbeat (/livez, liveness.stall_ms >= 1000) */
        grpc_event ev = grpc_completion_queue_next(loop->cq, em_rpc_deadline_ms(250), NULL);
        atomic_store(&loop->turned_ms, em_mono_ms());
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        em_rpc_tag_t *tag = ev.tag;
        tag->done(tag, ev.success);
    }
    return NULL;
}

em_rpc_loop_t *em_rpc_loop_new(void) {
    em_rpc_loop_t *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    grpc_init();
    loop->cq = grpc_completion_queue_create_for_next(NULL);
    if (!loop->cq) {
        grpc_shutdown();
        free(loop);
        return NULL;
    }
    return loop;
}

em_err_t em_rpc_loop_start(em_rpc_loop_t *loop) {
    if (pthread_create(&loop->thread, NULL, loop_main, loop) != 0)
        return EM_ENOMEM;
    loop->started = 1;
    return EM_OK;
}

void em_rpc_loop_destroy(em_rpc_loop_t *loop) {
    if (!loop)
        return;
    grpc_completion_queue_shutdown(loop->cq);
    if (loop->started) {
        pthread_join(loop->thread, NULL);
    } else {
        while (grpc_completion_queue_next(loop->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
    }
    grpc_completion_queue_destroy(loop->cq);
    grpc_shutdown();
    free(loop);
}

grpc_completion_queue *em_rpc_loop_cq(em_rpc_loop_t *loop) { return loop->cq; }

grpc_slice em_rpc_pack(const ProtobufCMessage *msg) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    return s;
}

grpc_slice em_rpc_take_bb(grpc_byte_buffer *bb) {
    grpc_byte_buffer_reader r;
    grpc_slice s;
    if (!bb)
        return grpc_empty_slice();
    if (!grpc_byte_buffer_reader_init(&r, bb)) {
        grpc_byte_buffer_destroy(bb);
        return grpc_empty_slice();
    }
    s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    grpc_byte_buffer_destroy(bb);
    return s;
}

em_err_t em_rpc_status_to_err(grpc_status_code code) {
    switch (code) {
    case GRPC_STATUS_OK: return EM_OK;
    case GRPC_STATUS_RESOURCE_EXHAUSTED: return EM_EAGAIN;
    case GRPC_STATUS_INVALID_ARGUMENT: return EM_EINVAL;
    case GRPC_STATUS_DEADLINE_EXCEEDED: return EM_ETIMEDOUT;
    case GRPC_STATUS_UNAVAILABLE: return EM_EUNAVAIL;
    case GRPC_STATUS_NOT_FOUND: return EM_ENOTFOUND;
    case GRPC_STATUS_CANCELLED: return EM_ESHUTDOWN;
    default: return EM_EGRPC;
    }
}

const char *em_rpc_status_name(grpc_status_code code) {
    static const char *const names[] = {
        "OK",        "CANCELLED",         "UNKNOWN",        "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS",    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",      "UNIMPLEMENTED",  "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED"};
    if ((unsigned)code < sizeof(names) / sizeof(names[0]))
        return names[code];
    return "UNKNOWN";
}

gpr_timespec em_rpc_deadline_ms(int64_t timeout_ms) {
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

int64_t em_rpc_loop_turned_ms(em_rpc_loop_t *loop) { return atomic_load(&loop->turned_ms); }
