/*
 * fuzz_api: libFuzzer harness for the carve_* API.
 *
 * Each input is a program: every byte string decodes into a sequence of
 * calls (malloc, calloc, realloc, reallocarray, aligned_alloc,
 * posix_memalign, memalign, valloc, pvalloc, free, free_sized,
 * free_aligned_sized, malloc_usable_size, malloc_trim, and the statistics:
 * carve_stats_read, mallinfo2, mallinfo) on up to SLOTS live
 * blocks, with sizes drawn around the places where allocators go wrong:
 * size-class edges, the small/large boundary, alignments up to 8 MiB,
 * products that overflow, sizes near SIZE_MAX.
 *
 * The oracle is what the C standard, POSIX and glibc document, checked
 * after every call:
 *   - success: alignment, malloc_usable_size >= the request, and the whole
 *     usable size writable; calloc and fresh aligned blocks from calloc read
 *     zero; realloc keeps the old contents up to the smaller size;
 *   - failure: only for requests no machine can serve (or bad arguments),
 *     with errno ENOMEM or EINVAL (posix_memalign returns it, errno kept);
 *   - every live block keeps the bytes written into it (a per-block pattern,
 *     checked before each free and realloc and for all blocks at the end):
 *     an overlap between blocks, a block handed out twice or a stray write
 *     by the allocator shows up as a changed byte.
 * A failed check aborts with a message; libFuzzer saves the input.
 *
 * Built by configure --enable-fuzz (clang), run by test/fuzz/fuzz.sh.
 * Reproduce a saved input: test/fuzz_api crash-<sha1>.
 */
#include "carve.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 32
/* Blocks up to this size are filled and checked whole; bigger ones in
 * stripes (head, tail and one line per 64 KiB), to keep each run fast. */
#define FULL_CHECK (256u << 10)
#define STRIPE 65536u
#define BIG_MAX ((size_t)24 << 20)

struct slot {
    uint8_t *p;
    size_t size;  /* bytes checked: the request, then the usable size */
    size_t align; /* aligned_alloc's alignment, for free_aligned_sized */
    size_t request;
    int sized;    /* from malloc, calloc or realloc: free_sized may take it */
    uint8_t tag;
};

static struct slot slots[SLOTS];
static uint8_t next_tag;

struct input {
    const uint8_t *d;
    size_t n;
};

static unsigned byte(struct input *in) {
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->d++;
}

static size_t bytes(struct input *in, unsigned k) {
    size_t v = 0;
    for (unsigned i = 0; i < k; i++)
        v = v << 8 | byte(in);
    return v;
}

static const char *call_name; /* the call being checked, for messages */

/* The last calls, across inputs (the allocator's state carries over from
 * one input to the next): printed when a check fails, so that a failure
 * that needs the earlier inputs to happen can still be followed. */
#define TRACE 256
static struct call {
    const char *name;
    const void *in, *out;
    size_t a, b;
    double ms;
} trace[TRACE];
static unsigned long trace_n;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void note(const char *name, const void *in, size_t a, size_t b, const void *out) {
    trace[trace_n++ % TRACE] = (struct call){name, in, out, a, b, now_ms()};
}

static void print_trace(void) {
    unsigned long first = trace_n > TRACE ? trace_n - TRACE : 0;
    fprintf(stderr, "fuzz_api: the last %lu calls (ms, call, pointer in, arguments, result):\n",
            trace_n - first);
    for (unsigned long i = first; i < trace_n; i++) {
        const struct call *c = &trace[i % TRACE];
        fprintf(stderr, "  %.1f %s(%p, %zu, %zu) = %p\n", c->ms, c->name, c->in, c->a, c->b,
                c->out);
    }
}

static void fail(const char *what, const struct slot *s, size_t at) {
    fprintf(stderr, "fuzz_api: %s: %s (block %p, request %zu, align %zu, offset %zu)\n",
            call_name, what, s ? (void *)s->p : NULL, s ? s->request : 0, s ? s->align : 0, at);
    print_trace();
    abort();
}

/* ---- statistics ---------------------------------------------------------- */

/* The statistics walk, in whatever state the calls left: the live slots'
 * bytes are all counted, each class's figures nest, and the summaries
 * (read with nothing in between: one thread) agree with each other. */
static size_t cap_int(size_t v) {
    return v > INT_MAX ? INT_MAX : v;
}

