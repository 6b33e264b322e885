/*
 * kp_spool.h - the disk spool's storage layer: an append-only log of
 * messages in segment files, per-record acknowledgements persisted in a
 * journal per segment, recovery of both at start, cursors that read the
 * unacknowledged records back in sequence order, and periodic fdatasync off
 * the loop thread. It knows nothing of partitions or brokers: a record is
 * one message with what is needed to produce it again (SPEC "Disk spool").
 *
 * Formats and the crash-consistency argument: kp_spool.c (store, journal)
 * and kp_spool_seg.c (record frame). The fsync helper: kp_spool_sync.c.
 *
 * Life of a record
 *
 *   kp_spool_append(rec) -> seq       encoded into the write buffer; written
 *                                     to the segment by kp_spool_flush() (the
 *                                     caller's ev_prepare) or when the buffer
 *                                     fills; 1 byte buffer = write-through
 *   kp_spool_cursor_next() -> view    read back in seq order (start replay,
 *                                     overflow read-back); acked ones skipped
 *   kp_spool_ack(seq)                 Kafka has it, or it failed for good;
 *                                     journaled at the next kp_spool_flush()
 *   all of a sealed segment acked  -> its files are unlinked at once
 *
 * Wiring (what the lead does, single-threaded, in the loop):
 * - open at start, before the listeners; replay with a cursor from seq 0;
 * - call kp_spool_flush() from the ev_prepare watcher (every loop iteration,
 *   cheap when idle): a record appended in a callback is then in the page
 *   cache before the loop next blocks, so a SIGKILL loses only what was read
 *   in the current iteration and was not yet flushed - the same window as
 *   bytes read from a socket but not yet parsed;
 * - KP_AGAIN (max_bytes) and KP_ERROR (ENOSPC, EIO...) from append both mean
 *   "pause the writers"; retry after acks (kp_spool_room()) or on a timer;
 * - close at shutdown: what is not acknowledged stays for the next start.
 */
#ifndef KP_SPOOL_H
#define KP_SPOOL_H

#include "kp_line.h"
#include "kp_spool_seg.h"

struct ev_loop;
struct kp_spool;
struct kp_spool_cursor;


/* What a record needs beyond its key and value (which message_max_bytes
 * bounds): topic name, headers, framing. */
#define KP_SPOOL_REC_SLACK (64u << 10)

struct kp_spool_opts {
    /* Disk budget: segment and journal bytes. An append that would exceed
     * it returns KP_AGAIN. Required (> 0). */
    int64_t max_bytes;
    /* A segment is sealed and a new one started beyond this; 0 = 64 MiB.
     * Clamped to max_bytes / 4 (at least 4 KiB) so that reclaim, which
     * frees whole segments, can always make room. */
    int64_t segment_bytes;
    /* Encoded body limit of one record (topic, key, value, headers plus
     * about 20 bytes); a larger append fails with EMSGSIZE. 0 = 2 MiB;
     * at most KP_SPOOL_REC_LIMIT. Pass the largest message_max_bytes +
     * KP_SPOOL_REC_SLACK. */
    size_t max_record;
    /* Appended bytes held before they are written; 0 = 64 KiB. 1 writes
     * every record at once: one pwrite(2) per message, measured at ~7x
     * the CPU (1.17 against 0.17 us per 100-byte message). */
    size_t write_buffer;
    /* -1: never fdatasync (a crash or SIGKILL loses nothing flushed; a
     * power loss may). >= 0: fdatasync the written segments, journals and
     * the directory at most every fsync_ms, in a helper thread. */
    int fsync_ms;
    /* Required when fsync_ms >= 0: completions arrive through it. */
    struct ev_loop *loop; /* borrowed */
    /* Optional: called from the loop (or from kp_spool_close) when every
     * record up to durable_seq is on stable storage. */
    void (*on_sync)(void *arg, uint64_t durable_seq);
    void *on_sync_arg; /* borrowed */
    /* Test hook: replaces fdatasync(2) in the helper thread; NULL in
     * production. */
    int (*sync_fn)(int fd);
};

/* What kp_spool_open found. */
struct kp_spool_recovery {
    uint64_t segments;   /* segment files kept */
    uint64_t records;    /* intact records in them */
    uint64_t backlog;    /* ... of which unacknowledged: to replay */
    uint64_t bytes;      /* on disk after recovery */
    uint64_t torn;       /* cuts: each a damaged record and what followed
                          * it in its segment (see kp_spool.c) */
    uint64_t torn_bytes; /* bytes cut */
    uint64_t bad_acks;   /* journal entries ignored (damaged) */
    uint64_t removed;    /* files removed: fully acked or empty segments,
                          * orphan journals, temporary files */
    uint64_t first_seq;  /* lowest seq to replay; 0 = none */
    uint64_t next_seq;   /* first seq this run will assign */
};

struct kp_spool_stats {
    uint64_t bytes;    /* segments + journals, on disk or buffered */
    uint64_t segments; /* segment files */
    uint64_t backlog;  /* records not acknowledged */
    uint64_t appended; /* records appended in this run */
    uint64_t acked;    /* acknowledgements in this run */
    uint64_t replayed; /* records of earlier runs handed out by cursors */
    uint64_t torn;     /* cuts at open and when reading back */
    uint64_t torn_bytes;
    uint64_t full;         /* appends refused: max_bytes (KP_AGAIN) */
    uint64_t write_errors; /* failed writes (ENOSPC, EIO...) */
    uint64_t reclaimed;    /* segments unlinked in this run */
    uint64_t cursor_reads; /* pread(2) calls of cursors */
    uint64_t fsyncs;       /* completed fdatasync rounds */
    uint64_t fsync_errors;
    int64_t fsync_last_us; /* duration of the last round */
    int64_t fsync_max_us;
    int64_t fsync_sum_us; /* sum / fsyncs = mean; histogram-friendly */
    uint64_t durable_seq; /* every seq <= this is on stable storage */
};


