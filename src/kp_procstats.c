/*
 * kp_procstats.c - the standard process_* metric families (see the
 * header), read on demand from the process's own /proc entries.
 *
 * /proc/self/stat after the command name (which may hold spaces and
 * parentheses, so parsing starts after the last ')'):
 *
 *   field  3 state ... 14 utime 15 stime ... 22 starttime 23 vsize 24 rss
 *          (clock ticks)  (ticks)           (ticks since boot) (bytes) (pages)
 */
#include "kp_procstats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kp_buf.h"

/* Fields of /proc/self/stat, counted from 3 (the first after the name). */
#define KP_STAT_FIRST 3
#define KP_STAT_UTIME 14
#define KP_STAT_STIME 15
#define KP_STAT_STARTTIME 22
#define KP_STAT_VSIZE 23
#define KP_STAT_RSS 24

static void kp_ps_printf(struct kp_buf *out, const char *fmt, ...)
    KP_PRINTF(2, 3);

static void kp_ps_printf(struct kp_buf *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) {
        return;
    }
    char *dst = (char *)kp_buf_reserve(out, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(dst, (size_t)n + 1, fmt, ap);
    va_end(ap);
    out->len += (size_t)n;
}

static double kp_ps_timespec(clockid_t clk)
{
    struct timespec ts;
    if (clock_gettime(clk, &ts) != 0) {
        return -1.0;
    }
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Start time since the epoch from starttime (ticks after boot): the boot
 * instant is now (CLOCK_REALTIME) less the time since boot (CLOCK_BOOTTIME,
 * the clock starttime counts in), so /proc/stat's btime is not needed.
 */
static double kp_ps_start_time(unsigned long long start_ticks, long hz)
{
    double boot = kp_ps_timespec(CLOCK_BOOTTIME);
    double now = kp_ps_timespec(CLOCK_REALTIME);
    if (boot < 0 || now < 0) {
        return -1.0;
    }
    return now - boot + (double)start_ticks / (double)hz;
}

/* Parses the text of /proc/self/stat into *ps. */
static int kp_ps_parse_stat(char *text, struct kp_procstats *ps)
{
    char *p = strrchr(text, ')');
    if (!p) {
        return KP_ERROR;
    }
    p++;
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
    int field = KP_STAT_FIRST - 1;
    int found = 0;
    char *save = NULL;
    for (char *tok = strtok_r(p, " \n", &save); tok;
         tok = strtok_r(NULL, " \n", &save)) {
        unsigned long long *dst = NULL;
        switch (++field) {
        case KP_STAT_UTIME:
            dst = &utime;
            break;
        case KP_STAT_STIME:
            dst = &stime;
            break;
        case KP_STAT_STARTTIME:
            dst = &start;
            break;
        case KP_STAT_VSIZE:
            dst = &vsize;
            break;
        case KP_STAT_RSS:
            dst = &rss;
            break;
        default:
            continue;
        }
        *dst = strtoull(tok, NULL, 10);
        found++;
    }
    long hz = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (found != 5 || hz <= 0 || page <= 0) {
        return KP_ERROR;
    }
    ps->cpu_seconds = (double)(utime + stime) / (double)hz;
    ps->start_time_seconds = kp_ps_start_time(start, hz);
    ps->virtual_bytes = vsize;
    ps->resident_bytes = rss * (unsigned long long)page;
    return KP_OK;
}

static int kp_ps_read_stat(struct kp_procstats *ps)
{
    char text[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return KP_ERROR;
    }
    ssize_t n;
    do {
        n = read(fd, text, sizeof(text) - 1);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0) {
        return KP_ERROR;
    }
    text[n] = '\0';
    return kp_ps_parse_stat(text, ps);
}

/* Entries of /proc/self/fd, less the one this reading opened. */
static int64_t kp_ps_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        return -1;
    }
    int64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n > 0 ? n - 1 : 0;
}

