/*
 * check_conf.c - unit tests for kp_conf: defaults, type and unknown-key
 * errors with their key paths, parse errors with line:column, the
 * idempotence and listener rules, -X overrides of every type, the -t
 * round trip, topic inheritance, the restart diff and reference counting;
 * this wave's keys (security, credentials and redaction, address_map,
 * http, spool, the isolation keys, listener owner/group/headers/framing/
 * receipts), the -X listener index rule, the topic-name rule, host:port,
 * the stats rendering and the host checks.
 */
#include "kp_compress.h"
#include "kp_conf.h"

#include <check.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_buf.h"

#include "kp_log.h"

#define MIN_CONF "{\"brokers\": [\"k1:9092\"]}"

static struct kp_conf *load_ov(const char *json, char *const *ov, size_t n,
                               struct kp_conf_errors *errs)
{
    return kp_conf_load_buf((const uint8_t *)json, strlen(json), ov, n, errs);
}

static struct kp_conf *load(const char *json, struct kp_conf_errors *errs)
{
    return load_ov(json, NULL, 0, errs);
}

/* Loads a configuration that must be valid; prints the errors if not. */
static struct kp_conf *load_ok_ov(const char *json, char *const *ov, size_t n)
{
    struct kp_conf_errors errs = {0};
    struct kp_conf *c = load_ov(json, ov, n, &errs);
    for (size_t i = 0; i < errs.cnt; i++) {
        fprintf(stderr, "unexpected: %s\n", errs.msgs[i]);
    }
    ck_assert_uint_eq(errs.cnt, 0);
    ck_assert_ptr_nonnull(c);
    kp_conf_errors_deinit(&errs);
    return c;
}

static struct kp_conf *load_ok(const char *json)
{
    return load_ok_ov(json, NULL, 0);
}

static void dump_errors(const struct kp_conf_errors *errs)
{
    for (size_t i = 0; i < errs->cnt; i++) {
        fprintf(stderr, "  error: %s\n", errs->msgs[i]);
    }
}

/* Whether some message is exactly msg. */
static bool has_error(const struct kp_conf_errors *errs, const char *msg)
{
    for (size_t i = 0; i < errs->cnt; i++) {
        if (strcmp(errs->msgs[i], msg) == 0) {
            return true;
        }
    }
    dump_errors(errs);
    fprintf(stderr, "  missing: %s\n", msg);
    return false;
}

/* Whether some message starts with prefix. */
static bool has_error_prefix(const struct kp_conf_errors *errs,
                             const char *prefix)
{
    for (size_t i = 0; i < errs->cnt; i++) {
        if (strncmp(errs->msgs[i], prefix, strlen(prefix)) == 0) {
            return true;
        }
    }
    dump_errors(errs);
    fprintf(stderr, "  missing prefix: %s\n", prefix);
    return false;
}

/* Loads json (with overrides) expecting failure; checks each prefix. */
static void expect_errors_ov(const char *json, char *const *ov, size_t n,
                             const char *const *prefixes, size_t cnt)
{
    struct kp_conf_errors errs = {0};
    struct kp_conf *c = load_ov(json, ov, n, &errs);
    ck_assert_ptr_null(c);
    for (size_t i = 0; i < cnt; i++) {
        ck_assert_msg(has_error_prefix(&errs, prefixes[i]), "no error: %s",
                      prefixes[i]);
    }
    kp_conf_errors_deinit(&errs);
}

static void expect_error(const char *json, const char *prefix)
{
    expect_errors_ov(json, NULL, 0, &prefix, 1);
}

static void expect_ov_error(const char *json, const char *ov,
                            const char *prefix)
{
    char *ovs[1] = {(char *)ov};
    expect_errors_ov(json, ovs, 1, &prefix, 1);
}

/* ------------------------------------------------------------------ */

START_TEST(test_names_tables)
{
    ck_assert_str_eq(kp_format_names[KP_FMT_VALUE], "value");
    ck_assert_str_eq(kp_format_names[KP_FMT_KEY_VALUE], "key,value");
    ck_assert_str_eq(kp_format_names[KP_FMT_TOPIC_VALUE], "topic,value");
    ck_assert_str_eq(kp_format_names[KP_FMT_TOPIC_KEY_VALUE],
                     "topic,key,value");
    ck_assert_str_eq(kp_format_names[KP_FMT_JSON], "json");
    ck_assert_str_eq(kp_codec_names[KP_CODEC_NONE], "none");
    ck_assert_str_eq(kp_codec_names[KP_CODEC_GZIP], "gzip");
    ck_assert_str_eq(kp_codec_names[KP_CODEC_SNAPPY], "snappy");
    ck_assert_str_eq(kp_codec_names[KP_CODEC_LZ4], "lz4");
    ck_assert_str_eq(kp_codec_names[KP_CODEC_ZSTD], "zstd");
    ck_assert_str_eq(kp_partitioner_names[KP_PART_MURMUR2], "murmur2");
    ck_assert_str_eq(kp_partitioner_names[KP_PART_FNV1A], "fnv1a");
    ck_assert_str_eq(kp_partitioner_names[KP_PART_CRC32], "crc32");
}
END_TEST

START_TEST(test_defaults)
{
    struct kp_conf *c = load_ok(MIN_CONF);

    ck_assert_uint_eq(c->refs, 1);
    ck_assert_ptr_null(c->path);
    ck_assert_uint_eq(c->broker_cnt, 1);
    ck_assert_str_eq(c->brokers[0], "k1:9092");
    ck_assert_str_eq(c->client_id, "kproxyd");

    ck_assert_uint_eq(c->listener_cnt, 1);
    const struct kp_listener_conf *l = &c->listeners[0];
    ck_assert_str_eq(l->path, "/run/kproxyd/kproxyd.sock");
    ck_assert_int_eq(l->format, KP_FMT_TOPIC_VALUE);
    ck_assert_ptr_null(l->topic);
    ck_assert_uint_eq(l->separator, ' ');
    ck_assert_uint_eq(l->mode, 0660);
    ck_assert_ptr_null(l->allow_uids);
    ck_assert_uint_eq(l->allow_uid_cnt, 0);
    ck_assert_ptr_null(l->allow_gids);
    ck_assert_uint_eq(l->allow_gid_cnt, 0);
    ck_assert_ptr_null(l->allow_topics);
    ck_assert_uint_eq(l->allow_topic_cnt, 0);
    ck_assert(!l->peer_headers);

    const struct kp_producer_conf *p = &c->producer;
    ck_assert_int_eq(p->acks, -1);
    ck_assert(p->idempotence);
    ck_assert_int_eq(p->linger_ms, 5);
    ck_assert_int_eq(p->batch_bytes, 1048576);
    ck_assert_int_eq(p->batch_messages, 10000);
    ck_assert_int_eq(p->compression, KP_CODEC_NONE);
    ck_assert_int_eq(p->compression_level, KP_LEVEL_DEFAULT);
    ck_assert_int_eq(p->partitioner, KP_PART_MURMUR2);
    ck_assert_int_eq(p->max_in_flight, 5);
    ck_assert_int_eq(p->request_timeout_ms, 30000);
    ck_assert_int_eq(p->delivery_timeout_ms, 120000);
    ck_assert_int_eq(p->retry_backoff_ms, 100);
    ck_assert_int_eq(p->retry_backoff_max_ms, 1000);
    ck_assert_int_eq(p->message_max_bytes, 1048576);

    ck_assert_ptr_null(c->topics);
    ck_assert_uint_eq(c->topic_cnt, 0);
    ck_assert_int_eq(c->buffer_bytes, 268435456);
    ck_assert_int_eq(c->metadata_refresh_ms, 300000);
    ck_assert_str_eq(c->control, "/run/kproxyd/control.sock");
    ck_assert_ptr_null(c->dead_letter);
    ck_assert_int_eq(c->shutdown_timeout_ms, 30000);
    ck_assert_int_eq(c->max_clients, 10000);
    ck_assert(!c->auto_create_topics);
    ck_assert_int_eq(c->log_level, KP_LOG_INFO);

    ck_assert_ptr_eq(kp_conf_producer(c, "anything"), &c->producer);
    kp_conf_put(c);
}
END_TEST

START_TEST(test_every_key_parsed)
{
    struct kp_conf *c = load_ok(
        "{\"brokers\": [\"a:1\", \"[::1]:9093\", \"b.example:65535\"],"
        " \"client_id\": \"me\","
        " \"listeners\": ["
        "  {\"path\": \"/tmp/a.sock\", \"format\": \"value\","
        "   \"topic\": \"t1\", \"separator\": \"|\", \"mode\": \"0600\","
        "   \"allow_uids\": [0, 1000], \"allow_gids\": [],"
        "   \"allow_topics\": [\"t1\", \"logs.*\", \"*\"],"
        "   \"peer_headers\": true},"
        "  {\"path\": \"/tmp/b.sock\", \"format\": \"json\", \"mode\": 416}"
        " ],"
        " \"producer\": {\"acks\": 1, \"linger_ms\": 0, \"batch_bytes\": 100,"
        "  \"batch_messages\": 7, \"compression\": \"gzip\","
        "  \"compression_level\": 6, \"partitioner\": \"fnv1a\","
        "  \"max_in_flight\": 9, \"request_timeout_ms\": 1000,"
        "  \"delivery_timeout_ms\": 2000, \"retry_backoff_ms\": 10,"
        "  \"retry_backoff_max_ms\": 20, \"message_max_bytes\": 50},"
        " \"buffer_bytes\": 5000000000, \"metadata_refresh_ms\": 60000,"
        " \"control\": null, \"dead_letter\": \"/tmp/dl.jsonl\","
        " \"shutdown_timeout_ms\": 0, \"max_clients\": 3,"
        " \"auto_create_topics\": true, \"log_level\": \"debug\"}");

    ck_assert_uint_eq(c->broker_cnt, 3);
    ck_assert_str_eq(c->brokers[1], "[::1]:9093");
    ck_assert_str_eq(c->client_id, "me");
    ck_assert_uint_eq(c->listener_cnt, 2);
    const struct kp_listener_conf *l = &c->listeners[0];
    ck_assert_str_eq(l->path, "/tmp/a.sock");
    ck_assert_int_eq(l->format, KP_FMT_VALUE);
    ck_assert_str_eq(l->topic, "t1");
    ck_assert_uint_eq(l->separator, '|');
    ck_assert_uint_eq(l->mode, 0600);
    ck_assert_uint_eq(l->allow_uid_cnt, 2);
    ck_assert_uint_eq(l->allow_uids[0], 0);
    ck_assert_uint_eq(l->allow_uids[1], 1000);
    ck_assert_ptr_nonnull(l->allow_gids); /* empty list: nobody by gid */
    ck_assert_uint_eq(l->allow_gid_cnt, 0);
    ck_assert_uint_eq(l->allow_topic_cnt, 3);
    ck_assert_str_eq(l->allow_topics[1], "logs.*");
    ck_assert(l->peer_headers);
    ck_assert_int_eq(c->listeners[1].format, KP_FMT_JSON);
    ck_assert_uint_eq(c->listeners[1].mode, 0640);

    const struct kp_producer_conf *p = &c->producer;
    ck_assert_int_eq(p->acks, 1);
    ck_assert(!p->idempotence);
    ck_assert_int_eq(p->linger_ms, 0);
    ck_assert_int_eq(p->batch_bytes, 100);
    ck_assert_int_eq(p->batch_messages, 7);
    ck_assert_int_eq(p->compression, KP_CODEC_GZIP);
    ck_assert_int_eq(p->compression_level, 6);
    ck_assert_int_eq(p->partitioner, KP_PART_FNV1A);
    ck_assert_int_eq(p->max_in_flight, 9);
    ck_assert_int_eq(p->request_timeout_ms, 1000);
    ck_assert_int_eq(p->delivery_timeout_ms, 2000);
    ck_assert_int_eq(p->retry_backoff_ms, 10);
    ck_assert_int_eq(p->retry_backoff_max_ms, 20);
    ck_assert_int_eq(p->message_max_bytes, 50);

    ck_assert(c->buffer_bytes == 5000000000LL);
    ck_assert_int_eq(c->metadata_refresh_ms, 60000);
    ck_assert_ptr_null(c->control);
    ck_assert_str_eq(c->dead_letter, "/tmp/dl.jsonl");
    ck_assert_int_eq(c->shutdown_timeout_ms, 0);
    ck_assert_int_eq(c->max_clients, 3);
    ck_assert(c->auto_create_topics);
    ck_assert_int_eq(c->log_level, KP_LOG_DEBUG);
    kp_conf_put(c);
}
END_TEST

START_TEST(test_type_errors_name_key)
{
    struct kp_conf_errors errs = {0};
    struct kp_conf *c =
        load("{\"brokers\": \"k:1\", \"client_id\": 3,"
             " \"listeners\": [{\"path\": \"/a\", \"peer_headers\": 1,"
             "   \"allow_uids\": [\"root\"], \"mode\": true}, 7],"
             " \"producer\": {\"linger_ms\": \"5\", \"compression\": 4,"
             "   \"acks\": true, \"compression_level\": \"high\"},"
             " \"topics\": {\"t\": {\"batch_bytes\": 1.5}, \"u\": []},"
             " \"buffer_bytes\": \"big\", \"control\": 5, \"log_level\": 1,"
             " \"auto_create_topics\": \"yes\"}",
             &errs);
    ck_assert_ptr_null(c);
    ck_assert(has_error(&errs, "brokers: expected an array, got string"));
    ck_assert(has_error(&errs, "client_id: expected a string, got integer"));
    ck_assert(has_error(&errs, "listeners[0].peer_headers: expected a "
                               "boolean, got integer"));
    ck_assert(has_error(&errs, "listeners[0].allow_uids[0]: expected an "
                               "integer, got string"));
    ck_assert(has_error_prefix(&errs, "listeners[0].mode: expected "));
    ck_assert(has_error(&errs, "listeners[1]: expected an object, got "
                               "integer"));
    ck_assert(has_error(&errs, "producer.linger_ms: expected an integer, "
                               "got string"));
    ck_assert(has_error(&errs, "producer.compression: expected a string, "
                               "got integer"));
    ck_assert(has_error_prefix(&errs, "producer.acks: expected "));
    ck_assert(has_error_prefix(&errs, "producer.compression_level: "));
    ck_assert(has_error(&errs, "topics.t.batch_bytes: expected an integer, "
                               "got real"));
    ck_assert(has_error(&errs, "topics.u: expected an object, got array"));
    ck_assert(has_error(&errs, "buffer_bytes: expected an integer, got "
                               "string"));
    ck_assert(has_error(&errs, "control: expected a string or null, got "
                               "integer"));
    ck_assert(has_error(&errs, "log_level: expected a string, got integer"));
    ck_assert(has_error(&errs, "auto_create_topics: expected a boolean, got "
                               "string"));
    kp_conf_errors_deinit(&errs);
}
END_TEST

