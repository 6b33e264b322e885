/*
 * fuzz_spool.c - libFuzzer target for the disk spool's recovery readers:
 * the input as a segment file (scanned from a memfd, as kp_spool_open scans
 * a file at start), as an ack journal, and as one bare frame. Every record
 * a reader accepts must carry a CRC-32C that matches (recomputed here with
 * the table implementation), the seq due at its place, and a body that
 * decodes; no journal bit may land past the records; nothing may read
 * outside the input.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kp_crc32c.h"
#include "kp_spool_seg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_ctx {
    uint64_t next_seq;
    struct kp_header *hdrs; /* owned */
    size_t cap;
};

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* Aborts unless the frame is one a reader may return. */
static void fuzz_frame(struct fuzz_ctx *c, uint64_t seq, const uint8_t *f,
                       size_t len)
{
    struct kp_spool_view v;
    volatile uint8_t sink = 0;

    uint32_t crc = ((uint32_t)f[0] << 24) | ((uint32_t)f[1] << 16) |
                   ((uint32_t)f[2] << 8) | f[3];
    if (len < KP_SPOOL_FRAME_HDR || kp_crc32c_sw(0, f + 4, len - 4) != crc ||
        be64(f + 8) != seq ||
        kp_spool_seg_decode(f, len, &v, &c->hdrs, &c->cap) != KP_OK) {
        abort();
    }
    /* Touch every byte the view claims, so ASan checks the bounds. */
    for (size_t i = 0; i < v.msg.topic_len; i++) {
        sink ^= (uint8_t)v.msg.topic[i];
    }
    for (size_t i = 0; i < v.msg.key_len; i++) {
        sink ^= v.msg.key[i];
    }
    for (size_t i = 0; i < v.msg.value_len; i++) {
        sink ^= v.msg.value[i];
    }
    for (size_t h = 0; h < v.msg.header_cnt; h++) {
        for (size_t i = 0; i < v.msg.headers[h].name_len; i++) {
            sink ^= v.msg.headers[h].name[i];
        }
        for (size_t i = 0; i < v.msg.headers[h].value_len; i++) {
            sink ^= v.msg.headers[h].value[i];
        }
    }
    (void)sink;
}

static int fuzz_on_frame(void *arg, uint64_t seq, const uint8_t *f, size_t len)
{
    struct fuzz_ctx *c = arg;
    if (seq != c->next_seq) {
        abort();
    }
    fuzz_frame(c, seq, f, len);
    c->next_seq++;
    return 0;
}

static void fuzz_segment(int fd, const uint8_t *data, size_t size,
                         struct fuzz_ctx *c)
{
    struct kp_spool_scan sc;
    /* The header's own first_seq as the file name, so that a valid header
     * gets past the name check and the records are reached. */
    uint64_t name = size >= 16 ? be64(data + 8) : 1;

    c->next_seq = name;
    if (kp_spool_seg_scan_fd(fd, name, 1, &sc, fuzz_on_frame, c) != KP_OK) {
        abort(); /* a memfd does not fail to read */
    }
    if (sc.end > size || sc.file_size != size ||
        (sc.bad == KP_SPOOL_BAD_NONE && sc.records && sc.end != size &&
         !sc.end_mark) ||
        (sc.end_mark && (!sc.reused || sc.end + KP_SPOOL_END_MARK > size)) ||
        (sc.records && c->next_seq != name + sc.records)) {
        abort();
    }
}

static void fuzz_journal(int fd, const uint8_t *data, size_t size)
{
    struct kp_spool_jscan js;
    uint64_t first = size >= 16 ? be64(data + 8) : 1;
    uint64_t id = size >= 24 ? be64(data + 16) : 0;
    uint64_t rec_cnt = 1 + size % 3000, words = (rec_cnt + 63) / 64;
    uint64_t *bits = calloc((size_t)words, sizeof(uint64_t));

    if (!bits || kp_spool_seg_journal_load_fd(fd, first, id, rec_cnt, bits,
                                              &js) != KP_OK) {
        abort();
    }
    if (rec_cnt % 64 && (bits[words - 1] >> (rec_cnt % 64))) {
        abort(); /* a bit past the records */
    }
    free(bits);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_ctx c = {0};
    int fd = memfd_create("fuzz_spool", MFD_CLOEXEC);
    size_t flen;
    enum kp_spool_bad bad;

    if (fd < 0) {
        return 0;
    }
    for (size_t off = 0; off < size;) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0) {
            close(fd);
            return 0;
        }
        off += (size_t)n;
    }
    fuzz_segment(fd, data, size, &c);
    fuzz_journal(fd, data, size);
    /* The input as one frame, at whatever seq it claims. */
    if (size >= KP_SPOOL_FRAME_HDR &&
        kp_spool_seg_frame_check(data, size, be64(data + 8), KP_SPOOL_REC_LIMIT,
                                 &flen, &bad) == KP_OK) {
        fuzz_frame(&c, be64(data + 8), data, flen);
    }
    free(c.hdrs);
    close(fd);
    return 0;
}
