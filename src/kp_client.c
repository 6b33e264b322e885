/*
 * kp_client.c - client connections: framing messages out of the bytes they
 * write (kp_frame), handing each to the router, writing receipts back, and
 * answering a half-close with `delivered=N failed=F rejected=R` once all
 * its messages are settled.
 */
#include "kp_client.h"

#include <errno.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_conf.h"
#include "kp_counters.h"
#include "kp_log.h"
#include "kp_router.h"
#include "kp_tally.h"

const char *const kp_client_state_names[KP_CLIENT__COUNT] = {
    "reading", "draining", "replying", "closed"};

/* A carry up to this size is copied in front of the next read (cheaper
 * than asking how many bytes wait); a larger one is read into only when
 * fewer bytes wait than it holds. */
#define KP_CLIENT_COPY_MAX 4096
/* Bytes of a rejected line shown in the log (escaped). */
#define KP_CLIENT_LOG_BYTES 64

static struct kp_ratelimit kp_client_reject_rl;

static struct kp_ratelimit kp_client_block_rl;

static void kp_client_on_read(struct ev_loop *loop, ev_io *w, int revents);
static void kp_client_on_write(struct ev_loop *loop, ev_io *w, int revents);
static void kp_client_on_idle(void *owner);
static void kp_client_on_output(void *owner);
static void kp_client_on_wake(struct kp_topic_waiter *w);
static void kp_clients_on_block_timer(struct ev_loop *loop, ev_timer *w,
                                      int revents);
static void kp_client_flush(struct kp_client *c);
static void kp_client_frame(struct kp_client *c, const uint8_t *data,
                            size_t len, bool final);
static void kp_client_finish_eof(struct kp_client *c);
static void kp_client_keep_carry(struct kp_client *c, const uint8_t *p,
                                 size_t n);

/* ---- the set ---- */

/* The longest line any topic accepts bounds framing (a topic's own limit
 * is checked once the line is parsed); the shared read buffer holds one
 * such partial line plus a read. */
void kp_clients_reconf(struct kp_clients *cs)
{
    const struct kp_conf *c = *cs->conf;
    size_t max_line = (size_t)c->producer.message_max_bytes;

    for (size_t i = 0; i < c->topic_cnt; i++) {
        max_line = KP_MAX(max_line,
                          (size_t)c->topics[i].producer.message_max_bytes);
    }
    cs->max_line = max_line;
    size_t want = max_line + KP_CLIENT_READ_BUDGET;
    if (want > cs->rbuf_cap) {
        free(cs->rbuf);
        cs->rbuf = kp_malloc(want);
        cs->rbuf_cap = want;
    }
}

void kp_clients_init(struct kp_clients *cs, struct ev_loop *loop,
                     struct kp_conf *const *conf, struct kp_router *router,
                     struct kp_counters *n)
{
    memset(cs, 0, sizeof(*cs));
    cs->loop = loop;
    cs->conf = conf;
    cs->router = router;
    cs->n = n;
    TAILQ_INIT(&cs->open);
    TAILQ_INIT(&cs->closed);
    TAILQ_INIT(&cs->writable);
    TAILQ_INIT(&cs->resume);
    TAILQ_INIT(&cs->blocked);
    TAILQ_INIT(&cs->partials);
    TAILQ_INIT(&cs->turns);
    ev_timer_init(&cs->block_timer, kp_clients_on_block_timer, 0., 0.);
    cs->block_timer.data = cs;
    kp_uidmap_init(&cs->per_uid);
    kp_line_scratch_init(&cs->scratch);
    kp_clients_reconf(cs);
}

static void kp_client_destroy(struct kp_client *c)
{
    free(c->carry);
    free(c->extra);
    kp_tally_put(c->tally);
    free(c);
}

/* One write per connection for everything appended since the last call
 * (a prepare phase, or a test standing in for one). */
void kp_clients_flush(struct kp_clients *cs)
{
    struct kp_client *c;

    while ((c = TAILQ_FIRST(&cs->writable)) != NULL) {
        TAILQ_REMOVE(&cs->writable, c, out_link);
        c->queued = false;
        kp_client_flush(c); /* may close it */
    }
}

void kp_clients_reap(struct kp_clients *cs)
{
    struct kp_client *c;

    kp_clients_flush(cs);
    while ((c = TAILQ_FIRST(&cs->closed)) != NULL) {
        TAILQ_REMOVE(&cs->closed, c, link);
        kp_client_destroy(c);
    }
}

void kp_clients_close_all(struct kp_clients *cs)
{
    struct kp_client *c;

    /* What the last fates told (receipts, summaries) goes out if the
     * sockets take it now; nothing waits any more. */
    kp_clients_flush(cs);
    while ((c = TAILQ_FIRST(&cs->open)) != NULL) {
        kp_client_close(c);
    }
}

