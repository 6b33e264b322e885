/*
 * kp_partitioner.h - keyed partition choice, compatible with the clients
 * users already run: murmur2 (Java), fnv1a (sarama), crc32 (librdkafka's
 * consistent). Key-less messages use the sticky partitioner, which lives in
 * kp_topic (it needs batch state).
 */
#ifndef KP_PARTITIONER_H
#define KP_PARTITIONER_H

#include "kp_conf.h"

/* Java's Utils.murmur2 (seed 0x9747b28c). */
uint32_t kp_murmur2(const void *key, size_t len);
/* 32-bit FNV-1a, as Go's hash/fnv New32a. */
uint32_t kp_fnv1a(const void *key, size_t len);
/* IEEE CRC-32 (zlib's crc32). */
uint32_t kp_crc32(const void *key, size_t len);

/*
 * Partition in [0, partition_cnt) for a non-null key, exactly as the
 * respective client computes it:
 *  murmur2: (murmur2(key) & 0x7fffffff) % cnt         (Java DefaultPartitioner)
 *  fnv1a:   p = (int32)fnv1a(key) % cnt; if p < 0, -p (sarama HashPartitioner)
 *  crc32:   crc32(key) % cnt                            (librdkafka consistent)
 */
int32_t kp_partitioner_pick(enum kp_partitioner_kind kind, const uint8_t *key,
                            size_t key_len, int32_t partition_cnt);

#endif
