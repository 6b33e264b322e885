/*
 * kp_relay.c - the floor under `make bench`'s large-message rows: what a
 * daemon that only moves the bytes pays on this machine, with no Kafka
 * work at all.
 *
 *   kp_relay -s SOCKET
 *
 * It listens on the UNIX socket SOCKET like kproxyd, and forks a sink that
 * accepts one TCP connection on loopback and reads and discards everything
 * (the part of a broker that receives). Each client connection is served
 * in turn, to its end: read() into a 256 KiB buffer (kproxyd's full read),
 * count the newlines (the least framing any line reader does) and write()
 * the same bytes to the sink. At the client's EOF it answers kproxyd's
 * summary line `delivered=N failed=0 rejected=0`, N being the lines it
 * relayed, so kp_writers drives it unchanged.
 *
 * The relay's CPU per message is the kernel's price of a UNIX-socket read
 * plus a loopback TCP send of those bytes (on loopback the receiver's
 * TCP processing runs in the sender), plus one memchr pass: bench.py sets
 * it beside kproxyd's and the CPU that 2x librdkafka would leave kproxyd.
 *
 * On stdout, once listening: `READY RELAY_PID SINK_PID`. It runs until
 * killed; the sink exits when the relay's connection closes.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF_CAP (256 * 1024)

static void die(const char *what)
{
    fprintf(stderr, "kp_relay: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* The receiving end: one connection, everything read and dropped. */
static void sink_run(int lfd)
{
    static char buf[BUF_CAP];
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
        die("sink accept");
    }
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0) {
            exit(0);
        }
        if (n < 0 && errno != EINTR) {
            die("sink read");
        }
    }
}

/* Forks the sink; returns the relay's connection to it. */
static int sink_start(pid_t *pid)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) < 0) {
        die("sink listen");
    }
    *pid = fork();
    if (*pid < 0) {
        die("fork");
    }
    if (*pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        sink_run(lfd);
    }
    close(lfd);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        die("connect to the sink");
    }
    return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

static int64_t count_lines(const char *p, size_t n)
{
    int64_t lines = 0;
    const char *end = p + n;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p++;
    }
    return lines;
}

/* One client to its EOF, then its summary. */
static void relay_client(int cfd, int out)
{
    static char buf[BUF_CAP];
    int64_t lines = 0;
    for (;;) {
        ssize_t n = read(cfd, buf, sizeof buf);
        if (n == 0) {
            break;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, "kp_relay: client read: %s\n", strerror(errno));
            close(cfd);
            return;
        }
        lines += count_lines(buf, (size_t)n);
        write_all(out, buf, (size_t)n);
    }
    char summary[80];
    int len = snprintf(summary, sizeof summary,
                       "delivered=%lld failed=0 rejected=0\n",
                       (long long)lines);
    if (write(cfd, summary, (size_t)len) != len) {
        fprintf(stderr, "kp_relay: summary not written\n");
    }
    close(cfd);
}

static int listen_unix(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) {
        fprintf(stderr, "kp_relay: socket path too long\n");
        exit(2);
    }
    strcpy(a.sun_path, path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(fd, 1024) < 0) {
        die(path);
    }
    return fd;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "s:")) != -1) {
        if (opt == 's') {
            path = optarg;
        } else {
            path = NULL;
            break;
        }
    }
    if (!path || optind != argc) {
        fprintf(stderr, "usage: kp_relay -s SOCKET\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    pid_t sink;
    int out = sink_start(&sink);
    int lfd = listen_unix(path);
    printf("READY %d %d\n", (int)getpid(), (int)sink);
    fflush(stdout);
    for (;;) {
        int cfd = accept(lfd, NULL, NULL);
        if (cfd < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("accept");
        }
        relay_client(cfd, out);
    }
}
