/*
 * debug.c: debug mode, the checks that catch heap bugs where they happen.
 *
 * Switched on by ./configure --enable-debug (every check but page, unless
 * CARVE_OPTIONS says otherwise) or, in any build, by CARVE_OPTIONS=debug=...
 * with checks joined by '+' (options.c): guards, canary, junk, quarantine,
 * page, free, or all. Every detection prints one line, "carve: <what> of
 * 0x<addr> (<detail>) in <function>()", then a backtrace, and aborts.
 *
 * ---- The door -------------------------------------------------------------
 * Debug mode never gives a thread a real heap: cv_tl_heap stays the empty
 * heap, so each allocation misses the fast path and api.c's slow path sends
 * it here. The blocks come from a heap of debug.c's own (one per thread, in
 * dbg_heap) whose owner id is odd, which no thread pointer is, so each free
 * misses the owner's fast path too and reaches cv_debug_free through the
 * remote branch. The release fast paths carry no debug test at all.
 *
 * ---- Small blocks -----------------------------------------------------------
 * They come from the size classes, 16 bytes bigger than asked:
 *
 *   |<------------------------- class size (bs) ------------------------->|
 *   | user: requested bytes  | canary 0xCB, at least 8 bytes | trailer (8) |
 *
 * The trailer holds the requested size, keyed with the block's address
 * (LIVE), or a second key of address and class once the block is freed
 * (FREED); cv_page_extend zeroes the trailers of fresh blocks of debug
 * pages. So a free finds a live block, a freed one (double free) or
 * garbage (an invalid pointer, or an overflow that ran past the canary),
 * never a wrong size, and stale bytes of an earlier use of the memory never
 * pass for either. malloc_usable_size() answers the requested size, so
 * that a program using all of it never touches the canary. The pages are
 * debug pages (page_t.debug): a block allocated before debug mode was
 * switched on (carve_option_set, the test hook) is freed the release way.
 * A block goes back to its page as the owner's free would put it there
 * when this thread owns the page, and with the remote CAS otherwise.
 *
 * ---- Blocks in their own mapping ---------------------------------------------
 * Large blocks (debug mode's small-block overhead would pass SMALL_MAX),
 * and every block with debug=page, get their own chunk-aligned mapping,
 * registered as MAP_DEBUG in the chunk map so that the ownership test still
 * takes one load; the header is at the slot base, where nothing but this
 * mapping can be:
 *
 *   slot base                                              end (page-aligned)
 *   | header page | (alignment padding) .. canary 64 | user block | canary < 16 | guard page |
 *
 * The block is right-aligned: with guards or page, the byte after it is
 * the guard page (PROT_NONE) up to the block's alignment (8 or 16 bytes),
 * and that little gap is canary. One past the end faults at once (SIGSEGV,
 * no carve line: the fault is the report). A freed mapping stays in the
 * quarantine with its data pages replaced by PROT_NONE ones (no memory,
 * every access faults) and its header readable, so that a second free says
 * "double free"; once it leaves, the chunk map forgets it.
 *
 * Pages of small blocks: with guards, page.c makes the last OS page of
 * each debug page's span PROT_NONE (and arena.c lifts it when the page is
 * retired), so that a run off the end of a page faults before it reaches
 * the next one; between blocks of one page the canaries stand guard,
 * checked on free, realloc and malloc_usable_size; debug=page gives any
 * block its own guard page. Alignments of a chunk or more keep the release
 * layout (rare; the header would not be in the user's slot).
 *
 * debug=page costs a mapping per block: about 6 system calls per
 * malloc/free and 2 of the kernel's vm.max_map_count mappings (65530 by
 * default) per live or quarantined block. Past half of them (or when the
 * kernel refuses more), small blocks fall back to canaries, with one line
 * on stderr. A freed block's mapping waits in the quarantine, its pages
 * PROT_NONE, even when quarantine is off (at most QUARANTINE_MAPS).
 *
 * ---- Junk, poison, quarantine ---------------------------------------------------
 * junk: new blocks are filled with 0xA5 (calloc's with zeros), freed ones
 * with 0x5A. quarantine: freed blocks wait in a FIFO ring, bounded by
 * cv_options.quarantine bytes (a mapping counts one page), before they go
 * back to their page; when one leaves, its poison is checked, so a write
 * after free is reported with the block. A block's poison is checked again
 * when malloc hands it out (past its first word, the free-list link, which
 * must point at a block of the same page), and the quarantine once more at
 * exit.
 *
 * ---- Reports ----------------------------------------------------------------
 * cv_msg_fatal (msg.c) writes the line with write(2) from a stack buffer,
 * then a backtrace, and aborts.
 */
#define _GNU_SOURCE
#include "debug.h"

#include <signal.h>
#include <stdlib.h>

extern pthread_key_t cv_heap_key;

/* ---- constants ------------------------------------------------------------ */

#define JUNK_ALLOC 0xA5
#define JUNK_FREE 0x5A
#define CANARY_BYTE 0xCB
#define CANARY_MIN 8 /* an 8-byte write past the end still misses the trailer */
#define TRAILER 8
#define OVERHEAD (CANARY_MIN + TRAILER)
/* Canary bytes before a block in its own mapping: a write just before it
 * (an index of -1, a header written at the wrong offset) would otherwise
 * land in padding or in the header page's unused tail, unseen, where the
 * release build's large-block header would have caught it. */
