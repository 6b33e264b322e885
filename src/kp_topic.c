/*
 * kp_topic.c - the topic table (open addressing on an FNV-1a hash), topic
 * metadata state, partition choice (keyed partitioners, sticky for
 * key-less), and the messages that wait for a topic's first metadata.
 */
#include "kp_topic.h"

#include <stdio.h>

#include "kp_batch.h"
#include "kp_conf.h"
#include "kp_ctx.h"
#include "kp_deadletter.h"
#include "kp_log.h"
#include "kp_metadata.h"
#include "kp_partition.h"
#include "kp_partitioner.h"
#include "kp_proto.h"
#include "kp_record.h"

const char *const kp_topic_state_names[KP_TOPIC__COUNT] = {"unknown",
                                                            "ready"};

static uint32_t kp_topic_hash(const char *s, size_t n)
{
    return kp_fnv1a(s, n);
}

void kp_topic_table_init(struct kp_topic_table *tt)
{
    tt->cap = 64;
    tt->cnt = 0;
    tt->slots = kp_calloc(tt->cap, sizeof(*tt->slots));
}

static void kp_topic_destroy(struct kp_topic *t)
{
    for (int32_t i = 0; i < t->part_cnt; i++) {
        kp_partition_deinit(t->parts[i]);
        free(t->parts[i]);
    }
    free(t->parts);
    kp_buf_deinit(&t->pending);
    free(t->pending_parts);
    kp_runs_deinit(&t->pending_runs);
    free(t->fails);
    free(t->name);
    free(t);
}

void kp_topic_table_deinit(struct kp_topic_table *tt)
{
    for (uint32_t i = 0; i < tt->cap; i++) {
        if (tt->slots[i]) {
            kp_topic_destroy(tt->slots[i]);
        }
    }
    free(tt->slots);
    memset(tt, 0, sizeof(*tt));
}

struct kp_topic *kp_topic_lookup(struct kp_topic_table *tt, const char *name,
                                 size_t len)
{
    uint32_t h = kp_topic_hash(name, len);
    for (uint32_t i = h & (tt->cap - 1);; i = (i + 1) & (tt->cap - 1)) {
        struct kp_topic *t = tt->slots[i];
        if (!t) {
            return NULL;
        }
        if (t->hash == h && t->name_len == len &&
            memcmp(t->name, name, len) == 0) {
            return t;
        }
    }
}

static void kp_topic_insert(struct kp_topic_table *tt, struct kp_topic *t)
{
    if ((tt->cnt + 1) * 10 > tt->cap * 7) {
        struct kp_topic **old = tt->slots;
        uint32_t old_cap = tt->cap;
        tt->cap *= 2;
        tt->slots = kp_calloc(tt->cap, sizeof(*tt->slots));
        tt->cnt = 0;
        for (uint32_t i = 0; i < old_cap; i++) {
            if (old[i]) {
                kp_topic_insert(tt, old[i]);
            }
        }
        free(old);
    }
    uint32_t i = t->hash & (tt->cap - 1);
    while (tt->slots[i]) {
        i = (i + 1) & (tt->cap - 1);
    }
    tt->slots[i] = t;
    tt->cnt++;
}

/* A new topic asks for metadata at once; its messages wait meanwhile. */
struct kp_topic *kp_topic_create(struct kp_ctx *ctx, const char *name,
                                 size_t len)
{
    struct kp_topic *t = kp_calloc(1, sizeof(*t));
    t->ctx = ctx;
    t->name = kp_strndup(name, len);
    t->name_len = len;
    t->hash = kp_topic_hash(name, len);
    t->state = KP_TOPIC_UNKNOWN;
    t->sticky = -1;
    t->rr = (uint32_t)random();
    t->pconf = kp_conf_producer(ctx->conf, t->name);
    kp_topic_insert(&ctx->topics, t);
    kp_debug("topic %s: created, fetching metadata", t->name);
    kp_metadata_refresh(ctx, "new topic");
    return t;
}

