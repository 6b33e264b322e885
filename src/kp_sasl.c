/*
 * kp_sasl.c - SASL client mechanisms: PLAIN, SCRAM-SHA-256/512 and
 * OAUTHBEARER, as step functions over byte messages (no I/O), plus the
 * OAUTHBEARER token file reader and the KIP-368 re-authentication delay.
 *
 * SCRAM (RFC 5802 section 3, with the hash of RFC 7677 / SHA-512):
 *
 *   client-first  "n,," client-first-bare
 *                 client-first-bare = "n=" saslname ",r=" c-nonce
 *   server-first  "r=" c-nonce s-nonce ",s=" base64(salt) ",i=" count
 *   client-final  "c=biws,r=" c-nonce s-nonce ",p=" base64(ClientProof)
 *                 (the combined nonce, as the RFC says: librdkafka before
 *                 2.6.1 sent only its own, which Kafka 4 refuses)
 *   server-final  "v=" base64(ServerSignature)  or  "e=" error
 *
 *   SaltedPassword  = PBKDF2-HMAC-H(password, salt, count)
 *   ClientKey       = HMAC(SaltedPassword, "Client Key")
 *   StoredKey       = H(ClientKey)
 *   AuthMessage     = client-first-bare "," server-first ","
 *                     client-final-without-proof
 *   ClientProof     = ClientKey XOR HMAC(StoredKey, AuthMessage)
 *   ServerSignature = HMAC(HMAC(SaltedPassword, "Server Key"), AuthMessage)
 *
 * The password goes in as its UTF-8 bytes without SASLprep, as Kafka's
 * own ScramFormatter does.
 *
 * The iteration count is bounded on both sides: at least 4096 (RFC 7677's
 * floor, and Kafka's minimum - fewer would let a man in the middle make
 * the proof cheap to crack offline), at most KP_SASL_SCRAM_ITER_MAX =
 * 100000, because PBKDF2 runs on the event loop: 100000 rounds of
 * SHA-512 take about 70 ms; Kafka itself never uses more than 16384.
 */
#include "kp_sasl.h"

#include "kp_buf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

const char *const kp_sasl_state_names[KP_SASL_ST__COUNT] = {
    "start", "sent-first", "sent-final", "sent-abort", "done", "failed"};

/* Longest server message kproxyd parses (a real one is ~100 bytes). */
#define KP_SASL_SERVER_MSG_MAX 4096
/* Client nonce: 24 random bytes, 32 base64 characters. */
#define KP_SASL_NONCE_BYTES 24
#define KP_SASL_NONCE_MAX 64

struct kp_sasl {
    enum kp_sasl_mech mech;
    enum kp_sasl_state state;
    char *user;   /* owned */
    char *secret; /* owned secret: password or token, wiped on destroy */
    char nonce[KP_SASL_NONCE_MAX + 1]; /* SCRAM client nonce */
    char *auth_msg; /* owned: SCRAM AuthMessage (client-first-bare first) */
    uint8_t server_sig[EVP_MAX_MD_SIZE]; /* SCRAM: the expected v= */
    size_t server_sig_len;
    char fail[512]; /* OAUTHBEARER: the server's error, for the last step */
};

/* The mechanism's name on the wire (SaslHandshake's Mechanism): the
 * configuration's names are Kafka's. */
const char *kp_sasl_mech_name(enum kp_sasl_mech mech)
{
    return (unsigned)mech < KP_SASL__COUNT ? kp_sasl_mech_names[mech]
                                           : "unknown";
}

/*
 * Starts an exchange for mech as user with secret (the password, or for
 * OAUTHBEARER the token; user is unused there). Both strings are copied;
 * the copy of the secret is wiped by kp_sasl_destroy(). Never fails:
 * problems with the values surface as KP_ERROR from the first step.
 */
struct kp_sasl *kp_sasl_create(enum kp_sasl_mech mech, const char *user,
                               const char *secret)
{
    kp_assert((unsigned)mech < KP_SASL__COUNT);
    struct kp_sasl *s = kp_calloc(1, sizeof(*s));
    s->mech = mech;
    s->state = KP_SASL_ST_START;
    s->user = kp_strdup(user ? user : "");
    s->secret = kp_strdup(secret ? secret : "");
    return s;
}

