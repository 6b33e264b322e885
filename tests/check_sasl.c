/*
 * check_sasl.c - unit tests for kp_sasl: PLAIN and OAUTHBEARER messages
 * byte for byte, SCRAM-SHA-256 against RFC 7677's published example,
 * SCRAM-SHA-512 against values computed independently with Python's
 * hashlib/hmac (the script is below), random-nonce exchanges checked by a
 * SCRAM server written here the way RFC 5802 has the server verify a
 * proof, hostile server messages, the token file reader and the KIP-368
 * delay. Throughout, no error text may contain the secret.
 *
 * The SHA-512 vectors came from this (Python 3.11):
 *
 *   def scram(h, user, pw, cnonce, sfirst):
 *       bare = "n=" + user.replace("=", "=3D").replace(",", "=2C") \
 *              + ",r=" + cnonce
 *       a = dict(x.split("=", 1) for x in sfirst.split(","))
 *       salted = hashlib.pbkdf2_hmac(h, pw.encode(),
 *                                    base64.b64decode(a["s"]), int(a["i"]))
 *       ck = hmac.new(salted, b"Client Key", h).digest()
 *       sk = hashlib.new(h, ck).digest()
 *       cfwp = "c=biws,r=" + a["r"]
 *       am = (bare + "," + sfirst + "," + cfwp).encode()
 *       cs = hmac.new(sk, am, h).digest()
 *       proof = bytes(x ^ y for x, y in zip(ck, cs))
 *       ss = hmac.new(hmac.new(salted, b"Server Key", h).digest(), am,
 *                     h).digest()
 *       return (cfwp + ",p=" + base64.b64encode(proof).decode(),
 *               "v=" + base64.b64encode(ss).decode())
 */
#include "kp_sasl.h"

#include "kp_buf.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define ERRLEN 512

/* Runs one step and checks the secret stays out of err. */
static int step(struct kp_sasl *s, const char *in, struct kp_buf *out,
                char *err, const char *secret)
{
    int rc = kp_sasl_step(s, (const uint8_t *)in, in ? strlen(in) : 0, out, err,
                          ERRLEN);
    if (secret) {
        ck_assert_msg(strstr(err, secret) == NULL, "secret in \"%s\"", err);
    }
    return rc;
}

static void expect_out(const struct kp_buf *out, const char *exp, size_t n)
{
    ck_assert_msg(out->len == n && memcmp(out->data, exp, n) == 0,
                  "got \"%.*s\" expected \"%.*s\"", (int)out->len,
                  (const char *)out->data, (int)n, exp);
}

#define EXPECT_STR(out, s) expect_out(out, s, strlen(s))

/* ---- names ---- */

START_TEST(test_mech_names)
{
    ck_assert_str_eq(kp_sasl_mech_name(KP_SASL_PLAIN), "PLAIN");
    ck_assert_str_eq(kp_sasl_mech_name(KP_SASL_SCRAM_SHA_256), "SCRAM-SHA-256");
    ck_assert_str_eq(kp_sasl_mech_name(KP_SASL_SCRAM_SHA_512), "SCRAM-SHA-512");
    ck_assert_str_eq(kp_sasl_mech_name(KP_SASL_OAUTHBEARER), "OAUTHBEARER");
    ck_assert_str_eq(kp_sasl_mech_name(KP_SASL__COUNT), "unknown");
    ck_assert_str_eq(kp_sasl_state_names[KP_SASL_ST_DONE], "done");
}
END_TEST

/* ---- PLAIN ---- */

