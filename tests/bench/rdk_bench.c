/*
 * rdk_bench.c - the librdkafka side of `make bench`: produces the lines of
 * the benchmark's input file directly with librdkafka, so bench.py can set
 * kproxyd's figures beside those of the C client it is meant to beat.
 *
 *   rdk_bench -b BOOTSTRAP -f FILE [-t TOPIC] [-a ACKS] [-i 0|1]
 *             [-z CODEC] [-l LINGER_MS] [-r RATE -d SECONDS]
 *
 * FILE holds lines `TOPIC VALUE` (kproxyd's `topic,value` format with its
 * default one-space separator). The value is everything after the first
 * space; every message goes to TOPIC (default: the first line's topic) with
 * no key, so librdkafka's sticky partitioner spreads them as kproxyd's does.
 * The file is read in 1 MiB chunks as the messages are produced (from the
 * page cache: bench.py has just written or read it).
 *
 * Throughput mode (default): one warm-up message is produced and flushed
 * first (metadata, connections and, with idempotence, the producer id - as
 * bench.py warms kproxyd up with one line), then the clock starts, every
 * line is handed to rd_kafka_producev() (on QUEUE_FULL the call is retried
 * after serving delivery reports), and rd_kafka_flush() waits for every
 * delivery report. The clock stops there.
 *
 * Rate mode (-r RATE -d SECONDS): RATE*SECONDS lines are produced at RATE
 * per second, in bursts of RATE/1000 every millisecond (the same pacing as
 * bench.py's kproxyd latency writer). The send time of each message is kept
 * and its delivery-report callback, served promptly by a thread blocked in
 * rd_kafka_poll(), records produce -> delivery report latency.
 *
 * Output: one JSON object on stdout, e.g.
 *   {"messages":1000000,"delivered":1000000,"failed":0,"bytes":94000000,
 *    "elapsed_s":2.5,"cpu_user_s":1.9,"cpu_sys_s":0.6,"maxrss_kb":90000,
 *    "version":"2.0.2"}
 * (in rate mode also "lat_p50_ms", "lat_p99_ms", "lat_max_ms"). The CPU
 * figures are getrusage(RUSAGE_SELF) over the timed part only (every
 * librdkafka thread included); maxrss_kb is the process's peak. The first
 * delivery error is printed on stderr. Exit 0 when the run completed (even
 * with failed messages: bench.py judges), 1 on a usage or setup error.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

/* The input file, read in chunks as the producer goes: holding it all in
 * memory (or mapped) would count 100 MB of input in the peak RSS that
 * bench.py sets beside kproxyd's, whose input sits in its client. */
struct reader {
    FILE *f;
    char *buf;
    size_t cap;
    size_t pos; /* next unread byte in buf */
    size_t len; /* bytes in buf */
    bool eof;
};

#define READ_CHUNK (1024 * 1024)

struct state {
    /* Delivery counters; atomic, as in rate mode both the poller thread
     * and a producing thread meeting QUEUE_FULL serve reports. */
    volatile int64_t delivered;
    volatile int64_t failed;
    bool error_printed;
    /* Rate mode: send times (ns), latencies (ns) by message index. */
    int64_t *sent_ns;
    int64_t *lat_ns;
    volatile int poller_stop;
};

static struct state st;

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double tv_s(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: rdk_bench -b BOOTSTRAP -f FILE [-t TOPIC] [-a ACKS] "
            "[-i 0|1] [-z CODEC] [-l LINGER_MS] [-r RATE -d SECONDS]\n");
    exit(1);
}

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err) {
        __atomic_fetch_add(&st.failed, 1, __ATOMIC_RELAXED);
        if (!st.error_printed) {
            st.error_printed = true;
            fprintf(stderr, "rdk_bench: delivery failed: %s\n",
                    rd_kafka_err2str(m->err));
        }
        return;
    }
    __atomic_fetch_add(&st.delivered, 1, __ATOMIC_RELAXED);
    if (st.lat_ns && m->_private) {
        /* The opaque is the message index + 1 (0 is the warm-up). */
        size_t i = (size_t)(uintptr_t)m->_private - 1;

        st.lat_ns[i] = now_ns() - st.sent_ns[i];
    }
}

static void set_conf(rd_kafka_conf_t *conf, const char *key, const char *val)
{
    char err[512];

    if (rd_kafka_conf_set(conf, key, val, err, sizeof(err)) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "rdk_bench: %s=%s: %s\n", key, val, err);
        exit(1);
    }
}

/* The next line with a space: *value (valid until the next call) is what
 * follows the first space; the topic before it is copied to topic when
 * topic is not NULL. Returns false at the end of the file. */
