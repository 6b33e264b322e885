/*
 * check_line.c - unit tests for kp_line: the four text formats, the json
 * format, topic-name validation and allow_topics matching.
 */
#include "kp_line.h"

#include <check.h>
#include <stdio.h>

/* Line from a string literal, embedded NULs included (sizeof - 1). */
#define L(s) (const uint8_t *)(s), (sizeof(s) - 1)

static struct kp_line_scratch scratch;
static struct kp_msg m;

static void setup(void)
{
    kp_line_scratch_init(&scratch);
    memset(&m, 0xa5, sizeof(m));
}

static void teardown(void)
{
    kp_line_scratch_deinit(&scratch);
}

static enum kp_reason parse(enum kp_format fmt, uint8_t sep, const char *fixed,
                            const uint8_t *line, size_t len)
{
    return kp_line_parse(fmt, sep, fixed, line, len, &scratch, &m);
}

static enum kp_reason pj(const char *fixed, const char *json)
{
    return kp_line_parse_json(fixed, (const uint8_t *)json, strlen(json),
                              &scratch, &m);
}

static bool bytes_eq(const void *p, size_t n, const void *want, size_t wn)
{
    return p != NULL && n == wn && (wn == 0 || memcmp(p, want, wn) == 0);
}

#define ck_topic(s)                                                            \
    ck_assert_msg(bytes_eq(m.topic, m.topic_len, s, strlen(s)),                \
                  "topic '%.*s' != '%s'", (int)m.topic_len, m.topic, s)
#define ck_key(s)                                                              \
    ck_assert_msg(bytes_eq(m.key, m.key_len, s, sizeof(s) - 1),                \
                  "key '%.*s' != '%s'", (int)m.key_len,                        \
                  m.key ? (const char *)m.key : "(null)", s)
#define ck_value(s)                                                            \
    ck_assert_msg(bytes_eq(m.value, m.value_len, s, sizeof(s) - 1),            \
                  "value '%.*s' != '%s'", (int)m.value_len,                    \
                  m.value ? (const char *)m.value : "(null)", s)
#define ck_null_key()                                                          \
    do {                                                                       \
        ck_assert_ptr_null(m.key);                                             \
        ck_assert_uint_eq(m.key_len, 0);                                       \
    } while (0)
#define ck_null_value()                                                        \
    do {                                                                       \
        ck_assert_ptr_null(m.value);                                           \
        ck_assert_uint_eq(m.value_len, 0);                                     \
    } while (0)
#define ck_plain()                                                             \
    do {                                                                       \
        ck_assert_int_eq(m.partition, -1);                                     \
        ck_assert_int_eq(m.timestamp, -1);                                     \
        ck_assert_uint_eq(m.header_cnt, 0);                                    \
    } while (0)

/* ---- names, topics, allow lists ---- */

START_TEST(test_reject_names)
{
    ck_assert_str_eq(kp_reason_names[KP_REASON_NONE], "none");
    ck_assert_str_eq(kp_reason_names[KP_REASON_TOO_LONG], "too_long");
    ck_assert_str_eq(kp_reason_names[KP_REASON_BAD_FORMAT], "bad_format");
    ck_assert_str_eq(kp_reason_names[KP_REASON_BAD_TOPIC], "bad_topic");
    ck_assert_str_eq(kp_reason_names[KP_REASON_BAD_JSON], "bad_json");
    ck_assert_str_eq(kp_reason_names[KP_REASON_BAD_PARTITION], "bad_partition");
    ck_assert_str_eq(kp_reason_names[KP_REASON_TOPIC_DENIED], "topic_denied");
}
END_TEST

START_TEST(test_topic_name_valid)
{
    char name[300];

    ck_assert(kp_topic_name_valid("a", 1));
    ck_assert(kp_topic_name_valid("Logs.app_1-x", 12));
    ck_assert(kp_topic_name_valid("._-", 3));
    ck_assert(!kp_topic_name_valid("", 0));
    ck_assert(!kp_topic_name_valid("a b", 3));
    ck_assert(!kp_topic_name_valid("a/b", 3));
    ck_assert(!kp_topic_name_valid("a:b", 3));
    ck_assert(!kp_topic_name_valid("a\0b", 3));
    ck_assert(!kp_topic_name_valid("caf\xc3\xa9", 5));
    ck_assert(!kp_topic_name_valid("a\xff", 2));
    ck_assert(!kp_topic_name_valid("a*", 2));
    /* Kafka refuses "." and ".." (directory names in its log dirs); names
     * that merely contain dots are fine. */
    ck_assert(!kp_topic_name_valid(".", 1));
    ck_assert(!kp_topic_name_valid("..", 2));
    ck_assert(kp_topic_name_valid("...", 3));
    ck_assert(kp_topic_name_valid(".a", 2));
    ck_assert(kp_topic_name_valid("a.", 2));
    ck_assert(kp_topic_name_valid("..x", 3));
    ck_assert(kp_topic_name_valid(".. ", 1) == false);
    ck_assert(kp_topic_name_valid("..x", 2) == false); /* only len bytes */
    /* Only len bytes are looked at: the invalid byte after them is not. */
    ck_assert(kp_topic_name_valid("ab cd", 2));

    memset(name, 'x', sizeof(name));
    ck_assert(kp_topic_name_valid(name, 249));
    ck_assert(!kp_topic_name_valid(name, 250));
    ck_assert(!kp_topic_name_valid(name, 300));
    /* Every byte outside the class is refused, every byte inside accepted. */
    for (int c = 0; c < 256; c++) {
        char t[2] = {'a', (char)c};
        bool want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        ck_assert_msg(kp_topic_name_valid(t, 2) == want, "byte %d", c);
    }
}
END_TEST

