/*
 * purge.c: when free memory goes back to the kernel, and how.
 *
 * Free slices and cached large mappings wait decay_ms, so that memory freed
 * and soon reused is not faulted in again, then go back: MADV_FREE by
 * default, MADV_DONTNEED with purge=dontneed, nothing with purge=none.
 * Purging runs from the slow paths (a page going back to the arena, a large
 * block freed), at most twice per decay period, or from a background thread
 * with background=1, which also purges while the program sleeps.
 * The decay is for memory likely to be reused; a heap that shrinks (frees
 * beyond what it took in the last decay periods) gives that excess back at
 * once (cv_arena_purge_excess), as an idle program would otherwise hold a
 * decay period's worth of frees until its next call.
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
} purge;

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

void cv_purge_init(void) {
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

/* MADV_DONTNEED when asked for, or near the cgroup limit (lazily freed
 * pages still count against it). */
static bool use_dontneed(bool pressure) {
    return pressure || cv_options.purge == PURGE_DONTNEED;
}

static void pass(uint64_t now) {
    if (cv_options.purge == PURGE_NONE)
        return;
    bool pressure = cv_purge_pressure();
    uint64_t decay = pressure ? 0 : cv_options.decay_ms;
    bool dontneed = use_dontneed(pressure);
    cv_arena_purge(now, decay, dontneed);
    cv_arena_purge_excess(dontneed);
    cv_large_purge(now, decay, dontneed);
}

static void *background(void *arg) {
    (void)arg;
    unsigned period = cv_options.decay_ms / 2;
    if (period < 10)
        period = 10;
    for (;;) {
        cv_os_sleep_ms(period);
        pass(cv_os_now_ms());
    }
    return NULL;
}

static void start_background(void) {
    bool expected = false;
    if (!atomic_compare_exchange_strong(&purge.thread_started, &expected, true))
        return;
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
        cv_msg_print("carve: cannot start the background purger; purging from slow paths\n");
        atomic_store_explicit(&purge.thread_failed, true, memory_order_relaxed);
    }
    errno = saved;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
}

/* background=1 and the purger running (or being started). */
static bool background_on(void) {
    return cv_options.background &&
           !atomic_load_explicit(&purge.thread_failed, memory_order_relaxed);
}

void cv_purge_tick(void) {
    if (cv_options.purge == PURGE_NONE)
        return;
    if (background_on() && !cv_purge_pressure()) {
        if (!atomic_load_explicit(&purge.thread_started, memory_order_relaxed))
            start_background();
        if (background_on())
            return;
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
    /* background=1 keeps madvise off the program's threads: the purger's
     * next pass (within half a decay period) takes the excess */
    if (background_on() && !pressure &&
        atomic_load_explicit(&purge.thread_started, memory_order_relaxed))
        return;
    cv_arena_purge_excess(use_dontneed(pressure));
}

bool cv_purge_trim(void) {
    bool large = cv_large_trim();
    bool small = cv_arena_trim();
    return large || small;
}

void cv_purge_fork_child(void) {
    /* threads do not survive fork: the child starts its own purger */
    atomic_store(&purge.thread_started, false);
    atomic_store(&purge.thread_failed, false);
    atomic_store(&purge.running, false);
}
