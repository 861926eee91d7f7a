/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmeshctl drain, pause and resume: the admin actions on a replica's
 * metrics port (POST /admin/..., "Authorization: Bearer TOKEN" with the
 * token of the replica's admin.token_file, given here by --token-file so it
 * never shows in a process list). drain starts the same drain as SIGTERM
 * on any service and can wait until the replica holds no work (its gauge
 * execmesh_safe_to_stop) or is gone (its metrics port stops answering);
 * pause and resume stop and restart a scheduler's consumption.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "em_util.h"

#define ADMIN_HTTP_MS 5000
#define ADMIN_TOKEN_MAX 512
#define ADMIN_POLL_MS 200

/* POSTs path to hostport: 0 on a 2xx (the body's first line in answer),
 * else 3 after printing why. */
static int admin_post(const char *cmd, const char *hostport, const char *path, const char *token, char *answer,
                      size_t n) {
    char err[512];
    char *body = NULL;
    size_t len;
    int status;
    answer[0] = '\0';
    em_err_t rc = ctl_http_request(hostport, "POST", path, token, ADMIN_HTTP_MS, &status, &body, &len, err,
                                   sizeof(err));
    if (rc != EM_OK) {
        fprintf(stderr, "execmeshctl %s: %s: POST %s: %s\n", cmd, hostport, path, err);
        return 3;
    }
    size_t k = strcspn(body, "\r\n");
    snprintf(answer, n, "%.*s", (int)k, body);
    free(body);
    if (status < 200 || status > 299) {
        fprintf(stderr, "execmeshctl %s: %s: POST %s: HTTP %d: %s%s\n", cmd, hostport, path, status, answer,
                status == 404 ? (strcmp(cmd, "drain") ? " (pause and resume are a scheduler's)" : "") : "");
        return 3;
    }
    return 0;
}

static int parse_hostports(const char *cmd, int argc, char **argv) {
    if (optind >= argc) {
        fprintf(stderr, "execmeshctl %s: name at least one replica's metrics address HOST:PORT (%s --help)\n", cmd,
                cmd);
        return 2;
    }
    for (int i = optind; i < argc; i++) {
        char host[256], err[256];
        int port;
        if (em_parse_hostport(argv[i], host, sizeof(host), &port, err, sizeof(err)) != EM_OK) {
            fprintf(stderr, "execmeshctl %s: %s: %s (expected the replica's metrics address HOST:PORT)\n", cmd,
                    argv[i], err);
            return 2;
        }
    }
    return 0;
}

/* ---- drain -------------------------------------------------------------- */

static void usage_drain(FILE *out) {
    fprintf(out,
            "Usage: execmeshctl drain --token-file F [--wait | --wait-safe] [--timeout-ms N] HOST:PORT...\n"
            "Starts the drain of each replica (any service), as SIGTERM would: POST /admin/drain on its metrics\n"
            "address with the admin token. The replica turns NOT_SERVING, finishes what it holds, exits 0.\n"
            "  --token-file    the file holding the replicas' admin token (their admin.token_file)\n"
            "  --wait          then wait until each replica's metrics port stops answering (it exited)\n"
            "  --wait-safe     then wait until each holds no work (execmesh_safe_to_stop 1) or is gone\n"
            "  --timeout-ms    bound of the wait (default 120000)\n"
            "Exit 0 drained (and waited), 2 usage, 3 a replica refused, did not answer or the wait timed out.\n");
}

