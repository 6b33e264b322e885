/*
 * kp_dns.c - asynchronous name resolution on c-ares, driven by libev.
 *
 * Owns one c-ares channel, the ev_io watchers of its sockets, three timers
 * and the queries in flight. The contract is in kp_dns.h.
 *
 * A query's life:
 *
 *   RESOLVING ──answer / error / timeout──▶ READY ──delivered──▶ DETACHED
 *       │                                     │                     ▲
 *       └───────────── kp_dns_cancel ─────────┴─────────────────────┘
 *
 *   DETACHED: the caller is done with it; freed once c-ares let go of it.
 *
 * c-ares has no per-query cancel: a query that timed out or was cancelled
 * stays known to c-ares (in_ares) until c-ares calls back, and that call
 * then only frees it. When no live query is left, the abandoned ones are
 * dropped at once with ares_cancel(), so a dead server does not keep them
 * (and their socket) around for c-ares' whole retry schedule.
 *
 * c-ares calls back from inside ares_getaddrinfo (hosts file, "localhost")
 * or ares_process_fd; those callbacks only move the query to the done FIFO.
 * The caller's callback runs from the 0 s deliver timer alone, so it may
 * call anything of kp_dns, kp_dns_destroy included.
 */
#include "kp_dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <ev.h>
#include <net/if.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/queue.h>
#include <sys/stat.h>

#include "kp_log.h"

#define KP_DNS_TIMEOUT_DEFAULT_MS 5000
#define KP_DNS_TRIES_DEFAULT 2
#define KP_DNS_TRIES_MAX 8
#define KP_DNS_TRY_MIN_MS 50
#define KP_DNS_TRY_MAX_MS 5000
#define KP_DNS_TRY_MARGIN_MS 10
#define KP_DNS_ERR_LEN 384
#define KP_DNS_RESOLV_CONF "/etc/resolv.conf"

enum kp_dns_qstate {
    KP_DNS_Q_RESOLVING,
    KP_DNS_Q_READY,
    KP_DNS_Q_DETACHED,
    KP_DNS_Q__COUNT
};

static const char *const kp_dns_qstate_names[KP_DNS_Q__COUNT] = {
    [KP_DNS_Q_RESOLVING] = "resolving",
    [KP_DNS_Q_READY] = "ready",
    [KP_DNS_Q_DETACHED] = "detached",
};

const char *const kp_dns_status_names[KP_DNS__COUNT] = {
    [KP_DNS_OK] = "ok",
    [KP_DNS_NOTFOUND] = "notfound",
    [KP_DNS_TIMEOUT] = "timeout",
    [KP_DNS_FAILED] = "failed",
};

struct kp_dns_query {
    struct kp_dns *d; /* borrowed: its resolver */
    enum kp_dns_qstate state;
    bool in_ares; /* c-ares holds it: its callback is still to come */
    bool pinned;  /* the caller's callback runs: not freed under it */
    char *host;   /* owned: as asked */
    int port;
    kp_dns_cb cb;
    void *arg;                             /* borrowed: the caller's */
    int64_t start_ms, end_ms, deadline_ms; /* monotonic */
    uint64_t seq; /* order in the done FIFO, bounds one delivery pass */
    enum kp_dns_status status;
    struct kp_dns_addrs *addrs; /* owned until delivered */
    char err[KP_DNS_ERR_LEN];
    TAILQ_ENTRY(kp_dns_query) link; /* in live or done, or none */
};
TAILQ_HEAD(kp_dns_query_q, kp_dns_query);

/* A c-ares socket's watcher; w.data is the resolver. */
struct kp_dns_sock {
    ev_io w;
    struct kp_dns_sock *next; /* owned by the resolver's list */
};

/* What tells that resolv.conf changed. */
struct kp_dns_stamp {
    bool exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim;
};

