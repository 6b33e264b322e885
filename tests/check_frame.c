/*
 * check_frame.c - framing (kp_frame) and a client's framing, numbering and
 * receipts end to end over a socketpair: line and length framing, frames
 * split across reads at every byte position, overlong frames skipped with
 * framing intact, zero-length frames, EOF inside a frame, and a writer
 * that does not read its receipts paused at 1 MiB and resumed.
 *
 * The client runs on a real router whose topics get metadata (one
 * partition) as soon as they are created and nothing is ever sent: the
 * messages it accepts stay in the partition's batch, in order, where the
 * test reads them back; failing them (kp_router_abandon) sends their
 * receipts.
 */
#include "kp_frame.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_client.h"
#include "kp_counters.h"
#include "kp_log.h"
#include "kp_record.h"
#include "kp_router.h"

/* ---- kp_frame alone ---- */

struct got {
    char msgs[64][64]; /* messages, or "!too_long N" / "!truncated N" */
    int cnt;
};

/* Feeds data as the client does: carry + new bytes, chunks of `step`. */
static void feed(struct kp_framer *f, size_t max, const uint8_t *data,
                 size_t len, size_t step, struct got *g)
{
    uint8_t acc[4096];
    size_t acc_len = 0;
    const uint8_t *msg;
    size_t msg_len, shown, off;
    enum kp_frame_kind k;

    memset(g, 0, sizeof(*g));
    for (size_t pos = 0;; pos += step) {
        bool final = pos >= len;
        size_t n = final ? 0 : KP_MIN(step, len - pos);
        memcpy(acc + acc_len, data + pos, n);
        acc_len += n;
        off = 0;
        while ((k = kp_frame_next(f, max, acc, acc_len, &off, final, &msg,
                                  &msg_len, &shown)) != KP_FRAME_NONE) {
            ck_assert_int_lt(g->cnt, 64);
            if (k == KP_FRAME_MSG) {
                ck_assert_uint_lt(msg_len, 64);
                memcpy(g->msgs[g->cnt], msg, msg_len);
            } else {
                ck_assert_uint_le(shown, msg_len);
                snprintf(g->msgs[g->cnt], 64, "!%s %zu",
                         kp_frame_kind_names[k], msg_len);
            }
            g->cnt++;
        }
        memmove(acc, acc + off, acc_len - off);
        acc_len -= off;
        if (final) {
            break;
        }
    }
    ck_assert_uint_eq(acc_len, 0);
}

START_TEST(test_lines)
{
    static const char in[] = "a\n\nbb\r\n0123456789ABC\nxyz\n0123456789ABCDEF"
                             "GHIJ\nlast";
    static const char *const want[] = {"a", "bb\r", "!too_long 13", "xyz",
                                       "!too_long 12", "last"};
    struct kp_framer f;
    struct got g;

    /* every chunk size: the same messages */
    for (size_t step = 1; step <= sizeof(in); step++) {
        kp_framer_init(&f, KP_FRAMING_LINE);
        feed(&f, 10, (const uint8_t *)in, sizeof(in) - 1, step, &g);
        ck_assert_int_eq(g.cnt, 6);
        for (int i = 0; i < 6; i++) {
            if (i == 2 || i == 4) {
                /* an overlong partial line is rejected as soon as it is
                 * over the limit: its length so far depends on the chunk */
                ck_assert_int_eq(strncmp(g.msgs[i], "!too_long", 9), 0);
            } else {
                ck_assert_str_eq(g.msgs[i], want[i]);
            }
        }
    }
}
END_TEST

static size_t put_frame(uint8_t *p, const char *s, size_t n)
{
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    if (s) {
        memcpy(p + 4, s, n);
    } else {
        memset(p + 4, 'x', n);
    }
    return 4 + n;
}

START_TEST(test_frames)
{
    uint8_t in[512];
    size_t len = 0;
    struct kp_framer f;
    struct got g;

    len += put_frame(in + len, "a\nb", 3);
    len += put_frame(in + len, NULL, 0); /* skipped */
    len += put_frame(in + len, "\0\xff\r\n", 4);
    len += put_frame(in + len, NULL, 11); /* over 10: skipped, rejected */
    len += put_frame(in + len, "0123456789", 10);
    len += put_frame(in + len, NULL, 300); /* ditto */
    len += put_frame(in + len, "z", 1);
    in[len++] = 0; /* EOF inside a header */
    in[len++] = 0;

    for (size_t step = 1; step <= len + 1; step++) {
        kp_framer_init(&f, KP_FRAMING_LENGTH);
        feed(&f, 10, in, len, step, &g);
        ck_assert_int_eq(g.cnt, 7);
        ck_assert_str_eq(g.msgs[0], "a\nb");
        ck_assert(memcmp(g.msgs[1], "\0\xff\r\n", 4) == 0);
        ck_assert_str_eq(g.msgs[2], "!too_long 11");
        ck_assert_str_eq(g.msgs[3], "0123456789");
        ck_assert_str_eq(g.msgs[4], "!too_long 300");
        ck_assert_str_eq(g.msgs[5], "z");
        ck_assert_str_eq(g.msgs[6], "!truncated 2");
    }
}
END_TEST

