/*
 * kp_tls.c - TLS client side of broker connections (OpenSSL 3): the
 * reference-counted context built from security.tls, one nonblocking
 * SSL per connection, the gathered write that keeps large record batches
 * out of any staging copy, and the diagnosis that turns OpenSSL's failure
 * codes into something an operator can act on.
 *
 * Write path (kp_tls_writev), per call:
 *
 *   iov:  [hdr 60][batch 900 KiB][hdr 40][batch 200][batch 300 KiB] ...
 *           │         │            │       │            │
 *           ▼         │            ▼       ▼            │
 *   cbuf [hdr]        │          [hdr batch]            │   (copied once,
 *           │ flush   │            │ flush              │    <16 KiB)
 *           ▼         ▼            ▼                    ▼
 *       SSL_write_ex(cbuf)  SSL_write_ex(iov base)   ... (no copy)
 *
 * OpenSSL's rule for a write that returned WANT_READ/WANT_WRITE is that
 * it is repeated with the same bytes (and at least the same length). The
 * copy buffer is ours, so its retry is exact; a direct write remembers its
 * length (pend_direct) and the caller, told that none of those bytes were
 * taken, offers the same bytes again at the head of its iovecs.
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets their address change between
 * calls (the caller rebuilds its iovec array from offsets), and
 * SSL_MODE_ENABLE_PARTIAL_WRITE makes SSL_write_ex return after each
 * record so progress is reported as it happens.
 */
#include "kp_tls.h"

#include "kp_conf.h"
#include "kp_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

const char *const kp_tls_want_names[KP_TLS_WANT__COUNT] = {"none", "read",
                                                           "write"};
const char *const kp_tls_state_names[KP_TLS__COUNT] = {"handshake", "up",
                                                       "closed", "failed"};

/* A key password file is read into a buffer of this size (PEM_BUFSIZE). */
#define KP_TLS_PASSWORD_MAX 1024
/* Bytes of the broker's first answer kept to recognise a non-TLS peer. */
#define KP_TLS_FIRST_BYTES 8

struct kp_tls_ctx {
    SSL_CTX *ssl_ctx; /* owned */
    unsigned refs;
    bool verify;
    bool has_cert;     /* a client certificate is configured */
    char *server_name; /* owned; NULL = the broker's host name */
};

struct kp_tls {
    SSL *ssl;               /* owned */
    struct kp_tls_ctx *ctx; /* owned reference */
    char *host;             /* owned: the name SNI carries and verification
                               checks */
    enum kp_tls_state state;
    uint8_t *cbuf;      /* owned, KP_TLS_COALESCE_BYTES, allocated on use */
    size_t cpos, clen;  /* cbuf[cpos, clen) is not yet taken by SSL */
    size_t pend_direct; /* >0: a direct write of this length must be
                           repeated before anything else */
    uint8_t first[KP_TLS_FIRST_BYTES]; /* first bytes the broker sent */
    size_t first_len;
    bool cert_requested; /* the broker asked for a client certificate that
                            kproxyd does not have */
    long verr;           /* first verification error seen, X509_V_OK if none */
    int verr_depth;      /* depth of the certificate it concerns */
    char vcert[512];     /* that certificate, described for the operator */
    struct kp_tls_stats stats;
    char err[1024];
};

/* ---- OpenSSL error text ---- */

/* Appends printf output to buf (of cap bytes), truncating quietly. */
static void kp_tls_cat(char *buf, size_t cap, const char *fmt, ...)
    KP_PRINTF(3, 4);

static void kp_tls_cat(char *buf, size_t cap, const char *fmt, ...)
{
    size_t n = strnlen(buf, cap);
    if (n + 1 >= cap) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
}

/*
 * Drains OpenSSL's error queue into buf as up to three distinct reasons
 * joined by ": " (system errors as strerror), "unknown error" if empty.
 */
static void kp_tls_reasons(char *buf, size_t cap)
{
    const char *seen[3];
    size_t cnt = 0;
    unsigned long e;
    buf[0] = '\0';
    while ((e = ERR_get_error()) != 0) {
        const char *r = ERR_SYSTEM_ERROR(e) ? strerror(ERR_GET_REASON(e))
                                            : ERR_reason_error_string(e);
        if (!r || cnt == KP_ARRAY_LEN(seen)) {
            continue;
        }
        bool dup = false;
        for (size_t i = 0; i < cnt; i++) {
            dup = dup || strcmp(seen[i], r) == 0;
        }
        if (!dup) {
            kp_tls_cat(buf, cap, "%s%s", cnt ? ": " : "", r);
            seen[cnt++] = r;
        }
    }
    if (cnt == 0) {
        snprintf(buf, cap, "unknown error");
    }
}

/* ---- context ---- */

/* Fails with "<what> <path>: <reason>" when path cannot be opened for
 * reading, so a missing file reads as one and not as an OpenSSL code. */
