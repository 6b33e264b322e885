/*
 * kp_conf.h - the configuration: one static option table drives JSON
 * parsing, -X overrides, -t output and validation (DESIGN 17). A loaded
 * configuration is immutable and reference counted; a reload swaps it
 * whole, and an open batch keeps a reference to the one it was opened with.
 *
 * Pure but for reading the configuration file and password_file; what only
 * the host can tell (directories, TLS files, users) is kp_conf_check_host,
 * which main calls for -t and the real start-up.
 */
#ifndef KP_CONF_H
#define KP_CONF_H

#include "kp_common.h"

enum kp_format {
    KP_FMT_VALUE,           /* "value" */
    KP_FMT_KEY_VALUE,       /* "key,value" */
    KP_FMT_TOPIC_VALUE,     /* "topic,value" */
    KP_FMT_TOPIC_KEY_VALUE, /* "topic,key,value" */
    KP_FMT_JSON,            /* "json" */
    KP_FMT__COUNT
};
extern const char *const kp_format_names[KP_FMT__COUNT];

/* Values are the RecordBatch attributes codec bits. */
enum kp_codec {
    KP_CODEC_NONE = 0,
    KP_CODEC_GZIP = 1,
    KP_CODEC_SNAPPY = 2,
    KP_CODEC_LZ4 = 3,
    KP_CODEC_ZSTD = 4,
    KP_CODEC__COUNT
};
extern const char *const kp_codec_names[KP_CODEC__COUNT];

enum kp_partitioner_kind {
    KP_PART_MURMUR2,
    KP_PART_FNV1A,
    KP_PART_CRC32,
    KP_PART__COUNT
};
extern const char *const kp_partitioner_names[KP_PART__COUNT];

/* Producer keys: the `producer` object and each `topics` entry. */
struct kp_producer_conf {
    int acks;         /* -1 ("all"), 0 or 1 */
    bool idempotence; /* default: acks == -1 */
    int linger_ms;
    int batch_bytes;
    int batch_messages;
    enum kp_codec compression;
    int compression_level; /* -1000 = codec default */
    enum kp_partitioner_kind partitioner;
    int max_in_flight;
    int request_timeout_ms;
    int delivery_timeout_ms;
    int retry_backoff_ms;
    int retry_backoff_max_ms;
    int message_max_bytes;
};

#define KP_LEVEL_DEFAULT (-1000)

/* How a listener finds where one message ends. */
enum kp_framing {
    KP_FRAMING_LINE,   /* "line": up to '\n' */
    KP_FRAMING_LENGTH, /* "length": 4-byte big-endian length, then bytes */
    KP_FRAMING__COUNT
};
extern const char *const kp_framing_names[KP_FRAMING__COUNT];

/* What a listener writes back per message. */
enum kp_receipts {
    KP_RECEIPTS_NONE, /* "none": only the half-close summary */
    KP_RECEIPTS_EACH, /* "each": one line per message (SPEC "Receipts") */
    KP_RECEIPTS__COUNT
};
extern const char *const kp_receipts_names[KP_RECEIPTS__COUNT];

/* A listener's static header: {"name": "value"}. */
struct kp_static_header {
    char *name;  /* owned */
    char *value; /* owned */
};

/* "host:port" (or "[v6]:port") parsed once, by kp_hostport_parse. */
struct kp_hostport {
    char *host; /* owned; without brackets */
    int port;
};

/* address_map: connect to `to` whenever Metadata advertises `from`. */
struct kp_addr_map {
    char *from; /* owned: "host:port" as advertised */
    struct kp_hostport to;
};

enum kp_sec_protocol {
    KP_SEC_PLAINTEXT,      /* "plaintext" */
    KP_SEC_SSL,            /* "ssl" */
    KP_SEC_SASL_PLAINTEXT, /* "sasl_plaintext" */
    KP_SEC_SASL_SSL,       /* "sasl_ssl" */
    KP_SEC__COUNT
};
extern const char *const kp_sec_protocol_names[KP_SEC__COUNT];

enum kp_sasl_mech {
    KP_SASL_PLAIN,         /* "PLAIN" */
    KP_SASL_SCRAM_SHA_256, /* "SCRAM-SHA-256" */
    KP_SASL_SCRAM_SHA_512, /* "SCRAM-SHA-512" */
    KP_SASL_OAUTHBEARER,   /* "OAUTHBEARER" */
    KP_SASL__COUNT
};
extern const char *const kp_sasl_mech_names[KP_SASL__COUNT];

/* security.tls. *_file paths are resolved at load (a relative path in
 * $CREDENTIALS_DIRECTORY when set, else next to the configuration file). */
struct kp_tls_conf {
    char *ca_file;           /* owned; NULL = the system store */
    char *ca_path;           /* owned; NULL = the system store */
    char *cert_file;         /* owned; mutual TLS */
    char *key_file;          /* owned */
    char *key_password_file; /* owned */
    bool verify;             /* certificate and host name; default true */
    char *server_name;       /* owned; NULL = the broker's host (SNI) */
};

