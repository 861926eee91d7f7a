/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP/1.0 to a replica's metrics port from the command line: GET /metrics
 * (status, drain --wait) and POST /admin/... with the admin bearer token
 * (drain, pause, resume), one request per connection over one socket, every
 * wait bounded by one deadline. libmicrohttpd serves the endpoint but has
 * no client, and a curl dependency for a few requests on loopback is not
 * worth it.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctl.h"
#include "em_util.h"

/* A /metrics body larger than this is not a scheduler's. */
#define CTL_HTTP_MAX_BYTES (64u << 20)

/* Waits until fd is ready for events or deadline (em_mono_ms) passed.
 * 1 ready, 0 timed out, -1 poll failed (errno set). */
static int wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        int64_t left = deadline - em_mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* A non-blocking socket connected to one of host:port's addresses before
 * deadline, or -1 with errstr set. */
static int connect_by(const char *host, int port, int64_t deadline, char *errstr, size_t errstr_size) {
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, service, &hints, &ai);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    snprintf(errstr, errstr_size, "cannot connect: no address for %s", host);
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            snprintf(errstr, errstr_size, "cannot connect: socket: %s", strerror(errno));
            continue;
        }
        int err = 0;
        if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
            err = errno;
            if (err == EINPROGRESS) {
                int w = wait_fd(fd, POLLOUT, deadline);
                socklen_t sl = sizeof(err);
                if (w == 0)
                    err = ETIMEDOUT;
                else if (w < 0)
                    err = errno;
                else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
                    err = errno;
            }
        }
        if (err) {
            snprintf(errstr, errstr_size, "cannot connect: %s", err == ETIMEDOUT ? "timed out" : strerror(err));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    return fd;
}

em_err_t ctl_http_request(const char *hostport, const char *method, const char *path, const char *token,
                          int timeout_ms, int *status, char **body, size_t *len, char *errstr, size_t errstr_size) {
    int64_t deadline = em_mono_ms() + timeout_ms;
    char host[256], req[1200], auth[700] = "";
    int port, fd = -1;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    em_err_t rc = EM_EIO;
    *body = NULL;
    *len = 0;
    *status = 0;
    if (token && snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", token) >= (int)sizeof(auth)) {
        snprintf(errstr, errstr_size, "the token is too long");
        return EM_EINVAL;
    }

    if (em_parse_hostport(hostport, host, sizeof(host), &port, errstr, errstr_size) != EM_OK)
        return EM_EINVAL;
    fd = connect_by(host, port, deadline, errstr, errstr_size);
    if (fd < 0) {
        rc = strstr(errstr, "timed out") ? EM_ETIMEDOUT : EM_EUNAVAIL;
        goto out;
    }
    /* HTTP/1.0: the server closes the connection after the body, so EOF
     * ends the answer and no chunked encoding can come back. */
    int post = strcmp(method, "POST") == 0;
    int rl = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: %s\r\nAccept: text/plain\r\n"
                                        "User-Agent: execmeshctl\r\n%s%s\r\n", method, path, hostport, auth,
                      post ? "Content-Length: 0\r\n" : "");
    if (rl < 0 || (size_t)rl >= sizeof(req)) {
        snprintf(errstr, errstr_size, "request for %s too long", path);
        rc = EM_EINVAL;
        goto out;
    }
    for (size_t sent = 0; sent < (size_t)rl;) {
        int w = wait_fd(fd, POLLOUT, deadline);
        if (w <= 0) {
            snprintf(errstr, errstr_size, "sending the request: %s", w == 0 ? "timed out" : strerror(errno));
            rc = w == 0 ? EM_ETIMEDOUT : EM_EIO;
            goto out;
        }
        ssize_t k = send(fd, req + sent, (size_t)rl - sent, MSG_NOSIGNAL);
        if (k < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(errstr, errstr_size, "sending the request: %s", strerror(errno));
            goto out;
        }
        if (k > 0)
            sent += (size_t)k;
    }
    for (;;) {
        if (cap - n < 4096) {
            if (cap >= CTL_HTTP_MAX_BYTES) {
                snprintf(errstr, errstr_size, "answer larger than %u bytes", CTL_HTTP_MAX_BYTES);
                goto out;
            }
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                snprintf(errstr, errstr_size, "out of memory");
                rc = EM_ENOMEM;
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        int w = wait_fd(fd, POLLIN, deadline);
        if (w <= 0) {
            snprintf(errstr, errstr_size, "reading the answer: %s after %d ms", w == 0 ? "timed out" : strerror(errno),
                     timeout_ms);
            rc = w == 0 ? EM_ETIMEDOUT : EM_EIO;
            goto out;
        }
        ssize_t k = recv(fd, buf + n, cap - n, 0);
        if (k == 0)
            break;
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            snprintf(errstr, errstr_size, "reading the answer: %s", strerror(errno));
            goto out;
        }
        n += (size_t)k;
    }
    if (!buf) {
        snprintf(errstr, errstr_size, "empty answer");
        goto out;
    }
    buf[n] = '\0';
    int code = 0;
    if (sscanf(buf, "HTTP/%*d.%*d %d", &code) != 1) {
        snprintf(errstr, errstr_size, "not an HTTP answer");
        goto out;
    }
    char *hdr_end = strstr(buf, "\r\n\r\n");
    if (!hdr_end) {
        snprintf(errstr, errstr_size, "HTTP %d for %s %s without an end of its headers", code, method, path);
        goto out;
    }
    *status = code;
    hdr_end += 4;
    *len = n - (size_t)(hdr_end - buf);
    memmove(buf, hdr_end, *len + 1);
    *body = buf;
    buf = NULL;
    rc = EM_OK;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

em_err_t ctl_http_get(const char *hostport, const char *path, int timeout_ms, char **body, size_t *len,
                      char *errstr, size_t errstr_size) {
    int status;
    em_err_t rc = ctl_http_request(hostport, "GET", path, NULL, timeout_ms, &status, body, len, errstr, errstr_size);
    if (rc == EM_OK && status != 200) {
        snprintf(errstr, errstr_size, "HTTP %d for GET %s", status, path);
        free(*body);
        *body = NULL;
        *len = 0;
        rc = EM_EIO;
    }
    return rc;
}
