/*
 * kp_topic.h - the topic table and each topic's metadata state, its
 * partitions, its sticky partition for key-less messages, its share of the
 * buffer (topic_buffer_bytes), and the connections that wait for it.
 * sarama's topicProducer.
 *
 *   UNKNOWN ──metadata ok──▶ READY ──partition count grows──▶ READY
 *      │  (writers wait: paused)                 ▲
 *      │ no usable metadata for min(             │ metadata ok
 *      ▼ metadata_max_wait_ms, delivery timeout) │
 *   MISSING: the waiting writers go on, and their lines for it fail at
 *            once (unknown_topic); asked again with a growing backoff
 *
 * Waiting (SPEC "Isolation"). A message for a topic that has no metadata
 * yet, or that holds topic_buffer_bytes already, is not taken: the
 * connection it came from is paused alone (its bytes stay unread in its
 * socket) and put on the topic's `waiters` list, and every waiter is woken
 * when the topic gets room, metadata, or turns MISSING. Nothing is held
 * and re-encoded while metadata is fetched: a cold start costs one round
 * trip of waiting. Topics that stay unknown are asked about less and less
 * often, and a topic with nothing queued, no waiter and no line for
 * topic_idle_ms is forgotten.
 */
#ifndef KP_TOPIC_H
#define KP_TOPIC_H

#include <sys/queue.h>
#include <sys/types.h>

#include "kp_buf.h"
#include "kp_line.h"
#include "kp_log.h"
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

struct kp_topic;

/*
 * A connection waiting for a topic: embedded in the connection (kp_client),
 * listed by the topic. on_wake is called, with the waiter already off the
 * list, when the topic has room or metadata again or turned MISSING; it
 * runs inside whatever settled or answered, so it only schedules the
 * connection's resumption.
 */
struct kp_topic_waiter {
    TAILQ_ENTRY(kp_topic_waiter) link; /* the topic's `waiters` */
    struct kp_topic *topic; /* borrowed: the one waited for; NULL = none */
    pid_t pid;              /* the writer, for the warnings naming it */
    uid_t uid;
    void (*on_wake)(struct kp_topic_waiter *w);
};
TAILQ_HEAD(kp_topic_waiters, kp_topic_waiter);

/* Whose a message is: its writer's tally, its flush generation and its
 * number on its connection (receipts), and its record in the disk spool
 * (0: none). */
struct kp_origin {
    struct kp_tally *tally; /* borrowed */
    uint32_t gen;
    uint64_t num;
    uint64_t spool_seq;
};

/* What a full topic means to kp_topic_check. */
enum kp_topic_full {
    KP_TOPIC_FULL_WAITS,  /* WAIT_ROOM */
    KP_TOPIC_FULL_FAILS,  /* FAILED, buffer_full (max_block_ms passed) */
    KP_TOPIC_FULL_IGNORED /* QUEUED all the same (the spool takes it) */
};

/* What routing one message did (kp_topic_route). */
enum kp_route {
    KP_ROUTE_QUEUED,       /* appended to a partition's batch */
    KP_ROUTE_FAILED,       /* taken and failed at once, dead-lettered: the
                              topic is MISSING, or full past max_block_ms */
    KP_ROUTE_REJECTED,     /* not usable: the reason says why */
    KP_ROUTE_WAIT_ROOM,    /* the topic holds topic_buffer_bytes: wait */
    KP_ROUTE_WAIT_METADATA, /* the topic has no metadata yet: wait */
    KP_ROUTE_WAIT_SPOOL,   /* the disk spool takes no more: wait (every
                              writer is paused: backpressure) */
    KP_ROUTE__COUNT
};
extern const char *const kp_route_names[KP_ROUTE__COUNT];

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
    enum kp_reason missing_why; /* MISSING: why its lines fail */
    char missing_detail[160];   /* ... and the words after the reason */
    int64_t last_line_ms; /* loop time of its last line (idle topics) */

    struct kp_partition **parts; /* owned array of owned partitions (their
                                    addresses never move: timers, lists) */
    int32_t part_cnt;
    int32_t sticky;         /* partition for key-less messages, -1 = anew */
    uint64_t sticky_sealed; /* its sealed_cnt when chosen: a seal moves on */
    uint32_t rr;            /* sticky rotation */

    /* Settings resolved once per topic under the current configuration. */
    const struct kp_producer_conf *pconf; /* borrowed from the conf */

    uint64_t failed_by[KP_REASON__COUNT]; /* failed messages by reason */
    struct kp_account acct; /* what its partitions hold */

    struct kp_topic_waiters waiters; /* borrowed: paused connections */
    uint32_t waiter_cnt;
    uint64_t pauses; /* connections paused on it (full or unknown) */
    struct kp_ratelimit full_rl; /* "topic full" warnings */
    /* Its records read back from a disk spool while it is full: since
     * when (loop ms; 0: not waiting), and whether they fail now (full past
     * max_block_ms); cleared once it has room (kp_topic_on_accounted). */
    int64_t spool_full_since_ms;
    bool spool_full_fails;
};

