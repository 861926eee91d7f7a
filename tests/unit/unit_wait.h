/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Waiting in unit tests: on a condition, with a bound, never by sleeping.
 * UNIT_WAIT_UNTIL runs step (which itself waits a little, e.g. a poll
 * with a 50 ms timeout) until cond holds, at most timeout_ms; then fails
 * the test naming what it waited for. Include after cmocka.h and em_util.h.
 */
#ifndef UNIT_WAIT_H
#define UNIT_WAIT_H

#define UNIT_WAIT_UNTIL(step, cond, timeout_ms, what)                                              \
    do {                                                                                           \
        int64_t until_ = em_mono_ms() + (timeout_ms);                                              \
        while (!(cond) && em_mono_ms() < until_)                                                   \
            step;                                                                                  \
        if (!(cond))                                                                               \
            fail_msg("timed out after %d ms waiting for %s", (int)(timeout_ms), (what));           \
    } while (0)

#endif
