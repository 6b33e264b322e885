/*
 * rdk_bench.c - the librdkafka side of `make bench`: produces the lines of
 * the benchmark's input file directly with librdkafka, so bench.py can set
 * kproxyd's figures beside those of the C client it is meant to beat.
 *
 *   rdk_bench -b BOOTSTRAP -f FILE [-t TOPIC] [-a ACKS] [-i 0|1]
 *             [-z CODEC] [-l LINGER_MS] [-k KEYS] [-C] [-g]
 *             [-r RATE -d SECONDS] [-X KEY=VALUE]...
 *             [--map HOST:PORT=HOST:PORT,...] [--ssl-ca FILE]
 *   rdk_bench -b BOOTSTRAP -t TOPIC -W [--map ...] [--ssl-ca FILE]
 *
 * FILE holds lines `TOPIC VALUE` (kproxyd's `topic,value` format with its
 * default one-space separator). The value is everything after the first
 * space; every message goes to TOPIC (default: the first line's topic) with
 * no key, so librdkafka's sticky partitioner spreads them as kproxyd's does
 * (-k KEYS: key `k<i % KEYS>`, as kp_writers -k writes them). The file is
 * read in 1 MiB chunks as the messages are produced (from the page cache:
 * bench.py has just written or read it).
 *
 * Throughput mode (default): one warm-up message is produced and flushed
 * first (metadata, connections and, with idempotence, the producer id - as
 * bench.py warms kproxyd up with one line), then the clock starts, every
 * line is handed to rd_kafka_producev() (on QUEUE_FULL the call is retried
 * after serving delivery reports), and rd_kafka_flush() waits for every
 * delivery report. The clock stops there. -C (cold): no warm-up; the clock
 * and the CPU figures start before rd_kafka_new().
 *
 * Rate mode (-r RATE -d SECONDS): RATE*SECONDS lines are produced at RATE
 * per second, in bursts of RATE/1000 every millisecond (the same pacing as
 * kp_writers -r). The send time of each message is kept and its
 * delivery-report callback, served promptly by a thread blocked in
 * rd_kafka_poll(), records produce -> delivery report latency.
 *
 * -g (gate): print `READY` on stdout and wait for a line on stdin just
 * before the clock starts, so bench.py samples the mock's CPU there.
 *
 * Watermark mode (-W): prints {"partitions":N,"records":R}, R the sum of
 * the high watermarks of TOPIC's partitions (one ListOffsets per leader).
 * The mock numbers records from 0 in every partition and never reuses an
 * offset, so R is every record it appended: bench.py's check that no
 * message was lost or duplicated.
 *
 * TLS and address rewriting (for rows behind TLS terminators):
 * --map A=B,... makes every connection to advertised address A (host:port,
 * as in the bootstrap list or Metadata) go to B instead, through
 * resolve_cb; the broker's name (certificate check, SNI) stays A's host.
 * --ssl-ca FILE sets security.protocol=ssl and ssl.ca.location=FILE.
 * -X KEY=VALUE sets any other librdkafka property.
 *
 * Output: one JSON object on stdout, e.g.
 *   {"messages":1000000,"delivered":1000000,"failed":0,"bytes":94000000,
 *    "elapsed_s":2.5,"cpu_user_s":1.9,"cpu_sys_s":0.6,"maxrss_kb":90000,
 *    "minflt":2500,"version":"2.0.2"}
 * (in rate mode also "lat_p50_ms", "lat_p99_ms", "lat_max_ms"). The CPU
 * figures are getrusage(RUSAGE_SELF) over the timed part only (every
 * librdkafka thread included), and so is minflt (page faults that found
 * no page: memory touched for the first time); maxrss_kb is the process's
 * peak (VmHWM).
 * The first delivery error is printed on stderr. Exit 0 when the run
 * completed (even with failed messages: bench.py judges), 1 on a usage or
 * setup error.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
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
    /* -k: keys k0..k<keys-1> in turn; 0 for key-less messages. */
    uint64_t keys;
    uint64_t key_seq;
    /* --map: advertised host:port -> host:port, both owned strings. */
    char *map_from[64];
    char *map_to[64];
    int map_len;
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

/* Peak RSS (kB) of this process image: VmHWM. Not ru_maxrss, which Linux
 * carries over exec from the forking parent's size (bench.py's Python,
 * a few hundred MB after it generated an input file). */
