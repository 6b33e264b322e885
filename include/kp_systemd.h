/*
 * kp_systemd.h - sd_notify spoken directly over $NOTIFY_SOCKET (a path or
 * an abstract "@" socket), without libsystemd: READY, RELOADING (with
 * MONOTONIC_USEC), STOPPING, STATUS and WATCHDOG.
 *
 * Under systemd, kp_systemd_start() sends READY=1 with a first STATUS= and
 * starts two loop timers: WATCHDOG=1 every half WATCHDOG_USEC (when set
 * for this process), and STATUS= with the caller's status text every
 * KP_SYSTEMD_STATUS_S seconds when it changed. Both are sent from the loop
 * itself, so a stalled loop stops the pings and systemd restarts it.
 */
#ifndef KP_SYSTEMD_H
#define KP_SYSTEMD_H

#include <ev.h>

#include "kp_common.h"

#define KP_SYSTEMD_STATUS_S 2.0

struct kp_systemd;

/* Writes the status line (without "STATUS=") into buf. */
typedef void (*kp_systemd_status_fn)(void *arg, char *buf, size_t cap);

/* Sends one notification; a no-op outside systemd. "RELOADING=1" gets
 * the MONOTONIC_USEC= line systemd 253+ expects added. */
void kp_systemd_notify(const char *msg);
/* READY=1 (listeners are bound) and the timers above; NULL outside
 * systemd. */
struct kp_systemd *kp_systemd_start(struct ev_loop *loop,
                                    kp_systemd_status_fn status, void *arg);
/* Stops the timers and frees sd (NULL is fine). */
void kp_systemd_stop(struct kp_systemd *sd);

#endif