int ctl_drain(int argc, char **argv) {
    static const struct option opts[] = {{"token-file", required_argument, NULL, 'k'},
                                         {"wait", no_argument, NULL, 'w'},
                                         {"wait-safe", no_argument, NULL, 's'},
                                         {"timeout-ms", required_argument, NULL, 'T'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *token_file = NULL;
    int wait = 0, wait_safe = 0, c;
    int64_t timeout = 120000;
    char token[ADMIN_TOKEN_MAX];
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'k': token_file = optarg; break;
        case 'w': wait = 1; break;
        case 's': wait_safe = 1; break;
        case 'T':
            if (ctl_parse_i64("drain", "timeout-ms", optarg, 1, INT32_MAX, &timeout) != 0)
                return 2;
            break;
        case 'h': return ctl_usage_exit(usage_drain, 1);
        default: return ctl_usage_exit(usage_drain, 0);
        }
    }
    if (wait && wait_safe) {
        fprintf(stderr, "execmeshctl drain: --wait or --wait-safe, not both\n");
        return 2;
    }
    if (!token_file) {
        fprintf(stderr, "execmeshctl drain: --token-file is required (the replicas' admin.token_file)\n");
        return 2;
    }
    int rc = parse_hostports("drain", argc, argv);
    if (rc != 0 || (rc = ctl_read_token("drain", token_file, token, sizeof(token))) != 0)
        return rc;
    int n = argc - optind;
    int *left = calloc((size_t)n, sizeof(int));
    if (!left)
        return 3;
    for (int i = 0; i < n; i++) {
        char answer[256];
        const char *hp = argv[optind + i];
        if (admin_post("drain", hp, "/admin/drain", token, answer, sizeof(answer)) != 0) {
            rc = 3;
            continue;
        }
        printf("%s %s\n", hp, answer);
        fflush(stdout);
        left[i] = wait || wait_safe;
    }
    int64_t until = em_mono_ms() + timeout;
    for (int pending = 1; pending;) {
        pending = 0;
        for (int i = 0; i < n; i++) {
            if (!left[i])
                continue;
            const char *hp = argv[optind + i];
            char err[512], *body = NULL;
            size_t len;
            em_err_t e = ctl_http_get(hp, "/metrics", ADMIN_HTTP_MS, &body, &len, err, sizeof(err));
            if (e == EM_EUNAVAIL) { /* nothing listens: the process is gone */
                printf("%s gone\n", hp);
                left[i] = 0;
            } else if (e == EM_OK && wait_safe && ctl_prom_value(body, len, "execmesh_safe_to_stop", 0) == 1.0) {
                printf("%s safe_to_stop\n", hp);
                left[i] = 0;
            } else
                pending = 1;
            fflush(stdout);
            free(body);
        }
        if (pending && em_mono_ms() >= until) {
            for (int i = 0; i < n; i++)
                if (left[i])
                    fprintf(stderr, "execmeshctl drain: %s still %s after %" PRId64 " ms\n", argv[optind + i],
                            wait ? "answering" : "holding work", timeout);
            rc = 3;
            break;
        }
        if (pending) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = ADMIN_POLL_MS * 1000000L};
            nanosleep(&ts, NULL); /* the poll interval of a bounded wait */
        }
    }
    free(left);
    return rc;
}

/* ---- pause / resume ----------------------------------------------------- */

static const char *pause_cmd = "pause";

static void usage_pause(FILE *out) {
    fprintf(out,
            "Usage: execmeshctl %s --token-file F HOST:PORT...\n"
            "%s each scheduler's consumption of the requests topic: POST /admin/%s on its metrics address\n"
            "with the admin token. %s\n"
            "  --token-file    the file holding the schedulers' admin token (their admin.token_file)\n"
            "Exit 0 every scheduler answered, 2 usage, 3 one refused or did not answer.\n",
            pause_cmd, strcmp(pause_cmd, "pause") ? "Resumes" : "Pauses", pause_cmd,
            strcmp(pause_cmd, "pause") ? ""
                                       : "Its partitions stay assigned and wait in Kafka; Submit keeps working; "
                                         "execmeshctl status\nshows the lag grow.");
}

int ctl_pause(int argc, char **argv) {
    static const struct option opts[] = {{"token-file", required_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *token_file = NULL;
    char token[ADMIN_TOKEN_MAX], path[32];
    int c;
    pause_cmd = strcmp(argv[0], "resume") == 0 ? "resume" : "pause";
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'k': token_file = optarg; break;
        case 'h': return ctl_usage_exit(usage_pause, 1);
        default: return ctl_usage_exit(usage_pause, 0);
        }
    }
    if (!token_file) {
        fprintf(stderr, "execmeshctl %s: --token-file is required (the schedulers' admin.token_file)\n", pause_cmd);
        return 2;
    }
    int rc = parse_hostports(pause_cmd, argc, argv);
    if (rc != 0 || (rc = ctl_read_token(pause_cmd, token_file, token, sizeof(token))) != 0)
        return rc;
    snprintf(path, sizeof(path), "/admin/%s", pause_cmd);
    for (int i = optind; i < argc; i++) {
        char answer[256];
        if (admin_post(pause_cmd, argv[i], path, token, answer, sizeof(answer)) != 0)
            rc = 3;
        else
            printf("%s %s\n", argv[i], answer);
    }
    return rc;
}