static int kp_tls_check_file(const char *what, const char *path, bool dir,
                             char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | (dir ? O_DIRECTORY : 0));
    if (fd < 0) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return KP_ERROR;
    }
    close(fd);
    return KP_OK;
}

/* Fails with "<what> <path>: <OpenSSL reasons>". */
static int kp_tls_fail_file(const char *what, const char *path, char *err,
                            size_t errlen)
{
    char why[512];
    kp_tls_reasons(why, sizeof(why));
    snprintf(err, errlen, "%s %s: %s", what, path, why);
    return KP_ERROR;
}

/* The CA store: ca_file and/or ca_path, or the system's default store. */
static int kp_tls_load_ca(SSL_CTX *sc, const struct kp_tls_conf *conf,
                          char *err, size_t errlen)
{
    if (!conf->ca_file && !conf->ca_path) {
        if (SSL_CTX_set_default_verify_paths(sc) != 1) {
            return kp_tls_fail_file("the system CA store", "(default)", err,
                                    errlen);
        }
        return KP_OK;
    }
    if (conf->ca_file) {
        if (kp_tls_check_file("tls.ca_file", conf->ca_file, false, err,
                              errlen) != KP_OK) {
            return KP_ERROR;
        }
        if (SSL_CTX_load_verify_file(sc, conf->ca_file) != 1) {
            return kp_tls_fail_file("tls.ca_file", conf->ca_file, err, errlen);
        }
    }
    if (conf->ca_path) {
        if (kp_tls_check_file("tls.ca_path", conf->ca_path, true, err,
                              errlen) != KP_OK) {
            return KP_ERROR;
        }
        if (SSL_CTX_load_verify_dir(sc, conf->ca_path) != 1) {
            return kp_tls_fail_file("tls.ca_path", conf->ca_path, err, errlen);
        }
    }
    return KP_OK;
}

/* The key's password as read from key_password_file. */
struct kp_tls_pw {
    char buf[KP_TLS_PASSWORD_MAX];
    size_t len;
    bool have;  /* a password file was given */
    bool asked; /* OpenSSL asked for it: the key is encrypted */
};

/* pem_password_cb: never prompts on a terminal (OpenSSL's default would);
 * a key that is encrypted without a password file fails. */
static int kp_tls_on_password(char *buf, int size, int rwflag, void *u)
{
    struct kp_tls_pw *pw = u;
    (void)rwflag;
    pw->asked = true;
    if (!pw->have || size < 0 || pw->len > (size_t)size) {
        return -1;
    }
    memcpy(buf, pw->buf, pw->len);
    return (int)pw->len;
}

/*
 * Reads key_password_file into pw: at most KP_TLS_PASSWORD_MAX - 1 bytes,
 * one trailing "\n" (or "\r\n") removed. The file may be a symbolic link
 * (Kubernetes secrets are).
 */
static int kp_tls_read_password(const char *path, struct kp_tls_pw *pw,
                                char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "tls.key_password_file %s: %s", path,
                 strerror(errno));
        return KP_ERROR;
    }
    ssize_t n;
    size_t len = 0;
    while ((n = read(fd, pw->buf + len, sizeof(pw->buf) - len)) > 0) {
        len += (size_t)n;
        if (len == sizeof(pw->buf)) {
            break;
        }
    }
    int read_errno = errno;
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "tls.key_password_file %s: %s", path,
                 strerror(read_errno));
        return KP_ERROR;
    }
    if (len == sizeof(pw->buf)) {
        snprintf(err, errlen, "tls.key_password_file %s: longer than %d bytes",
                 path, KP_TLS_PASSWORD_MAX - 1);
        return KP_ERROR;
    }
    if (len && pw->buf[len - 1] == '\n') {
        len--;
        if (len && pw->buf[len - 1] == '\r') {
            len--;
        }
    }
    pw->len = len;
    pw->have = true;
    return KP_OK;
}

/* The key, with its password callback installed only while it loads. */
static int kp_tls_load_key(SSL_CTX *sc, const struct kp_tls_conf *conf,
                           struct kp_tls_pw *pw, char *err, size_t errlen)
{
    SSL_CTX_set_default_passwd_cb(sc, kp_tls_on_password);
    SSL_CTX_set_default_passwd_cb_userdata(sc, pw);
    int ok = SSL_CTX_use_PrivateKey_file(sc, conf->key_file, SSL_FILETYPE_PEM);
    SSL_CTX_set_default_passwd_cb(sc, NULL);
    SSL_CTX_set_default_passwd_cb_userdata(sc, NULL);
    if (ok == 1) {
        return KP_OK;
    }
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
        ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
        ERR_clear_error();
        snprintf(err, errlen, "tls.key_file %s does not match tls.cert_file %s",
                 conf->key_file, conf->cert_file);
        return KP_ERROR;
    }
    if (pw->asked && !pw->have) {
        ERR_clear_error();
        snprintf(err, errlen,
                 "tls.key_file %s: the key is encrypted: set "
                 "tls.key_password_file",
                 conf->key_file);
        return KP_ERROR;
    }
    kp_tls_fail_file("tls.key_file", conf->key_file, err, errlen);
    if (pw->asked) {
        kp_tls_cat(err, errlen, " (wrong password in tls.key_password_file?)");
    }
    return KP_ERROR;
}

