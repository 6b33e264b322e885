/*
 * kp_stats.c - the counters, gauges and histograms, rendered as one line
 * of JSON for `stats` and as OpenMetrics text for `metrics`.
 *
 * Scalars are declared once: counters in KP_COUNTER_LIST (kp_counters.h),
 * gauges in KP_GAUGE_LIST below; each renderer expands both lists. What is
 * keyed (per reason, broker, topic, partition, codec) has one walker per
 * renderer.
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

#include "kp_broker.h"
#include "kp_buf.h"
#include "kp_client.h"
#include "kp_conf.h"
#include "kp_dns.h"
#include "kp_counters.h"
#include "kp_idemp.h"
#include "kp_kerr.h"
#include "kp_log.h"
#include "kp_metadata.h"
#include "kp_procstats.h"
#include "kp_produce.h"
#include "kp_router.h"

/* How a gauge is shown: a number, a boolean (JSON true/false, metric
 * 0/1), or milliseconds (JSON ms, metric seconds; a counter when it only
 * grows). */
enum kp_gauge_kind { KP_G_INT, KP_G_BOOL, KP_G_MS, KP_G_MS_TOTAL };

/* X(field, json name (NULL: metric only), metric family (NULL: JSON only),
 * unit, kind, help). Uptime is JSON only: the metrics have the standard
 * process_start_time_seconds (kp_procstats) instead, which also shows a
 * restart. */
#define KP_GAUGE_LIST(X)                                                       \
    X(queued_messages, "queued_messages", "queued_messages", NULL, KP_G_INT,  \
      "Messages read, not yet delivered or failed.")                           \
    X(queued_bytes, "queued_bytes", "queued_bytes", "bytes", KP_G_INT,        \
      "Message bytes held in memory (buffer_bytes counts these).")             \
    X(buffer_limit, NULL, "buffer_limit_bytes", "bytes", KP_G_INT,            \
      "The buffer_bytes setting.")                                             \
    X(inflight_requests, "inflight_requests", "inflight_requests", NULL,      \
      KP_G_INT, "Requests awaiting a response.")                               \
    X(inflight_bytes, "inflight_bytes", "inflight_bytes", "bytes", KP_G_INT,  \
      "Bytes of requests awaiting a response.")                                \
    X(clients, "clients", "clients", NULL, KP_G_INT, "Connected clients.")     \
    X(partial_bytes, "partial_bytes", "partial_bytes", "bytes", KP_G_INT,     \
      "Bytes of unfinished lines connections hold (budget buffer_bytes/8).") \
    X(backpressure, "backpressure", "backpressure", NULL, KP_G_BOOL,          \
      "1 while reading from clients is paused.")                               \
    X(backpressure_ms, "backpressure_ms", "backpressure_seconds", "seconds",  \
      KP_G_MS_TOTAL, "Time reading from clients was paused.")                  \
    X(uptime_ms, "uptime_ms", NULL, "seconds", KP_G_MS, "Time since start.")

struct kp_gauges {
#define KP_GAUGE_FIELD(f, j, m, u, k, h) int64_t f;
    KP_GAUGE_LIST(KP_GAUGE_FIELD)
#undef KP_GAUGE_FIELD
};

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

/* ---------------------------------------------------------------------- */
/* gauges */

static void kp_stats_inflight(const struct kp_metadata *md, int64_t *reqs,
                              int64_t *bytes)
{
    *reqs = *bytes = 0;
    for (size_t i = 0; i < md->broker_cnt; i++) {
        const struct kp_broker *b = md->brokers[i];
        const struct kp_request *r;
        *reqs += b->inflight;
        TAILQ_FOREACH(r, &b->reqs, link)
        {
            *bytes += (int64_t)r->req.total;
        }
    }
}

static void kp_stats_gauges(const struct kp_stats_src *s, struct kp_gauges *g)
{
    const struct kp_router *r = s->router;

    g->queued_messages = (int64_t)r->env.queued_msgs;
    g->queued_bytes = r->env.buffered_bytes;
    g->buffer_limit = s->conf->buffer_bytes;
    kp_stats_inflight(s->md, &g->inflight_requests, &g->inflight_bytes);
    g->clients = s->clients->cnt;
    g->partial_bytes = s->clients->partial_bytes;
    g->backpressure = r->backpressure;
    g->backpressure_ms = kp_router_backpressure_ms(r);
    g->uptime_ms = kp_mono_ms() - s->start_ms;
}

