/*
 * check_kerr.c - the Kafka error table: names as in Errors.java, and what
 * a producer does about each code (as librdkafka and the Java client do).
 */
#include <check.h>

#include "kp_kerr.h"

START_TEST(test_err_name)
{
    static const struct {
        int16_t code;
        const char *name;
    } tab[] = {
        {0, "NONE"},
        {1, "OFFSET_OUT_OF_RANGE"},
        {2, "CORRUPT_MESSAGE"},
        {3, "UNKNOWN_TOPIC_OR_PARTITION"},
        {4, "INVALID_FETCH_SIZE"},
        {5, "LEADER_NOT_AVAILABLE"},
        {6, "NOT_LEADER_OR_FOLLOWER"},
        {7, "REQUEST_TIMED_OUT"},
        {8, "BROKER_NOT_AVAILABLE"},
        {9, "REPLICA_NOT_AVAILABLE"},
        {10, "MESSAGE_TOO_LARGE"},
        {13, "NETWORK_EXCEPTION"},
        {15, "COORDINATOR_NOT_AVAILABLE"},
        {16, "NOT_COORDINATOR"},
        {17, "INVALID_TOPIC_EXCEPTION"},
        {18, "RECORD_LIST_TOO_LARGE"},
        {19, "NOT_ENOUGH_REPLICAS"},
        {20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND"},
        {21, "INVALID_REQUIRED_ACKS"},
        {29, "TOPIC_AUTHORIZATION_FAILED"},
        {31, "CLUSTER_AUTHORIZATION_FAILED"},
        {35, "UNSUPPORTED_VERSION"},
        {42, "INVALID_REQUEST"},
        {43, "UNSUPPORTED_FOR_MESSAGE_FORMAT"},
        {44, "POLICY_VIOLATION"},
        {45, "OUT_OF_ORDER_SEQUENCE_NUMBER"},
        {46, "DUPLICATE_SEQUENCE_NUMBER"},
        {47, "INVALID_PRODUCER_EPOCH"},
        {53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"},
        {56, "KAFKA_STORAGE_ERROR"},
        {59, "UNKNOWN_PRODUCER_ID"},
        {76, "UNSUPPORTED_COMPRESSION_TYPE"},
        {87, "INVALID_RECORD"},
        {89, "THROTTLING_QUOTA_EXCEEDED"},
        {90, "PRODUCER_FENCED"},
        {-1, "UNKNOWN_SERVER_ERROR"},
        {23, "UNKNOWN"},
        {-2, "PARTITION_MISSING"},
        {1000, "UNKNOWN"},
        {INT16_MAX, "UNKNOWN"},
        {INT16_MIN, "UNKNOWN"},
    };
    for (size_t i = 0; i < KP_ARRAY_LEN(tab); i++) {
        ck_assert_str_eq(kp_kerr_name(tab[i].code), tab[i].name);
    }
}
END_TEST

START_TEST(test_actions)
{
    static const struct {
        int16_t code;
        enum kp_kerr_action act;
    } tab[] = {
        {KP_KERR_NONE, KP_ACT_DELIVERED},
        {KP_KERR_DUPLICATE_SEQUENCE_NUMBER, KP_ACT_DELIVERED},
        {KP_KERR_UNKNOWN_TOPIC_OR_PARTITION, KP_ACT_RETRY_REFRESH},
        {KP_KERR_LEADER_NOT_AVAILABLE, KP_ACT_RETRY_REFRESH},
        {KP_KERR_NOT_LEADER_OR_FOLLOWER, KP_ACT_RETRY_REFRESH},
        {KP_KERR_BROKER_NOT_AVAILABLE, KP_ACT_RETRY_REFRESH},
        {KP_KERR_KAFKA_STORAGE_ERROR, KP_ACT_RETRY_REFRESH},
        {KP_KERR_PARTITION_MISSING, KP_ACT_RETRY_REFRESH},
        {KP_KERR_REQUEST_TIMED_OUT, KP_ACT_RETRY},
        {KP_KERR_NETWORK_EXCEPTION, KP_ACT_RETRY},
        {KP_KERR_NOT_ENOUGH_REPLICAS, KP_ACT_RETRY},
        {KP_KERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND, KP_ACT_RETRY},
        {KP_KERR_THROTTLING_QUOTA_EXCEEDED, KP_ACT_RETRY},
        {KP_KERR_OUT_OF_ORDER_SEQUENCE_NUMBER, KP_ACT_RETRY_NEW_PID},
        {KP_KERR_INVALID_PRODUCER_EPOCH, KP_ACT_RETRY_NEW_PID},
        {KP_KERR_UNKNOWN_PRODUCER_ID, KP_ACT_RETRY_NEW_PID},
        {KP_KERR_MESSAGE_TOO_LARGE, KP_ACT_SPLIT},
        {KP_KERR_INVALID_RECORD, KP_ACT_ISOLATE},
        {KP_KERR_INVALID_TIMESTAMP, KP_ACT_ISOLATE},
        {KP_KERR_RECORD_LIST_TOO_LARGE, KP_ACT_FAIL},
        {KP_KERR_TOPIC_AUTHORIZATION_FAILED, KP_ACT_FAIL},
        {KP_KERR_UNKNOWN_SERVER_ERROR, KP_ACT_FAIL},
        {1000, KP_ACT_FAIL},
    };
    for (size_t i = 0; i < KP_ARRAY_LEN(tab); i++) {
        ck_assert_int_eq(kp_kerr_action(tab[i].code), tab[i].act);
    }
}
END_TEST

START_TEST(test_reasons)
{
    ck_assert_int_eq(kp_kerr_reason(KP_KERR_MESSAGE_TOO_LARGE),
                     KP_REASON_MESSAGE_TOO_LARGE);
    ck_assert_int_eq(kp_kerr_reason(KP_KERR_INVALID_RECORD),
                     KP_REASON_INVALID_RECORD);
    ck_assert_int_eq(kp_kerr_reason(KP_KERR_TOPIC_AUTHORIZATION_FAILED),
                     KP_REASON_AUTHORIZATION);
    ck_assert_int_eq(kp_kerr_reason(KP_KERR_SASL_AUTHENTICATION_FAILED),
                     KP_REASON_AUTHENTICATION);
    ck_assert_int_eq(kp_kerr_reason(KP_KERR_UNSUPPORTED_COMPRESSION_TYPE),
                     KP_REASON_UNSUPPORTED_VERSION);
    ck_assert_int_eq(kp_kerr_reason(KP_KERR_INVALID_TIMESTAMP),
                     KP_REASON_BAD_TIMESTAMP);
    ck_assert_int_eq(kp_kerr_reason(1000), KP_REASON_BROKER_ERROR);
    /* every reason has its documented snake_case name */
    ck_assert_str_eq(kp_reason_names[KP_REASON_SHUTDOWN_UNCONFIRMED],
                     "shutdown_unconfirmed");
    ck_assert(kp_reason_is_reject(KP_REASON_BAD_TOPIC));
    ck_assert(!kp_reason_is_reject(KP_REASON_DELIVERY_TIMEOUT));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kerr");
    TCase *tc = tcase_create("table");
    tcase_add_test(tc, test_err_name);
    tcase_add_test(tc, test_actions);
    tcase_add_test(tc, test_reasons);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
