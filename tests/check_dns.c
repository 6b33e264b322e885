/*
 * check_dns.c - kp_dns against DNS servers that live in the test itself, on
 * the same loop: a silent one (a bound UDP socket that never answers) and a
 * small answering one (A/AAAA from a fixed zone, NXDOMAIN, NODATA,
 * SERVFAIL, or answers held until the test lets them go).
 *
 * Nothing here touches the machine's DNS: every resolver is pointed at a
 * test server (servers override), reads a resolv.conf written by the test
 * (ndots:1, no search list unless a test writes one; LOCALDOMAIN and
 * RES_OPTIONS, which would override it, are unset) and uses lookups "fb"
 * whatever nsswitch.conf says. Waits are on the loop, never sleeps.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_dns.h"
#include "kp_log.h"

/* ---- a DNS server on the test's loop ---------------------------------- */

#define T_A 1
#define T_AAAA 28
#define RR_EMPTY 0     /* the name exists, with no A/AAAA: NODATA */
#define RR_SERVFAIL -1 /* the server fails for this name */

struct rr {
    const char *name;
    int type;
    const char *addr;
};

static const struct rr zone[] = {
    {"two.kp.test", T_A, "127.0.0.2"},  {"two.kp.test", T_A, "127.0.0.1"},
    {"dual.kp.test", T_A, "127.0.0.1"}, {"dual.kp.test", T_AAAA, "::1"},
    {"nodata.kp.test", RR_EMPTY, NULL}, {"fail.kp.test", RR_SERVFAIL, NULL},
    {"app.kp.test", T_A, "127.0.0.9"},
};

#define HELD_MAX 64

struct held {
    uint8_t pkt[512];
    size_t len;
    struct sockaddr_storage from;
    socklen_t fromlen;
};

struct fake_dns {
    int fd;
    int port;
    bool answer; /* false: silent */
    bool hold;   /* keep the queries until fake_release */
    int queries;
    struct held held[HELD_MAX];
    int nheld;
    ev_io w;
};

/* Appends the answer to query q (len n) into out; returns its length, 0 to
 * drop the packet. */
static size_t fake_answer(const uint8_t *q, size_t n, uint8_t *out)
{
    char name[256];
    size_t p = 12, nl = 0, o, i;
    int qtype, rcode = 3, an = 0;

    if (n < 17 || q[4] != 0 || q[5] != 1) {
        return 0;
    }
    while (p < n && q[p] != 0) {
        size_t l = q[p++];
        if (l > 63 || p + l >= n || nl + l + 1 >= sizeof(name)) {
            return 0;
        }
        if (nl) {
            name[nl++] = '.';
        }
        memcpy(name + nl, q + p, l);
        nl += l;
        p += l;
    }
    name[nl] = '\0';
    if (p + 5 > n) {
        return 0;
    }
    qtype = q[p + 1] << 8 | q[p + 2];
    p += 5; /* end of the question */
    memcpy(out, q, p);
    o = p;
    for (i = 0; i < sizeof(zone) / sizeof(zone[0]); i++) {
        const struct rr *r = &zone[i];
        if (strcasecmp(r->name, name) != 0) {
            continue;
        }
        rcode = r->type == RR_SERVFAIL ? 2 : rcode == 2 ? 2 : 0;
        if (r->type != qtype) {
            continue;
        }
        int alen = r->type == T_A ? 4 : 16;
        uint8_t rr[12] = {0xc0, 0x0c, 0, (uint8_t)r->type, 0, 1, 0, 0,
                          0,    60,   0, (uint8_t)alen};
        memcpy(out + o, rr, sizeof(rr));
        inet_pton(r->type == T_A ? AF_INET : AF_INET6, r->addr,
                  out + o + sizeof(rr));
        o += sizeof(rr) + (size_t)alen;
        an++;
    }
    out[2] = 0x80 | (q[2] & 0x01);  /* QR, RD as asked */
    out[3] = 0x80 | (uint8_t)rcode; /* RA */
    out[6] = 0;
    out[7] = (uint8_t)an;
    memset(out + 8, 0, 4); /* no authority, no additional */
    return o;
}

