/* SPDX-License-Identifier: Apache-2.0 */
/* The shared skeleton of every execmesh service. */
#include "em_service.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include "em_kafka.h"
#include "em_rpc_channel.h"
#include "em_util.h"

/* Rewrites "--alias VALUE" / "--alias=VALUE" into "--set key=VALUE" copies
 * kept in `owned` (freed by the caller). */
static char **expand_aliases(const em_service_desc_t *d, int *argc, char **argv, char ***owned, int *nowned) {
    char **out = calloc((size_t)*argc * 2 + 1, sizeof(char *));
    *owned = calloc((size_t)*argc + 1, sizeof(char *));
    *nowned = 0;
    if (!out || !*owned) {
        free(out);
        free(*owned);
        *owned = NULL;
        return NULL;
    }
    int n = 0;
    for (int i = 0; i < *argc; i++) {
        const em_flag_alias_t *a = NULL;
        const char *value = NULL;
        for (const em_flag_alias_t *x = d->aliases; i > 0 && x && x->flag; x++) {
            size_t fl = strlen(x->flag);
            if (strncmp(argv[i], "--", 2) || strncmp(argv[i] + 2, x->flag, fl))
                continue;
            if (argv[i][2 + fl] == '=') {
                a = x;
                value = argv[i] + 3 + fl;
            } else if (argv[i][2 + fl] == '\0' && i + 1 < *argc) {
                a = x;
                value = argv[++i];
            }
            break;
        }
        if (!a) {
            out[n++] = argv[i];
            continue;
        }
        size_t len = strlen(a->key) + strlen(value) + 2;
        char *kv = malloc(len);
        if (!kv)
            continue;
        snprintf(kv, len, "%s=%s", a->key, value);
        (*owned)[(*nowned)++] = kv;
        out[n++] = (char *)(uintptr_t)"--set";
        out[n++] = kv;
    }
    *argc = n;
    return out;
}

/* "execmesh-scheduler 0.1.0 (librdkafka 2.8.0, grpc 29.0.0)": the libraries
 * as loaded at run time, which a build can get wrong (EM_LIBRDKAFKA). */
static void print_version(const em_service_desc_t *d, FILE *out) {
    fprintf(out, "%s %s (librdkafka %s, grpc %s)", d->program, EM_VERSION, em_kafka_version(), grpc_version_string());
}

static void usage(const em_service_desc_t *d, FILE *out) {
    print_version(d, out);
    fprintf(out,
            ": %s\n\n"
            "Usage: %s [--config FILE] [--set KEY=VALUE]... [--ports-file FILE]\n\n"
            "Options:\n"
            "  -c, --config FILE             libconfig file with the settings below (keys are groups: a.b = x is a = { b = x; })\n"
            "  -s, --set KEY=VALUE           override one setting after the file (repeatable; lists are comma-separated)\n"
            "  -p, --ports-file FILE         same as --set ports_file=FILE\n"
            "      --check-config            validate the configuration and exit\n"
            "      --print-config-reference  print the settings as a Markdown table and exit\n"
            "  -h, --help                    this text\n"
            "  -V, --version                 print the version (and librdkafka's and gRPC's in use) and exit\n\n"
            "Signals: SIGTERM/SIGINT drain (NOT_SERVING, finish in-flight work, exit 0);\n"
            "a second SIGTERM/SIGINT during the drain exits at once (exit code 128 + signal);\n"
            "SIGUSR1 sets health NOT_SERVING (reason \"admin\"), SIGUSR2 clears it.\n\n"
            "Settings (key, type, default, range):\n",
            d->summary, d->program);
    em_config_write_help(d->settings, d->nsettings, out);
    for (const em_flag_alias_t *a = d->aliases; a && a->flag; a++)
        fprintf(out, "%s--%s VALUE is short for --set %s=VALUE\n", a == d->aliases ? "\n" : "", a->flag, a->key);
}

static int service_init(em_service_t *svc, const em_service_desc_t *desc, int argc, char **argv);

static int on_livez(void *ctx, const char *rest, char *out, size_t n);

