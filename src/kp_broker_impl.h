/*
 * kp_broker_impl.h - what kp_broker.c (the connection) and
 * kp_broker_auth.c (SASL over it) share; private to those two files.
 */
#ifndef KP_BROKER_IMPL_H
#define KP_BROKER_IMPL_H

#include "kp_broker.h"
#include "kp_log.h"

/* ---- kp_broker.c ---- */

void kp_broker_set_state(struct kp_broker *b, enum kp_broker_state state);
/* The handshake is over: the connection is up. */
void kp_broker_up(struct kp_broker *b);
/* Records the fault, logs why (level) once with the broker's name, and
 * closes with backoff. */
void kp_broker_fail(struct kp_broker *b, enum kp_broker_fault fault,
                    enum kp_log_level level, const char *why);
/* Queues a SASL request before every held one and writes it. */
void kp_broker_send_auth(struct kp_broker *b, struct kp_request *r,
                         kp_request_cb cb);
void kp_broker_write(struct kp_broker *b);
/* The security protocol in use runs SASL / TLS. */
bool kp_broker_sasl_on(const struct kp_broker *b);

/* ---- kp_broker_auth.c ---- */

/* Starts SASL on a connection whose ApiVersions are known (AUTH state),
 * or re-authentication on an UP one (reauth set first). */
void kp_broker_auth_start(struct kp_broker *b);
/* Ends whatever exchange is in progress (the connection closes). */
void kp_broker_auth_reset(struct kp_broker *b);
void kp_broker_on_reauth_timer(struct ev_loop *loop, ev_timer *w, int revents);

#endif
