/*
 * debug.h: debug mode (debug.c, debug_map.c, quarantine.c, and the reports
 * of report.c), switched on by ./configure --enable-debug or
 * CARVE_OPTIONS=debug=....
 *
 * api.c calls in here only from its slow paths: a thread in debug mode
 * keeps the empty heap (its allocations all miss the fast path) and its
 * pages have an owner id that no thread has (its frees all miss the owner's
 * fast path), so the release fast paths carry no debug test.
 */
#ifndef CARVE_DEBUG_H
#define CARVE_DEBUG_H

#include "internal.h"

/* What free() passes for "no size given" (free_sized() passes its size). */
#define CV_NO_SIZE SIZE_MAX

/* Initialises carve when needed; true when debug mode is on. */
bool cv_debug_on(void);

/* The malloc family in debug mode; func names the entry point in reports. */
void *cv_debug_alloc(size_t size, size_t align, bool zero, const char *func);
void cv_debug_free(void *p, size_t size, const char *func);
void *cv_debug_realloc(void *p, size_t size, const char *func);
size_t cv_debug_usable(void *p, const char *func);


/* The quarantine's lock, for statistics. */
const cv_lock_t *cv_debug_lock_stats(void);

/* fork.c's handlers: the quarantine's lock (quarantine.c). */
void cv_debug_fork_prepare(void);
void cv_debug_fork_parent(void);
void cv_debug_fork_child(void);

/* Test hook: read CARVE_OPTIONS again (after setenv) and give up the
 * calling thread's heap, so that a test can switch debug mode on in a
 * death-test child. Not for programs: other threads keep their heaps. */
void cv_debug_reinit(void);


/* ---- the layout of debug blocks, shared by debug.c, debug_map.c,
 * quarantine.c and report.c (see debug.c for the picture) ------------- */

#define JUNK_ALLOC 0xA5
#define JUNK_FREE 0x5A
#define CANARY_BYTE 0xCB
#define TRAILER 8
#define OVERHEAD (CANARY_MIN + TRAILER) /* CANARY_MIN: types.h */

#define KEY_LIVE 0x9e3779b97f4a7c15ull /* odd: a multiplication is a bijection */
#define SALT_LIVE 0x6361727665206c76ull
#define KEY_FREED 0xc2b2ae3d27d4eb4full
#define SALT_FREED 0x6361727665206672ull

#define DMAP_LIVE 0x6361727665646d6cull  /* "carvedml" */
#define DMAP_FREED 0x6361727665646d66ull /* "carvedmf" */

enum path { PATH_FREE, PATH_REALLOC, PATH_USABLE };

/* The header of a block in its own mapping, at the mapping's start. */
typedef struct dmap {
    uint64_t magic;   /* DMAP_LIVE or DMAP_FREED */
    size_t map_size;  /* bytes mapped from the header on */
    size_t requested; /* what was asked for */
    uintptr_t user;   /* the block */
    uintptr_t end;    /* end of the accessible bytes (page-aligned) */
    bool canary;      /* made with canaries: checked only then (checks can be
                         switched on at run time, after the block was made) */
    uint8_t family;   /* enum family */
    bool sampled;     /* guard_sample's: stacks kept */
    uint8_t alloc_n, free_n;
    void *alloc_pc[GUARD_STACK_DEPTH];
    void *free_pc[GUARD_STACK_DEPTH];
} dmap_t;


static inline uint64_t live_word(uintptr_t b, size_t size) {
    return ((uint64_t)b * KEY_LIVE) ^ SALT_LIVE ^ size;
}

/* Which call made a block, so that debug mode stops a mismatched pair
 * (new freed by free, new[] by delete): kept in the top byte of the
 * size in a small block's trailer, and in a mapping's header. */
enum family { FAM_MALLOC = 0, FAM_NEW, FAM_NEW_ARRAY };
#define FAM_SHIFT 56
#define FAM_SIZE_MASK (((size_t)1 << FAM_SHIFT) - 1)

/* The family a call frees or makes (api.c names the C++ operators
 * "operator new", "operator new[]", "operator delete", "operator
 * delete[]"); every other call is malloc's. */
static inline unsigned family_of(const char *func) {
    size_t n = strlen(func);
    if (strncmp(func, "operator ", 9) != 0)
        return FAM_MALLOC;
    return func[n - 1] == ']' ? FAM_NEW_ARRAY : FAM_NEW;
}

