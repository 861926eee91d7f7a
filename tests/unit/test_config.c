/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_config: the defaults of a settings table, a good file,
 * every way a file or a --set can be refused (each refusal must name the
 * file, the line and the key, and must leave the config as it was), and
 * em_config_source. Config files are written with mkstemp under /tmp and
 * removed by the test that wrote them.
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

#include "em_config.h"
#include "em_util.h"

/* A table shaped like a service's: every type, a group two levels deep,
 * bounded and unbounded strings and lists. */
static const em_setting_t settings[] = {
    {"listen", EM_CFG_STR, "127.0.0.1:7000", 1, 64, "gRPC listen address."},
    {"workers", EM_CFG_INT, "4", 1, 64, "Worker threads."},
    {"verbose", EM_CFG_BOOL, "false", 0, 0, "Log at debug level."},
    {"name", EM_CFG_STR, "", 0, 0, "Free text, no length bound."},
    {"tags", EM_CFG_STRLIST, "a,b", 0, 3, "At most three tags."},
    {"kafka.bootstrap", EM_CFG_STR, "127.0.0.1:9092", 1, 256, "Brokers."},
    {"kafka.linger_ms", EM_CFG_INT, "5", 0, 1000, "Producer linger."},
    {"kafka.idempotent", EM_CFG_BOOL, "true", 0, 0, "Idempotent producer."},
    {"kafka.props", EM_CFG_STRLIST, "", 0, 0, "Extra librdkafka properties."},
    {"kafka.tls.enabled", EM_CFG_BOOL, "false", 0, 0, "TLS to the brokers."},
    {"kafka.tls.ca", EM_CFG_STR, "", 0, 0, "CA file."},
};

#define LONG65 "0123456789012345678901234567890123456789012345678901234567890123X"

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        const char *hay_ = (hay), *needle_ = (needle);                                             \
        if (!strstr(hay_, needle_))                                                                \
            fail_msg("expected \"%s\" in \"%s\"", needle_, hay_);                                  \
    } while (0)

static em_config_t *new_config(void) {
    char err[256] = "";
    em_config_t *cfg = em_config_new("unit", settings, EM_ARRAY_LEN(settings), err, sizeof(err));
    if (!cfg)
        fail_msg("em_config_new: %s", err);
    return cfg;
}

