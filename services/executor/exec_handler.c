/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The exec handlers: each runs a configured argv as a child process per
 * execution (lib/em_child): the payload on its stdin, its stdout as the
 * output, its exit code in the result; past max_output_bytes of stdout the
 * execution FAILS (output is never truncated: a cut result would look whole
 * to its reader). max_output_bytes defaults to publish.max_result_bytes -
 * EM_SIZE_RESERVE, so an output within it leaves room for the rest of its
 * result (the size model in lib/em_sizes.h). A non-zero exit or a signal FAILS with the tail of stderr
 * in the error; past the execution's timeout it is TIMED_OUT (SIGTERM to the
 * child's process group, SIGKILL after kill_grace_ms).
 *
 * Configuration: handlers.exec names the handlers offered; each one's
 * settings are the exec.NAME.* keys (exec.*.argv ... in the settings table).
 * A bad one is refused at start naming the file, the line and the key; an
 * argv[0] that is not an executable file is refused too.
 *
 * Threads: ex_exec_run runs on whichever thread starts the job; every
 * job_finish of an exec job runs on the child supervisor's thread.
 */
#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "em_child.h"
#include "em_log.h"
#include "em_util.h"
#include "executor.h"

struct ex_exec_conf {
    char name[72];
    char **argv; /* NULL-terminated copies */
    char **envp;
    em_child_spec_t base; /* everything but the input, the timeout and the containment */
    int64_t memory_mb, processes, cpu_millis; /* cgroup limits, or rlimits without cgroups */
    int drop_user;
    uid_t uid;
    gid_t gid;
    em_metric_t *m_running, *m_timeout_kills, *m_spawn_failed, *m_oom_kills, *m_pids_limited;
};

static em_child_sup_t *sup;
static em_cgroup_env_t *cg_env;
static int use_cgroups;         /* each run in a cgroup of its own */
static char workdir_base[4096]; /* BASE/execmesh-REPLICA: each run's fresh directory is made in it */

/* One execution handed to the supervisor. Freed by the last of exec_done
 * and ex_exec_run (which reads its stop after em_child_run). */
typedef struct exec_run {
    ex_job_t *job;
    ex_exec_conf_t *conf;
    ex_stop_t stop; /* a cancel kills the child with stop.key (its spec.cancel_key) */
    atomic_int refs;
    char group[128]; /* its cgroup's name (the spec borrows it until the run is over) */
} exec_run_t;

static atomic_uint_fast64_t next_key = 1;

static void run_unref(exec_run_t *r) {
    if (atomic_fetch_sub(&r->refs, 1) == 1)
        free(r);
}

/* A cancel took the stop: the child's process group gets SIGTERM, then
 * SIGKILL after kill_grace_ms; exec_done ends the job CANCELLED. */
static void exec_stop(ex_job_t *job, uint64_t key) {
    (void)job;
    if (sup)
        em_child_cancel(sup, key);
}

