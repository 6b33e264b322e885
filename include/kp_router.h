/*
 * kp_router.h - the message pipeline below the network: accepted messages
 * go to their topic and partition, batches are opened, lingered, sealed and
 * settled. The router owns what partitions share (kp_part_env: compressor,
 * batch-buffer pool, linger timers, flush generations, memory accounting)
 * and the topic table, and tells the layers above through hooks:
 *
 *   kp_client ──route──▶ kp_router ──▶ kp_topic ──▶ kp_partition ──▶ kp_batch
 *                            │ hooks
 *                            ├─ changed(p)    the sender (kp_produce)
 *                            ├─ seq_gap()     idempotence (kp_idemp)
 *                            ├─ new_topic(t)  metadata (kp_metadata)
 *                            ├─ forget_topic  the sender drops its partitions
 *                            ├─ backpressure  the clients (pause/resume)
 *                            └─ settled()     flush barriers (kp_control)
 */
#ifndef KP_ROUTER_H
#define KP_ROUTER_H

#include <ev.h>

#include "kp_batch.h"
#include "kp_linger.h"
#include "kp_partition.h"
#include "kp_spool.h"
#include "kp_tally.h"
#include "kp_topic.h"

struct kp_conf;
struct kp_counters;
struct kp_deadletter;

struct kp_router_hooks {
    void (*changed)(void *arg, struct kp_partition *p);
    /* Why messages waiting for leader (-1: none known) are undelivered
     * at their delivery timeout; see kp_part_hooks. May be NULL. */
    enum kp_reason (*stuck)(void *arg, int32_t leader, const char **detail);
    void (*seq_gap)(void *arg, int64_t pid, int16_t epoch, const char *why);
    void (*new_topic)(void *arg, struct kp_topic *t);
    /* t is about to be freed: nothing may keep its partitions. */
    void (*forget_topic)(void *arg, struct kp_topic *t);
    void (*backpressure)(void *arg, bool on);
    void (*settled)(void *arg);
};

struct kp_router {
    struct kp_conf *conf; /* borrowed: the current configuration */
    struct kp_part_env env;
    struct kp_compressor *cz; /* owned */
    struct kp_batch_pool pool;
    struct kp_lingers lingers;
    struct kp_gens gens;
    struct kp_batch_stats bstats;
    struct kp_topic_table topics;
    bool seal_now; /* draining: every batch goes out at once */
    uint64_t topic_epoch; /* bumped when a topic is forgotten: cached
                             topic pointers (clients') are then stale */

    int64_t client_bytes; /* unfinished lines held by connections */

    /* The disk spool (SPEC "Disk spool"), when configured; see the spool
     * section of kp_router.c. */
    struct kp_spool *spool;         /* borrowed: kp_ctx opens and closes */
    enum kp_spool_mode spool_mode;
    struct kp_spool_cursor *cursor; /* owned: reads records back */
    bool draining;      /* new messages go to the spool only, and are read
                           back in seq order as memory frees */
    bool spool_blocked; /* the spool takes no more: writers wait */
    bool spool_error;   /* ... because a write failed (retried) */
    struct kp_runs spilled; /* owned: this run's messages in the spool
                               only, in seq order from spilled_first */
    uint64_t spilled_first;
    uint64_t spilled_cnt;
    struct kp_tally *replay;     /* owned: the records of earlier runs */
    struct kp_spool_view head;   /* the record read back, not placed yet */
    bool head_valid;
    ev_idle pump_idle; /* a replay round stopped by its budget: the loop
                          turns again at once (its prepare pumps on) */

    bool backpressure;
    int64_t backpressure_since_ms;
    int64_t backpressure_total_ms;

    const struct kp_router_hooks *hooks;
    void *arg; /* borrowed: the hooks' argument */
};

struct kp_router *kp_router_create(struct ev_loop *loop, struct kp_conf *conf,
                                   struct kp_counters *n,
                                   struct kp_deadletter *dl,
                                   const struct kp_router_hooks *hooks,
                                   void *arg);