static long peak_rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");

    if (!f) {
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "VmHWM:", 6)) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: rdk_bench -b BOOTSTRAP -f FILE [-t TOPIC] [-a ACKS] "
            "[-i 0|1] [-z CODEC] [-l LINGER_MS]\n"
            "                 [-k KEYS] [-C] [-g] [-r RATE -d SECONDS] "
            "[-X KEY=VALUE]...\n"
            "                 [--map HOST:PORT=HOST:PORT,...] "
            "[--ssl-ca FILE]\n"
            "       rdk_bench -b BOOTSTRAP -t TOPIC -W [--map ...] "
            "[--ssl-ca FILE]\n");
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
    char key[32];
    size_t klen = 0;

    if (st.keys > 0) {
        klen = (size_t)snprintf(key, sizeof(key), "k%" PRIu64,
                                st.key_seq++ % st.keys);
    }
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic),
            RD_KAFKA_V_KEY(klen ? key : NULL, klen),
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

struct opts {
    const char *bootstrap, *file, *acks, *codec, *linger, *idemp, *ssl_ca;
    char topic[256];
    double rate, duration;
    bool cold, gate, watermarks;
    const char *xprops[64]; /* -X KEY=VALUE, borrowed from argv */
    int nx;
};

/* Splits "host:port" at its last colon; false if it has none. */
static bool split_hostport(const char *s, char *host, size_t hsize,
                           const char **port)
{
    const char *c = strrchr(s, ':');

    if (!c || (size_t)(c - s) >= hsize) {
        return false;
    }
    memcpy(host, s, (size_t)(c - s));
    host[c - s] = '\0';
    *port = c + 1;
    return true;
}

/* resolve_cb: an advertised address in the map resolves to its target. */
static int on_resolve(const char *node, const char *service,
                      const struct addrinfo *hints, struct addrinfo **res,
                      void *opaque)
{
    char from[512], host[256];
    const char *port;

    (void)opaque;
    if (!node && !service && !hints) {
        freeaddrinfo(*res);
        return 0;
    }
    snprintf(from, sizeof(from), "%s:%s", node ? node : "",
             service ? service : "");
    for (int i = 0; i < st.map_len; i++) {
        if (!strcmp(from, st.map_from[i]) &&
            split_hostport(st.map_to[i], host, sizeof(host), &port)) {
            return getaddrinfo(host, port, hints, res);
        }
    }
    return getaddrinfo(node, service, hints, res);
}

/* --map A=B,C=D */
static void parse_map(const char *arg)
{
    char *copy = strdup(arg), *save = NULL;

    for (char *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');

        if (!eq || st.map_len == 64) {
            fprintf(stderr, "rdk_bench: bad --map entry %s\n", tok);
            exit(1);
        }
        *eq = '\0';
        st.map_from[st.map_len] = strdup(tok);
        st.map_to[st.map_len] = strdup(eq + 1);
        st.map_len++;
    }
    free(copy);
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longs[] = {
        {"map", required_argument, NULL, 'M'},
        {"ssl-ca", required_argument, NULL, 'S'},
        {NULL, 0, NULL, 0}};
    int opt;

    *o = (struct opts){.acks = "all", .codec = "none", .linger = "5"};
    while ((opt = getopt_long(argc, argv, "b:f:t:a:i:z:l:r:d:k:X:CgW",
                              longs, NULL)) != -1) {
        switch (opt) {
        case 'b':
            o->bootstrap = optarg;
            break;
        case 'f':
            o->file = optarg;
            break;
        case 't':
            snprintf(o->topic, sizeof(o->topic), "%s", optarg);
            break;
        case 'a':
            o->acks = optarg;
            break;
        case 'i':
            o->idemp = optarg;
            break;
        case 'z':
            o->codec = optarg;
            break;
        case 'l':
            o->linger = optarg;
            break;
        case 'r':
            o->rate = atof(optarg);
            break;
        case 'd':
            o->duration = atof(optarg);
            break;
        case 'k':
            st.keys = strtoull(optarg, NULL, 10);
            break;
        case 'C':
            o->cold = true;
            break;
        case 'g':
            o->gate = true;
            break;
        case 'W':
            o->watermarks = true;
            break;
        case 'M':
            parse_map(optarg);
            break;
        case 'S':
            o->ssl_ca = optarg;
            break;
        case 'X':
            if (o->nx == 64) {
                usage();
            }
            o->xprops[o->nx++] = optarg;
            break;
        default:
            usage();
        }
    }
    if (!o->bootstrap || (!o->file && !o->watermarks) ||
        (o->watermarks && !o->topic[0]) ||
        (o->rate > 0) != (o->duration > 0) || (o->rate > 0 && o->cold)) {
        usage();
    }
    if (!o->idemp) {
        o->idemp = (!strcmp(o->acks, "all") || !strcmp(o->acks, "-1"))
                       ? "1" : "0";
    }
}

