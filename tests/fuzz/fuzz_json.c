/*
 * fuzz_json.c - libFuzzer target for kp_line_parse_json.
 *
 * Input: byte 0 picks no fixed topic, or one of two fixed topics; the rest
 * is json-format lines, cut at '\n' as the client does (so a line never
 * holds one, and one seed file covers many cases). Oracle: an accepted
 * message is written back as a json line (key and value in base64, headers
 * as pairs), parsed again, and must come out identical; every result
 * points into the scratch.
 */
#include "kp_line.h"

#include <jansson.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct kp_line_scratch scratch, scratch2;
static bool scratch_ready;

static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_json: %s\n", what);
    abort();
}

static bool fuzz_inside(const void *p, size_t n, const struct kp_buf *b)
{
    const uint8_t *q = p;
    return q >= b->data && n <= b->len && (size_t)(q - b->data) <= b->len - n;
}

static bool fuzz_same(const void *a, size_t an, const void *b, size_t bn)
{
    if ((a == NULL) != (b == NULL) || an != bn) {
        return false;
    }
    return an == 0 || memcmp(a, b, an) == 0;
}

static json_t *fuzz_b64(const uint8_t *p, size_t n)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out;
    size_t o = 0;
    json_t *j;

    if (!p) {
        return json_null();
    }
    out = kp_malloc((n + 2) / 3 * 4 + 1);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        size_t left = n - i;

        if (left > 1) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (left > 2) {
            v |= p[i + 2];
        }
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        out[o++] = left > 1 ? tbl[v >> 6 & 63] : '=';
        out[o++] = left > 2 ? tbl[v & 63] : '=';
    }
    j = json_stringn(out, o);
    free(out);
    return j;
}

static void fuzz_check(const char *fixed, const struct kp_msg *m)
{
    const struct kp_buf *b = &scratch.bytes;

    if (!kp_topic_name_valid(m->topic, m->topic_len) ||
        !fuzz_inside(m->topic, m->topic_len, b)) {
        fuzz_fail("bad topic accepted or outside scratch");
    }
    if (fixed && !fuzz_same(m->topic, m->topic_len, fixed, strlen(fixed))) {
        fuzz_fail("topic differs from the fixed topic");
    }
    if ((m->key && !fuzz_inside(m->key, m->key_len, b)) ||
        (!m->key && m->key_len) ||
        (m->value && !fuzz_inside(m->value, m->value_len, b)) ||
        (!m->value && m->value_len)) {
        fuzz_fail("key or value outside scratch");
    }
    if (m->partition < -1 || m->timestamp < -1) {
        fuzz_fail("partition or timestamp out of range");
    }
    if (m->header_cnt && m->headers != scratch.headers) {
        fuzz_fail("headers not in scratch");
    }
    for (size_t i = 0; i < m->header_cnt; i++) {
        const struct kp_header *h = &m->headers[i];
        if (!fuzz_inside(h->name, h->name_len, b) ||
            (h->value && !fuzz_inside(h->value, h->value_len, b)) ||
            (!h->value && h->value_len)) {
            fuzz_fail("header outside scratch");
        }
    }
}

/* Writes m back as a json line, parses it again, compares. */
static void fuzz_round_trip(const char *fixed, const struct kp_msg *m)
{
    json_t *o = json_object();
    json_t *hs = json_array();
    struct kp_msg m2;
    enum kp_reason rej;
    char *text;

    json_object_set_new(o, "topic", json_stringn(m->topic, m->topic_len));
    json_object_set_new(o, "key_base64", fuzz_b64(m->key, m->key_len));
    json_object_set_new(o, "value_base64", fuzz_b64(m->value, m->value_len));
    if (m->partition >= 0) {
        json_object_set_new(o, "partition", json_integer(m->partition));
    }
    if (m->timestamp >= 0) {
        json_object_set_new(o, "timestamp", json_integer(m->timestamp));
    }
    for (size_t i = 0; i < m->header_cnt; i++) {
        const struct kp_header *h = &m->headers[i];
        json_t *v = h->value
                        ? json_stringn((const char *)h->value, h->value_len)
                        : json_null();
        json_t *name = json_stringn((const char *)h->name, h->name_len);

        if (!v || !name) {
            fuzz_fail("header is not UTF-8");
        }
        json_array_append_new(hs, json_pack("[oo]", name, v));
    }
    json_object_set_new(o, "headers", hs);
    text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text) {
        fuzz_fail("cannot write the message back");
    }
    rej = kp_line_parse_json(fixed, (const uint8_t *)text, strlen(text),
                             &scratch2, &m2);
    free(text);
    if (rej != KP_REASON_NONE) {
        fuzz_fail("written-back message rejected");
    }
    if (!fuzz_same(m->topic, m->topic_len, m2.topic, m2.topic_len) ||
        !fuzz_same(m->key, m->key_len, m2.key, m2.key_len) ||
        !fuzz_same(m->value, m->value_len, m2.value, m2.value_len) ||
        m->partition != m2.partition || m->timestamp != m2.timestamp ||
        m->header_cnt != m2.header_cnt) {
        fuzz_fail("round trip differs");
    }
    for (size_t i = 0; i < m->header_cnt; i++) {
        const struct kp_header *a = &m->headers[i], *b = &m2.headers[i];
        if (!fuzz_same(a->name, a->name_len, b->name, b->name_len) ||
            !fuzz_same(a->value, a->value_len, b->value, b->value_len)) {
            fuzz_fail("round trip differs in a header");
        }
    }
}

static void fuzz_one(const char *fixed, const uint8_t *p, size_t len)
{
    struct kp_msg m;
    enum kp_reason rej;
    uint8_t *line;

    /* An exact-size copy, so that ASan sees any read past the end. */
    line = kp_malloc(len);
    memcpy(line, p, len);
    rej = kp_line_parse_json(fixed, line, len, &scratch, &m);
    if ((unsigned)rej >= KP_REASON__COUNT) {
        fuzz_fail("reject reason out of range");
    }
    if (rej == KP_REASON_NONE) {
        fuzz_check(fixed, &m);
        fuzz_round_trip(fixed, &m);
    }
    free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const fixed_topics[] = {NULL, "t", "fixed.topic"};
    const char *fixed;

    if (size < 1) {
        return 0;
    }
    if (!scratch_ready) {
        kp_line_scratch_init(&scratch);
        kp_line_scratch_init(&scratch2);
        scratch_ready = true;
    }
    fixed = fixed_topics[data[0] % KP_ARRAY_LEN(fixed_topics)];
    for (const uint8_t *p = data + 1, *end = data + size; p < end;) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *stop = nl ? nl : end;

        if (stop > p) {
            fuzz_one(fixed, p, (size_t)(stop - p));
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}