/* Client certificate and key for mutual TLS. */
static int kp_tls_load_cert(SSL_CTX *sc, const struct kp_tls_conf *conf,
                            char *err, size_t errlen)
{
    if (!conf->cert_file != !conf->key_file) {
        snprintf(err, errlen,
                 "tls.cert_file and tls.key_file go together: set both");
        return KP_ERROR;
    }
    if (kp_tls_check_file("tls.cert_file", conf->cert_file, false, err,
                          errlen) != KP_OK ||
        kp_tls_check_file("tls.key_file", conf->key_file, false, err, errlen) !=
            KP_OK) {
        return KP_ERROR;
    }
    if (SSL_CTX_use_certificate_chain_file(sc, conf->cert_file) != 1) {
        return kp_tls_fail_file("tls.cert_file", conf->cert_file, err, errlen);
    }
    struct kp_tls_pw pw = {.len = 0, .have = false, .asked = false};
    int rc = KP_OK;
    if (conf->key_password_file) {
        rc = kp_tls_read_password(conf->key_password_file, &pw, err, errlen);
    }
    if (rc == KP_OK) {
        rc = kp_tls_load_key(sc, conf, &pw, err, errlen);
    }
    OPENSSL_cleanse(pw.buf, sizeof(pw.buf));
    if (rc == KP_OK && SSL_CTX_check_private_key(sc) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "tls.key_file %s does not match tls.cert_file %s",
                 conf->key_file, conf->cert_file);
        rc = KP_ERROR;
    }
    return rc;
}

static int kp_tls_on_verify(int ok, X509_STORE_CTX *xs);

/* Called when the broker asks for a client certificate and none is
 * configured: remembered for the diagnosis, then the handshake goes on
 * without one (the broker decides). */
static int kp_tls_on_cert_request(SSL *ssl, X509 **x509, EVP_PKEY **pkey)
{
    struct kp_tls *t = SSL_get_app_data(ssl);
    (void)x509;
    (void)pkey;
    if (t) {
        t->cert_requested = true;
    }
    return 0;
}

static SSL_CTX *kp_tls_ssl_ctx_new(char *err, size_t errlen)
{
    SSL_CTX *sc = SSL_CTX_new(TLS_client_method());
    if (!sc) {
        char why[256];
        kp_tls_reasons(why, sizeof(why));
        snprintf(err, errlen, "TLS: cannot create a context: %s", why);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(sc, TLS1_2_VERSION);
    SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(sc, SSL_MODE_ENABLE_PARTIAL_WRITE |
                             SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_client_cert_cb(sc, kp_tls_on_cert_request);
    return sc;
}

/*
 * Creates a context from security.tls: TLS 1.2 or newer, the CA store
 * (ca_file/ca_path, else the system's), certificate and host name
 * verification unless conf->verify is false (then a warning is logged,
 * once per context, i.e. per configuration load), and the client
 * certificate for mutual TLS, its key decrypted with the password in
 * key_password_file. Every file is read now: a reload that calls this
 * again re-reads them.
 *
 * Returns the context with one reference (release with kp_tls_ctx_put),
 * or NULL with err saying which file and why.
 */
struct kp_tls_ctx *kp_tls_ctx_create(const struct kp_tls_conf *conf, char *err,
                                     size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *sc = kp_tls_ssl_ctx_new(err, errlen);
    if (!sc) {
        return NULL;
    }
    if (kp_tls_load_ca(sc, conf, err, errlen) != KP_OK ||
        ((conf->cert_file || conf->key_file) &&
         kp_tls_load_cert(sc, conf, err, errlen) != KP_OK)) {
        SSL_CTX_free(sc);
        ERR_clear_error();
        return NULL;
    }
    if (conf->verify) {
        SSL_CTX_set_verify(sc, SSL_VERIFY_PEER, kp_tls_on_verify);
    } else {
        SSL_CTX_set_verify(sc, SSL_VERIFY_NONE, NULL);
        kp_warn("tls.verify is false: broker certificates and host names "
                "are NOT verified; anyone on the path can read and change "
                "the traffic");
    }
    struct kp_tls_ctx *c = kp_calloc(1, sizeof(*c));
    c->ssl_ctx = sc;
    c->refs = 1;
    c->verify = conf->verify;
    c->has_cert = conf->cert_file != NULL;
    c->server_name = conf->server_name ? kp_strdup(conf->server_name) : NULL;
    return c;
}

/* Takes a reference; returns c. */
struct kp_tls_ctx *kp_tls_ctx_get(struct kp_tls_ctx *c)
{
    c->refs++;
    return c;
}

/* Drops a reference; the last one frees the context. NULL is ignored. */
void kp_tls_ctx_put(struct kp_tls_ctx *c)
{
    if (!c || !kp_unref(&c->refs)) {
        return;
    }
    SSL_CTX_free(c->ssl_ctx);
    free(c->server_name);
    free(c);
}

/* Whether certificates and host names are verified (tls.verify). */
bool kp_tls_ctx_verifies(const struct kp_tls_ctx *c)
{
    return c->verify;
}

/* ---- verification details ---- */

/* Appends an X509 name in RFC 2253 form ("CN=localhost,O=x"). */
static void kp_tls_cat_name(char *buf, size_t cap, const X509_NAME *name)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) {
        return;
    }
    X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    kp_tls_cat(buf, cap, "%.*s", (int)KP_MIN(n, 200), p);
    BIO_free(b);
}

