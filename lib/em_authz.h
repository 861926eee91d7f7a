/* SPDX-License-Identifier: Apache-2.0 */
/*
 * em_authz: which caller may submit which handlers, and who may cancel.
 *
 * The table comes from the scheduler's authz.NAME groups:
 *     authz = {
 *       reports = { identity = "spiffe://acme/reports"; handlers = ["pdf", "thumb"]; };
 *       ops     = { identity = "spiffe://acme/ops";     handlers = ["*"]; cancel = true; };
 *     };
 * An identity is what em_tls_peer_identity gives (certificate URI SAN, else
 * DNS SAN, else CN), matched exactly. "*" in handlers allows every handler.
 * Deny by default: an identity no group names may do nothing. It applies
 * only with TLS on; without TLS there are no identities to check.
 */
#ifndef EM_AUTHZ_H
#define EM_AUTHZ_H

#include <stddef.h>

#include "em_config.h"

/* The settings a service with an authz table adds to its table. */
#define EM_AUTHZ_SETTINGS                                                                                       \
    {"authz.*.identity", EM_CFG_STR, "", 0, 255,                                                                \
     "With TLS on: a caller's identity (its certificate's URI SAN, else DNS SAN, else CN), exactly. Submit "    \
     "and Cancel from identities no authz group names are refused (PERMISSION_DENIED)."},                      \
    {"authz.*.handlers", EM_CFG_STRLIST, "", 0, 256,                                                            \
     "The handlers this group's identity may submit (\"*\": all); any other is refused naming the handler and " \
     "the identity, and nothing of the request is written."},                                                   \
    {"authz.*.cancel", EM_CFG_BOOL, "true", 0, 0,                                                               \
     "May this group's identity call Cancel? (A Cancel names execution ids only, not handlers.)"}

typedef struct em_authz em_authz_t;

/* Builds the table from cfg's authz.NAME groups. NULL with the reason in
 * errstr and the key at fault in key when a group has no identity or two
 * groups name one identity (refused rather than merged). An empty table is
 * valid (everything is denied). */
em_authz_t *em_authz_from_config(const em_config_t *cfg, char *errstr, size_t errstr_size, char *key, size_t keyn);
void em_authz_destroy(em_authz_t *a);

/* May identity submit handler? */
int em_authz_may_submit(const em_authz_t *a, const char *identity, const char *handler);
/* May identity call Cancel? */
int em_authz_may_cancel(const em_authz_t *a, const char *identity);
/* How many groups the table holds. */
size_t em_authz_groups(const em_authz_t *a);

#endif
