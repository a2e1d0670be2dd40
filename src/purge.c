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
 * Containers: pages given back with MADV_FREE stay charged to the cgroup
 * until the kernel reclaims them, and near memory.max the kernel throttles
 * or kills before it gets there. carve reads its cgroup's limit at start
 * (v2 memory.max and memory.high of the cgroup and its ancestors, or v1
 * memory.limit_in_bytes) and, once what it holds passes 3/4 of the limit,
 * purges at once and with MADV_DONTNEED, and stops caching large mappings.
 */
#include "internal.h"

#include <signal.h>
#include <stdlib.h>

static struct {
    /* ms: when the last pass ran. A pass is due half a decay period later,
     * with the decay in force now: a decay shortened at run time takes
     * effect at once, not after the wait the old one set. */
    _Atomic uint64_t last_pass;
    size_t limit;              /* cgroup memory limit in bytes, 0 if none */
    _Atomic bool thread_started;
    /* set when the purger could not be started: the slow paths purge
     * instead (cv_options is written only before threads exist) */
    _Atomic bool thread_failed;
    _Atomic bool running;      /* one pass at a time */
    pthread_mutex_t mutex;     /* stop and the purger's naps */
    pthread_cond_t wake;
    bool stop;                 /* cv_purge_stop: the purger must end */
} purge = {.mutex = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

/* ---- cgroup limits ------------------------------------------------------ */

static size_t parse_limit(const char *s) {
    if (s[0] < '0' || s[0] > '9')
        return 0; /* "max" */
    size_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (SIZE_MAX - 9) / 10)
            return 0;
        v = v * 10 + (size_t)(*s - '0');
    }
    /* v1 reports "no limit" as a huge page-rounded number */
    return v >= ((size_t)1 << 60) ? 0 : v;
}

static size_t min_limit(size_t a, size_t b) {
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

/* path = dir + "/" + file, bounded. */
static void join(char *out, size_t cap, const char *dir, size_t dlen, const char *file) {
    size_t n = dlen < cap - 1 ? dlen : cap - 1;
    memcpy(out, dir, n);
    out[n] = '\0';
    cv_msg_format(out + n, cap - n, "/%s", file);
}

static size_t limit_in(const char *dir, size_t dlen, const char *file) {
    char path[512], buf[64];
    join(path, sizeof path, dir, dlen, file);
    if (cv_os_read_file(path, buf, sizeof buf) == 0)
        return 0;
    return parse_limit(buf);
}

/* The tightest limit along the cgroup path and its ancestors, under root
 * (v2: memory.max and memory.high; v1: memory.limit_in_bytes). */
static size_t cgroup_walk(const char *root, const char *cg_path, size_t len, bool v2) {
    char dir[512];
    size_t n = cv_msg_format(dir, sizeof dir, "%s", root);
    if (n + len >= sizeof dir)
        return 0;
    memcpy(dir + n, cg_path, len);
    size_t dlen = n + len;
    while (dlen > 0 && dir[dlen - 1] == '/')
        dlen--;
    size_t limit = 0;
    for (;;) {
        if (v2) {
            limit = min_limit(limit, limit_in(dir, dlen, "memory.max"));
            limit = min_limit(limit, limit_in(dir, dlen, "memory.high"));
        } else {
            limit = min_limit(limit, limit_in(dir, dlen, "memory.limit_in_bytes"));
        }
        if (dlen <= n)
            break;
        while (dlen > n && dir[dlen - 1] != '/')
            dlen--;
        if (dlen > n)
            dlen--; /* drop the '/' */
    }
    return limit;
}

static size_t cgroup_limit(void) {
    char buf[2048];
    if (cv_os_read_file("/proc/self/cgroup", buf, sizeof buf) == 0)
        return 0;
    size_t limit = 0;
    for (char *line = buf; *line;) {
        char *end = line;
        while (*end && *end != '\n')
            end++;
        /* "id:controllers:path" */
        char *c1 = line;
        while (c1 < end && *c1 != ':')
            c1++;
        char *c2 = c1 < end ? c1 + 1 : end;
        while (c2 < end && *c2 != ':')
            c2++;
        if (c2 < end) {
            const char *ctl = c1 + 1;
            size_t ctl_len = (size_t)(c2 - ctl);
            const char *path = c2 + 1;
            size_t plen = (size_t)(end - path);
            if (ctl_len == 0 && line[0] == '0') {
                limit = min_limit(limit, cgroup_walk("/sys/fs/cgroup", path, plen, true));
                /* hybrid layouts mount the v2 hierarchy here */
                limit = min_limit(limit, cgroup_walk("/sys/fs/cgroup/unified", path, plen, true));
            } else {
                for (const char *w = ctl; w + 6 <= c2; w++) {
                    if (strncmp(w, "memory", 6) == 0 && (w == ctl || w[-1] == ',') &&
                        (w + 6 == c2 || w[6] == ',')) {
                        limit = min_limit(limit,
                                          cgroup_walk("/sys/fs/cgroup/memory", path, plen, false));
                        break;
                    }
                }
            }
        }
        line = *end ? end + 1 : end;
    }
    return limit;
}

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
    if (cv_options.cgroup)
        purge.limit = cgroup_limit();
}

