/*
 * fuzz_conf.c - libFuzzer target for the configuration parser: any bytes as
 * a configuration file (no overrides). Whatever the input, loading must
 * neither crash nor leak, and a configuration it accepts must survive the
 * -t round trip (kp_conf_to_json fed back to kp_conf_load_buf) - except an
 * inline password, which -t never prints: there the output must show the
 * placeholder instead, and the stats rendering must agree with -t.
 */
#include "kp_conf.h"

#include <jansson.h>
#include <stdio.h>

#include "kp_buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kp_conf_errors errs = {0};
    struct kp_conf *c = kp_conf_load_buf(data, size, NULL, 0, &errs);

    kp_assert((c == NULL) == (errs.cnt > 0));
    if (c && c->security.sasl.password && !c->security.sasl.password_file) {
        char *json = kp_conf_to_json(c);
        kp_assert(strstr(json, "\"password\": \"" KP_CONF_REDACTED "\""));
        free(json);
        kp_conf_put(c);
    } else if (c) {
        char *json = kp_conf_to_json(c);
        struct kp_buf compact;
        kp_buf_init(&compact, 256);
        kp_conf_render(c, &compact);
        json_t *a = json_loads(json, 0, NULL);
        json_t *b = json_loadb((const char *)compact.data, compact.len, 0,
                               NULL);
        kp_assert(a && b && json_equal(a, b));
        json_decref(a);
        json_decref(b);
        kp_buf_deinit(&compact);
        struct kp_conf *again = kp_conf_load_buf((const uint8_t *)json,
                                                 strlen(json), NULL, 0, &errs);
        for (size_t i = 0; i < errs.cnt; i++) {
            fprintf(stderr, "round trip: %s\n", errs.msgs[i]);
        }
        kp_assert(again != NULL);
        char *json2 = kp_conf_to_json(again);
        kp_assert(strcmp(json, json2) == 0);
        kp_assert(kp_conf_restart_diff(c, again) == 0);
        free(json2);
        free(json);
        kp_conf_put(again);
        kp_conf_put(c);
    }
    kp_conf_errors_deinit(&errs);
    return 0;
}
