/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_util's UTF-8 repair, table-driven: em_utf8_clean keeps
 * well-formed ASCII and 2-, 3- and 4-byte code points, turns each ill-formed
 * part (overlong forms, surrogates, beyond U+10FFFF, stray and missing
 * continuation bytes, bytes never used in UTF-8) and each NUL into one '?',
 * and stops before a code point that would not fit whole; em_utf8_trim
 * removes a code point cut at the end, as snprintf leaves one. Every output
 * must pass em_utf8_valid (the check the mesh applies to string fields).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_execution.h"
#include "em_util.h"

/* One case: src (n bytes; may hold NULs) cleaned into a buffer of cap bytes. */
typedef struct clean_case {
    const char *what;
    const char *src;
    size_t n;
    size_t cap;
    const char *want;
} clean_case_t;

#define S(lit) lit, sizeof(lit) - 1

static const clean_case_t clean_cases[] = {
    {"ASCII kept", S("hello, world"), 64, "hello, world"},
    {"empty", S(""), 64, ""},
    {"2-byte kept (U+00E9)", S("caf\xc3\xa9"), 64, "caf\xc3\xa9"},
    {"3-byte kept (U+20AC)", S("\xe2\x82\xac 5"), 64, "\xe2\x82\xac 5"},
    {"4-byte kept (U+1F600)", S("\xf0\x9f\x98\x80!"), 64, "\xf0\x9f\x98\x80!"},
    {"the edges kept (U+0080 U+07FF U+0800 U+FFFF U+10000 U+10FFFF)",
     S("\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"), 64,
     "\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"},
    {"NUL becomes ?", "a\0b", 3, 64, "a?b"},
    {"overlong 2-byte '/' (C0 AF)", S("x\xc0\xafy"), 64, "x??y"},
    {"overlong 3-byte (E0 80 AF)", S("x\xe0\x80\xafy"), 64, "x???y"},
    {"overlong 4-byte (F0 80 80 AF)", S("x\xf0\x80\x80\xafy"), 64, "x????y"},
    {"surrogate U+D800 (ED A0 80)", S("x\xed\xa0\x80y"), 64, "x???y"},
    {"surrogate U+DFFF (ED BF BF)", S("x\xed\xbf\xbfy"), 64, "x???y"},
    {"beyond U+10FFFF (F4 90 80 80)", S("x\xf4\x90\x80\x80y"), 64, "x????y"},
    {"F5..FF never used", S("\xf5\xfe\xff"), 64, "???"},
    {"stray continuation bytes", S("a\x80\xbf" "b"), 64, "a??b"},
    {"3-byte cut by the next char: one ? for the part", S("a\xe2\x82" "b"), 64, "a?b"},
    {"4-byte cut by the next char", S("a\xf0\x9f\x98" "b"), 64, "a?b"},
    {"lead then another lead", S("\xc3\xc3\xa9"), 64, "?\xc3\xa9"},
    {"truncated at the end of the input", S("ok\xe2\x82"), 64, "ok?"},
    {"truncated 2-byte at the end of the input", S("ok\xc3"), 64, "ok?"},
    {"cap cuts ASCII", S("abcdef"), 4, "abc"},
    {"cap cuts before a 2-byte code point", S("abc\xc3\xa9"), 5, "abc"},
    {"cap fits a 2-byte code point exactly", S("abc\xc3\xa9"), 6, "abc\xc3\xa9"},
    {"cap cuts before a 3-byte code point", S("ab\xe2\x82\xac"), 5, "ab"},
    {"cap cuts before a 4-byte code point", S("a\xf0\x9f\x98\x80"), 5, "a"},
    {"cap 1: only the NUL", S("abc"), 1, ""},
    {"cap n + 1 holds everything, even all ill-formed", S("\xff\xc0\x80\xed\xa0\x80"), 7, "??????"},
};

static void clean_table(void **state) {
    (void)state;
    for (size_t i = 0; i < EM_ARRAY_LEN(clean_cases); i++) {
        const clean_case_t *c = &clean_cases[i];
        char dst[64];
        memset(dst, 'Z', sizeof(dst));
        size_t w = em_utf8_clean(dst, c->cap, (const uint8_t *)c->src, c->n);
        if (w != strlen(c->want) || strcmp(dst, c->want) != 0)
            fail_msg("%s: got '%s' (%zu bytes), want '%s'", c->what, dst, w, c->want);
        if (w > c->cap - 1)
            fail_msg("%s: wrote %zu bytes into %zu", c->what, w, c->cap);
        if (c->cap < sizeof(dst) && dst[c->cap] != 'Z')
            fail_msg("%s: wrote past cap", c->what);
        if (!em_utf8_valid((const uint8_t *)dst, w))
            fail_msg("%s: output is not valid UTF-8", c->what);
    }
}

static void clean_cap_zero_writes_nothing(void **state) {
    (void)state;
    char dst[4] = "xyz";
    assert_int_equal(em_utf8_clean(dst, 0, (const uint8_t *)"abc", 3), 0);
    assert_string_equal(dst, "xyz");
}

