/*
 * kp_broker.c - a broker connection: nonblocking connect, ApiVersions
 * negotiation, pipelined requests written with writev, responses matched by
 * correlation id, and the Produce sender that turns the sealed batches of
 * the partitions it leads into one ProduceRequest per round.
 */
#include "kp_broker.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_batch.h"
#include "kp_conf.h"
#include "kp_ctx.h"
#include "kp_idemp.h"
#include "kp_log.h"
#include "kp_metadata.h"
#include "kp_partition.h"
#include "kp_stats.h"
#include "kp_topic.h"

#define KP_BROKER_RBUF_MIN (64 * 1024)
#define KP_BROKER_MAX_FRAME (64 * 1024 * 1024)
#define KP_BROKER_MAX_REQUEST (16 * 1024 * 1024)
#define KP_BROKER_BACKOFF_MIN_MS 20
#define KP_BROKER_BACKOFF_MAX_MS 10000
#define KP_SW_NAME "kproxyd"

const char *const kp_broker_state_names[KP_BROKER__COUNT] = {
    "init", "connecting", "apiversions", "up", "backoff"};

static struct kp_ratelimit kp_broker_rl;

static void kp_broker_on_read(struct ev_loop *loop, ev_io *w, int revents);
static void kp_broker_on_write(struct ev_loop *loop, ev_io *w, int revents);
static void kp_broker_on_timer(struct ev_loop *loop, ev_timer *w,
                               int revents);
static void kp_broker_write(struct kp_broker *b);
static void kp_broker_on_throttle(struct ev_loop *loop, ev_timer *w,
                                  int revents);

struct kp_broker *kp_broker_create(struct kp_ctx *ctx, int32_t node_id,
                                   const char *host, int port)
{
    struct kp_broker *b = kp_calloc(1, sizeof(*b));
    b->ctx = ctx;
    b->node_id = node_id;
    b->host = kp_strdup(host);
    b->port = port;
    b->fd = -1;
    b->state = KP_BROKER_INIT;
    b->backoff_ms = 0;
    TAILQ_INIT(&b->reqs);
    TAILQ_INIT(&b->ready);
    ev_init(&b->rio, kp_broker_on_read);
    ev_init(&b->wio, kp_broker_on_write);
    ev_init(&b->timer, kp_broker_on_timer);
    ev_init(&b->throttle_timer, kp_broker_on_throttle);
    b->rio.data = b->wio.data = b->timer.data = b->throttle_timer.data = b;
    for (int i = 0; i < KP_API_KEY_MAX; i++) {
        b->api_min[i] = b->api_max[i] = -1;
    }
    return b;
}

void kp_broker_destroy(struct kp_broker *b)
{
    kp_assert(TAILQ_EMPTY(&b->reqs));
    ev_io_stop(b->ctx->loop, &b->rio);
    ev_io_stop(b->ctx->loop, &b->wio);
    ev_timer_stop(b->ctx->loop, &b->timer);
    ev_timer_stop(b->ctx->loop, &b->throttle_timer);
    if (b->fd >= 0) {
        close(b->fd);
    }
    kp_buf_deinit(&b->rbuf);
    free(b->host);
    free(b);
}

static const char *kp_broker_name(const struct kp_broker *b)
{
    static char name[320];
    if (b->node_id >= 0) {
        snprintf(name, sizeof(name), "broker %d (%s:%d)", b->node_id,
                 b->host, b->port);
    } else {
        snprintf(name, sizeof(name), "bootstrap %s:%d", b->host, b->port);
    }
    return name;
}

static void kp_broker_set_state(struct kp_broker *b,
                                enum kp_broker_state state)
{
    if (b->state != state) {
        kp_debug("%s: %s -> %s", kp_broker_name(b),
                 kp_broker_state_names[b->state],
                 kp_broker_state_names[state]);
    }
    b->state = state;
}

static void kp_broker_timer_in(struct kp_broker *b, int64_t ms)
{
    ev_timer_stop(b->ctx->loop, &b->timer);
    ev_timer_set(&b->timer, (double)KP_MAX(ms, 0) / 1000.0, 0.);
    ev_timer_start(b->ctx->loop, &b->timer);
}

static int kp_broker_request_timeout(const struct kp_broker *b)
{
    return b->ctx->conf->producer.request_timeout_ms;
}

static void kp_request_free(struct kp_request *r)
{
    kp_req_deinit(&r->req);
    free(r->batches);
    free(r);
}

/* Hands the batches of a request that got no answer back to their
 * partitions, in order. */
static void kp_broker_requeue(struct kp_broker *b, struct kp_request *r)
{
    struct kp_ctx *ctx = b->ctx;

    for (uint32_t i = 0; i < r->batch_cnt; i++) {
        struct kp_batch *bt = r->batches[i];
        struct kp_partition *p = bt->part;
        p->inflight--;
        kp_partition_retry(ctx, p, bt, true);
    }
    r->batch_cnt = 0;
}

