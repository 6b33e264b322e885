/*
 * kp_proto.h - Kafka request encoders and response decoders, written
 * against apache/kafka's clients/src/main/resources/common/message/{Name}.json.
 *
 * Framing: every request is `int32 size` + request header + body; every
 * response is `int32 size` + response header + body. Request header v1 for
 * non-flexible versions, v2 (adds tagged fields) for flexible ones;
 * response header v0 / v1 likewise, except that ApiVersions responses always
 * use header v0.
 *
 * Decoders take the response body *after* the response header (the broker
 * connection reads the size and correlation id, and skips the header tags
 * for flexible versions via kp_proto_resp_header_len). They never read out
 * of bounds and never allocate more than the bytes present can justify.
 * Each has a (const uint8_t *, size_t) entry point for fuzzing.
 */
#ifndef KP_PROTO_H
#define KP_PROTO_H

#include "kp_buf.h"

#include <sys/uio.h>

enum kp_api_key {
    KP_API_PRODUCE = 0,
    KP_API_METADATA = 3,
    KP_API_SASL_HANDSHAKE = 17,
    KP_API_APIVERSIONS = 18,
    KP_API_INITPID = 22,
    KP_API_SASL_AUTHENTICATE = 36,
};
#define KP_API_KEY_MAX 100 /* ApiVersions ranges are kept for keys below */

/* The versions kproxyd implements, per API (table-driven negotiation). */
struct kp_api_support {
    int16_t api_key;
    int16_t min;           /* lowest kproxyd will send */
    int16_t max;           /* highest kproxyd implements */
    int16_t flexible_from; /* first flexible version (INT16_MAX: none) */
};
const struct kp_api_support *kp_proto_support(int16_t api_key);
bool kp_proto_flexible(int16_t api_key, int16_t version);

/*
 * Highest version both sides know: min(kproxyd max, broker max), or -1 when
 * the ranges do not overlap (or the broker does not list the API).
 */
int16_t kp_proto_pick_version(int16_t api_key, int16_t broker_min,
                              int16_t broker_max);

/* ---- request building ---- */

/*
 * A request under construction: framing bytes in `bytes`, with external
 * buffers (sealed RecordBatches) spliced in between so that the broker can
 * writev() them without copying. Finish with kp_req_finish(), then
 * kp_req_iov() gives the iovecs in order.
 */
struct kp_req_seg {
    const uint8_t *ext; /* borrowed; NULL = bytes[off, off+len) */
    size_t off;
    size_t len;
};
struct kp_req {
    struct kp_buf bytes;   /* owned */
    struct kp_req_seg *segs; /* owned */
    size_t seg_cnt, seg_cap;
    size_t mark;  /* start of the bytes not yet in a segment */
    size_t total; /* whole request incl. the size field, when finished */
};
void kp_req_init(struct kp_req *q);
void kp_req_deinit(struct kp_req *q);
void kp_req_reset(struct kp_req *q);
/* Splices an external buffer (borrowed until the request is written). */
void kp_req_splice(struct kp_req *q, const uint8_t *p, size_t len);
/* Closes the last segment and patches the size field. */
void kp_req_finish(struct kp_req *q);
/* Fills up to max iovecs starting `skip` bytes into the request; returns
 * how many were filled. */
size_t kp_req_iov(const struct kp_req *q, size_t skip, struct iovec *iov,
                  size_t max);

/* Starts a request: size placeholder + request header v1 or v2. */
void kp_proto_req_begin(struct kp_req *q, int16_t api_key, int16_t version,
                        int32_t corr_id, const char *client_id);

/* Bytes of response header after the size field: 4 (correlation id), plus
 * the header's tagged fields for flexible versions (except ApiVersions).
 * Returns the header length or -1 if malformed. */
int kp_proto_resp_header_len(int16_t api_key, int16_t version,
                             const uint8_t *p, size_t len);

/* ---- ApiVersions (key 18), v0..v3 ---- */

void kp_proto_enc_apiversions(struct kp_req *q, int16_t version,
                              int32_t corr_id, const char *client_id,
                              const char *sw_name, const char *sw_version);

struct kp_apiversions_resp {
    int16_t error;
    int16_t min[KP_API_KEY_MAX]; /* -1 = not listed */
    int16_t max[KP_API_KEY_MAX];
    int32_t throttle_ms;
};
int kp_proto_dec_apiversions(const uint8_t *p, size_t len, int16_t version,
                             struct kp_apiversions_resp *out);

/* ---- Metadata (key 3), v1..v12 ---- */

/* topics NULL with cnt 0 asks for no topics (brokers only); v1+ never sends
 * the "all topics" null array. */
void kp_proto_enc_metadata(struct kp_req *q, int16_t version, int32_t corr_id,
                           const char *client_id, const char *const *topics,
                           size_t topic_cnt, bool allow_auto_create);

