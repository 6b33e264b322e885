/*
 * kp_control.h - the control socket: one-line commands (`stats`,
 * `metrics`, `flush`, `reload`), one reply each. What the commands do is
 * the caller's (kp_ctx wires them): the control socket only frames
 * commands and replies.
 */
#ifndef KP_CONTROL_H
#define KP_CONTROL_H

#include <ev.h>

#include "kp_common.h"

struct kp_activation;
struct kp_barrier;
struct kp_buf;
struct kp_control;

struct kp_control_ops {
    void (*stats)(void *arg, struct kp_buf *out);
    void (*metrics)(void *arg, struct kp_buf *out);
    /* Seals everything and starts counting the fates of what was read
     * so far into *b; flushed() says when all of it is settled;
     * flush_end() stops counting. */
    void (*flush_begin)(void *arg, struct kp_barrier *b);
    bool (*flushed)(void *arg, const struct kp_barrier *b);
    void (*flush_end)(void *arg, struct kp_barrier *b);
    /* KP_OK, or KP_ERROR with *err (malloc'd) saying why. */
    int (*reload)(void *arg, char **err);
};

struct kp_control *kp_control_open(struct ev_loop *loop,
                                   struct kp_activation *act,
                                   const char *path,
                                   const struct kp_control_ops *ops,
                                   void *arg);
void kp_control_close(struct kp_control *ctl);
/* Completes `flush` commands whose messages are all settled. */
void kp_control_check_flush(struct kp_control *ctl);

#endif
