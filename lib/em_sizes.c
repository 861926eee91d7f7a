/* SPDX-License-Identifier: Apache-2.0 */
/* Start-up checks of the size model (em_sizes.h) every service shares. */
#include "em_sizes.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int em_sizes_refuse(const em_config_t *cfg, const char *program, const char *key, const char *other, const char *why) {
    const char *blame = strcmp(em_config_source(cfg, key), "default") != 0 ? key : other;
    fprintf(stderr, "%s: config refused: %s: key '%s': %s\n", program, em_config_source(cfg, blame), blame, why);
    return -1;
}

int em_sizes_check_cap(const em_config_t *cfg, const char *program, const char *key, const char *floor_key,
                       const char *what) {
    char why[512];
    int64_t cap = em_config_int(cfg, key);
    int64_t floor = em_config_int(cfg, floor_key);
    int64_t grpc_max = em_config_int(cfg, "grpc.max_message_bytes");
    if (cap < floor) {
        snprintf(why, sizeof(why), "%s %" PRId64 " is less than %s %" PRId64 ": one must fit in %s", key, cap,
                 floor_key, floor, what);
        return em_sizes_refuse(cfg, program, key, floor_key, why);
    }
    if (cap > grpc_max - EM_SIZE_GRPC_MARGIN) {
        snprintf(why, sizeof(why), "%s %" PRId64 " is more than grpc.max_message_bytes %" PRId64 " - %d: %s must fit in one gRPC message",
                 key, cap, grpc_max, EM_SIZE_GRPC_MARGIN, what);
        return em_sizes_refuse(cfg, program, key, "grpc.max_message_bytes", why);
    }
    return 0;
}
