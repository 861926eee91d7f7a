/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_cgroup on the real cgroup hierarchies of this machine
 * (run as root): discovery agrees with /proc/self/cgroup and mountinfo;
 * limits read back from the kernel's files and destroy removes the
 * directories; bad relpaths are refused; a child that escaped its process group and session (setsid
 * behind a double fork) dies with the group; pids.max refuses forks and says
 * so; the OOM killer enforces the memory limit and says so; purge kills and
 * removes a tree of groups. A machine without usable memory, pids and
 * freezer (or v2 kill) controllers fails every test with the env's
 * description: CI machines have them, so a skip would hide a regression.
 *
 * Each test works under "execmesh-test-<pid>" and its teardown purges that,
 * also after a failure. The test process is a child subreaper, so orphans
 * of the children (the setsid'd sleep) are its own to reap; this machine's
 * pid 1 reaps orphans only now and then. Every wait is a condition polled
 * with a bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "em_cgroup.h"
#include "em_util.h"
#include "unit_wait.h"

#define WAIT_MS 20000
#define MIB (1024 * 1024)

typedef struct st {
    em_cgroup_env_t *env;
    char prefix[64];      /* "execmesh-test-<pid>": every group of the run is below it */
    em_cgroup_t *live[8]; /* created, not destroyed yet: a failed test leaves them to the teardown */
} st_t;

static int setup(void **state) {
    st_t *t = calloc(1, sizeof(*t));
    if (!t)
        return -1;
    t->env = em_cgroup_env_new();
    snprintf(t->prefix, sizeof(t->prefix), "execmesh-test-%d", (int)getpid());
    *state = t;
    return t->env ? 0 : -1;
}

static void poll_pause(void) { usleep(5000); /* ok-sleep: the poll interval of a bounded wait */ }

/* Reaps every exited child (ours, or an orphan handed to us as subreaper). */
static void reap_exited(void) {
    int st;
    while (waitpid(-1, &st, WNOHANG) > 0)
        ;
}

/* Is prefix left in any hierarchy of env? */
static int prefix_left(const em_cgroup_env_t *env, const char *prefix) {
    static const char *const ctls[] = {"memory", "pids", "cpu", "freezer"};
    for (size_t i = 0; i < EM_ARRAY_LEN(ctls); i++) {
        const char *d = em_cgroup_env_dir(env, ctls[i]);
        char p[4096];
        struct stat sb;
        if (d && snprintf(p, sizeof(p), "%s/%s", d, prefix) < (int)sizeof(p) && stat(p, &sb) == 0)
            return 1;
    }
    return 0;
}

/* Purges the run's groups (also after a failed test), reaps what died, and
 * fails the teardown when a directory stays. */
static int teardown(void **state) {
    st_t *t = *state;
    int rc = 0;
    if (em_cgroup_purge(t->env, t->prefix, 5000) != EM_OK)
        rc = -1;
    for (size_t i = 0; i < EM_ARRAY_LEN(t->live); i++)
        em_cgroup_destroy(t->live[i]); /* purged: this only frees */
    int64_t until = em_mono_ms() + 5000;
    while (waitpid(-1, NULL, WNOHANG) >= 0 && em_mono_ms() < until) /* until ECHILD: nobody left */
        poll_pause();
    if (prefix_left(t->env, t->prefix)) {
        fprintf(stderr, "teardown: %s is left behind\n", t->prefix);
        rc = -1;
    }
    em_cgroup_env_free(t->env);
    free(t);
    return rc;
}

/* The tests need memory, pids and a whole-group kill; without them they fail, naming what is missing. */
static void need_complete(const st_t *t) {
    if (!em_cgroup_env_complete(t->env))
        fail_msg("cgroups incomplete on this machine: %s", em_cgroup_env_describe(t->env));
}

static em_cgroup_t *create(st_t *t, const char *name, const em_cgroup_limits_t *lim) {
    char rel[256], err[512] = "";
    snprintf(rel, sizeof(rel), "%s/%s", t->prefix, name);
    em_cgroup_t *g = em_cgroup_create(t->env, rel, lim, err, sizeof(err));
    if (!g)
        fail_msg("em_cgroup_create %s: %s", rel, err);
    for (size_t i = 0; i < EM_ARRAY_LEN(t->live); i++)
        if (!t->live[i]) {
            t->live[i] = g;
            return g;
        }
    fail_msg("more than %d groups in one test", (int)EM_ARRAY_LEN(t->live));
    return NULL;
}

/* em_cgroup_destroy, and g is no longer the teardown's to free. */
static em_err_t destroy(st_t *t, em_cgroup_t *g) {
    for (size_t i = 0; i < EM_ARRAY_LEN(t->live); i++)
        if (t->live[i] == g)
            t->live[i] = NULL;
    return em_cgroup_destroy(g);
}

/* Forks a child that joins g, then execs argv (stderr to /dev/null when quiet). */
static pid_t spawn_in(em_cgroup_t *g, const char *const *argv, int quiet) {
    int fds[8];
    int n = em_cgroup_open_join_fds(g, fds, (int)EM_ARRAY_LEN(fds));
    if (n <= 0)
        fail_msg("em_cgroup_open_join_fds: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        if (quiet) {
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0)
                dup2(null, 2);
        }
        if (em_cgroup_join_fds(fds, n) != 0)
            _exit(126);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    assert_true(pid > 0);
    return pid;
}

