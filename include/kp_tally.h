/*
 * kp_tally.h - the fate of messages, counted where a client (or a flush
 * barrier) can see it.
 *
 * A tally belongs to one client connection and outlives it: batches hold a
 * reference for each run of that client's messages, so a client that closed
 * both ways loses nothing and the counters stay valid until the last of its
 * messages is settled.
 *
 * Flush generations: every message is stamped with the generation current
 * when it was read. `flush` starts a new generation and waits until every
 * message of the older ones is settled.
 */
#ifndef KP_TALLY_H
#define KP_TALLY_H

#include "kp_common.h"

/* Called when a tally's pending count drops to 0. */
typedef void (*kp_tally_idle_cb)(void *owner);

struct kp_tally {
    uint32_t refs;
    uint64_t pending; /* read, not yet delivered or failed */
    uint64_t delivered;
    uint64_t failed;
    uint64_t rejected;
    kp_tally_idle_cb on_idle;
    void *owner; /* borrowed: the connection; NULL once it is gone */
};

struct kp_tally *kp_tally_create(kp_tally_idle_cb on_idle, void *owner);
struct kp_tally *kp_tally_get(struct kp_tally *t);
void kp_tally_put(struct kp_tally *t);
/* The owner is gone: the tally counts on, telling no one. */
void kp_tally_detach(struct kp_tally *t);
/* n pending messages are settled (delivered when ok, else failed); tells
 * the owner when nothing is pending any more. */
void kp_tally_settle(struct kp_tally *t, uint64_t n, bool ok);
/* n pending messages turn out to be unusable after all (a partition that
 * the topic turned out not to have): counted as rejected. */
void kp_tally_unaccept(struct kp_tally *t, uint64_t n);

/*
 * A run of consecutive messages of one tally and generation in a batch:
 * the unit in which fates are reported.
 */
struct kp_run {
    struct kp_tally *tally; /* owned reference */
    uint32_t gen;
    uint32_t count;
};

struct kp_runs {
    struct kp_run *v; /* owned */
    uint32_t cnt, cap;
};

/* Adds one message of (tally, gen); merges with the last run. */
void kp_runs_add(struct kp_runs *r, struct kp_tally *t, uint32_t gen,
                 uint32_t n);
/* Moves the first n messages' runs from src to dst (batch splitting). */
void kp_runs_take(struct kp_runs *dst, struct kp_runs *src, uint32_t n);
void kp_runs_deinit(struct kp_runs *r);

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
