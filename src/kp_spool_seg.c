/*
 * kp_spool_seg.c - the disk spool's file formats and their recovery
 * readers. Integers are big-endian, as everywhere else in kproxyd.
 *
 * Segment file NNNNNNNNNNNNNNNNNNNN.seg (the number is its first seq, 20
 * digits, so names sort as numbers and grow monotonically), and its
 * journal NNNNNNNNNNNNNNNNNNNN.ack, both starting with:
 *
 *    0  magic      8   "KPSPSEG1" (segment) / "KPSPACK1" (journal)
 *    8  first_seq  u64 seq of the segment's first record (= the name)
 *   16  seg_id     u64 random per segment file: a journal applies only to
 *                      the segment whose id it carries
 *   24  flags      u32 bit 0 (segments only): reused, below; others 0
 *   28  crc        u32 CRC-32C of bytes 0..28
 *
 * Then, in a segment, one frame per record, back to back:
 *
 *    0  crc        u32 CRC-32C of bytes 4 .. 16+len (length, seq, body)
 *    4  len        u32 body bytes
 *    8  seq        u64 first_seq + index in the segment, no gaps
 *   16  body:
 *       flags      u8      bit 0 key present, bit 1 value present; others 0
 *       timestamp  int64   ms since the epoch (the record's CreateTime)
 *       partition  varint  zig-zag; -1 = the partitioner decides
 *       tag        uvarint the caller's
 *       topic      uvarint length (1..249), bytes
 *       key        uvarint length, bytes          (when bit 0)
 *       value      uvarint length, bytes          (when bit 1)
 *       headers    uvarint count; per header: uvarint name length, name,
 *                  varint value length (zig-zag, -1 = null), value
 *
 * Why a CRC per record rather than per block: appends are per message and
 * may be written one at a time (write_buffer 1), a torn write can end
 * anywhere, and SPEC asks that damage be found per record. 16 bytes of
 * frame per record (about 12% of a 100-byte message) buy an exact cut: every
 * record before the damage is kept. The explicit seq costs 8 of them and
 * makes every frame self-checking: a stale or misplaced frame whose CRC
 * holds still fails the seq test.
 *
 * A reused segment file is an acknowledged segment's file given a new
 * header and name instead of being unlinked (kp_spool.c says why): the
 * earlier segment's bytes are still there after the new records. Every
 * write to it ends with an end mark, 16 zero bytes where the next frame
 * header goes, and the next write starts over that mark. A scan stops at
 * the mark without calling it damage; anything else that fails the checks
 * (a write cut short, a flipped byte) is damage, as in any segment.
 *
 * The journal holds, after its header, 16-byte entries:
 *
 *    0  crc        u32 CRC-32C of seg_id (u64) and bytes 4..16, so an entry
 *                      of another segment's journal never applies
 *    4  word       u32 records word*64 .. word*64+63 of the segment
 *    8  bits       u64 bit i set: record word*64+i is acknowledged
 *
 * An entry carries the whole word as it was when written; entries only
 * ever add bits, so applying them (OR) in any order, or twice, or losing
 * some, can only leave records unacknowledged - replayed again, never lost.
 */
#include "kp_spool_seg.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_crc32c.h"

#define KP_SPOOL_SCAN_CHUNK (1u << 20)
/* flags, timestamp, partition, tag, topic length and one byte, headers */
#define KP_SPOOL_BODY_MIN 14
#define KP_SPOOL_FLAG_KEY 0x01
#define KP_SPOOL_FLAG_VALUE 0x02

static const char kp_spool_seg_magic[] = "KPSPSEG1";
static const char kp_spool_ack_magic[] = "KPSPACK1";

