/*
 * kp_partition.h - a partition's state machine: leader, open batch, sealed
 * FIFO, in-flight count, retry backoff, sequence numbers. sarama's
 * partitionProducer as a struct driven by the loop. This module alone
 * changes a partition; the sender (kp_produce) and the topic call it.
 *
 *   append ─▶ open batch ──seal──▶ queue (sealed, FIFO) ──take──▶ in flight
 *                                    ▲                              │
 *                                    └── retry (in seal order, ─────┤
 *                                        after backoff) / split     │
 *                       delivered / failed ◀────────────────────────┘
 *
 * Settling a batch follows one order (DESIGN 18): the dead letter is
 * written first, then the counters, then the writers' tallies and the flush
 * generations — a writer told `failed` finds the line in the file.
 */
#ifndef KP_PARTITION_H
#define KP_PARTITION_H

#include <ev.h>
#include <sys/queue.h>

#include "kp_batch.h"
#include "kp_reason.h"

struct kp_topic;
struct kp_deadletter;
struct kp_counters;
struct kp_lingers;
struct kp_spool;
struct kp_gens;
struct kp_sender;

TAILQ_HEAD(kp_batch_q, kp_batch);

/* Message bytes and messages held: a topic's share of the daemon's. */
struct kp_account {
    int64_t bytes;
    int64_t msgs;
    /* disk spool: the topic's records there not yet acknowledged that
     * this run knows of; and at shutdown, whether its messages in memory
     * only may still be appended (0 undecided, 1 yes, -1 no) */
    int64_t spooled;
    int8_t keep;
};

/* How partitions reach the layers above them (wired by kp_router). */
struct kp_part_hooks {
    /* p's sendability may have changed (sealed, requeued, backoff over,
     * answered, leader moved): the sender looks at it again. */
    void (*changed)(void *arg, struct kp_partition *p);
    /* A batch stamped with (pid, epoch) will never be appended: that
     * producer id's sequences now have a gap. */
    void (*seq_gap)(void *arg, int64_t pid, int16_t epoch, const char *why);
    /* Buffered bytes of a topic (acct) went up or down (backpressure,
     * per-topic limits), or messages were settled (flush barriers).
     * `freed`: nothing grew, so room or a settled message may have
     * come (once per message appended, the rest is skipped). */
    void (*accounted)(void *arg, struct kp_account *acct, bool freed);
    /* Why messages waiting for `leader` (-1: none known, or no metadata)
     * were not delivered by their delivery timeout: the connection layer
     * may know better than KP_REASON_DELIVERY_TIMEOUT (a leader that
     * fails authentication: KP_REASON_AUTHENTICATION, with *detail). */
    enum kp_reason (*stuck)(void *arg, int32_t leader, const char **detail);
};

/* The reason (and *detail) for messages waiting for leader that time out:
 * the stuck hook's answer, KP_REASON_DELIVERY_TIMEOUT without one. */
struct kp_part_env;
enum kp_reason kp_part_env_stuck(const struct kp_part_env *env,
                                 int32_t leader, const char **detail);

/* What every partition shares; owned by kp_router. */
struct kp_part_env {
    struct ev_loop *loop;       /* borrowed */
    struct kp_compressor *cz;   /* borrowed */
    struct kp_batch_pool *pool; /* borrowed */
    struct kp_lingers *lingers; /* borrowed */
    struct kp_gens *gens;       /* borrowed */
    struct kp_deadletter *dl;   /* borrowed; NULL = no dead letter file */
    struct kp_spool *spool;     /* borrowed; NULL = no disk spool */
    bool spool_unread; /* records of an earlier run not read back yet */
    struct kp_counters *n;      /* borrowed */
    struct kp_batch_stats *bstats; /* borrowed */
    const struct kp_part_hooks *hooks;
    void *arg; /* borrowed: the hooks' argument */
    /* Memory accounting against buffer_bytes: every message from read to
     * settled, in open, sealed and in-flight batches and held by topics. */
    int64_t buffered_bytes;
    uint64_t queued_msgs;
};

/* Adds to the daemon's and the topic's (acct) accounting and tells the
 * hooks. */
void kp_part_env_account(struct kp_part_env *env, struct kp_account *acct,
                         int64_t bytes, int64_t msgs);

struct kp_partition {
    struct kp_part_env *env; /* borrowed */
    struct kp_topic *topic;  /* borrowed: the topic that owns it */
    const char *topic_name;  /* borrowed from the topic */
    size_t topic_name_len;
    uint64_t *failed_by; /* borrowed: the topic's failures by reason */
    struct kp_account *acct; /* borrowed: the topic's accounting */
    int32_t id;
    int32_t leader; /* broker node id, -1 = unknown */

    struct kp_batch *open;   /* owned */
    struct kp_batch_q queue; /* owned: sealed batches, send order */
    uint32_t queued_msgs;    /* in open + queue + in flight */
    int inflight;            /* batches sent, not yet answered */
    int32_t inflight_node;   /* where they went */

