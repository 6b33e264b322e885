/*
 * kp_partition.c - the partition state machine: open batch, sealed FIFO,
 * ready-list membership on its leader, retries in sequence order with
 * backoff, and settling batches.
 */
#include "kp_partition.h"

#include "kp_broker.h"
#include "kp_client.h"
#include "kp_conf.h"
#include "kp_ctx.h"
#include "kp_deadletter.h"
#include "kp_idemp.h"
#include "kp_log.h"
#include "kp_proto.h"
#include "kp_stats.h"
#include "kp_topic.h"

static struct kp_ratelimit kp_partition_fail_rl;

static void kp_partition_on_backoff(struct ev_loop *loop, ev_timer *w,
                                    int revents);

void kp_partition_init(struct kp_partition *p, struct kp_topic *t, int32_t id)
{
    memset(p, 0, sizeof(*p));
    p->topic = t;
    p->id = id;
    p->leader = -1;
    p->pid = -1;
    p->epoch = -1;
    TAILQ_INIT(&p->queue);
    ev_timer_init(&p->backoff, kp_partition_on_backoff, 0., 0.);
    p->backoff.data = p;
}

void kp_partition_deinit(struct kp_partition *p)
{
    kp_assert(p->open == NULL && TAILQ_EMPTY(&p->queue));
}

struct kp_batch *kp_partition_open_batch(struct kp_ctx *ctx,
                                         struct kp_partition *p)
{
    if (!p->open) {
        struct kp_linger *lg;
        const struct kp_producer_conf *pc = p->topic->pconf;
        p->open = kp_batch_create(p, ctx->conf, pc, kp_mono_ms());
        lg = kp_ctx_linger(ctx, pc->linger_ms);
        if (TAILQ_EMPTY(&lg->q)) {
            ev_timer_stop(ctx->loop, &lg->timer);
            ev_timer_set(&lg->timer, pc->linger_ms / 1000.0, 0.);
            ev_timer_start(ctx->loop, &lg->timer);
        }
        TAILQ_INSERT_TAIL(&lg->q, p->open, link);
    }
    return p->open;
}

void kp_partition_seal(struct kp_ctx *ctx, struct kp_partition *p)
{
    struct kp_batch *b = p->open;
    struct kp_topic *t = p->topic;

    if (!b) {
        return;
    }
    TAILQ_REMOVE(&kp_ctx_linger(ctx, b->pconf->linger_ms)->q, b, link);
    p->open = NULL;
    if (t->sticky == p->id) {
        t->sticky = -1; /* key-less messages move on to the next partition */
    }
    size_t before = b->msg_bytes;
    kp_batch_seal(b, ctx->cz);
    kp_ctx_account(ctx, (int64_t)(b->msg_bytes - before), 0);
    ctx->n.batches++;
    kp_stats_observe_batch(ctx, b);
    ctx->n.batch_bytes_raw += b->records.len;
    ctx->n.batch_bytes_wire += b->wire_len;
    if (b->pconf->compression != KP_CODEC_NONE &&
        b->codec_used == KP_CODEC_NONE) {
        ctx->n.uncompressed_fallback++;
    }
    p->batches++;
    b->order = ++p->sealed_cnt << 32;
    b->id = ++p->next_batch_id;
    TAILQ_INSERT_TAIL(&p->queue, b, link);
    kp_partition_update_ready(ctx, p);
}

/* The in-flight limit per partition: with idempotence up to 5 batches keep
 * their order through sequence numbers; without, one, or a retry could
 * overtake a later batch. */
static int kp_partition_inflight_limit(const struct kp_producer_conf *pc)
{
    return pc->idempotence ? KP_MIN(pc->max_in_flight, 5) : 1;
}

bool kp_partition_sendable(const struct kp_ctx *ctx,
                           const struct kp_partition *p)
{
    const struct kp_batch *b = TAILQ_FIRST(&p->queue);

    if (!b || !p->broker || p->broker->state != KP_BROKER_UP ||
        p->backing_off) {
        return false;
    }
    if (p->inflight >= kp_partition_inflight_limit(b->pconf)) {
        return false;
    }
    /* After a leader change, the old leader's answers come first: a batch
     * sent to the new one meanwhile could overtake a retried one. */
    if (p->inflight > 0 && p->inflight_broker != p->broker) {
        return false;
    }
    if (b->pconf->idempotence) {
        if (ctx->idemp != KP_IDEMP_READY) {
            return false;
        }
        /* A new producer id or epoch restarts sequences: only once nothing
         * of the old one is in flight. */
        if ((p->pid != ctx->pid || p->epoch != ctx->epoch) &&
            p->inflight > 0) {
            return false;
        }
    }
    return true;
}

