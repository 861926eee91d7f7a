/* SPDX-License-Identifier: Apache-2.0 */
/* Small helpers shared by every module: clocks, addresses, files, ids. */
#ifndef EM_UTIL_H
#define EM_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"

#define EM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* The struct that holds member at ptr. */
#define EM_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Wall clock in ms since the epoch (for timestamps in records). */
int64_t em_now_unix_ms(void);
/* Monotonic clock in ms and ns (for every timeout and duration). */
int64_t em_mono_ms(void);
int64_t em_mono_ns(void);

/* Condition variables on the monotonic clock, so a wall-clock jump never
 * stretches or cuts a bounded wait. em_cond_init makes one; em_cond_wait_ms
 * waits on it (mutex held) at most ms milliseconds; returns 0 when woken,
 * ETIMEDOUT when the time ran out. */
#include <pthread.h>
void em_cond_init(pthread_cond_t *cond);
int em_cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *mutex, int64_t ms);

/* Splits "host:port" (IPv4 or a name; "[v6]:port" too) into host and port.
 * EM_EINVAL with a reason in errstr when malformed. */
em_err_t em_parse_hostport(const char *s, char *host, size_t host_size, int *port, char *errstr,
                           size_t errstr_size);

/* Writes data to path through a temporary file and rename(2), so a reader
 * never sees a partial file. */
em_err_t em_write_file_atomic(const char *path, const char *data, size_t len);

/* Fills out with a fresh random id: 32 lowercase hex digits (128 bits from
 * getrandom(2)). out must hold 33 bytes. Thread-safe. */
void em_random_id(char out[33]);

/* A short default replica name: "<service>-<hostname>-<pid>". */
void em_default_replica(const char *service, char *out, size_t n);

#endif
