/*
 * kp_listener.c - UNIX stream listeners: binding with stale-socket
 * replacement, nonblocking accept with peer-credential checks, the client
 * limit, and a pause when the process runs out of file descriptors.
 */
#include "kp_listener.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "kp_client.h"
#include "kp_conf.h"
#include "kp_counters.h"
#include "kp_log.h"

static struct kp_ratelimit kp_listener_rl;

static void kp_listener_on_accept(struct ev_loop *loop, ev_io *w, int revents);
static void kp_listener_on_pause(struct ev_loop *loop, ev_timer *w,
                                 int revents);

/* Whether something accepts connections at path (a live socket). */
static bool kp_listener_live(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live;

    if (fd < 0) {
        return false;
    }
    live = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ||
           errno == EAGAIN;
    close(fd);
    return live;
}

int kp_listener_bind_unix(const char *path, unsigned mode)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        kp_err("listener %s: path too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            kp_err("listener %s: exists and is not a socket", path);
            return -1;
        }
        if (kp_listener_live(&sa)) {
            kp_err("listener %s: another process is listening there", path);
            return -1;
        }
        unlink(path); /* stale socket file */
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        kp_err("listener %s: socket: %s", path, strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        kp_err("listener %s: bind: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (chmod(path, mode) < 0) {
        kp_warn("listener %s: chmod %o: %s", path, mode, strerror(errno));
    }
    if (listen(fd, 1024) < 0) {
        kp_err("listener %s: listen: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

int kp_activation_init(struct kp_activation *act)
{
    const char *pid = getenv("LISTEN_PID");
    const char *fds = getenv("LISTEN_FDS");
    int n;

    if (!pid || !fds || atol(pid) != (long)getpid()) {
        return 0;
    }
    n = atoi(fds);
    if (n <= 0 || n > 1024) {
        return 0;
    }
    act->fds = kp_calloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) {
        int fd = 3 + i; /* SD_LISTEN_FDS_START */
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        act->fds[i] = fd;
    }
    act->cnt = n;
    /* Not for our children. */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    kp_info("socket activation: %d socket(s) from systemd", n);
    return n;
}

int kp_activation_claim(struct kp_activation *act, const char *path)
{
    for (int i = 0; i < act->cnt; i++) {
        struct sockaddr_un sa;
        socklen_t len = sizeof(sa);
        int fd = act->fds[i];
        if (fd < 0 || getsockname(fd, (struct sockaddr *)&sa, &len) < 0 ||
            sa.sun_family != AF_UNIX) {
            continue;
        }
        if (len > offsetof(struct sockaddr_un, sun_path) &&
            strncmp(sa.sun_path, path, sizeof(sa.sun_path)) == 0) {
            act->fds[i] = -1;
            return fd;
        }
    }
    return -1;
}

void kp_activation_done(struct kp_activation *act)
{
    for (int i = 0; i < act->cnt; i++) {
        if (act->fds[i] >= 0) {
            kp_warn("socket activation: fd %d matches no listener; closed",
                    act->fds[i]);
            close(act->fds[i]);
        }
    }
    free(act->fds);
    act->fds = NULL;
    act->cnt = 0;
}

struct kp_listener *kp_listener_open(struct ev_loop *loop,
                                     struct kp_clients *clients,
                                     struct kp_activation *act,
                                     const struct kp_listener_conf *lc)
{
    int fd = kp_activation_claim(act, lc->path);
    bool activated = fd >= 0;
    if (!activated) {
        fd = kp_listener_bind_unix(lc->path, lc->mode);
    }
    if (fd < 0) {
        return NULL;
    }
    struct kp_listener *l = kp_calloc(1, sizeof(*l));
    l->loop = loop;
    l->clients = clients;
    l->conf = lc;
    l->fd = fd;
    l->activated = activated;
    ev_io_init(&l->io, kp_listener_on_accept, fd, EV_READ);
    ev_timer_init(&l->pause, kp_listener_on_pause, 0.1, 0.);
    l->io.data = l->pause.data = l;
    kp_info("listening on %s (format %s%s)", lc->path,
            kp_format_names[lc->format], activated ? ", from systemd" : "");
    return l;
}

void kp_listener_start(struct kp_listener *l)
{
    ev_io_start(l->loop, &l->io);
}

void kp_listener_stop(struct kp_listener *l)
{
    ev_io_stop(l->loop, &l->io);
    ev_timer_stop(l->loop, &l->pause);
}

void kp_listener_close(struct kp_listener *l)
{
    kp_listener_stop(l);
    if (l->fd >= 0) {
        close(l->fd);
        if (!l->activated) {
            unlink(l->conf->path);
        }
    }
    free(l);
}

static bool kp_listener_id_allowed(const uint32_t *ids, size_t cnt,
                                   uint32_t id)
{
    if (!ids) {
        return true;
    }
    for (size_t i = 0; i < cnt; i++) {
        if (ids[i] == id) {
            return true;
        }
    }
    return false;
}

/* Checks SO_PEERCRED against allow_uids/allow_gids (both must pass). */
static bool kp_listener_peer_allowed(struct kp_listener *l, int fd)
{
    const struct kp_listener_conf *lc = l->conf;
    struct ucred cred;
    socklen_t len = sizeof(cred);

    if (!lc->allow_uids && !lc->allow_gids) {
        return true;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        return false;
    }
    return kp_listener_id_allowed(lc->allow_uids, lc->allow_uid_cnt,
                                  cred.uid) &&
           kp_listener_id_allowed(lc->allow_gids, lc->allow_gid_cnt,
                                  cred.gid);
}

/* Pauses accepting for a while: out of descriptors or memory. */
static void kp_listener_pause(struct kp_listener *l)
{
    kp_log_rl(&kp_listener_rl, KP_LOG_WARNING,
              "listener %s: accept: %s; pausing accepts", l->conf->path,
              strerror(errno));
    ev_io_stop(l->loop, &l->io);
    ev_timer_set(&l->pause, 0.1, 0.);
    ev_timer_start(l->loop, &l->pause);
}

/* Why a new connection is refused, or NULL. */
static const char *kp_listener_refusal(struct kp_listener *l, int fd)
{
    const struct kp_clients *cs = l->clients;

    if (cs->cnt >= (uint32_t)(*cs->conf)->max_clients) {
        return "max_clients reached";
    }
    if (!kp_listener_peer_allowed(l, fd)) {
        cs->n->clients_refused_peer++;
        return "peer not allowed";
    }
    return NULL;
}

static void kp_listener_on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_listener *l = w->data;
    (void)loop;
    (void)revents;

    for (int i = 0; i < 64; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                kp_listener_pause(l); /* not spin on a readable socket */
            }
            return;
        }
        const char *why = kp_listener_refusal(l, fd);
        if (why) {
            l->clients->n->clients_refused++;
            kp_log_rl(&kp_listener_rl, KP_LOG_WARNING,
                      "listener %s: connection refused (%s)", l->conf->path,
                      why);
            close(fd);
            continue;
        }
        kp_client_create(l->clients, l->conf, fd);
    }
}

static void kp_listener_on_pause(struct ev_loop *loop, ev_timer *w,
                                 int revents)
{
    struct kp_listener *l = w->data;
    (void)revents;
    ev_io_start(loop, &l->io);
}
