/*
 * free.c: the free paths below the entry points' fast path (api.c).
 *
 * A small block that api.c's fast path cannot take comes here: the owner's
 * free that emptied its page or took it off the full list
 * (cv_heap_free_local_slow), a full bin giving half back
 * (cv_heap_bin_full), another thread's block pushed onto its page's
 * thread_free list (push_remote, one CAS per run of blocks of one page),
 * and a block of a class with no bin freed by another thread
 * (cv_heap_free_remote). The bins themselves live here too: free fills
 * them, malloc only pops (internal.h).
 */
#include "internal.h"

/* The owner freed into a page that is now empty or sits in the full list
 * (both tested by one compare in the fast path, see page_t.used), holding
 * its heap's lock. */
static void free_local_slow(heap_t *heap, page_t *page) {
    if (page->used & PAGE_IN_FULL)
        cv_heap_page_unfull(heap, page);
    cv_heap_page_emptied(heap, page);
}

void cv_heap_free_local_slow(page_t *page) {
    heap_t *heap = atomic_load_explicit(&page->heap, memory_order_relaxed);
    cv_heap_lock(heap);
    free_local_slow(heap, page);
    cv_heap_unlock(heap);
}

/* ---- remote frees ------------------------------------------------------- */

/* ---- reclaiming pages that other threads emptied -------------------------
 *
 * A page is emptied by other threads' frees when its owner no longer
 * frees or allocates in that class, and an owner that stopped allocating
 * for good (a server's main thread, waiting for its workers after it made
 * their first blocks) never collects them: the page stays, every block
 * free, until the owner exits. So the free that would empty a page of
 * another heap retires it, under that heap's lock, which it only tries
 * (a busy owner collects soon enough itself).
 *
 * What makes it safe without the owner: the owner touches a page outside
 * its slow paths (which hold the lock) only as its class's current page
 * (malloc's pop), left alone here, or with a free of a class that has no
 * bin (api.c's free_to_page) or of debug mode, whose pages are left alone
 * too. The test before the lock reads the owner's count racily: a hint,
 * checked again once the blocks are collected under the lock. The page
 * stays alive until the push (these blocks keep it), and once the lock is
 * held it cannot retire under us, since retiring takes the lock. */

/* The push of n blocks would bring every block of page back. */
static inline bool would_empty(const page_t *page, uintptr_t n) {
    uintptr_t w = atomic_load_explicit(&page->thread_free, memory_order_relaxed);
    if (w & TF_ABANDONED)
        return false;
    uintptr_t count = ((w >> TF_COUNT_SHIFT) & TF_COUNT_MAX) + n;
    return count == (CV_PEEK(page->used) & ~PAGE_IN_FULL);
}

static bool reclaim(page_t *page, block_t *first, block_t *last, uintptr_t n) {
    heap_t *heap = atomic_load_explicit(&page->heap, memory_order_acquire);
    if (heap == NULL || page->debug || cv_class_size[page->class_idx] > BIN_MAX_BLOCK ||
        !cv_heap_trylock(heap))
        return false;
    /* under the lock: the page is this heap's until we let go; a debug
     * heap's owner frees into its pages without the lock */
    if (atomic_load_explicit(&page->heap, memory_order_relaxed) != heap || heap->debug ||
        atomic_load_explicit(&page->owner, memory_order_relaxed) != heap->owner) {
        cv_heap_unlock(heap);
        return false;
    }
    heap_t *h;
    uintptr_t old = cv_page_push_remote(page, first, last, n, &h);
    bool gone = cv_heap_page_reclaim(heap, page);
    if (!gone && (old & TF_FULL))
        atomic_store_explicit(&heap->full_freed, true, memory_order_release);
    cv_heap_unlock(heap);
    if (gone)
        cv_heap_page_to_arena(page);
    return true;
}

/* One CAS pushes the chain first..last (n blocks of page) and adds n to the
 * count; the flags in the word it replaced say whether anyone must be told.
 *
 * The page's heap is read before the push, while these blocks still keep
 * the page, and so its chunk, alive: once they are pushed, the owner may
 * collect them, empty the page and retire it, and the chunk may in time be
 * unmapped under a thread that stalls here. Read after the word (acquire):
 * an owner sets TF_FULL only once its heap is in place, and an abandon or
 * adoption in between changes the word and fails the CAS. (Only if a page
 * went through abandon, adoption and a new full state and came back to the
 * very same word during one stalled CAS would the wrong heap be told: the
 * blocks then wait in the page until its new owner rescans its full pages
 * or exits. A leak for a while, not a crash.) */
