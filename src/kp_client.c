/*
 * kp_client.c - client connections: framing lines out of the bytes they
 * write, handing each message to the router, and answering a half-close
 * with `delivered=N failed=F rejected=R` once all its messages are settled.
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

/* Bytes one client may read per wake-up: its share of the loop. */
#define KP_CLIENT_READ_BUDGET (256 * 1024)
/* Bytes of a rejected line shown in the log (escaped). */
#define KP_CLIENT_LOG_BYTES 64

static struct kp_ratelimit kp_client_reject_rl;

static void kp_client_on_read(struct ev_loop *loop, ev_io *w, int revents);
static void kp_client_on_write(struct ev_loop *loop, ev_io *w, int revents);
static void kp_client_on_idle(void *owner);

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
    kp_uidmap_init(&cs->per_uid);
    kp_line_scratch_init(&cs->scratch);
    kp_clients_reconf(cs);
}

static void kp_client_destroy(struct kp_client *c)
{
    free(c->carry);
    kp_tally_put(c->tally);
    free(c);
}

void kp_clients_reap(struct kp_clients *cs)
{
    struct kp_client *c;

    while ((c = TAILQ_FIRST(&cs->closed)) != NULL) {
        TAILQ_REMOVE(&cs->closed, c, link);
        kp_client_destroy(c);
    }
}

void kp_clients_close_all(struct kp_clients *cs)
{
    struct kp_client *c;

    while ((c = TAILQ_FIRST(&cs->open)) != NULL) {
        kp_client_close(c);
    }
}

void kp_clients_deinit(struct kp_clients *cs)
{
    kp_clients_close_all(cs);
    kp_clients_reap(cs);
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
    if (state != KP_CLIENT_READING || c->paused) {
        ev_io_stop(loop, &c->rio);
    } else {
        ev_io_start(loop, &c->rio);
    }
    if (state != KP_CLIENT_REPLYING) {
        ev_io_stop(loop, &c->wio);
    }
}

