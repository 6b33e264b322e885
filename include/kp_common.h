/*
 * kp_common.h - status codes, assertions and small helpers shared by every
 * module. Allocation failure aborts (DESIGN 7): memory is bounded by
 * buffer_bytes accounting, not by checking malloc.
 */
#ifndef KP_COMMON_H
#define KP_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KP_OK 0
#define KP_ERROR (-1)
#define KP_AGAIN (-2)

#define KP_VERSION "0.1.0"

#define KP_UNUSED __attribute__((unused))
#define KP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define kp_likely(x) __builtin_expect(!!(x), 1)
#define kp_unlikely(x) __builtin_expect(!!(x), 0)

#define KP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KP_MAX(a, b) ((a) > (b) ? (a) : (b))
#define KP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Invariant checks: never used to validate input. */
#define kp_assert(cond)                                                        \
    do {                                                                       \
        if (kp_unlikely(!(cond))) {                                            \
            kp_assert_fail(#cond, __FILE__, __LINE__);                         \
        }                                                                      \
    } while (0)

void kp_assert_fail(const char *cond, const char *file, int line)
    __attribute__((noreturn));

/* Drops one of *refs; true when it was the last (the caller frees). */
static inline bool kp_unref(unsigned *refs)
{
    kp_assert(*refs > 0);
    return --*refs == 0;
}

void *kp_malloc(size_t n);
void *kp_calloc(size_t nmemb, size_t n);
void *kp_realloc(void *p, size_t n);
char *kp_strdup(const char *s);
char *kp_strndup(const char *s, size_t n);

/*
 * Retry delays: `base_ms` doubled `attempt` times (attempt 0 = base), capped
 * at max_ms, then +-20% jitter so that peers retrying together spread out.
 * The jitter comes from a generator seeded per process (kp_random_seed), so
 * a fleet of daemons does not retry in lockstep after an outage.
 */
int64_t kp_backoff_ms(int64_t base_ms, int64_t max_ms, int attempt);
/* Seeds the process's random generator from the kernel (getrandom), once
 * at start-up. */
void kp_random_seed(void);
/* A pseudo-random number in [0, n) (n > 0); not for secrets. */
uint32_t kp_random(uint32_t n);

/* Monotonic and wall clocks in milliseconds / microseconds. */
int64_t kp_mono_ms(void);
int64_t kp_mono_us(void);
int64_t kp_wall_ms(void);

#endif
