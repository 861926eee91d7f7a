/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The settings table, validated over libconfig. Values are kept in an array
 * parallel to the table. Loading works on a copy that replaces the live
 * values only when the whole file validated, so a refused file changes
 * nothing.
 */
#include "em_config.h"

#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <stdlib.h>
#include <string.h>

#include "em_log.h"

typedef struct em_value {
    int64_t i;
    char *s;      /* EM_CFG_STR */
    char **list;  /* EM_CFG_STRLIST, NULL-terminated */
    size_t nlist;
    char source[320];
} em_value_t;

/* A value of a wildcard key ("exec.*.argv") set for one name ("exec.resize.argv"). */
typedef struct em_inst {
    char *key;   /* the concrete key */
    size_t tidx; /* its table entry */
    em_value_t v;
} em_inst_t;

/* Everything a file or a --set writes: a load works on a copy of it. */
typedef struct em_state {
    em_value_t *values; /* parallel to the table; a wildcard entry's holds its default */
    em_inst_t *inst;
    size_t ninst;
} em_state_t;

struct em_config {
    char service[32];
    const em_setting_t *table;
    size_t n;
    em_value_t *values;
    em_inst_t *inst;
    size_t ninst;
};

static const char *type_name(em_cfg_type_t t) {
    switch (t) {
    case EM_CFG_INT: return "integer";
    case EM_CFG_BOOL: return "boolean";
    case EM_CFG_STR: return "string";
    case EM_CFG_STRLIST: return "list of strings";
    }
    return "?";
}

static const char *lc_type_name(int t) {
    switch (t) {
    case CONFIG_TYPE_GROUP: return "group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "integer";
    case CONFIG_TYPE_FLOAT: return "float";
    case CONFIG_TYPE_STRING: return "string";
    case CONFIG_TYPE_BOOL: return "boolean";
    case CONFIG_TYPE_ARRAY: return "array";
    case CONFIG_TYPE_LIST: return "list";
    }
    return "nothing";
}

static void value_clear(em_value_t *v) {
    free(v->s);
    v->s = NULL;
    for (size_t i = 0; i < v->nlist; i++)
        free(v->list[i]);
    free(v->list);
    v->list = NULL;
    v->nlist = 0;
}

static void values_free(em_value_t *vals, size_t n) {
    if (!vals)
        return;
    for (size_t i = 0; i < n; i++)
        value_clear(&vals[i]);
    free(vals);
}

/* Copies src into d (zeroed); on EM_ENOMEM d holds what was copied (value_clear frees it). */
static em_err_t value_copy(em_value_t *d, const em_value_t *src) {
    d->i = src->i;
    memcpy(d->source, src->source, sizeof(d->source));
    if (src->s && !(d->s = strdup(src->s)))
        return EM_ENOMEM;
    if (src->nlist) {
        d->list = calloc(src->nlist + 1, sizeof(char *));
        if (!d->list)
            return EM_ENOMEM;
        for (size_t j = 0; j < src->nlist; j++) {
            if (!(d->list[j] = strdup(src->list[j])))
                return EM_ENOMEM;
            d->nlist = j + 1;
        }
    }
    return EM_OK;
}

static em_value_t *values_dup(const em_value_t *src, size_t n) {
    em_value_t *d = calloc(n, sizeof(*d));
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (value_copy(&d[i], &src[i]) != EM_OK) {
            values_free(d, n);
            return NULL;
        }
    return d;
}

static void inst_free(em_inst_t *inst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(inst[i].key);
        value_clear(&inst[i].v);
    }
    free(inst);
}

static em_err_t inst_dup(const em_inst_t *src, size_t n, em_inst_t **out) {
    *out = NULL;
    if (!n)
        return EM_OK;
    em_inst_t *d = calloc(n, sizeof(*d));
    if (!d)
        return EM_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        d[i].tidx = src[i].tidx;
        if (!(d[i].key = strdup(src[i].key)) || value_copy(&d[i].v, &src[i].v) != EM_OK) {
            inst_free(d, n);
            return EM_ENOMEM;
        }
    }
    *out = d;
    return EM_OK;
}

