/*
 * kp_record.c - Kafka Record v2 and RecordBatch (magic 2): encoding on the
 * produce hot path, decoding for tests, batch splitting and fuzzing.
 *
 * A partition's open batch is a records section (struct kp_buf) to which
 * kp_record_append writes each message straight from the client's bytes:
 * one exact-size reservation per record, varints written in place, nothing
 * allocated per record. Sealing wraps the section in the 61-byte batch
 * header (layout in kp_record.h), compressing it as a whole when that
 * pays, and the CRC-32C is computed last, over the bytes that go on the
 * wire:
 *
 *   +------------------ 61-byte header ------------------+------------+
 *   | baseOffset batchLength epoch magic | crc | attrs ... | records... |
 *   +------------------------------------+-----+----------+------------+
 *                                              |<-- crc covers this -->|
 *
 * Idempotence stamps producerId/epoch/baseSequence into a sealed batch
 * just before its first send (kp_recordbatch_stamp), which is why those
 * fields sit at fixed offsets and the CRC is recomputed in place.
 */
#include "kp_record.h"

#include "kp_compress.h"
#include "kp_crc32c.h"

/* attributes: bits 0-2 codec; bit 3 timestamp type (0 = CreateTime). */
#define KP_ATTR_CODEC_MASK 0x07

/* Size of the record body (everything after its length varint). */
static size_t kp_record_body_size(int32_t offset_delta, int64_t ts_delta,
                                  const struct kp_msg *m,
                                  const struct kp_header *extra,
                                  size_t extra_cnt)
{
    size_t n = 1; /* attributes */
    n += kp_varint_size(ts_delta);
    n += kp_varint_size(offset_delta);
    if (m->key) {
        n += kp_varint_size((int64_t)m->key_len) + m->key_len;
    } else {
        n += 1;
    }
    if (m->value) {
        n += kp_varint_size((int64_t)m->value_len) + m->value_len;
    } else {
        n += 1;
    }
    n += kp_varint_size((int64_t)(m->header_cnt + extra_cnt));
    for (size_t i = 0; i < m->header_cnt + extra_cnt; i++) {
        const struct kp_header *hd =
            i < m->header_cnt ? &m->headers[i] : &extra[i - m->header_cnt];
        n += kp_varint_size((int64_t)hd->name_len) + hd->name_len;
        if (hd->value) {
            n += kp_varint_size((int64_t)hd->value_len) + hd->value_len;
        } else {
            n += 1;
        }
    }
    return n;
}

/* Writes a varint length and the bytes, or -1 for NULL. */
static uint8_t *kp_record_put_bytes(uint8_t *p, const uint8_t *s, size_t n)
{
    if (!s) {
        return p + kp_varint_enc(p, -1);
    }
    p += kp_varint_enc(p, (int64_t)n);
    if (n) {
        memcpy(p, s, n);
    }
    return p + n;
}

/*
 * Appends one Record to `records`: the message's key, value and headers,
 * then the `extra` headers (e.g. peer credentials). Borrows everything;
 * copies the bytes once into the buffer. Returns the bytes appended.
 */
size_t kp_record_append(struct kp_buf *records, int32_t offset_delta,
                        int64_t ts_delta, const struct kp_msg *m,
                        const struct kp_header *extra, size_t extra_cnt)
{
    size_t body =
        kp_record_body_size(offset_delta, ts_delta, m, extra, extra_cnt);
    size_t total = kp_varint_size((int64_t)body) + body;
    uint8_t *start = kp_buf_reserve(records, total);
    uint8_t *p = start;

    p += kp_varint_enc(p, (int64_t)body);           /* length */
    *p++ = 0;                                       /* attributes (unused) */
    p += kp_varint_enc(p, ts_delta);                /* timestampDelta */
    p += kp_varint_enc(p, offset_delta);            /* offsetDelta */
    p = kp_record_put_bytes(p, m->key, m->key_len); /* keyLength, key */
    p = kp_record_put_bytes(p, m->value, m->value_len); /* valueLen, value */
    p += kp_varint_enc(p, (int64_t)(m->header_cnt + extra_cnt)); /* Headers */
    for (size_t i = 0; i < m->header_cnt + extra_cnt; i++) {
        const struct kp_header *hd =
            i < m->header_cnt ? &m->headers[i] : &extra[i - m->header_cnt];
        /* headerKeyLength, headerKey (never null) */
        p = kp_record_put_bytes(p, hd->name ? hd->name : (const uint8_t *)"",
                                hd->name_len);
        /* headerValueLength, value */
        p = kp_record_put_bytes(p, hd->value, hd->value_len);
    }
    kp_assert((size_t)(p - start) == total);
    records->len += total;
    return total;
}

