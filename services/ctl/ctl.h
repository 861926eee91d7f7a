/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What execmeshctl's command files share: the commands main.c dispatches
 * to, and the small blocking clients they are built from (an HTTP/1.0 GET
 * for a replica's /metrics and a reader of the Prometheus text format).
 * Everything here runs on the command's one thread.
 */
#ifndef EM_CTL_H
#define EM_CTL_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"
#include "em_kafka.h"

/* --set KEY=VALUE of the services' Kafka security keys (kafka.security.protocol,
 * kafka.ssl.*, kafka.sasl.*: for the commands that read Kafka, submit and
 * status) and TLS keys (tls.*: for the gRPC commands, submit, cancel and
 * health). ctl_set takes one assignment: 0, or 2 after printing why (cmd
 * names the command). ctl_kafka_props checks the Kafka ones (2 after
 * printing the refusal, naming the key and the file) and fills props, for
 * em_kafka_conf_new's extra, and *n: 0. */
int ctl_set(const char *cmd, const char *assignment);
int ctl_kafka_props(const char *cmd, const char *props[EM_KAFKA_MAX_SECURITY], size_t *n);
#define CTL_KAFKA_SET_HELP                                                                                  \
    "  --set KEY=VALUE Kafka security, the services' keys: kafka.security.protocol, kafka.ssl.ca_file,\n"   \
    "                  kafka.ssl.cert_file, kafka.ssl.key_file, kafka.sasl.mechanism, kafka.sasl.username,\n" \
    "                  kafka.sasl.password_file (docs/security.md)\n"
#define CTL_TLS_SET_HELP                                                                                    \
    "  --set tls.KEY=VALUE  mutual TLS to the services, their keys: tls.cert_file, tls.key_file,\n"         \
    "                  tls.ca_file (all three), tls.server_name (the name the servers' certificates carry)\n"

/* execmeshctl status ARGS... (argv[0] is "status"): the consumer group's
 * partitions, their owners and lag. Returns the process exit code: 0 the
 * report was printed, 2 usage error, 3 Kafka unreachable, the topic
 * missing, or the offsets unanswered. */
int ctl_status(int argc, char **argv);

/* GETs http://hostport/path with HTTP/1.0 and returns the body of a 200
 * answer in *body (NUL-terminated, malloc'd: the caller frees it; *len
 * bytes without the NUL). Every step (name lookup excepted: the resolver's
 * own timeout and attempts bound it), connect, send and each read, waits
 * at most until timeout_ms after the call began. On error *body is NULL,
 * errstr says what failed (cannot connect, timed out, HTTP 404, ...) and
 * the result is EM_EUNAVAIL (nothing answered), EM_ETIMEDOUT or EM_EIO (an
 * answer that is not a 200 with a body). */
em_err_t ctl_http_get(const char *hostport, const char *path, int timeout_ms, char **body, size_t *len,
                      char *errstr, size_t errstr_size);

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

#endif
