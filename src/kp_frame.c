/*
 * kp_frame.c - line and length-prefixed framing of a client's bytes, in
 * place: messages are views into the caller's buffer.
 */
#include "kp_frame.h"

const char *const kp_frame_kind_names[KP_FRAME__COUNT] = {
    "none", "msg", "too_long", "truncated"};

void kp_framer_init(struct kp_framer *f, enum kp_framing framing)
{
    memset(f, 0, sizeof(*f));
    f->framing = framing;
}

static uint32_t kp_frame_len(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

/* One kp_frame_next call: its input and where its message goes. */
struct kp_frame_io {
    size_t max;
    const uint8_t *data;
    size_t len;
    size_t *off;
    bool final;
    const uint8_t **msg;
    size_t *msg_len;
    size_t *shown; /* may be NULL */
};

static enum kp_frame_kind kp_frame_out(const struct kp_frame_io *io,
                                       enum kp_frame_kind k, const uint8_t *p,
                                       size_t n, size_t shown)
{
    *io->msg = p;
    *io->msg_len = n;
    if (io->shown) {
        *io->shown = shown;
    }
    return k;
}

static enum kp_frame_kind kp_frame_line(struct kp_framer *f,
                                        const struct kp_frame_io *io)
{
    size_t *off = io->off;

    while (*off < io->len) {
        const uint8_t *p = io->data + *off;
        size_t rest = io->len - *off;
        const uint8_t *nl = memchr(p, '\n', rest);

        if (f->discarding) {
            /* the tail of a line already rejected */
            *off = nl ? *off + (size_t)(nl - p) + 1 : io->len;
            f->discarding = nl == NULL && !io->final;
            continue;
        }
        if (nl) {
            size_t n = (size_t)(nl - p);
            *off += n + 1;
            if (n == 0) {
                continue; /* empty lines are skipped */
            }
            return kp_frame_out(
                io, n > io->max ? KP_FRAME_TOO_LONG : KP_FRAME_MSG, p, n, n);
        }
        if (rest > io->max) {
            /* rejected now, its rest skipped as it arrives */
            *off = io->len;
            f->discarding = !io->final;
            return kp_frame_out(io, KP_FRAME_TOO_LONG, p, rest, rest);
        }
        if (!io->final) {
            break; /* a partial line: the caller carries it */
        }
        *off = io->len;
        return kp_frame_out(io, KP_FRAME_MSG, p, rest, rest);
    }
    return KP_FRAME_NONE;
}

static enum kp_frame_kind kp_frame_length(struct kp_framer *f,
                                          const struct kp_frame_io *io)
{
    size_t *off = io->off;

    while (*off < io->len) {
        const uint8_t *p = io->data + *off;
        size_t rest = io->len - *off;

        if (f->skip) {
            /* the body of a frame already rejected */
            size_t k = (size_t)KP_MIN((uint64_t)rest, f->skip);
            *off += k;
            f->skip -= k;
            continue;
        }
        if (rest < KP_FRAME_HEADER_LEN) {
            break;
        }
        uint32_t n = kp_frame_len(p);
        rest -= KP_FRAME_HEADER_LEN;
        p += KP_FRAME_HEADER_LEN;
        if (n > io->max) {
            *off += KP_FRAME_HEADER_LEN;
            f->skip = n;
            return kp_frame_out(io, KP_FRAME_TOO_LONG, p, n,
                                KP_MIN(rest, (size_t)n));
        }
        if (rest < n) {
            break;
        }
        *off += KP_FRAME_HEADER_LEN + n;
        if (n > 0) {
            return kp_frame_out(io, KP_FRAME_MSG, p, n, n);
        }
        /* a zero-length frame is skipped like an empty line */
    }
    if (io->final && *off < io->len && !f->skip) {
        /* EOF inside a frame: what came of it is no message */
        const uint8_t *p = io->data + *off;
        size_t rest = io->len - *off;
        *off = io->len;
        return kp_frame_out(io, KP_FRAME_TRUNCATED, p, rest, rest);
    }
    return KP_FRAME_NONE;
}

enum kp_frame_kind kp_frame_next(struct kp_framer *f, size_t max,
                                 const uint8_t *data, size_t len, size_t *off,
                                 bool final, const uint8_t **msg,
                                 size_t *msg_len, size_t *shown)
{
    const struct kp_frame_io io = {max, data, len, off, final,
                                   msg, msg_len, shown};

    if (f->framing == KP_FRAMING_LENGTH) {
        return kp_frame_length(f, &io);
    }
    return kp_frame_line(f, &io);
}

bool kp_frame_ready(const struct kp_framer *f, size_t max, const uint8_t *buf,
                    size_t len, size_t fresh)
{
    if (f->framing == KP_FRAMING_LENGTH) {
        if (f->skip || len < KP_FRAME_HEADER_LEN) {
            return f->skip != 0;
        }
        uint32_t n = kp_frame_len(buf);
        return n > max || len - KP_FRAME_HEADER_LEN >= n;
    }
    if (f->discarding || len > max) {
        return true;
    }
    return fresh < len && memchr(buf + fresh, '\n', len - fresh) != NULL;
}

size_t kp_frame_start(const struct kp_framer *f, const uint8_t *data,
                      const uint8_t *msg)
{
    size_t at = (size_t)(msg - data);

    return f->framing == KP_FRAMING_LENGTH ? at - KP_FRAME_HEADER_LEN : at;
}

bool kp_frame_abandonable(const struct kp_framer *f, const uint8_t *buf,
                          size_t len)
{
    if (f->framing == KP_FRAMING_LENGTH) {
        return !f->skip && len >= KP_FRAME_HEADER_LEN &&
               len - KP_FRAME_HEADER_LEN < kp_frame_len(buf);
    }
    return !f->discarding && len > 0;
}

void kp_frame_abandon(struct kp_framer *f, const uint8_t *buf, size_t len)
{
    kp_assert(kp_frame_abandonable(f, buf, len));
    if (f->framing == KP_FRAMING_LENGTH) {
        f->skip = kp_frame_len(buf) - (len - KP_FRAME_HEADER_LEN);
    } else {
        f->discarding = true;
    }
}
