/*
 * fuzz_line.c - libFuzzer target for kp_line_parse on arbitrary bytes in
 * every format.
 *
 * Input: byte 0 picks the format and whether a fixed topic is given,
 * byte 1 is the separator, byte 2 seeds the chunk sizes; the rest is what
 * a client writes. It is cut into lines twice: once directly at '\n', and
 * once as a client's reads would deliver it (random-sized chunks,
 * accumulated, cut at '\n', a line over the maximum rejected and the rest
 * of it discarded up to the next '\n'). Both must see the same lines.
 *
 * Oracle for the text formats: an accepted line is rebuilt from its fields
 * and must equal the input byte for byte, with every field inside it.
 */
#include "kp_line.h"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_LINE 300

struct fuzz_tally {
    size_t accepted;
    size_t rejected[KP_REASON__COUNT];
    uint64_t digest; /* order-sensitive hash of the accepted fields */
};

static struct kp_line_scratch scratch;
static bool scratch_ready;

static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_line: %s\n", what);
    abort();
}

static uint64_t fuzz_mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;

    /* FNV-1a, with the length so that field boundaries count. */
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ULL;
    }
    return (h ^ n) * 0x100000001b3ULL;
}

static bool fuzz_inside(const void *p, size_t n, const uint8_t *base,
                        size_t len)
{
    const uint8_t *q = p;
    return q >= base && n <= len && (size_t)(q - base) <= len - n;
}

/*
 * Checks a text-format result against the line it came from: each field
 * is a view at the place it must be, and the fields with the separators
 * between them are the whole line.
 */
static void fuzz_check_text(enum kp_format fmt, uint8_t sep, const char *fixed,
                            const uint8_t *line, size_t len,
                            const struct kp_msg *m)
{
    size_t off = 0;

    if (!kp_topic_name_valid(m->topic, m->topic_len)) {
        fuzz_fail("invalid topic accepted");
    }
    if (m->partition != -1 || m->timestamp != -1 || m->header_cnt != 0) {
        fuzz_fail("text format set json-only fields");
    }
    if (fmt == KP_FMT_TOPIC_VALUE || fmt == KP_FMT_TOPIC_KEY_VALUE) {
        if ((const uint8_t *)m->topic != line || m->topic_len >= len ||
            line[m->topic_len] != sep || memchr(m->topic, sep, m->topic_len)) {
            fuzz_fail("topic is not the line up to the first separator");
        }
        off = m->topic_len + 1;
    } else if (m->topic != fixed) {
        fuzz_fail("fixed topic not used");
    }
    if (fmt == KP_FMT_KEY_VALUE || fmt == KP_FMT_TOPIC_KEY_VALUE) {
        size_t klen = m->key ? m->key_len : 0;

        if (m->key && (m->key != line + off || m->key_len == 0)) {
            fuzz_fail("key misplaced, or empty but not null");
        }
        if (off + klen >= len || line[off + klen] != sep ||
            memchr(line + off, sep, klen)) {
            fuzz_fail("key is not the field up to the next separator");
        }
        off += klen + 1;
    } else if (m->key) {
        fuzz_fail("key in a format without one");
    }
    if (m->value != line + off || m->value_len != len - off) {
        fuzz_fail("value is not the rest of the line");
    }
}

