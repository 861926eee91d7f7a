/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for em_child: real children (/bin/cat, /bin/sh, /usr/bin/python3)
 * under one supervisor: stdin to stdout, exit codes and signals, the stderr
 * tail, the output cap, the timeout (TERM to the process group, then KILL)
 * reaching a grandchild, RLIMIT_AS, a child that never reads a large stdin,
 * a missing binary, destroy abandoning what still runs, SIGCHLD ignored
 * (inherited, or set after the start) neither losing the result nor making
 * the supervisor spin, and cancellation (TERM, KILL after the grace, a run
 * cancelled on its way from the queue, keys that match nothing).
 *
 * Containment, on this machine's real cgroups (run as root; a machine
 * without usable memory, pids and freezer/kill controllers fails those tests
 * naming what is missing): a child that escaped its process group and
 * session (setsid) dies with its run's group and is reaped before the
 * callback, whether the leader exited, timed out or was abandoned; the
 * memory and pids limits and what the result says of them; a working
 * directory made and removed (symlinks in it not followed); another user,
 * no_new_privs; each containment step failing with its name; the purge of
 * cgroup_root at start; and, with the supervisor in a helper process killed
 * with -9, the leader dying of its parent-death signal and the guardian
 * purging what escaped. The test binary is its own guardian program: main
 * dispatches EM_CHILD_GUARDIAN_ARG. Every wait is on a condition variable or
 * a condition polled with a bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "em_child.h"
#include "em_util.h"
#include "unit_wait.h"

#define WAIT_MS 20000

/* One run's outcome as the callback saw it. */
typedef struct run {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    int seq; /* the order callbacks ran in, over all runs of a test */
    em_child_result_t res;
    uint8_t *output;
    int64_t done_ms; /* em_mono_ms() when the callback ran */
} run_t;

static atomic_int seq_counter;

static void on_done(void *arg, em_child_result_t *res) {
    run_t *r = arg;
    pthread_mutex_lock(&r->lock);
    r->res = *res;
    r->output = res->output; /* taken */
    res->output = NULL;
    r->seq = atomic_fetch_add(&seq_counter, 1);
    r->done_ms = em_mono_ms();
    r->done = 1;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static void run_init(run_t *r) {
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
}

static void run_cleanup(run_t *r) {
    free(r->output);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
}

/* Waits (at most WAIT_MS) for r's callback. */
static void run_wait(run_t *r, const char *what) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&r->lock);
    while (!r->done)
        if (pthread_cond_timedwait(&r->cond, &r->lock, &ts) == ETIMEDOUT)
            break;
    int done = r->done;
    pthread_mutex_unlock(&r->lock);
    if (!done)
        fail_msg("%s: no result within %d ms", what, WAIT_MS);
}

static em_child_spec_t spec_of(const char *const *argv, const char *input) {
    static const char *const env[] = {"PATH=/usr/bin:/bin", "LC_ALL=C", NULL};
    em_child_spec_t s = {
        .argv = argv,
        .envp = env,
        .input = (const uint8_t *)input,
        .input_len = input ? strlen(input) : 0,
        .max_output = 1 << 20,
        .timeout_ms = WAIT_MS / 2,
        .kill_grace_ms = 1000,
    };
    return s;
}

/* Starts spec and waits for its result in r. */
static void run_sync(em_child_sup_t *sup, const em_child_spec_t *spec, run_t *r) {
    run_init(r);
    assert_int_equal(em_child_run(sup, spec, on_done, r), EM_OK);
    run_wait(r, spec->argv[0]);
}

static em_child_sup_t *sup_new(void) {
    char err[256] = "";
    em_child_sup_t *sup = em_child_sup_new(err, sizeof(err));
    if (!sup)
        fail_msg("em_child_sup_new: %s", err);
    return sup;
}

