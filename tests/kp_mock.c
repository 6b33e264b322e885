/*
 * kp_mock.c - a mock Kafka cluster for the integration tests and `make run`,
 * built on librdkafka's mock cluster (rdkafka_mock.h).
 *
 *   kp_mock [-b BROKERS] [-t TOPIC:PARTITIONS[:RF]]... [-d DEBUG]
 *
 * Starts BROKERS (default 3) mock brokers with ids 1..BROKERS on 127.0.0.1,
 * creates the topics, prints `BOOTSTRAP host:port,...` and `READY` on stdout,
 * then reads one command a line on stdin and answers each with one line,
 * `OK` (sometimes `OK <value>`) or `ERR <message>`, so a test drives faults
 * synchronously. On stdin EOF (the test died or closed the pipe) or `quit`
 * it destroys the cluster and exits 0. -d sets librdkafka's `debug` on the
 * handle that owns the cluster (e.g. `-d mock,protocol`), logged to stderr.
 *
 * Commands (APIKEY is a number or a name: Produce, Metadata, ApiVersions,
 * InitProducerId, ...; ERR is a number or a librdkafka error name with or
 * without the RD_KAFKA_RESP_ERR_ prefix, e.g. NOT_LEADER_FOR_PARTITION, 6,
 * _TRANSPORT to make the broker drop the connection):
 *
 *   down ID                   broker stops accepting, drops its connections
 *   up ID                     broker accepts again (no leader change)
 *   leader TOPIC PARTITION ID partition leader becomes broker ID (-1: none)
 *   rtt ID MS                 broker delays every response by MS
 *   create TOPIC PARTITIONS RF
 *   push_err APIKEY ERR [ERR...]
 *                             the next requests of APIKEY, on any broker,
 *                             fail with these errors in order
 *   broker_push_err ID APIKEY ERR:RTT_MS [ERR:RTT_MS...]
 *                             the same on one broker, each with a delay
 *                             (ERR 0 = answer normally, after RTT_MS)
 *   errcnt ID APIKEY          `OK N`: errors still stacked on broker ID
 *   clear_err APIKEY          drop the cluster's stacked errors for APIKEY
 *   topic_err TOPIC ERR       Metadata reports ERR for TOPIC (0 clears)
 *   apiversion APIKEY MIN MAX versions advertised and accepted for APIKEY
 *   bootstrap                 `OK host:port,...`
 *   ping                      `OK`
 *   quit                      exit
 *
 * What Debian's librdkafka 2.0.2 mock supports (found with
 * `kcat -b BOOTSTRAP -L -d all` against this tool - the "Broker API
 * support" dump - and with hand-made requests):
 *
 *  - ApiVersions v0-v2. A v3 request is answered ErrorCode 35
 *    (UNSUPPORTED_VERSION) with a body that is neither a v0 nor a v3 one
 *    (after the error: 01 0012 0000 0002 00000000, i.e. a one-byte count
 *    then the ApiVersions entry 18 v0..v2 and a ThrottleTimeMs); librdkafka
 *    cannot read the range from it and retries with v0. A client must
 *    therefore fall back to v0 when the error body does not parse.
 *  - Produce v0-v7 (so zstd, which needs v7, is accepted); only
 *    RecordBatch v2 (magic 2) is appended, older MessageSets are answered
 *    UNSUPPORTED_VERSION. Records are neither decoded nor CRC-checked: the
 *    bytes are stored as sent (BaseOffset and PartitionLeaderEpoch
 *    patched), so a bad CRC is acknowledged; kp_consume (check.crcs) is
 *    where it shows. A RecordBatch whose RecordCount < 1 is rejected.
 *    A Produce for a topic the mock does not know is answered
 *    UNKNOWN_TOPIC_OR_PART (3) - Produce does not auto-create; one sent
 *    to a broker that does not lead the partition NOT_LEADER_FOR_PARTITION
 *    (6).
 *  - Metadata v0-v2 only: there is no AllowAutoTopicCreation field (v4+)
 *    and the mock treats every Metadata request naming an unknown topic as
 *    "create it": the topic appears with the default 4 partitions. Tests
 *    of "a topic that does not exist" must use
 *    `topic_err TOPIC UNKNOWN_TOPIC_OR_PART`. The mock reports replicas
 *    and ISR 1..N whatever the replication factor given.
 *  - InitProducerId v0-v4: a random producer id, epoch 0, for a producer
 *    without a transactional id.
 *  - Idempotence: BaseSequence and ProducerEpoch are checked only for
 *    transactional producers (a non-empty TransactionalId in Produce). For
 *    a plain idempotent producer (null TransactionalId) the mock accepts
 *    any sequence (a gap, a step back, a wrong epoch) and appends a resent
 *    batch again instead of deduplicating it (checked with hand-made
 *    Produce v3 requests). Tests must check sequences on the wire, or count
 *    duplicates knowing the mock keeps them.
 *  - acks: acks=0 gets no response; acks=1 and acks=all are both answered
 *    once the leader appended (there are no followers to wait for).
 *  - Retention: about 5 MiB or 100000 batches per partition; older
 *    batches are dropped, so tests keep their data well below that.
 *  - rd_kafka_mock_broker_set_down closes the broker's connections and
 *    refuses new ones; it does not move leadership (use `leader`).
 *  - Also (unused by kproxyd): Fetch, ListOffsets, OffsetCommit/Fetch,
 *    FindCoordinator, group and transaction APIs.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_TOPICS 64
#define MAX_ARGS 64

struct topic_spec {
    char *name;
    int partitions;
    int rf;
};

static const struct {
    const char *name;
    int key;
} api_names[] = {
    {"Produce", 0},          {"Fetch", 1},
    {"ListOffsets", 2},      {"Metadata", 3},
    {"OffsetCommit", 8},     {"OffsetFetch", 9},
    {"FindCoordinator", 10}, {"JoinGroup", 11},
    {"Heartbeat", 12},       {"LeaveGroup", 13},
    {"SyncGroup", 14},       {"ApiVersions", 18},
    {"ApiVersion", 18},      {"InitProducerId", 22},
    {"AddPartitionsToTxn", 24}, {"EndTxn", 26},
};

static char errbuf[512];

static void reply_ok(const char *value)
{
    if (value) {
        printf("OK %s\n", value);
    } else {
        printf("OK\n");
    }
    fflush(stdout);
}

static void reply_err(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void reply_err(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
    va_end(ap);
    printf("ERR %s\n", errbuf);
    fflush(stdout);
}

static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    if (!s || !*s) {
        return false;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_apikey(const char *s, int16_t *out)
{
    long v;
    size_t i;

    if (parse_long(s, 0, SHRT_MAX, &v)) {
        *out = (int16_t)v;
        return true;
    }
    for (i = 0; i < sizeof(api_names) / sizeof(api_names[0]); i++) {
        if (strcasecmp(s, api_names[i].name) == 0) {
            *out = (int16_t)api_names[i].key;
            return true;
        }
    }
    return false;
}

/* A number, or an error name with or without the RD_KAFKA_RESP_ERR_ prefix. */
static bool parse_err(const char *s, rd_kafka_resp_err_t *out)
{
    const struct rd_kafka_err_desc *descs;
    size_t cnt, i;
    long v;

    if (parse_long(s, INT_MIN, INT_MAX, &v)) {
        *out = (rd_kafka_resp_err_t)v;
        return true;
    }
    if (strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18) == 0) {
        s += 18;
    }
    rd_kafka_get_err_descs(&descs, &cnt);
    for (i = 0; i < cnt; i++) {
        if (descs[i].name && strcasecmp(descs[i].name, s) == 0) {
            *out = descs[i].code;
            return true;
        }
    }
    return false;
}

