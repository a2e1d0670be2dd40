/*
 * page.c: the free lists of one page.
 *
 * Three lists, as in mimalloc, so that no list is shared by two writers
 * without an atomic:
 *   free         what malloc pops and the owner's free pushes (owner only)
 *   local_free   remote frees taken in while free still had blocks
 *   thread_free  what other threads' frees push (one CAS per run of
 *                blocks), taken in bulk by the owner with one exchange
 * For classes with bins (heap.c) "the owner's free" is a bin giving blocks
 * back, and malloc pops here when its bin is empty.
 * The owner's free pushes on free itself, not (as mimalloc does) on a
 * list of its own: the block freed last is the next handed out, its lines
 * still in this core's cache. With a separate list a freed block waited
 * until free ran dry, a page's worth of allocations later, its lines cold
 * by then; on random_sizes the L1 data misses (cachegrind) fell markedly
 * (figures: doc/design.md, "Thread heaps and the three free lists").
 * Remote frees wait a little longer (until free runs dry), which only
 * delays their reuse.
 * malloc never looks at local_free or thread_free on its fast path; when
 * free runs dry the slow path folds them in (cv_page_collect), and only then
 * carves fresh blocks (cv_page_extend), so memory is touched in the order it
 * is used.
 */
#include "internal.h"

void cv_page_init(page_t *page, unsigned class_idx, heap_t *heap) {
    CV_SET(page->class_idx, (uint8_t)class_idx);
    page->block_size = cv_class_size[class_idx];
    size_t span = (size_t)page->slice_count << SLICE_SHIFT;
    page->guarded = false;
    /* debug=guards: the span's last OS page becomes PROT_NONE, so that a run
     * off the end of the page's last block faults before it reaches the
     * next page (canaries see overflows between blocks of one page). Every
     * class keeps at least 3 blocks; when the kernel refuses (each guard
     * splits the reservation's mapping, vm.max_map_count), no guard. */
    if (unlikely(heap->debug) && (cv_options.debug & DEBUG_GUARDS) &&
        cv_os_protect(cv_page_guard(page), CARVE_PAGE, false)) {
        page->guarded = true;
        span -= CARVE_PAGE;
    }
    page->reserved = (uint32_t)(span / page->block_size);
    CV_SET(page->capacity, 0);
    CV_SET(page->used, 0);
    page->free = page->local_free = NULL;
    page->free_is_zero = false;
    page->debug = heap->debug;
    /* Debug pages' blocks never go to a bin (see chunk_t.slice_bin). */
    chunk_t *chunk = cv_chunk_of((uintptr_t)page);
    unsigned first = (unsigned)(page - chunk->pages);
    for (unsigned i = first; i < first + page->slice_count; i++)
        chunk->slice_bin[i] = heap->debug ? 0 : (uint8_t)(class_idx + 1);
    page->next = page->prev = NULL;
    atomic_store_explicit(&page->thread_free, 0, memory_order_relaxed);
    atomic_store_explicit(&page->heap, heap, memory_order_release);
    atomic_store_explicit(&page->owner, heap->owner, memory_order_release);
}

/* Carve the next few blocks into the (empty) free list: about 4 KiB worth
 * and at least 4 blocks, mimalloc's figure, so that a page's memory is
 * touched a kernel page at a time as it is needed. */
void cv_page_extend(page_t *page) {
    CV_ASSERT(page->free == NULL && page->capacity <= page->reserved);
    size_t bs = page->block_size;
    uint32_t left = page->reserved - page->capacity;
    uint32_t n = bs >= 1024 ? 4 : (uint32_t)(4096 / bs);
    if (n > left)
        n = left;
    if (n == 0)
        return;
    uint8_t *first = page->start + (size_t)page->capacity * bs;
    uint8_t *b = first;
    for (uint32_t i = 1; i < n; i++, b += bs)
        ((block_t *)b)->next = (block_t *)(b + bs);
    ((block_t *)b)->next = NULL;
    /* debug.c keeps a trailer in each block's last word: no stale one from
     * an earlier use of this memory may read as "freed" (and have the
     * block's old contents taken for a broken poison). */
    if (unlikely(page->debug) && !page->memory_is_zero)
        for (uint32_t i = 1; i <= n; i++)
            ((uint64_t *)(void *)(first + (size_t)i * bs))[-1] = 0;
    page->free = (block_t *)first;
    page->free_is_zero = page->memory_is_zero;
    CV_SET(page->capacity, page->capacity + n);
}

/* Take the remote frees (keeping the flags), then refill free from
 * local_free when free is empty. used counts the remote frees only now: a
 * block on thread_free is still "used" until its owner sees it. The word
 * carries the list's length, so the list is walked only when both local
 * lists are busy (to find its tail) or the count saturated. */
