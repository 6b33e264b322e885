/*
 * kp_idemp.c - the idempotent producer's id and epoch.
 *
 * Before the first idempotent Produce, InitProducerId goes to the best live
 * broker (kp_metadata_pick), and again whenever sequences must restart:
 * always asking for a new id (ProducerId -1; the current id/epoch of
 * KIP-360 is for transactional producers). Every batch is stamped with the
 * id, epoch and its partition's next sequence when it is first sent
 * (kp_partition_take); a retry resends the sealed bytes unchanged. At most
 * 5 batches per partition are in flight (1 without idempotence), and a
 * partition sends under a new id/epoch only once nothing of the old one is
 * in flight (kp_partition_can_send): that is the drain. Sequences restart
 * at 0 under the new id, in FIFO order, which is the order the messages
 * were read (kp_partition_requeue).
 *
 * What each answer does (kp_kerr's table, kp_produce), as the Java client
 * and librdkafka do:
 *  - NONE: delivered.
 *  - DUPLICATE_SEQUENCE_NUMBER: the broker already has the batch (a retry
 *    raced its original): delivered.
 *  - OUT_OF_ORDER_SEQUENCE_NUMBER: the broker did not append the batch; an
 *    earlier sequence is missing (an earlier batch failed, expired, or its
 *    answer was lost and it is being resent). Drain, new id, the batch is
 *    retried in its place under the new sequences. Java fails the batch
 *    when it was the next one expected and retries it otherwise; kproxyd
 *    retries in both cases (the broker did not append it, so a retry
 *    cannot duplicate it) and never drops what a retry can deliver.
 *  - UNKNOWN_PRODUCER_ID: the broker lost the producer's state (its
 *    records were deleted by retention): drain, new id, retry in order, as
 *    Java and librdkafka do when the log start moved past the last ack.
 *  - INVALID_PRODUCER_EPOCH: the epoch was bumped elsewhere (fenced):
 *    drain, new id, retry in order (librdkafka's idempotent producer does
 *    the same; for transactions it would be fatal).
 *  - A batch that fails for good (non-retriable error, delivery timeout) or
 *    is split (MESSAGE_TOO_LARGE) after it had a sequence leaves a gap the
 *    broker would answer OUT_OF_ORDER to: new id at once (kp_idemp_gap).
 *  - An answer about an id/epoch already replaced changes nothing: the
 *    batch is re-stamped under the current one when it goes again.
 *  - InitProducerId fails or gets no answer: asked again after 200 ms.
 *  - No live broker implements InitProducerId (Kafka < 0.11, or a broker
 *    configured without it): idempotent topics do not produce - their
 *    messages fail at delivery_timeout_ms as delivery_timeout ("brokers
 *    lack InitProducerId") - and this is logged as an error once. kproxyd
 *    never silently downgrades to non-idempotent delivery; topics with
 *    "idempotence": false keep producing.
 */
#include "kp_idemp.h"

#include "kp_conf.h"
#include "kp_kerr.h"
#include "kp_log.h"
#include "kp_metadata.h"
#include "kp_proto.h"

#define KP_IDEMP_RETRY_S 0.2

const char *const kp_idemp_state_names[KP_IDEMP__COUNT] = {
    "off", "need_pid", "requesting", "ready", "unsupported"};

static void kp_idemp_on_retry(struct ev_loop *loop, ev_timer *w,
                              int revents)
{
    (void)loop;
    (void)revents;
    kp_idemp_kick(w->data);
}

void kp_idemp_init(struct kp_idemp *id, struct ev_loop *loop,
                   struct kp_conf *const *conf, struct kp_metadata *md,
                   void (*on_ready)(void *arg), void *arg)
{
    memset(id, 0, sizeof(*id));
    id->loop = loop;
    id->conf = conf;
    id->md = md;
    id->pid = -1;
    id->epoch = -1;
    id->on_ready = on_ready;
    id->arg = arg;
    ev_timer_init(&id->retry, kp_idemp_on_retry, 0., 0.);
    id->retry.data = id;
}

void kp_idemp_deinit(struct kp_idemp *id)
{
    ev_timer_stop(id->loop, &id->retry);
}

