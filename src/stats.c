/*
 * stats.c: what carve holds, per size class, for carve_stats_print,
 * malloc_stats and mallinfo2. Page figures come from a walk of every page
 * under the arena lock; a block freed by another thread still counts as
 * live until its owner collects it.
 */
#include "internal.h"
#include "debug.h"

#include <limits.h>
#include <stdio.h>

stats_t cv_stats;

typedef struct class_totals {
    size_t pages[CLASS_COUNT];
    size_t mapped[CLASS_COUNT];   /* bytes of their slices */
    size_t live[CLASS_COUNT];     /* blocks */
    size_t carved[CLASS_COUNT];   /* blocks ever touched */
    size_t purged[CLASS_COUNT];
    size_t abandoned;             /* pages of exited threads */
    size_t chunks, chunks_peak, small_purged;
} class_totals_t;

static void count_page(page_t *page, void *arg) {
    class_totals_t *t = arg;
    unsigned c = CV_PEEK(page->class_idx);
    t->pages[c]++;
    /* debug heaps' pages may be bigger than the class's (heap.c) */
    t->mapped[c] += (size_t)page->slice_count << SLICE_SHIFT;
    uint32_t live = CV_PEEK(page->used) & ~PAGE_IN_FULL;
    heap_t *heap = atomic_load_explicit(&page->heap, memory_order_relaxed);
    if (heap != NULL && CV_PEEK(heap->current[c]) == page && live > 0)
        live--; /* the current page's pin (blocks in bins: count_bins) */
    t->live[c] += live;
    t->carved[c] += CV_PEEK(page->capacity);
    if (page->state == PAGE_ABANDONED)
        t->abandoned++;
}

/* Under the arena lock, after the page walk. */
static void count_arena(class_totals_t *t) {
    memcpy(t->purged, cv_stats.class_purged, sizeof t->purged);
    t->chunks = cv_stats.chunks;
    t->chunks_peak = cv_stats.chunks_peak;
    t->small_purged = cv_stats.small_purged;
}

/* Blocks in thread heaps' bins count in their pages' used but are free:
 * take them off. Another thread's bins are read as they are at that
 * moment (relaxed loads), the calling thread's exactly. */
static void count_bins(class_totals_t *t) {
    for (const heap_t *h = cv_heap_first(); h != NULL; h = h->next_all)
        for (unsigned c = 0; c < CLASS_COUNT; c++) {
            size_t n = CV_PEEK(h->bins[c + 1].count);
            t->live[c] -= n < t->live[c] ? n : t->live[c];
        }
}

static void totals(class_totals_t *t) {
    memset(t, 0, sizeof *t);
    cv_arena_lock();
    cv_arena_each_page_locked(count_page, t);
    count_bins(t);
    count_arena(t);
    cv_arena_unlock();
}

