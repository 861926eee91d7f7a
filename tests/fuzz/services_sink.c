/* SPDX-License-Identifier: Apache-2.0 */
/* services.h: the sink's main.c, its main renamed. */
#include "services.h"

int fuzz_sink_main(int argc, char **argv);
#define main fuzz_sink_main
#include "../../services/sink/main.c"
#undef main

const em_service_desc_t *fuzz_sink_desc(void) { return &sink_desc; }
