/*
 * kp_proto.c - Kafka request encoders and response decoders: the version
 * support table, request framing with spliced record batches (for writev),
 * and the ApiVersions, Metadata, InitProducerId and Produce messages, and
 * SaslHandshake / SaslAuthenticate (with the raw frames of SASL v0).
 *
 * Written field by field against apache/kafka's
 * clients/src/main/resources/common/message/{RequestHeader,ResponseHeader,
 * ApiVersions*,Metadata*,InitProducerId*,Produce*,SaslHandshake*,
 * SaslAuthenticate*}.json; the comment beside
 * each encode/decode line is the field's name there.
 *
 * Request layout (kp_req):
 *
 *   bytes:  [size][header][fields ... Records len]      [ ... next fields]
 *   segs:   seg0 = bytes[0, a) ---+  seg1 = ext batch  seg2 = bytes[a, b)
 *                                 |  (borrowed)
 *   iovecs: seg0, seg1, seg2, ... in order; size = total - 4.
 *
 * Own segments are kept as offsets, not pointers, so `bytes` may grow (and
 * move) while the request is built; kp_req_iov() turns them into pointers
 * once the request is finished.
 */
#include "kp_proto.h"

#include "kp_kerr.h"

/* ---- version support ---- */

static const struct kp_api_support kp_proto_support_tab[] = {
    {KP_API_PRODUCE, 3, 9, 9}, /* never below v3: RecordBatch v2 only */
    {KP_API_METADATA, 1, 12, 9},
    {KP_API_APIVERSIONS, 0, 3, 3},
    {KP_API_INITPID, 0, 4, 2},
    {KP_API_SASL_HANDSHAKE, 0, 1, INT16_MAX}, /* never flexible */
    {KP_API_SASL_AUTHENTICATE, 0, 2, 2},
};

/* Returns the versions kproxyd implements for api_key, or NULL. */
const struct kp_api_support *kp_proto_support(int16_t api_key)
{
    for (size_t i = 0; i < KP_ARRAY_LEN(kp_proto_support_tab); i++) {
        if (kp_proto_support_tab[i].api_key == api_key) {
            return &kp_proto_support_tab[i];
        }
    }
    return NULL;
}

/* Whether api_key at version uses the flexible (compact, tagged) encoding;
 * false for APIs kproxyd does not implement. */
bool kp_proto_flexible(int16_t api_key, int16_t version)
{
    const struct kp_api_support *s = kp_proto_support(api_key);
    return s && version >= s->flexible_from;
}

/*
 * Picks the version to speak with a broker that lists [broker_min,
 * broker_max] for api_key: the highest both know, or -1 when the ranges do
 * not overlap or kproxyd does not implement the API.
 */
int16_t kp_proto_pick_version(int16_t api_key, int16_t broker_min,
                              int16_t broker_max)
{
    const struct kp_api_support *s = kp_proto_support(api_key);
    if (!s || broker_min < 0 || broker_max < 0) {
        return -1;
    }
    int16_t hi = KP_MIN(s->max, broker_max);
    int16_t lo = KP_MAX(s->min, broker_min);
    return hi >= lo ? hi : -1;
}

static bool kp_proto_version_ok(int16_t api_key, int16_t version)
{
    const struct kp_api_support *s = kp_proto_support(api_key);
    return s && version >= s->min && version <= s->max;
}

/* ---- request building ---- */

/* Prepares an empty request; kp_req_deinit() frees it. */
void kp_req_init(struct kp_req *q)
{
    kp_buf_init(&q->bytes, 256);
    q->segs = NULL;
    q->seg_cnt = q->seg_cap = 0;
    q->mark = 0;
    q->total = 0;
}

/* Frees the request's own memory; spliced buffers stay the caller's. */
void kp_req_deinit(struct kp_req *q)
{
    kp_buf_deinit(&q->bytes);
    free(q->segs);
    q->segs = NULL;
    q->seg_cnt = q->seg_cap = 0;
    q->mark = 0;
    q->total = 0;
}

/* Empties the request for reuse, keeping its allocations. */
void kp_req_reset(struct kp_req *q)
{
    kp_buf_reset(&q->bytes);
    q->seg_cnt = 0;
    q->mark = 0;
    q->total = 0;
}

static void kp_req_push_seg(struct kp_req *q, const uint8_t *ext, size_t off,
                            size_t len)
{
    if (q->seg_cnt == q->seg_cap) {
        q->seg_cap = q->seg_cap ? q->seg_cap * 2 : 8;
        q->segs = kp_realloc(q->segs, q->seg_cap * sizeof(*q->segs));
    }
    q->segs[q->seg_cnt++] = (struct kp_req_seg){ext, off, len};
}

/* Closes the own bytes written since the last segment into one. */
static void kp_req_close_own(struct kp_req *q)
{
    if (q->bytes.len > q->mark) {
        kp_req_push_seg(q, NULL, q->mark, q->bytes.len - q->mark);
        q->mark = q->bytes.len;
    }
}