START_TEST(test_plain)
{
    struct kp_buf out;
    char err[ERRLEN];
    kp_buf_init(&out, 16);
    struct kp_sasl *s = kp_sasl_create(KP_SASL_PLAIN, "alice", "s3cr3t");
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_START);
    ck_assert_int_eq(step(s, NULL, &out, err, "s3cr3t"), KP_AGAIN);
    expect_out(&out, "\0alice\0s3cr3t", 13);
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_SENT_FIRST);
    ck_assert_int_eq(step(s, "", &out, err, "s3cr3t"), KP_OK);
    ck_assert_uint_eq(out.len, 0);
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_DONE);
    ck_assert_int_eq(step(s, "", &out, err, "s3cr3t"), KP_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "already authenticated"));
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_DONE);
    kp_sasl_destroy(s);

    /* A server that answers PLAIN with data is not following RFC 4616. */
    s = kp_sasl_create(KP_SASL_PLAIN, "alice", "s3cr3t");
    ck_assert_int_eq(step(s, NULL, &out, err, "s3cr3t"), KP_AGAIN);
    ck_assert_int_eq(step(s, "huh", &out, err, "s3cr3t"), KP_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "unexpected server message"));
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_FAILED);
    ck_assert_int_eq(step(s, "", &out, err, "s3cr3t"), KP_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "already failed"));
    kp_sasl_destroy(s);

    /* Empty user; empty password is the server's business. */
    s = kp_sasl_create(KP_SASL_PLAIN, "", "pw");
    ck_assert_int_eq(step(s, NULL, &out, err, "pw"), KP_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "sasl.username is empty"));
    ck_assert_uint_eq(out.len, 0);
    kp_sasl_destroy(s);
    s = kp_sasl_create(KP_SASL_PLAIN, "bob", NULL);
    ck_assert_int_eq(step(s, NULL, &out, err, NULL), KP_AGAIN);
    expect_out(&out, "\0bob\0", 5);
    kp_sasl_destroy(s);
    kp_buf_deinit(&out);
}
END_TEST

/* ---- SCRAM vectors ---- */

#define RFC_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SFIRST                                                             \
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"                    \
    "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"

struct vec {
    enum kp_sasl_mech mech;
    const char *user, *pass, *nonce;
    const char *cfirst, *sfirst, *cfinal, *sfinal;
};

static const struct vec vecs[] = {
    /* RFC 7677 section 3. */
    {KP_SASL_SCRAM_SHA_256, "user", "pencil", RFC_NONCE,
     "n,,n=user,r=" RFC_NONCE, RFC_SFIRST,
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="},
    /* The same exchange with SHA-512 (Python). */
    {KP_SASL_SCRAM_SHA_512, "user", "pencil", RFC_NONCE,
     "n,,n=user,r=" RFC_NONCE, RFC_SFIRST,
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
     "p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp"
     "6dybEmDYXYTxwnYPJQ==",
     "v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5Zx"
     "XnJq199RVG2rR7N7Zw=="},
    /* A user name to escape, a UTF-8 password ("päss"), and a server
     * extension (ignored, but part of AuthMessage) (Python). */
    {KP_SASL_SCRAM_SHA_512, "us,er=x", "p\xc3\xa4ss",
     "fyko+d2lbbFgONRv9qkxdawL", "n,,n=us=2Cer=3Dx,r=fyko+d2lbbFgONRv9qkxdawL",
     "r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,"
     "s=QSXCR+Q6sek8bf92,i=4096,x=ext",
     "c=biws,r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,"
     "p=+8XwtvNbExBby+W5bzhTaSqyMvD585cv5KrO1aJgKCly9V0AcOPXfliz8cOma5ISt8Oh"
     "Iz9T6e5tQWk2xp9yNw==",
     "v=M6XU2I2Gz6Vg575fO9GIaLuAyj/SdWF75cUr7hrshFxWbDoL7IGJ1O5Ro/rQPHVEMRGl"
     "l9RUewZdXQijCJl+iw=="},
};

START_TEST(test_scram_vectors)
{
    struct kp_buf out;
    char err[ERRLEN];
    kp_buf_init(&out, 16);
    const struct vec *v = &vecs[_i];
    struct kp_sasl *s = kp_sasl_create(v->mech, v->user, v->pass);
    kp_sasl_test_set_nonce(s, v->nonce);
    ck_assert_int_eq(step(s, NULL, &out, err, v->pass), KP_AGAIN);
    EXPECT_STR(&out, v->cfirst);
    ck_assert_int_eq(step(s, v->sfirst, &out, err, v->pass), KP_AGAIN);
    /* The combined nonce (client + server) in client-final. */
    EXPECT_STR(&out, v->cfinal);
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_SENT_FINAL);
    ck_assert_int_eq(step(s, v->sfinal, &out, err, v->pass), KP_OK);
    ck_assert_uint_eq(out.len, 0);
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_DONE);
    kp_sasl_destroy(s);

    /* A server-final with an extension after the verifier. */
    s = kp_sasl_create(v->mech, v->user, v->pass);
    kp_sasl_test_set_nonce(s, v->nonce);
    step(s, NULL, &out, err, v->pass);
    step(s, v->sfirst, &out, err, v->pass);
    char sfinal[256];
    snprintf(sfinal, sizeof(sfinal), "%s,x=y", v->sfinal);
    ck_assert_int_eq(step(s, sfinal, &out, err, v->pass), KP_OK);
    kp_sasl_destroy(s);
    kp_buf_deinit(&out);
}
END_TEST