/* Who may reach what: an admin endpoint needs its token file, and a gRPC
 * port open to the network needs TLS unless the operator says otherwise.
 * 0, or -1 after printing the refusal naming the key. */
static int check_security(const em_config_t *cfg, const char *program) {
    char err[512], host[256];
    const char *key = NULL;
    const char *tokf = em_config_str(cfg, "admin.token_file");
    int port;
    if (em_config_bool(cfg, "admin.enabled") && !*tokf) {
        key = "admin.enabled";
        snprintf(err, sizeof(err), "true needs admin.token_file: the token admin requests must present");
    } else if (*tokf && em_metrics_token_file_check(tokf, err, sizeof(err)) != 0) {
        key = "admin.token_file";
    } else if (!*em_config_str(cfg, "tls.cert_file") && !em_config_bool(cfg, "security.allow_plaintext") &&
               em_parse_hostport(em_config_str(cfg, "grpc.listen"), host, sizeof(host), &port, err, sizeof(err)) ==
                   EM_OK &&
               !em_host_is_loopback(host)) {
        key = "grpc.listen";
        snprintf(err, sizeof(err),
                 "'%s' is not a loopback address and TLS is off: set tls.cert_file, tls.key_file and "
                 "tls.ca_file, or security.allow_plaintext = true to serve plaintext to the network",
                 em_config_str(cfg, "grpc.listen"));
    }
    if (!key)
        return 0;
    fprintf(stderr, "%s: config refused: %s: key '%s': %s\n", program, em_config_source(cfg, key), key, err);
    return -1;
}

/* ---- the state every replica shows: serving, draining, safe to stop ----- */

static void collect_state(void *ctx, em_metrics_out_t *out) {
    em_service_t *svc = ctx;
    em_metrics_out_family(out, "execmesh_serving", "gauge",
                          "1 while this replica's health is SERVING (clients pick it), else 0.");
    em_metrics_out_sample(out, "execmesh_serving", NULL, em_health_overall(svc->health) == EM_HEALTH_SERVING);
    em_metrics_out_family(out, "execmesh_draining", "gauge",
                          "1 once a drain started (SIGTERM, SIGINT or POST /admin/drain): it takes no new work.");
    em_metrics_out_sample(out, "execmesh_draining", NULL, atomic_load(&svc->draining));
    em_metrics_out_family(out, "execmesh_safe_to_stop", "gauge",
                          "1 when this replica holds no work (nothing in flight, waiting or unstored): stopping "
                          "it loses and repeats nothing. Autoscalers drain a replica, then wait for 1.");
    em_metrics_out_sample(out, "execmesh_safe_to_stop", NULL,
                          !svc->holds_work || !svc->holds_work(svc->holds_work_ctx));
}

/* POST /admin/drain: the same drain as SIGTERM (sent to ourselves: the
 * signal thread takes it like an operator's). */
static int on_drain(void *ctx, const char *rest, char *out, size_t n) {
    em_service_t *svc = ctx;
    if (rest[0]) {
        snprintf(out, n, "not found: try POST /admin/drain\n");
        return 404;
    }
    if (atomic_load(&svc->draining)) {
        snprintf(out, n, "already draining\n");
        return 200;
    }
    EM_INFO("drain asked on the admin endpoint");
    if (kill(getpid(), SIGTERM) != 0) {
        snprintf(out, n, "cannot start the drain: %s\n", strerror(errno));
        return 500;
    }
    snprintf(out, n, "draining\n");
    return 202;
}

int em_service_init(em_service_t *svc, const em_service_desc_t *desc, int argc, char **argv) {
    char **owned = NULL;
    int nowned = 0;
    char **args = expand_aliases(desc, &argc, argv, &owned, &nowned);
    if (!args)
        return 1;
    int rc = service_init(svc, desc, argc, args);
    for (int i = 0; i < nowned; i++)
        free(owned[i]);
    free(owned);
    free(args);
    return rc;
}