/*
 * Splices len bytes at p into the request after what is written so far,
 * without copying them. p is borrowed: it must stay valid and unchanged
 * until the request has been written (or reset).
 */
void kp_req_splice(struct kp_req *q, const uint8_t *p, size_t len)
{
    kp_req_close_own(q);
    if (len) {
        kp_req_push_seg(q, p, 0, len);
    }
}

/*
 * Closes the last segment and patches the leading int32 size (the bytes
 * after it). After this the request must not grow; q->total is its length.
 */
void kp_req_finish(struct kp_req *q)
{
    kp_assert(q->bytes.len >= 4);
    kp_req_close_own(q);
    size_t total = 0;
    for (size_t i = 0; i < q->seg_cnt; i++) {
        total += q->segs[i].len;
    }
    kp_assert(total - 4 <= INT32_MAX);
    q->total = total;
    kp_buf_patch_i32(&q->bytes, 0, (int32_t)(total - 4));
}

/*
 * Fills up to max iovecs with the finished request from `skip` bytes in
 * (so a short writev resumes where it stopped). The iovecs point into the
 * request's own buffer and into the spliced buffers: valid until the
 * request is reset or freed. Returns how many were filled; 0 when skip
 * reaches the end.
 */
size_t kp_req_iov(const struct kp_req *q, size_t skip, struct iovec *iov,
                  size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < q->seg_cnt && n < max; i++) {
        const struct kp_req_seg *s = &q->segs[i];
        if (skip >= s->len) {
            skip -= s->len;
            continue;
        }
        const uint8_t *base = s->ext ? s->ext : q->bytes.data + s->off;
        iov[n].iov_base = (void *)(uintptr_t)(base + skip);
        iov[n].iov_len = s->len - skip;
        skip = 0;
        n++;
    }
    return n;
}

/* ---- encoding helpers: classic or compact by version ---- */

static void kp_put_str(struct kp_buf *b, bool flex, const char *s)
{
    if (flex) {
        kp_buf_put_compact_str(b, s);
    } else {
        kp_buf_put_str(b, s);
    }
}

static void kp_put_strn(struct kp_buf *b, bool flex, const char *s, size_t n)
{
    if (flex) {
        kp_buf_put_compact_strn(b, s, n);
    } else {
        kp_buf_put_strn(b, s, n);
    }
}

static void kp_put_array_len(struct kp_buf *b, bool flex, size_t n)
{
    kp_assert(n <= INT32_MAX);
    if (flex) {
        kp_buf_put_uvarint(b, (uint64_t)n + 1);
    } else {
        kp_buf_put_i32(b, (int32_t)n);
    }
}

static void kp_put_tags(struct kp_buf *b, bool flex)
{
    if (flex) {
        kp_buf_put_tags(b);
    }
}

/*
 * Starts a request in q (which is reset first): the int32 size placeholder
 * patched by kp_req_finish(), then request header v1, or v2 for flexible
 * versions. ClientId stays an int16-length NULLABLE_STRING in v2 too (the
 * header's ClientId is not flexible); client_id NULL sends null.
 */
void kp_proto_req_begin(struct kp_req *q, int16_t api_key, int16_t version,
                        int32_t corr_id, const char *client_id)
{
    kp_assert(kp_proto_version_ok(api_key, version));
    kp_req_reset(q);
    struct kp_buf *b = &q->bytes;
    bool flex = kp_proto_flexible(api_key, version);
    kp_buf_put_i32(b, 0);         /* Size (patched by kp_req_finish) */
    kp_buf_put_i16(b, api_key);   /* RequestApiKey */
    kp_buf_put_i16(b, version);   /* RequestApiVersion */
    kp_buf_put_i32(b, corr_id);   /* CorrelationId */
    kp_buf_put_str(b, client_id); /* ClientId */
    kp_put_tags(b, flex);         /* TaggedFields (header v2) */
}

/*
 * Length of the response header in p (the bytes after the size field):
 * CorrelationId, plus the header's tagged fields when the response is
 * flexible. ApiVersions responses always use header v0, whatever the
 * version, so brokers that do not know the version can still answer.
 * Returns -1 when p is too short or the tags are malformed.
 */
int kp_proto_resp_header_len(int16_t api_key, int16_t version, const uint8_t *p,
                             size_t len)
{
    struct kp_rd r;
    kp_rd_init(&r, p, len);
    kp_rd_i32(&r); /* CorrelationId */
    if (api_key != KP_API_APIVERSIONS && kp_proto_flexible(api_key, version)) {
        kp_rd_skip_tags(&r); /* TaggedFields */
    }
    if (r.err) {
        return -1;
    }
    return (int)(r.p - p);
}

/* ---- decoding helpers ---- */

/*
 * Fails r when the next uvarint (a compact length or count) exceeds
 * INT32_MAX: kp_rd_compact_str/array compute (int64_t)n - 1 before their
 * range check, which overflows for n >= 2^63.
 */
