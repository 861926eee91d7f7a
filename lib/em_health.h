/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The health state machine behind grpc.health.v1. A service is SERVING only
 * when nothing blocks it; each reason it cannot do its job is a named blocker
 * ("starting", "kafka", "draining", "admin"), set and cleared by whoever
 * owns that condition. "draining" is a latch: once set it never clears, so a
 * dependency coming back cannot undo a drain.
 *
 * Every registered service name ("" and the full service names) follows the
 * same blockers. Watchers are told every change of a name's status; the
 * callback runs on the thread that made the change, with the module's lock
 * held: it must not call back into em_health.
 */
#ifndef EM_HEALTH_H
#define EM_HEALTH_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"

typedef enum em_health_status {
    EM_HEALTH_UNKNOWN = 0,
    EM_HEALTH_SERVING = 1,
    EM_HEALTH_NOT_SERVING = 2,
    EM_HEALTH_SERVICE_UNKNOWN = 3
} em_health_status_t;

typedef struct em_health em_health_t;
typedef struct em_health_watch em_health_watch_t;
typedef void (*em_health_watch_fn)(void *arg, em_health_status_t status);

#define EM_HEALTH_STARTING "starting"
#define EM_HEALTH_DRAINING "draining"

/* A new state with the blocker "starting" set. */
em_health_t *em_health_new(void);
void em_health_destroy(em_health_t *h);

/* Adds a service name (copied). Names not added are SERVICE_UNKNOWN. */
em_err_t em_health_add_service(em_health_t *h, const char *name);

/* Sets or clears a blocker (reason is copied). Clearing "draining" is
 * ignored. Watchers hear about the resulting change, if any. */
void em_health_block(em_health_t *h, const char *reason, int blocked);

/* The status of a service name; EM_ENOTFOUND when the name is unknown. */
em_err_t em_health_get(em_health_t *h, const char *name, em_health_status_t *status);
/* SERVING or NOT_SERVING, for the whole server. */
em_health_status_t em_health_overall(em_health_t *h);
/* The blockers as "a,b" in buf (empty when SERVING). */
void em_health_blockers(em_health_t *h, char *buf, size_t n);

/* Calls fn(arg, status) now and on every later change of name's status.
 * Returns NULL when out of memory. */
em_health_watch_t *em_health_watch(em_health_t *h, const char *name, em_health_watch_fn fn, void *arg);
/* After this returns, fn is never called again for w. */
void em_health_unwatch(em_health_t *h, em_health_watch_t *w);

const char *em_health_status_name(em_health_status_t s);

/* The service name a grpc.health.v1.HealthCheckRequest (the request of
 * Check and of Watch) asks about, malloc'd into *service (the caller frees
 * it): EM_OK; EM_EINVAL when req is not one, EM_ENOMEM; nothing allocated
 * then. req is borrowed. A pure function of the bytes (fuzzed:
 * tests/fuzz/fuzz_health.c). */
em_err_t em_health_request_decode(const uint8_t *req, size_t len, char **service);

#endif
