/*
 * kp_conf_types.c - the configuration's option types: one struct
 * kp_opt_ops per type (init, parse, to_json, from_string, equal, free and,
 * for containers, descend), the generic walks over a table that call them,
 * and the value syntax they share: host:port, topic names and patterns,
 * -X lists and maps.
 *
 * A type's functions sit together, in the order of its ops struct, and
 * end with the struct; nothing else in kp_conf switches on a type.
 */
#include "kp_conf_impl.h"

#include <errno.h>
#include <limits.h>
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

/* ------------------------------------------------------------------ */
/* Generic walks                                                        */

const struct kp_opt *kp_table_find(const struct kp_opt_table *t,
                                   const char *name, size_t len)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strlen(t->opts[i].name) == len &&
            memcmp(t->opts[i].name, name, len) == 0) {
            return &t->opts[i];
        }
    }
    return NULL;
}

void kp_table_init(const struct kp_opt_table *t, void *base)
{
    for (size_t i = 0; i < t->n; i++) {
        t->opts[i].ops->init(&t->opts[i], base);
    }
}

void kp_table_free(const struct kp_opt_table *t, void *base)
{
    for (size_t i = 0; i < t->n; i++) {
        t->opts[i].ops->free(&t->opts[i], base);
    }
}

void kp_table_parse_keys(const struct kp_opt_table *t, void *base, json_t *obj,
                         const char *prefix, struct kp_parse *ps)
{
    char key[KP_CONF_KEY_LEN];
    const char *name;
    json_t *v;

    json_object_foreach(obj, name, v)
    {
        if (!kp_table_find(t, name, strlen(name))) {
            kp_key_join(key, sizeof(key), prefix, name);
            kp_conf_errors_add(ps->errs, "%s: unknown key", key);
        }
    }
    /* in table order, so `producer` is complete before `topics` copies it */
    for (size_t i = 0; i < t->n; i++) {
        const struct kp_opt *o = &t->opts[i];
        kp_key_join(key, sizeof(key), prefix, o->name);
        v = json_object_get(obj, o->name);
        if (v) {
            o->ops->parse(o, base, v, key, ps);
        } else if (o->flags & KP_OPTF_REQUIRED) {
            kp_conf_errors_add(ps->errs, "%s: required", key);
        }
    }
}

void kp_table_parse(const struct kp_opt_table *t, void *base, json_t *obj,
                    const char *prefix, struct kp_parse *ps)
{
    kp_table_parse_keys(t, base, obj, prefix, ps);
    if (t->finish) {
        t->finish(base, obj, prefix, ps);
    }
}

json_t *kp_table_to_json(const struct kp_opt_table *t, const void *base)
{
    json_t *obj = json_object();
    for (size_t i = 0; i < t->n; i++) {
        const struct kp_opt *o = &t->opts[i];
        bool shown = !t->shown || t->shown(o, base);
        json_object_set_new(obj, o->name,
                            shown ? o->ops->to_json(o, base) : json_null());
    }
    return obj;
}

bool kp_table_equal(const struct kp_opt_table *t, const void *a, const void *b)
{
    for (size_t i = 0; i < t->n; i++) {
        if (!t->opts[i].ops->equal(&t->opts[i], a, b)) {
            return false;
        }
    }
    return true;
}

static void kp_noop_free(const struct kp_opt *o, void *base)
{
    (void)o;
    (void)base;
}

/* An -X string as a JSON string (any string type). */
static json_t *kp_string_from_string(const struct kp_opt *o, const char *s,
                                     const char *key,
                                     struct kp_conf_errors *errs)
{
    if ((o->flags & KP_OPTF_NULLABLE) && strcmp(s, "null") == 0) {
        return json_null();
    }
    json_t *js = json_string(s);
    if (!js) {
        kp_conf_errors_add(errs, "%s: not valid UTF-8", key);
    }
    return js;
}

/* ------------------------------------------------------------------ */
/* int and int64: [min, max]; NULLABLE: null is def, outside the range   */

static int64_t kp_int_get(const struct kp_opt *o, const void *base)
{
    if (o->ops == &kp_ops_int) {
        return *KP_CFIELD(base, o, int);
    }
    return *KP_CFIELD(base, o, int64_t);
}

static void kp_int_set(const struct kp_opt *o, void *base, int64_t x)
{
    if (o->ops == &kp_ops_int) {
        *KP_FIELD(base, o, int) = (int)x;
    } else {
        *KP_FIELD(base, o, int64_t) = x;
    }
}

static void kp_int_init(const struct kp_opt *o, void *base)
{
    kp_int_set(o, base, o->def);
}

static void kp_int_parse(const struct kp_opt *o, void *base, json_t *v,
                         const char *key, struct kp_parse *ps)
{
    bool nullable = o->flags & KP_OPTF_NULLABLE;
    if (nullable && json_is_null(v)) {
        kp_int_set(o, base, o->def);
        return;
    }
    if (!json_is_integer(v)) {
        kp_type_error(ps->errs, key,
                      nullable ? "an integer or null" : "an integer", v);
        return;
    }
    json_int_t x = json_integer_value(v);
    if (x >= o->min && x <= o->max) {
        kp_int_set(o, base, x);
    } else if (o->max == INT_MAX || o->max == INT64_MAX) {
        kp_conf_errors_add(ps->errs, "%s: must be at least %lld, got %lld", key,
                           (long long)o->min, (long long)x);
    } else {
        kp_conf_errors_add(ps->errs, "%s: %lld is out of range %lld..%lld", key,
                           (long long)x, (long long)o->min, (long long)o->max);
    }
}

static json_t *kp_int_to_json(const struct kp_opt *o, const void *base)
{
    int64_t x = kp_int_get(o, base);
    if ((o->flags & KP_OPTF_NULLABLE) && x == o->def) {
        return json_null();
    }
    return json_integer(x);
}

static json_t *kp_int_from_string(const struct kp_opt *o, const char *s,
                                  const char *key, struct kp_conf_errors *errs)
{
    int64_t x;
    if ((o->flags & KP_OPTF_NULLABLE) && strcmp(s, "null") == 0) {
        return json_null();
    }
    if (kp_parse_i64(s, &x) != KP_OK) {
        kp_conf_errors_add(errs, "%s: expected an integer, got \"%s\"", key, s);
        return NULL;
    }
    return json_integer(x);
}

