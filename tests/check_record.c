/*
 * check_record.c - Record v2 / RecordBatch encoding and decoding: a batch
 * written out by hand (CRC computed independently) compared byte for byte,
 * random round trips, compressed batches, stamping, varint edge cases and
 * malformed input (decoded from exact-size heap copies so ASan catches any
 * read past the end).
 */
#include <check.h>
#include <stdio.h>

#include "kp_compress.h"
#include "kp_crc32c.h"
#include "kp_record.h"

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

#define B(s) (const uint8_t *)(s)

/*
 * The golden batch: two records, written out field by field.
 * CRC-32C of bytes 21..93 computed with an independent bitwise
 * implementation (Python): 0x4174b579.
 */
/* clang-format off */
static const uint8_t golden[] = {
    0, 0, 0, 0, 0, 0, 0, 0,                   /* baseOffset 0 */
    0, 0, 0, 82,                              /* batchLength 94 - 12 */
    0xff, 0xff, 0xff, 0xff,                   /* partitionLeaderEpoch -1 */
    2,                                        /* magic */
    0x41, 0x74, 0xb5, 0x79,                   /* crc */
    0, 0,                                     /* attributes: none, CreateTime */
    0, 0, 0, 1,                               /* lastOffsetDelta */
    0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, /* baseTimestamp 1700000000000 */
    0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x05, /* maxTimestamp +5 */
    0, 0, 0, 0, 0, 0, 0x03, 0xe8,             /* producerId 1000 */
    0, 2,                                     /* producerEpoch 2 */
    0, 0, 0, 7,                               /* baseSequence 7 */
    0, 0, 0, 2,                               /* records count */
    /* record 0: length 14, attributes, tsDelta 0, offsetDelta 0,
     * key "k", value "v1", 1 header "h1" = "x" */
    0x1c, 0, 0, 0, 0x02, 'k', 0x04, 'v', '1', 0x02, 0x04, 'h', '1', 0x02,
    'x',
    /* record 1: length 17, attributes, tsDelta 5, offsetDelta 1,
     * key null, value "hello", 1 header "peer" = null */
    0x22, 0, 0x0a, 0x02, 0x01, 0x0a, 'h', 'e', 'l', 'l', 'o', 0x02, 0x08,
    'p', 'e', 'e', 'r', 0x01};
/* clang-format on */

#define GOLDEN_BASE_TS 1700000000000ll

static const struct kp_header golden_h1 = {B("h1"), 2, B("x"), 1};
static const struct kp_header golden_peer = {B("peer"), 4, NULL, 0};

static void golden_records(struct kp_buf *rec)
{
    struct kp_msg m0 = {.key = B("k"),
                        .key_len = 1,
                        .value = B("v1"),
                        .value_len = 2,
                        .partition = -1,
                        .timestamp = -1,
                        .headers = &golden_h1,
                        .header_cnt = 1};
    struct kp_msg m1 = {.key = NULL,
                        .value = B("hello"),
                        .value_len = 5,
                        .partition = -1,
                        .timestamp = -1};
    ck_assert_uint_eq(kp_record_append(rec, 0, 0, &m0, NULL, 0), 15);
    ck_assert_uint_eq(kp_record_append(rec, 1, 5, &m1, &golden_peer, 1), 18);
}

static struct kp_batch_hdr golden_hdr(void)
{
    struct kp_batch_hdr h = {.count = 2,
                             .base_ts = GOLDEN_BASE_TS,
                             .max_ts = GOLDEN_BASE_TS + 5,
                             .producer_id = 1000,
                             .producer_epoch = 2,
                             .base_seq = 7,
                             .codec = KP_CODEC_NONE};
    return h;
}

START_TEST(test_golden_batch)
{
    struct kp_buf rec, wire;
    kp_buf_init(&rec, 0);
    kp_buf_init(&wire, 0);
    golden_records(&rec);
    ck_assert_uint_eq(rec.len, sizeof(golden) - KP_BATCH_HEADER_LEN);
    ck_assert_mem_eq(rec.data, golden + KP_BATCH_HEADER_LEN, rec.len);

    struct kp_batch_hdr h = golden_hdr();
    enum kp_codec used = KP_CODEC_ZSTD;
    ck_assert_int_eq(kp_recordbatch_build(&wire, &h, rec.data, rec.len, NULL,
                                          KP_LEVEL_DEFAULT, &used),
                     KP_OK);
    ck_assert_int_eq(used, KP_CODEC_NONE);
    ck_assert_uint_eq(wire.len, sizeof(golden));
    ck_assert_mem_eq(wire.data, golden, sizeof(golden));

    /* Appends: a batch after existing bytes is the same batch. */
    kp_buf_reset(&wire);
    kp_buf_put_bytes(&wire, "abc", 3);
    ck_assert_int_eq(kp_recordbatch_build(&wire, &h, rec.data, rec.len, NULL,
                                          KP_LEVEL_DEFAULT, NULL),
                     KP_OK);
    ck_assert_uint_eq(wire.len, 3 + sizeof(golden));
    ck_assert_mem_eq(wire.data, "abc", 3);
    ck_assert_mem_eq(wire.data + 3, golden, sizeof(golden));

    kp_buf_deinit(&rec);
    kp_buf_deinit(&wire);
}
END_TEST

