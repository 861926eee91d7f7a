/* SPDX-License-Identifier: Apache-2.0 */
/*
 * W3C trace context for executions: an execution carries a `traceparent`
 * header ("00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"). Submit
 * creates one when the caller sent none; it travels in the execution through
 * every hop into the result's headers. A record written straight to the
 * requests topic without one keeps its bytes: its trace id is derived from
 * its id (em_trace_id_of: the same on every replica and attempt, and in
 * execmeshctl trace). Log lines about an execution carry its trace id.
 */
#ifndef EM_TRACE_H
#define EM_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define EM_TRACEPARENT "traceparent"
#define EM_TRACEPARENT_LEN 55 /* version 00 */

/* Is p[0..n) a valid traceparent (version 00, or a later version's first
 * 55 characters; lowercase hex; trace and parent ids not all zero)? Its
 * trace id is then p[3..35). */
int em_traceparent_trace_id(const uint8_t *p, size_t n);

/* A new traceparent in out (NUL-terminated): random ids, sampled. */
void em_traceparent_random(char out[EM_TRACEPARENT_LEN + 1]);
/* The traceparent of an execution that had none: derived from its id. */
void em_traceparent_derive(const uint8_t *id, size_t n, char out[EM_TRACEPARENT_LEN + 1]);

/* The trace id (32 hex digits and a NUL) of an execution: its
 * traceparent's when tp is a valid one (tp_len bytes), else the one derived
 * from its id. Returns out. */
char *em_trace_id_of(const uint8_t *tp, size_t tp_len, const uint8_t *id, size_t id_len, char out[33]);

/* Is a map<string,string> entry's encoding (key = 1, value = 2) the entry
 * of key? Then *value and *vn are its value. */
int em_header_is(const uint8_t *entry, size_t n, const char *key, const uint8_t **value, size_t *vn);

#endif
