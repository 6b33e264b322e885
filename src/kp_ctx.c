/*
 * kp_ctx.c - the root object: creation from a configuration, the loop's
 * housekeeping watchers (prepare: flush brokers and reap clients; sweep:
 * delivery timeouts; linger timers), memory accounting with backpressure,
 * reload, and the SIGTERM drain.
 */
#include "kp_ctx.h"

#include <errno.h>
#include <stdio.h>

#include "kp_batch.h"
#include "kp_broker.h"
#include "kp_client.h"
#include "kp_compress.h"
#include "kp_conf.h"
#include "kp_control.h"
#include "kp_deadletter.h"
#include "kp_idemp.h"
#include "kp_listener.h"
#include "kp_log.h"
#include "kp_metadata.h"
#include "kp_partition.h"
#include "kp_stats.h"
#include "kp_systemd.h"

#define KP_READ_CHUNK (256 * 1024)

static void kp_ctx_on_prepare(struct ev_loop *loop, ev_prepare *w,
                              int revents);
static void kp_ctx_on_sweep(struct ev_loop *loop, ev_timer *w, int revents);
static void kp_ctx_on_signal(struct ev_loop *loop, ev_signal *w, int revents);
static void kp_ctx_on_stop_timer(struct ev_loop *loop, ev_timer *w,
                                 int revents);

/* The longest line any topic accepts bounds framing (a topic's own limit
 * is checked once the line is parsed); the shared read buffer holds one
 * such partial line plus a read. */
static void kp_ctx_size_rbuf(struct kp_ctx *ctx)
{
    const struct kp_conf *c = ctx->conf;
    size_t max_line = (size_t)c->producer.message_max_bytes;
    for (size_t i = 0; i < c->topic_cnt; i++) {
        max_line = KP_MAX(max_line,
                          (size_t)c->topics[i].producer.message_max_bytes);
    }
    ctx->max_line = max_line;
    size_t want = max_line + KP_READ_CHUNK;
    if (want > ctx->rbuf_cap) {
        free(ctx->rbuf);
        ctx->rbuf = kp_malloc(want);
        ctx->rbuf_cap = want;
    }
}

/* "host:port" entries were validated by kp_conf. */
static void kp_ctx_bootstrap(struct kp_ctx *ctx)
{
    const struct kp_conf *c = ctx->conf;
    ctx->brokers = kp_calloc(c->broker_cnt, sizeof(*ctx->brokers));
    for (size_t i = 0; i < c->broker_cnt; i++) {
        const char *colon = strrchr(c->brokers[i], ':');
        char *host = kp_strndup(c->brokers[i],
                                colon ? (size_t)(colon - c->brokers[i])
                                      : strlen(c->brokers[i]));
        int port = colon ? atoi(colon + 1) : 9092;
        /* [v6addr]:port */
        if (host[0] == '[' && host[strlen(host) - 1] == ']') {
            memmove(host, host + 1, strlen(host) - 2);
            host[strlen(host) - 2] = '\0';
        }
        ctx->brokers[ctx->broker_cnt++] =
            kp_broker_create(ctx, -1 - (int32_t)i, host, port);
        free(host);
    }
}

/* Takes over the caller's reference to conf. */
struct kp_ctx *kp_ctx_create(struct ev_loop *loop, struct kp_conf *conf)
{
    struct kp_ctx *ctx = kp_calloc(1, sizeof(*ctx));