START_TEST(test_golden_decode)
{
    struct kp_batch_hdr h;
    const uint8_t *records;
    size_t records_len;
    ck_assert_int_eq(kp_recordbatch_parse(golden, sizeof(golden), &h, &records,
                                          &records_len),
                     KP_OK);
    ck_assert_int_eq(h.count, 2);
    ck_assert_int_eq(h.base_ts, GOLDEN_BASE_TS);
    ck_assert_int_eq(h.max_ts, GOLDEN_BASE_TS + 5);
    ck_assert_int_eq(h.producer_id, 1000);
    ck_assert_int_eq(h.producer_epoch, 2);
    ck_assert_int_eq(h.base_seq, 7);
    ck_assert_int_eq(h.codec, KP_CODEC_NONE);
    ck_assert_ptr_eq(records, golden + KP_BATCH_HEADER_LEN);
    ck_assert_uint_eq(records_len, sizeof(golden) - KP_BATCH_HEADER_LEN);

    struct kp_rd r;
    struct kp_record_view v;
    struct kp_header hd;
    kp_rd_init(&r, records, records_len);

    ck_assert_int_eq(kp_record_next(&r, &v), KP_OK);
    ck_assert_int_eq(v.ts_delta, 0);
    ck_assert_int_eq(v.offset_delta, 0);
    ck_assert_uint_eq(v.key_len, 1);
    ck_assert_mem_eq(v.key, "k", 1);
    ck_assert_uint_eq(v.value_len, 2);
    ck_assert_mem_eq(v.value, "v1", 2);
    ck_assert_int_eq(v.header_cnt, 1);
    ck_assert_int_eq(kp_record_header_next(&v, &hd), KP_OK);
    ck_assert_uint_eq(hd.name_len, 2);
    ck_assert_mem_eq(hd.name, "h1", 2);
    ck_assert_uint_eq(hd.value_len, 1);
    ck_assert_mem_eq(hd.value, "x", 1);
    /* No more headers. */
    ck_assert_int_eq(kp_record_header_next(&v, &hd), KP_ERROR);

    ck_assert_int_eq(kp_record_next(&r, &v), KP_OK);
    ck_assert_int_eq(v.ts_delta, 5);
    ck_assert_int_eq(v.offset_delta, 1);
    ck_assert_ptr_null(v.key);
    ck_assert_uint_eq(v.value_len, 5);
    ck_assert_mem_eq(v.value, "hello", 5);
    ck_assert_int_eq(v.header_cnt, 1);
    ck_assert_int_eq(kp_record_header_next(&v, &hd), KP_OK);
    ck_assert_mem_eq(hd.name, "peer", 4);
    ck_assert_ptr_null(hd.value);

    ck_assert_uint_eq(kp_rd_left(&r), 0);
    ck_assert_int_eq(r.err, 0);
    ck_assert_int_eq(kp_record_next(&r, &v), KP_ERROR);
}
END_TEST

