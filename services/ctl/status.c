/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmeshctl status: is any partition of the schedulers' consumer group
 * stuck? One row per partition of the requests topic with its owner, the
 * owner's read position, the group's committed offset, the end offset and
 * the lag (end - committed; from the start offset when nothing was
 * committed), then a total line, the schedulers' own view and notes.
 *
 * Kafka answers through the admin API, the questions asked at once on one
 * queue (ListOffsets earliest and latest, DescribeConsumerGroups), each
 * bounded by the request timeout; the committed offsets come from a
 * consumer handle that carries the group's id and never subscribes
 * (rd_kafka_committed). While Kafka answers, the schedulers' /metrics
 * endpoints (--metrics) are read: they give the position, the age of the
 * oldest waiting execution and the owner of every partition a scheduler
 * owns. A broker that cannot describe groups (devkafka, librdkafka's mock
 * cluster, has no DescribeGroups) costs the owner column only, never the
 * report.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "em_kafka.h"
#include "em_log.h"
#include "em_util.h"

#define ST_DEFAULT_GROUP "execmesh"
#define ST_DEFAULT_TOPIC "execmesh.requests"
#define ST_DEFAULT_TIMEOUT_MS 5000
#define ST_MAX_TIMEOUT_MS 600000
/* How long past the admin request timeout the result event may take. */
#define ST_EVENT_SLACK_MS 2000
#define ST_MAX_NOTES 64

/* One member of the group, from DescribeConsumerGroups. */
typedef struct st_member {
    char *client_id, *member_id, *instance_id, *host;
    int32_t *parts; /* its partitions of the topic */
    size_t nparts;
} st_member_t;

/* One --metrics endpoint: a scheduler's view of the partitions it owns. */
typedef struct st_sched {
    char *addr;
    char err[256];       /* why the scrape failed; "" when it worked */
    int ok, is_scheduler;
    double assigned, stalled, paused; /* NAN when absent */
    int member;          /* the group member it is (same partitions), -1 unknown */
} st_sched_t;

/* One partition of the topic. Offsets are -1 when unknown; committed is
 * -1 also when the group never committed (has_commit tells them apart). */
typedef struct st_part {
    int32_t id;
    int64_t start, end, committed;
    int has_commit;
    char err[200]; /* what Kafka said about this partition alone; "" none */
    int member;    /* owner by the group's assignment, -1 unknown */
    int sched;     /* first --metrics endpoint that reports it, -1 none */
    int nsched;    /* endpoints that report it (2+: a rebalance under way) */
    int64_t position;
    double oldest; /* NAN unknown */
} st_part_t;

typedef struct st_report {
    const char *bootstrap, *group, *topic;
    int json, timeout_ms;
    st_part_t *parts;
    size_t nparts;
    int described;           /* DescribeConsumerGroups answered */
    char describe_err[300];  /* why it did not */
    char state[40];
    st_member_t *members;
    size_t nmembers;
    st_sched_t *scheds;
    size_t nscheds;
    int any_commit;
    char kafka_err[512]; /* the first error librdkafka reported (error_cb) */
    char *notes[ST_MAX_NOTES];
    size_t nnotes;
} st_report_t;

