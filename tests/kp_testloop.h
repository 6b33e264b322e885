/*
 * kp_testloop.h - what the loop-driven unit suites (check_client,
 * check_partition, check_broker) share: a configuration from JSON text,
 * nonblocking socketpairs, and running a test's own loop until a condition
 * holds.
 *
 * Waits are bounded by loop iterations, never by time: EVRUN_NOWAIT polls
 * once (for sockets whose bytes are already there), EVRUN_ONCE blocks until
 * the next event (only where a timer is armed, so it always returns).
 * Nothing here sleeps or asserts on wall-clock time.
 */
#ifndef KP_TESTLOOP_H
#define KP_TESTLOOP_H

#include <check.h>
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_conf.h"
#include "kp_record.h"

/*
 * Runs the loop with `flags` until `cond` holds, at most `max` iterations;
 * evaluates to whether it holds. A statement expression (gnu11) so that
 * cond can name the test's locals.
 */
#define KPT_RUN_UNTIL(loop, flags, max, cond)                                  \
    ({                                                                         \
        int kpt_i_ = 0;                                                        \
        while (!(cond) && kpt_i_++ < (max)) {                                  \
            ev_run((loop), (flags));                                           \
        }                                                                      \
        (bool)(cond);                                                          \
    })

/* A configuration that must load; prints the errors if it does not. */
static inline struct kp_conf *kpt_conf(const char *json)
{
    struct kp_conf_errors errs = {0};
    struct kp_conf *c =
        kp_conf_load_buf((const uint8_t *)json, strlen(json), NULL, 0, &errs);
    for (size_t i = 0; i < errs.cnt; i++) {
        fprintf(stderr, "kpt_conf: %s\n", errs.msgs[i]);
    }
    ck_assert_uint_eq(errs.cnt, 0);
    ck_assert_ptr_nonnull(c);
    kp_conf_errors_deinit(&errs);
    return c;
}

/* A connected AF_UNIX stream pair, both ends nonblocking. */
static inline void kpt_socketpair(int sv[2])
{
    ck_assert_int_eq(
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv),
        0);
}

/* Bytes waiting to be read on fd. */
static inline int kpt_unread(int fd)
{
    int n = 0;
    ck_assert_int_eq(ioctl(fd, FIONREAD, &n), 0);
    return n;
}

/* Writes all of p to a nonblocking socket with room for it (small
 * writes: the test's socket buffers are far larger). */
static inline void kpt_write(int fd, const void *p, size_t n)
{
    ssize_t w = n ? send(fd, p, n, MSG_NOSIGNAL) : 0;
    if (w < 0) {
        ck_abort_msg("kpt_write: %s", strerror(errno));
    }
    ck_assert_uint_eq((size_t)w, n);
}

static inline void kpt_write_str(int fd, const char *s)
{
    kpt_write(fd, s, strlen(s));
}

/*
 * Appends the values of an uncompressed records section to out as
 * "v1|v2|..." (a null value as "~"), for comparing what was routed.
 */
static inline void kpt_values(const uint8_t *recs, size_t len, char *out,
                              size_t cap)
{
    struct kp_rd r;
    struct kp_record_view v;
    size_t o = strlen(out);

    kp_rd_init(&r, recs, len);
    while (kp_rd_left(&r) > 0) {
        ck_assert_int_eq(kp_record_next(&r, &v), KP_OK);
        int n = v.value ? snprintf(out + o, cap - o, "%s%.*s", o ? "|" : "",
                                   (int)v.value_len, (const char *)v.value)
                        : snprintf(out + o, cap - o, "%s~", o ? "|" : "");
        ck_assert(n >= 0 && (size_t)n < cap - o);
        o += (size_t)n;
    }
}

#endif