#define CANARY_BEFORE 64

#define KEY_LIVE 0x9e3779b97f4a7c15ull /* odd: a multiplication is a bijection */
#define SALT_LIVE 0x6361727665206c76ull
#define KEY_FREED 0xc2b2ae3d27d4eb4full
#define SALT_FREED 0x6361727665206672ull

#define DMAP_LIVE 0x6361727665646d6cull  /* "carvedml" */
#define DMAP_FREED 0x6361727665646d66ull /* "carvedmf" */

/* At most this many freed mappings wait in the quarantine (each holds two
 * of the kernel's vm.max_map_count mappings), and at most this much address
 * space: a program under RLIMIT_AS that frees 1 GiB blocks in a loop ran
 * out of it after 7 with 2048 of them held. */
#define QUARANTINE_MAPS 2048
#define QUARANTINE_SPACE ((size_t)1 << 30)

enum path { PATH_FREE, PATH_REALLOC, PATH_USABLE };

/* The header of a block in its own mapping, at the mapping's start. */
typedef struct dmap {
    uint64_t magic;   /* DMAP_LIVE or DMAP_FREED */
    size_t map_size;  /* bytes mapped from the header on */
    size_t requested; /* what was asked for */
    uintptr_t user;   /* the block */
    uintptr_t end;    /* end of the accessible bytes (page-aligned) */
    bool canary;      /* made with canaries: checked only then (checks can be
                         switched on at run time, after the block was made) */
} dmap_t;

static size_t page_round(size_t n) {
    return (n + CARVE_PAGE - 1) & ~(size_t)(CARVE_PAGE - 1);
}

static uint64_t live_word(uintptr_t b, size_t size) {
    return ((uint64_t)b * KEY_LIVE) ^ SALT_LIVE ^ size;
}

static uint64_t freed_word(uintptr_t b, size_t bs) {
    return ((uint64_t)b * KEY_FREED) ^ SALT_FREED ^ bs;
}

static uint64_t *trailer_of(uintptr_t b, size_t bs) {
    return (uint64_t *)(b + bs - TRAILER);
}

static page_t *page_of(uintptr_t a) {
    return cv_page_of(cv_chunk_of(a), a);
}

/* The first byte of [p, p+n) that is not c, or n. */
static size_t first_not(const uint8_t *p, size_t n, uint8_t c) {
    size_t i = 0;
    uint64_t w = 0x0101010101010101ull * c;
    for (; i < n && ((uintptr_t)(p + i) & 7); i++)
        if (p[i] != c)
            return i;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, sizeof v);
        if (v != w)
            break;
    }
    for (; i < n; i++)
        if (p[i] != c)
            return i;
    return n;
}

/* ---- reports --------------------------------------------------------------- */

static const char *invalid_what(enum path path) {
    return path == PATH_FREE ? "invalid free" : path == PATH_REALLOC ? "invalid realloc"
                                                                      : "invalid pointer";
}

void cv_debug_double_free(const page_t *page, void *p, const char *func) {
    char detail[64];
    if (page == NULL) /* from a bin: the block is a MAP_SMALL chunk's */
        page = page_of((uintptr_t)p);
    cv_msg_format(detail, sizeof detail, "class %u bytes", page->block_size);
    cv_msg_fatal("double free", p, detail, func);
}

/* What is at a, a pointer that is not a block's start: the block it falls
 * inside, free memory of carve, or nothing of carve's. Reads only memory
 * that the chunk map says is carve's. */
static CARVE_COLD __attribute__((noreturn)) void bad_pointer(uintptr_t a, const char *what,
                                                            const char *func) {
    char detail[128];
    unsigned kind = cv_map_kind(a);
    if (kind == MAP_SMALL) {
        page_t *page = page_of(a);
        size_t bs = page->block_size;
        size_t off = a - (uintptr_t)page->start;
        if (page->reserved != 0 && bs != 0 && off < (size_t)page->reserved * bs) {
            uintptr_t b = a - off % bs;
            if (a == b) /* a block start past what the page has handed out */
                cv_msg_format(detail, sizeof detail,
                              "not a block that was handed out, class %zu bytes", bs);
            else
                cv_msg_format(detail, sizeof detail,
                              "interior pointer: offset %zu of the block at %p, class %zu bytes",
                              (size_t)(a - b), (void *)b, bs);
        } else {
            cv_msg_format(detail, sizeof detail, "no block there: free memory of carve");
        }
    } else if (kind == MAP_DEBUG) {
        const dmap_t *h = (const dmap_t *)(a & ~(uintptr_t)CHUNK_MASK);
        bool live = h->magic == DMAP_LIVE, freed = h->magic == DMAP_FREED;
        if ((live || freed) && a >= h->user && a < h->end)
            cv_msg_format(detail, sizeof detail,
                          "interior pointer: offset %zu of the %s%zu-byte block at %p",
                          (size_t)(a - h->user), freed ? "freed " : "", h->requested,
                          (void *)h->user);
        else
            cv_msg_format(detail, sizeof detail, "no block there");
    } else if (kind == MAP_LARGE || kind == MAP_LARGE_PREV) {
        uintptr_t slot = a & ~(uintptr_t)CHUNK_MASK;
        const large_t *h = (const large_t *)(kind == MAP_LARGE_PREV ? slot - CHUNK_SIZE : slot);
        uintptr_t user = (uintptr_t)h + h->offset;
        if (h->magic == LARGE_MAGIC && a > user && a < user + cv_large_usable(h))
            cv_msg_format(detail, sizeof detail,
                          "interior pointer: offset %zu of the large block at %p",
                          (size_t)(a - user), (void *)user);
        else
            cv_msg_format(detail, sizeof detail, "no block there");
    } else {
        /* A large block's second free also finds its slot cleared, and so
         * does a mapping's that has left the quarantine (or never entered:
         * alignments of a chunk or more keep the release layout). */
        cv_msg_format(detail, sizeof detail, "not allocated by carve, or already freed");
    }
    cv_msg_fatal(what, (void *)a, detail, func);
}