/* Tells the owner of a non-produce request that it failed. */
static void kp_broker_fail_request(struct kp_broker *b, struct kp_request *r)
{
    switch (r->api_key) {
    case KP_API_PRODUCE:
        kp_broker_requeue(b, r);
        break;
    case KP_API_METADATA:
        kp_metadata_on_response(b->ctx, b, r->version, NULL, 0);
        break;
    case KP_API_INITPID:
        kp_idemp_on_response(b->ctx, b, r->version, NULL, 0);
        break;
    default:
        break;
    }
}

void kp_broker_close(struct kp_broker *b, const char *why, bool backoff)
{
    struct kp_ctx *ctx = b->ctx;
    struct kp_request *r;
    struct kp_partition *p;
    bool was_up = b->state == KP_BROKER_UP;

    if (b->state == KP_BROKER_INIT || b->state == KP_BROKER_BACKOFF) {
        return;
    }
    if (why) {
        kp_log_rl(&kp_broker_rl, was_up ? KP_LOG_WARNING : KP_LOG_INFO,
                  "%s: %s", kp_broker_name(b), why);
    }
    ev_io_stop(ctx->loop, &b->rio);
    ev_io_stop(ctx->loop, &b->wio);
    ev_timer_stop(ctx->loop, &b->timer);
    close(b->fd);
    b->fd = -1;
    kp_buf_reset(&b->rbuf);
    if (b->rbuf.cap > 4 * KP_BROKER_RBUF_MIN) {
        kp_buf_deinit(&b->rbuf);
    }
    while ((p = TAILQ_FIRST(&b->ready)) != NULL) {
        TAILQ_REMOVE(&b->ready, p, ready_link);
        p->on_ready = false;
    }
    kp_broker_set_state(b, backoff ? KP_BROKER_BACKOFF : KP_BROKER_INIT);
    /* In-flight work goes back in its original order. */
    TAILQ_HEAD(, kp_request) failed = TAILQ_HEAD_INITIALIZER(failed);
    TAILQ_CONCAT(&failed, &b->reqs, link);
    b->write_head = NULL;
    b->inflight = 0;
    while ((r = TAILQ_FIRST(&failed)) != NULL) {
        TAILQ_REMOVE(&failed, r, link);
        kp_broker_fail_request(b, r);
        kp_request_free(r);
    }
    if (backoff) {
        /* Exponential, from retry_backoff_ms up to retry_backoff_max_ms
         * (never below KP_BROKER_BACKOFF_MIN_MS: no busy loop whatever the
         * settings; a broker too old to use waits the longest), with +-20%
         * jitter so that reconnects to a restarted cluster spread out. */
        const struct kp_producer_conf *pc = &ctx->conf->producer;
        int lo = KP_MAX(pc->retry_backoff_ms, KP_BROKER_BACKOFF_MIN_MS);
        int hi = KP_MAX(pc->retry_backoff_max_ms, lo);
        int cur = b->backoff_ms >= KP_BROKER_BACKOFF_MAX_MS
                      ? KP_BROKER_BACKOFF_MAX_MS
                      : KP_MIN(KP_MAX(b->backoff_ms, lo), hi);
        int ms = (int)((int64_t)cur * (80 + random() % 41) / 100);
        if (cur < KP_BROKER_BACKOFF_MAX_MS) {
            b->backoff_ms = KP_MIN(cur * 2, hi);
        }
        kp_debug("%s: reconnect in %d ms", kp_broker_name(b), ms);
        kp_broker_timer_in(b, ms);
    }
    if ((was_up || b->node_id >= 0) && !b->decommissioned) {
        b->reconnects++;
        kp_metadata_refresh(ctx, "broker connection lost");
    }
}

/* Resolves and starts a nonblocking connect. Name resolution is
 * synchronous: broker addresses are normally numeric or in /etc/hosts. */
void kp_broker_connect(struct kp_broker *b)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    char port[16];
    int fd, one = 1, rc;

    if (b->state != KP_BROKER_INIT) {
        return;
    }
    snprintf(port, sizeof(port), "%d", b->port);
    rc = getaddrinfo(b->host, port, &hints, &ai);
    if (rc != 0) {
        kp_log_rl(&kp_broker_rl, KP_LOG_WARNING, "%s: resolve: %s",
                  kp_broker_name(b), gai_strerror(rc));
        kp_broker_set_state(b, KP_BROKER_CONNECTING);
        kp_broker_close(b, NULL, true);
        return;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        kp_err("%s: socket: %s", kp_broker_name(b), strerror(errno));
        freeaddrinfo(ai);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    b->fd = fd;
    kp_broker_set_state(b, KP_BROKER_CONNECTING);
    if (rc < 0 && errno != EINPROGRESS) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", strerror(errno));
        kp_broker_close(b, why, true);
        return;
    }
    ev_io_set(&b->rio, fd, EV_READ);
    ev_io_set(&b->wio, fd, EV_WRITE);
    ev_io_start(b->ctx->loop, &b->wio);
    kp_broker_timer_in(b, kp_broker_request_timeout(b));
}

