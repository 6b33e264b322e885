/*
 * spool_bench.c - throughput and CPU cost of the disk spool's storage
 * layer (not a unit test): appends of 100-byte messages (buffered and
 * write-through), acks in order and interleaved as six partitions would
 * acknowledge them, read-back through a cursor, and appends with fsync_ms.
 *
 *   make build/libkproxyd.a
 *   cc -O2 -g -std=gnu11 -D_GNU_SOURCE -Iinclude -o build/spool_bench \
 *       tests/bench/spool_bench.c build/libkproxyd.a \
 *       -lev -lzstd -llz4 -ljansson -lz -lm -lpthread
 *   build/spool_bench [-n MESSAGES] [-s SIZE] [DIR]
 *
 * DIR (default: a new directory under /tmp) should be on the file system
 * the spool will use. CPU is user+system time of the process (getrusage),
 * so it includes the kernel's copy into the page cache; write-back happens
 * later, in the kernel's flusher threads, and is not counted.
 */
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_log.h"
#include "kp_spool.h"

struct bench_mark {
    int64_t wall_us;
    int64_t cpu_us;
};

static struct bench_mark bench_now(void)
{
    struct rusage ru;
    struct bench_mark m;
    getrusage(RUSAGE_SELF, &ru);
    m.wall_us = kp_mono_us();
    m.cpu_us = ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
               ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
    return m;
}

static void bench_report(const char *what, struct bench_mark a,
                         struct bench_mark b, uint64_t n, uint64_t bytes)
{
    double s = (double)(b.wall_us - a.wall_us) / 1e6;
    printf("%-34s %10.0f msgs/s %8.1f MB/s %7.3f us CPU/msg\n", what,
           (double)n / s, (double)bytes / s / 1e6,
           (double)(b.cpu_us - a.cpu_us) / (double)n);
}

static struct kp_spool *bench_open(const char *dir, size_t wbuf, int fsync_ms,
                                   struct ev_loop *loop)
{
    struct kp_spool_opts o = {.max_bytes = INT64_C(8) << 30,
                              .write_buffer = wbuf,
                              .fsync_ms = fsync_ms,
                              .loop = loop};
    char err[256];
    struct kp_spool *s = kp_spool_open(dir, &o, NULL, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "spool_bench: %s\n", err);
        exit(1);
    }
    return s;
}

/* Appends n messages of `size` value bytes; returns the bytes on disk. */
static uint64_t bench_append(struct kp_spool *s, uint64_t n, size_t size,
                             struct ev_loop *loop)
{
    static uint8_t value[65536];
    struct kp_spool_rec r = {0};
    struct kp_spool_stats st;
    uint64_t seq;

    memset(value, 'x', sizeof(value));
    r.msg.topic = "bench";
    r.msg.topic_len = 5;
    r.msg.value = value;
    r.msg.value_len = size;
    r.msg.partition = -1;
    r.msg.timestamp = 1700000000000;
    for (uint64_t i = 0; i < n; i++) {
        value[i % size] = (uint8_t)i;
        if (kp_spool_append(s, &r, &seq) != KP_OK) {
            fprintf(stderr, "spool_bench: append: %s\n", strerror(errno));
            exit(1);
        }
        /* The loop's ev_prepare: a flush each 1000 messages, as a read
         * callback with a budget of lines would see them. */
        if (i % 1000 == 999) {
            kp_spool_flush(s);
            if (loop) {
                ev_run(loop, EVRUN_NOWAIT);
            }
        }
    }
    kp_spool_flush(s);
    kp_spool_stats_get(s, &st);
    return st.bytes;
}

static void bench_ack(struct kp_spool *s, uint64_t first, uint64_t n, int parts)
{
    /* Six partitions acknowledge their batches of 1000 in turn: seqs of
     * one batch are every parts-th message. */
    for (uint64_t base = 0; base < n; base += 1000 * (uint64_t)parts) {
        for (int p = 0; p < parts; p++) {
            for (uint64_t i = base + (uint64_t)p;
                 i < base + 1000 * (uint64_t)parts && i < n;
                 i += (uint64_t)parts) {
                kp_spool_ack(s, first + i);
            }
            kp_spool_flush(s);
        }
    }
}

