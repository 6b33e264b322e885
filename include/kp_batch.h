/*
 * kp_batch.h - one partition's batch, from open to settled.
 *
 *   OPEN ──seal──▶ SEALED ──send──▶ INFLIGHT ──ack──▶ freed (delivered)
 *    ▲               ▲                 │
 *    │               └──── retry ──────┤ (back to the head of its FIFO,
 *    │                                 │  sent again byte for byte)
 *    └ records appended                └──error──▶ freed (failed)
 *
 * An open batch holds the encoded records; sealing builds the RecordBatch
 * wire bytes (compressed). The records section is kept after sealing: it is
 * what the dead letter file and batch splitting read back. A sealed batch's
 * wire bytes never change again, except the one-time stamp of producer id,
 * epoch and base sequence when it is first sent.
 */
#ifndef KP_BATCH_H
#define KP_BATCH_H

#include <sys/queue.h>

#include "kp_buf.h"
#include "kp_conf.h"
#include "kp_hist.h"
#include "kp_record.h"
#include "kp_tally.h"

struct kp_partition;
struct kp_compressor;

/*
 * Spare batch buffers (records and compressed copies), reused so a new
 * batch neither faults in fresh pages nor fragments the heap. Bounded by
 * count and by `limit` bytes (a quarter of buffer_bytes).
 */
#define KP_BATCH_POOL_MAX 64
struct kp_batch_pool {
    struct kp_buf spare[KP_BATCH_POOL_MAX]; /* owned */
    int cnt;
    size_t bytes;
    int64_t limit;
};
void kp_batch_pool_init(struct kp_batch_pool *pool, int64_t limit);
/* Frees every spare buffer. */
void kp_batch_pool_drain(struct kp_batch_pool *pool);

enum kp_batch_state {
    KP_BATCH_OPEN,
    KP_BATCH_SEALED,
    KP_BATCH_INFLIGHT,
    KP_BATCH__COUNT
};
extern const char *const kp_batch_state_names[KP_BATCH__COUNT];

struct kp_batch {
    TAILQ_ENTRY(kp_batch) link; /* partition FIFO, or linger FIFO if open */
    struct kp_partition *part;  /* borrowed */
    struct kp_batch_pool *pool; /* borrowed: where its buffers go back */
    struct kp_conf *conf;       /* owned reference: settings it opened with */
    const struct kp_producer_conf *pconf; /* borrowed from conf */
    enum kp_batch_state state;

    struct kp_buf records; /* owned: KP_BATCH_HEADER_LEN bytes reserved for
                              the RecordBatch header, then the records */
    int32_t count;
    int64_t base_ts, max_ts;
    size_t msg_bytes;   /* accounted against buffer_bytes: records, and the
                           compressed copy once sealed */
    int64_t created_ms; /* monotonic: linger and delivery timeout */
    struct kp_runs runs;

    struct kp_buf zwire; /* owned: the compressed RecordBatch, if any */
    uint8_t *wire;       /* borrowed: the RecordBatch once sealed, in
                            `records` (uncompressed: no copy) or `zwire` */
    size_t wire_len;
    enum kp_codec codec_used;
    int32_t base_seq; /* -1 until first sent with idempotence */
    int64_t pid;      /* producer id/epoch it was stamped with, or -1 */
    int16_t epoch;
    int attempts;     /* sends so far */
    bool unconfirmed; /* sent, and no answer came back: it may be in
                         Kafka (a shutdown then fails it as
                         shutdown_unconfirmed) */
    int64_t base_offset; /* the broker's, once delivered; -1 with acks 0 */

    /* Place in its partition's send order: sealed batches get increasing
     * values (seal number << 32); a split's halves share the range of the
     * batch they replace, so a requeue by `order` never reorders. */
    uint64_t order;
    int split_depth;
    uint64_t id; /* unique within its partition: the produce trace's id */

    /* owned, NULL until a message names its partition (json "partition"):
     * then one byte per record, 1 where it did, for the dead letter file */
    uint8_t *pinned;
    uint32_t pinned_cap;
};

/* Whether record i was given its partition explicitly. */
static inline bool kp_batch_pinned(const struct kp_batch *b, int32_t i)
{
    return b->pinned && i >= 0 && (uint32_t)i < b->pinned_cap &&
           b->pinned[i];
}

/* The records section (uncompressed), behind the reserved header. */
static inline const uint8_t *kp_batch_recs(const struct kp_batch *b)
{
    return b->records.data + KP_BATCH_HEADER_LEN;
}

static inline size_t kp_batch_recs_len(const struct kp_batch *b)
{
    return b->records.len - KP_BATCH_HEADER_LEN;
}

struct kp_batch *kp_batch_create(struct kp_batch_pool *pool,
                                 struct kp_partition *part,
                                 struct kp_conf *conf,
                                 const struct kp_producer_conf *pc,
                                 int64_t now_ms);
void kp_batch_destroy(struct kp_batch *b);

/* Appends one message; returns the bytes it took. */
size_t kp_batch_append(struct kp_batch *b, const struct kp_msg *m, int64_t ts,
                       const struct kp_header *extra, size_t extra_cnt);

/* Whether one more message of about `bytes` would overflow batch_bytes. */
bool kp_batch_would_overflow(const struct kp_batch *b, size_t bytes);
/* Whether the batch reached batch_bytes or batch_messages. */
bool kp_batch_full(const struct kp_batch *b);

/* Builds the wire form: the header in place in front of the records, or a
 * compressed copy when that is smaller. A codec failure is logged and the
 * batch goes uncompressed. Returns KP_OK. */
int kp_batch_seal(struct kp_batch *b, struct kp_compressor *cz);

/* What sealed batches looked like: sizes, fill, codecs (stats). */
struct kp_batch_stats {
    struct kp_hist msgs;  /* messages per batch */
    struct kp_hist bytes; /* uncompressed RecordBatch bytes */
    struct kp_hist fill;  /* per mille of the batch_bytes/messages limit */
    uint64_t codec_batches[KP_CODEC__COUNT]; /* by codec used on the wire */
    uint64_t codec_raw[KP_CODEC__COUNT];     /* bytes before compression */
    uint64_t codec_wire[KP_CODEC__COUNT];    /* bytes after */
};
void kp_batch_stats_observe(struct kp_batch_stats *s,
                           const struct kp_batch *b);

/* Stamps idempotence fields on first send (no-op when pid < 0). */
void kp_batch_stamp(struct kp_batch *b, int64_t pid, int16_t epoch,
                    int32_t base_seq);

#endif