void kp_sasl_destroy(struct kp_sasl *s)
{
    if (!s) {
        return;
    }
    OPENSSL_cleanse(s->secret, strlen(s->secret));
    free(s->secret);
    free(s->user);
    if (s->auth_msg) {
        OPENSSL_cleanse(s->auth_msg, strlen(s->auth_msg));
        free(s->auth_msg);
    }
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

enum kp_sasl_state kp_sasl_state(const struct kp_sasl *s)
{
    return s->state;
}

/* Test hook: the SCRAM client nonce to use instead of a random one
 * (RFC 7677's test vector needs "rOprNGfwEbeRWgbNEkqO"). */
void kp_sasl_test_set_nonce(struct kp_sasl *s, const char *nonce)
{
    kp_assert(s->state == KP_SASL_ST_START);
    kp_assert(strlen(nonce) <= KP_SASL_NONCE_MAX);
    snprintf(s->nonce, sizeof(s->nonce), "%s", nonce);
}

/* ---- text helpers ---- */

static int kp_sasl_fail(char *err, size_t errlen, const char *fmt, ...)
    KP_PRINTF(3, 4);

/* Writes the error text; returns KP_ERROR. */
static int kp_sasl_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return KP_ERROR;
}

/* Copies up to 200 bytes of server text into dst for an error message,
 * with anything not printable ASCII as '?'. */
static void kp_sasl_printable(char *dst, size_t cap, const uint8_t *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && i < 200 && k + 1 < cap; i++) {
        dst[k++] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
    }
    if (cap) {
        dst[k] = '\0';
    }
}

/* Base64 (RFC 4648, with padding) of n bytes, appended to b. */
static void kp_sasl_b64_put(struct kp_buf *b, const uint8_t *p, size_t n)
{
    size_t need = 4 * ((n + 2) / 3) + 1;
    uint8_t *dst = kp_buf_reserve(b, need);
    int len = EVP_EncodeBlock(dst, p, (int)n);
    b->len += (size_t)len;
}

static int kp_sasl_b64_val(uint8_t c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/*
 * Strict base64 decode of p[0, n) into out (cap bytes): length a multiple
 * of 4, '=' only as the last one or two characters, unused bits zero (one
 * text per value, RFC 4648 3.5). Returns the decoded length, or -1.
 */
static long kp_sasl_b64_dec(const uint8_t *p, size_t n, uint8_t *out,
                            size_t cap)
{
    if (n == 0 || n % 4 != 0) {
        return -1;
    }
    size_t pad = p[n - 1] == '=' ? (p[n - 2] == '=' ? 2 : 1) : 0;
    size_t len = n / 4 * 3 - pad;
    if (len > cap) {
        return -1;
    }
    uint32_t acc = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = i >= n - pad ? 0 : kp_sasl_b64_val(p[i]);
        if (v < 0) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        if (i % 4 == 3) {
            uint8_t tri[3] = {(uint8_t)(acc >> 16), (uint8_t)(acc >> 8),
                              (uint8_t)acc};
            for (int k = 0; k < 3; k++) {
                if (o < len) {
                    out[o++] = tri[k];
                } else if (tri[k] != 0) {
                    return -1; /* bits beyond the data: not canonical */
                }
            }
            acc = 0;
        }
    }
    return (long)len;
}

/* ---- PLAIN ---- */

/* RFC 4616: [authzid] NUL authcid NUL passwd, authzid empty. */
static int kp_sasl_plain_first(struct kp_sasl *s, struct kp_buf *out, char *err,
                               size_t errlen)
{
    if (!s->user[0]) {
        return kp_sasl_fail(err, errlen, "PLAIN: sasl.username is empty");
    }
    kp_buf_put_i8(out, 0);
    kp_buf_put_bytes(out, s->user, strlen(s->user));
    kp_buf_put_i8(out, 0);
    kp_buf_put_bytes(out, s->secret, strlen(s->secret));
    return KP_AGAIN;
}

/* ---- OAUTHBEARER ---- */

