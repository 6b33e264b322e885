/*
 * kp_conf.c - the configuration: the option tables, loading, the -t
 * output, reference counting and the restart diff.
 *
 * One static option table per JSON object drives everything (DESIGN 17):
 *
 *   kp_top_table ──┬─ scalars: brokers, client_id, buffer_bytes, ...
 *                  ├─ "producer"  ───────────▶ kp_producer_table
 *                  ├─ "topics"    ─▶ NAME ───▶ kp_producer_table
 *                  ├─ "listeners" ─▶ [i] ────▶ kp_listener_table
 *                  ├─ "security"  ──▶ protocol, "tls" ▶ kp_tls_table,
 *                  │                            "sasl" ▶ kp_sasl_table
 *                  ├─ "http"      ───────────▶ kp_http_table
 *                  └─ "spool"     ───────────▶ kp_spool_table
 *
 * Each entry names its field, its type's operations (kp_conf_types.c,
 * kp_conf_containers.c), its bounds and default; each table may have a
 * finish (kp_conf_rules.c) for the rules across its keys. Loading goes
 * file → json_t tree → each -X override converted by its key's type and
 * written into the tree (kp_conf_override.c) → the tree parsed into a
 * struct kp_conf that starts from the defaults → each table's finish. Every problem is collected,
 * none stops the rest. -t walks the same tables back to JSON, so its
 * output loads to an equal configuration. A loaded configuration is
 * immutable and reference counted.
 */
#include "kp_conf.h"

#include "kp_buf.h"
#include "kp_conf_impl.h"
#include "kp_log.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

const char *const kp_format_names[KP_FMT__COUNT] = {
    "value", "key,value", "topic,value", "topic,key,value", "json"};
const char *const kp_codec_names[KP_CODEC__COUNT] = {"none", "gzip", "snappy",
                                                     "lz4", "zstd"};
const char *const kp_partitioner_names[KP_PART__COUNT] = {"murmur2", "fnv1a",
                                                          "crc32"};
const char *const kp_framing_names[KP_FRAMING__COUNT] = {"line", "length"};
const char *const kp_receipts_names[KP_RECEIPTS__COUNT] = {"none", "each"};
const char *const kp_sec_protocol_names[KP_SEC__COUNT] = {
    "plaintext", "ssl", "sasl_plaintext", "sasl_ssl"};
const char *const kp_sasl_mech_names[KP_SASL__COUNT] = {
    "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"};
const char *const kp_spool_mode_names[KP_SPOOL__COUNT] = {"overflow", "always"};

