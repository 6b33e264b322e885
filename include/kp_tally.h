/*
 * kp_tally.h - the fate of messages, counted where a client (or a flush
 * barrier) can see it.
 *
 * A tally belongs to one client connection and outlives it: batches hold a
 * reference for each run of that client's messages, so a client that closed
 * both ways loses nothing and the counters stay valid until the last of its
 * messages is settled.
 *
 * Receipts: a tally whose connection wants them numbers its messages
 * (`seq`, set by the connection as it reads) and every run remembers the
 * numbers of its messages, so settling a batch appends one line per
 * message to the tally's output (`ok N PARTITION OFFSET`, `failed N
 * REASON`), after the dead letter; the connection writes it. Tallies
 * without receipts store no numbers.
 *
 * Flush generations: every message is stamped with the generation current
 * when it was read. `flush` starts a new generation and waits until every
 * message of the older ones is settled.
 */
#ifndef KP_TALLY_H
#define KP_TALLY_H

#include <sys/types.h>

#include "kp_buf.h"
#include "kp_common.h"
#include "kp_reason.h"

/* Called when a tally's pending count drops to 0, and (receipts) when
 * lines were appended to its output. */
typedef void (*kp_tally_cb)(void *owner);

/*
 * Receipts (SPEC "Receipts"): a tally that wants them gets one line per
 * message in `out` once its fate is known; its owner (the connection)
 * writes `out` and is told through on_output. Messages are numbered by
 * the owner (`seq`) as it reads them; runs keep each message's number.
 */
struct kp_tally {
    uint32_t refs;
    uint64_t pending; /* read, not yet delivered or failed */
    uint64_t delivered;
    uint64_t failed;
    uint64_t rejected;
    uint64_t seq;  /* the number (N) of the message read last; 0 = none */
    bool receipts; /* one receipt line per message (fixed at creation) */
    struct kp_buf out; /* owned: lines for the owner to write, appended at
                          `len`; emptied by the owner; freed at detach */
    kp_tally_cb on_idle;
    kp_tally_cb on_output; /* receipts only */
    void *owner; /* borrowed: the connection; NULL once it is gone */
    pid_t pid;   /* the writer (SO_PEERCRED), for logs naming it */
    uid_t uid;
};

struct kp_tally *kp_tally_create(kp_tally_cb on_idle, void *owner);
/* From now on every message of t gets a receipt line in t->out, and
 * on_output(owner) is called after lines are appended. */
void kp_tally_want_receipts(struct kp_tally *t, kp_tally_cb on_output);
struct kp_tally *kp_tally_get(struct kp_tally *t);
void kp_tally_put(struct kp_tally *t);
/* The owner is gone: the tally counts on, telling no one; its output is
 * freed and no more lines are appended. */
void kp_tally_detach(struct kp_tally *t);
/* n pending messages are settled (delivered when ok, else failed); tells
 * the owner when nothing is pending any more. */
void kp_tally_settle(struct kp_tally *t, uint64_t n, bool ok);
/* n pending messages turn out to be unusable after all (a partition that
 * the topic turned out not to have): counted as rejected. */
void kp_tally_unaccept(struct kp_tally *t, uint64_t n);

/* How a message ended, as its receipt says it. */
enum kp_fate {
    KP_FATE_OK,       /* `ok N PARTITION OFFSET` */
    KP_FATE_FAILED,   /* `failed N REASON` */
    KP_FATE_REJECTED, /* `rejected N REASON` */
    KP_FATE__COUNT
};
extern const char *const kp_fate_names[KP_FATE__COUNT];

/* The longest receipt line, '\n' included. */
#define KP_RECEIPT_MAX 64

/* Formats one receipt line at p (room for KP_RECEIPT_MAX bytes); returns
 * its length. `part` and `offset` are for ok, `why` for the others. */
size_t kp_receipt_format(char *p, enum kp_fate fate, uint64_t seq,
                         int32_t part, int64_t offset, enum kp_reason why);