static int service_init(em_service_t *svc, const em_service_desc_t *desc, int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},   {"set", required_argument, NULL, 's'},
        {"ports-file", required_argument, NULL, 'p'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},        {"check-config", no_argument, NULL, 'C'},
        {"print-config-reference", no_argument, NULL, 'R'}, {NULL, 0, NULL, 0}};
    char err[1024];
    const char *config_file = NULL;
    int check_only = 0;
    char **sets = calloc((size_t)argc + 1, sizeof(char *));
    char *ports_set = NULL; /* the one --set string built here */
    int nsets = 0;
    int c;

    memset(svc, 0, sizeof(*svc));
    svc->desc = desc;
    if (!sets)
        return 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:s:p:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_file = optarg; break;
        case 's': sets[nsets++] = optarg; break;
        case 'p': {
            size_t n = strlen(optarg) + 16;
            free(ports_set);
            ports_set = malloc(n);
            if (!ports_set)
                return 1;
            snprintf(ports_set, n, "ports_file=%s", optarg);
            sets[nsets++] = ports_set;
            break;
        }
        case 'h': usage(desc, stdout); free(sets); free(ports_set); return 0;
        case 'V':
            print_version(desc, stdout);
            putchar('\n');
            free(sets); free(ports_set);
            return 0;
        case 'C': check_only = 1; break;
        case 'R':
            em_config_write_reference(desc->program, desc->settings, desc->nsettings, stdout);
            free(sets); free(ports_set);
            return 0;
        default:
            fprintf(stderr, "%s: unknown option '%s' (try --help)\n", desc->program, argv[optind - 1]);
            free(sets); free(ports_set);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s' (try --help)\n", desc->program, argv[optind]);
        free(sets); free(ports_set);
        return 2;
    }

    svc->cfg = em_config_new(desc->name, desc->settings, desc->nsettings, err, sizeof(err));
    if (!svc->cfg) {
        fprintf(stderr, "%s: %s\n", desc->program, err);
        free(sets); free(ports_set);
        return 2;
    }
    int rc = -1;
    if (config_file && em_config_load_file(svc->cfg, config_file, err, sizeof(err)) != EM_OK) {
        fprintf(stderr, "%s: config refused: %s\n", desc->program, err);
        rc = 2;
    }
    for (int i = 0; rc < 0 && i < nsets; i++)
        if (em_config_set(svc->cfg, sets[i], err, sizeof(err)) != EM_OK) {
            fprintf(stderr, "%s: config refused: %s\n", desc->program, err);
            rc = 2;
        }
    free(ports_set);
    free(sets);
    int level = rc < 0 ? em_log_level_parse(em_config_str(svc->cfg, "log.level")) : 0;
    if (rc < 0 && level < 0) {
        fprintf(stderr, "%s: config refused: %s: key 'log.level': '%s' is not one of debug, info, warn, error\n",
                desc->program, em_config_source(svc->cfg, "log.level"), em_config_str(svc->cfg, "log.level"));
        rc = 2;
    }
    if (rc < 0) {
        em_tls_opts_t t;
        const char *key = "tls.cert_file";
        em_service_tls_opts(svc->cfg, &t);
        if (em_tls_check(&t, &key, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: config refused: %s: key '%s': %s\n", desc->program, em_config_source(svc->cfg, key),
                    key, err);
            rc = 2;
        }
    }
    if (rc < 0 && check_security(svc->cfg, desc->program) != 0)
        rc = 2;
    if (rc < 0 && desc->validate && desc->validate(svc->cfg) != 0)
        rc = 2;
    if (rc >= 0 || check_only) {
        if (rc < 0) {
            printf("%s: configuration OK\n", desc->program);
            rc = 0;
        }
        em_config_destroy(svc->cfg);
        svc->cfg = NULL;
        return rc;
    }

    const char *rep = em_config_str(svc->cfg, "replica");
    if (*rep)
        snprintf(svc->replica, sizeof(svc->replica), "%s", rep);
    else
        em_default_replica(desc->name, svc->replica, sizeof(svc->replica));
    em_log_init(desc->name, svc->replica, (em_log_level_t)level);

    /* Before any library starts a thread: those threads inherit the mask, so
     * these signals reach only our sigwait. */
    sigemptyset(&svc->sigs);
    sigaddset(&svc->sigs, SIGTERM);
    sigaddset(&svc->sigs, SIGINT);
    sigaddset(&svc->sigs, SIGUSR1);
    sigaddset(&svc->sigs, SIGUSR2);
    sigaddset(&svc->sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &svc->sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    em_log_bridge_grpc();
    em_config_log(svc->cfg);
    svc->health = em_health_new();
    svc->metrics = em_metrics_new();
    svc->timers = em_timers_new();
    svc->loop = em_rpc_loop_new();
    if (!svc->health || !svc->metrics || !svc->timers || !svc->loop) {
        EM_ERROR("out of memory at start");
        return 1;
    }
    em_rpc_server_opts_t so = {
        .listen = em_config_str(svc->cfg, "grpc.listen"),
        .max_message_bytes = (int)em_config_int(svc->cfg, "grpc.max_message_bytes"),
        .max_connection_age_ms = (int)em_config_int(svc->cfg, "grpc.max_connection_age_ms"),
        /* 0: no grace limit. GOAWAY at the age, but a call open on the
         * connection runs to its end: an Execute may hold a long execution,
         * and cutting it would only run it again elsewhere */
        .max_connection_age_grace_ms = 0,
        .min_ping_interval_ms = 500,
    };
    em_service_tls_opts(svc->cfg, &so.tls);
    svc->server = em_rpc_server_new(svc->loop, svc->health, &so, err, sizeof(err));
    if (!svc->server) {
        EM_ERROR("cannot create the gRPC server", EM_F_STR("error", err));
        return 1;
    }
    if (em_metrics_admin(svc->metrics, em_config_bool(svc->cfg, "admin.enabled"),
                         em_config_str(svc->cfg, "admin.token_file")) != EM_OK) {
        EM_ERROR("cannot set up the admin endpoint");
        return 1;
    }
    svc->live_stall_ms = em_config_int(svc->cfg, "liveness.stall_ms");
    em_metrics_route(svc->metrics, "GET", "/livez", on_livez, svc);
    em_metrics_route(svc->metrics, "POST", "/admin/drain", on_drain, svc);
    em_metrics_build_info(svc->metrics, EM_VERSION, rd_kafka_version_str(), grpc_version_string());
    em_metrics_collector(svc->metrics, collect_state, svc);
    return -1;
}

