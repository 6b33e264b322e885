/*
 * kp_spool.c - the disk spool's store: segments, the per-segment ack
 * journal, recovery, reclaim, cursors and the periodic fdatasync. Record
 * and file layouts: kp_spool_seg.c; the fdatasync thread: kp_spool_sync.c.
 *
 * Directory (mode 0700, locked with flock while open):
 *
 *   00000000000000000001.seg   records 1..n   (sealed: never written again)
 *   00000000000000000001.ack   its journal    (absent: nothing acked)
 *   00000000000000004711.seg   the active segment of this run
 *   00000000000000004711.ack.tmp  a journal being rewritten (gone at open)
 *
 * Acknowledgements. Each segment has a bitmap in memory, one bit per
 * record, and a journal on disk: entries each carrying one 64-bit word of
 * that bitmap as it was when written (OR semantics). An ack sets a bit and
 * marks its word dirty; kp_spool_flush (every loop iteration) appends one
 * entry per dirty word. A journal that grew past twice its content is
 * rewritten to a temporary file and renamed over the old one. A segment
 * whose records are all acked is unlinked (segment first, journal second)
 * unless it is the active one, which goes when it is sealed.
 *
 * Memory does not grow with the data but with the records on disk: 1 bit
 * per record plus 1/64 bit of dirty map (and at most 4 bytes per dirty
 * word until the next flush). A 1 GiB spool of 100-byte messages (~7.5 M
 * records with framing) holds ~1 MB of bitmaps; the floor of a record's
 * size (~30 bytes) bounds the worst case to max_bytes / 240 bytes. Reads
 * go through buffers of 1 MiB (recovery) and 64 KiB (each cursor), grown
 * only to the largest record met.
 *
 * Crash consistency. Three rules make any prefix of the writes safe:
 *  1. A segment file is appended to only by the run that created it,
 *     strictly in seq order; a new run always starts a new segment, named by
 *     its first seq, with a fresh random seg_id. So a (segment, index) pair
 *     names one record forever, and a journal entry (which carries the
 *     seg_id in its CRC) can never apply to another record.
 *  2. A journal bit is set only for a record that was acked, and entries
 *     only add bits; recovery ignores bits past the records that survived.
 *     So journal damage or loss can only un-ack: duplicates, never loss.
 *  3. Recovery keeps exactly the intact prefix of each segment (see the
 *     "cut" rule below), and writes nothing that a second crash during
 *     recovery could not redo (truncate, unlink, rename).
 * Dying between any two writes then gives:
 *  - during a record write: a torn frame, cut (and counted) at the next
 *    start. Records are written before any journal entry of the same flush,
 *    and a record is acked only after Kafka (or the dead letter) had it, so
 *    a cut record was either delivered already or never acknowledged to
 *    anyone (the window of bytes read but not flushed, one iteration);
 *  - between a record write and the journal entry of its ack: the ack is
 *    lost, the record is sent again - a duplicate, counted as replayed;
 *  - during a journal append: a partial entry, ignored (duplicates);
 *  - during a journal rewrite: before the rename the old journal stands
 *    and the .tmp is removed at open; after it the new one is complete;
 *  - while sealing (new segment created, header not yet written): a file
 *    with a bad header and no records, removed at open;
 *  - during reclaim: the segment is gone and its journal is an orphan,
 *    removed at open (in the other order we would replay a whole acked
 *    segment);
 *  - during close of an empty spool: as reclaim, segment by segment.
 * Power loss: without fsync_ms the page cache may lose anything not yet
 * written back, in any order (a record may survive while an earlier one
 * does not, which the cut rule turns into losing both). With fsync_ms, the
 * helper thread fdatasyncs the written segments and journals and fsyncs
 * the directory after files were created or renamed; everything written
 * before the start of the last completed round (durable_seq) survives.
 * A journal renamed but not yet synced may come back empty on some file
 * systems: duplicates again, never loss.
 *
 * The cut rule: the first damaged frame in a segment (short, bad length,
 * CRC, seq or body) ends that segment; everything after it in the same file
 * is cut, and counted as one cut with its bytes. Reading past damage would
 * mean scanning for the next frame-shaped bytes, and record values are
 * client data: a writer can embed a well-formed frame (any topic, any
 * headers) in a value, and a resync would replay it as a record of its
 * own. In the newest segment, where a crash tears writes, only the tail is
 * affected. The next segment starts at its own header and is read as
 * usual.
 */
#include "kp_spool.h"

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_log.h"
#include "kp_spool_seg.h"
#include "kp_spool_sync.h"

#define KP_SPOOL_DEF_SEGMENT (64 << 20)
#define KP_SPOOL_MIN_SEGMENT 4096
#define KP_SPOOL_DEF_RECORD (2u << 20)
#define KP_SPOOL_DEF_WBUF (64u << 10)
/* Dirty words of one segment that write its journal without waiting for
 * the next flush (16 KiB of entries). */
#define KP_SPOOL_DIRTY_FLUSH 1024
/* A journal is rewritten once larger than this and twice its content. */
#define KP_SPOOL_COMPACT_MIN (64u << 10)
#define KP_SPOOL_READ_CHUNK (64u << 10)
#define KP_SPOOL_NAME_MAX 40

/* Kinds of names in the spool directory. */
enum kp_spool_fkind {
    KP_SPOOL_F_OTHER,
    KP_SPOOL_F_SEG, /* NNN.seg */
    KP_SPOOL_F_ACK, /* NNN.ack */
    KP_SPOOL_F_TMP, /* NNN.ack.tmp */
    KP_SPOOL_F_FREE, /* NNN.free: an acknowledged segment's file kept for
                      * reuse; removed at start */
    KP_SPOOL_F__COUNT
};
static const char *const kp_spool_fkind_ext[KP_SPOOL_F__COUNT] = {
    [KP_SPOOL_F_OTHER] = "",
    [KP_SPOOL_F_SEG] = ".seg",
    [KP_SPOOL_F_ACK] = ".ack",
    [KP_SPOOL_F_TMP] = ".ack.tmp",
    [KP_SPOOL_F_FREE] = ".free",
};

struct kp_spool_segment {
    uint64_t first_seq;
    uint64_t seg_id;
    uint64_t rec_cnt;    /* records: seqs first_seq .. first_seq+rec_cnt-1 */
    uint64_t acked_cnt;  /* bits set in acked */
    uint64_t *acked;     /* owned: 1 bit per record */
    size_t words_cap;    /* words allocated in acked */
    uint64_t nonzero;    /* words of acked that are not 0 */
    uint64_t *dirty_map; /* owned: 1 bit per word of acked: listed in dirty */
    uint32_t *dirty;     /* owned: words acked since their last entry */
    size_t dirty_cnt, dirty_cap;
    uint64_t size;     /* bytes, write buffer included for the active one */
    uint64_t floor;    /* a reused file's size when it was taken: the file
                        * holds max(size, floor) bytes (+ the end mark) */
    int fd;            /* owned: write fd while active, else -1 */
    int ack_fd;        /* owned: journal, -1 until one is written */
    uint64_t ack_size; /* journal bytes */
    bool ack_rewrite;  /* the journal must be rewritten, not appended to */
    bool sync_seg;     /* written since the last fdatasync round */
    bool sync_ack;
};

struct kp_spool {
    char *dir; /* owned */
    int dirfd; /* owned; holds the flock */
    int64_t max_bytes, segment_bytes;
    size_t max_record, write_buffer;
    int fsync_ms;
    struct ev_loop *loop; /* borrowed */
    void (*on_sync)(void *arg, uint64_t durable_seq);
    void *on_sync_arg; /* borrowed */

    struct kp_spool_segment **segs; /* owned, by first_seq; active last */
    size_t nseg, seg_cap;
    struct kp_spool_segment *active; /* borrowed from segs; NULL: none yet */
    uint64_t gen;                    /* bumped when segs changes */
    struct kp_spool_segment *hint;   /* borrowed: last found, if gen holds */
    uint64_t hint_gen;
    uint64_t next_seq, start_seq;
    uint64_t written;      /* bytes of the active segment on file */
    uint64_t written_seq;  /* last seq on file */
    struct kp_buf pending; /* owned: frames not yet written (active's) */
    int write_errno;       /* last write failed: appends refused */
    int ack_errno;         /* last journal write failed (acks in memory) */
    bool roll;             /* the active segment takes no more appends */
    bool acks_pending;     /* some segment has dirty words */
    bool closing;
    uint64_t bytes, backlog, id_ctr;
    /* The spare: one acknowledged segment's file, renamed NNN.free, which
     * the next roll takes instead of creating a file (spare_first 0: none).
     * Its bytes count in bytes: they are on disk. */
    uint64_t spare_first, spare_size;
    size_t cursors;
    struct kp_spool_cursor *cursor_list; /* borrowed: every cursor */
    struct kp_buf jbuf; /* owned: journal entries being written */
    struct kp_spool_stats st;
    struct kp_ratelimit rl_write, rl_ack, rl_sync;

    struct kp_spool_sync *sync; /* owned; NULL without fsync_ms */
    ev_timer sync_timer;
    int64_t last_sync_ms;
    uint64_t sync_seq; /* written_seq when the running round started */
    bool sync_wanted;  /* something was written since the last round */
    bool sync_partial; /* the running round lacks an fd (dup failed) */
    bool dir_dirty;    /* files created or renamed since */
    int *rolled;       /* owned: dups of sealed, unsynced segments */
    size_t nrolled, rolled_cap;
    int *job; /* owned: scratch for a round's fds */
    size_t job_cap;
};