START_TEST(test_topic_allowed)
{
    char *list[] = {"orders", "logs.*", "x"};
    char *star[] = {"*"};

    ck_assert(kp_topic_allowed(NULL, 0, "anything", 8));
    ck_assert(kp_topic_allowed(list, 0, "anything", 8));
    ck_assert(kp_topic_allowed(NULL, 3, "anything", 8));
    ck_assert(kp_topic_allowed(list, 3, "orders", 6));
    ck_assert(!kp_topic_allowed(list, 3, "orders2", 7));
    ck_assert(!kp_topic_allowed(list, 3, "order", 5));
    ck_assert(kp_topic_allowed(list, 3, "logs.app", 8));
    ck_assert(kp_topic_allowed(list, 3, "logs.", 5));
    ck_assert(!kp_topic_allowed(list, 3, "logs", 4));
    ck_assert(!kp_topic_allowed(list, 3, "logsXapp", 8));
    ck_assert(kp_topic_allowed(list, 3, "x", 1));
    ck_assert(!kp_topic_allowed(list, 3, "y", 1));
    /* Not NUL-terminated: only topic_len bytes count. */
    ck_assert(kp_topic_allowed(list, 3, "ordersXYZ", 6));
    ck_assert(!kp_topic_allowed(list, 3, "logs.app", 4));
    ck_assert(!kp_topic_allowed(list, 2, "x", 1));
    ck_assert(kp_topic_allowed(star, 1, "a", 1));
    ck_assert(kp_topic_allowed(star, 1, "", 0));
}
END_TEST

/* ---- text formats ---- */

START_TEST(test_value)
{
    ck_assert_int_eq(parse(KP_FMT_VALUE, ' ', "t1", L("hello world")),
                     KP_REASON_NONE);
    ck_topic("t1");
    ck_null_key();
    ck_value("hello world");
    ck_plain();

    /* The separator means nothing in the value format. */
    ck_assert_int_eq(parse(KP_FMT_VALUE, ' ', "t1", L(" a b ")), KP_REASON_NONE);
    ck_value(" a b ");
}
END_TEST

START_TEST(test_value_views_into_line)
{
    static const uint8_t line[] = "topic key value";

    ck_assert_int_eq(parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL, line, 15),
                     KP_REASON_NONE);
    ck_assert_ptr_eq(m.topic, (const char *)line);
    ck_assert_ptr_eq(m.key, line + 6);
    ck_assert_ptr_eq(m.value, line + 10);
    ck_assert_uint_eq(scratch.bytes.len, 0);
}
END_TEST

START_TEST(test_key_value)
{
    ck_assert_int_eq(parse(KP_FMT_KEY_VALUE, ' ', "t", L("k1 the value")),
                     KP_REASON_NONE);
    ck_topic("t");
    ck_key("k1");
    ck_value("the value");
    ck_plain();

    /* Empty key: null key. */
    ck_assert_int_eq(parse(KP_FMT_KEY_VALUE, ' ', "t", L(" v")), KP_REASON_NONE);
    ck_null_key();
    ck_value("v");

    /* Empty value: empty, not null. */
    ck_assert_int_eq(parse(KP_FMT_KEY_VALUE, ' ', "t", L("k ")), KP_REASON_NONE);
    ck_key("k");
    ck_value("");

    /* Only the separator: null key, empty value. */
    ck_assert_int_eq(parse(KP_FMT_KEY_VALUE, ' ', "t", L(" ")), KP_REASON_NONE);
    ck_null_key();
    ck_value("");

    ck_assert_int_eq(parse(KP_FMT_KEY_VALUE, ' ', "t", L("novalue")),
                     KP_REASON_BAD_FORMAT);
}
END_TEST