START_TEST(test_value_errors_name_key)
{
    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"compression\":"
                 " \"brotli\"}}",
                 "producer.compression: \"brotli\" is not one of \"none\", "
                 "\"gzip\", \"snappy\", \"lz4\", \"zstd\"");
    expect_error("{\"brokers\": [\"k:1\"], \"log_level\": \"trace\"}",
                 "log_level: \"trace\" is not one of");
    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"acks\": 2}}",
                 "producer.acks: expected \"all\"");
    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"batch_bytes\": 0}}",
                 "producer.batch_bytes: must be at least 1, got 0");
    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"batch_messages\":"
                 " 0}}",
                 "producer.batch_messages: must be at least 1");
    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"linger_ms\": -1}}",
                 "producer.linger_ms: must be at least 0, got -1");
    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"linger_ms\":"
                 " 4294967296}}",
                 "producer.linger_ms: ");
    expect_error(
        "{\"brokers\": [\"k:1\"], \"producer\": {\"message_max_bytes\":"
        " 0}}",
        "producer.message_max_bytes: must be at least 1");
    expect_error("{\"brokers\": [\"k:1\"], \"buffer_bytes\": 1000}",
                 "buffer_bytes: must be at least message_max_bytes (1048576)");
    expect_error("{\"brokers\": [\"k:1\"], \"topics\": {\"big\":"
                 " {\"message_max_bytes\": 300000000}}}",
                 "buffer_bytes: must be at least message_max_bytes "
                 "(300000000)");
    expect_error("{\"brokers\": [\"k:1\"], \"producer\":"
                 " {\"request_timeout_ms\": 200000}}",
                 "producer.delivery_timeout_ms: must be at least linger_ms + "
                 "request_timeout_ms");
    expect_error("{\"brokers\": [\"k:1\"], \"producer\":"
                 " {\"retry_backoff_ms\": 5000}}",
                 "producer.retry_backoff_max_ms: must be at least");
    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"compression\":"
                 " \"gzip\", \"compression_level\": 10}}",
                 "producer.compression_level: 10 is out of range for gzip");
    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"compression\":"
                 " \"zstd\", \"compression_level\": 23}}",
                 "producer.compression_level: 23 is out of range for zstd");
    expect_error("{\"brokers\": [\"k:1\"], \"max_clients\": 0}",
                 "max_clients: must be at least 1");
    expect_error("{\"brokers\": [\"k:1\"], \"control\": \"\"}",
                 "control: must not be empty");
    expect_error("{\"brokers\": [\"k:1\"], \"topics\": {\"bad name\": {}}}",
                 "topics.bad name: not a valid topic name");
    expect_error("{\"brokers\": [\"k:1\"], \"topics\": {\"..\": {}}}",
                 "topics...: not a valid topic name");
}
END_TEST

START_TEST(test_brokers)
{
    expect_error("{}", "brokers: required");
    expect_error("{\"brokers\": []}", "brokers: must not be empty");
    expect_error("{\"brokers\": [\"kafka\"]}",
                 "brokers[0]: \"kafka\" is not host:port");
    expect_error("{\"brokers\": [\"a:1\", \"k:0\"]}",
                 "brokers[1]: \"k:0\": the port must be 1..65535");
    expect_error("{\"brokers\": [\"k:65536\"]}", "brokers[0]: \"k:65536\"");
    expect_error("{\"brokers\": [\"k:9x\"]}", "brokers[0]: \"k:9x\"");
    expect_error("{\"brokers\": [\"k:\"]}", "brokers[0]: \"k:\"");
    expect_error("{\"brokers\": [\":9092\"]}",
                 "brokers[0]: \":9092\" has an empty host");
    expect_error("{\"brokers\": [\"::1:9092\"]}",
                 "brokers[0]: \"::1:9092\": an IPv6 address needs brackets");
    expect_error("{\"brokers\": [\"[::1]9092\"]}", "brokers[0]: ");
    expect_error("{\"brokers\": [\"a b:1\"]}", "brokers[0]: ");
    expect_error("{\"brokers\": [1]}",
                 "brokers[0]: expected a string, got integer");
    struct kp_conf *c = load_ok("{\"brokers\": [\"[fe80::1]:9092\"]}");
    ck_assert_str_eq(c->brokers[0], "[fe80::1]:9092");
    kp_conf_put(c);
}
END_TEST

START_TEST(test_unknown_keys)
{
    struct kp_conf_errors errs = {0};
    struct kp_conf *c =
        load("{\"brokers\": [\"k:1\"], \"brokerz\": 1,"
             " \"producer\": {\"lingr_ms\": 5},"
             " \"listeners\": [{\"path\": \"/a\"}, {\"path\": \"/b\","
             "   \"formt\": \"json\"}],"
             " \"topics\": {\"orders\": {\"compresion\": \"lz4\"}}}",
             &errs);
    ck_assert_ptr_null(c);
    /* every problem, not just the first */
    ck_assert_uint_eq(errs.cnt, 4);
    ck_assert(has_error(&errs, "brokerz: unknown key"));
    ck_assert(has_error(&errs, "producer.lingr_ms: unknown key"));
    ck_assert(has_error(&errs, "listeners[1].formt: unknown key"));
    ck_assert(has_error(&errs, "topics.orders.compresion: unknown key"));
    kp_conf_errors_deinit(&errs);
}
END_TEST

START_TEST(test_syntax_error_line_column)
{
    struct kp_conf_errors errs = {0};
    struct kp_conf *c = load("{\n  \"brokers\": [\"k:1\"],\n"
                             "  \"client_id\" \"x\"\n}",
                             &errs);
    ck_assert_ptr_null(c);
    ck_assert_uint_eq(errs.cnt, 1);
    int line = 0, col = 0;
    ck_assert_int_eq(sscanf(errs.msgs[0], "config:%d:%d:", &line, &col), 2);
    ck_assert_int_eq(line, 3);
    ck_assert_int_eq(col, 17);
    kp_conf_errors_deinit(&errs);

    /* duplicate keys are refused, with their position */
    c = load("{\"brokers\": [\"k:1\"],\n \"brokers\": [\"k:2\"]}", &errs);
    ck_assert_ptr_null(c);
    ck_assert_uint_eq(errs.cnt, 1);
    ck_assert_int_eq(sscanf(errs.msgs[0], "config:%d:%d:", &line, &col), 2);
    ck_assert_int_eq(line, 2);
    ck_assert(strstr(errs.msgs[0], "duplicate") != NULL);
    kp_conf_errors_deinit(&errs);

    expect_error("", "config:");
    expect_error("[1]", "configuration: expected an object at the top level, "
                        "got array");
    expect_error("{\"brokers\": [\"k:1\"]} x", "config:1:");
    expect_error("{\"brokers\": [\"k:1\"], \"client_id\": \"a\\u0000b\"}",
                 "config:1:");
}
END_TEST

START_TEST(test_load_file)
{
    char path[] = "/tmp/check_conf_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *text = "{\n  \"brokers\": [\"k:1\"],\n  \"client_id\": ,\n}\n";
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    struct kp_conf_errors errs = {0};
    ck_assert_ptr_null(kp_conf_load(path, NULL, 0, &errs));
    ck_assert_uint_eq(errs.cnt, 1);
    char want[64];
    snprintf(want, sizeof(want), "%s:3:", path);
    ck_assert_msg(strncmp(errs.msgs[0], want, strlen(want)) == 0, "%s",
                  errs.msgs[0]);
    kp_conf_errors_deinit(&errs);

    FILE *f = fopen(path, "w");
    fputs("{\"brokers\": [\"k:1\"], \"client_id\": \"file\"}", f);
    fclose(f);
    char *ov[] = {"client_id=override"};
    struct kp_conf *c = kp_conf_load(path, ov, 1, &errs);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(c->path, path);
    ck_assert_str_eq(c->client_id, "override");
    kp_conf_put(c);
    unlink(path);

    ck_assert_ptr_null(kp_conf_load(path, NULL, 0, &errs));
    ck_assert_uint_eq(errs.cnt, 1);
    ck_assert(strncmp(errs.msgs[0], path, strlen(path)) == 0);
    kp_conf_errors_deinit(&errs);

    /* no file: defaults and overrides only */
    char *ov2[] = {"brokers=k:1"};
    c = kp_conf_load(NULL, ov2, 1, NULL);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_null(c->path);
    kp_conf_put(c);
    ck_assert_ptr_null(kp_conf_load(NULL, NULL, 0, NULL));
}
END_TEST

START_TEST(test_sample_configs)
{
    struct kp_conf_errors errs = {0};
    struct kp_conf *c = kp_conf_load("conf/kproxyd.json", NULL, 0, &errs);
    dump_errors(&errs);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(c->broker_cnt, 2);
    ck_assert_str_eq(c->brokers[0], "kafka1:9092");
    ck_assert_str_eq(c->listeners[0].path, "/run/kproxyd/kproxyd.sock");
    ck_assert_uint_ge(c->topic_cnt, 1);
    /* the installed sample: loopback metrics, a dead letter in the
     * unit's StateDirectory */
    ck_assert_str_eq(c->http.listen, "127.0.0.1:9466");
    ck_assert_str_eq(c->dead_letter, "/var/lib/kproxyd/dead_letter.jsonl");
    kp_conf_put(c);

    char *ov[] = {"brokers=127.0.0.1:39092"};
    c = kp_conf_load("conf/kproxyd.dev.json", ov, 1, &errs);
    dump_errors(&errs);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(c->brokers[0], "127.0.0.1:39092");
    ck_assert_str_eq(c->listeners[0].path, "run/kproxyd.sock");
    ck_assert_int_eq(c->listeners[0].format, KP_FMT_TOPIC_VALUE);
    ck_assert_str_eq(c->control, "run/control.sock");
    ck_assert_str_eq(c->dead_letter, "run/dead_letter.jsonl");
    ck_assert_int_eq(c->producer.linger_ms, 5);
    ck_assert_int_eq(c->log_level, KP_LOG_INFO);
    kp_conf_put(c);
    ck_assert_uint_eq(errs.cnt, 0);
}
END_TEST

START_TEST(test_idempotence)
{
    struct kp_conf *c =
        load_ok("{\"brokers\": [\"k:1\"], \"producer\": {\"acks\": 1},"
                " \"topics\": {\"strong\": {\"acks\": \"all\"},"
                "   \"weak\": {\"acks\": 0}, \"same\": {\"linger_ms\": 1}}}");
    ck_assert_int_eq(c->producer.acks, 1);
    ck_assert(!c->producer.idempotence);
    /* a topic's default follows its own acks */
    ck_assert_int_eq(kp_conf_producer(c, "strong")->acks, -1);
    ck_assert(kp_conf_producer(c, "strong")->idempotence);
    ck_assert_int_eq(kp_conf_producer(c, "weak")->acks, 0);
    ck_assert(!kp_conf_producer(c, "weak")->idempotence);
    ck_assert(!kp_conf_producer(c, "same")->idempotence);
    kp_conf_put(c);

    c = load_ok("{\"brokers\": [\"k:1\"], \"producer\": {\"acks\": \"1\"}}");
    ck_assert_int_eq(c->producer.acks, 1);
    kp_conf_put(c);
    c = load_ok("{\"brokers\": [\"k:1\"], \"producer\": {\"acks\": -1}}");
    ck_assert_int_eq(c->producer.acks, -1);
    ck_assert(c->producer.idempotence);
    kp_conf_put(c);

    /* explicit false stays false, for topics too */
    c = load_ok("{\"brokers\": [\"k:1\"], \"producer\": {\"idempotence\":"
                " false, \"max_in_flight\": 20},"
                " \"topics\": {\"t\": {\"acks\": \"all\"}}}");
    ck_assert(!c->producer.idempotence);
    ck_assert_int_eq(c->producer.max_in_flight, 20);
    ck_assert(!kp_conf_producer(c, "t")->idempotence);
    kp_conf_put(c);

    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"acks\": 1,"
                 " \"idempotence\": true}}",
                 "producer.idempotence: requires acks \"all\" (acks is 1)");
    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"max_in_flight\":"
                 " 6}}",
                 "producer.max_in_flight: at most 5 with idempotence, got 6");
    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"idempotence\":"
                 " true, \"max_in_flight\": 10}}",
                 "producer.max_in_flight: at most 5 with idempotence");
    expect_error("{\"brokers\": [\"k:1\"], \"topics\": {\"t\": {\"acks\": 0,"
                 " \"idempotence\": true}}}",
                 "topics.t.idempotence: requires acks \"all\" (acks is 0)");
    /* an explicit producer.idempotence is inherited, and checked per topic */
    expect_error("{\"brokers\": [\"k:1\"], \"producer\": {\"idempotence\":"
                 " true}, \"topics\": {\"t\": {\"acks\": 1}}}",
                 "topics.t.idempotence: requires acks");
}
END_TEST

