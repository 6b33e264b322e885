/*
 * kp_conf.c - the configuration: the option table, JSON parsing (jansson),
 * -X overrides, validation, the -t dump and the restart diff.
 *
 * One static option table drives all of it (DESIGN 17):
 *
 *   kp_top_opts ──┬─ scalars: brokers, client_id, buffer_bytes, ...
 *                 ├─ "producer"  ──────────▶ kp_producer_opts
 *                 ├─ "topics"    ─▶ NAME ──▶ kp_producer_opts
 *                 └─ "listeners" ─▶ [i] ───▶ kp_listener_opts
 *
 * Loading goes file → json_t tree → each -X override converted by its key's
 * type and written into the tree → the tree parsed into a struct kp_conf
 * that starts from the table's defaults → cross-key rules (idempotence,
 * listener topics, sizes). Every problem is collected, none stops the rest.
 * -t walks the same table back to JSON, so its output loads to an equal
 * configuration. A loaded configuration is immutable and reference counted.
 */
#include "kp_conf.h"

#include "kp_compress.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>

#include "kp_log.h"

const char *const kp_format_names[KP_FMT__COUNT] = {
    "value", "key,value", "topic,value", "topic,key,value", "json"};
const char *const kp_codec_names[KP_CODEC__COUNT] = {"none", "gzip", "snappy",
                                                     "lz4", "zstd"};
const char *const kp_partitioner_names[KP_PART__COUNT] = {"murmur2", "fnv1a",
                                                          "crc32"};

/* Enum fields are read and written through int pointers by the table. */
_Static_assert(sizeof(enum kp_format) == sizeof(int), "enum size");
_Static_assert(sizeof(enum kp_codec) == sizeof(int), "enum size");
_Static_assert(sizeof(enum kp_partitioner_kind) == sizeof(int), "enum size");

#define KP_CONF_DEFAULT_SOCK "/run/kproxyd/kproxyd.sock"
#define KP_CONF_DEFAULT_CONTROL "/run/kproxyd/control.sock"
/* Kafka keeps order for at most 5 in-flight idempotent batches. */
#define KP_CONF_IDEMP_MAX_IN_FLIGHT 5
#define KP_CONF_KEY_LEN 512 /* room for a key path in messages */
#define KP_CONF_MAX_LISTENERS 1024

enum kp_opt_type {
    KP_OPT_INT,       /* int, [min, max] */
    KP_OPT_INT64,     /* int64_t, [min, max] */
    KP_OPT_BOOL,      /* bool */
    KP_OPT_STR,       /* char *, owned */
    KP_OPT_NSTR,      /* char *, owned, JSON null = NULL */
    KP_OPT_ENUM,      /* int-sized enum, by names[] */
    KP_OPT_ACKS,      /* int: "all" = -1, 0, 1 */
    KP_OPT_LEVEL,     /* int: codec level, null = KP_LEVEL_DEFAULT */
    KP_OPT_STRV,      /* char ** + size_t count at cnt_off */
    KP_OPT_UINTV,     /* uint32_t * + size_t count at cnt_off */
    KP_OPT_SEP,       /* uint8_t: a one-byte string */
    KP_OPT_MODE,      /* unsigned: octal string "0660" or integer */
    KP_OPT_PRODUCER,  /* struct kp_producer_conf by kp_producer_opts */
    KP_OPT_TOPICS,    /* NAME -> kp_producer_opts, over the producer's */
    KP_OPT_LISTENERS, /* array of kp_listener_opts */
};

#define KP_OPTF_REQUIRED 0x01u /* absent is an error */
#define KP_OPTF_NULLABLE 0x02u /* arrays: JSON null = NULL (unset) */
#define KP_OPTF_LIVE 0x04u     /* a reload applies it without a restart */
#define KP_OPTF_NONEMPTY 0x08u /* strings, arrays: not empty */
#define KP_OPTF_HOSTPORT 0x10u /* string elements: "host:port" */
#define KP_OPTF_TOPIC 0x20u    /* a topic name */
#define KP_OPTF_TOPICPAT 0x40u /* string elements: topic or "prefix*" */

struct kp_opt {
    const char *name;
    enum kp_opt_type type;
    unsigned flags;
    size_t off;     /* of the field in its struct */
    size_t cnt_off; /* arrays: of the size_t count */
    int64_t min, max;
    int64_t def;         /* numeric, bool, enum, separator, mode defaults */
    const char *def_str; /* string defaults (NULL: none) */
    const char *const *names;
    int name_cnt;
};

/* Initializers on one line each read better than clang-format's layout. */
/* clang-format off */
#define KP_O(s, f, t, fl)                                                      \
    .name = #f, .type = (t), .flags = (fl), .off = offsetof(struct s, f)
#define KP_INT(s, f, lo, hi, d, fl)                                            \
    {KP_O(s, f, KP_OPT_INT, fl), .min = (lo), .max = (hi), .def = (d)}
#define KP_INT64(s, f, lo, hi, d, fl)                                          \
    {KP_O(s, f, KP_OPT_INT64, fl), .min = (lo), .max = (hi), .def = (d)}
#define KP_BOOL(s, f, d, fl) {KP_O(s, f, KP_OPT_BOOL, fl), .def = (d)}
#define KP_STR(s, f, d, fl) {KP_O(s, f, KP_OPT_STR, fl), .def_str = (d)}
#define KP_NSTR(s, f, d, fl) {KP_O(s, f, KP_OPT_NSTR, fl), .def_str = (d)}
#define KP_ENUM(s, f, tbl, n, d, fl)                                           \
    {KP_O(s, f, KP_OPT_ENUM, fl), .names = (tbl), .name_cnt = (n),            \
     .def = (d)}
#define KP_VEC(s, f, c, t, fl)                                                 \
    {KP_O(s, f, t, fl), .cnt_off = offsetof(struct s, c)}
/* clang-format on */

static const struct kp_opt kp_producer_opts[] = {
    {KP_O(kp_producer_conf, acks, KP_OPT_ACKS, 0), .def = -1},
    /* default resolved after parsing: acks == all */
    KP_BOOL(kp_producer_conf, idempotence, true, 0),
    KP_INT(kp_producer_conf, linger_ms, 0, INT_MAX, 5, 0),
    KP_INT(kp_producer_conf, batch_bytes, 1, INT_MAX, 1048576, 0),
    KP_INT(kp_producer_conf, batch_messages, 1, INT_MAX, 10000, 0),
    KP_ENUM(kp_producer_conf, compression, kp_codec_names, KP_CODEC__COUNT,
            KP_CODEC_NONE, 0),
    {KP_O(kp_producer_conf, compression_level, KP_OPT_LEVEL, 0),
     .def = KP_LEVEL_DEFAULT},
    KP_ENUM(kp_producer_conf, partitioner, kp_partitioner_names, KP_PART__COUNT,
            KP_PART_MURMUR2, 0),
    KP_INT(kp_producer_conf, max_in_flight, 1, INT_MAX, 5, 0),
    KP_INT(kp_producer_conf, request_timeout_ms, 1, INT_MAX, 30000, 0),
    KP_INT(kp_producer_conf, delivery_timeout_ms, 1, INT_MAX, 120000, 0),
    /* 0 would retry in a tight loop: the doubling never leaves 0 */
    KP_INT(kp_producer_conf, retry_backoff_ms, 1, INT_MAX, 100, 0),
    KP_INT(kp_producer_conf, retry_backoff_max_ms, 1, INT_MAX, 1000, 0),
    KP_INT(kp_producer_conf, message_max_bytes, 1, INT_MAX, 1048576, 0),
};