/* ---- SCRAM with a random nonce, checked by a server ---- */

/*
 * The server's side of RFC 5802 section 3: from the stored StoredKey and
 * ServerKey, recover ClientKey = ClientProof XOR ClientSignature, check
 * H(ClientKey) == StoredKey, and answer with ServerSignature.
 */
static bool scram_server(const EVP_MD *md, const char *pass,
                         const char *cfirst_bare, const char *sfirst,
                         const char *cfinal, char *sfinal, size_t cap)
{
    static const uint8_t salt[] = "0123456789abcdef";
    size_t dl = (size_t)EVP_MD_get_size(md);
    uint8_t salted[64], ckey[64], stored[64], skey[64], csig[64], ssig[64];
    uint8_t proof[80];
    unsigned int n;
    PKCS5_PBKDF2_HMAC(pass, (int)strlen(pass), salt, 16, 4096, md, (int)dl,
                      salted);
    HMAC(md, salted, (int)dl, (const uint8_t *)"Client Key", 10, ckey, &n);
    EVP_Digest(ckey, dl, stored, NULL, md, NULL);
    HMAC(md, salted, (int)dl, (const uint8_t *)"Server Key", 10, skey, &n);
    const char *p = strstr(cfinal, ",p=");
    ck_assert_ptr_nonnull(p);
    char am[1024];
    snprintf(am, sizeof(am), "%s,%s,%.*s", cfirst_bare, sfirst,
             (int)(p - cfinal), cfinal);
    HMAC(md, stored, (int)dl, (const uint8_t *)am, strlen(am), csig, &n);
    int len =
        EVP_DecodeBlock(proof, (const uint8_t *)p + 3, (int)strlen(p + 3));
    ck_assert_int_ge(len, (int)dl);
    uint8_t key[64], check[64];
    for (size_t i = 0; i < dl; i++) {
        key[i] = proof[i] ^ csig[i];
    }
    EVP_Digest(key, dl, check, NULL, md, NULL);
    HMAC(md, skey, (int)dl, (const uint8_t *)am, strlen(am), ssig, &n);
    char b64[100];
    EVP_EncodeBlock((uint8_t *)b64, ssig, (int)dl);
    snprintf(sfinal, cap, "v=%s", b64);
    return memcmp(check, stored, dl) == 0;
}

