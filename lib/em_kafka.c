/* SPDX-License-Identifier: Apache-2.0 */
/* librdkafka configuration building (security settings included) and error mapping. */
#include "em_kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "em_config.h"
#include "em_log.h"
#include "em_util.h"

/* The headers must be those of the librdkafka CMake found and links
 * (cmake/Rdkafka.cmake): Debian's /usr/include/librdkafka may not win over
 * the EM_LIBRDKAFKA prefix. */
#ifdef EM_RDKAFKA_CONFIGURED_VERSION
#if RD_KAFKA_VERSION != EM_RDKAFKA_CONFIGURED_VERSION
#error "rdkafka.h is not the librdkafka version CMake configured (EM_LIBRDKAFKA): check the include order"
#endif
#endif

static int set_prop(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr, size_t n) {
    char e[512];
    if (rd_kafka_conf_set(conf, k, v, e, sizeof(e)) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, n, "kafka property %s=%s: %s", k, v, e);
        return -1;
    }
    return 0;
}

/* ---- the security settings --------------------------------------------- */

/* The pseudo-property em_kafka_security_props passes the password file in. */
#define PASSWORD_FILE_PROP "execmesh.sasl.password_file"
/* The longest password file taken (bytes, a final newline included). */
#define PASSWORD_MAX 1024

/* Strings that live as long as the process: the security properties handed
 * out as "key=value" (reachable from here, so no leak report). The same
 * string is handed out once. */
typedef struct pooled {
    struct pooled *next;
    char s[];
} pooled_t;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pooled_t *pool;

static const char *pool_printf(const char *fmt, ...) {
    char buf[4200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&pool_lock);
    pooled_t *p = pool;
    while (p && strcmp(p->s, buf) != 0)
        p = p->next;
    if (!p) {
        size_t len = strlen(buf);
        p = malloc(sizeof(*p) + len + 1);
        if (p) {
            memcpy(p->s, buf, len + 1);
            p->next = pool;
            pool = p;
        }
    }
    pthread_mutex_unlock(&pool_lock);
    return p ? p->s : NULL;
}

typedef enum { PROTO_BAD = -1, PROTO_PLAINTEXT, PROTO_SSL, PROTO_SASL_PLAINTEXT, PROTO_SASL_SSL } proto_t;
static const char *const proto_names[] = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"};
static const char *const proto_rdkafka[] = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"};

static proto_t proto_of(const char *v) {
    for (size_t i = 0; i < EM_ARRAY_LEN(proto_names); i++)
        if (strcasecmp(v, proto_names[i]) == 0)
            return (proto_t)i;
    return PROTO_BAD;
}
static int proto_tls(proto_t p) { return p == PROTO_SSL || p == PROTO_SASL_SSL; }
static int proto_sasl(proto_t p) { return p == PROTO_SASL_PLAINTEXT || p == PROTO_SASL_SSL; }

/* The mechanism's canonical name, or NULL for one not supported. */
static const char *mechanism_of(const char *v) {
    static const char *const names[] = {"SCRAM-SHA-256", "SCRAM-SHA-512"};
    for (size_t i = 0; i < EM_ARRAY_LEN(names); i++)
        if (strcasecmp(v, names[i]) == 0)
            return names[i];
    return NULL;
}

/* Opens path for reading, a regular file with at least one byte. The fd, or
 * -1 with why ("cannot read FILE: REASON", "FILE is empty"). */
static int open_nonempty(const char *path, char *why, size_t whyn) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(why, whyn, "cannot read %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, whyn, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size == 0) {
        snprintf(why, whyn, "%s is empty", path);
        close(fd);
        return -1;
    }
    return fd;
}

/* The password in path: the file's one line, a final "\n" or "\r\n"
 * dropped. 0 with it in buf (PASSWORD_MAX + 1 bytes), or -1 with why. */
