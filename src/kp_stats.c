/*
 * kp_stats.c - the counters, rendered as one line of JSON for `stats` and
 * as OpenMetrics text for `metrics`, and the histograms kept beside them
 * (request latency per broker and API, batch messages, bytes and fill,
 * bytes per codec).
 *
 * OpenMetrics conventions followed here: every family has HELP and TYPE
 * (and UNIT when its name ends in one) before its samples, counters expose
 * NAME_total, units are in the names (_seconds, _bytes, _ratio), label
 * values are escaped, each family appears once with its samples together,
 * and the exposition ends with "# EOF".
 */
#include "kp_stats.h"

#include <stdarg.h>
#include <stdio.h>

#include "kp_batch.h"
#include "kp_broker.h"
#include "kp_buf.h"
#include "kp_conf.h"
#include "kp_ctx.h"
#include "kp_line.h"
#include "kp_log.h"
#include "kp_partition.h"
#include "kp_proto.h"
#include "kp_topic.h"

/* The APIs kproxyd speaks, for the latency label. */
enum kp_stats_api {
    KP_STATS_API_PRODUCE,
    KP_STATS_API_METADATA,
    KP_STATS_API_APIVERSIONS,
    KP_STATS_API_INITPID,
    KP_STATS_API__COUNT
};
static const char *const kp_stats_api_names[KP_STATS_API__COUNT] = {
    "produce", "metadata", "api_versions", "init_producer_id"};

/* Request latency, microseconds: 250 us to 30 s. */
static const uint64_t kp_stats_lat_bounds[KP_HIST_BOUNDS] = {
    250,    500,    1000,    2500,    5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000};
/* Messages per batch (batch_messages defaults to 10000). */
static const uint64_t kp_stats_msgs_bounds[KP_HIST_BOUNDS] = {
    1,   2,    5,    10,   20,    50,    100,   200,
    500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};
/* Uncompressed bytes per batch (batch_bytes defaults to 1 MiB). */
static const uint64_t kp_stats_bytes_bounds[KP_HIST_BOUNDS] = {
    128,        512,        1024,        4096,       16384,  65536,
    131072,     262144,     524288,      1048576,    2097152, 4194304,
    8388608,    16777216,   67108864,    268435456};
/* Fill, per mille of the batch_bytes or batch_messages limit reached. */
static const uint64_t kp_stats_fill_bounds[KP_HIST_BOUNDS] = {
    10, 50, 100, 250, 500, 750, 900, 990, 1000};

struct kp_stats_broker {
    int32_t node_id;
    struct kp_hist lat[KP_STATS_API__COUNT];
};

struct kp_stats {
    struct kp_hist batch_msgs;  /* messages per sealed batch */
    struct kp_hist batch_bytes; /* uncompressed RecordBatch bytes */
    struct kp_hist batch_fill;  /* per mille of the limits */
    uint64_t codec_batches[KP_CODEC__COUNT]; /* by codec used on the wire */
    uint64_t codec_raw[KP_CODEC__COUNT];     /* bytes before compression */
    uint64_t codec_wire[KP_CODEC__COUNT];    /* bytes after */
    struct kp_stats_broker *brokers; /* owned, by first observation */
    size_t broker_cnt;
    int64_t reload_wall_ms; /* when the last reload was tried, 0 = never */
};

/* ---------------------------------------------------------------------- */
/* histograms */

void kp_hist_observe(struct kp_hist *h, const uint64_t *bounds, uint64_t v)
{
    size_t i = 0;
    while (i < KP_HIST_BOUNDS && bounds[i] != 0 && v > bounds[i]) {
        i++;
    }
    if (i < KP_HIST_BOUNDS && bounds[i] == 0) {
        i = KP_HIST_BOUNDS; /* past the last bound in use */
    }
    h->n[i]++;
    h->count++;
    h->sum += v;
}

uint64_t kp_hist_quantile(const struct kp_hist *h, const uint64_t *bounds,
                          double q)
{
    uint64_t rank, seen = 0;

    if (h->count == 0) {
        return 0;
    }
    rank = (uint64_t)(q * (double)h->count);
    if (rank == 0) {
        rank = 1;
    }
    for (size_t i = 0; i < KP_HIST_BOUNDS && bounds[i] != 0; i++) {
        seen += h->n[i];
        if (seen >= rank) {
            return bounds[i];
        }
    }
    return UINT64_MAX;
}

static struct kp_stats *kp_stats_get(struct kp_ctx *ctx)
{
    if (!ctx->stats) {
        ctx->stats = kp_calloc(1, sizeof(*ctx->stats));
    }
    return ctx->stats;
}

