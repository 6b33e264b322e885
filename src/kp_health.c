/*
 * kp_health.c - readiness and the warnings that alert (see kp_health.h).
 *
 * Everything here reads state its owners keep (brokers' last errors and
 * failure counts, topics' held messages and metadata errors, partitions'
 * queues) and logs; the only state written is when each alert was last
 * given (here, and a topic's alert_ms).
 */
#include "kp_health.h"

#include <stdarg.h>
#include <stdio.h>

#include "kp_broker.h"
#include "kp_conf.h"
#include "kp_idemp.h"
#include "kp_log.h"
#include "kp_metadata.h"
#include "kp_partition.h"
#include "kp_router.h"

/* Partitions named in one stuck-partitions warning; the rest counted. */
#define KP_HEALTH_STUCK_SHOWN 5

/* A log line being built; text past the end is dropped. */
struct kp_hline {
    char s[1536];
    size_t len;
};

static void kp_hput(struct kp_hline *l, const char *fmt, ...) KP_PRINTF(2, 3);

static void kp_hput(struct kp_hline *l, const char *fmt, ...)
{
    size_t room = sizeof(l->s) - l->len;
    va_list ap;

    if (room <= 1) {
        return;
    }
    va_start(ap, fmt);
    int n = vsnprintf(l->s + l->len, room, fmt, ap);
    va_end(ap);
    if (n > 0) {
        l->len += KP_MIN((size_t)n, room - 1);
    }
}

void kp_health_init(struct kp_health *h, int64_t now_ms)
{
    *h = (struct kp_health){.down_since_ms = now_ms};
}

/* ---- brokers ---- */

/* The connections expected to be up: bootstrap entries are retired once
 * real brokers are known. */
static bool kp_health_counted(const struct kp_broker *b)
{
    return !b->retired;
}

static void kp_health_broker_name(struct kp_hline *l, const struct kp_broker *b)
{
    if (b->node_id < 0) {
        kp_hput(l, "bootstrap %s:%d", b->host, b->port);
    } else {
        kp_hput(l, "broker %d (%s:%d)", b->node_id, b->host, b->port);
    }
}

/* Each expected broker and why it is not up: "bootstrap h:p: connect:
 * Connection refused; broker 2 (h:p): connecting". */
static void kp_health_broker_causes(const struct kp_metadata *md,
                                    struct kp_hline *l)
{
    bool first = true;

    for (size_t i = 0; i < md->broker_cnt; i++) {
        const struct kp_broker *b = md->brokers[i];
        if (!kp_health_counted(b)) {
            continue;
        }
        kp_hput(l, "%s", first ? "" : "; ");
        kp_health_broker_name(l, b);
        kp_hput(l, ": %s",
                b->last_error[0] ? b->last_error
                                 : kp_broker_state_names[b->state]);
        first = false;
    }
    if (first) {
        kp_hput(l, "no broker known");
    }
}

/* Whether every expected broker has failed since it last worked. */
static bool kp_health_all_failed(const struct kp_metadata *md)
{
    size_t counted = 0;

    for (size_t i = 0; i < md->broker_cnt; i++) {
        const struct kp_broker *b = md->brokers[i];
        if (!kp_health_counted(b)) {
            continue;
        }
        counted++;
        if (b->failures == 0 && b->state != KP_BROKER_BACKOFF) {
            return false;
        }
    }
    return counted > 0;
}

const char *kp_health_not_ready(const struct kp_health_src *s, char *buf,
                                size_t cap)
{
    struct kp_hline l = {.len = 0};

    if (s->stopping) {
        kp_hput(&l, "shutting down");
    } else if (!s->started) {
        kp_hput(&l, "starting");
    } else if (!kp_metadata_any_up(s->md)) {
        kp_hput(&l, "no broker connection is up (");
        kp_health_broker_causes(s->md, &l);
        kp_hput(&l, ")");
    } else {
        return NULL;
    }
    snprintf(buf, cap, "%s", l.s);
    return buf;
}

/* Returns whether a broker connection is up. */
static bool kp_health_cluster(struct kp_health *h,
                              const struct kp_health_src *s, int64_t now)
{
    if (kp_metadata_any_up(s->md)) {
        if (h->cluster_alert_ms) {
            kp_info("Kafka cluster reachable again (after %lld s)",
                    (long long)(now - h->down_since_ms) / 1000);
        }
        h->down_since_ms = 0;
        h->cluster_alert_ms = 0;
        return true;
    }
    if (!h->down_since_ms) {
        h->down_since_ms = now;
    }
    int64_t down = now - h->down_since_ms;
    if (!kp_health_all_failed(s->md) && down < KP_HEALTH_DOWN_MS) {
        return false;
    }
    if (h->cluster_alert_ms &&
        now - h->cluster_alert_ms < KP_HEALTH_REPEAT_MS) {
        return false;
    }
    struct kp_hline l = {.len = 0};
    kp_health_broker_causes(s->md, &l);
    kp_warn("cannot reach the Kafka cluster: no broker connection for "
            "%lld s (%s); %llu message(s) waiting, failing after "
            "delivery_timeout_ms, %llu writer(s) paused for topic metadata "
            "or room - check `brokers` in %s, name resolution, "
            "routes and firewalls to those ports, and the security "
            "(TLS, SASL) settings",
            (long long)down / 1000, l.s,
            (unsigned long long)s->router->env.queued_msgs,
            (unsigned long long)kp_router_waiters(s->router),
            s->conf->path ? s->conf->path : "the configuration");
    h->cluster_alert_ms = now;
    return false;
}