/* security.sasl. Secrets are never printed (-t, stats, logs). */
struct kp_sasl_conf {
    enum kp_sasl_mech mechanism;
    char *username;      /* owned */
    char *password;      /* owned secret; from password_file if given */
    char *password_file; /* owned, resolved path */
    char *token_file;    /* owned, resolved path: OAUTHBEARER */
};

struct kp_security_conf {
    enum kp_sec_protocol protocol;
    struct kp_tls_conf tls;
    struct kp_sasl_conf sasl;
};

/* http: NULL listen = off. */
struct kp_http_conf {
    char *listen; /* owned: "host:port" */
};

enum kp_spool_mode {
    KP_SPOOL_OVERFLOW, /* "overflow" (the default) */
    KP_SPOOL_ALWAYS,   /* "always" */
    KP_SPOOL__COUNT
};
extern const char *const kp_spool_mode_names[KP_SPOOL__COUNT];

/* spool: NULL dir = no spool. */
struct kp_spool_conf {
    char *dir; /* owned */
    int64_t max_bytes;
    enum kp_spool_mode mode;
    int fsync_ms; /* -1 = null: no periodic fdatasync */
};

struct kp_listener_conf {
    char *path; /* owned */
    enum kp_format format;
    char *topic; /* owned; NULL when the format carries the topic */
    uint8_t separator;
    unsigned mode; /* permission bits, e.g. 0660 */
    uint32_t *allow_uids; /* owned; NULL = anyone */
    size_t allow_uid_cnt;
    uint32_t *allow_gids; /* owned; NULL = any */
    size_t allow_gid_cnt;
    char **allow_topics; /* owned; NULL = any; "prefix*" entries allowed */
    size_t allow_topic_cnt;
    bool peer_headers;
    char *owner; /* owned; NULL = the daemon's; a name or a number */
    char *group; /* owned; NULL = the daemon's; a name or a number */
    struct kp_static_header *headers; /* owned: added to every record */
    size_t header_cnt;
    enum kp_framing framing;
    enum kp_receipts receipts;
};

struct kp_topic_conf {
    char *name; /* owned */
    struct kp_producer_conf producer;
};

struct kp_conf {
    unsigned refs;
    char *path; /* owned: file it was loaded from, NULL if none */
    char **brokers; /* owned */
    size_t broker_cnt;
    char *client_id; /* owned */
    struct kp_listener_conf *listeners; /* owned */
    size_t listener_cnt;
    struct kp_producer_conf producer; /* defaults for every topic */
    struct kp_topic_conf *topics;     /* owned */
    size_t topic_cnt;
    int64_t buffer_bytes;
    int metadata_refresh_ms;
    char *control;     /* owned; NULL = disabled */
    char *dead_letter; /* owned; NULL = none */
    int shutdown_timeout_ms;
    int max_clients;
    bool auto_create_topics;
    int log_level; /* enum kp_log_level */

    struct kp_hostport *broker_addrs; /* owned: brokers parsed, same count */
    struct kp_security_conf security;
    struct kp_addr_map *address_map; /* owned */
    size_t address_map_cnt;
    int reconnect_backoff_max_ms;    /* 10000 */
    int metadata_max_wait_ms;        /* 60000 */
    int64_t topic_buffer_bytes;      /* default buffer_bytes / 4, but at
                                        least the largest message_max_bytes
                                        (and at most buffer_bytes) */
    int max_block_ms;                /* 60000 */
    int max_topics;                  /* 10000 */
    int max_clients_per_uid;         /* 1000 */
    int64_t max_timestamp_skew_ms;   /* 3600000 */
    int topic_idle_ms;               /* 600000 */
    bool partition_metrics;          /* per-partition series; true */
    struct kp_http_conf http;
    struct kp_spool_conf spool;
};

/* Parses "host:port" or "[v6addr]:port" (port 1-65535); KP_OK or KP_ERROR.
 * The one parser of broker addresses (validation, bootstrap, address_map).
 * On KP_OK out->host is malloc'd (free with kp_hostport_deinit); on
 * KP_ERROR *out is untouched. out may be NULL to validate only. */
int kp_hostport_parse(const char *s, struct kp_hostport *out);
void kp_hostport_deinit(struct kp_hostport *hp);

/* Kafka's limit on a topic name's length (Topic.MAX_NAME_LENGTH). */
#define KP_TOPIC_NAME_MAX 249

/*
 * The one topic-name rule, for the configuration and every client line:
 * [A-Za-z0-9._-]{1,249} and not "." or ".." (Kafka refuses both). name
 * need not be NUL-terminated; a NUL byte inside makes it invalid.
 */
bool kp_topic_name_valid(const char *name, size_t len);

/* What -t, stats and kp_conf_render print instead of a secret (an inline
 * security.sasl.password); loading this text back as a password is an
 * error, so a copied -t output cannot authenticate with it by mistake. */
#define KP_CONF_REDACTED "<redacted>"

/* buffer_bytes above this (1 TiB) would never limit anything: an error.
 * kp_conf_check_host also refuses more than the host's memory. */
