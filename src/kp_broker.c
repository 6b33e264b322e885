/*
 * kp_broker.c - a broker connection: nonblocking connect, ApiVersions
 * negotiation, pipelined requests written with writev, responses matched by
 * correlation id and handed to each request's owner, throttling, request
 * timeouts and reconnect backoff.
 */
#include "kp_broker.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_conf.h"
#include "kp_kerr.h"
#include "kp_log.h"

#define KP_BROKER_RBUF_MIN (64 * 1024)
#define KP_BROKER_MAX_FRAME (64 * 1024 * 1024)
#define KP_BROKER_BACKOFF_MIN_MS 20
#define KP_BROKER_TOO_OLD_FAILURES 30 /* waits the longest backoff */
#define KP_SW_NAME "kproxyd"

const char *const kp_broker_state_names[KP_BROKER__COUNT] = {
    "init", "connecting", "apiversions", "up", "backoff"};
const char *const kp_broker_api_names[KP_BAPI__COUNT] = {
    "produce", "metadata", "api_versions", "init_producer_id"};

static struct kp_ratelimit kp_broker_rl;

static void kp_broker_on_read(struct ev_loop *loop, ev_io *w, int revents);
static void kp_broker_on_write(struct ev_loop *loop, ev_io *w, int revents);
static void kp_broker_on_timer(struct ev_loop *loop, ev_timer *w,
                               int revents);
static void kp_broker_on_throttle(struct ev_loop *loop, ev_timer *w,
                                  int revents);
static void kp_broker_write(struct kp_broker *b);

struct kp_broker *kp_broker_create(struct ev_loop *loop,
                                   struct kp_conf *const *conf,
                                   int32_t node_id, const char *host,
                                   int port,
                                   const struct kp_broker_hooks *hooks,
                                   void *arg)
{
    struct kp_broker *b = kp_calloc(1, sizeof(*b));
    b->loop = loop;
    b->conf = conf;
    b->hooks = hooks;
    b->arg = arg;
    b->node_id = node_id;
    b->host = kp_strdup(host);
    b->port = port;
    b->fd = -1;
    b->state = KP_BROKER_INIT;
    TAILQ_INIT(&b->reqs);
    ev_init(&b->rio, kp_broker_on_read);
    ev_init(&b->wio, kp_broker_on_write);
    ev_init(&b->timer, kp_broker_on_timer);
    ev_init(&b->throttle_timer, kp_broker_on_throttle);
    b->rio.data = b->wio.data = b->timer.data = b->throttle_timer.data = b;
    for (int i = 0; i < KP_API_KEY_MAX; i++) {
        b->api_min[i] = b->api_max[i] = -1;
    }
    return b;
}

void kp_broker_destroy(struct kp_broker *b)
{
    kp_broker_retire(b);
    ev_timer_stop(b->loop, &b->throttle_timer);
    kp_buf_deinit(&b->rbuf);
    free(b->host);
    free(b);
}

const char *kp_broker_name(const struct kp_broker *b)
{
    static char name[320];
    if (b->node_id >= 0) {
        snprintf(name, sizeof(name), "broker %d (%s:%d)", b->node_id,
                 b->host, b->port);
    } else {
        snprintf(name, sizeof(name), "bootstrap %s:%d", b->host, b->port);
    }
    return name;
}

static int kp_broker_request_timeout(const struct kp_broker *b)
{
    return (*b->conf)->producer.request_timeout_ms;
}

static void kp_broker_timer_in(struct kp_broker *b, int64_t ms)
{
    ev_timer_stop(b->loop, &b->timer);
    ev_timer_set(&b->timer, (double)KP_MAX(ms, 0) / 1000.0, 0.);
    ev_timer_start(b->loop, &b->timer);
}

/* The next reconnect's delay: retry_backoff_ms doubling per failure up to
 * reconnect_backoff_max_ms, never below KP_BROKER_BACKOFF_MIN_MS (no busy
 * loop whatever the settings), with jitter. */
static int64_t kp_broker_backoff_ms(const struct kp_broker *b)
{
    const struct kp_conf *c = *b->conf;
    int64_t lo = KP_MAX(c->producer.retry_backoff_ms,
                        KP_BROKER_BACKOFF_MIN_MS);
    int64_t hi = c->reconnect_backoff_max_ms > 0
                     ? c->reconnect_backoff_max_ms
                     : c->producer.retry_backoff_max_ms;
    return kp_backoff_ms(lo, KP_MAX(hi, lo), b->failures - 1);
}