void kp_broker_set_addr(struct kp_broker *b, const char *host, int port)
{
    if (strcmp(b->host, host) == 0 && b->port == port) {
        return;
    }
    kp_info("%s: address changes to %s:%d", kp_broker_name(b), host, port);
    free(b->host);
    b->host = kp_strdup(host);
    b->port = port;
    kp_broker_close(b, "address changed", false);
    kp_broker_connect(b);
}

bool kp_broker_supports(const struct kp_broker *b, int16_t api_key)
{
    return b->state == KP_BROKER_UP && api_key < KP_API_KEY_MAX &&
           b->api_max[api_key] >= 0;
}

struct kp_request *kp_broker_request_start(struct kp_broker *b,
                                           int16_t api_key, int16_t version)
{
    struct kp_request *r = kp_calloc(1, sizeof(*r));
    r->corr_id = b->next_corr++;
    if (b->next_corr < 0) {
        b->next_corr = 0;
    }
    r->api_key = api_key;
    r->version = version;
    kp_req_init(&r->req);
    return r;
}

void kp_broker_request_send(struct kp_broker *b, struct kp_request *r)
{
    r->deadline_ms = kp_mono_ms() + kp_broker_request_timeout(b);
    TAILQ_INSERT_TAIL(&b->reqs, r, link);
    if (!b->write_head) {
        b->write_head = r;
    }
    b->inflight++;
    b->requests++;
    if (!ev_is_active(&b->timer)) {
        kp_broker_timer_in(b, kp_broker_request_timeout(b));
    }
    kp_broker_write(b);
}

static void kp_broker_send_apiversions(struct kp_broker *b, int16_t version)
{
    struct kp_request *r =
        kp_broker_request_start(b, KP_API_APIVERSIONS, version);
    kp_proto_enc_apiversions(&r->req, version, r->corr_id,
                             b->ctx->conf->client_id, KP_SW_NAME, KP_VERSION);
    b->apiversions_ver = version;
    kp_broker_request_send(b, r);
}

/* Every partition this broker leads may have become sendable. */
static void kp_broker_ready_partitions(struct kp_ctx *ctx, struct kp_topic *t,
                                       void *arg)
{
    struct kp_broker *b = arg;
    for (int32_t i = 0; i < t->part_cnt; i++) {
        if (t->parts[i]->broker == b) {
            kp_partition_update_ready(ctx, t->parts[i]);
        }
    }
}

static void kp_broker_on_apiversions(struct kp_broker *b, const uint8_t *body,
                                     size_t len)
{
    struct kp_apiversions_resp av;

    /* UNSUPPORTED_VERSION: the body that follows the error code is in
     * whatever form the broker chose (v0 for Kafka, something else for
     * librdkafka's mock), so only the error code is trusted: ask again at
     * v0, which every broker speaks. */
    if (len >= 2 && body[0] == 0 && body[1] == 35 &&
        b->apiversions_ver > 0) {
        int16_t v = 0;
        kp_debug("%s: ApiVersions v%d unsupported, retrying with v%d",
                 kp_broker_name(b), b->apiversions_ver, v);
        kp_broker_send_apiversions(b, v);
        return;
    }
    if (kp_proto_dec_apiversions(body, len, b->apiversions_ver, &av) !=
        KP_OK) {
        kp_broker_close(b, "malformed ApiVersions response", true);
        return;
    }
    if (av.error != 0) {
        char why[96];
        snprintf(why, sizeof(why), "ApiVersions: %s",
                 kp_proto_err_name(av.error));
        kp_broker_close(b, why, true);
        return;
    }
    memcpy(b->api_min, av.min, sizeof(b->api_min));
    memcpy(b->api_max, av.max, sizeof(b->api_max));
    b->produce_ver = kp_proto_pick_version(KP_API_PRODUCE, av.min[0], av.max[0]);
    b->metadata_ver = kp_proto_pick_version(KP_API_METADATA, av.min[3],
                                            av.max[3]);
    b->initpid_ver = kp_proto_pick_version(KP_API_INITPID, av.min[22],
                                           av.max[22]);
    if (b->produce_ver < 0 || b->metadata_ver < 0) {
        kp_err("%s: no common Produce (>= v3) or Metadata version "
               "(broker Produce v%d-v%d, Metadata v%d-v%d): broker too old",
               kp_broker_name(b), av.min[0], av.max[0], av.min[3], av.max[3]);
        b->backoff_ms = KP_BROKER_BACKOFF_MAX_MS;
        kp_broker_close(b, NULL, true);
        return;
    }
    kp_debug("%s: up (Produce v%d, Metadata v%d, InitProducerId v%d)",
             kp_broker_name(b), b->produce_ver, b->metadata_ver,
             b->initpid_ver);
    kp_broker_set_state(b, KP_BROKER_UP);
    b->backoff_ms = 0; /* the next reconnect starts at the minimum */
    kp_metadata_on_broker_up(b->ctx, b);
    kp_idemp_kick(b->ctx);
    kp_topic_foreach(&b->ctx->topics, kp_broker_ready_partitions, b->ctx, b);
}