void kp_clients_deinit(struct kp_clients *cs)
{
    kp_clients_close_all(cs);
    kp_clients_reap(cs);
    ev_timer_stop(cs->loop, &cs->block_timer);
    kp_line_scratch_deinit(&cs->scratch);
    kp_uidmap_deinit(&cs->per_uid);
    free(cs->rbuf);
}

/* ---- one client ---- */

static void kp_client_set_state(struct kp_client *c,
                                enum kp_client_state state)
{
    struct ev_loop *loop = c->set->loop;

    if (c->state != state) {
        kp_debug("client %llu: %s -> %s", (unsigned long long)c->id,
                 kp_client_state_names[c->state],
                 kp_client_state_names[state]);
    }
    c->state = state;
    if (state != KP_CLIENT_READING || c->paused || c->blocked ||
        c->stalled) {
        ev_io_stop(loop, &c->rio);
    } else {
        ev_io_start(loop, &c->rio);
    }
    if (state == KP_CLIENT_CLOSED) {
        ev_io_stop(loop, &c->wio);
    }
}

/* Headers for every record: the listener's static ones, then the peer's
 * credentials (peer_headers). */
static void kp_client_extra_headers(struct kp_client *c)
{
    static const char *const names[3] = {"peer.uid", "peer.gid", "peer.pid"};
    long vals[3] = {(long)c->peer_uid, (long)c->peer_gid, (long)c->peer_pid};
    const struct kp_listener_conf *lc = c->lc;
    size_t cnt = lc->header_cnt + (lc->peer_headers ? 3 : 0);

    if (cnt == 0) {
        return;
    }
    c->extra = kp_calloc(cnt, sizeof(*c->extra));
    for (size_t i = 0; i < lc->header_cnt; i++) {
        const struct kp_static_header *h = &lc->headers[i];
        c->extra[c->extra_cnt++] = (struct kp_header){
            (const uint8_t *)h->name, strlen(h->name),
            (const uint8_t *)h->value, strlen(h->value)};
    }
    for (int i = 0; lc->peer_headers && i < 3; i++) {
        int n = snprintf(c->peer_vals[i], sizeof(c->peer_vals[i]), "%ld",
                         vals[i]);
        c->extra[c->extra_cnt++] = (struct kp_header){
            (const uint8_t *)names[i], strlen(names[i]),
            (const uint8_t *)c->peer_vals[i], (size_t)n};
    }
}

/*
 * Takes ownership of fd (nonblocking, accepted). Peer credentials are read
 * here; the listener has already checked them against its allow lists.
 */
struct kp_client *kp_client_create(struct kp_clients *cs,
                                   const struct kp_listener_conf *lc, int fd)
{
    struct kp_client *c = kp_calloc(1, sizeof(*c));
    struct ucred cred;
    socklen_t len = sizeof(cred);

    c->set = cs;
    c->lc = lc;
    c->fd = fd;
    c->id = ++cs->next_id;
    c->read_max = KP_CLIENT_STALLED_READ;
    cs->n->connections++;
    c->tally = kp_tally_create(kp_client_on_idle, c);
    c->wait.on_wake = kp_client_on_wake;
    if (lc->receipts == KP_RECEIPTS_EACH) {
        kp_tally_want_receipts(c->tally, kp_client_on_output);
    }
    kp_framer_init(&c->framer, lc->framing);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        c->peer_pid = cred.pid;
        c->peer_uid = cred.uid;
        c->peer_gid = cred.gid;
    }
    c->tally->pid = c->wait.pid = c->peer_pid;
    c->tally->uid = c->wait.uid = c->peer_uid;
    kp_client_extra_headers(c);
    ev_io_init(&c->rio, kp_client_on_read, fd, EV_READ);
    ev_io_init(&c->wio, kp_client_on_write, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    TAILQ_INSERT_TAIL(&cs->open, c, link);
    cs->cnt++;
    kp_uidmap_add(&cs->per_uid, c->peer_uid, 1);
    c->paused = cs->paused;
    kp_client_set_state(c, KP_CLIENT_READING);
    kp_debug("client %llu: connected (uid %ld gid %ld pid %ld)",
             (unsigned long long)c->id, (long)c->peer_uid,
             (long)c->peer_gid, (long)c->peer_pid);
    return c;
}

/* ---- unfinished lines: their shared budget ---- */

/* The unfinished line c holds is n bytes now: the set's sum (and the
 * router's count against buffer_bytes) follow. */
