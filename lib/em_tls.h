/* SPDX-License-Identifier: Apache-2.0 */
/*
 * em_tls: the gRPC credentials of a service's server and client channels.
 *
 * With no files configured, plaintext (insecure credentials). With a
 * certificate, its key and a CA bundle, mutual TLS: the server asks for and
 * verifies a client certificate signed by the bundle, a channel presents its
 * certificate and verifies the server's, host name included. The files are
 * watched (gRPC's file-watcher certificate provider): every refresh_s they
 * are read again, and new connections present the new certificate and trust
 * the new bundle, with no restart (rotation).
 */
#ifndef EM_TLS_H
#define EM_TLS_H

#include <stddef.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

typedef struct em_tls_opts {
    const char *cert_file; /* PEM certificate chain; "" or NULL: plaintext */
    const char *key_file;  /* PEM private key of cert_file */
    const char *ca_file;   /* PEM CA bundle the peer's certificate must chain to */
    int refresh_s;         /* how often the files are read again */
    const char *server_name; /* channels: the name the server's certificate must carry; "" or NULL: the target's host */
} em_tls_opts_t;

/* 1 when o asks for TLS (a certificate is configured). */
int em_tls_on(const em_tls_opts_t *o);

/* Checks the three files are all set or all empty, and that each set one is
 * a readable PEM file of the kind expected. 0, or -1 with the reason in err
 * (naming the file) and *key the setting at fault ("tls.cert_file", ...). */
int em_tls_check(const em_tls_opts_t *o, const char **key, char *err, size_t errn);

/* A channel to target can check the server's name: with TLS on and no
 * server_name, a target listing several addresses ("ipv4:A:P,B:P") has no
 * one host name to check. 0, or -1 with the reason in err. */
int em_tls_check_target(const em_tls_opts_t *o, const char *target, char *err, size_t errn);

/* Credentials for a server / a channel; the caller releases them. NULL only
 * when gRPC refuses (err says so). */
grpc_server_credentials *em_tls_server_credentials(const em_tls_opts_t *o, char *err, size_t errn);
grpc_channel_credentials *em_tls_channel_credentials(const em_tls_opts_t *o, char *err, size_t errn);

/* The identity of the peer of an authenticated call: its certificate's
 * first URI SAN, else its first DNS SAN, else its subject CN (the identities
 * authorization names). "" when the call is not over TLS or the
 * certificate has none of them. Longer ones are cut to n - 1 bytes. */
void em_tls_peer_identity(grpc_call *call, char *out, size_t n);

#endif