static void kp_recordbatch_crc(uint8_t *wire, size_t len)
{
    uint32_t crc = kp_crc32c(0, wire + KP_BATCH_OFF_ATTRIBUTES,
                             len - KP_BATCH_OFF_ATTRIBUTES);
    kp_wr_u32(wire + KP_BATCH_OFF_CRC, crc); /* CRC */
}

/*
 * Writes the 61-byte RecordBatch header of *h at batch[0..61) in front of
 * the records section already at batch[61..len) (compressed as h->codec
 * says) and computes the CRC. Sealing an uncompressed batch is this alone:
 * the records were encoded right behind the reserved header.
 */
void kp_recordbatch_frame(uint8_t *p, size_t len, const struct kp_batch_hdr *h)
{
    kp_assert(len >= KP_BATCH_HEADER_LEN);
    kp_wr_u64(p + 0, 0);                            /* baseOffset */
    kp_wr_u32(p + KP_BATCH_OFF_LENGTH, (uint32_t)(len - 12)); /* batchLength */
    kp_wr_u32(p + 12, (uint32_t)-1); /* partitionLeaderEpoch */
    p[16] = 2;                       /* magic */
    kp_wr_u16(p + KP_BATCH_OFF_ATTRIBUTES,
              (uint16_t)(h->codec & KP_ATTR_CODEC_MASK)); /* attributes */
    kp_wr_u32(p + 23, (uint32_t)(h->count - 1)); /* lastOffsetDelta */
    kp_wr_u64(p + 27, (uint64_t)h->base_ts);     /* baseTimestamp */
    kp_wr_u64(p + 35, (uint64_t)h->max_ts);      /* maxTimestamp */
    kp_wr_u64(p + KP_BATCH_OFF_PRODUCER_ID,
              (uint64_t)h->producer_id); /* producerId */
    kp_wr_u16(p + KP_BATCH_OFF_PRODUCER_EPOCH,
              (uint16_t)h->producer_epoch); /* producerEpoch */
    kp_wr_u32(p + KP_BATCH_OFF_BASE_SEQUENCE,
              (uint32_t)h->base_seq);      /* baseSequence */
    kp_wr_u32(p + 57, (uint32_t)h->count); /* records count */
    kp_recordbatch_crc(p, len);            /* crc, over attributes..end */
}

/*
 * Appends a whole RecordBatch to `wire`: the header of *h and the records,
 * compressed with h->codec at `level` unless that does not shrink them
 * (then *codec_used says NONE). Returns KP_OK, or KP_ERROR with wire->len
 * unchanged when the codec fails.
 */
int kp_recordbatch_build(struct kp_buf *wire, const struct kp_batch_hdr *h,
                         const uint8_t *records, size_t records_len,
                         struct kp_compressor *cz, int level,
                         enum kp_codec *codec_used)
{
    size_t start = wire->len;
    struct kp_batch_hdr hh = *h;