START_TEST(test_stamp)
{
    uint8_t b[sizeof(golden)];
    memcpy(b, golden, sizeof(b));

    kp_recordbatch_stamp(b, sizeof(b), 5000, 3, 100);
    /* Expected: the golden batch with the three fields changed and the
     * CRC recomputed independently (Python): 0x37fb46d3. */
    uint8_t want[sizeof(golden)];
    memcpy(want, golden, sizeof(want));
    static const uint8_t crc[] = {0x37, 0xfb, 0x46, 0xd3};
    static const uint8_t pid[] = {0, 0, 0, 0, 0, 0, 0x13, 0x88};
    static const uint8_t epoch[] = {0, 3};
    static const uint8_t seq[] = {0, 0, 0, 100};
    memcpy(want + KP_BATCH_OFF_CRC, crc, 4);
    memcpy(want + KP_BATCH_OFF_PRODUCER_ID, pid, 8);
    memcpy(want + KP_BATCH_OFF_PRODUCER_EPOCH, epoch, 2);
    memcpy(want + KP_BATCH_OFF_BASE_SEQUENCE, seq, 4);
    ck_assert_mem_eq(b, want, sizeof(b));

    struct kp_batch_hdr h;
    const uint8_t *records;
    size_t records_len;
    ck_assert_int_eq(
        kp_recordbatch_parse(b, sizeof(b), &h, &records, &records_len), KP_OK);
    ck_assert_int_eq(h.producer_id, 5000);
    ck_assert_int_eq(h.producer_epoch, 3);
    ck_assert_int_eq(h.base_seq, 100);

    /* Stamping back gives the golden bytes again. */
    kp_recordbatch_stamp(b, sizeof(b), 1000, 2, 7);
    ck_assert_mem_eq(b, golden, sizeof(b));

    /* A batch built without idempotence and stamped later equals one
     * built with the values. */
    struct kp_buf rec, wire;
    kp_buf_init(&rec, 0);
    kp_buf_init(&wire, 0);
    golden_records(&rec);
    struct kp_batch_hdr gh = golden_hdr();
    gh.producer_id = -1;
    gh.producer_epoch = -1;
    gh.base_seq = -1;
    ck_assert_int_eq(kp_recordbatch_build(&wire, &gh, rec.data, rec.len, NULL,
                                          KP_LEVEL_DEFAULT, NULL),
                     KP_OK);
    ck_assert_int_eq(wire.data[KP_BATCH_OFF_PRODUCER_ID], (uint8_t)0xff);
    ck_assert_int_eq(
        kp_recordbatch_parse(wire.data, wire.len, &h, &records, &records_len),
        KP_OK);
    ck_assert_int_eq(h.producer_id, -1);
    ck_assert_int_eq(h.producer_epoch, -1);
    ck_assert_int_eq(h.base_seq, -1);
    kp_recordbatch_stamp(wire.data, wire.len, 1000, 2, 7);
    ck_assert_uint_eq(wire.len, sizeof(golden));
    ck_assert_mem_eq(wire.data, golden, sizeof(golden));
    kp_buf_deinit(&rec);
    kp_buf_deinit(&wire);
}
END_TEST

/* Parses an exact-size heap copy of p[0..n) (ASan catches over-reads). */
static int parse_copy(const uint8_t *p, size_t n)
{
    uint8_t *c = kp_malloc(n ? n : 1);
    memcpy(c, p, n);
    struct kp_batch_hdr h;
    const uint8_t *records;
    size_t records_len;
    int rc = kp_recordbatch_parse(c, n, &h, &records, &records_len);
    free(c);
    return rc;
}

START_TEST(test_parse_rejects)
{
    uint8_t b[sizeof(golden) + 1];
    memcpy(b, golden, sizeof(golden));
    b[sizeof(golden)] = 0;

    ck_assert_int_eq(parse_copy(b, sizeof(golden)), KP_OK);
    /* Length disagreeing with batchLength, either way. */
    ck_assert_int_eq(parse_copy(b, sizeof(golden) + 1), KP_ERROR);
    ck_assert_int_eq(parse_copy(b, sizeof(golden) - 1), KP_ERROR);
    for (size_t n = 0; n < KP_BATCH_HEADER_LEN; n++) {
        ck_assert_int_eq(parse_copy(b, n), KP_ERROR);
    }
    /* Every single-byte change is caught: by the CRC, or before it by
     * the length/magic checks; except baseOffset and
     * partitionLeaderEpoch, which the broker sets and the CRC leaves out. */
    for (size_t i = 0; i < sizeof(golden); i++) {
        bool uncovered = i < 8 || (i >= 12 && i < 16);
        b[i] ^= 0x01;
        ck_assert_msg(parse_copy(b, sizeof(golden)) ==
                          (uncovered ? KP_OK : KP_ERROR),
                      "byte %zu", i);
        b[i] ^= 0x01;
    }
    /* With a valid CRC: bad magic, codec bits 5-7, negative count. */
    b[16] = 1;
    kp_recordbatch_stamp(b, sizeof(golden), 1000, 2, 7);
    ck_assert_int_eq(parse_copy(b, sizeof(golden)), KP_ERROR);
    b[16] = 2;
    for (uint8_t codec = 5; codec < 8; codec++) {
        b[22] = codec;
        kp_recordbatch_stamp(b, sizeof(golden), 1000, 2, 7);
        ck_assert_int_eq(parse_copy(b, sizeof(golden)), KP_ERROR);
    }
    b[22] = 0;
    b[57] = 0x80;
    kp_recordbatch_stamp(b, sizeof(golden), 1000, 2, 7);
    ck_assert_int_eq(parse_copy(b, sizeof(golden)), KP_ERROR);
    b[57] = 0;
    kp_recordbatch_stamp(b, sizeof(golden), 1000, 2, 7);
    ck_assert_int_eq(parse_copy(b, sizeof(golden)), KP_OK);
}
END_TEST

/* ---- random round trip ---- */

struct rand_rec {
    int64_t ts_delta;
    int key_null, value_null;
    uint8_t key[40];
    size_t key_len;
    uint8_t value[300];
    size_t value_len;
    struct kp_header hdrs[4];
    size_t hdr_cnt;
    uint8_t hbytes[4][2][20];
};

