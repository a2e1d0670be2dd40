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
 * Large blocks, and every block with debug=page: see debug_map.c.
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
 * ---- Files ------------------------------------------------------------------
 * debug.c: the door, the debug heap, looking blocks up, the malloc family.
 * debug_map.c: blocks in their own mapping, and guard page hits.
 * quarantine.c: freed blocks held back. report.c: the reports.
 */
#include "debug.h"

#include <stdlib.h>

extern pthread_key_t cv_heap_key;

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
    /* A thread that had a release heap (debug mode set at run time) gives
     * it back first: its pages and bins are the release layout's, which a
     * debug heap must not hand out or take frees into unlocked. */
    if (cv_tl_heap != &cv_heap_empty) {
        pthread_setspecific(cv_heap_key, NULL);
        cv_heap_release(cv_tl_heap);
    }
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

bool cv_debug_on(void) {
    if (!cv_init() || cv_options.debug == 0)
        return false;
    if (cv_options.debug & (DEBUG_GUARDS | DEBUG_PAGE | DEBUG_QUARANTINE))
        cv_dmap_catch_faults();
    return true;
}

/* A block (checked by the caller) goes back to its page as the owner's
 * free would put it there when this thread's debug heap owns the page (so
 * that pages empty out and retire as in release mode, which remote frees
 * alone never do), and with the remote CAS otherwise. */
