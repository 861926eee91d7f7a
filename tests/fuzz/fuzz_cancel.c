/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: a Scheduler.Cancel request's bytes, as any caller sends
 * them, through sc_cancel_decode (services/scheduler/requests.c), which
 * the handler runs. Properties: an accepted request names 1 to
 * SC_CANCEL_MAX_IDS ids of 1 to SC_CANCEL_MAX_ID bytes each (what
 * cancel.c's fixed buffers and the cancels topic's record assume).
 */
#include <string.h>

#include "execmesh/v1/execmesh.pb-c.h"
#include "fuzz.h"
#include "scheduler.h"

FUZZ_QUIET_INITIALIZE

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char msg[256];
    msg[0] = '\0';
    Execmesh__V1__CancelRequest *in = sc_cancel_decode(data, size, msg, sizeof(msg));
    if (!in) {
        FUZZ_CHECK(msg[0], "a refusal without a reason");
        return 0;
    }
    FUZZ_CHECK(in->n_ids >= 1 && in->n_ids <= SC_CANCEL_MAX_IDS, "%zu ids accepted", in->n_ids);
    for (size_t i = 0; i < in->n_ids; i++) {
        size_t n = strlen(in->ids[i]);
        FUZZ_CHECK(n >= 1 && n <= SC_CANCEL_MAX_ID, "ids[%zu] of %zu bytes accepted", i, n);
    }
    execmesh__v1__cancel_request__free_unpacked(in, NULL);
    return 0;
}
