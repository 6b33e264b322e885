/*
 * kp_http.c - the HTTP endpoint (see kp_http.h), libmicrohttpd driven by
 * libev.
 *
 * libmicrohttpd runs in "external" epoll mode (MHD_USE_EPOLL without
 * MHD_USE_INTERNAL_POLLING_THREAD): it keeps its listening and client
 * sockets in an epoll set of its own and never blocks. The loop watches
 * that one epoll fd with an ev_io and calls MHD_run() when it is readable;
 * after every run an ev_timer is armed from MHD_get_timeout() (0 when MHD
 * has buffered work left, or the nearest connection timeout), as the MHD
 * manual requires of external polling:
 *
 *    libev loop ── ev_io(epoll fd) ──┐
 *               └─ ev_timer ─────────┴─▶ MHD_run ─▶ access handler
 *                     ▲                               │ route fn → kp_buf
 *                     └── MHD_get_timeout ◀───────────┘ queue response
 *
 * The listening socket is made here (so a bind error reaches the caller
 * with its reason) and handed to MHD, which closes it at stop. Response
 * bodies are kp_buf data handed to MHD with MHD_RESPMEM_MUST_FREE: no
 * copy.
 */
#include "kp_http.h"

#include <errno.h>
#include <ev.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_buf.h"
#include "kp_log.h"

#define KP_HTTP_DEF_CONNS 64
#define KP_HTTP_DEF_MEMORY (16 * 1024)
#define KP_HTTP_DEF_TIMEOUT_S 10
#define KP_HTTP_BACKLOG 64

enum kp_http_route {
    KP_HTTP_METRICS,
    KP_HTTP_STATS,
    KP_HTTP_HEALTHZ,
    KP_HTTP_READYZ,
    KP_HTTP__COUNT
};
static const char *const kp_http_paths[KP_HTTP__COUNT] = {
    "/metrics", "/stats", "/healthz", "/readyz"};

struct kp_http {
    struct ev_loop *loop;    /* borrowed */
    struct MHD_Daemon *mhd;  /* owned; owns the listening socket */
    ev_io io;                /* MHD's epoll fd */
    ev_timer timer;          /* MHD_get_timeout */
    kp_http_fn fn[KP_HTTP__COUNT];
    void *arg;               /* borrowed: passed to the routes */
    int port;
    struct kp_ratelimit rl;  /* MHD's own messages */
};

/* ---------------------------------------------------------------------- */
/* loop glue */

unsigned kp_http_connections(struct kp_http *h)
{
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return info ? info->num_connections : 0;
}

/*
 * Runs MHD and re-arms the timer from its timeout. At the connection limit
 * MHD takes its listening socket out of its epoll set and puts it back only
 * at the start of a later run: when a run closed connections, run once
 * more so that a client waiting in the backlog is accepted now rather
 * than at the next timeout.
 */
static void kp_http_drive(struct kp_http *h)
{
    unsigned before = kp_http_connections(h);
    MHD_run(h->mhd);
    if (kp_http_connections(h) < before) {
        MHD_run(h->mhd);
    }
    MHD_UNSIGNED_LONG_LONG ms;
    ev_timer_stop(h->loop, &h->timer);
    if (MHD_get_timeout(h->mhd, &ms) == MHD_YES) {
        ev_timer_set(&h->timer, (double)ms / 1e3, 0.0);
        ev_timer_start(h->loop, &h->timer);
    }
}

static void kp_http_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    kp_http_drive(w->data);
}

static void kp_http_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    kp_http_drive(w->data);
}

/* MHD's error log (MHD_USE_ERROR_LOG), rate-limited into ours. */
static void kp_http_on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct kp_http *h = cls;
    char msg[256];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) {
        msg[--n] = '\0';
    }
    kp_log_rl(&h->rl, KP_LOG_WARNING, "http: %s", msg);
}

/* ---------------------------------------------------------------------- */
/* requests */

