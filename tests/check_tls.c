/*
 * check_tls.c - unit tests for kp_tls against an OpenSSL server in the
 * same process, on the other end of a nonblocking socketpair.
 *
 * Certificates are made at test time with OpenSSL's API (nothing with an
 * expiry date is committed): a CA, a second CA nobody trusts, server
 * certificates for "localhost" (+127.0.0.1), for another name, expired,
 * self-signed and signed by the untrusted CA, and client certificates
 * (one with a password-protected key).
 *
 * The loop: each round runs one nonblocking step of the server, one call
 * of the client under test, and when the client says KP_AGAIN, poll()s its
 * fd for exactly the readiness kp_tls asked for (plus the server's fd).
 * The poll timeout only catches a hang (a want that never comes true);
 * nothing depends on timing.
 */
#include "kp_tls.h"

#include "kp_buf.h"
#include "kp_conf.h"

#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/sockios.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

static char dir[256];

/* A path in the test directory (from a ring of buffers: each stays valid
 * for the next 63 calls). */
static const char *P(const char *name)
{
    static char buf[64][300];
    static int i;
    i = (i + 1) % 64;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
    return buf[i];
}

/* ---- certificates ---- */

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX c;
    X509V3_set_ctx_nodb(&c);
    X509V3_set_ctx(&c, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &c, nid, value);
    ck_assert_ptr_nonnull(ex);
    X509_add_ext(x, ex, -1);
    X509_EXTENSION_free(ex);
}

enum kind { CA, SERVER, CLIENT };

/* A certificate for key, valid from now+from_s to now+to_s, signed by
 * (issuer, ikey) or self-signed when issuer is NULL. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, enum kind kind,
                       const char *san, X509 *issuer, EVP_PKEY *ikey,
                       long from_s, long to_s)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_set_pubkey(x, key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn,
                               -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509 *iss = issuer ? issuer : x;
    add_ext(x, iss, NID_subject_key_identifier, "hash");
    if (kind == CA) {
        add_ext(x, iss, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, iss, NID_basic_constraints, "CA:FALSE");
        add_ext(x, iss, NID_key_usage, "critical,digitalSignature");
        add_ext(x, iss, NID_ext_key_usage,
                kind == SERVER ? "serverAuth" : "clientAuth");
        if (issuer) {
            add_ext(x, iss, NID_authority_key_identifier, "keyid:always");
        }
        if (san) {
            add_ext(x, iss, NID_subject_alt_name, san);
        }
    }
    ck_assert_int_gt(X509_sign(x, ikey ? ikey : key, EVP_sha256()), 0);
    return x;
}

static void write_cert(const char *name, X509 *x)
{
    FILE *f = fopen(P(name), "w");
    ck_assert_ptr_nonnull(f);
    PEM_write_X509(f, x);
    fclose(f);
}

static void write_key(const char *name, EVP_PKEY *k, const char *pass)
{
    FILE *f = fopen(P(name), "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(PEM_write_PrivateKey(f, k, pass ? EVP_aes_256_cbc() : NULL,
                                          (const unsigned char *)pass,
                                          pass ? (int)strlen(pass) : 0, NULL,
                                          NULL),
                     1);
    fclose(f);
}

static void write_file(const char *name, const char *text)
{
    FILE *f = fopen(P(name), "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

#define DAY (24 * 3600L)
#define LOCALHOST_SAN "DNS:localhost,IP:127.0.0.1"

static void make_certs(void)
{
    snprintf(dir, sizeof(dir), "/tmp/check_tls.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    EVP_PKEY *cak = EVP_EC_gen("P-256"), *ca2k = EVP_EC_gen("P-256");
    EVP_PKEY *sk = EVP_EC_gen("P-256"), *ck = EVP_EC_gen("P-256");
    X509 *ca =
        make_cert(cak, "kproxyd test CA", CA, NULL, NULL, NULL, -DAY, 30 * DAY);
    X509 *ca2 =
        make_cert(ca2k, "untrusted CA", CA, NULL, NULL, NULL, -DAY, 30 * DAY);
    write_cert("ca.pem", ca);
    write_cert("ca2.pem", ca2);
    write_key("server.key", sk, NULL);
    struct {
        const char *file, *cn, *san;
        enum kind kind;
        X509 *iss;
        EVP_PKEY *ik;
        long from, to;
    } certs[] = {
        {"server.pem", "localhost", LOCALHOST_SAN, SERVER, ca, cak, -DAY, DAY},
        {"expired.pem", "localhost", LOCALHOST_SAN, SERVER, ca, cak, -3 * DAY,
         -2 * DAY},
        {"future.pem", "localhost", LOCALHOST_SAN, SERVER, ca, cak, 2 * DAY,
         3 * DAY},
        {"other.pem", "other.example", "DNS:other.example", SERVER, ca, cak,
         -DAY, DAY},
        {"untrusted.pem", "localhost", LOCALHOST_SAN, SERVER, ca2, ca2k, -DAY,
         DAY},
        {"selfsigned.pem", "localhost", LOCALHOST_SAN, SERVER, NULL, NULL, -DAY,
         DAY},
        {"client.pem", "kproxyd-client", NULL, CLIENT, ca, cak, -DAY, DAY},
        {"client2.pem", "kproxyd-client", NULL, CLIENT, ca2, ca2k, -DAY, DAY},
    };
    for (size_t i = 0; i < KP_ARRAY_LEN(certs); i++) {
        bool cli = certs[i].kind == CLIENT;
        X509 *x =
            make_cert(cli ? ck : sk, certs[i].cn, certs[i].kind, certs[i].san,
                      certs[i].iss, certs[i].ik ? certs[i].ik : sk,
                      certs[i].from, certs[i].to);
        write_cert(certs[i].file, x);
        X509_free(x);
    }
    write_key("client.key", ck, NULL);
    write_key("client-enc.key", ck, "pa55 word");
    write_file("pass", "pa55 word\n");
    write_file("pass-crlf", "pa55 word\r\n");
    write_file("pass-wrong", "nope\n");
    write_file("garbage.pem", "this is not PEM\n");
    X509_free(ca);
    X509_free(ca2);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(ca2k);
    EVP_PKEY_free(sk);
    EVP_PKEY_free(ck);
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_certs(void)
{
    nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- the server end ---- */

