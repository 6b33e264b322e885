/*
 * kp_idemp.h - the idempotent producer's identity: InitProducerId on the
 * best live broker before the first idempotent produce, and again when the
 * broker no longer knows the producer id or a sequence gap needs a fresh
 * one. Sequence numbers themselves live in each partition.
 */
#ifndef KP_IDEMP_H
#define KP_IDEMP_H

#include <ev.h>

#include "kp_common.h"

struct kp_conf;
struct kp_metadata;

enum kp_idemp_state {
    KP_IDEMP_OFF,        /* no topic asks for idempotence yet */
    KP_IDEMP_NEED_PID,   /* InitProducerId not sent */
    KP_IDEMP_REQUESTING, /* InitProducerId in flight */
    KP_IDEMP_READY,
    KP_IDEMP_UNSUPPORTED, /* brokers do not implement InitProducerId */
    KP_IDEMP__COUNT
};
extern const char *const kp_idemp_state_names[KP_IDEMP__COUNT];

struct kp_idemp {
    struct ev_loop *loop;        /* borrowed */
    struct kp_conf *const *conf; /* borrowed: the current configuration */
    struct kp_metadata *md;      /* borrowed: brokers to ask */
    enum kp_idemp_state state;
    ev_timer retry; /* InitProducerId asked again after a failure */
    int64_t pid;    /* -1 until READY */
    int16_t epoch;
    void (*on_ready)(void *arg); /* a producer id came */
    void *arg;                   /* borrowed */
};

void kp_idemp_init(struct kp_idemp *id, struct ev_loop *loop,
                   struct kp_conf *const *conf, struct kp_metadata *md,
                   void (*on_ready)(void *arg), void *arg);
void kp_idemp_deinit(struct kp_idemp *id);
/* Sends InitProducerId if one is needed (some topic asks for idempotence)
 * and a broker is up. */
void kp_idemp_kick(struct kp_idemp *id);
/* A batch stamped with (pid, epoch) will never be appended: when that is
 * the current id, a new one is needed for the sequences to restart. */
void kp_idemp_gap(struct kp_idemp *id, int64_t pid, int16_t epoch,
                  const char *why);
/* The producer id batches may be stamped with now, or -1. */
int64_t kp_idemp_pid(const struct kp_idemp *id);

#endif
