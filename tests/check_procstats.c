/*
 * check_procstats.c - the process_* families: plausible values for this
 * process (start time not in the future, stdin/out/err open, some RSS),
 * open fds following an open() and close(), the exact text of both
 * exposition forms for fixed values, and a line-level check of the forms
 * (every sample after its family's HELP and TYPE, names and values
 * well-formed, each family once).
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "kp_buf.h"
#include "kp_procstats.h"

START_TEST(test_plausible)
{
    struct kp_procstats ps;
    ck_assert_int_eq(kp_procstats_read(&ps), KP_OK);
    double now = (double)time(NULL);
    ck_assert(ps.start_time_seconds > 1.5e9);
    /* start <= now, allowing the tick rounding of starttime */
    ck_assert(ps.start_time_seconds <= now + 1.0);
    ck_assert(ps.start_time_seconds > now - 24 * 3600.0);
    ck_assert(ps.cpu_seconds >= 0.0);
    ck_assert_int_ge(ps.open_fds, 3);
    ck_assert_int_ge(ps.max_fds, ps.open_fds);
    ck_assert_uint_gt(ps.resident_bytes, 0);
    ck_assert_uint_ge(ps.virtual_bytes, ps.resident_bytes);
    ck_assert_uint_gt(ps.virtual_max_bytes, 0);

    /* open_fds counts this process's descriptors, not the reading's own */
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    struct kp_procstats ps2;
    ck_assert_int_eq(kp_procstats_read(&ps2), KP_OK);
    ck_assert_int_eq(ps2.open_fds, ps.open_fds + 1);
    close(fd);
    ck_assert_int_eq(kp_procstats_read(&ps2), KP_OK);
    ck_assert_int_eq(ps2.open_fds, ps.open_fds);
}
END_TEST

static const struct kp_procstats fixed = {
    .cpu_seconds = 1.25,
    .start_time_seconds = 1700000000.5,
    .resident_bytes = 4096 * 100,
    .virtual_bytes = 1 << 24,
    .virtual_max_bytes = UINT64_MAX,
    .open_fds = 9,
    .max_fds = 1024,
};

static char *render(const struct kp_procstats *ps, bool om)
{
    struct kp_buf b;
    kp_buf_init(&b, 0);
    kp_procstats_format(ps, om, &b);
    kp_buf_put_bytes(&b, "", 1);
    return (char *)b.data;
}

START_TEST(test_golden_openmetrics)
{
    char *s = render(&fixed, true);
    ck_assert_str_eq(
        s, "# HELP process_cpu_seconds Total user and system CPU time spent "
           "in seconds.\n"
           "# TYPE process_cpu_seconds counter\n"
           "# UNIT process_cpu_seconds seconds\n"
           "process_cpu_seconds_total 1.25\n"
           "# HELP process_open_fds Number of open file descriptors.\n"
           "# TYPE process_open_fds gauge\n"
           "process_open_fds 9\n"
           "# HELP process_max_fds Maximum number of open file descriptors.\n"
           "# TYPE process_max_fds gauge\n"
           "process_max_fds 1024\n"
           "# HELP process_virtual_memory_bytes Virtual memory size in "
           "bytes.\n"
           "# TYPE process_virtual_memory_bytes gauge\n"
           "# UNIT process_virtual_memory_bytes bytes\n"
           "process_virtual_memory_bytes 16777216\n"
           "# HELP process_virtual_memory_max_bytes Maximum amount of "
           "virtual memory available in bytes.\n"
           "# TYPE process_virtual_memory_max_bytes gauge\n"
           "# UNIT process_virtual_memory_max_bytes bytes\n"
           "process_virtual_memory_max_bytes 1.8446744073709552e+19\n"
           "# HELP process_resident_memory_bytes Resident memory size in "
           "bytes.\n"
           "# TYPE process_resident_memory_bytes gauge\n"
           "# UNIT process_resident_memory_bytes bytes\n"
           "process_resident_memory_bytes 409600\n"
           "# HELP process_start_time_seconds Start time of the process "
           "since unix epoch in seconds.\n"
           "# TYPE process_start_time_seconds gauge\n"
           "# UNIT process_start_time_seconds seconds\n"
           "process_start_time_seconds 1700000000.50\n");
    free(s);
}
END_TEST

