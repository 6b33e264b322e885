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

struct kp_client;
struct kp_ctx;

struct kp_tally {
    uint32_t refs;
    uint64_t pending; /* read, not yet delivered or failed */
    uint64_t delivered;
    uint64_t failed;
    uint64_t rejected;
    struct kp_client *client; /* borrowed; NULL once the client is gone */
};

struct kp_tally *kp_tally_create(struct kp_client *client);
struct kp_tally *kp_tally_get(struct kp_tally *t);
void kp_tally_put(struct kp_tally *t);

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

/* Per-generation pending counts, oldest first. */
struct kp_gens {
    uint32_t base;      /* generation of pending[0] */
    uint64_t *pending;  /* owned ring: pending[i] is generation base+i */
    uint32_t cnt, cap;
    uint32_t current;
};
void kp_gens_init(struct kp_gens *g);
void kp_gens_deinit(struct kp_gens *g);
void kp_gens_add(struct kp_gens *g, uint32_t gen, uint64_t n);
void kp_gens_settle(struct kp_gens *g, uint32_t gen, uint64_t n);
/* Starts a new generation; returns the one a barrier must wait for. */
uint32_t kp_gens_next(struct kp_gens *g);
/* Whether every message of generations <= gen is settled. */
bool kp_gens_done(const struct kp_gens *g, uint32_t gen);

#endif
