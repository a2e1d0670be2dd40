// test_thread_exit.cc: threads that end with blocks still live: short-lived
// threads whose blocks the main thread frees, a churn of 100,000 short
// threads that must keep memory bounded, allocations in every destructor
// round of an exiting thread, and the blocks of an exited thread, which stay
// valid while its pages are adopted by the next thread.
//
// Memory figures come from carve_stats_read (global to the process), so each
// test compares with a figure read at its own start. The suites in this
// binary run one after the other, and every thread a test starts is joined
// before it ends.
//
// CARVE_TEST_SCALE (default 1.0) scales the heavy iteration counts; test/run
// may set 0.1 for the sanitizer builds. The thread churn also stops at a
// wall-clock budget (7 s, after a minimum count), since thread creation
// costs 10 to 100 times more in some virtual machines and under the
// sanitizers; it prints a NOTE when it does.

#include <carve.h>

#include "util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <limits.h>  // PTHREAD_DESTRUCTOR_ITERATIONS
#include <pthread.h>

namespace {

using carve_test::Block;
using carve_test::checksum;
using carve_test::fill_random;
using carve_test::intact;
using carve_test::kMiB;
using carve_test::make_block;
using carve_test::rss_bytes;
using carve_test::scaled;
using carve_test::Stats;
using carve_test::thread_size;
using carve_test::TimeBudget;

// A block and its checksum.
using Owned = carve_test::Block;

// ---- blocks left to the main thread ---------------------------------------

TEST(CarveThreadExit, ShortLivedThreadsLeaveBlocksForTheMainThreadToFree) {
    std::vector<Owned> leftovers;
    std::mutex mutex;
    std::atomic<long> bad{0};
    for (int batch = 0; batch < 50; batch++) {
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; t++)
            threads.emplace_back([&, t] {
                std::mt19937_64 rng(static_cast<uint64_t>(batch * 4 + t));
                std::vector<Owned> v;
                for (int i = 0; i < 500; i++) {
                    size_t n = thread_size(rng);
                    auto *p = static_cast<unsigned char *>(carve_malloc(n));
                    if (!p) {
                        bad++;
                        return;
                    }
                    fill_random(p, n, rng());
                    v.push_back({p, n, checksum(p, n)});
                }
                for (size_t i = 0; i < v.size(); i += 2)
                    carve_free(v[i].p);
                std::lock_guard<std::mutex> lock(mutex);
                for (size_t i = 1; i < v.size(); i += 2)
                    leftovers.push_back(v[i]);
            });
        for (auto &th : threads)
            th.join();
        // Free half of what the dead threads left, keep the rest a while.
        size_t keep = leftovers.size() / 2;
        for (size_t i = keep; i < leftovers.size(); i++) {
            if (checksum(leftovers[i].p, leftovers[i].size) != leftovers[i].sum)
                bad++;
            carve_free(leftovers[i].p);
        }
        leftovers.resize(keep);
    }
    for (Owned &o : leftovers) {
        if (checksum(o.p, o.size) != o.sum)
            bad++;
        carve_free(o.p);
    }
    EXPECT_EQ(bad.load(), 0);
}

// ---- thread churn ------------------------------------------------------