/* The configuration both modes share: brokers, TLS, mapping, -X. */
static rd_kafka_conf_t *base_conf(const struct opts *o)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    set_conf(conf, "bootstrap.servers", o->bootstrap);
    set_conf(conf, "client.id", "rdk_bench");
    if (o->ssl_ca) {
        set_conf(conf, "security.protocol", "ssl");
        set_conf(conf, "ssl.ca.location", o->ssl_ca);
    }
    if (st.map_len > 0) {
        rd_kafka_conf_set_resolve_cb(conf, on_resolve);
    }
    for (int i = 0; i < o->nx; i++) {
        char key[256];
        const char *eq = strchr(o->xprops[i], '=');

        if (!eq || (size_t)(eq - o->xprops[i]) >= sizeof(key)) {
            usage();
        }
        memcpy(key, o->xprops[i], (size_t)(eq - o->xprops[i]));
        key[eq - o->xprops[i]] = '\0';
        set_conf(conf, key, eq + 1);
    }
    return conf;
}

/* -W: the sum of the high watermarks of o->topic's partitions. */
static int run_watermarks(const struct opts *o)
{
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, base_conf(o), err,
                                  sizeof(err));
    const struct rd_kafka_metadata *md = NULL;

    if (!rk) {
        fprintf(stderr, "rdk_bench: rd_kafka_new: %s\n", err);
        return 1;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, o->topic, NULL);

    if (rd_kafka_metadata(rk, 0, rkt, &md, 15000) || md->topic_cnt != 1 ||
        md->topics[0].err || md->topics[0].partition_cnt < 1) {
        fprintf(stderr, "rdk_bench: no metadata for %s\n", o->topic);
        return 1;
    }
    int n = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new(n);

    for (int i = 0; i < n; i++) {
        rd_kafka_topic_partition_list_add(l, o->topic,
                                          md->topics[0].partitions[i].id)
            ->offset = RD_KAFKA_OFFSET_END; /* the latest: high watermark */
    }
    rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(rk, l, 15000);
    int64_t sum = 0;

    for (int i = 0; i < l->cnt && !e; i++) {
        e = l->elems[i].err;
        sum += l->elems[i].offset;
    }
    if (e) {
        fprintf(stderr, "rdk_bench: ListOffsets: %s\n", rd_kafka_err2str(e));
        return 1;
    }
    printf("{\"partitions\":%d,\"records\":%" PRId64 "}\n", n, sum);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return 0;
}

static void wait_gate(bool gate)
{
    char line[64];

    if (!gate) {
        return;
    }
    printf("READY\n");
    fflush(stdout);
    if (!fgets(line, sizeof(line), stdin)) {
        fprintf(stderr, "rdk_bench: no go line on stdin\n");
        exit(1);
    }
}

static rd_kafka_t *new_producer(const struct opts *o)
{
    char err[512];
    rd_kafka_conf_t *conf = base_conf(o);

    set_conf(conf, "acks", o->acks);
    set_conf(conf, "enable.idempotence",
             o->idemp[0] == '1' ? "true" : "false");
    set_conf(conf, "compression.codec", o->codec);
    set_conf(conf, "linger.ms", o->linger);
    rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));

    if (!rk) {
        fprintf(stderr, "rdk_bench: rd_kafka_new: %s\n", err);
        exit(1);
    }
    return rk;
}

/* Warm-up with the first line: metadata, broker connections, producer
 * id. The timed run reads the file again from its start. */
