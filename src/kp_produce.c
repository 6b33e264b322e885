/*
 * kp_produce.c - the sender: ready lists per broker, ProduceRequests built
 * from them, and each answer's batches handed back to their partitions.
 */
#include "kp_produce.h"

#include <stdio.h>

#include "kp_batch.h"
#include "kp_conf.h"
#include "kp_counters.h"
#include "kp_idemp.h"
#include "kp_log.h"
#include "kp_metadata.h"
#include "kp_partition.h"
#include "kp_proto.h"
#include "kp_topic.h"

/* Batches per request, in bytes, as the Java producer's max.request.size
 * (a single larger batch still goes, alone). Bigger requests were worse on
 * both ends: a broker reads each into one allocation, and a request that
 * waits for many batches sends them long after they left the cache (on
 * loopback, 25% more CPU per message at 10 KB with 16 MiB requests). */
#define KP_PRODUCE_MAX_REQUEST (1024 * 1024)
#define KP_PRODUCE_MAX_BATCHES 512 /* per request */

static struct kp_ratelimit kp_produce_rl;

/* The batches of one request in flight: its completion's argument. */
struct kp_inflight {
    struct kp_produce *pr; /* borrowed */
    uint32_t cnt;
    struct kp_batch *v[]; /* borrowed: the partitions own them */
};

void kp_produce_init(struct kp_produce *pr, struct kp_conf *const *conf,
                     struct kp_metadata *md, struct kp_idemp *idemp,
                     struct kp_counters *n)
{
    memset(pr, 0, sizeof(*pr));
    pr->conf = conf;
    pr->md = md;
    pr->idemp = idemp;
    pr->n = n;
    TAILQ_INIT(&pr->dirty);
}

uint64_t kp_sender_errors(const struct kp_sender *s, int16_t code)
{
    int i = code + 1;
    return i >= 0 && i < KP_SENDER_ERR_CODES ? s->errors[i] : 0;
}

static void kp_sender_count_error(struct kp_sender *s, int16_t code)
{
    int i = code + 1;
    if (i >= 0 && i < KP_SENDER_ERR_CODES) {
        s->errors[i]++;
    }
}

/* ---- ready lists ---- */

static void kp_produce_kick(struct kp_produce *pr, struct kp_sender *s)
{
    if (!s->dirty) {
        s->dirty = true;
        TAILQ_INSERT_TAIL(&pr->dirty, s, dirty_link);
    }
}

static void kp_sender_unready(struct kp_partition *p)
{
    if (p->ready_on) {
        TAILQ_REMOVE(&p->ready_on->ready, p, ready_link);
        p->ready_on = NULL;
    }
}

/* The leader's sender, when its connection is up. */
static struct kp_sender *kp_produce_leader(struct kp_produce *pr,
                                           const struct kp_partition *p)
{
    struct kp_broker *b = p->leader >= 0 ? kp_metadata_broker(pr->md,
                                                              p->leader)
                                         : NULL;
    return b && b->state == KP_BROKER_UP ? b->sender : NULL;
}

void kp_produce_on_changed(struct kp_produce *pr, struct kp_partition *p)
{
    struct kp_sender *s = kp_produce_leader(pr, p);
    const struct kp_idemp *id = pr->idemp;
    bool want = s && kp_partition_can_send(p, kp_idemp_pid(id), id->epoch);

    if (!want) {
        kp_sender_unready(p);
        if (p->leader >= 0 && !s) {
            struct kp_broker *b = kp_metadata_broker(pr->md, p->leader);
            if (b && b->state == KP_BROKER_INIT && !b->retired) {
                kp_broker_connect(b); /* a new leader: connect to it */
            }
        }
        return;
    }
    if (p->ready_on != s) {
        kp_sender_unready(p);
        TAILQ_INSERT_TAIL(&s->ready, p, ready_link);
        p->ready_on = s;
    }
    kp_produce_kick(pr, s);
}