/* Appends the DNS and IP subject alternative names, or "no DNS or IP
 * names" when there are none. */
static void kp_tls_cat_sans(char *buf, size_t cap, X509 *x)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int shown = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && shown < 8; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS) {
            const ASN1_IA5STRING *s = g->d.dNSName;
            kp_tls_cat(buf, cap, "%sDNS:%.*s", shown++ ? "," : "",
                       KP_MIN(s->length, 100), (const char *)s->data);
        } else if (g->type == GEN_IPADD && (g->d.iPAddress->length == 4 ||
                                            g->d.iPAddress->length == 16)) {
            char ip[INET6_ADDRSTRLEN];
            int af = g->d.iPAddress->length == 4 ? AF_INET : AF_INET6;
            inet_ntop(af, g->d.iPAddress->data, ip, sizeof(ip));
            kp_tls_cat(buf, cap, "%sIP:%s", shown++ ? "," : "", ip);
        }
    }
    GENERAL_NAMES_free(gens);
    if (!shown) {
        kp_tls_cat(buf, cap, "no DNS or IP names");
    }
}

/* Describes x: subject, issuer, names (for the leaf) and validity. */
static void kp_tls_describe_cert(char *buf, size_t cap, X509 *x, int depth)
{
    buf[0] = '\0';
    kp_tls_cat(buf, cap, "subject ");
    kp_tls_cat_name(buf, cap, X509_get_subject_name(x));
    kp_tls_cat(buf, cap, ", issuer ");
    kp_tls_cat_name(buf, cap, X509_get_issuer_name(x));
    if (depth == 0) {
        kp_tls_cat(buf, cap, ", names ");
        kp_tls_cat_sans(buf, cap, x);
    }
    BIO *b = BIO_new(BIO_s_mem());
    if (b) {
        ASN1_TIME_print(b, X509_get0_notBefore(x));
        BIO_puts(b, " to ");
        ASN1_TIME_print(b, X509_get0_notAfter(x));
        char *p;
        long n = BIO_get_mem_data(b, &p);
        kp_tls_cat(buf, cap, ", valid %.*s", (int)KP_MIN(n, 100), p);
        BIO_free(b);
    }
}

/*
 * Verification callback: keeps the decision OpenSSL made, and records the
 * first failure with the certificate it concerns. (After a failed
 * verification the peer certificate is not kept in the session, so this
 * is the only moment it can be described.)
 */
static int kp_tls_on_verify(int ok, X509_STORE_CTX *xs)
{
    if (ok) {
        return ok;
    }
    SSL *ssl =
        X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct kp_tls *t = ssl ? SSL_get_app_data(ssl) : NULL;
    if (t && t->verr == X509_V_OK) {
        t->verr = X509_STORE_CTX_get_error(xs);
        t->verr_depth = X509_STORE_CTX_get_error_depth(xs);
        X509 *x = X509_STORE_CTX_get_current_cert(xs);
        if (x) {
            kp_tls_describe_cert(t->vcert, sizeof(t->vcert), x, t->verr_depth);
        }
    }
    return ok;
}

/* ---- connection ---- */

/*
 * Socket BIO callback: keeps the first bytes the broker sends during the
 * handshake, to tell a plaintext (or HTTP) answer from a broken TLS one.
 */
static long kp_tls_on_bio(BIO *b, int oper, const char *argp, size_t len,
                          int argi, long argl, int ret, size_t *processed)
{
    struct kp_tls *t = (struct kp_tls *)BIO_get_callback_arg(b);
    (void)len;
    (void)argi;
    (void)argl;
    if (t && oper == (BIO_CB_READ | BIO_CB_RETURN) && ret > 0 && processed &&
        t->state == KP_TLS_HANDSHAKE && t->first_len < sizeof(t->first)) {
        size_t n = KP_MIN(*processed, sizeof(t->first) - t->first_len);
        memcpy(t->first + t->first_len, argp, n);
        t->first_len += n;
    }
    return ret;
}

/* Sets the name verified and sent as SNI: a literal IP address is checked
 * against the certificate's IP names and sent without SNI (RFC 6066). */
