/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cgroups for exec children. Discovery reads /proc/self/mountinfo (each
 * cgroup or cgroup2 mount: its mount point, its root inside the hierarchy,
 * its controllers from the super options) and /proc/self/cgroup (this
 * process's path per hierarchy); this process's directory in a hierarchy is
 * the mount point plus its path minus the mount's root. Whether it can make
 * groups there is learnt by making and removing a probe child, the one test
 * that also covers read-only mounts, delegation and security modules.
 *
 * A group is a list of directories, one per hierarchy used, each carrying
 * bits for the controllers it has. In v2 there is one directory, and its
 * "freezer" bit stands for cgroup.kill/cgroup.freeze, so v1 and v2 share the
 * code that walks directories, reads cgroup.procs and writes limits.
 *
 * Killing without cgroup.kill freezes the group first, so that nothing in it
 * can fork or exit while its pids are read and signalled (a pid read from a
 * frozen group cannot be reused before the kill reaches it); a SIGKILLed
 * frozen task dies once thawed. Every wait here polls the cgroup files with
 * a short, growing interval under a deadline: v1 has no notification for a
 * group becoming empty or frozen.
 */
#include "em_cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "em_log.h"
#include "em_util.h"

enum { CTL_MEMORY, CTL_PIDS, CTL_CPU, CTL_FREEZER, CTL_N };
static const char *const ctl_names[CTL_N] = {"memory", "pids", "cpu", "freezer"};
#define CTL_BIT(c) (1u << (c))

#define REASON_MAX 512
#define RELPATH_MAX_DEPTH 32
#define FREEZE_WAIT_MS 500   /* a group that has not frozen by then is killed unfrozen */
#define KILL_ROUND_MS 200    /* after a round of kills, how long to wait for the group to empty */
#define RMDIR_RETRY_MS 1000  /* EBUSY from rmdir right after the last process went */
#define CPU_PERIOD_US 100000 /* 100 ms: the kernel's default CFS period */
#define CPU_MIN_QUOTA_US 1000

typedef struct cg_dir {
    char *path;    /* malloc'd */
    unsigned ctls; /* CTL_BIT()s this directory carries */
} cg_dir_t;

struct em_cgroup_env {
    int version;          /* 1 or 2: where groups are made; 0: nowhere */
    int complete;         /* memory + pids + a whole-group kill */
    cg_dir_t base[CTL_N]; /* this process's own cgroup, per hierarchy used */
    int n_base;
    int can_kill, can_freeze; /* v2: cgroup.kill / cgroup.freeze exist in a child group */
    char *desc;               /* malloc'd */
};

struct em_cgroup {
    int version;
    cg_dir_t dir[CTL_N];
    int n_dir;
    int can_kill, can_freeze;
};

/* ---- small file and string helpers ---- */

/* Formats a reason or an error into buf; a long path may cut it short, which a log line can bear. */
static void __attribute__((format(printf, 3, 4))) say(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

/* a + "/" + b as a new string; b empty or "/" gives a copy of a. NULL when out of memory. */
static char *path_join(const char *a, const char *b) {
    while (*b == '/')
        b++;
    size_t la = strlen(a), lb = strlen(b);
    while (la > 1 && a[la - 1] == '/')
        la--;
    char *p = malloc(la + 1 + lb + 1);
    if (!p)
        return NULL;
    memcpy(p, a, la);
    size_t n = la;
    if (lb) {
        if (n == 0 || p[n - 1] != '/')
            p[n++] = '/';
        memcpy(p + n, b, lb);
        n += lb;
    }
    p[n] = '\0';
    return p;
}

/* Formats dir/name into buf; 0, or -1 (ENAMETOOLONG) when it does not fit. */
static int file_path(char *buf, size_t n, const char *dir, const char *name) {
    int w = snprintf(buf, n, "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= n) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* Writes s to dir/name in one write(2), as cgroup files want. 0 or -1 with errno. */
static int write_at(const char *dir, const char *name, const char *s) {
    char p[4096];
    if (file_path(p, sizeof(p), dir, name) != 0)
        return -1;
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(s);
    ssize_t w;
    do
        w = write(fd, s, len);
    while (w < 0 && errno == EINTR);
    int e = w < 0 ? errno : (size_t)w == len ? 0 : EIO;
    close(fd);
    errno = e;
    return e ? -1 : 0;
}

/* Reads all of dir/name into a malloc'd NUL-terminated *out. 0 or -1 with errno. */
static int read_at(const char *dir, const char *name, char **out) {
    char p[4096];
    *out = NULL;
    if (file_path(p, sizeof(p), dir, name) != 0)
        return -1;
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int e = buf ? 0 : ENOMEM;
    while (!e) {
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                e = ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            e = errno;
        else if (r == 0)
            break;
        else
            len += (size_t)r;
    }
    close(fd);
    if (e) {
        free(buf);
        errno = e;
        return -1;
    }
    buf[len] = '\0';
    *out = buf;
    return 0;
}

/* The value of "key N" in a flat-keyed file (memory.events, pids.events,
 * memory.oom_control, cgroup.events). 0 when found, -1 otherwise. */
static int read_key(const char *dir, const char *name, const char *key, int64_t *v) {
    char *buf;
    if (read_at(dir, name, &buf) != 0)
        return -1;
    int rc = -1;
    size_t kl = strlen(key);
    for (char *line = buf; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
            *v = strtoll(line + kl + 1, NULL, 10);
            rc = 0;
            break;
        }
    }
    free(buf);
    return rc;
}

/* A file holding one number; -1 when absent or not a number ("max"). */
static int64_t read_num(const char *dir, const char *name) {
    char *buf, *end;
    if (read_at(dir, name, &buf) != 0)
        return -1;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    int ok = end != buf && errno == 0;
    free(buf);
    return ok ? (int64_t)v : -1;
}

/* Is tok one of the sep-separated items of list? */
static int has_item(const char *list, const char *tok, char sep) {
    size_t tl = strlen(tok);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, sep);
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == tl && strncmp(p, tok, tl) == 0)
            return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* A wait's poll interval: 1 ms, doubling to 16 ms, never past until. */
static void nap(int64_t *step_ms, int64_t until) {
    int64_t left = until - em_mono_ms();
    int64_t ms = *step_ms < left ? *step_ms : left;
    if (ms > 0) {
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL); /* ok-sleep: the poll interval of a bounded wait */
    }
    if (*step_ms < 16)
        *step_ms *= 2;
}

/* Checks relpath: components of [A-Za-z0-9._-], not "." or "..", no empty
 * ones, at most RELPATH_MAX_DEPTH. 0, or -1 with the reason in err. */
static int relpath_check(const char *relpath, char *err, size_t errn) {
    if (!relpath || !*relpath) {
        say(err, errn, "cgroup: empty relpath (it would name this process's own cgroup)");
        return -1;
    }
    int depth = 0;
    for (const char *p = relpath;;) {
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == 0 || (l == 1 && p[0] == '.') || (l == 2 && p[0] == '.' && p[1] == '.')) {
            say(err, errn, "cgroup: bad relpath \"%s\": empty, \".\" or \"..\" component", relpath);
            return -1;
        }
        for (size_t i = 0; i < l; i++) {
            char c = p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-')) {
                say(err, errn, "cgroup: bad relpath \"%s\": only letters, digits, '.', '_', '-' and '/'",
                         relpath);
                return -1;
            }
        }
        if (++depth > RELPATH_MAX_DEPTH) {
            say(err, errn, "cgroup: bad relpath \"%s\": deeper than %d", relpath, RELPATH_MAX_DEPTH);
            return -1;
        }
        if (!e)
            return 0;
        p = e + 1;
    }
}