static const struct kp_opt kp_listener_opts[] = {
    KP_STR(kp_listener_conf, path, NULL, KP_OPTF_REQUIRED | KP_OPTF_NONEMPTY),
    KP_ENUM(kp_listener_conf, format, kp_format_names, KP_FMT__COUNT,
            KP_FMT_TOPIC_VALUE, 0),
    KP_NSTR(kp_listener_conf, topic, NULL, KP_OPTF_TOPIC),
    {KP_O(kp_listener_conf, separator, KP_OPT_SEP, 0), .def = ' '},
    {KP_O(kp_listener_conf, mode, KP_OPT_MODE, 0), .def = 0660},
    KP_VEC(kp_listener_conf, allow_uids, allow_uid_cnt, KP_OPT_UINTV,
           KP_OPTF_NULLABLE),
    KP_VEC(kp_listener_conf, allow_gids, allow_gid_cnt, KP_OPT_UINTV,
           KP_OPTF_NULLABLE),
    KP_VEC(kp_listener_conf, allow_topics, allow_topic_cnt, KP_OPT_STRV,
           KP_OPTF_NULLABLE | KP_OPTF_TOPICPAT),
    KP_BOOL(kp_listener_conf, peer_headers, false, 0),
};

/* In SPEC.md's order, which is also -t's. */
static const struct kp_opt kp_top_opts[] = {
    KP_VEC(kp_conf, brokers, broker_cnt, KP_OPT_STRV,
           KP_OPTF_REQUIRED | KP_OPTF_NONEMPTY | KP_OPTF_HOSTPORT),
    KP_STR(kp_conf, client_id, "kproxyd", 0),
    KP_VEC(kp_conf, listeners, listener_cnt, KP_OPT_LISTENERS, 0),
    {KP_O(kp_conf, producer, KP_OPT_PRODUCER, KP_OPTF_LIVE)},
    KP_VEC(kp_conf, topics, topic_cnt, KP_OPT_TOPICS, KP_OPTF_LIVE),
    KP_INT64(kp_conf, buffer_bytes, 1, INT64_MAX, 268435456, KP_OPTF_LIVE),
    KP_INT(kp_conf, metadata_refresh_ms, 1, INT_MAX, 300000, 0),
    KP_NSTR(kp_conf, control, KP_CONF_DEFAULT_CONTROL, KP_OPTF_NONEMPTY),
    KP_NSTR(kp_conf, dead_letter, NULL, KP_OPTF_NONEMPTY),
    KP_INT(kp_conf, shutdown_timeout_ms, 0, INT_MAX, 30000, 0),
    KP_INT(kp_conf, max_clients, 1, INT_MAX, 10000, 0),
    KP_BOOL(kp_conf, auto_create_topics, false, 0),
    KP_ENUM(kp_conf, log_level, kp_log_level_names, KP_LOG__COUNT, KP_LOG_INFO,
            KP_OPTF_LIVE),
};

#define KP_NPRODUCER KP_ARRAY_LEN(kp_producer_opts)
#define KP_NLISTENER KP_ARRAY_LEN(kp_listener_opts)
#define KP_NTOP KP_ARRAY_LEN(kp_top_opts)
_Static_assert(KP_ARRAY_LEN(kp_producer_opts) <= 32, "set masks are 32-bit");

/* Field access through the table. */
#define KP_FIELD(base, o, type) ((type *)(void *)((char *)(base) + (o)->off))
#define KP_CFIELD(base, o, type)                                               \
    ((type const *)(const void *)((const char *)(base) + (o)->off))
#define KP_COUNT(base, o) ((size_t *)(void *)((char *)(base) + (o)->cnt_off))
#define KP_CCOUNT(base, o)                                                     \
    ((const size_t *)(const void *)((const char *)(base) + (o)->cnt_off))

/* ------------------------------------------------------------------ */
/* Errors                                                               */

/*
 * Appends one printf-formatted message to e (the message is owned by e).
 */
void kp_conf_errors_add(struct kp_conf_errors *e, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
        small[0] = '\0';
    }
    char *m;
    if ((size_t)n < sizeof(small)) {
        m = kp_strndup(small, (size_t)n);
    } else {
        m = kp_malloc((size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(m, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    e->msgs = kp_realloc(e->msgs, (e->cnt + 1) * sizeof(*e->msgs));
    e->msgs[e->cnt++] = m;
}

/* Frees every message; e is empty (and reusable) afterwards. */
void kp_conf_errors_deinit(struct kp_conf_errors *e)
{
    for (size_t i = 0; i < e->cnt; i++) {
        free(e->msgs[i]);
    }
    free(e->msgs);
    e->msgs = NULL;
    e->cnt = 0;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

/* snprintf for key paths, which are only for messages: truncation is ok. */
static void kp_keyf(char *buf, size_t n, const char *fmt, ...) KP_PRINTF(3, 4);
static void kp_keyf(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

static void kp_key_join(char *buf, size_t n, const char *prefix,
                        const char *key)
{
    if (prefix && *prefix) {
        kp_keyf(buf, n, "%s.%s", prefix, key);
    } else {
        kp_keyf(buf, n, "%s", key);
    }
}

static const struct kp_opt *kp_opt_find(const struct kp_opt *opts, size_t n,
                                        const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(opts[i].name) == len &&
            memcmp(opts[i].name, name, len) == 0) {
            return &opts[i];
        }
    }
    return NULL;
}

static size_t kp_opt_index(const struct kp_opt *opts, size_t n,
                           const char *name)
{
    const struct kp_opt *o = kp_opt_find(opts, n, name, strlen(name));
    kp_assert(o != NULL);
    return (size_t)(o - opts);
}

static const char *kp_json_type_name(const json_t *v)
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

static void kp_type_error(struct kp_conf_errors *errs, const char *key,
                          const char *expected, const json_t *v)
{
    kp_conf_errors_add(errs, "%s: expected %s, got %s", key, expected,
                       kp_json_type_name(v));
}

static bool kp_topic_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
}

/* [A-Za-z0-9._-]{1,249}, and not "." or ".." (Kafka refuses those). */
static bool kp_conf_topic_valid(const char *s, size_t len)
{
    if (len == 0 || len > 249) {
        return false;
    }
    if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.')) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!kp_topic_char((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* An exact topic name, or a prefix (possibly empty) followed by '*'. */
static bool kp_conf_topic_pattern_valid(const char *s)
{
    size_t len = strlen(s);
    if (len > 0 && s[len - 1] == '*') {
        for (size_t i = 0; i + 1 < len; i++) {
            if (!kp_topic_char((unsigned char)s[i])) {
                return false;
            }
        }
        return len <= 250;
    }
    return kp_conf_topic_valid(s, len);
}

/* "host:port" or "[v6addr]:port", port 1..65535. */
static void kp_check_hostport(const char *s, const char *key,
                              struct kp_conf_errors *errs)
{
    const char *colon;
    size_t host_len;

    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') {
            kp_conf_errors_add(errs, "%s: \"%s\" is not [host]:port", key, s);
            return;
        }
        host_len = (size_t)(rb - s - 1);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) {
            kp_conf_errors_add(errs, "%s: \"%s\" is not host:port", key, s);
            return;
        }
        if (memchr(s, ':', (size_t)(colon - s))) {
            kp_conf_errors_add(errs,
                               "%s: \"%s\": an IPv6 address needs brackets, "
                               "[addr]:port",
                               key, s);
            return;
        }
        host_len = (size_t)(colon - s);
    }
    if (host_len == 0) {
        kp_conf_errors_add(errs, "%s: \"%s\" has an empty host", key, s);
        return;
    }
    for (const char *p = s; p < colon; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            kp_conf_errors_add(errs,
                               "%s: \"%s\": blank or control character "
                               "in the host",
                               key, s);
            return;
        }
    }
    const char *port = colon + 1;
    long v = 0;
    if (*port == '\0' || strlen(port) > 5) {
        v = -1;
    }
    for (const char *p = port; v >= 0 && *p; p++) {
        if (*p < '0' || *p > '9') {
            v = -1;
        } else {
            v = v * 10 + (*p - '0');
        }
    }
    if (v < 1 || v > 65535) {
        kp_conf_errors_add(errs, "%s: \"%s\": the port must be 1..65535", key,
                           s);
    }
}

/* Whole-string decimal integer (leading/trailing blanks refused). */
static int kp_parse_i64(const char *s, int64_t *out)
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

/* ------------------------------------------------------------------ */
/* Defaults and freeing                                                 */

static void kp_opts_defaults(const struct kp_opt *opts, size_t n, void *base);

static void kp_listener_default(struct kp_listener_conf *l, const char *path)
{
    memset(l, 0, sizeof(*l));
    kp_opts_defaults(kp_listener_opts, KP_NLISTENER, l);
    if (path) {
        l->path = kp_strdup(path);
    }
}