static struct kp_stats_broker *kp_stats_broker(struct kp_stats *st,
                                               int32_t node_id, bool create)
{
    for (size_t i = 0; i < st->broker_cnt; i++) {
        if (st->brokers[i].node_id == node_id) {
            return &st->brokers[i];
        }
    }
    if (!create) {
        return NULL;
    }
    st->brokers = kp_realloc(st->brokers,
                             (st->broker_cnt + 1) * sizeof(*st->brokers));
    struct kp_stats_broker *sb = &st->brokers[st->broker_cnt++];
    memset(sb, 0, sizeof(*sb));
    sb->node_id = node_id;
    return sb;
}

void kp_stats_observe_rtt(struct kp_ctx *ctx, int32_t node_id,
                          int16_t api_key, int64_t rtt_us)
{
    enum kp_stats_api api;

    switch (api_key) {
    case KP_API_PRODUCE:
        api = KP_STATS_API_PRODUCE;
        break;
    case KP_API_METADATA:
        api = KP_STATS_API_METADATA;
        break;
    case KP_API_APIVERSIONS:
        api = KP_STATS_API_APIVERSIONS;
        break;
    case KP_API_INITPID:
        api = KP_STATS_API_INITPID;
        break;
    default:
        return;
    }
    struct kp_stats_broker *sb =
        kp_stats_broker(kp_stats_get(ctx), node_id, true);
    kp_hist_observe(&sb->lat[api], kp_stats_lat_bounds,
                    rtt_us > 0 ? (uint64_t)rtt_us : 0);
}

void kp_stats_observe_batch(struct kp_ctx *ctx, const struct kp_batch *b)
{
    struct kp_stats *st = kp_stats_get(ctx);
    uint64_t raw = b->records.len;
    uint64_t fill = 0;

    kp_hist_observe(&st->batch_msgs, kp_stats_msgs_bounds,
                    (uint64_t)b->count);
    kp_hist_observe(&st->batch_bytes, kp_stats_bytes_bounds, raw);
    if (b->pconf->batch_bytes > 0) {
        fill = raw * 1000 / (uint64_t)b->pconf->batch_bytes;
    }
    if (b->pconf->batch_messages > 0) {
        fill = KP_MAX(fill, (uint64_t)b->count * 1000 /
                                (uint64_t)b->pconf->batch_messages);
    }
    kp_hist_observe(&st->batch_fill, kp_stats_fill_bounds,
                    KP_MIN(fill, 1000));
    if ((unsigned)b->codec_used < KP_CODEC__COUNT) {
        st->codec_batches[b->codec_used]++;
        st->codec_raw[b->codec_used] += raw;
        st->codec_wire[b->codec_used] += b->wire_len;
    }
}

void kp_stats_reloaded(struct kp_ctx *ctx, bool ok)
{
    if (ok) {
        ctx->n.reloads++;
    } else {
        ctx->n.reload_failures++;
    }
    ctx->n.last_reload_failed = !ok;
    kp_stats_get(ctx)->reload_wall_ms = kp_wall_ms();
}

void kp_stats_deinit(struct kp_ctx *ctx)
{
    if (ctx->stats) {
        free(ctx->stats->brokers);
        free(ctx->stats);
        ctx->stats = NULL;
    }
}

/* ---------------------------------------------------------------------- */
/* output helpers */

static void kp_stats_printf(struct kp_buf *out, const char *fmt, ...)
    KP_PRINTF(2, 3);

static void kp_stats_printf(struct kp_buf *out, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = out->cap - out->len;
        va_start(ap, fmt);
        int n = vsnprintf((char *)out->data + out->len, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            return;
        }
        if ((size_t)n < room) {
            out->len += (size_t)n;
            return;
        }
        kp_buf_reserve(out, (size_t)n + 1);
    }
}

/* A JSON string, quoted and escaped. */
static void kp_stats_jstr(struct kp_buf *out, const char *s)
{
    kp_buf_put_bytes(out, "\"", 1);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            kp_stats_printf(out, "\\%c", ch);
        } else if (ch < 0x20) {
            kp_stats_printf(out, "\\u%04x", ch);
        } else {
            kp_buf_put_bytes(out, s, 1);
        }
    }
    kp_buf_put_bytes(out, "\"", 1);
}

/* An OpenMetrics label value, without the quotes: \\, \" and \n. */
static void kp_stats_lval(struct kp_buf *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            kp_stats_printf(out, "\\%c", *s);
        } else if (*s == '\n') {
            kp_buf_put_bytes(out, "\\n", 2);
        } else {
            kp_buf_put_bytes(out, s, 1);
        }
    }
}

static uint32_t kp_stats_inflight(const struct kp_ctx *ctx)
{
    uint32_t n = 0;
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        n += ctx->brokers[i]->inflight;
    }
    return n;
}

/* Wire bytes of the batches in a broker's requests awaiting an answer. */
static uint64_t kp_stats_broker_inflight_bytes(const struct kp_broker *b)
{
    const struct kp_request *r;
    uint64_t n = 0;
    TAILQ_FOREACH(r, &b->reqs, link)
    {
        for (uint32_t i = 0; i < r->batch_cnt; i++) {
            n += r->batches[i]->wire_len;
        }
    }
    return n;
}