START_TEST(test_listener_rules)
{
    struct kp_conf *c = load_ok(
        "{\"brokers\": [\"k:1\"], \"listeners\": ["
        " {\"path\": \"/a\", \"format\": \"value\", \"topic\": \"logs\"},"
        " {\"path\": \"/b\", \"format\": \"key,value\", \"topic\": \"kv\","
        "  \"separator\": \"\\t\"},"
        " {\"path\": \"/c\", \"format\": \"json\"},"
        " {\"path\": \"/d\", \"format\": \"json\", \"topic\": \"j\"},"
        " {\"path\": \"/e\", \"format\": \"topic,key,value\"}]}");
    ck_assert_uint_eq(c->listener_cnt, 5);
    ck_assert_str_eq(c->listeners[0].topic, "logs");
    ck_assert_uint_eq(c->listeners[1].separator, '\t');
    ck_assert_ptr_null(c->listeners[2].topic);
    ck_assert_str_eq(c->listeners[3].topic, "j");
    ck_assert_int_eq(c->listeners[4].format, KP_FMT_TOPIC_KEY_VALUE);
    kp_conf_put(c);

    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"format\": \"value\"}]}",
                 "listeners[0].topic: required with format \"value\"");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"format\": \"json\"}, {\"path\": \"/b\","
                 " \"format\": \"key,value\"}]}",
                 "listeners[1].topic: required with format \"key,value\"");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"topic\": \"t\"}]}",
                 "listeners[0].topic: not allowed with format \"topic,value\"");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"format\": \"topic,key,value\", \"topic\": \"t\"}]}",
                 "listeners[0].topic: not allowed with format "
                 "\"topic,key,value\"");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"format\": \"value\", \"topic\": \"no way\"}]}",
                 "listeners[0].topic: \"no way\" is not a valid topic name");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"format\":"
                 " \"json\"}]}",
                 "listeners[0].path: required");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": []}",
                 "listeners: at least one listener is required");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\"},"
                 " {\"path\": \"/a\"}]}",
                 "listeners[1].path: \"/a\" is also listeners[0]");
    expect_error("{\"brokers\": [\"k:1\"], \"control\": \"/a\","
                 " \"listeners\": [{\"path\": \"/a\"}]}",
                 "control: \"/a\" is also listeners[0]");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"separator\": \"ab\"}]}",
                 "listeners[0].separator: expected one byte, got \"ab\"");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"separator\": \"\\n\"}]}",
                 "listeners[0].separator: cannot be");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"mode\": \"0868\"}]}",
                 "listeners[0].mode: \"0868\" is not an octal mode");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"mode\": 8192}]}",
                 "listeners[0].mode: 8192 is not a permission mode");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"allow_gids\": [-1]}]}",
                 "listeners[0].allow_gids[0]: -1 is not a valid id");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"allow_topics\": [\"ok\", \"b*d\"]}]}",
                 "listeners[0].allow_topics[1]: \"b*d\" is neither");
}
END_TEST

START_TEST(test_topic_inherits_producer)
{
    struct kp_conf *c =
        load_ok("{\"brokers\": [\"k:1\"],"
                " \"topics\": {\"orders\": {\"compression\": \"lz4\"},"
                "   \"my.dotted_topic-1\": {\"linger_ms\": 0}},"
                " \"producer\": {\"linger_ms\": 20, \"compression\": \"zstd\","
                "   \"compression_level\": 19, \"batch_messages\": 55}}");
    ck_assert_uint_eq(c->topic_cnt, 2);
    ck_assert_str_eq(c->topics[0].name, "orders");
    const struct kp_producer_conf *p = kp_conf_producer(c, "orders");
    ck_assert_ptr_eq(p, &c->topics[0].producer);
    ck_assert_int_eq(p->compression, KP_CODEC_LZ4);
    /* the producer section applies to what the topic does not set... */
    ck_assert_int_eq(p->linger_ms, 20);
    ck_assert_int_eq(p->batch_messages, 55);
    ck_assert(p->idempotence);
    /* ...but a level belongs to its codec: lz4 starts from its default */
    ck_assert_int_eq(p->compression_level, KP_LEVEL_DEFAULT);

    p = kp_conf_producer(c, "my.dotted_topic-1");
    ck_assert_int_eq(p->linger_ms, 0);
    ck_assert_int_eq(p->compression, KP_CODEC_ZSTD);
    ck_assert_int_eq(p->compression_level, 19);
    ck_assert_int_eq(p->batch_messages, 55);

    p = kp_conf_producer(c, "other");
    ck_assert_ptr_eq(p, &c->producer);
    ck_assert_int_eq(p->linger_ms, 20);
    kp_conf_put(c);
}
END_TEST

/* test_overrides' listeners, as its -X left them. */
static void check_overrides_listeners(const struct kp_conf *c)
{
    ck_assert_uint_eq(c->listener_cnt, 2);
    const struct kp_listener_conf *l = &c->listeners[0];
    ck_assert_str_eq(l->path, "/tmp/x.sock");
    ck_assert_int_eq(l->format, KP_FMT_TOPIC_VALUE);
    ck_assert_uint_eq(l->allow_uid_cnt, 2);
    ck_assert_uint_eq(l->allow_uids[0], 1000);
    ck_assert_uint_eq(l->allow_uids[1], 1001);
    ck_assert_uint_eq(l->allow_topic_cnt, 2);
    ck_assert_str_eq(l->allow_topics[1], "logs.*");
    ck_assert_uint_eq(l->mode, 0600);
    ck_assert_uint_eq(l->separator, '|');
    ck_assert(l->peer_headers);
    l = &c->listeners[1];
    ck_assert_str_eq(l->path, "/tmp/y.sock");
    ck_assert_int_eq(l->format, KP_FMT_VALUE);
    ck_assert_str_eq(l->topic, "fixed");
    ck_assert_ptr_nonnull(l->allow_gids);
    ck_assert_uint_eq(l->allow_gid_cnt, 0);
}

START_TEST(test_overrides)
{
    char *ov[] = {
        "producer.linger_ms=20",
        "brokers=127.0.0.1:9092, 127.0.0.1:9093",
        "buffer_bytes=6000000000",
        "auto_create_topics=true",
        "client_id=cli",
        "control=null",
        "dead_letter=/tmp/dl",
        "log_level=debug",
        "producer.acks=1",
        "producer.idempotence=off",
        "producer.compression=zstd",
        "producer.compression_level=7",
        "producer.partitioner=crc32",
        "topics.orders.compression=gzip",
        "topics.orders.linger_ms=3",
        "topics.a.b.c.acks=all",
        "listeners[0].path=/tmp/x.sock",
        "listeners.0.allow_uids=1000,1001",
        "listeners[0].allow_topics=a,logs.*",
        "listeners[0].mode=0600",
        "listeners[0].separator=|",
        "listeners[0].peer_headers=1",
        "listeners[1].path=/tmp/y.sock",
        "listeners.1.format=value",
        "listeners.1.topic=fixed",
        "listeners.1.allow_gids=",
        "max_clients=5",
        "max_clients=6", /* in order: the last wins */
    };
    struct kp_conf *c = load_ok_ov(
        "{\"brokers\": [\"file:1\"], \"topics\": {\"orders\": {\"acks\": 1,"
        " \"idempotence\": false}}, \"listeners\": [{\"path\": \"/p0\"},"
        " {\"path\": \"/p1\", \"format\": \"json\"}]}",
        ov, KP_ARRAY_LEN(ov));

    ck_assert_int_eq(c->producer.linger_ms, 20);
    ck_assert_uint_eq(c->broker_cnt, 2);
    ck_assert_str_eq(c->brokers[0], "127.0.0.1:9092");
    ck_assert_str_eq(c->brokers[1], "127.0.0.1:9093");
    ck_assert(c->buffer_bytes == 6000000000LL);
    ck_assert(c->auto_create_topics);
    ck_assert_str_eq(c->client_id, "cli");
    ck_assert_ptr_null(c->control);
    ck_assert_str_eq(c->dead_letter, "/tmp/dl");
    ck_assert_int_eq(c->log_level, KP_LOG_DEBUG);
    ck_assert_int_eq(c->producer.acks, 1);
    ck_assert(!c->producer.idempotence);
    ck_assert_int_eq(c->producer.compression, KP_CODEC_ZSTD);
    ck_assert_int_eq(c->producer.compression_level, 7);
    ck_assert_int_eq(c->producer.partitioner, KP_PART_CRC32);

    ck_assert_uint_eq(c->topic_cnt, 2);
    const struct kp_producer_conf *p = kp_conf_producer(c, "orders");
    ck_assert_int_eq(p->compression, KP_CODEC_GZIP); /* merged into file's */
    ck_assert_int_eq(p->linger_ms, 3);
    ck_assert_int_eq(p->acks, 1);
    p = kp_conf_producer(c, "a.b.c");
    ck_assert_ptr_ne(p, &c->producer);
    ck_assert_int_eq(p->acks, -1);
    ck_assert(!p->idempotence); /* explicit producer.idempotence inherited */
    ck_assert_int_eq(p->linger_ms, 20);

    check_overrides_listeners(c);
    ck_assert_int_eq(c->max_clients, 6);
    kp_conf_put(c);
}
END_TEST

START_TEST(test_overrides_null_and_acks)
{
    struct kp_conf *c;
    /* null for nullable keys, and back */
    char *ov2[] = {"dead_letter=/x", "dead_letter=null",
                   "listeners[0].allow_uids=null", "control=/c.sock",
                   "producer.compression_level=default"};
    c = load_ok_ov("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                   " \"allow_uids\": [5]}], \"producer\":"
                   " {\"compression_level\": 3}}",
                   ov2, KP_ARRAY_LEN(ov2));
    ck_assert_ptr_null(c->dead_letter);
    ck_assert_ptr_null(c->listeners[0].allow_uids);
    ck_assert_str_eq(c->listeners[0].path, "/a");
    ck_assert_str_eq(c->control, "/c.sock");
    ck_assert_int_eq(c->producer.compression_level, KP_LEVEL_DEFAULT);
    kp_conf_put(c);

    /* acks as -X gives it */
    char *ov3[] = {"producer.acks=0"};
    c = load_ok_ov(MIN_CONF, ov3, 1);
    ck_assert_int_eq(c->producer.acks, 0);
    ck_assert(!c->producer.idempotence);
    kp_conf_put(c);
    char *ov4[] = {"producer.acks=1", "producer.acks=all"};
    c = load_ok_ov(MIN_CONF, ov4, 2);
    ck_assert_int_eq(c->producer.acks, -1);
    ck_assert(c->producer.idempotence);
    kp_conf_put(c);
}
END_TEST

START_TEST(test_override_errors)
{
    expect_ov_error(MIN_CONF, "producer.foo=1", "producer.foo: unknown key");
    expect_ov_error(MIN_CONF, "foo=1", "foo: unknown key");
    expect_ov_error(MIN_CONF, "brokers.x=1", "brokers.x: unknown key");
    expect_ov_error(MIN_CONF, "listeners[0].formt=json",
                    "listeners[0].formt: unknown key");
    expect_ov_error(MIN_CONF, "topics.orders.bogus=1",
                    "topics.orders.bogus: unknown key");
    expect_ov_error(MIN_CONF, "topics.orders=1", "topics.orders: unknown key");
    expect_ov_error(MIN_CONF, "listeners[x].path=/a",
                    "listeners[x].path: unknown key");
    expect_ov_error(MIN_CONF, "producer.linger_ms=abc",
                    "producer.linger_ms: expected an integer, got \"abc\"");
    expect_ov_error(MIN_CONF, "producer.linger_ms=-5",
                    "producer.linger_ms: must be at least 0, got -5");
    expect_ov_error(MIN_CONF, "max_clients=",
                    "max_clients: expected an "
                    "integer");
    expect_ov_error(MIN_CONF, "auto_create_topics=maybe",
                    "auto_create_topics: expected a boolean, got \"maybe\"");
    expect_ov_error(MIN_CONF, "log_level=loud",
                    "log_level: \"loud\" is not one of");
    expect_ov_error(MIN_CONF, "producer.acks=most",
                    "producer.acks: expected \"all\"");
    expect_ov_error(MIN_CONF, "listeners[0].allow_uids=1,x",
                    "listeners[0].allow_uids[1]: expected an integer, got "
                    "\"x\"");
    expect_ov_error(MIN_CONF, "brokers=a:1,nope", "brokers[1]: \"nope\"");
    expect_ov_error(MIN_CONF, "brokers=", "brokers: must not be empty");
    expect_ov_error(MIN_CONF, "listeners[2].path=/x",
                    "listeners[2]: no such listener (there is 1;");
    expect_ov_error(MIN_CONF, "topics.bad name.linger_ms=1",
                    "topics.bad name: not a valid topic name");
    expect_ov_error(MIN_CONF, "producer=1", "producer: cannot be set whole");
    expect_ov_error(MIN_CONF, "listeners=/a", "listeners: cannot be set");
    expect_ov_error(MIN_CONF, "linger_ms", "-X linger_ms: expected KEY=VALUE");
    expect_ov_error(MIN_CONF, "=5", "-X =5: expected KEY=VALUE");
    /* a file error and an override error are both reported */
    const char *both[] = {"client_id: expected a string", "bogus: unknown key"};
    char *ov[] = {"bogus=1"};
    expect_errors_ov("{\"brokers\": [\"k:1\"], \"client_id\": 1}", ov, 1, both,
                     2);
    /* overrides are checked even when the file does not parse */
    const char *both2[] = {"config:1:", "bogus: unknown key"};
    expect_errors_ov("{", ov, 1, both2, 2);
}
END_TEST

