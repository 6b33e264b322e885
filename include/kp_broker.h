/*
 * kp_broker.h - one broker connection: sarama's bridge as a state machine
 * on one socket. It knows requests and responses, not partitions: each
 * request carries its owner's completion callback.
 *
 *   INIT ─connect()─▶ RESOLVING ─addresses─▶ CONNECTING ─┬─ssl──▶ TLS
 *     ▲                  │ (kp_dns, never       │  ▲       │        │
 *     │                  │  blocks the loop)    └──┘ next │        │
 *     │                  │              address on refusal│        ▼
 *     │                  │                   plaintext ───┴─▶ APIVERSIONS
 *     │                  │                                         │
 *     │                  │                       sasl ─▶ AUTH ◀────┤
 *     │                  │                                │        │
 *     │                  ▼                                ▼        ▼
 *     └─backoff timer─ BACKOFF ◀──── any error ────────── UP ◀─────┘
 *                                                  (re-authenticates in
 *                                                   place, KIP-368)
 *
 * kp_broker_set_state() alone starts and stops the watchers of each state.
 * Requests are pipelined: `reqs` is the in-flight FIFO in correlation-id
 * order; `write_head` is the first one not yet fully written. The write
 * watcher is armed only after a short write (the libev form of sarama's
 * `output = nil`). Responses arrive in request order; anything else closes
 * the connection and fails its requests back to their owners.
 *
 * Addresses: every connect resolves again (a moved broker is found), the
 * host being address_map's entry for the advertised host:port when there
 * is one; each address is tried in turn and a refused or timed-out connect
 * moves on to the next at once. Only when every address failed, or a
 * connection failed after it was made, does the broker back off:
 * retry_backoff_ms doubling to reconnect_backoff_max_ms, with jitter. The
 * doubling is not undone by a handshake that succeeds: only a connection
 * that was proven (a well-formed answer beyond the handshake) and lasted
 * reconnect_backoff_max_ms starts the next series from the shortest delay.
 *
 * TLS (kp_tls) verifies the ADVERTISED host name, never the address
 * dialled; SASL (kp_sasl) runs SaslHandshake + SaslAuthenticate at the
 * versions the broker offers, or raw frames after SaslHandshake v0, and
 * re-authenticates before the session lifetime the broker gave ends:
 * requests are held meanwhile (not written), answers to those in flight
 * are still read.
 *
 * A callback may close the very connection whose response it handles (a
 * Metadata answer that moves the broker, a malformed body): every close
 * bumps `conn_gen`, and the read loop stops as soon as the generation it
 * started with is gone — never inferring "the same connection" from an fd.
 */
#ifndef KP_BROKER_H
#define KP_BROKER_H

#include <ev.h>
#include <sys/queue.h>

#include "kp_buf.h"
#include "kp_hist.h"
#include "kp_proto.h"
#include "kp_tls.h"

struct kp_conf;
struct kp_broker;
struct kp_dns;
struct kp_dns_addrs;
struct kp_dns_query;
struct kp_sasl;
struct kp_sender;

enum kp_broker_state {
    KP_BROKER_INIT,
    KP_BROKER_RESOLVING,
    KP_BROKER_CONNECTING,
    KP_BROKER_TLS,
    KP_BROKER_APIVERSIONS,
    KP_BROKER_AUTH,
    KP_BROKER_UP,
    KP_BROKER_BACKOFF,
    KP_BROKER__COUNT
};
extern const char *const kp_broker_state_names[KP_BROKER__COUNT];

/* What the last failed connection attempt ran into (stats, and the reason
 * messages fail with at their delivery timeout). */
enum kp_broker_fault {
    KP_BFAULT_NONE,
    KP_BFAULT_RESOLVE,  /* the name did not resolve */
    KP_BFAULT_CONNECT,  /* no address accepted the connection */
    KP_BFAULT_TLS,      /* TLS handshake: certificate, protocol, peer */
    KP_BFAULT_AUTH,     /* SASL authentication */
    KP_BFAULT_PROTOCOL, /* garbage, a broker too old, a timeout */
    KP_BFAULT_DROPPED,  /* the connection was lost */
    KP_BFAULT__COUNT
};
extern const char *const kp_broker_fault_names[KP_BFAULT__COUNT];

