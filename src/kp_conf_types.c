/*
 * kp_conf_types.c - the configuration's scalar and list option types: one
 * struct kp_opt_ops per type (init, parse, to_json, from_string, equal,
 * free), and the generic walks over a table that call them. Maps and
 * containers are in kp_conf_containers.c.
 *
 * A type's functions sit together, in the order of its ops struct, and
 * end with the struct; nothing else in kp_conf switches on a type.
 */
#include "kp_conf_impl.h"

#include <limits.h>
#include <stdio.h>

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

void kp_vec_init(const struct kp_opt *o, void *base)
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
json_t *kp_split_list(const char *s, const char *key,
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

json_t *kp_strv_item(const char *s, const char *key,
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
