/*
 * kp_hist.c - fixed-bucket histograms and the bucket tables kproxyd uses.
 */
#include "kp_hist.h"

const uint64_t kp_hist_latency_us[KP_HIST_BOUNDS] = {
    250,    500,    1000,    2500,    5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000};
/* batch_messages defaults to 10000 */
const uint64_t kp_hist_batch_msgs[KP_HIST_BOUNDS] = {
    1,   2,    5,    10,   20,    50,    100,   200,
    500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};
/* batch_bytes defaults to 1 MiB */
const uint64_t kp_hist_batch_bytes[KP_HIST_BOUNDS] = {
    128,     512,     1024,    4096,     16384,    65536,
    131072,  262144,  524288,  1048576,  2097152,  4194304,
    8388608, 16777216, 67108864, 268435456};
const uint64_t kp_hist_batch_fill[KP_HIST_BOUNDS] = {
    10, 50, 100, 250, 500, 750, 900, 990, 1000};

void kp_hist_observe(struct kp_hist *h, const uint64_t *bounds, uint64_t v)
{
    size_t i = 0;
    while (i < KP_HIST_BOUNDS && bounds[i] != 0 && v > bounds[i]) {
        i++;
    }
    if (i < KP_HIST_BOUNDS && bounds[i] == 0) {
        i = KP_HIST_BOUNDS; /* past the last bound in use */
    }
    h->n[i]++;
    h->count++;
    h->sum += v;
}

uint64_t kp_hist_quantile(const struct kp_hist *h, const uint64_t *bounds,
                          double q)
{
    uint64_t rank, seen = 0;

    if (h->count == 0) {
        return 0;
    }
    rank = (uint64_t)(q * (double)h->count);
    if (rank == 0) {
        rank = 1;
    }
    for (size_t i = 0; i < KP_HIST_BOUNDS && bounds[i] != 0; i++) {
        seen += h->n[i];
        if (seen >= rank) {
            return bounds[i];
        }
    }
    return UINT64_MAX;
}
