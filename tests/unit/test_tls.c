/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_tls's checks, table-driven: the three files all set or
 * all empty, each a readable PEM of the kind expected, and the setting at
 * fault named; a target of several addresses needs tls.server_name; with
 * none, plaintext credentials. (Handshakes, refusals and
 * rotation are proven with real processes: tests/integration/test_tls.py.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "em_tls.h"
#include "unit_file.h"

static char dir[] = "/tmp/em-test-tls-XXXXXX";
static char cert[300], key[300], junk[300], missing[300];

static int setup(void **state) {
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(junk, sizeof(junk), "%s/junk.txt", dir);
    snprintf(missing, sizeof(missing), "%s/missing.pem", dir);
    unit_write_file(cert, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    unit_write_file(key, "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n");
    unit_write_file(junk, "not a certificate\n");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(cert);
    unlink(key);
    unlink(junk);
    rmdir(dir);
    return 0;
}

typedef struct check_case {
    const char *what;
    const char *cert, *key, *ca;
    int rc;
    const char *key_at_fault; /* when rc != 0 */
    const char *in_err;       /* a part of the message */
} check_case_t;

static void test_check_table(void **state) {
    (void)state;
    const check_case_t cases[] = {
        {"none: plaintext", "", "", "", 0, NULL, NULL},
        {"NULLs: plaintext", NULL, NULL, NULL, 0, NULL, NULL},
        {"all three", cert, key, cert, 0, NULL, NULL},
        {"cert alone", cert, "", "", -1, "tls.key_file", "missing: tls.key_file tls.ca_file"},
        {"no CA", cert, key, "", -1, "tls.ca_file", "missing: tls.ca_file"},
        {"CA alone", "", "", cert, -1, "tls.cert_file", "missing: tls.cert_file tls.key_file"},
        {"cert not PEM", junk, key, cert, -1, "tls.cert_file", "holds no PEM CERTIFICATE"},
        {"key is a certificate", cert, cert, cert, -1, "tls.key_file", "holds no PEM PRIVATE KEY"},
        {"CA is a key", cert, key, key, -1, "tls.ca_file", "holds no PEM CERTIFICATE"},
        {"CA missing", cert, key, missing, -1, "tls.ca_file", "cannot read"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const check_case_t *c = &cases[i];
        em_tls_opts_t o = {c->cert, c->key, c->ca, 5, ""};
        const char *at = "(none)";
        char err[512] = "";
        int rc = em_tls_check(&o, &at, err, sizeof(err));
        if (rc != c->rc)
            fail_msg("%s: rc %d, want %d (%s)", c->what, rc, c->rc, err);
        if (rc == 0)
            continue;
        if (strcmp(at, c->key_at_fault) != 0)
            fail_msg("%s: names %s, want %s", c->what, at, c->key_at_fault);
        if (!strstr(err, c->in_err))
            fail_msg("%s: '%s' does not say '%s'", c->what, err, c->in_err);
    }
}

static void test_on(void **state) {
    (void)state;
    em_tls_opts_t none = {"", "", "", 5, ""}, on = {cert, key, cert, 5, ""};
    assert_false(em_tls_on(NULL));
    assert_false(em_tls_on(&none));
    assert_true(em_tls_on(&on));
}

/* A target of several addresses names no host to check: TLS then needs tls.server_name. */
static void test_check_target(void **state) {
    (void)state;
    em_tls_opts_t plain = {"", "", "", 5, ""}, on = {cert, key, cert, 5, ""}, named = {cert, key, cert, 5, "localhost"};
    char err[512] = "";
    assert_int_equal(em_tls_check_target(&plain, "ipv4:127.0.0.1:1,127.0.0.1:2", err, sizeof(err)), 0);
    assert_int_equal(em_tls_check_target(&on, "ipv4:127.0.0.1:1", err, sizeof(err)), 0);
    assert_int_equal(em_tls_check_target(&on, "dns:///executor.mesh.test:7200", err, sizeof(err)), 0);
    assert_int_equal(em_tls_check_target(&named, "ipv4:127.0.0.1:1,127.0.0.1:2", err, sizeof(err)), 0);
    assert_int_equal(em_tls_check_target(&on, "ipv4:127.0.0.1:1,127.0.0.1:2", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "set tls.server_name"));
    assert_int_equal(em_tls_check_target(&on, "ipv6:[::1]:1,[::1]:2", err, sizeof(err)), -1);
}

static void test_plaintext_credentials_without_files(void **state) {
    (void)state;
    grpc_init();
    em_tls_opts_t none = {NULL, NULL, NULL, 5, NULL};
    char err[256] = "";
    grpc_server_credentials *s = em_tls_server_credentials(&none, err, sizeof(err));
    grpc_channel_credentials *c = em_tls_channel_credentials(&none, err, sizeof(err));
    assert_non_null(s);
    assert_non_null(c);
    grpc_server_credentials_release(s);
    grpc_channel_credentials_release(c);
    grpc_shutdown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_table),
        cmocka_unit_test(test_on),
        cmocka_unit_test(test_check_target),
        cmocka_unit_test(test_plaintext_credentials_without_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
