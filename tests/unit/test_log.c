/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_log: JSON string escaping (quotes, backslashes, control
 * characters, truncation that never splits an escape), level names, and
 * one emitted line captured from stderr. Output buffers are heap blocks of
 * exactly the capacity passed, so an overrun is an ASan failure.
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

#include "em_log.h"
#include "em_util.h"

typedef struct esc_case {
    const char *name;
    const char *in;
    size_t len; /* bytes of in to escape */
    size_t cap;
    const char *want;
} esc_case_t;

#define L(s) s, sizeof(s) - 1

static const esc_case_t esc_cases[] = {
    {"plain", L("hello"), 16, "hello"},
    {"empty", L(""), 4, ""},
    {"quote", L("say \"hi\""), 32, "say \\\"hi\\\""},
    {"backslash", L("C:\\dir\\"), 32, "C:\\\\dir\\\\"},
    {"newline, return, tab", L("a\nb\rc\td"), 32, "a\\nb\\rc\\td"},
    {"control chars", L("\x01\x1f\x08\x0c"), 64, "\\u0001\\u001f\\u0008\\u000c"},
    {"DEL", L("x\x7fy"), 16, "x\\u007fy"},
    {"embedded NUL", L("a\0b"), 16, "a\\u0000b"},
    {"UTF-8 passes through", L("caf\xc3\xa9 \xe2\x9c\x93"), 16, "caf\xc3\xa9 \xe2\x9c\x93"},
    {"len shorter than the string", "abcdef", 3, 16, "abc"},
    {"exact fit", L("abc"), 4, "abc"},
    {"truncated plain", L("abcdef"), 4, "abc"},
    {"cap 1", L("abc"), 1, ""},
    {"escape does not fit", L("ab\""), 4, "ab"},
    {"escape just fits", L("ab\""), 5, "ab\\\""},
    {"unicode escape does not fit", L("a\x01"), 7, "a"},
    {"unicode escape just fits", L("a\x01"), 8, "a\\u0001"},
    {"stop at the first escape that does not fit", L("\"\"\"z"), 6, "\\\"\\\""},
    {"nothing after a cut", L("a\nbcdef"), 3, "a"},
};

static void json_escape_table(void **state) {
    (void)state;
    for (size_t i = 0; i < EM_ARRAY_LEN(esc_cases); i++) {
        const esc_case_t *c = &esc_cases[i];
        char *buf = malloc(c->cap);
        assert_non_null(buf);
        memset(buf, 'X', c->cap);
        size_t n = em_json_escape(buf, c->cap, c->in, c->len);
        if (strcmp(buf, c->want) != 0)
            fail_msg("%s: \"%s\", want \"%s\"", c->name, buf, c->want);
        if (n != strlen(c->want))
            fail_msg("%s: returned %zu, want %zu", c->name, n, strlen(c->want));
        free(buf);
    }
}

static void json_escape_cap_zero_writes_nothing(void **state) {
    (void)state;
    char buf[4] = {'X', 'X', 'X', 'X'};
    assert_int_equal(em_json_escape(buf, 0, "abc", 3), 0);
    assert_int_equal(buf[0], 'X');
}

static void json_escape_every_byte(void **state) {
    (void)state;
    /* each single byte: control chars and DEL as \u00XX, the rest as is
     * (or with a backslash for quote and backslash) */
    for (int c = 1; c < 256; c++) {
        char in[1] = {(char)c}, out[8], want[8];
        em_json_escape(out, sizeof(out), in, 1);
        if (c == '"' || c == '\\')
            snprintf(want, sizeof(want), "\\%c", c);
        else if (c == '\n')
            snprintf(want, sizeof(want), "\\n");
        else if (c == '\r')
            snprintf(want, sizeof(want), "\\r");
        else if (c == '\t')
            snprintf(want, sizeof(want), "\\t");
        else if (c < 0x20 || c == 0x7f)
            snprintf(want, sizeof(want), "\\u%04x", c);
        else
            snprintf(want, sizeof(want), "%c", c);
        if (strcmp(out, want) != 0)
            fail_msg("byte 0x%02x: \"%s\", want \"%s\"", c, out, want);
    }
}