static bool kp_int_equal(const struct kp_opt *o, const void *a, const void *b)
{
    return kp_int_get(o, a) == kp_int_get(o, b);
}

const struct kp_opt_ops kp_ops_int = {
    kp_int_init,  kp_int_parse, kp_int_to_json, kp_int_from_string,
    kp_int_equal, kp_noop_free, NULL,
};

const struct kp_opt_ops kp_ops_int64 = {
    kp_int_init,  kp_int_parse, kp_int_to_json, kp_int_from_string,
    kp_int_equal, kp_noop_free, NULL,
};

/* ------------------------------------------------------------------ */
/* bool                                                                 */

static void kp_bool_init(const struct kp_opt *o, void *base)
{
    *KP_FIELD(base, o, bool) = o->def != 0;
}

static void kp_bool_parse(const struct kp_opt *o, void *base, json_t *v,
                          const char *key, struct kp_parse *ps)
{
    if (!json_is_boolean(v)) {
        kp_type_error(ps->errs, key, "a boolean", v);
        return;
    }
    *KP_FIELD(base, o, bool) = json_is_true(v);
}

static json_t *kp_bool_to_json(const struct kp_opt *o, const void *base)
{
    return json_boolean(*KP_CFIELD(base, o, bool));
}

static json_t *kp_bool_from_string(const struct kp_opt *o, const char *s,
                                   const char *key, struct kp_conf_errors *errs)
{
    (void)o;
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
}

static bool kp_bool_equal(const struct kp_opt *o, const void *a, const void *b)
{
    return *KP_CFIELD(a, o, bool) == *KP_CFIELD(b, o, bool);
}

const struct kp_opt_ops kp_ops_bool = {
    kp_bool_init,
    kp_bool_parse,
    kp_bool_to_json,
    kp_bool_from_string,
    kp_bool_equal,
    kp_noop_free,
    NULL,
};

/* ------------------------------------------------------------------ */
/* str: NULLABLE (null = NULL), and the string rules of its flags       */

static void kp_str_init(const struct kp_opt *o, void *base)
{
    *KP_FIELD(base, o, char *) = o->def_str ? kp_strdup(o->def_str) : NULL;
}

/* A user or group: a number below 2^32-1, or a name of [A-Za-z0-9._-]
 * (not starting with '-'), up to 32 bytes, perhaps ending in '$'. */
static bool kp_idname_valid(const char *s)
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

/* Checks a string value against the option's flags; KP_OK if usable. */
static int kp_str_check(const struct kp_opt *o, const char *s, const char *key,
                        struct kp_conf_errors *errs)
{
    const char *why;
    if ((o->flags & KP_OPTF_NONEMPTY) && *s == '\0') {
        kp_conf_errors_add(errs, "%s: must not be empty%s", key,
                           (o->flags & KP_OPTF_NULLABLE) ? " (null disables it)"
                                                         : "");
        return KP_ERROR;
    }
    if ((o->flags & KP_OPTF_TOPIC) && !kp_topic_name_valid(s, strlen(s))) {
        kp_conf_errors_add(errs,
                           "%s: \"%s\" is not a valid topic name "
                           "([A-Za-z0-9._-]{1,249}, not \".\" or \"..\")",
                           key, s);
        return KP_ERROR;
    }
    if ((o->flags & KP_OPTF_HOSTPORT) && (why = kp_hostport_why(s, NULL))) {
        kp_conf_errors_add(errs, "%s: \"%s\"%s", key, s, why);
        return KP_ERROR;
    }
    if ((o->flags & KP_OPTF_SOCKET) && strlen(s) > KP_CONF_SOCKET_PATH_MAX) {
        kp_conf_errors_add(errs,
                           "%s: %zu bytes is longer than a UNIX socket path "
                           "can be (%d)",
                           key, strlen(s), KP_CONF_SOCKET_PATH_MAX);
        return KP_ERROR;
    }
    if ((o->flags & KP_OPTF_IDNAME) && !kp_idname_valid(s)) {
        kp_conf_errors_add(errs, "%s: \"%s\" is neither a name nor a number",
                           key, s);
        return KP_ERROR;
    }
    return KP_OK;
}

static void kp_str_free(const struct kp_opt *o, void *base)
{
    free(*KP_FIELD(base, o, char *));
    *KP_FIELD(base, o, char *) = NULL;
}

static void kp_str_parse(const struct kp_opt *o, void *base, json_t *v,
                         const char *key, struct kp_parse *ps)
{
    bool nullable = o->flags & KP_OPTF_NULLABLE;
    if (nullable && json_is_null(v)) {
        kp_str_free(o, base);
        return;
    }
    if (!json_is_string(v)) {
        kp_type_error(ps->errs, key, nullable ? "a string or null" : "a string",
                      v);
        return;
    }
    const char *s = json_string_value(v);
    if (kp_str_check(o, s, key, ps->errs) != KP_OK) {
        return;
    }
    kp_str_free(o, base);
    *KP_FIELD(base, o, char *) =
        (o->flags & KP_OPTF_CRED) ? kp_cred_path(s, ps) : kp_strdup(s);
}

static json_t *kp_str_to_json(const struct kp_opt *o, const void *base)
{
    const char *s = *KP_CFIELD(base, o, char *);
    return s ? json_string(s) : json_null();
}

static bool kp_streq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool kp_str_equal(const struct kp_opt *o, const void *a, const void *b)
{
    return kp_streq(*KP_CFIELD(a, o, char *), *KP_CFIELD(b, o, char *));
}

const struct kp_opt_ops kp_ops_str = {
    kp_str_init,  kp_str_parse, kp_str_to_json, kp_string_from_string,
    kp_str_equal, kp_str_free,  NULL,
};

/* ------------------------------------------------------------------ */
/* secret: a nullable string that -t prints as KP_CONF_REDACTED and no   */
/* message ever quotes                                                  */

