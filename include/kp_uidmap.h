/*
 * kp_uidmap.h - connections counted per peer uid (max_clients_per_uid):
 * an open-addressing map from uid to count that forgets a uid when its
 * count drops to 0, so its size follows the uids connected, not the uids
 * ever seen.
 */
#ifndef KP_UIDMAP_H
#define KP_UIDMAP_H

#include <sys/types.h>

#include "kp_common.h"

struct kp_uidmap_slot {
    uid_t uid;
    uint32_t cnt; /* 0 = free slot */
};

struct kp_uidmap {
    struct kp_uidmap_slot *slots; /* owned */
    uint32_t cap, used;
};

void kp_uidmap_init(struct kp_uidmap *m);
void kp_uidmap_deinit(struct kp_uidmap *m);
uint32_t kp_uidmap_get(const struct kp_uidmap *m, uid_t uid);
/* Adds delta (+1 or -1) to uid's count. */
void kp_uidmap_add(struct kp_uidmap *m, uid_t uid, int delta);

#endif
