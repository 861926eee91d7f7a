/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gRPC event loop shared by a process's server and client channels: one
 * completion queue, one thread that turns completions into callbacks. On two
 * cores one thread beats two (see docs/architecture.md), so every server
 * handler and every client reply callback runs on this thread, and must not
 * block. Other threads may start calls and reply to server calls at any
 * time (grpc_call_start_batch is thread-safe).
 *
 * Also the protobuf-c <-> gRPC byte-buffer helpers and the mapping of gRPC
 * status codes into the project's error enum.
 */
#ifndef EM_RPC_H
#define EM_RPC_H

#include <grpc/grpc.h>
#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#include "em_error.h"

typedef struct em_rpc_loop em_rpc_loop_t;

/* Calls grpc_init (once per process) and creates the completion queue. */
em_rpc_loop_t *em_rpc_loop_new(void);
/* Starts the loop thread. */
em_err_t em_rpc_loop_start(em_rpc_loop_t *loop);
/* Shuts the queue down, waits for the thread to drain it, frees. Destroy
 * every server and channel using the loop first. */
void em_rpc_loop_destroy(em_rpc_loop_t *loop);
grpc_completion_queue *em_rpc_loop_cq(em_rpc_loop_t *loop);
/* Monotonic ms of the loop thread's last wake-up (it wakes at least every
 * 250 ms while it runs); 0 before it started. */
int64_t em_rpc_loop_turned_ms(em_rpc_loop_t *loop);

/* Packs msg into a new slice (the caller owns the returned slice). */
grpc_slice em_rpc_pack(const ProtobufCMessage *msg);
/* Turns a received byte buffer into one contiguous slice (owned by the
 * caller) and destroys bb. A NULL bb gives an empty slice. */
grpc_slice em_rpc_take_bb(grpc_byte_buffer *bb);

em_err_t em_rpc_status_to_err(grpc_status_code code);
const char *em_rpc_status_name(grpc_status_code code);

/* A deadline timeout_ms from now on the monotonic clock. timeout_ms <= 0
 * is now (already passed); any large value is fine (24 h and far beyond;
 * gRPC saturates it), INT64_MAX is no deadline. */
gpr_timespec em_rpc_deadline_ms(int64_t timeout_ms);

#endif