/* How a request ended. */
enum kp_req_status {
    KP_REQ_ANSWERED, /* body/len: the response after its header */
    KP_REQ_WRITTEN,  /* no_response (Produce acks=0): fully written */
    KP_REQ_FAILED,   /* connection closed or timed out first */
};

struct kp_request;
typedef void (*kp_request_cb)(void *arg, struct kp_broker *b,
                              struct kp_request *r, enum kp_req_status st,
                              const uint8_t *body, size_t len);

struct kp_request {
    TAILQ_ENTRY(kp_request) link;
    int32_t corr_id;
    int16_t api_key;
    int16_t version;
    bool no_response; /* Produce with acks=0 */
    bool auth;        /* SASL: written even while others are held */
    bool raw;         /* answered by a raw frame (SASL after handshake v0) */
    int64_t sent_us;
    int64_t deadline_ms; /* monotonic */
    struct kp_req req;   /* owned: bytes to write */
    size_t written;
    kp_request_cb cb; /* the owner's completion; the broker frees r after */
    void *arg;        /* borrowed: the owner's */
};
TAILQ_HEAD(kp_request_q, kp_request);

/* What the layers above hear from a connection. */
struct kp_broker_hooks {
    /* After every state change (from: the previous state). */
    void (*state)(void *arg, struct kp_broker *b, enum kp_broker_state from);
    /* An answer came or a throttle ended: room for more requests. */
    void (*room)(void *arg, struct kp_broker *b);
};

/*
 * What every broker connection shares; owned by kp_ctx, which fills it
 * before the first connect and swaps `tls` on reload (a connection keeps
 * a reference to the context it started with).
 */
struct kp_broker_env {
    struct kp_dns *dns;     /* borrowed: the loop's resolver */
    struct kp_tls_ctx *tls; /* borrowed: NULL unless ssl / sasl_ssl */
    /* borrowed: the configuration the daemon started with, for what
     * needs a restart to change: security and address_map */
    const struct kp_conf *boot;
};

/* APIs whose latency is observed per broker. */
enum kp_broker_api {
    KP_BAPI_PRODUCE,
    KP_BAPI_METADATA,
    KP_BAPI_APIVERSIONS,
    KP_BAPI_INITPID,
    KP_BAPI__COUNT
};
extern const char *const kp_broker_api_names[KP_BAPI__COUNT];

/* The address being dialled or in use, "" when none. */
#define KP_BROKER_ADDR_LEN 80

struct kp_broker {
    struct ev_loop *loop;            /* borrowed */
    struct kp_conf *const *conf;     /* borrowed: the current config */
    const struct kp_broker_env *env; /* borrowed */
    const struct kp_broker_hooks *hooks;
    void *arg;       /* borrowed: the hooks' argument */
    int32_t node_id; /* < 0 for bootstrap entries */
    char *host;      /* owned: as advertised (TLS verifies this name) */
    int port;
    char *dial_host; /* owned: address_map's target, or NULL */
    int dial_port;
    enum kp_broker_state state;
    int fd;
    uint64_t conn_gen; /* bumped by every close */

    struct kp_dns_query *dns_q; /* kp_dns's, while RESOLVING */
    struct kp_dns_addrs *addrs; /* owned: the last resolution's */
    uint32_t addr_i;            /* the one being tried or in use */
    char addr[KP_BROKER_ADDR_LEN];
    char dial_errs[256]; /* why the addresses tried so far failed */

    ev_io rio, wio;
    ev_timer timer;          /* connect/request timeout and reconnect backoff */
    ev_timer throttle_timer; /* resumes writing when a throttle ends */
    ev_idle pending;         /* TLS bytes decrypted but not yet read */
    struct kp_buf rbuf;      /* owned: response bytes */

    struct kp_tls *tls;     /* owned: NULL on plaintext */
    enum kp_tls_want rwant; /* what the read side waits for (TLS) */
    enum kp_tls_want wwant; /* the write side: NONE = nothing pending */

    struct kp_sasl *sasl;        /* owned: the exchange in progress */
    int16_t sasl_hs_ver;         /* SaslHandshake version in use */
    int16_t sasl_auth_ver;       /* SaslAuthenticate version, -1: raw frames */
    char sasl_note[128];         /* what the mechanism said about a failure */
    bool reauth;                 /* re-authenticating: new requests held */
    int64_t session_lifetime_ms; /* KIP-368, 0 = none */
    ev_timer reauth_timer;