/* RFC 7628 3.1 with KIP-255's framing: no authzid, no extensions. The
 * token's characters are checked (not printed) so that a token file
 * with stray bytes fails here, with a reason. */
static int kp_sasl_oauth_first(struct kp_sasl *s, struct kp_buf *out, char *err,
                               size_t errlen)
{
    size_t n = strlen(s->secret);
    if (n == 0) {
        return kp_sasl_fail(err, errlen, "OAUTHBEARER: the token is empty");
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s->secret[i];
        if (c < 0x21 || c > 0x7e) {
            return kp_sasl_fail(err, errlen,
                                "OAUTHBEARER: the token has a byte that no "
                                "bearer token has (0x%02x at offset %zu)",
                                c, i);
        }
    }
    static const char head[] = "n,,\x01"
                               "auth=Bearer ";
    kp_buf_put_bytes(out, head, sizeof(head) - 1);
    kp_buf_put_bytes(out, s->secret, n);
    kp_buf_put_bytes(out, "\x01\x01", 2);
    return KP_AGAIN;
}

/* The server's answer: empty is success; anything else is an error
 * status (JSON) that the client acknowledges with "\x01". */
static int kp_sasl_oauth_answer(struct kp_sasl *s, const uint8_t *in,
                                size_t in_len, struct kp_buf *out, char *err,
                                size_t errlen)
{
    if (in_len == 0) {
        s->state = KP_SASL_ST_DONE;
        return KP_OK;
    }
    char status[256];
    kp_sasl_printable(status, sizeof(status), in, in_len);
    snprintf(s->fail, sizeof(s->fail),
             "OAUTHBEARER: the broker rejected the token: %s", status);
    snprintf(err, errlen, "%s", s->fail);
    kp_buf_put_i8(out, 0x01);
    s->state = KP_SASL_ST_SENT_ABORT;
    return KP_AGAIN;
}

/* ---- SCRAM ---- */

static const EVP_MD *kp_sasl_md(const struct kp_sasl *s)
{
    return s->mech == KP_SASL_SCRAM_SHA_512 ? EVP_sha512() : EVP_sha256();
}

/* client-first: "n,," then client-first-bare, which AuthMessage starts
 * with. The user name is a saslname: ',' and '=' escaped. */
static int kp_sasl_scram_first(struct kp_sasl *s, struct kp_buf *out, char *err,
                               size_t errlen)
{
    const char *mech = kp_sasl_mech_name(s->mech);
    if (!s->user[0]) {
        return kp_sasl_fail(err, errlen, "%s: sasl.username is empty", mech);
    }
    if (!s->nonce[0]) {
        uint8_t rnd[KP_SASL_NONCE_BYTES];
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            return kp_sasl_fail(err, errlen,
                                "%s: no random bytes for the "
                                "nonce",
                                mech);
        }
        EVP_EncodeBlock((uint8_t *)s->nonce, rnd, sizeof(rnd));
    }
    kp_buf_put_bytes(out, "n,,", 3);
    size_t bare = out->len;
    kp_buf_put_bytes(out, "n=", 2);
    for (const char *c = s->user; *c; c++) {
        if (*c == ',') {
            kp_buf_put_bytes(out, "=2C", 3);
        } else if (*c == '=') {
            kp_buf_put_bytes(out, "=3D", 3);
        } else {
            kp_buf_put_i8(out, *c);
        }
    }
    kp_buf_put_bytes(out, ",r=", 3);
    kp_buf_put_bytes(out, s->nonce, strlen(s->nonce));
    s->auth_msg = kp_strndup((const char *)out->data + bare, out->len - bare);
    return KP_AGAIN;
}

/* The attributes of server-first, pointing into its text. */
struct kp_scram_sfirst {
    const char *nonce; /* combined nonce */
    size_t nonce_len;
    uint8_t salt[256];
    size_t salt_len;
    long iter;
};

/* Splits "k=value" at *pos up to the next ',' (or the end): returns the
 * value's start and length, or NULL when the key differs. */
static const char *kp_sasl_attr(const char *msg, size_t *pos, char key,
                                size_t *len)
{
    const char *p = msg + *pos;
    if (p[0] != key || p[1] != '=') {
        return NULL;
    }
    const char *v = p + 2;
    const char *end = strchr(v, ',');
    *len = end ? (size_t)(end - v) : strlen(v);
    *pos += 2 + *len + (end ? 1 : 0);
    return v;
}