size_t cv_purge_limit(void) {
    return purge.limit;
}

/* What carve holds in memory, by its own accounting: touched slices that
 * were not purged or were purged lazily (still charged to the cgroup),
 * live large blocks and the large cache, lazy entries included. */
static size_t held_bytes(void) {
    return atomic_load_explicit(&cv_stats.small_committed, memory_order_relaxed) +
           atomic_load_explicit(&cv_stats.small_lazy, memory_order_relaxed) +
           atomic_load_explicit(&cv_stats.large_bytes, memory_order_relaxed) +
           atomic_load_explicit(&cv_stats.large_cached, memory_order_relaxed) +
           atomic_load_explicit(&cv_stats.large_lazy, memory_order_relaxed);
}

bool cv_purge_pressure(void) {
    return purge.limit != 0 && held_bytes() >= purge.limit / 4 * 3;
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
    bool pressure = cv_purge_pressure();
    uint64_t decay = pressure ? 0 : cv_options.decay_ms;
    uint64_t lazy = max_u64(cv_options.lazy_ms, decay);
    bool dontneed = use_dontneed(pressure);
    cv_arena_purge(now, decay, cv_options.purge == PURGE_FREE ? UINT64_MAX : lazy, dontneed);
    cv_arena_purge_excess(excess_dontneed(pressure));
    cv_large_purge(now, decay, lazy, dontneed);
}

/* ---- the background purger ---------------------------------------------- */

/* With background=auto the purger starts once this much waits to be
 * purged, so that a program that never frees much never gets a thread. */
#define BACKGROUND_START ((size_t)4 << 20)

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
    for (;;) {
        unsigned ms = cv_arena_idle_bytes() != 0 ? cv_options.decay_ms / 2 : cv_options.lazy_ms / 4;
        if (!nap(ms < 10 ? 10 : ms))
            break;
        pass(cv_os_now_ms());
        if (cv_options.background == BACKGROUND_AUTO && pending_bytes() == 0) {
            atomic_store(&purge.thread_started, false);
            bool no = false;
            if (pending_bytes() == 0 || !atomic_compare_exchange_strong(&purge.thread_started, &no, true))
                return NULL;
        }
        if (cv_options.background == BACKGROUND_OFF)
            break;
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
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* All signals blocked in the purger (it inherits the mask of the thread
     * that starts it): a signal the program blocks in its own threads, to
     * take it with sigwait, must not be delivered to carve's thread and
     * run its default action there (SIGUSR1 killed the process). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int saved = errno;
    if (pthread_create(&t, &attr, background, NULL) != 0) {
        if (cv_options.background == BACKGROUND_ON)
            cv_msg_print("carve: cannot start the background purger; purging from slow paths\n");
        atomic_store_explicit(&purge.thread_failed, true, memory_order_relaxed);
        atomic_store(&purge.thread_started, false);
    }
    errno = saved;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
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
    if (background_on() && !cv_purge_pressure()) {
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
    bool pressure = cv_purge_pressure();
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