/* One key segment a wildcard matches: a name of letters, digits, '_' and '-'. */
static int name_ok(const char *s, size_t n) {
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

/* Does key match the table key tmpl, whose "*" segments match one name each?
 * With prefix set: do key's segments match tmpl's first segments, with more
 * of tmpl left (key is a group on the way to tmpl)? */
static int key_match(const char *tmpl, const char *key, int prefix) {
    const char *t = tmpl, *k = key;
    for (;;) {
        size_t tl = strcspn(t, "."), kl = strcspn(k, ".");
        if (tl == 1 && *t == '*') {
            if (!name_ok(k, kl))
                return 0;
        } else if (tl != kl || memcmp(t, k, tl) != 0) {
            return 0;
        }
        t += tl;
        k += kl;
        if (!*k)
            return prefix ? *t == '.' : !*t;
        if (!*t)
            return 0;
        t++;
        k++;
    }
}

static int is_wildcard(const em_setting_t *s) { return strchr(s->key, '*') != NULL; }

static ssize_t find_key(const em_setting_t *table, size_t n, const char *key) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].key, key) == 0)
            return (ssize_t)i;
    return -1;
}

/* The table entry of a concrete key: its own, or the wildcard entry it
 * matches ("exec.resize.argv" -> "exec.*.argv"). A key with a "*" in it
 * names no setting: the wildcard's default is not settable. */
static ssize_t lookup(const em_setting_t *table, size_t n, const char *key) {
    if (strchr(key, '*'))
        return -1;
    ssize_t idx = find_key(table, n, key);
    for (size_t i = 0; idx < 0 && i < n; i++)
        if (is_wildcard(&table[i]) && key_match(table[i].key, key, 0))
            idx = (ssize_t)i;
    return idx;
}

/* Is key a strict prefix group of some table key ("kafka" for "kafka.x",
 * "exec.resize" for "exec.*.argv")? */
static int is_group_prefix(const em_setting_t *table, size_t n, const char *key) {
    if (strchr(key, '*'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (key_match(table[i].key, key, 1))
            return 1;
    return 0;
}

static em_inst_t *inst_find(em_inst_t *inst, size_t n, const char *key) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(inst[i].key, key) == 0)
            return &inst[i];
    return NULL;
}

/* Where key's value lives in st: the table's slot, or its wildcard instance
 * (made from the default when new). NULL when out of memory. */
