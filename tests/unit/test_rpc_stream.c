/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for server-streaming answers and early response headers
 * (em_rpc_call_send_headers/_send_slice/_finish, em_rpc_channel_call_stream)
 * with a real server and channel in this process over loopback TCP: the
 * headers arrive before any message is sent, each message arrives before
 * the server sends the next (the stream is not buffered to its end), a
 * failure ends the stream after the queued messages, unary calls work as
 * before, a server shut down or a channel destroyed under an open stream
 * ends it with a non-OK status and frees everything, and a call outlives the
 * server's max connection age when the grace is "infinite" (0).
 *
 * Every wait is on a condition the callbacks signal, with a bound; the only
 * timed wait is the long call's own duration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_health.h"
#include "em_rpc.h"
#include "em_rpc_channel.h"
#include "em_rpc_server.h"
#include "em_util.h"

#define SERVICE "execmesh.test.Stream"
#define ACCEPTED_KEY "execmesh-accepted"
#define WAIT_MS 10000 /* bound of every wait for something that should come at once */
#define MAX_EVENTS 32
#define MAX_WORKERS 4
#define BURST 200

static em_rpc_loop_t *loop;

/* What one client call saw, in order. */
typedef struct client {
    struct fixture *fx;
    char events[MAX_EVENTS][96];
    int nevents;
    int headers;  /* on_headers calls */
    char peer[96]; /* the server's address on_headers gave */
    int messages; /* on_message calls */
    int out_of_order;
    int done;     /* on_done calls */
    grpc_status_code code;
    char details[256];
} client_t;

typedef struct worker {
    struct fixture *fx;
    em_rpc_call_t *call;
    void *(*fn)(void *);
    pthread_t thread;
} worker_t;

typedef struct fixture {
    pthread_mutex_t lock; /* guards the clients and the workers' results */
    pthread_cond_t cond;
    em_health_t *health;
    em_rpc_server_t *srv;
    em_rpc_channel_t *ch;
    em_rpc_method_ref_t *m_run, *m_unary;
    client_t client; /* the streaming call of the test */
    worker_t workers[MAX_WORKERS];
    int nworkers;
    int worker_timeouts; /* a worker waited in vain for the client */
    int long_ms;         /* how long the "long" call works */
    char target[64];     /* the server's address, as the channel's target */
} fixture_t;

/* ---- waiting ------------------------------------------------------------ */

/* Waits until *counter >= n (fx->lock held), at most ms; returns *counter >= n. */
static int wait_count_locked(fixture_t *fx, const int *counter, int n, int64_t ms) {
    int64_t deadline = em_mono_ms() + ms;
    while (*counter < n) {
        int64_t left = deadline - em_mono_ms();
        if (left <= 0)
            break;
        em_cond_wait_ms(&fx->cond, &fx->lock, left);
    }
    return *counter >= n;
}

static int wait_count(fixture_t *fx, const int *counter, int n, int64_t ms) {
    pthread_mutex_lock(&fx->lock);
    int ok = wait_count_locked(fx, counter, n, ms);
    pthread_mutex_unlock(&fx->lock);
    return ok;
}

/* ---- the client's callbacks (loop thread) -------------------------------- */

static void add_event(client_t *c, const char *fmt, ...) {
    va_list ap;
    if (c->nevents == MAX_EVENTS)
        return;
    va_start(ap, fmt);
    vsnprintf(c->events[c->nevents++], sizeof(c->events[0]), fmt, ap);
    va_end(ap);
}

static void on_headers(void *arg, const char *value, const char *peer) {
    client_t *c = arg;
    pthread_mutex_lock(&c->fx->lock);
    c->headers++;
    snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "(none)");
    add_event(c, "H:%s", value ? value : "(none)");
    pthread_cond_broadcast(&c->fx->cond);
    pthread_mutex_unlock(&c->fx->lock);
}

