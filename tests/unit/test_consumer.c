/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_consumer against librdkafka's mock cluster in this
 * process: the pause flags it owns survive no assignment change behind the
 * owner's back (the stall of issue 11: a partition paused, revoked, resumed
 * while unassigned, then assigned again, must fetch), a partition put out
 * of step on purpose (paused inside librdkafka, dropped from its
 * assignment) is brought back by em_consumer_restart_partition, a held
 * partition stops alone and comes back where it stopped (no record lost or
 * returned twice) whatever the consumer-wide pause did meanwhile, and the end
 * and committed offsets asked of Kafka are the ones produced and committed.
 * Every wait polls with a bound; none sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h, which it needs */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_consumer.h"
#include "em_util.h"
#include "unit_wait.h"

#define TOPIC "liveness"
#define NPARTS 4
#define PER_PART 50

typedef struct fixture {
    rd_kafka_t *host; /* the client handle the mock cluster lives in */
    rd_kafka_t *rk;   /* a producer of records to the mock */
    rd_kafka_mock_cluster_t *mc;
    em_consumer_t *c;
    int assigned, revoked; /* partitions, summed over callbacks */
    int got[NPARTS];       /* records received per partition */
    int64_t last[NPARTS];  /* offset of the last record received, -1 none */
    int gaps, dups;        /* records not at last + 1: ahead of it, or at or behind it */
    int32_t hold_on_assign; /* on_assign holds this partition when given it; -1 none */
    em_err_t hold_rc;       /* what that hold returned */
} fixture_t;

/* Partition p's next record must be at offset next. */
static void expect_next(fixture_t *f, int32_t p, int64_t next) { f->last[p] = next - 1; }

static void on_assign(void *ctx, const rd_kafka_topic_partition_list_t *parts) {
    fixture_t *f = ctx;
    f->assigned += parts->cnt;
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition == f->hold_on_assign)
            f->hold_rc = em_consumer_hold_partition(f->c, f->hold_on_assign, 1);
}

static void on_revoke(void *ctx, const rd_kafka_topic_partition_list_t *parts, int lost) {
    (void)lost;
    ((fixture_t *)ctx)->revoked += parts->cnt;
}

