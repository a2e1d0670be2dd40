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

}  // namespace