START_TEST(test_frame_ready)
{
    struct kp_framer f;
    uint8_t b[32];

    kp_framer_init(&f, KP_FRAMING_LENGTH);
    put_frame(b, "abcdef", 6);
    ck_assert(!kp_frame_ready(&f, 10, b, 3, 0));
    ck_assert(!kp_frame_ready(&f, 10, b, 9, 0));
    ck_assert(kp_frame_ready(&f, 10, b, 10, 9));
    ck_assert(kp_frame_ready(&f, 5, b, 4, 0)); /* over max: at once */
    kp_framer_init(&f, KP_FRAMING_LINE);
    memcpy(b, "abc\ndef", 7);
    ck_assert(!kp_frame_ready(&f, 10, b, 3, 0));
    ck_assert(kp_frame_ready(&f, 10, b, 7, 3));
    ck_assert(!kp_frame_ready(&f, 10, b, 7, 4)); /* '\n' is not new */
    ck_assert(kp_frame_ready(&f, 2, b, 3, 0));
}
END_TEST

/* ---- a client over a socketpair ---- */

static void hook_changed(void *arg, struct kp_partition *p)
{
    (void)arg;
    (void)p;
}

static void hook_gap(void *arg, int64_t pid, int16_t epoch, const char *why)
{
    (void)arg;
    (void)pid;
    (void)epoch;
    (void)why;
}

static void hook_topic(void *arg, struct kp_topic *t)
{
    (void)arg;
    (void)t;
}

static struct kp_router *cur_router; /* the fixture's, for new topics */

/* Metadata at once: one partition, leader 1. */
static void hook_new_topic(void *arg, struct kp_topic *t)
{
    static const int32_t leaders[] = {1};
    (void)arg;
    kp_topic_on_metadata(&cur_router->topics, t, 0, 1, leaders, false);
}

static void hook_bool(void *arg, bool on)
{
    (void)arg;
    (void)on;
}

static void hook_void(void *arg)
{
    (void)arg;
}

static const struct kp_router_hooks hooks = {
    .changed = hook_changed,
    .seq_gap = hook_gap,
    .new_topic = hook_new_topic,
    .forget_topic = hook_topic,
    .backpressure = hook_bool,
    .settled = hook_void,
};

struct fx {
    struct ev_loop *loop;
    struct kp_conf *conf;
    struct kp_counters n;
    struct kp_router *router;
    struct kp_clients cs;
    struct kp_client *c;
    int peer; /* the writer's end */
};

/* The batch stays open for the tests to read: a linger that could end
 * between two writes (5 ms by default; a slow ASan run took longer) would
 * seal it away. */
static void fx_open(struct fx *x, const char *listener, int max)
{
    char json[512];
    struct kp_conf_errors errs = {0};
    int sv[2];

    snprintf(json, sizeof(json),
             "{\"brokers\": [\"127.0.0.1:1\"], \"producer\": "
             "{\"message_max_bytes\": %d, \"linger_ms\": 600000, "
             "\"delivery_timeout_ms\": 900000}, \"listeners\": [{\"path\": "
             "\"/nonexistent/x.sock\", %s}]}",
             max, listener);
    memset(x, 0, sizeof(*x));
    x->loop = ev_loop_new(EVFLAG_AUTO);
    x->conf = kp_conf_load_buf((const uint8_t *)json, strlen(json), NULL, 0,
                               &errs);
    ck_assert_msg(x->conf != NULL, "%s", json);
    x->router = kp_router_create(x->loop, x->conf, &x->n, NULL, &hooks,
                                 NULL);
    cur_router = x->router;
    kp_clients_init(&x->cs, x->loop, &x->conf, x->router, &x->n);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    x->c = kp_client_create(&x->cs, &x->conf->listeners[0], sv[0]);
    x->peer = sv[1];
}

static void fx_close(struct fx *x)
{
    kp_clients_deinit(&x->cs);
    kp_router_destroy(x->router);
    kp_conf_put(x->conf);
    ev_loop_destroy(x->loop);
    close(x->peer);
}

/* Lets the client read what was written and write what it has. */
static void fx_pump(struct fx *x)
{
    for (int i = 0; i < 3; i++) {
        ev_run(x->loop, EVRUN_NOWAIT);
        kp_clients_reap(&x->cs);
    }
}

