/*
 * check_http.c - kp_http served from a libev loop, with its clients in the
 * same loop (nonblocking sockets with ev_io watchers), so every wait is on
 * an event: each route and its Content-Type, the Accept negotiation, 404,
 * 405, HEAD, a client stalled half-way through its request while another
 * is answered, the connection limit (the extra client is answered only
 * once a slot frees), a bind error, and the OpenMetrics -> Prometheus text
 * conversion. A 20 s ev_timer fails a test that would otherwise hang; no
 * test waits on time.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_buf.h"
#include "kp_http.h"

/* ---- routes ---- */

struct app {
    int ready;
    int metrics_calls;
};

static int r_metrics(void *arg, struct kp_buf *body, const char **ct,
                     bool om)
{
    struct app *a = arg;
    const char *om_text = "# HELP kproxyd_x Things.\n"
                          "# TYPE kproxyd_x counter\n"
                          "kproxyd_x_total 3\n"
                          "# EOF\n";
    a->metrics_calls++;
    (void)ct;
    if (om) {
        kp_buf_put_bytes(body, om_text, strlen(om_text));
    } else {
        kp_http_om_to_prometheus((const uint8_t *)om_text, strlen(om_text),
                                 body);
    }
    return 200;
}

static int r_stats(void *arg, struct kp_buf *body, const char **ct, bool om)
{
    (void)arg;
    (void)ct;
    (void)om;
    kp_buf_put_bytes(body, "{\"received\":1}\n", 15);
    return 200;
}

static int r_readyz(void *arg, struct kp_buf *body, const char **ct, bool om)
{
    struct app *a = arg;
    (void)ct;
    (void)om;
    if (a->ready) {
        kp_buf_put_bytes(body, "ready\n", 6);
        return 200;
    }
    kp_buf_put_bytes(body, "no broker connection is up\n", 27);
    return 503;
}

static const struct kp_http_routes routes = {
    .metrics = r_metrics, .stats = r_stats, .readyz = r_readyz};

/* ---- clients in the loop ---- */

struct client {
    int fd;
    ev_io w;
    struct kp_buf in;
    bool eof;
    int *pending; /* clients still waiting; the loop stops at 0 */
};

static void on_client(struct ev_loop *loop, ev_io *w, int revents)
{
    struct client *c = w->data;
    (void)revents;
    for (;;) {
        uint8_t *dst = kp_buf_reserve(&c->in, 4096);
        ssize_t n = recv(c->fd, dst, 4096, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        break; /* EOF or reset */
    }
    c->eof = true;
    ev_io_stop(loop, w);
    --*c->pending;
    ev_break(loop, EVBREAK_ONE); /* wait_for looks at who finished */
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    ck_abort_msg("test deadline: no event came");
}

static struct ev_loop *loop;
static ev_timer deadline;
static struct kp_http *http;
static struct app app;
static int pending;

static void setup(void)
{
    char err[256];
    loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer_init(&deadline, on_deadline, 20.0, 0.0);
    ev_timer_start(loop, &deadline);
    memset(&app, 0, sizeof(app));
    pending = 0;
    struct kp_http_limits lim = {.max_connections = 4};
    http = kp_http_open_with(loop, "127.0.0.1:0", &routes, &app, &lim, err,
                             sizeof(err));
    ck_assert_msg(http != NULL, "%s", err);
    ck_assert_int_gt(kp_http_port(http), 0);
}

static void teardown(void)
{
    kp_http_close(http);
    ev_timer_stop(loop, &deadline);
    ev_loop_destroy(loop);
}

/* Connects (loopback: completes in the kernel's backlog even before the
 * server accepts), sends `req`, watches for the answer. */
static void client_start(struct client *c, const char *req)
{
    memset(c, 0, sizeof(*c));
    kp_buf_init(&c->in, 0);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(c->fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)kp_http_port(http))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(fcntl(c->fd, F_SETFL, O_NONBLOCK), 0);
    size_t n = strlen(req);
    ck_assert_int_eq(send(c->fd, req, n, MSG_NOSIGNAL), (ssize_t)n);
    c->pending = &pending;
    pending++;
    ev_io_init(&c->w, on_client, c->fd, EV_READ);
    c->w.data = c;
    ev_io_start(loop, &c->w);
}