/* ---------------------------------------------------------------------- */
/* stats: one line of JSON */

/* The scalars of json group `group` (NULL: top level), each ",name:v". */
static void kp_stats_json_scalars(const struct kp_stats_src *s,
                                  const struct kp_gauges *g,
                                  const char *group, struct kp_buf *out)
{
    const struct kp_counters *n = s->n;
#define KP_JSON_COUNTER(f, grp, j, m, h)                                       \
    if ((j) && (grp == NULL) == (group == NULL) &&                             \
        (!grp || strcmp(grp ? grp : "", group ? group : "") == 0)) {           \
        kp_stats_printf(out, ",\"%s\":%llu", (const char *)(j),                \
                        (unsigned long long)n->f);                             \
    }
    KP_COUNTER_LIST(KP_JSON_COUNTER)
#undef KP_JSON_COUNTER
    if (group) {
        return;
    }
#define KP_JSON_GAUGE(f, j, m, u, k, h)                                        \
    if (j) {                                                                   \
        if ((k) == KP_G_BOOL) {                                                \
            kp_stats_printf(out, ",\"%s\":%s", (const char *)(j),              \
                            g->f ? "true" : "false");                          \
        } else {                                                               \
            kp_stats_printf(out, ",\"%s\":%lld", (const char *)(j),            \
                            (long long)g->f);                                  \
        }                                                                      \
    }
    KP_GAUGE_LIST(KP_JSON_GAUGE)
#undef KP_JSON_GAUGE
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

/* Uncompressed / wire bytes over every sealed batch (1 when none). */
static double kp_stats_compression_ratio(const struct kp_counters *n)
{
    if (n->batch_bytes_wire == 0) {
        return 1.0;
    }
    return (double)n->batch_bytes_raw / (double)n->batch_bytes_wire;
}

static void kp_stats_rejected_json(const struct kp_counters *n,
                                   struct kp_buf *out)
{
    bool first = true;

    kp_stats_printf(out, ",\"rejected_by\":{");
    for (int i = 0; i < KP_REASON__COUNT; i++) {
        if (kp_reason_is_reject((enum kp_reason)i) || n->rejected_by[i]) {
            kp_stats_printf(out, "%s\"%s\":%llu", first ? "" : ",",
                            kp_reason_names[i],
                            (unsigned long long)n->rejected_by[i]);
            first = false;
        }
    }
    kp_stats_printf(out, "}");
}

static void kp_stats_batch_json(const struct kp_stats_src *s,
                                struct kp_buf *out)
{
    const struct kp_batch_stats *bs = &s->router->bstats;

    kp_stats_printf(out, ",\"batch\":{\"compression_ratio\":%.3f",
                    kp_stats_compression_ratio(s->n));
    kp_stats_json_scalars(s, NULL, "batch", out);
    kp_stats_printf(out, ",\"messages\":");
    kp_stats_hist_json(out, &bs->msgs, kp_hist_batch_msgs);
    kp_stats_printf(out, ",\"bytes\":");
    kp_stats_hist_json(out, &bs->bytes, kp_hist_batch_bytes);
    kp_stats_printf(out, ",\"fill_permille\":");
    kp_stats_hist_json(out, &bs->fill, kp_hist_batch_fill);
    kp_stats_printf(out, ",\"by_codec\":{");
    for (int i = 0; i < KP_CODEC__COUNT; i++) {
        kp_stats_printf(out,
                        "%s\"%s\":{\"batches\":%llu,\"bytes_uncompressed\":"
                        "%llu,\"bytes_wire\":%llu}",
                        i ? "," : "", kp_codec_names[i],
                        (unsigned long long)bs->codec_batches[i],
                        (unsigned long long)bs->codec_raw[i],
                        (unsigned long long)bs->codec_wire[i]);
    }
    kp_stats_printf(out, "}}");
}

static uint64_t kp_stats_broker_errors(const struct kp_broker *b)
{
    uint64_t n = 0;
    for (int c = -1; b->sender && c < KP_SENDER_ERR_CODES - 1; c++) {
        n += kp_sender_errors(b->sender, (int16_t)c);
    }
    return n;
}

static uint64_t kp_stats_req_bytes(const struct kp_broker *b)
{
    const struct kp_request *r;
    uint64_t n = 0;
    TAILQ_FOREACH(r, &b->reqs, link)
    {
        n += r->req.total;
    }
    return n;
}

/* Where a broker is reached: address_map's target, the addresses its
 * name resolved to last, and the one in use (or being tried). */
static void kp_stats_broker_addrs(const struct kp_broker *b,
                                  struct kp_buf *out)
{
    char a[KP_DNS_ADDR_STRLEN];

    kp_stats_printf(out, ",\"connect_to\":");
    if (b->dial_host) {
        char hp[320];
        snprintf(hp, sizeof(hp), "%s:%d", b->dial_host, b->dial_port);
        kp_stats_jstr(out, hp);
    } else {
        kp_stats_printf(out, "null");
    }
    kp_stats_printf(out, ",\"addresses\":[");
    for (uint32_t i = 0; b->addrs && i < b->addrs->n; i++) {
        kp_stats_printf(out, "%s", i ? "," : "");
        kp_stats_jstr(out, kp_dns_addr_format(&b->addrs->a[i], a, sizeof(a)));
    }
    kp_stats_printf(out, "],\"address\":");
    if (b->addr[0]) {
        kp_stats_jstr(out, b->addr);
    } else {
        kp_stats_printf(out, "null");
    }
}

/* TLS and SASL as negotiated: versions and names, never a secret. */
static void kp_stats_broker_security(const struct kp_broker *b,
                                     const struct kp_conf *c,
                                     struct kp_buf *out)
{
    enum kp_sec_protocol p = c->security.protocol;

    kp_stats_printf(out, ",\"tls\":");
    if (p == KP_SEC_SSL || p == KP_SEC_SASL_SSL) {
        kp_stats_printf(out, "{\"version\":");
        kp_stats_jstr(out, b->tls ? b->tls_version : "");
        kp_stats_printf(out, ",\"cipher\":");
        kp_stats_jstr(out, b->tls ? b->tls_cipher : "");
        kp_stats_printf(out, "}");
    } else {
        kp_stats_printf(out, "null");
    }
    kp_stats_printf(out, ",\"sasl\":");
    if (p == KP_SEC_SASL_PLAINTEXT || p == KP_SEC_SASL_SSL) {
        kp_stats_printf(out, "{\"mechanism\":\"%s\",\"session_lifetime_ms\":"
                             "%lld,\"reauthentications\":%llu}",
                        kp_sasl_mech_names[c->security.sasl.mechanism],
                        (long long)b->session_lifetime_ms,
                        (unsigned long long)b->reauths);
    } else {
        kp_stats_printf(out, "null");
    }
}

static void kp_stats_broker_json(const struct kp_broker *b,
                                 const struct kp_conf *c, struct kp_buf *out)
{
    kp_stats_printf(out, "{\"id\":%d,\"host\":", b->node_id);
    kp_stats_jstr(out, b->host);
    kp_stats_printf(out,
                    ",\"port\":%d,\"state\":\"%s\",\"inflight\":%u,"
                    "\"inflight_bytes\":%llu,\"rtt_us\":%lld,"
                    "\"reconnects\":%llu,\"connect_failures\":%llu,"
                    "\"auth_failures\":%llu,\"requests\":%llu,"
                    "\"errors\":%llu",
                    b->port, kp_broker_state_names[b->state], b->inflight,
                    (unsigned long long)kp_stats_req_bytes(b),
                    (long long)b->rtt_us, (unsigned long long)b->reconnects,
                    (unsigned long long)b->connect_failures,
                    (unsigned long long)b->auth_failures,
                    (unsigned long long)b->requests,
                    (unsigned long long)kp_stats_broker_errors(b));
    kp_stats_broker_addrs(b, out);
    kp_stats_broker_security(b, c, out);
    kp_stats_printf(out, ",\"last_fault\":\"%s\",\"last_error\":",
                    kp_broker_fault_names[b->fault]);
    kp_stats_jstr(out, b->last_error);
    kp_stats_printf(out, ",\"latency_us\":");
    kp_stats_hist_json(out, &b->latency[KP_BAPI_PRODUCE],
                       kp_hist_latency_us);
    kp_stats_printf(out, "}");
}

/* "brokers" (the cluster's), "bootstrap" (the configured entries: what
 * was tried before the cluster was known), and what metadata refused. */
static void kp_stats_brokers_json(const struct kp_metadata *md,
                                  const struct kp_conf *c, struct kp_buf *out)
{
    for (int boot = 0; boot < 2; boot++) {
        bool first = true;
        kp_stats_printf(out, ",\"%s\":[", boot ? "bootstrap" : "brokers");
        for (size_t i = 0; i < md->broker_cnt; i++) {
            if ((md->brokers[i]->node_id < 0) != (boot == 1)) {
                continue;
            }
            kp_stats_printf(out, "%s", first ? "" : ",");
            kp_stats_broker_json(md->brokers[i], c, out);
            first = false;
        }
        kp_stats_printf(out, "]");
    }
    kp_stats_printf(out,
                    ",\"metadata_guard\":{\"answers_refused\":%llu,"
                    "\"brokers_skipped\":%llu,\"topics_skipped\":%llu,"
                    "\"brokers_left\":%llu}",
                    (unsigned long long)md->answers_refused,
                    (unsigned long long)md->brokers_skipped,
                    (unsigned long long)md->topics_skipped,
                    (unsigned long long)md->brokers_left);
}

static void kp_stats_partitions_json(const struct kp_topic *t,
                                     struct kp_buf *out)
{
    kp_stats_printf(out, "\"partitions\":{");
    for (int32_t i = 0; i < t->part_cnt; i++) {
        const struct kp_partition *p = t->parts[i];
        kp_stats_printf(out,
                        "%s\"%d\":{\"leader\":%d,\"queued\":%u,"
                        "\"inflight\":%d,\"delivered\":%llu,\"failed\":%llu,"
                        "\"batches\":%llu}",
                        i ? "," : "", p->id, p->leader, p->queued_msgs,
                        p->inflight, (unsigned long long)p->delivered,
                        (unsigned long long)p->failed,
                        (unsigned long long)p->batches);
    }
    kp_stats_printf(out, "}");
}

struct kp_stats_walk {
    struct kp_buf *out;
    bool first;
};

static void kp_stats_topic_json(struct kp_topic *t, void *arg)
{
    struct kp_stats_walk *w = arg;
    uint64_t delivered = 0, failed = 0, batches = 0;
    bool first = true;

    for (int32_t i = 0; i < t->part_cnt; i++) {
        delivered += t->parts[i]->delivered;
        failed += t->parts[i]->failed;
        batches += t->parts[i]->batches;
    }
    kp_stats_printf(w->out, "%s", w->first ? "" : ",");
    w->first = false;
    kp_stats_jstr(w->out, t->name);
    kp_stats_printf(w->out,
                    ":{\"state\":\"%s\",\"held_bytes\":%lld,"
                    "\"blocked\":%u,\"pauses\":%llu,\"queued\":%llu,"
                    "\"delivered\":%llu,\"failed\":%llu,\"batches\":%llu,"
                    "\"failed_by\":{",
                    kp_topic_state_names[t->state], (long long)t->acct.bytes,
                    t->waiter_cnt, (unsigned long long)t->pauses,
                    (unsigned long long)kp_topic_queued(t),
                    (unsigned long long)delivered,
                    (unsigned long long)failed, (unsigned long long)batches);
    for (int i = 0; i < KP_REASON__COUNT; i++) {
        if (t->failed_by[i]) {
            kp_stats_printf(w->out, "%s\"%s\":%llu", first ? "" : ",",
                            kp_reason_names[i],
                            (unsigned long long)t->failed_by[i]);
            first = false;
        }
    }
    kp_stats_printf(w->out, "},");
    kp_stats_partitions_json(t, w->out);
    kp_stats_printf(w->out, "}");
}

/* The live (reloadable) settings in force, and the reload outcome. */
static void kp_stats_config_json(const struct kp_stats_src *s,
                                 struct kp_buf *out)
{
    const struct kp_conf *c = s->conf;

    kp_stats_printf(out, ",\"config\":{\"path\":");
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
                    (unsigned long long)s->n->reloads,
                    (unsigned long long)s->n->reload_failures,
                    s->n->last_reload_failed ? "false" : "true",
                    (long long)s->reload_wall_ms,
                    kp_log_level_names[c->log_level],
                    (long long)c->buffer_bytes);
    kp_conf_producer_render(&c->producer, out);
    kp_stats_printf(out, ",\"topics\":{");
    for (size_t i = 0; i < c->topic_cnt; i++) {
        kp_stats_printf(out, "%s", i ? "," : "");
        kp_stats_jstr(out, c->topics[i].name);
        kp_buf_put_bytes(out, ":", 1);
        kp_conf_producer_render(&c->topics[i].producer, out);
    }
    kp_stats_printf(out, "}}");
}

