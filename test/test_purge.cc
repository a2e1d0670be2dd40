// test_purge.cc: giving free memory back to the kernel (src/purge.c).
//
// Free slices wait decay_ms (default 50) and are then purged from the slow
// paths (a page going back to the arena, a large block freed) with
// MADV_FREE (purge=free, the default), MADV_DONTNEED (purge=dontneed) or not
// at all (purge=none); carve_malloc_trim(0) purges everything at once. These
// tests check that purging happens when it should, not when it should not,
// and that memory reused after a purge holds what the program writes and
// what calloc promises (zeros). The purges that must run in a child process
// (under a seccomp filter, on locked memory, by the background purger) are
// in test_purge_child.cc, the large cache in test_large.cc. The stages of
// the decay, step by step on a mock clock, are unit tests
// (test/unit/test_decay.cc).
//
// Options are global: every test starts from the defaults (purge=free,
// decay_ms=50, background=0) and restores them when it ends (purge_util.h).
//
// CARVE_TEST_SCALE (default 1.0) scales the amounts of memory and the loop
// counts; test/run may set 0.1 for the sanitizer builds.

#include <carve.h>

#include "util.h"
#include "purge_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using carve_test::alloc_small;
using carve_test::Block;
using carve_test::first_nonzero;
using carve_test::free_all;
using carve_test::kMiB;
using carve_test::kShadowedRss;
using carve_test::rss_bytes;
using carve_test::scaled;
using carve_test::set_defaults;
using carve_test::set_option;
using carve_test::sleep_ms;
using carve_test::Stats;
using carve_test::tick;

class CarvePurge : public carve_test::PurgeDefaults {};

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

}  // namespace
