/* SPDX-License-Identifier: Apache-2.0 */
/* services.h: the executor's main.c, its main renamed. */
#include "services.h"

int fuzz_executor_main(int argc, char **argv);
#define main fuzz_executor_main
#include "../../services/executor/main.c"
#undef main

const em_service_desc_t *fuzz_executor_desc(void) { return &executor_desc; }
