/*
 * check_partition.c - the partition state machine under a router, with no
 * network: sealing on batch_bytes, batch_messages and linger (the loop's
 * timer), taking and stamping sequences, retries back in seal order, splits
 * that keep order and records, delivery-timeout expiry of queued batches
 * only, the dead letter written before the writer is told, the shutdown
 * abandon (shutdown_unconfirmed for a batch that got no answer), and the
 * memory accounting back to zero once everything is settled.
 *
 * The test plays the sender: it takes batches and settles them itself.
 * The router's hooks count what the layers above would hear. Time is never
 * waited for except the linger and backoff timers (EVRUN_ONCE with the
 * timer armed); ages are made by moving a batch's created_ms.
 */
#include "kp_partition.h"

#include <check.h>
#include <ev.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kp_conf.h"
#include "kp_counters.h"
#include "kp_deadletter.h"
#include "kp_log.h"
#include "kp_record.h"
#include "kp_router.h"
#include "kp_tally.h"
#include "kp_testloop.h"

/* Producer settings of most tests: acks 1 (no idempotence), nothing seals
 * by time. */
#define P_PLAIN                                                                \
    "\"acks\": 1, \"linger_ms\": 600000, \"delivery_timeout_ms\": 900000,"     \
    " \"retry_backoff_ms\": 1, \"retry_backoff_max_ms\": 1"
/* The same with idempotence (acks all). */
#define P_IDEMP                                                                \
    "\"acks\": \"all\", \"linger_ms\": 600000,"                                \
    " \"delivery_timeout_ms\": 900000, \"retry_backoff_ms\": 1,"               \
    " \"retry_backoff_max_ms\": 1"

struct fixture {
    struct ev_loop *loop;
    struct kp_conf *conf;
    struct kp_counters n;
    struct kp_router *router;
    struct kp_tally *tally; /* the one writer of every message */
    struct kp_deadletter *dl;
    char dir[64];
    char dl_path[96];

    int changed, new_topics, settled, bp_on, bp_off;
    int seq_gaps;
    int64_t gap_pid;
    int16_t gap_epoch;
    char gap_why[64];

    /* what the writer saw when told its last message was settled */
    int idle_calls;
    int dl_lines_at_idle;
    uint64_t failed_at_idle;
};

static struct fixture F;

static void fx_changed(void *arg, struct kp_partition *p)
{
    (void)arg;
    (void)p;
    F.changed++;
}

static void fx_seq_gap(void *arg, int64_t pid, int16_t epoch, const char *why)
{
    (void)arg;
    F.seq_gaps++;
    F.gap_pid = pid;
    F.gap_epoch = epoch;
    snprintf(F.gap_why, sizeof(F.gap_why), "%s", why);
}

static void fx_new_topic(void *arg, struct kp_topic *t)
{
    (void)arg;
    (void)t;
    F.new_topics++;
}

static void fx_backpressure(void *arg, bool on)
{
    (void)arg;
    if (on) {
        F.bp_on++;
    } else {
        F.bp_off++;
    }
}

static void fx_settled(void *arg)
{
    (void)arg;
    F.settled++;
}

static const struct kp_router_hooks fx_hooks = {
    .changed = fx_changed,
    .seq_gap = fx_seq_gap,
    .new_topic = fx_new_topic,
    .backpressure = fx_backpressure,
    .settled = fx_settled,
};

/* Lines in the dead letter file now. */
static int fx_dl_lines(void)
{
    char buf[65536];
    int fd = open(F.dl_path, O_RDONLY | O_CLOEXEC);
    int lines = 0;
    ssize_t n;

    ck_assert_int_ge(fd, 0);
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            lines += buf[i] == '\n';
        }
    }
    close(fd);
    return lines;
}

/* The writer is told nothing is pending any more (a client would answer
 * its summary now): what is on disk and counted at this moment? */
static void fx_on_idle(void *owner)
{
    ck_assert_ptr_eq(owner, &F);
    F.idle_calls++;
    F.failed_at_idle = F.n.failed;
    if (F.dl) {
        F.dl_lines_at_idle = fx_dl_lines();
    }
}

/* producer: the `producer` object's members; top: more top-level members
 * (or ""); with_dl: a dead letter file in a fresh directory. */