START_TEST(test_topic_value)
{
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', NULL, L("orders a b  c")),
                     KP_REASON_NONE);
    ck_topic("orders");
    ck_null_key();
    ck_value("a b  c");
    ck_plain();

    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', NULL, L("orders ")),
                     KP_REASON_NONE);
    ck_topic("orders");
    ck_value("");

    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', NULL, L("orders")),
                     KP_REASON_BAD_FORMAT);
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', NULL, L(" value")),
                     KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', NULL, L("a/b value")),
                     KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', NULL, L("a\tb value")),
                     KP_REASON_BAD_TOPIC);
    /* the configuration's rule: "." and ".." are not topics */
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', NULL, L(". value")),
                     KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', NULL, L(".. value")),
                     KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL, L(".. k v")),
                     KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(pj(NULL, "{\"topic\": \"..\", \"value\": \"v\"}"),
                     KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', NULL, L("... value")),
                     KP_REASON_NONE);
    /* A fixed topic (a configuration error here) does not override. */
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', "fixed", L("mine v")),
                     KP_REASON_NONE);
    ck_topic("mine");
}
END_TEST

START_TEST(test_topic_key_value)
{
    ck_assert_int_eq(
        parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL, L("t user42 v a l u e")),
        KP_REASON_NONE);
    ck_topic("t");
    ck_key("user42");
    ck_value("v a l u e");
    ck_plain();

    ck_assert_int_eq(parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL, L("t  v")),
                     KP_REASON_NONE);
    ck_null_key();
    ck_value("v");

    ck_assert_int_eq(parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL, L("t k ")),
                     KP_REASON_NONE);
    ck_key("k");
    ck_value("");

    ck_assert_int_eq(parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL, L("t  ")),
                     KP_REASON_NONE);
    ck_null_key();
    ck_value("");

    ck_assert_int_eq(parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL, L("t k")),
                     KP_REASON_BAD_FORMAT);
    ck_assert_int_eq(parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL, L("t ")),
                     KP_REASON_BAD_FORMAT);
    ck_assert_int_eq(parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL, L("t")),
                     KP_REASON_BAD_FORMAT);
    ck_assert_int_eq(parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL, L("t$ k v")),
                     KP_REASON_BAD_TOPIC);
}
END_TEST

START_TEST(test_custom_separators)
{
    ck_assert_int_eq(
        parse(KP_FMT_TOPIC_KEY_VALUE, '\t', NULL, L("t\tk 1\tv\tw x")),
        KP_REASON_NONE);
    ck_topic("t");
    ck_key("k 1");
    ck_value("v\tw x");

    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, '|', NULL, L("t.x|a|b c")),
                     KP_REASON_NONE);
    ck_topic("t.x");
    ck_value("a|b c");

    ck_assert_int_eq(parse(KP_FMT_KEY_VALUE, ',', "t", L("k,v,1,2")),
                     KP_REASON_NONE);
    ck_key("k");
    ck_value("v,1,2");

    /* A space is then part of the topic, hence invalid. */
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ',', NULL, L("t x,v")),
                     KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ',', NULL, L("t v")),
                     KP_REASON_BAD_FORMAT);

    /* NUL and 0xff as separators. */
    ck_assert_int_eq(parse(KP_FMT_TOPIC_KEY_VALUE, 0, NULL, L("t\0k\0v\0w")),
                     KP_REASON_NONE);
    ck_topic("t");
    ck_key("k");
    ck_value("v\0w");
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, 0xff, NULL, L("t\xffv\xff")),
                     KP_REASON_NONE);
    ck_value("v\xff");
}
END_TEST

START_TEST(test_binary_bytes_kept)
{
    /* '\r', NUL, 0xff and every other byte are kept as they are. */
    ck_assert_int_eq(parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL,
                           L("t k\r\0\xff v\0\r\xff\x01\r")),
                     KP_REASON_NONE);
    ck_key("k\r\0\xff");
    ck_value("v\0\r\xff\x01\r");

    ck_assert_int_eq(parse(KP_FMT_VALUE, ' ', "t", L("\0")), KP_REASON_NONE);
    ck_value("\0");
    ck_assert_int_eq(parse(KP_FMT_VALUE, ' ', "t", L("\r")), KP_REASON_NONE);
    ck_value("\r");

    uint8_t all[255];
    for (int i = 0; i < 255; i++) {
        all[i] = (uint8_t)(i == '\n' ? 0 : i + 1);
    }
    ck_assert_int_eq(parse(KP_FMT_VALUE, ' ', "t", all, sizeof(all)),
                     KP_REASON_NONE);
    ck_assert(bytes_eq(m.value, m.value_len, all, sizeof(all)));
}
END_TEST

START_TEST(test_text_topic_length)
{
    uint8_t line[300];

    memset(line, 'a', sizeof(line));
    line[249] = ' ';
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', NULL, line, 260),
                     KP_REASON_NONE);
    ck_assert_uint_eq(m.topic_len, 249);
    ck_assert_uint_eq(m.value_len, 10);

    line[249] = 'a';
    line[250] = ' ';
    ck_assert_int_eq(parse(KP_FMT_TOPIC_VALUE, ' ', NULL, line, 260),
                     KP_REASON_BAD_TOPIC);
}
END_TEST

