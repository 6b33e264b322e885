/*
 * kp_conf_rules.c - the configuration's rules across keys (each table's
 * finish: defaults that depend on other keys, combinations that cannot
 * work), credentials (where a *_file path is looked up, reading
 * password_file without ever printing it) and kp_conf_check_host, the
 * checks only the host can answer (directories, files, users, memory).
 */
#include "kp_conf_impl.h"

#include "kp_compress.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* Kafka keeps order for at most 5 in-flight idempotent batches. */
#define KP_CONF_IDEMP_MAX_IN_FLIGHT 5
/* A password longer than this is a wrong file, not a password. */
#define KP_SECRET_MAX (64 * 1024)

/* ------------------------------------------------------------------ */
/* producer                                                             */

/* Idempotence defaults to acks == all unless given (in this section or,
 * for a topic, by an explicit `producer.idempotence`). */
void kp_producer_resolve(struct kp_producer_conf *p, bool idemp_set)
{
    if (!idemp_set) {
        p->idempotence = p->acks == -1;
    }
}

static void kp_producer_check_level(const struct kp_producer_conf *p,
                                    const char *prefix,
                                    struct kp_conf_errors *errs)
{
    int lo, hi;
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

void kp_producer_check(const struct kp_producer_conf *p, const char *prefix,
                       struct kp_conf_errors *errs)
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
    /* snappy among them, when this build has it */
    if (!kp_codec_available(p->compression)) {
        kp_conf_errors_add(errs,
                           "%s.compression: %s is not available in "
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
    kp_producer_check_level(p, prefix, errs);
}

/* The `producer` section: topics inherit an explicit idempotence. */
void kp_producer_finish(void *base, json_t *obj, const char *key,
                        struct kp_parse *ps)
{
    struct kp_producer_conf *p = base;
    ps->producer_idemp_set = json_object_get(obj, "idempotence") != NULL;
    kp_producer_resolve(p, ps->producer_idemp_set);
    kp_producer_check(p, key, ps->errs);
}

/* ------------------------------------------------------------------ */
/* listener                                                             */

void kp_listener_finish(void *base, json_t *obj, const char *key,
                        struct kp_parse *ps)
{
    const struct kp_listener_conf *l = base;
    bool has_topic_field =
        l->format == KP_FMT_TOPIC_VALUE || l->format == KP_FMT_TOPIC_KEY_VALUE;
    bool needs_topic =
        l->format == KP_FMT_VALUE || l->format == KP_FMT_KEY_VALUE;
    (void)obj;
    if (has_topic_field && l->topic) {
        kp_conf_errors_add(ps->errs,
                           "%s.topic: not allowed with format \"%s\" (each "
                           "line names its topic)",
                           key, kp_format_names[l->format]);
    } else if (needs_topic && !l->topic) {
        kp_conf_errors_add(ps->errs, "%s.topic: required with format \"%s\"",
                           key, kp_format_names[l->format]);
    }
}

/* ------------------------------------------------------------------ */
/* Credentials                                                          */

/* A relative path in $CREDENTIALS_DIRECTORY when set (systemd's
 * LoadCredential= puts the files there), else next to the configuration
 * file. No fallback from one to the other: one place to look is easier to
 * reason about when a secret is not found. */
char *kp_cred_path(const char *given, const struct kp_parse *ps)
{
    const char *dir = ps->cred_dir ? ps->cred_dir : ps->base_dir;
    if (given[0] == '/' || !dir) {
        return kp_strdup(given);
    }
    size_t n = strlen(dir) + strlen(given) + 2;
    char *p = kp_malloc(n);
    snprintf(p, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/",
             given);
    return p;
}

/* Reads fd (at most KP_SECRET_MAX bytes) into buf; length or -1. */
static ssize_t kp_secret_read_fd(int fd, char *buf)
{
    size_t len = 0;
    while (len <= KP_SECRET_MAX) {
        ssize_t n = read(fd, buf + len, KP_SECRET_MAX + 1 - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -1 : (ssize_t)len;
        }
        len += (size_t)n;
    }
    return (ssize_t)len;
}

/*
 * The secret in the file at path, without one trailing newline: a regular
 * file (a FIFO would block the load, a device never end), not empty, no
 * NUL byte. NULL after an error naming key and path, never the content.
 */
static char *kp_secret_load(const char *path, const char *key,
                            struct kp_conf_errors *errs)
{
    const char *why = NULL;
    char *buf = kp_malloc(KP_SECRET_MAX + 1), *secret = NULL;
    struct stat st;
    ssize_t len = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &st) != 0) {
        why = strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
        why = "not a regular file";
    } else if ((len = kp_secret_read_fd(fd, buf)) < 0) {
        why = strerror(errno);
    } else if (len > KP_SECRET_MAX) {
        why = "longer than 64 KiB";
    }
    if (fd >= 0) {
        close(fd);
    }
    if (!why) {
        if (len > 0 && buf[len - 1] == '\n') {
            len -= len > 1 && buf[len - 2] == '\r' ? 2 : 1;
        }
        if (len == 0) {
            why = "empty";
        } else if (memchr(buf, '\0', (size_t)len)) {
            why = "contains a NUL byte";
        } else {
            secret = kp_strndup(buf, (size_t)len);
        }
    }
    if (why) {
        kp_conf_errors_add(errs, "%s: %s: %s", key, path, why);
    }
    explicit_bzero(buf, KP_SECRET_MAX + 1);
    free(buf);
    return secret;
}

