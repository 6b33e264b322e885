/*
 * check_client.c - client connections over socketpair(): line framing at
 * every split of the input, empty lines, the last line at EOF, overlong
 * lines (rejected once, skipped to their newline), the per-wake-up read
 * budget shared fairly between clients, backpressure (reads stop, bytes
 * stay in the socket), the half-close summary once everything is settled,
 * and a client that goes away before its messages do.
 *
 * Stalls: a connection whose next line is for a topic without metadata
 * or a full one stops there (its bytes wait) while others go on, resumes
 * when the topic wakes it, and after max_block_ms fails that topic's
 * lines as buffer_full until it has room; unfinished lines share a budget
 * of buffer_bytes / 8 and the largest is rejected beyond it.
 *
 * The test is the router's owner and the sender: its hooks count, pause
 * the clients on backpressure (as kp_ctx does), give a new topic its
 * metadata at once (unless a test wants it unknown), and it settles
 * batches itself with kp_partition_delivered / kp_partition_fail. Routed
 * messages are read back from the topic's partition's batches. Each test
 * runs its own loop with EVRUN_NOWAIT: the bytes are always in the socket
 * before the loop runs; fx_prepare stands in for the prepare phase.
 */
#include "kp_client.h"

#include <check.h>
#include <ev.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_conf.h"
#include "kp_counters.h"
#include "kp_log.h"
#include "kp_partition.h"
#include "kp_router.h"
#include "kp_tally.h"
#include "kp_testloop.h"

/* kp_client.c's KP_CLIENT_READ_BUDGET: bytes one client reads per wake-up. */
#define READ_BUDGET (256 * 1024)

/* format topic,value, separator ' '; nothing lingers or seals by itself. */
#define CONF_FMT                                                               \
    "{\"brokers\": [\"127.0.0.1:9092\"],"                                      \
    " \"listeners\": [{\"path\": \"/tmp/kpt-client.sock\","                    \
    "                  \"format\": \"topic,value\"}],"                         \
    " \"producer\": {\"linger_ms\": 600000, \"delivery_timeout_ms\": 900000,"  \
    "                \"batch_messages\": %d, \"message_max_bytes\": %d,"       \
    "                \"acks\": 1},"                                            \
    " \"buffer_bytes\": %d%s}"

struct fixture {
    struct ev_loop *loop;
    struct kp_conf *conf;
    struct kp_counters n;
    struct kp_router *router;
    struct kp_clients cs;
    int changed, new_topics, settled;
    int bp_on, bp_off;
    bool unknown_topics; /* new topics get no metadata by themselves */
};

/* Extra configuration keys for the next fx_start (", \"key\": value"). */
static const char *fx_extra = "";

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
    (void)pid;
    (void)epoch;
    (void)why;
    ck_abort_msg("no sequences without idempotence");
}

/* A new topic: known at once (one partition, leader 1), as if Metadata
 * answered before the line was routed, unless the test wants it unknown. */
static void fx_new_topic(void *arg, struct kp_topic *t)
{
    static const int32_t leaders[] = {1};
    (void)arg;
    F.new_topics++;
    if (!F.unknown_topics) {
        kp_topic_on_metadata(&F.router->topics, t, 0, 1, leaders, false);
    }
}

/* As kp_ctx does: backpressure pauses every client. */
static void fx_backpressure(void *arg, bool on)
{
    (void)arg;
    if (on) {
        F.bp_on++;
    } else {
        F.bp_off++;
    }
    kp_clients_pause(&F.cs, on);
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

static void fx_start(int batch_messages, int message_max, int buffer_bytes)
{
    char json[1024];

    snprintf(json, sizeof(json), CONF_FMT, batch_messages, message_max,
             buffer_bytes, fx_extra);
    fx_extra = "";
    memset(&F, 0, sizeof(F));
    F.loop = ev_loop_new(EVFLAG_AUTO);
    F.conf = kpt_conf(json);
    F.router = kp_router_create(F.loop, F.conf, &F.n, NULL, &fx_hooks, NULL);
    kp_clients_init(&F.cs, F.loop, &F.conf, F.router, &F.n);
}

static void fx_stop(void)
{
    kp_clients_deinit(&F.cs);
    kp_router_destroy(F.router);
    kp_conf_put(F.conf);
    ev_loop_destroy(F.loop);
}

/* A client on one end of a socketpair; *peer is the application's end. */
static struct kp_client *fx_client(int *peer)
{
    int sv[2];

    kpt_socketpair(sv);
    *peer = sv[1];
    return kp_client_create(&F.cs, &F.conf->listeners[0], sv[0]);
}

/* Runs the loop until the client has read everything sent so far. */
static void fx_drain(struct kp_client *c)
{
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, kpt_unread(c->fd) == 0));
    ev_run(F.loop, EVRUN_NOWAIT);
}

/* Runs the loop until the client saw the end of its input. */
static void fx_eof(struct kp_client *c)
{
    ck_assert(
        KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c->state != KP_CLIENT_READING));
}

static struct kp_topic *fx_topic(const char *name)
{
    return kp_topic_lookup(&F.router->topics, name, strlen(name));
}

/* A topic known before any line names it: one partition, leader 1. */
static struct kp_topic *fx_ready_topic(const char *name)
{
    static const int32_t leaders[] = {1};
    struct kp_topic *t = kp_router_topic(F.router, name, strlen(name));

    ck_assert(kp_router_on_metadata(F.router, name, 0, 1, leaders));
    ck_assert_int_eq(t->state, KP_TOPIC_READY);
    return t;
}

/* Every message value topic `name` holds, in order: its (one)
 * partition's sealed and open batches. "" if unknown. */
static const char *fx_values(const char *name)
{
    static char out[65536];
    struct kp_topic *t = fx_topic(name);
    struct kp_batch *b;

    out[0] = '\0';
    if (!t) {
        return out;
    }
    for (int32_t i = 0; i < t->part_cnt; i++) {
        struct kp_partition *p = t->parts[i];
        TAILQ_FOREACH(b, &p->queue, link)
        {
            kpt_values(kp_batch_recs(b), kp_batch_recs_len(b), out,
                       sizeof(out));
        }
        if (p->open) {
            kpt_values(kp_batch_recs(p->open), kp_batch_recs_len(p->open), out,
                       sizeof(out));
        }
    }
    return out;
}