/* Arms the timer for the head request's deadline (or stops it). */
static void kp_broker_arm_deadline(struct kp_broker *b)
{
    struct kp_request *r = TAILQ_FIRST(&b->reqs);

    if (r) {
        kp_broker_timer_in(b, r->deadline_ms - kp_mono_ms());
    } else {
        ev_timer_stop(b->loop, &b->timer);
    }
}

/*
 * The one place a state's watchers are set: CONNECTING waits for
 * writability under the connect timeout; APIVERSIONS and UP read, with
 * the timer on the head request's deadline (and write only after a short
 * write); BACKOFF waits on its timer; INIT waits for nothing.
 */
static void kp_broker_set_state(struct kp_broker *b,
                                enum kp_broker_state state)
{
    enum kp_broker_state from = b->state;

    if (from != state) {
        kp_debug("%s: %s -> %s", kp_broker_name(b),
                 kp_broker_state_names[from], kp_broker_state_names[state]);
    }
    b->state = state;
    ev_io_stop(b->loop, &b->rio);
    ev_io_stop(b->loop, &b->wio);
    ev_timer_stop(b->loop, &b->timer);
    switch (state) {
    case KP_BROKER_CONNECTING:
        ev_io_set(&b->rio, b->fd, EV_READ);
        ev_io_set(&b->wio, b->fd, EV_WRITE);
        ev_io_start(b->loop, &b->wio);
        kp_broker_timer_in(b, kp_broker_request_timeout(b));
        break;
    case KP_BROKER_APIVERSIONS:
    case KP_BROKER_UP:
        ev_io_start(b->loop, &b->rio);
        kp_broker_arm_deadline(b);
        break;
    case KP_BROKER_BACKOFF:
        kp_broker_timer_in(b, kp_broker_backoff_ms(b));
        break;
    case KP_BROKER_INIT:
    case KP_BROKER__COUNT:
        break;
    }
    if (from != state) {
        b->hooks->state(b->arg, b, from);
    }
}

static void kp_request_free(struct kp_request *r)
{
    kp_req_deinit(&r->req);
    free(r);
}

/* Hands a request back to its owner, then frees it. */
static void kp_broker_complete(struct kp_broker *b, struct kp_request *r,
                               enum kp_req_status st, const uint8_t *body,
                               size_t len)
{
    r->cb(r->arg, b, r, st, body, len);
    kp_request_free(r);
}

void kp_broker_close(struct kp_broker *b, const char *why, bool backoff)
{
    struct kp_request_q failed = TAILQ_HEAD_INITIALIZER(failed);
    struct kp_request *r;

    if (b->state == KP_BROKER_INIT || b->state == KP_BROKER_BACKOFF) {
        return;
    }
    if (why) {
        kp_log_rl(&kp_broker_rl,
                  b->state == KP_BROKER_UP ? KP_LOG_WARNING : KP_LOG_INFO,
                  "%s: %s", kp_broker_name(b), why);
        snprintf(b->last_error, sizeof(b->last_error), "%s", why);
    }
    close(b->fd);
    b->fd = -1;
    b->conn_gen++;
    kp_buf_reset(&b->rbuf);
    if (b->rbuf.cap > 4 * KP_BROKER_RBUF_MIN) {
        kp_buf_deinit(&b->rbuf);
    }
    TAILQ_CONCAT(&failed, &b->reqs, link);
    b->write_head = NULL;
    b->inflight = 0;
    if (backoff && !b->retired) {
        b->failures++;
        kp_broker_set_state(b, KP_BROKER_BACKOFF);
    } else {
        kp_broker_set_state(b, KP_BROKER_INIT);
    }
    /* In-flight work goes back to its owners in its original order. */
    while ((r = TAILQ_FIRST(&failed)) != NULL) {
        TAILQ_REMOVE(&failed, r, link);
        kp_broker_complete(b, r, KP_REQ_FAILED, NULL, 0);
    }
}

/* Resolves b's address; a failure is logged and backs off. Name
 * resolution is synchronous here (numeric addresses and /etc/hosts). */