void cv_page_collect(page_t *page) {
    if (atomic_load_explicit(&page->thread_free, memory_order_relaxed) & ~TF_FLAGS) {
        uintptr_t w = atomic_fetch_and_explicit(&page->thread_free, TF_FLAGS, memory_order_acquire);
        block_t *list = (block_t *)(w & TF_PTR_MASK);
        uint32_t count = (uint32_t)((w >> TF_COUNT_SHIFT) & TF_COUNT_MAX);
        block_t *tail = NULL;
        if (count == TF_COUNT_MAX || (page->free != NULL && page->local_free != NULL)) {
            count = 1;
            for (tail = list; tail->next != NULL; tail = tail->next)
                count++;
        }
        CV_ASSERT((page->used & ~PAGE_IN_FULL) >= count); /* remote frees of blocks handed out */
        CV_SET(page->used, page->used - count);
        if (page->free == NULL) {
            page->free = list;
            page->free_is_zero = false;
        } else if (page->local_free == NULL) {
            page->local_free = list;
        } else {
            tail->next = page->local_free;
            page->local_free = list;
        }
    }
    if (page->free == NULL && page->local_free != NULL) {
        page->free = page->local_free;
        page->local_free = NULL;
        page->free_is_zero = false;
    }
}

bool cv_page_is_block(const page_t *page, uintptr_t a) {
    size_t off = a - (uintptr_t)page->start;
    /* off < 4 MiB here, so the 32-bit multiple test applies (size_class.c) */
    uint64_t c = cv_class_magic[page->class_idx];
    return off < (size_t)page->reserved * page->block_size && (uint64_t)off * c <= c - 1;
}

/* ---- the page's life outside its blocks ---------------------------------
 * page_t is written only here and by the inline helpers of internal.h's
 * page section (pop, push, unuse, pin, queues), so that a reader finds
 * every change of a page's state by name. The arena decides when a span
 * becomes a page and when it is free again; heaps decide owner and lists;
 * these functions are what they call to say so. */

/* The arena handed out a span of slices as this page's (under the arena
 * lock: cv_arena_free_abandoned reads the state there); memory_is_zero:
 * none of its slices was written since it was mapped or purged. */
void cv_page_span_init(page_t *page, uint8_t *start, unsigned slices, bool memory_is_zero) {
    page->start = start;
    page->slice_count = (uint8_t)slices;
    page->memory_is_zero = memory_is_zero;
    page->state = PAGE_OWNED;
}

/* The span went back to the arena (under its lock): nothing of the page
 * may be read as live again until cv_page_span_init. */
void cv_page_reset(page_t *page) {
    page->state = PAGE_FREE;
    page->free = page->local_free = NULL;
    page->used = 0;
    page->capacity = page->reserved = 0;
    page->next = page->prev = NULL;
    page->guarded = false;
    atomic_store_explicit(&page->owner, 0, memory_order_relaxed);
    atomic_store_explicit(&page->heap, NULL, memory_order_relaxed);
    atomic_store_explicit(&page->thread_free, 0, memory_order_relaxed);
}

/* A heap takes an abandoned page: heap first, owner last (release), so
 * that whoever sees the owner sees the heap. */
void cv_page_set_owner(page_t *page, heap_t *heap) {
    atomic_store_explicit(&page->heap, heap, memory_order_relaxed);
    atomic_store_explicit(&page->owner, heap->owner, memory_order_release);
}

/* The owner parks a page with no free block in its full list. False when a
 * remote free raced in first: the page then has blocks and stays out. */
bool cv_page_mark_full(page_t *page) {
    uintptr_t empty = 0;
    if (!atomic_compare_exchange_strong_explicit(&page->thread_free, &empty, TF_FULL,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return false;
    CV_SET(page->used, page->used | PAGE_IN_FULL);
    return true;
}

void cv_page_unmark_full(page_t *page) {
    CV_SET(page->used, page->used & ~PAGE_IN_FULL);
    atomic_fetch_and_explicit(&page->thread_free, ~TF_FULL, memory_order_relaxed);
}

/* The owner exits with blocks of the page still live (under the arena
 * lock). Once TF_ABANDONED is set, a remote free takes the arena lock to
 * collect (cv_arena_free_abandoned); frees that came before the flag are
 * collected here. */
void cv_page_abandon(page_t *page) {
    atomic_store_explicit(&page->owner, 0, memory_order_relaxed);
    atomic_store_explicit(&page->heap, NULL, memory_order_relaxed);
    uintptr_t w = atomic_load_explicit(&page->thread_free, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&page->thread_free, &w,
                                                  (w & ~TF_FULL) | TF_ABANDONED,
                                                  memory_order_acq_rel, memory_order_relaxed)) {
    }
    CV_SET(page->used, page->used & ~PAGE_IN_FULL);
    page->next = page->prev = NULL;
    cv_page_collect(page);
}

/* The arena files an abandoned page, or hands it to an adopting heap
 * (under the arena lock both). */
void cv_page_set_abandoned(page_t *page, bool abandoned) {
    if (abandoned) {
        page->state = PAGE_ABANDONED;
        return;
    }
    page->state = PAGE_OWNED;
    atomic_fetch_and_explicit(&page->thread_free, ~TF_ABANDONED, memory_order_relaxed);
}