static void kp_client_set_partial(struct kp_client *c, size_t n)
{
    struct kp_clients *cs = c->set;
    int64_t delta = (int64_t)n - (int64_t)c->partial;

    if (delta == 0) {
        return;
    }
    if (c->partial == 0) {
        TAILQ_INSERT_TAIL(&cs->partials, c, partial_link);
    } else if (n == 0) {
        TAILQ_REMOVE(&cs->partials, c, partial_link);
    }
    c->partial = n;
    cs->partial_bytes += delta;
    kp_router_client_bytes(cs->router, delta);
}

/* ---- stalls: waiting for a topic ---- */

static bool kp_client_topic_valid(const struct kp_client *c,
                                  const struct kp_topic *t, uint64_t epoch)
{
    return t && epoch == c->set->router->topic_epoch;
}

static void kp_clients_arm_block_timer(struct kp_clients *cs)
{
    struct kp_client *c = TAILQ_FIRST(&cs->blocked);
    double now = ev_now(cs->loop);

    ev_timer_stop(cs->loop, &cs->block_timer);
    if (c) {
        double at = (double)(c->block_since_ms +
                             (*cs->conf)->max_block_ms) / 1000.0;
        ev_timer_set(&cs->block_timer, KP_MAX(at - now, 0.), 0.);
        ev_timer_start(cs->loop, &cs->block_timer);
    }
}

/* No longer paused on a full topic (it took a message, or the writer
 * moved on, or closed). */
static void kp_client_block_end(struct kp_client *c)
{
    struct kp_clients *cs = c->set;

    if (!c->block_topic) {
        return;
    }
    bool head = TAILQ_FIRST(&cs->blocked) == c;
    TAILQ_REMOVE(&cs->blocked, c, block_link);
    c->block_topic = NULL;
    if (head) {
        kp_clients_arm_block_timer(cs);
    }
}

/* Paused on full topic t: the clock of max_block_ms runs from the first
 * pause, across wake-ups that gave it nothing. */
static void kp_client_block_start(struct kp_client *c, struct kp_topic *t)
{
    struct kp_clients *cs = c->set;
    uint64_t epoch = cs->router->topic_epoch;

    if (c->block_topic == t && c->block_epoch == epoch) {
        return;
    }
    kp_client_block_end(c);
    c->block_topic = t;
    c->block_epoch = epoch;
    c->block_since_ms = (int64_t)(ev_now(cs->loop) * 1000);
    TAILQ_INSERT_TAIL(&cs->blocked, c, block_link);
    if (TAILQ_FIRST(&cs->blocked) == c) {
        kp_clients_arm_block_timer(cs);
    }
}

/* Resumed from the prepare phase: never inside the settle or metadata
 * callback that woke it. */
static void kp_client_schedule_resume(struct kp_client *c)
{
    if (!c->resuming) {
        c->resuming = true;
        TAILQ_INSERT_TAIL(&c->set->resume, c, resume_link);
    }
}

static void kp_client_on_wake(struct kp_topic_waiter *w)
{
    struct kp_client *c =
        (struct kp_client *)((char *)w - offsetof(struct kp_client, wait));
    kp_client_schedule_resume(c);
}

/* max_block_ms ran out for the oldest blocked connections: their messages
 * for that topic fail at once from now on, until it takes one again. */
static void kp_clients_on_block_timer(struct ev_loop *loop, ev_timer *w,
                                      int revents)
{
    struct kp_clients *cs = w->data;
    int64_t now = (int64_t)(ev_now(loop) * 1000);
    int64_t max_block = (*cs->conf)->max_block_ms;
    struct kp_client *c;
    (void)revents;

    while ((c = TAILQ_FIRST(&cs->blocked)) != NULL &&
           now - c->block_since_ms >= max_block) {
        struct kp_topic *t = c->block_topic;
        bool valid = kp_client_topic_valid(c, t, c->block_epoch);
        TAILQ_REMOVE(&cs->blocked, c, block_link);
        c->block_topic = NULL;
        if (!valid) {
            continue;
        }
        cs->n->block_timeouts++;
        kp_log_rl(&kp_client_block_rl, KP_LOG_WARNING,
                  "client %llu (pid %ld uid %ld): paused on full topic %s "
                  "for max_block_ms (%lld ms); its messages for it fail "
                  "(buffer_full) until the topic has room",
                  (unsigned long long)c->id, (long)c->peer_pid,
                  (long)c->peer_uid, t->name, (long long)max_block);
        c->fail_topic = t;
        c->fail_epoch = c->block_epoch;
        if (c->wait.topic == t) {
            kp_topic_unwait(&c->wait);
            kp_client_schedule_resume(c);
        }
    }
    kp_clients_arm_block_timer(cs);
}

/* The message at data[start..] waits for topic t: it and everything after
 * it stay in the carry, and the connection is not read until t wakes it. */