/* ---- discovery ---- */

typedef struct mnt {
    char *point, *root, *super; /* malloc'd; mountinfo's octal escapes decoded */
    int v2;
} mnt_t;

typedef struct own {
    char *ctls, *path; /* malloc'd: a /proc/self/cgroup line's controllers and path */
    int id;
} own_t;

/* What discovery learnt about one version, before one is chosen. */
typedef struct found {
    char *dir[CTL_N];            /* v1: per controller; v2: dir[0] is the one directory */
    char why[CTL_N][REASON_MAX]; /* why a controller is missing */
    unsigned ok;                 /* usable controllers */
    int writable;                /* v2: a probe child could be made */
    int kill, freeze;            /* v2 */
    char v2why[REASON_MAX];      /* v2: why there is no writable directory */
} found_t;

/* Decodes mountinfo's \ooo escapes in place. */
static void unescape(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

static void mnts_free(mnt_t *m, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(m[i].point);
        free(m[i].root);
        free(m[i].super);
    }
    free(m);
}

/* The cgroup and cgroup2 mounts of /proc/self/mountinfo. */
static mnt_t *read_mounts(size_t *n) {
    *n = 0;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return NULL;
    mnt_t *m = NULL;
    size_t cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        line[strcspn(line, "\n")] = '\0';
        char *fld[64];
        int nf = 0;
        for (char *save = NULL, *t = strtok_r(line, " ", &save); t && nf < 64; t = strtok_r(NULL, " ", &save))
            fld[nf++] = t;
        int dash = -1;
        for (int i = 6; i < nf; i++)
            if (strcmp(fld[i], "-") == 0) {
                dash = i;
                break;
            }
        if (dash < 0 || dash + 3 >= nf)
            continue;
        const char *fstype = fld[dash + 1];
        int v2 = strcmp(fstype, "cgroup2") == 0;
        if (!v2 && strcmp(fstype, "cgroup") != 0)
            continue;
        if (em_grow(&m, &cap, *n + 1, sizeof(*m)) != 0)
            break;
        mnt_t *x = &m[*n];
        x->point = strdup(fld[4]);
        x->root = strdup(fld[3]);
        x->super = strdup(fld[dash + 3]);
        x->v2 = v2;
        if (!x->point || !x->root || !x->super) {
            free(x->point);
            free(x->root);
            free(x->super);
            break;
        }
        unescape(x->point);
        unescape(x->root);
        (*n)++;
    }
    free(line);
    fclose(f);
    return m;
}

static void owns_free(own_t *o, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(o[i].ctls);
        free(o[i].path);
    }
    free(o);
}

/* The lines of /proc/self/cgroup: "ID:controllers:path". */
static own_t *read_own(size_t *n) {
    *n = 0;
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return NULL;
    own_t *o = NULL;
    size_t cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = *c2 = '\0';
        if (em_grow(&o, &cap, *n + 1, sizeof(*o)) != 0)
            break;
        own_t *x = &o[*n];
        x->id = atoi(line);
        x->ctls = strdup(c1 + 1);
        x->path = strdup(c2 + 1);
        if (!x->ctls || !x->path) {
            free(x->ctls);
            free(x->path);
            break;
        }
        (*n)++;
    }
    free(line);
    fclose(f);
    return o;
}

