/*
 * kp_dns.h - asynchronous name resolution on the event loop (c-ares).
 *
 * Broker names come from Metadata: resolving them with getaddrinfo() inside
 * the loop stalls the whole daemon for as long as a DNS server stays silent
 * (5-10 s a try). kp_dns resolves on c-ares instead, driven by libev
 * watchers, so the loop never blocks on DNS:
 *
 *   c-ares sockets ──ARES_OPT_SOCK_STATE_CB──▶ one ev_io per fd
 *   c-ares retransmissions ──ares_timeout()──▶ one ev_timer
 *   per-resolution cap ──────────────────────▶ one ev_timer on a FIFO of
 *                                               deadlines (equal timeouts)
 *   results ──▶ done FIFO ──▶ one 0 s ev_timer ──▶ the caller's callback
 *
 * Contract:
 * - A resolution asks for A and AAAA (ares_getaddrinfo, AF_UNSPEC) with the
 *   lookups of the system (resolv.conf's "lookup" or nsswitch's "hosts:",
 *   normally "files dns": /etc/hosts first, as getaddrinfo; c-ares'
 *   $CARES_HOSTS names another hosts file, as for any c-ares program). "localhost"
 *   never goes to DNS (RFC 6761). Search domains and ndots of resolv.conf
 *   apply as they do for getaddrinfo.
 * - Numeric hosts ("10.0.0.1", "::1", "[::1]", "fe80::1%eth0") send no
 *   query and take no time, but are delivered through the same path.
 * - The callback is ALWAYS deferred: never called from inside
 *   kp_dns_resolve (nor from inside c-ares); it runs from a kp_dns watcher
 *   on the next loop iteration at the earliest. Callers need not guard
 *   against reentrancy.
 * - Each resolution ends within timeout_ms: success, "name does not
 *   resolve", a DNS error, or "DNS timeout after N ms".
 * - Address order: c-ares sorts the answers by RFC 6724 (as getaddrinfo
 *   does: usable source address, scope, precedence; the answer's order is
 *   kept among equals), then the families are interleaved as RFC 8305 4
 *   advises (first address family count 1): v6, v4, v6, v4... when the
 *   first is v6. So a family that is black-holed costs one connect timeout,
 *   not one per address. Duplicates are dropped; at most KP_DNS_MAX_ADDRS
 *   addresses are kept.
 * - No cache: every call asks again (brokers re-resolve on reconnect, so a
 *   moved broker is found at the next attempt). /etc/hosts is read by
 *   c-ares at every lookup; resolv.conf is re-read when it changes (checked
 *   at each kp_dns_resolve, applied when no resolution is in flight).
 * - kp_dns logs nothing per resolution but debug lines: the caller logs the
 *   error text once, with its context (DESIGN 5).
 *
 * How a broker connection should use it (dns -> connect -> ...):
 *
 *   1. On every connect attempt (first connect and every reconnect after
 *      backoff, and after kp_broker_set_addr), enter state DNS and call
 *      kp_dns_resolve(dns, host, port, kp_broker_on_resolved, b); keep the
 *      handle in b->dns_q. Never reuse the addresses of an earlier attempt:
 *      re-resolve on reconnect, that is how a broker that moved is found.
 *   2. In kp_broker_on_resolved: set b->dns_q = NULL first (the handle is
 *      dead once the callback runs). On error: log res->err once
 *      (rate-limited, "broker 2 (host:port): resolve: <err>") and go to
 *      BACKOFF as for a failed connect. On success: take the list
 *      (b->addrs = res->addrs; res->addrs = NULL; b->addr_i = 0) and
 *      connect to b->addrs->a[0].
 *   3. A connect that fails (refused, unreachable, connect timeout) before
 *      the connection came up moves to the next address at once, with no
 *      backoff: b->addr_i++ and connect again. Only when every address
 *      failed does the broker go to BACKOFF (and the next attempt resolves
 *      again). A connection that was up and then dropped also goes to
 *      BACKOFF and re-resolves.
 *   4. Whenever the broker leaves DNS state early (close, address change,
 *      decommission, destroy), call kp_dns_cancel(b->dns_q) if it is not
 *      NULL and set it to NULL; free b->addrs with kp_dns_addrs_free.
 *   5. The connect timeout is per address; the whole DNS step is capped by
 *      the kp_dns timeout. Log and count which address was tried with
 *      kp_dns_addr_format ("127.0.0.1:9092", "[::1]:9092").
 *   6. kp_ctx creates one kp_dns for the loop before the brokers
 *      (timeout e.g. KP_MIN(request_timeout_ms, 5000)) and destroys it
 *      after them.
 */
