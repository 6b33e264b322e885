/*
 * kp_common.c - allocation wrappers that abort on failure, clocks, and the
 * assertion handler.
 */
#include "kp_common.h"

#include <stdio.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

void kp_assert_fail(const char *cond, const char *file, int line)
{
    fprintf(stderr, "kproxyd: assertion failed: %s (%s:%d)\n", cond, file,
            line);
    abort();
}

static void *kp_oom(size_t n)
{
    fprintf(stderr, "kproxyd: out of memory allocating %zu bytes\n", n);
    abort();
}

void *kp_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    return p ? p : kp_oom(n);
}

void *kp_calloc(size_t nmemb, size_t n)
{
    void *p = calloc(nmemb ? nmemb : 1, n ? n : 1);
    return p ? p : kp_oom(nmemb * n);
}

void *kp_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    return q ? q : kp_oom(n);
}

char *kp_strdup(const char *s)
{
    return kp_strndup(s, strlen(s));
}

char *kp_strndup(const char *s, size_t n)
{
    char *d = kp_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

int64_t kp_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t kp_mono_ms(void)
{
    return kp_mono_us() / 1000;
}

int64_t kp_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kp_random_seed(void)
{
    unsigned int seed;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed)) {
        seed = (unsigned int)(kp_mono_us() ^ ((int64_t)getpid() << 16));
    }
    srandom(seed);
}

uint32_t kp_random(uint32_t n)
{
    return (uint32_t)((uint64_t)random() % n);
}

int64_t kp_backoff_ms(int64_t base_ms, int64_t max_ms, int attempt)
{
    int shift = KP_MIN(KP_MAX(attempt, 0), 30);
    int64_t ms = base_ms;

    while (shift-- > 0 && ms < max_ms) {
        ms *= 2;
    }
    ms = KP_MIN(ms, max_ms);
    return ms * (80 + (int64_t)kp_random(41)) / 100;
}
