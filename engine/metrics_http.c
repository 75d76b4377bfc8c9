/* metrics_http.c: the HTTP endpoints of metrics.listen, served by libmicrohttpd on one thread of
 * its own (epoll or poll, non-blocking sockets): GET /metrics (the exposition metrics.c
 * renders), /healthz (the process is alive) and /readyz (metrics_ready). A slow or stuck client
 * only holds its own connection (at most METRICS_HTTP_CONNECTIONS at once, idle ones dropped after
 * METRICS_HTTP_IDLE_S); workers never wait on this thread, which only reads atomics.
 * Must not: touch Redis, take a lock a worker takes, or answer with anything but metrics,
 * health and readiness (no job data, no configuration). */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "engine/metrics.h"

#define METRICS_HTTP_CONNECTIONS 64
#define METRICS_HTTP_IDLE_S 10

struct MetricsServer {
    struct MHD_Daemon *mhd;
    Metrics *m;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type, char *body, size_t len,
                             enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return reply(c, status, "text/plain; charset=utf-8", (char *)text, strlen(text), MHD_RESPMEM_MUST_COPY);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_len, void **state)
{
    (void)version, (void)upload, (void)upload_len, (void)state;
    MetricsServer *s = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    if (strcmp(url, "/metrics") == 0) {
        size_t len = 0;
        char *body = metrics_render(s->m, &len);
        if (!body)
            return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len, MHD_RESPMEM_MUST_FREE);
    }
    if (strcmp(url, "/healthz") == 0)
        return reply_text(c, MHD_HTTP_OK, "ok\n");
    if (strcmp(url, "/readyz") == 0) {
        char why[200], text[224];
        if (metrics_ready(s->m, why, sizeof why))
            return reply_text(c, MHD_HTTP_OK, "ready\n");
        snprintf(text, sizeof text, "not ready: %s\n", why);
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, text);
    }
    return reply_text(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n");
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    LOG_W("metrics server: %s", msg);
}

MetricsServer *metrics_server_start(Metrics *m, const char *listen, char *err, size_t errlen)
{
    char host[64];
    int port;
    bool v6;
    if (!cfg_parse_listen(listen, host, sizeof host, &port, &v6)) { /* validated with the config */
        snprintf(err, errlen, "metrics.listen = \"%s\" is not an address", listen);
        return NULL;
    }
    struct sockaddr_in sa4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    if (v6)
        inet_pton(AF_INET6, host, &sa6.sin6_addr);
    else
        inet_pton(AF_INET, host, &sa4.sin_addr);
    MetricsServer *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->m = m;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    errno = 0;
    s->mhd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handle, s,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                              MHD_OPTION_SOCK_ADDR, v6 ? (struct sockaddr *)&sa6 : (struct sockaddr *)&sa4,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_HTTP_CONNECTIONS,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_HTTP_IDLE_S,
                              MHD_OPTION_END);
    if (!s->mhd) {
        snprintf(err, errlen, "cannot serve metrics on %s: %s", listen,
                 errno ? strerror(errno) : "libmicrohttpd could not start (see the line above)");
        free(s);
        return NULL;
    }
    return s;
}

void metrics_server_stop(MetricsServer *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->mhd);
    free(s);
}
