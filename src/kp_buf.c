/*
 * kp_buf.c - growth of the byte buffer and the out-of-line reader helpers.
 */
#include "kp_buf.h"

void kp_buf_init(struct kp_buf *b, size_t cap)
{
    b->data = cap ? kp_malloc(cap) : NULL;
    b->len = 0;
    b->cap = cap;
}

void kp_buf_deinit(struct kp_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void kp_buf_grow(struct kp_buf *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < need) {
        cap *= 2;
    }
    b->data = kp_realloc(b->data, cap);
    b->cap = cap;
}

void kp_buf_put_strn(struct kp_buf *b, const char *s, size_t n)
{
    kp_buf_put_i16(b, (int16_t)n);
    kp_buf_put_bytes(b, s, n);
}

void kp_buf_put_str(struct kp_buf *b, const char *s)
{
    if (!s) {
        kp_buf_put_i16(b, -1);
        return;
    }
    kp_buf_put_strn(b, s, strlen(s));
}

void kp_buf_put_compact_strn(struct kp_buf *b, const char *s, size_t n)
{
    kp_buf_put_uvarint(b, (uint64_t)n + 1);
    kp_buf_put_bytes(b, s, n);
}

void kp_buf_put_compact_str(struct kp_buf *b, const char *s)
{
    if (!s) {
        kp_buf_put_uvarint(b, 0);
        return;
    }
    kp_buf_put_compact_strn(b, s, strlen(s));
}

uint64_t kp_rd_uvarint(struct kp_rd *r)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        const uint8_t *p = kp_rd_take(r, 1);
        if (!p) {
            return 0;
        }
        v |= (uint64_t)(*p & 0x7f) << shift;
        if (!(*p & 0x80)) {
            return v;
        }
    }
    kp_rd_fail(r); /* more than 10 bytes: malformed */
    return 0;
}

int64_t kp_rd_varint(struct kp_rd *r)
{
    uint64_t u = kp_rd_uvarint(r);
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

void kp_rd_skip(struct kp_rd *r, size_t n)
{
    kp_rd_take(r, n);
}

static int32_t kp_rd_view(struct kp_rd *r, int64_t len, const uint8_t **s)
{
    *s = NULL;
    if (r->err) {
        return -1;
    }
    if (len < 0) {
        return -1;
    }
    if ((uint64_t)len > kp_rd_left(r)) {
        kp_rd_fail(r);
        return -1;
    }
    *s = r->p;
    r->p += len;
    return (int32_t)len;
}

int32_t kp_rd_str(struct kp_rd *r, const uint8_t **s)
{
    int16_t len = kp_rd_i16(r);
    if (len < -1) {
        kp_rd_fail(r);
    }
    return kp_rd_view(r, len, s);
}

int32_t kp_rd_bytes(struct kp_rd *r, const uint8_t **s)
{
    int32_t len = kp_rd_i32(r);
    if (len < -1) {
        kp_rd_fail(r);
    }
    return kp_rd_view(r, len, s);
}

int32_t kp_rd_compact_str(struct kp_rd *r, const uint8_t **s)
{
    uint64_t n = kp_rd_uvarint(r);
    *s = NULL;
    if (n > (uint64_t)INT32_MAX + 1) {
        kp_rd_fail(r);
        return -1;
    }
    return kp_rd_view(r, (int64_t)n - 1, s);
}

int32_t kp_rd_compact_bytes(struct kp_rd *r, const uint8_t **s)
{
    return kp_rd_compact_str(r, s);
}

static int32_t kp_rd_count(struct kp_rd *r, int64_t n, size_t min_elem)
{
    if (r->err || n < 0) {
        return -1;
    }
    /* Every element of every Kafka array takes at least one byte. */
    if (min_elem == 0) {
        min_elem = 1;
    }
    if (n > INT32_MAX || (uint64_t)n * min_elem > kp_rd_left(r)) {
        kp_rd_fail(r);
        return -1;
    }
    return (int32_t)n;
}

int32_t kp_rd_array(struct kp_rd *r, size_t min_elem)
{
    int32_t n = kp_rd_i32(r);
    if (n < -1) {
        kp_rd_fail(r);
        return -1;
    }
    return kp_rd_count(r, n, min_elem);
}

int32_t kp_rd_compact_array(struct kp_rd *r, size_t min_elem)
{
    uint64_t n = kp_rd_uvarint(r);
    if (n > (uint64_t)INT32_MAX + 1) {
        kp_rd_fail(r);
        return -1;
    }
    return kp_rd_count(r, (int64_t)n - 1, min_elem);
}

void kp_rd_skip_tags(struct kp_rd *r)
{
    uint64_t n = kp_rd_uvarint(r);
    for (uint64_t i = 0; i < n && !r->err; i++) {
        kp_rd_uvarint(r); /* tag */
        uint64_t size = kp_rd_uvarint(r);
        if (size > kp_rd_left(r)) {
            kp_rd_fail(r);
            return;
        }
        kp_rd_skip(r, size);
    }
}