static enum MHD_Result kp_http_reply(struct MHD_Connection *c,
                                     unsigned status, struct kp_buf *body,
                                     const char *ctype, const char *allow)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        body->len, body->data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        kp_buf_deinit(body);
        return MHD_NO;
    }
    /* MHD frees the data now */
    body->data = NULL;
    body->len = body->cap = 0;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    }
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result kp_http_text(struct MHD_Connection *c,
                                    unsigned status, const char *text,
                                    const char *allow)
{
    struct kp_buf b;
    kp_buf_init(&b, 64);
    kp_buf_put_bytes(&b, text, strlen(text));
    return kp_http_reply(c, status, &b, KP_HTTP_CT_TEXT, allow);
}

static const char *kp_http_default_ctype(enum kp_http_route route, bool om)
{
    switch (route) {
    case KP_HTTP_METRICS:
        return om ? KP_HTTP_CT_OPENMETRICS : KP_HTTP_CT_PROMETHEUS;
    case KP_HTTP_STATS:
        return KP_HTTP_CT_JSON;
    case KP_HTTP_HEALTHZ:
    case KP_HTTP_READYZ:
    case KP_HTTP__COUNT:
    default:
        return KP_HTTP_CT_TEXT;
    }
}

/* Calls the route's function (healthz without one: 200 "ok"). */
static enum MHD_Result kp_http_route_call(struct kp_http *h,
                                          struct MHD_Connection *c,
                                          enum kp_http_route route)
{
    const char *accept =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
    bool om = route == KP_HTTP_METRICS && kp_http_wants_openmetrics(accept);
    const char *ctype = NULL;
    int status = 200;
    struct kp_buf body;
    kp_buf_init(&body, route == KP_HTTP_METRICS ? 16384 : 256);

    if (h->fn[route]) {
        status = h->fn[route](h->arg, &body, &ctype, om);
    } else {
        kp_buf_put_bytes(&body, "ok\n", 3);
    }
    if (status < 100 || status > 599) {
        kp_buf_reset(&body);
        kp_buf_put_bytes(&body, "bad status from route\n", 22);
        status = 500;
        ctype = KP_HTTP_CT_TEXT;
    }
    if (!ctype) {
        ctype = kp_http_default_ctype(route, om);
    }
    return kp_http_reply(c, (unsigned)status, &body, ctype, NULL);
}

/*
 * MHD's access handler: called once the request head is in. A response
 * queued on this first call ends the request; an unread request body is
 * then discarded by MHD (it closes the connection after the response).
 */
static enum MHD_Result kp_http_on_request(void *cls,
                                          struct MHD_Connection *c,
                                          const char *url, const char *method,
                                          const char *version,
                                          const char *upload_data,
                                          size_t *upload_data_size,
                                          void **req_cls)
{
    struct kp_http *h = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;

    int route = -1;
    for (int i = 0; i < KP_HTTP__COUNT; i++) {
        if (strcmp(url, kp_http_paths[i]) == 0) {
            route = i;
            break;
        }
    }
    if (route < 0 || (!h->fn[route] && route != KP_HTTP_HEALTHZ)) {
        return kp_http_text(c, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        return kp_http_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                            "method not allowed\n", "GET, HEAD");
    }
    return kp_http_route_call(h, c, (enum kp_http_route)route);
}

/* ---------------------------------------------------------------------- */
/* listening socket */

/* Splits "host:port" / "[v6]:port" / ":port" into host (NULL: any) and
 * port, in buf. Returns KP_ERROR when malformed. */
static int kp_http_split(const char *listen, char *buf, size_t buflen,
                         const char **host, const char **port)
{
    if (snprintf(buf, buflen, "%s", listen) >= (int)buflen) {
        return KP_ERROR;
    }
    char *colon = strrchr(buf, ':');
    if (!colon || colon[1] == '\0') {
        return KP_ERROR;
    }
    *colon = '\0';
    *port = colon + 1;
    char *h = buf;
    if (h[0] == '[') {
        size_t n = strlen(h);
        if (n < 2 || h[n - 1] != ']') {
            return KP_ERROR;
        }
        h[n - 1] = '\0';
        h++;
    } else if (strchr(h, ':')) {
        return KP_ERROR; /* a v6 address needs brackets */
    }
    *host = h[0] ? h : NULL;
    return KP_OK;
}

