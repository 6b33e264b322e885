/*
 * kp_conf_override.c - -X KEY=VALUE: one dotted path walked down the
 * option tables, containers stepping by their type's descend (a section
 * by ".KEY", topics by ".NAME.KEY", listeners by "[N].KEY"), the value
 * converted by the leaf type's from_string and written into the JSON tree
 * before it is parsed. The parser then checks it like any value from the
 * file, so -X and the file cannot disagree on what is valid.
 *
 * Messages name the key, never the value given (it may be a password).
 */
#include "kp_conf_impl.h"

/* The first name of path: up to '.', '[' or the end. */
static size_t kp_path_name_len(const char *path)
{
    return strcspn(path, ".[");
}

/*
 * Applies one "dotted.path=value" override to the JSON tree root,
 * converting the value by the key's type. Problems go to errs, naming the
 * key. A key whose place in the file has a wrong type is left for the
 * parser to report.
 */
void kp_conf_override(json_t *root, const char *ov, struct kp_conf_errors *errs)
{
    const char *eq = strchr(ov, '=');
    if (!eq || eq == ov) {
        kp_conf_errors_add(errs, "-X %s: expected KEY=VALUE", ov);
        return;
    }
    char *path = kp_strndup(ov, (size_t)(eq - ov));
    struct kp_step st = {.table = &kp_top_table,
                         .target = json_is_object(root) ? root : NULL,
                         .rest = path};
    int rc = KP_ERROR;

    for (;;) {
        size_t len = kp_path_name_len(st.rest);
        const struct kp_opt *o = kp_table_find(st.table, st.rest, len);
        rc = KP_ERROR;
        if (!o) {
            break;
        }
        char key[KP_CONF_KEY_LEN];
        kp_key_join(key, sizeof(key), st.key, o->name);
        memcpy(st.key, key, sizeof(key));
        const char *after = st.rest + len;
        if (o->ops->descend) {
            rc = o->ops->descend(o, after, &st, errs);
            if (rc != KP_OK) {
                break;
            }
            continue;
        }
        if (*after != '\0') {
            break;
        }
        json_t *jv = o->ops->from_string(o, eq + 1, st.key, errs);
        if (jv && st.target) {
            json_object_set_new(st.target, o->name, jv);
        } else {
            json_decref(jv);
        }
        rc = KP_OK;
        break;
    }
    if (rc == KP_ERROR) {
        kp_conf_errors_add(errs, "%s: unknown key (in -X)", path);
    }
    free(path);
}