static void kp_check_compact_len(struct kp_rd *r)
{
    struct kp_rd peek = *r;
    if (kp_rd_uvarint(&peek) > INT32_MAX) {
        kp_rd_fail(r);
    }
}

static int32_t kp_get_array(struct kp_rd *r, bool flex, size_t min_elem)
{
    if (flex) {
        kp_check_compact_len(r);
    }
    int32_t n =
        flex ? kp_rd_compact_array(r, min_elem) : kp_rd_array(r, min_elem);
    if (n < 0) {
        /* No array kproxyd reads is nullable: null is malformed. */
        kp_rd_fail(r);
        return 0;
    }
    return n;
}

static int32_t kp_get_str(struct kp_rd *r, bool flex, const uint8_t **s)
{
    if (flex) {
        kp_check_compact_len(r);
    }
    return flex ? kp_rd_compact_str(r, s) : kp_rd_str(r, s);
}

/* A string as an owned C string; NULL after an error. A null string is
 * malformed unless nullable, and then becomes "" (no topic or host is
 * named "", so it never matches one). */
static char *kp_get_strdup(struct kp_rd *r, bool flex, bool nullable)
{
    const uint8_t *s;
    int32_t n = kp_get_str(r, flex, &s);
    if (r->err) {
        return NULL;
    }
    if (n < 0) {
        if (!nullable) {
            kp_rd_fail(r);
            return NULL;
        }
        return kp_strdup("");
    }
    return kp_strndup((const char *)s, (size_t)n);
}

static void kp_skip_str(struct kp_rd *r, bool flex)
{
    const uint8_t *s;
    kp_get_str(r, flex, &s);
}

static void kp_skip_int32_array(struct kp_rd *r, bool flex)
{
    int32_t n = kp_get_array(r, flex, 4);
    kp_rd_skip(r, (size_t)n * 4);
}

static void kp_skip_tags(struct kp_rd *r, bool flex)
{
    if (flex) {
        kp_rd_skip_tags(r);
    }
}

/* ---- ApiVersions (key 18) ---- */

/* ClientSoftwareName/Version must match
 * [a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])? or the broker rejects the
 * request: other characters become '-', and non-alphanumerics at either
 * end are dropped. */
static void kp_put_sw_str(struct kp_buf *b, const char *s, const char *dflt)
{
    char tmp[128];
    size_t n = 0;
    for (const char *c = s ? s : ""; *c && n < sizeof(tmp); c++) {
        bool alnum = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                     (*c >= '0' && *c <= '9');
        tmp[n++] = alnum || *c == '.' || *c == '-' ? *c : '-';
    }
    size_t lo = 0;
    while (lo < n && (tmp[lo] == '-' || tmp[lo] == '.')) {
        lo++;
    }
    while (n > lo && (tmp[n - 1] == '-' || tmp[n - 1] == '.')) {
        n--;
    }
    if (n == lo) {
        kp_buf_put_compact_str(b, dflt);
    } else {
        kp_buf_put_compact_strn(b, tmp + lo, n - lo);
    }
}

/*
 * ApiVersions request, v0..v3. v0-v2 have no body; v3 sends the client
 * software name and version (sanitized to the broker's pattern; NULL means
 * "kproxyd" and KP_VERSION).
 */
void kp_proto_enc_apiversions(struct kp_req *q, int16_t version,
                              int32_t corr_id, const char *client_id,
                              const char *sw_name, const char *sw_version)
{
    bool flex = kp_proto_flexible(KP_API_APIVERSIONS, version);
    kp_proto_req_begin(q, KP_API_APIVERSIONS, version, corr_id, client_id);
    if (version >= 3) {
        kp_put_sw_str(&q->bytes, sw_name ? sw_name : "kproxyd",
                      "kproxyd"); /* ClientSoftwareName */
        kp_put_sw_str(&q->bytes, sw_version ? sw_version : KP_VERSION,
                      "unknown"); /* ClientSoftwareVersion */
    }
    kp_put_tags(&q->bytes, flex); /* TaggedFields */
    kp_req_finish(q);
}

/*
 * Decodes an ApiVersions response body (after header v0). out->min/max get
 * each listed key below KP_API_KEY_MAX, -1 for the others.
 *
 * A broker that does not know the requested version answers
 * UNSUPPORTED_VERSION in the v0 format, listing its own ApiVersions range
 * (KIP-511), so that error is decoded as v0 whatever version was asked;
 * an error with nothing after ErrorCode is accepted too (ranges all -1).
 * Returns KP_OK (check out->error) or KP_ERROR when malformed.
 */