/* ---- liveness: GET /livez ---------------------------------------------- */

int em_live_verdict(int64_t now, const char *const *names, const int64_t *turned, int n, int64_t stall_ms,
                    char *out, size_t outn) {
    for (int i = 0; i < n; i++) {
        if (turned[i] && now - turned[i] > stall_ms) {
            snprintf(out, outn, "not live: the %s loop has not turned for %lld ms (liveness.stall_ms %lld)\n",
                     names[i], (long long)(now - turned[i]), (long long)stall_ms);
            return 503;
        }
    }
    snprintf(out, outn, "live\n");
    return 200;
}

void em_service_live_source(em_service_t *svc, const char *name, int64_t (*turned_ms)(void *ctx), void *ctx) {
    if (svc->nlive < (int)EM_ARRAY_LEN(svc->live))
        svc->live[svc->nlive++] = (struct em_live_source){name, turned_ms, ctx};
}

static int on_livez(void *ctx, const char *rest, char *out, size_t n) {
    em_service_t *svc = ctx;
    const char *names[1 + EM_ARRAY_LEN(svc->live)];
    int64_t turned[1 + EM_ARRAY_LEN(svc->live)];
    int k = 0;
    if (rest[0]) {
        snprintf(out, n, "not found: try /livez\n");
        return 404;
    }
    if (atomic_load(&svc->draining)) { /* a drain has deadlines of its own; a restart would only cut it */
        snprintf(out, n, "live (draining)\n");
        return 200;
    }
    names[k] = "gRPC";
    turned[k++] = em_rpc_loop_turned_ms(svc->loop);
    for (int i = 0; i < svc->nlive; i++) {
        names[k] = svc->live[i].name;
        turned[k++] = svc->live[i].turned_ms(svc->live[i].ctx);
    }
    return em_live_verdict(em_mono_ms(), names, turned, k, svc->live_stall_ms, out, n);
}