static void kp_broker_on_connected(struct kp_broker *b)
{
    int err = 0;
    socklen_t len = sizeof(err);

    getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", strerror(err));
        kp_broker_close(b, why, true);
        return;
    }
    ev_io_stop(b->ctx->loop, &b->wio);
    ev_io_start(b->ctx->loop, &b->rio);
    kp_broker_set_state(b, KP_BROKER_APIVERSIONS);
    kp_broker_send_apiversions(b, 3);
}

/* ---- Produce ---- */

/* What an error code in a Produce response means for the batch. */
enum kp_action {
    KP_ACT_DELIVERED,
    KP_ACT_RETRY,
    KP_ACT_RETRY_REFRESH, /* metadata is stale */
    KP_ACT_RETRY_NEW_PID, /* the producer id/sequence state must be reset */
    KP_ACT_SPLIT,         /* batch too large: halves, then single messages */
    KP_ACT_FAIL,
    KP_ACT__COUNT
};

static enum kp_action kp_broker_err_action(int16_t err, int32_t count)
{
    switch (err) {
    case 0:  /* NONE */
    case 46: /* DUPLICATE_SEQUENCE_NUMBER: the broker has it already */
        return KP_ACT_DELIVERED;
    case 3:  /* UNKNOWN_TOPIC_OR_PARTITION */
    case 5:  /* LEADER_NOT_AVAILABLE */
    case 6:  /* NOT_LEADER_OR_FOLLOWER */
    case 8:  /* BROKER_NOT_AVAILABLE */
    case 56: /* KAFKA_STORAGE_ERROR */
    case -2: /* partition missing from the response */
        return KP_ACT_RETRY_REFRESH;
    case 7:  /* REQUEST_TIMED_OUT */
    case 13: /* NETWORK_EXCEPTION */
    case 19: /* NOT_ENOUGH_REPLICAS */
    case 20: /* NOT_ENOUGH_REPLICAS_AFTER_APPEND */
    case 89: /* THROTTLING_QUOTA_EXCEEDED */
        return KP_ACT_RETRY;
    case 45: /* OUT_OF_ORDER_SEQUENCE_NUMBER */
    case 47: /* INVALID_PRODUCER_EPOCH */
    case 59: /* UNKNOWN_PRODUCER_ID */
        return KP_ACT_RETRY_NEW_PID;
    case 10: /* MESSAGE_TOO_LARGE */
        return count > 1 ? KP_ACT_SPLIT : KP_ACT_FAIL;
    default: /* INVALID_RECORD, RECORD_LIST_TOO_LARGE, authorization, ... */
        return KP_ACT_FAIL;
    }
}

/* Whether bt carries sequences of the current producer id and epoch. */
static bool kp_broker_stamped_now(const struct kp_ctx *ctx,
                                  const struct kp_batch *bt)
{
    return bt->base_seq >= 0 && bt->pid == ctx->pid &&
           bt->epoch == ctx->epoch;
}

static bool kp_batch_expired(const struct kp_batch *bt, int64_t now_ms)
{
    return now_ms - bt->created_ms >= bt->pconf->delivery_timeout_ms;
}

/* The fate of one batch of a Produce response. */
static void kp_broker_settle(struct kp_broker *b, struct kp_batch *bt,
                             int16_t err)
{
    struct kp_ctx *ctx = b->ctx;
    struct kp_partition *p = bt->part;
    enum kp_action act = kp_broker_err_action(err, bt->count);
    int64_t now = kp_mono_ms();
    const char *reason = NULL;

    p->inflight--;
    if (act != KP_ACT_DELIVERED && act != KP_ACT_FAIL &&
        kp_batch_expired(bt, now)) {
        act = KP_ACT_FAIL;
        reason = "delivery timeout";
    }
    switch (act) {
    case KP_ACT_DELIVERED:
        kp_partition_batch_done(ctx, bt, 0, NULL);
        break;
    case KP_ACT_RETRY_REFRESH:
        kp_metadata_refresh(ctx, kp_proto_err_name(err));
        kp_partition_retry(ctx, p, bt, true);
        break;
    case KP_ACT_RETRY_NEW_PID:
        /* An answer about an id already replaced changes nothing: the
         * batch is stamped again under the current one when resent. */
        if (kp_broker_stamped_now(ctx, bt)) {
            kp_idemp_reset(ctx, kp_proto_err_name(err));
        }
        kp_partition_retry(ctx, p, bt, true);
        break;
    case KP_ACT_RETRY:
        kp_partition_retry(ctx, p, bt, true);
        break;
    case KP_ACT_SPLIT:
        kp_partition_split(ctx, p, bt);
        break;
    case KP_ACT_FAIL:
    default:
        if (kp_broker_stamped_now(ctx, bt)) {
            /* The sequence now has a gap: later batches need a new id. */
            kp_idemp_reset(ctx, "batch failed");
        }
        kp_partition_batch_done(ctx, bt, err, reason);
        break;
    }
    kp_partition_update_ready(ctx, p);
}