int kp_proto_dec_apiversions(const uint8_t *p, size_t len, int16_t version,
                             struct kp_apiversions_resp *out)
{
    struct kp_rd r;
    out->error = 0;
    out->throttle_ms = 0;
    memset(out->min, 0xff, sizeof(out->min));
    memset(out->max, 0xff, sizeof(out->max));
    if (!kp_proto_version_ok(KP_API_APIVERSIONS, version)) {
        return KP_ERROR;
    }
    kp_rd_init(&r, p, len);
    out->error = kp_rd_i16(&r); /* ErrorCode */
    if (r.err) {
        return KP_ERROR;
    }
    if (out->error != 0 && kp_rd_left(&r) == 0) {
        return KP_OK;
    }
    int16_t v = out->error == KP_KERR_UNSUPPORTED_VERSION ? 0 : version;
    bool flex = kp_proto_flexible(KP_API_APIVERSIONS, v);
    int32_t n = kp_get_array(&r, flex, 6); /* ApiKeys */
    for (int32_t i = 0; i < n && !r.err; i++) {
        int16_t key = kp_rd_i16(&r); /* ApiKey */
        int16_t min = kp_rd_i16(&r); /* MinVersion */
        int16_t max = kp_rd_i16(&r); /* MaxVersion */
        kp_skip_tags(&r, flex);      /* TaggedFields */
        if (!r.err && key >= 0 && key < KP_API_KEY_MAX) {
            out->min[key] = min;
            out->max[key] = max;
        }
    }
    if (v >= 1) {
        out->throttle_ms = kp_rd_i32(&r); /* ThrottleTimeMs */
    }
    /* SupportedFeatures, FinalizedFeaturesEpoch, FinalizedFeatures... */
    kp_skip_tags(&r, flex); /* TaggedFields */
    if (r.err) {
        memset(out->min, 0xff, sizeof(out->min));
        memset(out->max, 0xff, sizeof(out->max));
        return KP_ERROR;
    }
    return KP_OK;
}

/* ---- Metadata (key 3) ---- */

/*
 * Metadata request, v1..v12, for the given topics (none when topic_cnt is
 * 0: v1+ reads an empty array as "no topics", and kproxyd never asks for
 * all topics). TopicId (v10+) is sent as the zero UUID: kproxyd names
 * topics. Authorized operations are never asked for.
 */
void kp_proto_enc_metadata(struct kp_req *q, int16_t version, int32_t corr_id,
                           const char *client_id, const char *const *topics,
                           size_t topic_cnt, bool allow_auto_create)
{
    static const uint8_t zero_uuid[16];
    bool flex = kp_proto_flexible(KP_API_METADATA, version);
    struct kp_buf *b = &q->bytes;
    kp_proto_req_begin(q, KP_API_METADATA, version, corr_id, client_id);
    kp_put_array_len(b, flex, topic_cnt); /* Topics */
    for (size_t i = 0; i < topic_cnt; i++) {
        if (version >= 10) {
            kp_buf_put_bytes(b, zero_uuid, 16); /* TopicId */
        }
        kp_put_str(b, flex, topics[i]); /* Name */
        kp_put_tags(b, flex);           /* TaggedFields */
    }
    if (version >= 4) {
        /* AllowAutoTopicCreation */
        kp_buf_put_i8(b, allow_auto_create ? 1 : 0);
    }
    if (version >= 8 && version <= 10) {
        kp_buf_put_i8(b, 0); /* IncludeClusterAuthorizedOperations */
    }
    if (version >= 8) {
        kp_buf_put_i8(b, 0); /* IncludeTopicAuthorizedOperations */
    }
    kp_put_tags(b, flex); /* TaggedFields */
    kp_req_finish(q);
}

/* Frees what a Metadata decode allocated and empties m; safe on a zeroed,
 * partially decoded or already freed struct. */
void kp_proto_metadata_resp_free(struct kp_metadata_resp *m)
{
    for (int32_t i = 0; m->brokers && i < m->broker_cnt; i++) {
        free(m->brokers[i].host);
    }
    free(m->brokers);
    for (int32_t i = 0; m->topics && i < m->topic_cnt; i++) {
        free(m->topics[i].name);
        free(m->topics[i].partitions);
    }
    free(m->topics);
    memset(m, 0, sizeof(*m));
    m->controller_id = -1;
}

static void kp_dec_md_partition(struct kp_rd *r, int16_t v, bool flex,
                                struct kp_md_partition *p)
{
    p->error = kp_rd_i16(r);                      /* ErrorCode */
    p->partition = kp_rd_i32(r);                  /* PartitionIndex */
    p->leader = kp_rd_i32(r);                     /* LeaderId */
    p->leader_epoch = v >= 7 ? kp_rd_i32(r) : -1; /* LeaderEpoch */
    kp_skip_int32_array(r, flex);                 /* ReplicaNodes */
    kp_skip_int32_array(r, flex);                 /* IsrNodes */
    if (v >= 5) {
        kp_skip_int32_array(r, flex); /* OfflineReplicas */
    }
    kp_skip_tags(r, flex); /* TaggedFields */
}

