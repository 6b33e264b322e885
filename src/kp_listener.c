/*
 * kp_listener.c - UNIX stream listeners: binding with stale-socket
 * replacement, nonblocking accept with peer-credential checks, the client
 * limit, and a pause when the process runs out of file descriptors.
 */
#include "kp_listener.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
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

/* Whether something accepts connections at path (a live socket). The
 * probe never blocks: a live peer with a full backlog answers EAGAIN,
 * which is live too. */
static bool kp_listener_live(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool live;

    if (fd < 0) {
        return false;
    }
    live = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ||
           errno == EAGAIN || errno == EINPROGRESS;
    close(fd);
    return live;
}

/* A user or group given by name or number; -1 when not set. */
static int kp_listener_id(const char *s, bool group, long *out)
{
    char *end;

    *out = -1;
    if (!s) {
        return KP_OK;
    }
    long v = strtol(s, &end, 10);
    if (*s && !*end && v >= 0) {
        *out = v;
        return KP_OK;
    }
    if (group) {
        struct group *g = getgrnam(s);
        *out = g ? (long)g->gr_gid : -1;
    } else {
        struct passwd *pw = getpwnam(s);
        *out = pw ? (long)pw->pw_uid : -1;
    }
    return *out >= 0 ? KP_OK : KP_ERROR;
}

/* The stale socket file at path is removed; anything else there (another
 * kind of file, a live listener) is an error. */
static int kp_listener_clear(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;

    if (lstat(path, &st) < 0) {
        return KP_OK;
    }
    if (!S_ISSOCK(st.st_mode)) {
        kp_err("listener %s: exists and is not a socket", path);
        return KP_ERROR;
    }
    if (kp_listener_live(sa)) {
        kp_err("listener %s: another process is listening there", path);
        return KP_ERROR;
    }
    unlink(path); /* stale socket file */
    return KP_OK;
}

/*
 * Binds fd at path with its mode set at creation (umask around bind) and
 * its owner set without following links: the socket is made in a private
 * directory beside path, given its owner there, and renamed into place, so
 * no window exists in which a swapped-in path could be chmod'ed or
 * chown'ed. When the private path would not fit sun_path, it is bound in
 * place and lchown'ed (which never follows a link).
 */
static int kp_listener_bind_at(int fd, const char *path, unsigned mode,
                               long uid, long gid)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char dir[sizeof(sa.sun_path)];
    const char *slash = strrchr(path, '/');
    int n = snprintf(dir, sizeof(dir), "%.*s.kproxyd-XXXXXX",
                     slash ? (int)(slash - path + 1) : 0, path);
    bool private_dir = n + 3 < (int)sizeof(sa.sun_path) && mkdtemp(dir);

    snprintf(sa.sun_path, sizeof(sa.sun_path), private_dir ? "%s/s" : "%s",
             private_dir ? dir : path);
    mode_t old = umask(0777 & ~(mode_t)mode);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc == 0 && (uid >= 0 || gid >= 0)) {
        rc = lchown(sa.sun_path, (uid_t)uid, (gid_t)gid);
    }
    if (rc == 0 && private_dir) {
        rc = rename(sa.sun_path, path);
    }
    int err = errno;
    if (private_dir) {
        unlink(sa.sun_path);
        rmdir(dir);
    }
    errno = err;
    return rc;
}

int kp_listener_bind_unix(const char *path, unsigned mode, const char *owner,
                          const char *group)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    long uid, gid;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        kp_err("listener %s: path too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    if (kp_listener_id(owner, false, &uid) != KP_OK ||
        kp_listener_id(group, true, &gid) != KP_OK) {
        kp_err("listener %s: unknown owner or group", path);
        return -1;
    }
    if (kp_listener_clear(path, &sa) != KP_OK) {
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        kp_err("listener %s: socket: %s", path, strerror(errno));
        return -1;
    }
    if (kp_listener_bind_at(fd, path, mode, uid, gid) < 0) {
        kp_err("listener %s: bind: %s", path, strerror(errno));
        close(fd);
        return -1;
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
        fd = kp_listener_bind_unix(lc->path, lc->mode, lc->owner,
                                   lc->group);
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
    for (size_t i = 0; i < cnt; i++) {
        if (ids[i] == id) {
            return true;
        }
    }
    return false;
}

/* Whether the peer's primary or any supplementary group (SO_PEERGROUPS,
 * Linux 4.13+) is in allow_gids. */
static bool kp_listener_gid_allowed(const struct kp_listener_conf *lc,
                                    int fd, gid_t primary)
{
    gid_t groups[256];
    socklen_t len = sizeof(groups);

    if (kp_listener_id_allowed(lc->allow_gids, lc->allow_gid_cnt, primary)) {
        return true;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
        return false; /* more than 256 groups, or an old kernel */
    }
    for (size_t i = 0; i < len / sizeof(gid_t); i++) {
        if (kp_listener_id_allowed(lc->allow_gids, lc->allow_gid_cnt,
                                   groups[i])) {
            return true;
        }
    }
    return false;
}

/* Checks SO_PEERCRED against allow_uids/allow_gids (both must pass). */
static bool kp_listener_peer_allowed(struct kp_listener *l, int fd,
                                     const struct ucred *cred)
{
    const struct kp_listener_conf *lc = l->conf;

    if (lc->allow_uids &&
        !kp_listener_id_allowed(lc->allow_uids, lc->allow_uid_cnt,
                                cred->uid)) {
        return false;
    }
    return !lc->allow_gids || kp_listener_gid_allowed(lc, fd, cred->gid);
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
    const struct kp_conf *c = *cs->conf;
    struct ucred cred;
    socklen_t len = sizeof(cred);

    if (cs->cnt >= (uint32_t)c->max_clients) {
        return "max_clients reached";
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        return "no peer credentials";
    }
    if (kp_uidmap_get(&cs->per_uid, cred.uid) >=
        (uint32_t)c->max_clients_per_uid) {
        return "max_clients_per_uid reached";
    }
    if (!kp_listener_peer_allowed(l, fd, &cred)) {
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
            if (strcmp(why, "max_clients_per_uid reached") == 0) {
                l->clients->n->clients_refused_uid++;
            }
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
