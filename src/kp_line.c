/*
 * kp_line.c - owns the meaning of one client line: the four text formats
 * (split at the first one or two separators, results are views into the
 * line, nothing copied or allocated) and the json format (jansson, decoded
 * into the caller's reusable kp_line_scratch). Also the allow_topics
 * matching that every line goes through.
 *
 * This is the ingest hot path: the text formats cost a memchr or two and a
 * table lookup per topic byte. The json format is for callers that need
 * keys, headers or binary data and accepts the cost of a JSON parser.
 *
 * Topic names are checked by kp_topic_name_valid (kp_conf.h): one rule for
 * the configuration and every line.
 */
#include "kp_line.h"

#include <jansson.h>

/*
 * allow_topics matching. An entry ending in '*' is a prefix ("logs.*"
 * matches "logs.app", "*" matches everything); any other entry is an exact
 * name. No list (allow == NULL or cnt == 0) allows every topic. The topic
 * is topic[0..topic_len) and need not be NUL-terminated.
 */
bool kp_topic_allowed(char *const *allow, size_t cnt, const char *topic,
                      size_t topic_len)
{
    if (!allow || cnt == 0) {
        return true;
    }
    for (size_t i = 0; i < cnt; i++) {
        const char *e = allow[i];
        size_t n = strlen(e);

        if (n > 0 && e[n - 1] == '*') {
            if (topic_len >= n - 1 && memcmp(topic, e, n - 1) == 0) {
                return true;
            }
        } else if (n == topic_len && memcmp(topic, e, n) == 0) {
            return true;
        }
    }
    return false;
}

void kp_line_scratch_init(struct kp_line_scratch *s)
{
    kp_buf_init(&s->bytes, 0);
    s->headers = NULL;
    s->header_cap = 0;
}

void kp_line_scratch_deinit(struct kp_line_scratch *s)
{
    kp_buf_deinit(&s->bytes);
    free(s->headers);
    s->headers = NULL;
    s->header_cap = 0;
}

static void kp_msg_clear(struct kp_msg *m)
{
    m->topic = NULL;
    m->topic_len = 0;
    m->key = NULL;
    m->key_len = 0;
    m->value = NULL;
    m->value_len = 0;
    m->partition = -1;
    m->timestamp = -1;
    m->headers = NULL;
    m->header_cnt = 0;
}

/*
 * Parses one line (never containing '\n') in format `fmt` into *m.
 *
 * Text formats: the separator splits only at its first one (two for
 * topic,key,value) occurrences, so VALUE may contain it; an empty KEY is a
 * null key; an empty VALUE is an empty, non-null value; every other byte
 * ('\r', NUL, 0xff...) is kept. The results point into `line`; scratch is
 * not touched. A format without a topic field takes fixed_topic, which the
 * configuration guarantees: without one the line is rejected as bad_topic
 * rather than crashing on a configuration bug. Formats with a topic field
 * ignore fixed_topic (the configuration forbids giving one).
 *
 * json: see kp_line_parse_json().
 *
 * Returns KP_REASON_NONE with *m filled, or why the line is rejected (*m is
 * then unspecified). Never reads outside line[0..len).
 */
enum kp_reason kp_line_parse(enum kp_format fmt, uint8_t sep,
                             const char *fixed_topic, const uint8_t *line,
                             size_t len, struct kp_line_scratch *scratch,
                             struct kp_msg *m)
{
    const uint8_t *end = line + len;
    const uint8_t *p = line;
    const uint8_t *s;

    if (fmt == KP_FMT_JSON) {
        return kp_line_parse_json(fixed_topic, line, len, scratch, m);
    }

    kp_msg_clear(m);
    switch (fmt) {
    case KP_FMT_VALUE:
    case KP_FMT_KEY_VALUE:
        if (kp_unlikely(!fixed_topic)) {
            return KP_REASON_BAD_TOPIC;
        }
        m->topic = fixed_topic;
        m->topic_len = strlen(fixed_topic);
        break;
    case KP_FMT_TOPIC_VALUE:
    case KP_FMT_TOPIC_KEY_VALUE:
        s = len ? memchr(p, sep, len) : NULL;
        if (!s) {
            return KP_REASON_BAD_FORMAT;
        }
        if (!kp_topic_name_valid((const char *)p, (size_t)(s - p))) {
            return KP_REASON_BAD_TOPIC;
        }
        m->topic = (const char *)p;
        m->topic_len = (size_t)(s - p);
        p = s + 1;
        break;
    case KP_FMT_JSON:
    case KP_FMT__COUNT:
    default:
        return KP_REASON_BAD_FORMAT;
    }

