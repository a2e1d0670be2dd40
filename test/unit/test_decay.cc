// test_decay.cc: the purge policy on a mock clock (src/purge.c over
// src/arena.c and src/large.c).
//
// doc/design.md, "Giving memory back": a free slice waits decay_ms, then
// goes with MADV_FREE (lazy: still resident until the kernel needs it);
// lazy_ms after its free it goes with MADV_DONTNEED. purge=dontneed skips
// the lazy stage, purge=free never leaves it, purge=none does nothing.
// Passes run from the slow paths (cv_purge_tick) at most every half decay
// period. Free slices beyond the recent demand go at once, and chunks
// wholly free for CHUNK_UNMAP_MS plus four decay periods are unmapped. The
// large cache's entries decay the same way.
//
// These tests set the clock (cv_os_clock_mock) instead of sleeping, so
// each stage is checked one millisecond before it is due and once it is,
// on the statistics (small_committed, small_lazy, small_purged, the large
// cache's), on the slices' own bits, and with mincore on the memory. No
// purger thread: background=0, so only cv_purge_tick purges.

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include "probe.h"
#include "unit.h"

namespace {

using carve_unit::kMiB;
using carve_unit::kSlice;

constexpr unsigned kDecay = 50, kLazy = 1000;

probe_stats stats() {
    probe_stats s{};
    probe_stats_read(&s);
    return s;
}

// How many of the kernel pages of [p, p + len) are resident.
size_t resident_pages(void *p, size_t len) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> vec(len / page);
    if (mincore(p, len, vec.data()) != 0)
        return SIZE_MAX;
    size_t n = 0;
    for (unsigned char v : vec)
        n += v & 1;
    return n;
}

// purge=staged, decay_ms=50, lazy_ms=1000, background=0; a fresh stretch of
// mock time; nothing waiting to be purged (the trims give back what earlier
// tests left, so that the statistics move for this test's memory alone).
class Decay : public carve_unit::SavedOptions {
protected:
    void SetUp() override {
        SavedOptions::SetUp();
        ASSERT_TRUE(cv_options_set("purge=staged"));
        ASSERT_TRUE(cv_options_set("decay_ms=50"));
        ASSERT_TRUE(cv_options_set("lazy_ms=1000"));
        ASSERT_TRUE(cv_options_set("background=0"));
        ASSERT_TRUE(cv_options_set("thp=0"));
        if (cv_cgroup_pressure())
            GTEST_SKIP() << "near the cgroup limit everything is purged at once";
        t0_ = clock_.start();
        cv_large_trim();
        cv_arena_trim();
        ASSERT_EQ(cv_arena_idle_bytes(), 0u);
    }
    void TearDown() override {
        for (probe_page *p : pages_)
            probe_page_free(p);
        cv_large_trim();
        cv_arena_trim();
        carve_unit::MockClock::stop();
        SavedOptions::TearDown();
    }
    // A page of n slices, written all over (resident).
    probe_page *page(unsigned n) {
        probe_page *p = probe_page_alloc(n);
        EXPECT_NE(p, nullptr);
        if (p != nullptr)
            memset(probe_page_start(p), 0x5a, n * kSlice);
        return p;
    }
    void tick_at(uint64_t ms_after_t0) {
        clock_.set(t0_ + ms_after_t0);
        cv_purge_tick();
    }
    uint64_t t0_ = 0;
    carve_unit::MockClock clock_;
    std::vector<probe_page *> pages_;  // freed at the end
};