void kp_produce_forget(struct kp_produce *pr, struct kp_topic *t)
{
    (void)pr;
    for (int32_t i = 0; i < t->part_cnt; i++) {
        kp_sender_unready(t->parts[i]);
    }
}

void kp_produce_adopt(struct kp_produce *pr, struct kp_broker *b)
{
    struct kp_sender *s = kp_calloc(1, sizeof(*s));
    (void)pr;
    s->broker = b;
    TAILQ_INIT(&s->ready);
    b->sender = s;
}

static void kp_sender_clear(struct kp_produce *pr, struct kp_sender *s)
{
    struct kp_partition *p;

    while ((p = TAILQ_FIRST(&s->ready)) != NULL) {
        kp_sender_unready(p);
    }
    if (s->dirty) {
        TAILQ_REMOVE(&pr->dirty, s, dirty_link);
        s->dirty = false;
    }
}

void kp_produce_release(struct kp_produce *pr, struct kp_broker *b)
{
    kp_sender_clear(pr, b->sender);
    free(b->sender);
    b->sender = NULL;
}

void kp_produce_on_broker_state(struct kp_produce *pr, struct kp_broker *b)
{
    if (b->state != KP_BROKER_UP && b->sender) {
        kp_sender_clear(pr, b->sender);
    }
}

void kp_produce_on_room(struct kp_produce *pr, struct kp_broker *b)
{
    if (b->sender && !TAILQ_EMPTY(&b->sender->ready)) {
        kp_produce_kick(pr, b->sender);
    }
}

void kp_produce_abandon(struct kp_produce *pr)
{
    pr->abandoning = true;
}

/* ---- answers ---- */

static bool kp_batch_expired(const struct kp_batch *bt, int64_t now_ms)
{
    return now_ms - bt->created_ms >= bt->pconf->delivery_timeout_ms;
}

/* What the broker said about a refused batch (Produce v8+ adds a message
 * and the records at fault). */
static void kp_produce_log_presp(const struct kp_broker *b,
                                 const struct kp_batch *bt,
                                 const struct kp_produce_presp *ps)
{
    bool msg = ps->error_message && ps->error_message[0];
    bool rec = ps->record_error && ps->record_error[0];

    if (!msg && !rec) {
        return;
    }
    kp_log_rl(&kp_produce_rl, KP_LOG_WARNING,
              "%s: %s [%d]: %s%s%s%s (record %d: %s)", kp_broker_name(b),
              bt->part->topic_name, bt->part->id, kp_kerr_name(ps->error),
              msg ? " \"" : "", msg ? ps->error_message : "",
              msg ? "\"" : "", ps->record_error_index,
              rec ? ps->record_error : "-");
}

/*
 * Records the broker refused on their own: with the indices it gave
 * (Produce v8+ RecordErrors) only those fail; without them the batch is
 * halved until each bad record is alone.
 */
static void kp_produce_isolate(struct kp_partition *p, struct kp_batch *bt,
                               int16_t err,
                               const struct kp_produce_presp *ps)
{
    if (ps && ps->record_error_cnt > 0) {
        kp_partition_exclude(p, bt, ps->record_errors, ps->record_error_cnt,
                             kp_kerr_reason(err),
                             ps->record_error ? ps->record_error
                                              : kp_kerr_name(err));
    } else {
        kp_partition_split(p, bt);
    }
}

