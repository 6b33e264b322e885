/*
 * kp_topic.c - the topic table (open addressing on an FNV-1a hash), topic
 * metadata state, partition choice (keyed partitioners, sticky for
 * key-less), and the messages that wait for a topic's first metadata.
 */
#include "kp_topic.h"

#include <stdio.h>

#include "kp_conf.h"
#include "kp_counters.h"
#include "kp_deadletter.h"
#include "kp_kerr.h"
#include "kp_log.h"
#include "kp_partition.h"
#include "kp_partitioner.h"
#include "kp_record.h"

const char *const kp_topic_state_names[KP_TOPIC__COUNT] = {
    "unknown", "ready", "missing"};

/* Asking again about a topic Metadata does not know: from this, doubling
 * up to the cap, so thousands of unknown topics do not keep a large
 * request going out several times a second. */
#define KP_TOPIC_MD_BACKOFF_MIN_MS 250
#define KP_TOPIC_MD_BACKOFF_MAX_MS 30000

static struct kp_ratelimit kp_topic_fail_rl;
static struct kp_ratelimit kp_topic_warn_rl;

static uint32_t kp_topic_hash(const char *s, size_t n)
{
    return kp_fnv1a(s, n);
}

void kp_topic_table_init(struct kp_topic_table *tt, struct kp_part_env *env,
                         struct kp_conf *conf)
{
    tt->cap = 64;
    tt->cnt = 0;
    tt->slots = kp_calloc(tt->cap, sizeof(*tt->slots));
    tt->env = env;
    tt->conf = conf;
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

/* Backward-shift deletion: the entries after t's slot in its probe run
 * move back, so no lookup stops at a hole before finding its topic. */
static void kp_topic_remove(struct kp_topic_table *tt, struct kp_topic *t)
{
    uint32_t mask = tt->cap - 1;
    uint32_t i = t->hash & mask;

    while (tt->slots[i] != t) {
        i = (i + 1) & mask;
    }
    for (uint32_t j = (i + 1) & mask; tt->slots[j]; j = (j + 1) & mask) {
        uint32_t home = tt->slots[j]->hash & mask;
        /* j's entry may fill the hole at i unless its home lies in (i, j] */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            tt->slots[i] = tt->slots[j];
            i = j;
        }
    }
    tt->slots[i] = NULL;
    tt->cnt--;
}

void kp_topic_forget(struct kp_topic_table *tt, struct kp_topic *t)
{
    kp_assert(t->acct.msgs == 0 && t->pending_cnt == 0);
    kp_debug("topic %s: idle, forgotten", t->name);
    kp_topic_remove(tt, t);
    kp_topic_destroy(t);
}

bool kp_topic_idle(const struct kp_topic *t, int64_t now_loop_ms,
                   int64_t idle_ms)
{
    return t->acct.msgs == 0 && now_loop_ms - t->last_line_ms >= idle_ms;
}

bool kp_topic_md_due(const struct kp_topic *t, int64_t now_ms)
{
    return t->state == KP_TOPIC_READY || now_ms >= t->md_next_ms;
}

struct kp_topic *kp_topic_create(struct kp_topic_table *tt, const char *name,
                                 size_t len)
{
    struct kp_topic *t = kp_calloc(1, sizeof(*t));
    t->name = kp_strndup(name, len);
    t->name_len = len;
    t->hash = kp_topic_hash(name, len);
    t->state = KP_TOPIC_UNKNOWN;
    t->unknown_since_ms = kp_mono_ms();
    t->last_line_ms = (int64_t)(ev_now(tt->env->loop) * 1000);
    t->sticky = -1;
    t->rr = kp_random(UINT32_MAX);
    t->pconf = kp_conf_producer(tt->conf, t->name);
    kp_topic_insert(tt, t);
    kp_debug("topic %s: created, fetching metadata", t->name);
    return t;
}

void kp_topic_foreach(struct kp_topic_table *tt,
                      void (*fn)(struct kp_topic *, void *), void *arg)
{
    for (uint32_t i = 0; i < tt->cap; i++) {
        if (tt->slots[i]) {
            fn(tt->slots[i], arg);
        }
    }
}

void kp_topic_table_reconf(struct kp_topic_table *tt, struct kp_conf *conf)
{
    tt->conf = conf;
    for (uint32_t i = 0; i < tt->cap; i++) {
        struct kp_topic *t = tt->slots[i];
        if (t) {
            t->pconf = kp_conf_producer(conf, t->name);
        }
    }
}

/* Sticky partitioner: key-less messages fill one partition's batch, then
 * move to the next partition that has a leader once that batch is sealed. */
