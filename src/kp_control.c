/*
 * kp_control.c - the control socket. Each connection sends one-line
 * commands and gets one reply each:
 *   stats    one line of JSON
 *   metrics  OpenMetrics text, ending "# EOF"
 *   flush    "ok delivered=N failed=F" once every message read before
 *            the command is settled
 *   reload   "ok", or "error: ..." with the configuration problems
 */
#include "kp_control.h"

#include <errno.h>
#include <stdio.h>
#include <ev.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kp_buf.h"
#include "kp_listener.h"
#include "kp_log.h"
#include "kp_tally.h"

/* Bounds (DESIGN 19): connections at once, and replies waiting for a
 * reader that does not read — past that, its commands wait unread. */
#define KP_CONTROL_MAX_CONNS 64
#define KP_CONTROL_MAX_OUT (1024 * 1024)

static struct kp_ratelimit kp_control_rl;

struct kp_ctl_conn {
    TAILQ_ENTRY(kp_ctl_conn) link;
    struct kp_control *ctl; /* borrowed */
    int fd;
    ev_io rio, wio;
    char in[1024];
    size_t in_len;
    struct kp_buf out; /* owned */
    bool flush_wait;
    struct kp_barrier flush; /* counting while flush_wait */
    bool eof;
};

struct kp_control {
    struct ev_loop *loop; /* borrowed */
    const struct kp_control_ops *ops;
    void *arg;          /* borrowed: the ops' argument */
    char *path;         /* owned */
    int fd;
    bool activated; /* handed over by systemd: its socket file stays */
    ev_io io;
    ev_timer pause; /* accepting paused after EMFILE */
    TAILQ_HEAD(, kp_ctl_conn) conns; /* owned */
    unsigned conn_cnt;
};

static void kp_control_on_pause(struct ev_loop *loop, ev_timer *w,
                                int revents)
{
    struct kp_control *ctl = w->data;
    (void)revents;
    ev_io_start(loop, &ctl->io);
}

static void kp_control_conn_close(struct kp_ctl_conn *cc)
{
    struct ev_loop *loop = cc->ctl->loop;

    if (cc->flush_wait) {
        cc->ctl->ops->flush_end(cc->ctl->arg, &cc->flush);
    }
    ev_io_stop(loop, &cc->rio);
    ev_io_stop(loop, &cc->wio);
    close(cc->fd);
    TAILQ_REMOVE(&cc->ctl->conns, cc, link);
    cc->ctl->conn_cnt--;
    kp_buf_deinit(&cc->out);
    free(cc);
}

static void kp_control_process(struct kp_ctl_conn *cc);

/* Reads commands only while its replies are taken: a client that sends
 * `metrics` in a loop without reading holds at most about
 * KP_CONTROL_MAX_OUT of output. */
static void kp_control_arm_read(struct kp_ctl_conn *cc)
{
    struct ev_loop *loop = cc->ctl->loop;

    if (!cc->eof && cc->out.len <= KP_CONTROL_MAX_OUT) {
        ev_io_start(loop, &cc->rio);
    } else {
        ev_io_stop(loop, &cc->rio);
    }
}

/* Writes what it can; returns KP_ERROR if the connection was closed. */
static int kp_control_flush_out(struct kp_ctl_conn *cc)
{
    struct ev_loop *loop = cc->ctl->loop;
    size_t off = 0;

    while (off < cc->out.len) {
        ssize_t n = send(cc->fd, cc->out.data + off, cc->out.len - off,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                break;
            }
            kp_control_conn_close(cc);
            return KP_ERROR;
        }
        off += (size_t)n;
    }
    kp_buf_consume(&cc->out, off);
    if (cc->out.len) {
        ev_io_start(loop, &cc->wio);
    } else {
        ev_io_stop(loop, &cc->wio);
        if (cc->out.cap > 64 * 1024) {
            kp_buf_deinit(&cc->out); /* a big reply is not kept around */
        }
        if (cc->eof && !cc->flush_wait) {
            kp_control_conn_close(cc);
            return KP_ERROR;
        }
    }
    kp_control_arm_read(cc);
    return KP_OK;
}

static void kp_control_reply(struct kp_ctl_conn *cc, const char *s)
{
    kp_buf_put_bytes(&cc->out, s, strlen(s));
}

/* The messages the flush waited for, by fate. */
static void kp_control_flush_reply(struct kp_ctl_conn *cc)
{
    struct kp_control *ctl = cc->ctl;
    char line[96];

    ctl->ops->flush_end(ctl->arg, &cc->flush);
    cc->flush_wait = false;
    snprintf(line, sizeof(line), "ok delivered=%llu failed=%llu\n",
             (unsigned long long)cc->flush.delivered,
             (unsigned long long)cc->flush.failed);
    kp_control_reply(cc, line);
}

static void kp_control_command(struct kp_ctl_conn *cc, char *cmd)
{
    struct kp_control *ctl = cc->ctl;
    size_t n = strlen(cmd);

    while (n && (cmd[n - 1] == '\r' || cmd[n - 1] == ' ')) {
        cmd[--n] = '\0';
    }
    if (strcmp(cmd, "stats") == 0) {
        ctl->ops->stats(ctl->arg, &cc->out);
    } else if (strcmp(cmd, "metrics") == 0) {
        ctl->ops->metrics(ctl->arg, &cc->out);
    } else if (strcmp(cmd, "flush") == 0) {
        /* Everything read so far goes out now, then we wait for it. */
        ctl->ops->flush_begin(ctl->arg, &cc->flush);
        cc->flush_wait = true;
        if (ctl->ops->flushed(ctl->arg, &cc->flush)) {
            kp_control_flush_reply(cc);
        }
    } else if (strcmp(cmd, "reload") == 0) {
        char *err = NULL;
        if (ctl->ops->reload(ctl->arg, &err) == KP_OK) {
            kp_control_reply(cc, "ok\n");
        } else {
            kp_control_reply(cc, "error: ");
            kp_control_reply(cc, err ? err : "reload failed");
            kp_control_reply(cc, "\n");
            free(err);
        }
    } else if (n == 0) {
        return;
    } else {
        kp_control_reply(cc, "error: unknown command (stats, metrics, "
                             "flush, reload)\n");
    }
}