static void kp_client_stall(struct kp_client *c, struct kp_topic *t,
                            enum kp_route why, const uint8_t *data,
                            size_t start, size_t len)
{
    struct kp_clients *cs = c->set;

    kp_client_keep_carry(c, data + start, len - start);
    kp_client_set_partial(c, 0);
    c->stalled = true;
    c->read_max = KP_CLIENT_STALLED_READ;
    if (why == KP_ROUTE_WAIT_SPOOL) {
        /* every writer is paused (backpressure); the release resumes it */
        kp_client_set_state(c, c->state);
        return;
    }
    cs->n->topic_waits++;
    kp_router_wait(cs->router, t, &c->wait);
    if (why == KP_ROUTE_WAIT_ROOM) {
        kp_client_block_start(c, t);
    } else {
        kp_client_block_end(c);
    }
    kp_debug("client %llu: waits for topic %s (%s)",
             (unsigned long long)c->id, t->name, kp_route_names[why]);
    kp_client_set_state(c, c->state);
}

/* A woken connection offers its carry again: it may stall anew. */
static void kp_client_continue(struct kp_client *c)
{
    size_t len = c->carry_len;

    c->stalled = false;
    c->carry_len = 0;
    kp_client_frame(c, c->carry, len, c->eof_seen);
    if (c->stalled) {
        return;
    }
    if (c->eof_seen) {
        kp_client_finish_eof(c);
    } else {
        kp_client_set_state(c, c->state);
    }
}

void kp_clients_resume(struct kp_clients *cs)
{
    struct kp_client *c;

    while ((c = TAILQ_FIRST(&cs->resume)) != NULL) {
        TAILQ_REMOVE(&cs->resume, c, resume_link);
        c->resuming = false;
        if (c->state != KP_CLIENT_CLOSED && c->stalled && !c->wait.topic) {
            kp_client_continue(c);
        }
    }
}

void kp_client_close(struct kp_client *c)
{
    struct kp_clients *cs = c->set;

    if (c->state == KP_CLIENT_CLOSED) {
        return;
    }
    kp_client_set_state(c, KP_CLIENT_CLOSED);
    close(c->fd);
    c->fd = -1;
    kp_tally_detach(c->tally);
    if (c->queued) {
        TAILQ_REMOVE(&cs->writable, c, out_link);
        c->queued = false;
    }
    if (c->resuming) {
        TAILQ_REMOVE(&cs->resume, c, resume_link);
        c->resuming = false;
    }
    if (c->in_turn) {
        TAILQ_REMOVE(&cs->turns, c, turn_link);
        c->in_turn = false;
    }
    kp_topic_unwait(&c->wait);
    kp_client_block_end(c);
    kp_client_set_partial(c, 0);
    TAILQ_REMOVE(&cs->open, c, link);
    TAILQ_INSERT_TAIL(&cs->closed, c, link);
    cs->cnt--;
    kp_uidmap_add(&cs->per_uid, c->peer_uid, -1);
}

static void kp_client_pause(struct kp_client *c, bool on)
{
    if (c->paused != on) {
        c->paused = on;
        kp_client_set_state(c, c->state);
    }
}

void kp_clients_pause(struct kp_clients *cs, bool on)
{
    struct kp_client *c;

    cs->paused = on;
    TAILQ_FOREACH(c, &cs->open, link)
    {
        kp_client_pause(c, on);
        if (!on && c->stalled && !c->wait.topic) {
            kp_client_schedule_resume(c); /* waited for the spool */
        }
    }
}

/* Up to KP_CLIENT_LOG_BYTES of a line, printable, for a log line. */
static void kp_client_escape(char *out, size_t cap, const uint8_t *p,
                             size_t n)
{
    size_t j = 0;

    for (size_t i = 0; i < KP_MIN(n, KP_CLIENT_LOG_BYTES) && j + 5 < cap;
         i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') {
            out[j++] = (char)p[i];
        } else {
            j += (size_t)snprintf(out + j, cap - j, "\\x%02x", p[i]);
        }
    }
    snprintf(out + j, cap - j, "%s", n > KP_CLIENT_LOG_BYTES ? "..." : "");
}

/* A message that cannot be used: counted, told (receipt), logged at a
 * limited rate with up to `shown` of its `len` bytes. */
