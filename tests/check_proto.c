/*
 * check_proto.c - unit tests for kp_proto: every request at every version
 * against golden bytes written by hand from the apache/kafka message JSON
 * (field by field, not produced by the encoder), the spliced-iovec output
 * at every skip offset, response decoders against hand-written responses
 * at every version (unknown tagged fields, null strings, error codes), and
 * hostile input: every truncation, oversized counts, negative lengths,
 * byte mutations.
 *
 * Golden requests omit the leading int32 size: expect_req() checks it as
 * the length of the rest. Client id "kp", correlation id 7 throughout.
 */
#include "kp_kerr.h"
#include "kp_proto.h"

#include <check.h>
#include <stdio.h>

#define B16(v) (uint8_t)((uint16_t)(v) >> 8), (uint8_t)((uint16_t)(v)&0xff)
#define B32(v)                                                                 \
    (uint8_t)((uint32_t)(v) >> 24), (uint8_t)(((uint32_t)(v) >> 16) & 0xff),   \
        (uint8_t)(((uint32_t)(v) >> 8) & 0xff), (uint8_t)((uint32_t)(v)&0xff)
#define B64(v) B32((uint64_t)(v) >> 32), B32((uint64_t)(v)&0xffffffffu)

/* RequestHeader v1: RequestApiKey, RequestApiVersion, CorrelationId 7,
 * ClientId "kp" (int16 length in both header versions). */
#define HDR1(key, ver) B16(key), B16(ver), B32(7), 0x00, 0x02, 'k', 'p'
/* RequestHeader v2: v1 + empty TaggedFields. */
#define HDR2(key, ver) HDR1(key, ver), 0x00

#define UUID0 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
#define UUID1                                                                  \
    0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,    \
        0x11, 0x11, 0x11, 0x11
/* An unknown tagged-field section: one field, tag 5, 3 bytes. */
#define TAGS_UNKNOWN 0x01, 0x05, 0x03, 0xaa, 0xbb, 0xcc

struct golden {
    int16_t version;
    const uint8_t *bytes;
    size_t len;
};
#define G(v, ...)                                                              \
    {                                                                          \
        v, (const uint8_t[]){__VA_ARGS__},                                     \
            sizeof((const uint8_t[]){__VA_ARGS__})                             \
    }

static void hexdump(const char *what, const uint8_t *p, size_t n)
{
    fprintf(stderr, "%s (%zu):", what, n);
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, "%s%02x", i % 16 ? " " : "\n  ", p[i]);
    }
    fprintf(stderr, "\n");
}

/* Flattens the iovecs of q from skip into a new buffer (*len bytes). */
static uint8_t *flatten(const struct kp_req *q, size_t skip, size_t max,
                        size_t *len, size_t *iov_cnt)
{
    struct iovec iov[64];
    size_t n = kp_req_iov(q, skip, iov, max < 64 ? max : 64);
    uint8_t *out = malloc(q->total + 1);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_gt(iov[i].iov_len, 0);
        ck_assert_uint_le(off + iov[i].iov_len, q->total);
        memcpy(out + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    *len = off;
    *iov_cnt = n;
    return out;
}

/* The finished request must be size(golden) + golden through the iovecs,
 * from every skip offset, and with max = 1 give a prefix. */
static void expect_req(const struct kp_req *q, const uint8_t *g, size_t glen,
                       const char *what, int version)
{
    size_t total = glen + 4;
    uint8_t *exp = malloc(total);
    exp[0] = (uint8_t)(glen >> 24);
    exp[1] = (uint8_t)(glen >> 16);
    exp[2] = (uint8_t)(glen >> 8);
    exp[3] = (uint8_t)glen;
    memcpy(exp + 4, g, glen);

    size_t len, cnt;
    uint8_t *got = flatten(q, 0, 64, &len, &cnt);
    if (len != total || memcmp(got, exp, total) != 0) {
        hexdump("expected", exp, total);
        hexdump("got", got, len);
    }
    ck_assert_msg(q->total == total, "%s v%d: total %zu != %zu", what, version,
                  q->total, total);
    ck_assert_msg(len == total && memcmp(got, exp, total) == 0,
                  "%s v%d: bytes differ", what, version);
    free(got);

    for (size_t skip = 0; skip <= total; skip++) {
        got = flatten(q, skip, 64, &len, &cnt);
        ck_assert_msg(len == total - skip, "%s v%d skip %zu", what, version,
                      skip);
        ck_assert(memcmp(got, exp + skip, len) == 0);
        if (skip == total) {
            ck_assert_uint_eq(cnt, 0);
        }
        free(got);
        /* One iovec at a time, as a writev that writes little. */
        got = flatten(q, skip, 1, &len, &cnt);
        ck_assert_uint_eq(cnt, skip == total ? 0 : 1);
        ck_assert(len <= total - skip);
        ck_assert(memcmp(got, exp + skip, len) == 0);
        free(got);
    }
    free(exp);
}

/* ---- support table, negotiation, error names ---- */

START_TEST(test_support)
{
    const struct kp_api_support *s = kp_proto_support(KP_API_PRODUCE);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(s->min, 3);
    ck_assert_int_eq(s->max, 9);
    ck_assert_int_eq(s->flexible_from, 9);
    s = kp_proto_support(KP_API_METADATA);
    ck_assert_int_eq(s->min, 1);
    ck_assert_int_eq(s->max, 12);
    ck_assert_int_eq(s->flexible_from, 9);
    s = kp_proto_support(KP_API_APIVERSIONS);
    ck_assert_int_eq(s->min, 0);
    ck_assert_int_eq(s->max, 3);
    ck_assert_int_eq(s->flexible_from, 3);
    s = kp_proto_support(KP_API_INITPID);
    ck_assert_int_eq(s->min, 0);
    ck_assert_int_eq(s->max, 4);
    ck_assert_int_eq(s->flexible_from, 2);
    ck_assert_ptr_null(kp_proto_support(1)); /* Fetch */

    ck_assert(!kp_proto_flexible(KP_API_PRODUCE, 8));
    ck_assert(kp_proto_flexible(KP_API_PRODUCE, 9));
    ck_assert(!kp_proto_flexible(KP_API_METADATA, 8));
    ck_assert(kp_proto_flexible(KP_API_METADATA, 9));
    ck_assert(!kp_proto_flexible(KP_API_APIVERSIONS, 2));
    ck_assert(kp_proto_flexible(KP_API_APIVERSIONS, 3));
    ck_assert(!kp_proto_flexible(KP_API_INITPID, 1));
    ck_assert(kp_proto_flexible(KP_API_INITPID, 2));
    ck_assert(!kp_proto_flexible(1, 20));
}
END_TEST

START_TEST(test_pick_version)
{
    ck_assert_int_eq(kp_proto_pick_version(KP_API_PRODUCE, 0, 9), 9);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_PRODUCE, 0, 11), 9);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_PRODUCE, 0, 7), 7);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_PRODUCE, 3, 3), 3);
    /* Never below 3, whatever the broker lists. */
    ck_assert_int_eq(kp_proto_pick_version(KP_API_PRODUCE, 0, 2), -1);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_PRODUCE, 10, 12), -1);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_METADATA, 0, 2), 2);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_METADATA, 0, 0), -1);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_METADATA, 0, 13), 12);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_APIVERSIONS, 0, 4), 3);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_INITPID, 0, 1), 1);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_INITPID, 0, 5), 4);
    /* Not listed by the broker (-1) or not implemented by kproxyd. */
    ck_assert_int_eq(kp_proto_pick_version(KP_API_INITPID, -1, -1), -1);
    ck_assert_int_eq(kp_proto_pick_version(1, 0, 12), -1);
}
END_TEST


/* ---- kp_req framing ---- */