START_TEST(test_scram_random_nonce)
{
    static const enum kp_sasl_mech mechs[] = {KP_SASL_SCRAM_SHA_256,
                                              KP_SASL_SCRAM_SHA_512};
    struct kp_buf out;
    char err[ERRLEN], prev[256] = "";
    kp_buf_init(&out, 16);
    for (size_t m = 0; m < 2; m++) {
        const EVP_MD *md = m ? EVP_sha512() : EVP_sha256();
        struct kp_sasl *s = kp_sasl_create(mechs[m], "kproxyd", "hunter2");
        ck_assert_int_eq(step(s, NULL, &out, err, "hunter2"), KP_AGAIN);
        char cfirst[256];
        snprintf(cfirst, sizeof(cfirst), "%.*s", (int)out.len,
                 (const char *)out.data);
        ck_assert(strncmp(cfirst, "n,,n=kproxyd,r=", 15) == 0);
        const char *nonce = cfirst + 15;
        /* 24 random bytes in base64: printable, no ','. */
        ck_assert_uint_eq(strlen(nonce), 32);
        for (const char *c = nonce; *c; c++) {
            ck_assert(*c > 0x20 && *c < 0x7f && *c != ',');
        }
        ck_assert_str_ne(nonce, prev);
        snprintf(prev, sizeof(prev), "%s", nonce);
        char sfirst[512];
        snprintf(sfirst, sizeof(sfirst), "r=%sSERVERpart,s=%s,i=4096", nonce,
                 "MDEyMzQ1Njc4OWFiY2RlZg==" /* "0123456789abcdef" */);
        ck_assert_int_eq(step(s, sfirst, &out, err, "hunter2"), KP_AGAIN);
        char cfinal[512], sfinal[256];
        snprintf(cfinal, sizeof(cfinal), "%.*s", (int)out.len,
                 (const char *)out.data);
        char want[512];
        snprintf(want, sizeof(want), "c=biws,r=%sSERVERpart,p=", nonce);
        ck_assert(strncmp(cfinal, want, strlen(want)) == 0);
        ck_assert(scram_server(md, "hunter2", cfirst + 3, sfirst, cfinal,
                               sfinal, sizeof(sfinal)));
        ck_assert_int_eq(step(s, sfinal, &out, err, "hunter2"), KP_OK);
        kp_sasl_destroy(s);

        /* The same server with another password: the proof fails there,
         * and the server's signature fails here. */
        s = kp_sasl_create(mechs[m], "kproxyd", "hunter3");
        kp_sasl_test_set_nonce(s, "fixed");
        step(s, NULL, &out, err, "hunter3");
        snprintf(sfirst, sizeof(sfirst),
                 "r=fixedSRV,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096");
        ck_assert_int_eq(step(s, sfirst, &out, err, "hunter3"), KP_AGAIN);
        snprintf(cfinal, sizeof(cfinal), "%.*s", (int)out.len,
                 (const char *)out.data);
        ck_assert(!scram_server(md, "hunter2", "n=kproxyd,r=fixed", sfirst,
                                cfinal, sfinal, sizeof(sfinal)));
        ck_assert_int_eq(step(s, sfinal, &out, err, "hunter3"), KP_ERROR);
        ck_assert_ptr_nonnull(strstr(err, "signature is wrong"));
        kp_sasl_destroy(s);
    }
    kp_buf_deinit(&out);
}
END_TEST

/* ---- hostile SCRAM servers ---- */

struct bad {
    const char *msg;
    size_t len; /* 0 = strlen */
    const char *expect;
};

static const struct bad bad_first[] = {
    {"r=XrOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", 0,
     "does not extend the client nonce"},
    {"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", 0,
     "does not extend the client nonce"},
    {"r=rOprNGfwEbeRWgbNEk,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", 0,
     "does not extend"},
    {"r=rOprNGfwEbeRWgbNEkqO\x7fx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", 0,
     "not printable"},
    {"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", 0, "no nonce"},
    {"r=rOprNGfwEbeRWgbNEkqOx,i=4096", 0, "no valid salt"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=,i=4096", 0, "no valid salt"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=abc,i=4096", 0, "no valid salt"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=a===,i=4096", 0, "no valid salt"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=@@@@,i=4096", 0, "no valid salt"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=ab=c,i=4096", 0, "no valid salt"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==", 0,
     "no valid iteration count"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=", 0,
     "no valid iteration count"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1", 0,
     "no valid iteration count"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4k", 0,
     "no valid iteration count"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999", 0,
     "no valid iteration count"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095", 0,
     "iteration count 4095 outside 4096..100000"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1", 0,
     "iteration count 1 outside"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=100001", 0,
     "iteration count 100001 outside"},
    {"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4294967296", 0,
     "outside"},
    {"r=rOprNGfwEbeRWgbNEkqOx,i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==", 0,
     "no valid salt"},
    {"e=unknown-user", 0, "the broker answered: unknown-user"},
    {"e=\x01\xff", 0, "the broker answered: ??"},
    {"m=must,r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", 0,
     "requires an extension"},
    {"", 0, "malformed server-first (0 bytes)"},
    {"r=rOprNGfwEbeRWgbNEkqOx\0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", 50,
     "malformed server-first"},
    {"garbage", 0, "no nonce"},
};

