/*
 * kp_produce.h - the sender: sarama's brokerProducer. Per broker it keeps
 * the ready list of the partitions it leads that may send now; in the
 * loop's prepare phase it turns them into ProduceRequests (one batch per
 * partition per request, grouped by topic) and hands every answer back to
 * the partitions through kp_partition's API — it never changes a partition
 * itself.
 *
 *   partition changed ──▶ ready list of its leader's sender ──▶ dirty
 *   prepare: dirty senders ──▶ ProduceRequest ──▶ kp_broker
 *   answer ──▶ per batch: delivered / retry / refresh+retry / new pid /
 *              split / fail (kp_kerr's action for its error code)
 */
#ifndef KP_PRODUCE_H
#define KP_PRODUCE_H

#include <sys/queue.h>

#include "kp_broker.h"
#include "kp_kerr.h"

struct kp_conf;
struct kp_counters;
struct kp_idemp;
struct kp_metadata;
struct kp_partition;
struct kp_router;
struct kp_topic;

TAILQ_HEAD(kp_partition_q, kp_partition);

/* Error codes counted per broker: -1 (UNKNOWN_SERVER_ERROR) to 126. */
#define KP_SENDER_ERR_CODES 128

/* The producer's side of one broker. */
struct kp_sender {
    struct kp_broker *broker;    /* borrowed */
    struct kp_partition_q ready; /* partitions with a sendable batch */
    TAILQ_ENTRY(kp_sender) dirty_link;
    bool dirty;
    uint64_t errors[KP_SENDER_ERR_CODES]; /* by error code + 1 */
};

struct kp_produce {
    struct kp_conf *const *conf; /* borrowed: the current configuration */
    struct kp_metadata *md;      /* borrowed */
    struct kp_idemp *idemp;      /* borrowed */
    struct kp_counters *n;       /* borrowed */
    TAILQ_HEAD(, kp_sender) dirty; /* senders to flush before polling */
    bool abandoning; /* shutdown deadline: unanswered batches fail */
};

void kp_produce_init(struct kp_produce *pr, struct kp_conf *const *conf,
                     struct kp_metadata *md, struct kp_idemp *idemp,
                     struct kp_counters *n);

/* A broker joins or leaves (kp_metadata's hooks). */
void kp_produce_adopt(struct kp_produce *pr, struct kp_broker *b);
void kp_produce_release(struct kp_produce *pr, struct kp_broker *b);
/* A broker changed state: up, its partitions may send; down, its ready
 * list empties. */
void kp_produce_on_broker_state(struct kp_produce *pr, struct kp_broker *b);
/* Room for more requests on b. */
void kp_produce_on_room(struct kp_produce *pr, struct kp_broker *b);

/* A partition's sendability may have changed. */
void kp_produce_on_changed(struct kp_produce *pr, struct kp_partition *p);
/* A topic is forgotten: its partitions leave every ready list. */
void kp_produce_forget(struct kp_produce *pr, struct kp_topic *t);
/* Builds and sends requests for every dirty sender (prepare phase). */
void kp_produce_flush(struct kp_produce *pr);
/* From now on a batch whose request fails unanswered is failed as
 * shutdown_unconfirmed instead of being retried. */
void kp_produce_abandon(struct kp_produce *pr);

/* Error count of a code for stats (0 for codes out of range). */
uint64_t kp_sender_errors(const struct kp_sender *s, int16_t code);

#endif
