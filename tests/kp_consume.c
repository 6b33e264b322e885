/*
 * kp_consume.c - an independent consumer for the integration tests: reads
 * back what kproxyd produced, decoded (and decompressed, CRC-checked) by
 * librdkafka, so the tests never judge kproxyd's encoding with its own code.
 *
 *   kp_consume -b BOOTSTRAP -t TOPIC [-t TOPIC...] [-n EXPECTED]
 *              [-w IDLE_MS (3000)] [-W MAX_MS (60000)] [-d DEBUG]
 *
 * Finds every partition of the topics in the metadata, assigns them all from
 * the beginning (no consumer group) and prints one JSON object a message on
 * stdout:
 *
 *   {"topic":"t","partition":0,"offset":5,"key":"<base64>"|null,
 *    "value":"<base64>"|null,"headers":[["name","<base64>"|null],...],
 *    "timestamp":1700000000000,"tstype":"create"|"append"|"none"}
 *
 * Stops once EXPECTED messages were read and a further EXTRA_MS passed
 * without more (so duplicates and extra messages show up), when no message
 * arrived for IDLE_MS, or after MAX_MS. Exits 0 then, whatever it read; 1 on
 * a usage or setup error (no metadata within min(MAX_MS, 15 s)); 3 if a
 * fetched batch was corrupt (CRC-32C mismatch, undecodable records or
 * compression: the mock stores batches without checking them, so this is
 * where a bad encoding shows). Fetch errors are reported on stderr.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define MAX_TOPICS 64
#define EXTRA_MS 300
#define METADATA_WAIT_MS 15000

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put_base64(FILE *f, const unsigned char *p, size_t len)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;

    fputc('"', f);
    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

        fputc(tab[v >> 18], f);
        fputc(tab[(v >> 12) & 63], f);
        fputc(tab[(v >> 6) & 63], f);
        fputc(tab[v & 63], f);
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;

        fputc(tab[v >> 18], f);
        fputc(tab[(v >> 12) & 63], f);
        fputs("==", f);
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;

        fputc(tab[v >> 18], f);
        fputc(tab[(v >> 12) & 63], f);
        fputc(tab[(v >> 6) & 63], f);
        fputc('=', f);
    }
    fputc('"', f);
}

static void put_bytes_or_null(FILE *f, const void *p, size_t len)
{
    if (!p) {
        fputs("null", f);
    } else {
        put_base64(f, p, len);
    }
}

/* JSON string; bytes >= 0x80 pass through (header names are UTF-8). */
static void put_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

static void print_message(FILE *f, const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);
    const char *tsname = "none";
    size_t idx;

    fputs("{\"topic\":", f);
    put_string(f, rd_kafka_topic_name(m->rkt));
    fprintf(f, ",\"partition\":%" PRId32 ",\"offset\":%" PRId64 ",\"key\":",
            m->partition, m->offset);
    put_bytes_or_null(f, m->key, m->key_len);
    fputs(",\"value\":", f);
    put_bytes_or_null(f, m->payload, m->len);
    fputs(",\"headers\":[", f);
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t vlen;

        for (idx = 0;
             rd_kafka_header_get_all(hdrs, idx, &name, &val, &vlen) ==
             RD_KAFKA_RESP_ERR_NO_ERROR;
             idx++) {
            fputs(idx ? ",[" : "[", f);
            put_string(f, name);
            fputc(',', f);
            put_bytes_or_null(f, val, vlen);
            fputc(']', f);
        }
    }
    if (tstype == RD_KAFKA_TIMESTAMP_CREATE_TIME) {
        tsname = "create";
    } else if (tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME) {
        tsname = "append";
    }
    fprintf(f, "],\"timestamp\":%" PRId64 ",\"tstype\":\"%s\"}\n", ts, tsname);
}

static void set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kp_consume: %s=%s: %s\n", k, v, errstr);
        exit(1);
    }
}

/*
 * Adds every partition of `topic` to `parts`, retrying while the metadata
 * has no partitions yet (a leader election, a broker just restarted).
 */
static bool add_partitions(rd_kafka_t *rk, const char *topic,
                           rd_kafka_topic_partition_list_t *parts,
                           int64_t deadline)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const char *why = "no partitions";

    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 1000);
        int i;

        if (!err && md->topic_cnt == 1 && !md->topics[0].err &&
            md->topics[0].partition_cnt > 0) {
            for (i = 0; i < md->topics[0].partition_cnt; i++) {
                rd_kafka_topic_partition_list_add(
                    parts, topic, md->topics[0].partitions[i].id)
                    ->offset = RD_KAFKA_OFFSET_BEGINNING;
            }
            rd_kafka_metadata_destroy(md);
            rd_kafka_topic_destroy(rkt);
            return true;
        }
        if (err) {
            why = rd_kafka_err2str(err);
        } else if (md->topic_cnt == 1 && md->topics[0].err) {
            why = rd_kafka_err2str(md->topics[0].err);
        }
        if (md) {
            rd_kafka_metadata_destroy(md);
        }
        if (now_ms() > deadline) {
            fprintf(stderr, "kp_consume: metadata for %s: %s\n", topic, why);
            rd_kafka_topic_destroy(rkt);
            return false;
        }
        usleep(100 * 1000);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: kp_consume -b BOOTSTRAP -t TOPIC [-t TOPIC...] "
                    "[-n EXPECTED] [-w IDLE_MS] [-W MAX_MS] [-d DEBUG]\n");
    exit(1);
}