static void rand_fill(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)rng();
    }
}

static void make_rand_rec(struct rand_rec *rr)
{
    static const int64_t special[] = {
        0, -1, 1, 63, 64, -64, -65, INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN};
    rr->ts_delta = (rng() % 4 == 0) ? special[rng() % KP_ARRAY_LEN(special)]
                                    : (int64_t)(rng() % 100000);
    rr->key_null = rng() % 4 == 0;
    rr->value_null = rng() % 8 == 0;
    rr->key_len = rng() % (sizeof(rr->key) + 1);
    rr->value_len = rng() % (sizeof(rr->value) + 1);
    rand_fill(rr->key, rr->key_len);
    rand_fill(rr->value, rr->value_len);
    rr->hdr_cnt = rng() % 5;
    for (size_t i = 0; i < rr->hdr_cnt; i++) {
        size_t nl = rng() % 20, vl = rng() % 21;
        rand_fill(rr->hbytes[i][0], nl);
        rand_fill(rr->hbytes[i][1], vl > 0 ? vl - 1 : 0);
        rr->hdrs[i].name = rr->hbytes[i][0];
        rr->hdrs[i].name_len = nl;
        /* vl == 0: a null value */
        rr->hdrs[i].value = vl ? rr->hbytes[i][1] : NULL;
        rr->hdrs[i].value_len = vl ? vl - 1 : 0;
    }
}

static void append_rand_rec(struct kp_buf *b, const struct rand_rec *rr,
                            int32_t od)
{
    struct kp_msg m = {
        .key = rr->key_null ? NULL : rr->key,
        .key_len = rr->key_null ? 0 : rr->key_len,
        .value = rr->value_null ? NULL : rr->value,
        .value_len = rr->value_null ? 0 : rr->value_len,
        .partition = -1,
        .timestamp = -1,
        .headers = rr->hdrs,
        .header_cnt = rr->hdr_cnt / 2,
    };
    /* The rest of the headers go in as the extra ones. */
    size_t before = b->len;
    size_t n =
        kp_record_append(b, od, rr->ts_delta, &m, rr->hdrs + rr->hdr_cnt / 2,
                         rr->hdr_cnt - rr->hdr_cnt / 2);
    ck_assert_uint_eq(b->len - before, n);
}

static void check_rand_rec(struct kp_rd *r, const struct rand_rec *rr,
                           int32_t od)
{
    struct kp_record_view v;
    ck_assert_int_eq(kp_record_next(r, &v), KP_OK);
    ck_assert_int_eq(v.ts_delta, rr->ts_delta);
    ck_assert_int_eq(v.offset_delta, od);
    if (rr->key_null) {
        ck_assert_ptr_null(v.key);
    } else {
        ck_assert_ptr_nonnull(v.key);
        ck_assert_uint_eq(v.key_len, rr->key_len);
        ck_assert(memcmp(v.key, rr->key, rr->key_len) == 0);
    }
    if (rr->value_null) {
        ck_assert_ptr_null(v.value);
    } else {
        ck_assert_ptr_nonnull(v.value);
        ck_assert_uint_eq(v.value_len, rr->value_len);
        ck_assert(memcmp(v.value, rr->value, rr->value_len) == 0);
    }
    ck_assert_int_eq(v.header_cnt, (int32_t)rr->hdr_cnt);
    for (size_t i = 0; i < rr->hdr_cnt; i++) {
        struct kp_header hd;
        ck_assert_int_eq(kp_record_header_next(&v, &hd), KP_OK);
        ck_assert_uint_eq(hd.name_len, rr->hdrs[i].name_len);
        ck_assert(memcmp(hd.name, rr->hdrs[i].name, hd.name_len) == 0);
        if (!rr->hdrs[i].value) {
            ck_assert_ptr_null(hd.value);
        } else {
            ck_assert_ptr_nonnull(hd.value);
            ck_assert_uint_eq(hd.value_len, rr->hdrs[i].value_len);
            ck_assert(memcmp(hd.value, rr->hdrs[i].value, hd.value_len) == 0);
        }
    }
    struct kp_header extra;
    ck_assert_int_eq(kp_record_header_next(&v, &extra), KP_ERROR);
}

#define NRAND 2000

