/*
 * kp_record.h - Kafka Record (v2) and RecordBatch (magic 2) encoding and
 * decoding.
 *
 * RecordBatch layout (offsets in bytes):
 *
 *   0  baseOffset           int64   (0 from a producer)
 *   8  batchLength          int32   bytes after this field
 *  12  partitionLeaderEpoch int32   (-1)
 *  16  magic                int8    (2)
 *  17  crc                  uint32  CRC-32C of bytes 21..end
 *  21  attributes           int16   bits 0-2 codec, 3 timestamp type
 *  23  lastOffsetDelta      int32
 *  27  baseTimestamp        int64
 *  35  maxTimestamp         int64
 *  43  producerId           int64
 *  51  producerEpoch        int16
 *  53  baseSequence         int32
 *  57  records count        int32
 *  61  records...           (compressed as a whole when attributes say so)
 *
 * Record: length varint, attributes int8, timestampDelta varlong,
 * offsetDelta varint, keyLength varint (-1 null), key, valueLen varint,
 * value, headers count varint, then per header: keyLength varint, key,
 * valueLength varint (-1 null), value.
 */
#ifndef KP_RECORD_H
#define KP_RECORD_H

#include "kp_buf.h"
#include "kp_conf.h"
#include "kp_line.h"

struct kp_compressor;

#define KP_BATCH_HEADER_LEN 61
#define KP_BATCH_OFF_LENGTH 8
#define KP_BATCH_OFF_CRC 17
#define KP_BATCH_OFF_ATTRIBUTES 21
#define KP_BATCH_OFF_PRODUCER_ID 43
#define KP_BATCH_OFF_PRODUCER_EPOCH 51
#define KP_BATCH_OFF_BASE_SEQUENCE 53

struct kp_batch_hdr {
    int32_t count;          /* records */
    int64_t base_ts;        /* baseTimestamp */
    int64_t max_ts;         /* maxTimestamp */
    int64_t producer_id;    /* -1 without idempotence */
    int16_t producer_epoch; /* -1 without idempotence */
    int32_t base_seq;       /* -1 without idempotence */
    enum kp_codec codec;    /* attributes bits 0-2 */
};

/*
 * Appends one Record to `records`. extra headers (e.g. peer credentials)
 * follow the message's own. Returns the bytes appended.
 */
size_t kp_record_append(struct kp_buf *records, int32_t offset_delta,
                        int64_t ts_delta, const struct kp_msg *m,
                        const struct kp_header *extra, size_t extra_cnt);

/*
 * Writes a whole RecordBatch to `wire` (appended): the header of *h and the
 * records section, compressed with h->codec at `level` when it is not NONE.
 * When compression does not shrink the records, they are sent uncompressed
 * and *codec_used says NONE. Computes the CRC. Returns KP_OK or KP_ERROR.
 */
int kp_recordbatch_build(struct kp_buf *wire, const struct kp_batch_hdr *h,
                         const uint8_t *records, size_t records_len,
                         struct kp_compressor *cz, int level,
                         enum kp_codec *codec_used);

/* Writes the header of *h in place at p[0..61), in front of the records
 * (or compressed records, per h->codec) at p[61..len), with the CRC. */
void kp_recordbatch_frame(uint8_t *p, size_t len, const struct kp_batch_hdr *h);

/* Sets producerId, producerEpoch, baseSequence of a built batch and
 * recomputes its CRC, in place. */
void kp_recordbatch_stamp(uint8_t *wire, size_t len, int64_t producer_id,
                          int16_t producer_epoch, int32_t base_seq);

/*
 * Parses a RecordBatch header and checks length and CRC. *records points at
 * the (possibly compressed) records section. Returns KP_OK or KP_ERROR.
 */
int kp_recordbatch_parse(const uint8_t *wire, size_t len,
                         struct kp_batch_hdr *h, const uint8_t **records,
                         size_t *records_len);

/* One decoded record; pointers borrow the input. */
struct kp_record_view {
    int64_t ts_delta;
    int32_t offset_delta;
    const uint8_t *key; /* NULL = null */
    size_t key_len;
    const uint8_t *value; /* NULL = null */
    size_t value_len;
    int32_t header_cnt;
    struct kp_rd headers; /* positioned at the first header */
};

/* Reads the next record from an uncompressed records section.
 * Returns KP_OK, or KP_ERROR on malformed input (never reads out of bounds). */
int kp_record_next(struct kp_rd *r, struct kp_record_view *v);
/* Reads the next header of v; KP_OK or KP_ERROR. */
int kp_record_header_next(struct kp_record_view *v, struct kp_header *h);

#endif
