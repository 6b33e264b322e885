/*
 * kp_idemp.c - the idempotent producer's id and epoch.
 *
 * Before the first idempotent Produce, InitProducerId goes to the live
 * broker with the fewest requests in flight, and again whenever sequences
 * must restart: always asking for a new id (ProducerId -1; the current
 * id/epoch of KIP-360 is for transactional producers). Every batch is
 * stamped with the id, epoch and its partition's next sequence when it is
 * first sent (kp_broker_stamp); a retry resends the sealed bytes
 * unchanged. At most 5 batches per partition are in flight
 * (1 without idempotence), and a partition sends under a new id/epoch only
 * once nothing of the old one is in flight (kp_partition_sendable): that is
 * the drain. Sequences restart at 0 under the new id, in FIFO order, which
 * is the order the messages were read (kp_partition_requeue).
 *
 * What each answer does (kp_broker_err_action, kp_broker_settle), as the
 * Java client and librdkafka do:
 *  - NONE: delivered.
 *  - DUPLICATE_SEQUENCE_NUMBER (46): the broker already has the batch (a
 *    retry raced its original): delivered.
 *  - OUT_OF_ORDER_SEQUENCE_NUMBER (45): the broker did not append the batch;
 *    an earlier sequence is missing (an earlier batch failed, expired, or
 *    its answer was lost and it is being resent). Drain, new id, the
 *    batch is retried in its place under the new sequences. Java fails
 *    the batch when it was the next one expected and retries it otherwise;
 *    kproxyd retries in both cases (the broker did not append it, so a
 *    retry cannot duplicate it) and never drops what a retry can deliver.
 *  - UNKNOWN_PRODUCER_ID (59): the broker lost the producer's state (its
 *    records were deleted by retention): drain, new id, retry in order, as
 *    Java and librdkafka do when the log start moved past the last ack.
 *  - INVALID_PRODUCER_EPOCH (47): the epoch was bumped elsewhere (fenced):
 *    drain, new id, retry in order (librdkafka's idempotent producer
 *    does the same; for transactions it would be fatal).
 *  - A batch that fails for good (non-retriable error, delivery timeout) or
 *    is split (MESSAGE_TOO_LARGE) after it had a sequence leaves a gap the
 *    broker would answer OUT_OF_ORDER to: new id at once.
 *  - An answer about an id/epoch already replaced changes nothing: the
 *    batch is re-stamped under the current one when it goes again.
 *  - InitProducerId fails or gets no answer: asked again after 200 ms.
 *  - No live broker implements InitProducerId (Kafka < 0.11, or a broker
 *    configured without it): idempotent topics do not produce - their
 *    messages fail at delivery_timeout_ms with the reason "delivery timeout
 *    (brokers lack InitProducerId)" - and this is logged as an error once.
 *    kproxyd never silently downgrades to non-idempotent delivery; topics
 *    with "idempotence": false keep producing.
 */
#include "kp_idemp.h"

#include "kp_broker.h"
#include "kp_conf.h"
#include "kp_ctx.h"
#include "kp_log.h"
#include "kp_partition.h"
#include "kp_proto.h"
#include "kp_topic.h"

const char *const kp_idemp_state_names[KP_IDEMP__COUNT] = {
    "off", "need_pid", "requesting", "ready", "unsupported"};

bool kp_idemp_wanted(const struct kp_ctx *ctx)
{
    const struct kp_conf *c = ctx->conf;
    if (c->producer.idempotence) {
        return true;
    }
    for (size_t i = 0; i < c->topic_cnt; i++) {
        if (c->topics[i].producer.idempotence) {
            return true;
        }
    }
    return false;
}

static void kp_idemp_set(struct kp_ctx *ctx, enum kp_idemp_state s)
{
    if (ctx->idemp != s) {
        kp_debug("idempotence: %s -> %s", kp_idemp_state_names[ctx->idemp],
                 kp_idemp_state_names[s]);
    }
    ctx->idemp = s;
}

