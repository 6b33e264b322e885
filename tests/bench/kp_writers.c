/*
 * kp_writers.c - the writing side of `make bench` for kproxyd: many
 * concurrent writers from one small process, so the writer is cheap and
 * its CPU is measured apart from kproxyd's.
 *
 *   kp_writers -s SOCKET -f FILE [-n LINES] [-l LOOPS] [-c CONNS] [-k KEYS]
 *              [-g] [-R]
 *   kp_writers -s SOCKET -f FILE -r RATE -d SECONDS [-g] [-R]
 *
 * FILE holds lines `TOPIC VALUE` (bench.py's input, kproxyd's `topic,value`
 * format with its default one-space separator). With -k KEYS every line is
 * written as `TOPIC k<i % KEYS> VALUE` instead (a listener with format
 * `topic,key,value`); the keyed copies are made before the clock starts.
 * -n LINES uses only the first LINES lines of FILE; -l LOOPS makes each
 * connection write its share LOOPS times over (a longer run from the same
 * file, for profiles).
 *
 * Throughput mode (default): CONNS (1) connections are opened first, then
 * FILE is cut at line boundaries into CONNS nearly equal shares and each
 * connection writes its share, all at once from one epoll loop (a write is
 * as large as the socket takes); a connection whose share is written is
 * half-closed and its summary `delivered=N failed=F rejected=R` read. The
 * clock runs from the first write to the last summary.
 *
 * Rate mode (-r RATE -d SECONDS): the first RATE*SECONDS lines are written
 * at RATE per second in bursts of RATE/1000 lines every millisecond (a
 * timerfd), each burst in one write() on its own connection (taken from a
 * pool opened beforehand, so connect/accept are not timed) which is then
 * half-closed; a line's latency is the time from its burst's write to the
 * first line read back (the summary: exact for the burst's last
 * acknowledged line, an upper bound for the others). The same pacing as
 * rdk_bench -r.
 *
 * -R (receipts, for a listener with `receipts: "each"`): kproxyd writes
 * `ok N PARTITION OFFSET`, `failed N REASON` or `rejected N REASON` for
 * every message before the summary. They are read as they come (a writer
 * that does not read them is not read from), counted, and in rate mode
 * each message's latency is the time to its own receipt.
 *
 * -g (gate): after the connections are open (and keyed copies made),
 * print `READY` on stdout and wait for a line on stdin before the first
 * write, so bench.py samples kproxyd's and the mock's CPU at the start.
 *
 * Output: one JSON object on stdout, e.g.
 *   {"mode":"throughput","connections":100,"messages":1000000,
 *    "bytes":106000000,"delivered":1000000,"failed":0,"rejected":0,
 *    "receipts":0,"elapsed_s":0.41,"write_s":0.30,"cpu_user_s":0.01,
 *    "cpu_sys_s":0.12,"maxrss_kb":110000}
 * (rate mode adds "lat_p50_ms", "lat_p99_ms", "lat_max_ms"). CPU is
 * getrusage(RUSAGE_SELF) over the timed part. Exit 0 when every summary
 * arrived (bench.py judges the counts), 1 on a usage, setup or I/O error
 * (a connection closed without a summary, nothing heard for 300 s).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define IDLE_TIMEOUT_MS 300000
#define POOL_SIZE 64
/* A writer's read-back buffer: a summary line, or receipts in rate mode. */
#define IN_CAP 16384

struct counts {
    int64_t delivered;
    int64_t failed;
    int64_t rejected;
    int64_t receipts; /* ok/failed/rejected receipt lines read */
};

struct conn {
    int fd;
    const char *out;   /* borrowed: next byte to write (map or keyed copy) */
    size_t left;       /* bytes of its share not yet written */
    const char *share; /* borrowed: its share, for -l's next round */
    size_t share_len;
    int loops_left;    /* rounds of its share still to write after this */
    bool wr_closed;    /* share written and half-closed */
    char *keyed;       /* owned: keyed copy of its share, or NULL */
    char in[IN_CAP];   /* bytes read back, up to the last complete line */
    size_t in_len;
    bool have_summary;
    bool done;
    struct counts c;
    /* Rate mode: the burst's write time and its first message number. */
    int64_t sent_ns;
    size_t first_msg;
    size_t burst_lines;
};