#define KP_CONF_BUFFER_BYTES_MAX ((int64_t)1 << 40)

/* A UNIX socket path's limit: sizeof(sun_path) less the NUL. */
#define KP_CONF_SOCKET_PATH_MAX 107

/* Accumulates every problem found, so -t and reload can report them all. */
struct kp_conf_errors {
    char **msgs; /* owned */
    size_t cnt;
};
void kp_conf_errors_add(struct kp_conf_errors *e, const char *fmt, ...)
    KP_PRINTF(2, 3);
void kp_conf_errors_deinit(struct kp_conf_errors *e);

/*
 * Loads `path` (NULL: defaults only, then overrides) and applies the -X
 * overrides ("dotted.path=value"; comma-separated for arrays) in order,
 * then validates. Returns a conf with refs = 1, or NULL with every problem
 * in *errs, each naming the key's path (and line:column where jansson gives
 * one). No message quotes a secret.
 *
 * -X paths: "producer.KEY", "topics.NAME.KEY" (NAME may contain dots),
 * "listeners[N].KEY" or "listeners.N.KEY" for an existing listener (N at
 * or past the count is an error: -X changes listeners, it never adds one),
 * "security.tls.KEY", "http.listen", "spool.KEY". Maps are set whole:
 * "address_map=FROM=TO,FROM2=TO2", "listeners[0].headers=NAME=VALUE,...".
 * "null" is JSON null for keys that take it.
 *
 * Credentials: a relative ca_file, ca_path, cert_file, key_file,
 * key_password_file, password_file or token_file is looked up in
 * $CREDENTIALS_DIRECTORY when that is set (systemd LoadCredential=), else
 * next to the configuration file (kp_conf_load_buf: the current
 * directory); the resolved path is stored. password_file is read here (at
 * most 64 KiB, a trailing newline stripped); the others are only resolved.
 *
 * Only reads files (the configuration, password_file): sockets, dead
 * letter and spool paths are checked by kp_conf_check_host.
 */
struct kp_conf *kp_conf_load(const char *path, char *const *overrides,
                             size_t override_cnt,
                             struct kp_conf_errors *errs);
/* The same from a JSON text in memory (fuzzing, tests). */
struct kp_conf *kp_conf_load_buf(const uint8_t *json, size_t len,
                                 char *const *overrides, size_t override_cnt,
                                 struct kp_conf_errors *errs);

struct kp_conf *kp_conf_get(struct kp_conf *c);
void kp_conf_put(struct kp_conf *c);

/*
 * What can be known before start-up but only from this host, for -t and
 * the real start-up (not for kp_conf_load_buf in unit tests): the parent
 * directory of each listener path, the control socket, dead_letter and
 * spool.dir exists; the TLS files and token_file are readable (ca_path a
 * directory); listener owner/group names exist; buffer_bytes is at most
 * the host's physical memory. Appends every problem to errs; KP_OK when
 * there was none.
 */
int kp_conf_check_host(const struct kp_conf *c, struct kp_conf_errors *errs);

/* The effective configuration, defaults filled in, as pretty JSON (malloc'd).
 * Secrets print as KP_CONF_REDACTED (a password read from password_file
 * prints as null beside its path); loading the output gives an equal
 * configuration except for an inline password. */
char *kp_conf_to_json(const struct kp_conf *c);

struct kp_buf;
/* Appends the compact JSON object of p, values as -t writes them ("acks":
 * "all", "compression_level": null), keys in -t's order. For stats. */
void kp_conf_producer_render(const struct kp_producer_conf *p,
                             struct kp_buf *out);
/* Appends the whole configuration as compact JSON, as -t (secrets too). */
void kp_conf_render(const struct kp_conf *c, struct kp_buf *out);

/* address_map: where to connect when Metadata advertises host:port (host
 * compared without case, a v6 host without brackets). NULL = no entry:
 * connect to what was advertised. Borrowed from c. */
const struct kp_hostport *kp_conf_address_lookup(const struct kp_conf *c,
                                                 const char *host, int port);

/* Producer settings for a topic: its `topics` entry, else the defaults. */
const struct kp_producer_conf *kp_conf_producer(const struct kp_conf *c,
                                                const char *topic);
/* The largest message_max_bytes: the defaults' or a topic's. */
int kp_conf_max_message(const struct kp_conf *c);

/*
 * Lists (logs at warning) the top-level keys that differ between old and
 * new and only take effect on restart. Live (applied by a reload):
 * producer, topics, buffer_bytes, log_level, topic_buffer_bytes,
 * max_block_ms, metadata_max_wait_ms, max_topics, max_clients_per_uid,
 * max_timestamp_skew_ms, topic_idle_ms, partition_metrics,
 * reconnect_backoff_max_ms. Everything else (brokers, client_id,
 * listeners and all their keys, control, dead_letter, security,
 * address_map, http, spool, ...) needs a restart. Returns how many.
 */
int kp_conf_restart_diff(const struct kp_conf *old, const struct kp_conf *cur);

#endif
