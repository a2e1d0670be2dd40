/*
 * fork.c: the pthread_atfork handlers (init.c registers them).
 *
 * They sit above every layer whose locks or threads they look after, so
 * that no lower layer calls up into them.
 */
#include "internal.h"
#include "debug.h"

/* ---- the parent's other threads' pages ---------------------------------- */
/*
 * In the child only the forking thread lives on. The pages of the parent's
 * other threads would stay theirs for good: nothing would reuse their free
 * blocks, frees into them would wait in thread_free forever, and a thread
 * the child starts on a dead thread's recycled stack (glibc reuses them
 * first) has that thread's id, so it would free into those pages as their
 * owner, through a heap caught at any point of an update. So the child
 * abandons them, found by walking the chunks (consistent: fork holds the
 * arena lock) and never the dead heaps' lists. A page caught mid-update
 * may lose a block or never empty (a leak, never a block handed out
 * twice); pins of dead current pages are kept for that reason (a pin
 * dropped twice would free a page under a live block). Pages with no
 * owner yet (being set up, or adopted) are left alone.
 */
static void fork_orphan(page_t *page, void *arg) {
    uintptr_t me = *(uintptr_t *)arg;
    uintptr_t owner = atomic_load_explicit(&page->owner, memory_order_relaxed);
    if (page->state == PAGE_OWNED && owner != 0 && (owner & ~(uintptr_t)1) != me)
        cv_heap_abandon_locked(page);
}

static void orphans_abandon(void) {
    uintptr_t me = cv_thread_id();
    cv_arena_lock();
    cv_arena_each_page_locked(fork_orphan, &me);
    cv_arena_unlock();
}

/* Every lock carve has is taken before fork, so the child finds none held
 * by a thread that does not exist there. */
void cv_fork_prepare(void) {
    /* the forking thread's heap, first (its owner takes the arena lock
     * under it): another thread's free may be reclaiming one of its pages
     * (free.c), and the child keeps this heap */
    if (cv_tl_heap != &cv_heap_empty)
        cv_heap_lock(cv_tl_heap);
    cv_debug_fork_prepare();
    cv_arena_fork_prepare();
    cv_large_fork_prepare();
}

void cv_fork_parent(void) {
    cv_large_fork_parent();
    cv_arena_fork_parent();
    cv_debug_fork_parent();
    if (cv_tl_heap != &cv_heap_empty)
        cv_heap_unlock(cv_tl_heap);
}

void cv_fork_child(void) {
    cv_signal_fork_child();
    cv_purge_fork_child();
    cv_large_fork_child();
    cv_heap_fork_child(); /* before the arena lock is let go: heap_all is whole */
    cv_arena_fork_child();
    orphans_abandon(); /* after the arena lock is usable again */
    cv_debug_fork_child();
    if (cv_tl_heap != &cv_heap_empty)
        cv_heap_unlock(cv_tl_heap);
}