static void fx_start_dl(const char *producer, const char *top, bool with_dl)
{
    char json[2048];

    memset(&F, 0, sizeof(F));
    snprintf(json, sizeof(json),
             "{\"brokers\": [\"127.0.0.1:9092\"], \"producer\": {%s}%s%s}",
             producer, *top ? ", " : "", top);
    F.loop = ev_loop_new(EVFLAG_AUTO);
    F.conf = kpt_conf(json);
    if (with_dl) {
        snprintf(F.dir, sizeof(F.dir), "/tmp/kpt-part.XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(F.dir));
        snprintf(F.dl_path, sizeof(F.dl_path), "%s/dead.jsonl", F.dir);
        F.dl = kp_deadletter_open(F.dl_path);
        ck_assert_ptr_nonnull(F.dl);
    }
    F.router = kp_router_create(F.loop, F.conf, &F.n, F.dl, &fx_hooks, NULL);
    F.tally = kp_tally_create(fx_on_idle, &F);
}

static void fx_start(const char *producer, const char *top)
{
    fx_start_dl(producer, top, false);
}

static void fx_stop(void)
{
    kp_router_destroy(F.router);
    kp_tally_put(F.tally);
    if (F.dl) {
        kp_deadletter_close(F.dl);
        unlink(F.dl_path);
        rmdir(F.dir);
    }
    kp_conf_put(F.conf);
    ev_loop_destroy(F.loop);
}

/* A topic with one partition led by broker 1. */
static struct kp_partition *fx_part(const char *name)
{
    static const int32_t leaders[] = {1};
    struct kp_topic *t = kp_router_topic(F.router, name, strlen(name));

    ck_assert(kp_router_on_metadata(F.router, name, 0, 1, leaders));
    return t->parts[0];
}

/* Routes one key-less message with value v to topic `name`. */
static void fx_route(const char *name, const char *v)
{
    struct kp_topic *t = kp_router_topic(F.router, name, strlen(name));
    struct kp_msg m = {
        .topic = t->name,
        .topic_len = t->name_len,
        .value = (const uint8_t *)v,
        .value_len = strlen(v),
        .partition = -1,
        .timestamp = -1,
    };
    enum kp_reason why = KP_REASON_NONE;
    enum kp_route r = kp_router_route(F.router, t, &m, 1700000000000,
                                      F.tally, NULL, 0, false, &why);
    ck_assert(r == KP_ROUTE_QUEUED || r == KP_ROUTE_FAILED);
}

/* Routes `cnt` messages "<prefix>0", "<prefix>1", ... */
static void fx_route_n(const char *name, const char *prefix, int cnt)
{
    char v[64];
    for (int i = 0; i < cnt; i++) {
        snprintf(v, sizeof(v), "%s%d", prefix, i);
        fx_route(name, v);
    }
}

/* "v0|v1|..." of a batch's records. */
static const char *bvals(const struct kp_batch *b)
{
    static char out[4096];
    out[0] = '\0';
    kpt_values(kp_batch_recs(b), kp_batch_recs_len(b), out, sizeof(out));
    return out;
}

static int qlen(const struct kp_partition *p)
{
    const struct kp_batch *b;
    int n = 0;
    TAILQ_FOREACH(b, &p->queue, link)
    {
        n++;
    }
    return n;
}

/* The i-th queued batch. */
static struct kp_batch *qat(const struct kp_partition *p, int i)
{
    struct kp_batch *b;
    TAILQ_FOREACH(b, &p->queue, link)
    {
        if (i-- == 0) {
            return b;
        }
    }
    ck_abort_msg("queue has no batch %d", i);
    return NULL;
}

/* Queued batches in send order, checking `order` increases. */
static void expect_queue(const struct kp_partition *p, const char *const *vals,
                         int cnt)
{
    uint64_t last = 0;
    ck_assert_int_eq(qlen(p), cnt);
    for (int i = 0; i < cnt; i++) {
        const struct kp_batch *b = qat(p, i);
        ck_assert_str_eq(bvals(b), vals[i]);
        ck_assert(i == 0 || b->order > last);
        last = b->order;
    }
}

/* Takes and delivers everything p holds (sealing the open batch). */
static void deliver_all(struct kp_partition *p)
{
    kp_partition_seal(p);
    while (kp_partition_head(p)) {
        kp_partition_delivered(p, kp_partition_take(p, 1, -1, -1), 0);
    }
}

/* Nothing held anywhere any more. */
static void expect_settled(void)
{
    ck_assert_int_eq(F.router->env.buffered_bytes, 0);
    ck_assert_uint_eq(F.router->env.queued_msgs, 0);
    ck_assert_uint_eq(F.tally->pending, 0);
    ck_assert(kp_gens_done(&F.router->gens, F.router->gens.current));
}

/* ---- sealing ---- */

START_TEST(test_seal_on_batch_messages)
{
    fx_start(P_PLAIN ", \"batch_messages\": 3", "");
    struct kp_partition *p = fx_part("t");
    int changed = F.changed;
    fx_route_n("t", "m", 7);
    static const char *const want[] = {"m0|m1|m2", "m3|m4|m5"};
    expect_queue(p, want, 2);
    ck_assert_ptr_nonnull(p->open);
    ck_assert_str_eq(bvals(p->open), "m6");
    ck_assert_int_eq(F.changed - changed, 2); /* one per seal */
    ck_assert_uint_eq(p->queued_msgs, 7);
    ck_assert_uint_eq(p->sealed_cnt, 2);
    ck_assert_uint_eq(F.n.batches, 2);
    ck_assert_int_eq(qat(p, 0)->state, KP_BATCH_SEALED);
    deliver_all(p);
    expect_settled();
    ck_assert_uint_eq(F.tally->delivered, 7);
    ck_assert_int_eq(F.idle_calls, 1);
    fx_stop();
}
END_TEST

/* batch_bytes 300: the header (61) and a few ~50-byte records fit; a
 * batch is sealed before the record that would overflow it; a message
 * larger than a batch goes alone. */
START_TEST(test_seal_on_batch_bytes)
{
    char big[401];

    fx_start(P_PLAIN ", \"batch_bytes\": 300", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "0123456789012345678901234567890123456789-", 10);
    int sealed = qlen(p), msgs = p->open ? p->open->count : 0;
    ck_assert_int_ge(sealed, 2);
    for (int i = 0; i < sealed; i++) {
        struct kp_batch *b = qat(p, i);
        ck_assert_int_ge(b->count, 2);
        ck_assert_int_eq(b->count, qat(p, 0)->count);
        ck_assert_uint_le(b->records.len, 300);
        /* the next one would not fit (kp_partition_estimate: value + 32) */
        ck_assert_uint_gt(b->records.len + 41 + 32, 300);
        ck_assert_uint_eq(b->wire_len, b->records.len); /* uncompressed */
        msgs += b->count;
    }
    ck_assert_int_eq(msgs, 10);
    ck_assert_ptr_nonnull(p->open);

    /* alone: the open batch is sealed first, the big one at once */
    memset(big, 'B', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    fx_route("t", big);
    ck_assert_ptr_null(p->open);
    ck_assert_int_eq(qlen(p), sealed + 2);
    ck_assert_str_eq(bvals(qat(p, sealed + 1)), big);
    deliver_all(p);
    expect_settled();
    fx_stop();
}
END_TEST

/* linger_ms 2: the loop's linger timer seals the open batch. */
START_TEST(test_seal_on_linger)
{
    fx_start("\"acks\": 1, \"linger_ms\": 2", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "a", 2);
    ck_assert_ptr_nonnull(p->open);
    ck_assert_int_eq(qlen(p), 0);
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_ONCE, 1000, p->open == NULL));
    static const char *const one[] = {"a0|a1"};
    expect_queue(p, one, 1);

    /* a new batch lingers anew */
    fx_route_n("t", "b", 1);
    ck_assert_ptr_nonnull(p->open);
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_ONCE, 1000, p->open == NULL));
    static const char *const two[] = {"a0|a1", "b0"};
    expect_queue(p, two, 2);
    deliver_all(p);
    expect_settled();
    fx_stop();
}
END_TEST

