/*
 * kp_linger.h - the linger timers of open batches. Batches with the same
 * linger_ms form one FIFO (oldest first) with one ev_timer on its head
 * (DESIGN 12), instead of a timer per batch: opening a batch is an append,
 * and a due batch is handed to `on_due` (which seals it, taking it off the
 * FIFO).
 */
#ifndef KP_LINGER_H
#define KP_LINGER_H

#include <ev.h>
#include <sys/queue.h>

#include "kp_common.h"

struct kp_batch;
struct kp_linger;

typedef void (*kp_linger_due_cb)(void *arg, struct kp_batch *b);

struct kp_lingers {
    struct ev_loop *loop;   /* borrowed */
    struct kp_linger **v;   /* owned array of owned FIFOs (their watchers
                               must not move) */
    size_t cnt;
    kp_linger_due_cb on_due;
    void *arg; /* borrowed */
};

void kp_lingers_init(struct kp_lingers *ls, struct ev_loop *loop,
                     kp_linger_due_cb on_due, void *arg);
/* Stops the timers; the batches still queued are the caller's. */
void kp_lingers_deinit(struct kp_lingers *ls);
/* An open batch starts lingering: b->pconf->linger_ms from b->created_ms. */
void kp_lingers_add(struct kp_lingers *ls, struct kp_batch *b);
/* The batch stops lingering (sealed, or destroyed). */
void kp_lingers_remove(struct kp_lingers *ls, struct kp_batch *b);

#endif
