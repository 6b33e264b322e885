/*
 * kp_conf_impl.h - what the kp_conf_*.c files share and nothing else sees:
 * the option table's shape and each option type's operations.
 *
 * An option type is one `struct kp_opt_ops` (as Redis gives each config
 * type one small operations struct): how a field starts (init), is read
 * from JSON (parse), written back for -t (to_json), converted from an -X
 * string (from_string), compared for the restart diff (equal) and freed.
 * Containers (sections, topics, listeners) also know how an -X path steps
 * into them (descend). Adding a type is one ops struct (kp_conf_types.c or
 * kp_conf_containers.c) and one extern here; every walk over the tables is
 * generic.
 *
 *   kp_conf.c            the tables, load, -t output, reference counting,
 *                        the restart diff
 *   kp_conf_types.c      the scalar and list types; the generic table walks
 *   kp_conf_containers.c the maps, sections, topics and listeners
 *   kp_conf_value.c      value syntax: topic names, host:port, key paths
 *   kp_conf_rules.c      rules across keys (each table's finish), secrets
 *                        and credential paths, the host checks
 *   kp_conf_override.c   -X
 */
#ifndef KP_CONF_IMPL_H
#define KP_CONF_IMPL_H

#include "kp_conf.h"

#include <jansson.h>

#define KP_CONF_KEY_LEN 512 /* room for a key path in messages */
#define KP_CONF_MAX_LISTENERS 1024
#define KP_CONF_DEFAULT_SOCK "/run/kproxyd/kproxyd.sock"
#define KP_CONF_DEFAULT_CONTROL "/run/kproxyd/control.sock"

#define KP_OPTF_REQUIRED 0x01u /* absent is an error */
#define KP_OPTF_NULLABLE 0x02u /* JSON null = the default (unset) */
#define KP_OPTF_LIVE 0x04u     /* a reload applies it without a restart */
#define KP_OPTF_NONEMPTY 0x08u /* strings, arrays: not empty */
#define KP_OPTF_HOSTPORT 0x10u /* strings, string elements: "host:port" */
#define KP_OPTF_TOPIC 0x20u    /* a topic name */
#define KP_OPTF_TOPICPAT 0x40u /* string elements: topic or "prefix*" */
#define KP_OPTF_CRED 0x80u     /* a path resolved as credentials are */
#define KP_OPTF_SOCKET 0x100u  /* a UNIX socket path: fits in sun_path */
#define KP_OPTF_IDNAME 0x200u  /* a user or group: a name or a number */

struct kp_opt;
struct kp_opt_table;

/* The state of one load: where errors go and what parsing has learnt. */
struct kp_parse {
    struct kp_conf_errors *errs; /* borrowed */
    struct kp_conf *conf;        /* borrowed: the one being built */
    bool producer_idemp_set;     /* `producer` gave idempotence */
    const char *base_dir; /* borrowed: the file's directory; NULL = cwd */
    const char *cred_dir; /* borrowed: $CREDENTIALS_DIRECTORY or NULL */
};

/* One step of an -X path into a container (see kp_opt_ops.descend). */
struct kp_step {
    const struct kp_opt_table *table; /* borrowed: the keys below */
    json_t *target;   /* borrowed: their JSON object; NULL = a wrong type in
                         the file, which the parser reports */
    const char *rest; /* borrowed: the path left, a key of table */
    char key[KP_CONF_KEY_LEN]; /* the path so far, for messages */
};