/* Frees everything; what is still held is dropped unsettled. */
void kp_router_destroy(struct kp_router *r);
/* Where failed messages are written from now on (NULL: nowhere). */
void kp_router_set_deadletter(struct kp_router *r, struct kp_deadletter *dl);
/* A reload: new settings for new batches; buffer_bytes may have changed. */
void kp_router_reconf(struct kp_router *r, struct kp_conf *conf);

/* The topic of that name, created (and announced to new_topic) if new;
 * NULL when max_topics are kept already (the line is rejected,
 * too_many_topics). */
struct kp_topic *kp_router_topic(struct kp_router *r, const char *name,
                                 size_t len);
/* Routes one parsed message (a timestamp too far ahead is rejected,
 * bad_timestamp); see kp_topic_route. */
enum kp_route kp_router_route(struct kp_router *r, struct kp_topic *t,
                              const struct kp_msg *m, int64_t ts,
                              struct kp_tally *tally,
                              const struct kp_header *extra, size_t extra_cnt,
                              bool full_fails, enum kp_reason *why);
/* After a WAIT_* route: w waits for t (kp_topic_wait). */
void kp_router_wait(struct kp_router *r, struct kp_topic *t,
                    struct kp_topic_waiter *w);
/* The bytes of unfinished lines that connections hold went up or down by
 * delta: they count against buffer_bytes (backpressure) beside messages. */
void kp_router_client_bytes(struct kp_router *r, int64_t delta);

/*
 * The disk spool: from now on messages go through s (opened, recovered;
 * borrowed until kp_router_destroy) as `mode` says; what s holds from
 * earlier runs is read back first. Call before any message is routed.
 */
void kp_router_set_spool(struct kp_router *r, struct kp_spool *s,
                         enum kp_spool_mode mode);
/* The prepare phase: records read back from the spool as memory frees,
 * writers let go once the spool has room again. A round is bounded; when
 * more is left to read, an idle watcher of the router's keeps the loop
 * from blocking, so the next prepare goes on at once. */
void kp_router_pump(struct kp_router *r);
/* Once a second: a spool that failed to write is tried again. */
void kp_router_spool_retry(struct kp_router *r);

/* Seals every open batch (flush, drain). */
void kp_router_seal_all(struct kp_router *r);
/* From now on every batch is sealed at once (SIGTERM's drain). */
void kp_router_drain(struct kp_router *r);
/* Delivery timeouts and topics without metadata, once a second; idle
 * topics are forgotten. */
void kp_router_expire(struct kp_router *r, int64_t now_ms,
                      const char *idemp_detail);
/* Shutdown deadline: fails what is queued (not in flight). With a disk
 * spool it flushes first, and keeps (leaves unacknowledged for the next
 * start) only messages whose records are on file; the rest fail and are
 * counted in n->failed (exit status 3). */
void kp_router_abandon(struct kp_router *r, enum kp_reason why);
/* Re-evaluates every partition (a broker came up, a producer id came). */
void kp_router_poke_all(struct kp_router *r);

/* Flush barriers: seals everything and starts counting into *b the fates
 * of what was read so far; kp_router_flushed() tells when it is all
 * settled, kp_router_flush_end() stops counting. */
void kp_router_flush_begin(struct kp_router *r, struct kp_barrier *b);
bool kp_router_flushed(const struct kp_router *r, const struct kp_barrier *b);
void kp_router_flush_end(struct kp_router *r, struct kp_barrier *b);

/* The topics the next Metadata request asks about (names borrowed, into
 * names[], room for topics.cnt); returns how many. */
size_t kp_router_md_topics(struct kp_router *r, const char **names,
                           int64_t now_ms);
/* Milliseconds until an unknown topic is due to be asked about again
 * (-1: none is waiting). */
int64_t kp_router_md_wait_ms(struct kp_router *r, int64_t now_ms);

/* Applies one topic's Metadata entry (kp_topic_on_metadata); false when
 * the topic is not (or no longer) known. */
bool kp_router_on_metadata(struct kp_router *r, const char *name,
                           int16_t err, int32_t part_cnt,
                           const int32_t *leaders);

/* Connections paused on a topic (full, or without metadata) now. */
uint64_t kp_router_waiters(const struct kp_router *r);
/* Time reading was paused by backpressure so far. */
int64_t kp_router_backpressure_ms(const struct kp_router *r);

#endif
