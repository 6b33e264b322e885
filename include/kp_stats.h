/*
 * kp_stats.h - everything kproxyd counts, rendered as one line of JSON
 * (`stats`) and as OpenMetrics text (`metrics`). The plain counters come
 * from one list (kp_counters.h), the gauges from another (below); both
 * renderers expand the same lists, so a counter is declared once.
 */
#ifndef KP_STATS_H
#define KP_STATS_H

#include "kp_common.h"

struct kp_buf;
struct kp_clients;
struct kp_conf;
struct kp_counters;
struct kp_idemp;
struct kp_metadata;
struct kp_router;

/* What the renderers read; every pointer is borrowed. */
struct kp_stats_src {
    const struct kp_conf *conf;
    const struct kp_counters *n;
    const struct kp_router *router;
    const struct kp_metadata *md;
    const struct kp_clients *clients;
    const struct kp_idemp *idemp;
    int64_t start_ms;       /* monotonic */
    int64_t reload_wall_ms; /* when the last reload was tried, 0 = never */
};

/* Appends the stats JSON object and a '\n'. */
void kp_stats_json(const struct kp_stats_src *s, struct kp_buf *out);
/* Appends the OpenMetrics exposition, ending with "# EOF\n". */
void kp_stats_metrics(const struct kp_stats_src *s, struct kp_buf *out);

#endif
