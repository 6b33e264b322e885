/*
 * check_deadletter.c - the dead letter file: one JSON line per failed
 * message, in the json line format plus "error" and "failed_at", that
 * replays through the json line parser to the same message.
 */
#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_deadletter.h"
#include "kp_line.h"
#include "kp_log.h"
#include "kp_record.h"

/* Writes records through kp_deadletter_records and returns the file. */
/* A fresh directory for one test's files. */
static char *temp_dir(void)
{
    char tmpl[] = "/tmp/kpdl-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    return kp_strdup(tmpl);
}

static char *path_in(const char *dir, const char *name)
{
    char *p = kp_malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

static char *dead_letter(const uint8_t *recs, size_t len, int64_t base_ts,
                         const int32_t *parts)
{
    char *dir = temp_dir(), *path = path_in(dir, "dl.jsonl");
    struct kp_deadletter *dl = kp_deadletter_open(path);
    ck_assert_ptr_nonnull(dl);
    kp_deadletter_records(dl, "dl.topic", recs, len, base_ts, parts,
                          "delivery_timeout");
    kp_deadletter_close(dl);
    int fd = open(path, O_RDONLY);
    off_t n = lseek(fd, 0, SEEK_END);
    char *text = kp_calloc(1, (size_t)n + 1);
    ck_assert_int_eq(pread(fd, text, (size_t)n, 0), n);
    close(fd);
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
    return text;
}

static void add(struct kp_buf *recs, int32_t i, int64_t dt, const char *key,
                const uint8_t *value, size_t value_len,
                const struct kp_header *h, size_t hn)
{
    struct kp_msg m = {.key = (const uint8_t *)key,
                       .key_len = key ? strlen(key) : 0,
                       .value = value,
                       .value_len = value_len,
                       .partition = -1,
                       .headers = h,
                       .header_cnt = hn};
    kp_record_append(recs, i, dt, &m, NULL, 0);
}

START_TEST(test_lines_replay)
{
    static const uint8_t bin[] = {0x00, 0xff, 'a', '\n'};
    struct kp_header hdrs[2] = {
        {(const uint8_t *)"h", 1, (const uint8_t *)"text", 4},
        {(const uint8_t *)"b", 1, (const uint8_t *)"\xff\xfe", 2},
    };
    struct kp_buf recs;
    kp_buf_init(&recs, 256);
    add(&recs, 0, 0, "k1", (const uint8_t *)"hello", 5, hdrs, 1);
    add(&recs, 1, 5, NULL, bin, sizeof(bin), NULL, 0);
    add(&recs, 2, 9, "k3", NULL, 0, hdrs, 2);
    int32_t parts[3] = {-1, 2, -1};

    char *text = dead_letter(recs.data, recs.len, 1700000000000, parts);
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    struct kp_line_scratch sc;
    kp_line_scratch_init(&sc);
    int n = 0;
    for (; line; line = strtok_r(NULL, "\n", &save), n++) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        ck_assert_msg(o != NULL, "not JSON: %s", line);
        ck_assert_str_eq(json_string_value(json_object_get(o, "topic")),
                         "dl.topic");
        ck_assert_str_eq(json_string_value(json_object_get(o, "error")),
                         "delivery_timeout");
        ck_assert(json_is_integer(json_object_get(o, "failed_at")));
        ck_assert_int_eq(
            json_integer_value(json_object_get(o, "timestamp")),
            1700000000000 + (n == 0 ? 0 : n == 1 ? 5 : 9));

        /* the line replays into a json listener */
        struct kp_msg m;
        ck_assert_int_eq(kp_line_parse_json(NULL, (const uint8_t *)line,
                                            strlen(line), &sc, &m),
                         KP_REASON_NONE);
        ck_assert_int_eq(m.topic_len, 8);
        if (n == 0) {
            ck_assert_mem_eq(m.key, "k1", 2);
            ck_assert_uint_eq(m.value_len, 5);
            ck_assert_mem_eq(m.value, "hello", 5);
            ck_assert_uint_eq(m.header_cnt, 1);
            ck_assert_mem_eq(m.headers[0].value, "text", 4);
            ck_assert_int_eq(m.partition, -1);
        } else if (n == 1) {
            /* binary bytes travel as value_base64, exactly */
            ck_assert_ptr_nonnull(json_object_get(o, "value_base64"));
            ck_assert_ptr_null(m.key);
            ck_assert_uint_eq(m.value_len, sizeof(bin));
            ck_assert_mem_eq(m.value, bin, sizeof(bin));
            ck_assert_int_eq(m.partition, 2);
        } else {
            ck_assert_ptr_null(m.value); /* a null value stays null */
            ck_assert_uint_eq(m.header_cnt, 2);
            /* a header that is not UTF-8 keeps its place, as U+FFFD */
            ck_assert_uint_eq(m.headers[1].value_len, 6);
            ck_assert_mem_eq(m.headers[1].value,
                             "\xef\xbf\xbd\xef\xbf\xbd", 6);
        }
        json_decref(o);
    }
    ck_assert_int_eq(n, 3);
    kp_line_scratch_deinit(&sc);
    free(text);
    kp_buf_deinit(&recs);
}
END_TEST

