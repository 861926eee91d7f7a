/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A gRPC server on the C core: registered unary methods, the
 * grpc.health.v1.Health service (Check and Watch, driven by an em_health
 * state), UNIMPLEMENTED for every unknown method (an unanswered unknown call
 * would hang and make health-checking clients shun the server), keepalive
 * permission for the clients' pings, and a bounded graceful shutdown.
 *
 * Handlers run on the loop thread and must not block. A handler owns the
 * call it is given until it answers it exactly once, from any thread, with
 * em_rpc_call_reply* or em_rpc_call_fail; the call is freed by the library
 * after that.
 */
#ifndef EM_RPC_SERVER_H
#define EM_RPC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"
#include "em_health.h"
#include "em_rpc.h"

typedef struct em_rpc_server em_rpc_server_t;
typedef struct em_rpc_call em_rpc_call_t;

/* A unary method handler. req/len is the whole request message; it stays
 * valid until the call is answered. */
typedef void (*em_rpc_method_fn)(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len);

typedef struct em_rpc_server_opts {
    const char *listen;          /* "HOST:PORT"; port 0 picks a free one */
    int max_message_bytes;       /* receive and send cap */
    int max_connection_age_ms;   /* clients re-resolve and rebalance this often */
    int max_connection_age_grace_ms;
    int min_ping_interval_ms;    /* the fastest client keepalive allowed */
} em_rpc_server_opts_t;

/* health is borrowed and must outlive the server. */
em_rpc_server_t *em_rpc_server_new(em_rpc_loop_t *loop, em_health_t *health,
                                   const em_rpc_server_opts_t *opts, char *errstr, size_t errstr_size);

/* Registers "/pkg.Service/Method" before em_rpc_server_start; prepost is how
 * many calls of it are accepted concurrently before gRPC queues them. The
 * service name is also added to health. */
em_err_t em_rpc_server_add_method(em_rpc_server_t *srv, const char *service, const char *method,
                                  em_rpc_method_fn fn, void *ctx, int prepost);

/* Binds and starts serving; the bound port goes to *bound_port. On failure
 * nothing is listening and errstr says why. */
em_err_t em_rpc_server_start(em_rpc_server_t *srv, int *bound_port, char *errstr, size_t errstr_size);

/* Stops taking calls (GOAWAY; health Watch streams end with UNAVAILABLE),
 * waits until deadline_ms (monotonic ms) for in-flight calls to be answered,
 * cancels what is left, then waits for the core. Idempotent. Call from a
 * thread other than the loop's. */
void em_rpc_server_shutdown(em_rpc_server_t *srv, int64_t deadline_ms);
void em_rpc_server_destroy(em_rpc_server_t *srv);

/* Calls accepted and not yet answered (all methods). */
int em_rpc_server_active_calls(em_rpc_server_t *srv);

/* Answers with a packed message (copied into the call) and status OK. */
void em_rpc_call_reply(em_rpc_call_t *call, const ProtobufCMessage *msg);
/* Answers OK with a pre-packed message; the slice is taken. */
void em_rpc_call_reply_slice(em_rpc_call_t *call, grpc_slice msg);
/* Answers with a non-OK status and a message for the caller. */
void em_rpc_call_fail(em_rpc_call_t *call, grpc_status_code code, const char *details);

/* How many earlier attempts gRPC's retry policy made for this call
 * (the grpc-previous-rpc-attempts header; 0 on a first attempt). */
int em_rpc_call_previous_attempts(const em_rpc_call_t *call);
/* Milliseconds left before the caller's deadline (INT64_MAX when none). */
int64_t em_rpc_call_remaining_ms(const em_rpc_call_t *call);
/* Non-zero once the caller went away (cancelled, deadline passed). */
int em_rpc_call_cancelled(em_rpc_call_t *call);

#endif
