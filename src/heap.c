/*
 * heap.c: thread heaps.
 *
 * Each thread allocates from its own heap: per size class a queue of pages,
 * the first of which (heap->direct[c]) the fast path pops from, and one list
 * of full pages. Nothing here takes a lock or an atomic read-modify-write
 * except on the way to the arena (a new page, about once per 64 KiB) and
 * when collecting remote frees.
 *
 * Full pages leave the class queue so that the slow path never walks them.
 * A remote free into a full page must bring it back; the freeing thread
 * raises heap->full_freed, and the owner's next slow path looks at its full
 * list. The owner sets TF_FULL only on an empty thread_free word, with a
 * CAS, and a remote free sees the flag in the word it replaces: no page is
 * left in the full list with a free block that nobody announced.
 *
 * When a thread exits, its pages are abandoned to the arena (the live blocks
 * in them stay valid); a thread that allocates the same class adopts them,
 * and remote frees give them back once empty.
 */
#include "internal.h"

/* The page that has nothing: every class of the empty heap points at it, so
 * that the fast path needs no "initialised?" test. */
page_t cv_page_empty;

heap_t cv_heap_empty = {
    .direct = {[0 ... CLASS_COUNT - 1] = &cv_page_empty},
};

CARVE_TLS heap_t *cv_tl_heap = &cv_heap_empty;

extern pthread_key_t cv_heap_key;
static heap_t *heap_pool; /* under the arena lock */

/* ---- page queues -------------------------------------------------------- */

/* Keep direct[c] on the queue's first page, and move the pin (one extra
 * count in used, see page_t) with it. A page that loses the pin is never
 * empty here: it is leaving for the full list, or it is being retired,
 * which happens only to pages that are not current. */
static void direct_update(heap_t *heap, page_queue_t *q) {
    if (q == &heap->full)
        return;
    unsigned c = (unsigned)(q - heap->queues);
    page_t *old = heap->direct[c];
    page_t *now = q->first ? q->first : &cv_page_empty;
    if (old == now)
        return;
    if (old != &cv_page_empty)
        old->used--;
    if (now != &cv_page_empty)
        now->used++;
    heap->direct[c] = now;
}

static void queue_remove(heap_t *heap, page_queue_t *q, page_t *page) {
    if (page->prev)
        page->prev->next = page->next;
    else
        q->first = page->next;
    if (page->next)
        page->next->prev = page->prev;
    else
        q->last = page->prev;
    page->next = page->prev = NULL;
    direct_update(heap, q);
}

static void queue_push_front(heap_t *heap, page_queue_t *q, page_t *page) {
    page->prev = NULL;
    page->next = q->first;
    if (q->first)
        q->first->prev = page;
    else
        q->last = page;
    q->first = page;
    direct_update(heap, q);
}

static void queue_push_back(heap_t *heap, page_queue_t *q, page_t *page) {
    page->next = NULL;
    page->prev = q->last;
    if (q->last)
        q->last->next = page;
    else
        q->first = page;
    q->last = page;
    direct_update(heap, q);
}

/* ---- full pages --------------------------------------------------------- */

/* Park a page with no free block in the full list. Returns false when a
 * remote free raced in (the page then stays out of both lists: the caller
 * collects and uses it). */
