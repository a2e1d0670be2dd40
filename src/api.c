/*
 * api.c: the public entry points.
 *
 * This file is built twice: into libcarve (CARVE_INTERPOSE=1), where the
 * standard names (malloc, free, ...) are aliases of the carve_ functions,
 * and into libcarve_prefixed, which has only the carve_ names so that tests
 * can run it beside the C library's malloc and the sanitizers.
 *
 * The path of a small malloc: carve_malloc -> cv_heap_alloc (internal.h,
 * inline: size class, current page, pop) -> cv_heap_alloc_slow (heap.c:
 * collect frees, next page) -> cv_arena_page_alloc (arena.c: a run of
 * slices in a chunk) -> cv_os_map_aligned (os.c: mmap).
 */
#define _GNU_SOURCE
#include "internal.h"
#include "debug.h"

#include <stdlib.h>

/* ---- malloc and free ---------------------------------------------------- */

/* The slow path of the entry points' allocations. A thread keeps the empty
 * heap until its first allocation, and for good in debug mode (debug.c
 * holds its heap apart), so this is the one place where an allocation
 * tests for debug mode: the fast path misses anyway. */
/* guard_sample=N: every Nth allocation that reaches this slow path, per
 * thread, of a kernel page or less, gets a page of its own against a
 * guard (debug_map.c); the fast paths do not change. Not in debug mode,
 * which guards its own way, nor for aligned allocations (sample false),
 * whose alignment the sampled block's may not meet. */
static CARVE_TLS unsigned tl_guard_left;

static CARVE_NOINLINE void *guard_sample(size_t size, bool zero, const char *func) {
    if (tl_guard_left == 0)
        tl_guard_left = cv_options.guard_sample;
    if (--tl_guard_left != 0 || cv_options.debug != 0)
        return NULL;
    return cv_dmap_sample(size, zero, func);
}

static inline void *alloc_slow_as(heap_t *heap, size_t size, bool zero, const char *func,
                                  bool sample) {
    void *p = NULL;
    if (sample && unlikely(cv_options.guard_sample != 0) && size <= GUARD_SAMPLE_MAX)
        p = guard_sample(size, zero, func);
    if (p != NULL)
        ;
    else if (heap == &cv_heap_empty && cv_debug_on())
        p = cv_debug_alloc(size, 0, zero, func);
    else
        p = cv_heap_alloc_slow(heap, size, zero);
    cv_safe_point();
    return p;
}

static CARVE_NOINLINE void *alloc_slow(heap_t *heap, size_t size, bool zero) {
    return alloc_slow_as(heap, size, zero, zero ? "calloc" : "malloc", true);
}

/* aligned allocations' blocks come from the classes alone (alloc_aligned) */
static CARVE_NOINLINE void *aligned_slow(heap_t *heap, size_t size, bool zero) {
    return alloc_slow_as(heap, size, zero, "malloc", false);
}

static inline void *do_malloc(size_t size) {
    return cv_heap_alloc_with(cv_tl_heap, size, false, alloc_slow);
}

/* Debug mode, or a block it made (which outlives a later debug=none). */
static inline bool debug_block(unsigned kind) {
    return unlikely(cv_options.debug != 0 || kind == MAP_DEBUG);
}

static CARVE_NOINLINE void free_other(void *p, size_t size, size_t align, const char *func) {
    uintptr_t a = (uintptr_t)p;
    if (a == 0)
        return;
    unsigned kind = cv_map_kind(a);
    if (debug_block(kind)) {
        cv_debug_free(p, size, func);
        cv_safe_point();
        return;
    }
    if (kind == MAP_LARGE || kind == MAP_LARGE_PREV) {
        large_t *h = cv_large_header(a, kind, func);
        if (h != NULL) {
            if (size != CV_NO_SIZE &&
                (size > cv_large_usable(h) || (align != 0 && (a & (align - 1)) != 0)))
                cv_report_wrong_size(a, cv_large_usable(h), size, align, func);
            cv_large_free(h);
            cv_purge_tick();
            cv_safe_point();
            return;
        }
    }
    /* also a large block's second free: its slot was cleared */
    cv_report_bad_pointer(p, "invalid free", func);
}