struct kp_spool_cursor {
    struct kp_spool *s; /* borrowed */
    struct kp_spool_cursor *next; /* borrowed: the spool's cursor_list */
    uint64_t pos;       /* yields records with seq >= pos */
    uint64_t seg_first; /* segment being read; 0 = none, locate by pos */
    struct kp_spool_segment *seg; /* borrowed: it, while gen holds */
    uint64_t gen;
    int fd;            /* owned: read fd of that segment, -1 none */
    uint64_t off;      /* next frame's offset ... */
    uint64_t idx;      /* ... and index in the segment */
    struct kp_buf buf; /* owned: bytes [buf_off, buf_off + buf.len) */
    uint64_t buf_off;
    /* A place known without reading (a seek to the tail): record
     * mark_idx of segment mark_first starts at mark_off; 0: none. */
    uint64_t mark_first, mark_off, mark_idx;
    struct kp_header *hdrs; /* owned */
    size_t hdr_cap;
};

static void kp_spool_sync_kick(struct kp_spool *s);

/* ---- names, files, errors ---- */

static void kp_spool_name(char *out, uint64_t first, enum kp_spool_fkind k)
{
    snprintf(out, KP_SPOOL_NAME_MAX, "%020" PRIu64 "%s", first,
             kp_spool_fkind_ext[k]);
}

static enum kp_spool_fkind kp_spool_parse_name(const char *name,
                                               uint64_t *first)
{
    size_t len = strlen(name);
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return KP_SPOOL_F_OTHER;
        }
    }
    for (int k = KP_SPOOL_F_SEG; k < KP_SPOOL_F__COUNT; k++) {
        if (len == 20 + strlen(kp_spool_fkind_ext[k]) &&
            strcmp(name + 20, kp_spool_fkind_ext[k]) == 0) {
            *first = strtoull(name, NULL, 10);
            return *first ? (enum kp_spool_fkind)k : KP_SPOOL_F_OTHER;
        }
    }
    return KP_SPOOL_F_OTHER;
}

static int kp_spool_errf(char *err, size_t errlen, const char *fmt, ...)
    KP_PRINTF(3, 4);
static int kp_spool_errf(char *err, size_t errlen, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    kp_err("%s", msg);
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
    return KP_ERROR;
}

static const char *kp_spool_ftype(mode_t m)
{
    return S_ISFIFO(m)   ? "a FIFO"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISSOCK(m) ? "a socket"
           : S_ISDIR(m)  ? "a directory"
           : S_ISLNK(m)  ? "a symbolic link"
                         : "not a regular file";
}

/* Whether st is a regular file of ours that only we may write; else why. */
static bool kp_spool_file_ok(const struct stat *st, char *why, size_t n)
{
    if (!S_ISREG(st->st_mode)) {
        snprintf(why, n, "is %s, not a regular file",
                 kp_spool_ftype(st->st_mode));
    } else if (st->st_uid != geteuid()) {
        snprintf(why, n, "owned by uid %u, not %u", (unsigned)st->st_uid,
                 (unsigned)geteuid());
    } else if (st->st_mode & 022) {
        snprintf(why, n, "group or world writable (mode %04o)",
                 (unsigned)(st->st_mode & 07777));
    } else {
        return true;
    }
    return false;
}

/*
 * Opens a file of the spool directory without following a link or blocking
 * on a FIFO; an existing one is checked before it is opened (a device is
 * never opened) and again after. Returns the fd, or -1 with errno kept
 * (ENOENT: no such file; EINVAL: refused) and the reason in why.
 */
static int kp_spool_file_open(struct kp_spool *s, const char *name, int flags,
                              char *why, size_t n)
{
    struct stat st, st2;

    if (!(flags & O_CREAT)) {
        if (fstatat(s->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            snprintf(why, n, "%s", strerror(errno));
            return -1;
        }
        if (!kp_spool_file_ok(&st, why, n)) {
            errno = EINVAL;
            return -1;
        }
    }
    int fd = openat(s->dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK,
                    0600);
    if (fd < 0) {
        int e = errno;
        snprintf(why, n, "%s", e == ELOOP ? "is a symbolic link" : strerror(e));
        errno = e;
        return -1;
    }
    if (fstat(fd, &st2) != 0 || !kp_spool_file_ok(&st2, why, n) ||
        (!(flags & O_CREAT) &&
         (st2.st_ino != st.st_ino || st2.st_dev != st.st_dev))) {
        if (S_ISREG(st2.st_mode)) {
            snprintf(why, n, "replaced while being opened");
        }
        close(fd);
        errno = EINVAL;
        return -1;
    }
    return fd;
}

static void kp_spool_unlink(struct kp_spool *s, uint64_t first,
                            enum kp_spool_fkind k)
{
    char name[KP_SPOOL_NAME_MAX];
    kp_spool_name(name, first, k);
    if (unlinkat(s->dirfd, name, 0) != 0 && errno != ENOENT) {
        kp_warn("spool %s/%s: unlink: %s", s->dir, name, strerror(errno));
    }
}

/* pwrite of all n bytes; KP_OK or KP_ERROR (errno). */
static int kp_spool_pwrite(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            if (w == 0) {
                errno = EIO;
            }
            return KP_ERROR;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return KP_OK;
}

static uint64_t kp_spool_random_id(struct kp_spool *s)
{
    uint64_t id = 0;
    if (getrandom(&id, sizeof(id), GRND_NONBLOCK) != (ssize_t)sizeof(id)) {
        id = ((uint64_t)kp_mono_us() ^ ((uint64_t)getpid() << 40)) +
             ++s->id_ctr * UINT64_C(0x9e3779b97f4a7c15);
    }
    return id ? id : 1;
}

/* ---- segments in memory ---- */

static struct kp_spool_segment *kp_spool_seg_new(uint64_t first,
                                                 uint64_t seg_id)
{
    struct kp_spool_segment *seg = kp_calloc(1, sizeof(*seg));
    seg->first_seq = first;
    seg->seg_id = seg_id;
    seg->fd = -1;
    seg->ack_fd = -1;
    return seg;
}

/* Bytes seg's file takes on disk, as counted in s->bytes. */
static uint64_t kp_spool_seg_disk(const struct kp_spool_segment *seg)
{
    return KP_MAX(seg->size, seg->floor);
}

static void kp_spool_seg_free(struct kp_spool_segment *seg)
{
    if (seg->fd >= 0) {
        close(seg->fd);
    }
    if (seg->ack_fd >= 0) {
        close(seg->ack_fd);
    }
    free(seg->acked);
    free(seg->dirty_map);
    free(seg->dirty);
    free(seg);
}

/* Room in the bitmaps for n records. */
static void kp_spool_bits_grow(struct kp_spool_segment *seg, uint64_t n)
{
    size_t need = (size_t)((n + 63) / 64);
    if (need <= seg->words_cap) {
        return;
    }
    size_t cap = KP_MAX(KP_MAX(need, seg->words_cap * 2), (size_t)16);
    size_t map_old = (seg->words_cap + 63) / 64, map_new = (cap + 63) / 64;
    seg->acked = kp_realloc(seg->acked, cap * sizeof(uint64_t));
    memset(seg->acked + seg->words_cap, 0,
           (cap - seg->words_cap) * sizeof(uint64_t));
    seg->dirty_map = kp_realloc(seg->dirty_map, map_new * sizeof(uint64_t));
    memset(seg->dirty_map + map_old, 0, (map_new - map_old) * sizeof(uint64_t));
    seg->words_cap = cap;
}

static void kp_spool_seg_push(struct kp_spool *s, struct kp_spool_segment *seg)
{
    if (s->nseg == s->seg_cap) {
        s->seg_cap = s->seg_cap ? s->seg_cap * 2 : 16;
        s->segs = kp_realloc(s->segs, s->seg_cap * sizeof(*s->segs));
    }
    s->segs[s->nseg++] = seg;
    s->gen++;
}

/* The segment holding seq, or NULL. */
static struct kp_spool_segment *kp_spool_find(struct kp_spool *s, uint64_t seq)
{
    struct kp_spool_segment *h = s->hint;
    if (h && s->hint_gen == s->gen && seq >= h->first_seq &&
        seq - h->first_seq < h->rec_cnt) {
        return h;
    }
    size_t lo = 0, hi = s->nseg; /* last segment with first_seq <= seq */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->segs[mid]->first_seq <= seq) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if (s->nseg == 0 || s->segs[lo]->first_seq > seq ||
        seq - s->segs[lo]->first_seq >= s->segs[lo]->rec_cnt) {
        return NULL;
    }
    s->hint = s->segs[lo];
    s->hint_gen = s->gen;
    return s->hint;
}

static struct kp_spool_segment *kp_spool_find_first(struct kp_spool *s,
                                                    uint64_t first)
{
    for (size_t i = 0; i < s->nseg; i++) {
        if (s->segs[i]->first_seq == first) {
            return s->segs[i];
        }
    }
    return NULL;
}

/* ---- the spare file ----
 *
 * A new segment file costs the kernel more than the bytes written to it:
 * page-cache pages allocated and zeroed, delayed-allocation blocks
 * reserved, and, when the segment is acknowledged, every page invalidated
 * and freed by the unlink. At hundreds of MB/s through the spool that was
 * some 15% of the daemon's CPU (perf, `make bench` spool row); reusing
 * the file took about a tenth off its CPU per message. A reused file's
 * pages are still cached and its blocks allocated: writing over them is a
 * copy. So one acknowledged segment's file is kept, renamed NNN.free, and
 * the next roll gives it a new header and name. What that leaves in the
 * file after the new records, kp_spool_seg.c's end mark tells apart.
 */

static bool kp_spool_refused(const struct kp_spool *s);