static void note(st_report_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(st_report_t *r, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (r->nnotes < ST_MAX_NOTES)
        r->notes[r->nnotes++] = strdup(buf);
}

static void report_cleanup(st_report_t *r) {
    for (size_t i = 0; i < r->nmembers; i++) {
        free(r->members[i].client_id);
        free(r->members[i].member_id);
        free(r->members[i].instance_id);
        free(r->members[i].host);
        free(r->members[i].parts);
    }
    free(r->members);
    for (size_t i = 0; i < r->nscheds; i++)
        free(r->scheds[i].addr);
    free(r->scheds);
    free(r->parts);
    for (size_t i = 0; i < r->nnotes; i++)
        free(r->notes[i]);
}

static st_part_t *find_part(st_report_t *r, int64_t id) {
    size_t lo = 0, hi = r->nparts; /* parts are sorted by id */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->parts[mid].id == id)
            return &r->parts[mid];
        if (r->parts[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- arguments ---------------------------------------------------------- */

static void usage(FILE *out) {
    fprintf(out,
            "Usage: execmeshctl status --bootstrap HOST:PORT[,...] [--group G] [--topic T]\n"
            "                          [--metrics HOST:PORT[,HOST:PORT...]]... [--json] [--timeout-ms N]\n"
            "                          [--set KEY=VALUE]...\n\n"
            "Shows whether a partition of the schedulers' consumer group is stuck: one row per partition of\n"
            "the topic (owner, position, committed offset, end offset, lag = end - committed), then a total\n"
            "line (partitions, total lag, partitions with lag > 0, the group's members) and notes.\n"
            "  --bootstrap   Kafka bootstrap servers (required)\n"
            "  --group       the schedulers' consumer group, kafka.group_id (default " ST_DEFAULT_GROUP ")\n"
            "  --topic       the requests topic, kafka.topic_requests (default " ST_DEFAULT_TOPIC ")\n"
            "  --metrics     the schedulers' metrics endpoints (metrics.listen), comma-separated or repeated:\n"
            "                adds each partition's owner and read position as the scheduler sees it, the age\n"
            "                of its oldest waiting execution (OLDEST_WAIT_S), and each scheduler's\n"
            "                stalled_partitions and paused gauges\n"
            "  --json        print one JSON object (the same data, partitions as an array) for scripts\n"
            "  --timeout-ms  bounds each Kafka request and each metrics read (default %d)\n"
            CTL_KAFKA_SET_HELP "\n"
            "COMMITTED '-' means the group never committed an offset there (its lag counts from the start\n"
            "offset); '?' means the source did not answer. The owner comes from the broker's\n"
            "DescribeGroups (a member's client id, which is the scheduler's replica name) and else from\n"
            "--metrics; devkafka does not implement DescribeGroups.\n"
            "Exit codes: 0 the report was printed (whatever the lag), 2 usage error, 3 Kafka unreachable,\n"
            "the topic missing, or the offsets not answered within the timeout.\n",
            ST_DEFAULT_TIMEOUT_MS);
}

/* Adds the comma-separated endpoints in list to r->scheds. */
static int add_metrics(st_report_t *r, const char *list) {
    char *copy = strdup(list);
    int rc = copy ? 0 : -1;
    for (char *save = NULL, *a = strtok_r(copy, ",", &save); a && rc == 0; a = strtok_r(NULL, ",", &save)) {
        char host[256], err[256];
        int port;
        if (em_parse_hostport(a, host, sizeof(host), &port, err, sizeof(err)) != EM_OK || port == 0) {
            fprintf(stderr, "execmeshctl status: --metrics %s: expected HOST:PORT\n", a);
            rc = -1;
            break;
        }
        st_sched_t *ns = realloc(r->scheds, (r->nscheds + 1) * sizeof(*ns));
        if (!ns) {
            rc = -1;
            break;
        }
        r->scheds = ns;
        memset(&ns[r->nscheds], 0, sizeof(*ns));
        ns[r->nscheds].addr = strdup(a);
        ns[r->nscheds].member = -1;
        ns[r->nscheds].assigned = ns[r->nscheds].stalled = ns[r->nscheds].paused = NAN;
        r->nscheds++;
    }
    free(copy);
    return rc;
}

/* -1 when the command should go on, else the exit code (help 0, usage 2). */
static int parse_args(int argc, char **argv, st_report_t *r) {
    static const struct option opts[] = {{"bootstrap", required_argument, NULL, 'b'},
                                         {"group", required_argument, NULL, 'g'},
                                         {"topic", required_argument, NULL, 't'},
                                         {"metrics", required_argument, NULL, 'm'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"timeout-ms", required_argument, NULL, 'T'},
                                         {"set", required_argument, NULL, 'S'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    r->group = ST_DEFAULT_GROUP;
    r->topic = ST_DEFAULT_TOPIC;
    r->timeout_ms = ST_DEFAULT_TIMEOUT_MS;
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'b': r->bootstrap = optarg; break;
        case 'g': r->group = optarg; break;
        case 't': r->topic = optarg; break;
        case 'j': r->json = 1; break;
        case 'm':
            if (add_metrics(r, optarg) != 0)
                return 2;
            break;
        case 'T': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || v < 1 || v > ST_MAX_TIMEOUT_MS) {
                fprintf(stderr, "execmeshctl status: --timeout-ms %s: expected 1..%d\n", optarg, ST_MAX_TIMEOUT_MS);
                return 2;
            }
            r->timeout_ms = (int)v;
            break;
        }
        case 'S':
            if (ctl_set("status", optarg) != 0)
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "execmeshctl status: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!r->bootstrap || !*r->bootstrap) {
        fprintf(stderr, "execmeshctl status: --bootstrap is required (the Kafka bootstrap servers, HOST:PORT[,...])\n");
        usage(stderr);
        return 2;
    }
    if (!*r->group || !*r->topic) {
        fprintf(stderr, "execmeshctl status: --group and --topic must not be empty\n");
        return 2;
    }
    return -1;
}

/* ---- Kafka -------------------------------------------------------------- */

/* error_cb, on the thread that calls rd_kafka_poll (this one): keeps the
 * first error, which names the cause ("Connect to ... failed: Connection
 * refused"); the later "1/1 brokers are down" adds nothing. */
static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    st_report_t *r = opaque;
    if (!r->kafka_err[0] || (err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && strstr(r->kafka_err, "brokers are down")))
        snprintf(r->kafka_err, sizeof(r->kafka_err), "%s", reason);
}

static rd_kafka_t *kafka_open(st_report_t *r, char *err, size_t errn) {
    char tmo[16];
    snprintf(tmo, sizeof(tmo), "%d", r->timeout_ms < 10 ? 10 : r->timeout_ms);
    /* A consumer with the group's id for rd_kafka_committed, which never
     * subscribes: it joins no group and commits nothing. It also makes the
     * admin calls. Asking for a missing topic cannot create it
     * (allow.auto.create.topics=false). librdkafka's own log is off: what
     * went wrong is in the answer. */
    em_kafka_prop_t props[] = {{"group.id", r->group},
                               {"enable.auto.commit", "false"},
                               {"enable.auto.offset.store", "false"},
                               {"allow.auto.create.topics", "false"},
                               {"socket.timeout.ms", tmo},
                               {"log.connection.close", "false"}};
    const char *sec[EM_KAFKA_MAX_SECURITY];
    size_t nsec;
    if (ctl_kafka_props("status", sec, &nsec) != 0) {
        snprintf(err, errn, "%s", ""); /* ctl_kafka_props said why */
        return NULL;
    }
    rd_kafka_conf_t *conf =
        em_kafka_conf_new(r->bootstrap, "execmeshctl", props, EM_ARRAY_LEN(props), sec, nsec, err, errn);
    if (!conf)
        return NULL;
    rd_kafka_conf_set_log_cb(conf, NULL);
    rd_kafka_conf_set_error_cb(conf, on_kafka_error);
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errn);
    if (!rk)
        rd_kafka_conf_destroy(conf);
    return rk;
}