void kp_topic_foreach(struct kp_topic_table *tt,
                      void (*fn)(struct kp_ctx *, struct kp_topic *, void *),
                      struct kp_ctx *ctx, void *arg)
{
    for (uint32_t i = 0; i < tt->cap; i++) {
        if (tt->slots[i]) {
            fn(ctx, tt->slots[i], arg);
        }
    }
}

static void kp_topic_reconf_one(struct kp_ctx *ctx, struct kp_topic *t,
                                void *arg)
{
    (void)arg;
    t->pconf = kp_conf_producer(ctx->conf, t->name);
}

void kp_topic_table_reconf(struct kp_ctx *ctx)
{
    kp_topic_foreach(&ctx->topics, kp_topic_reconf_one, ctx, NULL);
}

/* Sticky partitioner: key-less messages fill one partition's batch, then
 * move to the next partition that has a leader. */
static int32_t kp_topic_sticky(struct kp_topic *t)
{
    if (t->sticky >= 0) {
        return t->sticky;
    }
    for (int32_t i = 0; i < t->part_cnt; i++) {
        int32_t id = (int32_t)(t->rr++ % (uint32_t)t->part_cnt);
        if (t->parts[id]->leader >= 0) {
            t->sticky = id;
            return id;
        }
    }
    t->sticky = (int32_t)(t->rr++ % (uint32_t)t->part_cnt);
    return t->sticky;
}

void kp_topic_append(struct kp_ctx *ctx, struct kp_partition *p,
                     const struct kp_msg *m, int64_t ts, struct kp_tally *tally,
                     uint32_t gen, const struct kp_header *extra,
                     size_t extra_cnt)
{
    struct kp_batch *b = kp_partition_open_batch(ctx, p);
    size_t est = m->key_len + m->value_len + 32;

    for (size_t i = 0; i < m->header_cnt; i++) {
        est += m->headers[i].name_len + m->headers[i].value_len + 8;
    }
    for (size_t i = 0; i < extra_cnt; i++) {
        est += extra[i].name_len + extra[i].value_len + 8;
    }
    if (kp_batch_would_overflow(b, est)) {
        kp_partition_seal(ctx, p);
        b = kp_partition_open_batch(ctx, p);
    }
    size_t n = kp_batch_append(b, m, ts, extra, extra_cnt);
    kp_runs_add(&b->runs, tally, gen, 1);
    p->queued_msgs++;
    kp_ctx_account(ctx, (int64_t)n, 1);
    if (kp_batch_full(b)) {
        kp_partition_seal(ctx, p);
    }
}

/* Keeps a message until the topic's metadata arrives: encoded as a record
 * whose timestamp delta is the absolute timestamp. */
static void kp_topic_hold(struct kp_ctx *ctx, struct kp_topic *t,
                          const struct kp_msg *m, int64_t ts,
                          struct kp_tally *tally,
                          const struct kp_header *extra, size_t extra_cnt)
{
    if (t->pending_cnt == t->pending_cap) {
        t->pending_cap = t->pending_cap ? t->pending_cap * 2 : 64;
        t->pending_parts = kp_realloc(t->pending_parts,
                                      t->pending_cap * sizeof(int32_t));
    }
    if (t->pending_cnt == 0) {
        t->pending_since_ms = kp_mono_ms();
    }
    size_t n = kp_record_append(&t->pending, 0, ts, m, extra, extra_cnt);
    t->pending_parts[t->pending_cnt++] = m->partition;
    t->pending_bytes += n;
    kp_runs_add(&t->pending_runs, tally, ctx->gens.current, 1);
    kp_ctx_account(ctx, (int64_t)n, 1);
}

static int32_t kp_topic_pick(struct kp_topic *t, const struct kp_msg *m)
{
    if (m->partition >= 0) {
        return m->partition;
    }
    if (m->key) {
        return kp_partitioner_pick(t->pconf->partitioner, m->key, m->key_len,
                                   t->part_cnt);
    }
    return kp_topic_sticky(t);
}