static void kp_control_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_ctl_conn *cc = w->data;
    (void)loop;

    if (revents & EV_CUSTOM) {
        kp_control_process(cc); /* a flush completed */
        kp_control_flush_out(cc);
        return;
    }

    ssize_t n = read(cc->fd, cc->in + cc->in_len,
                     sizeof(cc->in) - 1 - cc->in_len);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        cc->eof = true;
        ev_io_stop(loop, &cc->rio);
        kp_control_flush_out(cc);
        return;
    }
    cc->in_len += (size_t)n;
    kp_control_process(cc);
    kp_control_flush_out(cc);
}

/* Runs the complete commands read so far, one at a time: a pending flush
 * holds the later ones, and so does output nobody reads. */
static void kp_control_process(struct kp_ctl_conn *cc)
{
    char *start = cc->in, *nl;

    while (!cc->flush_wait && cc->out.len <= KP_CONTROL_MAX_OUT &&
           (nl = memchr(start, '\n', cc->in_len - (size_t)(start - cc->in)))) {
        *nl = '\0';
        kp_control_command(cc, start);
        start = nl + 1;
    }
    cc->in_len -= (size_t)(start - cc->in);
    memmove(cc->in, start, cc->in_len);
    if (cc->in_len == sizeof(cc->in) - 1) {
        kp_control_reply(cc, "error: command too long\n");
        cc->in_len = 0;
    }
}

static void kp_control_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_ctl_conn *cc = w->data;
    (void)loop;
    (void)revents;
    if (kp_control_flush_out(cc) == KP_OK && cc->in_len &&
        cc->out.len <= KP_CONTROL_MAX_OUT) {
        kp_control_process(cc); /* commands that waited for the reader */
        kp_control_flush_out(cc);
    }
}

static void kp_control_on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kp_control *ctl = w->data;
    (void)revents;

    int fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
            errno == ENOMEM) {
            /* out of descriptors: pause rather than spin on the socket */
            ev_io_stop(loop, &ctl->io);
            ev_timer_set(&ctl->pause, 0.1, 0.);
            ev_timer_start(loop, &ctl->pause);
        }
        return;
    }
    if (ctl->conn_cnt >= KP_CONTROL_MAX_CONNS) {
        kp_log_rl(&kp_control_rl, KP_LOG_WARNING,
                  "control %s: %d connections already; refused", ctl->path,
                  KP_CONTROL_MAX_CONNS);
        close(fd);
        return;
    }
    struct kp_ctl_conn *cc = kp_calloc(1, sizeof(*cc));
    ctl->conn_cnt++;
    cc->ctl = ctl;
    cc->fd = fd;
    kp_buf_init(&cc->out, 1024);
    ev_io_init(&cc->rio, kp_control_on_read, fd, EV_READ);
    ev_io_init(&cc->wio, kp_control_on_write, fd, EV_WRITE);
    cc->rio.data = cc->wio.data = cc;
    TAILQ_INSERT_TAIL(&ctl->conns, cc, link);
    ev_io_start(loop, &cc->rio);
}

struct kp_control *kp_control_open(struct ev_loop *loop,
                                   struct kp_activation *act,
                                   const char *path,
                                   const struct kp_control_ops *ops,
                                   void *arg)
{
    int fd = kp_activation_claim(act, path);
    bool activated = fd >= 0;
    if (fd < 0) {
        fd = kp_listener_bind_unix(path, 0660, NULL, NULL);
    }
    if (fd < 0) {
        return NULL;
    }
    struct kp_control *ctl = kp_calloc(1, sizeof(*ctl));
    ctl->loop = loop;
    ctl->ops = ops;
    ctl->arg = arg;
    ctl->path = kp_strdup(path);
    ctl->fd = fd;
    ctl->activated = activated;
    TAILQ_INIT(&ctl->conns);
    ev_io_init(&ctl->io, kp_control_on_accept, fd, EV_READ);
    ev_init(&ctl->pause, kp_control_on_pause);
    ctl->io.data = ctl->pause.data = ctl;
    ev_io_start(loop, &ctl->io);
    return ctl;
}

void kp_control_close(struct kp_control *ctl)
{
    struct kp_ctl_conn *cc;
    while ((cc = TAILQ_FIRST(&ctl->conns)) != NULL) {
        kp_control_conn_close(cc);
    }
    ev_io_stop(ctl->loop, &ctl->io);
    ev_timer_stop(ctl->loop, &ctl->pause);
    close(ctl->fd);
    if (!ctl->activated) {
        unlink(ctl->path);
    }
    free(ctl->path);
    free(ctl);
}

void kp_control_check_flush(struct kp_control *ctl)
{
    struct kp_ctl_conn *cc, *next;
    for (cc = TAILQ_FIRST(&ctl->conns); cc; cc = next) {
        next = TAILQ_NEXT(cc, link);
        if (cc->flush_wait && ctl->ops->flushed(ctl->arg, &cc->flush)) {
            kp_control_flush_reply(cc);
            /* Commands sent behind the flush run from the loop, not from
             * inside the settle path that called us. */
            ev_feed_event(ctl->loop, &cc->rio, EV_CUSTOM);
        }
    }
}
