/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_producer against librdkafka's mock cluster in this
 * process: a fatal error of the idempotent producer (raised with
 * rd_kafka_test_fatal_error, as OUT_OF_ORDER_SEQUENCE_NUMBER would raise it)
 * takes health to NOT_SERVING naming the error, fails the messages the dead
 * producer held with RD_KAFKA_RESP_ERR__FATAL, and is recovered from: the
 * topic handle the caller holds stays good, messages produced afterwards
 * are delivered, and health is SERVING again. Every wait polls with a
 * bound; none sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h, which it needs */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "em_health.h"
#include "em_producer.h"
#include "em_util.h"

#define TOPIC "fatal"
#define WAIT_MS 20000
#define BLOCKER "kafka fatal error: OUT_OF_ORDER_SEQUENCE_NUMBER"

/* The delivery reports of one group of messages. */
typedef struct tally {
    em_delivery_t d;
    atomic_int ok, fatal, other;
    _Atomic rd_kafka_resp_err_t other_err;
} tally_t;

static void on_delivery(em_delivery_t *d, const rd_kafka_message_t *msg) {
    tally_t *t = (tally_t *)d;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
        atomic_fetch_add(&t->ok, 1);
    else if (msg->err == RD_KAFKA_RESP_ERR__FATAL)
        atomic_fetch_add(&t->fatal, 1);
    else {
        atomic_store(&t->other_err, msg->err);
        atomic_fetch_add(&t->other, 1);
    }
}

static void tally_init(tally_t *t) {
    memset(t, 0, sizeof(*t));
    t->d.done = on_delivery;
}

static int reported(tally_t *t) { return atomic_load(&t->ok) + atomic_load(&t->fatal) + atomic_load(&t->other); }

/* Waits until cond holds, at most WAIT_MS; fails naming what it waited for. */
#define WAIT_UNTIL(cond, what)                                                                     \
    do {                                                                                           \
        int64_t until_ = em_mono_ms() + WAIT_MS;                                                   \
        while (!(cond) && em_mono_ms() < until_)                                                   \
            usleep(10000); /* ok-sleep: the poll interval of a bounded wait */                     \
        if (!(cond))                                                                               \
            fail_msg("timed out after %d ms waiting for %s", WAIT_MS, (what));                     \
    } while (0)

static void send_n(em_producer_t *p, rd_kafka_topic_t *t, tally_t *tally, int n, const char *tag) {
    for (int i = 0; i < n; i++) {
        char v[64];
        int len = snprintf(v, sizeof(v), "%s-%d", tag, i);
        assert_int_equal(em_producer_send(p, t, v, (size_t)len, v, (size_t)len, NULL, 1, &tally->d), EM_OK);
    }
}

static int has_blocker(em_health_t *h, const char *name) {
    char buf[512];
    em_health_blockers(h, buf, sizeof(buf));
    return strstr(buf, name) != NULL;
}

/* An em_producer on the mock cluster (health may be NULL). */
static em_producer_t *test_producer_new(rd_kafka_mock_cluster_t *mc, em_health_t *health) {
    static const char *extra[] = {"log_level=3"};
    char err[512];
    em_producer_opts_t o = {
        .bootstrap = rd_kafka_mock_cluster_bootstraps(mc),
        .client_id = "test-producer",
        .probe_topic = TOPIC,
        .linger_ms = 5,
        .batch_size = 100000,
        .message_timeout_ms = 30000,
        .queue_max_messages = 10000,
        .queue_max_kbytes = 10240,
        .probe_interval_ms = 200,
        .extra = extra,
        .nextra = EM_ARRAY_LEN(extra),
        .health = health,
    };
    em_producer_t *p = em_producer_new(&o, err, sizeof(err));
    if (!p)
        fail_msg("em_producer_new: %s", err);
    return p;
}