/* test_round_trip's producer section, after the trip. */
static void check_round_trip_producer(const struct kp_producer_conf *p)
{
    ck_assert_int_eq(p->acks, 0);
    ck_assert(!p->idempotence);
    ck_assert_int_eq(p->linger_ms, 7);
    ck_assert_int_eq(p->batch_bytes, 999);
    ck_assert_int_eq(p->batch_messages, 11);
    ck_assert_int_eq(p->compression, KP_CODEC_ZSTD);
    ck_assert_int_eq(p->compression_level, -3);
    ck_assert_int_eq(p->partitioner, KP_PART_CRC32);
    ck_assert_int_eq(p->max_in_flight, 12);
    ck_assert_int_eq(p->request_timeout_ms, 4000);
    ck_assert_int_eq(p->delivery_timeout_ms, 9000);
    ck_assert_int_eq(p->retry_backoff_ms, 3);
    ck_assert_int_eq(p->retry_backoff_max_ms, 300);
    ck_assert_int_eq(p->message_max_bytes, 77);
}

START_TEST(test_round_trip)
{
    const char *full =
        "{\"brokers\": [\"a:1\", \"[::1]:2\"], \"client_id\": \"rt\","
        " \"listeners\": ["
        "  {\"path\": \"/tmp/a.sock\", \"format\": \"key,value\","
        "   \"topic\": \"kv\", \"separator\": \"\\t\", \"mode\": \"0640\","
        "   \"allow_uids\": [1, 2], \"allow_gids\": [],"
        "   \"allow_topics\": [\"kv\", \"p*\"], \"peer_headers\": true},"
        "  {\"path\": \"/tmp/b.sock\", \"format\": \"json\"}],"
        " \"producer\": {\"acks\": 0, \"linger_ms\": 7, \"batch_bytes\": 999,"
        "  \"batch_messages\": 11, \"compression\": \"zstd\","
        "  \"compression_level\": -3, \"partitioner\": \"crc32\","
        "  \"max_in_flight\": 12, \"request_timeout_ms\": 4000,"
        "  \"delivery_timeout_ms\": 9000, \"retry_backoff_ms\": 3,"
        "  \"retry_backoff_max_ms\": 300, \"message_max_bytes\": 77},"
        " \"topics\": {\"t1\": {\"acks\": \"all\", \"max_in_flight\": 2},"
        "  \"t.2\": {\"compression\": \"gzip\"}},"
        " \"buffer_bytes\": 12345678901, \"metadata_refresh_ms\": 1234,"
        " \"control\": null, \"dead_letter\": \"/tmp/dl\","
        " \"shutdown_timeout_ms\": 5, \"max_clients\": 8,"
        " \"auto_create_topics\": true, \"log_level\": \"error\"}";
    struct kp_conf *c1 = load_ok(full);
    char *j1 = kp_conf_to_json(c1);
    struct kp_conf *c2 = load_ok(j1);
    char *j2 = kp_conf_to_json(c2);
    ck_assert_str_eq(j1, j2);
    ck_assert_int_eq(kp_conf_restart_diff(c1, c2), 0);

    /* every non-default value survived the trip */
    ck_assert_uint_eq(c2->broker_cnt, 2);
    ck_assert_str_eq(c2->brokers[1], "[::1]:2");
    ck_assert_str_eq(c2->client_id, "rt");
    ck_assert_uint_eq(c2->listener_cnt, 2);
    const struct kp_listener_conf *l = &c2->listeners[0];
    ck_assert_str_eq(l->path, "/tmp/a.sock");
    ck_assert_int_eq(l->format, KP_FMT_KEY_VALUE);
    ck_assert_str_eq(l->topic, "kv");
    ck_assert_uint_eq(l->separator, '\t');
    ck_assert_uint_eq(l->mode, 0640);
    ck_assert_uint_eq(l->allow_uid_cnt, 2);
    ck_assert_uint_eq(l->allow_uids[1], 2);
    ck_assert_ptr_nonnull(l->allow_gids);
    ck_assert_uint_eq(l->allow_gid_cnt, 0);
    ck_assert_uint_eq(l->allow_topic_cnt, 2);
    ck_assert_str_eq(l->allow_topics[1], "p*");
    ck_assert(l->peer_headers);
    ck_assert_ptr_null(c2->listeners[1].allow_uids);
    ck_assert_ptr_null(c2->listeners[1].allow_topics);
    ck_assert_ptr_null(c2->listeners[1].topic);
    check_round_trip_producer(&c2->producer);
    ck_assert_uint_eq(c2->topic_cnt, 2);
    ck_assert_str_eq(c2->topics[0].name, "t1");
    ck_assert_int_eq(c2->topics[0].producer.acks, -1);
    ck_assert(c2->topics[0].producer.idempotence);
    ck_assert_int_eq(c2->topics[0].producer.max_in_flight, 2);
    ck_assert_int_eq(c2->topics[0].producer.linger_ms, 7);
    ck_assert_str_eq(c2->topics[1].name, "t.2");
    ck_assert_int_eq(c2->topics[1].producer.compression, KP_CODEC_GZIP);
    ck_assert_int_eq(c2->topics[1].producer.compression_level,
                     KP_LEVEL_DEFAULT);
    ck_assert(c2->buffer_bytes == 12345678901LL);
    ck_assert_int_eq(c2->metadata_refresh_ms, 1234);
    ck_assert_ptr_null(c2->control);
    ck_assert_str_eq(c2->dead_letter, "/tmp/dl");
    ck_assert_int_eq(c2->shutdown_timeout_ms, 5);
    ck_assert_int_eq(c2->max_clients, 8);
    ck_assert(c2->auto_create_topics);
    ck_assert_int_eq(c2->log_level, KP_LOG_ERROR);

    free(j1);
    free(j2);
    kp_conf_put(c1);
    kp_conf_put(c2);
}
END_TEST

START_TEST(test_to_json_defaults)
{
    struct kp_conf *c = load_ok(MIN_CONF);
    char *j = kp_conf_to_json(c);
    /* key order is the table's (SPEC.md's), defaults written out */
    const char *order[] = {"\"brokers\"",
                           "\"client_id\"",
                           "\"listeners\"",
                           "\"path\"",
                           "\"format\"",
                           "\"peer_headers\"",
                           "\"producer\"",
                           "\"acks\"",
                           "\"idempotence\"",
                           "\"message_max_bytes\"",
                           "\"topics\"",
                           "\"buffer_bytes\"",
                           "\"metadata_refresh_ms\"",
                           "\"control\"",
                           "\"dead_letter\"",
                           "\"shutdown_timeout_ms\"",
                           "\"max_clients\"",
                           "\"auto_create_topics\"",
                           "\"log_level\""};
    const char *at = j;
    for (size_t i = 0; i < KP_ARRAY_LEN(order); i++) {
        const char *q = strstr(at, order[i]);
        ck_assert_msg(q != NULL, "%s missing or out of order in %s", order[i],
                      j);
        at = q;
    }
    ck_assert(strstr(j, "\"acks\": \"all\"") != NULL);
    ck_assert(strstr(j, "\"mode\": \"0660\"") != NULL);
    ck_assert(strstr(j, "\"separator\": \" \"") != NULL);
    ck_assert(strstr(j, "\"compression_level\": null") != NULL);
    ck_assert(strstr(j, "\"dead_letter\": null") != NULL);
    ck_assert(strstr(j, "\"log_level\": \"info\"") != NULL);
    ck_assert(strstr(j, "\n  \"client_id\": \"kproxyd\"") != NULL);

    struct kp_conf *c2 = load_ok(j);
    char *j2 = kp_conf_to_json(c2);
    ck_assert_str_eq(j, j2);
    free(j);
    free(j2);
    kp_conf_put(c);
    kp_conf_put(c2);
}
END_TEST

START_TEST(test_restart_diff)
{
    struct kp_conf *a = load_ok(MIN_CONF);
    char *ov[] = {"producer.linger_ms=50", "topics.t.acks=0", "log_level=debug",
                  "buffer_bytes=999999999"};
    struct kp_conf *b = load_ok_ov(MIN_CONF, ov, KP_ARRAY_LEN(ov));
    /* everything that changed is live */
    ck_assert_int_eq(kp_conf_restart_diff(a, b), 0);
    kp_conf_put(b);

    char *ov2[] = {"brokers=k1:9092,k2:9092", "listeners[0].mode=0600",
                   "control=null", "client_id=x", "producer.linger_ms=1"};
    b = load_ok_ov(MIN_CONF, ov2, KP_ARRAY_LEN(ov2));
    ck_assert_int_eq(kp_conf_restart_diff(a, b), 4);
    kp_conf_put(b);

    char *ov3[] = {"dead_letter=/d", "max_clients=1", "metadata_refresh_ms=1",
                   "auto_create_topics=true", "listeners[0].allow_uids=1"};
    b = load_ok_ov(MIN_CONF, ov3, KP_ARRAY_LEN(ov3));
    ck_assert_int_eq(kp_conf_restart_diff(a, b), 5);
    kp_conf_put(b);
    kp_conf_put(a);
}
END_TEST

START_TEST(test_refcount)
{
    struct kp_conf *c =
        load_ok("{\"brokers\": [\"k:1\"], \"topics\": {\"t\": {}},"
                " \"listeners\": [{\"path\": \"/a\", \"allow_uids\": [1],"
                " \"allow_topics\": [\"x\"]}]}");
    ck_assert_uint_eq(c->refs, 1);
    ck_assert_ptr_eq(kp_conf_get(c), c);
    ck_assert_uint_eq(c->refs, 2);
    kp_conf_put(c);
    ck_assert_uint_eq(c->refs, 1);
    ck_assert_str_eq(c->listeners[0].path, "/a"); /* still alive */
    kp_conf_put(c); /* frees: LeakSanitizer checks nothing is left */
    kp_conf_put(NULL);
}
END_TEST

START_TEST(test_errors_accumulate)
{
    struct kp_conf_errors errs = {0};
    kp_conf_errors_add(&errs, "first %d", 1);
    struct kp_conf *c =
        load("{\"brokers\": [\"k:1\"], \"x\": 1, \"y\": 2}", &errs);
    ck_assert_ptr_null(c);
    ck_assert_uint_eq(errs.cnt, 3);
    ck_assert_str_eq(errs.msgs[0], "first 1");
    ck_assert(has_error(&errs, "x: unknown key"));
    ck_assert(has_error(&errs, "y: unknown key"));
    kp_conf_errors_deinit(&errs);
    ck_assert_uint_eq(errs.cnt, 0);
    ck_assert_ptr_null(errs.msgs);

    /* a valid load with a non-empty errs still succeeds */
    kp_conf_errors_add(&errs, "old");
    c = load(MIN_CONF, &errs);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(errs.cnt, 1);
    kp_conf_put(c);
    kp_conf_errors_deinit(&errs);
}
END_TEST

/* A codec this build lacks is a configuration error, not a failure of
 * every batch at run time. */
START_TEST(test_unavailable_codec)
{
    if (kp_codec_available(KP_CODEC_SNAPPY)) {
        return;
    }
    expect_error("{\"brokers\": [\"h:1\"],"
                 " \"producer\": {\"compression\": \"snappy\"}}",
                 "producer.compression: snappy is not available");
    expect_error("{\"brokers\": [\"h:1\"],"
                 " \"topics\": {\"t\": {\"compression\": \"snappy\"}}}",
                 "topics.t.compression: snappy is not available");
}
END_TEST

/* ------------------------------------------------------------------ */
/* This wave's keys                                                     */

