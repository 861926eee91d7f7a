/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The child supervisor: one thread, one epoll set. Per child the set holds
 * the parent's ends of its stdin/stdout/stderr pipes (non-blocking) and a
 * pidfd; the epoll timeout is the nearest timeout or kill deadline. Runs
 * queued by em_child_run (any thread) wait in a list under a mutex and an
 * eventfd wakes the thread, which forks them: every fork happens on this
 * thread, so the children inherit its all-blocked signal mask, which the
 * child resets before execve.
 *
 * em_child_cancel (any thread) appends the key to a list under the same
 * mutex and wakes the thread. Each turn the thread takes the queue and the
 * pending keys in one lock section, finishes a queued run whose key is among
 * them as cancelled without starting it, starts the others, and only then
 * applies the keys to the children started: a cancel made after em_child_run
 * returned finds the run either in the queue taken with it or, taken on a
 * later turn, among the started children. It is never lost in between.
 * A cancelled child gets SIGTERM and a kill deadline, as on a timeout.
 *
 * A child is over when its pidfd says the leader exited: the rest of the
 * group is killed before the leader is reaped (so the group id cannot be
 * reused yet), what the pipes still hold is read, and the callback runs.
 * Children whose events arrive in the same epoll batch are only marked, and
 * finished after the batch, so no event is handled for a freed child.
 *
 * Reaping needs SIGCHLD not ignored: with SIG_IGN (or SA_NOCLDWAIT) the
 * kernel reaps children itself and waitpid fails with ECHILD. A parent may
 * start us that way (dispositions of ignored signals survive execve), so
 * em_child_sup_new puts SIGCHLD back to SIG_DFL. Should something ignore it
 * again later, a child whose pidfd says it exited while waitpid says ECHILD
 * is finished at once (its status lost), never polled again.
 *
 * Containment. A run's cgroup is made on this thread before the fork, with
 * its join files opened; the child writes itself into them before anything
 * else, so even its first instruction after execve counts against the
 * limits. Everything the child needs (paths, fds, ids, rlimits) is prepared
 * before the fork: between fork and execve the child of a multithreaded
 * process may only make async-signal-safe calls, so it uses raw syscalls
 * for the ids (glibc's setuid family synchronises threads). A step that
 * fails there writes {step, errno} to the CLOEXEC error pipe and exits 127;
 * the parent reads it when the leader is over and names the step.
 *
 * When a contained run ends (its leader exited, or the kill of its timeout
 * or cancel is due, or the supervisor is destroyed) its whole cgroup is
 * killed. Processes that escaped the process group (setsid, double fork)
 * are orphans by then, and a supervisor with options has made the process
 * a child subreaper, so they are reparented to us, not to init: they are
 * ours to reap. waitpid(-1) would also take our leaders' statuses from
 * under their pidfds, so orphans are reaped by a pass that looks at the
 * first exited child without reaping it (waitid(P_ALL, WNOWAIT)) and reaps
 * it only when it is nobody's leader or guardian: every supervisor of the
 * process registers its leaders and its guardian in one table (the fork
 * happens under the table's lock, so a leader is registered before anyone
 * can see it exit). A registered child first in line ends the pass; its
 * own supervisor reaps it from its pidfd event and passes again. The pass
 * runs after each leader is reaped and once a second (orphans of runs
 * without a group exit whenever they like). So that the pass after a
 * killed group finds all of its processes already reparented and exited,
 * the kill takes a pidfd for each process listed in the group first and
 * waits (bounded) until every one is readable: the kernel reparents a dying
 * process's children before its pidfd turns readable.
 *
 * The guardian is a process of its own (fork + execve of guardian_exe, in a
 * session of its own, ignoring the terminal's signals) blocked in read() on
 * a pipe whose only write end the supervisor holds (O_CLOEXEC: no run's
 * program inherits it). When the process dies, however it dies, the kernel
 * closes the write end; the guardian reads end of file and purges
 * cgroup_root, killing whatever the runs left behind. Leaders themselves die
 * of their parent-death signal.
 */
#include "em_child.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "em_log.h"
#include "em_util.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

enum { FD_IN, FD_OUT, FD_ERR, FD_PID, FD_N };

#define CG_JOIN_MAX 8          /* join fds of a group: one per hierarchy, at most 4 in v1 */
#define CG_KILL_MS 2000        /* a group that has not emptied by then is logged and left to destroy/purge */
#define CG_EXITED_WAIT_MS 1000 /* after the kill, for the killed processes to finish exiting */
#define CG_PIDFDS_MAX 256      /* processes of a group waited for that way; the rest are left to the 1 s pass */
#define REAP_EVERY_MS 1000     /* the orphan pass when nothing else runs it */
#define PURGE_MS 5000          /* cgroup_root at start and at destroy, and in the guardian */
#define GUARDIAN_WAIT_MS 10000 /* destroy waits that long for the guardian's purge, then SIGKILLs it */
#define WORKDIR_MAX_DEPTH 256  /* deeper trees in a work directory are left behind (logged) */

/* The steps between fork and execve; a failure is reported as {step, errno}. */
enum { ST_CGROUP, ST_DUP2, ST_SETRLIMIT, ST_CHDIR, ST_SETGROUPS, ST_SETGID, ST_SETUID, ST_PRCTL, ST_EXECVE, ST_N };
static const char *const step_names[ST_N] = {"cgroup", "dup2",   "setrlimit", "chdir", "setgroups",
                                             "setgid", "setuid", "prctl",     "execve"};

typedef struct child_err {
    int step;
    int err;
} child_err_t;

typedef struct child child_t;

/* What an epoll event points to: one of a child's fds. */
typedef struct ep_tag {
    child_t *c;
    int which;
} ep_tag_t;

struct child {
    em_child_spec_t spec;
    em_child_done_fn done;
    void *arg;
    pid_t pid;
    int fd[FD_N];
    int exec_err_fd; /* read end of the CLOEXEC pipe the child writes a child_err_t to */
    ep_tag_t tag[FD_N];
    size_t in_off;
    uint8_t *out;
    size_t out_len, out_cap;
    char tail[EM_CHILD_STDERR_TAIL];
    size_t tail_len, tail_pos; /* a ring: the last EM_CHILD_STDERR_TAIL bytes */
    int64_t start_ms, deadline_ms, kill_at_ms;
    int timed_out, over_limit, finished, abandoned, cancelled;
    int wstatus;
    int reap_errno; /* waitpid failed (ECHILD: reaped by someone else): wstatus is unknown */
    em_cgroup_t *cg; /* the run's group, until child_finish removes it */
    char *cg_rel;    /* malloc'd: cgroup_root/cgroup_name */
    char *workdir;   /* malloc'd: the run's working directory, until child_finish removes it */
    child_t *next;
};

struct em_child_sup {
    pthread_t thread;
    int ep, wake_fd;
    pthread_mutex_t lock;
    child_t *queue_head, *queue_tail; /* queued by em_child_run, not started; under lock */
    int stopping;                     /* under lock: destroy was called */
    int stopped;                      /* under lock: the thread took its last run */
    uint64_t *cancels;                /* keys em_child_cancel asked for, not yet taken; under lock */
    size_t n_cancels, cap_cancels;
    child_t *active;                  /* started, not finished; supervisor thread only */
    atomic_int running;
    /* containment; set by the constructor, then read by the supervisor thread, and by destroy after the join */
    em_cgroup_env_t *env; /* borrowed; NULL: no cgroups */
    char *root;           /* malloc'd cgroup_root */
    int subreaper;        /* 1: made the process a subreaper; its thread reaps orphans */
    int64_t next_reap_ms; /* supervisor thread: the next timed orphan pass */
    pid_t guardian_pid;   /* 0: none (or reaped) */
    int guardian_fd;      /* the write end of the guardian's pipe; -1: none */
    int guardian_pidfd;
};

/* ---- the children every supervisor of this process waits for itself ----
 *
 * A multiset of pids (a pid may be reaped and reused by a new leader before
 * the old entry is dropped): the leaders of every supervisor and the
 * guardians. The orphan pass leaves them alone. Forks happen under
 * own_lock, so a child is in the table before anyone can see it exit. */

static pthread_mutex_t own_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t *own_pids; /* under own_lock */
static size_t own_n, own_cap;
static int subreaper_users;   /* under own_lock: supervisors with options alive */
static int subreaper_was_set; /* under own_lock: the process was a subreaper before the first of them */

/* Room for one more pid; under own_lock. 0, or -1 when out of memory. */
static int own_reserve(void) { return em_grow(&own_pids, &own_cap, own_n + 1, sizeof(*own_pids)); }

/* Under own_lock, after own_reserve. */
static void own_add_locked(pid_t pid) { own_pids[own_n++] = pid; }

static int own_has_locked(pid_t pid) {
    for (size_t i = 0; i < own_n; i++)
        if (own_pids[i] == pid)
            return 1;
    return 0;
}

/* Drops one entry of pid: it was reaped. */
static void own_del(pid_t pid) {
    pthread_mutex_lock(&own_lock);
    for (size_t i = 0; i < own_n; i++)
        if (own_pids[i] == pid) {
            own_pids[i] = own_pids[--own_n];
            break;
        }
    if (own_n == 0) {
        free(own_pids);
        own_pids = NULL;
        own_cap = 0;
    }
    pthread_mutex_unlock(&own_lock);
}

/* Reaps the exited children of this process that no supervisor waits for
 * itself: orphans reparented to us as subreaper. Stops at the first exited
 * child that is registered (another supervisor's, or one of our leaders not
 * reaped yet: its pidfd event comes, and after its reap another pass); our
 * own guardian, exited early, is reaped here (a pass would stop at it for
 * ever). Supervisor thread of a subreaper supervisor. */
static void reap_orphans(em_child_sup_t *s) {
    if (!s->subreaper)
        return;
    pthread_mutex_lock(&own_lock);
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid <= 0)
            break; /* none exited (or ECHILD: no children, or SIGCHLD ignored) */
        pid_t pid = si.si_pid;
        if (pid == s->guardian_pid) {
            int st = 0;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                EM_ERROR("child supervisor: the guardian exited: the runs' cgroups will not be purged if this "
                         "process is killed",
                         EM_F_INT("pid", pid), EM_F_INT("status", st));
                s->guardian_pid = 0;
                for (size_t i = 0; i < own_n; i++)
                    if (own_pids[i] == pid) {
                        own_pids[i] = own_pids[--own_n];
                        break;
                    }
            }
            continue;
        }
        if (own_has_locked(pid))
            break;
        if (waitpid(pid, NULL, WNOHANG) != pid)
            break; /* not ours after all (EINTR, or another thread's waitpid): next pass */
    }
    pthread_mutex_unlock(&own_lock);
}