    if (fmt == KP_FMT_KEY_VALUE || fmt == KP_FMT_TOPIC_KEY_VALUE) {
        s = p < end ? memchr(p, sep, (size_t)(end - p)) : NULL;
        if (!s) {
            return KP_REASON_BAD_FORMAT;
        }
        if (s > p) {
            m->key = p;
            m->key_len = (size_t)(s - p);
        }
        p = s + 1;
    }

    /* Never NULL, even when empty: an empty line is an empty value. */
    m->value = p;
    m->value_len = (size_t)(end - p);
    return KP_REASON_NONE;
}

/* ---- json ---- */

/* Sextet value + 1 of each base64 byte; 0 = not in the alphabet. */
static const uint8_t kp_b64_val[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,
    ['G'] = 7,  ['H'] = 8,  ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12,
    ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18,
    ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30,
    ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
    ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
    ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54,
    ['2'] = 55, ['3'] = 56, ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60,
    ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};

/*
 * Standard base64 (RFC 4648 alphabet, '=' padding required). Returns the
 * decoded length written to out (room for n / 4 * 3 bytes), or -1 when the
 * text is not base64. Whitespace is not skipped: a line is one value.
 */
static ptrdiff_t kp_b64_decode(const char *in, size_t n, uint8_t *out)
{
    const uint8_t *p = (const uint8_t *)in;
    size_t o = 0;

    if (n % 4 != 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i += 4) {
        int a = kp_b64_val[p[i]] - 1;
        int b = kp_b64_val[p[i + 1]] - 1;
        int c = kp_b64_val[p[i + 2]] - 1;
        int d = kp_b64_val[p[i + 3]] - 1;
        bool last = i + 4 == n;

        if (a < 0 || b < 0) {
            return -1;
        }
        if (last && p[i + 2] == '=' && p[i + 3] == '=') {
            out[o++] = (uint8_t)(a << 2 | b >> 4);
            break;
        }
        if (c < 0) {
            return -1;
        }
        if (last && p[i + 3] == '=') {
            out[o++] = (uint8_t)(a << 2 | b >> 4);
            out[o++] = (uint8_t)(b << 4 | c >> 2);
            break;
        }
        if (d < 0) {
            return -1;
        }
        out[o++] = (uint8_t)(a << 2 | b >> 4);
        out[o++] = (uint8_t)(b << 4 | c >> 2);
        out[o++] = (uint8_t)(c << 6 | d);
    }
    return (ptrdiff_t)o;
}

/* What a byte field (key or value) of a json line holds. */
enum kp_jfield_kind {
    KP_JF_NULL,   /* absent or null */
    KP_JF_STRING, /* a string: its UTF-8 bytes */
    KP_JF_BASE64, /* a *_base64 string: its decoded bytes */
    KP_JF_DUMP,   /* any other JSON value: its compact text */
};

struct kp_jfield {
    enum kp_jfield_kind kind;
    json_t *j;   /* borrowed from the parsed document */
    size_t need; /* bytes to reserve in scratch (an upper bound) */
};

#define KP_JSON_DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY)

/*
 * Sets *f from `key` / `value` or, with base64, `key_base64` /
 * `value_base64`; dump_ok allows a non-string (`value` only). Null means
 * absent. Giving both the plain and the base64 field with non-null values
 * is an error, as it is ambiguous.
 */
static enum kp_reason kp_jfield_set(struct kp_jfield *f, json_t *v, bool base64,
                                    bool dump_ok)
{
    if (json_is_null(v)) {
        return KP_REASON_NONE;
    }
    if (f->kind != KP_JF_NULL) {
        return KP_REASON_BAD_JSON;
    }
    f->j = v;
    if (json_is_string(v)) {
        size_t n = json_string_length(v);
        f->kind = base64 ? KP_JF_BASE64 : KP_JF_STRING;
        f->need = base64 ? n / 4 * 3 : n;
        return KP_REASON_NONE;
    }
    if (base64 || !dump_ok) {
        return KP_REASON_BAD_JSON;
    }
    f->kind = KP_JF_DUMP;
    f->need = json_dumpb(v, NULL, 0, KP_JSON_DUMP_FLAGS);
    return f->need ? KP_REASON_NONE : KP_REASON_BAD_JSON;
}

/*
 * Appends the field's bytes to scratch (whose room was reserved, so no
 * reallocation moves earlier results) and points *p / *n at them.
 */