static void level_names_parse(void **state) {
    (void)state;
    static const struct {
        const char *name;
        int level;
    } cases[] = {
        {"debug", EM_LOG_DEBUG}, {"info", EM_LOG_INFO}, {"warn", EM_LOG_WARN}, {"error", EM_LOG_ERROR},
        {"off", EM_LOG_OFF},     {"INFO", EM_LOG_INFO}, {"Warn", EM_LOG_WARN}, {"DeBuG", EM_LOG_DEBUG},
        {"warning", -1},         {"inf", -1},           {"infos", -1},         {"", -1},
        {" info", -1},           {"info ", -1},         {"fatal", -1},         {"trace", -1},
    };
    for (size_t i = 0; i < EM_ARRAY_LEN(cases); i++)
        if (em_log_level_parse(cases[i].name) != cases[i].level)
            fail_msg("\"%s\": %d, want %d", cases[i].name, em_log_level_parse(cases[i].name), cases[i].level);
}

static void levels_gate_output(void **state) {
    (void)state;
    em_log_set_level(EM_LOG_WARN);
    assert_false(em_log_enabled(EM_LOG_DEBUG));
    assert_false(em_log_enabled(EM_LOG_INFO));
    assert_true(em_log_enabled(EM_LOG_WARN));
    assert_true(em_log_enabled(EM_LOG_ERROR));
    em_log_set_level(EM_LOG_OFF);
    assert_false(em_log_enabled(EM_LOG_ERROR));
    em_log_set_level(EM_LOG_INFO);
    assert_true(em_log_enabled(EM_LOG_INFO));
}

static int evaluated;
static const char *count_evaluation(void) {
    evaluated++;
    return "x";
}

static void disabled_levels_skip_their_arguments(void **state) {
    (void)state;
    evaluated = 0;
    em_log_set_level(EM_LOG_ERROR);
    EM_DEBUG("never", EM_F_STR("k", count_evaluation()));
    EM_INFO("never", EM_F_STR("k", count_evaluation()));
    assert_int_equal(evaluated, 0);
    em_log_set_level(EM_LOG_INFO);
}

/* Runs one EM_WARN with stderr sent to a temp file; returns the line. */
static char *capture_line(void) {
    char path[] = "/tmp/em-unit-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);

    em_log_init("unit-\"svc\"", "replica-1", EM_LOG_INFO);
    EM_WARN("quote \" and\nnewline", EM_F_STR("path", "C:\\x"), EM_F_INT("n", -3), EM_F_UINT("u", UINT64_MAX),
            EM_F_BOOL("b", 1), EM_F_RAW("raw", "{\"a\":1}"), EM_F_STR("null", NULL));

    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    assert_true(size > 0);
    char *line = calloc((size_t)size + 1, 1);
    assert_non_null(line);
    assert_int_equal(pread(fd, line, (size_t)size, 0), size);
    close(fd);
    return line;
}

static void emitted_line_is_escaped_json(void **state) {
    (void)state;
    char *line = capture_line();
    static const char *const frags[] = {
        "{\"ts\":\"",
        "\"level\":\"warn\"",
        "\"service\":\"unit-\\\"svc\\\"\"",
        "\"replica\":\"replica-1\"",
        "\"msg\":\"quote \\\" and\\nnewline\"",
        "\"fields\":{\"path\":\"C:\\\\x\",\"n\":-3,\"u\":18446744073709551615,\"b\":true,\"raw\":{\"a\":1},"
        "\"null\":\"\"}}\n",
    };
    for (size_t i = 0; i < EM_ARRAY_LEN(frags); i++)
        if (!strstr(line, frags[i]))
            fail_msg("\"%s\" not in \"%s\"", frags[i], line);
    /* exactly one line */
    assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
    free(line);
    em_log_init("execmesh", "", EM_LOG_INFO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_escape_table),
        cmocka_unit_test(json_escape_cap_zero_writes_nothing),
        cmocka_unit_test(json_escape_every_byte),
        cmocka_unit_test(level_names_parse),
        cmocka_unit_test(levels_gate_output),
        cmocka_unit_test(disabled_levels_skip_their_arguments),
        cmocka_unit_test(emitted_line_is_escaped_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