static void kp_dec_md_topic(struct kp_rd *r, int16_t v, bool flex,
                            struct kp_md_topic *t)
{
    t->error = kp_rd_i16(r);                   /* ErrorCode */
    t->name = kp_get_strdup(r, flex, v >= 12); /* Name */
    if (v >= 10) {
        kp_rd_skip(r, 16); /* TopicId */
    }
    if (v >= 1) {
        kp_rd_i8(r); /* IsInternal */
    }
    int32_t n = kp_get_array(r, flex, 13); /* Partitions */
    if (r->err) {
        return;
    }
    t->partitions = kp_calloc((size_t)n, sizeof(*t->partitions));
    t->partition_cnt = n;
    for (int32_t i = 0; i < n && !r->err; i++) {
        kp_dec_md_partition(r, v, flex, &t->partitions[i]);
    }
    if (v >= 8) {
        kp_rd_i32(r); /* TopicAuthorizedOperations */
    }
    kp_skip_tags(r, flex); /* TaggedFields */
}

/*
 * Decodes a Metadata response body into out (whose previous contents are
 * not freed). Each array is allocated only after its count has been
 * checked against the bytes left. A null topic name (v12+) becomes "".
 * Returns KP_OK, or KP_ERROR when malformed, out then empty. Free with
 * kp_proto_metadata_resp_free().
 */
int kp_proto_dec_metadata(const uint8_t *p, size_t len, int16_t version,
                          struct kp_metadata_resp *out)
{
    struct kp_rd r;
    int16_t v = version;
    bool flex = kp_proto_flexible(KP_API_METADATA, v);
    memset(out, 0, sizeof(*out));
    out->controller_id = -1;
    if (!kp_proto_version_ok(KP_API_METADATA, v)) {
        return KP_ERROR;
    }
    kp_rd_init(&r, p, len);
    if (v >= 3) {
        out->throttle_ms = kp_rd_i32(&r); /* ThrottleTimeMs */
    }
    int32_t n = kp_get_array(&r, flex, 10); /* Brokers */
    if (!r.err) {
        out->brokers = kp_calloc((size_t)n, sizeof(*out->brokers));
        out->broker_cnt = n;
    }
    for (int32_t i = 0; i < n && !r.err; i++) {
        struct kp_md_broker *b = &out->brokers[i];
        b->node_id = kp_rd_i32(&r);               /* NodeId */
        b->host = kp_get_strdup(&r, flex, false); /* Host */
        b->port = kp_rd_i32(&r);                  /* Port */
        if (v >= 1) {
            kp_skip_str(&r, flex); /* Rack */
        }
        kp_skip_tags(&r, flex); /* TaggedFields */
    }
    if (v >= 2) {
        kp_skip_str(&r, flex); /* ClusterId */
    }
    if (v >= 1) {
        out->controller_id = kp_rd_i32(&r); /* ControllerId */
    }
    n = kp_get_array(&r, flex, 8); /* Topics */
    if (!r.err) {
        out->topics = kp_calloc((size_t)n, sizeof(*out->topics));
        out->topic_cnt = n;
    }
    for (int32_t i = 0; i < n && !r.err; i++) {
        kp_dec_md_topic(&r, v, flex, &out->topics[i]);
    }
    if (v >= 8 && v <= 10) {
        kp_rd_i32(&r); /* ClusterAuthorizedOperations */
    }
    kp_skip_tags(&r, flex); /* TaggedFields */
    if (r.err) {
        kp_proto_metadata_resp_free(out);
        return KP_ERROR;
    }
    return KP_OK;
}

/* ---- InitProducerId (key 22) ---- */

/*
 * InitProducerId request, v0..v4, for an idempotent, non-transactional
 * producer: TransactionalId null, and TransactionTimeoutMs -1 as
 * librdkafka sends it (the broker reads the timeout only with a
 * TransactionalId; Java sends its transaction.timeout.ms, 60000, which
 * the broker equally ignores). v3+ carries the current producer id/epoch
 * (-1/-1 for a new producer) so the broker can bump the epoch.
 */
void kp_proto_enc_initpid(struct kp_req *q, int16_t version, int32_t corr_id,
                          const char *client_id, int64_t producer_id,
                          int16_t producer_epoch)
{
    bool flex = kp_proto_flexible(KP_API_INITPID, version);
    struct kp_buf *b = &q->bytes;
    kp_proto_req_begin(q, KP_API_INITPID, version, corr_id, client_id);
    kp_put_str(b, flex, NULL); /* TransactionalId */
    kp_buf_put_i32(b, -1);     /* TransactionTimeoutMs */
    if (version >= 3) {
        kp_buf_put_i64(b, producer_id);    /* ProducerId */
        kp_buf_put_i16(b, producer_epoch); /* ProducerEpoch */
    }
    kp_put_tags(b, flex); /* TaggedFields */
    kp_req_finish(q);
}

/* Decodes an InitProducerId response body. Returns KP_OK (check
 * out->error) or KP_ERROR when malformed. */
