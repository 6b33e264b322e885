/*
 * kp_procstats.h - the standard process_* metric families, as the
 * Prometheus client libraries export them (client_golang's process
 * collector, client_python's ProcessCollector): same names, types and
 * help texts, so existing dashboards and alerts work on kproxyd as they
 * are.
 *
 *   process_cpu_seconds_total         counter  user + system CPU
 *   process_resident_memory_bytes     gauge    RSS
 *   process_virtual_memory_bytes      gauge    VSZ
 *   process_virtual_memory_max_bytes  gauge    RLIMIT_AS (2^64-1: none)
 *   process_start_time_seconds        gauge    since the Unix epoch
 *   process_open_fds                  gauge
 *   process_max_fds                   gauge    RLIMIT_NOFILE, soft
 *
 * Read from /proc/self/stat, /proc/self/fd and getrlimit(), on demand (a
 * scrape): nothing is kept between calls. Only the process's own /proc
 * entries are used, so the values survive systemd's ProtectProc=invisible
 * and ProcSubset=pid (the start time comes from CLOCK_BOOTTIME, not from
 * /proc/stat, which ProcSubset=pid hides).
 *
 * Layer 0-ish: no loop, no state; kp_http's /metrics handler (or the
 * control socket's `metrics`) appends these after kproxyd's own families
 * and before OpenMetrics' "# EOF".
 */
#ifndef KP_PROCSTATS_H
#define KP_PROCSTATS_H

#include <stdbool.h>
#include <stdint.h>

struct kp_buf;

/* One reading. A field that could not be read is negative (or 0 for the
 * unsigned ones) and its family is left out of the exposition, as the
 * client libraries do. */
struct kp_procstats {
    double cpu_seconds;        /* utime + stime; < 0: unknown */
    double start_time_seconds; /* since the epoch; < 0: unknown */
    uint64_t resident_bytes;   /* 0: unknown */
    uint64_t virtual_bytes;    /* 0: unknown */
    uint64_t virtual_max_bytes; /* UINT64_MAX when unlimited */
    int64_t open_fds;          /* < 0: unknown */
    int64_t max_fds;           /* < 0: unknown; INT64_MAX when unlimited */
};

/*
 * Fills *ps from /proc/self and getrlimit(). Returns KP_OK when
 * /proc/self/stat was read, else KP_ERROR (fds and limits may still be
 * filled). Not logged: a scrape should not spam the journal.
 */
int kp_procstats_read(struct kp_procstats *ps);

/*
 * Appends the families of *ps to *out: the OpenMetrics form when
 * openmetrics (counter family "process_cpu_seconds" with its sample
 * "process_cpu_seconds_total", # UNIT for _bytes/_seconds, as kp_stats
 * writes kproxyd's families), else the Prometheus text format 0.0.4
 * (family named by the sample, no UNIT). No "# EOF": the caller ends the
 * exposition.
 */
void kp_procstats_format(const struct kp_procstats *ps, bool openmetrics,
                         struct kp_buf *out);

/* kp_procstats_read + kp_procstats_format. */
void kp_procstats_render(bool openmetrics, struct kp_buf *out);

#endif