static int kp_tls_set_host(struct kp_tls *t, char *err, size_t errlen)
{
    unsigned char addr[16];
    bool ip = inet_pton(AF_INET, t->host, addr) == 1 ||
              inet_pton(AF_INET6, t->host, addr) == 1;
    if (!ip && SSL_set_tlsext_host_name(t->ssl, t->host) != 1) {
        char why[256];
        kp_tls_reasons(why, sizeof(why));
        snprintf(err, errlen, "TLS: server name \"%s\": %s", t->host, why);
        return KP_ERROR;
    }
    if (!t->ctx->verify) {
        return KP_OK;
    }
    X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
    int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, t->host)
                : SSL_set1_host(t->ssl, t->host);
    if (ok != 1) {
        char why[256];
        kp_tls_reasons(why, sizeof(why));
        snprintf(err, errlen, "TLS: host name \"%s\": %s", t->host, why);
        return KP_ERROR;
    }
    SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return KP_OK;
}

/*
 * Starts TLS on fd, a connected nonblocking socket that stays the
 * caller's (kp_tls_destroy does not close it). host is the broker's host
 * name as advertised, used for SNI and verification unless tls.server_name
 * overrides it. Takes a reference on ctx for the connection's life.
 * Returns the connection in KP_TLS_HANDSHAKE, or NULL with err set.
 */
struct kp_tls *kp_tls_create(struct kp_tls_ctx *ctx, int fd, const char *host,
                             char *err, size_t errlen)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx->ssl_ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        char why[256];
        kp_tls_reasons(why, sizeof(why));
        snprintf(err, errlen, "TLS: cannot start a connection: %s", why);
        SSL_free(ssl);
        return NULL;
    }
    struct kp_tls *t = kp_calloc(1, sizeof(*t));
    t->ssl = ssl;
    t->ctx = kp_tls_ctx_get(ctx);
    t->host = kp_strdup(ctx->server_name ? ctx->server_name : host);
    t->state = KP_TLS_HANDSHAKE;
    t->verr = X509_V_OK;
    SSL_set_app_data(ssl, t);
    SSL_set_connect_state(ssl);
    BIO *rbio = SSL_get_rbio(ssl);
    BIO_set_callback_arg(rbio, (char *)t);
    BIO_set_callback_ex(rbio, kp_tls_on_bio);
    if (kp_tls_set_host(t, err, errlen) != KP_OK) {
        kp_tls_destroy(t);
        return NULL;
    }
    return t;
}

/*
 * Frees the connection. After a completed handshake, one nonblocking
 * close_notify is attempted (a broker that reads it logs a clean close);
 * its result does not matter. The fd stays open: the caller closes it.
 */
void kp_tls_destroy(struct kp_tls *t)
{
    if (!t) {
        return;
    }
    if (t->state == KP_TLS_UP) {
        SSL_shutdown(t->ssl);
    }
    BIO_set_callback_ex(SSL_get_rbio(t->ssl), NULL);
    SSL_free(t->ssl);
    ERR_clear_error();
    kp_tls_ctx_put(t->ctx);
    free(t->host);
    free(t->cbuf);
    free(t);
}

/* ---- diagnosis ---- */

/* Whether the first bytes of the broker's answer can begin a TLS record
 * (content type 20..24, major version 3). */
static bool kp_tls_first_is_tls(const struct kp_tls *t)
{
    return t->first_len == 0 || (t->first[0] >= 0x14 && t->first[0] <= 0x18 &&
                                 (t->first_len < 2 || t->first[1] == 0x03));
}

/* The certificate-verification failure, from what kp_tls_on_verify kept
 * (or SSL_get_verify_result when the callback saw nothing). */
static void kp_tls_diag_verify(struct kp_tls *t, long vr)
{
    size_t cap = sizeof(t->err);
    kp_tls_cat(t->err, cap, "certificate verification failed: %s",
               X509_verify_cert_error_string(vr));
    switch (vr) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        kp_tls_cat(t->err, cap,
                   ": the broker's certificate is not for \"%s\" (%s); set "
                   "tls.server_name if the broker's certificate uses "
                   "another name",
                   t->host, t->vcert);
        return;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_CERT_UNTRUSTED:
        kp_tls_cat(t->err, cap,
                   " (%s): the CA that signed the broker's certificate is "
                   "not trusted; set tls.ca_file to it",
                   t->vcert);
        return;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        kp_tls_cat(t->err, cap, " (%s): is the clock right?", t->vcert);
        return;
    default:
        if (t->vcert[0]) {
            kp_tls_cat(t->err, cap, " (%s)", t->vcert);
        }
        return;
    }
}