void kp_idemp_kick(struct kp_ctx *ctx)
{
    struct kp_broker *b = NULL;
    bool any_up = false;

    if (ctx->idemp == KP_IDEMP_OFF && kp_idemp_wanted(ctx)) {
        kp_idemp_set(ctx, KP_IDEMP_NEED_PID);
    }
    if (ctx->idemp != KP_IDEMP_NEED_PID &&
        ctx->idemp != KP_IDEMP_UNSUPPORTED) {
        return;
    }
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        struct kp_broker *x = ctx->brokers[i];
        if (x->state == KP_BROKER_UP) {
            any_up = true;
            if (x->initpid_ver >= 0 && (!b || x->inflight < b->inflight)) {
                b = x;
            }
        }
    }
    if (!b) {
        if (any_up && ctx->idemp != KP_IDEMP_UNSUPPORTED) {
            kp_err("idempotence: no broker supports InitProducerId; "
                   "idempotent topics will not be produced (set "
                   "\"idempotence\": false to produce without it)");
            kp_idemp_set(ctx, KP_IDEMP_UNSUPPORTED);
        }
        return;
    }
    struct kp_request *r =
        kp_broker_request_start(b, KP_API_INITPID, b->initpid_ver);
    /* ProducerId/ProducerEpoch -1: a new id. Passing the current ones
     * (KIP-360) is for transactional producers: a broker gives a producer
     * without a transactional id a new id anyway (Kafka's coordinator),
     * or refuses the pair (INVALID_PRODUCER_ID_MAPPING, the mock). */
    kp_proto_enc_initpid(&r->req, b->initpid_ver, r->corr_id,
                         ctx->conf->client_id, -1, -1);
    kp_idemp_set(ctx, KP_IDEMP_REQUESTING);
    kp_broker_request_send(b, r);
}

void kp_idemp_reset(struct kp_ctx *ctx, const char *why)
{
    if (ctx->idemp == KP_IDEMP_READY) {
        kp_info("idempotence: new producer id needed (%s)", why);
        kp_idemp_set(ctx, KP_IDEMP_NEED_PID);
        kp_idemp_kick(ctx);
    }
}

static void kp_idemp_ready_one(struct kp_ctx *ctx, struct kp_topic *t,
                               void *arg)
{
    (void)arg;
    for (int32_t i = 0; i < t->part_cnt; i++) {
        kp_partition_update_ready(ctx, t->parts[i]);
    }
}

void kp_idemp_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kp_ctx *ctx = w->data;
    (void)loop;
    (void)revents;
    kp_idemp_kick(ctx);
}

void kp_idemp_on_response(struct kp_ctx *ctx, struct kp_broker *b,
                          int16_t version, const uint8_t *body, size_t len)
{
    struct kp_initpid_resp r = {0};
    bool malformed = body && kp_proto_dec_initpid(body, len, version, &r) !=
                                 KP_OK;

    if (!body || malformed || r.error != 0) {
        if (body && !malformed) {
            kp_warn("broker %d: InitProducerId failed: %s", b->node_id,
                    kp_proto_err_name(r.error));
        }
        kp_idemp_set(ctx, KP_IDEMP_NEED_PID);
        if (malformed) {
            kp_broker_close(b, "malformed InitProducerId response", true);
        }
        /* Retry after a pause rather than at once. */
        ev_timer_stop(ctx->loop, &ctx->idemp_timer);
        ev_timer_set(&ctx->idemp_timer, 0.2, 0.);
        ev_timer_start(ctx->loop, &ctx->idemp_timer);
        return;
    }
    kp_info("idempotence: producer id %lld epoch %d",
            (long long)r.producer_id, r.producer_epoch);
    ctx->pid = r.producer_id;
    ctx->epoch = r.producer_epoch;
    kp_idemp_set(ctx, KP_IDEMP_READY);
    kp_topic_foreach(&ctx->topics, kp_idemp_ready_one, ctx, NULL);
}
