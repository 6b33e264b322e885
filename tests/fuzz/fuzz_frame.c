/*
 * fuzz_frame.c - libFuzzer target for kp_frame (line and length framing)
 * on arbitrary bytes.
 *
 * Input: byte 0 picks the framing (bit 0), byte 1 the message limit
 * (1..256), byte 2 seeds the chunk sizes; the rest is what a client
 * writes. It is framed three ways, which must agree:
 *   - a reference decoder written here, plainly, from the SPEC;
 *   - kp_frame_next over the whole input at once (EOF at the end);
 *   - as the client reads: random chunks, a carried partial message
 *     prepended to each, and past a threshold the carry grown in place and
 *     framed only when kp_frame_ready says so (which must never hold back
 *     a message kp_frame_next would give).
 * Messages and rejections, in order, are hashed; an overlong line counts
 * without its length (how much of it had come depends on the chunks).
 */
#include "kp_frame.h"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_out {
    size_t msgs, too_long, truncated;
    uint64_t digest;
};

static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_frame: %s\n", what);
    abort();
}

static uint64_t fuzz_mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;

    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ULL;
    }
    return (h ^ n) * 0x100000001b3ULL;
}

static void fuzz_note(struct fuzz_out *o, enum kp_framing framing,
                      enum kp_frame_kind k, const uint8_t *msg, size_t len)
{
    uint8_t tag = (uint8_t)k;

    o->digest = fuzz_mix(o->digest, &tag, 1);
    switch (k) {
    case KP_FRAME_MSG:
        if (len == 0) {
            fuzz_fail("empty message");
        }
        o->msgs++;
        o->digest = fuzz_mix(o->digest, msg, len);
        break;
    case KP_FRAME_TOO_LONG:
        o->too_long++;
        if (framing == KP_FRAMING_LENGTH) {
            o->digest = fuzz_mix(o->digest, &len, sizeof(len));
        }
        break;
    case KP_FRAME_TRUNCATED:
        o->truncated++;
        o->digest = fuzz_mix(o->digest, msg, len);
        break;
    default:
        fuzz_fail("bad kind");
    }
}

static uint32_t fuzz_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

/* The SPEC, plainly. */
static void fuzz_reference(enum kp_framing framing, size_t max,
                           const uint8_t *p, size_t n, struct fuzz_out *o)
{
    size_t i = 0;

    while (i < n) {
        if (framing == KP_FRAMING_LINE) {
            const uint8_t *nl = memchr(p + i, '\n', n - i);
            size_t end = nl ? (size_t)(nl - p) : n;
            if (end > i) {
                fuzz_note(o, framing,
                          end - i > max ? KP_FRAME_TOO_LONG : KP_FRAME_MSG,
                          p + i, end - i);
            }
            i = end + 1;
            continue;
        }
        if (n - i < 4) {
            fuzz_note(o, framing, KP_FRAME_TRUNCATED, p + i, n - i);
            break;
        }
        size_t len = fuzz_be32(p + i);
        i += 4;
        if (len > max) {
            fuzz_note(o, framing, KP_FRAME_TOO_LONG, NULL, len);
            i += KP_MIN(len, n - i);
        } else if (len > n - i) {
            /* what came of it, its length prefix included */
            fuzz_note(o, framing, KP_FRAME_TRUNCATED, p + i - 4, n - i + 4);
            break;
        } else {
            if (len) {
                fuzz_note(o, framing, KP_FRAME_MSG, p + i, len);
            }
            i += len;
        }
    }
}

/* Takes every message out of acc[0..len); returns what was used. */
static size_t fuzz_drain(struct kp_framer *f, size_t max, const uint8_t *acc,
                         size_t len, bool final, struct fuzz_out *o)
{
    size_t off = 0, msg_len, shown;
    const uint8_t *msg;
    enum kp_frame_kind k;

    while ((k = kp_frame_next(f, max, acc, len, &off, final, &msg, &msg_len,
                              &shown)) != KP_FRAME_NONE) {
        if (off > len || shown > msg_len ||
            (shown && (msg < acc || msg + shown > acc + len))) {
            fuzz_fail("view outside the buffer");
        }
        fuzz_note(o, f->framing, k, msg, msg_len);
    }
    if (off > len) {
        fuzz_fail("consumed past the end");
    }
    return off;
}

static uint32_t fuzz_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* As the client reads: see the file comment. */
static void fuzz_chunked(enum kp_framing framing, size_t max, uint32_t seed,
                         size_t grow_at, const uint8_t *p, size_t n,
                         struct fuzz_out *o)
{
    struct kp_framer f;
    uint8_t *acc = kp_malloc(n + 1);
    size_t acc_len = 0;

    kp_framer_init(&f, framing);
    for (size_t pos = 0; pos < n;) {
        size_t chunk = 1 + fuzz_rand(&seed) % 48; /* KP_MIN: args twice */
        chunk = KP_MIN(chunk, n - pos);
        size_t fresh = acc_len;
        memcpy(acc + acc_len, p + pos, chunk);
        acc_len += chunk;
        pos += chunk;
        if (fresh >= grow_at && !kp_frame_ready(&f, max, acc, acc_len, fresh)) {
            struct kp_framer copy = f;
            size_t off = 0, ml, sh;
            const uint8_t *m;
            if (kp_frame_next(&copy, max, acc, acc_len, &off, false, &m, &ml,
                              &sh) != KP_FRAME_NONE ||
                off != 0) {
                fuzz_fail("kp_frame_ready held back a message");
            }
            continue;
        }
        size_t used = fuzz_drain(&f, max, acc, acc_len, false, o);
        memmove(acc, acc + used, acc_len - used);
        acc_len -= used;
    }
    fuzz_drain(&f, max, acc, acc_len, true, o);
    free(acc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_out ref = {0}, whole = {0}, chunked = {0};
    struct kp_framer f;

    if (size < 3) {
        return 0;
    }
    enum kp_framing framing =
        (data[0] & 1) ? KP_FRAMING_LENGTH : KP_FRAMING_LINE;
    size_t max = 1 + (size_t)data[1];
    uint32_t seed = data[2] * 2654435761u + 1;
    size_t grow_at = (data[0] >> 1) % 64;
    data += 3;
    size -= 3;

    fuzz_reference(framing, max, data, size, &ref);
    kp_framer_init(&f, framing);
    if (fuzz_drain(&f, max, data, size, true, &whole) != size) {
        fuzz_fail("EOF left bytes unconsumed");
    }
    fuzz_chunked(framing, max, seed, grow_at, data, size, &chunked);
    if (memcmp(&ref, &whole, sizeof(ref)) != 0) {
        fuzz_fail("whole input differs from the reference");
    }
    if (memcmp(&ref, &chunked, sizeof(ref)) != 0) {
        fuzz_fail("chunked input differs from the reference");
    }
    return 0;
}