/* The fate of one batch of a Produce answer: err's action. */
static void kp_produce_settle(struct kp_produce *pr, struct kp_broker *b,
                              struct kp_batch *bt, int16_t err,
                              const struct kp_produce_presp *ps)
{
    struct kp_partition *p = bt->part;
    enum kp_kerr_action act = kp_kerr_action(err);

    if (err != KP_KERR_NONE) {
        kp_sender_count_error(b->sender, err);
    }
    if ((act == KP_ACT_SPLIT || act == KP_ACT_ISOLATE) && bt->count <= 1) {
        act = KP_ACT_FAIL; /* one message cannot be split */
    }
    if (act != KP_ACT_DELIVERED && act != KP_ACT_FAIL &&
        kp_batch_expired(bt, kp_mono_ms())) {
        kp_partition_fail(p, bt, KP_REASON_DELIVERY_TIMEOUT,
                          kp_kerr_name(err));
        return;
    }
    switch (act) {
    case KP_ACT_DELIVERED:
        kp_partition_delivered(p, bt, ps ? ps->base_offset : -1);
        break;
    case KP_ACT_RETRY_REFRESH:
        kp_metadata_refresh(pr->md, kp_kerr_name(err));
        kp_partition_retry(p, bt, true);
        break;
    case KP_ACT_RETRY_NEW_PID:
        /* An answer about an id already replaced changes nothing: the
         * batch is stamped again under the current one when resent. */
        kp_idemp_gap(pr->idemp, bt->pid, bt->epoch, kp_kerr_name(err));
        kp_partition_retry(p, bt, true);
        break;
    case KP_ACT_RETRY:
        kp_partition_retry(p, bt, true);
        break;
    case KP_ACT_SPLIT:
        kp_partition_split(p, bt);
        break;
    case KP_ACT_ISOLATE:
        kp_produce_isolate(p, bt, err, ps);
        break;
    case KP_ACT_FAIL:
    case KP_ACT__COUNT:
        kp_partition_fail(p, bt, kp_kerr_reason(err), kp_kerr_name(err));
        break;
    }
}

static const struct kp_produce_presp *
kp_produce_find(const struct kp_produce_resp *resp, const struct kp_batch *bt)
{
    const struct kp_partition *p = bt->part;

    for (int32_t t = 0; t < resp->topic_cnt; t++) {
        if (strcmp(resp->topics[t].name, p->topic_name) != 0) {
            continue;
        }
        for (int32_t i = 0; i < resp->topics[t].part_cnt; i++) {
            if (resp->topics[t].parts[i].partition == p->id) {
                return &resp->topics[t].parts[i];
            }
        }
    }
    return NULL;
}

/* Every batch of an answered request, by its partition's entry. */
static void kp_produce_answered(struct kp_produce *pr, struct kp_broker *b,
                                struct kp_inflight *fl,
                                const struct kp_produce_resp *resp)
{
    for (uint32_t i = 0; i < fl->cnt; i++) {
        struct kp_batch *bt = fl->v[i];
        const struct kp_produce_presp *ps = kp_produce_find(resp, bt);
        if (ps && ps->error) {
            kp_produce_log_presp(b, bt, ps);
        }
        kp_produce_settle(pr, b, bt,
                          ps ? ps->error : KP_KERR_PARTITION_MISSING, ps);
    }
}

/* No answer will come: the batches may be in Kafka. */
/* No answer will come. When some of the request was written the batches
 * may be in Kafka (unconfirmed); when none was, they are plainly retried
 * (or, at the shutdown deadline, fail as never sent). */
static void kp_produce_unanswered(struct kp_produce *pr,
                                  struct kp_inflight *fl, bool written)
{
    for (uint32_t i = 0; i < fl->cnt; i++) {
        struct kp_batch *bt = fl->v[i];
        bool sure = bt->unconfirmed || written;
        if (pr->abandoning) {
            kp_partition_fail(bt->part, bt,
                              sure ? KP_REASON_SHUTDOWN_UNCONFIRMED
                                   : KP_REASON_SHUTDOWN,
                              NULL);
        } else if (written) {
            kp_partition_unanswered(bt->part, bt);
        } else {
            kp_partition_retry(bt->part, bt, true);
        }
    }
}