/* A decimal iteration count in [ITER_MIN, ITER_MAX]; -1 otherwise, -2
 * when it is a number out of range. */
static long kp_sasl_iter(const char *v, size_t n)
{
    if (n == 0 || n > 10) {
        return -1;
    }
    long it = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return -1;
        }
        it = it * 10 + (v[i] - '0');
    }
    return it < KP_SASL_SCRAM_ITER_MIN || it > KP_SASL_SCRAM_ITER_MAX ? -2 : it;
}

/* Checks the combined nonce: printable, no ',', starts with ours, adds
 * something of the server's. */
static int kp_sasl_check_nonce(const struct kp_sasl *s, const char *v, size_t n,
                               char *err, size_t errlen)
{
    const char *mech = kp_sasl_mech_name(s->mech);
    size_t ours = strlen(s->nonce);
    for (size_t i = 0; i < n; i++) {
        if (v[i] < 0x21 || v[i] > 0x7e) {
            return kp_sasl_fail(
                err, errlen, "%s: server-first nonce is not printable", mech);
        }
    }
    if (n <= ours || memcmp(v, s->nonce, ours) != 0) {
        return kp_sasl_fail(err, errlen,
                            "%s: server-first nonce does not extend the "
                            "client nonce (a replay, or not a SCRAM "
                            "server?)",
                            mech);
    }
    return KP_OK;
}

/*
 * Parses server-first (msg, NUL-terminated, no NUL inside) into sf:
 * "r=nonce,s=salt,i=count[,extensions]". An "m=" mandatory extension and
 * an "e=" error are refused.
 */
static int kp_sasl_parse_sfirst(const struct kp_sasl *s, const char *msg,
                                struct kp_scram_sfirst *sf, char *err,
                                size_t errlen)
{
    const char *mech = kp_sasl_mech_name(s->mech);
    size_t pos = 0, n;
    const char *v;
    if ((v = kp_sasl_attr(msg, &pos, 'e', &n))) {
        char why[256];
        kp_sasl_printable(why, sizeof(why), (const uint8_t *)v, n);
        return kp_sasl_fail(err, errlen, "%s: the broker answered: %s", mech,
                            why);
    }
    if (msg[0] == 'm' && msg[1] == '=') {
        return kp_sasl_fail(err, errlen,
                            "%s: the broker requires an extension kproxyd "
                            "does not know (m=)",
                            mech);
    }
    if (!(v = kp_sasl_attr(msg, &pos, 'r', &n))) {
        return kp_sasl_fail(err, errlen, "%s: server-first has no nonce (r=)",
                            mech);
    }
    if (kp_sasl_check_nonce(s, v, n, err, errlen) != KP_OK) {
        return KP_ERROR;
    }
    sf->nonce = v;
    sf->nonce_len = n;
    long len;
    if (!(v = kp_sasl_attr(msg, &pos, 's', &n)) ||
        (len = kp_sasl_b64_dec((const uint8_t *)v, n, sf->salt,
                               sizeof(sf->salt))) <= 0) {
        return kp_sasl_fail(err, errlen,
                            "%s: server-first has no valid salt (s=)", mech);
    }
    sf->salt_len = (size_t)len;
    if (!(v = kp_sasl_attr(msg, &pos, 'i', &n)) ||
        (sf->iter = kp_sasl_iter(v, n)) == -1) {
        return kp_sasl_fail(err, errlen,
                            "%s: server-first has no valid iteration count "
                            "(i=)",
                            mech);
    }
    if (sf->iter == -2) {
        return kp_sasl_fail(
            err, errlen, "%s: iteration count %.*s outside %d..%d", mech,
            (int)n, v, KP_SASL_SCRAM_ITER_MIN, KP_SASL_SCRAM_ITER_MAX);
    }
    return KP_OK;
}

