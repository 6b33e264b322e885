/*
 * kp_compress.c - RecordBatch compression and (bounded) decompression.
 *
 * The compressor owns one context per codec, created once and reset per
 * batch, so the hot path allocates nothing but output room:
 *  - gzip: a deflate z_stream with the gzip wrapper (windowBits 15 + 16),
 *    deflateReset per batch, deflateParams when the level changes;
 *  - zstd: a ZSTD_CCtx driven by ZSTD_compress2 (one frame per batch);
 *  - lz4:  an LZ4F_cctx producing one LZ4 frame with independent 64 KiB
 *    blocks and no content checksum, as librdkafka writes (Kafka rejects
 *    linked blocks);
 *  - snappy: the snappy-java ("xerial") stream the Java producer writes
 *    (Kafka's SnappyCompression wraps SnappyOutputStream), libsnappy's C API
 *    for each block:
 *
 *      +------+-----+-----+-----+-----+-----+-----+------+
 *      | 0x82 | 'S' | 'N' | 'A' | 'P' | 'P' | 'Y' | 0x00 |  magic
 *      +------+-----+-----+-----+-----+-----+-----+------+
 *      | version = 1 (int32 BE)  | compatible = 1 (BE)   |
 *      +-------------------------+-----------------------+
 *      | block length (int32 BE) | raw snappy of <= 32 KiB of input | ...
 *
 *    Every Kafka decoder reads it: the broker and Java consumers through
 *    SnappyInputStream, librdkafka through rd_kafka_snappy_java_uncompress,
 *    sarama/kafka-python by the magic. librdkafka itself writes one raw
 *    snappy block (no framing); the decoder here reads both, as they do.
 *    libsnappy has no levels and no reusable context: it sizes its hash
 *    table per call.
 *
 * Decompression (tests, splitting a batch the broker found too large) is
 * streaming and stops with KP_ERROR as soon as the output would pass
 * max_out, so a hostile frame cannot inflate without bound.
 */
#include "kp_compress.h"

#include <limits.h>
#include <lz4frame.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include "kp_log.h"

/* Local names: kp_codec_names belongs to kp_conf. */
static const char *const kp_compress_codec_names[KP_CODEC__COUNT] = {
    "none", "gzip", "snappy", "lz4", "zstd"};

/* Output room added per step while decompressing. */
#define KP_DECOMP_CHUNK (64 * 1024)

/* snappy-java's stream header and its default block (SnappyOutputStream's
 * DEFAULT_BLOCK_SIZE, what the Java producer uses). */
static const uint8_t kp_xerial_magic[8] = {0x82, 'S', 'N', 'A',
                                           'P',  'P', 'Y', 0};
#define KP_XERIAL_HEADER_LEN 16
#define KP_XERIAL_VERSION 1
#define KP_XERIAL_BLOCK (32 * 1024)

struct kp_compressor {
    z_stream gz; /* owned; valid when gz_ready */
    bool gz_ready;
    int gz_level;    /* level gz was initialised with */
    ZSTD_CCtx *zstd; /* owned; created on first use */
    LZ4F_cctx *lz4;  /* owned; created on first use */
};

static const char *kp_codec_name(enum kp_codec codec)
{
    return (unsigned)codec < KP_CODEC__COUNT ? kp_compress_codec_names[codec]
                                             : "?";
}

/* Creates an empty compressor; codec contexts are made on first use. */
struct kp_compressor *kp_compressor_create(void)
{
    return kp_calloc(1, sizeof(struct kp_compressor));
}

/* Frees the compressor and every codec context it made. NULL is fine. */
void kp_compressor_destroy(struct kp_compressor *cz)
{
    if (!cz) {
        return;
    }
    if (cz->gz_ready) {
        deflateEnd(&cz->gz);
    }
    ZSTD_freeCCtx(cz->zstd);
    if (cz->lz4) {
        LZ4F_freeCompressionContext(cz->lz4);
    }
    free(cz);
}

/* Whether this build can produce `codec` (NONE counts as available). */
bool kp_codec_available(enum kp_codec codec)
{
    switch (codec) {
    case KP_CODEC_NONE:
    case KP_CODEC_GZIP:
    case KP_CODEC_LZ4:
    case KP_CODEC_ZSTD:
    case KP_CODEC_SNAPPY:
        return true;
    case KP_CODEC__COUNT:
    default:
        return false;
    }
}