static struct addrinfo *kp_broker_resolve(struct kp_broker *b)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    char port[16];

    snprintf(port, sizeof(port), "%d", b->port);
    int rc = getaddrinfo(b->host, port, &hints, &ai);
    if (rc != 0) {
        kp_log_rl(&kp_broker_rl, KP_LOG_WARNING, "%s: resolve: %s",
                  kp_broker_name(b), gai_strerror(rc));
        snprintf(b->last_error, sizeof(b->last_error), "resolve: %s",
                 gai_strerror(rc));
        return NULL;
    }
    return ai;
}

/* A connect that failed before it started: retried after backoff like
 * any other failure (EMFILE must not leave the broker stranded). */
static void kp_broker_connect_failed(struct kp_broker *b, const char *why)
{
    if (why) {
        kp_log_rl(&kp_broker_rl, KP_LOG_WARNING, "%s: %s", kp_broker_name(b),
                  why);
        snprintf(b->last_error, sizeof(b->last_error), "%s", why);
    }
    b->failures++;
    kp_broker_set_state(b, KP_BROKER_BACKOFF);
}

void kp_broker_connect(struct kp_broker *b)
{
    char why[128];
    int one = 1;

    b->retired = false;
    if (b->state != KP_BROKER_INIT) {
        return;
    }
    struct addrinfo *ai = kp_broker_resolve(b);
    if (!ai) {
        kp_broker_connect_failed(b, NULL);
        return;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    if (fd < 0) {
        snprintf(why, sizeof(why), "socket: %s", strerror(errno));
        freeaddrinfo(ai);
        kp_broker_connect_failed(b, why);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    b->fd = fd;
    kp_broker_set_state(b, KP_BROKER_CONNECTING);
    if (rc < 0 && errno != EINPROGRESS) {
        snprintf(why, sizeof(why), "connect: %s", strerror(errno));
        kp_broker_close(b, why, true);
    }
}

void kp_broker_set_addr(struct kp_broker *b, const char *host, int port)
{
    if (strcmp(b->host, host) == 0 && b->port == port) {
        return;
    }
    kp_info("%s: address changes to %s:%d", kp_broker_name(b), host, port);
    bool was_connected = b->state != KP_BROKER_INIT;
    free(b->host);
    b->host = kp_strdup(host);
    b->port = port;
    kp_broker_close(b, "address changed", false);
    if (was_connected && !b->retired) {
        kp_broker_connect(b);
    }
}

void kp_broker_retire(struct kp_broker *b)
{
    b->retired = true;
    kp_broker_close(b, NULL, false);
    if (b->state == KP_BROKER_BACKOFF) {
        kp_broker_set_state(b, KP_BROKER_INIT);
    }
}

int16_t kp_broker_version(const struct kp_broker *b, int16_t api_key)
{
    if (api_key < 0 || api_key >= KP_API_KEY_MAX) {
        return -1;
    }
    return kp_proto_pick_version(api_key, b->api_min[api_key],
                                 b->api_max[api_key]);
}

struct kp_request *kp_broker_request_start(struct kp_broker *b,
                                           int16_t api_key, int16_t version)
{
    struct kp_request *r = kp_calloc(1, sizeof(*r));
    r->corr_id = b->next_corr++;
    if (b->next_corr < 0) {
        b->next_corr = 0;
    }
    r->api_key = api_key;
    r->version = version;
    kp_req_init(&r->req);
    return r;
}

void kp_broker_request_send(struct kp_broker *b, struct kp_request *r,
                            kp_request_cb cb, void *arg)
{
    r->cb = cb;
    r->arg = arg;
    r->deadline_ms = kp_mono_ms() + kp_broker_request_timeout(b);
    TAILQ_INSERT_TAIL(&b->reqs, r, link);
    if (!b->write_head) {
        b->write_head = r;
    }
    b->inflight++;
    b->requests++;
    if (!ev_is_active(&b->timer)) {
        kp_broker_arm_deadline(b);
    }
    kp_broker_write(b);
}

/* ---- handshake ---- */

static void kp_broker_on_apiversions(void *arg, struct kp_broker *b,
                                     struct kp_request *r,
                                     enum kp_req_status st,
                                     const uint8_t *body, size_t len);

static void kp_broker_send_apiversions(struct kp_broker *b, int16_t version)
{
    struct kp_request *r =
        kp_broker_request_start(b, KP_API_APIVERSIONS, version);
    kp_proto_enc_apiversions(&r->req, version, r->corr_id,
                             (*b->conf)->client_id, KP_SW_NAME, KP_VERSION);
    b->apiversions_ver = version;
    kp_broker_request_send(b, r, kp_broker_on_apiversions, NULL);
}

/* Whether the broker speaks what kproxyd needs; logs why not. */
static bool kp_broker_usable(struct kp_broker *b)
{
    if (kp_broker_version(b, KP_API_PRODUCE) >= 0 &&
        kp_broker_version(b, KP_API_METADATA) >= 0) {
        return true;
    }
    kp_err("%s: no common Produce (>= v3) or Metadata version "
           "(broker Produce v%d-v%d, Metadata v%d-v%d): broker too old",
           kp_broker_name(b), b->api_min[KP_API_PRODUCE],
           b->api_max[KP_API_PRODUCE], b->api_min[KP_API_METADATA],
           b->api_max[KP_API_METADATA]);
    snprintf(b->last_error, sizeof(b->last_error), "broker too old");
    return false;
}

static void kp_broker_on_apiversions(void *arg, struct kp_broker *b,
                                     struct kp_request *r,
                                     enum kp_req_status st,
                                     const uint8_t *body, size_t len)
{
    struct kp_apiversions_resp av;
    char why[96];
    (void)arg;
    (void)r;

    if (st != KP_REQ_ANSWERED) {
        return;
    }
    /* UNSUPPORTED_VERSION: the body that follows the error code is in
     * whatever form the broker chose (v0 for Kafka, something else for
     * librdkafka's mock), so only the error code is trusted: ask again at
     * v0, which every broker speaks. */
    if (len >= 2 && (int16_t)(body[0] << 8 | body[1]) ==
                        KP_KERR_UNSUPPORTED_VERSION &&
        b->apiversions_ver > 0) {
        kp_debug("%s: ApiVersions v%d unsupported, retrying with v0",
                 kp_broker_name(b), b->apiversions_ver);
        kp_broker_send_apiversions(b, 0);
        return;
    }
    if (kp_proto_dec_apiversions(body, len, b->apiversions_ver, &av) !=
        KP_OK) {
        kp_broker_close(b, "malformed ApiVersions response", true);
        return;
    }
    if (av.error != KP_KERR_NONE) {
        snprintf(why, sizeof(why), "ApiVersions: %s", kp_kerr_name(av.error));
        kp_broker_close(b, why, true);
        return;
    }
    memcpy(b->api_min, av.min, sizeof(b->api_min));
    memcpy(b->api_max, av.max, sizeof(b->api_max));
    if (!kp_broker_usable(b)) {
        b->failures = KP_BROKER_TOO_OLD_FAILURES;
        kp_broker_close(b, NULL, true);
        return;
    }
    kp_debug("%s: up (Produce v%d, Metadata v%d, InitProducerId v%d)",
             kp_broker_name(b), kp_broker_version(b, KP_API_PRODUCE),
             kp_broker_version(b, KP_API_METADATA),
             kp_broker_version(b, KP_API_INITPID));
    kp_broker_set_state(b, KP_BROKER_UP);
}

/* The connection is open: ApiVersions first (v3, falling back to v0). */
static void kp_broker_handshake(struct kp_broker *b)
{
    kp_broker_set_state(b, KP_BROKER_APIVERSIONS);
    kp_broker_send_apiversions(b, 3);
}

static void kp_broker_on_connected(struct kp_broker *b)
{
    int err = 0;
    socklen_t len = sizeof(err);

    getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", strerror(err));
        kp_broker_close(b, why, true);
        return;
    }
    kp_broker_handshake(b);
}

void kp_broker_attach(struct kp_broker *b, int fd)
{
    kp_assert(b->state == KP_BROKER_INIT);
    b->fd = fd;
    b->retired = false;
    /* the watchers follow the fd (connect sets them on CONNECTING, which
     * an attached socket skips) */
    ev_io_set(&b->rio, fd, EV_READ);
    ev_io_set(&b->wio, fd, EV_WRITE);
    kp_broker_handshake(b);
}

void kp_broker_proven(struct kp_broker *b)
{
    b->failures = 0;
}

/* ---- throttling ---- */

void kp_broker_throttle(struct kp_broker *b, int32_t throttle_ms)
{
    if (throttle_ms > 0) {
        b->throttle_until_ms =
            KP_MAX(b->throttle_until_ms, kp_mono_ms() + throttle_ms);
        kp_debug("%s: throttled for %d ms", kp_broker_name(b), throttle_ms);
    }
}

static void kp_broker_on_throttle(struct ev_loop *loop, ev_timer *w,
                                  int revents)
{
    struct kp_broker *b = w->data;
    (void)loop;
    (void)revents;
    /* The loop's clock and ours round differently: a timer that fires
     * within a millisecond of the end has ended the throttle. */
    if (b->throttle_until_ms - kp_mono_ms() <= 1) {
        b->throttle_until_ms = 0;
    }
    kp_broker_write(b); /* requests queued meanwhile */
    b->hooks->room(b->arg, b);
}

/* Arms the timer that ends a throttle; returns whether b is throttled. */
static bool kp_broker_throttled(struct kp_broker *b)
{
    int64_t now = kp_mono_ms();

    if (now >= b->throttle_until_ms) {
        return false;
    }
    if (!ev_is_active(&b->throttle_timer)) {
        ev_timer_set(&b->throttle_timer,
                     (double)(b->throttle_until_ms - now) / 1000.0, 0.);
        ev_timer_start(b->loop, &b->throttle_timer);
    }
    return true;
}

bool kp_broker_writable(struct kp_broker *b)
{
    return b->state == KP_BROKER_UP && !kp_broker_throttled(b);
}

/* ---- I/O ---- */

/* A request fully written: a no_response one is done now. */
static void kp_broker_written(struct kp_broker *b, struct kp_request *r)
{
    r->sent_us = kp_mono_us();
    if (!r->no_response) {
        return;
    }
    TAILQ_REMOVE(&b->reqs, r, link);
    b->inflight--;
    kp_broker_complete(b, r, KP_REQ_WRITTEN, NULL, 0);
}

/* Advances write_head over n bytes just written. */
static void kp_broker_advance(struct kp_broker *b, size_t n)
{
    while (n && b->write_head) {
        struct kp_request *r = b->write_head;
        size_t k = KP_MIN(r->req.total - r->written, n);
        r->written += k;
        n -= k;
        if (r->written == r->req.total) {
            b->write_head = TAILQ_NEXT(r, link);
            kp_broker_written(b, r);
        }
    }
}

static void kp_broker_write(struct kp_broker *b)
{
    struct iovec iov[64];
    uint64_t gen = b->conn_gen;

    if (b->fd < 0 || b->state == KP_BROKER_CONNECTING) {
        return; /* written once connected */
    }
    /* KIP-219: nothing goes to a broker that throttles this connection
     * until its throttle time has passed. */
    if (b->write_head && kp_broker_throttled(b)) {
        return;
    }
    while (b->write_head && gen == b->conn_gen) {
        size_t cnt = 0, skip = b->write_head->written;
        for (struct kp_request *r = b->write_head;
             r && cnt < KP_ARRAY_LEN(iov); r = TAILQ_NEXT(r, link)) {
            cnt += kp_req_iov(&r->req, skip, iov + cnt,
                              KP_ARRAY_LEN(iov) - cnt);
            skip = 0;
        }
        ssize_t n = writev(b->fd, iov, (int)cnt);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                ev_io_start(b->loop, &b->wio);
                return;
            }
            char why[128];
            snprintf(why, sizeof(why), "write: %s", strerror(errno));
            kp_broker_close(b, why, true);
            return;
        }
        kp_broker_advance(b, (size_t)n);
    }
    if (gen == b->conn_gen) {
        ev_io_stop(b->loop, &b->wio);
    }
}