static void kp_secret_parse(const struct kp_opt *o, void *base, json_t *v,
                            const char *key, struct kp_parse *ps)
{
    if (json_is_null(v)) {
        o->ops->free(o, base);
        return;
    }
    if (!json_is_string(v)) {
        kp_type_error(ps->errs, key, "a string or null", v);
        return;
    }
    const char *s = json_string_value(v);
    if (*s == '\0') {
        kp_conf_errors_add(ps->errs, "%s: must not be empty", key);
        return;
    }
    if (strcmp(s, KP_CONF_REDACTED) == 0) {
        kp_conf_errors_add(ps->errs,
                           "%s: \"%s\" is what -t prints in place of a "
                           "secret; give the secret itself or its file",
                           key, KP_CONF_REDACTED);
        return;
    }
    o->ops->free(o, base);
    *KP_FIELD(base, o, char *) = kp_strdup(s);
}

static json_t *kp_secret_to_json(const struct kp_opt *o, const void *base)
{
    return *KP_CFIELD(base, o, char *) ? json_string(KP_CONF_REDACTED)
                                       : json_null();
}

static json_t *kp_secret_from_string(const struct kp_opt *o, const char *s,
                                     const char *key,
                                     struct kp_conf_errors *errs)
{
    (void)o;
    if (strcmp(s, "null") == 0) {
        return json_null();
    }
    json_t *js = json_string(s);
    if (!js) {
        kp_conf_errors_add(errs, "%s: not valid UTF-8", key);
    }
    return js;
}

/* Freed memory keeps its bytes: wipe a secret before it goes back. */
static void kp_secret_free(const struct kp_opt *o, void *base)
{
    char *s = *KP_FIELD(base, o, char *);
    if (s) {
        explicit_bzero(s, strlen(s));
    }
    kp_str_free(o, base);
}

const struct kp_opt_ops kp_ops_secret = {
    kp_str_init,
    kp_secret_parse,
    kp_secret_to_json,
    kp_secret_from_string,
    kp_str_equal,
    kp_secret_free,
    NULL,
};

/* ------------------------------------------------------------------ */
/* enum: an int-sized enum, written as one of names[]                   */

static void kp_enum_init(const struct kp_opt *o, void *base)
{
    *KP_FIELD(base, o, int) = (int)o->def;
}

static void kp_enum_parse(const struct kp_opt *o, void *base, json_t *v,
                          const char *key, struct kp_parse *ps)
{
    if (!json_is_string(v)) {
        kp_type_error(ps->errs, key, "a string", v);
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
    kp_conf_errors_add(ps->errs, "%s: \"%s\" is not one of %s", key, s, list);
}

static json_t *kp_enum_to_json(const struct kp_opt *o, const void *base)
{
    int v = *KP_CFIELD(base, o, int);
    kp_assert(v >= 0 && v < o->name_cnt);
    return json_string(o->names[v]);
}

static bool kp_intfield_equal(const struct kp_opt *o, const void *a,
                              const void *b)
{
    return *KP_CFIELD(a, o, int) == *KP_CFIELD(b, o, int);
}

const struct kp_opt_ops kp_ops_enum = {
    kp_enum_init,
    kp_enum_parse,
    kp_enum_to_json,
    kp_string_from_string,
    kp_intfield_equal,
    kp_noop_free,
    NULL,
};

/* ------------------------------------------------------------------ */
/* acks: "all" (-1), 0 or 1                                             */

static void kp_acks_parse(const struct kp_opt *o, void *base, json_t *v,
                          const char *key, struct kp_parse *ps)
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
        kp_type_error(ps->errs, key, "\"all\", 1 or 0", v);
        return;
    }
    if (x < -1 || x > 1) {
        kp_conf_errors_add(ps->errs, "%s: expected \"all\" (-1), 1 or 0", key);
        return;
    }
    *KP_FIELD(base, o, int) = (int)x;
}

static json_t *kp_acks_to_json(const struct kp_opt *o, const void *base)
{
    int v = *KP_CFIELD(base, o, int);
    return v == -1 ? json_string("all") : json_integer(v);
}

static json_t *kp_acks_from_string(const struct kp_opt *o, const char *s,
                                   const char *key, struct kp_conf_errors *errs)
{
    int64_t x;
    if (kp_parse_i64(s, &x) == KP_OK) {
        return json_integer(x);
    }
    /* "all", or an error the parser reports */
    return kp_string_from_string(o, s, key, errs);
}

const struct kp_opt_ops kp_ops_acks = {
    kp_enum_init,
    kp_acks_parse,
    kp_acks_to_json,
    kp_acks_from_string,
    kp_intfield_equal,
    kp_noop_free,
    NULL,
};

/* ------------------------------------------------------------------ */
/* level: a codec level; null or "default" = KP_LEVEL_DEFAULT            */

static void kp_level_parse(const struct kp_opt *o, void *base, json_t *v,
                           const char *key, struct kp_parse *ps)
{
    if (json_is_null(v) ||
        (json_is_string(v) && strcmp(json_string_value(v), "default") == 0)) {
        *KP_FIELD(base, o, int) = KP_LEVEL_DEFAULT;
        return;
    }
    if (!json_is_integer(v)) {
        kp_type_error(ps->errs, key, "an integer or null (codec default)", v);
        return;
    }
    json_int_t x = json_integer_value(v);
    if (x < -1000000 || x > 1000000) {
        kp_conf_errors_add(ps->errs, "%s: %lld is not a compression level", key,
                           (long long)x);
        return;
    }
    /* the range depends on the codec: checked with the section */
    *KP_FIELD(base, o, int) = (int)x;
}

static json_t *kp_level_to_json(const struct kp_opt *o, const void *base)
{
    int v = *KP_CFIELD(base, o, int);
    return v == KP_LEVEL_DEFAULT ? json_null() : json_integer(v);
}

static json_t *kp_level_from_string(const struct kp_opt *o, const char *s,
                                    const char *key,
                                    struct kp_conf_errors *errs)
{
    int64_t x;
    (void)o;
    if (!strcmp(s, "null") || !strcmp(s, "default")) {
        return json_null();
    }
    if (kp_parse_i64(s, &x) != KP_OK) {
        kp_conf_errors_add(errs, "%s: expected an integer, got \"%s\"", key, s);
        return NULL;
    }
    return json_integer(x);
}

const struct kp_opt_ops kp_ops_level = {
    kp_enum_init,
    kp_level_parse,
    kp_level_to_json,
    kp_level_from_string,
    kp_intfield_equal,
    kp_noop_free,
    NULL,
};