START_TEST(test_scram_bad_first)
{
    struct kp_buf out;
    char err[ERRLEN];
    kp_buf_init(&out, 16);
    const struct bad *b = &bad_first[_i];
    struct kp_sasl *s = kp_sasl_create(KP_SASL_SCRAM_SHA_256, "user", "pencil");
    kp_sasl_test_set_nonce(s, RFC_NONCE);
    ck_assert_int_eq(step(s, NULL, &out, err, "pencil"), KP_AGAIN);
    size_t len = b->len ? b->len : strlen(b->msg);
    int rc =
        kp_sasl_step(s, (const uint8_t *)b->msg, len, &out, err, sizeof(err));
    ck_assert_int_eq(rc, KP_ERROR);
    ck_assert_msg(strstr(err, b->expect) != NULL, "%zu: \"%s\" lacks \"%s\"",
                  (size_t)_i, err, b->expect);
    ck_assert(strncmp(err, "SCRAM-SHA-256: ", 15) == 0);
    ck_assert(strstr(err, "pencil") == NULL);
    ck_assert_uint_eq(out.len, 0);
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_FAILED);
    ck_assert_int_eq(step(s, RFC_SFIRST, &out, err, "pencil"), KP_ERROR);
    kp_sasl_destroy(s);
    kp_buf_deinit(&out);
}
END_TEST

/* A server-first larger than any real one. */
START_TEST(test_scram_huge_first)
{
    struct kp_buf out;
    char err[ERRLEN];
    kp_buf_init(&out, 16);
    struct kp_sasl *s = kp_sasl_create(KP_SASL_SCRAM_SHA_512, "u", "p");
    step(s, NULL, &out, err, NULL);
    size_t n = 5000;
    uint8_t *big = malloc(n);
    memset(big, 'a', n);
    ck_assert_int_eq(kp_sasl_step(s, big, n, &out, err, sizeof(err)), KP_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "malformed server-first (5000 bytes)"));
    free(big);
    kp_sasl_destroy(s);
    kp_buf_deinit(&out);
}
END_TEST

