/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmeshctl health: asks every replica behind a target for its
 * grpc.health.v1 status, one line each. A target is the services' own
 * form: ipv4:H:P[,H:P...], ipv6:[A]:P[,...], or dns:///NAME:PORT, which is
 * resolved here with getaddrinfo (every address a replica, as gRPC's
 * round_robin sees a headless Service), each then asked on its own channel
 * without health checking, one attempt, failing fast.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ctl.h"
#include "em_rpc.h"
#include "em_util.h"
#include "grpc/health/v1/health.pb-c.h"

#define HEALTH_MAX_REPLICAS 256

static void usage_health(FILE *out) {
    fprintf(out,
            "Usage: execmeshctl health --target TARGET [--service NAME] [--timeout-ms N] [--set tls.KEY=VALUE]...\n"
            "Asks each replica behind the target for grpc.health.v1 Check and prints one line each:\n"
            "ADDRESS STATUS (SERVING, NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN, UNREACHABLE, ERROR).\n"
            "  --target        ipv4:HOST:PORT[,HOST:PORT...], ipv6:[ADDR]:PORT[,...] or dns:///NAME:PORT (each\n"
            "                  address NAME resolves to is a replica)\n"
            "  --service       the service name to ask about (default \"\": the whole replica)\n"
            "  --timeout-ms    per replica (default 2000)\n"
            "Exit 0 every replica SERVING, 1 one is not (or does not answer), 2 usage, 3 the name does not\n"
            "resolve.\n" CTL_TLS_SET_HELP);
}

/* Expands target into "ipv4:H:P" / "ipv6:[A]:P" one-address targets in
 * out[0..*n) (malloc'd) with the label to print in labels. 0, 2 (bad
 * target, printed) or 3 (the name does not resolve, printed). */
static int expand(const char *target, char **out, char **labels, size_t *n) {
    *n = 0;
    const char *scheme = NULL, *list = target;
    if (!strncmp(target, "ipv4:", 5) || !strncmp(target, "ipv6:", 5)) {
        scheme = strncmp(target, "ipv4:", 5) == 0 ? "ipv4" : "ipv6";
        list = target + 5;
    } else if (!strncmp(target, "dns:", 4)) {
        const char *hp = target + 4;
        if (!strncmp(hp, "//", 2)) { /* dns://[authority]/host:port */
            const char *slash = strchr(hp + 2, '/');
            if (!slash) {
                fprintf(stderr, "execmeshctl health: --target %s: expected dns:///NAME:PORT\n", target);
                return 2;
            }
            if (slash != hp + 2)
                fprintf(stderr, "execmeshctl health: --target %s: the DNS authority is ignored; the system's "
                                "resolver answers\n", target);
            hp = slash + 1;
        }
        char host[256], err[256];
        int port;
        if (em_parse_hostport(hp, host, sizeof(host), &port, err, sizeof(err)) != EM_OK) {
            fprintf(stderr, "execmeshctl health: --target %s: %s (expected dns:///NAME:PORT)\n", target, err);
            return 2;
        }
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        struct addrinfo *ai = NULL;
        int g = getaddrinfo(host, NULL, &hints, &ai);
        if (g != 0) {
            fprintf(stderr, "execmeshctl health: --target %s: cannot resolve %s: %s\n", target, host, gai_strerror(g));
            return 3;
        }
        for (struct addrinfo *a = ai; a && *n < HEALTH_MAX_REPLICAS; a = a->ai_next) {
            char ip[INET6_ADDRSTRLEN], one[300], label[600];
            int v6 = a->ai_family == AF_INET6;
            if (v6)
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)a->ai_addr)->sin6_addr, ip, sizeof(ip));
            else if (a->ai_family == AF_INET)
                inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)a->ai_addr)->sin_addr, ip, sizeof(ip));
            else
                continue;
            snprintf(one, sizeof(one), v6 ? "ipv6:[%s]:%d" : "ipv4:%s:%d", ip, port);
            int dup = 0;
            for (size_t i = 0; i < *n; i++)
                dup |= strcmp(out[i], one) == 0;
            if (dup)
                continue;
            snprintf(label, sizeof(label), v6 ? "[%s]:%d (%s)" : "%s:%d (%s)", ip, port, host);
            out[*n] = strdup(one);
            labels[*n] = strdup(label);
            (*n)++;
        }
        freeaddrinfo(ai);
        if (*n == 0) {
            fprintf(stderr, "execmeshctl health: --target %s: %s has no IPv4 or IPv6 address\n", target, host);
            return 3;
        }
        return 0;
    } else if (strstr(target, "://") || !strncmp(target, "unix:", 5) || !strncmp(target, "unix-abstract:", 14)) {
        fprintf(stderr, "execmeshctl health: --target %s: expected ipv4:H:P[,H:P...], ipv6:[A]:P[,...] or "
                        "dns:///NAME:PORT\n", target);
        return 2;
    }
    char *copy = strdup(list);
    for (char *save = NULL, *addr = strtok_r(copy, ",", &save); addr && *n < HEALTH_MAX_REPLICAS;
         addr = strtok_r(NULL, ",", &save)) {
        char one[300];
        snprintf(one, sizeof(one), "%s:%s", scheme ? scheme : (addr[0] == '[' ? "ipv6" : "ipv4"), addr);
        out[*n] = strdup(one);
        labels[*n] = strdup(addr);
        (*n)++;
    }
    free(copy);
    if (*n == 0) {
        fprintf(stderr, "execmeshctl health: --target %s names no address\n", target);
        return 2;
    }
    return 0;
}