/* Waits (bounded) for our child pid to end; its wait status. */
static int wait_child(pid_t pid) {
    int64_t until = em_mono_ms() + WAIT_MS;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0)
            fail_msg("waitpid %d: %s", (int)pid, strerror(errno));
        if (em_mono_ms() > until)
            fail_msg("child %d still running after %d ms", (int)pid, WAIT_MS);
        poll_pause();
    }
}

/* The pids in every directory of g (duplicates possible), at most max. */
static size_t group_pids(const em_cgroup_t *g, pid_t *out, size_t max) {
    static const char *const ctls[] = {"memory", "pids", "cpu", "freezer"};
    size_t n = 0;
    for (size_t i = 0; i < EM_ARRAY_LEN(ctls); i++) {
        const char *d = em_cgroup_dir(g, ctls[i]);
        char p[4096];
        if (!d || snprintf(p, sizeof(p), "%s/cgroup.procs", d) >= (int)sizeof(p))
            continue;
        FILE *f = fopen(p, "re");
        if (!f)
            continue;
        int v;
        while (n < max && fscanf(f, "%d", &v) == 1)
            out[n++] = (pid_t)v;
        fclose(f);
    }
    return n;
}

/* A field of /proc/pid/stat: its command name and session id. 0, or -1 when gone. */
static int proc_stat(pid_t pid, char *comm, size_t commn, pid_t *sid) {
    char p[64], buf[1024];
    snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
    int ppid, pgrp, session;
    char state;
    if (!lp || !rp || sscanf(rp + 2, "%c %d %d %d", &state, &ppid, &pgrp, &session) != 4)
        return -1;
    snprintf(comm, commn, "%.*s", (int)(rp - lp - 1), lp + 1);
    *sid = (pid_t)session;
    return 0;
}

/* Reads dir/name into buf, without the trailing newline. */
static void read_file_at(const char *dir, const char *name, char *buf, size_t n) {
    char p[4096];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "re");
    if (!f)
        fail_msg("open %s: %s", p, strerror(errno));
    size_t r = fread(buf, 1, n - 1, f);
    fclose(f);
    buf[r] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
}

static int is_gone(const char *path) {
    struct stat sb;
    return stat(path, &sb) != 0 && errno == ENOENT;
}

/* From /proc/self/cgroup and /proc/self/mountinfo, independently of the
 * module: this process's memory cgroup directory (v1 memory hierarchy, or
 * the v2 one). */