static void strv_free(char **v) {
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* The n strings of list key as a NULL-terminated array (extra first, when given). */
static char **strv_from(const em_config_t *cfg, const char *key, const char *extra) {
    size_t n = em_config_list_len(cfg, key), k = 0;
    char **v = calloc(n + 2, sizeof(char *));
    if (!v)
        return NULL;
    if (extra && !(v[k++] = strdup(extra)))
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (!(v[k++] = strdup(em_config_list_get(cfg, key, i))))
            goto fail;
    return v;
fail:
    strv_free(v);
    return NULL;
}

void ex_exec_conf_free(ex_exec_conf_t *c) {
    if (!c)
        return;
    strv_free(c->argv);
    strv_free(c->envp);
    free(c);
}

/* Prints "PROGRAM: config refused: SOURCE: key 'KEY': REASON" (SOURCE: where srckey was set); returns -1. */
static int refuse(const char *program, const em_config_t *cfg, const char *key, const char *srckey, const char *fmt,
                  ...) __attribute__((format(printf, 5, 6)));
static int refuse(const char *program, const em_config_t *cfg, const char *key, const char *srckey, const char *fmt,
                  ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: config refused: %s: key '%s': %s\n", program, em_config_source(cfg, srckey), key, msg);
    return -1;
}

static int name_ok(const char *s) {
    if (!*s || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-'))
            return 0;
    return 1;
}

static int check_names(const em_config_t *cfg, const char *program) {
    size_t n = em_config_list_len(cfg, "handlers.exec");
    for (size_t i = 0; i < n; i++) {
        const char *name = em_config_list_get(cfg, "handlers.exec", i);
        if (!name_ok(name))
            return refuse(program, cfg, "handlers.exec", "handlers.exec",
                          "'%s' is not a handler name (1 to 64 of letters, digits, '_', '-')", name);
    }
    /* every exec.NAME.* written must belong to an offered handler: a typo is
     * refused rather than silently ignored */
    const char *key;
    for (size_t i = 0; (key = em_config_instance_key(cfg, i)) != NULL; i++) {
        if (strncmp(key, "exec.", 5) != 0)
            continue;
        const char *nm = key + 5;
        size_t nl = strcspn(nm, ".");
        int offered = 0;
        for (size_t j = 0; j < n && !offered; j++) {
            const char *h = em_config_list_get(cfg, "handlers.exec", j);
            offered = strlen(h) == nl && memcmp(h, nm, nl) == 0;
        }
        if (!offered) {
            char name[72];
            snprintf(name, sizeof(name), "%.*s", (int)(nl > 64 ? 64 : nl), nm);
            return refuse(program, cfg, key, key, "exec handler '%s' is not offered: add it to handlers.exec", name);
        }
    }
    return 0;
}

/* Refuses exec handler name's argv and env when they cannot work: argv[0]
 * not an absolute path to an executable regular file, an env entry that is
 * not NAME=VALUE. */
static int check_one(const em_config_t *cfg, const char *name, const char *program) {
    char key[128];
    snprintf(key, sizeof(key), "exec.%s.argv", name);
    if (em_config_list_len(cfg, key) == 0)
        return refuse(program, cfg, key, "handlers.exec", "exec handler '%s' (in handlers.exec) needs exec.%s.argv",
                      name, name);
    const char *path = em_config_list_get(cfg, key, 0);
    struct stat st;
    if (path[0] != '/')
        return refuse(program, cfg, key, key, "'%s' is not an absolute path", path);
    if (stat(path, &st) != 0 || access(path, X_OK) != 0)
        return refuse(program, cfg, key, key, "'%s' is not an executable file: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return refuse(program, cfg, key, key, "'%s' is not an executable file: not a regular file", path);
    snprintf(key, sizeof(key), "exec.%s.user", name);
    const char *user = em_config_str(cfg, key);
    if (user[0] && !getpwnam(user))
        return refuse(program, cfg, key, key, "no user '%s' on this machine", user);
    snprintf(key, sizeof(key), "exec.%s.env", name);
    size_t ne = em_config_list_len(cfg, key);
    for (size_t i = 0; i < ne; i++) {
        const char *e = em_config_list_get(cfg, key, i);
        if (!strchr(e, '=') || e[0] == '=')
            return refuse(program, cfg, key, key, "'%s' is not NAME=VALUE", e);
    }
    return 0;
}

int ex_exec_check(const em_config_t *cfg, const char *program) {
    if (check_names(cfg, program) != 0)
        return -1;
    const char *mode = em_config_str(cfg, "executor.cgroups");
    if (strcmp(mode, "auto") != 0 && strcmp(mode, "required") != 0 && strcmp(mode, "off") != 0)
        return refuse(program, cfg, "executor.cgroups", "executor.cgroups",
                      "'%s' is not one of \"auto\", \"required\", \"off\"", mode);
    size_t n = em_config_list_len(cfg, "handlers.exec");
    for (size_t i = 0; i < n; i++)
        if (check_one(cfg, em_config_list_get(cfg, "handlers.exec", i), program) != 0)
            return -1;
    return 0;
}

ex_exec_conf_t *ex_exec_conf_new(const em_config_t *cfg, const char *name, em_metrics_t *metrics,
                                 const char *program) {
    char key[128], labels[128];
    ex_exec_conf_t *c = calloc(1, sizeof(*c));
    if (!c) {
        fprintf(stderr, "%s: out of memory\n", program);
        return NULL;
    }
    snprintf(c->name, sizeof(c->name), "%s", name);
#define KEY(k) (snprintf(key, sizeof(key), "exec.%s.%s", name, k), key)
    KEY("argv");
    c->argv = strv_from(cfg, key, NULL);
    size_t ne = em_config_list_len(cfg, KEY("env"));
    c->envp = ne ? strv_from(cfg, key, NULL) : strv_from(cfg, key, "PATH=/usr/local/bin:/usr/bin:/bin");
    if (!c->argv || !c->envp) {
        fprintf(stderr, "%s: out of memory\n", program);
        goto fail;
    }
    c->base.argv = (const char *const *)c->argv;
    c->base.envp = (const char *const *)c->envp;
    c->base.max_output = (size_t)em_config_int(cfg, KEY("max_output_bytes"));
    if (!c->base.max_output) /* the size model: the output and the rest of its result fit (lib/em_sizes.h) */
        c->base.max_output = (size_t)(em_config_int(cfg, "publish.max_result_bytes") - EM_SIZE_RESERVE);
    c->base.kill_grace_ms = em_config_int(cfg, KEY("kill_grace_ms"));
    c->base.limits.cpu_seconds = em_config_int(cfg, KEY("cpu_seconds"));
    c->base.limits.open_files = em_config_int(cfg, KEY("open_files"));
    c->memory_mb = em_config_int(cfg, KEY("memory_mb"));
    c->processes = em_config_int(cfg, KEY("processes"));
    c->cpu_millis = em_config_int(cfg, KEY("cpu_millis"));
    const char *user = em_config_str(cfg, KEY("user"));
    if (user[0]) {
        struct passwd *pw = getpwnam(user); /* ex_exec_check saw it exists */
        if (!pw) {
            fprintf(stderr, "%s: config refused: %s: key '%s': no user '%s' on this machine\n", program,
                    em_config_source(cfg, key), key, user);
            goto fail;
        }
        c->drop_user = 1;
        c->uid = pw->pw_uid;
        c->gid = pw->pw_gid;
    }
#undef KEY
    snprintf(labels, sizeof(labels), "handler=\"%s\"", name);
    c->m_running = em_metrics_gauge(metrics, "execmesh_exec_children_running", labels,
                                    "Child processes of an exec handler running now.");
    c->m_timeout_kills = em_metrics_counter(metrics, "execmesh_exec_timeout_kills_total", labels,
                                            "Children of an exec handler killed because the execution timed out.");
    c->m_spawn_failed = em_metrics_counter(metrics, "execmesh_exec_spawn_failures_total", labels,
                                           "Children of an exec handler that could not be started (fork, execve, ...).");
    c->m_oom_kills = em_metrics_counter(metrics, "execmesh_exec_oom_kills_total", labels,
                                        "Executions of an exec handler the kernel's OOM killer ended (memory_mb).");
    c->m_pids_limited = em_metrics_counter(metrics, "execmesh_exec_pids_limit_hits_total", labels,
                                           "Executions of an exec handler whose fork was refused by the pids limit.");
    return c;
fail:
    ex_exec_conf_free(c);
    return NULL;
}

/* Removes what an earlier incarnation left in dir (its runs' directories),
 * not dir itself. */
static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    if (ftw->level > 0 && remove(path) != 0)
        EM_WARN("cannot remove a run's leftover", EM_F_STR("path", path), EM_F_STR("error", strerror(errno)));
    return 0;
}

/* BASE/execmesh-REPLICA, made (0711: a run's own 0700 directory inside it
 * is reachable by the user it runs as) and emptied. */
static int make_workdir_base(const char *base, const char *replica, char *errstr, size_t n) {
    snprintf(workdir_base, sizeof(workdir_base), "%s/execmesh-%s", base, replica);
    if (mkdir(base, 0755) != 0 && errno != EEXIST) {
        snprintf(errstr, n, "executor.workdir_base: cannot make %s: %s", base, strerror(errno));
        return -1;
    }
    if (mkdir(workdir_base, 0711) != 0 && errno != EEXIST) {
        snprintf(errstr, n, "executor.workdir_base: cannot make %s: %s", workdir_base, strerror(errno));
        return -1;
    }
    chmod(workdir_base, 0711);
    nftw(workdir_base, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* A cgroup path component from the replica name. */
static void cgroup_root_of(const char *replica, char *out, size_t n) {
    size_t o = (size_t)snprintf(out, n, "execmesh-");
    for (const char *p = replica; *p && o + 1 < n; p++)
        out[o++] = (isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.') ? *p : '_';
    out[o] = '\0';
}

em_err_t ex_exec_start(const em_config_t *cfg, const char *replica, em_metrics_t *metrics, char *errstr,
                       size_t errstr_size) {
    if (sup)
        return EM_OK;
    if (make_workdir_base(em_config_str(cfg, "executor.workdir_base"), replica, errstr, errstr_size) != 0)
        return EM_EINVAL;
    const char *mode = em_config_str(cfg, "executor.cgroups");
    if (strcmp(mode, "off") != 0) {
        cg_env = em_cgroup_env_new();
        if (!cg_env) {
            snprintf(errstr, errstr_size, "out of memory");
            return EM_ENOMEM;
        }
        use_cgroups = em_cgroup_env_complete(cg_env);
        if (!use_cgroups && strcmp(mode, "required") == 0) {
            snprintf(errstr, errstr_size, "executor.cgroups = \"required\", but %s", em_cgroup_env_describe(cg_env));
            return EM_EINVAL;
        }
        if (use_cgroups)
            EM_INFO("exec children are contained: a cgroup per execution", EM_F_STR("cgroups", em_cgroup_env_describe(cg_env)));
        else
            EM_WARN("exec children are NOT contained in cgroups: rlimits and process groups only (memory_mb is "
                    "RLIMIT_AS, processes RLIMIT_NPROC, cpu_millis unused)",
                    EM_F_STR("missing", em_cgroup_env_describe(cg_env)));
    }
    em_metric_set(em_metrics_gauge(metrics, "execmesh_exec_cgroups", NULL,
                                   "1: each exec execution runs in a cgroup of its own (limits, killed whole); "
                                   "0: rlimits and process groups only (executor.cgroups)."),
                  use_cgroups);
    char root[128];
    cgroup_root_of(replica, root, sizeof(root));
    em_child_sup_opts_t o = {
        .cgroups = use_cgroups ? cg_env : NULL,
        .cgroup_root = root,
        .guardian = use_cgroups, /* a kill -9 of this process leaves no child behind */
        .guardian_exe = "/proc/self/exe",
    };
    sup = em_child_sup_new_opts(&o, errstr, errstr_size);
    return sup ? EM_OK : EM_ENOMEM;
}

void ex_exec_stop(void) {
    em_child_sup_destroy(sup); /* kills and reaps every child; their jobs finish as abandoned */
    sup = NULL;
    em_cgroup_env_free(cg_env);
    cg_env = NULL;
}

/* A result's error text must be valid UTF-8 (a protobuf string): stderr's
 * bytes outside printable ASCII, newline and tab are shown as '?'. */
static void append_tail(char *msg, size_t cap, const em_child_result_t *res) {
    size_t o = strlen(msg);
    if (!res->stderr_len || o + 16 >= cap)
        return;
    o += (size_t)snprintf(msg + o, cap - o, "; stderr: ");
    for (size_t i = 0; i < res->stderr_len && o + 1 < cap; i++) {
        unsigned char ch = (unsigned char)res->stderr_tail[i];
        msg[o++] = (ch >= 0x20 && ch < 0x7f) || ch == '\n' || ch == '\t' ? (char)ch : '?';
    }
    msg[o] = '\0';
}

static const char *sig_name(int sig) {
    const char *n = sigabbrev_np(sig);
    return n ? n : "?";
}

/* Runs on the supervisor thread. */
static void exec_done(void *arg, em_child_result_t *res) {
    exec_run_t *r = arg;
    ex_job_t *job = r->job;
    ex_exec_conf_t *c = r->conf;
    ex_stop_disarm(job, &r->stop); /* the job is still here: only this finishes an exec job */
    run_unref(r);
    em_metric_add(c->m_running, -1);
    char msg[EM_CHILD_STDERR_TAIL + 768];
    Execmesh__V1__Status status = EXECMESH__V1__STATUS__FAILED;
    msg[0] = '\0';
    if (res->oom_killed == 1) { /* whatever the shell made of it: the memory limit ended it */
        em_metric_add(c->m_oom_kills, 1);
        snprintf(msg, sizeof(msg), "exec %s: out of memory: the kernel's OOM killer ended it (memory limit %lld MiB, "
                 "exec.%s.memory_mb)", c->name, (long long)c->memory_mb, c->name);
        append_tail(msg, sizeof(msg), res);
        job_finish(job, status, NULL, 0, 0, msg, res->exit_code);
        return;
    }
    switch (res->outcome) {
    case EM_CHILD_EXITED:
        if (res->exit_code == 0) {
            status = EXECMESH__V1__STATUS__SUCCEEDED;
            break;
        }
        snprintf(msg, sizeof(msg), "exec %s: exit code %d", c->name, res->exit_code);
        append_tail(msg, sizeof(msg), res);
        break;
    case EM_CHILD_SIGNALED:
        snprintf(msg, sizeof(msg), "exec %s: killed by signal %d (SIG%s)", c->name, res->term_signal,
                 sig_name(res->term_signal));
        append_tail(msg, sizeof(msg), res);
        break;
    case EM_CHILD_TIMED_OUT:
        status = EXECMESH__V1__STATUS__TIMED_OUT;
        em_metric_add(c->m_timeout_kills, 1);
        snprintf(msg, sizeof(msg), "exec %s: timed out after %lld ms: SIGTERM to its process group%s", c->name,
                 (long long)job->timeout_ms, res->term_signal == SIGKILL ? ", then SIGKILL" : "");
        append_tail(msg, sizeof(msg), res);
        break;
    case EM_CHILD_OUTPUT_LIMIT:
        snprintf(msg, sizeof(msg), "exec %s: output exceeded %zu bytes (exec.%s.max_output_bytes); the child was killed",
                 c->name, c->base.max_output, c->name);
        break;
    case EM_CHILD_SPAWN_FAILED:
        em_metric_add(c->m_spawn_failed, 1);
        snprintf(msg, sizeof(msg), "exec %s: cannot run '%s': %s: %s (errno %d)", c->name, c->argv[0],
                 res->spawn_step, strerror(res->spawn_errno), res->spawn_errno);
        break;
    case EM_CHILD_ABANDONED:
        snprintf(msg, sizeof(msg), "abandoned: executor drain deadline passed");
        break;
    case EM_CHILD_CANCELLED:
        status = EXECMESH__V1__STATUS__CANCELLED;
        if (res->term_signal)
            snprintf(msg, sizeof(msg), "cancelled while running: SIGTERM to its process group%s",
                     res->term_signal == SIGKILL ? ", then SIGKILL" : "");
        else
            snprintf(msg, sizeof(msg), "cancelled before it started");
        break;
    }
    if (res->pids_limit_hit == 1) {
        em_metric_add(c->m_pids_limited, 1);
        size_t o = strlen(msg);
        snprintf(msg + o, sizeof(msg) - o, "%sa fork was refused: pids limit %lld reached (exec.%s.processes)",
                 o ? "; " : "", (long long)c->processes, c->name);
        if (status == EXECMESH__V1__STATUS__SUCCEEDED)
            status = EXECMESH__V1__STATUS__FAILED; /* it did not do all it meant to */
    }
    if (status == EXECMESH__V1__STATUS__SUCCEEDED || res->outcome == EM_CHILD_EXITED ||
        res->outcome == EM_CHILD_SIGNALED) {
        /* stdout goes with the result also when the child failed: it may say why */
        uint8_t *out = res->output;
        res->output = NULL;
        job_finish(job, status, out, res->output_len, 1, msg[0] ? msg : NULL, res->exit_code);
    } else {
        job_finish(job, status, NULL, 0, 0, msg, res->exit_code);
    }
}

void ex_exec_run(ex_job_t *job) {
    ex_exec_conf_t *c = job->handler->ctx;
    exec_run_t *r = calloc(1, sizeof(*r));
    em_err_t rc = EM_ENOMEM;
    if (r) {
        r->job = job;
        r->conf = c;
        r->stop.fn = exec_stop;
        r->stop.key = atomic_fetch_add(&next_key, 1);
        atomic_init(&r->refs, 2);
        em_child_spec_t spec = c->base;
        spec.input = job->ex->payload.p; /* the request outlives the job */
        spec.input_len = job->ex->payload.n;
        spec.timeout_ms = job->run_ms; /* what is left of its timeout */
        spec.cancel_key = r->stop.key;
        if (use_cgroups) {
            /* unique across restarts too: a killed incarnation's guardian may still be purging */
            snprintf(r->group, sizeof(r->group), "%s/run-%ld-%llu", c->name, (long)getpid(),
                     (unsigned long long)r->stop.key);
            spec.cgroup_name = r->group;
            spec.cgroup_limits = (em_cgroup_limits_t){c->memory_mb << 20, c->processes, c->cpu_millis};
        } else {
            spec.limits.memory_mb = c->memory_mb;
            spec.limits.processes = c->processes;
        }
        spec.workdir_base = workdir_base;
        spec.drop_user = c->drop_user;
        spec.uid = c->uid;
        spec.gid = c->gid;
        if (ex_stop_arm(job, &r->stop)) {
            free(r);
            job_finish(job, EXECMESH__V1__STATUS__CANCELLED, NULL, 0, 0, "cancelled before it started", 0);
            return;
        }
        em_metric_add(c->m_running, 1);
        rc = sup ? em_child_run(sup, &spec, exec_done, r) : EM_ESHUTDOWN;
        if (rc == EM_OK) {
            /* from here exec_done may finish job at any moment: only r is
             * ours. A cancel that took the stop before the child was
             * queued was lost by the supervisor: ask again (the key is
             * unique; a second ask is harmless). */
            if (ex_stop_taken(&r->stop))
                exec_stop(NULL, r->stop.key);
            run_unref(r);
            return;
        }
        em_metric_add(c->m_running, -1);
        if (!ex_stop_disarm(job, &r->stop)) {
            /* a cancel took it and asked the supervisor to kill a child
             * that will never exist: nothing finishes it but us */
            free(r);
            job_finish(job, EXECMESH__V1__STATUS__CANCELLED, NULL, 0, 0, "cancelled before it started", 0);
            return;
        }
        free(r);
    }
    char msg[160];
    snprintf(msg, sizeof(msg), "exec %s: cannot start: %s", c->name,
             rc == EM_ESHUTDOWN ? "the executor is stopping" : em_strerror(rc));
    job_finish(job, EXECMESH__V1__STATUS__FAILED, NULL, 0, 0, msg, 0);
}
