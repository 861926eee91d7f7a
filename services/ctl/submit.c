/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmeshctl submit and cancel: the commands that write through
 * Scheduler.Submit and Scheduler.Cancel.
 *
 * submit has two forms. One execution from the command line (--handler,
 * --payload...): Submit, then its final result from the results topic,
 * printed as JSON. Many from a JSON-lines file (--file F, "-" for stdin):
 * one object per line, paced at --rate in Submit calls of --batch
 * executions; every execution gets its id before it is sent (the line's,
 * else a fresh random one), so a Submit retried after an unanswered call
 * writes the same ids and --wait knows what to wait for.
 *
 * A bad line is never lost silently: by default it is reported on stderr as
 * FILE:LINE: why, skipped, counted in the summary, and the exit code is 1;
 * with --strict every line is checked first and one bad line submits
 * nothing (exit 2). A line Submit itself refuses (INVALID_ARGUMENT naming
 * executions[i]: too large, an unknown field...) is reported the same way
 * and the rest of its call is sent again without it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "em_execution.h"
#include "em_rpc.h"
#include "em_util.h"

#define SUBMIT_MAX_HEADERS 64
#define SUBMIT_DEFAULT_BATCH 100
#define SUBMIT_MAX_BATCH 10000
#define SUBMIT_CALL_MS 10000
/* How long a Submit may keep answering "try again" (UNAVAILABLE,
 * RESOURCE_EXHAUSTED) before the command gives up. */
#define SUBMIT_RETRY_MS 30000