/* HMAC(key, data) into out (the digest size). */
static void kp_sasl_hmac(const EVP_MD *md, const uint8_t *key, size_t key_len,
                         const void *data, size_t len, uint8_t *out)
{
    unsigned int n = 0;
    uint8_t *r = HMAC(md, key, (int)key_len, data, len, out, &n);
    kp_assert(r != NULL && n == (unsigned int)EVP_MD_get_size(md));
}

/*
 * From server-first: the client proof (into proof) and the server
 * signature to expect later (into s->server_sig), over AuthMessage.
 * Every intermediate key is wiped.
 */
static int kp_sasl_scram_keys(struct kp_sasl *s,
                              const struct kp_scram_sfirst *sf, uint8_t *proof)
{
    const EVP_MD *md = kp_sasl_md(s);
    size_t dl = (size_t)EVP_MD_get_size(md);
    uint8_t salted[EVP_MAX_MD_SIZE], ckey[EVP_MAX_MD_SIZE];
    uint8_t stored[EVP_MAX_MD_SIZE], csig[EVP_MAX_MD_SIZE];
    uint8_t skey[EVP_MAX_MD_SIZE];
    int rc = KP_ERROR;
    if (PKCS5_PBKDF2_HMAC(s->secret, (int)strlen(s->secret), sf->salt,
                          (int)sf->salt_len, (int)sf->iter, md, (int)dl,
                          salted) != 1) {
        goto out;
    }
    kp_sasl_hmac(md, salted, dl, "Client Key", 10, ckey);
    if (EVP_Digest(ckey, dl, stored, NULL, md, NULL) != 1) {
        goto out;
    }
    kp_sasl_hmac(md, stored, dl, s->auth_msg, strlen(s->auth_msg), csig);
    for (size_t i = 0; i < dl; i++) {
        proof[i] = ckey[i] ^ csig[i];
    }
    kp_sasl_hmac(md, salted, dl, "Server Key", 10, skey);
    kp_sasl_hmac(md, skey, dl, s->auth_msg, strlen(s->auth_msg), s->server_sig);
    s->server_sig_len = dl;
    rc = KP_OK;
out:
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(ckey, sizeof(ckey));
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(csig, sizeof(csig));
    OPENSSL_cleanse(skey, sizeof(skey));
    return rc;
}

/* Copies a server message into a NUL-terminated string, refusing NUL
 * bytes and oversized messages. Returns NULL with err set. */
static char *kp_sasl_server_text(const struct kp_sasl *s, const char *what,
                                 const uint8_t *in, size_t in_len, char *err,
                                 size_t errlen)
{
    const char *mech = kp_sasl_mech_name(s->mech);
    if (in_len == 0 || in_len > KP_SASL_SERVER_MSG_MAX ||
        memchr(in, 0, in_len)) {
        kp_sasl_fail(err, errlen, "%s: malformed %s (%zu bytes)", mech, what,
                     in_len);
        return NULL;
    }
    return kp_strndup((const char *)in, in_len);
}

/* server-first in, client-final out. */
static int kp_sasl_scram_final(struct kp_sasl *s, const uint8_t *in,
                               size_t in_len, struct kp_buf *out, char *err,
                               size_t errlen)
{
    char *msg = kp_sasl_server_text(s, "server-first", in, in_len, err, errlen);
    if (!msg) {
        return KP_ERROR;
    }
    struct kp_scram_sfirst sf;
    if (kp_sasl_parse_sfirst(s, msg, &sf, err, errlen) != KP_OK) {
        free(msg);
        return KP_ERROR;
    }
    /* client-final-without-proof, then AuthMessage, then the proof. */
    kp_buf_put_bytes(out, "c=biws,r=", 9);
    kp_buf_put_bytes(out, sf.nonce, sf.nonce_len);
    struct kp_buf am;
    kp_buf_init(&am, 256);
    kp_buf_put_bytes(&am, s->auth_msg, strlen(s->auth_msg));
    kp_buf_put_i8(&am, ',');
    kp_buf_put_bytes(&am, msg, in_len);
    kp_buf_put_i8(&am, ',');
    kp_buf_put_bytes(&am, out->data, out->len);
    kp_buf_put_i8(&am, 0);
    free(s->auth_msg);
    s->auth_msg = (char *)am.data; /* takes the buffer */
    free(msg);
    uint8_t proof[EVP_MAX_MD_SIZE];
    if (kp_sasl_scram_keys(s, &sf, proof) != KP_OK) {
        return kp_sasl_fail(err, errlen, "%s: key derivation failed",
                            kp_sasl_mech_name(s->mech));
    }
    kp_buf_put_bytes(out, ",p=", 3);
    kp_sasl_b64_put(out, proof, s->server_sig_len);
    OPENSSL_cleanse(proof, sizeof(proof));
    s->state = KP_SASL_ST_SENT_FINAL;
    return KP_AGAIN;
}

