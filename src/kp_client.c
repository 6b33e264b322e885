/*
 * kp_client.c - a client connection: framing lines out of the bytes it
 * writes, handing each message to its topic, and answering its half-close
 * with `delivered=N failed=F rejected=R` once all its messages are settled.
 */
#include "kp_client.h"

#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_conf.h"
#include "kp_ctx.h"
#include "kp_listener.h"
#include "kp_log.h"
#include "kp_tally.h"
#include "kp_topic.h"

const char *const kp_client_state_names[KP_CLIENT__COUNT] = {
    "reading", "draining", "replying", "closed"};

/* Bytes one client may read per wake-up: its share of the loop. */
#define KP_CLIENT_READ_BUDGET (256 * 1024)

static struct kp_ratelimit kp_client_reject_rl;

static void kp_client_on_read(struct ev_loop *loop, ev_io *w, int revents);
static void kp_client_on_write(struct ev_loop *loop, ev_io *w, int revents);

static void kp_client_set_state(struct kp_client *c,
                                enum kp_client_state state)
{
    kp_debug("client %llu: %s -> %s", (unsigned long long)c->id,
             kp_client_state_names[c->state], kp_client_state_names[state]);
    c->state = state;
    if (state != KP_CLIENT_READING) {
        ev_io_stop(c->ctx->loop, &c->rio);
    }
    if (state != KP_CLIENT_REPLYING) {
        ev_io_stop(c->ctx->loop, &c->wio);
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
struct kp_client *kp_client_create(struct kp_ctx *ctx, struct kp_listener *l,
                                   int fd)
{
    struct kp_client *c = kp_calloc(1, sizeof(*c));
    struct ucred cred;
    socklen_t len = sizeof(cred);

    c->ctx = ctx;
    c->listener = l;
    c->fd = fd;
    c->id = ++ctx->next_client_id;
    c->tally = kp_tally_create(c);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        c->peer_pid = cred.pid;
        c->peer_uid = cred.uid;
        c->peer_gid = cred.gid;
    }
    kp_client_peer_headers(c);
    ev_io_init(&c->rio, kp_client_on_read, fd, EV_READ);
    ev_io_init(&c->wio, kp_client_on_write, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    TAILQ_INSERT_TAIL(&ctx->clients, c, link);
    ctx->client_cnt++;
    c->state = KP_CLIENT_READING;
    if (ctx->backpressure) {
        c->paused = true;
    } else {
        ev_io_start(ctx->loop, &c->rio);
    }
    kp_debug("client %llu: connected (uid %ld gid %ld pid %ld)",
             (unsigned long long)c->id, (long)c->peer_uid,
             (long)c->peer_gid, (long)c->peer_pid);
    return c;
}

/* Frees a closed client; called from the context's prepare watcher. */
void kp_client_destroy(struct kp_client *c)
{
    free(c->carry);
    kp_tally_put(c->tally);
    free(c);
}

void kp_client_close(struct kp_client *c)
{
    struct kp_ctx *ctx = c->ctx;

    if (c->state == KP_CLIENT_CLOSED) {
        return;
    }
    kp_client_set_state(c, KP_CLIENT_CLOSED);
    close(c->fd);
    c->fd = -1;
    c->tally->client = NULL;
    TAILQ_REMOVE(&ctx->clients, c, link);
    TAILQ_INSERT_TAIL(&ctx->closed, c, link);
    ctx->client_cnt--;
}

void kp_client_pause(struct kp_client *c)
{
    if (!c->paused) {
        c->paused = true;
        ev_io_stop(c->ctx->loop, &c->rio);
    }
}

void kp_client_resume(struct kp_client *c)
{
    if (c->paused) {
        c->paused = false;
        if (c->state == KP_CLIENT_READING) {
            ev_io_start(c->ctx->loop, &c->rio);
        }
    }
}

static void kp_client_reject(struct kp_client *c, enum kp_reject why,
                             const uint8_t *line, size_t len)
{
    struct kp_ctx *ctx = c->ctx;

    ctx->n.rejected++;
    ctx->n.rejected_by[why]++;
    c->tally->rejected++;
    kp_log_rl(&kp_client_reject_rl, KP_LOG_WARNING,
              "client %llu: line rejected (%s, %zu bytes): %.*s%s",
              (unsigned long long)c->id, kp_reject_names[why], len,
              (int)KP_MIN(len, 60), (const char *)line,
              len > 60 ? "..." : "");
}

static struct kp_topic *kp_client_topic(struct kp_client *c, const char *name,
                                        size_t len)
{
    struct kp_topic *t = c->last_topic;

    if (t && t->name_len == len && memcmp(t->name, name, len) == 0) {
        return t;
    }
    t = kp_topic_lookup(&c->ctx->topics, name, len);
    if (!t) {
        t = kp_topic_create(c->ctx, name, len);
    }
    c->last_topic = t;
    return t;
}

/* One complete line (without its '\n'). */
static void kp_client_line(struct kp_client *c, const uint8_t *line,
                           size_t len)
{
    struct kp_ctx *ctx = c->ctx;
    const struct kp_listener_conf *lc = c->listener->conf;
    struct kp_msg m;
    enum kp_reject why;

    if (len == 0) {
        return; /* empty lines are skipped */
    }
    if (len > ctx->max_line) {
        kp_client_reject(c, KP_REJ_TOO_LONG, line, len);
        return;
    }
    why = kp_line_parse(lc->format, lc->separator, lc->topic, line, len,
                        &ctx->scratch, &m);
    if (why == KP_REJ_NONE && lc->allow_topic_cnt &&
        !kp_topic_allowed(lc->allow_topics, lc->allow_topic_cnt, m.topic,
                          m.topic_len)) {
        why = KP_REJ_TOPIC_DENIED;
    }
    if (why == KP_REJ_NONE) {
        struct kp_topic *t = kp_client_topic(c, m.topic, m.topic_len);
        int64_t ts = m.timestamp >= 0 ? m.timestamp
                                      : (int64_t)(ev_now(ctx->loop) * 1000);
        why = kp_topic_route(ctx, t, &m, ts, c->tally,
                             lc->peer_headers ? c->peer_hdrs : NULL,
                             lc->peer_headers ? 3 : 0);
    }
    if (why != KP_REJ_NONE) {
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
    size_t max_line = c->ctx->max_line;

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
    if (rest > max_line) {
        kp_client_reject(c, KP_REJ_TOO_LONG, p, rest);
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
    kp_client_on_settled(c);
}

/* One read per wake-up: the read size is each client's budget, so one busy
 * client cannot starve the others. Returns bytes read, 0 at EOF, -1 on
 * EAGAIN, -2 on error. */
/*
 * A long partial line grows in place at the end of the client's carry, so
 * a line trickled in small writes is not copied again on every read; only
 * the new bytes are searched for its end.
 */
static ssize_t kp_client_read_long(struct kp_client *c)
{
    size_t room = KP_CLIENT_READ_BUDGET;
    ssize_t n;

    if (c->carry_cap - c->carry_len < room) {
        c->carry_cap = KP_MAX(c->carry_cap * 2, c->carry_len + room);
        c->carry = kp_realloc(c->carry, c->carry_cap);
    }
    n = read(c->fd, c->carry + c->carry_len, room);
    if (n <= 0) {
        return n;
    }
    bool end = memchr(c->carry + c->carry_len, '\n', (size_t)n) != NULL;
    c->carry_len += (size_t)n;
    if (end || c->carry_len > c->ctx->max_line) {
        size_t len = c->carry_len;
        c->carry_len = 0;
        kp_client_frame(c, c->carry, len, false);
    }
    return n;
}

static ssize_t kp_client_read_once(struct kp_client *c)
{
    struct kp_ctx *ctx = c->ctx;
    size_t carry = c->carry_len;
    ssize_t n;

    if (carry >= KP_CLIENT_READ_BUDGET && !c->discarding) {
        n = kp_client_read_long(c);
        if (n > 0 || n == 0) {
            return n;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return -1;
        }
        return -2;
    }
    if (carry) {
        memcpy(ctx->rbuf, c->carry, carry);
    }
    n = read(c->fd, ctx->rbuf + carry,
             KP_MIN(ctx->rbuf_cap - carry, KP_CLIENT_READ_BUDGET));
    if (n > 0) {
        c->carry_len = 0;
        kp_client_frame(c, ctx->rbuf, carry + (size_t)n, false);
        return n;
    }
    if (n == 0) {
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return -1;
    }
    kp_debug("client %llu: read: %s", (unsigned long long)c->id,
             strerror(errno));
    return -2;
}

static void kp_client_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_client *c = w->data;
    (void)loop;
    (void)revents;

    ssize_t n = kp_client_read_once(c);
    if (n == 0 || n == -2) {
        /* EOF, or the peer vanished: complete lines and the partial last
         * one are still messages. */
        kp_client_eof(c);
    }
}

void kp_client_drain_now(struct kp_client *c)
{
    if (c->state != KP_CLIENT_READING) {
        return;
    }
    for (;;) {
        ssize_t n = kp_client_read_once(c);
        if (n <= 0) {
            break;
        }
    }
    kp_client_eof(c);
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

void kp_client_on_settled(struct kp_client *c)
{
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
        ev_io_start(c->ctx->loop, &c->wio);
    } else {
        kp_client_close(c);
    }
}
