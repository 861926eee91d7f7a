/* SPDX-License-Identifier: Apache-2.0 */
/* The scheduler's authorization table (em_authz.h). */
#include "em_authz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct group {
    char *name;
    char *identity;
    char **handlers;
    size_t nhandlers;
    int any_handler;
    int cancel;
} group_t;

struct em_authz {
    group_t *groups;
    size_t n;
};

void em_authz_destroy(em_authz_t *a) {
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++) {
        group_t *g = &a->groups[i];
        free(g->name);
        free(g->identity);
        for (size_t j = 0; j < g->nhandlers; j++)
            free(g->handlers[j]);
        free(g->handlers);
    }
    free(a->groups);
    free(a);
}

static const group_t *find(const em_authz_t *a, const char *identity) {
    if (!a || !identity || !*identity)
        return NULL;
    for (size_t i = 0; i < a->n; i++)
        if (a->groups[i].identity && strcmp(a->groups[i].identity, identity) == 0) /* NULL: being added */
            return &a->groups[i];
    return NULL;
}

/* Adds group name (once) from cfg; -1 with errstr on a bad group. */
static int add_group(em_authz_t *a, const em_config_t *cfg, const char *first_key, char *errstr, size_t en,
                     char *key, size_t keyn) {
    const char *name = first_key + 6; /* after "authz." */
    size_t nl = strcspn(name, ".");
    char k[320];
    snprintf(k, sizeof(k), "authz");
    for (size_t i = 0; i < a->n; i++)
        if (strlen(a->groups[i].name) == nl && memcmp(a->groups[i].name, name, nl) == 0)
            return 0;
    group_t *grown = realloc(a->groups, (a->n + 1) * sizeof(*grown));
    if (!grown)
        goto oom;
    a->groups = grown;
    group_t *g = &a->groups[a->n];
    memset(g, 0, sizeof(*g));
    if (!(g->name = strndup(name, nl)))
        goto oom;
    a->n++;
    snprintf(k, sizeof(k), "authz.%s.identity", g->name);
    const char *id = em_config_str(cfg, k);
    if (!*id) {
        snprintf(key, keyn, "%s", first_key); /* the key the file did set: its line is the group's */
        snprintf(errstr, en, "authz group '%s' names no identity (%s)", g->name, k);
        return -1;
    }
    const group_t *same = find(a, id);
    if (same) {
        snprintf(key, keyn, "%s", k);
        snprintf(errstr, en, "identity '%s' is named by authz groups '%s' and '%s': one group per identity", id,
                 same->name, g->name);
        return -1;
    }
    if (!(g->identity = strdup(id)))
        goto oom;
    snprintf(k, sizeof(k), "authz.%s.handlers", g->name);
    size_t nh = em_config_list_len(cfg, k);
    if (nh && !(g->handlers = calloc(nh, sizeof(char *))))
        goto oom;
    for (; g->nhandlers < nh; g->nhandlers++) {
        const char *h = em_config_list_get(cfg, k, g->nhandlers);
        if (strcmp(h, "*") == 0)
            g->any_handler = 1;
        if (!(g->handlers[g->nhandlers] = strdup(h)))
            goto oom;
    }
    snprintf(k, sizeof(k), "authz.%s.cancel", g->name);
    g->cancel = em_config_bool(cfg, k);
    return 0;
oom:
    snprintf(key, keyn, "%s", k);
    snprintf(errstr, en, "out of memory");
    return -1;
}

em_authz_t *em_authz_from_config(const em_config_t *cfg, char *errstr, size_t errstr_size, char *key, size_t keyn) {
    em_authz_t *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(key, keyn, "authz");
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    const char *k;
    for (size_t i = 0; (k = em_config_instance_key(cfg, i)) != NULL; i++) {
        if (strncmp(k, "authz.", 6) != 0)
            continue;
        if (add_group(a, cfg, k, errstr, errstr_size, key, keyn) != 0) {
            em_authz_destroy(a);
            return NULL;
        }
    }
    return a;
}

int em_authz_may_submit(const em_authz_t *a, const char *identity, const char *handler) {
    const group_t *g = find(a, identity);
    if (!g)
        return 0;
    if (g->any_handler)
        return 1;
    for (size_t i = 0; i < g->nhandlers; i++)
        if (strcmp(g->handlers[i], handler) == 0)
            return 1;
    return 0;
}

int em_authz_may_cancel(const em_authz_t *a, const char *identity) {
    const group_t *g = find(a, identity);
    return g && g->cancel;
}

size_t em_authz_groups(const em_authz_t *a) { return a ? a->n : 0; }