static void kp_opts_defaults(const struct kp_opt *opts, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++) {
        const struct kp_opt *o = &opts[i];
        switch (o->type) {
        case KP_OPT_INT:
        case KP_OPT_ACKS:
        case KP_OPT_LEVEL:
        case KP_OPT_ENUM:
            *KP_FIELD(base, o, int) = (int)o->def;
            break;
        case KP_OPT_INT64:
            *KP_FIELD(base, o, int64_t) = o->def;
            break;
        case KP_OPT_BOOL:
            *KP_FIELD(base, o, bool) = o->def != 0;
            break;
        case KP_OPT_STR:
        case KP_OPT_NSTR:
            *KP_FIELD(base, o, char *) =
                o->def_str ? kp_strdup(o->def_str) : NULL;
            break;
        case KP_OPT_SEP:
            *KP_FIELD(base, o, uint8_t) = (uint8_t)o->def;
            break;
        case KP_OPT_MODE:
            *KP_FIELD(base, o, unsigned) = (unsigned)o->def;
            break;
        case KP_OPT_STRV:
        case KP_OPT_UINTV:
        case KP_OPT_TOPICS:
            *KP_FIELD(base, o, void *) = NULL;
            *KP_COUNT(base, o) = 0;
            break;
        case KP_OPT_PRODUCER:
            kp_opts_defaults(kp_producer_opts, KP_NPRODUCER,
                             KP_FIELD(base, o, struct kp_producer_conf));
            break;
        case KP_OPT_LISTENERS: {
            struct kp_listener_conf *l = kp_calloc(1, sizeof(*l));
            kp_listener_default(l, KP_CONF_DEFAULT_SOCK);
            *KP_FIELD(base, o, struct kp_listener_conf *) = l;
            *KP_COUNT(base, o) = 1;
            break;
        }
        }
    }
}

static void kp_opts_free(const struct kp_opt *opts, size_t n, void *base);

static void kp_opt_free(const struct kp_opt *o, void *base)
{
    switch (o->type) {
    case KP_OPT_STR:
    case KP_OPT_NSTR:
        free(*KP_FIELD(base, o, char *));
        *KP_FIELD(base, o, char *) = NULL;
        break;
    case KP_OPT_STRV: {
        char **v = *KP_FIELD(base, o, char **);
        for (size_t i = 0; v && i < *KP_COUNT(base, o); i++) {
            free(v[i]);
        }
        free(v);
        *KP_FIELD(base, o, char **) = NULL;
        *KP_COUNT(base, o) = 0;
        break;
    }
    case KP_OPT_UINTV:
        free(*KP_FIELD(base, o, uint32_t *));
        *KP_FIELD(base, o, uint32_t *) = NULL;
        *KP_COUNT(base, o) = 0;
        break;
    case KP_OPT_TOPICS: {
        struct kp_topic_conf *t = *KP_FIELD(base, o, struct kp_topic_conf *);
        for (size_t i = 0; i < *KP_COUNT(base, o); i++) {
            free(t[i].name);
        }
        free(t);
        *KP_FIELD(base, o, struct kp_topic_conf *) = NULL;
        *KP_COUNT(base, o) = 0;
        break;
    }
    case KP_OPT_LISTENERS: {
        struct kp_listener_conf *l =
            *KP_FIELD(base, o, struct kp_listener_conf *);
        for (size_t i = 0; i < *KP_COUNT(base, o); i++) {
            kp_opts_free(kp_listener_opts, KP_NLISTENER, &l[i]);
        }
        free(l);
        *KP_FIELD(base, o, struct kp_listener_conf *) = NULL;
        *KP_COUNT(base, o) = 0;
        break;
    }
    default:
        break;
    }
}

static void kp_opts_free(const struct kp_opt *opts, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++) {
        kp_opt_free(&opts[i], base);
    }
}

/* ------------------------------------------------------------------ */
/* JSON → struct                                                        */

struct kp_parse {
    struct kp_conf_errors *errs;
    struct kp_conf *conf;  /* borrowed: the one being built */
    uint32_t producer_set; /* keys the `producer` section gave */
};

static uint32_t kp_opts_parse(const struct kp_opt *opts, size_t n, void *base,
                              json_t *obj, const char *prefix,
                              struct kp_parse *ps);

static void kp_parse_int(const struct kp_opt *o, void *base, json_t *v,
                         const char *key, struct kp_conf_errors *errs)
{
    if (!json_is_integer(v)) {
        kp_type_error(errs, key, "an integer", v);
        return;
    }
    json_int_t x = json_integer_value(v);
    if (x < o->min || x > o->max) {
        if (o->max == INT_MAX || o->max == INT64_MAX) {
            kp_conf_errors_add(errs, "%s: must be at least %lld, got %lld", key,
                               (long long)o->min, (long long)x);
        } else {
            kp_conf_errors_add(errs, "%s: %lld is out of range %lld..%lld", key,
                               (long long)x, (long long)o->min,
                               (long long)o->max);
        }
        return;
    }
    if (o->type == KP_OPT_INT) {
        *KP_FIELD(base, o, int) = (int)x;
    } else {
        *KP_FIELD(base, o, int64_t) = x;
    }
}

/* Checks a string value against the option's flags; KP_OK if usable. */
static int kp_check_str(const struct kp_opt *o, const char *s, const char *key,
                        struct kp_conf_errors *errs)
{
    if ((o->flags & KP_OPTF_NONEMPTY) && *s == '\0') {
        kp_conf_errors_add(errs, "%s: must not be empty%s", key,
                           o->type == KP_OPT_NSTR ? " (null disables it)" : "");
        return KP_ERROR;
    }
    if ((o->flags & KP_OPTF_TOPIC) && !kp_conf_topic_valid(s, strlen(s))) {
        kp_conf_errors_add(errs,
                           "%s: \"%s\" is not a valid topic name "
                           "([A-Za-z0-9._-]{1,249})",
                           key, s);
        return KP_ERROR;
    }
    return KP_OK;
}

static void kp_parse_enum(const struct kp_opt *o, void *base, json_t *v,
                          const char *key, struct kp_conf_errors *errs)
{
    if (!json_is_string(v)) {
        kp_type_error(errs, key, "a string", v);
        return;
    }
    const char *s = json_string_value(v);
    for (int i = 0; i < o->name_cnt; i++) {
        if (strcmp(s, o->names[i]) == 0) {
            *KP_FIELD(base, o, int) = i;
            return;
        }
    }
    char list[256];
    size_t len = 0;
    list[0] = '\0';
    for (int i = 0; i < o->name_cnt && len < sizeof(list); i++) {
        int w = snprintf(list + len, sizeof(list) - len, "%s\"%s\"",
                         i ? ", " : "", o->names[i]);
        len += w > 0 ? (size_t)w : 0;
    }
    kp_conf_errors_add(errs, "%s: \"%s\" is not one of %s", key, s, list);
}

static void kp_parse_acks(const struct kp_opt *o, void *base, json_t *v,
                          const char *key, struct kp_conf_errors *errs)
{
    int64_t x = 2;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "all") == 0) {
            x = -1;
        } else if (kp_parse_i64(s, &x) != KP_OK) {
            x = 2;
        }
    } else {
        kp_type_error(errs, key, "\"all\", 1 or 0", v);
        return;
    }
    if (x < -1 || x > 1) {
        kp_conf_errors_add(errs, "%s: expected \"all\" (-1), 1 or 0", key);
        return;
    }
    *KP_FIELD(base, o, int) = (int)x;
}

static void kp_parse_level(const struct kp_opt *o, void *base, json_t *v,
                           const char *key, struct kp_conf_errors *errs)
{
    if (json_is_null(v) ||
        (json_is_string(v) && strcmp(json_string_value(v), "default") == 0)) {
        *KP_FIELD(base, o, int) = KP_LEVEL_DEFAULT;
        return;
    }
    if (!json_is_integer(v)) {
        kp_type_error(errs, key, "an integer or null (codec default)", v);
        return;
    }
    json_int_t x = json_integer_value(v);
    if (x < -1000000 || x > 1000000) {
        kp_conf_errors_add(errs, "%s: %lld is not a compression level", key,
                           (long long)x);
        return;
    }
    /* the range depends on the codec: checked with the section */
    *KP_FIELD(base, o, int) = (int)x;
}

