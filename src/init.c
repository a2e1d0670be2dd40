/*
 * init.c: process start-up.
 *
 * Initialisation is lazy, on the first allocation's slow path, because the
 * dynamic loader or the C library may call malloc before any constructor
 * runs. It must not allocate through anything but carve itself, and a call
 * it makes may come back into malloc on the same thread (pthread_atfork can
 * allocate): that recursion is let through, since everything malloc needs
 * is in place before those calls. A constructor runs it too, for the
 * programs that never allocate: CARVE_OPTIONS=help and stats=1 must still
 * answer under LD_PRELOAD=libcarve.so /bin/true.
 *
 * It sits below the heaps, which call it, and registers the handlers of
 * the layers above it by address: thread exit (heap.c) and fork (fork.c).
 */
#include "internal.h"

#include <sched.h>

pthread_key_t cv_heap_key;
_Atomic int cv_init_state; /* 0: not started, 1: running, 2: done */
static _Atomic uintptr_t init_thread;

static CARVE_COLD bool init_slow(void) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&cv_init_state, &expected, 1)) {
        /* The first malloc runs this: it must not leave errno changed by
         * the files and calls it tries on the way (a cgroup file that does
         * not exist: ENOENT). */
        int saved = errno;
        atomic_store(&init_thread, cv_thread_id());
        cv_options_parse();
        cv_cgroup_init();
        cv_purge_init();
        if (pthread_key_create(&cv_heap_key, cv_heap_thread_done) != 0) {
            cv_msg_print("carve: pthread_key_create failed; thread exit will leak heaps\n");
        }
        pthread_atfork(cv_fork_prepare, cv_fork_parent, cv_fork_child);
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