static int cmp_part(const void *a, const void *b) {
    const st_part_t *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Fills r->parts from the topic's metadata. 0, or 3 with errstr set. */
static int kafka_partitions(rd_kafka_t *rk, st_report_t *r, char *err, size_t errn) {
    int rc = 3;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, r->topic, NULL);
    rd_kafka_resp_err_t e = rkt ? rd_kafka_metadata(rk, 0, rkt, &md, r->timeout_ms) : rd_kafka_last_error();
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (e) {
        rd_kafka_poll(rk, 0); /* serves error_cb: the reason the brokers did not answer */
        snprintf(err, errn, "cannot reach Kafka at %s within %d ms: %s", r->bootstrap, r->timeout_ms,
                 r->kafka_err[0] ? r->kafka_err : rd_kafka_err2str(e));
        goto out;
    }
    const struct rd_kafka_metadata_topic *t = md->topic_cnt == 1 ? &md->topics[0] : NULL;
    if (!t || t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || (!t->err && t->partition_cnt == 0)) {
        snprintf(err, errn, "topic %s does not exist on %s", r->topic, r->bootstrap);
        goto out;
    }
    if (t->err) {
        snprintf(err, errn, "topic %s on %s: %s", r->topic, r->bootstrap, rd_kafka_err2str(t->err));
        goto out;
    }
    r->parts = calloc((size_t)t->partition_cnt, sizeof(*r->parts));
    if (!r->parts) {
        snprintf(err, errn, "out of memory");
        goto out;
    }
    r->nparts = (size_t)t->partition_cnt;
    for (size_t i = 0; i < r->nparts; i++) {
        st_part_t *p = &r->parts[i];
        p->id = t->partitions[i].id;
        p->start = p->end = p->committed = p->position = -1;
        p->member = p->sched = -1;
        p->oldest = NAN;
    }
    qsort(r->parts, r->nparts, sizeof(*r->parts), cmp_part);
    rc = 0;
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    return rc;
}

enum { Q_START, Q_END, Q_GROUP, Q_COUNT };

/* Is this librdkafka's mock cluster (devkafka)? Its cluster id says so. */
static int is_mock_cluster(rd_kafka_t *rk) {
    char *id = rd_kafka_clusterid(rk, 0); /* known from the metadata already read */
    int mock = id && strncmp(id, "mockCluster", 11) == 0;
    if (id)
        rd_kafka_mem_free(rk, id);
    return mock;
}

static rd_kafka_AdminOptions_t *admin_options(rd_kafka_t *rk, rd_kafka_admin_op_t op, int timeout_ms, int tag) {
    char err[256];
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, op);
    /* timeout_ms was checked to be in range: this cannot fail */
    rd_kafka_AdminOptions_set_request_timeout(o, timeout_ms, err, sizeof(err));
    rd_kafka_AdminOptions_set_opaque(o, (void *)(intptr_t)tag);
    return o;
}

static rd_kafka_topic_partition_list_t *all_partitions(const st_report_t *r, int64_t offset) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)r->nparts);
    for (size_t i = 0; i < r->nparts; i++)
        rd_kafka_topic_partition_list_add(l, r->topic, r->parts[i].id)->offset = offset;
    return l;
}

/* Asks for the start and end offsets and the group's description at once;
 * the answers arrive on q. Returns how many answers to wait for. */
static int kafka_ask(rd_kafka_t *rk, rd_kafka_queue_t *q, st_report_t *r) {
    for (int tag = Q_START; tag <= Q_END; tag++) {
        rd_kafka_AdminOptions_t *o = admin_options(rk, RD_KAFKA_ADMIN_OP_LISTOFFSETS, r->timeout_ms, tag);
        /* what a consumer can read: the schedulers' consumers are read_committed */
        rd_kafka_error_t *e = rd_kafka_AdminOptions_set_isolation_level(o, RD_KAFKA_ISOLATION_LEVEL_READ_COMMITTED);
        if (e)
            rd_kafka_error_destroy(e);
        rd_kafka_topic_partition_list_t *l =
            all_partitions(r, tag == Q_START ? RD_KAFKA_OFFSET_SPEC_EARLIEST : RD_KAFKA_OFFSET_SPEC_LATEST);
        rd_kafka_ListOffsets(rk, l, o, q);
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_AdminOptions_destroy(o);
    }

    /* The mock cluster refuses DescribeGroups, and librdkafka 2.8.0 turns a
     * coordinator request refused before it was sent into a use-after-free
     * that aborts or hangs the process (confluentinc/librdkafka#4605): do
     * not ask it. */
    if (is_mock_cluster(rk)) {
        snprintf(r->describe_err, sizeof(r->describe_err),
                 "devkafka, librdkafka's mock cluster, does not implement DescribeGroups");
        return Q_GROUP;
    }
    rd_kafka_AdminOptions_t *o = admin_options(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS, r->timeout_ms, Q_GROUP);
    const char *groups[1] = {r->group};
    rd_kafka_DescribeConsumerGroups(rk, groups, 1, o, q);
    rd_kafka_AdminOptions_destroy(o);
    return Q_COUNT;
}

