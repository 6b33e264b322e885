/*
 * kp_crc32c.h - CRC-32C (Castagnoli), the RecordBatch checksum. Uses the
 * SSE4.2 crc32 instruction when the CPU has it, a slicing table otherwise.
 */
#ifndef KP_CRC32C_H
#define KP_CRC32C_H

#include "kp_common.h"

/* crc: 0 to start; pass the previous result to continue. */
uint32_t kp_crc32c(uint32_t crc, const void *buf, size_t len);
/* The portable table version, exposed so tests can compare both paths. */
uint32_t kp_crc32c_sw(uint32_t crc, const void *buf, size_t len);

#endif