static uint64_t kp_stats_inflight_bytes(const struct kp_ctx *ctx)
{
    uint64_t n = 0;
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        n += kp_stats_broker_inflight_bytes(ctx->brokers[i]);
    }
    return n;
}

static int64_t kp_stats_backpressure_ms(const struct kp_ctx *ctx)
{
    int64_t ms = ctx->backpressure_total_ms;
    if (ctx->backpressure) {
        ms += kp_mono_ms() - ctx->backpressure_since_ms;
    }
    return ms;
}

/* Uncompressed / wire bytes over every sealed batch (1 when none). */
static double kp_stats_compression_ratio(const struct kp_ctx *ctx)
{
    if (ctx->n.batch_bytes_wire == 0) {
        return 1.0;
    }
    return (double)ctx->n.batch_bytes_raw / (double)ctx->n.batch_bytes_wire;
}

struct kp_stats_walk {
    struct kp_buf *out;
    bool first;
};

static uint64_t kp_stats_topic_queued(const struct kp_topic *t)
{
    uint64_t q = t->pending_cnt;
    for (int32_t i = 0; i < t->part_cnt; i++) {
        q += t->parts[i]->queued_msgs;
    }
    return q;
}

/* ---------------------------------------------------------------------- */
/* stats: one line of JSON */

static void kp_stats_topic_json(struct kp_ctx *ctx, struct kp_topic *t,
                                void *arg)
{
    struct kp_stats_walk *w = arg;
    uint64_t delivered = 0, failed = 0, batches = 0;
    (void)ctx;

    for (int32_t i = 0; i < t->part_cnt; i++) {
        delivered += t->parts[i]->delivered;
        failed += t->parts[i]->failed;
        batches += t->parts[i]->batches;
    }
    if (!w->first) {
        kp_buf_put_bytes(w->out, ",", 1);
    }
    w->first = false;
    kp_stats_jstr(w->out, t->name);
    kp_stats_printf(w->out,
                    ":{\"state\":\"%s\",\"held\":%u,\"queued\":%llu,"
                    "\"delivered\":%llu,\"failed\":%llu,\"batches\":%llu,"
                    "\"failed_by\":{",
                    kp_topic_state_names[t->state], t->pending_cnt,
                    (unsigned long long)kp_stats_topic_queued(t),
                    (unsigned long long)delivered,
                    (unsigned long long)failed, (unsigned long long)batches);
    for (uint32_t i = 0; i < t->fail_cnt; i++) {
        if (i) {
            kp_buf_put_bytes(w->out, ",", 1);
        }
        kp_stats_jstr(w->out, t->fails[i].reason);
        kp_stats_printf(w->out, ":%llu", (unsigned long long)t->fails[i].n);
    }
    kp_stats_printf(w->out, "},\"partitions\":{");
    for (int32_t i = 0; i < t->part_cnt; i++) {
        const struct kp_partition *p = t->parts[i];
        kp_stats_printf(w->out,
                        "%s\"%d\":{\"leader\":%d,\"queued\":%u,"
                        "\"inflight\":%d,\"delivered\":%llu,\"failed\":%llu,"
                        "\"batches\":%llu}",
                        i ? "," : "", p->id, p->leader, p->queued_msgs,
                        p->inflight, (unsigned long long)p->delivered,
                        (unsigned long long)p->failed,
                        (unsigned long long)p->batches);
    }
    kp_stats_printf(w->out, "}}");
}

static void kp_stats_hist_json(struct kp_buf *out, const struct kp_hist *h,
                               const uint64_t *bounds)
{
    uint64_t p50 = kp_hist_quantile(h, bounds, 0.5);
    uint64_t p99 = kp_hist_quantile(h, bounds, 0.99);
    /* Quantiles are bucket upper bounds; -1 when above the last one. */
    kp_stats_printf(out, "{\"count\":%llu,\"sum\":%llu,\"p50\":%lld,"
                         "\"p99\":%lld}",
                    (unsigned long long)h->count,
                    (unsigned long long)h->sum,
                    p50 == UINT64_MAX ? -1LL : (long long)p50,
                    p99 == UINT64_MAX ? -1LL : (long long)p99);
}

static void kp_stats_producer_json(struct kp_buf *out,
                                   const struct kp_producer_conf *pc)
{
    kp_stats_printf(out,
                    "{\"acks\":%d,\"idempotence\":%s,\"linger_ms\":%d,"
                    "\"batch_bytes\":%d,\"batch_messages\":%d,"
                    "\"compression\":\"%s\",\"max_in_flight\":%d,"
                    "\"delivery_timeout_ms\":%d}",
                    pc->acks, pc->idempotence ? "true" : "false",
                    pc->linger_ms, pc->batch_bytes, pc->batch_messages,
                    kp_codec_names[pc->compression], pc->max_in_flight,
                    pc->delivery_timeout_ms);
}