int kp_proto_dec_initpid(const uint8_t *p, size_t len, int16_t version,
                         struct kp_initpid_resp *out)
{
    struct kp_rd r;
    bool flex = kp_proto_flexible(KP_API_INITPID, version);
    memset(out, 0, sizeof(*out));
    out->producer_id = -1;
    out->producer_epoch = -1;
    if (!kp_proto_version_ok(KP_API_INITPID, version)) {
        return KP_ERROR;
    }
    kp_rd_init(&r, p, len);
    out->throttle_ms = kp_rd_i32(&r);    /* ThrottleTimeMs */
    out->error = kp_rd_i16(&r);          /* ErrorCode */
    out->producer_id = kp_rd_i64(&r);    /* ProducerId */
    out->producer_epoch = kp_rd_i16(&r); /* ProducerEpoch */
    kp_skip_tags(&r, flex);              /* TaggedFields */
    return r.err ? KP_ERROR : KP_OK;
}

/* ---- Produce (key 0) ---- */

/*
 * Starts a Produce request (v3..v9): header, TransactionalId null, Acks,
 * TimeoutMs and the TopicData count; topic_cnt topics must follow.
 */
void kp_proto_produce_begin(struct kp_req *q, int16_t version, int32_t corr_id,
                            const char *client_id, int16_t acks,
                            int32_t timeout_ms, int32_t topic_cnt)
{
    bool flex = kp_proto_flexible(KP_API_PRODUCE, version);
    struct kp_buf *b = &q->bytes;
    kp_assert(topic_cnt >= 0);
    kp_proto_req_begin(q, KP_API_PRODUCE, version, corr_id, client_id);
    kp_put_str(b, flex, NULL);                    /* TransactionalId */
    kp_buf_put_i16(b, acks);                      /* Acks */
    kp_buf_put_i32(b, timeout_ms);                /* TimeoutMs */
    kp_put_array_len(b, flex, (size_t)topic_cnt); /* TopicData */
}

/* Adds a topic (name need not be NUL-terminated) whose partition_cnt
 * partitions follow; close it with kp_proto_produce_topic_end(). */
void kp_proto_produce_topic(struct kp_req *q, int16_t version,
                            const char *topic, size_t topic_len,
                            int32_t partition_cnt)
{
    bool flex = kp_proto_flexible(KP_API_PRODUCE, version);
    kp_assert(partition_cnt >= 0 && topic_len <= INT16_MAX);
    kp_put_strn(&q->bytes, flex, topic, topic_len); /* Name */
    /* PartitionData */
    kp_put_array_len(&q->bytes, flex, (size_t)partition_cnt);
}

/*
 * Adds one partition with its sealed RecordBatch(es), spliced rather than
 * copied: batch is borrowed until the request has been written. A NULL
 * batch sends null Records.
 */
void kp_proto_produce_part(struct kp_req *q, int16_t version, int32_t partition,
                           const uint8_t *batch, size_t batch_len)
{
    bool flex = kp_proto_flexible(KP_API_PRODUCE, version);
    struct kp_buf *b = &q->bytes;
    kp_buf_put_i32(b, partition); /* Index */
    if (!batch) {
        if (flex) {
            kp_buf_put_uvarint(b, 0); /* Records (null) */
        } else {
            kp_buf_put_i32(b, -1); /* Records (null) */
        }
    } else {
        kp_assert(batch_len <= INT32_MAX);
        if (flex) {
            kp_buf_put_uvarint(b, (uint64_t)batch_len + 1); /* Records len */
        } else {
            kp_buf_put_i32(b, (int32_t)batch_len); /* Records len */
        }
        kp_req_splice(q, batch, batch_len); /* Records */
    }
    kp_put_tags(b, flex); /* TaggedFields */
}

/* Closes a topic's partitions (its tags in flexible versions). */
void kp_proto_produce_topic_end(struct kp_req *q, int16_t version)
{
    bool flex = kp_proto_flexible(KP_API_PRODUCE, version);
    kp_put_tags(&q->bytes, flex); /* TaggedFields */
}

/* Closes the request (top-level tags) and finishes it. */
void kp_proto_produce_end(struct kp_req *q, int16_t version)
{
    bool flex = kp_proto_flexible(KP_API_PRODUCE, version);
    kp_put_tags(&q->bytes, flex); /* TaggedFields */
    kp_req_finish(q);
}

/* Frees what a Produce decode allocated and empties r; safe on a zeroed,
 * partially decoded or already freed struct. */
void kp_proto_produce_resp_free(struct kp_produce_resp *r)
{
    for (int32_t i = 0; r->topics && i < r->topic_cnt; i++) {
        struct kp_produce_tresp *t = &r->topics[i];
        for (int32_t j = 0; t->parts && j < t->part_cnt; j++) {
            free(t->parts[j].error_message);
            free(t->parts[j].record_error);
            free(t->parts[j].record_errors);
        }
        free(t->name);
        free(t->parts);
    }
    free(r->topics);
    memset(r, 0, sizeof(*r));
}