void cv_debug_bad_pointer(void *p, const char *what, const char *func) {
    bad_pointer((uintptr_t)p, what, func);
}

/* One line, then the backtrace and abort (cv_msg_fatal). */
static CARVE_COLD __attribute__((noreturn)) void report_block(const char *what, uintptr_t b,
                                                             size_t requested, size_t bs,
                                                             bool known, const char *func) {
    char detail[96];
    if (known)
        cv_msg_format(detail, sizeof detail, "requested %zu bytes, class %zu bytes", requested, bs);
    else
        cv_msg_format(detail, sizeof detail, "class %zu bytes", bs);
    cv_msg_fatal(what, (void *)b, detail, func);
}

/* Neither live nor freed: a block never handed out (a stale or made-up
 * pointer), or an overflow that ran past the canary into the trailer. */
static CARVE_COLD __attribute__((noreturn)) void report_trailer(uintptr_t b, size_t bs,
                                                               enum path path, const char *func) {
    char what[64], detail[64];
    cv_msg_format(what, sizeof what, "%s or heap overflow", invalid_what(path));
    cv_msg_format(detail, sizeof detail, "block trailer broken, class %zu bytes", bs);
    cv_msg_fatal(what, (void *)b, detail, func);
}

/* The free-list link of the free block at b (its first word) is broken.
 * The block before it is the usual culprit: an overflow that ran past its
 * canary and trailer lands there first. */
static CARVE_COLD __attribute__((noreturn)) void report_link(const page_t *page, uintptr_t b,
                                                            size_t bs, const char *func) {
    if (b > (uintptr_t)page->start) {
        uintptr_t prev = b - bs;
        uint64_t t = *trailer_of(prev, bs);
        size_t r = (size_t)(t ^ live_word(prev, 0));
        bool live = r <= bs - OVERHEAD;
        if ((!live && t != freed_word(prev, bs)) ||
            (live && (cv_options.debug & DEBUG_CANARY) &&
             first_not((const uint8_t *)prev + r, bs - TRAILER - r, CANARY_BYTE) !=
                 bs - TRAILER - r)) {
            char detail[96];
            cv_msg_format(detail, sizeof detail,
                          "class %zu bytes; it ran into the next block's free-list link", bs);
            cv_msg_fatal("heap overflow", (void *)prev, detail, func);
        }
    }
    cv_msg_fatal("use after free (free-list link broken)", (void *)b, "the block's first word",
                 func);
}

static CARVE_COLD __attribute__((noreturn)) void report_map(const char *what, const dmap_t *h,
                                                           const char *func) {
    char detail[96];
    cv_msg_format(detail, sizeof detail, "requested %zu bytes, own mapping", h->requested);
    cv_msg_fatal(what, (void *)h->user, detail, func);
}

static CARVE_COLD __attribute__((noreturn)) void report_poison(uintptr_t b, size_t bs, size_t at,
                                                              const char *func) {
    char detail[96];
    cv_msg_format(detail, sizeof detail, "class %zu bytes, written at offset %zu", bs, at);
    cv_msg_fatal("use after free (poison broken)", (void *)b, detail, func);
}

static CARVE_COLD __attribute__((noreturn)) void report_size(uintptr_t b, size_t requested,
                                                            size_t given, const char *func) {
    char detail[96];
    cv_msg_format(detail, sizeof detail, "requested %zu, given %zu", requested, given);
    char what[48];
    cv_msg_format(what, sizeof what, "%s with wrong size", func);
    cv_msg_fatal(what, (void *)b, detail, func);
}

/* ---- the debug heap ------------------------------------------------------------- */

static CARVE_TLS heap_t *dbg_heap;

/* The calling thread's debug heap. A heap from cv_heap_get_slow, taken
 * away from cv_tl_heap (so that the fast path keeps missing) and given an
 * odd owner id (so that the owner's free path keeps missing). When the
 * thread's key destructor has given it back, the key reads NULL: an
 * allocation after that gets one for itself alone, as in release mode
 * (small_alloc gives it back). */
static heap_t *debug_heap(void) {
    heap_t *heap = dbg_heap;
    if (likely(heap != NULL) && likely(pthread_getspecific(cv_heap_key) == heap))
        return heap;
    heap = cv_heap_get_slow();
    if (heap == NULL)
        return NULL;
    cv_tl_heap = &cv_heap_empty;
    heap->owner |= 1;
    heap->debug = true;
    cv_heap_bins_off(heap);
    dbg_heap = heap;
    return heap;
}

