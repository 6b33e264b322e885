/*
 * kp_systemd.h - sd_notify spoken directly over $NOTIFY_SOCKET (a path or
 * an abstract "@" socket), without libsystemd: READY, RELOADING (with
 * MONOTONIC_USEC), STOPPING, STATUS and WATCHDOG.
 *
 * Under systemd, kp_systemd_start() sends READY=1 with a first STATUS= and
 * starts two loop timers: WATCHDOG=1 every half WATCHDOG_USEC (when set
 * for this process), and STATUS= with the main counters every
 * KP_SYSTEMD_STATUS_S seconds when they changed. Both are sent from the
 * loop itself, so a stalled loop stops the pings and systemd restarts it.
 */
#ifndef KP_SYSTEMD_H
#define KP_SYSTEMD_H

struct kp_ctx;

#define KP_SYSTEMD_STATUS_S 2.0

/* Sends one notification; a no-op outside systemd. "RELOADING=1" gets
 * the MONOTONIC_USEC= line systemd 253+ expects added. */
void kp_systemd_notify(struct kp_ctx *ctx, const char *msg);
/* READY=1 (listeners are bound) and the timers above; ctx->n.systemd owns
 * them. A no-op without $NOTIFY_SOCKET. */
void kp_systemd_start(struct kp_ctx *ctx);
/* Stops the timers and frees ctx->n.systemd (kp_ctx_destroy). */
void kp_systemd_stop(struct kp_ctx *ctx);

#endif