static void fake_reply(struct fake_dns *f, const struct held *h)
{
    uint8_t out[1024];
    size_t len = fake_answer(h->pkt, h->len, out);
    if (len) {
        sendto(f->fd, out, len, 0, (const struct sockaddr *)&h->from,
               h->fromlen);
    }
}

static void fake_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct fake_dns *f = w->data;
    struct held h;
    ssize_t n;

    (void)loop;
    (void)revents;
    for (;;) {
        h.fromlen = sizeof(h.from);
        n = recvfrom(f->fd, h.pkt, sizeof(h.pkt), 0, (struct sockaddr *)&h.from,
                     &h.fromlen);
        if (n < 0) {
            return;
        }
        h.len = (size_t)n;
        f->queries++;
        if (!f->answer) {
            continue;
        }
        if (f->hold) {
            ck_assert_int_lt(f->nheld, HELD_MAX);
            f->held[f->nheld++] = h;
            continue;
        }
        fake_reply(f, &h);
    }
}

/* Answers every held query, and the next ones at once. */
static void fake_release(struct fake_dns *f)
{
    int i;
    f->hold = false;
    for (i = 0; i < f->nheld; i++) {
        fake_reply(f, &f->held[i]);
    }
    f->nheld = 0;
}

static void fake_start(struct fake_dns *f, struct ev_loop *loop, bool answer)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);

    memset(f, 0, sizeof(*f));
    f->answer = answer;
    f->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(f->fd, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(f->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(getsockname(f->fd, (struct sockaddr *)&sin, &len), 0);
    f->port = ntohs(sin.sin_port);
    ev_io_init(&f->w, fake_on_read, f->fd, EV_READ);
    f->w.data = f;
    ev_io_start(loop, &f->w);
}

/* Counts what is still unread, then closes. */
static void fake_stop(struct fake_dns *f, struct ev_loop *loop)
{
    uint8_t buf[512];
    ev_io_stop(loop, &f->w);
    while (recv(f->fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0) {
        f->queries++;
    }
    close(f->fd);
}

/* ---- the resolver under test ------------------------------------------ */

static char resolv_conf[64];

static void write_resolv_conf(const char *text)
{
    char tmp[80];
    snprintf(tmp, sizeof(tmp), "%s.new", resolv_conf);
    FILE *fp = fopen(tmp, "w");
    ck_assert_ptr_nonnull(fp);
    fputs(text, fp);
    ck_assert_int_eq(fclose(fp), 0);
    /* a new inode: seen as a change even within one mtime tick */
    ck_assert_int_eq(rename(tmp, resolv_conf), 0);
}

static struct kp_dns *mk_dns(struct ev_loop *loop, const struct fake_dns *f,
                             int timeout_ms, int tries)
{
    char servers[64];
    int fd;

    snprintf(resolv_conf, sizeof(resolv_conf), "/tmp/check_dns.XXXXXX");
    fd = mkstemp(resolv_conf);
    ck_assert_int_ge(fd, 0);
    close(fd);
    write_resolv_conf("options ndots:1\n");
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", f->port);
    struct kp_dns_opts o = {.timeout_ms = timeout_ms,
                            .tries = tries,
                            .servers = servers,
                            .resolv_conf = resolv_conf,
                            .lookups = "fb"};
    struct kp_dns *d = kp_dns_create(loop, &o);
    ck_assert_ptr_nonnull(d);
    return d;
}

struct got {
    int calls;
    int order; /* value of `seq` when called */
    enum kp_dns_status status;
    struct kp_dns_addrs *addrs; /* owned: taken from the result */
    char err[400];
    int64_t elapsed_ms;
    void (*then)(struct got *g); /* run inside the callback */
    void *ctx;
};

static int seq;

static void on_result(struct kp_dns_result *r, void *arg)
{
    struct got *g = arg;

    g->calls++;
    g->order = seq++;
    g->status = r->status;
    g->elapsed_ms = r->elapsed_ms;
    if (r->status == KP_DNS_OK) {
        ck_assert_ptr_nonnull(r->addrs);
        ck_assert_ptr_null(r->err);
        g->addrs = r->addrs;
        r->addrs = NULL; /* taken */
    } else {
        ck_assert_ptr_null(r->addrs);
        ck_assert_ptr_nonnull(r->err);
        snprintf(g->err, sizeof(g->err), "%s", r->err);
    }
    if (g->then) {
        g->then(g);
    }
}

static bool watchdog_fired;

static void on_watchdog(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    watchdog_fired = true;
    ev_break(loop, EVBREAK_ONE);
}

/* Runs the loop until *calls reaches want (or 20 s, a failure). */
static void run_until(struct ev_loop *loop, const int *calls, int want)
{
    ev_timer wd;

    watchdog_fired = false;
    ev_timer_init(&wd, on_watchdog, 20., 0.);
    ev_timer_start(loop, &wd);
    while (*calls < want && !watchdog_fired) {
        ev_run(loop, EVRUN_ONCE);
    }
    ev_timer_stop(loop, &wd);
    ck_assert_msg(*calls >= want, "gave up waiting for a callback");
}

static const char *fmt(const struct kp_dns_addrs *l, uint32_t i)
{
    static char buf[4][KP_DNS_ADDR_STRLEN];
    ck_assert_uint_lt(i, l->n);
    return kp_dns_addr_format(&l->a[i], buf[i % 4], sizeof(buf[0]));
}

static void finish(struct ev_loop *loop, struct kp_dns *d, struct fake_dns *f)
{
    kp_dns_destroy(d);
    fake_stop(f, loop);
    ev_loop_destroy(loop);
    unlink(resolv_conf);
}

/* ---- a silent server: a timeout, with the loop alive all along -------- */

struct ticker {
    ev_timer w;
    int64_t last_us;
    int64_t max_gap_us;
    int ticks;
};

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ticker *t = w->data;
    int64_t now = kp_mono_us();

    (void)loop;
    (void)revents;
    t->max_gap_us = KP_MAX(t->max_gap_us, now - t->last_us);
    t->last_us = now;
    t->ticks++;
}

START_TEST(test_silent_server_times_out_loop_runs)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct fake_dns f;
    struct got g = {0};
    struct ticker t = {0};
    struct kp_dns_stats st;

    fake_start(&f, loop, false);
    struct kp_dns *d = mk_dns(loop, &f, 600, 2);
    ev_timer_init(&t.w, on_tick, 0.01, 0.01);
    t.w.data = &t;
    t.last_us = kp_mono_us();
    ev_timer_start(loop, &t.w);

    kp_dns_resolve(d, "silent.kp.test", 9092, on_result, &g);
    ck_assert_int_eq(g.calls, 0);
    run_until(loop, &g.calls, 1);
    ev_timer_stop(loop, &t.w);

    ck_assert_int_eq(g.status, KP_DNS_TIMEOUT);
    ck_assert_msg(strncmp(g.err, "DNS timeout after ", 18) == 0, "%s", g.err);
    ck_assert_ptr_nonnull(strstr(g.err, "silent.kp.test"));
    ck_assert_int_ge(g.elapsed_ms, 500);
    ck_assert_int_lt(g.elapsed_ms, 5000);
    /* the failure mode is a loop blocked for the whole 5-10 s of a
     * getaddrinfo; 200 ms leaves room for a busy machine */
    ck_assert_int_ge(t.ticks, 5);
    ck_assert_msg(t.max_gap_us < 200000, "loop blocked %lld us",
                  (long long)t.max_gap_us);
    ck_assert_int_ge(f.queries, 1); /* it did ask the silent server */
    kp_dns_get_stats(d, &st);
    ck_assert_uint_eq(st.timeout, 1);
    ck_assert_uint_eq(st.pending, 0); /* c-ares' part was dropped */
    ck_assert_uint_eq(st.sockets, 0);
    finish(loop, d, &f);
}
END_TEST

