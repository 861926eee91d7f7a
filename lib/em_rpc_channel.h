/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A gRPC client channel to a set of replicas of one service. The target
 * names several replicas ("ipv4:127.0.0.1:7201,127.0.0.1:7202" or
 * "dns:///executor.ns.svc:7200"); gRPC itself balances over them with
 * round_robin, skips replicas whose health Watch says NOT_SERVING
 * (healthCheckConfig), retries UNAVAILABLE on another pick (retryPolicy),
 * and finds frozen peers with keepalive pings. Calls wait for a ready
 * replica until their deadline, so a short outage costs time, not calls.
 *
 * Reply callbacks run on the loop thread and must not block.
 */
#ifndef EM_RPC_CHANNEL_H
#define EM_RPC_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"
#include "em_rpc.h"
#include "em_tls.h"

typedef struct em_rpc_channel em_rpc_channel_t;
typedef struct em_rpc_method_ref em_rpc_method_ref_t;

typedef struct em_rpc_channel_opts {
    int keepalive_time_ms;
    int keepalive_timeout_ms;
    int reconnect_min_ms;
    int reconnect_max_ms;
    int retry_max_attempts;   /* 1 disables retries; gRPC caps it at 5 */
    int max_message_bytes;
    int dns_min_resolution_ms;
    int no_health_check;      /* 1: pick replicas whatever their health says (for probes) */
    int fail_fast;            /* 1: fail at once when no replica is reachable */
    em_tls_opts_t tls;        /* zero: plaintext */
} em_rpc_channel_opts_t;

/* Called once per call with its final status. resp/len is the response
 * message when code is OK (valid only during the callback), details the
 * server's or gRPC's message. */
typedef void (*em_rpc_reply_fn)(void *arg, grpc_status_code code, const char *details, const uint8_t *resp,
                                size_t len);

/* service is the full service name ("execmesh.v1.Executor"): it names the
 * health service to watch and the methods the retry policy covers. */
em_rpc_channel_t *em_rpc_channel_new(em_rpc_loop_t *loop, const char *target, const char *service,
                                     const em_rpc_channel_opts_t *opts, char *errstr, size_t errstr_size);

/* Registers "/pkg.Service/Method" for fast calls; valid for the channel's life. */
em_rpc_method_ref_t *em_rpc_channel_method(em_rpc_channel_t *ch, const char *method);

/* Starts a unary call from any thread. req is taken (also on failure). On
 * failure fn is never called. timeout_ms <= 0 is a deadline already passed
 * (the call fails with DEADLINE_EXCEEDED). */
em_err_t em_rpc_channel_call(em_rpc_channel_t *ch, em_rpc_method_ref_t *method, grpc_slice req,
                             int64_t timeout_ms, em_rpc_reply_fn fn, void *arg);

/* The callbacks of a server-streaming call, all on the loop thread (they
 * must not block), in this order: on_headers at most once, on_message for
 * each message, on_done exactly once and last. */
typedef struct em_rpc_stream_cb {
    /* The response header to capture ("execmesh-accepted"), or NULL; copied. */
    const char *header_key;
    /* Once the response headers arrived; value is header_key's value (valid
     * during the callback) or NULL when absent. Runs at once when the server
     * sent headers with metadata (em_rpc_call_send_headers); headers without
     * any cannot be told from a failed call's trailers-only answer, so then
     * it runs just before the first message or an OK on_done. Never runs for
     * a call that failed before headers came. peer is the server's
     * address as gRPC names it ("ipv4:127.0.0.1:7201", "ipv6:[::1]:7201"),
     * a target a channel can be made to; valid during the callback. May be
     * NULL. */
    void (*on_headers)(void *arg, const char *value, const char *peer);
    /* Each response message, in order; msg valid during the callback. May be NULL. */
    void (*on_message)(void *arg, const uint8_t *msg, size_t len);
    /* The final status; details is the server's or gRPC's message. Required. */
    void (*on_done)(void *arg, grpc_status_code code, const char *details);
} em_rpc_stream_cb_t;

/* Starts a server-streaming call from any thread (it also reads a unary
 * method's answer: its one message, then OK). req is taken (also on
 * failure); cb is copied. On failure no callback ever runs. timeout_ms <= 0
 * means no deadline; else a deadline that far away (24 h and more are
 * fine). The call is committed to the first server that sends headers or a
 * message: the retry policy retries it only before that. */
em_err_t em_rpc_channel_call_stream(em_rpc_channel_t *ch, em_rpc_method_ref_t *method, grpc_slice req,
                                    int64_t timeout_ms, const em_rpc_stream_cb_t *cb, void *arg);

/* Cancels the calls still open, unary and streaming (their on_done or reply
 * callbacks run with CANCELLED), waits for those callbacks (bounded), then
 * frees the channel. Call from a thread other than the loop's. */
void em_rpc_channel_destroy(em_rpc_channel_t *ch);

/* Calls started and not yet completed. */
int em_rpc_channel_active_calls(em_rpc_channel_t *ch);

#endif
