/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_delay against librdkafka's mock cluster in this process:
 * waiting records are forwarded to their target once each, never before
 * their due time, with their key, value and headers and without the delay
 * headers, and the delay group's commits reach the end of the delay topic;
 * a record far in the future holds its own partition only, and is still
 * there (neither lost nor forwarded) for the next runner after a restart;
 * records without a usable target are skipped and committed; a forward the
 * target refuses is forwarded again and only then committed. Every wait
 * polls a condition with a bound; none sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h, which it needs */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_delay.h"
#include "em_metrics.h"
#include "em_producer.h"
#include "em_util.h"
#include "unit_wait.h"

#define DELAY_TOPIC "execmesh.delay"
#define TARGET "execmesh.requests"
#define GROUP "sched.delay"
#define NPARTS 2
#define MAXREC 32
#define TOLERANCE_MS 5 /* the forward's timestamp vs its due time: both this host's wall clock, in ms */

/* A record read back from the target topic. */
typedef struct rec {
    char key[64], val[64], trace[64], from[128];
    int has_due, has_target;
    int64_t ts;
} rec_t;

/* A write through em_delay_send, with its delivery report. */
typedef struct sent {
    em_delivery_t d;
    atomic_int done;
    rd_kafka_resp_err_t err;
    int32_t partition;
    int64_t offset;
} sent_t;

typedef struct fixture {
    rd_kafka_t *host; /* the client handle the mock cluster lives in */
    rd_kafka_mock_cluster_t *mc;
    char bootstrap[256];
    em_producer_t *p;      /* the service's producer: writes and forwards */
    rd_kafka_topic_t *dt;  /* its delay topic */
    rd_kafka_t *reader;    /* reads the target topic from its start; in the delay group to
                            * ask for its committed offsets, but never joins it */
    em_metrics_t *m;
    em_delay_t *d;
    rec_t got[MAXREC];
    int ngot;
} fixture_t;

static void sent_done(em_delivery_t *d, const rd_kafka_message_t *msg) {
    sent_t *s = EM_CONTAINER_OF(d, sent_t, d);
    s->err = msg->err;
    s->partition = msg->partition;
    s->offset = msg->offset;
    atomic_store(&s->done, 1);
}

/* A consumer in the delay group that only assigns (so never joins) and
 * never commits. */
static rd_kafka_t *reader_new(const char *bootstrap) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err)), RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", GROUP, err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk)
        fail_msg("rd_kafka_new: %s", err);
    rd_kafka_topic_partition_list_t *a = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(a, TARGET, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(rk, a), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(a);
    return rk;
}

static void copy_header(const rd_kafka_headers_t *h, const char *name, char *out, size_t n) {
    const void *v;
    size_t sz;
    out[0] = '\0';
    if (h && rd_kafka_header_get_last(h, name, &v, &sz) == RD_KAFKA_RESP_ERR_NO_ERROR && sz < n) {
        memcpy(out, v, sz);
        out[sz] = '\0';
    }
}

static int has_header(const rd_kafka_headers_t *h, const char *name) {
    const void *v;
    size_t sz;
    return h && rd_kafka_header_get_last(h, name, &v, &sz) == RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Reads the target topic for up to timeout_ms into f->got. */
static void read_target(fixture_t *f, int timeout_ms) {
    int64_t end = em_mono_ms() + timeout_ms;
    do {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(f->reader, 10);
        if (!m)
            continue;
        if (!m->err && f->ngot < MAXREC) {
            rec_t *r = &f->got[f->ngot++];
            memset(r, 0, sizeof(*r));
            snprintf(r->key, sizeof(r->key), "%.*s", (int)m->key_len, (const char *)m->key);
            snprintf(r->val, sizeof(r->val), "%.*s", (int)m->len, (const char *)m->payload);
            rd_kafka_headers_t *h = NULL;
            if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
                h = NULL;
            copy_header(h, "trace", r->trace, sizeof(r->trace));
            copy_header(h, EM_DELAY_HDR_FROM, r->from, sizeof(r->from));
            r->has_due = has_header(h, EM_DELAY_HDR_DUE);
            r->has_target = has_header(h, EM_DELAY_HDR_TARGET);
            rd_kafka_timestamp_type_t tt;
            r->ts = rd_kafka_message_timestamp(m, &tt);
        }
        rd_kafka_message_destroy(m);
    } while (em_mono_ms() < end);
}

static const rec_t *got_key(const fixture_t *f, const char *key) {
    for (int i = 0; i < f->ngot; i++)
        if (strcmp(f->got[i].key, key) == 0)
            return &f->got[i];
    return NULL;
}

/* The delay group's committed offsets (-1: none). */
static void committed(fixture_t *f, int64_t off[NPARTS]) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(NPARTS);
    for (int32_t i = 0; i < NPARTS; i++)
        rd_kafka_topic_partition_list_add(l, DELAY_TOPIC, i);
    rd_kafka_resp_err_t err = rd_kafka_committed(f->reader, l, 5000);
    for (int i = 0; i < NPARTS; i++)
        off[i] = err || l->elems[i].err ? -2 : l->elems[i].offset < 0 ? -1 : l->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(l);
}