static void own_memory_dir(int v1, char *out, size_t n) {
    char line[4096], path[4096] = "";
    FILE *f = fopen("/proc/self/cgroup", "re");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        char ctls[256];
        snprintf(ctls, sizeof(ctls), ",%s,", c1 + 1);
        if (v1 ? strstr(ctls, ",memory,") != NULL : strcmp(line, "0:") == 0)
            snprintf(path, sizeof(path), "%s", c2 + 1);
    }
    fclose(f);
    assert_true(path[0] == '/');
    f = fopen("/proc/self/mountinfo", "re");
    assert_non_null(f);
    out[0] = '\0';
    while (fgets(line, sizeof(line), f) && !out[0]) {
        char root[1024], point[1024], fstype[64], super[1024];
        char *dash = strstr(line, " - ");
        if (!dash || sscanf(line, "%*s %*s %*s %1023s %1023s", root, point) != 2 ||
            sscanf(dash + 3, "%63s %*s %1023s", fstype, super) != 2)
            continue;
        char opts[1100];
        snprintf(opts, sizeof(opts), ",%s,", super);
        if (v1 ? strcmp(fstype, "cgroup") != 0 || !strstr(opts, ",memory,") : strcmp(fstype, "cgroup2") != 0)
            continue;
        size_t rl = strcmp(root, "/") == 0 ? 0 : strlen(root);
        if (strncmp(path, root, rl) != 0)
            continue;
        const char *rest = path + rl;
        snprintf(out, n, "%s%s", point, strcmp(rest, "/") == 0 ? "" : rest);
    }
    fclose(f);
    if (!out[0])
        fail_msg("no memory mount for %s", path);
}

static void discovery_finds_own_cgroups(void **state) {
    st_t *t = *state;
    need_complete(t);
    const char *desc = em_cgroup_env_describe(t->env);
    int v1 = strncmp(desc, "cgroup v1:", 10) == 0;
    if (!v1 && strncmp(desc, "cgroup v2:", 10) != 0)
        fail_msg("describe: %s", desc);
    const char *names[] = {"memory", "pids", v1 ? "freezer" : "kill",
                           em_cgroup_env_dir(t->env, "cpu") ? "cpu" : "memory"};
    for (size_t i = 0; i < EM_ARRAY_LEN(names); i++)
        if (!strstr(desc, names[i]))
            fail_msg("describe() does not name %s: %s", names[i], desc);
    char want[4096];
    own_memory_dir(v1, want, sizeof(want));
    const char *got = em_cgroup_env_dir(t->env, "memory");
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_null(em_cgroup_env_dir(t->env, "cpuset")); /* not one of ours */
    print_message("%s\n", desc);
}

static void limits_read_back_and_destroy_removes(void **state) {
    st_t *t = *state;
    need_complete(t);
    int v1 = strncmp(em_cgroup_env_describe(t->env), "cgroup v1:", 10) == 0;
    em_cgroup_limits_t lim = {.memory_bytes = 64 * MIB, .pids_max = 10, .cpu_millis = 500};
    em_cgroup_t *g = create(t, "limits/g", &lim);
    static const struct {
        const char *ctl, *v1_file, *v1_want, *v2_file, *v2_want;
    } rows[] = {
        {"memory", "memory.limit_in_bytes", "67108864", "memory.max", "67108864"},
        {"pids", "pids.max", "10", "pids.max", "10"},
        {"cpu", "cpu.cfs_quota_us", "50000", "cpu.max", "50000 100000"},
        {"cpu", "cpu.cfs_period_us", "100000", "cpu.max", "50000 100000"},
    };
    char paths[4][4096];
    int n_paths = 0;
    for (size_t i = 0; i < EM_ARRAY_LEN(rows); i++) {
        const char *d = em_cgroup_dir(g, rows[i].ctl);
        if (!d && strcmp(rows[i].ctl, "cpu") == 0)
            continue; /* cpu is optional */
        assert_non_null(d);
        char got[256];
        read_file_at(d, v1 ? rows[i].v1_file : rows[i].v2_file, got, sizeof(got));
        if (strcmp(got, v1 ? rows[i].v1_want : rows[i].v2_want) != 0)
            fail_msg("%s/%s: \"%s\", want \"%s\"", d, v1 ? rows[i].v1_file : rows[i].v2_file, got,
                     v1 ? rows[i].v1_want : rows[i].v2_want);
    }
    static const char *const ctls[] = {"memory", "pids", "cpu", "freezer"};
    for (size_t i = 0; i < EM_ARRAY_LEN(ctls); i++) {
        const char *d = em_cgroup_dir(g, ctls[i]);
        if (d && n_paths < 4)
            snprintf(paths[n_paths++], sizeof(paths[0]), "%s", d);
    }
    assert_int_equal(em_cgroup_oom_killed(g), 0);
    assert_int_equal(em_cgroup_pids_limit_hit(g), 0);
    assert_int_equal(em_cgroup_kill(g, 1000), EM_OK); /* empty: nothing to do */

    /* no limits: the kernel's defaults stay */
    em_cgroup_t *free_g = create(t, "limits/free", NULL);
    char got[256];
    read_file_at(em_cgroup_dir(free_g, "pids"), "pids.max", got, sizeof(got));
    assert_string_equal(got, "max");
    assert_int_equal(destroy(t, free_g), EM_OK);

    assert_int_equal(destroy(t, g), EM_OK);
    for (int i = 0; i < n_paths; i++)
        if (!is_gone(paths[i]))
            fail_msg("%s is still there after destroy", paths[i]);
}