/* A batch sealed by size leaves the linger FIFO: the timer fires for
 * nothing and does not touch it. */
START_TEST(test_linger_after_size_seal)
{
    fx_start("\"acks\": 1, \"linger_ms\": 2, \"batch_messages\": 2", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "a", 3); /* [a0 a1] sealed, a2 open */
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_ONCE, 1000, p->open == NULL));
    static const char *const want[] = {"a0|a1", "a2"};
    expect_queue(p, want, 2);
    deliver_all(p);
    expect_settled();
    fx_stop();
}
END_TEST

/* ---- take, stamp, resend ---- */

static void expect_stamp(const struct kp_batch *b, int64_t pid, int16_t epoch,
                         int32_t seq)
{
    struct kp_batch_hdr h;
    const uint8_t *recs;
    size_t len;

    ck_assert_int_eq(b->base_seq, seq);
    ck_assert_int_eq(b->pid, pid);
    ck_assert_int_eq(b->epoch, epoch);
    /* on the wire, with a CRC that still holds */
    ck_assert_int_eq(
        kp_recordbatch_parse(b->wire, b->wire_len, &h, &recs, &len), KP_OK);
    ck_assert_int_eq(h.producer_id, pid);
    ck_assert_int_eq(h.producer_epoch, epoch);
    ck_assert_int_eq(h.base_seq, seq);
    ck_assert_int_eq(h.count, b->count);
}