/* ---- a run's cgroup and working directory ---- */

/* Opens a pidfd for each process listed in g (at most max) into fds.
 * Returns their count. */
static int group_pidfds(em_cgroup_t *g, int *fds, int max) {
    static const char *const ctls[] = {"pids", "memory", "freezer", "cpu"};
    const char *d = NULL;
    for (size_t i = 0; i < EM_ARRAY_LEN(ctls) && !d; i++)
        d = em_cgroup_dir(g, ctls[i]);
    if (!d)
        return 0;
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/cgroup.procs", d) >= (int)sizeof(path))
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[8192];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof(buf) - 1 && ((r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0 || (r < 0 && errno == EINTR)))
        if (r > 0)
            len += (size_t)r;
    close(fd);
    buf[len] = '\0';
    int n = 0;
    for (char *p = buf, *end; *p && n < max; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p) {
            end = p + 1;
            continue;
        }
        if (v <= 0 || *end != '\n') /* a number cut by the buffer's end is not a pid */
            continue;
        int pfd = (int)syscall(SYS_pidfd_open, (pid_t)v, 0);
        if (pfd >= 0)
            fds[n++] = pfd; /* ESRCH: gone already */
    }
    return n;
}

/* Waits until every pidfd of fds is readable (its process exited), at most
 * until; closes them. */
static void pidfds_wait(int *fds, int n, int64_t until) {
    struct pollfd pf[CG_PIDFDS_MAX];
    for (int i = 0; i < n; i++)
        pf[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    int left = n;
    while (left > 0) {
        int64_t ms = until - em_mono_ms();
        if (ms <= 0)
            break;
        int r = poll(pf, (nfds_t)n, (int)ms);
        if (r < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++)
            if (pf[i].fd >= 0 && pf[i].revents) {
                close(pf[i].fd);
                pf[i].fd = -1; /* poll skips negative fds */
                left--;
            }
    }
    for (int i = 0; i < n; i++)
        if (pf[i].fd >= 0)
            close(pf[i].fd);
}

/* Kills c's whole cgroup, also what left its process group or session, and
 * waits (bounded) for the killed processes to finish exiting, so that the
 * orphan pass after the leader's reap finds them all. Supervisor thread. */
static void group_end(child_t *c) {
    if (!c->cg)
        return;
    int fds[CG_PIDFDS_MAX];
    int n = group_pidfds(c->cg, fds, CG_PIDFDS_MAX);
    if (em_cgroup_kill(c->cg, CG_KILL_MS) != EM_OK)
        EM_ERROR("child supervisor: a run's cgroup did not empty after SIGKILL (processes in D state?); left to "
                 "the purge",
                 EM_F_STR("cgroup", c->cg_rel), EM_F_INT("timeout_ms", CG_KILL_MS));
    pidfds_wait(fds, n, em_mono_ms() + CG_EXITED_WAIT_MS);
}

/* Removes what the directory dfd holds (dfd is taken), depth first. Not
 * nftw: a path-based walk follows a directory that a process of the run
 * (one without a group may still be alive) swapped for a symlink between
 * the walk's lstat and its opendir, and root would delete what the link
 * points to. Here every directory is opened relative to its parent's fd
 * with O_NOFOLLOW, symlinks are unlinked as entries, and another file system
 * mounted inside is not entered. 0, or -1 when something stays. */
static int rm_tree_at(int dfd, dev_t dev, int depth) {
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            continue;
        if (errno != EISDIR && errno != EPERM) { /* Linux says EISDIR for a directory; POSIX allows EPERM */
            rc = -1;
            continue;
        }
        int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        if (sub < 0 || depth >= WORKDIR_MAX_DEPTH || fstat(sub, &st) != 0 || st.st_dev != dev) {
            if (sub >= 0)
                close(sub);
            rc = -1;
            continue;
        }
        if (rm_tree_at(sub, dev, depth + 1) != 0)
            rc = -1;
        if (unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR) != 0)
            rc = -1;
    }
    closedir(d);
    return rc;
}