struct opts {
    const char *sock;
    const char *file;
    size_t lines; /* -n: the first lines of FILE only; 0 = all */
    int loops;    /* -l: each share written this many times */
    int conns;
    int keys;
    bool gate;
    bool receipts;
    double rate;
    double seconds;
};

struct input {
    const char *data; /* borrowed from the mapping */
    size_t len;
    size_t lines;
};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double tv_s(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static void die(const char *what)
{
    fprintf(stderr, "kp_writers: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void fail(const char *msg)
{
    fprintf(stderr, "kp_writers: %s\n", msg);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p) {
        fail("out of memory");
    }
    return p;
}

/* Peak RSS (kB) of this process image: VmHWM. Not ru_maxrss, which Linux
 * carries over exec from the forking parent's size (bench.py's Python,
 * a few hundred MB after it generated an input file). */
static long peak_rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");

    if (!f) {
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "VmHWM:", 6)) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: kp_writers -s SOCKET -f FILE [-n LINES] [-l LOOPS] "
            "[-c CONNS] [-k KEYS] [-g] [-R]\n"
            "       kp_writers -s SOCKET -f FILE -r RATE -d SECONDS [-g] "
            "[-R]\n");
    exit(1);
}

/* 1000 writers need more descriptors than the usual soft limit of 1024. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int open_conn(const char *path, bool block)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC |
                                 (block ? 0 : SOCK_NONBLOCK), 0);

    if (fd < 0) {
        die("socket");
    }
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fail("socket path too long");
    }
    strcpy(sa.sun_path, path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (!block && (errno == EAGAIN || errno == EINPROGRESS)) {
            close(fd);
            return -1; /* backlog full: the caller tries again later */
        }
        die("connect");
    }
    if (block && fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
        die("fcntl");
    }
    return fd;
}

/* Maps FILE; its lines are counted (a last line without '\n' counts). */
static size_t prefix_lines(const char *data, size_t len, size_t n);

static struct input map_input(const char *file, size_t lines)
{
    struct input in = {0};
    struct stat st;
    int fd = open(file, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) < 0) {
        die(file);
    }
    if (st.st_size == 0) {
        fail("empty input file");
    }
    in.len = (size_t)st.st_size;
    in.data = mmap(NULL, in.len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd,
                   0);
    if (in.data == MAP_FAILED) {
        die("mmap");
    }
    close(fd);
    if (lines > 0) {
        in.len = prefix_lines(in.data, in.len, lines);
    }
    for (const char *p = in.data, *end = in.data + in.len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));

        in.lines++;
        p = nl ? nl + 1 : end;
    }
    return in;
}

/* The end of the first n lines of data (after their '\n'). */
static size_t prefix_lines(const char *data, size_t len, size_t n)
{
    size_t off = 0;

    while (n-- > 0 && off < len) {
        const char *nl = memchr(data + off, '\n', len - off);

        off = nl ? (size_t)(nl - data) + 1 : len;
    }
    return off;
}

/* A copy of data (whole lines) with a key inserted after each topic:
 * `TOPIC VALUE` -> `TOPIC k<seq % keys> VALUE`. *seq counts lines. */
static char *make_keyed(const char *data, size_t len, int keys,
                        size_t *seq, size_t *out_len)
{
    size_t cap = len + len / 8 + 4096, n = 0;
    char *buf = xmalloc(cap);

    for (const char *p = data, *end = data + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *sp = memchr(p, ' ', (size_t)(le - p));
        size_t tlen = sp ? (size_t)(sp - p) : (size_t)(le - p);

        if (n + (size_t)(le - p) + 32 > cap) {
            cap = cap * 2 + (size_t)(le - p) + 32;
            buf = realloc(buf, cap);
            if (!buf) {
                fail("out of memory");
            }
        }
        memcpy(buf + n, p, tlen);
        n += tlen;
        n += (size_t)sprintf(buf + n, " k%zu", (*seq)++ % (size_t)keys);
        memcpy(buf + n, p + tlen, (size_t)(le - p) - tlen);
        n += (size_t)(le - p) - tlen;
        buf[n++] = '\n';
        p = nl ? nl + 1 : end;
    }
    *out_len = n;
    return buf;
}

/* The number of a receipt line ("ok N ...", "failed N ...", "rejected N
 * ..."), or 0 when line is not one: counted without sscanf, which would
 * cost the writer more than kproxyd spends on the receipt. */