static void produce(fixture_t *f, int32_t partition, int n) {
    for (int i = 0; i < n; i++) {
        char v[32];
        int len = snprintf(v, sizeof(v), "p%d-%d", partition, i);
        assert_int_equal(rd_kafka_producev(f->rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(partition),
                                           RD_KAFKA_V_VALUE(v, (size_t)len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                           RD_KAFKA_V_END),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    assert_int_equal(rd_kafka_flush(f->rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* One em_consumer_poll of at most max records (waiting at most 50 ms),
 * counting them per partition and checking their offsets follow on. */
static int poll_once(fixture_t *f, size_t max) {
    rd_kafka_message_t *msgs[256];
    size_t n = em_consumer_poll(f->c, msgs, max < 256 ? max : 256, 50);
    for (size_t i = 0; i < n; i++) {
        int32_t p = msgs[i]->partition;
        if (p >= 0 && p < NPARTS) {
            f->got[p]++;
            if (msgs[i]->offset > f->last[p] + 1)
                f->gaps++;
            else if (msgs[i]->offset <= f->last[p])
                f->dups++;
            f->last[p] = msgs[i]->offset;
        }
        rd_kafka_message_destroy(msgs[i]);
    }
    return (int)n;
}

/* Polls for up to timeout_ms, counting records per partition; returns how many arrived. */
static int poll_for(fixture_t *f, int timeout_ms) {
    int total = 0;
    int64_t end = em_mono_ms() + timeout_ms;
    while (em_mono_ms() < end)
        total += poll_once(f, 256);
    return total;
}

#define POLL_UNTIL(f, cond, timeout_ms, what) UNIT_WAIT_UNTIL(poll_for((f), 50), cond, timeout_ms, what)

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));
    for (int i = 0; i < NPARTS; i++)
        f->last[i] = -1;
    f->hold_on_assign = -1;
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    f->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(f->host);
    f->mc = rd_kafka_mock_cluster_new(f->host, 1);
    assert_non_null(f->mc);
    rd_kafka_mock_group_initial_rebalance_delay_ms(f->mc, 0);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, TOPIC, NPARTS, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(f->mc);
    rd_kafka_conf_t *pconf = rd_kafka_conf_new();
    rd_kafka_conf_set(pconf, "bootstrap.servers", bootstrap, err, sizeof(err));
    rd_kafka_conf_set(pconf, "linger.ms", "1", err, sizeof(err));
    rd_kafka_conf_set(pconf, "log_level", "3", err, sizeof(err));
    f->rk = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, err, sizeof(err));
    assert_non_null(f->rk);
    for (int32_t i = 0; i < NPARTS; i++)
        produce(f, i, PER_PART);

    static const char *extra[] = {"log_level=3"};
    em_consumer_opts_t o = {
        .bootstrap = bootstrap,
        .client_id = "test-consumer",
        .group_id = "g",
        .instance_id = "",
        .assignor = "roundrobin",
        .session_timeout_ms = 6000,
        .heartbeat_ms = 500,
        .max_poll_interval_ms = 60000,
        .queued_min_messages = 100000,
        .queued_max_kbytes = 65536,
        .fetch_wait_max_ms = 10,
        .extra = extra,
        .nextra = 1,
        .ctx = f,
        .on_assign = on_assign,
        .on_revoke = on_revoke,
    };
    f->c = em_consumer_new(&o, err, sizeof(err));
    if (!f->c)
        fail_msg("em_consumer_new: %s", err);
    assert_int_equal(em_consumer_subscribe(f->c, TOPIC, err, sizeof(err)), EM_OK);
    POLL_UNTIL(f, f->assigned == NPARTS, 30000, "the first assignment");
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    em_consumer_destroy(f->c);
    rd_kafka_destroy(f->rk);
    rd_kafka_mock_cluster_destroy(f->mc);
    rd_kafka_destroy(f->host);
    free(f);
    return 0;
}

static int all_read(const fixture_t *f, int per) {
    for (int i = 0; i < NPARTS; i++)
        if (f->got[i] < per)
            return 0;
    return 1;
}

/* The issue-11 sequence: paused while assigned, revoked, resumed while
 * nothing is assigned, assigned again: every partition must fetch. */
static void pause_survives_no_reassignment(void **state) {
    fixture_t *f = *state;
    POLL_UNTIL(f, all_read(f, PER_PART), 20000, "every record once");

    assert_int_equal(em_consumer_set_paused(f->c, 1), EM_OK);
    rd_kafka_t *rk = em_consumer_handle(f->c);
    assert_int_equal(rd_kafka_unsubscribe(rk), RD_KAFKA_RESP_ERR_NO_ERROR);
    POLL_UNTIL(f, f->revoked == NPARTS, 20000, "the revoke");
    /* resumed while nothing is assigned: the old code resumed "the current
     * assignment", which was empty, and the partitions stayed paused */
    assert_int_equal(em_consumer_set_paused(f->c, 0), EM_OK);

    memset(f->got, 0, sizeof(f->got));
    char err[256];
    assert_int_equal(em_consumer_subscribe(f->c, TOPIC, err, sizeof(err)), EM_OK);
    POLL_UNTIL(f, f->assigned == 2 * NPARTS, 30000, "the second assignment");
    /* nothing was committed: every partition is read again from the start */
    POLL_UNTIL(f, all_read(f, PER_PART), 20000, "every partition fetching after the new assignment");

    /* and a pause wished while assigned holds for a later assignment too */
    assert_int_equal(em_consumer_set_paused(f->c, 1), EM_OK);
    assert_int_equal(rd_kafka_unsubscribe(rk), RD_KAFKA_RESP_ERR_NO_ERROR);
    POLL_UNTIL(f, f->revoked == 2 * NPARTS, 20000, "the second revoke");
    memset(f->got, 0, sizeof(f->got));
    assert_int_equal(em_consumer_subscribe(f->c, TOPIC, err, sizeof(err)), EM_OK);
    POLL_UNTIL(f, f->assigned == 3 * NPARTS, 30000, "the third assignment");
    assert_int_equal(poll_for(f, 1500), 0); /* paused: nothing */
    assert_int_equal(em_consumer_set_paused(f->c, 0), EM_OK);
    POLL_UNTIL(f, all_read(f, PER_PART), 20000, "every partition once resumed");
}

/* Partitions put out of step behind the owner's back are restarted. */
static void restart_brings_back_a_stalled_partition(void **state) {
    fixture_t *f = *state;
    POLL_UNTIL(f, all_read(f, PER_PART), 20000, "every record once");

    /* paused inside librdkafka */
    assert_int_equal(em_consumer_debug_stall(f->c, 1, EM_CONSUMER_STALL_PAUSE), EM_OK);
    int before = f->got[1];
    produce(f, 1, 10);
    produce(f, 2, 10);
    poll_for(f, 1500);
    assert_int_equal(f->got[1], before); /* stalled */
    assert_int_equal(f->got[2], PER_PART + 10);
    char what[256];
    assert_int_equal(em_consumer_restart_partition(f->c, 1, PER_PART, what, sizeof(what)), EM_OK);
    assert_string_equal(what, "resumed and sought");
    POLL_UNTIL(f, f->got[1] == before + 10, 20000, "partition 1 after its restart");

    /* dropped from librdkafka's assignment */
    assert_int_equal(em_consumer_debug_stall(f->c, 3, EM_CONSUMER_STALL_UNASSIGN), EM_OK);
    assert_false(em_consumer_has_partition(f->c, 3));
    assert_true(em_consumer_has_partition(f->c, 0));
    memset(f->got, 0, sizeof(f->got));
    produce(f, 3, 10);
    poll_for(f, 1500);
    /* the other partitions were re-assigned from their (absent) commits:
     * read again from the start; partition 3 not at all */
    assert_int_equal(f->got[3], 0);
    assert_int_equal(em_consumer_restart_partition(f->c, 3, PER_PART, what, sizeof(what)), EM_OK);
    assert_string_equal(what, "re-assigned (librdkafka had dropped it)");
    assert_true(em_consumer_has_partition(f->c, 3));
    POLL_UNTIL(f, f->got[3] == 10, 20000, "partition 3 from offset 50 after its restart");
}

static void assert_in_order(const fixture_t *f) {
    if (f->gaps || f->dups)
        fail_msg("records out of order: %d skipped ahead, %d returned again", f->gaps, f->dups);
}

/* One partition held: the others flow, the held one yields nothing through
 * a consumer-wide pause and resume, and after its release (made while the
 * consumer is paused, so it waits for the resume) its records come from the
 * one after the last returned before the hold: the records librdkafka had
 * fetched ahead for it were dropped and are fetched again, none skipped,
 * none twice. */
static void held_partition_stops_alone_and_resumes_in_place(void **state) {
    fixture_t *f = *state;
    POLL_UNTIL(f, all_read(f, PER_PART), 20000, "every record once");
    assert_in_order(f);

    /* a backlog on every partition, taken one record per poll so partition
     * 1 is held part-way through records librdkafka has already fetched */
    enum { MORE = 200 };
    for (int32_t i = 0; i < NPARTS; i++)
        produce(f, i, MORE);
    UNIT_WAIT_UNTIL(poll_once(f, 1), f->got[1] >= PER_PART + 20, 20000, "some of partition 1's backlog");
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(em_consumer_handle(f->c));
    size_t queued = rd_kafka_queue_length(q);
    rd_kafka_queue_destroy(q);
    assert_true(queued > 0); /* records fetched ahead, not yet returned */
    assert_true(f->got[1] < PER_PART + MORE);
    assert_int_equal(em_consumer_hold_partition(f->c, 1, 1), EM_OK);
    int64_t held_at = f->last[1];
    int got1 = f->got[1];
    assert_true(em_consumer_partition_held(f->c, 1));
    assert_false(em_consumer_partition_held(f->c, 0));
    assert_int_equal(em_consumer_hold_partition(f->c, 1, 1), EM_OK); /* again: nothing changes */

    /* the others flow to their end, partition 1 yields nothing more */
    produce(f, 1, 10);
    produce(f, 2, 10);
    POLL_UNTIL(f, f->got[0] == PER_PART + MORE && f->got[2] == PER_PART + MORE + 10 && f->got[3] == PER_PART + MORE,
               20000, "the partitions not held, to their end");
    poll_for(f, 1000);
    assert_int_equal(f->got[1], got1);
    assert_int_equal(f->last[1], held_at);

    /* a consumer-wide pause and resume leave it held */
    assert_int_equal(em_consumer_set_paused(f->c, 1), EM_OK);
    produce(f, 2, 10);
    assert_int_equal(poll_for(f, 1000), 0);
    assert_int_equal(em_consumer_set_paused(f->c, 0), EM_OK);
    POLL_UNTIL(f, f->got[2] == PER_PART + MORE + 20, 20000, "partition 2 once resumed");
    poll_for(f, 1000);
    assert_int_equal(f->got[1], got1);
    assert_true(em_consumer_partition_held(f->c, 1));

    /* released while the consumer is paused: still paused */
    assert_int_equal(em_consumer_set_paused(f->c, 1), EM_OK);
    assert_int_equal(em_consumer_hold_partition(f->c, 1, 0), EM_OK);
    assert_false(em_consumer_partition_held(f->c, 1));
    assert_int_equal(poll_for(f, 1000), 0);
    assert_int_equal(em_consumer_set_paused(f->c, 0), EM_OK);
    POLL_UNTIL(f, f->got[1] == PER_PART + MORE + 10, 20000, "partition 1 after its release");
    assert_int_equal(f->last[1], PER_PART + MORE + 10 - 1);
    assert_in_order(f); /* its first record after the release was held_at + 1 */
    poll_for(f, 500);
    assert_int_equal(f->got[1], PER_PART + MORE + 10); /* and nothing twice after the end */
    assert_in_order(f);
}

/* A hold survives em_consumer_restart_partition, ends with a revoke (the
 * partition comes back unheld), can be asked only of an assigned partition,
 * and can be asked in on_assign, before the partition fetches anything. */
static void hold_survives_restart_and_ends_with_revoke(void **state) {
    fixture_t *f = *state;
    POLL_UNTIL(f, all_read(f, PER_PART), 20000, "every record once");
    assert_in_order(f);

    assert_int_equal(em_consumer_hold_partition(f->c, -1, 1), EM_EINVAL);
    assert_int_equal(em_consumer_hold_partition(f->c, NPARTS, 1), EM_EINVAL);
    assert_int_equal(em_consumer_hold_partition(f->c, 1 << 30, 1), EM_EINVAL);
    assert_false(em_consumer_partition_held(f->c, NPARTS));
    assert_false(em_consumer_partition_held(f->c, -1));
    assert_int_equal(em_consumer_hold_partition(f->c, NPARTS, 0), EM_OK); /* nothing to release */

    /* restarted while held (as the watchdog would): still held */
    assert_int_equal(em_consumer_hold_partition(f->c, 3, 1), EM_OK);
    produce(f, 3, 10);
    char what[256];
    assert_int_equal(em_consumer_restart_partition(f->c, 3, PER_PART, what, sizeof(what)), EM_OK);
    assert_string_equal(what, "kept paused (consumer paused or partition held) and sought");
    poll_for(f, 1000);
    assert_int_equal(f->got[3], PER_PART);
    assert_true(em_consumer_partition_held(f->c, 3));
    assert_int_equal(em_consumer_hold_partition(f->c, 3, 0), EM_OK);
    POLL_UNTIL(f, f->got[3] == PER_PART + 10, 20000, "partition 3 after its release");
    assert_in_order(f);

    /* revoked while held: the hold ends, and the next assignment fetches */
    assert_int_equal(em_consumer_hold_partition(f->c, 2, 1), EM_OK);
    rd_kafka_t *rk = em_consumer_handle(f->c);
    assert_int_equal(rd_kafka_unsubscribe(rk), RD_KAFKA_RESP_ERR_NO_ERROR);
    POLL_UNTIL(f, f->revoked == NPARTS, 20000, "the revoke");
    assert_false(em_consumer_partition_held(f->c, 2));
    assert_int_equal(em_consumer_hold_partition(f->c, 2, 1), EM_EINVAL); /* not assigned now */
    memset(f->got, 0, sizeof(f->got));
    for (int i = 0; i < NPARTS; i++)
        expect_next(f, i, 0); /* nothing was committed: read again from the start */
    f->hold_on_assign = 0;
    f->hold_rc = EM_EIO;
    char err[256];
    assert_int_equal(em_consumer_subscribe(f->c, TOPIC, err, sizeof(err)), EM_OK);
    POLL_UNTIL(f, f->assigned == 2 * NPARTS, 30000, "the second assignment");
    assert_int_equal(f->hold_rc, EM_OK);
    assert_true(em_consumer_partition_held(f->c, 0));
    assert_false(em_consumer_partition_held(f->c, 2));
    POLL_UNTIL(f, f->got[1] == PER_PART && f->got[2] == PER_PART && f->got[3] == PER_PART + 10, 20000,
               "every partition not held, partition 2 included, after the new assignment");
    poll_for(f, 1000);
    assert_int_equal(f->got[0], 0); /* held in on_assign: nothing at all */
    assert_int_equal(em_consumer_hold_partition(f->c, 0, 0), EM_OK);
    POLL_UNTIL(f, f->got[0] == PER_PART, 20000, "partition 0 after its release");
    assert_in_order(f);
}

/* End offsets from the leader; committed offsets from the group. */
static void end_and_committed_offsets(void **state) {
    fixture_t *f = *state;
    int32_t parts[NPARTS] = {0, 1, 2, 3};
    int64_t off[NPARTS];
    assert_int_equal(em_consumer_end_offsets(f->c, parts, NPARTS, off, 5000), EM_OK);
    for (int i = 0; i < NPARTS; i++)
        assert_int_equal(off[i], PER_PART);
    assert_int_equal(em_consumer_start_offsets(f->c, parts, NPARTS, off, 5000), EM_OK);
    for (int i = 0; i < NPARTS; i++)
        assert_int_equal(off[i], 0);
    assert_int_equal(em_consumer_committed(f->c, parts, NPARTS, off, 5000), EM_OK);
    for (int i = 0; i < NPARTS; i++)
        assert_int_equal(off[i], -1); /* nothing committed yet */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(l, TOPIC, 0)->offset = 7;
    rd_kafka_topic_partition_list_add(l, TOPIC, 2)->offset = 33;
    assert_int_equal(em_consumer_commit(f->c, l, 0), EM_OK);
    rd_kafka_topic_partition_list_destroy(l);
    assert_int_equal(em_consumer_committed(f->c, parts, NPARTS, off, 5000), EM_OK);
    assert_int_equal(off[0], 7);
    assert_int_equal(off[1], -1);
    assert_int_equal(off[2], 33);
    assert_int_equal(off[3], -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(pause_survives_no_reassignment, setup, teardown),
        cmocka_unit_test_setup_teardown(restart_brings_back_a_stalled_partition, setup, teardown),
        cmocka_unit_test_setup_teardown(held_partition_stops_alone_and_resumes_in_place, setup, teardown),
        cmocka_unit_test_setup_teardown(hold_survives_restart_and_ends_with_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(end_and_committed_offsets, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