struct kp_dns {
    struct ev_loop *loop; /* borrowed */
    ares_channel channel; /* owned */
    int timeout_ms;
    int tries;
    char *servers;     /* owned, NULL: the system's */
    char *resolv_conf; /* owned, NULL: /etc/resolv.conf */
    char *lookups;     /* owned, NULL: the system's */
    struct kp_dns_stamp conf_stamp;

    ev_timer ares_timer;        /* c-ares retransmissions (ares_timeout) */
    ev_timer cap_timer;         /* deadline of the head of `live` */
    ev_timer deliver_timer;     /* 0 s: runs the callbacks of `done` */
    struct kp_dns_sock *socks;  /* owned: one per c-ares socket */
    struct kp_dns_query_q live; /* owned: RESOLVING, by deadline */
    struct kp_dns_query_q done; /* owned: READY, to deliver in order */
    uint64_t seq;
    bool delivering; /* inside kp_dns_on_deliver */
    bool dead;       /* destroyed from a callback: freed after it */
    struct kp_dns_stats stats;
};

static void kp_dns_q_set_state(struct kp_dns_query *q, enum kp_dns_qstate st)
{
    kp_debug("dns: %s port %d: %s -> %s", q->host, q->port,
             kp_dns_qstate_names[q->state], kp_dns_qstate_names[st]);
    q->state = st;
}

/* Frees a query nobody needs any more: the caller left it and c-ares too. */
static void kp_dns_q_release(struct kp_dns_query *q)
{
    if (q->state != KP_DNS_Q_DETACHED || q->in_ares || q->pinned) {
        return;
    }
    kp_dns_addrs_free(q->addrs);
    free(q->host);
    free(q);
}

/* ---- addresses ---------------------------------------------------------*/

static bool kp_dns_addr_eq(const struct kp_dns_addr *a,
                           const struct kp_dns_addr *b)
{
    if (a->u.sa.sa_family != b->u.sa.sa_family) {
        return false;
    }
    if (a->u.sa.sa_family == AF_INET) {
        return a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr &&
               a->u.in.sin_port == b->u.in.sin_port;
    }
    return memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr,
                  sizeof(a->u.in6.sin6_addr)) == 0 &&
           a->u.in6.sin6_port == b->u.in6.sin6_port &&
           a->u.in6.sin6_scope_id == b->u.in6.sin6_scope_id;
}

/* Appends sa with the port applied, unless it is a duplicate, of another
 * family, or the list (of KP_DNS_MAX_ADDRS room) is full. */
static void kp_dns_addrs_add(struct kp_dns_addrs *l, const struct sockaddr *sa,
                             socklen_t len, int port)
{
    struct kp_dns_addr a;
    uint32_t i;

    memset(&a, 0, sizeof(a));
    if (sa->sa_family == AF_INET && len >= sizeof(a.u.in)) {
        memcpy(&a.u.in, sa, sizeof(a.u.in));
        a.u.in.sin_port = htons((uint16_t)port);
        a.len = sizeof(a.u.in);
    } else if (sa->sa_family == AF_INET6 && len >= sizeof(a.u.in6)) {
        memcpy(&a.u.in6, sa, sizeof(a.u.in6));
        a.u.in6.sin6_port = htons((uint16_t)port);
        a.len = sizeof(a.u.in6);
    } else {
        return;
    }
    for (i = 0; i < l->n; i++) {
        if (kp_dns_addr_eq(&l->a[i], &a)) {
            return;
        }
    }
    if (l->n < KP_DNS_MAX_ADDRS) {
        l->a[l->n++] = a;
    }
}

static struct kp_dns_addrs *kp_dns_addrs_new(void)
{
    return kp_calloc(1, sizeof(struct kp_dns_addrs) +
                            KP_DNS_MAX_ADDRS * sizeof(struct kp_dns_addr));
}

/* Shrinks a list built by kp_dns_addrs_new to its size; NULL when empty. */
static struct kp_dns_addrs *kp_dns_addrs_fit(struct kp_dns_addrs *l)
{
    if (l->n == 0) {
        free(l);
        return NULL;
    }
    return kp_realloc(l, sizeof(*l) + l->n * sizeof(l->a[0]));
}

