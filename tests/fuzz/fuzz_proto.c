/*
 * fuzz_proto.c - libFuzzer target for kp_proto's response decoders and the
 * response-header parser.
 *
 * Input: one selector byte, then the response body. The selector's low two
 * bits pick the decoder (0 ApiVersions, 1 Metadata, 2 InitProducerId,
 * 3 Produce); the high six bits, modulo the number of versions kproxyd
 * implements for that API, pick the version from its lowest. What a
 * decoder returns is freed, so leaks show up under LeakSanitizer.
 *
 * The same bytes then go through the SaslHandshake and SaslAuthenticate
 * decoders, at the version the high six bits pick among theirs (added
 * after the others, so the selector keeps its meaning for the corpus).
 */
#include "kp_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_sasl_decoders(unsigned sel, const uint8_t *p, size_t len)
{
    struct kp_sasl_handshake_resp hs;
    if (kp_proto_dec_sasl_handshake(p, len, (int16_t)(sel % 2), &hs) == KP_OK) {
        for (int32_t i = 0; i < hs.mechanism_cnt; i++) {
            kp_assert(hs.mechanisms[i] != NULL);
        }
    } else {
        kp_assert(hs.mechanisms == NULL);
    }
    kp_proto_sasl_handshake_resp_free(&hs);

    int16_t av = (int16_t)(sel % 3);
    int hl = kp_proto_resp_header_len(KP_API_SASL_AUTHENTICATE, av, p, len);
    kp_assert(hl == -1 || (hl >= 4 && (size_t)hl <= len));
    struct kp_sasl_authenticate_resp au;
    if (kp_proto_dec_sasl_authenticate(p, len, av, &au) == KP_OK) {
        kp_assert(au.auth_len >= 0 && au.auth_bytes >= p &&
                  au.auth_bytes + au.auth_len <= p + len);
    } else {
        kp_assert(au.error_message == NULL);
    }
    kp_proto_sasl_authenticate_resp_free(&au);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int16_t apis[4] = {KP_API_APIVERSIONS, KP_API_METADATA,
                                    KP_API_INITPID, KP_API_PRODUCE};
    if (size < 1) {
        return 0;
    }
    int16_t api = apis[data[0] & 3];
    const struct kp_api_support *s = kp_proto_support(api);
    int16_t version =
        (int16_t)(s->min + (data[0] >> 2) % (s->max - s->min + 1));
    const uint8_t *p = data + 1;
    size_t len = size - 1;

    /* The same bytes as a response header, for the header parser. */
    int hl = kp_proto_resp_header_len(api, version, p, len);
    kp_assert(hl == -1 || (hl >= 4 && (size_t)hl <= len));

    switch (api) {
    case KP_API_APIVERSIONS: {
        struct kp_apiversions_resp r;
        kp_proto_dec_apiversions(p, len, version, &r);
        break;
    }
    case KP_API_METADATA: {
        struct kp_metadata_resp m;
        if (kp_proto_dec_metadata(p, len, version, &m) == KP_OK) {
            for (int32_t i = 0; i < m.topic_cnt; i++) {
                kp_assert(m.topics[i].name != NULL);
                kp_assert(m.topics[i].partition_cnt >= 0);
            }
            for (int32_t i = 0; i < m.broker_cnt; i++) {
                kp_assert(m.brokers[i].host != NULL);
            }
        } else {
            kp_assert(m.brokers == NULL && m.topics == NULL);
        }
        kp_proto_metadata_resp_free(&m);
        break;
    }
    case KP_API_INITPID: {
        struct kp_initpid_resp r;
        kp_proto_dec_initpid(p, len, version, &r);
        break;
    }
    default: {
        struct kp_produce_resp r;
        if (kp_proto_dec_produce(p, len, version, &r) == KP_OK) {
            for (int32_t i = 0; i < r.topic_cnt; i++) {
                kp_assert(r.topics[i].name != NULL);
            }
        } else {
            kp_assert(r.topics == NULL);
        }
        kp_proto_produce_resp_free(&r);
        break;
    }
    }
    fuzz_sasl_decoders(data[0] >> 2, p, len);
    return 0;
}