    ctx->loop = loop;
    ctx->conf = conf;
    ctx->boot_conf = kp_conf_get(conf);
    ctx->start_ms = kp_mono_ms();
    ctx->cz = kp_compressor_create();
    ctx->dead_letter_fd = -1;
    ctx->pid = -1;
    ctx->epoch = -1;
    TAILQ_INIT(&ctx->clients);
    TAILQ_INIT(&ctx->closed);
    TAILQ_INIT(&ctx->dirty);
    kp_line_scratch_init(&ctx->scratch);
    kp_topic_table_init(&ctx->topics);
    kp_gens_init(&ctx->gens);
    kp_ctx_size_rbuf(ctx);
    kp_ctx_bootstrap(ctx);
    ctx->idemp = kp_idemp_wanted(ctx) ? KP_IDEMP_NEED_PID : KP_IDEMP_OFF;
    ev_prepare_init(&ctx->prepare, kp_ctx_on_prepare);
    ev_timer_init(&ctx->sweep, kp_ctx_on_sweep, 1., 1.);
    ev_timer_init(&ctx->stop_timer, kp_ctx_on_stop_timer, 0., 0.);
    ev_timer_init(&ctx->idemp_timer, kp_idemp_on_retry, 0., 0.);
    ev_signal_init(&ctx->sig_term, kp_ctx_on_signal, SIGTERM);
    ev_signal_init(&ctx->sig_int, kp_ctx_on_signal, SIGINT);
    ev_signal_init(&ctx->sig_hup, kp_ctx_on_signal, SIGHUP);
    ctx->prepare.data = ctx->sweep.data = ctx->stop_timer.data = ctx;
    ctx->idemp_timer.data = ctx;
    ctx->sig_term.data = ctx->sig_int.data = ctx->sig_hup.data = ctx;
    return ctx;
}

static void kp_ctx_free_topic(struct kp_ctx *ctx, struct kp_topic *t,
                              void *arg)
{
    (void)arg;
    for (int32_t i = 0; i < t->part_cnt; i++) {
        struct kp_partition *p = t->parts[i];
        struct kp_batch *b;
        ev_timer_stop(ctx->loop, &p->backoff);
        if (p->open) {
            TAILQ_REMOVE(&kp_ctx_linger(ctx, p->open->pconf->linger_ms)->q,
                         p->open, link);
            kp_batch_destroy(p->open);
            p->open = NULL;
        }
        while ((b = TAILQ_FIRST(&p->queue)) != NULL) {
            TAILQ_REMOVE(&p->queue, b, link);
            kp_batch_destroy(b);
        }
    }
}

void kp_ctx_destroy(struct kp_ctx *ctx)
{
    struct kp_client *c;

    ev_prepare_stop(ctx->loop, &ctx->prepare);
    ev_timer_stop(ctx->loop, &ctx->sweep);
    ev_timer_stop(ctx->loop, &ctx->stop_timer);
    ev_timer_stop(ctx->loop, &ctx->idemp_timer);
    ev_signal_stop(ctx->loop, &ctx->sig_term);
    ev_signal_stop(ctx->loop, &ctx->sig_int);
    ev_signal_stop(ctx->loop, &ctx->sig_hup);
    kp_systemd_stop(ctx);
    kp_metadata_stop(ctx);
    for (size_t i = 0; i < ctx->listener_cnt; i++) {
        kp_listener_close(ctx->listeners[i]);
    }
    free(ctx->listeners);
    if (ctx->control) {
        kp_control_close(ctx->control);
    }
    while ((c = TAILQ_FIRST(&ctx->clients)) != NULL) {
        kp_client_close(c);
    }
    while ((c = TAILQ_FIRST(&ctx->closed)) != NULL) {
        TAILQ_REMOVE(&ctx->closed, c, link);
        kp_client_destroy(c);
    }
    /* Brokers first: closing them hands in-flight batches back. */
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        kp_broker_close(ctx->brokers[i], NULL, false);
    }
    kp_topic_foreach(&ctx->topics, kp_ctx_free_topic, ctx, NULL);
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        kp_broker_destroy(ctx->brokers[i]);
    }
    free(ctx->brokers);
    kp_topic_table_deinit(&ctx->topics);
    kp_batch_pool_drain(ctx);
    for (size_t i = 0; i < ctx->linger_cnt; i++) {
        ev_timer_stop(ctx->loop, &ctx->lingers[i]->timer);
        free(ctx->lingers[i]);
    }
    free(ctx->lingers);
    kp_deadletter_close(ctx);
    kp_gens_deinit(&ctx->gens);
    kp_line_scratch_deinit(&ctx->scratch);
    kp_compressor_destroy(ctx->cz);
    kp_stats_deinit(ctx);
    free(ctx->rbuf);
    kp_conf_put(ctx->boot_conf);
    kp_conf_put(ctx->conf);
    free(ctx);
}

