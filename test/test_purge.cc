// test_purge.cc: giving free memory back to the kernel (src/purge.c).
//
// Free slices wait decay_ms (default 50) and are then purged from the slow
// paths (a page going back to the arena, a large block freed) with
// MADV_FREE (purge=free, the default), MADV_DONTNEED (purge=dontneed) or not
// at all (purge=none); carve_malloc_trim(0) purges everything at once. These
// tests check that purging happens when it should, not when it should not,
// and that memory reused after a purge holds what the program writes and
// what calloc promises (zeros).
//
// Options are global: every test starts from the defaults (purge=free,
// decay_ms=50, background=0) and restores them when it ends. No test starts
// the background purger in this process (it cannot be stopped once started):
// the tests that need it run in a child process.
//
// CARVE_TEST_SCALE (default 1.0) scales the amounts of memory and the loop
// counts; test/run may set 0.1 for the sanitizer builds.

#include <carve.h>

#include "util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
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

using carve_test::checksum;
using carve_test::fill_random;
using carve_test::scaled;

constexpr size_t kMiB = size_t(1) << 20;

// ---- helpers ------------------------------------------------------------

struct Block {
    unsigned char *p;
    size_t size;
    uint64_t sum;
};

// Small blocks of mixed sizes (16..max_size, a few up to 64 KiB when
// max_size allows) until total bytes were asked for, each filled with its
// own pattern. Empty vector if an allocation failed.
std::vector<Block> alloc_small(size_t total, uint64_t seed, size_t max_size = 4096) {
    std::mt19937_64 rng(seed);
    std::vector<Block> v;
    size_t sum = 0;
    while (sum < total) {
        size_t n = 16 + rng() % (max_size - 15);
        if (max_size > 4096 && rng() % 32 == 0)
            n = 4097 + rng() % (64 * 1024 - 4096);
        auto *p = static_cast<unsigned char *>(carve_malloc(n));
        if (p == nullptr) {
            for (Block &b : v)
                carve_free(b.p);
            return {};
        }
        fill_random(p, n, rng());
        v.push_back({p, n, checksum(p, n)});
        sum += n;
    }
    return v;
}

// Frees every block; returns how many had changed.
size_t free_all(std::vector<Block> &v) {
    size_t bad = 0;
    for (Block &b : v) {
        if (checksum(b.p, b.size) != b.sum)
            bad++;
        carve_free(b.p);
    }
    v.clear();
    return bad;
}

struct Stats {
    carve_stats s;
    Stats() { carve_stats_read(&s); }
    // Slices touched and not purged, without the large blocks and the cache.
    size_t small_committed() const { return s.committed - s.large_mapped - s.large_cached; }
    size_t class_of(size_t n) const {
        for (size_t c = 0; c < s.class_count; c++)
            if (s.classes[c].size >= n)
                return c;
        return s.class_count;
    }
};

using carve_test::rss_bytes;

constexpr bool kShadowedRss = carve_test::kSanitized;

