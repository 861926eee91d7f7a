/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execmesh-devkafka: librdkafka's mock cluster in a process of its own, the
 * embedded default Kafka for local runs and fault injection. The services
 * reach it over TCP exactly as they reach a real cluster. Prints
 * "bootstrap=HOST:PORT,..." as its first line on stdout, creates the mesh's
 * topics, serves health (SERVING once the cluster is up) and runs until
 * SIGTERM. Faults a real broker cannot do are injected over HTTP on the
 * metrics port (see admin_brokers, admin_rtt).
 *
 * The mock keeps only 5 MiB (and 100k message sets) per partition: use many
 * partitions for big runs, and the real broker for big backlogs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "em_log.h"
#include "em_service.h"
#include "em_util.h"

static const em_setting_t devkafka_settings[] = {
    EM_SERVICE_SETTINGS("127.0.0.1:7400", "127.0.0.1:9400"),
    {"devkafka.brokers", EM_CFG_INT, "1", 1, 9, "Mock brokers in the cluster."},
    {"devkafka.partitions", EM_CFG_INT, "6", 1, 10000, "Partitions of each topic created at start."},
    {"devkafka.topics", EM_CFG_STRLIST, "execmesh.requests,execmesh.results,execmesh.dead,execmesh.delay,execmesh.cancels", 0, 64,
     "Topics created at start; NAME:PARTITIONS overrides devkafka.partitions for one topic."},
    {"devkafka.bootstrap_file", EM_CFG_STR, "", 0, 4095,
     "If set, the bootstrap servers are also written to this file (one line)."},
    {"devkafka.group_initial_rebalance_delay_ms", EM_CFG_INT, "0", 0, 300000,
     "The brokers' group.initial.rebalance.delay.ms: how long an empty consumer group waits for more "
     "members before its first assignment. 0 as scripts/kafka.sh's test broker (the mock's own default is "
     "3000: every fresh group, so every test's mesh, waited 3 s for its first partitions)."},
};

static const em_flag_alias_t devkafka_aliases[] = {
    {"partitions", "devkafka.partitions"},
    {"brokers", "devkafka.brokers"},
    {"bootstrap-file", "devkafka.bootstrap_file"},
    {NULL, NULL},
};

static const em_service_desc_t devkafka_desc = {
    .name = "devkafka",
    .program = "execmesh-devkafka",
    .summary = "librdkafka's mock Kafka cluster as a process (the embedded default Kafka)",
    .settings = devkafka_settings,
    .nsettings = EM_ARRAY_LEN(devkafka_settings),
    .aliases = devkafka_aliases,
};

/* The fault API, on the metrics port (faults a real broker cannot do):
 *   POST /admin/brokers/down     every broker refuses connections
 *   POST /admin/brokers/up       and back
 *   POST /admin/rtt/<ms>         every broker answers <ms> late (0: normal) */
typedef struct devkafka {
    rd_kafka_mock_cluster_t *mc;
    int brokers;
} devkafka_t;

static int admin_brokers(void *ctx, const char *rest, char *out, size_t n) {
    devkafka_t *d = ctx;
    int down;
    if (strcmp(rest, "down") == 0)
        down = 1;
    else if (strcmp(rest, "up") == 0)
        down = 0;
    else {
        snprintf(out, n, "unknown action '%s': use /admin/brokers/down or /admin/brokers/up\n", rest);
        return 404;
    }
    for (int id = 1; id <= d->brokers; id++) {
        rd_kafka_resp_err_t e = down ? rd_kafka_mock_broker_set_down(d->mc, id) : rd_kafka_mock_broker_set_up(d->mc, id);
        if (e) {
            snprintf(out, n, "broker %d: %s\n", id, rd_kafka_err2str(e));
            return 500;
        }
    }
    EM_WARN(down ? "fault: brokers down" : "fault healed: brokers up", EM_F_INT("brokers", d->brokers));
    snprintf(out, n, "brokers %s\n", down ? "down" : "up");
    return 200;
}

static int admin_rtt(void *ctx, const char *rest, char *out, size_t n) {
    devkafka_t *d = ctx;
    char *end;
    long ms = strtol(rest, &end, 10);
    if (end == rest || *end || ms < 0 || ms > 600000) {
        snprintf(out, n, "'%s' is not a number of milliseconds (0..600000)\n", rest);
        return 400;
    }
    for (int id = 1; id <= d->brokers; id++)
        rd_kafka_mock_broker_set_rtt(d->mc, id, (int)ms);
    EM_WARN("fault: broker round-trip time set", EM_F_INT("rtt_ms", ms));
    snprintf(out, n, "rtt %ld ms\n", ms);
    return 200;
}