/* Removes the run's working directory and all it holds; logs what stays. */
static void workdir_remove(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    int rc = fd >= 0 && fstat(fd, &st) == 0 ? 0 : -1;
    if (rc == 0)
        rc = rm_tree_at(fd, st.st_dev, 0);
    else if (fd >= 0)
        close(fd);
    if (rmdir(path) != 0 || rc != 0)
        EM_WARN("child supervisor: a run's working directory is not removed completely", EM_F_STR("path", path),
                EM_F_STR("error", strerror(errno)));
}

static void child_free(child_t *c) {
    for (int i = 0; i < FD_N; i++)
        if (c->fd[i] >= 0)
            close(c->fd[i]);
    if (c->exec_err_fd >= 0)
        close(c->exec_err_fd);
    free(c->out);
    free(c->cg_rel);
    free(c->workdir);
    free(c);
}

/* Removes fd which of c from the set and closes it. */
static void fd_close(em_child_sup_t *s, child_t *c, int which) {
    if (c->fd[which] < 0)
        return;
    epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd[which], NULL);
    close(c->fd[which]);
    c->fd[which] = -1;
}

static void group_kill(child_t *c, int sig) {
    if (c->pid > 0)
        kill(-c->pid, sig); /* ESRCH: the group is gone already */
}

/* Calls the callback with what c produced, then frees c. */
static void child_finish(em_child_sup_t *s, child_t *c, em_child_outcome_t outcome, int spawn_errno,
                         const char *step) {
    em_child_result_t *r = calloc(1, sizeof(*r));
    if (!r) { /* the result is too big for some thread stacks: heap, and no way to report otherwise */
        EM_ERROR("child supervisor: out of memory finishing a child");
        abort();
    }
    r->outcome = outcome;
    r->spawn_errno = spawn_errno;
    r->spawn_step = step ? step : "";
    if (outcome != EM_CHILD_SPAWN_FAILED || c->pid > 0) {
        if (WIFEXITED(c->wstatus)) {
            r->exit_code = WEXITSTATUS(c->wstatus);
        } else if (WIFSIGNALED(c->wstatus)) {
            r->term_signal = WTERMSIG(c->wstatus);
            r->exit_code = 128 + r->term_signal;
        }
    }
    if (outcome == EM_CHILD_EXITED && r->term_signal)
        r->outcome = EM_CHILD_SIGNALED;
    if (outcome == EM_CHILD_SPAWN_FAILED)
        r->exit_code = 127;
    r->output = c->out;
    r->output_len = c->out_len;
    c->out = NULL;
    /* the ring, oldest byte first */
    size_t first = c->tail_len < EM_CHILD_STDERR_TAIL ? 0 : c->tail_pos;
    for (size_t i = 0; i < c->tail_len; i++)
        r->stderr_tail[i] = c->tail[(first + i) % EM_CHILD_STDERR_TAIL];
    r->stderr_tail[c->tail_len] = '\0';
    r->stderr_len = c->tail_len;
    r->run_ms = c->start_ms ? em_mono_ms() - c->start_ms : 0;
    r->oom_killed = r->pids_limit_hit = -1;
    r->memory_peak = -1;
    if (c->cg) {
        group_end(c); /* killed already but for a run that failed after its fork: then it is empty */
        if (em_cgroup_dir(c->cg, "memory")) {
            r->oom_killed = em_cgroup_oom_killed(c->cg);
            r->memory_peak = em_cgroup_memory_peak(c->cg);
        }
        if (em_cgroup_dir(c->cg, "pids"))
            r->pids_limit_hit = em_cgroup_pids_limit_hit(c->cg);
        if (em_cgroup_destroy(c->cg) != EM_OK) /* logged by em_cgroup; the purge at destroy gets it */
            EM_WARN("child supervisor: a run's cgroup stays", EM_F_STR("cgroup", c->cg_rel));
        c->cg = NULL;
    }
    if (c->workdir)
        workdir_remove(c->workdir);
    if (c->pid > 0)
        atomic_fetch_sub(&s->running, 1);
    em_child_done_fn done = c->done;
    void *arg = c->arg;
    for (int i = 0; i < FD_N; i++)
        fd_close(s, c, i);
    child_free(c);
    done(arg, r);
    free(r->output); /* NULL when the callback took it */
    free(r);
}

/* Moves fd above 2 so that dup2 onto 0/1/2 in the child cannot clobber it. */
static int fd_high(int fd) {
    if (fd > 2)
        return fd;
    int h = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return h;
}

static int pipe_high(int p[2]) {
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    p[0] = fd_high(p[0]);
    p[1] = fd_high(p[1]);
    if (p[0] < 0 || p[1] < 0) {
        if (p[0] >= 0)
            close(p[0]);
        if (p[1] >= 0)
            close(p[1]);
        return -1;
    }
    return 0;
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* What the child does between fork and execve, all prepared before the fork. */
typedef struct plan {
    const em_child_spec_t *sp;
    int in[2], out[2], err[2];
    int exec_err_w; /* the CLOEXEC pipe for a child_err_t */
    struct rlimit rl[4];
    int rl_res[4], nrl;
    int join[CG_JOIN_MAX]; /* the cgroup's join fds */
    int n_join;
    const char *workdir;
    pid_t parent; /* the supervisor's process, for the parent-death check */
} plan_t;

/* In the child, between fork and execve: async-signal-safe calls only. */
static void __attribute__((noreturn)) child_exec(const plan_t *p) {
    const em_child_spec_t *sp = p->sp;
    int step = ST_CGROUP;
    /* first: whatever the child does from here on counts against its group */
    if (p->n_join > 0 && em_cgroup_join_fds(p->join, p->n_join) != 0)
        goto fail;
    setpgid(0, 0);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL); /* ignored signals (SIGPIPE here) would stay ignored across execve */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    step = ST_DUP2;
    if (dup2(p->in[0], 0) < 0 || dup2(p->out[1], 1) < 0 || dup2(p->err[1], 2) < 0)
        goto fail;
    step = ST_SETRLIMIT;
    for (int i = 0; i < p->nrl; i++)
        if (setrlimit(p->rl_res[i], &p->rl[i]) != 0)
            goto fail;
    step = ST_CHDIR; /* still as root: the user need not be able to reach workdir_base */
    if (p->workdir && chdir(p->workdir) != 0)
        goto fail;
    if (sp->drop_user) {
        /* raw syscalls: glibc's wrappers would try to synchronise the parent's other threads */
        step = ST_SETGROUPS;
        if (syscall(SYS_setgroups, 0, NULL) != 0)
            goto fail;
        step = ST_SETGID;
        if (syscall(SYS_setgid, sp->gid) != 0)
            goto fail;
        step = ST_SETUID;
        if (syscall(SYS_setuid, sp->uid) != 0)
            goto fail;
    }
    /* after the id change, which clears a parent-death signal set before it */
    step = ST_PRCTL;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        goto fail;
    /* the supervisor died before the signal was armed: nobody will kill or reap this run */
    if (getppid() != p->parent)
        _exit(127);
    /* only 0/1/2 and the CLOEXEC error pipe survive; execve closes the latter */
    if (p->exec_err_w > 3)
        syscall(SYS_close_range, 3U, (unsigned)p->exec_err_w - 1, 0U);
    syscall(SYS_close_range, (unsigned)p->exec_err_w + 1, ~0U, 0U);
    step = ST_EXECVE;
    execve(sp->argv[0], (char *const *)(uintptr_t)sp->argv,
           (char *const *)(uintptr_t)(sp->envp ? sp->envp : (const char *const[]){NULL}));
fail:;
    child_err_t ce = {step, errno};
    ssize_t w = write(p->exec_err_w, &ce, sizeof(ce));
    (void)w;
    _exit(127);
}