/* A fresh directory under /tmp (removed by rm_tree). */
static void make_tmpdir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/check_conf_d_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void rm_tree(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Whether any message contains needle. */
static bool any_error_has(const struct kp_conf_errors *errs, const char *needle)
{
    for (size_t i = 0; i < errs->cnt; i++) {
        if (strstr(errs->msgs[i], needle)) {
            return true;
        }
    }
    return false;
}

START_TEST(test_new_names_tables)
{
    ck_assert_str_eq(kp_framing_names[KP_FRAMING_LINE], "line");
    ck_assert_str_eq(kp_framing_names[KP_FRAMING_LENGTH], "length");
    ck_assert_str_eq(kp_receipts_names[KP_RECEIPTS_NONE], "none");
    ck_assert_str_eq(kp_receipts_names[KP_RECEIPTS_EACH], "each");
    ck_assert_str_eq(kp_sec_protocol_names[KP_SEC_PLAINTEXT], "plaintext");
    ck_assert_str_eq(kp_sec_protocol_names[KP_SEC_SSL], "ssl");
    ck_assert_str_eq(kp_sec_protocol_names[KP_SEC_SASL_PLAINTEXT],
                     "sasl_plaintext");
    ck_assert_str_eq(kp_sec_protocol_names[KP_SEC_SASL_SSL], "sasl_ssl");
    ck_assert_str_eq(kp_sasl_mech_names[KP_SASL_PLAIN], "PLAIN");
    ck_assert_str_eq(kp_sasl_mech_names[KP_SASL_SCRAM_SHA_256],
                     "SCRAM-SHA-256");
    ck_assert_str_eq(kp_sasl_mech_names[KP_SASL_SCRAM_SHA_512],
                     "SCRAM-SHA-512");
    ck_assert_str_eq(kp_sasl_mech_names[KP_SASL_OAUTHBEARER], "OAUTHBEARER");
    ck_assert_str_eq(kp_spool_mode_names[KP_SPOOL_OVERFLOW], "overflow");
    ck_assert_str_eq(kp_spool_mode_names[KP_SPOOL_ALWAYS], "always");
}
END_TEST

START_TEST(test_new_defaults)
{
    struct kp_conf *c = load_ok(MIN_CONF);
    const struct kp_listener_conf *l = &c->listeners[0];
    ck_assert_ptr_null(l->owner);
    ck_assert_ptr_null(l->group);
    ck_assert_ptr_null(l->headers);
    ck_assert_uint_eq(l->header_cnt, 0);
    ck_assert_int_eq(l->framing, KP_FRAMING_LINE);
    ck_assert_int_eq(l->receipts, KP_RECEIPTS_NONE);

    ck_assert_ptr_nonnull(c->broker_addrs);
    ck_assert_str_eq(c->broker_addrs[0].host, "k1");
    ck_assert_int_eq(c->broker_addrs[0].port, 9092);

    const struct kp_security_conf *s = &c->security;
    ck_assert_int_eq(s->protocol, KP_SEC_PLAINTEXT);
    ck_assert_ptr_null(s->tls.ca_file);
    ck_assert_ptr_null(s->tls.ca_path);
    ck_assert_ptr_null(s->tls.cert_file);
    ck_assert_ptr_null(s->tls.key_file);
    ck_assert_ptr_null(s->tls.key_password_file);
    ck_assert(s->tls.verify);
    ck_assert_ptr_null(s->tls.server_name);
    ck_assert_int_eq(s->sasl.mechanism, KP_SASL_PLAIN);
    ck_assert_ptr_null(s->sasl.username);
    ck_assert_ptr_null(s->sasl.password);
    ck_assert_ptr_null(s->sasl.password_file);
    ck_assert_ptr_null(s->sasl.token_file);

    ck_assert_ptr_null(c->address_map);
    ck_assert_uint_eq(c->address_map_cnt, 0);
    ck_assert_int_eq(c->reconnect_backoff_max_ms, 10000);
    ck_assert_int_eq(c->metadata_max_wait_ms, 60000);
    ck_assert(c->topic_buffer_bytes == 268435456 / 4);
    ck_assert_int_eq(c->max_block_ms, 60000);
    ck_assert_int_eq(c->max_topics, 10000);
    ck_assert_int_eq(c->max_clients_per_uid, 1000);
    ck_assert(c->max_timestamp_skew_ms == 3600000);
    ck_assert_int_eq(c->topic_idle_ms, 600000);
    ck_assert(c->partition_metrics);
    ck_assert_ptr_null(c->http.listen);
    ck_assert_ptr_null(c->spool.dir);
    ck_assert(c->spool.max_bytes == 1073741824);
    ck_assert_int_eq(c->spool.mode, KP_SPOOL_OVERFLOW);
    ck_assert_int_eq(c->spool.fsync_ms, -1);
    kp_conf_put(c);

    /* topic_buffer_bytes follows buffer_bytes, but holds one message */
    c = load_ok("{\"brokers\": [\"k:1\"], \"buffer_bytes\": 8000000}");
    ck_assert(c->topic_buffer_bytes == 2000000);
    kp_conf_put(c);
    c = load_ok("{\"brokers\": [\"k:1\"], \"buffer_bytes\": 2000000}");
    ck_assert(c->topic_buffer_bytes == 1048576);
    kp_conf_put(c);
    c = load_ok("{\"brokers\": [\"k:1\"], \"buffer_bytes\": 1048576,"
                " \"topic_buffer_bytes\": null}");
    ck_assert(c->topic_buffer_bytes == 1048576);
    kp_conf_put(c);
}
END_TEST

#define NEW_KEYS                                                               \
    "{\"brokers\": [\"a:1\", \"[::1]:9093\"],"                                 \
    " \"listeners\": [{\"path\": \"/tmp/n.sock\", \"owner\": \"root\","        \
    "   \"group\": \"1000\", \"headers\": {\"source\": \"web\", \"env\": "     \
    "\"\"},"                                                                   \
    "   \"framing\": \"length\", \"receipts\": \"each\"}],"                    \
    " \"address_map\": {\"kafka1:9092\": \"127.0.0.1:19092\","                 \
    "   \"[fe80::1]:9093\": \"[::1]:19093\"},"                                 \
    " \"reconnect_backoff_max_ms\": 5000, \"metadata_max_wait_ms\": 7000,"     \
    " \"buffer_bytes\": 100000000, \"topic_buffer_bytes\": 5000000,"           \
    " \"max_block_ms\": 0, \"max_topics\": 3, \"max_clients_per_uid\": 4,"     \
    " \"max_timestamp_skew_ms\": 0, \"topic_idle_ms\": 1000,"                  \
    " \"partition_metrics\": false,"                                           \
    " \"http\": {\"listen\": \"127.0.0.1:9466\"},"                             \
    " \"spool\": {\"dir\": \"/var/lib/kproxyd/spool\", \"max_bytes\":"         \
    "   5000000, \"mode\": \"always\", \"fsync_ms\": 100}}"

START_TEST(test_new_keys_parsed)
{
    struct kp_conf *c = load_ok(NEW_KEYS);
    const struct kp_listener_conf *l = &c->listeners[0];
    ck_assert_str_eq(l->owner, "root");
    ck_assert_str_eq(l->group, "1000");
    ck_assert_uint_eq(l->header_cnt, 2);
    ck_assert_str_eq(l->headers[0].name, "source");
    ck_assert_str_eq(l->headers[0].value, "web");
    ck_assert_str_eq(l->headers[1].name, "env");
    ck_assert_str_eq(l->headers[1].value, "");
    ck_assert_int_eq(l->framing, KP_FRAMING_LENGTH);
    ck_assert_int_eq(l->receipts, KP_RECEIPTS_EACH);

    ck_assert_uint_eq(c->broker_cnt, 2);
    ck_assert_str_eq(c->broker_addrs[1].host, "::1");
    ck_assert_int_eq(c->broker_addrs[1].port, 9093);

    ck_assert_uint_eq(c->address_map_cnt, 2);
    ck_assert_str_eq(c->address_map[0].from, "kafka1:9092");
    ck_assert_str_eq(c->address_map[0].to.host, "127.0.0.1");
    ck_assert_int_eq(c->address_map[0].to.port, 19092);
    ck_assert_str_eq(c->address_map[1].to.host, "::1");
    ck_assert_int_eq(c->reconnect_backoff_max_ms, 5000);
    ck_assert_int_eq(c->metadata_max_wait_ms, 7000);
    ck_assert(c->topic_buffer_bytes == 5000000);
    ck_assert_int_eq(c->max_block_ms, 0);
    ck_assert_int_eq(c->max_topics, 3);
    ck_assert_int_eq(c->max_clients_per_uid, 4);
    ck_assert(c->max_timestamp_skew_ms == 0);
    ck_assert_int_eq(c->topic_idle_ms, 1000);
    ck_assert(!c->partition_metrics);
    ck_assert_str_eq(c->http.listen, "127.0.0.1:9466");
    ck_assert_str_eq(c->spool.dir, "/var/lib/kproxyd/spool");
    ck_assert(c->spool.max_bytes == 5000000);
    ck_assert_int_eq(c->spool.mode, KP_SPOOL_ALWAYS);
    ck_assert_int_eq(c->spool.fsync_ms, 100);

    /* address_map lookups: host without case, v6 without brackets */
    const struct kp_hostport *to = kp_conf_address_lookup(c, "KAFKA1", 9092);
    ck_assert_ptr_nonnull(to);
    ck_assert_int_eq(to->port, 19092);
    ck_assert_ptr_null(kp_conf_address_lookup(c, "kafka1", 9093));
    ck_assert_ptr_null(kp_conf_address_lookup(c, "kafka2", 9092));
    to = kp_conf_address_lookup(c, "fe80::1", 9093);
    ck_assert_ptr_nonnull(to);
    ck_assert_str_eq(to->host, "::1");
    kp_conf_put(c);

    /* null turns http and spool off again */
    c = load_ok("{\"brokers\": [\"k:1\"], \"http\": null, \"spool\": null}");
    ck_assert_ptr_null(c->http.listen);
    ck_assert_ptr_null(c->spool.dir);
    kp_conf_put(c);
    c = load_ok("{\"brokers\": [\"k:1\"], \"http\": {\"listen\": null},"
                " \"spool\": {\"dir\": null, \"fsync_ms\": null}}");
    ck_assert_ptr_null(c->http.listen);
    ck_assert_int_eq(c->spool.fsync_ms, -1);
    kp_conf_put(c);
}
END_TEST

START_TEST(test_new_keys_errors)
{
    const char *K = "{\"brokers\": [\"k:1\"], ";
    char buf[1024];
#define E(rest, want)                                                          \
    do {                                                                       \
        snprintf(buf, sizeof(buf), "%s%s}", K, rest);                          \
        expect_error(buf, want);                                               \
    } while (0)
    E("\"address_map\": []", "address_map: expected an object, got array");
    E("\"address_map\": {\"kafka1\": \"h:1\"}",
      "address_map: \"kafka1\" is not host:port");
    E("\"address_map\": {\"k:1\": \"h:0\"}",
      "address_map.k:1: \"h:0\": the port must be 1..65535");
    E("\"address_map\": {\"k:1\": 5}",
      "address_map.k:1: expected a string, got integer");
    E("\"http\": {\"listen\": \"9466\"}",
      "http.listen: \"9466\" is not host:port");
    E("\"http\": {}", "http.listen: required");
    E("\"http\": {\"listen\": \"\"}", "http.listen: must not be empty");
    E("\"http\": 1", "http: expected an object or null, got integer");
    E("\"http\": {\"listen\": null, \"port\": 1}", "http.port: unknown key");
    E("\"spool\": {\"max_bytes\": 5}", "spool.dir: required");
    E("\"spool\": {\"dir\": \"/s\", \"mode\": \"sometimes\"}",
      "spool.mode: \"sometimes\" is not one of \"overflow\", \"always\"");
    E("\"spool\": {\"dir\": \"/s\", \"max_bytes\": 0}",
      "spool.max_bytes: must be at least 1, got 0");
    E("\"spool\": {\"dir\": \"/s\", \"max_bytes\": 1000}",
      "spool.max_bytes: must be at least 4 x message_max_bytes (4 x 1048576 "
      "= 4194304), got 1000");
    /* 2 MiB for 1 MiB messages: writers could wait for room forever */
    E("\"spool\": {\"dir\": \"/s\", \"max_bytes\": 2097152}",
      "spool.max_bytes: must be at least 4 x message_max_bytes");
    E("\"topics\": {\"big\": {\"message_max_bytes\": 2000000}},"
      " \"spool\": {\"dir\": \"/s\", \"max_bytes\": 7999999}",
      "spool.max_bytes: must be at least 4 x message_max_bytes (4 x 2000000");
    E("\"spool\": {\"dir\": \"/s\", \"fsync_ms\": -1}",
      "spool.fsync_ms: must be at least 0, got -1");
    E("\"spool\": {\"dir\": \"/s\", \"fsync_ms\": \"1\"}",
      "spool.fsync_ms: expected an integer or null, got string");
    E("\"topic_buffer_bytes\": 300000000",
      "topic_buffer_bytes: must be at most buffer_bytes (268435456)");
    E("\"topic_buffer_bytes\": 1000",
      "topic_buffer_bytes: must be at least message_max_bytes (1048576)");
    E("\"topic_buffer_bytes\": 0", "topic_buffer_bytes: 0 is out of range");
    E("\"max_timestamp_skew_ms\": -1",
      "max_timestamp_skew_ms: -1 is out of range 0..");
    E("\"max_block_ms\": -1", "max_block_ms: must be at least 0, got -1");
    E("\"max_topics\": 0", "max_topics: must be at least 1, got 0");
    E("\"max_clients_per_uid\": 0", "max_clients_per_uid: must be at least 1");
    E("\"topic_idle_ms\": 0", "topic_idle_ms: must be at least 1");
    E("\"metadata_max_wait_ms\": 0", "metadata_max_wait_ms: must be at least");
    E("\"reconnect_backoff_max_ms\": 50",
      "reconnect_backoff_max_ms: must be at least producer.retry_backoff_ms "
      "(100), got 50");
    E("\"partition_metrics\": \"yes\"",
      "partition_metrics: expected a boolean, got string");
    E("\"buffer_bytes\": 1099511627777",
      "buffer_bytes: 1099511627777 is out of range 1..1099511627776");
    E("\"listeners\": [{\"path\": \"/a\", \"headers\": [\"x\"]}]",
      "listeners[0].headers: expected an object of strings, got array");
    E("\"listeners\": [{\"path\": \"/a\", \"headers\": {\"x\": 1}}]",
      "listeners[0].headers.x: expected a string, got integer");
    E("\"listeners\": [{\"path\": \"/a\", \"headers\": {\"\": \"v\"}}]",
      "listeners[0].headers: a header name must not be empty");
    E("\"listeners\": [{\"path\": \"/a\", \"owner\": \"no body\"}]",
      "listeners[0].owner: \"no body\" is neither a name nor a number");
    E("\"listeners\": [{\"path\": \"/a\", \"group\": \"\"}]",
      "listeners[0].group: must not be empty");
    E("\"listeners\": [{\"path\": \"/a\", \"owner\": \"-1\"}]",
      "listeners[0].owner: \"-1\" is neither");
    E("\"listeners\": [{\"path\": \"/a\", \"framing\": \"bytes\"}]",
      "listeners[0].framing: \"bytes\" is not one of \"line\", \"length\"");
    E("\"listeners\": [{\"path\": \"/a\", \"receipts\": \"all\"}]",
      "listeners[0].receipts: \"all\" is not one of \"none\", \"each\"");
#undef E
}
END_TEST

/* Permission bits only: setuid, setgid and sticky are refused. */
START_TEST(test_listener_mode_bits)
{
    const char *bad[] = {"\"7777\"", "\"4660\"", "\"01777\"", "2048"};
    char buf[256];
    for (size_t i = 0; i < KP_ARRAY_LEN(bad); i++) {
        snprintf(buf, sizeof(buf),
                 "{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"mode\": %s}]}",
                 bad[i]);
        expect_error(buf, "listeners[0].mode: ");
    }
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"mode\": \"4660\"}]}",
                 "listeners[0].mode: 4660 sets setuid, setgid or sticky bits "
                 "(at most 0777)");
    expect_ov_error(MIN_CONF, "listeners[0].mode=7777",
                    "listeners[0].mode: 7777 sets setuid");
    struct kp_conf *c =
        load_ok("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                " \"mode\": \"0777\"}, {\"path\": \"/b\", \"mode\": 0}]}");
    ck_assert_uint_eq(c->listeners[0].mode, 0777);
    ck_assert_uint_eq(c->listeners[1].mode, 0);
    kp_conf_put(c);
}
END_TEST