/* Enum fields are read and written through int pointers by the table. */
_Static_assert(sizeof(enum kp_format) == sizeof(int), "enum size");
_Static_assert(sizeof(enum kp_codec) == sizeof(int), "enum size");
_Static_assert(sizeof(enum kp_partitioner_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(enum kp_framing) == sizeof(int), "enum size");
_Static_assert(sizeof(enum kp_receipts) == sizeof(int), "enum size");
_Static_assert(sizeof(enum kp_sec_protocol) == sizeof(int), "enum size");
_Static_assert(sizeof(enum kp_sasl_mech) == sizeof(int), "enum size");
_Static_assert(sizeof(enum kp_spool_mode) == sizeof(int), "enum size");

#define KP_SPOOL_DEFAULT_MAX ((int64_t)1 << 30)
/* Far beyond any sensible skew, and now + skew cannot overflow. */
#define KP_SKEW_MAX ((int64_t)1 << 50)

/* Initializers on one line each read better than clang-format's layout. */
/* clang-format off */
#define KP_O(s, f, o, fl)                                                      \
    .name = #f, .ops = &(o), .flags = (fl), .off = offsetof(struct s, f)
#define KP_INT(s, f, lo, hi, d, fl)                                            \
    {KP_O(s, f, kp_ops_int, fl), .min = (lo), .max = (hi), .def = (d)}
#define KP_INT64(s, f, lo, hi, d, fl)                                          \
    {KP_O(s, f, kp_ops_int64, fl), .min = (lo), .max = (hi), .def = (d)}
#define KP_BOOL(s, f, d, fl) {KP_O(s, f, kp_ops_bool, fl), .def = (d)}
#define KP_STR(s, f, d, fl) {KP_O(s, f, kp_ops_str, fl), .def_str = (d)}
#define KP_NSTR(s, f, fl) KP_STR(s, f, NULL, KP_OPTF_NULLABLE | (fl))
#define KP_ENUM(s, f, tbl, n, d, fl)                                           \
    {KP_O(s, f, kp_ops_enum, fl), .names = (tbl), .name_cnt = (n),             \
     .def = (d)}
#define KP_VEC(s, f, c, o, fl)                                                 \
    {KP_O(s, f, o, fl), .cnt_off = offsetof(struct s, c)}
#define KP_SECTION(s, f, tbl, fl)                                              \
    {KP_O(s, f, kp_ops_section, fl), .sub = &(tbl)}
#define KP_TABLE(arr, fin, shw)                                                \
    {.opts = (arr), .n = KP_ARRAY_LEN(arr), .finish = (fin), .shown = (shw)}
#define KP_CREDF (KP_OPTF_NONEMPTY | KP_OPTF_CRED)

static const struct kp_opt kp_producer_opts[] = {
    {KP_O(kp_producer_conf, acks, kp_ops_acks, 0), .def = -1},
    /* default resolved after parsing: acks == all */
    KP_BOOL(kp_producer_conf, idempotence, true, 0),
    KP_INT(kp_producer_conf, linger_ms, 0, INT_MAX, 5, 0),
    KP_INT(kp_producer_conf, batch_bytes, 1, INT_MAX, 1048576, 0),
    KP_INT(kp_producer_conf, batch_messages, 1, INT_MAX, 10000, 0),
    KP_ENUM(kp_producer_conf, compression, kp_codec_names, KP_CODEC__COUNT,
            KP_CODEC_NONE, 0),
    {KP_O(kp_producer_conf, compression_level, kp_ops_level, 0),
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
/* finish: for the `producer` section only; topics apply their own rules */
const struct kp_opt_table kp_producer_table =
    KP_TABLE(kp_producer_opts, kp_producer_finish, NULL);

static const struct kp_opt kp_listener_opts[] = {
    KP_STR(kp_listener_conf, path, NULL,
           KP_OPTF_REQUIRED | KP_OPTF_NONEMPTY | KP_OPTF_SOCKET),
    KP_ENUM(kp_listener_conf, format, kp_format_names, KP_FMT__COUNT,
            KP_FMT_TOPIC_VALUE, 0),
    KP_NSTR(kp_listener_conf, topic, KP_OPTF_TOPIC),
    {KP_O(kp_listener_conf, separator, kp_ops_sep, 0), .def = ' '},
    {KP_O(kp_listener_conf, mode, kp_ops_mode, 0), .def = 0660},
    KP_NSTR(kp_listener_conf, owner, KP_OPTF_NONEMPTY | KP_OPTF_IDNAME),
    KP_NSTR(kp_listener_conf, group, KP_OPTF_NONEMPTY | KP_OPTF_IDNAME),
    KP_VEC(kp_listener_conf, allow_uids, allow_uid_cnt, kp_ops_uintv,
           KP_OPTF_NULLABLE),
    KP_VEC(kp_listener_conf, allow_gids, allow_gid_cnt, kp_ops_uintv,
           KP_OPTF_NULLABLE),
    KP_VEC(kp_listener_conf, allow_topics, allow_topic_cnt, kp_ops_strv,
           KP_OPTF_NULLABLE | KP_OPTF_TOPICPAT),
    KP_BOOL(kp_listener_conf, peer_headers, false, 0),
    KP_VEC(kp_listener_conf, headers, header_cnt, kp_ops_headers, 0),
    KP_ENUM(kp_listener_conf, framing, kp_framing_names, KP_FRAMING__COUNT,
            KP_FRAMING_LINE, 0),
    KP_ENUM(kp_listener_conf, receipts, kp_receipts_names, KP_RECEIPTS__COUNT,
            KP_RECEIPTS_NONE, 0),
};
const struct kp_opt_table kp_listener_table =
    KP_TABLE(kp_listener_opts, kp_listener_finish, NULL);

static const struct kp_opt kp_tls_opts[] = {
    KP_NSTR(kp_tls_conf, ca_file, KP_CREDF),
    KP_NSTR(kp_tls_conf, ca_path, KP_CREDF),
    KP_NSTR(kp_tls_conf, cert_file, KP_CREDF),
    KP_NSTR(kp_tls_conf, key_file, KP_CREDF),
    KP_NSTR(kp_tls_conf, key_password_file, KP_CREDF),
    KP_BOOL(kp_tls_conf, verify, true, 0),
    KP_NSTR(kp_tls_conf, server_name, KP_OPTF_NONEMPTY),
};
static const struct kp_opt_table kp_tls_table =
    KP_TABLE(kp_tls_opts, kp_tls_finish, NULL);

static const struct kp_opt kp_sasl_opts[] = {
    KP_ENUM(kp_sasl_conf, mechanism, kp_sasl_mech_names, KP_SASL__COUNT,
            KP_SASL_PLAIN, 0),
    KP_NSTR(kp_sasl_conf, username, KP_OPTF_NONEMPTY),
    {KP_O(kp_sasl_conf, password, kp_ops_secret, KP_OPTF_NULLABLE)},
    KP_NSTR(kp_sasl_conf, password_file, KP_CREDF),
    KP_NSTR(kp_sasl_conf, token_file, KP_CREDF),
};
static const struct kp_opt_table kp_sasl_table =
    KP_TABLE(kp_sasl_opts, kp_sasl_finish, kp_sasl_shown);

static const struct kp_opt kp_security_opts[] = {
    KP_ENUM(kp_security_conf, protocol, kp_sec_protocol_names, KP_SEC__COUNT,
            KP_SEC_PLAINTEXT, 0),
    KP_SECTION(kp_security_conf, tls, kp_tls_table, KP_OPTF_NULLABLE),
    KP_SECTION(kp_security_conf, sasl, kp_sasl_table, KP_OPTF_NULLABLE),
};
static const struct kp_opt_table kp_security_table =
    KP_TABLE(kp_security_opts, kp_security_finish, kp_security_shown);

static const struct kp_opt kp_http_opts[] = {
    KP_NSTR(kp_http_conf, listen,
            KP_OPTF_REQUIRED | KP_OPTF_NONEMPTY | KP_OPTF_HOSTPORT),
};
static const struct kp_opt_table kp_http_table =
    KP_TABLE(kp_http_opts, NULL, NULL);

static const struct kp_opt kp_spool_opts[] = {
    KP_NSTR(kp_spool_conf, dir, KP_OPTF_REQUIRED | KP_OPTF_NONEMPTY),
    KP_INT64(kp_spool_conf, max_bytes, 1, INT64_MAX, KP_SPOOL_DEFAULT_MAX, 0),
    KP_ENUM(kp_spool_conf, mode, kp_spool_mode_names, KP_SPOOL__COUNT,
            KP_SPOOL_OVERFLOW, 0),
    /* null: no periodic fdatasync */
    KP_INT(kp_spool_conf, fsync_ms, 0, INT_MAX, -1, KP_OPTF_NULLABLE),
};
static const struct kp_opt_table kp_spool_table =
    KP_TABLE(kp_spool_opts, NULL, NULL);

#define KP_LIVE KP_OPTF_LIVE
/* In SPEC.md's order, which is also -t's. */
static const struct kp_opt kp_top_opts[] = {
    KP_VEC(kp_conf, brokers, broker_cnt, kp_ops_strv,
           KP_OPTF_REQUIRED | KP_OPTF_NONEMPTY | KP_OPTF_HOSTPORT),
    KP_STR(kp_conf, client_id, "kproxyd", 0),
    {KP_O(kp_conf, listeners, kp_ops_listeners, 0),
     .cnt_off = offsetof(struct kp_conf, listener_cnt),
     .sub = &kp_listener_table},
    KP_SECTION(kp_conf, producer, kp_producer_table, KP_LIVE),
    {KP_O(kp_conf, topics, kp_ops_topics, KP_LIVE),
     .cnt_off = offsetof(struct kp_conf, topic_cnt),
     .sub = &kp_producer_table},
    KP_INT64(kp_conf, buffer_bytes, 1, KP_CONF_BUFFER_BYTES_MAX, 268435456,
             KP_LIVE),
    KP_INT(kp_conf, metadata_refresh_ms, 1, INT_MAX, 300000, 0),
    KP_STR(kp_conf, control, KP_CONF_DEFAULT_CONTROL,
           KP_OPTF_NULLABLE | KP_OPTF_NONEMPTY | KP_OPTF_SOCKET),
    KP_NSTR(kp_conf, dead_letter, KP_OPTF_NONEMPTY),
    KP_INT(kp_conf, shutdown_timeout_ms, 0, INT_MAX, 30000, 0),
    KP_INT(kp_conf, max_clients, 1, INT_MAX, 10000, 0),
    KP_BOOL(kp_conf, auto_create_topics, false, 0),
    KP_ENUM(kp_conf, log_level, kp_log_level_names, KP_LOG__COUNT, KP_LOG_INFO,
            KP_LIVE),
    KP_SECTION(kp_conf, security, kp_security_table, 0),
    KP_VEC(kp_conf, address_map, address_map_cnt, kp_ops_addrmap, 0),
    KP_INT(kp_conf, reconnect_backoff_max_ms, 1, INT_MAX, 10000, KP_LIVE),
    KP_INT(kp_conf, metadata_max_wait_ms, 1, INT_MAX, 60000, KP_LIVE),
    /* null: buffer_bytes / 4, resolved by kp_conf_finish */
    KP_INT64(kp_conf, topic_buffer_bytes, 1, KP_CONF_BUFFER_BYTES_MAX, -1,
             KP_LIVE | KP_OPTF_NULLABLE),
    KP_INT(kp_conf, max_block_ms, 0, INT_MAX, 60000, KP_LIVE),
    KP_INT(kp_conf, max_topics, 1, INT_MAX, 10000, KP_LIVE),
    KP_INT(kp_conf, max_clients_per_uid, 1, INT_MAX, 1000, KP_LIVE),
    KP_INT64(kp_conf, max_timestamp_skew_ms, 0, KP_SKEW_MAX, 3600000, KP_LIVE),
    KP_INT(kp_conf, topic_idle_ms, 1, INT_MAX, 600000, KP_LIVE),
    KP_BOOL(kp_conf, partition_metrics, true, KP_LIVE),
    KP_SECTION(kp_conf, http, kp_http_table, KP_OPTF_NULLABLE),
    KP_SECTION(kp_conf, spool, kp_spool_table, KP_OPTF_NULLABLE),
};
const struct kp_opt_table kp_top_table =
    KP_TABLE(kp_top_opts, kp_conf_finish, NULL);
/* clang-format on */

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
/* Loading                                                              */

static struct kp_conf *kp_conf_from_json(json_t *root, struct kp_parse *ps)
{
    struct kp_conf *c = kp_calloc(1, sizeof(*c));
    c->refs = 1;
    kp_table_init(&kp_top_table, c);
    ps->conf = c;
    if (!json_is_object(root)) {
        kp_conf_errors_add(ps->errs,
                           "configuration: expected an object at the top "
                           "level, got %s",
                           kp_json_type_name(root));
        return c;
    }
    kp_table_parse(&kp_top_table, c, root, "", ps);
    return c;
}

/* The directory relative credential paths are next to: the file's. NULL
 * when that is the current directory anyway. */
static char *kp_conf_base_dir(const char *path)
{
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (!slash) {
        return NULL;
    }
    return kp_strndup(path, slash == path ? 1 : (size_t)(slash - path));
}

/* Takes root (NULL after a parse error): overrides, then the struct. */
static struct kp_conf *kp_conf_build(json_t *root, const char *path,
                                     char *const *overrides,
                                     size_t override_cnt,
                                     struct kp_conf_errors *errs)
{
    struct kp_conf_errors local = {0};
    struct kp_conf *c = NULL;
    bool parsed = root != NULL;
    const char *cred = getenv("CREDENTIALS_DIRECTORY");
    char *base = kp_conf_base_dir(path);
    struct kp_parse ps = {.base_dir = base,
                          .cred_dir = cred && *cred ? cred : NULL};

    ps.errs = errs ? errs : &local;
    size_t start = ps.errs->cnt;
    if (!root) {
        root = json_object(); /* still check the overrides */
    }
    for (size_t i = 0; i < override_cnt; i++) {
        kp_conf_override(root, overrides[i], ps.errs);
    }
    if (parsed) {
        c = kp_conf_from_json(root, &ps);
    }
    json_decref(root);
    if (ps.errs->cnt > start) {
        kp_conf_put(c);
        c = NULL;
    } else if (c && path) {
        c->path = kp_strdup(path);
    }
    free(base);
    kp_conf_errors_deinit(&local);
    return c;
}

/* jansson's text, without its "near '...'": the text near an error may be
 * a secret. The line and column say where. */
static void kp_conf_parse_error(struct kp_conf_errors *errs, const char *src,
                                const json_error_t *je)
{
    if (!errs) {
        return;
    }
    const char *near = strstr(je->text, " near '");
    int len = near ? (int)(near - je->text) : (int)strlen(je->text);
    if (je->line > 0) {
        kp_conf_errors_add(errs, "%s:%d:%d: %.*s", src, je->line, je->column,
                           len, je->text);
    } else {
        kp_conf_errors_add(errs, "%s: %.*s", src, len, je->text);
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
    if (!c || !kp_unref(&c->refs)) {
        return;
    }
    for (size_t i = 0; c->broker_addrs && i < c->broker_cnt; i++) {
        kp_hostport_deinit(&c->broker_addrs[i]);
    }
    free(c->broker_addrs);
    kp_table_free(&kp_top_table, c);
    free(c->path);
    free(c);
}

/* ------------------------------------------------------------------ */
/* struct → JSON (-t, stats)                                            */

/*
 * The effective configuration, every default filled in, keys in table
 * order, as 2-space indented JSON. Loading it again gives an equal
 * configuration (but for an inline password, printed as KP_CONF_REDACTED).
 * Returns a malloc'd string the caller frees with free().
 */
char *kp_conf_to_json(const struct kp_conf *c)
{
    json_t *obj = kp_table_to_json(&kp_top_table, c);
    char *s = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!s) {
        abort(); /* only on allocation failure (DESIGN 7) */
    }
    return s;
}

static void kp_conf_render_json(json_t *obj, struct kp_buf *out)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!s) {
        abort(); /* only on allocation failure (DESIGN 7) */
    }
    kp_buf_put_bytes(out, s, strlen(s));
    free(s);
}

/* Appends p as one compact JSON object, the values as -t prints them. */
void kp_conf_producer_render(const struct kp_producer_conf *p,
                             struct kp_buf *out)
{
    kp_conf_render_json(kp_table_to_json(&kp_producer_table, p), out);
}

/* Appends the whole configuration as compact JSON, as -t prints it. */
void kp_conf_render(const struct kp_conf *c, struct kp_buf *out)
{
    kp_conf_render_json(kp_table_to_json(&kp_top_table, c), out);
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

/*
 * The address_map entry for an advertised broker address, or NULL. Linear
 * in the number of entries (parsed again each time: called per Metadata
 * answer, not per message).
 */
const struct kp_hostport *kp_conf_address_lookup(const struct kp_conf *c,
                                                 const char *host, int port)
{
    for (size_t i = 0; i < c->address_map_cnt; i++) {
        struct kp_hostport from;
        if (kp_hostport_parse(c->address_map[i].from, &from) != KP_OK) {
            continue; /* cannot happen: checked at load */
        }
        bool match = from.port == port && strcasecmp(from.host, host) == 0;
        kp_hostport_deinit(&from);
        if (match) {
            return &c->address_map[i].to;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Restart diff                                                         */

/*
 * Logs, at warning, each top-level key that differs between old and cur
 * and only takes effect on restart (every key without KP_OPTF_LIVE in
 * kp_top_opts). Returns how many.
 */
int kp_conf_restart_diff(const struct kp_conf *old, const struct kp_conf *cur)
{
    int n = 0;
    for (size_t i = 0; i < kp_top_table.n; i++) {
        const struct kp_opt *o = &kp_top_table.opts[i];
        if (!(o->flags & KP_OPTF_LIVE) && !o->ops->equal(o, old, cur)) {
            kp_warn("config: %s changed; takes effect on restart", o->name);
            n++;
        }
    }
    return n;
}