static void kp_parse_sep(const struct kp_opt *o, void *base, json_t *v,
                         const char *key, struct kp_conf_errors *errs)
{
    if (!json_is_string(v)) {
        kp_type_error(errs, key, "a one-byte string", v);
        return;
    }
    const char *s = json_string_value(v);
    if (json_string_length(v) != 1) {
        kp_conf_errors_add(errs, "%s: expected one byte, got \"%s\"", key, s);
        return;
    }
    if (s[0] == '\n') {
        kp_conf_errors_add(errs, "%s: cannot be the line end \"\\n\"", key);
        return;
    }
    *KP_FIELD(base, o, uint8_t) = (uint8_t)s[0];
}

static void kp_parse_mode(const struct kp_opt *o, void *base, json_t *v,
                          const char *key, struct kp_conf_errors *errs)
{
    long long x = -1;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t len = strlen(s);
        if (len == 0 || len > 5 || strspn(s, "01234567") != len) {
            kp_conf_errors_add(
                errs, "%s: \"%s\" is not an octal mode like \"0660\"", key, s);
            return;
        }
        x = strtoll(s, NULL, 8);
    } else {
        kp_type_error(errs, key, "an octal string like \"0660\"", v);
        return;
    }
    if (x < 0 || x > 07777) {
        kp_conf_errors_add(errs, "%s: %lld is not a permission mode", key, x);
        return;
    }
    *KP_FIELD(base, o, unsigned) = (unsigned)x;
}

static void kp_parse_strv(const struct kp_opt *o, void *base, json_t *v,
                          const char *key, struct kp_conf_errors *errs)
{
    char ekey[KP_CONF_KEY_LEN];
    size_t n = json_array_size(v);
    char **arr = kp_calloc(n ? n : 1, sizeof(*arr));
    size_t cnt = 0;

    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        kp_keyf(ekey, sizeof(ekey), "%s[%zu]", key, i);
        if (!json_is_string(e)) {
            kp_type_error(errs, ekey, "a string", e);
            continue;
        }
        const char *s = json_string_value(e);
        if (o->flags & KP_OPTF_HOSTPORT) {
            kp_check_hostport(s, ekey, errs);
        }
        if ((o->flags & KP_OPTF_TOPICPAT) && !kp_conf_topic_pattern_valid(s)) {
            kp_conf_errors_add(errs,
                               "%s: \"%s\" is neither a topic name nor a "
                               "prefix ending in '*'",
                               ekey, s);
        }
        arr[cnt++] = kp_strdup(s);
    }
    kp_opt_free(o, base);
    *KP_FIELD(base, o, char **) = arr;
    *KP_COUNT(base, o) = cnt;
}

static void kp_parse_uintv(const struct kp_opt *o, void *base, json_t *v,
                           const char *key, struct kp_conf_errors *errs)
{
    char ekey[KP_CONF_KEY_LEN];
    size_t n = json_array_size(v);
    uint32_t *arr = kp_calloc(n ? n : 1, sizeof(*arr));
    size_t cnt = 0;

    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        kp_keyf(ekey, sizeof(ekey), "%s[%zu]", key, i);
        if (!json_is_integer(e)) {
            kp_type_error(errs, ekey, "an integer", e);
            continue;
        }
        json_int_t x = json_integer_value(e);
        /* (uid_t)-1 means "no id" to the kernel */
        if (x < 0 || x >= (json_int_t)UINT32_MAX) {
            kp_conf_errors_add(errs, "%s: %lld is not a valid id", ekey,
                               (long long)x);
            continue;
        }
        arr[cnt++] = (uint32_t)x;
    }
    kp_opt_free(o, base);
    *KP_FIELD(base, o, uint32_t *) = arr;
    *KP_COUNT(base, o) = cnt;
}

/*
 * Idempotence defaults to acks == all unless given in this section or (for
 * a topic) inherited from an explicit `producer.idempotence`.
 */
static void kp_producer_resolve(struct kp_producer_conf *p, uint32_t set,
                                uint32_t inherited_set)
{
    uint32_t idemp =
        1u << kp_opt_index(kp_producer_opts, KP_NPRODUCER, "idempotence");
    if (!((set | inherited_set) & idemp)) {
        p->idempotence = p->acks == -1;
    }
}

static void kp_producer_check(const struct kp_producer_conf *p,
                              const char *prefix, struct kp_conf_errors *errs)
{
    if (p->idempotence && p->acks != -1) {
        kp_conf_errors_add(errs,
                           "%s.idempotence: requires acks \"all\" (acks is "
                           "%d)",
                           prefix, p->acks);
    }
    if (p->idempotence && p->max_in_flight > KP_CONF_IDEMP_MAX_IN_FLIGHT) {
        kp_conf_errors_add(errs,
                           "%s.max_in_flight: at most %d with idempotence, "
                           "got %d (set idempotence to false to allow more)",
                           prefix, KP_CONF_IDEMP_MAX_IN_FLIGHT,
                           p->max_in_flight);
    }
    if (p->retry_backoff_max_ms < p->retry_backoff_ms) {
        kp_conf_errors_add(errs,
                           "%s.retry_backoff_max_ms: must be at least "
                           "retry_backoff_ms (%d), got %d",
                           prefix, p->retry_backoff_ms,
                           p->retry_backoff_max_ms);
    }
    if (!kp_codec_available(p->compression)) {
        kp_conf_errors_add(errs, "%s.compression: %s is not available in "
                                 "this build (kproxyd -V lists the codecs)",
                           prefix, kp_codec_names[p->compression]);
    }
    /* as the Java producer: a message must get one full attempt */
    int64_t min_delivery = (int64_t)p->linger_ms + p->request_timeout_ms;
    if (p->delivery_timeout_ms < min_delivery) {
        kp_conf_errors_add(errs,
                           "%s.delivery_timeout_ms: must be at least "
                           "linger_ms + request_timeout_ms (%lld), got %d",
                           prefix, (long long)min_delivery,
                           p->delivery_timeout_ms);
    }
    int lo = 0, hi = 0;
    switch (p->compression) {
    case KP_CODEC_GZIP:
        lo = 0, hi = 9;
        break;
    case KP_CODEC_LZ4:
        lo = 0, hi = 12;
        break;
    case KP_CODEC_ZSTD:
        lo = -99, hi = 22;
        break;
    default: /* none and snappy have no levels: ignored */
        return;
    }
    int lvl = p->compression_level;
    if (lvl != KP_LEVEL_DEFAULT && (lvl < lo || lvl > hi)) {
        kp_conf_errors_add(errs,
                           "%s.compression_level: %d is out of range for %s "
                           "(%d..%d)",
                           prefix, lvl, kp_codec_names[p->compression], lo, hi);
    }
}

static void kp_parse_producer(const struct kp_opt *o, void *base, json_t *v,
                              const char *key, struct kp_parse *ps)
{
    struct kp_producer_conf *p = KP_FIELD(base, o, struct kp_producer_conf);
    if (!json_is_object(v)) {
        kp_type_error(ps->errs, key, "an object", v);
        return;
    }
    ps->producer_set =
        kp_opts_parse(kp_producer_opts, KP_NPRODUCER, p, v, key, ps);
    kp_producer_resolve(p, ps->producer_set, 0);
    kp_producer_check(p, key, ps->errs);
}