static bool parse_topic_spec(char *arg, struct topic_spec *t)
{
    char *c1 = strchr(arg, ':');
    char *c2;
    long v;

    if (!c1 || c1 == arg) {
        return false;
    }
    *c1++ = '\0';
    t->name = arg;
    t->rf = 1;
    c2 = strchr(c1, ':');
    if (c2) {
        *c2++ = '\0';
        if (!parse_long(c2, 1, 1000, &v)) {
            return false;
        }
        t->rf = (int)v;
    }
    if (!parse_long(c1, 1, 100000, &v)) {
        return false;
    }
    t->partitions = (int)v;
    return true;
}

static size_t split(char *line, char **argv, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    char *tok;

    for (tok = strtok_r(line, " \t\r\n", &save); tok && n < max;
         tok = strtok_r(NULL, " \t\r\n", &save)) {
        argv[n++] = tok;
    }
    return n;
}

static bool want_args(size_t argc, size_t min, size_t max, const char *usage)
{
    if (argc < min || argc > max) {
        reply_err("usage: %s", usage);
        return false;
    }
    return true;
}

static void cmd_result(rd_kafka_resp_err_t err)
{
    if (err) {
        reply_err("%s", rd_kafka_err2name(err));
    } else {
        reply_ok(NULL);
    }
}