/* The mock brokers answer on sockets without TCP_NODELAY: a response
 * written behind another one waits for the client's delayed ACK (~40 ms),
 * so a Produce spread over many partitions (one request per partition)
 * took 40-50 ms on the mock against 2-3 ms for one partition. Linux
 * hands TCP_NODELAY from a listening socket to the sockets it accepts, so
 * set it on the mock's listeners, found among our own descriptors. */
static int nodelay_on_listeners(void) {
    int n = 0;
    for (int fd = 0; fd < 4096; fd++) {
        int listening = 0, type = 0;
        socklen_t len = sizeof(listening);
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening)
            continue;
        len = sizeof(type);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
            continue;
        struct sockaddr_storage sa;
        len = sizeof(sa);
        if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0 || sa.ss_family != AF_INET)
            continue;
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0)
            n++;
    }
    return n;
}

int main(int argc, char **argv) {
    em_service_t svc;
    static devkafka_t dk;
    char err[512];
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    int rc = em_service_init(&svc, &devkafka_desc, argc, argv);
    if (rc >= 0)
        return rc;
    const em_config_t *cfg = svc.cfg;
    rc = 1;

    /* the cluster: a mock needs a client handle to live in */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, em_log_rdkafka_cb);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        EM_ERROR("cannot create the client handle", EM_F_STR("error", err));
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    int brokers = (int)em_config_int(cfg, "devkafka.brokers");
    mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        EM_ERROR("cannot create the mock cluster");
        goto out;
    }
    rd_kafka_mock_group_initial_rebalance_delay_ms(
        mc, (int32_t)em_config_int(cfg, "devkafka.group_initial_rebalance_delay_ms"));
    int partitions = (int)em_config_int(cfg, "devkafka.partitions");
    for (size_t i = 0; i < em_config_list_len(cfg, "devkafka.topics"); i++) {
        char t[256];
        snprintf(t, sizeof(t), "%s", em_config_list_get(cfg, "devkafka.topics", i));
        int np = partitions;
        char *colon = strchr(t, ':');
        if (colon) {
            *colon = '\0';
            np = atoi(colon + 1);
            if (np < 1 || np > 100000) {
                fprintf(stderr, "execmesh-devkafka: config refused: %s: key 'devkafka.topics': '%s' needs NAME:PARTITIONS "
                        "with 1..100000 partitions\n", em_config_source(cfg, "devkafka.topics"),
                        em_config_list_get(cfg, "devkafka.topics", i));
                rc = 2;
                goto out;
            }
        }
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, t, np, brokers < 3 ? brokers : 3);
        if (e) {
            EM_ERROR("cannot create topic", EM_F_STR("topic", t), EM_F_STR("error", rd_kafka_err2str(e)));
            goto out;
        }
    }
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    int nodelay = nodelay_on_listeners(); /* before the gRPC and HTTP listeners exist */
    dk.mc = mc;
    dk.brokers = brokers;
    em_metrics_route(svc.metrics, "POST", "/admin/brokers/", admin_brokers, &dk);
    em_metrics_route(svc.metrics, "POST", "/admin/rtt/", admin_rtt, &dk);

    if (em_service_start(&svc) != EM_OK)
        goto out;
    const char *bf = em_config_str(cfg, "devkafka.bootstrap_file");
    if (*bf) {
        char line[1024];
        int n = snprintf(line, sizeof(line), "%s\n", bootstrap);
        if (em_write_file_atomic(bf, line, (size_t)n) != EM_OK) {
            EM_ERROR("cannot write the bootstrap file", EM_F_STR("path", bf));
            goto out;
        }
    }
    printf("bootstrap=%s\n", bootstrap);
    fflush(stdout);
    EM_INFO("mock cluster up", EM_F_STR("bootstrap", bootstrap), EM_F_INT("brokers", brokers),
            EM_F_INT("partitions", partitions), EM_F_INT("nodelay_listeners", nodelay));
    em_health_block(svc.health, EM_HEALTH_STARTING, 0);
    em_service_wait(&svc);
    em_health_block(svc.health, EM_HEALTH_DRAINING, 1);
    rc = 0;
out:
    em_rpc_server_shutdown(svc.server, em_mono_ms() + 1000);
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    if (rk)
        rd_kafka_destroy(rk);
    EM_INFO("stopped", EM_F_INT("exit_code", rc));
    em_service_cleanup(&svc);
    return rc;
}