struct kp_md_broker {
    int32_t node_id;
    char *host; /* owned */
    int32_t port;
};
struct kp_md_partition {
    int16_t error;
    int32_t partition;
    int32_t leader;       /* -1 = none */
    int32_t leader_epoch; /* -1 before v7 */
};
struct kp_md_topic {
    int16_t error;
    char *name; /* owned */
    struct kp_md_partition *partitions; /* owned */
    int32_t partition_cnt;
};
struct kp_metadata_resp {
    int32_t throttle_ms;
    struct kp_md_broker *brokers; /* owned */
    int32_t broker_cnt;
    int32_t controller_id;
    struct kp_md_topic *topics; /* owned */
    int32_t topic_cnt;
};
int kp_proto_dec_metadata(const uint8_t *p, size_t len, int16_t version,
                          struct kp_metadata_resp *out);
void kp_proto_metadata_resp_free(struct kp_metadata_resp *m);

/* ---- InitProducerId (key 22), v0..v4 ---- */

/* Non-transactional: transactional_id null; v3+ sends the current
 * producer id/epoch (-1/-1 for a new one) so the broker can bump it. */
void kp_proto_enc_initpid(struct kp_req *q, int16_t version, int32_t corr_id,
                          const char *client_id, int64_t producer_id,
                          int16_t producer_epoch);

struct kp_initpid_resp {
    int32_t throttle_ms;
    int16_t error;
    int64_t producer_id;
    int16_t producer_epoch;
};
int kp_proto_dec_initpid(const uint8_t *p, size_t len, int16_t version,
                         struct kp_initpid_resp *out);

/* ---- Produce (key 0), v3..v9 ---- */

/*
 * Produce request, built incrementally so the sender can add the sealed
 * batches of each partition as it picks them:
 *   kp_proto_produce_begin()  header + transactional_id, acks, timeout
 *   kp_proto_produce_topic()  once per topic, with its partition count
 *   kp_proto_produce_part()   once per partition: index + spliced batch
 *   kp_proto_produce_end()    closes tags and finishes the request
 */
void kp_proto_produce_begin(struct kp_req *q, int16_t version, int32_t corr_id,
                            const char *client_id, int16_t acks,
                            int32_t timeout_ms, int32_t topic_cnt);
void kp_proto_produce_topic(struct kp_req *q, int16_t version,
                            const char *topic, size_t topic_len,
                            int32_t partition_cnt);
void kp_proto_produce_part(struct kp_req *q, int16_t version,
                           int32_t partition, const uint8_t *batch,
                           size_t batch_len);
/* Called after the last partition of a topic (tags in flexible versions). */
void kp_proto_produce_topic_end(struct kp_req *q, int16_t version);
void kp_proto_produce_end(struct kp_req *q, int16_t version);

struct kp_produce_presp {
    int32_t partition;
    int16_t error;
    int64_t base_offset;
    int64_t log_start_offset; /* -1 before v5 */
    char *error_message;      /* owned; v8+ ErrorMessage, or NULL */
    int32_t record_error_index; /* v8+: first RecordErrors entry */
    char *record_error;       /* owned; its message, or NULL */
    int32_t *record_errors;   /* owned: every RecordErrors BatchIndex */
    int32_t record_error_cnt;
};
struct kp_produce_tresp {
    char *name; /* owned */
    struct kp_produce_presp *parts; /* owned */
    int32_t part_cnt;
};
struct kp_produce_resp {
    struct kp_produce_tresp *topics; /* owned */
    int32_t topic_cnt;
    int32_t throttle_ms;
};
int kp_proto_dec_produce(const uint8_t *p, size_t len, int16_t version,
                         struct kp_produce_resp *out);
void kp_proto_produce_resp_free(struct kp_produce_resp *r);

/* ---- SaslHandshake (key 17), v0..v1 ---- */

void kp_proto_enc_sasl_handshake(struct kp_req *q, int16_t version,
                                 int32_t corr_id, const char *client_id,
                                 const char *mechanism);

struct kp_sasl_handshake_resp {
    int16_t error;
    char **mechanisms; /* owned, each owned */
    int32_t mechanism_cnt;
};
int kp_proto_dec_sasl_handshake(const uint8_t *p, size_t len, int16_t version,
                                struct kp_sasl_handshake_resp *out);
void kp_proto_sasl_handshake_resp_free(struct kp_sasl_handshake_resp *r);

/* ---- SaslAuthenticate (key 36), v0..v2 ---- */

void kp_proto_enc_sasl_authenticate(struct kp_req *q, int16_t version,
                                    int32_t corr_id, const char *client_id,
                                    const uint8_t *auth, size_t auth_len);

struct kp_sasl_authenticate_resp {
    int16_t error;
    char *error_message;       /* owned; NULL when null */
    const uint8_t *auth_bytes; /* borrowed: points into the decoded body */
    int32_t auth_len;
    int64_t session_lifetime_ms; /* v1+; 0 = no re-authentication */
};
int kp_proto_dec_sasl_authenticate(const uint8_t *p, size_t len,
                                   int16_t version,
                                   struct kp_sasl_authenticate_resp *out);
void kp_proto_sasl_authenticate_resp_free(struct kp_sasl_authenticate_resp *r);

/* ---- raw SASL frames (after SaslHandshake v0) ---- */

void kp_proto_enc_sasl_raw(struct kp_req *q, const uint8_t *auth,
                           size_t auth_len);

#endif
