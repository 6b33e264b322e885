/*
 * kp_topic.c - the topic table (open addressing on an FNV-1a hash), topic
 * metadata state, partition choice (keyed partitioners, sticky for
 * key-less), the per-topic limit (topic_buffer_bytes) and the connections
 * waiting for a topic's room or metadata.
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
#include "kp_spool.h"

const char *const kp_topic_state_names[KP_TOPIC__COUNT] = {
    "unknown", "ready", "missing"};
const char *const kp_route_names[KP_ROUTE__COUNT] = {
    "queued", "failed", "rejected", "wait_room", "wait_metadata",
    "wait_spool"};

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
    kp_buf_init(&tt->fail_rec, 256);
    memset(&tt->fail_run, 0, sizeof(tt->fail_run));
}

static void kp_topic_destroy(struct kp_topic *t)
{
    for (int32_t i = 0; i < t->part_cnt; i++) {
        kp_partition_deinit(t->parts[i]);
        free(t->parts[i]);
    }
    free(t->parts);
    kp_assert(t->waiter_cnt == 0);
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
    kp_buf_deinit(&tt->fail_rec);
    kp_runs_deinit(&tt->fail_run);
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
    kp_assert(t->acct.msgs == 0 && t->waiter_cnt == 0);
    kp_debug("topic %s: idle, forgotten", t->name);
    kp_topic_remove(tt, t);
    kp_topic_destroy(t);
}

bool kp_topic_idle(const struct kp_topic *t, int64_t now_loop_ms,
                   int64_t idle_ms)
{
    /* records in the spool (unread, or kept for want of a dead letter)
     * hold it too: a topic made anew would not count them, and a
     * shutdown could append its memory-only messages behind them */
    return t->acct.msgs == 0 && t->acct.spooled == 0 &&
           t->waiter_cnt == 0 && now_loop_ms - t->last_line_ms >= idle_ms;
}

/* A topic in backoff is due once half its wait has passed: a request that
 * goes out anyway takes it along, so topics that failed at different times
 * fall into step instead of each phase costing a request of its own. */
