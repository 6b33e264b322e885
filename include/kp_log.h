/*
 * kp_log.h - logging to stderr. Under systemd (JOURNAL_STREAM or
 * NOTIFY_SOCKET set) each line gets a syslog priority prefix "<N>" and no
 * timestamp; otherwise an ISO-8601 timestamp and the level name.
 * The log sink is one of the two globals the house style allows.
 */
#ifndef KP_LOG_H
#define KP_LOG_H

#include "kp_common.h"

enum kp_log_level {
    KP_LOG_ERROR,
    KP_LOG_WARNING,
    KP_LOG_INFO,
    KP_LOG_DEBUG,
    KP_LOG__COUNT
};

extern const char *const kp_log_level_names[KP_LOG__COUNT];

void kp_log_init(void);
void kp_log_set_level(enum kp_log_level level);
enum kp_log_level kp_log_get_level(void);

void kp_log(enum kp_log_level level, const char *fmt, ...) KP_PRINTF(2, 3);

/*
 * Rate-limited log: at most `burst` lines per `per_ms` window for the call
 * site owning *state; the first line after a quiet window reports how many
 * were suppressed.
 */
struct kp_ratelimit {
    int64_t window_start_ms;
    uint32_t emitted;
    uint64_t suppressed;
};
void kp_log_rl(struct kp_ratelimit *rl, enum kp_log_level level,
               const char *fmt, ...) KP_PRINTF(3, 4);
/* Whether kp_log_rl(rl, level, ...) would print now: a caller skips
 * building costly arguments for a line that would be suppressed (and
 * still calls kp_log_rl, so that it is counted). */
bool kp_log_rl_open(const struct kp_ratelimit *rl, enum kp_log_level level);

#define kp_err(...) kp_log(KP_LOG_ERROR, __VA_ARGS__)
#define kp_warn(...) kp_log(KP_LOG_WARNING, __VA_ARGS__)
#define kp_info(...) kp_log(KP_LOG_INFO, __VA_ARGS__)
#define kp_debug(...)                                                          \
    do {                                                                       \
        if (kp_unlikely(kp_log_get_level() >= KP_LOG_DEBUG)) {                \
            kp_log(KP_LOG_DEBUG, __VA_ARGS__);                                 \
        }                                                                      \
    } while (0)

#endif