static enum kp_reason kp_jfield_emit(const struct kp_jfield *f,
                                     struct kp_buf *b, const uint8_t **p,
                                     size_t *n)
{
    uint8_t *dst = b->data + b->len;
    ptrdiff_t got;

    kp_assert(b->cap - b->len >= f->need);
    switch (f->kind) {
    case KP_JF_NULL:
        *p = NULL;
        *n = 0;
        return KP_REASON_NONE;
    case KP_JF_STRING:
        *n = json_string_length(f->j);
        memcpy(dst, json_string_value(f->j), *n);
        break;
    case KP_JF_BASE64:
        got = kp_b64_decode(json_string_value(f->j), json_string_length(f->j),
                            dst);
        if (got < 0) {
            return KP_REASON_BAD_JSON;
        }
        *n = (size_t)got;
        break;
    case KP_JF_DUMP:
        *n = json_dumpb(f->j, (char *)dst, f->need, KP_JSON_DUMP_FLAGS);
        if (*n != f->need) {
            return KP_REASON_BAD_JSON;
        }
        break;
    }
    *p = dst;
    b->len += *n;
    return KP_REASON_NONE;
}

static bool kp_jkey_is(const char *k, size_t klen, const char *name)
{
    size_t n = strlen(name);
    return klen == n && memcmp(k, name, n) == 0;
}

/* How an optional integer field of a json line reads. */
enum kp_jint {
    KP_JINT_ABSENT,
    KP_JINT_OK,
    KP_JINT_RANGE, /* an integer, out of range */
    KP_JINT_TYPE,  /* not an integer */
};

/* An integer within [0, max] into *out; null is the same as absent. */
static enum kp_jint kp_jint_get(json_t *v, json_int_t max, int64_t *out)
{
    json_int_t i;

    if (json_is_null(v)) {
        return KP_JINT_ABSENT;
    }
    if (!json_is_integer(v)) {
        return KP_JINT_TYPE;
    }
    i = json_integer_value(v);
    if (i < 0 || i > max) {
        return KP_JINT_RANGE;
    }
    *out = (int64_t)i;
    return KP_JINT_OK;
}

/*
 * Validates `headers` and counts the bytes and entries it needs. Two forms:
 * an object of string values (order as written), or an array of
 * [name, value] pairs, value a string or null, names may repeat.
 */
static enum kp_reason kp_jheaders_check(json_t *h, size_t *cnt, size_t *need)
{
    size_t i;
    json_t *pair;

    *cnt = 0;
    *need = 0;
    if (json_is_null(h)) {
        return KP_REASON_NONE;
    }
    if (json_is_object(h)) {
        for (void *it = json_object_iter(h); it;
             it = json_object_iter_next(h, it)) {
            json_t *v = json_object_iter_value(it);
            if (!json_is_string(v)) {
                return KP_REASON_BAD_JSON;
            }
            *need += json_object_iter_key_len(it) + json_string_length(v);
            (*cnt)++;
        }
        return KP_REASON_NONE;
    }
    if (!json_is_array(h)) {
        return KP_REASON_BAD_JSON;
    }
    json_array_foreach(h, i, pair)
    {
        json_t *name = json_array_get(pair, 0);
        json_t *v = json_array_get(pair, 1);

        if (!json_is_array(pair) || json_array_size(pair) != 2 ||
            !json_is_string(name) || !(json_is_string(v) || json_is_null(v))) {
            return KP_REASON_BAD_JSON;
        }
        *need += json_string_length(name);
        if (json_is_string(v)) {
            *need += json_string_length(v);
        }
        (*cnt)++;
    }
    return KP_REASON_NONE;
}

static const uint8_t *kp_scratch_put(struct kp_buf *b, const char *s, size_t n)
{
    uint8_t *dst = b->data + b->len;

    kp_assert(b->cap - b->len >= n);
    if (n) {
        memcpy(dst, s, n);
    }
    b->len += n;
    return dst;
}

/* Fills scratch->headers from a `headers` value kp_jheaders_check passed. */
static void kp_jheaders_emit(json_t *h, struct kp_line_scratch *scratch)
{
    struct kp_buf *b = &scratch->bytes;
    struct kp_header *out = scratch->headers;
    size_t i;
    json_t *pair;

    if (json_is_object(h)) {
        for (void *it = json_object_iter(h); it;
             it = json_object_iter_next(h, it)) {
            json_t *v = json_object_iter_value(it);
            out->name_len = json_object_iter_key_len(it);
            out->name =
                kp_scratch_put(b, json_object_iter_key(it), out->name_len);
            out->value_len = json_string_length(v);
            out->value =
                kp_scratch_put(b, json_string_value(v), out->value_len);
            out++;
        }
        return;
    }
    json_array_foreach(h, i, pair)
    {
        json_t *name = json_array_get(pair, 0);
        json_t *v = json_array_get(pair, 1);

        out->name_len = json_string_length(name);
        out->name = kp_scratch_put(b, json_string_value(name), out->name_len);
        if (json_is_string(v)) {
            out->value_len = json_string_length(v);
            out->value =
                kp_scratch_put(b, json_string_value(v), out->value_len);
        } else {
            out->value = NULL;
            out->value_len = 0;
        }
        out++;
    }
}

