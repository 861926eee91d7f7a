/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An optional per-replica journal of what happened to each execution (one
 * line per event, written with a single O_APPEND write so it survives
 * kill -9 up to the last finished line). The chaos harness reads it to tell
 * which executions a killed or frozen replica was holding. Off by default;
 * costs one write(2) per event when on, so it is for tests, not speed.
 */
#ifndef EM_JOURNAL_H
#define EM_JOURNAL_H

#include "em_error.h"

typedef struct em_journal em_journal_t;

/* Opens (appends to) path; an empty path gives NULL, which every call
 * accepts as "journal off". *err is set on failure. */
em_journal_t *em_journal_open(const char *path, em_err_t *err);
void em_journal_close(em_journal_t *j);

/* Writes "<unix_ms> <text>\n" where text is printf-formatted. Any thread. */
void em_journal_write(em_journal_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