static unsigned long long receipt_number(const char *line, size_t len)
{
    static const char *const words[] = {"ok ", "failed ", "rejected "};
    unsigned long long n = 0;

    for (size_t w = 0; w < 3; w++) {
        size_t wl = strlen(words[w]);
        if (len > wl && memcmp(line, words[w], wl) == 0) {
            for (size_t i = wl; i < len && line[i] >= '0' && line[i] <= '9';
                 i++) {
                n = n * 10 + (unsigned)(line[i] - '0');
            }
            return n;
        }
    }
    return 0;
}

/* Parses one complete line read back: a receipt or the summary. */
static void on_line(struct conn *c, const char *line, size_t len,
                    int64_t *lat_ns, int64_t now)
{
    char tmp[256];
    unsigned long long rn = receipt_number(line, len);

    if (rn) {
        c->c.receipts++;
        if (lat_ns && rn <= c->burst_lines) {
            lat_ns[c->first_msg + rn - 1] = now - c->sent_ns;
        }
        return;
    }

    if (len >= sizeof(tmp)) {
        len = sizeof(tmp) - 1;
    }
    memcpy(tmp, line, len);
    tmp[len] = '\0';
    if (!strncmp(tmp, "delivered=", 10)) {
        long long d, f, r;

        if (sscanf(tmp, "delivered=%lld failed=%lld rejected=%lld", &d, &f,
                   &r) != 3) {
            fprintf(stderr, "kp_writers: bad summary: %s\n", tmp);
            exit(1);
        }
        c->c.delivered = d;
        c->c.failed = f;
        c->c.rejected = r;
        c->have_summary = true;
        return;
    }
    unsigned long long n;
    char word[16];

    if (sscanf(tmp, "%15s %llu", word, &n) != 2 ||
        (strcmp(word, "ok") && strcmp(word, "failed") &&
         strcmp(word, "rejected"))) {
        fprintf(stderr, "kp_writers: unexpected line: %s\n", tmp);
        exit(1);
    }
    c->c.receipts++;
    /* Receipt numbers count from 1 on each connection. */
    if (lat_ns && n >= 1 && n <= c->burst_lines) {
        lat_ns[c->first_msg + n - 1] = now - c->sent_ns;
    }
}

/* Reads what is there. Returns true at EOF. *first_ns is set when the
 * first complete line arrives (rate mode without receipts). */
static bool read_back(struct conn *c, int64_t *lat_ns, int64_t *first_ns)
{
    for (;;) {
        ssize_t r = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);

        if (r == 0) {
            return true;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return false;
            }
            die("read");
        }
        int64_t now = now_ns();

        c->in_len += (size_t)r;
        char *start = c->in, *nl;

        while ((nl = memchr(start, '\n',
                            c->in_len - (size_t)(start - c->in)))) {
            if (first_ns && !*first_ns) {
                *first_ns = now;
            }
            on_line(c, start, (size_t)(nl - start), lat_ns, now);
            start = nl + 1;
        }
        c->in_len -= (size_t)(start - c->in);
        memmove(c->in, start, c->in_len);
        if (c->in_len == IN_CAP) {
            fail("line read back too long");
        }
    }
}

static void ep_ctl(int ep, int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};

    if (epoll_ctl(ep, op, fd, &ev) < 0) {
        die("epoll_ctl");
    }
}

/* Writes what the socket takes; half-closes when the share is out.
 * Returns true when it did. */
static bool write_some(struct conn *c)
{
    while (c->left > 0 || c->loops_left > 0) {
        if (c->left == 0) {
            c->out = c->share;
            c->left = c->share_len;
            c->loops_left--;
        }
        ssize_t w = write(c->fd, c->out, c->left);

        if (w < 0) {
            if (errno == EAGAIN) {
                return false;
            }
            if (errno == EINTR) {
                continue;
            }
            die("write");
        }
        c->out += w;
        c->left -= (size_t)w;
    }
    if (shutdown(c->fd, SHUT_WR) < 0) {
        die("shutdown");
    }
    c->wr_closed = true;
    return true;
}

static void wait_gate(bool gate)
{
    char line[64];

    if (!gate) {
        return;
    }
    printf("READY\n");
    fflush(stdout);
    if (!fgets(line, sizeof(line), stdin)) {
        fail("no go line on stdin");
    }
}

