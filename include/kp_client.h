/*
 * kp_client.h - one client connection: reads lines, hands each message to
 * its topic, and answers the half-close with its tally.
 *
 *   READING ──EOF──▶ DRAINING ──all settled──▶ REPLYING ──written──▶ CLOSED
 *     │  ▲                                                             ▲
 *     ▼  │ (backpressure pauses the read watcher, state unchanged)     │
 *   error / shutdown ─────────────────────────────────────────────────┘
 *
 * Bytes are read into the context's shared buffer and parsed in place;
 * only a trailing partial line is kept by the client (`carry`), so an idle
 * connection holds no buffer.
 */
#ifndef KP_CLIENT_H
#define KP_CLIENT_H

#include <ev.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "kp_line.h"

struct kp_ctx;
struct kp_listener;
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

struct kp_client {
    TAILQ_ENTRY(kp_client) link;
    struct kp_ctx *ctx;           /* borrowed */
    struct kp_listener *listener; /* borrowed */
    int fd;
    uint64_t id;
    enum kp_client_state state;
    ev_io rio, wio;
    bool paused;

    uint8_t *carry; /* owned: partial line from the last read */
    size_t carry_len, carry_cap;
    bool discarding; /* skipping the rest of an overlong line */

    struct kp_tally *tally; /* owned reference */
    struct kp_topic *last_topic; /* borrowed: cache for repeated topics */

    pid_t peer_pid;
    uid_t peer_uid;
    gid_t peer_gid;
    struct kp_header peer_hdrs[3];
    char peer_vals[3][16];

    char reply[96];
    size_t reply_len, reply_off;
};

struct kp_client *kp_client_create(struct kp_ctx *ctx,
                                   struct kp_listener *l, int fd);
/* Marks the client closed; it is freed from the prepare watcher. */
void kp_client_close(struct kp_client *c);
void kp_client_destroy(struct kp_client *c);
void kp_client_pause(struct kp_client *c);
void kp_client_resume(struct kp_client *c);
/* Called when its tally may have no pending messages left. */
void kp_client_on_settled(struct kp_client *c);
/* Shutdown: reads what the client already wrote, then treats it as EOF. */
void kp_client_drain_now(struct kp_client *c);

#endif
