/*
 * debug_map.c: debug mode's blocks in their own mapping, with a guard page
 * after them, and the SIGSEGV handler that names the block when a guard or
 * freed page is hit.
 *
 * ---- Blocks in their own mapping ---------------------------------------------
 * Large blocks (debug mode's small-block overhead would pass SMALL_MAX),
 * and every block with debug=page, get their own chunk-aligned mapping,
 * registered as MAP_DEBUG in the chunk map so that the ownership test still
 * takes one load; the header is at the slot base, where nothing but this
 * mapping can be:
 *
 *   slot base                                              end (page-aligned)
 *   | header page | (alignment padding) .. canary 64 | user block | canary < 16 | guard page |
 *
 * The block is right-aligned: with guards or page, the byte after it is
 * the guard page (PROT_NONE) up to the block's alignment (8 or 16 bytes),
 * and that little gap is canary. One past the end faults at once (SIGSEGV,
 * no carve line: the fault is the report). A freed mapping stays in the
 * quarantine with its data pages replaced by PROT_NONE ones (no memory,
 * every access faults) and its header readable, so that a second free says
 * "double free"; once it leaves, the chunk map forgets it.
 *
 * Pages of small blocks: with guards, page.c makes the last OS page of
 * each debug page's span PROT_NONE (and arena.c lifts it when the page is
 * retired), so that a run off the end of a page faults before it reaches
 * the next one; between blocks of one page the canaries stand guard,
 * checked on free, realloc and malloc_usable_size; debug=page gives any
 * block its own guard page. Alignments of a chunk or more keep the release
 * layout (rare; the header would not be in the user's slot).
 *
 * debug=page costs a mapping per block: about 6 system calls per
 * malloc/free and 2 of the kernel's vm.max_map_count mappings (65530 by
 * default) per live or quarantined block. Past half of them (or when the
 * kernel refuses more), small blocks fall back to canaries, with one line
 * on stderr. A freed block's mapping waits in the quarantine, its pages
 * PROT_NONE, even when quarantine is off (at most QUARANTINE_MAPS).
 *
 */
#define _GNU_SOURCE
#include "debug.h"

#include <signal.h>

/* ---- blocks in their own mapping ------------------------------------------------ */
static bool guarded(void) {
    return (cv_options.debug & (DEBUG_GUARDS | DEBUG_PAGE)) != 0;
}

/* Mappings of debug.c's now (live and quarantined blocks), and how many
 * may be: each takes 2 of the kernel's vm.max_map_count mappings (the
 * block and its guard), and debug=page takes at most half of them, so that
 * carve's chunks and the program's own mmaps still get theirs. At the
 * limit itself, malloc failed (the fallback's own chunk could not be
 * mapped) and Python raised MemoryError. */
static _Atomic size_t dmaps;

size_t cv_dmap_max(void) {
    static _Atomic size_t max;
    size_t m = atomic_load_explicit(&max, memory_order_relaxed);
    if (m == 0) {
        char buf[32];
        size_t n = cv_os_read_file("/proc/sys/vm/max_map_count", buf, sizeof buf), v = 0;
        if (cv_msg_parse_uint(buf, n, &v) == 0 || v == 0)
            v = 65530; /* the kernel's default */
        m = v / 4;
        atomic_store_explicit(&max, m, memory_order_relaxed);
    }
    return m;
}

/* zero: calloc's; the first keep bytes are the caller's to fill (realloc
 * copies them), so they are not junked first. */
static _Atomic size_t sampled; /* guard_sample's mappings, live and held */

