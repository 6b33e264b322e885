/*
 * kp_router.c - the pipeline's shared parts and the topic table, with the
 * hooks to the layers above: memory accounting drives backpressure,
 * settling drives flush barriers, partition changes drive the sender.
 */
#include "kp_router.h"

#include "kp_compress.h"
#include "kp_conf.h"
#include "kp_log.h"

static struct kp_ratelimit kp_router_topics_rl;

static void kp_router_on_changed(void *arg, struct kp_partition *p)
{
    struct kp_router *r = arg;
    r->hooks->changed(r->arg, p);
}

static void kp_router_on_seq_gap(void *arg, int64_t pid, int16_t epoch,
                                 const char *why)
{
    struct kp_router *r = arg;
    r->hooks->seq_gap(r->arg, pid, epoch, why);
}

static void kp_router_set_backpressure(struct kp_router *r, bool on)
{
    int64_t now = kp_mono_ms();

    r->backpressure = on;
    if (on) {
        r->backpressure_since_ms = now;
        kp_info("backpressure: %lld bytes buffered (limit %lld), pausing "
                "reads",
                (long long)r->env.buffered_bytes,
                (long long)r->conf->buffer_bytes);
    } else {
        r->backpressure_total_ms += now - r->backpressure_since_ms;
        kp_info("backpressure released");
    }
    r->hooks->backpressure(r->arg, on);
}

/* Backpressure at buffer_bytes (messages held, and the unfinished lines
 * connections hold), released once a tenth is free again (hysteresis). */
static void kp_router_check_backpressure(struct kp_router *r)
{
    int64_t limit = r->conf->buffer_bytes;
    int64_t held = r->env.buffered_bytes + r->client_bytes;

    if (!r->backpressure && held >= limit) {
        kp_router_set_backpressure(r, true);
    } else if (r->backpressure && held <= limit / 10 * 9) {
        kp_router_set_backpressure(r, false);
    }
}

/* A topic's bytes changed: backpressure, writers waiting for the topic's
 * room; settled messages may complete flush barriers. */
static void kp_router_on_accounted(void *arg, struct kp_account *acct)
{
    struct kp_router *r = arg;

    kp_router_check_backpressure(r);
    kp_topic_on_accounted(&r->topics, acct);
    r->hooks->settled(r->arg);
}

void kp_router_client_bytes(struct kp_router *r, int64_t delta)
{
    r->client_bytes += delta;
    kp_router_check_backpressure(r);
}

static enum kp_reason kp_router_on_stuck(void *arg, int32_t leader,
                                         const char **detail)
{
    struct kp_router *r = arg;
    return r->hooks->stuck ? r->hooks->stuck(r->arg, leader, detail)
                           : KP_REASON_DELIVERY_TIMEOUT;
}

static const struct kp_part_hooks kp_router_part_hooks = {
    .changed = kp_router_on_changed,
    .seq_gap = kp_router_on_seq_gap,
    .accounted = kp_router_on_accounted,
    .stuck = kp_router_on_stuck,
};

/* A lingering batch is due: its partition seals it. */
static void kp_router_on_linger(void *arg, struct kp_batch *b)
{
    (void)arg;
    kp_partition_seal(b->part);
}

struct kp_router *kp_router_create(struct ev_loop *loop, struct kp_conf *conf,
                                   struct kp_counters *n,
                                   struct kp_deadletter *dl,
                                   const struct kp_router_hooks *hooks,
                                   void *arg)
{
    struct kp_router *r = kp_calloc(1, sizeof(*r));

    r->conf = conf;
    r->hooks = hooks;
    r->arg = arg;
    r->cz = kp_compressor_create();
    kp_batch_pool_init(&r->pool, conf->buffer_bytes / 4);
    kp_lingers_init(&r->lingers, loop, kp_router_on_linger, r);
    kp_gens_init(&r->gens);
    r->env = (struct kp_part_env){
        .loop = loop, .cz = r->cz, .pool = &r->pool,
        .lingers = &r->lingers, .gens = &r->gens, .dl = dl, .n = n,
        .bstats = &r->bstats,
        .hooks = &kp_router_part_hooks, .arg = r,
    };
    kp_topic_table_init(&r->topics, &r->env, conf);
    return r;
}

