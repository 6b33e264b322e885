/*
 * kp_metadata.c - cluster metadata: which brokers exist, which one leads
 * each partition. One request at a time; asks while one is in flight are
 * coalesced into one more, and requests are spaced by a backoff so that a
 * storm of errors is one refresh.
 */
#include "kp_metadata.h"

#include <ev.h>

#include "kp_broker.h"
#include "kp_conf.h"
#include "kp_ctx.h"
#include "kp_idemp.h"
#include "kp_log.h"
#include "kp_proto.h"
#include "kp_topic.h"

#define KP_MD_MIN_GAP_MS 100 /* between two refreshes */
#define KP_MD_RETRY_MS 250   /* when a topic or leader is still missing */

static void kp_metadata_send(struct kp_ctx *ctx);

static void kp_metadata_on_timer(struct ev_loop *loop, ev_timer *w,
                                 int revents)
{
    struct kp_ctx *ctx = w->data;
    (void)loop;
    (void)revents;
    kp_metadata_send(ctx);
}

static void kp_metadata_schedule(struct kp_ctx *ctx, int64_t in_ms)
{
    double at = (double)KP_MAX(in_ms, 0) / 1000.0;
    if (ev_is_active(&ctx->md_timer) &&
        ev_timer_remaining(ctx->loop, &ctx->md_timer) <= at) {
        return; /* already due sooner */
    }
    ev_timer_stop(ctx->loop, &ctx->md_timer);
    ev_timer_set(&ctx->md_timer, at, 0.);
    ev_timer_start(ctx->loop, &ctx->md_timer);
}

void kp_metadata_start(struct kp_ctx *ctx)
{
    ev_init(&ctx->md_timer, kp_metadata_on_timer);
    ctx->md_timer.data = ctx;
    kp_metadata_schedule(ctx, 0);
}

void kp_metadata_stop(struct kp_ctx *ctx)
{
    ev_timer_stop(ctx->loop, &ctx->md_timer);
}

void kp_metadata_refresh(struct kp_ctx *ctx, const char *why)
{
    if (ctx->md_inflight) {
        ctx->md_again = true;
        return;
    }
    kp_debug("metadata refresh requested: %s", why);
    int64_t wait = ctx->md_last_ms + KP_MD_MIN_GAP_MS - kp_mono_ms();
    kp_metadata_schedule(ctx, wait);
}

/* Rank of a broker for metadata: unthrottled before throttled, real
 * brokers before bootstrap entries; lower is better. */
static int kp_metadata_rank(const struct kp_broker *b, int64_t now)
{
    return (now < b->throttle_until_ms ? 2 : 0) + (b->node_id < 0 ? 1 : 0);
}

/* The best-ranked up broker with the fewest requests in flight. */
static struct kp_broker *kp_metadata_pick(struct kp_ctx *ctx)
{
    struct kp_broker *best = NULL;
    int64_t now = kp_mono_ms();
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        struct kp_broker *b = ctx->brokers[i];
        if (b->state != KP_BROKER_UP) {
            continue;
        }
        int r = kp_metadata_rank(b, now);
        int rb = best ? kp_metadata_rank(best, now) : 0;
        if (!best || r < rb || (r == rb && b->inflight < best->inflight)) {
            best = b;
        }
    }
    return best;
}

/* No broker is up: connect every known one (the bootstrap list too, when
 * no real broker is known or none answers). */
static void kp_metadata_connect_all(struct kp_ctx *ctx)
{
    bool any_real = false;
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        struct kp_broker *b = ctx->brokers[i];
        if (b->node_id >= 0) {
            any_real = true;
            kp_broker_connect(b);
        }
    }
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        struct kp_broker *b = ctx->brokers[i];
        if (b->node_id < 0 && (!any_real || b->decommissioned)) {
            b->decommissioned = false;
            kp_broker_connect(b);
        }
    }
}

static void kp_metadata_collect(struct kp_ctx *ctx, struct kp_topic *t,
                                void *arg)
{
    const char ***names = arg;
    (void)ctx;
    *(*names)++ = t->name;
}

static void kp_metadata_send(struct kp_ctx *ctx)
{
    struct kp_broker *b;

    if (ctx->md_inflight) {
        ctx->md_again = true;
        return;
    }
    b = kp_metadata_pick(ctx);
    if (!b) {
        kp_metadata_connect_all(ctx);
        ctx->md_again = true; /* sent when a broker comes up */
        return;
    }
    const char **names = kp_malloc((ctx->topics.cnt + 1) * sizeof(*names));
    const char **end = names;
    kp_topic_foreach(&ctx->topics, kp_metadata_collect, ctx, &end);
    struct kp_request *r =
        kp_broker_request_start(b, KP_API_METADATA, b->metadata_ver);
    kp_proto_enc_metadata(&r->req, b->metadata_ver, r->corr_id,
                          ctx->conf->client_id, names, (size_t)(end - names),
                          ctx->conf->auto_create_topics);
    free(names);
    ctx->md_inflight = true;
    ctx->md_again = false;
    ctx->md_last_ms = kp_mono_ms();
    ctx->n.metadata_refreshes++;
    kp_debug("metadata request to broker %d (v%d, %u topics)", b->node_id,
             b->metadata_ver, ctx->topics.cnt);
    kp_broker_request_send(b, r);
}