enum kp_reject kp_topic_route(struct kp_ctx *ctx, struct kp_topic *t,
                              const struct kp_msg *m, int64_t ts,
                              struct kp_tally *tally,
                              const struct kp_header *extra, size_t extra_cnt)
{
    if (m->key_len + m->value_len > (size_t)t->pconf->message_max_bytes) {
        return KP_REJ_TOO_LONG;
    }
    if (t->state == KP_TOPIC_READY) {
        if (m->partition >= t->part_cnt) {
            return KP_REJ_BAD_PARTITION;
        }
        kp_topic_append(ctx, t->parts[kp_topic_pick(t, m)], m, ts, tally,
                        ctx->gens.current, extra, extra_cnt);
    } else {
        kp_topic_hold(ctx, t, m, ts, tally, extra, extra_cnt);
    }
    tally->pending++;
    kp_gens_add(&ctx->gens, ctx->gens.current, 1);
    ctx->n.received++;
    return KP_REJ_NONE;
}

void kp_topic_count_failed(struct kp_topic *t, const char *reason,
                           uint64_t n)
{
    for (uint32_t i = 0; i < t->fail_cnt; i++) {
        if (strcmp(t->fails[i].reason, reason) == 0) {
            t->fails[i].n += n;
            return;
        }
    }
    t->fails = kp_realloc(t->fails, (t->fail_cnt + 1) * sizeof(*t->fails));
    snprintf(t->fails[t->fail_cnt].reason, sizeof(t->fails[0].reason), "%s",
             reason);
    t->fails[t->fail_cnt++].n = n;
}

/* Settles `n` held messages of the front run(s) as failed. */
static void kp_topic_settle_runs(struct kp_ctx *ctx, struct kp_runs *runs,
                                 uint32_t n, bool rejected)
{
    struct kp_runs one = {0};
    kp_runs_take(&one, runs, n);
    for (uint32_t i = 0; i < one.cnt; i++) {
        struct kp_run *r = &one.v[i];
        r->tally->pending -= r->count;
        kp_gens_settle(&ctx->gens, r->gen, r->count);
        if (rejected) {
            /* as if rejected when read: not received, counted by reason */
            r->tally->rejected += r->count;
            ctx->n.received -= r->count;
            ctx->n.rejected += r->count;
            ctx->n.rejected_by[KP_REJ_BAD_PARTITION] += r->count;
        } else {
            r->tally->failed += r->count;
            ctx->n.failed += r->count;
        }
        if (r->tally->client && r->tally->pending == 0) {
            kp_ctx_tally_settled(ctx, r->tally);
        }
    }
    kp_runs_deinit(&one);
}

static void kp_topic_fail_runs(struct kp_ctx *ctx, struct kp_runs *runs,
                               uint32_t n)
{
    kp_topic_settle_runs(ctx, runs, n, false);
}

static void kp_topic_clear_pending(struct kp_ctx *ctx, struct kp_topic *t)
{
    kp_ctx_account(ctx, -(int64_t)t->pending_bytes,
                   -(int64_t)t->pending_cnt);
    kp_buf_reset(&t->pending);
    t->pending_bytes = 0;
    t->pending_cnt = 0;
    kp_assert(t->pending_runs.cnt == 0);
}

/* Routes the held messages, in the order they were read. */
static void kp_topic_replay(struct kp_ctx *ctx, struct kp_topic *t)
{
    struct kp_rd r;
    struct kp_record_view v;
    struct kp_header *hdrs = NULL;
    int32_t hdr_cap = 0;
    uint32_t i = 0;

    kp_rd_init(&r, t->pending.data, t->pending.len);
    for (;;) {
        if (i >= t->pending_cnt || kp_record_next(&r, &v) != KP_OK) {
            break;
        }
        struct kp_msg m = {
            .topic = t->name, .topic_len = t->name_len,
            .key = v.key, .key_len = v.key_len,
            .value = v.value, .value_len = v.value_len,
            .partition = t->pending_parts[i], .timestamp = v.ts_delta,
        };
        if (v.header_cnt > hdr_cap) {
            hdr_cap = v.header_cnt;
            hdrs = kp_realloc(hdrs, (size_t)hdr_cap * sizeof(*hdrs));
        }
        for (int32_t h = 0; h < v.header_cnt; h++) {
            kp_record_header_next(&v, &hdrs[h]);
        }
        m.headers = hdrs;
        m.header_cnt = (size_t)KP_MAX(v.header_cnt, 0);
        struct kp_run *run = &t->pending_runs.v[0];
        if (m.partition >= t->part_cnt) {
            /* The same fate as when the partition count is known at read
             * time: the line is rejected (SPEC), not sent. */
            kp_topic_settle_runs(ctx, &t->pending_runs, 1, true);
        } else {
            struct kp_tally *tally = kp_tally_get(run->tally);
            uint32_t gen = run->gen;
            kp_topic_append(ctx, t->parts[kp_topic_pick(t, &m)], &m,
                            v.ts_delta, tally, gen, NULL, 0);
            struct kp_runs drop = {0};
            kp_runs_take(&drop, &t->pending_runs, 1);
            kp_runs_deinit(&drop);
            kp_tally_put(tally);
        }
        i++;
    }
    kp_assert(i == t->pending_cnt);
    free(hdrs);
    kp_topic_clear_pending(ctx, t);
}

