/*
 * fuzz_sasl.c - libFuzzer target for kp_sasl's parsing of what a SASL
 * server sends: SCRAM server-first and server-final, and the OAUTHBEARER
 * answer.
 *
 * Input: one selector byte, then the server's message. Selector & 3:
 *   0  SCRAM-SHA-256 server-first (client nonce RFC 7677's)
 *   1  SCRAM-SHA-512 server-first
 *   2  SCRAM-SHA-256 server-final, after RFC 7677's server-first
 *      (password "pencil": the RFC's v= passes)
 *   3  OAUTHBEARER: the answer to the client's first message
 * A step that asks for another message is fed the same bytes again, so
 * every state sees hostile input. Error texts must never hold the secret.
 */
#include "kp_sasl.h"

#include "kp_buf.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NONCE "rOprNGfwEbeRWgbNEkqO"
#define FUZZ_SFIRST                                                            \
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"                    \
    "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum kp_sasl_mech mechs[4] = {
        KP_SASL_SCRAM_SHA_256, KP_SASL_SCRAM_SHA_512, KP_SASL_SCRAM_SHA_256,
        KP_SASL_OAUTHBEARER};
    if (size < 1) {
        return 0;
    }
    int mode = data[0] & 3;
    const char *secret = mode == 3 ? "token.secret" : "pencil";
    struct kp_sasl *s = kp_sasl_create(mechs[mode], "user", secret);
    struct kp_buf out;
    char err[512];
    kp_buf_init(&out, 64);
    kp_sasl_test_set_nonce(s, FUZZ_NONCE);
    int rc = kp_sasl_step(s, NULL, 0, &out, err, sizeof(err));
    kp_assert(rc == KP_AGAIN);
    if (mode == 2) {
        rc = kp_sasl_step(s, (const uint8_t *)FUZZ_SFIRST, strlen(FUZZ_SFIRST),
                          &out, err, sizeof(err));
        kp_assert(rc == KP_AGAIN);
    }
    for (int i = 0; i < 3 && rc == KP_AGAIN; i++) {
        rc = kp_sasl_step(s, data + 1, size - 1, &out, err, sizeof(err));
        kp_assert(strstr(err, secret) == NULL);
        kp_assert(rc != KP_ERROR || out.len == 0);
    }
    kp_assert(rc != KP_OK || kp_sasl_state(s) == KP_SASL_ST_DONE);
    kp_sasl_destroy(s);
    kp_buf_deinit(&out);
    return 0;
}