START_TEST(test_never_reads_past_len)
{
    /* The separator just past len must not be seen. */
    ck_assert_int_eq(
        parse(KP_FMT_TOPIC_VALUE, ' ', NULL, (const uint8_t *)"topic v", 5),
        KP_REASON_BAD_FORMAT);
    ck_assert_int_eq(
        parse(KP_FMT_TOPIC_KEY_VALUE, ' ', NULL, (const uint8_t *)"t k v", 3),
        KP_REASON_BAD_FORMAT);
    ck_assert_int_eq(
        parse(KP_FMT_TOPIC_VALUE, ' ', NULL, (const uint8_t *)"t v", 0),
        KP_REASON_BAD_FORMAT);
    ck_assert_int_eq(
        parse(KP_FMT_KEY_VALUE, ' ', "t", (const uint8_t *)"k v", 1),
        KP_REASON_BAD_FORMAT);
    ck_assert_int_eq(parse(KP_FMT_VALUE, ' ', "t", (const uint8_t *)"abc", 2),
                     KP_REASON_NONE);
    ck_assert_uint_eq(m.value_len, 2);
}
END_TEST

START_TEST(test_fixed_topic_missing)
{
    /* A configuration bug is a rejected line, not a crash. */
    ck_assert_int_eq(parse(KP_FMT_VALUE, ' ', NULL, L("v")), KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(parse(KP_FMT_KEY_VALUE, ' ', NULL, L("k v")),
                     KP_REASON_BAD_TOPIC);
}
END_TEST

START_TEST(test_parse_dispatches_json)
{
    static const uint8_t line[] = "{\"topic\":\"t\",\"value\":\"v w\"}";

    ck_assert_int_eq(kp_line_parse(KP_FMT_JSON, ' ', NULL, line,
                                   sizeof(line) - 1, &scratch, &m),
                     KP_REASON_NONE);
    ck_topic("t");
    ck_value("v w");
}
END_TEST

/* ---- json ---- */

START_TEST(test_json_basic)
{
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"orders\",\"value\":\"hello\"}"),
                     KP_REASON_NONE);
    ck_topic("orders");
    ck_null_key();
    ck_value("hello");
    ck_plain();

    /* Results point into scratch, and whitespace is allowed around. */
    ck_assert_int_eq(pj(NULL, " { \"value\" : \"v\" , \"key\" : \"k\" ,"
                              " \"topic\" : \"t\" } "),
                     KP_REASON_NONE);
    ck_topic("t");
    ck_key("k");
    ck_value("v");
    ck_assert((const uint8_t *)m.topic >= scratch.bytes.data &&
              (const uint8_t *)m.topic <
                  scratch.bytes.data + scratch.bytes.len);
    ck_assert(m.key >= scratch.bytes.data &&
              m.key < scratch.bytes.data + scratch.bytes.len);
    ck_assert(m.value >= scratch.bytes.data &&
              m.value < scratch.bytes.data + scratch.bytes.len);
}
END_TEST

START_TEST(test_json_all_fields)
{
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"key\":\"k\",\"value\":\"v\","
                              "\"partition\":7,\"timestamp\":1700000000123,"
                              "\"headers\":{\"a\":\"1\",\"b\":\"\"}}"),
                     KP_REASON_NONE);
    ck_topic("t");
    ck_key("k");
    ck_value("v");
    ck_assert_int_eq(m.partition, 7);
    ck_assert_int_eq(m.timestamp, 1700000000123LL);
    ck_assert_uint_eq(m.header_cnt, 2);
    ck_assert(bytes_eq(m.headers[0].name, m.headers[0].name_len, "a", 1));
    ck_assert(bytes_eq(m.headers[0].value, m.headers[0].value_len, "1", 1));
    ck_assert(bytes_eq(m.headers[1].name, m.headers[1].name_len, "b", 1));
    ck_assert(bytes_eq(m.headers[1].value, m.headers[1].value_len, "", 0));

    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"partition\":0,"
                              "\"timestamp\":0}"),
                     KP_REASON_NONE);
    ck_assert_int_eq(m.partition, 0);
    ck_assert_int_eq(m.timestamp, 0);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"partition\":2147483647}"),
                     KP_REASON_NONE);
    ck_assert_int_eq(m.partition, INT32_MAX);
}
END_TEST

START_TEST(test_json_no_stale_fields)
{
    /* A second line without the fields does not inherit the first's. */
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"key\":\"k\",\"value\":\"v\","
                              "\"partition\":3,\"timestamp\":5,"
                              "\"headers\":[[\"h\",\"x\"]]}"),
                     KP_REASON_NONE);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"u\"}"), KP_REASON_NONE);
    ck_topic("u");
    ck_null_key();
    ck_null_value();
    ck_plain();
}
END_TEST

