/*
 * probe.c: the unit tests' access to carve's internals (probe.h says why).
 * Compiled as C with the library's own flags, beside libcarve_core.
 */
#include "internal.h"
#include "probe.h"

#include <stdlib.h>

_Static_assert(PROBE_CLASS_COUNT == CLASS_COUNT, "probe.h: CLASS_COUNT");
_Static_assert(PROBE_SMALL_MAX == SMALL_MAX, "probe.h: SMALL_MAX");
_Static_assert(PROBE_ALIGN_MIN == ALIGN_MIN, "probe.h: ALIGN_MIN");
_Static_assert(PROBE_SLICE_SIZE == SLICE_SIZE, "probe.h: SLICE_SIZE");
_Static_assert(PROBE_SLICES_PER_CHUNK == SLICES_PER_CHUNK, "probe.h: SLICES_PER_CHUNK");
_Static_assert(PROBE_IDLE_FLOOR == IDLE_FLOOR, "probe.h: IDLE_FLOOR");
_Static_assert(PROBE_IDLE_STEP == IDLE_STEP, "probe.h: IDLE_STEP");
_Static_assert(PROBE_CHUNK_UNMAP_MS == CHUNK_UNMAP_MS, "probe.h: CHUNK_UNMAP_MS");
_Static_assert(PROBE_CHUNKS_RETAINED == CHUNKS_RETAINED, "probe.h: CHUNKS_RETAINED");
_Static_assert(PROBE_LARGE_HEADER == LARGE_HEADER, "probe.h: LARGE_HEADER");
_Static_assert(PROBE_PAGE == CARVE_PAGE, "probe.h: CARVE_PAGE");
/* (as int: the compilers warn on comparing two enum types) */
#define SAME(a, b) ((int)(a) == (int)(b))
_Static_assert(SAME(PROBE_PURGE_STAGED, PURGE_STAGED) && SAME(PROBE_PURGE_FREE, PURGE_FREE) &&
                   SAME(PROBE_PURGE_DONTNEED, PURGE_DONTNEED) && SAME(PROBE_PURGE_NONE, PURGE_NONE),
               "probe.h: enum purge_mode");
_Static_assert(SAME(PROBE_BACKGROUND_OFF, BACKGROUND_OFF) &&
                   SAME(PROBE_BACKGROUND_ON, BACKGROUND_ON) &&
                   SAME(PROBE_BACKGROUND_AUTO, BACKGROUND_AUTO),
               "probe.h: enum background_mode");
_Static_assert(SAME(PROBE_DEBUG_GUARDS, DEBUG_GUARDS) && SAME(PROBE_DEBUG_CANARY, DEBUG_CANARY) &&
                   SAME(PROBE_DEBUG_JUNK, DEBUG_JUNK) &&
                   SAME(PROBE_DEBUG_QUARANTINE, DEBUG_QUARANTINE) &&
                   SAME(PROBE_DEBUG_PAGE, DEBUG_PAGE) &&
                   SAME(PROBE_DEBUG_FREE_CHECKS, DEBUG_FREE_CHECKS) &&
                   SAME(PROBE_DEBUG_ALL, DEBUG_ALL),
               "probe.h: enum debug_flags");

unsigned probe_size_class(size_t size) {
    return cv_size_class(size);
}

bool probe_config_debug(void) {
    return config_debug;
}

void probe_options_get(struct probe_options *o) {
    o->stats_at_exit = cv_options.stats_at_exit;
    o->purge = cv_options.purge;
    o->decay_ms = cv_options.decay_ms;
    o->lazy_ms = cv_options.lazy_ms;
    o->background = cv_options.background;
    o->cgroup = cv_options.cgroup;
    o->debug = cv_options.debug;
    o->quarantine = cv_options.quarantine;
    o->thp = cv_options.thp;
}

void probe_options_put(const struct probe_options *o) {
    cv_options.stats_at_exit = o->stats_at_exit;
    cv_options.purge = o->purge;
    cv_options.decay_ms = o->decay_ms;
    cv_options.lazy_ms = o->lazy_ms;
    cv_options.background = o->background;
    cv_options.cgroup = o->cgroup;
    cv_options.debug = o->debug;
    cv_options.quarantine = o->quarantine;
    cv_options.thp = o->thp;
}

void probe_clock_set(uint64_t ms) {
    atomic_store_explicit(&cv_os_clock_mock, ms, memory_order_relaxed);
}

void probe_stats_read(struct probe_stats *s) {
    s->small_committed = atomic_load(&cv_stats.small_committed);
    s->small_lazy = atomic_load(&cv_stats.small_lazy);
    cv_arena_lock(); /* the plain counters are the arena lock's */
    s->small_purged = cv_stats.small_purged;
    s->chunks = cv_stats.chunks;
    s->chunks_unmapped = cv_stats.chunks_unmapped;
    cv_arena_unlock();
    s->large_cached = atomic_load(&cv_stats.large_cached);
    s->large_lazy = atomic_load(&cv_stats.large_lazy);
    s->large_purged = atomic_load(&cv_stats.large_purged);
}

probe_page *probe_page_alloc(unsigned slices) {
    bool grew;
    return (probe_page *)cv_arena_page_alloc(slices, false, &grew);
}

bool probe_page_free(probe_page *page) {
    return cv_arena_page_free((page_t *)page);
}

void *probe_page_start(const probe_page *page) {
    return ((const page_t *)page)->start;
}

bool probe_page_memory_is_zero(const probe_page *page) {
    return ((const page_t *)page)->memory_is_zero;
}

/* The run of bits of n slices from start, shifted down, in one of the
 * chunk's bitmaps (read under the arena lock, which guards them). */
static uint64_t slice_bits(const void *start, unsigned n, size_t field) {
    uintptr_t a = (uintptr_t)start;
    chunk_t *chunk = cv_chunk_of(a);
    unsigned first = (unsigned)((a & CHUNK_MASK) >> SLICE_SHIFT);
    uint64_t mask = n >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << n) - 1;
    cv_arena_lock();
    uint64_t bitmap = *(const uint64_t *)((const char *)chunk + field);
    cv_arena_unlock();
    return (bitmap >> first) & mask;
}

uint64_t probe_slices_resident(const void *start, unsigned n) {
    return slice_bits(start, n, offsetof(chunk_t, slices_resident));
}

uint64_t probe_slices_dirty(const void *start, unsigned n) {
    return slice_bits(start, n, offsetof(chunk_t, slices_dirty));
}

void *probe_large_alloc(size_t size) {
    return cv_large_alloc(size, 0, false);
}

void probe_large_free(void *p) {
    uintptr_t a = (uintptr_t)p;
    large_t *h = cv_large_header(a, cv_map_kind(a), "probe_large_free");
    if (h != NULL)
        cv_large_free(h);
}

unsigned probe_large_choose(const struct probe_entry *slot, unsigned count, size_t map_size) {
    large_entry_t entries[64];
    if (count > sizeof entries / sizeof entries[0])
        abort(); /* a test's mistake: more than any cache holds */
    for (unsigned i = 0; i < count; i++)
        entries[i] = (large_entry_t){.base = slot[i].base, .size = slot[i].size};
    return cv_large_cache_choose(entries, count, map_size);
}
