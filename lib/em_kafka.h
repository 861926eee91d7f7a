/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the producer and consumer modules share: building a librdkafka
 * configuration (bootstrap, client id, logs bridged into em_log, the
 * security settings and extra "key=value" properties from the service's
 * config file), and turning librdkafka error codes into the project's error
 * enum.
 *
 * Security: the keys of EM_KAFKA_SECURITY_SETTINGS (kafka.security.protocol,
 * kafka.ssl.*, kafka.sasl.*) are the one way to TLS and SASL/SCRAM;
 * em_kafka_security_props is the one mapping from them to librdkafka
 * properties, used by every client the services and execmeshctl make
 * (through em_kafka_extra_from_config, or directly). The SASL password lives
 * in a file (kafka.sasl.password_file), read when a configuration is built,
 * never in a config file or on a command line. See docs/security.md.
 */
#ifndef EM_KAFKA_H
#define EM_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "em_error.h"

/* The most "key=value" strings kafka.properties may hold. */
#define EM_KAFKA_MAX_PROPERTIES 64
/* The most properties the security settings stand for. */
#define EM_KAFKA_MAX_SECURITY 8
/* The most "key=value" extra properties of a client: the security settings'
 * and kafka.properties. */
#define EM_KAFKA_MAX_EXTRA (EM_KAFKA_MAX_SECURITY + EM_KAFKA_MAX_PROPERTIES)

/* The security settings, part of EM_KAFKA_SETTINGS (em_producer.h) and of
 * execmeshctl's --set. Checked by em_kafka_security_check. */
#define EM_KAFKA_SECURITY_SETTINGS                                                                                  \
    {"kafka.security.protocol", EM_CFG_STR, "plaintext", 1, 32,                                                      \
     "How the clients reach the brokers: plaintext, ssl (TLS), sasl_plaintext (SASL without TLS) or sasl_ssl "      \
     "(SASL over TLS). The kafka.ssl.* keys need ssl or sasl_ssl, the kafka.sasl.* keys sasl_plaintext or "          \
     "sasl_ssl."},                                                                                                   \
    {"kafka.ssl.ca_file", EM_CFG_STR, "", 0, 4095,                                                                   \
     "PEM file of the CA certificates that verify the brokers' certificates (whose names must match the "            \
     "bootstrap and advertised hosts); empty: the system's CAs. ssl and sasl_ssl only."},                            \
    {"kafka.ssl.cert_file", EM_CFG_STR, "", 0, 4095,                                                                 \
     "PEM file of a client certificate to present to the brokers (with kafka.ssl.key_file); empty: none. "           \
     "ssl and sasl_ssl only."},                                                                                      \
    {"kafka.ssl.key_file", EM_CFG_STR, "", 0, 4095,                                                                  \
     "PEM file of the unencrypted private key of kafka.ssl.cert_file (both or neither)."},                           \
    {"kafka.sasl.mechanism", EM_CFG_STR, "", 0, 32,                                                                  \
     "SCRAM-SHA-256 or SCRAM-SHA-512; required with sasl_plaintext and sasl_ssl, refused otherwise."},               \
    {"kafka.sasl.username", EM_CFG_STR, "", 0, 255, "The SASL/SCRAM user; required with kafka.sasl.mechanism."},     \
    {"kafka.sasl.password_file", EM_CFG_STR, "", 0, 4095,                                                            \
     "File holding the SASL/SCRAM password alone on one line (a final newline is dropped), read whenever a "        \
     "Kafka client is made; required with kafka.sasl.mechanism, refused at start when missing, unreadable or "       \
     "empty. The password is never a config value."}

/* One librdkafka property. */
typedef struct em_kafka_prop {
    const char *key;
    const char *value;
} em_kafka_prop_t;

/* A configuration with bootstrap.servers, client.id and the log bridge set,
 * then the tuned defaults in props (n of them), then the operator's extra
 * "key=value" strings (nextra of them, applied last so they win). NULL with
 * errstr naming the bad property on error. */