/* Is pid gone (or only a zombie waiting for init)? */
static int process_gone(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

/* Waits, with a bound, for pid to be gone. */
static void assert_gone(pid_t pid) {
    int64_t deadline = em_mono_ms() + WAIT_MS;
    while (!process_gone(pid)) {
        if (em_mono_ms() > deadline)
            fail_msg("process %d still running", (int)pid);
        usleep(10000); /* ok-sleep: the poll interval of a bounded wait */
    }
}

static void cat_echoes_stdin(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    static const char *const argv[] = {"/bin/cat", NULL};
    em_child_spec_t sp = spec_of(argv, "hello, child\n");
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(r.res.exit_code, 0);
    assert_int_equal(r.res.output_len, strlen("hello, child\n"));
    assert_memory_equal(r.output, "hello, child\n", r.res.output_len);
    assert_int_equal(r.res.stderr_len, 0);
    run_cleanup(&r);
    assert_int_equal(em_child_running(sup), 0);
    em_child_sup_destroy(sup);
}

static void exit_codes_and_signals(void **state) {
    (void)state;
    static const struct {
        const char *script;
        em_child_outcome_t outcome;
        int exit_code, sig;
    } rows[] = {
        {"exit 3", EM_CHILD_EXITED, 3, 0},
        {"exit 0", EM_CHILD_EXITED, 0, 0},
        {"kill -9 $$", EM_CHILD_SIGNALED, 128 + SIGKILL, SIGKILL},
        {"kill -TERM $$", EM_CHILD_SIGNALED, 128 + SIGTERM, SIGTERM},
        /* the executor ignores SIGPIPE; a child must not inherit that */
        {"trap - PIPE; kill -PIPE $$", EM_CHILD_SIGNALED, 128 + SIGPIPE, SIGPIPE},
    };
    em_child_sup_t *sup = sup_new();
    for (size_t i = 0; i < EM_ARRAY_LEN(rows); i++) {
        const char *const argv[] = {"/bin/sh", "-c", rows[i].script, NULL};
        em_child_spec_t sp = spec_of(argv, NULL);
        run_t r;
        run_sync(sup, &sp, &r);
        if (r.res.outcome != rows[i].outcome || r.res.exit_code != rows[i].exit_code ||
            r.res.term_signal != rows[i].sig)
            fail_msg("%s: outcome %d exit %d signal %d", rows[i].script, r.res.outcome, r.res.exit_code,
                     r.res.term_signal);
        run_cleanup(&r);
    }
    em_child_sup_destroy(sup);
}

static void only_fds_0_1_2_and_an_empty_mask(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    /* the child's fd table as ls sees it (ls's own directory fd shows as 3), and its blocked mask */
    static const char *const argv[] = {"/bin/sh", "-c", "ls /proc/self/fd | tr '\\n' ' '; grep SigBlk /proc/self/status",
                                       NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    char *out = strndup((const char *)r.output, r.res.output_len);
    int ok = strstr(out, "0 1 2 3 SigBlk:\t0000000000000000\n") != NULL;
    if (!ok)
        fprintf(stderr, "unexpected fd table or mask: %s\n", out);
    free(out);
    assert_true(ok);
    run_cleanup(&r);
    em_child_sup_destroy(sup);
}

static void stderr_tail_keeps_the_last_bytes(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    static const char *const argv[] = {
        "/bin/sh", "-c", "i=0; while [ $i -lt 400 ]; do echo \"line $i\" >&2; i=$((i+1)); done; exit 1", NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(r.res.exit_code, 1);
    assert_int_equal(r.res.stderr_len, EM_CHILD_STDERR_TAIL);
    assert_int_equal(strlen(r.res.stderr_tail), EM_CHILD_STDERR_TAIL);
    const char *end = "line 398\nline 399\n";
    assert_string_equal(r.res.stderr_tail + EM_CHILD_STDERR_TAIL - strlen(end), end);
    assert_null(strstr(r.res.stderr_tail, "line 1\n"));
    run_cleanup(&r);
    em_child_sup_destroy(sup);
}

static void output_beyond_the_cap_fails(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    static const char *const argv[] = {"/bin/sh", "-c", "head -c 1000000 /dev/zero; exit 0", NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    sp.max_output = 5000;
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_OUTPUT_LIMIT);
    assert_true(r.res.output_len <= 5000);
    run_cleanup(&r);

    /* exactly at the cap is fine */
    static const char *const argv2[] = {"/bin/sh", "-c", "head -c 5000 /dev/zero", NULL};
    sp = spec_of(argv2, NULL);
    sp.max_output = 5000;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(r.res.output_len, 5000);
    run_cleanup(&r);
    em_child_sup_destroy(sup);
}

/* Reads the pid the child printed first. */
static pid_t printed_pid(const run_t *r) {
    char buf[32] = "";
    size_t n = r->res.output_len < sizeof(buf) - 1 ? r->res.output_len : sizeof(buf) - 1;
    if (n)
        memcpy(buf, r->output, n);
    pid_t pid = (pid_t)atoi(buf);
    if (pid <= 1)
        fail_msg("no pid printed: '%s'", buf);
    return pid;
}

static void timeout_kills_child_and_grandchild(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    /* the shell ignores TERM, so only the KILL after the grace ends it */
    static const char *const argv[] = {"/bin/sh", "-c", "trap '' TERM; sleep 30 & echo $!; wait; wait", NULL}; /* ok-sleep: the child under test runs long */
    em_child_spec_t sp = spec_of(argv, NULL);
    sp.timeout_ms = 300;
    sp.kill_grace_ms = 300;
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_TIMED_OUT);
    assert_int_equal(r.res.term_signal, SIGKILL);
    assert_true(r.res.run_ms >= 600);
    assert_gone(printed_pid(&r));
    run_cleanup(&r);
    assert_int_equal(em_child_running(sup), 0);
    em_child_sup_destroy(sup);
}

static void nothing_outlives_the_leader(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    /* the leader exits at once, leaving a background sleep in its group */
    static const char *const argv[] = {"/bin/sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!", NULL}; /* ok-sleep: the child under test runs long */
    em_child_spec_t sp = spec_of(argv, NULL);
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(r.res.exit_code, 0);
    assert_gone(printed_pid(&r));
    run_cleanup(&r);
    em_child_sup_destroy(sup);
}

static void memory_limit_fails_a_hungry_child(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    static const char *const argv[] = {"/usr/bin/python3", "-c", "b = bytearray(400 * 1024 * 1024); print(len(b))",
                                       NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    run_t r;
    /* the control: without the limit it succeeds */
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(r.res.exit_code, 0);
    run_cleanup(&r);

    sp.limits.memory_mb = 200;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    assert_int_not_equal(r.res.exit_code, 0);
    if (!strstr(r.res.stderr_tail, "MemoryError"))
        fail_msg("no MemoryError in stderr: %s", r.res.stderr_tail);
    run_cleanup(&r);
    em_child_sup_destroy(sup);
}

static void cpu_and_file_limits_apply(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    static const char *const argv[] = {"/bin/sh", "-c", "ulimit -t; ulimit -n; ulimit -p", NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    sp.limits = (em_child_limits_t){.cpu_seconds = 7, .open_files = 33, .processes = 4321};
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(r.res.output_len, strlen("7\n33\n4321\n"));
    assert_memory_equal(r.output, "7\n33\n4321\n", r.res.output_len);
    run_cleanup(&r);
    em_child_sup_destroy(sup);
}

static void unread_stdin_blocks_nothing(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    size_t big = 8u << 20;
    char *input = malloc(big + 1);
    assert_non_null(input);
    memset(input, 'x', big);
    input[big] = '\0';
    /* never reads stdin and never exits by itself */
    static const char *const stuck_argv[] = {"/bin/sh", "-c", "exec sleep 30", NULL}; /* ok-sleep: the child under test runs long */
    em_child_spec_t stuck = spec_of(stuck_argv, input);
    stuck.timeout_ms = 1500;
    stuck.kill_grace_ms = 100;
    /* never reads stdin and exits at once */
    static const char *const quick_argv[] = {"/bin/sh", "-c", "echo ok", NULL};
    em_child_spec_t quick = spec_of(quick_argv, input);
    static const char *const cat_argv[] = {"/bin/cat", NULL};
    em_child_spec_t cat = spec_of(cat_argv, "still served\n");

    run_t rs, rq, rc;
    run_init(&rs);
    run_init(&rq);
    run_init(&rc);
    assert_int_equal(em_child_run(sup, &stuck, on_done, &rs), EM_OK);
    assert_int_equal(em_child_run(sup, &quick, on_done, &rq), EM_OK);
    assert_int_equal(em_child_run(sup, &cat, on_done, &rc), EM_OK);
    run_wait(&rq, "quick");
    run_wait(&rc, "cat");
    assert_int_equal(rs.done, 0); /* the stuck one still runs: the others were not held up by it */
    run_wait(&rs, "stuck");
    assert_int_equal(rq.res.outcome, EM_CHILD_EXITED);
    assert_memory_equal(rq.output, "ok\n", 3);
    assert_int_equal(rc.res.outcome, EM_CHILD_EXITED);
    assert_memory_equal(rc.output, "still served\n", rc.res.output_len);
    assert_int_equal(rs.res.outcome, EM_CHILD_TIMED_OUT);
    assert_true(rq.seq < rs.seq && rc.seq < rs.seq);
    run_cleanup(&rs);
    run_cleanup(&rq);
    run_cleanup(&rc);
    free(input);
    em_child_sup_destroy(sup);
}

static void missing_binary_fails_naming_errno(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    static const char *const argv[] = {"/nonexistent/bin/tool", "x", NULL};
    em_child_spec_t sp = spec_of(argv, "payload");
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_SPAWN_FAILED);
    assert_int_equal(r.res.spawn_errno, ENOENT);
    assert_string_equal(r.res.spawn_step, "execve");
    assert_int_equal(r.res.exit_code, 127);
    run_cleanup(&r);
    /* a directory is not executable */
    static const char *const dir[] = {"/tmp", NULL};
    sp = spec_of(dir, NULL);
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_SPAWN_FAILED);
    assert_int_equal(r.res.spawn_errno, EACCES);
    run_cleanup(&r);
    em_child_sup_destroy(sup);
}

/* A callback that starts another run (as the executor's wait queue does). */
typedef struct chain {
    em_child_sup_t *sup;
    em_child_spec_t spec;
    run_t *next;
    int next_rc;
} chain_t;

static run_t chained_first;

static void on_done_chain(void *arg, em_child_result_t *res) {
    chain_t *ch = arg;
    ch->next_rc = em_child_run(ch->sup, &ch->spec, on_done, ch->next);
    on_done(&chained_first, res);
}

static void destroy_abandons_what_runs(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    static const char *const argv[] = {"/bin/sh", "-c", "echo $$; exec sleep 30", NULL}; /* ok-sleep: the child under test runs long */
    em_child_spec_t sp = spec_of(argv, NULL);
    sp.timeout_ms = 0;
    run_t second;
    run_init(&chained_first);
    run_init(&second);
    chain_t ch = {.sup = sup, .spec = sp, .next = &second, .next_rc = -1};
    assert_int_equal(em_child_run(sup, &sp, on_done_chain, &ch), EM_OK);
    /* wait (bounded) until the child runs */
    int64_t deadline = em_mono_ms() + WAIT_MS;
    while (em_child_running(sup) == 0) {
        if (em_mono_ms() > deadline)
            fail_msg("the child never started");
        usleep(10000); /* ok-sleep: the poll interval of a bounded wait */
    }
    em_child_sup_destroy(sup);
    assert_int_equal(chained_first.done, 1);
    assert_int_equal(chained_first.res.outcome, EM_CHILD_ABANDONED);
    assert_int_equal(chained_first.res.term_signal, SIGKILL);
    /* the run queued from the callback during destroy was abandoned too, never started */
    assert_int_equal(ch.next_rc, EM_OK);
    assert_int_equal(second.done, 1);
    assert_int_equal(second.res.outcome, EM_CHILD_ABANDONED);
    assert_int_equal(second.res.term_signal, 0);
    run_cleanup(&chained_first);
    run_cleanup(&second);
}

/* CPU time this process used so far, in ms (every thread, not the children). */
static int64_t cpu_ms(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

static void sigchld_set(void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGCHLD, &sa, NULL), 0);
}

/* Runs a child that lives for 300 ms and asserts the supervisor idled
 * meanwhile: a spinning supervisor burns about the whole wall time. */
static void assert_no_spin(em_child_sup_t *sup, run_t *r, const char *script) {
    const char *const argv[] = {"/bin/sh", "-c", script, NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    int64_t wall0 = em_mono_ms(), cpu0 = cpu_ms();
    run_sync(sup, &sp, r);
    int64_t wall = em_mono_ms() - wall0, cpu = cpu_ms() - cpu0;
    if (wall < 300 || cpu * 2 > wall)
        fail_msg("%s: %lld ms of CPU in %lld ms: the supervisor spun", script, (long long)cpu, (long long)wall);
}

/* A parent that started us with SIGCHLD ignored (it survives execve) would
 * have the kernel reap every child: the supervisor puts it back first. */
static void inherited_ignored_sigchld_still_gives_exit_codes(void **state) {
    (void)state;
    sigchld_set(SIG_IGN);
    em_child_sup_t *sup = sup_new();
    struct sigaction now;
    assert_int_equal(sigaction(SIGCHLD, NULL, &now), 0);
    assert_true(now.sa_handler == SIG_DFL);

    static const char *const argv[] = {"/bin/sh", "-c", "exit 3", NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(r.res.exit_code, 3);
    run_cleanup(&r);

    assert_no_spin(sup, &r, "sleep 0.3; exit 4"); /* ok-sleep: the child under test runs a while */
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(r.res.exit_code, 4);
    run_cleanup(&r);
    assert_int_equal(em_child_running(sup), 0);
    em_child_sup_destroy(sup);
    sigchld_set(SIG_DFL);
}

/* SIGCHLD ignored after the supervisor started: waitpid says ECHILD while
 * the pidfd stays readable. The run ends at once, naming the lost status,
 * and the supervisor neither spins nor stops serving. */
static void sigchld_ignored_later_ends_the_run_without_spinning(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    sigchld_set(SIG_IGN);
    run_t r;
    assert_no_spin(sup, &r, "sleep 0.3; exit 3"); /* ok-sleep: the child under test runs a while */
    assert_int_equal(r.res.outcome, EM_CHILD_SPAWN_FAILED);
    assert_string_equal(r.res.spawn_step, "waitpid");
    assert_int_equal(r.res.spawn_errno, ECHILD);
    run_cleanup(&r);
    assert_int_equal(em_child_running(sup), 0);

    sigchld_set(SIG_DFL);
    static const char *const argv[] = {"/bin/sh", "-c", "exit 5", NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(r.res.exit_code, 5);
    run_cleanup(&r);
    em_child_sup_destroy(sup);
}

/* A run whose child writes its pid ($$) to a file of its own, and what the
 * callback saw of the child's process group when it ran. */
typedef struct cancel_run {
    run_t r;
    char path[64];
    const char *argv[5]; /* /bin/sh -c SCRIPT PATH */
    pid_t pid;      /* in the file when the callback ran; 0: none (never ran, or killed before it wrote it) */
    int group_gone; /* kill(-pid, 0) failed with ESRCH in the callback */
} cancel_run_t;

/* The pid in path, once the child wrote all of it; 0 before. */
static pid_t pid_in(const char *path) {
    char buf[32] = "";
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (n == 0 || buf[n - 1] != '\n')
        return 0;
    return (pid_t)atoi(buf);
}

static void on_done_cancel(void *arg, em_child_result_t *res) {
    cancel_run_t *cr = arg;
    cr->pid = pid_in(cr->path);
    errno = 0;
    cr->group_gone = cr->pid <= 0 || (kill(-cr->pid, 0) != 0 && errno == ESRCH);
    on_done(&cr->r, res);
}

static void cancel_run_init(cancel_run_t *cr) {
    memset(cr, 0, sizeof(*cr));
    run_init(&cr->r);
    snprintf(cr->path, sizeof(cr->path), "/tmp/em_child_test.XXXXXX");
    int fd = mkstemp(cr->path);
    if (fd < 0)
        fail_msg("mkstemp: %s", strerror(errno));
    close(fd);
}

static void cancel_run_cleanup(cancel_run_t *cr) {
    unlink(cr->path);
    run_cleanup(&cr->r);
}

/* Waits (bounded) until cr's child has written its pid: it runs. */
static pid_t wait_for_pid(cancel_run_t *cr) {
    pid_t pid = 0;
    UNIT_WAIT_UNTIL(usleep(5000) /* ok-sleep: the poll interval of a bounded wait */, (pid = pid_in(cr->path)) > 0,
                    WAIT_MS, "the child's pid file");
    return pid;
}

#define SCRIPT_TERM_IGNORED "trap '' TERM; echo $$ > \"$0\"; while :; do sleep 1; done" /* ok-sleep: the child under test runs long */
#define SCRIPT_LONG "echo $$ > \"$0\"; exec sleep 600" /* ok-sleep: the child under test runs long */

/* The spec of script (its $0: cr's pid file) cancellable by key. */
static em_child_spec_t cancellable(cancel_run_t *cr, const char *script, uint64_t key, int64_t grace_ms,
                                   int64_t timeout_ms) {
    const char *const a[] = {"/bin/sh", "-c", script, cr->path, NULL};
    memcpy(cr->argv, a, sizeof(a));
    em_child_spec_t sp = spec_of(cr->argv, NULL);
    sp.timeout_ms = timeout_ms;
    sp.kill_grace_ms = grace_ms;
    sp.cancel_key = key;
    return sp;
}

static void cancel_terms_a_running_child(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    cancel_run_t cr;
    cancel_run_init(&cr);
    em_child_spec_t sp = cancellable(&cr, SCRIPT_LONG, 7, 500, 0);
    assert_int_equal(em_child_run(sup, &sp, on_done_cancel, &cr), EM_OK);
    pid_t pid = wait_for_pid(&cr);
    int64_t t0 = em_mono_ms();
    em_child_cancel(sup, 7);
    run_wait(&cr.r, "cancelled child");
    assert_int_equal(cr.r.res.outcome, EM_CHILD_CANCELLED);
    assert_int_equal(cr.r.res.term_signal, SIGTERM);
    assert_int_equal(cr.r.res.exit_code, 128 + SIGTERM);
    if (cr.r.done_ms - t0 >= 500)
        fail_msg("the TERM took %lld ms: it waited for the KILL", (long long)(cr.r.done_ms - t0));
    assert_int_equal(cr.pid, pid);
    assert_true(cr.group_gone);
    errno = 0;
    assert_int_equal(kill(-pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_int_equal(em_child_running(sup), 0);
    em_child_cancel(sup, 7); /* finished: ignored */
    cancel_run_cleanup(&cr);
    em_child_sup_destroy(sup);
}

static void cancel_kills_a_child_ignoring_term_after_the_grace(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    cancel_run_t cr;
    cancel_run_init(&cr);
    em_child_spec_t sp = cancellable(&cr, SCRIPT_TERM_IGNORED, 8, 300, 0);
    assert_int_equal(em_child_run(sup, &sp, on_done_cancel, &cr), EM_OK);
    pid_t pid = wait_for_pid(&cr);
    int64_t t0 = em_mono_ms();
    em_child_cancel(sup, 8);
    run_wait(&cr.r, "cancelled child ignoring TERM");
    int64_t took = cr.r.done_ms - t0;
    assert_int_equal(cr.r.res.outcome, EM_CHILD_CANCELLED);
    assert_int_equal(cr.r.res.term_signal, SIGKILL);
    if (took < 300 || took >= 300 + 2000)
        fail_msg("from the cancel to the callback: %lld ms, want [300, 2300)", (long long)took);
    assert_gone(pid);
    assert_int_equal(em_child_running(sup), 0);
    cancel_run_cleanup(&cr);
    em_child_sup_destroy(sup);
}

/* The timeout passes during the cancel's grace: still CANCELLED (not
 * TIMED_OUT), and the KILL comes when the first of the two graces ends. */
static void cancel_wins_over_a_later_timeout(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    cancel_run_t cr;
    cancel_run_init(&cr);
    em_child_spec_t sp = cancellable(&cr, SCRIPT_TERM_IGNORED, 9, 1500, 600);
    int64_t t_run = em_mono_ms();
    assert_int_equal(em_child_run(sup, &sp, on_done_cancel, &cr), EM_OK);
    wait_for_pid(&cr);
    int64_t t0 = em_mono_ms();
    em_child_cancel(sup, 9); /* almost always before the timeout, which then falls inside the grace */
    run_wait(&cr.r, "cancelled child past its timeout");
    assert_int_equal(cr.r.res.outcome, EM_CHILD_CANCELLED);
    assert_int_equal(cr.r.res.term_signal, SIGKILL);
    /* the KILL: 1500 ms after the cancel, or (on a slow machine, the timeout
     * first) 600 + 1500 ms after the spawn; never later than the latter */
    int64_t earliest = t0 + 1500 < t_run + 2100 ? t0 + 1500 : t_run + 2100;
    if (cr.r.done_ms < earliest || cr.r.done_ms - t0 >= 1500 + 2000)
        fail_msg("the callback came %lld ms after the cancel, %lld ms after the run", (long long)(cr.r.done_ms - t0),
                 (long long)(cr.r.done_ms - t_run));
    cancel_run_cleanup(&cr);
    em_child_sup_destroy(sup);
}

/* A cancel right after em_child_run catches the run in the queue or just
 * started; either way it is cancelled and never outlives its callback.
 * Many at once also grow the list of pending keys. */
static void cancel_right_after_run_is_never_lost(void **state) {
    (void)state;
    enum { N = 24 };
    em_child_sup_t *sup = sup_new();
    cancel_run_t *cr = calloc(N, sizeof(*cr));
    assert_non_null(cr);
    em_child_spec_t sp[N];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            cancel_run_init(&cr[i]);
            sp[i] = cancellable(&cr[i], SCRIPT_LONG, 1000 + (uint64_t)i, 500, 0);
        }
        for (int i = 0; i < N; i++) {
            assert_int_equal(em_child_run(sup, &sp[i], on_done_cancel, &cr[i]), EM_OK);
            if (round == 0) /* one by one: cancel each right after its run */
                em_child_cancel(sup, sp[i].cancel_key);
        }
        if (round == 1) /* all queued first, then all cancelled */
            for (int i = 0; i < N; i++)
                em_child_cancel(sup, sp[i].cancel_key);
        for (int i = 0; i < N; i++) {
            run_wait(&cr[i].r, "a run cancelled at once");
            em_child_result_t *res = &cr[i].r.res;
            if (res->outcome != EM_CHILD_CANCELLED)
                fail_msg("round %d run %d: outcome %d", round, i, res->outcome);
            if (res->term_signal != 0 && res->term_signal != SIGTERM)
                fail_msg("round %d run %d: signal %d", round, i, res->term_signal);
            if (res->term_signal == 0 && (res->exit_code != 0 || res->run_ms != 0 || cr[i].pid != 0))
                fail_msg("round %d run %d: not run, yet exit %d after %lld ms", round, i, res->exit_code,
                         (long long)res->run_ms);
            if (!cr[i].group_gone)
                fail_msg("round %d run %d: process group %d outlived the callback", round, i, (int)cr[i].pid);
            cancel_run_cleanup(&cr[i]);
        }
        assert_int_equal(em_child_running(sup), 0);
    }
    free(cr);
    em_child_sup_destroy(sup);
}

static void cancel_of_another_key_changes_nothing(void **state) {
    (void)state;
    em_child_sup_t *sup = sup_new();
    cancel_run_t cr;
    cancel_run_init(&cr);
    const char *const argv[] = {"/bin/sh", "-c", "echo $$ > \"$0\"; sleep 0.3; echo done", cr.path, NULL}; /* ok-sleep: the child under test runs a while */
    em_child_spec_t sp = spec_of(argv, NULL);
    sp.cancel_key = 5;
    /* while queued (or just started) */
    assert_int_equal(em_child_run(sup, &sp, on_done_cancel, &cr), EM_OK);
    em_child_cancel(sup, 6);
    em_child_cancel(sup, 0);
    /* while it runs */
    wait_for_pid(&cr);
    em_child_cancel(sup, 4);
    em_child_cancel(sup, 0);
    run_wait(&cr.r, "a child cancelled under other keys");
    assert_int_equal(cr.r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(cr.r.res.exit_code, 0);
    assert_int_equal(cr.r.res.output_len, strlen("done\n"));
    assert_memory_equal(cr.r.output, "done\n", cr.r.res.output_len);
    cancel_run_cleanup(&cr);

    /* a run without a key is not cancelled by key 0 */
    cancel_run_init(&cr);
    sp.cancel_key = 0;
    assert_int_equal(em_child_run(sup, &sp, on_done_cancel, &cr), EM_OK);
    em_child_cancel(sup, 0);
    wait_for_pid(&cr);
    em_child_cancel(sup, 0);
    run_wait(&cr.r, "a child without a key");
    assert_int_equal(cr.r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(cr.r.res.exit_code, 0);
    cancel_run_cleanup(&cr);
    em_child_sup_destroy(sup);
}

/* ---- containment ---- */

#define MIB (1024 * 1024)

/* cgroup_root of this process's supervisors, and of the helper process's (its guardian purges it) */
static char cg_root[64], cg_root_helper[64];

static void poll_pause(void) { usleep(5000); /* ok-sleep: the poll interval of a bounded wait */ }

/* The cgroups of this machine; fails the test naming what is missing when they are incomplete. */
static em_cgroup_env_t *cg_env_need(void) {
    em_cgroup_env_t *env = em_cgroup_env_new();
    assert_non_null(env);
    if (!em_cgroup_env_complete(env)) {
        char why[2048];
        snprintf(why, sizeof(why), "%s", em_cgroup_env_describe(env));
        em_cgroup_env_free(env);
        fail_msg("cgroups incomplete on this machine (memory, pids and freezer or cgroup.kill needed): %s", why);
    }
    return env;
}

static em_child_sup_t *csup_new(em_cgroup_env_t *env, const char *root, int guardian) {
    em_child_sup_opts_t o = {.cgroups = env, .cgroup_root = root, .guardian = guardian, .guardian_exe = "/proc/self/exe"};
    char err[512] = "";
    em_child_sup_t *sup = em_child_sup_new_opts(&o, err, sizeof(err));
    if (!sup)
        fail_msg("em_child_sup_new_opts: %s", err);
    return sup;
}

/* Is rel a directory in any hierarchy of env? */
static int cg_exists(const em_cgroup_env_t *env, const char *rel) {
    static const char *const ctls[] = {"memory", "pids", "cpu", "freezer"};
    for (size_t i = 0; i < EM_ARRAY_LEN(ctls); i++) {
        const char *d = em_cgroup_env_dir(env, ctls[i]);
        char p[4096];
        struct stat sb;
        if (d && snprintf(p, sizeof(p), "%s/%s", d, rel) < (int)sizeof(p) && stat(p, &sb) == 0)
            return 1;
    }
    return 0;
}

/* Is pid gone for good: not even a zombie waiting to be reaped? */
static int reaped(pid_t pid) {
    errno = 0;
    return kill(pid, 0) != 0 && errno == ESRCH;
}

/* A numeric field of /proc/PID/stat after the command (4: ppid, 6: session); -1 when unreadable. */
static long stat_field(pid_t pid, int field) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p += 2; /* field 3 */
    for (int i = 3; i < field; i++) {
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    return strtol(p, NULL, 10);
}

/* The guardian whose parent is parent (its argv[1] is EM_CHILD_GUARDIAN_ARG), or 0. */
static pid_t find_guardian(pid_t parent) {
    DIR *d = opendir("/proc");
    pid_t found = 0;
    struct dirent *e;
    while (d && !found && (e = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0 || stat_field(pid, 4) != parent)
            continue;
        char path[64], cmd[512];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(cmd, 1, sizeof(cmd) - 1, f);
        fclose(f);
        cmd[n] = '\0';
        size_t l0 = strlen(cmd);
        if (l0 + 1 < n && strcmp(cmd + l0 + 1, EM_CHILD_GUARDIAN_ARG) == 0)
            found = pid;
    }
    if (d)
        closedir(d);
    return found;
}

/* The signals pid ignores (SigIgn of /proc/PID/status), or 0. */
static unsigned long long sig_ignored(pid_t pid) {
    char path[64], line[256];
    unsigned long long mask = 0;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "SigIgn: %llx", &mask) == 1)
            break;
    if (f)
        fclose(f);
    return mask;
}

#define SIGBIT(sig) (1ULL << ((sig) - 1))

/* Is pid's command name comm (it has exec'd the program)? */
static int comm_is(pid_t pid, const char *comm) {
    char path[64], buf[64] = "";
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    return strcmp(buf, comm) == 0;
}

/* A temporary file name with an empty file behind it. */
static void temp_file(char *path, size_t n) {
    snprintf(path, n, "/tmp/em_child_test.XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        fail_msg("mkstemp: %s", strerror(errno));
    close(fd);
}

/* A contained run whose leader starts an escaped sleep (setsid: a session
 * and process group of its own) that writes "PID SID" to $0, and what the
 * callback saw of it. */
typedef struct esc_run {
    run_t r;
    char path[64];
    char script[1024];
    const char *argv[5];
    const em_cgroup_env_t *env;
    char rel[160]; /* the run's group */
    int esc, esc_sid;
    int esc_reaped; /* in the callback: the escaped sleep was gone, not even a zombie */
    int group_gone; /* in the callback: the group's directories were gone */
} esc_run_t;

/* The escaped sleep's "PID SID" in path (once it wrote it): 1, else 0. */
static int esc_in(const char *path, int *pid, int *sid) {
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int ok = fscanf(f, "%d %d", pid, sid) == 2;
    fclose(f);
    return ok;
}

static void on_done_esc(void *arg, em_child_result_t *res) {
    esc_run_t *er = arg;
    if (!esc_in(er->path, &er->esc, &er->esc_sid))
        er->esc = 0;
    er->esc_reaped = er->esc > 0 && reaped(er->esc);
    er->group_gone = !cg_exists(er->env, er->rel);
    on_done(&er->r, res);
}

/* The leader prints its pid and starts the escape: setsid'd, it writes its
 * pid and session id to $0, then sleeps; the leader waits until it wrote
 * them. */
#define SCRIPT_ESCAPE                                                                                              \
    "echo $$; setsid /bin/sh -c 'echo $$ $(cut -d\" \" -f6 /proc/self/stat) > \"$0.tmp\" && mv \"$0.tmp\" \"$0\"; " \
    "exec sleep 600' \"$0\" & while [ ! -s \"$0\" ]; do sleep 0.01; done; " /* ok-sleep: in the child */

static void escaped_children_die_with_the_run(void **state) {
    (void)state;
    static const struct {
        const char *what, *tail;
        int64_t timeout_ms;
        em_child_outcome_t outcome;
        int sig;
        int destroy; /* 1: the supervisor is destroyed while it runs */
    } rows[] = {
        {"the leader exits", "exit 0", WAIT_MS / 2, EM_CHILD_EXITED, 0, 0},
        {"the leader times out ignoring TERM", "trap '' TERM; while :; do sleep 1; done", 1500, EM_CHILD_TIMED_OUT, /* ok-sleep: in the child */
         SIGKILL, 0},
        {"the supervisor is destroyed", "exec sleep 600", 0, EM_CHILD_ABANDONED, SIGKILL, 1}, /* ok-sleep: in the child */
    };
    em_cgroup_env_t *env = cg_env_need();
    for (size_t i = 0; i < EM_ARRAY_LEN(rows); i++) {
        em_child_sup_t *sup = csup_new(env, cg_root, 0);
        esc_run_t er;
        memset(&er, 0, sizeof(er));
        run_init(&er.r);
        er.env = env;
        temp_file(er.path, sizeof(er.path));
        snprintf(er.script, sizeof(er.script), "%s%s", SCRIPT_ESCAPE, rows[i].tail);
        const char *const a[] = {"/bin/sh", "-c", er.script, er.path, NULL};
        memcpy(er.argv, a, sizeof(a));
        em_child_spec_t sp = spec_of(er.argv, NULL);
        sp.timeout_ms = rows[i].timeout_ms;
        sp.kill_grace_ms = 200;
        char name[64];
        snprintf(name, sizeof(name), "escape/run-%zu", i);
        snprintf(er.rel, sizeof(er.rel), "%s/%s", cg_root, name);
        sp.cgroup_name = name;
        sp.cgroup_limits.pids_max = 64;
        assert_int_equal(em_child_run(sup, &sp, on_done_esc, &er), EM_OK);
        if (rows[i].destroy) {
            int pid, sid;
            UNIT_WAIT_UNTIL(poll_pause(), esc_in(er.path, &pid, &sid), WAIT_MS, "the escaped sleep's pid");
            assert_true(cg_exists(env, er.rel));
            em_child_sup_destroy(sup);
            assert_int_equal(er.r.done, 1);
        } else {
            run_wait(&er.r, rows[i].what);
        }
        if (er.r.res.outcome != rows[i].outcome || er.r.res.term_signal != rows[i].sig)
            fail_msg("%s: outcome %d signal %d (stderr: %s)", rows[i].what, er.r.res.outcome, er.r.res.term_signal,
                     er.r.res.stderr_tail);
        if (er.esc <= 0)
            fail_msg("%s: the escaped sleep wrote no pid", rows[i].what);
        if (er.r.res.output_len == 0)
            fail_msg("%s: the leader printed no pid (stderr: %s)", rows[i].what, er.r.res.stderr_tail);
        pid_t leader = printed_pid(&er.r);
        if (er.esc_sid != er.esc || er.esc_sid == leader)
            fail_msg("%s: the sleep did not escape: session %d, its pid %d, the leader %d", rows[i].what, er.esc_sid,
                     er.esc, (int)leader);
        if (!er.esc_reaped)
            fail_msg("%s: the escaped sleep %d outlived the callback (%s)", rows[i].what, er.esc,
                     process_gone(er.esc) ? "a zombie" : "alive");
        if (!er.group_gone)
            fail_msg("%s: the group %s outlived the callback", rows[i].what, er.rel);
        assert_int_equal(er.r.res.pids_limit_hit, 0);
        assert_int_equal(er.r.res.oom_killed, 0);
        assert_true(er.r.res.memory_peak > 0);
        unlink(er.path);
        run_cleanup(&er.r);
        if (!rows[i].destroy)
            em_child_sup_destroy(sup);
        if (cg_exists(env, cg_root))
            fail_msg("%s: cgroup_root %s outlived em_child_sup_destroy", rows[i].what, cg_root);
    }
    em_cgroup_env_free(env);
}

static void memory_limit_ooms_a_contained_child(void **state) {
    (void)state;
    em_cgroup_env_t *env = cg_env_need();
    em_child_sup_t *sup = csup_new(env, cg_root, 0);
    /* bytearray(n) zero-fills: 128 MiB touched */
    static const char *const argv[] = {"/usr/bin/python3", "-c", "b = bytearray(128 << 20)", NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    sp.cgroup_name = "memory/run-1";
    sp.cgroup_limits.memory_bytes = 32 * MIB;
    run_t r;
    run_sync(sup, &sp, &r);
    if (r.res.outcome != EM_CHILD_SIGNALED || r.res.term_signal != SIGKILL)
        fail_msg("outcome %d signal %d exit %d (stderr: %s)", r.res.outcome, r.res.term_signal, r.res.exit_code,
                 r.res.stderr_tail);
    assert_int_equal(r.res.oom_killed, 1);
    assert_int_equal(r.res.pids_limit_hit, 0);
    if (r.res.memory_peak <= 0 || r.res.memory_peak > 32 * MIB)
        fail_msg("memory_peak %lld, want (0, 32 MiB]", (long long)r.res.memory_peak);
    run_cleanup(&r);
    em_child_sup_destroy(sup);
    em_cgroup_env_free(env);
}

static void pids_limit_refuses_forks_and_says_so(void **state) {
    (void)state;
    em_cgroup_env_t *env = cg_env_need();
    em_child_sup_t *sup = csup_new(env, cg_root, 0);
    /* whatever the shell makes of the refused forks, the timeout ends it and the group is killed */
    static const char *const argv[] = {
        "/bin/sh", "-c", "i=0; while [ $i -lt 10 ]; do sleep 600 & i=$((i+1)); done; wait", NULL}; /* ok-sleep: in the child */
    em_child_spec_t sp = spec_of(argv, NULL);
    sp.cgroup_name = "pids/run-1";
    sp.cgroup_limits.pids_max = 4;
    sp.timeout_ms = 3000;
    sp.kill_grace_ms = 100;
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.pids_limit_hit, 1);
    assert_int_equal(r.res.oom_killed, 0);
    run_cleanup(&r);
    em_child_sup_destroy(sup);
    assert_false(cg_exists(env, cg_root));
    em_cgroup_env_free(env);
}

/* Reads the first n lines of path into lines (each NUL-terminated, no newline). */
static int read_lines(const char *path, char lines[][512], int n) {
    FILE *f = fopen(path, "r");
    int got = 0;
    while (f && got < n && fgets(lines[got], 512, f)) {
        lines[got][strcspn(lines[got], "\n")] = '\0';
        got++;
    }
    if (f)
        fclose(f);
    return got;
}

static void workdir_is_fresh_and_removed(void **state) {
    (void)state;
    char base[64] = "/tmp/em_child_wd.XXXXXX", keep[64] = "/tmp/em_child_keep.XXXXXX", out[64], kept[128];
    assert_non_null(mkdtemp(base));
    assert_non_null(mkdtemp(keep));
    snprintf(kept, sizeof(kept), "%s/keep", keep);
    FILE *kf = fopen(kept, "w");
    assert_non_null(kf);
    fclose(kf);
    temp_file(out, sizeof(out));
    em_child_sup_t *sup = sup_new(); /* no cgroups needed */
    /* symlinks to what must stay, a deep tree, and a directory nobody may enter */
    const char *const argv[] = {"/bin/sh", "-c",
                                "{ pwd; stat -c %a:%u .; } > \"$0\"; echo x > file; mkdir -p a/b/c; echo y > a/b/c/deep; "
                                "ln -s \"$1\" link; ln -s \"$1/keep\" a/b/keeplink; chmod 000 a/b/c",
                                out, keep, NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    sp.workdir_base = base;
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    if (r.res.exit_code != 0)
        fail_msg("the child failed: %s", r.res.stderr_tail);
    char lines[2][512];
    assert_int_equal(read_lines(out, lines, 2), 2);
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "%s/run-", base);
    if (strncmp(lines[0], prefix, strlen(prefix)) != 0)
        fail_msg("the child's cwd %s is not below %s", lines[0], base);
    assert_string_equal(lines[1], "700:0");
    struct stat sb;
    errno = 0;
    assert_int_equal(stat(lines[0], &sb), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(rmdir(base), 0); /* empty: only the run's directory was made in it */
    assert_int_equal(stat(kept, &sb), 0); /* symlinks were removed, not followed */
    unlink(kept);
    rmdir(keep);
    unlink(out);
    run_cleanup(&r);
    em_child_sup_destroy(sup);
}

static void drop_user_runs_as_nobody_without_new_privileges(void **state) {
    (void)state;
    char base[64] = "/tmp/em_child_wd.XXXXXX";
    assert_non_null(mkdtemp(base));
    em_child_sup_t *sup = sup_new();
    static const char *const argv[] = {
        "/bin/sh", "-c", "id -u; id -g; id -G; grep NoNewPrivs /proc/self/status; stat -c %u:%g:%a .", NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    sp.drop_user = 1;
    sp.uid = 65534;
    sp.gid = 65534;
    sp.workdir_base = base;
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    const char *want = "65534\n65534\n65534\nNoNewPrivs:\t1\n65534:65534:700\n";
    if (r.res.output_len != strlen(want) || memcmp(r.output, want, r.res.output_len) != 0)
        fail_msg("the child said '%.*s' (stderr: %s)", (int)r.res.output_len, r.output ? (const char *)r.output : "",
                 r.res.stderr_tail);
    run_cleanup(&r);
    assert_int_equal(rmdir(base), 0);

    /* no_new_privs without a user too */
    static const char *const nnp[] = {"/bin/sh", "-c", "grep NoNewPrivs /proc/self/status", NULL};
    sp = spec_of(nnp, NULL);
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    assert_int_equal(r.res.output_len, strlen("NoNewPrivs:\t1\n"));
    assert_memory_equal(r.output, "NoNewPrivs:\t1\n", r.res.output_len);
    run_cleanup(&r);
    em_child_sup_destroy(sup);
}

static void containment_steps_fail_by_name(void **state) {
    (void)state;
    static const struct {
        const char *what;
        int contained;      /* a supervisor with cgroups */
        const char *cgroup; /* cgroup_name */
        int workdir;        /* 1: a workdir_base of the test's */
        const char *base;   /* or this workdir_base */
        int drop;
        uid_t uid;
        gid_t gid;
        const char *step;
        int err;
    } rows[] = {
        {"a group without cgroups", 0, "x/run-1", 0, NULL, 0, 0, 0, "cgroup", ENOTSUP},
        {"a bad group name", 1, "../x", 0, NULL, 0, 0, 0, "cgroup", EINVAL},
        {"a missing workdir_base", 0, NULL, 0, "/nonexistent/em-child", 0, 0, 0, "workdir", ENOENT},
        {"a bad gid", 1, "ids/run-1", 1, NULL, 1, 65534, (gid_t)-1, "setgid", EINVAL},
        {"a bad uid", 1, "ids/run-2", 1, NULL, 1, (uid_t)-1, 65534, "setuid", EINVAL},
    };
    em_cgroup_env_t *env = cg_env_need();
    em_child_sup_t *plain = sup_new(), *contained = csup_new(env, cg_root, 0);
    char base[64] = "/tmp/em_child_wd.XXXXXX";
    assert_non_null(mkdtemp(base));
    static const char *const argv[] = {"/bin/sh", "-c", "exit 0", NULL};
    for (size_t i = 0; i < EM_ARRAY_LEN(rows); i++) {
        em_child_spec_t sp = spec_of(argv, NULL);
        sp.cgroup_name = rows[i].cgroup;
        sp.workdir_base = rows[i].workdir ? base : rows[i].base;
        sp.drop_user = rows[i].drop;
        sp.uid = rows[i].uid;
        sp.gid = rows[i].gid;
        run_t r;
        run_sync(rows[i].contained ? contained : plain, &sp, &r);
        if (r.res.outcome != EM_CHILD_SPAWN_FAILED || strcmp(r.res.spawn_step, rows[i].step) != 0 ||
            r.res.spawn_errno != rows[i].err)
            fail_msg("%s: outcome %d step '%s' errno %d (%s), want SPAWN_FAILED '%s' %s", rows[i].what, r.res.outcome,
                     r.res.spawn_step, r.res.spawn_errno, strerror(r.res.spawn_errno), rows[i].step,
                     strerror(rows[i].err));
        assert_int_equal(r.res.exit_code, 127);
        if (rows[i].cgroup) {
            char rel[256];
            snprintf(rel, sizeof(rel), "%s/%s", cg_root, rows[i].cgroup);
            if (cg_exists(env, rel))
                fail_msg("%s: the group %s outlived the callback", rows[i].what, rel);
        }
        run_cleanup(&r);
    }
    assert_int_equal(rmdir(base), 0); /* every run's working directory was removed */
    em_child_sup_destroy(plain);
    em_child_sup_destroy(contained);
    assert_false(cg_exists(env, cg_root));
    em_cgroup_env_free(env);
}

/* What an earlier incarnation killed with -9 left in cgroup_root: a group
 * with a live process. The next supervisor's start kills and removes it. */
static void a_new_supervisor_purges_what_an_earlier_one_left(void **state) {
    (void)state;
    em_cgroup_env_t *env = cg_env_need();
    char rel[160], err[512] = "";
    snprintf(rel, sizeof(rel), "%s/stale/run-1", cg_root);
    em_cgroup_t *g = em_cgroup_create(env, rel, NULL, err, sizeof(err));
    if (!g)
        fail_msg("em_cgroup_create: %s", err);
    int fds[8];
    int n = em_cgroup_open_join_fds(g, fds, 8);
    assert_true(n > 0);
    pid_t pid = fork();
    if (pid == 0) {
        if (em_cgroup_join_fds(fds, n) == 0)
            execl("/bin/sleep", "sleep", "600", (char *)NULL); /* ok-sleep: the process under test runs long */
        _exit(1);
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    assert_true(pid > 0);
    UNIT_WAIT_UNTIL(poll_pause(), comm_is(pid, "sleep"), WAIT_MS,
                    "the stale process's execve (it joins its group before)");
    em_child_sup_t *sup = csup_new(env, cg_root, 0);
    UNIT_WAIT_UNTIL(poll_pause(), process_gone(pid), WAIT_MS, "the stale process killed by the start's purge");
    assert_false(cg_exists(env, cg_root));
    em_child_sup_destroy(sup);
    waitpid(pid, NULL, WNOHANG); /* ours, unless the supervisor's orphan pass reaped it first */
    em_cgroup_destroy(g);        /* purged: this only frees */
    em_cgroup_env_free(env);
}
/* The supervisor in a helper process, to be killed with -9: contained, a
 * supervisor with cgroups below cg_root_helper and a guardian (this binary,
 * through main's dispatch); else a plain one. It runs script ($0, $1: path,
 * path2) and waits for its end. Never returns into cmocka: exits 3 when
 * something fails. */
static void __attribute__((noreturn)) helper_main(int contained, const char *script, const char *path,
                                                  const char *path2) {
    char err[512] = "";
    em_child_sup_t *sup;
    if (contained) {
        em_cgroup_env_t *env = em_cgroup_env_new();
        em_child_sup_opts_t o = {
            .cgroups = env, .cgroup_root = cg_root_helper, .guardian = 1, .guardian_exe = "/proc/self/exe"};
        sup = env ? em_child_sup_new_opts(&o, err, sizeof(err)) : NULL;
    } else {
        sup = em_child_sup_new(err, sizeof(err));
    }
    if (!sup) {
        fprintf(stderr, "helper: %s\n", err);
        _exit(3);
    }
    const char *const argv[] = {"/bin/sh", "-c", script, path, path2, NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    sp.timeout_ms = 0;
    if (contained)
        sp.cgroup_name = "guarded/run-1";
    static run_t r;
    run_init(&r);
    if (em_child_run(sup, &sp, on_done, &r) != EM_OK)
        _exit(3);
    for (;;)
        pause();
}

/* Starts the helper; waits until the files at path (and path2, if any)
 * hold a pid; fails when the helper exits first. */
static pid_t helper_start(int contained, const char *script, const char *path, const char *path2) {
    pid_t helper = fork();
    assert_true(helper >= 0);
    if (helper == 0)
        helper_main(contained, script, path, path2);
    int64_t until = em_mono_ms() + WAIT_MS;
    while (pid_in(path) <= 0 || (*path2 && pid_in(path2) <= 0)) {
        int st = 0;
        if (waitpid(helper, &st, WNOHANG) == helper)
            fail_msg("the helper exited first: status 0x%x", st);
        if (em_mono_ms() > until) {
            kill(helper, SIGKILL);
            fail_msg("the helper's child wrote no pid within %d ms", WAIT_MS);
        }
        poll_pause();
    }
    return helper;
}

/* Makes this process a subreaper (the orphans of the killed helper come to
 * it, and "gone" can then mean reaped); returns whether it was one before. */
static int subreaper_on(void) {
    int was = 0;
    assert_int_equal(prctl(PR_GET_CHILD_SUBREAPER, &was, 0, 0, 0), 0);
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
    return was;
}

/* The supervisor's process dies (kill -9): its leader dies of the
 * parent-death signal, with no guardian and no cgroup. */
static void a_child_dies_with_its_supervisors_process(void **state) {
    (void)state;
    int was = subreaper_on();
    char path[64];
    temp_file(path, sizeof(path));
    pid_t helper = helper_start(0, "echo $$ > \"$0.t\" && mv \"$0.t\" \"$0\"; exec sleep 600", path, ""); /* ok-sleep: in the child */
    pid_t leader = pid_in(path);
    int64_t t0 = em_mono_ms();
    assert_int_equal(kill(helper, SIGKILL), 0);
    assert_int_equal(waitpid(helper, NULL, 0), helper); /* bounded: SIGKILLed */
    while (!reaped(leader)) {
        while (waitpid(-1, NULL, WNOHANG) > 0) /* the orphans are ours */
            ;
        if (em_mono_ms() - t0 > 2000)
            fail_msg("the leader %d outlived its supervisor's process by 2 s", (int)leader);
        poll_pause();
    }
    unlink(path);
    if (!was)
        prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

/* The supervisor's process dies (kill -9) with a contained run whose
 * leader sleeps and whose escaped sleep (setsid) lives on: the leader dies
 * of its parent-death signal, the guardian purges the escaped one and
 * cgroup_root, and exits 0; all within 2 s. */
static void the_guardian_purges_after_a_kill_9(void **state) {
    (void)state;
    em_cgroup_env_t *env = cg_env_need();
    int was = subreaper_on();
    char path[64], path2[64];
    temp_file(path, sizeof(path));
    temp_file(path2, sizeof(path2));
    pid_t helper =
        helper_start(1,
                     "setsid /bin/sh -c 'echo $$ > \"$0.t\" && mv \"$0.t\" \"$0\"; exec sleep 600' \"$1\" & " /* ok-sleep: in the child */
                     "echo $$ > \"$0.t\" && mv \"$0.t\" \"$0\"; exec sleep 600", /* ok-sleep: in the child */
                     path, path2);
    pid_t leader = pid_in(path), esc = pid_in(path2);
    pid_t guardian = find_guardian(helper);
    if (guardian <= 0)
        fail_msg("no guardian among the helper's children");
    assert_int_equal(stat_field(guardian, 6), guardian); /* a session of its own */
    unsigned long long ign = sig_ignored(guardian), want = SIGBIT(SIGINT) | SIGBIT(SIGTERM) | SIGBIT(SIGHUP);
    if ((ign & want) != want)
        fail_msg("the guardian ignores %llx, want at least %llx", ign, want);
    assert_true(cg_exists(env, cg_root_helper));

    int64_t t0 = em_mono_ms();
    assert_int_equal(kill(helper, SIGKILL), 0);
    assert_int_equal(waitpid(helper, NULL, 0), helper); /* bounded: SIGKILLed */
    int gst = -1, gdone = 0;
    for (;;) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0) /* the orphans are ours, the guardian too */
            if (p == guardian) {
                gst = st;
                gdone = 1;
            }
        int left = cg_exists(env, cg_root_helper);
        if (reaped(leader) && reaped(esc) && gdone && !left)
            break;
        if (em_mono_ms() - t0 > 2000)
            fail_msg("2 s after the kill: leader %s, escaped sleep %s, guardian %s, cgroup_root %s",
                     reaped(leader) ? "gone" : "alive", reaped(esc) ? "gone" : "alive", gdone ? "exited" : "alive",
                     left ? "left" : "gone");
        poll_pause();
    }
    if (!WIFEXITED(gst) || WEXITSTATUS(gst) != 0)
        fail_msg("the guardian's status: 0x%x", gst);
    unlink(path);
    unlink(path2);
    if (!was)
        prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    em_cgroup_env_free(env);
}

/* A supervisor destroyed cleanly: its guardian, out of the executor's
 * session and ignoring its signals while it lives, is told so and exits. */
static void the_guardian_exits_with_its_supervisor(void **state) {
    (void)state;
    em_cgroup_env_t *env = cg_env_need();
    em_child_sup_t *sup = csup_new(env, cg_root, 1);
    pid_t guardian = find_guardian(getpid());
    if (guardian <= 0)
        fail_msg("no guardian among this process's children");
    assert_int_equal(stat_field(guardian, 6), guardian);
    assert_int_not_equal(stat_field(guardian, 6), stat_field(getpid(), 6));
    unsigned long long ign = sig_ignored(guardian), want = SIGBIT(SIGINT) | SIGBIT(SIGTERM) | SIGBIT(SIGHUP);
    if ((ign & want) != want)
        fail_msg("the guardian ignores %llx, want at least %llx", ign, want);

    static const char *const argv[] = {"/bin/sh", "-c", "exit 0", NULL};
    em_child_spec_t sp = spec_of(argv, NULL);
    sp.cgroup_name = "clean/run-1";
    run_t r;
    run_sync(sup, &sp, &r);
    assert_int_equal(r.res.outcome, EM_CHILD_EXITED);
    run_cleanup(&r);
    assert_true(cg_exists(env, cg_root)); /* the run's group is gone; its parents stay while the supervisor lives */
    assert_true(!reaped(guardian));

    em_child_sup_destroy(sup);
    assert_true(reaped(guardian)); /* destroy waited for it */
    assert_false(cg_exists(env, cg_root));
    em_cgroup_env_free(env);
}

static int group_setup(void **state) {
    (void)state;
    snprintf(cg_root, sizeof(cg_root), "execmesh-test-child-%d", (int)getpid());
    snprintf(cg_root_helper, sizeof(cg_root_helper), "execmesh-test-child-%d-helper", (int)getpid());
    return 0;
}

/* What a failed test left in the cgroups goes; a passing run leaves nothing. */
static int group_teardown(void **state) {
    (void)state;
    em_cgroup_env_t *env = em_cgroup_env_new();
    if (!env)
        return -1;
    int rc = 0;
    if (cg_exists(env, cg_root) || cg_exists(env, cg_root_helper)) {
        fprintf(stderr, "teardown: cgroups left behind under %s or %s\n", cg_root, cg_root_helper);
        rc = -1;
    }
    if (em_cgroup_env_complete(env)) {
        em_cgroup_purge(env, cg_root, 5000);
        em_cgroup_purge(env, cg_root_helper, 5000);
    }
    em_cgroup_env_free(env);
    return rc;
}

int main(int argc, char **argv) {
    /* this binary is the guardian of the supervisors it starts (guardian_exe "/proc/self/exe") */
    if (argc > 1 && strcmp(argv[1], EM_CHILD_GUARDIAN_ARG) == 0)
        return em_child_guardian_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cat_echoes_stdin),
        cmocka_unit_test(exit_codes_and_signals),
        cmocka_unit_test(only_fds_0_1_2_and_an_empty_mask),
        cmocka_unit_test(stderr_tail_keeps_the_last_bytes),
        cmocka_unit_test(output_beyond_the_cap_fails),
        cmocka_unit_test(timeout_kills_child_and_grandchild),
        cmocka_unit_test(nothing_outlives_the_leader),
        cmocka_unit_test(memory_limit_fails_a_hungry_child),
        cmocka_unit_test(cpu_and_file_limits_apply),
        cmocka_unit_test(unread_stdin_blocks_nothing),
        cmocka_unit_test(missing_binary_fails_naming_errno),
        cmocka_unit_test(destroy_abandons_what_runs),
        cmocka_unit_test(inherited_ignored_sigchld_still_gives_exit_codes),
        cmocka_unit_test(sigchld_ignored_later_ends_the_run_without_spinning),
        cmocka_unit_test(cancel_terms_a_running_child),
        cmocka_unit_test(cancel_kills_a_child_ignoring_term_after_the_grace),
        cmocka_unit_test(cancel_wins_over_a_later_timeout),
        cmocka_unit_test(cancel_right_after_run_is_never_lost),
        cmocka_unit_test(cancel_of_another_key_changes_nothing),
        cmocka_unit_test(escaped_children_die_with_the_run),
        cmocka_unit_test(memory_limit_ooms_a_contained_child),
        cmocka_unit_test(pids_limit_refuses_forks_and_says_so),
        cmocka_unit_test(workdir_is_fresh_and_removed),
        cmocka_unit_test(drop_user_runs_as_nobody_without_new_privileges),
        cmocka_unit_test(containment_steps_fail_by_name),
        cmocka_unit_test(a_new_supervisor_purges_what_an_earlier_one_left),
        cmocka_unit_test(a_child_dies_with_its_supervisors_process),
        cmocka_unit_test(the_guardian_purges_after_a_kill_9),
        cmocka_unit_test(the_guardian_exits_with_its_supervisor),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
