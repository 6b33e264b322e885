/*
 * kp_deadletter.h - failed messages, appended to the `dead_letter` file as
 * one JSON line each in the `json` line format plus "error" and
 * "failed_at", so the file can be replayed into a json listener unchanged.
 *
 * The file is opened as a careful root daemon does (SPEC "Isolation"):
 * never through a symbolic link, never blocking on a FIFO, and only a
 * regular file that no one else may write to.
 */
#ifndef KP_DEADLETTER_H
#define KP_DEADLETTER_H

#include "kp_common.h"

struct kp_deadletter;

/* Opens (append, creating it 0640) the file at path; NULL with the reason
 * logged. */
struct kp_deadletter *kp_deadletter_open(const char *path);
void kp_deadletter_close(struct kp_deadletter *dl);

/*
 * Writes every record of an uncompressed records section, before anyone is
 * told the messages failed (DESIGN 18). Timestamps are base_ts + each
 * record's delta. partitions: explicit partition per record (NULL: none
 * recorded; -1 entries: none). error: the reason, and optionally the
 * broker's words after it. A NULL dl writes nothing (KP_OK: there is no
 * record to keep). KP_ERROR: the lines could not all be written (a full
 * file system...; logged at a limited rate, counted); none of them is in
 * the file then (a partial line is taken back), so a disk spool must keep
 * those messages' records: nothing else holds them.
 */
int kp_deadletter_records(struct kp_deadletter *dl, const char *topic,
                          const uint8_t *records, size_t len, int64_t base_ts,
                          const int32_t *partitions, const char *error);
/* Messages whose lines could not be written so far (0 without a file). */
uint64_t kp_deadletter_errors(const struct kp_deadletter *dl);

#endif