static void check_stats(void) {
    note("stats", NULL, 0, 0, NULL);
    struct carve_stats st;
    carve_stats_read(&st);
    size_t live = 0;
    for (unsigned i = 0; i < SLOTS; i++)
        if (slots[i].p != NULL)
            live += slots[i].size;
    if (st.live < live)
        fail("carve_stats_read counts fewer live bytes than the live blocks hold", NULL, st.live);
    for (size_t c = 0; c < st.class_count; c++) {
        const struct carve_class_stats *k = &st.classes[c];
        if (k->live * k->size > k->committed || k->committed > k->mapped)
            fail("a class's live, committed and mapped bytes do not nest", NULL, k->size);
    }
    struct carve_mallinfo2 mi = carve_mallinfo2();
    if (mi.uordblks + mi.fordblks != mi.arena || mi.arena != st.chunks * ((size_t)4 << 20) ||
        mi.hblks != st.large_live || mi.hblkhd != st.large_mapped)
        fail("mallinfo2 disagrees with carve_stats_read", NULL, mi.arena);
    struct carve_mallinfo old = carve_mallinfo();
    if ((size_t)old.arena != cap_int(mi.arena) || (size_t)old.uordblks != cap_int(mi.uordblks) ||
        (size_t)old.fordblks != cap_int(mi.fordblks) || (size_t)old.hblkhd != cap_int(mi.hblkhd))
        fail("mallinfo disagrees with mallinfo2", NULL, (size_t)old.arena);
}

/* ---- sizes and alignments ------------------------------------------------ */

static size_t pick_size(struct input *in) {
    switch (byte(in) % 10) {
    case 0:
    case 1:
    case 2:
        return byte(in); /* tiny, 0 included */
    case 3:
    case 4:
        return bytes(in, 2) % 4096;
    case 5: /* a class or page edge, give or take a little */
    {
        size_t base = (size_t)16 << (byte(in) % 20);
        return base + (size_t)(int8_t)byte(in);
    }
    case 6:
        return bytes(in, 3) % (512u << 10); /* around the small/large edge */
    case 7:
        return bytes(in, 4) % BIG_MAX;
    case 8: /* no machine serves these: NULL and ENOMEM */
        return SIZE_MAX - bytes(in, 2);
    default:
        return ((size_t)PTRDIFF_MAX) + 1 - (size_t)byte(in);
    }
}

static size_t pick_align(struct input *in) {
    unsigned b = byte(in);
    if (b >= 240) /* not a power of two (or zero) */
        return (size_t)(b - 240) * 24;
    return (size_t)1 << (b % 24); /* up to 8 MiB */
}

/* glibc fails every request over PTRDIFF_MAX; below that, a request may
 * fail only when no machine could serve it (here: over 1 TiB). */
static int must_fail(size_t size) {
    return size > (size_t)PTRDIFF_MAX;
}

static int may_fail(size_t size) {
    return size > ((size_t)1 << 40);
}

static int pow2(size_t a) {
    return a != 0 && (a & (a - 1)) == 0;
}

/* ---- contents ------------------------------------------------------------ */

static uint8_t pattern(uint8_t tag, size_t i) {
    return (uint8_t)(tag ^ (i * 131u) ^ (i >> 9));
}

/* Runs BODY with off and len set to each part of [0, size) that is checked:
 * all of it up to FULL_CHECK, else a head, a tail and one line per STRIPE. */
#define FOR_CHECKED(size, BODY)                                                  \
    do {                                                                         \
        size_t size_ = (size);                                                   \
        if (size_ <= FULL_CHECK) {                                               \
            size_t off = 0, len = size_;                                         \
            BODY;                                                                \
        } else {                                                                 \
            for (size_t o_ = 0; o_ + 64 <= size_; o_ += STRIPE) {                \
                size_t off = o_, len = o_ == 0 ? 4096 : 64;                      \
                BODY;                                                            \
            }                                                                    \
            {                                                                    \
                size_t off = size_ - 4096, len = 4096;                           \
                BODY;                                                            \
            }                                                                    \
        }                                                                        \
    } while (0)

static void fill(struct slot *s, size_t from) {
    FOR_CHECKED(s->size, {
        for (size_t i = off; i < off + len; i++)
            if (i >= from)
                s->p[i] = pattern(s->tag, i);
    });
}

static void verify(const struct slot *s, size_t upto) {
    size_t n = upto < s->size ? upto : s->size;
    FOR_CHECKED(s->size, {
        for (size_t i = off; i < off + len && i < n; i++)
            if (s->p[i] != pattern(s->tag, i))
                fail("a live block's contents changed", s, i);
    });
}

static void verify_zero(const struct slot *s, size_t n) {
    FOR_CHECKED(n, {
        for (size_t i = off; i < off + len; i++)
            if (s->p[i] != 0)
                fail("calloc memory is not zero", s, i);
    });
}