TEST(CarveThreadExit, HundredThousandShortThreadsKeepMemoryBounded) {
    CARVE_SKIP_IN_DEBUG_MODE();

    constexpr size_t kMinThreads = 2000;
    const size_t threads = scaled(100000, kMinThreads);
    std::mutex mutex;
    std::vector<Block> left;
    left.reserve(threads);
    std::atomic<long> bad{0};

    carve_malloc_trim(0);
    const Stats before;
    const size_t rss_before = rss_bytes();

    auto body = [&](size_t id) {
        std::mt19937_64 rng(id * 7919 + 1);
        Block b[4];
        for (int k = 0; k < 4; k++) {
            size_t n = rng() % 16 == 0 ? 1025 + rng() % 15360 : 8 + rng() % 505;
            if (!make_block(b[k], n, rng())) {
                bad++;
                return;
            }
        }
        // Two freed here, one freed after a realloc, one left for main.
        for (int k = 0; k < 2; k++) {
            if (!intact(b[k]))
                bad++;
            carve_free(b[k].p);
        }
        void *q = carve_realloc(b[2].p, b[2].size * 3);
        if (q == nullptr || checksum(q, b[2].size) != b[2].sum)
            bad++;
        carve_free(q);
        std::lock_guard<std::mutex> lock(mutex);
        left.push_back(b[3]);
    };

    // Thread creation costs from 10 us to 100 us (virtual machines) or
    // more (sanitizers): 20 s lets a plain build make all 100,000 even
    // beside other tests (7 s stopped at 96,000 in CI); sanitizer runs
    // scale count and budget down and stop early, after enough threads.
    const TimeBudget budget(std::max(7.0, 20.0 * carve_test::test_scale()));
    size_t made = 0, chunks_mid = 0;
    for (; made < threads; made++) {
        if (made >= kMinThreads && made % 256 == 0 && budget.spent())
            break;
        std::thread t(body, made);
        t.join();
        if (made == kMinThreads / 2)
            chunks_mid = Stats().s.chunks;
    }
    RecordProperty("threads", static_cast<int>(made));
    if (made < threads)
        printf("[   NOTE   ] %zu of %zu threads within the time budget\n", made, threads);
    const Stats peak;
    size_t left_bytes = 0;
    for (const Block &b : left)
        left_bytes += b.size;

    ASSERT_EQ(left.size(), made) << "threads that failed to allocate";
    for (const Block &b : left) {
        if (!intact(b))
            bad++;
        carve_free(b.p);
    }
    left.clear();
    left.shrink_to_fit();
    carve_malloc_trim(0);
    const Stats after;
    const size_t rss_after = rss_bytes();

    EXPECT_EQ(bad.load(), 0) << "blocks that changed, or failed allocations";
    // While the blocks were live: no more chunks than the live bytes need
    // (with 25% class waste and half-used pages) plus a few.
    const size_t need_chunks = left_bytes * 5 / 2 / (4 * kMiB) + 8;
    EXPECT_LE(peak.s.chunks, before.s.chunks + need_chunks)
        << left_bytes << " bytes left live by " << made << " threads; chunks went from "
        << before.s.chunks << " to " << peak.s.chunks << " (" << chunks_mid << " after "
        << kMinThreads / 2 << " threads)";
    // Everything freed: the abandoned pages went back.
    EXPECT_LE(after.live_blocks(), before.live_blocks() + 16)
        << "live blocks " << before.live_blocks() << " before, " << after.live_blocks() << " after";
    EXPECT_LE(after.s.chunks, before.s.chunks + need_chunks);
    EXPECT_LE(after.s.committed, before.s.committed + 8 * kMiB)
        << "committed " << before.s.committed << " before, " << after.s.committed << " after";
    if (rss_before != 0 && rss_after != 0) {
        EXPECT_LT(rss_after, rss_before + 64 * kMiB)
            << "RSS " << rss_before / kMiB << " MiB before, " << rss_after / kMiB << " MiB after "
            << made << " threads";
    }
}

// ---- allocations while a thread exits --------------------------------------

// A pthread key destructor that sets its key again is called once more, in
// up to PTHREAD_DESTRUCTOR_ITERATIONS rounds; other libraries' destructors
// allocate and free in any of them (this one runs after carve's in each
// round, since carve's key is created first). Each round here keeps one
// block for main to free and frees one itself. Half of the threads have
// allocated before they exit, half make their first allocation here.
// Under ThreadSanitizer the last round is left out: its runtime tears
// down the thread's state in that round, before this test's destructor.
#ifdef CARVE_TSAN
constexpr uintptr_t kExitRounds = PTHREAD_DESTRUCTOR_ITERATIONS - 1;
#else
constexpr uintptr_t kExitRounds = PTHREAD_DESTRUCTOR_ITERATIONS;
#endif
struct ExitRounds {
    std::mutex mutex;
    std::vector<Block> left;
    std::atomic<long> bad{0};
    std::atomic<long> rounds{0};
    pthread_key_t key;
};
ExitRounds *exit_rounds;

void exit_round_destructor(void *value) {
    const uintptr_t round = reinterpret_cast<uintptr_t>(value);  // 1, 2, ...
    ExitRounds &x = *exit_rounds;
    x.rounds++;
    Block keep, scratch;
    if (!make_block(keep, 1000 + round * 8, round) || !make_block(scratch, 200, round + 7)) {
        x.bad++;
        return;
    }
    if (!intact(scratch))
        x.bad++;
    carve_free(scratch.p);
    {
        std::lock_guard<std::mutex> lock(x.mutex);
        x.left.push_back(keep);
    }
    if (round < kExitRounds)
        pthread_setspecific(x.key, reinterpret_cast<void *>(round + 1));
}

