/*
 * kp_reason.h - why a message did not reach Kafka: the one fixed set of
 * snake_case reasons that stats (`rejected_by`, `failed_by`), the metrics'
 * `reason` labels, receipts and the dead letter's `error` field all use.
 *
 * A message is *rejected* when kproxyd could not use it at all (it is not
 * counted as received) and *failed* when it was accepted but will not be
 * delivered. The list says which set each reason belongs to; the dead
 * letter may add the broker's own words after the reason ("reason: ...").
 */
#ifndef KP_REASON_H
#define KP_REASON_H

/* X(ENUM, "name", rejected-at-read) */
#define KP_REASON_LIST(X)                                                      \
    X(NONE, "none", 0)                                                         \
    X(TOO_LONG, "too_long", 1)               /* > message_max_bytes */         \
    X(BAD_FORMAT, "bad_format", 1)           /* a field is missing */          \
    X(BAD_JSON, "bad_json", 1)               /* json: syntax, types, base64 */ \
    X(BAD_TOPIC, "bad_topic", 1)             /* not [A-Za-z0-9._-]{1,249} */   \
    X(TOPIC_DENIED, "topic_denied", 1)       /* not in allow_topics */         \
    X(BAD_PARTITION, "bad_partition", 1)     /* json partition out of range */ \
    X(BAD_TIMESTAMP, "bad_timestamp", 1)     /* beyond max_timestamp_skew */   \
    X(TOO_MANY_TOPICS, "too_many_topics", 1) /* max_topics reached */          \
    X(UNKNOWN_TOPIC, "unknown_topic", 0)     /* no metadata for the topic */   \
    X(BUFFER_FULL, "buffer_full", 0)         /* blocked past max_block_ms */   \
    X(DELIVERY_TIMEOUT, "delivery_timeout", 0)                                 \
    X(SHUTDOWN, "shutdown", 0)               /* never sent before exit */      \
    X(SHUTDOWN_UNCONFIRMED, "shutdown_unconfirmed", 0) /* sent, no answer */   \
    X(MESSAGE_TOO_LARGE, "message_too_large", 0)                               \
    X(INVALID_RECORD, "invalid_record", 0)   /* the broker refused it */       \
    X(AUTHORIZATION, "authorization", 0)     /* ACLs */                        \
    X(AUTHENTICATION, "authentication", 0)   /* SASL/TLS never succeeded */    \
    X(UNSUPPORTED_VERSION, "unsupported_version", 0) /* e.g. zstd < v7 */      \
    X(BROKER_ERROR, "broker_error", 0)       /* any other broker error */ \
    X(SPOOL_ERROR, "spool_error", 0)         /* its spool record was lost */

enum kp_reason {
#define KP_REASON_ENUM(e, name, rej) KP_REASON_##e,
    KP_REASON_LIST(KP_REASON_ENUM)
#undef KP_REASON_ENUM
    KP_REASON__COUNT
};

extern const char *const kp_reason_names[KP_REASON__COUNT];

/* Whether the reason is one a line is rejected for when it is read. */
int kp_reason_is_reject(enum kp_reason r);

#endif