static int kp_compress_gzip(struct kp_compressor *cz, int level,
                            const uint8_t *in, size_t n, struct kp_buf *out)
{
    if (level == KP_LEVEL_DEFAULT) {
        level = Z_DEFAULT_COMPRESSION;
    }
    level = KP_MAX(Z_DEFAULT_COMPRESSION, KP_MIN(level, Z_BEST_COMPRESSION));

    if (!cz->gz_ready) {
        memset(&cz->gz, 0, sizeof(cz->gz));
        /* 15 + 16: a gzip wrapper, what Kafka's GZIPInputStream reads. */
        int rc = deflateInit2(&cz->gz, level, Z_DEFLATED, 15 + 16, 8,
                              Z_DEFAULT_STRATEGY);
        if (rc != Z_OK) {
            kp_err("gzip: deflateInit2 level %d: %s", level, zError(rc));
            return KP_ERROR;
        }
        cz->gz_ready = true;
        cz->gz_level = level;
    } else {
        deflateReset(&cz->gz);
        if (cz->gz_level != level) {
            /* Topics with different levels share the stream: a fresh
             * stream takes new parameters without reallocating. */
            deflateParams(&cz->gz, level, Z_DEFAULT_STRATEGY);
            cz->gz_level = level;
        }
    }

    uLong bound = deflateBound(&cz->gz, (uLong)n);
    cz->gz.next_in = (Bytef *)(uintptr_t)in;
    cz->gz.avail_in = (uInt)n;
    cz->gz.next_out = kp_buf_reserve(out, bound);
    cz->gz.avail_out = (uInt)bound;
    int rc = deflate(&cz->gz, Z_FINISH);
    if (rc != Z_STREAM_END) {
        kp_err("gzip: deflate of %zu bytes: %s", n,
               cz->gz.msg ? cz->gz.msg : zError(rc));
        deflateEnd(&cz->gz);
        cz->gz_ready = false;
        return KP_ERROR;
    }
    out->len += bound - cz->gz.avail_out;
    return KP_OK;
}

static int kp_compress_zstd(struct kp_compressor *cz, int level,
                            const uint8_t *in, size_t n, struct kp_buf *out)
{
    if (!cz->zstd) {
        cz->zstd = ZSTD_createCCtx();
        if (!cz->zstd) {
            kp_err("zstd: cannot create a compression context");
            return KP_ERROR;
        }
    }
    if (level == KP_LEVEL_DEFAULT) {
        level = ZSTD_CLEVEL_DEFAULT;
    }
    /* zstd clamps out-of-range levels itself. */
    size_t rc =
        ZSTD_CCtx_setParameter(cz->zstd, ZSTD_c_compressionLevel, level);
    if (ZSTD_isError(rc)) {
        kp_err("zstd: level %d: %s", level, ZSTD_getErrorName(rc));
        return KP_ERROR;
    }
    size_t bound = ZSTD_compressBound(n);
    size_t got =
        ZSTD_compress2(cz->zstd, kp_buf_reserve(out, bound), bound, in, n);
    if (ZSTD_isError(got)) {
        kp_err("zstd: compress %zu bytes: %s", n, ZSTD_getErrorName(got));
        ZSTD_CCtx_reset(cz->zstd, ZSTD_reset_session_only);
        return KP_ERROR;
    }
    out->len += got;
    return KP_OK;
}