/* st from one page walk, whose totals t the caller may use as well. */
static void read_with(struct carve_stats *st, class_totals_t *t) {
    totals(t);
    memset(st, 0, sizeof *st);
    st->class_count = CLASS_COUNT;
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        struct carve_class_stats *k = &st->classes[c];
        k->size = cv_class_size[c];
        k->pages = t->pages[c];
        k->live = t->live[c];
        k->mapped = t->mapped[c];
        k->committed = t->carved[c] * cv_class_size[c];
        k->purged = t->purged[c];
        st->live += k->live * k->size;
    }
    st->chunks = t->chunks;
    st->large_live = atomic_load_explicit(&cv_stats.large_count, memory_order_relaxed);
    st->large_mapped = atomic_load_explicit(&cv_stats.large_bytes, memory_order_relaxed);
    st->large_cached = atomic_load_explicit(&cv_stats.large_cached, memory_order_relaxed);
    st->live += st->large_mapped;
    /* lazily purged cached mappings still hold address space */
    st->mapped = t->chunks * CHUNK_SIZE + st->large_mapped + st->large_cached +
                 atomic_load_explicit(&cv_stats.large_lazy, memory_order_relaxed);
    st->committed = atomic_load_explicit(&cv_stats.small_committed, memory_order_relaxed) +
                    st->large_mapped + st->large_cached;
    st->purged = t->small_purged + atomic_load_explicit(&cv_stats.large_purged, memory_order_relaxed);
    st->lazy = atomic_load_explicit(&cv_stats.small_lazy, memory_order_relaxed) +
               atomic_load_explicit(&cv_stats.large_lazy, memory_order_relaxed);
    st->cgroup_limit = cv_cgroup_limit();
    const struct {
        const char *name;
        const cv_lock_t *lock;
    } locks[] = {
        {"arena", cv_arena_lock_stats()},
        {"large cache", cv_large_lock_stats()},
        {"debug quarantine", cv_debug_lock_stats()},
    };
    const size_t n = sizeof locks / sizeof locks[0];
    _Static_assert(sizeof locks / sizeof locks[0] + 1 <= CARVE_STATS_LOCKS, "locks[] of carve_stats");
    for (size_t i = 0; i < n; i++) {
        st->locks[i].name = locks[i].name;
        st->locks[i].acquired = CV_PEEK(locks[i].lock->acquired);
        st->locks[i].contended = atomic_load_explicit(&locks[i].lock->contended, memory_order_relaxed);
    }
    /* the thread heaps' locks, summed (every heap ever made, pooled ones too) */
    st->locks[n].name = "heaps";
    st->locks[n].acquired = st->locks[n].contended = 0;
    for (const heap_t *h = cv_heap_first(); h != NULL; h = h->next_all) {
        st->locks[n].acquired += CV_PEEK(h->lock.acquired);
        st->locks[n].contended += atomic_load_explicit(&h->lock.contended, memory_order_relaxed);
    }
    st->lock_count = n + 1;
}

void cv_stats_read(struct carve_stats *st) {
    class_totals_t t;
    read_with(st, &t);
}

void cv_stats_collect(struct carve_mallinfo2 *mi) {
    struct carve_stats st;
    cv_stats_read(&st);
    memset(mi, 0, sizeof *mi);
    mi->arena = st.chunks * CHUNK_SIZE;
    mi->hblks = st.large_live;
    mi->hblkhd = st.large_mapped;
    /* as glibc: uordblks + fordblks == arena; mapped blocks are in hblkhd only */
    size_t small_live = st.live - st.large_mapped;
    mi->uordblks = small_live;
    mi->fordblks = mi->arena > small_live ? mi->arena - small_live : 0;
    mi->keepcost = st.large_cached;
}

static int cap_int(size_t v) {
    return v > INT_MAX ? INT_MAX : (int)v;
}

void cv_stats_collect_legacy(struct carve_mallinfo *mi) {
    struct carve_mallinfo2 m;
    cv_stats_collect(&m);
    *mi = (struct carve_mallinfo){
        .arena = cap_int(m.arena),
        .ordblks = cap_int(m.ordblks),
        .hblks = cap_int(m.hblks),
        .hblkhd = cap_int(m.hblkhd),
        .uordblks = cap_int(m.uordblks),
        .fordblks = cap_int(m.fordblks),
        .keepcost = cap_int(m.keepcost),
    };
}

/* glibc's layout: one heap (carve's arena, all threads' pages) whose
 * <sizes> list free blocks by size range (here: by class, blocks carved
 * and not live), then totals; "mmap" are the large blocks. The figures
 * are read first, so no lock is held while fp (which may allocate) is
 * written. */