enum plain_mode { PLAIN_NONE, PLAIN_REPLY, PLAIN_CLOSE, PLAIN_RESET };

struct srv {
    SSL *ssl; /* NULL: a plaintext peer (plain) */
    int fd;
    bool accepted, failed, closed;
    char err[256];
    struct kp_buf rx;
    const uint8_t *tx;
    size_t tx_len, tx_off;
    short events;
    enum plain_mode plain;
    const char *reply;
    size_t reply_len;
};

static SSL_CTX *srv_ctx(const char *cert, bool want_client_cert,
                        int max_version)
{
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(c, P(cert)), 1);
    ck_assert_int_eq(
        SSL_CTX_use_PrivateKey_file(c, P("server.key"), SSL_FILETYPE_PEM), 1);
    if (want_client_cert) {
        ck_assert_int_eq(SSL_CTX_load_verify_file(c, P("ca.pem")), 1);
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           NULL);
    }
    if (max_version) {
        SSL_CTX_set_security_level(c, 0);
        SSL_CTX_set_cipher_list(c, "DEFAULT:@SECLEVEL=0");
        SSL_CTX_set_min_proto_version(c, TLS1_VERSION);
        SSL_CTX_set_max_proto_version(c, max_version);
    }
    return c;
}

static void srv_fail(struct srv *s)
{
    s->failed = true;
    ERR_error_string_n(ERR_peek_last_error(), s->err, sizeof(s->err));
    ERR_clear_error();
}

/* Reads what is there; KP_AGAIN when it should wait. */
static void srv_read(struct srv *s)
{
    for (;;) {
        uint8_t buf[65536];
        size_t n;
        if (SSL_read_ex(s->ssl, buf, sizeof(buf), &n) == 1) {
            kp_buf_put_bytes(&s->rx, buf, n);
            continue;
        }
        int e = SSL_get_error(s->ssl, 0);
        if (e == SSL_ERROR_WANT_WRITE) {
            s->events |= POLLOUT;
        } else if (e == SSL_ERROR_ZERO_RETURN) {
            s->closed = true;
        } else if (e != SSL_ERROR_WANT_READ) {
            srv_fail(s);
        }
        return;
    }
}

static void srv_write(struct srv *s)
{
    while (!s->failed && s->tx_off < s->tx_len) {
        size_t n;
        if (SSL_write_ex(s->ssl, s->tx + s->tx_off, s->tx_len - s->tx_off,
                         &n) == 1) {
            s->tx_off += n;
            continue;
        }
        int e = SSL_get_error(s->ssl, 0);
        if (e == SSL_ERROR_WANT_WRITE) {
            s->events |= POLLOUT;
        } else if (e != SSL_ERROR_WANT_READ) {
            srv_fail(s);
        }
        return;
    }
}

static void plain_step(struct srv *s)
{
    uint8_t buf[4096];
    if (s->plain == PLAIN_RESET) {
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, 0) == 1) {
            close(s->fd); /* unread ClientHello: the peer gets a reset */
            s->fd = -1;
        }
        return;
    }
    ssize_t n;
    size_t got = 0;
    while ((n = read(s->fd, buf, sizeof(buf))) > 0) {
        got += (size_t)n;
    }
    if (got && s->plain == PLAIN_CLOSE) {
        close(s->fd);
        s->fd = -1;
    } else if (got && s->reply) {
        ck_assert_int_eq(write(s->fd, s->reply, s->reply_len),
                         (ssize_t)s->reply_len);
        s->reply = NULL;
    }
}

/* One nonblocking step of the server: accept, read, write. */
static void srv_step(struct srv *s)
{
    s->events = POLLIN;
    if (s->fd < 0 || s->failed) {
        return;
    }
    if (!s->ssl) {
        plain_step(s);
        return;
    }
    if (!s->accepted) {
        ERR_clear_error();
        int rc = SSL_accept(s->ssl);
        if (rc != 1) {
            int e = SSL_get_error(s->ssl, rc);
            if (e == SSL_ERROR_WANT_WRITE) {
                s->events = POLLOUT;
            } else if (e != SSL_ERROR_WANT_READ) {
                srv_fail(s);
            }
            return;
        }
        s->accepted = true;
    }
    srv_read(s);
    srv_write(s);
}

/* ---- client + server pair ---- */

struct pair {
    int cfd;
    struct srv s;
    struct kp_tls_ctx *ctx;
    struct kp_tls *t;
    SSL_CTX *sctx;
    int agains; /* KP_AGAIN answers seen by the loop */
};

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* A client for host with conf against sctx (NULL: a plaintext peer). */
static void pair_open(struct pair *p, SSL_CTX *sctx,
                      const struct kp_tls_conf *conf, const char *host)
{
    int sv[2];
    memset(p, 0, sizeof(*p));
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    nonblock(sv[0]);
    nonblock(sv[1]);
    p->cfd = sv[0];
    p->s.fd = sv[1];
    kp_buf_init(&p->s.rx, 1024);
    p->sctx = sctx;
    if (sctx) {
        p->s.ssl = SSL_new(sctx);
        SSL_set_fd(p->s.ssl, sv[1]);
    }
    char err[512];
    p->ctx = kp_tls_ctx_create(conf, err, sizeof(err));
    ck_assert_msg(p->ctx != NULL, "ctx: %s", err);
    p->t = kp_tls_create(p->ctx, p->cfd, host, err, sizeof(err));
    ck_assert_msg(p->t != NULL, "create: %s", err);
}