/* path (this process's cgroup) relative to a mount whose root is root:
 * the rest of path below root, or NULL when path is not under root. */
static const char *under_root(const char *path, const char *root) {
    if (strcmp(root, "/") == 0)
        return path;
    size_t rl = strlen(root);
    if (strncmp(path, root, rl) == 0 && (path[rl] == '\0' || path[rl] == '/'))
        return path + rl;
    return NULL;
}

/* Makes and removes a probe child in dir. 0, or -1 with the reason in why.
 * For v2, *has_kill and *has_freeze say whether the child had cgroup.kill
 * and cgroup.freeze (both may be NULL). */
static int probe(const char *dir, char *why, size_t whyn, int *has_kill, int *has_freeze) {
    static atomic_uint seq;
    char p[4096];
    int w = snprintf(p, sizeof(p), "%s/.em-probe-%d-%u", dir, (int)getpid(), atomic_fetch_add(&seq, 1));
    if (w < 0 || (size_t)w >= sizeof(p)) {
        say(why, whyn, "path too long: %s", dir);
        return -1;
    }
    if (mkdir(p, 0755) != 0) {
        say(why, whyn, "mkdir %s: %s", p, strerror(errno));
        return -1;
    }
    char f[4200];
    if (has_kill)
        *has_kill = file_path(f, sizeof(f), p, "cgroup.kill") == 0 && access(f, F_OK) == 0;
    if (has_freeze)
        *has_freeze = file_path(f, sizeof(f), p, "cgroup.freeze") == 0 && access(f, F_OK) == 0;
    int64_t until = em_mono_ms() + RMDIR_RETRY_MS, step = 1;
    while (rmdir(p) != 0) {
        if (errno != EBUSY || em_mono_ms() >= until) {
            say(why, whyn, "rmdir %s: %s (the probe is left behind)", p, strerror(errno));
            return -1;
        }
        nap(&step, until);
    }
    return 0;
}

/* v1: for each controller, this process's directory and whether it can make
 * groups there. */
static void find_v1(const mnt_t *m, size_t nm, const own_t *o, size_t no, found_t *f) {
    for (int c = 0; c < CTL_N; c++) {
        const own_t *line = NULL;
        for (size_t i = 0; i < no && !line; i++)
            if (o[i].id != 0 && has_item(o[i].ctls, ctl_names[c], ','))
                line = &o[i];
        int mounted = 0;
        const mnt_t *mt = NULL;
        const char *rest = NULL;
        for (size_t i = 0; i < nm && !mt; i++) {
            if (m[i].v2 || !has_item(m[i].super, ctl_names[c], ','))
                continue;
            mounted = 1;
            if (line && (rest = under_root(line->path, m[i].root)) != NULL)
                mt = &m[i];
        }
        if (!mounted) {
            say(f->why[c], REASON_MAX, "not mounted (no cgroup v1 mount in /proc/self/mountinfo has it)");
            continue;
        }
        if (!line) {
            say(f->why[c], REASON_MAX, "mounted, but /proc/self/cgroup has no line for it");
            continue;
        }
        if (!mt) {
            say(f->why[c], REASON_MAX, "this process's cgroup %s is outside what is mounted", line->path);
            continue;
        }
        f->dir[c] = path_join(mt->point, rest);
        if (!f->dir[c]) {
            say(f->why[c], REASON_MAX, "out of memory");
            continue;
        }
        /* co-mounted controllers share a directory: probe it once */
        int c2;
        for (c2 = 0; c2 < c; c2++)
            if (f->dir[c2] && strcmp(f->dir[c2], f->dir[c]) == 0)
                break;
        if (c2 < c) {
            if (f->ok & CTL_BIT(c2))
                f->ok |= CTL_BIT(c);
            else
                memcpy(f->why[c], f->why[c2], REASON_MAX);
        } else if (probe(f->dir[c], f->why[c], REASON_MAX, NULL, NULL) == 0) {
            f->ok |= CTL_BIT(c);
        }
    }
}

/* v2: this process's directory in the unified hierarchy, whether groups can
 * be made there, and which of memory, pids and cpu they can have (enabling
 * those available but not yet enabled for children). */