    struct kp_request_q reqs;      /* owned: in flight, in order */
    struct kp_request *write_head; /* borrowed: first not fully written */
    uint32_t inflight;             /* requests awaiting a response */
    int32_t next_corr;

    int16_t api_min[KP_API_KEY_MAX]; /* from ApiVersions */
    int16_t api_max[KP_API_KEY_MAX];
    int16_t apiversions_ver; /* version asked (v3, then fallback) */

    int64_t throttle_until_ms;
    int failures;   /* connections in a row that failed: the backoff */
    int drops;      /* connections in a row lost soon after coming up */
    bool proven;    /* this connection gave a well-formed real answer */
    bool got_bytes; /* this connection received something */
    int64_t up_ms;  /* when it came up */
    bool retired;   /* no reconnects: left the cluster, or bootstrap */
    enum kp_broker_fault fault; /* of the last failed attempt */
    struct kp_sender *sender;   /* owned by kp_produce */

    /* stats */
    uint64_t reconnects;
    uint64_t requests;
    uint64_t connect_failures; /* attempts that never came up */
    uint64_t auth_failures;    /* TLS or SASL handshakes refused */
    uint64_t reauths;          /* KIP-368 re-authentications done */
    int64_t rtt_us;            /* smoothed */
    struct kp_hist latency[KP_BAPI__COUNT];
    char tls_version[16];
    char tls_cipher[64];
    char last_error[384];
};

struct kp_broker *kp_broker_create(struct ev_loop *loop,
                                   struct kp_conf *const *conf,
                                   const struct kp_broker_env *env,
                                   int32_t node_id, const char *host, int port,
                                   const struct kp_broker_hooks *hooks,
                                   void *arg);
/* Closes (failing what is in flight) and frees; not from inside one of
 * the broker's own callbacks. */
void kp_broker_destroy(struct kp_broker *b);
/* "broker 2 (host:9092)" or "bootstrap host:9092"; static buffer. */
const char *kp_broker_name(const struct kp_broker *b);

/* Starts connecting if idle (INIT); no-op otherwise. */
void kp_broker_connect(struct kp_broker *b);
/* Closes the connection: in-flight requests fail back to their owners;
 * with backoff a reconnect is scheduled, else it stays INIT. */
void kp_broker_close(struct kp_broker *b, const char *why, bool backoff);
/* Changes address (metadata said so); reconnects if it was connected. */
void kp_broker_set_addr(struct kp_broker *b, const char *host, int port);
/* No more reconnects (closes): a bootstrap entry once real brokers are
 * known, a broker that left the cluster. kp_broker_connect() revives. */
void kp_broker_retire(struct kp_broker *b);
/* Takes over a connected socket (tests): straight to ApiVersions. */
void kp_broker_attach(struct kp_broker *b, int fd);

/* The version of an API to use with this broker (highest both know), or
 * -1 when there is none; valid once UP. */
int16_t kp_broker_version(const struct kp_broker *b, int16_t api_key);
/* Whether the connection may take a request now (UP, not throttled, not
 * re-authenticating). */
bool kp_broker_writable(struct kp_broker *b);
/* Whether a connection attempt is under way or up (not INIT/BACKOFF). */
bool kp_broker_active(const struct kp_broker *b);
/* Whether the last attempt failed in the TLS or SASL handshake, and the
 * broker has not been up since: messages waiting for it fail as
 * `authentication`. */
bool kp_broker_auth_failed(const struct kp_broker *b);

/*
 * A request: start() allocates it with the next correlation id (the caller
 * encodes into r->req with that id), send() queues and writes it. cb is
 * called exactly once, when it is answered, written (no_response) or
 * failed; the broker frees r when cb returns.
 */
struct kp_request *kp_broker_request_start(struct kp_broker *b, int16_t api_key,
                                           int16_t version);
void kp_broker_request_send(struct kp_broker *b, struct kp_request *r,
                            kp_request_cb cb, void *arg);

/* A response asked to wait throttle_ms before the next request (KIP-219:
 * the broker muted the connection for that long): every request holds
 * off. */
void kp_broker_throttle(struct kp_broker *b, int32_t throttle_ms);
/* A well-formed answer beyond the handshake: the connection works. Once
 * it has also lasted reconnect_backoff_max_ms, its loss starts the next
 * reconnects from the shortest backoff again. */
void kp_broker_proven(struct kp_broker *b);

#endif
