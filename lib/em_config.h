/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Configuration: one settings table per service (key, type, default, min,
 * max, help). libconfig parses the file; the table validates it: an unknown
 * key, a wrong type, an out-of-range value or an unreadable file is refused
 * with the file, the line and the key named. The docs' configuration
 * reference is generated from the same table (em_config_write_reference).
 *
 * Keys are dotted paths into libconfig groups: "kafka.bootstrap" is
 *     kafka = { bootstrap = "127.0.0.1:9092"; };
 * Command-line overrides ("--set kafka.bootstrap=host:port") go through the
 * same validation.
 *
 * A table key may have "*" segments ("exec.*.argv"): each matches one name
 * of letters, digits, '_' and '-', so a file may hold any number of groups
 * shaped alike (exec = { resize = { argv = [...]; }; thumb = { ... }; };).
 * Getters take the concrete key ("exec.resize.argv"); a concrete key that was
 * never set has the wildcard's default. The wildcard itself is not settable.
 */
#ifndef EM_CONFIG_H
#define EM_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "em_error.h"

typedef enum em_cfg_type {
    EM_CFG_INT,    /* 64-bit integer within [min, max] */
    EM_CFG_BOOL,   /* true / false */
    EM_CFG_STR,    /* string; min/max bound its length when max > 0 */
    EM_CFG_STRLIST /* list of strings, e.g. ["a=b", "c=d"] */
} em_cfg_type_t;

typedef struct em_setting {
    const char *key;  /* dotted path */
    em_cfg_type_t type;
    const char *def;  /* default, as it would be written in --set; "" for empty */
    int64_t min, max; /* EM_CFG_INT: value range; EM_CFG_STR: length range if max > 0;
                         EM_CFG_STRLIST: at most max elements if max > 0 */
    const char *help; /* one sentence for --help and the docs */
} em_setting_t;

typedef struct em_config em_config_t;

/* Builds a config holding every default of table (which must outlive it).
 * NULL on a bad default (a programming error; errstr says which). */
em_config_t *em_config_new(const char *service, const em_setting_t *table, size_t n,
                           char *errstr, size_t errstr_size);
void em_config_destroy(em_config_t *cfg);

/* Loads path over the defaults. On error returns EM_ECONFIG with
 * "FILE:LINE: key 'k': reason" in errstr and leaves cfg unchanged. */
em_err_t em_config_load_file(em_config_t *cfg, const char *path, char *errstr, size_t errstr_size);

/* Applies "key=value" (from --set). EM_ECONFIG names the key on error. */
em_err_t em_config_set(em_config_t *cfg, const char *assignment, char *errstr, size_t errstr_size);

/* Getters; the key must be in the table (abort otherwise: a programming error). */
int64_t em_config_int(const em_config_t *cfg, const char *key);
int em_config_bool(const em_config_t *cfg, const char *key);
const char *em_config_str(const em_config_t *cfg, const char *key);
/* Number of strings in a list and the i-th one. */
size_t em_config_list_len(const em_config_t *cfg, const char *key);
const char *em_config_list_get(const em_config_t *cfg, const char *key, size_t i);
/* Where a value came from: "default", "FILE:LINE" or "--set". */
const char *em_config_source(const em_config_t *cfg, const char *key);
/* The i-th concrete key set through a wildcard (by the file or --set), in the
 * order they were first set; NULL past the end. Valid until the next load or set. */
const char *em_config_instance_key(const em_config_t *cfg, size_t i);

/* Prints the settings as "--help" text (key, type, default, help). */
void em_config_write_help(const em_setting_t *table, size_t n, FILE *out);
/* Prints the settings as a Markdown table for docs/configuration.md. */
void em_config_write_reference(const char *service, const em_setting_t *table, size_t n, FILE *out);
/* Logs every effective value at info level (one line). */
void em_config_log(const em_config_t *cfg);

#endif