static void push_remote(page_t *page, block_t *first, block_t *last, uintptr_t n) {
    heap_t *heap;
    if (unlikely(would_empty(page, n)) && reclaim(page, first, last, n))
        return;
    uintptr_t old = cv_page_push_remote(page, first, last, n, &heap);
    if (likely((old & TF_FLAGS) == 0))
        return;
    if (old & TF_ABANDONED) {
        if (cv_arena_free_abandoned(page)) /* checks that the chunk is still there */
            cv_purge_excess();
    } else if (heap != NULL) {
        /* The page sits in that heap's full list (heaps are never
         * unmapped). NULL: it was being abandoned, which collects. */
        atomic_store_explicit(&heap->full_freed, true, memory_order_release);
    }
}

/* ---- bins ---------------------------------------------------------------- */
/*
 * Each heap keeps, per class up to BIN_MAX_BLOCK, a bin: a stack of
 * pointers to free blocks, which malloc pops and free pushes, whichever
 * thread's page a block is in. Why pointers and not the pages' free lists:
 * a list's pop reads the link in the block it hands out and its push
 * writes one into the block it takes, and a block freed long ago is cold:
 * in larson_server (5,000 random blocks per thread) those two misses, the
 * pop's on the path to the next pop, were most of malloc's and free's
 * time. A bin touches neither the block nor its page's descriptor (free
 * finds the bin in its chunk's slice_bin line). Why any thread's blocks:
 * a block freed by another thread than its owner is reused here, in the
 * core that just had it, for the cost of a local free (no atomic, no
 * branch on the owner that the program's pattern can make unpredictable).
 *
 * A block in a bin still counts in its page's used (it is not free to the
 * page), so no page retires under it, whoever owns the page. A full bin
 * gives half back (cv_heap_bin_full): this thread's own blocks first, onto
 * their pages' free lists, others' with one CAS per run of blocks of one
 * page; an empty one leaves malloc to the current page (internal.h, why
 * not a batch). All of a heap's bins go back when its thread exits, at
 * malloc_trim, and a bin that did not move between two idle checks
 * (retire_idle) goes back whole, so that the pages under an unused class
 * can empty and retire.
 */

static uint32_t bin_max(unsigned c) {
    uint32_t size = cv_class_size[c];
    if (size > BIN_MAX_BLOCK)
        return 0;
    uint32_t n = BIN_BYTES / size;
    return n < BIN_MIN ? BIN_MIN : n > BIN_MAX ? BIN_MAX : n;
}

/* Lays the bins' stacks out in heap->slots, each after a NULL sentinel. */
void cv_heap_bins_init(heap_t *heap) {
    unsigned at = 0;
    heap->bins[0] = (bin_t){0, 0, NULL, 0};
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        uint32_t max = bin_max(c);
        CV_ASSERT(at + 1 + max <= BIN_SLOTS);
        if (at + 1 + max > BIN_SLOTS) /* BIN_SLOTS too small: no bin */
            max = 0;
        heap->slots[at] = NULL; /* slot[-1] */
        heap->bins[c + 1] = (bin_t){0, max, &heap->slots[at + 1], 0};
        at += 1 + max;
    }
}

/* A pooled heap taken again: every bin back to its size, empty. */
void cv_heap_bins_reset(heap_t *heap) {
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        heap->bins[c + 1].max = bin_max(c);
        heap->bins[c + 1].seen = 0;
    }
}

/* Debug heaps keep no bins: their blocks carry canaries and trailers
 * that debug.c checks block by block. */
void cv_heap_bins_off(heap_t *heap) {
    for (unsigned c = 0; c <= CLASS_COUNT; c++)
        heap->bins[c].max = 0;
}

static page_t *block_page(const void *b) {
    uintptr_t a = (uintptr_t)b;
    return cv_page_of(cv_chunk_of(a), a);
}

