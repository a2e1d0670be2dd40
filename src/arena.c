/*
 * arena.c: the shared pool under the thread heaps.
 *
 * It owns the reservations, the chunks cut from them, the slices of each
 * chunk, the chunk map (the O(1) "is this pointer carve's" test), the pages
 * abandoned by exited threads, and the metadata (heap structures).
 *
 * One lock guards it all. Thread heaps come here once per page (64 KiB or
 * more), not per block, so the lock is taken rarely; a lock also keeps
 * fork() simple (taken in prepare, released in parent and child). A page
 * allocation looks only at the chunks that have a free slice (arena.avail),
 * not at the whole heap.
 */
#include "internal.h"
#include "bits.h"

/* One byte per 4 MiB of the 47-bit address space (32 MiB of .bss, touched
 * sparsely). Written under the arena lock, read without it. */
_Atomic uint8_t cv_chunk_map[MAP_SLOTS];

static struct {
    cv_lock_t lock;
    chunk_t *chunks;             /* every chunk, newest first */
    chunk_t *avail;              /* those with a free slice, newest first */
    uint64_t chunk_seq;          /* chunks made so far */
    uint8_t *reserve_cur, *reserve_end;
    page_queue_t abandoned[CLASS_COUNT];
    uint8_t *meta_cur, *meta_end;
    /* Free slices still resident (not purged), and the slices handed out in
     * this and the previous window of decay_ms: what recent demand says
     * could be needed again soon (see cv_arena_purge_excess). */
    size_t idle;
    size_t demand_cur, demand_prev;
    uint64_t window_ms;
} arena = {.lock = CV_LOCK_INIT};

void cv_arena_lock(void) {
    cv_lock_take(&arena.lock);
}

void cv_arena_unlock(void) {
    cv_lock_give(&arena.lock);
}

static void map_set(uintptr_t a, unsigned kind) {
    atomic_store_explicit(&cv_chunk_map[a >> CHUNK_SHIFT], (uint8_t)kind, memory_order_release);
}

void cv_arena_set_large(uintptr_t slot_addr, unsigned kind) {
    map_set(slot_addr, kind);
}

/* ---- chunks ------------------------------------------------------------- */

/* The list of chunks with a free slice keeps the age order of arena.chunks,
 * so that a page allocation chooses as it would scanning every chunk. A
 * chunk joins it when a slice of it is freed after it was full, near the
 * head in a heap that churns in its newest chunks. Without it, a page
 * allocation looked at every chunk under the lock, so a page cost more as
 * the heap grew: in a heap of gigabytes of small blocks that scan was most
 * of the time of freeing and reallocating them (figures: doc/design.md,
 * "Address space"; doc/measurements.md).
 * Keeping the order costs a walk of the newer chunks with a free slice
 * when an old chunk stops being full: in a heap where most chunks are
 * partly free that is as long as the old scan, but it comes once per full
 * chunk freed into, not per page allocated. */
static void avail_insert(chunk_t *chunk) {
    chunk_t *prev = NULL, *next = arena.avail;
    while (next != NULL && next->seq > chunk->seq) {
        prev = next;
        next = next->avail_next;
    }
    chunk->avail_prev = prev;
    chunk->avail_next = next;
    if (next != NULL)
        next->avail_prev = chunk;
    if (prev != NULL)
        prev->avail_next = chunk;
    else
        arena.avail = chunk;
}

static void avail_remove(chunk_t *chunk) {
    if (chunk->avail_prev != NULL)
        chunk->avail_prev->avail_next = chunk->avail_next;
    else
        arena.avail = chunk->avail_next;
    if (chunk->avail_next != NULL)
        chunk->avail_next->avail_prev = chunk->avail_prev;
    chunk->avail_next = chunk->avail_prev = NULL;
}

