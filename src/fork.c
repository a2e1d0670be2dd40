/*
 * fork.c: the pthread_atfork handlers (init.c registers them).
 *
 * They sit above every layer whose locks or threads they look after, so
 * that no lower layer calls up into them.
 */
#include "internal.h"
#include "debug.h"

/* Every lock carve has is taken before fork, so the child finds none held
 * by a thread that does not exist there. */
void cv_fork_prepare(void) {
    cv_debug_fork_prepare();
    cv_arena_fork_prepare();
    cv_large_fork_prepare();
}

void cv_fork_parent(void) {
    cv_large_fork_parent();
    cv_arena_fork_parent();
    cv_debug_fork_parent();
}

void cv_fork_child(void) {
    cv_purge_fork_child();
    cv_large_fork_child();
    cv_arena_fork_child();
    cv_heap_fork_child(); /* after the arena lock is usable again */
    cv_debug_fork_child();
}