static void pair_close(struct pair *p)
{
    kp_tls_destroy(p->t);
    kp_tls_ctx_put(p->ctx);
    close(p->cfd);
    SSL_free(p->s.ssl);
    if (p->s.fd >= 0) {
        close(p->s.fd);
    }
    SSL_CTX_free(p->sctx);
    kp_buf_deinit(&p->s.rx);
}

/* Waits for the readiness the client asked for, or for the server's. */
static void pair_wait(struct pair *p, enum kp_tls_want w)
{
    ck_assert(w == KP_TLS_WANT_READ || w == KP_TLS_WANT_WRITE);
    p->agains++;
    struct pollfd f[2] = {
        {p->cfd, w == KP_TLS_WANT_READ ? POLLIN : POLLOUT, 0},
        {p->s.failed || p->s.closed ? -1 : p->s.fd, p->s.events, 0},
    };
    int n = poll(f, 2, 10000);
    ck_assert_msg(n > 0, "no progress: client wants %s", kp_tls_want_names[w]);
}

static int handshake(struct pair *p)
{
    for (;;) {
        srv_step(&p->s);
        enum kp_tls_want w;
        int rc = kp_tls_handshake(p->t, &w);
        if (rc != KP_AGAIN) {
            srv_step(&p->s); /* let the server see the last flight */
            return rc;
        }
        pair_wait(p, w);
    }
}

/* Reads until the client has want bytes, an error or a close. */
static int read_all(struct pair *p, struct kp_buf *out, size_t want,
                    size_t chunk, int *pending_seen)
{
    uint8_t *buf = malloc(chunk);
    int rc;
    for (;;) {
        srv_step(&p->s);
        size_t n;
        enum kp_tls_want w;
        rc = kp_tls_read(p->t, buf, chunk, &n, &w);
        if (rc == KP_OK && n > 0) {
            kp_buf_put_bytes(out, buf, n);
            if (kp_tls_pending(p->t) && pending_seen) {
                (*pending_seen)++;
            }
            if (out->len >= want) {
                break;
            }
            continue;
        }
        if (rc != KP_AGAIN) {
            break;
        }
        pair_wait(p, w);
    }
    free(buf);
    return rc;
}

static struct kp_tls_conf conf_ca(void)
{
    return (struct kp_tls_conf){.ca_file = (char *)P("ca.pem"), .verify = true};
}

/* ---- stderr capture (the verify=false warning) ---- */

static int saved_stderr = -1;

static void capture_begin(void)
{
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(P("stderr.txt"), O_RDWR | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    close(fd);
}

static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    FILE *f = fopen(P("stderr.txt"), "r");
    char *buf = calloc(1, 8192);
    size_t n = fread(buf, 1, 8191, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* ---- tests: helpers without I/O ---- */

START_TEST(test_sniff)
{
    static const uint8_t alert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46};
    static const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00};
    static const uint8_t kafka[] = {0x00, 0x00, 0x00, 0x10};
    const char *h = kp_tls_sniff_plaintext_reply(alert, sizeof(alert));
    ck_assert_ptr_nonnull(h);
    ck_assert_ptr_nonnull(strstr(h, "SSL listener"));
    ck_assert_ptr_nonnull(strstr(h, "security.protocol"));
    ck_assert_str_eq(kp_tls_sniff_plaintext_reply(hello, sizeof(hello)), h);
    h = kp_tls_sniff_plaintext_reply((const uint8_t *)"HTTP/1.1 400", 12);
    ck_assert_ptr_nonnull(h);
    ck_assert_ptr_nonnull(strstr(h, "HTTP port"));
    /* 1213486160 = "HTTP" as a Kafka response size. */
    h = kp_tls_sniff_plaintext_reply((const uint8_t *)"HTTP", 4);
    ck_assert_ptr_nonnull(h);
    ck_assert_ptr_null(kp_tls_sniff_plaintext_reply(kafka, sizeof(kafka)));
    ck_assert_ptr_null(kp_tls_sniff_plaintext_reply(alert, 1));
    ck_assert_ptr_null(kp_tls_sniff_plaintext_reply((const uint8_t *)"HTT", 3));
    ck_assert_ptr_null(kp_tls_sniff_plaintext_reply(NULL, 0));
}
END_TEST

