/*
 * check_broker.c - the broker connection over socketpair(): the test plays
 * the broker on the other end with a tiny hand-written response writer
 * (size, correlation id, body). Covered: the ApiVersions handshake (v3, and
 * the v0 fallback), pipelining, correlation by position, a wrong
 * correlation id or an invalid frame size closing the connection (every
 * pending request failed exactly once), responses reassembled from any
 * split, no_response requests, short writes arming the write watcher,
 * throttling, timeouts, a connection closed from inside its own read
 * callback (the conn_gen guard), and connects that fail before they start.
 *
 * Request bodies are encoded by kp_proto; responses are written by hand so
 * that the test does not decode with the code it checks. Waits are loop
 * iterations: EVRUN_NOWAIT for bytes already sent, EVRUN_ONCE only while a
 * timer is armed.
 */
#include "kp_broker.h"

#include <arpa/inet.h>
#include <check.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_conf.h"
#include "kp_dns.h"
#include "kp_kerr.h"
#include "kp_log.h"
#include "kp_proto.h"
#include "kp_testloop.h"

#define CONF_FMT                                                               \
    "{\"brokers\": [\"127.0.0.1:9092\"],"                                      \
    " \"producer\": {\"request_timeout_ms\": %d}}"

#define MAX_STATES 32

struct fixture {
    struct ev_loop *loop;
    struct kp_conf *conf;
    struct kp_broker_env env; /* its resolver owned here */
    struct kp_broker *b;
    int peer; /* the test's end: it plays the broker */
    enum kp_broker_state states[MAX_STATES]; /* every state entered */
    int state_cnt;
    int rooms;
    int seq; /* completions so far, across requests */
};

static struct fixture F;

/* Bytes the peer has read and not yet taken as requests. */
static uint8_t pbuf[4 << 20];
static size_t plen;

static void fx_state(void *arg, struct kp_broker *b, enum kp_broker_state from)
{
    (void)arg;
    ck_assert_int_ne(from, b->state);
    ck_assert_int_lt(F.state_cnt, MAX_STATES);
    F.states[F.state_cnt++] = b->state;
}

static void fx_room(void *arg, struct kp_broker *b)
{
    (void)arg;
    (void)b;
    F.rooms++;
}

static const struct kp_broker_hooks fx_hooks = {
    .state = fx_state,
    .room = fx_room,
};

static void fx_start(int request_timeout_ms)
{
    char json[256];

    memset(&F, 0, sizeof(F));
    F.peer = -1;
    plen = 0;
    snprintf(json, sizeof(json), CONF_FMT, request_timeout_ms);
    F.loop = ev_loop_new(EVFLAG_AUTO);
    F.conf = kpt_conf(json);
    struct kp_dns_opts o = {.timeout_ms = 1000};
    F.env.dns = kp_dns_create(F.loop, &o);
    F.env.boot = F.conf;
    F.b = kp_broker_create(F.loop, &F.conf, &F.env, 1, "127.0.0.1", 9092,
                           &fx_hooks, NULL);
}

static void fx_stop(void)
{
    kp_broker_destroy(F.b);
    kp_dns_destroy(F.env.dns);
    if (F.peer >= 0) {
        close(F.peer);
    }
    kp_conf_put(F.conf);
    ev_loop_destroy(F.loop);
}

/* Whether the states entered so far end with `s`. */
static bool fx_last_state_is(enum kp_broker_state s)
{
    return F.state_cnt > 0 && F.states[F.state_cnt - 1] == s;
}

/* ---- the peer: a broker by hand ---- */

struct reqhdr {
    int16_t api_key;
    int16_t version;
    int32_t corr_id;
    size_t size; /* after the size field */
};

static int32_t be32(const uint8_t *p)
{
    return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                     (uint32_t)p[2] << 8 | p[3]);
}

static size_t put16(uint8_t *p, int v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return 2;
}

static size_t put32(uint8_t *p, int32_t v)
{
    p[0] = (uint8_t)((uint32_t)v >> 24);
    p[1] = (uint8_t)((uint32_t)v >> 16);
    p[2] = (uint8_t)((uint32_t)v >> 8);
    p[3] = (uint8_t)v;
    return 4;
}

/* Whether a whole request waits in pbuf; takes it off if so. */
static bool peer_take(struct reqhdr *h)
{
    if (plen < 4) {
        return false;
    }
    size_t size = (size_t)be32(pbuf);
    ck_assert_uint_ge(size, 8);
    if (plen < 4 + size) {
        return false;
    }
    h->api_key = (int16_t)(pbuf[4] << 8 | pbuf[5]);
    h->version = (int16_t)(pbuf[6] << 8 | pbuf[7]);
    h->corr_id = be32(pbuf + 8);
    h->size = size;
    memmove(pbuf, pbuf + 4 + size, plen - 4 - size);
    plen -= 4 + size;
    return true;
}