/* Cuts the input into n shares at line boundaries, keyed if asked. */
static struct conn *make_shares(const struct opts *o, const struct input *in)
{
    struct conn *cs = calloc((size_t)o->conns, sizeof(*cs));
    size_t start = 0, seq = 0;

    if (!cs) {
        fail("out of memory");
    }
    for (int i = 0; i < o->conns; i++) {
        size_t cut = in->len * (size_t)(i + 1) / (size_t)o->conns;

        if (i + 1 < o->conns && cut > start) {
            const char *nl = memchr(in->data + cut - 1, '\n', in->len - cut
                                    + 1);

            cut = nl ? (size_t)(nl - in->data) + 1 : in->len;
        } else if (i + 1 == o->conns) {
            cut = in->len;
        } else {
            cut = start;
        }
        cs[i].out = in->data + start;
        cs[i].left = cut - start;
        if (o->keys > 0) {
            cs[i].keyed = make_keyed(cs[i].out, cs[i].left, o->keys, &seq,
                                     &cs[i].left);
            cs[i].out = cs[i].keyed;
        }
        cs[i].share = cs[i].out;
        cs[i].share_len = cs[i].left;
        cs[i].loops_left = o->loops - 1;
        start = cut;
    }
    return cs;
}

struct result {
    struct counts c;
    int64_t t0, t_written, t_end;
    struct rusage ru0, ru1;
    int64_t *lat_ns; /* owned: rate mode, by message index */
    size_t messages;
    size_t bytes;
};

/* One event of the throughput loop. Returns 1 when c finished. */
static int on_event(int ep, struct conn *c, uint32_t events, bool receipts,
                    int *writing, int64_t *t_written)
{
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
        (receipts || c->wr_closed)) {
        if (read_back(c, NULL, NULL)) {
            if (!c->have_summary) {
                fail("a connection closed without a summary");
            }
            ep_ctl(ep, EPOLL_CTL_DEL, c->fd, 0, NULL);
            close(c->fd);
            c->done = true;
            return 1;
        }
    }
    if (!c->wr_closed && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        if (write_some(c)) {
            ep_ctl(ep, EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
            if (--*writing == 0) {
                *t_written = now_ns();
            }
        }
    }
    return 0;
}

static void run_throughput(const struct opts *o, const struct input *in,
                           struct result *res)
{
    struct conn *cs = make_shares(o, in);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int left = o->conns, writing = 0;
    struct epoll_event evs[MAX_EVENTS];

    if (ep < 0) {
        die("epoll_create1");
    }
    for (int i = 0; i < o->conns; i++) {
        cs[i].fd = open_conn(o->sock, true);
    }
    wait_gate(o->gate);
    getrusage(RUSAGE_SELF, &res->ru0);
    res->t0 = now_ns();
    for (int i = 0; i < o->conns; i++) {
        writing++;
        ep_ctl(ep, EPOLL_CTL_ADD, cs[i].fd,
               EPOLLOUT | (o->receipts ? EPOLLIN : 0), &cs[i]);
    }
    while (left > 0) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, IDLE_TIMEOUT_MS);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fail(n < 0 ? "epoll_wait failed" : "nothing heard for 300 s");
        }
        for (int i = 0; i < n; i++) {
            left -= on_event(ep, evs[i].data.ptr, evs[i].events, o->receipts,
                             &writing, &res->t_written);
        }
    }
    res->t_end = now_ns();
    getrusage(RUSAGE_SELF, &res->ru1);
    for (int i = 0; i < o->conns; i++) {
        res->c.delivered += cs[i].c.delivered;
        res->c.failed += cs[i].c.failed;
        res->c.rejected += cs[i].c.rejected;
        res->c.receipts += cs[i].c.receipts;
        free(cs[i].keyed);
    }
    res->messages = in->lines * (size_t)o->loops;
    res->bytes = in->len * (size_t)o->loops;
    free(cs);
    close(ep);
}

/* Rate mode state. */
struct pacer {
    const struct opts *o;
    int ep;
    int pool[POOL_SIZE];
    int pool_len;
    const char *data;
    size_t len, off;     /* the lines to send; next unsent byte */
    size_t total, sent;  /* lines */
    size_t pending;      /* bursts without their EOF yet */
    double due;
    int64_t *lat_ns;
    struct counts c;
};