static void *map_block(size_t size, size_t align, bool zero, size_t keep, bool sample) {
    size_t lead = align > CARVE_PAGE ? align : CARVE_PAGE;
    if (size > PTRDIFF_MAX - lead - 2 * CARVE_PAGE - CHUNK_SIZE)
        return NULL;
    bool guard = guarded() || sample;
    size_t end_off = cv_page_round(lead + size);
    size_t map_size = end_off + (guard ? CARVE_PAGE : 0);
    cv_purge_tick(); /* new memory: let decayed memory go first */
    uint8_t *base = cv_os_map_aligned(map_size, CHUNK_SIZE, false);
    if (base == NULL)
        return NULL;
    if (guard && !cv_os_protect(base + end_off, CARVE_PAGE, false)) {
        cv_os_unmap(base, map_size);
        return NULL;
    }
    dmap_t *h = (dmap_t *)base;
    uintptr_t end = (uintptr_t)base + end_off;
    uintptr_t user = (end - size) & ~(uintptr_t)(align - 1);
    CV_ASSERT(user >= (uintptr_t)base + lead && user - (uintptr_t)base < CHUNK_SIZE);
    h->magic = DMAP_LIVE;
    h->map_size = map_size;
    h->requested = size;
    h->user = user;
    h->end = end;
    /* a sampled block's alignment gap before the guard is all that is
     * left to an overflow of less than the alignment: canary, checked on
     * free */
    h->canary = (cv_options.debug & DEBUG_CANARY) != 0 || sample;
    h->family = FAM_MALLOC; /* cv_debug_alloc marks the C++ operators' */
    h->sampled = sample;
    h->alloc_n = h->free_n = 0;
    if (h->canary) {
        memset((void *)(user - CANARY_BEFORE), CANARY_BYTE, CANARY_BEFORE);
        memset((void *)(user + size), CANARY_BYTE, end - user - size);
    }
    if ((cv_options.debug & DEBUG_JUNK) && !zero) /* fresh mappings read as zero */
        memset((void *)(user + keep), JUNK_ALLOC, size - keep);
    cv_arena_set_large(user, MAP_DEBUG);
    atomic_fetch_add_explicit(&dmaps, 1, memory_order_relaxed);
    cv_stat_large_mapped(map_size);
    return (void *)user;
}

void *cv_dmap_alloc(size_t size, size_t align, bool zero, size_t keep) {
    return map_block(size, align, zero, keep, false);
}

/* guard_sample: a release build's block in a mapping of its own, against
 * a guard page, its allocation's stack kept in the header (the entry
 * points' slow paths choose it: api.c). NULL when the pool is full. */
void *cv_dmap_sample(size_t size, bool zero, const char *func) {
    if (atomic_load_explicit(&sampled, memory_order_relaxed) >= GUARD_SAMPLE_SLOTS)
        return NULL;
    cv_dmap_catch_faults();
    void *p = map_block(size, size <= 8 ? 8 : ALIGN_MIN, zero, 0, true);
    if (p == NULL)
        return NULL;
    atomic_fetch_add_explicit(&sampled, 1, memory_order_relaxed);
    dmap_t *h = (dmap_t *)((uintptr_t)p & ~(uintptr_t)CHUNK_MASK);
    h->family = (uint8_t)family_of(func);
    h->alloc_n = (uint8_t)cv_msg_stack(h->alloc_pc, GUARD_STACK_DEPTH, 2);
    return p;
}

/* A sampled block's free: its stack, for a use after free found later. */
void cv_dmap_freed(dmap_t *h) {
    if (h->sampled)
        h->free_n = (uint8_t)cv_msg_stack(h->free_pc, GUARD_STACK_DEPTH, 3);
}

void cv_dmap_unmap(dmap_t *h) {
    if (h->sampled)
        atomic_fetch_sub_explicit(&sampled, 1, memory_order_relaxed);
    cv_arena_set_large(h->user, MAP_NONE);
    cv_os_unmap(h, h->map_size);
    atomic_fetch_sub_explicit(&dmaps, 1, memory_order_relaxed);
}

size_t cv_dmap_count(void) {
    return atomic_load_explicit(&dmaps, memory_order_relaxed);
}

