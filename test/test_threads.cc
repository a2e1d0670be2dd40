// test_threads.cc: blocks that cross threads: handed between threads and
// freed by one that did not allocate them, many threads freeing one owner's
// blocks (also after the owner exited); and the memory they free going back
// to its owner: blocks handed from producers to consumers, many threads
// freeing into one owner, whose next allocations reuse the memory.
//
// Memory figures come from carve_stats_read (global to the process), so each
// test compares with a figure read at its own start. The suites in this
// binary run one after the other, and every thread a test starts is joined
// before it ends.
//
// CARVE_TEST_SCALE (default 1.0) scales the heavy iteration counts; test/run
// may set 0.1 for the sanitizer builds.

#include <carve.h>

#include "util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

namespace {

using carve_test::Block;
using carve_test::checksum;
using carve_test::fill_random;
using carve_test::intact;
using carve_test::make_block;
using carve_test::scaled;
using carve_test::Stats;
using carve_test::thread_size;

// A block and its checksum.
using Owned = carve_test::Block;

// ---- blocks freed by another thread -------------------------------------

struct Handoff {
    void *p;
    size_t size;
    uint64_t sum;
    int producer;
};

TEST(CarveThreads, BlocksPassedThroughAQueueAreFreedByAnotherThreadIntact) {
    constexpr int kThreads = 4;
    constexpr int kIterations = 40000;
    constexpr size_t kQueueMax = 2048;
    std::mutex mutex;
    std::deque<Handoff> queue;
    std::atomic<long> produced{0}, consumed{0}, bad{0};

    auto worker = [&](int id) {
        std::mt19937_64 rng(1000 + id);
        // Blocks this thread keeps for a while, checked before each free.
        struct Local {
            void *p;
            size_t size;
            uint64_t sum;
        };
        std::vector<Local> local(64, Local{nullptr, 0, 0});
        for (int it = 0; it < kIterations; it++) {
            // Local churn.
            Local &l = local[rng() % local.size()];
            if (l.p) {
                if (checksum(l.p, l.size) != l.sum)
                    bad++;
                carve_free(l.p);
            }
            l.size = thread_size(rng);
            l.p = carve_malloc(l.size);
            if (!l.p) {
                bad++;
                return;
            }
            fill_random(l.p, l.size, rng());
            l.sum = checksum(l.p, l.size);

            // Produce one block for the others.
            Handoff h;
            h.size = thread_size(rng);
            h.p = carve_malloc(h.size);
            if (!h.p) {
                bad++;
                return;
            }
            fill_random(h.p, h.size, rng());
            h.sum = checksum(h.p, h.size);
            h.producer = id;
            bool queued = false;
            {
                std::lock_guard<std::mutex> lock(mutex);
                if (queue.size() < kQueueMax) {
                    queue.push_back(h);
                    queued = true;
                }
            }
            if (queued)
                produced++;
            else
                carve_free(h.p);

            // Consume one block allocated by another thread.
            Handoff got{nullptr, 0, 0, -1};
            {
                std::lock_guard<std::mutex> lock(mutex);
                for (size_t k = 0; k < queue.size() && k < 16; k++)
                    if (queue[k].producer != id) {
                        got = queue[k];
                        queue.erase(queue.begin() + static_cast<std::ptrdiff_t>(k));
                        break;
                    }
            }
            if (got.p) {
                if (checksum(got.p, got.size) != got.sum)
                    bad++;
                // Sometimes grow it first: realloc of a foreign block.
                if (rng() % 8 == 0) {
                    void *q = carve_realloc(got.p, got.size * 2 + 1);
                    if (!q) {
                        bad++;
                    } else {
                        if (checksum(q, got.size) != got.sum)
                            bad++;
                        got.p = q;
                    }
                }
                carve_free(got.p);
                consumed++;
            }
        }
        for (Local &l : local)
            if (l.p) {
                if (checksum(l.p, l.size) != l.sum)
                    bad++;
                carve_free(l.p);
            }
    };

    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; i++)
        threads.emplace_back(worker, i);
    for (auto &t : threads)
        t.join();
    // What is left is freed here, by a thread that allocated none of it.
    for (const Handoff &h : queue) {
        if (checksum(h.p, h.size) != h.sum)
            bad++;
        carve_free(h.p);
        consumed++;
    }
    EXPECT_EQ(bad.load(), 0) << "blocks whose contents changed (or allocations that failed)";
    EXPECT_EQ(produced.load(), consumed.load());
    EXPECT_GT(produced.load(), kIterations);  // the queue was really used
}