static void kp_client_peer_headers(struct kp_client *c)
{
    static const char *const names[3] = {"peer.uid", "peer.gid", "peer.pid"};
    long vals[3] = {(long)c->peer_uid, (long)c->peer_gid, (long)c->peer_pid};

    for (int i = 0; i < 3; i++) {
        int n = snprintf(c->peer_vals[i], sizeof(c->peer_vals[i]), "%ld",
                         vals[i]);
        c->peer_hdrs[i] = (struct kp_header){
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
    cs->n->connections++;
    c->tally = kp_tally_create(kp_client_on_idle, c);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        c->peer_pid = cred.pid;
        c->peer_uid = cred.uid;
        c->peer_gid = cred.gid;
    }
    kp_client_peer_headers(c);
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

static void kp_client_reject(struct kp_client *c, enum kp_reason why,
                             const uint8_t *line, size_t len)
{
    struct kp_counters *n = c->set->n;
    char shown[KP_CLIENT_LOG_BYTES * 4 + 8];

    n->rejected++;
    n->rejected_by[why]++;
    c->tally->rejected++;
    if (kp_log_get_level() >= KP_LOG_WARNING) {
        kp_client_escape(shown, sizeof(shown), line, len);
        kp_log_rl(&kp_client_reject_rl, KP_LOG_WARNING,
                  "client %llu (pid %ld uid %ld): line rejected (%s, %zu "
                  "bytes): %s",
                  (unsigned long long)c->id, (long)c->peer_pid,
                  (long)c->peer_uid, kp_reason_names[why], len, shown);
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

/* Parses and routes one line; returns why it is rejected, or NONE. */
static enum kp_reason kp_client_route(struct kp_client *c,
                                      const uint8_t *line, size_t len)
{
    struct kp_clients *cs = c->set;
    const struct kp_listener_conf *lc = c->lc;
    struct kp_msg m;

    if (len > cs->max_line) {
        return KP_REASON_TOO_LONG;
    }
    enum kp_reason why = kp_line_parse(lc->format, lc->separator, lc->topic,
                                       line, len, &cs->scratch, &m);
    if (why != KP_REASON_NONE) {
        return why;
    }
    if (lc->allow_topic_cnt &&
        !kp_topic_allowed(lc->allow_topics, lc->allow_topic_cnt, m.topic,
                          m.topic_len)) {
        return KP_REASON_TOPIC_DENIED;
    }
    struct kp_topic *t = kp_client_topic(c, m.topic, m.topic_len);
    if (!t) {
        return KP_REASON_TOO_MANY_TOPICS;
    }
    int64_t ts = m.timestamp >= 0 ? m.timestamp
                                  : (int64_t)(ev_now(cs->loop) * 1000);
    return kp_router_route(cs->router, t, &m, ts, c->tally,
                           lc->peer_headers ? c->peer_hdrs : NULL,
                           lc->peer_headers ? 3 : 0);
}

/* One complete line (without its '\n'). */
static void kp_client_line(struct kp_client *c, const uint8_t *line,
                           size_t len)
{
    if (len == 0) {
        return; /* empty lines are skipped */
    }
    enum kp_reason why = kp_client_route(c, line, len);
    if (why != KP_REASON_NONE) {
        kp_client_reject(c, why, line, len);
    }
}

static void kp_client_keep_carry(struct kp_client *c, const uint8_t *p,
                                 size_t n)
{
    if (n > c->carry_cap) {
        /* p never points into carry here: framing in place (below) only
         * ever keeps a tail of the carry itself */
        c->carry_cap = KP_MAX(n, 256);
        free(c->carry);
        c->carry = kp_malloc(c->carry_cap);
    }
    if (n) {
        memmove(c->carry, p, n);
    }
    c->carry_len = n;
    if (n == 0 && c->carry_cap > 4096) {
        /* an idle connection keeps no large buffer */
        free(c->carry);
        c->carry = NULL;
        c->carry_cap = 0;
    }
}

/*
 * Frames data[0..len) into lines. With `final` (EOF) a last line without
 * '\n' is a message; otherwise it is carried to the next read. A partial
 * line longer than message_max_bytes is rejected once and the rest of it
 * skipped up to the next '\n'.
 */
static void kp_client_frame(struct kp_client *c, const uint8_t *data,
                            size_t len, bool final)
{
    const uint8_t *p = data, *end = data + len, *nl;

    if (c->discarding) {
        nl = memchr(p, '\n', len);
        if (!nl) {
            kp_client_keep_carry(c, NULL, 0);
            return;
        }
        p = nl + 1;
        c->discarding = false;
    }
    while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        kp_client_line(c, p, (size_t)(nl - p));
        p = nl + 1;
    }
    size_t rest = (size_t)(end - p);
    if (rest > c->set->max_line) {
        kp_client_reject(c, KP_REASON_TOO_LONG, p, rest);
        c->discarding = !final;
        rest = 0;
    } else if (final && rest) {
        kp_client_line(c, p, rest);
        rest = 0;
    }
    kp_client_keep_carry(c, p, rest);
}

static void kp_client_eof(struct kp_client *c)
{
    if (c->carry_len && !c->discarding) {
        kp_client_frame(c, c->carry, c->carry_len, true);
    }
    c->carry_len = 0;
    kp_client_set_state(c, KP_CLIENT_DRAINING);
    kp_client_on_idle(c);
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

/*
 * A long partial line grows in place at the end of the client's carry, so
 * a line trickled in small writes is not copied again on every read; only
 * the new bytes are searched for its end.
 */
static ssize_t kp_client_read_long(struct kp_client *c)
{
    size_t room = KP_CLIENT_READ_BUDGET;

    if (c->carry_cap - c->carry_len < room) {
        c->carry_cap = KP_MAX(c->carry_cap * 2, c->carry_len + room);
        c->carry = kp_realloc(c->carry, c->carry_cap);
    }
    ssize_t n = kp_client_read_result(
        c, read(c->fd, c->carry + c->carry_len, room));
    if (n <= 0) {
        return n;
    }
    bool end = memchr(c->carry + c->carry_len, '\n', (size_t)n) != NULL;
    c->carry_len += (size_t)n;
    if (end || c->carry_len > c->set->max_line) {
        size_t len = c->carry_len;
        c->carry_len = 0;
        kp_client_frame(c, c->carry, len, false);
    }
    return n;
}

/* One read per wake-up: the read size is each client's budget, so one busy
 * client cannot starve the others. Returns bytes read, 0 at EOF, KP_AGAIN
 * or KP_ERROR. */
static ssize_t kp_client_read_once(struct kp_client *c)
{
    struct kp_clients *cs = c->set;
    size_t carry = c->carry_len;

    if (carry >= KP_CLIENT_READ_BUDGET && !c->discarding) {
        return kp_client_read_long(c);
    }
    if (carry) {
        memcpy(cs->rbuf, c->carry, carry);
    }
    ssize_t n = kp_client_read_result(
        c, read(c->fd, cs->rbuf + carry,
                KP_MIN(cs->rbuf_cap - carry, KP_CLIENT_READ_BUDGET)));
    if (n > 0) {
        c->carry_len = 0;
        kp_client_frame(c, cs->rbuf, carry + (size_t)n, false);
    }
    return n;
}

static void kp_client_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_client *c = w->data;
    (void)revents;

    ssize_t n = kp_client_read_once(c);
    c->last_read_ms = (int64_t)(ev_now(loop) * 1000);
    if (n == 0 || n == KP_ERROR) {
        /* EOF, or the peer vanished: complete lines and the partial last
         * one are still messages. */
        kp_client_eof(c);
    }
}

/* Whether a reading client has been quiet since `since_ms` (loop time):
 * nothing read for quiet_ms, nothing waiting to be read, nothing
 * unsettled. Closing it then loses nothing it wrote. */
static bool kp_client_idle(const struct kp_client *c, int64_t now_ms,
                           int64_t since_ms, int64_t quiet_ms)
{
    int avail = 0;

    return c->state == KP_CLIENT_READING && c->tally->pending == 0 &&
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

static int kp_client_write_reply(struct kp_client *c)
{
    while (c->reply_off < c->reply_len) {
        ssize_t n = send(c->fd, c->reply + c->reply_off,
                         c->reply_len - c->reply_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                return KP_AGAIN;
            }
            return KP_ERROR; /* closed both ways: it loses nothing */
        }
        c->reply_off += (size_t)n;
    }
    return KP_OK;
}

static void kp_client_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_client *c = w->data;
    (void)loop;
    (void)revents;

    if (kp_client_write_reply(c) != KP_AGAIN) {
        kp_client_close(c);
    }
}

/* The tally has nothing pending: a draining client answers its summary. */
static void kp_client_on_idle(void *owner)
{
    struct kp_client *c = owner;
    struct kp_tally *t = c->tally;

    if (c->state != KP_CLIENT_DRAINING || t->pending != 0) {
        return;
    }
    c->reply_len = (size_t)snprintf(
        c->reply, sizeof(c->reply), "delivered=%llu failed=%llu rejected=%llu\n",
        (unsigned long long)t->delivered, (unsigned long long)t->failed,
        (unsigned long long)t->rejected);
    c->reply_off = 0;
    kp_client_set_state(c, KP_CLIENT_REPLYING);
    int rc = kp_client_write_reply(c);
    if (rc == KP_AGAIN) {
        ev_io_start(c->set->loop, &c->wio);
    } else {
        kp_client_close(c);
    }
}
