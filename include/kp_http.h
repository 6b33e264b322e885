/*
 * kp_http.h - the HTTP endpoint for Prometheus and probes (SPEC "HTTP"),
 * served from the caller's libev loop by libmicrohttpd in its external
 * epoll mode: no thread, no blocking call.
 *
 *   GET /metrics   the metrics route; OpenMetrics text when the Accept
 *                  header prefers application/openmetrics-text, else the
 *                  Prometheus text format 0.0.4
 *   GET /stats     the stats route (JSON)
 *   GET /healthz   the healthz route (200 while the loop runs)
 *   GET /readyz    the readyz route (200 ready, 503 + reason)
 *   HEAD           as GET, without the body
 *   other paths    404; a known path with another method: 405
 *
 * Bounded: at most `max_connections` at once (others wait in the listen
 * backlog until one closes), `conn_memory` bytes of request state per
 * connection (a longer request head gets an error and is closed), and an
 * idle connection, a half-sent request included, is closed after
 * `timeout_s`. Sockets are nonblocking, so a slow reader or writer only
 * delays itself.
 *
 * Wiring (layer 4: it knows nothing of kp_ctx; the lead's kp_ctx passes
 * route functions that render kp_stats):
 *
 *   static int http_metrics(void *arg, struct kp_buf *body,
 *                           const char **ct, bool om)
 *   {
 *       struct kp_ctx *ctx = arg;
 *       struct kp_buf tmp;               // or a buffer kept in ctx
 *       kp_buf_init(&tmp, 0);
 *       kp_stats_metrics(ctx, &tmp);     // OpenMetrics, ends "# EOF\n"
 *       tmp.len -= 6;                    // take "# EOF\n" off
 *       kp_procstats_render(true, &tmp);
 *       kp_buf_put_bytes(&tmp, "# EOF\n", 6);
 *       if (om) {
 *           kp_buf_put_bytes(body, tmp.data, tmp.len);
 *       } else {
 *           kp_http_om_to_prometheus(tmp.data, tmp.len, body);
 *       }
 *       kp_buf_deinit(&tmp);
 *       (void)ct;                        // NULL: negotiated default
 *       return 200;
 *   }
 *   ctx->http = kp_http_open(ctx->loop, conf->http.listen, &routes, ctx,
 *                            err, sizeof(err));   // NULL: start-up error
 *   ...
 *   kp_http_close(ctx->http);            // at shutdown, outside callbacks
 */
#ifndef KP_HTTP_H
#define KP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct kp_buf;
struct kp_http;

/* Content types a route may return (or that kp_http uses by default). */
#define KP_HTTP_CT_OPENMETRICS                                                 \
    "application/openmetrics-text; version=1.0.0; charset=utf-8"
#define KP_HTTP_CT_PROMETHEUS "text/plain; version=0.0.4; charset=utf-8"
#define KP_HTTP_CT_JSON "application/json"
#define KP_HTTP_CT_TEXT "text/plain; charset=utf-8"

/*
 * A route: append the response body to *body (empty on entry, owned by
 * kp_http), optionally point *content_type at a static string (left NULL:
 * the route's default, below), and return the HTTP status (200, 503...).
 * openmetrics is the Accept negotiation's answer (it matters to /metrics
 * only). Called from inside the loop, from libmicrohttpd's MHD_run: it must
 * not block and must not call kp_http_close.
 */
typedef int (*kp_http_fn)(void *arg, struct kp_buf *body,
                          const char **content_type, bool openmetrics);

/* A NULL route answers 404, except healthz: NULL is a built-in 200 "ok". */
struct kp_http_routes {
    kp_http_fn metrics; /* default type: OpenMetrics or Prometheus text */
    kp_http_fn stats;   /* default type: KP_HTTP_CT_JSON */
    kp_http_fn healthz; /* default type: KP_HTTP_CT_TEXT */
    kp_http_fn readyz;  /* default type: KP_HTTP_CT_TEXT */
};

/* Bounds; 0 in a field takes its default. */
struct kp_http_limits {
    unsigned max_connections; /* default 64 */
    size_t conn_memory;       /* default 16 KiB per connection */
    unsigned timeout_s;       /* idle connection timeout, default 10 s */
};

/*
 * Binds `listen` ("host:port", "[v6addr]:port", ":port" for every
 * address; port 0 picks a free one, see kp_http_port) and starts serving
 * from `loop`. `routes` is copied; arg (borrowed) is passed to each route.
 * Returns NULL with the reason in err (e.g. "http.listen 127.0.0.1:80:
 * bind: Permission denied"); nothing is logged.
 */
struct kp_http *kp_http_open(struct ev_loop *loop, const char *listen,
                             const struct kp_http_routes *routes, void *arg,
                             char *err, size_t errlen);
/* kp_http_open with explicit bounds (lim may be NULL). */
struct kp_http *kp_http_open_with(struct ev_loop *loop, const char *listen,
                                  const struct kp_http_routes *routes,
                                  void *arg, const struct kp_http_limits *lim,
                                  char *err, size_t errlen);
/* Stops serving, closes every connection and the listening socket, frees
 * h. NULL is fine. Not from inside a route. */
void kp_http_close(struct kp_http *h);

/* The bound port (useful after port 0). */
int kp_http_port(const struct kp_http *h);
/* Connections open now (for a gauge, and tests). */
unsigned kp_http_connections(struct kp_http *h);

/*
 * The Accept header's choice: true when application/openmetrics-text is
 * acceptable (q > 0) and preferred at least as much as text/plain, as
 * Prometheus asks ("application/openmetrics-text;version=1.0.0,...,
 * text/plain;version=0.0.4;q=0.5,*" "/" "*;q=0.1"). NULL: false.
 */
bool kp_http_wants_openmetrics(const char *accept);

/*
 * Appends the Prometheus text format 0.0.4 form of an OpenMetrics
 * exposition om[0..n): "# EOF" and "# UNIT" lines dropped, a counter's
 * family renamed after its sample (NAME -> NAME_total), info families
 * become gauges named NAME_info, stateset a gauge, unknown and
 * gaugehistogram untyped, _created samples and exemplars dropped. Sample
 * timestamps are not converted (kproxyd writes none).
 */
void kp_http_om_to_prometheus(const uint8_t *om, size_t n,
                              struct kp_buf *out);

#endif