/* Reads what the broker wrote so far; returns false at EOF. */
static bool peer_read(int fd)
{
    for (;;) {
        ck_assert_uint_lt(plen, sizeof(pbuf));
        ssize_t n = read(fd, pbuf + plen, sizeof(pbuf) - plen);
        if (n > 0) {
            plen += (size_t)n;
            continue;
        }
        if (n == 0) {
            return false;
        }
        ck_assert_int_eq(errno, EAGAIN);
        return true;
    }
}

/* The next whole request, running the loop while the broker writes. */
static struct reqhdr peer_request(void)
{
    struct reqhdr h;

    for (int i = 0; i < 10000; i++) {
        if (peer_take(&h)) {
            return h;
        }
        ck_assert_msg(peer_read(F.peer), "broker closed the connection");
        if (!peer_take(&h)) {
            ev_run(F.loop, EVRUN_NOWAIT);
            continue;
        }
        return h;
    }
    ck_abort_msg("no request came");
    return h;
}

/* Whether the broker closed its end (everything before EOF is read). */
static bool peer_sees_eof(void)
{
    return !peer_read(F.peer);
}

/* A response frame: size, correlation id (header v0), body. */
static size_t frame(uint8_t *out, int32_t corr, const void *body, size_t len)
{
    size_t o = put32(out, (int32_t)(4 + len));
    o += put32(out + o, corr);
    memcpy(out + o, body, len);
    return o + len;
}

static void peer_respond(int32_t corr, const void *body, size_t len)
{
    uint8_t out[512];
    ck_assert_uint_le(len + 8, sizeof(out));
    kpt_write(F.peer, out, frame(out, corr, body, len));
}

static void peer_respond_str(int32_t corr, const char *body)
{
    peer_respond(corr, body, strlen(body));
}

/* The APIs an ApiVersions answer lists: what kproxyd needs. */
static const int16_t api_ranges[][3] = {
    {KP_API_PRODUCE, 0, 9},
    {KP_API_METADATA, 0, 12},
    {KP_API_APIVERSIONS, 0, 3},
    {KP_API_INITPID, 0, 4},
};

/* ApiVersionsResponse v3 body (flexible; header v0). */
static size_t apiversions_v3(uint8_t *out)
{
    size_t o = put16(out, 0);                           /* ErrorCode */
    out[o++] = (uint8_t)(KP_ARRAY_LEN(api_ranges) + 1); /* ApiKeys: N+1 */
    for (size_t i = 0; i < KP_ARRAY_LEN(api_ranges); i++) {
        o += put16(out + o, api_ranges[i][0]); /* ApiKey */
        o += put16(out + o, api_ranges[i][1]); /* MinVersion */
        o += put16(out + o, api_ranges[i][2]); /* MaxVersion */
        out[o++] = 0;                          /* TaggedFields */
    }
    o += put32(out + o, 0); /* ThrottleTimeMs */
    out[o++] = 0;           /* TaggedFields */
    return o;
}

/* ApiVersionsResponse v0 body, with error code err. */
static size_t apiversions_v0(uint8_t *out, int16_t err)
{
    size_t o = put16(out, err);                             /* ErrorCode */
    o += put32(out + o, (int32_t)KP_ARRAY_LEN(api_ranges)); /* ApiKeys */
    for (size_t i = 0; i < KP_ARRAY_LEN(api_ranges); i++) {
        o += put16(out + o, api_ranges[i][0]); /* ApiKey */
        o += put16(out + o, api_ranges[i][1]); /* MinVersion */
        o += put16(out + o, api_ranges[i][2]); /* MaxVersion */
    }
    return o;
}

/* Attaches a fresh socketpair to the broker and answers its ApiVersions:
 * the broker is UP. */
static void fx_up(void)
{
    uint8_t body[128];
    int sv[2];

    kpt_socketpair(sv);
    if (F.peer >= 0) {
        close(F.peer);
    }
    F.peer = sv[1];
    plen = 0;
    kp_broker_attach(F.b, sv[0]);
    ck_assert_int_eq(F.b->state, KP_BROKER_APIVERSIONS);
    struct reqhdr h = peer_request();
    ck_assert_int_eq(h.api_key, KP_API_APIVERSIONS);
    ck_assert_int_eq(h.version, 3);
    peer_respond(h.corr_id, body, apiversions_v3(body));
    ck_assert(
        KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, F.b->state == KP_BROKER_UP));
}

/* ---- requests and their fates ---- */

