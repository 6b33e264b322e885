/*
 * kp_router.c - the pipeline's shared parts and the topic table, with the
 * hooks to the layers above: memory accounting drives backpressure,
 * settling drives flush barriers, partition changes drive the sender.
 */
#include "kp_router.h"

#include <errno.h>
#include <stdio.h>

#include "kp_compress.h"
#include "kp_counters.h"
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
    if (on && r->spool) {
        r->backpressure_since_ms = now;
        kp_info("backpressure: the spool takes no more, pausing reads");
    } else if (on) {
        r->backpressure_since_ms = now;
        kp_info("backpressure: %lld bytes buffered (limit %lld), pausing "
                "reads",
                (long long)(r->env.buffered_bytes + r->client_bytes),
                (long long)r->conf->buffer_bytes);
    } else {
        r->backpressure_total_ms += now - r->backpressure_since_ms;
        kp_info("backpressure released");
    }
    r->hooks->backpressure(r->arg, on);
}

/*
 * What this run's spool-only messages cost in `spilled` (a run of their
 * own and a receipt number each, at worst): memory like the messages'.
 * It counts against buffer_bytes and is capped at half of it (and far
 * below kp_runs' 32-bit counts), so that messages always have the other
 * half: when the cap is reached, the writers pause as for a full spool.
 */
#define KP_ROUTER_SPILLED_COST ((int64_t)(sizeof(struct kp_run) + 8))
#define KP_ROUTER_SPILLED_LIMIT ((uint64_t)1 << 28)

static uint64_t kp_router_spilled_max(const struct kp_router *r)
{
    uint64_t n = (uint64_t)(r->conf->buffer_bytes / 2 /
                            KP_ROUTER_SPILLED_COST);
    return KP_MIN(KP_MAX(n, 16), KP_ROUTER_SPILLED_LIMIT);
}

/* Whether buffer_bytes is taken: messages held, the unfinished lines
 * connections hold, the bookkeeping of spool-only messages. */
static bool kp_router_memory_full(const struct kp_router *r)
{
    int64_t spilled = (int64_t)r->spilled_cnt * KP_ROUTER_SPILLED_COST;
    return r->env.buffered_bytes + r->client_bytes + spilled >=
           r->conf->buffer_bytes;
}

/* Backpressure at buffer_bytes, released once a tenth is free again
 * (hysteresis). With a disk spool, messages go there instead, and writers
 * are paused only while the spool takes no more. */
static void kp_router_check_backpressure(struct kp_router *r)
{
    int64_t limit = r->conf->buffer_bytes;
    int64_t held = r->env.buffered_bytes + r->client_bytes;

    if (r->spool) {
        if (r->backpressure != r->spool_blocked) {
            kp_router_set_backpressure(r, r->spool_blocked);
        }
        return;
    }
    if (!r->backpressure && held >= limit) {
        kp_router_set_backpressure(r, true);
    } else if (r->backpressure && held <= limit / 10 * 9) {
        kp_router_set_backpressure(r, false);
    }
}

/* A topic's bytes changed: backpressure; once some were freed, writers
 * waiting for the topic's room, and flush barriers settled messages may
 * complete. */
static void kp_router_on_accounted(void *arg, struct kp_account *acct,
                                   bool freed)
{
    struct kp_router *r = arg;

    kp_router_check_backpressure(r);
    if (freed) {
        kp_topic_on_accounted(&r->topics, acct);
        r->hooks->settled(r->arg);
    }
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

/* Does nothing: an active idle watcher keeps the loop from blocking, so
 * the next prepare pumps on (kp_router_pump). */
static void kp_router_on_pump_idle(struct ev_loop *loop, ev_idle *w,
                                   int revents)
{
    (void)revents;
    ev_idle_stop(loop, w);
}

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
    ev_idle_init(&r->pump_idle, kp_router_on_pump_idle);
    return r;
}

