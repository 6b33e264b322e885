/*
 * kp_spool_sync.h - the disk spool's fdatasync helper: one thread that only
 * syncs the file descriptors it is handed and reports through the loop.
 * Why a thread, and why not io_uring: kp_spool_sync.c.
 */
#ifndef KP_SPOOL_SYNC_H
#define KP_SPOOL_SYNC_H

#include "kp_common.h"

struct ev_loop;
struct kp_spool_sync;

/* Called from the loop when a job is done: err is 0 or the first errno of
 * the job, us its duration. */
typedef void (*kp_spool_sync_done_fn)(void *arg, int err, int64_t us);

/* Starts the thread (signals blocked in it). sync_fn NULL = fdatasync.
 * NULL on failure (errno). */
struct kp_spool_sync *kp_spool_sync_create(struct ev_loop *loop,
                                           int (*sync_fn)(int fd),
                                           kp_spool_sync_done_fn done,
                                           void *arg);

/* Stops the thread after the job in progress, if any (its completion is
 * then not reported). */
void kp_spool_sync_destroy(struct kp_spool_sync *y);

/*
 * Hands a job to the thread: fds[0..n) are synced then closed by it (the
 * job owns them: pass dup(2)s, so the loop may close its own at will);
 * dir_fd (or -1) is fsync'ed last, closed too. KP_AGAIN when a job is
 * still running (nothing taken).
 */
int kp_spool_sync_submit(struct kp_spool_sync *y, int *fds, size_t n,
                         int dir_fd);

bool kp_spool_sync_busy(const struct kp_spool_sync *y);

/* Blocks until the running job is done, then reports it (done callback)
 * at once; for shutdown. */
void kp_spool_sync_wait(struct kp_spool_sync *y);

#endif