static const struct bad bad_final[] = {
    /* '5' differs from '4' only in bits base64 leaves unused. */
    {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5=", 0, "no valid signature"},
    {"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", 0, "signature is wrong"},
    {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl9", 0, "signature is wrong"},
    {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G", 0, "no valid signature"},
    {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl9AAA=", 0, "signature is wrong"},
    {"v=", 0, "no valid signature"},
    {"v=!!!!", 0, "no valid signature"},
    {"x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", 0, "no valid signature"},
    {"e=invalid-proof", 0, "the broker refused: invalid-proof"},
    {"", 0, "malformed server-final (0 bytes)"},
    {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=\0", 48,
     "malformed server-final"},
};

START_TEST(test_scram_bad_final)
{
    struct kp_buf out;
    char err[ERRLEN];
    kp_buf_init(&out, 16);
    const struct bad *b = &bad_final[_i];
    struct kp_sasl *s = kp_sasl_create(KP_SASL_SCRAM_SHA_256, "user", "pencil");
    kp_sasl_test_set_nonce(s, RFC_NONCE);
    step(s, NULL, &out, err, "pencil");
    ck_assert_int_eq(step(s, RFC_SFIRST, &out, err, "pencil"), KP_AGAIN);
    size_t len = b->len ? b->len : strlen(b->msg);
    ck_assert_int_eq(
        kp_sasl_step(s, (const uint8_t *)b->msg, len, &out, err, sizeof(err)),
        KP_ERROR);
    ck_assert_msg(strstr(err, b->expect) != NULL, "%zu: \"%s\" lacks \"%s\"",
                  (size_t)_i, err, b->expect);
    ck_assert(strstr(err, "pencil") == NULL);
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_FAILED);
    kp_sasl_destroy(s);
    kp_buf_deinit(&out);
}
END_TEST

START_TEST(test_scram_empty_user)
{
    struct kp_buf out;
    char err[ERRLEN];
    kp_buf_init(&out, 16);
    struct kp_sasl *s = kp_sasl_create(KP_SASL_SCRAM_SHA_512, NULL, "x");
    ck_assert_int_eq(step(s, NULL, &out, err, NULL), KP_ERROR);
    ck_assert_str_eq(err, "SCRAM-SHA-512: sasl.username is empty");
    kp_sasl_destroy(s);
    kp_buf_deinit(&out);
}
END_TEST

/* ---- OAUTHBEARER ---- */

#define JWT "eyJhbGciOiJub25lIn0.eyJzdWIiOiJrcHJveHlkIn0."

START_TEST(test_oauth)
{
    struct kp_buf out;
    char err[ERRLEN];
    kp_buf_init(&out, 16);
    struct kp_sasl *s = kp_sasl_create(KP_SASL_OAUTHBEARER, "ignored", JWT);
    ck_assert_int_eq(step(s, NULL, &out, err, JWT), KP_AGAIN);
    static const char first[] = "n,,\x01"
                                "auth=Bearer " JWT "\x01\x01";
    expect_out(&out, first, sizeof(first) - 1);
    ck_assert_int_eq(step(s, "", &out, err, JWT), KP_OK);
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_DONE);
    kp_sasl_destroy(s);

    /* An error challenge: answer "\x01", then fail with its status. */
    static const char status[] =
        "{\"status\":\"invalid_token\",\"scope\":\"kafka\"}";
    s = kp_sasl_create(KP_SASL_OAUTHBEARER, NULL, JWT);
    step(s, NULL, &out, err, JWT);
    ck_assert_int_eq(step(s, status, &out, err, JWT), KP_AGAIN);
    expect_out(&out, "\x01", 1);
    ck_assert_ptr_nonnull(strstr(err, "rejected the token"));
    ck_assert_ptr_nonnull(strstr(err, "invalid_token"));
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_SENT_ABORT);
    ck_assert_int_eq(step(s, "", &out, err, JWT), KP_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "OAUTHBEARER: the broker rejected the "
                                      "token: {\"status\":\"invalid_token\""));
    ck_assert_int_eq(kp_sasl_state(s), KP_SASL_ST_FAILED);
    kp_sasl_destroy(s);

    /* Tokens that cannot be right fail before anything is sent, without
     * being printed. */
    static const char *const bad[] = {"",       "has space", "tab\there",
                                      "nl\nin", "\x01x",     "caf\xc3\xa9"};
    for (size_t i = 0; i < KP_ARRAY_LEN(bad); i++) {
        s = kp_sasl_create(KP_SASL_OAUTHBEARER, NULL, bad[i]);
        ck_assert_int_eq(step(s, NULL, &out, err, NULL), KP_ERROR);
        ck_assert_uint_eq(out.len, 0);
        ck_assert_msg(strstr(err, i ? "no bearer token has" : "empty"), "%s",
                      err);
        if (i) {
            ck_assert(strstr(err, bad[i]) == NULL);
        }
        kp_sasl_destroy(s);
    }
    kp_buf_deinit(&out);
}
END_TEST

/* ---- token file ---- */

static char tdir[64];

static const char *tpath(const char *name)
{
    static char buf[128];
    snprintf(buf, sizeof(buf), "%s/%s", tdir, name);
    return buf;
}

