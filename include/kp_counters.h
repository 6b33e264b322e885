/*
 * kp_counters.h - the daemon's monotonic counters, declared once (as
 * twemproxy's nc_stats.h does): each module increments its fields where
 * things happen, and kp_stats expands the same list into the `stats` JSON,
 * the OpenMetrics families and the HTTP endpoint. Adding a counter is one
 * line here.
 */
#ifndef KP_COUNTERS_H
#define KP_COUNTERS_H

#include "kp_common.h"
#include "kp_reason.h"

/*
 * X(field, json group (NULL: top level), json name, metric family (NULL:
 *   JSON only), help). Metric families are counters: `kproxyd_NAME_total`.
 */
#define KP_COUNTER_LIST(X)                                                     \
    X(received, NULL, "received", "received_messages",                        \
      "Messages read from clients.")                                           \
    X(delivered, NULL, "delivered", "delivered_messages",                     \
      "Messages acknowledged by Kafka.")                                       \
    X(failed, NULL, "failed", "failed_messages",                              \
      "Messages that could not be delivered.")                                 \
    X(rejected, NULL, "rejected", NULL, "Lines rejected.")                    \
    X(retries, NULL, "retries", "retries",                                    \
      "Batches sent again after an error.")                                    \
    X(metadata_refreshes, NULL, "metadata_refreshes", "metadata_refreshes",   \
      "Metadata requests sent.")                                               \
    X(batches, NULL, "batches", "batches", "Batches sealed.")                  \
    X(connections, NULL, "connections", "connections",                        \
      "Client connections accepted.")                                          \
    X(receipt_pauses, NULL, "receipt_pauses", "receipt_pauses",               \
      "Times a connection was not read because 1 MiB of its receipts "       \
      "waited unread.")                                                        \
    X(topic_waits, NULL, "topic_waits", "topic_waits",                        \
      "Times a connection was paused on a topic that was full or had no "    \
      "metadata yet.")                                                         \
    X(block_timeouts, NULL, "block_timeouts", "block_timeouts",               \
      "Times a connection paused on a full topic for max_block_ms: its "     \
      "messages for it then fail as buffer_full.")                             \
    X(spool_kept, "spool", "kept", "spool_kept_messages",                     \
      "Messages left in the disk spool at a shutdown deadline, for the "     \
      "next start.")                                                           \
    X(spool_spilled, "spool", "spilled", "spool_spilled_messages",            \
      "Messages that went to the disk spool only (memory or their topic "    \
      "full, or read back from it), not straight to a batch.")                \
    X(spool_pauses, "spool", "pauses", "spool_pauses",                        \
      "Times writers were paused because the spool took no more (max_bytes " \
      "or a write error).")                                                    \
    X(dead_letter_errors, NULL, "dead_letter_errors", "dead_letter_errors",   \
      "Failed messages the dead letter file could not take (a write "        \
      "error); with a disk spool their records stay there for the next "      \
      "start.")                                                                \
    X(partial_evictions, NULL, "partial_evictions", "partial_evictions",      \
      "Unfinished lines rejected (buffer_full) because unfinished lines "    \
      "held buffer_bytes / 8.")                                                \
    X(clients_refused, NULL, "clients_refused", NULL,                         \
      "Client connections closed at accept.")                                  \
    X(clients_refused_peer, NULL, "clients_refused_peer", NULL,               \
      "Of clients_refused: the peer was not allowed.")                         \
    X(clients_refused_uid, NULL, "clients_refused_uid", NULL,                 \
      "Of clients_refused: the uid had max_clients_per_uid connections.")     \
    X(batch_bytes_raw, "batch", "bytes_uncompressed",                         \
      "batch_uncompressed_bytes", "RecordBatch bytes before compression.")     \
    X(batch_bytes_wire, "batch", "bytes_wire", "batch_wire_bytes",            \
      "RecordBatch bytes as sent (after compression).")                        \
    X(uncompressed_fallback, "batch", "uncompressed_fallback",                \
      "uncompressed_fallback_batches",                                         \
      "Batches sent uncompressed because compressing did not make them "      \
      "smaller.")                                                              \
    X(reloads, NULL, NULL, NULL, "Configuration reloads applied.")             \
    X(reload_failures, NULL, NULL, NULL,                                       \
      "Configuration reloads rejected (old settings kept).")

struct kp_counters {
#define KP_COUNTER_FIELD(f, g, j, m, h) uint64_t f;
    KP_COUNTER_LIST(KP_COUNTER_FIELD)
#undef KP_COUNTER_FIELD
    uint64_t rejected_by[KP_REASON__COUNT]; /* lines, by reason */
    bool last_reload_failed;
};

#endif