START_TEST(test_req_splice)
{
    static const uint8_t ext1[] = {0xe1, 0xe2, 0xe3};
    static const uint8_t ext2[] = {0xf1};
    struct kp_req q;
    kp_req_init(&q);
    for (int round = 0; round < 2; round++) {
        kp_req_reset(&q);
        kp_buf_put_i32(&q.bytes, 0);
        kp_buf_put_i8(&q.bytes, 0x01);
        kp_req_splice(&q, ext1, sizeof(ext1));
        kp_req_splice(&q, ext2, 0); /* empty: no segment */
        kp_req_splice(&q, ext2, sizeof(ext2));
        /* Grow past the first allocation so bytes.data moves. */
        for (int i = 0; i < 1000; i++) {
            kp_buf_put_i8(&q.bytes, (int8_t)i);
        }
        kp_req_finish(&q);
        ck_assert_uint_eq(q.seg_cnt, 4);
        ck_assert_uint_eq(q.total, 4 + 1 + 3 + 1 + 1000);

        uint8_t g[1 + 3 + 1 + 1000];
        g[0] = 0x01;
        memcpy(g + 1, ext1, 3);
        g[4] = 0xf1;
        for (int i = 0; i < 1000; i++) {
            g[5 + i] = (uint8_t)i;
        }
        expect_req(&q, g, sizeof(g), "splice", round);

        /* External segments point at the caller's memory: no copy. */
        struct iovec iov[8];
        size_t n = kp_req_iov(&q, 0, iov, 8);
        ck_assert_uint_eq(n, 4);
        ck_assert_ptr_eq(iov[1].iov_base, ext1);
        ck_assert_ptr_eq(iov[2].iov_base, ext2);
        /* A partial first segment inside a spliced buffer. */
        n = kp_req_iov(&q, 6, iov, 8);
        ck_assert_uint_eq(n, 3);
        ck_assert_ptr_eq(iov[0].iov_base, ext1 + 1);
        ck_assert_uint_eq(iov[0].iov_len, 2);
    }
    kp_req_deinit(&q);
}
END_TEST

/* ---- ApiVersions request ---- */

/* clang-format off */
static const struct golden apiversions_req[] = {
    G(0, HDR1(18, 0)),
    G(1, HDR1(18, 1)),
    G(2, HDR1(18, 2)),
    G(3, HDR2(18, 3),
      0x08, 'k', 'p', 'r', 'o', 'x', 'y', 'd', /* ClientSoftwareName */
      0x06, '0', '.', '1', '.', '0',           /* ClientSoftwareVersion */
      0x00),                                   /* TaggedFields */
};
/* clang-format on */

START_TEST(test_enc_apiversions)
{
    struct kp_req q;
    kp_req_init(&q);
    for (size_t i = 0; i < KP_ARRAY_LEN(apiversions_req); i++) {
        const struct golden *g = &apiversions_req[i];
        kp_proto_enc_apiversions(&q, g->version, 7, "kp", "kproxyd", "0.1.0");
        expect_req(&q, g->bytes, g->len, "ApiVersions", g->version);
    }
    /* Names outside [a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])? are fixed. */
    /* clang-format off */
    static const uint8_t sanitized[] = {
        HDR2(18, 3), 0x07, 'm', 'y', '-', 'a', 'p', 'p', /* "my app!" */
        0x06, '1', '.', '2', '-', 'g',                   /* "-1.2+g-" */
        0x00};
    /* clang-format on */
    kp_proto_enc_apiversions(&q, 3, 7, "kp", "my app!", "-1.2+g-");
    expect_req(&q, sanitized, sizeof(sanitized), "ApiVersions sanitized", 3);
    kp_req_deinit(&q);
}
END_TEST

/* ---- Metadata request: topics "ab", "c" ---- */

#define MD_TOPICS_NF B32(2), B16(2), 'a', 'b', B16(1), 'c'
#define MD_TOPICS_F9 0x03, 0x03, 'a', 'b', 0x00, 0x02, 'c', 0x00
#define MD_TOPICS_F10 0x03, UUID0, 0x03, 'a', 'b', 0x00, UUID0, 0x02, 'c', 0x00

/* clang-format off */
static const struct golden metadata_req[] = {
    G(1, HDR1(3, 1), MD_TOPICS_NF),
    G(2, HDR1(3, 2), MD_TOPICS_NF),
    G(3, HDR1(3, 3), MD_TOPICS_NF),
    /* + AllowAutoTopicCreation */
    G(4, HDR1(3, 4), MD_TOPICS_NF, 0x01),
    G(5, HDR1(3, 5), MD_TOPICS_NF, 0x01),
    G(6, HDR1(3, 6), MD_TOPICS_NF, 0x01),
    G(7, HDR1(3, 7), MD_TOPICS_NF, 0x01),
    /* + IncludeClusterAuthorizedOperations, IncludeTopicAuthorizedOps */
    G(8, HDR1(3, 8), MD_TOPICS_NF, 0x01, 0x00, 0x00),
    /* flexible: compact array/strings, tags per topic and at the end */
    G(9, HDR2(3, 9), MD_TOPICS_F9, 0x01, 0x00, 0x00, 0x00),
    /* + TopicId before Name */
    G(10, HDR2(3, 10), MD_TOPICS_F10, 0x01, 0x00, 0x00, 0x00),
    /* - IncludeClusterAuthorizedOperations */
    G(11, HDR2(3, 11), MD_TOPICS_F10, 0x01, 0x00, 0x00),
    G(12, HDR2(3, 12), MD_TOPICS_F10, 0x01, 0x00, 0x00),
};
/* clang-format on */

/* No topics, auto-creation off: an empty (not null) array. */
/* clang-format off */
static const struct golden metadata_req_empty[] = {
    G(1, HDR1(3, 1), B32(0)),
    G(4, HDR1(3, 4), B32(0), 0x00),
    G(8, HDR1(3, 8), B32(0), 0x00, 0x00, 0x00),
    G(9, HDR2(3, 9), 0x01, 0x00, 0x00, 0x00, 0x00),
    G(12, HDR2(3, 12), 0x01, 0x00, 0x00, 0x00),
};
/* clang-format on */

START_TEST(test_enc_metadata)
{
    static const char *const topics[] = {"ab", "c"};
    struct kp_req q;
    kp_req_init(&q);
    ck_assert_uint_eq(KP_ARRAY_LEN(metadata_req), 12);
    for (size_t i = 0; i < KP_ARRAY_LEN(metadata_req); i++) {
        const struct golden *g = &metadata_req[i];
        kp_proto_enc_metadata(&q, g->version, 7, "kp", topics, 2, true);
        expect_req(&q, g->bytes, g->len, "Metadata", g->version);
    }
    for (size_t i = 0; i < KP_ARRAY_LEN(metadata_req_empty); i++) {
        const struct golden *g = &metadata_req_empty[i];
        kp_proto_enc_metadata(&q, g->version, 7, "kp", NULL, 0, false);
        expect_req(&q, g->bytes, g->len, "Metadata empty", g->version);
    }
    kp_req_deinit(&q);
}
END_TEST

/* ---- InitProducerId request: producer id 0x0102030405060708, epoch 9 ---- */

/* clang-format off */
static const struct golden initpid_req[] = {
    /* TransactionalId null, TransactionTimeoutMs -1 */
    G(0, HDR1(22, 0), B16(-1), B32(-1)),
    G(1, HDR1(22, 1), B16(-1), B32(-1)),
    G(2, HDR2(22, 2), 0x00, B32(-1), 0x00),
    /* + ProducerId, ProducerEpoch */
    G(3, HDR2(22, 3), 0x00, B32(-1), B64(0x0102030405060708), B16(9), 0x00),
    G(4, HDR2(22, 4), 0x00, B32(-1), B64(0x0102030405060708), B16(9), 0x00),
};
/* clang-format on */

START_TEST(test_enc_initpid)
{
    struct kp_req q;
    kp_req_init(&q);
    for (size_t i = 0; i < KP_ARRAY_LEN(initpid_req); i++) {
        const struct golden *g = &initpid_req[i];
        kp_proto_enc_initpid(&q, g->version, 7, "kp", 0x0102030405060708, 9);
        expect_req(&q, g->bytes, g->len, "InitProducerId", g->version);
    }
    /* A new producer: -1/-1. */
    /* clang-format off */
    static const uint8_t fresh[] = {HDR2(22, 4), 0x00, B32(-1), B64(-1),
                                    B16(-1), 0x00};
    /* clang-format on */
    kp_proto_enc_initpid(&q, 4, 7, "kp", -1, -1);
    expect_req(&q, fresh, sizeof(fresh), "InitProducerId fresh", 4);
    kp_req_deinit(&q);
}
END_TEST

/* ---- Produce request: acks -1, timeout 30000, topic "t" with partition 0
 * (batch "AB") and partition 1 (batch "CDE") ---- */

#define PR_NF(v)                                                               \
    G(v, HDR1(0, v), B16(-1) /* TransactionalId */, B16(-1) /* Acks */,        \
      B32(30000) /* TimeoutMs */, B32(1) /* TopicData */, B16(1), 't',         \
      B32(2) /* PartitionData */, B32(0), B32(2), 'A', 'B', B32(1), B32(3),    \
      'C', 'D', 'E')

