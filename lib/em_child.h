/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Child processes run under supervision: a supervisor owns one thread that
 * starts children (fork + execve), feeds their stdin, collects their stdout
 * (capped) and the tail of their stderr, enforces a timeout (SIGTERM to the
 * child's process group, then SIGKILL after a grace) and reaps them. The
 * thread waits on one epoll set holding every child's pipes and a pidfd per
 * child, with the nearest deadline as the epoll timeout: no thread per child,
 * no SIGCHLD handler, no blocking read or write on a child's pipe. SIGCHLD
 * must not be ignored, or the kernel reaps the children first: a supervisor
 * sets an ignored SIGCHLD back to SIG_DFL (process-wide) when it starts.
 *
 * Each child gets its own process group, an empty signal mask with default
 * dispositions, an fd table of only 0/1/2, the environment it is given, the
 * rlimits it is given, no_new_privs (no set-user-ID gains; no sudo) and
 * SIGKILL as its parent-death signal (it dies when the supervisor thread
 * does, e.g. with its process). When the child (the group leader) exits,
 * the rest of its process group is killed, and the rest of its cgroup when
 * it has one, so nothing it started outlives it.
 *
 * A run given a cancel_key can be cancelled from any thread with
 * em_child_cancel: a run still queued is never started, a running child is
 * stopped like a timed-out one (SIGTERM to its process group, SIGKILL after
 * the grace), and either way its callback gets EM_CHILD_CANCELLED.
 *
 * Containment (em_child_sup_new_opts): a run can get a cgroup of its own
 * (memory, pids and CPU limits; killed whole when the run ends, which also
 * reaches processes that left the process group or the session), a fresh
 * working directory removed after the run, and another user. Every child
 * starts with no_new_privs and dies with the supervisor thread (parent-death
 * signal SIGKILL). A supervisor with options makes this process a child
 * subreaper, so the orphans of its runs are reparented to it and reaped by
 * its thread; and it can start a guardian process that purges every group
 * of the supervisor when this process dies without destroying it (kill -9).
 */
#ifndef EM_CHILD_H
#define EM_CHILD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "em_cgroup.h"
#include "em_error.h"

typedef struct em_child_sup em_child_sup_t;

/* Bytes of stderr kept: the last ones the child wrote. */
#define EM_CHILD_STDERR_TAIL 1024

typedef enum em_child_outcome {
    EM_CHILD_EXITED,       /* exited by itself: exit_code is its status */
    EM_CHILD_SIGNALED,     /* killed by a signal it did not get from us: term_signal */
    EM_CHILD_TIMED_OUT,    /* past timeout_ms; killed by us (TERM, then KILL) */
    EM_CHILD_OUTPUT_LIMIT, /* wrote more than max_output bytes to stdout; killed by us */
    EM_CHILD_SPAWN_FAILED, /* never ran: pipe/fork failed or execve failed (spawn_errno); or, with
                            * spawn_step "waitpid", it ran but its exit status was lost (ECHILD:
                            * something else reaped it, e.g. SIGCHLD ignored again after the start) */
    EM_CHILD_ABANDONED,    /* the supervisor was destroyed first; killed by us */
    EM_CHILD_CANCELLED     /* cancelled by em_child_cancel: its process group got SIGTERM, then SIGKILL
                            * after kill_grace_ms; or cancelled while still queued: then it never ran
                            * (exit_code 0, term_signal 0, run_ms 0) */
} em_child_outcome_t;

/* Limits; 0 leaves the executor's own limit in place. */
typedef struct em_child_limits {
    int64_t cpu_seconds; /* RLIMIT_CPU */
    int64_t memory_mb;   /* RLIMIT_AS */
    int64_t open_files;  /* RLIMIT_NOFILE */
    int64_t processes;   /* RLIMIT_NPROC (counts every process of the user, not only the child's) */
} em_child_limits_t;

/* What to run. Every pointer is borrowed until the done callback ran (or
 * em_child_run failed). */
typedef struct em_child_spec {
    const char *const *argv; /* argv[0] is the absolute path executed; NULL-terminated */
    const char *const *envp; /* the child's whole environment; NULL-terminated; NULL = empty */
    const uint8_t *input;    /* written to stdin, then stdin is closed */
    size_t input_len;
    size_t max_output;     /* stdout beyond this many bytes: EM_CHILD_OUTPUT_LIMIT */
    int64_t timeout_ms;    /* from the start; 0 = none */
    int64_t kill_grace_ms; /* SIGTERM to SIGKILL on timeout or cancel */
    em_child_limits_t limits;
    uint64_t cancel_key; /* names this run for em_child_cancel; unique among live runs; 0 = cannot be cancelled */
    /* Containment; zero leaves each out. */
    const char *cgroup_name; /* the run's cgroup, a relpath below the supervisor's cgroup_root (e.g.
                              * "sleeper/run-42"; unique among live runs: the caller makes it so). Made
                              * before the fork, joined by the child before anything else, killed whole when
                              * the run ends and removed. A supervisor without cgroups, or a group that cannot
                              * be made, fails the run (SPAWN_FAILED, spawn_step "cgroup", the reason logged):
                              * a run that asked for a group never runs without one */
    em_cgroup_limits_t cgroup_limits; /* the group's limits (cgroup_name only) */
    const char *workdir_base; /* a fresh directory is made below it (mode 0700, owned by uid:gid when drop_user)
                               * and is the child's working directory; removed with all it holds when the run
                               * is over (symlinks are removed, never followed). Cannot be made: SPAWN_FAILED,
                               * spawn_step "workdir" */
    int drop_user; /* 1: the child runs as uid:gid with no supplementary groups (spawn_step "setgroups",
                    * "setgid" or "setuid" when the kernel refuses) */
    uid_t uid;
    gid_t gid;
} em_child_spec_t;

typedef struct em_child_result {
    em_child_outcome_t outcome;
    int exit_code;   /* EXITED: the exit status; otherwise 128 + signal when killed, 127 when SPAWN_FAILED */
    int term_signal; /* the signal that ended it, or 0 */
    int spawn_errno; /* SPAWN_FAILED: the errno of the step that failed */
    const char *spawn_step; /* SPAWN_FAILED: the step that failed: "cgroup", "workdir", "pipe", "fork",
                             * "dup2", "setrlimit", "chdir", "setgroups", "setgid", "setuid", "prctl",
                             * "execve" (in the child, between fork and execve), "pidfd_open", "epoll_ctl",
                             * or "waitpid" (see EM_CHILD_SPAWN_FAILED) */
    uint8_t *output; /* stdout, malloc'd (NULL when empty): the callback owns it and frees it */
    size_t output_len;
    char stderr_tail[EM_CHILD_STDERR_TAIL + 1]; /* the last bytes of stderr, NUL-terminated */
    size_t stderr_len;                          /* bytes in stderr_tail */
    int64_t run_ms;                             /* from spawn to the end */
    /* From the run's cgroup, read after it was killed; -1 when unknown (no group, or the group has no
     * such controller). */
    int oom_killed;      /* 1: the kernel's OOM killer killed a process of the run (the memory limit) */
    int pids_limit_hit;  /* 1: a fork was refused by the pids limit */
    int64_t memory_peak; /* bytes */
} em_child_result_t;

/* Runs on the supervisor thread, once per child. res is valid during the call
 * only, except res->output, which the callback owns. The callback may call
 * em_child_run (the new child is started after it returns). */
typedef void (*em_child_done_fn)(void *arg, em_child_result_t *res);

/* Starts a supervisor and its thread; sets SIGCHLD back to SIG_DFL when it
 * is ignored (SIG_IGN or SA_NOCLDWAIT), for the whole process. No
 * containment: a spec's cgroup_name fails its run. NULL on failure, with the
 * reason in errstr. */
em_child_sup_t *em_child_sup_new(char *errstr, size_t errstr_size);

/* The argv[1] a guardian process is started with. */
#define EM_CHILD_GUARDIAN_ARG "--em-child-guardian"

typedef struct em_child_sup_opts {
    em_cgroup_env_t *cgroups; /* borrowed; must outlive the supervisor. NULL: no cgroups (process-group kill
                               * and rlimits only) */
    const char *cgroup_root;  /* cgroups: the relpath below this process's cgroups that holds every run's group,
                               * e.g. "execmesh-executor-0"; this supervisor's alone (it is purged at start and
                               * at destroy). A successor started right after a kill -9 may overlap the killed
                               * one's guardian still purging: that purge kills only the groups it listed when
                               * it began, so run names unique across incarnations (an execution id) keep the
                               * successor's runs safe. Copied */
    int guardian;             /* 1: start a guardian process (needs cgroups): when this process dies without
                               * em_child_sup_destroy (kill -9), it purges cgroup_root */
    const char *guardian_exe; /* the program run as the guardian, with argv {guardian_exe,
                               * EM_CHILD_GUARDIAN_ARG, FD, cgroup_root}: one whose main calls
                               * em_child_guardian_main first thing; normally "/proc/self/exe". Copied */
} em_child_sup_opts_t;

/* Starts a supervisor with containment (o NULL: all zero). With cgroups it
 * first purges cgroup_root (groups an earlier incarnation killed with -9
 * left behind): a purge that cannot empty everything is logged, and the
 * start goes on. Makes this process a child subreaper (prctl
 * PR_SET_CHILD_SUBREAPER) while a supervisor with options lives: orphans
 * of the children are reparented to it and the supervisor thread reaps
 * every child of this process that is not a supervisor's own (a leader or a
 * guardian), so such a process must not fork children of its own that it
 * waits for. With guardian, forks and execs the guardian (from the calling
 * thread; it runs in a session of its own, ignoring SIGINT, SIGTERM and
 * SIGHUP, and holds the read end of a pipe whose write end only the
 * supervisor holds). NULL on failure, with the reason in errstr; then
 * nothing was started. o's strings are copied. */
em_child_sup_t *em_child_sup_new_opts(const em_child_sup_opts_t *o, char *errstr, size_t errstr_size);

/* The guardian's main: a program that passes guardian_exe calls it first
 * thing in main when argv[1] is EM_CHILD_GUARDIAN_ARG, and exits with what
 * it returns. Blocks until the supervisor's pipe reaches end of file (the
 * supervisor was destroyed, or its process died), then purges cgroup_root
 * (em_cgroup_purge, 5 s). 0 when nothing is left, 1 when something stays
 * (logged), 2 for bad arguments. */
int em_child_guardian_main(int argc, char **argv);

/* Kills every child's process group (SIGKILL) and cgroup, reaps them, and
 * calls the done callback of each child and of each run not started yet with
 * EM_CHILD_ABANDONED (on the supervisor thread, before it exits); then joins
 * the thread, purges cgroup_root, closes the guardian's pipe and waits for
 * the guardian to exit, and frees sup. Calls made to em_child_run from those
 * callbacks are abandoned the same way. Bounded: it waits only for killed
 * children, for cgroups to empty (bounded by em_cgroup) and for the guardian
 * (SIGKILLed when it takes more than 10 s). */
void em_child_sup_destroy(em_child_sup_t *sup);

/* Queues a child to be started on the supervisor thread; done(arg, res) runs
 * exactly once when it is over (also when it could not be started: outcome
 * EM_CHILD_SPAWN_FAILED). Any thread. Returns EM_ENOMEM, or EM_ESHUTDOWN once
 * the supervisor has stopped; then the callback never fires and the caller
 * still owns what spec points to. */
em_err_t em_child_run(em_child_sup_t *sup, const em_child_spec_t *spec, em_child_done_fn done, void *arg);

/* Asks the supervisor to stop the run whose spec.cancel_key is key. Any
 * thread; returns at once, the cancel is applied on the supervisor thread.
 * A run still queued is never started; a running child's process group gets
 * SIGTERM, and SIGKILL kill_grace_ms later if its leader has not exited.
 * Either way its done callback gets EM_CHILD_CANCELLED, unless the child had
 * ended by itself before the cancel was applied (then the outcome it had).
 * Cancelled means no later EM_CHILD_TIMED_OUT. A key matching no queued or
 * running child (finished already, never run, or 0) is ignored, as is a
 * cancel once the supervisor is being destroyed (destroy abandons the runs).
 * A cancel made after em_child_run returned is never lost, however far the
 * run got. Out of memory, the cancel is dropped and logged (the run's
 * timeout still bounds it). */
void em_child_cancel(em_child_sup_t *sup, uint64_t key);

/* Children started and not yet reaped (any thread; for tests and metrics). */
int em_child_running(em_child_sup_t *sup);

#endif