/* A reason code from the broker's alert or our own protocol checks. */
static void kp_tls_diag_reason(struct kp_tls *t, int reason, const char *why)
{
    size_t cap = sizeof(t->err);
    if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED ||
        (t->cert_requested && !t->ctx->has_cert &&
         (reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE ||
          reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
          reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN))) {
        kp_tls_cat(t->err, cap,
                   "the broker requires a client certificate (%s): set "
                   "tls.cert_file and tls.key_file",
                   why);
        return;
    }
    switch (reason) {
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
        kp_tls_cat(t->err, cap, "%s (%s)",
                   t->ctx->has_cert
                       ? "the broker rejected kproxyd's client certificate"
                       : "the broker rejected the connection; does it "
                         "require a client certificate (tls.cert_file)?",
                   why);
        return;
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
        kp_tls_cat(t->err, cap,
                   "no TLS version in common: kproxyd needs TLS 1.2 or "
                   "newer (%s)",
                   why);
        return;
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        kp_tls_cat(t->err, cap,
                   "%s: no cipher suite or signature algorithm in common?",
                   why);
        return;
    default:
        kp_tls_cat(t->err, cap, "%s", why);
        return;
    }
}

/* A broker that is not speaking TLS at all. */
static void kp_tls_diag_plaintext(struct kp_tls *t, bool eof)
{
    size_t cap = sizeof(t->err);
    if (t->first_len == 0 && eof) {
        kp_tls_cat(t->err, cap,
                   "the broker closed the connection without answering the "
                   "TLS handshake: is this a TLS listener? (a plaintext "
                   "Kafka listener drops a TLS ClientHello; set "
                   "security.protocol to plaintext or sasl_plaintext for "
                   "it)");
        return;
    }
    bool http = t->first_len >= 4 && memcmp(t->first, "HTTP", 4) == 0;
    if (http) {
        kp_tls_cat(t->err, cap,
                   "the broker answered HTTP, not TLS: this is an HTTP "
                   "port, not a Kafka listener");
        return;
    }
    kp_tls_cat(t->err, cap,
               "the broker answered with plaintext, not TLS (first bytes "
               "%02x %02x %02x %02x): is this a TLS listener? set "
               "security.protocol to plaintext or sasl_plaintext for it",
               t->first[0], t->first_len > 1 ? t->first[1] : 0,
               t->first_len > 2 ? t->first[2] : 0,
               t->first_len > 3 ? t->first[3] : 0);
}

/*
 * Builds t->err for a failed operation (op: "handshake", "read", "write")
 * from SSL_get_error's code, errno saved right after the call, and the
 * error queue (drained), then marks the connection failed.
 */
static int kp_tls_fail(struct kp_tls *t, const char *op, int ssl_err,
                       int sys_errno)
{
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
    long vr = SSL_get_verify_result(t->ssl);
    bool eof = (ssl_err == SSL_ERROR_SYSCALL && e == 0 && sys_errno == 0) ||
               reason == SSL_R_UNEXPECTED_EOF_WHILE_READING;
    /* A plaintext Kafka listener reads a size, finds it absurd and closes
     * with the rest of the ClientHello unread: the kernel then resets. */
    bool dropped = eof || (ssl_err == SSL_ERROR_SYSCALL && e == 0 &&
                           sys_errno == ECONNRESET);
    char why[512];
    kp_tls_reasons(why, sizeof(why));
    snprintf(t->err, sizeof(t->err), "TLS %s with %s: ", op, t->host);
    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED ||
        (t->ctx->verify && vr != X509_V_OK && t->state == KP_TLS_HANDSHAKE)) {
        kp_tls_diag_verify(t, t->verr != X509_V_OK ? t->verr : vr);
    } else if (t->state == KP_TLS_HANDSHAKE &&
               (!kp_tls_first_is_tls(t) || (dropped && t->first_len == 0))) {
        kp_tls_diag_plaintext(t, dropped);
    } else if (eof) {
        kp_tls_cat(t->err, sizeof(t->err), "the broker closed the connection");
    } else if (ssl_err == SSL_ERROR_SYSCALL && e == 0) {
        kp_tls_cat(t->err, sizeof(t->err), "%s", strerror(sys_errno));
    } else {
        kp_tls_diag_reason(t, reason, why);
    }
    t->state = KP_TLS_FAILED;
    return KP_ERROR;
}

/* Maps SSL_get_error of a call that did not succeed: KP_AGAIN with *want
 * for the retry conditions, else KP_ERROR through kp_tls_fail. */
static int kp_tls_again_or_fail(struct kp_tls *t, const char *op, int rc,
                                enum kp_tls_want *want)
{
    int sys_errno = errno;
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        *want = KP_TLS_WANT_READ;
        return KP_AGAIN;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        *want = KP_TLS_WANT_WRITE;
        return KP_AGAIN;
    }
    return kp_tls_fail(t, op, e, sys_errno);
}

/* ---- handshake, read, write ---- */

/*
 * Drives the handshake: KP_OK once it is complete and (unless tls.verify
 * is false) the certificate chain and host name checked out; KP_AGAIN
 * with *want to wait for; KP_ERROR with kp_tls_error() saying why (an
 * untrusted CA, an expired certificate, a host name mismatch, a plaintext
 * or HTTP peer, a required client certificate, no common version...).
 */
