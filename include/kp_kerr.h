/*
 * kp_kerr.h - Kafka error codes: one list with each code's name (as in
 * Errors.java), what a producer does about it (as librdkafka's
 * rd_kafka_err_action) and the fate reason a message gets when the error
 * makes it fail. No other module holds raw error numbers.
 */
#ifndef KP_KERR_H
#define KP_KERR_H

#include "kp_common.h"
#include "kp_reason.h"

/* What an error code in a Produce answer means for the batch. */
enum kp_kerr_action {
    KP_ACT_DELIVERED,     /* the broker has the batch */
    KP_ACT_RETRY,         /* transient: same leader, after backoff */
    KP_ACT_RETRY_REFRESH, /* metadata is stale: refresh, then retry */
    KP_ACT_RETRY_NEW_PID, /* producer id/sequence state must be reset */
    KP_ACT_SPLIT,         /* batch too large: halves, down to one message */
    KP_ACT_ISOLATE,       /* the broker refused some records on their own:
                             fail only those, resend the rest */
    KP_ACT_FAIL,          /* no retry can fix it */
    KP_ACT__COUNT
};

/* X(ENUM, code, action, reason when it fails) */
#define KP_KERR_LIST(X)                                                        \
    X(PARTITION_MISSING, -2, RETRY_REFRESH, BROKER_ERROR) /* ours: absent   \
                                                             from answer */    \
    X(UNKNOWN_SERVER_ERROR, -1, FAIL, BROKER_ERROR)                            \
    X(NONE, 0, DELIVERED, NONE)                                                \
    X(OFFSET_OUT_OF_RANGE, 1, FAIL, BROKER_ERROR)                              \
    X(CORRUPT_MESSAGE, 2, FAIL, INVALID_RECORD)                                \
    X(UNKNOWN_TOPIC_OR_PARTITION, 3, RETRY_REFRESH, UNKNOWN_TOPIC)             \
    X(INVALID_FETCH_SIZE, 4, FAIL, BROKER_ERROR)                               \
    X(LEADER_NOT_AVAILABLE, 5, RETRY_REFRESH, BROKER_ERROR)                    \
    X(NOT_LEADER_OR_FOLLOWER, 6, RETRY_REFRESH, BROKER_ERROR)                  \
    X(REQUEST_TIMED_OUT, 7, RETRY, BROKER_ERROR)                               \
    X(BROKER_NOT_AVAILABLE, 8, RETRY_REFRESH, BROKER_ERROR)                    \
    X(REPLICA_NOT_AVAILABLE, 9, FAIL, BROKER_ERROR)                            \
    X(MESSAGE_TOO_LARGE, 10, SPLIT, MESSAGE_TOO_LARGE)                         \
    X(STALE_CONTROLLER_EPOCH, 11, FAIL, BROKER_ERROR)                          \
    X(OFFSET_METADATA_TOO_LARGE, 12, FAIL, BROKER_ERROR)                       \
    X(NETWORK_EXCEPTION, 13, RETRY, BROKER_ERROR)                              \
    X(COORDINATOR_LOAD_IN_PROGRESS, 14, FAIL, BROKER_ERROR)                    \
    X(COORDINATOR_NOT_AVAILABLE, 15, FAIL, BROKER_ERROR)                       \
    X(NOT_COORDINATOR, 16, FAIL, BROKER_ERROR)                                 \
    X(INVALID_TOPIC_EXCEPTION, 17, FAIL, BAD_TOPIC)                            \
    X(RECORD_LIST_TOO_LARGE, 18, FAIL, MESSAGE_TOO_LARGE)                      \
    X(NOT_ENOUGH_REPLICAS, 19, RETRY, BROKER_ERROR)                            \
    X(NOT_ENOUGH_REPLICAS_AFTER_APPEND, 20, RETRY, BROKER_ERROR)               \
    X(INVALID_REQUIRED_ACKS, 21, FAIL, BROKER_ERROR)                           \
    X(ILLEGAL_GENERATION, 22, FAIL, BROKER_ERROR)                              \
    X(TOPIC_AUTHORIZATION_FAILED, 29, FAIL, AUTHORIZATION)                     \
    X(GROUP_AUTHORIZATION_FAILED, 30, FAIL, AUTHORIZATION)                     \
    X(CLUSTER_AUTHORIZATION_FAILED, 31, FAIL, AUTHORIZATION)                   \
    X(INVALID_TIMESTAMP, 32, ISOLATE, BAD_TIMESTAMP)                              \
    X(UNSUPPORTED_SASL_MECHANISM, 33, FAIL, AUTHENTICATION)                    \
    X(ILLEGAL_SASL_STATE, 34, FAIL, AUTHENTICATION)                            \
    X(UNSUPPORTED_VERSION, 35, FAIL, UNSUPPORTED_VERSION)                      \
    X(TOPIC_ALREADY_EXISTS, 36, FAIL, BROKER_ERROR)                            \
    X(INVALID_PARTITIONS, 37, FAIL, BROKER_ERROR)                              \
    X(INVALID_REPLICATION_FACTOR, 38, FAIL, BROKER_ERROR)                      \
    X(INVALID_REPLICA_ASSIGNMENT, 39, FAIL, BROKER_ERROR)                      \
    X(INVALID_CONFIG, 40, FAIL, BROKER_ERROR)                                  \
    X(NOT_CONTROLLER, 41, FAIL, BROKER_ERROR)                                  \
    X(INVALID_REQUEST, 42, FAIL, BROKER_ERROR)                                 \
    X(UNSUPPORTED_FOR_MESSAGE_FORMAT, 43, FAIL, UNSUPPORTED_VERSION)           \
    X(POLICY_VIOLATION, 44, FAIL, BROKER_ERROR)                                \
    X(OUT_OF_ORDER_SEQUENCE_NUMBER, 45, RETRY_NEW_PID, BROKER_ERROR)           \
    X(DUPLICATE_SEQUENCE_NUMBER, 46, DELIVERED, NONE)                          \
    X(INVALID_PRODUCER_EPOCH, 47, RETRY_NEW_PID, BROKER_ERROR)                 \
    X(INVALID_TXN_STATE, 48, FAIL, BROKER_ERROR)                               \
    X(INVALID_PRODUCER_ID_MAPPING, 49, FAIL, BROKER_ERROR)                     \
    X(INVALID_TRANSACTION_TIMEOUT, 50, FAIL, BROKER_ERROR)                     \
    X(CONCURRENT_TRANSACTIONS, 51, FAIL, BROKER_ERROR)                         \
    X(TRANSACTION_COORDINATOR_FENCED, 52, FAIL, BROKER_ERROR)                  \
    X(TRANSACTIONAL_ID_AUTHORIZATION_FAILED, 53, FAIL, AUTHORIZATION)          \
    X(SECURITY_DISABLED, 54, FAIL, AUTHENTICATION)                             \
    X(OPERATION_NOT_ATTEMPTED, 55, FAIL, BROKER_ERROR)                         \
    X(KAFKA_STORAGE_ERROR, 56, RETRY_REFRESH, BROKER_ERROR)                    \
    X(LOG_DIR_NOT_FOUND, 57, FAIL, BROKER_ERROR)                               \
    X(SASL_AUTHENTICATION_FAILED, 58, FAIL, AUTHENTICATION)                    \
    X(UNKNOWN_PRODUCER_ID, 59, RETRY_NEW_PID, BROKER_ERROR)                    \
    X(REASSIGNMENT_IN_PROGRESS, 60, FAIL, BROKER_ERROR)                        \
    X(LISTENER_NOT_FOUND, 72, FAIL, BROKER_ERROR)                              \
    X(FENCED_LEADER_EPOCH, 74, FAIL, BROKER_ERROR)                             \
    X(UNKNOWN_LEADER_EPOCH, 75, FAIL, BROKER_ERROR)                            \
    X(UNSUPPORTED_COMPRESSION_TYPE, 76, FAIL, UNSUPPORTED_VERSION)             \
    X(STALE_BROKER_EPOCH, 77, FAIL, BROKER_ERROR)                              \
    X(OFFSET_NOT_AVAILABLE, 78, FAIL, BROKER_ERROR)                            \
    X(PREFERRED_LEADER_NOT_AVAILABLE, 80, FAIL, BROKER_ERROR)                  \
    X(INVALID_RECORD, 87, ISOLATE, INVALID_RECORD)                                \
    X(UNSTABLE_OFFSET_COMMIT, 88, FAIL, BROKER_ERROR)                          \
    X(THROTTLING_QUOTA_EXCEEDED, 89, RETRY, BROKER_ERROR)                      \
    X(PRODUCER_FENCED, 90, FAIL, BROKER_ERROR)                                 \
    X(RESOURCE_NOT_FOUND, 91, FAIL, BROKER_ERROR)                              \
    X(DUPLICATE_RESOURCE, 92, FAIL, BROKER_ERROR)                              \
    X(UNKNOWN_TOPIC_ID, 100, FAIL, UNKNOWN_TOPIC)                              \
    X(INCONSISTENT_TOPIC_ID, 103, FAIL, BROKER_ERROR)                          \
    X(INCONSISTENT_CLUSTER_ID, 104, FAIL, BROKER_ERROR)                        \
    X(TRANSACTIONAL_ID_NOT_FOUND, 105, FAIL, BROKER_ERROR)

enum kp_kerr {
#define KP_KERR_ENUM(e, code, act, reason) KP_KERR_##e = (code),
    KP_KERR_LIST(KP_KERR_ENUM)
#undef KP_KERR_ENUM
};

/* "NOT_LEADER_OR_FOLLOWER"; "UNKNOWN" for a code not in the list. The
 * string is static. */
const char *kp_kerr_name(int16_t code);
/* What a producer does about code (FAIL for a code not in the list). A
 * MESSAGE_TOO_LARGE batch of one message cannot be split: the caller
 * fails it. */
enum kp_kerr_action kp_kerr_action(int16_t code);
/* The fate reason of a message that fails with code. */
enum kp_reason kp_kerr_reason(int16_t code);

#endif