static void kp_client_reject(struct kp_client *c, enum kp_reason why,
                             const uint8_t *msg, size_t len, size_t shown)
{
    struct kp_counters *n = c->set->n;
    char text[KP_CLIENT_LOG_BYTES * 4 + 8];

    n->rejected++;
    n->rejected_by[why]++;
    c->tally->rejected++;
    kp_tally_receipt(c->tally, KP_FATE_REJECTED, c->tally->seq, why);
    if (kp_log_get_level() >= KP_LOG_WARNING) {
        kp_client_escape(text, sizeof(text), msg, shown);
        kp_log_rl(&kp_client_reject_rl, KP_LOG_WARNING,
                  "client %llu (pid %ld uid %ld): %s rejected (%s, %zu "
                  "bytes): %s",
                  (unsigned long long)c->id, (long)c->peer_pid,
                  (long)c->peer_uid,
                  c->lc->framing == KP_FRAMING_LINE ? "line" : "frame",
                  kp_reason_names[why], len, text);
    }
}

/* The topic, from the one-entry cache when the last line had the same
 * one (and no topic was forgotten since); NULL: max_topics reached. */
static struct kp_topic *kp_client_topic(struct kp_client *c, const char *name,
                                        size_t len)
{
    struct kp_router *r = c->set->router;
    struct kp_topic *t = c->last_topic;

    if (t && c->last_topic_epoch == r->topic_epoch && t->name_len == len &&
        memcmp(t->name, name, len) == 0) {
        return t;
    }
    t = kp_router_topic(r, name, len);
    c->last_topic = t;
    c->last_topic_epoch = r->topic_epoch;
    return t;
}

/* Parses and routes one message (*tp: its topic, for a wait). A message
 * the topic took ends a pause on it, and the failing after max_block_ms. */
static enum kp_route kp_client_route(struct kp_client *c, const uint8_t *msg,
                                     size_t len, struct kp_topic **tp,
                                     enum kp_reason *why)
{
    struct kp_clients *cs = c->set;
    const struct kp_listener_conf *lc = c->lc;
    struct kp_msg m;

    *why = kp_line_parse(lc->format, lc->separator, lc->topic, msg, len,
                         &cs->scratch, &m);
    if (*why != KP_REASON_NONE) {
        return KP_ROUTE_REJECTED;
    }
    if (lc->allow_topic_cnt &&
        !kp_topic_allowed(lc->allow_topics, lc->allow_topic_cnt, m.topic,
                          m.topic_len)) {
        *why = KP_REASON_TOPIC_DENIED;
        return KP_ROUTE_REJECTED;
    }
    struct kp_topic *t = *tp = kp_client_topic(c, m.topic, m.topic_len);
    if (!t) {
        *why = KP_REASON_TOO_MANY_TOPICS;
        return KP_ROUTE_REJECTED;
    }
    int64_t ts = m.timestamp >= 0 ? m.timestamp
                                  : (int64_t)(ev_now(cs->loop) * 1000);
    bool full_fails = c->fail_topic == t &&
                      kp_client_topic_valid(c, t, c->fail_epoch);
    enum kp_route r = kp_router_route(cs->router, t, &m, ts, c->tally,
                                      c->extra, c->extra_cnt, full_fails,
                                      why);
    if (r == KP_ROUTE_QUEUED) {
        if (c->block_topic == t) {
            kp_client_block_end(c);
        }
        if (c->fail_topic == t) {
            c->fail_topic = NULL;
        }
    }
    return r;
}

/* Keeps n bytes at p (the rest of the shared buffer, or a tail of the
 * carry itself) as the carry; a large buffer is given back once it holds
 * little, so an idle or slow connection keeps no large buffer. */
static void kp_client_keep_carry(struct kp_client *c, const uint8_t *p,
                                 size_t n)
{
    uintptr_t a = (uintptr_t)p, lo = (uintptr_t)c->carry;
    bool inside = c->carry && a >= lo && a < lo + c->carry_cap;

    if (n == 0) {
        c->carry_len = 0;
        if (c->carry_cap > 4096) {
            free(c->carry);
            c->carry = NULL;
            c->carry_cap = 0;
        }
        return;
    }
    if (inside) {
        memmove(c->carry, p, n);
    } else {
        if (n > c->carry_cap) {
            free(c->carry);
            c->carry_cap = KP_MAX(n, 256);
            c->carry = kp_malloc(c->carry_cap);
        }
        memcpy(c->carry, p, n);
    }
    c->carry_len = n;
    if (c->carry_cap > 65536 && c->carry_cap / 4 > n) {
        c->carry_cap = KP_MAX(n, 4096);
        c->carry = kp_realloc(c->carry, c->carry_cap);
    }
}

/*
 * Frames data[0..len) into messages, each numbered on the connection
 * (tally->seq, rejected ones included). With `final` (EOF) a last line
 * without '\n' is a message and a partial frame is rejected; otherwise
 * the partial message is carried to the next read. A message whose topic
 * cannot take it now stalls the connection there (kp_client_stall).
 */
