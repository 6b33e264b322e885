/*
 * check_spool.c - the disk spool's storage layer: append/ack/replay round
 * trips across restarts with out-of-order acks, torn and corrupt segments
 * and journals, reclaim, the max_bytes budget, file isolation checks,
 * write errors (EFBIG through RLIMIT_FSIZE; ENOSPC on a tiny tmpfs where
 * the test may mount one), the fdatasync thread reporting through a
 * running loop, cursors following the tail, and SIGKILL at random moments.
 * Random tests print their seed; KP_SEED=N runs them with that one.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kp_log.h"
#include "kp_spool.h"
#include "kp_spool_seg.h"

#define MIB (1024 * 1024)

/* ck_assert reports every success to the parent through a pipe (fork
 * mode); per-record checks use this, which costs nothing until it fails. */
#define expect(cond)                                                           \
    do {                                                                       \
        if (!(cond)) {                                                         \
            ck_abort_msg("line %d: %s", __LINE__, #cond);                      \
        }                                                                      \
    } while (0)
#define expectf(cond, ...)                                                     \
    do {                                                                       \
        if (!(cond)) {                                                         \
            ck_abort_msg(__VA_ARGS__);                                         \
        }                                                                      \
    } while (0)
#define SEG1 "00000000000000000001.seg"
#define ACK1 "00000000000000000001.ack"

/* ---- deterministic records: the content of seq N is a function of N ---- */

struct trec {
    struct kp_spool_rec r;
    char topic[24];
    uint8_t key[24];
    uint8_t value[300];
    char hval[2][16];
    struct kp_header h[2];
    struct kp_header extra[1];
};

static void trec_make(struct trec *t, uint64_t seq)
{
    memset(t, 0, sizeof(*t));
    struct kp_msg *m = &t->r.msg;
    m->topic = t->topic;
    m->topic_len = (size_t)snprintf(t->topic, sizeof(t->topic), "topic.%d",
                                    (int)(seq % 3));
    if (seq % 5 == 2) {
        m->key = t->key; /* empty, not null */
    } else if (seq % 5 != 1) {
        m->key_len =
            (size_t)snprintf((char *)t->key, sizeof(t->key), "k%" PRIu64, seq);
        m->key = t->key;
    }
    if (seq % 11 != 3) {
        m->value_len = (size_t)((seq * 37) % 257);
        for (size_t i = 0; i < m->value_len; i++) {
            t->value[i] = (uint8_t)(seq * 131 + i); /* NUL and \n too */
        }
        m->value = t->value;
    }
    m->partition = seq % 4 == 0 ? (int32_t)(seq % 6) : -1;
    m->timestamp = 1700000000000 + (int64_t)seq;
    m->header_cnt = (size_t)(seq % 3);
    for (size_t i = 0; i < m->header_cnt; i++) {
        t->h[i].name = (const uint8_t *)(i ? "h1" : "h0");
        t->h[i].name_len = 2;
        if ((seq + i) % 2) {
            t->h[i].value_len = (size_t)snprintf(t->hval[i], sizeof(t->hval[i]),
                                                 "v%" PRIu64, seq);
            t->h[i].value = (const uint8_t *)t->hval[i];
        }
    }
    m->headers = t->h;
    if (seq % 2) {
        t->extra[0] = (struct kp_header){(const uint8_t *)"peer.uid", 8,
                                         (const uint8_t *)"1000", 4};
        t->r.extra = t->extra;
        t->r.extra_cnt = 1;
    }
    t->r.tag = seq % 1000;
}

static bool bytes_eq(const void *a, size_t an, const void *b, size_t bn)
{
    if (!a || !b) {
        return !a && !b;
    }
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static void trec_check(const struct kp_spool_view *v, uint64_t seq)
{
    struct trec t;
    trec_make(&t, seq);
    const struct kp_msg *m = &t.r.msg;
    expect((v->seq) == (seq));
    expect((v->tag) == (t.r.tag));
    expect(bytes_eq(v->msg.topic, v->msg.topic_len, m->topic, m->topic_len));
    expectf(bytes_eq(v->msg.key, v->msg.key_len, m->key, m->key_len),
            "key of %" PRIu64, seq);
    expectf(bytes_eq(v->msg.value, v->msg.value_len, m->value, m->value_len),
            "value of %" PRIu64, seq);
    expect((v->msg.partition) == (m->partition));
    expect((v->msg.timestamp) == (m->timestamp));
    expect((v->msg.header_cnt) == (m->header_cnt + t.r.extra_cnt));
    for (size_t i = 0; i < v->msg.header_cnt; i++) {
        const struct kp_header *want =
            i < m->header_cnt ? &m->headers[i] : &t.r.extra[i - m->header_cnt];
        const struct kp_header *got = &v->msg.headers[i];
        expect(bytes_eq(got->name, got->name_len, want->name, want->name_len));
        expect(
            bytes_eq(got->value, got->value_len, want->value, want->value_len));
    }
}

/* ---- files and directories ---- */

static unsigned seed_get(const char *test)
{
    const char *env = getenv("KP_SEED");
    unsigned seed = env ? (unsigned)strtoul(env, NULL, 10)
                        : (unsigned)(kp_mono_us() ^ (getpid() << 16));
    printf("%s: seed %u (KP_SEED=%u reproduces)\n", test, seed, seed);
    fflush(stdout);
    return seed;
}

static char *tmp_root(void)
{
    char *root = kp_strdup("/tmp/kpspool.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    return root;
}

static char *path_join(const char *a, const char *b)
{
    char *p = kp_malloc(strlen(a) + strlen(b) + 2);
    sprintf(p, "%s/%s", a, b);
    return p;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    remove(p);
    return 0;
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Removes every file of a directory (not the directory). */
static void dir_clear(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            char *p = path_join(dir, e->d_name);
            unlink(p);
            free(p);
        }
    }
    closedir(d);
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name), sl = strlen(suffix);
        if (e->d_name[0] != '.' && l >= sl &&
            strcmp(e->d_name + l - sl, suffix) == 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static uint8_t *file_read(const char *dir, const char *name, size_t *len)
{
    char *p = path_join(dir, name);
    int fd = open(p, O_RDONLY);
    struct stat st;
    ck_assert_msg(fd >= 0, "%s: %s", p, strerror(errno));
    ck_assert_int_eq(fstat(fd, &st), 0);
    uint8_t *b = kp_malloc((size_t)st.st_size + 1);
    ck_assert_int_eq(read(fd, b, (size_t)st.st_size), st.st_size);
    close(fd);
    free(p);
    *len = (size_t)st.st_size;
    return b;
}

static void file_write(const char *dir, const char *name, const uint8_t *b,
                       size_t len)
{
    char *p = path_join(dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_msg(fd >= 0, "%s: %s", p, strerror(errno));
    ck_assert_int_eq(write(fd, b, len), (ssize_t)len);
    close(fd);
    free(p);
}

/* Offsets of the frames of a segment image: offs[0..n] (offs[n] = end). */
static size_t frame_offsets(const uint8_t *p, size_t len, size_t *offs,
                            size_t max)
{
    size_t n = 0, off = KP_SPOOL_HDR_LEN;
    while (off + KP_SPOOL_FRAME_HDR <= len && n < max) {
        offs[n++] = off;
        off += KP_SPOOL_FRAME_HDR + (((size_t)p[off + 4] << 24) |
                                     ((size_t)p[off + 5] << 16) |
                                     ((size_t)p[off + 6] << 8) | p[off + 7]);
    }
    offs[n] = off;
    ck_assert_uint_eq(off, len);
    return n;
}

/* ---- spool helpers ---- */

static struct kp_spool_opts opts_make(int64_t max_bytes, int64_t seg_bytes)
{
    struct kp_spool_opts o;
    memset(&o, 0, sizeof(o));
    o.max_bytes = max_bytes;
    o.segment_bytes = seg_bytes;
    o.fsync_ms = -1;
    return o;
}

static struct kp_spool *sp_open(const char *dir, const struct kp_spool_opts *o,
                                struct kp_spool_recovery *rep)
{
    char err[256] = "";
    struct kp_spool *s = kp_spool_open(dir, o, rep, err, sizeof(err));
    ck_assert_msg(s != NULL, "open %s: %s", dir, err);
    return s;
}

/* Opening must fail, with `want` in the reason. */
static void sp_open_fails(const char *dir, const struct kp_spool_opts *o,
                          const char *want)
{
    char err[256] = "";
    struct kp_spool *s = kp_spool_open(dir, o, NULL, err, sizeof(err));
    ck_assert_msg(s == NULL, "open %s should fail (%s)", dir, want);
    ck_assert_msg(strstr(err, want) != NULL, "error \"%s\" lacks \"%s\"", err,
                  want);
}

static void sp_append(struct kp_spool *s, uint64_t want)
{
    struct trec t;
    uint64_t seq = 0;
    trec_make(&t, want);
    expect((kp_spool_next_seq(s)) == (want));
    expect(kp_spool_append(s, &t.r, &seq) == KP_OK);
    expect((seq) == (want));
}

/* Every record a fresh cursor yields, checked against its seq. */
static size_t sp_replay(struct kp_spool *s, uint64_t *out, size_t max)
{
    struct kp_spool_cursor *c = kp_spool_cursor_create(s, 0);
    struct kp_spool_view v;
    size_t n = 0;
    int rc;
    while ((rc = kp_spool_cursor_next(c, &v)) == KP_OK) {
        expect(n < max);
        trec_check(&v, v.seq);
        expect(n == 0 || v.seq > out[n - 1]);
        out[n++] = v.seq;
    }
    expect((rc) == (KP_AGAIN));
    kp_spool_cursor_destroy(c);
    return n;
}

/* The replay must be exactly the seqs in [1, upto) not marked acked. */
static void sp_expect(struct kp_spool *s, const bool *acked, uint64_t upto)
{
    uint64_t *got = kp_malloc((size_t)upto * sizeof(uint64_t) + 8);
    size_t n = sp_replay(s, got, (size_t)upto), j = 0;
    for (uint64_t seq = 1; seq < upto; seq++) {
        if (!acked[seq]) {
            expectf(j < n && got[j] == seq,
                    "seq %" PRIu64 " missing from the replay", seq);
            j++;
        }
    }
    expect((j) == (n));
    free(got);
}

static void shuffle(uint64_t *v, size_t n, unsigned *seed)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rand_r(seed) % i;
        uint64_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* ---- round trips ---- */

START_TEST(test_roundtrip)
{
    unsigned seed = seed_get("test_roundtrip");
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(64 * MIB, 0);
    struct kp_spool_recovery rep;
    struct kp_spool_stats st;
    enum { N = 3000 };
    bool *acked = kp_calloc(N + 2, sizeof(bool));
    uint64_t *order = kp_malloc(N * sizeof(uint64_t));
    size_t nack = 0;

    struct kp_spool *s = sp_open(dir, &o, &rep);
    ck_assert_uint_eq(rep.next_seq, 1);
    ck_assert_uint_eq(rep.backlog, 0);
    for (uint64_t seq = 1; seq <= N; seq++) {
        sp_append(s, seq);
        if ((seq * 2654435761u) % 3 != 0) {
            order[nack++] = seq;
        }
    }
    shuffle(order, nack, &seed); /* out-of-order acks */
    for (size_t i = 0; i < nack; i++) {
        expect(kp_spool_ack(s, order[i]) == KP_OK);
        acked[order[i]] = true;
    }
    expect(kp_spool_ack(s, order[0]) == KP_OK); /* repeated */
    ck_assert_int_eq(kp_spool_ack(s, N + 10), KP_ERROR);
    /* In the same run, buffered records included. */
    sp_expect(s, acked, N + 1);
    kp_spool_stats_get(s, &st);
    ck_assert_uint_eq(st.appended, N);
    ck_assert_uint_eq(st.acked, nack);
    ck_assert_uint_eq(st.backlog, N - nack);
    ck_assert_uint_eq(st.replayed, 0);
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);

    /* A restart replays only what was not acked, byte for byte. */
    s = sp_open(dir, &o, &rep);
    ck_assert_uint_eq(rep.backlog, N - nack);
    ck_assert_uint_eq(rep.records, N);
    ck_assert_uint_eq(rep.torn, 0);
    ck_assert_uint_eq(rep.next_seq, N + 1);
    uint64_t first = 1;
    while (acked[first]) {
        first++;
    }
    ck_assert_uint_eq(rep.first_seq, first);
    sp_expect(s, acked, N + 1);
    kp_spool_stats_get(s, &st);
    ck_assert_uint_eq(st.replayed, N - nack);
    ck_assert_uint_eq(kp_spool_start_seq(s), N + 1);
    for (uint64_t seq = 1; seq <= N; seq++) {
        expect(kp_spool_ack(s, seq) == KP_OK);
    }
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    /* Nothing left: no file left. */
    ck_assert_int_eq(count_files(dir, ""), 0);
    free(acked);
    free(order);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

START_TEST(test_restart_cycles)
{
    unsigned seed = seed_get("test_restart_cycles");
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(16 * MIB, 8192);
    struct kp_spool_recovery rep;
    enum { RUNS = 8, PER = 400 };
    bool *acked = kp_calloc(RUNS * PER + 2, sizeof(bool));
    uint64_t next = 1;

    for (int run = 0; run < RUNS; run++) {
        struct kp_spool *s = sp_open(dir, &o, &rep);
        ck_assert_uint_eq(rep.next_seq, next); /* monotonic across runs */
        ck_assert_uint_eq(rep.torn, 0);
        sp_expect(s, acked, next);
        for (int i = 0; i < PER; i++) {
            sp_append(s, next++);
        }
        /* Ack about 40% of what is outstanding, old and new, in any
         * order; flush only sometimes (close flushes). */
        for (uint64_t seq = 1; seq < next; seq++) {
            if (!acked[seq] && rand_r(&seed) % 5 < 2) {
                expect(kp_spool_ack(s, seq) == KP_OK);
                acked[seq] = true;
            }
        }
        if (run % 2) {
            ck_assert_int_eq(kp_spool_flush(s), KP_OK);
        }
        sp_expect(s, acked, next);
        ck_assert_int_eq(kp_spool_close(s), KP_OK);
    }
    free(acked);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* ---- damage ---- */

/* A spool of records 1..n in one segment, 3 and 5 acked; closed. */
static void build_segment(const char *dir, uint64_t n, bool acks)
{
    struct kp_spool_opts o = opts_make(64 * MIB, 0);
    struct kp_spool *s = sp_open(dir, &o, NULL);
    for (uint64_t seq = 1; seq <= n; seq++) {
        sp_append(s, seq);
    }
    if (acks) {
        kp_spool_ack(s, 3);
        kp_spool_ack(s, 5);
    }
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
}

START_TEST(test_torn_tail)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(64 * MIB, 0);
    struct kp_spool_recovery rep;
    size_t len, alen, offs[64];
    bool acked[64] = {false};
    enum { N = 40 };

    kp_log_set_level(KP_LOG_ERROR); /* one warning per cut otherwise */
    acked[3] = acked[5] = true;
    build_segment(dir, N, true);
    uint8_t *img = file_read(dir, SEG1, &len);
    uint8_t *aimg = file_read(dir, ACK1, &alen);
    ck_assert_uint_eq(frame_offsets(img, len, offs, 63), N);

    /* Every cut inside the last three records (and at the end). */
    for (size_t cut = offs[N - 3]; cut <= len; cut++) {
        dir_clear(dir);
        file_write(dir, SEG1, img, cut);
        file_write(dir, ACK1, aimg, alen);
        struct kp_spool *s = sp_open(dir, &o, &rep);
        uint64_t whole = 0;
        while (whole < N && offs[whole + 1] <= cut) {
            whole++;
        }
        bool boundary = cut == offs[whole];
        ck_assert_uint_eq(rep.torn, boundary ? 0 : 1);
        ck_assert_uint_eq(rep.torn_bytes, cut - offs[whole]);
        ck_assert_uint_eq(rep.next_seq, whole + 1);
        sp_expect(s, acked, whole + 1); /* the intact prefix, no garbage */
        if (cut == offs[N - 2] + 7) {
            /* Appending after a cut continues after the intact prefix. */
            sp_append(s, whole + 1);
            ck_assert_int_eq(kp_spool_close(s), KP_OK);
            s = sp_open(dir, &o, &rep);
            ck_assert_uint_eq(rep.torn, 0);
            sp_expect(s, acked, whole + 2);
        }
        ck_assert_int_eq(kp_spool_close(s), KP_OK);
    }
    free(img);
    free(aimg);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/*
 * One byte changed anywhere in the newest segment: the record holding it
 * and everything after it in that segment are cut (one cut), everything
 * before replays intact. After damage the following frames cannot be found
 * without scanning for frame-shaped bytes, which values may contain.
 */
START_TEST(test_flip_bytes)
{
    unsigned seed = seed_get("test_flip_bytes");
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(64 * MIB, 0);
    struct kp_spool_recovery rep;
    size_t len, offs[64];
    bool acked[64] = {false};
    enum { N = 40 };

    kp_log_set_level(KP_LOG_ERROR);
    build_segment(dir, N, false);
    uint8_t *img = file_read(dir, SEG1, &len);
    uint8_t *bad = kp_malloc(len);
    ck_assert_uint_eq(frame_offsets(img, len, offs, 63), N);
    for (int iter = 0; iter < 300; iter++) {
        size_t at = (size_t)rand_r(&seed) % len;
        memcpy(bad, img, len);
        bad[at] ^= (uint8_t)(1 + rand_r(&seed) % 255);
        dir_clear(dir);
        file_write(dir, SEG1, bad, len);
        struct kp_spool *s = sp_open(dir, &o, &rep);
        uint64_t intact = 0;
        while (intact < N && offs[intact + 1] <= at) {
            intact++;
        }
        if (at < KP_SPOOL_HDR_LEN) {
            intact = 0;
        }
        ck_assert_msg(rep.torn == 1, "byte %zu: torn %" PRIu64, at, rep.torn);
        ck_assert_uint_eq(rep.records, intact);
        sp_expect(s, acked, intact + 1);
        ck_assert_int_eq(kp_spool_close(s), KP_OK);
        /* A segment left with no record is removed. */
        ck_assert_int_eq(count_files(dir, ".seg"), intact ? 1 : 0);
    }
    free(img);
    free(bad);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* Replay after journal damage: every unacked record (no loss), plus
 * possibly acked ones (duplicates). Returns the duplicates. */
static uint64_t journal_case(const char *dir, const uint8_t *seg, size_t len,
                             const uint8_t *ack, size_t alen, const bool *acked,
                             uint64_t n)
{
    struct kp_spool_opts o = opts_make(64 * MIB, 0);
    uint64_t *got = kp_malloc((n + 1) * sizeof(uint64_t)), dups = 0;

    dir_clear(dir);
    file_write(dir, SEG1, seg, len);
    file_write(dir, ACK1, ack, alen);
    struct kp_spool *s = sp_open(dir, &o, NULL);
    size_t cnt = sp_replay(s, got, (size_t)n), j = 0;
    for (uint64_t seq = 1; seq <= n; seq++) {
        bool present = j < cnt && got[j] == seq;
        expectf(present || acked[seq], "seq %" PRIu64 " lost", seq);
        dups += present && acked[seq];
        j += present;
    }
    expect((j) == (cnt));
    expect((kp_spool_close(s)) == (KP_OK));
    free(got);
    return dups;
}

/*
 * A torn or corrupt journal never loses a record: at worst records that
 * were acked are sent again (duplicates). A journal of another segment
 * (same name, another seg_id) is ignored as a whole.
 */
START_TEST(test_journal_damage)
{
    unsigned seed = seed_get("test_journal_damage");
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(64 * MIB, 0);
    enum { N = 400 };
    bool acked[N + 1] = {false};
    size_t len, alen;
    uint64_t dups = 0, cases = 0;

    kp_log_set_level(KP_LOG_ERROR);
    struct kp_spool *s = sp_open(dir, &o, NULL);
    for (uint64_t seq = 1; seq <= N; seq++) {
        sp_append(s, seq);
    }
    for (int k = 0; k < 3; k++) { /* three flushes: three entry groups */
        for (uint64_t seq = 1; seq <= N; seq++) {
            if (!acked[seq] && rand_r(&seed) % 4 == 0) {
                kp_spool_ack(s, seq);
                acked[seq] = true;
            }
        }
        ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    }
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    uint8_t *seg = file_read(dir, SEG1, &len);
    uint8_t *ack = file_read(dir, ACK1, &alen);
    uint8_t *bad = kp_malloc(alen);
    ck_assert_uint_eq(journal_case(dir, seg, len, ack, alen, acked, N), 0);
    for (size_t cut = 0; cut < alen; cut++, cases++) {
        dups += journal_case(dir, seg, len, ack, cut, acked, N);
    }
    for (int iter = 0; iter < 200; iter++, cases++) {
        memcpy(bad, ack, alen);
        bad[(size_t)rand_r(&seed) % alen] ^= (uint8_t)(1 + rand_r(&seed) % 255);
        dups += journal_case(dir, seg, len, bad, alen, acked, N);
    }
    printf("test_journal_damage: %" PRIu64 " damaged journals, %" PRIu64
           " acked records sent again, none lost\n",
           cases, dups);

    /* A stale journal: same name, from an earlier segment 1. */
    dir_clear(dir);
    build_segment(dir, N, false);
    uint8_t *seg2 = file_read(dir, SEG1, &len);
    bool none[N + 1] = {false};
    ck_assert_uint_eq(journal_case(dir, seg2, len, ack, alen, none, N), 0);
    free(seg);
    free(seg2);
    free(ack);
    free(bad);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* ---- space ---- */

START_TEST(test_reclaim)
{
    unsigned seed = seed_get("test_reclaim");
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(MIB, 4096);
    struct kp_spool_recovery rep;
    struct kp_spool_stats st;
    enum { N = 800, HALF = 400 };
    uint64_t order[N];

    struct kp_spool *s = sp_open(dir, &o, NULL);
    for (uint64_t seq = 1; seq <= N; seq++) {
        sp_append(s, seq);
        order[seq - 1] = seq;
    }
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    int nseg = count_files(dir, ".seg");
    kp_spool_stats_get(s, &st);
    ck_assert_int_gt(nseg, 10);
    ck_assert_uint_eq(st.segments, (uint64_t)nseg);
    shuffle(order, HALF, &seed);
    for (int i = 0; i < HALF; i++) {
        expect(kp_spool_ack(s, order[i]) == KP_OK);
    }
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    kp_spool_stats_get(s, &st);
    ck_assert_uint_gt(st.reclaimed, 0);
    ck_assert_int_eq(count_files(dir, ".seg"), (int)st.segments);
    ck_assert_int_lt(count_files(dir, ".seg"), nseg);
    ck_assert_int_le(count_files(dir, ".ack"), (int)st.segments);
    /* The oldest remaining segment holds the first unacked record. */
    uint64_t *got = kp_malloc(N * sizeof(uint64_t));
    ck_assert_uint_eq(sp_replay(s, got, N), N - HALF);
    ck_assert_uint_eq(got[0], HALF + 1);
    for (uint64_t seq = HALF + 1; seq <= N; seq++) {
        expect(kp_spool_ack(s, seq) == KP_OK);
    }
    kp_spool_stats_get(s, &st);
    ck_assert_uint_eq(st.segments, 1); /* the active one */
    ck_assert_uint_eq(st.backlog, 0);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    ck_assert_int_eq(count_files(dir, ""), 0);
    /* An empty spool starts afresh. */
    s = sp_open(dir, &o, &rep);
    ck_assert_uint_eq(rep.segments, 0);
    ck_assert_uint_eq(rep.next_seq, 1);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    free(got);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

START_TEST(test_max_bytes)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(64 * 1024, 0);
    struct kp_spool_stats st;
    struct trec t;
    uint64_t seq = 1, got;

    o.max_record = 1000;
    struct kp_spool *s = sp_open(dir, &o, NULL);
    for (;; seq++) {
        trec_make(&t, seq);
        int rc = kp_spool_append(s, &t.r, &got);
        if (rc == KP_AGAIN) {
            break;
        }
        ck_assert_int_eq(rc, KP_OK);
    }
    uint64_t n = seq - 1;
    kp_spool_stats_get(s, &st);
    ck_assert_uint_gt(n, 100);
    ck_assert_uint_eq(st.full, 1);
    ck_assert_uint_le(st.bytes, 64 * 1024);
    ck_assert_int_lt(kp_spool_room(s), (int64_t)kp_spool_rec_size(&t.r));
    ck_assert_int_eq(kp_spool_append(s, &t.r, &got), KP_AGAIN);
    ck_assert_uint_eq(kp_spool_next_seq(s), seq); /* nothing changed */
    /* Acks free whole segments, the active one included. */
    for (uint64_t i = 1; i <= n; i++) {
        expect(kp_spool_ack(s, i) == KP_OK);
    }
    uint64_t again = 0;
    for (;; seq++, again++) {
        trec_make(&t, seq);
        int rc = kp_spool_append(s, &t.r, &got);
        if (rc == KP_AGAIN) {
            break;
        }
        ck_assert_int_eq(rc, KP_OK);
    }
    ck_assert_uint_gt(again, n / 2);
    /* Too large for max_record, or for the budget: EMSGSIZE. */
    uint8_t big[2000] = {0};
    t.r.msg.value = big;
    t.r.msg.value_len = sizeof(big);
    errno = 0;
    ck_assert_int_eq(kp_spool_append(s, &t.r, &got), KP_ERROR);
    ck_assert_int_eq(errno, EMSGSIZE);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* ---- isolation ---- */

START_TEST(test_isolation)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(64 * MIB, 0);
    char *seg = path_join(dir, SEG1), *ack = path_join(dir, ACK1);
    char *other = path_join(root, "elsewhere"), *nope = path_join(root, "a/b");
    size_t len;

    kp_log_set_level(KP_LOG_ERROR);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    ck_assert_int_eq(chmod(dir, 0777), 0);
    sp_open_fails(dir, &o, "group or world writable");
    ck_assert_int_eq(chmod(dir, 0700), 0);
    sp_open_fails(nope, &o, "mkdir");
    file_write(root, "elsewhere", (const uint8_t *)"x", 1);
    sp_open_fails(other, &o, "Not a directory");

    /* One process at a time. */
    struct kp_spool *s = sp_open(dir, &o, NULL);
    sp_open_fails(dir, &o, "in use by another process");
    sp_append(s, 1);
    kp_spool_ack(s, 1);
    sp_append(s, 2);
    ck_assert_int_eq(kp_spool_close(s), KP_OK); /* seg and ack stay */
    uint8_t *img = file_read(dir, SEG1, &len);

    /* A segment that is a symbolic link, a FIFO, writable by others. */
    ck_assert_int_eq(rename(seg, other), 0);
    ck_assert_int_eq(symlink(other, seg), 0);
    sp_open_fails(dir, &o, "symbolic link");
    ck_assert_int_eq(unlink(seg), 0);
    ck_assert_int_eq(mkfifo(seg, 0600), 0);
    sp_open_fails(dir, &o, "FIFO");
    ck_assert_int_eq(unlink(seg), 0);
    file_write(dir, SEG1, img, len);
    ck_assert_int_eq(chmod(seg, 0666), 0);
    sp_open_fails(dir, &o, "group or world writable");
    ck_assert_int_eq(chmod(seg, 0600), 0);
    /* The journal too. */
    ck_assert_int_eq(unlink(ack), 0);
    ck_assert_int_eq(symlink(other, ack), 0);
    sp_open_fails(dir, &o, "symbolic link");
    ck_assert_int_eq(unlink(ack), 0);
    if (geteuid() == 0) {
        ck_assert_int_eq(chown(seg, 65534, 65534), 0);
        sp_open_fails(dir, &o, "owned by uid 65534");
        ck_assert_int_eq(chown(seg, 0, 0), 0);
        ck_assert_int_eq(chown(dir, 65534, 65534), 0);
        sp_open_fails(dir, &o, "owned by uid 65534");
        ck_assert_int_eq(chown(dir, 0, 0), 0);
    } else {
        /* Unwritable directory: recovery reads, the append fails. */
        ck_assert_int_eq(chmod(dir, 0500), 0);
        s = sp_open(dir, &o, NULL);
        struct trec t;
        uint64_t got;
        trec_make(&t, 3);
        errno = 0;
        ck_assert_int_eq(kp_spool_append(s, &t.r, &got), KP_ERROR);
        ck_assert_int_eq(errno, EACCES);
        ck_assert_int_eq(kp_spool_close(s), KP_OK);
        ck_assert_int_eq(chmod(dir, 0700), 0);
    }
    s = sp_open(dir, &o, NULL); /* all well again: 1 and 2 replay (the
                                 * journal was removed) */
    uint64_t got[4];
    ck_assert_uint_eq(sp_replay(s, got, 4), 2);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    free(img);
    free(seg);
    free(ack);
    free(other);
    free(nope);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* ---- write errors ---- */

static void set_fsize(rlim_t cur)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = cur == RLIM_INFINITY ? rl.rlim_max : cur;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

/* Appends until one fails; returns the last seq accepted. */
static uint64_t fill_until_error(struct kp_spool *s, uint64_t seq, int want)
{
    struct trec t;
    uint64_t got;
    for (;; seq++) {
        trec_make(&t, seq);
        errno = 0;
        int rc = kp_spool_append(s, &t.r, &got);
        if (rc != KP_OK) {
            ck_assert_int_eq(rc, KP_ERROR);
            ck_assert_int_eq(errno, want);
            return seq - 1;
        }
    }
}

/*
 * A full disk, simulated with RLIMIT_FSIZE (SIGXFSZ ignored: EFBIG): the
 * append that fails reports it and changes nothing, the segment stays
 * consistent (no torn record at the next start), and appends work again
 * once the limit is lifted. Write-through and buffered.
 */
START_TEST(test_write_error_fsize)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_stats st;
    struct kp_spool_recovery rep;
    bool acked[4096] = {false};

    kp_log_set_level(KP_LOG_ERROR);
    signal(SIGXFSZ, SIG_IGN);
    for (int buffered = 0; buffered < 2; buffered++) {
        struct kp_spool_opts o = opts_make(64 * MIB, 0);
        o.write_buffer = buffered ? 4096 : 1;
        rm_rf(dir);
        struct kp_spool *s = sp_open(dir, &o, NULL);
        for (uint64_t seq = 1; seq <= 10; seq++) {
            sp_append(s, seq);
        }
        ck_assert_int_eq(kp_spool_flush(s), KP_OK);
        set_fsize(20000);
        uint64_t last = fill_until_error(s, 11, EFBIG);
        ck_assert_uint_gt(last, 20);
        ck_assert_uint_eq(kp_spool_next_seq(s), last + 1);
        /* It keeps failing, and changes nothing. */
        fill_until_error(s, last + 1, EFBIG);
        ck_assert_uint_eq(kp_spool_next_seq(s), last + 1);
        ck_assert_int_eq(kp_spool_flush(s), buffered ? KP_ERROR : KP_OK);
        kp_spool_stats_get(s, &st);
        ck_assert_uint_ge(st.write_errors, 2);
        set_fsize(RLIM_INFINITY);
        ck_assert_int_eq(kp_spool_flush(s), KP_OK);
        sp_append(s, last + 1);
        ck_assert_int_eq(kp_spool_close(s), KP_OK);
        s = sp_open(dir, &o, &rep);
        ck_assert_uint_eq(rep.torn, 0);
        sp_expect(s, acked, last + 2);
        ck_assert_int_eq(kp_spool_close(s), KP_OK);
    }
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/*
 * A real ENOSPC on a 256 KiB tmpfs, mounted in a private mount namespace
 * (root only; skipped where the container forbids it): the writers must
 * wait, acks and reclaim make room again.
 */
START_TEST(test_enospc_tmpfs)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(64 * MIB, 16384);
    bool acked[8192] = {false};

    kp_log_set_level(KP_LOG_ERROR);
    if (geteuid() != 0 || unshare(CLONE_NEWNS) != 0 ||
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", root, "tmpfs", 0, "size=256k,mode=0700") != 0) {
        printf("test_enospc_tmpfs: skipped (cannot mount a tmpfs: %s)\n",
               strerror(errno));
        rm_rf(root);
        free(dir);
        free(root);
        return;
    }
    o.write_buffer = 1;
    struct kp_spool *s = sp_open(dir, &o, NULL);
    uint64_t last = fill_until_error(s, 1, ENOSPC);
    ck_assert_uint_gt(last, 100);
    fill_until_error(s, last + 1, ENOSPC);
    for (uint64_t seq = 1; seq <= last / 2; seq++) {
        kp_spool_ack(s, seq);
        acked[seq] = true;
    }
    sp_append(s, last + 1); /* room again */
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    s = sp_open(dir, &o, NULL);
    sp_expect(s, acked, last + 2);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    umount2(root, MNT_DETACH);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/*
 * A journal write that fails (EFBIG here) keeps the acks in memory and
 * puts the spool in its "writes are refused" mode, in which a fully
 * acknowledged active segment is given back at once. Once the segment
 * whose journal failed is gone (all of it acknowledged), nothing is
 * refused any more: an active segment whose records are all acknowledged
 * stays until it is sealed, as usual, even after a flush.
 */
START_TEST(test_journal_error_cleared_by_reclaim)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(MIB, 4096);
    struct kp_spool_stats st;
    uint64_t seq = 1;

    kp_log_set_level(KP_LOG_ERROR);
    signal(SIGXFSZ, SIG_IGN);
    struct kp_spool *s = sp_open(dir, &o, NULL);
    for (uint64_t i = 1; i <= 100; i++) {
        sp_append(s, i);
    }
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    kp_spool_stats_get(s, &st);
    uint64_t segs = st.segments;
    ck_assert_uint_gt(segs, 2);
    ck_assert_int_eq(kp_spool_ack(s, seq++), KP_OK);
    ck_assert_int_eq(kp_spool_flush(s), KP_OK); /* its journal: 1 entry */
    set_fsize(KP_SPOOL_HDR_LEN + KP_SPOOL_ACK_LEN);
    ck_assert_int_eq(kp_spool_ack(s, seq++), KP_OK);
    ck_assert_int_eq(kp_spool_flush(s), KP_ERROR);
    /* the rest of segment 1: it goes, with the acks its journal lacked */
    for (; st.segments == segs; seq++) {
        ck_assert_int_eq(kp_spool_ack(s, seq), KP_OK);
        kp_spool_stats_get(s, &st);
    }
    set_fsize(RLIM_INFINITY);
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    for (; seq <= 100; seq++) {
        ck_assert_int_eq(kp_spool_ack(s, seq), KP_OK);
    }
    kp_spool_stats_get(s, &st);
    ck_assert_uint_eq(st.backlog, 0);
    ck_assert_uint_eq(st.segments, 1); /* the active one stays */
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* Appends a small record for topic "t" (value "x"): seq. */
static uint64_t sp_append_small(struct kp_spool *s)
{
    struct kp_spool_rec r;
    uint64_t seq = 0;

    memset(&r, 0, sizeof(r));
    r.msg.topic = "t";
    r.msg.topic_len = 1;
    r.msg.value = (const uint8_t *)"x";
    r.msg.value_len = 1;
    r.msg.partition = -1;
    r.msg.timestamp = 1700000000000;
    expect(kp_spool_append(s, &r, &seq) == KP_OK);
    return seq;
}

/*
 * Writes fail (EFBIG) with records in the write buffer, and every record
 * of the active segment is then acknowledged: the segment is given back
 * with its unwritten tail, which is no loss. kp_spool_written_seq()
 * covers them, and a close whose flush fails for another reason (a
 * journal) does not report them lost.
 */
START_TEST(test_close_after_active_given_back)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(MIB, 4096);
    struct kp_spool_stats st;
    uint64_t got[256];

    kp_log_set_level(KP_LOG_ERROR);
    signal(SIGXFSZ, SIG_IGN);
    struct kp_spool *s = sp_open(dir, &o, NULL);
    for (uint64_t i = 1; i <= 100; i++) {
        sp_append(s, i);
    }
    kp_spool_stats_get(s, &st);
    uint64_t segs = st.segments, first;
    do { /* until a new active segment holds one record */
        first = sp_append_small(s);
        kp_spool_stats_get(s, &st);
    } while (st.segments == segs);
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    set_fsize(16);
    for (int i = 0; i < 10; i++) {
        sp_append_small(s);
    }
    /* (check cannot report a failure while files are limited: the
     * results are asserted after) */
    uint64_t last = kp_spool_next_seq(s) - 1;
    int flush_rc = kp_spool_flush(s);
    uint64_t written_before = kp_spool_written_seq(s);
    kp_spool_ack(s, 1); /* its journal fails */
    kp_spool_ack_range(s, first, last - first + 1);
    kp_spool_stats_get(s, &st);
    uint64_t written_after = kp_spool_written_seq(s);
    int close_rc = kp_spool_close(s);
    set_fsize(RLIM_INFINITY);
    ck_assert_int_eq(flush_rc, KP_ERROR);
    ck_assert_uint_lt(written_before, last);
    ck_assert_uint_eq(st.segments, segs); /* the active one went */
    ck_assert_uint_eq(written_after, last);
    ck_assert_int_eq(close_rc, KP_OK);
    s = sp_open(dir, &o, NULL);
    struct kp_spool_cursor *c = kp_spool_cursor_create(s, 0);
    struct kp_spool_view v;
    size_t n = 0;
    while (n < 256 && kp_spool_cursor_next(c, &v) == KP_OK) {
        got[n++] = v.seq;
    }
    kp_spool_cursor_destroy(c);
    ck_assert_uint_ge(n, first - 2); /* 2 .. first - 1, 1 maybe again */
    ck_assert_uint_eq(got[n - 1], first - 1);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* A fully acknowledged active segment is room: it goes at the next append
 * that needs the space, and nothing else would free it. */
START_TEST(test_room_counts_acked_active)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(64 * 1024, 0);

    struct kp_spool *s = sp_open(dir, &o, NULL);
    for (uint64_t i = 1; i <= 20; i++) {
        sp_append(s, i);
    }
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    ck_assert_int_lt(kp_spool_room(s), 64 * 1024 - 20 * 20);
    ck_assert_int_eq(kp_spool_ack_range(s, 1, 19), KP_OK);
    ck_assert_int_lt(kp_spool_room(s), 64 * 1024 - 20 * 20);
    ck_assert_int_eq(kp_spool_ack(s, 20), KP_OK);
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    ck_assert_int_eq(kp_spool_room(s), 64 * 1024);
    ck_assert_int_eq(kp_spool_max_bytes(s), 64 * 1024);
    /* ... and the next append gives it back when it needs the space */
    uint64_t n = 0;
    struct trec t;
    uint64_t seq;
    trec_make(&t, 21);
    while (kp_spool_append(s, &t.r, &seq) == KP_OK) {
        n++;
    }
    ck_assert_uint_gt(n * kp_spool_rec_size(&t.r), 60 * 1024);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* ---- fdatasync through the loop ---- */

struct sync_test {
    struct ev_loop *loop;
    struct kp_spool *s;
    int pipe[2];
    int idle_runs;
    uint64_t durable;
    int reports;
};
static int sync_gate_fd = -1; /* read end: the helper waits on it once */

static int gated_sync(int fd)
{
    if (sync_gate_fd >= 0) {
        char c;
        if (read(sync_gate_fd, &c, 1) != 1) {
            abort();
        }
        sync_gate_fd = -1;
    }
    return fdatasync(fd);
}

static void on_sync(void *arg, uint64_t durable)
{
    struct sync_test *t = arg;
    t->durable = durable;
    t->reports++;
    if (durable == 20) {
        ev_break(t->loop, EVBREAK_ALL);
    }
}

static void on_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct sync_test *t = w->data;
    struct kp_spool_stats st;
    (void)revents;
    t->idle_runs++;
    if (t->idle_runs == 100) {
        /* The helper is blocked in its first fdatasync, and the loop
         * runs: more appends meanwhile, then let it go. */
        kp_spool_stats_get(t->s, &st);
        ck_assert_uint_eq(st.fsyncs, 0);
        for (uint64_t seq = 11; seq <= 20; seq++) {
            sp_append(t->s, seq);
        }
        ck_assert_int_eq(kp_spool_flush(t->s), KP_OK);
        ck_assert_int_eq(write(t->pipe[1], "x", 1), 1);
    }
    if (t->durable == 20) {
        ev_idle_stop(loop, w);
    }
}

START_TEST(test_fsync_loop)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(64 * MIB, 0);
    struct kp_spool_stats st;
    struct sync_test t;
    ev_idle idle;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);

    memset(&t, 0, sizeof(t));
    t.loop = loop;
    ck_assert_int_eq(pipe(t.pipe), 0);
    sync_gate_fd = t.pipe[0];
    o.fsync_ms = 0;
    o.loop = loop;
    o.sync_fn = gated_sync;
    o.on_sync = on_sync;
    o.on_sync_arg = &t;
    t.s = sp_open(dir, &o, NULL);
    for (uint64_t seq = 1; seq <= 10; seq++) {
        sp_append(t.s, seq);
    }
    ck_assert_int_eq(kp_spool_flush(t.s), KP_OK);
    ev_idle_init(&idle, on_idle);
    idle.data = &t;
    ev_idle_start(loop, &idle);
    ev_run(loop, 0);
    ev_idle_stop(loop, &idle);
    kp_spool_stats_get(t.s, &st);
    ck_assert_int_ge(t.idle_runs, 100); /* the loop ran meanwhile */
    ck_assert_uint_ge(st.fsyncs, 2);
    ck_assert_uint_eq(st.durable_seq, 20);
    ck_assert_uint_eq(t.durable, 20);
    ck_assert_int_ge(st.fsync_max_us, st.fsync_last_us);
    ck_assert_int_ge(st.fsync_sum_us, st.fsync_max_us);
    ck_assert_uint_eq(st.fsync_errors, 0);
    /* Close waits for the round in flight and syncs the rest. */
    sp_append(t.s, 21);
    ck_assert_int_eq(kp_spool_close(t.s), KP_OK);
    ev_loop_destroy(loop);
    close(t.pipe[0]);
    close(t.pipe[1]);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

static int failing_sync(int fd)
{
    (void)fd;
    errno = EIO;
    return -1;
}

static void on_idle_stats(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct kp_spool_stats st;
    (void)revents;
    kp_spool_stats_get(w->data, &st);
    if (st.fsyncs >= 1) {
        ev_break(loop, EVBREAK_ALL);
    }
}

/* A failing fdatasync (EIO) is counted and logged; durable_seq does not
 * move and on_sync is not called. */
START_TEST(test_fsync_error)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(64 * MIB, 0);
    struct kp_spool_stats st;
    struct sync_test t;
    ev_idle idle;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);

    kp_log_set_level(KP_LOG_ERROR);
    memset(&t, 0, sizeof(t));
    t.loop = loop;
    o.fsync_ms = 0;
    o.loop = loop;
    o.sync_fn = failing_sync;
    o.on_sync = on_sync;
    o.on_sync_arg = &t;
    t.s = sp_open(dir, &o, NULL);
    sp_append(t.s, 1);
    ck_assert_int_eq(kp_spool_flush(t.s), KP_OK);
    ev_idle_init(&idle, on_idle_stats);
    idle.data = t.s;
    ev_idle_start(loop, &idle);
    ev_run(loop, 0);
    ev_idle_stop(loop, &idle);
    kp_spool_stats_get(t.s, &st);
    ck_assert_uint_ge(st.fsync_errors, 1);
    ck_assert_uint_eq(st.durable_seq, 0);
    ck_assert_int_eq(t.reports, 0);
    ck_assert_int_eq(kp_spool_close(t.s), KP_OK);
    ev_loop_destroy(loop);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* ---- cursors ---- */

/* Overflow read-back: a cursor at the tail yields what is appended after
 * it (buffered records included), across segment rolls and reclaim. */
START_TEST(test_cursor_follow)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(MIB, 4096);
    struct kp_spool_view v;
    struct kp_spool_stats st;
    uint64_t seq = 1, want = 1;

    struct kp_spool *s = sp_open(dir, &o, NULL);
    struct kp_spool_cursor *c = kp_spool_cursor_create(s, kp_spool_next_seq(s));
    ck_assert_int_eq(kp_spool_cursor_next(c, &v), KP_AGAIN);
    for (int round = 0; round < 30; round++) {
        for (int i = 0; i < 40; i++) {
            sp_append(s, seq++);
        }
        if (round % 3 == 0) {
            ck_assert_int_eq(kp_spool_flush(s), KP_OK);
        }
        while (kp_spool_cursor_next(c, &v) == KP_OK) {
            expect(v.seq == want);
            trec_check(&v, want++);
            expect(kp_spool_ack(s, v.seq) == KP_OK);
        }
        ck_assert_uint_eq(want, seq);
    }
    kp_spool_stats_get(s, &st);
    ck_assert_uint_eq(st.backlog, 0);
    ck_assert_uint_gt(st.reclaimed, 5);
    /* Back to the start: all acked, nothing. */
    kp_spool_cursor_seek(c, 1);
    ck_assert_int_eq(kp_spool_cursor_next(c, &v), KP_AGAIN);
    uint64_t base = seq;
    for (int i = 0; i < 10; i++) {
        sp_append(s, seq++);
    }
    kp_spool_cursor_seek(c, base + 5);
    for (uint64_t i = base + 5; i < seq; i++) {
        ck_assert_int_eq(kp_spool_cursor_next(c, &v), KP_OK);
        trec_check(&v, i);
    }
    ck_assert_int_eq(kp_spool_cursor_next(c, &v), KP_AGAIN);
    kp_spool_cursor_seek(c, kp_spool_next_seq(s));
    ck_assert_int_eq(kp_spool_cursor_next(c, &v), KP_AGAIN);
    kp_spool_cursor_destroy(c);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* A record damaged on disk after it was written (bit rot, a stray
 * writer): the cursor cuts its segment there, counts it, returns nothing
 * of it; the next segments still replay. */
START_TEST(test_cursor_damage)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(MIB, 4096);
    struct kp_spool_stats st;
    struct kp_spool_view v;
    size_t len, offs[256];

    kp_log_set_level(KP_LOG_WARNING);
    struct kp_spool *s = sp_open(dir, &o, NULL);
    for (uint64_t seq = 1; seq <= 200; seq++) {
        sp_append(s, seq);
    }
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    uint8_t *img = file_read(dir, SEG1, &len);
    size_t n = frame_offsets(img, len, offs, 255);
    ck_assert_uint_gt(n, 10);
    char *seg = path_join(dir, SEG1);
    int fd = open(seg, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    uint8_t b = (uint8_t)(img[offs[5] + 20] ^ 0x10);
    ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)(offs[5] + 20)), 1);
    close(fd);
    struct kp_spool_cursor *c = kp_spool_cursor_create(s, 0);
    for (uint64_t seq = 1; seq <= 5; seq++) {
        ck_assert_int_eq(kp_spool_cursor_next(c, &v), KP_OK);
        trec_check(&v, seq);
    }
    /* Records 6..n of segment 1 are cut; segment 2 follows. */
    ck_assert_int_eq(kp_spool_cursor_next(c, &v), KP_OK);
    trec_check(&v, n + 1);
    kp_spool_stats_get(s, &st);
    ck_assert_uint_eq(st.torn, 1);
    ck_assert_uint_eq(st.backlog, 200 - (n - 5));
    ck_assert_int_eq(kp_spool_ack(s, 6), KP_ERROR); /* no longer held */
    for (uint64_t seq = 1; seq <= 5; seq++) {
        ck_assert_int_eq(kp_spool_ack(s, seq), KP_OK);
    }
    kp_spool_stats_get(s, &st);
    ck_assert_uint_eq(st.reclaimed, 1); /* segment 1: what is left, acked */
    kp_spool_cursor_destroy(c);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    free(seg);
    free(img);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* Seeking to the tail (where overflow mode starts draining) reads
 * nothing: not from a cursor that read part of the active segment long
 * ago, nor from one not placed yet that is read only after more appends;
 * the records before the tail are not read (and checked) again. */
START_TEST(test_cursor_seek_tail)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(64 * MIB, 0);
    struct kp_spool_stats st;
    struct kp_spool_view v;
    uint64_t reads;

    struct kp_spool *s = sp_open(dir, &o, NULL);
    struct kp_spool_cursor *c = kp_spool_cursor_create(s, 1);
    for (uint64_t seq = 1; seq <= 10; seq++) {
        sp_append(s, seq);
    }
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    for (uint64_t seq = 1; seq <= 10; seq++) {
        ck_assert_int_eq(kp_spool_cursor_next(c, &v), KP_OK);
    }
    for (uint64_t seq = 11; seq <= 2010; seq++) {
        sp_append(s, seq);
    }
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    kp_spool_stats_get(s, &st);
    reads = st.cursor_reads;
    kp_spool_cursor_seek(c, kp_spool_next_seq(s));
    ck_assert_int_eq(kp_spool_cursor_next(c, &v), KP_AGAIN);
    sp_append(s, 2011);
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    ck_assert_int_eq(kp_spool_cursor_next(c, &v), KP_OK);
    trec_check(&v, 2011);
    kp_spool_stats_get(s, &st);
    ck_assert_uint_le(st.cursor_reads - reads, 1); /* 2011 alone */

    struct kp_spool_cursor *c2 = kp_spool_cursor_create(s, 0);
    kp_spool_cursor_seek(c2, kp_spool_next_seq(s));
    sp_append(s, 2012);
    sp_append(s, 2013);
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    kp_spool_stats_get(s, &st);
    reads = st.cursor_reads;
    ck_assert_int_eq(kp_spool_cursor_next(c2, &v), KP_OK);
    trec_check(&v, 2012);
    ck_assert_int_eq(kp_spool_cursor_next(c2, &v), KP_OK);
    trec_check(&v, 2013);
    kp_spool_stats_get(s, &st);
    ck_assert_uint_le(st.cursor_reads - reads, 1);
    /* Seeking back reads the segment again, from its start. */
    kp_spool_cursor_seek(c2, 5);
    ck_assert_int_eq(kp_spool_cursor_next(c2, &v), KP_OK);
    trec_check(&v, 5);
    kp_spool_cursor_destroy(c);
    kp_spool_cursor_destroy(c2);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* A batch's records acknowledged in one range that spans records cut
 * since they were handed out (damage found when reading back): the seqs
 * no longer held are skipped and everything after them acknowledged, so
 * no segment stays behind and nothing delivered comes back. */
START_TEST(test_ack_range_across_cut)
{
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct kp_spool_opts o = opts_make(MIB, 4096);
    struct kp_spool_stats st;
    struct kp_spool_view v;
    size_t len, offs[256];

    kp_log_set_level(KP_LOG_ERROR);
    struct kp_spool *s = sp_open(dir, &o, NULL);
    for (uint64_t seq = 1; seq <= 200; seq++) {
        sp_append(s, seq);
    }
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    uint8_t *img = file_read(dir, SEG1, &len);
    size_t n = frame_offsets(img, len, offs, 255);
    char *seg = path_join(dir, SEG1);
    int fd = open(seg, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    uint8_t b = (uint8_t)(img[offs[5] + 20] ^ 0x10);
    ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)(offs[5] + 20)), 1);
    close(fd);
    struct kp_spool_cursor *c = kp_spool_cursor_create(s, 0);
    while (kp_spool_cursor_next(c, &v) == KP_OK) {
    }
    kp_spool_stats_get(s, &st);
    ck_assert_uint_eq(st.torn, 1);
    ck_assert_uint_eq(st.backlog, 200 - (n - 5));
    /* 1..200 delivered: 6..n are gone, the rest is acknowledged. */
    ck_assert_int_eq(kp_spool_ack_range(s, 1, 200), KP_ERROR);
    kp_spool_stats_get(s, &st);
    ck_assert_uint_eq(st.backlog, 0);
    ck_assert_uint_eq(st.segments, 1); /* the active one */
    kp_spool_cursor_destroy(c);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    ck_assert_int_eq(count_files(dir, ".seg"), 0);
    free(seg);
    free(img);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* ---- SIGKILL at random moments ---- */

#define CRASH_ACKS (1 << 18)
/* Seqs the parent's tables hold, over all runs: the child stops appending
 * before (a fast machine, or a slow kill, appends more per run). */
#define CRASH_MAXSEQ (1 << 20)

/* What the child did, in memory shared with the parent: each mark is
 * stored after the call it reports returned. */
struct crash_shm {
    uint64_t start_seq;   /* first seq of the child's run */
    uint64_t appended;    /* last seq whose append returned */
    uint64_t written;     /* every seq <= this was flushed */
    uint64_t ack_issued;  /* ack_log[0..ack_issued) were (being) acked */
    uint64_t ack_flushed; /* ack_log[0..ack_flushed) were flushed */
    uint64_t ack_log[CRASH_ACKS];
};

/* The child: replay, then append and ack at random until killed. */
static void crash_child(const char *dir, volatile struct crash_shm *m,
                        unsigned seed, int wbuf, int kick_fd)
{
    struct kp_spool_opts o = opts_make(4 * MIB, 8192);
    struct kp_spool_view v;
    enum { WIN = 1 << 16 };
    static uint64_t win[WIN];
    size_t nwin = 0;
    char err[256];
    struct trec t;

    o.write_buffer = (size_t)wbuf;
    struct kp_spool *s = kp_spool_open(dir, &o, NULL, err, sizeof(err));
    if (!s) {
        abort();
    }
    struct kp_spool_cursor *c = kp_spool_cursor_create(s, 0);
    while (kp_spool_cursor_next(c, &v) == KP_OK && nwin < WIN) {
        win[nwin++] = v.seq;
    }
    kp_spool_cursor_destroy(c);
    m->start_seq = kp_spool_next_seq(s);
    unsigned kick_at = 200 + (unsigned)rand_r(&seed) % 3000;
    for (unsigned op = 0;; op++) {
        unsigned r = (unsigned)rand_r(&seed);
        uint64_t seq;
        if (nwin < WIN && r % 3 != 0 &&
            kp_spool_next_seq(s) < CRASH_MAXSEQ - 1) {
            trec_make(&t, kp_spool_next_seq(s));
            int rc = kp_spool_append(s, &t.r, &seq);
            if (rc == KP_OK) {
                m->appended = seq;
                win[nwin++] = seq;
            } else if (rc != KP_AGAIN) {
                abort();
            }
        } else if (nwin && m->ack_issued < CRASH_ACKS) {
            size_t i = (size_t)(r / 3) % nwin;
            seq = win[i];
            win[i] = win[--nwin];
            m->ack_log[m->ack_issued] = seq;
            m->ack_issued++;
            if (kp_spool_ack(s, seq) != KP_OK) {
                abort();
            }
        }
        if (r % 17 == 0) {
            uint64_t a = m->appended, k = m->ack_issued;
            if (kp_spool_flush(s) != KP_OK) {
                abort();
            }
            m->written = a;
            m->ack_flushed = k;
        }
        if (op == kick_at && write(kick_fd, "k", 1) != 1) {
            abort();
        }
    }
}

/* Checks the replay after a kill; returns the duplicates. *truth is the
 * set present before the run and becomes the replayed set. */
static uint64_t crash_check(const char *dir, const struct crash_shm *m,
                            uint8_t *truth, uint64_t max_seq)
{
    enum { MUST = 1, MAYBE = 2, NO = 0 };
    uint8_t *want = kp_calloc((size_t)max_seq + 2, 1);
    uint64_t dups = 0, *got = kp_malloc((size_t)(max_seq + 2) * 8);
    struct kp_spool_opts o = opts_make(4 * MIB, 8192);

    for (uint64_t q = 1; q < m->start_seq && q <= max_seq; q++) {
        want[q] = truth[q] ? MUST : NO;
    }
    for (uint64_t q = m->start_seq; q <= m->appended + 1 && q <= max_seq; q++) {
        want[q] = q <= m->written ? MUST : MAYBE;
    }
    for (uint64_t i = 0; i < m->ack_issued; i++) {
        uint64_t q = m->ack_log[i];
        want[q] = i < m->ack_flushed ? NO : (want[q] ? MAYBE : NO);
    }
    struct kp_spool *s = sp_open(dir, &o, NULL);
    size_t n = sp_replay(s, got, (size_t)max_seq + 1); /* byte-exact */
    expect((kp_spool_close(s)) == (KP_OK));
    memset(truth, 0, (size_t)max_seq + 2);
    for (size_t i = 0; i < n; i++) {
        expectf(want[got[i]] != NO,
                "seq %" PRIu64 " replayed but acked or never written", got[i]);
        truth[got[i]] = 1;
    }
    for (uint64_t q = 1; q <= max_seq; q++) {
        expectf(want[q] != MUST || truth[q], "seq %" PRIu64 " lost", q);
    }
    for (uint64_t i = m->ack_flushed; i < m->ack_issued; i++) {
        dups += truth[m->ack_log[i]];
    }
    free(want);
    free(got);
    return dups;
}

START_TEST(test_crash_sigkill)
{
    unsigned seed = seed_get("test_crash_sigkill");
    char *root = tmp_root(), *dir = path_join(root, "spool");
    struct crash_shm *m = mmap(NULL, sizeof(*m), PROT_READ | PROT_WRITE,
                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    enum { MAXSEQ = CRASH_MAXSEQ };
    uint8_t *truth = kp_calloc(MAXSEQ + 2, 1);
    uint64_t dups = 0, replayed = 0;

    ck_assert_ptr_ne(m, MAP_FAILED);
    kp_log_set_level(KP_LOG_ERROR);
    for (int iter = 0; iter < 20; iter++) {
        int kick[2], status;
        unsigned child_seed = (unsigned)rand_r(&seed);
        int wbuf = iter % 2 ? 1 : 0; /* write-through or buffered */
        memset(m, 0, offsetof(struct crash_shm, ack_log));
        ck_assert_int_eq(pipe(kick), 0);
        fflush(stdout);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            close(kick[0]);
            crash_child(dir, m, child_seed, wbuf, kick[1]);
            _exit(0);
        }
        close(kick[1]);
        char k;
        ck_assert_int_eq(read(kick[0], &k, 1), 1);
        /* Still working: the kill lands anywhere in an append, an ack, a
         * flush, a roll or a reclaim. */
        for (int spin = rand_r(&seed) % 2000; spin > 0; spin--) {
            sched_yield();
        }
        kill(pid, SIGKILL);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        close(kick[0]);
        ck_assert_uint_lt(m->appended, MAXSEQ);
        dups += crash_check(dir, m, truth, MAXSEQ);
        for (uint64_t q = 1; q <= MAXSEQ; q++) {
            replayed += truth[q];
        }
    }
    printf("test_crash_sigkill: 20 kills, %" PRIu64 " records replayed, "
           "%" PRIu64 " of them acked in the last moments (duplicates), "
           "none lost\n",
           replayed, dups);
    munmap(m, sizeof(*m));
    free(truth);
    rm_rf(root);
    free(dir);
    free(root);
}
END_TEST

/* ---- the spare file ---- */

/* Copies every file of src into dst (created): what a crash right now
 * would leave, since the spool's writes are all in the page cache. */
static void dir_copy(const char *src, const char *dst)
{
    DIR *d = opendir(src);
    struct dirent *e;
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(mkdir(dst, 0700), 0);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            size_t len;
            uint8_t *b = file_read(src, e->d_name, &len);
            file_write(dst, e->d_name, b, len);
            free(b);
        }
    }
    closedir(d);
}

