/*
 * check_compress.c - each codec's output decoded by the codec library's own
 * decoder (zlib inflate requiring a gzip wrapper, LZ4F_decompress,
 * ZSTD_decompress, snappy_uncompress per snappy-java block), the lz4 frame
 * flags Kafka needs, the snappy-java framing, levels, context reuse, and
 * the max_out bound of kp_decompress.
 */
#include <check.h>
#include <lz4frame.h>
#include <snappy-c.h>
#include <stdio.h>
#include <zlib.h>
#include <zstd.h>

#include "kp_compress.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint8_t *make_random(size_t n)
{
    uint8_t *p = kp_malloc(n);
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)rng();
    }
    return p;
}

/* Log-like text: compressible, but with enough entropy that levels show. */
static uint8_t *make_text(size_t n)
{
    static const char *const words[] = {
        "GET",   "POST",  "/api/v1/orders", "user=",  "200",  "404",
        "kafka", "topic", "partition",      "lat=",   "ms",   "ok",
        "error", "retry", "broker",         "leader", "host", "id="};
    uint8_t *p = kp_malloc(n);
    size_t i = 0;
    while (i < n) {
        const char *w = words[rng() % KP_ARRAY_LEN(words)];
        char num[16];
        snprintf(num, sizeof(num), "%u", (unsigned)(rng() % 100000));
        for (const char *s = w; *s && i < n; s++) {
            p[i++] = (uint8_t)*s;
        }
        for (const char *s = num; *s && i < n; s++) {
            p[i++] = (uint8_t)*s;
        }
        if (i < n) {
            p[i++] = (rng() % 8) ? ' ' : '\n';
        }
    }
    return p;
}

/* ---- the libraries' own decoders ---- */

static uint8_t *lib_gunzip(const uint8_t *in, size_t n, size_t expect)
{
    uint8_t *out = kp_malloc(expect + 1);
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    /* 15 + 16: only a gzip wrapper is accepted. */
    ck_assert_int_eq(inflateInit2(&zs, 15 + 16), Z_OK);
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)expect + 1;
    ck_assert_int_eq(inflate(&zs, Z_FINISH), Z_STREAM_END);
    ck_assert_uint_eq(zs.total_out, expect);
    ck_assert_uint_eq(zs.avail_in, 0);
    inflateEnd(&zs);
    return out;
}

static uint8_t *lib_unlz4(const uint8_t *in, size_t n, size_t expect)
{
    uint8_t *out = kp_malloc(expect + 1);
    LZ4F_dctx *d;
    ck_assert(!LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION)));
    size_t dst_len = expect + 1;
    size_t src_len = n;
    size_t rc = LZ4F_decompress(d, out, &dst_len, in, &src_len, NULL);
    ck_assert_msg(!LZ4F_isError(rc), "%s", LZ4F_getErrorName(rc));
    ck_assert_uint_eq(rc, 0); /* frame complete */
    ck_assert_uint_eq(src_len, n);
    ck_assert_uint_eq(dst_len, expect);
    LZ4F_freeDecompressionContext(d);
    return out;
}