static void fx_write(struct fx *x, const void *p, size_t n)
{
    ck_assert_int_eq(write(x->peer, p, n), (ssize_t)n);
    fx_pump(x);
}

/* The open batch of the topic's one partition. */
static struct kp_batch *fx_batch(struct fx *x, const char *topic)
{
    struct kp_topic *t = kp_topic_lookup(&x->router->topics, topic,
                                         strlen(topic));
    return t && t->part_cnt ? t->parts[0]->open : NULL;
}

/* The values the topic holds, '|'-separated; returns the length. */
static size_t fx_held(struct fx *x, const char *topic, char *out, size_t cap)
{
    struct kp_batch *b = fx_batch(x, topic);
    struct kp_record_view v;
    struct kp_rd r;
    size_t o = 0;

    out[0] = '\0';
    if (!b) {
        return 0;
    }
    kp_rd_init(&r, kp_batch_recs(b), kp_batch_recs_len(b));
    while (kp_record_next(&r, &v) == KP_OK) {
        ck_assert_uint_lt(o + v.value_len + 2, cap);
        memcpy(out + o, v.value, v.value_len);
        o += v.value_len;
        out[o++] = '|';
        out[o] = '\0';
    }
    return o;
}

/* Everything the peer can read now. */
static size_t fx_read(struct fx *x, char *out, size_t cap)
{
    size_t o = 0;
    ssize_t n;

    fcntl(x->peer, F_SETFL, fcntl(x->peer, F_GETFL) | O_NONBLOCK);
    while (o + 1 < cap && (n = read(x->peer, out + o, cap - 1 - o)) > 0) {
        o += (size_t)n;
    }
    out[o] = '\0';
    return o;
}

/* topic,value frames: values 0..11 bytes, with \n, NUL and 0xff; some
 * over the 10-byte limit; zero-length frames between. */
static size_t build_stream(uint8_t *p)
{
    static const char *const bodies[] = {
        "t a", "", "t \n\n", "t 0123456789", "t x", "t \0\xff\r",
        "t b", "", "", "t 01234567", "t c"};
    static const size_t lens[] = {3, 0, 4, 12, 3, 5, 3, 0, 0, 10, 3};
    size_t len = 0;

    for (size_t i = 0; i < KP_ARRAY_LEN(bodies); i++) {
        len += put_frame(p + len, bodies[i], lens[i]);
    }
    return len;
}

/* Failing held messages logs an error per connection: not shown. */
static int quiet_stderr(void)
{
    int saved = dup(2);
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    close(null);
    return saved;
}

static void restore_stderr(int saved)
{
    dup2(saved, 2);
    close(saved);
}

static const char stream_held[] = "a|\n\n|x|\0\xff\r|b|01234567|c|";

/* Every split of the stream into two reads, then EOF: the same messages
 * held, the same numbers in the receipts. */
START_TEST(test_client_frames_split_everywhere)
{
    uint8_t stream[256];
    size_t len = build_stream(stream);
    char held[256], out[1024];

    kp_log_set_level(KP_LOG_ERROR);
    int saved = quiet_stderr();
    for (size_t cut = 0; cut <= len; cut++) {
        struct fx x;
        fx_open(&x, "\"format\": \"topic,value\", \"framing\": \"length\", "
                    "\"receipts\": \"each\"",
                10);
        fx_write(&x, stream, cut);
        fx_write(&x, stream + cut, len - cut);
        shutdown(x.peer, SHUT_WR);
        fx_pump(&x);
        size_t n = fx_held(&x, "t", held, sizeof(held));
        ck_assert_msg(n == sizeof(stream_held) - 1 &&
                          memcmp(held, stream_held, n) == 0,
                      "cut %zu: %zu bytes held", cut, n);
        ck_assert_uint_eq(x.c->tally->seq, 8);
        ck_assert_uint_eq(x.n.rejected_by[KP_REASON_TOO_LONG], 1);
        /* nothing is sent: fail what it holds */
        kp_router_abandon(x.router, KP_REASON_SHUTDOWN);
        fx_pump(&x);
        fx_read(&x, out, sizeof(out));
        ck_assert_str_eq(out, "rejected 3 too_long\n"
                              "failed 1 shutdown\nfailed 2 shutdown\n"
                              "failed 4 shutdown\nfailed 5 shutdown\n"
                              "failed 6 shutdown\nfailed 7 shutdown\n"
                              "failed 8 shutdown\n"
                              "delivered=0 failed=7 rejected=1\n");
        fx_close(&x);
    }
    restore_stderr(saved);
}
END_TEST