    int32_t next_seq; /* idempotence: sequence of the next new batch */
    int64_t pid;      /* producer id the sequences belong to */
    int16_t epoch;

    uint64_t sealed_cnt;    /* batches sealed: their `order` */
    uint64_t next_batch_id; /* ids of sealed batches and split halves */

    ev_timer backoff; /* retry backoff */
    bool backing_off;

    /* A sender's ready list (both owned by kp_produce). */
    TAILQ_ENTRY(kp_partition) ready_link;
    struct kp_sender *ready_on; /* whose list it is on, or NULL */

    /* counters for stats */
    uint64_t delivered, failed, batches;
};

void kp_partition_init(struct kp_partition *p, struct kp_part_env *env,
                       struct kp_topic *t, const char *topic_name,
                       size_t topic_name_len, uint64_t *failed_by,
                       struct kp_account *acct, int32_t id);
/* Frees what the partition still holds without settling it (shutdown
 * after the drain, or tests). */
void kp_partition_deinit(struct kp_partition *p);

/* Appends one accepted message (its routing done) to the open batch,
 * opened under conf/pc if needed; seals when full. seq: its number on its
 * connection (kept when the tally wants receipts); spool_seq: its disk
 * spool record (0: none), acknowledged once the message is delivered or
 * dead-lettered. The message's counting (received, tally, generation) is
 * the caller's. */
void kp_partition_append(struct kp_partition *p, struct kp_conf *conf,
                         const struct kp_producer_conf *pc,
                         const struct kp_msg *m, int64_t ts,
                         struct kp_tally *tally, uint32_t gen, uint64_t seq,
                         const struct kp_header *extra, size_t extra_cnt,
                         uint64_t spool_seq);
/* Seals the open batch (if any) and queues it for sending. */
void kp_partition_seal(struct kp_partition *p);

/*
 * Whether the head batch may be sent now, as far as the partition knows:
 * not backing off, under its in-flight limit, no answers pending from an
 * old leader, and for idempotence a producer id (pid >= 0) whose sequences
 * it may start once nothing of the previous one is in flight. The sender
 * adds what it knows (the leader's connection is up).
 */
bool kp_partition_can_send(const struct kp_partition *p, int64_t pid,
                           int16_t epoch);
/* The head batch, or NULL. */
struct kp_batch *kp_partition_head(const struct kp_partition *p);
/* Takes the head batch to send to `node`: stamped with its producer id,
 * epoch and sequence on first send (a resend keeps its bytes). */
struct kp_batch *kp_partition_take(struct kp_partition *p, int32_t node,
                                   int64_t pid, int16_t epoch);

/* The fates of a taken batch (or, for retry/fail, a queued one). */
void kp_partition_delivered(struct kp_partition *p, struct kp_batch *b,
                            int64_t base_offset);
/* Back to its place in the send order; with backoff, after a delay. */
void kp_partition_retry(struct kp_partition *p, struct kp_batch *b,
                        bool backoff);
/* A taken batch got no answer (connection lost, request timed out): it
 * may be in Kafka; retried after backoff, and a shutdown that gives up on
 * it says so (shutdown_unconfirmed). */
void kp_partition_unanswered(struct kp_partition *p, struct kp_batch *b);
/* Fails the head batch without sending it (it cannot go to this leader,
 * e.g. zstd below Produce v7). */
void kp_partition_drop_head(struct kp_partition *p, enum kp_reason why,
                            const char *detail);
/* The broker refused the records at indices bad[] on their own
 * (INVALID_RECORD, INVALID_TIMESTAMP): those fail (why, detail), the
 * others go again in b's place; other writers' messages are not lost
 * with one bad record. */
void kp_partition_exclude(struct kp_partition *p, struct kp_batch *b,
                          const int32_t *bad, int32_t bad_cnt,
                          enum kp_reason why, const char *detail);
/* MESSAGE_TOO_LARGE: replaced by its two halves in its place. */
void kp_partition_split(struct kp_partition *p, struct kp_batch *b);
/* Fails every message of b; detail (the broker's words) may be NULL. */
void kp_partition_fail(struct kp_partition *p, struct kp_batch *b,
                       enum kp_reason why, const char *detail);

/* New leader from metadata (or -1). */
void kp_partition_set_leader(struct kp_partition *p, int32_t leader);
/* Fails queued (not in-flight) batches older than their delivery timeout;
 * idemp_detail (may be NULL) is added to the reason of idempotent ones. */
void kp_partition_expire(struct kp_partition *p, int64_t now_ms,
                         const char *idemp_detail);
/* Seals and fails everything queued (not in flight) as `why`; with
 * KP_REASON_SHUTDOWN, a batch that got no answer to an earlier send fails
 * as shutdown_unconfirmed. With a disk spool, a shutdown keeps what the
 * spool can keep instead (see kp_partition.c). */
void kp_partition_abandon(struct kp_partition *p, enum kp_reason why);

#endif