static int read_password(const char *path, char *buf, char *why, size_t whyn) {
    int fd = open_nonempty(path, why, whyn);
    if (fd < 0)
        return -1;
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, PASSWORD_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(why, whyn, "cannot read %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (r == 0 || (n += (size_t)r) > PASSWORD_MAX)
            break;
    }
    close(fd);
    if (n > PASSWORD_MAX) {
        snprintf(why, whyn, "%s holds more than %d bytes: not a password file", path, PASSWORD_MAX);
        goto refuse;
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    if (n == 0) {
        snprintf(why, whyn, "%s holds an empty password", path);
        goto refuse;
    }
    if (strlen(buf) != n || strpbrk(buf, "\r\n")) {
        snprintf(why, whyn, "%s holds more than one line (or a NUL byte): it must hold the password alone", path);
        goto refuse;
    }
    return 0;
refuse:
    explicit_bzero(buf, PASSWORD_MAX + 1);
    return -1;
}

size_t em_kafka_security_props(const em_config_t *cfg, const char *props[EM_KAFKA_MAX_SECURITY]) {
    size_t n = 0;
    proto_t proto = proto_of(em_config_str(cfg, "kafka.security.protocol"));
    const char *v;
#define ADD(...)                                                                                                     \
    do {                                                                                                             \
        const char *s_ = pool_printf(__VA_ARGS__);                                                                   \
        if (s_ && n < EM_KAFKA_MAX_SECURITY)                                                                         \
            props[n++] = s_;                                                                                         \
    } while (0)
    if (proto == PROTO_BAD)
        ADD("security.protocol=%s", em_config_str(cfg, "kafka.security.protocol"));
    else
        ADD("security.protocol=%s", proto_rdkafka[proto]);
    if (*(v = em_config_str(cfg, "kafka.ssl.ca_file")))
        ADD("ssl.ca.location=%s", v);
    if (*(v = em_config_str(cfg, "kafka.ssl.cert_file")))
        ADD("ssl.certificate.location=%s", v);
    if (*(v = em_config_str(cfg, "kafka.ssl.key_file")))
        ADD("ssl.key.location=%s", v);
    if (*(v = em_config_str(cfg, "kafka.sasl.mechanism")))
        ADD("sasl.mechanism=%s", mechanism_of(v) ? mechanism_of(v) : v);
    if (*(v = em_config_str(cfg, "kafka.sasl.username")))
        ADD("sasl.username=%s", v);
    if (*(v = em_config_str(cfg, "kafka.sasl.password_file")))
        ADD(PASSWORD_FILE_PROP "=%s", v);
#undef ADD
    return n;
}

#define REFUSE(k, ...)                                                                                               \
    do {                                                                                                             \
        *key = (k);                                                                                                  \
        snprintf(errstr, errstr_size, __VA_ARGS__);                                                                  \
        return -1;                                                                                                   \
    } while (0)

int em_kafka_security_check(const em_config_t *cfg, const char **key, char *errstr, size_t errstr_size) {
    static const char *const ssl_keys[] = {"kafka.ssl.ca_file", "kafka.ssl.cert_file", "kafka.ssl.key_file"};
    static const char *const sasl_keys[] = {"kafka.sasl.mechanism", "kafka.sasl.username", "kafka.sasl.password_file"};
    const char *pv = em_config_str(cfg, "kafka.security.protocol");
    proto_t proto = proto_of(pv);
    char why[600];
    if (proto == PROTO_BAD)
        REFUSE("kafka.security.protocol", "'%s': expected plaintext, ssl, sasl_plaintext or sasl_ssl", pv);
    for (size_t i = 0; i < EM_ARRAY_LEN(ssl_keys); i++)
        if (*em_config_str(cfg, ssl_keys[i]) && !proto_tls(proto))
            REFUSE(ssl_keys[i],
                   "set, but kafka.security.protocol is %s (no TLS): use ssl or sasl_ssl, or leave it empty",
                   proto_names[proto]);
    for (size_t i = 0; i < EM_ARRAY_LEN(sasl_keys); i++)
        if (*em_config_str(cfg, sasl_keys[i]) && !proto_sasl(proto))
            REFUSE(sasl_keys[i],
                   "set, but kafka.security.protocol is %s (no SASL): use sasl_ssl or sasl_plaintext, "
                   "or leave it empty",
                   proto_names[proto]);
    const char *cert = em_config_str(cfg, "kafka.ssl.cert_file"), *keyf = em_config_str(cfg, "kafka.ssl.key_file");
    if (*cert && !*keyf)
        REFUSE("kafka.ssl.key_file", "empty, but kafka.ssl.cert_file is set: a client certificate needs its key");
    if (*keyf && !*cert)
        REFUSE("kafka.ssl.cert_file", "empty, but kafka.ssl.key_file is set: a client key needs its certificate");
    for (size_t i = 0; i < EM_ARRAY_LEN(ssl_keys); i++) {
        const char *f = em_config_str(cfg, ssl_keys[i]);
        int fd = *f ? open_nonempty(f, why, sizeof(why)) : -2;
        if (fd == -1)
            REFUSE(ssl_keys[i], "%s", why);
        if (fd >= 0)
            close(fd);
    }
    if (proto_sasl(proto)) {
        const char *mech = em_config_str(cfg, "kafka.sasl.mechanism");
        if (!*mech)
            REFUSE("kafka.sasl.mechanism", "required with kafka.security.protocol %s: SCRAM-SHA-256 or SCRAM-SHA-512",
                   proto_names[proto]);
        if (!mechanism_of(mech))
            REFUSE("kafka.sasl.mechanism", "'%s': expected SCRAM-SHA-256 or SCRAM-SHA-512", mech);
        if (!*em_config_str(cfg, "kafka.sasl.username"))
            REFUSE("kafka.sasl.username", "required with kafka.sasl.mechanism %s", mechanism_of(mech));
        const char *pf = em_config_str(cfg, "kafka.sasl.password_file");
        if (!*pf)
            REFUSE("kafka.sasl.password_file", "required with kafka.sasl.mechanism %s (a file holding the password)",
                   mechanism_of(mech));
        char pw[PASSWORD_MAX + 1];
        if (read_password(pf, pw, why, sizeof(why)) != 0)
            REFUSE("kafka.sasl.password_file", "%s", why);
        explicit_bzero(pw, sizeof(pw));
    }
    return 0;
}

#undef REFUSE

int em_kafka_check_config(const em_config_t *cfg, const char *program) {
    /* the properties a key sets (sasl.password: the key names the file it belongs in) */
    static const struct {
        const char *prop, *key, *why;
    } owned[] = {{"sasl.password", "kafka.sasl.password_file", " (a password is never a config value)"},
                 {"sasl.mechanism", "kafka.sasl.mechanism", ""},
                 {"sasl.mechanisms", "kafka.sasl.mechanism", ""},
                 {"sasl.username", "kafka.sasl.username", ""},
                 {"ssl.ca.location", "kafka.ssl.ca_file", ""},
                 {"ssl.certificate.location", "kafka.ssl.cert_file", ""},
                 {"ssl.key.location", "kafka.ssl.key_file", ""},
                 {"security.protocol", "kafka.security.protocol", ""},
                 {"message.max.bytes", "kafka.max_message_bytes", " (every size limit of the mesh derives from it)"}};
    const char *key = NULL;
    char why[800];
    if (em_kafka_security_check(cfg, &key, why, sizeof(why)) != 0) {
        fprintf(stderr, "%s: config refused: %s: key '%s': %s\n", program, em_config_source(cfg, key), key, why);
        return -1;
    }
    size_t n = em_config_list_len(cfg, "kafka.properties");
    for (size_t i = 0; i < n; i++) {
        const char *prop = em_config_list_get(cfg, "kafka.properties", i);
        size_t kl = strcspn(prop, "=");
        while (kl > 0 && prop[kl - 1] == ' ')
            kl--;
        const char *val = prop[strcspn(prop, "=")] ? prop + strcspn(prop, "=") + 1 : "";
        while (*val == ' ')
            val++;
        for (size_t j = 0; j < EM_ARRAY_LEN(owned); j++) {
            if (kl != strlen(owned[j].prop) || strncmp(prop, owned[j].prop, kl) != 0)
                continue;
            if (strcmp(owned[j].prop, "security.protocol") == 0 &&
                strcasecmp(val, em_config_str(cfg, "kafka.security.protocol")) == 0)
                break; /* agreeing with the key: harmless (deploy/scheduler.cfg has one) */
            fprintf(stderr, "%s: config refused: %s: key 'kafka.properties': '%.*s': set %s instead%s\n", program,
                    em_config_source(cfg, "kafka.properties"), (int)kl, prop, owned[j].key, owned[j].why);
            return -1;
        }
    }
    return 0;
}


/* ---- configurations ------------------------------------------------------ */

/* Sets sasl.password from the file named by the pseudo-property. */
static int set_password_from(rd_kafka_conf_t *conf, const char *path, char *errstr, size_t n) {
    char pw[PASSWORD_MAX + 1], why[600], e[512];
    if (read_password(path, pw, why, sizeof(why)) != 0) {
        snprintf(errstr, n, "key 'kafka.sasl.password_file': %s", why);
        return -1;
    }
    int rc = rd_kafka_conf_set(conf, "sasl.password", pw, e, sizeof(e)) == RD_KAFKA_CONF_OK ? 0 : -1;
    explicit_bzero(pw, sizeof(pw));
    if (rc)
        snprintf(errstr, n, "kafka property sasl.password (from %s): %s", path, e);
    return rc;
}

rd_kafka_conf_t *em_kafka_conf_new(const char *bootstrap, const char *client_id, const em_kafka_prop_t *props,
                                   size_t n, const char *const *extra, size_t nextra, char *errstr,
                                   size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (set_prop(conf, "bootstrap.servers", bootstrap, errstr, errstr_size) ||
        set_prop(conf, "client.id", client_id, errstr, errstr_size))
        goto fail;
    rd_kafka_conf_set_log_cb(conf, em_log_rdkafka_cb);
    for (size_t i = 0; i < n; i++)
        if (set_prop(conf, props[i].key, props[i].value, errstr, errstr_size))
            goto fail;
    for (size_t i = 0; i < nextra; i++) {
        char kv[1024];
        snprintf(kv, sizeof(kv), "%s", extra[i]);
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv) {
            snprintf(errstr, errstr_size, "kafka property '%s': expected key=value", extra[i]);
            goto fail;
        }
        *eq = '\0';
        if (strcmp(kv, PASSWORD_FILE_PROP) == 0 ? set_password_from(conf, eq + 1, errstr, errstr_size)
                                                : set_prop(conf, kv, eq + 1, errstr, errstr_size))
            goto fail;
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

size_t em_kafka_extra_from_config(const struct em_config *cfg, const char *extra[EM_KAFKA_MAX_EXTRA]) {
    size_t s = em_kafka_security_props(cfg, extra);
    size_t n = em_config_list_len(cfg, "kafka.properties");
    if (n > EM_KAFKA_MAX_PROPERTIES)
        n = EM_KAFKA_MAX_PROPERTIES;
    for (size_t i = 0; i < n; i++)
        extra[s + i] = em_config_list_get(cfg, "kafka.properties", i);
    return s + n;
}

/* ---- the start-up check ------------------------------------------------- */

typedef struct preflight {
    int failed;      /* an error no retry mends */
    int all_down;    /* every broker down: nothing to learn */
    char reason[600];
} preflight_t;

/* error_cb of the throwaway client; runs in rd_kafka_poll, on the caller's thread */
static void preflight_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    preflight_t *pf = opaque;
    if (pf->failed)
        return;
    /* librdkafka's own hint when a TLS client meets a plaintext listener */
    int plaintext_listener = err == RD_KAFKA_RESP_ERR__TRANSPORT && strstr(reason, "PLAINTEXT broker listener");
    if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION || plaintext_listener ||
        (err == RD_KAFKA_RESP_ERR__SSL && strstr(reason, "handshake failed"))) {
        pf->failed = err;
        snprintf(pf->reason, sizeof(pf->reason), "%s", reason);
    } else if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        pf->all_down = 1;
    }
}

