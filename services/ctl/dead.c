/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmeshctl dead list and dead replay: the dead-letter topic. The
 * scheduler writes there the records of the requests topic it could not
 * take (the original bytes, key kept; the reason in header execmesh-error,
 * the origin "<topic>/<partition>/<offset>" in execmesh-source, and, when
 * the value had to be cut to fit, its first size in
 * execmesh-original-bytes: such a record is never replayed).
 *
 * list prints every record with whether it now reads as a valid Execution
 * (em_execution_inspect, the scheduler's own check). replay re-submits the
 * valid ones through Scheduler.Submit at --rate, keeping their id (or, for
 * one without, the id the scheduler would have given it: its origin), and
 * keeps its progress as the committed offsets of its own consumer group:
 * after each acknowledged Submit everything read so far is committed, so a
 * second run starts after it and replays nothing twice. A Submit that is
 * acknowledged but whose commit then fails is replayed again by the next
 * run, with the same ids (at least once, like the mesh).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "em_execution.h"
#include "em_rpc.h"
#include "em_sizes.h"
#include "em_util.h"

#define DEAD_DEFAULT_TOPIC "execmesh.dead"
#define DEAD_DEFAULT_GROUP "execmeshctl.dead-replay"
#define DEAD_HDR_ERROR "execmesh-error"
#define DEAD_HDR_SOURCE "execmesh-source"

typedef struct dargs {
    const char *bootstrap, *topic, *target, *group;
    int json, dry_run, no_progress;
    double rate;
    int64_t batch, timeout_ms;
    const char *sec[EM_KAFKA_MAX_SECURITY];
    size_t nsec;
} dargs_t;

/* What one dead letter is now. */
typedef struct dinfo {
    char reason[1024], source[320], why[256];
    int truncated, valid;
    char id[320];    /* its id, or the one its origin gives it; "" when neither */
    char handler[256];
} dinfo_t;

static void inspect(const rd_kafka_message_t *m, dinfo_t *d) {
    char orig[32];
    em_exec_info_t info;
    memset(d, 0, sizeof(*d));
    if (!ctl_kafka_header(m, DEAD_HDR_ERROR, d->reason, sizeof(d->reason)))
        snprintf(d->reason, sizeof(d->reason), "(no %s header)", DEAD_HDR_ERROR);
    ctl_kafka_header(m, DEAD_HDR_SOURCE, d->source, sizeof(d->source));
    d->truncated = ctl_kafka_header(m, EM_HDR_ORIGINAL_BYTES, orig, sizeof(orig));
    if (d->truncated) {
        snprintf(d->why, sizeof(d->why), "truncated when dead-lettered (was %s bytes): never replayed", orig);
        return;
    }
    if (em_execution_inspect(m->payload, m->len, &info, d->why, sizeof(d->why)) != EM_OK)
        return;
    if (!info.handler || !info.handler_len) {
        snprintf(d->why, sizeof(d->why), "no handler");
        return;
    }
    d->valid = 1;
    snprintf(d->handler, sizeof(d->handler), "%.*s", (int)info.handler_len, (const char *)info.handler);
    if (info.id && info.id_len)
        snprintf(d->id, sizeof(d->id), "%.*s", (int)info.id_len, (const char *)info.id);
    else if (d->source[0])
        snprintf(d->id, sizeof(d->id), "%s", d->source);
}

/* ---- list --------------------------------------------------------------- */

static void list_json(const rd_kafka_message_t *m, const dinfo_t *d) {
    printf("{\"partition\":%d,\"offset\":%" PRId64 ",", m->partition, m->offset);
    ctl_json_bytes(stdout, "key", m->key, m->key_len);
    printf(",\"bytes\":%zu,\"reason\":", m->len);
    ctl_json_str(stdout, d->reason, strlen(d->reason));
    printf(",\"source\":");
    ctl_json_str(stdout, d->source, strlen(d->source));
    printf(",\"valid\":%s,\"truncated\":%s,\"why\":", d->valid ? "true" : "false", d->truncated ? "true" : "false");
    ctl_json_str(stdout, d->why, strlen(d->why));
    printf(",\"id\":");
    ctl_json_str(stdout, d->id, strlen(d->id));
    printf(",\"handler\":");
    ctl_json_str(stdout, d->handler, strlen(d->handler));
    printf("}\n");
}

static void list_text(const rd_kafka_message_t *m, const dinfo_t *d) {
    char key[80];
    size_t k = m->key_len < 60 ? m->key_len : 60;
    em_utf8_clean(key, sizeof(key), m->key ? m->key : (const void *)"", m->key ? k : 0);
    printf("%d@%" PRId64 "  key %s%s  %zu bytes  %s  reason: %s\n", m->partition, m->offset, *key ? key : "-",
           m->key_len > 60 ? "..." : "", m->len,
           d->valid ? "VALID now" : "INVALID", d->reason);
    if (d->valid)
        printf("    replay as id %s, handler %s\n", d->id[0] ? d->id : "(none: no id and no origin)", d->handler);
    else
        printf("    %s\n", d->why);
}

static int dead_list(dargs_t *a) {
    char err[512];
    ctl_reader_opts_t o = {.bootstrap = a->bootstrap, .topic = a->topic, .sec = a->sec, .nsec = a->nsec,
                           .from = CTL_FROM_BEGINNING, .timeout_ms = 10000};
    ctl_reader_t *rd = ctl_reader_new(&o, err, sizeof(err));
    if (!rd) {
        fprintf(stderr, "execmeshctl dead list: %s\n", err);
        return 3;
    }
    int64_t n = 0, valid = 0, idle_since = em_mono_ms();
    int rc = 0;
    while (!ctl_reader_caught_up(rd)) {
        rd_kafka_message_t *m = ctl_reader_next(rd, 100);
        if (!m) {
            if (em_mono_ms() - idle_since > a->timeout_ms) {
                fprintf(stderr, "execmeshctl dead list: %s stopped answering before its end (%" PRId64 " ms)\n",
                        a->topic, a->timeout_ms);
                rc = 3;
                break;
            }
            continue;
        }
        idle_since = em_mono_ms();
        dinfo_t d;
        inspect(m, &d);
        n++;
        valid += d.valid;
        if (a->json)
            list_json(m, &d);
        else
            list_text(m, &d);
        rd_kafka_message_destroy(m);
    }
    fflush(stdout);
    fprintf(stderr, "%" PRId64 " dead letter%s on %s: %" PRId64 " valid now (replayable), %" PRId64 " invalid\n", n,
            n == 1 ? "" : "s", a->topic, valid, n - valid);
    ctl_reader_destroy(rd);
    return rc;
}

/* ---- replay ------------------------------------------------------------- */

typedef struct pend {
    Execmesh__V1__Execution *ex;
    int32_t partition;
    int64_t offset;
    char id[320];
} pend_t;

typedef struct replay {
    dargs_t *a;
    ctl_reader_t *rd;
    ctl_sched_t s;
    int64_t *next; /* per partition: the offset after the last record handled, -1 none */
    pend_t *batch;
    size_t nb;
    int64_t read, replayed, invalid, t0;
    ctl_progress_t prog;
} replay_t;

static void skip(replay_t *r, const rd_kafka_message_t *m, const char *why) {
    ctl_progress_clear(&r->prog);
    fprintf(stderr, "execmeshctl dead replay: %s %d@%" PRId64 ": %s (skipped)\n", r->a->topic, m->partition,
            m->offset, why);
    r->invalid++;
}

static int commit(replay_t *r) {
    char err[512];
    if (r->a->dry_run)
        return 0;
    if (ctl_reader_commit(r->rd, r->next, err, sizeof(err)) != EM_OK) {
        ctl_progress_clear(&r->prog);
        fprintf(stderr, "execmeshctl dead replay: group %s: %s; the next run replays the last batch again\n",
                r->a->group, err);
        return 3;
    }
    return 0;
}

static void free_batch(replay_t *r) {
    for (size_t i = 0; i < r->nb; i++)
        execmesh__v1__execution__free_unpacked(r->batch[i].ex, NULL);
    r->nb = 0;
}

static int flush_batch(replay_t *r) {
    int rc = 0;
    if (r->a->rate > 0) {
        int64_t due = r->t0 + (int64_t)((double)r->replayed * 1000.0 / r->a->rate);
        for (int64_t left; (left = due - em_mono_ms()) > 0;) {
            struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (long)(left % 1000) * 1000000L};
            nanosleep(&ts, NULL); /* the pace of --rate */
        }
    }
    int64_t retry_until = em_mono_ms() + 30000;
    while (r->nb && !r->a->dry_run) {
        Execmesh__V1__Execution **exs = calloc(r->nb, sizeof(*exs));
        if (!exs)
            return 3;
        for (size_t i = 0; i < r->nb; i++)
            exs[i] = r->batch[i].ex;
        Execmesh__V1__SubmitRequest req = EXECMESH__V1__SUBMIT_REQUEST__INIT;
        req.n_executions = r->nb;
        req.executions = exs;
        ctl_call_t c;
        grpc_status_code code = ctl_call(r->s.ch, r->s.submit, &req.base, 10000, &c);
        free(exs);
        ctl_call_cleanup(&c);
        if (code == GRPC_STATUS_OK)
            break;
        const char *p = strstr(c.details, "executions[");
        long bad = p ? strtol(p + 11, NULL, 10) : -1;
        if (code == GRPC_STATUS_INVALID_ARGUMENT && bad >= 0 && (size_t)bad < r->nb) {
            pend_t *b = &r->batch[bad];
            ctl_progress_clear(&r->prog);
            fprintf(stderr, "execmeshctl dead replay: %s %d@%" PRId64 ": refused by Submit: %s (skipped)\n",
                    r->a->topic, b->partition, b->offset, c.details);
            r->invalid++;
            execmesh__v1__execution__free_unpacked(b->ex, NULL);
            memmove(b, b + 1, (r->nb - (size_t)bad - 1) * sizeof(*b));
            r->nb--;
            continue;
        }
        if ((code == GRPC_STATUS_UNAVAILABLE || code == GRPC_STATUS_RESOURCE_EXHAUSTED) &&
            em_mono_ms() < retry_until) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000000L};
            nanosleep(&ts, NULL); /* back-off before Submit is asked again */
            continue;
        }
        ctl_progress_clear(&r->prog);
        fprintf(stderr, "execmeshctl dead replay: Submit failed: %s: %s; nothing after %s %d@%" PRId64
                        " was committed: the next run resumes there\n",
                em_rpc_status_name(code), c.details, r->a->topic, r->batch[0].partition, r->batch[0].offset);
        free_batch(r);
        return 3;
    }
    ctl_progress_clear(&r->prog);
    for (size_t i = 0; i < r->nb; i++)
        printf("%s %s %d@%" PRId64 "\n", r->a->dry_run ? "would replay" : "replayed", r->batch[i].id,
               r->batch[i].partition, r->batch[i].offset);
    fflush(stdout);
    r->replayed += (int64_t)r->nb;
    free_batch(r);
    rc = commit(r);
    ctl_progress_set(&r->prog, r->read);
    return rc;
}

