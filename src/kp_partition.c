/*
 * kp_partition.c - the partition state machine: open batch, sealed FIFO,
 * in-flight batches, retries in seal order with backoff, splits, and
 * settling batches (dead letter, counters, tallies, in that order).
 */
#include "kp_partition.h"

#include <stdio.h>

#include "kp_counters.h"
#include "kp_deadletter.h"
#include "kp_linger.h"
#include "kp_log.h"
#include "kp_spool.h"
#include "kp_tally.h"

static struct kp_ratelimit kp_partition_fail_rl;

static void kp_partition_on_backoff(struct ev_loop *loop, ev_timer *w,
                                    int revents);

void kp_part_env_account(struct kp_part_env *env, struct kp_account *acct,
                         int64_t bytes, int64_t msgs)
{
    env->buffered_bytes += bytes;
    env->queued_msgs = (uint64_t)((int64_t)env->queued_msgs + msgs);
    acct->bytes += bytes;
    acct->msgs += msgs;
    env->hooks->accounted(env->arg, acct, bytes <= 0 && msgs <= 0);
}

static void kp_partition_changed(struct kp_partition *p)
{
    p->env->hooks->changed(p->env->arg, p);
}

void kp_partition_init(struct kp_partition *p, struct kp_part_env *env,
                       struct kp_topic *t, const char *topic_name,
                       size_t topic_name_len, uint64_t *failed_by,
                       struct kp_account *acct, int32_t id)
{
    memset(p, 0, sizeof(*p));
    p->env = env;
    p->topic = t;
    p->topic_name = topic_name;
    p->topic_name_len = topic_name_len;
    p->failed_by = failed_by;
    p->acct = acct;
    p->id = id;
    p->leader = -1;
    p->inflight_node = -1;
    p->pid = -1;
    p->epoch = -1;
    TAILQ_INIT(&p->queue);
    ev_timer_init(&p->backoff, kp_partition_on_backoff, 0., 0.);
    p->backoff.data = p;
}

void kp_partition_deinit(struct kp_partition *p)
{
    struct kp_batch *b;

    ev_timer_stop(p->env->loop, &p->backoff);
    if (p->open) {
        kp_lingers_remove(p->env->lingers, p->open);
        kp_batch_destroy(p->open);
        p->open = NULL;
    }
    while ((b = TAILQ_FIRST(&p->queue)) != NULL) {
        TAILQ_REMOVE(&p->queue, b, link);
        kp_batch_destroy(b);
    }
}

static struct kp_batch *kp_partition_open_batch(struct kp_partition *p,
                                                struct kp_conf *conf,
                                                const struct kp_producer_conf
                                                    *pc)
{
    if (!p->open) {
        p->open = kp_batch_create(p->env->pool, p, conf, pc, kp_mono_ms());
        kp_lingers_add(p->env->lingers, p->open);
    }
    return p->open;
}

/* A record's size before it is encoded: enough to decide whether it still
 * fits the open batch. */
static size_t kp_partition_estimate(const struct kp_msg *m,
                                    const struct kp_header *extra,
                                    size_t extra_cnt)
{
    size_t est = m->key_len + m->value_len + 32;

    for (size_t i = 0; i < m->header_cnt; i++) {
        est += m->headers[i].name_len + m->headers[i].value_len + 8;
    }
    for (size_t i = 0; i < extra_cnt; i++) {
        est += extra[i].name_len + extra[i].value_len + 8;
    }
    return est;
}

void kp_partition_append(struct kp_partition *p, struct kp_conf *conf,
                         const struct kp_producer_conf *pc,
                         const struct kp_msg *m, int64_t ts,
                         struct kp_tally *tally, uint32_t gen, uint64_t seq,
                         const struct kp_header *extra, size_t extra_cnt,
                         uint64_t spool_seq)
{
    struct kp_batch *b = kp_partition_open_batch(p, conf, pc);

    if (kp_batch_would_overflow(b,
                                kp_partition_estimate(m, extra, extra_cnt))) {
        kp_partition_seal(p);
        b = kp_partition_open_batch(p, conf, pc);
    }
    size_t n = kp_batch_append(b, m, ts, extra, extra_cnt);
    kp_runs_add(&b->runs, tally, gen, seq);
    kp_runs_add_spool(&b->runs, spool_seq);
    p->queued_msgs++;
    kp_part_env_account(p->env, p->acct, (int64_t)n, 1);
    if (kp_batch_full(b)) {
        kp_partition_seal(p);
    }
}