const char *const kp_spool_bad_names[KP_SPOOL_BAD__COUNT] = {
    [KP_SPOOL_BAD_NONE] = "none",
    [KP_SPOOL_BAD_HEADER] = "bad file header",
    [KP_SPOOL_BAD_SHORT] = "torn record at the end",
    [KP_SPOOL_BAD_LENGTH] = "bad record length",
    [KP_SPOOL_BAD_CRC] = "CRC mismatch",
    [KP_SPOOL_BAD_SEQ] = "unexpected sequence number",
    [KP_SPOOL_BAD_BODY] = "malformed record body",
};

static uint64_t kp_spool_rd_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint32_t kp_spool_rd_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

void kp_spool_seg_hdr_encode(uint8_t *out, bool journal, uint64_t first_seq,
                             uint64_t seg_id, uint32_t flags)
{
    memcpy(out, journal ? kp_spool_ack_magic : kp_spool_seg_magic, 8);
    kp_wr_u64(out + 8, first_seq);              /* first_seq */
    kp_wr_u64(out + 16, seg_id);                /* seg_id */
    kp_wr_u32(out + 24, flags);                 /* flags */
    kp_wr_u32(out + 28, kp_crc32c(0, out, 28)); /* crc */
}

int kp_spool_seg_hdr_decode(const uint8_t *p, size_t n, bool journal,
                            uint64_t *first_seq, uint64_t *seg_id,
                            uint32_t *flags)
{
    uint32_t known = journal ? 0 : KP_SPOOL_HDR_REUSED;

    if (n < KP_SPOOL_HDR_LEN ||
        memcmp(p, journal ? kp_spool_ack_magic : kp_spool_seg_magic, 8) ||
        kp_spool_rd_u32(p + 28) != kp_crc32c(0, p, 28) ||
        (kp_spool_rd_u32(p + 24) & ~known) != 0) {
        return KP_ERROR;
    }
    *first_seq = kp_spool_rd_u64(p + 8);
    *seg_id = kp_spool_rd_u64(p + 16);
    if (flags) {
        *flags = kp_spool_rd_u32(p + 24);
    }
    return KP_OK;
}