struct kp_dns_addrs *kp_dns_addrs_copy(const struct kp_dns_addrs *l)
{
    size_t size;
    struct kp_dns_addrs *c;

    if (!l) {
        return NULL;
    }
    size = sizeof(*l) + l->n * sizeof(l->a[0]);
    c = kp_malloc(size);
    memcpy(c, l, size);
    return c;
}

void kp_dns_addrs_free(struct kp_dns_addrs *l)
{
    free(l);
}

/* Next index at or after *pos whose family is (same ? : not) fam0. */
static int kp_dns_next_of(const struct kp_dns_addrs *l, uint32_t *pos,
                          sa_family_t fam0, bool same)
{
    while (*pos < l->n) {
        uint32_t i = (*pos)++;
        if ((l->a[i].u.sa.sa_family == fam0) == same) {
            return (int)i;
        }
    }
    return -1;
}

/*
 * Reorders in place so that the families alternate, starting with the
 * family of the first address and keeping the order within each family
 * (RFC 8305 4, first address family count 1): [v6a v6b v4a v4b] becomes
 * [v6a v4a v6b v4b]. When one family runs out the rest follow in order.
 */
void kp_dns_addrs_interleave(struct kp_dns_addrs *l)
{
    struct kp_dns_addr *out;
    uint32_t pos[2] = {0, 0}, k;
    sa_family_t fam0;
    int turn = 0;

    if (!l || l->n < 3) {
        return; /* two addresses are interleaved whatever their order */
    }
    out = kp_malloc(l->n * sizeof(*out));
    fam0 = l->a[0].u.sa.sa_family;
    for (k = 0; k < l->n; k++) {
        int f = turn;
        int i = kp_dns_next_of(l, &pos[f], fam0, f == 0);
        if (i < 0) {
            f = !f;
            i = kp_dns_next_of(l, &pos[f], fam0, f == 0);
        }
        kp_assert(i >= 0);
        out[k] = l->a[i];
        turn = !f;
    }
    memcpy(l->a, out, l->n * sizeof(*out));
    free(out);
}

/* A numeric host needs no DNS: with AI_NUMERICHOST getaddrinfo only parses
 * ("10.0.0.1", "::1", "fe80::1%eth0"); brackets are accepted ("[::1]"). */
static bool kp_dns_numeric(struct kp_dns_query *q)
{
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST,
                             .ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL, *p;
    char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    const char *h = q->host;
    size_t n = strlen(h);
    struct kp_dns_addrs *l;

    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        if (n - 2 >= sizeof(buf)) {
            return false;
        }
        memcpy(buf, h + 1, n - 2);
        buf[n - 2] = '\0';
        h = buf;
    }
    if (getaddrinfo(h, NULL, &hints, &ai) != 0) {
        return false;
    }
    l = kp_dns_addrs_new();
    for (p = ai; p; p = p->ai_next) {
        kp_dns_addrs_add(l, p->ai_addr, p->ai_addrlen, q->port);
    }
    freeaddrinfo(ai);
    q->addrs = kp_dns_addrs_fit(l);
    return q->addrs != NULL;
}

/* "127.0.0.1:9092", "[::1]:9092", "[fe80::1%2]:9092" (scope as index, so
 * that formatting makes no system call). */
const char *kp_dns_addr_format(const struct kp_dns_addr *a, char *buf,
                               size_t size)
{
    char host[INET6_ADDRSTRLEN];

    if (a->u.sa.sa_family == AF_INET &&
        inet_ntop(AF_INET, &a->u.in.sin_addr, host, sizeof(host))) {
        snprintf(buf, size, "%s:%u", host, ntohs(a->u.in.sin_port));
    } else if (a->u.sa.sa_family == AF_INET6 &&
               inet_ntop(AF_INET6, &a->u.in6.sin6_addr, host, sizeof(host))) {
        if (a->u.in6.sin6_scope_id) {
            snprintf(buf, size, "[%s%%%u]:%u", host, a->u.in6.sin6_scope_id,
                     ntohs(a->u.in6.sin6_port));
        } else {
            snprintf(buf, size, "[%s]:%u", host, ntohs(a->u.in6.sin6_port));
        }
    } else {
        snprintf(buf, size, "?");
    }
    return buf;
}

