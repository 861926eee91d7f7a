/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_kafka's security settings: the one mapping from the
 * kafka.security/ssl/sasl keys to librdkafka properties (checked on the
 * configuration librdkafka ends up with, the password read from its file),
 * the refusals table-driven with the key at fault and the file named,
 * kafka.properties refused where a key owns the property, and the start-up
 * check's quick answers (plaintext; every broker down). The handshakes with
 * a real SASL_SSL broker are proven by tests/integration/test_kafka_scram.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "em_config.h"
#include "em_kafka.h"
#include "em_producer.h"
#include "em_util.h"
#include "unit_file.h"

static char dir[] = "/tmp/em-test-kafka-XXXXXX";
static char ca[300], cert[300], keyf[300], pw[300], pw_crlf[300], pw_empty[300], pw_nl[300], pw_two[300],
    pw_big[300], missing[300];

static int setup(void **state) {
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    struct {
        char *path;
        const char *name, *text;
    } files[] = {{ca, "ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
                 {cert, "cert.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
                 {keyf, "key.pem", "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n"},
                 {pw, "password", "s3cret-Pass\n"},
                 {pw_crlf, "password-crlf", "crlf-pass\r\n"},
                 {pw_empty, "password-empty", ""},
                 {pw_nl, "password-newline", "\n"},
                 {pw_two, "password-two-lines", "one\ntwo\n"},
                 {pw_big, "password-big", NULL},
                 {missing, "missing", NULL}};
    for (size_t i = 0; i < EM_ARRAY_LEN(files); i++) {
        snprintf(files[i].path, 300, "%s/%s", dir, files[i].name);
        if (files[i].text)
            unit_write_file(files[i].path, files[i].text);
    }
    char big[1100];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    unit_write_file(pw_big, big);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    const char *all[] = {ca, cert, keyf, pw, pw_crlf, pw_empty, pw_nl, pw_two, pw_big};
    for (size_t i = 0; i < EM_ARRAY_LEN(all); i++)
        unlink(all[i]);
    rmdir(dir);
    return 0;
}

static const em_setting_t table[] = {EM_KAFKA_SETTINGS};

/* A config of the Kafka settings with the assignments (NULL-terminated;
 * "%s" in one stands for arg). */
static em_config_t *cfg_with(const char *const *sets) {
    char err[512];
    em_config_t *cfg = em_config_new("test", table, EM_ARRAY_LEN(table), err, sizeof(err));
    assert_non_null(cfg);
    for (size_t i = 0; sets && sets[i]; i++) {
        if (em_config_set(cfg, sets[i], err, sizeof(err)) != EM_OK)
            fail_msg("set %s: %s", sets[i], err);
    }
    return cfg;
}

/* Sets "key=path" (paths are only known at run time). */
static void set2(em_config_t *cfg, const char *k, const char *v) {
    char a[600], err[512];
    snprintf(a, sizeof(a), "%s=%s", k, v);
    if (em_config_set(cfg, a, err, sizeof(err)) != EM_OK)
        fail_msg("set %s: %s", a, err);
}

static void assert_prop(rd_kafka_conf_t *conf, const char *k, const char *want) {
    char v[1024];
    size_t n = sizeof(v);
    assert_int_equal(rd_kafka_conf_get(conf, k, v, &n), RD_KAFKA_CONF_OK);
    if (strcasecmp(v, want) != 0)
        fail_msg("%s = '%s', want '%s'", k, v, want);
}

static void test_plaintext_is_the_default(void **state) {
    (void)state;
    em_config_t *cfg = cfg_with(NULL);
    const char *props[EM_KAFKA_MAX_SECURITY];
    size_t n = em_kafka_security_props(cfg, props);
    assert_int_equal(n, 1);
    assert_string_equal(props[0], "security.protocol=PLAINTEXT");
    const char *key = NULL;
    char err[512];
    assert_int_equal(em_kafka_security_check(cfg, &key, err, sizeof(err)), 0);
    em_config_destroy(cfg);
}

/* sasl_ssl with every key: the strings, and the configuration librdkafka gets */
static void test_sasl_ssl_mapping(void **state) {
    (void)state;
    static const char *const sets[] = {"kafka.security.protocol=SASL_SSL", "kafka.sasl.mechanism=scram-sha-512",
                                       "kafka.sasl.username=execmesh", NULL};
    em_config_t *cfg = cfg_with(sets);
    set2(cfg, "kafka.ssl.ca_file", ca);
    set2(cfg, "kafka.ssl.cert_file", cert);
    set2(cfg, "kafka.ssl.key_file", keyf);
    set2(cfg, "kafka.sasl.password_file", pw);
    const char *key_at_fault = NULL;
    char err[512];
    assert_int_equal(em_kafka_security_check(cfg, &key_at_fault, err, sizeof(err)), 0);

    const char *props[EM_KAFKA_MAX_SECURITY];
    size_t n = em_kafka_security_props(cfg, props);
    char want[7][400];
    snprintf(want[0], sizeof(want[0]), "security.protocol=SASL_SSL");
    snprintf(want[1], sizeof(want[1]), "ssl.ca.location=%s", ca);
    snprintf(want[2], sizeof(want[2]), "ssl.certificate.location=%s", cert);
    snprintf(want[3], sizeof(want[3]), "ssl.key.location=%s", keyf);
    snprintf(want[4], sizeof(want[4]), "sasl.mechanism=SCRAM-SHA-512");
    snprintf(want[5], sizeof(want[5]), "sasl.username=execmesh");
    snprintf(want[6], sizeof(want[6]), "execmesh.sasl.password_file=%s", pw);
    assert_int_equal(n, 7);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(props[i], want[i]);
    for (size_t i = 0; i < n; i++) /* the password is not among the strings */
        assert_null(strstr(props[i], "s3cret"));
    /* the same strings again: the pool hands out one copy */
    const char *again[EM_KAFKA_MAX_SECURITY];
    assert_int_equal(em_kafka_security_props(cfg, again), n);
    for (size_t i = 0; i < n; i++)
        assert_ptr_equal(again[i], props[i]);

    /* ssl.*.location would make librdkafka read the (fake) PEMs at rd_kafka_new, not at conf_set */
    rd_kafka_conf_t *conf = em_kafka_conf_new("127.0.0.1:1", "t", NULL, 0, props, n, err, sizeof(err));
    if (!conf)
        fail_msg("conf: %s", err);
    assert_prop(conf, "security.protocol", "sasl_ssl");
    assert_prop(conf, "sasl.mechanisms", "SCRAM-SHA-512");
    assert_prop(conf, "sasl.username", "execmesh");
    assert_prop(conf, "sasl.password", "s3cret-Pass");
    assert_prop(conf, "ssl.ca.location", ca);
    assert_prop(conf, "ssl.certificate.location", cert);
    assert_prop(conf, "ssl.key.location", keyf);
    rd_kafka_conf_destroy(conf);
    em_config_destroy(cfg);
}

/* the security properties first, then kafka.properties (which win) */
static void test_extra_from_config(void **state) {
    (void)state;
    static const char *const sets[] = {"kafka.security.protocol=ssl", "kafka.properties=linger.ms=7,log_level=3",
                                       NULL};
    em_config_t *cfg = cfg_with(sets);
    set2(cfg, "kafka.ssl.ca_file", ca);
    const char *extra[EM_KAFKA_MAX_EXTRA];
    size_t n = em_kafka_extra_from_config(cfg, extra);
    assert_int_equal(n, 4);
    assert_string_equal(extra[0], "security.protocol=SSL");
    assert_true(strncmp(extra[1], "ssl.ca.location=", 16) == 0);
    assert_string_equal(extra[2], "linger.ms=7");
    assert_string_equal(extra[3], "log_level=3");
    em_config_destroy(cfg);
}

/* a CRLF line end is dropped too; sasl_plaintext takes SCRAM-SHA-256 */
static void test_password_crlf_and_sha256(void **state) {
    (void)state;
    static const char *const sets[] = {"kafka.security.protocol=sasl_plaintext", "kafka.sasl.mechanism=SCRAM-SHA-256",
                                       "kafka.sasl.username=u", NULL};
    em_config_t *cfg = cfg_with(sets);
    set2(cfg, "kafka.sasl.password_file", pw_crlf);
    const char *key = NULL;
    char err[512];
    assert_int_equal(em_kafka_security_check(cfg, &key, err, sizeof(err)), 0);
    const char *props[EM_KAFKA_MAX_SECURITY];
    size_t n = em_kafka_security_props(cfg, props);
    rd_kafka_conf_t *conf = em_kafka_conf_new("127.0.0.1:1", "t", NULL, 0, props, n, err, sizeof(err));
    assert_non_null(conf);
    assert_prop(conf, "security.protocol", "sasl_plaintext");
    assert_prop(conf, "sasl.mechanisms", "SCRAM-SHA-256");
    assert_prop(conf, "sasl.password", "crlf-pass");
    rd_kafka_conf_destroy(conf);
    em_config_destroy(cfg);
}

/* the password file read when the configuration is built: gone by then, refused naming the key and file */
static void test_password_file_gone_at_conf_time(void **state) {
    (void)state;
    char extra[400], err[512];
    snprintf(extra, sizeof(extra), "execmesh.sasl.password_file=%s", missing);
    const char *props[] = {"security.protocol=SASL_SSL", "sasl.mechanism=SCRAM-SHA-512", "sasl.username=u", extra};
    rd_kafka_conf_t *conf =
        em_kafka_conf_new("127.0.0.1:1", "t", NULL, 0, props, EM_ARRAY_LEN(props), err, sizeof(err));
    assert_null(conf);
    assert_non_null(strstr(err, "kafka.sasl.password_file"));
    assert_non_null(strstr(err, missing));
}

typedef struct check_case {
    const char *what;
    const char *sets[5];       /* NULL-terminated */
    const char *files[2][2];   /* {key, path} pairs set after sets ({NULL} ends) */
    const char *key_at_fault;  /* NULL: accepted */
    const char *reason_has[2]; /* substrings of the reason */
} check_case_t;

static void test_check_table(void **state) {
    (void)state;
    const check_case_t cases[] = {
        {"an unknown protocol", {"kafka.security.protocol=tls", NULL}, {{NULL}}, "kafka.security.protocol",
         {"'tls'", "sasl_ssl"}},
        {"a mechanism without a sasl protocol", {"kafka.sasl.mechanism=SCRAM-SHA-512", NULL}, {{NULL}},
         "kafka.sasl.mechanism", {"plaintext (no SASL)", "sasl_ssl"}},
        {"a user with ssl only", {"kafka.security.protocol=ssl", "kafka.sasl.username=u", NULL}, {{NULL}},
         "kafka.sasl.username", {"ssl (no SASL)", NULL}},
        {"a CA file without TLS", {"kafka.security.protocol=sasl_plaintext", NULL}, {{"kafka.ssl.ca_file", ca}},
         "kafka.ssl.ca_file", {"sasl_plaintext (no TLS)", NULL}},
        {"sasl_ssl without a mechanism", {"kafka.security.protocol=sasl_ssl", NULL}, {{NULL}}, "kafka.sasl.mechanism",
         {"required", "SCRAM-SHA-256 or SCRAM-SHA-512"}},
        {"an unsupported mechanism", {"kafka.security.protocol=sasl_ssl", "kafka.sasl.mechanism=PLAIN", NULL},
         {{NULL}}, "kafka.sasl.mechanism", {"'PLAIN'", NULL}},
        {"no user", {"kafka.security.protocol=sasl_ssl", "kafka.sasl.mechanism=SCRAM-SHA-512", NULL}, {{NULL}},
         "kafka.sasl.username", {"required", NULL}},
        {"no password file",
         {"kafka.security.protocol=sasl_ssl", "kafka.sasl.mechanism=SCRAM-SHA-512", "kafka.sasl.username=u", NULL},
         {{NULL}}, "kafka.sasl.password_file", {"required", NULL}},
        {"a missing password file",
         {"kafka.security.protocol=sasl_ssl", "kafka.sasl.mechanism=SCRAM-SHA-512", "kafka.sasl.username=u", NULL},
         {{"kafka.sasl.password_file", missing}}, "kafka.sasl.password_file", {"cannot read", missing}},
        {"an empty password file",
         {"kafka.security.protocol=sasl_ssl", "kafka.sasl.mechanism=SCRAM-SHA-512", "kafka.sasl.username=u", NULL},
         {{"kafka.sasl.password_file", pw_empty}}, "kafka.sasl.password_file", {"is empty", pw_empty}},
        {"a password file of one newline",
         {"kafka.security.protocol=sasl_ssl", "kafka.sasl.mechanism=SCRAM-SHA-512", "kafka.sasl.username=u", NULL},
         {{"kafka.sasl.password_file", pw_nl}}, "kafka.sasl.password_file", {"empty password", pw_nl}},
        {"a password file of two lines",
         {"kafka.security.protocol=sasl_ssl", "kafka.sasl.mechanism=SCRAM-SHA-512", "kafka.sasl.username=u", NULL},
         {{"kafka.sasl.password_file", pw_two}}, "kafka.sasl.password_file", {"more than one line", pw_two}},
        {"a big password file",
         {"kafka.security.protocol=sasl_ssl", "kafka.sasl.mechanism=SCRAM-SHA-512", "kafka.sasl.username=u", NULL},
         {{"kafka.sasl.password_file", pw_big}}, "kafka.sasl.password_file", {"more than 1024 bytes", NULL}},
        {"a directory as password file",
         {"kafka.security.protocol=sasl_ssl", "kafka.sasl.mechanism=SCRAM-SHA-512", "kafka.sasl.username=u", NULL},
         {{"kafka.sasl.password_file", dir}}, "kafka.sasl.password_file", {"not a regular file", NULL}},
        {"a missing CA file", {"kafka.security.protocol=ssl", NULL}, {{"kafka.ssl.ca_file", missing}},
         "kafka.ssl.ca_file", {"cannot read", missing}},
        {"an empty CA file", {"kafka.security.protocol=ssl", NULL}, {{"kafka.ssl.ca_file", pw_empty}},
         "kafka.ssl.ca_file", {"is empty", NULL}},
        {"a certificate without its key", {"kafka.security.protocol=ssl", NULL}, {{"kafka.ssl.cert_file", cert}},
         "kafka.ssl.key_file", {"needs its key", NULL}},
        {"a key without its certificate", {"kafka.security.protocol=ssl", NULL}, {{"kafka.ssl.key_file", keyf}},
         "kafka.ssl.cert_file", {"needs its certificate", NULL}},
        {"ssl with the system's CAs", {"kafka.security.protocol=ssl", NULL}, {{NULL}}, NULL, {NULL}},
        {"ssl with a client certificate", {"kafka.security.protocol=ssl", NULL},
         {{"kafka.ssl.cert_file", cert}, {"kafka.ssl.key_file", keyf}}, NULL, {NULL}},
        {"sasl_ssl complete",
         {"kafka.security.protocol=sasl_ssl", "kafka.sasl.mechanism=SCRAM-SHA-256", "kafka.sasl.username=u", NULL},
         {{"kafka.sasl.password_file", pw}, {"kafka.ssl.ca_file", ca}}, NULL, {NULL}},
    };
    for (size_t i = 0; i < EM_ARRAY_LEN(cases); i++) {
        const check_case_t *c = &cases[i];
        em_config_t *cfg = cfg_with(c->sets);
        for (size_t f = 0; f < 2 && c->files[f][0]; f++)
            set2(cfg, c->files[f][0], c->files[f][1]);
        const char *key = NULL;
        char err[800] = "";
        int rc = em_kafka_security_check(cfg, &key, err, sizeof(err));
        if (!c->key_at_fault) {
            if (rc != 0)
                fail_msg("%s: refused: key '%s': %s", c->what, key, err);
        } else {
            if (rc == 0)
                fail_msg("%s: accepted", c->what);
            if (strcmp(key, c->key_at_fault) != 0)
                fail_msg("%s: blames '%s', want '%s' (%s)", c->what, key, c->key_at_fault, err);
            for (size_t k = 0; k < 2 && c->reason_has[k]; k++)
                if (!strstr(err, c->reason_has[k]))
                    fail_msg("%s: reason '%s' lacks '%s'", c->what, err, c->reason_has[k]);
        }
        em_config_destroy(cfg);
    }
}

/* kafka.properties may not hold what a key sets (a service's validate hook) */
static void test_properties_owned_by_keys(void **state) {
    (void)state;
    const struct {
        const char *props; /* the --set value of kafka.properties */
        int rc;
    } cases[] = {
        {"kafka.properties=linger.ms=5", 0},
        {"kafka.properties=security.protocol=plaintext", 0}, /* agrees with the key: the deploy example */
        {"kafka.properties=security.protocol=SASL_SSL", -1},
        {"kafka.properties=sasl.password=hunter2", -1},
        {"kafka.properties=sasl.username=u", -1},
        {"kafka.properties=sasl.mechanisms=PLAIN", -1},
        {"kafka.properties=ssl.ca.location=/etc/ssl/ca.pem", -1},
        {"kafka.properties=ssl.key.location = /k.pem", -1},
        {"kafka.properties=ssl.endpoint.identification.algorithm=https", 0},
        {"kafka.properties=message.max.bytes=2000000", -1}, /* kafka.max_message_bytes sets it */
    };
    for (size_t i = 0; i < EM_ARRAY_LEN(cases); i++) {
        const char *sets[] = {cases[i].props, NULL};
        em_config_t *cfg = cfg_with(sets);
        int rc = em_kafka_check_config(cfg, "test_kafka");
        if (rc != cases[i].rc)
            fail_msg("%s: em_kafka_check_config = %d, want %d", cases[i].props, rc, cases[i].rc);
        em_config_destroy(cfg);
    }
    /* and the security check runs there too */
    const char *sets[] = {"kafka.sasl.username=u", NULL};
    em_config_t *cfg = cfg_with(sets);
    assert_int_equal(em_kafka_check_config(cfg, "test_kafka"), -1);
    em_config_destroy(cfg);
}

/* one key set: one property */
static void test_security_props_of_one_key(void **state) {
    (void)state;
    const char *sets[] = {"kafka.security.protocol=ssl", NULL};
    em_config_t *cfg = cfg_with(sets);
    const char *props[EM_KAFKA_MAX_SECURITY];
    assert_int_equal(em_kafka_security_props(cfg, props), 1);
    assert_string_equal(props[0], "security.protocol=SSL");
    em_config_destroy(cfg);
}

/* plaintext: nothing to check, no client made; every broker down: no answer to wait for */
static void test_preflight_quick_answers(void **state) {
    (void)state;
    char err[512] = "";
    const char *plain[] = {"log_level=0"};
    rd_kafka_conf_t *conf = em_kafka_conf_new("127.0.0.1:1", "t", NULL, 0, plain, 1, err, sizeof(err));
    assert_non_null(conf);
    int64_t t0 = em_mono_ms();
    assert_int_equal(em_kafka_preflight(conf, RD_KAFKA_PRODUCER, 5000, err, sizeof(err)), 0);
    assert_true(em_mono_ms() - t0 < 100);
    rd_kafka_conf_destroy(conf);

    char pwprop[400];
    snprintf(pwprop, sizeof(pwprop), "execmesh.sasl.password_file=%s", pw);
    const char *sasl[] = {"log_level=0", "security.protocol=SASL_PLAINTEXT", "sasl.mechanism=SCRAM-SHA-512",
                          "sasl.username=u", pwprop};
    conf = em_kafka_conf_new("127.0.0.1:1", "t", NULL, 0, sasl, EM_ARRAY_LEN(sasl), err, sizeof(err));
    assert_non_null(conf);
    t0 = em_mono_ms();
    assert_int_equal(em_kafka_preflight(conf, RD_KAFKA_CONSUMER, 5000, err, sizeof(err)), 0);
    assert_true(em_mono_ms() - t0 < 4000); /* connection refused: all brokers down well before the bound */
    rd_kafka_conf_destroy(conf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plaintext_is_the_default),
        cmocka_unit_test(test_sasl_ssl_mapping),
        cmocka_unit_test(test_extra_from_config),
        cmocka_unit_test(test_password_crlf_and_sha256),
        cmocka_unit_test(test_password_file_gone_at_conf_time),
        cmocka_unit_test(test_check_table),
        cmocka_unit_test(test_properties_owned_by_keys),
        cmocka_unit_test(test_security_props_of_one_key),
        cmocka_unit_test(test_preflight_quick_answers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
