// test_large_cache.cc: which cached mapping a large request reuses
// (src/large.c).
//
// Freed large blocks' mappings wait in a small cache. A request takes the
// smallest entry at least as big as it needs, taken whole when at most four
// times too big and cut down otherwise (its tail cached again), or, when
// every entry is too small, the biggest one, grown. cv_large_cache_choose
// is that choice on a cache the test makes up; the other tests free and
// allocate real blocks and see which mapping comes back.

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "probe.h"
#include "unit.h"

namespace {

using carve_unit::kMiB;

constexpr size_t K = 1024;

unsigned choose(const std::vector<probe_entry> &slots, size_t want) {
    return probe_large_choose(slots.data(), static_cast<unsigned>(slots.size()), want);
}

// A slot in use: its base only needs to be non-NULL here.
probe_entry used(size_t size) { return {reinterpret_cast<void *>(uintptr_t{1} << 40), size}; }
probe_entry free_slot(size_t size) { return {nullptr, size}; }

TEST(LargeCacheChoice, AnEmptyCacheHasNothingToGive) {
    EXPECT_EQ(choose({}, kMiB), 0u);
    EXPECT_EQ(choose({free_slot(kMiB), free_slot(2 * kMiB)}, kMiB), 2u);
}

TEST(LargeCacheChoice, TakesTheSmallestEntryThatIsBigEnough) {
    EXPECT_EQ(choose({used(8 * kMiB), used(kMiB), used(2 * kMiB)}, kMiB), 1u);
    EXPECT_EQ(choose({used(4 * kMiB), used(2 * kMiB), used(3 * kMiB)}, kMiB), 1u);
    EXPECT_EQ(choose({used(4 * kMiB), used(2 * kMiB), used(3 * kMiB)}, 2 * kMiB + 4 * K), 2u);
}

TEST(LargeCacheChoice, AnEntryTooBigToTakeWholeIsStillBetterThanATooSmallOne) {
    EXPECT_EQ(choose({used(512 * K), used(16 * kMiB)}, kMiB), 1u);
    EXPECT_EQ(choose({used(16 * kMiB), used(32 * kMiB), used(900 * K)}, kMiB), 0u)
        << "of two entries to cut, the smaller";
}

TEST(LargeCacheChoice, WhenEveryEntryIsTooSmallTakesTheBiggest) {
    EXPECT_EQ(choose({used(256 * K), used(768 * K), used(512 * K)}, kMiB), 1u);
    EXPECT_EQ(choose({used(kMiB - 4 * K)}, kMiB), 0u);
}

TEST(LargeCacheChoice, FreeSlotsAreNeverChosenWhateverTheirSize) {
    EXPECT_EQ(choose({free_slot(kMiB), used(3 * kMiB)}, kMiB), 1u);
    EXPECT_EQ(choose({used(256 * K), free_slot(kMiB)}, kMiB), 0u);
}

TEST(LargeCacheChoice, AgreesWithSmallestBigEnoughElseBiggestOnRandomCaches) {
    uint64_t x = 12345;
    auto next = [&x] { return x = x * 6364136223846793005u + 1442695040888963407u, x >> 33; };
    for (int round = 0; round < 2000; round++) {
        std::vector<probe_entry> slots;
        const unsigned n = static_cast<unsigned>(next() % 33);
        for (unsigned i = 0; i < n; i++) {
            const size_t size = (1 + next() % 4096) * 4 * K;
            slots.push_back(next() % 4 ? used(size) : free_slot(size));
        }
        const size_t want = (1 + next() % 4096) * 4 * K;
        unsigned expect = n;
        for (unsigned i = 0; i < n; i++) {  // smallest >= want, first of equals
            if (slots[i].base && slots[i].size >= want &&
                (expect == n || slots[i].size < slots[expect].size))
                expect = i;
        }
        if (expect == n) {  // else biggest < want, first of equals
            for (unsigned i = 0; i < n; i++) {
                if (slots[i].base && (expect == n || slots[i].size > slots[expect].size))
                    expect = i;
            }
        }
        ASSERT_EQ(choose(slots, want), expect) << "round " << round;
    }
}

// ---- real mappings ----------------------------------------------------------

// The map size of a request: header and block, whole pages (no huge pages).
size_t map_size(size_t request) {
    return (PROBE_LARGE_HEADER + request + PROBE_PAGE - 1) / PROBE_PAGE * PROBE_PAGE;
}

size_t cached() {
    probe_stats s{};
    probe_stats_read(&s);
    return s.large_cached;
}

// Freed mappings wait in the cache (decay_ms > 0, no cgroup pressure);
// every test starts and ends with it empty.
class LargeCache : public carve_unit::SavedOptions {
protected:
    void SetUp() override {
        SavedOptions::SetUp();
        ASSERT_TRUE(cv_options_set("decay_ms=1000"));
        ASSERT_TRUE(cv_options_set("purge=staged"));
        ASSERT_TRUE(cv_options_set("thp=0"));
        if (cv_cgroup_pressure())
            GTEST_SKIP() << "near the cgroup limit, freed mappings are not cached";
        cv_large_trim();
        ASSERT_EQ(cached(), 0u);
    }
    void TearDown() override {
        cv_large_trim();
        SavedOptions::TearDown();
    }
};

TEST_F(LargeCache, AFreedBlockIsReusedForTheNextRequestOfItsSize) {
    void *p = probe_large_alloc(kMiB);
    ASSERT_NE(p, nullptr);
    probe_large_free(p);
    EXPECT_EQ(cached(), map_size(kMiB));
    void *q = probe_large_alloc(kMiB);
    EXPECT_EQ(q, p);
    EXPECT_EQ(cached(), 0u);
    probe_large_free(q);
}

TEST_F(LargeCache, ARequestTakesTheSmallerOfTwoMappingsThatAreBigEnough) {
    void *big = probe_large_alloc(8 * kMiB);
    void *small = probe_large_alloc(2 * kMiB);
    ASSERT_NE(big, nullptr);
    ASSERT_NE(small, nullptr);
    probe_large_free(big);
    probe_large_free(small);
    void *q = probe_large_alloc(1536 * K);
    EXPECT_EQ(q, small);
    void *r = probe_large_alloc(6 * kMiB);
    EXPECT_EQ(r, big) << "8 MiB serves 6 MiB whole";
    EXPECT_EQ(cached(), 0u);
    probe_large_free(q);
    probe_large_free(r);
}

// A mapping more than four times too big gives its head; its tail is moved
// away (page tables, not bytes) and cached again.
TEST_F(LargeCache, AMuchBiggerMappingIsCutAndItsTailKept) {
    void *big = probe_large_alloc(16 * kMiB);
    ASSERT_NE(big, nullptr);
    probe_large_free(big);
    void *q = probe_large_alloc(kMiB);
    EXPECT_EQ(q, big) << "the head of the cached mapping";
    EXPECT_EQ(cached(), map_size(16 * kMiB) - map_size(kMiB)) << "the tail went back to the cache";
    probe_large_free(q);
}

// At most four times too big, the whole mapping goes to the request (and
// comes back whole); a page more and it is cut.
TEST_F(LargeCache, AMappingAtMostFourTimesTooBigIsTakenWhole) {
    void *p = probe_large_alloc(4 * kMiB);
    ASSERT_NE(p, nullptr);
    probe_large_free(p);
    ASSERT_LE(map_size(4 * kMiB), 4 * map_size(kMiB));
    void *q = probe_large_alloc(kMiB);
    EXPECT_EQ(q, p);
    EXPECT_EQ(cached(), 0u) << "nothing was cut off";
    probe_large_free(q);
    EXPECT_EQ(cached(), map_size(4 * kMiB)) << "it comes back whole";

    ASSERT_GT(map_size(4 * kMiB), 4 * map_size(kMiB - PROBE_PAGE));
    void *r = probe_large_alloc(kMiB - PROBE_PAGE);
    EXPECT_EQ(r, p);
    EXPECT_EQ(cached(), map_size(4 * kMiB) - map_size(kMiB - PROBE_PAGE))
        << "more than four times too big: the tail stays cached";
    probe_large_free(r);
}

TEST_F(LargeCache, ARequestBiggerThanEveryEntryGrowsTheBiggest) {
    void *a = probe_large_alloc(256 * K);
    void *b = probe_large_alloc(768 * K);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    probe_large_free(a);
    probe_large_free(b);
    ASSERT_EQ(cached(), map_size(256 * K) + map_size(768 * K));
    void *q = probe_large_alloc(2 * kMiB);
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(cached(), map_size(256 * K)) << "the 768 KiB mapping was grown, not the other";
    probe_large_free(q);
}

}  // namespace
