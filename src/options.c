/*
 * options.c: CARVE_OPTIONS="key=value,key=value".
 *
 * One table holds every option: its name, its kind, where it lands and what
 * it means; the parser and CARVE_OPTIONS=help both read it. Parsing happens
 * once, at initialisation, without allocating.
 */
#include "internal.h"

options_t cv_options;

typedef enum { OPT_BOOL } opt_kind_t;

typedef struct option_desc {
    const char *name;
    opt_kind_t kind;
    void *target;
    const char *help;
} option_desc_t;

static const option_desc_t table[] = {
    {"stats", OPT_BOOL, &cv_options.stats_at_exit, "print statistics on stderr at exit (0/1)"},
};
#define OPTION_COUNT (sizeof table / sizeof table[0])

static void print_help(void) {
    cv_msg_print("carve: CARVE_OPTIONS=key=value,... where key is one of\n");
    for (size_t i = 0; i < OPTION_COUNT; i++)
        cv_msg_print("  %s: %s\n", table[i].name, table[i].help);
}

static bool parse_bool(const char *v, size_t n, bool *out) {
    if ((n == 1 && v[0] == '1') || (n == 4 && strncmp(v, "true", 4) == 0) ||
        (n == 3 && strncmp(v, "yes", 3) == 0) || (n == 2 && strncmp(v, "on", 2) == 0)) {
        *out = true;
        return true;
    }
    if ((n == 1 && v[0] == '0') || (n == 5 && strncmp(v, "false", 5) == 0) ||
        (n == 2 && strncmp(v, "no", 2) == 0) || (n == 3 && strncmp(v, "off", 3) == 0)) {
        *out = false;
        return true;
    }
    return false;
}

/* One "key" or "key=value" item of length n. */
static void parse_item(const char *item, size_t n) {
    size_t klen = 0;
    while (klen < n && item[klen] != '=')
        klen++;
    const char *value = klen < n ? item + klen + 1 : "1";
    size_t vlen = klen < n ? n - klen - 1 : 1;
    if (klen == 4 && strncmp(item, "help", 4) == 0) {
        print_help();
        return;
    }
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const option_desc_t *o = &table[i];
        if (strlen(o->name) != klen || strncmp(o->name, item, klen) != 0)
            continue;
        bool ok = false;
        switch (o->kind) {
        case OPT_BOOL:
            ok = parse_bool(value, vlen, (bool *)o->target);
            break;
        }
        if (!ok) {
            char v[64];
            size_t m = vlen < sizeof v - 1 ? vlen : sizeof v - 1;
            memcpy(v, value, m);
            v[m] = '\0';
            cv_msg_print("carve: bad value '%s' for option %s (ignored)\n", v, o->name);
        }
        return;
    }
    char k[64];
    size_t m = klen < sizeof k - 1 ? klen : sizeof k - 1;
    memcpy(k, item, m);
    k[m] = '\0';
    cv_msg_print("carve: unknown option '%s' in CARVE_OPTIONS (CARVE_OPTIONS=help lists them)\n", k);
}

void cv_options_parse(void) {
    const char *s = cv_os_getenv("CARVE_OPTIONS");
    if (s == NULL)
        return;
    while (*s) {
        size_t n = 0;
        while (s[n] && s[n] != ',')
            n++;
        if (n > 0)
            parse_item(s, n);
        s += n;
        if (*s == ',')
            s++;
    }
}
