/*
 * kp_batch.c - a partition batch: records encoded straight from the client's
 * read buffer into `records`, then sealed into a RecordBatch.
 */
#include "kp_batch.h"

#include "kp_compress.h"
#include "kp_conf.h"
#include "kp_log.h"

const char *const kp_batch_state_names[KP_BATCH__COUNT] = {
    "open", "sealed", "inflight"};

/*
 * Batch buffers come from a small pool of spares: at a million messages a
 * second a fresh 1 MiB buffer per batch costs page faults, and leaving
 * them to malloc fragments the heap around small allocations, so resident
 * memory grows far past what is buffered. The pool is bounded by count and
 * by a quarter of buffer_bytes.
 */
void kp_batch_pool_init(struct kp_batch_pool *pool, int64_t limit)
{
    memset(pool, 0, sizeof(*pool));
    pool->limit = limit;
}

static void kp_batch_buf_get(struct kp_batch_pool *pool, struct kp_buf *buf,
                             size_t min_cap)
{
    for (int i = pool->cnt - 1; i >= 0; i--) {
        struct kp_buf *s = &pool->spare[i];
        if (s->cap >= min_cap && s->cap <= 2 * min_cap + 65536) {
            *buf = *s;
            buf->len = 0;
            pool->bytes -= s->cap;
            pool->spare[i] = pool->spare[--pool->cnt];
            return;
        }
    }
    kp_buf_init(buf, min_cap);
}

static void kp_batch_buf_put(struct kp_batch_pool *pool, struct kp_buf *buf)
{
    if (buf->cap >= 65536 && pool->cnt < KP_BATCH_POOL_MAX &&
        (int64_t)(pool->bytes + buf->cap) <= pool->limit) {
        pool->bytes += buf->cap;
        pool->spare[pool->cnt++] = *buf;
        memset(buf, 0, sizeof(*buf));
        return;
    }
    kp_buf_deinit(buf);
}

/* One size for records and compressed copies alike, so that either can
 * reuse the other's spare: a full batch plus the codecs' worst-case
 * growth (under 1/64 plus a few KiB for gzip, lz4 and zstd). */
static size_t kp_batch_buf_size(const struct kp_producer_conf *pc)
{
    size_t n = (size_t)pc->batch_bytes + 1024;
    return n + n / 64 + 8192;
}

void kp_batch_pool_drain(struct kp_batch_pool *pool)
{
    while (pool->cnt > 0) {
        kp_buf_deinit(&pool->spare[--pool->cnt]);
    }
    pool->bytes = 0;
}

/* Takes a reference to conf: the batch finishes under the settings it was
 * opened with, whatever a reload does meanwhile. */
struct kp_batch *kp_batch_create(struct kp_batch_pool *pool,
                                 struct kp_partition *part,
                                 struct kp_conf *conf,
                                 const struct kp_producer_conf *pc,
                                 int64_t now_ms)
{
    struct kp_batch *b = kp_calloc(1, sizeof(*b));
    b->part = part;
    b->pool = pool;
    b->conf = kp_conf_get(conf);
    b->pconf = pc;
    b->state = KP_BATCH_OPEN;
    b->created_ms = now_ms;
    b->base_seq = -1;
    b->base_offset = -1;
    b->pid = -1;
    b->epoch = -1;
    b->codec_used = KP_CODEC_NONE;
    /* Sized for a full batch: growing by doubling cost a realloc (and
     * fresh pages) several times per batch. */
    kp_batch_buf_get(pool, &b->records, kp_batch_buf_size(pc));
    b->records.len = KP_BATCH_HEADER_LEN; /* written when sealed */
    return b;
}

void kp_batch_destroy(struct kp_batch *b)
{
    kp_runs_deinit(&b->runs);
    free(b->pinned);
    kp_batch_buf_put(b->pool, &b->records);
    kp_batch_buf_put(b->pool, &b->zwire);
    kp_conf_put(b->conf);
    free(b);
}