/* ---- c-ares sockets and timers -----------------------------------------*/

static void kp_dns_ares_timer_update(struct kp_dns *d)
{
    struct timeval tv, *t;

    ev_timer_stop(d->loop, &d->ares_timer);
    if (!d->channel) {
        return;
    }
    t = ares_timeout(d->channel, NULL, &tv);
    if (t) {
        ev_timer_set(&d->ares_timer,
                     (double)t->tv_sec + (double)t->tv_usec / 1e6, 0.);
        ev_timer_start(d->loop, &d->ares_timer);
    }
}

static void kp_dns_on_ares_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kp_dns *d = w->data;

    (void)loop;
    (void)revents;
    ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    kp_dns_ares_timer_update(d);
}

static void kp_dns_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_dns *d = w->data;
    int fd = w->fd;

    (void)loop;
    /* ares_process_fd may close the socket, and free w with it. */
    ares_process_fd(d->channel, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    kp_dns_ares_timer_update(d);
}

/* c-ares opens, changes or (0, 0) closes one of its sockets. */
static void kp_dns_on_sock_state(void *data, ares_socket_t fd, int readable,
                                 int writable)
{
    struct kp_dns *d = data;
    struct kp_dns_sock **pp = &d->socks, *s;
    int events = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);

    while (*pp && (*pp)->w.fd != fd) {
        pp = &(*pp)->next;
    }
    s = *pp;
    if (!events) {
        if (s) {
            ev_io_stop(d->loop, &s->w);
            *pp = s->next;
            free(s);
            d->stats.sockets--;
        }
        return;
    }
    if (!s) {
        s = kp_calloc(1, sizeof(*s));
        ev_io_init(&s->w, kp_dns_on_io, fd, events);
        s->w.data = d;
        s->next = d->socks;
        d->socks = s;
        d->stats.sockets++;
    } else {
        ev_io_stop(d->loop, &s->w);
        ev_io_set(&s->w, fd, events);
    }
    ev_io_start(d->loop, &s->w);
}

/* ---- channel -----------------------------------------------------------*/

/* c-ares doubles its wait after each round over the servers: with one
 * server, `tries` attempts last t * (2^tries - 1). t is sized so that they
 * just outlast the whole timeout, which thus decides (and ends what c-ares
 * still holds); bounded so that a lost packet is retried soon and a slow
 * server is not hammered. */
static int kp_dns_try_ms(const struct kp_dns *d)
{
    int rounds = (1 << d->tries) - 1;
    int ms = (d->timeout_ms + rounds - 1) / rounds + KP_DNS_TRY_MARGIN_MS;
    return KP_MIN(KP_MAX(ms, KP_DNS_TRY_MIN_MS), KP_DNS_TRY_MAX_MS);
}

static const char *kp_dns_conf_path(const struct kp_dns *d)
{
    return d->resolv_conf ? d->resolv_conf : KP_DNS_RESOLV_CONF;
}

static void kp_dns_stamp_read(const char *path, struct kp_dns_stamp *s)
{
    struct stat st;

    memset(s, 0, sizeof(*s));
    if (stat(path, &st) == 0) {
        s->exists = true;
        s->dev = st.st_dev;
        s->ino = st.st_ino;
        s->size = st.st_size;
        s->mtim = st.st_mtim;
    }
}

static bool kp_dns_stamp_eq(const struct kp_dns_stamp *a,
                            const struct kp_dns_stamp *b)
{
    return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino &&
           a->size == b->size && a->mtim.tv_sec == b->mtim.tv_sec &&
           a->mtim.tv_nsec == b->mtim.tv_nsec;
}