static void on_message(void *arg, const uint8_t *msg, size_t len) {
    client_t *c = arg;
    char want[32];
    pthread_mutex_lock(&c->fx->lock);
    snprintf(want, sizeof(want), "m%d", c->messages);
    if (len != strlen(want) || memcmp(msg, want, len) != 0)
        c->out_of_order++;
    c->messages++;
    if (c->messages <= 8)
        add_event(c, "M:%.*s", (int)len, (const char *)msg);
    pthread_cond_broadcast(&c->fx->cond);
    pthread_mutex_unlock(&c->fx->lock);
}

static void on_done(void *arg, grpc_status_code code, const char *details) {
    client_t *c = arg;
    pthread_mutex_lock(&c->fx->lock);
    c->done++;
    c->code = code;
    snprintf(c->details, sizeof(c->details), "%s", details);
    add_event(c, "D:%s", em_rpc_status_name(code));
    pthread_cond_broadcast(&c->fx->cond);
    pthread_mutex_unlock(&c->fx->lock);
}

static const em_rpc_stream_cb_t stream_cb = {ACCEPTED_KEY, on_headers, on_message, on_done};

#define DAY_MS (24LL * 3600 * 1000)

/* Starts a streaming call of scenario name to method m; timeout_ms 0: none. */
static void call_stream_timeout(fixture_t *fx, em_rpc_method_ref_t *m, const char *name, int64_t timeout_ms) {
    fx->client.fx = fx;
    assert_int_equal(em_rpc_channel_call_stream(fx->ch, m, grpc_slice_from_copied_string(name), timeout_ms,
                                                &stream_cb, &fx->client),
                     EM_OK);
}

/* The deadline an Execute stream of long executions may have: a day. */
static void call_stream(fixture_t *fx, em_rpc_method_ref_t *m, const char *name) {
    call_stream_timeout(fx, m, name, DAY_MS);
}

/* Checks the client's events against want (NULL-terminated). */
static void assert_events(fixture_t *fx, const char *const *want) {
    pthread_mutex_lock(&fx->lock);
    int n = 0;
    for (; want[n]; n++) {
        if (n >= fx->client.nevents)
            fail_msg("event %d: want %s, got nothing more", n, want[n]);
        if (strcmp(fx->client.events[n], want[n]) != 0)
            fail_msg("event %d: want %s, got %s", n, want[n], fx->client.events[n]);
    }
    if (fx->client.nevents != n)
        fail_msg("%d events, want %d (next: %s)", fx->client.nevents, n, fx->client.events[n]);
    assert_int_equal(fx->client.out_of_order, 0);
    pthread_mutex_unlock(&fx->lock);
}

/* ---- the server's side ------------------------------------------------- */

static grpc_slice msg_n(int i) {
    char buf[32];
    snprintf(buf, sizeof(buf), "m%d", i);
    return grpc_slice_from_copied_string(buf);
}

/* Runs fn(worker) on a thread of its own. The loop thread: no cmocka
 * assert here (they longjmp); a failure fails the call and the test. */
static void spawn(fixture_t *fx, em_rpc_call_t *call, void *(*fn)(void *)) {
    pthread_mutex_lock(&fx->lock);
    worker_t *w = fx->nworkers < MAX_WORKERS ? &fx->workers[fx->nworkers] : NULL;
    if (w) {
        w->fx = fx;
        w->call = call;
        w->fn = fn;
        if (pthread_create(&w->thread, NULL, fn, w) == 0)
            fx->nworkers++;
        else
            w = NULL;
    }
    if (!w)
        fx->worker_timeouts++;
    pthread_mutex_unlock(&fx->lock);
    if (!w)
        em_rpc_call_fail(call, GRPC_STATUS_INTERNAL, "test: cannot start a worker");
}

static void worker_wait(worker_t *w, const int *counter, int n) {
    if (!wait_count(w->fx, counter, n, WAIT_MS)) {
        pthread_mutex_lock(&w->fx->lock);
        w->fx->worker_timeouts++;
        pthread_mutex_unlock(&w->fx->lock);
    }
}

/* Three messages, each sent only once the client has the one before: a
 * stream buffered to its end would leave the worker waiting in vain. The
 * first waits for the headers, which the handler sent alone. */