rd_kafka_conf_t *em_kafka_conf_new(const char *bootstrap, const char *client_id, const em_kafka_prop_t *props,
                                   size_t n, const char *const *extra, size_t nextra, char *errstr,
                                   size_t errstr_size);

/* Fills extra with the properties the security settings of cfg stand for
 * (em_kafka_security_props), then the "kafka.properties" strings of cfg (at
 * most EM_KAFKA_MAX_PROPERTIES, borrowed from cfg), and returns how many. */
struct em_config;
size_t em_kafka_extra_from_config(const struct em_config *cfg, const char *extra[EM_KAFKA_MAX_EXTRA]);

/* THE mapping from the security settings of cfg (a config whose table has
 * EM_KAFKA_SECURITY_SETTINGS) to librdkafka properties, as "key=value"
 * strings for em_kafka_conf_new's extra: security.protocol, and as set
 * ssl.ca.location, ssl.certificate.location, ssl.key.location,
 * sasl.mechanism, sasl.username. The password is not among them: the
 * pseudo-property "execmesh.sasl.password_file=FILE" is, which
 * em_kafka_conf_new turns into sasl.password by reading FILE. The strings
 * stay valid for the life of the process (a pool of this module). Returns
 * how many (at most EM_KAFKA_MAX_SECURITY). Assumes em_kafka_security_check
 * passed (values it would refuse are passed on as they are). Any thread. */
size_t em_kafka_security_props(const struct em_config *cfg, const char *props[EM_KAFKA_MAX_SECURITY]);

/* Refuses security settings that cannot work: an unknown protocol or
 * mechanism; kafka.ssl.* without TLS or kafka.sasl.* without SASL; SASL
 * without mechanism, user or password file; a client certificate without
 * its key (or the reverse); a named file missing, unreadable or empty (the
 * password file also when it holds more than one line or over 1024 bytes).
 * 0, or -1 with *key the key to blame and errstr the reason (which names the
 * file when there is one). */
int em_kafka_security_check(const struct em_config *cfg, const char **key, char *errstr, size_t errstr_size);

/* For a service's validate hook (cfg has EM_KAFKA_SETTINGS): the security
 * check, then kafka.properties refused when it holds what a key sets
 * (sasl.password always; sasl.mechanism(s), sasl.username, ssl.ca.location,
 * ssl.certificate.location, ssl.key.location; security.protocol unless it
 * agrees with kafka.security.protocol; message.max.bytes, which
 * kafka.max_message_bytes sets and every size limit derives from). -1 after printing "PROGRAM: config
 * refused: SOURCE: key 'K': REASON" on stderr. */
int em_kafka_check_config(const struct em_config *cfg, const char *program);


/* Connects a throwaway client made from a copy of conf (of type type) when
 * conf's security.protocol is not plaintext, and refuses what no retry can
 * mend: the brokers refusing the SASL credentials, a TLS handshake that
 * fails the certificate checks, or a TLS client meeting a plaintext listener
 * (librdkafka's hint). Returns 0 once a broker answered metadata,
 * also when it cannot tell within timeout_ms or every broker is down (the
 * caller's own retries and health reporting take over); -1 with errstr
 * naming the failure, the user and the bootstrap servers. For start-up:
 * blocks up to timeout_ms. */
#define EM_KAFKA_PREFLIGHT_MS 5000
int em_kafka_preflight(const rd_kafka_conf_t *conf, rd_kafka_type_t type, int timeout_ms, char *errstr,
                       size_t errstr_size);

em_err_t em_kafka_err(rd_kafka_resp_err_t err);

/* Is err one Kafka may clear by itself (broker down, timeouts, rebalance)? */
int em_kafka_err_retriable(rd_kafka_resp_err_t err);

/* The version of the librdkafka loaded at run time ("2.8.0"), for
 * --version: the dynamic loader, not the headers, decides which copy runs.
 * A static string; never NULL. Any thread. */
const char *em_kafka_version(void);

#endif
