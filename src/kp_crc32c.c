/*
 * kp_crc32c.c - CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), the
 * RecordBatch checksum.
 *
 * Two implementations computing the same function:
 *  - kp_crc32c_sw: portable slicing-by-8 tables;
 *  - the SSE4.2 crc32 instruction, picked at start-up when the CPU has it.
 *    Buffers of a few KiB and more are cut into three lanes run as three
 *    independent dependency chains (the instruction has a latency of 3
 *    cycles but a throughput of 1), and the lanes are joined with a
 *    precomputed "append L zero bytes" operator.
 *
 * The tables are built once by a constructor; they are constant afterwards,
 * which is why they may be file-level statics.
 */
#include "kp_crc32c.h"

#define KP_CRC32C_POLY 0x82f63b78u

/* Lane length of the interleaved path (bytes per lane per round). */
#define KP_CRC32C_LANE 4096

static uint32_t kp_crc32c_tab[8][256];
/* kp_crc32c_shift[k][b]: the register (b << 8k) followed by LANE zeros. */
static uint32_t kp_crc32c_shift[4][256];

static uint32_t (*kp_crc32c_impl)(uint32_t reg, const uint8_t *p, size_t n);

/* Raw register update: no pre/post inversion. */
static uint32_t kp_crc32c_sw_reg(uint32_t reg, const uint8_t *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        reg = kp_crc32c_tab[0][(reg ^ *p++) & 0xff] ^ (reg >> 8);
        n--;
    }
    while (n >= 8) {
        uint32_t lo = reg ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                             (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 |
                      (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        reg = kp_crc32c_tab[7][lo & 0xff] ^ kp_crc32c_tab[6][(lo >> 8) & 0xff] ^
              kp_crc32c_tab[5][(lo >> 16) & 0xff] ^ kp_crc32c_tab[4][lo >> 24] ^
              kp_crc32c_tab[3][hi & 0xff] ^ kp_crc32c_tab[2][(hi >> 8) & 0xff] ^
              kp_crc32c_tab[1][(hi >> 16) & 0xff] ^ kp_crc32c_tab[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) {
        reg = kp_crc32c_tab[0][(reg ^ *p++) & 0xff] ^ (reg >> 8);
    }
    return reg;
}

/*
 * Portable CRC-32C. crc is 0 to start or a previous result to continue, so
 * kp_crc32c_sw(kp_crc32c_sw(0, a, n), b, m) is the CRC of a||b.
 */
uint32_t kp_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    return ~kp_crc32c_sw_reg(~crc, buf, len);
}

#if defined(__x86_64__)
#include <nmmintrin.h>

static inline uint32_t kp_crc32c_shift_lane(uint32_t reg)
{
    return kp_crc32c_shift[0][reg & 0xff] ^
           kp_crc32c_shift[1][(reg >> 8) & 0xff] ^
           kp_crc32c_shift[2][(reg >> 16) & 0xff] ^
           kp_crc32c_shift[3][reg >> 24];
}

static inline uint64_t kp_ld64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* x86 is little-endian, as the CRC wants */
    return v;
}

__attribute__((target("sse4.2"))) static uint32_t
kp_crc32c_hw_reg(uint32_t reg, const uint8_t *p, size_t n)
{
    uint64_t r = reg;

    /* No alignment prologue: unaligned 8-byte loads cost x86 nothing, and
     * short buffers would spend more on it than on the rest. */
    while (n >= 3 * KP_CRC32C_LANE) {
        const uint8_t *a = p;
        const uint8_t *b = p + KP_CRC32C_LANE;
        const uint8_t *c = p + 2 * KP_CRC32C_LANE;
        uint64_t rb = 0;
        uint64_t rc = 0;
        for (size_t i = 0; i < KP_CRC32C_LANE; i += 8) {
            r = _mm_crc32_u64(r, kp_ld64(a + i));
            rb = _mm_crc32_u64(rb, kp_ld64(b + i));
            rc = _mm_crc32_u64(rc, kp_ld64(c + i));
        }
        /* reg(s, A||B) = shift(reg(s, A), |B|) ^ reg(0, B): linearity. */
        r = kp_crc32c_shift_lane((uint32_t)r) ^ (uint32_t)rb;
        r = kp_crc32c_shift_lane((uint32_t)r) ^ (uint32_t)rc;
        p += 3 * KP_CRC32C_LANE;
        n -= 3 * KP_CRC32C_LANE;
    }
    while (n >= 8) {
        r = _mm_crc32_u64(r, kp_ld64(p));
        p += 8;
        n -= 8;
    }
    if (n >= 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        r = _mm_crc32_u32((uint32_t)r, v);
        p += 4;
        n -= 4;
    }
    while (n--) {
        r = _mm_crc32_u8((uint32_t)r, *p++);
    }
    return (uint32_t)r;
}
#endif

__attribute__((constructor)) static void kp_crc32c_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ KP_CRC32C_POLY : c >> 1;
        }
        kp_crc32c_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t prev = kp_crc32c_tab[t - 1][i];
            kp_crc32c_tab[t][i] = kp_crc32c_tab[0][prev & 0xff] ^ (prev >> 8);
        }
    }

    /* The zero-append operator is linear: build it from the 32 unit
     * vectors, then tabulate it per byte of the register. */
    static const uint8_t zeros[KP_CRC32C_LANE];
    uint32_t unit[32];
    for (int bit = 0; bit < 32; bit++) {
        unit[bit] = kp_crc32c_sw_reg(1u << bit, zeros, sizeof(zeros));
    }
    for (int k = 0; k < 4; k++) {
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (int bit = 0; bit < 8; bit++) {
                if (b & (1u << bit)) {
                    v ^= unit[8 * k + bit];
                }
            }
            kp_crc32c_shift[k][b] = v;
        }
    }

    kp_crc32c_impl = kp_crc32c_sw_reg;
#if defined(__x86_64__)
    __builtin_cpu_init(); /* required before cpu_supports in a constructor */
    if (__builtin_cpu_supports("sse4.2")) {
        kp_crc32c_impl = kp_crc32c_hw_reg;
    }
#endif
}

/*
 * CRC-32C of buf[0..len), continuing from crc (0 to start). Uses the SSE4.2
 * instruction when the CPU has it; the result is the same either way.
 */
uint32_t kp_crc32c(uint32_t crc, const void *buf, size_t len)
{
    return ~kp_crc32c_impl(~crc, buf, len);
}
