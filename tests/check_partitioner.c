/*
 * check_partitioner.c - the keyed partitioners against the clients they
 * imitate: Java's murmur2 (Kafka UtilsTest.testMurmur2 vectors, plus
 * librdkafka's rdmurmur2 unit-test vectors), Go's FNV-1a with sarama's sign
 * handling, zlib's CRC-32 with librdkafka's consistent partitioner. The
 * expected partitions were computed by hand (Python) from each client's
 * formula, not from this code.
 */
#include <check.h>

#include "kp_partitioner.h"

#define S(str) (const uint8_t *)(str), (sizeof(str) - 1)

START_TEST(test_murmur2_java_vectors)
{
    /* org.apache.kafka.common.utils.UtilsTest#testMurmur2 (Java ints). */
    ck_assert_int_eq((int32_t)kp_murmur2(S("21")), -973932308);
    ck_assert_int_eq((int32_t)kp_murmur2(S("foobar")), -790332482);
    ck_assert_int_eq((int32_t)kp_murmur2(S("a-little-bit-long-string")),
                     -985981536);
    ck_assert_int_eq((int32_t)kp_murmur2(S("a-little-bit-longer-string")),
                     -1486304829);
    ck_assert_int_eq((int32_t)kp_murmur2(
                         S("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8")),
                     -58897971);
    const uint8_t abc[] = {'a', 'b', 'c'};
    ck_assert_int_eq((int32_t)kp_murmur2(abc, sizeof(abc)), 479470107);
    ck_assert_int_eq((int32_t)kp_murmur2(S("")), 275646681);
}
END_TEST

START_TEST(test_murmur2_rdkafka_vectors)
{
    /* librdkafka rdmurmur2.c unittest (Java-compatible murmur2). */
    ck_assert_uint_eq(kp_murmur2(S("kafka")), 0xd067cf64u);
    ck_assert_uint_eq(kp_murmur2(S("giberish123456789")), 0x8f552b0cu);
    ck_assert_uint_eq(kp_murmur2(S("1234")), 0x9fc97b14u);
    ck_assert_uint_eq(kp_murmur2(S("234")), 0xe7c009cau);
    ck_assert_uint_eq(kp_murmur2(S("34")), 0x873930dau);
}
END_TEST

START_TEST(test_murmur2_high_bytes)
{
    /* Bytes >= 0x80, in whole words and in the tail: Java masks them
     * (& 0xff), so a sign-extending port differs here. Expected values:
     * librdkafka's rd_kafka_msg_partitioner_murmur2 with 0x7fffffff
     * partitions, i.e. toPositive(murmur2). */
    const uint8_t k1[] = {0xff};
    const uint8_t k3[] = {0xfe, 0xfd, 0x80};
    const uint8_t k5[] = {0x80, 0x81, 0x82, 0x83, 0xfe};
    ck_assert_uint_eq(kp_murmur2(k1, sizeof(k1)) & 0x7fffffff, 1836015963u);
    ck_assert_uint_eq(kp_murmur2(k3, sizeof(k3)) & 0x7fffffff, 1586939655u);
    ck_assert_uint_eq(kp_murmur2(k5, sizeof(k5)) & 0x7fffffff, 152038955u);
}
END_TEST

START_TEST(test_murmur2_partition)
{
    /* toPositive(murmur2) % n: foobar -> 1357151166. */
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_MURMUR2, S("foobar"), 50), 16);
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_MURMUR2, S("foobar"), 7),
                     (int32_t)(1357151166u % 7));
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_MURMUR2, S("21"), 100),
                     (int32_t)((uint32_t)(-973932308 & 0x7fffffff) % 100));
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_MURMUR2, S("21"), 1), 0);
}
END_TEST

START_TEST(test_fnv1a_vectors)
{
    ck_assert_uint_eq(kp_fnv1a(S("")), 0x811c9dc5u);
    ck_assert_uint_eq(kp_fnv1a(S("a")), 0xe40c292cu);
    ck_assert_uint_eq(kp_fnv1a(S("foobar")), 0xbf9cf968u);
}
END_TEST

START_TEST(test_fnv1a_partition)
{
    /* sarama: p = int32(h) % n (truncating), then -p if negative.
     * "a": int32 -468965076; % 7 = -6 -> 6 (Java-style toPositive would
     * give 3: the sign handling matters). */
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_FNV1A, S("a"), 7), 6);
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_FNV1A, S("a"), 100), 76);
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_FNV1A, S("foobar"), 7), 4);
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_FNV1A, S("foobar"), 10), 6);
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_FNV1A, S(""), 100), 35);
    /* Positive hashes: plain modulo. */
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_FNV1A, S("key-1"), 10), 8);
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_FNV1A, S("hello"), 100), 23);
}
END_TEST

START_TEST(test_crc32)
{
    ck_assert_uint_eq(kp_crc32(S("123456789")), 0xcbf43926u);
    ck_assert_uint_eq(kp_crc32(S("")), 0);
    /* librdkafka consistent: unsigned crc32 % n. */
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_CRC32, S("123456789"), 10), 2);
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_CRC32, S("123456789"), 100),
                     62);
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_CRC32, S("foobar"), 7), 6);
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_CRC32, S("hello"), 100), 70);
    ck_assert_int_eq(kp_partitioner_pick(KP_PART_CRC32, S("key-1"), 3), 2);
}
END_TEST

START_TEST(test_range)
{
    uint8_t key[16];
    for (int i = 0; i < 2000; i++) {
        for (size_t j = 0; j < sizeof(key); j++) {
            key[j] = (uint8_t)(i * 31 + j * 17 + (i >> 3));
        }
        int32_t n = 1 + i % 97;
        for (int kind = 0; kind < KP_PART__COUNT; kind++) {
            int32_t p = kp_partitioner_pick((enum kp_partitioner_kind)kind, key,
                                            1 + (size_t)i % 16, n);
            ck_assert_int_ge(p, 0);
            ck_assert_int_lt(p, n);
        }
    }
}
END_TEST

static Suite *partitioner_suite(void)
{
    Suite *s = suite_create("partitioner");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_murmur2_java_vectors);
    tcase_add_test(tc, test_murmur2_rdkafka_vectors);
    tcase_add_test(tc, test_murmur2_high_bytes);
    tcase_add_test(tc, test_murmur2_partition);
    tcase_add_test(tc, test_fnv1a_vectors);
    tcase_add_test(tc, test_fnv1a_partition);
    tcase_add_test(tc, test_crc32);
    tcase_add_test(tc, test_range);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(partitioner_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