/* ---- partitions ---- */

/* How long a batch may wait before its partition is a stuck one. */
static int64_t kp_health_stuck_ms(const struct kp_producer_conf *pc)
{
    return KP_MIN((int64_t)KP_HEALTH_STUCK_MS, pc->delivery_timeout_ms / 2);
}

struct kp_health_walk {
    const struct kp_health_src *s;
    int64_t now;
    struct kp_hline l;
    unsigned stuck; /* partitions found */
};

/* Why partition p's head batch (of producer settings pc) is not moving. */
static void kp_health_part_why(const struct kp_health_src *s,
                               const struct kp_partition *p,
                               const struct kp_producer_conf *pc,
                               struct kp_hline *l)
{
    const struct kp_broker *b =
        p->leader >= 0 ? kp_metadata_broker(s->md, p->leader) : NULL;

    if (p->leader < 0) {
        kp_hput(l, "no leader");
    } else if (!b) {
        kp_hput(l, "leader %d not among the known brokers", p->leader);
    } else if (b->state != KP_BROKER_UP) {
        kp_hput(l, "leader broker %d (%s:%d) %s%s%s", b->node_id, b->host,
                b->port, kp_broker_state_names[b->state],
                b->last_error[0] ? ": " : "", b->last_error);
    } else if (p->backing_off) {
        kp_hput(l, "retrying after errors from broker %d", b->node_id);
    } else if (p->inflight > 0) {
        kp_hput(l, "%d request(s) in flight to broker %d", p->inflight,
                p->inflight_node);
    } else if (pc->idempotence && s->idemp->state != KP_IDEMP_READY) {
        kp_hput(l, "no producer id (InitProducerId %s)",
                kp_idemp_state_names[s->idemp->state]);
    } else {
        kp_hput(l, "waiting to be sent to broker %d", b->node_id);
    }
}

static void kp_health_parts(struct kp_topic *t, void *arg)
{
    struct kp_health_walk *w = arg;

    for (int32_t i = 0; i < t->part_cnt; i++) {
        const struct kp_partition *p = t->parts[i];
        const struct kp_batch *b = TAILQ_FIRST(&p->queue);
        if (!b) {
            continue;
        }
        int64_t age = w->now - b->created_ms;
        if (age < kp_health_stuck_ms(b->pconf)) {
            continue;
        }
        if (++w->stuck > KP_HEALTH_STUCK_SHOWN) {
            continue;
        }
        kp_hput(&w->l, "%s%s[%d] waiting %lld s, ", w->stuck > 1 ? "; " : "",
                t->name, p->id, (long long)age / 1000);
        kp_health_part_why(w->s, p, b->pconf, &w->l);
    }
}

static void kp_health_stuck(struct kp_health *h, const struct kp_health_src *s,
                            int64_t now)
{
    struct kp_health_walk w = {.s = s, .now = now};

    kp_topic_foreach((struct kp_topic_table *)&s->router->topics,
                     kp_health_parts, &w);
    if (w.stuck == 0) {
        if (h->stuck_alert_ms) {
            kp_info("partitions make progress again");
        }
        h->stuck_alert_ms = 0;
        return;
    }
    if (h->stuck_alert_ms && now - h->stuck_alert_ms < KP_HEALTH_REPEAT_MS) {
        return;
    }
    if (w.stuck > KP_HEALTH_STUCK_SHOWN) {
        kp_hput(&w.l, "; and %u more", w.stuck - KP_HEALTH_STUCK_SHOWN);
    }
    kp_warn("%u partition(s) make no progress: %s - their messages fail "
            "after delivery_timeout_ms; check the leaders' brokers "
            "(kproxyd_broker_up, their logs) and the partitions' leaders "
            "and in-sync replicas (kafka-topics.sh --describe)",
            w.stuck, w.l.s);
    h->stuck_alert_ms = now;
}

/* ---- entry points ---- */

void kp_health_check(struct kp_health *h, const struct kp_health_src *s,
                     int64_t now_ms)
{
    if (kp_health_cluster(h, s, now_ms)) {
        kp_health_stuck(h, s, now_ms);
    } /* else the one cause worth a warning is given */
}
