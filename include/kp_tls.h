/*
 * kp_tls.h - TLS client connections to brokers through OpenSSL 3,
 * nonblocking, driven by the caller's libev watchers.
 *
 * Two objects:
 *
 *   struct kp_tls_ctx  one per loaded configuration (an SSL_CTX: CA store,
 *                      client certificate, verification policy), reference
 *                      counted. A connection holds a reference to the ctx
 *                      it started with, so a reload (which re-reads the
 *                      certificates into a new ctx for new connections)
 *                      never pulls anything from under a live one.
 *   struct kp_tls      one broker connection on an already connected,
 *                      nonblocking fd that the caller owns.
 *
 * Every operation returns KP_OK, KP_AGAIN or KP_ERROR. KP_AGAIN sets
 * *want to the fd readiness to wait for: KP_TLS_WANT_READ (arm EV_READ) or
 * KP_TLS_WANT_WRITE (arm EV_WRITE). Either direction may need the other:
 * a read can need a write (a TLS 1.3 key update answered on a full socket)
 * and a write can need a read. So the caller keeps one pending "want" per
 * direction and, when the fd becomes ready for it, calls the operation
 * that asked again. KP_ERROR leaves a text for the operator in
 * kp_tls_error(t) (what failed and why, with a hint when one helps); the
 * caller logs it once with the broker's name and closes the connection.
 *
 * Wiring in the broker connection (state after connect):
 *
 *   connect ok --> kp_tls_create(ctx, fd, advertised_host) --> TLS state
 *   TLS state:   kp_tls_handshake(t, &want)
 *                  KP_AGAIN -> arm EV_READ or EV_WRITE per want, retry on it
 *                  KP_OK    -> next state (ApiVersions / SASL); log
 *                              kp_tls_version() + kp_tls_cipher()
 *                  KP_ERROR -> log kp_tls_error(), close, back off
 *   up:          writes with kp_tls_writev(), reads with kp_tls_read()
 *                (instead of writev(2) / read(2)); a read loop ends on
 *                KP_AGAIN, never merely because the fd has nothing left:
 *                kp_tls_pending() says whether OpenSSL still holds bytes.
 *   close:       kp_tls_destroy(t) (best-effort close_notify), then
 *                close(fd).
 *
 * The host name given to kp_tls_create() is what the certificate is
 * checked against and what SNI carries: the broker's host as Metadata
 * advertises it (or tls.server_name), never the address actually dialled
 * (address_map may point the TCP connection elsewhere, e.g. through a
 * tunnel).
 */
#ifndef KP_TLS_H
#define KP_TLS_H

#include "kp_common.h"

#include <sys/uio.h>

struct kp_tls_conf;
struct kp_tls_ctx;
struct kp_tls;

enum kp_tls_want {
    KP_TLS_WANT_NONE,  /* not waiting */
    KP_TLS_WANT_READ,  /* retry when the fd is readable */
    KP_TLS_WANT_WRITE, /* retry when the fd is writable */
    KP_TLS_WANT__COUNT
};
extern const char *const kp_tls_want_names[KP_TLS_WANT__COUNT];

enum kp_tls_state {
    KP_TLS_HANDSHAKE, /* SSL_connect not finished */
    KP_TLS_UP,        /* application data flows */
    KP_TLS_CLOSED,    /* the broker closed the connection */
    KP_TLS_FAILED,    /* an error was reported; kp_tls_error() says what */
    KP_TLS__COUNT
};
extern const char *const kp_tls_state_names[KP_TLS__COUNT];

/*
 * Segments of at least this many bytes go to SSL_write_ex straight from
 * the caller's memory; shorter ones are copied into a buffer of
 * KP_TLS_COALESCE_BYTES (one TLS record) and sent together, so that a
 * request of small headers and large record batches costs few records and
 * few system calls, and no byte is copied twice before encryption.
 */
#define KP_TLS_DIRECT_MIN 4096
#define KP_TLS_COALESCE_BYTES 16384

/* Counters of one connection (for stats and for the zero-copy tests). */
struct kp_tls_stats {
    uint64_t direct_writes;    /* SSL_write_ex calls on caller memory */
    uint64_t direct_bytes;     /* bytes they wrote */
    uint64_t coalesced_writes; /* SSL_write_ex calls on the copy buffer */
    uint64_t coalesced_bytes;  /* bytes copied into it (and written) */
    uint64_t read_bytes;       /* plaintext bytes read */
};

/* ---- context ---- */

struct kp_tls_ctx *kp_tls_ctx_create(const struct kp_tls_conf *conf, char *err,
                                     size_t errlen);
struct kp_tls_ctx *kp_tls_ctx_get(struct kp_tls_ctx *c);
void kp_tls_ctx_put(struct kp_tls_ctx *c);
bool kp_tls_ctx_verifies(const struct kp_tls_ctx *c);

/* ---- connection ---- */

struct kp_tls *kp_tls_create(struct kp_tls_ctx *ctx, int fd, const char *host,
                             char *err, size_t errlen);
void kp_tls_destroy(struct kp_tls *t);

int kp_tls_handshake(struct kp_tls *t, enum kp_tls_want *want);
int kp_tls_read(struct kp_tls *t, void *buf, size_t len, size_t *nread,
                enum kp_tls_want *want);
bool kp_tls_pending(const struct kp_tls *t);
int kp_tls_writev(struct kp_tls *t, const struct iovec *iov, size_t iov_cnt,
                  size_t *nwritten, enum kp_tls_want *want);

enum kp_tls_state kp_tls_state(const struct kp_tls *t);
const char *kp_tls_error(const struct kp_tls *t);
const char *kp_tls_version(const struct kp_tls *t);
const char *kp_tls_cipher(const struct kp_tls *t);
const char *kp_tls_host(const struct kp_tls *t);
const struct kp_tls_stats *kp_tls_stats(const struct kp_tls *t);

/* ---- diagnosis of the plaintext side ---- */

const char *kp_tls_sniff_plaintext_reply(const uint8_t *p, size_t len);

#endif