/* One framed line, as the client would hand it over. */
static void fuzz_line(enum kp_format fmt, uint8_t sep, const char *fixed,
                      const uint8_t *p, size_t len, struct fuzz_tally *t)
{
    static char *const allow[] = {"t", "a.*", "*x"};
    struct kp_msg m;
    enum kp_reason rej;
    uint8_t *line;

    if (len == 0) {
        return; /* empty lines are skipped */
    }
    if (len > FUZZ_MAX_LINE) {
        t->rejected[KP_REASON_TOO_LONG]++;
        return;
    }
    /* An exact-size copy, so that ASan sees any read past the end. */
    line = kp_malloc(len);
    memcpy(line, p, len);
    rej = kp_line_parse(fmt, sep, fixed, line, len, &scratch, &m);
    if ((unsigned)rej >= KP_REASON__COUNT) {
        fuzz_fail("reject reason out of range");
    }
    if (rej == KP_REASON_NONE) {
        if (fmt != KP_FMT_JSON) {
            fuzz_check_text(fmt, sep, fixed, line, len, &m);
        } else if (!kp_topic_name_valid(m.topic, m.topic_len) ||
                   !fuzz_inside(m.topic, m.topic_len, scratch.bytes.data,
                                scratch.bytes.len) ||
                   (m.value &&
                    !fuzz_inside(m.value, m.value_len, scratch.bytes.data,
                                 scratch.bytes.len))) {
            fuzz_fail("json: invalid topic, or result outside scratch");
        }
        (void)kp_topic_allowed(allow, KP_ARRAY_LEN(allow), m.topic,
                               m.topic_len);
        t->accepted++;
        t->digest = fuzz_mix(t->digest, m.topic, m.topic_len);
        t->digest = fuzz_mix(t->digest, m.key, m.key_len);
        t->digest = fuzz_mix(t->digest, m.value, m.value_len);
    } else {
        t->rejected[rej]++;
    }
    free(line);
}

static uint32_t fuzz_rand(uint32_t *s)
{
    /* xorshift32: deterministic chunk sizes for a given input. */
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_tally direct = {0}, framed = {0};
    enum kp_format fmt;
    const char *fixed;
    uint8_t sep;
    uint32_t seed;

    if (size < 3) {
        return 0;
    }
    if (!scratch_ready) {
        kp_line_scratch_init(&scratch);
        scratch_ready = true;
    }
    fmt = (enum kp_format)(data[0] % KP_FMT__COUNT);
    /*
     * Formats without a topic field always get one, as the configuration
     * guarantees; for the others bit 3 gives one (json uses it, the text
     * formats must ignore it).
     */
    fixed = "fixed.topic";
    if (fmt != KP_FMT_VALUE && fmt != KP_FMT_KEY_VALUE && !(data[0] & 0x08)) {
        fixed = NULL;
    }
    sep = data[1];
    seed = data[2] * 2654435761u + 1;
    data += 3;
    size -= 3;

    /* Directly at '\n'. */
    for (const uint8_t *p = data, *end = data + size; p < end;) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *stop = nl ? nl : end;

        fuzz_line(fmt, sep, fixed, p, (size_t)(stop - p), &direct);
        p = nl ? nl + 1 : end;
    }

    /* In chunks, as a client's reads deliver it. */
    uint8_t acc[FUZZ_MAX_LINE + 1];
    size_t acc_len = 0;
    bool discarding = false;

    for (size_t off = 0; off < size;) {
        size_t chunk = 1 + fuzz_rand(&seed) % 64;

        chunk = KP_MIN(chunk, size - off);
        for (size_t i = 0; i < chunk; i++) {
            uint8_t c = data[off + i];

            if (c == '\n') {
                if (!discarding) {
                    fuzz_line(fmt, sep, fixed, acc, acc_len, &framed);
                }
                discarding = false;
                acc_len = 0;
            } else if (discarding) {
                continue;
            } else if (acc_len == FUZZ_MAX_LINE) {
                /* One byte more than allowed: reject, drop the rest. */
                framed.rejected[KP_REASON_TOO_LONG]++;
                discarding = true;
                acc_len = 0;
            } else {
                acc[acc_len++] = c;
            }
        }
        off += chunk;
    }
    if (!discarding) {
        /* A last line without '\n' before EOF is a line like any other. */
        fuzz_line(fmt, sep, fixed, acc, acc_len, &framed);
    }

    if (memcmp(&direct, &framed, sizeof(direct)) != 0) {
        fuzz_fail("framed lines differ from direct lines");
    }
    return 0;
}
