/* SPDX-License-Identifier: Apache-2.0 */
/* services.h: the scheduler's main.c, its main renamed. */
#include "services.h"

int fuzz_scheduler_main(int argc, char **argv);
#define main fuzz_scheduler_main
#include "../../services/scheduler/main.c"
#undef main

const em_service_desc_t *fuzz_scheduler_desc(void) { return &scheduler_desc; }

static scheduler_t fuzz_scheduler;

void fuzz_scheduler_routes(em_metrics_t *m) {
    pthread_mutex_init(&fuzz_scheduler.lock, NULL);
    em_metrics_route(m, "POST", "/admin/", admin_consume, &fuzz_scheduler);
}