static void twrite(const char *name, const char *data, size_t n)
{
    int fd = open(tpath(name), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static char *tread(const char *name, int expect_rc, char *err)
{
    char *tok = (char *)1;
    int rc = kp_sasl_read_token_file(tpath(name), &tok, err, ERRLEN);
    ck_assert_msg(rc == expect_rc, "%s: rc %d: %s", name, rc, err);
    if (rc != KP_OK) {
        ck_assert_ptr_null(tok);
    }
    return tok;
}

START_TEST(test_token_file)
{
    char err[ERRLEN];
    snprintf(tdir, sizeof(tdir), "/tmp/check_sasl.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tdir));
    static const struct {
        const char *data, *tok;
    } ok[] = {{"abc\n", "abc"},
              {"abc\r\n", "abc"},
              {"abc", "abc"},
              {"abc\n\n", "abc\n"},
              {"a b", "a b"}};
    for (size_t i = 0; i < KP_ARRAY_LEN(ok); i++) {
        twrite("t", ok[i].data, strlen(ok[i].data));
        char *tok = tread("t", KP_OK, err);
        ck_assert_str_eq(tok, ok[i].tok);
        free(tok);
    }
    /* A symbolic link, as Kubernetes mounts secrets. */
    char target[128];
    snprintf(target, sizeof(target), "%s", tpath("t"));
    ck_assert_int_eq(symlink(target, tpath("link")), 0);
    char *tok = tread("link", KP_OK, err);
    ck_assert_str_eq(tok, "a b");
    free(tok);

    twrite("t", "\n", 1);
    tread("t", KP_ERROR, err);
    ck_assert_ptr_nonnull(strstr(err, "empty"));
    ck_assert_ptr_nonnull(strstr(err, "sasl.token_file"));
    tread("missing", KP_ERROR, err);
    ck_assert_ptr_nonnull(strstr(err, "No such file or directory"));

    /* Up to 64 KiB (plus its newline) is fine; one byte more is not, and
     * the content never shows in the error. */
    char *big = malloc(KP_SASL_TOKEN_MAX + 2);
    memset(big, 'T', KP_SASL_TOKEN_MAX + 2);
    big[KP_SASL_TOKEN_MAX] = '\n';
    twrite("t", big, KP_SASL_TOKEN_MAX + 1);
    tok = tread("t", KP_OK, err);
    ck_assert_uint_eq(strlen(tok), KP_SASL_TOKEN_MAX);
    free(tok);
    memset(big, 'T', KP_SASL_TOKEN_MAX + 2);
    twrite("t", big, KP_SASL_TOKEN_MAX + 1);
    tread("t", KP_ERROR, err);
    ck_assert_ptr_nonnull(strstr(err, "larger than 65536 bytes"));
    ck_assert_ptr_null(strstr(err, "TTTT"));
    free(big);
    /* A directory is not a token. */
    tread("", KP_ERROR, err);
    ck_assert_ptr_nonnull(strstr(err, "Is a directory"));

    unlink(tpath("link"));
    unlink(tpath("t"));
    rmdir(tdir);
}
END_TEST

/* ---- KIP-368 ---- */

START_TEST(test_reauth_delay)
{
    ck_assert(kp_sasl_reauth_delay_ms(0) == -1);
    ck_assert(kp_sasl_reauth_delay_ms(-5) == -1);
    ck_assert(kp_sasl_reauth_delay_ms(INT64_MIN) == -1);
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 2000; i++) {
        int64_t d = kp_sasl_reauth_delay_ms(1000000000);
        ck_assert(d >= 850000000 && d <= 950000000);
        lo = KP_MIN(lo, d);
        hi = KP_MAX(hi, d);
    }
    /* Spread over the window (2000 draws: these fail with p < 1e-80). */
    ck_assert(lo < 870000000 && hi > 930000000);
    int64_t d = kp_sasl_reauth_delay_ms(1000);
    ck_assert(d >= 850 && d <= 950);
    d = kp_sasl_reauth_delay_ms(1);
    ck_assert(d >= 0 && d <= 1);
    d = kp_sasl_reauth_delay_ms(INT64_MAX);
    ck_assert(d > INT64_MAX / 100 * 84 && d <= INT64_MAX / 100 * 96);
}
END_TEST

static Suite *sasl_suite(void)
{
    Suite *s = suite_create("sasl");
    TCase *tc = tcase_create("sasl");
    tcase_add_test(tc, test_mech_names);
    tcase_add_test(tc, test_plain);
    tcase_add_loop_test(tc, test_scram_vectors, 0, KP_ARRAY_LEN(vecs));
    tcase_add_test(tc, test_scram_random_nonce);
    tcase_add_loop_test(tc, test_scram_bad_first, 0, KP_ARRAY_LEN(bad_first));
    tcase_add_test(tc, test_scram_huge_first);
    tcase_add_loop_test(tc, test_scram_bad_final, 0, KP_ARRAY_LEN(bad_final));
    tcase_add_test(tc, test_scram_empty_user);
    tcase_add_test(tc, test_oauth);
    tcase_add_test(tc, test_token_file);
    tcase_add_test(tc, test_reauth_delay);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sasl_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