struct call {
    int answered, written, failed;
    int seq; /* when it completed, in F.seq */
    char body[64];
    size_t len;
    void (*then)(struct kp_broker *b); /* done inside the callback */
};

static void on_done(void *arg, struct kp_broker *b, struct kp_request *r,
                    enum kp_req_status st, const uint8_t *body, size_t len)
{
    struct call *c = arg;

    ck_assert_ptr_eq(b, F.b);
    ck_assert_ptr_nonnull(r);
    switch (st) {
    case KP_REQ_ANSWERED:
        c->answered++;
        c->len = len;
        len = KP_MIN(len, sizeof(c->body) - 1); /* the start is enough */
        memcpy(c->body, body, len);
        c->body[len] = '\0';
        break;
    case KP_REQ_WRITTEN:
        c->written++;
        ck_assert_ptr_null(body);
        break;
    case KP_REQ_FAILED:
        c->failed++;
        ck_assert_ptr_null(body);
        break;
    }
    c->seq = ++F.seq;
    if (c->then) {
        c->then(b);
    }
}

/* Sends a Metadata v1 request for topic "t"; returns its correlation id. */
static int32_t send_md(struct call *c, bool no_response)
{
    static const char *const topics[] = {"t"};
    struct kp_request *r = kp_broker_request_start(F.b, KP_API_METADATA, 1);
    int32_t corr = r->corr_id;

    kp_proto_enc_metadata(&r->req, 1, corr, "kp", topics, 1, false);
    r->no_response = no_response;
    kp_broker_request_send(F.b, r, on_done, c);
    return corr;
}

static void expect_fates(const struct call *c, int answered, int written,
                         int failed)
{
    ck_assert_int_eq(c->answered, answered);
    ck_assert_int_eq(c->written, written);
    ck_assert_int_eq(c->failed, failed);
}

/* ---- handshake ---- */

START_TEST(test_handshake_up)
{
    fx_start(30000);
    ck_assert_int_eq(F.b->state, KP_BROKER_INIT);
    fx_up();
    ck_assert_int_eq(F.state_cnt, 2);
    ck_assert_int_eq(F.states[0], KP_BROKER_APIVERSIONS);
    ck_assert_int_eq(F.states[1], KP_BROKER_UP);
    ck_assert_int_eq(kp_broker_version(F.b, KP_API_PRODUCE), 9);
    ck_assert_int_eq(kp_broker_version(F.b, KP_API_METADATA), 12);
    ck_assert_int_eq(kp_broker_version(F.b, KP_API_INITPID), 4);
    ck_assert(kp_broker_writable(F.b));
    ck_assert_uint_eq(F.b->inflight, 0);
    ck_assert(!ev_is_active(&F.b->timer)); /* nothing awaits an answer */
    fx_stop();
}
END_TEST

/* A broker that does not know v3 answers UNSUPPORTED_VERSION: v0 next. */
START_TEST(test_handshake_v0_fallback)
{
    uint8_t body[128];
    int sv[2];

    fx_start(30000);
    kpt_socketpair(sv);
    F.peer = sv[1];
    kp_broker_attach(F.b, sv[0]);
    struct reqhdr h = peer_request();
    ck_assert_int_eq(h.version, 3);
    peer_respond(h.corr_id, body,
                 apiversions_v0(body, KP_KERR_UNSUPPORTED_VERSION));
    h = peer_request();
    ck_assert_int_eq(h.api_key, KP_API_APIVERSIONS);
    ck_assert_int_eq(h.version, 0);
    peer_respond(h.corr_id, body, apiversions_v0(body, 0));
    ck_assert(
        KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, F.b->state == KP_BROKER_UP));
    ck_assert_int_eq(kp_broker_version(F.b, KP_API_PRODUCE), 9);
    fx_stop();
}
END_TEST

/* A broker that lacks Produce v3+ is too old: closed, and backing off. */
START_TEST(test_handshake_too_old)
{
    uint8_t body[16];
    int sv[2];

    fx_start(30000);
    kpt_socketpair(sv);
    F.peer = sv[1];
    kp_broker_attach(F.b, sv[0]);
    struct reqhdr h = peer_request();
    size_t o = put16(body, 0);
    body[o++] = 2; /* one ApiKey: Produce v0-v2 */
    o += put16(body + o, KP_API_PRODUCE);
    o += put16(body + o, 0);
    o += put16(body + o, 2);
    body[o++] = 0;
    o += put32(body + o, 0);
    body[o++] = 0;
    peer_respond(h.corr_id, body, o);
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64,
                            F.b->state == KP_BROKER_BACKOFF));
    ck_assert_ptr_nonnull(strstr(F.b->last_error, "broker too old"));
    ck_assert(peer_sees_eof());
    fx_stop();
}
END_TEST

