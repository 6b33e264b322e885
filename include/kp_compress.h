/*
 * kp_compress.h - RecordBatch compression. One compressor per process keeps
 * the codec contexts and is reused for every batch (no allocation per batch
 * on the hot path). lz4 output is an LZ4 frame with independent blocks (what
 * Kafka accepts); gzip is a plain gzip stream; zstd a zstd frame; snappy
 * the snappy-java stream the Java producer writes (see kp_compress.c).
 */
#ifndef KP_COMPRESS_H
#define KP_COMPRESS_H

#include "kp_buf.h"
#include "kp_conf.h"

struct kp_compressor;

struct kp_compressor *kp_compressor_create(void);
void kp_compressor_destroy(struct kp_compressor *cz);

/* Whether this build has the codec (every codec, in this build). */
bool kp_codec_available(enum kp_codec codec);

/*
 * Appends the compressed form of in[0..n) to *out. level KP_LEVEL_DEFAULT
 * uses the codec's default. Returns KP_OK, or KP_ERROR (logged) on a codec
 * failure or an unavailable codec.
 */
int kp_compress(struct kp_compressor *cz, enum kp_codec codec, int level,
                const uint8_t *in, size_t n, struct kp_buf *out);

/* Appends the decompressed form to *out (tests, batch splitting). Bounded by
 * max_out so a hostile input cannot inflate without limit. snappy input may
 * be a snappy-java stream or one raw snappy block (librdkafka's). */
int kp_decompress(enum kp_codec codec, const uint8_t *in, size_t n,
                  size_t max_out, struct kp_buf *out);

#endif