START_TEST(test_random_roundtrip)
{
    struct rand_rec *rr = kp_calloc(NRAND, sizeof(*rr));
    struct kp_buf b;
    kp_buf_init(&b, 0);
    for (int i = 0; i < NRAND; i++) {
        make_rand_rec(&rr[i]);
        append_rand_rec(&b, &rr[i], i);
    }
    uint8_t *copy = kp_malloc(b.len);
    memcpy(copy, b.data, b.len);
    struct kp_rd r;
    kp_rd_init(&r, copy, b.len);
    for (int i = 0; i < NRAND; i++) {
        check_rand_rec(&r, &rr[i], i);
    }
    ck_assert_uint_eq(kp_rd_left(&r), 0);
    ck_assert_int_eq(r.err, 0);

    /* The same records in a batch survive build + parse. */
    struct kp_buf wire;
    kp_buf_init(&wire, 0);
    struct kp_batch_hdr h = {.count = NRAND,
                             .base_ts = 1,
                             .max_ts = 2,
                             .producer_id = -1,
                             .producer_epoch = -1,
                             .base_seq = -1,
                             .codec = KP_CODEC_NONE};
    ck_assert_int_eq(kp_recordbatch_build(&wire, &h, b.data, b.len, NULL,
                                          KP_LEVEL_DEFAULT, NULL),
                     KP_OK);
    struct kp_batch_hdr ph;
    const uint8_t *records;
    size_t records_len;
    ck_assert_int_eq(
        kp_recordbatch_parse(wire.data, wire.len, &ph, &records, &records_len),
        KP_OK);
    ck_assert_int_eq(ph.count, NRAND);
    ck_assert_uint_eq(records_len, b.len);
    /* lastOffsetDelta = count - 1 */
    ck_assert_uint_eq(wire.data[26], (NRAND - 1) & 0xff);
    ck_assert_uint_eq(wire.data[25], (NRAND - 1) >> 8);
    kp_rd_init(&r, records, records_len);
    for (int i = 0; i < NRAND; i++) {
        check_rand_rec(&r, &rr[i], i);
    }

    free(copy);
    kp_buf_deinit(&wire);
    kp_buf_deinit(&b);
    free(rr);
}
END_TEST

/* ---- compressed batches ---- */

static const enum kp_codec codecs[] = {KP_CODEC_GZIP, KP_CODEC_LZ4,
                                       KP_CODEC_ZSTD};

START_TEST(test_compressed_batch)
{
    enum kp_codec codec = codecs[_i];
    struct kp_compressor *cz = kp_compressor_create();
    struct kp_buf rec, wire, dec;
    kp_buf_init(&rec, 0);
    kp_buf_init(&wire, 0);
    kp_buf_init(&dec, 0);
    const int n = 500;
    for (int i = 0; i < n; i++) {
        char val[80];
        int vl =
            snprintf(val, sizeof(val),
                     "GET /api/v1/orders/%d status=200 lat=%dms", i, i % 37);
        struct kp_msg m = {.key = B("order"),
                           .key_len = 5,
                           .value = B(val),
                           .value_len = (size_t)vl,
                           .partition = -1,
                           .timestamp = -1};
        kp_record_append(&rec, i, i * 3, &m, NULL, 0);
    }
    struct kp_batch_hdr h = {.count = n,
                             .base_ts = GOLDEN_BASE_TS,
                             .max_ts = GOLDEN_BASE_TS + 3 * (n - 1),
                             .producer_id = 77,
                             .producer_epoch = 1,
                             .base_seq = 1234,
                             .codec = codec};
    enum kp_codec used = KP_CODEC_NONE;
    ck_assert_int_eq(kp_recordbatch_build(&wire, &h, rec.data, rec.len, cz,
                                          KP_LEVEL_DEFAULT, &used),
                     KP_OK);
    ck_assert_int_eq(used, codec);
    /* attributes: codec in bits 0-2, CreateTime (bit 3 clear) */
    ck_assert_uint_eq(wire.data[KP_BATCH_OFF_ATTRIBUTES], 0);
    ck_assert_uint_eq(wire.data[KP_BATCH_OFF_ATTRIBUTES + 1], codec);
    /* batchLength */
    uint32_t bl = (uint32_t)wire.data[8] << 24 | (uint32_t)wire.data[9] << 16 |
                  (uint32_t)wire.data[10] << 8 | wire.data[11];
    ck_assert_uint_eq(bl, wire.len - 12);
    ck_assert_uint_lt(wire.len, KP_BATCH_HEADER_LEN + rec.len / 2);
    /* CRC over attributes..end, after compression */
    uint32_t crc = (uint32_t)wire.data[17] << 24 |
                   (uint32_t)wire.data[18] << 16 |
                   (uint32_t)wire.data[19] << 8 | wire.data[20];
    ck_assert_uint_eq(crc, kp_crc32c_sw(0, wire.data + 21, wire.len - 21));

    struct kp_batch_hdr ph;
    const uint8_t *records;
    size_t records_len;
    ck_assert_int_eq(
        kp_recordbatch_parse(wire.data, wire.len, &ph, &records, &records_len),
        KP_OK);
    ck_assert_int_eq(ph.codec, codec);
    ck_assert_int_eq(ph.count, n);
    ck_assert_int_eq(ph.producer_id, 77);
    ck_assert_int_eq(ph.base_seq, 1234);
    ck_assert_int_eq(ph.max_ts, GOLDEN_BASE_TS + 3 * (n - 1));
    ck_assert_int_eq(kp_decompress(codec, records, records_len, 1 << 20, &dec),
                     KP_OK);
    ck_assert_uint_eq(dec.len, rec.len);
    ck_assert_mem_eq(dec.data, rec.data, rec.len);

    struct kp_rd r;
    struct kp_record_view v;
    kp_rd_init(&r, dec.data, dec.len);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(kp_record_next(&r, &v), KP_OK);
        ck_assert_int_eq(v.offset_delta, i);
        ck_assert_int_eq(v.ts_delta, i * 3);
    }
    ck_assert_uint_eq(kp_rd_left(&r), 0);

    /* Stamping a compressed batch keeps it valid. */
    kp_recordbatch_stamp(wire.data, wire.len, 78, 2, 99);
    ck_assert_int_eq(
        kp_recordbatch_parse(wire.data, wire.len, &ph, &records, &records_len),
        KP_OK);
    ck_assert_int_eq(ph.producer_id, 78);
    ck_assert_int_eq(ph.codec, codec);

    kp_buf_deinit(&rec);
    kp_buf_deinit(&wire);
    kp_buf_deinit(&dec);
    kp_compressor_destroy(cz);
}
END_TEST

