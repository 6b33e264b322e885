/*
 * kp_spool_seg.h - the disk spool's file formats: segment and journal
 * headers, the record frame and body, journal entries, and the recovery
 * readers of a segment and a journal given as a file descriptor. Pure
 * apart from pread(2); the layouts are drawn in kp_spool_seg.c.
 */
#ifndef KP_SPOOL_SEG_H
#define KP_SPOOL_SEG_H

#include "kp_buf.h"
#include "kp_line.h"

/* One message to spool. Every pointer is borrowed for the call only. */
struct kp_spool_rec {
    struct kp_msg msg; /* msg.timestamp < 0 is stored as the append time */
    const struct kp_header *extra; /* borrowed: stored after msg.headers
                                    * (peer and listener headers) */
    size_t extra_cnt;
    uint64_t tag; /* opaque to the spool; cheapest below 128 */
};

/* One record read back: pointers borrow the cursor's buffer until the next
 * call on that cursor. msg.headers holds the message's and the extra
 * headers; msg.partition is -1 or the explicit partition. */
struct kp_spool_view {
    uint64_t seq;
    uint64_t tag;
    struct kp_msg msg;
};


/* Encoded body limit that recovery accepts whatever max_record says, so a
 * lower message_max_bytes after a restart never cuts older records. */
#define KP_SPOOL_REC_LIMIT (64u << 20)
#define KP_SPOOL_HDR_LEN 32   /* segment and journal header */
#define KP_SPOOL_FRAME_HDR 16 /* crc, length, seq */
#define KP_SPOOL_ACK_LEN 16   /* one journal entry */
/* Header flag: the file is reused (an earlier segment's file, renamed);
 * its records end at an end mark, after which come the earlier bytes. */
#define KP_SPOOL_HDR_REUSED 1u
/* The end mark of a reused file: a frame header of zeros, which no frame
 * has (its length is below KP_SPOOL_BODY_MIN). */
#define KP_SPOOL_END_MARK KP_SPOOL_FRAME_HDR

/* Why a scan stopped before the end of the file. */
enum kp_spool_bad {
    KP_SPOOL_BAD_NONE,   /* intact to the end */
    KP_SPOOL_BAD_HEADER, /* file header short, damaged or not ours */
    KP_SPOOL_BAD_SHORT,  /* the last frame runs past the end: torn write */
    KP_SPOOL_BAD_LENGTH, /* a length no frame of ours has */
    KP_SPOOL_BAD_CRC,    /* CRC-32C mismatch */
    KP_SPOOL_BAD_SEQ,    /* not the sequence number due there */
    KP_SPOOL_BAD_BODY,   /* CRC fine but the body does not parse */
    KP_SPOOL_BAD__COUNT
};
extern const char *const kp_spool_bad_names[KP_SPOOL_BAD__COUNT];

/* Header of a segment (journal = false) or of its journal (true); flags:
 * KP_SPOOL_HDR_REUSED or 0 (always 0 in a journal). */
void kp_spool_seg_hdr_encode(uint8_t *out, bool journal, uint64_t first_seq,
                             uint64_t seg_id, uint32_t flags);
/* KP_OK when p[0..n) starts with a valid header of that kind; *flags may
 * be NULL. */
int kp_spool_seg_hdr_decode(const uint8_t *p, size_t n, bool journal,
                            uint64_t *first_seq, uint64_t *seg_id,
                            uint32_t *flags);

/* Exact frame bytes kp_spool_seg_encode will write for rec. */
size_t kp_spool_seg_frame_size(const struct kp_spool_rec *rec);
/* Appends the frame of rec with seq to out (timestamp resolved by the
 * caller); returns its length. */
size_t kp_spool_seg_encode(struct kp_buf *out, uint64_t seq,
                           const struct kp_spool_rec *rec);
/* The same when flen = kp_spool_seg_frame_size(rec) is known already. */
size_t kp_spool_seg_encode_sized(struct kp_buf *out, uint64_t seq,
                                 const struct kp_spool_rec *rec, size_t flen);

/*
 * Checks the frame at p[0..avail) that must carry seq. KP_OK: a valid
 * frame (CRC and body) of *frame_len bytes. KP_AGAIN: only a prefix is
 * there; *frame_len is the length needed. KP_ERROR: damaged, *bad says
 * how. Bodies longer than limit are damaged.
 */
int kp_spool_seg_frame_check(const uint8_t *p, size_t avail, uint64_t seq,
                             size_t limit, size_t *frame_len,
                             enum kp_spool_bad *bad);

/*
 * Decodes a checked frame into *v (pointers into p). Headers go to *hdrs,
 * grown (kp_realloc) to *cap; hdrs NULL only validates. KP_OK or
 * KP_ERROR.
 */
int kp_spool_seg_decode(const uint8_t *p, size_t frame_len,
                        struct kp_spool_view *v, struct kp_header **hdrs,
                        size_t *cap);

/* Journal entry: the whole 64-bit ack word `word` of segment seg_id. */
void kp_spool_seg_ack_encode(uint8_t *out, uint64_t seg_id, uint32_t word,
                             uint64_t bits);
int kp_spool_seg_ack_decode(const uint8_t *p, uint64_t seg_id, uint32_t *word,
                            uint64_t *bits);

/* Result of scanning a segment file. */
struct kp_spool_scan {
    uint64_t first_seq;
    uint64_t seg_id;
    uint64_t records; /* intact records, from the header on */
    uint64_t end;     /* offset just after the last of them */
    uint64_t file_size;
    enum kp_spool_bad bad;
    bool reused;   /* the header says KP_SPOOL_HDR_REUSED */
    bool end_mark; /* stopped at the end mark of a reused file: the bytes
                    * after end are an earlier segment's, not damage */
};

/* Called for each intact frame during a scan; non-zero stops it. */
typedef int (*kp_spool_scan_fn)(void *arg, uint64_t seq, const uint8_t *frame,
                                size_t len);

/*
 * Reads a segment file from fd (pread, a bounded buffer) up to the first
 * damaged frame. The header must name first_seq == name_seq and be no
 * lower than min_seq. KP_OK with *out filled (damage is a result, not an
 * error), or KP_ERROR on a read error (errno).
 */
int kp_spool_seg_scan_fd(int fd, uint64_t name_seq, uint64_t min_seq,
                         struct kp_spool_scan *out, kp_spool_scan_fn fn,
                         void *arg);

/* Result of loading a journal. */
struct kp_spool_jscan {
    bool header_ok;   /* false: the whole journal was ignored */
    uint64_t entries; /* valid entries applied */
    uint64_t bad;     /* entries ignored: damaged or beyond the records */
    uint64_t tail;    /* bytes of a partial last entry */
    uint64_t file_size;
};

/*
 * ORs the journal in fd into bits (words = (rec_cnt + 63) / 64), keeping
 * only bits below rec_cnt. KP_OK, or KP_ERROR on a read error (errno).
 */
int kp_spool_seg_journal_load_fd(int fd, uint64_t first_seq, uint64_t seg_id,
                                 uint64_t rec_cnt, uint64_t *bits,
                                 struct kp_spool_jscan *out);

#endif