static void conf_get(const rd_kafka_conf_t *conf, const char *k, char *v, size_t n) {
    size_t sz = n;
    if (rd_kafka_conf_get(conf, k, v, &sz) != RD_KAFKA_CONF_OK)
        snprintf(v, n, "%s", "");
}

int em_kafka_preflight(const rd_kafka_conf_t *conf, rd_kafka_type_t type, int timeout_ms, char *errstr,
                       size_t errstr_size) {
    char proto[32], boot[1024], user[256], mech[64], e[512];
    conf_get(conf, "security.protocol", proto, sizeof(proto));
    if (!*proto || strcasecmp(proto, "plaintext") == 0)
        return 0;
    conf_get(conf, "bootstrap.servers", boot, sizeof(boot));
    conf_get(conf, "sasl.username", user, sizeof(user));
    conf_get(conf, "sasl.mechanisms", mech, sizeof(mech));
    preflight_t pf = {0};
    rd_kafka_conf_t *c = rd_kafka_conf_dup(conf);
    rd_kafka_conf_set_error_cb(c, preflight_error_cb);
    rd_kafka_conf_set_opaque(c, &pf);
    if (type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(c, NULL);
    rd_kafka_t *rk = rd_kafka_new(type, c, e, sizeof(e));
    if (!rk) { /* the caller's own rd_kafka_new will say why */
        rd_kafka_conf_destroy(c);
        return 0;
    }
    int64_t deadline = em_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - em_mono_ms();
        if (left <= 0)
            break;
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, left < 200 ? (int)left : 200);
        if (!err) {
            rd_kafka_metadata_destroy(md);
            break;
        }
        rd_kafka_poll(rk, 0);
        if (pf.failed || pf.all_down)
            break;
    }
    rd_kafka_poll(rk, 0);
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (!pf.failed)
        return 0;
    if (pf.failed == RD_KAFKA_RESP_ERR__AUTHENTICATION) {
        /* librdkafka before 2.6.1 sends a SCRAM proof Kafka 3.8.1 and later refuse (librdkafka#4895) */
        int old = rd_kafka_version() < 0x020601ff && strncasecmp(mech, "SCRAM", 5) == 0;
        snprintf(errstr, errstr_size,
                 "kafka SASL authentication failed for user '%s' (%s) at %s: %s: check kafka.sasl.username and "
                 "kafka.sasl.password_file%s%s%s",
                 user, mech, boot, pf.reason, old ? "; librdkafka " : "", old ? rd_kafka_version_str() : "",
                 old ? " predates 2.6.1, whose SCRAM Kafka 3.8.1 and later brokers require" : "");
    } else if (pf.failed == RD_KAFKA_RESP_ERR__TRANSPORT) {
        snprintf(errstr, errstr_size,
                 "kafka TLS handshake with the brokers at %s failed: %s: check kafka.security.protocol (%s) against "
                 "the brokers' listener at that port",
                 boot, pf.reason, proto);
    } else {
        snprintf(errstr, errstr_size,
                 "kafka TLS handshake with the brokers at %s failed: %s: check kafka.ssl.ca_file (the CA of the "
                 "brokers' certificates, whose names must match the hosts in the bootstrap and advertised listeners)",
                 boot, pf.reason);
    }
    return -1;
}

em_err_t em_kafka_err(rd_kafka_resp_err_t err) {
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR: return EM_OK;
    case RD_KAFKA_RESP_ERR__QUEUE_FULL: return EM_EAGAIN;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE: return EM_ETOOBIG;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT: return EM_ETIMEDOUT;
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__TRANSPORT: return EM_EUNAVAIL;
    case RD_KAFKA_RESP_ERR__STATE:
    case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID: return EM_ENOTMINE;
    default: return EM_EKAFKA;
    }
}

int em_kafka_err_retriable(rd_kafka_resp_err_t err) {
    switch (err) {
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
    case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL: return 1;
    default: return 0;
    }
}

const char *em_kafka_version(void) { return rd_kafka_version_str(); }
