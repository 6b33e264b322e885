/*
 * kp_topic.h - the topic table and each topic's metadata state, its
 * partitions, its sticky partition for key-less messages, and the messages
 * that wait while its metadata is fetched. sarama's topicProducer.
 *
 *   UNKNOWN ──metadata ok──▶ READY ──partition count grows──▶ READY
 *      │  (messages wait in `pending`)
 *      └── topic does not exist: keep asking with backoff; pending
 *          messages fail after delivery_timeout_ms
 */
#ifndef KP_TOPIC_H
#define KP_TOPIC_H

#include "kp_buf.h"
#include "kp_line.h"
#include "kp_tally.h"

struct kp_ctx;
struct kp_partition;
struct kp_conf;

enum kp_topic_state {
    KP_TOPIC_UNKNOWN, /* waiting for metadata */
    KP_TOPIC_READY,
    KP_TOPIC__COUNT
};
extern const char *const kp_topic_state_names[KP_TOPIC__COUNT];

struct kp_topic {
    struct kp_ctx *ctx; /* borrowed */
    char *name; /* owned */
    size_t name_len;
    uint32_t hash;
    enum kp_topic_state state;
    int16_t md_error; /* last metadata error for this topic */

    struct kp_partition **parts; /* owned array of owned partitions (their
                                    addresses never move: timers, lists) */
    int32_t part_cnt;
    int32_t sticky; /* partition for key-less messages, -1 = pick anew */
    uint32_t rr;    /* sticky rotation */

    /* Settings resolved once per topic under the current configuration. */
    const struct kp_producer_conf *pconf; /* borrowed from ctx->conf */

    /* Messages read before metadata: records with absolute timestamps. */
    struct kp_buf pending;      /* owned */
    int32_t *pending_parts;     /* owned: explicit partition per message */
    uint32_t pending_cnt, pending_cap;
    struct kp_runs pending_runs;
    size_t pending_bytes;
    int64_t pending_since_ms;
    struct kp_fail_count *fails; /* owned: failed messages by reason */
    uint32_t fail_cnt;
};

/* Failed messages of a topic counted under one reason. */
struct kp_fail_count {
    char reason[64];
    uint64_t n;
};

struct kp_topic_table {
    struct kp_topic **slots; /* owned: open addressing */
    uint32_t cap, cnt;
};

void kp_topic_table_init(struct kp_topic_table *tt);
void kp_topic_table_deinit(struct kp_topic_table *tt);
struct kp_topic *kp_topic_lookup(struct kp_topic_table *tt, const char *name,
                                 size_t len);
struct kp_topic *kp_topic_create(struct kp_ctx *ctx, const char *name,
                                 size_t len);

/* Re-resolves every topic's producer settings after a reload. */
void kp_topic_table_reconf(struct kp_ctx *ctx);

/*
 * Routes one parsed message read at `ts` (ms) from tally's client.
 * Returns KP_REJ_NONE, or the reason the message is rejected (explicit
 * partition out of range, too long for the topic).
 */
enum kp_reject kp_topic_route(struct kp_ctx *ctx, struct kp_topic *t,
                              const struct kp_msg *m, int64_t ts,
                              struct kp_tally *tally,
                              const struct kp_header *extra,
                              size_t extra_cnt);

/* Metadata arrived: sizes partitions, sets leaders, replays pending. */
void kp_topic_on_metadata(struct kp_ctx *ctx, struct kp_topic *t,
                          int16_t err, int32_t part_cnt,
                          const int32_t *leaders);

/* Appends one accepted message to partition p of t (explicit choice done).
 * Counting of the message (received, tally, generation) is the caller's. */
void kp_topic_append(struct kp_ctx *ctx, struct kp_partition *p,
                     const struct kp_msg *m, int64_t ts, struct kp_tally *tally,
                     uint32_t gen, const struct kp_header *extra,
                     size_t extra_cnt);

/* Counts n failed messages of t under `reason` (stats, metrics). */
void kp_topic_count_failed(struct kp_topic *t, const char *reason,
                           uint64_t n);

/* Fails (and dead-letters) every message held for metadata. */
void kp_topic_fail_held(struct kp_ctx *ctx, struct kp_topic *t,
                        const char *why);
/* Fails pending messages older than the delivery timeout. */
void kp_topic_expire(struct kp_ctx *ctx, struct kp_topic *t, int64_t now_ms);

/* Iteration helper: calls fn for every topic. */
void kp_topic_foreach(struct kp_topic_table *tt,
                      void (*fn)(struct kp_ctx *, struct kp_topic *, void *),
                      struct kp_ctx *ctx, void *arg);

#endif