static void pool_fill(struct pacer *p, bool block)
{
    while (p->pool_len < POOL_SIZE) {
        int fd = open_conn(p->o->sock, block);

        if (fd < 0) {
            return;
        }
        p->pool[p->pool_len++] = fd;
    }
}

/* Writes one burst of n lines on a pooled connection and half-closes. */
static void send_burst(struct pacer *p, size_t n)
{
    struct conn *c = calloc(1, sizeof(*c));
    size_t end = p->off + prefix_lines(p->data + p->off, p->len - p->off, n);

    if (!c) {
        fail("out of memory");
    }
    if (p->pool_len == 0) {
        pool_fill(p, true); /* fell behind: connect now, it is timed */
    }
    c->fd = p->pool[--p->pool_len];
    c->out = p->data + p->off;
    c->left = end - p->off;
    c->first_msg = p->sent;
    c->burst_lines = n;
    c->sent_ns = now_ns();
    while (!write_some(c)) {
        /* A full socket buffer for a 1 kB burst: kproxyd is not reading;
         * wait for it rather than spin. */
        struct timespec ts = {0, 100000};

        nanosleep(&ts, NULL);
    }
    ep_ctl(p->ep, EPOLL_CTL_ADD, c->fd, EPOLLIN, c);
    p->off = end;
    p->sent += n;
    p->pending++;
    pool_fill(p, false);
}

static void on_burst_read(struct pacer *p, struct conn *c)
{
    int64_t first = 0;

    if (!read_back(c, p->o->receipts ? p->lat_ns : NULL,
                   p->o->receipts ? NULL : &first)) {
        /* Without receipts the first line is the summary: the burst's
         * acknowledgement; the close that follows is not timed. */
        if (first) {
            for (size_t i = 0; i < c->burst_lines; i++) {
                p->lat_ns[c->first_msg + i] = first - c->sent_ns;
            }
        }
        return;
    }
    if (!c->have_summary) {
        fail("a burst's connection closed without a summary");
    }
    if (first) {
        for (size_t i = 0; i < c->burst_lines; i++) {
            p->lat_ns[c->first_msg + i] = first - c->sent_ns;
        }
    }
    p->c.delivered += c->c.delivered;
    p->c.failed += c->c.failed;
    p->c.rejected += c->c.rejected;
    p->c.receipts += c->c.receipts;
    ep_ctl(p->ep, EPOLL_CTL_DEL, c->fd, 0, NULL);
    close(c->fd);
    free(c);
    p->pending--;
}

static int make_ticker(int ep)
{
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    struct itimerspec its = {.it_interval = {0, 1000000},
                             .it_value = {0, 1000000}};

    if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) < 0) {
        die("timerfd");
    }
    ep_ctl(ep, EPOLL_CTL_ADD, tfd, EPOLLIN, NULL);
    return tfd;
}

/* One millisecond tick (or several, if the loop fell behind): the lines
 * due by now go out in one burst. */
static void on_tick(struct pacer *p, int tfd)
{
    uint64_t ticks = 0;

    if (read(tfd, &ticks, sizeof(ticks)) != sizeof(ticks)) {
        return;
    }
    p->due += p->o->rate / 1000.0 * (double)ticks;
    size_t want = p->due >= (double)p->total ? p->total : (size_t)p->due;

    if (want > p->sent) {
        send_burst(p, want - p->sent);
    }
}

static void run_rate(const struct opts *o, const struct input *in,
                     struct result *res)
{
    struct pacer p = {.o = o, .data = in->data};
    struct epoll_event evs[MAX_EVENTS];

