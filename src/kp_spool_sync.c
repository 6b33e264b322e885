/*
 * kp_spool_sync.c - the disk spool's fdatasync helper thread.
 *
 * fdatasync(2) blocks for as long as the device takes (milliseconds on an
 * SSD, a second or more on a busy disk or network volume); done in the loop
 * it would stall every client and broker. Two ways out were weighed:
 *
 * - io_uring (IORING_OP_FSYNC with IORING_FSYNC_DATASYNC, completions on an
 *   eventfd watched by ev_io). The kernel punts fsync to its own io-wq
 *   worker threads anyway, so it buys no fewer threads, only hidden ones.
 *   And it is often not there: Docker's default seccomp profile (25.0 and
 *   later) and hardened kernels (sysctl kernel.io_uring_disabled) refuse
 *   io_uring_setup, although systemd's @system-service allows it (@aio).
 *   A fallback would be needed in any case - a second code path, tested
 *   only where io_uring is missing.
 * - One helper thread, chosen. It shares nothing with the loop but one job
 *   slot under a mutex: a list of file descriptors that the job owns (dups,
 *   so the loop may close or unlink its files meanwhile), which the thread
 *   syncs and closes; it then signals the loop with ev_async (an eventfd
 *   inside libev). It touches no spool state, takes no other lock, and
 *   blocks every signal, so the rest of kproxyd stays single-threaded in
 *   every sense that matters: all state is changed by the loop thread only.
 *   It exists only when spool.fsync_ms is set.
 */
#include "kp_spool_sync.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

struct kp_spool_sync {
    struct ev_loop *loop; /* borrowed */
    ev_async done_w;      /* the thread's "job done" */
    pthread_t thread;
    int (*sync_fn)(int fd);
    kp_spool_sync_done_fn done;
    void *arg; /* borrowed */

    pthread_mutex_t mu;
    pthread_cond_t cv; /* queued, finished or stop changed */
    /* Guarded by mu; the job's fds are read by the thread unlocked while
     * queued, when the loop side does not touch them. */
    int *fds; /* owned: the job's descriptors */
    size_t nfd, cap;
    int dir_fd;    /* owned by the job; -1 none */
    bool queued;   /* a job is posted or running */
    bool finished; /* done and not yet reported */
    bool stop;
    int err;
    int64_t us;

    bool busy; /* loop side: submitted and not yet reported */
};

static int kp_spool_sync_run(struct kp_spool_sync *y)
{
    int err = 0;

    for (size_t i = 0; i < y->nfd; i++) {
        if (y->sync_fn(y->fds[i]) != 0 && !err) {
            err = errno;
        }
        close(y->fds[i]);
    }
    if (y->dir_fd >= 0) {
        if (fsync(y->dir_fd) != 0 && !err) {
            err = errno;
        }
        close(y->dir_fd);
    }
    return err;
}

static void *kp_spool_sync_main(void *p)
{
    struct kp_spool_sync *y = p;

    pthread_mutex_lock(&y->mu);
    for (;;) {
        while (!y->queued && !y->stop) {
            pthread_cond_wait(&y->cv, &y->mu);
        }
        if (!y->queued) {
            break;
        }
        pthread_mutex_unlock(&y->mu);
        int64_t t0 = kp_mono_us();
        int err = kp_spool_sync_run(y);
        int64_t us = kp_mono_us() - t0;
        pthread_mutex_lock(&y->mu);
        y->nfd = 0;
        y->dir_fd = -1;
        y->err = err;
        y->us = us;
        y->queued = false;
        y->finished = true;
        pthread_cond_broadcast(&y->cv);
        pthread_mutex_unlock(&y->mu);
        ev_async_send(y->loop, &y->done_w);
        pthread_mutex_lock(&y->mu);
    }
    pthread_mutex_unlock(&y->mu);
    return NULL;
}

/* Reports a finished job, once, from the loop thread. */
static void kp_spool_sync_report(struct kp_spool_sync *y)
{
    pthread_mutex_lock(&y->mu);
    bool finished = y->finished;
    int err = y->err;
    int64_t us = y->us;
    y->finished = false;
    pthread_mutex_unlock(&y->mu);
    if (finished) {
        y->busy = false;
        y->done(y->arg, err, us);
    }
}

static void kp_spool_sync_on_done(struct ev_loop *loop, ev_async *w,
                                  int revents)
{
    (void)loop;
    (void)revents;
    kp_spool_sync_report(w->data);
}

struct kp_spool_sync *kp_spool_sync_create(struct ev_loop *loop,
                                           int (*sync_fn)(int fd),
                                           kp_spool_sync_done_fn done,
                                           void *arg)
{
    struct kp_spool_sync *y = kp_calloc(1, sizeof(*y));
    sigset_t all, old;

    y->loop = loop;
    y->sync_fn = sync_fn ? sync_fn : fdatasync;
    y->done = done;
    y->arg = arg;
    y->dir_fd = -1;
    pthread_mutex_init(&y->mu, NULL);
    pthread_cond_init(&y->cv, NULL);
    ev_async_init(&y->done_w, kp_spool_sync_on_done);
    y->done_w.data = y;
    ev_async_start(loop, &y->done_w);
    ev_unref(loop); /* a helper's watcher does not keep the loop alive */

    /* Signals stay with the loop thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&y->thread, NULL, kp_spool_sync_main, y);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        ev_ref(loop);
        ev_async_stop(loop, &y->done_w);
        pthread_cond_destroy(&y->cv);
        pthread_mutex_destroy(&y->mu);
        free(y);
        errno = rc;
        return NULL;
    }
    return y;
}

void kp_spool_sync_destroy(struct kp_spool_sync *y)
{
    if (!y) {
        return;
    }
    pthread_mutex_lock(&y->mu);
    y->stop = true;
    pthread_cond_broadcast(&y->cv);
    pthread_mutex_unlock(&y->mu);
    pthread_join(y->thread, NULL);
    ev_ref(y->loop);
    ev_async_stop(y->loop, &y->done_w);
    pthread_cond_destroy(&y->cv);
    pthread_mutex_destroy(&y->mu);
    free(y->fds);
    free(y);
}

int kp_spool_sync_submit(struct kp_spool_sync *y, int *fds, size_t n,
                         int dir_fd)
{
    if (y->busy) {
        return KP_AGAIN;
    }
    pthread_mutex_lock(&y->mu);
    if (n > y->cap) {
        y->fds = kp_realloc(y->fds, n * sizeof(*y->fds));
        y->cap = n;
    }
    if (n) {
        memcpy(y->fds, fds, n * sizeof(*fds));
    }
    y->nfd = n;
    y->dir_fd = dir_fd;
    y->queued = true;
    pthread_cond_broadcast(&y->cv);
    pthread_mutex_unlock(&y->mu);
    y->busy = true;
    return KP_OK;
}

bool kp_spool_sync_busy(const struct kp_spool_sync *y)
{
    return y->busy;
}

void kp_spool_sync_wait(struct kp_spool_sync *y)
{
    pthread_mutex_lock(&y->mu);
    while (y->queued) {
        pthread_cond_wait(&y->cv, &y->mu);
    }
    pthread_mutex_unlock(&y->mu);
    kp_spool_sync_report(y);
}