static bool next_line(struct reader *r, const char **value, size_t *len,
                      char *topic, size_t topic_size)
{
    for (;;) {
        char *p = r->buf + r->pos;
        char *nl = r->len > r->pos ? memchr(p, '\n', r->len - r->pos)
                                   : NULL;

        if (!nl && !r->eof) {
            /* Move the partial line to the front, read more. */
            if (r->pos > 0) {
                memmove(r->buf, p, r->len - r->pos);
                r->len -= r->pos;
                r->pos = 0;
            }
            if (r->cap - r->len < READ_CHUNK) {
                r->cap = r->len + READ_CHUNK;
                r->buf = realloc(r->buf, r->cap);
                if (!r->buf) {
                    fprintf(stderr, "rdk_bench: out of memory\n");
                    exit(1);
                }
            }
            size_t n = fread(r->buf + r->len, 1, r->cap - r->len, r->f);

            if (n == 0) {
                if (ferror(r->f)) {
                    fprintf(stderr, "rdk_bench: read: %s\n",
                            strerror(errno));
                    exit(1);
                }
                r->eof = true;
            }
            r->len += n;
            continue;
        }
        if (r->pos == r->len) {
            return false;
        }
        char *end = nl ? nl : r->buf + r->len;
        char *sp = memchr(p, ' ', (size_t)(end - p));

        r->pos = (size_t)(end - r->buf) + (nl ? 1 : 0);
        if (!sp) {
            continue; /* no `TOPIC VALUE`: skipped, as kproxyd rejects it */
        }
        if (topic && (size_t)(sp - p) < topic_size) {
            memcpy(topic, p, (size_t)(sp - p));
            topic[sp - p] = '\0';
        }
        *value = sp + 1;
        *len = (size_t)(end - sp - 1);
        return true;
    }
}

static void produce_one(rd_kafka_t *rk, const char *topic, const void *val,
                        size_t len, uintptr_t opaque)
{
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic),
            RD_KAFKA_V_VALUE((void *)(uintptr_t)val, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE((void *)opaque), RD_KAFKA_V_END);

        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            return;
        }
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            fprintf(stderr, "rdk_bench: produce: %s\n",
                    rd_kafka_err2str(err));
            exit(1);
        }
        /* The queue is full: serve delivery reports until room frees. */
        rd_kafka_poll(rk, st.lat_ns ? 1 : 10);
    }
}