static int committed_is(fixture_t *f, int64_t p0, int64_t p1) {
    int64_t off[NPARTS];
    committed(f, off);
    return off[0] == p0 && off[1] == p1;
}

/* How many records the target topic holds: duplicates would show here. */
static int64_t target_end(fixture_t *f) {
    int64_t lo = -1, hi = -1;
    assert_int_equal(rd_kafka_query_watermark_offsets(f->reader, TARGET, 0, &lo, &hi, 5000),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    return hi;
}

/* A metric's value as rendered (-1 when absent). */
static int64_t metric(em_metrics_t *m, const char *name) {
    char *text = em_metrics_render(m);
    assert_non_null(text);
    int64_t v = -1;
    size_t n = strlen(name);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, name, n) == 0 && line[n] == ' ') {
            v = strtoll(line + n + 1, NULL, 10);
            break;
        }
        const char *nl = strchr(line, '\n');
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return v;
}

#define POLL_UNTIL(f, cond, timeout_ms, what) UNIT_WAIT_UNTIL(read_target((f), 50), cond, timeout_ms, what)

static em_delay_t *runner(fixture_t *f, em_metrics_t *m, int max_inflight) {
    /* a short session: a runner that stopped is out of the group soon */
    static const char *const extra[] = {"log_level=3", "session.timeout.ms=2000", "heartbeat.interval.ms=500"};
    em_delay_opts_t o = {
        .bootstrap = f->bootstrap,
        .group = GROUP,
        .topic = DELAY_TOPIC,
        .client_id = "test-delay",
        .extra = extra,
        .nextra = EM_ARRAY_LEN(extra),
        .producer = f->p,
        .commit_interval_ms = 100,
        .max_inflight = max_inflight,
        .metrics = m,
    };
    char err[512];
    em_delay_t *d = em_delay_new(&o, err, sizeof(err));
    if (!d)
        fail_msg("em_delay_new: %s", err);
    return d;
}

/* A delay record written by hand to a chosen partition (through the
 * producer's librdkafka handle: em_producer_send picks partitions by key);
 * due and target are header values as written (NULL: no such header). */