/* ---- answers ----------------------------------------------------------- */

static void resolve_one(const char *host, int port, struct got *g,
                        struct fake_dns *f, struct ev_loop **loopp,
                        struct kp_dns **dp)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    fake_start(f, loop, true);
    struct kp_dns *d = mk_dns(loop, f, 3000, 2);
    kp_dns_resolve(d, host, port, on_result, g);
    ck_assert_int_eq(g->calls, 0); /* never from inside kp_dns_resolve */
    run_until(loop, &g->calls, 1);
    ck_assert_int_eq(g->calls, 1);
    *loopp = loop;
    *dp = d;
}

START_TEST(test_two_a_records_in_answer_order)
{
    struct ev_loop *loop;
    struct kp_dns *d;
    struct fake_dns f;
    struct got g = {0};

    resolve_one("two.kp.test", 9092, &g, &f, &loop, &d);
    ck_assert_msg(g.status == KP_DNS_OK, "%s", g.err);
    ck_assert_uint_eq(g.addrs->n, 2);
    ck_assert_str_eq(fmt(g.addrs, 0), "127.0.0.2:9092");
    ck_assert_str_eq(fmt(g.addrs, 1), "127.0.0.1:9092");
    ck_assert_int_ge(f.queries, 1);
    kp_dns_addrs_free(g.addrs);
    finish(loop, d, &f);
}
END_TEST