static ares_channel kp_dns_channel_open(struct kp_dns *d)
{
    struct ares_options ao;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    ares_channel ch = NULL;
    int rc;

    memset(&ao, 0, sizeof(ao));
    ao.sock_state_cb = kp_dns_on_sock_state;
    ao.sock_state_cb_data = d;
    ao.timeout = kp_dns_try_ms(d);
    ao.tries = d->tries;
    if (d->resolv_conf) {
        mask |= ARES_OPT_RESOLVCONF;
        ao.resolvconf_path = d->resolv_conf;
    }
    if (d->lookups) {
        mask |= ARES_OPT_LOOKUPS;
        ao.lookups = d->lookups;
    }
    rc = ares_init_options(&ch, &ao, mask);
    if (rc != ARES_SUCCESS) {
        kp_err("dns: c-ares init: %s", ares_strerror(rc));
        return NULL;
    }
    if (d->servers) {
        rc = ares_set_servers_ports_csv(ch, d->servers);
        if (rc != ARES_SUCCESS) {
            kp_err("dns: servers \"%s\": %s", d->servers, ares_strerror(rc));
            ares_destroy(ch);
            return NULL;
        }
    }
    return ch;
}

/*
 * c-ares reads resolv.conf once per channel; a long-running daemon must
 * follow a change (DHCP, VPN, systemd-resolved), as glibc does. Checked at
 * each resolution, applied only when none is live; abandoned queries of
 * the old channel end with it.
 */
static void kp_dns_maybe_reload(struct kp_dns *d)
{
    struct kp_dns_stamp now;
    ares_channel ch, old;

    if (!TAILQ_EMPTY(&d->live)) {
        return;
    }
    kp_dns_stamp_read(kp_dns_conf_path(d), &now);
    if (kp_dns_stamp_eq(&now, &d->conf_stamp)) {
        return;
    }
    d->conf_stamp = now; /* a failed reload is not retried until it moves */
    ch = kp_dns_channel_open(d);
    if (!ch) {
        return;
    }
    kp_info("dns: %s changed: resolver configuration reloaded",
            kp_dns_conf_path(d));
    old = d->channel;
    d->channel = ch;
    ares_destroy(old);
    d->stats.reloads++;
    kp_dns_ares_timer_update(d);
}

/* ---- results -----------------------------------------------------------*/

static void kp_dns_cap_arm(struct kp_dns *d)
{
    struct kp_dns_query *q = TAILQ_FIRST(&d->live);

    ev_timer_stop(d->loop, &d->cap_timer);
    if (q) {
        int64_t ms = q->deadline_ms - kp_mono_ms();
        ev_timer_set(&d->cap_timer, ms > 0 ? (double)ms / 1e3 : 0., 0.);
        ev_timer_start(d->loop, &d->cap_timer);
    }
}

/* Once no live query is left, the abandoned ones only cost. */
static void kp_dns_drop_abandoned(struct kp_dns *d)
{
    if (TAILQ_EMPTY(&d->live) && d->stats.pending > 0 && d->channel) {
        ares_cancel(d->channel);
        kp_dns_ares_timer_update(d);
    }
}

/* Moves a query to the done FIFO; the deliver timer runs its callback. */
static void kp_dns_ready(struct kp_dns_query *q, enum kp_dns_status st)
{
    struct kp_dns *d = q->d;

    q->status = st;
    q->end_ms = kp_mono_ms();
    switch (st) {
    case KP_DNS_OK:
        d->stats.ok++;
        break;
    case KP_DNS_NOTFOUND:
        d->stats.notfound++;
        break;
    case KP_DNS_TIMEOUT:
        d->stats.timeout++;
        break;
    default:
        d->stats.failed++;
        break;
    }
    q->seq = d->seq++;
    TAILQ_INSERT_TAIL(&d->done, q, link);
    kp_dns_q_set_state(q, KP_DNS_Q_READY);
    if (!ev_is_active(&d->deliver_timer)) {
        ev_timer_set(&d->deliver_timer, 0., 0.);
        ev_timer_start(d->loop, &d->deliver_timer);
    }
}