void kp_stats_json(const struct kp_stats_src *s, struct kp_buf *out)
{
    struct kp_gauges g;
    struct kp_stats_walk w = {out, true};

    kp_stats_gauges(s, &g);
    kp_stats_printf(out, "{\"idempotence\":\"%s\"",
                    kp_idemp_state_names[s->idemp->state]);
    kp_stats_json_scalars(s, &g, NULL, out);
    kp_stats_rejected_json(s->n, out);
    kp_stats_batch_json(s, out);
    kp_stats_brokers_json(s->md, s->conf, out);
    kp_stats_printf(out, ",\"topics\":{");
    kp_topic_foreach((struct kp_topic_table *)&s->router->topics,
                     kp_stats_topic_json, &w);
    kp_stats_printf(out, "}");
    kp_stats_config_json(s, out);
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

/* The unit a family's name ends in (counters of bytes). */
static const char *kp_om_unit(const char *name)
{
    return name && strstr(name, "_bytes") ? "bytes" : NULL;
}

/* One gauge of KP_GAUGE_LIST (milliseconds shown as seconds). */
static void kp_om_gauge(struct kp_buf *out, const char *m, const char *u,
                        enum kp_gauge_kind k, const char *h, int64_t v)
{
    kp_om_family(out, m, k == KP_G_MS_TOTAL ? "counter" : "gauge", u, h);
    if (k == KP_G_MS || k == KP_G_MS_TOTAL) {
        kp_stats_printf(out, "kproxyd_%s%s %.3f\n", m,
                        k == KP_G_MS_TOTAL ? "_total" : "", (double)v / 1e3);
    } else {
        kp_stats_printf(out, "kproxyd_%s %lld\n", m, (long long)v);
    }
}

static void kp_om_scalars(const struct kp_counters *n,
                          const struct kp_gauges *g, struct kp_buf *out)
{
#define KP_OM_COUNTER(f, grp, j, m, h)                                         \
    if (m) {                                                                   \
        kp_om_family(out, (m), "counter", kp_om_unit(m), (h));                 \
        kp_stats_printf(out, "kproxyd_%s_total %llu\n", (const char *)(m),     \
                        (unsigned long long)n->f);                             \
    }
    KP_COUNTER_LIST(KP_OM_COUNTER)
#undef KP_OM_COUNTER
#define KP_OM_GAUGE(f, j, m, u, k, h)                                          \
    if (m) {                                                                   \
        kp_om_gauge(out, (m), (u), (k), (h), g->f);                            \
    }
    KP_GAUGE_LIST(KP_OM_GAUGE)
#undef KP_OM_GAUGE
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
    int ll = labels[0] ? (int)strlen(labels) - 1 : 0;

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
                    ll ? "{" : "", ll, labels, ll ? "}" : "",
                    (unsigned long long)h->count);
    kp_stats_printf(out, "kproxyd_%s_sum%s%.*s%s ", name, ll ? "{" : "", ll,
                    labels, ll ? "}" : "");
    if (div == 1.0) {
        kp_stats_printf(out, "%llu\n", (unsigned long long)h->sum);
    } else {
        kp_stats_printf(out, "%.6f\n", (double)h->sum / div);
    }
}