/* ---- guard page hits --------------------------------------------------------------- */
/* A guard page stops an overflow at the faulting instruction with SIGSEGV,
 * which alone says nothing about the heap. While the program has no
 * SIGSEGV handler of its own, debug mode puts one in that names the block
 * when the fault is in one of carve's guard or freed pages, then puts the
 * default action back and returns: the instruction faults again and the
 * process dies of the SIGSEGV, core dump and debugger view intact. */

/* The mapping a lies in: only its first chunk is in the chunk map, so
 * look down from a's chunk for it, through chunks the map knows nothing
 * of (a mapping holds no other). */
static const dmap_t *fault_map(uintptr_t a) {
    uintptr_t c = a & ~(uintptr_t)CHUNK_MASK;
    for (unsigned i = 0; i < 4096 && c != 0; i++, c -= CHUNK_SIZE) {
        unsigned kind = cv_map_kind(c);
        if (kind == MAP_DEBUG) {
            const dmap_t *h = (const dmap_t *)c;
            return a - c < h->map_size ? h : NULL;
        }
        if (kind != MAP_NONE)
            return NULL;
    }
    return NULL;
}

static const dmap_t *describe_fault(uintptr_t a, char *line, size_t cap) {
    unsigned kind = cv_map_kind(a);
    const dmap_t *h = kind == MAP_DEBUG || kind == MAP_NONE ? fault_map(a) : NULL;
    line[0] = '\0';
    if (h != NULL) {
        if (h->magic == DMAP_FREED && a >= h->user && a < h->end)
            cv_msg_format(line, cap,
                          "carve: use after free of %p (requested %zu bytes, own mapping; "
                          "offset %zu) at the faulting instruction\n",
                          (void *)h->user, h->requested, (size_t)(a - h->user));
        else if ((h->magic == DMAP_LIVE || h->magic == DMAP_FREED) && a >= h->end)
            cv_msg_format(line, cap,
                          "carve: heap overflow (guard page hit) of %p (requested %zu bytes, "
                          "own mapping; %zu bytes past its end) at the faulting instruction\n",
                          (void *)h->user, h->requested, (size_t)(a - h->user - h->requested));
    } else if (kind == MAP_SMALL) {
        const page_t *page = dbg_page_of(a);
        uintptr_t guard = (uintptr_t)cv_page_guard(page);
        if (page->guarded && a >= guard && a < guard + CARVE_PAGE) {
            size_t bs = page->block_size;
            uintptr_t last = (uintptr_t)page->start + ((size_t)page->reserved - 1) * bs;
            cv_msg_format(line, cap,
                          "carve: heap overflow (guard page hit) past the block at %p "
                          "(class %zu bytes, last of its page) at the faulting instruction\n",
                          (void *)last, bs);
        }
    }
    return h;
}

/* Returning from a fault runs the faulting instruction again, now under
 * SIG_DFL. A SIGSEGV that no instruction caused (kill, raise: si_code <= 0)
 * would not come back: it is raised again, so that it kills as it would
 * have without carve. */
static void on_segv(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    char line[256];
    signal(sig, SIG_DFL);
    if (info->si_code <= 0) {
        raise(sig);
        return;
    }
    const dmap_t *h = describe_fault((uintptr_t)info->si_addr, line, sizeof line);
    if (line[0] != '\0') {
        cv_os_write_stderr(line, strlen(line));
        cv_msg_backtrace();
        if (h != NULL && h->sampled) { /* guard_sample's: both stacks */
            cv_msg_print_stack("allocated at", h->alloc_pc, h->alloc_n);
            if (h->magic == DMAP_FREED)
                cv_msg_print_stack("freed at", h->free_pc, h->free_n);
        }
    }
}

void cv_dmap_catch_faults(void) {
    static _Atomic bool done;
    if (likely(atomic_load_explicit(&done, memory_order_relaxed)) ||
        atomic_exchange(&done, true))
        return;
    struct sigaction old, sa;
    if (sigaction(SIGSEGV, NULL, &old) != 0 || (old.sa_flags & SA_SIGINFO) ||
        old.sa_handler != SIG_DFL)
        return;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
}