static int32_t kp_topic_sticky(struct kp_topic *t)
{
    if (t->sticky >= 0 &&
        t->parts[t->sticky]->sealed_cnt == t->sticky_sealed) {
        return t->sticky;
    }
    t->sticky = -1;
    for (int32_t i = 0; i < t->part_cnt && t->sticky < 0; i++) {
        int32_t id = (int32_t)(t->rr++ % (uint32_t)t->part_cnt);
        if (t->parts[id]->leader >= 0) {
            t->sticky = id;
        }
    }
    if (t->sticky < 0) {
        t->sticky = (int32_t)(t->rr++ % (uint32_t)t->part_cnt);
    }
    t->sticky_sealed = t->parts[t->sticky]->sealed_cnt;
    return t->sticky;
}

/* Keeps a message until the topic's metadata arrives: encoded as a record
 * whose timestamp delta is the absolute timestamp. */
static void kp_topic_hold(struct kp_topic_table *tt, struct kp_topic *t,
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
    kp_runs_add(&t->pending_runs, tally, tt->env->gens->current,
                tally->seq);
    kp_part_env_account(tt->env, &t->acct, (int64_t)n, 1);
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

enum kp_reason kp_topic_route(struct kp_topic_table *tt, struct kp_topic *t,
                              const struct kp_msg *m, int64_t ts,
                              struct kp_tally *tally,
                              const struct kp_header *extra, size_t extra_cnt)
{
    struct kp_part_env *env = tt->env;

    if (m->key_len + m->value_len > (size_t)t->pconf->message_max_bytes) {
        return KP_REASON_TOO_LONG;
    }
    if (t->state == KP_TOPIC_READY && m->partition >= t->part_cnt) {
        return KP_REASON_BAD_PARTITION;
    }
    t->last_line_ms = (int64_t)(ev_now(env->loop) * 1000);
    tally->pending++;
    kp_gens_add(env->gens, env->gens->current, 1);
    env->n->received++;
    if (t->state == KP_TOPIC_READY) {
        kp_partition_append(t->parts[kp_topic_pick(t, m)], tt->conf,
                            t->pconf, m, ts, tally, env->gens->current,
                            tally->seq, extra, extra_cnt);
    } else {
        kp_topic_hold(tt, t, m, ts, tally, extra, extra_cnt);
        if (t->state == KP_TOPIC_MISSING) {
            /* no metadata after metadata_max_wait_ms: fails at once */
            kp_topic_fail_held(tt, t, KP_REASON_UNKNOWN_TOPIC,
                               "the cluster does not know this topic");
        }
    }
    return KP_REASON_NONE;
}

/* Settles the `n` held messages of the front run(s): failed, or (a
 * partition the topic turned out not to have) rejected after all; their
 * receipts say why. */
static void kp_topic_settle_held(struct kp_topic_table *tt,
                                 struct kp_runs *runs, uint32_t n,
                                 bool rejected, enum kp_reason why)
{
    struct kp_part_env *env = tt->env;
    struct kp_runs one = {0};

    kp_runs_take(&one, runs, n);
    if (rejected) {
        /* as if rejected when read: not received, counted by reason */
        env->n->received -= n;
        env->n->rejected += n;
        env->n->rejected_by[why] += n;
    } else {
        env->n->failed += n;
    }
    kp_runs_settle(&one, env->gens,
                   rejected ? KP_FATE_REJECTED : KP_FATE_FAILED, why, -1, -1);
    kp_runs_deinit(&one);
}

static void kp_topic_clear_pending(struct kp_topic_table *tt,
                                   struct kp_topic *t)
{
    int64_t bytes = (int64_t)t->pending_bytes, msgs = t->pending_cnt;

    kp_buf_reset(&t->pending);
    t->pending_bytes = 0;
    t->pending_cnt = 0;
    kp_assert(kp_runs_count(&t->pending_runs) == 0);
    kp_part_env_account(tt->env, &t->acct, -bytes, -msgs);
}

/* A held record's message, its headers decoded into *hdrs (grown). */
static void kp_topic_held_msg(const struct kp_topic *t,
                              struct kp_record_view *v, int32_t partition,
                              struct kp_header **hdrs, int32_t *hdr_cap,
                              struct kp_msg *m)
{
    *m = (struct kp_msg){
        .topic = t->name, .topic_len = t->name_len,
        .key = v->key, .key_len = v->key_len,
        .value = v->value, .value_len = v->value_len,
        .partition = partition, .timestamp = v->ts_delta,
    };
    if (v->header_cnt > *hdr_cap) {
        *hdr_cap = v->header_cnt;
        *hdrs = kp_realloc(*hdrs, (size_t)*hdr_cap * sizeof(**hdrs));
    }
    for (int32_t h = 0; h < v->header_cnt; h++) {
        kp_record_header_next(v, &(*hdrs)[h]);
    }
    m->headers = *hdrs;
    m->header_cnt = (size_t)KP_MAX(v->header_cnt, 0);
}

/* Held lines rejected once the partition count is known (as kp_client
 * logs the lines it rejects when reading). */
static struct kp_ratelimit kp_topic_reject_rl;

/* Routes the held messages, in the order they were read. */
static void kp_topic_replay(struct kp_topic_table *tt, struct kp_topic *t)
{
    struct kp_rd r;
    struct kp_record_view v;
    struct kp_header *hdrs = NULL;
    int32_t hdr_cap = 0;
    uint32_t i = 0;
    struct kp_msg m;

    kp_rd_init(&r, t->pending.data, t->pending.len);
    for (; i < t->pending_cnt && kp_record_next(&r, &v) == KP_OK; i++) {
        kp_topic_held_msg(t, &v, t->pending_parts[i], &hdrs, &hdr_cap, &m);
        if (m.partition >= t->part_cnt) {
            /* The same fate as when the partition count is known at read
             * time: the line is rejected (SPEC), not sent. */
            kp_log_rl(&kp_topic_reject_rl, KP_LOG_WARNING,
                      "topic %s: held line rejected (bad_partition): "
                      "partition %d, the topic has %d", t->name,
                      m.partition, t->part_cnt);
            kp_topic_settle_held(tt, &t->pending_runs, 1, true,
                                 KP_REASON_BAD_PARTITION);
            continue;
        }
        struct kp_tally *tally;
        uint32_t gen;
        uint64_t seq;
        kp_runs_first(&t->pending_runs, &tally, &gen, &seq);
        kp_partition_append(t->parts[kp_topic_pick(t, &m)], tt->conf,
                            t->pconf, &m, v.ts_delta, tally, gen, seq, NULL,
                            0);
        kp_runs_drop_first(&t->pending_runs);
    }
    kp_assert(i == t->pending_cnt);
    free(hdrs);
    kp_topic_clear_pending(tt, t);
}

static void kp_topic_grow(struct kp_topic_table *tt, struct kp_topic *t,
                          int32_t cnt)
{
    t->parts = kp_realloc(t->parts, (size_t)cnt * sizeof(*t->parts));
    for (int32_t i = t->part_cnt; i < cnt; i++) {
        t->parts[i] = kp_malloc(sizeof(struct kp_partition));
        kp_partition_init(t->parts[i], tt->env, t, t->name, t->name_len,
                          t->failed_by, &t->acct, i);
    }
    t->part_cnt = cnt;
}

/*
 * Metadata has no usable entry for t. Leaders stay as they are: a
 * transient topic error must not strand batches. An unknown topic is
 * asked about again with a growing backoff, and the first answer that
 * says it does not exist while it holds messages is a warning at once.
 */
static void kp_topic_md_failed(struct kp_topic *t, int16_t err)
{
    kp_debug("topic %s: metadata error %s", t->name, kp_kerr_name(err));
    if (t->state == KP_TOPIC_READY) {
        return;
    }
    t->md_backoff_ms = KP_MIN(KP_MAX(t->md_backoff_ms * 2,
                                     KP_TOPIC_MD_BACKOFF_MIN_MS),
                              KP_TOPIC_MD_BACKOFF_MAX_MS);
    t->md_next_ms = kp_mono_ms() + t->md_backoff_ms;
    if (!t->md_warned && t->pending_cnt &&
        err == KP_KERR_UNKNOWN_TOPIC_OR_PARTITION) {
        t->md_warned = true;
        kp_log_rl(&kp_topic_warn_rl, KP_LOG_WARNING,
                  "topic %s: the cluster does not know it (%s); %u "
                  "message(s) wait for it, up to metadata_max_wait_ms: "
                  "check the topic name, or create the topic",
                  t->name, kp_kerr_name(err), t->pending_cnt);
    }
}

void kp_topic_on_metadata(struct kp_topic_table *tt, struct kp_topic *t,
                          int16_t err, int32_t part_cnt,
                          const int32_t *leaders, bool seal_now)
{
    t->md_error = err;
    if (err != KP_KERR_NONE || part_cnt <= 0) {
        kp_topic_md_failed(t, err);
        return;
    }
    t->md_backoff_ms = 0;
    t->md_warned = false;
    if (part_cnt > t->part_cnt) {
        if (t->part_cnt) {
            kp_info("topic %s: partitions %d -> %d", t->name, t->part_cnt,
                    part_cnt);
        }
        kp_topic_grow(tt, t, part_cnt);
    }
    for (int32_t i = 0; i < part_cnt; i++) {
        kp_partition_set_leader(t->parts[i], leaders[i]);
    }
    if (t->state != KP_TOPIC_READY) {
        t->state = KP_TOPIC_READY;
        kp_info("topic %s: %d partitions", t->name, t->part_cnt);
        kp_topic_replay(tt, t);
    }
    for (int32_t i = 0; seal_now && i < t->part_cnt; i++) {
        kp_partition_seal(t->parts[i]);
    }
}

void kp_topic_fail_held(struct kp_topic_table *tt, struct kp_topic *t,
                        enum kp_reason why, const char *detail)
{
    char error[256];

    if (!t->pending_cnt) {
        return;
    }
    snprintf(error, sizeof(error), "%s%s%s", kp_reason_names[why],
             detail ? ": " : "", detail ? detail : "");
    kp_log_rl(&kp_topic_fail_rl, KP_LOG_ERROR,
              "topic %s: %u message(s) failed: %s", t->name, t->pending_cnt,
              error);
    /* Recorded before anyone is told (DESIGN 18). */
    kp_deadletter_records(tt->env->dl, t->name, t->pending.data,
                          t->pending.len, 0, t->pending_parts, error);
    t->failed_by[why] += t->pending_cnt;
    kp_topic_settle_held(tt, &t->pending_runs, t->pending_cnt, false, why);
    kp_topic_clear_pending(tt, t);
}

/* Why held messages fail now, or NULL: held past their delivery timeout,
 * or the topic had no usable metadata for metadata_max_wait_ms (then it
 * turns MISSING). */
static const char *kp_topic_held_expired(struct kp_topic_table *tt,
                                         struct kp_topic *t, int64_t now_ms)
{
    if (t->state == KP_TOPIC_UNKNOWN &&
        now_ms - t->unknown_since_ms >= tt->conf->metadata_max_wait_ms) {
        kp_log_rl(&kp_topic_warn_rl, KP_LOG_WARNING,
                  "topic %s: no metadata after %d ms (%s): its messages "
                  "fail as unknown_topic until the cluster knows it; check "
                  "the topic name, or create the topic",
                  t->name, tt->conf->metadata_max_wait_ms,
                  t->md_error ? kp_kerr_name(t->md_error)
                              : "no broker answered");
        t->state = KP_TOPIC_MISSING;
        return "no metadata for topic";
    }
    if (t->pending_cnt &&
        now_ms - t->pending_since_ms >= t->pconf->delivery_timeout_ms) {
        return "no metadata for topic before the delivery timeout";
    }
    return NULL;
}

void kp_topic_expire(struct kp_topic_table *tt, struct kp_topic *t,
                     int64_t now_ms, const char *idemp_detail)
{
    /* No broker could authenticate: that, not the topic, is why its
     * messages wait (metadata_max_wait_ms does not make it missing); they
     * fail as such at their delivery timeout. */
    const char *auth = NULL;
    if (t->state != KP_TOPIC_READY && !t->md_error &&
        kp_part_env_stuck(tt->env, -1, &auth) != KP_REASON_AUTHENTICATION) {
        auth = NULL;
    }
    const char *why = t->state != KP_TOPIC_READY && !auth
                          ? kp_topic_held_expired(tt, t, now_ms)
                          : NULL;
    if (auth && t->pending_cnt &&
        now_ms - t->pending_since_ms >= t->pconf->delivery_timeout_ms) {
        kp_topic_fail_held(tt, t, KP_REASON_AUTHENTICATION, auth);
    } else if (why && t->pending_cnt) {
        char detail[160];
        snprintf(detail, sizeof(detail), "%s (%s)", why,
                 t->md_error ? kp_kerr_name(t->md_error)
                             : "no broker answered");
        kp_topic_fail_held(tt, t, KP_REASON_UNKNOWN_TOPIC, detail);
    }
    for (int32_t i = 0; i < t->part_cnt; i++) {
        kp_partition_expire(t->parts[i], now_ms, idemp_detail);
    }
}

uint64_t kp_topic_queued(const struct kp_topic *t)
{
    uint64_t q = t->pending_cnt;
    for (int32_t i = 0; i < t->part_cnt; i++) {
        q += t->parts[i]->queued_msgs;
    }
    return q;
}
