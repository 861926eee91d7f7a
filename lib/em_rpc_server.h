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
 * em_rpc_call_reply*, em_rpc_call_finish or em_rpc_call_fail; the call is
 * freed by the library after that (once its final status is sent and the
 * caller's side is closed). Before the answer the owner may stream: send the
 * response headers at once (em_rpc_call_send_headers) and any number of
 * messages (em_rpc_call_send_slice). The owner calls these from one thread
 * at a time (any thread, handing the call over with its own
 * synchronisation); the library serialises them with its completions.
 */
#ifndef EM_RPC_SERVER_H
#define EM_RPC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"
#include "em_health.h"
#include "em_rpc.h"
#include "em_tls.h"

typedef struct em_rpc_server em_rpc_server_t;
typedef struct em_rpc_call em_rpc_call_t;

/* A unary method handler. req/len is the whole request message; it stays
 * valid until the call is answered. */
typedef void (*em_rpc_method_fn)(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len);

typedef struct em_rpc_server_opts {
    const char *listen;          /* "HOST:PORT"; port 0 picks a free one */
    int max_message_bytes;       /* receive and send cap */
    int max_connection_age_ms;   /* clients re-resolve and rebalance this often; <= 0: never */
    /* How long calls open at max_connection_age_ms may still run before the
     * connection is closed under them. <= 0 means for ever (gRPC's INT_MAX):
     * the GOAWAY at the age sends new calls to a new connection while the
     * open ones, e.g. an Execute stream of a long execution, run to their end. */
    int max_connection_age_grace_ms;
    int min_ping_interval_ms;    /* the fastest client keepalive allowed */
    em_tls_opts_t tls;           /* zero: plaintext */
} em_rpc_server_opts_t;

/* health is borrowed and must outlive the server. */
em_rpc_server_t *em_rpc_server_new(em_rpc_loop_t *loop, em_health_t *health,
                                   const em_rpc_server_opts_t *opts, char *errstr, size_t errstr_size);

/* Registers "/pkg.Service/Method" before em_rpc_server_start; prepost is how
 * many calls of it are accepted concurrently before gRPC queues them. The
 * service name is also added to health. */
em_err_t em_rpc_server_add_method(em_rpc_server_t *srv, const char *service, const char *method,
                                  em_rpc_method_fn fn, void *ctx, int prepost);

/* With TLS on, only these identities (em_tls_peer_identity: URI SAN, else
 * DNS SAN, else CN; exact match) may call the method registered as
 * service/method; anyone else gets PERMISSION_DENIED naming the identity
 * and the method, and the handler never sees the call. None listed: nobody.
 * A method without a list takes any authenticated caller (its handler
 * decides, with em_rpc_call_identity). Without TLS there are no identities
 * and no lists apply. Before em_rpc_server_start; the strings are copied. */
em_err_t em_rpc_server_allow(em_rpc_server_t *srv, const char *service, const char *method,
                             const char *const *identities, size_t n);

/* Binds and starts serving; the bound port goes to *bound_port. On failure
 * nothing is listening and errstr says why. */
em_err_t em_rpc_server_start(em_rpc_server_t *srv, int *bound_port, char *errstr, size_t errstr_size);

/* Stops taking calls (GOAWAY; health Watch streams end with UNAVAILABLE),
 * waits until deadline_ms (monotonic ms) for in-flight calls to be answered,
 * cancels what is left, then waits for the core. A cancelled call must
 * still be answered by its owner (the answer goes nowhere) before
 * em_rpc_server_destroy can free it. Idempotent. Call from a thread other
 * than the loop's. */
void em_rpc_server_shutdown(em_rpc_server_t *srv, int64_t deadline_ms);
/* Shuts down if not done yet, waits (at most 5 s) until every call given to
 * a handler was answered and freed, then frees the server; past that bound
 * it logs and leaks the server rather than free what live calls use. */
void em_rpc_server_destroy(em_rpc_server_t *srv);

/* Calls accepted and not yet answered (all methods). */
int em_rpc_server_active_calls(em_rpc_server_t *srv);

/* Answers with a packed message (copied into the call) and status OK. */
void em_rpc_call_reply(em_rpc_call_t *call, const ProtobufCMessage *msg);
/* Answers OK with a pre-packed message; the slice is taken. Unary calls
 * (nothing streamed before) send it all in one batch, the cheapest answer
 * there is; after em_rpc_call_send_headers or _send_slice it is the stream's
 * last message, followed by status OK. */
void em_rpc_call_reply_slice(em_rpc_call_t *call, grpc_slice msg);
/* Answers with a non-OK status and a message for the caller (NULL: the
 * status's name). On a stream, after the messages already queued. */
void em_rpc_call_fail(em_rpc_call_t *call, grpc_status_code code, const char *details);

/* Streaming answers (a server-streaming method, or a unary one whose caller
 * reads with em_rpc_channel_call_stream). */

/* Sends the response headers now, before any message, with one extra header
 * key: value (key lowercase ASCII, not "-bin", e.g. "execmesh-accepted";
 * NULL: no extra header; key and value are copied). At most once per call,
 * before the first em_rpc_call_send_slice or answer. It commits the call on
 * the client: gRPC's retry policy does not retry it after this, so the
 * caller knows the server got the request. An illegal key or value is left
 * out (logged), the headers still go. */
void em_rpc_call_send_headers(em_rpc_call_t *call, const char *key, const char *value);
/* Sends one message of a streaming answer; the slice is taken. Any number
 * may be queued: they go out in order, one in flight at a time, the queue
 * unbounded (the owner bounds what it produces). When the caller is gone
 * (cancelled, deadline passed) the message is dropped. */
void em_rpc_call_send_slice(em_rpc_call_t *call, grpc_slice msg);
/* Answers with status OK after every queued message was sent. On a call
 * that streamed nothing: status OK and no message. */
void em_rpc_call_finish(em_rpc_call_t *call);

/* How many earlier attempts gRPC's retry policy made for this call
 * (the grpc-previous-rpc-attempts header; 0 on a first attempt). */
int em_rpc_call_previous_attempts(const em_rpc_call_t *call);
/* Milliseconds left before the caller's deadline (INT64_MAX when none). */
int64_t em_rpc_call_remaining_ms(const em_rpc_call_t *call);
/* Non-zero once the caller went away (cancelled, deadline passed). */
int em_rpc_call_cancelled(em_rpc_call_t *call);
/* The caller's identity with TLS on (see em_rpc_server_allow); "" without. */
#define EM_RPC_IDENTITY_MAX 256
const char *em_rpc_call_identity(const em_rpc_call_t *call);

#endif
