/*
 * probe.h: what the unit tests (C++) see of carve's internals.
 *
 * internal.h and types.h are C11 (_Atomic, _Alignas) and do not compile as
 * C++, so the tests reach the internals through this header: the cv_
 * functions whose signatures are plain C, declared as internal.h declares
 * them, and probe_ functions (probe.c) for what takes carve's own types.
 * probe.c includes both headers, so the C compiler rejects any declaration
 * here that has drifted from internal.h, and checks every constant below
 * against the one it copies.
 */
#ifndef CARVE_UNIT_PROBE_H
#define CARVE_UNIT_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- constants of types.h and internal.h (checked in probe.c) ---------- */
#define PROBE_CLASS_COUNT 61
#define PROBE_SMALL_MAX ((size_t)256 << 10)
#define PROBE_ALIGN_MIN 16
#define PROBE_SLICE_SIZE ((size_t)64 << 10)
#define PROBE_SLICES_PER_CHUNK 64
#define PROBE_IDLE_FLOOR 64 /* slices */
#define PROBE_IDLE_STEP 64  /* slices */
#define PROBE_CHUNK_UNMAP_MS 2000
#define PROBE_CHUNKS_RETAINED 4
#define PROBE_LARGE_HEADER 64
#define PROBE_PAGE 4096

enum { PROBE_PURGE_STAGED, PROBE_PURGE_FREE, PROBE_PURGE_DONTNEED, PROBE_PURGE_NONE };
enum { PROBE_BACKGROUND_OFF, PROBE_BACKGROUND_ON, PROBE_BACKGROUND_AUTO };
enum {
    PROBE_DEBUG_GUARDS = 1u << 0,
    PROBE_DEBUG_CANARY = 1u << 1,
    PROBE_DEBUG_JUNK = 1u << 2,
    PROBE_DEBUG_QUARANTINE = 1u << 3,
    PROBE_DEBUG_PAGE = 1u << 4,
    PROBE_DEBUG_FREE_CHECKS = 1u << 5,
    PROBE_DEBUG_ALL = (1u << 6) - 1,
};

/* ---- carve's own functions, as internal.h declares them ---------------- */
extern const uint32_t cv_class_size[PROBE_CLASS_COUNT];
extern const uint64_t cv_class_magic[PROBE_CLASS_COUNT];
extern const uint8_t cv_class_slices[PROBE_CLASS_COUNT];
bool cv_class_may_serve(unsigned c, size_t size, size_t align);
size_t cv_msg_format(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool cv_options_set(const char *item);
void cv_options_parse(void);
size_t cv_cgroup_parse_limit(const char *s);
size_t cv_cgroup_limit_under(const char *self_cgroup, const char *root);
bool cv_cgroup_pressure(void);
void cv_purge_tick(void);
void cv_purge_excess(void);
bool cv_arena_trim(void);
bool cv_large_trim(void);
size_t cv_arena_idle_bytes(void);
uint64_t cv_os_now_ms(void);

/* ---- probes ------------------------------------------------------------- */
/* cv_size_class (an inline function of internal.h) */
unsigned probe_size_class(size_t size);
/* config_debug: an --enable-debug build */
bool probe_config_debug(void);

/* cv_options, field by field (options_t) */
struct probe_options {
    bool stats_at_exit;
    unsigned purge;
    unsigned decay_ms;
    unsigned lazy_ms;
    unsigned background;
    bool cgroup;
    unsigned debug;
    size_t quarantine;
    bool thp;
};
void probe_options_get(struct probe_options *o);
void probe_options_put(const struct probe_options *o);

/* cv_os_clock_mock: 0 reads the real clock again */
void probe_clock_set(uint64_t ms);

/* cv_stats */
struct probe_stats {
    size_t small_committed, small_lazy, small_purged;
    size_t large_cached, large_lazy, large_purged;
    size_t chunks, chunks_unmapped;
};
void probe_stats_read(struct probe_stats *s);

/* A page straight from the arena (cv_arena_page_alloc, not dense) and back
 * (cv_arena_page_free: true when the arena holds more idle slices than
 * recent demand calls for). */
typedef struct probe_page probe_page;
probe_page *probe_page_alloc(unsigned slices);
bool probe_page_free(probe_page *page);
void *probe_page_start(const probe_page *page);
bool probe_page_memory_is_zero(const probe_page *page);
/* Slices start .. start + n - 1 in their chunk's bitmaps, bit 0 the first
 * (start: a slice boundary): resident (touched, not purged since) and
 * dirty (may hold non-zero bytes). By address, so that they can be read
 * after the page that held them is freed. */
uint64_t probe_slices_resident(const void *start, unsigned n);
uint64_t probe_slices_dirty(const void *start, unsigned n);

/* Large blocks without the entry points: cv_large_alloc, cv_large_free. */
void *probe_large_alloc(size_t size);
void probe_large_free(void *p);

/* cv_large_cache_choose over slots of this shape (base NULL: free slot). */
struct probe_entry {
    void *base;
    size_t size;
};
unsigned probe_large_choose(const struct probe_entry *slot, unsigned count, size_t map_size);

#ifdef __cplusplus
}
#endif

#endif /* CARVE_UNIT_PROBE_H */