/* Whether p (at least KP_SPOOL_END_MARK bytes) is the end mark. */
static bool kp_spool_seg_is_end_mark(const uint8_t *p)
{
    for (size_t i = 0; i < KP_SPOOL_END_MARK; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

static size_t kp_spool_seg_bytes_size(const uint8_t *p, size_t n)
{
    return p ? kp_uvarint_size(n) + n : 0;
}

static size_t kp_spool_seg_hdrs_size(const struct kp_header *h, size_t n)
{
    size_t sz = 0;
    for (size_t i = 0; i < n; i++) {
        sz += kp_uvarint_size(h[i].name_len) + h[i].name_len;
        sz += h[i].value
                  ? kp_varint_size((int64_t)h[i].value_len) + h[i].value_len
                  : 1;
    }
    return sz;
}

size_t kp_spool_seg_frame_size(const struct kp_spool_rec *rec)
{
    const struct kp_msg *m = &rec->msg;
    return KP_SPOOL_FRAME_HDR + 1 + 8 + kp_varint_size(m->partition) +
           kp_uvarint_size(rec->tag) + kp_uvarint_size(m->topic_len) +
           m->topic_len + kp_spool_seg_bytes_size(m->key, m->key_len) +
           kp_spool_seg_bytes_size(m->value, m->value_len) +
           kp_uvarint_size(m->header_cnt + rec->extra_cnt) +
           kp_spool_seg_hdrs_size(m->headers, m->header_cnt) +
           kp_spool_seg_hdrs_size(rec->extra, rec->extra_cnt);
}

/* Writers into room reserved once for the whole frame: a frame is
 * encoded for every message in `always` mode, so no byte goes through a
 * capacity check of its own. */
static uint8_t *kp_spool_seg_put(uint8_t *q, const void *p, size_t n)
{
    if (n) {
        memcpy(q, p, n);
    }
    return q + n;
}

static uint8_t *kp_spool_seg_put_hdrs(uint8_t *q, const struct kp_header *h,
                                      size_t n)
{
    for (size_t i = 0; i < n; i++) {
        q += kp_uvarint_enc(q, h[i].name_len);
        q = kp_spool_seg_put(q, h[i].name, h[i].name_len);
        if (h[i].value) {
            q += kp_varint_enc(q, (int64_t)h[i].value_len);
            q = kp_spool_seg_put(q, h[i].value, h[i].value_len);
        } else {
            q += kp_varint_enc(q, -1);
        }
    }
    return q;
}

size_t kp_spool_seg_encode_sized(struct kp_buf *out, uint64_t seq,
                                 const struct kp_spool_rec *rec, size_t flen)
{
    const struct kp_msg *m = &rec->msg;
    uint8_t *f = kp_buf_reserve(out, flen);
    uint8_t *q = f + KP_SPOOL_FRAME_HDR; /* crc, len, seq: patched below */

    *q++ = (uint8_t)((m->key ? KP_SPOOL_FLAG_KEY : 0) |
                     (m->value ? KP_SPOOL_FLAG_VALUE : 0));
    kp_wr_u64(q, (uint64_t)m->timestamp);
    q += 8;
    q += kp_varint_enc(q, m->partition);
    q += kp_uvarint_enc(q, rec->tag);
    q += kp_uvarint_enc(q, m->topic_len);
    q = kp_spool_seg_put(q, m->topic, m->topic_len);
    if (m->key) {
        q += kp_uvarint_enc(q, m->key_len);
        q = kp_spool_seg_put(q, m->key, m->key_len);
    }
    if (m->value) {
        q += kp_uvarint_enc(q, m->value_len);
        q = kp_spool_seg_put(q, m->value, m->value_len);
    }
    q += kp_uvarint_enc(q, m->header_cnt + rec->extra_cnt);
    q = kp_spool_seg_put_hdrs(q, m->headers, m->header_cnt);
    q = kp_spool_seg_put_hdrs(q, rec->extra, rec->extra_cnt);

    size_t len = (size_t)(q - f);
    kp_assert(len == flen);
    kp_wr_u32(f + 4, (uint32_t)(len - KP_SPOOL_FRAME_HDR)); /* len */
    kp_wr_u64(f + 8, seq);                                  /* seq */
    kp_wr_u32(f, kp_crc32c(0, f + 4, len - 4));             /* crc */
    out->len += len;
    return len;
}

size_t kp_spool_seg_encode(struct kp_buf *out, uint64_t seq,
                           const struct kp_spool_rec *rec)
{
    return kp_spool_seg_encode_sized(out, seq, rec,
                                     kp_spool_seg_frame_size(rec));
}

/* A length-prefixed byte string (non-NULL when empty); NULL and r->err on
 * overrun. */
static const uint8_t *kp_spool_seg_rd_bytes(struct kp_rd *r, size_t *n)
{
    uint64_t len = kp_rd_uvarint(r);
    if (r->err || len > kp_rd_left(r)) {
        kp_rd_fail(r);
        *n = 0;
        return NULL;
    }
    *n = (size_t)len;
    return kp_rd_take(r, (size_t)len);
}

static int kp_spool_seg_rd_hdrs(struct kp_rd *r, struct kp_spool_view *v,
                                struct kp_header **hdrs, size_t *cap)
{
    uint64_t cnt = kp_rd_uvarint(r);
    /* Two bytes at least per header: no count beyond the bytes left. */
    if (r->err || cnt > kp_rd_left(r) / 2) {
        return KP_ERROR;
    }
    if (hdrs && cnt > *cap) {
        *hdrs = kp_realloc(*hdrs, (size_t)cnt * sizeof(**hdrs));
        *cap = (size_t)cnt;
    }
    for (uint64_t i = 0; i < cnt; i++) {
        struct kp_header h;
        h.name = kp_spool_seg_rd_bytes(r, &h.name_len);
        int64_t vlen = kp_rd_varint(r);
        if (r->err || vlen < -1 || vlen > (int64_t)kp_rd_left(r)) {
            return KP_ERROR;
        }
        h.value_len = vlen < 0 ? 0 : (size_t)vlen;
        h.value = vlen < 0 ? NULL : kp_rd_take(r, h.value_len);
        if (hdrs) {
            (*hdrs)[i] = h;
        }
    }
    v->msg.headers = hdrs ? *hdrs : NULL;
    v->msg.header_cnt = (size_t)cnt;
    return KP_OK;
}

int kp_spool_seg_decode(const uint8_t *p, size_t frame_len,
                        struct kp_spool_view *v, struct kp_header **hdrs,
                        size_t *cap)
{
    struct kp_rd r;

    if (frame_len < KP_SPOOL_FRAME_HDR + KP_SPOOL_BODY_MIN) {
        return KP_ERROR;
    }
    memset(v, 0, sizeof(*v));
    v->seq = kp_spool_rd_u64(p + 8);
    kp_rd_init(&r, p + KP_SPOOL_FRAME_HDR, frame_len - KP_SPOOL_FRAME_HDR);
    uint8_t flags = (uint8_t)kp_rd_i8(&r);
    v->msg.timestamp = kp_rd_i64(&r);
    int64_t part = kp_rd_varint(&r);
    v->tag = kp_rd_uvarint(&r);
    v->msg.topic = (const char *)kp_spool_seg_rd_bytes(&r, &v->msg.topic_len);
    if (r.err || (flags & ~(KP_SPOOL_FLAG_KEY | KP_SPOOL_FLAG_VALUE)) ||
        part < -1 || part > INT32_MAX ||
        !kp_topic_name_valid(v->msg.topic, v->msg.topic_len)) {
        return KP_ERROR;
    }
    v->msg.partition = (int32_t)part;
    if (flags & KP_SPOOL_FLAG_KEY) {
        v->msg.key = kp_spool_seg_rd_bytes(&r, &v->msg.key_len);
    }
    if (flags & KP_SPOOL_FLAG_VALUE) {
        v->msg.value = kp_spool_seg_rd_bytes(&r, &v->msg.value_len);
    }
    if (r.err || kp_spool_seg_rd_hdrs(&r, v, hdrs, cap) != KP_OK || r.err ||
        kp_rd_left(&r) != 0) {
        return KP_ERROR;
    }
    return KP_OK;
}

int kp_spool_seg_frame_check(const uint8_t *p, size_t avail, uint64_t seq,
                             size_t limit, size_t *frame_len,
                             enum kp_spool_bad *bad)
{
    struct kp_spool_view v;

    *bad = KP_SPOOL_BAD_NONE;
    if (avail < KP_SPOOL_FRAME_HDR) {
        *frame_len = KP_SPOOL_FRAME_HDR;
        return KP_AGAIN;
    }
    uint32_t len = kp_spool_rd_u32(p + 4);
    if (len < KP_SPOOL_BODY_MIN || len > limit) {
        *bad = KP_SPOOL_BAD_LENGTH;
        return KP_ERROR;
    }
    *frame_len = KP_SPOOL_FRAME_HDR + (size_t)len;
    if (avail < *frame_len) {
        return KP_AGAIN;
    }
    if (kp_spool_rd_u32(p) != kp_crc32c(0, p + 4, *frame_len - 4)) {
        *bad = KP_SPOOL_BAD_CRC;
    } else if (kp_spool_rd_u64(p + 8) != seq) {
        *bad = KP_SPOOL_BAD_SEQ;
    } else if (kp_spool_seg_decode(p, *frame_len, &v, NULL, NULL) != KP_OK) {
        *bad = KP_SPOOL_BAD_BODY;
    }
    return *bad == KP_SPOOL_BAD_NONE ? KP_OK : KP_ERROR;
}

void kp_spool_seg_ack_encode(uint8_t *out, uint64_t seg_id, uint32_t word,
                             uint64_t bits)
{
    uint8_t id[8];
    kp_wr_u64(id, seg_id);
    kp_wr_u32(out + 4, word);                                    /* word */
    kp_wr_u64(out + 8, bits);                                    /* bits */
    kp_wr_u32(out, kp_crc32c(kp_crc32c(0, id, 8), out + 4, 12)); /* crc */
}

int kp_spool_seg_ack_decode(const uint8_t *p, uint64_t seg_id, uint32_t *word,
                            uint64_t *bits)
{
    uint8_t id[8];
    kp_wr_u64(id, seg_id);
    if (kp_spool_rd_u32(p) != kp_crc32c(kp_crc32c(0, id, 8), p + 4, 12)) {
        return KP_ERROR;
    }
    *word = kp_spool_rd_u32(p + 4);
    *bits = kp_spool_rd_u64(p + 8);
    return KP_OK;
}

/* pread of exactly n bytes; KP_OK, or KP_ERROR (errno; EIO when short). */
static int kp_spool_seg_pread(int fd, uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t got = pread(fd, p, n, (off_t)off);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            if (got == 0) {
                errno = EIO; /* shrank under us */
            }
            return KP_ERROR;
        }
        p += got;
        n -= (size_t)got;
        off += (uint64_t)got;
    }
    return KP_OK;
}