// One owner thread allocates batches for kFreers threads; they free them
// while the owner keeps allocating. In odd rounds the owner has exited
// before the freers start.
TEST(CarveThreads, ManyThreadsFreeBlocksAllocatedByOneOwner) {
    constexpr int kFreers = 8;
    constexpr int kRounds = 12;
    constexpr size_t kPerFreer = 1500;
    std::atomic<long> bad{0};

    for (int round = 0; round < kRounds; round++) {
        const bool owner_exits_first = round % 2 == 1;
        std::vector<std::vector<Owned>> batches(kFreers);
        std::atomic<bool> freers_done{false};
        std::atomic<int> freers_left{kFreers};

        auto freer = [&](int id) {
            for (Owned &o : batches[static_cast<size_t>(id)]) {
                if (checksum(o.p, o.size) != o.sum)
                    bad++;
                carve_free(o.p);
            }
            if (--freers_left == 0)
                freers_done = true;
        };

        std::vector<std::thread> freers;
        std::thread owner([&] {
            std::mt19937_64 rng(77 + round);
            for (int f = 0; f < kFreers; f++)
                for (size_t i = 0; i < kPerFreer; i++) {
                    size_t n = rng() % 50 == 0 ? thread_size(rng) : 1 + rng() % 256;
                    auto *p = static_cast<unsigned char *>(carve_malloc(n));
                    if (!p) {
                        bad++;
                        return;
                    }
                    fill_random(p, n, rng());
                    batches[static_cast<size_t>(f)].push_back({p, n, checksum(p, n)});
                }
            if (owner_exits_first)
                return;
            for (int f = 0; f < kFreers; f++)
                freers.emplace_back(freer, f);
            // Keep allocating and freeing the same sizes while the remote
            // frees land on this thread's pages.
            std::vector<Owned> mine;
            while (!freers_done) {
                size_t n = 1 + rng() % 256;
                auto *p = static_cast<unsigned char *>(carve_malloc(n));
                if (!p) {
                    bad++;
                    break;
                }
                fill_random(p, n, rng());
                mine.push_back({p, n, checksum(p, n)});
                if (mine.size() > 4000 || rng() % 3 == 0) {
                    size_t k = rng() % mine.size();
                    if (checksum(mine[k].p, mine[k].size) != mine[k].sum)
                        bad++;
                    carve_free(mine[k].p);
                    mine[k] = mine.back();
                    mine.pop_back();
                }
            }
            for (auto &t : freers)
                t.join();
            // The freed blocks are reused without disturbing live ones.
            for (int i = 0; i < 20000; i++) {
                size_t n = 1 + rng() % 256;
                auto *p = static_cast<unsigned char *>(carve_malloc(n));
                if (!p) {
                    bad++;
                    break;
                }
                fill_random(p, n, rng());
                mine.push_back({p, n, checksum(p, n)});
            }
            for (Owned &o : mine) {
                if (checksum(o.p, o.size) != o.sum)
                    bad++;
                carve_free(o.p);
            }
        });
        owner.join();
        if (owner_exits_first) {
            // The owner is gone: its blocks are freed by others, then a new
            // thread allocates (and may reuse its pages).
            for (int f = 0; f < kFreers; f++)
                freers.emplace_back(freer, f);
            for (auto &t : freers)
                t.join();
            std::thread reuser([&] {
                std::vector<Owned> v;
                std::mt19937_64 rng(5 + round);
                for (int i = 0; i < 20000; i++) {
                    size_t n = 1 + rng() % 256;
                    auto *p = static_cast<unsigned char *>(carve_malloc(n));
                    if (!p) {
                        bad++;
                        break;
                    }
                    fill_random(p, n, rng());
                    v.push_back({p, n, checksum(p, n)});
                }
                for (Owned &o : v) {
                    if (checksum(o.p, o.size) != o.sum)
                        bad++;
                    carve_free(o.p);
                }
            });
            reuser.join();
        }
        ASSERT_EQ(bad.load(), 0) << "round " << round
                                 << (owner_exits_first ? " (owner exited first)" : "");
    }
}

// ---- producers and consumers -------------------------------------------