static void take_list_offsets(st_report_t *r, rd_kafka_event_t *ev, int tag) {
    size_t n = 0;
    const rd_kafka_ListOffsetsResultInfo_t **infos =
        rd_kafka_ListOffsets_result_infos(rd_kafka_event_ListOffsets_result(ev), &n);
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_topic_partition_t *tp = rd_kafka_ListOffsetsResultInfo_topic_partition(infos[i]);
        st_part_t *p = strcmp(tp->topic, r->topic) ? NULL : find_part(r, tp->partition);
        if (!p)
            continue;
        if (tp->err)
            snprintf(p->err, sizeof(p->err), "ListOffsets (%s): %s", tag == Q_START ? "earliest" : "latest",
                     rd_kafka_err2str(tp->err));
        else if (tag == Q_START)
            p->start = tp->offset;
        else
            p->end = tp->offset;
    }
}

/* The group's committed offsets, from a consumer that carries the group's
 * id (rd_kafka_committed: bounded by the timeout; it avoids the admin
 * API's coordinator path, see kafka_ask). 0, or 3 with err set. */
static int kafka_committed(rd_kafka_t *rk, st_report_t *r, char *err, size_t errn) {
    rd_kafka_topic_partition_list_t *l = all_partitions(r, RD_KAFKA_OFFSET_INVALID);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, r->timeout_ms);
    if (e) {
        rd_kafka_poll(rk, 0);
        snprintf(err, errn, "committed offsets of group %s on %s (%s): %s%s%s", r->group, r->topic, r->bootstrap,
                 rd_kafka_err2str(e), r->kafka_err[0] ? "; " : "", r->kafka_err);
        rd_kafka_topic_partition_list_destroy(l);
        return 3;
    }
    for (int i = 0; i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &l->elems[i];
        st_part_t *p = find_part(r, tp->partition);
        if (!p)
            continue;
        if (tp->err) {
            snprintf(p->err, sizeof(p->err), "committed offset: %s", rd_kafka_err2str(tp->err));
            continue;
        }
        p->has_commit = 1; /* answered; an offset < 0 means the group never committed here */
        p->committed = tp->offset >= 0 ? tp->offset : -1;
        if (tp->offset >= 0)
            r->any_commit = 1;
    }
    rd_kafka_topic_partition_list_destroy(l);
    return 0;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* Members in a stable order: by client id (the replica name), then id. */
static int cmp_member(const void *a, const void *b) {
    const st_member_t *x = a, *y = b;
    int c = strcmp(x->client_id ? x->client_id : "", y->client_id ? y->client_id : "");
    return c ? c : strcmp(x->member_id ? x->member_id : "", y->member_id ? y->member_id : "");
}

static char *dup_or_null(const char *s) {
    return s && *s ? strdup(s) : NULL;
}

static void take_group(st_report_t *r, rd_kafka_event_t *ev) {
    size_t n = 0;
    const rd_kafka_ConsumerGroupDescription_t **g =
        rd_kafka_DescribeConsumerGroups_result_groups(rd_kafka_event_DescribeConsumerGroups_result(ev), &n);
    if (n != 1) {
        snprintf(r->describe_err, sizeof(r->describe_err), "%zu group descriptions", n);
        return;
    }
    const rd_kafka_error_t *ge = rd_kafka_ConsumerGroupDescription_error(g[0]);
    if (ge) {
        snprintf(r->describe_err, sizeof(r->describe_err), "%s", rd_kafka_error_string(ge));
        return;
    }
    r->described = 1;
    snprintf(r->state, sizeof(r->state), "%s",
             rd_kafka_consumer_group_state_name(rd_kafka_ConsumerGroupDescription_state(g[0])));
    size_t nm = rd_kafka_ConsumerGroupDescription_member_count(g[0]);
    r->members = nm ? calloc(nm, sizeof(*r->members)) : NULL;
    if (nm && !r->members)
        return;
    for (size_t i = 0; i < nm; i++) {
        const rd_kafka_MemberDescription_t *md = rd_kafka_ConsumerGroupDescription_member(g[0], i);
        st_member_t *m = &r->members[r->nmembers++];
        m->client_id = dup_or_null(rd_kafka_MemberDescription_client_id(md));
        m->member_id = dup_or_null(rd_kafka_MemberDescription_consumer_id(md));
        m->instance_id = dup_or_null(rd_kafka_MemberDescription_group_instance_id(md));
        m->host = dup_or_null(rd_kafka_MemberDescription_host(md));
        const rd_kafka_MemberAssignment_t *a = rd_kafka_MemberDescription_assignment(md);
        const rd_kafka_topic_partition_list_t *l = a ? rd_kafka_MemberAssignment_partitions(a) : NULL;
        if (!l || l->cnt <= 0)
            continue;
        m->parts = calloc((size_t)l->cnt, sizeof(*m->parts));
        for (int k = 0; m->parts && k < l->cnt; k++)
            if (strcmp(l->elems[k].topic, r->topic) == 0)
                m->parts[m->nparts++] = l->elems[k].partition;
        if (m->nparts)
            qsort(m->parts, m->nparts, sizeof(*m->parts), cmp_i32);
    }
    if (r->nmembers)
        qsort(r->members, r->nmembers, sizeof(*r->members), cmp_member);
}

