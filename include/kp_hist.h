/*
 * kp_hist.h - fixed-bucket histograms, kept by whoever observes (a broker
 * its request latencies, the router its batch sizes) and rendered by
 * kp_stats.
 *
 * n[i] counts the observations in (bound[i-1], bound[i]], n[KP_HIST_BOUNDS]
 * those above the last bound (+Inf). The bounds are the caller's static
 * table (ascending, unused trailing entries 0); the exposition makes the
 * counts cumulative.
 */
#ifndef KP_HIST_H
#define KP_HIST_H

#include "kp_common.h"

#define KP_HIST_BOUNDS 16

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

/* Request latency, microseconds: 250 us to 30 s. */
extern const uint64_t kp_hist_latency_us[KP_HIST_BOUNDS];
/* Messages per batch. */
extern const uint64_t kp_hist_batch_msgs[KP_HIST_BOUNDS];
/* Uncompressed bytes per batch. */
extern const uint64_t kp_hist_batch_bytes[KP_HIST_BOUNDS];
/* Fill, per mille of the batch_bytes or batch_messages limit reached. */
extern const uint64_t kp_hist_batch_fill[KP_HIST_BOUNDS];

#endif