TEST(CarveThreadExit, AllocationsInEveryDestructorRoundOfAnExitingThreadLeakNothing) {
    carve_malloc_trim(0);  // carve is set up (its key created) before this key
    const Stats before;
    ExitRounds x;
    ASSERT_EQ(pthread_key_create(&x.key, exit_round_destructor), 0);
    exit_rounds = &x;
    const size_t threads = scaled(3000, 300);
    for (size_t t = 0; t < threads; t++) {
        std::thread th([&x, t] {
            Block b;
            if (t % 2 == 0) {  // a heap before the thread exits
                if (!make_block(b, 100, t)) {
                    x.bad++;
                    return;
                }
                carve_free(b.p);
            }
            pthread_setspecific(x.key, reinterpret_cast<void *>(1));
        });
        th.join();
    }
    const size_t rounds = static_cast<size_t>(x.rounds.load());
    EXPECT_EQ(x.bad.load(), 0) << "failed allocations, or blocks that changed";
    EXPECT_EQ(rounds, threads * kExitRounds) << "destructor rounds run";
    EXPECT_EQ(x.left.size(), rounds);
    long changed = 0;
    for (const Block &b : x.left) {
        if (!intact(b))
            changed++;
        carve_free(b.p);
    }
    EXPECT_EQ(changed, 0) << "blocks allocated in destructors changed";
    x.left.clear();
    x.left.shrink_to_fit();
    pthread_key_delete(x.key);
    exit_rounds = nullptr;
    carve_malloc_trim(0);
    const Stats after;
    if (carve_test::debug_mode())
        return;  // the quarantine holds freed blocks: no figure to compare
    // A heap that no destructor gives back keeps its pages (and the blocks
    // freed into them) for good: one or two per thread, 64 KiB each.
    EXPECT_LE(after.s.chunks, before.s.chunks + 4)
        << "chunks went from " << before.s.chunks << " to " << after.s.chunks << " over "
        << threads << " threads";
    EXPECT_LE(after.live_blocks(), before.live_blocks() + 16)
        << "live blocks " << before.live_blocks() << " before, " << after.live_blocks() << " after";
}

// ---- a thread exits with live blocks -----------------------------------

// A live thread that allocated blocks and then only waits (a server's main
// thread, which made its workers' first blocks) never collects what other
// threads free into its pages: the free that empties such a page gives it
// back to the arena itself. Without that, the waiting thread's pages stay,
// every block in them free, until it exits.
TEST(CarveThreadExit, PagesOfAnIdleThreadEmptiedByAnotherThreadGoBack) {
    CARVE_SKIP_IN_DEBUG_MODE(); // debug heaps' blocks carry canaries: other classes
    const size_t size = 256, count = (size_t{24} << 20) / size;
    std::vector<void *> blocks(count);
    for (auto &p : blocks) {
        p = carve_malloc(size);
        ASSERT_NE(p, nullptr);
        memset(p, 0x5c, size);
    }
    size_t c = Stats().class_of(size);
    size_t held = Stats().s.classes[c].pages;
    ASSERT_GE(held, count * size / (64 << 10)); // 24 MiB of 64 KiB pages
    std::thread([&] {
        for (void *p : blocks)
            carve_free(p);
    }).join();
    // This thread allocates nothing of the class from here on: what is left
    // is its current page, which its next malloc would pop.
    Stats after;
    EXPECT_LE(after.s.classes[c].pages, size_t{2})
        << held << " pages before the other thread freed every block";
    // (blocks freed into the current page count as live until collected)
    EXPECT_LE(after.s.classes[c].live, (size_t{64} << 10) / size);
}

