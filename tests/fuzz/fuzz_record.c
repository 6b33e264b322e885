/*
 * fuzz_record.c - libFuzzer target for the RecordBatch and Record decoders:
 * the input as a whole batch (header, length, CRC; then its records,
 * decompressed under a bound when compressed), and the same bytes as a bare
 * records section. Nothing may read outside the input.
 */
#include "kp_compress.h"
#include "kp_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decoded output is capped: a small frame must not inflate without end. */
#define FUZZ_MAX_OUT (1u << 20)

static void fuzz_records(const uint8_t *p, size_t n, int32_t max_records)
{
    struct kp_rd r;
    struct kp_record_view v;
    struct kp_header h;

    kp_rd_init(&r, p, n);
    for (int32_t i = 0; i < max_records && kp_rd_left(&r) > 0; i++) {
        if (kp_record_next(&r, &v) != KP_OK) {
            return;
        }
        /* Touch every byte the views claim, so ASan checks the bounds. */
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < v.key_len; k++) {
            sink ^= v.key[k];
        }
        for (size_t k = 0; k < v.value_len; k++) {
            sink ^= v.value[k];
        }
        /* One past the count must fail, not read on. */
        for (int32_t j = 0; j <= v.header_cnt; j++) {
            if (kp_record_header_next(&v, &h) != KP_OK) {
                break;
            }
            for (size_t k = 0; k < h.name_len; k++) {
                sink ^= h.name[k];
            }
            for (size_t k = 0; k < h.value_len; k++) {
                sink ^= h.value[k];
            }
        }
        (void)sink;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kp_batch_hdr h;
    const uint8_t *records;
    size_t records_len;

    if (kp_recordbatch_parse(data, size, &h, &records, &records_len) == KP_OK) {
        if (h.codec == KP_CODEC_NONE) {
            fuzz_records(records, records_len, h.count);
        } else {
            struct kp_buf out;
            kp_buf_init(&out, 0);
            if (kp_decompress(h.codec, records, records_len, FUZZ_MAX_OUT,
                              &out) == KP_OK) {
                fuzz_records(out.data, out.len, h.count);
            }
            kp_buf_deinit(&out);
        }
    }
    /* The raw input as a records section, and past a batch header. */
    fuzz_records(data, size, INT32_MAX);
    if (size > KP_BATCH_HEADER_LEN) {
        fuzz_records(data + KP_BATCH_HEADER_LEN, size - KP_BATCH_HEADER_LEN,
                     INT32_MAX);
    }
    return 0;
}
