/*
 * kp_partitioner.c - keyed partition choice. Each hash reproduces, bit for
 * bit, the client whose placement users expect: Java's murmur2 (the
 * default, so kproxyd and Java producers put a key on the same partition),
 * sarama's FNV-1a with its own sign handling, and librdkafka's "consistent"
 * CRC-32. Key-less messages never come here (sticky partitioner, kp_topic).
 */
#include "kp_partitioner.h"

#include <zlib.h>

/*
 * Java's org.apache.kafka.common.utils.Utils.murmur2: MurmurHash2 with seed
 * 0x9747b28c, little-endian 4-byte words, the tail bytes taken unsigned.
 * Java's int arithmetic wraps, which uint32_t reproduces; returns the bits
 * of Java's (signed) int.
 */
uint32_t kp_murmur2(const void *key, size_t len)
{
    const uint8_t *p = key;
    const uint32_t m = 0x5bd1e995;
    const int r = 24;
    /* Java: seed ^ data.length, the length being an int. */
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    size_t words = len / 4;

    for (size_t i = 0; i < words; i++, p += 4) {
        uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8 |
                     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)p[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)p[1] << 8;
        /* fall through */
    case 1:
        h ^= p[0];
        h *= m;
        break;
    default:
        break;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

/* 32-bit FNV-1a (Go's hash/fnv New32a): offset basis 0x811c9dc5, prime
 * 16777619, xor before multiply. */
uint32_t kp_fnv1a(const void *key, size_t len)
{
    const uint8_t *p = key;
    uint32_t h = 0x811c9dc5u;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

/* IEEE CRC-32 as zlib's crc32() (librdkafka's rd_crc32 is the same). */
uint32_t kp_crc32(const void *key, size_t len)
{
    return (uint32_t)crc32_z(0, key, len);
}

/*
 * The partition for a non-null key among partition_cnt (> 0) partitions,
 * computed exactly as the client `kind` names does, sign quirks included.
 */
int32_t kp_partitioner_pick(enum kp_partitioner_kind kind, const uint8_t *key,
                            size_t key_len, int32_t partition_cnt)
{
    kp_assert(partition_cnt > 0);

    switch (kind) {
    case KP_PART_FNV1A: {
        /* sarama HashPartitioner: Go's % truncates like C's, then the
         * sign is dropped (not Java's toPositive). */
        int32_t h = (int32_t)kp_fnv1a(key, key_len);
        int32_t p = h % partition_cnt;
        return p < 0 ? -p : p;
    }
    case KP_PART_CRC32:
        /* rd_kafka_msg_partitioner_consistent: unsigned crc % cnt. */
        return (int32_t)(kp_crc32(key, key_len) % (uint32_t)partition_cnt);
    case KP_PART_MURMUR2:
    case KP_PART__COUNT:
    default:
        /* Java BuiltInPartitioner: toPositive(murmur2(key)) % cnt. */
        return (int32_t)((kp_murmur2(key, key_len) & 0x7fffffff) %
                         (uint32_t)partition_cnt);
    }
}