/* The live (reloadable) settings in force, and the reload outcome. */
static void kp_stats_config_json(struct kp_ctx *ctx, struct kp_buf *out)
{
    const struct kp_conf *c = ctx->conf;
    const struct kp_stats *st = ctx->stats;

    kp_stats_printf(out, "\"config\":{\"path\":");
    if (c->path) {
        kp_stats_jstr(out, c->path);
    } else {
        kp_stats_printf(out, "null");
    }
    kp_stats_printf(out,
                    ",\"reloads\":%llu,\"reload_failures\":%llu,"
                    "\"last_reload_ok\":%s,\"last_reload_ms\":%lld,"
                    "\"log_level\":\"%s\",\"buffer_bytes\":%lld,"
                    "\"producer\":",
                    (unsigned long long)ctx->n.reloads,
                    (unsigned long long)ctx->n.reload_failures,
                    ctx->n.last_reload_failed ? "false" : "true",
                    (long long)(st ? st->reload_wall_ms : 0),
                    kp_log_level_names[c->log_level],
                    (long long)c->buffer_bytes);
    kp_stats_producer_json(out, &c->producer);
    kp_stats_printf(out, ",\"topics\":{");
    for (size_t i = 0; i < c->topic_cnt; i++) {
        if (i) {
            kp_buf_put_bytes(out, ",", 1);
        }
        kp_stats_jstr(out, c->topics[i].name);
        kp_buf_put_bytes(out, ":", 1);
        kp_stats_producer_json(out, &c->topics[i].producer);
    }
    kp_stats_printf(out, "}}");
}

void kp_stats_json(struct kp_ctx *ctx, struct kp_buf *out)
{
    const struct kp_counters *n = &ctx->n;
    struct kp_stats *st = ctx->stats;
    static const struct kp_hist empty;

    kp_stats_printf(
        out,
        "{\"received\":%llu,\"delivered\":%llu,\"failed\":%llu,"
        "\"rejected\":%llu,\"queued_messages\":%llu,\"queued_bytes\":%lld,"
        "\"inflight_requests\":%u,\"inflight_bytes\":%llu,\"clients\":%u,"
        "\"connections\":%llu,\"clients_refused\":%llu,"
        "\"clients_refused_peer\":%llu,\"backpressure\":%s,"
        "\"backpressure_ms\":%lld,\"uptime_ms\":%lld,\"retries\":%llu,"
        "\"metadata_refreshes\":%llu,\"batches\":%llu,",
        (unsigned long long)n->received, (unsigned long long)n->delivered,
        (unsigned long long)n->failed, (unsigned long long)n->rejected,
        (unsigned long long)ctx->queued_msgs, (long long)ctx->buffered_bytes,
        kp_stats_inflight(ctx),
        (unsigned long long)kp_stats_inflight_bytes(ctx), ctx->client_cnt,
        (unsigned long long)ctx->next_client_id,
        (unsigned long long)n->clients_refused,
        (unsigned long long)n->clients_refused_peer,
        ctx->backpressure ? "true" : "false",
        (long long)kp_stats_backpressure_ms(ctx),
        (long long)(kp_mono_ms() - ctx->start_ms),
        (unsigned long long)n->retries,
        (unsigned long long)n->metadata_refreshes,
        (unsigned long long)n->batches);
    kp_stats_printf(out, "\"rejected_by\":{");
    for (int i = 1; i < KP_REJ__COUNT; i++) {
        kp_stats_printf(out, "%s\"%s\":%llu", i > 1 ? "," : "",
                        kp_reject_names[i],
                        (unsigned long long)n->rejected_by[i]);
    }
    kp_stats_printf(out,
                    "},\"batch\":{\"bytes_uncompressed\":%llu,"
                    "\"bytes_wire\":%llu,\"compression_ratio\":%.3f,"
                    "\"uncompressed_fallback\":%llu,\"messages\":",
                    (unsigned long long)n->batch_bytes_raw,
                    (unsigned long long)n->batch_bytes_wire,
                    kp_stats_compression_ratio(ctx),
                    (unsigned long long)n->uncompressed_fallback);
    kp_stats_hist_json(out, st ? &st->batch_msgs : &empty,
                       kp_stats_msgs_bounds);
    kp_stats_printf(out, ",\"bytes\":");
    kp_stats_hist_json(out, st ? &st->batch_bytes : &empty,
                       kp_stats_bytes_bounds);
    kp_stats_printf(out, ",\"fill_permille\":");
    kp_stats_hist_json(out, st ? &st->batch_fill : &empty,
                       kp_stats_fill_bounds);
    kp_stats_printf(out, ",\"by_codec\":{");
    for (int i = 0; i < KP_CODEC__COUNT; i++) {
        kp_stats_printf(out,
                        "%s\"%s\":{\"batches\":%llu,\"bytes_uncompressed\":"
                        "%llu,\"bytes_wire\":%llu}",
                        i ? "," : "", kp_codec_names[i],
                        (unsigned long long)(st ? st->codec_batches[i] : 0),
                        (unsigned long long)(st ? st->codec_raw[i] : 0),
                        (unsigned long long)(st ? st->codec_wire[i] : 0));
    }
    kp_stats_printf(out, "}},\"brokers\":[");
    bool first = true;
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        const struct kp_broker *b = ctx->brokers[i];
        const struct kp_stats_broker *sb =
            st ? kp_stats_broker(st, b->node_id, false) : NULL;
        if (b->node_id < 0) {
            continue; /* bootstrap entries are not brokers */
        }
        kp_stats_printf(out, "%s{\"id\":%d,\"host\":", first ? "" : ",",
                        b->node_id);
        kp_stats_jstr(out, b->host);
        kp_stats_printf(out,
                        ",\"port\":%d,\"state\":\"%s\",\"inflight\":%u,"
                        "\"inflight_bytes\":%llu,\"rtt_us\":%lld,"
                        "\"reconnects\":%llu,\"requests\":%llu,"
                        "\"errors\":%llu,\"latency_us\":",
                        b->port, kp_broker_state_names[b->state],
                        b->inflight,
                        (unsigned long long)kp_stats_broker_inflight_bytes(b),
                        (long long)b->rtt_us,
                        (unsigned long long)b->reconnects,
                        (unsigned long long)b->requests,
                        (unsigned long long)b->errors);
        kp_stats_hist_json(out, sb ? &sb->lat[KP_STATS_API_PRODUCE] : &empty,
                           kp_stats_lat_bounds);
        kp_stats_printf(out, "}");
        first = false;
    }
    kp_stats_printf(out, "],\"topics\":{");
    struct kp_stats_walk w = {out, true};
    kp_topic_foreach(&ctx->topics, kp_stats_topic_json, ctx, &w);
    kp_stats_printf(out, "},");
    kp_stats_config_json(ctx, out);
    kp_stats_printf(out, "}\n");
}