static const struct kp_produce_presp *
kp_broker_find_presp(const struct kp_produce_resp *resp, const char *topic,
                     int32_t partition)
{
    for (int32_t t = 0; t < resp->topic_cnt; t++) {
        if (strcmp(resp->topics[t].name, topic) != 0) {
            continue;
        }
        for (int32_t i = 0; i < resp->topics[t].part_cnt; i++) {
            if (resp->topics[t].parts[i].partition == partition) {
                return &resp->topics[t].parts[i];
            }
        }
    }
    return NULL;
}

/* What the broker said about a refused batch (Produce v8+ adds a message
 * and the records at fault). */
static void kp_broker_log_presp(const struct kp_broker *b,
                                const struct kp_batch *bt,
                                const struct kp_produce_presp *pr)
{
    bool msg = pr->error_message && pr->error_message[0];
    bool rec = pr->record_error && pr->record_error[0];

    if (!msg && !rec) {
        return;
    }
    kp_log_rl(&kp_broker_rl, KP_LOG_WARNING,
              "%s: %s [%d]: %s%s%s%s (record %d: %s)", kp_broker_name(b),
              bt->part->topic->name, bt->part->id,
              kp_proto_err_name(pr->error), msg ? " \"" : "",
              msg ? pr->error_message : "", msg ? "\"" : "",
              pr->record_error_index, rec ? pr->record_error : "-");
}

static void kp_broker_on_produce(struct kp_broker *b, struct kp_request *r,
                                 const uint8_t *body, size_t len)
{
    struct kp_produce_resp resp;

    if (kp_proto_dec_produce(body, len, r->version, &resp) != KP_OK) {
        kp_proto_produce_resp_free(&resp);
        /* Put the request back so close() retries its batches in order. */
        TAILQ_INSERT_HEAD(&b->reqs, r, link);
        b->inflight++;
        kp_broker_close(b, "malformed Produce response", true);
        return;
    }
    for (uint32_t i = 0; i < r->batch_cnt; i++) {
        struct kp_batch *bt = r->batches[i];
        const struct kp_produce_presp *pr = kp_broker_find_presp(
            &resp, bt->part->topic->name, bt->part->id);
        if (pr && pr->error) {
            kp_broker_log_presp(b, bt, pr);
        }
        kp_broker_settle(b, bt, pr ? pr->error : -2);
    }
    kp_broker_throttle(b, resp.throttle_ms);
    r->batch_cnt = 0;
    kp_proto_produce_resp_free(&resp);
    kp_request_free(r);
}

static int kp_batch_cmp(const void *a, const void *b)
{
    const struct kp_batch *x = *(struct kp_batch *const *)a;
    const struct kp_batch *y = *(struct kp_batch *const *)b;
    if (x->part->topic != y->part->topic) {
        return x->part->topic < y->part->topic ? -1 : 1;
    }
    return x->part->id - y->part->id;
}

/* Gives a batch its producer id and sequence when it is first sent (or
 * first sent under a new producer id). */
static void kp_broker_stamp(struct kp_ctx *ctx, struct kp_batch *bt)
{
    struct kp_partition *p = bt->part;

    if (!bt->pconf->idempotence) {
        return;
    }
    if (p->pid != ctx->pid || p->epoch != ctx->epoch) {
        kp_assert(p->inflight == 0);
        p->pid = ctx->pid;
        p->epoch = ctx->epoch;
        p->next_seq = 0;
    }
    if (bt->base_seq >= 0 && bt->pid == ctx->pid && bt->epoch == ctx->epoch) {
        return; /* a retry: the identical bytes go again */
    }
    kp_batch_stamp(bt, ctx->pid, ctx->epoch, p->next_seq);
    p->next_seq = (int32_t)(((int64_t)p->next_seq + bt->count) & INT32_MAX);
}

/* One debug line per batch sent: what the faults tests read to prove that
 * a resend is the identical batch and sequences have no gaps. */
