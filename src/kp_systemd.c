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

#include "kp_ctx.h"
#include "kp_log.h"

struct kp_systemd {
    struct kp_ctx *ctx; /* borrowed */
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

void kp_systemd_notify(struct kp_ctx *ctx, const char *msg)
{
    struct sockaddr_un sa;
    socklen_t salen;
    char buf[512];
    int fd;
    (void)ctx;

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

/* "STATUS=..." with the main counters into buf. */
static void kp_systemd_status_text(struct kp_ctx *ctx, char *buf, size_t cap)
{
    snprintf(buf, cap,
             "STATUS=received %llu, delivered %llu, failed %llu, rejected "
             "%llu, queued %llu, clients %u%s",
             (unsigned long long)ctx->n.received,
             (unsigned long long)ctx->n.delivered,
             (unsigned long long)ctx->n.failed,
             (unsigned long long)ctx->n.rejected,
             (unsigned long long)ctx->queued_msgs, ctx->client_cnt,
             ctx->backpressure ? ", backpressure" : "");
}

static void kp_systemd_on_watchdog(struct ev_loop *loop, ev_timer *w,
                                   int revents)
{
    struct kp_systemd *sd = w->data;
    (void)loop;
    (void)revents;
    kp_systemd_notify(sd->ctx, "WATCHDOG=1");
}

static void kp_systemd_on_status(struct ev_loop *loop, ev_timer *w,
                                 int revents)
{
    struct kp_systemd *sd = w->data;
    char status[sizeof(sd->last_status)];
    (void)loop;
    (void)revents;

    kp_systemd_status_text(sd->ctx, status, sizeof(status));
    if (strcmp(status, sd->last_status) != 0) {
        memcpy(sd->last_status, status, sizeof(status));
        kp_systemd_notify(sd->ctx, status);
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

void kp_systemd_start(struct kp_ctx *ctx)
{
    struct sockaddr_un sa;
    socklen_t salen;
    struct kp_systemd *sd;
    char msg[sizeof(sd->last_status) + 16];
    uint64_t wd;

    if (ctx->systemd || !kp_systemd_addr(&sa, &salen)) {
        return;
    }
    sd = kp_calloc(1, sizeof(*sd));
    sd->ctx = ctx;
    ctx->systemd = sd;
    kp_systemd_status_text(ctx, sd->last_status, sizeof(sd->last_status));
    snprintf(msg, sizeof(msg), "READY=1\n%s", sd->last_status);
    kp_systemd_notify(ctx, msg);

    ev_timer_init(&sd->status, kp_systemd_on_status, KP_SYSTEMD_STATUS_S,
                  KP_SYSTEMD_STATUS_S);
    sd->status.data = sd;
    ev_timer_start(ctx->loop, &sd->status);

    ev_init(&sd->watchdog, kp_systemd_on_watchdog);
    sd->watchdog.data = sd;
    wd = kp_systemd_watchdog_usec();
    if (wd) {
        double every = (double)wd / 2e6;
        kp_systemd_notify(ctx, "WATCHDOG=1");
        ev_timer_set(&sd->watchdog, every, every);
        ev_timer_start(ctx->loop, &sd->watchdog);
        kp_info("systemd: watchdog every %.3f s", every);
    }
}

void kp_systemd_stop(struct kp_ctx *ctx)
{
    struct kp_systemd *sd = ctx->systemd;

    if (!sd) {
        return;
    }
    ev_timer_stop(ctx->loop, &sd->status);
    ev_timer_stop(ctx->loop, &sd->watchdog);
    free(sd);
    ctx->systemd = NULL;
}