static void find_v2(const mnt_t *m, size_t nm, const own_t *o, size_t no, found_t *f) {
    const own_t *line = NULL;
    for (size_t i = 0; i < no && !line; i++)
        if (o[i].id == 0 && o[i].ctls[0] == '\0')
            line = &o[i];
    const mnt_t *mt = NULL;
    const char *rest = NULL;
    int mounted = 0;
    for (size_t i = 0; i < nm && !mt; i++) {
        if (!m[i].v2)
            continue;
        mounted = 1;
        if (line && (rest = under_root(line->path, m[i].root)) != NULL)
            mt = &m[i];
    }
    if (!mounted || !line || !mt) {
        say(f->v2why, REASON_MAX, "%s",
                 !mounted ? "no cgroup2 mount"
                 : !line  ? "no \"0::\" line in /proc/self/cgroup"
                          : "this process's cgroup2 path is outside what is mounted");
        return;
    }
    f->dir[0] = path_join(mt->point, rest);
    if (!f->dir[0]) {
        say(f->v2why, REASON_MAX, "out of memory");
        return;
    }
    if (probe(f->dir[0], f->v2why, REASON_MAX, &f->kill, &f->freeze) != 0)
        return;
    f->writable = 1;
    if (f->kill || f->freeze)
        f->ok |= CTL_BIT(CTL_FREEZER);
    else
        say(f->why[CTL_FREEZER], REASON_MAX, "a group made in %s has neither cgroup.kill nor cgroup.freeze",
                 f->dir[0]);
    char *avail = NULL, *enabled = NULL;
    if (read_at(f->dir[0], "cgroup.controllers", &avail) != 0 ||
        read_at(f->dir[0], "cgroup.subtree_control", &enabled) != 0) {
        for (int c = CTL_MEMORY; c <= CTL_CPU; c++)
            say(f->why[c], REASON_MAX, "cannot read %s/cgroup.controllers or cgroup.subtree_control: %s",
                     f->dir[0], strerror(errno));
        goto out;
    }
    avail[strcspn(avail, "\n")] = '\0';
    enabled[strcspn(enabled, "\n")] = '\0';
    for (int c = CTL_MEMORY; c <= CTL_CPU; c++) {
        char plus[32];
        snprintf(plus, sizeof(plus), "+%s", ctl_names[c]);
        if (has_item(enabled, ctl_names[c], ' '))
            f->ok |= CTL_BIT(c);
        else if (!has_item(avail, ctl_names[c], ' '))
            say(f->why[c], REASON_MAX, "not available in %s (its cgroup.controllers: \"%s\")", f->dir[0],
                     avail);
        else if (write_at(f->dir[0], "cgroup.subtree_control", plus) == 0)
            f->ok |= CTL_BIT(c);
        else
            say(f->why[c], REASON_MAX, "cannot enable it in %s/cgroup.subtree_control: %s%s", f->dir[0],
                     strerror(errno),
                     errno == EBUSY ? " (processes live in that cgroup, this one too: v2 enables controllers for "
                                      "children only of a group without processes)"
                                    : "");
    }
out:
    free(avail);
    free(enabled);
}

/* How much of memory, pids and a whole-group kill a version offers. */
static int score(const found_t *f) {
    return !!(f->ok & CTL_BIT(CTL_MEMORY)) + !!(f->ok & CTL_BIT(CTL_PIDS)) + !!(f->ok & CTL_BIT(CTL_FREEZER));
}

/* Appends "; no writable memory controller: WHY" for each missing
 * controller (v2: "; no memory controller: WHY", "; no kill: WHY"), one
 * clause for those missing for the same reason ("no memory, pids, cpu
 * controller: not available in ..."). */
static void describe_missing(FILE *s, int version, const found_t *f, const char *const *names) {
    unsigned done = f->ok;
    for (int c = 0; c < CTL_N; c++) {
        if (done & CTL_BIT(c))
            continue;
        int kill_only = version == 2 && c == CTL_FREEZER;
        fprintf(s, "; no %s%s", version == 1 ? "writable " : "", names[c]);
        done |= CTL_BIT(c);
        for (int c2 = c + 1; c2 < CTL_N && !kill_only; c2++)
            if (!(done & CTL_BIT(c2)) && !(version == 2 && c2 == CTL_FREEZER) && strcmp(f->why[c], f->why[c2]) == 0) {
                fprintf(s, ", %s", names[c2]);
                done |= CTL_BIT(c2);
            }
        fprintf(s, "%s: %s", kill_only ? "" : " controller", f->why[c]);
    }
}

/* Appends the v1 or v2 summary of f to s: what is usable where, then what
 * is missing and why. */
static void describe_found(FILE *s, int version, const found_t *f) {
    static const char *const v2_names[CTL_N] = {"memory", "pids", "cpu", "kill"};
    fprintf(s, "cgroup v%d:", version);
    const char *sep = " ";
    for (int c = 0; c < CTL_N; c++)
        if (f->ok & CTL_BIT(c)) {
            fprintf(s, "%s%s", sep, version == 1 ? ctl_names[c] : v2_names[c]);
            sep = ", ";
        }
    if (!f->ok)
        fprintf(s, " nothing usable");
    if (version == 1) {
        sep = " at ";
        for (int c = 0; c < CTL_N; c++)
            if (f->ok & CTL_BIT(c)) {
                fprintf(s, "%s%s=%s", sep, ctl_names[c], f->dir[c]);
                sep = ", ";
            }
        describe_missing(s, 1, f, ctl_names);
        return;
    }
    if (!f->writable) {
        fprintf(s, "; no writable cgroup2 directory: %s", f->v2why);
        return;
    }
    fprintf(s, " at %s", f->dir[0]);
    if (f->ok & CTL_BIT(CTL_FREEZER))
        fprintf(s, " (%s)", f->kill ? "cgroup.kill" : "cgroup.freeze, no cgroup.kill");
    describe_missing(s, 2, f, v2_names);
}

static void found_cleanup(found_t *f) {
    for (int c = 0; c < CTL_N; c++)
        free(f->dir[c]);
}

