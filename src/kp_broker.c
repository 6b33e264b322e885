/*
 * kp_broker.c - a broker connection: name resolution (kp_dns), a
 * nonblocking connect to each address in turn, TLS (kp_tls), ApiVersions
 * negotiation, SASL (kp_broker_auth.c), pipelined requests written with
 * writev (or gathered into TLS records), responses matched by correlation
 * id and handed to each request's owner, throttling, request timeouts and
 * reconnect backoff. The state diagram is in kp_broker.h.
 */
#include "kp_broker.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_broker_impl.h"
#include "kp_conf.h"
#include "kp_dns.h"
#include "kp_kerr.h"
#include "kp_log.h"
#include "kp_sasl.h"

#define KP_BROKER_RBUF_MIN (64 * 1024)
#define KP_BROKER_MAX_FRAME (64 * 1024 * 1024)
#define KP_BROKER_MAX_RAW_FRAME (1024 * 1024) /* a SASL token */
#define KP_BROKER_BACKOFF_MIN_MS 20
#define KP_BROKER_CONNECT_TIMEOUT_MS 10000 /* per address */
#define KP_BROKER_READ_BUDGET 16           /* reads per wake-up */
#define KP_BROKER_DROPS_WARN 3        /* lost soon after coming up, in a row */
#define KP_BROKER_TOO_OLD_FAILURES 30 /* waits the longest backoff */
#define KP_SW_NAME "kproxyd"

const char *const kp_broker_state_names[KP_BROKER__COUNT] = {
    "init",        "resolving",      "connecting", "tls_handshake",
    "apiversions", "authenticating", "up",         "backoff"};
const char *const kp_broker_fault_names[KP_BFAULT__COUNT] = {
    "none",           "resolve",  "connect", "tls",
    "authentication", "protocol", "dropped"};
const char *const kp_broker_api_names[KP_BAPI__COUNT] = {
    "produce", "metadata", "api_versions", "init_producer_id"};

static struct kp_ratelimit kp_broker_rl;
static struct kp_ratelimit kp_broker_drop_rl;

static void kp_broker_on_io(struct ev_loop *loop, ev_io *w, int revents);
static void kp_broker_on_timer(struct ev_loop *loop, ev_timer *w, int revents);
static void kp_broker_on_throttle(struct ev_loop *loop, ev_timer *w,
                                  int revents);
static void kp_broker_on_pending(struct ev_loop *loop, ev_idle *w, int revents);
static void kp_broker_read(struct kp_broker *b);
static void kp_broker_dial(struct kp_broker *b);

struct kp_broker *kp_broker_create(struct ev_loop *loop,
                                   struct kp_conf *const *conf,
                                   const struct kp_broker_env *env,
                                   int32_t node_id, const char *host, int port,
                                   const struct kp_broker_hooks *hooks,
                                   void *arg)
{
    struct kp_broker *b = kp_calloc(1, sizeof(*b));
    b->loop = loop;
    b->conf = conf;
    b->env = env;
    b->hooks = hooks;
    b->arg = arg;
    b->node_id = node_id;
    b->host = kp_strdup(host);
    b->port = port;
    b->fd = -1;
    b->state = KP_BROKER_INIT;
    TAILQ_INIT(&b->reqs);
    ev_init(&b->rio, kp_broker_on_io);
    ev_init(&b->wio, kp_broker_on_io);
    ev_init(&b->timer, kp_broker_on_timer);
    ev_init(&b->throttle_timer, kp_broker_on_throttle);
    ev_init(&b->reauth_timer, kp_broker_on_reauth_timer);
    ev_idle_init(&b->pending, kp_broker_on_pending);
    b->rio.data = b->wio.data = b->timer.data = b->throttle_timer.data = b;
    b->reauth_timer.data = b->pending.data = b;
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
    kp_dns_addrs_free(b->addrs);
    free(b->host);
    free(b->dial_host);
    free(b);
}

const char *kp_broker_name(const struct kp_broker *b)
{
    static char name[320];
    if (b->node_id >= 0) {
        snprintf(name, sizeof(name), "broker %d (%s:%d)", b->node_id, b->host,
                 b->port);
    } else {
        snprintf(name, sizeof(name), "bootstrap %s:%d", b->host, b->port);
    }
    return name;
}

bool kp_broker_sasl_on(const struct kp_broker *b)
{
    enum kp_sec_protocol p = b->env->boot->security.protocol;
    return p == KP_SEC_SASL_PLAINTEXT || p == KP_SEC_SASL_SSL;
}

static bool kp_broker_tls_on(const struct kp_broker *b)
{
    enum kp_sec_protocol p = b->env->boot->security.protocol;
    return p == KP_SEC_SSL || p == KP_SEC_SASL_SSL;
}

bool kp_broker_active(const struct kp_broker *b)
{
    return b->state != KP_BROKER_INIT && b->state != KP_BROKER_BACKOFF;
}

