/*
 * kp_stats.h - the counters as one line of JSON (`stats`) and as
 * OpenMetrics text (`metrics`).
 */
#ifndef KP_STATS_H
#define KP_STATS_H

struct kp_ctx;
struct kp_buf;

/* Appends the stats JSON object and a '\n'. */
void kp_stats_json(struct kp_ctx *ctx, struct kp_buf *out);
/* Appends the OpenMetrics exposition, ending with "# EOF\n". */
void kp_stats_metrics(struct kp_ctx *ctx, struct kp_buf *out);

#endif