/* The sender's part: seals, takes and settles every batch of partition 0
 * of t, delivered, except the `fail_last` last ones, failed. */
static void fx_settle(struct kp_topic *t, int fail_last)
{
    struct kp_partition *p = t->parts[0];
    struct kp_batch *b;
    int left = 0;

    kp_partition_seal(p);
    TAILQ_FOREACH(b, &p->queue, link)
    {
        left++;
    }
    while ((b = kp_partition_head(p)) != NULL) {
        b = kp_partition_take(p, p->leader, -1, -1);
        if (left-- <= fail_last) {
            kp_partition_fail(p, b, KP_REASON_BROKER_ERROR, "test");
        } else {
            kp_partition_delivered(p, b, 0);
        }
    }
    kp_clients_flush(&F.cs); /* the prepare phase: summaries written */
}

/* Everything the peer can read until EOF (the client closed), once the
 * prepare phase wrote it. */
static const char *fx_read_all(int peer)
{
    static char out[512];
    size_t o = 0;
    ssize_t n;

    kp_clients_flush(&F.cs);

    while ((n = read(peer, out + o, sizeof(out) - 1 - o)) > 0) {
        o += (size_t)n;
    }
    ck_assert_int_eq(n, 0); /* EOF, not EAGAIN: the reply is complete */
    out[o] = '\0';
    return out;
}

/* ---- framing ---- */

/* Two topics, an empty line in the middle and at the end, and a last
 * line without '\n': at EOF it is a message. */
static const char split_input[] = "t1 one\n\nt2 two\nt1 three\n\nt2 four";

static void check_split_result(struct kp_client *c)
{
    ck_assert_str_eq(fx_values("t1"), "one|three");
    ck_assert_str_eq(fx_values("t2"), "two|four");
    ck_assert_uint_eq(c->tally->pending, 4);
    ck_assert_uint_eq(c->tally->rejected, 0);
    ck_assert_uint_eq(F.n.received, 4);
    ck_assert_uint_eq(F.n.rejected, 0);
    ck_assert_int_eq(F.new_topics, 2);
}

START_TEST(test_split_every_position)
{
    size_t len = sizeof(split_input) - 1;

    for (size_t at = 0; at <= len; at++) {
        int peer;
        fx_start(10000, 1000, 1 << 20);
        struct kp_client *c = fx_client(&peer);
        kpt_write(peer, split_input, at);
        fx_drain(c);
        kpt_write(peer, split_input + at, len - at);
        fx_drain(c);
        ck_assert_int_eq(c->state, KP_CLIENT_READING);
        shutdown(peer, SHUT_WR);
        fx_eof(c);
        ck_assert_int_eq(c->state, KP_CLIENT_DRAINING);
        check_split_result(c);
        close(peer);
        fx_stop();
    }
}
END_TEST

/* Every byte its own write and its own wake-up. */
START_TEST(test_split_byte_by_byte)
{
    size_t len = sizeof(split_input) - 1;
    int peer;

    fx_start(10000, 1000, 1 << 20);
    struct kp_client *c = fx_client(&peer);
    for (size_t i = 0; i < len; i++) {
        kpt_write(peer, split_input + i, 1);
        fx_drain(c);
    }
    /* before EOF the last line is still a partial one */
    ck_assert_str_eq(fx_values("t2"), "two");
    ck_assert_uint_eq(c->carry_len, strlen("t2 four"));
    shutdown(peer, SHUT_WR);
    fx_eof(c);
    check_split_result(c);
    close(peer);
    fx_stop();
}
END_TEST

START_TEST(test_empty_lines_only)
{
    int peer;

    fx_start(10000, 1000, 1 << 20);
    struct kp_client *c = fx_client(&peer);
    kpt_write_str(peer, "\n\n\n");
    fx_drain(c);
    kpt_write_str(peer, "\n");
    shutdown(peer, SHUT_WR);
    fx_eof(c);
    ck_assert_uint_eq(F.n.received, 0);
    ck_assert_uint_eq(F.n.rejected, 0);
    ck_assert_int_eq(F.new_topics, 0);
    /* nothing pending: the summary goes at once */
    ck_assert_str_eq(fx_read_all(peer), "delivered=0 failed=0 rejected=0\n");
    ck_assert_int_eq(c->state, KP_CLIENT_CLOSED);
    close(peer);
    fx_stop();
}
END_TEST