// A page of two slices to free, and one of a slice kept, so that the chunk
// is not left empty (no test here runs long enough to unmap it anyway).
TEST_F(Decay, StagedFreeSlicesGoLazyAtDecayAndAreDroppedAtLazy) {
    probe_page *keep = page(1);
    probe_page *p = page(2);
    ASSERT_TRUE(keep && p);
    pages_.push_back(keep);
    void *mem = probe_page_start(p);
    const size_t bytes = 2 * kSlice, kpages = bytes / PROBE_PAGE;
    const probe_stats s0 = stats();
    probe_page_free(p);  // at t0
    EXPECT_EQ(cv_arena_idle_bytes(), bytes);

    tick_at(kDecay - 1);
    probe_stats s = stats();
    EXPECT_EQ(s.small_committed, s0.small_committed) << "purged before decay_ms";
    EXPECT_EQ(s.small_lazy, s0.small_lazy);
    EXPECT_EQ(s.small_purged, s0.small_purged);
    EXPECT_EQ(probe_slices_resident(mem, 2), 3u);
    EXPECT_EQ(cv_arena_idle_bytes(), bytes);
    EXPECT_EQ(resident_pages(mem, bytes), kpages);

    tick_at(kDecay - 1 + kDecay / 2);  // the next pass allowed, past decay_ms
    s = stats();
    EXPECT_EQ(s.small_committed, s0.small_committed - bytes) << "not purged at decay_ms";
    EXPECT_EQ(s.small_lazy, s0.small_lazy + bytes) << "the first stage is MADV_FREE";
    EXPECT_EQ(s.small_purged, s0.small_purged + bytes);
    EXPECT_EQ(probe_slices_resident(mem, 2), 0u);
    EXPECT_EQ(probe_slices_dirty(mem, 2), 3u) << "lazily freed memory may still hold its bytes";
    EXPECT_EQ(cv_arena_idle_bytes(), 0u);

    tick_at(kLazy - 1);
    s = stats();
    EXPECT_EQ(s.small_lazy, s0.small_lazy + bytes) << "dropped before lazy_ms";
    EXPECT_EQ(probe_slices_dirty(mem, 2), 3u);

    tick_at(kLazy - 1 + kDecay / 2);
    s = stats();
    EXPECT_EQ(s.small_lazy, s0.small_lazy) << "not dropped at lazy_ms";
    EXPECT_EQ(s.small_committed, s0.small_committed - bytes);
    EXPECT_EQ(s.small_purged, s0.small_purged + bytes) << "counted once, at the first stage";
    EXPECT_EQ(probe_slices_dirty(mem, 2), 0u) << "MADV_DONTNEED: the slices read zero";
    EXPECT_EQ(resident_pages(mem, bytes), 0u) << "MADV_DONTNEED: RSS falls";
}

TEST_F(Decay, DontneedSkipsTheLazyStage) {
    ASSERT_TRUE(cv_options_set("purge=dontneed"));
    pages_.push_back(page(1));
    probe_page *p = page(1);
    ASSERT_NE(p, nullptr);
    void *mem = probe_page_start(p);
    const probe_stats s0 = stats();
    probe_page_free(p);

    tick_at(kDecay - 1);
    EXPECT_EQ(stats().small_committed, s0.small_committed) << "purged before decay_ms";
    EXPECT_EQ(resident_pages(mem, kSlice), kSlice / PROBE_PAGE);

    tick_at(kDecay - 1 + kDecay / 2);
    const probe_stats s = stats();
    EXPECT_EQ(s.small_committed, s0.small_committed - kSlice);
    EXPECT_EQ(s.small_lazy, s0.small_lazy) << "purge=dontneed went through MADV_FREE";
    EXPECT_EQ(s.small_purged, s0.small_purged + kSlice);
    EXPECT_EQ(probe_slices_dirty(mem, 1), 0u);
    EXPECT_EQ(resident_pages(mem, kSlice), 0u);
}

TEST_F(Decay, FreeStaysLazyPastLazyMs) {
    ASSERT_TRUE(cv_options_set("purge=free"));
    pages_.push_back(page(1));
    probe_page *p = page(1);
    ASSERT_NE(p, nullptr);
    void *mem = probe_page_start(p);
    const probe_stats s0 = stats();
    probe_page_free(p);
    tick_at(kDecay);
    EXPECT_EQ(stats().small_lazy, s0.small_lazy + kSlice);
    tick_at(10 * kLazy);
    EXPECT_EQ(stats().small_lazy, s0.small_lazy + kSlice) << "purge=free dropped the slice";
    EXPECT_EQ(probe_slices_dirty(mem, 1), 1u);
}

