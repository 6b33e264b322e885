/*
 * kp_uidmap.c - a uid -> count map with linear probing and backward-shift
 * deletion (kp_uidmap.h).
 */
#include "kp_uidmap.h"

void kp_uidmap_init(struct kp_uidmap *m)
{
    m->cap = 64;
    m->used = 0;
    m->slots = kp_calloc(m->cap, sizeof(*m->slots));
}

void kp_uidmap_deinit(struct kp_uidmap *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

static uint32_t kp_uidmap_home(const struct kp_uidmap *m, uid_t uid)
{
    return ((uint32_t)uid * 2654435761u) & (m->cap - 1);
}

/* The slot of uid, or the free slot where it would go. */
static uint32_t kp_uidmap_find(const struct kp_uidmap *m, uid_t uid)
{
    uint32_t i = kp_uidmap_home(m, uid);
    while (m->slots[i].cnt && m->slots[i].uid != uid) {
        i = (i + 1) & (m->cap - 1);
    }
    return i;
}

uint32_t kp_uidmap_get(const struct kp_uidmap *m, uid_t uid)
{
    return m->slots[kp_uidmap_find(m, uid)].cnt;
}

static void kp_uidmap_grow(struct kp_uidmap *m)
{
    struct kp_uidmap_slot *old = m->slots;
    uint32_t old_cap = m->cap;

    m->cap *= 2;
    m->slots = kp_calloc(m->cap, sizeof(*m->slots));
    for (uint32_t i = 0; i < old_cap; i++) {
        if (old[i].cnt) {
            m->slots[kp_uidmap_find(m, old[i].uid)] = old[i];
        }
    }
    free(old);
}

/* Frees slot i, moving back the entries of its probe run. */
static void kp_uidmap_remove(struct kp_uidmap *m, uint32_t i)
{
    uint32_t mask = m->cap - 1;

    for (uint32_t j = (i + 1) & mask; m->slots[j].cnt; j = (j + 1) & mask) {
        uint32_t home = kp_uidmap_home(m, m->slots[j].uid);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].cnt = 0;
    m->used--;
}

void kp_uidmap_add(struct kp_uidmap *m, uid_t uid, int delta)
{
    if ((m->used + 1) * 4 > m->cap * 3) {
        kp_uidmap_grow(m);
    }
    uint32_t i = kp_uidmap_find(m, uid);
    if (!m->slots[i].cnt) {
        if (delta <= 0) {
            return;
        }
        m->slots[i].uid = uid;
        m->used++;
    }
    kp_assert(delta > 0 || m->slots[i].cnt >= (uint32_t)-delta);
    m->slots[i].cnt = (uint32_t)((int64_t)m->slots[i].cnt + delta);
    if (!m->slots[i].cnt) {
        kp_uidmap_remove(m, i);
    }
}
