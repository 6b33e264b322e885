/*
 * kp_deadletter.c - failed messages, one JSON line each, appended to the
 * dead letter file in the json line format ("topic", "key"/"key_base64",
 * "value"/"value_base64", "headers", "timestamp", optional "partition")
 * plus "error" and "failed_at", so the file replays into a json listener.
 */
#include "kp_deadletter.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_buf.h"
#include "kp_log.h"
#include "kp_record.h"

struct kp_deadletter {
    int fd;
    char *path; /* owned */
    uint64_t errors; /* messages whose lines could not be written */
    struct kp_ratelimit rl;
};

/* A file we may append to: regular, and writable by no one but its owner
 * (the daemon, or root). */
static const char *kp_deadletter_unsafe(const struct stat *st)
{
    if (!S_ISREG(st->st_mode)) {
        return "not a regular file";
    }
    if (st->st_uid != geteuid() && st->st_uid != 0) {
        return "owned by another user";
    }
    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        return "writable by group or others";
    }
    return NULL;
}

struct kp_deadletter *kp_deadletter_open(const char *path)
{
    struct stat st;
    const char *why;
    /* O_NOFOLLOW: a planted symlink is refused; O_NONBLOCK: a FIFO at the
     * path cannot hang start-up (it is then refused by the check). */
    int fd = open(path,
                  O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
                      O_NONBLOCK,
                  0640);

    if (fd < 0) {
        /* ENXIO: a FIFO with no reader (O_NONBLOCK) */
        kp_err("dead_letter %s: %s", path,
               errno == ELOOP   ? "is a symbolic link"
               : errno == ENXIO ? "not a regular file"
                                : strerror(errno));
        return NULL;
    }
    why = fstat(fd, &st) < 0 ? strerror(errno) : kp_deadletter_unsafe(&st);
    if (why) {
        kp_err("dead_letter %s: %s", path, why);
        close(fd);
        return NULL;
    }
    /* Appends of whole lines: blocking writes to a regular file. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct kp_deadletter *dl = kp_calloc(1, sizeof(*dl));
    dl->fd = fd;
    dl->path = kp_strdup(path);
    return dl;
}

void kp_deadletter_close(struct kp_deadletter *dl)
{
    if (dl) {
        close(dl->fd);
        free(dl->path);
        free(dl);
    }
}

static bool kp_deadletter_utf8(const uint8_t *p, size_t n)
{
    json_t *s = json_stringn((const char *)p, n);
    bool ok = s != NULL;
    json_decref(s);
    /* NUL bytes are valid in jansson strings but awkward for readers. */
    return ok && memchr(p, '\0', n) == NULL;
}