/* Makes c's cgroup and opens its join fds into p. 0, or an errno (logged). */
static int cgroup_prepare(em_child_sup_t *s, child_t *c, plan_t *p) {
    char err[512] = "";
    int e = 0;
    if (!s->env) {
        snprintf(err, sizeof(err), "this supervisor has no cgroups (em_child_sup_new_opts without cgroups)");
        e = ENOTSUP;
        goto out;
    }
    size_t n = strlen(s->root) + 1 + strlen(c->spec.cgroup_name) + 1;
    c->cg_rel = malloc(n);
    if (!c->cg_rel) {
        e = ENOMEM;
        snprintf(err, sizeof(err), "out of memory");
        goto out;
    }
    snprintf(c->cg_rel, n, "%s/%s", s->root, c->spec.cgroup_name);
    errno = 0;
    c->cg = em_cgroup_create(s->env, c->cg_rel, &c->spec.cgroup_limits, err, sizeof(err));
    if (!c->cg) {
        e = errno ? errno : EINVAL; /* EINVAL: a bad name, which sets no errno */
        goto out;
    }
    p->n_join = em_cgroup_open_join_fds(c->cg, p->join, CG_JOIN_MAX);
    if (p->n_join < 0) {
        e = errno;
        p->n_join = 0;
        snprintf(err, sizeof(err), "opening the group's cgroup.procs: %s", strerror(e));
    }
out:
    if (e)
        EM_ERROR("child supervisor: no cgroup for a run; it is not started",
                 EM_F_STR("cgroup", c->cg_rel ? c->cg_rel : c->spec.cgroup_name), EM_F_STR("error", err),
                 EM_F_STR("errno", strerror(e)));
    return e;
}

/* Makes c's working directory below workdir_base, owned by the run's user. 0, or an errno (logged). */
static int workdir_prepare(child_t *c) {
    size_t n = strlen(c->spec.workdir_base) + sizeof("/run-XXXXXX");
    c->workdir = malloc(n);
    if (!c->workdir)
        return ENOMEM;
    snprintf(c->workdir, n, "%s/run-XXXXXX", c->spec.workdir_base);
    int e = 0;
    if (!mkdtemp(c->workdir)) { /* mode 0700 */
        e = errno;
        EM_ERROR("child supervisor: cannot make a run's working directory", EM_F_STR("base", c->spec.workdir_base),
                 EM_F_STR("error", strerror(e)));
        free(c->workdir);
        c->workdir = NULL;
        return e;
    }
    if (c->spec.drop_user && chown(c->workdir, c->spec.uid, c->spec.gid) != 0) {
        e = errno;
        EM_ERROR("child supervisor: cannot give a run's working directory to its user", EM_F_STR("path", c->workdir),
                 EM_F_INT("uid", c->spec.uid), EM_F_INT("gid", c->spec.gid), EM_F_STR("error", strerror(e)));
        rmdir(c->workdir);
        free(c->workdir);
        c->workdir = NULL;
    }
    return e;
}

/* Forks and execs c; on failure finishes it as SPAWN_FAILED. Supervisor thread. */
static void child_spawn(em_child_sup_t *s, child_t *c) {
    plan_t p;
    memset(&p, 0, sizeof(p));
    p.sp = &c->spec;
    int *in = p.in, *out = p.out, *err = p.err, xe[2] = {-1, -1};
    in[0] = in[1] = out[0] = out[1] = err[0] = err[1] = -1;
    const char *step = "cgroup";
    int e = 0;
    const em_child_limits_t *L = &c->spec.limits;
    if (L->cpu_seconds > 0) {
        p.rl[p.nrl] = (struct rlimit){(rlim_t)L->cpu_seconds, (rlim_t)L->cpu_seconds + 1};
        p.rl_res[p.nrl++] = RLIMIT_CPU; /* the soft limit sends SIGXCPU, the hard one SIGKILL */
    }
    if (L->memory_mb > 0) {
        rlim_t b = (rlim_t)L->memory_mb * 1024 * 1024;
        p.rl[p.nrl] = (struct rlimit){b, b};
        p.rl_res[p.nrl++] = RLIMIT_AS;
    }
    if (L->open_files > 0) {
        p.rl[p.nrl] = (struct rlimit){(rlim_t)L->open_files, (rlim_t)L->open_files};
        p.rl_res[p.nrl++] = RLIMIT_NOFILE;
    }
    if (L->processes > 0) {
        p.rl[p.nrl] = (struct rlimit){(rlim_t)L->processes, (rlim_t)L->processes};
        p.rl_res[p.nrl++] = RLIMIT_NPROC;
    }
    if (c->spec.cgroup_name && (e = cgroup_prepare(s, c, &p)) != 0)
        goto fail;
    step = "workdir";
    if (c->spec.workdir_base && (e = workdir_prepare(c)) != 0)
        goto fail;
    p.workdir = c->workdir;
    step = "pipe";
    if (pipe_high(in) || pipe_high(out) || pipe_high(err) || pipe_high(xe)) {
        e = errno;
        goto fail;
    }
    p.exec_err_w = xe[1];
    p.parent = getpid();
    step = "fork";
    c->start_ms = em_mono_ms();
    pthread_mutex_lock(&own_lock); /* registered before any orphan pass can see it exit */
    pid_t pid = -1;
    if (own_reserve() != 0)
        errno = ENOMEM;
    else if ((pid = fork()) == 0)
        child_exec(&p);
    else if (pid > 0)
        own_add_locked(pid);
    e = errno;
    pthread_mutex_unlock(&own_lock);
    for (int i = 0; i < p.n_join; i++)
        close(p.join[i]);
    p.n_join = 0;
    if (pid < 0)
        goto fail;
    e = 0;
    setpgid(pid, pid); /* also here: kill(-pid) must work before the child ran */
    c->pid = pid;
    atomic_fetch_add(&s->running, 1);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    close(xe[1]);
    in[0] = out[1] = err[1] = xe[1] = -1;
    c->fd[FD_IN] = in[1];
    c->fd[FD_OUT] = out[0];
    c->fd[FD_ERR] = err[0];
    c->exec_err_fd = xe[0];
    in[1] = out[0] = err[0] = xe[0] = -1;
    step = "pidfd_open";
    c->fd[FD_PID] = (int)syscall(SYS_pidfd_open, pid, 0);
    if (c->fd[FD_PID] < 0) {
        e = errno;
        group_kill(c, SIGKILL);
        kill(pid, SIGKILL);
        group_end(c);
        waitpid(pid, &c->wstatus, 0); /* bounded: it was just SIGKILLed */
        own_del(pid);
        goto fail;
    }
    step = "epoll_ctl";
    for (int i = 0; i < FD_N; i++) {
        if (i != FD_PID)
            set_nonblock(c->fd[i]);
        c->tag[i] = (ep_tag_t){c, i};
        struct epoll_event ev = {.events = i == FD_IN ? EPOLLOUT : EPOLLIN, .data.ptr = &c->tag[i]};
        if (i == FD_IN && c->spec.input_len == 0)
            continue;
        if (epoll_ctl(s->ep, EPOLL_CTL_ADD, c->fd[i], &ev) != 0) {
            e = errno;
            group_kill(c, SIGKILL);
            group_end(c);
            waitpid(pid, &c->wstatus, 0);
            own_del(pid);
            goto fail;
        }
    }
    if (c->spec.input_len == 0)
        fd_close(s, c, FD_IN);
    if (c->spec.timeout_ms > 0)
        c->deadline_ms = c->start_ms + c->spec.timeout_ms;
    c->next = s->active;
    s->active = c;
    return;
fail:
    for (int i = 0; i < p.n_join; i++)
        close(p.join[i]);
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
        if (xe[i] >= 0)
            close(xe[i]);
    }
    child_finish(s, c, EM_CHILD_SPAWN_FAILED, e, step); /* removes the group and the working directory */
}