    kp_buf_reserve(wire, KP_BATCH_HEADER_LEN + records_len);
    wire->len += KP_BATCH_HEADER_LEN;
    if (hh.codec != KP_CODEC_NONE) {
        if (kp_compress(cz, hh.codec, level, records, records_len, wire) !=
            KP_OK) {
            wire->len = start;
            return KP_ERROR;
        }
        if (wire->len - start - KP_BATCH_HEADER_LEN >= records_len) {
            /* Incompressible (tiny or random) records: send them as
             * they are rather than pay the broker's decompression. */
            wire->len = start + KP_BATCH_HEADER_LEN;
            hh.codec = KP_CODEC_NONE;
        }
    }
    if (hh.codec == KP_CODEC_NONE) {
        kp_buf_put_bytes(wire, records, records_len); /* records */
    }
    kp_recordbatch_frame(wire->data + start, wire->len - start, &hh);
    if (codec_used) {
        *codec_used = hh.codec;
    }
    return KP_OK;
}

/*
 * Sets producerId, producerEpoch and baseSequence of the built batch
 * wire[0..len) and recomputes its CRC, in place.
 */
void kp_recordbatch_stamp(uint8_t *wire, size_t len, int64_t producer_id,
                          int16_t producer_epoch, int32_t base_seq)
{
    kp_assert(len >= KP_BATCH_HEADER_LEN);
    kp_wr_u64(wire + KP_BATCH_OFF_PRODUCER_ID,
              (uint64_t)producer_id); /* producerId */
    kp_wr_u16(wire + KP_BATCH_OFF_PRODUCER_EPOCH,
              (uint16_t)producer_epoch); /* producerEpoch */
    kp_wr_u32(wire + KP_BATCH_OFF_BASE_SEQUENCE,
              (uint32_t)base_seq); /* baseSequence */
    kp_recordbatch_crc(wire, len);
}

/*
 * Parses the RecordBatch wire[0..len), which must hold exactly one batch:
 * magic 2, batchLength + 12 == len, a known codec, a non-negative count and
 * a matching CRC-32C. Fills *h and points *records at the (possibly
 * compressed, per h->codec) records section inside wire. Returns KP_OK or
 * KP_ERROR; never reads outside wire[0..len).
 */
int kp_recordbatch_parse(const uint8_t *wire, size_t len,
                         struct kp_batch_hdr *h, const uint8_t **records,
                         size_t *records_len)
{
    struct kp_rd r;

    if (len < KP_BATCH_HEADER_LEN) {
        return KP_ERROR;
    }
    kp_rd_init(&r, wire, len);
    kp_rd_i64(&r);                     /* baseOffset */
    int32_t batch_len = kp_rd_i32(&r); /* batchLength */
    kp_rd_i32(&r);                     /* partitionLeaderEpoch */
    int8_t magic = kp_rd_i8(&r);       /* magic */
    uint32_t crc = kp_rd_u32(&r);      /* crc */
    int16_t attrs = kp_rd_i16(&r);     /* attributes */
    kp_rd_i32(&r);                     /* lastOffsetDelta */
    h->base_ts = kp_rd_i64(&r);        /* baseTimestamp */
    h->max_ts = kp_rd_i64(&r);         /* maxTimestamp */
    h->producer_id = kp_rd_i64(&r);    /* producerId */
    h->producer_epoch = kp_rd_i16(&r); /* producerEpoch */
    h->base_seq = kp_rd_i32(&r);       /* baseSequence */
    h->count = kp_rd_i32(&r);          /* records count */
    if (r.err || magic != 2 || batch_len < 0 ||
        (uint64_t)batch_len + 12 != len || h->count < 0) {
        return KP_ERROR;
    }
    if ((attrs & KP_ATTR_CODEC_MASK) >= KP_CODEC__COUNT) {
        return KP_ERROR;
    }
    h->codec = (enum kp_codec)(attrs & KP_ATTR_CODEC_MASK);
    if (kp_crc32c(0, wire + KP_BATCH_OFF_ATTRIBUTES,
                  len - KP_BATCH_OFF_ATTRIBUTES) != crc) {
        return KP_ERROR;
    }
    *records = wire + KP_BATCH_HEADER_LEN;
    *records_len = len - KP_BATCH_HEADER_LEN;
    return KP_OK;
}

