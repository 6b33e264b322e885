/*
 * kp_ctx.c - the root: creation from a configuration, the hooks that
 * connect the layers, the loop's housekeeping (prepare: send requests and
 * reap clients; sweep: delivery timeouts), reload, and the SIGTERM drain.
 */
#include "kp_ctx.h"

#include <stdio.h>

#include "kp_buf.h"
#include "kp_conf.h"
#include "kp_control.h"
#include "kp_deadletter.h"
#include "kp_dns.h"
#include "kp_http.h"
#include "kp_listener.h"
#include "kp_log.h"
#include "kp_metadata.h"
#include "kp_router.h"
#include "kp_spool.h"
#include "kp_stats.h"
#include "kp_systemd.h"
#include "kp_tls.h"

/* At shutdown, a writer that keeps its connection open but has sent
 * nothing for this long is let go (without a summary) once all it wrote
 * is settled; one still writing is read on to its EOF. */
#define KP_CTX_QUIET_MS 500

static void kp_ctx_on_prepare(struct ev_loop *loop, ev_prepare *w,
                              int revents);
static void kp_ctx_on_sweep(struct ev_loop *loop, ev_timer *w, int revents);
static void kp_ctx_on_signal(struct ev_loop *loop, ev_signal *w, int revents);
static void kp_ctx_on_stop_timer(struct ev_loop *loop, ev_timer *w,
                                 int revents);