static void kp_broker_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_broker *b = w->data;
    (void)loop;
    (void)revents;

    if (b->state == KP_BROKER_CONNECTING) {
        kp_broker_on_connected(b);
        return;
    }
    kp_broker_write(b);
}

static enum kp_broker_api kp_broker_api_of(int16_t api_key)
{
    switch (api_key) {
    case KP_API_PRODUCE:
        return KP_BAPI_PRODUCE;
    case KP_API_METADATA:
        return KP_BAPI_METADATA;
    case KP_API_APIVERSIONS:
        return KP_BAPI_APIVERSIONS;
    case KP_API_INITPID:
        return KP_BAPI_INITPID;
    default:
        return KP_BAPI__COUNT;
    }
}

static void kp_broker_rtt(struct kp_broker *b, const struct kp_request *r)
{
    int64_t rtt = kp_mono_us() - r->sent_us;
    enum kp_broker_api api = kp_broker_api_of(r->api_key);

    b->rtt_us = b->rtt_us ? (b->rtt_us * 7 + rtt) / 8 : rtt;
    if (api != KP_BAPI__COUNT) {
        kp_hist_observe(&b->latency[api], kp_hist_latency_us,
                        rtt > 0 ? (uint64_t)rtt : 0);
    }
}

/* One complete response frame (after the size field): matched with the
 * head request and handed to its owner. */