static int dead_replay(dargs_t *a) {
    char err[512];
    replay_t r = {.a = a};
    int rc = 0;
    ctl_reader_opts_t o = {.bootstrap = a->bootstrap, .topic = a->topic, .sec = a->sec, .nsec = a->nsec,
                           .from = CTL_FROM_COMMITTED, .group = a->group, .timeout_ms = 10000};
    em_tls_opts_t tls;
    if (ctl_tls("dead replay", &tls) != 0)
        return 2;
    if (!(r.rd = ctl_reader_new(&o, err, sizeof(err)))) {
        fprintf(stderr, "execmeshctl dead replay: %s\n", err);
        return 3;
    }
    if (!a->dry_run && (rc = ctl_sched_open("dead replay", a->target, &tls, &r.s)) != 0) {
        ctl_reader_destroy(r.rd);
        return rc;
    }
    int32_t np = ctl_reader_partitions(r.rd);
    r.next = malloc((size_t)np * sizeof(*r.next));
    r.batch = calloc((size_t)a->batch, sizeof(*r.batch));
    if (!r.next || !r.batch) {
        rc = 3;
        goto out;
    }
    for (int32_t i = 0; i < np; i++)
        r.next[i] = -1;
    ctl_progress_init(&r.prog, "dead letters read", ctl_reader_backlog(r.rd), !a->no_progress);
    r.t0 = em_mono_ms();
    int64_t idle_since = em_mono_ms();
    while (rc == 0 && !ctl_reader_caught_up(r.rd)) {
        rd_kafka_message_t *m = ctl_reader_next(r.rd, 100);
        if (!m) {
            if (em_mono_ms() - idle_since > a->timeout_ms) {
                fprintf(stderr, "execmeshctl dead replay: %s stopped answering before its end (%" PRId64 " ms)\n",
                        a->topic, a->timeout_ms);
                rc = 3;
            }
            continue;
        }
        idle_since = em_mono_ms();
        r.read++;
        dinfo_t d;
        inspect(m, &d);
        Execmesh__V1__Execution *ex = NULL;
        if (!d.valid) {
            char why[1400];
            snprintf(why, sizeof(why), "still invalid: %s (dead-lettered: %s)", d.why, d.reason);
            skip(&r, m, why);
        } else if (!d.id[0]) {
            skip(&r, m, "valid, but without an id and without the execmesh-source header its id would come from");
        } else if (!(ex = execmesh__v1__execution__unpack(NULL, m->len, m->payload))) {
            skip(&r, m, "valid to the scheduler's check, but the decoder refuses it");
        } else {
            pend_t *p = &r.batch[r.nb++];
            p->ex = ex;
            p->partition = m->partition;
            p->offset = m->offset;
            snprintf(p->id, sizeof(p->id), "%s", d.id);
            if (!*ex->id) { /* the id the scheduler gave it: its origin (free_unpacked frees it) */
                if (ex->id != protobuf_c_empty_string)
                    free(ex->id);
                ex->id = strdup(d.id);
            }
        }
        if (m->partition >= 0 && m->partition < np)
            r.next[m->partition] = m->offset + 1;
        rd_kafka_message_destroy(m);
        if (r.nb == (size_t)a->batch)
            rc = flush_batch(&r);
        else
            ctl_progress_set(&r.prog, r.read);
    }
    if (rc == 0 && r.nb)
        rc = flush_batch(&r);
    if (rc == 0) { /* the invalid records after the last batch, and every partition read to its end */
        for (int32_t p = 0; p < np; p++)
            if (ctl_reader_position(r.rd, p) > r.next[p])
                r.next[p] = ctl_reader_position(r.rd, p);
        rc = commit(&r);
    }
    ctl_progress_end(&r.prog);
    fprintf(stderr, "execmeshctl dead replay: %" PRId64 " read, %" PRId64 " %s, %" PRId64 " skipped%s%s\n", r.read,
            r.replayed, a->dry_run ? "would be replayed" : "replayed", r.invalid,
            a->dry_run ? " (dry run: nothing submitted or committed)" : "; progress committed to group ",
            a->dry_run ? "" : a->group);
out:
    free_batch(&r);
    free(r.batch);
    free(r.next);
    ctl_sched_close(&r.s);
    ctl_reader_destroy(r.rd);
    return rc;
}