/* ---- pipelining and correlation ---- */

START_TEST(test_pipelining)
{
    struct call c[3] = {{0}};
    int32_t corr[3];

    fx_start(30000);
    fx_up();
    for (int i = 0; i < 3; i++) {
        corr[i] = send_md(&c[i], false);
    }
    ck_assert_uint_eq(F.b->inflight, 3);
    /* all three were written without waiting for an answer: they are in
     * the socket before the loop ever ran */
    ck_assert(peer_read(F.peer));
    for (int i = 0; i < 3; i++) {
        struct reqhdr h;
        ck_assert(peer_take(&h));
        ck_assert_int_eq(h.api_key, KP_API_METADATA);
        ck_assert_int_eq(h.version, 1);
        ck_assert_int_eq(h.corr_id, corr[i]);
        ck_assert(i == 0 || corr[i] == corr[i - 1] + 1);
    }
    ck_assert_uint_eq(plen, 0);
    ck_assert(ev_is_active(&F.b->timer)); /* the head's deadline */

    /* answered in order, one at a time */
    int rooms = F.rooms;
    peer_respond_str(corr[0], "first");
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c[0].answered));
    expect_fates(&c[1], 0, 0, 0);
    peer_respond_str(corr[1], "second");
    peer_respond_str(corr[2], "third");
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c[2].answered));
    static const char *const want[] = {"first", "second", "third"};
    for (int i = 0; i < 3; i++) {
        expect_fates(&c[i], 1, 0, 0);
        ck_assert_str_eq(c[i].body, want[i]);
        ck_assert_int_eq(c[i].seq, i + 1);
    }
    ck_assert_uint_eq(F.b->inflight, 0);
    ck_assert_int_gt(F.rooms, rooms);
    ck_assert(!ev_is_active(&F.b->timer));
    ck_assert_int_eq(F.b->state, KP_BROKER_UP);
    fx_stop();
}
END_TEST

/* Several responses in one read are all handed over. */
START_TEST(test_responses_in_one_read)
{
    struct call c[4] = {{0}};
    int32_t corr[4];
    uint8_t out[256];
    size_t o = 0;

    fx_start(30000);
    fx_up();
    for (int i = 0; i < 4; i++) {
        corr[i] = send_md(&c[i], false);
        char body[16];
        snprintf(body, sizeof(body), "r%d", i);
        o += frame(out + o, corr[i], body, strlen(body));
    }
    kpt_write(F.peer, out, o);
    ev_run(F.loop, EVRUN_NOWAIT);
    for (int i = 0; i < 4; i++) {
        char body[16];
        snprintf(body, sizeof(body), "r%d", i);
        expect_fates(&c[i], 1, 0, 0);
        ck_assert_str_eq(c[i].body, body);
    }
    fx_stop();
}
END_TEST

START_TEST(test_wrong_correlation_closes)
{
    struct call c[3] = {{0}};
    int32_t corr[3];

    fx_start(30000);
    fx_up();
    for (int i = 0; i < 3; i++) {
        corr[i] = send_md(&c[i], false);
    }
    peer_respond_str(corr[1], "out of order");
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c[2].failed));
    for (int i = 0; i < 3; i++) {
        expect_fates(&c[i], 0, 0, 1);
        ck_assert_int_eq(c[i].seq, i + 1); /* back in their order */
    }
    ck_assert_int_eq(F.b->state, KP_BROKER_BACKOFF);
    ck_assert(fx_last_state_is(KP_BROKER_BACKOFF));
    ck_assert(ev_is_active(&F.b->timer)); /* a reconnect is scheduled */
    ck_assert_int_eq(F.b->fd, -1);
    ck_assert_uint_eq(F.b->inflight, 0);
    ck_assert_ptr_nonnull(strstr(F.b->last_error, "unexpected response"));
    ck_assert(peer_sees_eof());
    /* nothing more happens to them, whatever the loop does next */
    ev_run(F.loop, EVRUN_NOWAIT);
    for (int i = 0; i < 3; i++) {
        expect_fates(&c[i], 0, 0, 1);
    }
    fx_stop();
}
END_TEST

/* A response nobody asked for. */
START_TEST(test_unsolicited_response_closes)
{
    fx_start(30000);
    fx_up();
    peer_respond_str(42, "hello?");
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64,
                            F.b->state == KP_BROKER_BACKOFF));
    fx_stop();
}
END_TEST

/* ---- framing of responses ---- */