static chunk_t *chunk_new(void) {
    if (arena.reserve_cur == arena.reserve_end) {
        size_t size = RESERVE_SIZE;
        uint8_t *r = NULL;
        for (; size >= CHUNK_SIZE && r == NULL; size /= 2)
            r = cv_os_map_aligned(size, CHUNK_SIZE, true);
        if (r == NULL)
            return NULL;
        size *= 2; /* undo the loop's last halving */
        arena.reserve_cur = r;
        arena.reserve_end = r + size;
        cv_stats.reserved += size;
    }
    chunk_t *chunk = (chunk_t *)arena.reserve_cur;
    arena.reserve_cur += CHUNK_SIZE;
    /* Fresh mappings read as zero: the header needs no initialisation
     * beyond the header slice's bits. */
    chunk->slices_used = 1;
    chunk->slices_dirty = 1;
    chunk->slices_resident = 1;
    chunk->next = arena.chunks;
    arena.chunks = chunk;
    chunk->seq = ++arena.chunk_seq;
    avail_insert(chunk); /* the newest: at the head */
    if (++cv_stats.chunks > cv_stats.chunks_peak)
        cv_stats.chunks_peak = cv_stats.chunks;
    map_set((uintptr_t)chunk, MAP_SMALL);
    return chunk;
}

/* arena.idle changes under the lock; the purger reads it without (is
 * there anything to give back?), hence the atomic store. */
static void idle_add(ptrdiff_t slices) {
    CV_SET(arena.idle, arena.idle + (size_t)slices);
}

size_t cv_arena_idle_bytes(void) {
    return CV_PEEK(arena.idle) << SLICE_SHIFT;
}

/* Starts a new window of demand when decay_ms has passed (called where
 * slices change hands, with the arena lock held). */
static void demand_window(uint64_t now) {
    uint64_t window = cv_options.decay_ms ? cv_options.decay_ms : 1;
    if (now - arena.window_ms >= window) {
        arena.demand_prev = now - arena.window_ms < 2 * window ? arena.demand_cur : 0;
        arena.demand_cur = 0;
        arena.window_ms = now;
    }
}

/* When the heaps took POPULATE_DEMAND slices in the last one or two decay
 * windows, they are growing, and a page that its heap says will be filled
 * (dense) has its memory faulted in with one call rather than one fault
 * per 4 KiB page as it is carved. */
static void populate_runs(chunk_t *chunk, uint64_t slices) {
    for (unsigned first, n; slices; slices &= ~cv_bits_run_mask(first, n)) {
        n = cv_bits_next_run(slices, &first);
        cv_os_populate((uint8_t *)chunk + ((size_t)first << SLICE_SHIFT), (size_t)n << SLICE_SHIFT);
    }
}

page_t *cv_arena_page_alloc(size_t slices, bool dense, bool *grew) {
    unsigned n = (unsigned)slices;
    cv_arena_lock();
    /* Slices touched before first (resident, or purged lazily and perhaps
     * still in place): a fresh slice adds to RSS where an old one may not,
     * and an old one left idle only waits to be purged. Otherwise the first
     * run found, newest chunk first. */
    chunk_t *chunk, *fallback = NULL;
    unsigned first = 0, fallback_first = 0;
    for (chunk = arena.avail; chunk != NULL; chunk = chunk->avail_next) {
        if ((unsigned)__builtin_popcountll(~chunk->slices_used) < n)
            continue;
        first = cv_bits_find_run(chunk->slices_used | ~chunk->slices_dirty, n);
        if (first != 0)
            break;
        if (fallback == NULL && (fallback_first = cv_bits_find_run(chunk->slices_used, n)) != 0)
            fallback = chunk;
    }
    if (chunk == NULL && fallback != NULL) {
        chunk = fallback;
        first = fallback_first;
    }
    *grew = false;
    if (chunk == NULL) {
        chunk = chunk_new();
        if (chunk == NULL) {
            cv_arena_unlock();
            return NULL;
        }
        first = 1;
        *grew = true;
    }
    uint64_t mask = cv_bits_run_mask(first, n);
    idle_add(-(ptrdiff_t)__builtin_popcountll(chunk->slices_resident & mask));
    demand_window(cv_os_now_ms());
    arena.demand_cur += n;
    uint64_t populate = dense && arena.demand_cur + arena.demand_prev >= POPULATE_DEMAND
                            ? mask & ~chunk->slices_resident
                            : 0;
    chunk->slices_used |= mask;
    if (chunk->slices_used == ~(uint64_t)0)
        avail_remove(chunk);
    page_t *page = &chunk->pages[first];
    bool zero = (chunk->slices_dirty & mask) == 0;
    /* lazily freed slices taken back into use count as committed again */
    uint64_t was_lazy = chunk->slices_dirty & ~chunk->slices_resident & mask;
    cv_stat_sub(&cv_stats.small_lazy, (size_t)__builtin_popcountll(was_lazy) << SLICE_SHIFT);
    chunk->slices_dirty |= mask;
    uint64_t fresh = mask & ~chunk->slices_resident;
    cv_stat_add(&cv_stats.small_committed, (size_t)__builtin_popcountll(fresh) << SLICE_SHIFT);
    chunk->slices_resident |= mask;
    chunk->empty_since_ms = 0;
    cv_page_span_init(page, (uint8_t *)chunk + ((size_t)first << SLICE_SHIFT), n, zero);
    for (unsigned i = first; i < first + n; i++)
        chunk->slice_page[i] = (uint8_t)first;
    cv_arena_unlock();
    populate_runs(chunk, populate);
    return page;
}