/* Only wakes the loop during the drain: the prepare phase does the work. */
static void kp_ctx_on_drain_tick(struct ev_loop *loop, ev_timer *w,
                                 int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* ---- hooks: the router (topics, partitions) ---- */

static void kp_ctx_on_changed(void *arg, struct kp_partition *p)
{
    struct kp_ctx *ctx = arg;
    kp_produce_on_changed(&ctx->produce, p);
}

static void kp_ctx_on_seq_gap(void *arg, int64_t pid, int16_t epoch,
                              const char *why)
{
    struct kp_ctx *ctx = arg;
    kp_idemp_gap(&ctx->idemp, pid, epoch, why);
}

static void kp_ctx_on_new_topic(void *arg, struct kp_topic *t)
{
    struct kp_ctx *ctx = arg;
    (void)t;
    kp_metadata_refresh(ctx->md, "new topic");
}

static void kp_ctx_on_forget_topic(void *arg, struct kp_topic *t)
{
    struct kp_ctx *ctx = arg;
    kp_produce_forget(&ctx->produce, t);
}

static void kp_ctx_on_backpressure(void *arg, bool on)
{
    struct kp_ctx *ctx = arg;
    if (!ctx->stopping) {
        kp_clients_pause(&ctx->clients, on);
    }
}

static void kp_ctx_on_settled(void *arg)
{
    struct kp_ctx *ctx = arg;
    if (ctx->control) {
        kp_control_check_flush(ctx->control);
    }
}

/* Why messages waiting for a leader time out: the brokers know. */
static enum kp_reason kp_ctx_on_stuck(void *arg, int32_t leader,
                                      const char **detail)
{
    struct kp_ctx *ctx = arg;
    return kp_metadata_stuck(ctx->md, leader, detail);
}

static const struct kp_router_hooks kp_ctx_router_hooks = {
    .changed = kp_ctx_on_changed,
    .stuck = kp_ctx_on_stuck,
    .seq_gap = kp_ctx_on_seq_gap,
    .new_topic = kp_ctx_on_new_topic,
    .forget_topic = kp_ctx_on_forget_topic,
    .backpressure = kp_ctx_on_backpressure,
    .settled = kp_ctx_on_settled,
};

/* ---- hooks: brokers and metadata ---- */

static void kp_ctx_on_broker_added(void *arg, struct kp_broker *b)
{
    struct kp_ctx *ctx = arg;
    kp_produce_adopt(&ctx->produce, b);
}

static void kp_ctx_on_broker_removed(void *arg, struct kp_broker *b)
{
    struct kp_ctx *ctx = arg;
    kp_produce_release(&ctx->produce, b);
}

static void kp_ctx_on_broker_state(void *arg, struct kp_broker *b,
                                   enum kp_broker_state from)
{
    struct kp_ctx *ctx = arg;
    (void)from;

    kp_produce_on_broker_state(&ctx->produce, b);
    if (b->state == KP_BROKER_UP) {
        kp_idemp_kick(&ctx->idemp);
        kp_router_poke_all(ctx->router);
    }
}

static void kp_ctx_on_broker_room(void *arg, struct kp_broker *b)
{
    struct kp_ctx *ctx = arg;
    kp_produce_on_room(&ctx->produce, b);
}

static void kp_ctx_on_md_applied(void *arg)
{
    struct kp_ctx *ctx = arg;
    kp_idemp_kick(&ctx->idemp);
}

static const struct kp_metadata_hooks kp_ctx_md_hooks = {
    .broker_added = kp_ctx_on_broker_added,
    .broker_removed = kp_ctx_on_broker_removed,
    .broker_state = kp_ctx_on_broker_state,
    .broker_room = kp_ctx_on_broker_room,
    .applied = kp_ctx_on_md_applied,
};

static void kp_ctx_on_pid(void *arg)
{
    struct kp_ctx *ctx = arg;
    kp_router_poke_all(ctx->router);
}

/* ---- hooks: control socket and systemd ---- */

static void kp_ctx_stats_src(struct kp_ctx *ctx, struct kp_stats_src *s)
{
    *s = (struct kp_stats_src){
        .conf = ctx->conf, .n = &ctx->n, .router = ctx->router,
        .md = ctx->md, .clients = &ctx->clients, .idemp = &ctx->idemp,
        .start_ms = ctx->start_ms, .reload_wall_ms = ctx->reload_wall_ms,
    };
}

static void kp_ctx_health_src(struct kp_ctx *ctx, struct kp_health_src *s)
{
    *s = (struct kp_health_src){
        .conf = ctx->conf, .router = ctx->router, .md = ctx->md,
        .idemp = &ctx->idemp, .started = ctx->started,
        .stopping = ctx->stopping,
    };
}

static void kp_ctx_stats(void *arg, struct kp_buf *out)
{
    struct kp_stats_src s;
    kp_ctx_stats_src(arg, &s);
    kp_stats_json(&s, out);
}

static void kp_ctx_metrics(void *arg, struct kp_buf *out)
{
    struct kp_stats_src s;
    kp_ctx_stats_src(arg, &s);
    kp_stats_metrics(&s, out);
}

static void kp_ctx_flush_begin(void *arg, struct kp_barrier *b)
{
    struct kp_ctx *ctx = arg;
    kp_router_flush_begin(ctx->router, b);
}

static bool kp_ctx_flushed(void *arg, const struct kp_barrier *b)
{
    struct kp_ctx *ctx = arg;
    return kp_router_flushed(ctx->router, b);
}

static void kp_ctx_flush_end(void *arg, struct kp_barrier *b)
{
    struct kp_ctx *ctx = arg;
    kp_router_flush_end(ctx->router, b);
}

static int kp_ctx_control_reload(void *arg, char **err)
{
    return kp_ctx_reload(arg, err);
}

static const struct kp_control_ops kp_ctx_control_ops = {
    .stats = kp_ctx_stats,
    .metrics = kp_ctx_metrics,
    .flush_begin = kp_ctx_flush_begin,
    .flushed = kp_ctx_flushed,
    .flush_end = kp_ctx_flush_end,
    .reload = kp_ctx_control_reload,
};

/* ---- hooks: HTTP (the routes of kp_http) ---- */

/* OpenMetrics, or converted to the Prometheus text format. */
static int kp_ctx_http_metrics(void *arg, struct kp_buf *body,
                               const char **content_type, bool openmetrics)
{
    struct kp_buf om;
    (void)content_type;

    if (openmetrics) {
        kp_ctx_metrics(arg, body);
        return 200;
    }
    kp_buf_init(&om, 64 * 1024);
    kp_ctx_metrics(arg, &om);
    kp_http_om_to_prometheus(om.data, om.len, body);
    kp_buf_deinit(&om);
    return 200;
}

static int kp_ctx_http_stats(void *arg, struct kp_buf *body,
                             const char **content_type, bool openmetrics)
{
    (void)content_type;
    (void)openmetrics;
    kp_ctx_stats(arg, body);
    return 200;
}

/* 200 "ok", or 503 with the reason (SPEC "HTTP"). */
static int kp_ctx_http_readyz(void *arg, struct kp_buf *body,
                              const char **content_type, bool openmetrics)
{
    struct kp_health_src hs;
    char why[512];
    (void)content_type;
    (void)openmetrics;

    kp_ctx_health_src(arg, &hs);
    if (!kp_health_not_ready(&hs, why, sizeof(why))) {
        kp_buf_put_bytes(body, "ok\n", 3);
        return 200;
    }
    kp_buf_put_bytes(body, "not ready: ", 11);
    kp_buf_put_bytes(body, why, strlen(why));
    kp_buf_put_bytes(body, "\n", 1);
    return 503;
}

static const struct kp_http_routes kp_ctx_http_routes = {
    .metrics = kp_ctx_http_metrics,
    .stats = kp_ctx_http_stats,
    .healthz = NULL, /* kp_http's own: 200 while the loop runs */
    .readyz = kp_ctx_http_readyz,
};

static void kp_ctx_status(void *arg, char *buf, size_t cap)
{
    struct kp_ctx *ctx = arg;
    snprintf(buf, cap,
             "received %llu, delivered %llu, failed %llu, rejected %llu, "
             "queued %llu, clients %u%s",
             (unsigned long long)ctx->n.received,
             (unsigned long long)ctx->n.delivered,
             (unsigned long long)ctx->n.failed,
             (unsigned long long)ctx->n.rejected,
             (unsigned long long)ctx->router->env.queued_msgs,
             ctx->clients.cnt,
             ctx->router->backpressure ? ", backpressure" : "");
}

/* ---- life cycle ---- */

static void kp_ctx_init_watchers(struct kp_ctx *ctx)
{
    ev_prepare_init(&ctx->prepare, kp_ctx_on_prepare);
    ev_timer_init(&ctx->sweep, kp_ctx_on_sweep, 1., 1.);
    ev_timer_init(&ctx->stop_timer, kp_ctx_on_stop_timer, 0., 0.);
    ev_timer_init(&ctx->drain_tick, kp_ctx_on_drain_tick, 0., 0.);
    ev_signal_init(&ctx->sig_term, kp_ctx_on_signal, SIGTERM);
    ev_signal_init(&ctx->sig_int, kp_ctx_on_signal, SIGINT);
    ev_signal_init(&ctx->sig_hup, kp_ctx_on_signal, SIGHUP);
    ctx->prepare.data = ctx->sweep.data = ctx->stop_timer.data = ctx;
    ctx->sig_term.data = ctx->sig_int.data = ctx->sig_hup.data = ctx;
}

/* Takes over the caller's reference to conf. */
struct kp_ctx *kp_ctx_create(struct ev_loop *loop, struct kp_conf *conf)
{
    struct kp_ctx *ctx = kp_calloc(1, sizeof(*ctx));

    ctx->loop = loop;
    ctx->conf = conf;
    ctx->boot_conf = kp_conf_get(conf);
    ctx->start_ms = kp_mono_ms();
    kp_health_init(&ctx->health, ctx->start_ms);
    ctx->router = kp_router_create(loop, conf, &ctx->n, NULL,
                                   &kp_ctx_router_hooks, ctx);
    kp_produce_init(&ctx->produce, &ctx->conf, NULL, &ctx->idemp, &ctx->n);
    ctx->md = kp_metadata_create(loop, &ctx->conf, &ctx->net, ctx->router,
                                 &ctx->n, &kp_ctx_md_hooks, ctx);
    ctx->produce.md = ctx->md;
    kp_idemp_init(&ctx->idemp, loop, &ctx->conf, ctx->md, kp_ctx_on_pid,
                  ctx);
    kp_clients_init(&ctx->clients, loop, &ctx->conf, ctx->router, &ctx->n);
    kp_ctx_init_watchers(ctx);
    return ctx;
}

void kp_ctx_destroy(struct kp_ctx *ctx)
{
    kp_http_close(ctx->http);
    ev_prepare_stop(ctx->loop, &ctx->prepare);
    ev_timer_stop(ctx->loop, &ctx->sweep);
    ev_timer_stop(ctx->loop, &ctx->stop_timer);
    ev_timer_stop(ctx->loop, &ctx->drain_tick);
    ev_signal_stop(ctx->loop, &ctx->sig_term);
    ev_signal_stop(ctx->loop, &ctx->sig_int);
    ev_signal_stop(ctx->loop, &ctx->sig_hup);
    kp_systemd_stop(ctx->systemd);
    for (size_t i = 0; i < ctx->listener_cnt; i++) {
        kp_listener_close(ctx->listeners[i]);
    }
    free(ctx->listeners);
    if (ctx->control) {
        kp_control_close(ctx->control);
    }
    kp_clients_deinit(&ctx->clients);
    /* Brokers first: closing them hands in-flight batches back. */
    kp_metadata_destroy(ctx->md);
    if (ctx->net.dns) {
        kp_dns_destroy(ctx->net.dns);
    }
    if (ctx->net.tls) {
        kp_tls_ctx_put(ctx->net.tls);
    }
    kp_idemp_deinit(&ctx->idemp);
    kp_router_destroy(ctx->router);
    if (ctx->spool) {
        /* what is not acknowledged stays for the next start */
        kp_spool_close(ctx->spool);
    }
    kp_deadletter_close(ctx->dl);
    kp_conf_put(ctx->boot_conf);
    kp_conf_put(ctx->conf);
    free(ctx);
}

/* Listeners and the control socket, inherited from systemd or bound. */
static int kp_ctx_open_sockets(struct kp_ctx *ctx, struct kp_activation *act)
{
    const struct kp_conf *c = ctx->boot_conf;

    ctx->listeners = kp_calloc(c->listener_cnt, sizeof(*ctx->listeners));
    for (size_t i = 0; i < c->listener_cnt; i++) {
        struct kp_listener *l = kp_listener_open(ctx->loop, &ctx->clients,
                                                 act, &c->listeners[i]);
        if (!l) {
            return KP_ERROR;
        }
        ctx->listeners[ctx->listener_cnt++] = l;
    }
    if (c->control) {
        ctx->control = kp_control_open(ctx->loop, act, c->control,
                                       &kp_ctx_control_ops, ctx);
        if (!ctx->control) {
            return KP_ERROR;
        }
    }
    return KP_OK;
}

/* A TLS context from c's security.tls, or NULL when c's protocol has no
 * TLS (*err stays ""); NULL with *err set when the files do not load. */
static struct kp_tls_ctx *kp_ctx_tls(const struct kp_conf *c, char *err,
                                     size_t errlen)
{
    enum kp_sec_protocol p = c->security.protocol;

    err[0] = '\0';
    if (p != KP_SEC_SSL && p != KP_SEC_SASL_SSL) {
        return NULL;
    }
    if (!c->security.tls.verify) {
        kp_warn("security.tls.verify is false: broker certificates and "
                "host names are NOT checked");
    }
    return kp_tls_ctx_create(&c->security.tls, err, errlen);
}

/*
 * The resolver and TLS context broker connections share. Test-only:
 * KPROXYD_TEST_DNS_SERVERS ("127.0.0.1:5353") replaces the system's DNS
 * servers (resolv.conf and /etc/hosts still apply), so the integration
 * tests can point kproxyd at a server that never answers.
 */
static int kp_ctx_start_net(struct kp_ctx *ctx)
{
    const struct kp_conf *c = ctx->boot_conf;
    char err[512];
    struct kp_dns_opts o = {
        .timeout_ms = KP_MIN(c->producer.request_timeout_ms, 5000),
        .servers = getenv("KPROXYD_TEST_DNS_SERVERS"),
    };

    ctx->net.boot = c;
    ctx->net.dns = kp_dns_create(ctx->loop, &o);
    if (!ctx->net.dns) {
        return KP_ERROR;
    }
    ctx->net.tls = kp_ctx_tls(c, err, sizeof(err));
    if (!ctx->net.tls && err[0]) {
        kp_err("security.tls: %s", err);
        return KP_ERROR;
    }
    return KP_OK;
}

/* http.listen, after the listeners: a bind error is a start-up error. */
static int kp_ctx_open_http(struct kp_ctx *ctx)
{
    const char *listen = ctx->boot_conf->http.listen;
    char err[256];

    if (!listen) {
        return KP_OK;
    }
    ctx->http = kp_http_open(ctx->loop, listen, &kp_ctx_http_routes, ctx,
                             err, sizeof(err));
    if (!ctx->http) {
        kp_err("%s", err);
        return KP_ERROR;
    }
    kp_info("http: listening on port %d (http.listen %s)",
            kp_http_port(ctx->http), listen);
    return KP_OK;
}

/* The disk spool (spool.dir), opened and recovered before any writer is
 * read: what an earlier run left goes first. */
static int kp_ctx_open_spool(struct kp_ctx *ctx)
{
    const struct kp_conf *c = ctx->boot_conf;
    struct kp_spool_recovery rec;

    if (!c->spool.dir) {
        return KP_OK;
    }
    /* A reload that raises message_max_bytes beyond this is warned about
     * (kp_router_reconf): the limit holds until a restart. */
    struct kp_spool_opts o = {
        .max_bytes = c->spool.max_bytes,
        .max_record = (size_t)kp_conf_max_message(c) + KP_SPOOL_REC_SLACK,
        .fsync_ms = c->spool.fsync_ms,
        .loop = ctx->loop,
    };
    ctx->spool = kp_spool_open(c->spool.dir, &o, &rec, NULL, 0);
    if (!ctx->spool) {
        kp_err("spool: cannot open spool.dir %s (above); start-up failed",
               c->spool.dir);
        return KP_ERROR;
    }
    kp_info("spool %s (%s, max_bytes %lld%s): %llu segment(s), %llu "
            "message(s) to send, %llu torn record(s) cut",
            c->spool.dir, kp_spool_mode_names[c->spool.mode],
            (long long)c->spool.max_bytes,
            c->spool.fsync_ms >= 0 ? ", fsync_ms" : "",
            (unsigned long long)rec.segments,
            (unsigned long long)rec.backlog, (unsigned long long)rec.torn);
    kp_router_set_spool(ctx->router, ctx->spool, c->spool.mode);
    return KP_OK;
}

int kp_ctx_start(struct kp_ctx *ctx)
{
    struct kp_activation act = {0};

    if (kp_ctx_start_net(ctx) != KP_OK) {
        return KP_ERROR;
    }
    kp_activation_init(&act);
    int rc = kp_ctx_open_sockets(ctx, &act);
    kp_activation_done(&act);
    if (rc != KP_OK) {
        return KP_ERROR;
    }
    if (ctx->boot_conf->dead_letter) {
        ctx->dl = kp_deadletter_open(ctx->boot_conf->dead_letter);
        if (!ctx->dl) {
            return KP_ERROR;
        }
        kp_router_set_deadletter(ctx->router, ctx->dl);
    }
    if (kp_ctx_open_spool(ctx) != KP_OK) {
        return KP_ERROR;
    }
    if (kp_ctx_open_http(ctx) != KP_OK) {
        return KP_ERROR;
    }
    for (size_t i = 0; i < ctx->listener_cnt; i++) {
        kp_listener_start(ctx->listeners[i]);
    }
    ctx->started = true;
    ev_prepare_start(ctx->loop, &ctx->prepare);
    ev_timer_start(ctx->loop, &ctx->sweep);
    if (ev_is_default_loop(ctx->loop)) {
        ev_signal_start(ctx->loop, &ctx->sig_term);
        ev_signal_start(ctx->loop, &ctx->sig_int);
        ev_signal_start(ctx->loop, &ctx->sig_hup);
    }
    kp_idemp_kick(&ctx->idemp);
    kp_metadata_start(ctx->md);
    ctx->systemd = kp_systemd_start(ctx->loop, kp_ctx_status, ctx);
    return KP_OK;
}

static void kp_ctx_on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kp_ctx *ctx = w->data;
    struct kp_health_src hs;
    int64_t now = kp_mono_ms();
    (void)loop;
    (void)revents;

    kp_router_expire(ctx->router, now,
                     ctx->idemp.state == KP_IDEMP_UNSUPPORTED
                         ? "brokers lack InitProducerId"
                         : NULL);
    kp_router_spool_retry(ctx->router);
    kp_ctx_health_src(ctx, &hs);
    kp_health_check(&ctx->health, &hs, now);
}