TEST_F(Decay, NoneNeverPurges) {
    ASSERT_TRUE(cv_options_set("purge=none"));
    pages_.push_back(page(1));
    probe_page *p = page(1);
    ASSERT_NE(p, nullptr);
    void *mem = probe_page_start(p);
    const probe_stats s0 = stats();
    probe_page_free(p);
    tick_at(kDecay);
    tick_at(10 * kLazy);
    const probe_stats s = stats();
    EXPECT_EQ(s.small_committed, s0.small_committed);
    EXPECT_EQ(s.small_lazy, s0.small_lazy);
    EXPECT_EQ(s.small_purged, s0.small_purged);
    EXPECT_EQ(probe_slices_resident(mem, 1), 1u);
}

// Passes from the slow paths run at most once per half decay period: a
// slice due at 50 ms, seen by a tick at 55 ms that comes 15 ms after the
// last pass, waits for the tick at 65 ms.
TEST_F(Decay, TicksPassAtMostEveryHalfDecayPeriod) {
    pages_.push_back(page(1));
    probe_page *p = page(1);
    ASSERT_NE(p, nullptr);
    const probe_stats s0 = stats();
    probe_page_free(p);
    tick_at(40);
    tick_at(55);
    EXPECT_EQ(stats().small_committed, s0.small_committed) << "a pass 15 ms after the last";
    tick_at(65);
    EXPECT_EQ(stats().small_committed, s0.small_committed - kSlice);
}

// A decay shortened at run time holds from the next tick, not after the
// wait that the old one set.
TEST_F(Decay, AShorterDecayTakesEffectAtOnce) {
    ASSERT_TRUE(cv_options_set("decay_ms=10000"));
    pages_.push_back(page(1));
    probe_page *p = page(1);
    ASSERT_NE(p, nullptr);
    const probe_stats s0 = stats();
    probe_page_free(p);
    tick_at(10);
    ASSERT_TRUE(cv_options_set("decay_ms=20"));
    tick_at(30);
    EXPECT_EQ(stats().small_committed, s0.small_committed - kSlice);
}

// Free slices within what the heaps took in the last one or two decay
// windows wait for the decay: they are likely to be taken again.
TEST_F(Decay, FreesWithinRecentDemandWaitForTheDecay) {
    constexpr unsigned kPages = 3 * PROBE_IDLE_FLOOR;
    std::vector<probe_page *> v;
    for (unsigned i = 0; i < kPages; i++)
        v.push_back(probe_page_alloc(1));
    const probe_stats s0 = stats();
    bool excess = false;
    clock_.set(t0_ + kDecay / 5);  // the same window
    for (probe_page *p : v)
        excess |= probe_page_free(p);
    EXPECT_FALSE(excess) << "the arena called for a purge of slices just handed out";
    cv_purge_excess();
    EXPECT_EQ(stats().small_purged, s0.small_purged);
    EXPECT_EQ(cv_arena_idle_bytes(), kPages * kSlice);
}