static void bad_relpaths_are_refused(void **state) {
    st_t *t = *state;
    need_complete(t);
    static const char *const bad[] = {"", "/abs", "a//b", "a/", "../up", "a/../b", "a/./b", "sp ace", "a\nb"};
    for (size_t i = 0; i < EM_ARRAY_LEN(bad); i++) {
        char err[256] = "";
        em_cgroup_t *g = em_cgroup_create(t->env, bad[i], NULL, err, sizeof(err));
        if (g)
            fail_msg("relpath \"%s\" was accepted", bad[i]);
        assert_true(err[0] != '\0');
        assert_int_equal(em_cgroup_purge(t->env, bad[i], 100), EM_EINVAL);
    }
}

/* Is every pid of the n gone (kill(pid, 0) says ESRCH)? */
static int all_gone(const pid_t *pids, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (kill(pids[i], 0) == 0 || errno != ESRCH)
            return 0;
    return 1;
}

/* Has g a "sleep" outside this session (the setsid'd one) and one inside? */
static int escaped_and_stayed(const em_cgroup_t *g) {
    pid_t pids[64];
    size_t n = group_pids(g, pids, EM_ARRAY_LEN(pids));
    int out = 0, in = 0;
    pid_t mysid = getsid(0);
    for (size_t i = 0; i < n; i++) {
        char comm[64];
        pid_t sid;
        if (proc_stat(pids[i], comm, sizeof(comm), &sid) != 0 || strcmp(comm, "sleep") != 0)
            continue;
        if (sid == mysid)
            in = 1;
        else
            out = 1;
    }
    return out && in;
}

static void kill_reaches_a_process_that_left_the_session(void **state) {
    st_t *t = *state;
    need_complete(t);
    em_cgroup_t *g = create(t, "escape", NULL);
    static const char *const argv[] = {"/bin/sh", "-c", "sh -c \"setsid sh -c \\\"sleep 600\\\" &\"; sleep 600", /* ok-sleep: the children under test run long */
                                       NULL};
    pid_t child = spawn_in(g, argv, 0);
    UNIT_WAIT_UNTIL(poll_pause(), escaped_and_stayed(g), WAIT_MS, "a sleep in and one out of the session");
    pid_t pids[64];
    size_t n = group_pids(g, pids, EM_ARRAY_LEN(pids));
    assert_true(n >= 2);

    int64_t t0 = em_mono_ms();
    assert_int_equal(em_cgroup_kill(g, 2000), EM_OK);
    int64_t took = em_mono_ms() - t0;
    print_message("kill emptied the group in %lld ms\n", (long long)took);
    assert_true(took <= 2000);
    assert_int_equal(group_pids(g, pids + n, EM_ARRAY_LEN(pids) - n), 0);

    int st = wait_child(child);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    /* the orphans (the setsid'd sleep, the middle shell) were handed to us as subreaper */
    UNIT_WAIT_UNTIL((reap_exited(), poll_pause()), all_gone(pids, n), WAIT_MS, "every pid of the group gone");
    assert_int_equal(destroy(t, g), EM_OK);
}

