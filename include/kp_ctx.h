/*
 * kp_ctx.h - the root object. It owns the loop's watchers, the
 * configuration, listeners, clients, topics, brokers and the counters; it
 * is passed first to every module function. Tests build their own loop
 * (ev_loop_new) and context.
 */
#ifndef KP_CTX_H
#define KP_CTX_H

#include <ev.h>
#include <sys/queue.h>

#include "kp_buf.h"
#include "kp_line.h"
#include "kp_tally.h"
#include "kp_topic.h"

struct kp_conf;
struct kp_compressor;
struct kp_broker;
struct kp_client;
struct kp_listener;
struct kp_control;
struct kp_batch;
struct kp_stats;
struct kp_systemd;

TAILQ_HEAD(kp_client_list, kp_client);
TAILQ_HEAD(kp_broker_list, kp_broker);
TAILQ_HEAD(kp_linger_q, kp_batch);

/* Open batches with the same linger time, oldest first, one timer. */
struct kp_linger {
    int linger_ms;
    struct kp_linger_q q;
    ev_timer timer;
    struct kp_ctx *ctx; /* borrowed */
};

enum kp_idemp_state {
    KP_IDEMP_OFF,        /* no topic asks for idempotence yet */
    KP_IDEMP_NEED_PID,   /* InitProducerId not sent */
    KP_IDEMP_REQUESTING, /* InitProducerId in flight */
    KP_IDEMP_READY,
    KP_IDEMP_UNSUPPORTED, /* brokers do not implement InitProducerId */
    KP_IDEMP__COUNT
};
extern const char *const kp_idemp_state_names[KP_IDEMP__COUNT];

struct kp_counters {
    uint64_t received;
    uint64_t delivered;
    uint64_t failed;
    uint64_t rejected;
    uint64_t rejected_by[KP_REJ__COUNT];
    uint64_t clients_refused;
    uint64_t retries;
    uint64_t metadata_refreshes;
    uint64_t batches;
    uint64_t batch_bytes_wire;
    uint64_t batch_bytes_raw;
    uint64_t uncompressed_fallback;
    uint64_t clients_refused_peer; /* of clients_refused: not allowed */
    uint64_t reloads;              /* applied */
    uint64_t reload_failures;      /* rejected, old config kept */
    bool last_reload_failed;
};

struct kp_ctx {
    struct ev_loop *loop;       /* borrowed */
    struct kp_conf *conf;       /* owned reference: the current config */
    struct kp_conf *boot_conf;  /* owned reference: the one listeners, the
                                   control socket and brokers started with */
    char *const *overrides;     /* borrowed: -X, re-applied on reload */
    size_t override_cnt;
    struct kp_compressor *cz;   /* owned */
    int64_t start_ms;

    struct kp_listener **listeners; /* owned */
    size_t listener_cnt;
    struct kp_client_list clients;  /* owned: open connections */
    struct kp_client_list closed;   /* owned: to be freed before polling */
    uint32_t client_cnt;
    uint64_t next_client_id;
    struct kp_control *control; /* owned, may be NULL */
    int *act_fds; /* owned: sockets from systemd not yet claimed (-1) */
    int act_cnt;

    /* Shared read buffer: a client's bytes are read here and parsed in
     * place; only a trailing partial line is carried by the client. */
    uint8_t *rbuf; /* owned */
    size_t rbuf_cap;
    size_t max_line; /* longest line any topic accepts */
    struct kp_line_scratch scratch;

    struct kp_topic_table topics;
    struct kp_broker **brokers; /* owned: bootstrap first, then by metadata */
    size_t broker_cnt;
    struct kp_broker_list dirty; /* brokers to flush before polling */

    struct kp_linger **lingers; /* owned array of owned entries (watchers
                                   and list heads must not move) */
    size_t linger_cnt;

    /* metadata */
    bool md_inflight;
    bool md_again; /* another refresh was asked while one was in flight */
    bool md_have;  /* at least one successful response */
    int64_t md_last_ms;
    ev_timer md_timer; /* periodic refresh and retry backoff */

    /* idempotent producer */
    enum kp_idemp_state idemp;
    ev_timer idemp_timer; /* InitProducerId retry */
    int64_t pid;
    int16_t epoch;

    /* memory accounting and backpressure */
    int64_t buffered_bytes;
    uint64_t queued_msgs;
    bool backpressure;
    int64_t backpressure_since_ms;
    int64_t backpressure_total_ms;

    struct kp_gens gens;
    struct kp_counters n;
    /* Spare batch buffers (records and compressed copies), reused so a
     * new batch neither faults in fresh pages nor fragments the heap. */
    struct kp_buf spare[16]; /* owned */
    int spare_cnt;
    size_t spare_bytes;
    struct kp_stats *stats;     /* owned (kp_stats): histograms, created at
                                   the first observation */
    struct kp_systemd *systemd; /* owned (kp_systemd): notify timers,
                                   NULL outside systemd */

    ev_prepare prepare; /* flush dirty brokers, reap closed clients */
    ev_timer sweep;     /* delivery timeouts, once a second */
    ev_timer stop_timer;
    ev_signal sig_term, sig_int, sig_hup;
    bool stopping;
    int exit_code;
    int dead_letter_fd;
};

struct kp_ctx *kp_ctx_create(struct ev_loop *loop, struct kp_conf *conf);
void kp_ctx_destroy(struct kp_ctx *ctx);
/* Binds listeners and the control socket, starts watchers. */
int kp_ctx_start(struct kp_ctx *ctx);
/* Begins the drain of SIGTERM/SIGINT. */
void kp_ctx_shutdown(struct kp_ctx *ctx);
/* Re-reads the configuration file; errors (if any) in *errs. */
int kp_ctx_reload(struct kp_ctx *ctx, char **errtext);

/* Memory accounting: called with +bytes when buffered, -bytes when freed. */
void kp_ctx_account(struct kp_ctx *ctx, int64_t bytes, int64_t msgs);

/* Broker by node id, or NULL. */
struct kp_broker *kp_ctx_broker(struct kp_ctx *ctx, int32_t node_id);
struct kp_linger *kp_ctx_linger(struct kp_ctx *ctx, int linger_ms);

/* Called when a tally's messages may all be settled. */
void kp_ctx_tally_settled(struct kp_ctx *ctx, struct kp_tally *t);
/* Flush barriers from the control socket complete here. */
void kp_ctx_gens_changed(struct kp_ctx *ctx);

#endif
