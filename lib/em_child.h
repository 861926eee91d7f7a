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
 * dispositions, an fd table of only 0/1/2, the environment it is given and
 * the rlimits it is given. When the child (the group leader) exits, the rest
 * of its process group is killed, so nothing it started outlives it.
 *
 * A run given a cancel_key can be cancelled from any thread with
 * em_child_cancel: a run still queued is never started, a running child is
 * stopped like a timed-out one (SIGTERM to its process group, SIGKILL after
 * the grace), and either way its callback gets EM_CHILD_CANCELLED.
 *
 * Cgroup limits are not applied (yet): only rlimits.
 */
#ifndef EM_CHILD_H
#define EM_CHILD_H

#include <stddef.h>
#include <stdint.h>

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
} em_child_spec_t;

typedef struct em_child_result {
    em_child_outcome_t outcome;
    int exit_code;   /* EXITED: the exit status; otherwise 128 + signal when killed, 127 if execve failed */
    int term_signal; /* the signal that ended it, or 0 */
    int spawn_errno; /* SPAWN_FAILED: the errno of the step that failed */
    const char *spawn_step; /* SPAWN_FAILED: "execve", "fork", "pipe", ... */
    uint8_t *output; /* stdout, malloc'd (NULL when empty): the callback owns it and frees it */
    size_t output_len;
    char stderr_tail[EM_CHILD_STDERR_TAIL + 1]; /* the last bytes of stderr, NUL-terminated */
    size_t stderr_len;                          /* bytes in stderr_tail */
    int64_t run_ms;                             /* from spawn to the end */
} em_child_result_t;

/* Runs on the supervisor thread, once per child. res is valid during the call
 * only, except res->output, which the callback owns. The callback may call
 * em_child_run (the new child is started after it returns). */
typedef void (*em_child_done_fn)(void *arg, em_child_result_t *res);

/* Starts a supervisor and its thread; sets SIGCHLD back to SIG_DFL when it
 * is ignored (SIG_IGN or SA_NOCLDWAIT), for the whole process. NULL on
 * failure, with the reason in errstr. */
em_child_sup_t *em_child_sup_new(char *errstr, size_t errstr_size);

/* Kills every child's process group (SIGKILL), reaps them, and calls the done
 * callback of each child and of each run not started yet with
 * EM_CHILD_ABANDONED (on the supervisor thread, before it exits); then joins
 * the thread and frees sup. Calls made to em_child_run from those callbacks
 * are abandoned the same way. Bounded: it waits only for killed children. */
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