static void *work_three(void *arg) {
    worker_t *w = arg;
    client_t *c = &w->fx->client;
    worker_wait(w, &c->headers, 1);
    for (int i = 0; i < 3; i++) {
        em_rpc_call_send_slice(w->call, msg_n(i));
        worker_wait(w, &c->messages, i + 1);
    }
    em_rpc_call_finish(w->call);
    return NULL;
}

/* Holds the call open until the client's side ended, then answers (the
 * late message is dropped: nobody is there to read it). */
static void *work_hold(void *arg) {
    worker_t *w = arg;
    worker_wait(w, &w->fx->client.done, 1);
    em_rpc_call_send_slice(w->call, msg_n(1));
    em_rpc_call_finish(w->call);
    return NULL;
}

/* A long execution: long_ms of work (cut short if the client left), then
 * the result. */
static void *work_long(void *arg) {
    worker_t *w = arg;
    wait_count(w->fx, &w->fx->client.done, 1, w->fx->long_ms);
    em_rpc_call_send_slice(w->call, msg_n(0));
    em_rpc_call_finish(w->call);
    return NULL;
}

/* /execmesh.test.Stream/Run: the request names the scenario. Runs on the
 * loop thread: what takes time goes to a worker. */
static void on_run(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len) {
    fixture_t *fx = ctx;
    char name[32];
    snprintf(name, sizeof(name), "%.*s", (int)(len < 31 ? len : 31), (const char *)req);
    if (strcmp(name, "three") == 0) {
        em_rpc_call_send_headers(call, ACCEPTED_KEY, "replica-7");
        spawn(fx, call, work_three);
    } else if (strcmp(name, "fail-after-one") == 0) {
        em_rpc_call_send_slice(call, msg_n(0));
        em_rpc_call_fail(call, GRPC_STATUS_ABORTED, "execution 2 broke");
    } else if (strcmp(name, "burst") == 0) {
        em_rpc_call_send_headers(call, ACCEPTED_KEY, "1");
        for (int i = 0; i < BURST; i++)
            em_rpc_call_send_slice(call, msg_n(i));
        em_rpc_call_finish(call);
    } else if (strcmp(name, "headers-then-reply") == 0) {
        em_rpc_call_send_headers(call, ACCEPTED_KEY, "1");
        em_rpc_call_reply_slice(call, msg_n(0));
    } else if (strcmp(name, "headers-then-fail") == 0) {
        em_rpc_call_send_headers(call, ACCEPTED_KEY, "1");
        em_rpc_call_fail(call, GRPC_STATUS_FAILED_PRECONDITION, "no such handler");
    } else if (strcmp(name, "fail-at-once") == 0) {
        em_rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "executor full");
    } else if (strcmp(name, "finish-empty") == 0) {
        em_rpc_call_send_headers(call, ACCEPTED_KEY, "1");
        em_rpc_call_finish(call);
    } else if (strcmp(name, "hold") == 0) {
        em_rpc_call_send_headers(call, ACCEPTED_KEY, "1");
        em_rpc_call_send_slice(call, msg_n(0));
        spawn(fx, call, work_hold);
    } else if (strcmp(name, "long") == 0) {
        em_rpc_call_send_headers(call, ACCEPTED_KEY, "1");
        spawn(fx, call, work_long);
    } else {
        em_rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "unknown scenario");
    }
}

/* /execmesh.test.Stream/Unary: the plain one-batch answer. */
static void on_unary(void *ctx, em_rpc_call_t *call, const uint8_t *req, size_t len) {
    (void)ctx;
    (void)req;
    (void)len;
    em_rpc_call_reply_slice(call, msg_n(0));
}

/* ---- fixture ------------------------------------------------------------ */

static int group_setup(void **state) {
    (void)state;
    loop = em_rpc_loop_new();
    if (!loop || em_rpc_loop_start(loop) != EM_OK)
        return -1;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    em_rpc_loop_destroy(loop);
    return 0;
}

static int setup(void **state) {
    fixture_t *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    pthread_mutex_init(&fx->lock, NULL);
    em_cond_init(&fx->cond);
    fx->client.fx = fx;
    *state = fx;
    return 0;
}