/* A new block at s->p of s->request bytes: check it, then own it whole. */
static void took(struct slot *s, size_t min_align, int zeroed) {
    uintptr_t a = (uintptr_t)s->p;
    size_t natural = s->request >= 16 ? 16 : 8;
    if (a % natural != 0 || (min_align > 1 && a % min_align != 0))
        fail("misaligned block", s, a % (min_align > natural ? min_align : natural));
    size_t usable = carve_malloc_usable_size(s->p);
    if (usable < s->request)
        fail("malloc_usable_size is below the request", s, usable);
    if (zeroed)
        verify_zero(s, s->request);
    s->size = usable; /* all of it is the program's to use */
    s->tag = ++next_tag;
    fill(s, 0);
}

static void check_failure(const char *what) {
    if (errno != ENOMEM && errno != EINVAL)
        fail(what, NULL, (size_t)errno);
}

/* The result of an allocation of size bytes into s: a block that must be
 * checked (1), or a failure that was allowed (0). fail() names the call. */
static int outcome(struct slot *s, size_t size) {
    if (s->p == NULL) {
        check_failure("failed with errno neither ENOMEM nor EINVAL");
        if (!may_fail(size))
            fail("failed", s, size);
        return 0;
    }
    if (must_fail(size))
        fail("more than PTRDIFF_MAX bytes, and it succeeded", s, size);
    return 1;
}

static void release(struct slot *s) {
    verify(s, SIZE_MAX);
    note("free", s->p, 0, 0, NULL);
    carve_free(s->p);
    memset(s, 0, sizeof *s);
}

/* ---- one call ------------------------------------------------------------ */

