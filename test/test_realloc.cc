// test_realloc.cc: carve_realloc and carve_reallocarray: a null pointer and a
// zero size, sizes that cannot be had (the block stays as it was), and the
// contents kept across every size class boundary, into and out of large
// blocks, for large blocks grown and shrunk by whole megabytes, and for
// blocks that started out aligned.

#include <carve.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

namespace {

using carve_test::assorted_sizes;
using carve_test::fill;
using carve_test::first_mismatch;
using carve_test::is_aligned;
using carve_test::kMiB;
using carve_test::opaque;
using carve_test::pattern_word;

// ---- realloc ------------------------------------------------------------

TEST(CarveRealloc, NullPointerActsLikeMalloc) {
    for (size_t n : assorted_sizes()) {
        void *p = carve_realloc(nullptr, n);
        ASSERT_NE(p, nullptr) << n;
        EXPECT_TRUE(is_aligned(p, n >= 16 ? 16 : 8)) << n;
        EXPECT_GE(carve_malloc_usable_size(p), n);
        memset(p, 0x33, n);
        carve_free(p);
    }
}

TEST(CarveRealloc, ZeroSizeFreesAndReturnsNull) {
    for (size_t n : {1, 100, 5000, 40000, 300000, 1 << 20}) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr);
        memset(p, 1, n);
        EXPECT_EQ(carve_realloc(p, 0), nullptr) << "realloc(malloc(" << n << "), 0)";
    }
}

TEST(CarveRealloc, ZeroSizeReallyReleasesTheBlock) {
    // If realloc(p, 0) leaked, this loop would hold 200 MB.
    struct carve_mallinfo2 before = carve_mallinfo2();
    for (int i = 0; i < 200000; i++) {
        void *p = carve_malloc(1000);
        ASSERT_NE(p, nullptr);
        static_cast<char *>(p)[0] = 1;
        ASSERT_EQ(carve_realloc(p, 0), nullptr);
    }
    struct carve_mallinfo2 after = carve_mallinfo2();
    size_t grew = (after.arena + after.hblkhd) - std::min(after.arena + after.hblkhd,
                                                           before.arena + before.hblkhd);
    EXPECT_LT(grew, size_t{32} << 20) << "heap grew by " << grew << " bytes";
}

TEST(CarveRealloc, GrowingKeepsContents) {
    void *p = carve_malloc(10);
    ASSERT_NE(p, nullptr);
    fill(p, 10, 1);
    size_t have = 10;
    for (size_t n : {100, 1000, 50000, 400000, 3000000}) {
        p = carve_realloc(p, n);
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(first_mismatch(p, have, 1), have) << "after growing to " << n;
        fill(p, n, 1);
        have = n;
    }
    carve_free(p);
}

TEST(CarveRealloc, ShrinkingToHalfOrMoreStaysInPlaceAndKeepsContents) {
    for (size_t old_size : {32, 100, 1000, 5000, 40000, 200000, 300000, 1 << 20, 8 << 20}) {
        void *probe = carve_malloc(old_size);
        ASSERT_NE(probe, nullptr);
        const size_t usable = carve_malloc_usable_size(probe);
        carve_free(probe);
        for (size_t new_size : {usable - 1, usable * 3 / 4, usable / 2 + 1}) {
            void *p = carve_malloc(old_size);
            ASSERT_NE(p, nullptr);
            fill(p, old_size, 7);
            void *q = carve_realloc(p, new_size);
            ASSERT_NE(q, nullptr);
            EXPECT_EQ(q, p) << "realloc from " << old_size << " (usable " << usable
                            << ") down to " << new_size << " moved the block";
            size_t keep = std::min(old_size, new_size);
            EXPECT_EQ(first_mismatch(q, keep, 7), keep)
                << "shrink " << old_size << " -> " << new_size;
            EXPECT_GE(carve_malloc_usable_size(q), new_size);
            carve_free(q);
        }
    }
}

TEST(CarveRealloc, ImpossibleSizeFailsAndKeepsOriginalBlock) {
    for (size_t n : {100, 40000, 1 << 20}) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr);
        fill(p, n, 3);
        for (size_t huge : {SIZE_MAX, SIZE_MAX - 4096, static_cast<size_t>(PTRDIFF_MAX) + 1,
                            size_t{1} << 48}) {
            errno = 0;
            void *q = carve_realloc(p, opaque(huge));
            EXPECT_EQ(q, nullptr) << "realloc(" << n << "-byte block, " << huge << ")";
            EXPECT_EQ(errno, ENOMEM) << "realloc(" << n << "-byte block, " << huge << ")";
            if (q) {  // should not happen; keep going with what we got
                p = q;
                fill(p, n, 3);
            }
            EXPECT_EQ(first_mismatch(p, n, 3), n) << "original block changed";
        }
        // The original block is still valid: it can be grown and freed.
        void *q = carve_realloc(p, n * 2);
        ASSERT_NE(q, nullptr);
        EXPECT_EQ(first_mismatch(q, n, 3), n);
        carve_free(q);
    }
}