static void kp_spool_spare_drop(struct kp_spool *s)
{
    if (s->spare_first) {
        kp_spool_unlink(s, s->spare_first, KP_SPOOL_F_FREE);
        s->bytes -= s->spare_size;
        s->spare_first = s->spare_size = 0;
    }
}

/* Whether seg's file (being reclaimed, its bytes already uncounted) is
 * kept as the spare: renamed, and counted again. Not while closing or
 * while the file system refuses writes, not an oversized file, and only
 * within the budget. */
static bool kp_spool_spare_keep(struct kp_spool *s,
                                const struct kp_spool_segment *seg)
{
    char from[KP_SPOOL_NAME_MAX], to[KP_SPOOL_NAME_MAX];
    uint64_t disk = kp_spool_seg_disk(seg) + KP_SPOOL_END_MARK;

    if (s->spare_first || s->closing || seg == s->active ||
        kp_spool_refused(s) || disk > (uint64_t)s->segment_bytes + 4096 ||
        s->bytes + disk > (uint64_t)s->max_bytes / 2) {
        return false;
    }
    kp_spool_name(from, seg->first_seq, KP_SPOOL_F_SEG);
    kp_spool_name(to, seg->first_seq, KP_SPOOL_F_FREE);
    if (renameat(s->dirfd, from, s->dirfd, to) != 0) {
        return false; /* unlinked instead */
    }
    s->spare_first = seg->first_seq;
    s->spare_size = disk;
    s->bytes += disk;
    s->dir_dirty = true;
    return true;
}

/* Opens the spare as segment first (header written, then renamed): its fd,
 * *floor its size; -1 when there is none or it fails (then it is gone). */
static int kp_spool_spare_take(struct kp_spool *s, uint64_t first,
                               uint64_t id, uint64_t *floor)
{
    char from[KP_SPOOL_NAME_MAX], to[KP_SPOOL_NAME_MAX], why[128];
    /* The header and an end mark: until the first write, the earlier
     * segment's frames follow the header. */
    uint8_t hdr[KP_SPOOL_HDR_LEN + KP_SPOOL_END_MARK] = {0};

    if (!s->spare_first) {
        return -1;
    }
    kp_spool_name(from, s->spare_first, KP_SPOOL_F_FREE);
    kp_spool_name(to, first, KP_SPOOL_F_SEG);
    int fd = kp_spool_file_open(s, from, O_RDWR, why, sizeof(why));
    kp_spool_seg_hdr_encode(hdr, false, first, id, KP_SPOOL_HDR_REUSED);
    /* The header first: a crash before the rename leaves a .free file,
     * removed at start, never a segment with an earlier one's header. */
    if (fd < 0 || kp_spool_pwrite(fd, hdr, sizeof(hdr), 0) != KP_OK ||
        renameat(s->dirfd, from, s->dirfd, to) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        kp_spool_spare_drop(s);
        return -1;
    }
    *floor = s->spare_size;
    s->bytes -= s->spare_size; /* counted again as the segment's */
    s->spare_first = s->spare_size = 0;
    return fd;
}

/* Unlinks a segment and then its journal, and forgets it. */
static void kp_spool_cursor_drop(struct kp_spool_cursor *c);
static void kp_spool_ack_errno_check(struct kp_spool *s);

static void kp_spool_reclaim(struct kp_spool *s, struct kp_spool_segment *seg)
{
    /* A cursor's read fd would keep the file's space (a full file system
     * waits for exactly that): they let it go, and find their place again
     * by position. */
    for (struct kp_spool_cursor *c = s->cursor_list; c; c = c->next) {
        if (c->seg_first == seg->first_seq) {
            kp_spool_cursor_drop(c);
        }
    }
    s->bytes -= kp_spool_seg_disk(seg) + seg->ack_size;
    if (!kp_spool_spare_keep(s, seg)) {
        kp_spool_unlink(s, seg->first_seq, KP_SPOOL_F_SEG);
    }
    kp_spool_unlink(s, seg->first_seq, KP_SPOOL_F_ACK);
    s->backlog -= seg->rec_cnt - seg->acked_cnt;
    for (size_t i = 0; i < s->nseg; i++) {
        if (s->segs[i] == seg) {
            memmove(s->segs + i, s->segs + i + 1,
                    (s->nseg - i - 1) * sizeof(*s->segs));
            s->nseg--;
            break;
        }
    }
    if (seg == s->active) {
        /* All of it was acknowledged, its unwritten tail too: nothing is
         * left to write (nor lost if it never is). */
        s->active = NULL;
        kp_buf_reset(&s->pending);
        s->written_seq = s->next_seq - 1;
        s->write_errno = 0;
    }
    s->gen++;
    s->st.reclaimed++;
    kp_spool_seg_free(seg);
    kp_spool_ack_errno_check(s); /* its acks may have been the failing ones */
}

/* Whether the file system refuses writes now (ENOSPC and the like). */
static bool kp_spool_refused(const struct kp_spool *s)
{
    return s->write_errno || s->ack_errno;
}

/* A journal write failed (ack_errno): once no segment has acks waiting
 * for their journal (written since, or the segment reclaimed), nothing is
 * refused any more. */
static void kp_spool_ack_errno_check(struct kp_spool *s)
{
    if (!s->ack_errno) {
        return;
    }
    for (size_t i = 0; i < s->nseg; i++) {
        if (s->segs[i]->dirty_cnt || s->segs[i]->ack_rewrite) {
            return;
        }
    }
    s->ack_errno = 0;
}

/* While writes fail, an active segment whose records are all acknowledged
 * (its unwritten tail included) is given back: its space is what the next
 * writes need, and nothing else would free it. */
static void kp_spool_release_done(struct kp_spool *s)
{
    struct kp_spool_segment *a = s->active;

    if (a && kp_spool_refused(s) && a->rec_cnt > 0 &&
        a->acked_cnt == a->rec_cnt) {
        kp_spool_reclaim(s, a);
    }
}

static void kp_spool_dirty(struct kp_spool *s, struct kp_spool_segment *seg,
                           size_t w)
{
    uint64_t m = UINT64_C(1) << (w % 64);
    if (seg->dirty_map[w / 64] & m) {
        return;
    }
    seg->dirty_map[w / 64] |= m;
    if (seg->dirty_cnt == seg->dirty_cap) {
        seg->dirty_cap = seg->dirty_cap ? seg->dirty_cap * 2 : 64;
        seg->dirty =
            kp_realloc(seg->dirty, seg->dirty_cap * sizeof(*seg->dirty));
    }
    seg->dirty[seg->dirty_cnt++] = (uint32_t)w;
    s->acks_pending = true;
}

static void kp_spool_undirty(struct kp_spool_segment *seg)
{
    for (size_t i = 0; i < seg->dirty_cnt; i++) {
        seg->dirty_map[seg->dirty[i] / 64] &=
            ~(UINT64_C(1) << (seg->dirty[i] % 64));
    }
    seg->dirty_cnt = 0;
}

/* ---- the journal ---- */

/* Writes the header and one entry per non-zero word to fd; *size set. */
static int kp_spool_journal_fill(struct kp_spool *s,
                                 struct kp_spool_segment *seg, int fd,
                                 uint64_t *size)
{
    size_t words = (size_t)((seg->rec_cnt + 63) / 64);
    kp_buf_reset(&s->jbuf);
    kp_spool_seg_hdr_encode(kp_buf_reserve(&s->jbuf, KP_SPOOL_HDR_LEN), true,
                            seg->first_seq, seg->seg_id, 0);
    s->jbuf.len = KP_SPOOL_HDR_LEN;
    *size = 0;
    for (size_t w = 0; w <= words; w++) {
        if (s->jbuf.len >= KP_SPOOL_COMPACT_MIN || w == words) {
            if (kp_spool_pwrite(fd, s->jbuf.data, s->jbuf.len, *size) !=
                KP_OK) {
                return KP_ERROR;
            }
            *size += s->jbuf.len;
            kp_buf_reset(&s->jbuf);
        }
        if (w < words && seg->acked[w]) {
            kp_spool_seg_ack_encode(kp_buf_reserve(&s->jbuf, KP_SPOOL_ACK_LEN),
                                    seg->seg_id, (uint32_t)w, seg->acked[w]);
            s->jbuf.len += KP_SPOOL_ACK_LEN;
        }
    }
    return KP_OK;
}

/* Replaces the journal by one entry per non-zero word (tmp + rename). */
static int kp_spool_journal_rewrite(struct kp_spool *s,
                                    struct kp_spool_segment *seg)
{
    char tmp[KP_SPOOL_NAME_MAX], name[KP_SPOOL_NAME_MAX], why[128];
    uint64_t size;

    kp_spool_name(tmp, seg->first_seq, KP_SPOOL_F_TMP);
    kp_spool_name(name, seg->first_seq, KP_SPOOL_F_ACK);
    unlinkat(s->dirfd, tmp, 0);
    int fd =
        kp_spool_file_open(s, tmp, O_RDWR | O_CREAT | O_EXCL, why, sizeof(why));
    if (fd < 0) {
        int e = errno;
        kp_log_rl(&s->rl_ack, KP_LOG_ERROR, "spool %s/%s: %s", s->dir, tmp,
                  why);
        errno = e;
        return KP_ERROR;
    }
    if (kp_spool_journal_fill(s, seg, fd, &size) != KP_OK ||
        renameat(s->dirfd, tmp, s->dirfd, name) != 0) {
        int e = errno;
        close(fd);
        unlinkat(s->dirfd, tmp, 0);
        kp_log_rl(&s->rl_ack, KP_LOG_ERROR,
                  "spool %s/%s: write: %s (acks kept in memory, retried)",
                  s->dir, name, strerror(e));
        s->st.write_errors++;
        s->ack_errno = e;
        errno = e;
        return KP_ERROR;
    }
    if (seg->ack_fd >= 0) {
        close(seg->ack_fd);
    }
    s->bytes += size - seg->ack_size;
    seg->ack_fd = fd;
    seg->ack_size = size;
    seg->ack_rewrite = false;
    kp_spool_undirty(seg);
    kp_spool_ack_errno_check(s);
    seg->sync_ack = true;
    s->dir_dirty = true;
    kp_spool_sync_kick(s);
    return KP_OK;
}