static void kp_client_frame(struct kp_client *c, const uint8_t *data,
                            size_t len, bool final)
{
    size_t off = 0, msg_len, shown;
    const uint8_t *msg;
    enum kp_frame_kind k;
    enum kp_reason why;
    enum kp_route r;
    struct kp_topic *t = NULL;

    while ((k = kp_frame_next(&c->framer, c->set->max_line, data, len, &off,
                              final, &msg, &msg_len, &shown)) !=
           KP_FRAME_NONE) {
        c->tally->seq++;
        if (k == KP_FRAME_MSG) {
            r = kp_client_route(c, msg, msg_len, &t, &why);
            if (r == KP_ROUTE_WAIT_ROOM || r == KP_ROUTE_WAIT_METADATA ||
                r == KP_ROUTE_WAIT_SPOOL) {
                c->tally->seq--; /* numbered when taken */
                kp_client_stall(c, t, r, data,
                                kp_frame_start(&c->framer, data, msg), len);
                return;
            }
            if (r != KP_ROUTE_REJECTED) {
                continue;
            }
        } else {
            why = k == KP_FRAME_TOO_LONG ? KP_REASON_TOO_LONG
                                         : KP_REASON_BAD_FORMAT;
        }
        kp_client_reject(c, why, msg, msg_len, shown);
    }
    kp_client_keep_carry(c, data + off, len - off);
    kp_client_set_partial(c, c->carry_len);
}

/* Everything read is framed (or stalled): the connection drains. */
static void kp_client_finish_eof(struct kp_client *c)
{
    kp_client_set_state(c, KP_CLIENT_DRAINING);
    kp_client_on_idle(c);
}

static void kp_client_eof(struct kp_client *c)
{
    c->eof_seen = true;
    if (c->carry_len) {
        size_t len = c->carry_len;
        c->carry_len = 0;
        kp_client_frame(c, c->carry, len, true);
    }
    if (!c->stalled) {
        kp_client_finish_eof(c);
    }
}

/* The result of one read(): bytes (> 0), 0 at EOF, KP_AGAIN, KP_ERROR. */
static ssize_t kp_client_read_result(struct kp_client *c, ssize_t n)
{
    if (n >= 0) {
        return n;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return KP_AGAIN;
    }
    kp_debug("client %llu: read: %s", (unsigned long long)c->id,
             strerror(errno));
    return KP_ERROR;
}

/* A read that did not stall lets the next one take twice as much, back
 * up to the budget. */
static void kp_client_grow_read(struct kp_client *c)
{
    if (!c->stalled && c->read_max < KP_CLIENT_READ_BUDGET) {
        c->read_max = KP_MIN(c->read_max * 2, (size_t)KP_CLIENT_READ_BUDGET);
    }
}

/*
 * Fewer bytes wait than the carry holds (a message trickling in): they
 * are read into the carry's tail, and only they are searched for a
 * message's end; the carry is framed once something is complete. No
 * read copies the partial message again.
 */
static ssize_t kp_client_read_tail(struct kp_client *c, size_t avail)
{
    size_t want = KP_MIN(KP_MAX(avail, 1), c->read_max);

    if (c->carry_cap - c->carry_len < want) {
        size_t grow = KP_MIN(c->carry_len, (size_t)KP_CLIENT_READ_BUDGET);
        c->carry_cap = c->carry_len + KP_MAX(want, grow);
        c->carry = kp_realloc(c->carry, c->carry_cap);
    }
    size_t room = KP_MIN(c->carry_cap - c->carry_len, c->read_max);
    ssize_t n = kp_client_read_result(
        c, read(c->fd, c->carry + c->carry_len, room));
    if (n <= 0) {
        return n;
    }
    size_t fresh = c->carry_len;
    c->carry_len += (size_t)n;
    if (kp_frame_ready(&c->framer, c->set->max_line, c->carry, c->carry_len,
                       fresh)) {
        size_t len = c->carry_len;
        c->carry_len = 0;
        kp_client_frame(c, c->carry, len, false);
    } else {
        kp_client_set_partial(c, c->carry_len);
    }
    kp_client_grow_read(c);
    return n;
}

/* One read per wake-up: the read size is each client's budget, so one busy
 * client cannot starve the others. Bytes go to the shared buffer behind a
 * copy of the carry when the carry is small, or when at least as many
 * bytes wait as it holds (the copy costs no more than the read), else to
 * the carry's tail. Returns bytes read, 0 at EOF, KP_AGAIN or KP_ERROR. */
