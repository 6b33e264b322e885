/*
 * kp_client.h - client connections: each frames messages out of the bytes
 * it reads (lines or length-prefixed frames), hands each to the router,
 * writes receipts back when its listener asks for them, and answers its
 * half-close with its tally. The set of them (struct kp_clients) owns what
 * they share: the read buffer, the json scratch space, the list of open
 * connections, those with output to write, and those to free.
 *
 *   READING ──EOF──▶ DRAINING ──all settled──▶ REPLYING ──written──▶ CLOSED
 *     │  ▲                                                             ▲
 *     ▼  │ (backpressure, 1 MiB of unread receipts, or a stall on a     │
 *     │  │  topic pauses the read watcher, state unchanged)             │
 *   error / shutdown ─────────────────────────────────────────────────┘
 *
 * Bytes are read into the shared buffer and parsed in place; only a
 * trailing partial message is kept by the client (`carry`), so an idle
 * connection holds no buffer. A partial message that grows over many reads
 * is read into the carry's tail and framed once it is complete: no byte is
 * copied or searched twice however slowly it trickles in.
 *
 * Stalls (SPEC "Isolation"). When the next message is for a topic that is
 * full or has no metadata yet, the connection stops there: that message
 * and the rest of the read stay in its carry, it waits on the topic's list
 * (kp_topic_waiter) and is not read; other connections go on. When the
 * topic wakes it, it is resumed from the prepare phase (kp_clients_resume)
 * and offers the message again. Paused on a full topic for max_block_ms
 * (one timer over a FIFO of blocked connections), its messages for that
 * topic fail at once (buffer_full) until the topic takes one again.
 *
 * Unfinished lines share a budget of buffer_bytes / 8 (they count against
 * buffer_bytes too); a read that takes them over it rejects the largest
 * one (buffer_full), whose rest is then skipped to its end.
 *
 * Output (receipts, then the summary) is appended to the tally's `out` as
 * fates arrive and written once per loop iteration, from the prepare phase
 * (kp_clients_reap): one write per connection for all the batches answered
 * meanwhile. A closed client is freed from the prepare phase too, never
 * inside a callback chain.
 *
 * What one connection may hold beyond the budgets shared with the others:
 * its struct and tally (about 1 KiB); while it is stalled, what its last
 * read brought from the waiting message on (at most KP_CLIENT_READ_BUDGET,
 * usually KP_CLIENT_STALLED_READ, plus the message that read completed,
 * itself at most the longest message_max_bytes); and up to
 * KP_CLIENT_OUT_MAX of receipts its writer has not read.
 */
#ifndef KP_CLIENT_H
#define KP_CLIENT_H

#include <ev.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "kp_frame.h"
#include "kp_line.h"
#include "kp_topic.h"
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

/* Unread receipts beyond which a connection is not read (SPEC). */
#define KP_CLIENT_OUT_MAX (1024 * 1024)
/* Bytes one client may read per wake-up: its share of the loop. */
#define KP_CLIENT_READ_BUDGET (256 * 1024)
/* A new connection's first read, and a stalled one's next, take at most
 * this much, doubling back to the budget with each read that does not
 * stall: what it reads beyond the waiting message is held in its own
 * carry, so a thousand paused writers would otherwise each hold (and
 * fault in) a full read. */
#define KP_CLIENT_STALLED_READ (16 * 1024)
/* Bytes all clients together read in one loop round, as much as one
 * client's full read: readable clients take turns, first come first
 * served, until the round has read this much (one read may go past it);
 * the rest read first in the next rounds. A round that read a hundred
 * 256 KiB reads held broker answers back for tens of milliseconds, the
 * requests behind them waited, and the topic buffer filled: every byte of
 * it memory touched for the first time. */
#define KP_CLIENT_ROUND_BYTES (256 * 1024)

