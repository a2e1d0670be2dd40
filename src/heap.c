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
 * and remote frees give them back once empty. The free paths and the bins
 * are in free.c.
 */
#include "internal.h"

/* The page that has nothing: every class of the empty heap points at it, so
 * that the fast path needs no "initialised?" test. */
page_t cv_page_empty;

heap_t cv_heap_empty = {
    .direct = {[0 ... CLASS_COUNT - 1] = &cv_page_empty},
};

CARVE_TLS heap_t *cv_tl_heap = &cv_heap_empty;
/* The thread's key destructor has run its last round: nothing will give a
 * heap back for this thread any more (see cv_heap_thread_done). */
CARVE_TLS bool cv_tl_exited;

extern pthread_key_t cv_heap_key;
static heap_t *heap_pool; /* under the arena lock */
static _Atomic(heap_t *) heap_all;  /* pushed under the arena lock, read without */

const heap_t *cv_heap_first(void) {
    return atomic_load_explicit(&heap_all, memory_order_acquire);
}

/* In a fork child (the arena lock held, so heap_all is whole): another
 * thread of the parent may have held any heap's lock at the fork (a
 * reclaiming free's trylock, free.c), and a pooled heap is taken again
 * in the child. The forking thread's own, taken before the fork, is
 * given back by fork.c. */
void cv_heap_fork_child(void) {
    for (heap_t *h = atomic_load_explicit(&heap_all, memory_order_relaxed); h != NULL;
         h = h->next_all)
        if (h != cv_tl_heap)
            h->lock.mutex = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
}

/* ---- page queues -------------------------------------------------------- */

/* Keep current[c] on the queue's first page, and move the pin (one extra
 * count in used, see page_t) with it. A page that loses the pin is empty
 * only when retire_idle gives it back (its caller frees it next); otherwise
 * it is leaving for the full list, with blocks in use. direct[c] follows. */
static void direct_update(heap_t *heap, page_queue_t *q) {
    if (q == &heap->full)
        return;
    unsigned c = (unsigned)(q - heap->queues);
    page_t *old = heap->current[c];
    page_t *now = q->first ? q->first : &cv_page_empty;
    if (old != now) {
        if (old != &cv_page_empty)
            cv_page_pin(old, -1);
        if (now != &cv_page_empty)
            cv_page_pin(now, 1);
        CV_SET(heap->current[c], now);
    }
    heap->direct[c] = now;
}

static void queue_remove(heap_t *heap, page_queue_t *q, page_t *page) {
    cv_page_queue_remove(q, page);
    direct_update(heap, q);
}

static void queue_push_front(heap_t *heap, page_queue_t *q, page_t *page) {
    cv_page_queue_push_front(q, page);
    direct_update(heap, q);
}

static page_t *queue_to_front(heap_t *heap, page_queue_t *q, page_t *page) {
    if (page != q->first) {
        queue_remove(heap, q, page);
        queue_push_front(heap, q, page);
    }
    return page;
}

static void queue_push_back(heap_t *heap, page_queue_t *q, page_t *page) {
    cv_page_queue_push_back(q, page);
    direct_update(heap, q);
}

/* ---- full pages --------------------------------------------------------- */

/* Park a page with no free block in the full list. Returns false when a
 * remote free raced in (the page then stays out of both lists: the caller
 * collects and uses it). */
static bool page_to_full(heap_t *heap, page_t *page) {
    queue_remove(heap, &heap->queues[page->class_idx], page);
    if (!cv_page_mark_full(page))
        return false;
    queue_push_back(heap, &heap->full, page);
    return true;
}

static void page_from_full(heap_t *heap, page_t *page) {
    queue_remove(heap, &heap->full, page);
    cv_page_unmark_full(page);
}

/* A page back to the arena, and the purge policy told: the excess over
 * recent demand goes now, what has decayed when a pass is due. */
static void page_to_arena(page_t *page) {
    if (cv_arena_page_free(page))
        cv_purge_excess();
    cv_purge_tick();
}

/* A page whose every block is back: give it to the arena. A current page
 * comes here only from retire_idle (it holds the pin until then). */
static void page_retire(heap_t *heap, page_t *page) {
    queue_remove(heap, &heap->queues[page->class_idx], page);
    page_to_arena(page);
}