static void pids_limit_refuses_forks(void **state) {
    st_t *t = *state;
    need_complete(t);
    em_cgroup_limits_t lim = {.pids_max = 5};
    em_cgroup_t *g = create(t, "pids", &lim);
    static const char *const argv[] = {"/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; wait", /* ok-sleep: the children under test */
                                       NULL};
    pid_t child = spawn_in(g, argv, 1); /* the shell complains of each refused fork */
    UNIT_WAIT_UNTIL(poll_pause(), em_cgroup_pids_limit_hit(g), WAIT_MS, "pids.events max > 0");
    assert_int_equal(em_cgroup_kill(g, 5000), EM_OK);
    wait_child(child);
    assert_int_equal(em_cgroup_oom_killed(g), 0);
    assert_int_equal(destroy(t, g), EM_OK);
}

static void memory_limit_oom_kills(void **state) {
    st_t *t = *state;
    need_complete(t);
    em_cgroup_limits_t lim = {.memory_bytes = 32 * MIB};
    em_cgroup_t *g = create(t, "memory", &lim);
    /* bytearray(n) zero-fills: 128 MiB touched */
    static const char *const argv[] = {"/usr/bin/python3", "-c", "b = bytearray(128*1024*1024)", NULL};
    pid_t child = spawn_in(g, argv, 0);
    int st = wait_child(child);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
        fail_msg("python3 was not SIGKILLed: status 0x%x", st);
    assert_int_equal(em_cgroup_oom_killed(g), 1);
    assert_int_equal(em_cgroup_pids_limit_hit(g), 0);
    int64_t peak = em_cgroup_memory_peak(g);
    print_message("memory peak %lld bytes\n", (long long)peak);
    assert_true(peak > 0 && peak <= 32 * MIB);
    assert_int_equal(em_cgroup_kill(g, 2000), EM_OK);
    assert_int_equal(destroy(t, g), EM_OK);
}

static void purge_removes_a_tree_with_processes(void **state) {
    st_t *t = *state;
    need_complete(t);
    static const char *const argv[] = {"/bin/sleep", "600", NULL};
    em_cgroup_t *a = create(t, "h/a", NULL);
    em_cgroup_t *b = create(t, "h/b", NULL);
    pid_t pa = spawn_in(a, argv, 0), pb = spawn_in(b, argv, 0);
    pid_t pids[8];
    UNIT_WAIT_UNTIL(poll_pause(), group_pids(a, pids, 8) > 0 && group_pids(b, pids, 8) > 0, WAIT_MS,
                    "a sleep in each group");
    char a_mem[4096];
    snprintf(a_mem, sizeof(a_mem), "%s", em_cgroup_dir(a, "memory"));

    assert_int_equal(em_cgroup_purge(t->env, t->prefix, 5000), EM_OK);
    assert_false(prefix_left(t->env, t->prefix));
    assert_true(is_gone(a_mem));
    int st = wait_child(pa);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    st = wait_child(pb);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    /* purged already: destroy only frees */
    assert_int_equal(destroy(t, a), EM_OK);
    assert_int_equal(destroy(t, b), EM_OK);
    /* nothing there: nothing to do */
    assert_int_equal(em_cgroup_purge(t->env, t->prefix, 1000), EM_OK);
}

int main(void) {
    /* orphans of our children are re-parented to us, not to pid 1, so that
     * the tests can reap them and see their pids gone */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        perror("prctl(PR_SET_CHILD_SUBREAPER)");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(discovery_finds_own_cgroups, setup, teardown),
        cmocka_unit_test_setup_teardown(limits_read_back_and_destroy_removes, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_relpaths_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(kill_reaches_a_process_that_left_the_session, setup, teardown),
        cmocka_unit_test_setup_teardown(pids_limit_refuses_forks, setup, teardown),
        cmocka_unit_test_setup_teardown(memory_limit_oom_kills, setup, teardown),
        cmocka_unit_test_setup_teardown(purge_removes_a_tree_with_processes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
