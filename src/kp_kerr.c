/*
 * kp_kerr.c - the Kafka error table (kp_kerr.h), looked up by code.
 */
#include "kp_kerr.h"

struct kp_kerr_entry {
    int16_t code;
    enum kp_kerr_action action;
    enum kp_reason reason;
    const char *name;
};

static const struct kp_kerr_entry kp_kerr_table[] = {
#define KP_KERR_ROW(e, c, act, reason)                                         \
    {(c), KP_ACT_##act, KP_REASON_##reason, #e},
    KP_KERR_LIST(KP_KERR_ROW)
#undef KP_KERR_ROW
};

/* The table is sorted by code (the list is written in that order), so a
 * binary search finds an entry. */
static const struct kp_kerr_entry *kp_kerr_find(int16_t code)
{
    size_t lo = 0, hi = KP_ARRAY_LEN(kp_kerr_table);

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (kp_kerr_table[mid].code == code) {
            return &kp_kerr_table[mid];
        }
        if (kp_kerr_table[mid].code < code) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

const char *kp_kerr_name(int16_t code)
{
    const struct kp_kerr_entry *e = kp_kerr_find(code);
    return e ? e->name : "UNKNOWN";
}

enum kp_kerr_action kp_kerr_action(int16_t code)
{
    const struct kp_kerr_entry *e = kp_kerr_find(code);
    return e ? e->action : KP_ACT_FAIL;
}

enum kp_reason kp_kerr_reason(int16_t code)
{
    const struct kp_kerr_entry *e = kp_kerr_find(code);
    return e ? e->reason : KP_REASON_BROKER_ERROR;
}