static void kp_om_labelled(const struct kp_stats_src *s, struct kp_buf *out)
{
    const struct kp_counters *n = s->n;

    kp_om_family(out, "rejected_lines", "counter", NULL,
                 "Lines rejected, by reason.");
    for (int i = 0; i < KP_REASON__COUNT; i++) {
        if (kp_reason_is_reject((enum kp_reason)i) || n->rejected_by[i]) {
            kp_stats_printf(out,
                            "kproxyd_rejected_lines_total{reason=\"%s\"} "
                            "%llu\n",
                            kp_reason_names[i],
                            (unsigned long long)n->rejected_by[i]);
        }
    }
    kp_om_family(out, "connections_refused", "counter", NULL,
                 "Client connections closed at accept, by reason.");
    kp_stats_printf(out,
                    "kproxyd_connections_refused_total{reason=\"peer\"} "
                    "%llu\n"
                    "kproxyd_connections_refused_total{reason=\"uid\"} "
                    "%llu\n"
                    "kproxyd_connections_refused_total{reason=\"other\"} "
                    "%llu\n",
                    (unsigned long long)n->clients_refused_peer,
                    (unsigned long long)n->clients_refused_uid,
                    (unsigned long long)(n->clients_refused -
                                         n->clients_refused_peer -
                                         n->clients_refused_uid));
    kp_om_family(out, "config_reloads", "counter", NULL,
                 "Configuration reloads, by result.");
    kp_stats_printf(out,
                    "kproxyd_config_reloads_total{result=\"applied\"} %llu\n"
                    "kproxyd_config_reloads_total{result=\"rejected\"} "
                    "%llu\n",
                    (unsigned long long)n->reloads,
                    (unsigned long long)n->reload_failures);
    kp_om_family(out, "config_last_reload_successful", "gauge", NULL,
                 "0 when the last reload was rejected (old settings kept).");
    kp_stats_printf(out, "kproxyd_config_last_reload_successful %d\n",
                    n->last_reload_failed ? 0 : 1);
}

