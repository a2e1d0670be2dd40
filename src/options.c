/*
 * options.c: CARVE_OPTIONS="key=value,key=value".
 *
 * One table holds every option: its name, its kind, where it lands and what
 * it means; the parser and CARVE_OPTIONS=help both read it. Parsing happens
 * once, at initialisation, without allocating.
 */
#include "internal.h"

#include <signal.h>

/* Defaults. decay_ms: mimalloc purges after about 10 ms, jemalloc after
 * 10 s; see doc/design.md for the measurement behind carve's figure. */
options_t cv_options = {
    .purge = PURGE_STAGED,
    .decay_ms = 50,
    .lazy_ms = 1000,
    .background = BACKGROUND_AUTO,
    .cgroup = true,
    .debug = config_debug ? DEBUG_ALL & ~DEBUG_PAGE : 0,
    .quarantine = (size_t)16 << 20,
    .thp = false,
};

typedef enum {
    OPT_BOOL,
    OPT_UINT,
    OPT_SIZE,
    OPT_PURGE,
    OPT_BACKGROUND,
    OPT_DEBUG,
    OPT_SIGNAL
} opt_kind_t;

typedef struct option_desc {
    const char *name;
    opt_kind_t kind;
    void *target;
    const char *help;
} option_desc_t;

static const option_desc_t table[] = {
    {"stats", OPT_BOOL, &cv_options.stats_at_exit, "print statistics on stderr at exit (0/1)"},
    {"purge", OPT_PURGE, &cv_options.purge,
     "how free memory goes back to the kernel. staged (default): MADV_FREE after decay_ms, "
     "MADV_DONTNEED after lazy_ms, and what is beyond recent demand MADV_DONTNEED at once; "
     "RSS falls within about a second. free: MADV_FREE only (reuse costs no fault, but RSS "
     "in top and ps stays until the kernel is short of memory). dontneed: MADV_DONTNEED "
     "after decay_ms (RSS falls at once; reused memory faults in again). none: never"},
    {"decay_ms", OPT_UINT, &cv_options.decay_ms,
     "milliseconds free memory waits before it is purged (default 50)"},
    {"lazy_ms", OPT_UINT, &cv_options.lazy_ms,
     "milliseconds after its free that lazily purged memory goes with MADV_DONTNEED "
     "(purge=staged), or that a purged large mapping is unmapped (default 1000)"},
    {"background", OPT_BACKGROUND, &cv_options.background,
     "a purger thread, which purges also while the program makes no call. auto "
     "(default): started when more than 4 MiB waits to be purged, gone when nothing "
     "does, never under a seccomp filter; 1: always; 0: never (purging then happens "
     "only in malloc and free)"},
    {"cgroup", OPT_BOOL, &cv_options.cgroup,
     "near the cgroup memory limit, purge at once with MADV_DONTNEED (default 1)"},
    {"debug", OPT_DEBUG, &cv_options.debug,
     "checks, '+'-separated or 'all': guards, canary, junk, quarantine, page, free "
     "(e.g. debug=guards+canary); debug=none turns off a --enable-debug build's default"},
    {"quarantine", OPT_SIZE, &cv_options.quarantine,
     "bytes of freed blocks held back from reuse with debug=quarantine (default 16M)"},
    {"thp", OPT_BOOL, &cv_options.thp,
     "blocks of 2 MiB and more ask for transparent huge pages, MADV_HUGEPAGE (default 0)"},
    {"guard_sample", OPT_UINT, &cv_options.guard_sample,
     "about one allocation in N (of a kernel page or less, counted on the slow path) gets "
     "a page of its own, against a guard page, held inaccessible for a while after its "
     "free: an overflow or a use after free of it faults with a report and both stacks "
     "(0, the default: none)"},
    {"signal", OPT_SIGNAL, &cv_options.signal,
     "a signal (SIGUSR2, USR2 or its number; 0 or none: off, the default) on which carve "
     "prints its statistics on stderr and gives free memory back, from a thread of its "
     "own; pick one the program does not use"},
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

static bool parse_uint(const char *v, size_t n, size_t *out) {
    size_t x = 0, i = cv_msg_parse_uint(v, n, &x);
    if (i == 0 && n != 0 && v[0] >= '0' && v[0] <= '9')
        return false; /* digits past size_t */
    if (n == 0)
        return false;
    if (i < n) { /* one suffix: k, m, g (binary), after at least one digit */
        if (i == 0 || i + 1 != n)
            return false;
        unsigned shift = v[i] == 'k' || v[i] == 'K' ? 10 : v[i] == 'm' || v[i] == 'M' ? 20
                         : v[i] == 'g' || v[i] == 'G' ? 30 : 0;
        if (shift == 0 || x > (SIZE_MAX >> shift))
            return false;
        x <<= shift;
    }
    *out = x;
    return true;
}

static bool word_is(const char *v, size_t n, const char *w) {
    return strlen(w) == n && strncmp(v, w, n) == 0;
}

static bool parse_purge(const char *v, size_t n, unsigned *out) {
    if (word_is(v, n, "staged"))
        *out = PURGE_STAGED;
    else if (word_is(v, n, "free"))
        *out = PURGE_FREE;
    else if (word_is(v, n, "dontneed"))
        *out = PURGE_DONTNEED;
    else if (word_is(v, n, "none"))
        *out = PURGE_NONE;
    else
        return false;
    return true;
}

static bool parse_background(const char *v, size_t n, unsigned *out) {
    bool on;
    if (word_is(v, n, "auto"))
        *out = BACKGROUND_AUTO;
    else if (parse_bool(v, n, &on))
        *out = on ? BACKGROUND_ON : BACKGROUND_OFF;
    else
        return false;
    return true;
}

/* "guards+canary", "all", "none"; '|' and ';' also separate, since ',' ends
 * the option. */
static bool parse_debug(const char *v, size_t n, unsigned *out) {
    static const struct {
        const char *name;
        unsigned flag;
    } words[] = {
        {"guards", DEBUG_GUARDS}, {"canary", DEBUG_CANARY}, {"junk", DEBUG_JUNK},
        {"quarantine", DEBUG_QUARANTINE}, {"page", DEBUG_PAGE}, {"free", DEBUG_FREE_CHECKS},
        {"all", DEBUG_ALL}, {"1", DEBUG_ALL & ~DEBUG_PAGE}, {"none", 0}, {"0", 0},
    };
    unsigned flags = 0;
    if (n == 0) /* "debug=" says nothing: not "no checks" */
        return false;
    while (n > 0) {
        size_t w = 0;
        while (w < n && v[w] != '+' && v[w] != '|' && v[w] != ';')
            w++;
        bool known = false;
        for (size_t i = 0; i < sizeof words / sizeof words[0] && !known; i++) {
            if (word_is(v, w, words[i].name)) {
                flags |= words[i].flag;
                known = true;
            }
        }
        if (!known)
            return false;
        v += w;
        n -= w;
        if (n > 0) {
            v++;
            n--;
        }
    }
    *out = flags;
    return true;
}

/* SIGUSR2, USR2 or 12; none or 0. Signals that report a fault, or that
 * cannot be caught, are refused. */
static bool parse_signal(const char *v, size_t n, int *out) {
    static const struct {
        const char *name;
        int sig;
    } names[] = {
        {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT},
        {"PWR", SIGPWR}, {"WINCH", SIGWINCH}, {"URG", SIGURG}, {"TTIN", SIGTTIN},
        {"TTOU", SIGTTOU}, {"PROF", SIGPROF}, {"VTALRM", SIGVTALRM}, {"none", 0},
    };
    if (n > 3 && strncmp(v, "SIG", 3) == 0) {
        v += 3;
        n -= 3;
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (word_is(v, n, names[i].name)) {
            *out = names[i].sig;
            return true;
        }
    }
    size_t x;
    if (!parse_uint(v, n, &x) || x >= (size_t)NSIG)
        return false;
    switch (x) {
    case SIGKILL: case SIGSTOP: case SIGSEGV: case SIGBUS: case SIGILL: case SIGFPE:
    case SIGABRT: case SIGTRAP: case SIGSYS:
        return false;
    }
    *out = (int)x;
    return true;
}

/* One "key" or "key=value" item of length n; false (and a message) when it
 * is not understood. */
static bool parse_item(const char *item, size_t n) {
    size_t klen = 0;
    while (klen < n && item[klen] != '=')
        klen++;
    const char *value = klen < n ? item + klen + 1 : "1";
    size_t vlen = klen < n ? n - klen - 1 : 1;
    if (klen == 4 && strncmp(item, "help", 4) == 0) {
        print_help();
        return true;
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
        case OPT_UINT: {
            size_t x;
            ok = parse_uint(value, vlen, &x) && x <= 0xffffffffu;
            if (ok)
                *(unsigned *)o->target = (unsigned)x;
            break;
        }
        case OPT_SIZE:
            ok = parse_uint(value, vlen, (size_t *)o->target);
            break;
        case OPT_PURGE:
            ok = parse_purge(value, vlen, (unsigned *)o->target);
            break;
        case OPT_BACKGROUND:
            ok = parse_background(value, vlen, (unsigned *)o->target);
            break;
        case OPT_DEBUG:
            ok = parse_debug(value, vlen, (unsigned *)o->target);
            break;
        case OPT_SIGNAL:
            ok = parse_signal(value, vlen, (int *)o->target);
            break;
        }
        if (!ok) {
            char v[64];
            size_t m = vlen < sizeof v - 1 ? vlen : sizeof v - 1;
            memcpy(v, value, m);
            v[m] = '\0';
            cv_msg_print("carve: bad value '%s' for option %s (ignored)\n", v, o->name);
        }
        return ok;
    }
    char k[64];
    size_t m = klen < sizeof k - 1 ? klen : sizeof k - 1;
    memcpy(k, item, m);
    k[m] = '\0';
    cv_msg_print("carve: unknown option '%s' (CARVE_OPTIONS=help lists them)\n", k);
    return false;
}

bool cv_options_set(const char *item) {
    return parse_item(item, strlen(item));
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