struct kp_topic_table {
    struct kp_topic **slots; /* owned: open addressing */
    uint32_t cap, cnt;
    struct kp_part_env *env; /* borrowed: what partitions share */
    struct kp_conf *conf;    /* borrowed: the current configuration */
    struct kp_buf fail_rec;  /* owned: scratch, a message failed at once */
    struct kp_runs fail_run; /* its one-message run (emptied after use) */
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
 * connection:
 *   QUEUED    accepted: counted as received, in tally->pending and the
 *             current flush generation, appended to a partition;
 *   FAILED    accepted and failed at once (dead letter first, then the
 *             receipt): the topic is MISSING (unknown_topic), or it is full
 *             and the writer was paused on it for max_block_ms already
 *             (`full_fails`, the caller's knowledge: buffer_full);
 *   REJECTED  *why (explicit partition out of range, too long);
 *   WAIT_ROOM, WAIT_METADATA  nothing taken: the caller waits
 *             (kp_topic_wait) and offers the message again once woken.
 */
enum kp_route kp_topic_route(struct kp_topic_table *tt, struct kp_topic *t,
                             const struct kp_msg *m, int64_t ts,
                             struct kp_tally *tally,
                             const struct kp_header *extra, size_t extra_cnt,
                             bool full_fails, enum kp_reason *why);

/* The parts of kp_topic_route, for a caller with a disk spool between
 * reading and appending (kp_router):
 *  check    what routing m to t would do now, taking nothing: QUEUED (t
 *           takes it), WAIT_*, REJECTED (*why) or FAILED (*why, *detail);
 *  count    a message is taken: received, pending in its tally, in the
 *           current flush generation (returned);
 *  append   appends a checked message to its partition;
 *  fail_msg fails a taken message at once: dead letter, then its spool
 *           record acknowledged, then its receipt. t may be NULL (no
 *           topic could be kept: `name` is the message's). */
enum kp_route kp_topic_check(struct kp_topic_table *tt, struct kp_topic *t,
                             const struct kp_msg *m, enum kp_topic_full full,
                             enum kp_reason *why, const char **detail);
uint32_t kp_topic_count(struct kp_topic_table *tt, struct kp_tally *tally);
void kp_topic_append(struct kp_topic_table *tt, struct kp_topic *t,
                     const struct kp_msg *m, int64_t ts,
                     const struct kp_origin *o, const struct kp_header *extra,
                     size_t extra_cnt);
void kp_topic_fail_msg(struct kp_topic_table *tt, struct kp_topic *t,
                       const char *name, const struct kp_msg *m, int64_t ts,
                       const struct kp_origin *o,
                       const struct kp_header *extra, size_t extra_cnt,
                       enum kp_reason why, const char *detail);

/* Whether t holds topic_buffer_bytes or more. */
bool kp_topic_full(const struct kp_topic_table *tt, const struct kp_topic *t);
/* Puts w on t's waiters (w->topic = t); a warning names the writer when t
 * is full (rate-limited). */
void kp_topic_wait(struct kp_topic_table *tt, struct kp_topic *t,
                   struct kp_topic_waiter *w);
/* Takes w off its topic's list (the connection closes); no-op when it
 * waits for nothing. */
void kp_topic_unwait(struct kp_topic_waiter *w);
/* The topic's bytes went down (acct is some topic's account): wakes its
 * waiters when it has room. Cheap when nobody waits. */
void kp_topic_on_accounted(struct kp_topic_table *tt,
                           struct kp_account *acct);

/* Metadata arrived: sizes partitions, sets leaders, wakes the writers that
 * waited for it (sealing at once when `seal_now`, as during shutdown).
 * err != 0 or part_cnt <= 0: the topic's entry is an error; leaders
 * stay. */
void kp_topic_on_metadata(struct kp_topic_table *tt, struct kp_topic *t,
                          int16_t err, int32_t part_cnt,
                          const int32_t *leaders, bool seal_now);

/* Fails partition batches older than the delivery timeout (idemp_detail:
 * see kp_partition_expire), and turns a topic without metadata for
 * metadata_max_wait_ms (or its delivery timeout, when shorter) MISSING:
 * its waiters go on, and its lines fail at once. */
void kp_topic_expire(struct kp_topic_table *tt, struct kp_topic *t,
                     int64_t now_ms, const char *idemp_detail);
/* Messages the topic holds in its partitions. */
uint64_t kp_topic_queued(const struct kp_topic *t);
/* Whether the next Metadata request should ask about t (known topics
 * always; unknown ones when their backoff allows). */
bool kp_topic_md_due(const struct kp_topic *t, int64_t now_ms);
/* Whether t may be forgotten: nothing held (in memory or the disk
 * spool), nobody waiting, no line for idle_ms. */
bool kp_topic_idle(const struct kp_topic *t, int64_t now_loop_ms,
                   int64_t idle_ms);
/* Removes t from the table and frees it (it holds nothing). */
void kp_topic_forget(struct kp_topic_table *tt, struct kp_topic *t);

#endif