static void client_send(struct client *c, const char *more)
{
    size_t n = strlen(more);
    ck_assert_int_eq(send(c->fd, more, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void client_done(struct client *c)
{
    if (!c->eof) {
        ev_io_stop(loop, &c->w);
        pending--;
    }
    close(c->fd);
    kp_buf_deinit(&c->in);
}

/* Runs the loop until c has seen EOF (the server closed after its
 * response: every request says Connection: close). */
static void wait_for(struct client *c)
{
    while (!c->eof) {
        ev_run(loop, 0);
    }
}

struct resp {
    int status;
    char ctype[128];
    char allow[64];
    const char *body;
    size_t body_len;
};

/* Parses the one response c received (Connection: close). */
static struct resp parse(struct client *c)
{
    struct resp r;
    memset(&r, 0, sizeof(r));
    kp_buf_put_bytes(&c->in, "", 1);
    c->in.len--;
    const char *s = (const char *)c->in.data;
    ck_assert_msg(s && sscanf(s, "HTTP/1.1 %d", &r.status) == 1,
                  "response: %s", s ? s : "(none)");
    const char *end = strstr(s, "\r\n\r\n");
    ck_assert_ptr_nonnull(end);
    for (const char *l = strstr(s, "\r\n") + 2; l < end;
         l = strstr(l, "\r\n") + 2) {
        size_t ll = (size_t)(strstr(l, "\r\n") - l);
        if (strncasecmp(l, "Content-Type: ", 14) == 0) {
            snprintf(r.ctype, sizeof(r.ctype), "%.*s", (int)ll - 14, l + 14);
        } else if (strncasecmp(l, "Allow: ", 7) == 0) {
            snprintf(r.allow, sizeof(r.allow), "%.*s", (int)ll - 7, l + 7);
        }
    }
    r.body = end + 4;
    r.body_len = c->in.len - (size_t)(r.body - s);
    return r;
}

static struct resp get(struct client *c, const char *method,
                       const char *path, const char *extra)
{
    size_t n = strlen(method) + strlen(path) + (extra ? strlen(extra) : 0);
    char *req = kp_malloc(n + 100);
    snprintf(req, n + 100,
             "%s %s HTTP/1.1\r\nHost: localhost\r\n%sConnection: close\r\n\r\n",
             method, path, extra ? extra : "");
    client_start(c, req);
    free(req);
    wait_for(c);
    return parse(c);
}

#define PROM_ACCEPT                                                            \
    "Accept: application/openmetrics-text;version=1.0.0,"                      \
    "application/openmetrics-text;version=0.0.1;q=0.75,"                       \
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"

START_TEST(test_routes)
{
    struct client c;
    struct resp r = get(&c, "GET", "/metrics", PROM_ACCEPT);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.ctype, KP_HTTP_CT_OPENMETRICS);
    ck_assert_uint_eq(r.body_len, 74);
    ck_assert_mem_eq(r.body + r.body_len - 6, "# EOF\n", 6);
    client_done(&c);

    r = get(&c, "GET", "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.ctype, KP_HTTP_CT_PROMETHEUS);
    ck_assert_str_eq(r.body, "# HELP kproxyd_x_total Things.\n"
                             "# TYPE kproxyd_x_total counter\n"
                             "kproxyd_x_total 3\n");
    client_done(&c);

    r = get(&c, "GET", "/stats", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.ctype, KP_HTTP_CT_JSON);
    ck_assert_str_eq(r.body, "{\"received\":1}\n");
    client_done(&c);

    r = get(&c, "GET", "/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.ctype, KP_HTTP_CT_TEXT);
    ck_assert_str_eq(r.body, "ok\n");
    client_done(&c);

    r = get(&c, "GET", "/readyz", NULL);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(r.ctype, KP_HTTP_CT_TEXT);
    ck_assert_str_eq(r.body, "no broker connection is up\n");
    client_done(&c);
    app.ready = 1;
    r = get(&c, "GET", "/readyz", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "ready\n");
    client_done(&c);

    /* a query string does not change the route */
    r = get(&c, "GET", "/stats?pretty=1", NULL);
    ck_assert_int_eq(r.status, 200);
    client_done(&c);
}
END_TEST

START_TEST(test_not_found_and_methods)
{
    struct client c;
    struct resp r = get(&c, "GET", "/", NULL);
    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(r.ctype, KP_HTTP_CT_TEXT);
    client_done(&c);
    r = get(&c, "GET", "/metrics/x", NULL);
    ck_assert_int_eq(r.status, 404);
    client_done(&c);

    r = get(&c, "POST", "/metrics", "Content-Length: 5\r\n");
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(r.allow, "GET, HEAD");
    client_done(&c);
    r = get(&c, "DELETE", "/readyz", NULL);
    ck_assert_int_eq(r.status, 405);
    client_done(&c);
    ck_assert_int_eq(app.metrics_calls, 0);

    /* HEAD: the GET's headers, no body */
    r = get(&c, "HEAD", "/stats", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.ctype, KP_HTTP_CT_JSON);
    ck_assert_uint_eq(r.body_len, 0);
    client_done(&c);

    /* a request head larger than the connection's memory is refused and
     * closed; the server goes on */
    char *big = kp_malloc(40000);
    memset(big, 'a', 40000);
    memcpy(big, "X-Big: ", 7);
    memcpy(big + 40000 - 3, "\r\n", 3);
    r = get(&c, "GET", "/healthz", big);
    ck_assert_msg(r.status == 431 || r.status == 413, "%d", r.status);
    free(big);
    client_done(&c);
    r = get(&c, "GET", "/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    client_done(&c);
}
END_TEST

/* A client that sends half a request and stalls does not hold up another
 * client's request in the same loop. */
START_TEST(test_stalled_client)
{
    struct client slow, fast;
    client_start(&slow, "GET /stats HTTP/1.1\r\nHost: x\r\n");
    struct resp r = get(&fast, "GET", "/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert(!slow.eof);
    ck_assert_uint_eq(slow.in.len, 0);
    client_done(&fast);

    client_send(&slow, "Connection: close\r\n\r\n");
    wait_for(&slow);
    r = parse(&slow);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"received\":1}\n");
    client_done(&slow);
}
END_TEST

/* Steps the loop until the server holds n connections. */
static void wait_connections(unsigned n)
{
    while (kp_http_connections(http) != n) {
        ev_run(loop, EVRUN_ONCE);
    }
}

/* At the limit (4 here) a fifth client is not served until a slot frees;
 * then it is. */
START_TEST(test_connection_limit)
{
    struct client idle[4], extra;
    for (int i = 0; i < 4; i++) {
        client_start(&idle[i], "GET /healthz HTTP/1.1\r\n");
    }
    wait_connections(4);
    client_start(&extra, "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                         "Connection: close\r\n\r\n");
    /* Whatever the loop does now, the fifth is not taken on. */
    for (int i = 0; i < 50; i++) {
        ev_run(loop, EVRUN_NOWAIT);
    }
    ck_assert_uint_eq(kp_http_connections(http), 4);
    ck_assert(!extra.eof);
    ck_assert_uint_eq(extra.in.len, 0);

    /* one idle client finishes its request: its slot goes to the fifth */
    client_send(&idle[0], "Host: x\r\nConnection: close\r\n\r\n");
    wait_for(&idle[0]);
    wait_for(&extra);
    ck_assert(!idle[1].eof);
    struct resp r = parse(&extra);
    ck_assert_int_eq(r.status, 200);
    r = parse(&idle[0]);
    ck_assert_int_eq(r.status, 200);
    for (int i = 0; i < 4; i++) {
        client_done(&idle[i]);
    }
    client_done(&extra);
}
END_TEST

START_TEST(test_listen_errors)
{
    char err[256];
    struct kp_http *h2 = NULL;
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", kp_http_port(http));
    h2 = kp_http_open(loop, addr, &routes, &app, err, sizeof(err));
    ck_assert_ptr_null(h2);
    ck_assert_msg(strstr(err, "bind: Address already in use"), "%s", err);

    static const char *const bad[] = {"127.0.0.1", "::1:80", "[::1:80",
                                      "host:", "256.1.1.1:80",
                                      "127.0.0.1:http"};
    for (size_t i = 0; i < KP_ARRAY_LEN(bad); i++) {
        h2 = kp_http_open(loop, bad[i], &routes, &app, err, sizeof(err));
        ck_assert_msg(h2 == NULL, "%s accepted", bad[i]);
        ck_assert_msg(strstr(err, bad[i]) != NULL, "%s", err);
    }
    /* IPv6 loopback, where the machine has it */
    h2 = kp_http_open(loop, "[::1]:0", &routes, &app, err, sizeof(err));
    if (h2) {
        ck_assert_int_gt(kp_http_port(h2), 0);
        kp_http_close(h2);
    }
    kp_http_close(NULL);
}
END_TEST

START_TEST(test_accept_negotiation)
{
    ck_assert(!kp_http_wants_openmetrics(NULL));
    ck_assert(!kp_http_wants_openmetrics(""));
    ck_assert(!kp_http_wants_openmetrics("*/*"));
    ck_assert(!kp_http_wants_openmetrics("text/plain"));
    ck_assert(kp_http_wants_openmetrics("application/openmetrics-text"));
    ck_assert(kp_http_wants_openmetrics(
        "application/openmetrics-text;version=1.0.0,"
        "application/openmetrics-text;version=0.0.1;q=0.75,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
    ck_assert(kp_http_wants_openmetrics(
        "text/plain; q=0.4, Application/OpenMetrics-Text ; version=1.0.0"));
    ck_assert(!kp_http_wants_openmetrics(
        "application/openmetrics-text;q=0.3,text/plain;version=0.0.4"));
    ck_assert(!kp_http_wants_openmetrics("application/openmetrics-text;q=0"));
    ck_assert(!kp_http_wants_openmetrics("application/openmetrics-textx"));
    /* Prometheus 2.x with protobuf first */
    ck_assert(kp_http_wants_openmetrics(
        "application/vnd.google.protobuf;proto=io.prometheus.client."
        "MetricFamily;encoding=delimited;q=0.7,"
        "application/openmetrics-text;version=1.0.0;q=0.6,"
        "text/plain;version=0.0.4;q=0.5"));
}
END_TEST

START_TEST(test_om_to_prometheus)
{
    const char *om =
        "# HELP kproxyd_build kproxyd version.\n"
        "# TYPE kproxyd_build info\n"
        "kproxyd_build_info{version=\"0.1.0\"} 1\n"
        "# HELP kproxyd_sent_bytes Bytes sent.\n"
        "# TYPE kproxyd_sent_bytes counter\n"
        "# UNIT kproxyd_sent_bytes bytes\n"
        "kproxyd_sent_bytes_total{broker=\"1\"} 10 # {trace=\"a # b\"} 1\n"
        "kproxyd_sent_bytes_created{broker=\"1\"} 1.7e9\n"
        "# HELP kproxyd_lat_seconds Latency.\n"
        "# TYPE kproxyd_lat_seconds histogram\n"
        "# UNIT kproxyd_lat_seconds seconds\n"
        "kproxyd_lat_seconds_bucket{le=\"0.1\",x=\"}\\\" # \"} 1\n"
        "kproxyd_lat_seconds_bucket{le=\"+Inf\"} 2\n"
        "kproxyd_lat_seconds_count 2\n"
        "kproxyd_lat_seconds_sum 0.5\n"
        "# TYPE kproxyd_odd unknown\n"
        "kproxyd_odd 1\n"
        "# EOF\n";
    struct kp_buf b;
    kp_buf_init(&b, 0);
    kp_http_om_to_prometheus((const uint8_t *)om, strlen(om), &b);
    kp_buf_put_bytes(&b, "", 1);
    ck_assert_str_eq(
        (const char *)b.data,
        "# HELP kproxyd_build_info kproxyd version.\n"
        "# TYPE kproxyd_build_info gauge\n"
        "kproxyd_build_info{version=\"0.1.0\"} 1\n"
        "# HELP kproxyd_sent_bytes_total Bytes sent.\n"
        "# TYPE kproxyd_sent_bytes_total counter\n"
        "kproxyd_sent_bytes_total{broker=\"1\"} 10\n"
        "# HELP kproxyd_lat_seconds Latency.\n"
        "# TYPE kproxyd_lat_seconds histogram\n"
        "kproxyd_lat_seconds_bucket{le=\"0.1\",x=\"}\\\" # \"} 1\n"
        "kproxyd_lat_seconds_bucket{le=\"+Inf\"} 2\n"
        "kproxyd_lat_seconds_count 2\n"
        "kproxyd_lat_seconds_sum 0.5\n"
        "# TYPE kproxyd_odd untyped\n"
        "kproxyd_odd 1\n");
    kp_buf_deinit(&b);
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("server");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_routes);
    tcase_add_test(tc, test_not_found_and_methods);
    tcase_add_test(tc, test_stalled_client);
    tcase_add_test(tc, test_connection_limit);
    tcase_add_test(tc, test_listen_errors);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    TCase *tp = tcase_create("pure");
    tcase_add_test(tp, test_accept_negotiation);
    tcase_add_test(tp, test_om_to_prometheus);
    suite_add_tcase(s, tp);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
