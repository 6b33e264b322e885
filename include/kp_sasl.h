/*
 * kp_sasl.h - SASL client mechanisms for broker authentication: PLAIN
 * (RFC 4616), SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) and
 * OAUTHBEARER (RFC 7628, KIP-255). Pure: no I/O, no loop; the broker
 * connection carries the messages (kp_proto's SaslHandshake and
 * SaslAuthenticate codecs) and feeds the answers back.
 *
 * One struct kp_sasl is one authentication exchange. kp_sasl_step() takes
 * the server's last message (nothing on the first call) and either gives
 * the next client message, says the exchange succeeded, or fails:
 *
 *   s = kp_sasl_create(mech, user, secret)
 *   rc = kp_sasl_step(s, NULL, 0, &out, err, sizeof(err))
 *   while (rc == KP_AGAIN) {
 *       send out; in = the server's answer (see the flows below)
 *       rc = kp_sasl_step(s, in, in_len, &out, err, sizeof(err))
 *   }
 *   KP_OK: authenticated (SCRAM: only once the server's signature has been
 *   verified - a server that does not know the password cannot pass).
 *   KP_ERROR: err says why; it never contains the password or token.
 *   kp_sasl_destroy(s)  (wipes the secret and the derived keys)
 *
 * Messages per mechanism:
 *   PLAIN        C: "\0user\0password"          S: (empty)   -> KP_OK
 *   SCRAM        C: client-first   S: server-first
 *                C: client-final   S: server-final (v=...)   -> KP_OK
 *   OAUTHBEARER  C: "n,,\x01auth=Bearer <token>\x01\x01"
 *                S: (empty) -> KP_OK, or S: a JSON error status -> the
 *                step answers KP_AGAIN with out = "\x01" (RFC 7628 3.2.3)
 *                and err = the server's status; send it: the server then
 *                fails the exchange (an error code, or with SaslHandshake
 *                v0 a closed connection). A step after that is KP_ERROR.
 *
 * Client flow on a broker connection (as librdkafka and the Java client
 * do it), after TLS when security.protocol is sasl_ssl:
 *
 *   1. ApiVersions first (brokers answer it before authentication): it
 *      gives the SaslHandshake (key 17) and SaslAuthenticate (key 36)
 *      versions, via kp_proto_pick_version().
 *   2. SaslHandshake v1 (or v0 if that is all the broker has) with the
 *      mechanism name (kp_sasl_mech_name()). ErrorCode 33
 *      UNSUPPORTED_SASL_MECHANISM: fail, naming the broker's Mechanisms
 *      list. Any other error: fail with its name.
 *   3a. After SaslHandshake v1: each client message is the AuthBytes of a
 *      SaslAuthenticate request (v0..v2, v2 flexible), and the server's
 *      message is the response's AuthBytes. A non-zero ErrorCode (58
 *      SASL_AUTHENTICATION_FAILED, ...) fails the exchange with the
 *      response's ErrorMessage - do not call kp_sasl_step then. With
 *      ErrorCode 0, pass AuthBytes (possibly empty) to kp_sasl_step.
 *      When the step that returns KP_OK was fed the last response, take
 *      SessionLifetimeMs (v1+) from that response.
 *   3b. After SaslHandshake v0 (Kafka before 1.0): each client message
 *      goes as a raw frame, int32 length + bytes with no request header
 *      (kp_proto_enc_sasl_raw), and the server's message is the next raw
 *      frame read (int32 length + bytes, no correlation id). A failure is
 *      a closed connection, without a reason: say "authentication failed
 *      (the broker closed the connection)".
 *   4. KP_OK: the connection goes on to its normal requests.
 *
 * Re-authentication (KIP-368): a broker with connections.max.reauth.ms
 * set returns SessionLifetimeMs > 0 in the last SaslAuthenticate
 * response, and closes the connection once the session has lasted that
 * long. Start a timer of kp_sasl_reauth_delay_ms(session_lifetime_ms)
 * when authentication succeeds; when it fires, re-run steps 2-3a on the
 * same connection (a new kp_sasl, SaslHandshake v1 - re-authentication
 * needs SaslAuthenticate v1+ - and SaslAuthenticate): stop sending new
 * requests meanwhile, keep receiving the responses to requests already
 * in flight (they still arrive, matched by correlation id), and resume
 * once it succeeds. OAUTHBEARER re-reads its token file first (the new
 * token is usually why the session ends). A failed re-authentication
 * closes the connection like a failed authentication.
 */
#ifndef KP_SASL_H
#define KP_SASL_H

#include "kp_conf.h"

struct kp_buf;
struct kp_sasl;

enum kp_sasl_state {
    KP_SASL_ST_START,      /* nothing sent yet */
    KP_SASL_ST_SENT_FIRST, /* client's first message out */
    KP_SASL_ST_SENT_FINAL, /* SCRAM client-final out */
    KP_SASL_ST_SENT_ABORT, /* OAUTHBEARER "\x01" out after a server error */
    KP_SASL_ST_DONE,       /* authenticated */
    KP_SASL_ST_FAILED,     /* an error was returned */
    KP_SASL_ST__COUNT
};
extern const char *const kp_sasl_state_names[KP_SASL_ST__COUNT];

/* SCRAM iteration counts accepted from a server (see kp_sasl.c). */
#define KP_SASL_SCRAM_ITER_MIN 4096
#define KP_SASL_SCRAM_ITER_MAX 100000
/* Largest OAUTHBEARER token file. */
#define KP_SASL_TOKEN_MAX (64 * 1024)

struct kp_sasl *kp_sasl_create(enum kp_sasl_mech mech, const char *user,
                               const char *secret);
void kp_sasl_destroy(struct kp_sasl *s);
int kp_sasl_step(struct kp_sasl *s, const uint8_t *in, size_t in_len,
                 struct kp_buf *out, char *err, size_t errlen);
enum kp_sasl_state kp_sasl_state(const struct kp_sasl *s);
const char *kp_sasl_mech_name(enum kp_sasl_mech mech);

int kp_sasl_read_token_file(const char *path, char **token, char *err,
                            size_t errlen);
int64_t kp_sasl_reauth_delay_ms(int64_t session_lifetime_ms);

/* Test hook: fixes the SCRAM client nonce (before the first step). */
void kp_sasl_test_set_nonce(struct kp_sasl *s, const char *nonce);

#endif
