/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What execmeshctl's command files share: the commands main.c dispatches
 * to (one file per command group: submit.c, results.c, health.c, admin.c,
 * dead.c, status.c) and the small blocking clients they are built from:
 * option helpers (opts.c), a blocking unary gRPC call (rpc.c), a reader of
 * a Kafka topic (kafka.c), an HTTP/1.0 client (http.c), a reader of the
 * Prometheus text format (scrape.c), JSON in and out (json.c) and the
 * progress line (progress.c). Everything here runs on the command's one
 * thread unless a comment says otherwise.
 */
#ifndef EM_CTL_H
#define EM_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "em_error.h"
#include "em_kafka.h"
#include "em_rpc_channel.h"
#include "execmesh/v1/execmesh.pb-c.h"

/* The exit codes of every command (main.c's header comment says the same). */
#define CTL_EXIT_OK 0    /* success: SUCCEEDED, all SERVING, done */
#define CTL_EXIT_NO 1    /* a negative answer: another status, NOT_SERVING, not found, lines refused */
#define CTL_EXIT_USAGE 2 /* the command line (or a file it names) is wrong */
#define CTL_EXIT_FAIL 3  /* unreachable, a call failed, timed out */

/* ---- opts.c: options shared by the commands ----------------------------- */

/* --set KEY=VALUE of the services' Kafka security keys (kafka.security.protocol,
 * kafka.ssl.*, kafka.sasl.*: for the commands that read Kafka) and TLS keys
 * (tls.*: for the gRPC commands). ctl_set takes one assignment: 0, or 2
 * after printing why (cmd names the command). ctl_kafka_props checks the
 * Kafka ones (2 after printing the refusal, naming the key and the file)
 * and fills props, for em_kafka_conf_new's extra, and *n: 0. ctl_tls fills
 * *t from the tls.* keys (zero: plaintext): 0, or 2 after printing why. */
int ctl_set(const char *cmd, const char *assignment);
int ctl_kafka_props(const char *cmd, const char *props[EM_KAFKA_MAX_SECURITY], size_t *n);
int ctl_tls(const char *cmd, em_tls_opts_t *t);
#define CTL_KAFKA_SET_HELP                                                                                  \
    "  --set KEY=VALUE Kafka security, the services' keys: kafka.security.protocol, kafka.ssl.ca_file,\n"   \
    "                  kafka.ssl.cert_file, kafka.ssl.key_file, kafka.sasl.mechanism, kafka.sasl.username,\n" \
    "                  kafka.sasl.password_file (docs/security.md)\n"
#define CTL_TLS_SET_HELP                                                                                    \
    "  --set tls.KEY=VALUE  mutual TLS to the services, their keys: tls.cert_file, tls.key_file,\n"         \
    "                  tls.ca_file (all three), tls.server_name (the name the servers' certificates carry)\n"

/* Parses arg, the value of option flag of command cmd, as an integer in
 * [min, max] into *out: 0, or 2 after printing "execmeshctl CMD: --FLAG ARG:
 * expected MIN..MAX". */
int ctl_parse_i64(const char *cmd, const char *flag, const char *arg, int64_t min, int64_t max, int64_t *out);

/* Parses a rate "N", "N/s" or "N/m" (executions per second or minute) into
 * per second (> 0): 0, or 2 after printing why. */
int ctl_parse_rate(const char *cmd, const char *arg, double *per_s);

/* Reads the admin token from path (one line; trailing white space cut) into
 * tok: 0, or 2 after printing why, naming the file. */
int ctl_read_token(const char *cmd, const char *path, char *tok, size_t cap);

/* The getopt_long loop's answer to an unknown option or --help, the same in
 * every command: prints usage to stdout (--help: returns 0) or stderr
 * (returns 2). */
int ctl_usage_exit(void (*usage)(FILE *out), int is_help);

/* ---- rpc.c: a blocking unary call over the async channel ---------------- */

typedef struct ctl_call {
    grpc_status_code code;
    char details[512];
    uint8_t *resp; /* malloc'd answer, NULL when empty */
    size_t len;
} ctl_call_t;

/* Channel options: probe = one attempt, fail fast, no health checking (to
 * ask one replica); else retries over the target's healthy replicas. */
void ctl_channel_opts(em_rpc_channel_opts_t *o, int probe, const em_tls_opts_t *tls);

/* Calls method (em_rpc_channel_method of ch: register each method once,
 * a channel holds a few) on ch with msg and waits for the answer (the
 * call's deadline, timeout_ms, bounds the wait). Fills *c (free it with
 * ctl_call_cleanup, also after a failure); returns c->code. */
grpc_status_code ctl_call(em_rpc_channel_t *ch, em_rpc_method_ref_t *method, const ProtobufCMessage *msg,
                          int64_t timeout_ms, ctl_call_t *c);
void ctl_call_cleanup(ctl_call_t *c);

/* A loop and a Scheduler channel to target: 0, or 2 after printing why
 * (naming --target). ctl_sched_close destroys both. */