/* server-final: "v=" the signature (checked in constant time) or "e=". */
static int kp_sasl_scram_verify(struct kp_sasl *s, const uint8_t *in,
                                size_t in_len, char *err, size_t errlen)
{
    const char *mech = kp_sasl_mech_name(s->mech);
    char *msg = kp_sasl_server_text(s, "server-final", in, in_len, err, errlen);
    if (!msg) {
        return KP_ERROR;
    }
    size_t pos = 0, n;
    const char *v;
    int rc;
    uint8_t sig[EVP_MAX_MD_SIZE];
    long len;
    if ((v = kp_sasl_attr(msg, &pos, 'e', &n))) {
        char why[256];
        kp_sasl_printable(why, sizeof(why), (const uint8_t *)v, n);
        rc = kp_sasl_fail(err, errlen, "%s: the broker refused: %s", mech, why);
    } else if (!(v = kp_sasl_attr(msg, &pos, 'v', &n)) ||
               (len = kp_sasl_b64_dec((const uint8_t *)v, n, sig,
                                      sizeof(sig))) < 0) {
        rc = kp_sasl_fail(err, errlen,
                          "%s: server-final has no valid signature (v=)", mech);
    } else if ((size_t)len != s->server_sig_len ||
               CRYPTO_memcmp(sig, s->server_sig, s->server_sig_len) != 0) {
        rc = kp_sasl_fail(err, errlen,
                          "%s: the broker's signature is wrong: it does not "
                          "know the password (or the exchange was "
                          "tampered with)",
                          mech);
    } else {
        s->state = KP_SASL_ST_DONE;
        rc = KP_OK;
    }
    free(msg);
    return rc;
}

/* ---- the step ---- */

static int kp_sasl_first(struct kp_sasl *s, struct kp_buf *out, char *err,
                         size_t errlen)
{
    int rc;
    switch (s->mech) {
    case KP_SASL_PLAIN:
        rc = kp_sasl_plain_first(s, out, err, errlen);
        break;
    case KP_SASL_OAUTHBEARER:
        rc = kp_sasl_oauth_first(s, out, err, errlen);
        break;
    default:
        rc = kp_sasl_scram_first(s, out, err, errlen);
        break;
    }
    if (rc == KP_AGAIN) {
        s->state = KP_SASL_ST_SENT_FIRST;
    }
    return rc;
}

/* The server's answer to the client's first message. */
static int kp_sasl_second(struct kp_sasl *s, const uint8_t *in, size_t in_len,
                          struct kp_buf *out, char *err, size_t errlen)
{
    switch (s->mech) {
    case KP_SASL_PLAIN:
        if (in_len != 0) {
            return kp_sasl_fail(err, errlen,
                                "PLAIN: unexpected server message (%zu "
                                "bytes)",
                                in_len);
        }
        s->state = KP_SASL_ST_DONE;
        return KP_OK;
    case KP_SASL_OAUTHBEARER:
        return kp_sasl_oauth_answer(s, in, in_len, out, err, errlen);
    default:
        return kp_sasl_scram_final(s, in, in_len, out, err, errlen);
    }
}

/*
 * One step of the exchange: in/in_len is the server's last message
 * (NULL/0 on the first call), out is reset and receives the next client
 * message. Returns KP_AGAIN (send out, then call again with the answer),
 * KP_OK (authenticated), or KP_ERROR with err set; err never holds the
 * secret, and what the server said appears in it only as printable
 * ASCII. After KP_OK or KP_ERROR, further steps fail.
 */