/* Everything read is settled and every summary written; clients that
 * keep their connection open with nothing more to send are let go. */
static bool kp_ctx_drained(struct kp_ctx *ctx)
{
    return ctx->router->env.queued_msgs == 0 &&
           ctx->router->spilled_cnt == 0 &&
           kp_clients_close_idle(&ctx->clients, ctx->stop_ms,
                                 KP_CTX_QUIET_MS);
}

static void kp_ctx_on_prepare(struct ev_loop *loop, ev_prepare *w,
                              int revents)
{
    struct kp_ctx *ctx = w->data;
    (void)revents;

    /* writers a topic woke go first: what they route is sent now */
    kp_clients_resume(&ctx->clients);
    kp_router_pump(ctx->router);
    if (ctx->stopping) {
        /* the drain: what writers wrote since goes out at once */
        kp_router_seal_all(ctx->router);
    }
    if (ctx->spool) {
        /* records reach the file before any request that carries them:
         * a process killed now loses nothing Kafka may have */
        kp_spool_flush(ctx->spool);
    }
    kp_produce_flush(&ctx->produce);
    kp_clients_reap(&ctx->clients);
    if (ctx->stopping && kp_ctx_drained(ctx)) {
        kp_info("shutdown: everything delivered or failed");
        ev_break(loop, EVBREAK_ALL);
    }
}