void kp_partition_update_ready(struct kp_ctx *ctx, struct kp_partition *p)
{
    bool want = kp_partition_sendable(ctx, p);

    if (want && !p->on_ready) {
        TAILQ_INSERT_TAIL(&p->broker->ready, p, ready_link);
        p->on_ready = true;
        kp_broker_kick(p->broker);
    } else if (!want && p->on_ready) {
        TAILQ_REMOVE(&p->broker->ready, p, ready_link);
        p->on_ready = false;
    }
}

void kp_partition_set_leader(struct kp_ctx *ctx, struct kp_partition *p,
                             int32_t leader)
{
    struct kp_broker *b = leader >= 0 ? kp_ctx_broker(ctx, leader) : NULL;

    if (p->leader == leader && p->broker == b) {
        return;
    }
    if (p->on_ready) {
        TAILQ_REMOVE(&p->broker->ready, p, ready_link);
        p->on_ready = false;
    }
    if (p->leader != leader) {
        kp_debug("%s [%d]: leader %d -> %d", p->topic->name, p->id,
                 p->leader, leader);
    }
    p->leader = leader;
    p->broker = b;
    if (b && b->state == KP_BROKER_INIT) {
        kp_broker_connect(b);
    }
    kp_partition_update_ready(ctx, p);
}

static void kp_partition_on_backoff(struct ev_loop *loop, ev_timer *w,
                                    int revents)
{
    struct kp_partition *p = w->data;
    (void)loop;
    (void)revents;
    p->backing_off = false;
    kp_partition_update_ready(p->topic->ctx, p);
}

/* Inserts b back in its original place in the send order (`order`):
 * whatever order answers, timeouts and splits hand batches back in, the
 * FIFO stays in the order the messages were read. With idempotence this is
 * also sequence order, as sequences are given in FIFO order. */
static void kp_partition_requeue(struct kp_partition *p, struct kp_batch *b)
{
    struct kp_batch *x;

    TAILQ_FOREACH(x, &p->queue, link)
    {
        if (x->order > b->order) {
            TAILQ_INSERT_BEFORE(x, b, link);
            return;
        }
    }
    TAILQ_INSERT_TAIL(&p->queue, b, link);
}

void kp_partition_retry(struct kp_ctx *ctx, struct kp_partition *p,
                        struct kp_batch *b, bool backoff)
{
    b->state = KP_BATCH_SEALED;
    kp_partition_requeue(p, b);
    ctx->n.retries++;
    if (backoff && !p->backing_off) {
        const struct kp_producer_conf *pc = b->pconf;
        int shift = KP_MIN(KP_MAX(b->attempts - 1, 0), 16);
        int64_t ms = (int64_t)pc->retry_backoff_ms << shift;
        ms = KP_MIN(ms, (int64_t)pc->retry_backoff_max_ms);
        /* ±20% jitter so partitions retrying together spread out */
        ms = ms * (80 + random() % 41) / 100;
        p->backing_off = true;
        ev_timer_set(&p->backoff, (double)ms / 1000.0, 0.);
        ev_timer_start(ctx->loop, &p->backoff);
    }
    kp_partition_update_ready(ctx, p);
}

/* Re-encodes records [from, from+n) of src into a new sealed batch. */
static struct kp_batch *kp_partition_half(struct kp_ctx *ctx,
                                          struct kp_batch *src,
                                          struct kp_rd *r, int32_t n)
{
    struct kp_batch *b = kp_batch_create(src->part, src->conf, src->pconf,
                                         src->created_ms);
    struct kp_record_view v;
    struct kp_header *hdrs = NULL;
    int32_t hdr_cap = 0;

    for (int32_t i = 0; i < n && kp_record_next(r, &v) == KP_OK; i++) {
        /* offset_delta is the record's index in src */
        bool pinned = kp_batch_pinned(src, (int32_t)v.offset_delta);
        int32_t hc = 0;
        if (v.header_cnt > hdr_cap) {
            hdr_cap = v.header_cnt;
            hdrs = kp_realloc(hdrs, (size_t)hdr_cap * sizeof(*hdrs));
        }
        while (hc < v.header_cnt &&
               kp_record_header_next(&v, &hdrs[hc]) == KP_OK) {
            hc++;
        }
        struct kp_msg m = {.key = v.key, .key_len = v.key_len,
                           .value = v.value, .value_len = v.value_len,
                           .partition = pinned ? src->part->id : -1,
                           .headers = hdrs, .header_cnt = (size_t)hc};
        kp_batch_append(b, &m, src->base_ts + v.ts_delta, NULL, 0);
    }
    free(hdrs);
    kp_runs_take(&b->runs, &src->runs, (uint32_t)b->count);
    b->attempts = src->attempts;
    b->split_depth = src->split_depth + 1;
    b->order = src->order;
    b->id = ++src->part->next_batch_id;
    kp_batch_seal(b, ctx->cz);
    return b;
}