/* Each configuration error names the file and the reason. */
START_TEST(test_ctx_errors)
{
    struct {
        struct kp_tls_conf c;
        const char *expect[3];
    } tab[] = {
        {{.ca_file = (char *)P("nope.pem"), .verify = true},
         {"tls.ca_file", "nope.pem", "No such file or directory"}},
        {{.ca_file = (char *)P("garbage.pem"), .verify = true},
         {"tls.ca_file", "garbage.pem", NULL}},
        {{.ca_path = (char *)P("nodir"), .verify = true},
         {"tls.ca_path", "nodir", "No such file"}},
        {{.cert_file = (char *)P("client.pem"), .verify = true},
         {"tls.cert_file and tls.key_file", NULL, NULL}},
        {{.cert_file = (char *)P("nope.pem"),
          .key_file = (char *)P("client.key"),
          .verify = true},
         {"tls.cert_file", "nope.pem", "No such file"}},
        {{.cert_file = (char *)P("garbage.pem"),
          .key_file = (char *)P("client.key"),
          .verify = true},
         {"tls.cert_file", "garbage.pem", NULL}},
        {{.cert_file = (char *)P("client.pem"),
          .key_file = (char *)P("server.key"),
          .verify = true},
         {"tls.key_file", "server.key", "does not match"}},
        {{.cert_file = (char *)P("client.pem"),
          .key_file = (char *)P("client-enc.key"),
          .verify = true},
         {"client-enc.key", "encrypted", "tls.key_password_file"}},
        {{.cert_file = (char *)P("client.pem"),
          .key_file = (char *)P("client-enc.key"),
          .key_password_file = (char *)P("pass-wrong"),
          .verify = true},
         {"tls.key_file", "client-enc.key", "wrong password"}},
        {{.cert_file = (char *)P("client.pem"),
          .key_file = (char *)P("client-enc.key"),
          .key_password_file = (char *)P("nopass"),
          .verify = true},
         {"tls.key_password_file", "nopass", "No such file"}},
    };
    for (size_t i = 0; i < KP_ARRAY_LEN(tab); i++) {
        char err[512] = "";
        struct kp_tls_ctx *c = kp_tls_ctx_create(&tab[i].c, err, sizeof(err));
        ck_assert_msg(c == NULL, "case %zu created", i);
        for (int k = 0; k < 3 && tab[i].expect[k]; k++) {
            ck_assert_msg(strstr(err, tab[i].expect[k]) != NULL,
                          "case %zu: \"%s\" lacks \"%s\"", i, err,
                          tab[i].expect[k]);
        }
        ck_assert_msg(ERR_peek_error() == 0, "case %zu left errors", i);
    }
    /* A password file longer than any PEM password. */
    char *big = malloc(2000);
    memset(big, 'x', 1999);
    big[1999] = '\0';
    write_file("pass-big", big);
    free(big);
    struct kp_tls_conf c = {.cert_file = (char *)P("client.pem"),
                            .key_file = (char *)P("client-enc.key"),
                            .key_password_file = (char *)P("pass-big"),
                            .verify = true};
    char err[512];
    ck_assert_ptr_null(kp_tls_ctx_create(&c, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "longer than 1023 bytes"));
    /* The system store, without files, loads. */
    c = (struct kp_tls_conf){.verify = true};
    struct kp_tls_ctx *ctx = kp_tls_ctx_create(&c, err, sizeof(err));
    ck_assert_ptr_nonnull(ctx);
    ck_assert(kp_tls_ctx_verifies(ctx));
    kp_tls_ctx_put(ctx);
    /* ca_path as a directory (with the CA file inside, unhashed). */
    c = (struct kp_tls_conf){.ca_path = dir, .verify = true};
    ctx = kp_tls_ctx_create(&c, err, sizeof(err));
    ck_assert_msg(ctx != NULL, "%s", err);
    kp_tls_ctx_put(ctx);
}
END_TEST

/* ---- tests: handshakes ---- */

START_TEST(test_handshake_tls13)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    pair_open(&p, srv_ctx("server.pem", false, 0), &c, "localhost");
    ck_assert_int_eq(kp_tls_state(p.t), KP_TLS_HANDSHAKE);
    ck_assert_str_eq(kp_tls_version(p.t), "");
    ck_assert_int_eq(handshake(&p), KP_OK);
    ck_assert_int_eq(kp_tls_state(p.t), KP_TLS_UP);
    ck_assert_str_eq(kp_tls_version(p.t), "TLSv1.3");
    ck_assert_str_ne(kp_tls_cipher(p.t), "");
    ck_assert_str_eq(kp_tls_host(p.t), "localhost");
    ck_assert(p.s.accepted);
    /* SNI carried the host name. */
    ck_assert_str_eq(SSL_get_servername(p.s.ssl, TLSEXT_NAMETYPE_host_name),
                     "localhost");
    ck_assert_int_gt(p.agains, 0);
    pair_close(&p);
}
END_TEST

START_TEST(test_handshake_tls12)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    SSL_CTX *s = srv_ctx("server.pem", false, 0);
    SSL_CTX_set_max_proto_version(s, TLS1_2_VERSION);
    pair_open(&p, s, &c, "localhost");
    ck_assert_int_eq(handshake(&p), KP_OK);
    ck_assert_str_eq(kp_tls_version(p.t), "TLSv1.2");
    pair_close(&p);
}
END_TEST

/* A broker that stops at TLS 1.1: no version in common. */
START_TEST(test_handshake_old_version)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    pair_open(&p, srv_ctx("server.pem", false, TLS1_1_VERSION), &c,
              "localhost");
    ck_assert_int_eq(handshake(&p), KP_ERROR);
    ck_assert_int_eq(kp_tls_state(p.t), KP_TLS_FAILED);
    ck_assert_msg(strstr(kp_tls_error(p.t), "no TLS version in common") &&
                      strstr(kp_tls_error(p.t), "TLS 1.2"),
                  "%s", kp_tls_error(p.t));
    pair_close(&p);
}
END_TEST

/* An IP address is verified against the certificate's IP names, and is
 * not sent as SNI. */
START_TEST(test_handshake_ip)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    pair_open(&p, srv_ctx("server.pem", false, 0), &c, "127.0.0.1");
    ck_assert_int_eq(handshake(&p), KP_OK);
    ck_assert_ptr_null(SSL_get_servername(p.s.ssl, TLSEXT_NAMETYPE_host_name));
    pair_close(&p);

    pair_open(&p, srv_ctx("server.pem", false, 0), &c, "127.0.0.2");
    ck_assert_int_eq(handshake(&p), KP_ERROR);
    ck_assert_msg(strstr(kp_tls_error(p.t), "IP address mismatch") &&
                      strstr(kp_tls_error(p.t), "127.0.0.2"),
                  "%s", kp_tls_error(p.t));
    pair_close(&p);
}
END_TEST

/* ---- tests: verification failures ---- */