static bool page_to_full(heap_t *heap, page_t *page) {
    queue_remove(heap, &heap->queues[page->class_idx], page);
    uintptr_t empty = 0;
    if (!atomic_compare_exchange_strong_explicit(&page->thread_free, &empty, TF_FULL,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return false;
    page->used |= PAGE_IN_FULL;
    queue_push_back(heap, &heap->full, page);
    return true;
}

static void page_from_full(heap_t *heap, page_t *page) {
    queue_remove(heap, &heap->full, page);
    page->used &= ~PAGE_IN_FULL;
    atomic_fetch_and_explicit(&page->thread_free, ~TF_FULL, memory_order_relaxed);
}

/* A page whose every block is back and which is not its class's current
 * page (that one holds the pin): give it to the arena. */
static void page_retire(heap_t *heap, page_t *page) {
    queue_remove(heap, &heap->queues[page->class_idx], page);
    cv_arena_page_free(page);
}

/* Remote frees reached pages in the full list: bring those pages back. */
static void rescue_full(heap_t *heap) {
    atomic_exchange_explicit(&heap->full_freed, false, memory_order_acq_rel);
    page_t *next;
    for (page_t *page = heap->full.first; page != NULL; page = next) {
        next = page->next;
        if ((atomic_load_explicit(&page->thread_free, memory_order_relaxed) & TF_PTR_MASK) == 0)
            continue;
        page_from_full(heap, page);
        cv_page_collect(page);
        queue_push_back(heap, &heap->queues[page->class_idx], page);
        if (page->used == 0)
            page_retire(heap, page);
    }
}

/* The owner freed into a page that is now empty or sits in the full list
 * (both tested by one compare in the fast path, see page_t.used). */
void cv_heap_free_local_slow(page_t *page) {
    heap_t *heap = atomic_load_explicit(&page->heap, memory_order_relaxed);
    if (page->used & PAGE_IN_FULL) {
        page_from_full(heap, page);
        queue_push_back(heap, &heap->queues[page->class_idx], page);
    }
    if (page->used == 0)
        page_retire(heap, page);
}

/* ---- remote frees ------------------------------------------------------- */

/* One CAS pushes the block and bumps the count; the flags in the word it
 * replaced say whether anyone must be told. */
void cv_heap_free_remote(page_t *page, block_t *b, const char *func) {
    if (unlikely(!cv_page_is_block(page, (uintptr_t)b)))
        cv_msg_fatal("invalid free", b, "not the start of a block", func);
    uintptr_t old = atomic_load_explicit(&page->thread_free, memory_order_relaxed);
    uintptr_t w;
    do {
        uintptr_t count = (old >> TF_COUNT_SHIFT) & TF_COUNT_MAX;
        count += count < TF_COUNT_MAX;
        b->next = (block_t *)(old & TF_PTR_MASK);
        w = (uintptr_t)b | (count << TF_COUNT_SHIFT) | (old & TF_FLAGS);
    } while (!atomic_compare_exchange_weak_explicit(&page->thread_free, &old, w,
                                                    memory_order_release, memory_order_relaxed));
    if (likely((old & TF_FLAGS) == 0))
        return;
    if (old & TF_ABANDONED) {
        cv_arena_free_abandoned(page);
    } else {
        /* The page sits in its owner's full list; it leaves it only when the
         * owner frees into it or sees this flag, and is freed only after the
         * owner collects this block, far later than this load in practice
         * (heaps themselves are never unmapped). */
        heap_t *heap = atomic_load_explicit(&page->heap, memory_order_acquire);
        if (heap != NULL) /* NULL: abandoned meanwhile, and collected then */
            atomic_store_explicit(&heap->full_freed, true, memory_order_release);
    }
}

/* ---- the allocation slow path ------------------------------------------- */

/* Make page the class's current page if it can give a block now. */
static bool page_ready(page_t *page) {
    cv_page_collect(page);
    if (page->free == NULL)
        cv_page_extend(page);
    return page->free != NULL;
}

static page_t *find_page(heap_t *heap, unsigned c) {
    if (unlikely(atomic_load_explicit(&heap->full_freed, memory_order_relaxed)))
        rescue_full(heap);
    page_queue_t *q = &heap->queues[c];
    page_t *page, *next;
    for (page = q->first; page != NULL; page = next) {
        next = page->next;
        if (page_ready(page)) {
            if (page != q->first) {
                queue_remove(heap, q, page);
                queue_push_front(heap, q, page);
            }
            return page;
        }
        if (!page_to_full(heap, page))
            goto raced;
    }
    /* Pages of exited threads first: their memory is already touched. */
    while ((page = cv_arena_adopt(c)) != NULL) {
        atomic_store_explicit(&page->heap, heap, memory_order_relaxed);
        atomic_store_explicit(&page->owner, heap->owner, memory_order_release);
        queue_push_front(heap, q, page);
        if (page_ready(page))
            return page;
        if (!page_to_full(heap, page))
            goto raced;
    }
    page = cv_arena_page_alloc(cv_class_slices[c]);
    if (page == NULL)
        return NULL;
    cv_page_init(page, c, heap);
    cv_page_extend(page);
    queue_push_front(heap, q, page);
    return page;

raced: /* a remote free reached the page as it went to the full list */
    cv_page_collect(page);
    queue_push_front(heap, q, page);
    return page;
}

void *cv_heap_alloc_slow(heap_t *heap, size_t size, bool zero) {
    if (unlikely(heap == &cv_heap_empty)) {
        heap = cv_heap_get_slow();
        if (heap == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        if (size <= SMALL_MAX)
            return cv_heap_alloc(heap, size, zero);
    }
    if (size > SMALL_MAX)
        return cv_large_alloc(size, 0, zero);
    page_t *page = find_page(heap, cv_size_class(size));
    if (unlikely(page == NULL)) {
        errno = ENOMEM;
        return NULL;
    }
    return cv_page_pop(page, zero);
}

/* ---- heap life cycle ---------------------------------------------------- */

heap_t *cv_heap_get_slow(void) {
    if (!cv_init())
        return NULL;
    /* cv_init may have allocated on this thread (pthread_atfork can). */
    heap_t *heap = cv_tl_heap;
    if (heap != &cv_heap_empty)
        return heap;
    cv_arena_lock();
    heap = heap_pool;
    if (heap != NULL)
        heap_pool = heap->next_free;
    cv_arena_unlock();
    if (heap == NULL) {
        heap = cv_arena_meta_alloc(sizeof(heap_t));
        if (heap == NULL)
            return NULL;
    }
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        heap->direct[c] = &cv_page_empty;
        heap->queues[c].first = heap->queues[c].last = NULL;
    }
    heap->full.first = heap->full.last = NULL;
    atomic_store_explicit(&heap->full_freed, false, memory_order_relaxed);
    heap->next_free = NULL;
    heap->owner = cv_thread_id();
    cv_tl_heap = heap;
    /* Keys below PTHREAD_KEY_2NDLEVEL_SIZE need no allocation in glibc; if
     * one ever does, it reaches this heap, already in place. */
    pthread_setspecific(cv_heap_key, heap);
    return heap;
}

/* Under the arena lock. Once TF_ABANDONED is set, a remote free takes the
 * arena lock to collect (cv_arena_free_abandoned); frees that came before
 * the flag are collected here. */
static void page_abandon_locked(page_t *page) {
    atomic_store_explicit(&page->owner, 0, memory_order_relaxed);
    atomic_store_explicit(&page->heap, NULL, memory_order_relaxed);
    uintptr_t w = atomic_load_explicit(&page->thread_free, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&page->thread_free, &w,
                                                  (w & ~TF_FULL) | TF_ABANDONED,
                                                  memory_order_acq_rel, memory_order_relaxed)) {
    }
    page->used &= ~PAGE_IN_FULL;
    page->next = page->prev = NULL;
    cv_page_collect(page);
    if (page->used == 0)
        cv_arena_page_free_locked(page);
    else
        cv_arena_abandon_locked(page);
}

static void abandon_list(page_t *page) {
    page_t *next;
    for (; page != NULL; page = next) {
        next = page->next;
        page_abandon_locked(page);
    }
}

/* malloc_trim: the calling thread's current pages that hold no live block
 * (kept only to avoid page churn) go back to the arena, to be purged. */
void cv_heap_trim(void) {
    heap_t *heap = cv_tl_heap;
    if (heap == &cv_heap_empty)
        return;
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        page_t *page = heap->direct[c];
        if (page == &cv_page_empty)
            continue;
        cv_page_collect(page);
        if (page->used == 1) { /* the pin alone */
            queue_remove(heap, &heap->queues[c], page);
            cv_arena_page_free(page);
        }
    }
}

/* pthread key destructor: the thread is exiting. */
void cv_heap_thread_done(void *arg) {
    heap_t *heap = arg;
    if (heap == NULL || heap == &cv_heap_empty)
        return;
    cv_arena_lock();
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        if (heap->direct[c] != &cv_page_empty)
            heap->direct[c]->used--; /* drop the pin */
        abandon_list(heap->queues[c].first);
    }
    abandon_list(heap->full.first);
    heap->next_free = heap_pool;
    heap_pool = heap;
    cv_arena_unlock();
    /* Frees after this point go the remote way; an allocation makes a new
     * heap and sets the key again, so this destructor runs once more. */
    cv_tl_heap = &cv_heap_empty;
}
