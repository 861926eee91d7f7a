/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: a grpc.health.v1 HealthCheckRequest's bytes (Check and
 * Watch, on every service's gRPC port, before any authorization), through
 * em_health_request_decode (lib/em_health.c), then what the server does
 * with the name: em_health_get, and a watch set and removed.
 */
#include <string.h>

#include "em_health.h"
#include "fuzz.h"

static em_health_t *health;

static void on_status(void *arg, em_health_status_t st) {
    *(em_health_status_t *)arg = st;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_quiet();
    health = em_health_new();
    if (!health || em_health_add_service(health, "") != EM_OK ||
        em_health_add_service(health, "execmesh.v1.Scheduler") != EM_OK)
        abort();
    em_health_block(health, EM_HEALTH_STARTING, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *service = NULL;
    em_err_t rc = em_health_request_decode(data, size, &service);
    if (rc != EM_OK) {
        FUZZ_CHECK(rc == EM_EINVAL && !service, "rc %d", rc);
        return 0;
    }
    FUZZ_CHECK(service, "no name");
    em_health_status_t st = EM_HEALTH_UNKNOWN, watched = EM_HEALTH_UNKNOWN;
    int known = em_health_get(health, service, &st) == EM_OK;
    FUZZ_CHECK(known == (!strcmp(service, "") || !strcmp(service, "execmesh.v1.Scheduler")), "'%s' known %d",
               service, known);
    FUZZ_CHECK(!known || st == EM_HEALTH_SERVING, "status %d", st);
    em_health_watch_t *w = em_health_watch(health, service, on_status, &watched);
    FUZZ_CHECK(w, "out of memory");
    FUZZ_CHECK(watched == (known ? EM_HEALTH_SERVING : EM_HEALTH_SERVICE_UNKNOWN), "watch told %d", watched);
    em_health_unwatch(health, w);
    free(service);
    return 0;
}