    p.total = (size_t)(o->rate * o->seconds + 0.5);
    if (p.total > in->lines) {
        p.total = in->lines;
    }
    p.len = prefix_lines(in->data, in->len, p.total);
    p.lat_ns = calloc(p.total ? p.total : 1, sizeof(int64_t));
    p.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!p.lat_ns || p.ep < 0) {
        fail("setup failed");
    }
    pool_fill(&p, true);
    wait_gate(o->gate);
    getrusage(RUSAGE_SELF, &res->ru0);
    res->t0 = now_ns();
    int tfd = make_ticker(p.ep);

    while (p.sent < p.total || p.pending > 0) {
        int n = epoll_wait(p.ep, evs, MAX_EVENTS, IDLE_TIMEOUT_MS);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fail(n < 0 ? "epoll_wait failed" : "nothing heard for 300 s");
        }
        for (int i = 0; i < n; i++) {
            if (!evs[i].data.ptr) {
                on_tick(&p, tfd);
            } else {
                on_burst_read(&p, evs[i].data.ptr);
            }
        }
        if (p.sent == p.total && tfd >= 0) {
            res->t_written = now_ns();
            close(tfd); /* closing removes it from the epoll set */
            tfd = -1;
        }
    }
    res->t_end = now_ns();
    getrusage(RUSAGE_SELF, &res->ru1);
    for (int i = 0; i < p.pool_len; i++) {
        close(p.pool[i]);
    }
    close(p.ep);
    res->c = p.c;
    res->lat_ns = p.lat_ns;
    res->messages = p.total;
    res->bytes = p.len;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

static void print_latency(struct result *res)
{
    size_t n = 0;

    /* Only acknowledged messages have a latency (0 = no receipt/summary). */
    for (size_t i = 0; i < res->messages; i++) {
        if (res->lat_ns[i] > 0) {
            res->lat_ns[n++] = res->lat_ns[i];
        }
    }
    if (n == 0) {
        return;
    }
    qsort(res->lat_ns, n, sizeof(int64_t), cmp_i64);
    printf(",\"lat_count\":%zu,\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,"
           "\"lat_max_ms\":%.3f", n,
           (double)res->lat_ns[(n - 1) * 50 / 100] / 1e6,
           (double)res->lat_ns[(n - 1) * 99 / 100] / 1e6,
           (double)res->lat_ns[n - 1] / 1e6);
}

static void print_result(const struct opts *o, struct result *res)
{
    printf("{\"mode\":\"%s\",\"connections\":%d,\"messages\":%zu,"
           "\"bytes\":%zu,\"delivered\":%" PRId64 ",\"failed\":%" PRId64
           ",\"rejected\":%" PRId64 ",\"receipts\":%" PRId64
           ",\"elapsed_s\":%.6f,\"write_s\":%.6f,\"cpu_user_s\":%.6f,"
           "\"cpu_sys_s\":%.6f,\"maxrss_kb\":%ld",
           o->rate > 0 ? "rate" : "throughput", o->conns, res->messages,
           res->bytes, res->c.delivered, res->c.failed, res->c.rejected,
           res->c.receipts, (double)(res->t_end - res->t0) / 1e9,
           (double)(res->t_written - res->t0) / 1e9,
           tv_s(&res->ru1.ru_utime) - tv_s(&res->ru0.ru_utime),
           tv_s(&res->ru1.ru_stime) - tv_s(&res->ru0.ru_stime),
           peak_rss_kb());
    if (res->lat_ns) {
        print_latency(res);
    }
    printf("}\n");
    fflush(stdout);
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
    int opt;

    *o = (struct opts){.conns = 1, .loops = 1};
    while ((opt = getopt(argc, argv, "s:f:n:l:c:k:r:d:gR")) != -1) {
        switch (opt) {
        case 's':
            o->sock = optarg;
            break;
        case 'f':
            o->file = optarg;
            break;
        case 'n':
            o->lines = strtoull(optarg, NULL, 10);
            break;
        case 'l':
            o->loops = atoi(optarg);
            break;
        case 'c':
            o->conns = atoi(optarg);
            break;
        case 'k':
            o->keys = atoi(optarg);
            break;
        case 'r':
            o->rate = atof(optarg);
            break;
        case 'd':
            o->seconds = atof(optarg);
            break;
        case 'g':
            o->gate = true;
            break;
        case 'R':
            o->receipts = true;
            break;
        default:
            usage();
        }
    }
    if (!o->sock || !o->file || o->conns < 1 || o->keys < 0 || o->loops < 1 ||
        (o->rate > 0) != (o->seconds > 0) ||
        (o->rate > 0 && (o->keys || o->loops > 1))) {
        usage();
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    struct result res = {0};

    parse_opts(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();

    struct input in = map_input(o.file, o.lines);

    if (o.rate > 0) {
        run_rate(&o, &in, &res);
    } else {
        if ((size_t)o.conns > in.lines) {
            fail("more connections than lines");
        }
        run_throughput(&o, &in, &res);
    }
    print_result(&o, &res);
    free(res.lat_ns);
    return 0;
}