/* ---------------------------------------------------------------------- */
/* metrics: OpenMetrics text */

/* HELP, TYPE and (when the name ends in one) UNIT of a family. */
static void kp_om_family(struct kp_buf *out, const char *name,
                         const char *type, const char *unit,
                         const char *help)
{
    kp_stats_printf(out, "# HELP kproxyd_%s %s\n# TYPE kproxyd_%s %s\n",
                    name, help, name, type);
    if (unit) {
        kp_stats_printf(out, "# UNIT kproxyd_%s %s\n", name, unit);
    }
}

/* A family with one unlabelled sample. */
static void kp_om_counter(struct kp_buf *out, const char *name,
                          const char *help, uint64_t v)
{
    kp_om_family(out, name, "counter", NULL, help);
    kp_stats_printf(out, "kproxyd_%s_total %llu\n", name,
                    (unsigned long long)v);
}

static void kp_om_gauge(struct kp_buf *out, const char *name,
                        const char *unit, const char *help, long long v)
{
    kp_om_family(out, name, "gauge", unit, help);
    kp_stats_printf(out, "kproxyd_%s %lld\n", name, v);
}

/*
 * One histogram's samples: cumulative buckets, _count and _sum. labels is
 * the label text to put before "le" (e.g. `broker="1",`), div converts the
 * observed unit into the exposed one (1e6 for microseconds -> seconds).
 */
static void kp_om_hist(struct kp_buf *out, const char *name,
                       const char *labels, const struct kp_hist *h,
                       const uint64_t *bounds, double div)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < KP_HIST_BOUNDS && bounds[i] != 0; i++) {
        cum += h->n[i];
        kp_stats_printf(out, "kproxyd_%s_bucket{%sle=\"%.9g\"} %llu\n", name,
                        labels, (double)bounds[i] / div,
                        (unsigned long long)cum);
    }
    cum += h->n[KP_HIST_BOUNDS];
    kp_stats_printf(out, "kproxyd_%s_bucket{%sle=\"+Inf\"} %llu\n", name,
                    labels, (unsigned long long)cum);
    kp_stats_printf(out, "kproxyd_%s_count%s%.*s%s %llu\n", name,
                    labels[0] ? "{" : "",
                    labels[0] ? (int)strlen(labels) - 1 : 0, labels,
                    labels[0] ? "}" : "", (unsigned long long)h->count);
    kp_stats_printf(out, "kproxyd_%s_sum%s%.*s%s ", name,
                    labels[0] ? "{" : "",
                    labels[0] ? (int)strlen(labels) - 1 : 0, labels,
                    labels[0] ? "}" : "");
    if (div == 1.0) {
        kp_stats_printf(out, "%llu\n", (unsigned long long)h->sum);
    } else {
        kp_stats_printf(out, "%.6f\n", (double)h->sum / div);
    }
}