/* Waits for the asked answers (bounded: each request carries the timeout and
 * librdkafka answers a request that ran out of time with an error event).
 * 0, or 3 with err set when an offsets answer is missing. */
static int kafka_collect(rd_kafka_t *rk, rd_kafka_queue_t *q, st_report_t *r, int asked, int64_t deadline,
                         char *err, size_t errn) {
    int answered[Q_COUNT] = {0};
    static const char *const what[Q_COUNT] = {"ListOffsets (earliest)", "ListOffsets (latest)",
                                              "DescribeConsumerGroups"};
    int left = asked, rc = 0;
    while (left > 0) {
        /* past the deadline, still take the answers already queued */
        int64_t wait = deadline - em_mono_ms();
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, wait > 0 ? (int)wait : 0);
        if (!ev) {
            if (wait <= 0)
                break;
            continue;
        }
        int tag = (int)(intptr_t)rd_kafka_event_opaque(ev);
        if (tag < 0 || tag >= asked || answered[tag]) {
            rd_kafka_event_destroy(ev);
            continue;
        }
        answered[tag] = 1;
        left--;
        rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
        if (e) {
            if (tag == Q_GROUP) {
                snprintf(r->describe_err, sizeof(r->describe_err), "%s", rd_kafka_event_error_string(ev));
            } else if (!rc) {
                rd_kafka_poll(rk, 0);
                snprintf(err, errn, "%s for group %s, topic %s on %s: %s%s%s", what[tag], r->group, r->topic,
                         r->bootstrap, rd_kafka_event_error_string(ev), r->kafka_err[0] ? "; " : "", r->kafka_err);
                rc = 3;
            }
        } else if (tag == Q_START || tag == Q_END) {
            take_list_offsets(r, ev, tag);
        } else {
            take_group(r, ev);
        }
        rd_kafka_event_destroy(ev);
    }
    for (int tag = 0; tag < asked; tag++) {
        if (answered[tag])
            continue;
        if (tag == Q_GROUP)
            snprintf(r->describe_err, sizeof(r->describe_err), "no answer within %d ms", r->timeout_ms);
        else if (!rc) {
            snprintf(err, errn, "%s for group %s, topic %s on %s: no answer within %d ms", what[tag], r->group,
                     r->topic, r->bootstrap, r->timeout_ms);
            rc = 3;
        }
    }
    return rc;
}

/* ---- the schedulers' metrics -------------------------------------------- */

static void scrape_one(st_report_t *r, size_t i) {
    st_sched_t *s = &r->scheds[i];
    char *body = NULL;
    size_t len = 0;
    if (ctl_http_get(s->addr, "/metrics", r->timeout_ms, &body, &len, s->err, sizeof(s->err)) != EM_OK)
        return;
    s->ok = 1;
    const char *end = body + len;
    ctl_prom_sample_t sm;
    /* first pass: the partitions it owns (it exposes a position for each) */
    for (const char *c = body; ctl_prom_next(&c, end, &sm);) {
        if (ctl_prom_is(&sm, "execmesh_scheduler_assigned_partitions")) {
            s->is_scheduler = 1;
            s->assigned = sm.value;
        } else if (ctl_prom_is(&sm, "execmesh_scheduler_stalled_partitions")) {
            s->stalled = sm.value;
        } else if (ctl_prom_is(&sm, "execmesh_scheduler_paused")) {
            s->paused = sm.value;
        } else if (ctl_prom_is(&sm, "execmesh_scheduler_partition_position") && sm.partition >= 0) {
            st_part_t *p = find_part(r, sm.partition);
            if (!p) {
                note(r, "metrics %s report partition %" PRId64 ", which topic %s does not have (another topic?)",
                     s->addr, sm.partition, r->topic);
                continue;
            }
            p->nsched++;
            if (p->sched < 0) {
                p->sched = (int)i;
                p->position = isfinite(sm.value) ? (int64_t)sm.value : -1;
            }
        }
    }
    /* second pass: what it says about the partitions it owns */
    for (const char *c = body; ctl_prom_next(&c, end, &sm);) {
        if (sm.partition < 0 || !ctl_prom_is(&sm, "execmesh_scheduler_partition_oldest_waiting_seconds"))
            continue;
        st_part_t *p = find_part(r, sm.partition);
        if (p && p->sched == (int)i)
            p->oldest = sm.value;
    }
    free(body);
}