/* A varint that must be a length: -1 (null) when allow_null, else 0..left.
 * Returns -2 on malformed input (and sets r->err). */
static int64_t kp_rd_len(struct kp_rd *r, bool allow_null)
{
    int64_t n = kp_rd_varint(r);
    if (r->err) {
        return -2;
    }
    if ((n == -1 && allow_null) || (n >= 0 && (uint64_t)n <= kp_rd_left(r))) {
        return n;
    }
    kp_rd_fail(r);
    return -2;
}

/* Reads a nullable length-prefixed field into (*s, *n); false when bad. */
static bool kp_rd_field(struct kp_rd *r, bool allow_null, const uint8_t **s,
                        size_t *n)
{
    int64_t len = kp_rd_len(r, allow_null);
    if (len == -2) {
        return false;
    }
    *s = NULL;
    *n = 0;
    if (len >= 0) {
        *s = kp_rd_take(r, (size_t)len);
        *n = (size_t)len;
    }
    return !r->err;
}

/*
 * Reads the next record from the uncompressed records section behind *r
 * into *v (which borrows r's input) and moves r past it. Rejects negative
 * lengths other than -1 where null is allowed, lengths beyond the record,
 * and a record whose declared length differs from what its fields take.
 * The headers are validated here; kp_record_header_next then walks them.
 * Returns KP_OK, or KP_ERROR with r->err set.
 */
int kp_record_next(struct kp_rd *r, struct kp_record_view *v)
{
    int64_t len = kp_rd_len(r, false); /* length */
    if (len < 0) {
        return KP_ERROR;
    }
    struct kp_rd rec;
    kp_rd_init(&rec, kp_rd_take(r, (size_t)len), (size_t)len);

    kp_rd_i8(&rec);                   /* attributes */
    v->ts_delta = kp_rd_varint(&rec); /* timestampDelta */
    int64_t od = kp_rd_varint(&rec);  /* offsetDelta */
    if (od < INT32_MIN || od > INT32_MAX) {
        kp_rd_fail(&rec);
    }
    v->offset_delta = (int32_t)od;
    if (!kp_rd_field(&rec, true, &v->key, &v->key_len) ||     /* key */
        !kp_rd_field(&rec, true, &v->value, &v->value_len)) { /* value */
        goto bad;
    }
    int64_t cnt = kp_rd_varint(&rec); /* Headers count */
    /* Each header takes at least two bytes (two length varints). */
    if (rec.err || cnt < 0 || (uint64_t)cnt > kp_rd_left(&rec) / 2) {
        goto bad;
    }
    v->header_cnt = (int32_t)cnt;
    v->headers = rec;

    struct kp_header hd;
    for (int64_t i = 0; i < cnt; i++) {
        if (kp_record_header_next(v, &hd) != KP_OK) {
            goto bad;
        }
    }
    if (kp_rd_left(&v->headers) != 0) {
        goto bad; /* the length says more than the fields hold */
    }
    v->headers = rec;
    return KP_OK;

bad:
    kp_rd_fail(r);
    return KP_ERROR;
}

/*
 * Reads the next header of the record *v into *h (borrowing the input;
 * h->value NULL for a null value). Returns KP_OK, or KP_ERROR when the
 * header is malformed or v has no more headers.
 */
int kp_record_header_next(struct kp_record_view *v, struct kp_header *h)
{
    struct kp_rd *r = &v->headers;
    /* headerKeyLength, headerKey: Kafka refuses a null header key. */
    if (!kp_rd_field(r, false, &h->name, &h->name_len)) {
        return KP_ERROR;
    }
    /* headerValueLength, value */
    if (!kp_rd_field(r, true, &h->value, &h->value_len)) {
        return KP_ERROR;
    }
    return KP_OK;
}
