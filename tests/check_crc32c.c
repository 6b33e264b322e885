/*
 * check_crc32c.c - CRC-32C: published vectors (RFC 3720 B.4 and the
 * "123456789" check value), the hardware and table paths agreeing on every
 * length and alignment (including the 3-lane interleaved path for long
 * buffers), and incremental computation equal to one-shot.
 */
#include <check.h>
#include <stdio.h>

#include "kp_crc32c.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)rng();
    }
}

START_TEST(test_check_value)
{
    ck_assert_uint_eq(kp_crc32c(0, "123456789", 9), 0xe3069283u);
    ck_assert_uint_eq(kp_crc32c_sw(0, "123456789", 9), 0xe3069283u);
    ck_assert_uint_eq(kp_crc32c(0, "", 0), 0);
    ck_assert_uint_eq(kp_crc32c_sw(0, "", 0), 0);
    /* Continuing with nothing leaves the value alone. */
    ck_assert_uint_eq(kp_crc32c(0xe3069283u, "", 0), 0xe3069283u);
}
END_TEST

/* RFC 3720 appendix B.4 (iSCSI) test patterns. */
START_TEST(test_rfc3720)
{
    uint8_t buf[32];

    memset(buf, 0, sizeof(buf));
    ck_assert_uint_eq(kp_crc32c(0, buf, 32), 0x8a9136aau);
    ck_assert_uint_eq(kp_crc32c_sw(0, buf, 32), 0x8a9136aau);
    memset(buf, 0xff, sizeof(buf));
    ck_assert_uint_eq(kp_crc32c(0, buf, 32), 0x62a8ab43u);
    ck_assert_uint_eq(kp_crc32c_sw(0, buf, 32), 0x62a8ab43u);
    for (int i = 0; i < 32; i++) {
        buf[i] = (uint8_t)i;
    }
    ck_assert_uint_eq(kp_crc32c(0, buf, 32), 0x46dd794eu);
    ck_assert_uint_eq(kp_crc32c_sw(0, buf, 32), 0x46dd794eu);
    for (int i = 0; i < 32; i++) {
        buf[i] = (uint8_t)(31 - i);
    }
    ck_assert_uint_eq(kp_crc32c(0, buf, 32), 0x113fdb5cu);
    ck_assert_uint_eq(kp_crc32c_sw(0, buf, 32), 0x113fdb5cu);
}
END_TEST

/* A bitwise reference, independent of both tables and the instruction. */
static uint32_t crc32c_bitwise(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        }
    }
    return ~c;
}

START_TEST(test_paths_agree)
{
    /* Long enough for several 3 x 4 KiB interleaved rounds plus tails. */
    size_t cap = 3 * 4096 * 5 + 200;
    uint8_t *buf = kp_malloc(cap + 8);
    fill_random(buf, cap + 8);

    for (size_t off = 0; off < 8; off++) {
        for (size_t len = 0; len <= 300; len++) {
            uint32_t sw = kp_crc32c_sw(0, buf + off, len);
            ck_assert_uint_eq(kp_crc32c(0, buf + off, len), sw);
            ck_assert_uint_eq(crc32c_bitwise(buf + off, len), sw);
        }
        static const size_t lens[] = {
            4095,      4096,  12287,     12288,        12289,
            12288 + 7, 24576, 24576 + 9, 3 * 4096 * 5, 3 * 4096 * 5 + 200};
        for (size_t i = 0; i < KP_ARRAY_LEN(lens); i++) {
            uint32_t sw = kp_crc32c_sw(0, buf + off, lens[i]);
            ck_assert_uint_eq(kp_crc32c(0, buf + off, lens[i]), sw);
            ck_assert_uint_eq(crc32c_bitwise(buf + off, lens[i]), sw);
        }
    }
    free(buf);
}
END_TEST

START_TEST(test_random_lengths)
{
    size_t cap = 1 << 20;
    uint8_t *buf = kp_malloc(cap);
    fill_random(buf, cap);

    for (int i = 0; i < 200; i++) {
        size_t off = rng() % 64;
        size_t len = rng() % (cap - off);
        ck_assert_uint_eq(kp_crc32c(0, buf + off, len),
                          kp_crc32c_sw(0, buf + off, len));
    }
    free(buf);
}
END_TEST

START_TEST(test_incremental)
{
    size_t cap = 100000;
    uint8_t *buf = kp_malloc(cap);
    fill_random(buf, cap);

    for (int i = 0; i < 300; i++) {
        size_t len = rng() % cap;
        size_t a = len ? rng() % (len + 1) : 0;
        size_t b = a + (len - a ? rng() % (len - a + 1) : 0);
        uint32_t one = kp_crc32c(0, buf, len);
        uint32_t hw = kp_crc32c(kp_crc32c(kp_crc32c(0, buf, a), buf + a, b - a),
                                buf + b, len - b);
        uint32_t sw =
            kp_crc32c_sw(kp_crc32c_sw(kp_crc32c_sw(0, buf, a), buf + a, b - a),
                         buf + b, len - b);
        ck_assert_uint_eq(hw, one);
        ck_assert_uint_eq(sw, one);
        /* Mixing the paths mid-stream works too: same state either way. */
        ck_assert_uint_eq(kp_crc32c_sw(kp_crc32c(0, buf, a), buf + a, len - a),
                          one);
    }
    free(buf);
}
END_TEST

START_TEST(test_detects_change)
{
    uint8_t buf[1000];
    fill_random(buf, sizeof(buf));
    uint32_t c = kp_crc32c(0, buf, sizeof(buf));
    for (size_t i = 0; i < sizeof(buf); i += 37) {
        buf[i] ^= 0x10;
        ck_assert_uint_ne(kp_crc32c(0, buf, sizeof(buf)), c);
        buf[i] ^= 0x10;
    }
    ck_assert_uint_eq(kp_crc32c(0, buf, sizeof(buf)), c);
}
END_TEST

static Suite *crc32c_suite(void)
{
    Suite *s = suite_create("crc32c");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_check_value);
    tcase_add_test(tc, test_rfc3720);
    tcase_add_test(tc, test_paths_agree);
    tcase_add_test(tc, test_random_lengths);
    tcase_add_test(tc, test_incremental);
    tcase_add_test(tc, test_detects_change);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
#if defined(__x86_64__)
    printf("crc32c: sse4.2 %s\n",
           __builtin_cpu_supports("sse4.2") ? "present" : "absent");
#endif
    SRunner *sr = srunner_create(crc32c_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
