/*
 * kp_metadata.h - the cluster as kproxyd knows it: which brokers exist
 * (it owns their connections, bootstrap entries first) and which one leads
 * each partition (applied to the router's topics). Refreshed at start,
 * every metadata_refresh_ms, and soon after any error that says it is
 * stale — coalesced, so a storm of errors is one request.
 *
 * Brokers are kept sorted by node id (bootstrap entries have ids -1, -2,
 * ...), so a lookup is a binary search.
 */
#ifndef KP_METADATA_H
#define KP_METADATA_H

#include <ev.h>

#include "kp_broker.h"

struct kp_conf;
struct kp_counters;
struct kp_router;

/* What the producer side hears about brokers (wired by kp_ctx). */
struct kp_metadata_hooks {
    void (*broker_added)(void *arg, struct kp_broker *b);
    void (*broker_removed)(void *arg, struct kp_broker *b); /* then freed */
    void (*broker_state)(void *arg, struct kp_broker *b,
                         enum kp_broker_state from);
    void (*broker_room)(void *arg, struct kp_broker *b);
    void (*applied)(void *arg); /* an answer was applied */
};

struct kp_metadata {
    struct ev_loop *loop;        /* borrowed */
    struct kp_conf *const *conf; /* borrowed: the current configuration */
    struct kp_router *router;    /* borrowed */
    struct kp_counters *n;       /* borrowed */
    struct kp_broker **brokers;  /* owned, sorted by node id */
    size_t broker_cnt;
    struct kp_broker_hooks broker_hooks; /* given to every broker */

    bool inflight;
    size_t asked; /* topics the request in flight asks about */
    bool again; /* another refresh was asked while one was in flight */
    bool have;  /* at least one successful response */
    int64_t last_ms;
    ev_timer timer; /* periodic refresh and retry backoff */

    const struct kp_metadata_hooks *hooks;
    void *arg; /* borrowed: the hooks' argument */
};

/* Creates the bootstrap entries from conf->broker_addrs. */
struct kp_metadata *kp_metadata_create(struct ev_loop *loop,
                                       struct kp_conf *const *conf,
                                       struct kp_router *router,
                                       struct kp_counters *n,
                                       const struct kp_metadata_hooks *hooks,
                                       void *arg);
/* Closes and frees every broker (their requests fail back first). */
void kp_metadata_destroy(struct kp_metadata *md);
void kp_metadata_start(struct kp_metadata *md);
/* Closes every connection (shutdown deadline); in-flight requests fail. */
void kp_metadata_close_all(struct kp_metadata *md);

/* Asks for a refresh as soon as the backoff allows. */
void kp_metadata_refresh(struct kp_metadata *md, const char *why);

/* The broker with that node id, or NULL. */
struct kp_broker *kp_metadata_broker(const struct kp_metadata *md,
                                     int32_t node_id);
/* The best broker that is up and speaks api_key: unthrottled before
 * throttled, real brokers before bootstrap entries, then the fewest
 * requests in flight. NULL when none. */
struct kp_broker *kp_metadata_pick(const struct kp_metadata *md,
                                   int16_t api_key);
/* Whether any broker connection is up. */
bool kp_metadata_any_up(const struct kp_metadata *md);

#endif