START_TEST(test_response_split_every_byte)
{
    static const char body[] = "0123456789abcdef";
    uint8_t out[64];

    fx_start(30000);
    fx_up();
    size_t len = frame(out, 0, body, strlen(body));
    for (size_t at = 1; at < len; at++) {
        struct call c = {0};
        int32_t corr = send_md(&c, false);
        struct reqhdr h = peer_request();
        ck_assert_int_eq(h.corr_id, corr);
        put32(out + 4, corr);
        kpt_write(F.peer, out, at);
        for (int i = 0; i < 3; i++) {
            ev_run(F.loop, EVRUN_NOWAIT);
        }
        expect_fates(&c, 0, 0, 0);
        kpt_write(F.peer, out + at, len - at);
        ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c.answered));
        expect_fates(&c, 1, 0, 0);
        ck_assert_str_eq(c.body, body);
    }

    /* and one byte per wake-up */
    struct call c = {0};
    put32(out + 4, send_md(&c, false));
    peer_request();
    for (size_t i = 0; i < len; i++) {
        expect_fates(&c, 0, 0, 0);
        kpt_write(F.peer, out + i, 1);
        ev_run(F.loop, EVRUN_NOWAIT);
    }
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c.answered));
    ck_assert_str_eq(c.body, body);
    ck_assert_int_eq(F.b->state, KP_BROKER_UP);
    fx_stop();
}
END_TEST

/* A size no Kafka broker sends closes the connection: an HTTP server
 * ("HTTP" is 1.2 GB), a size too small for a correlation id, a negative
 * one. */
START_TEST(test_invalid_frame_size)
{
    static const char *const starts[] = {"HTTP/1.1 400 Bad Request\r\n",
                                         "\x00\x00\x00\x03xyz",
                                         "\xff\xff\xff\xf0"};
    static const size_t lens[] = {26, 7, 4};

    for (int i = 0; i < 3; i++) {
        struct call c = {0};
        fx_start(30000);
        fx_up();
        send_md(&c, false);
        peer_request();
        kpt_write(F.peer, starts[i], lens[i]);
        ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c.failed));
        expect_fates(&c, 0, 0, 1);
        ck_assert_int_eq(F.b->state, KP_BROKER_BACKOFF);
        ck_assert_ptr_nonnull(strstr(F.b->last_error, "invalid response size"));
        ck_assert(peer_sees_eof());
        fx_stop();
    }
}
END_TEST

/* The broker closes the connection: every pending request fails. */
START_TEST(test_peer_closes)
{
    struct call c[2] = {{0}};

    fx_start(30000);
    fx_up();
    send_md(&c[0], false);
    send_md(&c[1], false);
    close(F.peer);
    F.peer = -1;
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c[1].failed));
    expect_fates(&c[0], 0, 0, 1);
    expect_fates(&c[1], 0, 0, 1);
    ck_assert_int_eq(F.b->state, KP_BROKER_BACKOFF);
    fx_stop();
}
END_TEST

/* ---- writing ---- */

/* acks=0 gets no response: done once written, and it takes no place in
 * the correlation order. */
START_TEST(test_no_response_written)
{
    struct call c[3] = {{0}};
    int32_t corr[3];

    fx_start(30000);
    fx_up();
    corr[0] = send_md(&c[0], false);
    corr[1] = send_md(&c[1], true);
    expect_fates(&c[1], 0, 1, 0); /* written at once: the socket had room */
    corr[2] = send_md(&c[2], false);
    ck_assert_uint_eq(F.b->inflight, 2);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(peer_request().corr_id, corr[i]);
    }
    peer_respond_str(corr[0], "a");
    peer_respond_str(corr[2], "c");
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c[2].answered));
    expect_fates(&c[0], 1, 0, 0);
    expect_fates(&c[1], 0, 1, 0);
    expect_fates(&c[2], 1, 0, 0);
    ck_assert_int_eq(F.b->state, KP_BROKER_UP);
    fx_stop();
}
END_TEST

/* A request larger than the socket takes: the rest goes when it is
 * writable again (the write watcher is armed only then), and requests
 * queued behind it follow in order. */