/* clang-format off */
static const struct golden produce_req[] = {
    PR_NF(3),
    PR_NF(4),
    PR_NF(5),
    PR_NF(6),
    PR_NF(7),
    PR_NF(8),
    G(9, HDR2(0, 9), 0x00 /* TransactionalId */, B16(-1) /* Acks */,
      B32(30000) /* TimeoutMs */, 0x02 /* TopicData */, 0x02, 't',
      0x03 /* PartitionData */, B32(0), 0x03, 'A', 'B', 0x00 /* tags */,
      B32(1), 0x04, 'C', 'D', 'E', 0x00 /* tags */, 0x00 /* topic tags */,
      0x00 /* tags */),
};
/* clang-format on */

START_TEST(test_enc_produce)
{
    /* Heap copies, so ASan catches any read beyond a batch. */
    uint8_t *b0 = malloc(2), *b1 = malloc(3);
    memcpy(b0, "AB", 2);
    memcpy(b1, "CDE", 3);
    struct kp_req q;
    kp_req_init(&q);
    for (size_t i = 0; i < KP_ARRAY_LEN(produce_req); i++) {
        const struct golden *g = &produce_req[i];
        int16_t v = g->version;
        kp_proto_produce_begin(&q, v, 7, "kp", -1, 30000, 1);
        kp_proto_produce_topic(&q, v, "txyz", 1, 2);
        kp_proto_produce_part(&q, v, 0, b0, 2);
        kp_proto_produce_part(&q, v, 1, b1, 3);
        kp_proto_produce_topic_end(&q, v);
        kp_proto_produce_end(&q, v);
        expect_req(&q, g->bytes, g->len, "Produce", v);

        /* The batches are spliced, not copied. */
        struct iovec iov[16];
        size_t n = kp_req_iov(&q, 0, iov, 16);
        ck_assert_uint_eq(n, v >= 9 ? 5 : 4);
        ck_assert_ptr_eq(iov[1].iov_base, b0);
        ck_assert_uint_eq(iov[1].iov_len, 2);
        ck_assert_ptr_eq(iov[3].iov_base, b1);
        ck_assert_uint_eq(iov[3].iov_len, 3);
    }
    /* Two topics, null records, acks 1, at v8 and v9. */
    /* clang-format off */
    static const uint8_t two8[] = {
        HDR1(0, 8), B16(-1), B16(1), B32(1000), B32(2),
        B16(1), 'a', B32(1), B32(5), B32(-1),
        B16(2), 'b', 'b', B32(1), B32(6), B32(2), 'A', 'B'};
    /* clang-format on */
    /* clang-format off */
    static const uint8_t two9[] = {
        HDR2(0, 9), 0x00, B16(1), B32(1000), 0x03,
        0x02, 'a', 0x02, B32(5), 0x00, 0x00, 0x00,
        0x03, 'b', 'b', 0x02, B32(6), 0x03, 'A', 'B', 0x00, 0x00,
        0x00};
    /* clang-format on */
    for (int16_t v = 8; v <= 9; v++) {
        kp_proto_produce_begin(&q, v, 7, "kp", 1, 1000, 2);
        kp_proto_produce_topic(&q, v, "a", 1, 1);
        kp_proto_produce_part(&q, v, 5, NULL, 0);
        kp_proto_produce_topic_end(&q, v);
        kp_proto_produce_topic(&q, v, "bb", 2, 1);
        kp_proto_produce_part(&q, v, 6, b0, 2);
        kp_proto_produce_topic_end(&q, v);
        kp_proto_produce_end(&q, v);
        if (v == 8) {
            expect_req(&q, two8, sizeof(two8), "Produce two topics", v);
        } else {
            expect_req(&q, two9, sizeof(two9), "Produce two topics", v);
        }
    }
    kp_req_deinit(&q);
    free(b0);
    free(b1);
}
END_TEST

START_TEST(test_null_client_id)
{
    static const uint8_t g[] = {B16(18), B16(0), B32(7), B16(-1)};
    struct kp_req q;
    kp_req_init(&q);
    kp_proto_enc_apiversions(&q, 0, 7, NULL, NULL, NULL);
    expect_req(&q, g, sizeof(g), "null ClientId", 0);
    kp_req_deinit(&q);
}
END_TEST

/* ---- response header ---- */

START_TEST(test_resp_header_len)
{
    static const uint8_t plain[] = {B32(7), 0x00, 0x00};
    static const uint8_t tagged[] = {B32(7), TAGS_UNKNOWN, 0x00};
    static const uint8_t bad_tags[] = {B32(7), 0x01, 0x05, 0x09, 0xaa};
    /* Non-flexible: CorrelationId only. */
    ck_assert_int_eq(kp_proto_resp_header_len(0, 8, plain, sizeof(plain)), 4);
    ck_assert_int_eq(kp_proto_resp_header_len(3, 8, plain, sizeof(plain)), 4);
    ck_assert_int_eq(kp_proto_resp_header_len(22, 1, plain, sizeof(plain)), 4);
    /* Flexible: + tags. */
    ck_assert_int_eq(kp_proto_resp_header_len(0, 9, plain, sizeof(plain)), 5);
    ck_assert_int_eq(kp_proto_resp_header_len(3, 12, plain, sizeof(plain)), 5);
    ck_assert_int_eq(kp_proto_resp_header_len(22, 2, plain, sizeof(plain)), 5);
    ck_assert_int_eq(kp_proto_resp_header_len(3, 9, tagged, sizeof(tagged)),
                     10);
    /* ApiVersions: always header v0. */
    ck_assert_int_eq(kp_proto_resp_header_len(18, 3, tagged, sizeof(tagged)),
                     4);
    ck_assert_int_eq(kp_proto_resp_header_len(18, 0, plain, sizeof(plain)), 4);
    /* Short or malformed. */
    ck_assert_int_eq(kp_proto_resp_header_len(0, 8, plain, 3), -1);
    ck_assert_int_eq(kp_proto_resp_header_len(0, 9, plain, 4), -1);
    ck_assert_int_eq(kp_proto_resp_header_len(18, 3, plain, 4), 4);
    ck_assert_int_eq(kp_proto_resp_header_len(3, 9, bad_tags, sizeof(bad_tags)),
                     -1);
    for (size_t n = 0; n < sizeof(tagged) - 1; n++) {
        ck_assert_int_eq(kp_proto_resp_header_len(0, 9, tagged, n), -1);
    }
}
END_TEST

/* ---- decoders: generic truncation and mutation ---- */

typedef int (*dec_fn)(const uint8_t *p, size_t len, int16_t version);

static int dec_apiversions(const uint8_t *p, size_t len, int16_t v)
{
    struct kp_apiversions_resp r;
    return kp_proto_dec_apiversions(p, len, v, &r);
}

static int dec_metadata(const uint8_t *p, size_t len, int16_t v)
{
    struct kp_metadata_resp m;
    int rc = kp_proto_dec_metadata(p, len, v, &m);
    kp_proto_metadata_resp_free(&m);
    return rc;
}

static int dec_initpid(const uint8_t *p, size_t len, int16_t v)
{
    struct kp_initpid_resp r;
    return kp_proto_dec_initpid(p, len, v, &r);
}

static int dec_produce(const uint8_t *p, size_t len, int16_t v)
{
    struct kp_produce_resp r;
    int rc = kp_proto_dec_produce(p, len, v, &r);
    kp_proto_produce_resp_free(&r);
    return rc;
}

/*
 * Every strict prefix must fail (each copied to an exact-size heap buffer
 * so ASan sees any over-read), the whole must pass, and single-byte
 * mutations must never crash or leak.
 */
static void hostile_all(const struct golden *tab, size_t cnt, dec_fn dec,
                        const char *what)
{
    static const uint8_t subst[] = {0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff};
    for (size_t i = 0; i < cnt; i++) {
        const struct golden *g = &tab[i];
        for (size_t n = 0; n < g->len; n++) {
            uint8_t *p = malloc(n ? n : 1);
            memcpy(p, g->bytes, n);
            ck_assert_msg(dec(p, n, g->version) == KP_ERROR,
                          "%s v%d: prefix %zu of %zu decoded", what, g->version,
                          n, g->len);
            free(p);
        }
        uint8_t *p = malloc(g->len);
        memcpy(p, g->bytes, g->len);
        ck_assert_msg(dec(p, g->len, g->version) == KP_OK, "%s v%d", what,
                      g->version);
        for (size_t k = 0; k < g->len; k++) {
            uint8_t orig = p[k];
            for (size_t s = 0; s < sizeof(subst); s++) {
                p[k] = subst[s];
                dec(p, g->len, g->version);
            }
            p[k] = orig;
        }
        free(p);
    }
}