void em_service_work_source(em_service_t *svc, int (*holds_work)(void *ctx), void *ctx) {
    svc->holds_work = holds_work;
    svc->holds_work_ctx = ctx;
}

em_err_t em_service_allow(em_service_t *svc, const char *service, const char *method, const char *list_key) {
    size_t n = em_config_list_len(svc->cfg, list_key);
    const char **ids = calloc(n ? n : 1, sizeof(char *));
    if (!ids)
        return EM_ENOMEM;
    for (size_t i = 0; i < n; i++)
        ids[i] = em_config_list_get(svc->cfg, list_key, i);
    em_err_t rc = em_rpc_server_allow(svc->server, service, method, ids, n);
    free(ids);
    if (rc != EM_OK)
        EM_ERROR("cannot set who may call a method", EM_F_STR("service", service), EM_F_STR("method", method));
    return rc;
}

void em_service_tls_opts(const em_config_t *cfg, em_tls_opts_t *t) {
    t->cert_file = em_config_str(cfg, "tls.cert_file");
    t->key_file = em_config_str(cfg, "tls.key_file");
    t->ca_file = em_config_str(cfg, "tls.ca_file");
    t->refresh_s = (int)em_config_int(cfg, "tls.refresh_s");
    t->server_name = em_config_str(cfg, "tls.server_name");
}

void em_service_channel_opts(const em_service_t *svc, struct em_rpc_channel_opts *o) {
    memset(o, 0, sizeof(*o));
    em_service_tls_opts(svc->cfg, &o->tls);
    o->keepalive_time_ms = (int)em_config_int(svc->cfg, "grpc.keepalive_time_ms");
    o->keepalive_timeout_ms = (int)em_config_int(svc->cfg, "grpc.keepalive_timeout_ms");
    o->reconnect_max_ms = (int)em_config_int(svc->cfg, "grpc.reconnect_max_ms");
    o->reconnect_min_ms = 200;
    if (o->reconnect_min_ms > o->reconnect_max_ms)
        o->reconnect_min_ms = o->reconnect_max_ms;
    o->retry_max_attempts = (int)em_config_int(svc->cfg, "grpc.retry_max_attempts");
    o->max_message_bytes = (int)em_config_int(svc->cfg, "grpc.max_message_bytes");
    o->dns_min_resolution_ms = 1000;
    o->no_health_check = 0;
    o->fail_fast = 0;
}

em_err_t em_service_start(em_service_t *svc) {
    char err[512];
    if (em_rpc_loop_start(svc->loop) != EM_OK) {
        EM_ERROR("cannot start the gRPC loop thread");
        return EM_ENOMEM;
    }
    if (em_rpc_server_start(svc->server, &svc->grpc_port, err, sizeof(err)) != EM_OK) {
        EM_ERROR("cannot start the gRPC server", EM_F_STR("error", err));
        return EM_EIO;
    }
    if (em_metrics_start(svc->metrics, em_config_str(svc->cfg, "metrics.listen"), &svc->metrics_port, err,
                         sizeof(err)) != EM_OK) {
        EM_ERROR("cannot start the metrics endpoint", EM_F_STR("error", err));
        return EM_EIO;
    }
    char host[256], mhost[256];
    int port;
    em_parse_hostport(em_config_str(svc->cfg, "grpc.listen"), host, sizeof(host), &port, err, sizeof(err));
    em_parse_hostport(em_config_str(svc->cfg, "metrics.listen"), mhost, sizeof(mhost), &port, err, sizeof(err));
    EM_INFO("listening", EM_F_STR("grpc_host", host), EM_F_INT("grpc_port", svc->grpc_port),
            EM_F_STR("metrics_host", mhost), EM_F_INT("metrics_port", svc->metrics_port));
    const char *pf = em_config_str(svc->cfg, "ports_file");
    if (*pf) {
        char buf[1024];
        int n = snprintf(buf, sizeof(buf), "grpc=%s:%d\nmetrics=%s:%d\npid=%d\n", host, svc->grpc_port, mhost,
                         svc->metrics_port, (int)getpid());
        if (em_write_file_atomic(pf, buf, (size_t)n) != EM_OK) {
            EM_ERROR("cannot write the ports file", EM_F_STR("path", pf));
            return EM_EIO;
        }
    }
    return EM_OK;
}