/* Which group member each endpoint is (both claim the same partitions), so
 * an endpoint can be shown by its replica name. */
static void join_owners(st_report_t *r) {
    for (size_t m = 0; m < r->nmembers; m++)
        for (size_t k = 0; k < r->members[m].nparts; k++) {
            st_part_t *p = find_part(r, r->members[m].parts[k]);
            if (p)
                p->member = (int)m;
        }
    for (size_t i = 0; i < r->nscheds; i++) {
        int m = -1, agree = 1;
        for (size_t k = 0; k < r->nparts; k++) {
            const st_part_t *p = &r->parts[k];
            if (p->sched != (int)i)
                continue;
            if (p->member < 0 || (m >= 0 && p->member != m))
                agree = 0;
            m = p->member;
        }
        r->scheds[i].member = agree ? m : -1;
    }
}

/* ---- the report --------------------------------------------------------- */

/* end - committed, or end - start where the group never committed; -1
 * when an offset it needs is unknown. */
static int64_t lag_of(const st_part_t *p) {
    int64_t base = p->committed >= 0 ? p->committed : p->has_commit ? p->start : -1;
    if (p->end < 0 || base < 0)
        return -1;
    return p->end > base ? p->end - base : 0;
}

static const char *member_name(const st_member_t *m) {
    return m->client_id ? m->client_id : m->member_id ? m->member_id : "?";
}

/* The replica name when the group told it, else the metrics endpoint. */
static const char *owner_of(const st_report_t *r, const st_part_t *p) {
    if (p->member >= 0)
        return member_name(&r->members[p->member]);
    if (p->sched >= 0) {
        const st_sched_t *s = &r->scheds[p->sched];
        return s->member >= 0 ? member_name(&r->members[s->member]) : s->addr;
    }
    return NULL;
}

/* "0-2,5": the partitions ids (sorted) in out. */
static void ranges(const int32_t *ids, size_t n, char *out, size_t cap) {
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && len < cap; i++) {
        size_t j = i;
        while (j + 1 < n && ids[j + 1] == ids[j] + 1)
            j++;
        int w = j > i ? snprintf(out + len, cap - len, "%s%d-%d", len ? "," : "", ids[i], ids[j])
                      : snprintf(out + len, cap - len, "%s%d", len ? "," : "", ids[i]);
        if (w < 0)
            break;
        len += (size_t)w;
        i = j;
    }
}

/* The partitions endpoint i reports first, sorted, in ids (r->nparts long). */
static size_t sched_parts(const st_report_t *r, size_t i, int32_t *ids) {
    size_t n = 0;
    for (size_t k = 0; k < r->nparts; k++)
        if (r->parts[k].sched == (int)i)
            ids[n++] = r->parts[k].id;
    return n;
}

/* Notes that need the whole picture; run once before printing. */
static void add_notes(st_report_t *r) {
    if (!r->described) {
        if (r->nscheds)
            note(r, "owners come from the schedulers' metrics: the broker did not answer DescribeGroups for group "
                    "%s (%s)", r->group, r->describe_err);
        else
            note(r, "owner ?: the broker did not answer DescribeGroups for group %s (%s); give --metrics with the "
                    "schedulers' metrics endpoints to learn the owners from them", r->group, r->describe_err);
    }
    if (r->described) {
        int32_t *ids = calloc(r->nparts ? r->nparts : 1, sizeof(*ids));
        size_t n = 0;
        for (size_t k = 0; ids && k < r->nparts; k++)
            if (r->parts[k].member < 0)
                ids[n++] = r->parts[k].id;
        if (n) {
            char pr[512];
            ranges(ids, n, pr, sizeof(pr));
            note(r, "partition%s %s %s no owner in group %s (state %s): nothing reads %s", n == 1 ? "" : "s", pr,
                 n == 1 ? "has" : "have", r->group, r->state, n == 1 ? "it" : "them");
        }
        free(ids);
    }
    if (!r->any_commit)
        note(r, "group %s has committed no offset on %s (an unknown group, or one that never committed): "
                "COMMITTED shows -, the lag counts from the start offset", r->group, r->topic);
    for (size_t i = 0; i < r->nscheds; i++) {
        const st_sched_t *s = &r->scheds[i];
        if (!s->ok)
            note(r, "metrics %s: %s", s->addr, s->err);
        else if (!s->is_scheduler)
            note(r, "metrics %s answered without execmesh_scheduler_* metrics: not a scheduler's metrics endpoint?",
                 s->addr);
    }
    for (size_t k = 0; k < r->nparts; k++) {
        const st_part_t *p = &r->parts[k];
        if (p->err[0])
            note(r, "partition %d: %s", p->id, p->err);
        if (p->nsched > 1)
            note(r, "partition %d is reported by %d schedulers' metrics (a rebalance under way?)", p->id, p->nsched);
        if (p->sched >= 0 && p->member >= 0 && r->scheds[p->sched].member >= 0 &&
            r->scheds[p->sched].member != p->member)
            note(r, "partition %d: the group assigns it to %s, but %s's metrics report it", p->id,
                 member_name(&r->members[p->member]), r->scheds[p->sched].addr);
        else if (r->nscheds && p->sched < 0 && p->member >= 0)
            note(r, "partition %d: owned by %s, whose metrics endpoint is not among --metrics or did not answer",
                 p->id, member_name(&r->members[p->member]));
    }
}

