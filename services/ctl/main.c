/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmeshctl: the operator's command-line client (docs/execmeshctl.md).
 *   submit   one execution (waits for its final result) or many from a
 *            JSON-lines file at a rate (submit.c)
 *   cancel   cancels executions by id (submit.c)
 *   get      waits for one execution's final result (results.c)
 *   tail     follows the results topic, filtered (results.c)
 *   trace    one execution's journey, attempt by attempt (results.c)
 *   health   asks every replica behind a target for its health (health.c)
 *   drain    drains a replica through its admin endpoint (admin.c)
 *   pause / resume   a scheduler's consumption (admin.c)
 *   dead     lists and replays the dead-letter topic (dead.c)
 *   status   the consumer group's partitions, owners and lag (status.c)
 * Exit codes: 0 success (result SUCCEEDED / all SERVING / done), 1 a
 * negative answer (the execution ended otherwise, a replica is not
 * SERVING, lines refused, nothing found), 2 usage error, 3 a call or a
 * wait failed, timed out, or Kafka or a replica was unreachable.
 */
#include <stdio.h>
#include <string.h>

#include <grpc/grpc.h>

#include "ctl.h"
#include "em_log.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    int grpc; /* needs gRPC's log bridge */
    const char *synopsis;
    const char *what;
} command_t;

static const command_t commands[] = {
    {"submit", ctl_submit, 1, "submit --handler NAME [--payload TEXT] ... | submit --file F [--rate N] [--wait]",
     "submit one execution and print its final result, or many from a JSON-lines file"},
    {"cancel", ctl_cancel, 1, "cancel [--target T] ID...", "cancel executions by id (each ends CANCELLED)"},
    {"get", ctl_get, 0, "get ID [--timeout-ms N]", "wait for one execution's final result and print it (JSON)"},
    {"tail", ctl_tail, 0, "tail [--from-beginning] [--id-prefix P] [--status S] [--handler H] [--count N]",
     "follow the results topic, one JSON line per result"},
    {"trace", ctl_trace, 0, "trace ID [--json]", "one execution's journey per attempt, with its trace id"},
    {"health", ctl_health, 1, "health --target ipv4:H:P[,H:P...] | dns:///NAME:PORT",
     "ask every replica behind a target for its gRPC health"},
    {"drain", ctl_drain, 0, "drain --token-file F [--wait | --wait-safe] HOST:PORT...",
     "drain replicas through their admin endpoint (like SIGTERM)"},
    {"pause", ctl_pause, 0, "pause --token-file F HOST:PORT...", "pause schedulers' consumption"},
    {"resume", ctl_pause, 0, "resume --token-file F HOST:PORT...", "resume schedulers' consumption"},
    {"dead", ctl_dead, 1, "dead list | dead replay [--rate N] [--group G]",
     "list the dead-letter topic, replay what is valid now"},
    {"status", ctl_status, 0, "status --bootstrap HOST:PORT [--group G] [--metrics H:P,...] [--json]",
     "the schedulers' consumer group: each partition's owner, offsets and lag"},
};

static void usage(FILE *out) {
    fprintf(out, "execmeshctl %s: the execmesh command-line client\n\nUsage:\n", EM_VERSION);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  execmeshctl %s\n", commands[i].synopsis);
    fprintf(out, "  execmeshctl --version | --help\n\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].what);
    fprintf(out, "\nEvery command takes --help. Exit codes: 0 success, 1 a negative answer (an execution ended\n"
                 "otherwise, a replica is not SERVING, lines refused, nothing found), 2 usage error, 3 a call or\n"
                 "a wait failed or timed out, Kafka or a replica unreachable.\n");
}

int main(int argc, char **argv) {
    em_log_init("execmeshctl", "", EM_LOG_WARN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("execmeshctl %s (librdkafka %s, grpc %s)\n", EM_VERSION, em_kafka_version(), grpc_version_string());
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        if (commands[i].grpc)
            em_log_bridge_grpc();
        return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "execmeshctl: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