/* sun_path holds 107 bytes and a NUL: longer socket paths cannot bind. */
START_TEST(test_socket_path_length)
{
    char path[200], buf[512];
    memset(path, 'p', sizeof(path));
    path[0] = '/';
    path[107] = '\0';
    snprintf(buf, sizeof(buf),
             "{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"%s\"}],"
             " \"control\": \"%s\"}",
             path, "/c.sock");
    struct kp_conf *c = load_ok(buf);
    ck_assert_uint_eq(strlen(c->listeners[0].path), 107);
    kp_conf_put(c);

    path[107] = 'p';
    path[108] = '\0';
    snprintf(buf, sizeof(buf),
             "{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"%s\"}],"
             " \"control\": \"%s\"}",
             path, path);
    const char *want[] = {"listeners[0].path: 108 bytes is longer than a "
                          "UNIX socket path can be (107)",
                          "control: 108 bytes is longer"};
    expect_errors_ov(buf, NULL, 0, want, 2);
}
END_TEST

#define SASL_PLAIN_CONF(extra)                                                 \
    "{\"brokers\": [\"k:1\"], \"security\": {\"protocol\": \"sasl_ssl\","      \
    " \"sasl\": {\"mechanism\": \"SCRAM-SHA-512\", \"username\": \"u\"" extra  \
    "}}}"

START_TEST(test_security_valid)
{
    struct kp_conf *c = load_ok(
        "{\"brokers\": [\"k:1\"], \"security\": {\"protocol\": \"ssl\","
        " \"tls\": {\"ca_file\": \"/etc/ca.pem\", \"ca_path\": \"/etc/cas\","
        " \"cert_file\": \"/c.pem\", \"key_file\": \"/k.pem\","
        " \"key_password_file\": \"/kp\", \"verify\": false,"
        " \"server_name\": \"kafka.example\"}}}");
    const struct kp_tls_conf *t = &c->security.tls;
    ck_assert_int_eq(c->security.protocol, KP_SEC_SSL);
    ck_assert_str_eq(t->ca_file, "/etc/ca.pem");
    ck_assert_str_eq(t->ca_path, "/etc/cas");
    ck_assert_str_eq(t->cert_file, "/c.pem");
    ck_assert_str_eq(t->key_file, "/k.pem");
    ck_assert_str_eq(t->key_password_file, "/kp");
    ck_assert(!t->verify);
    ck_assert_str_eq(t->server_name, "kafka.example");
    kp_conf_put(c);

    c = load_ok(SASL_PLAIN_CONF(", \"password\": \"s3cret\""));
    ck_assert_int_eq(c->security.protocol, KP_SEC_SASL_SSL);
    ck_assert_int_eq(c->security.sasl.mechanism, KP_SASL_SCRAM_SHA_512);
    ck_assert_str_eq(c->security.sasl.username, "u");
    ck_assert_str_eq(c->security.sasl.password, "s3cret");
    ck_assert(c->security.tls.verify);
    kp_conf_put(c);

    c = load_ok("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                " \"sasl_plaintext\", \"sasl\": {\"mechanism\":"
                " \"OAUTHBEARER\", \"token_file\": \"/run/token\"}}}");
    ck_assert_int_eq(c->security.sasl.mechanism, KP_SASL_OAUTHBEARER);
    ck_assert_str_eq(c->security.sasl.token_file, "/run/token");
    kp_conf_put(c);

    /* PLAIN is the default mechanism; null sections are absent ones */
    c = load_ok("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                " \"sasl_plaintext\", \"tls\": null, \"sasl\": {\"username\":"
                " \"u\", \"password\": \"p\"}}}");
    ck_assert_int_eq(c->security.sasl.mechanism, KP_SASL_PLAIN);
    kp_conf_put(c);
    c = load_ok("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                " \"plaintext\", \"tls\": null, \"sasl\": null}}");
    kp_conf_put(c);
}
END_TEST

START_TEST(test_security_errors)
{
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"sasl\":"
                 " {\"username\": \"u\", \"password\": \"p\"}}}",
                 "security.sasl: only with protocol \"sasl_plaintext\" or "
                 "\"sasl_ssl\" (protocol is \"plaintext\")");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"sasl_plaintext\", \"tls\": {\"verify\": true},"
                 " \"sasl\": {\"username\": \"u\", \"password\": \"p\"}}}",
                 "security.tls: only with protocol \"ssl\" or \"sasl_ssl\" "
                 "(protocol is \"sasl_plaintext\")");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"tls\": {}}}",
                 "security.tls: only with protocol");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"sasl_ssl\"}}",
                 "security.sasl: required with protocol \"sasl_ssl\"");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"tls\"}}",
                 "security.protocol: \"tls\" is not one of \"plaintext\", "
                 "\"ssl\", \"sasl_plaintext\", \"sasl_ssl\"");
    expect_error(SASL_PLAIN_CONF(""), "security.sasl.password: required with "
                                      "mechanism SCRAM-SHA-512 (or "
                                      "password_file)");
    expect_error(SASL_PLAIN_CONF(", \"password\": \"p\", \"password_file\":"
                                 " \"/p\""),
                 "security.sasl.password: give password or password_file, "
                 "not both");
    expect_error(SASL_PLAIN_CONF(", \"password\": \"p\", \"token_file\":"
                                 " \"/t\""),
                 "security.sasl.token_file: not used with mechanism "
                 "SCRAM-SHA-512");
    expect_error(SASL_PLAIN_CONF(", \"password\": \"\""),
                 "security.sasl.password: must not be empty");
    expect_error(SASL_PLAIN_CONF(", \"password\": 5"),
                 "security.sasl.password: expected a string or null, got "
                 "integer");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"sasl_ssl\", \"sasl\": {\"mechanism\": \"GSSAPI\"}}}",
                 "security.sasl.mechanism: \"GSSAPI\" is not one of");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"sasl_ssl\", \"sasl\": {\"password\": \"p\"}}}",
                 "security.sasl.username: required with mechanism PLAIN");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"sasl_ssl\", \"sasl\": {\"mechanism\": \"OAUTHBEARER\"}}}",
                 "security.sasl.token_file: required with mechanism "
                 "OAUTHBEARER");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"sasl_ssl\", \"sasl\": {\"mechanism\": \"OAUTHBEARER\","
                 " \"token_file\": \"/t\", \"username\": \"u\"}}}",
                 "security.sasl.username: not used with mechanism "
                 "OAUTHBEARER");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"ssl\", \"tls\": {\"key_file\": \"/k\"}}}",
                 "security.tls.key_file: requires cert_file");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"ssl\", \"tls\": {\"cert_file\": \"/c\"}}}",
                 "security.tls.cert_file: requires key_file");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"ssl\", \"tls\": {\"key_password_file\": \"/kp\"}}}",
                 "security.tls.key_password_file: requires key_file");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"ssl\", \"tls\": {\"ca_file\": \"\"}}}",
                 "security.tls.ca_file: must not be empty");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                 " \"ssl\", \"tls\": {\"verfy\": false}}}",
                 "security.tls.verfy: unknown key");
    expect_error("{\"brokers\": [\"k:1\"], \"security\": null}",
                 "security: expected an object, got null");
    /* -t's placeholder is not a password */
    expect_error(SASL_PLAIN_CONF(", \"password\": \"<redacted>\""),
                 "security.sasl.password: \"<redacted>\" is what -t prints");
}
END_TEST

/* -t, errors and stats never show a secret. */
START_TEST(test_secret_redaction)
{
    struct kp_conf *c =
        load_ok(SASL_PLAIN_CONF(", \"password\": \"hunter2-secret\""));
    char *j = kp_conf_to_json(c);
    ck_assert_ptr_null(strstr(j, "hunter2"));
    ck_assert_ptr_nonnull(strstr(j, "\"password\": \"<redacted>\""));
    ck_assert_ptr_nonnull(strstr(j, "\"username\": \"u\""));
    struct kp_buf b;
    kp_buf_init(&b, 64);
    kp_conf_render(c, &b);
    kp_buf_put_bytes(&b, "", 1);
    ck_assert_ptr_null(strstr((const char *)b.data, "hunter2"));
    ck_assert_ptr_nonnull(
        strstr((const char *)b.data, "\"password\":\"<redacted>\""));
    kp_buf_deinit(&b);
    /* loading -t's output back is refused rather than authenticating
     * with "<redacted>" */
    expect_error(j, "security.sasl.password: \"<redacted>\"");
    free(j);
    kp_conf_put(c);

    /* no message quotes a secret: not jansson's "near", not -X */
    struct kp_conf_errors errs = {0};
    const char *bad = "{\"brokers\": [\"k:1\"], \"security\": {\"sasl\":"
                      " {\"password\": hunter2}}}";
    ck_assert_ptr_null(load(bad, &errs));
    ck_assert_uint_eq(errs.cnt, 1);
    ck_assert_msg(!any_error_has(&errs, "hunter2"), "%s", errs.msgs[0]);
    kp_conf_errors_deinit(&errs);
    char *ov[] = {"security.sasl.pasword=hunter2",
                  "security.sasl.password.x=hunter2"};
    ck_assert_ptr_null(load_ov(MIN_CONF, ov, 2, &errs));
    ck_assert(has_error(&errs, "security.sasl.pasword: unknown key (in -X)"));
    ck_assert(!any_error_has(&errs, "hunter2"));
    kp_conf_errors_deinit(&errs);
    /* a password whose rule fails is named, not shown */
    char *ov2[] = {"security.protocol=sasl_ssl",
                   "security.sasl.password=hunter2",
                   "security.sasl.mechanism"
                   "=OAUTHBEARER"};
    ck_assert_ptr_null(load_ov(MIN_CONF, ov2, 3, &errs));
    ck_assert(has_error_prefix(&errs, "security.sasl.password: not used"));
    ck_assert(!any_error_has(&errs, "hunter2"));
    kp_conf_errors_deinit(&errs);
}
END_TEST

/* password_file: read at load, relative to $CREDENTIALS_DIRECTORY or the
 * configuration file; -t shows the path, never the content. */
START_TEST(test_password_file)
{
    char dir[64], conf[128], buf[1024];
    make_tmpdir(dir, sizeof(dir));
    write_file(dir, "pw", "file-secret\n");
    write_file(dir, "pw-crlf", "crlf-secret\r\n");
    write_file(dir, "empty", "\n");
    snprintf(conf, sizeof(conf), "%s/nul", dir);
    FILE *f = fopen(conf, "w");
    ck_assert_uint_eq(fwrite("a\0b\n", 1, 4, f), 4);
    fclose(f);
    snprintf(conf, sizeof(conf), "%s/kproxyd.json", dir);
    snprintf(buf, sizeof(buf),
             SASL_PLAIN_CONF(", \"password_file\": \"pw\"") "\n");
    write_file(dir, "kproxyd.json", buf);
    unsetenv("CREDENTIALS_DIRECTORY");

    struct kp_conf_errors errs = {0};
    struct kp_conf *c = kp_conf_load(conf, NULL, 0, &errs);
    dump_errors(&errs);
    ck_assert_ptr_nonnull(c);
    char want[256];
    snprintf(want, sizeof(want), "%s/pw", dir);
    ck_assert_str_eq(c->security.sasl.password_file, want);
    ck_assert_str_eq(c->security.sasl.password, "file-secret");
    char *j = kp_conf_to_json(c);
    ck_assert_ptr_null(strstr(j, "file-secret"));
    ck_assert_ptr_nonnull(strstr(j, "\"password\": null"));
    ck_assert_ptr_nonnull(strstr(j, want));
    /* -t's output loads back to the same configuration */
    struct kp_conf *c2 = load_ok(j);
    ck_assert_str_eq(c2->security.sasl.password, "file-secret");
    char *j2 = kp_conf_to_json(c2);
    ck_assert_str_eq(j, j2);
    ck_assert_int_eq(kp_conf_restart_diff(c, c2), 0);
    free(j);
    free(j2);
    kp_conf_put(c2);
    kp_conf_put(c);

    char *ov[] = {"security.sasl.password_file=pw-crlf"};
    c = kp_conf_load(conf, ov, 1, &errs);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(c->security.sasl.password, "crlf-secret");
    kp_conf_put(c);

    /* unreadable, empty, a NUL, a directory: errors naming key and path */
    const char *cases[][2] = {
        {"missing", "No such file or directory"},
        {"empty", "empty"},
        {"nul", "contains a NUL byte"},
        {".", "not a regular file"},
    };
    for (size_t i = 0; i < KP_ARRAY_LEN(cases); i++) {
        char o[64];
        snprintf(o, sizeof(o), "security.sasl.password_file=%s", cases[i][0]);
        char *ovs[] = {o};
        ck_assert_ptr_null(kp_conf_load(conf, ovs, 1, &errs));
        snprintf(want, sizeof(want), "security.sasl.password_file: %s/%s: %s",
                 dir, cases[i][0], cases[i][1]);
        ck_assert(has_error(&errs, want));
        kp_conf_errors_deinit(&errs);
    }
    rm_tree(dir);
}
END_TEST