static void expect_fail(const char *cert, const char *host,
                        const char *const *expect)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    pair_open(&p, srv_ctx(cert, false, 0), &c, host);
    ck_assert_int_eq(handshake(&p), KP_ERROR);
    const char *e = kp_tls_error(p.t);
    for (int i = 0; expect[i]; i++) {
        ck_assert_msg(strstr(e, expect[i]) != NULL, "%s: \"%s\" lacks \"%s\"",
                      cert, e, expect[i]);
    }
    ck_assert_int_eq(kp_tls_state(p.t), KP_TLS_FAILED);
    /* The broker heard why (a TLS alert). */
    ck_assert(p.s.failed);
    /* Later calls keep failing without touching the socket. */
    enum kp_tls_want w;
    ck_assert_int_eq(kp_tls_handshake(p.t, &w), KP_ERROR);
    pair_close(&p);
}

START_TEST(test_verify_unknown_ca)
{
    expect_fail("untrusted.pem", "localhost",
                (const char *const[]){"certificate verification failed",
                                      "unable to get local issuer certificate",
                                      "CN=untrusted CA", "tls.ca_file", NULL});
    expect_fail("selfsigned.pem", "localhost",
                (const char *const[]){"certificate verification failed",
                                      "self-signed certificate", "tls.ca_file",
                                      NULL});
}
END_TEST

START_TEST(test_verify_expired)
{
    expect_fail("expired.pem", "localhost",
                (const char *const[]){"certificate verification failed",
                                      "certificate has expired",
                                      "subject CN=localhost", NULL});
    expect_fail(
        "future.pem", "localhost",
        (const char *const[]){"certificate is not yet valid", "clock", NULL});
}
END_TEST

START_TEST(test_verify_wrong_host)
{
    expect_fail(
        "other.pem", "localhost",
        (const char *const[]){"hostname mismatch", "not for \"localhost\"",
                              "DNS:other.example", "tls.server_name", NULL});
    /* The advertised host is what counts: a certificate for localhost does
     * not pass for broker1.example even if the TCP peer is localhost. */
    expect_fail("server.pem", "broker1.example",
                (const char *const[]){"hostname mismatch",
                                      "\"broker1.example\"",
                                      "DNS:localhost,IP:127.0.0.1", NULL});
}
END_TEST

/* tls.server_name replaces the broker's host for SNI and verification. */
START_TEST(test_server_name)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    c.server_name = "other.example";
    pair_open(&p, srv_ctx("other.pem", false, 0), &c, "localhost");
    ck_assert_str_eq(kp_tls_host(p.t), "other.example");
    ck_assert_int_eq(handshake(&p), KP_OK);
    ck_assert_str_eq(SSL_get_servername(p.s.ssl, TLSEXT_NAMETYPE_host_name),
                     "other.example");
    pair_close(&p);
}
END_TEST

/* verify=false: an untrusted certificate for another name passes, and the
 * context creation warned about it. */
START_TEST(test_verify_off)
{
    struct kp_tls_conf c = {.ca_file = (char *)P("ca.pem"), .verify = false};
    capture_begin();
    struct pair p;
    pair_open(&p, srv_ctx("untrusted.pem", false, 0), &c, "elsewhere");
    char *log = capture_end();
    ck_assert_msg(strstr(log, "warning") && strstr(log, "tls.verify is false"),
                  "log: %s", log);
    free(log);
    ck_assert(!kp_tls_ctx_verifies(p.ctx));
    /* Only the context warns, not each connection. */
    capture_begin();
    char err[256];
    struct kp_tls *t2 = kp_tls_create(p.ctx, p.cfd, "x", err, sizeof(err));
    log = capture_end();
    ck_assert_str_eq(log, "");
    free(log);
    kp_tls_destroy(t2);
    ck_assert_int_eq(handshake(&p), KP_OK);
    pair_close(&p);
}
END_TEST

/* ---- tests: mutual TLS ---- */

START_TEST(test_mtls_ok)
{
    static const char *const keys[][2] = {{"client.key", NULL},
                                          {"client-enc.key", "pass"},
                                          {"client-enc.key", "pass-crlf"}};
    for (size_t i = 0; i < KP_ARRAY_LEN(keys); i++) {
        struct pair p;
        struct kp_tls_conf c = conf_ca();
        c.cert_file = (char *)P("client.pem");
        c.key_file = (char *)P(keys[i][0]);
        c.key_password_file = keys[i][1] ? (char *)P(keys[i][1]) : NULL;
        pair_open(&p, srv_ctx("server.pem", true, 0), &c, "localhost");
        ck_assert_int_eq(handshake(&p), KP_OK);
        /* Data both ways proves the server accepted the certificate. */
        struct iovec iov = {(void *)"ping", 4};
        size_t n;
        enum kp_tls_want w;
        ck_assert_int_eq(kp_tls_writev(p.t, &iov, 1, &n, &w), KP_OK);
        p.s.tx = (const uint8_t *)"pong";
        p.s.tx_len = 4;
        struct kp_buf in;
        kp_buf_init(&in, 16);
        ck_assert_int_eq(read_all(&p, &in, 4, 64, NULL), KP_OK);
        ck_assert(in.len == 4 && memcmp(in.data, "pong", 4) == 0);
        ck_assert(p.s.rx.len == 4 && memcmp(p.s.rx.data, "ping", 4) == 0);
        X509 *peer = SSL_get1_peer_certificate(p.s.ssl);
        ck_assert_ptr_nonnull(peer);
        X509_free(peer);
        kp_buf_deinit(&in);
        pair_close(&p);
    }
}
END_TEST

/*
 * The broker wants a client certificate, kproxyd has none (or one from a
 * CA the broker does not trust). Under TLS 1.3 the client's handshake
 * completes before the broker checks, so the refusal arrives on the first
 * read; under TLS 1.2 the handshake itself fails.
 */
