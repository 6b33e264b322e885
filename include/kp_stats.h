/*
 * kp_stats.h - the counters as one line of JSON (`stats`) and as
 * OpenMetrics text (`metrics`), and the histograms behind them.
 *
 * Plain counters live in ctx->n (struct kp_counters) and are incremented
 * where things happen. What needs more than an increment (histograms of
 * request latency per broker and of batch size, per-codec byte counts) is
 * kept here, in a struct kp_stats that ctx->n.stats owns; the observe
 * functions create it on first use, kp_stats_deinit() frees it.
 */
#ifndef KP_STATS_H
#define KP_STATS_H

#include <stdbool.h>
#include <stdint.h>

struct kp_ctx;
struct kp_buf;
struct kp_batch;

#define KP_HIST_BOUNDS 16

/*
 * A fixed-bucket histogram: n[i] counts the observations in
 * (bound[i-1], bound[i]], n[KP_HIST_BOUNDS] those above the last bound
 * (+Inf). The bounds are the caller's static table (ascending, unused
 * trailing entries 0); the exposition makes the counts cumulative.
 */
struct kp_hist {
    uint64_t n[KP_HIST_BOUNDS + 1];
    uint64_t count;
    uint64_t sum;
};

void kp_hist_observe(struct kp_hist *h, const uint64_t *bounds, uint64_t v);
/* Upper bound of the bucket holding quantile q (0..1), or 0 if empty;
 * UINT64_MAX when it falls in +Inf. */
uint64_t kp_hist_quantile(const struct kp_hist *h, const uint64_t *bounds,
                          double q);

/* Appends the stats JSON object and a '\n'. */
void kp_stats_json(struct kp_ctx *ctx, struct kp_buf *out);
/* Appends the OpenMetrics exposition, ending with "# EOF\n". */
void kp_stats_metrics(struct kp_ctx *ctx, struct kp_buf *out);

/* A response (or, for Produce with acks=0, nothing) came back after
 * rtt_us: the per-broker, per-API latency histogram. */
void kp_stats_observe_rtt(struct kp_ctx *ctx, int32_t node_id,
                          int16_t api_key, int64_t rtt_us);
/* A batch was sealed: messages, bytes, fill and codec histograms. */
void kp_stats_observe_batch(struct kp_ctx *ctx, const struct kp_batch *b);
/* A reload was applied (ok) or rejected. */
void kp_stats_reloaded(struct kp_ctx *ctx, bool ok);
/* Frees ctx->n.stats (kp_ctx_destroy). */
void kp_stats_deinit(struct kp_ctx *ctx);

#endif