static void kp_broker_trace(const struct kp_broker *b,
                            const struct kp_batch *bt)
{
    struct kp_rd r;

    if (kp_log_get_level() < KP_LOG_DEBUG) {
        return;
    }
    kp_rd_init(&r, bt->wire + KP_BATCH_OFF_CRC, 4);
    kp_debug("produce: broker=%d topic=%s partition=%d pid=%lld epoch=%d "
             "seq=%d count=%d crc=%08x attempt=%d bytes=%zu id=%llu",
             b->node_id, bt->part->topic->name, bt->part->id,
             (long long)bt->pid, bt->epoch, bt->base_seq, bt->count,
             kp_rd_u32(&r), bt->attempts, bt->wire_len,
             (unsigned long long)bt->id);
}

/* Picks at most one batch per ready partition, all with the same acks. */
static uint32_t kp_broker_pick(struct kp_broker *b, struct kp_batch **out,
                               uint32_t max, int *acks)
{
    struct kp_ctx *ctx = b->ctx;
    struct kp_partition *p, *next;
    uint32_t n = 0;
    size_t bytes = 0;

    *acks = 2; /* none chosen yet */
    for (p = TAILQ_FIRST(&b->ready); p && n < max; p = next) {
        next = TAILQ_NEXT(p, ready_link);
        struct kp_batch *bt = TAILQ_FIRST(&p->queue);
        if (!kp_partition_sendable(ctx, p)) {
            TAILQ_REMOVE(&b->ready, p, ready_link);
            p->on_ready = false;
            continue;
        }
        if (*acks != 2 && bt->pconf->acks != *acks) {
            continue; /* another request carries it */
        }
        if (n > 0 && bytes + bt->wire_len > KP_BROKER_MAX_REQUEST) {
            break;
        }
        if (bt->codec_used == KP_CODEC_ZSTD && b->produce_ver < 7) {
            TAILQ_REMOVE(&p->queue, bt, link);
            kp_log_rl(&kp_broker_rl, KP_LOG_ERROR,
                      "%s: topic %s uses zstd, which needs Produce v7+ "
                      "(broker speaks v%d)",
                      kp_broker_name(b), p->topic->name, b->produce_ver);
            kp_partition_batch_done(ctx, bt, 76, "zstd needs Produce v7+");
            kp_partition_update_ready(ctx, p);
            continue;
        }
        *acks = bt->pconf->acks;
        TAILQ_REMOVE(&p->queue, bt, link);
        TAILQ_REMOVE(&b->ready, p, ready_link);
        p->on_ready = false;
        kp_broker_stamp(ctx, bt);
        p->inflight++;
        p->inflight_broker = b;
        bt->state = KP_BATCH_INFLIGHT;
        bt->attempts++;
        bytes += bt->wire_len;
        kp_broker_trace(b, bt);
        out[n++] = bt;
    }
    return n;
}

/* Builds one ProduceRequest from the picked batches, grouped by topic. */
static void kp_broker_produce_one(struct kp_broker *b, struct kp_batch **v,
                                  uint32_t n, int acks)
{
    struct kp_ctx *ctx = b->ctx;
    int16_t ver = b->produce_ver;
    struct kp_request *r = kp_broker_request_start(b, KP_API_PRODUCE, ver);
    int32_t topic_cnt = 0, timeout = 0;

    qsort(v, n, sizeof(*v), kp_batch_cmp);
    for (uint32_t i = 0; i < n; i++) {
        if (i == 0 || v[i]->part->topic != v[i - 1]->part->topic) {
            topic_cnt++;
        }
        timeout = KP_MAX(timeout, v[i]->pconf->request_timeout_ms);
    }
    kp_proto_produce_begin(&r->req, ver, r->corr_id, ctx->conf->client_id,
                           (int16_t)acks, timeout, topic_cnt);
    for (uint32_t i = 0; i < n;) {
        struct kp_topic *t = v[i]->part->topic;
        uint32_t j = i;
        while (j < n && v[j]->part->topic == t) {
            j++;
        }
        kp_proto_produce_topic(&r->req, ver, t->name, t->name_len,
                               (int32_t)(j - i));
        for (; i < j; i++) {
            kp_proto_produce_part(&r->req, ver, v[i]->part->id,
                                  v[i]->wire, v[i]->wire_len);
        }
        kp_proto_produce_topic_end(&r->req, ver);
    }
    kp_proto_produce_end(&r->req, ver);
    r->batches = kp_malloc(n * sizeof(*r->batches));
    memcpy(r->batches, v, n * sizeof(*v));
    r->batch_cnt = n;
    r->no_response = acks == 0;
    /* Partitions outlive the request's batches (acks=0 frees them once
     * written), so remember them first. */
    struct kp_partition *parts[512];
    for (uint32_t i = 0; i < n; i++) {
        parts[i] = v[i]->part;
    }
    kp_broker_request_send(b, r);
    /* Partitions with more sealed batches go back on the ready list. */
    for (uint32_t i = 0; i < n; i++) {
        kp_partition_update_ready(ctx, parts[i]);
    }
}