/* Returns false on `quit`. */
static bool run_command(rd_kafka_mock_cluster_t *mc, char *line)
{
    char *argv[MAX_ARGS];
    size_t argc = split(line, argv, MAX_ARGS);
    rd_kafka_resp_err_t err;
    int16_t apikey;
    long id, a, b;
    size_t i;

    if (argc == 0) {
        reply_err("empty command");
        return true;
    }
    if (strcmp(argv[0], "quit") == 0) {
        reply_ok(NULL);
        return false;
    } else if (strcmp(argv[0], "ping") == 0) {
        reply_ok(NULL);
    } else if (strcmp(argv[0], "bootstrap") == 0) {
        reply_ok(rd_kafka_mock_cluster_bootstraps(mc));
    } else if (strcmp(argv[0], "down") == 0 || strcmp(argv[0], "up") == 0) {
        if (!want_args(argc, 2, 2, "down|up ID")) {
            return true;
        }
        if (!parse_long(argv[1], 0, INT_MAX, &id)) {
            reply_err("bad broker id '%s'", argv[1]);
            return true;
        }
        if (argv[0][0] == 'd') {
            err = rd_kafka_mock_broker_set_down(mc, (int32_t)id);
        } else {
            err = rd_kafka_mock_broker_set_up(mc, (int32_t)id);
        }
        cmd_result(err);
    } else if (strcmp(argv[0], "leader") == 0) {
        if (!want_args(argc, 4, 4, "leader TOPIC PARTITION ID")) {
            return true;
        }
        if (!parse_long(argv[2], 0, INT_MAX, &a) ||
            !parse_long(argv[3], -1, INT_MAX, &id)) {
            reply_err("bad partition or broker id");
            return true;
        }
        cmd_result(rd_kafka_mock_partition_set_leader(mc, argv[1], (int32_t)a,
                                                      (int32_t)id));
    } else if (strcmp(argv[0], "rtt") == 0) {
        if (!want_args(argc, 3, 3, "rtt ID MS")) {
            return true;
        }
        if (!parse_long(argv[1], 0, INT_MAX, &id) ||
            !parse_long(argv[2], 0, INT_MAX, &a)) {
            reply_err("bad broker id or rtt");
            return true;
        }
        cmd_result(rd_kafka_mock_broker_set_rtt(mc, (int32_t)id, (int)a));
    } else if (strcmp(argv[0], "create") == 0) {
        if (!want_args(argc, 4, 4, "create TOPIC PARTITIONS RF")) {
            return true;
        }
        if (!parse_long(argv[2], 1, 100000, &a) ||
            !parse_long(argv[3], 1, 1000, &b)) {
            reply_err("bad partition count or replication factor");
            return true;
        }
        cmd_result(rd_kafka_mock_topic_create(mc, argv[1], (int)a, (int)b));
    } else if (strcmp(argv[0], "push_err") == 0) {
        rd_kafka_resp_err_t errs[MAX_ARGS];

        if (!want_args(argc, 3, MAX_ARGS, "push_err APIKEY ERR [ERR...]")) {
            return true;
        }
        if (!parse_apikey(argv[1], &apikey)) {
            reply_err("bad api key '%s'", argv[1]);
            return true;
        }
        for (i = 2; i < argc; i++) {
            if (!parse_err(argv[i], &errs[i - 2])) {
                reply_err("bad error '%s'", argv[i]);
                return true;
            }
        }
        rd_kafka_mock_push_request_errors_array(mc, apikey, argc - 2, errs);
        reply_ok(NULL);
    } else if (strcmp(argv[0], "broker_push_err") == 0) {
        rd_kafka_resp_err_t errs[MAX_ARGS];
        int rtts[MAX_ARGS];

        if (!want_args(argc, 4, MAX_ARGS,
                       "broker_push_err ID APIKEY ERR:RTT_MS "
                       "[ERR:RTT_MS...]")) {
            return true;
        }
        if (!parse_long(argv[1], 0, INT_MAX, &id)) {
            reply_err("bad broker id '%s'", argv[1]);
            return true;
        }
        if (!parse_apikey(argv[2], &apikey)) {
            reply_err("bad api key '%s'", argv[2]);
            return true;
        }
        /* Parse everything first so a bad entry pushes nothing. */
        for (i = 3; i < argc; i++) {
            char *colon = strchr(argv[i], ':');

            a = 0;
            if (colon) {
                *colon = '\0';
                if (!parse_long(colon + 1, 0, INT_MAX, &a)) {
                    reply_err("bad rtt '%s'", colon + 1);
                    return true;
                }
            }
            if (!parse_err(argv[i], &errs[i - 3])) {
                reply_err("bad error '%s'", argv[i]);
                return true;
            }
            rtts[i - 3] = (int)a;
        }
        /* There is no array form; one push per entry appends in order. */
        for (i = 3; i < argc; i++) {
            err = rd_kafka_mock_broker_push_request_error_rtts(
                mc, (int32_t)id, apikey, 1, errs[i - 3], rtts[i - 3]);
            if (err) {
                break;
            }
        }
        cmd_result(err);
    } else if (strcmp(argv[0], "errcnt") == 0) {
        size_t cnt = 0;
        char num[32];

        if (!want_args(argc, 3, 3, "errcnt ID APIKEY")) {
            return true;
        }
        if (!parse_long(argv[1], 0, INT_MAX, &id) ||
            !parse_apikey(argv[2], &apikey)) {
            reply_err("bad broker id or api key");
            return true;
        }
        err = rd_kafka_mock_broker_error_stack_cnt(mc, (int32_t)id, apikey,
                                                   &cnt);
        if (err) {
            cmd_result(err);
        } else {
            snprintf(num, sizeof(num), "%zu", cnt);
            reply_ok(num);
        }
    } else if (strcmp(argv[0], "clear_err") == 0) {
        if (!want_args(argc, 2, 2, "clear_err APIKEY")) {
            return true;
        }
        if (!parse_apikey(argv[1], &apikey)) {
            reply_err("bad api key '%s'", argv[1]);
            return true;
        }
        rd_kafka_mock_clear_request_errors(mc, apikey);
        reply_ok(NULL);
    } else if (strcmp(argv[0], "topic_err") == 0) {
        if (!want_args(argc, 3, 3, "topic_err TOPIC ERR")) {
            return true;
        }
        if (!parse_err(argv[2], &err)) {
            reply_err("bad error '%s'", argv[2]);
            return true;
        }
        rd_kafka_mock_topic_set_error(mc, argv[1], err);
        reply_ok(NULL);
    } else if (strcmp(argv[0], "apiversion") == 0) {
        if (!want_args(argc, 4, 4, "apiversion APIKEY MIN MAX")) {
            return true;
        }
        if (!parse_apikey(argv[1], &apikey) ||
            !parse_long(argv[2], -1, SHRT_MAX, &a) ||
            !parse_long(argv[3], -1, SHRT_MAX, &b)) {
            reply_err("bad api key or version");
            return true;
        }
        cmd_result(rd_kafka_mock_set_apiversion(mc, apikey, (int16_t)a,
                                                (int16_t)b));
    } else {
        reply_err("unknown command '%s'", argv[0]);
    }
    return true;
}

