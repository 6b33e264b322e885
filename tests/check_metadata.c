/*
 * check_metadata.c - kp_metadata's checks of untrusted Metadata answers:
 * the broker count read before decoding, which broker entries are
 * believed, and which partition lists make a topic (dense ids 0..n-1,
 * at most KP_MD_MAX_PARTITIONS).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "kp_buf.h"
#include "kp_kerr.h"
#include "kp_metadata.h"
#include "kp_proto.h"

/* A Metadata body with `n` brokers claimed (and none present). */
static size_t body_claiming(uint8_t *out, int16_t version, int64_t n)
{
    struct kp_buf b;
    kp_buf_init(&b, 64);
    if (version >= 3) {
        kp_buf_put_i32(&b, 0); /* ThrottleTimeMs */
    }
    if (kp_proto_flexible(KP_API_METADATA, version)) {
        kp_buf_put_uvarint(&b, (uint64_t)(n + 1));
    } else {
        kp_buf_put_i32(&b, (int32_t)n);
    }
    size_t len = b.len;
    memcpy(out, b.data, len);
    kp_buf_deinit(&b);
    return len;
}

START_TEST(peek_brokers_counts)
{
    uint8_t body[32];
    size_t len = body_claiming(body, 1, 3);
    ck_assert_int_eq(kp_metadata_peek_brokers(body, len, 1), 3);
    len = body_claiming(body, 5, 100000);
    ck_assert_int_eq(kp_metadata_peek_brokers(body, len, 5), 100000);
    len = body_claiming(body, 12, 2);
    ck_assert_int_eq(kp_metadata_peek_brokers(body, len, 12), 2);
    len = body_claiming(body, 12, 0x7fffffff);
    ck_assert_int_eq(kp_metadata_peek_brokers(body, len, 12), 0x7fffffff);
    /* Truncated, a null array: nothing to believe. */
    ck_assert_int_eq(kp_metadata_peek_brokers(body, 2, 12), -1);
    len = body_claiming(body, 1, -1);
    ck_assert_int_eq(kp_metadata_peek_brokers(body, len, 1), -1);
    ck_assert_int_eq(kp_metadata_peek_brokers(NULL, 0, 1), -1);
}
END_TEST

START_TEST(broker_entries)
{
    char long_name[300], long_label[80];

    ck_assert(kp_metadata_broker_ok(1, "kafka-1.example.com", 9092));
    ck_assert(kp_metadata_broker_ok(0, "b_2.internal.", 1));
    ck_assert(kp_metadata_broker_ok(7, "10.0.0.1", 65535));
    ck_assert(kp_metadata_broker_ok(7, "::1", 9092));
    ck_assert(kp_metadata_broker_ok(7, "fe80::1", 9092));
    ck_assert(!kp_metadata_broker_ok(-1, "kafka", 9092));
    ck_assert(!kp_metadata_broker_ok(1, "kafka", 0));
    ck_assert(!kp_metadata_broker_ok(1, "kafka", 65536));
    ck_assert(!kp_metadata_broker_ok(1, "kafka", -1));
    ck_assert(!kp_metadata_broker_ok(1, "", 9092));
    ck_assert(!kp_metadata_broker_ok(1, NULL, 9092));
    ck_assert(!kp_metadata_broker_ok(1, "bad host", 9092));
    ck_assert(!kp_metadata_broker_ok(1, "a..b", 9092));
    ck_assert(!kp_metadata_broker_ok(1, ".a", 9092));
    ck_assert(!kp_metadata_broker_ok(1, "-a", 9092));
    ck_assert(!kp_metadata_broker_ok(1, "a-", 9092));
    ck_assert(!kp_metadata_broker_ok(1, "a-.b", 9092));
    ck_assert(!kp_metadata_broker_ok(1, "[::1", 9092));
    ck_assert(!kp_metadata_broker_ok(1, "\x01\x02", 9092));
    ck_assert(!kp_metadata_broker_ok(1, "h\xc3\xa9", 9092));
    memset(long_label, 'a', 64);
    long_label[64] = '\0';
    ck_assert(!kp_metadata_broker_ok(1, long_label, 9092));
    long_label[63] = '\0';
    ck_assert(kp_metadata_broker_ok(1, long_label, 9092));
    for (int i = 0; i < 254; i++) {
        long_name[i] = (i % 10 == 9) ? '.' : 'a';
    }
    long_name[254] = '\0';
    ck_assert(!kp_metadata_broker_ok(1, long_name, 9092));
    long_name[253] = '\0';
    ck_assert(kp_metadata_broker_ok(1, long_name, 9092));
}
END_TEST