/* Per-partition families, one walk over the topics each. */
enum kp_om_part {
    KP_OM_PART_DELIVERED,
    KP_OM_PART_FAILED,
    KP_OM_PART_BATCHES,
    KP_OM_PART_QUEUED,
    KP_OM_PART_LEADER,
    KP_OM_PART__COUNT
};

struct kp_om_part_walk {
    struct kp_buf *out;
    enum kp_om_part what;
};

static void kp_om_topic_parts(struct kp_ctx *ctx, struct kp_topic *t,
                              void *arg)
{
    static const char *const names[KP_OM_PART__COUNT] = {
        "partition_delivered_messages_total",
        "partition_failed_messages_total", "partition_batches_total",
        "partition_queued_messages", "partition_leader"};
    struct kp_om_part_walk *w = arg;
    (void)ctx;

    for (int32_t i = 0; i < t->part_cnt; i++) {
        const struct kp_partition *p = t->parts[i];
        long long v = 0;
        switch (w->what) {
        case KP_OM_PART_DELIVERED:
            v = (long long)p->delivered;
            break;
        case KP_OM_PART_FAILED:
            v = (long long)p->failed;
            break;
        case KP_OM_PART_BATCHES:
            v = (long long)p->batches;
            break;
        case KP_OM_PART_QUEUED:
            v = (long long)p->queued_msgs;
            break;
        case KP_OM_PART_LEADER:
        case KP_OM_PART__COUNT:
            v = p->leader;
            break;
        }
        kp_stats_printf(w->out, "kproxyd_%s{topic=\"", names[w->what]);
        kp_stats_lval(w->out, t->name);
        kp_stats_printf(w->out, "\",partition=\"%d\"} %lld\n", p->id, v);
    }
}

static void kp_om_topic_fails(struct kp_ctx *ctx, struct kp_topic *t,
                              void *arg)
{
    struct kp_buf *out = arg;
    (void)ctx;
    for (uint32_t i = 0; i < t->fail_cnt; i++) {
        kp_stats_printf(out, "kproxyd_topic_failed_messages_total{topic=\"");
        kp_stats_lval(out, t->name);
        kp_stats_printf(out, "\",reason=\"");
        kp_stats_lval(out, t->fails[i].reason);
        kp_stats_printf(out, "\"} %llu\n", (unsigned long long)t->fails[i].n);
    }
}

static void kp_om_topic_held(struct kp_ctx *ctx, struct kp_topic *t,
                             void *arg)
{
    struct kp_buf *out = arg;
    (void)ctx;
    kp_stats_printf(out, "kproxyd_topic_held_messages{topic=\"");
    kp_stats_lval(out, t->name);
    kp_stats_printf(out, "\"} %u\n", t->pending_cnt);
}

static void kp_om_partitions(struct kp_ctx *ctx, struct kp_buf *out)
{
    static const struct {
        const char *name, *type, *help;
    } fam[KP_OM_PART__COUNT] = {
        {"partition_delivered_messages", "counter",
         "Messages acknowledged by Kafka, by topic and partition."},
        {"partition_failed_messages", "counter",
         "Messages that failed, by topic and partition."},
        {"partition_batches", "counter",
         "Batches sealed, by topic and partition."},
        {"partition_queued_messages", "gauge",
         "Messages in a partition's open, sealed or in-flight batches."},
        {"partition_leader", "gauge",
         "Node id of the partition's leader (-1: unknown)."},
    };
    for (int i = 0; i < KP_OM_PART__COUNT; i++) {
        struct kp_om_part_walk w = {out, (enum kp_om_part)i};
        kp_om_family(out, fam[i].name, fam[i].type, NULL, fam[i].help);
        kp_topic_foreach(&ctx->topics, kp_om_topic_parts, ctx, &w);
    }
    kp_om_family(out, "topic_failed_messages", "counter", NULL,
                 "Failed messages by topic and reason.");
    kp_topic_foreach(&ctx->topics, kp_om_topic_fails, ctx, out);
    kp_om_family(out, "topic_held_messages", "gauge", NULL,
                 "Messages waiting for the topic's metadata.");
    kp_topic_foreach(&ctx->topics, kp_om_topic_held, ctx, out);
}