/* A server (max connection age age_ms and its grace) and a channel to it. */
static void start(fixture_t *fx, int age_ms, int grace_ms) {
    char err[256] = "";
    int port = 0;
    fx->health = em_health_new();
    assert_non_null(fx->health);
    em_rpc_server_opts_t so = {
        .listen = "127.0.0.1:0",
        .max_message_bytes = 4 << 20,
        .max_connection_age_ms = age_ms,
        .max_connection_age_grace_ms = grace_ms,
        .min_ping_interval_ms = 500,
    };
    fx->srv = em_rpc_server_new(loop, fx->health, &so, err, sizeof(err));
    assert_non_null(fx->srv);
    assert_int_equal(em_rpc_server_add_method(fx->srv, SERVICE, "Run", on_run, fx, 8), EM_OK);
    assert_int_equal(em_rpc_server_add_method(fx->srv, SERVICE, "Unary", on_unary, fx, 8), EM_OK);
    assert_int_equal(em_rpc_server_start(fx->srv, &port, err, sizeof(err)), EM_OK);
    em_health_block(fx->health, EM_HEALTH_STARTING, 0);

    char *target = fx->target;
    snprintf(fx->target, sizeof(fx->target), "ipv4:127.0.0.1:%d", port);
    em_rpc_channel_opts_t co = {
        .keepalive_time_ms = 1000,
        .keepalive_timeout_ms = 1000,
        .reconnect_min_ms = 100,
        .reconnect_max_ms = 1000,
        .retry_max_attempts = 3,
        .max_message_bytes = 4 << 20,
        .dns_min_resolution_ms = 1000,
    };
    fx->ch = em_rpc_channel_new(loop, target, SERVICE, &co, err, sizeof(err));
    assert_non_null(fx->ch);
    fx->m_run = em_rpc_channel_method(fx->ch, "/" SERVICE "/Run");
    fx->m_unary = em_rpc_channel_method(fx->ch, "/" SERVICE "/Unary");
    assert_non_null(fx->m_run);
    assert_non_null(fx->m_unary);
}

static int teardown(void **state) {
    fixture_t *fx = *state;
    em_rpc_channel_destroy(fx->ch); /* ends the client's side of what is still open */
    if (fx->srv)
        em_rpc_server_shutdown(fx->srv, em_mono_ms() + 2000);
    for (int i = 0; i < fx->nworkers; i++)
        pthread_join(fx->workers[i].thread, NULL);
    em_rpc_server_destroy(fx->srv); /* waits until every call is freed */
    em_health_destroy(fx->health);
    assert_int_equal(fx->worker_timeouts, 0);
    pthread_cond_destroy(&fx->cond);
    pthread_mutex_destroy(&fx->lock);
    free(fx);
    return 0;
}

/* ---- tests -------------------------------------------------------------- */

/* (1) headers at once, three messages as they are produced, then OK. */
static void streams_headers_then_messages_as_sent(void **state) {
    fixture_t *fx = *state;
    start(fx, 0, 0);
    call_stream(fx, fx->m_run, "three");
    assert_true(wait_count(fx, &fx->client.done, 1, WAIT_MS));
    static const char *const want[] = {"H:replica-7", "M:m0", "M:m1", "M:m2", "D:OK", NULL};
    assert_events(fx, want);
    /* the server's address: a channel target that reaches that one server */
    assert_string_equal(fx->client.peer, fx->target);
}

/* (2) a failure after one message: the message, then the status. */
static void fail_after_a_message_ends_the_stream(void **state) {
    fixture_t *fx = *state;
    start(fx, 0, 0);
    call_stream(fx, fx->m_run, "fail-after-one");
    assert_true(wait_count(fx, &fx->client.done, 1, WAIT_MS));
    /* no header was sent with metadata: on_headers(NULL) comes just before the message */
    static const char *const want[] = {"H:(none)", "M:m0", "D:ABORTED", NULL};
    assert_events(fx, want);
    assert_string_equal(fx->client.details, "execution 2 broke");
}