static const char *stop_signal_name(int sig) { return sig == SIGTERM ? "SIGTERM" : "SIGINT"; }

/* Runs from the first SIGTERM/SIGINT until em_service_cleanup: a second one
 * ends the process at once, whatever the drain is waiting for. The signals
 * stay blocked in every thread, so this sigwait is the only taker. */
static void *second_signal_main(void *arg) {
    em_service_t *svc = arg;
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    for (;;) {
        int sig = 0;
        if (sigwait(&stop, &sig) != 0)
            continue;
        if (atomic_load(&svc->second_signal_stop))
            return NULL; /* em_service_cleanup's wake-up (or a signal racing it: we exit anyway) */
        EM_ERROR("second signal during the drain: exiting now without finishing in-flight work",
                 EM_F_STR("signal", stop_signal_name(sig)), EM_F_INT("exit_code", 128 + sig));
        /* _exit, not exit: the drain still runs on other threads, and atexit
         * work would race it */
        _exit(128 + sig);
    }
}

int em_service_wait(em_service_t *svc) {
    for (;;) {
        int sig = 0;
        if (sigwait(&svc->sigs, &sig) != 0)
            continue;
        switch (sig) {
        case SIGTERM:
        case SIGINT:
            EM_INFO("signal received, draining", EM_F_STR("signal", stop_signal_name(sig)));
            if (!svc->second_signal_started) {
                int rc = pthread_create(&svc->second_signal, NULL, second_signal_main, svc);
                if (rc == 0)
                    svc->second_signal_started = 1;
                else
                    EM_WARN("cannot start the thread that takes a second signal; only SIGKILL cuts the drain short",
                            EM_F_STR("error", strerror(rc)));
            }
            return sig;
        case SIGUSR1:
            EM_INFO("SIGUSR1: admin NOT_SERVING");
            em_health_block(svc->health, "admin", 1);
            break;
        case SIGUSR2:
            EM_INFO("SIGUSR2: admin block cleared");
            em_health_block(svc->health, "admin", 0);
            break;
        default: EM_INFO("signal ignored", EM_F_INT("signal", sig)); break;
        }
    }
}

int64_t em_service_drain_begin(em_service_t *svc) {
    int64_t start = em_mono_ms();
    atomic_store(&svc->draining, 1);
    em_health_block(svc->health, EM_HEALTH_DRAINING, 1);
    int64_t ns = em_config_int(svc->cfg, "drain.notserving_ms");
    if (ns > 0) {
        struct timespec ts = {.tv_sec = ns / 1000, .tv_nsec = (ns % 1000) * 1000000};
        nanosleep(&ts, NULL); /* a deliberate pause: clients' health watches see NOT_SERVING first */
    }
    return start + ns + em_config_int(svc->cfg, "drain.timeout_ms");
}

void em_service_cleanup(em_service_t *svc) {
    if (svc->second_signal_started) {
        /* the drain is over: a late signal no longer cuts anything short */
        atomic_store(&svc->second_signal_stop, 1);
        pthread_kill(svc->second_signal, SIGTERM); /* blocked there: its sigwait takes it */
        pthread_join(svc->second_signal, NULL);
    }
    /* timers first: an early-run timer may still answer a call on the loop */
    if (svc->timers)
        em_timers_destroy(svc->timers);
    if (svc->server)
        em_rpc_server_destroy(svc->server);
    if (svc->loop)
        em_rpc_loop_destroy(svc->loop);
    em_metrics_destroy(svc->metrics);
    em_health_destroy(svc->health);
    em_config_destroy(svc->cfg);
    memset(svc, 0, sizeof(*svc));
}