/* ---- ApiVersions responses ---- */

/* ApiKeys: Produce 0-9, Metadata 0-12, ApiVersions 0-3, key 200 (ignored),
 * key -1 (ignored). */
#define AV_KEYS_NF                                                             \
    B32(5), B16(0), B16(0), B16(9), B16(3), B16(0), B16(12), B16(18), B16(0),  \
        B16(3), B16(200), B16(0), B16(1), B16(-1), B16(0), B16(1)

/* clang-format off */
static const struct golden apiversions_resp[] = {
    G(0, B16(0), AV_KEYS_NF),
    G(1, B16(0), AV_KEYS_NF, B32(10) /* ThrottleTimeMs */),
    G(2, B16(0), AV_KEYS_NF, B32(10)),
    G(3, B16(0), 0x06, B16(0), B16(0), B16(9), 0x00, B16(3), B16(0),
      B16(12), TAGS_UNKNOWN, B16(18), B16(0), B16(3), 0x00, B16(200),
      B16(0), B16(1), 0x00, B16(-1), B16(0), B16(1), 0x00,
      B32(10), /* ThrottleTimeMs */
      0x02, 0x00, 0x03, 0x01, 0x02, 0x03, /* SupportedFeatures (skipped) */
      0x05, 0x03, 0xaa, 0xbb, 0xcc),       /* unknown tag 5 */
};
/* clang-format on */

START_TEST(test_dec_apiversions)
{
    for (size_t i = 0; i < KP_ARRAY_LEN(apiversions_resp); i++) {
        const struct golden *g = &apiversions_resp[i];
        struct kp_apiversions_resp r;
        memset(&r, 0x5a, sizeof(r));
        ck_assert_int_eq(
            kp_proto_dec_apiversions(g->bytes, g->len, g->version, &r), KP_OK);
        ck_assert_int_eq(r.error, 0);
        ck_assert_int_eq(r.min[0], 0);
        ck_assert_int_eq(r.max[0], 9);
        ck_assert_int_eq(r.min[3], 0);
        ck_assert_int_eq(r.max[3], 12);
        ck_assert_int_eq(r.max[18], 3);
        ck_assert_int_eq(r.min[22], -1);
        ck_assert_int_eq(r.max[22], -1);
        ck_assert_int_eq(r.max[KP_API_KEY_MAX - 1], -1);
        ck_assert_int_eq(r.throttle_ms, g->version >= 1 ? 10 : 0);
    }
    hostile_all(apiversions_resp, KP_ARRAY_LEN(apiversions_resp),
                dec_apiversions, "ApiVersions");
}
END_TEST