/* Batch counters and histograms of a batch just sealed. */
static void kp_partition_count_sealed(struct kp_partition *p,
                                      const struct kp_batch *b)
{
    struct kp_counters *n = p->env->n;

    n->batches++;
    n->batch_bytes_raw += b->records.len;
    n->batch_bytes_wire += b->wire_len;
    if (b->pconf->compression != KP_CODEC_NONE &&
        b->codec_used == KP_CODEC_NONE) {
        n->uncompressed_fallback++;
    }
    p->batches++;
    kp_batch_stats_observe(p->env->bstats, b);
}

void kp_partition_seal(struct kp_partition *p)
{
    struct kp_batch *b = p->open;

    if (!b) {
        return;
    }
    kp_lingers_remove(p->env->lingers, b);
    p->open = NULL;
    p->sealed_cnt++;
    size_t before = b->msg_bytes;
    kp_batch_seal(b, p->env->cz);
    kp_part_env_account(p->env, p->acct, (int64_t)(b->msg_bytes - before),
                        0);
    kp_partition_count_sealed(p, b);
    b->order = p->sealed_cnt << 32;
    b->id = ++p->next_batch_id;
    TAILQ_INSERT_TAIL(&p->queue, b, link);
    kp_partition_changed(p);
}

/* The in-flight limit per partition: with idempotence up to 5 batches keep
 * their order through sequence numbers; without, one, or a retry could
 * overtake a later batch. */
static int kp_partition_inflight_limit(const struct kp_producer_conf *pc)
{
    return pc->idempotence ? KP_MIN(pc->max_in_flight, 5) : 1;
}

bool kp_partition_can_send(const struct kp_partition *p, int64_t pid,
                           int16_t epoch)
{
    const struct kp_batch *b = TAILQ_FIRST(&p->queue);

    if (!b || p->leader < 0 || p->backing_off) {
        return false;
    }
    if (p->inflight >= kp_partition_inflight_limit(b->pconf)) {
        return false;
    }
    /* After a leader change, the old leader's answers come first: a batch
     * sent to the new one meanwhile could overtake a retried one. */
    if (p->inflight > 0 && p->inflight_node != p->leader) {
        return false;
    }
    if (b->pconf->idempotence) {
        if (pid < 0) {
            return false; /* no producer id yet */
        }
        /* A new producer id or epoch restarts sequences: only once nothing
         * of the old one is in flight. */
        if ((p->pid != pid || p->epoch != epoch) && p->inflight > 0) {
            return false;
        }
    }
    return true;
}

struct kp_batch *kp_partition_head(const struct kp_partition *p)
{
    return TAILQ_FIRST(&p->queue);
}

/* Gives an idempotent batch its producer id and sequence when it is first
 * sent (or first sent under a new producer id). */
static void kp_partition_stamp(struct kp_partition *p, struct kp_batch *b,
                               int64_t pid, int16_t epoch)
{
    if (p->pid != pid || p->epoch != epoch) {
        kp_assert(p->inflight == 0);
        p->pid = pid;
        p->epoch = epoch;
        p->next_seq = 0;
    }
    if (b->base_seq >= 0 && b->pid == pid && b->epoch == epoch) {
        return; /* a retry: the identical bytes go again */
    }
    kp_batch_stamp(b, pid, epoch, p->next_seq);
    p->next_seq = (int32_t)(((int64_t)p->next_seq + b->count) & INT32_MAX);
}

struct kp_batch *kp_partition_take(struct kp_partition *p, int32_t node,
                                   int64_t pid, int16_t epoch)
{
    struct kp_batch *b = TAILQ_FIRST(&p->queue);

    kp_assert(b != NULL);
    TAILQ_REMOVE(&p->queue, b, link);
    if (b->pconf->idempotence) {
        kp_partition_stamp(p, b, pid, epoch);
    }
    p->inflight++;
    p->inflight_node = node;
    b->state = KP_BATCH_INFLIGHT;
    b->attempts++;
    return b;
}