static void kp_broker_on_frame(struct kp_broker *b, const uint8_t *p,
                               size_t len)
{
    struct kp_request *r = TAILQ_FIRST(&b->reqs);
    struct kp_rd rd;

    kp_rd_init(&rd, p, len);
    int32_t corr = kp_rd_i32(&rd);
    if (rd.err || !r || r->corr_id != corr || r->written != r->req.total) {
        char why[96];
        snprintf(why, sizeof(why),
                 "unexpected response (correlation id %d, expected %d)", corr,
                 r ? r->corr_id : -1);
        kp_broker_close(b, why, true);
        return;
    }
    int hl = kp_proto_resp_header_len(r->api_key, r->version, p, len);
    if (hl < 0) {
        kp_broker_close(b, "malformed response header", true);
        return;
    }
    TAILQ_REMOVE(&b->reqs, r, link);
    b->inflight--;
    kp_broker_rtt(b, r);
    kp_broker_arm_deadline(b);
    kp_broker_complete(b, r, KP_REQ_ANSWERED, p + hl, len - (size_t)hl);
}

/* The size of the frame at p, or -1 (logged, closed) when it is not one a
 * Kafka broker sends. */
static int32_t kp_broker_frame_size(struct kp_broker *b, const uint8_t *p)
{
    int32_t size = (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                             ((uint32_t)p[2] << 8) | p[3]);
    if (size < 4 || size > KP_BROKER_MAX_FRAME) {
        char why[64];
        snprintf(why, sizeof(why), "invalid response size %d", size);
        kp_broker_close(b, why, true);
        return -1;
    }
    return size;
}