/* ---- guard page hits --------------------------------------------------------------- */
/* A guard page stops an overflow at the faulting instruction with SIGSEGV,
 * which alone says nothing about the heap. While the program has no
 * SIGSEGV handler of its own, debug mode puts one in that names the block
 * when the fault is in one of carve's guard or freed pages, then puts the
 * default action back and returns: the instruction faults again and the
 * process dies of the SIGSEGV, core dump and debugger view intact. */

/* The mapping a lies in: only its first chunk is in the chunk map, so
 * look down from a's chunk for it, through chunks the map knows nothing
 * of (a mapping holds no other). */
static const dmap_t *fault_map(uintptr_t a) {
    uintptr_t c = a & ~(uintptr_t)CHUNK_MASK;
    for (unsigned i = 0; i < 4096 && c != 0; i++, c -= CHUNK_SIZE) {
        unsigned kind = cv_map_kind(c);
        if (kind == MAP_DEBUG) {
            const dmap_t *h = (const dmap_t *)c;
            return a - c < h->map_size ? h : NULL;
        }
        if (kind != MAP_NONE)
            return NULL;
    }
    return NULL;
}

static void describe_fault(uintptr_t a, char *line, size_t cap) {
    unsigned kind = cv_map_kind(a);
    const dmap_t *h = kind == MAP_DEBUG || kind == MAP_NONE ? fault_map(a) : NULL;
    line[0] = '\0';
    if (h != NULL) {
        if (h->magic == DMAP_FREED && a >= h->user && a < h->end)
            cv_msg_format(line, cap,
                          "carve: use after free of %p (requested %zu bytes, own mapping; "
                          "offset %zu) at the faulting instruction\n",
                          (void *)h->user, h->requested, (size_t)(a - h->user));
        else if ((h->magic == DMAP_LIVE || h->magic == DMAP_FREED) && a >= h->end)
            cv_msg_format(line, cap,
                          "carve: heap overflow (guard page hit) of %p (requested %zu bytes, "
                          "own mapping; %zu bytes past its end) at the faulting instruction\n",
                          (void *)h->user, h->requested, (size_t)(a - h->user - h->requested));
    } else if (kind == MAP_SMALL) {
        const page_t *page = page_of(a);
        uintptr_t guard = (uintptr_t)cv_page_guard(page);
        if (page->guarded && a >= guard && a < guard + CARVE_PAGE) {
            size_t bs = page->block_size;
            uintptr_t last = (uintptr_t)page->start + ((size_t)page->reserved - 1) * bs;
            cv_msg_format(line, cap,
                          "carve: heap overflow (guard page hit) past the block at %p "
                          "(class %zu bytes, last of its page) at the faulting instruction\n",
                          (void *)last, bs);
        }
    }
}

/* Returning from a fault runs the faulting instruction again, now under
 * SIG_DFL. A SIGSEGV that no instruction caused (kill, raise: si_code <= 0)
 * would not come back: it is raised again, so that it kills as it would
 * have without carve. */
static void on_segv(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    char line[256];
    signal(sig, SIG_DFL);
    if (info->si_code <= 0) {
        raise(sig);
        return;
    }
    describe_fault((uintptr_t)info->si_addr, line, sizeof line);
    if (line[0] != '\0') {
        cv_os_write_stderr(line, strlen(line));
        cv_msg_backtrace();
    }
}

static void catch_guard_hits(void) {
    static _Atomic bool done;
    if (likely(atomic_load_explicit(&done, memory_order_relaxed)) ||
        atomic_exchange(&done, true))
        return;
    struct sigaction old, sa;
    if (sigaction(SIGSEGV, NULL, &old) != 0 || (old.sa_flags & SA_SIGINFO) ||
        old.sa_handler != SIG_DFL)
        return;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
}

bool cv_debug_on(void) {
    if (!cv_init() || cv_options.debug == 0)
        return false;
    if (cv_options.debug & (DEBUG_GUARDS | DEBUG_PAGE | DEBUG_QUARANTINE))
        catch_guard_hits();
    return true;
}

/* A block (checked by the caller) goes back to its page as the owner's
 * free would put it there when this thread's debug heap owns the page (so
 * that pages empty out and retire as in release mode, which remote frees
 * alone never do), and with the remote CAS otherwise. */
static void free_to_page(page_t *page, block_t *b, const char *func) {
    heap_t *heap = dbg_heap;
    /* (after the thread's key destructor, dbg_heap may be in the heap pool,
     * or another thread's: the key then no longer holds it) */
    if (heap != NULL && atomic_load_explicit(&page->heap, memory_order_relaxed) == heap &&
        pthread_getspecific(cv_heap_key) == heap) {
        b->next = page->local_free;
        page->local_free = b;
        if (cv_page_unuse(page))
            cv_heap_free_local_slow(page);
        return;
    }
    cv_heap_free_remote(page, b, func);
}

/* ---- blocks in their own mapping ------------------------------------------------ */

static bool guarded(void) {
    return (cv_options.debug & (DEBUG_GUARDS | DEBUG_PAGE)) != 0;
}