static void kp_dns_fail(struct kp_dns_query *q, enum kp_dns_status st,
                        const char *fmt, ...) KP_PRINTF(3, 4);
static void kp_dns_fail(struct kp_dns_query *q, enum kp_dns_status st,
                        const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(q->err, sizeof(q->err), fmt, ap);
    va_end(ap);
    kp_dns_ready(q, st);
}

/* Maps what c-ares answered for a live query. */
static void kp_dns_answered(struct kp_dns_query *q, int status,
                            const struct ares_addrinfo *ai)
{
    const struct ares_addrinfo_node *n;

    if (status == ARES_SUCCESS && ai) {
        struct kp_dns_addrs *l = kp_dns_addrs_new();
        for (n = ai->nodes; n; n = n->ai_next) {
            kp_dns_addrs_add(l, n->ai_addr, n->ai_addrlen, q->port);
        }
        q->addrs = kp_dns_addrs_fit(l);
        if (q->addrs) {
            kp_dns_addrs_interleave(q->addrs);
            kp_dns_ready(q, KP_DNS_OK);
            return;
        }
        status = ARES_ENODATA;
    }
    switch (status) {
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_EBADNAME:
    case ARES_EBADFAMILY:
        kp_dns_fail(q, KP_DNS_NOTFOUND, "name does not resolve: %.255s (%s)",
                    q->host, ares_strerror(status));
        break;
    case ARES_ETIMEOUT:
        kp_dns_fail(q, KP_DNS_TIMEOUT, "DNS timeout after %lld ms: %.255s",
                    (long long)(kp_mono_ms() - q->start_ms), q->host);
        break;
    default:
        kp_dns_fail(q, KP_DNS_FAILED, "DNS error resolving %.255s: %s", q->host,
                    ares_strerror(status));
        break;
    }
}

/* c-ares' callback: from ares_getaddrinfo, ares_process_fd, ares_cancel or
 * ares_destroy. Never calls the caller. */
static void kp_dns_on_ares(void *arg, int status, int timeouts,
                           struct ares_addrinfo *ai)
{
    struct kp_dns_query *q = arg;
    struct kp_dns *d = q->d;

    (void)timeouts;
    q->in_ares = false;
    d->stats.pending--;
    if (q->state == KP_DNS_Q_RESOLVING) {
        TAILQ_REMOVE(&d->live, q, link);
        kp_dns_answered(q, status, ai);
        kp_dns_cap_arm(d);
    } else {
        kp_dns_q_release(q);
    }
    ares_freeaddrinfo(ai);
}

static void kp_dns_on_cap(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kp_dns *d = w->data;
    int64_t now = kp_mono_ms();
    struct kp_dns_query *q;

    (void)loop;
    (void)revents;
    while ((q = TAILQ_FIRST(&d->live)) && q->deadline_ms <= now) {
        TAILQ_REMOVE(&d->live, q, link);
        kp_dns_fail(q, KP_DNS_TIMEOUT, "DNS timeout after %d ms: %.255s",
                    d->timeout_ms, q->host);
    }
    kp_dns_cap_arm(d);
    kp_dns_drop_abandoned(d);
}

static void kp_dns_deliver_one(struct kp_dns_query *q)
{
    struct kp_dns_result res = {
        .status = q->status,
        .addrs = q->addrs,
        .err = q->status == KP_DNS_OK ? NULL : q->err,
        .host = q->host,
        .port = q->port,
        .elapsed_ms = q->end_ms - q->start_ms,
    };

    q->addrs = NULL;
    kp_dns_q_set_state(q, KP_DNS_Q_DETACHED);
    q->pinned = true;
    q->cb(&res, q->arg);
    q->pinned = false;
    kp_dns_addrs_free(res.addrs); /* unless the callback took it */
    kp_dns_q_release(q);
}

static void kp_dns_free(struct kp_dns *d)
{
    free(d->servers);
    free(d->resolv_conf);
    free(d->lookups);
    free(d);
}