// ---- contents across every size ------------------------------------------

// Bytes from..to of util.h's pattern: byte i is byte i % 8 (from the low
// end, as fill() lays words out on a little-endian machine) of
// pattern_word(i / 8, seed).
void fill_range(void *p, size_t from, size_t to, uint32_t seed) {
    uint8_t *b = static_cast<uint8_t *>(p);
    uint64_t w = pattern_word(from / 8, seed);
    for (size_t i = from; i < to; i++) {
        if ((i & 7) == 0)
            w = pattern_word(i / 8, seed);
        b[i] = static_cast<uint8_t>(w >> (8 * (i & 7)));
    }
}

// The first size of every size class up to a bit past the largest class
// (where usable(n) != usable(n - 1)), found by asking carve.
std::vector<size_t> class_boundaries(size_t up_to) {
    std::vector<size_t> out;
    size_t prev = 0;
    for (size_t n = 1; n <= up_to; n++) {
        void *p = carve_malloc(n);
        if (!p) {
            ADD_FAILURE() << "carve_malloc(" << n << ") failed";
            break;
        }
        size_t u = carve_malloc_usable_size(p);
        carve_free(p);
        if (u != prev)
            out.push_back(n);
        prev = u;
        // Past the usable size everything up to it has the same class.
        if (u > n)
            n = u;  // next probe is u + 1
    }
    return out;
}

// 1, 2, ... growing by about 10% a step, plus n-1, n, n+1 around every class
// boundary up to 256 KiB + 64 KiB, up to 8 MiB.
std::vector<size_t> realloc_steps() {
    std::set<size_t> s;
    for (double x = 1; x <= 8.0 * kMiB; x = std::max(x + 1, x * 1.1))
        s.insert(static_cast<size_t>(x));
    s.insert(8 * kMiB);
    // Debug mode answers the requested size as usable: no boundaries to
    // find, and probing every size would map 64K blocks of their own.
    std::vector<size_t> bounds;
    if (!carve_test::debug_mode())
        bounds = class_boundaries((size_t{256} << 10) + (size_t{64} << 10));
    // carve has about 70 boundaries there; should there be far more, a
    // spread of 400 of them keeps the run time bounded.
    const size_t stride = bounds.size() > 400 ? bounds.size() / 400 + 1 : 1;
    for (size_t k = 0; k < bounds.size(); k += stride)
        for (size_t n : {bounds[k] - 1, bounds[k], bounds[k] + 1})
            if (n >= 1)
                s.insert(n);
    return std::vector<size_t>(s.begin(), s.end());
}

// Grows one block through every step and back down, checking the prefix
// that must have survived each time. With neighbours, a block of the same
// size is allocated after each step so that growing in place is not always
// possible.
void walk_up_and_down(bool with_neighbours) {
    const std::vector<size_t> steps = realloc_steps();
    ASSERT_GT(steps.size(), 100u);
    const uint32_t seed = with_neighbours ? 0xabcdu : 0x1234u;
    std::vector<void *> neighbours;

    void *p = carve_malloc(steps[0]);
    ASSERT_NE(p, nullptr);
    fill_range(p, 0, steps[0], seed);
    size_t have = steps[0];

    for (size_t i = 1; i < steps.size(); i++) {
        const size_t n = steps[i];
        void *q = carve_realloc(p, n);
        ASSERT_NE(q, nullptr) << "realloc " << have << " -> " << n;
        p = q;
        if (n >= 16) {
            ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u) << "realloc to " << n;
        }
        ASSERT_GE(carve_malloc_usable_size(p), n);
        size_t bad = first_mismatch(p, have, seed);
        ASSERT_EQ(bad, have) << "growing " << have << " -> " << n
                             << " lost the byte at offset " << bad;
        fill_range(p, have, n, seed);
        have = n;
        if (with_neighbours && n <= (size_t{256} << 10)) {
            void *nb = carve_malloc(n);
            ASSERT_NE(nb, nullptr);
            memset(nb, 0xee, n);
            neighbours.push_back(nb);
        }
    }
    for (size_t i = steps.size() - 1; i-- > 0;) {
        const size_t n = steps[i];
        void *q = carve_realloc(p, n);
        ASSERT_NE(q, nullptr) << "realloc " << have << " -> " << n;
        p = q;
        ASSERT_GE(carve_malloc_usable_size(p), n);
        size_t bad = first_mismatch(p, n, seed);
        ASSERT_EQ(bad, n) << "shrinking " << have << " -> " << n << " lost the byte at offset "
                          << bad;
        have = n;
        if (with_neighbours && n <= (size_t{256} << 10) && !neighbours.empty()) {
            // Free some neighbours on the way down, so that holes appear.
            carve_free(neighbours.back());
            neighbours.pop_back();
        }
    }
    carve_free(p);
    for (void *nb : neighbours)
        carve_free(nb);
}