START_TEST(test_json_unicode_and_escapes)
{
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":\"h\\u00e9llo\"}"),
                     KP_REASON_NONE);
    ck_value("h\xc3\xa9llo");

    /* A non-BMP character as a surrogate pair, and raw UTF-8. */
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"value\":\"\\ud83d\\ude00 \xe2\x82\xac\"}"),
        KP_REASON_NONE);
    ck_value("\xf0\x9f\x98\x80 \xe2\x82\xac");

    /* Escaped newlines stay inside the value: the line is one record. */
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"value\":\"a\\nb\\r\\n\\t\\\"\\\\/\"}"),
        KP_REASON_NONE);
    ck_value("a\nb\r\n\t\"\\/");

    /* \u0000 is kept, and lengths do not stop at it. */
    ck_assert_int_eq(
        pj(NULL,
           "{\"topic\":\"t\",\"key\":\"k\\u0000k\",\"value\":\"a\\u0000b\"}"),
        KP_REASON_NONE);
    ck_key("k\0k");
    ck_value("a\0b");

    /* Invalid UTF-8 is not JSON. */
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":\"\xff\"}"),
                     KP_REASON_BAD_JSON);
    /* A lone surrogate is not either. */
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":\"\\ud800\"}"),
                     KP_REASON_BAD_JSON);
}
END_TEST

START_TEST(test_json_value_kinds)
{
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":{\"a\": 1}}"),
                     KP_REASON_NONE);
    ck_value("{\"a\":1}");
    ck_assert_int_eq(
        pj(NULL,
           "{\"topic\":\"t\",\"value\":[1, \"x\", null, {\"b\": [true]}]}"),
        KP_REASON_NONE);
    ck_value("[1,\"x\",null,{\"b\":[true]}]");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":42}"), KP_REASON_NONE);
    ck_value("42");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":-1.5}"), KP_REASON_NONE);
    ck_value("-1.5");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":true}"), KP_REASON_NONE);
    ck_value("true");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":false}"),
                     KP_REASON_NONE);
    ck_value("false");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":{}}"), KP_REASON_NONE);
    ck_value("{}");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":[]}"), KP_REASON_NONE);
    ck_value("[]");
    /* Nested strings are re-escaped in the compact text. */
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"value\":{\"s\":\"a\\nb\\u0000\"}}"),
        KP_REASON_NONE);
    ck_value("{\"s\":\"a\\nb\\u0000\"}");

    /* null, absent: a null value; "": an empty one. */
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":null}"), KP_REASON_NONE);
    ck_null_value();
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\"}"), KP_REASON_NONE);
    ck_null_value();
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":\"\"}"), KP_REASON_NONE);
    ck_value("");
}
END_TEST

START_TEST(test_json_key)
{
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"key\":null,\"value\":\"v\"}"),
                     KP_REASON_NONE);
    ck_null_key();
    /* Unlike the text formats, JSON can say "empty" and "null" apart. */
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"key\":\"\",\"value\":\"v\"}"),
                     KP_REASON_NONE);
    ck_key("");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"key\":1}"), KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"key\":{}}"), KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"key\":[\"a\"]}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"key\":true}"),
                     KP_REASON_BAD_JSON);
}
END_TEST

START_TEST(test_json_base64)
{
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"key_base64\":\"AP8=\","
                              "\"value_base64\":\"aGVsbG8gd29ybGQ=\"}"),
                     KP_REASON_NONE);
    ck_key("\0\xff");
    ck_value("hello world");

    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value_base64\":\"AAEC\"}"),
                     KP_REASON_NONE);
    ck_value("\0\1\2");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value_base64\":\"YQ==\"}"),
                     KP_REASON_NONE);
    ck_value("a");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value_base64\":\"YWI=\"}"),
                     KP_REASON_NONE);
    ck_value("ab");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value_base64\":\"+/+/\"}"),
                     KP_REASON_NONE);
    ck_value("\xfb\xff\xbf");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value_base64\":\"\"}"),
                     KP_REASON_NONE);
    ck_value("");
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value_base64\":null}"),
                     KP_REASON_NONE);
    ck_null_value();

    static const char *const bad[] = {
        "YQ",                     /* no padding */
        "YQ=",                    /* short padding */
        "Y===",                   /* too much padding */
        "====",                   /* only padding */
        "YQ==YQ==",               /* padding in the middle */
        "YW=j",                   /* '=' before data */
        "YW J",                   /* whitespace */
        "YWJ\\n",                 /* newline */
        "YW-j",                   /* url-safe alphabet */
        "YW_j",     "YW\\u0000J", /* NUL */
        "A",
    };
    for (size_t i = 0; i < KP_ARRAY_LEN(bad); i++) {
        char line[128];
        snprintf(line, sizeof(line),
                 "{\"topic\":\"t\",\"value_base64\":\"%s\"}", bad[i]);
        ck_assert_msg(pj(NULL, line) == KP_REASON_BAD_JSON, "%s", bad[i]);
        snprintf(line, sizeof(line), "{\"topic\":\"t\",\"key_base64\":\"%s\"}",
                 bad[i]);
        ck_assert_msg(pj(NULL, line) == KP_REASON_BAD_JSON, "key %s", bad[i]);
    }
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value_base64\":12}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"key_base64\":[]}"),
                     KP_REASON_BAD_JSON);

    /* Both forms of one field are ambiguous. */
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"key\":\"a\",\"key_base64\":\"YQ==\"}"),
        KP_REASON_BAD_JSON);
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"value_base64\":\"YQ==\",\"value\":\"a\"}"),
        KP_REASON_BAD_JSON);
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"value_base64\":\"YQ==\",\"value\":1}"),
        KP_REASON_BAD_JSON);
    /* ... unless one of them is null, which is the same as absent. */
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"key\":null,\"key_base64\":\"YQ==\"}"),
        KP_REASON_NONE);
    ck_key("a");
}
END_TEST