/* Reads what arrived and hands over every complete frame. Stops as soon
 * as a callback closed the connection (its generation is gone): the read
 * buffer is then another connection's. */
static void kp_broker_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_broker *b = w->data;
    uint64_t gen = b->conn_gen;
    (void)loop;
    (void)revents;

    uint8_t *dst = kp_buf_reserve(&b->rbuf, KP_BROKER_RBUF_MIN);
    ssize_t n = read(b->fd, dst, b->rbuf.cap - b->rbuf.len);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        kp_broker_close(b, n == 0 ? "connection closed by broker"
                                  : strerror(errno),
                        true);
        return;
    }
    b->rbuf.len += (size_t)n;
    size_t off = 0;
    while (b->rbuf.len - off >= 4) {
        int32_t size = kp_broker_frame_size(b, b->rbuf.data + off);
        if (size < 0) {
            return;
        }
        if (b->rbuf.len - off < 4 + (size_t)size) {
            break; /* the buffer grows as the bytes arrive, not before */
        }
        kp_broker_on_frame(b, b->rbuf.data + off + 4, (size_t)size);
        if (gen != b->conn_gen) {
            return;
        }
        off += 4 + (size_t)size;
    }
    kp_buf_consume(&b->rbuf, off);
    b->hooks->room(b->arg, b);
}

static void kp_broker_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kp_broker *b = w->data;
    (void)loop;
    (void)revents;

    switch (b->state) {
    case KP_BROKER_BACKOFF:
        kp_broker_set_state(b, KP_BROKER_INIT);
        kp_broker_connect(b);
        break;
    case KP_BROKER_CONNECTING:
        kp_broker_close(b, "connect timed out", true);
        break;
    case KP_BROKER_APIVERSIONS:
        kp_broker_close(b, "no answer to ApiVersions", true);
        break;
    case KP_BROKER_UP:
        if (TAILQ_FIRST(&b->reqs) &&
            kp_mono_ms() >= TAILQ_FIRST(&b->reqs)->deadline_ms) {
            kp_broker_close(b, "request timed out", true);
        } else {
            kp_broker_arm_deadline(b);
        }
        break;
    case KP_BROKER_INIT:
    case KP_BROKER__COUNT:
        break;
    }
}
