/*
 * kp_listener.h - a UNIX stream socket clients write lines to. Binds
 * (replacing a stale socket file, refusing a live one), applies the mode,
 * accepts nonblocking, checks peer credentials and the client limit, and
 * hands each connection to the client set.
 */
#ifndef KP_LISTENER_H
#define KP_LISTENER_H

#include <ev.h>
#include <stdbool.h>

struct kp_clients;
struct kp_listener_conf;

/* Sockets handed over by systemd (socket activation), claimed by path. */
struct kp_activation {
    int *fds; /* owned: -1 once claimed */
    int cnt;
};

struct kp_listener {
    struct ev_loop *loop;                /* borrowed */
    struct kp_clients *clients;          /* borrowed */
    const struct kp_listener_conf *conf; /* borrowed from the boot conf */
    int fd;
    bool activated; /* handed over by systemd: its socket file stays */
    ev_io io;
    ev_timer pause; /* accept paused after EMFILE/ENFILE */
};

/* Binds a UNIX socket at path with the given mode and (when not NULL)
 * owner and group, names or numbers, set without a window in which the
 * path could be swapped; returns fd or -1 (logged). A stale socket file
 * is replaced, a live one is an error. */
int kp_listener_bind_unix(const char *path, unsigned mode, const char *owner,
                          const char *group);

/*
 * Socket activation: takes over the fds systemd passed (LISTEN_PID,
 * LISTEN_FDS, LISTEN_FDNAMES), to be claimed by path; returns how many.
 */
int kp_activation_init(struct kp_activation *act);
/* The inherited socket bound at path, or -1; the caller owns it then. */
int kp_activation_claim(struct kp_activation *act, const char *path);
/* Closes inherited sockets no listener claimed. */
void kp_activation_done(struct kp_activation *act);

/* The listener of lc: an inherited socket, or a new one bound. */
struct kp_listener *kp_listener_open(struct ev_loop *loop,
                                     struct kp_clients *clients,
                                     struct kp_activation *act,
                                     const struct kp_listener_conf *lc);
void kp_listener_start(struct kp_listener *l);
void kp_listener_stop(struct kp_listener *l);
/* Stops and closes the socket, unlinks the path. */
void kp_listener_close(struct kp_listener *l);

#endif
