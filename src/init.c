/*
 * init.c: process start-up, thread exit and fork.
 *
 * Initialisation is lazy, on the first allocation's slow path, because the
 * dynamic loader or the C library may call malloc before any constructor
 * runs. It must not allocate through anything but carve itself, and a call
 * it makes may come back into malloc on the same thread (pthread_atfork can
 * allocate): that recursion is let through, since everything malloc needs
 * is in place before those calls. A constructor runs it too, for the
 * programs that never allocate: CARVE_OPTIONS=help and stats=1 must still
 * answer under LD_PRELOAD=libcarve.so /bin/true.
 */
#include "internal.h"
#include "debug.h"

#include <sched.h>

pthread_key_t cv_heap_key;
_Atomic int cv_init_state; /* 0: not started, 1: running, 2: done */
static _Atomic uintptr_t init_thread;

/* Every lock carve has is taken before fork, so the child finds none held
 * by a thread that does not exist there. */
static void fork_prepare(void) {
    cv_debug_fork_prepare();
    cv_arena_fork_prepare();
    cv_large_fork_prepare();
}

static void fork_parent(void) {
    cv_large_fork_parent();
    cv_arena_fork_parent();
    cv_debug_fork_parent();
}

static void fork_child(void) {
    cv_purge_fork_child();
    cv_large_fork_child();
    cv_arena_fork_child();
    cv_heap_fork_child(); /* after the arena lock is usable again */
    cv_debug_fork_child();
}

static CARVE_COLD bool init_slow(void) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&cv_init_state, &expected, 1)) {
        /* The first malloc runs this: it must not leave errno changed by
         * the files and calls it tries on the way (a cgroup file that does
         * not exist: ENOENT). */
        int saved = errno;
        atomic_store(&init_thread, cv_thread_id());
        cv_options_parse();
        cv_purge_init();
        if (pthread_key_create(&cv_heap_key, cv_heap_thread_done) != 0) {
            cv_msg_print("carve: pthread_key_create failed; thread exit will leak heaps\n");
        }
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        atomic_store_explicit(&cv_init_state, 2, memory_order_release);
        errno = saved;
        return true;
    }
    if (atomic_load(&init_thread) == cv_thread_id())
        return true; /* called back from inside the initialisation */
    while (atomic_load_explicit(&cv_init_state, memory_order_acquire) != 2)
        sched_yield();
    return true;
}

bool cv_init(void) {
    if (likely(atomic_load_explicit(&cv_init_state, memory_order_acquire) == 2))
        return true;
    return init_slow();
}

__attribute__((constructor)) static void at_load(void) {
    cv_init();
}

__attribute__((destructor)) static void at_exit(void) {
    if (cv_options.stats_at_exit)
        cv_stats_print();
}