/* message_max_bytes 32: a line of 32 bytes is the longest accepted. */
START_TEST(test_overlong_in_one_write)
{
    char line[256];
    int peer;

    fx_start(10000, 32, 1 << 20);
    struct kp_client *c = fx_client(&peer);
    snprintf(line, sizeof(line), "t %.*s\nt %.*s\nt ok\n", 30,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 100,
             "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
             "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
    kpt_write_str(peer, line);
    fx_drain(c);
    ck_assert_str_eq(fx_values("t"), "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx|ok");
    ck_assert_uint_eq(c->tally->rejected, 1);
    ck_assert_uint_eq(F.n.rejected_by[KP_REASON_TOO_LONG], 1);
    ck_assert(!c->framer.discarding);
    close(peer);
    fx_stop();
}
END_TEST

/* An overlong line trickling in: rejected once, as soon as it is too
 * long, and the rest of it skipped up to its newline. */
START_TEST(test_overlong_trickled)
{
    char chunk[64];
    int peer;

    fx_start(10000, 32, 1 << 20);
    struct kp_client *c = fx_client(&peer);
    kpt_write_str(peer, "t first\nt 0123456789");
    fx_drain(c);
    ck_assert_uint_eq(c->tally->rejected, 0);
    memset(chunk, 'z', sizeof(chunk));
    kpt_write(peer, chunk, 30); /* 42 bytes now: too long */
    fx_drain(c);
    ck_assert_uint_eq(c->tally->rejected, 1);
    ck_assert(c->framer.discarding);
    ck_assert_uint_eq(c->carry_len, 0);
    for (int i = 0; i < 5; i++) {
        kpt_write(peer, chunk, sizeof(chunk));
        fx_drain(c);
    }
    ck_assert_uint_eq(c->tally->rejected, 1);
    kpt_write_str(peer, "zzz\nt ok\nt two");
    fx_drain(c);
    ck_assert(!c->framer.discarding);
    shutdown(peer, SHUT_WR);
    fx_eof(c);
    ck_assert_str_eq(fx_values("t"), "first|ok|two");
    ck_assert_uint_eq(c->tally->rejected, 1);
    ck_assert_uint_eq(F.n.rejected_by[KP_REASON_TOO_LONG], 1);
    close(peer);
    fx_stop();
}
END_TEST

/* An overlong last line without '\n' at EOF: rejected once, no message. */
START_TEST(test_overlong_at_eof)
{
    char line[128];
    int peer;

    fx_start(10000, 32, 1 << 20);
    struct kp_client *c = fx_client(&peer);
    memset(line, 'q', sizeof(line));
    memcpy(line, "t ok\nt ", 7);
    kpt_write(peer, line, sizeof(line));
    shutdown(peer, SHUT_WR);
    fx_eof(c);
    ck_assert_str_eq(fx_values("t"), "ok");
    ck_assert_uint_eq(c->tally->rejected, 1);
    close(peer);
    fx_stop();
}
END_TEST

/* The i-th message of topic `name`, in its partition's batches (each a
 * batch of its own here: batch_messages 1). */
static struct kp_record_view fx_held(const char *name, uint32_t i)
{
    struct kp_partition *p = fx_topic(name)->parts[0];
    struct kp_batch *b = TAILQ_FIRST(&p->queue);
    struct kp_record_view v;
    struct kp_rd r;

    for (uint32_t k = 0; k < i && b; k++) {
        b = TAILQ_NEXT(b, link);
    }
    if (!b) {
        b = p->open;
    }
    ck_assert_ptr_nonnull(b);
    kp_rd_init(&r, kp_batch_recs(b), kp_batch_recs_len(b));
    ck_assert_int_eq(kp_record_next(&r, &v), KP_OK);
    return v;
}

static bool all_bytes(const uint8_t *p, size_t n, uint8_t c)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != c) {
            return false;
        }
    }
    return true;
}

/* Writes n bytes of c to the peer in pieces, the client reading between
 * them (a line longer than one read grows in the client's carry). */
static void trickle(struct kp_client *c, int peer, uint8_t byte, size_t n)
{
    static uint8_t chunk[50000];

    memset(chunk, byte, sizeof(chunk));
    while (n) {
        size_t k = KP_MIN(n, sizeof(chunk));
        kpt_write(peer, chunk, k);
        fx_drain(c);
        n -= k;
    }
}

/* Lines longer than a wake-up's budget (but within message_max_bytes)
 * come through whole, whether they end with '\n' or at EOF; one past
 * message_max_bytes is rejected once, however long it goes on. */
START_TEST(test_long_lines_across_reads)
{
    int peer;

    fx_start(1, 700000, 1 << 30);
    struct kp_client *c = fx_client(&peer);
    kpt_write_str(peer, "t ");
    trickle(c, peer, 'L', 600000);
    kpt_write_str(peer, "\nt short\nt ");
    trickle(c, peer, 'M', 400000);
    kpt_write_str(peer, "\nt ");
    trickle(c, peer, 'X', 900000); /* too long */
    ck_assert_uint_eq(c->tally->rejected, 1);
    ck_assert(c->framer.discarding);
    kpt_write_str(peer, "\nt ");
    trickle(c, peer, 'E', 300000); /* the last line, ended by EOF */
    ck_assert_uint_eq(c->tally->pending, 3);
    shutdown(peer, SHUT_WR);
    fx_eof(c);

    ck_assert_uint_eq(c->tally->pending, 4);
    ck_assert_uint_eq(c->tally->rejected, 1);
    struct kp_record_view v = fx_held("t", 0);
    ck_assert_uint_eq(v.value_len, 600000);
    ck_assert(all_bytes(v.value, v.value_len, 'L'));
    v = fx_held("t", 1);
    ck_assert_uint_eq(v.value_len, 5);
    ck_assert_mem_eq(v.value, "short", 5);
    v = fx_held("t", 2);
    ck_assert_uint_eq(v.value_len, 400000);
    ck_assert(all_bytes(v.value, v.value_len, 'M'));
    v = fx_held("t", 3);
    ck_assert_uint_eq(v.value_len, 300000);
    ck_assert(all_bytes(v.value, v.value_len, 'E'));
    close(peer);
    fx_stop();
}
END_TEST

START_TEST(test_bad_lines_rejected)
{
    int peer;

    fx_start(10000, 1000, 1 << 20);
    struct kp_client *c = fx_client(&peer);
    kpt_write_str(peer, "no-separator\nb@d value\nt fine\n");
    fx_drain(c);
    ck_assert_str_eq(fx_values("t"), "fine");
    ck_assert_uint_eq(c->tally->rejected, 2);
    ck_assert_uint_eq(F.n.rejected_by[KP_REASON_BAD_FORMAT], 1);
    ck_assert_uint_eq(F.n.rejected_by[KP_REASON_BAD_TOPIC], 1);
    close(peer);
    fx_stop();
}
END_TEST

/* ---- the read budget ---- */

/* Fills the application's end with 100-byte lines until the socket takes
 * no more (or `max` bytes); returns the bytes written. */
