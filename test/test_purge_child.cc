// test_purge_child.cc: purges that each run in a child process, for what the
// test process could not undo: a seccomp filter that kills on
// process_madvise (purges must not call it), memory locked with mlock
// (purges fail there, and calloc must still clear), and the background
// purger of background=1, which cannot be stopped once started: it purges
// while the program sleeps, honours purge=none, leaves the program's signals
// alone, and where no thread can start, the slow paths purge instead.
//
// Options are global: every test starts from purge=free, decay_ms=50,
// background=0 and restores them when it ends (purge_util.h).
//
// CARVE_TEST_SCALE (default 1.0) scales the amounts of memory; test/run may
// set 0.1 for the sanitizer builds.

#include <carve.h>

#include "util.h"
#include "purge_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/filter.h>
#include <linux/seccomp.h>

namespace {

using carve_test::alloc_small;
using carve_test::Block;
using carve_test::free_all;
using carve_test::kMiB;
using carve_test::kShadowedRss;
using carve_test::rss_bytes;
using carve_test::scaled;
using carve_test::sleep_ms;
using carve_test::Stats;
using carve_test::tick;

class CarvePurgeChild : public carve_test::PurgeDefaults {};

// Runs fn in a child process (for what cannot be undone in this one: a
// seccomp filter, mlockall, the background purger); returns its exit status,
// 1000 + n when a signal n killed it, -1 when fork failed.
int in_child(int (*fn)()) { return carve_test::run_in_child(fn); }

// ---- a seccomp filter, locked memory -------------------------------------

// Purge passes hand their runs to the kernel in batches through
// process_madvise(2) where that is safe (os.c), else one madvise per run.
// A sandbox installed after carve started may kill the process on a system
// call it does not list (sshd's privilege-separated child, Chromium's
// renderers); process_madvise is not in such lists. This child installs a
// filter that kills on process_madvise, then frees and purges 64 MiB:
// it must live, and its RSS fall. Returns 0 for success.
int purge_under_a_filter_that_kills_on_process_madvise() {
#ifdef SYS_process_madvise
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_madvise, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
#endif
    const size_t total = scaled(64 * kMiB, 16 * kMiB);
    if (carve_option_set("purge=dontneed") != 0 || carve_option_set("decay_ms=0") != 0)
        return 21;
    // One purge before the filter, so that carve has used (and trusts)
    // process_madvise where the kernel has it.
    std::vector<Block> v = alloc_small(total, 29);
    if (v.empty() || free_all(v) != 0)
        return 22;
    sleep_ms(2);
    tick();
#ifdef SYS_process_madvise
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 77;  // no seccomp here: nothing to show
#else
    return 77;
#endif
    v = alloc_small(total, 30);
    if (v.empty())
        return 22;
    const size_t rss1 = rss_bytes();
    if (free_all(v) != 0)
        return 23;
    sleep_ms(2);
    tick();
    const size_t rss2 = rss_bytes();
    if (rss1 == 0 || rss2 + total / 2 > rss1)
        return 24;
    v = alloc_small(total / 4, 31);  // and the memory still works
    if (v.empty() || free_all(v) != 0)
        return 25;
    return 0;
}

TEST_F(CarvePurgeChild, APurgeUnderASeccompFilterMakesNoCallTheFilterMayKill) {
    CARVE_SKIP_IN_DEBUG_MODE();
    if (kShadowedRss)
        GTEST_SKIP() << "sanitizer build: RSS counts the shadow memory";
    const int code = in_child(purge_under_a_filter_that_kills_on_process_madvise);
    if (code == 77)
        GTEST_SKIP() << "seccomp filters are not available here";
    EXPECT_NE(code, 1000 + SIGSYS) << "killed by the filter: carve called process_madvise";
    EXPECT_EQ(code, 0) << "21: options; 22, 25: allocation failed or blocks changed; 23: blocks "
                          "changed; 24: RSS did not fall by half the freed memory; 1000 + n: "
                          "killed by signal n";
}

// Purges fail on locked memory (mlock, mlockall): the kernel keeps locked
// pages whatever the advice, and they still hold what was written. calloc,
// which skips clearing memory that a purge zeroed, must clear them; and
// the failure is the range's, not the kernel's: once the memory is
// unlocked, purges use MADV_FREE again. The child locks the range its
// blocks live in (not everything: mlockall would populate every
// reservation). Returns 0 for success.
int calloc_after_failed_purges_reads_zero() {
    const size_t total = 4 * kMiB;  // under the usual 8 MiB RLIMIT_MEMLOCK
    const size_t size = 4000;
    if (carve_option_set("decay_ms=0") != 0)
        return 31;
    std::vector<void *> blocks;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (size_t sum = 0; sum < total; sum += size) {
        void *p = carve_malloc(size);
        if (p == nullptr)
            return 32;
        memset(p, 0xa5, size);
        blocks.push_back(p);
        lo = std::min(lo, reinterpret_cast<uintptr_t>(p));
        hi = std::max(hi, reinterpret_cast<uintptr_t>(p) + size);
    }
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    lo &= ~(page - 1);
    if (hi - lo > 8 * total || mlock(reinterpret_cast<void *>(lo), hi - lo) != 0)
        return 77;  // not allowed (RLIMIT_MEMLOCK), or blocks too spread out
    for (void *p : blocks)
        carve_free(p);
    sleep_ms(2);
    tick();                // MADV_FREE, refused
    carve_malloc_trim(0);  // MADV_DONTNEED, refused
    int bad = 0;
    for (size_t i = 0; i < blocks.size(); i++) {
        auto *p = static_cast<unsigned char *>(carve_calloc(1, size));
        if (p == nullptr)
            return 32;
        for (size_t j = 0; j < size; j++)
            if (p[j] != 0) {
                bad = 1;
                break;
            }
        blocks[i] = p;
    }
    if (bad)
        return 33;
    munlock(reinterpret_cast<void *>(lo), hi - lo);
    for (void *p : blocks)
        carve_free(p);
    sleep_ms(2);
    tick();
    if (Stats().s.lazy < total / 2)
        return 34;
    return 0;
}

TEST_F(CarvePurgeChild, CallocReadsZeroWhereLockedMemoryMadeThePurgesFail) {
    CARVE_SKIP_IN_DEBUG_MODE();
    if (kShadowedRss)
        GTEST_SKIP() << "sanitizer build: the sanitizer makes mlock do nothing";
    const int code = in_child(calloc_after_failed_purges_reads_zero);
    if (code == 77)
        GTEST_SKIP() << "mlock is not allowed here (RLIMIT_MEMLOCK) or the blocks were too spread out";
    EXPECT_NE(code, 33) << "calloc returned memory that was not zero";
    EXPECT_NE(code, 34) << "once unlocked, the memory was not given back with MADV_FREE";
    EXPECT_EQ(code, 0) << "31: options; 32: allocation failed; 1000 + n: killed by signal n";
}

// ---- the background purger ---------------------------------------------

// The background purger (background=1) cannot be stopped once started, so
// these tests run it in a child process (in_child).

// With background=1 (purge=dontneed, decay_ms=20): a slow-path event, which
// starts the purger (or tries to), then frees 32 MiB of small blocks and
// waits up to `waits` times `ms` for most of them to go back, with one more
// slow-path event in each wait when `tick_each`. Returns 0 when they do,
// `missed` when they do not, 10-12 when the set-up failed.
int free_then_wait_for_purge(uint64_t seed, int waits, unsigned ms, bool tick_each, int missed) {
    const size_t total = scaled(32 * kMiB, 8 * kMiB);
    if (carve_option_set("purge=dontneed") != 0 || carve_option_set("decay_ms=20") != 0 ||
        carve_option_set("background=1") != 0)
        return 10;
    tick();
    std::vector<Block> v = alloc_small(total, seed);
    if (v.empty())
        return 11;
    const size_t before = Stats().small_committed();
    if (free_all(v) != 0)
        return 12;
    for (int i = 0; i < waits; i++) {
        sleep_ms(ms);
        if (tick_each)
            tick();
        if (Stats().small_committed() + total * 3 / 4 <= before)
            return 0;
    }
    return missed;
}

// Frees small blocks, then only sleeps (no call into carve but
// carve_stats_read: only the purger can purge): returns 0 when it gives
// most of them back within two seconds, 13 otherwise.
int background_purges() {
    return free_then_wait_for_purge(9, 100, 20, false, 13);
}

// purge=none and background=1 together, set before any thread could read
// them (as CARVE_OPTIONS would): nothing is purged while the program
// sleeps. Returns 0, or 17 when memory was purged anyway.
int background_honours_purge_none() {
    const size_t total = scaled(32 * kMiB, 8 * kMiB);
    if (carve_option_set("purge=none") != 0 || carve_option_set("decay_ms=20") != 0 ||
        carve_option_set("background=1") != 0)
        return 10;
    tick();
    std::vector<Block> v = alloc_small(total, 10);
    if (v.empty())
        return 15;
    if (free_all(v) != 0)
        return 16;
    tick();
    const Stats s1;
    sleep_ms(300);
    const Stats s2;
    if (s2.s.purged != s1.s.purged || s2.small_committed() < s1.small_committed())
        return 17;
    return 0;
}

// A program that blocks a signal in its threads and takes it with
// sigtimedwait (the usual way to handle signals in threaded code) must get
// it: the purger, started from a thread where the signal was still open,
// must not take it and die of its default action. Returns 0, or 18 when
// sigtimedwait timed out.
int background_leaves_signals_to_the_program() {
    if (carve_option_set("background=1") != 0)
        return 10;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &usr1, nullptr);
    tick();  // starts the purger, with SIGUSR1 open here
    void *p = carve_malloc(8 * kMiB);
    carve_free(p);
    sleep_ms(50);
    pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
    kill(getpid(), SIGUSR1);
    struct timespec wait = {2, 0};
    return sigtimedwait(&usr1, nullptr, &wait) == SIGUSR1 ? 0 : 18;
}

