/* SPDX-License-Identifier: Apache-2.0 */
/* services.h: devkafka's main.c, its main renamed. */
#include "services.h"

int fuzz_devkafka_main(int argc, char **argv);
#define main fuzz_devkafka_main
#include "../../services/devkafka/main.c"
#undef main

const em_service_desc_t *fuzz_devkafka_desc(void) { return &devkafka_desc; }

static devkafka_t fuzz_devkafka; /* no mock cluster, no brokers: the routes parse and answer */

void fuzz_devkafka_routes(em_metrics_t *m) {
    em_metrics_route(m, "POST", "/admin/brokers/", admin_brokers, &fuzz_devkafka);
    em_metrics_route(m, "POST", "/admin/rtt/", admin_rtt, &fuzz_devkafka);
}