static void kp_produce_on_response(void *arg, struct kp_broker *b,
                                   struct kp_request *r,
                                   enum kp_req_status st, const uint8_t *body,
                                   size_t len)
{
    struct kp_inflight *fl = arg;
    struct kp_produce *pr = fl->pr;
    struct kp_produce_resp resp;

    if (st == KP_REQ_WRITTEN) {
        for (uint32_t i = 0; i < fl->cnt; i++) {
            kp_partition_delivered(fl->v[i]->part, fl->v[i], -1);
        }
    } else if (st == KP_REQ_FAILED) {
        kp_produce_unanswered(pr, fl, r->written > 0);
    } else if (kp_proto_dec_produce(body, len, r->version, &resp) != KP_OK) {
        kp_proto_produce_resp_free(&resp);
        /* The connection is not to be believed any more: its other
         * requests fail back first, then these batches, all in order. */
        kp_broker_close(b, "malformed Produce response", true);
        kp_produce_unanswered(pr, fl, r->written > 0);
    } else {
        kp_broker_proven(b);
        kp_produce_answered(pr, b, fl, &resp);
        kp_broker_throttle(b, resp.throttle_ms);
        kp_proto_produce_resp_free(&resp);
    }
    free(fl);
}

/* ---- requests ---- */

static int kp_batch_cmp(const void *a, const void *b)
{
    const struct kp_batch *x = *(struct kp_batch *const *)a;
    const struct kp_batch *y = *(struct kp_batch *const *)b;
    if (x->part->topic != y->part->topic) {
        return x->part->topic < y->part->topic ? -1 : 1;
    }
    return x->part->id - y->part->id;
}

/* One debug line per batch sent: what the faults tests read to prove that
 * a resend is the identical batch and sequences have no gaps. */
static void kp_produce_trace(const struct kp_broker *b,
                             const struct kp_batch *bt)
{
    struct kp_rd r;

    if (kp_log_get_level() < KP_LOG_DEBUG) {
        return;
    }
    kp_rd_init(&r, bt->wire + KP_BATCH_OFF_CRC, 4);
    kp_debug("produce: broker=%d topic=%s partition=%d pid=%lld epoch=%d "
             "seq=%d count=%d crc=%08x attempt=%d bytes=%zu id=%llu",
             b->node_id, bt->part->topic_name, bt->part->id,
             (long long)bt->pid, bt->epoch, bt->base_seq, bt->count,
             kp_rd_u32(&r), bt->attempts, bt->wire_len,
             (unsigned long long)bt->id);
}

/* A head batch this broker cannot take at all fails; returns whether p's
 * head may go. */
static bool kp_produce_acceptable(struct kp_broker *b, struct kp_partition *p)
{
    const struct kp_batch *bt = kp_partition_head(p);
    int16_t ver = kp_broker_version(b, KP_API_PRODUCE);

    if (bt->codec_used == KP_CODEC_ZSTD && ver < 7) {
        kp_log_rl(&kp_produce_rl, KP_LOG_ERROR,
                  "%s: topic %s uses zstd, which needs Produce v7+ "
                  "(broker speaks v%d)",
                  kp_broker_name(b), p->topic_name, ver);
        kp_partition_drop_head(p, KP_REASON_UNSUPPORTED_VERSION,
                               "zstd needs Produce v7+");
        return false;
    }
    return true;
}

/* Picks at most one batch per ready partition, all with the same acks. */
static uint32_t kp_produce_pick(struct kp_produce *pr, struct kp_sender *s,
                                struct kp_batch **out, uint32_t max,
                                int *acks)
{
    struct kp_partition *p, *next;
    struct kp_broker *b = s->broker;
    int64_t pid = kp_idemp_pid(pr->idemp);
    uint32_t n = 0;
    size_t bytes = 0;

    *acks = 2; /* none chosen yet */
    for (p = TAILQ_FIRST(&s->ready); p && n < max; p = next) {
        next = TAILQ_NEXT(p, ready_link);
        if (!kp_partition_can_send(p, pid, pr->idemp->epoch)) {
            kp_sender_unready(p);
            continue;
        }
        const struct kp_batch *head = kp_partition_head(p);
        if (*acks != 2 && head->pconf->acks != *acks) {
            continue; /* another request carries it */
        }
        if (n > 0 && bytes + head->wire_len > KP_PRODUCE_MAX_REQUEST) {
            break;
        }
        if (!kp_produce_acceptable(b, p)) {
            continue;
        }
        *acks = head->pconf->acks;
        kp_sender_unready(p);
        struct kp_batch *bt =
            kp_partition_take(p, b->node_id, pid, pr->idemp->epoch);
        bytes += bt->wire_len;
        kp_produce_trace(b, bt);
        out[n++] = bt;
    }
    return n;
}

