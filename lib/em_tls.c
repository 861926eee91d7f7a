/* SPDX-License-Identifier: Apache-2.0 */
#include "em_tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int set(const char *s) { return s && *s; }

int em_tls_on(const em_tls_opts_t *o) { return o && set(o->cert_file); }

/* A file that can be read and holds a PEM block whose label contains want. */
static int check_pem(const char *path, const char *want, char *err, size_t errn) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errn, "cannot read '%s': %s", path, strerror(errno));
        return -1;
    }
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strncmp(line, "-----BEGIN ", 11) == 0 && strstr(line, want) != NULL;
    fclose(f);
    if (!found) {
        snprintf(err, errn, "'%s' holds no PEM %s", path, want);
        return -1;
    }
    return 0;
}

int em_tls_check(const em_tls_opts_t *o, const char **key, char *err, size_t errn) {
    int n = set(o->cert_file) + set(o->key_file) + set(o->ca_file);
    if (n == 0)
        return 0;
    if (n != 3) {
        *key = !set(o->cert_file) ? "tls.cert_file" : !set(o->key_file) ? "tls.key_file" : "tls.ca_file";
        snprintf(err, errn, "set all of tls.cert_file, tls.key_file and tls.ca_file, or none (missing: %s%s%s)",
                 set(o->cert_file) ? "" : "tls.cert_file ", set(o->key_file) ? "" : "tls.key_file ",
                 set(o->ca_file) ? "" : "tls.ca_file");
        return -1;
    }
    *key = "tls.cert_file";
    if (check_pem(o->cert_file, "CERTIFICATE", err, errn))
        return -1;
    *key = "tls.key_file";
    if (check_pem(o->key_file, "PRIVATE KEY", err, errn))
        return -1;
    *key = "tls.ca_file";
    if (check_pem(o->ca_file, "CERTIFICATE", err, errn))
        return -1;
    return 0;
}

int em_tls_check_target(const em_tls_opts_t *o, const char *target, char *err, size_t errn) {
    if (!em_tls_on(o) || set(o->server_name) || !target)
        return 0;
    if ((strncmp(target, "ipv4:", 5) == 0 || strncmp(target, "ipv6:", 5) == 0) && strchr(target, ',')) {
        snprintf(err, errn,
                 "with TLS on, the target '%s' lists several addresses and so names no host to check the servers' "
                 "certificates against: set tls.server_name (a name their certificates carry) or use a dns:/// target",
                 target);
        return -1;
    }
    return 0;
}

/* Options watching o's files: the identity (cert + key) and the root bundle.
 * NULL with the reason in err when gRPC refuses them. */
static grpc_tls_credentials_options *watched(const em_tls_opts_t *o, char *err, size_t errn) {
    grpc_tls_certificate_provider *p = grpc_tls_certificate_provider_file_watcher_create(
        o->key_file, o->cert_file, o->ca_file, (unsigned)(o->refresh_s > 0 ? o->refresh_s : 1));
    if (!p) {
        snprintf(err, errn, "tls: gRPC refused the certificate files %s, %s, %s", o->cert_file, o->key_file,
                 o->ca_file);
        return NULL;
    }
    grpc_tls_credentials_options *opts = grpc_tls_credentials_options_create();
    grpc_tls_credentials_options_set_certificate_provider(opts, p); /* takes its own ref */
    grpc_tls_certificate_provider_release(p);
    grpc_tls_credentials_options_watch_root_certs(opts);
    grpc_tls_credentials_options_watch_identity_key_cert_pairs(opts);
    return opts;
}

grpc_server_credentials *em_tls_server_credentials(const em_tls_opts_t *o, char *err, size_t errn) {
    if (!em_tls_on(o))
        return grpc_insecure_server_credentials_create();
    grpc_tls_credentials_options *opts = watched(o, err, errn);
    if (!opts)
        return NULL;
    grpc_tls_credentials_options_set_cert_request_type(opts, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    grpc_server_credentials *c = grpc_tls_server_credentials_create(opts); /* owns opts */
    if (!c)
        snprintf(err, errn, "tls: gRPC refused the server credentials");
    return c;
}

grpc_channel_credentials *em_tls_channel_credentials(const em_tls_opts_t *o, char *err, size_t errn) {
    if (!em_tls_on(o))
        return grpc_insecure_credentials_create();
    grpc_tls_credentials_options *opts = watched(o, err, errn);
    if (!opts)
        return NULL;
    grpc_tls_credentials_options_set_verify_server_cert(opts, 1);
    grpc_tls_certificate_verifier *v = grpc_tls_certificate_verifier_host_name_create();
    grpc_tls_credentials_options_set_certificate_verifier(opts, v); /* takes its own ref */
    grpc_tls_certificate_verifier_release(v);
    grpc_channel_credentials *c = grpc_tls_credentials_create(opts); /* owns opts */
    if (!c)
        snprintf(err, errn, "tls: gRPC refused the channel credentials");
    return c;
}

/* The first value of property name in ctx, or NULL. */
static const grpc_auth_property *first_property(const grpc_auth_context *ctx, const char *name) {
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, name);
    return grpc_auth_property_iterator_next(&it);
}

void em_tls_peer_identity(grpc_call *call, char *out, size_t n) {
    static const char *const order[] = {GRPC_PEER_URI_PROPERTY_NAME, GRPC_PEER_DNS_PROPERTY_NAME,
                                        GRPC_X509_CN_PROPERTY_NAME};
    out[0] = '\0';
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    if (!ctx)
        return;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        const grpc_auth_property *p = first_property(ctx, order[i]);
        if (p && p->value_length > 0) {
            size_t len = p->value_length < n - 1 ? p->value_length : n - 1;
            memcpy(out, p->value, len);
            out[len] = '\0';
            break;
        }
    }
    grpc_auth_context_release(ctx);
}
