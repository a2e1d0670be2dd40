/*
 * stats.c: what carve holds, per size class, for carve_stats_print,
 * malloc_stats and mallinfo2. Page figures come from a walk of every page
 * under the arena lock; a block freed by another thread still counts as
 * live until its owner collects it.
 */
#include "internal.h"

stats_t cv_stats;

typedef struct class_totals {
    size_t pages[CLASS_COUNT];
    size_t live[CLASS_COUNT];     /* blocks */
    size_t carved[CLASS_COUNT];   /* blocks ever touched */
    size_t abandoned;             /* pages of exited threads */
} class_totals_t;

static void count_page(const page_t *page, void *arg) {
    class_totals_t *t = arg;
    unsigned c = page->class_idx;
    t->pages[c]++;
    uint32_t live = page->used & ~PAGE_IN_FULL;
    heap_t *heap = atomic_load_explicit(&page->heap, memory_order_relaxed);
    if (heap != NULL && heap->direct[c] == page && live > 0)
        live--; /* the current page's pin */
    t->live[c] += live;
    t->carved[c] += page->capacity;
    if (page->state == PAGE_ABANDONED)
        t->abandoned++;
}

static void totals(class_totals_t *t) {
    memset(t, 0, sizeof *t);
    cv_arena_walk(count_page, t);
}

void cv_stats_collect(struct carve_mallinfo2 *mi) {
    class_totals_t t;
    totals(&t);
    memset(mi, 0, sizeof *mi);
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        mi->uordblks += t.live[c] * cv_class_size[c];
    }
    mi->arena = cv_stats.chunks * CHUNK_SIZE;
    mi->fordblks = mi->arena > mi->uordblks ? mi->arena - mi->uordblks : 0;
    mi->hblks = atomic_load_explicit(&cv_stats.large_count, memory_order_relaxed);
    mi->hblkhd = atomic_load_explicit(&cv_stats.large_bytes, memory_order_relaxed);
    mi->uordblks += mi->hblkhd;
}

void cv_stats_print(void) {
    class_totals_t t;
    totals(&t);
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
    cv_msg_print("small: %zu bytes live in %zu chunks of %zu KiB (%zu KiB reserved), "
                 "%zu abandoned pages\n",
                 live_bytes, cv_stats.chunks, CHUNK_SIZE >> 10, cv_stats.reserved >> 10,
                 t.abandoned);
    cv_msg_print("large: %zu blocks live, %zu bytes mapped, %zu allocated in all\n",
                 atomic_load(&cv_stats.large_count), atomic_load(&cv_stats.large_bytes),
                 atomic_load(&cv_stats.large_total));
}