typedef struct ctl_sched {
    em_rpc_loop_t *loop;
    em_rpc_channel_t *ch;
    em_rpc_method_ref_t *submit, *cancel; /* Scheduler.Submit and .Cancel */
} ctl_sched_t;
int ctl_sched_open(const char *cmd, const char *target, const em_tls_opts_t *tls, ctl_sched_t *s);
void ctl_sched_close(ctl_sched_t *s);

/* ---- json.c: JSON out and a small JSON-object reader -------------------- */

/* Writes s[0..n) as a JSON string (quoted, escaped). */
void ctl_json_str(FILE *out, const char *s, size_t n);
/* Writes bytes as "output":"..." when they are UTF-8, else as
 * "<name>_base64":"..." (name without quotes). */
void ctl_json_bytes(FILE *out, const char *name, const uint8_t *s, size_t n);
/* The name of a Status value ("SUCCEEDED"), "STATUS_<n>" for an unknown one
 * (a static buffer: valid until the next call). */
const char *ctl_status_name(int status);
/* The Status named name (case-insensitive), -1 when there is none. */
int ctl_status_parse(const char *name);

/* One Result as one JSON line: id, attempt, status, output (or
 * output_base64), error, exit_code, executor, run_ms, latency_ms, then final,
 * handler, submitted/dispatched/started/finished_unix_ms and headers.
 * latency_ms < 0: finished - submitted. */
void ctl_print_result(FILE *out, const Execmesh__V1__Result *r, int64_t latency_ms);

/* A JSON value read by ctl_json_parse_object: the members of one object, a
 * string (decoded: escapes resolved, may hold NUL bytes), an integer or an
 * object (for headers). */
typedef enum { CTL_JSON_STR, CTL_JSON_INT, CTL_JSON_OBJ, CTL_JSON_NULL, CTL_JSON_BOOL } ctl_json_kind_t;
typedef struct ctl_json_member ctl_json_member_t;
typedef struct ctl_json_obj {
    ctl_json_member_t *m;
    size_t n;
} ctl_json_obj_t;
struct ctl_json_member {
    char *key;
    ctl_json_kind_t kind;
    char *str; /* CTL_JSON_STR: malloc'd, NUL-terminated (len bytes before it) */
    size_t len;
    int64_t num;       /* CTL_JSON_INT, CTL_JSON_BOOL */
    ctl_json_obj_t obj; /* CTL_JSON_OBJ */
};
/* Parses text[0..n) as exactly one JSON object (white space around it
 * allowed) whose values are strings, integers, null, true, false or objects
 * of the same (nesting at most 4 deep; no arrays, no fractions). 0 with *o
 * filled (free it with ctl_json_free), or -1 with why (and the column,
 * 1-based) in errstr. */
int ctl_json_parse_object(const char *text, size_t n, ctl_json_obj_t *o, char *errstr, size_t errstr_size);
void ctl_json_free(ctl_json_obj_t *o);

/* Decodes standard base64 (padding optional, no white space): malloc'd
 * bytes in *out (*len), 0; -1 when s is not base64. */
int ctl_base64_decode(const char *s, size_t n, uint8_t **out, size_t *len);

/* ---- progress.c: the progress line of long work ------------------------- */

/* Written to stderr: when stderr is a terminal, one line rewritten in place
 * ("\r", at most 5 times a second): "WHAT done/total (pct%) rate/s ETA 1m05s";
 * else a plain line every 2 s and one at the end. total < 0: unknown (no
 * percentage, no ETA). */
typedef struct ctl_progress {
    const char *what;
    int64_t total;
    int64_t done;
    int64_t t0_ms, drawn_ms;
    int tty, shown, enabled;
} ctl_progress_t;
void ctl_progress_init(ctl_progress_t *p, const char *what, int64_t total, int enabled);
void ctl_progress_set(ctl_progress_t *p, int64_t done);
/* Clears an in-place line before other output goes to the terminal; the
 * next ctl_progress_set draws it again. */
void ctl_progress_clear(ctl_progress_t *p);
/* Draws the final state and ends the line. */
void ctl_progress_end(ctl_progress_t *p);

/* ---- kafka.c: reading a topic ------------------------------------------- */

typedef enum {
    CTL_FROM_END,       /* only records written from now on */
    CTL_FROM_BEGINNING, /* every record still on the topic (or since since_unix_ms) */
    CTL_FROM_COMMITTED, /* where group committed; the beginning where it never did */
} ctl_from_t;

typedef struct ctl_reader_opts {
    const char *bootstrap, *topic;
    const char *const *sec; /* ctl_kafka_props */
    size_t nsec;
    ctl_from_t from;
    const char *group;     /* CTL_FROM_COMMITTED: the consumer group (commits go there too) */
    int64_t since_unix_ms; /* CTL_FROM_BEGINNING: > 0 starts at the first record at or after it */
    const char *key;       /* non-NULL: read only the partition the key is produced to */
    size_t key_len;
    int timeout_ms; /* bounds each request of the set-up */
} ctl_reader_opts_t;