int kp_ctx_start(struct kp_ctx *ctx)
{
    const struct kp_conf *c = ctx->boot_conf;

    kp_listener_activation_init(ctx);
    ctx->listeners = kp_calloc(c->listener_cnt, sizeof(*ctx->listeners));
    for (size_t i = 0; i < c->listener_cnt; i++) {
        struct kp_listener *l = kp_listener_open(ctx, &c->listeners[i]);
        if (!l) {
            kp_listener_activation_done(ctx);
            return KP_ERROR;
        }
        ctx->listeners[ctx->listener_cnt++] = l;
    }
    if (c->control) {
        ctx->control = kp_control_open(ctx, c->control);
        if (!ctx->control) {
            kp_listener_activation_done(ctx);
            return KP_ERROR;
        }
    }
    kp_listener_activation_done(ctx);
    if (kp_deadletter_open(ctx) != KP_OK) {
        return KP_ERROR;
    }
    for (size_t i = 0; i < ctx->listener_cnt; i++) {
        kp_listener_start(ctx->listeners[i]);
    }
    ev_prepare_start(ctx->loop, &ctx->prepare);
    ev_timer_start(ctx->loop, &ctx->sweep);
    if (ev_is_default_loop(ctx->loop)) {
        ev_signal_start(ctx->loop, &ctx->sig_term);
        ev_signal_start(ctx->loop, &ctx->sig_int);
        ev_signal_start(ctx->loop, &ctx->sig_hup);
    }
    kp_metadata_start(ctx);
    kp_systemd_start(ctx);
    return KP_OK;
}

struct kp_broker *kp_ctx_broker(struct kp_ctx *ctx, int32_t node_id)
{
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        if (ctx->brokers[i]->node_id == node_id) {
            return ctx->brokers[i];
        }
    }
    return NULL;
}

/* Seals the batches whose linger time has passed, oldest first. */
static void kp_ctx_on_linger(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kp_linger *lg = w->data;
    struct kp_batch *b;
    int64_t now = kp_mono_ms();
    (void)revents;

    while ((b = TAILQ_FIRST(&lg->q)) != NULL &&
           now - b->created_ms >= lg->linger_ms) {
        kp_partition_seal(lg->ctx, b->part);
    }
    if (b) {
        ev_timer_set(w, (double)(b->created_ms + lg->linger_ms - now) / 1e3,
                     0.);
        ev_timer_start(loop, w);
    }
}

struct kp_linger *kp_ctx_linger(struct kp_ctx *ctx, int linger_ms)
{
    for (size_t i = 0; i < ctx->linger_cnt; i++) {
        if (ctx->lingers[i]->linger_ms == linger_ms) {
            return ctx->lingers[i];
        }
    }
    struct kp_linger *lg = kp_calloc(1, sizeof(*lg));
    lg->linger_ms = linger_ms;
    lg->ctx = ctx;
    TAILQ_INIT(&lg->q);
    ev_init(&lg->timer, kp_ctx_on_linger);
    lg->timer.data = lg;
    ctx->lingers = kp_realloc(ctx->lingers,
                              (ctx->linger_cnt + 1) * sizeof(*ctx->lingers));
    ctx->lingers[ctx->linger_cnt++] = lg;
    return lg;
}