START_TEST(test_incompressible_batch)
{
    enum kp_codec codec = codecs[_i];
    struct kp_compressor *cz = kp_compressor_create();
    struct kp_buf rec, wire;
    kp_buf_init(&rec, 0);
    kp_buf_init(&wire, 0);
    uint8_t val[300];
    rand_fill(val, sizeof(val));
    struct kp_msg m = {.value = val,
                       .value_len = sizeof(val),
                       .partition = -1,
                       .timestamp = -1};
    kp_record_append(&rec, 0, 0, &m, NULL, 0);
    struct kp_batch_hdr h = {.count = 1,
                             .base_ts = 5,
                             .max_ts = 5,
                             .producer_id = -1,
                             .producer_epoch = -1,
                             .base_seq = -1,
                             .codec = codec};
    enum kp_codec used = codec;
    ck_assert_int_eq(kp_recordbatch_build(&wire, &h, rec.data, rec.len, cz,
                                          KP_LEVEL_DEFAULT, &used),
                     KP_OK);
    ck_assert_int_eq(used, KP_CODEC_NONE);
    ck_assert_uint_eq(wire.data[KP_BATCH_OFF_ATTRIBUTES + 1], 0);
    ck_assert_uint_eq(wire.len, KP_BATCH_HEADER_LEN + rec.len);
    ck_assert_mem_eq(wire.data + KP_BATCH_HEADER_LEN, rec.data, rec.len);
    ck_assert_int_eq(parse_copy(wire.data, wire.len), KP_OK);
    kp_buf_deinit(&rec);
    kp_buf_deinit(&wire);
    kp_compressor_destroy(cz);
}
END_TEST

START_TEST(test_build_unavailable_codec)
{
    struct kp_compressor *cz = kp_compressor_create();
    struct kp_buf rec, wire;
    kp_buf_init(&rec, 0);
    kp_buf_init(&wire, 0);
    golden_records(&rec);
    kp_buf_put_bytes(&wire, "xyz", 3);
    struct kp_batch_hdr h = golden_hdr();
    /* every named codec is built in: an out-of-range one stands in */
    h.codec = KP_CODEC__COUNT;
    ck_assert_int_eq(kp_recordbatch_build(&wire, &h, rec.data, rec.len, cz,
                                          KP_LEVEL_DEFAULT, NULL),
                     KP_ERROR);
    ck_assert_uint_eq(wire.len, 3);
    kp_buf_deinit(&rec);
    kp_buf_deinit(&wire);
    kp_compressor_destroy(cz);
}
END_TEST

/* ---- varints ---- */