static void kp_topic_grow(struct kp_ctx *ctx, struct kp_topic *t, int32_t cnt)
{
    (void)ctx;
    t->parts = kp_realloc(t->parts, (size_t)cnt * sizeof(*t->parts));
    for (int32_t i = t->part_cnt; i < cnt; i++) {
        t->parts[i] = kp_malloc(sizeof(struct kp_partition));
        kp_partition_init(t->parts[i], t, i);
    }
    t->part_cnt = cnt;
}

void kp_topic_on_metadata(struct kp_ctx *ctx, struct kp_topic *t, int16_t err,
                          int32_t part_cnt, const int32_t *leaders)
{
    t->md_error = err;
    if (err != 0 || part_cnt <= 0) {
        /* Leaders stay as they are: a transient topic error must not strand
         * batches; a missing topic keeps its messages waiting until the
         * delivery timeout. */
        kp_debug("topic %s: metadata error %s", t->name,
                 kp_proto_err_name(err));
        return;
    }
    if (part_cnt > t->part_cnt) {
        if (t->part_cnt) {
            kp_info("topic %s: partitions %d -> %d", t->name, t->part_cnt,
                    part_cnt);
        }
        kp_topic_grow(ctx, t, part_cnt);
    }
    for (int32_t i = 0; i < part_cnt; i++) {
        kp_partition_set_leader(ctx, t->parts[i], leaders[i]);
    }
    if (t->state == KP_TOPIC_UNKNOWN) {
        t->state = KP_TOPIC_READY;
        kp_info("topic %s: %d partitions", t->name, t->part_cnt);
        kp_topic_replay(ctx, t);
        if (ctx->stopping) {
            /* the drain sends everything at once */
            for (int32_t i = 0; i < t->part_cnt; i++) {
                kp_partition_seal(ctx, t->parts[i]);
            }
        }
    }
}

void kp_topic_fail_held(struct kp_ctx *ctx, struct kp_topic *t,
                        const char *why)
{
    if (!t->pending_cnt) {
        return;
    }
    kp_err("topic %s: %u message(s) failed: %s", t->name, t->pending_cnt, why);
    kp_deadletter_records(ctx, t->name, t->pending.data, t->pending.len, 0,
                          t->pending_parts, why);
    kp_topic_count_failed(t, why, t->pending_cnt);
    kp_topic_fail_runs(ctx, &t->pending_runs, t->pending_cnt);
    kp_topic_clear_pending(ctx, t);
    kp_ctx_gens_changed(ctx);
}

void kp_topic_expire(struct kp_ctx *ctx, struct kp_topic *t, int64_t now_ms)
{
    if (t->state == KP_TOPIC_UNKNOWN && t->pending_cnt &&
        now_ms - t->pending_since_ms >= t->pconf->delivery_timeout_ms) {
        char why[96];
        snprintf(why, sizeof(why), "no metadata for topic (%s)",
                 t->md_error ? kp_proto_err_name(t->md_error)
                             : "no broker answered");
        kp_topic_fail_held(ctx, t, why);
    }
    for (int32_t i = 0; i < t->part_cnt; i++) {
        kp_partition_expire(ctx, t->parts[i], now_ms);
    }
}