static void on_stdin(em_child_sup_t *s, child_t *c) {
    while (c->in_off < c->spec.input_len) {
        size_t n = c->spec.input_len - c->in_off;
        ssize_t w = write(c->fd[FD_IN], c->spec.input + c->in_off, n > 65536 ? 65536 : n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return;
        if (w <= 0) /* EPIPE: the child closed its stdin; the rest is not wanted */
            break;
        c->in_off += (size_t)w;
    }
    fd_close(s, c, FD_IN);
}

/* Reads what fd which holds now (until EAGAIN or end of file). */
static void on_output(em_child_sup_t *s, child_t *c, int which) {
    uint8_t buf[16384];
    while (c->fd[which] >= 0) {
        ssize_t n = read(c->fd[which], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            fd_close(s, c, which);
            return;
        }
        if (which == FD_ERR) {
            for (ssize_t i = 0; i < n; i++) {
                c->tail[c->tail_pos] = (char)buf[i];
                c->tail_pos = (c->tail_pos + 1) % EM_CHILD_STDERR_TAIL;
            }
            c->tail_len = c->tail_len + (size_t)n > EM_CHILD_STDERR_TAIL ? EM_CHILD_STDERR_TAIL
                                                                        : c->tail_len + (size_t)n;
            continue;
        }
        if (c->out_len + (size_t)n > c->spec.max_output) {
            c->over_limit = 1;
            group_kill(c, SIGKILL);
            fd_close(s, c, FD_OUT);
            return;
        }
        if (c->out_len + (size_t)n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap < c->out_len + (size_t)n)
                cap *= 2;
            if (cap > c->spec.max_output)
                cap = c->spec.max_output;
            uint8_t *p = realloc(c->out, cap);
            if (!p) { /* out of memory: treat like too much output */
                c->over_limit = 1;
                group_kill(c, SIGKILL);
                fd_close(s, c, FD_OUT);
                return;
            }
            c->out = p;
            c->out_cap = cap;
        }
        memcpy(c->out + c->out_len, buf, (size_t)n);
        c->out_len += (size_t)n;
    }
}

/* The leader exited: kill the rest of its process group and its cgroup,
 * reap it, take what the pipes hold, and mark it finished; then reap the
 * orphans the kill made. */
static void on_exit_of(em_child_sup_t *s, child_t *c) {
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    int w = waitid(P_PID, (id_t)c->pid, &si, WEXITED | WNOHANG | WNOWAIT);
    if ((w == 0 && si.si_pid != c->pid) || (w < 0 && errno == EINTR))
        return; /* not yet (a spurious wake-up): the pidfd stays readable */
    group_kill(c, SIGKILL); /* before the reap, while the group id is still ours */
    group_end(c);
    pid_t r = waitpid(c->pid, &c->wstatus, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR))
        return; /* cannot be, it exited: the pidfd stays readable, try again */
    own_del(c->pid);
    if (r < 0) {
        /* ECHILD: the kernel or another waitpid reaped it, so the pidfd
         * stays readable for ever: finish it now instead of polling it again */
        c->reap_errno = errno;
        c->wstatus = 0;
        EM_ERROR("child supervisor: a child's exit status is lost (is SIGCHLD ignored again?)",
                 EM_F_INT("pid", c->pid), EM_F_STR("error", strerror(errno)));
    }
    fd_close(s, c, FD_PID);
    fd_close(s, c, FD_IN);
    on_output(s, c, FD_OUT);
    on_output(s, c, FD_ERR);
    c->finished = 1;
    reap_orphans(s);
}

static void finish_marked(em_child_sup_t *s) {
    child_t **pp = &s->active;
    while (*pp) {
        child_t *c = *pp;
        if (!c->finished) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        child_err_t ce = {0, 0};
        if (c->exec_err_fd >= 0 && read(c->exec_err_fd, &ce, sizeof(ce)) == (ssize_t)sizeof(ce))
            child_finish(s, c, EM_CHILD_SPAWN_FAILED, ce.err,
                         ce.step >= 0 && ce.step < ST_N ? step_names[ce.step] : "execve");
        else if (c->abandoned)
            child_finish(s, c, EM_CHILD_ABANDONED, 0, NULL);
        else if (c->cancelled)
            child_finish(s, c, EM_CHILD_CANCELLED, 0, NULL);
        else if (c->timed_out)
            child_finish(s, c, EM_CHILD_TIMED_OUT, 0, NULL);
        else if (c->over_limit)
            child_finish(s, c, EM_CHILD_OUTPUT_LIMIT, 0, NULL);
        else if (c->reap_errno)
            child_finish(s, c, EM_CHILD_SPAWN_FAILED, c->reap_errno, "waitpid");
        else
            child_finish(s, c, EM_CHILD_EXITED, 0, NULL);
    }
}

/* Sends the timeout's and the cancels' signals that are due (the KILL goes
 * to the cgroup too); runs the timed orphan pass when due; returns the
 * epoll timeout until the next deadline (-1: none). A cancelled child is
 * being stopped already: its timeout no longer counts, only its kill_at_ms. */
