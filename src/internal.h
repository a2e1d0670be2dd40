/*
 * internal.h: prototypes of every module and the static inline helpers that
 * the fast paths are made of. Internal symbols with external linkage carry
 * the cv_ prefix so that a static link cannot clash with a program's names;
 * static functions inside a module use short names.
 *
 * A module only calls modules of its layer or below: the order is in
 * doc/design.md ("Layers"), and test/check-layers enforces it.
 */
#ifndef CARVE_INTERNAL_H
#define CARVE_INTERNAL_H

#include "types.h"
#include "carve.h"

#include <errno.h>
#include <string.h>

/* n rounded up to whole kernel pages. */
CARVE_INLINE size_t cv_page_round(size_t n) {
    return (n + CARVE_PAGE - 1) & ~(size_t)(CARVE_PAGE - 1);
}

/* ---- os.c: every kernel call ------------------------------------------- */
void *cv_os_map(size_t size);
void *cv_os_map_aligned(size_t size, size_t align, bool reserve);
bool cv_os_unmap(void *p, size_t size);
void cv_os_hugepage(void *p, size_t size);
bool cv_os_remap_inplace(void *p, size_t old_size, size_t new_size);
bool cv_os_remap_to(void *p, size_t old_size, size_t new_size, void *dest);
bool cv_os_protect(void *p, size_t size, bool rw);
bool cv_os_discard(void *p, size_t size);
bool cv_os_purge(void *p, size_t size, bool dontneed);
void cv_os_populate(void *p, size_t size);
bool cv_os_seccomp_filtered(void);
/* Ranges purged together, with one system call where the kernel allows it
 * (os.c). Flush before the ranges can be reused: a range handed out while
 * still waiting here would lose what its new owner writes. */
#define OS_PURGE_BATCH 64
typedef struct {
    struct { void *base; size_t len; } range[OS_PURGE_BATCH]; /* = struct iovec */
    unsigned n;
    bool dontneed;
} os_purge_batch_t;
void cv_os_purge_add(os_purge_batch_t *b, void *p, size_t size); /* n < OS_PURGE_BATCH */
/* Purges the ranges (the caller then empties the batch); returns a bit for
 * each range that now reads as zero (range i: bit i). */
uint64_t cv_os_purge_flush(const os_purge_batch_t *b);
/* Milliseconds on CLOCK_MONOTONIC: the one clock the purge policy reads
 * (decay, lazy stage, demand windows, the large cache's ages), and only on
 * slow paths. A unit test sets cv_os_clock_mock to a time of its own to
 * step through the decay without sleeping; 0, as in every program, reads
 * the real clock. */
uint64_t cv_os_now_ms(void);
extern _Atomic uint64_t cv_os_clock_mock;
void cv_os_sleep_ms(unsigned ms);
size_t cv_os_read_file(const char *path, char *buf, size_t cap);
void cv_os_write_stderr(const char *s, size_t n);
const char *cv_os_getenv(const char *name);
size_t cv_os_page_size(void);
bool cv_os_thread_start(void *(*fn)(void *));
void cv_os_thread_name(const char *name);

/* The thread pointer is unique among live threads and costs one load. */
CARVE_INLINE uintptr_t cv_thread_id(void) {
#if defined(__x86_64__)
    uintptr_t tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    return tp;
#elif defined(__aarch64__)
    uintptr_t tp;
    __asm__ volatile("mrs %0, tpidr_el0" : "=r"(tp));
    return tp;
#else
    static CARVE_TLS char anchor;
    return (uintptr_t)&anchor;
#endif
}

/* ---- locks -------------------------------------------------------------- */
/* A try first: an uncontended take costs what pthread_mutex_lock does, and
 * a contended one is counted before it waits. */
CARVE_INLINE void cv_lock_take(cv_lock_t *l) {
    if (unlikely(pthread_mutex_trylock(&l->mutex) != 0)) {
        atomic_fetch_add_explicit(&l->contended, 1, memory_order_relaxed);
        pthread_mutex_lock(&l->mutex);
    }
    CV_SET(l->acquired, l->acquired + 1);
}

CARVE_INLINE void cv_lock_give(cv_lock_t *l) {
    pthread_mutex_unlock(&l->mutex);
}