void kp_router_destroy(struct kp_router *r)
{
    kp_topic_table_deinit(&r->topics);
    kp_lingers_deinit(&r->lingers);
    kp_batch_pool_drain(&r->pool);
    kp_gens_deinit(&r->gens);
    kp_compressor_destroy(r->cz);
    free(r);
}

void kp_router_set_deadletter(struct kp_router *r, struct kp_deadletter *dl)
{
    r->env.dl = dl;
}

void kp_router_reconf(struct kp_router *r, struct kp_conf *conf)
{
    r->conf = conf;
    r->pool.limit = conf->buffer_bytes / 4;
    kp_topic_table_reconf(&r->topics, conf);
    kp_router_check_backpressure(r); /* buffer_bytes may have changed */
}

struct kp_topic *kp_router_topic(struct kp_router *r, const char *name,
                                 size_t len)
{
    struct kp_topic *t = kp_topic_lookup(&r->topics, name, len);

    if (!t) {
        if (r->topics.cnt >= (uint32_t)r->conf->max_topics) {
            kp_log_rl(&kp_router_topics_rl, KP_LOG_WARNING,
                      "max_topics (%d) reached: a line for a new topic "
                      "%.*s is rejected (too_many_topics)",
                      r->conf->max_topics, (int)KP_MIN(len, 64), name);
            return NULL;
        }
        t = kp_topic_create(&r->topics, name, len);
        r->hooks->new_topic(r->arg, t);
    }
    return t;
}

/* A timestamp a writer gave that the broker would refuse (Kafka 4 refuses
 * CreateTime more than an hour ahead by default): rejected at read, so it
 * cannot fail the other messages of its batch. */
static bool kp_router_bad_timestamp(const struct kp_router *r,
                                    const struct kp_msg *m)
{
    return m->timestamp >= 0 &&
           m->timestamp - kp_wall_ms() > r->conf->max_timestamp_skew_ms;
}

enum kp_route kp_router_route(struct kp_router *r, struct kp_topic *t,
                              const struct kp_msg *m, int64_t ts,
                              struct kp_tally *tally,
                              const struct kp_header *extra, size_t extra_cnt,
                              bool full_fails, enum kp_reason *why)
{
    if (kp_router_bad_timestamp(r, m)) {
        *why = KP_REASON_BAD_TIMESTAMP;
        return KP_ROUTE_REJECTED;
    }
    return kp_topic_route(&r->topics, t, m, ts, tally, extra, extra_cnt,
                          full_fails, why);
}

void kp_router_wait(struct kp_router *r, struct kp_topic *t,
                    struct kp_topic_waiter *w)
{
    kp_topic_wait(&r->topics, t, w);
}

static void kp_router_seal_topic(struct kp_topic *t, void *arg)
{
    (void)arg;
    for (int32_t i = 0; i < t->part_cnt; i++) {
        kp_partition_seal(t->parts[i]);
    }
}

void kp_router_seal_all(struct kp_router *r)
{
    kp_topic_foreach(&r->topics, kp_router_seal_topic, NULL);
}

void kp_router_drain(struct kp_router *r)
{
    r->seal_now = true;
    kp_router_seal_all(r);
}

struct kp_router_expiry {
    struct kp_topic_table *tt;
    int64_t now_ms;
    const char *idemp_detail;
};

static void kp_router_expire_topic(struct kp_topic *t, void *arg)
{
    struct kp_router_expiry *e = arg;
    kp_topic_expire(e->tt, t, e->now_ms, e->idemp_detail);
}

/* Forgets the topics with nothing held and no line for topic_idle_ms
 * (memory, Metadata requests, metrics series); cached pointers to them
 * go stale with the epoch. */