START_TEST(test_a_and_aaaa)
{
    struct ev_loop *loop;
    struct kp_dns *d;
    struct fake_dns f;
    struct got g = {0};
    int v4 = 0, v6 = 0;
    uint32_t i;

    resolve_one("DUAL.kp.test", 29092, &g, &f, &loop, &d);
    ck_assert_msg(g.status == KP_DNS_OK, "%s", g.err);
    ck_assert_uint_eq(g.addrs->n, 2);
    for (i = 0; i < g.addrs->n; i++) {
        const char *s = fmt(g.addrs, i);
        if (g.addrs->a[i].u.sa.sa_family == AF_INET) {
            v4++;
            ck_assert_str_eq(s, "127.0.0.1:29092");
            ck_assert_uint_eq(g.addrs->a[i].len, sizeof(struct sockaddr_in));
        } else {
            v6++;
            ck_assert_str_eq(s, "[::1]:29092");
            ck_assert_uint_eq(g.addrs->a[i].len, sizeof(struct sockaddr_in6));
        }
    }
    ck_assert_int_eq(v4, 1);
    ck_assert_int_eq(v6, 1);
    kp_dns_addrs_free(g.addrs);
    finish(loop, d, &f);
}
END_TEST

START_TEST(test_nxdomain_does_not_resolve)
{
    struct ev_loop *loop;
    struct kp_dns *d;
    struct fake_dns f;
    struct got g = {0};

    resolve_one("nx.kp.test", 9092, &g, &f, &loop, &d);
    ck_assert_int_eq(g.status, KP_DNS_NOTFOUND);
    ck_assert_msg(strncmp(g.err, "name does not resolve: nx.kp.test", 33) == 0,
                  "%s", g.err);
    finish(loop, d, &f);
}
END_TEST

START_TEST(test_nodata_does_not_resolve)
{
    struct ev_loop *loop;
    struct kp_dns *d;
    struct fake_dns f;
    struct got g = {0};

    resolve_one("nodata.kp.test", 9092, &g, &f, &loop, &d);
    ck_assert_int_eq(g.status, KP_DNS_NOTFOUND);
    ck_assert_ptr_nonnull(strstr(g.err, "does not resolve: nodata.kp.test"));
    finish(loop, d, &f);
}
END_TEST

START_TEST(test_servfail_is_an_error)
{
    struct ev_loop *loop;
    struct kp_dns *d;
    struct fake_dns f;
    struct got g = {0};

    resolve_one("fail.kp.test", 9092, &g, &f, &loop, &d);
    ck_assert_int_eq(g.status, KP_DNS_FAILED);
    ck_assert_msg(strncmp(g.err, "DNS error resolving fail.kp.test: ", 34) == 0,
                  "%s", g.err);
    finish(loop, d, &f);
}
END_TEST