struct kp_client {
    TAILQ_ENTRY(kp_client) link;  /* the set's open or closed list */
    TAILQ_ENTRY(kp_client) out_link; /* the set's `writable` list */
    struct kp_clients *set;       /* borrowed */
    const struct kp_listener_conf *lc; /* borrowed: its listener's */
    int fd;
    uint64_t id;
    enum kp_client_state state;
    ev_io rio, wio;
    bool paused;  /* backpressure: the whole set is paused */
    bool blocked; /* KP_CLIENT_OUT_MAX of output waits unread */
    bool queued;  /* on the set's `writable` list */
    bool deaf;    /* a write failed: output is dropped from now on */
    bool stalled; /* its carry starts with a message a topic did not take
                     yet: waiting (wait.topic), or resuming */
    bool resuming; /* on the set's `resume` list */
    bool eof_seen; /* EOF read; its carry still to finish (stalled) */
    bool in_turn;  /* on the set's `turns` list */
    TAILQ_ENTRY(kp_client) turn_link;
    int64_t last_read_ms; /* loop time of its last read */
    size_t read_max; /* bytes its next read may take (see
                        KP_CLIENT_STALLED_READ) */

    uint8_t *carry; /* owned: partial message from the last read, or (when
                       stalled) everything from the waiting message on */
    size_t carry_len, carry_cap;
    size_t partial; /* bytes of carry counted as an unfinished line */
    struct kp_framer framer;
    struct kp_topic_waiter wait; /* on a topic's list while stalled */

    /* Paused on a full topic since block_since_ms (the set's `blocked`
     * FIFO); after max_block_ms its messages for that topic fail at once
     * (fail_topic) until the topic takes one again. Both are borrowed,
     * valid while the router's topic_epoch is the one noted. */
    struct kp_topic *block_topic;
    uint64_t block_epoch;
    int64_t block_since_ms;
    struct kp_topic *fail_topic;
    uint64_t fail_epoch;
    TAILQ_ENTRY(kp_client) block_link;   /* the set's `blocked` FIFO */
    TAILQ_ENTRY(kp_client) resume_link;  /* the set's `resume` list */
    TAILQ_ENTRY(kp_client) partial_link; /* the set's `partials` */

    struct kp_tally *tally;      /* owned reference; its `out` is the
                                    output, written up to out_off */
    size_t out_off;
    struct kp_topic *last_topic; /* borrowed: cache for repeated topics */
    uint64_t last_topic_epoch;   /* the router's topic_epoch it is valid in */

    pid_t peer_pid;
    uid_t peer_uid;
    gid_t peer_gid;
    char peer_vals[3][16];
    /* owned: headers added to every record, the listener's static ones
     * (borrowed strings of the boot configuration), then peer.* */
    struct kp_header *extra;
    size_t extra_cnt;
};

TAILQ_HEAD(kp_client_list, kp_client);

struct kp_clients {
    struct ev_loop *loop;        /* borrowed */
    struct kp_conf *const *conf; /* borrowed: the current configuration */
    struct kp_router *router;    /* borrowed */
    struct kp_counters *n;       /* borrowed */
    struct kp_client_list open;  /* owned */
    struct kp_client_list closed; /* owned: freed by kp_clients_reap */
    struct kp_client_list writable; /* borrowed: open, with new output */
    struct kp_client_list resume;   /* borrowed: woken, to resume */
    struct kp_client_list blocked;  /* borrowed: paused on a full topic,
                                       oldest first */
    struct kp_client_list partials; /* borrowed: holding unfinished lines */
    int64_t partial_bytes;          /* their sum (budget buffer_bytes/8) */
    ev_timer block_timer;           /* max_block_ms of the oldest blocked */
    uint32_t cnt;
    struct kp_uidmap per_uid; /* open connections by peer uid */
    uint64_t next_id;
    bool paused; /* backpressure: no client is read */
    struct kp_client_list turns; /* borrowed: readable, waiting their turn */
    unsigned int round;          /* ev_iteration of the current round */
    size_t round_left;           /* bytes it may still read */

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
/* The prepare phase, before requests are sent: clients that a topic woke
 * (room, metadata) offer their waiting messages again. */
void kp_clients_resume(struct kp_clients *cs);
/* Writes the output (receipts, summaries) appended since the last call:
 * one write per connection; a client whose summary is written closes. */
void kp_clients_flush(struct kp_clients *cs);
/* The prepare phase: kp_clients_flush, then frees the clients closed
 * meanwhile. */
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
