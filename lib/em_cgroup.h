/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cgroups for an exec handler's children: each run gets a group below this
 * process's own cgroup, limited in memory, processes and CPU, that can be
 * killed whole, including processes that left the child's process group or
 * session (setsid, double fork), which a kill(-pgid) misses. Works on cgroup
 * v1 (one directory per controller hierarchy: memory, pids, cpu, freezer)
 * and on cgroup v2 (one directory; memory, pids and cpu controllers,
 * cgroup.kill or cgroup.freeze). Mount points and this process's own cgroups
 * are read from /proc/self/mountinfo and /proc/self/cgroup, never assumed.
 *
 * A child joins its group between fork and execve by writing to files the
 * parent opened for it (em_cgroup_open_join_fds, em_cgroup_join_fds), so it
 * is inside before it runs a single instruction of the program.
 *
 * Threads: an env is only read after em_cgroup_env_new, so groups may be
 * created from any thread; one group is used by one thread at a time. Every
 * call that waits is bounded.
 */
#ifndef EM_CGROUP_H
#define EM_CGROUP_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"

/* What this process can use: where its cgroups are, which controllers it can
 * create child groups in, and why the others are missing. */
typedef struct em_cgroup_env em_cgroup_env_t;

/* One group: a directory per v1 hierarchy used (co-mounted controllers share
 * one), or one v2 directory. Owns copies of its paths: it may outlive the
 * env it was created from. */
typedef struct em_cgroup em_cgroup_t;

typedef struct em_cgroup_limits {
    int64_t memory_bytes; /* 0: no limit */
    int64_t pids_max;     /* 0: no limit */
    int64_t cpu_millis;   /* CPU time per second of wall time, 1000 = one core; 0: no limit. Below 10 is
                           * raised to 10 (the kernel's smallest quota, 1 ms per 100 ms period) */
} em_cgroup_limits_t;

/* Finds where this process's cgroups are and which of memory, pids, cpu and
 * freezer (v1), or the v2 equivalents (memory, pids and cpu controllers
 * enabled for children of this process's cgroup in the unified hierarchy,
 * and cgroup.kill or cgroup.freeze), it can create child groups in: a
 * directory counts as writable when a probe child can be made and removed in
 * it. The groups are made in v1 or in v2, whichever offers more of memory,
 * pids and a whole-group kill; on a hybrid machine both may be mounted.
 *
 * In v2, a controller listed in this cgroup's cgroup.controllers but not yet
 * in its cgroup.subtree_control is enabled there (and stays enabled); the
 * kernel refuses that while processes live in this cgroup (the no-internal-
 * process rule), and describe() then says so.
 *
 * Never fails (NULL only when out of memory): the env says what is missing.
 * Free it with em_cgroup_env_free; groups created from it may live on. */
em_cgroup_env_t *em_cgroup_env_new(void);
void em_cgroup_env_free(em_cgroup_env_t *env);

/* 1 when groups made here can be limited in memory and pids and killed
 * whole (v1: memory, pids and freezer writable; v2: memory and pids
 * controllers available, and cgroup.kill or cgroup.freeze); else 0. */
int em_cgroup_env_complete(const em_cgroup_env_t *env);

/* A one-line description for a log line, owned by env: "cgroup v1: memory,
 * pids, cpu, freezer at memory=DIR, pids=DIR, ..." (DIR: this process's own
 * cgroup in that controller), followed by what is missing and why, e.g.
 * "; no writable pids controller: mkdir DIR/...: Read-only file system". */
const char *em_cgroup_env_describe(const em_cgroup_env_t *env);

/* This process's own cgroup directory for controller ("memory", "pids",
 * "cpu" or "freezer"; in v2 every usable one names the one directory, and
 * "freezer" stands for cgroup.kill/cgroup.freeze), owned by env; NULL when
 * that controller is not usable. For logs and tests. */
const char *em_cgroup_env_dir(const em_cgroup_env_t *env, const char *controller);

/* Creates the group at relpath under this process's own cgroup in every
 * usable controller (e.g. "execmesh/handler-NAME/exec-42": components of
 * letters, digits, '.', '_' and '-', not "." or ".."; missing parents are
 * created, and in v2 a parent's controllers are enabled in its
 * cgroup.subtree_control), and sets the limits in lim (borrowed; NULL: none);
 * a limit the env cannot set is skipped. memory_bytes also sets v1
 * memory.swappiness to 0 (v2: memory.swap.max to 0), ignoring a refusal, so
 * that the limit is met by the OOM killer rather than by swapping. An
 * existing group at relpath is reused (the limits in lim are written again).
 * NULL with the reason in err on failure, and then nothing was left behind:
 * the directories it made are removed again. */