/* Runs the callbacks of the queries done before this pass began; those
 * that callbacks add wait for the next iteration (no unbounded pass). */
static void kp_dns_on_deliver(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kp_dns *d = w->data;
    uint64_t end = d->seq;
    struct kp_dns_query *q;

    (void)revents;
    d->delivering = true;
    while (!d->dead && (q = TAILQ_FIRST(&d->done)) && q->seq < end) {
        TAILQ_REMOVE(&d->done, q, link);
        kp_dns_deliver_one(q);
    }
    d->delivering = false;
    if (d->dead) {
        kp_dns_free(d);
        return;
    }
    if (!TAILQ_EMPTY(&d->done)) {
        ev_timer_set(w, 0., 0.);
        ev_timer_start(loop, w);
    }
}

/* ---- interface ---------------------------------------------------------*/

/*
 * Creates a resolver on `loop` (borrowed; it must outlive the resolver).
 * `o` may be NULL for the defaults; its strings are copied. Reads
 * resolv.conf (or o->resolv_conf) now. Returns NULL, logged, when c-ares
 * cannot start or o->servers does not parse.
 */
struct kp_dns *kp_dns_create(struct ev_loop *loop, const struct kp_dns_opts *o)
{
    static const struct kp_dns_opts defaults;
    struct kp_dns *d = kp_calloc(1, sizeof(*d));
    int rc;

    o = o ? o : &defaults;
    d->loop = loop;
    d->timeout_ms =
        o->timeout_ms > 0 ? o->timeout_ms : KP_DNS_TIMEOUT_DEFAULT_MS;
    d->tries = o->tries > 0 ? KP_MIN(o->tries, KP_DNS_TRIES_MAX)
                            : KP_DNS_TRIES_DEFAULT;
    d->servers = o->servers ? kp_strdup(o->servers) : NULL;
    d->resolv_conf = o->resolv_conf ? kp_strdup(o->resolv_conf) : NULL;
    d->lookups = o->lookups ? kp_strdup(o->lookups) : NULL;
    TAILQ_INIT(&d->live);
    TAILQ_INIT(&d->done);
    ev_init(&d->ares_timer, kp_dns_on_ares_timer);
    d->ares_timer.data = d;
    ev_init(&d->cap_timer, kp_dns_on_cap);
    d->cap_timer.data = d;
    ev_init(&d->deliver_timer, kp_dns_on_deliver);
    d->deliver_timer.data = d;

    rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        kp_err("dns: c-ares: %s", ares_strerror(rc));
        kp_dns_free(d);
        return NULL;
    }
    kp_dns_stamp_read(kp_dns_conf_path(d), &d->conf_stamp);
    d->channel = kp_dns_channel_open(d);
    if (!d->channel) {
        ares_library_cleanup();
        kp_dns_free(d);
        return NULL;
    }
    kp_debug("dns: c-ares %s, timeout %d ms, %d tries of %d ms",
             ares_version(NULL), d->timeout_ms, d->tries, kp_dns_try_ms(d));
    return d;
}

/*
 * Destroys the resolver and every query it has: their callbacks are never
 * called and their handles die. Stops all its watchers. May be called from
 * inside one of its callbacks (the memory goes when the callback returns).
 */
void kp_dns_destroy(struct kp_dns *d)
{
    struct kp_dns_query *q;
    struct kp_dns_sock *s;

    if (!d || d->dead) {
        return;
    }
    while ((q = TAILQ_FIRST(&d->live))) {
        TAILQ_REMOVE(&d->live, q, link);
        kp_dns_q_set_state(q, KP_DNS_Q_DETACHED); /* ares_destroy frees */
    }
    while ((q = TAILQ_FIRST(&d->done))) {
        TAILQ_REMOVE(&d->done, q, link);
        kp_dns_q_set_state(q, KP_DNS_Q_DETACHED);
        kp_dns_q_release(q);
    }
    ev_timer_stop(d->loop, &d->ares_timer);
    ev_timer_stop(d->loop, &d->cap_timer);
    ev_timer_stop(d->loop, &d->deliver_timer);
    ares_destroy(d->channel); /* calls back for each query, closes fds */
    d->channel = NULL;
    kp_assert(d->stats.pending == 0);
    while ((s = d->socks)) {
        d->socks = s->next;
        ev_io_stop(d->loop, &s->w);
        free(s);
        d->stats.sockets--;
    }
    ares_library_cleanup();
    if (d->delivering) {
        d->dead = true;
        return;
    }
    kp_dns_free(d);
}