/* A window [off, off + b.len) of the file, refilled as a scan moves. */
struct kp_spool_win {
    int fd;
    uint64_t size;   /* file size */
    uint64_t off;    /* file offset of b.data[0] */
    struct kp_buf b; /* owned */
};

/* Makes [at, at + need) available (need <= size - at); KP_OK or KP_ERROR. */
static int kp_spool_win_need(struct kp_spool_win *w, uint64_t at, size_t need)
{
    if (at >= w->off && at + need <= w->off + w->b.len) {
        return KP_OK;
    }
    size_t n = (size_t)KP_MIN(KP_MAX((uint64_t)need, KP_SPOOL_SCAN_CHUNK),
                              w->size - at);
    kp_buf_reset(&w->b);
    kp_buf_reserve(&w->b, n);
    if (kp_spool_seg_pread(w->fd, w->b.data, n, at) != KP_OK) {
        return KP_ERROR;
    }
    w->off = at;
    w->b.len = n;
    return KP_OK;
}

static int kp_spool_seg_scan_hdr(struct kp_spool_win *w, uint64_t name_seq,
                                 uint64_t min_seq, struct kp_spool_scan *out)
{
    if (w->size < KP_SPOOL_HDR_LEN) {
        out->bad = KP_SPOOL_BAD_HEADER;
        return KP_OK;
    }
    if (kp_spool_win_need(w, 0, KP_SPOOL_HDR_LEN) != KP_OK) {
        return KP_ERROR;
    }
    uint32_t flags = 0;
    if (kp_spool_seg_hdr_decode(w->b.data, w->b.len, false, &out->first_seq,
                                &out->seg_id, &flags) != KP_OK ||
        out->first_seq != name_seq || out->first_seq < min_seq ||
        out->first_seq == 0) {
        out->bad = KP_SPOOL_BAD_HEADER;
        return KP_OK;
    }
    out->reused = (flags & KP_SPOOL_HDR_REUSED) != 0;
    out->end = KP_SPOOL_HDR_LEN;
    return KP_OK;
}