static long parse_num(const char *s)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || !*s || *end || v < 0) {
        usage();
    }
    return v;
}

int main(int argc, char **argv)
{
    const char *topics[MAX_TOPICS];
    size_t topic_cnt = 0, i;
    const char *bootstrap = NULL, *debug = NULL;
    long expected = -1, idle_ms = 3000, max_ms = 60000;
    rd_kafka_topic_partition_list_t *parts;
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    char errstr[512];
    int64_t start, last, done_at = -1;
    long count = 0, corrupt = 0;
    char lasterr[512] = "";
    int opt;

    while ((opt = getopt(argc, argv, "b:t:n:w:W:d:h")) != -1) {
        switch (opt) {
        case 'b':
            bootstrap = optarg;
            break;
        case 't':
            if (topic_cnt == MAX_TOPICS) {
                usage();
            }
            topics[topic_cnt++] = optarg;
            break;
        case 'n':
            expected = parse_num(optarg);
            break;
        case 'w':
            idle_ms = parse_num(optarg);
            break;
        case 'W':
            max_ms = parse_num(optarg);
            break;
        case 'd':
            debug = optarg;
            break;
        default:
            usage();
        }
    }
    if (!bootstrap || topic_cnt == 0 || optind != argc) {
        usage();
    }

    conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", bootstrap);
    set(conf, "client.id", "kp_consume");
    /* Only for librdkafka's bookkeeping: offsets come from assign(). */
    set(conf, "group.id", "kp_consume");
    set(conf, "enable.auto.commit", "false");
    set(conf, "enable.auto.offset.store", "false");
    set(conf, "enable.partition.eof", "false");
    set(conf, "allow.auto.create.topics", "false");
    /* The independent decoder verifies what kproxyd computed. */
    set(conf, "check.crcs", "true");
    set(conf, "fetch.wait.max.ms", "50");
    set(conf, "fetch.error.backoff.ms", "50");
    set(conf, "topic.metadata.refresh.interval.ms", "1000");
    set(conf, "log_level", "3");
    if (debug) {
        set(conf, "debug", debug);
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kp_consume: rd_kafka_new: %s\n", errstr);
        return 1;
    }
    rd_kafka_poll_set_consumer(rk);

    parts = rd_kafka_topic_partition_list_new((int)topic_cnt * 8);
    start = now_ms();
    for (i = 0; i < topic_cnt; i++) {
        if (!add_partitions(rk, topics[i], parts,
                            start + (max_ms < METADATA_WAIT_MS
                                         ? max_ms
                                         : METADATA_WAIT_MS))) {
            rd_kafka_topic_partition_list_destroy(parts);
            rd_kafka_destroy(rk);
            return 1;
        }
    }
    if (rd_kafka_assign(rk, parts)) {
        fprintf(stderr, "kp_consume: assign failed\n");
        return 1;
    }
    rd_kafka_topic_partition_list_destroy(parts);

    setvbuf(stdout, NULL, _IOFBF, 1 << 20);
    start = last = now_ms();
    if (expected == 0) {
        done_at = start;
    }
    for (;;) {
        int64_t t = now_ms();
        rd_kafka_message_t *m;

        if (t - start >= max_ms) {
            fprintf(stderr, "kp_consume: max time reached after %ld "
                            "messages\n", count);
            break;
        }
        if (done_at >= 0 && t - last >= EXTRA_MS) {
            break;
        }
        if (t - last >= idle_ms) {
            break;
        }
        m = rd_kafka_consumer_poll(rk, 50);
        if (!m) {
            continue;
        }
        if (m->err) {
            if (m->err == RD_KAFKA_RESP_ERR__BAD_MSG ||
                m->err == RD_KAFKA_RESP_ERR__BAD_COMPRESSION) {
                corrupt++;
            }
            /* librdkafka repeats a failing fetch: say each error once. */
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF &&
                strcmp(lasterr, rd_kafka_message_errstr(m)) != 0) {
                snprintf(lasterr, sizeof(lasterr), "%s",
                         rd_kafka_message_errstr(m));
                fprintf(stderr, "kp_consume: %s [%" PRId32 "]: %s (%s)\n",
                        m->rkt ? rd_kafka_topic_name(m->rkt) : "-",
                        m->partition, lasterr, rd_kafka_err2name(m->err));
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        print_message(stdout, m);
        rd_kafka_message_destroy(m);
        count++;
        last = now_ms();
        if (expected >= 0 && count >= expected && done_at < 0) {
            done_at = last;
        }
    }
    fflush(stdout);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (corrupt) {
        fprintf(stderr, "kp_consume: %ld corrupt fetches (bad CRC or "
                        "record batch)\n", corrupt);
        return 3;
    }
    return 0;
}