static void kp_router_forget_idle(struct kp_router *r)
{
    struct kp_topic_table *tt = &r->topics;
    int64_t now = (int64_t)(ev_now(r->env.loop) * 1000);
    uint32_t i = 0;

    while (i < tt->cap) {
        struct kp_topic *t = tt->slots[i];
        if (!t || !kp_topic_idle(t, now, r->conf->topic_idle_ms)) {
            i++;
            continue;
        }
        r->hooks->forget_topic(r->arg, t);
        kp_topic_forget(tt, t); /* slot i may now hold another topic */
        r->topic_epoch++;
    }
}

void kp_router_expire(struct kp_router *r, int64_t now_ms,
                      const char *idemp_detail)
{
    struct kp_router_expiry e = {&r->topics, now_ms, idemp_detail};
    kp_topic_foreach(&r->topics, kp_router_expire_topic, &e);
    kp_router_forget_idle(r);
}

size_t kp_router_md_topics(struct kp_router *r, const char **names,
                           int64_t now_ms)
{
    struct kp_topic_table *tt = &r->topics;
    size_t n = 0;

    for (uint32_t i = 0; i < tt->cap; i++) {
        if (tt->slots[i] && kp_topic_md_due(tt->slots[i], now_ms)) {
            names[n++] = tt->slots[i]->name;
        }
    }
    return n;
}

int64_t kp_router_md_wait_ms(struct kp_router *r, int64_t now_ms)
{
    struct kp_topic_table *tt = &r->topics;
    int64_t wait = -1;

    for (uint32_t i = 0; i < tt->cap; i++) {
        const struct kp_topic *t = tt->slots[i];
        if (t && t->state != KP_TOPIC_READY) {
            int64_t w = KP_MAX(t->md_next_ms - now_ms, 0);
            wait = wait < 0 ? w : KP_MIN(wait, w);
        }
    }
    return wait;
}

struct kp_router_abandonment {
    struct kp_topic_table *tt;
    enum kp_reason why;
};

static void kp_router_abandon_topic(struct kp_topic *t, void *arg)
{
    struct kp_router_abandonment *a = arg;

    for (int32_t i = 0; i < t->part_cnt; i++) {
        kp_partition_abandon(t->parts[i], a->why);
    }
}

void kp_router_abandon(struct kp_router *r, enum kp_reason why)
{
    struct kp_router_abandonment a = {&r->topics, why};
    kp_topic_foreach(&r->topics, kp_router_abandon_topic, &a);
}

static void kp_router_poke_topic(struct kp_topic *t, void *arg)
{
    struct kp_router *r = arg;
    for (int32_t i = 0; i < t->part_cnt; i++) {
        r->hooks->changed(r->arg, t->parts[i]);
    }
}

void kp_router_poke_all(struct kp_router *r)
{
    kp_topic_foreach(&r->topics, kp_router_poke_topic, r);
}

void kp_router_flush_begin(struct kp_router *r, struct kp_barrier *b)
{
    kp_router_seal_all(r);
    kp_gens_barrier(&r->gens, b);
}

bool kp_router_flushed(const struct kp_router *r, const struct kp_barrier *b)
{
    return kp_gens_done(&r->gens, b->gen);
}

void kp_router_flush_end(struct kp_router *r, struct kp_barrier *b)
{
    kp_gens_unwatch(&r->gens, b);
}

bool kp_router_on_metadata(struct kp_router *r, const char *name,
                           int16_t err, int32_t part_cnt,
                           const int32_t *leaders)
{
    struct kp_topic *t = kp_topic_lookup(&r->topics, name, strlen(name));

    if (!t) {
        return false;
    }
    kp_topic_on_metadata(&r->topics, t, err, part_cnt, leaders, r->seal_now);
    return true;
}

uint64_t kp_router_waiters(const struct kp_router *r)
{
    const struct kp_topic_table *tt = &r->topics;
    uint64_t n = 0;

    for (uint32_t i = 0; i < tt->cap; i++) {
        n += tt->slots[i] ? tt->slots[i]->waiter_cnt : 0;
    }
    return n;
}

int64_t kp_router_backpressure_ms(const struct kp_router *r)
{
    int64_t ms = r->backpressure_total_ms;
    if (r->backpressure) {
        ms += kp_mono_ms() - r->backpressure_since_ms;
    }
    return ms;
}
