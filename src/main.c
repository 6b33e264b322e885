/*
 * main.c - kproxyd's command line: load and check the configuration, then
 * run the loop until SIGTERM/SIGINT has drained it.
 *
 *   kproxyd [-c FILE] [-t] [-X KEY=VALUE]... [-V] [-h]
 *
 * Exit status: 0 clean shutdown, 1 configuration or start-up error, 2 fatal
 * runtime error.
 */
#include <ev.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <zstd.h>
#include <lz4.h>
#include <zlib.h>

#include "kp_compress.h"
#include "kp_conf.h"
#include "kp_ctx.h"
#include "kp_log.h"

#define KP_DEFAULT_CONF "/etc/kproxyd/kproxyd.json"

static void kp_usage(FILE *f)
{
    fprintf(f,
            "usage: kproxyd [-c FILE] [-t] [-X KEY=VALUE]... [-V] [-h]\n"
            "\n"
            "Reads messages, one per line, from local UNIX sockets and\n"
            "produces them to Kafka.\n"
            "\n"
            "  -c FILE       configuration file (default %s)\n"
            "  -t            check the configuration, print the effective\n"
            "                configuration as JSON, exit\n"
            "  -X KEY=VALUE  override a configuration value by its dotted\n"
            "                path, e.g. -X producer.linger_ms=20\n"
            "                -X brokers=127.0.0.1:9092 (arrays: commas)\n"
            "  -V            print the version and codecs, exit\n"
            "  -h            print this help, exit\n",
            KP_DEFAULT_CONF);
}

static void kp_version(void)
{
    printf("kproxyd %s\n", KP_VERSION);
    printf("codecs: gzip (zlib %s), lz4 (%s), zstd (%s)%s\n", zlibVersion(),
           LZ4_versionString(), ZSTD_versionString(),
           kp_codec_available(KP_CODEC_SNAPPY) ? ", snappy" : "");
    printf("libev %d.%d\n", ev_version_major(), ev_version_minor());
}

int main(int argc, char **argv)
{
    const char *path = KP_DEFAULT_CONF;
    char **overrides = kp_calloc((size_t)argc, sizeof(char *));
    size_t override_cnt = 0;
    bool test_only = false;
    int opt, rc;

    while ((opt = getopt(argc, argv, "c:tX:Vh")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 'X':
            overrides[override_cnt++] = optarg;
            break;
        case 'V':
            kp_version();
            free(overrides);
            return 0;
        case 'h':
            kp_usage(stdout);
            free(overrides);
            return 0;
        default:
            kp_usage(stderr);
            free(overrides);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kproxyd: unexpected argument '%s'\n", argv[optind]);
        kp_usage(stderr);
        free(overrides);
        return 1;
    }

    kp_log_init();
    struct kp_conf_errors errs = {0};
    struct kp_conf *conf = kp_conf_load(path, overrides, override_cnt, &errs);
    if (!conf) {
        for (size_t i = 0; i < errs.cnt; i++) {
            fprintf(stderr, "kproxyd: %s\n", errs.msgs[i]);
        }
        kp_conf_errors_deinit(&errs);
        free(overrides);
        return 1;
    }
    if (test_only) {
        char *json = kp_conf_to_json(conf);
        printf("%s\n", json);
        free(json);
        kp_conf_put(conf);
        free(overrides);
        return 0;
    }

    signal(SIGPIPE, SIG_IGN);
    kp_random_seed();
    /* Large buffers (batches, the read buffer) come straight from mmap and
     * go back to the system when freed; reuse is kp_batch's pool's job. A
     * fixed threshold keeps glibc from moving them into the heap, where
     * small allocations pin freed holes. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    kp_log_set_level((enum kp_log_level)conf->log_level);
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    struct kp_ctx *ctx = kp_ctx_create(loop, conf);
    ctx->overrides = overrides;
    ctx->override_cnt = override_cnt;
    if (kp_ctx_start(ctx) != KP_OK) {
        kp_err("start-up failed");
        kp_ctx_destroy(ctx);
        free(overrides);
        return 1;
    }
    kp_info("kproxyd %s started", KP_VERSION);
    ev_run(loop, 0);
    rc = ctx->exit_code;
    kp_info("exiting: received %llu, delivered %llu, failed %llu, "
            "rejected %llu",
            (unsigned long long)ctx->n.received,
            (unsigned long long)ctx->n.delivered,
            (unsigned long long)ctx->n.failed,
            (unsigned long long)ctx->n.rejected);
    kp_ctx_destroy(ctx);
    ev_loop_destroy(loop);
    free(overrides);
    return rc;
}