static void kp_om_batches(const struct kp_stats_src *s, struct kp_buf *out)
{
    const struct kp_batch_stats *bs = &s->router->bstats;

    kp_om_family(out, "compression_ratio", "gauge", "ratio",
                 "Uncompressed over wire bytes of every batch sealed.");
    kp_stats_printf(out, "kproxyd_compression_ratio %.4f\n",
                    kp_stats_compression_ratio(s->n));
    kp_om_family(out, "codec_batches", "counter", NULL,
                 "Batches sealed, by the codec used on the wire.");
    for (int i = 0; i < KP_CODEC__COUNT; i++) {
        kp_stats_printf(out, "kproxyd_codec_batches_total{codec=\"%s\"} "
                             "%llu\n",
                        kp_codec_names[i],
                        (unsigned long long)bs->codec_batches[i]);
    }
    kp_om_family(out, "batch_messages", "histogram", NULL,
                 "Messages per sealed batch.");
    kp_om_hist(out, "batch_messages", "", &bs->msgs, kp_hist_batch_msgs,
               1.0);
    kp_om_family(out, "batch_size_bytes", "histogram", "bytes",
                 "Uncompressed bytes per sealed batch.");
    kp_om_hist(out, "batch_size_bytes", "", &bs->bytes, kp_hist_batch_bytes,
               1.0);
    kp_om_family(out, "batch_fill_ratio", "histogram", "ratio",
                 "How full a sealed batch was: the larger of its bytes "
                 "over batch_bytes and its messages over batch_messages.");
    kp_om_hist(out, "batch_fill_ratio", "", &bs->fill, kp_hist_batch_fill,
               1000.0);
}