typedef struct ctl_reader ctl_reader_t;

/* A consumer assigned to the topic's partitions (never joining a group) at
 * the start o->from says. NULL with errstr set when Kafka does not answer
 * or the topic does not exist ("topic T does not exist"). */
ctl_reader_t *ctl_reader_new(const ctl_reader_opts_t *o, char *errstr, size_t errstr_size);
/* The next record (the caller destroys it with rd_kafka_message_destroy),
 * or NULL when none came within timeout_ms. End-of-partition events and
 * transient errors are consumed here. */
rd_kafka_message_t *ctl_reader_next(ctl_reader_t *r, int timeout_ms);
/* Has every partition been read up to the end offset it had when the
 * reader was made? */
int ctl_reader_caught_up(const ctl_reader_t *r);
/* Records between the start offsets and the end offsets at creation. */
int64_t ctl_reader_backlog(const ctl_reader_t *r);
/* Commits next_offset (the offset of the next record to read) of partition
 * to o->group, synchronously: EM_OK or EM_EIO with errstr set. */
em_err_t ctl_reader_commit(ctl_reader_t *r, const int64_t *next_offset_by_partition, char *errstr,
                           size_t errstr_size);
/* The next offset to read of partition (as far as the reader knows: it
 * moves past control records and gaps too), -1 when it does not read it. */
int64_t ctl_reader_position(const ctl_reader_t *r, int32_t partition);
/* The topic's partition count. */
int32_t ctl_reader_partitions(const ctl_reader_t *r);
void ctl_reader_destroy(ctl_reader_t *r);

/* The value of Kafka header name of m as a NUL-terminated copy in buf
 * (cut to cap - 1), 1; 0 when absent. */
int ctl_kafka_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t cap);

/* ---- http.c: HTTP/1.0 to a replica's metrics port ----------------------- */

/* Sends METHOD path to http://hostport with HTTP/1.0 (with "Authorization:
 * Bearer TOKEN" when token is non-NULL) and returns the answer's status in
 * *status and body in *body (NUL-terminated, malloc'd: the caller frees it;
 * *len bytes without the NUL). Every step (name lookup excepted: the
 * resolver's own timeout and attempts bound it), connect, send and each
 * read, waits at most until timeout_ms after the call began. EM_OK when an
 * HTTP answer came, whatever its status; else *body is NULL, errstr says
 * what failed (cannot connect, timed out, ...) and the result is
 * EM_EUNAVAIL (nothing answered), EM_ETIMEDOUT, EM_EINVAL (bad hostport)
 * or EM_EIO (not HTTP). */
em_err_t ctl_http_request(const char *hostport, const char *method, const char *path, const char *token,
                          int timeout_ms, int *status, char **body, size_t *len, char *errstr, size_t errstr_size);

/* ctl_http_request GET without a token, where only a 200 counts: else
 * EM_EIO with "HTTP 404 for GET /path" in errstr. */
em_err_t ctl_http_get(const char *hostport, const char *path, int timeout_ms, char **body, size_t *len,
                      char *errstr, size_t errstr_size);

/* ---- scrape.c: the Prometheus text format ------------------------------- */

/* One sample of the Prometheus text exposition format. name points into
 * the text (name_len bytes, not NUL-terminated); partition is the value of
 * the label partition="N", -1 without one. */
typedef struct ctl_prom_sample {
    const char *name;
    size_t name_len;
    int64_t partition;
    double value;
} ctl_prom_sample_t;

/* Reads the next sample from *cursor (which it advances) up to end,
 * skipping comments, blank and malformed lines. 1 with *s filled, 0 at the
 * end of the text. */
int ctl_prom_next(const char **cursor, const char *end, ctl_prom_sample_t *s);

/* Is s's name exactly name? */
int ctl_prom_is(const ctl_prom_sample_t *s, const char *name);

/* The value of the first sample named name in text, or def when none. */
double ctl_prom_value(const char *text, size_t len, const char *name, double def);

/* ---- the commands: ARGS... with argv[0] the command's name; each returns
 * the process exit code ------------------------------------------------- */

int ctl_status(int argc, char **argv);   /* status.c */
int ctl_submit(int argc, char **argv);   /* submit.c */
int ctl_cancel(int argc, char **argv);   /* submit.c */
int ctl_get(int argc, char **argv);      /* results.c */
int ctl_tail(int argc, char **argv);     /* results.c */
int ctl_trace(int argc, char **argv);    /* results.c */
int ctl_health(int argc, char **argv);   /* health.c */
int ctl_drain(int argc, char **argv);    /* admin.c */
int ctl_pause(int argc, char **argv);    /* admin.c: pause and resume (argv[0] says which) */
int ctl_dead(int argc, char **argv);     /* dead.c: dead list, dead replay */

#endif