/* Mappings of debug.c's now (live and quarantined blocks), and how many
 * may be: each takes 2 of the kernel's vm.max_map_count mappings (the
 * block and its guard), and debug=page takes at most half of them, so that
 * carve's chunks and the program's own mmaps still get theirs. At the
 * limit itself, malloc failed (the fallback's own chunk could not be
 * mapped) and Python raised MemoryError. */
static _Atomic size_t dmaps;

static size_t dmaps_max(void) {
    static _Atomic size_t max;
    size_t m = atomic_load_explicit(&max, memory_order_relaxed);
    if (m == 0) {
        char buf[32];
        size_t n = cv_os_read_file("/proc/sys/vm/max_map_count", buf, sizeof buf), v = 0;
        for (size_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9' && v < SIZE_MAX / 100; i++)
            v = v * 10 + (size_t)(buf[i] - '0');
        m = (v != 0 ? v : 65530) / 4;
        atomic_store_explicit(&max, m, memory_order_relaxed);
    }
    return m;
}

/* zero: calloc's; the first keep bytes are the caller's to fill (realloc
 * copies them), so they are not junked first. */
static void *map_alloc(size_t size, size_t align, bool zero, size_t keep) {
    size_t lead = align > CARVE_PAGE ? align : CARVE_PAGE;
    if (size > PTRDIFF_MAX - lead - 2 * CARVE_PAGE - CHUNK_SIZE)
        return NULL;
    size_t end_off = page_round(lead + size);
    size_t map_size = end_off + (guarded() ? CARVE_PAGE : 0);
    cv_purge_tick(); /* new memory: let decayed memory go first */
    uint8_t *base = cv_os_map_aligned(map_size, CHUNK_SIZE, false);
    if (base == NULL)
        return NULL;
    if (guarded() && !cv_os_protect(base + end_off, CARVE_PAGE, false)) {
        cv_os_unmap(base, map_size);
        return NULL;
    }
    dmap_t *h = (dmap_t *)base;
    uintptr_t end = (uintptr_t)base + end_off;
    uintptr_t user = (end - size) & ~(uintptr_t)(align - 1);
    CV_ASSERT(user >= (uintptr_t)base + lead && user - (uintptr_t)base < CHUNK_SIZE);
    h->magic = DMAP_LIVE;
    h->map_size = map_size;
    h->requested = size;
    h->user = user;
    h->end = end;
    h->canary = (cv_options.debug & DEBUG_CANARY) != 0;
    if (h->canary) {
        memset((void *)(user - CANARY_BEFORE), CANARY_BYTE, CANARY_BEFORE);
        memset((void *)(user + size), CANARY_BYTE, end - user - size);
    }
    if ((cv_options.debug & DEBUG_JUNK) && !zero) /* fresh mappings read as zero */
        memset((void *)(user + keep), JUNK_ALLOC, size - keep);
    cv_arena_set_large(user, MAP_DEBUG);
    atomic_fetch_add_explicit(&dmaps, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&cv_stats.large_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&cv_stats.large_bytes, map_size, memory_order_relaxed);
    atomic_fetch_add_explicit(&cv_stats.large_total, 1, memory_order_relaxed);
    return (void *)user;
}

static void map_unmap(dmap_t *h) {
    cv_arena_set_large(h->user, MAP_NONE);
    cv_os_unmap(h, h->map_size);
    atomic_fetch_sub_explicit(&dmaps, 1, memory_order_relaxed);
}

/* ---- quarantine --------------------------------------------------------------------- */
/* A FIFO ring of freed blocks (small blocks by address, mappings by their
 * header), under one lock: debug mode is not about speed, and the lock is
 * never held while anything else is done. */

static struct {
    cv_lock_t lock;
    uintptr_t *ring;
    size_t cap, head, count;
    size_t bytes, maps, space; /* space: address space of the mappings held */
    bool tried;
} quar = {.lock = CV_LOCK_INIT};

const cv_lock_t *cv_debug_lock_stats(void) {
    return &quar.lock;
}

static bool entry_is_map(uintptr_t e) {
    return cv_map_kind(e) == MAP_DEBUG;
}

static size_t entry_charge(uintptr_t e) {
    return entry_is_map(e) ? CARVE_PAGE : page_of(e)->block_size;
}

static size_t entry_space(uintptr_t e) {
    return entry_is_map(e) ? ((const dmap_t *)e)->map_size : 0;
}

/* A small block freed with junk on: stops when its poison or its freed
 * trailer changed since (a write after free). */
static void check_poison(uintptr_t b, size_t bs, const char *func) {
    size_t at = first_not((const uint8_t *)b, bs - TRAILER, JUNK_FREE);
    if (at != bs - TRAILER || *trailer_of(b, bs) != freed_word(b, bs))
        report_poison(b, bs, at, func);
}

/* Back to the page (small) or to the kernel (mapping), after the poison
 * check: the end of quarantine. */
static void release_small(uintptr_t b, const char *func) {
    page_t *page = page_of(b);
    if (cv_options.debug & DEBUG_JUNK)
        check_poison(b, page->block_size, func);
    free_to_page(page, (block_t *)b, func);
}

static void release_entry(uintptr_t e, const char *func) {
    if (entry_is_map(e))
        map_unmap((dmap_t *)e);
    else
        release_small(e, func);
}

/* The bytes the quarantine may hold of entries like e: quarantine=
 * bytes; with debug=page and no quarantine, freed mappings still wait
 * (bounded by QUARANTINE_MAPS), so that their pages are PROT_NONE for a
 * while, as that check promises, instead of going straight back to the
 * kernel, which hands the same address to the next malloc. */
static size_t quarantine_limit(bool is_map) {
    if (cv_options.debug & DEBUG_QUARANTINE)
        return cv_options.quarantine;
    return is_map && (cv_options.debug & DEBUG_PAGE) ? SIZE_MAX : 0;
}

/* Hold e back; what leaves to make room is released. */
static void quarantine(uintptr_t e, const char *func) {
    bool is_map = entry_is_map(e);
    size_t limit = quarantine_limit(is_map);
    size_t charge = is_map ? CARVE_PAGE : page_of(e)->block_size;
    size_t space = entry_space(e);
    if (charge > limit || space > QUARANTINE_SPACE) {
        release_entry(e, func);
        return;
    }
    for (;;) {
        cv_lock_take(&quar.lock);
        if (!quar.tried) {
            quar.tried = true;
            size_t cap = limit / 16; /* SIZE_MAX: the most */
            cap = cap < 64 ? 64 : cap > ((size_t)1 << 20) ? (size_t)1 << 20 : cap;
            quar.ring = cv_os_map(cap * sizeof(uintptr_t));
            quar.cap = quar.ring != NULL ? cap : 0;
        }
        if (quar.cap == 0) {
            cv_lock_give(&quar.lock);
            release_entry(e, func);
            return;
        }
        if (quar.count < quar.cap && quar.bytes + charge <= limit &&
            (!is_map || (quar.maps < QUARANTINE_MAPS && quar.space + space <= QUARANTINE_SPACE))) {
            quar.ring[(quar.head + quar.count) % quar.cap] = e;
            quar.count++;
            quar.bytes += charge;
            quar.maps += is_map;
            quar.space += space;
            cv_lock_give(&quar.lock);
            return;
        }
        uintptr_t old = quar.ring[quar.head];
        quar.head = (quar.head + 1) % quar.cap;
        quar.count--;
        quar.bytes -= entry_charge(old);
        quar.maps -= entry_is_map(old);
        quar.space -= entry_space(old);
        cv_lock_give(&quar.lock);
        release_entry(old, func);
    }
}

void cv_debug_fork_prepare(void) {
    cv_lock_take(&quar.lock);
}

void cv_debug_fork_parent(void) {
    cv_lock_give(&quar.lock);
}

void cv_debug_fork_child(void) {
    cv_lock_give(&quar.lock);
}

/* At exit, a last look at the poison of what waits in the quarantine. */
__attribute__((destructor)) static void quarantine_check_at_exit(void) {
    if (!(cv_options.debug & DEBUG_JUNK) || quar.cap == 0)
        return;
    cv_lock_take(&quar.lock);
    for (size_t i = 0; i < quar.count; i++) {
        uintptr_t e = quar.ring[(quar.head + i) % quar.cap];
        if (entry_is_map(e))
            continue;
        check_poison(e, page_of(e)->block_size, "exit");
    }
    cv_lock_give(&quar.lock);
}

/* ---- looking up a block ------------------------------------------------------------- */

enum blk_kind {
    BLK_SMALL,  /* a block of a debug page */
    BLK_MAP,    /* a block in its own mapping */
    BLK_PLAIN,  /* a release block (allocated before debug mode, or aligned
                   to a chunk or more): freed the release way */
};

typedef struct blk {
    enum blk_kind kind;
    uintptr_t a;
    page_t *page;     /* small and plain small */
    size_t bs;        /* small: class size */
    dmap_t *map;      /* map */
    large_t *large;   /* plain large */
    size_t requested; /* small, map; plain: usable size */
} blk_t;

/* Finds what p is, and stops the program when it is not a live block or
 * when its canary is broken; given is free_sized()'s size or CV_NO_SIZE. */
static void lookup(void *p, size_t given, enum path path, const char *func, blk_t *out) {
    uintptr_t a = (uintptr_t)p;
    unsigned f = cv_options.debug;
    unsigned kind = cv_map_kind(a);
    out->a = a;
    if (kind == MAP_SMALL) {
        page_t *page = page_of(a);
        out->page = page;
        /* another thread's page, perhaps: its owner extends it meanwhile */
        size_t handed_out = (size_t)CV_PEEK(page->capacity) * page->block_size;
        if (!cv_page_is_block(page, a) || a - (uintptr_t)page->start >= handed_out)
            bad_pointer(a, invalid_what(path), func);
        if (!page->debug) {
            out->kind = BLK_PLAIN;
            out->large = NULL;
            out->requested = page->block_size;
            return;
        }
        size_t bs = page->block_size;
        out->kind = BLK_SMALL;
        out->bs = bs;
        uint64_t t = *trailer_of(a, bs);
        size_t r = (size_t)(t ^ live_word(a, 0));
        /* Whatever the checks: a debug mode must not let through what the
         * release build stops (a double free), and the trailer is read anyway. */
        if (r > bs - OVERHEAD) {
            if (t == freed_word(a, bs))
                report_block(path == PATH_USABLE ? "use after free" : "double free", a, 0, bs,
                             false, func);
            report_trailer(a, bs, path, func);
        }
        out->requested = r;
        if (f & DEBUG_CANARY) {
            const uint8_t *c = (const uint8_t *)a + r;
            if (first_not(c, bs - TRAILER - r, CANARY_BYTE) != bs - TRAILER - r)
                report_block("heap overflow (canary broken)", a, r, bs, true, func);
        }
        if (given != CV_NO_SIZE && given != r && (f & DEBUG_FREE_CHECKS))
            report_size(a, r, given, func);
        return;
    }
    if (kind == MAP_DEBUG) {
        dmap_t *h = (dmap_t *)(a & ~(uintptr_t)CHUNK_MASK);
        if (h->magic == DMAP_FREED && h->user == a)
            report_map(path == PATH_USABLE ? "use after free" : "double free", h, func);
        if (h->magic != DMAP_LIVE || h->user != a)
            bad_pointer(a, invalid_what(path), func);
        out->kind = BLK_MAP;
        out->map = h;
        out->requested = h->requested;
        if (h->canary) {
            size_t n = h->end - a - h->requested;
            if (first_not((const uint8_t *)a + h->requested, n, CANARY_BYTE) != n)
                report_map("heap overflow (canary broken)", h, func);
            if (first_not((const uint8_t *)a - CANARY_BEFORE, CANARY_BEFORE, CANARY_BYTE) !=
                CANARY_BEFORE)
                report_map("heap underflow (canary before the block broken)", h, func);
        }
        if (given != CV_NO_SIZE && given != h->requested && (f & DEBUG_FREE_CHECKS))
            report_size(a, h->requested, given, func);
        return;
    }
    if (kind == MAP_LARGE || kind == MAP_LARGE_PREV) {
        large_t *h = cv_large_header(a, kind, func);
        if (h != NULL) {
            out->kind = BLK_PLAIN;
            out->page = NULL;
            out->large = h;
            out->requested = cv_large_usable(h);
            return;
        }
    }
    bad_pointer(a, invalid_what(path), func);
}

/* The block leaves the program: marked, poisoned, held back. */
static void release(blk_t *b, const char *func) {
    unsigned f = cv_options.debug;
    switch (b->kind) {
    case BLK_SMALL:
        *trailer_of(b->a, b->bs) = freed_word(b->a, b->bs);
        if (f & DEBUG_JUNK)
            memset((void *)b->a, JUNK_FREE, b->bs - TRAILER);
        if ((f & DEBUG_QUARANTINE) && b->bs <= cv_options.quarantine)
            quarantine(b->a, func);
        else /* the poison was just written: nothing to check */
            free_to_page(b->page, (block_t *)b->a, func);
        break;
    case BLK_MAP: {
        dmap_t *h = b->map;
        atomic_fetch_sub_explicit(&cv_stats.large_count, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&cv_stats.large_bytes, h->map_size, memory_order_relaxed);
        uintptr_t data = (uintptr_t)h + CARVE_PAGE;
        /* held back only once its pages fault: a block the kernel would not
         * protect (vm.max_map_count) goes at once, rather than wait readable */
        if (quarantine_limit(true) >= CARVE_PAGE &&
            (h->end <= data || cv_os_discard((void *)data, h->end - data))) {
            h->magic = DMAP_FREED;
            quarantine((uintptr_t)h, func);
        } else {
            map_unmap(h);
        }
        break;
    }
    case BLK_PLAIN:
        if (b->large != NULL) {
            cv_large_free(b->large);
            cv_purge_tick();
        } else {
            cv_heap_free_remote(b->page, (block_t *)b->a, func);
        }
        break;
    }
}

/* ---- the malloc family ------------------------------------------------------------ */

static void *small_alloc_from(heap_t *heap, unsigned c, size_t size, size_t align, bool zero,
                              size_t keep, const char *func) {
    unsigned f = cv_options.debug;
    uint8_t *b = cv_heap_alloc(heap, cv_class_size[c], false);
    if (b == NULL)
        return NULL;
    uintptr_t a = (uintptr_t)b;
    page_t *page = page_of(a);
    size_t bs = page->block_size;
    CV_ASSERT(bs == cv_class_size[c] && (a & (align - 1)) == 0);
    uint64_t *t = trailer_of(a, bs);
    /* A block that was freed in debug mode: still poisoned past its link? */
    if ((f & DEBUG_JUNK) && *t == freed_word(a, bs)) {
        size_t at = first_not(b + sizeof(block_t), bs - TRAILER - sizeof(block_t), JUNK_FREE);
        if (at != bs - TRAILER - sizeof(block_t))
            report_poison(a, bs, at + sizeof(block_t), func);
    }
    /* Its link, now the page's next block: an overflow of the block before
     * it or a write after free may have changed it, and the next malloc
     * would hand out (or fault on) memory that is no block. */
    if (page->free != NULL && !cv_page_is_block(page, (uintptr_t)page->free))
        report_link(page, a, bs, func);
    *t = live_word(a, size);
    if (zero)
        memset(b, 0, size);
    else if (f & DEBUG_JUNK)
        memset(b + keep, JUNK_ALLOC, size - keep);
    if (f & DEBUG_CANARY)
        memset(b + size, CANARY_BYTE, bs - TRAILER - size);
    return b;
}

static void *small_alloc(size_t size, size_t align, bool zero, size_t keep, const char *func) {
    unsigned c = cv_size_class(size + OVERHEAD);
    while (align > ALIGN_MIN && c < CLASS_COUNT && (cv_class_size[c] & -cv_class_size[c]) < align)
        c++;
    if (c >= CLASS_COUNT)
        return map_alloc(size, align, zero, keep);
    heap_t *heap = debug_heap();
    if (heap == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    void *b = small_alloc_from(heap, c, size, align, zero, keep, func);
    /* Past the thread's key destructor, the heap was for this block alone
     * (as in release mode, heap.c alloc_exited); given back only now, once
     * nothing here reads its page: another thread may adopt it at once. */
    if (unlikely(cv_tl_exited)) {
        dbg_heap = NULL;
        cv_heap_release(heap);
    }
    return b;
}

static void *alloc_block(size_t size, size_t align, bool zero, size_t keep, const char *func) {
    unsigned f = cv_options.debug;
    if (size > PTRDIFF_MAX - OVERHEAD) {
        errno = ENOMEM;
        return NULL;
    }
    /* Alignments of a chunk or more keep the release layout (large.c):
     * rare, and the mapping's header would not be in the user's slot. */
    if (align >= CHUNK_SIZE) {
        cv_purge_tick(); /* new memory: let decayed memory go first */
        return cv_large_alloc(size, align, zero);
    }
    size_t min_align = size <= 8 ? 8 : ALIGN_MIN;
    if (align < min_align)
        align = min_align;
    bool must_map = size + OVERHEAD > SMALL_MAX || align > SLICE_SIZE;
    if (must_map ||
        ((f & DEBUG_PAGE) && atomic_load_explicit(&dmaps, memory_order_relaxed) < dmaps_max())) {
        void *p = map_alloc(size, align, zero, keep);
        if (p != NULL || must_map) {
            if (p == NULL)
                errno = ENOMEM;
            return p;
        }
    }
    if (f & DEBUG_PAGE) {
        /* out of mappings, or of debug=page's share of them: canaries */
        static _Atomic bool said;
        if (!atomic_exchange(&said, true))
            cv_msg_print("carve: debug=page: no more mappings for small blocks (%zu in use, "
                         "at most %zu: 2 each, half of vm.max_map_count); they get canaries "
                         "instead while that lasts\n",
                         atomic_load_explicit(&dmaps, memory_order_relaxed), dmaps_max());
    }
    return small_alloc(size, align, zero, keep, func);
}

void *cv_debug_alloc(size_t size, size_t align, bool zero, const char *func) {
    return alloc_block(size, align, zero, 0, func);
}

void cv_debug_free(void *p, size_t size, const char *func) {
    if (p == NULL)
        return;
    blk_t b;
    lookup(p, size, PATH_FREE, func, &b);
    release(&b, func);
}

size_t cv_debug_usable(void *p, const char *func) {
    blk_t b;
    lookup(p, CV_NO_SIZE, PATH_USABLE, func, &b);
    return b.requested;
}

/* In place, as in release builds, when the block still fits its class
 * (small blocks; the canary moves, new bytes are junk) or shrinks to half
 * or more (a mapping's freed tail joins its guard page); anything else
 * moves, and a stale pointer to the old block is then one to a freed
 * block. (Always moving would make a string grown by appends quadratic.) */
void *cv_debug_realloc(void *p, size_t size, const char *func) {
    blk_t b;
    lookup(p, CV_NO_SIZE, PATH_REALLOC, func, &b);
    size_t old = b.requested;
    if (b.kind == BLK_SMALL && size <= b.bs - OVERHEAD && size >= old / 2) {
        *trailer_of(b.a, b.bs) = live_word(b.a, size);
        if (size > old && (cv_options.debug & DEBUG_JUNK))
            memset((void *)(b.a + old), JUNK_ALLOC, size - old);
        if (cv_options.debug & DEBUG_CANARY)
            memset((void *)(b.a + size), CANARY_BYTE, b.bs - TRAILER - size);
        return p;
    }
    if (size <= old && size >= old / 2) {
        if (b.kind == BLK_MAP) {
            dmap_t *h = b.map;
            uintptr_t end = (b.a + size + CARVE_PAGE - 1) & ~(uintptr_t)(CARVE_PAGE - 1);
            if (end < h->end && cv_os_discard((void *)end, h->end - end))
                h->end = end;
            h->requested = size;
            if (h->canary)
                memset((void *)(b.a + size), CANARY_BYTE, h->end - b.a - size);
            return p;
        }
        if (b.kind == BLK_PLAIN)
            return p;
    }
    size_t keep = size < old ? size : old;
    void *q = alloc_block(size, 0, false, keep, func);
    if (q == NULL)
        return NULL;
    memcpy(q, p, keep);
    release(&b, func);
    return q;
}

/* ---- test hook ------------------------------------------------------------------------ */

void cv_debug_reinit(void) {
    cv_init();
    cv_options_parse();
    heap_t *heap = cv_tl_heap;
    if (heap != &cv_heap_empty) {
        pthread_setspecific(cv_heap_key, NULL);
        cv_heap_release(heap);
    }
}