TEST(CarveRealloc, GrowingAcrossEveryClassBoundaryTo8MiBAndBackKeepsContents) {
    walk_up_and_down(false);
}

TEST(CarveRealloc, GrowingBesideNeighbourBlocksKeepsContents) { walk_up_and_down(true); }

TEST(CarveRealloc, LargeBlocksGrowTo64MiBAndShrinkBackKeepingContents) {
    const size_t steps[] = {1 * kMiB,         kMiB + kMiB / 2 + 7, 3 * kMiB,
                            5 * kMiB + 4095,  8 * kMiB,            13 * kMiB,
                            16 * kMiB + 1,    32 * kMiB,           48 * kMiB + 3,
                            64 * kMiB};
    const size_t count = sizeof steps / sizeof steps[0];
    const uint32_t seed = 0x5eed;
    void *p = carve_malloc(steps[0]);
    ASSERT_NE(p, nullptr);
    fill_range(p, 0, steps[0], seed);
    // Another large block in the way of growing in place, for a while.
    void *blocker = carve_malloc(2 * kMiB);
    ASSERT_NE(blocker, nullptr);
    memset(blocker, 0x77, 2 * kMiB);
    size_t have = steps[0];
    for (size_t i = 1; i < count; i++) {
        void *q = carve_realloc(p, steps[i]);
        ASSERT_NE(q, nullptr) << "realloc to " << steps[i];
        p = q;
        ASSERT_EQ(first_mismatch(p, have, seed), have) << "grow " << have << " -> " << steps[i];
        fill_range(p, have, steps[i], seed);
        have = steps[i];
        if (i == count / 2) {
            carve_free(blocker);
            blocker = nullptr;
        }
    }
    for (size_t i = count - 1; i-- > 0;) {
        void *q = carve_realloc(p, steps[i]);
        ASSERT_NE(q, nullptr) << "realloc to " << steps[i];
        p = q;
        ASSERT_EQ(first_mismatch(p, steps[i], seed), steps[i])
            << "shrink " << have << " -> " << steps[i];
        have = steps[i];
    }
    EXPECT_GE(carve_malloc_usable_size(p), kMiB);
    carve_free(p);
    if (blocker)
        carve_free(blocker);
}

TEST(CarveRealloc, SmallToLargeAndBackKeepsContents) {
    // Directly between the extremes, without intermediate steps.
    for (size_t small : {1, 15, 100, 4000, 200000}) {
        for (size_t large : {size_t{300000}, kMiB, 10 * kMiB}) {
            void *p = carve_malloc(small);
            ASSERT_NE(p, nullptr);
            fill_range(p, 0, small, 77);
            p = carve_realloc(p, large);
            ASSERT_NE(p, nullptr);
            ASSERT_EQ(first_mismatch(p, small, 77), small) << small << " -> " << large;
            fill_range(p, small, large, 77);
            p = carve_realloc(p, small);
            ASSERT_NE(p, nullptr);
            ASSERT_EQ(first_mismatch(p, small, 77), small) << large << " -> " << small;
            carve_free(p);
        }
    }
}

TEST(CarveRealloc, AlignedBlocksCanBeReallocatedKeepingContents) {
    const size_t alignments[] = {64, 4096, 65536, size_t{1} << 22};
    const size_t sizes[] = {1000, 2001, 300, 300000, 4 * kMiB + 5, 100, 70000};
    for (size_t alignment : alignments) {
        for (int how = 0; how < 3; how++) {
            void *p = nullptr;
            const size_t first = 1000;
            if (how == 0) {
                p = carve_aligned_alloc(alignment, first);
            } else if (how == 1) {
                ASSERT_EQ(carve_posix_memalign(&p, alignment, first), 0);
            } else {
                p = carve_memalign(alignment, first);
            }
            ASSERT_NE(p, nullptr);
            ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % alignment, 0u);
            fill_range(p, 0, first, 3);
            size_t have = first;
            for (size_t n : sizes) {
                void *q = carve_realloc(p, n);
                ASSERT_NE(q, nullptr) << "alignment " << alignment << " realloc to " << n;
                p = q;
                ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u);
                size_t keep = std::min(have, n);
                ASSERT_EQ(first_mismatch(p, keep, 3), keep)
                    << "alignment " << alignment << ": " << have << " -> " << n;
                fill_range(p, 0, n, 3);
                have = n;
            }
            carve_free(p);
        }
    }
}