static ssize_t kp_client_read_once(struct kp_client *c)
{
    struct kp_clients *cs = c->set;
    size_t carry = c->carry_len;
    int avail = 0;

    if (carry > KP_CLIENT_COPY_MAX) {
        if (ioctl(c->fd, FIONREAD, &avail) != 0 || avail < 0) {
            avail = 0;
        }
        if ((size_t)avail < carry || carry + (size_t)avail > cs->rbuf_cap) {
            return kp_client_read_tail(c, (size_t)avail);
        }
    }
    if (carry) {
        memcpy(cs->rbuf, c->carry, carry);
    }
    ssize_t n = kp_client_read_result(
        c, read(c->fd, cs->rbuf + carry,
                KP_MIN(cs->rbuf_cap - carry, c->read_max)));
    if (n > 0) {
        c->carry_len = 0;
        kp_client_frame(c, cs->rbuf, carry + (size_t)n, false);
        kp_client_grow_read(c);
    }
    return n;
}

/* Unfinished lines over their budget (buffer_bytes / 8): the largest is
 * rejected (buffer_full) and the rest of it skipped as it arrives; its
 * connection goes on with the next message. */
static void kp_clients_enforce_budget(struct kp_clients *cs)
{
    int64_t budget = (*cs->conf)->buffer_bytes / 8;

    while (cs->partial_bytes > budget) {
        struct kp_client *c, *big = NULL;
        TAILQ_FOREACH(c, &cs->partials, partial_link)
        {
            if ((!big || c->partial > big->partial) &&
                kp_frame_abandonable(&c->framer, c->carry, c->carry_len)) {
                big = c;
            }
        }
        if (!big) {
            return;
        }
        cs->n->partial_evictions++;
        big->tally->seq++;
        kp_client_reject(big, KP_REASON_BUFFER_FULL, big->carry,
                         big->carry_len, big->carry_len);
        kp_frame_abandon(&big->framer, big->carry, big->carry_len);
        kp_client_keep_carry(big, NULL, 0);
        kp_client_set_partial(big, 0);
    }
}

/* One client's turn: one read, and what it brings is framed. Returns the
 * bytes read (0 at EOF or on an error). */
static size_t kp_client_take_turn(struct kp_client *c)
{
    ssize_t n = kp_client_read_once(c);

    c->last_read_ms = (int64_t)(ev_now(c->set->loop) * 1000);
    if (n == 0 || n == KP_ERROR) {
        /* EOF, or the peer vanished: complete messages and the partial
         * last line are still messages. */
        kp_client_eof(c);
    } else if (n > 0) {
        kp_clients_enforce_budget(c->set);
        return (size_t)n;
    }
    return 0;
}

/* Readable clients read in the order they became readable until the
 * round's bytes are spent. One that may not read now (paused, stalled,
 * closed: its watcher is stopped) leaves the line; it queues again when
 * its watcher fires. */
static void kp_clients_take_turns(struct kp_clients *cs)
{
    struct kp_client *c;
    unsigned int round = ev_iteration(cs->loop);

    if (cs->round != round) {
        cs->round = round;
        cs->round_left = KP_CLIENT_ROUND_BYTES;
    }
    while (cs->round_left > 0 && (c = TAILQ_FIRST(&cs->turns)) != NULL) {
        TAILQ_REMOVE(&cs->turns, c, turn_link);
        c->in_turn = false;
        if (ev_is_active(&c->rio)) {
            size_t n = kp_client_take_turn(c);
            cs->round_left -= KP_MIN(n, cs->round_left);
        }
    }
}

/* Readable: the client joins the line (level-triggered, its watcher
 * fires again each round until it has read). */
static void kp_client_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_client *c = w->data;
    (void)loop;
    (void)revents;

    if (!c->in_turn) {
        c->in_turn = true;
        TAILQ_INSERT_TAIL(&c->set->turns, c, turn_link);
    }
    kp_clients_take_turns(c->set);
}

/* Output (receipts, summary) not written yet. */
static size_t kp_client_unwritten(const struct kp_client *c)
{
    return c->tally->out.len - c->out_off;
}

/* Whether a reading client has been quiet since `since_ms` (loop time):
 * nothing read for quiet_ms, nothing waiting to be read, nothing
 * unsettled, no receipt left to write. Closing it then loses nothing it
 * wrote, and it was told every fate. */
static bool kp_client_idle(const struct kp_client *c, int64_t now_ms,
                           int64_t since_ms, int64_t quiet_ms)
{
    int avail = 0;

    return c->state == KP_CLIENT_READING && !c->stalled &&
           c->tally->pending == 0 && kp_client_unwritten(c) == 0 &&
           now_ms - KP_MAX(c->last_read_ms, since_ms) >= quiet_ms &&
           ioctl(c->fd, FIONREAD, &avail) == 0 && avail == 0;
}

