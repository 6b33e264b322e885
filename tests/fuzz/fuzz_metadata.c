/*
 * fuzz_metadata.c - libFuzzer target for what kproxyd does with a Metadata
 * answer before believing it: the broker count read without decoding
 * (kp_metadata_peek_brokers), the decoder (kp_proto_dec_metadata) for
 * answers under the broker cap, and for every decoded entry the broker
 * check (kp_metadata_broker_ok) and the partition list check
 * (kp_metadata_leaders). Huge counts must cost nothing: the cap is read
 * first, and no allocation follows what a count claims.
 *
 * Input: one selector byte (the version, modulo the Metadata versions
 * kproxyd implements, from the lowest), then the response body.
 */
#include <stdlib.h>

#include "kp_metadata.h"
#include "kp_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_topic(const struct kp_md_topic *mt)
{
    int32_t cnt = -1;
    const char *why = NULL;
    int32_t *leaders = kp_metadata_leaders(mt, &cnt, &why);

    if (leaders) {
        kp_assert(cnt == mt->partition_cnt && cnt > 0 &&
                  cnt <= KP_MD_MAX_PARTITIONS);
        for (int32_t i = 0; i < cnt; i++) {
            kp_assert(leaders[i] >= -1);
        }
        free(leaders);
    } else {
        kp_assert(cnt == 0 && why != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    const struct kp_api_support *s = kp_proto_support(KP_API_METADATA);
    int16_t version = (int16_t)(s->min + data[0] % (s->max - s->min + 1));
    const uint8_t *p = data + 1;
    size_t len = size - 1;

    int32_t claimed = kp_metadata_peek_brokers(p, len, version);
    if (claimed > KP_MD_MAX_BROKERS) {
        return 0; /* refused before decoding, as kp_metadata does */
    }
    struct kp_metadata_resp m;
    if (kp_proto_dec_metadata(p, len, version, &m) == KP_OK) {
        kp_assert(m.broker_cnt == claimed);
        for (int32_t i = 0; i < m.broker_cnt; i++) {
            (void)kp_metadata_broker_ok(m.brokers[i].node_id, m.brokers[i].host,
                                        m.brokers[i].port);
        }
        for (int32_t i = 0; i < m.topic_cnt; i++) {
            fuzz_topic(&m.topics[i]);
        }
    }
    kp_proto_metadata_resp_free(&m);
    return 0;
}