/* free took a block on its chunk's slice_bin alone: an interior pointer
 * stops here, before it reaches its page's lists, whoever's page it is (a
 * bin may hand it out before that: the fast path checks no more than the
 * chunk and the bin's top). */
static inline void check_block(const page_t *page, const void *b) {
    if (unlikely(!cv_page_is_block(page, (uintptr_t)b)))
        cv_msg_fatal("invalid free", b, "not the start of a block", "free");
}

/* A block of a page of this thread's goes onto the page's free list, as
 * the owner's free put it before bins. */
static inline void push_local(heap_t *heap, page_t *page, block_t *b) {
    check_block(page, b);
    cv_page_push(page, b);
    if (cv_page_unuse(page))
        free_local_slow(heap, page);
}

/* Gives n blocks back to their pages. The owner's go onto their pages' free
 * lists; runs of other pages' blocks are linked and pushed with one CAS per
 * run (blocks freed in allocation order often come in such runs, as a
 * consumer frees what one producer carved). */
static void bin_flush(heap_t *heap, void **slot, uint32_t n) {
    uint32_t i = 0;
    while (i < n) {
        block_t *b = slot[i];
        page_t *page = block_page(b);
        if (atomic_load_explicit(&page->owner, memory_order_relaxed) == heap->owner) {
            push_local(heap, page, b);
            i++;
            continue;
        }
        check_block(page, b);
        block_t *last = b;
        uintptr_t count = 1;
        while (++i < n && block_page(slot[i]) == page && cv_page_is_block(page, (uintptr_t)slot[i])) {
            last->next = slot[i];
            last = slot[i];
            count++;
        }
        push_remote(page, b, last, count);
    }
}

/* The bin of bin_idx is full: half of it goes back, then p goes on. This
 * thread's own blocks go first, oldest first, in one pass that stops once
 * there are enough; other threads' blocks stay while there are, and the
 * oldest of them make up the number otherwise (see "bins": a block that
 * goes back to an owner that no longer allocates is lost to everyone). */
void cv_heap_bin_full(heap_t *heap, unsigned bin_idx, void *p) {
    bin_t *bin = &heap->bins[bin_idx];
    void **slot = bin->slot;
    uint32_t count = bin->count, keep = bin->max / 2, out = count - keep;
    void *rest[BIN_MAX];
    uint32_t n_own = 0, n_rest = 0, i;
    cv_heap_lock(heap);
    for (i = 0; i < count && n_own < out; i++) {
        page_t *page = block_page(slot[i]);
        if (atomic_load_explicit(&page->owner, memory_order_relaxed) == heap->owner) {
            push_local(heap, page, slot[i]);
            n_own++;
        } else {
            rest[n_rest++] = slot[i]; /* checked by bin_flush if it goes */
        }
    }
    uint32_t more = out - n_own; /* > 0 only when every slot was looked at */
    bin_flush(heap, rest, more);
    /* the bin: the others kept, then the slots not looked at */
    uint32_t kept = n_rest - more;
    memmove(slot + kept, slot + i, (count - i) * sizeof(void *));
    memcpy(slot, rest + more, kept * sizeof(void *));
    slot[keep] = p;
    CV_SET(bin->count, keep + 1);
    cv_heap_unlock(heap);
}

/* The owner, holding its heap's lock (retire_idle, trim, exit). */
void cv_heap_bin_empty(heap_t *heap, bin_t *bin) {
    uint32_t n = bin->count;
    CV_SET(bin->count, 0);
    bin_flush(heap, bin->slot, n);
}

void cv_heap_bins_empty(heap_t *heap) {
    for (unsigned c = 1; c <= CLASS_COUNT; c++)
        if (heap->bins[c].count != 0)
            cv_heap_bin_empty(heap, &heap->bins[c]);
}

/* Another thread's block (or a page's with no owner), freed by this thread
 * outside the bins (no bin for its class, or debug mode): one CAS onto the
 * page's thread_free. */
void cv_heap_free_remote(page_t *page, block_t *b, const char *func) {
    if (unlikely(!cv_page_is_block(page, (uintptr_t)b)))
        cv_msg_fatal("invalid free", b, "not the start of a block", func);
    push_remote(page, b, b, 1);
}