/* ---- no query at all -------------------------------------------------- */

START_TEST(test_numeric_hosts_without_query)
{
    static const char *const hosts[] = {"127.0.0.1", "::1", "[::1]",
                                        "[2001:db8::7]", "10.1.2.3"};
    static const char *const want[] = {"127.0.0.1:9092", "[::1]:9092",
                                       "[::1]:9092", "[2001:db8::7]:9092",
                                       "10.1.2.3:9092"};
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct fake_dns f;
    struct got g[5], bad_port = {0}, empty = {0};
    struct kp_dns_stats st;
    int i;

    memset(g, 0, sizeof(g));
    seq = 0;
    fake_start(&f, loop, false);
    struct kp_dns *d = mk_dns(loop, &f, 3000, 2);
    for (i = 0; i < 5; i++) {
        kp_dns_resolve(d, hosts[i], 9092, on_result, &g[i]);
        ck_assert_int_eq(g[i].calls, 0); /* deferred even so */
    }
    kp_dns_resolve(d, "127.0.0.1", 70000, on_result, &bad_port);
    kp_dns_resolve(d, "", 9092, on_result, &empty);
    ck_assert_int_eq(empty.calls, 0);
    run_until(loop, &empty.calls, 1);
    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(g[i].calls, 1);
        ck_assert_int_eq(g[i].order, i); /* in the order asked */
        ck_assert_int_eq(g[i].status, KP_DNS_OK);
        ck_assert_uint_eq(g[i].addrs->n, 1);
        ck_assert_str_eq(fmt(g[i].addrs, 0), want[i]);
        kp_dns_addrs_free(g[i].addrs);
    }
    ck_assert_int_eq(bad_port.status, KP_DNS_FAILED);
    ck_assert_int_eq(empty.status, KP_DNS_NOTFOUND);
    kp_dns_get_stats(d, &st);
    ck_assert_uint_eq(st.sockets, 0); /* c-ares never opened a socket */
    kp_dns_destroy(d);
    fake_stop(&f, loop);
    ck_assert_int_eq(f.queries, 0);
    ev_loop_destroy(loop);
    unlink(resolv_conf);
}
END_TEST

/* "localhost" comes from the hosts file (or RFC 6761), never from DNS. */
START_TEST(test_localhost_without_query)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct fake_dns f;
    struct got g = {0};
    uint32_t i;

    fake_start(&f, loop, false);
    struct kp_dns *d = mk_dns(loop, &f, 3000, 2);
    kp_dns_resolve(d, "localhost", 9092, on_result, &g);
    ck_assert_int_eq(g.calls, 0);
    run_until(loop, &g.calls, 1);
    ck_assert_msg(g.status == KP_DNS_OK, "%s", g.err);
    for (i = 0; i < g.addrs->n; i++) {
        const char *s = fmt(g.addrs, i);
        ck_assert_msg(strncmp(s, "127.", 4) == 0 ||
                          strcmp(s, "[::1]:9092") == 0,
                      "%s", s);
    }
    kp_dns_addrs_free(g.addrs);
    kp_dns_destroy(d);
    fake_stop(&f, loop);
    ck_assert_int_eq(f.queries, 0);
    ev_loop_destroy(loop);
    unlink(resolv_conf);
}
END_TEST

/* ---- cancel and destroy ----------------------------------------------- */