/* Spare pages. A page of one block (classes from 40 KiB up) empties at
 * every free of its block, so a thread that holds a few such blocks at a
 * time took the arena lock for each malloc and each free of them: with 2
 * threads each keeping a window of such blocks, the lock was contended and
 * a malloc/free cost far more than with pages of several blocks (figures:
 * doc/design.md, "Size classes"). Up to SPARE_BYTES of such empty pages
 * (all classes together, per heap) stay in their queues, where find_page
 * takes them before going to the arena, and retire_idle gives back those
 * of a class that had spares at two checks in a row. A spare is a queued
 * page with used 0 (the current page holds the pin); the queue of a
 * one-block class holds its current page and its spares only (the others
 * are full), so counting them is a short walk. */

static bool one_block_class(unsigned c) {
    return cv_class_size[c] > SLICE_SIZE / 2;
}

static size_t spare_bytes(const heap_t *heap, unsigned c) {
    size_t bytes = 0;
    for (const page_t *p = heap->queues[c].first; p != NULL; p = p->next)
        if (p->used == 0)
            bytes += (size_t)p->slice_count << SLICE_SHIFT;
    return bytes;
}

/* page, in its queue and empty: keep it as a spare? */
static bool keep_spare(const heap_t *heap, const page_t *page) {
    if (!one_block_class(page->class_idx) || page->debug)
        return false;
    size_t bytes = 0;
    for (unsigned c = CLASS_COUNT; c-- > 0 && one_block_class(c);)
        bytes += spare_bytes(heap, c);
    return bytes <= SPARE_BYTES;
}

static void retire_spares(heap_t *heap, unsigned c) {
    page_t *next;
    for (page_t *p = heap->queues[c].first; p != NULL; p = next) {
        next = p->next;
        if (p->used == 0)
            page_retire(heap, p);
    }
}

/* Idle current pages. A class's current page keeps its pin when it empties,
 * so that a loop of malloc and free on one class does not send the page to
 * the arena and back at every turn. But a thread that stops using a class
 * would then keep that page, touched, until it exits: up to 64 KiB (256 KiB
 * for the biggest classes) per class it ever used, in every thread of a
 * long-lived pool, and a buffer grown by realloc passes through dozens of
 * classes. So every IDLE_CHECK-th slow path looks at the current pages (and
 * the spares), and those found empty by this check and the one before go
 * back to the arena, where any class and thread reuses them.
 *
 * A class whose page went back here does not move the checks on when it
 * comes back for a page. Without that, the checks fed themselves: a class
 * used one block at a time is empty at every check, and with more than 32
 * such classes taking turns, the pages they took again were the slow paths
 * that brought the next check, so every malloc of theirs became a trip to
 * the arena, dozens of times the cost of a fast-path malloc/free pair. The
 * price: on realloc_growth (4 threads), whose buffers pass through 45
 * classes, the peak is a little higher than with self-feeding checks, which
 * retire much faster, and lower than with a cap of pages per check (figures:
 * doc/design.md, "Departures from the design brief"; doc/measurements.md).
 * The fast paths do not change, and a loop on one class never comes here.
 * skip is the class the slow path is looking for blocks of. */
_Static_assert(CLASS_COUNT <= 64, "one bit of idle_current per class");
static void retire_idle(heap_t *heap, unsigned skip) {
    uint64_t skip_bit = (uint64_t)1 << skip;
    if (heap->idle_gone & skip_bit) { /* back after a retirement */
        heap->idle_gone &= ~skip_bit;
        return;
    }
    if (++heap->slow_calls % IDLE_CHECK != 0)
        return;
    uint64_t was = heap->idle_current, now = 0;
    uint64_t spares_was = heap->idle_spares, spares_now = 0;
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        uint64_t bit = (uint64_t)1 << c;
        if (c == skip)
            continue;
        /* A bin that holds blocks is in use if it moved since the last
         * check; if not, its blocks go back, and the class's page is
         * looked at as any other. */
        bin_t *bin = &heap->bins[c + 1];
        if (bin->count != 0) {
            if (bin->count != bin->seen) {
                bin->seen = bin->count;
                continue;
            }
            cv_heap_bin_empty(heap, bin);
            bin->seen = 0;
        }
        if (one_block_class(c) && !heap->debug && spare_bytes(heap, c) != 0) {
            if (spares_was & bit) {
                retire_spares(heap, c);
                heap->idle_gone |= bit;
            } else {
                spares_now |= bit;
            }
        }
        page_t *page = heap->current[c];
        if (page == &cv_page_empty || page->used != 1) /* 1: the pin alone */
            continue;
        /* A class used one block at a time is empty at every check too. To
         * tell it from one left idle, the first check takes the page off
         * the fast path; the class's next malloc puts it back in
         * cv_heap_alloc_slow, without find_page (no arena trip, no count
         * towards the checks), and the second check retires the page only
         * if nothing did. */
        if ((was & bit) && heap->direct[c] == &cv_page_empty) {
            page_retire(heap, page); /* the pin moves on, to the next page or none */
            heap->idle_gone |= bit;
        } else {
            now |= bit;
            if (heap->direct[c] == page)
                heap->direct[c] = &cv_page_empty;
        }
    }
    heap->idle_current = now;
    heap->idle_spares = spares_now;
}