int ctl_health(int argc, char **argv) {
    static const struct option opts[] = {{"target", required_argument, NULL, 't'},
                                         {"service", required_argument, NULL, 's'},
                                         {"timeout-ms", required_argument, NULL, 'T'},
                                         {"set", required_argument, NULL, 'S'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *target = NULL, *service = "";
    int64_t timeout = 2000;
    int c;
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't': target = optarg; break;
        case 's': service = optarg; break;
        case 'T':
            if (ctl_parse_i64("health", "timeout-ms", optarg, 1, 600000, &timeout) != 0)
                return 2;
            break;
        case 'S':
            if (ctl_set("health", optarg) != 0)
                return 2;
            break;
        case 'h': return ctl_usage_exit(usage_health, 1);
        default: return ctl_usage_exit(usage_health, 0);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "execmeshctl health: unexpected argument '%s' (health --help)\n", argv[optind]);
        return 2;
    }
    em_tls_opts_t tls;
    if (ctl_tls("health", &tls) != 0)
        return 2;
    if (!target) {
        fprintf(stderr, "execmeshctl health: --target is required (e.g. ipv4:127.0.0.1:7100,127.0.0.1:7101 or "
                        "dns:///scheduler:7100)\n");
        return 2;
    }
    char *addrs[HEALTH_MAX_REPLICAS], *labels[HEALTH_MAX_REPLICAS];
    size_t n;
    int rc = expand(target, addrs, labels, &n);
    if (rc != 0)
        return rc;
    em_rpc_loop_t *loop = em_rpc_loop_new();
    em_rpc_loop_start(loop);
    int all_serving = 1;
    for (size_t i = 0; i < n; i++) {
        char err[512];
        em_rpc_channel_opts_t co;
        ctl_channel_opts(&co, 1, &tls);
        em_rpc_channel_t *ch = addrs[i] ? em_rpc_channel_new(loop, addrs[i], "grpc.health.v1.Health", &co, err,
                                                             sizeof(err))
                                        : NULL;
        if (!ch) {
            printf("%s ERROR %s\n", labels[i] ? labels[i] : "?", addrs[i] ? err : "out of memory");
            all_serving = 0;
            continue;
        }
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        req.service = (char *)(uintptr_t)service;
        ctl_call_t call;
        em_rpc_method_ref_t *check = em_rpc_channel_method(ch, "/grpc.health.v1.Health/Check");
        grpc_status_code code = ctl_call(ch, check, &req.base, timeout, &call);
        if (code != GRPC_STATUS_OK) {
            printf("%s UNREACHABLE %s: %s\n", labels[i], em_rpc_status_name(code), call.details);
            all_serving = 0;
        } else {
            Grpc__Health__V1__HealthCheckResponse *r =
                grpc__health__v1__health_check_response__unpack(NULL, call.len, call.resp);
            int st = r ? (int)r->status : 0;
            static const char *const names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
            printf("%s %s\n", labels[i], st >= 0 && st <= 3 ? names[st] : "UNKNOWN");
            all_serving &= st == 1;
            if (r)
                grpc__health__v1__health_check_response__free_unpacked(r, NULL);
        }
        ctl_call_cleanup(&call);
        em_rpc_channel_destroy(ch);
    }
    fflush(stdout);
    for (size_t i = 0; i < n; i++) {
        free(addrs[i]);
        free(labels[i]);
    }
    em_rpc_loop_destroy(loop);
    return all_serving ? 0 : 1;
}
