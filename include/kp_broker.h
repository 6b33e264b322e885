/*
 * kp_broker.h - one broker connection and its sender: sarama's
 * brokerProducer + bridge as a state machine on one socket.
 *
 *   INIT ──connect()──▶ CONNECTING ──writable──▶ APIVERSIONS ──ok──▶ UP
 *     ▲                     │                        │               │
 *     │                     └──── error/timeout ─────┴──── error ────┘
 *     │                                  ▼
 *     └────────── backoff timer ──── BACKOFF
 *
 * Requests are pipelined: `reqs` is the in-flight FIFO in correlation-id
 * order; `write_head` is the first one not yet fully written. The write
 * watcher is armed only after a short write (the libev form of sarama's
 * `output = nil`). Responses arrive in request order; anything else closes
 * the connection and retries its batches.
 */
#ifndef KP_BROKER_H
#define KP_BROKER_H

#include <ev.h>
#include <sys/queue.h>

#include "kp_buf.h"
#include "kp_proto.h"

struct kp_ctx;
struct kp_partition;
struct kp_batch;

enum kp_broker_state {
    KP_BROKER_INIT,
    KP_BROKER_CONNECTING,
    KP_BROKER_APIVERSIONS,
    KP_BROKER_UP,
    KP_BROKER_BACKOFF,
    KP_BROKER__COUNT
};
extern const char *const kp_broker_state_names[KP_BROKER__COUNT];

struct kp_request {
    TAILQ_ENTRY(kp_request) link;
    int32_t corr_id;
    int16_t api_key;
    int16_t version;
    bool no_response;  /* Produce with acks=0 */
    int64_t sent_us;
    int64_t deadline_ms; /* monotonic */
    struct kp_req req;  /* owned: bytes to write */
    size_t written;
    struct kp_batch **batches; /* owned array of borrowed batches */
    uint32_t batch_cnt;
};
TAILQ_HEAD(kp_request_q, kp_request);
TAILQ_HEAD(kp_partition_q, kp_partition);

struct kp_broker {
    struct kp_ctx *ctx; /* borrowed */
    int32_t node_id;    /* < 0 for bootstrap entries */
    char *host;         /* owned */
    int port;
    enum kp_broker_state state;
    int fd;

    ev_io rio, wio;
    ev_timer timer; /* connect/request timeout and reconnect backoff */
    ev_timer throttle_timer; /* resumes sending when a throttle ends */
    struct kp_buf rbuf; /* owned: response bytes */

    struct kp_request_q reqs;      /* owned: in flight, in order */
    struct kp_request *write_head; /* borrowed: first not fully written */
    uint32_t inflight;             /* requests awaiting a response */
    int32_t next_corr;

    int16_t api_min[KP_API_KEY_MAX]; /* from ApiVersions */
    int16_t api_max[KP_API_KEY_MAX];
    int16_t produce_ver, metadata_ver, initpid_ver;
    int16_t apiversions_ver; /* version asked (v3, then fallback) */

    struct kp_partition_q ready; /* partitions with sendable batches */
    TAILQ_ENTRY(kp_broker) dirty_link; /* ctx's list of brokers to flush */
    bool dirty;
    bool decommissioned; /* bootstrap entry no longer used */

    int64_t throttle_until_ms;
    int backoff_ms;
    /* stats */
    uint64_t reconnects;
    int64_t rtt_us; /* smoothed */
    uint64_t requests, errors;
};

struct kp_broker *kp_broker_create(struct kp_ctx *ctx, int32_t node_id,
                                   const char *host, int port);
void kp_broker_destroy(struct kp_broker *b);
/* Starts connecting if idle (INIT); no-op otherwise. */
void kp_broker_connect(struct kp_broker *b);
/* Closes the connection: in-flight batches go back to their partitions. */
void kp_broker_close(struct kp_broker *b, const char *why, bool backoff);
/* Changes address (metadata said so); reconnects if connected. */
void kp_broker_set_addr(struct kp_broker *b, const char *host, int port);

/* Marks the broker to be flushed in the loop's prepare phase. */
void kp_broker_kick(struct kp_broker *b);
/* Builds Produce requests from ready partitions and writes what it can. */
void kp_broker_flush(struct kp_broker *b);

/*
 * A non-produce request: start() allocates it with the next correlation id
 * (the caller encodes into r->req with that id), send() queues and writes
 * it. Its response goes to the owning module by API key (kp_metadata,
 * kp_idemp), with a NULL body if the connection fails first.
 */
struct kp_request *kp_broker_request_start(struct kp_broker *b,
                                           int16_t api_key, int16_t version);
void kp_broker_request_send(struct kp_broker *b, struct kp_request *r);

/* A response asked to wait throttle_ms before the next request (KIP-219:
 * the broker muted the connection for that long): Produce holds off. */
void kp_broker_throttle(struct kp_broker *b, int32_t throttle_ms);

/* Whether the broker is up and answers this API at some version. */
bool kp_broker_supports(const struct kp_broker *b, int16_t api_key);

#endif