void kp_broker_kick(struct kp_broker *b)
{
    if (!b->dirty) {
        b->dirty = true;
        TAILQ_INSERT_TAIL(&b->ctx->dirty, b, dirty_link);
    }
}

void kp_broker_throttle(struct kp_broker *b, int32_t throttle_ms)
{
    if (throttle_ms > 0) {
        b->throttle_until_ms =
            KP_MAX(b->throttle_until_ms, kp_mono_ms() + throttle_ms);
        kp_debug("%s: throttled for %d ms", kp_broker_name(b), throttle_ms);
    }
}

static void kp_broker_on_throttle(struct ev_loop *loop, ev_timer *w,
                                  int revents)
{
    struct kp_broker *b = w->data;
    (void)loop;
    (void)revents;
    kp_broker_write(b); /* requests queued meanwhile */
    kp_broker_kick(b);
}

/* Arms the timer that ends a throttle; returns whether b is throttled. */
static bool kp_broker_throttled(struct kp_broker *b)
{
    int64_t now = kp_mono_ms();

    if (now >= b->throttle_until_ms) {
        return false;
    }
    if (!ev_is_active(&b->throttle_timer)) {
        ev_timer_set(&b->throttle_timer,
                     (double)(b->throttle_until_ms - now) / 1000.0, 0.);
        ev_timer_start(b->ctx->loop, &b->throttle_timer);
    }
    return true;
}

void kp_broker_flush(struct kp_broker *b)
{
    struct kp_batch *picked[512];
    int acks;

    if (kp_broker_throttled(b)) {
        return; /* flushed again when the throttle ends */
    }

    while (b->state == KP_BROKER_UP && !TAILQ_EMPTY(&b->ready) &&
           b->inflight < (uint32_t)b->ctx->conf->producer.max_in_flight &&
           kp_mono_ms() >= b->throttle_until_ms) {
        uint32_t n = kp_broker_pick(b, picked, KP_ARRAY_LEN(picked), &acks);
        if (n == 0) {
            break;
        }
        kp_broker_produce_one(b, picked, n, acks);
    }
}

/* ---- I/O ---- */

/* acks=0: a request with no response is done once written. */
static void kp_broker_written(struct kp_broker *b, struct kp_request *r)
{
    struct kp_ctx *ctx = b->ctx;

    r->sent_us = kp_mono_us();
    if (!r->no_response) {
        return;
    }
    TAILQ_REMOVE(&b->reqs, r, link);
    b->inflight--;
    for (uint32_t i = 0; i < r->batch_cnt; i++) {
        struct kp_batch *bt = r->batches[i];
        struct kp_partition *p = bt->part;
        p->inflight--;
        kp_partition_batch_done(ctx, bt, 0, NULL);
        kp_partition_update_ready(ctx, p);
    }
    r->batch_cnt = 0;
    kp_request_free(r);
}

static void kp_broker_write(struct kp_broker *b)
{
    struct iovec iov[64];

    if (b->state == KP_BROKER_CONNECTING || b->fd < 0) {
        return; /* written once connected */
    }
    /* KIP-219: nothing goes to a broker that throttles this connection
     * until its throttle time has passed. */
    if (b->write_head && kp_broker_throttled(b)) {
        return;
    }
    while (b->write_head) {
        size_t cnt = 0;
        struct kp_request *r = b->write_head;
        size_t skip = r->written;
        for (; r && cnt < KP_ARRAY_LEN(iov); r = TAILQ_NEXT(r, link)) {
            cnt += kp_req_iov(&r->req, skip, iov + cnt,
                              KP_ARRAY_LEN(iov) - cnt);
            skip = 0;
        }
        ssize_t n = writev(b->fd, iov, (int)cnt);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                ev_io_start(b->ctx->loop, &b->wio);
                return;
            }
            char why[128];
            snprintf(why, sizeof(why), "write: %s", strerror(errno));
            kp_broker_close(b, why, true);
            return;
        }
        size_t left = (size_t)n;
        while (left && b->write_head) {
            r = b->write_head;
            size_t room = r->req.total - r->written;
            size_t k = KP_MIN(room, left);
            r->written += k;
            left -= k;
            if (r->written == r->req.total) {
                b->write_head = TAILQ_NEXT(r, link);
                kp_broker_written(b, r);
            }
        }
    }
    ev_io_stop(b->ctx->loop, &b->wio);
}

static void kp_broker_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_broker *b = w->data;
    (void)loop;
    (void)revents;

    if (b->state == KP_BROKER_CONNECTING) {
        kp_broker_on_connected(b);
        return;
    }
    kp_broker_write(b);
}

static void kp_broker_rtt(struct kp_broker *b, const struct kp_request *r)
{
    int64_t rtt = kp_mono_us() - r->sent_us;
    b->rtt_us = b->rtt_us ? (b->rtt_us * 7 + rtt) / 8 : rtt;
    kp_stats_observe_rtt(b->ctx, b->node_id, r->api_key, rtt);
}