static void fmt_i64(char *buf, size_t n, int64_t v, const char *none) {
    if (v < 0)
        snprintf(buf, n, "%s", none);
    else
        snprintf(buf, n, "%" PRId64, v);
}

static void print_text(const st_report_t *r) {
    int with_metrics = r->nscheds > 0;
    int ow = 5;
    for (size_t k = 0; k < r->nparts; k++) {
        const char *o = owner_of(r, &r->parts[k]);
        int l = o ? (int)strlen(o) : 1;
        if (l > ow)
            ow = l;
    }
    printf("group %s, topic %s, Kafka %s%s%s\n", r->group, r->topic, r->bootstrap, r->described ? ": group " : "",
           r->described ? r->state : "");
    printf("%9s  %-*s  %12s  %12s  %12s  %10s%s\n", "PARTITION", ow, "OWNER", "POSITION", "COMMITTED", "END", "LAG",
           with_metrics ? "  OLDEST_WAIT_S" : "");
    int64_t total = 0;
    size_t lagging = 0;
    for (size_t k = 0; k < r->nparts; k++) {
        const st_part_t *p = &r->parts[k];
        char pos[24], com[24], end[24], lag[24];
        int64_t l = lag_of(p);
        const char *o = owner_of(r, p);
        fmt_i64(pos, sizeof(pos), p->position, "?");
        fmt_i64(com, sizeof(com), p->committed, p->has_commit ? "-" : "?");
        fmt_i64(end, sizeof(end), p->end, "?");
        fmt_i64(lag, sizeof(lag), l, "?");
        if (l > 0) {
            total += l;
            lagging++;
        }
        printf("%9d  %-*s  %12s  %12s  %12s  %10s", p->id, ow, o ? o : "?", pos, com, end, lag);
        if (with_metrics) {
            if (isnan(p->oldest))
                printf("  %13s", "?");
            else
                printf("  %13.1f", p->oldest);
        }
        printf("\n");
    }
    printf("total: %zu partitions, lag %" PRId64 ", %zu partition%s with lag > 0; ", r->nparts, total, lagging,
           lagging == 1 ? "" : "s");
    if (!r->described) {
        printf("members ? (the broker did not answer DescribeGroups)\n");
    } else {
        printf("%zu member%s%s", r->nmembers, r->nmembers == 1 ? "" : "s", r->nmembers ? ":" : "");
        for (size_t m = 0; m < r->nmembers; m++) {
            const st_member_t *mb = &r->members[m];
            char pr[512];
            ranges(mb->parts, mb->nparts, pr, sizeof(pr));
            printf("%s %s (%s%s%s, partitions %s)", m ? "," : "", member_name(mb), mb->host ? mb->host : "?",
                   mb->instance_id ? ", instance " : "", mb->instance_id ? mb->instance_id : "", pr[0] ? pr : "none");
        }
        printf("\n");
    }
    int32_t *ids = r->nscheds ? calloc(r->nparts ? r->nparts : 1, sizeof(*ids)) : NULL;
    for (size_t i = 0; i < r->nscheds && ids; i++) {
        const st_sched_t *s = &r->scheds[i];
        if (!s->ok || !s->is_scheduler)
            continue;
        char pr[512];
        ranges(ids, sched_parts(r, i, ids), pr, sizeof(pr));
        printf("scheduler %s%s%s%s: owns %s, assigned_partitions %.0f, stalled_partitions %.0f, paused %.0f\n",
               s->addr, s->member >= 0 ? " (" : "", s->member >= 0 ? member_name(&r->members[s->member]) : "",
               s->member >= 0 ? ")" : "", pr[0] ? pr : "none", s->assigned, isnan(s->stalled) ? -1.0 : s->stalled,
               isnan(s->paused) ? -1.0 : s->paused);
    }
    free(ids);
    for (size_t i = 0; i < r->nnotes; i++)
        printf("note: %s\n", r->notes[i]);
}

static void json_str(const char *s) {
    if (!s) {
        fputs("null", stdout);
        return;
    }
    size_t n = strlen(s), cap = n * 6 + 1;
    char *buf = malloc(cap);
    if (!buf) {
        fputs("null", stdout);
        return;
    }
    em_json_escape(buf, cap, s, n);
    printf("\"%s\"", buf);
    free(buf);
}

static void json_i64(int64_t v) {
    if (v < 0)
        fputs("null", stdout);
    else
        printf("%" PRId64, v);
}

static void json_num(double v) {
    if (isfinite(v))
        printf("%.3f", v);
    else
        fputs("null", stdout);
}

static void json_ids(const int32_t *ids, size_t n) {
    putchar('[');
    for (size_t k = 0; k < n; k++)
        printf("%s%d", k ? "," : "", ids[k]);
    putchar(']');
}

