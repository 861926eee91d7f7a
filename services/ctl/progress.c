/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The progress line of long work (submit --file, --wait, dead replay): how
 * much is done of how much, the rate and the time left. On a terminal it is
 * one line on stderr rewritten in place with "\r" (stdout stays for the
 * command's answer, so `execmeshctl submit --file f > ids` still shows it);
 * when stderr is a file or a pipe it is a plain line every 2 s, so a log
 * gets a readable history and no carriage returns.
 */
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "ctl.h"
#include "em_util.h"

#define PROGRESS_TTY_EVERY_MS 200
#define PROGRESS_PLAIN_EVERY_MS 2000

void ctl_progress_init(ctl_progress_t *p, const char *what, int64_t total, int enabled) {
    p->what = what;
    p->total = total;
    p->done = 0;
    p->t0_ms = em_mono_ms();
    p->drawn_ms = p->t0_ms;
    p->tty = isatty(STDERR_FILENO);
    p->shown = 0;
    p->enabled = enabled;
}

static void fmt_duration(char *buf, size_t n, double s) {
    long long t = (long long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%lldh%02lldm%02llds", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60)
        snprintf(buf, n, "%lldm%02llds", t / 60, t % 60);
    else
        snprintf(buf, n, "%llds", t);
}

static void draw(ctl_progress_t *p, int end) {
    int64_t now = em_mono_ms();
    double el = (double)(now - p->t0_ms) / 1000.0;
    double rate = el > 0 ? (double)p->done / el : 0;
    char line[256], eta[32] = "";
    int k;
    if (p->total >= 0) {
        double pct = p->total ? 100.0 * (double)p->done / (double)p->total : 100.0;
        k = snprintf(line, sizeof(line), "%s %" PRId64 "/%" PRId64 " (%.0f%%) %.1f/s", p->what, p->done, p->total,
                     pct, rate);
        if (end) {
            fmt_duration(eta, sizeof(eta), el);
            snprintf(line + k, sizeof(line) - (size_t)k, " in %s", eta);
        } else {
            if (rate > 0)
                fmt_duration(eta, sizeof(eta), (double)(p->total - p->done) / rate);
            snprintf(line + k, sizeof(line) - (size_t)k, " ETA %s", rate > 0 ? eta : "?");
        }
    } else {
        k = snprintf(line, sizeof(line), "%s %" PRId64 " %.1f/s", p->what, p->done, rate);
        if (end) {
            fmt_duration(eta, sizeof(eta), el);
            snprintf(line + k, sizeof(line) - (size_t)k, " in %s", eta);
        }
    }
    if (p->tty)
        fprintf(stderr, "\r%s\033[K%s", line, end ? "\n" : "");
    else
        fprintf(stderr, "%s\n", line);
    fflush(stderr);
    p->drawn_ms = now;
    p->shown = !end;
}

void ctl_progress_set(ctl_progress_t *p, int64_t done) {
    p->done = done;
    if (!p->enabled)
        return;
    int64_t every = p->tty ? PROGRESS_TTY_EVERY_MS : PROGRESS_PLAIN_EVERY_MS;
    if (em_mono_ms() - p->drawn_ms >= every)
        draw(p, 0);
}

void ctl_progress_clear(ctl_progress_t *p) {
    if (p->enabled && p->tty && p->shown) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        p->shown = 0;
    }
}

void ctl_progress_end(ctl_progress_t *p) {
    if (p->enabled)
        draw(p, 1);
}