START_TEST(test_varint_edges)
{
    static const struct {
        int64_t v;
        size_t len;
    } cases[] = {
        {0, 1},          {-1, 1},         {1, 1},         {63, 1},
        {-64, 1},        {64, 2},         {-65, 2},       {8191, 2},
        {-8192, 2},      {8192, 3},       {INT32_MAX, 5}, {INT32_MIN, 5},
        {INT64_MAX, 10}, {INT64_MIN, 10},
    };
    uint8_t buf[16];
    for (size_t i = 0; i < KP_ARRAY_LEN(cases); i++) {
        size_t n = kp_varint_enc(buf, cases[i].v);
        ck_assert_uint_eq(n, cases[i].len);
        ck_assert_uint_eq(kp_varint_size(cases[i].v), n);
        struct kp_rd r;
        kp_rd_init(&r, buf, n);
        ck_assert_int_eq(kp_rd_varint(&r), cases[i].v);
        ck_assert_int_eq(r.err, 0);
        ck_assert_uint_eq(kp_rd_left(&r), 0);
        /* One byte short fails cleanly. */
        kp_rd_init(&r, buf, n - 1);
        kp_rd_varint(&r);
        ck_assert_int_eq(r.err, 1);
    }
    /* Exact zig-zag bytes. */
    ck_assert_uint_eq(kp_varint_enc(buf, -1), 1);
    ck_assert_uint_eq(buf[0], 0x01);
    ck_assert_uint_eq(kp_varint_enc(buf, 63), 1);
    ck_assert_uint_eq(buf[0], 0x7e);
    ck_assert_uint_eq(kp_varint_enc(buf, 64), 2);
    ck_assert_uint_eq(buf[0], 0x80);
    ck_assert_uint_eq(buf[1], 0x01);
    ck_assert_uint_eq(kp_varint_enc(buf, -65), 2);
    ck_assert_uint_eq(buf[0], 0x81);
    ck_assert_uint_eq(buf[1], 0x01);
    ck_assert_uint_eq(kp_varint_enc(buf, INT64_MIN), 10);
    for (int i = 0; i < 9; i++) {
        ck_assert_uint_eq(buf[i], 0xff);
    }
    ck_assert_uint_eq(buf[9], 0x01);

    static const struct {
        uint64_t v;
        size_t len;
    } ucases[] = {
        {0, 1},     {127, 1},        {128, 2},       {16383, 2},
        {16384, 3}, {UINT32_MAX, 5}, {INT64_MAX, 9}, {UINT64_MAX, 10},
    };
    for (size_t i = 0; i < KP_ARRAY_LEN(ucases); i++) {
        size_t n = kp_uvarint_enc(buf, ucases[i].v);
        ck_assert_uint_eq(n, ucases[i].len);
        ck_assert_uint_eq(kp_uvarint_size(ucases[i].v), n);
        struct kp_rd r;
        kp_rd_init(&r, buf, n);
        ck_assert_uint_eq(kp_rd_uvarint(&r), ucases[i].v);
        ck_assert_int_eq(r.err, 0);
        ck_assert_uint_eq(kp_rd_left(&r), 0);
    }
    /* More than 10 bytes: malformed. */
    uint8_t over[12];
    memset(over, 0x80, sizeof(over));
    over[11] = 0;
    struct kp_rd r;
    kp_rd_init(&r, over, sizeof(over));
    kp_rd_uvarint(&r);
    ck_assert_int_eq(r.err, 1);
}
END_TEST

/* ---- malformed records ---- */

/* Decodes a records section from an exact-size copy; returns how many
 * records decoded before the first failure (or the end), and whether it
 * ended in failure. Walks every header of every record. */
static int decode_all(const uint8_t *p, size_t n, bool *failed)
{
    uint8_t *c = kp_malloc(n ? n : 1);
    memcpy(c, p, n);
    struct kp_rd r;
    struct kp_record_view v;
    struct kp_header hd;
    int cnt = 0;
    kp_rd_init(&r, c, n);
    *failed = false;
    while (kp_rd_left(&r) > 0) {
        if (kp_record_next(&r, &v) != KP_OK) {
            *failed = true;
            break;
        }
        for (int32_t i = 0; i < v.header_cnt; i++) {
            ck_assert_int_eq(kp_record_header_next(&v, &hd), KP_OK);
        }
        cnt++;
    }
    free(c);
    return cnt;
}

static void expect_bad(const uint8_t *p, size_t n, int line)
{
    bool failed;
    int cnt = decode_all(p, n, &failed);
    ck_assert_msg(failed && cnt == 0, "case at line %d decoded", line);
}

#define BAD(...)                                                               \
    do {                                                                       \
        static const uint8_t bad_[] = {__VA_ARGS__};                           \
        expect_bad(bad_, sizeof(bad_), __LINE__);                              \
    } while (0)

static void expect_good(const uint8_t *p, size_t n, int line)
{
    bool failed;
    int cnt = decode_all(p, n, &failed);
    ck_assert_msg(!failed && cnt == 1, "case at line %d rejected", line);
}

#define GOOD(...)                                                              \
    do {                                                                       \
        static const uint8_t good_[] = {__VA_ARGS__};                          \
        expect_good(good_, sizeof(good_), __LINE__);                           \
    } while (0)