START_TEST(test_cancel_in_flight_silent)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct fake_dns f;
    struct got g1 = {0}, g2 = {0}, g3 = {0}, g4 = {0};
    struct kp_dns_stats st;

    fake_start(&f, loop, false);
    struct kp_dns *d = mk_dns(loop, &f, 300, 2);
    struct kp_dns_query *q1 = kp_dns_resolve(d, "a.kp.test", 1, on_result, &g1);
    kp_dns_resolve(d, "b.kp.test", 1, on_result, &g2);
    kp_dns_cancel(q1);
    run_until(loop, &g2.calls, 1); /* past q1's deadline too */
    ck_assert_int_eq(g2.status, KP_DNS_TIMEOUT);
    ck_assert_int_eq(g1.calls, 0);

    /* a numeric one, cancelled between its result and its delivery */
    struct kp_dns_query *q3 = kp_dns_resolve(d, "127.0.0.1", 1, on_result, &g3);
    kp_dns_resolve(d, "127.0.0.2", 1, on_result, &g4);
    kp_dns_cancel(q3);
    run_until(loop, &g4.calls, 1);
    ck_assert_int_eq(g3.calls, 0);
    kp_dns_addrs_free(g4.addrs);

    /* the only live query cancelled: what c-ares held goes at once */
    struct kp_dns_query *q5 = kp_dns_resolve(d, "c.kp.test", 1, on_result, &g1);
    kp_dns_get_stats(d, &st);
    ck_assert_uint_eq(st.pending, 1);
    ck_assert_uint_ge(st.sockets, 1);
    kp_dns_cancel(q5);
    kp_dns_get_stats(d, &st);
    ck_assert_uint_eq(st.pending, 0);
    ck_assert_uint_eq(st.sockets, 0);
    ck_assert_uint_eq(st.cancelled, 3);
    ck_assert_int_eq(g1.calls, 0);
    finish(loop, d, &f);
}
END_TEST

/* c-ares answers a query that was cancelled while another one is live:
 * that late callback must be harmless (ASan watches). */
START_TEST(test_cancelled_query_answered_later)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct fake_dns f;
    struct got ga = {0}, gb = {0};
    struct kp_dns_stats st;

    fake_start(&f, loop, true);
    struct kp_dns *d = mk_dns(loop, &f, 3000, 2);
    struct kp_dns_query *qa =
        kp_dns_resolve(d, "two.kp.test", 1, on_result, &ga);
    kp_dns_resolve(d, "dual.kp.test", 1, on_result, &gb);
    kp_dns_cancel(qa);
    kp_dns_get_stats(d, &st);
    ck_assert_uint_eq(st.pending, 2); /* c-ares still has qa */
    run_until(loop, &gb.calls, 1);
    ck_assert_int_eq(gb.status, KP_DNS_OK);
    ck_assert_int_eq(ga.calls, 0);
    kp_dns_addrs_free(gb.addrs);
    /* qa's answer came with gb's or is still on its way */
    finish(loop, d, &f);
}
END_TEST

/* A query that timed out while another is live gets its answer late: it
 * is delivered once, as a timeout; the live one gets its answer. */
struct late_ctx {
    struct ev_loop *loop;
    struct kp_dns *d;
    struct fake_dns *f;
    struct got *g2;
};

static void start_second(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct late_ctx *c = w->data;
    (void)loop;
    (void)revents;
    kp_dns_resolve(c->d, "dual.kp.test", 1, on_result, c->g2);
}

static void release_answers(struct got *g)
{
    struct late_ctx *c = g->ctx;
    fake_release(c->f);
}

START_TEST(test_timed_out_query_answered_later)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct fake_dns f;
    struct got g1 = {0}, g2 = {0};
    struct late_ctx c = {loop, NULL, &f, &g2};
    ev_timer later;
    struct kp_dns_stats st;

    fake_start(&f, loop, true);
    f.hold = true;
    /* 3 tries: c-ares would go on well past the 300 ms cap */
    c.d = mk_dns(loop, &f, 300, 3);
    g1.then = release_answers;
    g1.ctx = &c;
    kp_dns_resolve(c.d, "two.kp.test", 1, on_result, &g1);
    ev_timer_init(&later, start_second, 0.1, 0.);
    later.data = &c;
    ev_timer_start(loop, &later);
    run_until(loop, &g2.calls, 1);
    ck_assert_int_eq(g1.calls, 1);
    ck_assert_int_eq(g1.status, KP_DNS_TIMEOUT);
    ck_assert_msg(g2.status == KP_DNS_OK, "%s", g2.err);
    kp_dns_addrs_free(g2.addrs);
    kp_dns_get_stats(c.d, &st);
    ck_assert_uint_eq(st.ok, 1);
    ck_assert_uint_eq(st.timeout, 1);
    finish(loop, c.d, &f);
}
END_TEST