/* Encodes one ProduceRequest from batches sorted by topic. */
static void kp_produce_encode(struct kp_request *r, const char *client_id,
                              struct kp_batch **v, uint32_t n, int acks)
{
    int16_t ver = r->version;
    int32_t topic_cnt = 0, timeout = 0;

    for (uint32_t i = 0; i < n; i++) {
        if (i == 0 || v[i]->part->topic != v[i - 1]->part->topic) {
            topic_cnt++;
        }
        timeout = KP_MAX(timeout, v[i]->pconf->request_timeout_ms);
    }
    kp_proto_produce_begin(&r->req, ver, r->corr_id, client_id,
                           (int16_t)acks, timeout, topic_cnt);
    for (uint32_t i = 0; i < n;) {
        const struct kp_partition *p = v[i]->part;
        uint32_t j = i;
        while (j < n && v[j]->part->topic == p->topic) {
            j++;
        }
        kp_proto_produce_topic(&r->req, ver, p->topic_name,
                               p->topic_name_len, (int32_t)(j - i));
        for (; i < j; i++) {
            kp_proto_produce_part(&r->req, ver, v[i]->part->id, v[i]->wire,
                                  v[i]->wire_len);
        }
        kp_proto_produce_topic_end(&r->req, ver);
    }
    kp_proto_produce_end(&r->req, ver);
}

/* Sends one request with the picked batches; their partitions are looked
 * at again afterwards (more sealed batches go back on the ready list). */
static void kp_produce_send(struct kp_produce *pr, struct kp_sender *s,
                            struct kp_batch **v, uint32_t n, int acks)
{
    struct kp_broker *b = s->broker;
    int16_t ver = kp_broker_version(b, KP_API_PRODUCE);
    struct kp_request *r = kp_broker_request_start(b, KP_API_PRODUCE, ver);
    struct kp_inflight *fl = kp_malloc(sizeof(*fl) + n * sizeof(fl->v[0]));
    struct kp_partition *parts[KP_PRODUCE_MAX_BATCHES];

    qsort(v, n, sizeof(*v), kp_batch_cmp);
    kp_produce_encode(r, (*pr->conf)->client_id, v, n, acks);
    fl->pr = pr;
    fl->cnt = n;
    memcpy(fl->v, v, n * sizeof(*v));
    r->no_response = acks == 0;
    /* acks=0 settles (and frees) the batches as soon as they are written,
     * which may be inside the send: remember their partitions first. */
    for (uint32_t i = 0; i < n; i++) {
        parts[i] = v[i]->part;
    }
    kp_broker_request_send(b, r, kp_produce_on_response, fl);
    for (uint32_t i = 0; i < n; i++) {
        kp_produce_on_changed(pr, parts[i]);
    }
}

/* Builds requests from s's ready list while the broker takes them. */
static void kp_produce_flush_one(struct kp_produce *pr, struct kp_sender *s)
{
    struct kp_batch *picked[KP_PRODUCE_MAX_BATCHES];
    struct kp_broker *b = s->broker;
    uint32_t max_in_flight = (uint32_t)(*pr->conf)->producer.max_in_flight;
    int acks;

    while (!TAILQ_EMPTY(&s->ready) && b->inflight < max_in_flight &&
           kp_broker_writable(b)) {
        uint32_t n = kp_produce_pick(pr, s, picked, KP_ARRAY_LEN(picked),
                                     &acks);
        if (n == 0) {
            break;
        }
        kp_produce_send(pr, s, picked, n, acks);
    }
}

void kp_produce_flush(struct kp_produce *pr)
{
    struct kp_sender *s;

    while ((s = TAILQ_FIRST(&pr->dirty)) != NULL) {
        TAILQ_REMOVE(&pr->dirty, s, dirty_link);
        s->dirty = false;
        kp_produce_flush_one(pr, s);
    }
}
