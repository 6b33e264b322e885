/*
 * kp_stats.c - the counters, rendered as one line of JSON for `stats` and
 * as OpenMetrics text for `metrics`.
 */
#include "kp_stats.h"

#include <stdarg.h>
#include <stdio.h>

#include "kp_broker.h"
#include "kp_buf.h"
#include "kp_conf.h"
#include "kp_ctx.h"
#include "kp_line.h"
#include "kp_partition.h"
#include "kp_topic.h"

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

static uint32_t kp_stats_inflight(const struct kp_ctx *ctx)
{
    uint32_t n = 0;
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        n += ctx->brokers[i]->inflight;
    }
    return n;
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

static void kp_stats_topic_json(struct kp_ctx *ctx, struct kp_topic *t,
                                void *arg)
{
    struct kp_stats_walk *w = arg;
    (void)ctx;

    kp_stats_printf(w->out, "%s\"%s\":{\"state\":\"%s\",\"held\":%u,"
                            "\"queued\":%llu,\"failed_by\":{",
                    w->first ? "" : ",", t->name,
                    kp_topic_state_names[t->state], t->pending_cnt,
                    (unsigned long long)kp_stats_topic_queued(t));
    w->first = false;
    for (uint32_t i = 0; i < t->fail_cnt; i++) {
        kp_stats_printf(w->out, "%s\"%s\":%llu", i ? "," : "",
                        t->fails[i].reason,
                        (unsigned long long)t->fails[i].n);
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

void kp_stats_json(struct kp_ctx *ctx, struct kp_buf *out)
{
    const struct kp_counters *n = &ctx->n;

    kp_stats_printf(
        out,
        "{\"received\":%llu,\"delivered\":%llu,\"failed\":%llu,"
        "\"rejected\":%llu,\"queued_messages\":%llu,\"queued_bytes\":%lld,"
        "\"inflight_requests\":%u,\"clients\":%u,\"clients_refused\":%llu,"
        "\"backpressure\":%s,\"uptime_ms\":%lld,\"retries\":%llu,"
        "\"metadata_refreshes\":%llu,\"batches\":%llu,",
        (unsigned long long)n->received, (unsigned long long)n->delivered,
        (unsigned long long)n->failed, (unsigned long long)n->rejected,
        (unsigned long long)ctx->queued_msgs, (long long)ctx->buffered_bytes,
        kp_stats_inflight(ctx), ctx->client_cnt,
        (unsigned long long)n->clients_refused,
        ctx->backpressure ? "true" : "false",
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
    kp_stats_printf(out, "},\"brokers\":[");
    bool first = true;
    for (size_t i = 0; i < ctx->broker_cnt; i++) {
        const struct kp_broker *b = ctx->brokers[i];
        if (b->node_id < 0) {
            continue; /* bootstrap entries are not brokers */
        }
        kp_stats_printf(out,
                        "%s{\"id\":%d,\"host\":\"%s\",\"port\":%d,"
                        "\"state\":\"%s\",\"inflight\":%u,\"rtt_us\":%lld,"
                        "\"reconnects\":%llu,\"requests\":%llu}",
                        first ? "" : ",", b->node_id, b->host, b->port,
                        kp_broker_state_names[b->state], b->inflight,
                        (long long)b->rtt_us,
                        (unsigned long long)b->reconnects,
                        (unsigned long long)b->requests);
        first = false;
    }
    kp_stats_printf(out, "],\"topics\":{");
    struct kp_stats_walk w = {out, true};
    kp_topic_foreach(&ctx->topics, kp_stats_topic_json, ctx, &w);
    kp_stats_printf(out, "}}\n");
}

static void kp_stats_metric(struct kp_buf *out, const char *name,
                            const char *type, const char *help,
                            long long value)
{
    kp_stats_printf(out, "# TYPE kproxyd_%s %s\n# HELP kproxyd_%s %s\n",
                    name, type, name, help);
    kp_stats_printf(out, "kproxyd_%s%s %lld\n", name,
                    strcmp(type, "counter") == 0 ? "_total" : "", value);
}

static void kp_stats_topic_fails(struct kp_ctx *ctx, struct kp_topic *t,
                                 void *arg)
{
    struct kp_buf *out = arg;
    (void)ctx;
    for (uint32_t i = 0; i < t->fail_cnt; i++) {
        kp_stats_printf(out,
                        "kproxyd_failed_messages_by_reason_total{topic=\"%s\","
                        "reason=\"%s\"} %llu\n",
                        t->name, t->fails[i].reason,
                        (unsigned long long)t->fails[i].n);
    }
}

static void kp_stats_topic_metrics(struct kp_ctx *ctx, struct kp_topic *t,
                                   void *arg)
{
    struct kp_buf *out = arg;
    (void)ctx;
    for (int32_t i = 0; i < t->part_cnt; i++) {
        const struct kp_partition *p = t->parts[i];
        kp_stats_printf(out,
                        "kproxyd_partition_delivered_messages_total{topic=\"%s\","
                        "partition=\"%d\"} %llu\n",
                        t->name, p->id, (unsigned long long)p->delivered);
    }
}

void kp_stats_metrics(struct kp_ctx *ctx, struct kp_buf *out)
{
    const struct kp_counters *n = &ctx->n;

    kp_stats_metric(out, "received_messages", "counter",
                    "Messages read from clients.", (long long)n->received);
    kp_stats_metric(out, "delivered_messages", "counter",
                    "Messages acknowledged by Kafka.",
                    (long long)n->delivered);
    kp_stats_metric(out, "failed_messages", "counter",
                    "Messages that could not be delivered.",
                    (long long)n->failed);
    kp_stats_printf(out, "# TYPE kproxyd_rejected_lines counter\n"
                         "# HELP kproxyd_rejected_lines Lines rejected, by "
                         "reason.\n");
    for (int i = 1; i < KP_REJ__COUNT; i++) {
        kp_stats_printf(out, "kproxyd_rejected_lines_total{reason=\"%s\"} "
                             "%llu\n",
                        kp_reject_names[i],
                        (unsigned long long)n->rejected_by[i]);
    }
    kp_stats_metric(out, "retries", "counter", "Batches sent again.",
                    (long long)n->retries);
    kp_stats_metric(out, "metadata_refreshes", "counter",
                    "Metadata requests sent.",
                    (long long)n->metadata_refreshes);
    kp_stats_metric(out, "batches", "counter", "Batches sealed.",
                    (long long)n->batches);
    kp_stats_metric(out, "clients_refused", "counter",
                    "Connections closed at accept.",
                    (long long)n->clients_refused);
    kp_stats_metric(out, "queued_messages", "gauge",
                    "Messages read, not yet settled.",
                    (long long)ctx->queued_msgs);
    kp_stats_metric(out, "queued_bytes", "gauge",
                    "Message bytes held in memory.",
                    (long long)ctx->buffered_bytes);
    kp_stats_metric(out, "inflight_requests", "gauge",
                    "Requests awaiting a response.",
                    (long long)kp_stats_inflight(ctx));
    kp_stats_metric(out, "clients", "gauge", "Connected clients.",
                    (long long)ctx->client_cnt);
    kp_stats_metric(out, "backpressure", "gauge",
                    "1 while reading from clients is paused.",
                    ctx->backpressure ? 1 : 0);
    kp_stats_metric(out, "uptime_seconds", "gauge", "Seconds since start.",
                    (long long)((kp_mono_ms() - ctx->start_ms) / 1000));
    kp_stats_printf(out,
                    "# TYPE kproxyd_partition_delivered_messages counter\n"
                    "# HELP kproxyd_partition_delivered_messages Messages "
                    "delivered per partition.\n");
    kp_topic_foreach(&ctx->topics, kp_stats_topic_metrics, ctx, out);
    kp_stats_printf(out,
                    "# TYPE kproxyd_failed_messages_by_reason counter\n"
                    "# HELP kproxyd_failed_messages_by_reason Failed messages "
                    "by topic and reason.\n");
    kp_topic_foreach(&ctx->topics, kp_stats_topic_fails, ctx, out);
    kp_stats_printf(out, "# EOF\n");
}