/* One candidate address: a nonblocking, close-on-exec listening socket. */
static int kp_http_bind_one(const struct addrinfo *ai, int *err_no)
{
    int fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0) {
        *err_no = errno;
        return -1;
    }
    int on = 1, off = 0;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (ai->ai_family == AF_INET6) {
        /* ":port" means every address, v4 included */
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
        listen(fd, KP_HTTP_BACKLOG) != 0) {
        *err_no = errno;
        close(fd);
        return -1;
    }
    return fd;
}

/* Binds listen; returns the socket, or -1 with the reason in err. */
static int kp_http_listen(const char *listen, int *family, char *err,
                          size_t errlen)
{
    char buf[300];
    const char *host, *port;
    if (kp_http_split(listen, buf, sizeof(buf), &host, &port) != KP_OK) {
        snprintf(err, errlen,
                 "http.listen %s: expected \"host:port\" "
                 "(\"[addr]:port\" for IPv6)",
                 listen);
        return -1;
    }
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "http.listen %s: %s", listen,
                 gai_strerror(rc));
        return -1;
    }
    int fd = -1, err_no = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = kp_http_bind_one(ai, &err_no);
        *family = ai->ai_family;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "http.listen %s: bind: %s", listen,
                 strerror(err_no));
    }
    return fd;
}

static int kp_http_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        return -1;
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* ---------------------------------------------------------------------- */
/* lifecycle */

static struct MHD_Daemon *kp_http_start_mhd(struct kp_http *h, int fd,
                                            int family,
                                            const struct kp_http_limits *l)
{
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    if (family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    /* port 0: the socket is already bound (MHD_OPTION_LISTEN_SOCKET) */
    return MHD_start_daemon(
        flags, 0, NULL, NULL, kp_http_on_request, h,
        /* first, or MHD prints its start-up messages itself */
        MHD_OPTION_EXTERNAL_LOGGER, kp_http_on_mhd_log, h,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)l->max_connections,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)l->conn_memory,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)l->timeout_s, MHD_OPTION_END);
}

struct kp_http *kp_http_open_with(struct ev_loop *loop, const char *listen,
                                  const struct kp_http_routes *routes,
                                  void *arg, const struct kp_http_limits *lim,
                                  char *err, size_t errlen)
{
    struct kp_http_limits l = {0};
    if (lim) {
        l = *lim;
    }
    l.max_connections = l.max_connections ? l.max_connections
                                          : KP_HTTP_DEF_CONNS;
    l.conn_memory = l.conn_memory ? l.conn_memory : KP_HTTP_DEF_MEMORY;
    l.timeout_s = l.timeout_s ? l.timeout_s : KP_HTTP_DEF_TIMEOUT_S;

    int family = AF_INET;
    int fd = kp_http_listen(listen, &family, err, errlen);
    if (fd < 0) {
        return NULL;
    }
    struct kp_http *h = kp_calloc(1, sizeof(*h));
    h->loop = loop;
    h->arg = arg;
    h->port = kp_http_bound_port(fd);
    h->fn[KP_HTTP_METRICS] = routes->metrics;
    h->fn[KP_HTTP_STATS] = routes->stats;
    h->fn[KP_HTTP_HEALTHZ] = routes->healthz;
    h->fn[KP_HTTP_READYZ] = routes->readyz;

    h->mhd = kp_http_start_mhd(h, fd, family, &l);
    const union MHD_DaemonInfo *info =
        h->mhd ? MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD)
               : NULL;
    if (!info) {
        snprintf(err, errlen, "http.listen %s: libmicrohttpd did not start "
                              "(epoll mode unavailable?)",
                 listen);
        if (h->mhd) {
            MHD_stop_daemon(h->mhd);
        } else {
            close(fd);
        }
        free(h);
        return NULL;
    }
    ev_io_init(&h->io, kp_http_on_io, info->epoll_fd, EV_READ);
    h->io.data = h;
    ev_io_start(loop, &h->io);
    ev_timer_init(&h->timer, kp_http_on_timer, 0.0, 0.0);
    h->timer.data = h;
    kp_http_drive(h);
    return h;
}