START_TEST(test_json_headers)
{
    /* Array form: repeated names, order kept, null values. */
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"headers\":[[\"a\",\"1\"],[\"b\",null],"
                 "[\"a\",\"2\"],[\"\",\"e\\u0000\"]]}"),
        KP_REASON_NONE);
    ck_assert_uint_eq(m.header_cnt, 4);
    ck_assert(bytes_eq(m.headers[0].name, m.headers[0].name_len, "a", 1));
    ck_assert(bytes_eq(m.headers[0].value, m.headers[0].value_len, "1", 1));
    ck_assert(bytes_eq(m.headers[1].name, m.headers[1].name_len, "b", 1));
    ck_assert_ptr_null(m.headers[1].value);
    ck_assert_uint_eq(m.headers[1].value_len, 0);
    ck_assert(bytes_eq(m.headers[2].name, m.headers[2].name_len, "a", 1));
    ck_assert(bytes_eq(m.headers[2].value, m.headers[2].value_len, "2", 1));
    ck_assert(bytes_eq(m.headers[3].name, m.headers[3].name_len, "", 0));
    ck_assert(bytes_eq(m.headers[3].value, m.headers[3].value_len, "e\0", 2));

    /* Object form keeps the written order. */
    ck_assert_int_eq(pj(NULL,
                        "{\"topic\":\"t\",\"headers\":{\"z\":\"1\",\"a\":\"2\","
                        "\"m\":\"3\"}}"),
                     KP_REASON_NONE);
    ck_assert_uint_eq(m.header_cnt, 3);
    ck_assert(bytes_eq(m.headers[0].name, m.headers[0].name_len, "z", 1));
    ck_assert(bytes_eq(m.headers[1].name, m.headers[1].name_len, "a", 1));
    ck_assert(bytes_eq(m.headers[2].name, m.headers[2].name_len, "m", 1));
    ck_assert(bytes_eq(m.headers[2].value, m.headers[2].value_len, "3", 1));

    /* Empty forms and null: no headers. */
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"headers\":{}}"), KP_REASON_NONE);
    ck_assert_uint_eq(m.header_cnt, 0);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"headers\":[]}"), KP_REASON_NONE);
    ck_assert_uint_eq(m.header_cnt, 0);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"headers\":null}"),
                     KP_REASON_NONE);
    ck_assert_uint_eq(m.header_cnt, 0);

    static const char *const bad[] = {
        "\"a\"",
        "1",
        "true",
        "{\"a\":1}",
        "{\"a\":null}",
        "{\"a\":[\"x\"]}",
        "{\"a\":{}}",
        "[\"a\"]",
        "[[\"a\"]]",
        "[[\"a\",\"b\",\"c\"]]",
        "[[1,\"b\"]]",
        "[[null,\"b\"]]",
        "[[\"a\",1]]",
        "[[\"a\",[]]]",
        "[{\"a\":\"b\"}]",
        "[[\"a\",\"b\"],5]",
    };
    for (size_t i = 0; i < KP_ARRAY_LEN(bad); i++) {
        char line[128];
        snprintf(line, sizeof(line), "{\"topic\":\"t\",\"headers\":%s}",
                 bad[i]);
        ck_assert_msg(pj(NULL, line) == KP_REASON_BAD_JSON, "%s", bad[i]);
    }
}
END_TEST

