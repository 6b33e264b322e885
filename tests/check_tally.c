/*
 * check_tally.c - tallies, runs and flush generations: the bookkeeping
 * behind half-close summaries and the `flush` barrier.
 */
#include <check.h>

#include "kp_tally.h"

START_TEST(test_runs_merge_and_take)
{
    struct kp_tally *a = kp_tally_create(NULL, NULL);
    struct kp_tally *b = kp_tally_create(NULL, NULL);
    struct kp_runs r = {0}, dst = {0};

    kp_runs_add(&r, a, 0, 1);
    kp_runs_add(&r, a, 0, 1);
    kp_runs_add(&r, b, 0, 1);
    kp_runs_add(&r, a, 1, 1);
    ck_assert_uint_eq(r.cnt, 3);
    ck_assert_uint_eq(r.v[0].count, 2);
    ck_assert_uint_eq(a->refs, 3); /* creator + two runs */

    kp_runs_take(&dst, &r, 3); /* a:2 and b:1 move over */
    ck_assert_uint_eq(dst.cnt, 2);
    ck_assert_uint_eq(dst.v[0].count, 2);
    ck_assert_uint_eq(dst.v[1].count, 1);
    ck_assert_uint_eq(r.cnt, 1);
    ck_assert_ptr_eq(r.v[0].tally, a);
    ck_assert_uint_eq(r.v[0].gen, 1);

    kp_runs_deinit(&r);
    kp_runs_deinit(&dst);
    ck_assert_uint_eq(a->refs, 1);
    ck_assert_uint_eq(b->refs, 1);
    kp_tally_put(a);
    kp_tally_put(b);
}
END_TEST

START_TEST(test_runs_take_splits_a_run)
{
    struct kp_tally *a = kp_tally_create(NULL, NULL);
    struct kp_runs r = {0}, dst = {0};

    kp_runs_add(&r, a, 0, 5);
    kp_runs_take(&dst, &r, 2);
    ck_assert_uint_eq(dst.v[0].count, 2);
    ck_assert_uint_eq(r.v[0].count, 3);
    kp_runs_deinit(&r);
    kp_runs_deinit(&dst);
    kp_tally_put(a);
}
END_TEST

START_TEST(test_gens_barrier)
{
    struct kp_gens g;
    struct kp_barrier b0, b1, b2, b3;
    kp_gens_init(&g);

    /* Nothing pending: a barrier is done at once. */
    kp_gens_barrier(&g, &b0);
    ck_assert(kp_gens_done(&g, b0.gen));
    kp_gens_unwatch(&g, &b0);

    kp_gens_add(&g, g.current, 3);
    kp_gens_barrier(&g, &b1);      /* waits for those 3 */
    kp_gens_add(&g, g.current, 2); /* read after the barrier */
    ck_assert(!kp_gens_done(&g, b1.gen));
    kp_gens_settle(&g, b1.gen, 2, true);
    ck_assert(!kp_gens_done(&g, b1.gen));
    kp_gens_settle(&g, g.current, 2, true); /* later ones do not count */
    ck_assert(!kp_gens_done(&g, b1.gen));
    kp_gens_settle(&g, b1.gen, 1, false);
    ck_assert(kp_gens_done(&g, b1.gen));
    /* it counted the fates of exactly the messages it waited for */
    ck_assert_uint_eq(b1.delivered, 2);
    ck_assert_uint_eq(b1.failed, 1);
    kp_gens_unwatch(&g, &b1);

    /* Two barriers, settled out of order. */
    kp_gens_add(&g, g.current, 1);
    kp_gens_barrier(&g, &b2);
    kp_gens_add(&g, g.current, 1);
    kp_gens_barrier(&g, &b3);
    kp_gens_settle(&g, b3.gen, 1, true);
    ck_assert(!kp_gens_done(&g, b2.gen));
    ck_assert(!kp_gens_done(&g, b3.gen));
    kp_gens_settle(&g, b2.gen, 1, false);
    ck_assert(kp_gens_done(&g, b2.gen));
    ck_assert(kp_gens_done(&g, b3.gen));
    ck_assert_uint_eq(b2.delivered + b2.failed, 1);
    ck_assert_uint_eq(b3.delivered + b3.failed, 2);
    kp_gens_unwatch(&g, &b3);
    kp_gens_unwatch(&g, &b2);
    ck_assert_ptr_null(g.barriers);
    kp_gens_deinit(&g);
}
END_TEST

static Suite *tally_suite(void)
{
    Suite *s = suite_create("tally");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_runs_merge_and_take);
    tcase_add_test(tc, test_runs_take_splits_a_run);
    tcase_add_test(tc, test_gens_barrier);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(tally_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