START_TEST(test_dec_apiversions_error)
{
    /* A broker without v3 answers UNSUPPORTED_VERSION in the v0 format,
     * listing its ApiVersions range. */
    static const uint8_t unsup[] = {B16(35), B32(1), B16(18), B16(0), B16(2)};
    struct kp_apiversions_resp r;
    for (int16_t v = 0; v <= 3; v++) {
        ck_assert_int_eq(kp_proto_dec_apiversions(unsup, sizeof(unsup), v, &r),
                         KP_OK);
        ck_assert_int_eq(r.error, 35);
        ck_assert_int_eq(r.min[18], 0);
        ck_assert_int_eq(r.max[18], 2);
        ck_assert_int_eq(r.max[0], -1);
        ck_assert_int_eq(r.throttle_ms, 0);
    }
    for (size_t n = 3; n < sizeof(unsup); n++) {
        ck_assert_int_eq(kp_proto_dec_apiversions(unsup, n, 3, &r), KP_ERROR);
    }
    /* Only the ErrorCode (older brokers): error kept, no ranges. */
    ck_assert_int_eq(kp_proto_dec_apiversions(unsup, 2, 3, &r), KP_OK);
    ck_assert_int_eq(r.error, 35);
    ck_assert_int_eq(r.max[18], -1);
    ck_assert_int_eq(kp_proto_dec_apiversions(unsup, 1, 3, &r), KP_ERROR);
    ck_assert_int_eq(kp_proto_dec_apiversions(unsup, 0, 3, &r), KP_ERROR);
    /* Another error at v3 is in the v3 format. */
    static const uint8_t other[] = {B16(42), 0x01, B32(0), 0x00};
    ck_assert_int_eq(kp_proto_dec_apiversions(other, sizeof(other), 3, &r),
                     KP_OK);
    ck_assert_int_eq(r.error, 42);
    /* Hostile: huge and negative counts, null array. */
    /* clang-format off */
    static const uint8_t huge[] = {B16(0), B32(0x7fffffff), B16(0), B16(0),
                                   B16(9)};
    /* clang-format on */
    static const uint8_t neg[] = {B16(0), B32(-5), B16(0), B16(0), B16(9)};
    static const uint8_t null_arr[] = {B16(0), B32(-1)};
    /* clang-format off */
    static const uint8_t huge_c[] = {B16(0), 0xff, 0xff, 0xff, 0xff, 0x0f,
                                     B16(0)};
    /* clang-format on */
    /* clang-format off */
    static const uint8_t overlong[] = {B16(0), 0x80, 0x80, 0x80, 0x80, 0x80,
                                       0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    /* clang-format on */
    ck_assert_int_eq(kp_proto_dec_apiversions(huge, sizeof(huge), 0, &r),
                     KP_ERROR);
    ck_assert_int_eq(kp_proto_dec_apiversions(neg, sizeof(neg), 0, &r),
                     KP_ERROR);
    ck_assert_int_eq(
        kp_proto_dec_apiversions(null_arr, sizeof(null_arr), 0, &r), KP_ERROR);
    ck_assert_int_eq(kp_proto_dec_apiversions(huge_c, sizeof(huge_c), 3, &r),
                     KP_ERROR);
    ck_assert_int_eq(
        kp_proto_dec_apiversions(overlong, sizeof(overlong), 3, &r), KP_ERROR);
    ck_assert_int_eq(r.max[0], -1);
    /* Versions kproxyd does not implement. */
    ck_assert_int_eq(kp_proto_dec_apiversions(unsup, sizeof(unsup), 4, &r),
                     KP_ERROR);
}
END_TEST

/* ---- Metadata responses ----
 * Brokers 1 h1:9092 (rack null), 2 h2:9093 (rack "r"); ClusterId "cid"
 * (null at v2); ControllerId 1; ThrottleTimeMs 5 (v3+). Topic "t", error
 * 0: partition 0 leader 1 (epoch 7), replicas [1,2], isr [1], offline [];
 * partition 1 error 5 leader -1 (epoch 3), replicas [2], isr [], offline
 * [1,2]. Topic "x" (null at v12) error 3, no partitions. Authorized
 * operations INT32_MIN. */

#define OPS B32(0x80000000u)
#define MD_BROKERS_V0                                                          \
    B32(2), B32(1), B16(2), 'h', '1', B32(9092), B32(2), B16(2), 'h', '2',     \
        B32(9093)
#define MD_BROKERS_V1                                                          \
    B32(2), B32(1), B16(2), 'h', '1', B32(9092), B16(-1), B32(2), B16(2), 'h', \
        '2', B32(9093), B16(1), 'r'
#define MD_P0_V0 B16(0), B32(0), B32(1), B32(2), B32(1), B32(2), B32(1), B32(1)
#define MD_P1_V0 B16(5), B32(1), B32(-1), B32(1), B32(2), B32(0)
#define MD_P0_V5 MD_P0_V0, B32(0)
#define MD_P1_V5 MD_P1_V0, B32(2), B32(1), B32(2)
#define MD_P0_V7                                                               \
    B16(0), B32(0), B32(1), B32(7), B32(2), B32(1), B32(2), B32(1), B32(1),    \
        B32(0)
#define MD_P1_V7                                                               \
    B16(5), B32(1), B32(-1), B32(3), B32(1), B32(2), B32(0), B32(2), B32(1),   \
        B32(2)
#define MD_TOPICS_V1(P0, P1)                                                   \
    B32(2), B16(0), B16(1), 't', 0x00, B32(2), P0, P1, B16(3), B16(1), 'x',    \
        0x00, B32(0)
#define MD_TOPICS_V8                                                           \
    B32(2), B16(0), B16(1), 't', 0x00, B32(2), MD_P0_V7, MD_P1_V7, OPS,        \
        B16(3), B16(1), 'x', 0x00, B32(0), OPS
#define MD_CID B16(3), 'c', 'i', 'd'

#define MD_BROKERS_F                                                           \
    0x03, B32(1), 0x03, 'h', '1', B32(9092), 0x00, 0x00, B32(2), 0x03, 'h',    \
        '2', B32(9093), 0x02, 'r', TAGS_UNKNOWN
#define MD_P0_F                                                                \
    B16(0), B32(0), B32(1), B32(7), 0x03, B32(1), B32(2), 0x02, B32(1), 0x01,  \
        0x00
#define MD_P1_F                                                                \
    B16(5), B32(1), B32(-1), B32(3), 0x02, B32(2), 0x01, 0x03, B32(1), B32(2), \
        TAGS_UNKNOWN
#define MD_CID_F 0x04, 'c', 'i', 'd'

/* clang-format off */
static const struct golden metadata_resp[] = {
    G(1, MD_BROKERS_V1, B32(1), MD_TOPICS_V1(MD_P0_V0, MD_P1_V0)),
    G(2, MD_BROKERS_V1, B16(-1), B32(1), MD_TOPICS_V1(MD_P0_V0, MD_P1_V0)),
    G(3, B32(5), MD_BROKERS_V1, MD_CID, B32(1),
      MD_TOPICS_V1(MD_P0_V0, MD_P1_V0)),
    G(4, B32(5), MD_BROKERS_V1, MD_CID, B32(1),
      MD_TOPICS_V1(MD_P0_V0, MD_P1_V0)),
    G(5, B32(5), MD_BROKERS_V1, MD_CID, B32(1),
      MD_TOPICS_V1(MD_P0_V5, MD_P1_V5)),
    G(6, B32(5), MD_BROKERS_V1, MD_CID, B32(1),
      MD_TOPICS_V1(MD_P0_V5, MD_P1_V5)),
    G(7, B32(5), MD_BROKERS_V1, MD_CID, B32(1),
      MD_TOPICS_V1(MD_P0_V7, MD_P1_V7)),
    G(8, B32(5), MD_BROKERS_V1, MD_CID, B32(1), MD_TOPICS_V8, OPS),
    G(9, B32(5), MD_BROKERS_F, MD_CID_F, B32(1),
      0x03, B16(0), 0x02, 't', 0x00, 0x03, MD_P0_F, MD_P1_F, OPS, 0x00,
      B16(3), 0x02, 'x', 0x00, 0x01, OPS, TAGS_UNKNOWN,
      OPS /* ClusterAuthorizedOperations */, TAGS_UNKNOWN),
    G(10, B32(5), MD_BROKERS_F, MD_CID_F, B32(1),
      0x03, B16(0), 0x02, 't', UUID1, 0x00, 0x03, MD_P0_F, MD_P1_F, OPS,
      0x00, B16(3), 0x02, 'x', UUID0, 0x00, 0x01, OPS, 0x00,
      OPS /* ClusterAuthorizedOperations */, 0x00),
    G(11, B32(5), MD_BROKERS_F, 0x00 /* ClusterId null */, B32(1),
      0x03, B16(0), 0x02, 't', UUID1, 0x00, 0x03, MD_P0_F, MD_P1_F, OPS,
      0x00, B16(3), 0x02, 'x', UUID0, 0x00, 0x01, OPS, 0x00, 0x00),
    G(12, B32(5), MD_BROKERS_F, MD_CID_F, B32(1),
      0x03, B16(0), 0x02, 't', UUID1, 0x00, 0x03, MD_P0_F, MD_P1_F, OPS,
      0x00, B16(3), 0x00 /* Name null */, UUID1, 0x00, 0x01, OPS, 0x00,
      TAGS_UNKNOWN),
};
/* clang-format on */

START_TEST(test_dec_metadata)
{
    ck_assert_uint_eq(KP_ARRAY_LEN(metadata_resp), 12);
    for (size_t i = 0; i < KP_ARRAY_LEN(metadata_resp); i++) {
        const struct golden *g = &metadata_resp[i];
        int16_t v = g->version;
        struct kp_metadata_resp m;
        ck_assert_msg(kp_proto_dec_metadata(g->bytes, g->len, v, &m) == KP_OK,
                      "Metadata v%d", v);
        ck_assert_int_eq(m.throttle_ms, v >= 3 ? 5 : 0);
        ck_assert_int_eq(m.broker_cnt, 2);
        ck_assert_int_eq(m.brokers[0].node_id, 1);
        ck_assert_str_eq(m.brokers[0].host, "h1");
        ck_assert_int_eq(m.brokers[0].port, 9092);
        ck_assert_int_eq(m.brokers[1].node_id, 2);
        ck_assert_str_eq(m.brokers[1].host, "h2");
        ck_assert_int_eq(m.brokers[1].port, 9093);
        ck_assert_int_eq(m.controller_id, 1);
        ck_assert_int_eq(m.topic_cnt, 2);
        const struct kp_md_topic *t = &m.topics[0];
        ck_assert_int_eq(t->error, 0);
        ck_assert_str_eq(t->name, "t");
        ck_assert_int_eq(t->partition_cnt, 2);
        ck_assert_int_eq(t->partitions[0].error, 0);
        ck_assert_int_eq(t->partitions[0].partition, 0);
        ck_assert_int_eq(t->partitions[0].leader, 1);
        ck_assert_int_eq(t->partitions[0].leader_epoch, v >= 7 ? 7 : -1);
        ck_assert_int_eq(t->partitions[1].error, 5);
        ck_assert_int_eq(t->partitions[1].partition, 1);
        ck_assert_int_eq(t->partitions[1].leader, -1);
        ck_assert_int_eq(t->partitions[1].leader_epoch, v >= 7 ? 3 : -1);
        t = &m.topics[1];
        ck_assert_int_eq(t->error, 3);
        ck_assert_str_eq(t->name, v >= 12 ? "" : "x");
        ck_assert_int_eq(t->partition_cnt, 0);
        kp_proto_metadata_resp_free(&m);
        ck_assert_ptr_null(m.brokers);
        kp_proto_metadata_resp_free(&m); /* twice is harmless */
    }
    hostile_all(metadata_resp, KP_ARRAY_LEN(metadata_resp), dec_metadata,
                "Metadata");
}
END_TEST

/* clang-format off */
static const struct golden metadata_bad[] = {
    /* Broker count far beyond the bytes left. */
    G(1, B32(0x7fffffff), B32(1), B16(2), 'h', '1', B32(9092), B16(-1)),
    G(9, B32(0), 0xff, 0xff, 0xff, 0xff, 0x07, B32(1), 0x03, 'h', '1'),
    /* Negative counts and lengths. */
    G(1, B32(-2), B32(0), B32(0), B32(0)),
    G(1, B32(-1), B32(0), B32(0), B32(0)), /* null Brokers */
    G(1, B32(1), B32(1), B16(-2), B32(9092), B16(-1), B32(1), B32(0)),
    G(1, B32(1), B32(1), B16(-1), B32(9092), B16(-1), B32(1), B32(0)),
    G(1, B32(0), B32(1), B32(1), B16(0), B16(1), 't', 0x00, B32(-3)),
    /* Name null before v12. */
    G(9, B32(0), 0x01, 0x00, B32(1), 0x02, B16(0), 0x00, 0x00, 0x01,
      B32(0), 0x00, B32(0), 0x00),
    /* Partition count beyond the bytes left, after brokers were
     * allocated: the partial struct is freed. */
    G(1, B32(1), B32(1), B16(2), 'h', '1', B32(9092), B16(-1), B32(1),
      B32(1), B16(0), B16(1), 't', 0x00, B32(1000), B16(0)),
    /* Replica count beyond the bytes left. */
    G(1, B32(0), B32(1), B32(1), B16(0), B16(1), 't', 0x00, B32(1),
      B16(0), B32(0), B32(1), B32(0x40000000), B32(1)),
    /* Compact count / length of 2^63 (no signed overflow computing n-1). */
    G(9, B32(0), 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
      0x00),
    G(9, B32(0), 0x02, B32(1), 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
      0x80, 0x80, 0x01, 'h', B32(9092), 0x00, 0x00, 0x00, B32(1), 0x01,
      0x00),
    /* Tag size beyond the bytes left. */
    G(9, B32(0), 0x01, 0x00, B32(1), 0x01, 0x01, 0x05, 0x7f, 0x00),
    /* Version out of range. */
    G(0, B32(0), B32(0)),
    G(13, B32(0), 0x01, 0x00, B32(1), 0x01, 0x00),
};
/* clang-format on */

START_TEST(test_dec_metadata_hostile)
{
    const struct golden *bad = metadata_bad;
    for (size_t i = 0; i < KP_ARRAY_LEN(metadata_bad); i++) {
        struct kp_metadata_resp m;
        ck_assert_msg(kp_proto_dec_metadata(bad[i].bytes, bad[i].len,
                                            bad[i].version, &m) == KP_ERROR,
                      "bad[%zu] decoded", i);
        ck_assert_ptr_null(m.brokers);
        ck_assert_ptr_null(m.topics);
        kp_proto_metadata_resp_free(&m);
    }
    /* Empty arrays are fine. */
    static const uint8_t empty[] = {B32(0), B32(-1), B32(0)};
    struct kp_metadata_resp m;
    ck_assert_int_eq(kp_proto_dec_metadata(empty, sizeof(empty), 1, &m), KP_OK);
    ck_assert_int_eq(m.broker_cnt, 0);
    ck_assert_int_eq(m.topic_cnt, 0);
    ck_assert_int_eq(m.controller_id, -1);
    kp_proto_metadata_resp_free(&m);
    /* A zeroed struct frees cleanly. */
    memset(&m, 0, sizeof(m));
    kp_proto_metadata_resp_free(&m);
}
END_TEST

/* ---- InitProducerId responses ---- */

/* clang-format off */
static const struct golden initpid_resp[] = {
    G(0, B32(0), B16(0), B64(0x1122334455667788), B16(3)),
    G(1, B32(0), B16(0), B64(0x1122334455667788), B16(3)),
    G(2, B32(0), B16(0), B64(0x1122334455667788), B16(3), TAGS_UNKNOWN),
    G(3, B32(0), B16(0), B64(0x1122334455667788), B16(3), 0x00),
    G(4, B32(0), B16(0), B64(0x1122334455667788), B16(3), TAGS_UNKNOWN),
};
/* clang-format on */

START_TEST(test_dec_initpid)
{
    for (size_t i = 0; i < KP_ARRAY_LEN(initpid_resp); i++) {
        const struct golden *g = &initpid_resp[i];
        struct kp_initpid_resp r;
        ck_assert_int_eq(kp_proto_dec_initpid(g->bytes, g->len, g->version, &r),
                         KP_OK);
        ck_assert_int_eq(r.throttle_ms, 0);
        ck_assert_int_eq(r.error, 0);
        ck_assert(r.producer_id == 0x1122334455667788);
        ck_assert_int_eq(r.producer_epoch, 3);
    }
    hostile_all(initpid_resp, KP_ARRAY_LEN(initpid_resp), dec_initpid,
                "InitProducerId");
    /* An error: COORDINATOR_NOT_AVAILABLE, throttled. */
    static const uint8_t err[] = {B32(20), B16(15), B64(-1), B16(-1)};
    struct kp_initpid_resp r;
    ck_assert_int_eq(kp_proto_dec_initpid(err, sizeof(err), 1, &r), KP_OK);
    ck_assert_int_eq(r.throttle_ms, 20);
    ck_assert_int_eq(r.error, 15);
    ck_assert(r.producer_id == -1);
    ck_assert_int_eq(r.producer_epoch, -1);
    /* v2 needs its tags. */
    ck_assert_int_eq(kp_proto_dec_initpid(err, sizeof(err), 2, &r), KP_ERROR);
    ck_assert_int_eq(kp_proto_dec_initpid(err, sizeof(err), 5, &r), KP_ERROR);
}
END_TEST

/* ---- Produce responses ----
 * Topic "t": partition 0 ok at BaseOffset 100, LogStartOffset 50 (v5+);
 * partition 1 NOT_LEADER_OR_FOLLOWER (v3-7) or INVALID_RECORD with one
 * record error "bad" (v8+). ThrottleTimeMs 3. */

#define PP0_V3 B32(0), B16(0), B64(100), B64(-1)
#define PP1_V3 B32(1), B16(6), B64(-1), B64(-1)
#define PP0_V5 PP0_V3, B64(50)
#define PP1_V5 PP1_V3, B64(-1)
#define PP0_V8 PP0_V3, B64(50), B32(0), B16(-1)
#define PP1_V8                                                                 \
    B32(1), B16(87), B64(-1), B64(-1), B64(-1), B32(1), B32(4), B16(3), 'b',   \
        'a', 'd', B16(3), 'b', 'a', 'd'
#define PR_RESP(v, P0, P1) G(v, B32(1), B16(1), 't', B32(2), P0, P1, B32(3))

/* clang-format off */
static const struct golden produce_resp[] = {
    PR_RESP(3, PP0_V3, PP1_V3),
    PR_RESP(4, PP0_V3, PP1_V3),
    PR_RESP(5, PP0_V5, PP1_V5),
    PR_RESP(6, PP0_V5, PP1_V5),
    PR_RESP(7, PP0_V5, PP1_V5),
    PR_RESP(8, PP0_V8, PP1_V8),
    G(9, 0x02, 0x02, 't', 0x03,
      B32(0), B16(0), B64(100), B64(-1), B64(50), 0x01, 0x00, 0x00,
      B32(1), B16(87), B64(-1), B64(-1), B64(-1), 0x02, B32(4), 0x04, 'b',
      'a', 'd', TAGS_UNKNOWN, 0x00 /* ErrorMessage null */, TAGS_UNKNOWN,
      0x00, B32(3), TAGS_UNKNOWN),
};
/* clang-format on */

/* clang-format off */
static const struct golden produce_bad[] = {
    G(3, B32(0x10000000), B16(1), 't', B32(0), B32(0)),
    G(3, B32(1), B16(1), 't', B32(0x7fffffff), PP0_V3, B32(0)),
    G(3, B32(1), B16(-1), B32(0), B32(0)), /* null Name */
    G(3, B32(1), B16(-7), B32(0), B32(0)),
    G(8, B32(1), B16(1), 't', B32(1), PP0_V3, B64(50), B32(0x7ffffff0),
      B16(-1), B32(0)),
    G(8, B32(1), B16(1), 't', B32(1), PP0_V3, B64(50), B32(0), B16(-9),
      B32(0)),
    G(9, 0x02, 0x02, 't', 0xff, 0xff, 0xff, 0xff, 0x0f, B32(0)),
    G(9, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0xff, 0x01, B32(0)),
    G(9, 0x02, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
      0x01, B32(0), 0x00),
    G(2, B32(0), B32(0)),
    G(10, 0x01, B32(0), 0x00),
};
/* clang-format on */

START_TEST(test_dec_produce)
{
    for (size_t i = 0; i < KP_ARRAY_LEN(produce_resp); i++) {
        const struct golden *g = &produce_resp[i];
        int16_t v = g->version;
        struct kp_produce_resp r;
        ck_assert_msg(kp_proto_dec_produce(g->bytes, g->len, v, &r) == KP_OK,
                      "Produce v%d", v);
        ck_assert_int_eq(r.throttle_ms, 3);
        ck_assert_int_eq(r.topic_cnt, 1);
        ck_assert_str_eq(r.topics[0].name, "t");
        ck_assert_int_eq(r.topics[0].part_cnt, 2);
        const struct kp_produce_presp *p = r.topics[0].parts;
        ck_assert_int_eq(p[0].partition, 0);
        ck_assert_int_eq(p[0].error, 0);
        ck_assert(p[0].base_offset == 100);
        ck_assert(p[0].log_start_offset == (v >= 5 ? 50 : -1));
        ck_assert_int_eq(p[1].partition, 1);
        ck_assert_int_eq(p[1].error, v >= 8 ? 87 : 6);
        ck_assert(p[1].base_offset == -1);
        ck_assert(p[1].log_start_offset == -1);
        kp_proto_produce_resp_free(&r);
        ck_assert_ptr_null(r.topics);
        kp_proto_produce_resp_free(&r);
    }
    hostile_all(produce_resp, KP_ARRAY_LEN(produce_resp), dec_produce,
                "Produce");

    const struct golden *bad = produce_bad;
    for (size_t i = 0; i < KP_ARRAY_LEN(produce_bad); i++) {
        struct kp_produce_resp r;
        ck_assert_msg(kp_proto_dec_produce(bad[i].bytes, bad[i].len,
                                           bad[i].version, &r) == KP_ERROR,
                      "bad[%zu] decoded", i);
        ck_assert_ptr_null(r.topics);
        kp_proto_produce_resp_free(&r);
    }
}
END_TEST

/* A minimal v9 response: empty RecordErrors, LogStartOffset 0. */
START_TEST(test_dec_produce_v9_minimal)
{
    /* clang-format off */
    static const uint8_t resp[] = {0x02, 0x03, 'b', 'b', 0x02, B32(6),
                                   B16(0), B64(1), B64(-1), B64(0), 0x01,
                                   0x00, 0x00, 0x00, B32(0), 0x00};
    /* clang-format on */
    struct kp_produce_resp r;
    ck_assert_int_eq(kp_proto_dec_produce(resp, sizeof(resp), 9, &r), KP_OK);
    ck_assert_str_eq(r.topics[0].name, "bb");
    ck_assert_int_eq(r.topics[0].parts[0].partition, 6);
    ck_assert(r.topics[0].parts[0].base_offset == 1);
    ck_assert(r.topics[0].parts[0].log_start_offset == 0);
    kp_proto_produce_resp_free(&r);
}
END_TEST

/* ---- SaslHandshake and SaslAuthenticate ----
 * Against SaslHandshakeRequest/Response.json (v0-1, never flexible) and
 * SaslAuthenticateRequest/Response.json (v0-2, v2 flexible). */

START_TEST(test_support_sasl)
{
    const struct kp_api_support *s = kp_proto_support(KP_API_SASL_HANDSHAKE);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(KP_API_SASL_HANDSHAKE, 17);
    ck_assert_int_eq(s->min, 0);
    ck_assert_int_eq(s->max, 1);
    ck_assert(!kp_proto_flexible(KP_API_SASL_HANDSHAKE, 0));
    ck_assert(!kp_proto_flexible(KP_API_SASL_HANDSHAKE, 1));
    s = kp_proto_support(KP_API_SASL_AUTHENTICATE);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(KP_API_SASL_AUTHENTICATE, 36);
    ck_assert_int_eq(s->min, 0);
    ck_assert_int_eq(s->max, 2);
    ck_assert(!kp_proto_flexible(KP_API_SASL_AUTHENTICATE, 1));
    ck_assert(kp_proto_flexible(KP_API_SASL_AUTHENTICATE, 2));
    /* Kafka 4 lists SaslHandshake 0-1, SaslAuthenticate 0-2; 0.10.0 only
     * SaslHandshake 0 and no SaslAuthenticate. */
    ck_assert_int_eq(kp_proto_pick_version(KP_API_SASL_HANDSHAKE, 0, 1), 1);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_SASL_HANDSHAKE, 0, 0), 0);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_SASL_HANDSHAKE, 0, 3), 1);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_SASL_AUTHENTICATE, 0, 2), 2);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_SASL_AUTHENTICATE, 0, 1), 1);
    ck_assert_int_eq(kp_proto_pick_version(KP_API_SASL_AUTHENTICATE, -1, -1),
                     -1);
    /* Response headers: v0 except SaslAuthenticate v2 (v1, with tags). */
    static const uint8_t tagged[] = {B32(7), TAGS_UNKNOWN, 0x00};
    ck_assert_int_eq(kp_proto_resp_header_len(17, 1, tagged, sizeof(tagged)),
                     4);
    ck_assert_int_eq(kp_proto_resp_header_len(36, 1, tagged, sizeof(tagged)),
                     4);
    ck_assert_int_eq(kp_proto_resp_header_len(36, 2, tagged, sizeof(tagged)),
                     10);
    ck_assert_int_eq(kp_proto_resp_header_len(36, 2, tagged, 4), -1);
}
END_TEST