void kp_ctx_shutdown(struct kp_ctx *ctx)
{
    if (ctx->stopping) {
        return;
    }
    ctx->stopping = true;
    ctx->stop_ms = (int64_t)(ev_now(ctx->loop) * 1000);
    kp_systemd_notify("STOPPING=1");
    kp_info("shutdown: draining (up to %d ms)",
            ctx->conf->shutdown_timeout_ms);
    for (size_t i = 0; i < ctx->listener_cnt; i++) {
        kp_listener_stop(ctx->listeners[i]);
    }
    /* Clients are read on, to their EOF (or the deadline): what they
     * write meanwhile is delivered too, and their summaries are true. */
    kp_router_drain(ctx->router);
    ev_timer_set(&ctx->stop_timer, ctx->conf->shutdown_timeout_ms / 1000.0,
                 0.);
    ev_timer_start(ctx->loop, &ctx->stop_timer);
    /* wakes the loop so that quiet writers are noticed */
    ev_timer_set(&ctx->drain_tick, 0.1, 0.1);
    ev_timer_start(ctx->loop, &ctx->drain_tick);
}

/* The deadline: what is left fails (dead letter first), exit status 3. */
static void kp_ctx_on_stop_timer(struct ev_loop *loop, ev_timer *w,
                                 int revents)
{
    struct kp_ctx *ctx = w->data;
    uint64_t left = ctx->router->env.queued_msgs;
    uint64_t failed = ctx->n.failed, kept = ctx->n.spool_kept;
    (void)revents;

    kp_warn("shutdown: timeout; %llu message(s) undelivered",
            (unsigned long long)left + ctx->router->spilled_cnt);
    /* In-flight batches fail as shutdown_unconfirmed (they may be in
     * Kafka), the rest as shutdown; with a spool, what it keeps does not
     * fail: it is sent after the next start. */
    kp_produce_abandon(&ctx->produce);
    kp_metadata_close_all(ctx->md);
    kp_router_abandon(ctx->router, KP_REASON_SHUTDOWN);
    kp_clients_close_all(&ctx->clients);
    if (ctx->spool) {
        kp_warn("shutdown: %llu message(s) left in the spool for the next "
                "start",
                (unsigned long long)(ctx->n.spool_kept - kept +
                                     ctx->router->spilled_cnt));
    }
    if (ctx->n.failed > failed) {
        ctx->exit_code = 3;
    }
    ev_break(loop, EVBREAK_ALL);
}