/* Each topic starts as a copy of the resolved `producer` section. */
static void kp_parse_topics(const struct kp_opt *o, void *base, json_t *v,
                            const char *key, struct kp_parse *ps)
{
    char tkey[KP_CONF_KEY_LEN];
    const char *name;
    json_t *tv;
    uint32_t comp =
        1u << kp_opt_index(kp_producer_opts, KP_NPRODUCER, "compression");
    uint32_t level =
        1u << kp_opt_index(kp_producer_opts, KP_NPRODUCER, "compression_level");

    if (!json_is_object(v)) {
        kp_type_error(ps->errs, key, "an object", v);
        return;
    }
    kp_opt_free(o, base);
    size_t n = json_object_size(v);
    struct kp_topic_conf *topics = kp_calloc(n ? n : 1, sizeof(*topics));
    size_t cnt = 0;
    json_object_foreach(v, name, tv)
    {
        kp_key_join(tkey, sizeof(tkey), key, name);
        if (!kp_conf_topic_valid(name, strlen(name))) {
            kp_conf_errors_add(ps->errs,
                               "%s: not a valid topic name "
                               "([A-Za-z0-9._-]{1,249})",
                               tkey);
            continue;
        }
        if (!json_is_object(tv)) {
            kp_type_error(ps->errs, tkey, "an object", tv);
            continue;
        }
        struct kp_topic_conf *t = &topics[cnt++];
        t->name = kp_strdup(name);
        t->producer = ps->conf->producer;
        uint32_t set = kp_opts_parse(kp_producer_opts, KP_NPRODUCER,
                                     &t->producer, tv, tkey, ps);
        /* levels are per codec: another codec starts from its default */
        if ((set & comp) && !(set & level)) {
            t->producer.compression_level = KP_LEVEL_DEFAULT;
        }
        kp_producer_resolve(&t->producer, set, ps->producer_set);
        kp_producer_check(&t->producer, tkey, ps->errs);
    }
    *KP_FIELD(base, o, struct kp_topic_conf *) = topics;
    *KP_COUNT(base, o) = cnt;
}

static void kp_listener_check(const struct kp_listener_conf *l,
                              const char *prefix, struct kp_conf_errors *errs)
{
    bool has_topic_field =
        l->format == KP_FMT_TOPIC_VALUE || l->format == KP_FMT_TOPIC_KEY_VALUE;
    bool needs_topic =
        l->format == KP_FMT_VALUE || l->format == KP_FMT_KEY_VALUE;
    if (has_topic_field && l->topic) {
        kp_conf_errors_add(errs,
                           "%s.topic: not allowed with format \"%s\" (each "
                           "line names its topic)",
                           prefix, kp_format_names[l->format]);
    } else if (needs_topic && !l->topic) {
        kp_conf_errors_add(errs, "%s.topic: required with format \"%s\"",
                           prefix, kp_format_names[l->format]);
    }
}

static void kp_parse_listeners(const struct kp_opt *o, void *base, json_t *v,
                               const char *key, struct kp_parse *ps)
{
    char lkey[KP_CONF_KEY_LEN];
    if (!json_is_array(v)) {
        kp_type_error(ps->errs, key, "an array", v);
        return;
    }
    size_t n = json_array_size(v);
    if (n == 0) {
        kp_conf_errors_add(ps->errs, "%s: at least one listener is required",
                           key);
        return;
    }
    if (n > KP_CONF_MAX_LISTENERS) {
        kp_conf_errors_add(ps->errs, "%s: more than %d listeners", key,
                           KP_CONF_MAX_LISTENERS);
        return;
    }
    kp_opt_free(o, base);
    struct kp_listener_conf *ls = kp_calloc(n, sizeof(*ls));
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        kp_keyf(lkey, sizeof(lkey), "%s[%zu]", key, i);
        kp_listener_default(&ls[i], NULL);
        if (!json_is_object(e)) {
            kp_type_error(ps->errs, lkey, "an object", e);
            continue;
        }
        kp_opts_parse(kp_listener_opts, KP_NLISTENER, &ls[i], e, lkey, ps);
        kp_listener_check(&ls[i], lkey, ps->errs);
        for (size_t j = 0; j < i && ls[i].path; j++) {
            if (ls[j].path && strcmp(ls[i].path, ls[j].path) == 0) {
                kp_conf_errors_add(ps->errs, "%s.path: \"%s\" is also %s[%zu]",
                                   lkey, ls[i].path, key, j);
                break;
            }
        }
    }
    *KP_FIELD(base, o, struct kp_listener_conf *) = ls;
    *KP_COUNT(base, o) = n;
}

static void kp_opt_parse(const struct kp_opt *o, void *base, json_t *v,
                         const char *key, struct kp_parse *ps)
{
    struct kp_conf_errors *errs = ps->errs;

    switch (o->type) {
    case KP_OPT_INT:
    case KP_OPT_INT64:
        kp_parse_int(o, base, v, key, errs);
        break;
    case KP_OPT_BOOL:
        if (!json_is_boolean(v)) {
            kp_type_error(errs, key, "a boolean", v);
            break;
        }
        *KP_FIELD(base, o, bool) = json_is_true(v);
        break;
    case KP_OPT_STR:
    case KP_OPT_NSTR:
        if (o->type == KP_OPT_NSTR && json_is_null(v)) {
            kp_opt_free(o, base);
            break;
        }
        if (!json_is_string(v)) {
            kp_type_error(
                errs, key,
                o->type == KP_OPT_NSTR ? "a string or null" : "a string", v);
            break;
        }
        if (kp_check_str(o, json_string_value(v), key, errs) == KP_OK) {
            kp_opt_free(o, base);
            *KP_FIELD(base, o, char *) = kp_strdup(json_string_value(v));
        }
        break;
    case KP_OPT_ENUM:
        kp_parse_enum(o, base, v, key, errs);
        break;
    case KP_OPT_ACKS:
        kp_parse_acks(o, base, v, key, errs);
        break;
    case KP_OPT_LEVEL:
        kp_parse_level(o, base, v, key, errs);
        break;
    case KP_OPT_SEP:
        kp_parse_sep(o, base, v, key, errs);
        break;
    case KP_OPT_MODE:
        kp_parse_mode(o, base, v, key, errs);
        break;
    case KP_OPT_STRV:
    case KP_OPT_UINTV:
        if (json_is_null(v) && (o->flags & KP_OPTF_NULLABLE)) {
            kp_opt_free(o, base);
            break;
        }
        if (!json_is_array(v)) {
            kp_type_error(errs, key,
                          (o->flags & KP_OPTF_NULLABLE) ? "an array or null"
                                                        : "an array",
                          v);
            break;
        }
        if ((o->flags & KP_OPTF_NONEMPTY) && json_array_size(v) == 0) {
            kp_conf_errors_add(errs, "%s: must not be empty", key);
            break;
        }
        if (o->type == KP_OPT_STRV) {
            kp_parse_strv(o, base, v, key, errs);
        } else {
            kp_parse_uintv(o, base, v, key, errs);
        }
        break;
    case KP_OPT_PRODUCER:
        kp_parse_producer(o, base, v, key, ps);
        break;
    case KP_OPT_TOPICS:
        kp_parse_topics(o, base, v, key, ps);
        break;
    case KP_OPT_LISTENERS:
        kp_parse_listeners(o, base, v, key, ps);
        break;
    }
}

/*
 * Parses the keys of obj into base by opts, in table order (so `producer`
 * is resolved before `topics` copies it). Returns the set of options given,
 * bit i for opts[i].
 */
static uint32_t kp_opts_parse(const struct kp_opt *opts, size_t n, void *base,
                              json_t *obj, const char *prefix,
                              struct kp_parse *ps)
{
    char key[KP_CONF_KEY_LEN];
    const char *name;
    json_t *v;
    uint32_t set = 0;