START_TEST(test_take_stamps_sequences)
{
    fx_start(P_IDEMP ", \"batch_messages\": 3", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "m", 7);
    kp_partition_seal(p);
    ck_assert_int_eq(qlen(p), 3);
    ck_assert(!kp_partition_can_send(p, -1, -1)); /* no producer id yet */
    ck_assert(kp_partition_can_send(p, 1000, 2));

    struct kp_batch *b1 = kp_partition_take(p, 1, 1000, 2);
    struct kp_batch *b2 = kp_partition_take(p, 1, 1000, 2);
    struct kp_batch *b3 = kp_partition_take(p, 1, 1000, 2);
    expect_stamp(b1, 1000, 2, 0);
    expect_stamp(b2, 1000, 2, 3);
    expect_stamp(b3, 1000, 2, 6);
    ck_assert_int_eq(p->next_seq, 7);
    ck_assert_int_eq(p->inflight, 3);
    ck_assert_int_eq(b1->state, KP_BATCH_INFLIGHT);
    ck_assert_int_eq(b1->attempts, 1);

    kp_partition_delivered(p, b1, 100);
    kp_partition_delivered(p, b2, 103);
    kp_partition_delivered(p, b3, 106);
    ck_assert_int_eq(p->inflight, 0);
    expect_settled();
    ck_assert_int_eq(F.seq_gaps, 0);
    fx_stop();
}
END_TEST

/* A retried batch goes again byte for byte with its sequence; a new
 * producer id (nothing in flight) restarts sequences at 0. */
START_TEST(test_resend_keeps_bytes_and_sequence)
{
    fx_start(P_IDEMP ", \"batch_messages\": 3", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "m", 6);
    struct kp_batch *b1 = kp_partition_take(p, 1, 1000, 0);
    struct kp_batch *b2 = kp_partition_take(p, 1, 1000, 0);
    uint8_t *w1 = kp_malloc(b1->wire_len);
    size_t w1_len = b1->wire_len;
    memcpy(w1, b1->wire, w1_len);

    kp_partition_retry(p, b2, false);
    kp_partition_retry(p, b1, false);
    ck_assert_int_eq(p->inflight, 0);
    ck_assert_ptr_eq(kp_partition_head(p), b1);
    ck_assert_int_eq(b1->state, KP_BATCH_SEALED);

    ck_assert_ptr_eq(kp_partition_take(p, 1, 1000, 0), b1);
    ck_assert_ptr_eq(kp_partition_take(p, 1, 1000, 0), b2);
    expect_stamp(b1, 1000, 0, 0);
    expect_stamp(b2, 1000, 0, 3);
    ck_assert_uint_eq(b1->wire_len, w1_len);
    ck_assert_mem_eq(b1->wire, w1, w1_len);
    ck_assert_int_eq(b1->attempts, 2);
    ck_assert_int_eq(p->next_seq, 6);
    ck_assert_uint_eq(F.n.retries, 2);

    /* all back, then a new producer id: sequences start over */
    kp_partition_retry(p, b2, false);
    kp_partition_retry(p, b1, false);
    ck_assert_ptr_eq(kp_partition_take(p, 1, 2000, 0), b1);
    expect_stamp(b1, 2000, 0, 0);
    ck_assert_ptr_eq(kp_partition_take(p, 1, 2000, 0), b2);
    expect_stamp(b2, 2000, 0, 3);
    /* a new epoch waits until nothing of the old one is in flight */
    fx_route_n("t", "n", 3);
    ck_assert(!kp_partition_can_send(p, 2000, 1));
    kp_partition_delivered(p, b1, 0);
    kp_partition_delivered(p, b2, 3);
    ck_assert(kp_partition_can_send(p, 2000, 1));
    struct kp_batch *b3 = kp_partition_take(p, 1, 2000, 1);
    expect_stamp(b3, 2000, 1, 0);
    kp_partition_delivered(p, b3, 6);
    expect_settled();
    ck_assert_int_eq(F.seq_gaps, 0);
    free(w1);
    fx_stop();
}
END_TEST

/* ---- retry order ---- */