static void write_raw(fixture_t *f, int32_t partition, const char *key, const char *due, const char *target) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(3);
    rd_kafka_header_add(h, "trace", -1, key, -1);
    if (due)
        rd_kafka_header_add(h, EM_DELAY_HDR_DUE, -1, due, -1);
    if (target)
        rd_kafka_header_add(h, EM_DELAY_HDR_TARGET, -1, target, -1);
    char val[64];
    snprintf(val, sizeof(val), "value of %s", key);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        em_producer_handle(f->p), RD_KAFKA_V_TOPIC(DELAY_TOPIC), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(val, strlen(val)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    assert_int_equal(err, RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void flush_raw(fixture_t *f) { assert_int_equal(em_producer_flush(f->p, 10000), EM_OK); }

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    f->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(f->host);
    f->mc = rd_kafka_mock_cluster_new(f->host, 1);
    assert_non_null(f->mc);
    rd_kafka_mock_group_initial_rebalance_delay_ms(f->mc, 0);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, DELAY_TOPIC, NPARTS, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, TARGET, 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    snprintf(f->bootstrap, sizeof(f->bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(f->mc));

    static const char *const extra[] = {"log_level=3"};
    em_producer_opts_t po = {
        .bootstrap = f->bootstrap,
        .client_id = "test-producer",
        .probe_topic = TARGET,
        .linger_ms = 1,
        .batch_size = 100000,
        .message_timeout_ms = 10000,
        .queue_max_messages = 10000,
        .queue_max_kbytes = 10240,
        .probe_interval_ms = 1000,
        .extra = extra,
        .nextra = 1,
    };
    f->p = em_producer_new(&po, err, sizeof(err));
    if (!f->p)
        fail_msg("em_producer_new: %s", err);
    f->dt = em_producer_topic(f->p, DELAY_TOPIC);
    assert_non_null(f->dt);
    f->reader = reader_new(f->bootstrap);
    f->m = em_metrics_new();
    assert_non_null(f->m);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    em_delay_destroy(f->d);
    rd_kafka_consumer_close(f->reader);
    rd_kafka_destroy(f->reader);
    em_producer_destroy(f->p);
    em_metrics_destroy(f->m);
    rd_kafka_mock_cluster_destroy(f->mc);
    rd_kafka_destroy(f->host);
    free(f);
    return 0;
}

/* Two records due now and two due in 1.5 s, over both partitions, written
 * with em_delay_send: each reaches the target once, not before its due
 * time, as written minus the delay headers. */
static void forwards_each_record_once_when_due(void **state) {
    fixture_t *f = *state;
    f->d = runner(f, f->m, 0);
    int64_t now = em_now_unix_ms();
    /* keys picked to land on both partitions (the partition each landed on
     * is read from its delivery report and checked below); on each
     * partition one record due now and one due later, in both orders */
    const struct {
        const char *key;
        int64_t due;
    } w[] = {{"exec-0", now + 1500}, {"exec-4", now}, {"exec-1", now}, {"exec-5", now + 1500}};
    enum { N = 4 };
    sent_t s[N];
    memset(s, 0, sizeof(s));
    for (int i = 0; i < N; i++) {
        rd_kafka_headers_t *h = rd_kafka_headers_new(1);
        rd_kafka_header_add(h, "trace", -1, w[i].key, -1);
        char val[64];
        snprintf(val, sizeof(val), "value of %s", w[i].key);
        s[i].d.done = sent_done;
        assert_int_equal(em_delay_send(f->p, f->dt, w[i].key, strlen(w[i].key), val, strlen(val), h, w[i].due, TARGET,
                                       &s[i].d),
                         EM_OK);
    }
    POLL_UNTIL(f,
               atomic_load(&s[0].done) && atomic_load(&s[1].done) && atomic_load(&s[2].done) &&
                   atomic_load(&s[3].done),
               10000, "the delay records' delivery reports");
    int64_t end[NPARTS] = {0, 0};
    for (int i = 0; i < N; i++) {
        assert_int_equal(s[i].err, RD_KAFKA_RESP_ERR_NO_ERROR);
        assert_in_range(s[i].partition, 0, NPARTS - 1);
        if (s[i].offset + 1 > end[s[i].partition])
            end[s[i].partition] = s[i].offset + 1;
    }
    assert_int_equal(end[0] + end[1], N);
    assert_true(end[0] > 0 && end[1] > 0); /* both partitions used */

    POLL_UNTIL(f, f->ngot >= N && committed_is(f, end[0], end[1]), 15000,
               "every record forwarded and the delay group's commits at the end");
    assert_int_equal(f->ngot, N);
    assert_int_equal(target_end(f), N); /* stored once each: no duplicate */
    for (int i = 0; i < N; i++) {
        const rec_t *r = got_key(f, w[i].key);
        if (!r) {
            fail_msg("%s was not forwarded", w[i].key);
            return; /* not reached: fail_msg ends the test */
        }
        char val[64], from[128];
        snprintf(val, sizeof(val), "value of %s", w[i].key);
        snprintf(from, sizeof(from), DELAY_TOPIC "/%d/%lld", (int)s[i].partition, (long long)s[i].offset);
        assert_string_equal(r->val, val);
        assert_string_equal(r->trace, w[i].key);
        assert_string_equal(r->from, from);
        assert_false(r->has_due);
        assert_false(r->has_target);
        if (r->ts < w[i].due - TOLERANCE_MS)
            fail_msg("%s forwarded %lld ms before its due time", w[i].key, (long long)(w[i].due - r->ts));
    }
    assert_int_equal(metric(f->m, "execmesh_delay_forwarded_total"), N);
    assert_int_equal(metric(f->m, "execmesh_delay_forward_failures_total"), 0);
    assert_int_equal(metric(f->m, "execmesh_delay_skipped_total"), 0);
    assert_int_equal(metric(f->m, "execmesh_delay_waiting_partitions"), 0);
    assert_int_equal(metric(f->m, "execmesh_delay_inflight"), 0);
}

/* A record 60 s ahead at the head of partition 0 holds the record behind it
 * but not partition 1; after a restart in the same group it is read again
 * (not lost) and still waits (not forwarded early). */
static void a_far_record_holds_its_partition_only_and_survives_a_restart(void **state) {
    fixture_t *f = *state;
    char far[32], now[32];
    snprintf(far, sizeof(far), "%lld", (long long)(em_now_unix_ms() + 60000));
    snprintf(now, sizeof(now), "%lld", (long long)em_now_unix_ms());
    write_raw(f, 0, "far", far, TARGET);
    write_raw(f, 0, "behind-far", now, TARGET);
    write_raw(f, 1, "other", now, TARGET);
    flush_raw(f);

    f->d = runner(f, f->m, 0);
    POLL_UNTIL(f, got_key(f, "other") && metric(f->m, "execmesh_delay_waiting_partitions") == 1 &&
                      committed_is(f, -1, 1),
               15000, "partition 1 forwarded and committed, partition 0 waiting");
    assert_int_equal(f->ngot, 1);
    assert_null(got_key(f, "behind-far"));

    em_delay_destroy(f->d);
    f->d = NULL;
    assert_true(committed_is(f, -1, 1)); /* partition 0 still at its waiting record */

    em_metrics_t *m2 = em_metrics_new();
    assert_non_null(m2);
    f->d = runner(f, m2, 0);
    POLL_UNTIL(f, metric(m2, "execmesh_delay_waiting_partitions") == 1, 15000,
               "the new runner waiting on the far record");
    assert_int_equal(f->ngot, 1);
    assert_int_equal(target_end(f), 1);
    assert_int_equal(metric(m2, "execmesh_delay_forwarded_total"), 0);
    assert_true(committed_is(f, -1, 1));
    em_delay_destroy(f->d);
    f->d = NULL;
    em_metrics_destroy(m2);
}

/* Records whose target is missing or not a topic name are skipped and
 * committed; one whose due time cannot be read is forwarded at once; a
 * full in-flight window holds a partition without losing its place; a
 * write with a bad target is refused without side effects. */
static void records_without_a_target_are_skipped(void **state) {
    fixture_t *f = *state;
    char now[32];
    snprintf(now, sizeof(now), "%lld", (long long)em_now_unix_ms());
    write_raw(f, 0, "no-target", now, NULL);
    write_raw(f, 0, "bad-target", now, "not a topic!");
    write_raw(f, 0, "bad-due", "soon", TARGET);
    write_raw(f, 1, "no-headers", NULL, NULL);
    write_raw(f, 1, "good", now, TARGET);
    flush_raw(f);

    /* a window of one forward: the second valid record waits for the first's report */
    f->d = runner(f, f->m, 1);
    POLL_UNTIL(f, f->ngot >= 2 && committed_is(f, 3, 2), 15000, "the valid records forwarded, all committed");
    assert_int_equal(f->ngot, 2);
    const rec_t *bad_due = got_key(f, "bad-due");
    assert_non_null(got_key(f, "good"));
    if (!bad_due) {
        fail_msg("bad-due was not forwarded");
        return;
    }
    assert_false(bad_due->has_due);
    assert_false(bad_due->has_target);
    assert_int_equal(metric(f->m, "execmesh_delay_skipped_total"), 3);
    assert_int_equal(metric(f->m, "execmesh_delay_forwarded_total"), 2);

    /* the writer refuses what no runner could forward; the caller keeps its headers */
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, "trace", -1, "x", 1);
    sent_t s;
    memset(&s, 0, sizeof(s));
    s.d.done = sent_done;
    const char *bad[] = {"", "not a topic!", ".."};
    for (size_t i = 0; i < EM_ARRAY_LEN(bad); i++)
        assert_int_equal(em_delay_send(f->p, f->dt, "k", 1, "v", 1, h, 0, bad[i], &s.d), EM_EINVAL);
    assert_int_equal(em_delay_send(f->p, f->dt, "k", 1, "v", 1, h, -1, TARGET, &s.d), EM_EINVAL);
    assert_int_equal(rd_kafka_header_cnt(h), 1);
    assert_false(has_header(h, EM_DELAY_HDR_DUE));
    rd_kafka_headers_destroy(h);
    assert_int_equal(atomic_load(&s.done), 0);
}

/* The target refuses the first forward: the partition goes back to the
 * failed record and forwards it again; its offset is committed only then. */
static void a_failed_forward_is_retried(void **state) {
    fixture_t *f = *state;
    char now[32];
    snprintf(now, sizeof(now), "%lld", (long long)em_now_unix_ms());
    write_raw(f, 0, "first", now, TARGET);
    write_raw(f, 0, "second", now, TARGET);
    flush_raw(f);
    /* the next Produce request (the first forward) fails for good */
    rd_kafka_mock_push_request_errors(f->mc, 0 /* ApiKey Produce */, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);

    f->d = runner(f, f->m, 0);
    POLL_UNTIL(f, got_key(f, "first") && got_key(f, "second") && committed_is(f, 2, -1), 15000,
               "both records forwarded after the failure, and committed");
    assert_true(metric(f->m, "execmesh_delay_forward_failures_total") >= 1);
    /* the failed request stored nothing: no duplicate */
    assert_int_equal(f->ngot, 2);
    assert_int_equal(target_end(f), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(forwards_each_record_once_when_due, setup, teardown),
        cmocka_unit_test_setup_teardown(a_far_record_holds_its_partition_only_and_survives_a_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(records_without_a_target_are_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(a_failed_forward_is_retried, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