static int kp_compress_lz4(struct kp_compressor *cz, int level,
                           const uint8_t *in, size_t n, struct kp_buf *out)
{
    if (!cz->lz4) {
        LZ4F_errorCode_t e =
            LZ4F_createCompressionContext(&cz->lz4, LZ4F_VERSION);
        if (LZ4F_isError(e)) {
            kp_err("lz4: cannot create a compression context: %s",
                   LZ4F_getErrorName(e));
            cz->lz4 = NULL;
            return KP_ERROR;
        }
    }
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof(prefs));
    prefs.frameInfo.blockSizeID = LZ4F_max64KB;
    /* Kafka's KafkaLZ4BlockInputStream refuses dependent blocks. */
    prefs.frameInfo.blockMode = LZ4F_blockIndependent;
    prefs.frameInfo.contentChecksumFlag = LZ4F_noContentChecksum;
    prefs.compressionLevel = level == KP_LEVEL_DEFAULT ? 0 : level;

    size_t bound = LZ4F_HEADER_SIZE_MAX + LZ4F_compressBound(n, &prefs) +
                   LZ4F_compressBound(0, &prefs);
    uint8_t *dst = kp_buf_reserve(out, bound);
    size_t pos = 0;

    size_t rc = LZ4F_compressBegin(cz->lz4, dst, bound, &prefs);
    if (LZ4F_isError(rc)) {
        goto fail;
    }
    pos += rc;
    rc = LZ4F_compressUpdate(cz->lz4, dst + pos, bound - pos, in, n, NULL);
    if (LZ4F_isError(rc)) {
        goto fail;
    }
    pos += rc;
    rc = LZ4F_compressEnd(cz->lz4, dst + pos, bound - pos, NULL);
    if (LZ4F_isError(rc)) {
        goto fail;
    }
    pos += rc;
    out->len += pos;
    return KP_OK;

fail:
    kp_err("lz4: compress %zu bytes: %s", n, LZ4F_getErrorName(rc));
    /* A failed frame leaves the context mid-frame: start afresh. */
    LZ4F_freeCompressionContext(cz->lz4);
    cz->lz4 = NULL;
    return KP_ERROR;
}

/*
 * The snappy-java stream: header, then each KP_XERIAL_BLOCK of input as one
 * length-prefixed raw snappy block. Room is reserved a block at a time, so
 * a batch buffer sized for the input rarely has to grow. An empty input
 * still gets one (empty) block: librdkafka takes a header-only stream for
 * raw snappy and fails it.
 */
static int kp_compress_snappy(const uint8_t *in, size_t n, struct kp_buf *out)
{
    size_t start = out->len;
    uint8_t *hdr = kp_buf_reserve(out, KP_XERIAL_HEADER_LEN);
    memcpy(hdr, kp_xerial_magic, sizeof(kp_xerial_magic));
    kp_wr_u32(hdr + 8, KP_XERIAL_VERSION);  /* version */
    kp_wr_u32(hdr + 12, KP_XERIAL_VERSION); /* minimum compatible */
    out->len += KP_XERIAL_HEADER_LEN;

    size_t off = 0;
    do {
        size_t blk = KP_MIN(n - off, (size_t)KP_XERIAL_BLOCK);
        size_t zlen = snappy_max_compressed_length(blk);
        uint8_t *dst = kp_buf_reserve(out, 4 + zlen);
        snappy_status st = snappy_compress((const char *)in + off, blk,
                                           (char *)dst + 4, &zlen);
        if (st != SNAPPY_OK) {
            kp_err("snappy: compress %zu bytes: status %d", blk, (int)st);
            out->len = start;
            return KP_ERROR;
        }
        kp_wr_u32(dst, (uint32_t)zlen); /* block length */
        out->len += 4 + zlen;
        off += blk;
    } while (off < n);
    return KP_OK;
}

/*
 * Appends the compressed form of in[0..n) to *out, using the compressor's
 * reusable context for `codec`. level KP_LEVEL_DEFAULT picks the codec's
 * default (gzip 6, zstd 3, lz4 0 = fast); snappy has no levels and ignores
 * it. On KP_ERROR (logged) out->len is
 * unchanged.
 */
int kp_compress(struct kp_compressor *cz, enum kp_codec codec, int level,
                const uint8_t *in, size_t n, struct kp_buf *out)
{
    if (n > INT32_MAX) {
        /* A RecordBatch length is an int32: never reached in practice. */
        kp_err("%s: %zu bytes is too large to compress", kp_codec_name(codec),
               n);
        return KP_ERROR;
    }
    switch (codec) {
    case KP_CODEC_NONE:
        kp_buf_put_bytes(out, in, n);
        return KP_OK;
    case KP_CODEC_GZIP:
        return kp_compress_gzip(cz, level, in, n, out);
    case KP_CODEC_ZSTD:
        return kp_compress_zstd(cz, level, in, n, out);
    case KP_CODEC_LZ4:
        return kp_compress_lz4(cz, level, in, n, out);
    case KP_CODEC_SNAPPY:
        return kp_compress_snappy(in, n, out); /* no levels */
    case KP_CODEC__COUNT:
    default:
        break;
    }
    kp_err("compression codec %s is not available in this build",
           kp_codec_name(codec));
    return KP_ERROR;
}