static int deadlines(em_child_sup_t *s) {
    int64_t now = em_mono_ms(), next = -1;
    for (child_t *c = s->active; c; c = c->next) {
        int waits_timeout = c->deadline_ms && !c->timed_out && !c->cancelled;
        if (waits_timeout && now >= c->deadline_ms) {
            c->timed_out = 1;
            waits_timeout = 0;
            group_kill(c, SIGTERM);
            c->kill_at_ms = now + c->spec.kill_grace_ms;
        }
        if (c->kill_at_ms && now >= c->kill_at_ms) {
            group_kill(c, SIGKILL);
            group_end(c); /* the leader too: its pidfd event follows */
            c->kill_at_ms = 0;
        }
        if (waits_timeout && (next < 0 || c->deadline_ms < next))
            next = c->deadline_ms;
        if (c->kill_at_ms && (next < 0 || c->kill_at_ms < next))
            next = c->kill_at_ms;
    }
    if (s->subreaper) {
        now = em_mono_ms(); /* a group_end above may have taken a while */
        if (now >= s->next_reap_ms) {
            reap_orphans(s);
            s->next_reap_ms = now + REAP_EVERY_MS;
        }
        if (next < 0 || s->next_reap_ms < next)
            next = s->next_reap_ms;
    }
    if (next < 0)
        return -1;
    return next <= now ? 0 : (int)(next - now > 60000 ? 60000 : next - now);
}

/* Is key (not 0) among the n keys? */
static int key_in(const uint64_t *keys, size_t n, uint64_t key) {
    if (!key)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (keys[i] == key)
            return 1;
    return 0;
}

/* Has the leader exited already (its pidfd event not handled yet)? Leaves
 * it to be reaped by on_exit_of. */
static int leader_exited(const child_t *c) {
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    return waitid(P_PID, (id_t)c->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == c->pid;
}

/* Stops the started children whose key is among the n keys: SIGTERM now,
 * SIGKILL after the grace (deadlines() sends it). A child that ended before
 * the cancel keeps the outcome it had; one being killed for its timeout
 * already keeps its earlier kill deadline. Supervisor thread. */
static void apply_cancels(em_child_sup_t *s, const uint64_t *keys, size_t n) {
    if (!n)
        return;
    int64_t now = em_mono_ms();
    for (child_t *c = s->active; c; c = c->next) {
        if (c->finished || c->cancelled || !key_in(keys, n, c->spec.cancel_key) || leader_exited(c))
            continue;
        c->cancelled = 1;
        if (c->timed_out)
            continue; /* TERM sent, KILL sent or due sooner */
        group_kill(c, SIGTERM);
        c->kill_at_ms = now + c->spec.kill_grace_ms;
    }
}

/* Takes the queued runs and, in the same lock section, the pending cancel
 * keys (*keys: malloc'd, the caller frees it): a cancel that em_child_cancel
 * made after em_child_run returned is either taken here with its run or
 * taken later, once the run was started. */
static child_t *take_queue(em_child_sup_t *s, int *stopping, uint64_t **keys, size_t *n_keys) {
    pthread_mutex_lock(&s->lock);
    child_t *q = s->queue_head;
    s->queue_head = s->queue_tail = NULL;
    *keys = s->cancels;
    *n_keys = s->n_cancels;
    s->cancels = NULL;
    s->n_cancels = s->cap_cancels = 0;
    *stopping = s->stopping;
    if (*stopping && !q && !s->active)
        s->stopped = 1; /* em_child_run refuses from now on */
    pthread_mutex_unlock(&s->lock);
    return q;
}

static void *sup_thread(void *arg) {
    em_child_sup_t *s = arg;
    struct epoll_event evs[64];
    for (;;) {
        int stopping;
        uint64_t *keys;
        size_t n_keys;
        child_t *q = take_queue(s, &stopping, &keys, &n_keys);
        if (stopping && !q && !s->active) {
            free(keys);
            break;
        }
        while (q) {
            child_t *c = q;
            q = q->next;
            if (stopping)
                child_finish(s, c, EM_CHILD_ABANDONED, 0, NULL);
            else if (key_in(keys, n_keys, c->spec.cancel_key))
                child_finish(s, c, EM_CHILD_CANCELLED, 0, NULL); /* never started */
            else
                child_spawn(s, c);
        }
        if (!stopping)
            apply_cancels(s, keys, n_keys); /* stopping: every child is abandoned instead */
        free(keys);
        if (stopping) {
            /* kill every child, then reap them; their callbacks may queue
             * more runs, which the next turn abandons. All are killed before
             * the first wait: were SIGCHLD ignored, a wait returns only once
             * every child is gone. */
            for (child_t *c = s->active; c; c = c->next)
                if (!c->finished)
                    group_kill(c, SIGKILL);
            for (child_t *c = s->active; c; c = c->next)
                if (!c->finished)
                    group_end(c);
            for (child_t *c = s->active; c; c = c->next) {
                if (!c->finished) {
                    waitpid(c->pid, &c->wstatus, 0); /* bounded: SIGKILLed */
                    own_del(c->pid);
                    on_output(s, c, FD_OUT); /* what it wrote before the kill, for the callback's logs */
                    on_output(s, c, FD_ERR);
                }
                c->abandoned = c->finished = 1;
            }
            reap_orphans(s);
            finish_marked(s);
            continue;
        }
        int timeout = deadlines(s);
        int n = epoll_wait(s->ep, evs, (int)EM_ARRAY_LEN(evs), timeout);
        for (int i = 0; i < n; i++) {
            ep_tag_t *t = evs[i].data.ptr;
            if (!t) {
                uint64_t v;
                ssize_t r = read(s->wake_fd, &v, sizeof(v));
                (void)r;
                continue;
            }
            child_t *c = t->c;
            if (c->finished || c->fd[t->which] < 0)
                continue; /* closed earlier in this batch */
            switch (t->which) {
            case FD_IN: on_stdin(s, c); break;
            case FD_OUT:
            case FD_ERR: on_output(s, c, t->which); break;
            case FD_PID: on_exit_of(s, c); break;
            }
        }
        finish_marked(s);
    }
    return NULL;
}

/* An ignored SIGCHLD (SIG_IGN or SA_NOCLDWAIT, e.g. inherited from the
 * parent across execve) has the kernel reap our children before we can:
 * put it back to the default, or keep the handler someone installed
 * without SA_NOCLDWAIT. Process-wide: nothing in a service relies on
 * children being reaped for it. */
static void sigchld_not_ignored(void) {
    struct sigaction sa;
    if (sigaction(SIGCHLD, NULL, &sa) != 0)
        return;
    if (sa.sa_handler != SIG_IGN && !(sa.sa_flags & SA_NOCLDWAIT))
        return;
    int was_ignored = sa.sa_handler == SIG_IGN;
    if (was_ignored)
        sa.sa_handler = SIG_DFL;
    sa.sa_flags &= ~SA_NOCLDWAIT;
    if (sigaction(SIGCHLD, &sa, NULL) != 0) {
        EM_ERROR("child supervisor: cannot stop ignoring SIGCHLD; exit statuses will be lost",
                 EM_F_STR("error", strerror(errno)));
        return;
    }
    EM_WARN("child supervisor: SIGCHLD was ignored (inherited from the parent?); set back so that children can be "
            "reaped", EM_F_STR("was", was_ignored ? "SIG_IGN" : "SA_NOCLDWAIT"));
}

/* ---- the guardian ---- */

extern char **environ;

/* In the guardian's child, between fork and execve: async-signal-safe calls
 * only. rfd becomes fd 3 (not CLOEXEC), every other fd but 0/1/2 is closed
 * (the write end among them: the guardian must see end of file when the
 * supervisor's process dies). rfd and xe_w are above 3. */
static void __attribute__((noreturn)) guardian_exec(const char *const *argv, int rfd, int xe_w) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        /* a terminal's Ctrl-C or a service manager's TERM to the executor must not stop it; ignored
         * dispositions survive execve, so it is ignoring them from its first instruction */
        sa.sa_handler = sig == SIGINT || sig == SIGTERM || sig == SIGHUP ? SIG_IGN : SIG_DFL;
        sigaction(sig, &sa, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid(); /* out of the executor's process group and session */
    if (dup2(rfd, 3) < 0)
        goto fail;
    syscall(SYS_close_range, 4U, (unsigned)xe_w - 1, 0U);
    syscall(SYS_close_range, (unsigned)xe_w + 1, ~0U, 0U);
    execve(argv[0], (char *const *)(uintptr_t)argv, environ);
fail:;
    int e = errno;
    ssize_t w = write(xe_w, &e, sizeof(e));
    (void)w;
    _exit(127);
}

/* Moves fd above 3 (the guardian's fd 3 is taken by the read end). */
static int fd_above_3(int fd) {
    if (fd < 0 || fd > 3)
        return fd;
    int h = fcntl(fd, F_DUPFD_CLOEXEC, 4);
    close(fd);
    return h;
}

/* Starts s's guardian for s->root. Calling thread. 0, or -1 with errstr. */
static int guardian_start(em_child_sup_t *s, const char *exe, char *errstr, size_t errstr_size) {
    int gp[2] = {-1, -1}, xe[2] = {-1, -1}, rc = -1;
    pid_t pid = -1;
    if (pipe2(gp, O_CLOEXEC) != 0 || pipe2(xe, O_CLOEXEC) != 0) {
        snprintf(errstr, errstr_size, "child supervisor: guardian: pipe: %s", strerror(errno));
        goto out;
    }
    gp[0] = fd_above_3(gp[0]);
    gp[1] = fd_above_3(gp[1]);
    xe[0] = fd_above_3(xe[0]);
    xe[1] = fd_above_3(xe[1]);
    if (gp[0] < 0 || gp[1] < 0 || xe[0] < 0 || xe[1] < 0) {
        snprintf(errstr, errstr_size, "child supervisor: guardian: fcntl: %s", strerror(errno));
        goto out;
    }
    const char *const argv[] = {exe, EM_CHILD_GUARDIAN_ARG, "3", s->root, NULL};
    pthread_mutex_lock(&own_lock);
    if (own_reserve() != 0)
        errno = ENOMEM;
    else if ((pid = fork()) == 0)
        guardian_exec(argv, gp[0], xe[1]);
    else if (pid > 0)
        own_add_locked(pid);
    int e = errno;
    pthread_mutex_unlock(&own_lock);
    if (pid < 0) {
        snprintf(errstr, errstr_size, "child supervisor: guardian: fork: %s", strerror(e));
        goto out;
    }
    close(gp[0]);
    close(xe[1]);
    gp[0] = xe[1] = -1;
    /* end of file when execve closed the CLOEXEC pipe; an errno when it failed. Bounded by the execve */
    int xerr = 0;
    ssize_t r;
    do
        r = read(xe[0], &xerr, sizeof(xerr));
    while (r < 0 && errno == EINTR);
    int pidfd = r == 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
    if (r != 0 || pidfd < 0) {
        if (r == 0)
            snprintf(errstr, errstr_size, "child supervisor: guardian: pidfd_open: %s", strerror(errno));
        else
            snprintf(errstr, errstr_size, "child supervisor: guardian: execve %s: %s", exe,
                     r == (ssize_t)sizeof(xerr) ? strerror(xerr) : "no report");
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0); /* bounded: it exited or was SIGKILLed */
        own_del(pid);
        goto out;
    }
    s->guardian_pid = pid;
    s->guardian_pidfd = pidfd;
    s->guardian_fd = gp[1];
    gp[1] = -1;
    rc = 0;
out:
    for (int i = 0; i < 2; i++) {
        if (gp[i] >= 0)
            close(gp[i]);
        if (xe[i] >= 0)
            close(xe[i]);
    }
    return rc;
}