/* ------------------------------------------------------------------ */
/* security                                                             */

static bool kp_sec_tls(enum kp_sec_protocol p)
{
    return p == KP_SEC_SSL || p == KP_SEC_SASL_SSL;
}

static bool kp_sec_sasl(enum kp_sec_protocol p)
{
    return p == KP_SEC_SASL_PLAINTEXT || p == KP_SEC_SASL_SSL;
}

void kp_tls_finish(void *base, json_t *obj, const char *key,
                   struct kp_parse *ps)
{
    const struct kp_tls_conf *t = base;
    (void)obj;
    if (t->key_file && !t->cert_file) {
        kp_conf_errors_add(ps->errs, "%s.key_file: requires cert_file", key);
    }
    if (t->cert_file && !t->key_file) {
        kp_conf_errors_add(ps->errs, "%s.cert_file: requires key_file", key);
    }
    if (t->key_password_file && !t->key_file) {
        kp_conf_errors_add(ps->errs, "%s.key_password_file: requires key_file",
                           key);
    }
}

/* A key the mechanism has no use for (a sign of a mix-up). */
static void kp_sasl_unused(const void *v, const char *key, const char *name,
                           const char *mech, struct kp_conf_errors *errs)
{
    if (v) {
        kp_conf_errors_add(errs, "%s.%s: not used with mechanism %s", key, name,
                           mech);
    }
}

void kp_sasl_finish(void *base, json_t *obj, const char *key,
                    struct kp_parse *ps)
{
    struct kp_sasl_conf *s = base;
    const char *mech = kp_sasl_mech_names[s->mechanism];
    char fkey[KP_CONF_KEY_LEN];
    (void)obj;
    if (s->mechanism == KP_SASL_OAUTHBEARER) {
        kp_sasl_unused(s->username, key, "username", mech, ps->errs);
        kp_sasl_unused(s->password, key, "password", mech, ps->errs);
        kp_sasl_unused(s->password_file, key, "password_file", mech, ps->errs);
        if (!s->token_file) {
            kp_conf_errors_add(ps->errs,
                               "%s.token_file: required with "
                               "mechanism %s",
                               key, mech);
        }
        return;
    }
    kp_sasl_unused(s->token_file, key, "token_file", mech, ps->errs);
    if (!s->username) {
        kp_conf_errors_add(ps->errs, "%s.username: required with mechanism %s",
                           key, mech);
    }
    if (s->password && s->password_file) {
        kp_conf_errors_add(ps->errs,
                           "%s.password: give password or password_file, "
                           "not both",
                           key);
    } else if (!s->password && !s->password_file) {
        kp_conf_errors_add(ps->errs,
                           "%s.password: required with mechanism %s (or "
                           "password_file)",
                           key, mech);
    } else if (s->password_file) {
        kp_keyf(fkey, sizeof(fkey), "%s.password_file", key);
        s->password = kp_secret_load(s->password_file, fkey, ps->errs);
    }
}

/* A password read from its file is shown as the file, not as a secret. */
bool kp_sasl_shown(const struct kp_opt *o, const void *base)
{
    const struct kp_sasl_conf *s = base;
    return strcmp(o->name, "password") != 0 || !s->password_file;
}

void kp_security_finish(void *base, json_t *obj, const char *key,
                        struct kp_parse *ps)
{
    const struct kp_security_conf *sec = base;
    const char *proto = kp_sec_protocol_names[sec->protocol];
    json_t *tls = json_object_get(obj, "tls");
    json_t *sasl = json_object_get(obj, "sasl");
    if (tls && !json_is_null(tls) && !kp_sec_tls(sec->protocol)) {
        kp_conf_errors_add(ps->errs,
                           "%s.tls: only with protocol \"ssl\" or "
                           "\"sasl_ssl\" (protocol is \"%s\")",
                           key, proto);
    }
    if (sasl && !json_is_null(sasl) && !kp_sec_sasl(sec->protocol)) {
        kp_conf_errors_add(ps->errs,
                           "%s.sasl: only with protocol \"sasl_plaintext\" "
                           "or \"sasl_ssl\" (protocol is \"%s\")",
                           key, proto);
    }
    if ((!sasl || json_is_null(sasl)) && kp_sec_sasl(sec->protocol)) {
        kp_conf_errors_add(ps->errs,
                           "%s.sasl: required with protocol \"%s\" (a "
                           "mechanism and its credentials)",
                           key, proto);
    }
}