int kp_procstats_read(struct kp_procstats *ps)
{
    memset(ps, 0, sizeof(*ps));
    ps->cpu_seconds = -1.0;
    ps->start_time_seconds = -1.0;
    ps->open_fds = kp_ps_open_fds();
    ps->max_fds = -1;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        ps->max_fds = rl.rlim_cur == RLIM_INFINITY ? INT64_MAX
                                                   : (int64_t)rl.rlim_cur;
    }
    if (getrlimit(RLIMIT_AS, &rl) == 0) {
        ps->virtual_max_bytes = rl.rlim_cur == RLIM_INFINITY
                                    ? UINT64_MAX
                                    : (uint64_t)rl.rlim_cur;
    }
    return kp_ps_read_stat(ps);
}

/*
 * HELP and TYPE (and UNIT in OpenMetrics) of one family. `name` is the
 * OpenMetrics family name; a counter's Prometheus 0.0.4 family is named
 * after its sample, NAME_total.
 */
static void kp_ps_family(struct kp_buf *out, bool om, const char *name,
                         const char *type, const char *unit,
                         const char *help)
{
    const char *suffix = !om && strcmp(type, "counter") == 0 ? "_total" : "";
    kp_ps_printf(out, "# HELP %s%s %s\n# TYPE %s%s %s\n", name, suffix, help,
                 name, suffix, type);
    if (om && unit) {
        kp_ps_printf(out, "# UNIT %s %s\n", name, unit);
    }
}

static void kp_ps_gauge_u64(struct kp_buf *out, bool om, const char *name,
                            const char *unit, const char *help, uint64_t v)
{
    kp_ps_family(out, om, name, "gauge", unit, help);
    if (v == UINT64_MAX) {
        /* what client_golang prints for an unlimited RLIMIT_AS */
        kp_ps_printf(out, "%s 1.8446744073709552e+19\n", name);
    } else {
        kp_ps_printf(out, "%s %llu\n", name, (unsigned long long)v);
    }
}

void kp_procstats_format(const struct kp_procstats *ps, bool openmetrics,
                         struct kp_buf *out)
{
    bool om = openmetrics;
    if (ps->cpu_seconds >= 0) {
        kp_ps_family(out, om, "process_cpu_seconds", "counter", "seconds",
                     "Total user and system CPU time spent in seconds.");
        kp_ps_printf(out, "process_cpu_seconds_total %.2f\n",
                     ps->cpu_seconds);
    }
    if (ps->open_fds >= 0) {
        kp_ps_gauge_u64(out, om, "process_open_fds", NULL,
                        "Number of open file descriptors.",
                        (uint64_t)ps->open_fds);
    }
    if (ps->max_fds >= 0) {
        kp_ps_gauge_u64(out, om, "process_max_fds", NULL,
                        "Maximum number of open file descriptors.",
                        ps->max_fds == INT64_MAX ? UINT64_MAX
                                                 : (uint64_t)ps->max_fds);
    }
    if (ps->virtual_bytes) {
        kp_ps_gauge_u64(out, om, "process_virtual_memory_bytes", "bytes",
                        "Virtual memory size in bytes.", ps->virtual_bytes);
    }
    if (ps->virtual_max_bytes) {
        kp_ps_gauge_u64(out, om, "process_virtual_memory_max_bytes", "bytes",
                        "Maximum amount of virtual memory available in "
                        "bytes.",
                        ps->virtual_max_bytes);
    }
    if (ps->resident_bytes) {
        kp_ps_gauge_u64(out, om, "process_resident_memory_bytes", "bytes",
                        "Resident memory size in bytes.", ps->resident_bytes);
    }
    if (ps->start_time_seconds >= 0) {
        kp_ps_family(out, om, "process_start_time_seconds", "gauge",
                     "seconds",
                     "Start time of the process since unix epoch in "
                     "seconds.");
        kp_ps_printf(out, "process_start_time_seconds %.2f\n",
                     ps->start_time_seconds);
    }
}

void kp_procstats_render(bool openmetrics, struct kp_buf *out)
{
    struct kp_procstats ps;
    (void)kp_procstats_read(&ps);
    kp_procstats_format(&ps, openmetrics, out);
}