/* ---- dead --------------------------------------------------------------- */

static void usage_dead(FILE *out) {
    fprintf(out,
            "Usage: execmeshctl dead list [--json] [--bootstrap HOST:PORT] [--dead-topic T] [--set KEY=VALUE]...\n"
            "       execmeshctl dead replay [--target TARGET] [--group G] [--rate N[/s|/m]] [--batch N] [--dry-run]\n"
            "                               [--no-progress] [--bootstrap HOST:PORT] [--dead-topic T]\n"
            "                               [--set KEY=VALUE]...\n"
            "list: every record of the dead-letter topic: partition@offset, key, size, the reason (header\n"
            "      execmesh-error) and whether it now reads as a valid Execution (the scheduler's check).\n"
            "replay: re-submits the records that are now valid through Scheduler.Submit, with their id (or the\n"
            "      id of their origin, <topic>/<partition>/<offset>, for one without), at --rate; prints each\n"
            "      replayed id; reports and skips the rest. Its progress is the committed offsets of --group,\n"
            "      so the next run resumes after the last acknowledged Submit and replays nothing twice.\n"
            "  --dead-topic    the dead-letter topic (default " DEAD_DEFAULT_TOPIC ")\n"
            "  --target        schedulers (default ipv4:127.0.0.1:7100)\n"
            "  --group         the consumer group holding replay's progress (default " DEAD_DEFAULT_GROUP ")\n"
            "  --rate          executions per second (N, N/s) or minute (N/m); default: as fast as Submit answers\n"
            "  --batch         executions per Submit call (default 100)\n"
            "  --dry-run       show what would be replayed; submit and commit nothing\n"
            "  --timeout-ms    how long the topic may stay silent before its end (default 10000)\n"
            "Exit 0 done (skipped records are reported, not failures), 2 usage, 3 Kafka or Submit failed.\n"
            CTL_KAFKA_SET_HELP CTL_TLS_SET_HELP);
}