/* A frame longer than the read buffer's share grows in the carry; an
 * overlong one is skipped as it arrives, without being buffered. */
START_TEST(test_client_long_frames)
{
    const size_t big = 700000;
    uint8_t *buf = kp_malloc(2 * big + 64);
    size_t len = 0;
    struct fx x;

    kp_log_set_level(KP_LOG_ERROR);
    fx_open(&x, "\"format\": \"value\", \"topic\": \"t\", \"framing\": "
                "\"length\"",
            (int)big);
    len += put_frame(buf, NULL, big + 1); /* skipped */
    len += put_frame(buf + len, NULL, big);
    len += put_frame(buf + len, "end", 3);
    for (size_t off = 0; off < len; off += 65536) {
        fx_write(&x, buf + off, KP_MIN((size_t)65536, len - off));
        ck_assert_uint_le(x.c->carry_cap, 2 * (big + 262144));
        if (off + 65536 <= big) {
            ck_assert_uint_eq(x.c->carry_len, 0); /* skipping */
        }
    }
    ck_assert_uint_eq(x.c->tally->seq, 3);
    ck_assert_uint_eq(x.c->tally->pending, 2);
    ck_assert_uint_eq(x.n.rejected_by[KP_REASON_TOO_LONG], 1);
    struct kp_batch *b = fx_batch(&x, "t");
    struct kp_record_view v;
    struct kp_rd r;
    ck_assert_int_eq(b->count, 2);
    kp_rd_init(&r, kp_batch_recs(b), kp_batch_recs_len(b));
    ck_assert_int_eq(kp_record_next(&r, &v), KP_OK);
    ck_assert_uint_eq(v.value_len, big);
    ck_assert(v.value[0] == 'x' && v.value[big - 1] == 'x');
    ck_assert_int_eq(kp_record_next(&r, &v), KP_OK);
    ck_assert(v.value_len == 3 && memcmp(v.value, "end", 3) == 0);
    fx_close(&x);
    free(buf);
}
END_TEST

/* A writer that does not read its receipts: at 1 MiB unread the client
 * stops reading (counted once), and reads again once they are read. */
START_TEST(test_client_unread_receipts)
{
    static const char line[] = "bad/topic x\n"; /* rejected: a receipt */
    char chunk[12 * 1000];
    char *out = kp_malloc(1 << 20);
    uint64_t written = 0, receipts = 0;
    struct fx x;

    kp_log_set_level(KP_LOG_ERROR);
    fx_open(&x, "\"format\": \"topic,value\", \"receipts\": \"each\"", 100);
    for (int i = 0; i < 1000; i++) {
        memcpy(chunk + i * 12, line, 12);
    }
    fcntl(x.peer, F_SETFL, fcntl(x.peer, F_GETFL) | O_NONBLOCK);
    /* write until the kernel takes no more: kproxyd stopped reading */
    for (int idle = 0; idle < 3;) {
        ssize_t n = write(x.peer, chunk, sizeof(chunk));
        if (n > 0) {
            ck_assert_int_eq(n % 12, 0); /* whole lines, for the count */
            written += (uint64_t)n / 12;
            idle = 0;
        } else {
            ck_assert(errno == EAGAIN);
            idle++;
        }
        fx_pump(&x);
    }
    ck_assert(x.c->blocked);
    ck_assert(!ev_is_active(&x.c->rio));
    ck_assert_uint_eq(x.n.receipt_pauses, 1);
    size_t unread = x.c->tally->out.len - x.c->out_off;
    ck_assert_uint_ge(unread, KP_CLIENT_OUT_MAX);
    /* past the limit by at most the rest of one read's receipts */
    ck_assert_uint_lt(unread, 2 * KP_CLIENT_OUT_MAX);
    /* read it all: reading resumes, every line gets its receipt */
    shutdown(x.peer, SHUT_WR);
    for (int i = 0; i < 10000; i++) {
        size_t n = fx_read(&x, out, 1 << 20);
        for (size_t j = 0; j < n; j++) {
            receipts += out[j] == '\n';
        }
        if (n && memmem(out, n, "delivered=", 10)) {
            break;
        }
        fx_pump(&x);
    }
    ck_assert_uint_eq(receipts, written + 1); /* and the summary */
    ck_assert_uint_eq(x.n.rejected, written);
    fx_close(&x);
    free(out);
}
END_TEST

static Suite *frame_suite(void)
{
    Suite *s = suite_create("frame");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_lines);
    tcase_add_test(tc, test_frames);
    tcase_add_test(tc, test_frame_ready);
    tcase_add_test(tc, test_client_frames_split_everywhere);
    tcase_add_test(tc, test_client_long_frames);
    tcase_add_test(tc, test_client_unread_receipts);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(frame_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