int kp_tls_handshake(struct kp_tls *t, enum kp_tls_want *want)
{
    *want = KP_TLS_WANT_NONE;
    if (t->state != KP_TLS_HANDSHAKE) {
        return t->state == KP_TLS_UP ? KP_OK : KP_ERROR;
    }
    ERR_clear_error();
    errno = 0;
    int rc = SSL_connect(t->ssl);
    if (rc == 1) {
        t->state = KP_TLS_UP;
        return KP_OK;
    }
    return kp_tls_again_or_fail(t, "handshake", rc, want);
}

/*
 * Reads up to len plaintext bytes into buf. KP_OK with *nread > 0 bytes;
 * KP_OK with *nread == 0 when the broker closed the connection (with or
 * without close_notify; kp_tls_error() says which); KP_AGAIN with *want
 * (KP_TLS_WANT_WRITE happens: a TLS 1.3 key update must be answered);
 * KP_ERROR. After KP_OK, bytes may remain inside OpenSSL with nothing left
 * on the fd: keep reading until KP_AGAIN, or, when stopping early for a
 * budget, come back without waiting on the fd while kp_tls_pending().
 * A client certificate the broker refuses under TLS 1.3 shows up here, on
 * the first read after a handshake that seemed to succeed.
 */
int kp_tls_read(struct kp_tls *t, void *buf, size_t len, size_t *nread,
                enum kp_tls_want *want)
{
    *nread = 0;
    *want = KP_TLS_WANT_NONE;
    if (t->state != KP_TLS_UP) {
        return t->state == KP_TLS_CLOSED ? KP_OK : KP_ERROR;
    }
    ERR_clear_error();
    errno = 0;
    size_t n = 0;
    if (SSL_read_ex(t->ssl, buf, len, &n) == 1) {
        *nread = n;
        t->stats.read_bytes += n;
        return KP_OK;
    }
    int sys_errno = errno;
    int e = SSL_get_error(t->ssl, 0);
    unsigned long q = ERR_peek_last_error();
    if (e == SSL_ERROR_ZERO_RETURN ||
        (e == SSL_ERROR_SYSCALL && q == 0 && sys_errno == 0) ||
        (e == SSL_ERROR_SSL && ERR_GET_LIB(q) == ERR_LIB_SSL &&
         ERR_GET_REASON(q) == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        ERR_clear_error();
        snprintf(t->err, sizeof(t->err), "TLS read with %s: %s", t->host,
                 e == SSL_ERROR_ZERO_RETURN
                     ? "the broker closed the connection (close_notify)"
                     : "the broker closed the connection without "
                       "close_notify");
        t->state = KP_TLS_CLOSED;
        return KP_OK;
    }
    errno = sys_errno;
    return kp_tls_again_or_fail(t, "read", 0, want);
}

/* Whether OpenSSL holds received bytes (decrypted or not) that a read
 * would return without the fd becoming readable. */
bool kp_tls_pending(const struct kp_tls *t)
{
    return t->state == KP_TLS_UP &&
           (SSL_pending(t->ssl) > 0 || SSL_has_pending(t->ssl) == 1);
}

/* One SSL_write_ex of [p, p+len): KP_OK with *done, else KP_AGAIN/ERROR. */
static int kp_tls_write1(struct kp_tls *t, const uint8_t *p, size_t len,
                         size_t *done, enum kp_tls_want *want)
{
    ERR_clear_error();
    errno = 0;
    *done = 0;
    if (SSL_write_ex(t->ssl, p, len, done) == 1) {
        return KP_OK;
    }
    return kp_tls_again_or_fail(t, "write", 0, want);
}

/* Writes out the copy buffer: KP_OK once it is empty. */
static int kp_tls_flush_cbuf(struct kp_tls *t, enum kp_tls_want *want)
{
    while (t->cpos < t->clen) {
        size_t done;
        int rc =
            kp_tls_write1(t, t->cbuf + t->cpos, t->clen - t->cpos, &done, want);
        if (rc != KP_OK) {
            return rc;
        }
        t->stats.coalesced_writes++;
        t->cpos += done;
    }
    t->cpos = t->clen = 0;
    return KP_OK;
}

/* Cursor over the caller's iovecs. */
struct kp_tls_cur {
    const struct iovec *iov; /* borrowed */
    size_t cnt;
    size_t i;   /* current iovec */
    size_t off; /* bytes of it already taken */
};

static size_t kp_tls_cur_left(struct kp_tls_cur *c)
{
    while (c->i < c->cnt && c->off == c->iov[c->i].iov_len) {
        c->i++;
        c->off = 0;
    }
    return c->i < c->cnt ? c->iov[c->i].iov_len - c->off : 0;
}

static const uint8_t *kp_tls_cur_ptr(const struct kp_tls_cur *c)
{
    return (const uint8_t *)c->iov[c->i].iov_base + c->off;
}

/* Copies the run of short segments at the cursor into the (empty) copy
 * buffer, as far as it has room; returns the bytes taken. */
static size_t kp_tls_coalesce(struct kp_tls *t, struct kp_tls_cur *c)
{
    if (!t->cbuf) {
        t->cbuf = kp_malloc(KP_TLS_COALESCE_BYTES);
    }
    size_t taken = 0;
    size_t left;
    while (t->clen < KP_TLS_COALESCE_BYTES && (left = kp_tls_cur_left(c)) &&
           left < KP_TLS_DIRECT_MIN) {
        size_t n = KP_MIN(left, KP_TLS_COALESCE_BYTES - t->clen);
        memcpy(t->cbuf + t->clen, kp_tls_cur_ptr(c), n);
        t->clen += n;
        c->off += n;
        taken += n;
    }
    t->stats.coalesced_bytes += taken;
    return taken;
}

/*
 * Encrypts and sends iov[0..iov_cnt). *nwritten counts the bytes taken
 * (sent, or copied into the connection's own buffer): the caller drops
 * them from its queue and, on the next call, passes what follows them.
 *
 *   KP_OK     everything was taken and sent (nothing left buffered here);
 *   KP_AGAIN  *nwritten bytes were taken (maybe 0, maybe all of them with
 *             some still buffered here): wait for *want, then call again
 *             with the rest (iov_cnt 0 when nothing is left) - the bytes
 *             not taken must be offered again unchanged, as OpenSSL
 *             requires; their address may change;
 *   KP_ERROR  kp_tls_error() says why.
 *
 * Segments of KP_TLS_DIRECT_MIN bytes or more are encrypted from the
 * caller's memory; shorter runs are copied into one record-sized buffer.
 */
int kp_tls_writev(struct kp_tls *t, const struct iovec *iov, size_t iov_cnt,
                  size_t *nwritten, enum kp_tls_want *want)
{
    struct kp_tls_cur c = {iov, iov_cnt, 0, 0};
    *nwritten = 0;
    *want = KP_TLS_WANT_NONE;
    if (t->state != KP_TLS_UP) {
        snprintf(t->err, sizeof(t->err), "TLS write with %s: connection %s",
                 t->host, kp_tls_state_names[t->state]);
        return KP_ERROR;
    }
    for (;;) {
        int rc = kp_tls_flush_cbuf(t, want);
        if (rc != KP_OK) {
            return rc;
        }
        size_t left = kp_tls_cur_left(&c);
        if (left == 0) {
            kp_assert(t->pend_direct == 0);
            return KP_OK;
        }
        if (left < KP_TLS_DIRECT_MIN && t->pend_direct == 0) {
            *nwritten += kp_tls_coalesce(t, &c);
            continue;
        }
        /* A retried direct write offers exactly what it offered before. */
        size_t len = t->pend_direct ? t->pend_direct : left;
        kp_assert(len <= left);
        size_t done;
        rc = kp_tls_write1(t, kp_tls_cur_ptr(&c), len, &done, want);
        if (rc != KP_OK) {
            t->pend_direct = rc == KP_AGAIN ? len : 0;
            return rc;
        }
        t->pend_direct = 0;
        t->stats.direct_writes++;
        t->stats.direct_bytes += done;
        c.off += done;
        *nwritten += done;
    }
}

/* ---- accessors ---- */

enum kp_tls_state kp_tls_state(const struct kp_tls *t)
{
    return t->state;
}

/* The last error or close reason ("" if none); valid until the next
 * operation on t. */
const char *kp_tls_error(const struct kp_tls *t)
{
    return t->err;
}

/* Negotiated protocol ("TLSv1.3"), or "" before the handshake ends. */
const char *kp_tls_version(const struct kp_tls *t)
{
    return t->state == KP_TLS_HANDSHAKE ? "" : SSL_get_version(t->ssl);
}

/* Negotiated cipher suite ("TLS_AES_256_GCM_SHA384"), or "". */
const char *kp_tls_cipher(const struct kp_tls *t)
{
    const char *c = SSL_get_cipher_name(t->ssl);
    return t->state == KP_TLS_HANDSHAKE || !c ? "" : c;
}

/* The name verified and sent as SNI. */
const char *kp_tls_host(const struct kp_tls *t)
{
    return t->host;
}

const struct kp_tls_stats *kp_tls_stats(const struct kp_tls *t)
{
    return &t->stats;
}

/* ---- plaintext side ---- */

/*
 * For a plaintext connection whose response size field makes no sense:
 * given the first bytes the broker sent (at least 4 to be useful),
 * returns a hint naming what is really on that port - a TLS listener
 * (a TLS alert or handshake record: content type 0x15/0x16, version 3.x)
 * or an HTTP server ("HTTP") - or NULL when the bytes say nothing.
 * The string is static.
 */
const char *kp_tls_sniff_plaintext_reply(const uint8_t *p, size_t len)
{
    if (len >= 2 && (p[0] == 0x15 || p[0] == 0x16) && p[1] == 0x03) {
        return "the broker answered with TLS: is this an SSL listener? set "
               "security.protocol to ssl or sasl_ssl";
    }
    if (len >= 4 && memcmp(p, "HTTP", 4) == 0) {
        return "the broker answered HTTP: this is an HTTP port, not a Kafka "
               "listener";
    }
    return NULL;
}
