/*
 * msg.c: output that never allocates, the fatal path, and the one reader of
 * decimal numbers (options, cgroup files, /proc). stdio may call
 * malloc, and an allocator that reports heap corruption cannot trust its
 * own heap, so error lines and statistics are formatted here into a stack
 * buffer and written with write(2).
 *
 * A fatal report is one line, a backtrace, and abort(). The backtrace uses
 * libgcc's unwinder (_Unwind_Backtrace, linked, so no dlopen and no malloc
 * when it runs: glibc's backtrace() would dlopen libgcc_s, which allocates,
 * on its first call) and glibc's backtrace_symbols_fd, which does not
 * allocate. Frame pointers are not used: -O2 code has none.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <execinfo.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unwind.h>

typedef struct out {
    char *buf;
    size_t cap, len;
} out_t;

static void put_char(out_t *o, char c) {
    if (o->len + 1 < o->cap)
        o->buf[o->len] = c;
    o->len++;
}

static void put_str(out_t *o, const char *s) {
    for (; *s; s++)
        put_char(o, *s);
}

static void put_uint(out_t *o, unsigned long long v, unsigned base, int min_digits) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v != 0);
    while (n < min_digits)
        tmp[n++] = '0';
    while (n > 0)
        put_char(o, tmp[--n]);
}

/* Pads the text written since start to width (right-aligned unless left). */
static void pad(out_t *o, size_t start, unsigned width, bool left) {
    size_t n = o->len - start;
    if (n >= width)
        return;
    size_t fill = width - n;
    if (left) {
        while (fill--)
            put_char(o, ' ');
        return;
    }
    /* shift the field right inside the buffer (what fits of it) */
    for (size_t i = 0; i < fill; i++)
        put_char(o, ' ');
    for (size_t i = o->len; i-- > start + fill;) {
        if (i < o->cap - 1 && i - fill < o->cap - 1)
            o->buf[i] = o->buf[i - fill];
    }
    for (size_t i = start; i < start + fill && i < o->cap - 1; i++)
        o->buf[i] = ' ';
}

static size_t vformat(char *buf, size_t cap, const char *fmt, va_list ap) {
    out_t o = {buf, cap, 0};
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put_char(&o, *fmt);
            continue;
        }
        fmt++;
        bool left = false;
        unsigned width = 0;
        if (*fmt == '-') {
            left = true;
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (unsigned)(*fmt++ - '0');
        size_t start = o.len;
        bool size_t_arg = false;
        if (*fmt == 'z') {
            size_t_arg = true;
            fmt++;
        }
        switch (*fmt) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            put_str(&o, s ? s : "(null)");
            break;
        }
        case 'c':
            put_char(&o, (char)va_arg(ap, int));
            break;
        case 'd': {
            long long v = size_t_arg ? (long long)va_arg(ap, size_t) : va_arg(ap, int);
            if (v < 0) {
                put_char(&o, '-');
                v = -v;
            }
            put_uint(&o, (unsigned long long)v, 10, 1);
            break;
        }
        case 'u':
            put_uint(&o, size_t_arg ? va_arg(ap, size_t) : va_arg(ap, unsigned), 10, 1);
            break;
        case 'x':
            put_uint(&o, size_t_arg ? va_arg(ap, size_t) : va_arg(ap, unsigned), 16, 1);
            break;
        case 'p':
            put_str(&o, "0x");
            put_uint(&o, (uintptr_t)va_arg(ap, void *), 16, 1);
            break;
        case '%':
            put_char(&o, '%');
            break;
        default:
            put_char(&o, '?');
            break;
        }
        pad(&o, start, width, left);
    }
    if (cap == 0)
        return 0;
    buf[o.len < cap ? o.len : cap - 1] = '\0';
    return o.len < cap ? o.len : cap - 1;
}

/* The decimal number at the start of s (n bytes): its digits' count, 0
 * when there are none or the value would not fit a size_t. The one number
 * reader of carve (options, cgroup limits, /proc values). */
size_t cv_msg_parse_uint(const char *s, size_t n, size_t *out) {
    size_t v = 0, i = 0;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        size_t d = (size_t)(s[i] - '0');
        if (v > (SIZE_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (i != 0)
        *out = v;
    return i;
}

size_t cv_msg_format(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t n = vformat(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

void cv_msg_print(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    size_t n = vformat(buf, sizeof buf, fmt, ap);
    va_end(ap);
    cv_os_write_stderr(buf, n);
}

/* ---- backtrace ---------------------------------------------------------- */

typedef struct trace {
    void **pc;
    int n, cap, skip;
} trace_t;

static _Unwind_Reason_Code trace_step(struct _Unwind_Context *ctx, void *arg) {
    trace_t *t = arg;
    uintptr_t ip = _Unwind_GetIP(ctx);
    if (ip == 0)
        return _URC_END_OF_STACK;
    if (t->skip > 0) {
        t->skip--;
        return _URC_NO_REASON;
    }
    t->pc[t->n++] = (void *)ip;
    return t->n < t->cap ? _URC_NO_REASON : _URC_END_OF_STACK;
}

/* The calling thread's return addresses, the caller's first, skip more
 * frames left out: libgcc's unwinder, which neither allocates nor takes a
 * lock that malloc could hold. */
int cv_msg_stack(void **pc, int cap, int skip) {
    trace_t t = {pc, 0, cap, skip + 1};
    _Unwind_Backtrace(trace_step, &t);
    return t.n;
}

void cv_msg_print_stack(const char *title, void *const *pc, int n) {
    cv_msg_print("carve: %s (%d frames):\n", title, n);
    backtrace_symbols_fd(pc, n, 2);
}

void cv_msg_backtrace(void) {
    /* A fault inside the unwinder would come back here: once is enough. */
    static _Atomic bool busy;
    if (atomic_exchange(&busy, true))
        return;
    void *pc[48];
    int n = cv_msg_stack(pc, 48, 1); /* and cv_msg_fatal */
    cv_msg_print_stack("backtrace", pc, n);
}

/* ---- fatal reports ------------------------------------------------------- */

void cv_msg_fatal(const char *what, const void *addr, const char *detail, const char *func) {
    char buf[256];
    size_t n = cv_msg_format(buf, sizeof buf, "carve: %s of %p (%s) in %s()\n", what, addr,
                             detail, func);
    cv_os_write_stderr(buf, n);
    cv_msg_backtrace();
    abort();
}

void cv_assert_fail(const char *expr, const char *file, int line) {
    cv_msg_print("carve: internal assertion failed: %s (%s:%d)\n", expr, file, line);
    cv_msg_backtrace();
    abort();
}