/* Every cap over every prefix of mixed input: valid UTF-8, never longer than cap - 1. */
static void clean_every_cap_is_valid(void **state) {
    (void)state;
    static const char mixed[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xff\xed\xa0\x80z\xe2\x82";
    for (size_t n = 0; n <= sizeof(mixed) - 1; n++)
        for (size_t cap = 1; cap <= sizeof(mixed); cap++) {
            char dst[sizeof(mixed)];
            size_t w = em_utf8_clean(dst, cap, (const uint8_t *)mixed, n);
            assert_true(w <= cap - 1);
            assert_int_equal(strlen(dst), w);
            if (!em_utf8_valid((const uint8_t *)dst, w))
                fail_msg("n %zu cap %zu: '%s' is not valid UTF-8", n, cap, dst);
        }
}

typedef struct trim_case {
    const char *what;
    const char *in;
    const char *want;
} trim_case_t;

static const trim_case_t trim_cases[] = {
    {"ASCII unchanged", "hello", "hello"},
    {"empty unchanged", "", ""},
    {"whole 2-byte kept", "caf\xc3\xa9", "caf\xc3\xa9"},
    {"whole 3-byte kept", "x\xe2\x82\xac", "x\xe2\x82\xac"},
    {"whole 4-byte kept", "x\xf0\x9f\x98\x80", "x\xf0\x9f\x98\x80"},
    {"2-byte cut after its lead", "caf\xc3", "caf"},
    {"3-byte cut after 1", "x\xe2", "x"},
    {"3-byte cut after 2", "x\xe2\x82", "x"},
    {"4-byte cut after 1", "x\xf0", "x"},
    {"4-byte cut after 2", "x\xf0\x9f", "x"},
    {"4-byte cut after 3", "x\xf0\x9f\x98", "x"},
    {"only a cut code point", "\xf0\x9f\x98", ""},
};

static void trim_table(void **state) {
    (void)state;
    for (size_t i = 0; i < EM_ARRAY_LEN(trim_cases); i++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%s", trim_cases[i].in);
        em_utf8_trim(buf);
        if (strcmp(buf, trim_cases[i].want) != 0)
            fail_msg("%s: got '%s', want '%s'", trim_cases[i].what, buf, trim_cases[i].want);
        if (!em_utf8_valid((const uint8_t *)buf, strlen(buf)))
            fail_msg("%s: output is not valid UTF-8", trim_cases[i].what);
    }
}

/* What the executor does: snprintf into a buffer too small, then trim. */
static void trim_after_snprintf_at_every_size(void **state) {
    (void)state;
    static const char name[] = "\xd0\xb8\xd0\xbc\xd1\x8f \xe5\x90\x8d\xe5\x89\x8d \xf0\x9f\x98\x80 end";
    for (size_t size = 1; size <= sizeof(name) + 8; size++) {
        char buf[64];
        snprintf(buf, size, "exec %s", name);
        em_utf8_trim(buf);
        if (!em_utf8_valid((const uint8_t *)buf, strlen(buf)))
            fail_msg("size %zu: '%s' is not valid UTF-8 after trim", size, buf);
        /* at most one cut code point removed: never more than 3 bytes */
        size_t full = strlen("exec ") + strlen(name);
        size_t cut = size - 1 < full ? size - 1 : full;
        assert_true(strlen(buf) + 3 >= cut);
    }
}

/* em_grow keeps what the array held, grows by doubling, and refuses a
 * size that would overflow without touching the array. */
static void grow_keeps_elements_and_refuses_overflow(void **state) {
    (void)state;
    uint64_t *a = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < 1000; i++) {
        assert_int_equal(em_grow(&a, &cap, i + 1, sizeof(*a)), 0);
        assert_true(cap >= i + 1);
        a[i] = i * 7;
    }
    assert_int_equal(cap, 1024);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(a[i], i * 7);
    assert_int_equal(em_grow(&a, &cap, 10, sizeof(*a)), 0); /* room already */
    assert_int_equal(cap, 1024);
    uint64_t *was = a;
    assert_int_equal(em_grow(&a, &cap, SIZE_MAX / 4, sizeof(*a)), -1);
    assert_ptr_equal(a, was);
    assert_int_equal(cap, 1024);
    free(a);
}

/* The published FNV-1a 64 test vectors. */
static void fnv1a_matches_the_reference_values(void **state) {
    (void)state;
    assert_true(em_fnv1a("", 0) == 0xcbf29ce484222325ull);
    assert_true(em_fnv1a("a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(em_fnv1a("foobar", 6) == 0x85944171f73967e8ull);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(clean_table),
        cmocka_unit_test(clean_cap_zero_writes_nothing),
        cmocka_unit_test(clean_every_cap_is_valid),
        cmocka_unit_test(trim_table),
        cmocka_unit_test(trim_after_snprintf_at_every_size),
        cmocka_unit_test(grow_keeps_elements_and_refuses_overflow),
        cmocka_unit_test(fnv1a_matches_the_reference_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