/* The other ways to end a stream, each a row: what the client sees. */
static void other_endings(void **state) {
    static const struct {
        const char *scenario;
        const char *events[6];
        const char *details;
    } rows[] = {
        /* reply_slice after headers sends no second initial metadata (gRPC
         * would fail the batch and the client see INTERNAL) */
        {"headers-then-reply", {"H:1", "M:m0", "D:OK"}, ""},
        {"headers-then-fail", {"H:1", "D:FAILED_PRECONDITION"}, "no such handler"},
        {"finish-empty", {"H:1", "D:OK"}, ""},
        /* a trailers-only failure: no headers came, so no on_headers */
        {"fail-at-once", {"D:RESOURCE_EXHAUSTED"}, "executor full"},
    };
    fixture_t *fx = *state;
    start(fx, 0, 0);
    for (size_t i = 0; i < EM_ARRAY_LEN(rows); i++) {
        memset(&fx->client, 0, sizeof(fx->client));
        call_stream(fx, fx->m_run, rows[i].scenario);
        assert_true(wait_count(fx, &fx->client.done, 1, WAIT_MS));
        print_message("%s\n", rows[i].scenario);
        assert_events(fx, rows[i].events);
        assert_string_equal(fx->client.details, rows[i].details);
    }
}

/* Many messages queued at once go out in order, one in flight at a time. */
static void a_burst_arrives_in_order(void **state) {
    fixture_t *fx = *state;
    start(fx, 0, 0);
    call_stream_timeout(fx, fx->m_run, "burst", 0); /* and no deadline at all */
    assert_true(wait_count(fx, &fx->client.done, 1, WAIT_MS));
    pthread_mutex_lock(&fx->lock);
    assert_int_equal(fx->client.code, GRPC_STATUS_OK);
    assert_int_equal(fx->client.headers, 1);
    assert_int_equal(fx->client.messages, BURST);
    assert_int_equal(fx->client.out_of_order, 0);
    assert_string_equal(fx->client.events[0], "H:1");
    pthread_mutex_unlock(&fx->lock);
}

/* (3) the unary path is unchanged, and a streaming caller reads it too. */
typedef struct unary_reply {
    fixture_t *fx;
    int done;
    grpc_status_code code;
    char resp[32];
} unary_reply_t;

static void on_unary_reply(void *arg, grpc_status_code code, const char *details, const uint8_t *resp, size_t len) {
    unary_reply_t *u = arg;
    (void)details;
    pthread_mutex_lock(&u->fx->lock);
    u->code = code;
    snprintf(u->resp, sizeof(u->resp), "%.*s", (int)len, resp ? (const char *)resp : "");
    u->done = 1;
    pthread_cond_broadcast(&u->fx->cond);
    pthread_mutex_unlock(&u->fx->lock);
}

static void unary_calls_still_work(void **state) {
    fixture_t *fx = *state;
    start(fx, 0, 0);
    unary_reply_t u = {.fx = fx};
    assert_int_equal(em_rpc_channel_call(fx->ch, fx->m_unary, grpc_slice_from_static_string("ping"), 10000,
                                         on_unary_reply, &u),
                     EM_OK);
    assert_true(wait_count(fx, &u.done, 1, WAIT_MS));
    assert_int_equal(u.code, GRPC_STATUS_OK);
    assert_string_equal(u.resp, "m0");

    call_stream(fx, fx->m_unary, "ping");
    assert_true(wait_count(fx, &fx->client.done, 1, WAIT_MS));
    static const char *const want[] = {"H:(none)", "M:m0", "D:OK", NULL};
    assert_events(fx, want);
}

/* (4) the server shuts down under an open stream: the client's call ends
 * non-OK, the server's call is freed once answered, nothing leaks. */
