// test_run_finder.cc: the slice bitmaps' run helpers (src/bits.h) and the
// arena's use of them.
//
// A chunk has 64 slices of 64 KiB, one bit each (bit 0: the header slice,
// never free). cv_bits_find_run finds where a page of n slices can go,
// cv_bits_next_run and cv_bits_run_mask walk the runs that a purge pass
// hands to madvise. Each is checked against a plain loop over the bits, on
// the edge cases (a run ending at slice 63, a full chunk) and on random
// bitmaps of every density; then the arena's placement: a page reuses
// slices touched before, and pages never overlap.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "bits.h"
#include "probe.h"
#include "unit.h"

namespace {

bool bit(uint64_t x, unsigned i) { return (x >> i & 1) != 0; }

// The first slice s >= 1 with s .. s + n - 1 all clear in used, or 0.
unsigned plain_find_run(uint64_t used, unsigned n) {
    for (unsigned s = 1; s + n <= 64; s++) {
        unsigned k = 0;
        while (k < n && !bit(used, s + k))
            k++;
        if (k == n)
            return s;
    }
    return 0;
}

// The runs of set bits, lowest first: (first, length).
std::vector<std::pair<unsigned, unsigned>> plain_runs(uint64_t x) {
    std::vector<std::pair<unsigned, unsigned>> runs;
    for (unsigned i = 0; i < 64;) {
        if (!bit(x, i)) {
            i++;
            continue;
        }
        unsigned first = i;
        while (i < 64 && bit(x, i))
            i++;
        runs.emplace_back(first, i - first);
    }
    return runs;
}

// Runs as arena.c's purge_runs and populate_runs walk them.
std::vector<std::pair<unsigned, unsigned>> walked_runs(uint64_t slices) {
    std::vector<std::pair<unsigned, unsigned>> runs;
    for (unsigned first, n; slices; slices &= ~cv_bits_run_mask(first, n)) {
        n = cv_bits_next_run(slices, &first);
        runs.emplace_back(first, n);
        if (runs.size() > 64)
            break;  // the mask missed the run: stop rather than loop forever
    }
    return runs;
}

// Bitmaps of every density: few bits set, about half, most of them.
std::vector<uint64_t> random_bitmaps(size_t count, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint64_t> v;
    for (size_t i = 0; i < count; i++) {
        uint64_t x = rng();
        switch (i % 4) {
        case 0: x &= rng() & rng(); break;    // sparse
        case 1: break;                        // half
        case 2: x |= rng() | rng(); break;    // dense
        case 3: x = rng() % 64 == 0 ? ~uint64_t{0} : x | rng(); break;
        }
        v.push_back(x);
    }
    return v;
}

TEST(RunFinder, FindsTheFirstRunOfFreeSlicesInAnEmptyChunk) {
    const uint64_t header_only = 1;
    for (unsigned n = 1; n <= 63; n++)
        EXPECT_EQ(cv_bits_find_run(header_only, n), 1u) << n << " slices";
}

TEST(RunFinder, FindsNothingInAFullChunk) {
    for (unsigned n = 1; n <= 63; n++)
        EXPECT_EQ(cv_bits_find_run(~uint64_t{0}, n), 0u) << n << " slices";
}

TEST(RunFinder, ARunMayEndAtTheLastSliceButNotPassIt) {
    // slices 60..63 free
    const uint64_t used = ~(uint64_t{0xf} << 60);
    EXPECT_EQ(cv_bits_find_run(used, 1), 60u);
    EXPECT_EQ(cv_bits_find_run(used, 4), 60u);
    EXPECT_EQ(cv_bits_find_run(used, 5), 0u);
    // only slice 63 free
    const uint64_t last = ~(uint64_t{1} << 63);
    EXPECT_EQ(cv_bits_find_run(last, 1), 63u);
    EXPECT_EQ(cv_bits_find_run(last, 2), 0u);
}

TEST(RunFinder, TakesTheLowestRunLongEnoughNotTheFirstFreeSlice) {
    // free: 3, 10..11, 20..23
    uint64_t used = ~uint64_t{0};
    used &= ~(uint64_t{1} << 3);
    used &= ~(uint64_t{3} << 10);
    used &= ~(uint64_t{0xf} << 20);
    EXPECT_EQ(cv_bits_find_run(used, 1), 3u);
    EXPECT_EQ(cv_bits_find_run(used, 2), 10u);
    EXPECT_EQ(cv_bits_find_run(used, 3), 20u);
    EXPECT_EQ(cv_bits_find_run(used, 4), 20u);
    EXPECT_EQ(cv_bits_find_run(used, 5), 0u);
}

TEST(RunFinder, AgreesWithAPlainLoopOnRandomBitmaps) {
    size_t checked = 0;
    for (uint64_t used : random_bitmaps(4000, 1)) {
        used |= 1;  // the header slice
        for (unsigned n = 1; n <= 63; n++) {
            ASSERT_EQ(cv_bits_find_run(used, n), plain_find_run(used, n))
                << "used 0x" << std::hex << used << std::dec << ", " << n << " slices";
            checked++;
        }
    }
    EXPECT_EQ(checked, 4000u * 63);
}

TEST(RunMask, SetsExactlyTheRunsBits) {
    for (unsigned first = 0; first < 64; first++) {
        for (unsigned n = 1; first + n <= 64; n++) {
            uint64_t plain = 0;
            for (unsigned i = first; i < first + n; i++)
                plain |= uint64_t{1} << i;
            ASSERT_EQ(cv_bits_run_mask(first, n), plain) << "first " << first << ", n " << n;
        }
    }
}

TEST(NextRun, ReturnsTheLowestRunOfSetBits) {
    unsigned first = 99;
    EXPECT_EQ(cv_bits_next_run(uint64_t{0x6} << 4, &first), 2u);
    EXPECT_EQ(first, 5u);
    EXPECT_EQ(cv_bits_next_run(~uint64_t{1}, &first), 63u);  // every slice but the header
    EXPECT_EQ(first, 1u);
    EXPECT_EQ(cv_bits_next_run(uint64_t{1} << 63, &first), 1u);
    EXPECT_EQ(first, 63u);
}

TEST(NextRun, TheArenasWalkVisitsEveryRunOnceInOrder) {
    for (uint64_t x : random_bitmaps(4000, 2)) {
        x &= ~uint64_t{1};  // the header is never free, so never in these
        ASSERT_EQ(walked_runs(x), plain_runs(x)) << "bitmap 0x" << std::hex << x;
    }
}

// ---- the arena's placement -------------------------------------------------

// A page goes where slices were touched before (resident, or lazily freed
// and perhaps still in place) when such a run exists, rather than in the
// first free run: a fresh slice adds to RSS. Here the first free slice is
// clean (trimmed) and a later one dirty: a plain first fit would take the
// clean one.
TEST(ArenaPlacement, APageTakesATouchedSliceBeforeAnEarlierCleanOne) {
    cv_arena_trim();  // no touched free slice anywhere
    probe_page *x = probe_page_alloc(1);
    probe_page *a = probe_page_alloc(1);
    ASSERT_NE(x, nullptr);
    ASSERT_NE(a, nullptr);
    const auto xs = reinterpret_cast<uintptr_t>(probe_page_start(x));
    const auto as = reinterpret_cast<uintptr_t>(probe_page_start(a));
    if (xs / (PROBE_SLICES_PER_CHUNK * carve_unit::kSlice) !=
            as / (PROBE_SLICES_PER_CHUNK * carve_unit::kSlice) ||
        xs > as) {
        probe_page_free(x);
        probe_page_free(a);
        GTEST_SKIP() << "the two pages did not land in one chunk in address order";
    }
    EXPECT_TRUE(probe_page_memory_is_zero(a)) << "after a trim every free slice reads zero";
    probe_page_free(x);
    cv_arena_trim();  // x's slice: free and clean, below a's
    static_cast<unsigned char *>(probe_page_start(a))[0] = 1;
    probe_page_free(a);  // a's slice: free and touched
    probe_page *b = probe_page_alloc(1);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(probe_page_start(b)), as)
        << "the touched slice was not reused";
    EXPECT_FALSE(probe_page_memory_is_zero(b)) << "a reused slice still holds its bytes";
    probe_page_free(b);
    cv_arena_trim();
}

