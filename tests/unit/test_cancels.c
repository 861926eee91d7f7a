/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_cancels against librdkafka's mock cluster in this
 * process: cancels written before the reader starts are remembered once it
 * is ready (a cancel that comes before its execution still wins), a new one
 * is told to the owner once and remembered, ids never cancelled are not,
 * a record older than the remember window is not read, and beyond max_ids
 * the oldest is forgotten. Every wait is bounded; none sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h, which it needs */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "em_cancels.h"
#include "em_util.h"
#include "unit_wait.h"

#define TOPIC "cancels"
#define NPARTS 3

typedef struct fixture {
    rd_kafka_t *host;
    rd_kafka_mock_cluster_t *mc;
    rd_kafka_t *raw;      /* writes records with chosen timestamps */
    em_producer_t *p;
    pthread_mutex_t lock;
    int told;             /* on_cancel calls */
    char last[64];
} fixture_t;

typedef struct sent {
    em_delivery_t d;
    int done, err;
} sent_t;

static void on_sent(em_delivery_t *d, const rd_kafka_message_t *m) {
    sent_t *s = (sent_t *)d;
    s->err = m->err;
    __atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
}

static void on_cancel(void *ctx, const uint8_t *id, size_t len) {
    fixture_t *f = ctx;
    pthread_mutex_lock(&f->lock);
    f->told++;
    snprintf(f->last, sizeof(f->last), "%.*s", (int)len, (const char *)id);
    pthread_mutex_unlock(&f->lock);
}

static int told(fixture_t *f) {
    pthread_mutex_lock(&f->lock);
    int n = f->told;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* One cancel through em_cancels_send, waited for. */
static void cancel(fixture_t *f, const char *id) {
    sent_t s = {.d = {.done = on_sent}};
    rd_kafka_topic_t *t = em_producer_topic(f->p, TOPIC);
    assert_int_equal(em_cancels_send(f->p, t, id, strlen(id), &s.d), EM_OK);
    UNIT_WAIT_UNTIL(em_producer_flush(f->p, 50), __atomic_load_n(&s.done, __ATOMIC_ACQUIRE), 10000, "the cancel stored");
    assert_int_equal(s.err, 0);
}

/* A cancel record with the timestamp ts (unix ms), written raw to partition 0. */
static void cancel_at(fixture_t *f, const char *id, int64_t ts) {
    char value[] = "x";
    assert_int_equal(rd_kafka_producev(f->raw, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY(id, strlen(id)),
                                       RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_VALUE(value, 1), RD_KAFKA_V_TIMESTAMP(ts),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_flush(f->raw, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
}

static em_cancels_t *reader(fixture_t *f, int64_t remember_ms, size_t max_ids) {
    static const char *extra[] = {"log_level=3"};
    em_cancels_opts_t o = {.bootstrap = rd_kafka_mock_cluster_bootstraps(f->mc),
                           .topic = TOPIC,
                           .extra = extra,
                           .nextra = 1,
                           .remember_ms = remember_ms,
                           .max_ids = max_ids,
                           .on_cancel = on_cancel,
                           .ctx = f};
    char err[512];
    em_cancels_t *c = em_cancels_new(&o, err, sizeof(err));
    if (!c)
        fail_msg("em_cancels_new: %s", err);
    return c;
}

static int has(em_cancels_t *c, const char *id) { return em_cancels_has(c, (const uint8_t *)id, strlen(id)); }

/* The step of a bounded wait on the reader, which has its own thread. */
static void breathe(void) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL); /* ok-sleep: the step of a bounded wait on a condition */
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));
    char err[512];
    pthread_mutex_init(&f->lock, NULL);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    f->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(f->host);
    f->mc = rd_kafka_mock_cluster_new(f->host, 1);
    assert_non_null(f->mc);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, TOPIC, NPARTS, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_conf_t *pconf = rd_kafka_conf_new();
    rd_kafka_conf_set(pconf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(f->mc), err, sizeof(err));
    rd_kafka_conf_set(pconf, "log_level", "3", err, sizeof(err));
    f->raw = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, err, sizeof(err));
    assert_non_null(f->raw);
    em_producer_opts_t o = {
        .bootstrap = rd_kafka_mock_cluster_bootstraps(f->mc),
        .client_id = "test-cancels",
        .probe_topic = TOPIC,
        .linger_ms = 1,
        .batch_size = 100000,
        .message_timeout_ms = 30000,
        .queue_max_messages = 10000,
        .queue_max_kbytes = 10240,
        .probe_interval_ms = 1000,
    };
    f->p = em_producer_new(&o, err, sizeof(err));
    if (!f->p)
        fail_msg("em_producer_new: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    em_producer_destroy(f->p);
    rd_kafka_destroy(f->raw);
    rd_kafka_mock_cluster_destroy(f->mc);
    rd_kafka_destroy(f->host);
    pthread_mutex_destroy(&f->lock);
    free(f);
    return 0;
}

static void remembers_what_was_and_what_comes(void **state) {
    fixture_t *f = *state;
    cancel(f, "early-1");
    cancel(f, "early-2");
    cancel_at(f, "ancient", em_now_unix_ms() - 600000); /* 10 min ago: outside a 60 s window */
    em_cancels_t *c = reader(f, 60000, 0);
    UNIT_WAIT_UNTIL(breathe(), em_cancels_ready(c), 15000, "the reader to read up to the end");
    /* a cancel that came before its execution still wins */
    assert_true(has(c, "early-1"));
    assert_true(has(c, "early-2"));
    assert_false(has(c, "ancient"));
    assert_false(has(c, "never-cancelled"));
    assert_int_equal(told(f), 2);
    cancel(f, "late");
    UNIT_WAIT_UNTIL(breathe(), has(c, "late"), 15000, "the new cancel to be read");
    assert_int_equal(told(f), 3);
    assert_string_equal(f->last, "late");
    cancel(f, "late"); /* a second cancel of the same id tells nothing new */
    cancel(f, "later");
    UNIT_WAIT_UNTIL(breathe(), has(c, "later"), 15000, "the next cancel to be read");
    assert_int_equal(told(f), 4);
    assert_int_equal(em_cancels_count(c), 4);
    em_cancels_destroy(c);
}

static void forgets_the_oldest_beyond_max_ids(void **state) {
    fixture_t *f = *state;
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "k-%d", i);
        cancel_at(f, id, em_now_unix_ms() - 1000 + i); /* one partition: read oldest first */
    }
    em_cancels_t *c = reader(f, 60000, 3);
    UNIT_WAIT_UNTIL(breathe(), em_cancels_ready(c), 15000, "the reader to read up to the end");
    assert_int_equal(em_cancels_count(c), 3);
    assert_false(has(c, "k-0"));
    assert_false(has(c, "k-1"));
    assert_true(has(c, "k-2") && has(c, "k-3") && has(c, "k-4"));
    em_cancels_destroy(c);
}

static void an_unknown_topic_is_refused(void **state) {
    fixture_t *f = *state;
    em_cancels_opts_t o = {.bootstrap = rd_kafka_mock_cluster_bootstraps(f->mc), .topic = "no-such-topic"};
    char err[512] = "";
    assert_null(em_cancels_new(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "no-such-topic"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(remembers_what_was_and_what_comes, setup, teardown),
        cmocka_unit_test_setup_teardown(forgets_the_oldest_beyond_max_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(an_unknown_topic_is_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