bool kp_broker_auth_failed(const struct kp_broker *b)
{
    return b->fault == KP_BFAULT_TLS || b->fault == KP_BFAULT_AUTH;
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

static int64_t kp_broker_backoff_max_ms(const struct kp_broker *b)
{
    const struct kp_conf *c = *b->conf;
    return c->reconnect_backoff_max_ms > 0 ? c->reconnect_backoff_max_ms
                                           : c->producer.retry_backoff_max_ms;
}

/* The next reconnect's delay: retry_backoff_ms doubling per failure up to
 * reconnect_backoff_max_ms, never below KP_BROKER_BACKOFF_MIN_MS (no busy
 * loop whatever the settings), with jitter. */
static int64_t kp_broker_backoff_ms(const struct kp_broker *b)
{
    const struct kp_conf *c = *b->conf;
    int64_t lo = KP_MAX(c->producer.retry_backoff_ms, KP_BROKER_BACKOFF_MIN_MS);
    int64_t hi = kp_broker_backoff_max_ms(b);
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

static void kp_broker_io_set(struct kp_broker *b, ev_io *w, bool on)
{
    if (on && !ev_is_active(w)) {
        ev_io_start(b->loop, w);
    } else if (!on && ev_is_active(w)) {
        ev_io_stop(b->loop, w);
    }
}

/*
 * The I/O watchers of a connected state, from what each side waits for.
 * Plaintext: always read; write only after a short write. TLS: a read may
 * wait for writability (a key update answered on a full socket) and a
 * write for readability; the side that waits on the other direction does
 * not spin on its own.
 */
static void kp_broker_watch(struct kp_broker *b)
{
    if (b->state == KP_BROKER_TLS) {
        kp_broker_io_set(b, &b->rio, b->rwant == KP_TLS_WANT_READ);
        kp_broker_io_set(b, &b->wio, b->rwant == KP_TLS_WANT_WRITE);
        return;
    }
    bool rd = b->rwant != KP_TLS_WANT_WRITE || b->wwant == KP_TLS_WANT_READ;
    bool wr = b->rwant == KP_TLS_WANT_WRITE || b->wwant == KP_TLS_WANT_WRITE;
    kp_broker_io_set(b, &b->rio, rd);
    kp_broker_io_set(b, &b->wio, wr);
}

/*
 * The one place a state's watchers are set: CONNECTING waits for
 * writability under the connect timeout; TLS for what the handshake
 * wants; APIVERSIONS, AUTH and UP read, with the timer on the head
 * request's deadline (and write only after a short write); BACKOFF waits
 * on its timer; INIT and RESOLVING (kp_dns has its own cap) on nothing.
 */
void kp_broker_set_state(struct kp_broker *b, enum kp_broker_state state)
{
    enum kp_broker_state from = b->state;

    if (from != state) {
        kp_debug("%s: %s -> %s", kp_broker_name(b), kp_broker_state_names[from],
                 kp_broker_state_names[state]);
    }
    b->state = state;
    ev_io_stop(b->loop, &b->rio);
    ev_io_stop(b->loop, &b->wio);
    ev_timer_stop(b->loop, &b->timer);
    ev_idle_stop(b->loop, &b->pending);
    switch (state) {
    case KP_BROKER_CONNECTING:
        ev_io_set(&b->rio, b->fd, EV_READ);
        ev_io_set(&b->wio, b->fd, EV_WRITE);
        ev_io_start(b->loop, &b->wio);
        kp_broker_timer_in(b, KP_MIN(kp_broker_request_timeout(b),
                                     KP_BROKER_CONNECT_TIMEOUT_MS));
        break;
    case KP_BROKER_TLS:
        kp_broker_timer_in(b, kp_broker_request_timeout(b));
        kp_broker_watch(b);
        break;
    case KP_BROKER_APIVERSIONS:
    case KP_BROKER_AUTH:
    case KP_BROKER_UP:
        kp_broker_watch(b);
        kp_broker_arm_deadline(b);
        break;
    case KP_BROKER_BACKOFF: {
        int64_t ms = kp_broker_backoff_ms(b);
        kp_debug("%s: reconnecting in %lld ms (failure %d in a row)",
                 kp_broker_name(b), (long long)ms, b->failures);
        kp_broker_timer_in(b, ms);
        break;
    }
    case KP_BROKER_INIT:
    case KP_BROKER_RESOLVING:
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

/* Logs why a connection failed or closed, once, with the broker's name:
 * the same cause as last time is only info (a broker that stays down
 * does not repeat its warning at every retry). */
static void kp_broker_note(struct kp_broker *b, enum kp_log_level level,
                           const char *why)
{
    if (level == KP_LOG_WARNING && strcmp(why, b->last_error) == 0) {
        level = KP_LOG_INFO;
    }
    kp_log_rl(&kp_broker_rl, level, "%s: %s", kp_broker_name(b), why);
    snprintf(b->last_error, sizeof(b->last_error), "%s", why);
}

/* A connection that was up closes: how long it lasted decides whether the
 * backoff starts over, and a broker that keeps dropping is reported. */
static void kp_broker_lost(struct kp_broker *b)
{
    int64_t lived = kp_mono_ms() - b->up_ms;
    int64_t stable = kp_broker_backoff_max_ms(b);

    if (lived >= stable) {
        b->drops = 0;
        if (b->proven) {
            b->failures = 0;
        }
        return;
    }
    if (++b->drops >= KP_BROKER_DROPS_WARN) {
        kp_log_rl(&kp_broker_drop_rl, KP_LOG_WARNING,
                  "%s: the connection keeps dropping: lost %d times in a "
                  "row within %lld ms of coming up (last: %s)",
                  kp_broker_name(b), b->drops, (long long)stable,
                  b->last_error);
    }
}

/* Frees what belongs to the connection itself (not its requests). */
static void kp_broker_teardown(struct kp_broker *b)
{
    if (b->dns_q) {
        kp_dns_cancel(b->dns_q);
        b->dns_q = NULL;
    }
    kp_broker_auth_reset(b);
    if (b->tls) {
        kp_tls_destroy(b->tls);
        b->tls = NULL;
    }
    if (b->fd >= 0) {
        close(b->fd);
        b->fd = -1;
    }
    b->addr[0] = '\0';
    b->rwant = b->wwant = KP_TLS_WANT_NONE;
    b->conn_gen++;
    kp_buf_reset(&b->rbuf);
    if (b->rbuf.cap > 4 * KP_BROKER_RBUF_MIN) {
        kp_buf_deinit(&b->rbuf);
    }
}

void kp_broker_close(struct kp_broker *b, const char *why, bool backoff)
{
    struct kp_request_q failed = TAILQ_HEAD_INITIALIZER(failed);
    struct kp_request *r;
    enum kp_broker_state from = b->state;

    if (!kp_broker_active(b)) {
        return;
    }
    if (why) {
        kp_broker_note(b, from == KP_BROKER_UP ? KP_LOG_WARNING : KP_LOG_INFO,
                       why);
    }
    if (from == KP_BROKER_UP) {
        if (b->fault == KP_BFAULT_NONE) {
            b->fault = KP_BFAULT_DROPPED;
        }
        kp_broker_lost(b);
    } else {
        b->connect_failures++;
    }
    kp_broker_teardown(b);
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

void kp_broker_fail(struct kp_broker *b, enum kp_broker_fault fault,
                    enum kp_log_level level, const char *why)
{
    b->fault = fault;
    if (fault == KP_BFAULT_TLS || fault == KP_BFAULT_AUTH) {
        b->auth_failures++;
    }
    kp_broker_note(b, level, why);
    kp_broker_close(b, NULL, true);
}

/* ---- connecting: resolve, then each address in turn ---- */

/* Where to connect: address_map's entry for the advertised host:port. */
static void kp_broker_set_dial(struct kp_broker *b)
{
    const struct kp_hostport *to =
        kp_conf_address_lookup(b->env->boot, b->host, b->port);

    free(b->dial_host);
    b->dial_host = to ? kp_strdup(to->host) : NULL;
    b->dial_port = to ? to->port : b->port;
}

static void kp_broker_on_resolved(struct kp_dns_result *res, void *arg)
{
    struct kp_broker *b = arg;
    char why[512];

    b->dns_q = NULL;
    if (res->status != KP_DNS_OK) {
        snprintf(why, sizeof(why), "resolve: %s", res->err);
        kp_broker_fail(b, KP_BFAULT_RESOLVE, KP_LOG_WARNING, why);
        return;
    }
    kp_dns_addrs_free(b->addrs);
    b->addrs = res->addrs;
    res->addrs = NULL;
    b->addr_i = 0;
    b->dial_errs[0] = '\0';
    kp_broker_dial(b);
}

void kp_broker_connect(struct kp_broker *b)
{
    b->retired = false;
    if (b->state != KP_BROKER_INIT) {
        return;
    }
    kp_broker_set_dial(b);
    kp_broker_set_state(b, KP_BROKER_RESOLVING);
    /* Always deferred: the callback never runs inside this call. */
    b->dns_q =
        kp_dns_resolve(b->env->dns, b->dial_host ? b->dial_host : b->host,
                       b->dial_port, kp_broker_on_resolved, b);
}

/* Appends the cause of this address's failure to this round's: "why
 * (addr)" for the first, "; why (addr)" for the next ones. */
static void kp_broker_dial_err(struct kp_broker *b, const char *why)
{
    size_t len = strlen(b->dial_errs);
    if (len + 8 < sizeof(b->dial_errs)) {
        snprintf(b->dial_errs + len, sizeof(b->dial_errs) - len, "%s%s (%s)",
                 len ? "; " : "", why, b->addr);
    }
}

/* Every address failed (or socket() did): back off, re-resolve next.
 * "connect: Connection refused (127.0.0.1:9092)". */
static void kp_broker_dial_failed(struct kp_broker *b)
{
    char why[384];
    snprintf(why, sizeof(why), "connect: %s", b->dial_errs);
    b->addr[0] = '\0';
    kp_broker_fail(b, KP_BFAULT_CONNECT, KP_LOG_WARNING, why);
}

/* The address being tried failed before the connection came up: the next
 * one at once, with no backoff. */
static void kp_broker_next_addr(struct kp_broker *b, const char *why)
{
    kp_debug("%s: connect to %s: %s", kp_broker_name(b), b->addr, why);
    kp_broker_dial_err(b, why);
    if (b->fd >= 0) {
        close(b->fd);
        b->fd = -1;
    }
    ev_io_stop(b->loop, &b->wio);
    ev_timer_stop(b->loop, &b->timer);
    b->addr_i++;
    kp_broker_dial(b);
}

/* socket() failures that say nothing about the address: out of
 * descriptors or memory. Back off and retry (never stay INIT). */
static bool kp_broker_resource_err(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

static void kp_broker_dial(struct kp_broker *b)
{
    int one = 1;

    if (!b->addrs || b->addr_i >= b->addrs->n) {
        kp_broker_dial_failed(b);
        return;
    }
    const struct kp_dns_addr *a = &b->addrs->a[b->addr_i];
    kp_dns_addr_format(a, b->addr, sizeof(b->addr));
    int fd = socket(a->u.sa.sa_family,
                    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int err = errno;
        char why[128];
        snprintf(why, sizeof(why), "socket: %s", strerror(err));
        if (kp_broker_resource_err(err)) {
            kp_broker_dial_err(b, why);
            kp_broker_dial_failed(b);
            return;
        }
        kp_broker_next_addr(b, why);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    kp_debug("%s: connecting to %s", kp_broker_name(b), b->addr);
    b->fd = fd;
    if (connect(fd, &a->u.sa, a->len) < 0 && errno != EINPROGRESS) {
        kp_broker_next_addr(b, strerror(errno));
        return;
    }
    kp_broker_set_state(b, KP_BROKER_CONNECTING);
}

/* ---- handshake: TLS, ApiVersions, then SASL (kp_broker_auth.c) ---- */

static void kp_broker_on_apiversions(void *arg, struct kp_broker *b,
                                     struct kp_request *r,
                                     enum kp_req_status st, const uint8_t *body,
                                     size_t len);

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
    char why[256];

    if (kp_broker_version(b, KP_API_PRODUCE) >= 0 &&
        kp_broker_version(b, KP_API_METADATA) >= 0) {
        return true;
    }
    snprintf(why, sizeof(why),
             "no common Produce (>= v3) or Metadata version (broker "
             "Produce v%d-v%d, Metadata v%d-v%d): broker too old",
             b->api_min[KP_API_PRODUCE], b->api_max[KP_API_PRODUCE],
             b->api_min[KP_API_METADATA], b->api_max[KP_API_METADATA]);
    b->failures = KP_BROKER_TOO_OLD_FAILURES;
    kp_broker_fail(b, KP_BFAULT_PROTOCOL, KP_LOG_ERROR, why);
    return false;
}

static void kp_broker_on_apiversions(void *arg, struct kp_broker *b,
                                     struct kp_request *r,
                                     enum kp_req_status st, const uint8_t *body,
                                     size_t len)
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
    if (len >= 2 &&
        (int16_t)(body[0] << 8 | body[1]) == KP_KERR_UNSUPPORTED_VERSION &&
        b->apiversions_ver > 0) {
        kp_debug("%s: ApiVersions v%d unsupported, retrying with v0",
                 kp_broker_name(b), b->apiversions_ver);
        kp_broker_send_apiversions(b, 0);
        return;
    }
    if (kp_proto_dec_apiversions(body, len, b->apiversions_ver, &av) != KP_OK) {
        kp_broker_fail(b, KP_BFAULT_PROTOCOL, KP_LOG_WARNING,
                       "malformed ApiVersions response");
        return;
    }
    if (av.error != KP_KERR_NONE) {
        snprintf(why, sizeof(why), "ApiVersions: %s", kp_kerr_name(av.error));
        kp_broker_fail(b, KP_BFAULT_PROTOCOL, KP_LOG_WARNING, why);
        return;
    }
    memcpy(b->api_min, av.min, sizeof(b->api_min));
    memcpy(b->api_max, av.max, sizeof(b->api_max));
    if (!kp_broker_usable(b)) {
        return;
    }
    if (kp_broker_sasl_on(b)) {
        kp_broker_set_state(b, KP_BROKER_AUTH);
        kp_broker_auth_start(b);
        return;
    }
    kp_broker_up(b);
}

void kp_broker_up(struct kp_broker *b)
{
    kp_debug("%s: up at %s (Produce v%d, Metadata v%d, InitProducerId v%d)",
             kp_broker_name(b), b->addr, kp_broker_version(b, KP_API_PRODUCE),
             kp_broker_version(b, KP_API_METADATA),
             kp_broker_version(b, KP_API_INITPID));
    b->fault = KP_BFAULT_NONE;
    b->up_ms = kp_mono_ms();
    kp_broker_set_state(b, KP_BROKER_UP);
}

/* The TCP connection is open: TLS when configured, else ApiVersions
 * first (v3, falling back to v0). */
static void kp_broker_handshake(struct kp_broker *b)
{
    b->proven = false;
    b->got_bytes = false;
    b->reauth = false;
    b->throttle_until_ms = 0;
    kp_broker_set_state(b, KP_BROKER_APIVERSIONS);
    kp_broker_send_apiversions(b, 3);
}

/* Drives the TLS handshake one step. */
static void kp_broker_tls_step(struct kp_broker *b)
{
    char why[640];

    int rc = kp_tls_handshake(b->tls, &b->rwant);
    if (rc == KP_AGAIN) {
        kp_broker_watch(b);
        return;
    }
    if (rc == KP_ERROR) {
        snprintf(why, sizeof(why), "%s", kp_tls_error(b->tls));
        kp_broker_fail(b, KP_BFAULT_TLS, KP_LOG_WARNING, why);
        return;
    }
    b->rwant = KP_TLS_WANT_NONE;
    snprintf(b->tls_version, sizeof(b->tls_version), "%s",
             kp_tls_version(b->tls));
    snprintf(b->tls_cipher, sizeof(b->tls_cipher), "%s", kp_tls_cipher(b->tls));
    kp_debug("%s: %s %s, certificate %s", kp_broker_name(b), b->tls_version,
             b->tls_cipher,
             kp_tls_ctx_verifies(b->env->tls) ? "verified" : "NOT verified");
    kp_broker_handshake(b);
}

static void kp_broker_start_tls(struct kp_broker *b)
{
    char err[512];

    /* SNI and verification against the advertised name, never the
     * address dialled (address_map may point elsewhere). */
    b->tls = kp_tls_create(b->env->tls, b->fd, b->host, err, sizeof(err));
    if (!b->tls) {
        kp_broker_fail(b, KP_BFAULT_TLS, KP_LOG_WARNING, err);
        return;
    }
    b->rwant = KP_TLS_WANT_WRITE;
    kp_broker_set_state(b, KP_BROKER_TLS);
    kp_broker_tls_step(b);
}

static void kp_broker_on_connected(struct kp_broker *b)
{
    int err = 0;
    socklen_t len = sizeof(err);

    getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        ev_io_stop(b->loop, &b->wio);
        kp_broker_next_addr(b, strerror(err));
        return;
    }
    kp_debug("%s: connected to %s", kp_broker_name(b), b->addr);
    if (kp_broker_tls_on(b) && b->env->tls) {
        kp_broker_start_tls(b);
        return;
    }
    kp_broker_handshake(b);
}

void kp_broker_attach(struct kp_broker *b, int fd)
{
    kp_assert(b->state == KP_BROKER_INIT);
    b->fd = fd;
    b->retired = false;
    ev_io_set(&b->rio, b->fd, EV_READ);
    ev_io_set(&b->wio, b->fd, EV_WRITE);
    snprintf(b->addr, sizeof(b->addr), "fd %d", fd);
    kp_broker_handshake(b);
}

void kp_broker_proven(struct kp_broker *b)
{
    b->proven = true;
}

void kp_broker_set_addr(struct kp_broker *b, const char *host, int port)
{
    if (strcmp(b->host, host) == 0 && b->port == port) {
        return;
    }
    kp_info("%s: address changes to %s:%d", kp_broker_name(b), host, port);
    bool was_connected = b->state != KP_BROKER_INIT;
    /* The new address first: closing fails the requests in flight back to
     * their owners, and a retry may connect this broker again at once. */
    free(b->host);
    b->host = kp_strdup(host);
    b->port = port;
    kp_broker_close(b, "address changed", false);
    if (b->state == KP_BROKER_BACKOFF) {
        kp_broker_set_state(b, KP_BROKER_INIT); /* connect at once */
    }
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

/* ---- requests ---- */

struct kp_request *kp_broker_request_start(struct kp_broker *b, int16_t api_key,
                                           int16_t version)
{
    struct kp_request *r = kp_calloc(1, sizeof(*r));
    r->corr_id = b->next_corr;
    /* wraps to 0 without signed overflow */
    b->next_corr = b->next_corr == INT32_MAX ? 0 : b->next_corr + 1;
    r->api_key = api_key;
    r->version = version;
    kp_req_init(&r->req);
    return r;
}

static void kp_broker_queued(struct kp_broker *b, struct kp_request *r,
                             kp_request_cb cb, void *arg)
{
    r->cb = cb;
    r->arg = arg;
    r->deadline_ms = kp_mono_ms() + kp_broker_request_timeout(b);
    b->inflight++;
    b->requests++;
    if (!ev_is_active(&b->timer)) {
        kp_broker_arm_deadline(b);
    }
}

void kp_broker_request_send(struct kp_broker *b, struct kp_request *r,
                            kp_request_cb cb, void *arg)
{
    TAILQ_INSERT_TAIL(&b->reqs, r, link);
    if (!b->write_head) {
        b->write_head = r;
    }
    kp_broker_queued(b, r, cb, arg);
    kp_broker_write(b);
}

/*
 * A SASL request goes before every request held by a re-authentication:
 * right before the write head when nothing of it is written yet (it is a
 * held request, or there is none), else right after it (a request caught
 * half-written when re-authentication began is finished first).
 */
void kp_broker_send_auth(struct kp_broker *b, struct kp_request *r,
                         kp_request_cb cb)
{
    struct kp_request *h = b->write_head;

    r->auth = true;
    if (!h) {
        TAILQ_INSERT_TAIL(&b->reqs, r, link);
        b->write_head = r;
    } else if (h->written == 0) {
        TAILQ_INSERT_BEFORE(h, r, link);
        b->write_head = r;
    } else {
        TAILQ_INSERT_AFTER(&b->reqs, h, r, link);
    }
    kp_broker_queued(b, r, cb, NULL);
    kp_broker_write(b);
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
    return b->state == KP_BROKER_UP && !b->reauth && !kp_broker_throttled(b);
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

/* The segments to write next. While re-authenticating only SASL requests
 * go (and the rest of one caught half-written): the others are held. */
static size_t kp_broker_gather(struct kp_broker *b, struct iovec *iov,
                               size_t max)
{
    size_t cnt = 0, skip = b->write_head ? b->write_head->written : 0;

    for (struct kp_request *r = b->write_head; r && cnt < max;
         r = TAILQ_NEXT(r, link)) {
        if (b->reauth && !r->auth && r->written == 0) {
            break;
        }
        cnt += kp_req_iov(&r->req, skip, iov + cnt, max - cnt);
        skip = 0;
    }
    return cnt;
}

/* One write: KP_OK (wrote *n), KP_AGAIN (wwant set), KP_ERROR (closed). */
static int kp_broker_send(struct kp_broker *b, const struct iovec *iov,
                          size_t cnt, size_t *n)
{
    char why[640];

    if (b->tls) {
        int rc = kp_tls_writev(b->tls, iov, cnt, n, &b->wwant);
        if (rc == KP_ERROR) {
            snprintf(why, sizeof(why), "%s", kp_tls_error(b->tls));
            kp_broker_fail(b, KP_BFAULT_DROPPED, KP_LOG_WARNING, why);
        }
        return rc;
    }
    ssize_t w = writev(b->fd, iov, (int)cnt);
    if (w < 0) {
        *n = 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            b->wwant = KP_TLS_WANT_WRITE;
            return KP_AGAIN;
        }
        snprintf(why, sizeof(why), "write: %s", strerror(errno));
        kp_broker_fail(b, KP_BFAULT_DROPPED, KP_LOG_WARNING, why);
        return KP_ERROR;
    }
    *n = (size_t)w;
    b->wwant = KP_TLS_WANT_NONE;
    return KP_OK;
}

void kp_broker_write(struct kp_broker *b)
{
    struct iovec iov[64];
    uint64_t gen = b->conn_gen;

    if (b->fd < 0 || b->state < KP_BROKER_APIVERSIONS ||
        b->state == KP_BROKER_BACKOFF) {
        return; /* written once connected */
    }
    /* KIP-219: nothing goes to a broker that throttles this connection
     * until its throttle time has passed. */
    if (b->write_head && !b->reauth && kp_broker_throttled(b)) {
        /* not watched for writability meanwhile, or a socket that is
         * writable would spin the loop: the throttle timer resumes */
        b->wwant = KP_TLS_WANT_NONE;
        kp_broker_watch(b);
        return;
    }
    for (;;) {
        size_t cnt = kp_broker_gather(b, iov, KP_ARRAY_LEN(iov));
        /* TLS may hold bytes taken earlier: a call with nothing new
         * flushes them. */
        if (cnt == 0 && (!b->tls || b->wwant == KP_TLS_WANT_NONE)) {
            b->wwant = KP_TLS_WANT_NONE;
            break;
        }
        size_t n = 0;
        int rc = kp_broker_send(b, iov, cnt, &n);
        if (rc == KP_ERROR) {
            return;
        }
        kp_broker_advance(b, n);
        if (gen != b->conn_gen) {
            return; /* a no_response completion closed it */
        }
        if (rc == KP_AGAIN) {
            break;
        }
    }
    kp_broker_watch(b);
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

/* Takes r off the FIFO and hands it its answer. */
static void kp_broker_answered(struct kp_broker *b, struct kp_request *r,
                               const uint8_t *body, size_t len)
{
    TAILQ_REMOVE(&b->reqs, r, link);
    b->inflight--;
    kp_broker_rtt(b, r);
    kp_broker_arm_deadline(b);
    kp_broker_complete(b, r, KP_REQ_ANSWERED, body, len);
}

/* One complete response frame (after the size field): matched with the
 * head request and handed to its owner. */
static void kp_broker_on_frame(struct kp_broker *b, const uint8_t *p,
                               size_t len)
{
    struct kp_request *r = TAILQ_FIRST(&b->reqs);
    struct kp_rd rd;

    if (r && r->raw && r->written == r->req.total) {
        kp_broker_answered(b, r, p, len); /* no header at all */
        return;
    }
    kp_rd_init(&rd, p, len);
    int32_t corr = kp_rd_i32(&rd);
    if (rd.err || !r || r->corr_id != corr || r->written != r->req.total) {
        char why[96];
        snprintf(why, sizeof(why),
                 "unexpected response (correlation id %d, expected %d)", corr,
                 r ? r->corr_id : -1);
        kp_broker_fail(b, KP_BFAULT_PROTOCOL, KP_LOG_WARNING, why);
        return;
    }
    int hl = kp_proto_resp_header_len(r->api_key, r->version, p, len);
    if (hl < 0) {
        kp_broker_fail(b, KP_BFAULT_PROTOCOL, KP_LOG_WARNING,
                       "malformed response header");
        return;
    }
    kp_broker_answered(b, r, p + hl, len - (size_t)hl);
}

/* What is wrong with a connection whose first bytes make no sense as
 * Kafka: a hint when they say what really listens there. */
static void kp_broker_garbage(struct kp_broker *b, int32_t size,
                              const uint8_t *p, size_t len)
{
    char why[384];
    const char *hint = b->proven ? NULL : kp_tls_sniff_plaintext_reply(p, len);

    if (hint) {
        snprintf(why, sizeof(why), "%s (invalid response size %d)", hint,
                 size);
    } else {
        snprintf(why, sizeof(why), "invalid response size %d", size);
    }
    /* A TLS record in answer: a security.protocol mismatch, which is
     * what messages fail for; an HTTP server is just the wrong port. */
    bool tls = hint && (p[0] == 0x15 || p[0] == 0x16);
    kp_broker_fail(b, tls ? KP_BFAULT_TLS : KP_BFAULT_PROTOCOL, KP_LOG_WARNING,
                   why);
}

/* The size of the frame at p (len >= 4 bytes there), or -1 (logged,
 * closed) when it is not one a Kafka broker sends. */
static int32_t kp_broker_frame_size(struct kp_broker *b, const uint8_t *p,
                                    size_t len)
{
    int32_t size = (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                             ((uint32_t)p[2] << 8) | p[3]);
    struct kp_request *r = TAILQ_FIRST(&b->reqs);
    bool raw = r && r->raw;

    if (size < (raw ? 0 : 4) ||
        size > (raw ? KP_BROKER_MAX_RAW_FRAME : KP_BROKER_MAX_FRAME)) {
        kp_broker_garbage(b, size, p, len);
        return -1;
    }
    return size;
}

/* Hands over every complete frame in rbuf; false when a callback closed
 * the connection (its generation is gone: rbuf is another's now). */
static bool kp_broker_frames(struct kp_broker *b, uint64_t gen)
{
    size_t off = 0;

    while (b->rbuf.len - off >= 4) {
        int32_t size =
            kp_broker_frame_size(b, b->rbuf.data + off, b->rbuf.len - off);
        if (size < 0) {
            return false;
        }
        if (b->rbuf.len - off < 4 + (size_t)size) {
            break; /* the buffer grows as the bytes arrive, not before */
        }
        kp_broker_on_frame(b, b->rbuf.data + off + 4, (size_t)size);
        if (gen != b->conn_gen) {
            return false;
        }
        off += 4 + (size_t)size;
    }
    kp_buf_consume(&b->rbuf, off);
    if (b->rbuf.len == 0 && b->rbuf.cap > 4 * KP_BROKER_RBUF_MIN) {
        kp_buf_deinit(&b->rbuf); /* a big answer's room is not kept */
    }
    return true;
}

/*
 * The broker closed the connection. Before any answer, that usually
 * means the wrong security protocol: a TLS listener drops a plaintext
 * ApiVersions, a SASL listener anything but SASL before authentication.
 */
static void kp_broker_on_eof(struct kp_broker *b, const char *tls_why)
{
    char why[640];
    const char *base = tls_why ? tls_why : "connection closed by broker";
    enum kp_broker_fault fault = KP_BFAULT_DROPPED;

    if (b->state == KP_BROKER_AUTH) {
        snprintf(why, sizeof(why),
                 "SASL %s: authentication failed (the broker closed the "
                 "connection%s%s)",
                 kp_sasl_mech_name(b->env->boot->security.sasl.mechanism),
                 b->sasl_note[0] ? "; " : "", b->sasl_note);
        fault = KP_BFAULT_AUTH;
    } else if (b->state == KP_BROKER_APIVERSIONS && !b->got_bytes && !b->tls) {
        snprintf(why, sizeof(why),
                 "%s during ApiVersions: is this an SSL listener? set "
                 "security.protocol to ssl or sasl_ssl (or the broker is "
                 "older than Kafka 0.10)",
                 base);
        fault = KP_BFAULT_PROTOCOL;
    } else if (b->state == KP_BROKER_UP && !b->proven &&
               !kp_broker_sasl_on(b) &&
               kp_broker_version(b, KP_API_SASL_HANDSHAKE) >= 0) {
        snprintf(why, sizeof(why),
                 "%s before its first answer: does this listener require "
                 "SASL? set security.protocol to sasl_plaintext or sasl_ssl",
                 base);
    } else {
        snprintf(why, sizeof(why), "%s", base);
    }
    kp_broker_fail(b, fault, KP_LOG_WARNING, why);
}

/* One read: KP_OK with *n > 0 bytes, KP_AGAIN, or KP_ERROR (closed). */
static int kp_broker_recv(struct kp_broker *b, uint8_t *dst, size_t cap,
                          size_t *n)
{
    char why[640];

    if (b->tls) {
        int rc = kp_tls_read(b->tls, dst, cap, n, &b->rwant);
        if (rc == KP_OK && *n == 0) {
            snprintf(why, sizeof(why), "%s", kp_tls_error(b->tls));
            kp_broker_on_eof(b, why);
            return KP_ERROR;
        }
        if (rc == KP_ERROR) {
            snprintf(why, sizeof(why), "%s", kp_tls_error(b->tls));
            kp_broker_fail(
                b, b->state == KP_BROKER_UP ? KP_BFAULT_DROPPED : KP_BFAULT_TLS,
                KP_LOG_WARNING, why);
        }
        return rc;
    }
    ssize_t r = read(b->fd, dst, cap);
    if (r > 0) {
        *n = (size_t)r;
        b->rwant = KP_TLS_WANT_READ;
        return KP_OK;
    }
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        b->rwant = KP_TLS_WANT_READ;
        return KP_AGAIN;
    }
    if (r == 0) {
        kp_broker_on_eof(b, NULL);
    } else {
        snprintf(why, sizeof(why), "read: %s", strerror(errno));
        kp_broker_fail(b, KP_BFAULT_DROPPED, KP_LOG_WARNING, why);
    }
    return KP_ERROR;
}

/*
 * Acknowledges at once what was read, instead of after the delayed-ACK
 * timer: a peer that does not set TCP_NODELAY (librdkafka's mock does
 * not) holds a small answer behind an unacknowledged one (Nagle), which
 * cost pipelined requests 40 ms. Linux clears the flag again by itself,
 * so it is set after every read (harmless on a socketpair).
 */
static void kp_broker_quickack(struct kp_broker *b)
{
    int one = 1;
    setsockopt(b->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

/* Reads what arrived, a budget of reads per wake-up, and hands over every
 * complete frame. Stops as soon as a callback closed the connection. */
static void kp_broker_read(struct kp_broker *b)
{
    uint64_t gen = b->conn_gen;
    bool any = false;

    for (int i = 0; i < KP_BROKER_READ_BUDGET; i++) {
        uint8_t *dst = kp_buf_reserve(&b->rbuf, KP_BROKER_RBUF_MIN);
        size_t cap = b->rbuf.cap - b->rbuf.len, n = 0;
        int rc = kp_broker_recv(b, dst, cap, &n);
        if (rc == KP_ERROR) {
            return;
        }
        if (rc == KP_AGAIN) {
            break;
        }
        b->rbuf.len += n;
        b->got_bytes = true;
        if (!any) {
            kp_broker_quickack(b);
        }
        any = true;
        if (!kp_broker_frames(b, gen)) {
            return;
        }
        if (!b->tls && n < cap) {
            break; /* the socket is drained */
        }
    }
    /* Decrypted bytes OpenSSL still holds wake no fd: come back. */
    if (b->tls && kp_tls_pending(b->tls)) {
        ev_idle_start(b->loop, &b->pending);
    }
    kp_broker_watch(b);
    if (any && b->state == KP_BROKER_UP) {
        b->hooks->room(b->arg, b);
    }
}

static void kp_broker_on_pending(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct kp_broker *b = w->data;
    (void)revents;
    ev_idle_stop(loop, w);
    kp_broker_read(b);
}

static void kp_broker_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_broker *b = w->data;
    uint64_t gen = b->conn_gen;
    bool rd = revents & EV_READ, wr = revents & EV_WRITE;
    (void)loop;

    switch (b->state) {
    case KP_BROKER_CONNECTING:
        kp_broker_on_connected(b);
        return;
    case KP_BROKER_TLS:
        kp_broker_tls_step(b);
        return;
    default:
        break;
    }
    /* Each side runs when its fd condition, or the one its TLS
     * operation waited for, is there. */
    if (wr || (rd && b->wwant == KP_TLS_WANT_READ)) {
        kp_broker_write(b);
    }
    if (gen == b->conn_gen && (rd || (wr && b->rwant == KP_TLS_WANT_WRITE))) {
        kp_broker_read(b);
    }
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
        kp_broker_next_addr(b, "connect timed out");
        break;
    case KP_BROKER_TLS:
        kp_broker_fail(b, KP_BFAULT_TLS, KP_LOG_WARNING,
                       "TLS handshake timed out");
        break;
    case KP_BROKER_APIVERSIONS:
        kp_broker_fail(b, KP_BFAULT_PROTOCOL, KP_LOG_WARNING,
                       "no answer to ApiVersions");
        break;
    case KP_BROKER_AUTH:
    case KP_BROKER_UP:
        if (TAILQ_FIRST(&b->reqs) &&
            kp_mono_ms() >= TAILQ_FIRST(&b->reqs)->deadline_ms) {
            kp_broker_fail(
                b,
                b->state == KP_BROKER_AUTH ? KP_BFAULT_AUTH : KP_BFAULT_DROPPED,
                KP_LOG_WARNING,
                b->state == KP_BROKER_AUTH ? "SASL: no answer from the broker"
                                           : "request timed out");
        } else {
            kp_broker_arm_deadline(b);
        }
        break;
    case KP_BROKER_INIT:
    case KP_BROKER_RESOLVING:
    case KP_BROKER__COUNT:
        break;
    }
}