int kp_spool_seg_scan_fd(int fd, uint64_t name_seq, uint64_t min_seq,
                         struct kp_spool_scan *out, kp_spool_scan_fn fn,
                         void *arg)
{
    struct stat st;
    struct kp_spool_win w = {.fd = fd};
    int rc = KP_OK;

    memset(out, 0, sizeof(*out));
    if (fstat(fd, &st) != 0) {
        return KP_ERROR;
    }
    w.size = out->file_size = (uint64_t)st.st_size;
    kp_buf_init(&w.b, 0);
    if (kp_spool_seg_scan_hdr(&w, name_seq, min_seq, out) != KP_OK) {
        kp_buf_deinit(&w.b);
        return KP_ERROR;
    }
    size_t need = KP_SPOOL_FRAME_HDR;
    while (out->bad == KP_SPOOL_BAD_NONE && out->end < w.size) {
        size_t flen;
        if (out->end + need > w.size) {
            out->bad = KP_SPOOL_BAD_SHORT;
            break;
        }
        if ((rc = kp_spool_win_need(&w, out->end, need)) != KP_OK) {
            break;
        }
        const uint8_t *p = w.b.data + (out->end - w.off);
        size_t avail = w.b.len - (size_t)(out->end - w.off);
        if (out->reused && kp_spool_seg_is_end_mark(p)) {
            out->end_mark = true;
            break;
        }
        int c =
            kp_spool_seg_frame_check(p, avail, out->first_seq + out->records,
                                     KP_SPOOL_REC_LIMIT, &flen, &out->bad);
        if (c == KP_AGAIN) {
            need = flen;
            continue;
        }
        if (c == KP_OK) {
            if (fn && fn(arg, out->first_seq + out->records, p, flen)) {
                break;
            }
            out->records++;
            out->end += flen;
            need = KP_SPOOL_FRAME_HDR;
        }
    }
    kp_buf_deinit(&w.b);
    return rc;
}