/* ------------------------------------------------------------------ */
/* strv and uintv: arrays with a count; NULLABLE: null = NULL (unset)   */

static void kp_vec_init(const struct kp_opt *o, void *base)
{
    *KP_FIELD(base, o, void *) = NULL;
    *KP_COUNT(base, o) = 0;
}

/* The checks both array types share; true when v's elements are next. */
static bool kp_vec_accept(const struct kp_opt *o, void *base, json_t *v,
                          const char *key, struct kp_parse *ps)
{
    bool nullable = o->flags & KP_OPTF_NULLABLE;
    if (nullable && json_is_null(v)) {
        o->ops->free(o, base);
        return false;
    }
    if (!json_is_array(v)) {
        kp_type_error(ps->errs, key, nullable ? "an array or null" : "an array",
                      v);
        return false;
    }
    if ((o->flags & KP_OPTF_NONEMPTY) && json_array_size(v) == 0) {
        kp_conf_errors_add(ps->errs, "%s: must not be empty", key);
        return false;
    }
    return true;
}

/* Splits an -X list at commas (blanks around items trimmed); "" is no
 * items. Each item goes through item(); NULL after any error. */
static json_t *kp_split_list(const char *s, const char *key,
                             struct kp_conf_errors *errs,
                             json_t *(*item)(const char *s, const char *key,
                                             struct kp_conf_errors *errs))
{
    char ekey[KP_CONF_KEY_LEN];
    json_t *arr = json_array();
    bool ok = true;