void cv_arena_page_free_locked(page_t *page) {
    chunk_t *chunk = cv_chunk_of((uintptr_t)page);
    unsigned first = (unsigned)(page - chunk->pages);
    unsigned n = page->slice_count;
    uint64_t now = cv_os_now_ms();
    for (unsigned i = first; i < first + n; i++) {
        chunk->slice_page[i] = 0;
        chunk->slice_bin[i] = 0;
        chunk->slice_freed_ms[i] = now;
        chunk->slice_class[i] = page->class_idx;
    }
    /* before the slices can go to a page without a guard (a failure would
     * leave memory that faults: nothing can be done with it but say so) */
    if (unlikely(page->guarded)) {
        uint8_t *guard = cv_page_guard(page);
        if (!cv_os_protect(guard, CARVE_PAGE, true))
            cv_msg_fatal("mprotect failed", guard, "debug=guards page guard", "free");
    }
    if (chunk->slices_used == ~(uint64_t)0)
        avail_insert(chunk);
    chunk->slices_used &= ~cv_bits_run_mask(first, n);
    idle_add((ptrdiff_t)n); /* slices in use are always resident */
    demand_window(now);
    cv_page_reset(page);
}

/* Idle slices kept whatever the demand (IDLE_FLOOR), and how far past its
 * budget the idle memory may run before a pass (IDLE_STEP). */

static size_t idle_budget(void) {
    size_t demand = arena.demand_cur + arena.demand_prev;
    return demand > IDLE_FLOOR ? demand : IDLE_FLOOR;
}

static bool over_budget(void) {
    return arena.idle > idle_budget() + IDLE_STEP;
}

bool cv_arena_page_free(page_t *page) {
    cv_arena_lock();
    cv_arena_page_free_locked(page);
    bool excess = over_budget();
    cv_arena_unlock();
    return excess;
}

/* ---- abandoned pages ---------------------------------------------------- */
/* Pages of exited threads that still hold live blocks. They wait here until
 * a thread allocating the same class adopts them, or until remote frees
 * empty them (cv_arena_free_abandoned). Doubly linked for O(1) removal. */

void cv_arena_abandon_locked(page_t *page) {
    cv_page_set_abandoned(page, true);
    cv_page_queue_push_front(&arena.abandoned[page->class_idx], page);
}

/* debug: the adopting heap's; a debug heap takes only debug pages and a
 * release heap only release ones (their blocks are laid out differently;
 * both kinds meet only when debug mode is switched at run time). */