static void server_shutdown_ends_an_open_stream(void **state) {
    fixture_t *fx = *state;
    start(fx, 0, 0);
    call_stream(fx, fx->m_run, "hold");
    assert_true(wait_count(fx, &fx->client.messages, 1, WAIT_MS));
    em_rpc_server_shutdown(fx->srv, em_mono_ms() + 300); /* cancels the call after 300 ms */
    assert_true(wait_count(fx, &fx->client.done, 1, WAIT_MS));
    pthread_mutex_lock(&fx->lock);
    assert_int_not_equal(fx->client.code, GRPC_STATUS_OK);
    assert_int_equal(fx->client.messages, 1);
    print_message("stream ended with %s: %s\n", em_rpc_status_name(fx->client.code), fx->client.details);
    pthread_mutex_unlock(&fx->lock);
    /* the worker answers the cancelled call now; em_rpc_server_destroy in
     * the teardown waits for it to be freed, LeakSanitizer checks it was */
}

/* The caller's deadline passes during a stream: the client sees what came
 * and DEADLINE_EXCEEDED; the server's later message is dropped, its call
 * freed once answered. */
static void a_deadline_ends_an_open_stream(void **state) {
    fixture_t *fx = *state;
    start(fx, 0, 0);
    call_stream_timeout(fx, fx->m_run, "hold", 1000);
    assert_true(wait_count(fx, &fx->client.done, 1, WAIT_MS));
    static const char *const want[] = {"H:1", "M:m0", "D:DEADLINE_EXCEEDED", NULL};
    assert_events(fx, want);
}

/* em_rpc_channel_destroy cancels an open stream: on_done ran (CANCELLED)
 * before it returns. */
static void channel_destroy_cancels_an_open_stream(void **state) {
    fixture_t *fx = *state;
    start(fx, 0, 0);
    call_stream(fx, fx->m_run, "hold");
    assert_true(wait_count(fx, &fx->client.messages, 1, WAIT_MS));
    em_rpc_channel_destroy(fx->ch);
    fx->ch = NULL;
    pthread_mutex_lock(&fx->lock);
    assert_int_equal(fx->client.done, 1);
    assert_int_equal(fx->client.code, GRPC_STATUS_CANCELLED);
    pthread_mutex_unlock(&fx->lock);
}

/* (5) a call longer than the server's max connection age: with grace 0
 * ("infinite") it runs to its end; the control, a 300 ms grace, cuts it,
 * which shows the age did come during the call. */
static void a_long_call_outlives_the_connection_age(void **state) {
    static const struct {
        int grace_ms;
        int want_ok;
    } rows[] = {{0, 1}, {300, 0}};
    for (size_t i = 0; i < EM_ARRAY_LEN(rows); i++) {
        fixture_t *fx = *state;
        if (i > 0) { /* a fresh server and channel for the row */
            teardown(state);
            setup(state);
            fx = *state;
        }
        fx->long_ms = 2500;
        start(fx, 1000, rows[i].grace_ms);
        int64_t t0 = em_mono_ms();
        call_stream(fx, fx->m_run, "long");
        assert_true(wait_count(fx, &fx->client.done, 1, fx->long_ms + WAIT_MS));
        int64_t took = em_mono_ms() - t0;
        pthread_mutex_lock(&fx->lock);
        print_message("grace %d ms: %s after %lld ms (%s)\n", rows[i].grace_ms, em_rpc_status_name(fx->client.code),
                      (long long)took, fx->client.details);
        assert_int_equal(fx->client.headers, 1);
        if (rows[i].want_ok) {
            assert_int_equal(fx->client.code, GRPC_STATUS_OK);
            assert_int_equal(fx->client.messages, 1);
            assert_true(took >= fx->long_ms);
        } else {
            assert_int_not_equal(fx->client.code, GRPC_STATUS_OK);
            assert_int_equal(fx->client.messages, 0);
            assert_true(took < fx->long_ms);
        }
        pthread_mutex_unlock(&fx->lock);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(streams_headers_then_messages_as_sent, setup, teardown),
        cmocka_unit_test_setup_teardown(fail_after_a_message_ends_the_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(other_endings, setup, teardown),
        cmocka_unit_test_setup_teardown(a_burst_arrives_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(unary_calls_still_work, setup, teardown),
        cmocka_unit_test_setup_teardown(server_shutdown_ends_an_open_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(a_deadline_ends_an_open_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(channel_destroy_cancels_an_open_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(a_long_call_outlives_the_connection_age, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