// background=1 where no thread can be started (a sandbox, a process at its
// thread limit): carve says so and purges from the slow paths instead, as
// with background=0. A seccomp filter makes clone and clone3 fail with
// EAGAIN, as pthread_create does at RLIMIT_NPROC. Returns 0; 19 when the
// freed memory was not purged; 77 without seccomp.
int purge_when_the_background_purger_cannot_start() {
#ifdef SYS_clone3
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 77;
#else
    return 77;
#endif
    // the purger fails to start; the slow paths must purge instead
    return free_then_wait_for_purge(11, 20, 25, true, 19);
}

TEST_F(CarvePurgeChild, WithoutABackgroundThreadTheSlowPathsPurge) {
    CARVE_SKIP_IN_DEBUG_MODE();
    const int code = in_child(purge_when_the_background_purger_cannot_start);
    if (code == 77)
        GTEST_SKIP() << "seccomp filters are not available here";
    EXPECT_NE(code, 19) << "background=1 and no thread: freed memory was not purged";
    EXPECT_EQ(code, 0) << "child exited with " << code << " (1000 + n: killed by signal n)";
}

TEST_F(CarvePurgeChild, BackgroundPurgerDoesNotTakeTheProgramsSignals) {
    const int code = in_child(background_leaves_signals_to_the_program);
    EXPECT_NE(code, 1000 + SIGUSR1) << "SIGUSR1 reached the purger thread and killed the process";
    EXPECT_EQ(code, 0) << "child exited with " << code << " (1000 + n: killed by signal n)";
}

TEST_F(CarvePurgeChild, BackgroundPurgerPurgesWhileTheProgramSleeps) {
    CARVE_SKIP_IN_DEBUG_MODE();

    const int code = in_child(background_purges);
    EXPECT_NE(code, 13) << "background=1: freed memory was not purged within 2 s of sleep";
    EXPECT_EQ(code, 0) << "child exited with " << code << " (1000 + n: killed by signal n)";
}

TEST_F(CarvePurgeChild, BackgroundPurgerHonoursPurgeNone) {
    const int code = in_child(background_honours_purge_none);
    EXPECT_NE(code, 17) << "purge=none with background=1: the background thread still purged";
    EXPECT_EQ(code, 0) << "child exited with " << code << " (1000 + n: killed by signal n)";
}

}  // namespace