/* clang-format off */
static const struct golden sasl_handshake_req[] = {
    G(0, HDR1(17, 0), B16(13), 'S', 'C', 'R', 'A', 'M', '-', 'S', 'H', 'A',
      '-', '5', '1', '2'),                             /* Mechanism */
    G(1, HDR1(17, 1), B16(13), 'S', 'C', 'R', 'A', 'M', '-', 'S', 'H', 'A',
      '-', '5', '1', '2'),
};

/* AuthBytes "\0u\0pw" (PLAIN). */
static const struct golden sasl_auth_req[] = {
    G(0, HDR1(36, 0), B32(5), 0x00, 'u', 0x00, 'p', 'w'),
    G(1, HDR1(36, 1), B32(5), 0x00, 'u', 0x00, 'p', 'w'),
    G(2, HDR2(36, 2), 0x06, 0x00, 'u', 0x00, 'p', 'w', /* COMPACT_BYTES */
      0x00),                                           /* TaggedFields */
};
/* clang-format on */

START_TEST(test_enc_sasl)
{
    struct kp_req q;
    kp_req_init(&q);
    for (size_t i = 0; i < KP_ARRAY_LEN(sasl_handshake_req); i++) {
        const struct golden *g = &sasl_handshake_req[i];
        kp_proto_enc_sasl_handshake(&q, g->version, 7, "kp", "SCRAM-SHA-512");
        expect_req(&q, g->bytes, g->len, "SaslHandshake", g->version);
    }
    for (size_t i = 0; i < KP_ARRAY_LEN(sasl_auth_req); i++) {
        const struct golden *g = &sasl_auth_req[i];
        kp_proto_enc_sasl_authenticate(&q, g->version, 7, "kp",
                                       (const uint8_t *)"\0u\0pw", 5);
        expect_req(&q, g->bytes, g->len, "SaslAuthenticate", g->version);
    }
    /* Empty AuthBytes, and 200 bytes (a two-byte compact length: 201). */
    static const uint8_t empty0[] = {HDR1(36, 0), B32(0)};
    static const uint8_t empty2[] = {HDR2(36, 2), 0x01, 0x00};
    kp_proto_enc_sasl_authenticate(&q, 0, 7, "kp", NULL, 0);
    expect_req(&q, empty0, sizeof(empty0), "SaslAuthenticate empty", 0);
    kp_proto_enc_sasl_authenticate(&q, 2, 7, "kp", NULL, 0);
    expect_req(&q, empty2, sizeof(empty2), "SaslAuthenticate empty", 2);
    uint8_t tok[200], big[sizeof(tok) + 16];
    memset(tok, 'z', sizeof(tok));
    static const uint8_t head[] = {HDR2(36, 2), 0xc9, 0x01};
    memcpy(big, head, sizeof(head));
    memcpy(big + sizeof(head), tok, sizeof(tok));
    big[sizeof(head) + sizeof(tok)] = 0x00;
    ck_assert_uint_eq(sizeof(head) + sizeof(tok) + 1, sizeof(big));
    kp_proto_enc_sasl_authenticate(&q, 2, 7, "kp", tok, sizeof(tok));
    expect_req(&q, big, sizeof(big), "SaslAuthenticate 200", 2);
    /* A raw frame after SaslHandshake v0: the size and the bytes, no
     * header. */
    kp_proto_enc_sasl_raw(&q, (const uint8_t *)"\0u\0pw", 5);
    static const uint8_t raw[] = {0x00, 'u', 0x00, 'p', 'w'};
    expect_req(&q, raw, sizeof(raw), "SASL raw", 0);
    kp_proto_enc_sasl_raw(&q, NULL, 0);
    expect_req(&q, raw, 0, "SASL raw empty", 0);
    kp_req_deinit(&q);
}
END_TEST

