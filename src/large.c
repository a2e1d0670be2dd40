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

/* With thp=1, large mappings from THP_MIN up get MADV_HUGEPAGE: they are
 * chunk-aligned, so every whole 2 MiB of them can be a huge page. Off by
 * default (see doc/design.md, "Huge pages: off by default"): a huge page is
 * faulted in whole, so a big table written sparsely is resident in full
 * (a calloc'd table written once per 64 KiB is all RSS with huge pages, a
 * small part of it without), and with the kernel's default defrag setting
 * ("madvise") such a fault may compact memory on the spot, the stall that
 * latency-bound servers turn THP off to avoid. */


static size_t thp_round(size_t n) {
    return (n + THP_MIN - 1) & ~(THP_MIN - 1);
}

/* Does a mapping of this size get huge pages (and their rounding)? */
static bool thp_for(size_t map_size) {
    return cv_options.thp && map_size >= THP_MIN;
}

/* The mapping for a block of this many bytes (header included, page
 * rounded): from THP_MIN up, whole huge pages when that adds at most a
 * quarter (the size classes' worst case), since the last partial 2 MiB of
 * a mapping can only have 4 KiB pages, a fault each. On the large workload
 * (2 threads, 64 KiB..32 MiB blocks, memset), in a VM that makes each
 * fault dear, this took away many of carve's faults and much of its time,
 * for a few MiB of peak RSS (figures: doc/measurements.md). */
static size_t map_size_for(size_t block) {
    size_t whole = thp_round(block);
    return thp_for(block) && whole - block <= block / 4 ? whole : block;
}

_Static_assert(sizeof(large_t) == LARGE_HEADER, "check must end right before the block");

static uint64_t header_check(const large_t *h) {
    uint64_t x = (uint64_t)(uintptr_t)h ^ h->magic;
    x = (x ^ h->size) * 0x9e3779b97f4a7c15ull;
    x = (x ^ h->map_size) * 0xc2b2ae3d27d4eb4full;
    x = (x ^ h->offset) * 0x165667b19e3779f9ull;
    x = (x ^ h->lead) * 0x9e3779b97f4a7c15ull;
    return x ^ (x >> 29);
}