static void print_json(const st_report_t *r) {
    int64_t total = 0;
    size_t lagging = 0;
    printf("{\"bootstrap\":");
    json_str(r->bootstrap);
    printf(",\"group\":");
    json_str(r->group);
    printf(",\"topic\":");
    json_str(r->topic);
    printf(",\"group_state\":");
    json_str(r->described ? r->state : NULL);
    printf(",\"describe_groups_error\":");
    json_str(r->described ? NULL : r->describe_err);
    printf(",\"partitions\":[");
    for (size_t k = 0; k < r->nparts; k++) {
        const st_part_t *p = &r->parts[k];
        int64_t l = lag_of(p);
        if (l > 0) {
            total += l;
            lagging++;
        }
        printf("%s{\"partition\":%d,\"owner\":", k ? "," : "", p->id);
        json_str(owner_of(r, p));
        printf(",\"owner_client_id\":");
        json_str(p->member >= 0 ? r->members[p->member].client_id : NULL);
        printf(",\"owner_host\":");
        json_str(p->member >= 0 ? r->members[p->member].host : NULL);
        printf(",\"owner_metrics\":");
        json_str(p->sched >= 0 ? r->scheds[p->sched].addr : NULL);
        printf(",\"position\":");
        json_i64(p->position);
        printf(",\"committed\":");
        json_i64(p->committed);
        printf(",\"start\":");
        json_i64(p->start);
        printf(",\"end\":");
        json_i64(p->end);
        printf(",\"lag\":");
        json_i64(l);
        printf(",\"oldest_waiting_seconds\":");
        json_num(p->oldest);
        printf(",\"error\":");
        json_str(p->err[0] ? p->err : NULL);
        putchar('}');
    }
    printf("],\"total\":{\"partitions\":%zu,\"lag\":%" PRId64 ",\"lagging\":%zu,\"members\":", r->nparts, total,
           lagging);
    if (r->described)
        printf("%zu", r->nmembers);
    else
        fputs("null", stdout);
    printf("},\"members\":");
    if (!r->described)
        fputs("null", stdout);
    else {
        putchar('[');
        for (size_t m = 0; m < r->nmembers; m++) {
            const st_member_t *mb = &r->members[m];
            printf("%s{\"client_id\":", m ? "," : "");
            json_str(mb->client_id);
            printf(",\"member_id\":");
            json_str(mb->member_id);
            printf(",\"instance_id\":");
            json_str(mb->instance_id);
            printf(",\"host\":");
            json_str(mb->host);
            printf(",\"partitions\":");
            json_ids(mb->parts, mb->nparts);
            putchar('}');
        }
        putchar(']');
    }
    printf(",\"schedulers\":[");
    int32_t *ids = calloc(r->nparts ? r->nparts : 1, sizeof(*ids));
    for (size_t i = 0; i < r->nscheds; i++) {
        const st_sched_t *s = &r->scheds[i];
        printf("%s{\"metrics\":", i ? "," : "");
        json_str(s->addr);
        printf(",\"name\":");
        json_str(s->member >= 0 ? member_name(&r->members[s->member]) : NULL);
        printf(",\"error\":");
        json_str(s->ok ? (s->is_scheduler ? NULL : "no execmesh_scheduler_* metrics") : s->err);
        printf(",\"assigned_partitions\":");
        json_num(s->assigned);
        printf(",\"stalled_partitions\":");
        json_num(s->stalled);
        printf(",\"paused\":");
        json_num(s->paused);
        printf(",\"partitions\":");
        json_ids(ids, ids ? sched_parts(r, i, ids) : 0);
        putchar('}');
    }
    free(ids);
    printf("],\"notes\":[");
    for (size_t i = 0; i < r->nnotes; i++) {
        if (i)
            putchar(',');
        json_str(r->notes[i]);
    }
    printf("]}\n");
}

/* ---- the command -------------------------------------------------------- */

int ctl_status(int argc, char **argv) {
    st_report_t r;
    char err[1024] = "";
    rd_kafka_t *rk = NULL;
    rd_kafka_queue_t *q = NULL;
    int64_t deadline;
    int asked;
    memset(&r, 0, sizeof(r));
    int rc = parse_args(argc, argv, &r);
    if (rc >= 0)
        goto out;
    rc = 3;
    rk = kafka_open(&r, err, sizeof(err));
    if (!rk) {
        rc = 2; /* a configuration librdkafka refused: the arguments */
        goto out;
    }
    if (kafka_partitions(rk, &r, err, sizeof(err)) != 0)
        goto out;
    q = rd_kafka_queue_new(rk);
    deadline = em_mono_ms() + r.timeout_ms + ST_EVENT_SLACK_MS;
    asked = kafka_ask(rk, q, &r);
    /* the committed offsets and the schedulers while Kafka answers those */
    rc = kafka_committed(rk, &r, err, sizeof(err));
    if (rc != 0)
        goto out;
    for (size_t i = 0; i < r.nscheds; i++)
        scrape_one(&r, i);
    rc = kafka_collect(rk, q, &r, asked, deadline, err, sizeof(err));
    if (rc != 0)
        goto out;
    join_owners(&r);
    add_notes(&r);
    if (r.json)
        print_json(&r);
    else
        print_text(&r);
    fflush(stdout);
out:
    if (err[0])
        fprintf(stderr, "execmeshctl status: %s\n", err);
    if (q)
        rd_kafka_queue_destroy(q);
    if (rk) /* it never joined the group: nothing to leave or commit */
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    report_cleanup(&r);
    return rc;
}
