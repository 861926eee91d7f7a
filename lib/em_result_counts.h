/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Counters of results by handler and status (and, optionally, whether the
 * result was final): execmesh_executor_results_total{handler,status} and
 * execmesh_sink_results_total{handler,status,final}. Handler names come
 * from the executions, so the label's values are bounded: the first
 * max_handlers names get a label value of their own, the rest count as
 * handler="_other"; a result that names none counts as handler="_unknown". A
 * name's counters are registered when it is first seen.
 */
#ifndef EM_RESULT_COUNTS_H
#define EM_RESULT_COUNTS_H

#include <stddef.h>
#include <stdint.h>

#include "em_metrics.h"

typedef struct em_result_counts em_result_counts_t;

/* The label value of an execmesh.v1.Status ("succeeded", "timed_out", ...;
 * "unspecified" for 0 and unknown values). */
const char *em_status_label(int status);

/* NULL when out of memory. with_final adds the label final="true"|"false". */
em_result_counts_t *em_result_counts_new(em_metrics_t *m, const char *name, const char *help, int with_final,
                                         int max_handlers);
void em_result_counts_destroy(em_result_counts_t *c);

/* Registers a handler's counters now, every status at 0, so that rates
 * over them start at the first result (a configured handler). */
void em_result_counts_declare(em_result_counts_t *c, const char *handler);

/* Counts one result; any thread. handler is handler_len bytes (not
 * NUL-terminated; NULL or empty: none named). */
void em_result_counts_add(em_result_counts_t *c, const uint8_t *handler, size_t handler_len, int status, int final);

#endif