static void bench_run(const char *dir, uint64_t n, size_t size)
{
    struct bench_mark a, b, c;
    struct kp_spool_view v;
    uint64_t bytes, got = 0;

    /* Buffered appends, then acks in order, then interleaved. */
    struct kp_spool *s = bench_open(dir, 0, -1, NULL);
    a = bench_now();
    bytes = bench_append(s, n, size, NULL);
    b = bench_now();
    bench_report("append (64 KiB buffer)", a, b, n, n * size);
    printf("%-34s %10.1f bytes/msg on disk\n", "", (double)bytes / (double)n);
    struct kp_spool_cursor *cur = kp_spool_cursor_create(s, 0);
    a = bench_now();
    while (kp_spool_cursor_next(cur, &v) == KP_OK) {
        got += v.msg.value_len;
    }
    b = bench_now();
    bench_report("read back (cursor)", a, b, n, got);
    kp_spool_cursor_destroy(cur);
    a = bench_now();
    bench_ack(s, 1, n / 2, 1);
    b = bench_now();
    bench_ack(s, 1 + n / 2, n - n / 2, 6);
    c = bench_now();
    bench_report("ack in order + journal", a, b, n / 2, 0);
    bench_report("ack 6 partitions + journal", b, c, n - n / 2, 0);
    kp_spool_close(s);

    /* Write-through: one pwrite per message. */
    s = bench_open(dir, 1, -1, NULL);
    a = bench_now();
    bench_append(s, n / 4, size, NULL);
    b = bench_now();
    bench_report("append (write-through)", a, b, n / 4, n / 4 * size);
    bench_ack(s, kp_spool_start_seq(s), n / 4, 6);
    kp_spool_close(s);

    /* fsync_ms 10, the loop turning every 1000 messages. */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct kp_spool_stats st;
    s = bench_open(dir, 0, 10, loop);
    a = bench_now();
    bench_append(s, n / 2, size, loop);
    b = bench_now();
    kp_spool_stats_get(s, &st);
    bench_report("append (buffer, fsync_ms 10)", a, b, n / 2, n / 2 * size);
    printf("%-34s %10" PRIu64 " fdatasyncs, mean %.0f us, max %" PRId64 " us\n",
           "", st.fsyncs,
           st.fsyncs ? (double)st.fsync_sum_us / (double)st.fsyncs : 0.,
           st.fsync_max_us);
    bench_ack(s, kp_spool_start_seq(s), n / 2, 6);
    kp_spool_close(s);
    ev_loop_destroy(loop);
}

int main(int argc, char **argv)
{
    uint64_t n = 2000000;
    size_t size = 100;
    int opt;
    char tmpl[] = "/tmp/kpspool-bench.XXXXXX";

    while ((opt = getopt(argc, argv, "n:s:")) != -1) {
        if (opt == 'n') {
            n = strtoull(optarg, NULL, 10);
        } else if (opt == 's') {
            size = (size_t)strtoul(optarg, NULL, 10);
        } else {
            fprintf(stderr, "usage: spool_bench [-n N] [-s SIZE] [DIR]\n");
            return 2;
        }
    }
    if (size == 0 || size > 65536 || n < 8) {
        fprintf(stderr, "spool_bench: -s 1..65536, -n >= 8\n");
        return 2;
    }
    const char *dir = optind < argc ? argv[optind] : mkdtemp(tmpl);
    kp_log_set_level(KP_LOG_WARNING);
    printf("spool_bench: %" PRIu64 " messages of %zu bytes in %s\n", n, size,
           dir);
    bench_run(dir, n, size);
    if (optind >= argc) {
        rmdir(dir);
    }
    return 0;
}
