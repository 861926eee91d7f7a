/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One error enum for the whole project. gRPC status codes and librdkafka
 * error codes are turned into it at the edge of lib/, so services reason
 * about three kinds of outcome: done (EM_OK), try again later (EM_EAGAIN,
 * back-pressure), and not mine / gone (EM_ENOTMINE), all apart from real
 * failures.
 */
#ifndef EM_ERROR_H
#define EM_ERROR_H

/* X(name, description) */
#define EM_ERRNO_MAP(X)                                                      \
    X(OK, "success")                                                         \
    X(EAGAIN, "resource temporarily exhausted, try again later")             \
    X(ENOTMINE, "not owned by this replica any more")                        \
    X(EINVAL, "invalid argument")                                            \
    X(ENOMEM, "out of memory")                                               \
    X(ECONFIG, "invalid configuration")                                      \
    X(EIO, "input/output error")                                             \
    X(EKAFKA, "kafka error")                                                 \
    X(EGRPC, "grpc error")                                                   \
    X(EUNAVAIL, "dependency unavailable")                                    \
    X(ETIMEDOUT, "timed out")                                                \
    X(ESHUTDOWN, "shutting down")                                            \
    X(ENOTFOUND, "not found")                                                \
    X(ETOOBIG, "too large")

typedef enum em_err {
#define EM_ERR_ENUM_(name, desc) EM_##name,
    EM_ERRNO_MAP(EM_ERR_ENUM_)
#undef EM_ERR_ENUM_
        EM_ERR_COUNT_
} em_err_t;

/* A static description of err; never NULL, even for values out of range. */
const char *em_strerror(em_err_t err);

/* The short symbolic name ("EAGAIN"); never NULL. */
const char *em_errname(em_err_t err);

#endif