/* The configuration's problems as one line (malloc'd), each logged. */
static char *kp_ctx_reload_errors(struct kp_conf_errors *errs)
{
    struct kp_buf msg;

    kp_buf_init(&msg, 256);
    for (size_t i = 0; i < errs->cnt; i++) {
        kp_err("reload: %s", errs->msgs[i]);
        kp_buf_put_bytes(&msg, errs->msgs[i], strlen(errs->msgs[i]));
        if (i + 1 < errs->cnt) {
            kp_buf_put_bytes(&msg, "; ", 2);
        }
    }
    kp_buf_put_i8(&msg, 0);
    return (char *)msg.data;
}

static void kp_ctx_reloaded(struct kp_ctx *ctx, bool ok)
{
    if (ok) {
        ctx->n.reloads++;
    } else {
        ctx->n.reload_failures++;
    }
    ctx->n.last_reload_failed = !ok;
    ctx->reload_wall_ms = kp_wall_ms();
    kp_systemd_notify("READY=1");
}

/* The certificate files are read again for new connections (rotated
 * files are picked up; security itself needs a restart, so they are the
 * files the daemon started with); live connections keep the context they
 * started with. A context that fails to load keeps the old one. */
static void kp_ctx_reload_tls(struct kp_ctx *ctx)
{
    char err[512];

    if (!ctx->net.tls) {
        return;
    }
    struct kp_tls_ctx *t = kp_ctx_tls(ctx->boot_conf, err, sizeof(err));
    if (!t) {
        kp_err("reload: security.tls: %s; new connections keep the "
               "certificates read before",
               err);
        return;
    }
    kp_tls_ctx_put(ctx->net.tls);
    ctx->net.tls = t;
    kp_info("reload: TLS certificates read again for new connections");
}