START_TEST(test_malformed_records)
{
    /* Sanity: golden record 0 alone is fine. */
    bool failed;
    ck_assert_int_eq(decode_all(golden + 61, 15, &failed), 1);
    ck_assert(!failed);

    /* The minimal valid record (attributes, tsDelta, offsetDelta, null
     * key, null value, no headers) and one with an empty header, the
     * bases the bad cases below differ from by one defect each. */
    GOOD(0x0c, 0, 0, 0, 0x01, 0x01, 0x00);
    GOOD(0x10, 0, 0, 0, 0x01, 0x01, 0x02, 0x00, 0x00);

    /* length -1 */
    BAD(0x01, 0, 0, 0, 0x01, 0x01, 0x00);
    /* length beyond the buffer */
    BAD(0x0a, 0, 0, 0);
    /* length one more than the fields (a trailing byte inside) */
    BAD(0x1e, 0, 0, 0, 0x02, 'k', 0x04, 'v', '1', 0x02, 0x04, 'h', '1', 0x02,
        'x', 0x00);
    /* length one less than the fields */
    BAD(0x1a, 0, 0, 0, 0x02, 'k', 0x04, 'v', '1', 0x02, 0x04, 'h', '1', 0x02,
        'x');
    /* key length -2 */
    BAD(0x0c, 0, 0, 0, 0x03, 0x01, 0x00);
    /* value length -3 */
    BAD(0x0c, 0, 0, 0, 0x01, 0x05, 0x00);
    /* key longer than the record, though the buffer has the bytes */
    BAD(0x0c, 0, 0, 0, 0x10, 0x01, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        13, 14, 15, 16);
    /* header count -1 */
    BAD(0x0c, 0, 0, 0, 0x01, 0x01, 0x01);
    /* header count 1000000, far beyond the bytes */
    BAD(0x14, 0, 0, 0, 0x01, 0x01, 0x80, 0x89, 0x7a, 0x00, 0x00);
    /* header count 2 but only one header */
    BAD(0x14, 0, 0, 0, 0x01, 0x01, 0x04, 0x02, 'a', 0x02, 'b');
    /* header key null (Kafka refuses) */
    BAD(0x12, 0, 0, 0, 0x01, 0x01, 0x02, 0x01, 0x02, 'b');
    /* header value -2 */
    BAD(0x12, 0, 0, 0, 0x01, 0x01, 0x02, 0x02, 'a', 0x03);
    /* offsetDelta beyond int32 (zig-zag 2^32) */
    BAD(0x14, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x20, 0x01, 0x01, 0x00);
    /* overlong varint for the length */
    BAD(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01);
    /* a record cut inside its timestamp varint */
    BAD(0x04, 0, 0x80, 0x80);
}
END_TEST

START_TEST(test_truncation_and_mutation)
{
    struct rand_rec *rr = kp_calloc(50, sizeof(*rr));
    struct kp_buf b;
    kp_buf_init(&b, 0);
    size_t *ends = kp_calloc(50, sizeof(size_t));
    for (int i = 0; i < 50; i++) {
        make_rand_rec(&rr[i]);
        append_rand_rec(&b, &rr[i], i);
        ends[i] = b.len;
    }
    /* Each cut decodes exactly the records wholly before it; the one
     * it splits fails. */
    for (size_t cut = 0; cut <= b.len; cut++) {
        int whole = 0;
        while (whole < 50 && ends[whole] <= cut) {
            whole++;
        }
        bool failed;
        int cnt = decode_all(b.data, cut, &failed);
        ck_assert_int_eq(cnt, whole);
        ck_assert(failed ==
                  (whole < 50 && cut != (whole ? ends[whole - 1] : 0)));
    }
    /* Random byte changes never read out of bounds. */
    for (int i = 0; i < 3000; i++) {
        uint8_t *c = kp_malloc(b.len);
        memcpy(c, b.data, b.len);
        int flips = 1 + (int)(rng() % 4);
        for (int f = 0; f < flips; f++) {
            c[rng() % b.len] = (uint8_t)rng();
        }
        bool failed;
        (void)decode_all(c, b.len, &failed);
        free(c);
    }
    free(ends);
    kp_buf_deinit(&b);
    free(rr);
}
END_TEST

static Suite *record_suite(void)
{
    Suite *s = suite_create("record");
    TCase *tc = tcase_create("core");
    int nc = (int)KP_ARRAY_LEN(codecs);
    tcase_add_test(tc, test_golden_batch);
    tcase_add_test(tc, test_golden_decode);
    tcase_add_test(tc, test_stamp);
    tcase_add_test(tc, test_parse_rejects);
    tcase_add_test(tc, test_random_roundtrip);
    tcase_add_loop_test(tc, test_compressed_batch, 0, nc);
    tcase_add_loop_test(tc, test_incompressible_batch, 0, nc);
    tcase_add_test(tc, test_build_unavailable_codec);
    tcase_add_test(tc, test_varint_edges);
    tcase_add_test(tc, test_malformed_records);
    tcase_add_test(tc, test_truncation_and_mutation);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(record_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
