/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The handler table: the handlers.* / builtin.NAME.* / exec.NAME.* settings
 * checked when the config is loaded and built at start, lookup by name, and
 * each handler's concurrency.
 *
 * Concurrency is counted in slots. An execution takes a slot of its handler
 * when its Execute call arrives (batch.c) and gives it back when its job
 * ends (job_finish); a taken job starts at once, so nothing waits in the
 * executor for a slot. An execution whose handler has no free slot is
 * refused (ExecuteResponse.refused) and waits in Kafka. Only handlers that
 * run on after their run function returned (async: sleep, exec handlers)
 * count; the others finish before the loop turns again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_log.h"
#include "executor.h"

/* ---- checking the settings ---------------------------------------------- */

int ex_handlers_check(const em_config_t *cfg, const char *program) {
    size_t nb = em_config_list_len(cfg, "handlers.builtin"), ne = em_config_list_len(cfg, "handlers.exec");
    for (size_t i = 0; i < nb; i++) {
        const char *name = em_config_list_get(cfg, "handlers.builtin", i);
        int async;
        if (!builtin_lookup(name, &async)) {
            fprintf(stderr, "%s: config refused: %s: key 'handlers.builtin': unknown builtin '%s' (known: %s)\n",
                    program, em_config_source(cfg, "handlers.builtin"), name, builtin_names());
            return -1;
        }
    }
    for (size_t i = 0; i < ne; i++) {
        const char *name = em_config_list_get(cfg, "handlers.exec", i);
        int twice = 0;
        for (size_t j = 0; j < nb && !twice; j++)
            twice = strcmp(name, em_config_list_get(cfg, "handlers.builtin", j)) == 0;
        for (size_t j = 0; j < i && !twice; j++)
            twice = strcmp(name, em_config_list_get(cfg, "handlers.exec", j)) == 0;
        if (twice) {
            fprintf(stderr,
                    "%s: config refused: %s: key 'handlers.exec': handler '%s' is offered twice (handlers.builtin, "
                    "handlers.exec)\n",
                    program, em_config_source(cfg, "handlers.exec"), name);
            return -1;
        }
    }
    size_t distinct = ne;
    for (size_t i = 0; i < nb; i++) {
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(em_config_list_get(cfg, "handlers.builtin", i), em_config_list_get(cfg, "handlers.builtin", j)) == 0;
        distinct += !seen;
    }
    if (distinct > EX_MAX_HANDLERS) {
        fprintf(stderr, "%s: config refused: %s: key 'handlers.exec': more than %d handlers\n", program,
                em_config_source(cfg, "handlers.exec"), EX_MAX_HANDLERS);
        return -1;
    }
    /* builtin.NAME.* must name an offered builtin: a typo is refused, not ignored */
    const char *key;
    for (size_t i = 0; (key = em_config_instance_key(cfg, i)) != NULL; i++) {
        if (strncmp(key, "builtin.", 8) != 0)
            continue;
        const char *nm = key + 8;
        size_t nl = strcspn(nm, ".");
        int offered = 0;
        for (size_t j = 0; j < nb && !offered; j++) {
            const char *h = em_config_list_get(cfg, "handlers.builtin", j);
            offered = strlen(h) == nl && memcmp(h, nm, nl) == 0;
        }
        if (!offered) {
            fprintf(stderr, "%s: config refused: %s: key '%s': builtin '%.*s' is not offered: add it to handlers.builtin\n",
                    program, em_config_source(cfg, key), key, (int)(nl > 64 ? 64 : nl), nm);
            return -1;
        }
    }
    if (ex_exec_check(cfg, program) != 0) /* names first: the policy keys are per name */
        return -1;
    for (size_t i = 0; i < ne; i++) {
        char prefix[96];
        snprintf(prefix, sizeof(prefix), "exec.%s.", em_config_list_get(cfg, "handlers.exec", i));
        if (ex_retry_policy_check(cfg, prefix, program) != 0)
            return -1;
    }
    return 0;
}

/* ---- building the table ------------------------------------------------- */

/* Adds handler name to the list EX.handler_list shows in errors. */
static void list_handler(const char *name) {
    size_t o = strlen(EX.handler_list);
    snprintf(EX.handler_list + o, sizeof(EX.handler_list) - o, "%s%s", o ? ", " : "", name);
}

