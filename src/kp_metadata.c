/*
 * kp_metadata.c - the broker registry and cluster metadata. One request at
 * a time; asks while one is in flight are coalesced into one more, and
 * requests are spaced by a backoff so that a storm of errors is one
 * refresh. Answers are checked before they are believed (kp_metadata.h).
 */
#include "kp_metadata.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>

#include "kp_conf.h"
#include "kp_counters.h"
#include "kp_kerr.h"
#include "kp_log.h"
#include "kp_proto.h"
#include "kp_router.h"

#define KP_MD_MIN_GAP_MS 100  /* between two refreshes */
#define KP_MD_RETRY_MS 250    /* when a topic or leader is still missing */
#define KP_MD_REFUSED_MS 1000 /* after an answer not believed */
#define KP_MD_HOST_MAX 253    /* a DNS name's longest text form */

static struct kp_ratelimit kp_md_rl;        /* answers and entries refused */
static struct kp_ratelimit kp_md_broker_rl; /* brokers joining, leaving */

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

static struct kp_broker *kp_metadata_new_broker(struct kp_metadata *md,
                                                int32_t node_id,
                                                const char *host, int port)
{
    struct kp_broker *b = kp_broker_create(md->loop, md->conf, md->env, node_id,
                                           host, port, &md->broker_hooks, md);
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

enum kp_reason kp_metadata_stuck(const struct kp_metadata *md, int32_t leader,
                                 const char **detail)
{
    static char text[512];
    const struct kp_broker *culprit = NULL;

    if (leader >= 0) {
        const struct kp_broker *b = kp_metadata_broker(md, leader);
        if (b && b->state != KP_BROKER_UP && kp_broker_auth_failed(b)) {
            culprit = b;
        }
    } else if (!kp_metadata_any_up(md)) {
        for (size_t i = 0; i < md->broker_cnt && !culprit; i++) {
            if (kp_broker_auth_failed(md->brokers[i])) {
                culprit = md->brokers[i];
            }
        }
    }
    if (!culprit) {
        return KP_REASON_DELIVERY_TIMEOUT;
    }
    snprintf(text, sizeof(text), "%s: %s", kp_broker_name(culprit),
             culprit->last_error);
    *detail = text;
    return KP_REASON_AUTHENTICATION;
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

/* Frees the brokers that left, outside any callback chain. */
static void kp_metadata_on_reap(struct ev_loop *loop, ev_prepare *w,
                                int revents)
{
    struct kp_metadata *md = w->data;
    (void)revents;

    ev_prepare_stop(loop, w);
    for (size_t i = 0; i < md->gone_cnt; i++) {
        kp_broker_destroy(md->gone[i]);
    }
    free(md->gone);
    md->gone = NULL;
    md->gone_cnt = 0;
}

struct kp_metadata *
kp_metadata_create(struct ev_loop *loop, struct kp_conf *const *conf,
                   const struct kp_broker_env *env, struct kp_router *router,
                   struct kp_counters *n, const struct kp_metadata_hooks *hooks,
                   void *arg)
{
    struct kp_metadata *md = kp_calloc(1, sizeof(*md));
    const struct kp_conf *c = *conf;

    md->loop = loop;
    md->conf = conf;
    md->env = env;
    md->router = router;
    md->n = n;
    md->hooks = hooks;
    md->arg = arg;
    md->broker_hooks.state = kp_metadata_on_broker_state;
    md->broker_hooks.room = kp_metadata_on_broker_room;
    ev_prepare_init(&md->reaper, kp_metadata_on_reap);
    md->reaper.data = md;
    /* Ids -1, -2, ...: descending, so the sorted array is reversed. */
    md->brokers =
        kp_calloc(c->broker_cnt ? c->broker_cnt : 1, sizeof(*md->brokers));
    for (size_t i = 0; i < c->broker_cnt; i++) {
        const struct kp_hostport *hp = &c->broker_addrs[i];
        md->brokers[c->broker_cnt - 1 - i] =
            kp_metadata_new_broker(md, -1 - (int32_t)i, hp->host, hp->port);
    }
    md->broker_cnt = c->broker_cnt;
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
    kp_metadata_close_all(md);
    /* after close_all: a Metadata request failed back by it schedules
     * the timer again */
    ev_timer_stop(md->loop, &md->timer);
    for (size_t i = 0; i < md->broker_cnt; i++) {
        md->hooks->broker_removed(md->arg, md->brokers[i]);
        kp_broker_destroy(md->brokers[i]);
    }
    kp_metadata_on_reap(md->loop, &md->reaper, 0);
    free(md->brokers);
    free(md);
}

/* ---- refreshes ---- */

static void kp_metadata_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
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

/* The least time between two refreshes. A request that named no topic
 * (the one at start-up) costs nothing to follow at once: the first writer's
 * new topic is asked for without waiting behind it. */
static int64_t kp_metadata_gap_ms(const struct kp_metadata *md)
{
    return md->asked == 0 ? 0 : KP_MD_MIN_GAP_MS;
}

void kp_metadata_refresh(struct kp_metadata *md, const char *why)
{
    if (md->inflight) {
        md->again = true;
        return;
    }
    kp_debug("metadata refresh requested: %s", why);
    kp_metadata_schedule(md, md->last_ms + kp_metadata_gap_ms(md) - kp_mono_ms());
}

static void kp_metadata_on_response(void *arg, struct kp_broker *b,
                                    struct kp_request *r, enum kp_req_status st,
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

/* ---- checking an answer ---- */

int32_t kp_metadata_peek_brokers(const uint8_t *body, size_t len,
                                 int16_t version)
{
    struct kp_rd r;

    kp_rd_init(&r, body, len);
    if (version >= 3) {
        kp_rd_i32(&r); /* ThrottleTimeMs */
    }
    int64_t n = kp_proto_flexible(KP_API_METADATA, version)
                    ? (int64_t)kp_rd_uvarint(&r) - 1
                    : kp_rd_i32(&r); /* Brokers */
    return r.err || n < 0 || n > INT32_MAX ? -1 : (int32_t)n;
}

/* A DNS name (letters, digits, '-' inside a label, '_', '.'; labels of
 * 1-63; a trailing '.' allowed) or an IP literal; no spaces, controls or
 * other bytes. */
static bool kp_metadata_host_ok(const char *host)
{
    size_t len = host ? strlen(host) : 0, label = 0;
    unsigned char buf[16];

    if (len == 0 || len > KP_MD_HOST_MAX) {
        return false;
    }
    if (inet_pton(AF_INET6, host, buf) == 1) {
        return true;
    }
    for (const char *p = host; *p; p++) {
        if (*p == '.') {
            /* a label of 1-63, not ending with '-' */
            if (label == 0 || p[-1] == '-') {
                return false;
            }
            label = 0;
        } else if (isalnum((unsigned char)*p) || *p == '_' ||
                   (*p == '-' && label > 0)) {
            if (++label > 63) {
                return false;
            }
        } else {
            return false;
        }
    }
    return host[len - 1] != '-';
}

bool kp_metadata_broker_ok(int32_t node_id, const char *host, int32_t port)
{
    return node_id >= 0 && port > 0 && port <= 65535 &&
           kp_metadata_host_ok(host);
}

int32_t *kp_metadata_leaders(const struct kp_md_topic *mt, int32_t *cnt,
                             const char **why)
{
    int32_t n = mt->partition_cnt;

    *cnt = 0;
    if (n <= 0) {
        *why = "no partitions";
        return NULL;
    }
    if (n > KP_MD_MAX_PARTITIONS) {
        *why = "more partitions than kproxyd believes";
        return NULL;
    }
    int32_t *leaders = kp_malloc((size_t)n * sizeof(*leaders));
    for (int32_t i = 0; i < n; i++) {
        leaders[i] = INT32_MIN; /* not listed yet */
    }
    for (int32_t i = 0; i < n; i++) {
        const struct kp_md_partition *mp = &mt->partitions[i];
        if (mp->partition < 0 || mp->partition >= n ||
            leaders[mp->partition] != INT32_MIN) {
            free(leaders);
            *why = "partition ids are not 0..n-1";
            return NULL;
        }
        bool usable = mp->error == KP_KERR_NONE ||
                      mp->error == KP_KERR_REPLICA_NOT_AVAILABLE;
        leaders[mp->partition] = usable && mp->leader >= 0 ? mp->leader : -1;
    }
    *cnt = n;
    return leaders;
}

/* ---- applying an answer: brokers ---- */

/* Valid entries of an answer, sorted by id then by position. */
static int kp_metadata_entry_cmp(const void *a, const void *b)
{
    const struct kp_md_broker *x = *(const struct kp_md_broker *const *)a;
    const struct kp_md_broker *y = *(const struct kp_md_broker *const *)b;
    if (x->node_id != y->node_id) {
        return x->node_id < y->node_id ? -1 : 1;
    }
    return x < y ? -1 : x > y;
}

/* The answer's believable broker entries, sorted, one per id. */
static const struct kp_md_broker **
kp_metadata_entries(struct kp_metadata *md, const struct kp_metadata_resp *mr,
                    size_t *cnt)
{
    const struct kp_md_broker **v =
        kp_malloc(((size_t)mr->broker_cnt + 1) * sizeof(*v));
    size_t n = 0;

    for (int32_t i = 0; i < mr->broker_cnt; i++) {
        const struct kp_md_broker *mb = &mr->brokers[i];
        if (!kp_metadata_broker_ok(mb->node_id, mb->host, mb->port)) {
            md->brokers_skipped++;
            kp_log_rl(&kp_md_rl, KP_LOG_WARNING,
                      "metadata: broker entry %d at \"%.64s\":%d ignored "
                      "(impossible id, host or port)",
                      mb->node_id, mb->host ? mb->host : "", mb->port);
            continue;
        }
        v[n++] = mb;
    }
    qsort(v, n, sizeof(*v), kp_metadata_entry_cmp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || v[k - 1]->node_id != v[i]->node_id) {
            v[k++] = v[i];
        }
    }
    *cnt = k;
    return v;
}

/* A broker no longer in the cluster: retired now, freed from the prepare
 * phase (this may run inside its own callback chain). */
static void kp_metadata_leave(struct kp_metadata *md, struct kp_broker *b)
{
    kp_log_rl(&kp_md_broker_rl, KP_LOG_INFO, "%s left the cluster: forgotten",
              kp_broker_name(b));
    md->brokers_left++;
    kp_broker_retire(b);
    md->hooks->broker_removed(md->arg, b);
    md->gone = kp_realloc(md->gone, (md->gone_cnt + 1) * sizeof(*md->gone));
    md->gone[md->gone_cnt++] = b;
    ev_prepare_start(md->loop, &md->reaper);
}

/*
 * Brokers the answer lists: new ones are added, moved ones readdressed,
 * those it no longer lists leave. The new sorted array is built by one
 * merge and installed before anything else happens, so that every
 * callback a readdress or a retirement sets off sees the new registry.
 */
static void kp_metadata_brokers(struct kp_metadata *md,
                                const struct kp_metadata_resp *mr)
{
    size_t vn, i = 0, j = 0, k = 0, kept = 0;
    const struct kp_md_broker **v = kp_metadata_entries(md, mr, &vn);

    if (vn == 0) {
        free(v);
        return; /* no believable broker: keep what is known */
    }
    struct kp_broker **old = md->brokers, **nb;
    size_t old_cnt = md->broker_cnt;
    struct kp_broker **leaving = kp_malloc((old_cnt + 1) * sizeof(*leaving));
    nb = kp_malloc((old_cnt + vn) * sizeof(*nb));
    while (i < old_cnt || j < vn) {
        struct kp_broker *b = i < old_cnt ? old[i] : NULL;
        const struct kp_md_broker *e = j < vn ? v[j] : NULL;
        if (b && (b->node_id < 0 || !e || b->node_id < e->node_id)) {
            if (b->node_id < 0) {
                nb[k++] = b; /* bootstrap entries stay */
            } else {
                leaving[kept++] = b;
            }
            i++;
        } else if (b && b->node_id == e->node_id) {
            nb[k++] = b;
            i++;
            j++;
        } else {
            nb[k++] = kp_metadata_new_broker(md, e->node_id, e->host, e->port);
            kp_log_rl(&kp_md_broker_rl, KP_LOG_INFO, "broker %d at %s:%d",
                      e->node_id, e->host, e->port);
            j++;
        }
    }
    md->brokers = nb;
    md->broker_cnt = k;
    free(old);
    for (j = 0; j < vn; j++) {
        struct kp_broker *b = kp_metadata_broker(md, v[j]->node_id);
        if (b) {
            kp_broker_set_addr(b, v[j]->host, v[j]->port);
        }
    }
    for (i = 0; i < kept; i++) {
        kp_metadata_leave(md, leaving[i]);
    }
    free(leaving);
    free(v);
}

/* ---- applying an answer: topics ---- */

/* Applies one topic's entry; returns whether it is complete (every
 * partition has a leader that is a known broker). */
static bool kp_metadata_topic(struct kp_metadata *md,
                              const struct kp_md_topic *mt)
{
    int32_t cnt = 0;
    const char *why = NULL;
    bool complete = true;

    if (mt->error) {
        kp_router_on_metadata(md->router, mt->name, mt->error, 0, NULL);
        return false;
    }
    int32_t *leaders = kp_metadata_leaders(mt, &cnt, &why);
    if (!leaders) {
        md->topics_skipped++;
        kp_log_rl(&kp_md_rl, KP_LOG_WARNING,
                  "metadata: topic %.64s: entry of %d partition(s) ignored: "
                  "%s",
                  mt->name, mt->partition_cnt, why);
        return false; /* what was known stays */
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
    bool has_real =
        md->broker_cnt && md->brokers[md->broker_cnt - 1]->node_id >= 0;
    if (!md->have && has_real) {
        kp_info("metadata: %d broker(s), %d topic(s)", mr->broker_cnt,
                mr->topic_cnt);
    }
    md->have = md->have || has_real;
    if (md->have) {
        kp_metadata_retire_bootstrap(md);
    }
    return complete;
}

/* An answer that lists more brokers than any cluster has is not decoded
 * at all: no allocation for what it claims, a warning, a later retry. */
static bool kp_metadata_believable(struct kp_metadata *md,
                                   const struct kp_broker *b,
                                   const uint8_t *body, size_t len,
                                   int16_t version)
{
    int32_t n = kp_metadata_peek_brokers(body, len, version);

    if (n <= KP_MD_MAX_BROKERS) {
        return true;
    }
    md->answers_refused++;
    kp_log_rl(&kp_md_rl, KP_LOG_WARNING,
              "metadata: the answer from %s lists %d brokers, more than the "
              "%d kproxyd believes: ignored",
              kp_broker_name(b), n, KP_MD_MAX_BROKERS);
    return false;
}

/* When to ask again after an incomplete answer: soon for a missing
 * leader, later for topics that stay unknown (their own backoff). */
static int64_t kp_metadata_retry_ms(struct kp_metadata *md)
{
    int64_t wait = kp_router_md_wait_ms(md->router, kp_mono_ms());
    return KP_MAX(wait, KP_MD_RETRY_MS);
}

static void kp_metadata_on_response(void *arg, struct kp_broker *b,
                                    struct kp_request *r, enum kp_req_status st,
                                    const uint8_t *body, size_t len)
{
    struct kp_metadata *md = arg;
    struct kp_metadata_resp mr;

    md->inflight = false;
    if (st == KP_REQ_ANSWERED &&
        !kp_metadata_believable(md, b, body, len, r->version)) {
        kp_metadata_schedule(md, KP_MD_REFUSED_MS);
        return;
    }
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
        kp_metadata_schedule(md, kp_metadata_gap_ms(md));
    } else if (!complete) {
        kp_metadata_schedule(md, kp_metadata_retry_ms(md));
    } else {
        kp_metadata_schedule(md, (*md->conf)->metadata_refresh_ms);
    }
}
