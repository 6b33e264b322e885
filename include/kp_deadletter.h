/*
 * kp_deadletter.h - failed messages, appended to the `dead_letter` file as
 * one JSON line each in the `json` line format plus "error" and
 * "failed_at", so the file can be replayed into a json listener unchanged.
 */
#ifndef KP_DEADLETTER_H
#define KP_DEADLETTER_H

#include "kp_common.h"

struct kp_ctx;

/* Opens (append) the configured file; KP_OK, or KP_ERROR logged. */
int kp_deadletter_open(struct kp_ctx *ctx);
void kp_deadletter_close(struct kp_ctx *ctx);

/*
 * Writes every record of an uncompressed records section. Timestamps are
 * base_ts + each record's delta. partitions: explicit partition per record
 * (NULL: none recorded; -1 entries: none).
 */
void kp_deadletter_records(struct kp_ctx *ctx, const char *topic,
                           const uint8_t *records, size_t len, int64_t base_ts,
                           const int32_t *partitions, const char *error);

#endif
