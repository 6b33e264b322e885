/*
 * kp_log.c - the log sink: stderr, with journald's priority prefixes when
 * run by systemd.
 */
#include "kp_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

const char *const kp_log_level_names[KP_LOG__COUNT] = {
    "error", "warning", "info", "debug"};

/* syslog priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
static const int kp_log_prio[KP_LOG__COUNT] = {3, 4, 6, 7};

static enum kp_log_level kp_log_level = KP_LOG_INFO;
static bool kp_log_journal;

void kp_log_init(void)
{
    kp_log_journal = getenv("JOURNAL_STREAM") || getenv("NOTIFY_SOCKET");
}

void kp_log_set_level(enum kp_log_level level)
{
    kp_log_level = level;
}

enum kp_log_level kp_log_get_level(void)
{
    return kp_log_level;
}

static void kp_log_v(enum kp_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void kp_log_v(enum kp_log_level level, const char *fmt, va_list ap)
{
    char line[2048];
    int n;

    if (kp_log_journal) {
        n = snprintf(line, sizeof(line), "<%d>", kp_log_prio[level]);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ldZ %s: ",
                      ts.tv_nsec / 1000000, kp_log_level_names[level]);
    }
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0) {
        m = 0;
    }
    n = KP_MIN(n + m, (int)sizeof(line) - 2);
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n, stderr);
}

void kp_log(enum kp_log_level level, const char *fmt, ...)
{
    if (level > kp_log_level) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    kp_log_v(level, fmt, ap);
    va_end(ap);
}

enum { KP_LOG_RL_WINDOW_MS = 5000, KP_LOG_RL_BURST = 10 };

bool kp_log_rl_open(const struct kp_ratelimit *rl, enum kp_log_level level)
{
    return level <= kp_log_level &&
           (rl->emitted < KP_LOG_RL_BURST ||
            kp_mono_ms() - rl->window_start_ms >= KP_LOG_RL_WINDOW_MS);
}

void kp_log_rl(struct kp_ratelimit *rl, enum kp_log_level level,
               const char *fmt, ...)
{
    int64_t now = kp_mono_ms();

    if (level > kp_log_level) {
        return;
    }
    if (now - rl->window_start_ms >= KP_LOG_RL_WINDOW_MS) {
        if (rl->suppressed) {
            kp_log(level, "(%llu similar messages suppressed)",
                   (unsigned long long)rl->suppressed);
        }
        rl->window_start_ms = now;
        rl->emitted = 0;
        rl->suppressed = 0;
    }
    if (rl->emitted >= KP_LOG_RL_BURST) {
        rl->suppressed++;
        return;
    }
    rl->emitted++;
    va_list ap;
    va_start(ap, fmt);
    kp_log_v(level, fmt, ap);
    va_end(ap);
}