START_TEST(test_no_file_no_write)
{
    /* nothing configured: a no-op, whatever the input; nothing to keep */
    ck_assert_int_eq(kp_deadletter_records(NULL, "t",
                                           (const uint8_t *)"junk", 4, 0,
                                           NULL, "x"),
                     KP_OK);
}
END_TEST

/* A write that fails (EFBIG through RLIMIT_FSIZE, after part of the lines
 * went in) is reported, counted, and leaves the file as it was: the
 * caller keeps the messages' records (the disk spool). */
START_TEST(test_write_error_reported)
{
    char *dir = temp_dir(), *path = path_in(dir, "dl.jsonl");
    struct kp_buf recs;
    struct rlimit rl;
    struct stat st;

    kp_log_set_level(KP_LOG_ERROR);
    signal(SIGXFSZ, SIG_IGN);
    kp_buf_init(&recs, 256);
    for (int i = 0; i < 3; i++) {
        add(&recs, i, i, "k", (const uint8_t *)"value", 5, NULL, 0);
    }
    struct kp_deadletter *dl = kp_deadletter_open(path);
    ck_assert_ptr_nonnull(dl);
    ck_assert_int_eq(kp_deadletter_records(dl, "t", recs.data, recs.len, 0,
                                           NULL, "shutdown"),
                     KP_OK);
    ck_assert_int_eq(stat(path, &st), 0);
    off_t size = st.st_size;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rlim_t max = rl.rlim_cur;
    rl.rlim_cur = (rlim_t)size + size / 2; /* room for one line and a half */
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    int rc = kp_deadletter_records(dl, "t", recs.data, recs.len, 0, NULL,
                                   "shutdown");
    rl.rlim_cur = max;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    ck_assert_int_eq(rc, KP_ERROR);
    ck_assert_uint_eq(kp_deadletter_errors(dl), 3);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_size, size); /* no partial line */
    kp_deadletter_close(dl);
    kp_buf_deinit(&recs);
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
}
END_TEST

/* A root daemon must not be made to write where it should not: a planted
 * symlink, a FIFO (which would also hang a blocking open), a file others
 * may write to. */
START_TEST(test_refuses_unsafe_paths)
{
    char *dir = temp_dir();
    char *target = path_in(dir, "target"), *link = path_in(dir, "link");
    char *fifo = path_in(dir, "fifo"), *open_file = path_in(dir, "shared");

    ck_assert_int_eq(close(open(target, O_CREAT | O_WRONLY, 0600)), 0);
    ck_assert_int_eq(symlink(target, link), 0);
    ck_assert_ptr_null(kp_deadletter_open(link));
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_ptr_null(kp_deadletter_open(fifo));
    ck_assert_int_eq(close(open(open_file, O_CREAT | O_WRONLY, 0600)), 0);
    ck_assert_int_eq(chmod(open_file, 0666), 0);
    ck_assert_ptr_null(kp_deadletter_open(open_file));
    /* the regular, private file is fine */
    struct kp_deadletter *dl = kp_deadletter_open(target);
    ck_assert_ptr_nonnull(dl);
    kp_deadletter_close(dl);
    unlink(link);
    unlink(fifo);
    unlink(open_file);
    unlink(target);
    rmdir(dir);
    free(target);
    free(link);
    free(fifo);
    free(open_file);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("deadletter");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_lines_replay);
    tcase_add_test(tc, test_no_file_no_write);
    tcase_add_test(tc, test_write_error_reported);
    tcase_add_test(tc, test_refuses_unsafe_paths);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
