/* SPDX-License-Identifier: Apache-2.0 */
/* The execution journal: one write(2) per line, O_APPEND. */
#include "em_journal.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "em_util.h"

struct em_journal {
    int fd;
};

em_journal_t *em_journal_open(const char *path, em_err_t *err) {
    *err = EM_OK;
    if (!path || !*path)
        return NULL;
    em_journal_t *j = calloc(1, sizeof(*j));
    if (!j) {
        *err = EM_ENOMEM;
        return NULL;
    }
    j->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (j->fd < 0) {
        free(j);
        *err = EM_EIO;
        return NULL;
    }
    return j;
}

void em_journal_close(em_journal_t *j) {
    if (!j)
        return;
    close(j->fd);
    free(j);
}

void em_journal_write(em_journal_t *j, const char *fmt, ...) {
    char line[1024];
    if (!j)
        return;
    int n = snprintf(line, sizeof(line), "%lld ", (long long)em_now_unix_ms());
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + ((size_t)m < sizeof(line) - (size_t)n - 1 ? (size_t)m : sizeof(line) - (size_t)n - 2);
    line[len++] = '\n';
    ssize_t w = write(j->fd, line, len);
    (void)w; /* a journal line is never worth failing an execution for */
}