static char topic_name[] = "t";

static struct kp_md_topic topic_of(struct kp_md_partition *p, int32_t n)
{
    struct kp_md_topic t = {
        .error = 0, .name = topic_name, .partitions = p, .partition_cnt = n};
    return t;
}

START_TEST(leaders_dense)
{
    struct kp_md_partition p[3] = {
        {.error = 0, .partition = 2, .leader = 5},
        {.error = 0, .partition = 0, .leader = 3},
        {.error = KP_KERR_LEADER_NOT_AVAILABLE, .partition = 1, .leader = 4},
    };
    struct kp_md_topic t = topic_of(p, 3);
    const char *why = NULL;
    int32_t cnt = -1;
    int32_t *l = kp_metadata_leaders(&t, &cnt, &why);
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(cnt, 3);
    ck_assert_int_eq(l[0], 3);
    ck_assert_int_eq(l[1], -1); /* no usable leader */
    ck_assert_int_eq(l[2], 5);
    free(l);
    p[2].error = KP_KERR_REPLICA_NOT_AVAILABLE; /* usable */
    p[1].leader = -1;                           /* partition 0: none */
    l = kp_metadata_leaders(&t, &cnt, &why);
    ck_assert_int_eq(l[0], -1);
    ck_assert_int_eq(l[1], 4);
    ck_assert_int_eq(l[2], 5);
    free(l);
}
END_TEST

START_TEST(leaders_refused)
{
    struct kp_md_partition one = {.partition = 999999, .leader = 1};
    struct kp_md_topic t = topic_of(&one, 1);
    const char *why = NULL;
    int32_t cnt = -1;

    ck_assert_ptr_null(kp_metadata_leaders(&t, &cnt, &why));
    ck_assert_str_eq(why, "partition ids are not 0..n-1");
    ck_assert_int_eq(cnt, 0);
    one.partition = -1;
    ck_assert_ptr_null(kp_metadata_leaders(&t, &cnt, &why));

    struct kp_md_partition dup[2] = {{.partition = 0}, {.partition = 0}};
    t = topic_of(dup, 2);
    ck_assert_ptr_null(kp_metadata_leaders(&t, &cnt, &why));

    t = topic_of(NULL, 0);
    ck_assert_ptr_null(kp_metadata_leaders(&t, &cnt, &why));
    ck_assert_str_eq(why, "no partitions");

    int32_t n = KP_MD_MAX_PARTITIONS + 1;
    struct kp_md_partition *many = calloc((size_t)n, sizeof(*many));
    for (int32_t i = 0; i < n; i++) {
        many[i].partition = i;
    }
    t = topic_of(many, n);
    ck_assert_ptr_null(kp_metadata_leaders(&t, &cnt, &why));
    ck_assert_str_eq(why, "more partitions than kproxyd believes");
    t = topic_of(many, n - 1);
    int32_t *l = kp_metadata_leaders(&t, &cnt, &why);
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(cnt, KP_MD_MAX_PARTITIONS);
    free(l);
    free(many);
}
END_TEST

static Suite *metadata_suite(void)
{
    Suite *s = suite_create("metadata");
    TCase *tc = tcase_create("checks");
    tcase_add_test(tc, peek_brokers_counts);
    tcase_add_test(tc, broker_entries);
    tcase_add_test(tc, leaders_dense);
    tcase_add_test(tc, leaders_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metadata_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
