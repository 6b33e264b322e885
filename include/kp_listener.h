/*
 * kp_listener.h - a UNIX stream socket clients write lines to. Binds
 * (replacing a stale socket file, refusing a live one), applies the mode,
 * accepts nonblocking, checks peer credentials and the client limit.
 */
#ifndef KP_LISTENER_H
#define KP_LISTENER_H

#include <ev.h>
#include <stdbool.h>

struct kp_ctx;
struct kp_listener_conf;

struct kp_listener {
    struct kp_ctx *ctx;                  /* borrowed */
    const struct kp_listener_conf *conf; /* borrowed from ctx->conf */
    int fd;
    bool activated; /* handed over by systemd: its socket file stays */
    ev_io io;
    ev_timer pause; /* accept paused after EMFILE/ENFILE */
};

/* Binds a UNIX socket at path with the given mode; returns fd or -1
 * (logged). A stale socket file is replaced, a live one is an error. */
int kp_listener_bind_unix(const char *path, unsigned mode);

/*
 * Socket activation: takes over the fds systemd passed (LISTEN_PID,
 * LISTEN_FDS, LISTEN_FDNAMES), to be claimed by path; returns how many.
 */
int kp_listener_activation_init(struct kp_ctx *ctx);
/* The inherited socket bound at path, or -1; the caller owns it then. */
int kp_listener_claim(struct kp_ctx *ctx, const char *path);
/* Closes inherited sockets no listener claimed. */
void kp_listener_activation_done(struct kp_ctx *ctx);

struct kp_listener *kp_listener_open(struct kp_ctx *ctx,
                                     const struct kp_listener_conf *lc);
void kp_listener_start(struct kp_listener *l);
void kp_listener_stop(struct kp_listener *l);
/* Stops and closes the socket, unlinks the path. */
void kp_listener_close(struct kp_listener *l);

#endif
