/*
 * kp_tally.c - per-client fate counters and receipts, runs of messages in
 * a batch (with the numbers of the messages that get receipts), and the
 * flush generations.
 */
#include "kp_tally.h"

const char *const kp_fate_names[KP_FATE__COUNT] = {"ok", "failed",
                                                    "rejected"};

struct kp_tally *kp_tally_create(kp_tally_cb on_idle, void *owner)
{
    struct kp_tally *t = kp_calloc(1, sizeof(*t));
    t->refs = 1;
    t->on_idle = on_idle;
    t->owner = owner;
    return t;
}

void kp_tally_want_receipts(struct kp_tally *t, kp_tally_cb on_output)
{
    t->receipts = true;
    t->on_output = on_output;
}

void kp_tally_detach(struct kp_tally *t)
{
    t->owner = NULL;
    kp_buf_deinit(&t->out);
}

static void kp_tally_check_idle(struct kp_tally *t)
{
    if (t->pending == 0 && t->owner && t->on_idle) {
        t->on_idle(t->owner);
    }
}

void kp_tally_settle(struct kp_tally *t, uint64_t n, bool ok)
{
    kp_assert(t->pending >= n);
    t->pending -= n;
    if (ok) {
        t->delivered += n;
    } else {
        t->failed += n;
    }
    kp_tally_check_idle(t);
}

void kp_tally_unaccept(struct kp_tally *t, uint64_t n)
{
    kp_assert(t->pending >= n);
    t->pending -= n;
    t->rejected += n;
    kp_tally_check_idle(t);
}

struct kp_tally *kp_tally_get(struct kp_tally *t)
{
    t->refs++;
    return t;
}

void kp_tally_put(struct kp_tally *t)
{
    kp_assert(t->refs > 0);
    if (--t->refs == 0) {
        kp_buf_deinit(&t->out);
        free(t);
    }
}

/* ---- receipts ---- */

static const char kp_receipt_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536"
    "37383940414243444546474849505152535455565758596061626364656667686970717273"
    "7475767778798081828384858687888990919293949596979899";

/* Digits of v, from its bit length (log10(2) ~ 1233 / 4096) and one
 * comparison: no loop of multiplications. */
static size_t kp_receipt_digits(uint64_t v)
{
    static const uint64_t pow10[20] = {
        1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL,
        10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL,
        100000000000ULL, 1000000000000ULL, 10000000000000ULL,
        100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
        100000000000000000ULL, 1000000000000000000ULL,
        10000000000000000000ULL};
    size_t n = (size_t)(64 - __builtin_clzll(v | 1)) * 1233 >> 12;

    n += v >= pow10[n];
    return n ? n : 1; /* 0 */
}

/*
 * Decimal digits of v at p; returns the end. Written in place from the
 * last pair of digits back (snprintf costs more than the rest of a
 * receipt's path at a million messages a second, and digits built
 * elsewhere and copied stall on the copy's load).
 */
static char *kp_receipt_u64(char *p, uint64_t v)
{
    char *end = p + kp_receipt_digits(v), *q = end;

    while (v >= 100) {
        q -= 2;
        memcpy(q, kp_receipt_pairs + (v % 100) * 2, 2);
        v /= 100;
    }
    if (v >= 10) {
        memcpy(q - 2, kp_receipt_pairs + v * 2, 2);
    } else {
        q[-1] = (char)('0' + v);
    }
    return end;
}

static char *kp_receipt_i64(char *p, int64_t v)
{
    if (v < 0) {
        *p++ = '-';
        return kp_receipt_u64(p, (uint64_t)0 - (uint64_t)v);
    }
    return kp_receipt_u64(p, (uint64_t)v);
}

