/*
 * kp_conf_containers.c - the option types that hold other values: the
 * maps (listener headers, address_map; -X gives them whole as
 * "NAME=VALUE,...") and the containers an -X path steps into (a section,
 * topics by name, listeners by index), each as one struct kp_opt_ops.
 */
#include "kp_conf_impl.h"

#include <stdio.h>

/* ------------------------------------------------------------------ */
/* Maps of strings: -X gives them whole as "NAME=VALUE,NAME2=VALUE2"     */

/* Whether two arrays of `size`-byte elements (the field of o, with its
 * count) are equal element by element. */
static bool kp_array_equal(const struct kp_opt *o, const void *a,
                           const void *b, size_t size,
                           bool (*eq)(const struct kp_opt *, const void *,
                                      const void *))
{
    const char *va = *KP_CFIELD(a, o, const char *);
    const char *vb = *KP_CFIELD(b, o, const char *);
    size_t n = *KP_CCOUNT(a, o);

    if (n != *KP_CCOUNT(b, o)) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!eq(o, va + i * size, vb + i * size)) {
            return false;
        }
    }
    return true;
}

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

static bool kp_header_equal(const struct kp_opt *o, const void *x,
                            const void *y)
{
    const struct kp_static_header *a = x, *b = y;
    (void)o;
    return strcmp(a->name, b->name) == 0 && strcmp(a->value, b->value) == 0;
}

static bool kp_headers_equal(const struct kp_opt *o, const void *a,
                             const void *b)
{
    return kp_array_equal(o, a, b, sizeof(struct kp_static_header),
                          kp_header_equal);
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

static bool kp_addr_equal(const struct kp_opt *o, const void *x,
                          const void *y)
{
    const struct kp_addr_map *a = x, *b = y;
    (void)o;
    return strcmp(a->from, b->from) == 0 &&
           strcmp(a->to.host, b->to.host) == 0 && a->to.port == b->to.port;
}

static bool kp_addrmap_equal(const struct kp_opt *o, const void *a,
                             const void *b)
{
    return kp_array_equal(o, a, b, sizeof(struct kp_addr_map),
                          kp_addr_equal);
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

static bool kp_topic_equal(const struct kp_opt *o, const void *x,
                           const void *y)
{
    const struct kp_topic_conf *a = x, *b = y;
    return strcmp(a->name, b->name) == 0 &&
           kp_table_equal(o->sub, &a->producer, &b->producer);
}

static bool kp_topics_equal(const struct kp_opt *o, const void *a,
                            const void *b)
{
    return kp_array_equal(o, a, b, sizeof(struct kp_topic_conf),
                          kp_topic_equal);
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

static bool kp_listener_equal(const struct kp_opt *o, const void *x,
                              const void *y)
{
    return kp_table_equal(o->sub, x, y);
}

static bool kp_listeners_equal(const struct kp_opt *o, const void *a,
                               const void *b)
{
    return kp_array_equal(o, a, b, sizeof(struct kp_listener_conf),
                          kp_listener_equal);
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
