/*
 * kp_ctx.h - the root: it creates the parts, connects their hooks, and
 * runs the loop's housekeeping (prepare phase, delivery-timeout sweep,
 * signals, reload, the SIGTERM drain). It holds wiring only; every piece
 * of state has its own owner:
 *
 *   conf            kp_conf (immutable, swapped whole on reload)
 *   counters        struct kp_counters here, incremented by each module
 *   topics, batches kp_router (kp_topic, kp_partition, kp_batch)
 *   brokers         kp_metadata (kp_broker connections)
 *   producer id     kp_idemp
 *   ready lists     kp_produce (one kp_sender per broker)
 *   clients         kp_clients (kp_client, kp_listener)
 *   control, notify kp_control, kp_systemd
 *   http            kp_http (routes here render kp_stats, kp_health)
 *   alerts, /readyz kp_health
 *   disk spool      kp_spool (storage), used by kp_router
 *
 * Tests build their own loop (ev_loop_new) and context.
 */
#ifndef KP_CTX_H
#define KP_CTX_H

#include <ev.h>

#include "kp_broker.h"
#include "kp_client.h"
#include "kp_counters.h"
#include "kp_health.h"
#include "kp_idemp.h"
#include "kp_produce.h"

struct kp_conf;
struct kp_control;
struct kp_deadletter;
struct kp_spool;
struct kp_http;
struct kp_listener;
struct kp_metadata;
struct kp_router;
struct kp_systemd;

struct kp_ctx {
    struct ev_loop *loop;      /* borrowed */
    struct kp_conf *conf;      /* owned reference: the current config */
    struct kp_conf *boot_conf; /* owned reference: the one listeners, the
                                  control socket and brokers started with */
    char *const *overrides;    /* borrowed: -X, re-applied on reload */
    size_t override_cnt;
    int64_t start_ms;
    int64_t reload_wall_ms; /* when the last reload was tried, 0 = never */
    struct kp_counters n;

    struct kp_deadletter *dl;       /* owned, may be NULL */
    struct kp_spool *spool;         /* owned, NULL without spool.dir */
    struct kp_router *router;       /* owned */
    /* What broker connections share: its resolver and TLS context are
     * owned here (created at start, the TLS context again on reload). */
    struct kp_broker_env net;
    struct kp_metadata *md;         /* owned */
    struct kp_idemp idemp;
    struct kp_produce produce;
    struct kp_clients clients;
    struct kp_listener **listeners; /* owned */
    size_t listener_cnt;
    struct kp_control *control; /* owned, may be NULL */
    struct kp_systemd *systemd; /* owned, NULL outside systemd */
    struct kp_http *http;       /* owned, NULL without http.listen */
    struct kp_health health;

    ev_prepare prepare; /* send requests, reap clients, end the drain */
    ev_timer sweep;     /* delivery timeouts, once a second */
    ev_timer stop_timer;
    ev_timer drain_tick; /* wakes the loop while draining */
    ev_signal sig_term, sig_int, sig_hup;
    bool started; /* listeners bound and serving */
    bool stopping;
    int64_t stop_ms; /* loop time the drain began */
    int exit_code;
};

struct kp_ctx *kp_ctx_create(struct ev_loop *loop, struct kp_conf *conf);
void kp_ctx_destroy(struct kp_ctx *ctx);
/* Binds listeners, the control socket and http.listen, starts watchers;
 * KP_ERROR (logged) is a start-up error. */
int kp_ctx_start(struct kp_ctx *ctx);
/* Begins the drain of SIGTERM/SIGINT. */
void kp_ctx_shutdown(struct kp_ctx *ctx);
/* Re-reads the configuration file; errors (if any) in *errtext. */
int kp_ctx_reload(struct kp_ctx *ctx, char **errtext);

#endif