bool kp_topic_md_due(const struct kp_topic *t, int64_t now_ms)
{
    return t->state == KP_TOPIC_READY ||
           now_ms + t->md_backoff_ms / 2 >= t->md_next_ms;
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
    TAILQ_INIT(&t->waiters);
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

bool kp_topic_full(const struct kp_topic_table *tt, const struct kp_topic *t)
{
    return t->acct.bytes >= tt->conf->topic_buffer_bytes;
}

uint32_t kp_topic_count(struct kp_topic_table *tt, struct kp_tally *tally)
{
    struct kp_part_env *env = tt->env;

    tally->pending++;
    kp_gens_add(env->gens, env->gens->current, 1);
    env->n->received++;
    return env->gens->current;
}

void kp_topic_fail_msg(struct kp_topic_table *tt, struct kp_topic *t,
                       const char *name, const struct kp_msg *m, int64_t ts,
                       const struct kp_origin *o,
                       const struct kp_header *extra, size_t extra_cnt,
                       enum kp_reason why, const char *detail)
{
    struct kp_part_env *env = tt->env;
    int32_t part = m->partition;
    char error[256];

    snprintf(error, sizeof(error), "%s: %s", kp_reason_names[why], detail);
    kp_log_rl(&kp_topic_fail_rl, KP_LOG_ERROR,
              "topic %s: a message from pid %ld uid %ld failed: %s", name,
              (long)o->tally->pid, (long)o->tally->uid, error);
    env->n->failed++;
    if (t) {
        t->failed_by[why]++;
    }
    kp_buf_reset(&tt->fail_rec);
    /* base timestamp 0: the record's delta is its absolute timestamp */
    kp_record_append(&tt->fail_rec, 0, ts, m, extra, extra_cnt);
    bool recorded =
        kp_deadletter_records(env->dl, name, tt->fail_rec.data,
                              tt->fail_rec.len, 0, part >= 0 ? &part : NULL,
                              error) == KP_OK;
    if (!recorded) {
        env->n->dead_letter_errors++;
    }
    if (o->spool_seq && recorded) {
        /* recorded: the spool may let it go (after the dead letter); if
         * the dead letter could not take it, the spool keeps it for the
         * next start */
        kp_spool_ack(env->spool, o->spool_seq);
        if (t) {
            t->acct.spooled--;
        }
    }
    kp_runs_add(&tt->fail_run, o->tally, o->gen, o->num);
    kp_runs_settle(&tt->fail_run, env->gens, KP_FATE_FAILED, why, -1, -1);
    kp_runs_drop_first(&tt->fail_run);
    if (t) {
        /* nothing was held; tells flush barriers that a message settled */
        kp_part_env_account(env, &t->acct, 0, 0);
    }
}

enum kp_route kp_topic_check(struct kp_topic_table *tt, struct kp_topic *t,
                             const struct kp_msg *m, enum kp_topic_full full,
                             enum kp_reason *why, const char **detail)
{
    if (m->key_len + m->value_len > (size_t)t->pconf->message_max_bytes) {
        *why = KP_REASON_TOO_LONG;
        return KP_ROUTE_REJECTED;
    }
    if (t->state == KP_TOPIC_UNKNOWN) {
        return KP_ROUTE_WAIT_METADATA;
    }
    t->last_line_ms = (int64_t)(ev_now(tt->env->loop) * 1000);
    if (t->state == KP_TOPIC_MISSING) {
        *why = t->missing_why;
        *detail = t->missing_detail;
        return KP_ROUTE_FAILED;
    }
    if (m->partition >= t->part_cnt) {
        *why = KP_REASON_BAD_PARTITION;
        return KP_ROUTE_REJECTED;
    }
    if (full != KP_TOPIC_FULL_IGNORED && kp_topic_full(tt, t)) {
        if (full == KP_TOPIC_FULL_WAITS) {
            return KP_ROUTE_WAIT_ROOM;
        }
        *why = KP_REASON_BUFFER_FULL;
        *detail = "the topic held topic_buffer_bytes for max_block_ms";
        return KP_ROUTE_FAILED;
    }
    return KP_ROUTE_QUEUED;
}

void kp_topic_append(struct kp_topic_table *tt, struct kp_topic *t,
                     const struct kp_msg *m, int64_t ts,
                     const struct kp_origin *o, const struct kp_header *extra,
                     size_t extra_cnt)
{
    kp_partition_append(t->parts[kp_topic_pick(t, m)], tt->conf, t->pconf, m,
                        ts, o->tally, o->gen, o->num, extra, extra_cnt,
                        o->spool_seq);
}

enum kp_route kp_topic_route(struct kp_topic_table *tt, struct kp_topic *t,
                             const struct kp_msg *m, int64_t ts,
                             struct kp_tally *tally,
                             const struct kp_header *extra, size_t extra_cnt,
                             bool full_fails, enum kp_reason *why)
{
    const char *detail = NULL;
    enum kp_route r = kp_topic_check(
        tt, t, m, full_fails ? KP_TOPIC_FULL_FAILS : KP_TOPIC_FULL_WAITS, why,
        &detail);

    if (r == KP_ROUTE_QUEUED || r == KP_ROUTE_FAILED) {
        struct kp_origin o = {tally, kp_topic_count(tt, tally), tally->seq,
                              0};
        if (r == KP_ROUTE_QUEUED) {
            kp_topic_append(tt, t, m, ts, &o, extra, extra_cnt);
        } else {
            kp_topic_fail_msg(tt, t, t->name, m, ts, &o, extra, extra_cnt,
                              *why, detail);
        }
    }
    return r;
}

/* Up to four waiting writers as "pid P uid U, ..." for a warning. */
static void kp_topic_writers(const struct kp_topic *t, char *out, size_t cap)
{
    const struct kp_topic_waiter *w;
    size_t n = 0;
    int shown = 0;

    out[0] = 0;
    TAILQ_FOREACH(w, &t->waiters, link)
    {
        if (shown == 4) {
            snprintf(out + n, cap - n, ", ...");
            return;
        }
        int k = snprintf(out + n, cap - n, "%spid %ld uid %ld",
                         shown ? ", " : "", (long)w->pid, (long)w->uid);
        if (k < 0 || (size_t)k >= cap - n) {
            return;
        }
        n += (size_t)k;
        shown++;
    }
}

void kp_topic_wait(struct kp_topic_table *tt, struct kp_topic *t,
                   struct kp_topic_waiter *w)
{
    char who[160];

    kp_assert(w->topic == NULL);
    w->topic = t;
    TAILQ_INSERT_TAIL(&t->waiters, w, link);
    t->waiter_cnt++;
    t->pauses++;
    if (t->state == KP_TOPIC_READY) {
        /* a thousand writers pausing in turn: named only when printed */
        who[0] = '\0';
        if (kp_log_rl_open(&t->full_rl, KP_LOG_WARNING)) {
            kp_topic_writers(t, who, sizeof(who));
        }
        kp_log_rl(&t->full_rl, KP_LOG_WARNING,
                  "topic %s: full (%lld bytes held, topic_buffer_bytes "
                  "%lld): %u writer(s) paused (%s); after max_block_ms "
                  "(%d) their messages for it fail as buffer_full",
                  t->name, (long long)t->acct.bytes,
                  (long long)tt->conf->topic_buffer_bytes, t->waiter_cnt,
                  who, tt->conf->max_block_ms);
    }
}

void kp_topic_unwait(struct kp_topic_waiter *w)
{
    struct kp_topic *t = w->topic;

    if (t) {
        TAILQ_REMOVE(&t->waiters, w, link);
        t->waiter_cnt--;
        w->topic = NULL;
    }
}

/* Every waiter goes on (FIFO); each is off the list before it is told. */
static void kp_topic_wake(struct kp_topic *t)
{
    struct kp_topic_waiter *w;

    while ((w = TAILQ_FIRST(&t->waiters)) != NULL) {
        kp_topic_unwait(w);
        w->on_wake(w);
    }
}

/* A full topic wakes its writers once an eighth of it is free, not at
 * each settled batch: every writer woken reads its waiting line again,
 * and with a thousand waiting on a topic filled by the first few, the
 * others stalled again at once (two fifths of the CPU at 1,000 writers). */
static bool kp_topic_wakeable(const struct kp_topic_table *tt,
                              const struct kp_topic *t)
{
    int64_t limit = tt->conf->topic_buffer_bytes;

    return t->acct.bytes <= limit - limit / 8;
}

void kp_topic_on_accounted(struct kp_topic_table *tt, struct kp_account *acct)
{
    struct kp_topic *t;

    if (!acct) {
        return;
    }
    t = (struct kp_topic *)((char *)acct - offsetof(struct kp_topic, acct));
    if (!kp_topic_full(tt, t)) {
        /* room: a full spell of its spooled records starts anew */
        t->spool_full_since_ms = 0;
        t->spool_full_fails = false;
    }
    if (t->waiter_cnt && t->state == KP_TOPIC_READY &&
        kp_topic_wakeable(tt, t)) {
        kp_topic_wake(t);
    }
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
 * says it does not exist while writers wait for it is a warning at once,
 * naming them.
 */
static void kp_topic_md_failed(struct kp_topic *t, int16_t err)
{
    char who[160];

    kp_debug("topic %s: metadata error %s", t->name, kp_kerr_name(err));
    if (t->state == KP_TOPIC_READY) {
        return;
    }
    t->md_backoff_ms = KP_MIN(KP_MAX(t->md_backoff_ms * 2,
                                     KP_TOPIC_MD_BACKOFF_MIN_MS),
                              KP_TOPIC_MD_BACKOFF_MAX_MS);
    t->md_next_ms = kp_mono_ms() + t->md_backoff_ms;
    if (!t->md_warned && t->waiter_cnt &&
        err == KP_KERR_UNKNOWN_TOPIC_OR_PARTITION) {
        t->md_warned = true;
        kp_topic_writers(t, who, sizeof(who));
        kp_log_rl(&kp_topic_warn_rl, KP_LOG_WARNING,
                  "topic %s: the cluster does not know it (%s); %u "
                  "writer(s) wait for it (%s), up to metadata_max_wait_ms: "
                  "check the topic name, or create the topic",
                  t->name, kp_kerr_name(err), t->waiter_cnt, who);
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
        if (!kp_topic_full(tt, t)) {
            kp_topic_wake(t);
        }
    }
    for (int32_t i = 0; seal_now && i < t->part_cnt; i++) {
        kp_partition_seal(t->parts[i]);
    }
}

/* No usable metadata for metadata_max_wait_ms (or the topic's delivery
 * timeout, when shorter: no message waits longer than that): MISSING; the
 * writers that waited go on, and their lines for it fail at once
 * (unknown_topic, or authentication when no broker let kproxyd in:
 * `auth` is then why). */
static void kp_topic_missing(struct kp_topic *t, int64_t waited_ms,
                             const char *auth)
{
    char who[160];

    kp_topic_writers(t, who, sizeof(who));
    t->missing_why = auth ? KP_REASON_AUTHENTICATION : KP_REASON_UNKNOWN_TOPIC;
    if (auth) {
        snprintf(t->missing_detail, sizeof(t->missing_detail), "%s", auth);
    } else {
        snprintf(t->missing_detail, sizeof(t->missing_detail),
                 "no metadata for topic (%s)",
                 t->md_error ? kp_kerr_name(t->md_error)
                             : "no broker answered");
    }
    kp_log_rl(&kp_topic_warn_rl, KP_LOG_WARNING,
              "topic %s: no metadata after %lld ms (%s): its messages fail "
              "as %s until the cluster knows it%s%s%s; check %s",
              t->name, (long long)waited_ms,
              auth ? auth
                   : t->md_error ? kp_kerr_name(t->md_error)
                                 : "no broker answered",
              kp_reason_names[t->missing_why],
              t->waiter_cnt ? " (writers: " : "", who,
              t->waiter_cnt ? ")" : "",
              auth ? "the security settings"
                   : "the topic name, or create the topic");
    t->state = KP_TOPIC_MISSING;
    kp_topic_wake(t);
}

void kp_topic_expire(struct kp_topic_table *tt, struct kp_topic *t,
                     int64_t now_ms, const char *idemp_detail)
{
    if (t->state == KP_TOPIC_UNKNOWN) {
        /* No broker could authenticate: that, not the topic, is why its
         * writers wait (metadata_max_wait_ms does not make it missing);
         * their lines fail as such at the delivery timeout. */
        const char *auth = NULL;
        if (t->md_error ||
            kp_part_env_stuck(tt->env, -1, &auth) !=
                KP_REASON_AUTHENTICATION) {
            auth = NULL;
        }
        int64_t wait = t->pconf->delivery_timeout_ms;
        if (!auth) {
            wait = KP_MIN(wait, (int64_t)tt->conf->metadata_max_wait_ms);
        }
        if (now_ms - t->unknown_since_ms >= wait) {
            kp_topic_missing(t, wait, auth);
        }
    }
    for (int32_t i = 0; i < t->part_cnt; i++) {
        kp_partition_expire(t->parts[i], now_ms, idemp_detail);
    }
}

uint64_t kp_topic_queued(const struct kp_topic *t)
{
    uint64_t q = 0;
    for (int32_t i = 0; i < t->part_cnt; i++) {
        q += t->parts[i]->queued_msgs;
    }
    return q;
}