/* After every change of h's fields. */
static void seal(large_t *h) {
    h->check = header_check(h);
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
 * munmap and a page fault per 4 KiB every time: an allocator that reuses
 * such memory, as glibc does, is much faster on such loops than one that
 * does not (doc/design.md, "Large blocks"). Freed mappings (without
 * alignment padding) wait here, bounded in count and bytes. A request
 * takes the smallest entry that fits with at most three quarters to spare,
 * or else the smallest bigger one, cut down in place: its head is already
 * faulted in. Entries up to CACHE_MAX_ENTRY cover glibc's own
 * reuse range (its mmap threshold tops out at 32 MiB); a bigger one would
 * empty the cache to get in.
 *
 * The byte bound is what the cache adds to peak RSS while big blocks
 * churn (idle entries are purged after decay_ms like the rest). On the
 * large workload (2 threads, 64 KiB..32 MiB blocks, memset, 4 KiB pages)
 * a smaller bound saves some RSS at a high cost in time and faults: below
 * about 96 MiB the cache keeps evicting the entries the next requests
 * need, and each comes back as a fresh mapping, faulted in again (figures:
 * doc/design.md, "Large blocks"; doc/measurements.md).
 *
 * An entry unused for decay_ms is purged like free slices (MADV_FREE) but
 * stays mapped and cached, "lazy", until lazy_ms after its free: until the kernel
 * needs the memory its pages stay in place and reusing them costs no
 * fault, where a fresh mapping faults every page (or huge page) in again.
 * With decay_ms=2, so that most entries decay before reuse, the large
 * workload took less time and far fewer faults this way than unmapping
 * them (doc/measurements.md). purge=dontneed and cgroup pressure unmap
 * instead: the pages go at once, and with them the reason to keep the
 * mapping. */

typedef large_entry_t entry_t; /* one cached mapping (types.h) */

static struct {
    cv_lock_t lock;
    entry_t slot[CACHE_SLOTS];
    size_t bytes;      /* all entries: what CACHE_MAX_BYTES bounds */
} cache = {.lock = CV_LOCK_INIT};

/* Resident entries count as large_cached (committed memory), lazy ones as
 * large_lazy (purged, but charged to the cgroup until reclaimed). */
static void cache_account(const entry_t *e, bool add) {
    _Atomic size_t *c = e->lazy ? &cv_stats.large_lazy : &cv_stats.large_cached;
    if (add)
        atomic_fetch_add_explicit(c, e->size, memory_order_relaxed);
    else
        atomic_fetch_sub_explicit(c, e->size, memory_order_relaxed);
}

static bool cache_empty(void) {
    return atomic_load_explicit(&cv_stats.large_cached, memory_order_relaxed) == 0 &&
           atomic_load_explicit(&cv_stats.large_lazy, memory_order_relaxed) == 0;
}

/* Takes slot i out of the cache, under the lock. */
static entry_t cache_remove(unsigned i) {
    entry_t e = cache.slot[i];
    cache.slot[i].base = NULL;
    cache.bytes -= e.size;
    cache_account(&e, false);
    return e;
}

static bool cache_keep(entry_t e);

/* Moves the pages of [p, p + size) to a fresh chunk-aligned place (page
 * tables move, no byte is copied or faulted); false when that cannot be
 * done. */
static bool relocate(uint8_t *p, size_t size, entry_t *out) {
    uint8_t *dest = cv_os_map_aligned(size, CHUNK_SIZE, false);
    if (dest == NULL)
        return false;
    if (!cv_os_remap_to(p, size, size, dest)) {
        cv_os_unmap(dest, size);
        return false;
    }
    out->base = dest;
    out->size = size;
    return true;
}

/* An entry of n bytes serves want bytes whole: at most 4 times too big. */
static bool fits_whole(size_t n, size_t want) {
    return n >= want && want >= n / 4;
}

/* The slot of slot[0 .. count) that best serves map_size bytes: the
 * smallest entry that fits and is at most 4 times too big, else the
 * smallest bigger one, else the biggest smaller one; count when all are
 * free. It reads nothing else, so that the unit tests can give it a cache
 * of their own. */
unsigned cv_large_cache_choose(const entry_t *slot, unsigned count, size_t map_size) {
    unsigned fit = count, bigger = count, smaller = count;
    for (unsigned i = 0; i < count; i++) {
        size_t n = slot[i].size;
        if (slot[i].base == NULL)
            continue;
        if (n < map_size) {
            if (smaller == count || n > slot[smaller].size)
                smaller = i;
        } else if (fits_whole(n, map_size)) {
            if (fit == count || n < slot[fit].size)
                fit = i;
        } else if (bigger == count || n < slot[bigger].size) {
            bigger = i;
        }
    }
    return fit != count ? fit : bigger != count ? bigger : smaller;
}

/* Cuts e down to its first cut bytes, its tail cached again (or unmapped);
 * returns the size e now has: e.size when it could not be cut. */
static size_t cut_down(entry_t e, size_t cut) {
    entry_t tail = e; /* the tail keeps e's age and state */
    if (relocate(e.base + cut, e.size - cut, &tail)) {
        if (!cache_keep(tail))
            cv_os_unmap(tail.base, tail.size);
        return cut;
    }
    return cv_os_remap_inplace(e.base, e.size, cut) ? cut : e.size;
}

/* A cached mapping grown from old_size to new_size for h: huge pages for
 * its new part when it now reaches THP_MIN, as a fresh one would have
 * (without them the new part faults in 4 KiB at a time, and the large
 * workload was much slower: doc/measurements.md). */
static void grown(large_t *h, size_t old_size, size_t new_size) {
    h->map_size = new_size;
    if (old_size < THP_MIN && thp_for(new_size))
        cv_os_hugepage(h, new_size);
}

/* A mapping for map_size bytes from the cache, its header's map_size set;
 * NULL when the cache is empty. An entry that fits is taken whole (its
 * pages are already faulted in, and it held them in the cache anyway); a
 * much bigger one gives its head, its tail is moved away and cached again;
 * a smaller one is grown (its pages are kept and only the rest faults in).
 * Page faults are what large blocks cost (a VM makes each one dearer): on
 * the large workload (random 256 KiB..32 MiB blocks, memset, 2 threads)
 * this took away most of carve's faults (doc/measurements.md). */
static large_t *cache_take(size_t map_size) {
    /* a peek without the lock: a miss only costs a fresh mapping */
    if (cache_empty())
        return NULL;
    cv_lock_take(&cache.lock);
    unsigned i = cv_large_cache_choose(cache.slot, CACHE_SLOTS, map_size);
    entry_t e = {0};
    if (i != CACHE_SLOTS)
        e = cache_remove(i);
    cv_lock_give(&cache.lock);
    if (e.base == NULL)
        return NULL;
    large_t *h = (large_t *)e.base;
    if (e.size >= map_size) {
        /* A huge-page mapping is cut on a huge page boundary: a cut inside
         * one splits it, and a tail that is not 2 MiB-aligned moves page by
         * page and keeps none of its huge pages (both then fault and purge
         * 4 KiB at a time, which made the large workload with huge pages
         * much slower: doc/measurements.md). */
        size_t cut = thp_for(e.size) ? thp_round(map_size) : map_size;
        if (!fits_whole(e.size, map_size) && cut < e.size)
            e.size = cut_down(e, cut);
        h->map_size = e.size;
        return h;
    }
    /* smaller: grow in place, or move the pages to a place with room */
    if (cv_os_remap_inplace(e.base, e.size, map_size)) {
        grown(h, e.size, map_size);
        return h;
    }
    uint8_t *dest = cv_os_map_aligned(map_size, CHUNK_SIZE, false);
    if (dest != NULL && cv_os_remap_to(e.base, e.size, map_size, dest)) {
        h = (large_t *)dest;
        grown(h, e.size, map_size);
        return h;
    }
    if (dest != NULL)
        cv_os_unmap(dest, map_size);
    cv_os_unmap(e.base, e.size);
    return NULL;
}

/* The slot to give up so that e fits, under the lock: a lazy entry first
 * (the least likely to be of use), else the biggest entry if it is bigger
 * than e, so that the cache drifts toward the sizes in use; CACHE_SLOTS
 * when e should rather not be kept. */
static unsigned cache_victim(const entry_t *e) {
    if (e->lazy)
        return CACHE_SLOTS; /* purged already: not worth any other entry */
    unsigned lazy = CACHE_SLOTS, big = CACHE_SLOTS;
    for (unsigned i = 0; i < CACHE_SLOTS; i++) {
        const entry_t *s = &cache.slot[i];
        if (s->base == NULL)
            continue;
        if (s->lazy && (lazy == CACHE_SLOTS || s->size > cache.slot[lazy].size))
            lazy = i;
        if (big == CACHE_SLOTS || s->size > cache.slot[big].size)
            big = i;
    }
    if (lazy != CACHE_SLOTS)
        return lazy;
    return big != CACHE_SLOTS && cache.slot[big].size > e->size ? big : CACHE_SLOTS;
}

/* Keeps e (returns true) or leaves it to the caller to unmap; entries
 * given up for it are unmapped. One eviction of an entry bigger than e
 * always makes room, so this ends after the lazy entries and one more. */
static bool cache_keep(entry_t e) {
    if (e.size > CACHE_MAX_ENTRY)
        return false;
    entry_t evicted[CACHE_SLOTS];
    unsigned n = 0, free_slot = CACHE_SLOTS;
    cv_lock_take(&cache.lock);
    for (;;) {
        for (unsigned i = 0; i < CACHE_SLOTS && free_slot == CACHE_SLOTS; i++) {
            if (cache.slot[i].base == NULL)
                free_slot = i;
        }
        if (free_slot != CACHE_SLOTS && cache.bytes + e.size <= CACHE_MAX_BYTES)
            break;
        unsigned v = cache_victim(&e);
        if (v == CACHE_SLOTS) {
            free_slot = CACHE_SLOTS;
            break;
        }
        evicted[n++] = cache_remove(v);
    }
    if (free_slot != CACHE_SLOTS) {
        cache.slot[free_slot] = e;
        cache.bytes += e.size;
        cache_account(&e, true);
    }
    cv_lock_give(&cache.lock);
    for (unsigned i = 0; i < n; i++)
        cv_os_unmap(evicted[i].base, evicted[i].size);
    return free_slot != CACHE_SLOTS;
}

/* A freed block's mapping, into the cache if it may wait there. */
static bool cache_put(large_t *h) {
    if (cv_options.decay_ms == 0 && cv_options.purge != PURGE_NONE)
        return false; /* purge at once: nothing waits */
    if (h->lead != 0 || cv_cgroup_pressure())
        return false;
    entry_t e = {.base = (uint8_t *)h, .size = h->map_size, .freed_ms = cv_os_now_ms()};
    return cache_keep(e);
}

/* Purges the resident entries unused for decay_ms (MADV_FREE, keeping them
 * mapped as lazy entries), and unmaps the entries unused for lazy_ms (at
 * least decay_ms); with dontneed, unmaps both. Returns the bytes given back. */
size_t cv_large_purge(uint64_t now, uint64_t decay_ms, uint64_t lazy_ms, bool dontneed) {
    if (cache_empty())
        return 0;
    entry_t due[CACHE_SLOTS];
    unsigned n = 0;
    cv_lock_take(&cache.lock);
    for (unsigned i = 0; i < CACHE_SLOTS; i++) {
        const entry_t *e = &cache.slot[i];
        if (e->base == NULL || e->freed_ms + decay_ms > now)
            continue;
        if (dontneed || !e->lazy || e->freed_ms + lazy_ms <= now)
            due[n++] = cache_remove(i);
    }
    cv_lock_give(&cache.lock);
    size_t bytes = 0, purged = 0;
    for (unsigned i = 0; i < n; i++) {
        entry_t e = due[i];
        bytes += e.size;
        if (!e.lazy)
            purged += e.size;
        if (!dontneed && !e.lazy) {
            /* outside the lock: madvise walks the whole mapping */
            cv_os_purge(e.base, e.size, false);
            e.lazy = true;
            if (cache_keep(e))
                continue;
        }
        cv_os_unmap(e.base, e.size);
    }
    cv_stat_add(&cv_stats.large_purged, purged);
    return bytes;
}

const cv_lock_t *cv_large_lock_stats(void) {
    return &cache.lock;
}

void cv_large_fork_prepare(void) {
    cv_lock_take(&cache.lock);
}

void cv_large_fork_parent(void) {
    cv_lock_give(&cache.lock);
}

void cv_large_fork_child(void) {
    cv_lock_give(&cache.lock);
}

bool cv_large_trim(void) {
    return cv_large_purge(UINT64_MAX / 2, 0, 0, true) > 0;
}

void *cv_large_alloc(size_t size, size_t align, bool zero) {
    size_t offset, lead, malign;
    /* A request for 0 bytes (memalign(4 MiB, 0)) still gets a byte: with
     * offset == CHUNK_SIZE the pointer would sit at the mapping's end, in
     * the next chunk's slot of the chunk map, which its MAP_LARGE_PREV mark
     * (and its free's MAP_NONE) would take from whatever lives there. */
    if (size == 0)
        size = 1;
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
    size_t block = cv_page_round(offset + size);
    size_t map_size = map_size_for(block);
    large_t *h = lead == 0 ? cache_take(map_size) : NULL;
    if (h != NULL) {
        map_size = h->map_size;
        if (zero) /* fresh mappings read as zero; a reused one does not */
            memset(h, 0, block);
    } else {
        uint8_t *base = cv_os_map_aligned(lead + map_size, malign, false);
        if (base == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        h = (large_t *)(base + lead);
        if (thp_for(map_size))
            cv_os_hugepage(h, map_size);
    }
    h->magic = LARGE_MAGIC;
    h->size = block;
    h->map_size = map_size;
    h->offset = offset;
    h->lead = lead;
    seal(h);
    uintptr_t user = (uintptr_t)h + offset;
    cv_arena_set_large(user, kind_for(offset));
    cv_stat_large_mapped(map_size);
    return (void *)user;
}

/* The header of the large block at a, NULL when a is no large block's
 * start (a second free finds the magic cleared). A header whose fields no
 * longer match their check was written over from the block below it, or
 * from this block's start backwards: stop, as glibc does on a broken
 * chunk header, rather than unmap what the broken fields say. */
large_t *cv_large_header(uintptr_t a, unsigned kind, const char *func) {
    uintptr_t slot = a & ~(uintptr_t)CHUNK_MASK;
    large_t *h = (large_t *)(kind == MAP_LARGE_PREV ? slot - CHUNK_SIZE : slot);
    bool start = (uintptr_t)h + h->offset == a;
    if (likely(h->magic == LARGE_MAGIC && start && h->check == header_check(h)))
        return h;
    if (h->magic == LARGE_MAGIC && (start || a == slot + LARGE_HEADER))
        cv_msg_fatal("heap corruption", (void *)a,
                     "large block header broken: a write before the block?", func);
    return NULL;
}

void cv_large_free(large_t *h) {
    cv_arena_set_large((uintptr_t)h + h->offset, MAP_NONE);
    h->magic = 0; /* a second free of this address finds no header */
    cv_stat_large_unmapped(h->map_size);
    if (!cache_put(h))
        cv_os_unmap((uint8_t *)h - h->lead, h->lead + h->map_size);
}

void *cv_large_realloc(large_t *h, size_t size) {
    size_t offset = h->offset;
    if (size > PTRDIFF_MAX - offset - h->lead - CARVE_PAGE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t old_size = h->map_size;
    size_t new_size = cv_page_round(offset + size);
    /* Within the mapping (not wasting three quarters of it): no call. */
    if (new_size <= old_size && new_size >= old_size / 4) {
        h->size = new_size;
        seal(h);
        return (uint8_t *)h + offset;
    }
    /* Shrinking never moves; growing stays in place when it can. */
    if (cv_os_remap_inplace(h, old_size, new_size)) {
        h->size = h->map_size = new_size;
        seal(h);
        cv_stat_add(&cv_stats.large_bytes, new_size - old_size);
        return (uint8_t *)h + offset;
    }
    /* Move: reserve a new aligned place, then let the kernel move the pages
     * there. The old lead (alignment padding) is unmapped separately. */
    size_t lead = h->lead;
    uint8_t *base = cv_os_map_aligned(lead + new_size, map_align(h), false);
    if (base == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    large_t *nh = (large_t *)(base + lead);
    uint8_t *old_base = (uint8_t *)h - lead;
    uintptr_t old_user = (uintptr_t)h + offset;
    /* The old slot is cleared before the move: once mremap has moved the
     * pages, the old range is the kernel's again, and another thread's
     * mapping may land there and set that slot before a late clear here
     * would wipe its entry (its free would then abort as invalid). */
    cv_arena_set_large(old_user, MAP_NONE);
    if (!cv_os_remap_to(h, old_size, new_size, nh)) {
        cv_arena_set_large(old_user, kind_for(offset));
        cv_os_unmap(base, lead + new_size);
        errno = ENOMEM;
        return NULL;
    }
    cv_os_unmap(old_base, lead);
    nh->size = nh->map_size = new_size;
    seal(nh);
    cv_arena_set_large((uintptr_t)nh + offset, kind_for(offset));
    cv_stat_add(&cv_stats.large_bytes, new_size - old_size);
    return (uint8_t *)nh + offset;
}