static void kp_dec_produce_part(struct kp_rd *r, int16_t v, bool flex,
                                struct kp_produce_presp *pp)
{
    pp->partition = kp_rd_i32(r);   /* Index */
    pp->error = kp_rd_i16(r);       /* ErrorCode */
    pp->base_offset = kp_rd_i64(r); /* BaseOffset */
    kp_rd_i64(r);                   /* LogAppendTimeMs (v2+) */
    pp->log_start_offset = v >= 5 ? kp_rd_i64(r) : -1; /* LogStartOffset */
    if (v >= 8) {
        int32_t n = kp_get_array(r, flex, 5); /* RecordErrors */
        /* n is bounded by the bytes present (5 per entry at least) */
        pp->record_errors = n > 0 ? kp_malloc((size_t)n * sizeof(int32_t))
                                  : NULL;
        for (int32_t i = 0; i < n && !r->err; i++) {
            int32_t idx = kp_rd_i32(r); /* BatchIndex */
            char *msg = kp_get_strdup(r, flex, true); /* BatchIndexErrorMessage */
            kp_skip_tags(r, flex);      /* TaggedFields */
            pp->record_errors[pp->record_error_cnt++] = idx;
            if (i == 0 && !r->err) {
                /* The first record's error is the one worth logging. */
                pp->record_error_index = idx;
                pp->record_error = msg;
            } else {
                free(msg);
            }
        }
        pp->error_message = kp_get_strdup(r, flex, true); /* ErrorMessage */
    }
    kp_skip_tags(r, flex); /* TaggedFields (CurrentLeader is v10+) */
}

/*
 * Decodes a Produce response body (v3..v9) into out (whose previous
 * contents are not freed). Per-record errors (v8+): every BatchIndex, and
 * the first one's message. Returns
 * KP_OK, or KP_ERROR when malformed, out then empty. Free with
 * kp_proto_produce_resp_free().
 */
int kp_proto_dec_produce(const uint8_t *p, size_t len, int16_t version,
                         struct kp_produce_resp *out)
{
    struct kp_rd r;
    int16_t v = version;
    bool flex = kp_proto_flexible(KP_API_PRODUCE, v);
    memset(out, 0, sizeof(*out));
    if (!kp_proto_version_ok(KP_API_PRODUCE, v)) {
        return KP_ERROR;
    }
    kp_rd_init(&r, p, len);
    int32_t n = kp_get_array(&r, flex, 3); /* Responses */
    if (!r.err) {
        out->topics = kp_calloc((size_t)n, sizeof(*out->topics));
        out->topic_cnt = n;
    }
    for (int32_t i = 0; i < n && !r.err; i++) {
        struct kp_produce_tresp *t = &out->topics[i];
        t->name = kp_get_strdup(&r, flex, false); /* Name */
        int32_t m = kp_get_array(&r, flex, 14);   /* PartitionResponses */
        if (r.err) {
            break;
        }
        t->parts = kp_calloc((size_t)m, sizeof(*t->parts));
        t->part_cnt = m;
        for (int32_t j = 0; j < m && !r.err; j++) {
            kp_dec_produce_part(&r, v, flex, &t->parts[j]);
        }
        kp_skip_tags(&r, flex); /* TaggedFields */
    }
    out->throttle_ms = kp_rd_i32(&r); /* ThrottleTimeMs */
    kp_skip_tags(&r, flex);           /* TaggedFields (NodeEndpoints v10+) */
    if (r.err) {
        kp_proto_produce_resp_free(out);
        return KP_ERROR;
    }
    return KP_OK;
}

/* ---- SaslHandshake (key 17) ---- */

/*
 * SaslHandshake request, v0..v1 (never flexible): the mechanism's name
 * ("PLAIN", "SCRAM-SHA-256", ...). v1 means the tokens that follow travel
 * in SaslAuthenticate requests; v0 that they go as raw frames
 * (kp_proto_enc_sasl_raw).
 */
void kp_proto_enc_sasl_handshake(struct kp_req *q, int16_t version,
                                 int32_t corr_id, const char *client_id,
                                 const char *mechanism)
{
    kp_assert(mechanism != NULL);
    kp_proto_req_begin(q, KP_API_SASL_HANDSHAKE, version, corr_id, client_id);
    kp_buf_put_str(&q->bytes, mechanism); /* Mechanism */
    kp_req_finish(q);
}

/* Frees what a SaslHandshake decode allocated and empties r; safe on a
 * zeroed, partially decoded or already freed struct. */
void kp_proto_sasl_handshake_resp_free(struct kp_sasl_handshake_resp *r)
{
    for (int32_t i = 0; r->mechanisms && i < r->mechanism_cnt; i++) {
        free(r->mechanisms[i]);
    }
    free(r->mechanisms);
    memset(r, 0, sizeof(*r));
}

/*
 * Decodes a SaslHandshake response body (after header v0). Mechanisms
 * lists what the broker has enabled (with UNSUPPORTED_SASL_MECHANISM, the
 * ones to choose from). Returns KP_OK (check out->error) or KP_ERROR when
 * malformed, out then empty. Free with kp_proto_sasl_handshake_resp_free.
 */