/* Not the owner: another thread's block, or debug mode (whose pages no
 * thread owns). */
static CARVE_NOINLINE void free_not_owner(page_t *page, void *p, size_t size, const char *func) {
    if (unlikely(cv_options.debug != 0))
        cv_debug_free(p, size, func);
    else
        cv_heap_free_remote(page, p, func);
}

/* The owner's push onto the page's free list, for blocks that have no bin
 * (classes above BIN_MAX_BLOCK) and when debug mode holds the bins off
 * (LIFO: see page.c). The counter compare catches both "page now empty"
 * and "page was full" (see page_t.used). A block that is already the head
 * of the free list is being freed twice in a row. */
static CARVE_NOINLINE void free_to_page(void *p, size_t size, const char *func) {
    uintptr_t a = (uintptr_t)p;
    page_t *page = cv_page_of(cv_chunk_of(a), a);
    block_t *b = p;
    if (likely(atomic_load_explicit(&page->owner, memory_order_relaxed) == cv_thread_id())) {
        if (unlikely(cv_page_push(page, b) == b)) { /* the list is now a loop: stop here */
            cv_report_double_free(page, p, func); /* does not return */
            return;
        }
        if (cv_page_unuse(page)) {
            cv_heap_free_local_slow(page);
            cv_safe_point();
        }
        return;
    }
    free_not_owner(page, p, size, func);
}

/* A sized free whose size is not its block's class (or an aligned one
 * whose block is not so aligned): a block shrunk in place by realloc, or
 * an aligned allocation's bigger class, is fine; anything else is the
 * program's bug, stopped here before it hides another. */
static CARVE_NOINLINE void check_size(void *p, unsigned bin_idx, size_t size, size_t align,
                                      const char *func) {
    uintptr_t a = (uintptr_t)p;
    if (bin_idx == 0) /* no class here (debug mode, a free slice): the free paths look */
        return;
    unsigned c = bin_idx - 1;
    if ((align == 0 || (a & (align - 1)) == 0) && cv_class_may_serve(c, size, align))
        return;
    cv_report_wrong_size(a, cv_class_size[c], size, align, func);
}

/* The size is one that picks the block's class. */
static inline bool class_exact(unsigned bin_idx, size_t size) {
    unsigned c = bin_idx - 1;
    return bin_idx == 0 ||
           (size <= cv_class_size[c] && (c == 0 || size > cv_class_size[c - 1]));
}

/* The block's bin is full, or its class has none. Out of line so that the
 * fast path stays a leaf that ends in a tail call. */
static CARVE_NOINLINE void free_no_room(heap_t *heap, unsigned bin_idx, void *p, size_t size,
                                        const char *func) {
    bin_t *bin = &heap->bins[bin_idx];
    if (bin->max == 0) { /* no bin for this block */
        free_to_page(p, size, func);
        return;
    }
    if (unlikely(bin->slot[bin->count - 1] == p)) /* the fast path's test, on a full bin */
        cv_report_double_free(NULL, p, func);
    cv_heap_bin_full(heap, bin_idx, p);
    cv_safe_point();
}

/* The free fast path: one map lookup for ownership, one byte of the chunk
 * header for the block's bin, and a push of the pointer on this thread's
 * bin, whoever's page the block is in (heap.c, "bins"): it touches neither
 * the block nor its page's descriptor. The block that is already on top of
 * the bin is being freed twice in a row, the most common double free
 * (glibc's "fasttop" check): one compare, slot[-1] being NULL. A full bin
 * gives half its blocks back to their pages first (cv_heap_bin_full).
 *
 * The test that keeps the map lookup inside the table also rejects a
 * pointer that is not 8-aligned, which no block start is. size is
 * a sized free's (free_sized, sized delete) or CV_NO_SIZE, align an
 * aligned one's or 0: both constants in every caller, so that free()
 * pays nothing for them; the size is checked against the block's class
 * (check_size), and debug mode checks it against the requested size. */