int ctl_dead(int argc, char **argv) {
    static const struct option opts[] = {{"bootstrap", required_argument, NULL, 'b'},
                                         {"dead-topic", required_argument, NULL, 'd'},
                                         {"target", required_argument, NULL, 't'},
                                         {"group", required_argument, NULL, 'g'},
                                         {"rate", required_argument, NULL, 'R'},
                                         {"batch", required_argument, NULL, 'B'},
                                         {"timeout-ms", required_argument, NULL, 'T'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"dry-run", no_argument, NULL, 'n'},
                                         {"no-progress", no_argument, NULL, 'p'},
                                         {"set", required_argument, NULL, 'S'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    dargs_t a = {.bootstrap = "127.0.0.1:9092", .topic = DEAD_DEFAULT_TOPIC, .target = "ipv4:127.0.0.1:7100",
                 .group = DEAD_DEFAULT_GROUP, .batch = 100, .timeout_ms = 10000};
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return ctl_usage_exit(usage_dead, argc >= 2);
    const char *sub = argv[1];
    int list = !strcmp(sub, "list"), replay = !strcmp(sub, "replay"), c;
    if (!list && !replay) {
        fprintf(stderr, "execmeshctl dead: unknown subcommand '%s': list or replay\n", sub);
        return 2;
    }
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
        switch (c) {
        case 'b': a.bootstrap = optarg; break;
        case 'd': a.topic = optarg; break;
        case 't': a.target = optarg; break;
        case 'g': a.group = optarg; break;
        case 'j': a.json = 1; break;
        case 'n': a.dry_run = 1; break;
        case 'p': a.no_progress = 1; break;
        case 'R':
            if (ctl_parse_rate("dead replay", optarg, &a.rate) != 0)
                return 2;
            break;
        case 'B':
            if (ctl_parse_i64("dead replay", "batch", optarg, 1, 10000, &a.batch) != 0)
                return 2;
            break;
        case 'T':
            if (ctl_parse_i64(list ? "dead list" : "dead replay", "timeout-ms", optarg, 1, INT32_MAX,
                              &a.timeout_ms) != 0)
                return 2;
            break;
        case 'S':
            if (ctl_set(list ? "dead list" : "dead replay", optarg) != 0)
                return 2;
            break;
        case 'h': return ctl_usage_exit(usage_dead, 1);
        default: return ctl_usage_exit(usage_dead, 0);
        }
    }
    if (optind + 1 < argc) {
        fprintf(stderr, "execmeshctl dead %s: unexpected argument '%s'\n", sub, argv[optind + 1]);
        return 2;
    }
    if (!*a.group) {
        fprintf(stderr, "execmeshctl dead replay: --group must not be empty\n");
        return 2;
    }
    if (list && (a.rate > 0 || a.dry_run)) {
        fprintf(stderr, "execmeshctl dead list: --rate and --dry-run are replay's\n");
        return 2;
    }
    if (ctl_kafka_props(list ? "dead list" : "dead replay", a.sec, &a.nsec) != 0)
        return 2;
    if (a.rate > 0 && (double)a.batch > a.rate / 10.0) /* about ten calls a second, so the pace is even */
        a.batch = a.rate >= 10.0 ? (int64_t)(a.rate / 10.0) : 1;
    return list ? dead_list(&a) : dead_replay(&a);
}