/* The requested size that a live trailer t of block b holds (and its
 * family in *fam), or SIZE_MAX when t is no live trailer of b. */
static inline size_t live_size(uint64_t t, uintptr_t b, unsigned *fam) {
    size_t raw = (size_t)(t ^ live_word(b, 0));
    *fam = (unsigned)(raw >> FAM_SHIFT);
    return *fam <= FAM_NEW_ARRAY ? raw & FAM_SIZE_MASK : SIZE_MAX;
}

static inline uint64_t freed_word(uintptr_t b, size_t bs) {
    return ((uint64_t)b * KEY_FREED) ^ SALT_FREED ^ bs;
}

static inline uint64_t *trailer_of(uintptr_t b, size_t bs) {
    return (uint64_t *)(b + bs - TRAILER);
}

static inline page_t *dbg_page_of(uintptr_t a) {
    return cv_page_of(cv_chunk_of(a), a);
}

/* The first byte of [p, p+n) that is not c, or n. */
static inline size_t first_not(const uint8_t *p, size_t n, uint8_t c) {
    size_t i = 0;
    uint64_t w = 0x0101010101010101ull * c;
    for (; i < n && ((uintptr_t)(p + i) & 7); i++)
        if (p[i] != c)
            return i;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, sizeof v);
        if (v != w)
            break;
    }
    for (; i < n; i++)
        if (p[i] != c)
            return i;
    return n;
}

/* ---- report.c: one line, a backtrace, abort ------------------------------ */
/* Release builds' reports too: p is no block start (what is there is
 * described), and the owner's cheap double-free test fired. Neither
 * returns; the second is not declared noreturn so that the free fast path
 * reaches it by a tail jump (a noreturn call needs a stack frame: clang
 * then pushes one on every free). */
__attribute__((noreturn, cold)) void cv_report_bad_pointer(void *p, const char *what,
                                                           const char *func);
__attribute__((cold)) void cv_report_double_free(const page_t *page, void *p, const char *func);
const char *cv_report_invalid_what(enum path path);
__attribute__((noreturn, cold)) void cv_report_block(const char *what, uintptr_t b,
                                                     size_t requested, size_t bs, bool known,
                                                     const char *func);
__attribute__((noreturn, cold)) void cv_report_trailer(uintptr_t b, size_t bs, enum path path,
                                                       const char *func);
__attribute__((noreturn, cold)) void cv_report_link(const page_t *page, uintptr_t b, size_t bs,
                                                    const char *func);
__attribute__((noreturn, cold)) void cv_report_map(const char *what, const dmap_t *h,
                                                   const char *func);
__attribute__((noreturn, cold)) void cv_report_poison(uintptr_t b, size_t bs, size_t at,
                                                      const char *func);
__attribute__((noreturn, cold)) void cv_report_wrong_size(uintptr_t b, size_t usable, size_t given,
                                                         size_t align, const char *func);
__attribute__((noreturn, cold)) void cv_report_mismatch(uintptr_t b, unsigned family,
                                                       const char *func);
__attribute__((noreturn, cold)) void cv_report_size(uintptr_t b, size_t requested, size_t given,
                                                    const char *func);

/* ---- debug_map.c: blocks in their own mapping, and guard page hits ------- */
void cv_dmap_catch_faults(void); /* once: the SIGSEGV handler that names blocks */
void *cv_dmap_alloc(size_t size, size_t align, bool zero, size_t keep);
void *cv_dmap_sample(size_t size, bool zero, const char *func);
void cv_dmap_freed(dmap_t *h);
void cv_dmap_unmap(dmap_t *h);
size_t cv_dmap_count(void); /* mappings of debug mode now */
size_t cv_dmap_max(void);   /* how many debug=page may take */

/* ---- quarantine.c --------------------------------------------------------- */
void cv_quarantine_put(uintptr_t e, const char *func); /* e: a small block or a dmap_t */
size_t cv_quarantine_limit(bool is_map);

/* ---- debug.c: a block back to its page (the end of its quarantine) ------- */
void cv_debug_free_to_page(page_t *page, block_t *b, const char *func);

#endif /* CARVE_DEBUG_H */