/* Whether any topic's settings ask for idempotence. */
static bool kp_idemp_wanted(const struct kp_conf *c)
{
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

static void kp_idemp_set(struct kp_idemp *id, enum kp_idemp_state s)
{
    if (id->state != s) {
        kp_debug("idempotence: %s -> %s", kp_idemp_state_names[id->state],
                 kp_idemp_state_names[s]);
    }
    id->state = s;
}

static void kp_idemp_on_response(void *arg, struct kp_broker *b,
                                 struct kp_request *r, enum kp_req_status st,
                                 const uint8_t *body, size_t len);

void kp_idemp_kick(struct kp_idemp *id)
{
    if (id->state == KP_IDEMP_OFF && kp_idemp_wanted(*id->conf)) {
        kp_idemp_set(id, KP_IDEMP_NEED_PID);
    }
    if (id->state != KP_IDEMP_NEED_PID &&
        id->state != KP_IDEMP_UNSUPPORTED) {
        return;
    }
    struct kp_broker *b = kp_metadata_pick(id->md, KP_API_INITPID);
    if (!b) {
        if (kp_metadata_any_up(id->md) &&
            id->state != KP_IDEMP_UNSUPPORTED) {
            kp_err("idempotence: no broker supports InitProducerId; "
                   "idempotent topics will not be produced (set "
                   "\"idempotence\": false to produce without it)");
            kp_idemp_set(id, KP_IDEMP_UNSUPPORTED);
        }
        return;
    }
    int16_t ver = kp_broker_version(b, KP_API_INITPID);
    struct kp_request *r = kp_broker_request_start(b, KP_API_INITPID, ver);
    /* ProducerId/ProducerEpoch -1: a new id. Passing the current ones
     * (KIP-360) is for transactional producers: a broker gives a producer
     * without a transactional id a new id anyway (Kafka's coordinator),
     * or refuses the pair (INVALID_PRODUCER_ID_MAPPING, the mock). */
    kp_proto_enc_initpid(&r->req, ver, r->corr_id, (*id->conf)->client_id,
                         -1, -1);
    kp_idemp_set(id, KP_IDEMP_REQUESTING);
    kp_broker_request_send(b, r, kp_idemp_on_response, id);
}

void kp_idemp_gap(struct kp_idemp *id, int64_t pid, int16_t epoch,
                  const char *why)
{
    if (id->state == KP_IDEMP_READY && pid == id->pid &&
        epoch == id->epoch) {
        kp_info("idempotence: new producer id needed (%s)", why);
        kp_idemp_set(id, KP_IDEMP_NEED_PID);
        kp_idemp_kick(id);
    }
}

int64_t kp_idemp_pid(const struct kp_idemp *id)
{
    return id->state == KP_IDEMP_READY ? id->pid : -1;
}

static void kp_idemp_on_response(void *arg, struct kp_broker *b,
                                 struct kp_request *r, enum kp_req_status st,
                                 const uint8_t *body, size_t len)
{
    struct kp_idemp *id = arg;
    struct kp_initpid_resp ir = {0};
    bool answered = st == KP_REQ_ANSWERED;
    bool malformed = answered && kp_proto_dec_initpid(body, len, r->version,
                                                      &ir) != KP_OK;

    /* a producer id or epoch below 0 is no id: asked again */
    if (!answered || malformed || ir.error != KP_KERR_NONE ||
        ir.producer_id < 0 || ir.producer_epoch < 0) {
        if (answered && !malformed) {
            kp_warn("%s: InitProducerId failed: %s", kp_broker_name(b),
                    ir.error != KP_KERR_NONE ? kp_kerr_name(ir.error)
                                             : "no valid producer id");
        }
        kp_idemp_set(id, KP_IDEMP_NEED_PID);
        if (malformed) {
            kp_broker_close(b, "malformed InitProducerId response", true);
        }
        /* Retry after a pause rather than at once. */
        ev_timer_stop(id->loop, &id->retry);
        ev_timer_set(&id->retry, KP_IDEMP_RETRY_S, 0.);
        ev_timer_start(id->loop, &id->retry);
        return;
    }
    kp_broker_proven(b);
    kp_info("idempotence: producer id %lld epoch %d",
            (long long)ir.producer_id, ir.producer_epoch);
    id->pid = ir.producer_id;
    id->epoch = ir.producer_epoch;
    kp_idemp_set(id, KP_IDEMP_READY);
    id->on_ready(id->arg);
}
