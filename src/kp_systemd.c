/*
 * kp_systemd.c - the notify protocol: one datagram per message to
 * $NOTIFY_SOCKET. Sent from the loop itself, so a stalled loop stops the
 * watchdog pings.
 */
#include "kp_systemd.h"

#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kp_ctx.h"

void kp_systemd_notify(struct kp_ctx *ctx, const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char buf[512];
    size_t plen;
    int fd;
    (void)ctx;

    if (!path || !path[0] || (path[0] != '/' && path[0] != '@')) {
        return;
    }
    plen = strlen(path);
    if (plen >= sizeof(sa.sun_path)) {
        return;
    }
    memcpy(sa.sun_path, path, plen);
    if (path[0] == '@') {
        sa.sun_path[0] = '\0'; /* abstract namespace */
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
    sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen));
    close(fd);
}

void kp_systemd_tick(struct kp_ctx *ctx)
{
    char status[256];

    if (!getenv("NOTIFY_SOCKET")) {
        return;
    }
    if (getenv("WATCHDOG_USEC")) {
        kp_systemd_notify(ctx, "WATCHDOG=1");
    }
    snprintf(status, sizeof(status),
             "STATUS=received %llu, delivered %llu, failed %llu, rejected "
             "%llu, queued %llu, clients %u%s",
             (unsigned long long)ctx->n.received,
             (unsigned long long)ctx->n.delivered,
             (unsigned long long)ctx->n.failed,
             (unsigned long long)ctx->n.rejected,
             (unsigned long long)ctx->queued_msgs, ctx->client_cnt,
             ctx->backpressure ? ", backpressure" : "");
    kp_systemd_notify(ctx, status);
}
