/*
 * kp_health.h - is kproxyd ready, and what should an operator look at:
 * the /readyz answer, and the warnings that alert (SPEC "HTTP", issue 14's
 * "logs that alert"). Layer 4: it only reads the parts below (brokers,
 * topics, partitions) and logs; kp_ctx calls it.
 *
 *   not ready     "starting", "shutting down", or "no broker connection is
 *                 up" with each broker's last error
 *   cluster       no broker connection up: warned once every broker has
 *                 failed (within a second or two for refused or unresolved
 *                 addresses; after 10 s for addresses that never answer),
 *                 with each broker's cause, then every minute while it
 *                 lasts; an info line when a connection is up again
 *   stuck         partitions whose oldest queued batch waits longer than
 *                 min(30 s, delivery_timeout_ms / 2): no leader, the
 *                 leader's connection down, retrying, in flight; one
 *                 summary line, every minute while it lasts
 *
 * Each warning is logged at warning level (seen with log_level warning),
 * at most once per KP_HEALTH_REPEAT_MS while its condition lasts, and
 * says what to check. While the cluster is unreachable the partition
 * warning is left out: its cause is that one. (A topic the cluster does
 * not know is kp_topic's own warning, at once from the Metadata answer;
 * a broker's own connection errors are kp_broker's.)
 */
#ifndef KP_HEALTH_H
#define KP_HEALTH_H

#include "kp_common.h"

struct kp_conf;
struct kp_idemp;
struct kp_metadata;
struct kp_router;

/* What the checks read; every pointer is borrowed. */
struct kp_health_src {
    const struct kp_conf *conf;
    const struct kp_router *router;
    const struct kp_metadata *md;
    const struct kp_idemp *idemp;
    bool started;  /* listeners bound */
    bool stopping; /* SIGTERM's drain */
};

struct kp_health {
    /* Monotonic ms (always > 0) since no broker connection is up; 0 while
     * one is. */
    int64_t down_since_ms;
    int64_t cluster_alert_ms; /* last unreachable warning, 0 = none */
    int64_t stuck_alert_ms;   /* last stuck-partitions warning, 0 = none */
};

/* Repeat interval of one alert while its condition lasts. */
#define KP_HEALTH_REPEAT_MS 60000
/* A partition's oldest queued batch waits at most this long before a
 * warning (less when half the delivery timeout is shorter). */
#define KP_HEALTH_STUCK_MS 30000
/* No broker up for this long is an alert even when some connection
 * attempt has not failed yet (a blackholed address). */
#define KP_HEALTH_DOWN_MS 10000

void kp_health_init(struct kp_health *h, int64_t now_ms);

/* Once a second (kp_ctx's sweep): the cluster, then partitions. */
void kp_health_check(struct kp_health *h, const struct kp_health_src *s,
                     int64_t now_ms);

/*
 * NULL when ready (started, not stopping, a broker connection up), else
 * why not, written into buf (cap bytes) and returned.
 */
const char *kp_health_not_ready(const struct kp_health_src *s, char *buf,
                                size_t cap);

#endif