#ifndef KP_DNS_H
#define KP_DNS_H

#include <netinet/in.h>
#include <sys/socket.h>

#include "kp_common.h"

struct ev_loop;
struct kp_dns;
struct kp_dns_query;

/* Most addresses kept from one answer (DESIGN 19: inputs are bounded). */
#define KP_DNS_MAX_ADDRS 32
/* Room for "[ffff:...:ffff%ifname]:65535" and its NUL. */
#define KP_DNS_ADDR_STRLEN 80

enum kp_dns_status {
    KP_DNS_OK,       /* at least one address */
    KP_DNS_NOTFOUND, /* NXDOMAIN, no A/AAAA, bad name: "does not resolve" */
    KP_DNS_TIMEOUT,  /* no answer within the timeout */
    KP_DNS_FAILED,   /* server failure, refused, no server reachable... */
    KP_DNS__COUNT
};
extern const char *const kp_dns_status_names[KP_DNS__COUNT];

/* One socket address with the port applied; connect(fd, &a.u.sa, a.len). */
struct kp_dns_addr {
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } u;
    socklen_t len;
};

/* An address list: one allocation, copied with kp_dns_addrs_copy. */
struct kp_dns_addrs {
    uint32_t n; /* >= 1 in a successful result */
    struct kp_dns_addr a[];
};

struct kp_dns_result {
    enum kp_dns_status status;
    /* owned by kp_dns until the callback returns; on KP_DNS_OK the callback
     * may take it by setting the field to NULL (then free it with
     * kp_dns_addrs_free). NULL unless KP_DNS_OK. */
    struct kp_dns_addrs *addrs;
    const char *err;  /* borrowed, valid during the callback; NULL on OK */
    const char *host; /* borrowed, valid during the callback: as asked */
    int port;
    int64_t elapsed_ms; /* from kp_dns_resolve to the result */
};

typedef void (*kp_dns_cb)(struct kp_dns_result *res, void *arg);

struct kp_dns_opts {
    int timeout_ms; /* per resolution, whole; <= 0: 5000 */
    int tries;      /* c-ares attempts per server; <= 0: 2 */
    /* The rest is for tests and special setups; NULL: the system's. */
    const char *servers;     /* "127.0.0.1:5353,[::1]:53" replaces them */
    const char *resolv_conf; /* another resolv.conf (c-ares >= 1.15) */
    const char *lookups;     /* c-ares lookups: "fb" files then DNS, "b" */
};

/* Counters for stats; `pending` is a gauge. */
struct kp_dns_stats {
    uint64_t started;
    uint64_t ok;
    uint64_t notfound;
    uint64_t timeout;
    uint64_t failed;
    uint64_t cancelled;
    uint64_t reloads; /* resolv.conf re-read */
    uint32_t pending; /* queries c-ares still holds (some abandoned) */
    uint32_t sockets; /* c-ares sockets open (watched) */
};

struct kp_dns *kp_dns_create(struct ev_loop *loop, const struct kp_dns_opts *o);
void kp_dns_destroy(struct kp_dns *d);

struct kp_dns_query *kp_dns_resolve(struct kp_dns *d, const char *host,
                                    int port, kp_dns_cb cb, void *arg);
void kp_dns_cancel(struct kp_dns_query *q);

void kp_dns_get_stats(const struct kp_dns *d, struct kp_dns_stats *out);

struct kp_dns_addrs *kp_dns_addrs_copy(const struct kp_dns_addrs *l);
void kp_dns_addrs_free(struct kp_dns_addrs *l);
void kp_dns_addrs_interleave(struct kp_dns_addrs *l);
const char *kp_dns_addr_format(const struct kp_dns_addr *a, char *buf,
                               size_t size);

#endif
