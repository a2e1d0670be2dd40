/*
 * quarantine.c: freed blocks held back from reuse (debug=quarantine, and
 * debug=page's freed mappings), so that a use after free finds poison or a
 * PROT_NONE page instead of another live block.
 */
#include "debug.h"

/* A FIFO ring of freed blocks (small blocks by address, mappings by their
 * header), under one lock: debug mode is not about speed, and the lock is
 * never held while anything else is done. */

static struct {
    cv_lock_t lock;
    uintptr_t *ring;
    size_t cap, head, count;
    size_t bytes, maps, space; /* space: address space of the mappings held */
    bool tried;
} quar = {.lock = CV_LOCK_INIT};

const cv_lock_t *cv_debug_lock_stats(void) {
    return &quar.lock;
}

static bool entry_is_map(uintptr_t e) {
    return cv_map_kind(e) == MAP_DEBUG;
}

static size_t entry_charge(uintptr_t e) {
    return entry_is_map(e) ? CARVE_PAGE : dbg_page_of(e)->block_size;
}

static size_t entry_space(uintptr_t e) {
    return entry_is_map(e) ? ((const dmap_t *)e)->map_size : 0;
}

/* A small block freed with junk on: stops when its poison or its freed
 * trailer changed since (a write after free). */
static void check_poison(uintptr_t b, size_t bs, const char *func) {
    size_t at = first_not((const uint8_t *)b, bs - TRAILER, JUNK_FREE);
    if (at != bs - TRAILER || *trailer_of(b, bs) != freed_word(b, bs))
        cv_report_poison(b, bs, at, func);
}

/* Back to the page (small) or to the kernel (mapping), after the poison
 * check: the end of quarantine. */
static void release_small(uintptr_t b, const char *func) {
    page_t *page = dbg_page_of(b);
    if (cv_options.debug & DEBUG_JUNK)
        check_poison(b, page->block_size, func);
    cv_debug_free_to_page(page, (block_t *)b, func);
}

static void release_entry(uintptr_t e, const char *func) {
    if (entry_is_map(e))
        cv_dmap_unmap((dmap_t *)e);
    else
        release_small(e, func);
}

/* The bytes the quarantine may hold of entries like e: quarantine=
 * bytes; with debug=page and no quarantine, freed mappings still wait
 * (bounded by QUARANTINE_MAPS), so that their pages are PROT_NONE for a
 * while, as that check promises, instead of going straight back to the
 * kernel, which hands the same address to the next malloc. */
size_t cv_quarantine_limit(bool is_map) {
    if (cv_options.debug & DEBUG_QUARANTINE)
        return cv_options.quarantine;
    return is_map && ((cv_options.debug & DEBUG_PAGE) || cv_options.guard_sample) ? SIZE_MAX : 0;
}

/* Freed mappings held at most: guard_sample alone holds half its pool, so
 * that the oldest freed block makes room for a new sample. */
static size_t maps_cap(void) {
    return cv_options.debug == 0 ? GUARD_SAMPLE_SLOTS / 2 : QUARANTINE_MAPS;
}

/* Hold e back; what leaves to make room is released. */
void cv_quarantine_put(uintptr_t e, const char *func) {
    bool is_map = entry_is_map(e);
    size_t limit = cv_quarantine_limit(is_map);
    size_t charge = is_map ? CARVE_PAGE : dbg_page_of(e)->block_size;
    size_t space = entry_space(e);
    if (charge > limit || space > QUARANTINE_SPACE) {
        release_entry(e, func);
        return;
    }
    for (;;) {
        cv_lock_take(&quar.lock);
        if (!quar.tried) {
            quar.tried = true;
            size_t cap = limit / 16; /* SIZE_MAX: the most */
            cap = cap < 64 ? 64 : cap > ((size_t)1 << 20) ? (size_t)1 << 20 : cap;
            quar.ring = cv_os_map(cap * sizeof(uintptr_t));
            quar.cap = quar.ring != NULL ? cap : 0;
        }
        if (quar.cap == 0) {
            cv_lock_give(&quar.lock);
            release_entry(e, func);
            return;
        }
        if (quar.count < quar.cap && quar.bytes + charge <= limit &&
            (!is_map || (quar.maps < maps_cap() && quar.space + space <= QUARANTINE_SPACE))) {
            quar.ring[(quar.head + quar.count) % quar.cap] = e;
            quar.count++;
            quar.bytes += charge;
            quar.maps += is_map;
            quar.space += space;
            cv_lock_give(&quar.lock);
            return;
        }
        uintptr_t old = quar.ring[quar.head];
        quar.head = (quar.head + 1) % quar.cap;
        quar.count--;
        quar.bytes -= entry_charge(old);
        quar.maps -= entry_is_map(old);
        quar.space -= entry_space(old);
        cv_lock_give(&quar.lock);
        release_entry(old, func);
    }
}

void cv_debug_fork_prepare(void) {
    cv_lock_take(&quar.lock);
}

void cv_debug_fork_parent(void) {
    cv_lock_give(&quar.lock);
}

void cv_debug_fork_child(void) {
    cv_lock_give(&quar.lock);
}

/* At exit, a last look at the poison of what waits in the quarantine. */
__attribute__((destructor)) static void quarantine_check_at_exit(void) {
    if (!(cv_options.debug & DEBUG_JUNK) || quar.cap == 0)
        return;
    cv_lock_take(&quar.lock);
    for (size_t i = 0; i < quar.count; i++) {
        uintptr_t e = quar.ring[(quar.head + i) % quar.cap];
        if (entry_is_map(e))
            continue;
        check_poison(e, dbg_page_of(e)->block_size, "exit");
    }
    cv_lock_give(&quar.lock);
}
