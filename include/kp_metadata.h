/*
 * kp_metadata.h - cluster metadata: which brokers exist and which leads each
 * partition. Refreshed at start, every metadata_refresh_ms, and soon after
 * any error that says it is stale — coalesced, so a storm of errors is one
 * request.
 */
#ifndef KP_METADATA_H
#define KP_METADATA_H

#include "kp_common.h"

struct kp_ctx;
struct kp_broker;

void kp_metadata_start(struct kp_ctx *ctx);
void kp_metadata_stop(struct kp_ctx *ctx);
/* Asks for a refresh as soon as the backoff allows. */
void kp_metadata_refresh(struct kp_ctx *ctx, const char *why);
void kp_metadata_on_broker_up(struct kp_ctx *ctx, struct kp_broker *b);
/* body NULL: the request failed (connection closed or timed out). */
void kp_metadata_on_response(struct kp_ctx *ctx, struct kp_broker *b,
                             int16_t version, const uint8_t *body,
                             size_t len);

#endif
