/*
 * purge.c: when free memory goes back to the kernel, and how.
 *
 * Free slices and cached large mappings wait decay_ms, so that memory freed
 * and soon reused is not faulted in again, then go back in two stages
 * (purge=staged, the default): MADV_FREE first, which a reuse undoes
 * without a fault, then, lazy_ms after the free, MADV_DONTNEED, which RSS
 * in top and ps shows (MADV_FREE'd pages stay in it until the kernel is
 * short of memory). purge=free stops at the first stage, purge=dontneed
 * skips it, purge=none does nothing. The decay is for memory likely to be
 * reused; a heap that shrinks (frees beyond what it took in the last decay
 * periods) gives that excess back at once (cv_arena_purge_excess), with
 * MADV_DONTNEED when staged, as an idle program would otherwise hold it.
 *
 * Purging runs from the slow paths (a page going back to the arena, a
 * large block freed), at most twice per decay period, and from a purger
 * thread, which also purges while the program makes no call. By default
 * (background=auto) the thread starts when more than 4 MiB waits to be
 * purged, and ends when nothing does.
 *
 * Near the cgroup's memory limit (cgroup.c) purging is at once and with
 * MADV_DONTNEED.
 */
#include "internal.h"

#include <stdlib.h>

static struct {
    /* ms: when the last pass ran. A pass is due half a decay period later,
     * with the decay in force now: a decay shortened at run time takes
     * effect at once, not after the wait the old one set. */
    _Atomic uint64_t last_pass;
    _Atomic bool thread_started;
    /* set when the purger could not be started: the slow paths purge
     * instead (cv_options is written only before threads exist) */
    _Atomic bool thread_failed;
    _Atomic bool running;      /* one pass at a time */
    pthread_mutex_t mutex;     /* stop and the purger's naps */
    pthread_cond_t wake;
    bool stop;                 /* cv_purge_stop: the purger must end */
} purge = {.mutex = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

/* The purger's naps are timed on CLOCK_MONOTONIC: a clock set back must
 * not stall it. */
static void init_wake(void) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&purge.wake, &attr);
    pthread_condattr_destroy(&attr);
}

void cv_purge_init(void) {
    init_wake();
}

/* ---- passes ------------------------------------------------------------- */

/* MADV_DONTNEED at once when asked for, or near the cgroup limit (lazily
 * freed pages still count against it). */
static bool use_dontneed(bool pressure) {
    return pressure || cv_options.purge == PURGE_DONTNEED;
}

/* Free slices beyond recent demand are not likely to be reused soon: with
 * purge=staged they skip the lazy stage. */
static bool excess_dontneed(bool pressure) {
    return use_dontneed(pressure) || cv_options.purge == PURGE_STAGED;
}

static uint64_t max_u64(uint64_t a, uint64_t b) {
    return a > b ? a : b;
}

static void pass(uint64_t now) {
    if (cv_options.purge == PURGE_NONE)
        return;
    bool pressure = cv_cgroup_pressure();
    uint64_t decay = pressure ? 0 : cv_options.decay_ms;
    uint64_t lazy = max_u64(cv_options.lazy_ms, decay);
    bool dontneed = use_dontneed(pressure);
    cv_arena_purge(now, decay, cv_options.purge == PURGE_FREE ? UINT64_MAX : lazy, dontneed);
    cv_arena_purge_excess(excess_dontneed(pressure));
    cv_large_purge(now, decay, lazy, dontneed);
}

/* ---- the background purger ---------------------------------------------- */

/* With background=auto the purger starts once BACKGROUND_START waits to
 * be purged, so that a program that never frees much never gets a thread. */

_Atomic bool cv_purge_start_wanted;

/* What a pass may still give back: free slices still resident, lazily
 * purged ones that purge=staged will drop, and the large cache. */
static size_t pending_bytes(void) {
    size_t n = cv_arena_idle_bytes() +
               atomic_load_explicit(&cv_stats.large_cached, memory_order_relaxed) +
               atomic_load_explicit(&cv_stats.large_lazy, memory_order_relaxed);
    if (cv_options.purge == PURGE_STAGED)
        n += atomic_load_explicit(&cv_stats.small_lazy, memory_order_relaxed);
    return n;
}

/* Sleeps ms, or less when cv_purge_stop wakes it; false when it should end. */
static bool nap(unsigned ms) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&purge.mutex);
    while (!purge.stop && pthread_cond_timedwait(&purge.wake, &purge.mutex, &until) == 0) {
    }
    bool go_on = !purge.stop;
    pthread_mutex_unlock(&purge.mutex);
    return go_on;
}

/* Passes every half decay period while free slices wait for theirs, every
 * quarter of lazy_ms while only lazy memory is left. With background=auto
 * it ends when nothing is left to purge; a later slow path starts another
 * if need be. The check after thread_started is cleared closes the race
 * with a slow path that saw the purger running and left it the work. */