/* A batch comes back from the sender: it is no longer in flight. */
static void kp_partition_landed(struct kp_partition *p, struct kp_batch *b)
{
    if (b->state == KP_BATCH_INFLIGHT) {
        kp_assert(p->inflight > 0);
        p->inflight--;
        b->state = KP_BATCH_SEALED;
    }
}

/* Tells idempotence that b's sequences will never be appended. */
static void kp_partition_gap(struct kp_partition *p, const struct kp_batch *b,
                             const char *why)
{
    if (b->base_seq >= 0) {
        p->env->hooks->seq_gap(p->env->arg, b->pid, b->epoch, why);
    }
}

/* The dead letter of a failed batch: its records, with the partitions
 * that messages named themselves. KP_ERROR: not written (counted). */
static int kp_partition_dead_letter(struct kp_partition *p,
                                    const struct kp_batch *b,
                                    const char *error)
{
    int32_t *parts = NULL;

    if (!p->env->dl) {
        return KP_OK;
    }
    if (b->pinned) {
        parts = kp_malloc((size_t)b->count * sizeof(*parts));
        for (int32_t i = 0; i < b->count; i++) {
            parts[i] = kp_batch_pinned(b, i) ? p->id : -1;
        }
    }
    int rc = kp_deadletter_records(p->env->dl, p->topic_name,
                                   kp_batch_recs(b), kp_batch_recs_len(b),
                                   b->base_ts, parts, error);
    free(parts);
    if (rc != KP_OK) {
        p->env->n->dead_letter_errors += (uint64_t)b->count;
    }
    return rc;
}

/* Counts and records a failure: log, dead letter, counters. KP_ERROR:
 * the dead letter could not take it. */
static int kp_partition_record_failure(struct kp_partition *p,
                                       const struct kp_batch *b,
                                       enum kp_reason why, const char *detail)
{
    char error[256];

    snprintf(error, sizeof(error), "%s%s%s", kp_reason_names[why],
             detail ? ": " : "", detail ? detail : "");
    kp_log_rl(&kp_partition_fail_rl, KP_LOG_ERROR,
              "%s [%d]: %d message(s) failed: %s", p->topic_name, p->id,
              b->count, error);
    int rc = kp_partition_dead_letter(p, b, error);
    p->env->n->failed += (uint64_t)b->count;
    p->failed += (uint64_t)b->count;
    p->failed_by[why] += (uint64_t)b->count;
    return rc;
}

/*
 * Settles a batch that is in no queue: recorded first (dead letter and
 * counters), then the writers' tallies and flush generations are told
 * (receipts: `ok` with the offsets of the attempt that succeeded, or
 * `failed` once the dead letter holds the lines), then it is freed. The
 * order is the durability rule of DESIGN 18.
 */
/* Kafka has b's messages, or they failed and the dead letter has them:
 * the spool may let their records go. */
static void kp_partition_spool_ack(struct kp_partition *p,
                                   const struct kp_batch *b)
{
    uint32_t n, i = 0;
    const uint64_t *seqs = kp_runs_spool(&b->runs, &n);

    while (i < n) {
        uint32_t k = 1;
        if (!seqs[i]) {
            i++;
            continue;
        }
        while (i + k < n && seqs[i + k] == seqs[i] + k) {
            k++; /* consecutive records: one call */
        }
        kp_spool_ack_range(p->env->spool, seqs[i], k);
        p->acct->spooled -= k;
        i += k;
    }
}

/* Appends the record v of b (a message in memory only) to the spool as
 * *seq; KP_OK, or KP_ERROR (full, or a write error: it is not kept). */