size_t handoff_size(std::mt19937_64 &rng) {
    if (rng() % 64 == 0)
        return 2049 + rng() % (64 * 1024 - 2048);  // a few up to 64 KiB
    return 8 + rng() % (2048 - 8 + 1);
}

TEST(CarveThreads, ProducersHandBlocksToConsumersWhoFreeThemIntact) {
    CARVE_SKIP_IN_DEBUG_MODE();

    constexpr int kProducers = 2, kConsumers = 2;
    constexpr size_t kQueueMax = 1024;
    const size_t per_producer = scaled(150000, 5000);

    const Stats before;
    std::mutex mutex;
    std::condition_variable not_full, not_empty, phase;
    std::deque<Block> queue;
    int producers_left = kProducers;
    bool checked_mid = false;
    std::atomic<long> bad{0}, consumed{0}, alloc_failed{0};
    std::atomic<size_t> pages_after_first{0}, pages_after_second{0};
    std::atomic<size_t> live_after_first{0}, live_after_second{0};
    std::atomic<int> second_round_done{0};

    auto producer = [&](int id) {
        std::mt19937_64 rng(11 + id);
        for (size_t i = 0; i < per_producer; i++) {
            Block b;
            if (!make_block(b, handoff_size(rng), rng())) {
                alloc_failed++;
                break;
            }
            std::unique_lock<std::mutex> lock(mutex);
            not_full.wait(lock, [&] { return queue.size() < kQueueMax; });
            queue.push_back(b);
            not_empty.notify_one();
        }
        {
            std::unique_lock<std::mutex> lock(mutex);
            if (--producers_left == 0)
                not_empty.notify_all();
            // Wait for the consumers to free everything and for the main
            // thread to read the statistics.
            phase.wait(lock, [&] { return checked_mid; });
        }
        // Allocate again, as many blocks live at a time as were in flight
        // before: this thread's pages took the consumers' frees, so the
        // blocks come from them (once collected), not from new pages.
        std::vector<Block> again(kQueueMax / kProducers, Block{nullptr, 0, 0});
        for (size_t i = 0; i < per_producer / 4; i++) {
            Block &b = again[i % again.size()];
            if (b.p != nullptr) {
                if (!intact(b))
                    bad++;
                carve_free(b.p);
                b.p = nullptr;
            }
            if (!make_block(b, handoff_size(rng), rng())) {
                alloc_failed++;
                break;
            }
        }
        {
            std::unique_lock<std::mutex> lock(mutex);
            if (++second_round_done == kProducers) {
                const Stats now;
                pages_after_second = now.pages();
                live_after_second = now.live_blocks();
            }
            phase.notify_all();
            phase.wait(lock, [&] { return second_round_done == kProducers; });
        }
        for (const Block &b : again)
            if (b.p != nullptr) {
                if (!intact(b))
                    bad++;
                carve_free(b.p);
            }
    };

    auto consumer = [&] {
        for (;;) {
            Block b;
            {
                std::unique_lock<std::mutex> lock(mutex);
                not_empty.wait(lock, [&] { return !queue.empty() || producers_left == 0; });
                if (queue.empty())
                    return;
                b = queue.front();
                queue.pop_front();
                not_full.notify_one();
            }
            if (!intact(b))
                bad++;
            carve_free(b.p);
            consumed++;
        }
    };

    std::vector<std::thread> producers, consumers;
    for (int i = 0; i < kProducers; i++)
        producers.emplace_back(producer, i);
    for (int i = 0; i < kConsumers; i++)
        consumers.emplace_back(consumer);
    for (auto &t : consumers)
        t.join();
    {
        std::lock_guard<std::mutex> lock(mutex);
        const Stats now;
        pages_after_first = now.pages();
        live_after_first = now.live_blocks();
        checked_mid = true;
    }
    phase.notify_all();
    for (auto &t : producers)
        t.join();

    EXPECT_EQ(alloc_failed.load(), 0);
    EXPECT_EQ(bad.load(), 0) << "blocks whose contents changed between producer and consumer";
    EXPECT_EQ(static_cast<size_t>(consumed.load()), per_producer * kProducers)
        << "blocks lost in the hand-off";

    RecordProperty("live_after_consumers", static_cast<int>(live_after_first.load()));
    RecordProperty("live_after_second_round", static_cast<int>(live_after_second.load()));
    RecordProperty("pages_after_consumers", static_cast<int>(pages_after_first.load()));
    RecordProperty("pages_after_second_round", static_cast<int>(pages_after_second.load()));

    // The second round reused the consumers' frees.
    const size_t first = pages_after_first.load() - std::min(pages_after_first.load(), before.pages());
    const size_t second = pages_after_second.load() - std::min(pages_after_second.load(), before.pages());
    EXPECT_LE(second, first + first / 4 + 16)
        << "pages grew from " << first << " to " << second
        << " when the producers allocated again after the consumers freed everything";

    // While the producers live, blocks that the consumers freed count as
    // live until their owner collects them; allocating again collects
    // them: at most the blocks in the producers' rings, plus a slack of
    // remote frees still waiting in pages the producers did not need,
    // more of them since a consumer's bins give their last blocks back
    // only when it exits (up to about 1,900 blocks of these classes each).
    const size_t kConsumerBins = 2048;
    EXPECT_LE(live_after_second.load(), before.live_blocks() + kQueueMax + 4096 + kConsumers * kConsumerBins)
        << "live small blocks: " << before.live_blocks() << " at the start, "
        << live_after_first.load() << " once the consumers had freed everything, "
        << live_after_second.load() << " after the producers allocated again";

    // Every thread has exited, so every remote free has been collected:
    // the live blocks are back to the starting figure.
    const Stats after;
    EXPECT_LE(after.live_blocks(), before.live_blocks() + 64)
        << "live small blocks: " << before.live_blocks() << " before, " << after.live_blocks()
        << " after";
}