/*
 * Parses one json-format line: a single JSON object with the fields
 *
 *   topic         string; required unless fixed_topic is given, and when
 *                 both are given they must agree (else bad_json)
 *   key, value    value: a string is its UTF-8 bytes, any other JSON value
 *                 its compact JSON text; key: a string; null is a null
 *   key_base64,   standard padded base64 of binary bytes; not together with
 *   value_base64  the plain field of the same name
 *   partition     integer 0..2^31-1 (negative or larger: bad_partition)
 *   headers       {"name": "value", ...} or [["name", "value"|null], ...]
 *   timestamp     integer ms since the epoch, >= 0
 *   error,        ignored: the dead-letter file adds them, and it must
 *   failed_at     replay into a json listener as it is
 *
 * A null field is the same as an absent one. Any other field is rejected
 * as bad_json: strict, so a typo ("partiton") is an error the writer sees
 * instead of a message silently sent where it was not meant to go.
 * Duplicate fields, trailing bytes and non-objects are bad_json too.
 * Strings may contain \u0000 (kept, lengths are explicit).
 *
 * Every pointer in *m points into scratch->bytes or scratch->headers,
 * which are reset per call: the result is valid until the next call with
 * the same scratch. Returns KP_REASON_NONE or the reason the line is rejected.
 */
/* The fields of one json line, gathered before anything is copied. */
struct kp_jline {
    struct kp_jfield key, value;
    json_t *topic;   /* borrowed from the document; NULL = absent */
    json_t *headers; /* borrowed; NULL = absent */
    size_t header_cnt, header_need;
    int32_t partition;
    int64_t timestamp;
};

/* An integer field: partition (out of range: bad_partition) or
 * timestamp (out of range: bad_json). */
static enum kp_reason kp_jline_int(json_t *v, int64_t max, bool partition,
                                   int64_t *out)
{
    int64_t i64;

    switch (kp_jint_get(v, max, &i64)) {
    case KP_JINT_ABSENT:
        return KP_REASON_NONE;
    case KP_JINT_OK:
        *out = i64;
        return KP_REASON_NONE;
    case KP_JINT_RANGE:
        return partition ? KP_REASON_BAD_PARTITION : KP_REASON_BAD_JSON;
    case KP_JINT_TYPE:
    default:
        return KP_REASON_BAD_JSON;
    }
}

/* One member of the object into *jl; unknown members are bad_json. */
static enum kp_reason kp_jline_member(struct kp_jline *jl, const char *k,
                                      size_t kl, json_t *v)
{
    int64_t i64 = -1;
    enum kp_reason rej;

    if (kp_jkey_is(k, kl, "topic")) {
        jl->topic = json_is_string(v) ? v : NULL;
        return json_is_null(v) || json_is_string(v) ? KP_REASON_NONE
                                                    : KP_REASON_BAD_JSON;
    }
    if (kp_jkey_is(k, kl, "value")) {
        return kp_jfield_set(&jl->value, v, false, true);
    }
    if (kp_jkey_is(k, kl, "value_base64")) {
        return kp_jfield_set(&jl->value, v, true, false);
    }
    if (kp_jkey_is(k, kl, "key")) {
        return kp_jfield_set(&jl->key, v, false, false);
    }
    if (kp_jkey_is(k, kl, "key_base64")) {
        return kp_jfield_set(&jl->key, v, true, false);
    }
    if (kp_jkey_is(k, kl, "partition")) {
        rej = kp_jline_int(v, INT32_MAX, true, &i64);
        jl->partition = i64 >= 0 ? (int32_t)i64 : jl->partition;
        return rej;
    }
    if (kp_jkey_is(k, kl, "timestamp")) {
        rej = kp_jline_int(v, INT64_MAX, false, &i64);
        jl->timestamp = i64 >= 0 ? i64 : jl->timestamp;
        return rej;
    }
    if (kp_jkey_is(k, kl, "headers")) {
        jl->headers = v;
        return kp_jheaders_check(v, &jl->header_cnt, &jl->header_need);
    }
    /* error, failed_at: what the dead letter adds; replays ignore them */
    return kp_jkey_is(k, kl, "error") || kp_jkey_is(k, kl, "failed_at")
               ? KP_REASON_NONE
               : KP_REASON_BAD_JSON;
}