/* Room for the next decompression step: at most max_out + 1 in total, so
 * that one byte too many is detectable. Returns 0 when the bound is hit. */
static size_t kp_decomp_room(struct kp_buf *out, size_t start, size_t max_out,
                             uint8_t **dst)
{
    size_t produced = out->len - start;
    if (produced > max_out) {
        return 0;
    }
    size_t room = KP_MIN((size_t)KP_DECOMP_CHUNK, max_out + 1 - produced);
    *dst = kp_buf_reserve(out, room);
    return room;
}

static int kp_decompress_gzip(const uint8_t *in, size_t n, size_t max_out,
                              struct kp_buf *out, size_t start)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    /* 15 + 32: accept a gzip or zlib header. */
    if (inflateInit2(&zs, 15 + 32) != Z_OK) {
        return KP_ERROR;
    }
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)n;
    int ret = KP_ERROR;
    for (;;) {
        uint8_t *dst;
        size_t room = kp_decomp_room(out, start, max_out, &dst);
        if (!room) {
            break;
        }
        zs.next_out = dst;
        zs.avail_out = (uInt)room;
        int rc = inflate(&zs, Z_NO_FLUSH);
        out->len += room - zs.avail_out;
        if (rc == Z_STREAM_END) {
            if (zs.avail_in == 0) {
                ret = out->len - start <= max_out ? KP_OK : KP_ERROR;
                break;
            }
            /* Another gzip member follows (GZIPInputStream reads them). */
            if (inflateReset(&zs) != Z_OK) {
                break;
            }
            continue;
        }
        if (rc != Z_OK) {
            break; /* corrupt, or truncated (Z_BUF_ERROR: no progress) */
        }
    }
    inflateEnd(&zs);
    return ret;
}

static int kp_decompress_lz4(const uint8_t *in, size_t n, size_t max_out,
                             struct kp_buf *out, size_t start)
{
    LZ4F_dctx *dctx;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION))) {
        return KP_ERROR;
    }
    int ret = KP_ERROR;
    for (;;) {
        uint8_t *dst;
        size_t room = kp_decomp_room(out, start, max_out, &dst);
        if (!room) {
            break;
        }
        size_t src_len = n;
        size_t dst_len = room;
        size_t hint = LZ4F_decompress(dctx, dst, &dst_len, in, &src_len, NULL);
        if (LZ4F_isError(hint)) {
            break;
        }
        out->len += dst_len;
        in += src_len;
        n -= src_len;
        /* hint 0: a frame is complete and flushed; frames may follow. */
        if (hint == 0 && n == 0) {
            ret = out->len - start <= max_out ? KP_OK : KP_ERROR;
            break;
        }
        if (src_len == 0 && dst_len == 0) {
            break; /* truncated: no progress possible */
        }
    }
    LZ4F_freeDecompressionContext(dctx);
    return ret;
}

static int kp_decompress_zstd(const uint8_t *in, size_t n, size_t max_out,
                              struct kp_buf *out, size_t start)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (!dctx) {
        return KP_ERROR;
    }
    ZSTD_inBuffer ib = {in, n, 0};
    int ret = KP_ERROR;
    for (;;) {
        uint8_t *dst;
        size_t room = kp_decomp_room(out, start, max_out, &dst);
        if (!room) {
            break;
        }
        ZSTD_outBuffer ob = {dst, room, 0};
        size_t in_before = ib.pos;
        size_t rc = ZSTD_decompressStream(dctx, &ob, &ib);
        if (ZSTD_isError(rc)) {
            break;
        }
        out->len += ob.pos;
        if (rc == 0 && ib.pos == ib.size) {
            /* 0: the last frame is decoded and flushed (frames may be
             * concatenated; a new one would give a non-zero hint). */
            ret = out->len - start <= max_out ? KP_OK : KP_ERROR;
            break;
        }
        if (ib.pos == ib.size && ob.pos < ob.size) {
            break; /* all input read, room to spare, frame unfinished */
        }
        if (ob.pos == 0 && ib.pos == in_before) {
            break;
        }
    }
    ZSTD_freeDCtx(dctx);
    return ret;
}

