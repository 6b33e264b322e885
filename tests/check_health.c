/*
 * check_health.c - readiness and the unreachable-cluster warning, on
 * brokers built by hand (no loop, no sockets): the not-ready reasons in
 * order, each broker's cause named; the warning given at once when every
 * broker has failed, after KP_HEALTH_DOWN_MS when one is still trying,
 * not repeated within KP_HEALTH_REPEAT_MS, and followed by an info line
 * when a connection is up again. The log is read back from stderr.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kp_broker.h"
#include "kp_conf.h"
#include "kp_health.h"
#include "kp_idemp.h"
#include "kp_log.h"
#include "kp_metadata.h"
#include "kp_router.h"

/* Two bootstrap entries and what kp_health reads around them. */
struct fixture {
    struct kp_broker b[2];
    struct kp_broker *bp[2];
    struct kp_metadata md;
    struct kp_router router;
    struct kp_conf conf;
    struct kp_idemp idemp;
    struct kp_health_src src;
};

static void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->b[0] = (struct kp_broker){.node_id = -2, .host = "kafka1",
                                 .port = 9092,
                                 .state = KP_BROKER_CONNECTING};
    f->b[1] = (struct kp_broker){.node_id = -1, .host = "127.0.0.1",
                                 .port = 1, .state = KP_BROKER_CONNECTING};
    f->bp[0] = &f->b[0];
    f->bp[1] = &f->b[1];
    f->md.brokers = f->bp;
    f->md.broker_cnt = 2;
    f->conf.path = "/etc/kproxyd/kproxyd.json";
    f->src = (struct kp_health_src){.conf = &f->conf, .router = &f->router,
                                    .md = &f->md, .idemp = &f->idemp,
                                    .started = true};
}

static void fail_broker(struct kp_broker *b, const char *why)
{
    b->state = KP_BROKER_BACKOFF;
    b->failures++;
    snprintf(b->last_error, sizeof(b->last_error), "%s", why);
}

/* stderr into an unlinked file (read-write), read back by log_text(). */
static void capture(void)
{
    char tmpl[] = "/tmp/check_health.XXXXXX";
    int fd = mkstemp(tmpl);
    ck_assert_int_ge(fd, 0);
    unlink(tmpl);
    fflush(stderr);
    ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
    close(fd);
    kp_log_set_level(KP_LOG_WARNING);
}

static char *log_text(void)
{
    static char buf[16384];
    fflush(stderr);
    ssize_t n = pread(STDERR_FILENO, buf, sizeof(buf) - 1, 0);
    ck_assert_int_ge(n, 0);
    buf[n] = '\0';
    return buf;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++) {
        n++;
    }
    return n;
}

START_TEST(test_not_ready_reasons)
{
    struct fixture f;
    char buf[512];
    fixture_init(&f);

    f.src.started = false;
    ck_assert_str_eq(kp_health_not_ready(&f.src, buf, sizeof(buf)),
                     "starting");
    f.src.started = true;
    fail_broker(&f.b[1], "connect: Connection refused");
    ck_assert_str_eq(kp_health_not_ready(&f.src, buf, sizeof(buf)),
                     "no broker connection is up (bootstrap kafka1:9092: "
                     "connecting; bootstrap 127.0.0.1:1: connect: "
                     "Connection refused)");
    f.b[0].state = KP_BROKER_UP;
    ck_assert_ptr_null(kp_health_not_ready(&f.src, buf, sizeof(buf)));
    f.src.stopping = true;
    ck_assert_str_eq(kp_health_not_ready(&f.src, buf, sizeof(buf)),
                     "shutting down");
    /* a short buffer gets a terminated prefix */
    f.src.stopping = false;
    f.b[0].state = KP_BROKER_BACKOFF;
    ck_assert_str_eq(kp_health_not_ready(&f.src, buf, 9), "no broke");
}
END_TEST

START_TEST(test_cluster_alert_at_once)
{
    struct fixture f;
    struct kp_health h;
    fixture_init(&f);
    capture();
    kp_health_init(&h, 1000);

    /* one broker still connecting: not yet */
    fail_broker(&f.b[1], "connect: Connection refused");
    kp_health_check(&h, &f.src, 2000);
    ck_assert_int_eq(count(log_text(), "cannot reach"), 0);
    /* both failed: at once, each cause, what to check */
    fail_broker(&f.b[0], "resolve: Name or service not known");
    f.router.env.queued_msgs = 7;
    kp_health_check(&h, &f.src, 3000);
    const char *log = log_text();
    ck_assert_int_eq(count(log, "warning: cannot reach the Kafka cluster: "
                                "no broker connection for 2 s (bootstrap "
                                "kafka1:9092: resolve: Name or service not "
                                "known; bootstrap 127.0.0.1:1: connect: "
                                "Connection refused); 7 message(s) waiting"),
                     1);
    ck_assert(strstr(log, "check `brokers` in /etc/kproxyd/kproxyd.json"));
    /* not again within the repeat interval; again after it */
    kp_health_check(&h, &f.src, 3000 + KP_HEALTH_REPEAT_MS - 1);
    ck_assert_int_eq(count(log_text(), "cannot reach"), 1);
    kp_health_check(&h, &f.src, 3000 + KP_HEALTH_REPEAT_MS);
    ck_assert_int_eq(count(log_text(), "cannot reach"), 2);
    ck_assert(strstr(log_text(), "no broker connection for 62 s"));
    /* up again: said at info level; a later outage is warned anew */
    kp_log_set_level(KP_LOG_INFO);
    f.b[1].state = KP_BROKER_UP;
    kp_health_check(&h, &f.src, 70000);
    ck_assert_int_eq(count(log_text(), "info: Kafka cluster reachable "
                                         "again (after 69 s)"),
                     1);
    f.b[1].state = KP_BROKER_BACKOFF;
    kp_health_check(&h, &f.src, 71000);
    ck_assert_int_eq(count(log_text(), "cannot reach"), 3);
}
END_TEST

START_TEST(test_cluster_alert_slow_address)
{
    struct fixture f;
    struct kp_health h;
    fixture_init(&f);
    capture();
    kp_health_init(&h, 1000);

    /* a blackholed address: no failure yet, but no connection either */
    kp_health_check(&h, &f.src, 1000 + KP_HEALTH_DOWN_MS - 1);
    ck_assert_int_eq(count(log_text(), "cannot reach"), 0);
    kp_health_check(&h, &f.src, 1000 + KP_HEALTH_DOWN_MS);
    ck_assert_int_eq(count(log_text(), "cannot reach"), 1);
    ck_assert(strstr(log_text(), "bootstrap kafka1:9092: connecting"));
    /* retired bootstrap entries are not counted once brokers are known */
    f.b[0].retired = true;
    char buf[256];
    kp_health_not_ready(&f.src, buf, sizeof(buf));
    ck_assert_str_eq(buf, "no broker connection is up (bootstrap "
                          "127.0.0.1:1: connecting)");
}
END_TEST

static Suite *health_suite(void)
{
    Suite *s = suite_create("health");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_not_ready_reasons);
    tcase_add_test(tc, test_cluster_alert_at_once);
    tcase_add_test(tc, test_cluster_alert_slow_address);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(health_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