struct kp_opt_ops {
    /* Sets the field to the option's default. */
    void (*init)(const struct kp_opt *o, void *base);
    /* Reads v into the field, or adds an error naming key. */
    void (*parse)(const struct kp_opt *o, void *base, json_t *v,
                  const char *key, struct kp_parse *ps);
    /* The field as -t prints it (a new reference). */
    json_t *(*to_json)(const struct kp_opt *o, const void *base);
    /* An -X value as the JSON parse expects it; NULL after an error. NULL
     * function: a container, which -X cannot set whole. */
    json_t *(*from_string)(const struct kp_opt *o, const char *s,
                           const char *key, struct kp_conf_errors *errs);
    bool (*equal)(const struct kp_opt *o, const void *a, const void *b);
    /* Frees what the field owns; the field is then empty, not default. */
    void (*free)(const struct kp_opt *o, void *base);
    /* Containers only (else NULL): steps st from the container (whose key
     * is st->key, whose parent object is st->target) along rest, the path
     * after the option's name. KP_OK, or KP_ERROR when rest is not a path
     * into it (the caller reports an unknown key), or KP_AGAIN after an
     * error it added. */
    int (*descend)(const struct kp_opt *o, const char *rest, struct kp_step *st,
                   struct kp_conf_errors *errs);
};

struct kp_opt {
    const char *name;
    const struct kp_opt_ops *ops;
    unsigned flags;
    size_t off;     /* of the field in its struct */
    size_t cnt_off; /* arrays: of the size_t count */
    int64_t min, max;
    int64_t def;         /* numeric, bool, enum, separator, mode defaults */
    const char *def_str; /* string defaults (NULL: none) */
    const char *const *names; /* enums */
    int name_cnt;
    const struct kp_opt_table *sub; /* containers: their keys */
};

/* The keys of one JSON object and the struct they fill. */
struct kp_opt_table {
    const struct kp_opt *opts;
    size_t n;
    /* After the object's keys are parsed (obj: the object): defaults that
     * depend on other keys, and the rules across keys. NULL = none. */
    void (*finish)(void *base, json_t *obj, const char *key,
                   struct kp_parse *ps);
    /* Whether o is in effect; -t prints null for one that is not (a tls
     * section with plaintext, a password read from a file). NULL = all. */
    bool (*shown)(const struct kp_opt *o, const void *base);
};

/* The option types (kp_conf_types.c; maps and containers:
 * kp_conf_containers.c). */
extern const struct kp_opt_ops kp_ops_int;       /* int, [min, max] */
extern const struct kp_opt_ops kp_ops_int64;     /* int64_t, [min, max] */
extern const struct kp_opt_ops kp_ops_bool;      /* bool */
extern const struct kp_opt_ops kp_ops_str;       /* char *, owned */
extern const struct kp_opt_ops kp_ops_secret;    /* char *, never printed */
extern const struct kp_opt_ops kp_ops_enum;      /* int-sized, by names[] */
extern const struct kp_opt_ops kp_ops_acks;      /* int: "all" = -1, 0, 1 */
extern const struct kp_opt_ops kp_ops_level;     /* int: null = codec's */
extern const struct kp_opt_ops kp_ops_strv;      /* char ** + count */
extern const struct kp_opt_ops kp_ops_uintv;     /* uint32_t * + count */
extern const struct kp_opt_ops kp_ops_sep;       /* uint8_t: one byte */
extern const struct kp_opt_ops kp_ops_mode;      /* unsigned: "0660" */
extern const struct kp_opt_ops kp_ops_headers;   /* kp_static_header[] */
extern const struct kp_opt_ops kp_ops_addrmap;   /* kp_addr_map[] */
extern const struct kp_opt_ops kp_ops_section;   /* a struct by sub */
extern const struct kp_opt_ops kp_ops_topics;    /* NAME -> producer keys */
extern const struct kp_opt_ops kp_ops_listeners; /* array of sub */

/* The tables (kp_conf.c). */
extern const struct kp_opt_table kp_top_table;
extern const struct kp_opt_table kp_producer_table;
extern const struct kp_opt_table kp_listener_table;

/* Field access through the table. */
#define KP_FIELD(base, o, type) ((type *)(void *)((char *)(base) + (o)->off))
#define KP_CFIELD(base, o, type)                                               \
    ((type const *)(const void *)((const char *)(base) + (o)->off))
#define KP_COUNT(base, o) ((size_t *)(void *)((char *)(base) + (o)->cnt_off))
#define KP_CCOUNT(base, o)                                                     \
    ((const size_t *)(const void *)((const char *)(base) + (o)->cnt_off))