static inline void do_free_with(void *p, size_t size, size_t align, const char *func) {
    uintptr_t a = (uintptr_t)p;
    if (unlikely((a & ~(((uintptr_t)1 << ADDRESS_BITS) - 8)) != 0 ||
                 atomic_load_explicit(&cv_chunk_map[a >> CHUNK_SHIFT], memory_order_relaxed) != MAP_SMALL)) {
        free_other(p, size, align, func);
        return;
    }
    unsigned bin_idx = cv_chunk_of(a)->slice_bin[(a & CHUNK_MASK) >> SLICE_SHIFT];
    if (size != CV_NO_SIZE && unlikely(!class_exact(bin_idx, size) || align > ALIGN_MIN))
        check_size(p, bin_idx, size, align, func);
    heap_t *heap = cv_tl_heap;
    bin_t *bin = &heap->bins[bin_idx];
    uint32_t n = bin->count;
    if (likely(n < bin->max)) {
        if (unlikely(bin->slot[(int32_t)n - 1] == p)) {
            cv_report_double_free(NULL, p, func); /* does not return */
            return;
        }
        bin->slot[n] = p;
        CV_SET(bin->count, n + 1);
        return;
    }
    free_no_room(heap, bin_idx, p, size, func);
}

static inline void do_free(void *p, size_t size, const char *func) {
    do_free_with(p, size, 0, func);
}

/* Usable size of a live block; aborts on a pointer that is not one. */
static size_t block_usable(void *p, const char *func) {
    uintptr_t a = (uintptr_t)p;
    unsigned kind = cv_map_kind(a);
    if (debug_block(kind))
        return cv_debug_usable(p, func);
    if (kind == MAP_SMALL) {
        page_t *page = cv_page_of(cv_chunk_of(a), a);
        if (cv_page_is_block(page, a))
            return page->block_size;
    } else if (kind == MAP_LARGE || kind == MAP_LARGE_PREV) {
        large_t *h = cv_large_header(a, kind, func);
        if (h != NULL)
            return cv_large_usable(h);
    }
    cv_report_bad_pointer(p, "invalid pointer", func);
}

CARVE_EXPORT void *carve_malloc(size_t size) {
    return do_malloc(size);
}

CARVE_EXPORT void carve_free(void *p) {
    do_free(p, CV_NO_SIZE, "free");
}