    json_object_foreach(obj, name, v)
    {
        if (!kp_opt_find(opts, n, name, strlen(name))) {
            kp_key_join(key, sizeof(key), prefix, name);
            kp_conf_errors_add(ps->errs, "%s: unknown key", key);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct kp_opt *o = &opts[i];
        kp_key_join(key, sizeof(key), prefix, o->name);
        v = json_object_get(obj, o->name);
        if (!v) {
            if (o->flags & KP_OPTF_REQUIRED) {
                kp_conf_errors_add(ps->errs, "%s: required", key);
            }
            continue;
        }
        if (i < 32) {
            set |= 1u << i;
        }
        kp_opt_parse(o, base, v, key, ps);
    }
    return set;
}

static void kp_conf_check(const struct kp_conf *c, struct kp_conf_errors *errs)
{
    int max_msg = c->producer.message_max_bytes;
    for (size_t i = 0; i < c->topic_cnt; i++) {
        max_msg = KP_MAX(max_msg, c->topics[i].producer.message_max_bytes);
    }
    if (c->buffer_bytes < max_msg) {
        kp_conf_errors_add(errs,
                           "buffer_bytes: must be at least message_max_bytes "
                           "(%d), got %lld",
                           max_msg, (long long)c->buffer_bytes);
    }
    for (size_t i = 0; c->control && i < c->listener_cnt; i++) {
        if (c->listeners[i].path &&
            strcmp(c->listeners[i].path, c->control) == 0) {
            kp_conf_errors_add(errs, "control: \"%s\" is also listeners[%zu]",
                               c->control, i);
        }
    }
}

static struct kp_conf *kp_conf_from_json(json_t *root,
                                         struct kp_conf_errors *errs)
{
    struct kp_conf *c = kp_calloc(1, sizeof(*c));
    c->refs = 1;
    kp_opts_defaults(kp_top_opts, KP_NTOP, c);
    if (!json_is_object(root)) {
        kp_conf_errors_add(errs,
                           "configuration: expected an object at the top "
                           "level, got %s",
                           kp_json_type_name(root));
        return c;
    }
    struct kp_parse ps = {.errs = errs, .conf = c};
    kp_opts_parse(kp_top_opts, KP_NTOP, c, root, "", &ps);
    kp_conf_check(c, errs);
    return c;
}

/* ------------------------------------------------------------------ */
/* -X overrides                                                         */

/* Splits s at commas (blanks around items trimmed); "" is no items. */
static json_t *kp_split_list(const struct kp_opt *o, const char *s,
                             const char *key, struct kp_conf_errors *errs)
{
    char ekey[KP_CONF_KEY_LEN];
    json_t *arr = json_array();
    size_t i = 0;
    bool ok = true;

    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *b = s, *e = s + len;
        while (b < e && (*b == ' ' || *b == '\t')) {
            b++;
        }
        while (e > b && (e[-1] == ' ' || e[-1] == '\t')) {
            e--;
        }
        char *item = kp_strndup(b, (size_t)(e - b));
        kp_keyf(ekey, sizeof(ekey), "%s[%zu]", key, i);
        if (o->type == KP_OPT_UINTV) {
            int64_t x;
            if (kp_parse_i64(item, &x) != KP_OK) {
                kp_conf_errors_add(errs, "%s: expected an integer, got \"%s\"",
                                   ekey, item);
                ok = false;
            } else {
                json_array_append_new(arr, json_integer(x));
            }
        } else {
            json_t *js = json_string(item);
            if (!js) {
                kp_conf_errors_add(errs, "%s: not valid UTF-8", ekey);
                ok = false;
            } else {
                json_array_append_new(arr, js);
            }
        }
        free(item);
        i++;
        if (!end) {
            break;
        }
        s = end + 1;
    }
    if (!ok) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

/* Converts an -X value to JSON by the key's type; NULL after an error. */
static json_t *kp_opt_from_string(const struct kp_opt *o, const char *s,
                                  const char *key, struct kp_conf_errors *errs)
{
    int64_t x;
    json_t *js;

    switch (o->type) {
    case KP_OPT_INT:
    case KP_OPT_INT64:
        if (kp_parse_i64(s, &x) != KP_OK) {
            kp_conf_errors_add(errs, "%s: expected an integer, got \"%s\"", key,
                               s);
            return NULL;
        }
        return json_integer(x);
    case KP_OPT_BOOL:
        if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes") ||
            !strcmp(s, "on")) {
            return json_true();
        }
        if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no") ||
            !strcmp(s, "off")) {
            return json_false();
        }
        kp_conf_errors_add(errs, "%s: expected a boolean, got \"%s\"", key, s);
        return NULL;
    case KP_OPT_ACKS:
        if (kp_parse_i64(s, &x) == KP_OK) {
            return json_integer(x);
        }
        break; /* "all" or an error the parser reports */
    case KP_OPT_LEVEL:
        if (!strcmp(s, "null") || !strcmp(s, "default")) {
            return json_null();
        }
        if (kp_parse_i64(s, &x) != KP_OK) {
            kp_conf_errors_add(errs, "%s: expected an integer, got \"%s\"", key,
                               s);
            return NULL;
        }
        return json_integer(x);
    case KP_OPT_NSTR:
        if (!strcmp(s, "null")) {
            return json_null();
        }
        break;
    case KP_OPT_STRV:
    case KP_OPT_UINTV:
        if ((o->flags & KP_OPTF_NULLABLE) && !strcmp(s, "null")) {
            return json_null();
        }
        return kp_split_list(o, s, key, errs);
    case KP_OPT_STR:
    case KP_OPT_ENUM:
    case KP_OPT_SEP:
    case KP_OPT_MODE:
        break;
    case KP_OPT_PRODUCER:
    case KP_OPT_TOPICS:
    case KP_OPT_LISTENERS:
        kp_assert(!"sections are not values");
        return NULL;
    }
    js = json_string(s);
    if (!js) {
        kp_conf_errors_add(errs, "%s: not valid UTF-8", key);
    }
    return js;
}

/* parent[name] as an object, created if absent; NULL if it is not one. */
static json_t *kp_json_child_obj(json_t *parent, const char *name)
{
    json_t *v = json_object_get(parent, name);
    if (!v) {
        v = json_object();
        json_object_set_new(parent, name, v);
    }
    return json_is_object(v) ? v : NULL;
}

/*
 * Resolves "listeners[N].KEY" / "listeners.N.KEY" (rest points after
 * "listeners") to the element object, creating the default listener array
 * when the file has none and appending when N is one past the end.
 * Returns KP_OK with *target (NULL when the file has a wrong type there,
 * which the parser reports), KP_ERROR when rest is not [N].KEY, or
 * KP_AGAIN when N is too far (error added).
 */
static int kp_override_listener(json_t *root, const char *rest, json_t **target,
                                size_t *idx, const char **subkey,
                                struct kp_conf_errors *errs)
{
    const char *p = rest;
    size_t n = 0;
    bool bracket = *p == '[';

    if (*p != '[' && *p != '.') {
        return KP_ERROR;
    }
    p++;
    if (*p < '0' || *p > '9') {
        return KP_ERROR;
    }
    while (*p >= '0' && *p <= '9') {
        if (n <= KP_CONF_MAX_LISTENERS) {
            n = n * 10 + (size_t)(*p - '0');
        }
        p++;
    }
    if (bracket && *p++ != ']') {
        return KP_ERROR;
    }
    if (*p != '.') {
        return KP_ERROR;
    }
    *subkey = p + 1;
    *idx = n;
    *target = NULL;

    json_t *arr = json_object_get(root, "listeners");
    if (!arr) {
        json_t *l = json_object();
        json_object_set_new(l, "path", json_string(KP_CONF_DEFAULT_SOCK));
        arr = json_array();
        json_array_append_new(arr, l);
        json_object_set_new(root, "listeners", arr);
    }
    if (!json_is_array(arr)) {
        return KP_OK;
    }
    size_t cnt = json_array_size(arr);
    if (n < cnt) {
        json_t *e = json_array_get(arr, n);
        *target = json_is_object(e) ? e : NULL;
        return KP_OK;
    }
    if (n == cnt && n < KP_CONF_MAX_LISTENERS) {
        *target = json_object();
        json_array_append_new(arr, *target);
        return KP_OK;
    }
    kp_conf_errors_add(errs,
                       "listeners[%zu]: no such listener (there are %zu; -X "
                       "can add listeners[%zu])",
                       n, cnt, cnt);
    return KP_AGAIN;
}

/*
 * Applies one "dotted.path=value" override to the JSON tree, converting the
 * value by the key's type. Problems go to errs, naming the key.
 */
static void kp_conf_override(json_t *root, const char *ov,
                             struct kp_conf_errors *errs)
{
    char key[KP_CONF_KEY_LEN];
    const char *eq = strchr(ov, '=');
    if (!eq || eq == ov) {
        kp_conf_errors_add(errs, "-X %s: expected KEY=VALUE", ov);
        return;
    }
    char *path = kp_strndup(ov, (size_t)(eq - ov));
    const char *val = eq + 1;
    size_t n1 = strcspn(path, ".[");
    const struct kp_opt *top = kp_opt_find(kp_top_opts, KP_NTOP, path, n1);
    const struct kp_opt *o = top;
    const char *rest = path + n1;
    json_t *target = json_is_object(root) ? root : NULL;