static void step(struct input *in) {
    unsigned op = byte(in) % 14;
    struct slot *s = &slots[byte(in) % SLOTS];
    if (s->p != NULL && op <= 6)
        op = 7 + op % 4; /* a live slot: free, resize or inspect it */
    size_t size = pick_size(in);
    static const char *const names[] = {"malloc", "malloc", "calloc", "aligned_alloc",
                                        "posix_memalign", "memalign", "valloc", "free",
                                        "realloc", "free_sized", "inspect"};
    call_name = names[op < 10 ? op : 10];
    errno = 0;
    switch (op) {
    case 0:
    case 1: {
        s->p = carve_malloc(size);
        note("malloc", NULL, size, 0, s->p);
        s->request = size;
        s->sized = 1;
        if (outcome(s, size)) {
            took(s, 1, 0);
            return;
        }
        break;
    }
    case 2: {
        size_t n = byte(in) % 2 ? byte(in) : SIZE_MAX / (size_t)(1 + byte(in)) + 1;
        size_t each = size % 8192, total;
        s->p = carve_calloc(n, each);
        note("calloc", NULL, n, each, s->p);
        s->request = n * each;
        if (__builtin_mul_overflow(n, each, &total)) {
            if (s->p != NULL)
                fail("calloc of an overflowing product succeeded", s, 0);
            check_failure("failed with errno neither ENOMEM nor EINVAL");
        } else if (outcome(s, total)) {
            s->sized = 1;
            took(s, 1, 1);
            return;
        }
        break;
    }
    case 3: {
        size_t align = pick_align(in);
        s->p = carve_aligned_alloc(align, size);
        note("aligned_alloc", NULL, align, size, s->p);
        s->request = size;
        s->align = align;
        if (!pow2(align)) {
            if (s->p != NULL || errno != EINVAL)
                fail("aligned_alloc with a bad alignment: not NULL and EINVAL", s, align);
        } else if (outcome(s, size)) {
            took(s, align, 0);
            return;
        }
        break;
    }
    case 4: {
        size_t align = pick_align(in);
        void *p = (void *)1;
        errno = 1234;
        int rc = carve_posix_memalign(&p, align, size);
        note("posix_memalign", NULL, align, size, rc == 0 ? p : NULL);
        if (errno != 1234)
            fail("posix_memalign changed errno", NULL, (size_t)errno);
        int bad = !pow2(align) || align % sizeof(void *) != 0;
        if (bad ? rc != EINVAL
                : rc == 0 ? must_fail(size) : rc != ENOMEM || !may_fail(size))
            fail("posix_memalign returned the wrong code", NULL, (size_t)rc);
        if (rc != 0) {
            if (p != (void *)1)
                fail("a failed posix_memalign wrote *memptr", NULL, 0);
            break;
        }
        s->p = p;
        s->request = size;
        took(s, align, 0);
        return;
    }
    case 5: {
        size_t align = pick_align(in);
        s->p = carve_memalign(align, size);
        note("memalign", NULL, align, size, s->p);
        s->request = size;
        if (outcome(s, size)) {
            size_t want = align <= 1 ? 1 : pow2(align) ? align : (size_t)1 << (64 - __builtin_clzl(align - 1));
            took(s, want, 0);
            return;
        }
        break;
    }
    case 6: {
        int pv = byte(in) % 2;
        call_name = pv ? "pvalloc" : "valloc";
        s->p = pv ? carve_pvalloc(size) : carve_valloc(size);
        note(call_name, NULL, size, 0, s->p);
        s->request = size;
        if (outcome(s, size)) {
            took(s, 4096, 0);
            if (pv && s->size < ((s->request + 4095) & ~(size_t)4095))
                fail("pvalloc did not round the block up to a page", s, s->size);
            return;
        }
        break;
    }
    case 7:
        release(s);
        return;
    case 8: { /* realloc, or reallocarray */
        int arr = byte(in) % 4 == 0;
        size_t n = arr ? 1 + byte(in) % 4 : 1, total;
        int overflow = __builtin_mul_overflow(n, size, &total);
        verify(s, SIZE_MAX);
        void *q = arr ? carve_reallocarray(s->p, n, size) : carve_realloc(s->p, total);
        note(arr ? "reallocarray" : "realloc", s->p, n, size, q);
        if (total == 0 && s->p != NULL) { /* glibc: frees, returns NULL */
            if (q != NULL)
                fail("realloc(p, 0) did not return NULL", s, 0);
            memset(s, 0, sizeof *s);
            return;
        }
        if (q == NULL) {
            check_failure("failed with errno neither ENOMEM nor EINVAL");
            if (!overflow && !may_fail(total))
                fail("realloc failed", s, total);
            verify(s, SIZE_MAX); /* the old block must be intact */
            return;
        }
        if (overflow || must_fail(total))
            fail("realloc to more than PTRDIFF_MAX bytes succeeded", s, total);
        size_t old = s->p != NULL ? s->size : 0;
        struct slot moved = *s;
        moved.p = q;
        verify(&moved, total); /* the contents up to the smaller size */
        s->p = q;
        s->request = total;
        s->align = 0;
        s->sized = 1;
        size_t usable = carve_malloc_usable_size(q);
        if (usable < total)
            fail("malloc_usable_size is below the realloc request", s, usable);
        if (old == 0) /* realloc(NULL, n) */
            s->tag = ++next_tag;
        s->size = usable;
        fill(s, 0); /* the checked parts may differ from the old block's */
        return;
    }
    case 9: { /* free_sized / free_aligned_sized with the sizes given */
        verify(s, SIZE_MAX);
        note("free_sized", s->p, s->align, s->request, NULL);
        if (s->align != 0 && s->p != NULL)
            carve_free_aligned_sized(s->p, s->align, s->request);
        else if (s->sized)
            carve_free_sized(s->p, s->request);
        else
            carve_free(s->p);
        memset(s, 0, sizeof *s);
        return;
    }
    default: { /* inspect, and now and then give memory back */
        if (carve_malloc_usable_size(s->p) != s->size)
            fail("malloc_usable_size changed for a live block", s, carve_malloc_usable_size(s->p));
        verify(s, SIZE_MAX);
        switch (byte(in)) {
        case 0:
            note("malloc_trim", NULL, 0, 0, NULL);
            carve_malloc_trim(0);
            break;
        case 1:
            check_stats();
            break;
        }
        return;
    }
    }
    memset(s, 0, sizeof *s);
}

/* carve's own checks abort (a bad pointer, heap corruption): the trace
 * goes out then too, before libFuzzer's handler (chained, so that it still
 * saves the input). Installed at the first input, after libFuzzer's. Not
 * async-signal-safe, and need not be: the process is going down. */
static struct sigaction fuzzer_abort;

static void on_abort(int sig, siginfo_t *info, void *ctx) {
    print_trace();
    if (fuzzer_abort.sa_flags & SA_SIGINFO) {
        fuzzer_abort.sa_sigaction(sig, info, ctx);
    } else if (fuzzer_abort.sa_handler != SIG_DFL && fuzzer_abort.sa_handler != SIG_IGN) {
        fuzzer_abort.sa_handler(sig);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void chain_abort_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_abort;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGABRT, &sa, &fuzzer_abort);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int chained;
    if (!chained) {
        chain_abort_handler();
        chained = 1;
    }
    struct input in = {data, size};
    for (unsigned i = 0; in.n > 0 && i < 512; i++)
        step(&in);
    for (unsigned i = 0; i < SLOTS; i++)
        if (slots[i].p != NULL)
            release(&slots[i]);
    if (carve_malloc_usable_size(NULL) != 0)
        fail("malloc_usable_size(NULL) is not 0", NULL, 0);
    return 0;
}
