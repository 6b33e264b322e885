/*
 * kp_topic.h - the topic table and each topic's metadata state, its
 * partitions, its sticky partition for key-less messages, and the messages
 * that wait while its metadata is fetched. sarama's topicProducer.
 *
 *   UNKNOWN ──metadata ok──▶ READY ──partition count grows──▶ READY
 *      │  (messages wait in `pending`)           ▲
 *      │ no usable metadata for                  │ metadata ok
 *      ▼ metadata_max_wait_ms                    │
 *   MISSING: what was held fails (unknown_topic), new lines fail at once;
 *            asked again with a growing backoff
 *
 * Held messages also fail at their delivery timeout, whichever is first.
 * Topics that stay unknown are asked about less and less often, and a
 * topic with nothing held and no line for topic_idle_ms is forgotten.
 */
#ifndef KP_TOPIC_H
#define KP_TOPIC_H

#include "kp_buf.h"
#include "kp_line.h"
#include "kp_partition.h"
#include "kp_reason.h"
#include "kp_tally.h"

struct kp_part_env;
struct kp_partition;
struct kp_conf;

enum kp_topic_state {
    KP_TOPIC_UNKNOWN, /* waiting for metadata */
    KP_TOPIC_READY,
    KP_TOPIC_MISSING, /* no metadata after metadata_max_wait_ms */
    KP_TOPIC__COUNT
};
extern const char *const kp_topic_state_names[KP_TOPIC__COUNT];

struct kp_topic {
    char *name; /* owned */
    size_t name_len;
    uint32_t hash;
    enum kp_topic_state state;
    int16_t md_error;     /* last metadata error for this topic */
    int64_t unknown_since_ms; /* monotonic: when it (re)entered UNKNOWN */
    int64_t md_next_ms;   /* monotonic: when to ask about it again */
    int md_backoff_ms;    /* grows while Metadata does not know it */
    bool md_warned;       /* the "unknown topic" warning was given */
    int64_t last_line_ms; /* loop time of its last line (idle topics) */

    struct kp_partition **parts; /* owned array of owned partitions (their
                                    addresses never move: timers, lists) */
    int32_t part_cnt;
    int32_t sticky;         /* partition for key-less messages, -1 = anew */
    uint64_t sticky_sealed; /* its sealed_cnt when chosen: a seal moves on */
    uint32_t rr;            /* sticky rotation */

    /* Settings resolved once per topic under the current configuration. */
    const struct kp_producer_conf *pconf; /* borrowed from the conf */

    /* Messages read before metadata: records with absolute timestamps. */
    struct kp_buf pending;  /* owned */
    int32_t *pending_parts; /* owned: explicit partition per message */
    uint32_t pending_cnt, pending_cap;
    struct kp_runs pending_runs;
    size_t pending_bytes;
    int64_t pending_since_ms;
    uint64_t failed_by[KP_REASON__COUNT]; /* failed messages by reason */
    struct kp_account acct; /* what it holds, in partitions and pending */
};

struct kp_topic_table {
    struct kp_topic **slots; /* owned: open addressing */
    uint32_t cap, cnt;
    struct kp_part_env *env; /* borrowed: what partitions share */
    struct kp_conf *conf;    /* borrowed: the current configuration */
};

void kp_topic_table_init(struct kp_topic_table *tt, struct kp_part_env *env,
                         struct kp_conf *conf);
/* Frees every topic and partition without settling what they hold. */
void kp_topic_table_deinit(struct kp_topic_table *tt);
struct kp_topic *kp_topic_lookup(struct kp_topic_table *tt, const char *name,
                                 size_t len);
/* A new topic, UNKNOWN until its metadata arrives. */
struct kp_topic *kp_topic_create(struct kp_topic_table *tt, const char *name,
                                 size_t len);
/* Re-resolves every topic's producer settings under conf (a reload). */
void kp_topic_table_reconf(struct kp_topic_table *tt, struct kp_conf *conf);

/* Iteration: calls fn for every topic. */
void kp_topic_foreach(struct kp_topic_table *tt,
                      void (*fn)(struct kp_topic *, void *), void *arg);

/*
 * Routes one parsed message read at `ts` (ms), numbered tally->seq on its
 * connection. Returns KP_REASON_NONE (accepted: counted as received, in
 * tally->pending and the current flush generation), or why it is rejected
 * (explicit partition out of range, too long for the topic).
 */
enum kp_reason kp_topic_route(struct kp_topic_table *tt, struct kp_topic *t,
                              const struct kp_msg *m, int64_t ts,
                              struct kp_tally *tally,
                              const struct kp_header *extra,
                              size_t extra_cnt);

/* Metadata arrived: sizes partitions, sets leaders, replays what was held
 * (sealing at once when `seal_now`, as during shutdown). err != 0 or
 * part_cnt <= 0: the topic's entry is an error; leaders stay. */
void kp_topic_on_metadata(struct kp_topic_table *tt, struct kp_topic *t,
                          int16_t err, int32_t part_cnt,
                          const int32_t *leaders, bool seal_now);

/* Fails (and dead-letters) every message held for metadata. */
void kp_topic_fail_held(struct kp_topic_table *tt, struct kp_topic *t,
                        enum kp_reason why, const char *detail);
/* Fails held messages and partition batches older than the delivery
 * timeout (idemp_detail: see kp_partition_expire). */
void kp_topic_expire(struct kp_topic_table *tt, struct kp_topic *t,
                     int64_t now_ms, const char *idemp_detail);
/* Messages the topic holds: waiting for metadata, and in its partitions. */
uint64_t kp_topic_queued(const struct kp_topic *t);
/* Whether the next Metadata request should ask about t (known topics
 * always; unknown ones when their backoff allows). */
bool kp_topic_md_due(const struct kp_topic *t, int64_t now_ms);
/* Whether t may be forgotten: nothing held, no line for idle_ms. */
bool kp_topic_idle(const struct kp_topic *t, int64_t now_loop_ms,
                   int64_t idle_ms);
/* Removes t from the table and frees it (it holds nothing). */
void kp_topic_forget(struct kp_topic_table *tt, struct kp_topic *t);

#endif