static ex_handler_t *handler_named(const char *name) {
    return ex_handler_find((const uint8_t *)name, strlen(name));
}

/* The settings every kind shares: KIND.NAME.default_timeout_ms, the retry
 * policy, the concurrency (conc_key's value, else handlers.concurrency). */
static void handler_common(ex_handler_t *h, const em_config_t *cfg, const char *kind, const char *conc_key) {
    char key[128];
    h->concurrency = conc_key ? (int)em_config_int(cfg, conc_key) : 0;
    if (!h->concurrency)
        h->concurrency = (int)em_config_int(cfg, "handlers.concurrency");
    snprintf(key, sizeof(key), "%s.%s.default_timeout_ms", kind, h->name);
    h->default_timeout_ms = em_config_int(cfg, key);
    if (!h->default_timeout_ms)
        h->default_timeout_ms = em_config_int(cfg, "handlers.default_timeout_ms");
    snprintf(key, sizeof(key), "%s.%s.", kind, h->name);
    ex_retry_policy_read(cfg, key, &h->retry);
    pthread_mutex_init(&h->lock, NULL);
    list_handler(h->name);
}

/* Builds the exec handlers (ex_handlers_check accepted their settings). */
static int setup_exec_handlers(const em_config_t *cfg, const char *program) {
    size_t n = em_config_list_len(cfg, "handlers.exec");
    for (size_t i = 0; i < n; i++) {
        const char *name = em_config_list_get(cfg, "handlers.exec", i);
        ex_exec_conf_t *conf = ex_exec_conf_new(cfg, name, EX.svc.metrics, program);
        if (!conf)
            return -1;
        char key[128];
        ex_handler_t *h = &EX.handlers[EX.nhandlers++];
        h->name = name;
        h->run = ex_exec_run;
        h->async = 1;
        h->ctx = conf;
        snprintf(key, sizeof(key), "exec.%s.concurrency", name);
        handler_common(h, cfg, "exec", key);
    }
    if (n > 0) {
        char err[256];
        if (ex_exec_start(cfg, EX.svc.replica, EX.svc.metrics, err, sizeof(err)) != EM_OK) {
            EM_ERROR("cannot start the child supervisor", EM_F_STR("error", err));
            return -1;
        }
    }
    return 0;
}

int ex_handlers_setup(const em_config_t *cfg, const char *program) {
    size_t n = em_config_list_len(cfg, "handlers.builtin");
    for (size_t i = 0; i < n; i++) {
        const char *name = em_config_list_get(cfg, "handlers.builtin", i);
        int async = 0;
        ex_run_fn run = builtin_lookup(name, &async);
        if (!run) /* ex_handlers_check refused it already */
            return -1;
        if (handler_named(name))
            continue;
        ex_handler_t *h = &EX.handlers[EX.nhandlers++];
        h->name = name;
        h->run = run;
        h->async = async;
        handler_common(h, cfg, "builtin", NULL);
    }
    return setup_exec_handlers(cfg, program);
}

void ex_handlers_cleanup(void) {
    for (int i = 0; i < EX.nhandlers; i++) {
        if (EX.handlers[i].run == ex_exec_run)
            ex_exec_conf_free(EX.handlers[i].ctx);
        pthread_mutex_destroy(&EX.handlers[i].lock);
    }
    EX.nhandlers = 0;
}

/* ---- lookup and slots --------------------------------------------------- */

ex_handler_t *ex_handler_find(const uint8_t *name, size_t n) {
    for (int i = 0; i < EX.nhandlers; i++)
        if (strlen(EX.handlers[i].name) == n && memcmp(EX.handlers[i].name, name, n) == 0)
            return &EX.handlers[i];
    return NULL;
}

int ex_handler_take(ex_handler_t *h, int force, int *running) {
    int taken = 0;
    pthread_mutex_lock(&h->lock);
    if (force || h->running < h->concurrency) {
        h->running++;
        taken = 1;
    }
    *running = h->running;
    pthread_mutex_unlock(&h->lock);
    return taken;
}

void ex_handler_put(ex_handler_t *h) {
    pthread_mutex_lock(&h->lock);
    h->running--;
    pthread_mutex_unlock(&h->lock);
}
