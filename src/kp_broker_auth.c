/*
 * kp_broker_auth.c - SASL on a broker connection (kp_sasl's steps carried
 * by SaslHandshake and SaslAuthenticate, or by raw frames after
 * SaslHandshake v0), and KIP-368 re-authentication on a connection that
 * is up. The flow is the one kp_sasl.h describes:
 *
 *   ApiVersions ─▶ SaslHandshake(mech) ─▶ SaslAuthenticate(token)* ─▶ UP
 *                                          (raw frames after v0)
 *   UP ──reauth timer──▶ SaslHandshake v1 ─▶ SaslAuthenticate* ─▶ UP
 *        (new requests held, answers to those in flight still read)
 *
 * Failures name the broker, the mechanism and what the broker said, and
 * close the connection with backoff (kp_broker_fail, fault
 * KP_BFAULT_AUTH): messages waiting for the broker then fail as
 * `authentication` at their delivery timeout. No secret is ever logged.
 */
#include "kp_broker_impl.h"

#include <stdarg.h>
#include <stdio.h>

#include "kp_conf.h"
#include "kp_kerr.h"
#include "kp_sasl.h"

static void kp_broker_on_sasl_token(void *arg, struct kp_broker *b,
                                    struct kp_request *r, enum kp_req_status st,
                                    const uint8_t *body, size_t len);

static const struct kp_sasl_conf *kp_broker_sasl_conf(const struct kp_broker *b)
{
    return &b->env->boot->security.sasl;
}

static const char *kp_broker_mech(const struct kp_broker *b)
{
    return kp_sasl_mech_name(kp_broker_sasl_conf(b)->mechanism);
}

static void kp_broker_auth_fail(struct kp_broker *b, const char *fmt, ...)
    KP_PRINTF(2, 3);

/* "SASL MECH as "USER": ..." at warning; closes with backoff. */
static void kp_broker_auth_fail(struct kp_broker *b, const char *fmt, ...)
{
    char what[384], who[96] = "", why[640];
    const struct kp_sasl_conf *sc = kp_broker_sasl_conf(b);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (sc->mechanism != KP_SASL_OAUTHBEARER && sc->username) {
        snprintf(who, sizeof(who), " as \"%.64s\"", sc->username);
    }
    snprintf(why, sizeof(why), "SASL %s%s: %s%s", kp_broker_mech(b), who,
             b->reauth ? "re-authentication: " : "", what);
    kp_broker_fail(b, KP_BFAULT_AUTH, KP_LOG_WARNING, why);
}

void kp_broker_auth_reset(struct kp_broker *b)
{
    if (b->sasl) {
        kp_sasl_destroy(b->sasl);
        b->sasl = NULL;
    }
    ev_timer_stop(b->loop, &b->reauth_timer);
    b->reauth = false;
    b->session_lifetime_ms = 0;
}

/* Sends one client message: as SaslAuthenticate, or a raw frame. */
static void kp_broker_send_token(struct kp_broker *b, const struct kp_buf *out)
{
    bool raw = b->sasl_auth_ver < 0;
    struct kp_request *r = kp_broker_request_start(
        b, raw ? KP_API_SASL_HANDSHAKE : KP_API_SASL_AUTHENTICATE,
        raw ? b->sasl_hs_ver : b->sasl_auth_ver);

    if (raw) {
        r->raw = true;
        kp_proto_enc_sasl_raw(&r->req, out->data, out->len);
    } else {
        kp_proto_enc_sasl_authenticate(&r->req, b->sasl_auth_ver, r->corr_id,
                                       (*b->conf)->client_id, out->data,
                                       out->len);
    }
    kp_broker_send_auth(b, r, kp_broker_on_sasl_token);
}

/* Authenticated: up (or back to sending, after a re-authentication),
 * with the next re-authentication scheduled when the broker gave a
 * session lifetime. */