/* Closes the guardian's pipe (it purges what is left and exits) and reaps
 * it, SIGKILLing it after GUARDIAN_WAIT_MS. After the supervisor thread is
 * gone (or never started). */
static void guardian_stop(em_child_sup_t *s) {
    if (s->guardian_fd >= 0)
        close(s->guardian_fd);
    s->guardian_fd = -1;
    if (s->guardian_pid > 0) { /* 0: it died early, and the orphan pass reaped it */
        pid_t pid = s->guardian_pid;
        int64_t until = em_mono_ms() + GUARDIAN_WAIT_MS;
        struct pollfd pf = {.fd = s->guardian_pidfd, .events = POLLIN};
        int r;
        do
            r = poll(&pf, 1, (int)(until - em_mono_ms() > 0 ? until - em_mono_ms() : 0));
        while (r < 0 && errno == EINTR);
        if (r <= 0) {
            EM_ERROR("child supervisor: the guardian did not exit; killed", EM_F_INT("pid", pid),
                     EM_F_INT("waited_ms", GUARDIAN_WAIT_MS));
            kill(pid, SIGKILL);
        }
        int st = 0;
        if (waitpid(pid, &st, 0) == pid && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
            EM_WARN("child supervisor: the guardian's purge left something", EM_F_STR("cgroup_root", s->root),
                    EM_F_INT("status", st));
        own_del(pid);
        s->guardian_pid = 0;
    }
    if (s->guardian_pidfd >= 0)
        close(s->guardian_pidfd);
    s->guardian_pidfd = -1;
}

int em_child_guardian_main(int argc, char **argv) {
    char *end = NULL;
    long fd = argc == 4 ? strtol(argv[2], &end, 10) : -1;
    if (argc != 4 || strcmp(argv[1], EM_CHILD_GUARDIAN_ARG) != 0 || !end || *end || fd < 0 || fd > 1 << 20) {
        fprintf(stderr, "usage: %s %s FD CGROUP_ROOT (started by a child supervisor, not by hand)\n",
                argc > 0 ? argv[0] : "guardian", EM_CHILD_GUARDIAN_ARG);
        return 2;
    }
    const char *root = argv[3];
    em_log_init("em-child-guardian", root, EM_LOG_INFO);
    prctl(PR_SET_NAME, "em-guardian", 0, 0, 0);
    struct sigaction ign;
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigaction(SIGINT, &ign, NULL);
    sigaction(SIGTERM, &ign, NULL);
    sigaction(SIGHUP, &ign, NULL);
    setsid(); /* done before the execve already (EPERM now); for a guardian started otherwise */
    int cd = chdir("/"); /* hold no directory of the executor's busy; staying put is no harm */
    (void)cd;
    /* nothing is ever written: end of file (or an error) means the supervisor's process is gone or
     * destroyed the supervisor */
    for (;;) {
        char b[64];
        ssize_t r = read((int)fd, b, sizeof(b));
        if (r == 0 || (r < 0 && errno != EINTR))
            break;
    }
    close((int)fd);
    em_cgroup_env_t *env = em_cgroup_env_new();
    if (!env) {
        EM_ERROR("guardian: out of memory; cannot purge", EM_F_STR("cgroup_root", root));
        return 1;
    }
    em_err_t rc = em_cgroup_purge(env, root, PURGE_MS);
    if (rc != EM_OK)
        EM_ERROR("guardian: the purge left groups behind", EM_F_STR("cgroup_root", root),
                 EM_F_STR("error", em_strerror(rc)), EM_F_STR("cgroups", em_cgroup_env_describe(env)));
    em_cgroup_env_free(env);
    return rc == EM_OK ? 0 : 1;
}

/* ---- the supervisor ---- */

/* Makes the process a child subreaper for the first supervisor with options. 0, or an errno. */
static int subreaper_acquire(void) {
    int e = 0;
    pthread_mutex_lock(&own_lock);
    if (subreaper_users == 0) {
        int was = 0;
        if (prctl(PR_GET_CHILD_SUBREAPER, &was, 0, 0, 0) != 0)
            was = 0;
        subreaper_was_set = was;
        if (!was && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
            e = errno;
    }
    if (!e)
        subreaper_users++;
    pthread_mutex_unlock(&own_lock);
    return e;
}

/* The last supervisor with options gone: the process stops being a subreaper, unless it was before. */
static void subreaper_release(void) {
    pthread_mutex_lock(&own_lock);
    if (--subreaper_users == 0 && !subreaper_was_set)
        prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    pthread_mutex_unlock(&own_lock);
}

/* em_child_sup_new (o NULL, no subreaper) and em_child_sup_new_opts. */
static em_child_sup_t *sup_create(const em_child_sup_opts_t *o, char *errstr, size_t errstr_size) {
    em_child_sup_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->guardian_fd = s->guardian_pidfd = -1;
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&s->lock, NULL);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (s->ep < 0 || s->wake_fd < 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, s->wake_fd, &ev) != 0) {
        snprintf(errstr, errstr_size, "child supervisor: epoll/eventfd: %s", strerror(errno));
        goto fail;
    }
    if (o && o->cgroups) {
        if (!o->cgroup_root || !*o->cgroup_root) {
            snprintf(errstr, errstr_size, "child supervisor: cgroups without a cgroup_root");
            goto fail;
        }
        s->root = strdup(o->cgroup_root);
        if (!s->root) {
            snprintf(errstr, errstr_size, "out of memory");
            goto fail;
        }
        /* what an earlier incarnation killed with -9 left behind (its guardian may be purging it too) */
        em_err_t rc = em_cgroup_purge(o->cgroups, s->root, PURGE_MS);
        if (rc == EM_EINVAL) {
            snprintf(errstr, errstr_size, "child supervisor: bad cgroup_root \"%s\" (letters, digits, '.', '_', "
                     "'-', '/')", s->root);
            goto fail;
        }
        if (rc != EM_OK)
            EM_WARN("child supervisor: cannot purge what an earlier run left in cgroup_root; going on",
                    EM_F_STR("cgroup_root", s->root), EM_F_STR("error", em_strerror(rc)));
        s->env = o->cgroups;
    }
    if (o && o->guardian && (!s->env || !o->guardian_exe || !*o->guardian_exe)) {
        snprintf(errstr, errstr_size, "child supervisor: a guardian needs cgroups, a cgroup_root and a guardian_exe");
        goto fail;
    }
    sigchld_not_ignored();
    if (o) {
        int e = subreaper_acquire();
        if (e) {
            snprintf(errstr, errstr_size, "child supervisor: prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(e));
            goto fail;
        }
        s->subreaper = 1;
        s->next_reap_ms = em_mono_ms() + REAP_EVERY_MS;
    }
    if (o && o->guardian && guardian_start(s, o->guardian_exe, errstr, errstr_size) != 0)
        goto fail;
    /* the thread takes no process signal, and the children start from its mask */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s->thread, NULL, sup_thread, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "child supervisor: cannot start its thread: %s", strerror(rc));
        goto fail;
    }
    return s;