// Growing a large block in place fails whenever the addresses after it are
// taken (here by its neighbours), and the block then moves: the realloc
// succeeds, and errno must be as it was (glibc leaves it; the failed
// in-place attempt set ENOMEM).
TEST(CarveRealloc, LargeReallocThatMovesLeavesErrnoAlone) {
    void *blocks[3];
    for (void *&b : blocks) {
        b = carve_malloc(1 * kMiB);
        ASSERT_NE(b, nullptr);
        fill_range(b, 0, 4096, 7);
    }
    for (void *&b : blocks) {
        errno = 0;
        void *q = carve_realloc(b, 64 * kMiB);
        const int e = errno;
        ASSERT_NE(q, nullptr);
        b = q;
        EXPECT_EQ(e, 0) << "a realloc to 64 MiB succeeded and set errno";
        EXPECT_EQ(first_mismatch(q, 4096, 7), 4096u);
    }
    for (void *b : blocks)
        carve_free(b);
}

TEST(CarveRealloc, SameSizeReallocKeepsContents) {
    for (size_t n : {1, 16, 1000, 100000, 1 << 20}) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr);
        fill_range(p, 0, n, 5);
        for (int i = 0; i < 3; i++) {
            p = carve_realloc(p, n);
            ASSERT_NE(p, nullptr);
            ASSERT_EQ(first_mismatch(p, n, 5), n);
        }
        carve_free(p);
    }
}

// A large realloc that moves its block hands the old range back to the
// kernel (mremap); another thread's mapping may land there at once and
// register its chunk-map slot, which the realloc must not clear after the
// move (that thread's free would then stop as "invalid free"). Run in a
// child: the failure is an abort. A race: without the fix, 1 of 3 runs
// failed on 2 cores (the same loop standalone: 6 of 6 runs, within 2 s).
TEST(CarveRealloc, MovingLargeBlocksDoNotUnregisterOtherThreadsNewBlocks) {
    pid_t pid = fork();
    ASSERT_NE(pid, -1);
    if (pid == 0) {
        carve_option_set("decay_ms=0"); // no large cache: every block maps afresh
        constexpr size_t kSize = kMiB;
        std::atomic<bool> stop{false};
        std::vector<std::thread> threads;
        for (int i = 0; i < 3; i++) {
            threads.emplace_back([&] { // moves: grows a block beyond its place
                while (!stop.load(std::memory_order_relaxed)) {
                    char *p = static_cast<char *>(carve_malloc(kSize));
                    p[0] = 1;
                    p = static_cast<char *>(carve_realloc(p, 4 * kSize));
                    carve_free(p);
                }
            });
            threads.emplace_back([&] { // maps blocks of the size that was moved away
                while (!stop.load(std::memory_order_relaxed)) {
                    char *q = static_cast<char *>(carve_malloc(kSize));
                    q[0] = 2;
                    carve_free(q);
                }
            });
        }
        auto budget = std::chrono::milliseconds(
            static_cast<long>(carve_test::scaled(5000, 1000)));
        std::this_thread::sleep_for(budget);
        stop = true;
        for (auto &t : threads)
            t.join();
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child died of signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

// ---- reallocarray -------------------------------------------------------

TEST(CarveReallocarray, GrowsLikeReallocAndKeepsContents) {
    void *p = carve_reallocarray(nullptr, 10, 10);
    ASSERT_NE(p, nullptr);
    fill(p, 100, 5);
    p = carve_reallocarray(p, 1000, 10);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(first_mismatch(p, 100, 5), 100u);
    EXPECT_GE(carve_malloc_usable_size(p), 10000u);
    memset(p, 0, 10000);
    carve_free(p);
}

TEST(CarveReallocarray, OverflowFailsWithEnomemAndLeavesBlockIntact) {
    for (size_t n : {100, 40000, 1 << 20}) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr);
        fill(p, n, 9);
        struct {
            size_t nmemb, size;
        } cases[] = {
            {SIZE_MAX / 2 + 1, 2},                  // wraps to 0
            {size_t{1} << 32, (size_t{1} << 32) + 1},  // wraps to 2^32
            {SIZE_MAX, SIZE_MAX},
            {3, SIZE_MAX / 3 + 1},
        };
        for (const auto &c : cases) {
            errno = 0;
            void *q = carve_reallocarray(p, opaque(c.nmemb), opaque(c.size));
            EXPECT_EQ(q, nullptr) << "reallocarray(p, " << c.nmemb << ", " << c.size << ")";
            EXPECT_EQ(errno, ENOMEM);
            if (q) {
                p = q;
                fill(p, n, 9);
            }
            EXPECT_EQ(first_mismatch(p, n, 9), n) << "original block changed";
        }
        void *q = carve_realloc(p, n + 1);
        ASSERT_NE(q, nullptr);
        EXPECT_EQ(first_mismatch(q, n, 9), n);
        carve_free(q);
    }
}

}  // namespace
