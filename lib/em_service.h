/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What every execmesh executable does the same way, so each main.c reads
 * like a table of contents: the command line (--help, --version, --config,
 * --set, --ports-file, --check-config, --print-config-reference), the
 * config file, JSON logs, signals (blocked before any library starts a
 * thread, then taken by sigwait), the gRPC loop and server with health, the
 * /metrics endpoint, the ports file, and the first steps of a drain.
 *
 * Signals: SIGTERM/SIGINT drain and exit 0; a second SIGTERM/SIGINT during
 * the drain ends the process at once with 128 + that signal (an operator
 * who does not want to wait for a stuck drain); SIGUSR1 sets the health
 * blocker "admin" (NOT_SERVING), SIGUSR2 clears it.
 */
#ifndef EM_SERVICE_H
#define EM_SERVICE_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include "em_config.h"
#include "em_error.h"
#include "em_health.h"
#include "em_log.h"
#include "em_metrics.h"
#include "em_rpc.h"
#include "em_rpc_server.h"
#include "em_timer.h"

/* Mutual TLS of the gRPC ports and channels (em_tls); execmeshctl takes them too. */
#define EM_TLS_SETTINGS                                                                                        \
    {"tls.cert_file", EM_CFG_STR, "", 0, 4095,                                                                 \
     "PEM certificate (chain) of this replica. With tls.key_file and tls.ca_file: mutual TLS on the gRPC "     \
     "port (clients must present a certificate signed by tls.ca_file) and on this service's channels to the "  \
     "others (they present this one and verify theirs, host name included). All three or none."},            \
    {"tls.key_file", EM_CFG_STR, "", 0, 4095, "PEM private key of tls.cert_file."},                            \
    {"tls.ca_file", EM_CFG_STR, "", 0, 4095, "PEM bundle of the CAs a peer's certificate must chain to."},     \
    {"tls.server_name", EM_CFG_STR, "", 0, 253,                                                                \
     "Channels with TLS: the name the servers' certificates must carry; empty: the host of the target "        \
     "(a dns:/// name, or an address). Needed for targets listing several addresses (ipv4:A:P,B:P)."},        \
    {"tls.refresh_s", EM_CFG_INT, "5", 1, 86400,                                                               \
     "The three files are read again this often: new connections then present the new certificate and "     \
     "trust the new bundle, without a restart (rotation; connections open keep theirs)."}

/* Settings every service has; grpc/metrics are the default listen addresses. */
#define EM_SERVICE_SETTINGS(grpc, metrics)                                                                   \
    {"replica", EM_CFG_STR, "", 0, 120, "Replica name in logs, results and client ids; empty: service-host-pid."}, \
    {"log.level", EM_CFG_STR, "info", 0, 0, "Lowest level logged: debug, info, warn, error."},                  \
    {"grpc.listen", EM_CFG_STR, grpc, 1, 255, "gRPC listen address HOST:PORT; port 0 picks a free port."},    \
    {"grpc.max_message_bytes", EM_CFG_INT, "16777216", 65536, 268435456, "Largest gRPC message sent or received."}, \
    {"grpc.max_connection_age_ms", EM_CFG_INT, "30000", 1000, 86400000,                                      \
     "Connections get a GOAWAY after this long, so clients re-resolve DNS and rebalance; the calls open on "    \
     "the connection run to their end (no grace limit), so a long execution is never cut by connection age."}, \
    {"grpc.keepalive_time_ms", EM_CFG_INT, "1000", 100, 3600000,                                               \
     "Client keepalive ping interval; a frozen peer is found within about twice this."},                    \
    {"grpc.keepalive_timeout_ms", EM_CFG_INT, "1000", 100, 3600000, "How long a keepalive ping may go unanswered."}, \
    {"grpc.reconnect_max_ms", EM_CFG_INT, "1000", 100, 120000, "Longest wait between reconnect attempts to a replica."}, \
    {"grpc.retry_max_attempts", EM_CFG_INT, "3", 1, 5, "gRPC retry policy attempts for UNAVAILABLE (1 disables; gRPC caps at 5)."}, \
    {"metrics.listen", EM_CFG_STR, metrics, 1, 255, "Prometheus /metrics listen address HOST:PORT; port 0 picks a free port."}, \
    EM_TLS_SETTINGS,                                                                                           \
    {"security.allow_plaintext", EM_CFG_BOOL, "false", 0, 0,                                                  \
     "Allow a gRPC listener on a non-loopback address without TLS (tls.*): anyone who reaches the port could "  \
     "then call it. Off: such a service refuses to start."},                                                   \
    {"admin.enabled", EM_CFG_BOOL, "false", 0, 0,                                                               \
     "Serve the admin actions on the metrics port (POST routes: /admin/drain on every service, the "          \
     "scheduler's /admin/pause and /admin/resume). Off: they answer 403 and the port serves reads only (GET /metrics, /livez). On: "       \
     "every admin request needs the bearer token of admin.token_file."},                                      \
    {"admin.token_file", EM_CFG_STR, "", 0, 4095,                                                               \
     "File holding the token admin requests present (Authorization: Bearer TOKEN; 16 to 4095 bytes, "         \
     "trailing newline ignored). Read at each request: replacing the file rotates the token. Required by "    \
     "admin.enabled."},                                                                                         \
    {"ports_file", EM_CFG_STR, "", 0, 4095, "If set, the bound ports are written here (grpc=, metrics=, pid= lines) once serving starts."}, \
    {"drain.notserving_ms", EM_CFG_INT, "200", 0, 60000,                                                        \
     "On SIGTERM: NOT_SERVING this long before refusing new calls, so clients move away first."},           \
    {"drain.timeout_ms", EM_CFG_INT, "20000", 0, 600000, "On SIGTERM: longest wait for in-flight work before it is cancelled."}, \
    {"liveness.stall_ms", EM_CFG_INT, "10000", 1000, 600000,                                                    \
     "GET /livez on the metrics port answers 200 while the process's loops turn (the gRPC loop, and the "      \
     "scheduler's consumer loop), 503 naming the loop that has not turned for this long. It does not follow "   \
     "health: a broker outage makes a service NOT_SERVING but not dead (the Kubernetes liveness probe)."}