/* -t prints null for the section the protocol does not use. */
bool kp_security_shown(const struct kp_opt *o, const void *base)
{
    const struct kp_security_conf *sec = base;
    if (strcmp(o->name, "tls") == 0) {
        return kp_sec_tls(sec->protocol);
    }
    if (strcmp(o->name, "sasl") == 0) {
        return kp_sec_sasl(sec->protocol);
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* The whole configuration                                              */

int kp_conf_max_message(const struct kp_conf *c)
{
    int max_msg = c->producer.message_max_bytes;
    for (size_t i = 0; i < c->topic_cnt; i++) {
        max_msg = KP_MAX(max_msg, c->topics[i].producer.message_max_bytes);
    }
    return max_msg;
}

/* topic_buffer_bytes: given, or buffer_bytes / 4 but room for one message
 * of the largest size (a topic that cannot hold one would stall). */
static void kp_conf_topic_buffer(struct kp_conf *c, int max_msg,
                                 struct kp_conf_errors *errs)
{
    if (c->topic_buffer_bytes < 0) {
        c->topic_buffer_bytes =
            KP_MIN(c->buffer_bytes, KP_MAX(c->buffer_bytes / 4, max_msg));
        return;
    }
    if (c->topic_buffer_bytes > c->buffer_bytes) {
        kp_conf_errors_add(errs,
                           "topic_buffer_bytes: must be at most buffer_bytes "
                           "(%lld), got %lld",
                           (long long)c->buffer_bytes,
                           (long long)c->topic_buffer_bytes);
    } else if (c->topic_buffer_bytes < max_msg) {
        kp_conf_errors_add(errs,
                           "topic_buffer_bytes: must be at least "
                           "message_max_bytes (%d), got %lld",
                           max_msg, (long long)c->topic_buffer_bytes);
    }
}

/* brokers parsed once, for the connections. */
static void kp_conf_broker_addrs(struct kp_conf *c)
{
    if (c->broker_cnt == 0) {
        return;
    }
    c->broker_addrs = kp_calloc(c->broker_cnt, sizeof(*c->broker_addrs));
    for (size_t i = 0; i < c->broker_cnt; i++) {
        /* an invalid one was reported by the parse: the load fails */
        kp_hostport_parse(c->brokers[i], &c->broker_addrs[i]);
    }
}

void kp_conf_finish(void *base, json_t *obj, const char *key,
                    struct kp_parse *ps)
{
    struct kp_conf *c = base;
    int max_msg = kp_conf_max_message(c);
    (void)obj;
    (void)key;
    if (c->buffer_bytes < max_msg) {
        kp_conf_errors_add(ps->errs,
                           "buffer_bytes: must be at least message_max_bytes "
                           "(%d), got %lld",
                           max_msg, (long long)c->buffer_bytes);
    }
    kp_conf_topic_buffer(c, max_msg, ps->errs);
    for (size_t i = 0; c->control && i < c->listener_cnt; i++) {
        if (c->listeners[i].path &&
            strcmp(c->listeners[i].path, c->control) == 0) {
            kp_conf_errors_add(ps->errs,
                               "control: \"%s\" is also listeners[%zu]",
                               c->control, i);
        }
    }
    if (c->reconnect_backoff_max_ms < c->producer.retry_backoff_ms) {
        kp_conf_errors_add(ps->errs,
                           "reconnect_backoff_max_ms: must be at least "
                           "producer.retry_backoff_ms (%d), got %d",
                           c->producer.retry_backoff_ms,
                           c->reconnect_backoff_max_ms);
    }
    /* The spool frees whole segments (a quarter of it each at most) and
     * lets paused writers go once a few messages fit again: below four
     * messages of the largest size it could stall with nothing to free. */
    if (c->spool.dir && c->spool.max_bytes / 4 < max_msg) {
        kp_conf_errors_add(ps->errs,
                           "spool.max_bytes: must be at least 4 x "
                           "message_max_bytes (4 x %d = %lld), got %lld",
                           max_msg, 4LL * max_msg,
                           (long long)c->spool.max_bytes);
    }
    kp_conf_broker_addrs(c);
}

/* ------------------------------------------------------------------ */
/* Host checks (-t and start-up)                                        */

/* The directory path would be created in exists. */
static void kp_check_parent(const char *path, const char *key,
                            struct kp_conf_errors *errs)
{
    const char *slash = strrchr(path, '/');
    char *dir =
        slash ? kp_strndup(path, slash == path ? 1 : (size_t)(slash - path))
              : kp_strdup(".");
    struct stat st;
    if (stat(dir, &st) != 0) {
        kp_conf_errors_add(errs, "%s: directory %s: %s", key, dir,
                           strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        kp_conf_errors_add(errs, "%s: %s is not a directory", key, dir);
    }
    free(dir);
}

/* A socket path: its directory exists, and the path is free or a socket
 * (a stale socket is replaced; anything else would be lost). */
static void kp_check_socket(const char *path, const char *key,
                            struct kp_conf_errors *errs)
{
    struct stat st;
    kp_check_parent(path, key, errs);
    if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
        kp_conf_errors_add(errs, "%s: %s exists and is not a socket", key,
                           path);
    }
}

/* A file kproxyd appends to: its directory exists, and the path is free
 * or a regular file (never a link, a FIFO or a device). */
static void kp_check_append(const char *path, const char *key,
                            struct kp_conf_errors *errs)
{
    struct stat st;
    kp_check_parent(path, key, errs);
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        kp_conf_errors_add(errs, "%s: %s is not a regular file", key, path);
    }
}

static void kp_check_readable(const char *path, const char *key, bool dir,
                              struct kp_conf_errors *errs)
{
    struct stat st;
    if (!path) {
        return;
    }
    if (stat(path, &st) != 0 || access(path, R_OK) != 0) {
        kp_conf_errors_add(errs, "%s: %s: %s", key, path, strerror(errno));
    } else if (dir != S_ISDIR(st.st_mode)) {
        kp_conf_errors_add(errs, "%s: %s is %sa directory", key, path,
                           dir ? "not " : "");
    }
}

static void kp_check_idname(const char *name, bool group, const char *key,
                            struct kp_conf_errors *errs)
{
    int64_t x;
    if (!name || kp_parse_i64(name, &x) == KP_OK) {
        return;
    }
    if (group ? getgrnam(name) == NULL : getpwnam(name) == NULL) {
        kp_conf_errors_add(errs, "%s: no %s \"%s\" on this host", key,
                           group ? "group" : "user", name);
    }
}

static void kp_check_listener(const struct kp_listener_conf *l, size_t i,
                              struct kp_conf_errors *errs)
{
    char key[KP_CONF_KEY_LEN];
    kp_keyf(key, sizeof(key), "listeners[%zu].path", i);
    kp_check_socket(l->path, key, errs);
    kp_keyf(key, sizeof(key), "listeners[%zu].owner", i);
    kp_check_idname(l->owner, false, key, errs);
    kp_keyf(key, sizeof(key), "listeners[%zu].group", i);
    kp_check_idname(l->group, true, key, errs);
}

static void kp_check_security(const struct kp_security_conf *s,
                              struct kp_conf_errors *errs)
{
    const struct kp_tls_conf *t = &s->tls;
    kp_check_readable(t->ca_file, "security.tls.ca_file", false, errs);
    kp_check_readable(t->ca_path, "security.tls.ca_path", true, errs);
    kp_check_readable(t->cert_file, "security.tls.cert_file", false, errs);
    kp_check_readable(t->key_file, "security.tls.key_file", false, errs);
    kp_check_readable(t->key_password_file, "security.tls.key_password_file",
                      false, errs);
    kp_check_readable(s->sasl.token_file, "security.sasl.token_file", false,
                      errs);
}

/*
 * What only this host can tell (see kp_conf.h). Appends every problem;
 * KP_OK when none was found.
 */
int kp_conf_check_host(const struct kp_conf *c, struct kp_conf_errors *errs)
{
    size_t start = errs->cnt;
    for (size_t i = 0; i < c->listener_cnt; i++) {
        kp_check_listener(&c->listeners[i], i, errs);
    }
    if (c->control) {
        kp_check_socket(c->control, "control", errs);
    }
    if (c->dead_letter) {
        kp_check_append(c->dead_letter, "dead_letter", errs);
    }
    if (c->spool.dir) {
        kp_check_parent(c->spool.dir, "spool.dir", errs);
    }
    kp_check_security(&c->security, errs);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0 &&
        c->buffer_bytes > (int64_t)pages * (int64_t)page) {
        kp_conf_errors_add(errs,
                           "buffer_bytes: %lld is more than this host's "
                           "memory (%lld): the limit would never apply",
                           (long long)c->buffer_bytes,
                           (long long)pages * (long long)page);
    }
    return errs->cnt > start ? KP_ERROR : KP_OK;
}