START_TEST(test_json_many_headers)
{
    /* Enough data to make the scratch grow several times. */
    char *line = kp_malloc(200000);
    size_t n = 0;

    n += (size_t)sprintf(line + n, "{\"topic\":\"t\",\"value\":\"");
    for (int i = 0; i < 5000; i++) {
        line[n++] = 'v';
    }
    n += (size_t)sprintf(line + n, "\",\"headers\":[");
    for (int i = 0; i < 3000; i++) {
        n += (size_t)sprintf(line + n, "%s[\"name%d\",\"value%d\"]",
                             i ? "," : "", i, i);
    }
    n += (size_t)sprintf(line + n, "],\"key\":\"kk\"}");
    ck_assert_int_eq(
        kp_line_parse_json(NULL, (const uint8_t *)line, n, &scratch, &m),
        KP_REASON_NONE);
    ck_topic("t");
    ck_key("kk");
    ck_assert_uint_eq(m.value_len, 5000);
    ck_assert_uint_eq(m.header_cnt, 3000);
    for (int i = 0; i < 3000; i++) {
        char nm[32], val[32];
        snprintf(nm, sizeof(nm), "name%d", i);
        snprintf(val, sizeof(val), "value%d", i);
        ck_assert(
            bytes_eq(m.headers[i].name, m.headers[i].name_len, nm, strlen(nm)));
        ck_assert(bytes_eq(m.headers[i].value, m.headers[i].value_len, val,
                           strlen(val)));
    }
    free(line);
}
END_TEST

START_TEST(test_json_partition)
{
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"partition\":-1}"),
                     KP_REASON_BAD_PARTITION);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"partition\":2147483648}"),
                     KP_REASON_BAD_PARTITION);
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"partition\":9223372036854775807}"),
        KP_REASON_BAD_PARTITION);
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"partition\":-9223372036854775808}"),
        KP_REASON_BAD_PARTITION);
    /* Beyond int64: jansson refuses the document, no UB. */
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"partition\":99999999999999999999}"),
        KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"partition\":1e400}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"partition\":1.0}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"partition\":\"1\"}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"partition\":true}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"partition\":[1]}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"partition\":null}"),
                     KP_REASON_NONE);
    ck_assert_int_eq(m.partition, -1);
}
END_TEST

START_TEST(test_json_timestamp)
{
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"timestamp\":9223372036854775807}"),
        KP_REASON_NONE);
    ck_assert_int_eq(m.timestamp, INT64_MAX);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"timestamp\":-1}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"timestamp\":99999999999999999999}"),
        KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"timestamp\":1e400}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"timestamp\":1.7e12}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"timestamp\":\"2024\"}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"timestamp\":{}}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"timestamp\":null}"),
                     KP_REASON_NONE);
    ck_assert_int_eq(m.timestamp, -1);
}
END_TEST

START_TEST(test_json_topic)
{
    char line[400];

    ck_assert_int_eq(pj(NULL, "{\"value\":\"v\"}"), KP_REASON_BAD_FORMAT);
    ck_assert_int_eq(pj(NULL, "{\"topic\":null}"), KP_REASON_BAD_FORMAT);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"\"}"), KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"a b\"}"), KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"a\\u0000\"}"), KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"caf\\u00e9\"}"), KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(pj(NULL, "{\"topic\":1}"), KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":[\"t\"]}"), KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":{}}"), KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":false}"), KP_REASON_BAD_JSON);

    memset(line, 0, sizeof(line));
    memcpy(line, "{\"topic\":\"", 10);
    memset(line + 10, 'x', 249);
    memcpy(line + 259, "\"}", 2);
    ck_assert_int_eq(pj(NULL, line), KP_REASON_NONE);
    ck_assert_uint_eq(m.topic_len, 249);
    memset(line + 10, 'x', 250);
    memcpy(line + 260, "\"}", 2);
    ck_assert_int_eq(pj(NULL, line), KP_REASON_BAD_TOPIC);
}
END_TEST

