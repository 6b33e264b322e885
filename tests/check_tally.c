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

    kp_runs_add(&r, a, 0, 0);
    kp_runs_add(&r, a, 0, 0);
    kp_runs_add(&r, b, 0, 0);
    kp_runs_add(&r, a, 1, 0);
    ck_assert_uint_eq(r.cnt, 3);
    ck_assert_uint_eq(r.v[0].count, 2);
    ck_assert_uint_eq(a->refs, 3); /* creator + two runs */

    kp_runs_take(&dst, &r, 3); /* a:2 and b:1 move over */
    ck_assert_uint_eq(dst.cnt, 2);
    ck_assert_uint_eq(dst.v[0].count, 2);
    ck_assert_uint_eq(dst.v[1].count, 1);
    ck_assert_uint_eq(r.cnt - r.head, 1);
    ck_assert_ptr_eq(r.v[r.head].tally, a);
    ck_assert_uint_eq(r.v[r.head].gen, 1);

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

    for (int i = 0; i < 5; i++) {
        kp_runs_add(&r, a, 0, 0);
    }
    kp_runs_take(&dst, &r, 2);
    ck_assert_uint_eq(dst.v[0].count, 2);
    ck_assert_uint_eq(r.v[r.head].count, 3);
    kp_runs_deinit(&r);
    kp_runs_deinit(&dst);
    kp_tally_put(a);
}
END_TEST

/* Spool seqs: nothing is stored until a message has one; then one entry
 * per message (0 before it and for messages without), moved by take in
 * step with the messages, whichever side had them. */