START_TEST(test_retry_order_every_permutation)
{
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                    {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    static const char *const want[] = {"m0", "m1", "m2", "m3"};

    fx_start(P_PLAIN ", \"batch_messages\": 1", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "m", 4);
    expect_queue(p, want, 4);
    for (int i = 0; i < 6; i++) {
        struct kp_batch *b[3];
        for (int k = 0; k < 3; k++) {
            b[k] = kp_partition_take(p, 1, -1, -1);
        }
        ck_assert_int_eq(p->inflight, 3);
        static const char *const rest[] = {"m3"};
        expect_queue(p, rest, 1);
        for (int k = 0; k < 3; k++) {
            kp_partition_retry(p, b[perms[i][k]], false);
        }
        ck_assert_int_eq(p->inflight, 0);
        expect_queue(p, want, 4);
    }
    ck_assert_uint_eq(F.n.retries, 18);
    deliver_all(p);
    expect_settled();
    fx_stop();
}
END_TEST

/* With backoff the partition cannot send until its timer fired, then the
 * sender hears `changed`. */
START_TEST(test_retry_backoff)
{
    fx_start(P_PLAIN ", \"batch_messages\": 1", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "m", 2);
    ck_assert(kp_partition_can_send(p, -1, -1));
    struct kp_batch *b = kp_partition_take(p, 1, -1, -1);
    /* without idempotence: one batch in flight */
    ck_assert(!kp_partition_can_send(p, -1, -1));
    kp_partition_retry(p, b, true);
    ck_assert(p->backing_off);
    ck_assert(!kp_partition_can_send(p, -1, -1));
    int changed = F.changed;
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_ONCE, 1000, !p->backing_off));
    ck_assert_int_gt(F.changed, changed);
    ck_assert(kp_partition_can_send(p, -1, -1));
    ck_assert_ptr_eq(kp_partition_head(p), b);
    /* no leader: nothing to send */
    kp_partition_set_leader(p, -1);
    ck_assert(!kp_partition_can_send(p, -1, -1));
    kp_partition_set_leader(p, 1);
    deliver_all(p);
    expect_settled();
    fx_stop();
}
END_TEST

/* After a leader change, the old leader's answers come first: nothing
 * goes to the new one while batches are in flight to the old. */
START_TEST(test_leader_change_waits_for_old_answers)
{
    fx_start(P_IDEMP ", \"batch_messages\": 1", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "m", 3);
    struct kp_batch *b1 = kp_partition_take(p, 1, 5, 0);
    ck_assert(kp_partition_can_send(p, 5, 0)); /* idempotence: up to 5 */
    int changed = F.changed;
    kp_partition_set_leader(p, 2);
    ck_assert_int_eq(F.changed, changed + 1);
    ck_assert(!kp_partition_can_send(p, 5, 0));
    kp_partition_retry(p, b1, false); /* the old leader's answer */
    ck_assert(kp_partition_can_send(p, 5, 0));
    ck_assert_ptr_eq(kp_partition_take(p, 2, 5, 0), b1);
    expect_stamp(b1, 5, 0, 0); /* the same sequence, to the new leader */
    ck_assert_int_eq(p->inflight_node, 2);
    kp_partition_delivered(p, b1, 0);
    deliver_all(p);
    expect_settled();
    fx_stop();
}
END_TEST

/* ---- split ---- */

START_TEST(test_split_keeps_order_and_records)
{
    fx_start(P_PLAIN ", \"batch_messages\": 5", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "v", 6);
    kp_partition_seal(p);
    struct kp_batch *b = kp_partition_take(p, 1, -1, -1);
    ck_assert_int_eq(b->count, 5);
    kp_partition_split(p, b);
    ck_assert_int_eq(p->inflight, 0);
    static const char *const halves[] = {"v0|v1", "v2|v3|v4", "v5"};
    expect_queue(p, halves, 3);
    ck_assert_int_eq(F.seq_gaps, 0); /* never stamped */
    ck_assert_uint_eq(F.tally->pending, 6);
    ck_assert_uint_eq(p->queued_msgs, 6);

    /* a half split again while the other is in flight, then retried */
    struct kp_batch *h1 = kp_partition_take(p, 1, -1, -1);
    struct kp_batch *h2 = kp_partition_take(p, 1, -1, -1);
    kp_partition_split(p, h2);
    kp_partition_retry(p, h1, false);
    static const char *const quarters[] = {"v0|v1", "v2", "v3|v4", "v5"};
    expect_queue(p, quarters, 4);
    ck_assert_int_eq(qat(p, 1)->split_depth, 2);
    ck_assert_uint_eq(F.n.retries, 5);

    /* the records are whole: values, and the timestamps they were read at */
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(qat(p, i)->base_ts, 1700000000000);
    }
    deliver_all(p);
    expect_settled();
    ck_assert_uint_eq(F.tally->delivered, 6);
    fx_stop();
}
END_TEST