static void kp_spool_seg_apply(struct kp_spool_win *w, uint64_t at,
                               uint64_t seg_id, uint64_t rec_cnt,
                               uint64_t *bits, struct kp_spool_jscan *out)
{
    const uint8_t *p = w->b.data + (at - w->off);
    uint64_t words = (rec_cnt + 63) / 64;
    uint32_t word;
    uint64_t v;

    if (kp_spool_seg_ack_decode(p, seg_id, &word, &v) != KP_OK ||
        word >= words) {
        out->bad++;
        return;
    }
    if (word == words - 1 && rec_cnt % 64) {
        v &= (UINT64_C(1) << (rec_cnt % 64)) - 1; /* records cut since */
    }
    bits[word] |= v;
    out->entries++;
}

int kp_spool_seg_journal_load_fd(int fd, uint64_t first_seq, uint64_t seg_id,
                                 uint64_t rec_cnt, uint64_t *bits,
                                 struct kp_spool_jscan *out)
{
    struct stat st;
    struct kp_spool_win w = {.fd = fd};
    uint64_t f, id;
    int rc = KP_OK;

    memset(out, 0, sizeof(*out));
    if (fstat(fd, &st) != 0) {
        return KP_ERROR;
    }
    w.size = out->file_size = (uint64_t)st.st_size;
    if (w.size < KP_SPOOL_HDR_LEN) {
        return KP_OK;
    }
    kp_buf_init(&w.b, 0);
    if (kp_spool_win_need(&w, 0, KP_SPOOL_HDR_LEN) != KP_OK) {
        kp_buf_deinit(&w.b);
        return KP_ERROR;
    }
    out->header_ok =
        kp_spool_seg_hdr_decode(w.b.data, w.b.len, true, &f, &id, NULL) ==
            KP_OK &&
        f == first_seq && id == seg_id;
    uint64_t at = KP_SPOOL_HDR_LEN;
    for (; out->header_ok && at + KP_SPOOL_ACK_LEN <= w.size;
         at += KP_SPOOL_ACK_LEN) {
        if ((rc = kp_spool_win_need(&w, at, KP_SPOOL_ACK_LEN)) != KP_OK) {
            break;
        }
        kp_spool_seg_apply(&w, at, seg_id, rec_cnt, bits, out);
    }
    out->tail = out->header_ok ? w.size - at : 0;
    kp_buf_deinit(&w.b);
    return rc;
}
