/*
 * kp_buf.h - growable byte buffer (writer) and bounds-checked reader.
 *
 * The writer encodes Kafka's big-endian integers, both varint kinds and the
 * string/bytes forms; length and CRC fields are reserved and patched by
 * offset once the content is known (DESIGN 10).
 *
 * The reader never reads past its end: the first short read sets `err`,
 * moves `p` to `end` and every later read returns zero. Callers check `err`
 * once at the end of a decode.
 */
#ifndef KP_BUF_H
#define KP_BUF_H

#include "kp_common.h"

struct kp_buf {
    uint8_t *data; /* owned */
    size_t len;
    size_t cap;
};

void kp_buf_init(struct kp_buf *b, size_t cap);
void kp_buf_deinit(struct kp_buf *b);
void kp_buf_grow(struct kp_buf *b, size_t need);

static inline void kp_buf_reset(struct kp_buf *b)
{
    b->len = 0;
}

/* Ensures room for n more bytes; returns where they go (len unchanged). */
static inline uint8_t *kp_buf_reserve(struct kp_buf *b, size_t n)
{
    if (kp_unlikely(b->cap - b->len < n)) {
        kp_buf_grow(b, n);
    }
    return b->data + b->len;
}

static inline void kp_buf_put_bytes(struct kp_buf *b, const void *p, size_t n)
{
    if (n) {
        memcpy(kp_buf_reserve(b, n), p, n);
        b->len += n;
    }
}

static inline void kp_buf_put_i8(struct kp_buf *b, int8_t v)
{
    *kp_buf_reserve(b, 1) = (uint8_t)v;
    b->len++;
}

static inline void kp_wr_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void kp_wr_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void kp_wr_u64(uint8_t *p, uint64_t v)
{
    kp_wr_u32(p, (uint32_t)(v >> 32));
    kp_wr_u32(p + 4, (uint32_t)v);
}

static inline void kp_buf_put_i16(struct kp_buf *b, int16_t v)
{
    kp_wr_u16(kp_buf_reserve(b, 2), (uint16_t)v);
    b->len += 2;
}

static inline void kp_buf_put_i32(struct kp_buf *b, int32_t v)
{
    kp_wr_u32(kp_buf_reserve(b, 4), (uint32_t)v);
    b->len += 4;
}

static inline void kp_buf_put_i64(struct kp_buf *b, int64_t v)
{
    kp_wr_u64(kp_buf_reserve(b, 8), (uint64_t)v);
    b->len += 8;
}

/* Unsigned varint (protocol's flexible-version lengths). Returns bytes. */
static inline size_t kp_uvarint_enc(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Zig-zag signed varint (record fields). */
static inline size_t kp_varint_enc(uint8_t *p, int64_t v)
{
    return kp_uvarint_enc(p, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static inline size_t kp_uvarint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline size_t kp_varint_size(int64_t v)
{
    return kp_uvarint_size(((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static inline void kp_buf_put_uvarint(struct kp_buf *b, uint64_t v)
{
    b->len += kp_uvarint_enc(kp_buf_reserve(b, 10), v);
}

static inline void kp_buf_put_varint(struct kp_buf *b, int64_t v)
{
    b->len += kp_varint_enc(kp_buf_reserve(b, 10), v);
}

/* Drops the first n bytes, moving the rest to the front. */
static inline void kp_buf_consume(struct kp_buf *b, size_t n)
{
    if (n) {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
}

/* STRING / NULLABLE_STRING: int16 length, -1 for NULL. */
void kp_buf_put_str(struct kp_buf *b, const char *s);
void kp_buf_put_strn(struct kp_buf *b, const char *s, size_t n);
/* COMPACT_(NULLABLE_)STRING: uvarint length+1, 0 for NULL. */
void kp_buf_put_compact_str(struct kp_buf *b, const char *s);
void kp_buf_put_compact_strn(struct kp_buf *b, const char *s, size_t n);
/* Empty tagged-field section. */
static inline void kp_buf_put_tags(struct kp_buf *b)
{
    kp_buf_put_uvarint(b, 0);
}

static inline void kp_buf_patch_i32(struct kp_buf *b, size_t off, int32_t v)
{
    kp_wr_u32(b->data + off, (uint32_t)v);
}

/* ---- reader ---- */

struct kp_rd {
    const uint8_t *p;   /* borrowed */
    const uint8_t *end; /* borrowed */
    int err;
};

static inline void kp_rd_init(struct kp_rd *r, const uint8_t *p, size_t n)
{
    r->p = p;
    r->end = p + n;
    r->err = 0;
}

static inline size_t kp_rd_left(const struct kp_rd *r)
{
    return (size_t)(r->end - r->p);
}

static inline int kp_rd_fail(struct kp_rd *r)
{
    r->err = 1;
    r->p = r->end;
    return 0;
}

static inline const uint8_t *kp_rd_take(struct kp_rd *r, size_t n)
{
    const uint8_t *p = r->p;
    if (kp_unlikely(kp_rd_left(r) < n)) {
        kp_rd_fail(r);
        return NULL;
    }
    r->p += n;
    return p;
}

static inline int8_t kp_rd_i8(struct kp_rd *r)
{
    const uint8_t *p = kp_rd_take(r, 1);
    return p ? (int8_t)p[0] : 0;
}

static inline int16_t kp_rd_i16(struct kp_rd *r)
{
    const uint8_t *p = kp_rd_take(r, 2);
    return p ? (int16_t)(((uint16_t)p[0] << 8) | p[1]) : 0;
}

static inline uint32_t kp_rd_u32(struct kp_rd *r)
{
    const uint8_t *p = kp_rd_take(r, 4);
    return p ? ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                   ((uint32_t)p[2] << 8) | p[3]
             : 0;
}

static inline int32_t kp_rd_i32(struct kp_rd *r)
{
    return (int32_t)kp_rd_u32(r);
}

static inline int64_t kp_rd_i64(struct kp_rd *r)
{
    uint64_t hi = kp_rd_u32(r);
    uint64_t lo = kp_rd_u32(r);
    return (int64_t)((hi << 32) | lo);
}

uint64_t kp_rd_uvarint(struct kp_rd *r);
int64_t kp_rd_varint(struct kp_rd *r);
void kp_rd_skip(struct kp_rd *r, size_t n);

/*
 * Strings and bytes return their length, or -1 for NULL, and point *s into
 * the reader's input. A length beyond the bytes left sets err.
 */
int32_t kp_rd_str(struct kp_rd *r, const uint8_t **s);         /* int16 len */
int32_t kp_rd_compact_str(struct kp_rd *r, const uint8_t **s); /* uvarint+1 */
int32_t kp_rd_bytes(struct kp_rd *r, const uint8_t **s);       /* int32 len */
int32_t kp_rd_compact_bytes(struct kp_rd *r, const uint8_t **s);

/*
 * Array counts: -1 for NULL. A count whose elements, at min_elem bytes each,
 * cannot fit in the bytes left sets err, so a decoder never allocates what a
 * hostile length claims.
 */
int32_t kp_rd_array(struct kp_rd *r, size_t min_elem);
int32_t kp_rd_compact_array(struct kp_rd *r, size_t min_elem);
/* Skips a tagged-field section (all tags unknown to kproxyd). */
void kp_rd_skip_tags(struct kp_rd *r);

#endif
