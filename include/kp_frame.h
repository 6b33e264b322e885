/*
 * kp_frame.h - cutting a client's byte stream into messages: the listener's
 * `framing`. Pure: no I/O, no copies; the caller owns the bytes.
 *
 *   line:    MESSAGE '\n' MESSAGE '\n' ...      (a last one may lack '\n'
 *                                                at EOF)
 *   length:  +--------+---------+--------+---------+
 *            | len u32| len     | len u32| ...     |   big-endian length,
 *            | (BE)   | bytes   |        |         |   then that many bytes
 *            +--------+---------+--------+---------+
 *
 * The caller hands over what it has (the carried partial message followed
 * by new bytes) and takes messages out one by one with kp_frame_next; what
 * is left unconsumed is a partial message to carry to the next read.
 * Empty lines and zero-length frames are skipped (they are no message). A
 * message longer than `max` is reported once (KP_FRAME_TOO_LONG) and its
 * bytes are discarded as they arrive, never buffered: up to the next '\n'
 * for lines, exactly its length for frames (so framing stays intact).
 */
#ifndef KP_FRAME_H
#define KP_FRAME_H

#include "kp_common.h"
#include "kp_conf.h"

/* Bytes of a frame's length prefix. */
#define KP_FRAME_HEADER_LEN 4

struct kp_framer {
    enum kp_framing framing;
    bool discarding; /* line: skipping the rest of an overlong line */
    uint64_t skip;   /* length: bytes of an overlong frame still to drop */
};

enum kp_frame_kind {
    KP_FRAME_NONE,      /* nothing more until more bytes (or EOF) come */
    KP_FRAME_MSG,       /* a message: *msg, *msg_len (never empty) */
    KP_FRAME_TOO_LONG,  /* longer than max: *msg_len is its length so far
                           (lines) or its declared length (frames); *msg
                           shows its first bytes (at most *shown) */
    KP_FRAME_TRUNCATED, /* EOF inside a frame: *msg, *msg_len what came
                           of it, its length prefix included */
    KP_FRAME__COUNT
};
extern const char *const kp_frame_kind_names[KP_FRAME__COUNT];

void kp_framer_init(struct kp_framer *f, enum kp_framing framing);

/*
 * The next message in data[*off..len). Advances *off past what it used,
 * including skipped bytes. With `final` (EOF: no more bytes will come) a
 * last line without '\n' is a message and a partial frame is TRUNCATED;
 * otherwise they stay unconsumed for the caller to carry. *shown (may be
 * NULL) gets how many bytes at *msg may be read (equal to *msg_len except
 * for TOO_LONG). Never reads outside data[0..len).
 */
enum kp_frame_kind kp_frame_next(struct kp_framer *f, size_t max,
                                 const uint8_t *data, size_t len, size_t *off,
                                 bool final, const uint8_t **msg,
                                 size_t *msg_len, size_t *shown);

/*
 * Whether buf[0..len), a partial message growing in place, now yields
 * something from kp_frame_next (a message or a rejection): bytes from
 * `fresh` on are new since the last call, so a line's end is looked for in
 * them only. Lets a caller accumulate one long message without framing it
 * again on every read.
 */
bool kp_frame_ready(const struct kp_framer *f, size_t max, const uint8_t *buf,
                    size_t len, size_t fresh);

/* Where the message at msg, just returned by kp_frame_next from data,
 * begins in data (its length prefix included): to offer it again. */
size_t kp_frame_start(const struct kp_framer *f, const uint8_t *data,
                      const uint8_t *msg);

/*
 * Gives up the partial message buf[0..len) (a memory budget rejected it):
 * the rest of it is skipped as it arrives, up to the next '\n' for lines,
 * to the frame's declared end for frames. kp_frame_abandonable says
 * whether that is possible (a frame needs its whole length prefix).
 */
bool kp_frame_abandonable(const struct kp_framer *f, const uint8_t *buf,
                          size_t len);
void kp_frame_abandon(struct kp_framer *f, const uint8_t *buf, size_t len);

#endif
