/*
 * kp_tally.c - per-client fate counters, runs of messages in a batch, and
 * the flush generations.
 */
#include "kp_tally.h"

struct kp_tally *kp_tally_create(kp_tally_idle_cb on_idle, void *owner)
{
    struct kp_tally *t = kp_calloc(1, sizeof(*t));
    t->refs = 1;
    t->on_idle = on_idle;
    t->owner = owner;
    return t;
}

void kp_tally_detach(struct kp_tally *t)
{
    t->owner = NULL;
}

static void kp_tally_check_idle(struct kp_tally *t)
{
    if (t->pending == 0 && t->owner && t->on_idle) {
        t->on_idle(t->owner);
    }
}

void kp_tally_settle(struct kp_tally *t, uint64_t n, bool ok)
{
    kp_assert(t->pending >= n);
    t->pending -= n;
    if (ok) {
        t->delivered += n;
    } else {
        t->failed += n;
    }
    kp_tally_check_idle(t);
}

void kp_tally_unaccept(struct kp_tally *t, uint64_t n)
{
    kp_assert(t->pending >= n);
    t->pending -= n;
    t->rejected += n;
    kp_tally_check_idle(t);
}

struct kp_tally *kp_tally_get(struct kp_tally *t)
{
    t->refs++;
    return t;
}

void kp_tally_put(struct kp_tally *t)
{
    kp_assert(t->refs > 0);
    if (--t->refs == 0) {
        free(t);
    }
}

void kp_runs_add(struct kp_runs *r, struct kp_tally *t, uint32_t gen,
                 uint32_t n)
{
    if (r->cnt) {
        struct kp_run *last = &r->v[r->cnt - 1];
        if (last->tally == t && last->gen == gen) {
            last->count += n;
            return;
        }
    }
    if (r->cnt == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4;
        r->v = kp_realloc(r->v, r->cap * sizeof(*r->v));
    }
    r->v[r->cnt++] = (struct kp_run){kp_tally_get(t), gen, n};
}

void kp_runs_take(struct kp_runs *dst, struct kp_runs *src, uint32_t n)
{
    uint32_t i = 0;
    while (n > 0 && i < src->cnt) {
        struct kp_run *run = &src->v[i];
        uint32_t k = KP_MIN(n, run->count);
        kp_runs_add(dst, run->tally, run->gen, k);
        run->count -= k;
        n -= k;
        if (run->count == 0) {
            kp_tally_put(run->tally);
            i++;
        }
    }
    memmove(src->v, src->v + i, (src->cnt - i) * sizeof(*src->v));
    src->cnt -= i;
}

void kp_runs_deinit(struct kp_runs *r)
{
    for (uint32_t i = 0; i < r->cnt; i++) {
        kp_tally_put(r->v[i].tally);
    }
    free(r->v);
    memset(r, 0, sizeof(*r));
}

void kp_gens_init(struct kp_gens *g)
{
    memset(g, 0, sizeof(*g));
    g->cap = 8;
    g->pending = kp_calloc(g->cap, sizeof(*g->pending));
    g->cnt = 1; /* generation 0 */
}

void kp_gens_deinit(struct kp_gens *g)
{
    free(g->pending);
    memset(g, 0, sizeof(*g));
}

static uint64_t *kp_gens_slot(struct kp_gens *g, uint32_t gen)
{
    uint32_t i = gen - g->base;
    kp_assert(i < g->cnt);
    return &g->pending[i];
}

void kp_gens_add(struct kp_gens *g, uint32_t gen, uint64_t n)
{
    *kp_gens_slot(g, gen) += n;
}

/* Drops settled generations from the front, keeping the current one. */
static void kp_gens_trim(struct kp_gens *g)
{
    uint32_t i = 0;
    while (i + 1 < g->cnt && g->pending[i] == 0) {
        i++;
    }
    if (i) {
        memmove(g->pending, g->pending + i, (g->cnt - i) * sizeof(uint64_t));
        g->cnt -= i;
        g->base += i;
    }
}

void kp_gens_settle(struct kp_gens *g, uint32_t gen, uint64_t n, bool ok)
{
    uint64_t *p = kp_gens_slot(g, gen);
    kp_assert(*p >= n);
    *p -= n;
    kp_gens_trim(g);
    for (struct kp_barrier *b = g->barriers; b; b = b->next) {
        if ((int32_t)(gen - b->gen) <= 0) {
            if (ok) {
                b->delivered += n;
            } else {
                b->failed += n;
            }
        }
    }
}

/* Starts a new generation; returns the one a barrier must wait for. */
static uint32_t kp_gens_next(struct kp_gens *g)
{
    uint32_t old = g->current;
    if (g->pending[g->cnt - 1] == 0 && g->cnt == 1) {
        /* Nothing pending at all: reuse the slot. */
        g->base++;
        g->current++;
        return old;
    }
    if (g->cnt == g->cap) {
        g->cap *= 2;
        g->pending = kp_realloc(g->pending, g->cap * sizeof(uint64_t));
    }
    g->pending[g->cnt++] = 0;
    g->current++;
    return old;
}

void kp_gens_barrier(struct kp_gens *g, struct kp_barrier *b)
{
    b->gen = kp_gens_next(g);
    b->delivered = b->failed = 0;
    b->next = g->barriers;
    g->barriers = b;
}

void kp_gens_unwatch(struct kp_gens *g, struct kp_barrier *b)
{
    for (struct kp_barrier **p = &g->barriers; *p; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            return;
        }
    }
}

bool kp_gens_done(const struct kp_gens *g, uint32_t gen)
{
    /* Generations below base are settled; check base..gen. */
    if ((int32_t)(gen - g->base) < 0) {
        return true;
    }
    for (uint32_t i = 0; i <= gen - g->base && i < g->cnt; i++) {
        if (g->pending[i]) {
            return false;
        }
    }
    return true;
}