static void kp_broker_auth_done(struct kp_broker *b, int64_t lifetime_ms)
{
    int64_t delay = kp_sasl_reauth_delay_ms(lifetime_ms);

    kp_sasl_destroy(b->sasl);
    b->sasl = NULL;
    b->sasl_note[0] = '\0';
    b->session_lifetime_ms = lifetime_ms;
    if (delay >= 0) {
        ev_timer_stop(b->loop, &b->reauth_timer);
        ev_timer_set(&b->reauth_timer, (double)delay / 1000.0, 0.);
        ev_timer_start(b->loop, &b->reauth_timer);
    }
    if (b->reauth) {
        b->reauth = false;
        b->reauths++;
        kp_debug("%s: re-authenticated (SASL %s), next in %lld ms",
                 kp_broker_name(b), kp_broker_mech(b), (long long)delay);
        kp_broker_write(b); /* what was held */
        b->hooks->room(b->arg, b);
        return;
    }
    kp_debug("%s: authenticated (SASL %s, session lifetime %lld ms)",
             kp_broker_name(b), kp_broker_mech(b), (long long)lifetime_ms);
    kp_broker_up(b);
}

/* Feeds the server's message to the mechanism and acts on its answer. */
static void kp_broker_sasl_step(struct kp_broker *b, const uint8_t *in,
                                size_t in_len, int64_t lifetime_ms)
{
    struct kp_buf out;
    char err[256] = "";

    kp_buf_init(&out, 256);
    int rc = kp_sasl_step(b->sasl, in, in_len, &out, err, sizeof(err));
    if (rc == KP_AGAIN) {
        if (err[0]) {
            /* OAUTHBEARER: the server's error status, before it fails
             * the exchange. */
            snprintf(b->sasl_note, sizeof(b->sasl_note), "%.127s", err);
        }
        kp_broker_send_token(b, &out);
    } else if (rc == KP_OK) {
        kp_broker_auth_done(b, lifetime_ms);
    } else {
        kp_broker_auth_fail(b, "%s", err);
    }
    kp_buf_deinit(&out);
}

static void kp_broker_on_sasl_token(void *arg, struct kp_broker *b,
                                    struct kp_request *r, enum kp_req_status st,
                                    const uint8_t *body, size_t len)
{
    struct kp_sasl_authenticate_resp ar;
    (void)arg;

    if (st != KP_REQ_ANSWERED || !b->sasl) {
        return;
    }
    if (r->raw) {
        kp_broker_sasl_step(b, body, len, 0);
        return;
    }
    if (kp_proto_dec_sasl_authenticate(body, len, r->version, &ar) != KP_OK) {
        kp_broker_fail(b, KP_BFAULT_PROTOCOL, KP_LOG_WARNING,
                       "malformed SaslAuthenticate response");
        return;
    }
    if (ar.error != KP_KERR_NONE) {
        kp_broker_auth_fail(b, "authentication failed: %s (%s)%s%s",
                            ar.error_message ? ar.error_message : "no message",
                            kp_kerr_name(ar.error), b->sasl_note[0] ? "; " : "",
                            b->sasl_note);
    } else {
        kp_broker_sasl_step(b, ar.auth_bytes, (size_t)ar.auth_len,
                            ar.session_lifetime_ms);
    }
    kp_proto_sasl_authenticate_resp_free(&ar);
}

/* The secret for a new exchange: the password, or the OAUTHBEARER token
 * read from token_file now (a rotated token is picked up at every
 * authentication). NULL (logged, closed) when the file cannot be read. */
static char *kp_broker_secret(struct kp_broker *b)
{
    const struct kp_sasl_conf *sc = kp_broker_sasl_conf(b);
    char err[256];
    char *token = NULL;

    if (sc->mechanism != KP_SASL_OAUTHBEARER) {
        return kp_strdup(sc->password ? sc->password : "");
    }
    if (!sc->token_file) {
        kp_broker_auth_fail(b, "no token_file configured");
        return NULL;
    }
    if (kp_sasl_read_token_file(sc->token_file, &token, err, sizeof(err)) !=
        KP_OK) {
        kp_broker_auth_fail(b, "%s", err);
        return NULL;
    }
    return token;
}

