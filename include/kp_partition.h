/*
 * kp_partition.h - a partition's state machine: leader, open batch, sealed
 * FIFO, retry backoff, sequence numbers. sarama's partitionProducer as a
 * struct driven by the loop.
 *
 *   open batch ──seal──▶ queue (sealed, FIFO) ──▶ leader's sender
 *                           ▲                         │
 *                           └── retry (in sequence ───┘
 *                               order, after backoff)
 *
 * A partition is on its leader broker's ready list while it has a sealed
 * batch it may send now (leader up, in-flight limit not reached, not backing
 * off). A partition without a leader holds only its own messages.
 */
#ifndef KP_PARTITION_H
#define KP_PARTITION_H

#include <ev.h>
#include <sys/queue.h>

#include "kp_batch.h"

struct kp_topic;
struct kp_broker;
struct kp_ctx;

TAILQ_HEAD(kp_batch_q, kp_batch);

struct kp_partition {
    struct kp_topic *topic; /* borrowed: the topic owns its partitions */
    int32_t id;
    int32_t leader;           /* broker node id, -1 = unknown */
    struct kp_broker *broker; /* borrowed: leader's connection, or NULL */

    struct kp_batch *open;   /* owned */
    struct kp_batch_q queue; /* owned: sealed batches, send order */
    uint32_t queued_msgs;    /* in open + queue */
    int inflight;            /* batches sent, not yet answered */
    struct kp_broker *inflight_broker; /* borrowed: where they went */

    int32_t next_seq; /* idempotence: sequence of the next new batch */
    int64_t pid;      /* producer id the sequences belong to */
    int16_t epoch;

    uint64_t sealed_cnt;   /* batches sealed: their `order` */
    uint64_t next_batch_id; /* ids of sealed batches and split halves */

    ev_timer backoff;       /* retry backoff */
    bool backing_off;
    TAILQ_ENTRY(kp_partition) ready_link; /* leader broker's ready list */
    bool on_ready;

    /* counters for stats */
    uint64_t delivered, failed, batches;
};

void kp_partition_init(struct kp_partition *p, struct kp_topic *t, int32_t id);
/* Settles nothing: callers fail/settle what is left first. */
void kp_partition_deinit(struct kp_partition *p);

/* The open batch, created under the current configuration if needed. */
struct kp_batch *kp_partition_open_batch(struct kp_ctx *ctx,
                                         struct kp_partition *p);
/* Seals the open batch (if any) and queues it for sending. */
void kp_partition_seal(struct kp_ctx *ctx, struct kp_partition *p);
/* Puts a batch that must be sent again back in sequence order, with
 * backoff. */
void kp_partition_retry(struct kp_ctx *ctx, struct kp_partition *p,
                        struct kp_batch *b, bool backoff);
/* MESSAGE_TOO_LARGE: replaces b (not in any queue) by its two halves at
 * the head of the FIFO. */
void kp_partition_split(struct kp_ctx *ctx, struct kp_partition *p,
                        struct kp_batch *b);
/* Whether its head batch may be sent now. */
bool kp_partition_sendable(const struct kp_ctx *ctx,
                           const struct kp_partition *p);
/* Re-evaluates ready-list membership after any state change. */
void kp_partition_update_ready(struct kp_ctx *ctx, struct kp_partition *p);
/* New leader from metadata (or -1); moves the ready-list entry. */
void kp_partition_set_leader(struct kp_ctx *ctx, struct kp_partition *p,
                             int32_t leader);
/* Settles a batch: counters, tallies, flush generations; frees it. */
void kp_partition_batch_done(struct kp_ctx *ctx, struct kp_batch *b,
                             int16_t err, const char *reason);
/* Fails queued (not in-flight) batches older than their delivery timeout. */
void kp_partition_expire(struct kp_ctx *ctx, struct kp_partition *p,
                         int64_t now_ms);

#endif
