/*
 * kp_idemp.h - the idempotent producer's identity: InitProducerId on any
 * live broker before the first idempotent produce, and again when the
 * broker no longer knows the producer id or a sequence gap needs a fresh
 * one. Sequence numbers themselves live in each partition.
 */
#ifndef KP_IDEMP_H
#define KP_IDEMP_H

#include <ev.h>

#include "kp_common.h"

struct kp_ctx;
struct kp_broker;

/* Whether any topic's settings ask for idempotence. */
bool kp_idemp_wanted(const struct kp_ctx *ctx);
/* Sends InitProducerId if one is needed and a broker is up. */
void kp_idemp_kick(struct kp_ctx *ctx);
/* Asks for a new producer id (sequence gap, UNKNOWN_PRODUCER_ID, ...). */
void kp_idemp_reset(struct kp_ctx *ctx, const char *why);
/* ctx->idemp_timer's callback (set up by kp_ctx). */
void kp_idemp_on_retry(struct ev_loop *loop, struct ev_timer *w, int revents);
void kp_idemp_on_response(struct kp_ctx *ctx, struct kp_broker *b,
                          int16_t version, const uint8_t *body, size_t len);

#endif
