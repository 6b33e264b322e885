/*
 * main.c - kproxyd's command line: load and check the configuration, then
 * run the loop until SIGTERM/SIGINT has drained it.
 *
 *   kproxyd [-c FILE] [-t [-q]] [-X KEY=VALUE]... [-V] [-h]
 *
 * Exit status: 0 clean shutdown, 1 configuration or start-up error, 2 fatal
 * runtime error.
 */
#include <ev.h>
#include <getopt.h>
#include <jansson.h>
#include <lz4.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <zlib.h>
#include <zstd.h>

#include "kp_compress.h"
#include "kp_conf.h"
#include "kp_ctx.h"
#include "kp_log.h"

#define KP_DEFAULT_CONF "/etc/kproxyd/kproxyd.json"

/* What the command line asked for. */
struct kp_args {
    const char *path;
    char **overrides; /* owned array; the strings are argv's */
    size_t override_cnt;
    bool test_only;
    bool quiet;
};

static void kp_usage(FILE *f)
{
    fprintf(f,
            "usage: kproxyd [-c FILE] [-t [-q]] [-X KEY=VALUE]... [-V] [-h]\n"
            "\n"
            "Reads messages, one per line, from local UNIX sockets and\n"
            "produces them to Kafka.\n"
            "\n"
            "  -c, --config FILE  configuration file (default %s)\n"
            "  -t, --test         check the configuration (and the paths,\n"
            "                     users and files it names on this host),\n"
            "                     print the effective configuration as JSON\n"
            "                     (secrets as \"%s\"), exit\n"
            "  -q, --quiet        with -t: print only the problems\n"
            "  -X KEY=VALUE       override a configuration value by its\n"
            "                     dotted path, e.g. -X producer.linger_ms=20\n"
            "                     -X brokers=127.0.0.1:9092 (arrays: commas)\n"
            "                     -X listeners[0].mode=0600 (an existing\n"
            "                     listener; the file adds listeners)\n"
            "  -V, --version      print the version and codecs, exit\n"
            "  -h, --help         print this help, exit\n",
            KP_DEFAULT_CONF, KP_CONF_REDACTED);
}

/* The codecs come from kp_codec_available: what this build can produce. */
static void kp_version(void)
{
    printf("kproxyd %s\n", KP_VERSION);
    printf("codecs:");
    for (int c = KP_CODEC_NONE + 1; c < KP_CODEC__COUNT; c++) {
        if (kp_codec_available((enum kp_codec)c)) {
            printf(" %s", kp_codec_names[c]);
        }
    }
    printf("\n");
    printf("libraries: zlib %s, lz4 %s, zstd %s, jansson %s, libev %d.%d\n",
           zlibVersion(), LZ4_versionString(), ZSTD_versionString(),
           jansson_version_str(), ev_version_major(), ev_version_minor());
}

/* Parses argv into *a. Returns -1 to go on, else the exit status. */
static int kp_args_parse(int argc, char **argv, struct kp_args *a)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    while ((opt = getopt_long(argc, argv, "c:tqX:Vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            a->path = optarg;
            break;
        case 't':
            a->test_only = true;
            break;
        case 'q':
            a->quiet = true;
            break;
        case 'X':
            a->overrides[a->override_cnt++] = optarg;
            break;
        case 'V':
            kp_version();
            return 0;
        case 'h':
            kp_usage(stdout);
            return 0;
        default:
            kp_usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kproxyd: unexpected argument '%s'\n", argv[optind]);
        kp_usage(stderr);
        return 1;
    }
    if (a->quiet && !a->test_only) {
        fprintf(stderr, "kproxyd: -q only applies to -t\n");
        return 1;
    }
    return -1;
}

/*
 * Loads the configuration and checks it against this host (for -t and a
 * real start alike). NULL after printing every problem.
 */
static struct kp_conf *kp_load(const struct kp_args *a)
{
    struct kp_conf_errors errs = {0};
    struct kp_conf *conf =
        kp_conf_load(a->path, a->overrides, a->override_cnt, &errs);
    if (conf && kp_conf_check_host(conf, &errs) != KP_OK) {
        kp_conf_put(conf);
        conf = NULL;
    }
    for (size_t i = 0; i < errs.cnt; i++) {
        fprintf(stderr, "kproxyd: %s\n", errs.msgs[i]);
    }
    kp_conf_errors_deinit(&errs);
    return conf;
}

static int kp_run(struct kp_conf *conf, struct kp_args *a)
{
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
    ctx->overrides = a->overrides;
    ctx->override_cnt = a->override_cnt;
    if (kp_ctx_start(ctx) != KP_OK) {
        kp_err("start-up failed");
        kp_ctx_destroy(ctx);
        return 1;
    }
    kp_info("kproxyd %s started", KP_VERSION);
    ev_run(loop, 0);
    int rc = ctx->exit_code;
    kp_info("exiting: received %llu, delivered %llu, failed %llu, "
            "rejected %llu",
            (unsigned long long)ctx->n.received,
            (unsigned long long)ctx->n.delivered,
            (unsigned long long)ctx->n.failed,
            (unsigned long long)ctx->n.rejected);
    kp_ctx_destroy(ctx);
    ev_loop_destroy(loop);
    return rc;
}

int main(int argc, char **argv)
{
    struct kp_args a = {.path = KP_DEFAULT_CONF};
    a.overrides = kp_calloc((size_t)argc, sizeof(char *));
    int rc = kp_args_parse(argc, argv, &a);
    if (rc >= 0) {
        free(a.overrides);
        return rc;
    }

    kp_log_init();
    struct kp_conf *conf = kp_load(&a);
    if (!conf) {
        rc = 1;
    } else if (a.test_only) {
        if (!a.quiet) {
            char *json = kp_conf_to_json(conf);
            printf("%s\n", json);
            free(json);
        }
        kp_conf_put(conf);
        rc = 0;
    } else {
        rc = kp_run(conf, &a);
    }
    free(a.overrides);
    return rc;
}