/* Sets name (text) or name_base64 (binary); null stays null. */
static void kp_deadletter_bytes(json_t *o, const char *name,
                                const char *b64name, const uint8_t *p,
                                size_t n)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    if (!p) {
        json_object_set_new(o, name, json_null());
        return;
    }
    if (kp_deadletter_utf8(p, n)) {
        json_object_set_new(o, name, json_stringn((const char *)p, n));
        return;
    }
    char *out = kp_malloc((n + 2) / 3 * 4 + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= p[i + 2];
        }
        out[j++] = tbl[(v >> 18) & 63];
        out[j++] = tbl[(v >> 12) & 63];
        out[j++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[j++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    json_object_set_new(o, b64name, json_stringn(out, j));
    free(out);
}

/*
 * A header name or value as a JSON string. The json line format has no
 * binary form for headers, so bytes that are not UTF-8 (which no listener
 * produces today, but a record may hold) are written as U+FFFD rather
 * than losing the line (jansson refuses invalid UTF-8: json_stringn would
 * return NULL). NUL bytes are kept (\u0000, which the json listener
 * accepts).
 */
static json_t *kp_deadletter_text(const uint8_t *p, size_t n)
{
    json_t *s = json_stringn((const char *)p, n);
    if (s) {
        return s;
    }
    struct kp_buf b;
    kp_buf_init(&b, n * 3 + 1);
    for (size_t i = 0; i < n;) {
        size_t len = 0;
        uint32_t cp = 0, min = 0;
        uint8_t c = p[i];
        if (c < 0x80) {
            len = 1;
            cp = c;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        }
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) {
            ok = (p[i + k] & 0xc0) == 0x80;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        ok = ok && cp >= min && cp <= 0x10ffff &&
             !(cp >= 0xd800 && cp <= 0xdfff);
        if (ok) {
            kp_buf_put_bytes(&b, p + i, len);
            i += len;
        } else {
            kp_buf_put_bytes(&b, "\xef\xbf\xbd", 3); /* U+FFFD */
            i++;
        }
    }
    s = json_stringn((const char *)b.data, b.len);
    kp_buf_deinit(&b);
    return s ? s : json_string("");
}

static json_t *kp_deadletter_headers(struct kp_record_view *v)
{
    json_t *arr = json_array();
    struct kp_header h;
    for (int32_t i = 0; i < v->header_cnt; i++) {
        if (kp_record_header_next(v, &h) != KP_OK) {
            break;
        }
        json_t *pair = json_array();
        json_array_append_new(pair, kp_deadletter_text(h.name, h.name_len));
        json_array_append_new(pair, h.value
                                        ? kp_deadletter_text(h.value,
                                                             h.value_len)
                                        : json_null());
        json_array_append_new(arr, pair);
    }
    return arr;
}

/* Appends all of out to the file; a line written in part is taken back
 * (the file stays a sequence of whole lines). KP_OK or KP_ERROR (errno). */
static int kp_deadletter_write(struct kp_deadletter *dl,
                               const struct kp_buf *out)
{
    struct stat st;
    off_t before = fstat(dl->fd, &st) == 0 ? st.st_size : -1;
    size_t off = 0;

    while (off < out->len) {
        ssize_t n = write(dl->fd, out->data + off, out->len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            if (off > 0 && before >= 0 && ftruncate(dl->fd, before) != 0) {
                kp_log_rl(&dl->rl, KP_LOG_ERROR,
                          "dead_letter %s: truncate: %s (a partial line "
                          "stays)",
                          dl->path, strerror(errno));
            }
            errno = e;
            return KP_ERROR;
        }
        off += (size_t)n;
    }
    return KP_OK;
}

int kp_deadletter_records(struct kp_deadletter *dl, const char *topic,
                          const uint8_t *records, size_t len, int64_t base_ts,
                          const int32_t *partitions, const char *error)
{
    struct kp_rd r;
    struct kp_record_view v;
    struct kp_buf out;
    int64_t now = kp_wall_ms();
    size_t i = 0;

    if (!dl || !records || !len) {
        return KP_OK;
    }
    kp_buf_init(&out, 4096);
    kp_rd_init(&r, records, len);
    while (kp_rd_left(&r) && kp_record_next(&r, &v) == KP_OK) {
        json_t *o = json_object();
        json_object_set_new(o, "topic", json_string(topic));
        kp_deadletter_bytes(o, "key", "key_base64", v.key, v.key_len);
        kp_deadletter_bytes(o, "value", "value_base64", v.value,
                            v.value_len);
        if (partitions && partitions[i] >= 0) {
            json_object_set_new(o, "partition", json_integer(partitions[i]));
        }
        if (v.header_cnt > 0) {
            json_object_set_new(o, "headers", kp_deadletter_headers(&v));
        }
        json_object_set_new(o, "timestamp", json_integer(base_ts + v.ts_delta));
        json_object_set_new(o, "error", json_string(error));
        json_object_set_new(o, "failed_at", json_integer(now));
        char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (line) {
            kp_buf_put_bytes(&out, line, strlen(line));
            kp_buf_put_i8(&out, '\n');
            free(line);
        }
        json_decref(o);
        i++;
    }
    int rc = kp_deadletter_write(dl, &out);
    if (rc != KP_OK) {
        dl->errors += i;
        kp_log_rl(&dl->rl, KP_LOG_ERROR,
                  "dead_letter %s: write: %s (%llu failed message(s) not "
                  "recorded so far; those in the disk spool stay there for "
                  "the next start)",
                  dl->path, strerror(errno), (unsigned long long)dl->errors);
    }
    kp_buf_deinit(&out);
    return rc;
}

uint64_t kp_deadletter_errors(const struct kp_deadletter *dl)
{
    return dl ? dl->errors : 0;
}
