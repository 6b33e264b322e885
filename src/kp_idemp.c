/*
 * kp_idemp.c - the idempotent producer's id and epoch.
 *
 * What each broker answer does (as the Java client and librdkafka do):
 *  - InitProducerId ok: new id/epoch; every partition restarts its
 *    sequences at 0 once nothing of the old id is in flight.
 *  - UNKNOWN_PRODUCER_ID, OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_
 *    EPOCH on Produce, a batch failed or split after it had a sequence:
 *    kp_idemp_reset() asks for a new id; the batches wait in their FIFOs
 *    (in sequence order) and are re-stamped under the new id when sent.
 *  - A broker without InitProducerId: idempotent topics do not produce
 *    (their messages fail at delivery_timeout_ms), logged once; kproxyd
 *    never silently downgrades.
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
    kp_proto_enc_initpid(&r->req, b->initpid_ver, r->corr_id,
                         ctx->conf->client_id, ctx->pid, ctx->epoch);
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
    struct kp_initpid_resp r;

    if (!body || kp_proto_dec_initpid(body, len, version, &r) != KP_OK ||
        r.error != 0) {
        if (body) {
            kp_warn("broker %d: InitProducerId failed: %s", b->node_id,
                    kp_proto_err_name(r.error));
        }
        kp_idemp_set(ctx, KP_IDEMP_NEED_PID);
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