struct kp_http *kp_http_open(struct ev_loop *loop, const char *listen,
                             const struct kp_http_routes *routes, void *arg,
                             char *err, size_t errlen)
{
    return kp_http_open_with(loop, listen, routes, arg, NULL, err, errlen);
}

void kp_http_close(struct kp_http *h)
{
    if (!h) {
        return;
    }
    ev_io_stop(h->loop, &h->io);
    ev_timer_stop(h->loop, &h->timer);
    MHD_stop_daemon(h->mhd);
    free(h);
}

int kp_http_port(const struct kp_http *h)
{
    return h->port;
}


/* ---------------------------------------------------------------------- */
/* Accept negotiation */

static bool kp_http_is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* The q of one media range's parameters [p, e) (";q=0.5"); 1 if absent. */
static double kp_http_qvalue(const char *p, const char *e)
{
    double q = 1.0;
    while (p < e) {
        p++; /* ';' */
        while (p < e && kp_http_is_space(*p)) {
            p++;
        }
        const char *semi = memchr(p, ';', (size_t)(e - p));
        const char *end = semi ? semi : e;
        if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
            char num[16];
            size_t n = KP_MIN((size_t)(end - p - 2), sizeof(num) - 1);
            memcpy(num, p + 2, n);
            num[n] = '\0';
            q = strtod(num, NULL);
        }
        p = end;
    }
    return q;
}

bool kp_http_wants_openmetrics(const char *accept)
{
    double q_om = -1.0, q_text = -1.0;
    const char *p = accept;
    while (p && *p) {
        const char *e = p + strcspn(p, ",");
        while (p < e && kp_http_is_space(*p)) {
            p++;
        }
        const char *semi = memchr(p, ';', (size_t)(e - p));
        const char *tend = semi ? semi : e;
        const char *params = tend;
        while (tend > p && kp_http_is_space(tend[-1])) {
            tend--;
        }
        size_t tl = (size_t)(tend - p);
        double q = kp_http_qvalue(params, e);
        if (tl == 28 && strncasecmp(p, "application/openmetrics-text", tl) ==
                            0) {
            q_om = KP_MAX(q_om, q);
        } else if (tl == 10 && strncasecmp(p, "text/plain", tl) == 0) {
            q_text = KP_MAX(q_text, q);
        }
        p = *e ? e + 1 : e;
    }
    return q_om > 0.0 && q_om >= q_text;
}

/* ---------------------------------------------------------------------- */
/* OpenMetrics -> Prometheus text 0.0.4 */

struct kp_om_conv {
    struct kp_buf *out;
    const char *help;   /* borrowed: pending "# HELP" line, or NULL */
    size_t help_len;
    char family[128];   /* the last TYPE's family */
    char type[16];      /* and its type */
};

static void kp_om_put(struct kp_buf *out, const char *s, size_t n)
{
    kp_buf_put_bytes(out, s, n);
    kp_buf_put_bytes(out, "\n", 1);
}

static void kp_om_flush_help(struct kp_om_conv *cv)
{
    if (cv->help) {
        kp_om_put(cv->out, cv->help, cv->help_len);
        cv->help = NULL;
    }
}

/* The 0.0.4 family name and type of an OpenMetrics family. */
static void kp_om_map(const char *name, const char *type, char *nname,
                      size_t nlen, const char **ntype)
{
    const char *suffix = "";
    *ntype = type;
    if (strcmp(type, "counter") == 0) {
        suffix = "_total";
    } else if (strcmp(type, "info") == 0) {
        suffix = "_info";
        *ntype = "gauge";
    } else if (strcmp(type, "stateset") == 0) {
        *ntype = "gauge";
    } else if (strcmp(type, "unknown") == 0 ||
               strcmp(type, "gaugehistogram") == 0) {
        *ntype = "untyped";
    }
    snprintf(nname, nlen, "%s%s", name, suffix);
}

