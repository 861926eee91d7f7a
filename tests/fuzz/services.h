/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The services' own settings tables and admin routes, for the fuzz targets
 * of the config loader and of the admin HTTP handling: each service's
 * main.c is compiled into them (services_<name>.c) with its main renamed,
 * so the tables and routes fuzzed are the ones the services run, not
 * copies.
 */
#ifndef EM_FUZZ_SERVICES_H
#define EM_FUZZ_SERVICES_H

#include "em_metrics.h"
#include "em_service.h"

const em_service_desc_t *fuzz_scheduler_desc(void);
const em_service_desc_t *fuzz_executor_desc(void);
const em_service_desc_t *fuzz_sink_desc(void);
const em_service_desc_t *fuzz_devkafka_desc(void);

/* Adds the routes the service's main adds to its metrics port, with a
 * state of the service's own type that the routes may change (no cluster,
 * no consumer: the routes' parsing and answers are what is fuzzed). */
void fuzz_scheduler_routes(em_metrics_t *m);
void fuzz_devkafka_routes(em_metrics_t *m);

#endif
