// test_background.cc: the default purge policy (purge=staged) and the
// purger thread that background=auto starts and ends (src/purge.c).
//
// With the defaults, freed memory must leave the RSS that top and ps show:
// MADV_FREE first, MADV_DONTNEED lazy_ms after the free. A program that
// goes idle cannot purge by itself, so a purger thread starts once more
// than 4 MiB waits to be purged, and ends when nothing does; never in a
// program that frees little, never under a seccomp filter, and not in a
// fork child until the child has something to give back.
//
// Each test runs in a child process: the purger is process state, and the
// child starts with none (threads do not survive fork).

#include <carve.h>

#include "util.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include <dirent.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/filter.h>
#include <linux/seccomp.h>

namespace {

using carve_test::kMiB;
using carve_test::scaled;
using carve_test::sleep_ms;
using carve_test::wait_child;

// carve's threads of one kind in this process, by name (carve-purge,
// carve-signal): counting by name leaves out a sanitizer runtime's own.
int threads_named(const char *name) {
    DIR *d = opendir("/proc/self/task");
    if (d == nullptr)
        return -1;
    int n = 0;
    while (struct dirent *e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        char path[320], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == nullptr)
            continue;
        if (fgets(comm, sizeof comm, f) != nullptr && strncmp(comm, name, strlen(name)) == 0 &&
            comm[strlen(name)] == '\n')
            n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

int purgers() { return threads_named("carve-purge"); }

// Waits up to ms for the number of purgers to become n.
bool purgers_become(int n, unsigned ms) {
    for (unsigned t = 0; t < ms; t += 5) {
        if (purgers() == n)
            return true;
        sleep_ms(5);
    }
    return purgers() == n;
}

// Small blocks of 16..1024 bytes, total bytes in all, written.
std::vector<void *> alloc_small(size_t total) {
    std::vector<void *> v;
    size_t sum = 0;
    for (size_t i = 0; sum < total; i++) {
        size_t n = 16 + (i * 7919) % 1009;
        void *p = carve_malloc(n);
        if (p == nullptr)
            break;
        memset(p, 0x5c, n);
        v.push_back(p);
        sum += n;
    }
    return v;
}

void free_all(std::vector<void *> &v) {
    for (void *p : v)
        carve_free(p);
    v.clear();
}

// Slices touched and not purged, and lazily purged ones (MADV_FREE'd,
// still counted in RSS until the kernel takes them).
struct Mem {
    size_t committed, lazy;
    Mem() {
        carve_stats s;
        carve_stats_read(&s);
        committed = s.committed - s.large_mapped - s.large_cached;
        lazy = s.lazy;
    }
};

// The defaults, with the windows long enough that a slow sanitized build
// still frees within one: what it frees is recent demand, so it waits for
// the decay and the lazy stage instead of going at once as excess.
int set_staged(unsigned decay_ms, unsigned lazy_ms) {
    char decay[32], lazy[32];
    snprintf(decay, sizeof decay, "decay_ms=%u", decay_ms);
    snprintf(lazy, sizeof lazy, "lazy_ms=%u", lazy_ms);
    if (carve_option_set("purge=staged") != 0 || carve_option_set(decay) != 0 ||
        carve_option_set(lazy) != 0)
        return 1;
    return 0;
}

// Runs fn in a child process: exit status, or 1000 + the signal that
// killed it.
int in_child(int (*fn)()) { return carve_test::run_in_child(fn, 30); }

// Frees 32 MiB and sleeps, with no call into carve but statistics: the
// purger starts, takes the memory through both stages, and ends.
// Exit codes: 2 the purger never started, 3 memory still lazy or
// resident, 4 the purger did not end.
int auto_purger_gives_back_and_ends() {
    if (set_staged(1000, 1500) != 0 || carve_option_set("background=auto") != 0)
        return 1;
    const size_t total = scaled(32 * kMiB, 16 * kMiB);
    if (purgers() != 0)
        return 5;
    std::vector<void *> v = alloc_small(total);
    const Mem before;
    free_all(v);
    int most = purgers();
    bool gone = false;
    for (int i = 0; i < 100 && !gone; i++) { // 5 s
        sleep_ms(50);
        int n = purgers();
        most = n > most ? n : most;
        const Mem m;
        gone = m.committed + total * 3 / 4 <= before.committed && m.lazy < total / 8;
    }
    if (most < 1)
        return 2;
    if (!gone)
        return 3;
    return purgers_become(0, 3000) ? 0 : 4;
}

TEST(CarveBackground, AutoPurgerStartsGivesMemoryBackAndEnds) {
    CARVE_SKIP_IN_DEBUG_MODE();
    const int code = in_child(auto_purger_gives_back_and_ends);
    EXPECT_EQ(code, 0) << "child exit code " << code
                                  << " (2: no purger, 3: memory kept, 4: the purger stayed)";
}

// A program that frees little gets no thread: 1 MiB allocated and freed
// again and again, with slow-path calls between.
int little_frees_start_nothing() {
    if (set_staged(50, 1000) != 0 || carve_option_set("background=auto") != 0)
        return 1;
    for (int i = 0; i < 20; i++) {
        std::vector<void *> v = alloc_small(kMiB);
        free_all(v);
        void *big = carve_malloc(kMiB); // a slow path either way
        carve_free(big);
        sleep_ms(10);
    }
    return purgers() == 0 ? 0 : 2;
}

TEST(CarveBackground, AProgramThatFreesLittleGetsNoThread) {
    CARVE_SKIP_IN_DEBUG_MODE();
    const int code = in_child(little_frees_start_nothing);
    EXPECT_EQ(code, 0) << "child exit code " << code << " (2: a purger thread started)";
}

// Under a seccomp filter (here one that allows everything: it is the
// filter's presence that counts) no thread is started, and the slow paths
// take both stages instead.
int no_thread_under_seccomp() {
    struct sock_filter filter[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {1, filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 77;
    if (set_staged(20, 100) != 0 || carve_option_set("background=auto") != 0)
        return 1;
    const size_t total = scaled(32 * kMiB, 16 * kMiB);
    std::vector<void *> v = alloc_small(total);
    const Mem before;
    free_all(v);
    for (int i = 0; i < 10; i++) {
        sleep_ms(60);
        void *big = carve_malloc(kMiB); // a slow path: a pass when one is due
        carve_free(big);
    }
    if (purgers() != 0)
        return 2;
    const Mem m;
    return m.committed + total * 3 / 4 <= before.committed && m.lazy < total / 8 ? 0 : 3;
}

TEST(CarveBackground, NoThreadUnderASeccompFilterAndTheSlowPathsPurge) {
    CARVE_SKIP_IN_DEBUG_MODE();
    const int code = in_child(no_thread_under_seccomp);
    if (code == 77)
        GTEST_SKIP() << "seccomp filters are not available here";
    EXPECT_EQ(code, 0) << "child exit code " << code
                                  << " (2: a thread started, 3: memory kept)";
}

// A fork child of a process whose purger runs has none until it frees
// enough itself.
int fork_child_starts_its_own_when_needed() {
    if (set_staged(20, 100) != 0 || carve_option_set("background=auto") != 0)
        return 1;
    const size_t total = scaled(32 * kMiB, 16 * kMiB);
    std::vector<void *> v = alloc_small(total);
    free_all(v);
    if (!purgers_become(1, 1000))
        return 2; // the parent's purger did not start
    // It ends once it gave everything back: the child must not inherit
    // memory waiting to be purged, which would be work for a purger of its
    // own at its first slow path.
    if (!purgers_become(0, 5000))
        return 7;
    std::vector<void *> w = alloc_small(total);
    pid_t pid = fork();
    if (pid == 0) {
        if (purgers() != 0)
            _exit(3);
        void *p = carve_malloc(100); // calls that free nothing start nothing
        carve_free(p);
        void *big = carve_malloc(kMiB);
        carve_free(big);
        if (purgers() != 0)
            _exit(4);
        free_all(w); // now it has something to give back
        _exit(purgers_become(1, 1000) ? 0 : 5);
    }
    free_all(w);
    const int status = wait_child(pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 6;
}

TEST(CarveBackground, AForkChildStartsNoPurgerUntilItNeedsOne) {
    CARVE_SKIP_IN_DEBUG_MODE();
#ifdef CARVE_TSAN
    GTEST_SKIP() << "ThreadSanitizer kills a child that starts a thread after a fork of a "
                    "multi-threaded process (here the purger's)";
#endif
    const int code = in_child(fork_child_starts_its_own_when_needed);
    EXPECT_EQ(code, 0) << "child exit code " << code
                                  << " (2: no purger in the parent, 3/4: a purger in the child"
                                     " before it freed, 5: none after, 7: the parent's never"
                                     " ended)";
}

// background=0 set at run time ends a running purger before it returns.
int background_off_stops_the_purger() {
    if (set_staged(1000, 1500) != 0 || carve_option_set("background=auto") != 0)
        return 1;
    std::vector<void *> v = alloc_small(scaled(32 * kMiB, 16 * kMiB));
    free_all(v);
    if (!purgers_become(1, 1000))
        return 2;
    if (carve_option_set("background=0") != 0)
        return 1;
    return purgers_become(0, 200) ? 0 : 3;
}

TEST(CarveBackground, BackgroundZeroEndsARunningPurger) {
    CARVE_SKIP_IN_DEBUG_MODE();
    const int code = in_child(background_off_stops_the_purger);
    EXPECT_EQ(code, 0) << "child exit code " << code
                                  << " (2: no purger started, 3: it did not end)";
}

// Without a thread, the two stages in order: after decay_ms the memory is
// lazily freed (MADV_FREE: counted, still in RSS), after lazy_ms it is
// gone (MADV_DONTNEED). purge=free stays at the first stage.
int stages_in_order(const char *purge) {
    if (set_staged(300, 800) != 0 || carve_option_set("background=0") != 0 ||
        carve_option_set(purge) != 0)
        return 1;
    const size_t total = scaled(32 * kMiB, 16 * kMiB);
    std::vector<void *> v = alloc_small(total);
    free_all(v);
    sleep_ms(350);
    void *big = carve_malloc(kMiB);
    carve_free(big);
    const Mem first;
    if (first.lazy < total / 2)
        return 2;
    sleep_ms(500);
    big = carve_malloc(kMiB);
    carve_free(big);
    const Mem second;
    const bool dropped = second.lazy < total / 8;
    return dropped == (strcmp(purge, "purge=staged") == 0) ? 0 : 3;
}

int staged_stages() { return stages_in_order("purge=staged"); }
int free_stays_lazy() { return stages_in_order("purge=free"); }

TEST(CarveBackground, StagedPurgeGoesLazyThenDropsWhileFreeStaysLazy) {
    CARVE_SKIP_IN_DEBUG_MODE();
    int code = in_child(staged_stages);
    EXPECT_EQ(code, 0) << "purge=staged: child exit code " << code
                                  << " (2: not lazily freed after decay_ms, 3: still lazy after lazy_ms)";
    code = in_child(free_stays_lazy);
    EXPECT_EQ(code, 0) << "purge=free: child exit code " << code
                                  << " (2: not lazily freed after decay_ms, 3: dropped after lazy_ms)";
}

TEST(CarveBackground, OptionsTakeTheirWords) {
    EXPECT_EQ(carve_option_set("purge=staged"), 0);
    EXPECT_EQ(carve_option_set("lazy_ms=2000"), 0);
    EXPECT_EQ(carve_option_set("background=auto"), 0);
    EXPECT_NE(carve_option_set("background=sometimes"), 0);
    EXPECT_NE(carve_option_set("purge=later"), 0);
    EXPECT_EQ(carve_option_set("lazy_ms=1000"), 0);
}


// ---- the operator's trigger: signal= ---------------------------------------

// With signal=SIGUSR2, the signal makes carve print its statistics on
// stderr and give free memory back, from its own thread, while the program
// only sleeps. Exit codes: 2 no carve-signal thread, 3 no statistics on
// stderr, 4 memory kept.
int signal_prints_and_purges() {
    char path[] = "/tmp/carve-signal.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || dup2(fd, 2) < 0)
        return 1;
    unlink(path);
    // nothing goes back on its own: only the signal's trim can
    if (carve_option_set("background=0") != 0 || carve_option_set("purge=none") != 0 ||
        carve_option_set("signal=SIGUSR2") != 0)
        return 1;
    bool up = false; // it names itself once it runs
    for (int t = 0; t < 200 && !up; t++, sleep_ms(5))
        up = threads_named("carve-signal") == 1;
    if (!up)
        return 2;
    const size_t total = scaled(32 * kMiB, 16 * kMiB);
    std::vector<void *> v = alloc_small(total);
    free_all(v);
    const Mem before;
    if (raise(SIGUSR2) != 0)
        return 1;
    char text[8192] = "";
    for (int t = 0; t < 400; t++) { // up to 4 s
        sleep_ms(10);
        ssize_t n = pread(fd, text, sizeof text - 1, 0);
        text[n > 0 ? n : 0] = '\0';
        if (strstr(text, "statistics") != nullptr && strstr(text, "memory:") != nullptr)
            break;
    }
    if (strstr(text, "statistics") == nullptr)
        return 3;
    for (int t = 0; t < 200 && Mem().committed + total / 2 > before.committed; t++)
        sleep_ms(10);
    return Mem().committed + total / 2 <= before.committed ? 0 : 4;
}

TEST(CarveSignal, TheSignalPrintsStatisticsAndGivesMemoryBackFromCarvesThread) {
    CARVE_SKIP_IN_DEBUG_MODE();
    const int code = in_child(signal_prints_and_purges);
    EXPECT_EQ(code, 0) << "child exit code " << code
                       << " (2: no carve-signal thread, 3: no statistics, 4: memory kept)";
}

TEST(CarveSignal, TakesSignalsByNameOrNumberAndRefusesFaultsAndKill) {
    int child = carve_test::run_in_child([]() -> int {
        const char *good[] = {"signal=SIGUSR2", "signal=USR1", "signal=12", "signal=none",
                              "signal=0"};
        const char *bad[] = {"signal=SIGKILL", "signal=9", "signal=SEGV", "signal=11",
                             "signal=999", "signal=USR3", "signal="};
        for (const char *s : good)
            if (carve_option_set(s) != 0)
                return 1;
        for (const char *s : bad)
            if (carve_option_set(s) != -1)
                return 2;
        return threads_named("carve-signal") <= 1 ? 0 : 3;
    });
    EXPECT_EQ(child, 0) << "1: a good value refused, 2: a bad one taken, 3: threads";
}
}  // namespace