/* Writes text to a fresh /tmp file; path must hold 64 bytes. */
static void write_temp(char *path, const char *text) {
    snprintf(path, 64, "/tmp/em-unit-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), len);
    assert_int_equal(close(fd), 0);
}

/* Loads text through a temp file; the file is removed before returning. */
static em_err_t load_text(em_config_t *cfg, const char *text, char *path, char *err, size_t en) {
    write_temp(path, text);
    em_err_t rc = em_config_load_file(cfg, path, err, en);
    unlink(path);
    return rc;
}

/* Every value and every source of a equals that of b. */
static void assert_same_config(const em_config_t *a, const em_config_t *b) {
    for (size_t i = 0; i < EM_ARRAY_LEN(settings); i++) {
        const char *k = settings[i].key;
        switch (settings[i].type) {
        case EM_CFG_INT: assert_int_equal(em_config_int(a, k), em_config_int(b, k)); break;
        case EM_CFG_BOOL: assert_int_equal(em_config_bool(a, k), em_config_bool(b, k)); break;
        case EM_CFG_STR: assert_string_equal(em_config_str(a, k), em_config_str(b, k)); break;
        case EM_CFG_STRLIST:
            assert_int_equal(em_config_list_len(a, k), em_config_list_len(b, k));
            for (size_t j = 0; j < em_config_list_len(a, k); j++)
                assert_string_equal(em_config_list_get(a, k, j), em_config_list_get(b, k, j));
            break;
        }
        assert_string_equal(em_config_source(a, k), em_config_source(b, k));
    }
}

static void defaults_are_loaded(void **state) {
    (void)state;
    em_config_t *cfg = new_config();
    assert_string_equal(em_config_str(cfg, "listen"), "127.0.0.1:7000");
    assert_int_equal(em_config_int(cfg, "workers"), 4);
    assert_int_equal(em_config_bool(cfg, "verbose"), 0);
    assert_string_equal(em_config_str(cfg, "name"), "");
    assert_int_equal(em_config_list_len(cfg, "tags"), 2);
    assert_string_equal(em_config_list_get(cfg, "tags", 0), "a");
    assert_string_equal(em_config_list_get(cfg, "tags", 1), "b");
    assert_null(em_config_list_get(cfg, "tags", 2));
    assert_string_equal(em_config_str(cfg, "kafka.bootstrap"), "127.0.0.1:9092");
    assert_int_equal(em_config_int(cfg, "kafka.linger_ms"), 5);
    assert_int_equal(em_config_bool(cfg, "kafka.idempotent"), 1);
    assert_int_equal(em_config_list_len(cfg, "kafka.props"), 0);
    assert_null(em_config_list_get(cfg, "kafka.props", 0));
    assert_int_equal(em_config_bool(cfg, "kafka.tls.enabled"), 0);
    for (size_t i = 0; i < EM_ARRAY_LEN(settings); i++)
        assert_string_equal(em_config_source(cfg, settings[i].key), "default");
    em_config_destroy(cfg);
}

static void bad_table_is_refused(void **state) {
    (void)state;
    static const struct {
        const char *name;
        em_setting_t table[2];
        const char *frag[2];
    } rows[] = {
        {"default not an integer",
         {{"a", EM_CFG_INT, "1", 0, 9, "h"}, {"b", EM_CFG_INT, "many", 0, 9, "h"}},
         {"default: key 'b'", "expected integer, got 'many'"}},
        {"default out of range",
         {{"a", EM_CFG_INT, "10", 0, 9, "h"}, {"b", EM_CFG_INT, "1", 0, 9, "h"}},
         {"default: key 'a'", "above the maximum 9"}},
        {"default not a boolean",
         {{"a", EM_CFG_BOOL, "on", 0, 0, "h"}, {"b", EM_CFG_INT, "1", 0, 9, "h"}},
         {"default: key 'a'", "expected boolean"}},
        {"key twice",
         {{"a", EM_CFG_INT, "1", 0, 9, "h"}, {"a", EM_CFG_INT, "1", 0, 9, "h"}},
         {"key 'a'", "appears twice"}},
    };
    for (size_t i = 0; i < EM_ARRAY_LEN(rows); i++) {
        char err[256] = "";
        em_config_t *cfg = em_config_new("unit", rows[i].table, 2, err, sizeof(err));
        if (cfg) {
            em_config_destroy(cfg);
            fail_msg("%s: accepted", rows[i].name);
        }
        for (size_t j = 0; j < 2; j++)
            if (!strstr(err, rows[i].frag[j]))
                fail_msg("%s: \"%s\" not in \"%s\"", rows[i].name, rows[i].frag[j], err);
    }
}

static void good_file_is_loaded(void **state) {
    (void)state;
    static const char text[] = "# every setting, both list syntaxes\n"
                               "listen = \"0.0.0.0:7100\";\n"
                               "workers = 16;\n"
                               "verbose = true;\n"
                               "tags = [\"x\", \"y\", \"z\"];\n"
                               "kafka = {\n"
                               "  bootstrap = \"k1:9092,k2:9092\";\n"
                               "  linger_ms = 0x10;\n"
                               "  props = (\"acks=all\", \"batch.size=1\");\n"
                               "  tls = { enabled = true; ca = \"/etc/ca.pem\"; };\n"
                               "};\n";
    char path[64], err[512] = "", where[96];
    em_config_t *cfg = new_config();

    assert_int_equal(load_text(cfg, text, path, err, sizeof(err)), EM_OK);
    assert_string_equal(err, "");
    assert_string_equal(em_config_str(cfg, "listen"), "0.0.0.0:7100");
    assert_int_equal(em_config_int(cfg, "workers"), 16);
    assert_int_equal(em_config_bool(cfg, "verbose"), 1);
    assert_int_equal(em_config_list_len(cfg, "tags"), 3);
    assert_string_equal(em_config_list_get(cfg, "tags", 2), "z");
    assert_string_equal(em_config_str(cfg, "kafka.bootstrap"), "k1:9092,k2:9092");
    assert_int_equal(em_config_int(cfg, "kafka.linger_ms"), 16);
    assert_int_equal(em_config_list_len(cfg, "kafka.props"), 2);
    assert_string_equal(em_config_list_get(cfg, "kafka.props", 0), "acks=all");
    assert_string_equal(em_config_list_get(cfg, "kafka.props", 1), "batch.size=1");
    assert_int_equal(em_config_bool(cfg, "kafka.tls.enabled"), 1);
    assert_string_equal(em_config_str(cfg, "kafka.tls.ca"), "/etc/ca.pem");

    /* untouched keys keep their defaults */
    assert_string_equal(em_config_str(cfg, "name"), "");
    assert_int_equal(em_config_bool(cfg, "kafka.idempotent"), 1);

    static const struct {
        const char *key;
        int line;
    } src[] = {{"listen", 2}, {"workers", 3}, {"verbose", 4}, {"tags", 5}, {"kafka.bootstrap", 7},
               {"kafka.linger_ms", 8}, {"kafka.props", 9}, {"kafka.tls.enabled", 10}, {"kafka.tls.ca", 10}};
    for (size_t i = 0; i < EM_ARRAY_LEN(src); i++) {
        snprintf(where, sizeof(where), "%s:%d", path, src[i].line);
        assert_string_equal(em_config_source(cfg, src[i].key), where);
    }
    assert_string_equal(em_config_source(cfg, "name"), "default");
    assert_string_equal(em_config_source(cfg, "kafka.idempotent"), "default");
    em_config_destroy(cfg);
}

/* One refused file: its text, the line and key the error must name, and
 * the reason. Each row also proves the config was left as it was. */
typedef struct refusal {
    const char *name;
    const char *text;
    int line;
    const char *key;
    const char *reason;
} refusal_t;

static const refusal_t refusals[] = {
    {"string for int", "workers = \"four\";\n", 1, "workers", "expected integer, got string"},
    {"int for string", "verbose = true;\nlisten = 7000;\n", 2, "listen", "expected string, got integer"},
    {"bool for int", "workers = true;\n", 1, "workers", "expected integer, got boolean"},
    {"float for int", "workers = 2.5;\n", 1, "workers", "expected integer, got float"},
    {"string for bool", "verbose = \"yes\";\n", 1, "verbose", "expected boolean, got string"},
    {"string for list", "tags = \"a\";\n", 1, "tags", "expected list of strings, got string"},
    {"unknown key, top level", "workers = 2;\n\nnope = 1;\n", 3, "nope", "unknown key"},
    {"unknown key, in a group", "kafka = {\n  bootstrap = \"h:1\";\n  nope = 1;\n};\n", 3, "kafka.nope",
     "unknown key"},
    {"unknown key, two groups deep", "kafka = {\n  tls = {\n    nope = true;\n  };\n};\n", 3,
     "kafka.tls.nope", "unknown key"},
    {"unknown group", "nope = {\n  a = 1;\n};\n", 1, "nope", "unknown key"},
    {"group for a scalar", "workers = {\n  n = 4;\n};\n", 1, "workers", "expected integer, got group"},
    {"group for a list", "tags = { a = \"b\"; };\n", 1, "tags", "expected list of strings, got group"},
    {"scalar for a group", "listen = \"h:1\";\nkafka = 5;\n", 2, "kafka", "expected group, got integer"},
    {"scalar for a nested group", "kafka = {\n  tls = \"on\";\n};\n", 2, "kafka.tls",
     "expected group, got string"},
    {"below min", "workers = 0;\n", 1, "workers", "0 is below the minimum 1"},
    {"above max", "workers = 65;\n", 1, "workers", "65 is above the maximum 64"},
    {"negative below min", "kafka = { linger_ms = -1; };\n", 1, "kafka.linger_ms", "-1 is below the minimum 0"},
    {"64-bit above max", "kafka = {\n  linger_ms = 5000000000L;\n};\n", 2, "kafka.linger_ms",
     "5000000000 is above the maximum 1000"},
    {"string too short", "listen = \"\";\n", 1, "listen", "length 0 is outside 1..64"},
    {"string too long", "listen = \"" LONG65 "\";\n", 1, "listen", "length 65 is outside 1..64"},
    {"list element not a string", "tags = (\"a\", 2);\n", 1, "tags", "element 1: expected string, got integer"},
    {"list element a group", "tags = (\"a\", \"b\", { x = 1; });\n", 1, "tags",
     "element 2: expected string, got group"},
    {"list too long", "tags = [\"a\", \"b\", \"c\", \"d\"];\n", 1, "tags", "4 elements, at most 3 allowed"},
};

static void refusals_name_file_line_and_key(void **state) {
    (void)state;
    em_config_t *pristine = new_config();
    for (size_t i = 0; i < EM_ARRAY_LEN(refusals); i++) {
        const refusal_t *r = &refusals[i];
        em_config_t *cfg = new_config();
        char path[64], err[512] = "", frag[128];

        em_err_t rc = load_text(cfg, r->text, path, err, sizeof(err));
        if (rc != EM_ECONFIG)
            fail_msg("%s: got %s, want ECONFIG (err \"%s\")", r->name, em_errname(rc), err);
        snprintf(frag, sizeof(frag), "%s:%d: ", path, r->line);
        if (strncmp(err, frag, strlen(frag)) != 0)
            fail_msg("%s: \"%s\" does not start with \"%s\"", r->name, err, frag);
        snprintf(frag, sizeof(frag), "'%s'", r->key);
        if (!strstr(err, frag))
            fail_msg("%s: \"%s\" not in \"%s\"", r->name, frag, err);
        if (!strstr(err, r->reason))
            fail_msg("%s: \"%s\" not in \"%s\"", r->name, r->reason, err);
        assert_same_config(cfg, pristine);
        em_config_destroy(cfg);
    }
    em_config_destroy(pristine);
}

static void syntax_error_names_file_and_line(void **state) {
    (void)state;
    char path[64], err[512] = "", frag[96];
    em_config_t *cfg = new_config();
    em_config_t *pristine = new_config();

    assert_int_equal(load_text(cfg, "workers = 2;\nlisten = \"h:1\";\nverbose = = true;\n", path, err, sizeof(err)),
                     EM_ECONFIG);
    snprintf(frag, sizeof(frag), "%s:3: ", path);
    assert_contains(err, frag);
    assert_contains(err, "syntax error");
    assert_same_config(cfg, pristine);

    assert_int_equal(load_text(cfg, "workers = ;\n", path, err, sizeof(err)), EM_ECONFIG);
    snprintf(frag, sizeof(frag), "%s:1: ", path);
    assert_contains(err, frag);
    assert_same_config(cfg, pristine);

    em_config_destroy(pristine);
    em_config_destroy(cfg);
}

static void missing_file_is_refused(void **state) {
    (void)state;
    char path[64], err[512] = "";
    em_config_t *cfg = new_config();
    em_config_t *pristine = new_config();

    /* a name mkstemp just made unique, removed again: surely absent */
    write_temp(path, "");
    assert_int_equal(unlink(path), 0);
    assert_int_equal(em_config_load_file(cfg, path, err, sizeof(err)), EM_ECONFIG);
    assert_contains(err, path);
    assert_contains(err, "cannot read");
    assert_contains(err, "No such file or directory");
    assert_same_config(cfg, pristine);

    em_config_destroy(pristine);
    em_config_destroy(cfg);
}

static void refused_file_keeps_earlier_values(void **state) {
    (void)state;
    char good[64], bad[64], err[512] = "", where[96];
    em_config_t *cfg = new_config();

    assert_int_equal(load_text(cfg, "workers = 8;\nkafka = { bootstrap = \"good:1\"; };\ntags = [\"g\"];\n", good,
                               err, sizeof(err)),
                     EM_OK);
    assert_int_equal(em_config_set(cfg, "name=from-set", err, sizeof(err)), EM_OK);

    /* valid lines before and after the bad one must not leak through */
    assert_int_equal(load_text(cfg,
                               "workers = 16;\n"
                               "tags = [\"b1\", \"b2\"];\n"
                               "name = \"from-bad\";\n"
                               "kafka = { bootstrap = \"bad:1\"; linger_ms = 5000; };\n"
                               "verbose = true;\n",
                               bad, err, sizeof(err)),
                     EM_ECONFIG);
    snprintf(where, sizeof(where), "%s:4: key 'kafka.linger_ms'", bad);
    assert_contains(err, where);

    assert_int_equal(em_config_int(cfg, "workers"), 8);
    snprintf(where, sizeof(where), "%s:1", good);
    assert_string_equal(em_config_source(cfg, "workers"), where);
    assert_string_equal(em_config_str(cfg, "kafka.bootstrap"), "good:1");
    assert_int_equal(em_config_list_len(cfg, "tags"), 1);
    assert_string_equal(em_config_list_get(cfg, "tags", 0), "g");
    assert_string_equal(em_config_str(cfg, "name"), "from-set");
    assert_string_equal(em_config_source(cfg, "name"), "--set");
    assert_int_equal(em_config_int(cfg, "kafka.linger_ms"), 5);
    assert_string_equal(em_config_source(cfg, "kafka.linger_ms"), "default");
    assert_int_equal(em_config_bool(cfg, "verbose"), 0);

    /* a later good file still applies over the earlier one */
    assert_int_equal(load_text(cfg, "\nworkers = 32;\n", good, err, sizeof(err)), EM_OK);
    assert_int_equal(em_config_int(cfg, "workers"), 32);
    snprintf(where, sizeof(where), "%s:2", good);
    assert_string_equal(em_config_source(cfg, "workers"), where);
    assert_string_equal(em_config_str(cfg, "kafka.bootstrap"), "good:1");
    em_config_destroy(cfg);
}

/* One --set: what it sets (key, then the expected value as text: an integer,
 * 0/1 for booleans, the string, or list elements joined by '|'), or the
 * fragments its refusal must contain. */
typedef struct set_case {
    const char *assignment;
    em_err_t rc;
    const char *key;
    const char *want;
    const char *frag[2];
} set_case_t;

static const set_case_t set_cases[] = {
    {"workers=8", EM_OK, "workers", "8", {NULL, NULL}},
    {"workers=0x10", EM_OK, "workers", "16", {NULL, NULL}},
    {"workers=64", EM_OK, "workers", "64", {NULL, NULL}},
    {"workers=eight", EM_ECONFIG, "workers", NULL, {"--set: key 'workers'", "expected integer, got 'eight'"}},
    {"workers=8x", EM_ECONFIG, "workers", NULL, {"key 'workers'", "expected integer, got '8x'"}},
    {"workers=", EM_ECONFIG, "workers", NULL, {"key 'workers'", "expected integer, got ''"}},
    {"workers=99999999999999999999", EM_ECONFIG, "workers", NULL, {"key 'workers'", "expected integer"}},
    {"workers=65", EM_ECONFIG, "workers", NULL, {"key 'workers'", "65 is above the maximum 64"}},
    {"workers=0", EM_ECONFIG, "workers", NULL, {"key 'workers'", "0 is below the minimum 1"}},
    {"workers=true", EM_ECONFIG, "workers", NULL, {"key 'workers'", "expected integer, got 'true'"}},
    {"kafka.linger_ms=1000", EM_OK, "kafka.linger_ms", "1000", {NULL, NULL}},
    {"nope=1", EM_ECONFIG, NULL, NULL, {"--set: unknown key 'nope'", NULL}},
    {"kafka=1", EM_ECONFIG, NULL, NULL, {"unknown key 'kafka'", NULL}},
    {"kafka.nope=1", EM_ECONFIG, NULL, NULL, {"unknown key 'kafka.nope'", NULL}},
    {"workers", EM_ECONFIG, NULL, NULL, {"--set workers: expected KEY=VALUE", NULL}},
    {"=5", EM_ECONFIG, NULL, NULL, {"--set =5: expected KEY=VALUE", NULL}},
    {"", EM_ECONFIG, NULL, NULL, {"expected KEY=VALUE", NULL}},
    {"verbose=true", EM_OK, "verbose", "1", {NULL, NULL}},
    {"verbose=yes", EM_OK, "verbose", "1", {NULL, NULL}},
    {"verbose=1", EM_OK, "verbose", "1", {NULL, NULL}},
    {"kafka.idempotent=false", EM_OK, "kafka.idempotent", "0", {NULL, NULL}},
    {"kafka.idempotent=no", EM_OK, "kafka.idempotent", "0", {NULL, NULL}},
    {"kafka.idempotent=0", EM_OK, "kafka.idempotent", "0", {NULL, NULL}},
    {"verbose=maybe", EM_ECONFIG, "verbose", NULL, {"key 'verbose'", "expected boolean, got 'maybe'"}},
    {"verbose=", EM_ECONFIG, "verbose", NULL, {"key 'verbose'", "expected boolean, got ''"}},
    {"name=a=b", EM_OK, "name", "a=b", {NULL, NULL}},
    {"name=", EM_OK, "name", "", {NULL, NULL}},
    {"listen=[::1]:7000", EM_OK, "listen", "[::1]:7000", {NULL, NULL}},
    {"listen=", EM_ECONFIG, "listen", NULL, {"key 'listen'", "length 0 is outside 1..64"}},
    {"listen=" LONG65, EM_ECONFIG, "listen", NULL, {"key 'listen'", "length 65 is outside 1..64"}},
    {"tags=x,y,z", EM_OK, "tags", "x|y|z", {NULL, NULL}},
    {"tags=solo", EM_OK, "tags", "solo", {NULL, NULL}},
    {"tags=", EM_OK, "tags", "", {NULL, NULL}},
    {"tags=a,,b", EM_OK, "tags", "a||b", {NULL, NULL}},
    {"tags=a,b,c,d", EM_ECONFIG, "tags", NULL, {"key 'tags'", "4 elements, at most 3 allowed"}},
    {"kafka.props=acks=all,linger.ms=5", EM_OK, "kafka.props", "acks=all|linger.ms=5", {NULL, NULL}},
};

/* The value of key as text, in set_case_t's notation. */
static void value_text(const em_config_t *cfg, const char *key, char *buf, size_t n) {
    const em_setting_t *s = NULL;
    for (size_t i = 0; i < EM_ARRAY_LEN(settings); i++)
        if (strcmp(settings[i].key, key) == 0)
            s = &settings[i];
    assert_non_null(s);
    buf[0] = '\0';
    switch (s->type) {
    case EM_CFG_INT: snprintf(buf, n, "%lld", (long long)em_config_int(cfg, key)); break;
    case EM_CFG_BOOL: snprintf(buf, n, "%d", em_config_bool(cfg, key)); break;
    case EM_CFG_STR: snprintf(buf, n, "%s", em_config_str(cfg, key)); break;
    case EM_CFG_STRLIST: {
        size_t o = 0;
        for (size_t i = 0; i < em_config_list_len(cfg, key) && o < n; i++) {
            int w = snprintf(buf + o, n - o, "%s%s", i ? "|" : "", em_config_list_get(cfg, key, i));
            assert_true(w >= 0);
            o += (size_t)w;
        }
        break;
    }
    }
}

static void set_parses_assignments(void **state) {
    (void)state;
    em_config_t *pristine = new_config();
    for (size_t i = 0; i < EM_ARRAY_LEN(set_cases); i++) {
        const set_case_t *c = &set_cases[i];
        em_config_t *cfg = new_config();
        char err[512] = "", got[256];

        em_err_t rc = em_config_set(cfg, c->assignment, err, sizeof(err));
        if (rc != c->rc)
            fail_msg("--set %s: got %s, want %s (err \"%s\")", c->assignment, em_errname(rc), em_errname(c->rc),
                     err);
        if (rc == EM_OK) {
            value_text(cfg, c->key, got, sizeof(got));
            if (strcmp(got, c->want) != 0)
                fail_msg("--set %s: value \"%s\", want \"%s\"", c->assignment, got, c->want);
            if (strcmp(em_config_source(cfg, c->key), "--set") != 0)
                fail_msg("--set %s: source \"%s\"", c->assignment, em_config_source(cfg, c->key));
        } else {
            for (size_t j = 0; j < 2; j++)
                if (c->frag[j] && !strstr(err, c->frag[j]))
                    fail_msg("--set %s: \"%s\" not in \"%s\"", c->assignment, c->frag[j], err);
            assert_same_config(cfg, pristine);
        }
        em_config_destroy(cfg);
    }
    em_config_destroy(pristine);
}

static void set_replaces_earlier_values(void **state) {
    (void)state;
    char err[256] = "";
    em_config_t *cfg = new_config();
    assert_int_equal(em_config_set(cfg, "tags=x,y,z", err, sizeof(err)), EM_OK);
    assert_int_equal(em_config_set(cfg, "tags=w", err, sizeof(err)), EM_OK);
    assert_int_equal(em_config_list_len(cfg, "tags"), 1);
    assert_string_equal(em_config_list_get(cfg, "tags", 0), "w");
    assert_int_equal(em_config_set(cfg, "name=one", err, sizeof(err)), EM_OK);
    assert_int_equal(em_config_set(cfg, "name=two", err, sizeof(err)), EM_OK);
    assert_string_equal(em_config_str(cfg, "name"), "two");
    /* a refused --set after a good one keeps the good value */
    assert_int_equal(em_config_set(cfg, "tags=1,2,3,4", err, sizeof(err)), EM_ECONFIG);
    assert_string_equal(em_config_list_get(cfg, "tags", 0), "w");
    assert_string_equal(em_config_source(cfg, "tags"), "--set");
    em_config_destroy(cfg);
}

static void source_tracks_the_last_writer(void **state) {
    (void)state;
    char path[64], err[512] = "", where[96];
    em_config_t *cfg = new_config();

    assert_string_equal(em_config_source(cfg, "workers"), "default");
    assert_int_equal(load_text(cfg, "\n\nworkers = 9;\n", path, err, sizeof(err)), EM_OK);
    snprintf(where, sizeof(where), "%s:3", path);
    assert_string_equal(em_config_source(cfg, "workers"), where);
    assert_string_equal(em_config_source(cfg, "listen"), "default");

    assert_int_equal(em_config_set(cfg, "workers=10", err, sizeof(err)), EM_OK);
    assert_string_equal(em_config_source(cfg, "workers"), "--set");

    /* a file loaded after --set takes over again */
    assert_int_equal(load_text(cfg, "workers = 11;\n", path, err, sizeof(err)), EM_OK);
    snprintf(where, sizeof(where), "%s:1", path);
    assert_string_equal(em_config_source(cfg, "workers"), where);
    assert_int_equal(em_config_int(cfg, "workers"), 11);

    assert_string_equal(em_config_source(cfg, "no.such.key"), "unknown");
    em_config_destroy(cfg);
}

static void help_and_reference_list_every_key(void **state) {
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    em_config_write_help(settings, EM_ARRAY_LEN(settings), f);
    em_config_write_reference("unit", settings, EM_ARRAY_LEN(settings), f);
    assert_int_equal(fclose(f), 0);
    for (size_t i = 0; i < EM_ARRAY_LEN(settings); i++) {
        char frag[96];
        snprintf(frag, sizeof(frag), "| `%s` |", settings[i].key);
        assert_contains(text, frag);
        assert_contains(text, settings[i].help);
    }
    assert_contains(text, "## unit");
    assert_contains(text, "1..64");
    free(text);
}

/* A table with wildcard keys, as the executor's exec handlers use it. */
static const em_setting_t wild[] = {
    {"handlers.exec", EM_CFG_STRLIST, "", 0, 8, "Exec handlers offered."},
    {"exec.*.argv", EM_CFG_STRLIST, "", 0, 8, "The command."},
    {"exec.*.timeout_ms", EM_CFG_INT, "1000", 0, 5000, "Timeout."},
    {"exec.*.limits.memory_mb", EM_CFG_INT, "0", 0, 1024, "Memory."},
};

static em_config_t *new_wild(void) {
    char err[256] = "";
    em_config_t *cfg = em_config_new("unit", wild, EM_ARRAY_LEN(wild), err, sizeof(err));
    if (!cfg)
        fail_msg("em_config_new: %s", err);
    return cfg;
}

static void wildcard_groups_take_defaults_per_name(void **state) {
    (void)state;
    static const char text[] = "handlers = { exec = [\"resize\", \"thumb\"]; };\n"
                               "exec = {\n"
                               "  resize = { argv = [\"/usr/bin/convert\", \"-resize\", \"50%\"];\n"
                               "             timeout_ms = 200; };\n"
                               "  thumb = { limits = { memory_mb = 64; }; };\n"
                               "};\n";
    char path[64], err[512] = "", where[96];
    em_config_t *cfg = new_wild();
    assert_int_equal(load_text(cfg, text, path, err, sizeof(err)), EM_OK);
    assert_int_equal(em_config_list_len(cfg, "exec.resize.argv"), 3);
    assert_string_equal(em_config_list_get(cfg, "exec.resize.argv", 2), "50%");
    assert_int_equal(em_config_int(cfg, "exec.resize.timeout_ms"), 200);
    assert_int_equal(em_config_int(cfg, "exec.resize.limits.memory_mb"), 0);
    assert_int_equal(em_config_int(cfg, "exec.thumb.timeout_ms"), 1000);
    assert_int_equal(em_config_int(cfg, "exec.thumb.limits.memory_mb"), 64);
    assert_int_equal(em_config_list_len(cfg, "exec.thumb.argv"), 0);
    /* a name never written has every default */
    assert_int_equal(em_config_int(cfg, "exec.other.timeout_ms"), 1000);
    assert_string_equal(em_config_source(cfg, "exec.other.timeout_ms"), "default");
    snprintf(where, sizeof(where), "%s:4", path);
    assert_string_equal(em_config_source(cfg, "exec.resize.timeout_ms"), where);
    snprintf(where, sizeof(where), "%s:5", path);
    assert_string_equal(em_config_source(cfg, "exec.thumb.limits.memory_mb"), where);
    /* the keys set through a wildcard, in order */
    static const char *const keys[] = {"exec.resize.argv", "exec.resize.timeout_ms", "exec.thumb.limits.memory_mb"};
    for (size_t i = 0; i < EM_ARRAY_LEN(keys); i++)
        assert_string_equal(em_config_instance_key(cfg, i), keys[i]);
    assert_null(em_config_instance_key(cfg, EM_ARRAY_LEN(keys)));

    /* --set reaches a new name and an old one alike */
    assert_int_equal(em_config_set(cfg, "exec.new.timeout_ms=300", err, sizeof(err)), EM_OK);
    assert_int_equal(em_config_int(cfg, "exec.new.timeout_ms"), 300);
    assert_string_equal(em_config_source(cfg, "exec.new.timeout_ms"), "--set");
    assert_int_equal(em_config_set(cfg, "exec.resize.argv=/bin/cat,-u", err, sizeof(err)), EM_OK);
    assert_int_equal(em_config_list_len(cfg, "exec.resize.argv"), 2);
    assert_string_equal(em_config_instance_key(cfg, 3), "exec.new.timeout_ms");
    em_config_destroy(cfg);
}

static void wildcard_refusals_name_the_concrete_key(void **state) {
    (void)state;
    static const struct {
        const char *text;
        int line;
        const char *key, *reason;
    } rows[] = {
        {"exec = {\n a = { timeout_ms = 9000; };\n};\n", 2, "exec.a.timeout_ms", "above the maximum 5000"},
        {"exec = { a = { argh = 1; }; };\n", 1, "exec.a.argh", "unknown key"},
        {"exec = { a = 5; };\n", 1, "exec.a", "expected group, got integer"},
        {"exec = { a = { timeout_ms = \"x\"; }; };\n", 1, "exec.a.timeout_ms", "expected integer, got string"},
        {"exec = { * = { timeout_ms = 1; }; };\n", 1, "exec.*", "unknown key"},
        {"exec = { a = { limits = { memory_mb = -1; }; }; };\n", 1, "exec.a.limits.memory_mb", "below the minimum 0"},
        {"exec = { a = { argv = [1, 2]; }; };\n", 1, "exec.a.argv", "element 0: expected string"},
    };
    em_config_t *pristine = new_wild();
    for (size_t i = 0; i < EM_ARRAY_LEN(rows); i++) {
        em_config_t *cfg = new_wild();
        char path[64], err[512] = "", frag[160];
        /* an earlier good load: a refused file must leave it as it was */
        assert_int_equal(load_text(cfg, "exec = { a = { timeout_ms = 7; }; };\n", path, err, sizeof(err)), EM_OK);
        assert_int_equal(load_text(cfg, rows[i].text, path, err, sizeof(err)), EM_ECONFIG);
        snprintf(frag, sizeof(frag), "%s:%d: ", path, rows[i].line);
        if (strncmp(err, frag, strlen(frag)) != 0)
            fail_msg("row %zu: \"%s\" does not start with \"%s\"", i, err, frag);
        snprintf(frag, sizeof(frag), "'%s'", rows[i].key);
        if (!strstr(err, frag) || !strstr(err, rows[i].reason))
            fail_msg("row %zu: \"%s\" lacks %s or \"%s\"", i, err, frag, rows[i].reason);
        assert_int_equal(em_config_int(cfg, "exec.a.timeout_ms"), 7);
        assert_string_equal(em_config_instance_key(cfg, 0), "exec.a.timeout_ms");
        assert_null(em_config_instance_key(cfg, 1));
        em_config_destroy(cfg);
    }
    static const struct {
        const char *set, *frag;
    } sets[] = {
        {"exec.b.timeout_ms=x", "key 'exec.b.timeout_ms': expected integer"},
        {"exec.b.timeout_ms=5001", "key 'exec.b.timeout_ms': 5001 is above the maximum 5000"},
        {"exec.b.c.timeout_ms=1", "unknown key 'exec.b.c.timeout_ms'"},
        {"exec.*.timeout_ms=1", "unknown key 'exec.*.timeout_ms'"},
        {"exec.b/c.timeout_ms=1", "unknown key 'exec.b/c.timeout_ms'"},
    };
    for (size_t i = 0; i < EM_ARRAY_LEN(sets); i++) {
        char err[512] = "";
        assert_int_equal(em_config_set(pristine, sets[i].set, err, sizeof(err)), EM_ECONFIG);
        assert_contains(err, sets[i].frag);
    }
    assert_null(em_config_instance_key(pristine, 0));
    em_config_destroy(pristine);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_are_loaded),
        cmocka_unit_test(bad_table_is_refused),
        cmocka_unit_test(good_file_is_loaded),
        cmocka_unit_test(refusals_name_file_line_and_key),
        cmocka_unit_test(syntax_error_names_file_and_line),
        cmocka_unit_test(missing_file_is_refused),
        cmocka_unit_test(refused_file_keeps_earlier_values),
        cmocka_unit_test(set_parses_assignments),
        cmocka_unit_test(set_replaces_earlier_values),
        cmocka_unit_test(source_tracks_the_last_writer),
        cmocka_unit_test(help_and_reference_list_every_key),
        cmocka_unit_test(wildcard_groups_take_defaults_per_name),
        cmocka_unit_test(wildcard_refusals_name_the_concrete_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