em_cgroup_t *em_cgroup_create(em_cgroup_env_t *env, const char *relpath, const em_cgroup_limits_t *lim, char *err,
                              size_t errn);

/* g's directory for controller (as em_cgroup_env_dir), owned by g; NULL
 * when g has none for it. For logs and tests. */
const char *em_cgroup_dir(const em_cgroup_t *g, const char *controller);

/* Opens (O_WRONLY|O_CLOEXEC) the file through which a process joins g in
 * each of its directories: cgroup.procs, or in v1 "tasks" when cgroup.procs
 * cannot be opened for writing (old kernels). Stores the fds in fds (at most
 * max) and returns their count; -1 with errno set on failure (EINVAL: max is
 * too small), and then no fd is left open. The caller owns the fds: a forked
 * child calls em_cgroup_join_fds before execve, the parent closes them after
 * the fork. The fds do not survive execve (O_CLOEXEC). */
int em_cgroup_open_join_fds(em_cgroup_t *g, int *fds, int max);

/* In a forked child, before execve: writes "0" (the writer itself) to each
 * of the n fds, moving the calling process into g. Async-signal-safe (only
 * write(2)). 0, or -1 with errno set at the first refusal; the child should
 * then not exec (it would run outside its limits). */
int em_cgroup_join_fds(const int *fds, int n);

/* Kills every process in g, also ones that left the process group or the
 * session: v2 cgroup.kill when present; else freeze (v1 freezer.state
 * FROZEN, v2 cgroup.freeze; waiting for it is bounded and a group that does
 * not freeze is killed all the same), SIGKILL every pid in cgroup.procs, and
 * thaw; again until cgroup.procs is empty in every directory of g, at most
 * timeout_ms. Processes killed but not yet reaped by their parents count as
 * gone (cgroup.procs no longer lists zombies). Must not be called for a group
 * that holds the caller. EM_OK when empty, EM_ETIMEDOUT otherwise. */
em_err_t em_cgroup_kill(em_cgroup_t *g, int64_t timeout_ms);

/* 1 when the kernel's OOM killer killed a process of g: the oom_kill counter
 * (v1 memory.oom_control, v2 memory.events) is above 0; on a v1 kernel
 * without that counter, memory.failcnt > 0 (the limit was hit: a hint, not
 * proof). 0 otherwise, also without a memory controller. */
int em_cgroup_oom_killed(em_cgroup_t *g);

/* 1 when a fork in g was refused by pids.max (pids.events "max N", N > 0);
 * else 0. */
int em_cgroup_pids_limit_hit(em_cgroup_t *g);

/* Peak memory of g in bytes (v1 memory.max_usage_in_bytes, v2 memory.peak
 * when the kernel has it), or -1. */
int64_t em_cgroup_memory_peak(em_cgroup_t *g);

/* Removes g's directories (only its own, not the parents em_cgroup_create
 * made; a directory already gone, e.g. purged, counts as removed) and frees
 * g. Kill it first: a group with processes cannot go; EBUSY is retried for
 * at most a second (a killed group empties asynchronously). EM_OK, or EM_EIO
 * when a directory stays (logged with its path and errno; em_cgroup_purge of
 * a parent later removes it). g is freed either way; NULL is ignored. */
em_err_t em_cgroup_destroy(em_cgroup_t *g);

/* Kills and removes every group under relpath, and relpath itself (e.g. a
 * handler's parent group after a crash left some behind), deepest first, in
 * every usable controller, within timeout_ms in all (the directories of a
 * group emptied in time get one rmdir even when the time is up). relpath as
 * for em_cgroup_create (so never this process's own cgroup). EM_OK also when
 * nothing was there; EM_EINVAL for a bad relpath; EM_ETIMEDOUT when a group
 * could not be emptied in time (it and its parents stay), EM_EIO when a
 * directory could not be listed or removed (logged), EM_ENOMEM; it goes on
 * with the other groups after a timeout or EIO. For the executor's start-up
 * and its guardian. */
em_err_t em_cgroup_purge(em_cgroup_env_t *env, const char *relpath, int64_t timeout_ms);

#endif