static void kp_ctx_set_backpressure(struct kp_ctx *ctx, bool on)
{
    struct kp_client *c;
    int64_t now = kp_mono_ms();

    ctx->backpressure = on;
    if (on) {
        ctx->backpressure_since_ms = now;
        kp_info("backpressure: %lld bytes buffered (limit %lld), pausing "
                "reads",
                (long long)ctx->buffered_bytes,
                (long long)ctx->conf->buffer_bytes);
    } else {
        ctx->backpressure_total_ms += now - ctx->backpressure_since_ms;
        kp_info("backpressure released");
    }
    TAILQ_FOREACH(c, &ctx->clients, link)
    {
        if (on) {
            kp_client_pause(c);
        } else {
            kp_client_resume(c);
        }
    }
}

void kp_ctx_account(struct kp_ctx *ctx, int64_t bytes, int64_t msgs)
{
    int64_t limit = ctx->conf->buffer_bytes;

    ctx->buffered_bytes += bytes;
    ctx->queued_msgs = (uint64_t)((int64_t)ctx->queued_msgs + msgs);
    if (!ctx->backpressure && ctx->buffered_bytes >= limit) {
        kp_ctx_set_backpressure(ctx, true);
    } else if (ctx->backpressure && ctx->buffered_bytes <= limit / 10 * 9) {
        /* hysteresis: resume once a tenth of the buffer is free */
        kp_ctx_set_backpressure(ctx, false);
    }
}

void kp_ctx_tally_settled(struct kp_ctx *ctx, struct kp_tally *t)
{
    (void)ctx;
    if (t->client) {
        kp_client_on_settled(t->client);
    }
}

void kp_ctx_gens_changed(struct kp_ctx *ctx)
{
    if (ctx->control) {
        kp_control_check_flush(ctx->control);
    }
}

static void kp_ctx_expire_topic(struct kp_ctx *ctx, struct kp_topic *t,
                                void *arg)
{
    kp_topic_expire(ctx, t, *(int64_t *)arg);
}

static void kp_ctx_on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kp_ctx *ctx = w->data;
    int64_t now = kp_mono_ms();
    (void)loop;
    (void)revents;

    kp_topic_foreach(&ctx->topics, kp_ctx_expire_topic, ctx, &now);
}

/* Everything read is settled and every summary written. */
static bool kp_ctx_drained(const struct kp_ctx *ctx)
{
    return ctx->queued_msgs == 0 && TAILQ_EMPTY(&ctx->clients);
}

static void kp_ctx_on_prepare(struct ev_loop *loop, ev_prepare *w,
                              int revents)
{
    struct kp_ctx *ctx = w->data;
    struct kp_broker *b;
    struct kp_client *c;
    (void)revents;

    while ((b = TAILQ_FIRST(&ctx->dirty)) != NULL) {
        TAILQ_REMOVE(&ctx->dirty, b, dirty_link);
        b->dirty = false;
        kp_broker_flush(b);
    }
    while ((c = TAILQ_FIRST(&ctx->closed)) != NULL) {
        TAILQ_REMOVE(&ctx->closed, c, link);
        kp_client_destroy(c);
    }
    if (ctx->stopping && kp_ctx_drained(ctx)) {
        kp_info("shutdown: everything delivered or failed");
        ev_break(loop, EVBREAK_ALL);
    }
}

static void kp_ctx_seal_topic(struct kp_ctx *ctx, struct kp_topic *t,
                              void *arg)
{
    (void)arg;
    for (int32_t i = 0; i < t->part_cnt; i++) {
        kp_partition_seal(ctx, t->parts[i]);
    }
}