void kp_metadata_on_broker_up(struct kp_ctx *ctx, struct kp_broker *b)
{
    (void)b;
    if (!ctx->md_inflight && (ctx->md_again || !ctx->md_have)) {
        kp_metadata_send(ctx);
    }
}

static void kp_metadata_brokers(struct kp_ctx *ctx,
                                const struct kp_metadata_resp *md)
{
    for (int32_t i = 0; i < md->broker_cnt; i++) {
        const struct kp_md_broker *mb = &md->brokers[i];
        struct kp_broker *b = kp_ctx_broker(ctx, mb->node_id);
        if (mb->node_id < 0) {
            continue;
        }
        if (b) {
            kp_broker_set_addr(b, mb->host, mb->port);
            continue;
        }
        ctx->brokers = kp_realloc(ctx->brokers, (ctx->broker_cnt + 1) *
                                                    sizeof(*ctx->brokers));
        ctx->brokers[ctx->broker_cnt++] =
            kp_broker_create(ctx, mb->node_id, mb->host, mb->port);
        kp_info("broker %d at %s:%d", mb->node_id, mb->host, mb->port);
    }
}

/* Applies one topic's entry; returns whether it is complete (every
 * partition has a leader). */
static bool kp_metadata_topic(struct kp_ctx *ctx, const struct kp_md_topic *mt)
{
    struct kp_topic *t = kp_topic_lookup(&ctx->topics, mt->name,
                                         strlen(mt->name));
    int32_t cnt = 0;
    bool complete = true;

    if (!t) {
        return true;
    }
    for (int32_t i = 0; i < mt->partition_cnt; i++) {
        cnt = KP_MAX(cnt, mt->partitions[i].partition + 1);
    }
    if (mt->error || cnt <= 0 || cnt > 1000000) {
        kp_topic_on_metadata(ctx, t, mt->error ? mt->error : 3, 0, NULL);
        return false;
    }
    int32_t *leaders = kp_malloc((size_t)cnt * sizeof(*leaders));
    for (int32_t i = 0; i < cnt; i++) {
        leaders[i] = -1;
    }
    for (int32_t i = 0; i < mt->partition_cnt; i++) {
        const struct kp_md_partition *mp = &mt->partitions[i];
        if (mp->partition >= 0) {
            leaders[mp->partition] = mp->error == 0 || mp->error == 9
                                         ? mp->leader
                                         : -1;
        }
    }
    for (int32_t i = 0; i < cnt; i++) {
        complete = complete && leaders[i] >= 0 &&
                   kp_ctx_broker(ctx, leaders[i]) != NULL;
    }
    kp_topic_on_metadata(ctx, t, 0, cnt, leaders);
    free(leaders);
    return complete;
}

/* Once real brokers are known the bootstrap connections are closed. */
static void kp_metadata_retire_bootstrap(struct kp_ctx *ctx)
{
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        struct kp_broker *b = ctx->brokers[i];
        if (b->node_id < 0 && !b->decommissioned &&
            TAILQ_EMPTY(&b->reqs)) {
            b->decommissioned = true;
            kp_broker_close(b, NULL, false);
            ev_timer_stop(ctx->loop, &b->timer);
        }
    }
}

void kp_metadata_on_response(struct kp_ctx *ctx, struct kp_broker *b,
                             int16_t version, const uint8_t *body, size_t len)
{
    struct kp_metadata_resp md;
    bool complete = true;

    ctx->md_inflight = false;
    if (!body || kp_proto_dec_metadata(body, len, version, &md) != KP_OK) {
        kp_metadata_schedule(ctx, KP_MD_RETRY_MS);
        if (body) {
            /* An untrusted answer that does not parse: this connection
             * is not to be believed any more. */
            kp_proto_metadata_resp_free(&md);
            kp_broker_close(b, "malformed Metadata response", true);
        }
        return;
    }
    kp_broker_throttle(b, md.throttle_ms);
    kp_metadata_brokers(ctx, &md);
    for (int32_t i = 0; i < md.topic_cnt; i++) {
        if (!kp_metadata_topic(ctx, &md.topics[i])) {
            complete = false;
        }
    }
    if (md.topic_cnt < (int32_t)ctx->topics.cnt) {
        complete = false; /* a topic was added while this was in flight */
    }
    if (!ctx->md_have && md.broker_cnt > 0) {
        kp_info("metadata: %d broker(s), %d topic(s)", md.broker_cnt,
                md.topic_cnt);
    }
    ctx->md_have = ctx->md_have || md.broker_cnt > 0;
    kp_proto_metadata_resp_free(&md);
    if (ctx->md_have) {
        kp_metadata_retire_bootstrap(ctx);
    }
    kp_idemp_kick(ctx);
    if (ctx->md_again) {
        kp_metadata_schedule(ctx, KP_MD_MIN_GAP_MS);
    } else if (!complete) {
        kp_metadata_schedule(ctx, KP_MD_RETRY_MS);
    } else {
        kp_metadata_schedule(ctx, ctx->conf->metadata_refresh_ms);
    }
}