static void mtls_refused(const char *cert, const char *key, int max_version,
                         const char *expect)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    c.cert_file = cert ? (char *)P(cert) : NULL;
    c.key_file = key ? (char *)P(key) : NULL;
    SSL_CTX *s = srv_ctx("server.pem", true, 0);
    if (max_version) {
        SSL_CTX_set_max_proto_version(s, max_version);
    }
    pair_open(&p, s, &c, "localhost");
    int rc = handshake(&p);
    if (rc == KP_OK) {
        struct kp_buf in;
        kp_buf_init(&in, 16);
        rc = read_all(&p, &in, 1, 64, NULL);
        kp_buf_deinit(&in);
    }
    ck_assert_int_eq(rc, KP_ERROR);
    ck_assert_msg(strstr(kp_tls_error(p.t), expect) != NULL,
                  "\"%s\" lacks \"%s\"", kp_tls_error(p.t), expect);
    ck_assert(p.s.failed);
    pair_close(&p);
}

START_TEST(test_mtls_refused)
{
    mtls_refused(NULL, NULL, 0, "the broker requires a client certificate");
    mtls_refused(NULL, NULL, TLS1_2_VERSION, "client certificate");
    mtls_refused("client2.pem", "client.key", 0,
                 "the broker rejected kproxyd's client certificate");
    mtls_refused("client2.pem", "client.key", TLS1_2_VERSION,
                 "the broker rejected kproxyd's client certificate");
}
END_TEST

/* ---- tests: a peer that does not speak TLS ---- */

static void expect_plain(enum plain_mode mode, const char *reply,
                         const char *expect)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    pair_open(&p, NULL, &c, "localhost");
    p.s.plain = mode;
    p.s.reply = reply;
    p.s.reply_len = reply ? strlen(reply) : 0;
    if (reply && reply[0] == '\0') {
        p.s.reply_len = 8; /* a Kafka-like size + correlation id */
    }
    ck_assert_int_eq(handshake(&p), KP_ERROR);
    ck_assert_msg(strstr(kp_tls_error(p.t), expect) != NULL,
                  "\"%s\" lacks \"%s\"", kp_tls_error(p.t), expect);
    pair_close(&p);
}

START_TEST(test_plaintext_peer)
{
    expect_plain(PLAIN_REPLY, "HTTP/1.1 400 Bad Request\r\n\r\n",
                 "this is an HTTP port");
    expect_plain(PLAIN_REPLY, "\0\0\0\x04\0\0\0\x07",
                 "the broker answered with plaintext, not TLS (first bytes "
                 "00 00 00 04): is this a TLS listener?");
    expect_plain(PLAIN_CLOSE, NULL,
                 "closed the connection without answering the TLS "
                 "handshake: is this a TLS listener?");
    expect_plain(PLAIN_RESET, NULL, "is this a TLS listener?");
}
END_TEST

/* ---- tests: data ---- */

struct seg {
    size_t off, len;
};

/* iovecs for the stream from skip, pointing into base (like kp_req_iov). */
static size_t build_iov(const struct seg *segs, size_t nseg,
                        const uint8_t *base, size_t skip, struct iovec *iov,
                        size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < nseg && n < max; i++) {
        if (skip >= segs[i].len) {
            skip -= segs[i].len;
            continue;
        }
        iov[n].iov_base = (void *)(base + segs[i].off + skip);
        iov[n].iov_len = segs[i].len - skip;
        skip = 0;
        n++;
    }
    return n;
}

/* Writes the stream (segments of copy a or b, alternating per call, so
 * retried bytes move) while the server reads it. */
static void write_stream(struct pair *p, const struct seg *segs, size_t nseg,
                         const uint8_t *a, const uint8_t *b, size_t total)
{
    size_t sent = 0;
    int calls = 0;
    for (;;) {
        struct iovec iov[16];
        size_t cnt = build_iov(segs, nseg, calls++ % 2 ? b : a, sent, iov, 16);
        size_t n;
        enum kp_tls_want w;
        int rc = kp_tls_writev(p->t, iov, cnt, &n, &w);
        sent += n;
        ck_assert_uint_le(sent, total);
        if (rc == KP_OK && sent == total) {
            break;
        }
        ck_assert_msg(rc != KP_ERROR, "%s", kp_tls_error(p->t));
        srv_step(&p->s);
        if (rc == KP_AGAIN) {
            pair_wait(p, w);
        }
    }
    while (p->s.rx.len < total) {
        struct pollfd f = {p->s.fd, POLLIN, 0};
        ck_assert_int_eq(poll(&f, 1, 10000), 1);
        srv_step(&p->s);
        ck_assert(!p->s.failed);
    }
}