static int kp_partition_spool_keep(struct kp_partition *p,
                                   const struct kp_batch *b,
                                   struct kp_record_view *v, int32_t i,
                                   uint64_t *seq)
{
    struct kp_header *hdrs = NULL;
    int32_t hc = 0;

    if (v->header_cnt > 0) {
        hdrs = kp_calloc((size_t)v->header_cnt, sizeof(*hdrs));
    }
    while (hc < v->header_cnt &&
           kp_record_header_next(v, &hdrs[hc]) == KP_OK) {
        hc++;
    }
    struct kp_spool_rec rec = {
        .msg = {.topic = p->topic_name, .topic_len = p->topic_name_len,
                .key = v->key, .key_len = v->key_len, .value = v->value,
                .value_len = v->value_len,
                .partition = kp_batch_pinned(b, i) ? p->id : -1,
                .timestamp = b->base_ts + v->ts_delta, .headers = hdrs,
                .header_cnt = (size_t)hc}};
    int rc = kp_spool_append(p->env->spool, &rec, seq);
    free(hdrs);
    return rc;
}

/* One message of a batch given up at shutdown fails: dead letter (its
 * record is rec[0..len)), counters, receipt. KP_ERROR: the dead letter
 * could not take it (counted). */
static int kp_partition_fail_one(struct kp_partition *p,
                                 const struct kp_batch *b, int32_t i,
                                 const uint8_t *rec, size_t len,
                                 struct kp_runs *one, enum kp_reason why)
{
    int32_t part = kp_batch_pinned(b, i) ? p->id : -1;

    int rc = kp_deadletter_records(p->env->dl, p->topic_name, rec, len,
                                   b->base_ts, part >= 0 ? &part : NULL,
                                   kp_reason_names[why]);
    if (rc != KP_OK) {
        p->env->n->dead_letter_errors++;
    }
    p->env->n->failed++;
    p->failed++;
    p->failed_by[why]++;
    kp_runs_settle(one, p->env->gens, KP_FATE_FAILED, why, -1, -1);
    return rc;
}

/* The spool record of each message of b at shutdown (0: none): the one it
 * has, or one appended now when its topic may keep it (see below). Then a
 * flush: only what is on file is kept (a failed write at close would lose
 * the rest silently). Returns the array (b->count entries, malloc'd). */
static uint64_t *kp_partition_keep_seqs(struct kp_partition *p,
                                        const struct kp_batch *b)
{
    uint64_t *out = kp_calloc((size_t)b->count + 1, sizeof(*out));
    uint32_t n = 0;
    const uint64_t *seq = kp_runs_spool(&b->runs, &n);
    struct kp_record_view v;
    struct kp_rd r;
    bool unwritten = false;

    kp_rd_init(&r, kp_batch_recs(b), kp_batch_recs_len(b));
    for (int32_t i = 0; i < b->count; i++) {
        if (kp_record_next(&r, &v) != KP_OK) {
            break;
        }
        out[i] = seq && (uint32_t)i < n ? seq[i] : 0;
        if (!out[i] && p->acct->keep > 0 &&
            kp_partition_spool_keep(p, b, &v, i, &out[i]) != KP_OK) {
            out[i] = 0;
        }
        unwritten |= out[i] > kp_spool_written_seq(p->env->spool);
    }
    if (unwritten) {
        kp_spool_flush(p->env->spool); /* a failure is logged */
    }
    return out;
}

/*
 * Shutdown with a disk spool: what the spool keeps needs no dead letter.
 * A message with a spool record stays there (not acknowledged: it is sent
 * again after the next start). One in memory only (overflow mode) is
 * appended now if that keeps its partition's order: its topic has no
 * unacknowledged record in the spool and no record of an earlier run is
 * unread (decided once per topic). Kept is only what is on file after a
 * flush; the rest fails as `why`, dead-lettered, and a record it has is
 * acknowledged (once the dead letter holds it) lest a later write bring
 * it back. Kept messages are not settled: no receipt says they failed,
 * and their connections close without a summary.
 */
static void kp_partition_settle_kept(struct kp_partition *p,
                                     struct kp_batch *b, enum kp_reason why)
{
    struct kp_part_env *env = p->env;
    struct kp_record_view v;
    struct kp_rd r;

