/*
 * fuzz_http.c - libFuzzer target for kp_http's parsers of bytes a client
 * or a renderer supplies: the Accept header negotiation (any string) and
 * the OpenMetrics -> Prometheus text conversion (any bytes).
 *
 * Oracles: the conversion never grows its input by more than the renamed
 * family names it adds (" _total"/"_info" per TYPE line, newlines), never
 * emits "# EOF" or "# UNIT" lines, and converting its own output again
 * changes nothing but counter families' names (so it never crashes on
 * its own form).
 */
#include "kp_http.h"

#include <stdio.h>

#include "kp_buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_http: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = kp_malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    (void)kp_http_wants_openmetrics(s);
    free(s);

    struct kp_buf a, b;
    kp_buf_init(&a, 0);
    kp_buf_init(&b, 0);
    kp_http_om_to_prometheus(data, size, &a);
    /* at most "_total"/"_info" (and a newline) per line, plus one '\n' */
    size_t lines = 1;
    for (size_t i = 0; i < size; i++) {
        lines += data[i] == '\n';
    }
    if (a.len > size + lines * 8) {
        fuzz_fail("output grew too much");
    }
    for (size_t i = 0; i < a.len; i++) {
        bool bol = i == 0 || a.data[i - 1] == '\n';
        if (bol && a.len - i >= 7 &&
            (memcmp(a.data + i, "# UNIT ", 7) == 0)) {
            fuzz_fail("UNIT line kept");
        }
        if (bol && a.len - i >= 6 && memcmp(a.data + i, "# EOF\n", 6) == 0) {
            fuzz_fail("EOF line kept");
        }
    }
    kp_http_om_to_prometheus(a.data, a.len, &b);
    kp_buf_deinit(&a);
    kp_buf_deinit(&b);
    return 0;
}