/* One receipt for message `seq` of t (rejected when read); tells the
 * owner. No-op unless t wants receipts and its owner is there. */
void kp_tally_receipt(struct kp_tally *t, enum kp_fate fate, uint64_t seq,
                      enum kp_reason why);

/*
 * A run of consecutive messages of one tally and generation in a batch:
 * the unit in which fates are reported.
 */
struct kp_run {
    struct kp_tally *tally; /* owned reference */
    uint32_t gen;
    uint32_t count;
};

/*
 * The runs of a batch (or of a topic's held messages), in message order.
 * `seqs` holds the number of every message whose tally wants receipts, in
 * the same order (none for other tallies: they cost nothing). Both arrays
 * are consumed from the front (`head`, `seq_head`) without moving the
 * rest, so taking messages one by one stays linear.
 */
struct kp_runs {
    struct kp_run *v; /* owned */
    uint32_t head, cnt, cap;   /* runs are v[head..cnt) */
    uint64_t *seqs;            /* owned; NULL until a receipts tally */
    uint32_t seq_head, seq_cnt, seq_cap;
};

/* Adds one message of (tally, gen) numbered seq; merges with the last
 * run. */
void kp_runs_add(struct kp_runs *r, struct kp_tally *t, uint32_t gen,
                 uint64_t seq);
/* Moves the first n messages from src to the end of dst (batch
 * splitting, settling held messages). */
void kp_runs_take(struct kp_runs *dst, struct kp_runs *src, uint32_t n);
/* The first message of r (not empty): its tally (borrowed from r), gen,
 * and number (0 when its tally wants no receipts). */
void kp_runs_first(const struct kp_runs *r, struct kp_tally **t,
                   uint32_t *gen, uint64_t *seq);
/* Drops the first message of r (not empty). */
void kp_runs_drop_first(struct kp_runs *r);
/* Messages in r. */
uint64_t kp_runs_count(const struct kp_runs *r);
void kp_runs_deinit(struct kp_runs *r);

struct kp_gens;
/*
 * Settles every message of r: the flush generations, then per run the
 * receipts (ok: OFFSET is base_offset plus the message's index in r, or -1
 * when base_offset is -1) and the tally's counts (REJECTED: unaccepted).
 * r itself is left as it is (the caller frees it).
 */
void kp_runs_settle(const struct kp_runs *r, struct kp_gens *g,
                    enum kp_fate fate, enum kp_reason why, int32_t part,
                    int64_t base_offset);

/*
 * A flush barrier: waits for the messages of generations <= gen, counting
 * their fates as they settle (`flush` replies with these counts).
 */
struct kp_barrier {
    uint32_t gen;
    uint64_t delivered;
    uint64_t failed;
    struct kp_barrier *next; /* borrowed: the gens' list of barriers */
};

/* Per-generation pending counts, oldest first. */
struct kp_gens {
    uint32_t base;      /* generation of pending[0] */
    uint64_t *pending;  /* owned ring: pending[i] is generation base+i */
    uint32_t cnt, cap;
    uint32_t current;
    struct kp_barrier *barriers; /* borrowed: the waiting flushes' */
};
void kp_gens_init(struct kp_gens *g);
void kp_gens_deinit(struct kp_gens *g);
void kp_gens_add(struct kp_gens *g, uint32_t gen, uint64_t n);
/* n messages of gen are settled: delivered when ok, else failed. */
void kp_gens_settle(struct kp_gens *g, uint32_t gen, uint64_t n, bool ok);
/* Starts a new generation and a barrier for every older one (the caller
 * owns *b until kp_gens_unwatch). */
void kp_gens_barrier(struct kp_gens *g, struct kp_barrier *b);
void kp_gens_unwatch(struct kp_gens *g, struct kp_barrier *b);
/* Whether every message of generations <= gen is settled. */
bool kp_gens_done(const struct kp_gens *g, uint32_t gen);

#endif