page_t *cv_arena_adopt(unsigned class_idx, bool debug) {
    /* a peek without the lock: most slow paths find none */
    if (CV_PEEK(arena.abandoned[class_idx].first) == NULL)
        return NULL;
    cv_arena_lock();
    page_t *page = arena.abandoned[class_idx].first;
    while (page != NULL && page->debug != debug)
        page = page->next;
    if (page != NULL) {
        cv_page_queue_remove(&arena.abandoned[class_idx], page);
        cv_page_set_abandoned(page, false);
    }
    cv_arena_unlock();
    return page;
}

/* A remote free landed in a page with no owner: collect its remote frees
 * and give the page back once nothing in it is live. */
bool cv_arena_free_abandoned(page_t *page) {
    bool excess = false;
    cv_arena_lock();
    /* The caller's blocks are pushed already: another thread may have
     * collected them and emptied the page, and if this thread stalled, the
     * chunk may be unmapped by now (its map slot is cleared under this
     * lock), or mapped anew, where the state says what the page is now. */
    if (cv_map_kind((uintptr_t)page) == MAP_SMALL && page->state == PAGE_ABANDONED) {
        cv_page_collect(page);
        if (page->used == 0) {
            cv_page_queue_remove(&arena.abandoned[page->class_idx], page);
            cv_arena_page_free_locked(page);
            excess = over_budget();
        }
    }
    cv_arena_unlock();
    return excess;
}

/* ---- metadata ----------------------------------------------------------- */
/* Heap structures come from here: never returned (heaps are pooled and
 * reused), so remote threads can always read a heap they once saw. */
void *cv_arena_meta_alloc(size_t size) {
    /* A heap holds page_t structures (aligned to 256, see types.h);
     * batches are kernel pages, so every piece keeps that alignment. */
    const size_t align = _Alignof(page_t);
    size = (size + align - 1) & ~(align - 1);
    cv_arena_lock();
    if ((size_t)(arena.meta_end - arena.meta_cur) < size) {
        size_t batch = size > SLICE_SIZE ? size : SLICE_SIZE;
        uint8_t *m = cv_os_map(batch);
        if (m == NULL) {
            cv_arena_unlock();
            return NULL;
        }
        arena.meta_cur = m;
        arena.meta_end = m + batch;
    }
    void *p = arena.meta_cur;
    arena.meta_cur += size;
    cv_arena_unlock();
    return p;
}

/* ---- purging ------------------------------------------------------------ */

/* The runs of a purge pass go to the kernel in batches (os.c), flushed
 * before the arena lock is let go: no slice is handed out while its purge
 * waits. A queued run is counted as lazily freed (MADV_FREE: no longer
 * resident, contents undefined); the runs that the flush reports as
 * zeroed (MADV_DONTNEED) then lose their dirty bits, so calloc need not
 * clear them. A purge that fails (locked memory) leaves them dirty. */
static void purge_flush(os_purge_batch_t *batch) {
    uint64_t zeroed = cv_os_purge_flush(batch);
    for (; zeroed; zeroed &= zeroed - 1) {
        uintptr_t a = (uintptr_t)batch->range[__builtin_ctzll(zeroed)].base;
        size_t len = batch->range[__builtin_ctzll(zeroed)].len;
        chunk_t *chunk = (chunk_t *)(a & ~(uintptr_t)(CHUNK_SIZE - 1));
        uint64_t mask = cv_bits_run_mask((unsigned)((a - (uintptr_t)chunk) >> SLICE_SHIFT),
                                 (unsigned)(len >> SLICE_SHIFT));
        uint64_t lazy = chunk->slices_dirty & ~chunk->slices_resident & mask;
        chunk->slices_dirty &= ~mask;
        cv_stat_sub(&cv_stats.small_lazy, (size_t)__builtin_popcountll(lazy) << SLICE_SHIFT);
    }
    batch->n = 0;
}