START_TEST(test_data_both_ways)
{
    enum { PAT = 2 << 20 };
    uint8_t *a = malloc(PAT), *b = malloc(PAT);
    RAND_bytes(a, PAT);
    memcpy(b, a, PAT);
    /* Runs of small headers around large batches, and sizes at the
     * direct-write threshold. */
    static const size_t large[] = {
        65536, 307200, 1048576, 5000, KP_TLS_DIRECT_MIN, KP_TLS_DIRECT_MIN - 1};
    struct seg segs[400];
    size_t nseg = 0, total = 0, large_total = 0, nsmall = 0;
    for (size_t k = 0; k < KP_ARRAY_LEN(large); k++) {
        for (int j = 0; j < 50; j++) {
            segs[nseg++] = (struct seg){total, (size_t)(1 + (j * 37) % 120)};
            total += segs[nseg - 1].len;
            nsmall++;
        }
        segs[nseg++] = (struct seg){total, large[k]};
        total += large[k];
        large_total += large[k] >= KP_TLS_DIRECT_MIN ? large[k] : 0;
    }
    ck_assert_uint_le(total, PAT);

    struct pair p;
    struct kp_tls_conf c = conf_ca();
    pair_open(&p, srv_ctx("server.pem", false, 0), &c, "localhost");
    int sndbuf = 8192;
    setsockopt(p.cfd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    ck_assert_int_eq(handshake(&p), KP_OK);
    p.agains = 0;
    write_stream(&p, segs, nseg, a, b, total);
    ck_assert_uint_eq(p.s.rx.len, total);
    ck_assert(memcmp(p.s.rx.data, a, total) == 0);
    /* The socket filled up: retries happened, with moved buffers. */
    ck_assert_int_gt(p.agains, 10);

    const struct kp_tls_stats *st = kp_tls_stats(p.t);
    ck_assert_uint_eq(st->direct_bytes + st->coalesced_bytes, total);
    /* Large segments went out from our memory (bar short tails left after
     * a partial record), small ones were copied and grouped. */
    ck_assert_uint_ge(st->direct_bytes,
                      large_total - KP_ARRAY_LEN(large) * KP_TLS_DIRECT_MIN);
    ck_assert_uint_le(st->coalesced_bytes,
                      total - large_total +
                          KP_ARRAY_LEN(large) * KP_TLS_DIRECT_MIN);
    ck_assert_uint_lt(st->coalesced_writes, nsmall / 4);
    ck_assert_uint_gt(st->direct_writes, 0);

    /* The other way: 1.5 MiB read 1000 bytes at a time; records are 16 KiB
     * so most reads leave bytes inside OpenSSL (kp_tls_pending). */
    p.s.tx = a;
    p.s.tx_len = 3 << 19;
    struct kp_buf in;
    kp_buf_init(&in, 1024);
    int pending = 0;
    ck_assert_int_eq(read_all(&p, &in, p.s.tx_len, 1000, &pending), KP_OK);
    ck_assert_uint_eq(in.len, p.s.tx_len);
    ck_assert(memcmp(in.data, a, in.len) == 0);
    ck_assert_int_gt(pending, 100);
    ck_assert_uint_eq(kp_tls_stats(p.t)->read_bytes, p.s.tx_len);
    kp_buf_deinit(&in);
    pair_close(&p);
    free(a);
    free(b);
}
END_TEST

/* An empty write and a write with only empty segments are no-ops. */
START_TEST(test_write_empty)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    pair_open(&p, srv_ctx("server.pem", false, 0), &c, "localhost");
    size_t n = 99;
    enum kp_tls_want w;
    /* Before the handshake: an error, not a crash. */
    ck_assert_int_eq(kp_tls_writev(p.t, NULL, 0, &n, &w), KP_ERROR);
    ck_assert_int_eq(handshake(&p), KP_OK);
    ck_assert_int_eq(kp_tls_writev(p.t, NULL, 0, &n, &w), KP_OK);
    ck_assert_uint_eq(n, 0);
    struct iovec iov[2] = {{(void *)"", 0}, {(void *)"", 0}};
    ck_assert_int_eq(kp_tls_writev(p.t, iov, 2, &n, &w), KP_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(kp_tls_stats(p.t)->coalesced_writes, 0);
    pair_close(&p);
}
END_TEST

/* Fills kproxyd's socket with whole records (each write succeeds; full
 * means SIOCOUTQ reached SO_SNDBUF) so nothing stays pending inside
 * OpenSSL; returns the bytes written. */
static size_t fill_socket(struct pair *p)
{
    int sndbuf;
    socklen_t sl = sizeof(sndbuf);
    getsockopt(p->cfd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &sl);
    size_t sent = 0;
    for (;;) {
        int outq = 0;
        ck_assert_int_eq(ioctl(p->cfd, SIOCOUTQ, &outq), 0);
        if (outq >= sndbuf) {
            return sent;
        }
        struct iovec iov = {(void *)"0123456789", 10};
        size_t n;
        enum kp_tls_want w;
        ck_assert_int_eq(kp_tls_writev(p->t, &iov, 1, &n, &w), KP_OK);
        sent += n;
    }
}

static void drain_server(struct pair *p, size_t want)
{
    while (p->s.rx.len < want) {
        struct pollfd f = {p->s.fd, POLLIN, 0};
        ck_assert_int_eq(poll(&f, 1, 10000), 1);
        srv_step(&p->s);
        ck_assert_msg(!p->s.failed, "server: %s", p->s.err);
    }
}

/*
 * A TLS 1.2 broker asks to renegotiate while kproxyd's socket is full.
 * kproxyd refuses (renegotiation is off) with a no_renegotiation alert;
 * OpenSSL 3 queues the alert for the next write, so the read waits for
 * whatever it asks (checked by pair_wait's poll) and the stream goes on.
 */
START_TEST(test_renegotiation_refused)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    SSL_CTX *s = srv_ctx("server.pem", false, 0);
    SSL_CTX_set_max_proto_version(s, TLS1_2_VERSION);
    pair_open(&p, s, &c, "localhost");
    ck_assert_int_eq(handshake(&p), KP_OK);
    size_t sent = fill_socket(&p);
    ck_assert_int_eq(SSL_renegotiate(p.s.ssl), 1);
    SSL_do_handshake(p.s.ssl); /* sends HelloRequest */
    ERR_clear_error();
    p.s.tx = (const uint8_t *)"after hello";
    p.s.tx_len = 11;
    struct kp_buf in;
    kp_buf_init(&in, 16);
    int rc = read_all(&p, &in, 11, 64, NULL);
    ck_assert_msg(rc == KP_OK, "%s", kp_tls_error(p.t));
    ck_assert(in.len == 11 && memcmp(in.data, "after hello", 11) == 0);
    drain_server(&p, sent);
    /* The next write carries the refusal, which this broker (OpenSSL)
     * takes as fatal; Kafka brokers never renegotiate. */
    struct iovec iov = {(void *)"x", 1};
    size_t n;
    enum kp_tls_want w;
    ck_assert_int_eq(kp_tls_writev(p.t, &iov, 1, &n, &w), KP_OK);
    while (!p.s.failed) {
        struct pollfd f = {p.s.fd, POLLIN, 0};
        ck_assert_int_eq(poll(&f, 1, 10000), 1);
        srv_step(&p.s);
    }
    ck_assert_msg(strstr(p.s.err, "no renegotiation") != NULL, "%s", p.s.err);
    kp_buf_deinit(&in);
    pair_close(&p);
}
END_TEST

