/*
 * kp_systemd.c - the notify protocol: one datagram per message to
 * $NOTIFY_SOCKET ("/path" or "@abstract"), and the two loop timers that
 * keep systemd informed: WATCHDOG=1 at half the WATCHDOG_USEC period and
 * STATUS= with the main counters. Both run from the loop itself, so a
 * stalled loop stops the pings.
 */
#include "kp_systemd.h"

#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kp_log.h"

struct kp_systemd {
    struct ev_loop *loop; /* borrowed */
    kp_systemd_status_fn status_fn;
    void *arg;          /* borrowed: status_fn's argument */
    ev_timer watchdog;  /* WATCHDOG=1, every half WATCHDOG_USEC */
    ev_timer status;    /* STATUS=, every KP_SYSTEMD_STATUS_S */
    char last_status[256];
};

/* The notify socket's address, or false outside systemd. */
static bool kp_systemd_addr(struct sockaddr_un *sa, socklen_t *len)
{
    const char *path = getenv("NOTIFY_SOCKET");
    size_t plen;

    if (!path || (path[0] != '/' && path[0] != '@')) {
        return false;
    }
    plen = strlen(path);
    if (plen < 2 || plen >= sizeof(sa->sun_path)) {
        return false;
    }
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, plen);
    if (path[0] == '@') {
        sa->sun_path[0] = '\0'; /* abstract namespace */
    }
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    return true;
}

void kp_systemd_notify(const char *msg)
{
    struct sockaddr_un sa;
    socklen_t salen;
    char buf[512];
    int fd;

    if (!kp_systemd_addr(&sa, &salen)) {
        return;
    }
    if (strcmp(msg, "RELOADING=1") == 0) {
        /* systemd 253+ wants the monotonic time of the reload start. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%lld",
                 (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
        msg = buf;
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return;
    }
    /* Best effort: systemd may be gone (or the socket full) at shutdown. */
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT,
               (struct sockaddr *)&sa, salen) < 0) {
        kp_debug("systemd: notify %.20s: %s", msg, strerror(errno));
    }
    close(fd);
}

/* "STATUS=..." with the caller's text into buf. */
static void kp_systemd_status_text(struct kp_systemd *sd, char *buf,
                                   size_t cap)
{
    int n = snprintf(buf, cap, "STATUS=");
    sd->status_fn(sd->arg, buf + n, cap - (size_t)n);
}

static void kp_systemd_on_watchdog(struct ev_loop *loop, ev_timer *w,
                                   int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    kp_systemd_notify("WATCHDOG=1");
}

static void kp_systemd_on_status(struct ev_loop *loop, ev_timer *w,
                                 int revents)
{
    struct kp_systemd *sd = w->data;
    char status[sizeof(sd->last_status)];
    (void)loop;
    (void)revents;

    kp_systemd_status_text(sd, status, sizeof(status));
    if (strcmp(status, sd->last_status) != 0) {
        memcpy(sd->last_status, status, sizeof(status));
        kp_systemd_notify(status);
    }
}

/*
 * The watchdog period systemd asked of this process, in microseconds, or 0:
 * WATCHDOG_USEC, unless WATCHDOG_PID names another process.
 */
static uint64_t kp_systemd_watchdog_usec(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    char *end;
    unsigned long long v;

    if (!usec || !usec[0]) {
        return 0;
    }
    if (pid && pid[0] && strtol(pid, NULL, 10) != (long)getpid()) {
        return 0;
    }
    v = strtoull(usec, &end, 10);
    if (*end != '\0' || v == 0) {
        kp_warn("systemd: ignoring WATCHDOG_USEC=%s", usec);
        return 0;
    }
    return v;
}

struct kp_systemd *kp_systemd_start(struct ev_loop *loop,
                                    kp_systemd_status_fn status, void *arg)
{
    struct sockaddr_un sa;
    socklen_t salen;
    struct kp_systemd *sd;
    char msg[sizeof(sd->last_status) + 16];
    uint64_t wd;

    if (!kp_systemd_addr(&sa, &salen)) {
        return NULL;
    }
    sd = kp_calloc(1, sizeof(*sd));
    sd->loop = loop;
    sd->status_fn = status;
    sd->arg = arg;
    kp_systemd_status_text(sd, sd->last_status, sizeof(sd->last_status));
    snprintf(msg, sizeof(msg), "READY=1\n%s", sd->last_status);
    kp_systemd_notify(msg);

    ev_timer_init(&sd->status, kp_systemd_on_status, KP_SYSTEMD_STATUS_S,
                  KP_SYSTEMD_STATUS_S);
    sd->status.data = sd;
    ev_timer_start(loop, &sd->status);

    ev_init(&sd->watchdog, kp_systemd_on_watchdog);
    sd->watchdog.data = sd;
    wd = kp_systemd_watchdog_usec();
    if (wd) {
        double every = (double)wd / 2e6;
        kp_systemd_notify("WATCHDOG=1");
        ev_timer_set(&sd->watchdog, every, every);
        ev_timer_start(loop, &sd->watchdog);
        kp_info("systemd: watchdog every %.3f s", every);
    }
    return sd;
}

void kp_systemd_stop(struct kp_systemd *sd)
{
    if (!sd) {
        return;
    }
    ev_timer_stop(sd->loop, &sd->status);
    ev_timer_stop(sd->loop, &sd->watchdog);
    free(sd);
}