void sleep_ms(unsigned ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// A slow-path event that runs a purge pass when one is due: freeing a large
// block (which also goes through the large cache).
void tick() {
    void *p = carve_malloc(kMiB);
    ASSERT_NE(p, nullptr);
    static_cast<unsigned char *>(p)[0] = 1;
    carve_free(p);
}

bool set_option(const char *kv) { return carve_option_set(kv) == 0; }

void set_defaults() {
    EXPECT_TRUE(set_option("purge=free"));
    EXPECT_TRUE(set_option("decay_ms=50"));
    EXPECT_TRUE(set_option("background=0"));
}

class CarvePurge : public ::testing::Test {
protected:
    void SetUp() override {
        set_defaults();
        carve_malloc_trim(0);
    }
    void TearDown() override {
        set_defaults();
        carve_malloc_trim(0);
    }
};

// ---- trim ---------------------------------------------------------------

TEST_F(CarvePurge, TrimGivesFreedMemoryBackAndReusedMemoryHoldsWhatIsWritten) {
    CARVE_SKIP_IN_DEBUG_MODE();

    const size_t total = scaled(256 * kMiB, 32 * kMiB);
    const Stats s0;
    const size_t rss0 = rss_bytes();

    std::vector<Block> v = alloc_small(total, 1, 16384);
    ASSERT_FALSE(v.empty());
    const Stats s1;
    const size_t rss1 = rss_bytes();
    EXPECT_GE(s1.small_committed(), s0.small_committed() + total);
    ASSERT_EQ(free_all(v), 0u) << "blocks changed before they were freed";

    const Stats s2;
    EXPECT_EQ(carve_malloc_trim(0), 1) << "trim found nothing to give back";
    const Stats s3;
    const size_t rss3 = rss_bytes();
    EXPECT_GT(s3.s.purged, s2.s.purged);
    EXPECT_GE(s3.s.purged, s1.s.purged + total * 3 / 4)
        << "purged " << s1.s.purged << " before the frees, " << s3.s.purged << " after the trim";
    EXPECT_LE(s3.small_committed(), s0.small_committed() + total / 16)
        << "committed " << s1.small_committed() / kMiB << " MiB before the frees, "
        << s3.small_committed() / kMiB << " MiB after the trim";
    if (!kShadowedRss && rss1 != 0) {
        EXPECT_LT(rss3, rss1 - total * 3 / 4)
            << "RSS " << rss0 / kMiB << " MiB at the start, " << rss1 / kMiB
            << " MiB with the blocks live, " << rss3 / kMiB << " MiB after free and trim";
    }

    // The purged memory is used again: what the program writes is what it
    // reads back, block by block, with every block live at once.
    v = alloc_small(total / 2, 2, 16384);
    ASSERT_FALSE(v.empty());
    const Stats s4;
    EXPECT_GE(s4.small_committed(), s3.small_committed() + total / 2);
    EXPECT_EQ(free_all(v), 0u) << "blocks in purged-then-reused memory changed";
    EXPECT_EQ(carve_malloc_trim(0), 1);
    // Nothing left to give back the second time.
    EXPECT_EQ(carve_malloc_trim(0), 0);
}

// ---- calloc after purge -------------------------------------------------

enum class Reuse { Default, Trim, DecayFree, DecayDontneed, None };

const char *reuse_name(Reuse r) {
    switch (r) {
    case Reuse::Default:
        return "no purge (decay_ms=50, reused at once)";
    case Reuse::Trim:
        return "malloc_trim";
    case Reuse::DecayFree:
        return "purge=free decay_ms=0 (MADV_FREE)";
    case Reuse::DecayDontneed:
        return "purge=dontneed decay_ms=0";
    case Reuse::None:
        return "purge=none";
    }
    return "?";
}

// Index of the first non-zero byte, or n.
size_t first_nonzero(const unsigned char *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w != 0)
            break;
    }
    for (; i < n; i++)
        if (p[i] != 0)
            return i;
    return n;
}

TEST_F(CarvePurge, CallocReadsZeroInMemoryThatWasDirtiedFreedAndPurged) {
    const size_t sizes[] = {24, 100, 3000, 40000, kMiB};
    for (Reuse mode : {Reuse::Default, Reuse::Trim, Reuse::DecayFree, Reuse::DecayDontneed,
                       Reuse::None}) {
        SCOPED_TRACE(reuse_name(mode));
        set_defaults();
        if (mode == Reuse::DecayFree) {
            ASSERT_TRUE(set_option("decay_ms=0"));
        } else if (mode == Reuse::DecayDontneed) {
            ASSERT_TRUE(set_option("decay_ms=0"));
            ASSERT_TRUE(set_option("purge=dontneed"));
        } else if (mode == Reuse::None) {
            ASSERT_TRUE(set_option("purge=none"));
        }
        for (size_t size : sizes) {
            SCOPED_TRACE("size " + std::to_string(size));
            const size_t count = std::max<size_t>(12, scaled(4 * kMiB, kMiB) / size);
            std::vector<unsigned char *> v;
            for (size_t i = 0; i < count; i++) {
                auto *p = static_cast<unsigned char *>(carve_malloc(size));
                ASSERT_NE(p, nullptr);
                memset(p, 0xff, size);
                v.push_back(p);
            }
            for (unsigned char *p : v)
                carve_free(p);
            v.clear();
            if (mode == Reuse::Trim) {
                carve_malloc_trim(0);
            } else if (mode == Reuse::DecayFree || mode == Reuse::DecayDontneed) {
                sleep_ms(2);
                tick();
            }
            size_t dirty = 0, first_bad = 0;
            for (size_t i = 0; i < count; i++) {
                auto *p = static_cast<unsigned char *>(carve_calloc(1, size));
                ASSERT_NE(p, nullptr);
                size_t at = first_nonzero(p, size);
                if (at != size && dirty++ == 0)
                    first_bad = at;
                v.push_back(p);
            }
            EXPECT_EQ(dirty, 0u) << dirty << " of " << count
                                 << " calloc'd blocks were not zero (first at byte " << first_bad
                                 << ")";
            // Dirty them again for the next round.
            for (unsigned char *p : v) {
                memset(p, 0xff, size);
                carve_free(p);
            }
        }
    }
}