START_TEST(test_destroy_with_queries_outstanding)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct fake_dns f;
    struct got g[3];

    memset(g, 0, sizeof(g));
    fake_start(&f, loop, false);
    struct kp_dns *d = mk_dns(loop, &f, 300, 2);
    kp_dns_resolve(d, "a.kp.test", 1, on_result, &g[0]);
    kp_dns_resolve(d, "b.kp.test", 1, on_result, &g[1]);
    kp_dns_resolve(d, "127.0.0.1", 1, on_result, &g[2]);
    kp_dns_destroy(d);
    /* nothing of the resolver is left on the loop */
    ev_run(loop, EVRUN_NOWAIT);
    ev_io_stop(loop, &f.w);
    unsigned int iter = ev_iteration(loop);
    ev_run(loop, 0); /* one iteration: no active watcher is left */
    ck_assert_uint_eq(ev_iteration(loop) - iter, 1);
    ck_assert_int_eq(g[0].calls + g[1].calls + g[2].calls, 0);
    fake_stop(&f, loop);
    ev_loop_destroy(loop);
    unlink(resolv_conf);
}
END_TEST

static void destroy_resolver(struct got *g)
{
    kp_dns_destroy(g->ctx);
}

START_TEST(test_destroy_from_a_callback)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct fake_dns f;
    struct got g1 = {0}, g2 = {0}, g3 = {0};

    fake_start(&f, loop, false);
    struct kp_dns *d = mk_dns(loop, &f, 300, 2);
    g1.then = destroy_resolver;
    g1.ctx = d;
    kp_dns_resolve(d, "127.0.0.1", 1, on_result, &g1);
    kp_dns_resolve(d, "127.0.0.2", 1, on_result, &g2); /* same pass */
    kp_dns_resolve(d, "silent.kp.test", 1, on_result, &g3);
    run_until(loop, &g1.calls, 1);
    kp_dns_addrs_free(g1.addrs);
    ev_run(loop, EVRUN_NOWAIT);
    ck_assert_int_eq(g2.calls, 0);
    ck_assert_int_eq(g3.calls, 0);
    fake_stop(&f, loop);
    ev_loop_destroy(loop);
    unlink(resolv_conf);
}
END_TEST

/* ---- resolv.conf followed -------------------------------------------- */

START_TEST(test_resolv_conf_change_is_followed)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct fake_dns f;
    struct got g1 = {0}, g2 = {0};
    struct kp_dns_stats st;

    fake_start(&f, loop, true);
    struct kp_dns *d = mk_dns(loop, &f, 3000, 2);
    kp_dns_resolve(d, "app", 9092, on_result, &g1);
    run_until(loop, &g1.calls, 1);
    ck_assert_int_eq(g1.status, KP_DNS_NOTFOUND);

    write_resolv_conf("search kp.test\noptions ndots:1\n");
    kp_dns_resolve(d, "app", 9092, on_result, &g2);
    run_until(loop, &g2.calls, 1);
    ck_assert_msg(g2.status == KP_DNS_OK, "%s", g2.err);
    ck_assert_str_eq(fmt(g2.addrs, 0), "127.0.0.9:9092");
    kp_dns_addrs_free(g2.addrs);
    kp_dns_get_stats(d, &st);
    ck_assert_uint_eq(st.reloads, 1);
    finish(loop, d, &f);
}
END_TEST

/* ---- address lists ---------------------------------------------------- */

static void put(struct kp_dns_addrs *l, const char *ip, int port)
{
    struct kp_dns_addr *a = &l->a[l->n++];
    memset(a, 0, sizeof(*a));
    if (strchr(ip, ':')) {
        a->u.in6.sin6_family = AF_INET6;
        a->u.in6.sin6_port = htons((uint16_t)port);
        ck_assert_int_eq(inet_pton(AF_INET6, ip, &a->u.in6.sin6_addr), 1);
        a->len = sizeof(a->u.in6);
    } else {
        a->u.in.sin_family = AF_INET;
        a->u.in.sin_port = htons((uint16_t)port);
        ck_assert_int_eq(inet_pton(AF_INET, ip, &a->u.in.sin_addr), 1);
        a->len = sizeof(a->u.in);
    }
}