bool kp_clients_close_idle(struct kp_clients *cs, int64_t since_ms,
                           int64_t quiet_ms)
{
    struct kp_client *c, *next;
    int64_t now = (int64_t)(ev_now(cs->loop) * 1000);

    for (c = TAILQ_FIRST(&cs->open); c; c = next) {
        next = TAILQ_NEXT(c, link);
        if (kp_client_idle(c, now, since_ms, quiet_ms)) {
            /* No summary: it did not half-close, and is told nothing
             * that is not true. A partial line it left was never
             * received. */
            kp_client_close(c);
        }
    }
    return cs->cnt == 0;
}

/* ---- output: receipts and the summary ---- */

/* Writes what the tally's output holds. KP_OK when all of it is written,
 * KP_AGAIN when the socket is full, KP_ERROR when the peer is gone. */
static int kp_client_write_out(struct kp_client *c)
{
    struct kp_buf *out = &c->tally->out;

    while (c->out_off < out->len) {
        ssize_t n = send(c->fd, out->data + c->out_off,
                         out->len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->out_off >= out->len / 2) {
                /* written half: drop it, so the buffer does not creep */
                kp_buf_consume(out, c->out_off);
                c->out_off = 0;
            }
            return KP_AGAIN;
        }
        if (n < 0) {
            kp_debug("client %llu: write: %s", (unsigned long long)c->id,
                     strerror(errno));
            return KP_ERROR;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = 0;
    out->len = 0;
    if (out->cap > 65536 && c->tally->pending == 0) {
        /* An idle connection keeps no large buffer; a busy one keeps it,
         * or each batch's receipts would fault in fresh pages. */
        kp_buf_deinit(out);
    }
    return KP_OK;
}

/* A write failed: nobody reads this connection's output any more. Its
 * messages go on (a writer that closed both ways loses nothing). */
static void kp_client_go_deaf(struct kp_client *c)
{
    c->deaf = true;
    c->out_off = 0;
    kp_buf_deinit(&c->tally->out);
    if (c->state != KP_CLIENT_READING) {
        kp_client_close(c);
    }
}

/* Writes the output; arms EV_WRITE only after a short write; reads again
 * once the unread backlog halved; closes after the summary. */
static void kp_client_flush(struct kp_client *c)
{
    int rc = kp_client_write_out(c);

    if (rc == KP_AGAIN) {
        ev_io_start(c->set->loop, &c->wio);
    } else {
        ev_io_stop(c->set->loop, &c->wio);
    }
    if (rc == KP_ERROR) {
        kp_client_go_deaf(c);
        return;
    }
    if (c->blocked && kp_client_unwritten(c) <= KP_CLIENT_OUT_MAX / 2) {
        kp_debug("client %llu: receipts read, reading again",
                 (unsigned long long)c->id);
        c->blocked = false;
        kp_client_set_state(c, c->state);
    }
    if (rc == KP_OK && c->state == KP_CLIENT_REPLYING) {
        kp_client_close(c);
    }
}

static void kp_client_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    kp_client_flush(w->data);
}

/*
 * Output was appended (receipts, summary): written from the prepare phase,
 * once for everything appended meanwhile, unless EV_WRITE already waits.
 * A writer that leaves KP_CLIENT_OUT_MAX unread is not read any more.
 */
static void kp_client_on_output(void *owner)
{
    struct kp_client *c = owner;

    if (c->deaf) {
        c->tally->out.len = 0;
        return;
    }
    if (!c->queued && !ev_is_active(&c->wio)) {
        TAILQ_INSERT_TAIL(&c->set->writable, c, out_link);
        c->queued = true;
    }
    if (!c->blocked && kp_client_unwritten(c) >= KP_CLIENT_OUT_MAX) {
        kp_debug("client %llu: %zu bytes of receipts unread, not reading",
                 (unsigned long long)c->id, kp_client_unwritten(c));
        c->set->n->receipt_pauses++;
        c->blocked = true;
        kp_client_set_state(c, c->state);
    }
}

/* The tally has nothing pending: a draining client answers its summary
 * after its receipts, then closes. */
static void kp_client_on_idle(void *owner)
{
    struct kp_client *c = owner;
    struct kp_tally *t = c->tally;
    char line[96];

    if (c->state != KP_CLIENT_DRAINING || t->pending != 0) {
        return;
    }
    if (c->deaf) {
        kp_client_close(c);
        return;
    }
    int n = snprintf(line, sizeof(line),
                     "delivered=%llu failed=%llu rejected=%llu\n",
                     (unsigned long long)t->delivered,
                     (unsigned long long)t->failed,
                     (unsigned long long)t->rejected);
    kp_buf_put_bytes(&t->out, line, (size_t)n);
    kp_client_set_state(c, KP_CLIENT_REPLYING);
    kp_client_on_output(c);
}