static void usage(void)
{
    fprintf(stderr, "usage: kp_mock [-b BROKERS] [-t TOPIC:PARTITIONS[:RF]]... "
                    "[-d DEBUG]\n");
    exit(1);
}

int main(int argc, char **argv)
{
    struct topic_spec topics[MAX_TOPICS];
    size_t topic_cnt = 0, i;
    const char *debug = NULL;
    long brokers = 3;
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    char errstr[512];
    char *line = NULL;
    size_t cap = 0;
    int opt;

    while ((opt = getopt(argc, argv, "b:t:d:h")) != -1) {
        switch (opt) {
        case 'b':
            if (!parse_long(optarg, 1, 100, &brokers)) {
                usage();
            }
            break;
        case 't':
            if (topic_cnt == MAX_TOPICS ||
                !parse_topic_spec(optarg, &topics[topic_cnt])) {
                usage();
            }
            topic_cnt++;
            break;
        case 'd':
            debug = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc) {
        usage();
    }

    /* The handle only owns the cluster; it never produces anything. */
    conf = rd_kafka_conf_new();
    /* Quiet the "no bootstrap.servers" notice of the owning handle. */
    rd_kafka_conf_set(conf, "log_level", debug ? "7" : "4", errstr,
                      sizeof(errstr));
    if (debug && rd_kafka_conf_set(conf, "debug", debug, errstr,
                                   sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kp_mock: %s\n", errstr);
        return 1;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kp_mock: rd_kafka_new: %s\n", errstr);
        return 1;
    }
    mc = rd_kafka_mock_cluster_new(rk, (int)brokers);
    if (!mc) {
        fprintf(stderr, "kp_mock: cannot create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    for (i = 0; i < topic_cnt; i++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
            mc, topics[i].name, topics[i].partitions, topics[i].rf);

        if (err) {
            fprintf(stderr, "kp_mock: create topic %s: %s\n", topics[i].name,
                    rd_kafka_err2str(err));
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }

    printf("BOOTSTRAP %s\n", rd_kafka_mock_cluster_bootstraps(mc));
    printf("READY\n");
    fflush(stdout);

    while (getline(&line, &cap, stdin) != -1) {
        if (!run_command(mc, line)) {
            break;
        }
    }
    free(line);

    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