START_TEST(test_interleave_families)
{
    struct kp_dns_addrs *l = kp_calloc(1, sizeof(*l) + 8 * sizeof(l->a[0]));
    struct kp_dns_addrs *c;
    char buf[KP_DNS_ADDR_STRLEN];

    put(l, "2001:db8::1", 1);
    put(l, "2001:db8::2", 1);
    put(l, "2001:db8::3", 1);
    put(l, "10.0.0.1", 1);
    put(l, "10.0.0.2", 1);
    kp_dns_addrs_interleave(l);
    ck_assert_str_eq(fmt(l, 0), "[2001:db8::1]:1");
    ck_assert_str_eq(fmt(l, 1), "10.0.0.1:1");
    ck_assert_str_eq(fmt(l, 2), "[2001:db8::2]:1");
    ck_assert_str_eq(fmt(l, 3), "10.0.0.2:1");
    ck_assert_str_eq(fmt(l, 4), "[2001:db8::3]:1");

    l->n = 0;
    put(l, "10.0.0.1", 2);
    put(l, "10.0.0.2", 2);
    put(l, "10.0.0.3", 2);
    put(l, "::1", 2);
    kp_dns_addrs_interleave(l);
    ck_assert_str_eq(fmt(l, 0), "10.0.0.1:2");
    ck_assert_str_eq(fmt(l, 1), "[::1]:2");
    ck_assert_str_eq(fmt(l, 2), "10.0.0.2:2");
    ck_assert_str_eq(fmt(l, 3), "10.0.0.3:2");

    c = kp_dns_addrs_copy(l);
    ck_assert_uint_eq(c->n, 4);
    ck_assert_str_eq(fmt(c, 1), "[::1]:2");
    kp_dns_addrs_free(l);
    kp_dns_addrs_free(c);
    kp_dns_addrs_free(NULL);

    struct kp_dns_addr a;
    memset(&a, 0, sizeof(a));
    a.u.in6.sin6_family = AF_INET6;
    a.u.in6.sin6_port = htons(9092);
    a.u.in6.sin6_scope_id = 2;
    inet_pton(AF_INET6, "fe80::1", &a.u.in6.sin6_addr);
    ck_assert_str_eq(kp_dns_addr_format(&a, buf, sizeof(buf)),
                     "[fe80::1%2]:9092");
    ck_assert_str_eq(kp_dns_status_names[KP_DNS_TIMEOUT], "timeout");
}
END_TEST

static Suite *dns_suite(void)
{
    Suite *s = suite_create("dns");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_silent_server_times_out_loop_runs);
    tcase_add_test(tc, test_two_a_records_in_answer_order);
    tcase_add_test(tc, test_a_and_aaaa);
    tcase_add_test(tc, test_nxdomain_does_not_resolve);
    tcase_add_test(tc, test_nodata_does_not_resolve);
    tcase_add_test(tc, test_servfail_is_an_error);
    tcase_add_test(tc, test_numeric_hosts_without_query);
    tcase_add_test(tc, test_localhost_without_query);
    tcase_add_test(tc, test_cancel_in_flight_silent);
    tcase_add_test(tc, test_cancelled_query_answered_later);
    tcase_add_test(tc, test_timed_out_query_answered_later);
    tcase_add_test(tc, test_destroy_with_queries_outstanding);
    tcase_add_test(tc, test_destroy_from_a_callback);
    tcase_add_test(tc, test_resolv_conf_change_is_followed);
    tcase_add_test(tc, test_interleave_families);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* c-ares, as glibc, lets these override resolv.conf: not in tests */
    unsetenv("LOCALDOMAIN");
    unsetenv("RES_OPTIONS");
    unsetenv("HOSTALIASES");
    if (getenv("KP_DEBUG")) {
        kp_log_set_level(KP_LOG_DEBUG);
    }
    SRunner *sr = srunner_create(dns_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