/* ---- msg.c: formatted output, and numbers read, without allocating ---- */
size_t cv_msg_parse_uint(const char *s, size_t n, size_t *out);
/* Formats %s %d %u %zu %zx %p %c into buf (always NUL-terminated). */
size_t cv_msg_format(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cv_msg_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "carve: <what> of 0x<addr> (<detail>) in <func>", then abort(). */
__attribute__((noreturn, cold)) void cv_msg_fatal(const char *what, const void *addr,
                                                  const char *detail, const char *func);

/* A backtrace of the calling thread on stderr, without allocating;
 * cv_msg_fatal prints one after its line. */
void cv_msg_backtrace(void);
int cv_msg_stack(void **pc, int cap, int skip);
void cv_msg_print_stack(const char *title, void *const *pc, int n);

/* Internal invariants, checked only in --enable-debug builds (config_debug
 * is a constant: a release build compiles the test away). msg.c. */
__attribute__((noreturn, cold)) void cv_assert_fail(const char *expr, const char *file, int line);
#define CV_ASSERT(x)                                \
    do {                                            \
        if (config_debug && unlikely(!(x)))         \
            cv_assert_fail(#x, __FILE__, __LINE__); \
    } while (0)

/* ---- size_class.c ------------------------------------------------------ */
extern const uint32_t cv_class_size[CLASS_COUNT];
extern const uint64_t cv_class_magic[CLASS_COUNT];
extern const uint8_t cv_class_slices[CLASS_COUNT];
extern const uint8_t cv_class_small[65];
bool cv_class_may_serve(unsigned c, size_t size, size_t align);

/* Size to class: a table up to 512 bytes, then four classes per doubling
 * from the position of the highest bit (about 8 instructions). */
CARVE_INLINE unsigned cv_size_class(size_t size) {
    if (size <= 512)
        return cv_class_small[(size + 7) >> 3];
    unsigned k = 63u - (unsigned)__builtin_clzl(size - 1); /* size in (2^k, 2^(k+1)] */
    return (k - 9) * 4 + 25 + (unsigned)(((size - 1) >> (k - 2)) & 3);
}

/* ---- arena.c: chunks, slices and the chunk map ------------------------- */
extern _Atomic uint8_t cv_chunk_map[MAP_SLOTS];

CARVE_INLINE unsigned cv_map_kind(uintptr_t a) {
    if (unlikely(a >> ADDRESS_BITS))
        return MAP_NONE;
    return atomic_load_explicit(&cv_chunk_map[a >> CHUNK_SHIFT], memory_order_relaxed);
}

CARVE_INLINE chunk_t *cv_chunk_of(uintptr_t a) {
    return (chunk_t *)(a & ~(uintptr_t)CHUNK_MASK);
}

/* The page covering a; pages[0] (the header slice's dummy page, which owns
 * nothing and holds no block) for free slices. */
CARVE_INLINE page_t *cv_page_of(chunk_t *chunk, uintptr_t a) {
    return &chunk->pages[chunk->slice_page[(a & CHUNK_MASK) >> SLICE_SHIFT]];
}

/* The arena is mechanism: it says when the purge policy has work (grew: a
 * new chunk was mapped; true from a free: more idle slices than recent
 * demand calls for), and its callers tell purge.c. */
page_t *cv_arena_page_alloc(size_t slices, bool dense, bool *grew);
bool cv_arena_page_free(page_t *page);
void cv_arena_page_free_locked(page_t *page);
void cv_arena_lock(void);
void cv_arena_unlock(void);
void cv_arena_abandon_locked(page_t *page);
page_t *cv_arena_adopt(unsigned class_idx, bool debug);
bool cv_arena_free_abandoned(page_t *page);
void *cv_arena_meta_alloc(size_t size);
bool cv_arena_trim(void);
size_t cv_arena_purge(uint64_t now, uint64_t decay_ms, uint64_t lazy_ms, bool dontneed);
size_t cv_arena_idle_bytes(void); /* free slices still resident */
size_t cv_arena_purge_excess(bool dontneed);
void cv_arena_fork_prepare(void);
void cv_arena_fork_parent(void);
void cv_arena_fork_child(void);
void cv_arena_set_large(uintptr_t slot_addr, unsigned kind);
const cv_lock_t *cv_arena_lock_stats(void);
void cv_arena_each_page_locked(void (*visit)(page_t *page, void *arg), void *arg);

/* ---- page.c ------------------------------------------------------------ */
void cv_page_init(page_t *page, unsigned class_idx, heap_t *heap);
void cv_page_extend(page_t *page);
void cv_page_collect(page_t *page);
/* A block pointer is valid for page when it is a block boundary inside it. */
bool cv_page_is_block(const page_t *page, uintptr_t a);
void cv_page_span_init(page_t *page, uint8_t *start, unsigned slices, bool memory_is_zero);
void cv_page_reset(page_t *page);
void cv_page_set_owner(page_t *page, heap_t *heap);
bool cv_page_mark_full(page_t *page);
void cv_page_unmark_full(page_t *page);
void cv_page_abandon(page_t *page);
void cv_page_set_abandoned(page_t *page, bool abandoned);

/* Queues of pages, linked through next/prev: a heap's queue per class and
 * its full list, the arena's abandoned pages per class. first is written
 * with CV_SET: the arena peeks at an abandoned queue without its lock. */
CARVE_INLINE void cv_page_queue_remove(page_queue_t *q, page_t *page) {
    if (page->prev)
        page->prev->next = page->next;
    else
        CV_SET(q->first, page->next);
    if (page->next)
        page->next->prev = page->prev;
    else
        q->last = page->prev;
    page->next = page->prev = NULL;
}

CARVE_INLINE void cv_page_queue_push_front(page_queue_t *q, page_t *page) {
    page->prev = NULL;
    page->next = q->first;
    if (q->first)
        q->first->prev = page;
    else
        q->last = page;
    CV_SET(q->first, page);
}

CARVE_INLINE void cv_page_queue_push_back(page_queue_t *q, page_t *page) {
    page->next = NULL;
    page->prev = q->last;
    if (q->last)
        q->last->next = page;
    else
        CV_SET(q->first, page);
    q->last = page;
}

/* The pin: one extra count in used while the page is its class's current
 * page (see page_t.used). */
CARVE_INLINE void cv_page_pin(page_t *page, int delta) {
    CV_SET(page->used, page->used + (uint32_t)delta);
}
/* Where debug=guards puts a page's guard: the last OS page of its span. */
CARVE_INLINE uint8_t *cv_page_guard(const page_t *page) {
    return page->start + ((size_t)page->slice_count << SLICE_SHIFT) - CARVE_PAGE;
}

/* ---- heap.c: thread heaps ---------------------------------------------- */
extern page_t cv_page_empty;
extern heap_t cv_heap_empty;
extern CARVE_TLS heap_t *cv_tl_heap;
extern CARVE_TLS bool cv_tl_exited;

void *cv_heap_alloc_slow(heap_t *heap, size_t size, bool zero);
void cv_heap_bin_full(heap_t *heap, unsigned bin_idx, void *p);
const heap_t *cv_heap_first(void); /* every heap ever made, via next_all */
void cv_heap_bins_off(heap_t *heap);
/* heap.c for free.c (one layer: the heap's page queues and its bins) */
void cv_heap_page_unfull(heap_t *heap, page_t *page);
void cv_heap_page_emptied(heap_t *heap, page_t *page);
void cv_heap_bins_init(heap_t *heap);
void cv_heap_bins_reset(heap_t *heap);
void cv_heap_bin_empty(heap_t *heap, bin_t *bin);
void cv_heap_bins_empty(heap_t *heap);
void cv_heap_free_local_slow(page_t *page);
bool cv_heap_page_reclaim(heap_t *heap, page_t *page);
void cv_heap_page_to_arena(page_t *page);
void cv_heap_free_remote(page_t *page, block_t *b, const char *func);
heap_t *cv_heap_get_slow(void);
void cv_heap_thread_done(void *heap);
void cv_heap_release(heap_t *heap);
void cv_heap_abandon_locked(page_t *page); /* under the arena lock */
void cv_heap_trim(void);
void cv_heap_fork_child(void);

/* The owner's side of heap_t.lock: its slow paths, never nested. */
CARVE_INLINE void cv_heap_lock(heap_t *heap) {
    cv_lock_take(&heap->lock);
}

CARVE_INLINE void cv_heap_unlock(heap_t *heap) {
    cv_lock_give(&heap->lock);
}

/* Another thread's try (free.c, reclaim), which never waits: a miss counts
 * as a contended take that gave up. */
CARVE_INLINE bool cv_heap_trylock(heap_t *heap) {
    if (pthread_mutex_trylock(&heap->lock.mutex) != 0) {
        atomic_fetch_add_explicit(&heap->lock.contended, 1, memory_order_relaxed);
        return false;
    }
    CV_SET(heap->lock.acquired, heap->lock.acquired + 1);
    return true;
}

CARVE_INLINE heap_t *cv_heap_get(void) {
    heap_t *heap = cv_tl_heap;
    if (unlikely(heap == &cv_heap_empty))
        heap = cv_heap_get_slow();
    return heap;
}

/* Take the first block of a page whose free list is not empty. calloc skips
 * the memset when the block comes from never-touched memory: only its first
 * word (the free-list link) is dirty.
 *
 * No prefetch of the next block: on random_sizes it was within the noise,
 * and on xmalloc it cost time, pulling lines that a consumer thread was
 * still writing (figures: doc/measurements.md). */
CARVE_INLINE void *cv_page_pop(page_t *page, bool zero) {
    block_t *b = page->free;
    page->free = b->next;
    CV_SET(page->used, page->used + 1);
    if (zero) {
        if (page->free_is_zero)
            b->next = NULL;
        else
            memset(b, 0, page->block_size);
    }
    return b;
}

/* The owner's push of a block onto its page's free list (LIFO: see
 * page.c); returns the old head, which is b itself when b was freed twice
 * in a row. cv_page_unuse comes next. */
CARVE_INLINE block_t *cv_page_push(page_t *page, block_t *b) {
    block_t *head = page->free;
    b->next = head;
    page->free = b;
    page->free_is_zero = false; /* calloc must clear what was used */
    return head;
}

/* Another thread's push of the chain first..last (n blocks of page) onto
 * thread_free, with one CAS that also adds n to the count. Returns the
 * word it replaced, whose flags say whom to tell (free.c, push_remote),
 * and in *heap the page's heap as read before the CAS succeeded, while
 * the blocks still kept the page alive (see free.c for the ordering). */
CARVE_INLINE uintptr_t cv_page_push_remote(page_t *page, block_t *first, block_t *last,
                                           uintptr_t n, heap_t **heap) {
    uintptr_t old = atomic_load_explicit(&page->thread_free, memory_order_acquire);
    uintptr_t w;
    do {
        *heap = atomic_load_explicit(&page->heap, memory_order_relaxed);
        uintptr_t count = ((old >> TF_COUNT_SHIFT) & TF_COUNT_MAX) + n;
        if (count > TF_COUNT_MAX)
            count = TF_COUNT_MAX; /* saturated: the owner walks the list */
        last->next = (block_t *)(old & TF_PTR_MASK);
        w = (uintptr_t)first | (count << TF_COUNT_SHIFT) | (old & TF_FLAGS);
    } while (!atomic_compare_exchange_weak_explicit(&page->thread_free, &old, w,
                                                    memory_order_release, memory_order_acquire));
    return old;
}

/* Debug mode's owner free: onto local_free, which the slow path folds in,
 * so that the blocks of a debug page wait a round before reuse. */
CARVE_INLINE void cv_page_push_local(page_t *page, block_t *b) {
    b->next = page->local_free;
    page->local_free = b;
}

/* The owner's free, once the block is linked back: one block fewer in use.
 * True when the page is now empty or sits in the full list, both tested by
 * one compare (see page_t.used): cv_heap_free_local_slow then. */
CARVE_INLINE bool cv_page_unuse(page_t *page) {
    uint32_t used = page->used - 1;
    CV_SET(page->used, used);
    return unlikely(used - 1u >= PAGE_IN_FULL - 1u);
}

/* The allocation fast path: malloc pops the class's bin, a stack of
 * pointers to blocks this thread freed, so that it reads nothing of the
 * block it hands out; when the bin is empty (and always for calloc, which
 * writes the block anyway and skips that on never-touched memory), it pops
 * the class's current page. A bin is filled by frees only: taking a batch
 * from the page would walk its free list, one dependent miss after another
 * where blocks came back from other cores (a producer's pages, freed by its
 * consumers), where a pop at a time overlaps each miss with the program's
 * work. The empty heap's bins and pages are all empty, so the first call
 * of a thread (and of the process) falls into the slow path, which sets
 * everything up. zero is a constant at every call. */
CARVE_INLINE void *cv_heap_alloc_with(heap_t *heap, size_t size, bool zero,
                                      void *(*slow)(heap_t *, size_t, bool)) {
    if (likely(size <= SMALL_MAX)) {
        unsigned c = cv_size_class(size);
        if (!zero) {
            bin_t *bin = &heap->bins[c + 1];
            uint32_t n = bin->count;
            if (likely(n != 0)) {
                CV_SET(bin->count, n - 1);
                return bin->slot[n - 1];
            }
        }
        page_t *page = heap->direct[c];
        if (likely(page->free != NULL))
            return cv_page_pop(page, zero);
    }
    return slow(heap, size, zero);
}

/* The entry points (api.c) pass their own slow path, the door to debug
 * mode (a thread in debug mode keeps the empty heap, so that its every
 * allocation misses here); everything else uses the heap's. */
CARVE_INLINE void *cv_heap_alloc(heap_t *heap, size_t size, bool zero) {
    return cv_heap_alloc_with(heap, size, zero, cv_heap_alloc_slow);
}

/* ---- large.c ----------------------------------------------------------- */
void *cv_large_alloc(size_t size, size_t align, bool zero);
/* The header of a large block, or NULL when p is not a large block's start. */
large_t *cv_large_header(uintptr_t a, unsigned kind, const char *func);
void cv_large_free(large_t *h);
void *cv_large_realloc(large_t *h, size_t size);
bool cv_large_trim(void);
size_t cv_large_purge(uint64_t now, uint64_t decay_ms, uint64_t lazy_ms, bool dontneed);
void cv_large_fork_prepare(void);
void cv_large_fork_parent(void);
void cv_large_fork_child(void);
const cv_lock_t *cv_large_lock_stats(void);
unsigned cv_large_cache_choose(const large_entry_t *slot, unsigned count, size_t map_size);
CARVE_INLINE size_t cv_large_usable(const large_t *h) {
    return h->size - h->offset;
}

/* ---- new.c (api.c's layer: C++ operator new out of memory) ------------- */
void *cv_new_failed(size_t size, size_t align, bool nothrow, const char *func);
void *cv_new_retry(size_t size, size_t align, const char *func); /* api.c */
/* Whether the program replaced a basic operator (new.c, once), and calls
 * to the basic operators it links, replaced or not. */
enum { CXX_UNKNOWN = 0, CXX_OWN, CXX_REPLACED };
extern int cv_cxx_state;
bool cv_cxx_replaced(void);
void *cv_cxx_basic_new(size_t size);
void *cv_cxx_basic_new_aligned(size_t size, size_t align);
void *cv_cxx_basic_new_nothrow(size_t size, size_t align);
void cv_cxx_basic_delete(void *p, size_t align);

/* ---- init.c ------------------------------------------------------------ */
bool cv_init(void);

/* ---- fork.c ------------------------------------------------------------ */
void cv_fork_prepare(void);
void cv_fork_parent(void);
void cv_fork_child(void);
extern _Atomic int cv_init_state; /* 2 when ready */

/* ---- cgroup.c -------------------------------------------------------- */
void cv_cgroup_init(void);
size_t cv_cgroup_limit(void);   /* bytes, 0 if none */
bool cv_cgroup_pressure(void);  /* what carve holds is past 3/4 of it */
size_t cv_cgroup_parse_limit(const char *s); /* a limit file's content */
size_t cv_cgroup_limit_under(const char *self_cgroup, const char *root);

/* ---- purge.c: when free memory goes back ------------------------------ */
void cv_purge_init(void);
void cv_purge_tick(void);   /* from slow paths: purge what has decayed */
void cv_purge_excess(void); /* free slices past recent demand: now */
bool cv_purge_trim(void);   /* malloc_trim: everything now */
void cv_purge_fork_child(void);
void cv_purge_start(void);  /* at a safe point, when cv_purge_start_wanted */
void cv_purge_stop(void);   /* the purger ends (options change at run time) */
extern _Atomic bool cv_purge_start_wanted;

/* Where the heaps are consistent and no lock is held (the entry points'
 * slow paths): a purger that a slow path asked for is started here, since
 * pthread_create may call malloc. */
CARVE_INLINE void cv_purge_safe_point(void) {
    if (unlikely(atomic_load_explicit(&cv_purge_start_wanted, memory_order_relaxed)))
        cv_purge_start();
}

/* ---- options.c --------------------------------------------------------- */
enum purge_mode { PURGE_STAGED = 0, PURGE_FREE, PURGE_DONTNEED, PURGE_NONE };
enum background_mode { BACKGROUND_OFF = 0, BACKGROUND_ON, BACKGROUND_AUTO };

/* debug= checks (options.c parses them, debug.c implements them) */
enum debug_flags {
    DEBUG_GUARDS = 1u << 0,     /* PROT_NONE pages after large blocks, between pages */
    DEBUG_CANARY = 1u << 1,     /* bytes after each small block, checked on free */
    DEBUG_JUNK = 1u << 2,       /* 0xA5 on allocation, 0x5A on free */
    DEBUG_QUARANTINE = 1u << 3, /* delay reuse of freed blocks */
    DEBUG_PAGE = 1u << 4,       /* one block per page, right against a guard page */
    DEBUG_FREE_CHECKS = 1u << 5, /* free_sized() sizes; double frees: always */
    DEBUG_ALL = (1u << 6) - 1,
};

typedef struct options {
    bool stats_at_exit;
    unsigned purge;      /* enum purge_mode */
    unsigned decay_ms;   /* how long free memory stays before it is purged */
    unsigned lazy_ms;    /* how long purged memory stays lazy (MADV_FREE) */
    unsigned background; /* enum background_mode: a purger thread */
    bool cgroup;         /* adapt purging to the cgroup memory limit */
    unsigned debug;      /* enum debug_flags */
    size_t quarantine;   /* bytes of freed blocks held back (DEBUG_QUARANTINE) */
    bool thp;            /* large mappings of 2 MiB and more ask for huge pages */
    int signal;          /* the operator's trigger (signal.c), 0 if none */
    unsigned guard_sample; /* one slow-path allocation in this many guarded, 0: none */
} options_t;
extern options_t cv_options;
void cv_options_parse(void);
bool cv_options_set(const char *item);

/* ---- stats.c ----------------------------------------------------------- */
typedef struct stats {
    _Atomic size_t large_count, large_bytes;
    _Atomic size_t large_total; /* large blocks ever allocated */
    _Atomic size_t large_cached; /* bytes of freed mappings kept for reuse */
    _Atomic size_t large_lazy;   /* cached mappings MADV_FREE'd, still mapped */
    _Atomic size_t large_purged; /* bytes of cached mappings given back */
    /* under the arena lock */
    size_t chunks;          /* chunks mapped now */
    size_t chunks_peak;     /* the most at any time (malloc_info's "max") */
    size_t chunks_unmapped; /* chunks given back since start */
    size_t reserved;        /* bytes of reservations made */
    _Atomic size_t small_committed; /* bytes of slices touched, not purged since */
    _Atomic size_t small_lazy;      /* MADV_FREE'd, still charged until reclaimed */
    size_t small_purged;    /* bytes of slices purged since start */
    size_t class_purged[CLASS_COUNT];
} stats_t;
extern stats_t cv_stats;
/* The statistics' two kinds of update: the _Atomic counters, bumped
 * relaxed from any thread (readers want a consistent-enough snapshot, not
 * an order), and the plain ones under the arena lock. A large mapping
 * counts in three of them at once. */
CARVE_INLINE void cv_stat_add(_Atomic size_t *counter, size_t n) {
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

CARVE_INLINE void cv_stat_sub(_Atomic size_t *counter, size_t n) {
    atomic_fetch_sub_explicit(counter, n, memory_order_relaxed);
}

CARVE_INLINE void cv_stat_large_mapped(size_t map_size) {
    cv_stat_add(&cv_stats.large_count, 1);
    cv_stat_add(&cv_stats.large_bytes, map_size);
    cv_stat_add(&cv_stats.large_total, 1);
}

CARVE_INLINE void cv_stat_large_unmapped(size_t map_size) {
    cv_stat_sub(&cv_stats.large_count, 1);
    cv_stat_sub(&cv_stats.large_bytes, map_size);
}
void cv_stats_print(void);
void cv_stats_collect(struct carve_mallinfo2 *mi);
void cv_stats_collect_legacy(struct carve_mallinfo *mi);
int cv_stats_xml(FILE *fp);
void cv_stats_read(struct carve_stats *st);

/* ---- signal.c: the operator's trigger (CARVE_OPTIONS=signal=) ---------- */
extern int cv_signal_installed;
extern _Atomic bool cv_signal_pending;
extern _Atomic bool cv_signal_restart;
void cv_signal_safe_point(void);
void cv_signal_fork_child(void);

/* The entry points' safe points (api.c): a purger a slow path asked for,
 * the trigger to set up after its option changed, or a signal to answer
 * (signal.c answers from its own thread when it has one). */
CARVE_INLINE void cv_safe_point(void) {
    cv_purge_safe_point();
    if (unlikely(cv_options.signal != CV_PEEK(cv_signal_installed) ||
                 atomic_load_explicit(&cv_signal_pending, memory_order_relaxed) ||
                 atomic_load_explicit(&cv_signal_restart, memory_order_relaxed)))
        cv_signal_safe_point();
}

#endif /* CARVE_INTERNAL_H */