void kp_ctx_shutdown(struct kp_ctx *ctx)
{
    struct kp_client *c, *next;

    if (ctx->stopping) {
        return;
    }
    ctx->stopping = true;
    kp_systemd_notify(ctx, "STOPPING=1");
    kp_info("shutdown: draining (up to %d ms)",
            ctx->conf->shutdown_timeout_ms);
    for (size_t i = 0; i < ctx->listener_cnt; i++) {
        kp_listener_stop(ctx->listeners[i]);
    }
    /* Read what clients already wrote, whatever the buffer says. */
    for (c = TAILQ_FIRST(&ctx->clients); c; c = next) {
        next = TAILQ_NEXT(c, link);
        c->paused = false;
        kp_client_drain_now(c);
    }
    kp_topic_foreach(&ctx->topics, kp_ctx_seal_topic, ctx, NULL);
    ev_timer_set(&ctx->stop_timer, ctx->conf->shutdown_timeout_ms / 1000.0,
                 0.);
    ev_timer_start(ctx->loop, &ctx->stop_timer);
}

/* Fails (dead-letters) whatever a topic still holds at the deadline. */
static void kp_ctx_abandon_topic(struct kp_ctx *ctx, struct kp_topic *t,
                                 void *arg)
{
    (void)arg;
    kp_topic_fail_held(ctx, t, "shutdown");
    for (int32_t i = 0; i < t->part_cnt; i++) {
        struct kp_partition *p = t->parts[i];
        struct kp_batch *b;
        kp_partition_seal(ctx, p);
        while ((b = TAILQ_FIRST(&p->queue)) != NULL) {
            TAILQ_REMOVE(&p->queue, b, link);
            kp_partition_batch_done(ctx, b, -1, "shutdown");
        }
    }
}

static void kp_ctx_on_stop_timer(struct ev_loop *loop, ev_timer *w,
                                 int revents)
{
    struct kp_ctx *ctx = w->data;
    struct kp_client *c, *next;
    (void)revents;

    kp_warn("shutdown: timeout; %llu message(s) undelivered",
            (unsigned long long)ctx->queued_msgs);
    /* In-flight batches come back to their partitions, then fail. */
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        kp_broker_close(ctx->brokers[i], NULL, false);
    }
    kp_topic_foreach(&ctx->topics, kp_ctx_abandon_topic, ctx, NULL);
    for (c = TAILQ_FIRST(&ctx->clients); c; c = next) {
        next = TAILQ_NEXT(c, link);
        kp_client_close(c);
    }
    ev_break(loop, EVBREAK_ALL);
}

int kp_ctx_reload(struct kp_ctx *ctx, char **errtext)
{
    struct kp_conf_errors errs = {0};
    struct kp_conf *old = ctx->conf, *c;

    kp_systemd_notify(ctx, "RELOADING=1");
    c = kp_conf_load(old->path, ctx->overrides, ctx->override_cnt, &errs);
    if (!c) {
        struct kp_buf msg;
        kp_buf_init(&msg, 256);
        for (size_t i = 0; i < errs.cnt; i++) {
            kp_err("reload: %s", errs.msgs[i]);
            kp_buf_put_bytes(&msg, errs.msgs[i], strlen(errs.msgs[i]));
            kp_buf_put_bytes(&msg, i + 1 < errs.cnt ? "; " : "", 
                             i + 1 < errs.cnt ? 2 : 0);
        }
        kp_buf_put_i8(&msg, 0);
        kp_conf_errors_deinit(&errs);
        if (errtext) {
            *errtext = (char *)msg.data;
        } else {
            kp_buf_deinit(&msg);
        }
        kp_err("reload: configuration rejected; keeping the old one");
        kp_stats_reloaded(ctx, false);
        kp_systemd_notify(ctx, "READY=1");
        return KP_ERROR;
    }
    kp_conf_restart_diff(old, c);
    ctx->conf = c;
    kp_conf_put(old);
    kp_log_set_level((enum kp_log_level)c->log_level);
    kp_topic_table_reconf(ctx);
    kp_ctx_size_rbuf(ctx);
    kp_ctx_account(ctx, 0, 0); /* buffer_bytes may have changed */
    kp_idemp_kick(ctx);
    kp_info("reload: configuration applied");
    kp_stats_reloaded(ctx, true);
    kp_systemd_notify(ctx, "READY=1");
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
