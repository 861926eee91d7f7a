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
 */
#include "em_child.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
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
    int exec_err_fd; /* read end of the CLOEXEC pipe the child writes execve's errno to */
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
};

static void child_free(child_t *c) {
    for (int i = 0; i < FD_N; i++)
        if (c->fd[i] >= 0)
            close(c->fd[i]);
    if (c->exec_err_fd >= 0)
        close(c->exec_err_fd);
    free(c->out);
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

/* In the child, between fork and execve: async-signal-safe calls only. */
static void __attribute__((noreturn)) child_exec(const em_child_spec_t *sp, const int in[2], const int out[2],
                                                  const int err[2], int exec_err_w, const struct rlimit *rl,
                                                  const int *rl_res, int nrl) {
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
    if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
        goto fail;
    for (int i = 0; i < nrl; i++)
        if (setrlimit(rl_res[i], &rl[i]) != 0)
            goto fail;
    /* only 0/1/2 and the CLOEXEC error pipe survive; execve closes the latter */
    if (exec_err_w > 3)
        syscall(SYS_close_range, 3U, (unsigned)exec_err_w - 1, 0U);
    syscall(SYS_close_range, (unsigned)exec_err_w + 1, ~0U, 0U);
    execve(sp->argv[0], (char *const *)(uintptr_t)sp->argv,
           (char *const *)(uintptr_t)(sp->envp ? sp->envp : (const char *const[]){NULL}));
fail:;
    int e = errno;
    ssize_t w = write(exec_err_w, &e, sizeof(e));
    (void)w;
    _exit(127);
}

/* Forks and execs c; on failure finishes it as SPAWN_FAILED. Supervisor thread. */
static void child_spawn(em_child_sup_t *s, child_t *c) {
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, xe[2] = {-1, -1};
    const char *step = "pipe";
    int e = 0;
    struct rlimit rl[4];
    int rl_res[4], nrl = 0;
    const em_child_limits_t *L = &c->spec.limits;
    if (L->cpu_seconds > 0) {
        rl[nrl] = (struct rlimit){(rlim_t)L->cpu_seconds, (rlim_t)L->cpu_seconds + 1};
        rl_res[nrl++] = RLIMIT_CPU; /* the soft limit sends SIGXCPU, the hard one SIGKILL */
    }
    if (L->memory_mb > 0) {
        rlim_t b = (rlim_t)L->memory_mb * 1024 * 1024;
        rl[nrl] = (struct rlimit){b, b};
        rl_res[nrl++] = RLIMIT_AS;
    }
    if (L->open_files > 0) {
        rl[nrl] = (struct rlimit){(rlim_t)L->open_files, (rlim_t)L->open_files};
        rl_res[nrl++] = RLIMIT_NOFILE;
    }
    if (L->processes > 0) {
        rl[nrl] = (struct rlimit){(rlim_t)L->processes, (rlim_t)L->processes};
        rl_res[nrl++] = RLIMIT_NPROC;
    }
    if (pipe_high(in) || pipe_high(out) || pipe_high(err) || pipe_high(xe)) {
        e = errno;
        goto fail;
    }
    step = "fork";
    c->start_ms = em_mono_ms();
    pid_t pid = fork();
    if (pid < 0) {
        e = errno;
        goto fail;
    }
    if (pid == 0)
        child_exec(&c->spec, in, out, err, xe[1], rl, rl_res, nrl);
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
        waitpid(pid, &c->wstatus, 0); /* bounded: it was just SIGKILLed */
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
            waitpid(pid, &c->wstatus, 0);
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
    child_finish(s, c, EM_CHILD_SPAWN_FAILED, e, step);
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

/* The leader exited: kill the rest of its group, reap it, take what the
 * pipes hold, and mark it finished. */
static void on_exit_of(em_child_sup_t *s, child_t *c) {
    group_kill(c, SIGKILL); /* before the reap, while the group id is still ours */
    pid_t r = waitpid(c->pid, &c->wstatus, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR))
        return; /* not yet (a spurious wake-up): the pidfd stays readable */
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
        int xerr = 0;
        if (c->exec_err_fd >= 0 && read(c->exec_err_fd, &xerr, sizeof(xerr)) == (ssize_t)sizeof(xerr))
            child_finish(s, c, EM_CHILD_SPAWN_FAILED, xerr, "execve");
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

/* Sends the timeout's and the cancels' signals that are due; returns the
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
            c->kill_at_ms = 0;
        }
        if (waits_timeout && (next < 0 || c->deadline_ms < next))
            next = c->deadline_ms;
        if (c->kill_at_ms && (next < 0 || c->kill_at_ms < next))
            next = c->kill_at_ms;
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
            for (child_t *c = s->active; c; c = c->next) {
                if (!c->finished)
                    waitpid(c->pid, &c->wstatus, 0); /* bounded: SIGKILLed */
                c->abandoned = c->finished = 1;
            }
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

em_child_sup_t *em_child_sup_new(char *errstr, size_t errstr_size) {
    em_child_sup_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&s->lock, NULL);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (s->ep < 0 || s->wake_fd < 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, s->wake_fd, &ev) != 0) {
        snprintf(errstr, errstr_size, "child supervisor: epoll/eventfd: %s", strerror(errno));
        goto fail;
    }
    sigchld_not_ignored();
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
    if (s->ep >= 0)
        close(s->ep);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    pthread_mutex_destroy(&s->lock);
    free(s);
    return NULL;
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
    free(s->cancels); /* none: the thread took the last ones with its last queue */
    close(s->ep);
    close(s->wake_fd);
    pthread_mutex_destroy(&s->lock);
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
    if (s->n_cancels == s->cap_cancels) {
        size_t cap = s->cap_cancels ? s->cap_cancels * 2 : 8;
        uint64_t *p = realloc(s->cancels, cap * sizeof(*p));
        if (!p) {
            pthread_mutex_unlock(&s->lock);
            EM_ERROR("child supervisor: out of memory: a cancel is dropped", EM_F_UINT("cancel_key", key));
            return;
        }
        s->cancels = p;
        s->cap_cancels = cap;
    }
    s->cancels[s->n_cancels++] = key;
    pthread_mutex_unlock(&s->lock);
    wake(s);
}

int em_child_running(em_child_sup_t *s) { return atomic_load(&s->running); }