static void *poller_main(void *arg)
{
    rd_kafka_t *rk = arg;

    while (!st.poller_stop) {
        rd_kafka_poll(rk, 50);
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *bootstrap = NULL, *file = NULL, *acks = "all";
    const char *codec = "none", *linger = "5", *idemp = NULL;
    char topic[256] = "";
    double rate = 0, duration = 0;
    char err[512];
    int opt;

    while ((opt = getopt(argc, argv, "b:f:t:a:i:z:l:r:d:")) != -1) {
        switch (opt) {
        case 'b':
            bootstrap = optarg;
            break;
        case 'f':
            file = optarg;
            break;
        case 't':
            snprintf(topic, sizeof(topic), "%s", optarg);
            break;
        case 'a':
            acks = optarg;
            break;
        case 'i':
            idemp = optarg;
            break;
        case 'z':
            codec = optarg;
            break;
        case 'l':
            linger = optarg;
            break;
        case 'r':
            rate = atof(optarg);
            break;
        case 'd':
            duration = atof(optarg);
            break;
        default:
            usage();
        }
    }
    if (!bootstrap || !file || (rate > 0) != (duration > 0)) {
        usage();
    }
    if (!idemp) {
        idemp = (!strcmp(acks, "all") || !strcmp(acks, "-1")) ? "1" : "0";
    }

    struct reader rd = {.f = fopen(file, "rb")};
    const char *val;
    size_t vlen;
    char first_topic[256];

    if (!rd.f) {
        fprintf(stderr, "rdk_bench: %s: %s\n", file, strerror(errno));
        return 1;
    }
    if (!next_line(&rd, &val, &vlen, first_topic, sizeof(first_topic))) {
        fprintf(stderr, "rdk_bench: no `TOPIC VALUE` lines in %s\n", file);
        return 1;
    }
    if (!topic[0]) {
        snprintf(topic, sizeof(topic), "%s", first_topic);
    }

    size_t total = SIZE_MAX;

    if (rate > 0) {
        total = (size_t)(rate * duration + 0.5);
        st.sent_ns = calloc(total ? total : 1, sizeof(int64_t));
        st.lat_ns = calloc(total ? total : 1, sizeof(int64_t));
        if (!st.sent_ns || !st.lat_ns) {
            fprintf(stderr, "rdk_bench: out of memory\n");
            return 1;
        }
    }

    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    set_conf(conf, "bootstrap.servers", bootstrap);
    set_conf(conf, "acks", acks);
    set_conf(conf, "enable.idempotence", idemp[0] == '1' ? "true" : "false");
    set_conf(conf, "compression.codec", codec);
    set_conf(conf, "linger.ms", linger);
    set_conf(conf, "client.id", "rdk_bench");
    rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
    rd_kafka_t *rk =
        rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "rdk_bench: rd_kafka_new: %s\n", err);
        return 1;
    }

    /* Warm-up with the first line: metadata, broker connections, producer
     * id. The timed run reads the file again from its start. */
    produce_one(rk, topic, val, vlen, 0);
    if (rd_kafka_flush(rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        st.delivered != 1) {
        fprintf(stderr, "rdk_bench: warm-up message not delivered\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    st.delivered = 0;
    rewind(rd.f);
    rd.pos = rd.len = 0;
    rd.eof = false;

    pthread_t poller;
    bool have_poller = false;

    if (rate > 0) {
        if (pthread_create(&poller, NULL, poller_main, rk) != 0) {
            fprintf(stderr, "rdk_bench: pthread_create failed\n");
            return 1;
        }
        have_poller = true;
    }

    struct rusage ru0, ru1;
    uint64_t bytes = 0;
    size_t sent = 0;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t t0 = now_ns();

    if (rate > 0) {
        /* Bursts every millisecond, as bench.py paces kproxyd's writer. */
        double per_ms = rate / 1000.0, due = 0;
        size_t i = 0;
        int64_t tick = t0;

        while (i < total && !rd.eof) {
            due += per_ms;
            while (i < total && (double)i < due &&
                   next_line(&rd, &val, &vlen, NULL, 0)) {
                st.sent_ns[i] = now_ns();
                produce_one(rk, topic, val, vlen, (uintptr_t)i + 1);
                bytes += vlen;
                i++;
            }
            tick += 1000000;
            struct timespec ts = {.tv_sec = tick / 1000000000,
                                  .tv_nsec = tick % 1000000000};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        }
        sent = i;
        /* rd_kafka_flush() serves no callbacks while the poller thread
         * does; wait for the counters instead. */
        while (st.delivered + st.failed < (int64_t)sent &&
               now_ns() - t0 < (int64_t)(duration + 60) * 1000000000) {
            usleep(1000);
        }
        rd_kafka_flush(rk, 30000);
    } else {
        while (next_line(&rd, &val, &vlen, NULL, 0)) {
            produce_one(rk, topic, val, vlen, 0);
            bytes += vlen;
            /* Serve delivery reports as the producer loop of an
             * application would, without blocking. */
            if ((++sent & 1023) == 0) {
                rd_kafka_poll(rk, 0);
            }
        }
        rd_kafka_flush(rk, 120000);
    }

    int64_t t1 = now_ns();
    getrusage(RUSAGE_SELF, &ru1);

    if (have_poller) {
        st.poller_stop = 1;
        pthread_join(poller, NULL);
    }

    printf("{\"messages\":%zu,\"delivered\":%" PRId64 ",\"failed\":%" PRId64
           ",\"bytes\":%" PRIu64 ",\"elapsed_s\":%.6f,\"cpu_user_s\":%.6f,"
           "\"cpu_sys_s\":%.6f,\"maxrss_kb\":%ld,\"version\":\"%s\"",
           sent, st.delivered, st.failed, bytes, (double)(t1 - t0) / 1e9,
           tv_s(&ru1.ru_utime) - tv_s(&ru0.ru_utime),
           tv_s(&ru1.ru_stime) - tv_s(&ru0.ru_stime), ru1.ru_maxrss,
           rd_kafka_version_str());
    if (st.lat_ns) {
        size_t n = 0;

        /* Only delivered messages have a latency (failures are counted). */
        for (size_t i = 0; i < sent; i++) {
            if (st.lat_ns[i] > 0) {
                st.lat_ns[n++] = st.lat_ns[i];
            }
        }
        qsort(st.lat_ns, n, sizeof(int64_t), cmp_i64);
        if (n > 0) {
            printf(",\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,"
                   "\"lat_max_ms\":%.3f",
                   (double)st.lat_ns[(n - 1) * 50 / 100] / 1e6,
                   (double)st.lat_ns[(n - 1) * 99 / 100] / 1e6,
                   (double)st.lat_ns[n - 1] / 1e6);
        }
    }
    printf("}\n");
    fflush(stdout);

    rd_kafka_destroy(rk);
    fclose(rd.f);
    free(rd.buf);
    free(st.sent_ns);
    free(st.lat_ns);
    return 0;
}