static char *kp_receipt_str(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

/*
 * "ok N PART OFFSET\n" is at most 3 + 20 + 1 + 11 + 1 + 20 + 1 = 57 bytes;
 * "rejected N REASON\n" 9 + 20 + 1 + the longest reason (20) + 1 = 51.
 */
size_t kp_receipt_format(char *p, enum kp_fate fate, uint64_t seq,
                         int32_t part, int64_t offset, enum kp_reason why)
{
    char *q = kp_receipt_str(p, kp_fate_names[fate]);

    *q++ = ' ';
    q = kp_receipt_u64(q, seq);
    *q++ = ' ';
    if (fate == KP_FATE_OK) {
        q = kp_receipt_i64(q, part);
        *q++ = ' ';
        q = kp_receipt_i64(q, offset);
    } else {
        q = kp_receipt_str(q, kp_reason_names[why]);
    }
    *q++ = '\n';
    kp_assert((size_t)(q - p) <= KP_RECEIPT_MAX);
    return (size_t)(q - p);
}

static bool kp_tally_telling(const struct kp_tally *t)
{
    return t->receipts && t->owner;
}

void kp_tally_receipt(struct kp_tally *t, enum kp_fate fate, uint64_t seq,
                      enum kp_reason why)
{
    if (!kp_tally_telling(t)) {
        return;
    }
    char *p = (char *)kp_buf_reserve(&t->out, KP_RECEIPT_MAX);
    t->out.len += kp_receipt_format(p, fate, seq, -1, -1, why);
    t->on_output(t->owner);
}

/*
 * A number printed in decimal over and over, mostly one more each time (a
 * batch's offsets; one writer's numbers in one partition): the digits
 * above the last two are kept as text, so printing is two copies, and only
 * every hundredth number costs a conversion.
 */
struct kp_counter_text {
    uint64_t v;
    unsigned lo;  /* v % 100 */
    char hi[24];  /* v / 100 in decimal when v >= 100; copied whole */
    size_t hi_len;
};

static void kp_ctext_set(struct kp_counter_text *c, uint64_t v)
{
    memset(c->hi, 0, sizeof(c->hi));
    c->v = v;
    c->lo = (unsigned)(v % 100);
    c->hi_len = v >= 100 ? (size_t)(kp_receipt_u64(c->hi, v / 100) - c->hi)
                         : 0;
}

static void kp_ctext_next(struct kp_counter_text *c, uint64_t v)
{
    if (v != c->v + 1 || c->lo == 99) {
        kp_ctext_set(c, v);
    } else {
        c->v = v;
        c->lo++;
    }
}

/* Writes up to 24 bytes at p (room for them is the caller's), of which
 * the number's digits count; returns their end. */
static char *kp_ctext_put(char *p, const struct kp_counter_text *c)
{
    if (c->v < 100) {
        return kp_receipt_u64(p, c->v);
    }
    memcpy(p, c->hi, sizeof(c->hi));
    memcpy(p + c->hi_len, kp_receipt_pairs + c->lo * 2, 2);
    return p + c->hi_len + 2;
}

/* `ok N PART OFFSET` for messages seqs[0..n) at offsets base.. (or -1):
 * the text of kp_receipt_format. A line writes at most 3 + 24, 16, 24
 * bytes past the ends of what it wrote before, within its KP_RECEIPT_MAX;
 * the bytes past a line's end are overwritten by the next. */
static char *kp_receipts_ok(char *q, const uint64_t *seqs, uint32_t n,
                            int32_t part, int64_t base)
{
    char mid[16] = {0}; /* " PART " */
    size_t mid_len = (size_t)(kp_receipt_i64(mid + 1, part) - mid) + 1;
    struct kp_counter_text seq, off;

    mid[0] = mid[mid_len - 1] = ' ';
    kp_ctext_set(&seq, seqs[0]);
    kp_ctext_set(&off, base < 0 ? 0 : (uint64_t)base);
    for (uint32_t i = 0; i < n; i++) {
        if (i > 0) {
            kp_ctext_next(&seq, seqs[i]);
            kp_ctext_next(&off, off.v + 1);
        }
        memcpy(q, "ok ", 3);
        q = kp_ctext_put(q + 3, &seq);
        memcpy(q, mid, sizeof(mid));
        q += mid_len;
        if (base < 0) {
            memcpy(q, "-1", 2); /* acks 0 */
            q += 2;
        } else {
            q = kp_ctext_put(q, &off);
        }
        *q++ = '\n';
    }
    return q;
}

/* Receipts of n messages numbered seqs[0..n) (n > 0): one reservation,
 * then the lines; message i of an ok run is at offset base + i. */
static void kp_tally_receipts(struct kp_tally *t, enum kp_fate fate,
                              const uint64_t *seqs, uint32_t n,
                              enum kp_reason why, int32_t part, int64_t base)
{
    char *p = (char *)kp_buf_reserve(&t->out, (size_t)n * KP_RECEIPT_MAX);
    char *q = p;

    if (fate == KP_FATE_OK) {
        q = kp_receipts_ok(q, seqs, n, part, base);
    } else {
        for (uint32_t i = 0; i < n; i++) {
            q += kp_receipt_format(q, fate, seqs[i], -1, -1, why);
        }
    }
    t->out.len += (size_t)(q - p);
    t->on_output(t->owner);
}

/* ---- runs ---- */

/* Appends count messages of (t, gen) as a run, merged with the last. */
static void kp_runs_push(struct kp_runs *r, struct kp_tally *t, uint32_t gen,
                         uint32_t count)
{
    if (r->cnt > r->head) {
        struct kp_run *last = &r->v[r->cnt - 1];
        if (last->tally == t && last->gen == gen) {
            last->count += count;
            return;
        }
    }
    if (r->cnt == r->cap) {
        if (r->head > 0) {
            /* reuse what was consumed at the front */
            memmove(r->v, r->v + r->head, (r->cnt - r->head) * sizeof(*r->v));
            r->cnt -= r->head;
            r->head = 0;
        }
        if (r->cnt == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 4;
            r->v = kp_realloc(r->v, r->cap * sizeof(*r->v));
        }
    }
    r->v[r->cnt++] = (struct kp_run){kp_tally_get(t), gen, count};
}

/* Appends n message numbers. */
static void kp_runs_push_seqs(struct kp_runs *r, const uint64_t *seqs,
                              uint32_t n)
{
    if (r->seq_cap - r->seq_cnt < n && r->seq_head > 0) {
        memmove(r->seqs, r->seqs + r->seq_head,
                (r->seq_cnt - r->seq_head) * sizeof(*r->seqs));
        r->seq_cnt -= r->seq_head;
        r->seq_head = 0;
    }
    if (r->seq_cap - r->seq_cnt < n) {
        uint32_t cap = KP_MAX(r->seq_cap * 2, 64);
        cap = KP_MAX(cap, r->seq_cnt + n);
        r->seqs = kp_realloc(r->seqs, cap * sizeof(*r->seqs));
        r->seq_cap = cap;
    }
    memcpy(r->seqs + r->seq_cnt, seqs, n * sizeof(*seqs));
    r->seq_cnt += n;
}

void kp_runs_add(struct kp_runs *r, struct kp_tally *t, uint32_t gen,
                 uint64_t seq)
{
    kp_runs_push(r, t, gen, 1);
    if (t->receipts) {
        if (r->seq_cnt < r->seq_cap) {
            r->seqs[r->seq_cnt++] = seq; /* per message: no call */
        } else {
            kp_runs_push_seqs(r, &seq, 1);
        }
    }
}

/* Appends n spool seqs (seqs NULL: n zeros), allocating the array (with
 * zeros for the messages before) on the first. */
static void kp_runs_push_spool(struct kp_runs *r, const uint64_t *seqs,
                               uint32_t n)
{
    if (!r->spool) {
        uint32_t before = (uint32_t)kp_runs_count(r) - n;
        r->spool_cap = KP_MAX(before + n, 64);
        r->spool = kp_calloc(r->spool_cap, sizeof(*r->spool));
        r->spool_head = 0;
        r->spool_cnt = before;
    }
    if (r->spool_cap - r->spool_cnt < n && r->spool_head > 0) {
        memmove(r->spool, r->spool + r->spool_head,
                (r->spool_cnt - r->spool_head) * sizeof(*r->spool));
        r->spool_cnt -= r->spool_head;
        r->spool_head = 0;
    }
    if (r->spool_cap - r->spool_cnt < n) {
        uint32_t cap = KP_MAX(r->spool_cap * 2, r->spool_cnt + n);
        r->spool = kp_realloc(r->spool, cap * sizeof(*r->spool));
        r->spool_cap = cap;
    }
    if (seqs) {
        memcpy(r->spool + r->spool_cnt, seqs, n * sizeof(*seqs));
    } else {
        memset(r->spool + r->spool_cnt, 0, n * sizeof(*r->spool));
    }
    r->spool_cnt += n;
}

void kp_runs_add_spool(struct kp_runs *r, uint64_t spool_seq)
{
    if (r->spool && r->spool_cnt < r->spool_cap) {
        r->spool[r->spool_cnt++] = spool_seq; /* per message: no call */
    } else if (spool_seq || r->spool) {
        kp_runs_push_spool(r, &spool_seq, 1);
    }
}

const uint64_t *kp_runs_spool(const struct kp_runs *r, uint32_t *n)
{
    *n = r->spool ? r->spool_cnt - r->spool_head : 0;
    return r->spool ? r->spool + r->spool_head : NULL;
}

/* Drops the first k messages of the head run (k <= its count). */
static void kp_runs_pop(struct kp_runs *r, uint32_t k)
{
    struct kp_run *run = &r->v[r->head];

    if (run->tally->receipts) {
        r->seq_head += k;
    }
    if (r->spool) {
        r->spool_head += k;
    }
    run->count -= k;
    if (run->count == 0) {
        kp_tally_put(run->tally);
        r->head++;
    }
    if (r->head == r->cnt) {
        r->head = r->cnt = 0;
        r->seq_head = r->seq_cnt = 0;
        r->spool_head = r->spool_cnt = 0;
    }
}

void kp_runs_take(struct kp_runs *dst, struct kp_runs *src, uint32_t n)
{
    while (n > 0 && src->head < src->cnt) {
        struct kp_run *run = &src->v[src->head];
        uint32_t k = KP_MIN(n, run->count);
        kp_runs_push(dst, run->tally, run->gen, k);
        if (run->tally->receipts) {
            kp_runs_push_seqs(dst, src->seqs + src->seq_head, k);
        }
        if (src->spool || dst->spool) {
            kp_runs_push_spool(dst, src->spool ? src->spool + src->spool_head
                                               : NULL,
                               k);
        }
        n -= k;
        kp_runs_pop(src, k);
    }
}

void kp_runs_first(const struct kp_runs *r, struct kp_tally **t,
                   uint32_t *gen, uint64_t *seq)
{
    const struct kp_run *run = &r->v[r->head];

    kp_assert(r->head < r->cnt);
    *t = run->tally;
    *gen = run->gen;
    *seq = run->tally->receipts ? r->seqs[r->seq_head] : 0;
}

void kp_runs_drop_first(struct kp_runs *r)
{
    kp_assert(r->head < r->cnt);
    kp_runs_pop(r, 1);
}

uint64_t kp_runs_count(const struct kp_runs *r)
{
    uint64_t n = 0;
    for (uint32_t i = r->head; i < r->cnt; i++) {
        n += r->v[i].count;
    }
    return n;
}

void kp_runs_deinit(struct kp_runs *r)
{
    for (uint32_t i = r->head; i < r->cnt; i++) {
        kp_tally_put(r->v[i].tally);
    }
    free(r->v);
    free(r->seqs);
    free(r->spool);
    memset(r, 0, sizeof(*r));
}

void kp_runs_settle(const struct kp_runs *r, struct kp_gens *g,
                    enum kp_fate fate, enum kp_reason why, int32_t part,
                    int64_t base_offset)
{
    bool ok = fate == KP_FATE_OK;
    const uint64_t *seqs = r->seqs ? r->seqs + r->seq_head : NULL;
    int64_t index = 0;

    for (uint32_t i = r->head; i < r->cnt; i++) {
        const struct kp_run *run = &r->v[i];
        struct kp_tally *t = run->tally;
        kp_gens_settle(g, run->gen, run->count, ok);
        if (t->receipts) {
            if (t->owner) {
                /* recorded (dead letter) before this: DESIGN 18 */
                kp_tally_receipts(t, fate, seqs, run->count, why, part,
                                  base_offset < 0 ? -1 : base_offset + index);
            }
            seqs += run->count;
        }
        index += run->count;
        if (fate == KP_FATE_REJECTED) {
            kp_tally_unaccept(t, run->count);
        } else {
            kp_tally_settle(t, run->count, ok);
        }
    }
}

void kp_gens_init(struct kp_gens *g)
{
    memset(g, 0, sizeof(*g));
    g->cap = 8;
    g->pending = kp_calloc(g->cap, sizeof(*g->pending));
    g->cnt = 1; /* generation 0 */
}

void kp_gens_deinit(struct kp_gens *g)
{
    free(g->pending);
    memset(g, 0, sizeof(*g));
}

static uint64_t *kp_gens_slot(struct kp_gens *g, uint32_t gen)
{
    uint32_t i = gen - g->base;
    kp_assert(i < g->cnt);
    return &g->pending[i];
}

void kp_gens_add(struct kp_gens *g, uint32_t gen, uint64_t n)
{
    *kp_gens_slot(g, gen) += n;
}

/* Drops settled generations from the front, keeping the current one. */
static void kp_gens_trim(struct kp_gens *g)
{
    uint32_t i = 0;
    while (i + 1 < g->cnt && g->pending[i] == 0) {
        i++;
    }
    if (i) {
        memmove(g->pending, g->pending + i, (g->cnt - i) * sizeof(uint64_t));
        g->cnt -= i;
        g->base += i;
    }
}

void kp_gens_settle(struct kp_gens *g, uint32_t gen, uint64_t n, bool ok)
{
    uint64_t *p = kp_gens_slot(g, gen);
    kp_assert(*p >= n);
    *p -= n;
    kp_gens_trim(g);
    for (struct kp_barrier *b = g->barriers; b; b = b->next) {
        if ((int32_t)(gen - b->gen) <= 0) {
            if (ok) {
                b->delivered += n;
            } else {
                b->failed += n;
            }
        }
    }
}

/* Starts a new generation; returns the one a barrier must wait for. */
static uint32_t kp_gens_next(struct kp_gens *g)
{
    uint32_t old = g->current;
    if (g->pending[g->cnt - 1] == 0 && g->cnt == 1) {
        /* Nothing pending at all: reuse the slot. */
        g->base++;
        g->current++;
        return old;
    }
    if (g->cnt == g->cap) {
        g->cap *= 2;
        g->pending = kp_realloc(g->pending, g->cap * sizeof(uint64_t));
    }
    g->pending[g->cnt++] = 0;
    g->current++;
    return old;
}

void kp_gens_barrier(struct kp_gens *g, struct kp_barrier *b)
{
    b->gen = kp_gens_next(g);
    b->delivered = b->failed = 0;
    b->next = g->barriers;
    g->barriers = b;
}

void kp_gens_unwatch(struct kp_gens *g, struct kp_barrier *b)
{
    for (struct kp_barrier **p = &g->barriers; *p; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            return;
        }
    }
}

bool kp_gens_done(const struct kp_gens *g, uint32_t gen)
{
    /* Generations below base are settled; check base..gen. */
    if ((int32_t)(gen - g->base) < 0) {
        return true;
    }
    for (uint32_t i = 0; i <= gen - g->base && i < g->cnt; i++) {
        if (g->pending[i]) {
            return false;
        }
    }
    return true;
}