static int dec_sasl_handshake(const uint8_t *p, size_t len, int16_t v)
{
    struct kp_sasl_handshake_resp r;
    int rc = kp_proto_dec_sasl_handshake(p, len, v, &r);
    if (rc != KP_OK) {
        ck_assert_ptr_null(r.mechanisms);
    }
    kp_proto_sasl_handshake_resp_free(&r);
    return rc;
}

static int dec_sasl_auth(const uint8_t *p, size_t len, int16_t v)
{
    struct kp_sasl_authenticate_resp r;
    int rc = kp_proto_dec_sasl_authenticate(p, len, v, &r);
    if (rc != KP_OK) {
        ck_assert_ptr_null(r.error_message);
    } else {
        ck_assert(r.auth_bytes >= p && r.auth_bytes + r.auth_len <= p + len);
    }
    kp_proto_sasl_authenticate_resp_free(&r);
    return rc;
}

/* clang-format off */
static const struct golden sasl_handshake_resp[] = {
    /* UNSUPPORTED_SASL_MECHANISM, Mechanisms ["PLAIN", "SCRAM-SHA-256"] */
    G(0, B16(33), B32(2), B16(5), 'P', 'L', 'A', 'I', 'N', B16(13), 'S', 'C',
      'R', 'A', 'M', '-', 'S', 'H', 'A', '-', '2', '5', '6'),
    G(1, B16(33), B32(2), B16(5), 'P', 'L', 'A', 'I', 'N', B16(13), 'S', 'C',
      'R', 'A', 'M', '-', 'S', 'H', 'A', '-', '2', '5', '6'),
};

