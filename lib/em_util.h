/* SPDX-License-Identifier: Apache-2.0 */
/* Small helpers shared by every module: clocks, addresses, files, ids, and
 * making bytes valid UTF-8 for protobuf string fields. */
#ifndef EM_UTIL_H
#define EM_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"

#define EM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* The struct that holds member at ptr. */
#define EM_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Wall clock in ms since the epoch (for timestamps in records). */
/* Makes room for need elements of elem bytes in the array *array_ptr (a
 * T ** passed as void *) of capacity *cap, doubling it (from 8). 0, or -1
 * when out of memory: then the array and *cap are as they were. */
int em_grow(void *array_ptr, size_t *cap, size_t need, size_t elem);

/* FNV-1a, 64 bits, of p[0..n): for hash tables keyed by short strings. */
uint64_t em_fnv1a(const void *p, size_t n);

int64_t em_now_unix_ms(void);
/* Monotonic clock in ms and ns (for every timeout and duration). */
int64_t em_mono_ms(void);
int64_t em_mono_ns(void);
int64_t em_mono_us(void);

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

/* Is host (as em_parse_hostport gives it) a loopback address or
 * "localhost"? A name that merely resolves to loopback is not. */
int em_host_is_loopback(const char *host);

/* Writes data to path through a temporary file and rename(2), so a reader
 * never sees a partial file. */
em_err_t em_write_file_atomic(const char *path, const char *data, size_t len);

/* Fills out with a fresh random id: 32 lowercase hex digits (128 bits from
 * getrandom(2)). out must hold 33 bytes. Thread-safe. */
void em_random_id(char out[33]);
/* Fills buf with len random bytes from getrandom(2) (aborts without an
 * entropy source). Thread-safe. */
void em_random_bytes(void *buf, size_t len);

/* A short default replica name: "<service>-<hostname>-<pid>". */
void em_default_replica(const char *service, char *out, size_t n);

/* Copies src[0..n) into dst as valid UTF-8 (RFC 3629) for a protobuf string
 * field: each ill-formed sequence (a stray or missing continuation byte, an
 * overlong form, a surrogate, a code point beyond U+10FFFF, a byte never
 * used in UTF-8; one '?' per maximal ill-formed subpart, as Unicode
 * recommends) and each NUL byte become '?'. Writes at most cap - 1 bytes
 * and a NUL, stopping before a code point that would not fit whole, so the
 * output is never cut inside one. The replacement is one byte, so the
 * output is never longer than the input: cap = n + 1 always holds all of it.
 * dst and src must not overlap; cap 0 writes nothing. Returns the bytes
 * written, without the NUL. Any thread. */
size_t em_utf8_clean(char *dst, size_t cap, const uint8_t *src, size_t n);

/* Cuts the NUL-terminated s back to the end of its last whole code point:
 * a multi-byte sequence cut short at the end (as snprintf leaves one when
 * the buffer ran out) is removed. Does nothing to a string that ends on a
 * whole code point; does not repair ill-formed bytes elsewhere (that is
 * em_utf8_clean's job). */
void em_utf8_trim(char *s);

#endif