    for (size_t i = 0; *s; i++) {
        const char *end = strchr(s, ',');
        const char *b = s, *e = end ? end : s + strlen(s);
        while (b < e && (*b == ' ' || *b == '\t')) {
            b++;
        }
        while (e > b && (e[-1] == ' ' || e[-1] == '\t')) {
            e--;
        }
        char *text = kp_strndup(b, (size_t)(e - b));
        kp_keyf(ekey, sizeof(ekey), "%s[%zu]", key, i);
        json_t *jv = item(text, ekey, errs);
        free(text);
        if (jv) {
            json_array_append_new(arr, jv);
        } else {
            ok = false;
        }
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

static void kp_strv_free(const struct kp_opt *o, void *base)
{
    char **v = *KP_FIELD(base, o, char **);
    for (size_t i = 0; v && i < *KP_COUNT(base, o); i++) {
        free(v[i]);
    }
    free(v);
    kp_vec_init(o, base);
}

static void kp_strv_parse(const struct kp_opt *o, void *base, json_t *v,
                          const char *key, struct kp_parse *ps)
{
    char ekey[KP_CONF_KEY_LEN];
    const char *why;
    if (!kp_vec_accept(o, base, v, key, ps)) {
        return;
    }
    size_t n = json_array_size(v), cnt = 0;
    char **arr = kp_calloc(n ? n : 1, sizeof(*arr));
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        kp_keyf(ekey, sizeof(ekey), "%s[%zu]", key, i);
        if (!json_is_string(e)) {
            kp_type_error(ps->errs, ekey, "a string", e);
            continue;
        }
        const char *s = json_string_value(e);
        if ((o->flags & KP_OPTF_HOSTPORT) && (why = kp_hostport_why(s, NULL))) {
            kp_conf_errors_add(ps->errs, "%s: \"%s\"%s", ekey, s, why);
        }
        if ((o->flags & KP_OPTF_TOPICPAT) && !kp_topic_pattern_valid(s)) {
            kp_conf_errors_add(ps->errs,
                               "%s: \"%s\" is neither a topic name nor a "
                               "prefix ending in '*'",
                               ekey, s);
        }
        arr[cnt++] = kp_strdup(s);
    }
    kp_strv_free(o, base);
    *KP_FIELD(base, o, char **) = arr;
    *KP_COUNT(base, o) = cnt;
}

static json_t *kp_strv_to_json(const struct kp_opt *o, const void *base)
{
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

static json_t *kp_strv_item(const char *s, const char *key,
                            struct kp_conf_errors *errs)
{
    json_t *js = json_string(s);
    if (!js) {
        kp_conf_errors_add(errs, "%s: not valid UTF-8", key);
    }
    return js;
}

static json_t *kp_strv_from_string(const struct kp_opt *o, const char *s,
                                   const char *key, struct kp_conf_errors *errs)
{
    if ((o->flags & KP_OPTF_NULLABLE) && strcmp(s, "null") == 0) {
        return json_null();
    }
    return kp_split_list(s, key, errs, kp_strv_item);
}

static bool kp_strv_equal(const struct kp_opt *o, const void *a, const void *b)
{
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

const struct kp_opt_ops kp_ops_strv = {
    kp_vec_init,
    kp_strv_parse,
    kp_strv_to_json,
    kp_strv_from_string,
    kp_strv_equal,
    kp_strv_free,
    NULL,
};

static void kp_uintv_free(const struct kp_opt *o, void *base)
{
    free(*KP_FIELD(base, o, uint32_t *));
    kp_vec_init(o, base);
}

static void kp_uintv_parse(const struct kp_opt *o, void *base, json_t *v,
                           const char *key, struct kp_parse *ps)
{
    char ekey[KP_CONF_KEY_LEN];
    if (!kp_vec_accept(o, base, v, key, ps)) {
        return;
    }
    size_t n = json_array_size(v), cnt = 0;
    uint32_t *arr = kp_calloc(n ? n : 1, sizeof(*arr));
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        kp_keyf(ekey, sizeof(ekey), "%s[%zu]", key, i);
        if (!json_is_integer(e)) {
            kp_type_error(ps->errs, ekey, "an integer", e);
            continue;
        }
        json_int_t x = json_integer_value(e);
        /* (uid_t)-1 means "no id" to the kernel */
        if (x < 0 || x >= (json_int_t)UINT32_MAX) {
            kp_conf_errors_add(ps->errs, "%s: %lld is not a valid id", ekey,
                               (long long)x);
            continue;
        }
        arr[cnt++] = (uint32_t)x;
    }
    kp_uintv_free(o, base);
    *KP_FIELD(base, o, uint32_t *) = arr;
    *KP_COUNT(base, o) = cnt;
}

static json_t *kp_uintv_to_json(const struct kp_opt *o, const void *base)
{
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

static json_t *kp_uintv_item(const char *s, const char *key,
                             struct kp_conf_errors *errs)
{
    int64_t x;
    if (kp_parse_i64(s, &x) != KP_OK) {
        kp_conf_errors_add(errs, "%s: expected an integer, got \"%s\"", key, s);
        return NULL;
    }
    return json_integer(x);
}

static json_t *kp_uintv_from_string(const struct kp_opt *o, const char *s,
                                    const char *key,
                                    struct kp_conf_errors *errs)
{
    if ((o->flags & KP_OPTF_NULLABLE) && strcmp(s, "null") == 0) {
        return json_null();
    }
    return kp_split_list(s, key, errs, kp_uintv_item);
}

static bool kp_uintv_equal(const struct kp_opt *o, const void *a, const void *b)
{
    const uint32_t *va = *KP_CFIELD(a, o, uint32_t *);
    const uint32_t *vb = *KP_CFIELD(b, o, uint32_t *);
    size_t n = *KP_CCOUNT(a, o);
    return !va == !vb && n == *KP_CCOUNT(b, o) &&
           (n == 0 || memcmp(va, vb, n * sizeof(*va)) == 0);
}

const struct kp_opt_ops kp_ops_uintv = {
    kp_vec_init,
    kp_uintv_parse,
    kp_uintv_to_json,
    kp_uintv_from_string,
    kp_uintv_equal,
    kp_uintv_free,
    NULL,
};

/* ------------------------------------------------------------------ */
/* sep: one byte, not '\n'                                              */

static void kp_sep_init(const struct kp_opt *o, void *base)
{
    *KP_FIELD(base, o, uint8_t) = (uint8_t)o->def;
}

static void kp_sep_parse(const struct kp_opt *o, void *base, json_t *v,
                         const char *key, struct kp_parse *ps)
{
    if (!json_is_string(v)) {
        kp_type_error(ps->errs, key, "a one-byte string", v);
        return;
    }
    const char *s = json_string_value(v);
    if (json_string_length(v) != 1) {
        kp_conf_errors_add(ps->errs, "%s: expected one byte, got \"%s\"", key,
                           s);
        return;
    }
    if (s[0] == '\n') {
        kp_conf_errors_add(ps->errs, "%s: cannot be the line end \"\\n\"", key);
        return;
    }
    *KP_FIELD(base, o, uint8_t) = (uint8_t)s[0];
}

static json_t *kp_sep_to_json(const struct kp_opt *o, const void *base)
{
    char s = (char)*KP_CFIELD(base, o, uint8_t);
    return json_stringn(&s, 1);
}

static bool kp_sep_equal(const struct kp_opt *o, const void *a, const void *b)
{
    return *KP_CFIELD(a, o, uint8_t) == *KP_CFIELD(b, o, uint8_t);
}

const struct kp_opt_ops kp_ops_sep = {
    kp_sep_init,  kp_sep_parse, kp_sep_to_json, kp_string_from_string,
    kp_sep_equal, kp_noop_free, NULL,
};

/* ------------------------------------------------------------------ */
/* mode: permission bits 0..0777, an octal string "0660" or an integer   */

static void kp_mode_init(const struct kp_opt *o, void *base)
{
    *KP_FIELD(base, o, unsigned) = (unsigned)o->def;
}

static void kp_mode_parse(const struct kp_opt *o, void *base, json_t *v,
                          const char *key, struct kp_parse *ps)
{
    long long x = -1;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t len = strlen(s);
        if (len == 0 || len > 5 || strspn(s, "01234567") != len) {
            kp_conf_errors_add(ps->errs,
                               "%s: \"%s\" is not an octal mode like \"0660\"",
                               key, s);
            return;
        }
        x = strtoll(s, NULL, 8);
    } else {
        kp_type_error(ps->errs, key, "an octal string like \"0660\"", v);
        return;
    }
    if (x < 0 || x > 07777) {
        kp_conf_errors_add(ps->errs, "%s: %lld is not a permission mode", key,
                           x);
        return;
    }
    /* a socket has no use for them, and a daemon should never set them */
    if (x > 0777) {
        kp_conf_errors_add(ps->errs,
                           "%s: %04llo sets setuid, setgid or sticky bits "
                           "(at most 0777)",
                           key, x);
        return;
    }
    *KP_FIELD(base, o, unsigned) = (unsigned)x;
}

static json_t *kp_mode_to_json(const struct kp_opt *o, const void *base)
{
    char s[16];
    snprintf(s, sizeof(s), "%04o", *KP_CFIELD(base, o, unsigned));
    return json_string(s);
}

static bool kp_mode_equal(const struct kp_opt *o, const void *a, const void *b)
{
    return *KP_CFIELD(a, o, unsigned) == *KP_CFIELD(b, o, unsigned);
}

const struct kp_opt_ops kp_ops_mode = {
    kp_mode_init,
    kp_mode_parse,
    kp_mode_to_json,
    kp_string_from_string,
    kp_mode_equal,
    kp_noop_free,
    NULL,
};

/* ------------------------------------------------------------------ */
/* Maps of strings: -X gives them whole as "NAME=VALUE,NAME2=VALUE2"     */

static json_t *kp_split_map(const char *s, const char *key,
                            struct kp_conf_errors *errs)
{
    json_t *arr = kp_split_list(s, key, errs, kp_strv_item);
    if (!arr) {
        return NULL;
    }
    json_t *obj = json_object();
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        const char *item = json_string_value(e);
        const char *eq = strchr(item, '=');
        if (!eq || eq == item) {
            kp_conf_errors_add(errs, "%s[%zu]: expected NAME=VALUE", key, i);
            json_decref(obj);
            obj = NULL;
            break;
        }
        char *name = kp_strndup(item, (size_t)(eq - item));
        json_object_set_new(obj, name, json_string(eq + 1));
        free(name);
    }
    json_decref(arr);
    return obj;
}

static json_t *kp_map_from_string(const struct kp_opt *o, const char *s,
                                  const char *key, struct kp_conf_errors *errs)
{
    (void)o;
    return kp_split_map(s, key, errs);
}

/* headers: {"name": "value"} into struct kp_static_header[] */

static void kp_headers_free(const struct kp_opt *o, void *base)
{
    struct kp_static_header *h = *KP_FIELD(base, o, struct kp_static_header *);
    for (size_t i = 0; h && i < *KP_COUNT(base, o); i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
    kp_vec_init(o, base);
}

static void kp_headers_parse(const struct kp_opt *o, void *base, json_t *v,
                             const char *key, struct kp_parse *ps)
{
    char ekey[KP_CONF_KEY_LEN];
    const char *name;
    json_t *hv;
    if (!json_is_object(v)) {
        kp_type_error(ps->errs, key, "an object of strings", v);
        return;
    }
    size_t n = json_object_size(v), cnt = 0;
    struct kp_static_header *h = kp_calloc(n ? n : 1, sizeof(*h));
    json_object_foreach(v, name, hv)
    {
        kp_keyf(ekey, sizeof(ekey), "%s.%s", key, name);
        if (*name == '\0') {
            kp_conf_errors_add(ps->errs, "%s: a header name must not be empty",
                               key);
        } else if (!json_is_string(hv)) {
            kp_type_error(ps->errs, ekey, "a string", hv);
        } else {
            h[cnt].name = kp_strdup(name);
            h[cnt++].value = kp_strdup(json_string_value(hv));
        }
    }
    kp_headers_free(o, base);
    *KP_FIELD(base, o, struct kp_static_header *) = h;
    *KP_COUNT(base, o) = cnt;
}

static json_t *kp_headers_to_json(const struct kp_opt *o, const void *base)
{
    const struct kp_static_header *h =
        *KP_CFIELD(base, o, struct kp_static_header *);
    json_t *obj = json_object();
    for (size_t i = 0; i < *KP_CCOUNT(base, o); i++) {
        json_object_set_new(obj, h[i].name, json_string(h[i].value));
    }
    return obj;
}

static bool kp_headers_equal(const struct kp_opt *o, const void *a,
                             const void *b)
{
    const struct kp_static_header *ha =
        *KP_CFIELD(a, o, struct kp_static_header *);
    const struct kp_static_header *hb =
        *KP_CFIELD(b, o, struct kp_static_header *);
    size_t n = *KP_CCOUNT(a, o);
    if (n != *KP_CCOUNT(b, o)) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ha[i].name, hb[i].name) != 0 ||
            strcmp(ha[i].value, hb[i].value) != 0) {
            return false;
        }
    }
    return true;
}