static void ms_sleep(int64_t ms) {
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- the id set of submit --wait ---------------------------------------- */

/* Open addressing over the acknowledged ids; a slot's done flag is set
 * once the id's final result was seen. */
typedef struct idset {
    char **ids;
    unsigned char *done;
    size_t cap, n, ndone;
} idset_t;

static int idset_add(idset_t *s, const char *id) {
    if ((s->n + 1) * 2 > s->cap) {
        idset_t g = {.cap = s->cap ? s->cap * 2 : 1024};
        g.ids = calloc(g.cap, sizeof(char *));
        g.done = calloc(g.cap, 1);
        if (!g.ids || !g.done) {
            free(g.ids);
            free(g.done);
            return -1;
        }
        for (size_t i = 0; i < s->cap; i++)
            if (s->ids[i]) {
                size_t h = em_fnv1a(s->ids[i], strlen(s->ids[i])) & (g.cap - 1);
                while (g.ids[h])
                    h = (h + 1) & (g.cap - 1);
                g.ids[h] = s->ids[i];
                g.done[h] = s->done[i];
            }
        g.n = s->n;
        g.ndone = s->ndone;
        free(s->ids);
        free(s->done);
        *s = g;
    }
    size_t h = em_fnv1a(id, strlen(id)) & (s->cap - 1);
    while (s->ids[h]) {
        if (strcmp(s->ids[h], id) == 0)
            return 0; /* the same id twice in the file: one final result ends both */
        h = (h + 1) & (s->cap - 1);
    }
    if (!(s->ids[h] = strdup(id)))
        return -1;
    s->n++;
    return 0;
}

/* 1 when id is in the set and was not done (it is now), else 0. */
static int idset_finish(idset_t *s, const char *id, size_t len) {
    if (!s->cap)
        return 0;
    size_t h = em_fnv1a(id, len) & (s->cap - 1);
    while (s->ids[h]) {
        if (strlen(s->ids[h]) == len && memcmp(s->ids[h], id, len) == 0) {
            if (s->done[h])
                return 0;
            s->done[h] = 1;
            s->ndone++;
            return 1;
        }
        h = (h + 1) & (s->cap - 1);
    }
    return 0;
}

static void idset_cleanup(idset_t *s) {
    for (size_t i = 0; i < s->cap; i++)
        free(s->ids[i]);
    free(s->ids);
    free(s->done);
    memset(s, 0, sizeof(*s));
}

/* ---- one line of a submit file ------------------------------------------ */

typedef struct item {
    long line;
    ctl_json_obj_t obj; /* the strings the execution points into */
    Execmesh__V1__Execution ex;
    Execmesh__V1__Execution__HeadersEntry *hdrs;
    Execmesh__V1__Execution__HeadersEntry **hp;
    uint8_t *b64; /* payload_b64 decoded */
    char idbuf[33];
} item_t;

static void item_free(item_t *it) {
    if (!it)
        return;
    ctl_json_free(&it->obj);
    free(it->hdrs);
    free(it->hp);
    free(it->b64);
    free(it);
}

static int is_str(const ctl_json_member_t *m, const char *key, char *why, size_t n) {
    if (m->kind != CTL_JSON_STR) {
        snprintf(why, n, "\"%s\" must be a string", key);
        return 0;
    }
    return 1;
}

static int clean_str(const ctl_json_member_t *m, const char *what, char *why, size_t n) {
    if (!em_utf8_valid((const uint8_t *)m->str, m->len)) {
        snprintf(why, n, "%s must be UTF-8 without NUL characters", what);
        return 0;
    }
    return 1;
}

static int u32_of(const ctl_json_member_t *m, int64_t max, int64_t *v, char *why, size_t n) {
    if (m->kind != CTL_JSON_INT || m->num < 0 || m->num > max) {
        snprintf(why, n, "\"%s\" must be an integer 0..%" PRId64, m->key, max);
        return 0;
    }
    *v = m->num;
    return 1;
}

/* Parses one line into an item: the item, or NULL with why set. */
static item_t *item_parse(const char *text, size_t len, long line, char *why, size_t n) {
    item_t *it = calloc(1, sizeof(*it));
    if (!it) {
        snprintf(why, n, "out of memory");
        return NULL;
    }
    it->line = line;
    execmesh__v1__execution__init(&it->ex);
    if (ctl_json_parse_object(text, len, &it->obj, why, n) != 0) {
        free(it);
        return NULL;
    }
    const ctl_json_member_t *payload = NULL, *payload_b64 = NULL, *headers = NULL;
    for (size_t i = 0; i < it->obj.n; i++) {
        ctl_json_member_t *m = &it->obj.m[i];
        int64_t v;
        if (m->kind == CTL_JSON_NULL)
            continue; /* null: as if absent */
        if (!strcmp(m->key, "id")) {
            if (!is_str(m, "id", why, n) || !clean_str(m, "\"id\"", why, n))
                goto bad;
            it->ex.id = m->str;
        } else if (!strcmp(m->key, "handler")) {
            if (!is_str(m, "handler", why, n) || !clean_str(m, "\"handler\"", why, n))
                goto bad;
            it->ex.handler = m->str;
        } else if (!strcmp(m->key, "payload")) {
            if (!is_str(m, "payload", why, n))
                goto bad;
            payload = m;
        } else if (!strcmp(m->key, "payload_b64")) {
            if (!is_str(m, "payload_b64", why, n))
                goto bad;
            payload_b64 = m;
        } else if (!strcmp(m->key, "headers")) {
            if (m->kind != CTL_JSON_OBJ) {
                snprintf(why, n, "\"headers\" must be an object of strings");
                goto bad;
            }
            headers = m;
        } else if (!strcmp(m->key, "timeout_ms")) {
            if (!u32_of(m, UINT32_MAX, &v, why, n))
                goto bad;
            it->ex.timeout_ms = (uint32_t)v;
        } else if (!strcmp(m->key, "max_attempts")) {
            if (!u32_of(m, UINT32_MAX, &v, why, n))
                goto bad;
            it->ex.max_attempts = (uint32_t)v;
        } else if (!strcmp(m->key, "deadline_unix_ms")) {
            if (!u32_of(m, INT64_MAX, &v, why, n))
                goto bad;
            it->ex.deadline_unix_ms = v;
        } else {
            snprintf(why, n,
                     "unknown key \"%s\" (a line has handler and optionally id, payload or payload_b64, headers, "
                     "timeout_ms, max_attempts, deadline_unix_ms)",
                     m->key);
            goto bad;
        }
    }
    if (!it->ex.handler || !*it->ex.handler) {
        snprintf(why, n, "\"handler\" is required");
        goto bad;
    }
    if (payload && payload_b64) {
        snprintf(why, n, "give \"payload\" or \"payload_b64\", not both");
        goto bad;
    }
    if (payload) {
        it->ex.payload.data = (uint8_t *)payload->str;
        it->ex.payload.len = payload->len;
    } else if (payload_b64) {
        if (ctl_base64_decode(payload_b64->str, payload_b64->len, &it->b64, &it->ex.payload.len) != 0) {
            snprintf(why, n, "\"payload_b64\" is not base64");
            goto bad;
        }
        it->ex.payload.data = it->b64;
    }
    if (headers && headers->obj.n) {
        size_t k = headers->obj.n;
        if (k > SUBMIT_MAX_HEADERS) {
            snprintf(why, n, "more than %d headers", SUBMIT_MAX_HEADERS);
            goto bad;
        }
        it->hdrs = calloc(k, sizeof(*it->hdrs));
        it->hp = calloc(k, sizeof(*it->hp));
        if (!it->hdrs || !it->hp) {
            snprintf(why, n, "out of memory");
            goto bad;
        }
        for (size_t i = 0; i < k; i++) {
            const ctl_json_member_t *h = &headers->obj.m[i];
            char what[300];
            snprintf(what, sizeof(what), "header \"%.200s\"", h->key);
            if (h->kind != CTL_JSON_STR) {
                snprintf(why, n, "%s must be a string", what);
                goto bad;
            }
            if (!em_utf8_valid((const uint8_t *)h->key, strlen(h->key)) || !clean_str(h, what, why, n)) {
                if (!why[0] || !strstr(why, "UTF-8"))
                    snprintf(why, n, "%s: the name must be UTF-8", what);
                goto bad;
            }
            execmesh__v1__execution__headers_entry__init(&it->hdrs[i]);
            it->hdrs[i].key = h->key;
            it->hdrs[i].value = h->str;
            it->hp[i] = &it->hdrs[i];
        }
        it->ex.n_headers = k;
        it->ex.headers = it->hp;
    }
    if (!it->ex.id || !*it->ex.id) {
        em_random_id(it->idbuf);
        it->ex.id = it->idbuf;
    }
    return it;
bad:
    item_free(it);
    return NULL;
}

/* ---- submit --file ------------------------------------------------------ */

typedef struct fsub {
    const char *file; /* as named on the command line */
    FILE *in;
    ctl_sched_t sched;
    ctl_reader_t *reader; /* --wait */
    idset_t wait;
    double rate; /* per second, 0: as fast as Submit answers */
    size_t batch;
    int quiet;
    int64_t lines, acked, refused, not_succeeded;
    long first_refused[10];
    ctl_progress_t prog;
    int64_t t0, sent;
} fsub_t;

static void refuse(fsub_t *f, long line, const char *why) {
    ctl_progress_clear(&f->prog);
    fprintf(stderr, "execmeshctl submit: %s:%ld: %s (line skipped)\n", f->file, line, why);
    if (f->refused < 10)
        f->first_refused[f->refused] = line;
    f->refused++;
}

/* Reads results for --wait for at most ms: counts the final ones of our ids
 * and prints them. */
static void wait_poll(fsub_t *f, int ms) {
    int64_t until = em_mono_ms() + ms;
    do {
        rd_kafka_message_t *m = ctl_reader_next(f->reader, (int)(until - em_mono_ms() > 0 ? until - em_mono_ms() : 0));
        if (!m)
            break;
        Execmesh__V1__Result *r = execmesh__v1__result__unpack(NULL, m->len, m->payload);
        if (r && r->final && idset_finish(&f->wait, r->id, strlen(r->id))) {
            if (r->status != EXECMESH__V1__STATUS__SUCCEEDED)
                f->not_succeeded++;
            if (!f->quiet) {
                ctl_progress_clear(&f->prog);
                ctl_print_result(stdout, r, -1);
                fflush(stdout);
            }
        }
        if (r)
            execmesh__v1__result__free_unpacked(r, NULL);
        rd_kafka_message_destroy(m);
    } while (em_mono_ms() < until);
}

/* Waits until the pace allows k more executions. */
static void pace(fsub_t *f, size_t k) {
    if (f->rate <= 0)
        return;
    int64_t due = f->t0 + (int64_t)((double)f->sent * 1000.0 / f->rate);
    (void)k;
    for (int64_t left; (left = due - em_mono_ms()) > 0;) {
        if (f->reader)
            wait_poll(f, (int)(left > 100 ? 100 : left));
        else
            ms_sleep(left);
    }
}

/* "executions[N]" at the start of a Submit refusal: N, else -1. */
static long refused_index(const char *details) {
    const char *p = strstr(details, "executions[");
    if (!p)
        return -1;
    char *end;
    long v = strtol(p + 11, &end, 10);
    return *end == ']' && v >= 0 ? v : -1;
}

/* Submits items[0..n): 0 when all were acknowledged or refused by name
 * (each reported), 3 after printing why the call failed. Frees the items. */
static int send_batch(fsub_t *f, item_t **items, size_t n) {
    int rc = 0;
    int64_t retry_until = em_mono_ms() + SUBMIT_RETRY_MS;
    pace(f, n);
    while (n) {
        Execmesh__V1__Execution **exs = calloc(n, sizeof(*exs));
        if (!exs) {
            fprintf(stderr, "execmeshctl submit: out of memory\n");
            rc = 3;
            break;
        }
        for (size_t i = 0; i < n; i++)
            exs[i] = &items[i]->ex;
        Execmesh__V1__SubmitRequest req = EXECMESH__V1__SUBMIT_REQUEST__INIT;
        req.n_executions = n;
        req.executions = exs;
        ctl_call_t c;
        grpc_status_code code = ctl_call(f->sched.ch, f->sched.submit, &req.base, SUBMIT_CALL_MS, &c);
        free(exs);
        if (code == GRPC_STATUS_OK) {
            Execmesh__V1__SubmitResponse *resp = execmesh__v1__submit_response__unpack(NULL, c.len, c.resp);
            ctl_progress_clear(&f->prog);
            for (size_t i = 0; i < n; i++) {
                const char *id = resp && i < resp->n_ids ? resp->ids[i] : items[i]->ex.id;
                if (f->reader) {
                    if (idset_add(&f->wait, id) != 0) {
                        fprintf(stderr, "execmeshctl submit: out of memory\n");
                        rc = 3;
                    }
                } else if (!f->quiet)
                    printf("%s\n", id);
            }
            fflush(stdout);
            if (resp)
                execmesh__v1__submit_response__free_unpacked(resp, NULL);
            f->acked += (int64_t)n;
            f->sent += (int64_t)n;
            ctl_call_cleanup(&c);
            break;
        }
        long bad = code == GRPC_STATUS_INVALID_ARGUMENT ? refused_index(c.details) : -1;
        if (bad >= 0 && (size_t)bad < n) {
            char why[700];
            snprintf(why, sizeof(why), "refused by Submit: %s", c.details);
            refuse(f, items[bad]->line, why);
            item_free(items[bad]);
            memmove(items + bad, items + bad + 1, (n - (size_t)bad - 1) * sizeof(*items));
            n--;
            ctl_call_cleanup(&c);
            continue;
        }
        /* try again later; not DEADLINE_EXCEEDED: the channel already waited that long for a scheduler */
        int again = code == GRPC_STATUS_UNAVAILABLE || code == GRPC_STATUS_RESOURCE_EXHAUSTED;
        if (again && em_mono_ms() < retry_until) {
            ctl_call_cleanup(&c);
            ms_sleep(200);
            continue;
        }
        ctl_progress_clear(&f->prog);
        fprintf(stderr, "execmeshctl submit: Submit of lines %ld..%ld failed: %s: %s\n", items[0]->line,
                items[n - 1]->line, em_rpc_status_name(code), c.details);
        ctl_call_cleanup(&c);
        rc = 3;
        break;
    }
    for (size_t i = 0; i < n; i++)
        item_free(items[i]);
    ctl_progress_set(&f->prog, f->acked + f->refused);
    return rc;
}

/* Non-blank lines of a regular file (the progress line's total), -1 when
 * the input is not one. */
static int64_t count_lines(FILE *in) {
    struct stat st;
    if (fstat(fileno(in), &st) != 0 || !S_ISREG(st.st_mode))
        return -1;
    long at = ftell(in);
    int64_t n = 0;
    int c, blank = 1;
    while ((c = getc(in)) != EOF) {
        if (c == '\n') {
            n += !blank;
            blank = 1;
        } else if (c != ' ' && c != '\t' && c != '\r')
            blank = 0;
    }
    n += !blank;
    clearerr(in);
    fseek(in, at, SEEK_SET);
    return n;
}

static int blank_line(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

/* --strict: every line checked before anything is sent. 0, or 2 after
 * reporting each bad line. */
static int check_all(fsub_t *f) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long no = 0;
    int64_t bad = 0;
    while ((len = getline(&line, &cap, f->in)) >= 0) {
        char why[512] = "";
        no++;
        if (blank_line(line, (size_t)len))
            continue;
        item_t *it = item_parse(line, (size_t)len, no, why, sizeof(why));
        if (!it) {
            fprintf(stderr, "execmeshctl submit: %s:%ld: %s\n", f->file, no, why);
            bad++;
        }
        item_free(it);
    }
    free(line);
    if (bad) {
        fprintf(stderr, "execmeshctl submit: --strict: %" PRId64 " bad line%s in %s, nothing submitted\n", bad,
                bad == 1 ? "" : "s", f->file);
        return 2;
    }
    rewind(f->in);
    return 0;
}

static int submit_file(fsub_t *f, int strict, int no_progress, int64_t wait_ms) {
    int rc = 0;
    if (strict && (rc = check_all(f)) != 0)
        return rc;
    ctl_progress_init(&f->prog, "submitted", count_lines(f->in), !no_progress);
    f->t0 = em_mono_ms();
    item_t **batch = calloc(f->batch, sizeof(*batch));
    size_t nb = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long no = 0;
    if (!batch) {
        fprintf(stderr, "execmeshctl submit: out of memory\n");
        return 3;
    }
    while (rc == 0 && (len = getline(&line, &cap, f->in)) >= 0) {
        char why[512] = "";
        no++;
        if (blank_line(line, (size_t)len))
            continue;
        f->lines++;
        item_t *it = item_parse(line, (size_t)len, no, why, sizeof(why));
        if (!it) {
            refuse(f, no, why);
            ctl_progress_set(&f->prog, f->acked + f->refused);
            continue;
        }
        batch[nb++] = it;
        if (nb == f->batch) {
            rc = send_batch(f, batch, nb);
            nb = 0;
        }
    }
    if (rc == 0 && ferror(f->in)) {
        fprintf(stderr, "execmeshctl submit: reading %s after line %ld: %s\n", f->file, no, strerror(errno));
        rc = 3;
    }
    if (rc == 0 && nb)
        rc = send_batch(f, batch, nb);
    else
        for (size_t i = 0; i < nb; i++)
            item_free(batch[i]);
    free(batch);
    free(line);
    ctl_progress_end(&f->prog);
    int64_t el = em_mono_ms() - f->t0;
    fprintf(stderr, "execmeshctl submit: %" PRId64 " of %" PRId64 " lines acknowledged, %" PRId64 " refused",
            f->acked, f->lines, f->refused);
    for (int64_t i = 0; i < f->refused && i < 10; i++)
        fprintf(stderr, "%s%ld", i ? ", " : " (lines ", f->first_refused[i]);
    if (f->refused)
        fprintf(stderr, "%s)", f->refused > 10 ? ", ..." : "");
    fprintf(stderr, ", in %.1f s (%.1f/s)%s\n", (double)el / 1000.0,
            el > 0 ? (double)f->acked * 1000.0 / (double)el : 0.0,
            rc ? "; the lines after the failed call were not submitted" : "");
    if (rc == 0 && f->reader) {
        ctl_progress_init(&f->prog, "results", (int64_t)f->wait.n, !no_progress);
        int64_t until = em_mono_ms() + wait_ms;
        while (f->wait.ndone < f->wait.n && em_mono_ms() < until) {
            wait_poll(f, 100);
            ctl_progress_set(&f->prog, (int64_t)f->wait.ndone);
        }
        ctl_progress_end(&f->prog);
        if (f->wait.ndone < f->wait.n) {
            fprintf(stderr, "execmeshctl submit: %zu of %zu executions without a final result after %" PRId64
                            " ms; e.g.",
                    f->wait.n - f->wait.ndone, f->wait.n, wait_ms);
            int shown = 0;
            for (size_t i = 0; i < f->wait.cap && shown < 5; i++)
                if (f->wait.ids[i] && !f->wait.done[i]) {
                    fprintf(stderr, " %s", f->wait.ids[i]);
                    shown++;
                }
            fputc('\n', stderr);
            rc = 3;
        } else
            fprintf(stderr, "execmeshctl submit: %zu final results, %" PRId64 " not SUCCEEDED\n", f->wait.n,
                    f->not_succeeded);
    }
    if (rc == 0 && (f->refused || f->not_succeeded))
        rc = 1;
    return rc;
}

/* ---- submit ------------------------------------------------------------- */

static void usage_submit(FILE *out) {
    fprintf(out,
            "Usage: execmeshctl submit --handler NAME [--payload TEXT | --payload-file FILE | (stdin)]\n"
            "                          [--id ID] [--timeout-ms N] [--header K=V]... [--no-wait] [--wait-ms N]\n"
            "       execmeshctl submit --file F|- [--rate N[/s|/m]] [--batch N] [--strict] [--wait [--wait-ms N]]\n"
            "                          [--quiet] [--no-progress]\n"
            "  common: [--target TARGET] [--bootstrap HOST:PORT] [--results-topic T] [--set KEY=VALUE]...\n\n"
            "The first form submits one execution through Scheduler.Submit and prints its final result (JSON)\n"
            "from the results topic (exit 0 SUCCEEDED, 1 another status, 3 no result within --wait-ms).\n"
            "The second submits one execution per line of a JSON-lines file (- : stdin), each line an object\n"
            "  {\"id\":\"...\", \"handler\":\"echo\", \"payload\":\"text\" | \"payload_b64\":\"...\",\n"
            "   \"headers\":{\"k\":\"v\"}, \"timeout_ms\":N, \"max_attempts\":N, \"deadline_unix_ms\":N}\n"
            "(only handler required; an id is made for a line without one), and prints each acknowledged id\n"
            "on stdout, or with --wait each final result (JSON). A bad line is reported as FILE:LINE: why and\n"
            "skipped (exit 1); --strict checks every line first and submits nothing if one is bad (exit 2).\n"
            "  --target        schedulers, e.g. ipv4:127.0.0.1:7100,127.0.0.1:7101 or dns:///scheduler:7100\n"
            "                  (default ipv4:127.0.0.1:7100)\n"
            "  --bootstrap     Kafka bootstrap servers to read the results from (default 127.0.0.1:9092)\n"
            "  --rate          executions per second (N or N/s) or per minute (N/m); default: as fast as\n"
            "                  Submit answers\n"
            "  --batch         executions per Submit call (default 100; with --rate at most a tenth of it)\n"
            "  --wait-ms       how long to wait for the results (default 30000; --file --wait: 300000)\n"
            "  --no-wait       (one execution) print the id once Submit returned, do not wait for the result\n"
            "  --quiet         print no ids or results, only the summary (stderr)\n"
            "  --no-progress   no progress line (stderr)\n" CTL_KAFKA_SET_HELP CTL_TLS_SET_HELP);
}

static uint8_t *read_all(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    *len = n;
    return buf;
}

static int submit_one(const char *target, const em_tls_opts_t *tls, ctl_reader_opts_t *ro, const char *handler,
                      uint8_t *data, size_t len, const char *id, int64_t timeout, char **hdr_kv, int nhdr,
                      int no_wait, int64_t wait_ms) {
    char err[512];
    int rc = 3;
    ctl_reader_t *reader = NULL;
    ctl_sched_t s;
    if (!no_wait && !(reader = ctl_reader_new(ro, err, sizeof(err)))) {
        fprintf(stderr, "execmeshctl submit: %s\n", err);
        return 3;
    }
    if ((rc = ctl_sched_open("submit", target, tls, &s)) != 0) {
        ctl_reader_destroy(reader);
        return rc;
    }
    Execmesh__V1__Execution__HeadersEntry hdrs[SUBMIT_MAX_HEADERS], *hp[SUBMIT_MAX_HEADERS];
    char *hkeys[SUBMIT_MAX_HEADERS];
    Execmesh__V1__Execution ex = EXECMESH__V1__EXECUTION__INIT;
    ex.id = (char *)(uintptr_t)id;
    ex.handler = (char *)(uintptr_t)handler;
    ex.payload.data = data;
    ex.payload.len = len;
    ex.timeout_ms = (uint32_t)timeout;
    for (int i = 0; i < nhdr; i++) {
        execmesh__v1__execution__headers_entry__init(&hdrs[i]);
        hkeys[i] = strdup(hdr_kv[i]);
        char *eq = hkeys[i] ? strchr(hkeys[i], '=') : NULL;
        if (eq)
            *eq = '\0';
        hdrs[i].key = hkeys[i] ? hkeys[i] : (char *)(uintptr_t) "";
        hdrs[i].value = eq ? eq + 1 : (char *)(uintptr_t) "";
        hp[i] = &hdrs[i];
    }
    ex.n_headers = (size_t)nhdr;
    ex.headers = hp;
    Execmesh__V1__Execution *exs[1] = {&ex};
    Execmesh__V1__SubmitRequest req = EXECMESH__V1__SUBMIT_REQUEST__INIT;
    req.n_executions = 1;
    req.executions = exs;

    int64_t t0 = em_mono_ms();
    ctl_call_t c;
    grpc_status_code code = ctl_call(s.ch, s.submit, &req.base, SUBMIT_CALL_MS, &c);
    ctl_call_cleanup(&c);
    if (code != GRPC_STATUS_OK) {
        fprintf(stderr, "execmeshctl submit: Submit failed: %s: %s\n", em_rpc_status_name(code), c.details);
        rc = 3;
        goto out;
    }
    fprintf(stderr, "submitted id=%s (durable in Kafka after %lld ms)\n", id, (long long)(em_mono_ms() - t0));
    if (no_wait) {
        printf("{\"id\":");
        ctl_json_str(stdout, id, strlen(id));
        printf("}\n");
        rc = 0;
        goto out;
    }
    rc = 3;
    while (rc == 3 && em_mono_ms() - t0 < wait_ms) {
        rd_kafka_message_t *m = ctl_reader_next(reader, 100);
        if (!m)
            continue;
        if (m->key_len == strlen(id) && memcmp(m->key, id, m->key_len) == 0) {
            Execmesh__V1__Result *r = execmesh__v1__result__unpack(NULL, m->len, m->payload);
            if (r && r->final) { /* an attempt to be retried is not the answer */
                ctl_print_result(stdout, r, em_mono_ms() - t0);
                rc = r->status == EXECMESH__V1__STATUS__SUCCEEDED ? 0 : 1;
            }
            if (r)
                execmesh__v1__result__free_unpacked(r, NULL);
        }
        rd_kafka_message_destroy(m);
    }
    if (rc == 3)
        fprintf(stderr, "execmeshctl submit: no final result for %s on %s within %" PRId64 " ms\n", id, ro->topic,
                wait_ms);
out:
    for (int i = 0; i < nhdr; i++)
        free(hkeys[i]);
    ctl_sched_close(&s);
    ctl_reader_destroy(reader);
    return rc;
}

int ctl_submit(int argc, char **argv) {
    static const struct option opts[] = {
        {"handler", required_argument, NULL, 'H'},   {"payload", required_argument, NULL, 'P'},
        {"payload-file", required_argument, NULL, 'F'}, {"target", required_argument, NULL, 't'},
        {"bootstrap", required_argument, NULL, 'b'}, {"id", required_argument, NULL, 'i'},
        {"timeout-ms", required_argument, NULL, 'T'}, {"header", required_argument, NULL, 'e'},
        {"wait-ms", required_argument, NULL, 'w'},   {"results-topic", required_argument, NULL, 'r'},
        {"no-wait", no_argument, NULL, 'n'},         {"set", required_argument, NULL, 'S'},
        {"file", required_argument, NULL, 'f'},      {"rate", required_argument, NULL, 'R'},
        {"batch", required_argument, NULL, 'B'},     {"strict", no_argument, NULL, 's'},
        {"wait", no_argument, NULL, 'W'},            {"quiet", no_argument, NULL, 'q'},
        {"no-progress", no_argument, NULL, 'p'},     {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *handler = NULL, *payload = NULL, *payload_file = NULL, *target = "ipv4:127.0.0.1:7100";
    const char *bootstrap = "127.0.0.1:9092", *topic = "execmesh.results", *file = NULL;
    char id[300] = "";
    int64_t timeout = 0, wait_ms = -1, batch = SUBMIT_DEFAULT_BATCH;
    double rate = 0;
    int no_wait = 0, strict = 0, wait = 0, quiet = 0, no_progress = 0, c, rc;
    char *hdr_kv[SUBMIT_MAX_HEADERS];
    int nhdr = 0;

    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'H': handler = optarg; break;
        case 'P': payload = optarg; break;
        case 'F': payload_file = optarg; break;
        case 't': target = optarg; break;
        case 'b': bootstrap = optarg; break;
        case 'i': snprintf(id, sizeof(id), "%s", optarg); break;
        case 'r': topic = optarg; break;
        case 'n': no_wait = 1; break;
        case 'f': file = optarg; break;
        case 's': strict = 1; break;
        case 'W': wait = 1; break;
        case 'q': quiet = 1; break;
        case 'p': no_progress = 1; break;
        case 'T':
            if (ctl_parse_i64("submit", "timeout-ms", optarg, 0, UINT32_MAX, &timeout) != 0)
                return 2;
            break;
        case 'w':
            if (ctl_parse_i64("submit", "wait-ms", optarg, 1, INT32_MAX, &wait_ms) != 0)
                return 2;
            break;
        case 'B':
            if (ctl_parse_i64("submit", "batch", optarg, 1, SUBMIT_MAX_BATCH, &batch) != 0)
                return 2;
            break;
        case 'R':
            if (ctl_parse_rate("submit", optarg, &rate) != 0)
                return 2;
            break;
        case 'S':
            if (ctl_set("submit", optarg) != 0)
                return 2;
            break;
        case 'e':
            if (nhdr == SUBMIT_MAX_HEADERS || !strchr(optarg, '=')) {
                fprintf(stderr, "execmeshctl submit: --header %s: expected KEY=VALUE (at most %d)\n", optarg,
                        SUBMIT_MAX_HEADERS);
                return 2;
            }
            hdr_kv[nhdr++] = optarg;
            break;
        case 'h': return ctl_usage_exit(usage_submit, 1);
        default: return ctl_usage_exit(usage_submit, 0);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "execmeshctl submit: unexpected argument '%s' (submit --help)\n", argv[optind]);
        return 2;
    }
    em_tls_opts_t tls;
    const char *sec[EM_KAFKA_MAX_SECURITY];
    size_t nsec;
    if (ctl_tls("submit", &tls) != 0 || ctl_kafka_props("submit", sec, &nsec) != 0)
        return 2;
    ctl_reader_opts_t ro = {.bootstrap = bootstrap, .topic = topic, .sec = sec, .nsec = nsec,
                            .from = CTL_FROM_END, .timeout_ms = 10000};

    if (file) {
        if (handler || payload || payload_file || *id || nhdr || no_wait || timeout) {
            fprintf(stderr, "execmeshctl submit: --file takes the executions from the file: --handler, --payload, "
                            "--payload-file, --id, --header, --timeout-ms and --no-wait are for one execution\n");
            return 2;
        }
        if (wait_ms >= 0 && !wait) {
            fprintf(stderr, "execmeshctl submit: --wait-ms needs --wait with --file\n");
            return 2;
        }
        fsub_t f = {.file = file, .rate = rate, .batch = (size_t)batch, .quiet = quiet};
        if (rate > 0) { /* about ten calls a second, so the pace is even */
            double per = rate / 10.0;
            if (per < 1)
                per = 1;
            if ((double)f.batch > per)
                f.batch = (size_t)per;
        }
        if (strcmp(file, "-") == 0) {
            f.file = "(stdin)";
            f.in = stdin;
            if (strict) { /* two passes: keep a copy */
                FILE *tmp = tmpfile();
                size_t len;
                uint8_t *all = read_all(stdin, &len);
                if (!tmp || !all || fwrite(all, 1, len, tmp) != len) {
                    fprintf(stderr, "execmeshctl submit: cannot keep stdin for --strict\n");
                    free(all);
                    if (tmp)
                        fclose(tmp);
                    return 3;
                }
                free(all);
                rewind(tmp);
                f.in = tmp;
            }
        } else if (!(f.in = fopen(file, "r"))) {
            fprintf(stderr, "execmeshctl submit: --file %s: %s\n", file, strerror(errno));
            return 2;
        }
        char err[512];
        rc = 0;
        if (wait && !(f.reader = ctl_reader_new(&ro, err, sizeof(err)))) {
            fprintf(stderr, "execmeshctl submit: %s\n", err);
            rc = 3;
        }
        if (rc == 0)
            rc = ctl_sched_open("submit", target, &tls, &f.sched);
        if (rc == 0)
            rc = submit_file(&f, strict, no_progress, wait_ms >= 0 ? wait_ms : 300000);
        ctl_sched_close(&f.sched);
        ctl_reader_destroy(f.reader);
        idset_cleanup(&f.wait);
        if (f.in != stdin)
            fclose(f.in);
        return rc;
    }

    if (!handler) {
        fprintf(stderr, "execmeshctl submit: --handler (one execution) or --file (many) is required\n");
        usage_submit(stderr);
        return 2;
    }
    if (rate > 0 || strict || wait || batch != SUBMIT_DEFAULT_BATCH) {
        fprintf(stderr, "execmeshctl submit: --rate, --batch, --strict and --wait are for --file\n");
        return 2;
    }
    uint8_t *data = NULL;
    size_t len = 0;
    if (payload) {
        len = strlen(payload);
        data = (uint8_t *)strdup(payload);
    } else {
        FILE *f = payload_file ? fopen(payload_file, "rb") : stdin;
        if (!f) {
            fprintf(stderr, "execmeshctl submit: --payload-file %s: %s\n", payload_file, strerror(errno));
            return 2;
        }
        data = read_all(f, &len);
        if (payload_file)
            fclose(f);
    }
    if (!data) {
        fprintf(stderr, "execmeshctl submit: out of memory\n");
        return 3;
    }
    if (!*id)
        em_random_id(id);
    rc = submit_one(target, &tls, &ro, handler, data, len, id, timeout, hdr_kv, nhdr, no_wait,
                    wait_ms >= 0 ? wait_ms : 30000);
    free(data);
    return rc;
}

/* ---- cancel ------------------------------------------------------------- */

static void usage_cancel(FILE *out) {
    fprintf(out, "Usage: execmeshctl cancel [--target TARGET] [--set tls.KEY=VALUE]... ID [ID...]\n"
                 "Cancels executions by id (Scheduler.Cancel): each ends with one CANCELLED result and does not\n"
                 "run again. Prints the ids once every cancel is durable in Kafka. --target: schedulers\n"
                 "(default ipv4:127.0.0.1:7100).\n" CTL_TLS_SET_HELP);
}

int ctl_cancel(int argc, char **argv) {
    static const struct option opts[] = {{"target", required_argument, NULL, 't'},
                                         {"set", required_argument, NULL, 'S'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *target = "ipv4:127.0.0.1:7100";
    int c;
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case 't': target = optarg; break;
        case 'S':
            if (ctl_set("cancel", optarg) != 0)
                return 2;
            break;
        case 'h': return ctl_usage_exit(usage_cancel, 1);
        default: return ctl_usage_exit(usage_cancel, 0);
        }
    }
    em_tls_opts_t tls;
    if (ctl_tls("cancel", &tls) != 0)
        return 2;
    if (optind >= argc) {
        fprintf(stderr, "execmeshctl cancel: name at least one execution id (cancel --help)\n");
        return 2;
    }
    ctl_sched_t s;
    int rc = ctl_sched_open("cancel", target, &tls, &s);
    if (rc != 0)
        return rc;
    Execmesh__V1__CancelRequest req = EXECMESH__V1__CANCEL_REQUEST__INIT;
    req.n_ids = (size_t)(argc - optind);
    req.ids = argv + optind;
    ctl_call_t call;
    grpc_status_code code = ctl_call(s.ch, s.cancel, &req.base, 10000, &call);
    if (code != GRPC_STATUS_OK) {
        fprintf(stderr, "execmeshctl cancel: Cancel failed: %s: %s\n", em_rpc_status_name(code), call.details);
        rc = 3;
    } else {
        Execmesh__V1__CancelResponse *resp = execmesh__v1__cancel_response__unpack(NULL, call.len, call.resp);
        for (size_t i = 0; resp && i < resp->n_ids; i++)
            printf("cancelled %s\n", resp->ids[i]);
        if (resp)
            execmesh__v1__cancel_response__free_unpacked(resp, NULL);
    }
    ctl_call_cleanup(&call);
    ctl_sched_close(&s);
    return rc;
}