/* ErrorCode 0, ErrorMessage null, AuthBytes "v=x", SessionLifetimeMs
 * 3600000 (v1+). */
static const struct golden sasl_auth_resp[] = {
    G(0, B16(0), B16(-1), B32(3), 'v', '=', 'x'),
    G(1, B16(0), B16(-1), B32(3), 'v', '=', 'x', B64(3600000)),
    G(2, B16(0), 0x00, 0x04, 'v', '=', 'x', B64(3600000), TAGS_UNKNOWN),
};
/* clang-format on */

START_TEST(test_dec_sasl_handshake)
{
    for (size_t i = 0; i < KP_ARRAY_LEN(sasl_handshake_resp); i++) {
        const struct golden *g = &sasl_handshake_resp[i];
        struct kp_sasl_handshake_resp r;
        ck_assert_int_eq(
            kp_proto_dec_sasl_handshake(g->bytes, g->len, g->version, &r),
            KP_OK);
        ck_assert_int_eq(r.error, 33);
        ck_assert_int_eq(r.mechanism_cnt, 2);
        ck_assert_str_eq(r.mechanisms[0], "PLAIN");
        ck_assert_str_eq(r.mechanisms[1], "SCRAM-SHA-256");
        kp_proto_sasl_handshake_resp_free(&r);
        ck_assert_ptr_null(r.mechanisms);
        kp_proto_sasl_handshake_resp_free(&r); /* twice is fine */
    }
    hostile_all(sasl_handshake_resp, KP_ARRAY_LEN(sasl_handshake_resp),
                dec_sasl_handshake, "SaslHandshake");
    /* clang-format off */
    const struct golden bad[] = {
        G(1, B16(0), B32(-1)),                     /* null Mechanisms */
        G(1, B16(0), B32(1), B16(-1)),             /* null Mechanism */
        G(1, B16(0), B32(1), B16(-2)),
        G(1, B16(0), B32(0x7fffffff), B16(0)),     /* count beyond */
        G(1, B16(0), B32(1), B16(9), 'P'),         /* length beyond */
        G(2, B16(0), B32(0)),                      /* no v2 */
        G(-1, B16(0), B32(0)),
    };
    /* clang-format on */
    for (size_t i = 0; i < KP_ARRAY_LEN(bad); i++) {
        ck_assert_int_eq(
            dec_sasl_handshake(bad[i].bytes, bad[i].len, bad[i].version),
            KP_ERROR);
    }
    /* Success with no mechanisms listed, and ILLEGAL_SASL_STATE. */
    static const uint8_t ok[] = {B16(0), B32(0)};
    static const uint8_t illegal[] = {B16(34), B32(0)};
    struct kp_sasl_handshake_resp r;
    ck_assert_int_eq(kp_proto_dec_sasl_handshake(ok, sizeof(ok), 0, &r), KP_OK);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(r.mechanism_cnt, 0);
    kp_proto_sasl_handshake_resp_free(&r);
    ck_assert_int_eq(
        kp_proto_dec_sasl_handshake(illegal, sizeof(illegal), 1, &r), KP_OK);
    ck_assert_str_eq(kp_kerr_name(r.error), "ILLEGAL_SASL_STATE");
    kp_proto_sasl_handshake_resp_free(&r);
}
END_TEST

START_TEST(test_dec_sasl_authenticate)
{
    for (size_t i = 0; i < KP_ARRAY_LEN(sasl_auth_resp); i++) {
        const struct golden *g = &sasl_auth_resp[i];
        struct kp_sasl_authenticate_resp r;
        ck_assert_int_eq(
            kp_proto_dec_sasl_authenticate(g->bytes, g->len, g->version, &r),
            KP_OK);
        ck_assert_int_eq(r.error, 0);
        ck_assert_ptr_null(r.error_message);
        ck_assert_int_eq(r.auth_len, 3);
        ck_assert(memcmp(r.auth_bytes, "v=x", 3) == 0);
        ck_assert(r.session_lifetime_ms == (g->version >= 1 ? 3600000 : 0));
        kp_proto_sasl_authenticate_resp_free(&r);
    }
    hostile_all(sasl_auth_resp, KP_ARRAY_LEN(sasl_auth_resp), dec_sasl_auth,
                "SaslAuthenticate");
    /* SASL_AUTHENTICATION_FAILED with a message and empty AuthBytes. */
    /* clang-format off */
    const struct golden failed[] = {
        G(0, B16(58), B16(3), 'b', 'a', 'd', B32(0)),
        G(1, B16(58), B16(3), 'b', 'a', 'd', B32(0), B64(0)),
        G(2, B16(58), 0x04, 'b', 'a', 'd', 0x01, B64(0), 0x00),
    };
    /* clang-format on */
    for (size_t i = 0; i < KP_ARRAY_LEN(failed); i++) {
        struct kp_sasl_authenticate_resp r;
        ck_assert_int_eq(kp_proto_dec_sasl_authenticate(failed[i].bytes,
                                                        failed[i].len,
                                                        failed[i].version, &r),
                         KP_OK);
        ck_assert_str_eq(kp_kerr_name(r.error),
                         "SASL_AUTHENTICATION_FAILED");
        ck_assert_str_eq(r.error_message, "bad");
        ck_assert_int_eq(r.auth_len, 0);
        ck_assert(r.session_lifetime_ms == 0);
        kp_proto_sasl_authenticate_resp_free(&r);
    }
    hostile_all(failed, KP_ARRAY_LEN(failed), dec_sasl_auth,
                "SaslAuthenticate failed");
    /* clang-format off */
    const struct golden bad[] = {
        G(0, B16(0), B16(-1), B32(-1)),             /* null AuthBytes */
        G(0, B16(0), B16(-1), B32(-2)),
        G(0, B16(0), B16(-3), B32(0)),
        G(0, B16(0), B16(-1), B32(0x7fffffff)),     /* length beyond */
        G(2, B16(0), 0x00, 0x00, B64(0), 0x00),     /* null AuthBytes */
        G(2, B16(0), 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f, B64(0), 0x00),
        G(2, B16(0), 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0xff,
          0x01, 0x01, B64(0), 0x00),                /* uvarint 2^64-1 */
        G(2, B16(0), 0x00, 0x01, B64(0)),           /* no tags */
        G(3, B16(0), 0x00, 0x01, B64(0), 0x00),     /* no v3 */
    };
    /* clang-format on */
    for (size_t i = 0; i < KP_ARRAY_LEN(bad); i++) {
        ck_assert_msg(dec_sasl_auth(bad[i].bytes, bad[i].len, bad[i].version) ==
                          KP_ERROR,
                      "bad %zu decoded", i);
    }
}
END_TEST

static Suite *proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc = tcase_create("tables");
    tcase_add_test(tc, test_support);
    tcase_add_test(tc, test_pick_version);
    tcase_add_test(tc, test_support_sasl);
    suite_add_tcase(s, tc);

    tc = tcase_create("requests");
    tcase_add_test(tc, test_req_splice);
    tcase_add_test(tc, test_enc_apiversions);
    tcase_add_test(tc, test_enc_metadata);
    tcase_add_test(tc, test_enc_initpid);
    tcase_add_test(tc, test_enc_produce);
    tcase_add_test(tc, test_null_client_id);
    tcase_add_test(tc, test_enc_sasl);
    suite_add_tcase(s, tc);

    tc = tcase_create("responses");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_resp_header_len);
    tcase_add_test(tc, test_dec_apiversions);
    tcase_add_test(tc, test_dec_apiversions_error);
    tcase_add_test(tc, test_dec_metadata);
    tcase_add_test(tc, test_dec_metadata_hostile);
    tcase_add_test(tc, test_dec_initpid);
    tcase_add_test(tc, test_dec_produce);
    tcase_add_test(tc, test_dec_produce_v9_minimal);
    tcase_add_test(tc, test_dec_sasl_handshake);
    tcase_add_test(tc, test_dec_sasl_authenticate);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