fail:
    guardian_stop(s);
    if (s->subreaper)
        subreaper_release();
    if (s->ep >= 0)
        close(s->ep);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    pthread_mutex_destroy(&s->lock);
    free(s->root);
    free(s);
    return NULL;
}

em_child_sup_t *em_child_sup_new(char *errstr, size_t errstr_size) { return sup_create(NULL, errstr, errstr_size); }

em_child_sup_t *em_child_sup_new_opts(const em_child_sup_opts_t *o, char *errstr, size_t errstr_size) {
    static const em_child_sup_opts_t none = {NULL, NULL, 0, NULL};
    return sup_create(o ? o : &none, errstr, errstr_size);
}

static void wake(em_child_sup_t *s) {
    uint64_t one = 1;
    ssize_t w = write(s->wake_fd, &one, sizeof(one));
    (void)w; /* EAGAIN: the counter is full, a wake-up is pending anyway */
}

void em_child_sup_destroy(em_child_sup_t *s) {
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_mutex_unlock(&s->lock);
    wake(s);
    pthread_join(s->thread, NULL);
    if (s->env) { /* the runs' groups are gone; their parents below cgroup_root, and cgroup_root, go now */
        em_err_t rc = em_cgroup_purge(s->env, s->root, PURGE_MS);
        if (rc != EM_OK)
            EM_WARN("child supervisor: cgroup_root is not purged completely", EM_F_STR("cgroup_root", s->root),
                    EM_F_STR("error", em_strerror(rc)));
    }
    guardian_stop(s);
    if (s->subreaper)
        subreaper_release();
    free(s->cancels); /* none: the thread took the last ones with its last queue */
    close(s->ep);
    close(s->wake_fd);
    pthread_mutex_destroy(&s->lock);
    free(s->root);
    free(s);
}

em_err_t em_child_run(em_child_sup_t *s, const em_child_spec_t *spec, em_child_done_fn done, void *arg) {
    child_t *c = calloc(1, sizeof(*c));
    if (!c)
        return EM_ENOMEM;
    c->spec = *spec;
    c->done = done;
    c->arg = arg;
    c->exec_err_fd = -1;
    for (int i = 0; i < FD_N; i++)
        c->fd[i] = -1;
    pthread_mutex_lock(&s->lock);
    if (s->stopped) {
        pthread_mutex_unlock(&s->lock);
        free(c);
        return EM_ESHUTDOWN;
    }
    if (s->queue_tail)
        s->queue_tail->next = c;
    else
        s->queue_head = c;
    s->queue_tail = c;
    pthread_mutex_unlock(&s->lock);
    wake(s);
    return EM_OK;
}

void em_child_cancel(em_child_sup_t *s, uint64_t key) {
    if (!key)
        return;
    pthread_mutex_lock(&s->lock);
    if (s->stopping) { /* destroy abandons every run anyway */
        pthread_mutex_unlock(&s->lock);
        return;
    }
    if (em_grow(&s->cancels, &s->cap_cancels, s->n_cancels + 1, sizeof(*s->cancels)) != 0) {
        pthread_mutex_unlock(&s->lock);
        EM_ERROR("child supervisor: out of memory: a cancel is dropped", EM_F_UINT("cancel_key", key));
        return;
    }
    s->cancels[s->n_cancels++] = key;
    pthread_mutex_unlock(&s->lock);
    wake(s);
}

int em_child_running(em_child_sup_t *s) { return atomic_load(&s->running); }
