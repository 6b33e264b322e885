/*
 * kp_conf_value.c - the value syntax the configuration shares with the
 * rest of kproxyd: topic names (the one rule for files and lines) and
 * patterns, host:port (the one parser of broker addresses), and the small
 * helpers every option type uses for key paths and messages.
 */
#include "kp_conf_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

/* snprintf for key paths, which are only for messages: truncation is ok. */
void kp_keyf(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

/* "prefix.key", or "key" at the top level. */
void kp_key_join(char *buf, size_t n, const char *prefix, const char *key)
{
    if (prefix && *prefix) {
        kp_keyf(buf, n, "%s.%s", prefix, key);
    } else {
        kp_keyf(buf, n, "%s", key);
    }
}

const char *kp_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/* "KEY: expected WHAT, got TYPE": never the value, which may be secret. */
void kp_type_error(struct kp_conf_errors *errs, const char *key,
                   const char *expected, const json_t *v)
{
    kp_conf_errors_add(errs, "%s: expected %s, got %s", key, expected,
                       kp_json_type_name(v));
}

/* Whole-string decimal integer (leading/trailing blanks refused). */
int kp_parse_i64(const char *s, int64_t *out)
{
    char *end;
    if (*s == '\0' || *s == ' ' || *s == '\t') {
        return KP_ERROR;
    }
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return KP_ERROR;
    }
    *out = v;
    return KP_OK;
}

json_t *kp_json_child_obj(json_t *parent, const char *name, bool nullable)
{
    json_t *v = json_object_get(parent, name);
    if (!v || (nullable && json_is_null(v))) {
        v = json_object();
        json_object_set_new(parent, name, v);
    }
    return json_is_object(v) ? v : NULL;
}

/* ------------------------------------------------------------------ */
/* Topic names                                                          */

/* Bytes allowed in a topic name: [A-Za-z0-9._-]. A table, because every
 * client line's topic goes through it. */
static const bool kp_topic_chars[256] = {
    ['.'] = true, ['_'] = true, ['-'] = true, ['0'] = true, ['1'] = true,
    ['2'] = true, ['3'] = true, ['4'] = true, ['5'] = true, ['6'] = true,
    ['7'] = true, ['8'] = true, ['9'] = true, ['A'] = true, ['B'] = true,
    ['C'] = true, ['D'] = true, ['E'] = true, ['F'] = true, ['G'] = true,
    ['H'] = true, ['I'] = true, ['J'] = true, ['K'] = true, ['L'] = true,
    ['M'] = true, ['N'] = true, ['O'] = true, ['P'] = true, ['Q'] = true,
    ['R'] = true, ['S'] = true, ['T'] = true, ['U'] = true, ['V'] = true,
    ['W'] = true, ['X'] = true, ['Y'] = true, ['Z'] = true, ['a'] = true,
    ['b'] = true, ['c'] = true, ['d'] = true, ['e'] = true, ['f'] = true,
    ['g'] = true, ['h'] = true, ['i'] = true, ['j'] = true, ['k'] = true,
    ['l'] = true, ['m'] = true, ['n'] = true, ['o'] = true, ['p'] = true,
    ['q'] = true, ['r'] = true, ['s'] = true, ['t'] = true, ['u'] = true,
    ['v'] = true, ['w'] = true, ['x'] = true, ['y'] = true, ['z'] = true,
};

/*
 * [A-Za-z0-9._-]{1,249}, and not "." or ".." (Kafka refuses those: they
 * would be directory names in its log dirs). name[0..len) need not be
 * NUL-terminated; a NUL inside is invalid.
 */
bool kp_topic_name_valid(const char *name, size_t len)
{
    const uint8_t *p = (const uint8_t *)name;

    if (len == 0 || len > KP_TOPIC_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!kp_topic_chars[p[i]]) {
            return false;
        }
    }
    return !(p[0] == '.' && (len == 1 || (len == 2 && p[1] == '.')));
}

/* An exact topic name, or a prefix (possibly empty) followed by '*'. */
bool kp_topic_pattern_valid(const char *s)
{
    size_t len = strlen(s);
    if (len > 0 && s[len - 1] == '*') {
        for (size_t i = 0; i + 1 < len; i++) {
            if (!kp_topic_chars[(uint8_t)s[i]]) {
                return false;
            }
        }
        return len <= KP_TOPIC_NAME_MAX + 1;
    }
    return kp_topic_name_valid(s, len);
}

/* A user or group: a number below 2^32-1, or a name of [A-Za-z0-9._-]
 * (not starting with '-'), up to 32 bytes, perhaps ending in '$'. */
bool kp_idname_valid(const char *s)
{
    size_t len = strlen(s);
    int64_t x;
    if (kp_parse_i64(s, &x) == KP_OK) {
        return x >= 0 && x < (int64_t)UINT32_MAX;
    }
    if (len > 0 && s[len - 1] == '$') {
        len--;
    }
    if (len == 0 || len > 32 || s[0] == '-') {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!kp_topic_chars[(uint8_t)s[i]]) {
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* host:port                                                            */

/* The port part: 1..65535, digits only. */
static int kp_port_parse(const char *port)
{
    long v = 0;
    if (*port == '\0' || strlen(port) > 5) {
        return -1;
    }
    for (const char *p = port; *p; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        v = v * 10 + (*p - '0');
    }
    return v >= 1 && v <= 65535 ? (int)v : -1;
}

const char *kp_hostport_why(const char *s, struct kp_hostport *out)
{
    const char *host = s, *colon;
    size_t host_len;

    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') {
            return " is not [host]:port";
        }
        host = s + 1;
        host_len = (size_t)(rb - host);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) {
            return " is not host:port";
        }
        if (memchr(s, ':', (size_t)(colon - s))) {
            return ": an IPv6 address needs brackets, [addr]:port";
        }
        host_len = (size_t)(colon - s);
    }
    if (host_len == 0) {
        return " has an empty host";
    }
    if (host_len > 255) {
        return ": the host is longer than 255 bytes";
    }
    for (size_t i = 0; i < host_len; i++) {
        if ((unsigned char)host[i] <= ' ' || host[i] == 0x7f ||
            host[i] == '[' || host[i] == ']') {
            return ": blank, control or bracket character in the host";
        }
    }
    int port = kp_port_parse(colon + 1);
    if (port < 0) {
        return ": the port must be 1..65535";
    }
    if (out) {
        out->host = kp_strndup(host, host_len);
        out->port = port;
    }
    return NULL;
}

/*
 * "host:port" or "[v6addr]:port", port 1..65535: the one parser of broker
 * addresses. KP_OK with out->host malloc'd (out may be NULL), else
 * KP_ERROR and *out untouched.
 */
int kp_hostport_parse(const char *s, struct kp_hostport *out)
{
    return kp_hostport_why(s, out) ? KP_ERROR : KP_OK;
}

/* Frees the host; hp is then empty. */
void kp_hostport_deinit(struct kp_hostport *hp)
{
    free(hp->host);
    hp->host = NULL;
    hp->port = 0;
}

char *kp_hostport_format(const struct kp_hostport *hp)
{
    bool v6 = strchr(hp->host, ':') != NULL;
    size_t n = strlen(hp->host) + 10;
    char *s = kp_malloc(n);
    snprintf(s, n, v6 ? "[%s]:%d" : "%s:%d", hp->host, hp->port);
    return s;
}
