/*
 * large.c: blocks above SMALL_MAX, each in its own mapping.
 *
 * The mapping starts on a chunk boundary with a 64-byte header, so the
 * chunk map answers "is this a large block" for the user pointer's slot and
 * the header sits at a known place: the slot base (MAP_LARGE), or one chunk
 * lower for alignments of a chunk or more, where the user pointer is itself
 * on a slot boundary (MAP_LARGE_PREV).
 *
 *   [lead: padding for alignment >= CHUNK][header|....user block....]
 *
 * realloc resizes the mapping with mremap: in place when the address space
 * after it is free, otherwise by moving its pages (never its bytes) to a new
 * chunk-aligned place.
 */
#define _GNU_SOURCE
#include "internal.h"

/* Large mappings from this size get MADV_HUGEPAGE: they are chunk-aligned,
 * so every whole 2 MiB of them can be a huge page. Measured on the large
 * workload (random 256 KiB..32 MiB blocks, memset): see doc/design.md. */
#define THP_MIN ((size_t)2 << 20)

static size_t page_round(size_t n) {
    return (n + CARVE_PAGE - 1) & ~(size_t)(CARVE_PAGE - 1);
}

/* Where the user pointer's slot says the header is. */
static unsigned kind_for(size_t offset) {
    return offset < CHUNK_SIZE ? MAP_LARGE : MAP_LARGE_PREV;
}

static size_t map_align(const large_t *h) {
    return h->lead ? h->lead + CHUNK_SIZE : CHUNK_SIZE;
}

/* ---- the cache of freed mappings ---------------------------------------- */
/* A program that allocates big buffers in a loop would otherwise pay mmap,
 * munmap and a page fault per 4 KiB every time: glibc is several times
 * faster than jemalloc on such loops because it reuses such memory. Freed
 * mappings (without alignment padding) wait here, bounded in count, bytes
 * and age (cv_large_purge unmaps those older than the decay). A request
 * takes the smallest entry that fits with at most a quarter to spare, or
 * else the smallest bigger one, cut down in place: its head is already
 * faulted in. Entries up to 64 MiB cover glibc's own reuse range (its mmap
 * threshold tops out at 32 MiB). */
#define CACHE_SLOTS 32
#define CACHE_MAX_BYTES ((size_t)128 << 20)
#define CACHE_MAX_ENTRY ((size_t)64 << 20)