    if (!top) {
        goto unknown;
    }
    switch (top->type) {
    case KP_OPT_PRODUCER:
        if (*rest == '\0') {
            goto section;
        }
        o = rest[0] == '.' ? kp_opt_find(kp_producer_opts, KP_NPRODUCER,
                                         rest + 1, strlen(rest + 1))
                           : NULL;
        if (!o) {
            goto unknown;
        }
        target = target ? kp_json_child_obj(target, "producer") : NULL;
        kp_keyf(key, sizeof(key), "producer.%s", o->name);
        break;
    case KP_OPT_TOPICS: {
        if (*rest == '\0') {
            goto section;
        }
        /* topic names may contain dots; producer keys never do */
        const char *dot = strrchr(rest, '.');
        if (rest[0] != '.' || dot == rest) {
            goto unknown;
        }
        o = kp_opt_find(kp_producer_opts, KP_NPRODUCER, dot + 1,
                        strlen(dot + 1));
        if (!o) {
            goto unknown;
        }
        char *name = kp_strndup(rest + 1, (size_t)(dot - rest - 1));
        if (!kp_conf_topic_valid(name, strlen(name))) {
            kp_conf_errors_add(errs,
                               "topics.%s: not a valid topic name "
                               "([A-Za-z0-9._-]{1,249})",
                               name);
            free(name);
            goto out;
        }
        json_t *topics = target ? kp_json_child_obj(target, "topics") : NULL;
        target = topics ? kp_json_child_obj(topics, name) : NULL;
        kp_keyf(key, sizeof(key), "topics.%s.%s", name, o->name);
        free(name);
        break;
    }
    case KP_OPT_LISTENERS: {
        size_t idx = 0;
        const char *sub = NULL;
        if (*rest == '\0') {
            goto section;
        }
        if (rest[strcspn(rest, ".")] == '\0' ||
            !kp_opt_find(kp_listener_opts, KP_NLISTENER, strrchr(rest, '.') + 1,
                         strlen(strrchr(rest, '.') + 1))) {
            goto unknown;
        }
        if (!target) {
            goto out;
        }
        int rc = kp_override_listener(target, rest, &target, &idx, &sub, errs);
        if (rc == KP_AGAIN) {
            goto out;
        }
        o = rc == KP_OK
                ? kp_opt_find(kp_listener_opts, KP_NLISTENER, sub, strlen(sub))
                : NULL;
        if (!o) {
            goto unknown;
        }
        kp_keyf(key, sizeof(key), "listeners[%zu].%s", idx, o->name);
        break;
    }
    default:
        if (*rest != '\0') {
            goto unknown;
        }
        kp_keyf(key, sizeof(key), "%s", o->name);
        break;
    }
    if (target) {
        json_t *jv = kp_opt_from_string(o, val, key, errs);
        if (jv) {
            json_object_set_new(target, o->name, jv);
        }
    }
    /* else: the file has a wrong type there, which the parser reports */
    goto out;

section:
    kp_conf_errors_add(errs,
                       "%s: cannot be set whole with -X; set one key, e.g. "
                       "%s",
                       path,
                       top->type == KP_OPT_LISTENERS ? "listeners[0].path"
                       : top->type == KP_OPT_TOPICS  ? "topics.NAME.linger_ms"
                                                     : "producer.linger_ms");
    goto out;
unknown:
    kp_conf_errors_add(errs, "%s: unknown key (in -X %s)", path, ov);
out:
    free(path);
}

/* ------------------------------------------------------------------ */
/* Loading                                                              */

/* Takes root (NULL after a parse error): overrides, then the struct. */
static struct kp_conf *kp_conf_build(json_t *root, const char *path,
                                     char *const *overrides,
                                     size_t override_cnt,
                                     struct kp_conf_errors *errs)
{
    struct kp_conf_errors local = {0};
    struct kp_conf *c = NULL;
    bool parsed = root != NULL;

    if (!errs) {
        errs = &local;
    }
    size_t start = errs->cnt;
    if (!root) {
        root = json_object(); /* still check the overrides */
    }
    for (size_t i = 0; i < override_cnt; i++) {
        kp_conf_override(root, overrides[i], errs);
    }
    if (parsed) {
        c = kp_conf_from_json(root, errs);
    }
    json_decref(root);
    if (errs->cnt > start) {
        kp_conf_put(c);
        c = NULL;
    } else if (c && path) {
        c->path = kp_strdup(path);
    }
    kp_conf_errors_deinit(&local);
    return c;
}

static void kp_conf_parse_error(struct kp_conf_errors *errs, const char *src,
                                const json_error_t *je)
{
    if (!errs) {
        return;
    }
    if (je->line > 0) {
        kp_conf_errors_add(errs, "%s:%d:%d: %s", src, je->line, je->column,
                           je->text);
    } else {
        kp_conf_errors_add(errs, "%s: %s", src, je->text);
    }
}

/*
 * Loads the JSON file at path (NULL: defaults only), applies the -X
 * overrides in order and validates. Returns a new conf (refs 1, the
 * caller's reference) or NULL with every problem appended to *errs (which
 * the caller deinits; errs may be NULL to discard them).
 */
struct kp_conf *kp_conf_load(const char *path, char *const *overrides,
                             size_t override_cnt, struct kp_conf_errors *errs)
{
    json_t *root = NULL;
    if (path) {
        json_error_t je;
        root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        if (!root) {
            kp_conf_parse_error(errs, path, &je);
        }
    } else {
        root = json_object();
    }
    return kp_conf_build(root, path, overrides, override_cnt, errs);
}

/*
 * As kp_conf_load from json[0..len) (no NUL needed); errors locate parse
 * problems as "config:LINE:COLUMN". Never reads outside the buffer.
 */
struct kp_conf *kp_conf_load_buf(const uint8_t *json, size_t len,
                                 char *const *overrides, size_t override_cnt,
                                 struct kp_conf_errors *errs)
{
    json_error_t je;
    json_t *root =
        json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        kp_conf_parse_error(errs, "config", &je);
    }
    return kp_conf_build(root, NULL, overrides, override_cnt, errs);
}

/* Takes another reference to c; returns c. */
struct kp_conf *kp_conf_get(struct kp_conf *c)
{
    kp_assert(c->refs > 0);
    c->refs++;
    return c;
}

/* Drops one reference; the last frees c and everything it owns. NULL: no-op. */
void kp_conf_put(struct kp_conf *c)
{
    if (!c) {
        return;
    }
    kp_assert(c->refs > 0);
    if (--c->refs > 0) {
        return;
    }
    kp_opts_free(kp_top_opts, KP_NTOP, c);
    free(c->path);
    free(c);
}

/* ------------------------------------------------------------------ */
/* struct → JSON (-t)                                                   */

static json_t *kp_opts_to_json(const struct kp_opt *opts, size_t n,
                               const void *base);