const struct kp_opt_ops kp_ops_headers = {
    kp_vec_init,
    kp_headers_parse,
    kp_headers_to_json,
    kp_map_from_string,
    kp_headers_equal,
    kp_headers_free,
    NULL,
};

/* address_map: {"host:port": "host:port"} into struct kp_addr_map[] */

static void kp_addrmap_free(const struct kp_opt *o, void *base)
{
    struct kp_addr_map *m = *KP_FIELD(base, o, struct kp_addr_map *);
    for (size_t i = 0; m && i < *KP_COUNT(base, o); i++) {
        free(m[i].from);
        kp_hostport_deinit(&m[i].to);
    }
    free(m);
    kp_vec_init(o, base);
}

/* One entry into *m; false (error added) when either side is not valid. */
static bool kp_addrmap_entry(const char *from, json_t *tv, const char *key,
                             struct kp_addr_map *m, struct kp_parse *ps)
{
    char ekey[KP_CONF_KEY_LEN];
    const char *why = kp_hostport_why(from, NULL);
    kp_keyf(ekey, sizeof(ekey), "%s.%s", key, from);
    if (why) {
        kp_conf_errors_add(ps->errs, "%s: \"%s\"%s", key, from, why);
        return false;
    }
    if (!json_is_string(tv)) {
        kp_type_error(ps->errs, ekey, "a string", tv);
        return false;
    }
    why = kp_hostport_why(json_string_value(tv), &m->to);
    if (why) {
        kp_conf_errors_add(ps->errs, "%s: \"%s\"%s", ekey,
                           json_string_value(tv), why);
        return false;
    }
    m->from = kp_strdup(from);
    return true;
}

static void kp_addrmap_parse(const struct kp_opt *o, void *base, json_t *v,
                             const char *key, struct kp_parse *ps)
{
    const char *from;
    json_t *tv;
    if (!json_is_object(v)) {
        kp_type_error(ps->errs, key, "an object", v);
        return;
    }
    size_t n = json_object_size(v), cnt = 0;
    struct kp_addr_map *m = kp_calloc(n ? n : 1, sizeof(*m));
    json_object_foreach(v, from, tv)
    {
        if (kp_addrmap_entry(from, tv, key, &m[cnt], ps)) {
            cnt++;
        }
    }
    kp_addrmap_free(o, base);
    *KP_FIELD(base, o, struct kp_addr_map *) = m;
    *KP_COUNT(base, o) = cnt;
}

static json_t *kp_addrmap_to_json(const struct kp_opt *o, const void *base)
{
    const struct kp_addr_map *m = *KP_CFIELD(base, o, struct kp_addr_map *);
    json_t *obj = json_object();
    for (size_t i = 0; i < *KP_CCOUNT(base, o); i++) {
        char *to = kp_hostport_format(&m[i].to);
        json_object_set_new(obj, m[i].from, json_string(to));
        free(to);
    }
    return obj;
}

static bool kp_addrmap_equal(const struct kp_opt *o, const void *a,
                             const void *b)
{
    const struct kp_addr_map *ma = *KP_CFIELD(a, o, struct kp_addr_map *);
    const struct kp_addr_map *mb = *KP_CFIELD(b, o, struct kp_addr_map *);
    size_t n = *KP_CCOUNT(a, o);
    if (n != *KP_CCOUNT(b, o)) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ma[i].from, mb[i].from) != 0 ||
            strcmp(ma[i].to.host, mb[i].to.host) != 0 ||
            ma[i].to.port != mb[i].to.port) {
            return false;
        }
    }
    return true;
}

const struct kp_opt_ops kp_ops_addrmap = {
    kp_vec_init,
    kp_addrmap_parse,
    kp_addrmap_to_json,
    kp_map_from_string,
    kp_addrmap_equal,
    kp_addrmap_free,
    NULL,
};

/* ------------------------------------------------------------------ */
/* Containers                                                           */