/* Per-broker families (bootstrap entries are not brokers). */
static void kp_om_brokers(struct kp_ctx *ctx, struct kp_buf *out)
{
    static const struct {
        const char *name, *type, *unit, *help;
    } fam[] = {
        {"broker_up", "gauge", NULL,
         "1 when the connection is up (ApiVersions done)."},
        {"broker_inflight_requests", "gauge", NULL,
         "Requests sent to the broker, awaiting a response."},
        {"broker_inflight_bytes", "gauge", "bytes",
         "Batch bytes in requests awaiting a response."},
        {"broker_rtt_seconds", "gauge", "seconds",
         "Smoothed request round-trip time."},
        {"broker_reconnects", "counter", NULL,
         "Connections lost and made again."},
        {"broker_requests", "counter", NULL, "Requests sent."},
        {"broker_errors", "counter", NULL,
         "Error codes in the broker's responses."},
    };
    const struct kp_stats *st = ctx->stats;

    for (size_t f = 0; f < KP_ARRAY_LEN(fam); f++) {
        kp_om_family(out, fam[f].name, fam[f].type, fam[f].unit,
                     fam[f].help);
        for (size_t i = 0; i < ctx->broker_cnt; i++) {
            const struct kp_broker *b = ctx->brokers[i];
            if (b->node_id < 0) {
                continue;
            }
            kp_stats_printf(out, "kproxyd_%s%s{broker=\"%d\"} ",
                            fam[f].name,
                            strcmp(fam[f].type, "counter") == 0 ? "_total"
                                                                : "",
                            b->node_id);
            switch (f) {
            case 0:
                kp_stats_printf(out, "%d\n", b->state == KP_BROKER_UP);
                break;
            case 1:
                kp_stats_printf(out, "%u\n", b->inflight);
                break;
            case 2:
                kp_stats_printf(out, "%llu\n",
                                (unsigned long long)
                                    kp_stats_broker_inflight_bytes(b));
                break;
            case 3:
                kp_stats_printf(out, "%.6f\n", (double)b->rtt_us / 1e6);
                break;
            case 4:
                kp_stats_printf(out, "%llu\n",
                                (unsigned long long)b->reconnects);
                break;
            case 5:
                kp_stats_printf(out, "%llu\n",
                                (unsigned long long)b->requests);
                break;
            default:
                kp_stats_printf(out, "%llu\n",
                                (unsigned long long)b->errors);
                break;
            }
        }
    }
    kp_om_family(out, "request_latency_seconds", "histogram", "seconds",
                 "Time from sending a request to its response, by broker "
                 "and API.");
    for (size_t i = 0; st && i < st->broker_cnt; i++) {
        const struct kp_stats_broker *sb = &st->brokers[i];
        if (sb->node_id < 0) {
            continue; /* bootstrap connections: no broker id yet */
        }
        for (int a = 0; a < KP_STATS_API__COUNT; a++) {
            char labels[64];
            if (sb->lat[a].count == 0) {
                continue;
            }
            snprintf(labels, sizeof(labels), "broker=\"%d\",api=\"%s\",",
                     sb->node_id, kp_stats_api_names[a]);
            kp_om_hist(out, "request_latency_seconds", labels, &sb->lat[a],
                       kp_stats_lat_bounds, 1e6);
        }
    }
}

static void kp_om_batches(struct kp_ctx *ctx, struct kp_buf *out)
{
    const struct kp_counters *n = &ctx->n;
    const struct kp_stats *st = ctx->stats;
    static const struct kp_hist empty;

    kp_om_counter(out, "batches", "Batches sealed.", n->batches);
    kp_om_family(out, "batch_uncompressed_bytes", "counter", "bytes",
                 "RecordBatch bytes before compression.");
    kp_stats_printf(out, "kproxyd_batch_uncompressed_bytes_total %llu\n",
                    (unsigned long long)n->batch_bytes_raw);
    kp_om_family(out, "batch_wire_bytes", "counter", "bytes",
                 "RecordBatch bytes as sent (after compression).");
    kp_stats_printf(out, "kproxyd_batch_wire_bytes_total %llu\n",
                    (unsigned long long)n->batch_bytes_wire);
    kp_om_family(out, "compression_ratio", "gauge", "ratio",
                 "Uncompressed over wire bytes of every batch sealed.");
    kp_stats_printf(out, "kproxyd_compression_ratio %.4f\n",
                    kp_stats_compression_ratio(ctx));
    kp_om_counter(out, "uncompressed_fallback_batches",
                  "Batches sent uncompressed because compressing did not "
                  "make them smaller.",
                  n->uncompressed_fallback);
    kp_om_family(out, "codec_batches", "counter", NULL,
                 "Batches sealed, by the codec used on the wire.");
    for (int i = 0; i < KP_CODEC__COUNT; i++) {
        if (!kp_codec_names[i]) {
            continue;
        }
        kp_stats_printf(out, "kproxyd_codec_batches_total{codec=\"%s\"} "
                             "%llu\n",
                        kp_codec_names[i],
                        (unsigned long long)(st ? st->codec_batches[i] : 0));
    }
    kp_om_family(out, "batch_messages", "histogram", NULL,
                 "Messages per sealed batch.");
    kp_om_hist(out, "batch_messages", "", st ? &st->batch_msgs : &empty,
               kp_stats_msgs_bounds, 1.0);
    kp_om_family(out, "batch_size_bytes", "histogram", "bytes",
                 "Uncompressed bytes per sealed batch.");
    kp_om_hist(out, "batch_size_bytes", "", st ? &st->batch_bytes : &empty,
               kp_stats_bytes_bounds, 1.0);
    kp_om_family(out, "batch_fill_ratio", "histogram", "ratio",
                 "How full a sealed batch was: the larger of its bytes "
                 "over batch_bytes and its messages over batch_messages.");
    kp_om_hist(out, "batch_fill_ratio", "", st ? &st->batch_fill : &empty,
               kp_stats_fill_bounds, 1000.0);
}

