/*
 * kp_systemd.h - sd_notify spoken directly over $NOTIFY_SOCKET (a path or
 * an abstract "@" socket), without libsystemd: READY, RELOADING, STOPPING,
 * STATUS and WATCHDOG.
 */
#ifndef KP_SYSTEMD_H
#define KP_SYSTEMD_H

struct kp_ctx;

/* Sends one notification; a no-op outside systemd. */
void kp_systemd_notify(struct kp_ctx *ctx, const char *msg);
/* Once a second from the loop: STATUS= counters and WATCHDOG=1. */
void kp_systemd_tick(struct kp_ctx *ctx);

#endif