em_cgroup_env_t *em_cgroup_env_new(void) {
    em_cgroup_env_t *env = calloc(1, sizeof(*env));
    found_t *f1 = calloc(1, sizeof(*f1)), *f2 = calloc(1, sizeof(*f2));
    size_t nm = 0, no = 0, dlen = 0;
    mnt_t *m = read_mounts(&nm);
    own_t *o = read_own(&no);
    FILE *s = NULL;
    unsigned used = 0;
    if (!env || !f1 || !f2) {
        em_cgroup_env_free(env);
        env = NULL;
        goto out;
    }
    find_v1(m, nm, o, no, f1);
    find_v2(m, nm, o, no, f2);
    /* the more of memory, pids and kill; on a tie, the more controllers (cpu); then v2 */
    int s1 = score(f1) * 8 + __builtin_popcount(f1->ok), s2 = score(f2) * 8 + __builtin_popcount(f2->ok);
    if (s2 > s1 || (s2 == s1 && f2->writable))
        env->version = 2;
    else if (f1->ok)
        env->version = 1;
    if (env->version == 1) {
        /* one base per hierarchy: co-mounted controllers share a directory */
        for (int c = 0; c < CTL_N; c++) {
            if (!(f1->ok & CTL_BIT(c)))
                continue;
            int b;
            for (b = 0; b < env->n_base; b++)
                if (strcmp(env->base[b].path, f1->dir[c]) == 0)
                    break;
            if (b == env->n_base) {
                env->base[b].path = strdup(f1->dir[c]);
                if (!env->base[b].path)
                    break; /* out of memory: then c and the rest are not used (and the env is incomplete) */
                env->n_base++;
            }
            env->base[b].ctls |= CTL_BIT(c);
            used |= CTL_BIT(c);
        }
        env->complete = score(f1) == 3 && used == f1->ok;
    } else if (env->version == 2) {
        env->base[0].path = strdup(f2->dir[0]);
        env->base[0].ctls = f2->ok;
        env->n_base = env->base[0].path ? 1 : 0;
        env->can_kill = f2->kill;
        env->can_freeze = f2->freeze;
        env->complete = score(f2) == 3 && env->n_base == 1;
    }
    s = open_memstream(&env->desc, &dlen);
    if (s) {
        if (env->version)
            describe_found(s, env->version, env->version == 1 ? f1 : f2);
        else
            fprintf(s, "no usable cgroups");
        /* incomplete: what the other version lacks, too */
        if (!env->complete && env->version != 1) {
            fprintf(s, "; not used: ");
            describe_found(s, 1, f1);
        }
        if (!env->complete && env->version != 2) {
            fprintf(s, "; not used: ");
            describe_found(s, 2, f2);
        }
        if (!m || !o)
            fprintf(s, "; cannot read /proc/self/%s", !m ? "mountinfo" : "cgroup");
        fclose(s);
    }
out:
    if (f1)
        found_cleanup(f1);
    if (f2)
        found_cleanup(f2);
    free(f1);
    free(f2);
    mnts_free(m, nm);
    owns_free(o, no);
    return env;
}

void em_cgroup_env_free(em_cgroup_env_t *env) {
    if (!env)
        return;
    for (int i = 0; i < env->n_base; i++)
        free(env->base[i].path);
    free(env->desc);
    free(env);
}

int em_cgroup_env_complete(const em_cgroup_env_t *env) { return env->complete; }

const char *em_cgroup_env_describe(const em_cgroup_env_t *env) {
    return env->desc ? env->desc : "cgroup: out of memory describing the environment";
}

static int ctl_index(const char *controller) {
    for (int c = 0; c < CTL_N; c++)
        if (controller && strcmp(controller, ctl_names[c]) == 0)
            return c;
    return -1;
}

/* The directory among n carrying controller c, or NULL. */
static const char *dir_of(const cg_dir_t *d, int n, int c) {
    if (c < 0)
        return NULL;
    for (int i = 0; i < n; i++)
        if (d[i].ctls & CTL_BIT(c))
            return d[i].path;
    return NULL;
}

const char *em_cgroup_env_dir(const em_cgroup_env_t *env, const char *controller) {
    return dir_of(env->base, env->n_base, ctl_index(controller));
}

const char *em_cgroup_dir(const em_cgroup_t *g, const char *controller) {
    return dir_of(g->dir, g->n_dir, ctl_index(controller));
}

/* ---- groups ---- */

static void group_free(em_cgroup_t *g) {
    if (!g)
        return;
    for (int i = 0; i < g->n_dir; i++)
        free(g->dir[i].path);
    free(g);
}

/* The group at relpath in env's hierarchies (nothing made on disk). */
static em_cgroup_t *group_at(const em_cgroup_env_t *env, const char *relpath) {
    em_cgroup_t *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->version = env->version;
    g->can_kill = env->can_kill;
    g->can_freeze = env->can_freeze;
    for (int i = 0; i < env->n_base; i++) {
        g->dir[i].path = path_join(env->base[i].path, relpath);
        if (!g->dir[i].path) {
            group_free(g);
            return NULL;
        }
        g->dir[i].ctls = env->base[i].ctls;
        g->n_dir++;
    }
    return g;
}

/* Makes base/relpath and its missing parents. *made: the depth (0 = relpath's
 * first component) from which on they were made here, RELPATH_MAX_DEPTH when
 * none was. In v2, each parent gets the controllers ctls enabled for its
 * children. 0, or -1 with the reason in err. */