START_TEST(test_split_stamped_batch_gap)
{
    fx_start(P_IDEMP ", \"batch_messages\": 4", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "v", 4);
    struct kp_batch *b = kp_partition_take(p, 1, 7, 3);
    expect_stamp(b, 7, 3, 0);
    kp_partition_split(p, b);
    ck_assert_int_eq(F.seq_gaps, 1);
    ck_assert_int_eq(F.gap_pid, 7);
    ck_assert_int_eq(F.gap_epoch, 3);
    ck_assert_str_eq(F.gap_why, "batch split");
    static const char *const halves[] = {"v0|v1", "v2|v3"};
    expect_queue(p, halves, 2);
    ck_assert_int_eq(qat(p, 0)->base_seq, -1); /* stamped anew when sent */
    deliver_all(p);
    expect_settled();
    fx_stop();
}
END_TEST

/* ---- expiry ---- */

START_TEST(test_expire_only_old_queued)
{
    fx_start("\"acks\": 1, \"linger_ms\": 1, \"request_timeout_ms\": 1,"
             " \"delivery_timeout_ms\": 100, \"batch_messages\": 1",
             "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "m", 4);
    struct kp_batch *inflight = kp_partition_take(p, 1, -1, -1);
    int64_t now = kp_mono_ms() + 1000000; /* ages are relative to this */
    inflight->created_ms = now - 5000;    /* old, but in flight */
    qat(p, 0)->created_ms = now - 5000;   /* m1: old */
    qat(p, 1)->created_ms = now - 99;     /* m2: not quite */
    qat(p, 2)->created_ms = now - 100;    /* m3: exactly at the limit */

    kp_partition_expire(p, now, "idempotence detail");
    static const char *const left[] = {"m2"};
    expect_queue(p, left, 1);
    ck_assert_uint_eq(p->failed_by[KP_REASON_DELIVERY_TIMEOUT], 2);
    ck_assert_uint_eq(F.tally->failed, 2);
    ck_assert_uint_eq(F.n.failed, 2);
    ck_assert_int_eq(F.seq_gaps, 0);
    ck_assert_int_eq(p->inflight, 1);

    /* nothing older: a second sweep changes nothing */
    kp_partition_expire(p, now, NULL);
    expect_queue(p, left, 1);
    kp_partition_delivered(p, inflight, 0);
    deliver_all(p);
    expect_settled();
    ck_assert_uint_eq(F.tally->delivered, 2);
    fx_stop();
}
END_TEST

/* A topic without metadata takes nothing (its writers wait); after
 * metadata_max_wait_ms it is MISSING and its messages fail at once
 * (unknown_topic), before anyone is told. */
START_TEST(test_missing_topic_fails_at_once)
{
    struct kp_msg m = {.topic = "u", .topic_len = 1, .value = (uint8_t *)"x",
                       .value_len = 1, .partition = -1, .timestamp = -1};
    enum kp_reason why = KP_REASON_NONE;

    fx_start("\"acks\": 1", "");
    struct kp_topic *t = kp_router_topic(F.router, "u", 1);
    ck_assert_int_eq(kp_router_route(F.router, t, &m, 1, F.tally, NULL, 0,
                                     false, &why),
                     KP_ROUTE_WAIT_METADATA);
    ck_assert_uint_eq(F.n.received, 0);
    int64_t now = t->unknown_since_ms + F.conf->metadata_max_wait_ms;
    kp_router_expire(F.router, now - 1, NULL);
    ck_assert_int_eq(t->state, KP_TOPIC_UNKNOWN);
    kp_router_expire(F.router, now, NULL);
    ck_assert_int_eq(t->state, KP_TOPIC_MISSING);
    fx_route_n("u", "h", 3);
    ck_assert_uint_eq(t->failed_by[KP_REASON_UNKNOWN_TOPIC], 3);
    ck_assert_uint_eq(F.n.received, 3);
    ck_assert_uint_eq(F.n.failed, 3);
    expect_settled();
    ck_assert_uint_eq(F.tally->failed, 3);
    fx_stop();
}
END_TEST

/* ---- the dead letter comes first (DESIGN 18) ---- */

enum fail_path {
    FAIL_TAKEN,     /* kp_partition_fail of an answered batch */
    FAIL_DROP_HEAD, /* kp_partition_drop_head */
    FAIL_EXPIRE,    /* kp_partition_expire */
    FAIL_ABANDON,   /* kp_router_abandon at shutdown */
    FAIL_MISSING,   /* a MISSING topic: each fails as it is routed */
    FAIL__COUNT
};

static void fail_by(enum fail_path how)
{
    struct kp_partition *p = how == FAIL_MISSING ? NULL : fx_part("t");

    if (how == FAIL_MISSING) {
        struct kp_topic *t = kp_router_topic(F.router, "u", 1);
        kp_router_expire(F.router,
                         t->unknown_since_ms + F.conf->metadata_max_wait_ms,
                         NULL);
    }
    fx_route_n(how == FAIL_MISSING ? "u" : "t", "m", 3);
    switch (how) {
    case FAIL_TAKEN:
        kp_partition_seal(p);
        kp_partition_fail(p, kp_partition_take(p, 1, -1, -1),
                          KP_REASON_MESSAGE_TOO_LARGE, "the broker's words");
        break;
    case FAIL_DROP_HEAD:
        kp_partition_seal(p);
        kp_partition_drop_head(p, KP_REASON_UNSUPPORTED_VERSION, "zstd");
        break;
    case FAIL_EXPIRE:
        kp_partition_seal(p);
        kp_partition_expire(p, kp_mono_ms() + 10000000, NULL);
        break;
    case FAIL_ABANDON:
        kp_router_abandon(F.router, KP_REASON_SHUTDOWN);
        break;
    case FAIL_MISSING:
        break;
    case FAIL__COUNT:
        break;
    }
}

START_TEST(test_dead_letter_before_tally)
{
    for (int how = 0; how < FAIL__COUNT; how++) {
        fx_start_dl(P_PLAIN, "", true);
        fail_by((enum fail_path)how);
        /* the writer was told once (a MISSING topic's messages, one by
         * one), and by then the lines were in the file and the messages
         * counted */
        ck_assert_int_eq(F.idle_calls, how == FAIL_MISSING ? 3 : 1);
        ck_assert_int_eq(F.dl_lines_at_idle, 3);
        ck_assert_uint_eq(F.failed_at_idle, 3);
        ck_assert_uint_eq(F.tally->failed, 3);
        expect_settled();
        fx_stop();
    }
}
END_TEST

/* What the dead letter says: the reason and the broker's words. */
START_TEST(test_dead_letter_content)
{
    char buf[4096];

    fx_start_dl(P_PLAIN, "", true);
    fail_by(FAIL_TAKEN);
    int fd = open(F.dl_path, O_RDONLY | O_CLOEXEC);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_ptr_nonnull(strstr(buf, "\"m0\""));
    ck_assert_ptr_nonnull(strstr(buf, "\"m2\""));
    ck_assert_ptr_nonnull(strstr(buf, "message_too_large: the broker's words"));
    fx_stop();
}
END_TEST

/* ---- shutdown ---- */

START_TEST(test_abandon_unconfirmed)
{
    fx_start(P_PLAIN ", \"batch_messages\": 2", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "m", 7); /* [m0 m1] [m2 m3] [m4 m5] sealed, m6 open */
    struct kp_batch *lost = kp_partition_take(p, 1, -1, -1);
    struct kp_batch *flying = kp_partition_take(p, 1, -1, -1);
    /* the connection went: no answer, it may be in Kafka */
    kp_partition_unanswered(p, lost);
    ck_assert(lost->unconfirmed);
    ck_assert(p->backing_off);
    ck_assert_ptr_eq(kp_partition_head(p), lost);

    kp_partition_abandon(p, KP_REASON_SHUTDOWN);
    ck_assert_uint_eq(p->failed_by[KP_REASON_SHUTDOWN_UNCONFIRMED], 2);
    ck_assert_uint_eq(p->failed_by[KP_REASON_SHUTDOWN], 3);
    ck_assert_int_eq(qlen(p), 0);
    ck_assert_ptr_null(p->open);
    /* what is in flight is not abandoned: its answer still counts */
    ck_assert_int_eq(p->inflight, 1);
    ck_assert_uint_eq(F.tally->pending, 2);
    kp_partition_delivered(p, flying, 0);
    expect_settled();
    ck_assert_uint_eq(F.tally->failed, 5);
    ck_assert_uint_eq(F.tally->delivered, 2);
    fx_stop();
}
END_TEST

/* Any other reason leaves an unanswered batch's reason alone. */
START_TEST(test_abandon_other_reason)
{
    fx_start(P_PLAIN ", \"batch_messages\": 2", "");
    struct kp_partition *p = fx_part("t");
    fx_route_n("t", "m", 2);
    kp_partition_unanswered(p, kp_partition_take(p, 1, -1, -1));
    kp_partition_abandon(p, KP_REASON_BUFFER_FULL);
    ck_assert_uint_eq(p->failed_by[KP_REASON_BUFFER_FULL], 2);
    ck_assert_uint_eq(p->failed_by[KP_REASON_SHUTDOWN_UNCONFIRMED], 0);
    expect_settled();
    fx_stop();
}
END_TEST

/* ---- accounting ---- */

/* Every path at once, under a small buffer_bytes: held, replayed,
 * sealed, split, retried, unanswered, delivered, failed, expired. The
 * accounting comes back to zero, backpressure goes on and off once, and a
 * flush barrier counts every fate. */
START_TEST(test_accounting_back_to_zero)
{
    static const int32_t leaders[] = {1};
    struct kp_barrier bar;

    /* about 210 bytes for h, 220 for t: each within its topic's limit,
     * together over buffer_bytes */
    fx_start(P_PLAIN ", \"batch_messages\": 4, \"message_max_bytes\": 100",
             "\"buffer_bytes\": 400, \"topic_buffer_bytes\": 400");
    struct kp_partition *p = fx_part("t");
    fx_part("h");
    fx_route_n("h", "held-message-", 10);
    fx_route_n("t", "ready-message-", 10);
    ck_assert_int_eq(F.bp_on, 1);
    ck_assert(F.router->backpressure);
    kp_router_flush_begin(F.router, &bar);
    fx_route_n("t", "after-the-flush-", 2); /* not the barrier's */
    ck_assert(!kp_router_flushed(F.router, &bar));

    ck_assert(kp_router_on_metadata(F.router, "h", 0, 1, leaders));
    struct kp_partition *ph =
        kp_topic_lookup(&F.router->topics, "h", 1)->parts[0];
    kp_router_seal_all(F.router);
    ck_assert_uint_eq(F.router->env.queued_msgs, 22);

    /* t: [0-3] split, [4-7] unanswered, [8 9] failed, [a0 a1] expired */
    struct kp_batch *b1 = kp_partition_take(p, 1, -1, -1);
    struct kp_batch *b2 = kp_partition_take(p, 1, -1, -1);
    struct kp_batch *b3 = kp_partition_take(p, 1, -1, -1);
    kp_partition_split(p, b1);
    kp_partition_unanswered(p, b2);
    kp_partition_fail(p, b3, KP_REASON_BROKER_ERROR, NULL);
    kp_partition_expire(
        p, TAILQ_LAST(&p->queue, kp_batch_q)->created_ms + 900000, NULL);
    ck_assert_int_eq(qlen(p), 0); /* everything queued was old enough */
    ck_assert_uint_eq(p->failed_by[KP_REASON_DELIVERY_TIMEOUT], 10);
    deliver_all(ph);
    ck_assert(kp_router_flushed(F.router, &bar));
    ck_assert_uint_eq(bar.delivered, 10);
    ck_assert_uint_eq(bar.failed, 10);
    kp_router_flush_end(F.router, &bar);

    expect_settled();
    ck_assert_int_eq(F.bp_off, 1);
    ck_assert(!F.router->backpressure);
    ck_assert_uint_eq(F.tally->delivered + F.tally->failed, 22);
    ck_assert_uint_eq(F.n.received, 22);
    ck_assert_uint_eq(F.n.delivered, 10);
    ck_assert_uint_eq(F.n.failed, 12);
    ck_assert_int_eq(F.idle_calls, 1);
    fx_stop();
}
END_TEST

static Suite *partition_suite(void)
{
    Suite *s = suite_create("partition");
    TCase *tc = tcase_create("seal");
    tcase_add_test(tc, test_seal_on_batch_messages);
    tcase_add_test(tc, test_seal_on_batch_bytes);
    tcase_add_test(tc, test_seal_on_linger);
    tcase_add_test(tc, test_linger_after_size_seal);
    suite_add_tcase(s, tc);

    tc = tcase_create("send");
    tcase_add_test(tc, test_take_stamps_sequences);
    tcase_add_test(tc, test_resend_keeps_bytes_and_sequence);
    tcase_add_test(tc, test_retry_order_every_permutation);
    tcase_add_test(tc, test_retry_backoff);
    tcase_add_test(tc, test_leader_change_waits_for_old_answers);
    tcase_add_test(tc, test_split_keeps_order_and_records);
    tcase_add_test(tc, test_split_stamped_batch_gap);
    suite_add_tcase(s, tc);

    tc = tcase_create("settle");
    tcase_add_test(tc, test_expire_only_old_queued);
    tcase_add_test(tc, test_missing_topic_fails_at_once);
    tcase_add_test(tc, test_dead_letter_before_tally);
    tcase_add_test(tc, test_dead_letter_content);
    tcase_add_test(tc, test_abandon_unconfirmed);
    tcase_add_test(tc, test_abandon_other_reason);
    tcase_add_test(tc, test_accounting_back_to_zero);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    kp_log_set_level(KP_LOG_ERROR);
    SRunner *sr = srunner_create(partition_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
