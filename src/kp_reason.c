/*
 * kp_reason.c - names of the fate reasons (kp_reason.h).
 */
#include "kp_reason.h"

const char *const kp_reason_names[KP_REASON__COUNT] = {
#define KP_REASON_NAME(e, name, rej) name,
    KP_REASON_LIST(KP_REASON_NAME)
#undef KP_REASON_NAME
};

static const unsigned char kp_reason_rej[KP_REASON__COUNT] = {
#define KP_REASON_REJ(e, name, rej) rej,
    KP_REASON_LIST(KP_REASON_REJ)
#undef KP_REASON_REJ
};

int kp_reason_is_reject(enum kp_reason r)
{
    return (unsigned)r < KP_REASON__COUNT && kp_reason_rej[r];
}