/* Lists the mechanisms a broker enables ("PLAIN, SCRAM-SHA-512"). */
static void kp_broker_mech_list(const struct kp_sasl_handshake_resp *hr,
                                char *buf, size_t cap)
{
    size_t len = 0;

    buf[0] = '\0';
    for (int32_t i = 0; i < hr->mechanism_cnt && len + 4 < cap; i++) {
        len += (size_t)snprintf(buf + len, cap - len, "%s%.64s", i ? ", " : "",
                                hr->mechanisms[i]);
    }
    if (!hr->mechanism_cnt) {
        snprintf(buf, cap, "none");
    }
}

static void kp_broker_on_sasl_handshake(void *arg, struct kp_broker *b,
                                        struct kp_request *r,
                                        enum kp_req_status st,
                                        const uint8_t *body, size_t len)
{
    struct kp_sasl_handshake_resp hr;
    char mechs[256];
    (void)arg;

    if (st != KP_REQ_ANSWERED) {
        return;
    }
    if (kp_proto_dec_sasl_handshake(body, len, r->version, &hr) != KP_OK) {
        kp_broker_fail(b, KP_BFAULT_PROTOCOL, KP_LOG_WARNING,
                       "malformed SaslHandshake response");
        return;
    }
    int16_t err = hr.error;
    kp_broker_mech_list(&hr, mechs, sizeof(mechs));
    kp_proto_sasl_handshake_resp_free(&hr);
    if (err == KP_KERR_UNSUPPORTED_SASL_MECHANISM) {
        kp_broker_auth_fail(b,
                            "the broker does not enable this mechanism "
                            "(it enables: %s)",
                            mechs);
        return;
    }
    if (err != KP_KERR_NONE) {
        kp_broker_auth_fail(b, "SaslHandshake: %s", kp_kerr_name(err));
        return;
    }
    char *secret = kp_broker_secret(b);
    if (!secret) {
        return;
    }
    const struct kp_sasl_conf *sc = kp_broker_sasl_conf(b);
    b->sasl = kp_sasl_create(sc->mechanism, sc->username, secret);
    explicit_bzero(secret, strlen(secret));
    free(secret);
    kp_broker_sasl_step(b, NULL, 0, 0);
}

/*
 * SaslHandshake at the version the broker offers: v1 carries the tokens
 * in SaslAuthenticate requests (at the broker's highest version kproxyd
 * knows), v0 as raw frames. Re-authentication needs v1 and
 * SaslAuthenticate v1+ (a broker that gave a session lifetime has them).
 */
void kp_broker_auth_start(struct kp_broker *b)
{
    int16_t hs = kp_broker_version(b, KP_API_SASL_HANDSHAKE);
    int16_t au = kp_broker_version(b, KP_API_SASL_AUTHENTICATE);

    b->sasl_note[0] = '\0';
    if (hs < 0) {
        kp_broker_auth_fail(
            b,
            "the broker offers no SaslHandshake: is this "
            "a SASL listener? (security.protocol is %s)",
            kp_sec_protocol_names[b->env->boot->security.protocol]);
        return;
    }
    if (hs >= 1 && au < 0) {
        hs = 0; /* no SaslAuthenticate: tokens as raw frames */
    }
    if (b->reauth && (hs < 1 || au < 1)) {
        kp_broker_auth_fail(b,
                            "the broker cannot re-authenticate "
                            "(SaslHandshake v%d, SaslAuthenticate v%d)",
                            hs, au);
        return;
    }
    b->sasl_hs_ver = hs;
    b->sasl_auth_ver = hs >= 1 ? au : -1;
    struct kp_request *r =
        kp_broker_request_start(b, KP_API_SASL_HANDSHAKE, hs);
    kp_proto_enc_sasl_handshake(&r->req, hs, r->corr_id, (*b->conf)->client_id,
                                kp_broker_mech(b));
    kp_broker_send_auth(b, r, kp_broker_on_sasl_handshake);
}

/* KIP-368: the session nears its end; authenticate again in place. */
void kp_broker_on_reauth_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kp_broker *b = w->data;
    (void)loop;
    (void)revents;

    if (b->state != KP_BROKER_UP || b->reauth) {
        return;
    }
    kp_debug("%s: re-authenticating (session lifetime %lld ms)",
             kp_broker_name(b), (long long)b->session_lifetime_ms);
    b->reauth = true;
    kp_broker_auth_start(b);
}