/* Per-broker families (bootstrap entries are not brokers): X(name, type,
 * unit, help, printf format, value). */
#define KP_OM_BROKER_LIST(X)                                                   \
    X("broker_up", "gauge", NULL,                                             \
      "1 when the connection is up (ApiVersions done).", "%d",                 \
      b->state == KP_BROKER_UP)                                                \
    X("broker_inflight_requests", "gauge", NULL,                              \
      "Requests sent to the broker, awaiting a response.", "%u", b->inflight)  \
    X("broker_inflight_bytes", "gauge", "bytes",                              \
      "Bytes of requests awaiting a response.", "%llu",                        \
      (unsigned long long)kp_stats_req_bytes(b))                               \
    X("broker_rtt_seconds", "gauge", "seconds",                               \
      "Smoothed request round-trip time.", "%.6f", (double)b->rtt_us / 1e6)    \
    X("broker_reconnects", "counter", NULL,                                   \
      "Connections lost and made again.", "%llu",                              \
      (unsigned long long)b->reconnects)                                       \
    X("broker_requests", "counter", NULL, "Requests sent.", "%llu",           \
      (unsigned long long)b->requests)                                         \
    X("broker_connect_failures", "counter", NULL,                             \
      "Connection attempts that never came up.", "%llu",                       \
      (unsigned long long)b->connect_failures)                                 \
    X("broker_auth_failures", "counter", NULL,                                \
      "TLS or SASL handshakes that failed.", "%llu",                           \
      (unsigned long long)b->auth_failures)                                    \
    X("broker_reauthentications", "counter", NULL,                            \
      "SASL re-authentications (KIP-368) done.", "%llu",                       \
      (unsigned long long)b->reauths)

