/*
 * types.h: every constant, build switch and structure of carve in one place.
 *
 * Memory layout, top to bottom (see doc/design.md for the reasons):
 *
 *   reservation  CARVE_RESERVE_SIZE of MAP_NORESERVE address space
 *   chunk        CHUNK_SIZE (4 MiB), aligned to its size, so that
 *                ptr & ~CHUNK_MASK finds the chunk header in O(1)
 *   slice        SLICE_SIZE (64 KiB): chunks are cut into 64 slices; slice 0
 *                holds the chunk header, slices 1..63 make pages
 *   page         one or more slices serving one size class, owned by one
 *                thread heap; blocks carry no header
 *   large block  anything above SMALL_MAX: its own chunk-aligned mapping,
 *                grown and shrunk with mremap
 */
#ifndef CARVE_TYPES_H
#define CARVE_TYPES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

/* ---- build switches (configure --enable-debug) ------------------------ */
#ifdef HAVE_CONFIG_H
#include "config.h" /* CARVE_DEBUG */
#endif
#ifdef CARVE_DEBUG
static const bool config_debug = true;
#else
static const bool config_debug = false;
#endif

/* ---- compiler helpers --------------------------------------------------- */
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Shared words come in two kinds, each with one idiom:
 *  - words several threads write, or whose order matters (remote free
 *    lists, owners, the chunk map, flags): _Atomic, and C11
 *    atomic_*_explicit with the order spelt out at each use;
 *  - a field that one writer (its owner thread, or whoever holds a lock)
 *    writes and other threads only peek at (page used, capacity and class,
 *    a heap's current pages, lock counts): CV_SET and CV_PEEK, relaxed
 *    stores and loads, plain moves on x86, so that the peek is no data
 *    race (and ThreadSanitizer agrees). The writer reads such fields
 *    plainly: reads do not race with reads.
 * The compiler's __atomic builtins appear here only (test/check-layers). */
#define CV_SET(field, value) __atomic_store_n(&(field), (value), __ATOMIC_RELAXED)
#define CV_PEEK(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)
#define CARVE_EXPORT __attribute__((visibility("default")))
#define CARVE_NOINLINE __attribute__((noinline))
#define CARVE_COLD __attribute__((cold, noinline))
#define CARVE_INLINE static inline __attribute__((always_inline))
#define CARVE_TLS __thread __attribute__((tls_model("initial-exec")))

/* ---- locks -------------------------------------------------------------- */
/* A mutex that counts how often it was taken and how often it was found
 * held (internal.h, cv_lock_take; statistics report both per lock). */
typedef struct cv_lock {
    pthread_mutex_t mutex;
    size_t acquired;          /* written under the lock; read with CV_PEEK */
    _Atomic size_t contended; /* takes that had to wait */
} cv_lock_t;
#define CV_LOCK_INIT {.mutex = PTHREAD_MUTEX_INITIALIZER}

/* ---- geometry ----------------------------------------------------------- */
#define CARVE_PAGE 4096u                     /* kernel page; checked at init */
#define CHUNK_SHIFT 22
#define CHUNK_SIZE ((size_t)1 << CHUNK_SHIFT) /* 4 MiB */
#define CHUNK_MASK (CHUNK_SIZE - 1)
#define SLICE_SHIFT 16
#define SLICE_SIZE ((size_t)1 << SLICE_SHIFT) /* 64 KiB */
#define SLICES_PER_CHUNK (CHUNK_SIZE / SLICE_SIZE)
/* Reservations are big so that chunks rarely need a system call; NORESERVE
 * means none of it is committed until touched. Halved on failure (strict
 * overcommit) down to a single chunk. */
#define RESERVE_SIZE ((size_t)256 << 20)

/* The chunk map has one byte per chunk-sized slot of the 47-bit user address
 * space: 2^25 bytes of .bss, touched one 4 KiB page per 16 GiB of address
 * space actually used. */
#define ADDRESS_BITS 47
#define MAP_SLOTS ((size_t)1 << (ADDRESS_BITS - CHUNK_SHIFT))
enum map_kind {
    MAP_NONE = 0,       /* not carve's */
    MAP_SMALL = 1,      /* a chunk of pages; header at the slot base */
    MAP_LARGE = 2,      /* a large block; header at the slot base */
    MAP_LARGE_PREV = 3, /* a large block aligned to >= CHUNK_SIZE: its
                           header is at the slot base one chunk lower */
    MAP_DEBUG = 4,      /* debug mode: a block in its own mapping, right
                           against a guard page; header at the slot base
                           (debug.c) */
};

/* ---- size classes ------------------------------------------------------- */
/* 8, then 16..256 by 16, 256..512 by 32, then four classes per doubling up
 * to 256 KiB: worst-case internal waste 25% just above a power of two from
 * 512 up, at most 15 bytes or 12.5% below (size_class.c). */
#define SMALL_MAX ((size_t)256 << 10)
#define CLASS_COUNT 61
#define ALIGN_MIN 16 /* x86-64 ABI: max_align_t for blocks of 16 bytes up */

/* ---- blocks and pages --------------------------------------------------- */
typedef struct block {
    struct block *next;
} block_t;

struct heap;

enum page_state {
    PAGE_FREE = 0,  /* slices not in use */
    PAGE_OWNED,     /* in a thread heap's queue or full list */
    PAGE_ABANDONED, /* its heap's thread exited; waits in arena.abandoned */
};

/*
 * A page descriptor lives in its chunk's header, indexed by the page's first
 * slice. Three cache lines, by who writes them:
 *   1. what the owner writes on its fast paths (free, used, ...);
 *   2. what is set when the page is taken and read by every thread (where
 *      the page is, its class, its owner): a remote free reads these;
 *   3. thread_free, which remote frees write.
 * With the class and bounds in the owner's line, every remote free pulled
 * that line to its own core (to check the pointer), and the owner's next
 * pop missed on page->free: under perf, on xmalloc (one thread frees what
 * another allocates), that load and the remote free's check were a large
 * share of the time (figures: doc/design.md, "Address space";
 * doc/measurements.md).
 *
 * Only page.c and the page section of internal.h (pop, push, queues, the
 * remote push) write these fields; other modules call them by name
 * (test/check-layers fails on a write elsewhere).
 */
typedef struct page {
    /* 1. owner-only, written per block */
    block_t *free;       /* what malloc pops and the owner's free pushes */
    block_t *local_free; /* remote frees taken in while free had blocks */
    /* Blocks handed out and not yet returned to free/local_free, plus one
     * while the page is its class's current page (heap->direct), so that a
     * malloc/free loop on the current page never sees it "empty". Bit 31 is
     * PAGE_IN_FULL, so that the owner's free tests "page now empty, or page
     * waiting in the full list" with one compare (see do_free in api.c). */
    uint32_t used;
    uint32_t capacity;   /* blocks carved so far */
    bool free_is_zero;   /* every block on free is zero past its next word */
    struct page *next, *prev; /* heap queue, full list or abandoned list */

    /* 2. set when the page is taken (init, adopt, abandon), read by all */
    _Alignas(64) uint8_t *start;
    uint32_t reserved;   /* blocks that fit */
    uint32_t block_size;
    uint8_t class_idx;
    uint8_t slice_count;
    uint8_t state;       /* enum page_state, changed under the arena lock */
    bool memory_is_zero; /* never-touched memory beyond capacity reads zero */
    bool debug;          /* blocks carry debug.c's canary and trailer */
    bool guarded;        /* debug=guards: the span's last OS page is PROT_NONE */
    _Atomic(uintptr_t) owner;        /* owning thread's id, 0 if none */
    _Atomic(struct heap *) heap;     /* owning heap, NULL if none */

    /* 3. written by other threads' frees: a list head, how many blocks it
     * holds, and the page's state flags, in one word, so that a remote free
     * learns in the same atomic step whether the page was full or
     * abandoned, and the owner takes the list and its length at once. */
    _Alignas(64) _Atomic(uintptr_t) thread_free;
} __attribute__((aligned(256))) page_t; /* a power of two: the page lookup
                                           indexes with a shift */

#define PAGE_IN_FULL 0x80000000u

/* page_t.thread_free: bits 0..47 the list head, 48..61 its length
 * (saturating: a saturated count means "walk the list"), 62 and 63 flags. */
#define TF_PTR_MASK (((uintptr_t)1 << 48) - 1)
#define TF_COUNT_SHIFT 48
#define TF_COUNT_MAX (((uintptr_t)1 << 14) - 1)
#define TF_ABANDONED ((uintptr_t)1 << 62) /* no owner: free into it collects */
#define TF_FULL ((uintptr_t)1 << 63)      /* in its owner's full list */
#define TF_FLAGS (TF_ABANDONED | TF_FULL)

typedef struct chunk {
    /* slice -> first slice of the page covering it (0 for free slices and
     * for the header slice: pages[0] is the never-allocating dummy page) */
    uint8_t slice_page[SLICES_PER_CHUNK];
    /* slice -> the bin that free puts its blocks in: class + 1 for a page
     * whose blocks may go to any thread's bins, 0 (no bin: the slow path
     * decides) for free slices, the header and debug pages. A line of its
     * own, written only when a page is set up or given back, so that the
     * free fast path reads no page descriptor (heap.c, "bins"). */
    uint8_t slice_bin[SLICES_PER_CHUNK];
    uint64_t slices_used;     /* bit per slice in a page (bit 0: header) */
    uint64_t slices_dirty;    /* may hold non-zero bytes (not zero-filled) */
    uint64_t slices_resident; /* touched and not purged since */
    struct chunk *next;       /* arena's list of chunks */
    /* arena's list of chunks with a free slice, in the order of the list
     * above (newest first); seq gives that order */
    struct chunk *avail_next, *avail_prev;
    uint64_t seq;
    uint64_t empty_since_ms;  /* when it last became wholly free and purged */
    uint64_t slice_freed_ms[SLICES_PER_CHUNK]; /* when each free slice was freed */
    uint8_t slice_class[SLICES_PER_CHUNK];     /* class that last used it (stats) */
    page_t pages[SLICES_PER_CHUNK];
} chunk_t;
_Static_assert(sizeof(chunk_t) <= SLICE_SIZE, "the chunk header must fit in slice 0");

/* ---- large blocks ------------------------------------------------------- */
#define LARGE_MAGIC 0x6c61726765636172ull /* "carlarge" */
#define LARGE_HEADER 64                   /* user offset for alignment <= 64 */

typedef struct large {
    uint64_t magic;
    size_t size;     /* bytes in use from the header on: offset + request,
                        rounded to a page (the block ends there) */
    size_t map_size; /* bytes mapped from the header on (>= size: a block
                        may reuse a bigger cached mapping whole) */
    size_t offset;   /* user pointer - header */
    size_t lead;     /* bytes mapped before the header (alignment >= CHUNK) */
    uint64_t unused[2];
    /* The fields above, hashed (large.c): last, so that it sits right
     * before the block (offset 64), where a write before the block lands
     * first, and free stops on it instead of unmapping what a broken
     * size or lead says. */
    uint64_t check;
} large_t;

/* One mapping in the cache of freed large blocks (large.c). Kept apart from
 * the mapping's header: a lazy entry's pages may have been taken back and
 * read as zero. */
typedef struct large_entry {
    uint8_t *base;     /* chunk-aligned start; NULL for a free slot */
    size_t size;       /* bytes mapped */
    uint64_t freed_ms; /* when it was last freed: the decay runs from here */
    bool lazy;         /* purged with MADV_FREE, still mapped */
} large_entry_t;

/* ---- thread heaps ------------------------------------------------------- */
typedef struct page_queue {
    page_t *first, *last;
} page_queue_t;

/* A bin: a stack of free blocks of one class, any page's, any thread's
 * (heap.c, "bins"). slot[-1] is a NULL sentinel, so that the double-free
 * test against the top needs no "empty?" test. count and max are written
 * by the owner only; count with CV_SET, since statistics read it. */
typedef struct bin {
    uint32_t count;
    uint32_t max;  /* 0: the class has no bin (and the sentinel bins[0]) */
    void **slot;
    uint32_t seen; /* count at the last idle check (retire_idle) */
} bin_t;

/* Bins hold up to BIN_BYTES of blocks per class, and between BIN_MIN and
 * BIN_MAX of them; classes above BIN_MAX_BLOCK have none (their blocks go
 * straight to their pages): a block of a few KiB costs the program far
 * more than the miss on its first line, and a bin of 4 such blocks spent
 * its time giving back (big_heap, 4 KiB blocks: see doc/measurements.md).
 * BIN_SLOTS: all the classes' max plus a sentinel each, checked in heap.c. */
#define BIN_BYTES 32768
#define BIN_MIN 4
#define BIN_MAX 64
#define BIN_MAX_BLOCK 2048
#define BIN_SLOTS 2048

/* ---- tuning: when memory is kept, given back, faulted in -------------- */
/* Each constant's reason in a line; the code that uses it says more. */

/* arena.c: the heaps are growing (a chunk's worth of slices in the last one
 * or two decay windows): dense pages are faulted in with one call. */
#define POPULATE_DEMAND SLICES_PER_CHUNK
/* arena.c: free slices kept resident whatever the recent demand (a chunk),
 * and how far past its budget idle memory may run before a pass (one pass
 * per chunk's worth freed, in runs long enough to keep madvise calls few). */
#define IDLE_FLOOR SLICES_PER_CHUNK
#define IDLE_STEP SLICES_PER_CHUNK
/* arena.c: wholly free chunks kept mapped, so that a footprint swinging up
 * and down does not map and fault them in again each time; the rest are
 * unmapped once purged and unused this long (plus four decay periods). */
#define CHUNKS_RETAINED 4
#define CHUNK_UNMAP_MS 2000
/* heap.c: empty pages of one-block classes a heap keeps queued (all classes
 * together): each would otherwise be an arena round trip per malloc/free. */
#define SPARE_BYTES ((size_t)256 << 10)
/* heap.c: slow paths between two idle checks (retire_idle): often enough
 * to give an unused class's pages back, rarely enough to cost nothing. */
#define IDLE_CHECK 16
/* large.c: with thp=1, mappings from a huge page up ask for huge pages. */
#define THP_MIN ((size_t)2 << 20)
/* large.c: the cache of freed mappings: entries, the bytes they may hold
 * (what it adds to peak RSS while big blocks churn; less kept evicting what
 * the next requests needed), and the biggest entry (glibc's mmap threshold
 * tops out at 32 MiB; a bigger entry would empty the cache to get in). */
#define CACHE_SLOTS 32
#define CACHE_MAX_BYTES ((size_t)128 << 20)
#define CACHE_MAX_ENTRY ((size_t)48 << 20)
/* os.c: fewer runs than this are purged one madvise each: checking that
 * process_madvise is safe (the thread's seccomp status) costs three calls. */
#define BATCH_MIN 8
/* purge.c: background=auto starts the purger once this much waits to be
 * purged; a program that never frees much never gets a thread. */
#define BACKGROUND_START ((size_t)4 << 20)

/* ---- tuning: debug mode -------------------------------------------------- */
/* debug.c: canary bytes after each small block, at least: an 8-byte write
 * past the end still misses the trailer. */
#define CANARY_MIN 8
/* debug_map.c: canary bytes before a block in its own mapping: a write just
 * before it (an index of -1, a header written at the wrong offset) would
 * otherwise land in padding or in the header page's unused tail, unseen,
 * where the release build's large-block header would have caught it. */
#define CANARY_BEFORE 64
/* quarantine.c: at most this many freed mappings wait (each holds two of
 * the kernel's vm.max_map_count mappings), and at most this much address
 * space: with the count alone, a program under RLIMIT_AS that frees 1 GiB
 * blocks in a loop ran out of address space within a few frees. */
#define QUARANTINE_MAPS 2048
#define QUARANTINE_SPACE ((size_t)1 << 30)
/* debug_map.c, guard_sample=: sampled blocks live or held after their free
 * at most (each a mapping and a guard: 2 of vm.max_map_count), freed ones
 * held at most half of them, oldest out first; blocks up to a kernel page
 * are sampled (a bigger one would cost more than the page it guards); the
 * frames kept of each block's allocation and free. */
#define GUARD_SAMPLE_SLOTS 256
#define GUARD_SAMPLE_MAX CARVE_PAGE
#define GUARD_STACK_DEPTH 24

typedef struct heap {
    /* Fast path: bins[c + 1] is class c's bin (bins[0]: no bin, max 0, for
     * the slice_bin value 0); direct[c] is the page that calloc, and malloc
     * when the bin is empty, pops, or the shared empty page, whose free list
     * is always NULL. */
    bin_t bins[CLASS_COUNT + 1];
    page_t *direct[CLASS_COUNT];
    uintptr_t owner;                 /* thread id of the owner */
    /* current[c]: the first page of queues[c] (or the empty page), which
     * holds the pin (see page_t.used); direct[c] is current[c], or the
     * empty page while retire_idle watches it. */
    page_t *current[CLASS_COUNT];
    page_queue_t queues[CLASS_COUNT];
    page_queue_t full;               /* pages with no free block left */
    /* Held by the owner in its slow paths (the queues, and the lists of
     * its pages other than the current ones), and by another thread whose
     * remote free empties one of its pages (free.c, reclaim), which only
     * ever tries it. The fast paths take none. */
    cv_lock_t lock;
    _Atomic(bool) full_freed;        /* a remote free hit a full page */
    uint32_t slow_calls;             /* find_page calls, for retire_idle */
    uint64_t idle_current;           /* bit c: current[c] was empty at the
                                        last check (retire_idle) */
    uint64_t idle_spares;            /* bit c: queues[c] held spares then */
    uint64_t idle_gone;              /* bit c: retire_idle gave a page of c back */
    uint8_t pages_taken[CLASS_COUNT]; /* from the arena, per class, up to 255 */
    struct heap *next_free;          /* heap pool */
    struct heap *next_all;           /* every heap ever made (statistics) */
    bool debug;                      /* debug.c's: its pages are debug pages */
    void *slots[BIN_SLOTS];          /* the bins' stacks, one after another */
} heap_t;

#endif /* CARVE_TYPES_H */
