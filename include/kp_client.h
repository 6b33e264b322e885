/*
 * kp_client.h - client connections: each reads lines, hands each message to
 * the router, and answers its half-close with its tally. The set of them
 * (struct kp_clients) owns what they share: the read buffer, the json
 * scratch space, the list of open connections and those to free.
 *
 *   READING ──EOF──▶ DRAINING ──all settled──▶ REPLYING ──written──▶ CLOSED
 *     │  ▲                                                             ▲
 *     ▼  │ (backpressure pauses the read watcher, state unchanged)     │
 *   error / shutdown ─────────────────────────────────────────────────┘
 *
 * Bytes are read into the shared buffer and parsed in place; only a
 * trailing partial line is kept by the client (`carry`), so an idle
 * connection holds no buffer. A closed client is freed from the loop's
 * prepare phase (kp_clients_reap), never inside a callback chain.
 */
#ifndef KP_CLIENT_H
#define KP_CLIENT_H

#include <ev.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "kp_line.h"
#include "kp_uidmap.h"

struct kp_conf;
struct kp_counters;
struct kp_listener_conf;
struct kp_router;
struct kp_tally;
struct kp_topic;

enum kp_client_state {
    KP_CLIENT_READING,
    KP_CLIENT_DRAINING,
    KP_CLIENT_REPLYING,
    KP_CLIENT_CLOSED,
    KP_CLIENT__COUNT
};
extern const char *const kp_client_state_names[KP_CLIENT__COUNT];

struct kp_clients;

struct kp_client {
    TAILQ_ENTRY(kp_client) link;  /* the set's open or closed list */
    struct kp_clients *set;       /* borrowed */
    const struct kp_listener_conf *lc; /* borrowed: its listener's */
    int fd;
    uint64_t id;
    enum kp_client_state state;
    ev_io rio, wio;
    bool paused;
    int64_t last_read_ms; /* loop time of its last read */

    uint8_t *carry; /* owned: partial line from the last read */
    size_t carry_len, carry_cap;
    bool discarding; /* skipping the rest of an overlong line */

    struct kp_tally *tally;      /* owned reference */
    struct kp_topic *last_topic; /* borrowed: cache for repeated topics */
    uint64_t last_topic_epoch;   /* the router's topic_epoch it is valid in */

    pid_t peer_pid;
    uid_t peer_uid;
    gid_t peer_gid;
    struct kp_header peer_hdrs[3];
    char peer_vals[3][16];

    char reply[96];
    size_t reply_len, reply_off;
};

TAILQ_HEAD(kp_client_list, kp_client);

struct kp_clients {
    struct ev_loop *loop;        /* borrowed */
    struct kp_conf *const *conf; /* borrowed: the current configuration */
    struct kp_router *router;    /* borrowed */
    struct kp_counters *n;       /* borrowed */
    struct kp_client_list open;  /* owned */
    struct kp_client_list closed; /* owned: freed by kp_clients_reap */
    uint32_t cnt;
    struct kp_uidmap per_uid; /* open connections by peer uid */
    uint64_t next_id;
    bool paused; /* backpressure: no client is read */

    /* Shared read buffer: a client's bytes are read here and parsed in
     * place; only a trailing partial line is carried by the client. */
    uint8_t *rbuf; /* owned */
    size_t rbuf_cap;
    size_t max_line; /* longest line any topic accepts */
    struct kp_line_scratch scratch;
};

void kp_clients_init(struct kp_clients *cs, struct ev_loop *loop,
                     struct kp_conf *const *conf, struct kp_router *router,
                     struct kp_counters *n);
/* Closes and frees every client. */
void kp_clients_deinit(struct kp_clients *cs);
/* The configuration changed: line limits, read buffer. */
void kp_clients_reconf(struct kp_clients *cs);
/* Pauses (backpressure) or resumes reading every client. */
void kp_clients_pause(struct kp_clients *cs, bool on);
/* Frees the clients closed since the last call (prepare phase). */
void kp_clients_reap(struct kp_clients *cs);
/* Shutdown (begun at since_ms, loop time), once everything read is
 * settled: closes, without a summary, every reading client that has been
 * quiet for quiet_ms with nothing more to read; returns whether no client
 * is left. Clients still writing are read to their EOF, or until the
 * shutdown deadline. */
bool kp_clients_close_idle(struct kp_clients *cs, int64_t since_ms,
                           int64_t quiet_ms);
/* Closes every connection (shutdown deadline). */
void kp_clients_close_all(struct kp_clients *cs);

/* A new connection on a listener (fd accepted, nonblocking; owned now). */
struct kp_client *kp_client_create(struct kp_clients *cs,
                                   const struct kp_listener_conf *lc, int fd);
/* Marks the client closed; it is freed from kp_clients_reap. */
void kp_client_close(struct kp_client *c);

#endif
