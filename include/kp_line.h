/*
 * kp_line.h - parsing one client line into a message: the text formats
 * (views into the line itself, no copy) and the json format (decoded into
 * caller-owned scratch space). Framing (finding '\n') is the client's job;
 * this module sees one line without its '\n'.
 */
#ifndef KP_LINE_H
#define KP_LINE_H

#include "kp_buf.h"
#include "kp_conf.h"
#include "kp_reason.h"


struct kp_header {
    const uint8_t *name; /* borrowed */
    size_t name_len;
    const uint8_t *value; /* borrowed; NULL = null value */
    size_t value_len;
};

/*
 * A parsed message. Every pointer is borrowed: from the line for the text
 * formats, from the kp_line_scratch for json. Valid until the line's buffer
 * or the scratch changes.
 */
struct kp_msg {
    const char *topic; /* not NUL-terminated */
    size_t topic_len;
    const uint8_t *key; /* NULL = null key */
    size_t key_len;
    const uint8_t *value; /* NULL = null value */
    size_t value_len;
    int32_t partition; /* -1 = use the partitioner */
    int64_t timestamp; /* -1 = time kproxyd read the line */
    const struct kp_header *headers;
    size_t header_cnt;
};

/* Decoded bytes and header array for the json format, reused per line. */
struct kp_line_scratch {
    struct kp_buf bytes;        /* owned */
    struct kp_header *headers;  /* owned */
    size_t header_cap;
};
void kp_line_scratch_init(struct kp_line_scratch *s);
void kp_line_scratch_deinit(struct kp_line_scratch *s);

/* Topic names: kp_topic_name_valid() in kp_conf.h, the one rule that the
 * configuration and every line share. */

/*
 * Parses one line (without its '\n', never empty) in `fmt`.
 * fixed_topic: the listener's topic for formats without a topic field (and
 * for json lines without "topic"), else NULL. `sep` is the field separator.
 * Returns KP_REASON_NONE and fills *m, or the reason the line is rejected.
 * Never reads outside line[0..len). The partition range is not checked here
 * (the topic's partition count is the router's knowledge).
 */
enum kp_reason kp_line_parse(enum kp_format fmt, uint8_t sep,
                             const char *fixed_topic, const uint8_t *line,
                             size_t len, struct kp_line_scratch *scratch,
                             struct kp_msg *m);

/* The json format alone (also a fuzz entry point). */
enum kp_reason kp_line_parse_json(const char *fixed_topic, const uint8_t *line,
                                  size_t len, struct kp_line_scratch *scratch,
                                  struct kp_msg *m);

/* allow_topics matching: exact names, or prefixes ending in '*'. */
bool kp_topic_allowed(char *const *allow, size_t cnt, const char *topic,
                      size_t topic_len);

#endif