/* Appends one entry per dirty word (or rewrites the journal). */
static int kp_spool_journal_write(struct kp_spool *s,
                                  struct kp_spool_segment *seg)
{
    if (!seg->dirty_cnt && !seg->ack_rewrite) {
        return KP_OK;
    }
    uint64_t content = KP_SPOOL_HDR_LEN + seg->nonzero * KP_SPOOL_ACK_LEN;
    if (seg->ack_fd < 0 || seg->ack_rewrite ||
        (seg->ack_size > KP_SPOOL_COMPACT_MIN && seg->ack_size > 2 * content)) {
        return kp_spool_journal_rewrite(s, seg);
    }
    kp_buf_reset(&s->jbuf);
    for (size_t i = 0; i < seg->dirty_cnt; i++) {
        uint32_t w = seg->dirty[i];
        kp_spool_seg_ack_encode(kp_buf_reserve(&s->jbuf, KP_SPOOL_ACK_LEN),
                                seg->seg_id, w, seg->acked[w]);
        s->jbuf.len += KP_SPOOL_ACK_LEN;
    }
    if (kp_spool_pwrite(seg->ack_fd, s->jbuf.data, s->jbuf.len,
                        seg->ack_size) != KP_OK) {
        int e = errno;
        /* A partial entry left behind would misalign the next ones. */
        if (ftruncate(seg->ack_fd, (off_t)seg->ack_size) != 0) {
            seg->ack_rewrite = true;
        }
        kp_log_rl(&s->rl_ack, KP_LOG_ERROR,
                  "spool %s/%020" PRIu64 ".ack: write: %s (acks kept in "
                  "memory, retried)",
                  s->dir, seg->first_seq, strerror(e));
        s->st.write_errors++;
        s->ack_errno = e;
        errno = e;
        return KP_ERROR;
    }
    seg->ack_size += s->jbuf.len;
    s->bytes += s->jbuf.len;
    kp_spool_undirty(seg);
    kp_spool_ack_errno_check(s);
    seg->sync_ack = true;
    kp_spool_sync_kick(s);
    return KP_OK;
}

/* ---- recovery ---- */

struct kp_spool_names {
    uint64_t *v[KP_SPOOL_F__COUNT]; /* owned: numbers per kind */
    size_t n[KP_SPOOL_F__COUNT], cap[KP_SPOOL_F__COUNT];
};

static int kp_spool_u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void kp_spool_names_add(struct kp_spool_names *nm, enum kp_spool_fkind k,
                               uint64_t first)
{
    if (nm->n[k] == nm->cap[k]) {
        nm->cap[k] = nm->cap[k] ? nm->cap[k] * 2 : 64;
        nm->v[k] = kp_realloc(nm->v[k], nm->cap[k] * sizeof(uint64_t));
    }
    nm->v[k][nm->n[k]++] = first;
}