// ---- decay --------------------------------------------------------------

TEST_F(CarvePurge, WithDecayZeroFreedMemoryIsPurgedWithoutTrim) {
    CARVE_SKIP_IN_DEBUG_MODE();

    ASSERT_TRUE(set_option("purge=dontneed"));
    ASSERT_TRUE(set_option("decay_ms=0"));
    const size_t total = scaled(64 * kMiB, 16 * kMiB);
    const Stats s0;

    std::vector<Block> v = alloc_small(total, 3);
    ASSERT_FALSE(v.empty());
    const Stats s1;
    const size_t rss1 = rss_bytes();
    ASSERT_EQ(free_all(v), 0u);
    // The last pages went back within the same millisecond as the previous
    // pass: one more slow-path event, a little later, purges them.
    sleep_ms(2);
    tick();
    const Stats s2;
    const size_t rss2 = rss_bytes();

    // What stays committed is the current page of each class (kept for
    // the next malloc), one 64 KiB slice each for these sizes.
    EXPECT_LE(s2.small_committed(), s0.small_committed() + 4 * kMiB)
        << "committed: " << s0.small_committed() / kMiB << " MiB at the start, "
        << s1.small_committed() / kMiB << " MiB with the blocks, " << s2.small_committed() / kMiB
        << " MiB after the frees";
    EXPECT_GE(s2.s.purged, s1.s.purged + total * 3 / 4);
    EXPECT_EQ(s2.s.large_cached, 0u) << "decay_ms=0: freed large mappings are not kept";
    if (!kShadowedRss && rss1 != 0) {
        EXPECT_LT(rss2, rss1 - total / 2)
            << "purge=dontneed: RSS " << rss1 / kMiB << " MiB with the blocks, " << rss2 / kMiB
            << " MiB after the frees";
    }

    // And the memory still works.
    v = alloc_small(total / 4, 4);
    ASSERT_FALSE(v.empty());
    EXPECT_EQ(free_all(v), 0u);
}

// Runs fn in a child process (for what cannot be undone in this one: a
// seccomp filter, mlockall, the background purger); returns its exit status,
// 1000 + n when a signal n killed it, -1 when fork failed.
int in_child(int (*fn)()) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == -1)
        return -1;
    if (pid == 0) {
        alarm(20);
        _exit(fn());
    }
    int status = 0;
    pid_t w;
    do {
        w = waitpid(pid, &status, 0);
    } while (w == -1 && errno == EINTR);
    if (w != pid)
        return -1;
    if (WIFSIGNALED(status))
        return 1000 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

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