int kp_sasl_step(struct kp_sasl *s, const uint8_t *in, size_t in_len,
                 struct kp_buf *out, char *err, size_t errlen)
{
    const char *mech = kp_sasl_mech_name(s->mech);
    int rc;
    kp_buf_reset(out);
    if (errlen) {
        err[0] = '\0';
    }
    switch (s->state) {
    case KP_SASL_ST_START:
        rc = kp_sasl_first(s, out, err, errlen);
        break;
    case KP_SASL_ST_SENT_FIRST:
        rc = kp_sasl_second(s, in, in_len, out, err, errlen);
        break;
    case KP_SASL_ST_SENT_FINAL:
        rc = kp_sasl_scram_verify(s, in, in_len, err, errlen);
        break;
    case KP_SASL_ST_SENT_ABORT:
        rc = kp_sasl_fail(err, errlen, "%s", s->fail);
        break;
    case KP_SASL_ST_DONE:
        rc = kp_sasl_fail(err, errlen, "%s: already authenticated", mech);
        break;
    default:
        rc = kp_sasl_fail(err, errlen, "%s: the exchange already failed", mech);
        break;
    }
    if (rc == KP_ERROR) {
        OPENSSL_cleanse(out->data, out->len);
        kp_buf_reset(out);
        if (s->state != KP_SASL_ST_DONE) {
            s->state = KP_SASL_ST_FAILED;
        }
    }
    return rc;
}

/* ---- token file, re-authentication ---- */

/*
 * Reads an OAUTHBEARER token from path (a symbolic link is followed:
 * mounted secrets are links): one trailing "\n" or "\r\n" removed, then
 * at most KP_SASL_TOKEN_MAX bytes, not empty. *token is an owned string;
 * the caller wipes and frees it. Returns KP_OK, or KP_ERROR with err
 * naming the file (never its content).
 */
int kp_sasl_read_token_file(const char *path, char **token, char *err,
                            size_t errlen)
{
    *token = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return kp_sasl_fail(err, errlen, "sasl.token_file %s: %s", path,
                            strerror(errno));
    }
    /* Room for the token, its "\r\n", and one byte to see it is too big. */
    size_t cap = KP_SASL_TOKEN_MAX + 3;
    char *buf = kp_malloc(cap + 1);
    size_t len = 0;
    ssize_t n = 0;
    while (len < cap && (n = read(fd, buf + len, cap - len)) > 0) {
        len += (size_t)n;
    }
    int read_errno = errno;
    close(fd);
    if (len && buf[len - 1] == '\n') {
        len -= len >= 2 && buf[len - 2] == '\r' ? 2 : 1;
    }
    int rc = KP_OK;
    if (n < 0) {
        rc = kp_sasl_fail(err, errlen, "sasl.token_file %s: %s", path,
                          strerror(read_errno));
    } else if (len > KP_SASL_TOKEN_MAX) {
        rc = kp_sasl_fail(err, errlen,
                          "sasl.token_file %s: larger than %d "
                          "bytes",
                          path, KP_SASL_TOKEN_MAX);
    } else if (len == 0) {
        rc = kp_sasl_fail(err, errlen, "sasl.token_file %s: empty", path);
    }
    if (rc != KP_OK) {
        OPENSSL_cleanse(buf, cap + 1);
        free(buf);
        return rc;
    }
    buf[len] = '\0';
    *token = buf;
    return KP_OK;
}

/*
 * KIP-368: how long after a successful authentication to authenticate
 * again, given the broker's SessionLifetimeMs: a random point between 85%
 * and 95% of it, as the Java client does (the margin absorbs latency and
 * clock drift; the spread keeps many connections from re-authenticating
 * at once). Returns -1 when the lifetime is 0 or negative (no expiry).
 */
int64_t kp_sasl_reauth_delay_ms(int64_t session_lifetime_ms)
{
    if (session_lifetime_ms <= 0) {
        return -1;
    }
    uint32_t r;
    if (RAND_bytes((uint8_t *)&r, sizeof(r)) != 1) {
        r = UINT32_MAX / 2;
    }
    double pct = 0.85 + 0.10 * ((double)r / 4294967296.0);
    return (int64_t)((double)session_lifetime_ms * pct);
}