static void purge_run(os_purge_batch_t *batch, chunk_t *chunk, unsigned first, unsigned n) {
    uint64_t mask = cv_bits_run_mask(first, n);
    if (batch->n == OS_PURGE_BATCH)
        purge_flush(batch);
    cv_os_purge_add(batch, (uint8_t *)chunk + ((size_t)first << SLICE_SHIFT), (size_t)n << SLICE_SHIFT);
    uint64_t was_resident = chunk->slices_resident & mask;
    size_t slices = (size_t)__builtin_popcountll(was_resident), bytes = slices << SLICE_SHIFT;
    chunk->slices_resident &= ~mask;
    idle_add(-(ptrdiff_t)slices);
    cv_stat_add(&cv_stats.small_lazy, bytes);
    cv_stat_sub(&cv_stats.small_committed, bytes);
    cv_stats.small_purged += bytes;
    for (unsigned i = first; i < first + n; i++) {
        if (was_resident >> i & 1)
            cv_stats.class_purged[chunk->slice_class[i]] += SLICE_SIZE;
    }
}

static void purge_runs(os_purge_batch_t *batch, chunk_t *chunk, uint64_t slices) {
    for (unsigned first, n; slices; slices &= ~cv_bits_run_mask(first, n)) {
        n = cv_bits_next_run(slices, &first);
        purge_run(batch, chunk, first, n);
    }
}

/* A pass over the free slices, by the time since each was freed: at
 * decay_ms resident ones go lazily (MADV_FREE: no fault if reused before
 * the kernel takes them, but still counted in RSS), and at lazy_ms any
 * that is still dirty, lazy or resident, goes with MADV_DONTNEED, which
 * RSS shows at once. dontneed (purge=dontneed, cgroup pressure) skips the
 * lazy stage; lazy_ms UINT64_MAX never leaves it (purge=free).
 *
 * A chunk that has stayed wholly free and purged for CHUNK_UNMAP_MS is
 * unmapped, beyond CHUNKS_RETAINED kept for reuse: a chunk mapped and unmapped on
 * every swing of the program's footprint would pay for the faults each
 * time. (No thread reads a page descriptor of a chunk that may be
 * unmapped: a remote free reads what it needs before its push, see
 * push_remote, and cv_arena_free_abandoned checks the chunk map under this
 * lock.) */
size_t cv_arena_purge(uint64_t now, uint64_t decay_ms, uint64_t lazy_ms, bool dontneed) {
    cv_arena_lock();
    size_t before = cv_stats.small_purged;
    unsigned empty_kept = 0;
    os_purge_batch_t lazy_batch = {.n = 0, .dontneed = false};
    os_purge_batch_t drop_batch = {.n = 0, .dontneed = true};
    for (chunk_t **link = &arena.chunks; *link != NULL;) {
        chunk_t *chunk = *link;
        uint64_t to_lazy = 0, to_drop = 0;
        for (uint64_t free = chunk->slices_dirty & ~chunk->slices_used; free; free &= free - 1) {
            unsigned i = (unsigned)__builtin_ctzll(free);
            uint64_t freed = chunk->slice_freed_ms[i];
            uint64_t age = now > freed ? now - freed : 0; /* now may predate the lock */
            if (age < decay_ms)
                continue;
            if (dontneed || age >= lazy_ms)
                to_drop |= (uint64_t)1 << i;
            else
                to_lazy |= (uint64_t)1 << i & chunk->slices_resident;
        }
        purge_runs(&drop_batch, chunk, to_drop);
        purge_runs(&lazy_batch, chunk, to_lazy);
        bool empty = chunk->slices_used == 1 && chunk->slices_resident == 1;
        if (!empty) {
            chunk->empty_since_ms = 0;
        } else if (chunk->empty_since_ms == 0) {
            chunk->empty_since_ms = now;
        } else if (now > chunk->empty_since_ms && /* now may predate the lock */
                   now - chunk->empty_since_ms >= CHUNK_UNMAP_MS + 4 * decay_ms &&
                   empty_kept >= CHUNKS_RETAINED) {
            /* first: the batches may hold runs of this chunk, and a flush
             * takes the slices it zeroes out of small_lazy itself */
            purge_flush(&lazy_batch);
            purge_flush(&drop_batch);
            /* The slot is cleared before the unmap, so that no large block
             * mapped at this address meanwhile has its own slot cleared;
             * if the kernel refuses (the reservation's mapping would split
             * past vm.max_map_count), the chunk stays, whole and usable. */
            chunk_t *next = chunk->next; /* (the header goes with the unmap) */
            size_t lazy = (size_t)__builtin_popcountll(chunk->slices_dirty & ~chunk->slices_resident)
                          << SLICE_SHIFT;
            map_set((uintptr_t)chunk, MAP_NONE);
            avail_remove(chunk);
            if (!cv_os_unmap(chunk, CHUNK_SIZE)) {
                avail_insert(chunk);
                map_set((uintptr_t)chunk, MAP_SMALL);
                chunk->empty_since_ms = now; /* not again at every pass */
                empty_kept++;
                link = &chunk->next;
                continue;
            }
            *link = next;
            cv_stat_sub(&cv_stats.small_lazy, lazy);
            cv_stats.chunks--;
            cv_stats.chunks_unmapped++;
            continue;
        } else {
            empty_kept++;
        }
        link = &chunk->next;
    }
    purge_flush(&lazy_batch);
    purge_flush(&drop_batch);
    size_t purged = cv_stats.small_purged - before;
    cv_arena_unlock();
    return purged;
}