static uint8_t *lib_unzstd(const uint8_t *in, size_t n, size_t expect)
{
    uint8_t *out = kp_malloc(expect + 1);
    size_t rc = ZSTD_decompress(out, expect + 1, in, n);
    ck_assert_msg(!ZSTD_isError(rc), "%s", ZSTD_getErrorName(rc));
    ck_assert_uint_eq(rc, expect);
    return out;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

/* The snappy-java stream taken apart by hand, each block given to
 * libsnappy's own decoder; blocks hold at most 32 KiB, as the Java
 * producer's do. */
static uint8_t *lib_unsnappy(const uint8_t *in, size_t n, size_t expect)
{
    uint8_t *out = kp_malloc(expect + 1);
    size_t got = 0, blocks = 0;
    ck_assert_uint_ge(n, 16);
    ck_assert_uint_eq(be32(in + 8), 1);  /* version */
    ck_assert_uint_eq(be32(in + 12), 1); /* minimum compatible version */
    size_t pos = 16;
    while (pos < n) {
        ck_assert_uint_le(pos + 4, n);
        size_t blen = be32(in + pos);
        pos += 4;
        ck_assert_uint_le(pos + blen, n);
        size_t len;
        ck_assert_int_eq(snappy_uncompressed_length((const char *)in + pos,
                                                    blen, &len),
                         SNAPPY_OK);
        ck_assert_uint_le(len, 32 * 1024);
        ck_assert_uint_le(got + len, expect);
        size_t room = expect + 1 - got;
        ck_assert_int_eq(snappy_uncompress((const char *)in + pos, blen,
                                           (char *)out + got, &room),
                         SNAPPY_OK);
        ck_assert_uint_eq(room, len);
        got += len;
        pos += blen;
        blocks++;
    }
    ck_assert_uint_eq(got, expect);
    ck_assert_uint_ge(blocks, 1);
    ck_assert_uint_eq(blocks, expect ? (expect + 32767) / 32768 : 1);
    return out;
}

static uint8_t *lib_decode(enum kp_codec c, const uint8_t *in, size_t n,
                           size_t expect)
{
    switch (c) {
    case KP_CODEC_SNAPPY:
        return lib_unsnappy(in, n, expect);
    case KP_CODEC_GZIP:
        return lib_gunzip(in, n, expect);
    case KP_CODEC_LZ4:
        return lib_unlz4(in, n, expect);
    case KP_CODEC_ZSTD:
        return lib_unzstd(in, n, expect);
    default:
        ck_abort_msg("codec %d", c);
        return NULL;
    }
}

static void check_header(enum kp_codec c, const uint8_t *p, size_t n)
{
    ck_assert_uint_ge(n, 4);
    switch (c) {
    case KP_CODEC_GZIP:
        /* gzip magic, deflate method */
        ck_assert_uint_eq(p[0], 0x1f);
        ck_assert_uint_eq(p[1], 0x8b);
        ck_assert_uint_eq(p[2], 8);
        break;
    case KP_CODEC_LZ4:
        ck_assert_uint_ge(n, 7);
        /* frame magic 0x184d2204, little-endian */
        ck_assert_uint_eq(p[0], 0x04);
        ck_assert_uint_eq(p[1], 0x22);
        ck_assert_uint_eq(p[2], 0x4d);
        ck_assert_uint_eq(p[3], 0x18);
        ck_assert_uint_eq(p[4] >> 6, 1);       /* FLG version 01 */
        ck_assert_uint_eq((p[4] >> 5) & 1, 1); /* block independence */
        ck_assert_uint_eq((p[4] >> 4) & 1, 0); /* no block checksums */
        ck_assert_uint_eq((p[5] >> 4) & 7, 4); /* BD: 64 KiB blocks */
        break;
    case KP_CODEC_ZSTD:
        ck_assert_uint_eq(p[0], 0x28);
        ck_assert_uint_eq(p[1], 0xb5);
        ck_assert_uint_eq(p[2], 0x2f);
        ck_assert_uint_eq(p[3], 0xfd);
        break;
    case KP_CODEC_SNAPPY:
        /* snappy-java's magic, what Java's SnappyInputStream and
         * librdkafka look for */
        ck_assert_uint_ge(n, 16);
        ck_assert_mem_eq(p, "\x82SNAPPY\0", 8);
        break;
    default:
        break;
    }
}

static const enum kp_codec codecs[] = {KP_CODEC_GZIP, KP_CODEC_LZ4,
                                       KP_CODEC_ZSTD, KP_CODEC_SNAPPY};

static void roundtrip(struct kp_compressor *cz, enum kp_codec c, int level,
                      const uint8_t *data, size_t n)
{
    struct kp_buf out;
    kp_buf_init(&out, 0);
    /* kp_compress appends: keep a prefix to prove it is preserved. */
    kp_buf_put_bytes(&out, "PFX", 3);
    ck_assert_int_eq(kp_compress(cz, c, level, data, n, &out), KP_OK);
    ck_assert_mem_eq(out.data, "PFX", 3);
    const uint8_t *z = out.data + 3;
    size_t zn = out.len - 3;
    check_header(c, z, zn);

    uint8_t *back = lib_decode(c, z, zn, n);
    if (n) {
        ck_assert_mem_eq(back, data, n);
    }
    free(back);

    struct kp_buf dec;
    kp_buf_init(&dec, 0);
    ck_assert_int_eq(kp_decompress(c, z, zn, n, &dec), KP_OK);
    ck_assert_uint_eq(dec.len, n);
    if (n) {
        ck_assert_mem_eq(dec.data, data, n);
    }
    kp_buf_deinit(&dec);
    kp_buf_deinit(&out);
}

START_TEST(test_roundtrip_sizes)
{
    static const size_t sizes[] = {0, 1, 100 * 1024, 3 * 1024 * 1024};
    enum kp_codec c = codecs[_i];
    struct kp_compressor *cz = kp_compressor_create();

    for (size_t s = 0; s < KP_ARRAY_LEN(sizes); s++) {
        uint8_t *r = make_random(sizes[s]);
        uint8_t *t = make_text(sizes[s]);
        roundtrip(cz, c, KP_LEVEL_DEFAULT, r, sizes[s]);
        roundtrip(cz, c, KP_LEVEL_DEFAULT, t, sizes[s]);
        roundtrip(cz, c, 1, t, sizes[s]);
        free(r);
        free(t);
    }
    kp_compressor_destroy(cz);
}
END_TEST

static size_t compressed_size(struct kp_compressor *cz, enum kp_codec c,
                              int level, const uint8_t *data, size_t n)
{
    struct kp_buf out;
    kp_buf_init(&out, 0);
    ck_assert_int_eq(kp_compress(cz, c, level, data, n, &out), KP_OK);
    size_t len = out.len;
    kp_buf_deinit(&out);
    return len;
}

START_TEST(test_levels)
{
    size_t n = 1024 * 1024;
    uint8_t *t = make_text(n);
    struct kp_compressor *cz = kp_compressor_create();

    /* Higher levels are honoured: strictly smaller on this text. */
    size_t z1 = compressed_size(cz, KP_CODEC_ZSTD, 1, t, n);
    size_t z19 = compressed_size(cz, KP_CODEC_ZSTD, 19, t, n);
    size_t zd = compressed_size(cz, KP_CODEC_ZSTD, KP_LEVEL_DEFAULT, t, n);
    size_t z3 = compressed_size(cz, KP_CODEC_ZSTD, 3, t, n);
    ck_assert_uint_lt(z19, z1);
    ck_assert_uint_eq(zd, z3); /* default is level 3 */

    size_t g1 = compressed_size(cz, KP_CODEC_GZIP, 1, t, n);
    size_t g9 = compressed_size(cz, KP_CODEC_GZIP, 9, t, n);
    size_t gd = compressed_size(cz, KP_CODEC_GZIP, KP_LEVEL_DEFAULT, t, n);
    size_t g6 = compressed_size(cz, KP_CODEC_GZIP, 6, t, n);
    ck_assert_uint_lt(g9, g1);
    ck_assert_uint_eq(gd, g6); /* Z_DEFAULT_COMPRESSION is 6 */

    size_t l0 = compressed_size(cz, KP_CODEC_LZ4, KP_LEVEL_DEFAULT, t, n);
    size_t l9 = compressed_size(cz, KP_CODEC_LZ4, 9, t, n);
    ck_assert_uint_lt(l9, l0);

    kp_compressor_destroy(cz);
    free(t);
}
END_TEST

/* A reused compressor gives the same bytes as a fresh one, whatever came
 * before it (contexts are reset between batches). */
START_TEST(test_reuse)
{
    size_t n = 200 * 1024;
    uint8_t *t = make_text(n);
    struct kp_compressor *cz = kp_compressor_create();

    for (int round = 0; round < 3; round++) {
        for (size_t ci = 0; ci < KP_ARRAY_LEN(codecs); ci++) {
            int level = round == 1 ? 1 : KP_LEVEL_DEFAULT;
            size_t len = n - (size_t)round * 1000;
            struct kp_compressor *fresh = kp_compressor_create();
            struct kp_buf a, b;
            kp_buf_init(&a, 0);
            kp_buf_init(&b, 0);
            ck_assert_int_eq(kp_compress(cz, codecs[ci], level, t, len, &a),
                             KP_OK);
            ck_assert_int_eq(kp_compress(fresh, codecs[ci], level, t, len, &b),
                             KP_OK);
            ck_assert_uint_eq(a.len, b.len);
            ck_assert_mem_eq(a.data, b.data, a.len);
            kp_buf_deinit(&a);
            kp_buf_deinit(&b);
            kp_compressor_destroy(fresh);
        }
    }
    kp_compressor_destroy(cz);
    free(t);
}
END_TEST

START_TEST(test_decompress_bound)
{
    enum kp_codec c = codecs[_i];
    size_t n = 100 * 1024;
    uint8_t *t = make_text(n);
    struct kp_compressor *cz = kp_compressor_create();
    struct kp_buf z, out;
    kp_buf_init(&z, 0);
    kp_buf_init(&out, 0);
    ck_assert_int_eq(kp_compress(cz, c, KP_LEVEL_DEFAULT, t, n, &z), KP_OK);

    kp_buf_put_bytes(&out, "xy", 2);
    ck_assert_int_eq(kp_decompress(c, z.data, z.len, n - 1, &out), KP_ERROR);
    ck_assert_uint_eq(out.len, 2); /* restored */
    ck_assert_int_eq(kp_decompress(c, z.data, z.len, 1000, &out), KP_ERROR);
    ck_assert_int_eq(kp_decompress(c, z.data, z.len, 0, &out), KP_ERROR);
    ck_assert_uint_eq(out.len, 2);
    ck_assert_int_eq(kp_decompress(c, z.data, z.len, n, &out), KP_OK);
    ck_assert_uint_eq(out.len, n + 2);
    ck_assert_mem_eq(out.data + 2, t, n);

    /* A 3 MB run of zeros compresses to almost nothing: the bound still
     * stops it (the "zip bomb" case). */
    size_t big = 3 * 1024 * 1024;
    uint8_t *zeros = kp_calloc(1, big);
    kp_buf_reset(&z);
    ck_assert_int_eq(kp_compress(cz, c, KP_LEVEL_DEFAULT, zeros, big, &z),
                     KP_OK);
    /* snappy's best is ~3 bytes per 64 copied: about 5% */
    ck_assert_uint_lt(z.len, c == KP_CODEC_SNAPPY ? big / 16 : big / 100);
    kp_buf_reset(&out);
    ck_assert_int_eq(kp_decompress(c, z.data, z.len, 64 * 1024, &out),
                     KP_ERROR);
    ck_assert_uint_eq(out.len, 0);
    ck_assert_int_eq(kp_decompress(c, z.data, z.len, big, &out), KP_OK);
    ck_assert_uint_eq(out.len, big);

    free(zeros);
    kp_buf_deinit(&z);
    kp_buf_deinit(&out);
    kp_compressor_destroy(cz);
    free(t);
}
END_TEST

START_TEST(test_decompress_malformed)
{
    enum kp_codec c = codecs[_i];
    size_t n = 20000;
    uint8_t *t = make_text(n);
    struct kp_compressor *cz = kp_compressor_create();
    struct kp_buf z, out;
    kp_buf_init(&z, 0);
    kp_buf_init(&out, 0);
    ck_assert_int_eq(kp_compress(cz, c, KP_LEVEL_DEFAULT, t, n, &z), KP_OK);

    /* Every truncation fails (in an exact-size copy, so ASan sees any
     * read past the end). */
    for (size_t cut = 0; cut < z.len; cut += (cut < 64 ? 1 : 97)) {
        uint8_t *copy = kp_malloc(cut ? cut : 1);
        memcpy(copy, z.data, cut);
        ck_assert_msg(kp_decompress(c, copy, cut, 2 * n, &out) == KP_ERROR,
                      "cut %zu of %zu", cut, z.len);
        ck_assert_uint_eq(out.len, 0);
        free(copy);
    }
    /* Garbage is rejected. */
    uint8_t *junk = make_random(1000);
    ck_assert_int_eq(kp_decompress(c, junk, 1000, 2 * n, &out), KP_ERROR);
    ck_assert_uint_eq(out.len, 0);
    /* Bit flips never crash (may or may not be detected by the codec). */
    for (size_t i = 0; i < z.len; i += 13) {
        z.data[i] ^= 0x55;
        kp_buf_reset(&out);
        (void)kp_decompress(c, z.data, z.len, 2 * n, &out);
        ck_assert_uint_le(out.len, 2 * n);
        z.data[i] ^= 0x55;
    }
    free(junk);
    kp_buf_deinit(&z);
    kp_buf_deinit(&out);
    kp_compressor_destroy(cz);
    free(t);
}
END_TEST

START_TEST(test_concatenated_frames)
{
    /* Two frames back to back decode as their concatenation (Java's
     * GZIPInputStream and the lz4/zstd readers accept that too). */
    enum kp_codec c = codecs[_i];
    struct kp_compressor *cz = kp_compressor_create();
    struct kp_buf z, out;
    kp_buf_init(&z, 0);
    kp_buf_init(&out, 0);
    ck_assert_int_eq(
        kp_compress(cz, c, KP_LEVEL_DEFAULT, (const uint8_t *)"hello ", 6, &z),
        KP_OK);
    ck_assert_int_eq(
        kp_compress(cz, c, KP_LEVEL_DEFAULT, (const uint8_t *)"world", 5, &z),
        KP_OK);
    ck_assert_int_eq(kp_decompress(c, z.data, z.len, 100, &out), KP_OK);
    ck_assert_uint_eq(out.len, 11);
    ck_assert_mem_eq(out.data, "hello world", 11);
    kp_buf_deinit(&z);
    kp_buf_deinit(&out);
    kp_compressor_destroy(cz);
}
END_TEST

START_TEST(test_availability)
{
    ck_assert(kp_codec_available(KP_CODEC_NONE));
    ck_assert(kp_codec_available(KP_CODEC_GZIP));
    ck_assert(kp_codec_available(KP_CODEC_LZ4));
    ck_assert(kp_codec_available(KP_CODEC_ZSTD));
    ck_assert(kp_codec_available(KP_CODEC_SNAPPY));
    ck_assert(!kp_codec_available(KP_CODEC__COUNT));

    struct kp_compressor *cz = kp_compressor_create();
    struct kp_buf out;
    kp_buf_init(&out, 0);
    ck_assert_int_eq(kp_compress(cz, KP_CODEC__COUNT, KP_LEVEL_DEFAULT,
                                 (const uint8_t *)"abc", 3, &out),
                     KP_ERROR);
    ck_assert_uint_eq(out.len, 0);
    ck_assert_int_eq(
        kp_decompress(KP_CODEC__COUNT, (const uint8_t *)"abc", 3, 100, &out),
        KP_ERROR);
    ck_assert_int_eq(
        kp_decompress(KP_CODEC_SNAPPY, (const uint8_t *)"abc", 3, 100, &out),
        KP_ERROR);
    /* NONE copies, and is bounded too. */
    ck_assert_int_eq(kp_compress(cz, KP_CODEC_NONE, KP_LEVEL_DEFAULT,
                                 (const uint8_t *)"abc", 3, &out),
                     KP_OK);
    ck_assert_uint_eq(out.len, 3);
    ck_assert_int_eq(
        kp_decompress(KP_CODEC_NONE, (const uint8_t *)"abc", 3, 2, &out),
        KP_ERROR);
    ck_assert_uint_eq(out.len, 3);
    kp_buf_deinit(&out);
    kp_compressor_destroy(cz);
    kp_compressor_destroy(NULL);
}
END_TEST

/* librdkafka writes one raw snappy block, no framing: kproxyd reads it
 * (batch splitting of a batch it did not write is not a case, but the
 * decoder follows what Kafka's decoders accept). */
START_TEST(test_snappy_raw)
{
    size_t n = 100 * 1024;
    uint8_t *t = make_text(n);
    size_t zn = snappy_max_compressed_length(n);
    char *z = kp_malloc(zn);
    ck_assert_int_eq(snappy_compress((const char *)t, n, z, &zn), SNAPPY_OK);
    struct kp_buf out;
    kp_buf_init(&out, 0);
    ck_assert_int_eq(
        kp_decompress(KP_CODEC_SNAPPY, (const uint8_t *)z, zn, n, &out),
        KP_OK);
    ck_assert_uint_eq(out.len, n);
    ck_assert_mem_eq(out.data, t, n);
    kp_buf_reset(&out);
    ck_assert_int_eq(
        kp_decompress(KP_CODEC_SNAPPY, (const uint8_t *)z, zn, n - 1, &out),
        KP_ERROR);
    ck_assert_uint_eq(out.len, 0);
    kp_buf_deinit(&out);
    free(z);
    free(t);
}
END_TEST

/* snappy has no levels: any level gives the same bytes; a header with no
 * block, or an unknown version, is refused. */
START_TEST(test_snappy_framing)
{
    size_t n = 70 * 1024;
    uint8_t *t = make_text(n);
    struct kp_compressor *cz = kp_compressor_create();
    struct kp_buf a, b, out;
    kp_buf_init(&a, 0);
    kp_buf_init(&b, 0);
    kp_buf_init(&out, 0);
    ck_assert_int_eq(kp_compress(cz, KP_CODEC_SNAPPY, KP_LEVEL_DEFAULT, t, n,
                                 &a),
                     KP_OK);
    ck_assert_int_eq(kp_compress(cz, KP_CODEC_SNAPPY, 9, t, n, &b), KP_OK);
    ck_assert_uint_eq(a.len, b.len);
    ck_assert_mem_eq(a.data, b.data, a.len);
    /* 70 KiB: blocks of 32, 32 and 6 KiB (lib_unsnappy counts them) */
    free(lib_unsnappy(a.data, a.len, n));

    /* header only */
    ck_assert_int_eq(kp_decompress(KP_CODEC_SNAPPY, a.data, 16, n, &out),
                     KP_ERROR);
    /* version 0 */
    a.data[11] = 0;
    ck_assert_int_eq(kp_decompress(KP_CODEC_SNAPPY, a.data, a.len, n, &out),
                     KP_ERROR);
    ck_assert_uint_eq(out.len, 0);
    a.data[11] = 1;
    ck_assert_int_eq(kp_decompress(KP_CODEC_SNAPPY, a.data, a.len, n, &out),
                     KP_OK);
    ck_assert_uint_eq(out.len, n);

    /* an empty input still makes one (empty) block */
    kp_buf_reset(&b);
    ck_assert_int_eq(kp_compress(cz, KP_CODEC_SNAPPY, KP_LEVEL_DEFAULT, t, 0,
                                 &b),
                     KP_OK);
    ck_assert_uint_eq(b.len, 16 + 4 + 1);
    kp_buf_deinit(&a);
    kp_buf_deinit(&b);
    kp_buf_deinit(&out);
    kp_compressor_destroy(cz);
    free(t);
}
END_TEST

/* Incompressible input: like the other codecs, kp_compress succeeds with
 * output a little larger than the input (kp_batch then sends the batch
 * uncompressed), within the codec's worst-case overhead. */
START_TEST(test_incompressible)
{
    enum kp_codec c = codecs[_i];
    size_t n = 256 * 1024;
    uint8_t *r = make_random(n);
    struct kp_compressor *cz = kp_compressor_create();
    struct kp_buf z;
    kp_buf_init(&z, 0);
    ck_assert_int_eq(kp_compress(cz, c, KP_LEVEL_DEFAULT, r, n, &z), KP_OK);
    ck_assert_uint_ge(z.len, n);
    ck_assert_uint_le(z.len, n + n / 64 + 8192); /* kp_batch's estimate */
    free(lib_decode(c, z.data, z.len, n));
    kp_buf_deinit(&z);
    kp_compressor_destroy(cz);
    free(r);
}
END_TEST

static Suite *compress_suite(void)
{
    Suite *s = suite_create("compress");
    TCase *tc = tcase_create("core");
    int nc = (int)KP_ARRAY_LEN(codecs);
    tcase_add_loop_test(tc, test_roundtrip_sizes, 0, nc);
    tcase_add_test(tc, test_levels);
    tcase_add_test(tc, test_reuse);
    tcase_add_loop_test(tc, test_decompress_bound, 0, nc);
    tcase_add_loop_test(tc, test_decompress_malformed, 0, nc);
    tcase_add_loop_test(tc, test_concatenated_frames, 0, nc);
    tcase_add_test(tc, test_availability);
    tcase_add_test(tc, test_snappy_raw);
    tcase_add_test(tc, test_snappy_framing);
    tcase_add_loop_test(tc, test_incompressible, 0, nc);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(compress_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