// ---- many threads freeing into one owner -------------------------------

TEST(CarveThreads, ManyThreadsFreeingIntoOneOwnerLetItReuseTheMemory) {
    CARVE_SKIP_IN_DEBUG_MODE();

    constexpr int kFreers = 8;
    const size_t n = scaled(100000, 10000);
    std::atomic<long> bad{0};
    size_t pages0 = 0, pages1 = 0, pages2 = 0;
    std::vector<Block> blocks(n);
    std::mutex mutex;
    std::condition_variable cv;
    int step = 0;  // 0: owner allocates, 1: freers free, 2: owner allocates again

    auto wait_step = [&](int s) {
        std::unique_lock<std::mutex> lock(mutex);
        cv.wait(lock, [&] { return step >= s; });
    };
    auto set_step = [&](int s) {
        std::lock_guard<std::mutex> lock(mutex);
        step = s;
        cv.notify_all();
    };

    std::thread owner([&] {
        std::mt19937_64 rng(4242);
        pages0 = Stats().pages();
        for (size_t i = 0; i < n; i++) {
            if (!make_block(blocks[i], 16 + rng() % 497, rng())) {
                bad++;
                blocks.resize(i);
                break;
            }
        }
        pages1 = Stats().pages();
        set_step(1);
        wait_step(2);
        // The same amount again, from the remotely freed blocks.
        std::vector<Block> again(blocks.size());
        for (size_t i = 0; i < again.size(); i++) {
            if (!make_block(again[i], 16 + rng() % 497, rng())) {
                bad++;
                again.resize(i);
                break;
            }
        }
        pages2 = Stats().pages();
        for (const Block &b : again) {
            if (!intact(b))
                bad++;
            carve_free(b.p);
        }
    });

    wait_step(1);
    std::vector<std::thread> freers;
    for (int f = 0; f < kFreers; f++)
        freers.emplace_back([&, f] {
            // Disjoint but interleaved sets (every kFreers-th block), so
            // that the frees into one page come from all threads at once.
            for (size_t i = static_cast<size_t>(f); i < blocks.size(); i += kFreers) {
                if (!intact(blocks[i]))
                    bad++;
                carve_free(blocks[i].p);
            }
        });
    for (auto &t : freers)
        t.join();
    set_step(2);
    owner.join();

    EXPECT_EQ(bad.load(), 0);
    RecordProperty("pages_first_round", static_cast<int>(pages1 - std::min(pages1, pages0)));
    RecordProperty("pages_second_round", static_cast<int>(pages2 - std::min(pages2, pages0)));
    const size_t first = pages1 - std::min(pages1, pages0);
    const size_t second = pages2 - std::min(pages2, pages0);
    EXPECT_GT(first, 0u);
    EXPECT_LE(second, first + first / 10 + 8)
        << "the owner took " << first << " pages for the first round and " << second
        << " for the second: remotely freed memory was not reused";
}

}  // namespace