CARVE_EXPORT void *carve_calloc(size_t n, size_t size) {
    size_t total;
    if (unlikely(__builtin_mul_overflow(n, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    return cv_heap_alloc_with(cv_tl_heap, total, true, alloc_slow);
}

/* ---- realloc ------------------------------------------------------------ */

static void *do_realloc(void *p, size_t size, const char *func) {
    if (p == NULL)
        return do_malloc(size);
    if (size == 0) { /* glibc: free and return NULL */
        do_free(p, CV_NO_SIZE, func);
        return NULL;
    }
    uintptr_t a = (uintptr_t)p;
    unsigned kind = cv_map_kind(a);
    if (debug_block(kind)) {
        if (cv_options.debug != 0)
            return cv_debug_realloc(p, size, func);
        /* a guard_sample block, or one that debug mode made before it was
         * switched off: its successor is a release block (debug.c would
         * make a debug heap for it, and take the thread's heap away) */
        size_t old = cv_debug_usable(p, func);
        void *q = do_malloc(size);
        if (q == NULL)
            return NULL;
        memcpy(q, p, size < old ? size : old);
        cv_debug_free(p, CV_NO_SIZE, func);
        return q;
    }
    if ((kind == MAP_LARGE || kind == MAP_LARGE_PREV) && size > SMALL_MAX) {
        large_t *h = cv_large_header(a, kind, func);
        if (h == NULL)
            cv_report_bad_pointer(p, "invalid realloc", func);
        return cv_large_realloc(h, size);
    }
    size_t old = block_usable(p, func);
    /* In place when the block fits and would not waste more than half. */
    if (size <= old && size >= old / 2)
        return p;
    void *q = do_malloc(size);
    if (q == NULL)
        return NULL;
    memcpy(q, p, size < old ? size : old);
    do_free(p, CV_NO_SIZE, func);
    return q;
}

CARVE_EXPORT void *carve_realloc(void *p, size_t size) {
    return do_realloc(p, size, "realloc");
}

CARVE_EXPORT void *carve_reallocarray(void *p, size_t n, size_t size) {
    size_t total;
    if (unlikely(__builtin_mul_overflow(n, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    return do_realloc(p, total, "reallocarray");
}

/* ---- aligned allocation ------------------------------------------------- */

/* align: a power of two. Small alignments come from the size classes: a
 * class's blocks are aligned to its lowest set bit (pages start on 64 KiB
 * boundaries), so the first class at least as big as size with enough
 * natural alignment serves it with no extra waste beyond that class. */
static void *alloc_aligned(size_t align, size_t size, const char *func) {
    if (unlikely(cv_tl_heap == &cv_heap_empty) && cv_debug_on())
        return cv_debug_alloc(size, align, false, func);
    if (align <= ALIGN_MIN)
        return do_malloc(size < align ? align : size);
    if (size <= SMALL_MAX && align <= SLICE_SIZE) {
        for (unsigned c = cv_size_class(size ? size : 1); c < CLASS_COUNT; c++) {
            size_t s = cv_class_size[c];
            if ((s & -s) >= align)
                return cv_heap_alloc_with(cv_tl_heap, s, false, aligned_slow);
        }
    }
    cv_purge_tick(); /* new memory: let decayed memory go first */
    return cv_large_alloc(size, align, false);
}

static bool is_pow2(size_t x) {
    return x != 0 && (x & (x - 1)) == 0;
}

CARVE_EXPORT void *carve_aligned_alloc(size_t align, size_t size) {
    if (!is_pow2(align)) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_aligned(align, size, "aligned_alloc");
}

CARVE_EXPORT int carve_posix_memalign(void **memptr, size_t align, size_t size) {
    if (!is_pow2(align) || align % sizeof(void *) != 0)
        return EINVAL;
    int saved = errno;
    void *p = alloc_aligned(align, size, "posix_memalign");
    errno = saved;
    if (p == NULL)
        return ENOMEM;
    *memptr = p;
    return 0;
}

/* glibc: an alignment that is not a power of two is rounded up to one. */
CARVE_EXPORT void *carve_memalign(size_t align, size_t size) {
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (!is_pow2(align))
        align = align <= 1 ? 1 : (size_t)1 << (64 - __builtin_clzl(align - 1));
    return alloc_aligned(align, size, "memalign");
}

CARVE_EXPORT void *carve_valloc(size_t size) {
    return alloc_aligned(cv_os_page_size(), size, "valloc");
}

CARVE_EXPORT void *carve_pvalloc(size_t size) {
    size_t page = cv_os_page_size();
    if (size > SIZE_MAX - page) {
        errno = ENOMEM;
        return NULL;
    }
    size_t rounded = size == 0 ? page : (size + page - 1) & ~(page - 1);
    return alloc_aligned(page, rounded, "pvalloc");
}

/* ---- queries and the rest of the family --------------------------------- */

CARVE_EXPORT size_t carve_malloc_usable_size(void *p) {
    return p == NULL ? 0 : block_usable(p, "malloc_usable_size");
}

CARVE_EXPORT void carve_free_sized(void *p, size_t size) {
    do_free(p, size, "free_sized");
}

CARVE_EXPORT void carve_free_aligned_sized(void *p, size_t align, size_t size) {
    do_free_with(p, size, align, "free_aligned_sized");
}

CARVE_EXPORT int carve_malloc_trim(size_t pad) {
    (void)pad;
    cv_heap_trim();
    return cv_purge_trim() ? 1 : 0;
}

/* The statistics calls initialise carve first, as carve_stats_read does:
 * the cgroup limit they read is written there, and a first call racing
 * another thread's first malloc would read it unordered. */
CARVE_EXPORT void carve_malloc_stats(void) {
    cv_init();
    cv_stats_print();
}

CARVE_EXPORT void carve_stats_print(void) {
    cv_init();
    cv_stats_print();
}

CARVE_EXPORT void carve_stats_read(struct carve_stats *stats) {
    cv_init(); /* the cgroup limit is read there */
    cv_stats_read(stats);
}

CARVE_EXPORT struct carve_mallinfo2 carve_mallinfo2(void) {
    struct carve_mallinfo2 mi;
    cv_init();
    cv_stats_collect(&mi);
    return mi;
}

CARVE_EXPORT struct carve_mallinfo carve_mallinfo(void) {
    struct carve_mallinfo mi;
    cv_init();
    cv_stats_collect_legacy(&mi);
    return mi;
}

/* As glibc's: an unknown option is EINVAL, returned (errno untouched). */
CARVE_EXPORT int carve_malloc_info(int options, FILE *fp) {
    if (options != 0 || fp == NULL)
        return EINVAL;
    cv_init();
    return cv_stats_xml(fp);
}

CARVE_EXPORT int carve_option_set(const char *key_value) {
    if (key_value == NULL || !cv_init())
        return -1;
    bool thp = cv_options.thp;
    /* the purger reads the options: it ends first, and a slow path starts
     * it again if it is still wanted and has work */
    cv_purge_stop();
    if (!cv_options_set(key_value))
        return -1;
    /* Cached large mappings keep the huge-page advice they were made with,
     * and a block that reused one would too: start the cache afresh. */
    if (cv_options.thp != thp)
        cv_large_trim();
    cv_safe_point(); /* signal= takes effect now */
    return 0;
}

/* No glibc tunable maps onto carve (it sizes arenas, thresholds and
 * trimming itself): each is accepted and has no effect, with glibc's
 * answer for its parameters and unknown ones alike, 1. Returning 0 made
 * programs that check mallopt's result report an error under carve. */
CARVE_EXPORT int carve_mallopt(int param, int value) {
    (void)param;
    (void)value;
    return 1;
}

/* ---- the standard names ------------------------------------------------- */
#if CARVE_INTERPOSE
#define ALIAS(target) __attribute__((alias(#target), visibility("default")))
/* The C library's prototypes carry fewer attributes than carve's: harmless
 * for an alias of the same function. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-attributes"
#endif

void *malloc(size_t size) ALIAS(carve_malloc);
void free(void *p) ALIAS(carve_free);
void *calloc(size_t n, size_t size) ALIAS(carve_calloc);
void *realloc(void *p, size_t size) ALIAS(carve_realloc);
void *reallocarray(void *p, size_t n, size_t size) ALIAS(carve_reallocarray);
void *aligned_alloc(size_t align, size_t size) ALIAS(carve_aligned_alloc);
int posix_memalign(void **memptr, size_t align, size_t size) ALIAS(carve_posix_memalign);
void *memalign(size_t align, size_t size) ALIAS(carve_memalign);
void *valloc(size_t size) ALIAS(carve_valloc);
void *pvalloc(size_t size) ALIAS(carve_pvalloc);
size_t malloc_usable_size(void *p) ALIAS(carve_malloc_usable_size);
void free_sized(void *p, size_t size) ALIAS(carve_free_sized);
void free_aligned_sized(void *p, size_t align, size_t size) ALIAS(carve_free_aligned_sized);
int malloc_trim(size_t pad) ALIAS(carve_malloc_trim);
void malloc_stats(void) ALIAS(carve_malloc_stats);
struct carve_mallinfo2 mallinfo2(void) ALIAS(carve_mallinfo2);
struct carve_mallinfo mallinfo(void) ALIAS(carve_mallinfo);
int malloc_info(int options, FILE *fp) ALIAS(carve_malloc_info);
int mallopt(int param, int value) ALIAS(carve_mallopt);

/* glibc's internal names, which some programs and libraries call directly;
 * left to glibc they would hand out blocks that carve's free rejects. */
void *__libc_malloc(size_t size) ALIAS(carve_malloc);
void __libc_free(void *p) ALIAS(carve_free);
void *__libc_calloc(size_t n, size_t size) ALIAS(carve_calloc);
void *__libc_realloc(void *p, size_t size) ALIAS(carve_realloc);
void *__libc_memalign(size_t align, size_t size) ALIAS(carve_memalign);
void *__libc_valloc(size_t size) ALIAS(carve_valloc);
void *__libc_pvalloc(size_t size) ALIAS(carve_pvalloc);

#include "api_cxx.h" /* the C++ operators */
#endif
