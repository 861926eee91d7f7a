/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: a service's configuration, with the services' own settings
 * tables (services.h). The first byte picks the service (scheduler,
 * executor, sink, devkafka); the rest is the file's text, optionally
 * followed by a line "--set" and one KEY=VALUE assignment per line.
 *
 * Twice per input: (1) the loader itself: em_config_new, em_config_load_file
 * on a temporary file, em_config_set, then every getter on every key and
 * wildcard instance, and em_config_log; (2) the service's whole start-up
 * check, em_service_init(--config FILE --set ... --check-config): aliases,
 * the table, the log level, TLS and security checks and the service's own
 * validate hook, as `execmesh-<service> --check-config` runs them.
 *
 * Inputs that would make the check read a device or another file than the
 * ones named here (libconfig's @include, paths under /dev, /proc, /sys)
 * are skipped: reading /dev/zero as a certificate never ends, which is the
 * operator's to avoid, not a decoder's bug.
 */
#include <getopt.h>
#include <string.h>
#include <unistd.h>

#include "em_config.h"
#include "fuzz.h"
#include "services.h"

#define MAX_SETS 8

static char path[64];

static void remove_file(void) { unlink(path); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_quiet();
    snprintf(path, sizeof(path), "/tmp/em-fuzz-config-%d.cfg", (int)getpid());
    atexit(remove_file);
    return 0;
}

static int skip(const uint8_t *data, size_t size) {
    static const char *const no[] = {"@include", "/dev", "/proc", "/sys"};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (memmem(data, size, no[i], strlen(no[i])))
            return 1;
    return 0;
}

/* Every value the table can give, as the services read them. */
static void read_everything(const em_config_t *cfg, const em_service_desc_t *d) {
    for (size_t i = 0; i < d->nsettings; i++) {
        const em_setting_t *s = &d->settings[i];
        switch (s->type) {
        case EM_CFG_INT: {
            int64_t v = em_config_int(cfg, s->key);
            FUZZ_CHECK(strchr(s->key, '*') || (v >= s->min && v <= s->max), "%s = %lld outside its range", s->key,
                       (long long)v);
            break;
        }
        case EM_CFG_BOOL: FUZZ_CHECK(em_config_bool(cfg, s->key) <= 1, "%s", s->key); break;
        case EM_CFG_STR: FUZZ_CHECK(em_config_str(cfg, s->key), "%s", s->key); break;
        case EM_CFG_STRLIST: {
            size_t n = em_config_list_len(cfg, s->key);
            FUZZ_CHECK(s->max <= 0 || (int64_t)n <= s->max, "%s: %zu elements", s->key, n);
            for (size_t k = 0; k < n; k++)
                FUZZ_CHECK(em_config_list_get(cfg, s->key, k), "%s[%zu]", s->key, k);
            break;
        }
        }
        FUZZ_CHECK(em_config_source(cfg, s->key), "%s: no source", s->key);
    }
    const char *k;
    for (size_t i = 0; (k = em_config_instance_key(cfg, i)); i++) {
        const char *src = em_config_source(cfg, k);
        FUZZ_CHECK(src && strcmp(src, "unknown") != 0, "instance %s has no table entry", k);
    }
    em_config_log(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const em_service_desc_t *(*const descs[])(void) = {fuzz_scheduler_desc, fuzz_executor_desc,
                                                              fuzz_sink_desc, fuzz_devkafka_desc};
    if (size < 1 || size > 65536 || skip(data, size))
        return 0;
    const em_service_desc_t *d = descs[data[0] % 4]();
    char *text = malloc(size);
    FUZZ_CHECK(text, "out of memory");
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    char *sets[MAX_SETS];
    int nsets = 0;
    char *sep = strstr(text, "\n--set\n");
    if (sep) {
        *sep = '\0';
        for (char *line = strtok(sep + 7, "\n"); line && nsets < MAX_SETS; line = strtok(NULL, "\n"))
            sets[nsets++] = line;
    }
    FILE *f = fopen(path, "w");
    FUZZ_CHECK(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);

    /* (1) the loader */
    char err[1024];
    em_config_t *cfg = em_config_new(d->name, d->settings, d->nsettings, err, sizeof(err));
    FUZZ_CHECK(cfg, "the %s table's defaults are refused: %s", d->name, err);
    err[0] = '\0';
    if (em_config_load_file(cfg, path, err, sizeof(err)) != EM_OK)
        FUZZ_CHECK(strstr(err, path) || strstr(err, "out of memory"), "a refusal not naming the file: %s", err);
    for (int i = 0; i < nsets; i++) {
        err[0] = '\0';
        if (em_config_set(cfg, sets[i], err, sizeof(err)) != EM_OK)
            FUZZ_CHECK(err[0], "a --set refusal without a reason");
    }
    read_everything(cfg, d);
    em_config_destroy(cfg);

    /* (2) the service's start-up check, as --check-config runs it */
    char *argv[4 + 2 * MAX_SETS + 1];
    int argc = 0;
    argv[argc++] = (char *)(uintptr_t)d->program;
    argv[argc++] = (char *)(uintptr_t)"--config";
    argv[argc++] = path;
    for (int i = 0; i < nsets; i++) {
        argv[argc++] = (char *)(uintptr_t)"--set";
        argv[argc++] = sets[i];
    }
    argv[argc++] = (char *)(uintptr_t)"--check-config";
    argv[argc] = NULL;
    em_service_t svc;
    optind = 0; /* getopt starts afresh */
    int rc = em_service_init(&svc, d, argc, argv);
    FUZZ_CHECK(rc == 0 || rc == 2, "--check-config exited %d", rc);
    FUZZ_CHECK(!svc.cfg, "--check-config left its config");
    free(text);
    return 0;
}