static void warm_up(rd_kafka_t *rk, const char *topic, struct reader *rd,
                    const char *val, size_t vlen)
{
    uint64_t seq = st.key_seq;

    produce_one(rk, topic, val, vlen, 0);
    if (rd_kafka_flush(rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        st.delivered != 1) {
        fprintf(stderr, "rdk_bench: warm-up message not delivered\n");
        exit(1);
    }
    st.delivered = 0;
    st.key_seq = seq; /* the timed run starts with key k0, as kp_writers */
    rewind(rd->f);
    rd->pos = rd->len = 0;
    rd->eof = false;
}

/* Bursts every millisecond, as kp_writers -r paces kproxyd's writer.
 * Returns the number of messages produced. */
static size_t produce_paced(rd_kafka_t *rk, const struct opts *o,
                            struct reader *rd, size_t total, int64_t t0,
                            uint64_t *bytes)
{
    double per_ms = o->rate / 1000.0, due = 0;
    size_t i = 0;
    int64_t tick = t0;
    const char *val;
    size_t vlen;

    while (i < total && !rd->eof) {
        due += per_ms;
        while (i < total && (double)i < due &&
               next_line(rd, &val, &vlen, NULL, 0)) {
            st.sent_ns[i] = now_ns();
            produce_one(rk, o->topic, val, vlen, (uintptr_t)i + 1);
            *bytes += vlen;
            i++;
        }
        tick += 1000000;
        struct timespec ts = {.tv_sec = tick / 1000000000,
                              .tv_nsec = tick % 1000000000};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    }
    /* rd_kafka_flush() serves no callbacks while the poller thread
     * does; wait for the counters instead. */
    while (st.delivered + st.failed < (int64_t)i &&
           now_ns() - t0 < (int64_t)(o->duration + 60) * 1000000000) {
        usleep(1000);
    }
    rd_kafka_flush(rk, 30000);
    return i;
}

static size_t produce_all(rd_kafka_t *rk, const struct opts *o,
                          struct reader *rd, uint64_t *bytes)
{
    const char *val;
    size_t vlen, sent = 0;

    while (next_line(rd, &val, &vlen, NULL, 0)) {
        produce_one(rk, o->topic, val, vlen, 0);
        *bytes += vlen;
        /* Serve delivery reports as the producer loop of an application
         * would, without blocking. */
        if ((++sent & 1023) == 0) {
            rd_kafka_poll(rk, 0);
        }
    }
    rd_kafka_flush(rk, 120000);
    return sent;
}

static void print_latency(size_t sent)
{
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

/* Opens FILE, reads the first line (the default topic); *total is the
 * rate mode's message count (SIZE_MAX otherwise). */
static void open_input(struct opts *o, struct reader *rd, const char **val,
                       size_t *vlen, size_t *total)
{
    char first_topic[256];

    rd->f = fopen(o->file, "rb");
    if (!rd->f) {
        fprintf(stderr, "rdk_bench: %s: %s\n", o->file, strerror(errno));
        exit(1);
    }
    if (!next_line(rd, val, vlen, first_topic, sizeof(first_topic))) {
        fprintf(stderr, "rdk_bench: no `TOPIC VALUE` lines in %s\n",
                o->file);
        exit(1);
    }
    if (!o->topic[0]) {
        snprintf(o->topic, sizeof(o->topic), "%s", first_topic);
    }
    *total = SIZE_MAX;
    if (o->rate > 0) {
        *total = (size_t)(o->rate * o->duration + 0.5);
        st.sent_ns = calloc(*total ? *total : 1, sizeof(int64_t));
        st.lat_ns = calloc(*total ? *total : 1, sizeof(int64_t));
        if (!st.sent_ns || !st.lat_ns) {
            fprintf(stderr, "rdk_bench: out of memory\n");
            exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    struct reader rd = {0};
    const char *val;
    size_t vlen, total, sent;
    struct rusage ru0, ru1;
    uint64_t bytes = 0;
    int64_t t0 = 0;
    rd_kafka_t *rk = NULL;
    pthread_t poller;

    parse_opts(argc, argv, &o);
    if (o.watermarks) {
        return run_watermarks(&o);
    }
    open_input(&o, &rd, &val, &vlen, &total);
    if (o.cold) {
        /* Cold: the timed part starts before the handle exists and the
         * first line is produced like any other. */
        rewind(rd.f);
        rd.pos = rd.len = 0;
        wait_gate(o.gate);
        getrusage(RUSAGE_SELF, &ru0);
        t0 = now_ns();
        rk = new_producer(&o);
    } else {
        rk = new_producer(&o);
        warm_up(rk, o.topic, &rd, val, vlen);
        if (o.rate > 0 &&
            pthread_create(&poller, NULL, poller_main, rk) != 0) {
            fprintf(stderr, "rdk_bench: pthread_create failed\n");
            return 1;
        }
        wait_gate(o.gate);
        getrusage(RUSAGE_SELF, &ru0);
        t0 = now_ns();
    }
    sent = o.rate > 0 ? produce_paced(rk, &o, &rd, total, t0, &bytes)
                      : produce_all(rk, &o, &rd, &bytes);

    int64_t t1 = now_ns();
    getrusage(RUSAGE_SELF, &ru1);

    if (o.rate > 0) {
        st.poller_stop = 1;
        pthread_join(poller, NULL);
    }
    printf("{\"messages\":%zu,\"delivered\":%" PRId64 ",\"failed\":%" PRId64
           ",\"bytes\":%" PRIu64 ",\"elapsed_s\":%.6f,\"cpu_user_s\":%.6f,"
           "\"cpu_sys_s\":%.6f,\"maxrss_kb\":%ld,\"minflt\":%ld,"
           "\"version\":\"%s\"",
           sent, st.delivered, st.failed, bytes, (double)(t1 - t0) / 1e9,
           tv_s(&ru1.ru_utime) - tv_s(&ru0.ru_utime),
           tv_s(&ru1.ru_stime) - tv_s(&ru0.ru_stime), peak_rss_kb(),
           ru1.ru_minflt - ru0.ru_minflt, rd_kafka_version_str());
    if (st.lat_ns) {
        print_latency(sent);
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