/* The name of the newest segment in dir, and its inode. */
static void newest_seg(const char *dir, char *name, size_t n, ino_t *ino)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    name[0] = '\0';
    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".seg") == 0 &&
            strcmp(e->d_name, name) > 0) {
            snprintf(name, n, "%s", e->d_name);
        }
    }
    closedir(d);
    ck_assert_msg(name[0], "no segment in %s", dir);
    char *p = path_join(dir, name);
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    *ino = st.st_ino;
    free(p);
}

/*
 * An acknowledged segment's file is kept (one at most, NNN.free, counted
 * in the spool's bytes) and taken by the next roll: the same inode under
 * the new name, with the reused flag. What a crash leaves in a reused
 * active segment - its records, the end mark, an earlier segment's bytes
 * - replays exactly the unacknowledged records and counts no damage; a
 * flipped byte among its records is still damage, cut and counted; a
 * .free file left by a crash is removed at start.
 */
START_TEST(test_spare_reuse)
{
    unsigned seed = seed_get("test_spare_reuse");
    char *root = tmp_root(), *dir = path_join(root, "spool");
    char *crash = path_join(root, "crash"), *flip = path_join(root, "flip");
    char *rolled = path_join(root, "rolled"), last[64] = "";
    char first_name[64];
    struct kp_spool_opts o = opts_make(4 * MIB, 8192);
    struct kp_spool_recovery rep;
    struct kp_spool_stats st;
    enum { N = 2000, LAG = 30 };
    bool *acked = kp_calloc(N + 2, sizeof(bool));
    char name[64];
    ino_t first_ino = 0, ino;
    bool reused = false;

    kp_log_set_level(KP_LOG_ERROR);
    struct kp_spool *s = sp_open(dir, &o, NULL);
    for (uint64_t seq = 1; seq <= N; seq++) {
        sp_append(s, seq);
        if (seq == 1) {
            ck_assert_int_eq(kp_spool_flush(s), KP_OK);
            newest_seg(dir, first_name, sizeof(first_name), &first_ino);
        }
        if (seq > LAG) {
            expect(kp_spool_ack(s, seq - LAG) == KP_OK);
            acked[seq - LAG] = true;
        }
        expect(count_files(dir, ".free") <= 1);
        kp_spool_stats_get(s, &st);
        expect(st.bytes <= 4 * MIB);
        newest_seg(dir, name, sizeof(name), &ino);
        reused |= ino == first_ino && strcmp(name, first_name) != 0;
        if (reused && !last[0]) {
            /* The append that rolled onto the reused file is still in the
             * write buffer: on file, the new header and the earlier
             * segment's frames. A crash now must find no damage. */
            snprintf(last, sizeof(last), "%s", name);
            dir_copy(dir, rolled);
        }
    }
    ck_assert_msg(reused, "the first segment's file was never reused");
    kp_spool_stats_get(s, &st);
    ck_assert_uint_gt(st.reclaimed, 20);
    ck_assert_int_le(count_files(dir, ".seg"), 3);
    ck_assert_int_eq(kp_spool_flush(s), KP_OK);
    /* The active segment reuses a file, and an earlier one's bytes follow
     * its records (it was full and it is not yet). */
    newest_seg(dir, name, sizeof(name), &ino);
    size_t len;
    uint8_t *img = file_read(dir, name, &len);
    ck_assert_uint_eq(img[27] & KP_SPOOL_HDR_REUSED, KP_SPOOL_HDR_REUSED);
    dir_copy(dir, crash);
    dir_copy(dir, flip);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    ck_assert_int_eq(count_files(dir, ".free"), 0);

    /* The crash: every unacknowledged record, nothing torn, and the
     * earlier bytes cut (the file ends with its last record). */
    file_write(crash, "00000000000000000007.free", img, len);
    s = sp_open(crash, &o, &rep);
    ck_assert_uint_eq(rep.torn, 0);
    ck_assert_uint_eq(rep.backlog, LAG);
    ck_assert_int_eq(count_files(crash, ".free"), 0);
    sp_expect(s, acked, N + 1);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);
    size_t clen, offs[4096];
    uint8_t *cut = file_read(crash, name, &clen);
    ck_assert_uint_lt(clen, len);
    frame_offsets(cut, clen, offs, 4095); /* asserts frames end the file */
    free(cut);

    /* Rolled onto the reused file, nothing written to it yet. */
    s = sp_open(rolled, &o, &rep);
    ck_assert_uint_eq(rep.torn, 0);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);

    /* A flipped byte among the reused segment's records: damage. */
    size_t nrec = frame_offsets(cut = file_read(crash, name, &clen), clen,
                                offs, 4095);
    free(cut);
    ck_assert_uint_gt(nrec, 2);
    size_t at = offs[1] + (size_t)rand_r(&seed) % (offs[nrec] - offs[1]);
    img[at] ^= 0x5a;
    file_write(flip, name, img, len);
    s = sp_open(flip, &o, &rep);
    ck_assert_uint_eq(rep.torn, 1);
    ck_assert_uint_lt(rep.backlog, LAG);
    ck_assert_int_eq(kp_spool_close(s), KP_OK);

    free(img);
    free(acked);
    rm_rf(root);
    free(dir);
    free(crash);
    free(flip);
    free(rolled);
    free(root);
}
END_TEST

static Suite *spool_suite(void)
{
    Suite *s = suite_create("spool");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_restart_cycles);
    tcase_add_test(tc, test_torn_tail);
    tcase_add_test(tc, test_flip_bytes);
    tcase_add_test(tc, test_journal_damage);
    tcase_add_test(tc, test_reclaim);
    tcase_add_test(tc, test_max_bytes);
    tcase_add_test(tc, test_isolation);
    tcase_add_test(tc, test_write_error_fsize);
    tcase_add_test(tc, test_enospc_tmpfs);
    tcase_add_test(tc, test_journal_error_cleared_by_reclaim);
    tcase_add_test(tc, test_close_after_active_given_back);
    tcase_add_test(tc, test_room_counts_acked_active);
    tcase_add_test(tc, test_fsync_loop);
    tcase_add_test(tc, test_fsync_error);
    tcase_add_test(tc, test_cursor_follow);
    tcase_add_test(tc, test_cursor_damage);
    tcase_add_test(tc, test_ack_range_across_cut);
    tcase_add_test(tc, test_spare_reuse);
    tcase_add_test(tc, test_cursor_seek_tail);
    tcase_add_test(tc, test_crash_sigkill);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(spool_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