TEST(CarveThreadExit, BlocksOfAnExitedThreadStayValidAndItsPagesAreAdopted) {
    CARVE_SKIP_IN_DEBUG_MODE();

    constexpr size_t kSmall = 200, kMedium = 3000;
    const size_t n_small = 20000, n_medium = 2000;
    std::vector<Block> small, medium;

    const Stats before;
    const size_t cs = before.class_of(kSmall), cm = before.class_of(kMedium);
    ASSERT_LT(cs, before.s.class_count);
    ASSERT_LT(cm, before.s.class_count);

    std::thread first([&] {
        std::mt19937_64 rng(31);
        for (size_t i = 0; i < n_small; i++) {
            Block b;
            if (!make_block(b, kSmall, rng()))
                return;
            small.push_back(b);
        }
        for (size_t i = 0; i < n_medium; i++) {
            Block b;
            if (!make_block(b, kMedium, rng()))
                return;
            medium.push_back(b);
        }
    });
    first.join();
    ASSERT_EQ(small.size(), n_small);
    ASSERT_EQ(medium.size(), n_medium);
    const Stats exited;
    const size_t small_pages = exited.s.classes[cs].pages;
    const size_t medium_pages = exited.s.classes[cm].pages;
    EXPECT_GE(exited.s.classes[cs].live, n_small);
    EXPECT_GE(exited.s.classes[cm].live, n_medium);

    // Every block is intact; every other one is freed by main (no page
    // becomes empty, so only adoption can reuse the memory), and a few of
    // the rest are grown and shrunk with realloc.
    std::set<uintptr_t> freed;
    long bad = 0;
    for (std::vector<Block> *v : {&small, &medium}) {
        std::vector<Block> keep;
        for (size_t i = 0; i < v->size(); i++) {
            Block &b = (*v)[i];
            if (!intact(b))
                bad++;
            if (i % 2 == 0) {
                freed.insert(reinterpret_cast<uintptr_t>(b.p));
                carve_free(b.p);
            } else {
                keep.push_back(b);
            }
        }
        *v = keep;
    }
    EXPECT_EQ(bad, 0) << "blocks of the exited thread changed";
    // realloc of a dead thread's block: grown (moves) and shrunk.
    std::vector<Block> moved;
    for (int i = 0; i < 100; i++) {
        Block b = small.back();
        small.pop_back();
        auto *q = static_cast<unsigned char *>(carve_realloc(b.p, b.size * 4));
        ASSERT_NE(q, nullptr);
        EXPECT_EQ(checksum(q, b.size), b.sum) << "realloc lost the contents";
        q = static_cast<unsigned char *>(carve_realloc(q, 40));
        ASSERT_NE(q, nullptr);
        moved.push_back({q, 40, checksum(q, 40)});
    }

    // A new thread allocating the same classes takes the half-empty pages.
    size_t reused = 0, fresh = 0;
    std::vector<Block> second_small, second_medium;
    std::thread second([&] {
        std::mt19937_64 rng(32);
        for (size_t i = 0; i < n_small / 2; i++) {
            Block b;
            if (!make_block(b, kSmall, rng()))
                return;
            second_small.push_back(b);
        }
        for (size_t i = 0; i < n_medium / 2; i++) {
            Block b;
            if (!make_block(b, kMedium, rng()))
                return;
            second_medium.push_back(b);
        }
    });
    second.join();
    ASSERT_EQ(second_small.size(), n_small / 2);
    ASSERT_EQ(second_medium.size(), n_medium / 2);
    for (const std::vector<Block> *v : {&second_small, &second_medium})
        for (const Block &b : *v) {
            if (freed.count(reinterpret_cast<uintptr_t>(b.p)))
                reused++;
            else
                fresh++;
        }
    const Stats adopted;
    EXPECT_LE(adopted.s.classes[cs].pages, small_pages + 1)
        << "class " << adopted.s.classes[cs].size << ": pages grew from " << small_pages;
    EXPECT_LE(adopted.s.classes[cm].pages, medium_pages + 1)
        << "class " << adopted.s.classes[cm].size << ": pages grew from " << medium_pages;
    EXPECT_GE(reused, (reused + fresh) * 9 / 10)
        << reused << " blocks reused the exited thread's memory, " << fresh << " did not";

    // Everything left is still intact, and goes back.
    for (const std::vector<Block> *v : {&small, &medium, &second_small, &second_medium, &moved})
        for (const Block &b : *v) {
            if (!intact(b))
                bad++;
            carve_free(b.p);
        }
    EXPECT_EQ(bad, 0);
    const Stats after;
    EXPECT_LE(after.s.classes[cs].live, before.s.classes[cs].live);
    EXPECT_LE(after.s.classes[cm].live, before.s.classes[cm].live);
}

}  // namespace
