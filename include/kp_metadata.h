/*
 * kp_metadata.h - the cluster as kproxyd knows it: which brokers exist
 * (it owns their connections, bootstrap entries first) and which one leads
 * each partition (applied to the router's topics). Refreshed at start,
 * every metadata_refresh_ms, and soon after any error that says it is
 * stale — coalesced, so a storm of errors is one request.
 *
 * Brokers are kept sorted by node id (bootstrap entries have ids -1, -2,
 * ...), so a lookup is a binary search.
 *
 * A Metadata answer is input, not truth (DESIGN 19): an answer listing
 * more than KP_MD_MAX_BROKERS brokers is ignored whole (before it is even
 * decoded), a broker entry with an impossible host, port or id is skipped,
 * a topic whose partition ids are not exactly 0..n-1 (or more than
 * KP_MD_MAX_PARTITIONS) is left as it was, and the log lines all this
 * causes are rate-limited. Brokers an answer no longer lists leave: they
 * are retired at once and freed from the prepare phase, never inside a
 * callback chain that may still use them.
 */
#ifndef KP_METADATA_H
#define KP_METADATA_H

#include <ev.h>

#include "kp_broker.h"
#include "kp_reason.h"

struct kp_conf;
struct kp_counters;
struct kp_md_topic;
struct kp_router;

/* The most brokers one answer may list (a real cluster has far fewer). */
#define KP_MD_MAX_BROKERS 4096
/* The most partitions believed for one topic. */
#define KP_MD_MAX_PARTITIONS 32768

/* What the producer side hears about brokers (wired by kp_ctx). */
struct kp_metadata_hooks {
    void (*broker_added)(void *arg, struct kp_broker *b);
    /* b leaves: retired (closed), freed later, never used again. */
    void (*broker_removed)(void *arg, struct kp_broker *b);
    void (*broker_state)(void *arg, struct kp_broker *b,
                         enum kp_broker_state from);
    void (*broker_room)(void *arg, struct kp_broker *b);
    void (*applied)(void *arg); /* an answer was applied */
};

struct kp_metadata {
    struct ev_loop *loop;            /* borrowed */
    struct kp_conf *const *conf;     /* borrowed: the current config */
    const struct kp_broker_env *env; /* borrowed: given to every broker */
    struct kp_router *router;        /* borrowed */
    struct kp_counters *n;           /* borrowed */
    struct kp_broker **brokers;      /* owned, sorted by node id */
    size_t broker_cnt;
    struct kp_broker **gone; /* owned: left, freed by `reaper` */
    size_t gone_cnt;
    ev_prepare reaper;
    struct kp_broker_hooks broker_hooks; /* given to every broker */

    bool inflight;
    size_t asked; /* topics the request in flight asks about */
    bool again; /* another refresh was asked while one was in flight */
    bool have;  /* at least one successful response */
    int64_t last_ms;
    ev_timer timer;                /* periodic refresh and retry backoff */

    /* stats */
    uint64_t answers_refused; /* ignored whole: too many brokers */
    uint64_t brokers_skipped; /* entries with an impossible host/port */
    uint64_t topics_skipped;  /* entries with impossible partitions */
    uint64_t brokers_left;    /* forgotten: no longer in the cluster */

    const struct kp_metadata_hooks *hooks;
    void *arg; /* borrowed: the hooks' argument */
};

/* Creates the bootstrap entries from conf->broker_addrs. */
struct kp_metadata *
kp_metadata_create(struct ev_loop *loop, struct kp_conf *const *conf,
                   const struct kp_broker_env *env, struct kp_router *router,
                   struct kp_counters *n, const struct kp_metadata_hooks *hooks,
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

/*
 * Why messages waiting for `leader` (-1: no leader known, or no metadata
 * at all) are still undelivered at their delivery timeout:
 * KP_REASON_AUTHENTICATION when that broker's last attempt failed its TLS
 * or SASL handshake (for -1: when no broker is up and one failed so),
 * with *detail naming the broker and the cause (valid until the next
 * call); else KP_REASON_DELIVERY_TIMEOUT and *detail untouched.
 */
enum kp_reason kp_metadata_stuck(const struct kp_metadata *md, int32_t leader,
                                 const char **detail);

/* ---- pure checks of untrusted answers (unit tests, fuzzing) ---- */

/* The broker count an encoded Metadata response body claims, read without
 * decoding it (-1 when it does not even get that far). */
int32_t kp_metadata_peek_brokers(const uint8_t *body, size_t len,
                                 int16_t version);
/* Whether a broker entry is one to believe: an id >= 0, a port 1..65535,
 * a host that is a DNS name or an IP literal of sane length. */
bool kp_metadata_broker_ok(int32_t node_id, const char *host, int32_t port);
/* A topic entry's leaders by partition id (malloc'd, *cnt entries, -1 for
 * a partition without a usable leader), or NULL when the ids are not
 * exactly 0..n-1 or n > KP_MD_MAX_PARTITIONS (*why says which). */
int32_t *kp_metadata_leaders(const struct kp_md_topic *mt, int32_t *cnt,
                             const char **why);

#endif