static void fatal_error_is_recovered_from(void **state) {
    (void)state;
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(host);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(host, 1);
    assert_non_null(mc);
    assert_int_equal(rd_kafka_mock_topic_create(mc, TOPIC, 2, 1), RD_KAFKA_RESP_ERR_NO_ERROR);

    em_health_t *h = em_health_new();
    assert_non_null(h);
    assert_int_equal(em_health_add_service(h, ""), EM_OK);
    em_health_block(h, EM_HEALTH_STARTING, 0);

    em_producer_t *p = test_producer_new(mc, h);
    rd_kafka_topic_t *t = em_producer_topic(p, TOPIC);
    assert_non_null(t);
    WAIT_UNTIL(em_health_overall(h) == EM_HEALTH_SERVING, "SERVING once the probe reached the mock cluster");

    /* the control: delivered before the fatal error */
    tally_t before;
    tally_init(&before);
    send_n(p, t, &before, 5, "before");
    WAIT_UNTIL(reported(&before) == 5, "5 reports before the fatal error");
    assert_int_equal(atomic_load(&before.ok), 5);

    /* messages that wait in the producer (the broker is down) when it dies */
    assert_int_equal(rd_kafka_mock_broker_set_down(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    tally_t held;
    tally_init(&held);
    send_n(p, t, &held, 5, "held");
    rd_kafka_t *dead = em_producer_handle(p);
    assert_int_equal(rd_kafka_test_fatal_error(dead, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, "test"),
                     RD_KAFKA_RESP_ERR_NO_ERROR);

    /* they fail with the fatal error; health says why it is NOT_SERVING (it
     * stays so until the new producer reaches the cluster: the broker is down) */
    WAIT_UNTIL(reported(&held) == 5, "the held messages' reports");
    if (atomic_load(&held.fatal) != 5)
        fail_msg("held messages: %d ok, %d fatal, %d other (%s)", atomic_load(&held.ok), atomic_load(&held.fatal),
                 atomic_load(&held.other), rd_kafka_err2name(atomic_load(&held.other_err)));
    WAIT_UNTIL(has_blocker(h, BLOCKER), "the health blocker " BLOCKER);
    assert_int_equal(em_health_overall(h), EM_HEALTH_NOT_SERVING);
    WAIT_UNTIL(em_producer_handle(p) != dead, "a new librdkafka producer in place of the dead one");
    char why[64];
    assert_int_equal(rd_kafka_fatal_error(em_producer_handle(p), why, sizeof(why)), RD_KAFKA_RESP_ERR_NO_ERROR);

    /* produced through the same topic handle while the cluster is away, then it comes back */
    tally_t after;
    tally_init(&after);
    send_n(p, t, &after, 5, "after");
    assert_int_equal(rd_kafka_mock_broker_set_up(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    WAIT_UNTIL(reported(&after) == 5, "the reports of the messages produced after the fatal error");
    if (atomic_load(&after.ok) != 5)
        fail_msg("after recovery: %d ok, %d fatal, %d other (%s)", atomic_load(&after.ok), atomic_load(&after.fatal),
                 atomic_load(&after.other), rd_kafka_err2name(atomic_load(&after.other_err)));
    WAIT_UNTIL(em_health_overall(h) == EM_HEALTH_SERVING, "SERVING again after the recovery");
    assert_false(has_blocker(h, BLOCKER));

    /* and it goes on: a flush waits for the new producer's messages */
    tally_t later;
    tally_init(&later);
    send_n(p, t, &later, 5, "later");
    assert_int_equal(em_producer_flush(p, WAIT_MS), EM_OK);
    assert_int_equal(atomic_load(&later.ok), 5);

    em_producer_destroy(p);
    em_health_destroy(h);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
}

/* Something that is not one of the producer's topic handles is refused, not used. */
static void foreign_topic_handle_is_refused(void **state) {
    (void)state;
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(host);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(host, 1);
    assert_non_null(mc);
    assert_int_equal(rd_kafka_mock_topic_create(mc, TOPIC, 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    em_producer_t *p = test_producer_new(mc, NULL);
    rd_kafka_topic_t *t = em_producer_topic(p, TOPIC);
    assert_ptr_equal(em_producer_topic(p, TOPIC), t); /* one handle per name */
    rd_kafka_topic_t *foreign = rd_kafka_topic_new(host, TOPIC, NULL);
    assert_non_null(foreign);
    tally_t tally;
    tally_init(&tally);
    assert_int_equal(em_producer_send(p, foreign, "k", 1, "v", 1, NULL, 1, &tally.d), EM_EINVAL);
    rd_kafka_topic_destroy(foreign);
    em_producer_destroy(p);
    assert_int_equal(reported(&tally), 0);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fatal_error_is_recovered_from),
        cmocka_unit_test(foreign_topic_handle_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