int kp_ctx_reload(struct kp_ctx *ctx, char **errtext)
{
    struct kp_conf_errors errs = {0};
    struct kp_conf *old = ctx->conf;

    kp_systemd_notify("RELOADING=1");
    struct kp_conf *c = kp_conf_load(old->path, ctx->overrides,
                                     ctx->override_cnt, &errs);
    if (!c) {
        char *msg = kp_ctx_reload_errors(&errs);
        kp_conf_errors_deinit(&errs);
        if (errtext) {
            *errtext = msg;
        } else {
            free(msg);
        }
        kp_err("reload: configuration rejected; keeping the old one");
        kp_ctx_reloaded(ctx, false);
        return KP_ERROR;
    }
    kp_conf_restart_diff(old, c);
    kp_ctx_reload_tls(ctx);
    ctx->conf = c;
    kp_conf_put(old);
    kp_log_set_level((enum kp_log_level)c->log_level);
    kp_router_reconf(ctx->router, c);
    kp_clients_reconf(&ctx->clients);
    kp_idemp_kick(&ctx->idemp);
    kp_info("reload: configuration applied");
    kp_ctx_reloaded(ctx, true);
    return KP_OK;
}

static void kp_ctx_on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct kp_ctx *ctx = w->data;
    (void)loop;
    (void)revents;

    if (w->signum == SIGHUP) {
        kp_info("SIGHUP: reloading %s", ctx->conf->path ? ctx->conf->path
                                                        : "(no file)");
        kp_ctx_reload(ctx, NULL);
        return;
    }
    kp_info("%s: shutting down", w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
    kp_ctx_shutdown(ctx);
}
