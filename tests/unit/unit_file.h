/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Files in unit tests: unit_write_file writes text to path (created or
 * truncated), failing the test if it cannot. Include after cmocka.h and
 * stdio.h.
 */
#ifndef UNIT_FILE_H
#define UNIT_FILE_H

static inline void unit_write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

#endif