START_TEST(test_runs_spool_seqs)
{
    struct kp_tally *a = kp_tally_create(NULL, NULL);
    struct kp_tally *b = kp_tally_create(NULL, NULL);
    struct kp_runs r = {0}, dst = {0}, plain = {0};
    const uint64_t *seqs;
    uint32_t n;

    for (int i = 0; i < 3; i++) {
        kp_runs_add(&r, a, 0, 0);
        kp_runs_add_spool(&r, 0);
    }
    ck_assert_ptr_null(kp_runs_spool(&r, &n));
    ck_assert_uint_eq(n, 0);
    kp_runs_add(&r, b, 0, 0);
    kp_runs_add_spool(&r, 41);
    kp_runs_add(&r, b, 0, 0);
    kp_runs_add_spool(&r, 42);
    kp_runs_add(&r, a, 0, 0);
    kp_runs_add_spool(&r, 0);
    seqs = kp_runs_spool(&r, &n);
    ck_assert_uint_eq(n, 6);
    ck_assert(seqs[0] == 0 && seqs[2] == 0 && seqs[3] == 41 &&
              seqs[4] == 42 && seqs[5] == 0);

    kp_runs_take(&dst, &r, 4); /* a:3, b:1 (41) */
    seqs = kp_runs_spool(&dst, &n);
    ck_assert_uint_eq(n, 4);
    ck_assert(seqs[0] == 0 && seqs[3] == 41);
    seqs = kp_runs_spool(&r, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert(seqs[0] == 42 && seqs[1] == 0);

    /* into runs that had none: zeros for what they held before */
    kp_runs_add(&plain, a, 0, 0);
    kp_runs_take(&plain, &r, 1);
    seqs = kp_runs_spool(&plain, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert(seqs[0] == 0 && seqs[1] == 42);
    kp_runs_drop_first(&r);
    ck_assert_uint_eq(kp_runs_count(&r), 0);
    kp_runs_deinit(&r);
    kp_runs_deinit(&dst);
    kp_runs_deinit(&plain);
    kp_tally_put(a);
    kp_tally_put(b);
}
END_TEST

static int outputs;

static void on_output(void *owner)
{
    (void)owner;
    outputs++;
}

static char *out_text(struct kp_tally *t)
{
    char *s = kp_malloc(t->out.len + 1);
    memcpy(s, t->out.data, t->out.len);
    s[t->out.len] = '\0';
    return s;
}

/* Receipts: numbers are kept only for tallies that want them, travel
 * with their messages through take (splits), and come out per run with
 * the message's index in the batch added to the base offset. */
START_TEST(test_runs_receipts)
{
    int owner;
    struct kp_tally *a = kp_tally_create(NULL, &owner);
    struct kp_tally *b = kp_tally_create(NULL, &owner); /* no receipts */
    struct kp_runs r = {0}, half = {0};
    struct kp_gens g;

    kp_gens_init(&g);
    kp_tally_want_receipts(a, on_output);
    /* a writes N 1, 3, 4 to this partition, b two messages between */
    kp_runs_add(&r, a, 0, 1);
    kp_runs_add(&r, b, 0, 0);
    kp_runs_add(&r, b, 0, 0);
    kp_runs_add(&r, a, 0, 3);
    kp_runs_add(&r, a, 0, 4);
    ck_assert_uint_eq(r.seq_cnt, 3);
    a->pending = 3;
    b->pending = 2;
    kp_gens_add(&g, 0, 5);

    /* a split: the first 2 messages go to their own batch */
    kp_runs_take(&half, &r, 2);
    ck_assert_uint_eq(kp_runs_count(&half), 2);
    ck_assert_uint_eq(kp_runs_count(&r), 3);
    ck_assert_uint_eq(half.seq_cnt - half.seq_head, 1);
    ck_assert_uint_eq(r.seq_cnt - r.seq_head, 2);

    outputs = 0;
    kp_runs_settle(&r, &g, KP_FATE_OK, KP_REASON_NONE, 7, 100);
    char *s = out_text(a);
    /* r is [b, a3, a4]: index 1 and 2 */
    ck_assert_str_eq(s, "ok 3 7 101\nok 4 7 102\n");
    free(s);
    ck_assert_int_eq(outputs, 1);
    ck_assert_uint_eq(a->delivered, 2);
    ck_assert_uint_eq(b->delivered, 1);

    a->out.len = 0;
    kp_runs_settle(&half, &g, KP_FATE_FAILED, KP_REASON_DELIVERY_TIMEOUT,
                   -1, -1);
    s = out_text(a);
    ck_assert_str_eq(s, "failed 1 delivery_timeout\n");
    free(s);
    ck_assert_uint_eq(a->pending, 0);
    ck_assert_uint_eq(b->failed, 1);
    ck_assert(kp_gens_done(&g, 0));

    kp_runs_deinit(&r);
    kp_runs_deinit(&half);
    kp_tally_put(a);
    kp_tally_put(b);
    kp_gens_deinit(&g);
}
END_TEST

/* Held messages are replayed one by one: first/drop_first keep each
 * message's number, and a detached tally gets no lines. */
START_TEST(test_runs_first_and_detach)
{
    int owner;
    struct kp_tally *a = kp_tally_create(NULL, &owner);
    struct kp_runs r = {0};
    struct kp_tally *t;
    uint32_t gen;
    uint64_t seq;
    struct kp_gens g;

    kp_gens_init(&g);
    kp_tally_want_receipts(a, on_output);
    for (uint64_t n = 1; n <= 1000; n++) {
        kp_runs_add(&r, a, 0, n * 2);
    }
    for (uint64_t n = 1; n <= 998; n++) {
        kp_runs_first(&r, &t, &gen, &seq);
        ck_assert_ptr_eq(t, a);
        ck_assert_uint_eq(seq, n * 2);
        kp_runs_drop_first(&r);
    }
    /* adding after consuming from the front reuses the room */
    kp_runs_add(&r, a, 0, 5000);
    ck_assert_uint_eq(kp_runs_count(&r), 3);
    kp_runs_first(&r, &t, &gen, &seq);
    ck_assert_uint_eq(seq, 1998);

    a->pending = 3;
    kp_gens_add(&g, 0, 3);
    kp_tally_detach(a);
    kp_runs_settle(&r, &g, KP_FATE_REJECTED, KP_REASON_BAD_PARTITION, -1,
                   -1);
    ck_assert_uint_eq(a->out.len, 0);
    ck_assert_uint_eq(a->rejected, 3);
    kp_runs_deinit(&r);
    kp_tally_put(a);
    kp_gens_deinit(&g);
}
END_TEST

/* The batched `ok` lines (numbers incremented as text) say exactly what
 * kp_receipt_format says, across digit carries, gaps and acks 0. */
START_TEST(test_receipts_ok_fast_path)
{
    static const int64_t bases[] = {-1, 0, 7, 95, 99990, 999999999999990};
    int owner;
    uint32_t x = 12345;

    for (size_t b = 0; b < KP_ARRAY_LEN(bases); b++) {
        struct kp_tally *a = kp_tally_create(NULL, &owner);
        struct kp_runs r = {0};
        struct kp_gens g;
        char want[KP_RECEIPT_MAX * 300], line[KP_RECEIPT_MAX];
        size_t wl = 0;
        uint64_t seq = b == 5 ? UINT64_MAX - 150 : 5;

        kp_gens_init(&g);
        kp_tally_want_receipts(a, on_output);
        for (int i = 0; i < 250; i++) {
            x = x * 1103515245 + 12345;
            seq += (x >> 16) % 5 ? 1 : 1 + (x >> 8) % 1000; /* gaps */
            if (b == 5) {
                seq = UINT64_MAX - 250 + (uint64_t)i;
            }
            kp_runs_add(&r, a, 0, seq);
            int64_t off = bases[b] < 0 ? -1 : bases[b] + i;
            size_t n = kp_receipt_format(line, KP_FATE_OK, seq, 3, off,
                                         KP_REASON_NONE);
            memcpy(want + wl, line, n);
            wl += n;
        }
        a->pending = 250;
        kp_gens_add(&g, 0, 250);
        kp_runs_settle(&r, &g, KP_FATE_OK, KP_REASON_NONE, 3, bases[b]);
        ck_assert_uint_eq(a->out.len, wl);
        ck_assert(memcmp(a->out.data, want, wl) == 0);
        kp_runs_deinit(&r);
        kp_tally_put(a);
        kp_gens_deinit(&g);
    }
}
END_TEST

START_TEST(test_receipt_format)
{
    char buf[KP_RECEIPT_MAX];
    size_t n;

    n = kp_receipt_format(buf, KP_FATE_OK, UINT64_MAX, INT32_MAX, INT64_MAX,
                          KP_REASON_NONE);
    ck_assert_uint_eq(n, 55);
    ck_assert(memcmp(buf, "ok 18446744073709551615 2147483647 "
                          "9223372036854775807\n", n) == 0);
    n = kp_receipt_format(buf, KP_FATE_OK, 1, 0, -1, KP_REASON_NONE);
    ck_assert(memcmp(buf, "ok 1 0 -1\n", n) == 0 && n == 10);
    for (int r = 0; r < KP_REASON__COUNT; r++) {
        n = kp_receipt_format(buf, KP_FATE_REJECTED, UINT64_MAX, 0, 0,
                              (enum kp_reason)r);
        ck_assert_uint_le(n, KP_RECEIPT_MAX);
    }
    n = kp_receipt_format(buf, KP_FATE_REJECTED, 12, 0, 0,
                          KP_REASON_TOO_LONG);
    ck_assert(memcmp(buf, "rejected 12 too_long\n", n) == 0);
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
    tcase_add_test(tc, test_runs_spool_seqs);
    tcase_add_test(tc, test_gens_barrier);
    tcase_add_test(tc, test_runs_receipts);
    tcase_add_test(tc, test_runs_first_and_detach);
    tcase_add_test(tc, test_receipt_format);
    tcase_add_test(tc, test_receipts_ok_fast_path);
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