static em_value_t *slot(const em_setting_t *table, em_state_t *st, size_t idx, const char *key) {
    if (!is_wildcard(&table[idx]))
        return &st->values[idx];
    em_inst_t *in = inst_find(st->inst, st->ninst, key);
    if (in)
        return &in->v;
    em_inst_t *grown = realloc(st->inst, (st->ninst + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    st->inst = grown;
    in = &grown[st->ninst];
    memset(in, 0, sizeof(*in));
    in->tidx = idx;
    if (!(in->key = strdup(key)))
        return NULL;
    st->ninst++;
    if (value_copy(&in->v, &st->values[idx]) != EM_OK)
        return NULL;
    return &in->v;
}

static em_err_t check_int(const em_setting_t *s, int64_t v, const char *where, char *err, size_t en) {
    if (v < s->min) {
        snprintf(err, en, "%s: key '%s': %" PRId64 " is below the minimum %" PRId64, where, s->key, v,
                 s->min);
        return EM_ECONFIG;
    }
    if (v > s->max) {
        snprintf(err, en, "%s: key '%s': %" PRId64 " is above the maximum %" PRId64, where, s->key, v,
                 s->max);
        return EM_ECONFIG;
    }
    return EM_OK;
}

static em_err_t check_str(const em_setting_t *s, const char *v, const char *where, char *err, size_t en) {
    size_t len = strlen(v);
    if (s->max > 0 && ((int64_t)len < s->min || (int64_t)len > s->max)) {
        snprintf(err, en, "%s: key '%s': length %zu is outside %" PRId64 "..%" PRId64, where, s->key, len,
                 s->min, s->max);
        return EM_ECONFIG;
    }
    return EM_OK;
}

/* Parses text for setting s into v (the --set and default path). */
static em_err_t parse_text(const em_setting_t *s, const char *text, em_value_t *v, const char *where,
                           char *err, size_t en) {
    switch (s->type) {
    case EM_CFG_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(text, &end, 0);
        if (errno || end == text || *end) {
            snprintf(err, en, "%s: key '%s': expected integer, got '%s'", where, s->key, text);
            return EM_ECONFIG;
        }
        if (check_int(s, x, where, err, en))
            return EM_ECONFIG;
        v->i = x;
        return EM_OK;
    }
    case EM_CFG_BOOL:
        if (!strcmp(text, "true") || !strcmp(text, "1") || !strcmp(text, "yes")) {
            v->i = 1;
        } else if (!strcmp(text, "false") || !strcmp(text, "0") || !strcmp(text, "no")) {
            v->i = 0;
        } else {
            snprintf(err, en, "%s: key '%s': expected boolean, got '%s'", where, s->key, text);
            return EM_ECONFIG;
        }
        return EM_OK;
    case EM_CFG_STR: {
        if (check_str(s, text, where, err, en))
            return EM_ECONFIG;
        char *d = strdup(text);
        if (!d)
            return EM_ENOMEM;
        free(v->s);
        v->s = d;
        return EM_OK;
    }
    case EM_CFG_STRLIST: {
        /* comma-separated on the command line; "" is the empty list */
        value_clear(v);
        size_t cnt = 0;
        if (*text) {
            cnt = 1;
            for (const char *p = text; *p; p++)
                cnt += *p == ',';
        }
        if (s->max > 0 && (int64_t)cnt > s->max) {
            snprintf(err, en, "%s: key '%s': %zu elements, at most %" PRId64 " allowed", where, s->key, cnt, s->max);
            return EM_ECONFIG;
        }
        v->list = calloc(cnt + 1, sizeof(char *));
        if (!v->list)
            return EM_ENOMEM;
        const char *p = text;
        for (size_t i = 0; i < cnt; i++) {
            const char *c = strchr(p, ',');
            size_t len = c ? (size_t)(c - p) : strlen(p);
            v->list[i] = strndup(p, len);
            if (!v->list[i])
                return EM_ENOMEM;
            v->nlist = i + 1;
            p = c ? c + 1 : p + len;
        }
        return EM_OK;
    }
    }
    return EM_EINVAL;
}

em_config_t *em_config_new(const char *service, const em_setting_t *table, size_t n, char *errstr,
                           size_t errstr_size) {
    em_config_t *cfg = calloc(1, sizeof(*cfg));
    if (!cfg) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    snprintf(cfg->service, sizeof(cfg->service), "%s", service);
    cfg->table = table;
    cfg->n = n;
    cfg->values = calloc(n ? n : 1, sizeof(em_value_t));
    if (!cfg->values) {
        free(cfg);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (find_key(table, i, table[i].key) >= 0) {
            snprintf(errstr, errstr_size, "settings table: key '%s' appears twice", table[i].key);
            em_config_destroy(cfg);
            return NULL;
        }
        if (parse_text(&table[i], table[i].def, &cfg->values[i], "default", errstr, errstr_size)) {
            em_config_destroy(cfg);
            return NULL;
        }
        snprintf(cfg->values[i].source, sizeof(cfg->values[i].source), "default");
    }
    return cfg;
}

void em_config_destroy(em_config_t *cfg) {
    if (!cfg)
        return;
    values_free(cfg->values, cfg->n);
    inst_free(cfg->inst, cfg->ninst);
    free(cfg);
}

/* Validates one libconfig leaf against its table entry and stores it. */
static em_err_t take_setting(em_config_t *cfg, em_state_t *vals, const config_setting_t *st,
                             const char *path, const char *file, char *err, size_t en) {
    int line = config_setting_source_line(st);
    char where[256];
    snprintf(where, sizeof(where), "%s:%d", file, line);

    ssize_t idx = lookup(cfg->table, cfg->n, path);
    if (idx < 0) {
        snprintf(err, en, "%s: unknown key '%s' (see --help for the %s settings)", where, path,
                 cfg->service);
        return EM_ECONFIG;
    }
    em_setting_t named = cfg->table[idx];
    named.key = path; /* errors name the concrete key, not its wildcard */
    const em_setting_t *s = &named;
    em_value_t *v = slot(cfg->table, vals, (size_t)idx, path);
    if (!v)
        return EM_ENOMEM;
    int t = config_setting_type(st);

    switch (s->type) {
    case EM_CFG_INT:
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
            goto wrong_type;
        if (check_int(s, config_setting_get_int64(st), where, err, en))
            return EM_ECONFIG;
        v->i = config_setting_get_int64(st);
        break;
    case EM_CFG_BOOL:
        if (t != CONFIG_TYPE_BOOL)
            goto wrong_type;
        v->i = config_setting_get_bool(st);
        break;
    case EM_CFG_STR: {
        if (t != CONFIG_TYPE_STRING)
            goto wrong_type;
        const char *sv = config_setting_get_string(st);
        if (check_str(s, sv, where, err, en))
            return EM_ECONFIG;
        char *d = strdup(sv);
        if (!d)
            return EM_ENOMEM;
        free(v->s);
        v->s = d;
        break;
    }
    case EM_CFG_STRLIST: {
        if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
            goto wrong_type;
        int cnt = config_setting_length(st);
        if (s->max > 0 && cnt > s->max) {
            snprintf(err, en, "%s: key '%s': %d elements, at most %" PRId64 " allowed", where, path, cnt, s->max);
            return EM_ECONFIG;
        }
        value_clear(v);
        v->list = calloc((size_t)cnt + 1, sizeof(char *));
        if (!v->list)
            return EM_ENOMEM;
        for (int i = 0; i < cnt; i++) {
            const config_setting_t *el = config_setting_get_elem(st, (unsigned)i);
            if (config_setting_type(el) != CONFIG_TYPE_STRING) {
                snprintf(err, en, "%s: key '%s': element %d: expected string, got %s", where, path, i,
                         lc_type_name(config_setting_type(el)));
                return EM_ECONFIG;
            }
            if (!(v->list[i] = strdup(config_setting_get_string(el))))
                return EM_ENOMEM;
            v->nlist = (size_t)i + 1;
        }
        break;
    }
    }
    snprintf(v->source, sizeof(v->source), "%s", where);
    return EM_OK;

wrong_type:
    snprintf(err, en, "%s: key '%s': expected %s, got %s", where, path, type_name(s->type),
             lc_type_name(t));
    return EM_ECONFIG;
}

static em_err_t walk(em_config_t *cfg, em_state_t *vals, const config_setting_t *group,
                     const char *prefix, const char *file, char *err, size_t en) {
    int cnt = config_setting_length(group);
    for (int i = 0; i < cnt; i++) {
        const config_setting_t *st = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(st);
        char path[256];
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", name ? name : "?");
        if (config_setting_type(st) == CONFIG_TYPE_GROUP) {
            /* a group where a known scalar is expected is a wrong type, not an
             * unknown key: take_setting says "expected integer, got group" */
            if (lookup(cfg->table, cfg->n, path) >= 0) {
                em_err_t rc = take_setting(cfg, vals, st, path, file, err, en);
                if (rc)
                    return rc;
                continue;
            }
            if (!is_group_prefix(cfg->table, cfg->n, path)) {
                snprintf(err, en, "%s:%d: unknown key '%s' (see --help for the %s settings)", file,
                         config_setting_source_line(st), path, cfg->service);
                return EM_ECONFIG;
            }
            em_err_t rc = walk(cfg, vals, st, path, file, err, en);
            if (rc)
                return rc;
        } else {
            if (lookup(cfg->table, cfg->n, path) < 0 && is_group_prefix(cfg->table, cfg->n, path)) {
                snprintf(err, en, "%s:%d: key '%s': expected group, got %s", file,
                         config_setting_source_line(st), path, lc_type_name(config_setting_type(st)));
                return EM_ECONFIG;
            }
            em_err_t rc = take_setting(cfg, vals, st, path, file, err, en);
            if (rc)
                return rc;
        }
    }
    return EM_OK;
}

em_err_t em_config_load_file(em_config_t *cfg, const char *path, char *errstr, size_t errstr_size) {
    config_t lc;
    em_err_t rc = EM_OK;
    em_state_t st = {0};
    FILE *f = fopen(path, "r");

    config_init(&lc);
    if (!f) {
        snprintf(errstr, errstr_size, "%s: cannot read: %s", path, strerror(errno));
        rc = EM_ECONFIG;
        goto out;
    }
    if (!config_read(&lc, f)) {
        snprintf(errstr, errstr_size, "%s:%d: %s", path, config_error_line(&lc), config_error_text(&lc));
        rc = EM_ECONFIG;
        goto out;
    }
    st.values = values_dup(cfg->values, cfg->n);
    if (!st.values || inst_dup(cfg->inst, cfg->ninst, &st.inst) != EM_OK) {
        snprintf(errstr, errstr_size, "out of memory");
        rc = EM_ENOMEM;
        goto out;
    }
    st.ninst = cfg->ninst;
    rc = walk(cfg, &st, config_root_setting(&lc), "", path, errstr, errstr_size);
    if (rc == EM_ENOMEM)
        snprintf(errstr, errstr_size, "out of memory");
    if (rc == EM_OK) { /* swap: the old values are freed below */
        em_state_t old = {cfg->values, cfg->inst, cfg->ninst};
        cfg->values = st.values;
        cfg->inst = st.inst;
        cfg->ninst = st.ninst;
        st = old;
    }
out:
    if (f)
        fclose(f);
    values_free(st.values, cfg->n);
    inst_free(st.inst, st.ninst);
    config_destroy(&lc);
    return rc;
}

em_err_t em_config_set(em_config_t *cfg, const char *assignment, char *errstr, size_t errstr_size) {
    const char *eq = strchr(assignment, '=');
    char key[256];
    if (!eq || eq == assignment || (size_t)(eq - assignment) >= sizeof(key)) {
        snprintf(errstr, errstr_size, "--set %s: expected KEY=VALUE", assignment);
        return EM_ECONFIG;
    }
    memcpy(key, assignment, (size_t)(eq - assignment));
    key[eq - assignment] = '\0';
    ssize_t idx = lookup(cfg->table, cfg->n, key);
    if (idx < 0) {
        snprintf(errstr, errstr_size, "--set: unknown key '%s' (see --help for the %s settings)", key,
                 cfg->service);
        return EM_ECONFIG;
    }
    em_value_t tmp = {0};
    em_setting_t s = cfg->table[idx];
    s.key = key; /* errors name the concrete key */
    em_err_t rc = parse_text(&s, eq + 1, &tmp, "--set", errstr, errstr_size);
    em_state_t st = {cfg->values, cfg->inst, cfg->ninst};
    em_value_t *v = rc ? NULL : slot(cfg->table, &st, (size_t)idx, key);
    cfg->inst = st.inst;
    cfg->ninst = st.ninst;
    if (!rc && !v) {
        snprintf(errstr, errstr_size, "--set %s: out of memory", key);
        rc = EM_ENOMEM;
    }
    if (rc) {
        value_clear(&tmp);
        return rc;
    }
    value_clear(v);
    *v = tmp;
    snprintf(v->source, sizeof(v->source), "--set");
    return EM_OK;
}

/* The value of key: its own, its wildcard instance, or the wildcard's default. */
static const em_value_t *value_of(const em_config_t *cfg, ssize_t idx, const char *key) {
    if (is_wildcard(&cfg->table[idx])) {
        const em_inst_t *in = inst_find(cfg->inst, cfg->ninst, key);
        if (in)
            return &in->v;
    }
    return &cfg->values[idx];
}

static const em_value_t *get(const em_config_t *cfg, const char *key, em_cfg_type_t type) {
    ssize_t idx = lookup(cfg->table, cfg->n, key);
    if (idx < 0 && strchr(key, '*'))
        idx = find_key(cfg->table, cfg->n, key); /* the wildcard itself: its default */
    if (idx < 0 || cfg->table[idx].type != type) {
        EM_ERROR("config: programming error: no such key of this type", EM_F_STR("key", key),
                 EM_F_STR("type", type_name(type)));
        abort();
    }
    return value_of(cfg, idx, key);
}

int64_t em_config_int(const em_config_t *cfg, const char *key) { return get(cfg, key, EM_CFG_INT)->i; }

int em_config_bool(const em_config_t *cfg, const char *key) { return (int)get(cfg, key, EM_CFG_BOOL)->i; }

const char *em_config_str(const em_config_t *cfg, const char *key) {
    const em_value_t *v = get(cfg, key, EM_CFG_STR);
    return v->s ? v->s : "";
}

size_t em_config_list_len(const em_config_t *cfg, const char *key) {
    return get(cfg, key, EM_CFG_STRLIST)->nlist;
}

const char *em_config_list_get(const em_config_t *cfg, const char *key, size_t i) {
    const em_value_t *v = get(cfg, key, EM_CFG_STRLIST);
    return i < v->nlist ? v->list[i] : NULL;
}

const char *em_config_source(const em_config_t *cfg, const char *key) {
    ssize_t idx = lookup(cfg->table, cfg->n, key);
    return idx < 0 ? "unknown" : value_of(cfg, idx, key)->source;
}

const char *em_config_instance_key(const em_config_t *cfg, size_t i) {
    return i < cfg->ninst ? cfg->inst[i].key : NULL;
}

static void range_text(const em_setting_t *s, char *buf, size_t n) {
    if (s->type == EM_CFG_INT)
        snprintf(buf, n, "%" PRId64 "..%" PRId64, s->min, s->max);
    else if (s->type == EM_CFG_STR && s->max > 0)
        snprintf(buf, n, "length %" PRId64 "..%" PRId64, s->min, s->max);
    else
        snprintf(buf, n, "-");
}

void em_config_write_help(const em_setting_t *table, size_t n, FILE *out) {
    for (size_t i = 0; i < n; i++) {
        char range[64];
        range_text(&table[i], range, sizeof(range));
        fprintf(out, "  %-34s %-8s default \"%s\"%s%s\n      %s\n", table[i].key,
                type_name(table[i].type), table[i].def, table[i].type == EM_CFG_INT ? ", range " : "",
                table[i].type == EM_CFG_INT ? range : "", table[i].help);
    }
}

void em_config_write_reference(const char *service, const em_setting_t *table, size_t n, FILE *out) {
    fprintf(out, "## %s\n\n| key | type | default | range | meaning |\n|---|---|---|---|---|\n", service);
    for (size_t i = 0; i < n; i++) {
        char range[64];
        range_text(&table[i], range, sizeof(range));
        fprintf(out, "| `%s` | %s | `%s%s%s` | %s | %s |\n", table[i].key, type_name(table[i].type),
                *table[i].def ? "" : "\"", table[i].def, *table[i].def ? "" : "\"", range, table[i].help);
    }
    fprintf(out, "\n");
}

void em_config_log(const em_config_t *cfg) {
    char buf[6144];
    size_t o = 0;
    buf[o++] = '{';
    for (size_t i = 0; i < cfg->n + cfg->ninst && o < sizeof(buf) - 64; i++) {
        const em_setting_t *s = &cfg->table[i < cfg->n ? i : cfg->inst[i - cfg->n].tidx];
        const em_value_t *v = i < cfg->n ? &cfg->values[i] : &cfg->inst[i - cfg->n].v;
        const char *key = i < cfg->n ? s->key : cfg->inst[i - cfg->n].key;
        char val[512];
        switch (s->type) {
        case EM_CFG_INT: snprintf(val, sizeof(val), "%" PRId64, v->i); break;
        case EM_CFG_BOOL: snprintf(val, sizeof(val), "%s", v->i ? "true" : "false"); break;
        case EM_CFG_STR: {
            char esc[400];
            em_json_escape(esc, sizeof(esc), v->s ? v->s : "", v->s ? strlen(v->s) : 0);
            snprintf(val, sizeof(val), "\"%s\"", esc);
            break;
        }
        case EM_CFG_STRLIST: snprintf(val, sizeof(val), "%zu", v->nlist); break;
        }
        int w = snprintf(buf + o, sizeof(buf) - o, "%s\"%s\":%s", i ? "," : "", key, val);
        if (w < 0 || (size_t)w >= sizeof(buf) - o)
            break;
        o += (size_t)w;
    }
    buf[o++] = '}';
    buf[o] = '\0';
    EM_INFO("effective configuration", EM_F_RAW("settings", buf));
}