/* Remote frees reached pages in the full list: bring those pages back. */
static void rescue_full(heap_t *heap) {
    atomic_exchange_explicit(&heap->full_freed, false, memory_order_acq_rel);
    page_t *next;
    for (page_t *page = heap->full.first; page != NULL; page = next) {
        next = page->next;
        /* (free blocks without remote ones: a reclaiming free collected
         * them and found the page not empty after all, free.c) */
        if ((atomic_load_explicit(&page->thread_free, memory_order_relaxed) & TF_PTR_MASK) == 0 &&
            page->free == NULL)
            continue;
        page_from_full(heap, page);
        cv_page_collect(page);
        queue_push_back(heap, &heap->queues[page->class_idx], page);
        cv_heap_page_emptied(heap, page);
    }
}

/* For free.c: a page that left the full list goes back to its class's
 * queue, and one whose every block is back retires unless kept as a
 * spare. */
void cv_heap_page_unfull(heap_t *heap, page_t *page) {
    page_from_full(heap, page);
    queue_push_back(heap, &heap->queues[page->class_idx], page);
}

/* Another thread's free is about to empty page, of heap, whose lock it
 * holds (free.c, reclaim): its remote frees collected, the page leaves the
 * heap when nothing in it is live, and the caller gives it to the arena
 * (cv_heap_page_to_arena) once it let go of the lock. The current page is
 * the owner's fast path's and stays; so do the heap's pointers to it. */
bool cv_heap_page_reclaim(heap_t *heap, page_t *page) {
    unsigned c = page->class_idx;
    if (page == heap->current[c] || page->state != PAGE_OWNED)
        return false;
    cv_page_collect(page);
    if ((page->used & ~PAGE_IN_FULL) != 0)
        return false;
    if (page->used & PAGE_IN_FULL) {
        cv_page_queue_remove(&heap->full, page);
        cv_page_unmark_full(page);
    } else {
        cv_page_queue_remove(&heap->queues[c], page); /* not first: current stays */
    }
    return true;
}

void cv_heap_page_to_arena(page_t *page) {
    page_to_arena(page);
}

void cv_heap_page_emptied(heap_t *heap, page_t *page) {
    if (page->used == 0 && !keep_spare(heap, page))
        page_retire(heap, page);
}

/* ---- the allocation slow path ------------------------------------------- */

/* Make page the class's current page if it can give a block now. */
static bool page_ready(page_t *page) {
    cv_page_collect(page);
    if (page->free == NULL)
        cv_page_extend(page);
    return page->free != NULL;
}

/* Slices for a new page of class c. debug=guards takes the last 4 KiB of
 * each page of a debug heap, and page.c counts on at least 3 blocks being
 * left: the one-slice pages of classes up to 64 KiB would keep 2 or fewer
 * (none at 64 KiB), so debug pages of those classes are made bigger. */
static size_t page_slices(const heap_t *heap, unsigned c) {
    size_t n = cv_class_slices[c];
    if (unlikely(heap->debug)) {
        size_t need = (3 * (size_t)cv_class_size[c] + CARVE_PAGE + SLICE_SIZE - 1) >> SLICE_SHIFT;
        if (n < need)
            n = need;
    }
    return n;
}

/* The current page of class c ran dry. Blocks that are back on any page of
 * the queue go before carving new ones: taking the first page that could
 * give a block, by extending it if need be, touched fresh memory in the
 * current page while pages behind it held freed blocks, and every page of a
 * class whose live count swings around a page's worth ended up carved
 * whole, fresh memory touched where freed blocks could have served
 * (figures: doc/design.md, "Size classes"). Pages still being carved are
 * few (a new page is taken only when no page of the queue can give a
 * block), so the walk costs what it did. */