/* -X cannot replace a container: it names one key inside. */
static int kp_descend_whole(const char *key, const char *example,
                            struct kp_conf_errors *errs)
{
    kp_conf_errors_add(errs,
                       "%s: cannot be set whole with -X; set one key, e.g. %s",
                       key, example);
    return KP_AGAIN;
}

/* section: an embedded struct filled by o->sub; NULLABLE: null = default */

static void kp_section_init(const struct kp_opt *o, void *base)
{
    kp_table_init(o->sub, KP_FIELD(base, o, char));
}

static void kp_section_free(const struct kp_opt *o, void *base)
{
    kp_table_free(o->sub, KP_FIELD(base, o, char));
}

static void kp_section_parse(const struct kp_opt *o, void *base, json_t *v,
                             const char *key, struct kp_parse *ps)
{
    bool nullable = o->flags & KP_OPTF_NULLABLE;
    if (nullable && json_is_null(v)) {
        kp_section_free(o, base);
        kp_section_init(o, base);
        return;
    }
    if (!json_is_object(v)) {
        kp_type_error(ps->errs, key,
                      nullable ? "an object or null" : "an object", v);
        return;
    }
    kp_table_parse(o->sub, KP_FIELD(base, o, char), v, key, ps);
}

static json_t *kp_section_to_json(const struct kp_opt *o, const void *base)
{
    return kp_table_to_json(o->sub, KP_CFIELD(base, o, char));
}

static bool kp_section_equal(const struct kp_opt *o, const void *a,
                             const void *b)
{
    return kp_table_equal(o->sub, KP_CFIELD(a, o, char), KP_CFIELD(b, o, char));
}

static int kp_section_descend(const struct kp_opt *o, const char *rest,
                              struct kp_step *st, struct kp_conf_errors *errs)
{
    char example[KP_CONF_KEY_LEN];
    if (*rest == '\0') {
        kp_keyf(example, sizeof(example), "%s.%s", st->key,
                o->sub->opts[0].name);
        return kp_descend_whole(st->key, example, errs);
    }
    if (rest[0] != '.') {
        return KP_ERROR;
    }
    if (st->target) {
        st->target =
            kp_json_child_obj(st->target, o->name, o->flags & KP_OPTF_NULLABLE);
    }
    st->table = o->sub;
    st->rest = rest + 1;
    return KP_OK;
}

const struct kp_opt_ops kp_ops_section = {
    kp_section_init,  kp_section_parse, kp_section_to_json, NULL,
    kp_section_equal, kp_section_free,  kp_section_descend,
};

/* topics: {"NAME": {producer keys}}, each over the `producer` section */

static void kp_topics_free(const struct kp_opt *o, void *base)
{
    struct kp_topic_conf *t = *KP_FIELD(base, o, struct kp_topic_conf *);
    for (size_t i = 0; t && i < *KP_COUNT(base, o); i++) {
        free(t[i].name);
    }
    free(t);
    kp_vec_init(o, base);
}

/* One topic entry into *t, starting from the resolved `producer`. */
static bool kp_topic_entry(const char *name, json_t *tv, const char *key,
                           struct kp_topic_conf *t, struct kp_parse *ps)
{
    char tkey[KP_CONF_KEY_LEN];
    kp_key_join(tkey, sizeof(tkey), key, name);
    if (!kp_topic_name_valid(name, strlen(name))) {
        kp_conf_errors_add(ps->errs,
                           "%s: not a valid topic name "
                           "([A-Za-z0-9._-]{1,249}, not \".\" or \"..\")",
                           tkey);
        return false;
    }
    if (!json_is_object(tv)) {
        kp_type_error(ps->errs, tkey, "an object", tv);
        return false;
    }
    t->name = kp_strdup(name);
    t->producer = ps->conf->producer;
    kp_table_parse_keys(&kp_producer_table, &t->producer, tv, tkey, ps);
    /* levels are per codec: another codec starts from its default */
    if (json_object_get(tv, "compression") &&
        !json_object_get(tv, "compression_level")) {
        t->producer.compression_level = KP_LEVEL_DEFAULT;
    }
    kp_producer_resolve(&t->producer, json_object_get(tv, "idempotence") ||
                                          ps->producer_idemp_set);
    kp_producer_check(&t->producer, tkey, ps->errs);
    return true;
}

static void kp_topics_parse(const struct kp_opt *o, void *base, json_t *v,
                            const char *key, struct kp_parse *ps)
{
    const char *name;
    json_t *tv;
    if (!json_is_object(v)) {
        kp_type_error(ps->errs, key, "an object", v);
        return;
    }
    kp_topics_free(o, base);
    size_t n = json_object_size(v), cnt = 0;
    struct kp_topic_conf *topics = kp_calloc(n ? n : 1, sizeof(*topics));
    json_object_foreach(v, name, tv)
    {
        if (kp_topic_entry(name, tv, key, &topics[cnt], ps)) {
            cnt++;
        }
    }
    *KP_FIELD(base, o, struct kp_topic_conf *) = topics;
    *KP_COUNT(base, o) = cnt;
}

static json_t *kp_topics_to_json(const struct kp_opt *o, const void *base)
{
    const struct kp_topic_conf *t = *KP_CFIELD(base, o, struct kp_topic_conf *);
    json_t *obj = json_object();
    for (size_t i = 0; i < *KP_CCOUNT(base, o); i++) {
        json_object_set_new(obj, t[i].name,
                            kp_table_to_json(o->sub, &t[i].producer));
    }
    return obj;
}

static bool kp_topics_equal(const struct kp_opt *o, const void *a,
                            const void *b)
{
    const struct kp_topic_conf *ta = *KP_CFIELD(a, o, struct kp_topic_conf *);
    const struct kp_topic_conf *tb = *KP_CFIELD(b, o, struct kp_topic_conf *);
    size_t n = *KP_CCOUNT(a, o);
    if (n != *KP_CCOUNT(b, o)) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ta[i].name, tb[i].name) != 0 ||
            !kp_table_equal(o->sub, &ta[i].producer, &tb[i].producer)) {
            return false;
        }
    }
    return true;
}