static int mkdir_tree(const char *base, const char *relpath, int v2, unsigned ctls, int *made, char *err,
                      size_t errn) {
    char p[4096];
    *made = RELPATH_MAX_DEPTH;
    int w = snprintf(p, sizeof(p), "%s/%s", base, relpath);
    if (w < 0 || (size_t)w >= sizeof(p)) {
        say(err, errn, "cgroup: path too long: %s/%s", base, relpath);
        return -1;
    }
    size_t blen = strlen(base);
    int depth = 0;
    for (char *q = p + blen + 1;; depth++) {
        char *slash = strchr(q, '/');
        if (slash)
            *slash = '\0';
        if (mkdir(p, 0755) == 0) {
            if (*made == RELPATH_MAX_DEPTH)
                *made = depth;
        } else if (errno != EEXIST) {
            say(err, errn, "cgroup: mkdir %s: %s", p, strerror(errno));
            return -1;
        }
        if (!slash)
            return 0;
        for (int c = CTL_MEMORY; v2 && c <= CTL_CPU; c++) {
            char plus[32];
            snprintf(plus, sizeof(plus), "+%s", ctl_names[c]);
            if ((ctls & CTL_BIT(c)) && write_at(p, "cgroup.subtree_control", plus) != 0) {
                say(err, errn, "cgroup: enabling %s in %s/cgroup.subtree_control: %s", ctl_names[c], p,
                         strerror(errno));
                return -1;
            }
        }
        *slash = '/';
        q = slash + 1;
    }
}

/* Removes base/relpath and its parents down to depth made (deepest first);
 * undoes mkdir_tree. Failures are ignored: another group may share a parent. */
static void rmdir_tree(const char *base, const char *relpath, int made) {
    char p[4096];
    int w = snprintf(p, sizeof(p), "%s/%s", base, relpath);
    if (w < 0 || (size_t)w >= sizeof(p))
        return;
    int depth = 0;
    for (const char *q = relpath; (q = strchr(q, '/')) != NULL; q++)
        depth++;
    for (; depth >= made; depth--) {
        rmdir(p);
        char *slash = strrchr(p, '/');
        if (!slash)
            break;
        *slash = '\0';
    }
}

/* Writes the limits lim asks for into the directories of g that can take
 * them. 0, or -1 with the reason in err. */
static int set_limits(const em_cgroup_t *g, const em_cgroup_limits_t *lim, char *err, size_t errn) {
    char v[64];
    const char *d, *file = NULL;
    if (lim->memory_bytes > 0 && (d = dir_of(g->dir, g->n_dir, CTL_MEMORY)) != NULL) {
        snprintf(v, sizeof(v), "%lld", (long long)lim->memory_bytes);
        file = g->version == 1 ? "memory.limit_in_bytes" : "memory.max";
        if (write_at(d, file, v) != 0)
            goto fail;
        /* met by the OOM killer, not by swapping; a refusal (no swap accounting) changes nothing */
        (void)write_at(d, g->version == 1 ? "memory.swappiness" : "memory.swap.max", "0");
    }
    if (lim->pids_max > 0 && (d = dir_of(g->dir, g->n_dir, CTL_PIDS)) != NULL) {
        snprintf(v, sizeof(v), "%lld", (long long)lim->pids_max);
        file = "pids.max";
        if (write_at(d, file, v) != 0)
            goto fail;
    }
    if (lim->cpu_millis > 0 && (d = dir_of(g->dir, g->n_dir, CTL_CPU)) != NULL) {
        long long quota = (long long)lim->cpu_millis * (CPU_PERIOD_US / 1000);
        if (quota < CPU_MIN_QUOTA_US)
            quota = CPU_MIN_QUOTA_US;
        if (g->version == 1) {
            snprintf(v, sizeof(v), "%d", CPU_PERIOD_US);
            file = "cpu.cfs_period_us";
            if (write_at(d, file, v) != 0)
                goto fail;
            snprintf(v, sizeof(v), "%lld", quota);
            file = "cpu.cfs_quota_us";
        } else {
            snprintf(v, sizeof(v), "%lld %d", quota, CPU_PERIOD_US);
            file = "cpu.max";
        }
        if (write_at(d, file, v) != 0)
            goto fail;
    }
    return 0;
fail:
    say(err, errn, "cgroup: writing \"%s\" to %s/%s: %s", v, d, file, strerror(errno));
    return -1;
}

em_cgroup_t *em_cgroup_create(em_cgroup_env_t *env, const char *relpath, const em_cgroup_limits_t *lim, char *err,
                              size_t errn) {
    static const em_cgroup_limits_t none = {0, 0, 0};
    int made[CTL_N];
    int n_made = 0;
    em_cgroup_t *g = NULL;
    if (relpath_check(relpath, err, errn) != 0)
        return NULL;
    if (!lim)
        lim = &none;
    if (lim->memory_bytes < 0 || lim->pids_max < 0 || lim->cpu_millis < 0) {
        say(err, errn, "cgroup: negative limit");
        return NULL;
    }
    if (!env->version || !env->n_base) {
        say(err, errn, "cgroup: nowhere to make groups: %s", em_cgroup_env_describe(env));
        return NULL;
    }
    g = group_at(env, relpath);
    if (!g) {
        say(err, errn, "cgroup: out of memory");
        return NULL;
    }
    for (; n_made < env->n_base; n_made++)
        if (mkdir_tree(env->base[n_made].path, relpath, env->version == 2, env->base[n_made].ctls, &made[n_made],
                       err, errn) != 0) {
            n_made++; /* it may have made some parents */
            goto fail;
        }
    if (set_limits(g, lim, err, errn) != 0)
        goto fail;
    return g;
fail:
    for (int i = n_made - 1; i >= 0; i--)
        rmdir_tree(env->base[i].path, relpath, made[i]);
    group_free(g);
    return NULL;
}

