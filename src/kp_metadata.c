/*
 * kp_metadata.c - the broker registry and cluster metadata. One request at
 * a time; asks while one is in flight are coalesced into one more, and
 * requests are spaced by a backoff so that a storm of errors is one
 * refresh.
 */
#include "kp_metadata.h"

#include "kp_conf.h"
#include "kp_counters.h"
#include "kp_kerr.h"
#include "kp_log.h"
#include "kp_proto.h"
#include "kp_router.h"

#define KP_MD_MIN_GAP_MS 100 /* between two refreshes */
#define KP_MD_RETRY_MS 250   /* when a topic or leader is still missing */
#define KP_MD_MAX_PARTITIONS 1000000

static void kp_metadata_send(struct kp_metadata *md);

/* ---- the broker registry ---- */

/* Index of the first broker whose id is >= node_id. */
static size_t kp_metadata_lower(const struct kp_metadata *md, int32_t node_id)
{
    size_t lo = 0, hi = md->broker_cnt;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (md->brokers[mid]->node_id < node_id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

struct kp_broker *kp_metadata_broker(const struct kp_metadata *md,
                                     int32_t node_id)
{
    size_t i = kp_metadata_lower(md, node_id);
    return i < md->broker_cnt && md->brokers[i]->node_id == node_id
               ? md->brokers[i]
               : NULL;
}

static struct kp_broker *kp_metadata_add(struct kp_metadata *md,
                                         int32_t node_id, const char *host,
                                         int port)
{
    struct kp_broker *b = kp_broker_create(md->loop, md->conf, node_id, host,
                                           port, &md->broker_hooks, md);
    size_t i = kp_metadata_lower(md, node_id);

    md->brokers = kp_realloc(md->brokers,
                             (md->broker_cnt + 1) * sizeof(*md->brokers));
    memmove(md->brokers + i + 1, md->brokers + i,
            (md->broker_cnt - i) * sizeof(*md->brokers));
    md->brokers[i] = b;
    md->broker_cnt++;
    md->hooks->broker_added(md->arg, b);
    return b;
}

/* Rank of a broker for a request: unthrottled before throttled, real
 * brokers before bootstrap entries; lower is better. */
static int kp_metadata_rank(const struct kp_broker *b, int64_t now)
{
    return (now < b->throttle_until_ms ? 2 : 0) + (b->node_id < 0 ? 1 : 0);
}

struct kp_broker *kp_metadata_pick(const struct kp_metadata *md,
                                   int16_t api_key)
{
    struct kp_broker *best = NULL;
    int64_t now = kp_mono_ms();

    for (size_t i = 0; i < md->broker_cnt; i++) {
        struct kp_broker *b = md->brokers[i];
        if (b->state != KP_BROKER_UP || kp_broker_version(b, api_key) < 0) {
            continue;
        }
        int r = kp_metadata_rank(b, now);
        int rb = best ? kp_metadata_rank(best, now) : 0;
        if (!best || r < rb || (r == rb && b->inflight < best->inflight)) {
            best = b;
        }
    }
    return best;
}

bool kp_metadata_any_up(const struct kp_metadata *md)
{
    for (size_t i = 0; i < md->broker_cnt; i++) {
        if (md->brokers[i]->state == KP_BROKER_UP) {
            return true;
        }
    }
    return false;
}

/* No broker is up: connect every known one (the bootstrap list too, when
 * no real broker is known or none answers). */
static void kp_metadata_connect_all(struct kp_metadata *md)
{
    bool any_real = false;

    for (size_t i = 0; i < md->broker_cnt; i++) {
        struct kp_broker *b = md->brokers[i];
        if (b->node_id >= 0) {
            any_real = true;
            kp_broker_connect(b);
        }
    }
    for (size_t i = 0; i < md->broker_cnt; i++) {
        struct kp_broker *b = md->brokers[i];
        if (b->node_id < 0 && (!any_real || b->retired)) {
            kp_broker_connect(b);
        }
    }
}

/* ---- broker events ---- */

static bool kp_metadata_down(enum kp_broker_state s)
{
    return s == KP_BROKER_INIT || s == KP_BROKER_BACKOFF;
}

static void kp_metadata_on_broker_state(void *arg, struct kp_broker *b,
                                        enum kp_broker_state from)
{
    struct kp_metadata *md = arg;

    if (b->state == KP_BROKER_UP && !md->inflight &&
        (md->again || !md->have)) {
        kp_metadata_send(md);
    }
    if (kp_metadata_down(b->state) && !kp_metadata_down(from) &&
        (from == KP_BROKER_UP || b->node_id >= 0) && !b->retired) {
        b->reconnects++;
        kp_metadata_refresh(md, "broker connection lost");
    }
    md->hooks->broker_state(md->arg, b, from);
}

static void kp_metadata_on_broker_room(void *arg, struct kp_broker *b)
{
    struct kp_metadata *md = arg;
    md->hooks->broker_room(md->arg, b);
}

struct kp_metadata *kp_metadata_create(struct ev_loop *loop,
                                       struct kp_conf *const *conf,
                                       struct kp_router *router,
                                       struct kp_counters *n,
                                       const struct kp_metadata_hooks *hooks,
                                       void *arg)
{
    struct kp_metadata *md = kp_calloc(1, sizeof(*md));
    const struct kp_conf *c = *conf;

    md->loop = loop;
    md->conf = conf;
    md->router = router;
    md->n = n;
    md->hooks = hooks;
    md->arg = arg;
    md->broker_hooks.state = kp_metadata_on_broker_state;
    md->broker_hooks.room = kp_metadata_on_broker_room;
    for (size_t i = 0; i < c->broker_cnt; i++) {
        const struct kp_hostport *hp = &c->broker_addrs[i];
        kp_metadata_add(md, -1 - (int32_t)i, hp->host, hp->port);
    }
    return md;
}

void kp_metadata_close_all(struct kp_metadata *md)
{
    for (size_t i = 0; i < md->broker_cnt; i++) {
        kp_broker_retire(md->brokers[i]);
    }
}

void kp_metadata_destroy(struct kp_metadata *md)
{
    ev_timer_stop(md->loop, &md->timer);
    kp_metadata_close_all(md);
    for (size_t i = 0; i < md->broker_cnt; i++) {
        md->hooks->broker_removed(md->arg, md->brokers[i]);
        kp_broker_destroy(md->brokers[i]);
    }
    free(md->brokers);
    free(md);
}

/* ---- refreshes ---- */

static void kp_metadata_on_timer(struct ev_loop *loop, ev_timer *w,
                                 int revents)
{
    (void)loop;
    (void)revents;
    kp_metadata_send(w->data);
}

static void kp_metadata_schedule(struct kp_metadata *md, int64_t in_ms)
{
    double at = (double)KP_MAX(in_ms, 0) / 1000.0;
    if (ev_is_active(&md->timer) &&
        ev_timer_remaining(md->loop, &md->timer) <= at) {
        return; /* already due sooner */
    }
    ev_timer_stop(md->loop, &md->timer);
    ev_timer_set(&md->timer, at, 0.);
    ev_timer_start(md->loop, &md->timer);
}

void kp_metadata_start(struct kp_metadata *md)
{
    ev_init(&md->timer, kp_metadata_on_timer);
    md->timer.data = md;
    kp_metadata_schedule(md, 0);
}

void kp_metadata_refresh(struct kp_metadata *md, const char *why)
{
    if (md->inflight) {
        md->again = true;
        return;
    }
    kp_debug("metadata refresh requested: %s", why);
    kp_metadata_schedule(md, md->last_ms + KP_MD_MIN_GAP_MS - kp_mono_ms());
}

static void kp_metadata_on_response(void *arg, struct kp_broker *b,
                                    struct kp_request *r,
                                    enum kp_req_status st,
                                    const uint8_t *body, size_t len);

static void kp_metadata_send(struct kp_metadata *md)
{
    const struct kp_conf *c = *md->conf;
    struct kp_topic_table *tt = &md->router->topics;

    if (md->inflight) {
        md->again = true;
        return;
    }
    struct kp_broker *b = kp_metadata_pick(md, KP_API_METADATA);
    if (!b) {
        kp_metadata_connect_all(md);
        md->again = true; /* sent when a broker comes up */
        return;
    }
    const char **names = kp_malloc((tt->cnt + 1) * sizeof(*names));
    md->asked = kp_router_md_topics(md->router, names, kp_mono_ms());
    int16_t ver = kp_broker_version(b, KP_API_METADATA);
    struct kp_request *r = kp_broker_request_start(b, KP_API_METADATA, ver);
    kp_proto_enc_metadata(&r->req, ver, r->corr_id, c->client_id, names,
                          md->asked, c->auto_create_topics);
    free(names);
    md->inflight = true;
    md->again = false;
    md->last_ms = kp_mono_ms();
    md->n->metadata_refreshes++;
    kp_debug("metadata request to broker %d (v%d, %zu of %u topics)",
             b->node_id, ver, md->asked, tt->cnt);
    kp_broker_request_send(b, r, kp_metadata_on_response, md);
}

/* Brokers the answer lists: new ones are added, moved ones readdressed. */
static void kp_metadata_brokers(struct kp_metadata *md,
                                const struct kp_metadata_resp *mr)
{
    for (int32_t i = 0; i < mr->broker_cnt; i++) {
        const struct kp_md_broker *mb = &mr->brokers[i];
        if (mb->node_id < 0) {
            continue;
        }
        struct kp_broker *b = kp_metadata_broker(md, mb->node_id);
        if (b) {
            kp_broker_set_addr(b, mb->host, mb->port);
            continue;
        }
        kp_metadata_add(md, mb->node_id, mb->host, mb->port);
        kp_info("broker %d at %s:%d", mb->node_id, mb->host, mb->port);
    }
}

/* Applies one topic's entry; returns whether it is complete (every
 * partition has a leader that is a known broker). */
static bool kp_metadata_topic(struct kp_metadata *md,
                              const struct kp_md_topic *mt)
{
    int32_t cnt = 0;
    bool complete = true;

    for (int32_t i = 0; i < mt->partition_cnt; i++) {
        cnt = KP_MAX(cnt, mt->partitions[i].partition + 1);
    }
    if (mt->error || cnt <= 0 || cnt > KP_MD_MAX_PARTITIONS) {
        kp_router_on_metadata(md->router, mt->name,
                              mt->error ? mt->error
                                        : KP_KERR_UNKNOWN_TOPIC_OR_PARTITION,
                              0, NULL);
        return false;
    }
    int32_t *leaders = kp_malloc((size_t)cnt * sizeof(*leaders));
    for (int32_t i = 0; i < cnt; i++) {
        leaders[i] = -1;
    }
    for (int32_t i = 0; i < mt->partition_cnt; i++) {
        const struct kp_md_partition *mp = &mt->partitions[i];
        bool usable = mp->error == KP_KERR_NONE ||
                      mp->error == KP_KERR_REPLICA_NOT_AVAILABLE;
        if (mp->partition >= 0) {
            leaders[mp->partition] = usable ? mp->leader : -1;
        }
    }
    for (int32_t i = 0; i < cnt; i++) {
        complete = complete && leaders[i] >= 0 &&
                   kp_metadata_broker(md, leaders[i]) != NULL;
    }
    kp_router_on_metadata(md->router, mt->name, KP_KERR_NONE, cnt, leaders);
    free(leaders);
    return complete;
}

/* Once real brokers are known the bootstrap connections are closed. */
static void kp_metadata_retire_bootstrap(struct kp_metadata *md)
{
    for (size_t i = 0; i < md->broker_cnt; i++) {
        struct kp_broker *b = md->brokers[i];
        if (b->node_id < 0 && !b->retired && TAILQ_EMPTY(&b->reqs)) {
            kp_broker_retire(b);
        }
    }
}

/* Applies a parsed answer; returns whether every topic is complete. */
static bool kp_metadata_apply(struct kp_metadata *md,
                              const struct kp_metadata_resp *mr)
{
    bool complete = true;

    kp_metadata_brokers(md, mr);
    for (int32_t i = 0; i < mr->topic_cnt; i++) {
        complete = kp_metadata_topic(md, &mr->topics[i]) && complete;
    }
    if (mr->topic_cnt < (int32_t)md->asked ||
        md->asked < md->router->topics.cnt) {
        complete = false; /* a topic was added or left out (backoff) */
    }
    if (!md->have && mr->broker_cnt > 0) {
        kp_info("metadata: %d broker(s), %d topic(s)", mr->broker_cnt,
                mr->topic_cnt);
    }
    md->have = md->have || mr->broker_cnt > 0;
    if (md->have) {
        kp_metadata_retire_bootstrap(md);
    }
    return complete;
}

/* When to ask again after an incomplete answer: soon for a missing
 * leader, later for topics that stay unknown (their own backoff). */
static int64_t kp_metadata_retry_ms(struct kp_metadata *md)
{
    int64_t wait = kp_router_md_wait_ms(md->router, kp_mono_ms());
    return KP_MAX(wait, KP_MD_RETRY_MS);
}

static void kp_metadata_on_response(void *arg, struct kp_broker *b,
                                    struct kp_request *r,
                                    enum kp_req_status st,
                                    const uint8_t *body, size_t len)
{
    struct kp_metadata *md = arg;
    struct kp_metadata_resp mr;

    md->inflight = false;
    if (st != KP_REQ_ANSWERED ||
        kp_proto_dec_metadata(body, len, r->version, &mr) != KP_OK) {
        kp_metadata_schedule(md, KP_MD_RETRY_MS);
        if (st == KP_REQ_ANSWERED) {
            /* An untrusted answer that does not parse: this connection
             * is not to be believed any more. */
            kp_proto_metadata_resp_free(&mr);
            kp_broker_close(b, "malformed Metadata response", true);
        }
        return;
    }
    kp_broker_proven(b);
    kp_broker_throttle(b, mr.throttle_ms);
    bool complete = kp_metadata_apply(md, &mr);
    kp_proto_metadata_resp_free(&mr);
    md->hooks->applied(md->arg);
    if (md->again) {
        kp_metadata_schedule(md, KP_MD_MIN_GAP_MS);
    } else if (!complete) {
        kp_metadata_schedule(md, kp_metadata_retry_ms(md));
    } else {
        kp_metadata_schedule(md, (*md->conf)->metadata_refresh_ms);
    }
}