    if (p->acct->keep == 0) {
        p->acct->keep = p->acct->spooled == 0 && !env->spool_unread ? 1 : -1;
    }
    uint64_t *seqs = kp_partition_keep_seqs(p, b);
    uint64_t written = kp_spool_written_seq(env->spool);
    kp_rd_init(&r, kp_batch_recs(b), kp_batch_recs_len(b));
    for (int32_t i = 0; i < b->count; i++) {
        const uint8_t *rec = r.p;
        struct kp_runs one = {0};
        uint32_t n;
        if (kp_record_next(&r, &v) != KP_OK) {
            break;
        }
        kp_runs_take(&one, &b->runs, 1);
        const uint64_t *own = kp_runs_spool(&one, &n); /* not appended */
        if (seqs[i] && seqs[i] <= written) {
            env->n->spool_kept++;
        } else if (kp_partition_fail_one(p, b, i, rec, (size_t)(r.p - rec),
                                         &one, why) == KP_OK &&
                   seqs[i]) {
            kp_spool_ack(env->spool, seqs[i]);
            p->acct->spooled -= own && own[0];
        }
        kp_runs_deinit(&one);
    }
    free(seqs);
    p->queued_msgs -= (uint32_t)b->count;
    int64_t bytes = (int64_t)b->msg_bytes, msgs = b->count;
    kp_batch_destroy(b);
    kp_part_env_account(env, p->acct, -bytes, -msgs);
}

static void kp_partition_settle(struct kp_partition *p, struct kp_batch *b,
                                enum kp_reason why, const char *detail)
{
    struct kp_part_env *env = p->env;
    bool ok = why == KP_REASON_NONE;

    if (env->spool && (why == KP_REASON_SHUTDOWN ||
                       why == KP_REASON_SHUTDOWN_UNCONFIRMED)) {
        kp_partition_settle_kept(p, b, why);
        return;
    }
    bool recorded = true;
    if (ok) {
        env->n->delivered += (uint64_t)b->count;
        p->delivered += (uint64_t)b->count;
    } else {
        recorded = kp_partition_record_failure(p, b, why, detail) == KP_OK;
    }
    if (env->spool && recorded) {
        /* after the dead letter; one that could not take them leaves
         * their records in the spool, for the next start */
        kp_partition_spool_ack(p, b);
    }
    /* Receipts: record i of the batch is at base_offset + i. */
    kp_runs_settle(&b->runs, env->gens, ok ? KP_FATE_OK : KP_FATE_FAILED,
                   why, p->id, b->base_offset);
    p->queued_msgs -= (uint32_t)b->count;
    int64_t bytes = (int64_t)b->msg_bytes, msgs = b->count;
    kp_batch_destroy(b);
    kp_part_env_account(env, p->acct, -bytes, -msgs);
}

void kp_partition_delivered(struct kp_partition *p, struct kp_batch *b,
                            int64_t base_offset)
{
    kp_partition_landed(p, b);
    b->base_offset = base_offset;
    kp_partition_settle(p, b, KP_REASON_NONE, NULL);
    kp_partition_changed(p);
}

void kp_partition_fail(struct kp_partition *p, struct kp_batch *b,
                       enum kp_reason why, const char *detail)
{
    kp_partition_landed(p, b);
    /* The sequence now has a gap: later batches need a new id. */
    kp_partition_gap(p, b, "batch failed");
    kp_partition_settle(p, b, why, detail);
    kp_partition_changed(p);
}

void kp_partition_drop_head(struct kp_partition *p, enum kp_reason why,
                            const char *detail)
{
    struct kp_batch *b = TAILQ_FIRST(&p->queue);

    kp_assert(b != NULL);
    TAILQ_REMOVE(&p->queue, b, link);
    kp_partition_fail(p, b, why, detail);
}

void kp_partition_set_leader(struct kp_partition *p, int32_t leader)
{
    if (p->leader == leader) {
        return;
    }
    kp_debug("%s [%d]: leader %d -> %d", p->topic_name, p->id, p->leader,
             leader);
    p->leader = leader;
    kp_partition_changed(p);
}