/* One raw snappy block, appended if its declared length fits the bound. */
static int kp_unsnappy_block(const uint8_t *in, size_t n, size_t max_out,
                             struct kp_buf *out, size_t start)
{
    size_t len;
    if (snappy_uncompressed_length((const char *)in, n, &len) != SNAPPY_OK ||
        len > max_out - (out->len - start)) {
        return KP_ERROR;
    }
    size_t got = len;
    uint8_t *dst = kp_buf_reserve(out, len);
    if (snappy_uncompress((const char *)in, n, (char *)dst, &got) !=
            SNAPPY_OK ||
        got != len) {
        return KP_ERROR;
    }
    out->len += len;
    return KP_OK;
}

/*
 * Reads what Kafka's decoders read: a snappy-java stream (one or more,
 * concatenated, as SnappyInputStream accepts: a block length equal to the
 * magic's first four bytes starts another header), else one raw snappy
 * block. A stream with a header and no block is refused: nothing kproxyd
 * or the Java producer writes, and librdkafka would refuse it too.
 */
static int kp_decompress_snappy(const uint8_t *in, size_t n, size_t max_out,
                                struct kp_buf *out, size_t start)
{
    if (n < KP_XERIAL_HEADER_LEN ||
        memcmp(in, kp_xerial_magic, sizeof(kp_xerial_magic)) != 0) {
        return kp_unsnappy_block(in, n, max_out, out, start);
    }
    struct kp_rd r;
    kp_rd_init(&r, in, n);
    bool header = true;
    size_t blocks = 0;
    while (kp_rd_left(&r) > 0) {
        if (header) {
            kp_rd_skip(&r, sizeof(kp_xerial_magic));
            int32_t version = kp_rd_i32(&r); /* version */
            (void)kp_rd_i32(&r);             /* minimum compatible */
            if (r.err || version < KP_XERIAL_VERSION) {
                return KP_ERROR;
            }
            header = false;
            continue;
        }
        if (kp_rd_left(&r) >= KP_XERIAL_HEADER_LEN &&
            memcmp(r.p, kp_xerial_magic, sizeof(kp_xerial_magic)) == 0) {
            header = true; /* a concatenated stream */
            continue;
        }
        uint32_t blen = kp_rd_u32(&r); /* block length */
        const uint8_t *blk = kp_rd_take(&r, blen);
        if (!blk || kp_unsnappy_block(blk, blen, max_out, out, start) !=
                        KP_OK) {
            return KP_ERROR;
        }
        blocks++;
    }
    return blocks > 0 && !header ? KP_OK : KP_ERROR;
}

/*
 * Appends the decompressed form of in[0..n) to *out. Returns KP_ERROR when
 * the input is malformed or truncated, or its output would exceed max_out
 * bytes; out->len is then restored. Not logged: callers decide whether a
 * bad input is worth a line.
 */
int kp_decompress(enum kp_codec codec, const uint8_t *in, size_t n,
                  size_t max_out, struct kp_buf *out)
{
    size_t start = out->len;
    int rc;

    if (n > UINT_MAX) {
        return KP_ERROR;
    }
    switch (codec) {
    case KP_CODEC_NONE:
        if (n > max_out) {
            return KP_ERROR;
        }
        kp_buf_put_bytes(out, in, n);
        return KP_OK;
    case KP_CODEC_GZIP:
        rc = kp_decompress_gzip(in, n, max_out, out, start);
        break;
    case KP_CODEC_LZ4:
        rc = kp_decompress_lz4(in, n, max_out, out, start);
        break;
    case KP_CODEC_ZSTD:
        rc = kp_decompress_zstd(in, n, max_out, out, start);
        break;
    case KP_CODEC_SNAPPY:
        rc = kp_decompress_snappy(in, n, max_out, out, start);
        break;
    case KP_CODEC__COUNT:
    default:
        rc = KP_ERROR;
        break;
    }
    if (rc != KP_OK) {
        out->len = start;
    }
    return rc;
}