START_TEST(test_credentials_directory)
{
    char dir[64], creds[128];
    make_tmpdir(dir, sizeof(dir));
    snprintf(creds, sizeof(creds), "%s/creds", dir);
    ck_assert_int_eq(mkdir(creds, 0700), 0);
    write_file(creds, "kafka-password", "from-creds");
    setenv("CREDENTIALS_DIRECTORY", creds, 1);

    struct kp_conf *c = load_ok(
        "{\"brokers\": [\"k:1\"], \"security\": {\"protocol\": \"sasl_ssl\","
        " \"tls\": {\"ca_file\": \"ca.pem\", \"cert_file\": \"/abs/c.pem\","
        " \"key_file\": \"key.pem\", \"key_password_file\": \"kp\","
        " \"ca_path\": \"cas\"},"
        " \"sasl\": {\"username\": \"u\", \"password_file\":"
        " \"kafka-password\"}}}");
    char want[256];
    snprintf(want, sizeof(want), "%s/kafka-password", creds);
    ck_assert_str_eq(c->security.sasl.password_file, want);
    ck_assert_str_eq(c->security.sasl.password, "from-creds");
    snprintf(want, sizeof(want), "%s/ca.pem", creds);
    ck_assert_str_eq(c->security.tls.ca_file, want);
    snprintf(want, sizeof(want), "%s/cas", creds);
    ck_assert_str_eq(c->security.tls.ca_path, want);
    snprintf(want, sizeof(want), "%s/key.pem", creds);
    ck_assert_str_eq(c->security.tls.key_file, want);
    snprintf(want, sizeof(want), "%s/kp", creds);
    ck_assert_str_eq(c->security.tls.key_password_file, want);
    ck_assert_str_eq(c->security.tls.cert_file, "/abs/c.pem");
    kp_conf_put(c);

    c = load_ok("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                " \"sasl_ssl\", \"sasl\": {\"mechanism\": \"OAUTHBEARER\","
                " \"token_file\": \"token\"}}}");
    snprintf(want, sizeof(want), "%s/token", creds);
    ck_assert_str_eq(c->security.sasl.token_file, want);
    kp_conf_put(c);

    /* without it, a buffer's relative paths stay relative (the cwd) */
    unsetenv("CREDENTIALS_DIRECTORY");
    c = load_ok("{\"brokers\": [\"k:1\"], \"security\": {\"protocol\":"
                " \"sasl_ssl\", \"sasl\": {\"mechanism\": \"OAUTHBEARER\","
                " \"token_file\": \"token\"}}}");
    ck_assert_str_eq(c->security.sasl.token_file, "token");
    kp_conf_put(c);
    rm_tree(dir);
}
END_TEST

START_TEST(test_override_new_keys)
{
    char *ov[] = {
        "security.protocol=sasl_ssl",
        "security.tls.verify=false",
        "security.tls.server_name=kafka.internal",
        "security.sasl.mechanism=SCRAM-SHA-256",
        "security.sasl.username=bob",
        "security.sasl.password=pw",
        "address_map=kafka1:9092=127.0.0.1:19092, [::2]:1=[::1]:2",
        "reconnect_backoff_max_ms=3000",
        "metadata_max_wait_ms=4000",
        "topic_buffer_bytes=2000000",
        "max_block_ms=10",
        "max_topics=11",
        "max_clients_per_uid=12",
        "max_timestamp_skew_ms=13",
        "topic_idle_ms=14",
        "partition_metrics=off",
        "http.listen=[::1]:9466",
        "spool.dir=/var/spool/k",
        "spool.max_bytes=9999999",
        "spool.mode=always",
        "spool.fsync_ms=250",
        "listeners[0].owner=kproxyd",
        "listeners[0].group=0",
        "listeners[0].headers=source=web, env=prod=1",
        "listeners[0].framing=length",
        "listeners[0].receipts=each",
    };
    struct kp_conf *c = load_ok_ov(MIN_CONF, ov, KP_ARRAY_LEN(ov));
    ck_assert_int_eq(c->security.protocol, KP_SEC_SASL_SSL);
    ck_assert(!c->security.tls.verify);
    ck_assert_str_eq(c->security.tls.server_name, "kafka.internal");
    ck_assert_int_eq(c->security.sasl.mechanism, KP_SASL_SCRAM_SHA_256);
    ck_assert_str_eq(c->security.sasl.username, "bob");
    ck_assert_str_eq(c->security.sasl.password, "pw");
    ck_assert_uint_eq(c->address_map_cnt, 2);
    ck_assert_str_eq(c->address_map[1].from, "[::2]:1");
    ck_assert_str_eq(c->address_map[1].to.host, "::1");
    ck_assert_int_eq(c->reconnect_backoff_max_ms, 3000);
    ck_assert_int_eq(c->metadata_max_wait_ms, 4000);
    ck_assert(c->topic_buffer_bytes == 2000000);
    ck_assert_int_eq(c->max_block_ms, 10);
    ck_assert_int_eq(c->max_topics, 11);
    ck_assert_int_eq(c->max_clients_per_uid, 12);
    ck_assert(c->max_timestamp_skew_ms == 13);
    ck_assert_int_eq(c->topic_idle_ms, 14);
    ck_assert(!c->partition_metrics);
    ck_assert_str_eq(c->http.listen, "[::1]:9466");
    ck_assert_str_eq(c->spool.dir, "/var/spool/k");
    ck_assert(c->spool.max_bytes == 9999999);
    ck_assert_int_eq(c->spool.mode, KP_SPOOL_ALWAYS);
    ck_assert_int_eq(c->spool.fsync_ms, 250);
    const struct kp_listener_conf *l = &c->listeners[0];
    ck_assert_str_eq(l->path, "/run/kproxyd/kproxyd.sock");
    ck_assert_str_eq(l->owner, "kproxyd");
    ck_assert_str_eq(l->group, "0");
    ck_assert_uint_eq(l->header_cnt, 2);
    ck_assert_str_eq(l->headers[1].name, "env");
    ck_assert_str_eq(l->headers[1].value, "prod=1");
    ck_assert_int_eq(l->framing, KP_FRAMING_LENGTH);
    ck_assert_int_eq(l->receipts, KP_RECEIPTS_EACH);
    kp_conf_put(c);
}
END_TEST

/* null and empty values from -X; sections merge with the file's. */
START_TEST(test_override_new_keys_null)
{
    struct kp_conf *c;
    /* null where the file has a section; and the file's section is merged */
    char *ov2[] = {"http.listen=null", "spool.fsync_ms=null",
                   "topic_buffer_bytes=null",
                   "listeners[0].headers=", "address_map="};
    c = load_ok_ov("{\"brokers\": [\"k:1\"], \"http\": {\"listen\":"
                   " \"127.0.0.1:1\"}, \"spool\": {\"dir\": \"/s\","
                   " \"fsync_ms\": 5}, \"topic_buffer_bytes\": 2000000,"
                   " \"address_map\": {\"a:1\": \"b:2\"},"
                   " \"listeners\": [{\"path\": \"/a\", \"headers\":"
                   " {\"x\": \"y\"}}]}",
                   ov2, KP_ARRAY_LEN(ov2));
    ck_assert_ptr_null(c->http.listen);
    ck_assert_str_eq(c->spool.dir, "/s");
    ck_assert_int_eq(c->spool.fsync_ms, -1);
    ck_assert(c->topic_buffer_bytes == 268435456 / 4);
    ck_assert_uint_eq(c->listeners[0].header_cnt, 0);
    ck_assert_uint_eq(c->address_map_cnt, 0);
    kp_conf_put(c);

    /* a section the file sets to null takes keys from -X */
    char *ov3[] = {"http.listen=127.0.0.1:9466", "spool.dir=/s"};
    c = load_ok_ov("{\"brokers\": [\"k:1\"], \"http\": null, \"spool\": null}",
                   ov3, 2);
    ck_assert_str_eq(c->http.listen, "127.0.0.1:9466");
    ck_assert_str_eq(c->spool.dir, "/s");
    kp_conf_put(c);
}
END_TEST

START_TEST(test_override_new_keys_errors)
{
    expect_ov_error(MIN_CONF, "address_map=a:1",
                    "address_map[0]: expected "
                    "NAME=VALUE");
    expect_ov_error(MIN_CONF, "address_map=a:1=b",
                    "address_map.a:1: \"b\" is "
                    "not host:port");
    expect_ov_error(MIN_CONF, "listeners[0].headers=x=1,=2",
                    "listeners[0].headers[1]: expected NAME=VALUE");
    expect_ov_error(MIN_CONF, "security=x",
                    "security: cannot be set whole "
                    "with -X; set one key, e.g. "
                    "security.protocol");
    expect_ov_error(MIN_CONF, "security.tls=x",
                    "security.tls: cannot be set "
                    "whole");
    expect_ov_error(MIN_CONF, "http=null", "http: cannot be set whole");
    expect_ov_error(MIN_CONF, "security.tls.verify=maybe",
                    "security.tls.verify: expected a boolean, got \"maybe\"");
    expect_ov_error(MIN_CONF, "security.tls.nope=1",
                    "security.tls.nope: unknown key");
    expect_ov_error(MIN_CONF, "security.tls.verify=0",
                    "security.tls: only with protocol");
    expect_ov_error(MIN_CONF, "spool.fsync_ms=soon",
                    "spool.fsync_ms: expected an integer, got \"soon\"");
    expect_ov_error(MIN_CONF, "spool.mode=always", "spool.dir: required");
    expect_ov_error(MIN_CONF, "http.listen=localhost",
                    "http.listen: \"localhost\" is not host:port");
    expect_ov_error(MIN_CONF, "max_timestamp_skew_ms=-5",
                    "max_timestamp_skew_ms: -5 is out of range");
    expect_ov_error(MIN_CONF, "listeners[0].framing=none",
                    "listeners[0].framing: \"none\" is not one of");
}
END_TEST

/* -X changes the listeners the file has; it never adds one. */
START_TEST(test_override_listener_index)
{
    expect_ov_error(MIN_CONF, "listeners[1].path=/x",
                    "listeners[1]: no such listener (there is 1; -X changes "
                    "listeners, the file adds them)");
    expect_ov_error(MIN_CONF, "listeners.1.path=/x",
                    "listeners[1]: no such listener");
    expect_ov_error(MIN_CONF, "listeners[99999999999].path=/x", "listeners[");
    const char *two = "{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\":"
                      " \"/a\"}, {\"path\": \"/b\"}]}";
    expect_ov_error(two, "listeners[2].path=/c",
                    "listeners[2]: no such listener (there are 2;");
    char *ov[] = {"listeners[1].path=/c", "listeners.0.mode=0600"};
    struct kp_conf *c = load_ok_ov(two, ov, 2);
    ck_assert_uint_eq(c->listener_cnt, 2);
    ck_assert_str_eq(c->listeners[1].path, "/c");
    ck_assert_uint_eq(c->listeners[0].mode, 0600);
    kp_conf_put(c);
    /* the file's wrong type is the parser's to report */
    expect_ov_error("{\"brokers\": [\"k:1\"], \"listeners\": {}}",
                    "listeners[0].path=/c",
                    "listeners: expected an array, got object");
}
END_TEST

START_TEST(test_new_round_trip)
{
    char dir[64], buf[2048];
    make_tmpdir(dir, sizeof(dir));
    write_file(dir, "pw", "rt-secret\n");
    snprintf(
        buf, sizeof(buf),
        "{\"brokers\": [\"a:1\"],"
        " \"listeners\": [{\"path\": \"/tmp/n.sock\", \"owner\": \"0\","
        "   \"headers\": {\"a\": \"b\"}, \"framing\": \"length\","
        "   \"receipts\": \"each\", \"format\": \"json\"}],"
        " \"security\": {\"protocol\": \"sasl_ssl\", \"tls\":"
        "  {\"ca_file\": \"/ca\", \"verify\": false, \"cert_file\": \"/c\","
        "   \"key_file\": \"/k\", \"server_name\": \"sn\"},"
        "  \"sasl\": {\"mechanism\": \"SCRAM-SHA-256\", \"username\":"
        "   \"u\", \"password_file\": \"%s/pw\"}},"
        " \"address_map\": {\"a:1\": \"[::1]:2\"},"
        " \"topic_buffer_bytes\": 3000000, \"max_block_ms\": 5,"
        " \"max_timestamp_skew_ms\": 123456789012,"
        " \"partition_metrics\": false,"
        " \"http\": {\"listen\": \"0.0.0.0:1\"},"
        " \"spool\": {\"dir\": \"/sp\", \"mode\": \"always\","
        "   \"fsync_ms\": 0}}",
        dir);
    struct kp_conf *c1 = load_ok(buf);
    char *j1 = kp_conf_to_json(c1);
    struct kp_conf *c2 = load_ok(j1);
    char *j2 = kp_conf_to_json(c2);
    ck_assert_str_eq(j1, j2);
    ck_assert_int_eq(kp_conf_restart_diff(c1, c2), 0);
    ck_assert_str_eq(c2->security.sasl.password, "rt-secret");
    ck_assert_int_eq(c2->spool.fsync_ms, 0);
    ck_assert(c2->max_timestamp_skew_ms == 123456789012LL);
    ck_assert_str_eq(c2->address_map[0].to.host, "::1");
    ck_assert_str_eq(c2->listeners[0].headers[0].value, "b");
    ck_assert(strstr(j1, "\"fsync_ms\": 0") != NULL);
    ck_assert(strstr(j1, "\"to\"") == NULL);
    free(j1);
    free(j2);
    kp_conf_put(c1);
    kp_conf_put(c2);

    /* a protocol's unused section prints as null and loads back */
    c1 = load_ok(MIN_CONF);
    j1 = kp_conf_to_json(c1);
    ck_assert(strstr(j1, "\"tls\": null") != NULL);
    ck_assert(strstr(j1, "\"sasl\": null") != NULL);
    ck_assert(strstr(j1, "\"http\": {\n    \"listen\": null") != NULL);
    ck_assert(strstr(j1, "\"topic_buffer_bytes\": 67108864") != NULL);
    c2 = load_ok(j1);
    ck_assert_int_eq(kp_conf_restart_diff(c1, c2), 0);
    free(j1);
    kp_conf_put(c1);
    kp_conf_put(c2);
    rm_tree(dir);
}
END_TEST