START_TEST(test_short_write)
{
    static uint8_t payload[3 << 20];
    struct call c[3] = {{0}};
    int32_t corr[3];

    fx_start(30000);
    fx_up();
    ck_assert(!ev_is_active(&F.b->wio));
    struct kp_request *r = kp_broker_request_start(F.b, KP_API_METADATA, 1);
    corr[0] = r->corr_id;
    kp_proto_req_begin(&r->req, KP_API_METADATA, 1, corr[0], "kp");
    memset(payload, 'p', sizeof(payload));
    kp_req_splice(&r->req, payload, sizeof(payload));
    kp_req_finish(&r->req);
    kp_broker_request_send(F.b, r, on_done, &c[0]);
    ck_assert(ev_is_active(&F.b->wio));
    ck_assert(F.b->write_head != NULL);
    corr[1] = send_md(&c[1], true); /* waits behind it */
    corr[2] = send_md(&c[2], false);
    expect_fates(&c[1], 0, 0, 0);

    struct reqhdr h = peer_request();
    ck_assert_int_eq(h.corr_id, corr[0]);
    ck_assert_uint_gt(h.size, sizeof(payload));
    ck_assert_int_eq(peer_request().corr_id, corr[1]);
    ck_assert_int_eq(peer_request().corr_id, corr[2]);
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c[1].written));
    ck_assert_ptr_null(F.b->write_head);
    ck_assert(!ev_is_active(&F.b->wio));
    peer_respond_str(corr[0], "big");
    peer_respond_str(corr[2], "small");
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c[2].answered));
    ck_assert_str_eq(c[0].body, "big");
    fx_stop();
}
END_TEST

/* A throttle that starts while a short write has the write watcher armed:
 * the watcher is stopped (the throttle timer resumes writing), or the
 * writable socket would spin the loop for the whole throttle time. */
START_TEST(test_throttle_during_short_write_does_not_spin)
{
    static uint8_t payload[3 << 20];
    struct call c = {0};

    fx_start(30000);
    fx_up();
    struct kp_request *r = kp_broker_request_start(F.b, KP_API_METADATA, 1);
    kp_proto_req_begin(&r->req, KP_API_METADATA, 1, r->corr_id, "kp");
    memset(payload, 'p', sizeof(payload));
    kp_req_splice(&r->req, payload, sizeof(payload));
    kp_req_finish(&r->req);
    kp_broker_request_send(F.b, r, on_done, &c);
    ck_assert(ev_is_active(&F.b->wio));
    kp_broker_throttle(F.b, 300);
    ck_assert(peer_read(F.peer)); /* the socket is writable again */
    int iterations = 0;
    while (iterations < 1000 && ev_run(F.loop, EVRUN_NOWAIT)) {
        iterations++;
        if (!ev_is_active(&F.b->wio)) {
            break;
        }
    }
    ck_assert_msg(!ev_is_active(&F.b->wio),
                  "write watcher armed while throttled");
    ck_assert_ptr_nonnull(F.b->write_head); /* still held back */
    fx_stop();
}
END_TEST

/* KIP-219: nothing is written until the throttle time has passed. */
START_TEST(test_throttle_holds_requests)
{
    struct call c = {0};

    fx_start(30000);
    fx_up();
    kp_broker_throttle(F.b, 5);
    ck_assert(!kp_broker_writable(F.b));
    int32_t corr = send_md(&c, false);
    ck_assert(peer_read(F.peer));
    ck_assert_uint_eq(plen, 0);
    int rooms = F.rooms;
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_ONCE, 1000, F.rooms > rooms));
    ck_assert(kp_broker_writable(F.b));
    ck_assert_int_eq(peer_request().corr_id, corr);
    peer_respond_str(corr, "late");
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c.answered));
    fx_stop();
}
END_TEST

/* ---- timeouts ---- */

START_TEST(test_request_timeout)
{
    struct call c[2] = {{0}};

    fx_start(20);
    fx_up();
    send_md(&c[0], false);
    send_md(&c[1], false);
    ck_assert(ev_is_active(&F.b->timer));
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_ONCE, 1000, c[1].failed));
    expect_fates(&c[0], 0, 0, 1);
    expect_fates(&c[1], 0, 0, 1);
    ck_assert_int_eq(F.b->state, KP_BROKER_BACKOFF);
    ck_assert_str_eq(F.b->last_error, "request timed out");
    ck_assert(peer_sees_eof());
    fx_stop();
}
END_TEST

START_TEST(test_apiversions_timeout)
{
    int sv[2];

    fx_start(20);
    kpt_socketpair(sv);
    F.peer = sv[1];
    kp_broker_attach(F.b, sv[0]);
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_ONCE, 1000,
                            F.b->state == KP_BROKER_BACKOFF));
    ck_assert_str_eq(F.b->last_error, "no answer to ApiVersions");
    fx_stop();
}
END_TEST

/* ---- a connection closed from inside its own read callback ---- */

/* A TCP listener on 127.0.0.1 for the broker's next connection. */
static int listen_local(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static int moved_port;
static int accepted;

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    accepted = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    ck_assert_int_ge(accepted, 0);
}

static void then_move(struct kp_broker *b)
{
    kp_broker_set_addr(b, "127.0.0.1", moved_port);
}

static void then_close(struct kp_broker *b)
{
    kp_broker_close(b, "closed by its owner", false);
}

