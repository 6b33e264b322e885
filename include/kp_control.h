/*
 * kp_control.h - the control socket: one-line commands (`stats`,
 * `metrics`, `flush`, `reload`), one reply each.
 */
#ifndef KP_CONTROL_H
#define KP_CONTROL_H

struct kp_ctx;
struct kp_control;

struct kp_control *kp_control_open(struct kp_ctx *ctx, const char *path);
void kp_control_close(struct kp_control *ctl);
/* Completes `flush` commands whose messages are all settled. */
void kp_control_check_flush(struct kp_control *ctl);

#endif