/* Lists the directory: segments and journals sorted; .tmp removed. */
static int kp_spool_list(struct kp_spool *s, struct kp_spool_names *nm,
                         struct kp_spool_recovery *rep, char *err,
                         size_t errlen)
{
    int fd = dup(s->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *e;

    if (!d) {
        if (fd >= 0) {
            close(fd);
        }
        return kp_spool_errf(err, errlen, "spool dir %s: %s", s->dir,
                             strerror(errno));
    }
    rewinddir(d);
    while ((e = readdir(d)) != NULL) {
        uint64_t first = 0;
        if (e->d_name[0] == '.') {
            continue;
        }
        enum kp_spool_fkind k = kp_spool_parse_name(e->d_name, &first);
        if (k == KP_SPOOL_F_TMP || k == KP_SPOOL_F_FREE) {
            unlinkat(s->dirfd, e->d_name, 0);
            rep->removed++;
        } else if (k == KP_SPOOL_F_OTHER) {
            kp_warn("spool %s: ignoring %s (not a spool file)", s->dir,
                    e->d_name);
        } else {
            kp_spool_names_add(nm, k, first);
        }
    }
    closedir(d);
    for (int k = 0; k < KP_SPOOL_F__COUNT; k++) {
        if (nm->n[k]) {
            qsort(nm->v[k], nm->n[k], sizeof(uint64_t), kp_spool_u64_cmp);
        }
    }
    return KP_OK;
}

/* Loads the journal of a recovered segment, if any. */
static int kp_spool_recover_acks(struct kp_spool *s,
                                 struct kp_spool_segment *seg,
                                 struct kp_spool_recovery *rep, char *err,
                                 size_t errlen)
{
    char name[KP_SPOOL_NAME_MAX], why[128];
    struct kp_spool_jscan js;

    kp_spool_name(name, seg->first_seq, KP_SPOOL_F_ACK);
    int fd = kp_spool_file_open(s, name, O_RDWR, why, sizeof(why));
    if (fd < 0) {
        return errno == ENOENT ? KP_OK
                               : kp_spool_errf(err, errlen, "spool %s/%s: %s",
                                               s->dir, name, why);
    }
    if (kp_spool_seg_journal_load_fd(fd, seg->first_seq, seg->seg_id,
                                     seg->rec_cnt, seg->acked, &js) != KP_OK) {
        close(fd);
        return kp_spool_errf(err, errlen, "spool %s/%s: read: %s", s->dir, name,
                             strerror(errno));
    }
    seg->ack_fd = fd;
    seg->ack_size = js.file_size;
    for (uint64_t w = 0; w < (seg->rec_cnt + 63) / 64; w++) {
        seg->acked_cnt += (uint64_t)__builtin_popcountll(seg->acked[w]);
        seg->nonzero += seg->acked[w] != 0;
    }
    if (!js.header_ok || js.bad || js.tail) {
        rep->bad_acks += js.bad + (js.header_ok ? 0 : 1);
        kp_warn("spool %s/%s: %s%" PRIu64 " damaged entries, %" PRIu64
                " bytes of a partial one ignored (those records will be "
                "sent again)",
                s->dir, name, js.header_ok ? "" : "bad header; ", js.bad,
                js.tail);
        seg->ack_rewrite = true;
    }
    return KP_OK;
}

static void kp_spool_report_cut(struct kp_spool *s, uint64_t first,
                                const struct kp_spool_scan *sc,
                                struct kp_spool_recovery *rep)
{
    rep->torn++;
    rep->torn_bytes += sc->file_size - sc->end;
    kp_warn("spool %s/%020" PRIu64 ".seg: %s at offset %" PRIu64 ": %" PRIu64
            " bytes cut after %" PRIu64 " intact records",
            s->dir, first, kp_spool_bad_names[sc->bad], sc->end,
            sc->file_size - sc->end, sc->records);
}

/* Recovers one segment file: scan, cut a damaged tail, load the journal. */
static int kp_spool_recover_seg(struct kp_spool *s, uint64_t first,
                                uint64_t min_seq, struct kp_spool_recovery *rep,
                                char *err, size_t errlen)
{
    char name[KP_SPOOL_NAME_MAX], why[128];
    struct kp_spool_scan sc;

    kp_spool_name(name, first, KP_SPOOL_F_SEG);
    int fd = kp_spool_file_open(s, name, O_RDWR, why, sizeof(why));
    if (fd < 0) {
        return kp_spool_errf(err, errlen, "spool %s/%s: %s", s->dir, name, why);
    }
    if (kp_spool_seg_scan_fd(fd, first, min_seq, &sc, NULL, NULL) != KP_OK) {
        int e = errno;
        close(fd);
        return kp_spool_errf(err, errlen, "spool %s/%s: read: %s", s->dir, name,
                             strerror(e));
    }
    s->next_seq = KP_MAX(s->next_seq, first + sc.records);
    if (sc.bad != KP_SPOOL_BAD_NONE) {
        kp_spool_report_cut(s, first, &sc, rep);
        if (sc.records && ftruncate(fd, (off_t)sc.end) != 0) {
            kp_warn("spool %s/%s: truncate: %s (cut again at each start)",
                    s->dir, name, strerror(errno));
        }
    }
    uint64_t floor = 0;
    if (sc.end_mark && sc.records && ftruncate(fd, (off_t)sc.end) != 0) {
        floor = sc.file_size; /* an earlier segment's bytes stay after it */
    }
    close(fd);
    if (sc.records == 0) {
        kp_spool_unlink(s, first, KP_SPOOL_F_SEG);
        kp_spool_unlink(s, first, KP_SPOOL_F_ACK);
        rep->removed++;
        return KP_OK;
    }
    struct kp_spool_segment *seg = kp_spool_seg_new(first, sc.seg_id);
    seg->rec_cnt = sc.records;
    seg->size = sc.end;
    seg->floor = floor;
    kp_spool_bits_grow(seg, seg->rec_cnt);
    kp_spool_seg_push(s, seg);
    s->bytes += kp_spool_seg_disk(seg);
    return kp_spool_recover_acks(s, seg, rep, err, errlen);
}

/* After all segments: orphan journals, reclaim, journal rewrites, report. */
static void kp_spool_recover_finish(struct kp_spool *s,
                                    const struct kp_spool_names *nm,
                                    struct kp_spool_recovery *rep)
{
    for (size_t i = 0; i < nm->n[KP_SPOOL_F_ACK]; i++) {
        if (!kp_spool_find_first(s, nm->v[KP_SPOOL_F_ACK][i])) {
            kp_spool_unlink(s, nm->v[KP_SPOOL_F_ACK][i], KP_SPOOL_F_ACK);
            rep->removed++;
        }
    }
    for (size_t i = 0; i < s->nseg;) {
        struct kp_spool_segment *seg = s->segs[i];
        s->bytes += seg->ack_size;
        s->backlog += seg->rec_cnt - seg->acked_cnt;
        if (seg->acked_cnt == seg->rec_cnt) {
            kp_spool_reclaim(s, seg);
            s->st.reclaimed--; /* not this run's work */
            rep->removed++;
            continue;
        }
        if (seg->ack_rewrite) {
            kp_spool_journal_rewrite(s, seg); /* else retried at a flush */
        }
        rep->records += seg->rec_cnt;
        if (!rep->first_seq) {
            uint64_t w = 0;
            while (seg->acked[w] == UINT64_MAX) {
                w++;
            }
            rep->first_seq = seg->first_seq + w * 64 +
                             (uint64_t)__builtin_ctzll(~seg->acked[w]);
        }
        i++;
    }
    rep->segments = s->nseg;
    rep->backlog = s->backlog;
    rep->bytes = s->bytes;
    rep->next_seq = s->next_seq;
}

static int kp_spool_recover(struct kp_spool *s, struct kp_spool_recovery *rep,
                            char *err, size_t errlen)
{
    struct kp_spool_names nm;
    int rc;

    memset(&nm, 0, sizeof(nm));
    rc = kp_spool_list(s, &nm, rep, err, errlen);
    for (size_t i = 0; rc == KP_OK && i < nm.n[KP_SPOOL_F_SEG]; i++) {
        uint64_t min_seq = 1;
        if (s->nseg) {
            struct kp_spool_segment *last = s->segs[s->nseg - 1];
            min_seq = last->first_seq + last->rec_cnt;
        }
        rc = kp_spool_recover_seg(s, nm.v[KP_SPOOL_F_SEG][i], min_seq, rep, err,
                                  errlen);
    }
    if (rc == KP_OK) {
        kp_spool_recover_finish(s, &nm, rep);
    }
    for (int k = 0; k < KP_SPOOL_F__COUNT; k++) {
        free(nm.v[k]);
    }
    return rc;
}

/* ---- open, close ---- */

/* A directory just created survives a power loss only once its parent
 * is synced; at start, blocking is fine. */
static void kp_spool_sync_parent(struct kp_spool *s)
{
    char *parent = kp_strdup(s->dir), *slash = strrchr(parent, '/');
    if (slash) {
        *(slash == parent ? slash + 1 : slash) = '\0';
    }
    int fd = open(slash ? parent : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        kp_warn("spool dir %s: fsync of its parent: %s", s->dir,
                strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
    free(parent);
}

static int kp_spool_dir_open(struct kp_spool *s, char *err, size_t errlen)
{
    struct stat st;

    if (mkdir(s->dir, 0700) == 0) {
        if (s->fsync_ms >= 0) {
            kp_spool_sync_parent(s);
        }
    } else if (errno != EEXIST) {
        return kp_spool_errf(err, errlen, "spool dir %s: mkdir: %s", s->dir,
                             strerror(errno));
    }
    s->dirfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dirfd < 0 || fstat(s->dirfd, &st) != 0) {
        return kp_spool_errf(err, errlen, "spool dir %s: %s", s->dir,
                             strerror(errno));
    }
    if (st.st_uid != geteuid()) {
        return kp_spool_errf(err, errlen,
                             "spool dir %s: owned by uid %u, not %u", s->dir,
                             (unsigned)st.st_uid, (unsigned)geteuid());
    }
    if (st.st_mode & 022) {
        return kp_spool_errf(err, errlen,
                             "spool dir %s: group or world writable (mode "
                             "%04o)",
                             s->dir, (unsigned)(st.st_mode & 07777));
    }
    if (flock(s->dirfd, LOCK_EX | LOCK_NB) != 0) {
        return kp_spool_errf(err, errlen, "spool dir %s: %s", s->dir,
                             errno == EWOULDBLOCK ? "in use by another process"
                                                  : strerror(errno));
    }
    return KP_OK;
}

static void kp_spool_on_sync_timer(struct ev_loop *loop, ev_timer *w,
                                   int revents);
static void kp_spool_on_sync_done(void *arg, int err, int64_t us);

static int kp_spool_opts_set(struct kp_spool *s, const struct kp_spool_opts *o,
                             char *err, size_t errlen)
{
    if (o->max_bytes <= 0 || (o->fsync_ms >= 0 && !o->loop) ||
        o->max_record > KP_SPOOL_REC_LIMIT) {
        return kp_spool_errf(err, errlen,
                             "spool %s: invalid options (max_bytes, "
                             "max_record, or fsync_ms without a loop)",
                             s->dir);
    }
    s->max_bytes = o->max_bytes;
    s->segment_bytes =
        o->segment_bytes ? o->segment_bytes : KP_SPOOL_DEF_SEGMENT;
    s->segment_bytes = KP_MIN(s->segment_bytes,
                              KP_MAX(o->max_bytes / 4, KP_SPOOL_MIN_SEGMENT));
    s->max_record = o->max_record ? o->max_record : KP_SPOOL_DEF_RECORD;
    s->write_buffer = o->write_buffer ? o->write_buffer : KP_SPOOL_DEF_WBUF;
    s->fsync_ms = o->fsync_ms;
    s->loop = o->loop;
    s->on_sync = o->on_sync;
    s->on_sync_arg = o->on_sync_arg;
    if (s->fsync_ms >= 0) {
        s->sync =
            kp_spool_sync_create(s->loop, o->sync_fn, kp_spool_on_sync_done, s);
        if (!s->sync) {
            return kp_spool_errf(err, errlen, "spool %s: fsync thread: %s",
                                 s->dir, strerror(errno));
        }
        ev_timer_init(&s->sync_timer, kp_spool_on_sync_timer, 0., 0.);
        s->sync_timer.data = s;
    }
    return KP_OK;
}

static void kp_spool_free(struct kp_spool *s)
{
    kp_assert(s->cursors == 0);
    if (s->sync) {
        ev_timer_stop(s->loop, &s->sync_timer);
        kp_spool_sync_destroy(s->sync);
    }
    for (size_t i = 0; i < s->nseg; i++) {
        kp_spool_seg_free(s->segs[i]);
    }
    for (size_t i = 0; i < s->nrolled; i++) {
        close(s->rolled[i]);
    }
    if (s->dirfd >= 0) {
        close(s->dirfd);
    }
    kp_buf_deinit(&s->pending);
    kp_buf_deinit(&s->jbuf);
    free(s->segs);
    free(s->rolled);
    free(s->job);
    free(s->dir);
    free(s);
}

struct kp_spool *kp_spool_open(const char *dir,
                               const struct kp_spool_opts *opts,
                               struct kp_spool_recovery *report, char *err,
                               size_t errlen)
{
    struct kp_spool *s = kp_calloc(1, sizeof(*s));
    struct kp_spool_recovery rep;

    memset(&rep, 0, sizeof(rep));
    s->dir = kp_strdup(dir);
    s->dirfd = -1;
    s->next_seq = 1;
    kp_buf_init(&s->pending, 0);
    kp_buf_init(&s->jbuf, 0);
    if (kp_spool_opts_set(s, opts, err, errlen) != KP_OK ||
        kp_spool_dir_open(s, err, errlen) != KP_OK ||
        kp_spool_recover(s, &rep, err, errlen) != KP_OK) {
        kp_spool_free(s);
        return NULL;
    }
    s->start_seq = s->written_seq = s->next_seq;
    s->written_seq--;
    s->st.torn = rep.torn;
    s->st.torn_bytes = rep.torn_bytes;
    if (report) {
        *report = rep;
    }
    kp_info(
        "spool %s: %" PRIu64 " segments, %" PRIu64 " messages to replay, "
        "%" PRIu64 " bytes; %" PRIu64 " damaged tails cut (%" PRIu64 " bytes)",
        s->dir, rep.segments, rep.backlog, rep.bytes, rep.torn, rep.torn_bytes);
    return s;
}

/* ---- appending ---- */

/* Writes the buffered frames of the active segment. */
static int kp_spool_write_pending(struct kp_spool *s)
{
    struct kp_spool_segment *a = s->active;

    if (!s->pending.len) {
        return KP_OK;
    }
    size_t n = s->pending.len;
    if (a->floor) {
        /* The end mark, after the frames; the next write starts on it. */
        memset(kp_buf_reserve(&s->pending, KP_SPOOL_END_MARK), 0,
               KP_SPOOL_END_MARK);
        n += KP_SPOOL_END_MARK;
    }
    if (kp_spool_pwrite(a->fd, s->pending.data, n, s->written) != KP_OK) {
        int e = errno;
        /* Tidy only: the retry rewrites from the same offset, and a crash
         * meanwhile leaves a tail that recovery cuts. */
        if (ftruncate(a->fd, (off_t)s->written) != 0) {
            e = e ? e : EIO;
        }
        s->write_errno = e;
        s->st.write_errors++;
        kp_spool_spare_drop(s); /* its space, on a full file system */
        kp_log_rl(&s->rl_write, KP_LOG_ERROR,
                  "spool %s/%020" PRIu64 ".seg: write: %s (%zu bytes held "
                  "in memory, retried; writers wait)",
                  s->dir, a->first_seq, strerror(e), s->pending.len);
        errno = e;
        return KP_ERROR;
    }
    s->written += s->pending.len;
    s->written_seq = s->next_seq - 1;
    kp_buf_reset(&s->pending);
    if (s->write_errno) {
        kp_info("spool %s: writes succeed again", s->dir);
        s->write_errno = 0;
    }
    a->sync_seg = true;
    kp_spool_sync_kick(s);
    return KP_OK;
}

/* Closes the active segment for good. */
static void kp_spool_seal(struct kp_spool *s)
{
    struct kp_spool_segment *a = s->active;

    s->active = NULL;
    if (s->sync && a->sync_seg) {
        /* Its fd goes to the next fdatasync round, which closes it. */
        if (s->nrolled == s->rolled_cap) {
            s->rolled_cap = s->rolled_cap ? s->rolled_cap * 2 : 8;
            s->rolled =
                kp_realloc(s->rolled, s->rolled_cap * sizeof(*s->rolled));
        }
        s->rolled[s->nrolled++] = a->fd;
    } else {
        close(a->fd);
    }
    a->fd = -1;
    if (a->acked_cnt == a->rec_cnt) {
        kp_spool_reclaim(s, a);
    }
}

/* Makes fd, its header written, the active segment; floor: see there. */
static int kp_spool_roll_to(struct kp_spool *s, int fd, uint64_t id,
                            uint64_t floor)
{
    struct kp_spool_segment *seg = kp_spool_seg_new(s->next_seq, id);
    seg->fd = fd;
    seg->size = KP_SPOOL_HDR_LEN;
    seg->floor = floor;
    seg->sync_seg = true;
    kp_spool_seg_push(s, seg);
    s->active = seg;
    s->roll = false;
    s->written = KP_SPOOL_HDR_LEN;
    s->bytes += kp_spool_seg_disk(seg);
    s->dir_dirty = true;
    kp_spool_sync_kick(s);
    return KP_OK;
}

/* Seals the active segment (its buffer written first) and starts one. */
static int kp_spool_roll(struct kp_spool *s)
{
    char name[KP_SPOOL_NAME_MAX], why[128];
    uint8_t hdr[KP_SPOOL_HDR_LEN];

    if (s->active) {
        if (kp_spool_write_pending(s) != KP_OK) {
            return KP_ERROR;
        }
        kp_spool_seal(s);
    }
    uint64_t id = kp_spool_random_id(s), floor = 0;
    int fd = kp_spool_spare_take(s, s->next_seq, id, &floor);
    if (fd >= 0) {
        return kp_spool_roll_to(s, fd, id, floor);
    }
    kp_spool_name(name, s->next_seq, KP_SPOOL_F_SEG);
    fd = kp_spool_file_open(s, name, O_RDWR | O_CREAT | O_EXCL, why,
                            sizeof(why));
    kp_spool_seg_hdr_encode(hdr, false, s->next_seq, id, 0);
    if (fd < 0 || kp_spool_pwrite(fd, hdr, sizeof(hdr), 0) != KP_OK) {
        int e = errno;
        if (fd >= 0) {
            snprintf(why, sizeof(why), "%s", strerror(e));
            close(fd);
            unlinkat(s->dirfd, name, 0);
        }
        s->st.write_errors++;
        kp_log_rl(&s->rl_write, KP_LOG_ERROR,
                  "spool %s/%s: create: %s (writers wait)", s->dir, name, why);
        errno = e;
        return KP_ERROR;
    }
    return kp_spool_roll_to(s, fd, id, 0);
}

/* Rolls when needed and checks the budget for a frame of flen bytes. A
 * fully acked active segment is replaced when that makes room. */
static int kp_spool_make_room(struct kp_spool *s, size_t flen)
{
    struct kp_spool_segment *a = s->active;
    bool done = a && a->rec_cnt > 0 && a->acked_cnt == a->rec_cnt;
    /* A full file system (ENOSPC) is over the budget too: a segment whose
     * records are all acknowledged is then given back at once. */
    bool over = s->bytes + flen > (uint64_t)s->max_bytes ||
                kp_spool_refused(s);
    bool roll = !a || s->roll || (done && over) ||
                (a->rec_cnt > 0 && a->size + flen > (uint64_t)s->segment_bytes);
    uint64_t after = s->bytes + flen + (roll ? KP_SPOOL_HDR_LEN : 0);

    if (roll && done) {
        after -= kp_spool_seg_disk(a) + a->ack_size;
    }
    if (after > (uint64_t)s->max_bytes && s->spare_first) {
        after -= s->spare_size;
        kp_spool_spare_drop(s);
    }
    if (after > (uint64_t)s->max_bytes) {
        s->st.full++;
        return KP_AGAIN;
    }
    return roll ? kp_spool_roll(s) : KP_OK;
}

size_t kp_spool_rec_size(const struct kp_spool_rec *rec)
{
    return kp_spool_seg_frame_size(rec);
}

int64_t kp_spool_room(const struct kp_spool *s)
{
    const struct kp_spool_segment *a = s->active;
    int64_t room = s->max_bytes - (int64_t)s->bytes;

    /* A fully acknowledged active segment is given back by the append
     * that needs its space (kp_spool_make_room): it is room. Nothing else
     * would free it while writers wait. */
    if (a && a->rec_cnt > 0 && a->acked_cnt == a->rec_cnt) {
        room += (int64_t)(kp_spool_seg_disk(a) + a->ack_size);
    }
    return room + (int64_t)s->spare_size; /* dropped when needed */
}

int64_t kp_spool_max_bytes(const struct kp_spool *s)
{
    return s->max_bytes;
}

size_t kp_spool_max_record(const struct kp_spool *s)
{
    return s->max_record;
}

uint64_t kp_spool_written_seq(const struct kp_spool *s)
{
    return s->written_seq;
}

/* Takes back the record just appended, whose write failed. */
static void kp_spool_unappend(struct kp_spool *s, size_t flen)
{
    struct kp_spool_segment *a = s->active;
    uint64_t before = kp_spool_seg_disk(a);
    s->pending.len -= flen;
    a->rec_cnt--;
    a->size -= flen;
    s->bytes -= before - kp_spool_seg_disk(a);
    s->backlog--;
    s->next_seq--;
    s->st.appended--;
}

int kp_spool_append(struct kp_spool *s, const struct kp_spool_rec *rec,
                    uint64_t *seq)
{
    struct kp_spool_rec r = *rec;
    size_t flen = kp_spool_seg_frame_size(&r);

    if (r.msg.timestamp < 0) {
        r.msg.timestamp = kp_wall_ms();
    }
    if (flen - KP_SPOOL_FRAME_HDR > s->max_record ||
        flen + KP_SPOOL_HDR_LEN > (uint64_t)s->max_bytes) {
        errno = EMSGSIZE;
        return KP_ERROR;
    }
    kp_spool_release_done(s);
    if (s->write_errno && kp_spool_write_pending(s) != KP_OK) {
        return KP_ERROR;
    }
    int rc = kp_spool_make_room(s, flen);
    if (rc != KP_OK) {
        return rc;
    }
    struct kp_spool_segment *a = s->active;
    kp_spool_bits_grow(a, a->rec_cnt + 1);
    *seq = s->next_seq;
    kp_spool_seg_encode_sized(&s->pending, s->next_seq, &r, flen);
    uint64_t before = kp_spool_seg_disk(a);
    a->rec_cnt++;
    a->size += flen;
    s->bytes += kp_spool_seg_disk(a) - before; /* 0 within a reused file */
    s->backlog++;
    s->next_seq++;
    s->st.appended++;
    if (s->pending.len >= s->write_buffer &&
        kp_spool_write_pending(s) != KP_OK) {
        int e = errno;
        kp_spool_unappend(s, flen);
        errno = e;
        return KP_ERROR;
    }
    return KP_OK;
}

/* ---- acknowledging ---- */

int kp_spool_ack(struct kp_spool *s, uint64_t seq)
{
    struct kp_spool_segment *seg = kp_spool_find(s, seq);

    if (!seg) {
        kp_log_rl(&s->rl_ack, KP_LOG_WARNING,
                  "spool %s: ack of seq %" PRIu64 ", which it does not hold",
                  s->dir, seq);
        return KP_ERROR;
    }
    uint64_t idx = seq - seg->first_seq;
    size_t w = (size_t)(idx / 64);
    uint64_t bit = UINT64_C(1) << (idx % 64);
    if (seg->acked[w] & bit) {
        return KP_OK;
    }
    seg->nonzero += seg->acked[w] == 0;
    seg->acked[w] |= bit;
    seg->acked_cnt++;
    s->backlog--;
    s->st.acked++;
    if (seg->acked_cnt == seg->rec_cnt &&
        (seg != s->active || kp_spool_refused(s))) {
        /* The active one too when writes fail (a full file system):
         * nothing of it is needed any more, its unwritten tail included,
         * and its space is what lets the next segment be written. */
        kp_spool_reclaim(s, seg);
        return KP_OK;
    }
    kp_spool_dirty(s, seg, w);
    if (seg->dirty_cnt >= KP_SPOOL_DIRTY_FLUSH) {
        kp_spool_journal_write(s, seg); /* on failure retried by a flush */
    }
    return KP_OK;
}

/* Sets the bits [idx, idx + n) of seg's bitmap, a word at a time;
 * returns how many were not set. */
static uint64_t kp_spool_ack_bits(struct kp_spool *s,
                                  struct kp_spool_segment *seg, uint64_t idx,
                                  uint64_t n)
{
    uint64_t end = idx + n, added = 0;

    while (idx < end) {
        size_t w = (size_t)(idx / 64);
        unsigned lo = (unsigned)(idx % 64);
        uint64_t cnt = KP_MIN(64 - lo, end - idx);
        uint64_t mask = (cnt == 64 ? ~UINT64_C(0)
                                   : (UINT64_C(1) << cnt) - 1) << lo;
        uint64_t add = mask & ~seg->acked[w];
        if (add) {
            seg->nonzero += seg->acked[w] == 0;
            seg->acked[w] |= add;
            added += (uint64_t)__builtin_popcountll(add);
            kp_spool_dirty(s, seg, w);
        }
        idx += cnt;
    }
    return added;
}

/* The first seq >= seq that some segment holds; UINT64_MAX: none. */
static uint64_t kp_spool_next_held(const struct kp_spool *s, uint64_t seq)
{
    for (size_t i = 0; i < s->nseg; i++) {
        const struct kp_spool_segment *g = s->segs[i];
        if (g->rec_cnt > 0 && g->first_seq + g->rec_cnt > seq) {
            return KP_MAX(seq, g->first_seq);
        }
    }
    return UINT64_MAX;
}

int kp_spool_ack_range(struct kp_spool *s, uint64_t first, uint64_t n)
{
    uint64_t end = first + n;
    int rc = KP_OK;

    while (first < end) {
        struct kp_spool_segment *seg = kp_spool_find(s, first);
        if (!seg) {
            /* Not held (cut when read back after it was handed out): the
             * rest of the range is acknowledged all the same, or its
             * segments would never go and its records come back. */
            kp_log_rl(&s->rl_ack, KP_LOG_WARNING,
                      "spool %s: ack of seq %" PRIu64 ", which it does not "
                      "hold",
                      s->dir, first);
            rc = KP_ERROR;
            first = kp_spool_next_held(s, first);
            continue;
        }
        uint64_t idx = first - seg->first_seq;
        uint64_t take = KP_MIN(end - first, seg->rec_cnt - idx);
        uint64_t added = kp_spool_ack_bits(s, seg, idx, take);
        seg->acked_cnt += added;
        s->backlog -= added;
        s->st.acked += added;
        if (seg->acked_cnt == seg->rec_cnt &&
            (seg != s->active || kp_spool_refused(s))) {
            kp_spool_reclaim(s, seg); /* as kp_spool_ack */
        } else if (seg->dirty_cnt >= KP_SPOOL_DIRTY_FLUSH) {
            kp_spool_journal_write(s, seg); /* retried by a flush */
        }
        first += take;
    }
    return rc;
}

int kp_spool_flush(struct kp_spool *s)
{
    int rc = KP_OK, e = 0;

    kp_spool_release_done(s);
    if (s->pending.len && kp_spool_write_pending(s) != KP_OK) {
        rc = KP_ERROR;
        e = errno;
    }
    if (s->acks_pending) {
        s->acks_pending = false;
        for (size_t i = 0; i < s->nseg; i++) {
            struct kp_spool_segment *seg = s->segs[i];
            if ((seg->dirty_cnt || seg->ack_rewrite) &&
                kp_spool_journal_write(s, seg) != KP_OK) {
                s->acks_pending = true;
                rc = KP_ERROR;
                e = errno;
            }
        }
    }
    errno = e;
    return rc;
}

/* ---- fdatasync rounds ---- */

/* Adds fd (owned by the round from now on) to the round. false: a dup
 * failed (EMFILE): the round is partial and proves nothing durable; the
 * file keeps its flag for the next one. */
static bool kp_spool_job_add(struct kp_spool *s, size_t *n, int fd)
{
    if (fd < 0) {
        s->sync_partial = true;
        return false;
    }
    if (*n == s->job_cap) {
        s->job_cap = s->job_cap ? s->job_cap * 2 : 16;
        s->job = kp_realloc(s->job, s->job_cap * sizeof(*s->job));
    }
    s->job[(*n)++] = fd;
    return true;
}

/* Hands everything written since the last round to the helper thread. */
static void kp_spool_sync_start(struct kp_spool *s)
{
    size_t n = 0;

    if (kp_spool_sync_busy(s->sync)) {
        return;
    }
    s->sync_wanted = false;
    s->sync_partial = false;
    if (s->active && s->active->sync_seg) {
        s->active->sync_seg = !kp_spool_job_add(s, &n, dup(s->active->fd));
    }
    for (size_t i = 0; i < s->nrolled; i++) {
        kp_spool_job_add(s, &n, s->rolled[i]);
    }
    s->nrolled = 0;
    for (size_t i = 0; i < s->nseg; i++) {
        struct kp_spool_segment *seg = s->segs[i];
        if (seg->sync_ack && seg->ack_fd >= 0) {
            seg->sync_ack = !kp_spool_job_add(s, &n, dup(seg->ack_fd));
        }
    }
    int dir = s->dir_dirty ? dup(s->dirfd) : -1;
    s->sync_partial |= s->dir_dirty && dir < 0;
    s->dir_dirty = s->dir_dirty && dir < 0;
    if (n == 0 && dir < 0) {
        return;
    }
    s->sync_seq = s->written_seq;
    s->last_sync_ms = kp_mono_ms();
    kp_spool_sync_submit(s->sync, s->job, n, dir);
}

/* Something was written: start a round now, or when fsync_ms has passed
 * since the last one started. */
static void kp_spool_sync_kick(struct kp_spool *s)
{
    if (!s->sync) {
        return;
    }
    s->sync_wanted = true;
    if (s->closing || kp_spool_sync_busy(s->sync) ||
        ev_is_active(&s->sync_timer)) {
        return;
    }
    int64_t wait = s->last_sync_ms + s->fsync_ms - kp_mono_ms();
    ev_timer_set(&s->sync_timer, wait > 0 ? (double)wait / 1e3 : 0., 0.);
    ev_timer_start(s->loop, &s->sync_timer);
}

static void kp_spool_on_sync_timer(struct ev_loop *loop, ev_timer *w,
                                   int revents)
{
    (void)loop;
    (void)revents;
    kp_spool_sync_start(w->data);
}

static void kp_spool_on_sync_done(void *arg, int err, int64_t us)
{
    struct kp_spool *s = arg;

    s->st.fsyncs++;
    s->st.fsync_last_us = us;
    s->st.fsync_max_us = KP_MAX(s->st.fsync_max_us, us);
    s->st.fsync_sum_us += us;
    if (err || s->sync_partial) {
        err = err ? err : EMFILE;
        s->sync_wanted = true; /* the files missed keep their flags */
        s->st.fsync_errors++;
        kp_log_rl(&s->rl_sync, KP_LOG_ERROR,
                  "spool %s: fdatasync: %s (what was written since the last "
                  "good one may not survive a power loss)",
                  s->dir, strerror(err));
    } else {
        s->st.durable_seq = KP_MAX(s->st.durable_seq, s->sync_seq);
        if (s->on_sync) {
            s->on_sync(s->on_sync_arg, s->st.durable_seq);
        }
    }
    if (s->sync_wanted) {
        kp_spool_sync_kick(s);
    }
}

/* Shutdown: the round in progress, then a last one, waited for. */
static void kp_spool_sync_final(struct kp_spool *s)
{
    if (!s->sync) {
        return;
    }
    ev_timer_stop(s->loop, &s->sync_timer);
    kp_spool_sync_wait(s->sync);
    kp_spool_sync_start(s);
    kp_spool_sync_wait(s->sync);
}

/* Records not acknowledged that are in the write buffer only. */
static uint64_t kp_spool_unwritten(const struct kp_spool *s)
{
    const struct kp_spool_segment *a = s->active;
    uint64_t n = 0;

    if (!a) {
        return 0;
    }
    for (uint64_t i = s->written_seq + 1 > a->first_seq
                          ? s->written_seq + 1 - a->first_seq
                          : 0;
         i < a->rec_cnt; i++) {
        n += !((a->acked[i / 64] >> (i % 64)) & 1);
    }
    return n;
}

int kp_spool_close(struct kp_spool *s)
{
    if (!s) {
        return KP_OK;
    }
    s->closing = true;
    int rc = kp_spool_flush(s);
    uint64_t lost = rc == KP_OK ? 0 : kp_spool_unwritten(s);
    if (lost) {
        kp_err("spool %s: %" PRIu64 " messages could not be written and "
               "are lost",
               s->dir, lost);
    }
    kp_spool_sync_final(s);
    kp_spool_spare_drop(s);
    if (s->backlog == 0) {
        while (s->nseg) {
            kp_spool_reclaim(s, s->segs[0]);
        }
    } else {
        kp_info("spool %s: %" PRIu64 " messages kept for the next start",
                s->dir, s->backlog);
    }
    kp_spool_free(s);
    return lost ? KP_ERROR : KP_OK;
}

void kp_spool_stats_get(const struct kp_spool *s, struct kp_spool_stats *st)
{
    *st = s->st;
    st->bytes = s->bytes;
    st->segments = s->nseg;
    st->backlog = s->backlog;
}

uint64_t kp_spool_start_seq(const struct kp_spool *s)
{
    return s->start_seq;
}

uint64_t kp_spool_next_seq(const struct kp_spool *s)
{
    return s->next_seq;
}

/* ---- cursors ---- */

struct kp_spool_cursor *kp_spool_cursor_create(struct kp_spool *s,
                                               uint64_t from_seq)
{
    struct kp_spool_cursor *c = kp_calloc(1, sizeof(*c));
    c->s = s;
    c->pos = from_seq;
    c->fd = -1;
    kp_buf_init(&c->buf, 0);
    s->cursors++;
    c->next = s->cursor_list;
    s->cursor_list = c;
    return c;
}

static void kp_spool_cursor_drop(struct kp_spool_cursor *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->seg_first = 0;
    kp_buf_reset(&c->buf);
    c->buf_off = 0;
}

void kp_spool_cursor_destroy(struct kp_spool_cursor *c)
{
    if (!c) {
        return;
    }
    kp_spool_cursor_drop(c);
    kp_buf_deinit(&c->buf);
    free(c->hdrs);
    c->s->cursors--;
    for (struct kp_spool_cursor **p = &c->s->cursor_list; *p;
         p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    free(c);
}

void kp_spool_cursor_seek(struct kp_spool_cursor *c, uint64_t seq)
{
    struct kp_spool_segment *a = c->s->active;
    bool tail = a && seq == a->first_seq + a->rec_cnt;

    c->pos = seq;
    c->mark_first = 0;
    if (c->seg_first && seq == c->seg_first + c->idx) {
        return; /* the record at its place: read on from there */
    }
    if (tail && c->seg_first == a->first_seq) {
        c->off = a->size; /* the tail of the segment it reads: no read */
        c->idx = a->rec_cnt;
        return;
    }
    /* Anywhere else the place is found again by reading its segment from
     * the start; kept, a stale place would read (and check) every record
     * in between in one call. The tail is known without reading. */
    kp_spool_cursor_drop(c);
    if (tail) {
        c->mark_first = a->first_seq;
        c->mark_off = a->size;
        c->mark_idx = a->rec_cnt;
    }
}

/* Cuts seg at record idx (offset off) after damage found when reading. */
static void kp_spool_cut(struct kp_spool *s, struct kp_spool_segment *seg,
                         uint64_t idx, uint64_t off, enum kp_spool_bad bad)
{
    kp_err("spool %s/%020" PRIu64 ".seg: %s at offset %" PRIu64
           " when reading back: %" PRIu64 " records from seq %" PRIu64 " cut",
           s->dir, seg->first_seq, kp_spool_bad_names[bad], off,
           seg->rec_cnt - idx, seg->first_seq + idx);
    s->st.torn++;
    s->st.torn_bytes += seg->size - off;
    for (uint64_t i = idx; i < seg->rec_cnt; i++) {
        uint64_t bit = UINT64_C(1) << (i % 64);
        if (seg->acked[i / 64] & bit) {
            seg->acked[i / 64] &= ~bit;
            seg->acked_cnt--;
        } else {
            s->backlog--;
        }
    }
    seg->rec_cnt = idx;
    if (seg == s->active) {
        s->roll = true; /* nothing more after the damage */
    } else if (seg->acked_cnt == seg->rec_cnt) {
        kp_spool_reclaim(s, seg);
    }
}

/* The segment to read: the current one, or the one holding pos (or the
 * next), opened. NULL: none (KP_AGAIN) or *rc = KP_ERROR. */
static struct kp_spool_segment *kp_spool_cursor_seg(struct kp_spool_cursor *c,
                                                    int *rc)
{
    struct kp_spool *s = c->s;
    struct kp_spool_segment *seg = NULL;
    char name[KP_SPOOL_NAME_MAX], why[128];

    *rc = KP_AGAIN;
    if (c->seg_first && c->gen == s->gen) {
        return c->seg;
    }
    if (c->seg_first && (seg = kp_spool_find_first(s, c->seg_first))) {
        c->seg = seg;
        c->gen = s->gen;
        return seg;
    }
    kp_spool_cursor_drop(c); /* reclaimed meanwhile, or not yet placed */
    for (size_t i = 0; i < s->nseg && !seg; i++) {
        if (s->segs[i]->first_seq + s->segs[i]->rec_cnt > c->pos) {
            seg = s->segs[i];
        }
    }
    seg = seg ? seg : s->active;
    if (!seg) {
        return NULL;
    }
    kp_spool_name(name, seg->first_seq, KP_SPOOL_F_SEG);
    c->fd = kp_spool_file_open(s, name, O_RDONLY, why, sizeof(why));
    if (c->fd < 0) {
        kp_log_rl(&s->rl_write, KP_LOG_ERROR, "spool %s/%s: %s", s->dir, name,
                  why);
        *rc = KP_ERROR;
        return NULL;
    }
    c->seg_first = seg->first_seq;
    c->seg = seg;
    c->gen = s->gen;
    c->off = KP_SPOOL_HDR_LEN;
    c->idx = 0;
    if (seg == s->active && c->pos >= seg->first_seq + seg->rec_cnt) {
        c->off = seg->size; /* at the tail: nothing to skip */
        c->idx = seg->rec_cnt;
    } else if (c->mark_first == seg->first_seq &&
               c->pos == seg->first_seq + c->mark_idx &&
               c->mark_idx <= seg->rec_cnt) {
        c->off = c->mark_off; /* where the tail was when it sought it */
        c->idx = c->mark_idx;
    }
    c->mark_first = 0;
    return seg;
}

/* Makes [off, off + need) of seg available in the cursor's buffer: from
 * the file, and from the write buffer past what the active one has on
 * file. KP_OK, KP_AGAIN (the file is shorter), KP_ERROR (errno). */
static int kp_spool_cursor_fill(struct kp_spool_cursor *c,
                                struct kp_spool_segment *seg, size_t need)
{
    struct kp_spool *s = c->s;
    uint64_t off = c->off;

    if (off >= c->buf_off && off + need <= c->buf_off + c->buf.len) {
        return KP_OK;
    }
    size_t n = (size_t)KP_MIN(KP_MAX((uint64_t)need, KP_SPOOL_READ_CHUNK),
                              seg->size - off);
    uint64_t on_file = seg == s->active ? s->written : seg->size;
    size_t from_file = off < on_file ? (size_t)KP_MIN(n, on_file - off) : 0;
    kp_buf_reset(&c->buf);
    uint8_t *p = kp_buf_reserve(&c->buf, n);
    for (size_t got = 0; got < from_file;) {
        ssize_t r = pread(c->fd, p + got, from_file - got, (off_t)(off + got));
        s->st.cursor_reads++;
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return r == 0 ? KP_AGAIN : KP_ERROR;
        }
        got += (size_t)r;
    }
    if (n > from_file) {
        memcpy(p + from_file, s->pending.data + (off + from_file - s->written),
               n - from_file);
    }
    c->buf_off = off;
    c->buf.len = n;
    return KP_OK;
}

/* Reads and checks the frame at the cursor. KP_OK: *p, *flen set;
 * KP_AGAIN: it was damaged and its segment cut there; KP_ERROR: read
 * error (errno, logged). */
static int kp_spool_cursor_frame(struct kp_spool_cursor *c,
                                 struct kp_spool_segment *seg,
                                 const uint8_t **p, size_t *flen)
{
    enum kp_spool_bad bad = KP_SPOOL_BAD_SHORT;
    size_t need = KP_SPOOL_FRAME_HDR;

    for (;;) {
        if (c->off + need > seg->size) {
            bad = KP_SPOOL_BAD_SHORT;
            break;
        }
        int rc = kp_spool_cursor_fill(c, seg, need);
        if (rc == KP_ERROR) {
            int e = errno;
            kp_log_rl(&c->s->rl_write, KP_LOG_ERROR,
                      "spool %s/%020" PRIu64 ".seg: read: %s", c->s->dir,
                      seg->first_seq, strerror(e));
            errno = e;
            return KP_ERROR;
        }
        if (rc == KP_AGAIN) {
            bad = KP_SPOOL_BAD_SHORT;
            break;
        }
        const uint8_t *q = c->buf.data + (c->off - c->buf_off);
        size_t avail = c->buf.len - (size_t)(c->off - c->buf_off);
        rc = kp_spool_seg_frame_check(q, avail, seg->first_seq + c->idx,
                                      KP_SPOOL_REC_LIMIT, flen, &bad);
        if (rc == KP_OK) {
            *p = q;
            return KP_OK;
        }
        if (rc == KP_ERROR) {
            break;
        }
        need = *flen;
    }
    kp_spool_cut(c->s, seg, c->idx, c->off, bad);
    return KP_AGAIN;
}

int kp_spool_cursor_next(struct kp_spool_cursor *c, struct kp_spool_view *v)
{
    struct kp_spool *s = c->s;

    for (;;) {
        int rc;
        struct kp_spool_segment *seg = kp_spool_cursor_seg(c, &rc);
        if (!seg) {
            return rc;
        }
        if (c->idx >= seg->rec_cnt) {
            if (seg == s->active) {
                return KP_AGAIN;
            }
            c->pos = KP_MAX(c->pos, seg->first_seq + seg->rec_cnt);
            kp_spool_cursor_drop(c);
            continue;
        }
        const uint8_t *p;
        size_t flen;
        rc = kp_spool_cursor_frame(c, seg, &p, &flen);
        if (rc == KP_ERROR) {
            return KP_ERROR;
        }
        if (rc == KP_AGAIN) {
            continue; /* cut: the loop moves on */
        }
        uint64_t idx = c->idx, seq = seg->first_seq + idx;
        c->off += flen;
        c->idx++;
        if (seq < c->pos ||
            (seg->acked[idx / 64] & (UINT64_C(1) << (idx % 64)))) {
            continue;
        }
        /* Checked by kp_spool_seg_frame_check on these very bytes. */
        rc = kp_spool_seg_decode(p, flen, v, &c->hdrs, &c->hdr_cap);
        kp_assert(rc == KP_OK);
        c->pos = seq + 1;
        if (seq < s->start_seq) {
            s->st.replayed++;
        }
        return KP_OK;
    }
}