static void kp_om_broker_errors(const struct kp_metadata *md,
                                struct kp_buf *out)
{
    kp_om_family(out, "broker_errors", "counter", NULL,
                 "Error codes in the broker's Produce answers, by code.");
    for (size_t i = 0; i < md->broker_cnt; i++) {
        const struct kp_broker *b = md->brokers[i];
        for (int c = -1; b->sender && c < KP_SENDER_ERR_CODES - 1; c++) {
            uint64_t v = kp_sender_errors(b->sender, (int16_t)c);
            if (v && b->node_id >= 0) {
                kp_stats_printf(out,
                                "kproxyd_broker_errors_total{broker=\"%d\","
                                "code=\"%s\"} %llu\n",
                                b->node_id, kp_kerr_name((int16_t)c),
                                (unsigned long long)v);
            }
        }
    }
}

static void kp_om_latency(const struct kp_metadata *md, struct kp_buf *out)
{
    kp_om_family(out, "request_latency_seconds", "histogram", "seconds",
                 "Time from sending a request to its response, by broker "
                 "and API.");
    for (size_t i = 0; i < md->broker_cnt; i++) {
        const struct kp_broker *b = md->brokers[i];
        for (int a = 0; a < KP_BAPI__COUNT && b->node_id >= 0; a++) {
            char labels[64];
            if (b->latency[a].count == 0) {
                continue;
            }
            snprintf(labels, sizeof(labels), "broker=\"%d\",api=\"%s\",",
                     b->node_id, kp_broker_api_names[a]);
            kp_om_hist(out, "request_latency_seconds", labels,
                       &b->latency[a], kp_hist_latency_us, 1e6);
        }
    }
}

static void kp_om_brokers(const struct kp_metadata *md, struct kp_buf *out)
{
#define KP_OM_BROKER(name, type, unit, help, fmt, value)                       \
    kp_om_family(out, name, type, unit, help);                                 \
    for (size_t i = 0; i < md->broker_cnt; i++) {                              \
        const struct kp_broker *b = md->brokers[i];                            \
        if (b->node_id >= 0) {                                                 \
            kp_stats_printf(out, "kproxyd_%s%s{broker=\"%d\"} " fmt "\n",      \
                            name,                                              \
                            strcmp(type, "counter") == 0 ? "_total" : "",      \
                            b->node_id, value);                                \
        }                                                                      \
    }
    KP_OM_BROKER_LIST(KP_OM_BROKER)
#undef KP_OM_BROKER
    kp_om_broker_errors(md, out);
    kp_om_latency(md, out);
}

/* Per-partition families: X(name, type, help, value). */
#define KP_OM_PART_LIST(X)                                                     \
    X("partition_delivered_messages", "counter",                              \
      "Messages acknowledged by Kafka, by topic and partition.",              \
      (long long)p->delivered)                                                 \
    X("partition_failed_messages", "counter",                                 \
      "Messages that failed, by topic and partition.", (long long)p->failed)   \
    X("partition_batches", "counter",                                         \
      "Batches sealed, by topic and partition.", (long long)p->batches)        \
    X("partition_queued_messages", "gauge",                                   \
      "Messages in a partition's open, sealed or in-flight batches.",         \
      (long long)p->queued_msgs)                                               \
    X("partition_leader", "gauge",                                            \
      "Node id of the partition's leader (-1: unknown).",                     \
      (long long)p->leader)

struct kp_om_walk {
    struct kp_buf *out;
    int family; /* index in KP_OM_PART_LIST, or -1: per topic */
};

static void kp_om_topic_parts(struct kp_topic *t, void *arg)
{
    struct kp_om_walk *w = arg;
    int f = 0;

    for (int32_t i = 0; i < t->part_cnt; i++) {
        const struct kp_partition *p = t->parts[i];
        f = 0;
#define KP_OM_PART(fam_, type_, help_, value_)                                 \
    if (f++ == w->family) {                                                    \
        kp_stats_printf(w->out, "kproxyd_%s%s{topic=\"", fam_,                 \
                        strcmp(type_, "counter") == 0 ? "_total" : "");        \
        kp_stats_lval(w->out, t->name);                                        \
        kp_stats_printf(w->out, "\",partition=\"%d\"} %lld\n", p->id,         \
                        value_);                                               \
    }
        KP_OM_PART_LIST(KP_OM_PART)
#undef KP_OM_PART
    }
}

