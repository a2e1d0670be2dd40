// test_release_checks.cc: what a release build stops on its own, without
// debug mode: sized frees whose size or alignment no allocation of the
// block could have had, with one "carve: ..." line at the bad call; and
// the sized frees a correct program makes, which must pass (sizes that
// pick the block's class, blocks shrunk in place by realloc, aligned
// allocations' bigger classes, large blocks).
#include <carve.h>

#include "debug_util.h"
#include "util.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>

#include <csignal>
#include <unistd.h>

namespace {

using carve_test::kAddr;
using carve_test::line;

class CarveReleaseChecks : public carve_test::ThreadsafeDeathTest {
  protected:
    void SetUp() override {
        CARVE_SKIP_IN_DEBUG_MODE(); // debug mode reports sizes against the request
        carve_test::ThreadsafeDeathTest::SetUp();
    }
};

TEST_F(CarveReleaseChecks, FreeSizedWithALargerSizeThanTheBlockStops) {
    EXPECT_DEATH(
        {
            void *p = carve_malloc(64);
            carve_free_sized(carve_test::opaque_ptr(p), 4096);
        },
        line("free_sized with wrong size", "a block of 64 bytes, given size 4096", "free_sized"));
}

TEST_F(CarveReleaseChecks, FreeSizedWithAMuchSmallerSizeStops) {
    EXPECT_DEATH(
        {
            void *p = carve_malloc(4096);
            carve_free_sized(carve_test::opaque_ptr(p), 64);
        },
        line("free_sized with wrong size", "a block of 4096 bytes, given size 64", "free_sized"));
}

TEST_F(CarveReleaseChecks, FreeSizedOfALargeBlockWithALargerSizeStops) {
    EXPECT_DEATH(
        {
            void *p = carve_malloc(size_t{1} << 20);
            carve_free_sized(carve_test::opaque_ptr(p), size_t{4} << 20);
        },
        "carve: free_sized with wrong size of " + std::string(kAddr) +
            " \\(a block of [0-9]+ bytes, given size 4194304\\) in free_sized\\(\\)");
}

TEST_F(CarveReleaseChecks, FreeAlignedSizedOfABlockNotSoAlignedStops) {
    EXPECT_DEATH(
        {
            void *p = carve_malloc(100); // 16-aligned at best, never 4096 in a 112-byte class
            uintptr_t a = reinterpret_cast<uintptr_t>(p);
            void *q = (a & 4095) != 0 ? p : carve_malloc(100);
            carve_free_aligned_sized(carve_test::opaque_ptr(q), 4096, 100);
        },
        line("free_aligned_sized with wrong size", "a block of 112 bytes, given size 100, alignment 4096",
             "free_aligned_sized"));
}

// What correct programs do: none of these may stop.
TEST_F(CarveReleaseChecks, SizedFreesOfCorrectProgramsPass) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{8}, size_t{100}, size_t{512}, size_t{513},
                     size_t{4000}, size_t{70000}, size_t{1} << 20}) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr);
        carve_free_sized(p, n);
        p = carve_calloc(1, n);
        ASSERT_NE(p, nullptr);
        carve_free_sized(p, n);
    }
    // realloc keeps a block in place down to half its class
    void *p = carve_malloc(1000);
    void *q = carve_realloc(p, 600);
    ASSERT_NE(q, nullptr);
    carve_free_sized(q, 600);
    // aligned allocations take the first class aligned enough
    for (size_t align : {size_t{32}, size_t{256}, size_t{4096}, size_t{65536}, size_t{1} << 21}) {
        for (size_t n : {size_t{1}, size_t{100}, size_t{5000}}) {
            void *a = carve_aligned_alloc(align, n);
            ASSERT_NE(a, nullptr);
            carve_free_aligned_sized(a, align, n);
            void *b = nullptr;
            ASSERT_EQ(carve_posix_memalign(&b, align, n), 0);
            carve_free_aligned_sized(b, align, n);
        }
    }
    void *v = carve_valloc(100);
    carve_free_aligned_sized(v, 4096, 100);
    void *m = carve_memalign(16, 1);
    carve_free_aligned_sized(m, 16, 1);
}

// ---- guard_sample: sampled guarded allocations --------------------------

// guard_sample=1 samples every allocation that reaches the slow path: a
// new thread's first one does. The block is carve's own mapping, its end
// against a guard page; the report names the bug and both stacks.
void *sampled_block(size_t size) {
    if (carve_option_set("guard_sample=1") != 0)
        _exit(2);
    void *p = nullptr;
    std::thread([&] { p = carve_malloc(size); }).join();
    CHILD_CHECK(p != nullptr);
    const uintptr_t end = reinterpret_cast<uintptr_t>(p) + size; // against the guard, but
    CHILD_CHECK(end % 4096 == 0 || 4096 - end % 4096 < 16);      // for the alignment gap
    return p;
}

TEST_F(CarveReleaseChecks, GuardSampleCatchesAnOverflowWithTheAllocationStack) {
    carve_test::let_segv_through();
    EXPECT_EXIT(
        {
            void *p = sampled_block(64);
            carve_test::poke(p, 64, 1);
            _exit(0);
        },
        ::testing::KilledBySignal(SIGSEGV),
        "carve: heap overflow \\(guard page hit\\) of 0x[0-9a-f]+ \\(requested 64 bytes, own "
        "mapping; 0 bytes past its end\\)(.|\n)*carve: allocated at \\([0-9]+ frames\\)");
}

TEST_F(CarveReleaseChecks, GuardSampleCatchesAUseAfterFreeWithBothStacks) {
    carve_test::let_segv_through();
    EXPECT_EXIT(
        {
            void *p = sampled_block(64);
            carve_free(p);
            carve_test::poke(p, 3, 1);
            _exit(0);
        },
        ::testing::KilledBySignal(SIGSEGV),
        "carve: use after free of 0x[0-9a-f]+ \\(requested 64 bytes, own mapping; offset 3\\)"
        "(.|\n)*carve: allocated at \\([0-9]+ frames\\)(.|\n)*carve: freed at \\([0-9]+ frames\\)");
}

// The sampled block is an ordinary block to the program: written whole,
// reallocated, its usable size asked, freed; a calloc'd one is zero.
TEST_F(CarveReleaseChecks, GuardSampledBlocksBehaveAsAnyOther) {
    EXPECT_EXIT(
        {
            unsigned char *p = static_cast<unsigned char *>(sampled_block(100));
            memset(p, 7, 100);
            CHILD_CHECK(carve_malloc_usable_size(p) >= 100);
            p = static_cast<unsigned char *>(carve_realloc(p, 3000));
            CHILD_CHECK(p != nullptr && p[0] == 7 && p[99] == 7);
            carve_free(p);
            void *q = nullptr;
            std::thread([&] { q = carve_calloc(10, 10); }).join();
            for (size_t i = 0; i < 100; i++)
                CHILD_CHECK(static_cast<unsigned char *>(q)[i] == 0);
            carve_free(q);
            _exit(0);
        },
        ::testing::ExitedWithCode(0), "");
}

}  // namespace