static void *background(void *arg) {
    (void)arg;
    cv_os_thread_name("carve-purge");
    for (;;) {
        unsigned ms = cv_arena_idle_bytes() != 0 ? cv_options.decay_ms / 2 : cv_options.lazy_ms / 4;
        if (!nap(ms < 10 ? 10 : ms))
            break;
        pass(cv_os_now_ms());
        if (cv_options.background == BACKGROUND_AUTO && pending_bytes() == 0) {
            atomic_store(&purge.thread_started, false);
            bool no = false;
            if (pending_bytes() == 0 ||
                !atomic_compare_exchange_strong(&purge.thread_started, &no, true))
                return NULL;
        }
    }
    atomic_store(&purge.thread_started, false);
    return NULL;
}

/* A seccomp filter may forbid thread creation or kill the process on it:
 * background=auto does not try under one; background=1 tries, and falls
 * back to the slow paths if it fails. */
void cv_purge_start(void) {
    atomic_store_explicit(&cv_purge_start_wanted, false, memory_order_relaxed);
    bool expected = false;
    if (cv_options.background == BACKGROUND_OFF ||
        atomic_load_explicit(&purge.thread_failed, memory_order_relaxed) ||
        !atomic_compare_exchange_strong(&purge.thread_started, &expected, true))
        return;
    if (cv_options.background == BACKGROUND_AUTO && cv_os_seccomp_filtered()) {
        atomic_store_explicit(&purge.thread_failed, true, memory_order_relaxed);
        atomic_store(&purge.thread_started, false);
        return;
    }
    if (!cv_os_thread_start(background)) {
        if (cv_options.background == BACKGROUND_ON)
            cv_msg_print("carve: cannot start the background purger; purging from slow paths\n");
        atomic_store_explicit(&purge.thread_failed, true, memory_order_relaxed);
        atomic_store(&purge.thread_started, false);
    }
}

/* An option set at run time (carve_option_set): returns once the purger
 * has ended, so that it reads no option while it changes. */
void cv_purge_stop(void) {
    pthread_mutex_lock(&purge.mutex);
    purge.stop = true;
    pthread_cond_signal(&purge.wake);
    pthread_mutex_unlock(&purge.mutex);
    while (atomic_load(&purge.thread_started))
        cv_os_sleep_ms(1);
    pthread_mutex_lock(&purge.mutex);
    purge.stop = false;
    pthread_mutex_unlock(&purge.mutex);
}

/* The purger running (or asked for): the slow paths leave it the work. */
static bool background_on(void) {
    return cv_options.background != BACKGROUND_OFF &&
           !atomic_load_explicit(&purge.thread_failed, memory_order_relaxed);
}

void cv_purge_tick(void) {
    if (cv_options.purge == PURGE_NONE)
        return;
    if (background_on() && !cv_cgroup_pressure()) {
        if (atomic_load_explicit(&purge.thread_started, memory_order_relaxed))
            return;
        if (cv_options.background == BACKGROUND_ON || pending_bytes() >= BACKGROUND_START)
            atomic_store_explicit(&cv_purge_start_wanted, true, memory_order_relaxed);
    }
    uint64_t now = cv_os_now_ms();
    uint64_t step = cv_options.decay_ms / 2;
    if (now - atomic_load_explicit(&purge.last_pass, memory_order_relaxed) < (step ? step : 1))
        return;
    bool idle = false;
    if (!atomic_compare_exchange_strong(&purge.running, &idle, true))
        return; /* another thread is at it */
    atomic_store_explicit(&purge.last_pass, now, memory_order_relaxed);
    pass(now);
    atomic_store_explicit(&purge.running, false, memory_order_release);
}

/* The arena holds more free slices than recent demand calls for (a heap
 * shrinking): those go now, without waiting for the decay. */
void cv_purge_excess(void) {
    if (cv_options.purge == PURGE_NONE)
        return;
    bool pressure = cv_cgroup_pressure();
    /* a running purger keeps madvise off the program's threads: its next
     * pass (within half a decay period) takes the excess */
    if (background_on() && !pressure &&
        atomic_load_explicit(&purge.thread_started, memory_order_relaxed))
        return;
    cv_arena_purge_excess(excess_dontneed(pressure));
}

bool cv_purge_trim(void) {
    bool large = cv_large_trim();
    bool small = cv_arena_trim();
    return large || small;
}

void cv_purge_fork_child(void) {
    /* threads do not survive fork: the child starts its own purger, when it
     * has something to give back */
    pthread_mutex_init(&purge.mutex, NULL);
    init_wake();
    purge.stop = false;
    atomic_store(&cv_purge_start_wanted, false);
    atomic_store(&purge.thread_started, false);
    atomic_store(&purge.thread_failed, false);
    atomic_store(&purge.running, false);
}