static size_t fill_lines(int peer, size_t max)
{
    static char buf[64000];
    int sndbuf = 4 << 20;
    size_t total = 0;

    setsockopt(peer, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    for (size_t i = 0; i < sizeof(buf); i += 100) {
        memset(buf + i, 'x', 100);
        memcpy(buf + i, "big ", 4);
        buf[i + 99] = '\n';
    }
    while (total < max) {
        ssize_t n = send(peer, buf, sizeof(buf), MSG_NOSIGNAL);
        if (n < 0) {
            ck_assert_int_eq(errno, EAGAIN);
            break;
        }
        /* a short write ends mid-line: complete it on the next one */
        ck_assert_int_eq(n % 100, 0);
        total += (size_t)n;
    }
    return total;
}

START_TEST(test_read_budget_is_fair)
{
    int pa, pb;

    fx_start(100000, 1000, 1 << 30);
    struct kp_client *a = fx_client(&pa);
    struct kp_client *b = fx_client(&pb);
    size_t total = fill_lines(pa, 3 * READ_BUDGET);
    /* more than one wake-up's budget waits in a's socket */
    ck_assert_uint_gt(total, READ_BUDGET);
    kpt_write_str(pb, "small one\nsmall two\n");

    /* one loop iteration: a reads (at most) its budget, b is served
     * too */
    ev_run(F.loop, EVRUN_NOWAIT);
    ck_assert_uint_eq(b->tally->pending, 2);
    ck_assert_uint_gt(a->tally->pending, 0);
    ck_assert_uint_le(a->tally->pending, READ_BUDGET / 100);
    ck_assert_int_gt(kpt_unread(a->fd), 0);

    /* b keeps being served while a still has bytes waiting */
    kpt_write_str(pb, "small three\n");
    ev_run(F.loop, EVRUN_NOWAIT);
    ck_assert_uint_eq(b->tally->pending, 3);

    int rounds = 1;
    while (kpt_unread(a->fd) > 0 && rounds < 64) {
        ev_run(F.loop, EVRUN_NOWAIT);
        rounds++;
    }
    ck_assert_int_ge(rounds, 2);
    ck_assert_uint_eq(a->tally->pending, total / 100);
    ck_assert_uint_eq(F.n.received, total / 100 + 3);
    close(pa);
    close(pb);
    fx_stop();
}
END_TEST

/* Twelve clients with 1 MiB each waiting: one loop round reads at most
 * KP_CLIENT_ROUND_BYTES (plus the read that crossed it), and the clients
 * take turns: none waits longer than the others' full reads take. */
START_TEST(test_round_reads_are_bounded_and_take_turns)
{
    enum { N = 12 };
    int peer[N];
    struct kp_client *c[N];
    size_t total = 0;

    fx_start(100000, 1000, 1 << 30);
    for (int i = 0; i < N; i++) {
        c[i] = fx_client(&peer[i]);
        total += fill_lines(peer[i], 1 << 20);
    }
    ck_assert_uint_gt(total, 2 * KP_CLIENT_ROUND_BYTES);

    int waited[N] = {0}, longest = 0, rounds = 0;
    size_t left = total, most = 0;
    while (left > 0 && rounds++ < 1000) {
        uint64_t before[N];
        for (int i = 0; i < N; i++) {
            before[i] = c[i]->tally->pending;
        }
        ev_run(F.loop, EVRUN_NOWAIT);
        size_t now = 0;
        for (int i = 0; i < N; i++) {
            int unread = kpt_unread(c[i]->fd);
            now += (size_t)unread;
            bool served = c[i]->tally->pending > before[i];
            waited[i] = served || unread == 0 ? 0 : waited[i] + 1;
            longest = KP_MAX(longest, waited[i]);
        }
        most = KP_MAX(most, left - now);
        left = now;
    }
    ck_assert_uint_eq(left, 0);
    ck_assert_uint_le(most, KP_CLIENT_ROUND_BYTES + READ_BUDGET);
    /* first come, first served: ahead of a client at most the eleven
     * others, each with one full read */
    ck_assert_int_le(longest,
                     (N - 1) * READ_BUDGET / KP_CLIENT_ROUND_BYTES + 1);
    ck_assert_uint_eq(F.n.received, total / 100);
    for (int i = 0; i < N; i++) {
        close(peer[i]);
    }
    fx_stop();
}
END_TEST

/* ---- backpressure ---- */

/* buffer_bytes 4000: a few dozen 60-byte lines reach it. They alternate
 * between two topics, so that neither reaches its own limit
 * (topic_buffer_bytes 4000) first: this is the daemon-wide limit. */
START_TEST(test_backpressure_pauses_reads)
{
    char line[2][64];
    int peer;

    fx_extra = ", \"topic_buffer_bytes\": 4000";
    fx_start(100000, 100, 4000);
    struct kp_topic *t = fx_ready_topic("t");
    struct kp_topic *u = fx_ready_topic("u");
    struct kp_client *c = fx_client(&peer);
    for (int k = 0; k < 2; k++) {
        memset(line[k], 'v', sizeof(line[k]));
        memcpy(line[k], k ? "u " : "t ", 2);
        line[k][59] = '\n';
    }
    for (int i = 0; i < 80; i++) {
        kpt_write(peer, line[i % 2], 60);
    }
    fx_drain(c);
    ck_assert_int_eq(F.bp_on, 1);
    ck_assert(F.router->backpressure);
    ck_assert(c->paused);
    ck_assert(!c->stalled);
    ck_assert_uint_eq(c->tally->pending, 80);

    /* paused: the bytes stay in the socket, however long the loop runs */
    for (int i = 0; i < 10; i++) {
        kpt_write(peer, line[i % 2], 60);
    }
    for (int i = 0; i < 10; i++) {
        ev_run(F.loop, EVRUN_NOWAIT);
    }
    ck_assert_int_eq(kpt_unread(c->fd), 600);
    ck_assert_uint_eq(c->tally->pending, 80);

    /* a client accepted meanwhile starts paused */
    int peer2;
    struct kp_client *c2 = fx_client(&peer2);
    ck_assert(c2->paused);
    kpt_write(peer2, line[0], 60);
    ev_run(F.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(kpt_unread(c2->fd), 60);

    /* settled: released, and what waited is read */
    fx_settle(t, 0);
    fx_settle(u, 0);
    ck_assert_int_eq(F.bp_off, 1);
    ck_assert(!c->paused);
    ck_assert_int_eq(F.router->env.buffered_bytes, 0);
    fx_drain(c);
    fx_drain(c2);
    ck_assert_uint_eq(c->tally->delivered, 80);
    ck_assert_uint_eq(c->tally->pending, 10);
    ck_assert_uint_eq(c2->tally->pending, 1);
    fx_settle(t, 0);
    fx_settle(u, 0);
    ck_assert_int_eq(F.router->env.buffered_bytes, 0);
    close(peer);
    close(peer2);
    fx_stop();
}
END_TEST

START_TEST(test_pause_and_resume)
{
    int peer;

    fx_start(10000, 1000, 1 << 20);
    struct kp_client *c = fx_client(&peer);
    kp_clients_pause(&F.cs, true);
    kpt_write_str(peer, "t a\nt b\n");
    for (int i = 0; i < 5; i++) {
        ev_run(F.loop, EVRUN_NOWAIT);
    }
    ck_assert_int_eq(kpt_unread(c->fd), 8);
    ck_assert_uint_eq(F.n.received, 0);
    /* a paused client does not see its EOF either */
    shutdown(peer, SHUT_WR);
    ev_run(F.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(c->state, KP_CLIENT_READING);
    kp_clients_pause(&F.cs, false);
    fx_eof(c);
    ck_assert_str_eq(fx_values("t"), "a|b");
    close(peer);
    fx_stop();
}
END_TEST

/* ---- the half-close summary ---- */

START_TEST(test_summary_after_settled)
{
    char buf[64];
    int peer;

    fx_start(2, 1000, 1 << 20); /* two messages per batch */
    struct kp_client *c = fx_client(&peer);
    kpt_write_str(peer, "t a\nb@d x\nt b\nt c\n");
    shutdown(peer, SHUT_WR);
    fx_eof(c);
    ck_assert_int_eq(c->state, KP_CLIENT_DRAINING);
    ck_assert_uint_eq(c->tally->pending, 3);
    ck_assert_int_eq(read(peer, buf, sizeof(buf)), -1);
    ck_assert_int_eq(errno, EAGAIN);

    /* the messages are in batches [a b] [c] */
    struct kp_partition *p = fx_topic("t")->parts[0];
    kp_partition_seal(p);
    struct kp_batch *b1 = kp_partition_take(p, 1, -1, -1);
    struct kp_batch *b2 = kp_partition_take(p, 1, -1, -1);
    ck_assert_int_eq(b1->count, 2);
    ck_assert_int_eq(b2->count, 1);
    kp_partition_delivered(p, b1, 0);
    ev_run(F.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(read(peer, buf, sizeof(buf)), -1); /* not yet */
    ck_assert_int_eq(c->state, KP_CLIENT_DRAINING);
    kp_partition_fail(p, b2, KP_REASON_BROKER_ERROR, "test");

    ck_assert_str_eq(fx_read_all(peer), "delivered=2 failed=1 rejected=1\n");
    ck_assert_int_eq(c->state, KP_CLIENT_CLOSED);
    ck_assert_int_eq(F.router->env.buffered_bytes, 0);
    close(peer);
    fx_stop();
}
END_TEST

/* Messages settled while the client still reads: no summary until its
 * half-close, then exactly one. */
START_TEST(test_summary_only_at_half_close)
{
    char buf[64];
    int peer;

    fx_start(10000, 1000, 1 << 20);
    struct kp_topic *t = fx_ready_topic("t");
    struct kp_client *c = fx_client(&peer);
    kpt_write_str(peer, "t a\n");
    fx_drain(c);
    fx_settle(t, 0);
    ck_assert_uint_eq(c->tally->pending, 0);
    ev_run(F.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(read(peer, buf, sizeof(buf)), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(c->state, KP_CLIENT_READING);

    kpt_write_str(peer, "t b\n");
    shutdown(peer, SHUT_WR);
    fx_eof(c);
    fx_settle(t, 1);
    ck_assert_str_eq(fx_read_all(peer), "delivered=1 failed=1 rejected=0\n");
    close(peer);
    fx_stop();
}
END_TEST

/* The application closes both ways before its summary: the messages
 * still go (counted), and the summary's write fails quietly. */
START_TEST(test_peer_closed_both_ways)
{
    int peer;

    fx_start(10000, 1000, 1 << 20);
    struct kp_topic *t = fx_ready_topic("t");
    struct kp_client *c = fx_client(&peer);
    struct kp_tally *tally = kp_tally_get(c->tally);
    kpt_write_str(peer, "t a\nt b\nt c\n");
    close(peer);
    fx_eof(c);
    ck_assert_int_eq(c->state, KP_CLIENT_DRAINING);
    fx_settle(t, 0);
    ck_assert_int_eq(c->state, KP_CLIENT_CLOSED);
    ck_assert_uint_eq(tally->delivered, 3);
    ck_assert_uint_eq(F.n.delivered, 3);
    kp_tally_put(tally);
    fx_stop();
}
END_TEST

/* The client is closed and freed (shutdown deadline) while its messages
 * are in batches: they settle later into a tally that outlives it. */
START_TEST(test_client_freed_before_its_messages)
{
    int peer;

    fx_start(2, 1000, 1 << 20);
    struct kp_topic *t = fx_ready_topic("t");
    struct kp_client *c = fx_client(&peer);
    struct kp_tally *tally = kp_tally_get(c->tally);
    kpt_write_str(peer, "t a\nt b\nt c\n");
    fx_drain(c);
    kp_clients_close_all(&F.cs);
    kp_clients_reap(&F.cs); /* c is freed */
    ck_assert_uint_eq(F.cs.cnt, 0);
    ck_assert_ptr_null(tally->owner);
    fx_settle(t, 1);
    ck_assert_uint_eq(tally->pending, 0);
    ck_assert_uint_eq(tally->delivered, 2);
    ck_assert_uint_eq(tally->failed, 1);
    ck_assert_uint_eq(F.n.delivered, 2);
    ck_assert_uint_eq(F.n.failed, 1);
    /* the application sees its connection closed, no summary */
    char buf[8];
    ck_assert_int_eq(read(peer, buf, sizeof(buf)), 0);
    kp_tally_put(tally);
    close(peer);
    fx_stop();
}
END_TEST

/* ---- stalls: a topic without metadata, a full topic ---- */

/* The prepare phase: woken clients go on. */
static void fx_prepare(void)
{
    kp_clients_resume(&F.cs);
}

/* A line for a topic without metadata stops its connection there (its
 * bytes wait, unread and unnumbered) while another connection goes on;
 * metadata wakes it and its lines go in order. */
START_TEST(test_stall_on_unknown_topic)
{
    static const int32_t leaders[] = {1};
    int pa, pb;

    fx_start(10000, 1000, 1 << 20);
    F.unknown_topics = true;
    fx_ready_topic("k");
    struct kp_client *a = fx_client(&pa);
    struct kp_client *b = fx_client(&pb);
    kpt_write_str(pa, "k zero\nu one\nk two\nu three\n");
    fx_drain(a);
    kpt_write_str(pb, "k other\n");
    fx_drain(b);
    struct kp_topic *u = fx_topic("u");
    ck_assert(a->stalled);
    ck_assert_ptr_eq(a->wait.topic, u);
    ck_assert_uint_eq(u->waiter_cnt, 1);
    ck_assert_uint_eq(a->tally->seq, 1);
    ck_assert_uint_eq(a->carry_len, strlen("u one\nk two\nu three\n"));
    ck_assert_uint_eq(a->partial, 0);
    ck_assert_str_eq(fx_values("k"), "zero|other");
    ck_assert_uint_eq(F.n.topic_waits, 1);
    /* stalled: not read, whatever comes */
    kpt_write_str(pa, "k four\n");
    for (int i = 0; i < 5; i++) {
        ev_run(F.loop, EVRUN_NOWAIT);
    }
    ck_assert_int_eq(kpt_unread(a->fd), 7);
    fx_prepare();
    ck_assert(a->stalled);

    ck_assert(kp_router_on_metadata(F.router, "u", 0, 1, leaders));
    ck_assert_uint_eq(u->waiter_cnt, 0);
    ck_assert(a->resuming);
    fx_prepare();
    ck_assert(!a->stalled);
    fx_drain(a);
    ck_assert_str_eq(fx_values("u"), "one|three");
    ck_assert_str_eq(fx_values("k"), "zero|other|two|four");
    ck_assert_uint_eq(a->tally->seq, 5);
    ck_assert_uint_eq(a->tally->pending, 5);
    close(pa);
    close(pb);
    fx_stop();
}
END_TEST

/* metadata_max_wait_ms passes without metadata: the waiting connection
 * goes on, its lines for the topic fail at once (unknown_topic), the
 * others go through; so do later ones. EOF while stalled finishes once
 * the rest is through. */
START_TEST(test_stall_unknown_topic_goes_missing)
{
    int pa;

    fx_start(10000, 1000, 1 << 20);
    F.unknown_topics = true;
    fx_ready_topic("k");
    struct kp_client *a = fx_client(&pa);
    kpt_write_str(pa, "u one\nk two\nu three");
    shutdown(pa, SHUT_WR);
    fx_drain(a);
    ck_assert(a->stalled);
    struct kp_topic *u = fx_topic("u");
    u->unknown_since_ms -= F.conf->metadata_max_wait_ms;
    kp_router_expire(F.router, kp_mono_ms(), NULL);
    ck_assert_int_eq(u->state, KP_TOPIC_MISSING);
    fx_prepare();
    fx_eof(a);
    ck_assert_int_eq(a->state, KP_CLIENT_DRAINING);
    ck_assert_uint_eq(a->tally->failed, 2);
    ck_assert_uint_eq(a->tally->pending, 1);
    ck_assert_uint_eq(u->failed_by[KP_REASON_UNKNOWN_TOPIC], 2);
    ck_assert_uint_eq(F.n.received, 3);
    ck_assert_uint_eq(F.n.failed, 2);
    ck_assert_str_eq(fx_values("k"), "two");
    fx_settle(fx_topic("k"), 0);
    ck_assert_str_eq(fx_read_all(pa), "delivered=1 failed=2 rejected=0\n");
    close(pa);
    fx_stop();
}
END_TEST

/* 60-byte lines to a topic whose limit (topic_buffer_bytes 1000) a dozen
 * of them reach. */
static void fx_write_lines(int peer, const char *topic, int n)
{
    char line[64];

    memset(line, 'v', sizeof(line));
    memcpy(line, topic, strlen(topic));
    line[strlen(topic)] = ' ';
    line[59] = '\n';
    for (int i = 0; i < n; i++) {
        kpt_write(peer, line, 60);
    }
}

/* A full topic pauses only the connection writing to it; each settle
 * gives it room again and it goes on, in order, to the last line. */
START_TEST(test_full_topic_stalls_alone)
{
    int pa, pb;

    fx_extra = ", \"topic_buffer_bytes\": 1000, \"max_block_ms\": 600000";
    fx_start(100000, 100, 1 << 20);
    struct kp_topic *t = fx_ready_topic("t");
    struct kp_client *a = fx_client(&pa);
    struct kp_client *b = fx_client(&pb);
    fx_write_lines(pa, "t", 40);
    fx_drain(a);
    ck_assert(a->stalled);
    ck_assert_uint_eq(t->waiter_cnt, 1);
    ck_assert_ptr_eq(a->block_topic, t);
    uint64_t first = a->tally->pending;
    ck_assert_uint_gt(first, 5);
    ck_assert_uint_lt(first, 40);
    ck_assert(kp_topic_full(&F.router->topics, t));
    ck_assert(!F.router->backpressure);
    /* another connection, another topic: not held up */
    fx_write_lines(pb, "u", 3);
    fx_drain(b);
    ck_assert_uint_eq(b->tally->pending, 3);
    int rounds = 0;
    while (a->tally->delivered + a->tally->pending < 40 && rounds++ < 40) {
        fx_settle(t, 0); /* room: a is woken */
        ck_assert(a->resuming || !a->stalled);
        fx_prepare();
    }
    ck_assert_uint_eq(a->tally->delivered + a->tally->pending, 40);
    ck_assert(!a->stalled);
    ck_assert_ptr_null(a->block_topic);
    ck_assert_uint_eq(a->tally->failed, 0);
    ck_assert_uint_ge(F.n.topic_waits, 2);
    close(pa);
    close(pb);
    fx_stop();
}
END_TEST

/*
 * A new connection reads KP_CLIENT_STALLED_READ first and doubles from
 * there; a read that stalls on a full topic sends it back down. What a
 * paused writer holds in its carry is one small read, not the budget: a
 * thousand writers paused on one topic held (and faulted in) 100 MB.
 */
START_TEST(test_new_and_stalled_readers_read_little)
{
    int pa;

    fx_extra = ", \"topic_buffer_bytes\": 20000, \"max_block_ms\": 600000";
    fx_start(100000, 1000, 1 << 30);
    struct kp_topic *t = fx_ready_topic("big");
    struct kp_client *a = fx_client(&pa);
    size_t total = fill_lines(pa, 3 * READ_BUDGET);
    ck_assert_uint_gt(total, READ_BUDGET);

    /* the first read: a small one, which the topic takes whole */
    ev_run(F.loop, EVRUN_NOWAIT);
    ck_assert(!a->stalled);
    ck_assert_uint_gt(a->tally->pending, 0);
    ck_assert_uint_le(a->tally->pending, KP_CLIENT_STALLED_READ / 100 + 1);
    /* the second takes twice as much: the topic is full midway */
    ev_run(F.loop, EVRUN_NOWAIT);
    ck_assert(a->stalled);
    ck_assert_uint_gt(a->carry_len, 0);
    ck_assert_uint_le(a->carry_len, 2 * KP_CLIENT_STALLED_READ);

    /* room again, its carry taken: the next read is a small one again */
    int rounds = 0;
    while ((a->stalled || a->carry_len > 0) && rounds++ < 64) {
        fx_settle(t, 0);
        fx_prepare();
    }
    ck_assert(!a->stalled);
    uint64_t before = a->tally->delivered + a->tally->pending;
    ev_run(F.loop, EVRUN_NOWAIT);
    uint64_t taken = a->tally->delivered + a->tally->pending - before;
    ck_assert_uint_gt(taken, 0);
    /* (plus the line whose start the carry held) */
    ck_assert_uint_le(taken, KP_CLIENT_STALLED_READ / 100 + 1);

    /* and everything goes through, in whatever steps */
    rounds = 0;
    while (a->tally->delivered + a->tally->pending < total / 100 &&
           rounds++ < 10000) {
        fx_settle(t, 0);
        fx_prepare();
        ev_run(F.loop, EVRUN_NOWAIT);
    }
    ck_assert_uint_eq(a->tally->delivered + a->tally->pending, total / 100);
    ck_assert_uint_eq(a->tally->failed, 0);
    close(pa);
    fx_stop();
}
END_TEST

/* Delivers only the oldest sealed batch of t's partition 0. */
static void fx_settle_head(struct kp_topic *t)
{
    struct kp_partition *p = t->parts[0];

    ck_assert_ptr_nonnull(kp_partition_head(p));
    kp_partition_delivered(p, kp_partition_take(p, p->leader, -1, -1), 0);
}

/*
 * A full topic wakes its paused writers once an eighth of it is free, not
 * at every batch settled: with a thousand writers paused, each woken one
 * reads its waiting line again and most stall again at once.
 */
START_TEST(test_full_topic_wakes_at_an_eighth_free)
{
    int pa;

    fx_extra = ", \"topic_buffer_bytes\": 4000, \"max_block_ms\": 600000";
    fx_start(2, 100, 1 << 20);
    struct kp_topic *t = fx_ready_topic("t");
    struct kp_client *a = fx_client(&pa);
    fx_write_lines(pa, "t", 200);
    fx_drain(a);
    ck_assert(a->stalled);
    ck_assert(kp_topic_full(&F.router->topics, t));

    int settled = 0;
    while (!a->resuming && settled < 100) {
        fx_settle_head(t);
        settled++;
        if (!a->resuming) {
            ck_assert_int_gt(t->acct.bytes, 4000 - 4000 / 8);
        }
    }
    ck_assert(a->resuming);
    ck_assert_int_gt(settled, 1); /* one batch freed too little */
    ck_assert_int_le(t->acct.bytes, 4000 - 4000 / 8);

    /* and it goes on to the last line */
    int rounds = 0;
    fx_prepare();
    while (a->tally->delivered + a->tally->pending < 200 && rounds++ < 400) {
        fx_settle(t, 0);
        fx_prepare();
        ev_run(F.loop, EVRUN_NOWAIT);
    }
    ck_assert_uint_eq(a->tally->delivered + a->tally->pending, 200);
    ck_assert_uint_eq(a->tally->failed, 0);
    close(pa);
    fx_stop();
}
END_TEST

/* max_block_ms (0 here) paused on a full topic: that topic's lines from
 * the connection fail at once (buffer_full) and it goes on with the
 * others; once the topic takes a line again, it waits again. */
START_TEST(test_max_block_fails_until_room)
{
    int pa;

    fx_extra = ", \"topic_buffer_bytes\": 1000, \"max_block_ms\": 0";
    fx_start(100000, 100, 1 << 20);
    struct kp_topic *t = fx_ready_topic("t");
    struct kp_client *a = fx_client(&pa);
    fx_write_lines(pa, "t", 30);
    fx_write_lines(pa, "u", 2);
    fx_drain(a);
    ck_assert(a->stalled);
    uint64_t queued = a->tally->pending;
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64,
                            F.n.block_timeouts == 1));
    ck_assert_ptr_eq(a->fail_topic, t);
    ck_assert_uint_eq(t->waiter_cnt, 0);
    fx_prepare();
    ck_assert(!a->stalled);
    ck_assert_uint_eq(a->tally->failed, 30 - queued);
    ck_assert_uint_eq(t->failed_by[KP_REASON_BUFFER_FULL], 30 - queued);
    char vs[128];
    memset(vs, 'v', 57);
    vs[57] = '|';
    memset(vs + 58, 'v', 57);
    vs[115] = '\0';
    ck_assert_str_eq(fx_values("u"), vs);
    /* still full: fails at once, no new wait */
    fx_write_lines(pa, "t", 1);
    fx_drain(a);
    ck_assert(!a->stalled);
    ck_assert_uint_eq(a->tally->failed, 31 - queued);
    /* room again: taken, and the next time it is full it waits again
     * (max_block_ms anew: 0 here, so it times out again at once) */
    uint64_t waits = F.n.topic_waits;
    fx_settle(t, 0);
    ck_assert_int_eq(t->acct.bytes, 0);
    fx_write_lines(pa, "t", 30);
    fx_drain(a);
    ck_assert_uint_eq(F.n.topic_waits, waits + 1);
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64,
                            F.n.block_timeouts == 2));
    fx_prepare();
    ck_assert_uint_eq(a->tally->pending + a->tally->failed +
                          a->tally->delivered,
                      63);
    close(pa);
    fx_stop();
}
END_TEST

/* ---- unfinished lines: their shared budget ---- */

/* Writes "t " and n bytes of c, no newline. */
static void fx_partial(int peer, char c, size_t n)
{
    static char buf[20000];

    memset(buf, c, n);
    memcpy(buf, "t ", 2);
    kpt_write(peer, buf, n);
}

/* buffer_bytes 128 KiB: unfinished lines may hold 16 KiB together. The
 * one that takes them over has the largest line rejected (buffer_full),
 * whose rest is skipped to its newline; the connections go on. */
START_TEST(test_partial_budget_rejects_largest)
{
    int pa, pb, pc;

    fx_start(10000, 100000, 1 << 17);
    struct kp_client *a = fx_client(&pa);
    struct kp_client *b = fx_client(&pb);
    struct kp_client *c = fx_client(&pc);
    fx_partial(pa, 'a', 6000);
    fx_drain(a);
    fx_partial(pb, 'b', 9000);
    fx_drain(b);
    ck_assert_int_eq(F.cs.partial_bytes, 15000);
    ck_assert_int_eq(F.router->client_bytes, 15000);
    ck_assert_uint_eq(F.n.partial_evictions, 0);
    fx_partial(pc, 'c', 2000);
    fx_drain(c);
    ck_assert_uint_eq(F.n.partial_evictions, 1);
    ck_assert_uint_eq(b->tally->rejected, 1);
    ck_assert_uint_eq(F.n.rejected_by[KP_REASON_BUFFER_FULL], 1);
    ck_assert(b->framer.discarding);
    ck_assert_uint_eq(b->carry_len, 0);
    ck_assert_int_eq(F.cs.partial_bytes, 8000);
    ck_assert_int_eq(F.router->client_bytes, 8000);
    /* b's line goes on being skipped to its end; b goes on after it */
    kpt_write_str(pb, "bbbbbbbb\nt b-next\n");
    kpt_write_str(pa, "aaa\n");
    fx_drain(b);
    fx_drain(a);
    ck_assert_uint_eq(b->tally->pending, 1);
    ck_assert_uint_eq(a->tally->pending, 1);
    ck_assert_int_eq(F.cs.partial_bytes, 2000);
    close(pa);
    close(pb);
    close(pc);
    fx_drain(c);
    ck_assert_int_eq(F.cs.partial_bytes, 0);
    ck_assert_int_eq(F.router->client_bytes, 0);
    fx_stop();
}
END_TEST

static Suite *client_suite(void)
{
    Suite *s = suite_create("client");
    TCase *tc = tcase_create("framing");
    tcase_add_test(tc, test_split_every_position);
    tcase_add_test(tc, test_split_byte_by_byte);
    tcase_add_test(tc, test_empty_lines_only);
    tcase_add_test(tc, test_overlong_in_one_write);
    tcase_add_test(tc, test_overlong_trickled);
    tcase_add_test(tc, test_overlong_at_eof);
    tcase_add_test(tc, test_long_lines_across_reads);
    tcase_add_test(tc, test_bad_lines_rejected);
    suite_add_tcase(s, tc);

    tc = tcase_create("flow");
    tcase_add_test(tc, test_read_budget_is_fair);
    tcase_add_test(tc, test_round_reads_are_bounded_and_take_turns);
    tcase_add_test(tc, test_backpressure_pauses_reads);
    tcase_add_test(tc, test_pause_and_resume);
    suite_add_tcase(s, tc);

    tc = tcase_create("summary");
    tcase_add_test(tc, test_summary_after_settled);
    tcase_add_test(tc, test_summary_only_at_half_close);
    tcase_add_test(tc, test_peer_closed_both_ways);
    tcase_add_test(tc, test_client_freed_before_its_messages);
    suite_add_tcase(s, tc);

    tc = tcase_create("isolation");
    tcase_add_test(tc, test_stall_on_unknown_topic);
    tcase_add_test(tc, test_stall_unknown_topic_goes_missing);
    tcase_add_test(tc, test_full_topic_stalls_alone);
    tcase_add_test(tc, test_new_and_stalled_readers_read_little);
    tcase_add_test(tc, test_full_topic_wakes_at_an_eighth_free);
    tcase_add_test(tc, test_max_block_fails_until_room);
    tcase_add_test(tc, test_partial_budget_rejects_largest);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    kp_log_set_level(KP_LOG_ERROR);
    SRunner *sr = srunner_create(client_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