int em_cgroup_open_join_fds(em_cgroup_t *g, int *fds, int max) {
    if (g->n_dir > max) {
        errno = EINVAL;
        return -1;
    }
    char p[4096];
    for (int i = 0; i < g->n_dir; i++) {
        fds[i] = -1;
        if (file_path(p, sizeof(p), g->dir[i].path, "cgroup.procs") == 0)
            fds[i] = open(p, O_WRONLY | O_CLOEXEC);
        if (fds[i] < 0 && g->version == 1 && file_path(p, sizeof(p), g->dir[i].path, "tasks") == 0)
            fds[i] = open(p, O_WRONLY | O_CLOEXEC); /* kernels whose cgroup.procs is read-only */
        if (fds[i] < 0) {
            int e = errno;
            while (i-- > 0)
                close(fds[i]);
            errno = e;
            return -1;
        }
    }
    return g->n_dir;
}

/* In a forked child: write(2) only. */
int em_cgroup_join_fds(const int *fds, int n) {
    for (int i = 0; i < n; i++) {
        ssize_t w;
        do
            w = write(fds[i], "0", 1);
        while (w < 0 && errno == EINTR);
        if (w != 1) {
            if (w >= 0)
                errno = EIO;
            return -1;
        }
    }
    return 0;
}

/* The pids in dir/cgroup.procs into *pids (malloc'd), their count in *n.
 * A directory that is gone holds none. 0, or -1 with errno. */
static int procs_of(const char *dir, pid_t **pids, size_t *n) {
    char *buf;
    *pids = NULL;
    *n = 0;
    if (read_at(dir, "cgroup.procs", &buf) != 0)
        return errno == ENOENT ? 0 : -1;
    size_t cap = 0;
    for (char *p = buf, *end; *p; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p) {
            end = p + 1;
            continue;
        }
        if (em_grow(pids, &cap, *n + 1, sizeof(**pids)) != 0) {
            free(*pids);
            *pids = NULL;
            free(buf);
            errno = ENOMEM;
            return -1;
        }
        (*pids)[(*n)++] = (pid_t)v;
    }
    free(buf);
    return 0;
}

/* 1 when no directory of g lists a process (an unreadable one counts as not empty). */
static int group_empty(const em_cgroup_t *g) {
    for (int i = 0; i < g->n_dir; i++) {
        pid_t *pids;
        size_t n;
        int rc = procs_of(g->dir[i].path, &pids, &n);
        free(pids);
        if (rc != 0 || n > 0)
            return 0;
    }
    return 1;
}

/* Waits, at most until, for g to be empty. 1 when it is. */
static int wait_empty(const em_cgroup_t *g, int64_t until) {
    int64_t step = 1;
    for (;;) {
        if (group_empty(g))
            return 1;
        if (em_mono_ms() >= until)
            return 0;
        nap(&step, until);
    }
}

/* Freezes (on) or thaws g; freezing waits, at most until, for the kernel
 * to report the whole group frozen. 1 when frozen (on) or thawed. */
static int freeze(const em_cgroup_t *g, int on, int64_t until) {
    const char *d = dir_of(g->dir, g->n_dir, CTL_FREEZER);
    int v1 = g->version == 1;
    if (!d || (!v1 && !g->can_freeze))
        return 0;
    if (write_at(d, v1 ? "freezer.state" : "cgroup.freeze", on ? (v1 ? "FROZEN" : "1") : (v1 ? "THAWED" : "0")) !=
        0)
        return 0;
    if (!on)
        return 1;
    int64_t step = 1;
    for (;;) {
        int frozen = 0;
        if (v1) {
            char *st;
            if (read_at(d, "freezer.state", &st) == 0) {
                frozen = strncmp(st, "FROZEN", 6) == 0;
                free(st);
            }
        } else {
            int64_t v = 0;
            frozen = read_key(d, "cgroup.events", "frozen", &v) == 0 && v == 1;
        }
        if (frozen)
            return 1;
        if (em_mono_ms() >= until)
            return 0;
        nap(&step, until);
    }
}

/* One round without cgroup.kill: freeze, SIGKILL every listed pid, thaw. */
static void kill_round(const em_cgroup_t *g, int64_t until) {
    int64_t now = em_mono_ms();
    /* not frozen in time (a task stuck in D state): kill all the same */
    (void)freeze(g, 1, now + FREEZE_WAIT_MS < until ? now + FREEZE_WAIT_MS : until);
    pid_t self = getpid();
    for (int i = 0; i < g->n_dir; i++) {
        pid_t *pids;
        size_t n;
        if (procs_of(g->dir[i].path, &pids, &n) != 0)
            continue;
        for (size_t k = 0; k < n; k++)
            if (pids[k] > 0 && pids[k] != self)
                kill(pids[k], SIGKILL); /* ESRCH: gone since the read (possible only unfrozen) */
        free(pids);
    }
    (void)freeze(g, 0, until);
}

/* Kills every process of g until it is empty, at most until. */
static em_err_t kill_until(const em_cgroup_t *g, int64_t until) {
    for (;;) {
        if (group_empty(g))
            return EM_OK;
        int64_t now = em_mono_ms();
        if (now >= until)
            return EM_ETIMEDOUT;
        const char *d = dir_of(g->dir, g->n_dir, CTL_FREEZER);
        if (!(g->version == 2 && g->can_kill && d && write_at(d, "cgroup.kill", "1") == 0))
            kill_round(g, until);
        /* a new round when something survived (forked before the freeze took, or joined since) */
        if (wait_empty(g, now + KILL_ROUND_MS < until ? now + KILL_ROUND_MS : until))
            return EM_OK;
    }
}

em_err_t em_cgroup_kill(em_cgroup_t *g, int64_t timeout_ms) {
    return kill_until(g, em_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0));
}