/* Generic walks over a table (kp_conf_types.c). */
void kp_table_init(const struct kp_opt_table *t, void *base);
void kp_table_free(const struct kp_opt_table *t, void *base);
/* Parses obj's keys in table order, reports unknown and missing ones;
 * then the table's finish. */
void kp_table_parse(const struct kp_opt_table *t, void *base, json_t *obj,
                    const char *prefix, struct kp_parse *ps);
/* The keys only, without finish (a topic applies its own rules). */
void kp_table_parse_keys(const struct kp_opt_table *t, void *base, json_t *obj,
                         const char *prefix, struct kp_parse *ps);
json_t *kp_table_to_json(const struct kp_opt_table *t, const void *base);
bool kp_table_equal(const struct kp_opt_table *t, const void *a, const void *b);
const struct kp_opt *kp_table_find(const struct kp_opt_table *t,
                                   const char *name, size_t len);

/* Small helpers and value syntax (kp_conf_value.c, but kp_vec_init and
 * the list splitting: kp_conf_types.c). */
void kp_keyf(char *buf, size_t n, const char *fmt, ...) KP_PRINTF(3, 4);
void kp_key_join(char *buf, size_t n, const char *prefix, const char *key);
void kp_type_error(struct kp_conf_errors *errs, const char *key,
                   const char *expected, const json_t *v);
const char *kp_json_type_name(const json_t *v);
int kp_parse_i64(const char *s, int64_t *out);
/* Checks s as "host:port"; NULL when valid (and *out filled if out is not
 * NULL), else why not, phrased to follow the quoted value. */
const char *kp_hostport_why(const char *s, struct kp_hostport *out);
/* "host:port", brackets around a v6 host; malloc'd. */
char *kp_hostport_format(const struct kp_hostport *hp);
bool kp_topic_pattern_valid(const char *s);
/* A user or group as listeners give them: a name or a number. */
bool kp_idname_valid(const char *s);
/* An array or map field: NULL, count 0. */
void kp_vec_init(const struct kp_opt *o, void *base);
/* An -X list split at commas, each item through item() (kp_strv_item: a
 * JSON string); NULL after any error. */
json_t *kp_split_list(const char *s, const char *key,
                      struct kp_conf_errors *errs,
                      json_t *(*item)(const char *s, const char *key,
                                      struct kp_conf_errors *errs));
json_t *kp_strv_item(const char *s, const char *key,
                     struct kp_conf_errors *errs);
/* parent[name] as an object, created when absent (or null and nullable);
 * NULL when it is something else, which the parser reports. */
json_t *kp_json_child_obj(json_t *parent, const char *name, bool nullable);

/* Rules (kp_conf_rules.c): each table's finish. */
void kp_producer_finish(void *base, json_t *obj, const char *key,
                        struct kp_parse *ps);
void kp_producer_resolve(struct kp_producer_conf *p, bool idemp_set);
void kp_producer_check(const struct kp_producer_conf *p, const char *prefix,
                       struct kp_conf_errors *errs);
void kp_listener_finish(void *base, json_t *obj, const char *key,
                        struct kp_parse *ps);
void kp_tls_finish(void *base, json_t *obj, const char *key,
                   struct kp_parse *ps);
void kp_sasl_finish(void *base, json_t *obj, const char *key,
                    struct kp_parse *ps);
bool kp_sasl_shown(const struct kp_opt *o, const void *base);
void kp_security_finish(void *base, json_t *obj, const char *key,
                        struct kp_parse *ps);
bool kp_security_shown(const struct kp_opt *o, const void *base);
void kp_spool_finish(void *base, json_t *obj, const char *key,
                     struct kp_parse *ps);
void kp_conf_finish(void *base, json_t *obj, const char *key,
                    struct kp_parse *ps);
/* A *_file path as given, resolved for ps (malloc'd). */
char *kp_cred_path(const char *given, const struct kp_parse *ps);

/* -X (kp_conf_override.c): applies one "path=value" to the tree. */
void kp_conf_override(json_t *root, const char *ov,
                      struct kp_conf_errors *errs);

#endif