/* "# TYPE NAME TYPE": the pending HELP and the TYPE, renamed. */
static void kp_om_type_line(struct kp_om_conv *cv, const char *s, size_t n)
{
    char name[128], type[16], nname[160];
    const char *ntype;
    char line[300];
    if (n >= sizeof(line) - 1) {
        kp_om_flush_help(cv);
        kp_om_put(cv->out, s, n);
        return;
    }
    memcpy(line, s, n);
    line[n] = '\0';
    if (sscanf(line, "# TYPE %127s %15s", name, type) != 2) {
        kp_om_flush_help(cv);
        kp_om_put(cv->out, s, n);
        return;
    }
    kp_om_map(name, type, nname, sizeof(nname), &ntype);
    size_t nl = strlen(name);
    if (cv->help && cv->help_len > 7 + nl &&
        memcmp(cv->help + 7, name, nl) == 0 && cv->help[7 + nl] == ' ') {
        kp_buf_put_bytes(cv->out, "# HELP ", 7);
        kp_buf_put_bytes(cv->out, nname, strlen(nname));
        kp_om_put(cv->out, cv->help + 7 + nl, cv->help_len - 7 - nl);
        cv->help = NULL;
    }
    kp_om_flush_help(cv);
    char out[200];
    int len = snprintf(out, sizeof(out), "# TYPE %s %s", nname, ntype);
    kp_om_put(cv->out, out, (size_t)len);
    snprintf(cv->family, sizeof(cv->family), "%s", name);
    snprintf(cv->type, sizeof(cv->type), "%s", type);
}

/* A sample: _created of counters/histograms/summaries dropped, an
 * exemplar (" # {...} v") cut off. */
static void kp_om_sample(struct kp_om_conv *cv, const char *s, size_t n)
{
    size_t name_len = 0;
    while (name_len < n && s[name_len] != '{' && s[name_len] != ' ') {
        name_len++;
    }
    size_t fl = strlen(cv->family);
    if (name_len == fl + 8 && memcmp(s, cv->family, fl) == 0 &&
        memcmp(s + fl, "_created", 8) == 0 &&
        (strcmp(cv->type, "counter") == 0 ||
         strcmp(cv->type, "histogram") == 0 ||
         strcmp(cv->type, "summary") == 0)) {
        return;
    }
    size_t i = name_len;
    if (i < n && s[i] == '{') {
        bool quoted = false;
        for (i++; i < n && (quoted || s[i] != '}'); i++) {
            if (quoted && s[i] == '\\') {
                i++;
            } else if (s[i] == '"') {
                quoted = !quoted;
            }
        }
    }
    for (; i + 2 < n; i++) {
        if (s[i] == ' ' && s[i + 1] == '#' && s[i + 2] == ' ') {
            n = i;
            break;
        }
    }
    kp_om_put(cv->out, s, n);
}

void kp_http_om_to_prometheus(const uint8_t *om, size_t n,
                              struct kp_buf *out)
{
    struct kp_om_conv cv = {.out = out};
    const char *p = (const char *)om;
    const char *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (len == 5 && memcmp(p, "# EOF", 5) == 0) {
            /* dropped */
        } else if (len >= 7 && memcmp(p, "# UNIT ", 7) == 0) {
            /* dropped: 0.0.4 has no units */
        } else if (len >= 7 && memcmp(p, "# HELP ", 7) == 0) {
            kp_om_flush_help(&cv);
            cv.help = p;
            cv.help_len = len;
        } else if (len >= 7 && memcmp(p, "# TYPE ", 7) == 0) {
            kp_om_type_line(&cv, p, len);
        } else if (len > 0) {
            kp_om_flush_help(&cv);
            if (p[0] == '#') {
                kp_om_put(out, p, len);
            } else {
                kp_om_sample(&cv, p, len);
            }
        }
        p += len + 1;
    }
    kp_om_flush_help(&cv);
}