/*
 * Resolves host (a name, or an IPv4/IPv6 literal, bracketed or not) and
 * applies port (0..65535) to every address. Never fails and never calls cb
 * before returning: cb(res, arg) runs later from the loop, exactly once,
 * unless kp_dns_cancel or kp_dns_destroy comes first. The returned handle
 * (never NULL) is valid until cb starts or kp_dns_cancel returns; `host`
 * is copied.
 */
struct kp_dns_query *kp_dns_resolve(struct kp_dns *d, const char *host,
                                    int port, kp_dns_cb cb, void *arg)
{
    struct kp_dns_query *q = kp_calloc(1, sizeof(*q));
    /* ARES_AI_ENVHOSTS: $CARES_HOSTS, when set, replaces /etc/hosts (as
     * for every c-ares program; the tests use it). */
    struct ares_addrinfo_hints hints = {.ai_flags = ARES_AI_ENVHOSTS,
                                        .ai_family = AF_UNSPEC,
                                        .ai_socktype = SOCK_STREAM,
                                        .ai_protocol = IPPROTO_TCP};

    q->d = d;
    q->host = kp_strdup(host ? host : "");
    q->port = port;
    q->cb = cb;
    q->arg = arg;
    q->start_ms = kp_mono_ms();
    q->state = KP_DNS_Q_RESOLVING;
    d->stats.started++;
    if (port < 0 || port > 65535) {
        kp_dns_fail(q, KP_DNS_FAILED, "bad port %d for %.255s", port, q->host);
        return q;
    }
    if (q->host[0] == '\0') {
        kp_dns_fail(q, KP_DNS_NOTFOUND, "name does not resolve: empty name");
        return q;
    }
    if (kp_dns_numeric(q)) {
        kp_dns_ready(q, KP_DNS_OK);
        return q;
    }
    kp_dns_maybe_reload(d);
    q->deadline_ms = q->start_ms + d->timeout_ms;
    TAILQ_INSERT_TAIL(&d->live, q, link);
    if (TAILQ_FIRST(&d->live) == q) {
        kp_dns_cap_arm(d);
    }
    q->in_ares = true;
    d->stats.pending++;
    /* may call kp_dns_on_ares before returning (hosts file, localhost) */
    ares_getaddrinfo(d->channel, q->host, NULL, &hints, kp_dns_on_ares, q);
    kp_dns_ares_timer_update(d);
    return q;
}

/*
 * After it the callback of q is never called and q is gone. Harmless on a
 * query whose callback is running (a no-op then). c-ares may still hold the
 * query: it is freed when c-ares lets go, at the latest when no live query
 * is left (ares_cancel) or at kp_dns_destroy.
 */
void kp_dns_cancel(struct kp_dns_query *q)
{
    struct kp_dns *d;

    if (!q || q->state == KP_DNS_Q_DETACHED) {
        return;
    }
    d = q->d;
    if (q->state == KP_DNS_Q_RESOLVING) {
        TAILQ_REMOVE(&d->live, q, link);
        kp_dns_cap_arm(d);
    } else {
        TAILQ_REMOVE(&d->done, q, link);
    }
    d->stats.cancelled++;
    kp_dns_q_set_state(q, KP_DNS_Q_DETACHED);
    kp_dns_q_release(q);
    kp_dns_drop_abandoned(d);
}

void kp_dns_get_stats(const struct kp_dns *d, struct kp_dns_stats *out)
{
    *out = d->stats;
}