void kp_partition_split(struct kp_ctx *ctx, struct kp_partition *p,
                        struct kp_batch *b)
{
    struct kp_rd r;
    int32_t first = b->count / 2;

    kp_info("%s [%d]: batch of %d messages too large, splitting",
            p->topic->name, p->id, b->count);
    kp_rd_init(&r, kp_batch_recs(b), kp_batch_recs_len(b));
    struct kp_batch *b1 = kp_partition_half(ctx, b, &r, first);
    struct kp_batch *b2 = kp_partition_half(ctx, b, &r, b->count - first);
    /* b1 keeps the place of b, b2 the middle of b's range of `order`. */
    if (b->split_depth < 31) {
        b2->order = b->order + (UINT64_C(1) << (31 - b->split_depth));
    }
    kp_ctx_account(ctx, (int64_t)(b1->msg_bytes + b2->msg_bytes) -
                            (int64_t)b->msg_bytes, 0);
    if (b->base_seq >= 0 && b->pid == ctx->pid && b->epoch == ctx->epoch) {
        /* Its sequences were never appended: the batches after it would
         * meet a gap, so sequences restart under a new id. */
        kp_idemp_reset(ctx, "batch split");
    }
    kp_batch_destroy(b);
    /* b2 first: each goes before the first batch never sent. */
    kp_partition_retry(ctx, p, b2, false);
    kp_partition_retry(ctx, p, b1, false);
}

/* Settles n messages of one run. */
static void kp_partition_settle_run(struct kp_ctx *ctx, struct kp_run *r,
                                    bool ok)
{
    struct kp_tally *t = r->tally;

    kp_assert(t->pending >= r->count);
    t->pending -= r->count;
    if (ok) {
        t->delivered += r->count;
    } else {
        t->failed += r->count;
    }
    kp_gens_settle(&ctx->gens, r->gen, r->count);
    if (t->client && t->pending == 0) {
        kp_client_on_settled(t->client);
    }
}

void kp_partition_batch_done(struct kp_ctx *ctx, struct kp_batch *b,
                             int16_t err, const char *reason)
{
    struct kp_partition *p = b->part;
    bool ok = err == 0;

    for (uint32_t i = 0; i < b->runs.cnt; i++) {
        kp_partition_settle_run(ctx, &b->runs.v[i], ok);
    }
    if (ok) {
        ctx->n.delivered += (uint64_t)b->count;
        p->delivered += (uint64_t)b->count;
    } else {
        ctx->n.failed += (uint64_t)b->count;
        p->failed += (uint64_t)b->count;
        kp_topic_count_failed(p->topic,
                              reason ? reason : kp_proto_err_name(err),
                              (uint64_t)b->count);
        kp_log_rl(&kp_partition_fail_rl, KP_LOG_ERROR,
                  "%s [%d]: %d message(s) failed: %s", p->topic->name, p->id,
                  b->count, reason ? reason : kp_proto_err_name(err));
        int32_t *parts = NULL;
        if (b->pinned) {
            /* the messages that named their partition name it again */
            parts = kp_malloc((size_t)b->count * sizeof(*parts));
            for (int32_t i = 0; i < b->count; i++) {
                parts[i] = kp_batch_pinned(b, i) ? p->id : -1;
            }
        }
        kp_deadletter_records(ctx, p->topic->name, kp_batch_recs(b),
                              kp_batch_recs_len(b), b->base_ts, parts,
                              reason ? reason : kp_proto_err_name(err));
        free(parts);
    }
    p->queued_msgs -= (uint32_t)b->count;
    kp_ctx_account(ctx, -(int64_t)b->msg_bytes, -(int64_t)b->count);
    kp_batch_destroy(b);
    kp_ctx_gens_changed(ctx);
}

void kp_partition_expire(struct kp_ctx *ctx, struct kp_partition *p,
                         int64_t now_ms)
{
    struct kp_batch *b, *next;

    for (b = TAILQ_FIRST(&p->queue); b; b = next) {
        next = TAILQ_NEXT(b, link);
        if (now_ms - b->created_ms < b->pconf->delivery_timeout_ms) {
            continue;
        }
        TAILQ_REMOVE(&p->queue, b, link);
        if (b->base_seq >= 0 && b->pid == ctx->pid &&
            b->epoch == ctx->epoch) {
            /* A gap in the sequence: the next batches need a new producer
             * id (or epoch) so the broker accepts them. */
            kp_idemp_reset(ctx, "batch expired");
        }
        kp_partition_batch_done(ctx, b, -1,
                                b->pconf->idempotence &&
                                        ctx->idemp == KP_IDEMP_UNSUPPORTED
                                    ? "delivery timeout (brokers lack "
                                      "InitProducerId)"
                                    : "delivery timeout");
    }
    kp_partition_update_ready(ctx, p);
}