int kp_proto_dec_sasl_handshake(const uint8_t *p, size_t len, int16_t version,
                                struct kp_sasl_handshake_resp *out)
{
    struct kp_rd r;
    memset(out, 0, sizeof(*out));
    if (!kp_proto_version_ok(KP_API_SASL_HANDSHAKE, version)) {
        return KP_ERROR;
    }
    kp_rd_init(&r, p, len);
    out->error = kp_rd_i16(&r);             /* ErrorCode */
    int32_t n = kp_get_array(&r, false, 2); /* Mechanisms */
    if (!r.err) {
        out->mechanisms = kp_calloc((size_t)n, sizeof(*out->mechanisms));
        out->mechanism_cnt = n;
    }
    for (int32_t i = 0; i < n && !r.err; i++) {
        out->mechanisms[i] = kp_get_strdup(&r, false, false);
    }
    if (r.err) {
        kp_proto_sasl_handshake_resp_free(out);
        return KP_ERROR;
    }
    return KP_OK;
}

/* ---- SaslAuthenticate (key 36) ---- */

/*
 * SaslAuthenticate request, v0..v2 (v2 flexible), carrying one client
 * SASL message (kp_sasl_step's output) as AuthBytes. The bytes are
 * copied: auth may be freed once this returns.
 */
void kp_proto_enc_sasl_authenticate(struct kp_req *q, int16_t version,
                                    int32_t corr_id, const char *client_id,
                                    const uint8_t *auth, size_t auth_len)
{
    bool flex = kp_proto_flexible(KP_API_SASL_AUTHENTICATE, version);
    struct kp_buf *b = &q->bytes;
    kp_assert(auth_len < INT32_MAX);
    kp_proto_req_begin(q, KP_API_SASL_AUTHENTICATE, version, corr_id,
                       client_id);
    if (flex) {
        kp_buf_put_uvarint(b, (uint64_t)auth_len + 1); /* AuthBytes */
    } else {
        kp_buf_put_i32(b, (int32_t)auth_len); /* AuthBytes */
    }
    kp_buf_put_bytes(b, auth, auth_len);
    kp_put_tags(b, flex); /* TaggedFields */
    kp_req_finish(q);
}

/* Frees what a SaslAuthenticate decode allocated (the error message). */
void kp_proto_sasl_authenticate_resp_free(struct kp_sasl_authenticate_resp *r)
{
    free(r->error_message);
    memset(r, 0, sizeof(*r));
}

/*
 * Decodes a SaslAuthenticate response body (after header v0, or v1 for
 * the flexible v2). out->auth_bytes points into p (borrowed: valid while
 * p is); out->error_message is owned (NULL when the broker sent null);
 * out->session_lifetime_ms is 0 before v1 and when the broker sets no
 * lifetime. Returns KP_OK (check out->error) or KP_ERROR when malformed
 * (a null AuthBytes included: the field is not nullable), out then empty.
 * Free with kp_proto_sasl_authenticate_resp_free.
 */
int kp_proto_dec_sasl_authenticate(const uint8_t *p, size_t len,
                                   int16_t version,
                                   struct kp_sasl_authenticate_resp *out)
{
    struct kp_rd r;
    const uint8_t *s;
    bool flex = kp_proto_flexible(KP_API_SASL_AUTHENTICATE, version);
    memset(out, 0, sizeof(*out));
    if (!kp_proto_version_ok(KP_API_SASL_AUTHENTICATE, version)) {
        return KP_ERROR;
    }
    kp_rd_init(&r, p, len);
    out->error = kp_rd_i16(&r);           /* ErrorCode */
    int32_t n = kp_get_str(&r, flex, &s); /* ErrorMessage */
    if (!r.err && n >= 0) {
        out->error_message = kp_strndup((const char *)s, (size_t)n);
    }
    if (flex) {
        kp_check_compact_len(&r);
    }
    /* AuthBytes */
    n = flex ? kp_rd_compact_bytes(&r, &s) : kp_rd_bytes(&r, &s);
    if (n < 0) {
        kp_rd_fail(&r);
    }
    out->auth_bytes = s;
    out->auth_len = n;
    if (version >= 1) {
        out->session_lifetime_ms = kp_rd_i64(&r); /* SessionLifetimeMs */
    }
    kp_skip_tags(&r, flex); /* TaggedFields */
    if (r.err) {
        kp_proto_sasl_authenticate_resp_free(out);
        return KP_ERROR;
    }
    return KP_OK;
}

/* ---- raw SASL frames (after SaslHandshake v0) ---- */

/*
 * A client SASL message as a raw frame: int32 size + the bytes, with no
 * request header and no correlation id (what follows SaslHandshake v0).
 * The broker answers with raw frames too: int32 size + the server's
 * message, possibly empty (PLAIN's success is a zero-length frame), and
 * no correlation id - the frame body is the message as it is. The bytes
 * are copied.
 */
void kp_proto_enc_sasl_raw(struct kp_req *q, const uint8_t *auth,
                           size_t auth_len)
{
    kp_assert(auth_len < INT32_MAX);
    kp_req_reset(q);
    kp_buf_put_i32(&q->bytes, 0); /* Size (patched by kp_req_finish) */
    kp_buf_put_bytes(&q->bytes, auth, auth_len);
    kp_req_finish(q);
}