START_TEST(test_json_fixed_topic)
{
    /* The listener's topic when the line has none, copied into scratch. */
    ck_assert_int_eq(pj("fixed", "{\"value\":\"v\"}"), KP_REASON_NONE);
    ck_topic("fixed");
    ck_assert((const uint8_t *)m.topic >= scratch.bytes.data &&
              (const uint8_t *)m.topic <
                  scratch.bytes.data + scratch.bytes.len);
    ck_value("v");
    ck_assert_int_eq(pj("fixed", "{\"topic\":null,\"value\":\"v\"}"),
                     KP_REASON_NONE);
    ck_topic("fixed");
    /* The same topic on the line is fine, a different one is not. */
    ck_assert_int_eq(pj("fixed", "{\"topic\":\"fixed\",\"value\":\"v\"}"),
                     KP_REASON_NONE);
    ck_topic("fixed");
    ck_assert_int_eq(pj("fixed", "{\"topic\":\"other\",\"value\":\"v\"}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj("fixed", "{\"topic\":\"fixe\",\"value\":\"v\"}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj("fixed", "{\"topic\":\"fixedd\",\"value\":\"v\"}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj("fixed", "{\"topic\":\"a b\"}"), KP_REASON_BAD_TOPIC);
    ck_assert_int_eq(pj("fixed", "{\"topic\":3}"), KP_REASON_BAD_JSON);
}
END_TEST

START_TEST(test_json_not_an_object)
{
    static const char *const bad[] = {
        "[]",
        "[{\"topic\":\"t\"}]",
        "\"t\"",
        "42",
        "null",
        "true",
        "garbage",
        "{",
        "{\"topic\":\"t\"",
        "{\"topic\":\"t\",}",
        "{topic:\"t\"}",
        "{'topic':'t'}",
        "{\"topic\":\"t\"} {}",
        "{\"topic\":\"t\"}x",
        "{\"topic\":\"t\",\"value\":\"a\nb\"}", /* raw control byte */
        "{\"topic\":\"t\",\"value\":NaN}",
        "{\"topic\":\"t\",\"value\":1e400}",
        "",
        " ",
    };
    for (size_t i = 0; i < KP_ARRAY_LEN(bad); i++) {
        ck_assert_msg(pj(NULL, bad[i]) == KP_REASON_BAD_JSON, "'%s'", bad[i]);
        ck_assert_msg(pj("t", bad[i]) == KP_REASON_BAD_JSON, "fixed '%s'", bad[i]);
    }
    /* NUL bytes outside strings. */
    ck_assert_int_eq(
        kp_line_parse_json(NULL, L("{\"topic\":\"t\"}\0"), &scratch, &m),
        KP_REASON_BAD_JSON);
    ck_assert_int_eq(
        kp_line_parse_json(NULL, L("{\"topic\":\"t\"\0}"), &scratch, &m),
        KP_REASON_BAD_JSON);
}
END_TEST

START_TEST(test_json_duplicates_and_unknown)
{
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"topic\":\"t\"}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"value\":\"a\",\"value\":\"b\"}"),
        KP_REASON_BAD_JSON);
    ck_assert_int_eq(
        pj(NULL, "{\"topic\":\"t\",\"headers\":{\"a\":\"1\",\"a\":\"2\"}}"),
        KP_REASON_BAD_JSON);
    /* Strict: unknown fields (a typo would misroute silently). */
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"partiton\":1}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"Value\":\"v\"}"),
                     KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"\":\"v\"}"), KP_REASON_BAD_JSON);
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\\u0000\":\"v\"}"),
                     KP_REASON_BAD_JSON);
    /* The dead-letter file's extra fields replay as they are. */
    ck_assert_int_eq(pj(NULL, "{\"topic\":\"t\",\"value\":\"v\","
                              "\"error\":\"MESSAGE_TOO_LARGE\","
                              "\"failed_at\":1700000000000}"),
                     KP_REASON_NONE);
    ck_value("v");
}
END_TEST

START_TEST(test_json_reject_order)
{
    /* A bad field anywhere wins over a missing topic. */
    ck_assert_int_eq(pj(NULL, "{\"partition\":-3}"), KP_REASON_BAD_PARTITION);
    ck_assert_int_eq(pj(NULL, "{\"key\":5}"), KP_REASON_BAD_JSON);
}
END_TEST

static Suite *line_suite(void)
{
    Suite *s = suite_create("line");
    TCase *tc = tcase_create("line");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_reject_names);
    tcase_add_test(tc, test_topic_name_valid);
    tcase_add_test(tc, test_topic_allowed);
    tcase_add_test(tc, test_value);
    tcase_add_test(tc, test_value_views_into_line);
    tcase_add_test(tc, test_key_value);
    tcase_add_test(tc, test_topic_value);
    tcase_add_test(tc, test_topic_key_value);
    tcase_add_test(tc, test_custom_separators);
    tcase_add_test(tc, test_binary_bytes_kept);
    tcase_add_test(tc, test_text_topic_length);
    tcase_add_test(tc, test_never_reads_past_len);
    tcase_add_test(tc, test_fixed_topic_missing);
    tcase_add_test(tc, test_parse_dispatches_json);
    tcase_add_test(tc, test_json_basic);
    tcase_add_test(tc, test_json_all_fields);
    tcase_add_test(tc, test_json_no_stale_fields);
    tcase_add_test(tc, test_json_unicode_and_escapes);
    tcase_add_test(tc, test_json_value_kinds);
    tcase_add_test(tc, test_json_key);
    tcase_add_test(tc, test_json_base64);
    tcase_add_test(tc, test_json_headers);
    tcase_add_test(tc, test_json_many_headers);
    tcase_add_test(tc, test_json_partition);
    tcase_add_test(tc, test_json_timestamp);
    tcase_add_test(tc, test_json_topic);
    tcase_add_test(tc, test_json_fixed_topic);
    tcase_add_test(tc, test_json_not_an_object);
    tcase_add_test(tc, test_json_duplicates_and_unknown);
    tcase_add_test(tc, test_json_reject_order);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(line_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