static page_t *find_page(heap_t *heap, unsigned c) {
    if (unlikely(atomic_load_explicit(&heap->full_freed, memory_order_relaxed)))
        rescue_full(heap);
    retire_idle(heap, c);
    page_queue_t *q = &heap->queues[c];
    page_t *page, *next, *carving = NULL;
    for (page = q->first; page != NULL; page = next) {
        next = page->next;
        cv_page_collect(page);
        if (page->free != NULL)
            return queue_to_front(heap, q, page);
        if (page->capacity < page->reserved) {
            if (carving == NULL)
                carving = page;
        } else if (!page_to_full(heap, page)) {
            goto raced;
        }
    }
    /* Pages of exited threads before fresh blocks of a page of our own:
     * their memory is touched already, and a thread that kept carving its
     * own pages while its predecessors' pages waited half empty grew by a
     * page per class at every thread that came and went (a server pool's
     * threads inherit what their predecessors allocated). */
    while ((page = cv_arena_adopt(c, heap->debug)) != NULL) {
        cv_page_set_owner(page, heap);
        queue_push_front(heap, q, page);
        if (page_ready(page))
            return page;
        if (!page_to_full(heap, page))
            goto raced;
    }
    if (carving != NULL) {
        cv_page_extend(carving);
        return queue_to_front(heap, q, carving);
    }
    /* Faulted in at once (cv_arena_page_alloc) when the heap will fill it:
     * it filled two pages of the class already, and its blocks are of a
     * 4 KiB page or less, so that every kernel page of it is written as it
     * is carved (bigger blocks may be written sparsely). A class with a
     * few blocks in each of many threads keeps faulting in what it touches. */
    bool dense = heap->pages_taken[c] >= 2 && cv_class_size[c] <= CARVE_PAGE && !heap->debug;
    if (heap->pages_taken[c] < UINT8_MAX)
        heap->pages_taken[c]++;
    bool grew;
    page = cv_arena_page_alloc(page_slices(heap, c), dense, &grew);
    if (grew) /* growing: near a memory limit, free memory must go first */
        cv_purge_tick();
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

/* A small allocation by a thread whose key destructor has run: from a
 * heap that goes straight back (its page is then abandoned, holding the
 * block, and adopted or freed like any other). Slow, and only for what
 * other libraries' thread-exit code allocates after carve's destructor. */
static CARVE_NOINLINE void *alloc_exited(size_t size, bool zero) {
    heap_t *heap = cv_heap_get_slow();
    if (heap == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = cv_heap_alloc(heap, size, zero);
    cv_heap_release(heap);
    return p;
}

void *cv_heap_alloc_slow(heap_t *heap, size_t size, bool zero) {
    if (size > SMALL_MAX) { /* no heap needed (cv_init: the first call may be this one) */
        if (likely(cv_init())) {
            cv_purge_tick(); /* new memory: let decayed memory go first */
            return cv_large_alloc(size, 0, zero);
        }
        errno = ENOMEM;
        return NULL;
    }
    if (unlikely(heap == &cv_heap_empty)) {
        if (unlikely(cv_tl_exited))
            return alloc_exited(size, zero);
        heap = cv_heap_get_slow();
        if (heap == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        return cv_heap_alloc(heap, size, zero);
    }
    unsigned c = cv_size_class(size);
    /* Every caller's fast path popped the bin first: the bin is empty
     * (malloc), or the page ran dry (calloc), or
     * retire_idle took the current page off the fast path and it may still
     * have blocks. */
    cv_heap_lock(heap);
    page_t *page = heap->direct[c] = heap->current[c];
    if (page->free == NULL)
        page = find_page(heap, c);
    void *p = NULL;
    if (likely(page != NULL))
        p = cv_page_pop(page, zero);
    cv_heap_unlock(heap);
    if (unlikely(p == NULL))
        errno = ENOMEM;
    return p;
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
        heap->lock = (cv_lock_t)CV_LOCK_INIT; /* never again: see heap_t.lock */
        cv_heap_bins_init(heap);
        cv_arena_lock();
        heap->next_all = atomic_load_explicit(&heap_all, memory_order_relaxed);
        atomic_store_explicit(&heap_all, heap, memory_order_release);
        cv_arena_unlock();
    }
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        heap->direct[c] = &cv_page_empty;
        CV_SET(heap->current[c], &cv_page_empty);
        heap->queues[c].first = heap->queues[c].last = NULL;
    }
    cv_heap_bins_reset(heap); /* a debug heap had none */
    heap->full.first = heap->full.last = NULL;
    atomic_store_explicit(&heap->full_freed, false, memory_order_relaxed);
    heap->slow_calls = 0;
    heap->idle_current = heap->idle_spares = heap->idle_gone = 0;
    memset(heap->pages_taken, 0, sizeof heap->pages_taken);
    heap->next_free = NULL;
    heap->debug = false; /* a pooled heap may have served debug mode */
    heap->owner = cv_thread_id();
    cv_tl_heap = heap;
    /* Keys below PTHREAD_KEY_2NDLEVEL_SIZE need no allocation in glibc; if
     * one ever does, it reaches this heap, already in place. Past the last
     * destructor round the key would never be read again: the caller gives
     * the heap back itself. */
    if (!cv_tl_exited)
        pthread_setspecific(cv_heap_key, heap);
    return heap;
}

/* Under the arena lock: a page of an exiting heap, with what remote frees
 * brought in so far collected (cv_page_abandon), back to the arena when
 * that emptied it, else filed as abandoned. */
void cv_heap_abandon_locked(page_t *page) {
    cv_page_abandon(page);
    if (page->used == 0)
        cv_arena_page_free_locked(page);
    else
        cv_arena_abandon_locked(page);
}

static void abandon_list(page_t *page) {
    page_t *next;
    for (; page != NULL; page = next) {
        next = page->next;
        cv_heap_abandon_locked(page);
    }
}

/* malloc_trim: the calling thread's current pages that hold no live block
 * (kept only to avoid page churn) go back to the arena, to be purged. */
void cv_heap_trim(void) {
    heap_t *heap = cv_tl_heap;
    if (heap == &cv_heap_empty)
        return;
    cv_heap_lock(heap);
    cv_heap_bins_empty(heap);
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        page_t *page = heap->current[c];
        if (page == &cv_page_empty)
            continue;
        retire_spares(heap, c); /* first: none may take the pin below */
        cv_page_collect(page);
        if (page->used == 1) { /* the pin alone */
            queue_remove(heap, &heap->queues[c], page);
            page_to_arena(page);
        }
    }
    cv_heap_unlock(heap);
}