int cv_stats_xml(FILE *fp) {
    struct carve_stats st;
    class_totals_t t;
    read_with(&st, &t);
    size_t free_count = 0, free_bytes = 0, from = 1;
    int bad = fprintf(fp, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n") < 0;
    for (size_t c = 0; c < st.class_count; c++) {
        const struct carve_class_stats *k = &st.classes[c];
        size_t carved = k->committed / k->size;
        size_t n = carved > k->live ? carved - k->live : 0;
        if (n > 0)
            bad |= fprintf(fp, "  <size from=\"%zu\" to=\"%zu\" total=\"%zu\" count=\"%zu\"/>\n",
                           from, k->size, n * k->size, n) < 0;
        free_count += n;
        free_bytes += n * k->size;
        from = k->size + 1;
    }
    /* as glibc's: "system" and "aspace" are the arena's memory, the large
     * blocks (its mmapped chunks) only in the "mmap" total */
    size_t small = st.chunks * CHUNK_SIZE, peak = t.chunks_peak * CHUNK_SIZE;
    bad |= fprintf(fp,
                   "</sizes>\n"
                   "<total type=\"fast\" count=\"0\" size=\"0\"/>\n"
                   "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n"
                   "<system type=\"current\" size=\"%zu\"/>\n"
                   "<system type=\"max\" size=\"%zu\"/>\n"
                   "<aspace type=\"total\" size=\"%zu\"/>\n"
                   "<aspace type=\"mprotect\" size=\"%zu\"/>\n"
                   "</heap>\n"
                   "<total type=\"fast\" count=\"0\" size=\"0\"/>\n"
                   "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n"
                   "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n"
                   "<system type=\"current\" size=\"%zu\"/>\n"
                   "<system type=\"max\" size=\"%zu\"/>\n"
                   "<aspace type=\"total\" size=\"%zu\"/>\n"
                   "<aspace type=\"mprotect\" size=\"%zu\"/>\n"
                   "</malloc>\n",
                   free_count, free_bytes, small, peak, small, small, free_count, free_bytes,
                   st.large_live, st.large_mapped, small, peak, small, small) < 0;
    return bad ? -1 : 0;
}

static const char *purge_name(unsigned mode) {
    static const char *const names[] = {"staged", "free", "dontneed", "none"};
    return mode < sizeof names / sizeof names[0] ? names[mode] : "?";
}

void cv_stats_print(void) {
    class_totals_t t;
    struct carve_stats st;
    read_with(&st, &t);
    cv_msg_print("carve %s statistics\n", CARVE_VERSION);
    cv_msg_print("%10s %10s %12s %12s %14s\n", "class", "pages", "live", "carved", "live bytes");
    size_t live_bytes = 0;
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        if (t.pages[c] == 0)
            continue;
        size_t lb = t.live[c] * cv_class_size[c];
        live_bytes += lb;
        cv_msg_print("%10u %10zu %12zu %12zu %14zu\n", cv_class_size[c], t.pages[c], t.live[c],
                     t.carved[c], lb);
    }
    cv_msg_print("small: %zu bytes live in %zu chunks of %zu KiB, %zu abandoned pages\n",
                 live_bytes, t.chunks, CHUNK_SIZE >> 10, t.abandoned);
    cv_msg_print("large: %zu blocks live, %zu bytes mapped, %zu bytes cached, %zu allocated in all\n",
                 st.large_live, st.large_mapped, st.large_cached,
                 atomic_load(&cv_stats.large_total));
    cv_msg_print("memory: %zu bytes committed, %zu lazily freed, %zu purged since start "
                 "(purge=%s, decay %u ms, lazy %u ms)",
                 st.committed, st.lazy, st.purged, purge_name(cv_options.purge),
                 cv_options.decay_ms, cv_options.lazy_ms);
    if (st.cgroup_limit)
        cv_msg_print(", cgroup limit %zu bytes", st.cgroup_limit);
    cv_msg_print("\n");
    for (size_t i = 0; i < st.lock_count; i++)
        cv_msg_print("lock %s: taken %zu times, %zu of them contended\n", st.locks[i].name,
                     st.locks[i].acquired, st.locks[i].contended);
}

/* stats=1: the statistics at exit (a destructor, so that a program that
 * never calls exit() through the C library's atexit path still prints). */
__attribute__((destructor)) static void print_at_exit(void) {
    if (cv_options.stats_at_exit)
        cv_stats_print();
}
