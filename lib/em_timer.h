/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One thread that runs callbacks at monotonic deadlines: the sleep builtin,
 * retry backoffs. gRPC's C core has no public alarm, so timers live here.
 * Callbacks run on the timer thread and must not block.
 */
#ifndef EM_TIMER_H
#define EM_TIMER_H

#include <stdint.h>

#include "em_error.h"

typedef struct em_timers em_timers_t;
typedef void (*em_timer_fn)(void *arg);

em_timers_t *em_timers_new(void);
/* Stops the thread, then runs every timer not yet due at once, on the
 * calling thread, so their owners can release what they hold (a callback
 * that cares tells the early run apart through its own state). */
void em_timers_destroy(em_timers_t *t);

/* Runs fn(arg) once, delay_ms from now. On failure fn never runs. */
em_err_t em_timer_after(em_timers_t *t, int64_t delay_ms, em_timer_fn fn, void *arg);

/* Timers waiting. */
int em_timers_pending(em_timers_t *t);

#endif