void kp_stats_metrics(struct kp_ctx *ctx, struct kp_buf *out)
{
    const struct kp_counters *n = &ctx->n;

    kp_om_family(out, "build", "info", NULL, "kproxyd version.");
    kp_stats_printf(out, "kproxyd_build_info{version=\"%s\"} 1\n",
                    KP_VERSION);
    kp_om_counter(out, "received_messages", "Messages read from clients.",
                  n->received);
    kp_om_counter(out, "delivered_messages",
                  "Messages acknowledged by Kafka.", n->delivered);
    kp_om_counter(out, "failed_messages",
                  "Messages that could not be delivered.", n->failed);
    kp_om_family(out, "rejected_lines", "counter", NULL,
                 "Lines rejected, by reason.");
    for (int i = 1; i < KP_REJ__COUNT; i++) {
        kp_stats_printf(out,
                        "kproxyd_rejected_lines_total{reason=\"%s\"} %llu\n",
                        kp_reject_names[i],
                        (unsigned long long)n->rejected_by[i]);
    }
    kp_om_counter(out, "retries", "Batches sent again after an error.",
                  n->retries);
    kp_om_counter(out, "metadata_refreshes", "Metadata requests sent.",
                  n->metadata_refreshes);
    kp_om_counter(out, "connections", "Client connections accepted.",
                  ctx->next_client_id);
    kp_om_family(out, "connections_refused", "counter", NULL,
                 "Client connections closed at accept, by reason.");
    kp_stats_printf(out,
                    "kproxyd_connections_refused_total{reason=\"peer\"} "
                    "%llu\n"
                    "kproxyd_connections_refused_total{reason=\"other\"} "
                    "%llu\n",
                    (unsigned long long)n->clients_refused_peer,
                    (unsigned long long)(n->clients_refused -
                                         n->clients_refused_peer));
    kp_om_gauge(out, "clients", NULL, "Connected clients.",
                (long long)ctx->client_cnt);
    kp_om_gauge(out, "queued_messages", NULL,
                "Messages read, not yet delivered or failed.",
                (long long)ctx->queued_msgs);
    kp_om_gauge(out, "queued_bytes", "bytes",
                "Message bytes held in memory (buffer_bytes counts these).",
                (long long)ctx->buffered_bytes);
    kp_om_gauge(out, "buffer_limit_bytes", "bytes",
                "The buffer_bytes setting.", (long long)ctx->conf->buffer_bytes);
    kp_om_gauge(out, "inflight_requests", NULL,
                "Requests awaiting a response.",
                (long long)kp_stats_inflight(ctx));
    kp_om_gauge(out, "inflight_bytes", "bytes",
                "Batch bytes in requests awaiting a response.",
                (long long)kp_stats_inflight_bytes(ctx));
    kp_om_gauge(out, "backpressure", NULL,
                "1 while reading from clients is paused.",
                ctx->backpressure ? 1 : 0);
    kp_om_family(out, "backpressure_seconds", "counter", "seconds",
                 "Time reading from clients was paused.");
    kp_stats_printf(out, "kproxyd_backpressure_seconds_total %.3f\n",
                    (double)kp_stats_backpressure_ms(ctx) / 1e3);
    kp_om_family(out, "uptime_seconds", "gauge", "seconds",
                 "Time since start.");
    kp_stats_printf(out, "kproxyd_uptime_seconds %.3f\n",
                    (double)(kp_mono_ms() - ctx->start_ms) / 1e3);
    kp_om_family(out, "config_reloads", "counter", NULL,
                 "Configuration reloads, by result.");
    kp_stats_printf(out,
                    "kproxyd_config_reloads_total{result=\"applied\"} %llu\n"
                    "kproxyd_config_reloads_total{result=\"rejected\"} "
                    "%llu\n",
                    (unsigned long long)n->reloads,
                    (unsigned long long)n->reload_failures);
    kp_om_gauge(out, "config_last_reload_successful", NULL,
                "0 when the last reload was rejected (old settings kept).",
                n->last_reload_failed ? 0 : 1);
    kp_om_batches(ctx, out);
    kp_om_brokers(ctx, out);
    kp_om_partitions(ctx, out);
    kp_stats_printf(out, "# EOF\n");
}