/* Free slices beyond what the program took from the arena in the last one
 * or two decay periods are not likely to be needed before they decay: a
 * heap that is shrinking (a program freeing most of what it built, then
 * going idle) would otherwise keep up to a decay period's worth of frees
 * resident through the pause, since nothing purges while it makes no call.
 * They go now, in whole chunks from the oldest ones (page allocation takes
 * the newest chunks first, so what stays resident is what is reused first).
 * A steady churn hands out as much as it frees, so its budget covers its
 * free slices and the decay alone governs them. */
size_t cv_arena_purge_excess(bool dontneed) {
    cv_arena_lock();
    size_t before = cv_stats.small_purged;
    size_t keep = idle_budget();
    os_purge_batch_t batch = {.n = 0, .dontneed = dontneed};
    for (chunk_t *chunk = arena.chunks; chunk != NULL; chunk = chunk->next) {
        uint64_t idle = chunk->slices_resident & ~chunk->slices_used;
        size_t n_idle = (size_t)__builtin_popcountll(idle);
        if (n_idle <= keep) {
            keep -= n_idle;
            continue;
        }
        keep = 0;
        purge_runs(&batch, chunk, idle);
    }
    purge_flush(&batch);
    size_t purged = cv_stats.small_purged - before;
    cv_arena_unlock();
    return purged;
}

/* malloc_trim: every free slice, now, with MADV_DONTNEED. */
bool cv_arena_trim(void) {
    return cv_arena_purge(cv_os_now_ms(), 0, 0, true) > 0;
}

/* ---- fork --------------------------------------------------------------- */
/* The child must find the lock free and the structures consistent: take the
 * lock before fork so that no thread is inside it at the moment of fork. */
void cv_arena_fork_prepare(void) {
    cv_arena_lock();
}

void cv_arena_fork_parent(void) {
    cv_arena_unlock();
}

/* The forking thread holds the lock in the child too: unlock it (a normal
 * mutex has no owner check; re-initialising a locked one is undefined). */
void cv_arena_fork_child(void) {
    cv_arena_unlock();
}

/* ---- statistics --------------------------------------------------------- */
const cv_lock_t *cv_arena_lock_stats(void) {
    return &arena.lock;
}

/* Under the lock: every page in use (free slices map to pages[0]), in
 * address order. visit may free the page it is given: the later slices of
 * its run then no longer start a page. */
void cv_arena_each_page_locked(void (*visit)(page_t *page, void *arg), void *arg) {
    for (chunk_t *chunk = arena.chunks; chunk != NULL; chunk = chunk->next) {
        for (unsigned i = 1; i < SLICES_PER_CHUNK; i++) {
            if (chunk->slice_page[i] == i)
                visit(&chunk->pages[i], arg);
        }
    }
}