START_TEST(test_new_restart_diff)
{
    struct kp_conf *a = load_ok(MIN_CONF);
    char *live[] = {"topic_buffer_bytes=2000000",
                    "max_block_ms=1",
                    "metadata_max_wait_ms=2",
                    "max_topics=3",
                    "max_clients_per_uid=4",
                    "max_timestamp_skew_ms=5",
                    "topic_idle_ms=6",
                    "partition_metrics=false",
                    "reconnect_backoff_max_ms=7000"};
    struct kp_conf *b = load_ok_ov(MIN_CONF, live, KP_ARRAY_LEN(live));
    ck_assert_int_eq(kp_conf_restart_diff(a, b), 0);
    kp_conf_put(b);

    char *restart[] = {"security.protocol=ssl", "address_map=a:1=b:2",
                       "http.listen=127.0.0.1:1", "spool.dir=/s",
                       "listeners[0].framing=length"};
    b = load_ok_ov(MIN_CONF, restart, KP_ARRAY_LEN(restart));
    ck_assert_int_eq(kp_conf_restart_diff(a, b), 5);
    kp_conf_put(b);
    char *restart2[] = {"listeners[0].receipts=each",
                        "listeners[0].headers=a=b", "listeners[0].owner=0"};
    b = load_ok_ov(MIN_CONF, restart2, KP_ARRAY_LEN(restart2));
    ck_assert_int_eq(kp_conf_restart_diff(a, b), 1); /* listeners */
    kp_conf_put(b);
    char *restart3[] = {"security.protocol=ssl"};
    char *restart4[] = {"security.protocol=ssl", "security.tls.verify=no"};
    struct kp_conf *c = load_ok_ov(MIN_CONF, restart3, 1);
    b = load_ok_ov(MIN_CONF, restart4, 2);
    ck_assert_int_eq(kp_conf_restart_diff(c, b), 1);
    kp_conf_put(c);
    kp_conf_put(b);
    kp_conf_put(a);
}
END_TEST

START_TEST(test_topic_name_rule)
{
    ck_assert(!kp_topic_name_valid(".", 1));
    ck_assert(!kp_topic_name_valid("..", 2));
    ck_assert(kp_topic_name_valid("...", 3));
    ck_assert(kp_topic_name_valid("a.b", 3));
    expect_error("{\"brokers\": [\"k:1\"], \"topics\": {\".\": {}}}",
                 "topics..: not a valid topic name");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"format\": \"value\", \"topic\": \"..\"}]}",
                 "listeners[0].topic: \"..\" is not a valid topic name");
    expect_error("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\": \"/a\","
                 " \"allow_topics\": [\".\"]}]}",
                 "listeners[0].allow_topics[0]: \".\" is neither");
    expect_ov_error(MIN_CONF, "topics....linger_ms=1",
                    "topics...: not a valid topic name");
    struct kp_conf *c =
        load_ok("{\"brokers\": [\"k:1\"], \"topics\": {\"...\": {}},"
                " \"listeners\": [{\"path\": \"/a\", \"allow_topics\":"
                " [\"..*\"]}]}");
    ck_assert_str_eq(c->topics[0].name, "...");
    kp_conf_put(c);
}
END_TEST

START_TEST(test_hostport_parse)
{
    struct kp_hostport hp = {0};
    ck_assert_int_eq(kp_hostport_parse("kafka-1.example:9092", &hp), KP_OK);
    ck_assert_str_eq(hp.host, "kafka-1.example");
    ck_assert_int_eq(hp.port, 9092);
    kp_hostport_deinit(&hp);
    ck_assert_ptr_null(hp.host);
    ck_assert_int_eq(kp_hostport_parse("[fe80::1%eth0]:1", &hp), KP_OK);
    ck_assert_str_eq(hp.host, "fe80::1%eth0");
    ck_assert_int_eq(hp.port, 1);
    kp_hostport_deinit(&hp);
    ck_assert_int_eq(kp_hostport_parse("127.0.0.1:65535", NULL), KP_OK);

    const char *bad[] = {"kafka", "k:0",      "k:65536",  "k:9x",
                         "k:",    ":9092",    "::1:9092", "[::1]9092",
                         "[::1]", "a b:1",    "[]:1",     "k:-1",
                         "k:+1",  "k:000001", "a]:1",     "[a:1"};
    for (size_t i = 0; i < KP_ARRAY_LEN(bad); i++) {
        hp.host = NULL;
        ck_assert_msg(kp_hostport_parse(bad[i], &hp) == KP_ERROR, "%s", bad[i]);
        ck_assert_ptr_null(hp.host);
    }
    char longhost[300];
    memset(longhost, 'h', 256);
    strcpy(longhost + 256, ":1");
    ck_assert_int_eq(kp_hostport_parse(longhost, NULL), KP_ERROR);
}
END_TEST

/* stats prints the settings the way -t does. */
START_TEST(test_producer_render)
{
    struct kp_conf *c = load_ok(MIN_CONF);
    struct kp_buf b;
    kp_buf_init(&b, 16);
    kp_conf_producer_render(&c->producer, &b);
    kp_buf_put_bytes(&b, "", 1);
    ck_assert_str_eq(
        (const char *)b.data,
        "{\"acks\":\"all\",\"idempotence\":true,\"linger_ms\":5,"
        "\"batch_bytes\":1048576,\"batch_messages\":10000,"
        "\"compression\":\"none\",\"compression_level\":null,"
        "\"partitioner\":\"murmur2\",\"max_in_flight\":5,"
        "\"request_timeout_ms\":30000,\"delivery_timeout_ms\":120000,"
        "\"retry_backoff_ms\":100,\"retry_backoff_max_ms\":1000,"
        "\"message_max_bytes\":1048576}");
    kp_buf_reset(&b);
    char *ov[] = {"topics.t.acks=1", "topics.t.compression=zstd",
                  "topics.t.compression_level=3"};
    struct kp_conf *c2 = load_ok_ov(MIN_CONF, ov, 3);
    kp_conf_producer_render(kp_conf_producer(c2, "t"), &b);
    kp_buf_put_bytes(&b, "", 1);
    ck_assert(strstr((const char *)b.data,
                     "\"acks\":1,\"idempotence\":false,") != NULL);
    ck_assert(strstr((const char *)b.data,
                     "\"compression\":\"zstd\",\"compression_level\":3,") !=
              NULL);
    kp_buf_reset(&b);

    /* the whole configuration renders as -t's JSON, compact */
    kp_conf_render(c2, &b);
    char *j = kp_conf_to_json(c2);
    json_t *x = json_loadb((const char *)b.data, b.len, 0, NULL);
    json_t *y = json_loads(j, 0, NULL);
    ck_assert_ptr_nonnull(x);
    ck_assert(json_equal(x, y));
    ck_assert_ptr_null(memchr(b.data, '\n', b.len));
    json_decref(x);
    json_decref(y);
    free(j);
    kp_buf_deinit(&b);
    kp_conf_put(c2);
    kp_conf_put(c);
}
END_TEST

/* What only the host can tell: -t and start-up, not kp_conf_load_buf. */
START_TEST(test_check_host)
{
    char dir[64], buf[2048];
    struct kp_conf_errors errs = {0};
    make_tmpdir(dir, sizeof(dir));
    write_file(dir, "ca.pem", "x");
    write_file(dir, "regular", "x");
    snprintf(buf, sizeof(buf),
             "{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\":"
             " \"%s/a.sock\", \"owner\": \"root\", \"group\": \"0\"}],"
             " \"control\": \"%s/c.sock\", \"dead_letter\": \"%s/dl.jsonl\","
             " \"spool\": {\"dir\": \"%s/spool\"},"
             " \"security\": {\"protocol\": \"ssl\", \"tls\": {\"ca_file\":"
             " \"%s/ca.pem\", \"ca_path\": \"%s\"}}}",
             dir, dir, dir, dir, dir, dir);
    struct kp_conf *c = load_ok(buf);
    ck_assert_int_eq(kp_conf_check_host(c, &errs), KP_OK);
    dump_errors(&errs);
    ck_assert_uint_eq(errs.cnt, 0);
    kp_conf_put(c);

    snprintf(buf, sizeof(buf),
             "{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\":"
             " \"%s/nodir/a.sock\", \"owner\": \"no-such-user-kp\"},"
             " {\"path\": \"%s/regular\", \"group\": \"no-such-group-kp\"}],"
             " \"control\": \"%s/regular/c.sock\", \"dead_letter\": \"%s\","
             " \"spool\": {\"dir\": \"%s/x/spool\"},"
             " \"security\": {\"protocol\": \"ssl\", \"tls\": {\"ca_file\":"
             " \"%s/none.pem\", \"ca_path\": \"%s/ca.pem\"}},"
             " \"buffer_bytes\": 1099511627776}",
             dir, dir, dir, dir, dir, dir, dir);
    c = load_ok(buf);
    ck_assert_int_eq(kp_conf_check_host(c, &errs), KP_ERROR);
    char want[512];
    snprintf(want, sizeof(want),
             "listeners[0].path: directory %s/nodir: No such file or "
             "directory",
             dir);
    ck_assert(has_error(&errs, want));
    ck_assert(has_error(&errs, "listeners[0].owner: no user "
                               "\"no-such-user-kp\" on this host"));
    snprintf(want, sizeof(want),
             "listeners[1].path: %s/regular exists and is not a socket", dir);
    ck_assert(has_error(&errs, want));
    ck_assert(has_error(&errs, "listeners[1].group: no group "
                               "\"no-such-group-kp\" on this host"));
    snprintf(want, sizeof(want), "control: %s/regular is not a directory", dir);
    ck_assert(has_error(&errs, want));
    snprintf(want, sizeof(want), "dead_letter: %s is not a regular file", dir);
    ck_assert(has_error(&errs, want));
    ck_assert(has_error_prefix(&errs, "spool.dir: directory "));
    snprintf(want, sizeof(want),
             "security.tls.ca_file: %s/none.pem: No such file or directory",
             dir);
    ck_assert(has_error(&errs, want));
    snprintf(want, sizeof(want),
             "security.tls.ca_path: %s/ca.pem is not a directory", dir);
    ck_assert(has_error(&errs, want));
    ck_assert(has_error_prefix(&errs, "buffer_bytes: 1099511627776 is more "
                                      "than this host's memory"));
    ck_assert_uint_eq(errs.cnt, 10);
    kp_conf_errors_deinit(&errs);
    kp_conf_put(c);

    /* a relative path's directory is the current one */
    c = load_ok("{\"brokers\": [\"k:1\"], \"listeners\": [{\"path\":"
                " \"rel.sock\"}], \"control\": null}");
    ck_assert_int_eq(kp_conf_check_host(c, &errs), KP_OK);
    kp_conf_put(c);
    rm_tree(dir);
}
END_TEST

/* snappy is a configuration error only where this build lacks it. */
START_TEST(test_snappy_when_available)
{
    if (!kp_codec_available(KP_CODEC_SNAPPY)) {
        return;
    }
    struct kp_conf *c = load_ok("{\"brokers\": [\"h:1\"], \"producer\":"
                                " {\"compression\": \"snappy\"}}");
    ck_assert_int_eq(c->producer.compression, KP_CODEC_SNAPPY);
    kp_conf_put(c);
}
END_TEST

static Suite *conf_suite(void)
{
    Suite *s = suite_create("conf");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_names_tables);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_every_key_parsed);
    tcase_add_test(tc, test_type_errors_name_key);
    tcase_add_test(tc, test_value_errors_name_key);
    tcase_add_test(tc, test_brokers);
    tcase_add_test(tc, test_unknown_keys);
    tcase_add_test(tc, test_syntax_error_line_column);
    tcase_add_test(tc, test_load_file);
    tcase_add_test(tc, test_sample_configs);
    tcase_add_test(tc, test_idempotence);
    tcase_add_test(tc, test_listener_rules);
    tcase_add_test(tc, test_topic_inherits_producer);
    tcase_add_test(tc, test_overrides);
    tcase_add_test(tc, test_overrides_null_and_acks);
    tcase_add_test(tc, test_override_errors);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_to_json_defaults);
    tcase_add_test(tc, test_restart_diff);
    tcase_add_test(tc, test_refcount);
    tcase_add_test(tc, test_errors_accumulate);
    tcase_add_test(tc, test_unavailable_codec);
    tcase_add_test(tc, test_new_names_tables);
    tcase_add_test(tc, test_new_defaults);
    tcase_add_test(tc, test_new_keys_parsed);
    tcase_add_test(tc, test_new_keys_errors);
    tcase_add_test(tc, test_listener_mode_bits);
    tcase_add_test(tc, test_socket_path_length);
    tcase_add_test(tc, test_security_valid);
    tcase_add_test(tc, test_security_errors);
    tcase_add_test(tc, test_secret_redaction);
    tcase_add_test(tc, test_password_file);
    tcase_add_test(tc, test_credentials_directory);
    tcase_add_test(tc, test_override_new_keys);
    tcase_add_test(tc, test_override_new_keys_null);
    tcase_add_test(tc, test_override_new_keys_errors);
    tcase_add_test(tc, test_override_listener_index);
    tcase_add_test(tc, test_new_round_trip);
    tcase_add_test(tc, test_new_restart_diff);
    tcase_add_test(tc, test_topic_name_rule);
    tcase_add_test(tc, test_hostport_parse);
    tcase_add_test(tc, test_producer_render);
    tcase_add_test(tc, test_check_host);
    tcase_add_test(tc, test_snappy_when_available);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(conf_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