int em_cgroup_oom_killed(em_cgroup_t *g) {
    const char *d = dir_of(g->dir, g->n_dir, CTL_MEMORY);
    int64_t v = 0;
    if (!d)
        return 0;
    if (g->version == 2)
        return read_key(d, "memory.events", "oom_kill", &v) == 0 && v > 0;
    if (read_key(d, "memory.oom_control", "oom_kill", &v) == 0)
        return v > 0;
    return read_num(d, "memory.failcnt") > 0; /* kernels before 4.13 count no OOM kills */
}

int em_cgroup_pids_limit_hit(em_cgroup_t *g) {
    const char *d = dir_of(g->dir, g->n_dir, CTL_PIDS);
    int64_t v = 0;
    return d && read_key(d, "pids.events", "max", &v) == 0 && v > 0;
}

int64_t em_cgroup_memory_peak(em_cgroup_t *g) {
    const char *d = dir_of(g->dir, g->n_dir, CTL_MEMORY);
    if (!d)
        return -1;
    return read_num(d, g->version == 1 ? "memory.max_usage_in_bytes" : "memory.peak");
}

/* Removes the directory path, retrying EBUSY until until. 0, or -1 with errno;
 * a directory already gone counts as removed. */
static int rmdir_retry(const char *path, int64_t until) {
    int64_t step = 1;
    for (;;) {
        if (rmdir(path) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY || em_mono_ms() >= until)
            return -1;
        nap(&step, until);
    }
}

/* Removes g's directories; logs each that stays. */
static em_err_t remove_dirs(const em_cgroup_t *g, int64_t until) {
    em_err_t rc = EM_OK;
    for (int i = 0; i < g->n_dir; i++)
        if (rmdir_retry(g->dir[i].path, until) != 0) {
            EM_WARN("cgroup: cannot remove a group's directory", EM_F_STR("path", g->dir[i].path),
                    EM_F_STR("error", strerror(errno)));
            rc = EM_EIO;
        }
    return rc;
}

em_err_t em_cgroup_destroy(em_cgroup_t *g) {
    if (!g)
        return EM_OK;
    em_err_t rc = remove_dirs(g, em_mono_ms() + RMDIR_RETRY_MS);
    group_free(g);
    return rc;
}

/* ---- purge ---- */

typedef struct strvec {
    char **v;
    size_t n, cap;
} strvec_t;

static int strvec_add(strvec_t *s, char *str) {
    if (!str)
        return -1;
    if (em_grow(&s->v, &s->cap, s->n + 1, sizeof(*s->v)) != 0) {
        free(str);
        return -1;
    }
    s->v[s->n++] = str;
    return 0;
}

/* Adds rel and every directory below base/rel (as paths relative to base) to out. */
static int walk(const char *base, const char *rel, strvec_t *out, int depth) {
    char *full = path_join(base, rel);
    if (!full)
        return -1;
    DIR *d = opendir(full);
    if (!d) {
        free(full);
        return errno == ENOENT || errno == ENOTDIR ? 0 : -1;
    }
    int rc = strvec_add(out, strdup(rel));
    struct dirent *e;
    while (rc == 0 && depth < 4 * RELPATH_MAX_DEPTH && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        int isdir = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN) {
            struct stat st;
            isdir = fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        }
        if (!isdir)
            continue;
        char *sub = path_join(rel, e->d_name);
        rc = sub ? walk(base, sub, out, depth + 1) : -1;
        free(sub);
    }
    closedir(d);
    free(full);
    return rc;
}

static int depth_of(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += *s == '/';
    return n;
}

/* Deepest first; equal paths next to each other. */
static int deepest_first(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int dx = depth_of(x), dy = depth_of(y);
    return dx != dy ? dy - dx : strcmp(x, y);
}

em_err_t em_cgroup_purge(em_cgroup_env_t *env, const char *relpath, int64_t timeout_ms) {
    char err[256];
    if (relpath_check(relpath, err, sizeof(err)) != 0)
        return EM_EINVAL;
    int64_t until = em_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    strvec_t rels = {NULL, 0, 0};
    em_err_t rc = EM_OK;
    for (int i = 0; i < env->n_base; i++)
        if (walk(env->base[i].path, relpath, &rels, 0) != 0) {
            EM_WARN("cgroup: purge cannot list a group's directories", EM_F_STR("base", env->base[i].path),
                    EM_F_STR("relpath", relpath), EM_F_STR("error", strerror(errno)));
            rc = EM_EIO;
        }
    if (rels.n)
        qsort(rels.v, rels.n, sizeof(*rels.v), deepest_first);
    for (size_t i = 0; i < rels.n; i++) {
        if (i > 0 && strcmp(rels.v[i], rels.v[i - 1]) == 0)
            continue; /* the same group seen in another hierarchy */
        em_cgroup_t *g = group_at(env, rels.v[i]);
        if (!g) {
            rc = EM_ENOMEM;
            break;
        }
        em_err_t k = kill_until(g, until);
        if (k != EM_OK) {
            EM_WARN("cgroup: purge cannot empty a group in time", EM_F_STR("relpath", rels.v[i]));
            rc = k;
        } else {
            em_err_t r = remove_dirs(g, until); /* tried once at least, also past until */
            if (r != EM_OK && rc == EM_OK)
                rc = r;
        }
        group_free(g);
    }
    for (size_t i = 0; i < rels.n; i++)
        free(rels.v[i]);
    free(rels.v);
    return rc;
}