/*
 * Opens (creating it 0700 when missing) the spool directory and recovers
 * it: damaged tails are cut and counted, acknowledged records forgotten,
 * fully acknowledged segments unlinked. The directory must be owned by the
 * effective uid and not group/world-writable (it may be reached through
 * symbolic links, as systemd's DynamicUser state directory is); the files
 * in it are opened without following links and must be regular files of
 * ours, not group/world-writable: anything else is a start-up error, as is
 * another process holding the directory (flock). Damaged contents are never
 * one. Returns the spool, or NULL with the reason logged and copied to err
 * (when errlen > 0). *report may be NULL.
 */
struct kp_spool *kp_spool_open(const char *dir,
                               const struct kp_spool_opts *opts,
                               struct kp_spool_recovery *report, char *err,
                               size_t errlen);

/*
 * Flushes, waits for an fdatasync in progress and does a last one (when
 * fsync_ms is set), closes and frees. Destroy the cursors first. An empty spool
 * (nothing unacked) leaves no file behind. Returns KP_ERROR when buffered
 * records not acknowledged could not be written (logged with their count:
 * they are lost), else KP_OK.
 */
int kp_spool_close(struct kp_spool *s);

/*
 * Appends one record and sets *seq (monotonic, never reused while a record
 * that carries it may exist). Returns
 *   KP_OK     accepted (in the write buffer or already written);
 *   KP_AGAIN  max_bytes reached: nothing changed; retry after acks;
 *   KP_ERROR  nothing changed; errno EMSGSIZE (larger than max_record or
 *             than the budget), or the write error (ENOSPC, EFBIG, EIO,
 *             EACCES...) logged at a limited rate: pause the writers and
 *             retry later. Records accepted before stay buffered (at most
 *             write_buffer bytes) and are retried by every flush.
 */
int kp_spool_append(struct kp_spool *s, const struct kp_spool_rec *rec,
                    uint64_t *seq);

/* Bytes an append of this record adds to the spool. */
size_t kp_spool_rec_size(const struct kp_spool_rec *rec);

/* Bytes left under max_bytes (negative when journals went over it); a
 * fully acknowledged active segment counts as free (the next append gives
 * it back). */
int64_t kp_spool_room(const struct kp_spool *s);
/* The budget and the record limit the spool was opened with (a reload of
 * the configuration does not change them). */
int64_t kp_spool_max_bytes(const struct kp_spool *s);
size_t kp_spool_max_record(const struct kp_spool *s);
/* Every record with a seq up to this one is on file (through the page
 * cache), or acknowledged; later ones are in the write buffer only until a
 * flush writes them. What a shutdown may count as kept. */
uint64_t kp_spool_written_seq(const struct kp_spool *s);

/*
 * Marks seq acknowledged (delivered, or failed for good and dead-lettered):
 * it will not be replayed once the journal entry is written (next flush).
 * Acks may come in any order. A sealed segment whose records are all acked
 * is unlinked at once. Returns KP_OK (also for a repeated ack), or
 * KP_ERROR for a seq the spool does not hold (a caller bug; logged).
 */
int kp_spool_ack(struct kp_spool *s, uint64_t seq);
/* kp_spool_ack of first .. first + n - 1, a bitmap word at a time (a
 * delivered batch's records are mostly consecutive). Seqs it does not hold
 * (cut since) are skipped, the rest acknowledged: KP_ERROR then, once
 * logged. */
int kp_spool_ack_range(struct kp_spool *s, uint64_t first, uint64_t n);

/*
 * Writes buffered records and pending journal entries (compacting a
 * journal that grew past its content). Call once per loop iteration
 * (ev_prepare) and before waiting on anything. KP_OK, or KP_ERROR with
 * errno when a write failed (retried by the next call; logged).
 */
int kp_spool_flush(struct kp_spool *s);

void kp_spool_stats_get(const struct kp_spool *s, struct kp_spool_stats *st);

/* The first seq assigned in this run: records below it are replays. */
uint64_t kp_spool_start_seq(const struct kp_spool *s);
/* The seq the next append will get. */
uint64_t kp_spool_next_seq(const struct kp_spool *s);

/*
 * A reader of unacknowledged records in seq order, from from_seq on (0 =
 * the oldest), following the tail: records appended later are yielded
 * too, buffered ones included. Any number of cursors; each holds one
 * read fd and a buffer of about max(64 KiB, its largest record).
 */
struct kp_spool_cursor *kp_spool_cursor_create(struct kp_spool *s,
                                               uint64_t from_seq);
void kp_spool_cursor_destroy(struct kp_spool_cursor *c);

/*
 * The next unacknowledged record with seq >= the cursor's position.
 * KP_OK: *v is set (valid until the next call on c); KP_AGAIN: none now
 * (at the tail); KP_ERROR: a read error (errno; logged), position kept.
 * A record found damaged here (changed on disk since it was written) is
 * cut with the rest of its segment and counted in torn, never returned.
 */
int kp_spool_cursor_next(struct kp_spool_cursor *c, struct kp_spool_view *v);

/* Moves the cursor to seq (forward or back). Seeking to
 * kp_spool_next_seq() or to the record the cursor would read next costs
 * nothing (no read); elsewhere the next call reads its segment from the
 * start. */
void kp_spool_cursor_seek(struct kp_spool_cursor *c, uint64_t seq);

#endif