void cv_debug_free_to_page(page_t *page, block_t *b, const char *func) {
    heap_t *heap = dbg_heap;
    /* (after the thread's key destructor, dbg_heap may be in the heap pool,
     * or another thread's: the key then no longer holds it) */
    if (heap != NULL && atomic_load_explicit(&page->heap, memory_order_relaxed) == heap &&
        pthread_getspecific(cv_heap_key) == heap) {
        cv_page_push_local(page, b);
        if (cv_page_unuse(page))
            cv_heap_free_local_slow(page);
        return;
    }
    cv_heap_free_remote(page, b, func);
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

/* free and realloc of a block that new made, delete of malloc's or of
 * new[]'s: the pair does not match. malloc_usable_size may ask of any.
 * Debug mode only: a release build's guard_sample blocks keep their
 * family too, but a pair that glibc lets through must not stop a
 * production run. */
static void check_family(uintptr_t a, unsigned fam, enum path path, const char *func) {
    if (cv_options.debug != 0 && path != PATH_USABLE && fam != family_of(func))
        cv_report_mismatch(a, fam, func);
}

/* Finds what p is, and stops the program when it is not a live block or
 * when its canary is broken; given is free_sized()'s size or CV_NO_SIZE. */
static void lookup(void *p, size_t given, enum path path, const char *func, blk_t *out) {
    uintptr_t a = (uintptr_t)p;
    unsigned f = cv_options.debug;
    unsigned kind = cv_map_kind(a);
    out->a = a;
    if (kind == MAP_SMALL) {
        page_t *page = dbg_page_of(a);
        out->page = page;
        /* another thread's page, perhaps: its owner extends it meanwhile */
        size_t handed_out = (size_t)CV_PEEK(page->capacity) * page->block_size;
        if (!cv_page_is_block(page, a) || a - (uintptr_t)page->start >= handed_out)
            cv_report_bad_pointer((void *)a, cv_report_invalid_what(path), func);
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
        unsigned fam;
        size_t r = live_size(t, a, &fam);
        /* Whatever the checks: a debug mode must not let through what the
         * release build stops (a double free), and the trailer is read anyway. */
        if (r > bs - OVERHEAD) {
            if (t == freed_word(a, bs))
                cv_report_block(path == PATH_USABLE ? "use after free" : "double free", a, 0, bs,
                             false, func);
            cv_report_trailer(a, bs, path, func);
        }
        out->requested = r;
        check_family(a, fam, path, func);
        if (f & DEBUG_CANARY) {
            const uint8_t *c = (const uint8_t *)a + r;
            if (first_not(c, bs - TRAILER - r, CANARY_BYTE) != bs - TRAILER - r)
                cv_report_block("heap overflow (canary broken)", a, r, bs, true, func);
        }
        if (given != CV_NO_SIZE && given != r && (f & DEBUG_FREE_CHECKS))
            cv_report_size(a, r, given, func);
        return;
    }
    if (kind == MAP_DEBUG) {
        dmap_t *h = (dmap_t *)(a & ~(uintptr_t)CHUNK_MASK);
        if (h->magic == DMAP_FREED && h->user == a)
            cv_report_map(path == PATH_USABLE ? "use after free" : "double free", h, func);
        if (h->magic != DMAP_LIVE || h->user != a)
            cv_report_bad_pointer((void *)a, cv_report_invalid_what(path), func);
        out->kind = BLK_MAP;
        out->map = h;
        check_family(a, h->family, path, func);
        out->requested = h->requested;
        if (h->canary) {
            size_t n = h->end - a - h->requested;
            if (first_not((const uint8_t *)a + h->requested, n, CANARY_BYTE) != n)
                cv_report_map("heap overflow (canary broken)", h, func);
            if (first_not((const uint8_t *)a - CANARY_BEFORE, CANARY_BEFORE, CANARY_BYTE) !=
                CANARY_BEFORE)
                cv_report_map("heap underflow (canary before the block broken)", h, func);
        }
        if (given != CV_NO_SIZE && given != h->requested && (f & DEBUG_FREE_CHECKS))
            cv_report_size(a, h->requested, given, func);
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
    cv_report_bad_pointer((void *)a, cv_report_invalid_what(path), func);
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
            cv_quarantine_put(b->a, func);
        else /* the poison was just written: nothing to check */
            cv_debug_free_to_page(b->page, (block_t *)b->a, func);
        break;
    case BLK_MAP: {
        dmap_t *h = b->map;
        cv_dmap_freed(h);
        cv_stat_large_unmapped(h->map_size);
        uintptr_t data = (uintptr_t)h + CARVE_PAGE;
        /* held back only once its pages fault: a block the kernel would not
         * protect (vm.max_map_count) goes at once, rather than wait readable */
        if (cv_quarantine_limit(true) >= CARVE_PAGE &&
            (h->end <= data || cv_os_discard((void *)data, h->end - data))) {
            h->magic = DMAP_FREED;
            cv_quarantine_put((uintptr_t)h, func);
        } else {
            cv_dmap_unmap(h);
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
    page_t *page = dbg_page_of(a);
    size_t bs = page->block_size;
    CV_ASSERT(bs == cv_class_size[c] && (a & (align - 1)) == 0);
    uint64_t *t = trailer_of(a, bs);
    /* A block that was freed in debug mode: still poisoned past its link? */
    if ((f & DEBUG_JUNK) && *t == freed_word(a, bs)) {
        size_t at = first_not(b + sizeof(block_t), bs - TRAILER - sizeof(block_t), JUNK_FREE);
        if (at != bs - TRAILER - sizeof(block_t))
            cv_report_poison(a, bs, at + sizeof(block_t), func);
    }
    /* Its link, now the page's next block: an overflow of the block before
     * it or a write after free may have changed it, and the next malloc
     * would hand out (or fault on) memory that is no block. */
    if (page->free != NULL && !cv_page_is_block(page, (uintptr_t)page->free))
        cv_report_link(page, a, bs, func);
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
        return cv_dmap_alloc(size, align, zero, keep);
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
        ((f & DEBUG_PAGE) && cv_dmap_count() < cv_dmap_max())) {
        void *p = cv_dmap_alloc(size, align, zero, keep);
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
                         cv_dmap_count(), cv_dmap_max());
    }
    return small_alloc(size, align, zero, keep, func);
}

/* A block made by a C++ operator says so (see enum family). */
static void mark_family(void *p, unsigned fam) {
    uintptr_t a = (uintptr_t)p;
    unsigned kind = cv_map_kind(a);
    if (kind == MAP_SMALL) {
        page_t *page = dbg_page_of(a);
        if (!page->debug)
            return;
        uint64_t *t = trailer_of(a, page->block_size);
        unsigned old;
        size_t r = live_size(*t, a, &old);
        *t = live_word(a, r | (size_t)fam << FAM_SHIFT);
    } else if (kind == MAP_DEBUG) {
        ((dmap_t *)(a & ~(uintptr_t)CHUNK_MASK))->family = (uint8_t)fam;
    }
}

void *cv_debug_alloc(size_t size, size_t align, bool zero, const char *func) {
    void *p = alloc_block(size, align, zero, 0, func);
    unsigned fam = family_of(func);
    if (p != NULL && fam != FAM_MALLOC)
        mark_family(p, fam);
    return p;
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