START_TEST(test_golden_prometheus)
{
    char *s = render(&fixed, false);
    /* the counter's family is its sample's name; no UNIT lines */
    ck_assert_ptr_nonnull(
        strstr(s, "# HELP process_cpu_seconds_total Total user and system "
                  "CPU time spent in seconds.\n"
                  "# TYPE process_cpu_seconds_total counter\n"
                  "process_cpu_seconds_total 1.25\n"
                  "# HELP process_open_fds "));
    ck_assert_ptr_null(strstr(s, "# UNIT"));
    ck_assert_ptr_nonnull(strstr(s, "# TYPE process_resident_memory_bytes "
                                    "gauge\n"
                                    "process_resident_memory_bytes 409600\n"));
    free(s);
}
END_TEST

/* Unknown values leave their families out. */
START_TEST(test_unknown_omitted)
{
    struct kp_procstats ps = {.cpu_seconds = -1, .start_time_seconds = -1,
                              .open_fds = -1, .max_fds = 5};
    char *s = render(&ps, true);
    ck_assert_str_eq(s, "# HELP process_max_fds Maximum number of open file "
                        "descriptors.\n"
                        "# TYPE process_max_fds gauge\n"
                        "process_max_fds 5\n");
    free(s);
}
END_TEST

static bool name_ok(const char *s, size_t n)
{
    if (n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     c == '_' || c == ':';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9')) {
            return false;
        }
    }
    return true;
}

/*
 * Checks an exposition line by line: comments are HELP/TYPE/UNIT of a
 * well-formed name; TYPE follows HELP of the same family; each family is
 * declared once; a sample "NAME VALUE" belongs to the family declared last
 * (NAME is the family, or with OpenMetrics the counter's NAME_total) and
 * its value parses as a number.
 */
static void check_lines(const char *s, bool om)
{
    char family[128] = "";
    char seen[4096] = " ";
    char type[256] = "";
    int samples = 0;
    while (*s) {
        const char *nl = strchr(s, '\n');
        ck_assert_ptr_nonnull(nl);
        size_t len = (size_t)(nl - s);
        char line[512];
        ck_assert_uint_lt(len, sizeof(line));
        memcpy(line, s, len);
        line[len] = '\0';
        s = nl + 1;
        if (line[0] == '#') {
            char kw[8], name[128], rest[256];
            ck_assert_int_eq(sscanf(line, "# %7s %127s %255[^\n]", kw, name,
                                    rest),
                             3);
            ck_assert(name_ok(name, strlen(name)));
            if (strcmp(kw, "HELP") == 0) {
                char key[132];
                snprintf(key, sizeof(key), " %s ", name);
                ck_assert_msg(!strstr(seen, key), "%s twice", name);
                ck_assert_uint_lt(strlen(seen) + strlen(key), sizeof(seen));
                strcat(seen, key + 1);
                snprintf(family, sizeof(family), "%s", name);
                type[0] = '\0';
            } else if (strcmp(kw, "TYPE") == 0) {
                ck_assert_str_eq(name, family);
                snprintf(type, sizeof(type), "%s", rest);
                ck_assert(strcmp(type, "counter") == 0 ||
                          strcmp(type, "gauge") == 0);
            } else {
                ck_assert(om);
                ck_assert_str_eq(kw, "UNIT");
                ck_assert_str_eq(name, family);
                size_t fl = strlen(family), ul = strlen(rest);
                ck_assert(fl > ul && family[fl - ul - 1] == '_' &&
                          strcmp(family + fl - ul, rest) == 0);
            }
            continue;
        }
        char name[128];
        double v;
        char *end;
        ck_assert_int_eq(sscanf(line, "%127s", name), 1);
        ck_assert(name_ok(name, strlen(name)));
        ck_assert(type[0]);
        char want[140];
        snprintf(want, sizeof(want), "%s%s", family,
                 om && strcmp(type, "counter") == 0 ? "_total" : "");
        ck_assert_str_eq(name, want);
        v = strtod(line + strlen(name) + 1, &end);
        ck_assert_msg(*end == '\0' && end != line + strlen(name) + 1,
                      "value of %s", line);
        ck_assert(v >= 0);
        samples++;
    }
    ck_assert_int_eq(samples, 7);
}

START_TEST(test_lines_parse)
{
    for (int om = 0; om <= 1; om++) {
        struct kp_buf b;
        kp_buf_init(&b, 0);
        kp_procstats_render(om, &b);
        kp_buf_put_bytes(&b, "", 1);
        check_lines((const char *)b.data, om);
        kp_buf_deinit(&b);
    }
}
END_TEST

static Suite *procstats_suite(void)
{
    Suite *s = suite_create("procstats");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_plausible);
    tcase_add_test(tc, test_golden_openmetrics);
    tcase_add_test(tc, test_golden_prometheus);
    tcase_add_test(tc, test_unknown_omitted);
    tcase_add_test(tc, test_lines_parse);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(procstats_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