static void kp_partition_on_backoff(struct ev_loop *loop, ev_timer *w,
                                    int revents)
{
    struct kp_partition *p = w->data;
    (void)loop;
    (void)revents;
    p->backing_off = false;
    kp_partition_changed(p);
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

static void kp_partition_start_backoff(struct kp_partition *p,
                                       const struct kp_batch *b)
{
    const struct kp_producer_conf *pc = b->pconf;
    int64_t ms = kp_backoff_ms(pc->retry_backoff_ms, pc->retry_backoff_max_ms,
                               b->attempts - 1);

    p->backing_off = true;
    ev_timer_set(&p->backoff, (double)ms / 1000.0, 0.);
    ev_timer_start(p->env->loop, &p->backoff);
}

void kp_partition_retry(struct kp_partition *p, struct kp_batch *b,
                        bool backoff)
{
    kp_partition_landed(p, b);
    kp_partition_requeue(p, b);
    p->env->n->retries++;
    if (backoff && !p->backing_off) {
        kp_partition_start_backoff(p, b);
    }
    kp_partition_changed(p);
}

/* Appends src's record v (its index: v->offset_delta) to b, with its
 * headers decoded into *hdrs (grown as needed). */
static void kp_partition_copy_record(struct kp_partition *p,
                                     const struct kp_batch *src,
                                     struct kp_record_view *v,
                                     struct kp_batch *b,
                                     struct kp_header **hdrs, int32_t *cap)
{
    bool pinned = kp_batch_pinned(src, (int32_t)v->offset_delta);
    int32_t hc = 0;

    if (v->header_cnt > *cap) {
        *cap = v->header_cnt;
        *hdrs = kp_realloc(*hdrs, (size_t)*cap * sizeof(**hdrs));
    }
    while (hc < v->header_cnt &&
           kp_record_header_next(v, &(*hdrs)[hc]) == KP_OK) {
        hc++;
    }
    struct kp_msg m = {.key = v->key, .key_len = v->key_len,
                       .value = v->value, .value_len = v->value_len,
                       .partition = pinned ? p->id : -1,
                       .headers = *hdrs, .header_cnt = (size_t)hc};
    kp_batch_append(b, &m, src->base_ts + v->ts_delta, NULL, 0);
}

/*
 * Re-encodes src's records into two new sealed batches: record i goes to
 * out[side[i]], with its writer's run, in order. Both keep src's place in
 * the send order and its attempts; src itself is left for the caller.
 */
static void kp_partition_divide(struct kp_partition *p, struct kp_batch *src,
                                 const uint8_t *side, struct kp_batch *out[2])
{
    struct kp_rd r;
    struct kp_record_view v;
    struct kp_header *hdrs = NULL;
    int32_t cap = 0;

    for (int k = 0; k < 2; k++) {
        out[k] = kp_batch_create(p->env->pool, p, src->conf, src->pconf,
                                 src->created_ms);
        out[k]->attempts = src->attempts;
        out[k]->unconfirmed = src->unconfirmed;
        out[k]->split_depth = src->split_depth + 1;
        out[k]->order = src->order;
        out[k]->id = ++p->next_batch_id;
    }
    kp_rd_init(&r, kp_batch_recs(src), kp_batch_recs_len(src));
    for (int32_t i = 0; i < src->count && kp_record_next(&r, &v) == KP_OK;
         i++) {
        struct kp_batch *b = out[side[i] ? 1 : 0];
        kp_partition_copy_record(p, src, &v, b, &hdrs, &cap);
        kp_runs_take(&b->runs, &src->runs, 1);
    }
    free(hdrs);
    for (int k = 0; k < 2; k++) {
        if (out[k]->count > 0) {
            kp_batch_seal(out[k], p->env->cz);
        }
    }
}

/* src is replaced by `parts` (sealed, or empty and then freed): the
 * accounting follows, and its sequences, never appended, leave a gap. */
static void kp_partition_replace(struct kp_partition *p, struct kp_batch *src,
                                 struct kp_batch *parts[2], const char *why)
{
    int64_t bytes = -(int64_t)src->msg_bytes;

    for (int k = 0; k < 2; k++) {
        bytes += (int64_t)parts[k]->msg_bytes;
    }
    kp_part_env_account(p->env, p->acct, bytes, 0);
    kp_partition_gap(p, src, why);
    kp_batch_destroy(src);
}

void kp_partition_unanswered(struct kp_partition *p, struct kp_batch *b)
{
    b->unconfirmed = true;
    kp_partition_retry(p, b, true);
}

void kp_partition_split(struct kp_partition *p, struct kp_batch *b)
{
    struct kp_batch *half[2];
    uint8_t *side = kp_calloc((size_t)b->count, 1);

    kp_partition_landed(p, b);
    kp_info("%s [%d]: batch of %d messages too large, splitting",
            p->topic_name, p->id, b->count);
    memset(side + b->count / 2, 1, (size_t)(b->count - b->count / 2));
    kp_partition_divide(p, b, side, half);
    free(side);
    /* half[0] keeps the place of b, half[1] the middle of b's range of
     * `order`. */
    if (b->split_depth < 31) {
        half[1]->order = b->order + (UINT64_C(1) << (31 - b->split_depth));
    }
    kp_partition_replace(p, b, half, "batch split");
    /* half[1] first: each goes before the first batch never sent. */
    kp_partition_requeue(p, half[1]);
    kp_partition_requeue(p, half[0]);
    p->env->n->retries += 2;
    kp_partition_changed(p);
}

enum kp_reason kp_part_env_stuck(const struct kp_part_env *env,
                                 int32_t leader, const char **detail)
{
    return env->hooks->stuck ? env->hooks->stuck(env->arg, leader, detail)
                             : KP_REASON_DELIVERY_TIMEOUT;
}

void kp_partition_exclude(struct kp_partition *p, struct kp_batch *b,
                          const int32_t *bad, int32_t bad_cnt,
                          enum kp_reason why, const char *detail)
{
    struct kp_batch *part[2];
    uint8_t *side = kp_calloc((size_t)b->count, 1);

    kp_partition_landed(p, b);
    for (int32_t i = 0; i < bad_cnt; i++) {
        if (bad[i] >= 0 && bad[i] < b->count) {
            side[bad[i]] = 1;
        }
    }
    kp_partition_divide(p, b, side, part);
    free(side);
    kp_partition_replace(p, b, part, "records refused");
    kp_log_rl(&kp_partition_fail_rl, KP_LOG_WARNING,
              "%s [%d]: the broker refused %d of %d record(s) (%s); the "
              "others are sent again",
              p->topic_name, p->id, part[1]->count,
              part[0]->count + part[1]->count, kp_reason_names[why]);
    if (part[1]->count) {
        kp_partition_settle(p, part[1], why, detail);
    } else {
        kp_batch_destroy(part[1]);
    }
    if (part[0]->count) {
        kp_partition_requeue(p, part[0]);
        p->env->n->retries++;
    } else {
        kp_batch_destroy(part[0]);
    }
    kp_partition_changed(p);
}

void kp_partition_expire(struct kp_partition *p, int64_t now_ms,
                         const char *idemp_detail)
{
    struct kp_batch *b, *next;
    bool any = false;
    enum kp_reason why = KP_REASON__COUNT; /* asked once, if needed */
    const char *detail = NULL;

    for (b = TAILQ_FIRST(&p->queue); b; b = next) {
        next = TAILQ_NEXT(b, link);
        if (now_ms - b->created_ms < b->pconf->delivery_timeout_ms) {
            continue;
        }
        if (why == KP_REASON__COUNT) {
            why = kp_part_env_stuck(p->env, p->leader, &detail);
        }
        TAILQ_REMOVE(&p->queue, b, link);
        kp_partition_gap(p, b, "batch expired");
        kp_partition_settle(p, b, why,
                            why != KP_REASON_DELIVERY_TIMEOUT ? detail
                            : b->pconf->idempotence           ? idemp_detail
                                                              : NULL);
        any = true;
    }
    if (any) {
        kp_partition_changed(p);
    }
}

void kp_partition_abandon(struct kp_partition *p, enum kp_reason why)
{
    struct kp_batch *b;

    kp_partition_seal(p);
    while ((b = TAILQ_FIRST(&p->queue)) != NULL) {
        TAILQ_REMOVE(&p->queue, b, link);
        kp_partition_settle(p, b,
                            why == KP_REASON_SHUTDOWN && b->unconfirmed
                                ? KP_REASON_SHUTDOWN_UNCONFIRMED
                                : why,
                            NULL);
    }
    kp_partition_changed(p);
}