/* pthread key destructor: the thread is exiting. Other keys' destructors
 * may still allocate, after this one and in up to
 * PTHREAD_DESTRUCTOR_ITERATIONS rounds in all. A heap made for them would
 * set the key again and be given back in the next round, but never if
 * that was the last: its pages, and every block freed into them, lost. So
 * from here on the thread allocates through heaps given back at once
 * (alloc_exited). (Keeping this heap for later rounds, by setting the key
 * again, cannot work: a heap made during the rounds cannot tell which
 * round it is in, and sanitizer runtimes tear down their thread state in
 * the last round, before carve's destructor would run.) A thread whose
 * first allocation comes from another key's destructor in the very last
 * round still leaves its heap behind: nothing tells carve that the thread
 * is exiting before its own destructor runs. */
void cv_heap_thread_done(void *arg) {
    heap_t *heap = arg;
    if (heap == NULL || heap == &cv_heap_empty)
        return;
    cv_tl_exited = true;
    cv_heap_release(heap);
}

/* The heap's pages go to the arena (abandoned while they hold live
 * blocks), and the heap to the pool. errno is kept: an allocation made
 * through a heap given back at once (alloc_exited, debug.c) succeeded. */
void cv_heap_release(heap_t *heap) {
    int saved = errno;
    cv_heap_lock(heap);
    /* before the arena lock: a block of an abandoned page takes it */
    cv_heap_bins_empty(heap);
    cv_arena_lock();
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        if (heap->current[c] != &cv_page_empty)
            cv_page_pin(heap->current[c], -1); /* drop the pin */
        abandon_list(heap->queues[c].first);
    }
    abandon_list(heap->full.first);
    heap->next_free = heap_pool;
    heap_pool = heap;
    cv_arena_unlock();
    cv_heap_unlock(heap);
    /* Frees after this point go the remote way. */
    cv_tl_heap = &cv_heap_empty;
    errno = saved;
}