static void kp_om_topic(struct kp_topic *t, void *arg)
{
    struct kp_om_walk *w = arg;

    for (int i = 0; i < KP_REASON__COUNT; i++) {
        if (t->failed_by[i]) {
            kp_stats_printf(w->out,
                            "kproxyd_topic_failed_messages_total{topic=\"");
            kp_stats_lval(w->out, t->name);
            kp_stats_printf(w->out, "\",reason=\"%s\"} %llu\n",
                            kp_reason_names[i],
                            (unsigned long long)t->failed_by[i]);
        }
    }
}

/* w->family 0: bytes held, 1: connections paused on the topic. */
static void kp_om_topic_held(struct kp_topic *t, void *arg)
{
    struct kp_om_walk *w = arg;
    kp_stats_printf(w->out, "kproxyd_topic_%s{topic=\"",
                    w->family == 0 ? "held_bytes" : "blocked_connections");
    kp_stats_lval(w->out, t->name);
    kp_stats_printf(w->out, "\"} %lld\n",
                    w->family == 0 ? (long long)t->acct.bytes
                                   : (long long)t->waiter_cnt);
}

/* Per-topic sums of the partition series (there whether or not
 * partition_metrics is on): w->family 0 delivered, 1 queued. */
static void kp_om_topic_sums(struct kp_topic *t, void *arg)
{
    struct kp_om_walk *w = arg;
    uint64_t v = w->family == 0 ? 0 : kp_topic_queued(t);

    for (int32_t i = 0; w->family == 0 && i < t->part_cnt; i++) {
        v += t->parts[i]->delivered;
    }
    kp_stats_printf(w->out, "kproxyd_topic_%s{topic=\"",
                    w->family == 0 ? "delivered_messages_total"
                                   : "queued_messages");
    kp_stats_lval(w->out, t->name);
    kp_stats_printf(w->out, "\"} %llu\n", (unsigned long long)v);
}

static void kp_om_topics(const struct kp_stats_src *s, struct kp_buf *out)
{
    struct kp_topic_table *tt = (struct kp_topic_table *)&s->router->topics;
    struct kp_om_walk w = {out, 0};

    /* partition_metrics: false drops these (topics x partitions series) */
#define KP_OM_PART_FAMILY(fam_, type_, help_, value_)                          \
    kp_om_family(out, fam_, type_, NULL, help_);                               \
    kp_topic_foreach(tt, kp_om_topic_parts, &w);                               \
    w.family++;
    if (s->conf->partition_metrics) {
        KP_OM_PART_LIST(KP_OM_PART_FAMILY)
    }
#undef KP_OM_PART_FAMILY
    kp_om_family(out, "topic_delivered_messages", "counter", NULL,
                 "Messages acknowledged by Kafka, by topic.");
    w.family = 0;
    kp_topic_foreach(tt, kp_om_topic_sums, &w);
    kp_om_family(out, "topic_queued_messages", "gauge", NULL,
                 "Messages read and not yet settled, by topic.");
    w.family = 1;
    kp_topic_foreach(tt, kp_om_topic_sums, &w);
    kp_om_family(out, "topic_failed_messages", "counter", NULL,
                 "Failed messages by topic and reason.");
    kp_topic_foreach(tt, kp_om_topic, &w);
    kp_om_family(out, "topic_held_bytes", "gauge", "bytes",
                 "Message bytes a topic holds (topic_buffer_bytes bounds "
                 "them).");
    w.family = 0;
    kp_topic_foreach(tt, kp_om_topic_held, &w);
    kp_om_family(out, "topic_blocked_connections", "gauge", NULL,
                 "Connections paused on a topic: full, or no metadata "
                 "yet.");
    w.family = 1;
    kp_topic_foreach(tt, kp_om_topic_held, &w);
}

void kp_stats_metrics(const struct kp_stats_src *s, struct kp_buf *out)
{
    struct kp_gauges g;

    kp_stats_gauges(s, &g);
    kp_om_family(out, "build", "info", NULL, "kproxyd version.");
    kp_stats_printf(out, "kproxyd_build_info{version=\"%s\"} 1\n",
                    KP_VERSION);
    kp_om_scalars(s->n, &g, out);
    kp_om_labelled(s, out);
    kp_om_batches(s, out);
    kp_om_brokers(s->md, out);
    kp_om_topics(s, out);
    kp_procstats_render(true, out);
    kp_stats_printf(out, "# EOF\n");
}