// A heap that shrinks (frees what it took two decay windows ago and more)
// gives back what is beyond the idle floor at once, with MADV_DONTNEED,
// without waiting for the decay: an idle program would otherwise hold it.
TEST_F(Decay, FreesBeyondRecentDemandGoAtOnce) {
    constexpr unsigned kPages = 3 * PROBE_IDLE_FLOOR;
    std::vector<probe_page *> v;
    for (unsigned i = 0; i < kPages; i++)
        v.push_back(probe_page_alloc(1));
    const probe_stats s0 = stats();
    clock_.set(t0_ + 2 * kDecay);  // no demand in the last two windows
    bool excess = false;
    for (probe_page *p : v)
        excess |= probe_page_free(p);
    EXPECT_TRUE(excess) << "the arena did not ask for a purge";
    cv_purge_excess();  // the caller's answer (heap.c)
    const probe_stats s = stats();
    EXPECT_LE(cv_arena_idle_bytes(), PROBE_IDLE_FLOOR * kSlice) << "more than a chunk kept";
    EXPECT_GE(s.small_purged - s0.small_purged, (kPages - PROBE_IDLE_FLOOR) * kSlice);
    EXPECT_EQ(s.small_lazy, s0.small_lazy) << "purge=staged: the excess skips MADV_FREE";
}

// Chunks wholly free and purged for CHUNK_UNMAP_MS plus four decay
// periods are unmapped, beyond CHUNKS_RETAINED. A MADV_DONTNEED pass that
// unmapped chunks whose lazily freed slices it had just queued once took
// them out of small_lazy twice, and the count wrapped.
TEST_F(Decay, UnmappingChunksCountsTheirLazySlicesOutOnce) {
    const unsigned per_chunk = PROBE_SLICES_PER_CHUNK - 1;
    const unsigned chunks = PROBE_CHUNKS_RETAINED + 2;
    std::vector<probe_page *> v;
    for (unsigned i = 0; i < chunks * per_chunk / 3; i++)
        v.push_back(probe_page_alloc(3));
    for (probe_page *p : v)
        probe_page_free(p);
    tick_at(kDecay);  // all of it lazy: the chunks are now empty
    const probe_stats s1 = stats();
    ASSERT_GE(s1.small_lazy, chunks * per_chunk * kSlice);
    ASSERT_GE(s1.chunks, chunks);

    ASSERT_TRUE(cv_options_set("purge=dontneed"));
    tick_at(kDecay + PROBE_CHUNK_UNMAP_MS + 4 * kDecay);
    const probe_stats s2 = stats();
    EXPECT_LT(s2.chunks, s1.chunks) << "no wholly free chunk was unmapped";
    EXPECT_GT(s2.chunks_unmapped, s1.chunks_unmapped);
    EXPECT_EQ(s2.small_lazy, 0u) << "after a MADV_DONTNEED pass nothing is lazy (a wrapped "
                                    "count reads huge)";
}

// The large cache: an entry unused for decay_ms is purged (MADV_FREE) and
// stays cached as a lazy entry; lazy_ms after its free it is unmapped.
TEST_F(Decay, CachedLargeMappingsGoLazyAtDecayAndAwayAtLazy) {
    void *b = probe_large_alloc(kMiB);
    ASSERT_NE(b, nullptr);
    memset(b, 1, kMiB);
    const probe_stats s0 = stats();
    probe_large_free(b);  // at t0
    const size_t size = stats().large_cached - s0.large_cached;
    ASSERT_GE(size, kMiB) << "the freed mapping was not cached";

    tick_at(kDecay - 1);
    probe_stats s = stats();
    EXPECT_EQ(s.large_cached, s0.large_cached + size) << "purged before decay_ms";
    EXPECT_EQ(s.large_lazy, s0.large_lazy);

    tick_at(kDecay - 1 + kDecay / 2);
    s = stats();
    EXPECT_EQ(s.large_cached, s0.large_cached);
    EXPECT_EQ(s.large_lazy, s0.large_lazy + size) << "not lazy at decay_ms";
    EXPECT_EQ(s.large_purged, s0.large_purged + size);

    tick_at(kLazy - 1);
    EXPECT_EQ(stats().large_lazy, s0.large_lazy + size) << "unmapped before lazy_ms";

    tick_at(kLazy - 1 + kDecay / 2);
    s = stats();
    EXPECT_EQ(s.large_lazy, s0.large_lazy) << "still cached at lazy_ms";
    EXPECT_EQ(s.large_purged, s0.large_purged + size) << "counted once";
}

}  // namespace