static void then_close_backoff(struct kp_broker *b)
{
    kp_broker_close(b, "closed by its owner", true);
}

/*
 * Two responses arrive in one read; the first one's callback closes the
 * very connection being read (how). The second must not be processed for
 * the old connection: its request fails exactly once, nothing reads the
 * freed buffer (ASan), and the read loop stops.
 */
static void close_mid_callback(void (*how)(struct kp_broker *b))
{
    struct call c[3] = {{0}};
    int32_t corr[3];
    uint8_t out[128];

    c[0].then = how;
    for (int i = 0; i < 3; i++) {
        corr[i] = send_md(&c[i], false);
    }
    size_t o = frame(out, corr[0], "one", 3);
    o += frame(out + o, corr[1], "two", 3);
    kpt_write(F.peer, out, o);
    uint64_t gen = F.b->conn_gen;
    int rooms = F.rooms;

    ev_run(F.loop, EVRUN_NOWAIT);
    expect_fates(&c[0], 1, 0, 0);
    ck_assert_str_eq(c[0].body, "one");
    expect_fates(&c[1], 0, 0, 1);
    expect_fates(&c[2], 0, 0, 1);
    /* failed inside the first one's callback, in order */
    ck_assert_int_eq(c[1].seq, c[0].seq + 1);
    ck_assert_int_eq(c[2].seq, c[0].seq + 2);
    ck_assert_uint_eq(F.b->conn_gen, gen + 1);
    ck_assert_uint_eq(F.b->rbuf.len, 0);
    ck_assert_int_eq(F.rooms, rooms); /* the read stopped there */
    ck_assert(peer_sees_eof());
    for (int i = 0; i < 5; i++) {
        ev_run(F.loop, EVRUN_NOWAIT);
    }
    expect_fates(&c[1], 0, 0, 1);
}

START_TEST(test_close_mid_callback_set_addr)
{
    int lfd = listen_local(&moved_port);

    fx_start(30000);
    fx_up();
    close_mid_callback(then_move);
    ck_assert_int_eq(F.b->port, moved_port);

    /* the new connection starts clean: its handshake goes through (the
     * loop blocks on the listener; the broker's connect timer is armed) */
    ev_io lw;
    accepted = -1;
    ev_io_init(&lw, on_accept, lfd, EV_READ);
    ev_io_start(F.loop, &lw);
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_ONCE, 100, accepted >= 0));
    ev_io_stop(F.loop, &lw);
    close(F.peer);
    F.peer = accepted;
    plen = 0;
    struct reqhdr h = peer_request();
    ck_assert_int_eq(h.api_key, KP_API_APIVERSIONS);
    uint8_t body[128];
    peer_respond(h.corr_id, body, apiversions_v3(body));
    ck_assert(
        KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 1000, F.b->state == KP_BROKER_UP));
    struct call c = {0};
    int32_t corr = send_md(&c, false);
    ck_assert_int_eq(peer_request().corr_id, corr);
    peer_respond_str(corr, "new");
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c.answered));
    ck_assert_str_eq(c.body, "new");
    fx_stop();
    close(lfd);
}
END_TEST

START_TEST(test_close_mid_callback_close)
{
    fx_start(30000);
    fx_up();
    close_mid_callback(then_close);
    ck_assert_int_eq(F.b->state, KP_BROKER_INIT);
    ck_assert(!ev_is_active(&F.b->timer));
    /* attached again, the old second response is nowhere */
    fx_up();
    struct call c = {0};
    int32_t corr = send_md(&c, false);
    ck_assert_int_eq(peer_request().corr_id, corr);
    peer_respond_str(corr, "again");
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_NOWAIT, 64, c.answered));
    ck_assert_str_eq(c.body, "again");
    fx_stop();
}
END_TEST

START_TEST(test_close_mid_callback_backoff)
{
    fx_start(30000);
    fx_up();
    close_mid_callback(then_close_backoff);
    ck_assert_int_eq(F.b->state, KP_BROKER_BACKOFF);
    ck_assert(ev_is_active(&F.b->timer));
    fx_stop();
}
END_TEST

/* The read buffer grew large for a big response, then a callback closes:
 * the buffer is freed under the read loop (what ASan would catch). */