void kp_router_destroy(struct kp_router *r)
{
    ev_idle_stop(r->env.loop, &r->pump_idle);
    if (r->cursor) {
        kp_spool_cursor_destroy(r->cursor);
    }
    kp_runs_deinit(&r->spilled);
    if (r->replay) {
        kp_tally_put(r->replay);
    }
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

/* The spool's record limit was set at start from message_max_bytes: a
 * reload that raises it cannot raise the limit of the open spool. */
static void kp_router_spool_reconf(struct kp_router *r,
                                   const struct kp_conf *conf)
{
    size_t max_msg = (size_t)kp_conf_max_message(conf);
    size_t limit = kp_spool_max_record(r->spool);

    if (max_msg + KP_SPOOL_REC_SLACK > limit) {
        kp_warn("reload: message_max_bytes %zu is more than the disk spool "
                "was opened for (%zu): messages longer than that are "
                "rejected (too_long) when they go through the spool; takes "
                "effect on restart",
                max_msg, limit > KP_SPOOL_REC_SLACK
                             ? limit - KP_SPOOL_REC_SLACK
                             : 0);
    }
}

void kp_router_reconf(struct kp_router *r, struct kp_conf *conf)
{
    if (r->spool) {
        kp_router_spool_reconf(r, conf);
    }
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

/* ---- the disk spool ----
 *
 * Two states (SPOOL_WIRING, both modes):
 *   direct    `always` appends each message to the spool and batches it
 *             (the record is acknowledged once Kafka has it, or the dead
 *             letter); `overflow` batches it only;
 *   draining  entered at start when the spool holds records of an earlier
 *             run, and whenever memory (buffer_bytes) or the message's
 *             topic (topic_buffer_bytes) is full: each new message is
 *             appended only, and the cursor reads the records back into
 *             batches in seq order as memory frees (kp_router_pump); when
 *             it reaches the tail, direct again.
 * One order for everything keeps every connection's and partition's order
 * across memory and spool, and puts an earlier run's records first. The
 * price: a record whose topic is full holds up the records behind it
 * (read back in order) until the topic has room, or for max_block_ms,
 * after which that topic's records fail (buffer_full) until it has room.
 *
 * This run's spool-only messages keep their writer's tally, flush
 * generation and number in `spilled` (runs, in seq order); the records of
 * earlier runs are counted, when read back, in the `replay` tally (nobody
 * to tell); that bookkeeping counts against buffer_bytes, up to half of
 * it. Writers are paused only when the spool takes no more (max_bytes, a
 * write error, or that half is taken): KP_ROUTE_WAIT_SPOOL and
 * backpressure.
 */

static struct kp_ratelimit kp_router_spool_rl;

/* rc: KP_AGAIN (max_bytes reached, or why says what), or KP_ERROR (a
 * write failed with err). */
static void kp_router_spool_block(struct kp_router *r, int rc, int err,
                                  const char *why)
{
    r->spool_blocked = true;
    r->spool_error = rc == KP_ERROR;
    r->env.n->spool_pauses++;
    kp_log_rl(&kp_router_spool_rl, KP_LOG_WARNING,
              "spool: %s: writers paused until it has room",
              rc == KP_ERROR ? strerror(err)
              : why          ? why
                             : "max_bytes reached");
    kp_router_check_backpressure(r);
}

/* Appends m, read at ts; KP_OK (*seq), KP_ERROR with errno EMSGSIZE (it
 * cannot ever fit), else KP_AGAIN: the spool is blocked now. */
static int kp_router_spool_append(struct kp_router *r, const struct kp_msg *m,
                                  int64_t ts, const struct kp_header *extra,
                                  size_t extra_cnt, uint64_t *seq)
{
    struct kp_spool_rec rec = {.msg = *m, .extra = extra,
                               .extra_cnt = extra_cnt};

    rec.msg.timestamp = ts;
    int rc = kp_spool_append(r->spool, &rec, seq);
    if (rc == KP_OK || (rc == KP_ERROR && errno == EMSGSIZE)) {
        return rc;
    }
    kp_router_spool_block(r, rc, errno, NULL);
    return KP_AGAIN;
}

static void kp_router_start_draining(struct kp_router *r)
{
    r->draining = true;
    kp_spool_cursor_seek(r->cursor, kp_spool_next_seq(r->spool));
    kp_debug("spool: draining (memory or a topic full)");
}

/* One message being routed, as kp_router_route was given it. */
struct kp_router_msg {
    const struct kp_msg *m;
    int64_t ts;
    struct kp_tally *tally;        /* borrowed */
    const struct kp_header *extra; /* borrowed */
    size_t extra_cnt;
};

/* A message that passed the topic's checks goes to the spool and/or a
 * batch, as the mode and the state say. */
static enum kp_route kp_router_spool_take(struct kp_router *r,
                                          struct kp_topic *t,
                                          const struct kp_router_msg *rm,
                                          enum kp_reason *why)
{
    const struct kp_msg *m = rm->m;
    struct kp_tally *tally = rm->tally;
    struct kp_topic_table *tt = &r->topics;
    bool spill = r->draining || kp_topic_full(tt, t) ||
                 kp_router_memory_full(r);
    struct kp_origin o = {tally, 0, tally->seq, 0};

    if (!spill && r->spool_mode == KP_SPOOL_OVERFLOW) {
        o.gen = kp_topic_count(tt, tally);
        kp_topic_append(tt, t, m, rm->ts, &o, rm->extra, rm->extra_cnt);
        return KP_ROUTE_QUEUED;
    }
    if (spill && r->spilled_cnt >= kp_router_spilled_max(r)) {
        kp_router_spool_block(r, KP_AGAIN, 0,
                              "as many messages as memory can track are "
                              "in the spool only");
        return KP_ROUTE_WAIT_SPOOL;
    }
    if (spill && !r->draining) {
        kp_router_start_draining(r);
    }
    int rc = kp_router_spool_append(r, m, rm->ts, rm->extra, rm->extra_cnt,
                                    &o.spool_seq);
    if (rc != KP_OK) {
        *why = KP_REASON_TOO_LONG;
        return rc == KP_AGAIN ? KP_ROUTE_WAIT_SPOOL : KP_ROUTE_REJECTED;
    }
    t->acct.spooled++;
    o.gen = kp_topic_count(tt, tally);
    if (!spill) {
        kp_topic_append(tt, t, m, rm->ts, &o, rm->extra, rm->extra_cnt);
        return KP_ROUTE_QUEUED;
    }
    if (r->spilled_cnt++ == 0) {
        r->spilled_first = o.spool_seq;
    }
    kp_runs_add(&r->spilled, tally, o.gen, o.num);
    r->env.n->spool_spilled++;
    return KP_ROUTE_QUEUED;
}

static enum kp_route kp_router_route_spool(struct kp_router *r,
                                           struct kp_topic *t,
                                           const struct kp_router_msg *rm,
                                           enum kp_reason *why)
{
    struct kp_topic_table *tt = &r->topics;
    const char *detail = NULL;
    enum kp_route rc = kp_topic_check(tt, t, rm->m, KP_TOPIC_FULL_IGNORED,
                                      why, &detail);

    if (rc == KP_ROUTE_FAILED) {
        struct kp_origin o = {rm->tally, kp_topic_count(tt, rm->tally),
                              rm->tally->seq, 0};
        kp_topic_fail_msg(tt, t, t->name, rm->m, rm->ts, &o, rm->extra,
                          rm->extra_cnt, *why, detail);
    }
    if (rc != KP_ROUTE_QUEUED) {
        return rc;
    }
    if (r->spool_blocked) {
        return KP_ROUTE_WAIT_SPOOL;
    }
    return kp_router_spool_take(r, t, rm, why);
}

void kp_router_set_spool(struct kp_router *r, struct kp_spool *s,
                         enum kp_spool_mode mode)
{
    struct kp_spool_stats st;

    r->spool = s;
    r->spool_mode = mode;
    r->env.spool = s;
    r->replay = kp_tally_create(NULL, NULL);
    kp_spool_stats_get(s, &st);
    r->cursor = kp_spool_cursor_create(s, 0);
    if (st.backlog) {
        /* an earlier run's records go first */
        r->draining = true;
        r->env.spool_unread = true;
        kp_info("spool: %llu message(s) of an earlier run to send first",
                (unsigned long long)st.backlog);
    } else {
        kp_spool_cursor_seek(r->cursor, kp_spool_next_seq(s));
    }
}

/* This run's spool-only messages whose records were lost (cut, damaged on
 * disk) before they were read back: n of them fail. */
static void kp_router_spilled_lost(struct kp_router *r, uint64_t n)
{
    struct kp_runs lost = {0};

    n = KP_MIN(n, r->spilled_cnt);
    if (!n) {
        return;
    }
    kp_err("spool: %llu message(s) lost from the spool before they were "
           "read back (damaged on disk)",
           (unsigned long long)n);
    kp_runs_take(&lost, &r->spilled, (uint32_t)n);
    r->env.n->failed += n;
    kp_runs_settle(&lost, &r->gens, KP_FATE_FAILED, KP_REASON_SPOOL_ERROR, -1,
                   -1);
    kp_runs_deinit(&lost);
    r->spilled_first += n;
    r->spilled_cnt -= n;
}

/* The next record to place; KP_OK, or KP_AGAIN / KP_ERROR: none now. At
 * the tail the spool is caught up: direct again. */
static int kp_router_spool_next(struct kp_router *r)
{
    int rc = kp_spool_cursor_next(r->cursor, &r->head);

    if (rc == KP_AGAIN) {
        kp_router_spilled_lost(r, r->spilled_cnt);
        r->draining = false;
        r->env.spool_unread = false;
        kp_debug("spool: caught up");
        return rc;
    }
    if (rc != KP_OK) {
        return rc;
    }
    r->head_valid = true;
    if (r->head.seq >= kp_spool_start_seq(r->spool)) {
        r->env.spool_unread = false;
        if (r->head.seq > r->spilled_first) {
            kp_router_spilled_lost(r, r->head.seq - r->spilled_first);
        }
    }
    return KP_OK;
}

/* Whose the head record is: this run's (the first of `spilled`), or an
 * earlier run's (counted now, in the replay tally). */
static void kp_router_head_origin(struct kp_router *r, bool replay,
                                  struct kp_origin *o)
{
    if (replay) {
        *o = (struct kp_origin){r->replay, kp_topic_count(&r->topics,
                                                          r->replay),
                                0, r->head.seq};
        return;
    }
    kp_runs_first(&r->spilled, &o->tally, &o->gen, &o->num);
    o->spool_seq = r->head.seq;
}

/* The head is placed (or failed): `spilled` lets its first go. */
static void kp_router_head_done(struct kp_router *r, bool replay)
{
    r->head_valid = false;
    if (!replay) {
        kp_runs_drop_first(&r->spilled);
        r->spilled_first++;
        r->spilled_cnt--;
    }
}

/* How the head's topic being full is treated: it waits for room, up to
 * max_block_ms; then that topic's records fail until it has room. The
 * state is the topic's (kp_topic_on_accounted clears it once the topic
 * has room): with several full topics each times out once, however their
 * records alternate at the head. */
static enum kp_topic_full kp_router_head_full(struct kp_router *r,
                                              struct kp_topic *t)
{
    int64_t now = (int64_t)(ev_now(r->env.loop) * 1000);

    if (!kp_topic_full(&r->topics, t)) {
        t->spool_full_since_ms = 0;
        t->spool_full_fails = false;
        return KP_TOPIC_FULL_WAITS;
    }
    if (t->spool_full_fails) {
        return KP_TOPIC_FULL_FAILS;
    }
    if (!t->spool_full_since_ms) {
        t->spool_full_since_ms = now;
    }
    if (now - t->spool_full_since_ms < r->conf->max_block_ms) {
        return KP_TOPIC_FULL_WAITS;
    }
    kp_log_rl(&kp_router_spool_rl, KP_LOG_WARNING,
              "spool: topic %s full for max_block_ms (%d ms): its records "
              "read back fail (buffer_full) until it has room",
              t->name, r->conf->max_block_ms);
    t->spool_full_fails = true;
    return KP_TOPIC_FULL_FAILS;
}

/* Places the head record in a batch, or fails it; KP_AGAIN: it waits (its
 * topic's metadata, or room). */
static int kp_router_place(struct kp_router *r)
{
    struct kp_topic_table *tt = &r->topics;
    struct kp_msg *m = &r->head.msg;
    bool replay = r->head.seq < kp_spool_start_seq(r->spool);
    enum kp_reason why = KP_REASON_TOO_MANY_TOPICS;
    const char *detail = "max_topics reached";
    struct kp_origin o;
    enum kp_route rc = KP_ROUTE_FAILED;
    char name[KP_TOPIC_NAME_MAX + 1];

    struct kp_topic *t = kp_router_topic(r, m->topic, m->topic_len);
    if (t) {
        rc = kp_topic_check(tt, t, m, kp_router_head_full(r, t), &why,
                            &detail);
    }
    if (rc == KP_ROUTE_WAIT_METADATA || rc == KP_ROUTE_WAIT_ROOM) {
        return KP_AGAIN;
    }
    kp_router_head_origin(r, replay, &o);
    if (rc == KP_ROUTE_QUEUED) {
        t->acct.spooled += replay;
        kp_topic_append(tt, t, m, m->timestamp, &o, NULL, 0);
    } else {
        snprintf(name, sizeof(name), "%.*s",
                 (int)KP_MIN(m->topic_len, KP_TOPIC_NAME_MAX), m->topic);
        if (t) {
            t->acct.spooled += replay;
        }
        kp_topic_fail_msg(tt, t, name, m, m->timestamp, &o, NULL, 0, why,
                          detail ? detail : kp_reason_names[why]);
    }
    kp_router_head_done(r, replay);
    return KP_OK;
}

/* Writers paused by a full spool go on once it has room again (a write
 * error is retried by kp_router_spool_retry): an eighth of it, or two of
 * its largest records, but never more than half (the configuration asks
 * for room for four messages), so the room wanted can always free. The
 * spool's own sizes: a reload changes the configuration, not the open
 * spool. And the spool-only messages' bookkeeping must be an eighth below
 * its cap. */
static void kp_router_spool_unblock(struct kp_router *r)
{
    int64_t max = kp_spool_max_bytes(r->spool);
    int64_t want = KP_MIN(KP_MAX(max / 8,
                                 (int64_t)kp_spool_max_record(r->spool) * 2),
                          max / 2);

    if (r->spool_blocked && !r->spool_error &&
        kp_spool_room(r->spool) >= want &&
        r->spilled_cnt <= kp_router_spilled_max(r) / 8 * 7) {
        r->spool_blocked = false;
        kp_router_check_backpressure(r);
    }
}

void kp_router_spool_retry(struct kp_router *r)
{
    if (r->spool && r->spool_blocked && r->spool_error) {
        /* the writers try again; the next append that fails pauses them
         * again (acks the journal could not take wait in memory and do
         * not stop appends) */
        kp_spool_flush(r->spool);
        r->spool_error = false;
        kp_router_spool_unblock(r);
    }
}

void kp_router_pump(struct kp_router *r)
{
    int budget = 16384; /* records per loop iteration (a few ms): others'
                           * turn too */

    if (!r->spool) {
        return;
    }
    while (r->draining && budget-- > 0 && !kp_router_memory_full(r)) {
        if (!r->head_valid && kp_router_spool_next(r) != KP_OK) {
            break;
        }
        if (kp_router_place(r) != KP_OK) {
            break;
        }
    }
    if (budget < 0 && r->draining && !kp_router_memory_full(r)) {
        /* more to read and room for it: the next round comes at once,
         * not with the next event (a timer a second away) */
        ev_idle_start(r->env.loop, &r->pump_idle);
    }
    kp_router_spool_unblock(r); /* after the round: it may free the cap */
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
    if (r->spool) {
        const struct kp_router_msg rm = {m, ts, tally, extra, extra_cnt};
        return kp_router_route_spool(r, t, &rm, why);
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

/* Shutdown: this run's spool-only messages stay for the next start only
 * if their records are on file (a write that fails at close would lose
 * them silently). The others fail (spool_error: their bodies are in the
 * spool's write buffer only, there is no dead letter line) and are
 * acknowledged, lest a later write bring them back. */
static void kp_router_spilled_unwritten(struct kp_router *r)
{
    uint64_t written = kp_spool_written_seq(r->spool);
    uint64_t end = r->spilled_first + r->spilled_cnt; /* seqs [first, end) */
    struct kp_runs keep = {0};

    if (!r->spilled_cnt || end - 1 <= written) {
        return;
    }
    uint64_t from = KP_MAX(written + 1, r->spilled_first);
    uint64_t n = end - from;
    kp_err("spool: %llu message(s) could not be written to the spool at "
           "shutdown: they fail (spool_error)",
           (unsigned long long)n);
    kp_runs_take(&keep, &r->spilled, (uint32_t)(r->spilled_cnt - n));
    r->env.n->failed += n;
    kp_runs_settle(&r->spilled, &r->gens, KP_FATE_FAILED,
                   KP_REASON_SPOOL_ERROR, -1, -1);
    kp_spool_ack_range(r->spool, from, n);
    kp_runs_deinit(&r->spilled);
    r->spilled = keep;
    r->spilled_cnt -= n;
}

void kp_router_abandon(struct kp_router *r, enum kp_reason why)
{
    struct kp_router_abandonment a = {&r->topics, why};

    if (r->spool) {
        /* what is kept must be on file: written first (a failure is
         * logged; see kp_partition_settle_kept) */
        kp_spool_flush(r->spool);
        kp_router_spilled_unwritten(r);
    }
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