TEST_F(CarvePurge, APurgeUnderASeccompFilterMakesNoCallTheFilterMayKill) {
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

TEST_F(CarvePurge, CallocReadsZeroWhereLockedMemoryMadeThePurgesFail) {
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

TEST_F(CarvePurge, WithTheDefaultDecayFreedMemoryIsPurgedOnceItHasWaited) {
    CARVE_SKIP_IN_DEBUG_MODE();

    const size_t total = scaled(64 * kMiB, 16 * kMiB);
    const Stats s0;
    std::vector<Block> v = alloc_small(total, 5);
    ASSERT_FALSE(v.empty());
    const Stats s1;
    ASSERT_EQ(free_all(v), 0u);
    // Twice the decay, then a slow-path event: everything freed is due.
    sleep_ms(120);
    tick();
    const Stats s2;
    EXPECT_LE(s2.small_committed(), s0.small_committed() + 4 * kMiB)
        << "committed: " << s0.small_committed() / kMiB << " MiB at the start, "
        << s1.small_committed() / kMiB << " MiB with the blocks, " << s2.small_committed() / kMiB
        << " MiB 120 ms after the frees";
    EXPECT_GE(s2.s.purged, s1.s.purged + total * 3 / 4);

    // Memory freed and reused within the decay is not purged in between:
    // a tight free/malloc cycle keeps its pages committed.
    v = alloc_small(total / 4, 6);
    ASSERT_FALSE(v.empty());
    ASSERT_EQ(free_all(v), 0u);
    const Stats s3;
    v = alloc_small(total / 4, 7);
    ASSERT_FALSE(v.empty());
    EXPECT_EQ(free_all(v), 0u);
    EXPECT_GE(s3.s.purged + total / 8 + 4 * kMiB, Stats().s.purged)
        << "memory freed less than decay_ms ago was purged";
}

// A heap that shrinks (a program frees most of what it built, then goes
// idle) gives its free pages back at once, not a decay period later: what
// is freed beyond what the program took from the arena in the last one or
// two decay periods is not likely to be needed again before it decays, and
// an idle program makes no call that would purge it later. With
// by_exited_thread, the blocks belong to a thread that has exited: its pages
// wait as abandoned pages, and the frees that empty them (from another
// thread) give them back at once too.
void expect_shrinking_heap_purged_at_once(bool by_exited_thread, uint64_t seed) {
    ASSERT_TRUE(set_option("decay_ms=300"));
    const size_t total = scaled(64 * kMiB, 32 * kMiB);
    const Stats s0;
    std::vector<Block> v;
    if (by_exited_thread)
        std::thread([&] { v = alloc_small(total, seed); }).join();
    else
        v = alloc_small(total, seed);
    ASSERT_FALSE(v.empty());
    // Two decay periods without a page going back: the allocations leave
    // the window of recent demand.
    sleep_ms(700);
    const Stats s1;
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(free_all(v), 0u);
    const Stats s2;
    const auto took = std::chrono::steady_clock::now() - t0;
    if (took >= std::chrono::milliseconds(300))
        GTEST_SKIP() << "the frees took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                     << " ms, longer than the decay: nothing would tell the two rules apart";
    // One chunk may stay idle whatever the demand, and one more may gather
    // before a pass; the current page of each class stays.
    EXPECT_LE(s2.small_committed(), s0.small_committed() + 12 * kMiB)
        << "committed: " << s0.small_committed() / kMiB << " MiB at the start, "
        << s1.small_committed() / kMiB << " MiB with the blocks, " << s2.small_committed() / kMiB
        << " MiB right after the frees";
    EXPECT_GE(s2.s.purged, s1.s.purged + total / 2);

    // And the memory still works.
    v = alloc_small(total / 4, seed + 1);
    ASSERT_FALSE(v.empty());
    EXPECT_EQ(free_all(v), 0u);
}

TEST_F(CarvePurge, AShrinkingHeapGivesItsFreePagesBackWithoutWaitingForTheDecay) {
    CARVE_SKIP_IN_DEBUG_MODE();
    expect_shrinking_heap_purged_at_once(false, 9);
}

TEST_F(CarvePurge, PagesOfAnExitedThreadThatEmptyGoBackWithoutWaitingForTheDecay) {
    CARVE_SKIP_IN_DEBUG_MODE();
    expect_shrinking_heap_purged_at_once(true, 11);
}

// A large mapping that waits in the cache past the decay is purged with
// MADV_FREE but stays mapped for reuse (its pages stay in place until the
// kernel needs them): it leaves the committed figure, counts as purged, and
// the blocks carved from it later hold what is written and what calloc
// promises.
// carve counts what it gave back with MADV_FREE (carve_stats.lazy): each
// slice from its purge until it is used again or purged with MADV_DONTNEED.
// A MADV_DONTNEED pass that also unmapped chunks whose lazily freed slices
// it had just queued counted them out twice: the count wrapped below zero,
// and under a cgroup limit carve then believed itself at the limit for good.
TEST_F(CarvePurge, LazilyFreedBytesAreCountedOnceWhenChunksGoBack) {
    CARVE_SKIP_IN_DEBUG_MODE();

    const size_t total = scaled(48 * kMiB, 24 * kMiB);
    std::vector<Block> v = alloc_small(total, 40);
    ASSERT_FALSE(v.empty());
    ASSERT_EQ(free_all(v), 0u);
    sleep_ms(60);
    tick();  // past the decay: a pass gives the rest back with MADV_FREE
    const Stats s1;
    EXPECT_GE(s1.s.lazy, total / 2) << "freed with the default purge=free";
    EXPECT_LE(s1.s.lazy, s1.s.mapped);
    // Chunks wholly free for 2 s (plus four decay periods) are unmapped by
    // the next pass, beyond a few kept (arena.c); let that pass be one that
    // purges with MADV_DONTNEED (as under a cgroup limit), which takes the
    // lazily freed slices back too.
    ASSERT_TRUE(set_option("purge=dontneed"));
    sleep_ms(2300);
    tick();
    const Stats s2;
    EXPECT_LT(s2.s.chunks, s1.s.chunks) << "no wholly free chunk was unmapped";
    EXPECT_LE(s2.s.lazy, s2.s.mapped) << "the lazily freed count wrapped: " << s2.s.lazy;
    EXPECT_EQ(s2.s.lazy, 0u) << "after a MADV_DONTNEED pass nothing is lazily freed";
}

TEST_F(CarvePurge, DecayedLargeMappingsArePurgedAndStillServeBlocks) {
    CARVE_SKIP_IN_DEBUG_MODE();

    const Stats s0;
    auto *p = static_cast<unsigned char *>(carve_malloc(8 * kMiB));
    ASSERT_NE(p, nullptr);
    memset(p, 0xff, 8 * kMiB);
    carve_free(p);
    const Stats s1;
    EXPECT_GE(s1.s.large_cached, s0.s.large_cached + 8 * kMiB) << "a freed 8 MiB block is cached";

    // Twice the decay, then a slow-path event (tick() takes a 1 MiB block,
    // which may come from the cached mapping; the rest of it still waits).
    sleep_ms(120);
    tick();
    const Stats s2;
    EXPECT_LT(s2.s.large_cached, 4 * kMiB)
        << "cached large mappings stay committed 120 ms after the free";
    EXPECT_GE(s2.s.purged, s1.s.purged + 6 * kMiB);

    // What the purged mapping serves next reads zero through calloc and
    // keeps what is written, whole or cut into pieces.
    const size_t sizes[] = {8 * kMiB, 300 * 1024, 3 * kMiB, kMiB + 1};
    std::vector<std::pair<unsigned char *, size_t>> v;
    for (size_t size : sizes) {
        auto *q = static_cast<unsigned char *>(carve_calloc(1, size));
        ASSERT_NE(q, nullptr);
        EXPECT_EQ(first_nonzero(q, size), size) << "calloc(" << size << ") not zero";
        memset(q, static_cast<int>(size & 0x7f) + 1, size);
        v.push_back({q, size});
    }
    for (auto &b : v) {
        const unsigned char want = static_cast<unsigned char>((b.second & 0x7f) + 1);
        EXPECT_TRUE(b.first[0] == want && b.first[b.second / 2] == want &&
                    b.first[b.second - 1] == want)
            << "block of " << b.second << " bytes changed";
        carve_free(b.first);
    }
    carve_malloc_trim(0);
    EXPECT_EQ(Stats().s.large_cached, 0u);
}

TEST_F(CarvePurge, WithPurgeNoneFreedMemoryStaysCommittedUntilTrim) {
    CARVE_SKIP_IN_DEBUG_MODE();

    ASSERT_TRUE(set_option("purge=none"));
    ASSERT_TRUE(set_option("decay_ms=0"));
    const size_t total = scaled(32 * kMiB, 8 * kMiB);
    std::vector<Block> v = alloc_small(total, 8);
    ASSERT_FALSE(v.empty());
    const Stats s1;
    ASSERT_EQ(free_all(v), 0u);
    sleep_ms(2);
    tick();
    sleep_ms(2);
    tick();
    const Stats s2;
    EXPECT_EQ(s2.small_committed(), s1.small_committed())
        << "purge=none: committed fell from " << s1.small_committed() << " to "
        << s2.small_committed() << " without a trim";
    EXPECT_EQ(s2.s.purged, s1.s.purged) << "purge=none: memory was purged without a trim";
    EXPECT_GT(s2.s.large_cached, 0u) << "purge=none keeps freed large mappings";

    // malloc_trim is an explicit request: it gives memory back whatever the
    // purge option (carve.h: "Returns free memory to the kernel now").
    EXPECT_EQ(carve_malloc_trim(0), 1);
    const Stats s3;
    EXPECT_LT(s3.small_committed(), s1.small_committed() - total * 3 / 4);
    EXPECT_EQ(s3.s.large_cached, 0u);
}

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

TEST_F(CarvePurge, WithoutABackgroundThreadTheSlowPathsPurge) {
    CARVE_SKIP_IN_DEBUG_MODE();
    const int code = in_child(purge_when_the_background_purger_cannot_start);
    if (code == 77)
        GTEST_SKIP() << "seccomp filters are not available here";
    EXPECT_NE(code, 19) << "background=1 and no thread: freed memory was not purged";
    EXPECT_EQ(code, 0) << "child exited with " << code << " (1000 + n: killed by signal n)";
}

TEST_F(CarvePurge, BackgroundPurgerDoesNotTakeTheProgramsSignals) {
    const int code = in_child(background_leaves_signals_to_the_program);
    EXPECT_NE(code, 1000 + SIGUSR1) << "SIGUSR1 reached the purger thread and killed the process";
    EXPECT_EQ(code, 0) << "child exited with " << code << " (1000 + n: killed by signal n)";
}

TEST_F(CarvePurge, BackgroundPurgerPurgesWhileTheProgramSleeps) {
    CARVE_SKIP_IN_DEBUG_MODE();

    const int code = in_child(background_purges);
    EXPECT_NE(code, 13) << "background=1: freed memory was not purged within 2 s of sleep";
    EXPECT_EQ(code, 0) << "child exited with " << code << " (1000 + n: killed by signal n)";
}

TEST_F(CarvePurge, BackgroundPurgerHonoursPurgeNone) {
    const int code = in_child(background_honours_purge_none);
    EXPECT_NE(code, 17) << "purge=none with background=1: the background thread still purged";
    EXPECT_EQ(code, 0) << "child exited with " << code << " (1000 + n: killed by signal n)";
}

// ---- the large cache ----------------------------------------------------

TEST_F(CarvePurge, LargeCacheStaysBoundedAndTrimEmptiesIt) {
    CARVE_SKIP_IN_DEBUG_MODE();

    constexpr size_t kCacheMax = 128 * kMiB;
    const Stats s0;
    const int loops = static_cast<int>(scaled(200, 20));
    size_t worst = 0;
    for (int i = 0; i < loops; i++) {
        auto *p = static_cast<unsigned char *>(carve_malloc(8 * kMiB));
        ASSERT_NE(p, nullptr);
        memset(p, i & 0xff, 8 * kMiB);
        ASSERT_EQ(p[8 * kMiB - 1], i & 0xff);
        carve_free(p);
        worst = std::max(worst, Stats().s.large_cached);
    }
    EXPECT_LE(worst, kCacheMax);
    EXPECT_GT(worst, 0u) << "8 MiB blocks freed in a loop are cached";

    // Many sizes at once, freed in bursts: the cache fills and evicts.
    std::mt19937_64 rng(12);
    std::vector<std::pair<unsigned char *, size_t>> live;
    for (int i = 0; i < loops; i++) {
        size_t n = (1 + rng() % 64) * kMiB - rng() % 4096;
        auto *p = static_cast<unsigned char *>(carve_malloc(n));
        ASSERT_NE(p, nullptr);
        p[0] = 1;
        p[n / 2] = 2;
        p[n - 1] = 3;
        live.push_back({p, n});
        if (live.size() >= 24 || rng() % 8 == 0) {
            for (auto &b : live) {
                EXPECT_TRUE(b.first[0] == 1 && b.first[b.second / 2] == 2 && b.first[b.second - 1] == 3);
                carve_free(b.first);
                worst = std::max(worst, Stats().s.large_cached);
            }
            live.clear();
        }
    }
    for (auto &b : live)
        carve_free(b.first);
    worst = std::max(worst, Stats().s.large_cached);
    EXPECT_LE(worst, kCacheMax) << "the large cache held " << worst / kMiB << " MiB";

    const Stats s1;
    EXPECT_EQ(s1.s.large_live, s0.s.large_live);
    carve_malloc_trim(0);
    const Stats s2;
    EXPECT_EQ(s2.s.large_cached, 0u) << "trim leaves cached large mappings";
    EXPECT_GE(s2.s.purged, s1.s.purged + s1.s.large_cached);

    // One entry may not take more than 48 MiB of the cache: a freed 40 MiB
    // block waits there, a 64 MiB one goes back at once.
    for (size_t mib : {40, 64}) {
        void *p = carve_malloc(mib * kMiB);
        ASSERT_NE(p, nullptr);
        carve_free(p);
        const size_t cached = Stats().s.large_cached;
        carve_malloc_trim(0);
        if (mib == 40)
            EXPECT_GE(cached, 40 * kMiB) << "a freed 40 MiB block is cached";
        else
            EXPECT_EQ(cached, 0u) << "a freed 64 MiB block is cached";
    }
}

TEST_F(CarvePurge, LargeReallocUpTo64MiBAndBackKeepsTheContents) {
    // Word i of the block holds word_at(i), whatever the block's address.
    auto word_at = [](size_t i) { return (i * 0x9E3779B97F4A7C15ull) ^ 0x5555aaaa5555aaaaull; };
    auto fill = [&](void *p, size_t from, size_t to) {
        auto *w = static_cast<uint64_t *>(p);
        for (size_t i = from / 8; i < to / 8; i++)
            w[i] = word_at(i);
    };
    auto first_bad = [&](const void *p, size_t n) {
        const auto *w = static_cast<const uint64_t *>(p);
        for (size_t i = 0; i < n / 8; i++)
            if (w[i] != word_at(i))
                return i * 8;
        return n;
    };

    size_t size = kMiB;
    auto *p = static_cast<unsigned char *>(carve_malloc(size));
    ASSERT_NE(p, nullptr);
    fill(p, 0, size);
    std::vector<void *> blockers;
    int moved = 0;
    for (size_t next = 2 * kMiB; next <= 64 * kMiB; next *= 2) {
        // A block allocated in between makes in-place growth less likely:
        // both mremap paths (in place and moving) get exercised.
        void *blocker = carve_malloc(512 * 1024);
        ASSERT_NE(blocker, nullptr);
        blockers.push_back(blocker);
        auto *q = static_cast<unsigned char *>(carve_realloc(p, next));
        ASSERT_NE(q, nullptr) << "realloc to " << next;
        moved += q != p;
        p = q;
        ASSERT_GE(carve_malloc_usable_size(p), next);
        ASSERT_EQ(first_bad(p, size), size) << "growing to " << next / kMiB << " MiB";
        fill(p, size, next);
        size = next;
    }
    for (size_t next = 32 * kMiB; next >= kMiB; next /= 2) {
        auto *q = static_cast<unsigned char *>(carve_realloc(p, next));
        ASSERT_NE(q, nullptr) << "realloc to " << next;
        p = q;
        ASSERT_GE(carve_malloc_usable_size(p), next);
        ASSERT_EQ(first_bad(p, next), next) << "shrinking to " << next / kMiB << " MiB";
        size = next;
    }
    // Not page-sized steps, too.
    for (size_t next : {kMiB + 12345, 3 * kMiB + 1, 300 * size_t(1024) + 7}) {
        auto *q = static_cast<unsigned char *>(carve_realloc(p, next));
        ASSERT_NE(q, nullptr);
        p = q;
        size_t keep = std::min(size, next) & ~size_t(7);
        ASSERT_EQ(first_bad(p, keep), keep) << "realloc to " << next;
        fill(p, 0, next);
        size = next;
    }
    carve_free(p);
    for (void *b : blockers)
        carve_free(b);
    RecordProperty("moves", moved);
}

// ---- statistics ---------------------------------------------------------

TEST_F(CarvePurge, PerClassStatisticsAreConsistent) {
    CARVE_SKIP_IN_DEBUG_MODE();

    const size_t sizes[] = {24, 100, 1000, 5000, 40000, 200000};
    const Stats s0;
    std::vector<std::vector<void *>> blocks;
    std::vector<size_t> counts;
    for (size_t size : sizes) {
        size_t n = std::min<size_t>(20000, std::max<size_t>(64, 2 * kMiB / size));
        std::vector<void *> v;
        for (size_t i = 0; i < n; i++) {
            void *p = carve_malloc(size);
            ASSERT_NE(p, nullptr);
            memset(p, 0x3c, size);
            v.push_back(p);
        }
        blocks.push_back(v);
        counts.push_back(n);
    }
    void *large = carve_malloc(5 * kMiB);
    ASSERT_NE(large, nullptr);
    memset(large, 1, 5 * kMiB);

    const Stats s1;
    const carve_stats &st = s1.s;
    ASSERT_GT(st.class_count, 0u);
    ASSERT_LE(st.class_count, static_cast<size_t>(CARVE_STATS_CLASSES));
    size_t live_bytes = 0, class_mapped = 0, class_committed = 0;
    for (size_t c = 0; c < st.class_count; c++) {
        const carve_class_stats &k = st.classes[c];
        SCOPED_TRACE("class " + std::to_string(k.size));
        if (c > 0) {
            EXPECT_GT(k.size, st.classes[c - 1].size);
        }
        EXPECT_LE(k.committed, k.mapped);
        EXPECT_GE(k.committed, k.live * k.size);
        if (k.pages > 0) {
            EXPECT_EQ(k.mapped % k.pages, 0u) << "pages of one class have one size";
            EXPECT_GE(k.mapped / k.pages, k.size) << "a page holds a block";
            // classes up to 64 KiB have one-slice pages (1 to 6 blocks
            // above 8 KiB); bigger ones, one block in as few slices as hold
            // it (debug pages keep room for 3 blocks and a guard)
            const size_t slice = 64 * 1024, page = k.mapped / k.pages;
            if (k.size <= slice) {
                EXPECT_EQ(page, slice);
            } else if (!carve_test::debug_mode()) {
                EXPECT_EQ(page, (k.size + slice - 1) / slice * slice) << "a page for one block";
            }
        } else {
            EXPECT_EQ(k.mapped, 0u);
            EXPECT_EQ(k.live, 0u);
        }
        live_bytes += k.live * k.size;
        class_mapped += k.mapped;
        class_committed += k.committed;
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const size_t c = s1.class_of(sizes[i]);
        ASSERT_LT(c, st.class_count);
        const carve_class_stats &k = st.classes[c];
        SCOPED_TRACE("size " + std::to_string(sizes[i]));
        EXPECT_GE(k.live, s0.s.classes[c].live + counts[i]);
        EXPECT_GE(k.mapped, k.committed);
        EXPECT_GE(k.committed, k.live * k.size);
        EXPECT_GE(k.live * k.size, counts[i] * sizes[i]);
        EXPECT_LE(k.size, sizes[i] + sizes[i] / 4 + 16) << "the class wastes more than 25%";
    }
    EXPECT_EQ(st.live, live_bytes + st.large_mapped);
    EXPECT_GE(st.large_live, s0.s.large_live + 1);
    EXPECT_GE(st.large_mapped, 5 * kMiB);
    EXPECT_LE(class_mapped, st.chunks * 4 * kMiB);
    EXPECT_EQ(st.mapped, st.chunks * 4 * kMiB + st.large_mapped + st.large_cached);
    EXPECT_LE(st.committed, st.mapped);
    EXPECT_GE(st.committed, class_committed + st.large_mapped + st.large_cached);
    EXPECT_GE(st.committed, st.live);

    // Frees by the owning thread show at once.
    for (size_t i = 0; i < blocks.size(); i++) {
        const size_t c = s1.class_of(sizes[i]);
        for (size_t j = 0; j < blocks[i].size(); j += 2)
            carve_free(blocks[i][j]);
        const Stats s2;
        EXPECT_EQ(s2.s.classes[c].live, st.classes[c].live - (blocks[i].size() + 1) / 2)
            << "size " << sizes[i];
        for (size_t j = 1; j < blocks[i].size(); j += 2)
            carve_free(blocks[i][j]);
        const Stats s3;
        EXPECT_EQ(s3.s.classes[c].live, s0.s.classes[c].live) << "size " << sizes[i];
    }
    carve_free(large);
    const Stats s4;
    EXPECT_EQ(s4.s.large_live, s0.s.large_live);
    EXPECT_EQ(s4.s.live, s0.s.live);
}

}  // namespace