static json_t *kp_opt_to_json(const struct kp_opt *o, const void *base)
{
    switch (o->type) {
    case KP_OPT_INT:
        return json_integer(*KP_CFIELD(base, o, int));
    case KP_OPT_INT64:
        return json_integer(*KP_CFIELD(base, o, int64_t));
    case KP_OPT_BOOL:
        return json_boolean(*KP_CFIELD(base, o, bool));
    case KP_OPT_STR:
    case KP_OPT_NSTR: {
        const char *s = *KP_CFIELD(base, o, char *);
        return s ? json_string(s) : json_null();
    }
    case KP_OPT_ENUM: {
        int v = *KP_CFIELD(base, o, int);
        kp_assert(v >= 0 && v < o->name_cnt);
        return json_string(o->names[v]);
    }
    case KP_OPT_ACKS: {
        int v = *KP_CFIELD(base, o, int);
        return v == -1 ? json_string("all") : json_integer(v);
    }
    case KP_OPT_LEVEL: {
        int v = *KP_CFIELD(base, o, int);
        return v == KP_LEVEL_DEFAULT ? json_null() : json_integer(v);
    }
    case KP_OPT_SEP: {
        char s = (char)*KP_CFIELD(base, o, uint8_t);
        return json_stringn(&s, 1);
    }
    case KP_OPT_MODE: {
        char s[16];
        snprintf(s, sizeof(s), "%04o", *KP_CFIELD(base, o, unsigned));
        return json_string(s);
    }
    case KP_OPT_STRV: {
        char *const *v = *KP_CFIELD(base, o, char **);
        if (!v) {
            return json_null();
        }
        json_t *a = json_array();
        for (size_t i = 0; i < *KP_CCOUNT(base, o); i++) {
            json_array_append_new(a, json_string(v[i]));
        }
        return a;
    }
    case KP_OPT_UINTV: {
        const uint32_t *v = *KP_CFIELD(base, o, uint32_t *);
        if (!v) {
            return json_null();
        }
        json_t *a = json_array();
        for (size_t i = 0; i < *KP_CCOUNT(base, o); i++) {
            json_array_append_new(a, json_integer(v[i]));
        }
        return a;
    }
    case KP_OPT_PRODUCER:
        return kp_opts_to_json(kp_producer_opts, KP_NPRODUCER,
                               KP_CFIELD(base, o, struct kp_producer_conf));
    case KP_OPT_TOPICS: {
        const struct kp_topic_conf *t =
            *KP_CFIELD(base, o, struct kp_topic_conf *);
        json_t *obj = json_object();
        for (size_t i = 0; i < *KP_CCOUNT(base, o); i++) {
            json_object_set_new(obj, t[i].name,
                                kp_opts_to_json(kp_producer_opts, KP_NPRODUCER,
                                                &t[i].producer));
        }
        return obj;
    }
    case KP_OPT_LISTENERS: {
        const struct kp_listener_conf *l =
            *KP_CFIELD(base, o, struct kp_listener_conf *);
        json_t *a = json_array();
        for (size_t i = 0; i < *KP_CCOUNT(base, o); i++) {
            json_array_append_new(
                a, kp_opts_to_json(kp_listener_opts, KP_NLISTENER, &l[i]));
        }
        return a;
    }
    }
    return json_null();
}

static json_t *kp_opts_to_json(const struct kp_opt *opts, size_t n,
                               const void *base)
{
    json_t *obj = json_object();
    for (size_t i = 0; i < n; i++) {
        json_object_set_new(obj, opts[i].name, kp_opt_to_json(&opts[i], base));
    }
    return obj;
}

/*
 * The effective configuration, every default filled in, keys in table
 * order, as 2-space indented JSON. Loading it again gives an equal
 * configuration. Returns a malloc'd string the caller frees with free().
 */
char *kp_conf_to_json(const struct kp_conf *c)
{
    json_t *obj = kp_opts_to_json(kp_top_opts, KP_NTOP, c);
    char *s = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!s) {
        abort(); /* only on allocation failure (DESIGN 7) */
    }
    return s;
}

/*
 * The producer settings for topic: its `topics` entry, else the `producer`
 * section. Linear in the number of topic entries; the result lives as long
 * as c.
 */
const struct kp_producer_conf *kp_conf_producer(const struct kp_conf *c,
                                                const char *topic)
{
    for (size_t i = 0; i < c->topic_cnt; i++) {
        if (strcmp(c->topics[i].name, topic) == 0) {
            return &c->topics[i].producer;
        }
    }
    return &c->producer;
}

/* ------------------------------------------------------------------ */
/* Restart diff                                                         */

static bool kp_opts_equal(const struct kp_opt *opts, size_t n, const void *a,
                          const void *b);

static bool kp_str_equal(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool kp_opt_equal(const struct kp_opt *o, const void *a, const void *b)
{
    switch (o->type) {
    case KP_OPT_INT:
    case KP_OPT_ACKS:
    case KP_OPT_LEVEL:
    case KP_OPT_ENUM:
        return *KP_CFIELD(a, o, int) == *KP_CFIELD(b, o, int);
    case KP_OPT_INT64:
        return *KP_CFIELD(a, o, int64_t) == *KP_CFIELD(b, o, int64_t);
    case KP_OPT_BOOL:
        return *KP_CFIELD(a, o, bool) == *KP_CFIELD(b, o, bool);
    case KP_OPT_STR:
    case KP_OPT_NSTR:
        return kp_str_equal(*KP_CFIELD(a, o, char *), *KP_CFIELD(b, o, char *));
    case KP_OPT_SEP:
        return *KP_CFIELD(a, o, uint8_t) == *KP_CFIELD(b, o, uint8_t);
    case KP_OPT_MODE:
        return *KP_CFIELD(a, o, unsigned) == *KP_CFIELD(b, o, unsigned);
    case KP_OPT_STRV: {
        char *const *va = *KP_CFIELD(a, o, char **);
        char *const *vb = *KP_CFIELD(b, o, char **);
        size_t n = *KP_CCOUNT(a, o);
        if (!va != !vb || n != *KP_CCOUNT(b, o)) {
            return false;
        }
        for (size_t i = 0; i < n; i++) {
            if (strcmp(va[i], vb[i]) != 0) {
                return false;
            }
        }
        return true;
    }
    case KP_OPT_UINTV: {
        const uint32_t *va = *KP_CFIELD(a, o, uint32_t *);
        const uint32_t *vb = *KP_CFIELD(b, o, uint32_t *);
        size_t n = *KP_CCOUNT(a, o);
        return !va == !vb && n == *KP_CCOUNT(b, o) &&
               (n == 0 || memcmp(va, vb, n * sizeof(*va)) == 0);
    }
    case KP_OPT_PRODUCER:
        return kp_opts_equal(kp_producer_opts, KP_NPRODUCER,
                             KP_CFIELD(a, o, struct kp_producer_conf),
                             KP_CFIELD(b, o, struct kp_producer_conf));
    case KP_OPT_TOPICS: {
        const struct kp_topic_conf *ta =
            *KP_CFIELD(a, o, struct kp_topic_conf *);
        const struct kp_topic_conf *tb =
            *KP_CFIELD(b, o, struct kp_topic_conf *);
        size_t n = *KP_CCOUNT(a, o);
        if (n != *KP_CCOUNT(b, o)) {
            return false;
        }
        for (size_t i = 0; i < n; i++) {
            if (strcmp(ta[i].name, tb[i].name) != 0 ||
                !kp_opts_equal(kp_producer_opts, KP_NPRODUCER, &ta[i].producer,
                               &tb[i].producer)) {
                return false;
            }
        }
        return true;
    }
    case KP_OPT_LISTENERS: {
        const struct kp_listener_conf *la =
            *KP_CFIELD(a, o, struct kp_listener_conf *);
        const struct kp_listener_conf *lb =
            *KP_CFIELD(b, o, struct kp_listener_conf *);
        size_t n = *KP_CCOUNT(a, o);
        if (n != *KP_CCOUNT(b, o)) {
            return false;
        }
        for (size_t i = 0; i < n; i++) {
            if (!kp_opts_equal(kp_listener_opts, KP_NLISTENER, &la[i],
                               &lb[i])) {
                return false;
            }
        }
        return true;
    }
    }
    return false;
}

static bool kp_opts_equal(const struct kp_opt *opts, size_t n, const void *a,
                          const void *b)
{
    for (size_t i = 0; i < n; i++) {
        if (!kp_opt_equal(&opts[i], a, b)) {
            return false;
        }
    }
    return true;
}

/*
 * Logs, at warning, each top-level key that differs between old and cur
 * and only takes effect on restart (everything but producer, topics,
 * buffer_bytes and log_level, which a reload applies). Returns how many.
 */
int kp_conf_restart_diff(const struct kp_conf *old, const struct kp_conf *cur)
{
    int n = 0;
    for (size_t i = 0; i < KP_NTOP; i++) {
        const struct kp_opt *o = &kp_top_opts[i];
        if (!(o->flags & KP_OPTF_LIVE) && !kp_opt_equal(o, old, cur)) {
            kp_warn("config: %s changed; takes effect on restart", o->name);
            n++;
        }
    }
    return n;
}
