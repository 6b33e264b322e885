/*
 * kp_broker.h - one broker connection: sarama's bridge as a state machine
 * on one socket. It knows requests and responses, not partitions: each
 * request carries its owner's completion callback.
 *
 *   INIT ──connect()──▶ CONNECTING ──writable──▶ APIVERSIONS ──ok──▶ UP
 *     ▲                     │                        │               │
 *     │                     └──── error/timeout ─────┴──── error ────┘
 *     │                                  ▼
 *     └────────── backoff timer ──── BACKOFF
 *
 * kp_broker_set_state() alone starts and stops the watchers of each state.
 * Requests are pipelined: `reqs` is the in-flight FIFO in correlation-id
 * order; `write_head` is the first one not yet fully written. The write
 * watcher is armed only after a short write (the libev form of sarama's
 * `output = nil`). Responses arrive in request order; anything else closes
 * the connection and fails its requests back to their owners.
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

struct kp_conf;
struct kp_broker;
struct kp_sender;

enum kp_broker_state {
    KP_BROKER_INIT,
    KP_BROKER_CONNECTING,
    KP_BROKER_APIVERSIONS,
    KP_BROKER_UP,
    KP_BROKER_BACKOFF,
    KP_BROKER__COUNT
};
extern const char *const kp_broker_state_names[KP_BROKER__COUNT];

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

/* APIs whose latency is observed per broker. */
enum kp_broker_api {
    KP_BAPI_PRODUCE,
    KP_BAPI_METADATA,
    KP_BAPI_APIVERSIONS,
    KP_BAPI_INITPID,
    KP_BAPI__COUNT
};
extern const char *const kp_broker_api_names[KP_BAPI__COUNT];

struct kp_broker {
    struct ev_loop *loop;        /* borrowed */
    struct kp_conf *const *conf; /* borrowed: the current configuration */
    const struct kp_broker_hooks *hooks;
    void *arg; /* borrowed: the hooks' argument */
    int32_t node_id; /* < 0 for bootstrap entries */
    char *host;      /* owned */
    int port;
    enum kp_broker_state state;
    int fd;
    uint64_t conn_gen; /* bumped by every close */

    ev_io rio, wio;
    ev_timer timer; /* connect/request timeout and reconnect backoff */
    ev_timer throttle_timer; /* resumes writing when a throttle ends */
    struct kp_buf rbuf; /* owned: response bytes */

    struct kp_request_q reqs;      /* owned: in flight, in order */
    struct kp_request *write_head; /* borrowed: first not fully written */
    uint32_t inflight;             /* requests awaiting a response */
    int32_t next_corr;

    int16_t api_min[KP_API_KEY_MAX]; /* from ApiVersions */
    int16_t api_max[KP_API_KEY_MAX];
    int16_t apiversions_ver; /* version asked (v3, then fallback) */

    int64_t throttle_until_ms;
    int failures;  /* connections in a row that failed: the backoff */
    bool retired;  /* no reconnects: left the cluster, or bootstrap */
    struct kp_sender *sender; /* owned by kp_produce */

    /* stats */
    uint64_t reconnects;
    uint64_t requests;
    int64_t rtt_us; /* smoothed */
    struct kp_hist latency[KP_BAPI__COUNT];
    char last_error[160];
};

struct kp_broker *kp_broker_create(struct ev_loop *loop,
                                   struct kp_conf *const *conf,
                                   int32_t node_id, const char *host,
                                   int port,
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
/* Whether the connection may take a request now (UP, not throttled). */
bool kp_broker_writable(struct kp_broker *b);

/*
 * A request: start() allocates it with the next correlation id (the caller
 * encodes into r->req with that id), send() queues and writes it. cb is
 * called exactly once, when it is answered, written (no_response) or
 * failed; the broker frees r when cb returns.
 */
struct kp_request *kp_broker_request_start(struct kp_broker *b,
                                           int16_t api_key, int16_t version);
void kp_broker_request_send(struct kp_broker *b, struct kp_request *r,
                            kp_request_cb cb, void *arg);

/* A response asked to wait throttle_ms before the next request (KIP-219:
 * the broker muted the connection for that long): every request holds
 * off. */
void kp_broker_throttle(struct kp_broker *b, int32_t throttle_ms);
/* A well-formed answer beyond the handshake: the connection works, so the
 * next reconnect starts from the shortest backoff again. */
void kp_broker_proven(struct kp_broker *b);

#endif