/* "--flag VALUE" as a short form of "--set key=VALUE". */
typedef struct em_flag_alias {
    const char *flag; /* without the dashes */
    const char *key;
} em_flag_alias_t;

typedef struct em_service_desc {
    const char *name;    /* "scheduler" */
    const char *program; /* "execmesh-scheduler" */
    const char *summary; /* one line for --help */
    const em_setting_t *settings;
    size_t nsettings;
    const em_flag_alias_t *aliases; /* NULL-terminated by a zero entry, or NULL */
    /* Checks the table cannot express (a file that must exist, names that
     * must agree), run after the config loaded, also for --check-config;
     * non-zero refuses it (the hook printed why, naming file, line and key).
     * NULL: none. */
    int (*validate)(const em_config_t *cfg);
} em_service_desc_t;

typedef struct em_service {
    const em_service_desc_t *desc;
    em_config_t *cfg;
    char replica[128];
    em_health_t *health;
    em_metrics_t *metrics;
    em_rpc_loop_t *loop;
    em_rpc_server_t *server;
    em_timers_t *timers;
    int grpc_port;
    int metrics_port;
    int64_t live_stall_ms;      /* liveness.stall_ms */
    atomic_int draining;        /* SIGTERM taken: the drain is bounded by its own deadlines, /livez says live */
    struct em_live_source {     /* loops /livez watches besides the gRPC loop */
        const char *name;
        int64_t (*turned_ms)(void *ctx); /* monotonic ms of its last turn; 0: not started */
        void *ctx;
    } live[4];
    int nlive;
    /* the service's own answer to "does it hold work a stop would
     * disrupt?" (execmesh_safe_to_stop); NULL: never */
    int (*holds_work)(void *ctx);
    void *holds_work_ctx;
    sigset_t sigs;
    /* After the first SIGTERM/SIGINT: the thread that waits for a second */
    pthread_t second_signal;
    int second_signal_started;
    atomic_int second_signal_stop;
} em_service_t;

/* Parses argv, loads the config, starts logging and builds health, metrics,
 * timers, the rpc loop and the (not yet listening) server. Returns -1 when
 * the service should go on, or the exit code to return now (0 after --help,
 * --version, --check-config; 2 for usage and config errors, with the reason
 * on stderr). */
int em_service_init(em_service_t *svc, const em_service_desc_t *desc, int argc, char **argv);

/* Adds a loop /livez watches (before em_service_start): turned_ms(ctx)
 * gives its last turn (monotonic ms, 0 while it has not started). */
void em_service_live_source(em_service_t *svc, const char *name, int64_t (*turned_ms)(void *ctx), void *ctx);

/* Tells em_service what holds_work(ctx) answers: non-zero while the
 * replica holds work (executions in flight, waiting, results unstored).
 * execmesh_safe_to_stop is 1 when it holds none; with a drain under way
 * that means the drain may be cut short by a stop without losing or
 * redoing anything. */
void em_service_work_source(em_service_t *svc, int (*holds_work)(void *ctx), void *ctx);

/* The verdict /livez gives at now: 200, or 503 with the loop that has not
 * turned for more than stall_ms named in out. turned[i] of names[i]; 0
 * (not started) counts as turning. */
int em_live_verdict(int64_t now, const char *const *names, const int64_t *turned, int n, int64_t stall_ms,
                    char *out, size_t outn);

/* With TLS on, only the identities listed under list_key (a list setting of
 * the service's table) may call service/method: em_rpc_server_allow.
 * Before em_service_start. */
em_err_t em_service_allow(em_service_t *svc, const char *service, const char *method, const char *list_key);

/* The tls.* settings of cfg (strings borrowed from cfg). */
void em_service_tls_opts(const em_config_t *cfg, em_tls_opts_t *t);
/* Client channel options from the common settings, TLS included. */
struct em_rpc_channel_opts;
void em_service_channel_opts(const em_service_t *svc, struct em_rpc_channel_opts *o);

/* Starts the loop, the gRPC server and /metrics, writes the ports file.
 * Health stays blocked by "starting" until em_health_block(.., "starting", 0). */
em_err_t em_service_start(em_service_t *svc);

/* Waits for SIGTERM or SIGINT (handling SIGUSR1/2 meanwhile); returns it.
 * From then on a thread waits for a second SIGTERM/SIGINT: it logs an error
 * and ends the process at once (_exit(128 + signal): no drain, no cleanup,
 * in-flight work abandoned) until em_service_cleanup stops it. */
int em_service_wait(em_service_t *svc);

/* Drain, step 1: NOT_SERVING now, then wait drain.notserving_ms so
 * health-checking clients stop picking this replica. Returns the deadline
 * (monotonic ms) for the rest of the drain. */
int64_t em_service_drain_begin(em_service_t *svc);

/* Frees what em_service_init built (server shut down first if running). */
void em_service_cleanup(em_service_t *svc);

#endif