size_t kp_batch_append(struct kp_batch *b, const struct kp_msg *m, int64_t ts,
                       const struct kp_header *extra, size_t extra_cnt)
{
    if (b->count == 0) {
        b->base_ts = b->max_ts = ts;
    } else if (ts > b->max_ts) {
        b->max_ts = ts;
    }
    size_t n = kp_record_append(&b->records, b->count, ts - b->base_ts, m,
                                extra, extra_cnt);
    if (m->partition >= 0 || b->pinned) {
        if ((uint32_t)b->count >= b->pinned_cap) {
            uint32_t cap = KP_MAX(b->pinned_cap * 2, 64);
            cap = KP_MAX(cap, (uint32_t)b->count + 1);
            b->pinned = kp_realloc(b->pinned, cap);
            memset(b->pinned + b->pinned_cap, 0, cap - b->pinned_cap);
            b->pinned_cap = cap;
        }
        b->pinned[b->count] = m->partition >= 0;
    }
    b->count++;
    b->msg_bytes += n;
    return n;
}

bool kp_batch_would_overflow(const struct kp_batch *b, size_t bytes)
{
    return b->count > 0 &&
           b->records.len + bytes > (size_t)b->pconf->batch_bytes;
}

bool kp_batch_full(const struct kp_batch *b)
{
    return b->count >= b->pconf->batch_messages ||
           b->records.len >= (size_t)b->pconf->batch_bytes;
}

int kp_batch_seal(struct kp_batch *b, struct kp_compressor *cz)
{
    struct kp_batch_hdr h = {
        .count = b->count,
        .base_ts = b->base_ts,
        .max_ts = b->max_ts,
        .producer_id = -1,
        .producer_epoch = -1,
        .base_seq = -1,
        .codec = b->pconf->compression,
    };

    kp_assert(b->state == KP_BATCH_OPEN && b->count > 0);
    if (h.codec != KP_CODEC_NONE) {
        struct kp_buf *z = &b->zwire;
        if (!z->cap) {
            /* codecs' worst case is the input plus a little */
            size_t need = b->records.len + b->records.len / 64 + 8192;
            kp_batch_buf_get(b->pool, z,
                             KP_MAX(need, kp_batch_buf_size(b->pconf)));
        }
        kp_buf_reset(z);
        kp_buf_reserve(z, KP_BATCH_HEADER_LEN);
        z->len = KP_BATCH_HEADER_LEN;
        int rc = kp_compress(cz, h.codec, b->pconf->compression_level,
                             kp_batch_recs(b), kp_batch_recs_len(b), z);
        /* A codec failure (logged) sends the batch uncompressed: the data
         * matters more than the codec. */
        if (rc == KP_OK && z->len < b->records.len) {
            kp_recordbatch_frame(z->data, z->len, &h);
            b->wire = z->data;
            b->wire_len = z->len;
            b->codec_used = h.codec;
            b->msg_bytes += z->len;
            b->state = KP_BATCH_SEALED;
            return KP_OK;
        }
        /* Incompressible (tiny or random) records go as they are rather
         * than make the broker decompress them. */
        kp_batch_buf_put(b->pool, z);
        h.codec = KP_CODEC_NONE;
    }
    kp_recordbatch_frame(b->records.data, b->records.len, &h);
    b->wire = b->records.data;
    b->wire_len = b->records.len;
    b->codec_used = KP_CODEC_NONE;
    b->state = KP_BATCH_SEALED;
    return KP_OK;
}

void kp_batch_stamp(struct kp_batch *b, int64_t pid, int16_t epoch,
                    int32_t base_seq)
{
    if (pid < 0) {
        return;
    }
    b->base_seq = base_seq;
    b->pid = pid;
    b->epoch = epoch;
    kp_recordbatch_stamp(b->wire, b->wire_len, pid, epoch, base_seq);
}

void kp_batch_stats_observe(struct kp_batch_stats *s,
                           const struct kp_batch *b)
{
    uint64_t raw = b->records.len;
    uint64_t fill = 0;

    kp_hist_observe(&s->msgs, kp_hist_batch_msgs, (uint64_t)b->count);
    kp_hist_observe(&s->bytes, kp_hist_batch_bytes, raw);
    if (b->pconf->batch_bytes > 0) {
        fill = raw * 1000 / (uint64_t)b->pconf->batch_bytes;
    }
    if (b->pconf->batch_messages > 0) {
        fill = KP_MAX(fill, (uint64_t)b->count * 1000 /
                                (uint64_t)b->pconf->batch_messages);
    }
    kp_hist_observe(&s->fill, kp_hist_batch_fill, KP_MIN(fill, 1000));
    if ((unsigned)b->codec_used < KP_CODEC__COUNT) {
        s->codec_batches[b->codec_used]++;
        s->codec_raw[b->codec_used] += raw;
        s->codec_wire[b->codec_used] += b->wire_len;
    }
}