TEST(ArenaPlacement, LivePagesNeverShareASlice) {
    std::mt19937_64 rng(3);
    std::vector<std::pair<uintptr_t, uintptr_t>> live;  // [start, end)
    std::vector<probe_page *> pages;
    for (int round = 0; round < 400; round++) {
        if (!pages.empty() && rng() % 3 == 0) {
            size_t i = rng() % pages.size();
            probe_page_free(pages[i]);
            pages.erase(pages.begin() + static_cast<long>(i));
            live.erase(live.begin() + static_cast<long>(i));
            continue;
        }
        const unsigned n = 1 + static_cast<unsigned>(rng() % 4);
        probe_page *p = probe_page_alloc(n);
        ASSERT_NE(p, nullptr);
        const auto start = reinterpret_cast<uintptr_t>(probe_page_start(p));
        const uintptr_t end = start + n * carve_unit::kSlice;
        ASSERT_EQ(start % carve_unit::kSlice, 0u);
        for (const auto &r : live)
            ASSERT_TRUE(end <= r.first || r.second <= start)
                << "a page of " << n << " slices overlaps a live page";
        pages.push_back(p);
        live.emplace_back(start, end);
    }
    for (probe_page *p : pages)
        probe_page_free(p);
    cv_arena_trim();
}

}  // namespace