START_TEST(test_close_mid_callback_big_buffer)
{
    static uint8_t out[600 * 1024];
    struct call c[2] = {{0}};
    int32_t corr[2];

    fx_start(30000);
    fx_up();
    c[0].then = then_close;
    corr[0] = send_md(&c[0], false);
    corr[1] = send_md(&c[1], false);
    /* a 300 KB body the callback copies the start of: bigger than one
     * read, so the buffer grows past what a close keeps */
    size_t big = 300 * 1024;
    size_t o = put32(out, (int32_t)(4 + big));
    o += put32(out + o, corr[0]);
    memset(out + o, 'b', big);
    memcpy(out + o, "big", 3);
    out[o + 3] = '\0';
    o += big;
    o += frame(out + o, corr[1], "two", 3);
    int sndbuf = 4 << 20;
    setsockopt(F.peer, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    size_t sent = 0;
    for (int i = 0; i < 10000 && !c[0].answered; i++) {
        ssize_t n = send(F.peer, out + sent, o - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
        }
        ev_run(F.loop, EVRUN_NOWAIT);
    }
    expect_fates(&c[0], 1, 0, 0);
    expect_fates(&c[1], 0, 0, 1);
    ck_assert_int_eq(F.b->state, KP_BROKER_INIT);
    fx_stop();
}
END_TEST

/* ---- connects that fail before they start ---- */

/* EMFILE: socket() fails (after the name is resolved, on the loop). The
 * broker backs off with its timer armed instead of staying in INIT with
 * nothing to wake it. */
START_TEST(test_connect_emfile_backs_off)
{
    struct rlimit old, low;

    fx_start(30000);
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    int probe = dup(2);
    ck_assert_int_ge(probe, 0);
    close(probe);
    low = old;
    low.rlim_cur = (rlim_t)probe; /* every new fd is past the limit */
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    kp_broker_connect(F.b);
    bool backoff = KPT_RUN_UNTIL(F.loop, EVRUN_ONCE, 100,
                                 F.b->state == KP_BROKER_BACKOFF);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);

    ck_assert(backoff);
    ck_assert_int_eq(F.state_cnt, 2);
    ck_assert_int_eq(F.states[0], KP_BROKER_RESOLVING);
    ck_assert_int_eq(F.states[1], KP_BROKER_BACKOFF);
    ck_assert(ev_is_active(&F.b->timer));
    ck_assert_int_eq(F.b->failures, 1);
    ck_assert_int_eq(F.b->fd, -1);
    ck_assert_int_eq(F.b->fault, KP_BFAULT_CONNECT);
    ck_assert_msg(strstr(F.b->last_error, "socket: Too many open files"),
                  "last_error: %s", F.b->last_error);
    fx_stop();
}
END_TEST

/* A refused connect (nothing listens) ends in BACKOFF too. */
START_TEST(test_connect_refused_backs_off)
{
    int port;
    int lfd = listen_local(&port);
    close(lfd); /* the port is free again: connects are refused */

    fx_start(30000);
    kp_broker_set_addr(F.b, "127.0.0.1", port);
    kp_broker_connect(F.b);
    ck_assert(KPT_RUN_UNTIL(F.loop, EVRUN_ONCE, 100,
                            F.b->state == KP_BROKER_BACKOFF));
    ck_assert(ev_is_active(&F.b->timer));
    ck_assert_ptr_nonnull(strstr(F.b->last_error, "connect"));
    fx_stop();
}
END_TEST

static Suite *broker_suite(void)
{
    Suite *s = suite_create("broker");
    TCase *tc = tcase_create("handshake");
    tcase_add_test(tc, test_handshake_up);
    tcase_add_test(tc, test_handshake_v0_fallback);
    tcase_add_test(tc, test_handshake_too_old);
    suite_add_tcase(s, tc);

    tc = tcase_create("requests");
    tcase_add_test(tc, test_pipelining);
    tcase_add_test(tc, test_responses_in_one_read);
    tcase_add_test(tc, test_wrong_correlation_closes);
    tcase_add_test(tc, test_unsolicited_response_closes);
    tcase_add_test(tc, test_response_split_every_byte);
    tcase_add_test(tc, test_invalid_frame_size);
    tcase_add_test(tc, test_peer_closes);
    tcase_add_test(tc, test_no_response_written);
    tcase_add_test(tc, test_short_write);
    tcase_add_test(tc, test_throttle_holds_requests);
    tcase_add_test(tc, test_throttle_during_short_write_does_not_spin);
    tcase_add_test(tc, test_request_timeout);
    tcase_add_test(tc, test_apiversions_timeout);
    suite_add_tcase(s, tc);

    tc = tcase_create("close");
    tcase_add_test(tc, test_close_mid_callback_set_addr);
    tcase_add_test(tc, test_close_mid_callback_close);
    tcase_add_test(tc, test_close_mid_callback_backoff);
    tcase_add_test(tc, test_close_mid_callback_big_buffer);
    tcase_add_test(tc, test_connect_emfile_backs_off);
    tcase_add_test(tc, test_connect_refused_backs_off);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    kp_log_set_level(KP_LOG_ERROR);
    SRunner *sr = srunner_create(broker_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