static enum kp_reason kp_jline_gather(json_t *doc, struct kp_jline *jl)
{
    enum kp_reason rej = KP_REASON_NONE;

    for (void *it = json_object_iter(doc); it && rej == KP_REASON_NONE;
         it = json_object_iter_next(doc, it)) {
        rej = kp_jline_member(jl, json_object_iter_key(it),
                              json_object_iter_key_len(it),
                              json_object_iter_value(it));
    }
    return rej;
}

/* The topic: the line's (valid, and the listener's if it fixes one), or
 * the listener's. */
static enum kp_reason kp_jline_topic(const struct kp_jline *jl,
                                     const char *fixed_topic)
{
    if (!jl->topic) {
        return fixed_topic ? KP_REASON_NONE : KP_REASON_BAD_FORMAT;
    }
    const char *t = json_string_value(jl->topic);
    size_t tl = json_string_length(jl->topic);
    if (!kp_topic_name_valid(t, tl)) {
        return KP_REASON_BAD_TOPIC;
    }
    if (fixed_topic &&
        (strlen(fixed_topic) != tl || memcmp(fixed_topic, t, tl) != 0)) {
        return KP_REASON_BAD_JSON;
    }
    return KP_REASON_NONE;
}

/* Copies the gathered fields into scratch, *m pointing at them. */
static enum kp_reason kp_jline_emit(const struct kp_jline *jl,
                                    const char *fixed_topic,
                                    struct kp_line_scratch *scratch,
                                    struct kp_msg *m)
{
    size_t tlen = jl->topic ? json_string_length(jl->topic)
                            : strlen(fixed_topic);

    /* Every byte is reserved up front so that no append reallocates and
     * moves what earlier appends pointed at; + 1: data must not be NULL,
     * or an empty value would read as null. */
    kp_buf_reset(&scratch->bytes);
    kp_buf_reserve(&scratch->bytes, tlen + jl->key.need + jl->value.need +
                                        jl->header_need + 1);
    if (jl->header_cnt > scratch->header_cap) {
        scratch->headers = kp_realloc(scratch->headers,
                                      jl->header_cnt *
                                          sizeof(*scratch->headers));
        scratch->header_cap = jl->header_cnt;
    }
    /* Even the listener's topic is copied: m borrows from scratch alone. */
    m->topic_len = tlen;
    m->topic = (const char *)kp_scratch_put(
        &scratch->bytes,
        jl->topic ? json_string_value(jl->topic) : fixed_topic, tlen);
    m->partition = jl->partition;
    m->timestamp = jl->timestamp;
    enum kp_reason rej =
        kp_jfield_emit(&jl->key, &scratch->bytes, &m->key, &m->key_len);
    if (rej == KP_REASON_NONE) {
        rej = kp_jfield_emit(&jl->value, &scratch->bytes, &m->value,
                             &m->value_len);
    }
    if (rej == KP_REASON_NONE && jl->header_cnt) {
        kp_jheaders_emit(jl->headers, scratch);
        m->headers = scratch->headers;
        m->header_cnt = jl->header_cnt;
    }
    return rej;
}

enum kp_reason kp_line_parse_json(const char *fixed_topic, const uint8_t *line,
                                  size_t len, struct kp_line_scratch *scratch,
                                  struct kp_msg *m)
{
    struct kp_jline jl = {.key = {KP_JF_NULL, NULL, 0},
                          .value = {KP_JF_NULL, NULL, 0},
                          .partition = -1,
                          .timestamp = -1};
    json_error_t jerr;
    enum kp_reason rej;

    kp_msg_clear(m);
    json_t *doc = json_loadb((const char *)line, len,
                             JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!doc) {
        return KP_REASON_BAD_JSON;
    }
    rej = json_is_object(doc) ? kp_jline_gather(doc, &jl) : KP_REASON_BAD_JSON;
    if (rej == KP_REASON_NONE) {
        rej = kp_jline_topic(&jl, fixed_topic);
    }
    if (rej == KP_REASON_NONE) {
        rej = kp_jline_emit(&jl, fixed_topic, scratch, m);
    }
    json_decref(doc);
    return rej;
}