/*
 * A TLS 1.3 key update that asks for one back, arriving while kproxyd's
 * socket is full. OpenSSL 3 answers it with the next write, so the read
 * goes on and the following write carries the answer (waiting for the
 * socket as needed); both directions stay byte-exact.
 */
START_TEST(test_key_update)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    pair_open(&p, srv_ctx("server.pem", false, 0), &c, "localhost");
    ck_assert_int_eq(handshake(&p), KP_OK);
    size_t sent = fill_socket(&p);
    ck_assert_int_eq(SSL_key_update(p.s.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
    p.s.tx = (const uint8_t *)"after update";
    p.s.tx_len = 12;
    p.s.events = 0;
    srv_write(&p.s); /* without reading: kproxyd's socket stays full */
    ck_assert_uint_eq(p.s.tx_off, 12);
    struct kp_buf in;
    kp_buf_init(&in, 16);
    ck_assert_int_eq(read_all(&p, &in, 12, 64, NULL), KP_OK);
    ck_assert(in.len == 12 && memcmp(in.data, "after update", 12) == 0);
    /* The next write answers the update first. */
    struct seg seg = {0, 10};
    write_stream(&p, &seg, 1, (const uint8_t *)"abcdefghij",
                 (const uint8_t *)"abcdefghij", 10);
    drain_server(&p, sent + 10);
    ck_assert(memcmp(p.s.rx.data + sent, "abcdefghij", 10) == 0);
    kp_buf_deinit(&in);
    pair_close(&p);
}
END_TEST

/* ---- tests: closing, reload ---- */

START_TEST(test_peer_close)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    pair_open(&p, srv_ctx("server.pem", false, 0), &c, "localhost");
    ck_assert_int_eq(handshake(&p), KP_OK);
    SSL_shutdown(p.s.ssl);
    uint8_t buf[16];
    size_t n = 1;
    enum kp_tls_want w;
    int rc;
    while ((rc = kp_tls_read(p.t, buf, sizeof(buf), &n, &w)) == KP_AGAIN) {
        pair_wait(&p, w);
    }
    ck_assert_int_eq(rc, KP_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(kp_tls_state(p.t), KP_TLS_CLOSED);
    ck_assert_ptr_nonnull(strstr(kp_tls_error(p.t), "(close_notify)"));
    ck_assert_int_eq(kp_tls_read(p.t, buf, sizeof(buf), &n, &w), KP_OK);
    ck_assert_uint_eq(n, 0);
    pair_close(&p);

    /* A plain close, without close_notify. */
    pair_open(&p, srv_ctx("server.pem", false, 0), &c, "localhost");
    ck_assert_int_eq(handshake(&p), KP_OK);
    close(p.s.fd);
    p.s.fd = -1;
    ck_assert_int_eq(kp_tls_read(p.t, buf, sizeof(buf), &n, &w), KP_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_nonnull(strstr(kp_tls_error(p.t), "without close_notify"));
    pair_close(&p);
}
END_TEST

/* A connection keeps its context after the configuration let go of it
 * (a reload), and the kproxyd end sends close_notify when destroyed. */
START_TEST(test_ctx_refs)
{
    struct pair p;
    struct kp_tls_conf c = conf_ca();
    pair_open(&p, srv_ctx("server.pem", false, 0), &c, "localhost");
    ck_assert_ptr_eq(kp_tls_ctx_get(p.ctx), p.ctx);
    kp_tls_ctx_put(p.ctx);
    kp_tls_ctx_put(p.ctx); /* the "configuration" reference */
    p.ctx = NULL;
    ck_assert_int_eq(handshake(&p), KP_OK);
    kp_tls_destroy(p.t);
    p.t = NULL;
    srv_step(&p.s);
    ck_assert(p.s.closed);
    kp_tls_ctx_put(NULL);
    pair_close(&p);
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("tls");
    tcase_add_unchecked_fixture(tc, make_certs, remove_certs);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_sniff);
    tcase_add_test(tc, test_ctx_errors);
    tcase_add_test(tc, test_handshake_tls13);
    tcase_add_test(tc, test_handshake_tls12);
    tcase_add_test(tc, test_handshake_old_version);
    tcase_add_test(tc, test_handshake_ip);
    tcase_add_test(tc, test_verify_unknown_ca);
    tcase_add_test(tc, test_verify_expired);
    tcase_add_test(tc, test_verify_wrong_host);
    tcase_add_test(tc, test_server_name);
    tcase_add_test(tc, test_verify_off);
    tcase_add_test(tc, test_mtls_ok);
    tcase_add_test(tc, test_mtls_refused);
    tcase_add_test(tc, test_plaintext_peer);
    tcase_add_test(tc, test_data_both_ways);
    tcase_add_test(tc, test_write_empty);
    tcase_add_test(tc, test_renegotiation_refused);
    tcase_add_test(tc, test_key_update);
    tcase_add_test(tc, test_peer_close);
    tcase_add_test(tc, test_ctx_refs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    SRunner *sr = srunner_create(tls_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
