// test_large.cc: large blocks (above 256 KiB, in mappings of their own) and
// the large cache that keeps freed mappings for reuse: the cache stays
// bounded and trim empties it; mappings that wait in it past the decay are
// purged and still serve blocks; and a large block grown to 64 MiB by
// realloc and shrunk back keeps its contents.
//
// Options are global: every test starts from purge=free, decay_ms=50,
// background=0 and restores them when it ends (purge_util.h).
//
// CARVE_TEST_SCALE (default 1.0) scales the loop counts; test/run may set
// 0.1 for the sanitizer builds.

#include <carve.h>

#include "util.h"
#include "purge_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

namespace {

using carve_test::first_nonzero;
using carve_test::kMiB;
using carve_test::scaled;
using carve_test::sleep_ms;
using carve_test::Stats;
using carve_test::tick;

class CarveLarge : public carve_test::PurgeDefaults {};

// ---- the large cache ----------------------------------------------------

TEST_F(CarveLarge, LargeCacheStaysBoundedAndTrimEmptiesIt) {
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

// A large mapping that waits in the cache past the decay is purged with
// MADV_FREE but stays mapped for reuse (its pages stay in place until the
// kernel needs them): it leaves the committed figure, counts as purged, and
// the blocks carved from it later hold what is written and what calloc
// promises.
TEST_F(CarveLarge, DecayedLargeMappingsArePurgedAndStillServeBlocks) {
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

// ---- large realloc ------------------------------------------------------

TEST_F(CarveLarge, LargeReallocUpTo64MiBAndBackKeepsTheContents) {
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

}  // namespace