/* ".NAME.KEY": NAME may contain dots, producer keys never do. */
static int kp_topics_descend(const struct kp_opt *o, const char *rest,
                             struct kp_step *st, struct kp_conf_errors *errs)
{
    if (*rest == '\0') {
        return kp_descend_whole(st->key, "topics.NAME.linger_ms", errs);
    }
    const char *dot = strrchr(rest, '.');
    if (rest[0] != '.' || dot == rest) {
        return KP_ERROR;
    }
    char *name = kp_strndup(rest + 1, (size_t)(dot - rest - 1));
    int rc = KP_OK;
    if (!kp_topic_name_valid(name, strlen(name))) {
        kp_conf_errors_add(errs,
                           "%s.%s: not a valid topic name "
                           "([A-Za-z0-9._-]{1,249}, not \".\" or \"..\")",
                           st->key, name);
        rc = KP_AGAIN;
    } else {
        json_t *topics =
            st->target ? kp_json_child_obj(st->target, o->name, false) : NULL;
        st->target = topics ? kp_json_child_obj(topics, name, false) : NULL;
        kp_keyf(st->key, sizeof(st->key), "%s.%s", o->name, name);
        st->table = o->sub;
        st->rest = dot + 1;
    }
    free(name);
    return rc;
}

const struct kp_opt_ops kp_ops_topics = {
    kp_vec_init,     kp_topics_parse, kp_topics_to_json, NULL,
    kp_topics_equal, kp_topics_free,  kp_topics_descend,
};

/* listeners: an array of o->sub objects; default one at the default path */

static void kp_listeners_free(const struct kp_opt *o, void *base)
{
    struct kp_listener_conf *l = *KP_FIELD(base, o, struct kp_listener_conf *);
    for (size_t i = 0; l && i < *KP_COUNT(base, o); i++) {
        kp_table_free(o->sub, &l[i]);
    }
    free(l);
    kp_vec_init(o, base);
}

static void kp_listeners_init(const struct kp_opt *o, void *base)
{
    struct kp_listener_conf *l = kp_calloc(1, sizeof(*l));
    kp_table_init(o->sub, l);
    l->path = kp_strdup(KP_CONF_DEFAULT_SOCK);
    *KP_FIELD(base, o, struct kp_listener_conf *) = l;
    *KP_COUNT(base, o) = 1;
}

static void kp_listeners_parse(const struct kp_opt *o, void *base, json_t *v,
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
    kp_listeners_free(o, base);
    struct kp_listener_conf *ls = kp_calloc(n, sizeof(*ls));
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        kp_keyf(lkey, sizeof(lkey), "%s[%zu]", key, i);
        kp_table_init(o->sub, &ls[i]);
        if (!json_is_object(e)) {
            kp_type_error(ps->errs, lkey, "an object", e);
            continue;
        }
        kp_table_parse(o->sub, &ls[i], e, lkey, ps);
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

static json_t *kp_listeners_to_json(const struct kp_opt *o, const void *base)
{
    const struct kp_listener_conf *l =
        *KP_CFIELD(base, o, struct kp_listener_conf *);
    json_t *a = json_array();
    for (size_t i = 0; i < *KP_CCOUNT(base, o); i++) {
        json_array_append_new(a, kp_table_to_json(o->sub, &l[i]));
    }
    return a;
}

static bool kp_listeners_equal(const struct kp_opt *o, const void *a,
                               const void *b)
{
    const struct kp_listener_conf *la =
        *KP_CFIELD(a, o, struct kp_listener_conf *);
    const struct kp_listener_conf *lb =
        *KP_CFIELD(b, o, struct kp_listener_conf *);
    size_t n = *KP_CCOUNT(a, o);
    if (n != *KP_CCOUNT(b, o)) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!kp_table_equal(o->sub, &la[i], &lb[i])) {
            return false;
        }
    }
    return true;
}

/* "[N]" or ".N" then ".KEY"; sets *idx; KP_ERROR when not that shape. */
static int kp_listener_index(const char *rest, size_t *idx, const char **key)
{
    const char *p = rest;
    bool bracket = *p == '[';
    size_t n = 0;

    if ((*p != '[' && *p != '.') || p[1] < '0' || p[1] > '9') {
        return KP_ERROR;
    }
    for (p++; *p >= '0' && *p <= '9'; p++) {
        if (n <= KP_CONF_MAX_LISTENERS) {
            n = n * 10 + (size_t)(*p - '0');
        }
    }
    if ((bracket && *p++ != ']') || *p != '.') {
        return KP_ERROR;
    }
    *idx = n;
    *key = p + 1;
    return KP_OK;
}

/*
 * The file's listener N. A file without listeners has the default one, so
 * that listeners[0].KEY changes it. N at or past the count is an error:
 * -X changes listeners, it never adds one (a half-described listener from
 * the command line is more likely a typo than a wish).
 */
static int kp_listeners_descend(const struct kp_opt *o, const char *rest,
                                struct kp_step *st, struct kp_conf_errors *errs)
{
    size_t idx;
    const char *sub;
    if (*rest == '\0') {
        return kp_descend_whole(st->key, "listeners[0].path", errs);
    }
    if (kp_listener_index(rest, &idx, &sub) != KP_OK) {
        return KP_ERROR;
    }
    json_t *arr = st->target ? json_object_get(st->target, o->name) : NULL;
    if (st->target && !arr) {
        json_t *l = json_object();
        json_object_set_new(l, "path", json_string(KP_CONF_DEFAULT_SOCK));
        arr = json_array();
        json_array_append_new(arr, l);
        json_object_set_new(st->target, o->name, arr);
    }
    st->target = NULL;
    if (json_is_array(arr)) {
        size_t cnt = json_array_size(arr);
        if (idx >= cnt) {
            kp_conf_errors_add(errs,
                               "%s[%zu]: no such listener (there %s %zu; -X "
                               "changes listeners, the file adds them)",
                               o->name, idx, cnt == 1 ? "is" : "are", cnt);
            return KP_AGAIN;
        }
        json_t *e = json_array_get(arr, idx);
        st->target = json_is_object(e) ? e : NULL;
    }
    kp_keyf(st->key, sizeof(st->key), "%s[%zu]", o->name, idx);
    st->table = o->sub;
    st->rest = sub;
    return KP_OK;
}

const struct kp_opt_ops kp_ops_listeners = {
    kp_listeners_init,  kp_listeners_parse, kp_listeners_to_json, NULL,
    kp_listeners_equal, kp_listeners_free,  kp_listeners_descend,
};