/* One complete response frame (after the size field). Returns KP_OK, or
 * KP_ERROR if the connection was closed while handling it. */
static int kp_broker_on_frame(struct kp_broker *b, const uint8_t *p,
                              size_t len)
{
    struct kp_request *r = TAILQ_FIRST(&b->reqs);
    struct kp_rd rd;
    int32_t corr;

    kp_rd_init(&rd, p, len);
    corr = kp_rd_i32(&rd);
    if (rd.err || !r || r->corr_id != corr || r->written != r->req.total) {
        char why[96];
        snprintf(why, sizeof(why),
                 "unexpected response (correlation id %d, expected %d)", corr,
                 r ? r->corr_id : -1);
        kp_broker_close(b, why, true);
        return KP_ERROR;
    }
    int hl = kp_proto_resp_header_len(r->api_key, r->version, p, len);
    if (hl < 0) {
        kp_broker_close(b, "malformed response header", true);
        return KP_ERROR;
    }
    TAILQ_REMOVE(&b->reqs, r, link);
    b->inflight--;
    kp_broker_rtt(b, r);
    if (TAILQ_EMPTY(&b->reqs)) {
        ev_timer_stop(b->ctx->loop, &b->timer);
    } else {
        kp_broker_timer_in(b, TAILQ_FIRST(&b->reqs)->deadline_ms -
                                  kp_mono_ms());
    }
    int fd = b->fd;
    const uint8_t *body = p + hl;
    size_t blen = len - (size_t)hl;
    switch (r->api_key) {
    case KP_API_APIVERSIONS:
        kp_broker_on_apiversions(b, body, blen);
        kp_request_free(r);
        break;
    case KP_API_METADATA:
        kp_metadata_on_response(b->ctx, b, r->version, body, blen);
        kp_request_free(r);
        break;
    case KP_API_INITPID:
        kp_idemp_on_response(b->ctx, b, r->version, body, blen);
        kp_request_free(r);
        break;
    case KP_API_PRODUCE:
        kp_broker_on_produce(b, r, body, blen);
        break;
    default:
        kp_request_free(r);
        break;
    }
    return b->fd == fd && b->fd >= 0 ? KP_OK : KP_ERROR;
}

static void kp_broker_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_broker *b = w->data;
    (void)loop;
    (void)revents;

    uint8_t *dst = kp_buf_reserve(&b->rbuf, KP_BROKER_RBUF_MIN);
    ssize_t n = read(b->fd, dst, b->rbuf.cap - b->rbuf.len);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        kp_broker_close(b, n == 0 ? "connection closed by broker"
                                  : strerror(errno),
                        true);
        return;
    }
    b->rbuf.len += (size_t)n;

    size_t off = 0;
    while (b->rbuf.len - off >= 4) {
        const uint8_t *p = b->rbuf.data + off;
        int32_t size = (int32_t)(((uint32_t)p[0] << 24) |
                                 ((uint32_t)p[1] << 16) |
                                 ((uint32_t)p[2] << 8) | p[3]);
        if (size < 4 || size > KP_BROKER_MAX_FRAME) {
            char why[64];
            snprintf(why, sizeof(why), "invalid response size %d", size);
            kp_broker_close(b, why, true);
            return;
        }
        if (b->rbuf.len - off < 4 + (size_t)size) {
            break; /* the buffer grows as the bytes arrive, not before */
        }
        if (kp_broker_on_frame(b, p + 4, (size_t)size) != KP_OK) {
            return; /* closed; rbuf was reset */
        }
        off += 4 + (size_t)size;
    }
    if (off) {
        memmove(b->rbuf.data, b->rbuf.data + off, b->rbuf.len - off);
        b->rbuf.len -= off;
    }
    /* Answers make room for more requests. */
    if (!TAILQ_EMPTY(&b->ready)) {
        kp_broker_kick(b);
    }
}

static void kp_broker_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kp_broker *b = w->data;
    (void)loop;
    (void)revents;

    switch (b->state) {
    case KP_BROKER_BACKOFF:
        kp_broker_set_state(b, KP_BROKER_INIT);
        if (!b->decommissioned) {
            kp_broker_connect(b);
        }
        break;
    case KP_BROKER_CONNECTING:
        kp_broker_close(b, "connect timed out", true);
        break;
    case KP_BROKER_APIVERSIONS:
        kp_broker_close(b, "no answer to ApiVersions", true);
        break;
    case KP_BROKER_UP: {
        struct kp_request *r = TAILQ_FIRST(&b->reqs);
        int64_t now = kp_mono_ms();
        if (r && now >= r->deadline_ms) {
            kp_broker_close(b, "request timed out", true);
        } else if (r) {
            kp_broker_timer_in(b, r->deadline_ms - now);
        }
        break;
    }
    default:
        break;
    }
}