static struct {
    pthread_mutex_t lock;
    large_t *slot[CACHE_SLOTS];
    size_t bytes;
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void cache_account(size_t add, size_t sub) {
    atomic_fetch_add_explicit(&cv_stats.large_cached, add - sub, memory_order_relaxed);
}

static bool cache_put(large_t *h);

/* Moves the pages of [p, p + size) to a fresh chunk-aligned place (page
 * tables move, no byte is copied or faulted) and returns it as a cache
 * entry; NULL when that cannot be done. */
static large_t *relocate(uint8_t *p, size_t size) {
    uint8_t *dest = cv_os_map_aligned(size, CHUNK_SIZE);
    if (dest == NULL)
        return NULL;
    if (!cv_os_remap_to(p, size, size, dest)) {
        cv_os_unmap(dest, size);
        return NULL;
    }
    large_t *h = (large_t *)dest;
    h->magic = 0;
    h->size = h->map_size = size;
    h->offset = LARGE_HEADER;
    h->lead = 0;
    return h;
}

/* The mapping that best serves map_size bytes: the smallest entry that
 * fits and is at most 4 times too big, taken whole (its pages are already
 * faulted in, and it held them in the cache anyway); else the smallest
 * bigger one, whose tail is moved away and cached again; else the biggest
 * smaller one, grown (its pages are kept and only the rest faults in).
 * Page faults are what large blocks cost (a VM makes each one dearer): on
 * the large workload (random 256 KiB..32 MiB blocks, memset, 2 threads)
 * this took carve from 235k faults to 72k (glibc 58k, jemalloc 255k). */
static large_t *cache_take(size_t map_size) {
    /* a peek without the lock: a miss only costs a fresh mapping */
    if (atomic_load_explicit(&cv_stats.large_cached, memory_order_relaxed) == 0)
        return NULL;
    large_t *fit = NULL, *bigger = NULL, *smaller = NULL;
    unsigned fit_i = 0, bigger_i = 0, smaller_i = 0;
    pthread_mutex_lock(&cache.lock);
    for (unsigned i = 0; i < CACHE_SLOTS; i++) {
        large_t *h = cache.slot[i];
        if (h == NULL)
            continue;
        if (h->map_size < map_size) {
            if (smaller == NULL || h->map_size > smaller->map_size) {
                smaller = h;
                smaller_i = i;
            }
        } else if (map_size >= h->map_size / 4) {
            if (fit == NULL || h->map_size < fit->map_size) {
                fit = h;
                fit_i = i;
            }
        } else if (bigger == NULL || h->map_size < bigger->map_size) {
            bigger = h;
            bigger_i = i;
        }
    }
    large_t *h = fit ? fit : bigger ? bigger : smaller;
    unsigned hi = fit ? fit_i : bigger ? bigger_i : smaller_i;
    if (h != NULL) {
        cache.slot[hi] = NULL;
        cache.bytes -= h->map_size;
        cache_account(0, h->map_size);
    }
    pthread_mutex_unlock(&cache.lock);
    if (h == NULL || h == fit)
        return h;
    if (h == bigger) {
        large_t *tail = relocate((uint8_t *)h + map_size, h->map_size - map_size);
        if (tail != NULL) {
            h->map_size = map_size;
            if (!cache_put(tail))
                cv_os_unmap(tail, tail->map_size);
        } else if (cv_os_remap_inplace(h, h->map_size, map_size)) {
            h->map_size = map_size;
        }
        return h;
    }
    /* smaller: grow in place, or move the pages to a place with room */
    if (cv_os_remap_inplace(h, h->map_size, map_size)) {
        h->map_size = map_size;
        return h;
    }
    uint8_t *dest = cv_os_map_aligned(map_size, CHUNK_SIZE);
    if (dest != NULL && cv_os_remap_to(h, h->map_size, map_size, dest)) {
        h = (large_t *)dest;
        h->map_size = map_size;
        return h;
    }
    if (dest != NULL)
        cv_os_unmap(dest, map_size);
    cv_os_unmap(h, h->map_size);
    return NULL;
}

/* Keeps h (returns true) or leaves it to the caller to unmap. When full,
 * the biggest entry makes room for a smaller one, so the cache drifts
 * toward the sizes in use. */
static bool cache_put(large_t *h) {
    if (cv_options.decay_ms == 0 && cv_options.purge != PURGE_NONE)
        return false; /* purge at once: nothing waits */
    if (h->lead != 0 || h->map_size > CACHE_MAX_ENTRY || cv_purge_pressure())
        return false;
    h->freed_ms = cv_os_now_ms();
    large_t *evict = NULL;
    bool kept = false;
    pthread_mutex_lock(&cache.lock);
    for (unsigned i = 0; i < CACHE_SLOTS && !kept; i++) {
        if (cache.slot[i] == NULL && cache.bytes + h->map_size <= CACHE_MAX_BYTES) {
            cache.slot[i] = h;
            kept = true;
        }
    }
    if (!kept) {
        unsigned big = 0;
        for (unsigned i = 1; i < CACHE_SLOTS; i++) {
            if (cache.slot[i] && (!cache.slot[big] || cache.slot[i]->map_size > cache.slot[big]->map_size))
                big = i;
        }
        evict = cache.slot[big];
        if (evict != NULL && evict->map_size > h->map_size &&
            cache.bytes - evict->map_size + h->map_size <= CACHE_MAX_BYTES) {
            cache.slot[big] = h;
            cache.bytes -= evict->map_size;
            cache_account(0, evict->map_size);
            kept = true;
        } else {
            evict = NULL;
        }
    }
    if (kept) {
        cache.bytes += h->map_size;
        cache_account(h->map_size, 0);
    }
    pthread_mutex_unlock(&cache.lock);
    if (evict != NULL)
        cv_os_unmap(evict, evict->map_size);
    return kept;
}

/* Unmaps the entries cached for at least decay_ms; returns bytes given back. */
size_t cv_large_purge(uint64_t now, uint64_t decay_ms) {
    if (atomic_load_explicit(&cv_stats.large_cached, memory_order_relaxed) == 0)
        return 0;
    large_t *old[CACHE_SLOTS];
    unsigned n = 0;
    size_t bytes = 0;
    pthread_mutex_lock(&cache.lock);
    for (unsigned i = 0; i < CACHE_SLOTS; i++) {
        large_t *h = cache.slot[i];
        if (h != NULL && h->freed_ms + decay_ms <= now) {
            old[n++] = h;
            cache.slot[i] = NULL;
            cache.bytes -= h->map_size;
            bytes += h->map_size;
        }
    }
    pthread_mutex_unlock(&cache.lock);
    cache_account(0, bytes);
    atomic_fetch_add_explicit(&cv_stats.large_purged, bytes, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++)
        cv_os_unmap(old[i], old[i]->map_size);
    return bytes;
}

void cv_large_fork_prepare(void) {
    pthread_mutex_lock(&cache.lock);
}

void cv_large_fork_parent(void) {
    pthread_mutex_unlock(&cache.lock);
}

void cv_large_fork_child(void) {
    pthread_mutex_unlock(&cache.lock);
}

bool cv_large_trim(void) {
    return cv_large_purge(UINT64_MAX / 2, 0) > 0;
}

void *cv_large_alloc(size_t size, size_t align, bool zero) {
    size_t offset, lead, malign;
    if (align < CHUNK_SIZE) {
        offset = align > LARGE_HEADER ? align : LARGE_HEADER;
        lead = 0;
        malign = CHUNK_SIZE;
    } else {
        offset = CHUNK_SIZE;
        lead = align - CHUNK_SIZE;
        malign = align;
    }
    if (size > PTRDIFF_MAX - offset - lead - CARVE_PAGE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t block = page_round(offset + size);
    size_t map_size = block;
    large_t *h = lead == 0 ? cache_take(map_size) : NULL;
    if (h != NULL) {
        map_size = h->map_size;
        if (zero) /* fresh mappings read as zero; a reused one does not */
            memset(h, 0, block);
    } else {
        cv_purge_tick(); /* new memory: let decayed memory go first */
        uint8_t *base = cv_os_map_aligned(lead + map_size, malign);
        if (base == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        h = (large_t *)(base + lead);
        if (map_size >= THP_MIN)
            cv_os_hugepage(h, map_size);
    }
    h->magic = LARGE_MAGIC;
    h->size = block;
    h->map_size = map_size;
    h->offset = offset;
    h->lead = lead;
    uintptr_t user = (uintptr_t)h + offset;
    cv_arena_set_large(user, kind_for(offset));
    atomic_fetch_add_explicit(&cv_stats.large_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&cv_stats.large_bytes, map_size, memory_order_relaxed);
    atomic_fetch_add_explicit(&cv_stats.large_total, 1, memory_order_relaxed);
    return (void *)user;
}

large_t *cv_large_header(uintptr_t a, unsigned kind) {
    uintptr_t slot = a & ~(uintptr_t)CHUNK_MASK;
    large_t *h = (large_t *)(kind == MAP_LARGE_PREV ? slot - CHUNK_SIZE : slot);
    if (h->magic != LARGE_MAGIC || (uintptr_t)h + h->offset != a)
        return NULL;
    return h;
}

void cv_large_free(large_t *h) {
    cv_arena_set_large((uintptr_t)h + h->offset, MAP_NONE);
    h->magic = 0; /* a second free of this address finds no header */
    atomic_fetch_sub_explicit(&cv_stats.large_count, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&cv_stats.large_bytes, h->map_size, memory_order_relaxed);
    if (!cache_put(h))
        cv_os_unmap((uint8_t *)h - h->lead, h->lead + h->map_size);
    cv_purge_tick();
}

void *cv_large_realloc(large_t *h, size_t size) {
    size_t offset = h->offset;
    if (size > PTRDIFF_MAX - offset - h->lead - CARVE_PAGE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t old_size = h->map_size;
    size_t new_size = page_round(offset + size);
    /* Within the mapping (not wasting three quarters of it): no call. */
    if (new_size <= old_size && new_size >= old_size / 4) {
        h->size = new_size;
        return (uint8_t *)h + offset;
    }
    /* Shrinking never moves; growing stays in place when it can. */
    if (cv_os_remap_inplace(h, old_size, new_size)) {
        h->size = h->map_size = new_size;
        atomic_fetch_add_explicit(&cv_stats.large_bytes, new_size - old_size, memory_order_relaxed);
        return (uint8_t *)h + offset;
    }
    /* Move: reserve a new aligned place, then let the kernel move the pages
     * there. The old lead (alignment padding) is unmapped separately. */
    size_t lead = h->lead;
    uint8_t *base = cv_os_map_aligned(lead + new_size, map_align(h));
    if (base == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    large_t *nh = (large_t *)(base + lead);
    uint8_t *old_base = (uint8_t *)h - lead;
    uintptr_t old_user = (uintptr_t)h + offset;
    if (!cv_os_remap_to(h, old_size, new_size, nh)) {
        cv_os_unmap(base, lead + new_size);
        errno = ENOMEM;
        return NULL;
    }
    cv_os_unmap(old_base, lead);
    nh->size = nh->map_size = new_size;
    cv_arena_set_large((uintptr_t)nh + offset, kind_for(offset));
    cv_arena_set_large(old_user, MAP_NONE);
    atomic_fetch_add_explicit(&cv_stats.large_bytes, new_size - old_size, memory_order_relaxed);
    return (uint8_t *)nh + offset;
}
