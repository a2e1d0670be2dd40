// test_threads.cc: carve from several threads at once: blocks handed between
// threads and freed by one that did not allocate them, many threads freeing
// one owner's blocks (also after the owner exited), and fork() while other
// threads keep allocating.

#include <carve.h>

#include "util.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using carve_test::checksum;
using carve_test::fill_random;


// Mostly small, some medium, a few large blocks.
size_t thread_size(std::mt19937_64 &rng) {
    uint64_t r = rng() % 1000;
    if (r < 950)
        return 1 + rng() % 1024;
    if (r < 998)
        return 1025 + rng() % (64 << 10);
    return 300000 + rng() % (1 << 20);  // large blocks
}

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

struct Owned {
    unsigned char *p;
    size_t size;
    uint64_t sum;
};

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

TEST(CarveThreads, ShortLivedThreadsLeaveBlocksForTheMainThreadToFree) {
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

TEST(CarveThreads, ForkWhileOtherThreadsAllocateGivesAWorkingChildHeap) {
    constexpr int kForks = 100;
    std::atomic<bool> stop{false};
    std::atomic<long> bad{0}, churn{0};

    std::vector<std::thread> background;
    for (int t = 0; t < 3; t++)
        background.emplace_back([&, t] {
            std::mt19937_64 rng(300 + t);
            std::vector<Owned> v(32, Owned{nullptr, 0, 0});
            while (!stop) {
                Owned &o = v[rng() % v.size()];
                if (o.p) {
                    if (checksum(o.p, o.size) != o.sum)
                        bad++;
                    carve_free(o.p);
                }
                o.size = thread_size(rng);
                o.p = static_cast<unsigned char *>(carve_malloc(o.size));
                if (!o.p) {
                    bad++;
                    break;
                }
                fill_random(o.p, o.size, rng());
                o.sum = checksum(o.p, o.size);
                churn++;
            }
            for (Owned &o : v)
                if (o.p) {
                    if (checksum(o.p, o.size) != o.sum)
                        bad++;
                    carve_free(o.p);
                }
        });

    // Wait until the background threads are busy.
    while (churn.load() < 1000)
        std::this_thread::yield();

    for (int i = 0; i < kForks; i++) {
        // A block from before the fork that the child checks and frees.
        const size_t parent_size = 100 + static_cast<size_t>(i) * 37;
        auto *parent_block = static_cast<unsigned char *>(carve_malloc(parent_size));
        ASSERT_NE(parent_block, nullptr);
        fill_random(parent_block, parent_size, static_cast<uint64_t>(i));
        const uint64_t parent_sum = checksum(parent_block, parent_size);

        pid_t pid = fork();
        ASSERT_NE(pid, -1) << "fork failed";
        if (pid == 0) {
            // Child: only carve_* and async-signal-safe calls; a deadlock
            // is turned into a failure by the alarm.
            alarm(20);
            int status = 0;
            if (checksum(parent_block, parent_size) != parent_sum)
                status = 2;
            carve_free(parent_block);
            for (int k = 0; k < 24; k++) {
                // Small and medium sizes, and one large block.
                size_t n = k == 23 ? 300000 : 1 + static_cast<size_t>(k) * 411;
                auto *p = static_cast<unsigned char *>(carve_malloc(n));
                if (!p) {
                    status = 3;
                    break;
                }
                p[0] = static_cast<unsigned char>(k);
                p[n - 1] = static_cast<unsigned char>(k);
                auto *q = static_cast<unsigned char *>(carve_realloc(p, n * 2));
                if (!q) {
                    status = 4;
                    break;
                }
                if (q[0] != k || q[n - 1] != k)
                    status = 5;
                carve_free(q);
            }
            void *z = carve_calloc(100, 100);
            if (!z || static_cast<unsigned char *>(z)[9999] != 0)
                status = 6;
            carve_free(z);
            _exit(status);
        }
        const int status = carve_test::wait_child(pid);
        ASSERT_NE(status, -1);
        EXPECT_TRUE(carve_test::child_ok(status))
            << "fork " << i << ": child " << carve_test::child_outcome(status);
        // The parent's copy is untouched by the child's free.
        EXPECT_EQ(checksum(parent_block, parent_size), parent_sum);
        carve_free(parent_block);
        if (HasFailure())
            break;
    }
    stop = true;
    for (auto &t : background)
        t.join();
    EXPECT_EQ(bad.load(), 0);
}

// Statistics read while other threads allocate, free each other's blocks
// and exit: every figure stays self-consistent (and the ThreadSanitizer
// build checks that the walk reads the owners' fields without a race).
TEST(CarveThreads, StatisticsReadWhileThreadsAllocateStayConsistent) {
    struct Worker {
        std::atomic<bool> stop{false};
        std::thread thread;
    };
    std::atomic<long> bad{0};
    std::mutex mutex;
    std::deque<void *> shared;  // blocks any thread may free
    auto churn = [&](Worker *w, int id) {
        std::mt19937_64 rng(4242 + id);
        std::vector<void *> mine(64, nullptr);
        for (long n = 0; !w->stop.load(std::memory_order_relaxed) || n < 2000; n++) {
            void *&slot = mine[rng() % mine.size()];
            carve_free(slot);
            const size_t size = rng() % 8 == 0 ? 1025 + rng() % 8192 : 1 + rng() % 512;
            slot = carve_malloc(size);
            if (slot == nullptr) {
                bad++;
                break;
            }
            memset(slot, id, size < 16 ? size : 16);
            if (n % 16 == 0) {
                std::lock_guard<std::mutex> lock(mutex);
                shared.push_back(carve_malloc(48));
                if (shared.size() > 32) {
                    carve_free(shared.front());
                    shared.pop_front();
                }
            }
        }
        for (void *p : mine)
            carve_free(p);
    };
    std::deque<std::unique_ptr<Worker>> workers;
    auto start = [&](int id) {
        workers.emplace_back(new Worker);
        Worker *w = workers.back().get();
        w->thread = std::thread(churn, w, id);
    };
    auto retire = [&] {
        workers.front()->stop = true;
        workers.front()->thread.join();
        workers.pop_front();
    };
    for (int t = 0; t < 3; t++)
        start(t);
    const int reads = static_cast<int>(carve_test::scaled(400, 40));
    for (int r = 0; r < reads; r++) {
        if (r % 50 == 49) {  // a thread exits, its pages are abandoned, another starts
            retire();
            start(3 + r);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        carve_stats st;
        carve_stats_read(&st);
        size_t live_small = 0;
        for (size_t c = 0; c < st.class_count; c++) {
            const carve_class_stats &k = st.classes[c];
            live_small += k.live * k.size;
            EXPECT_LE(k.live * k.size, k.committed) << "class " << k.size << ", read " << r;
            EXPECT_LE(k.committed, k.mapped) << "class " << k.size << ", read " << r;
        }
        EXPECT_EQ(st.live, live_small + st.large_mapped) << "read " << r;
        EXPECT_LE(live_small, st.chunks * (size_t(4) << 20)) << "read " << r;
        struct carve_mallinfo2 mi = carve_mallinfo2();
        EXPECT_EQ(mi.uordblks + mi.fordblks, mi.arena) << "read " << r;
        if (HasFailure())
            break;
    }
    while (!workers.empty())
        retire();
    for (void *p : shared)
        carve_free(p);
    EXPECT_EQ(bad.load(), 0) << "failed allocations";
}

// Every lock reports how often it was taken and how often a thread had to
// wait for it. Pages of a one-block class (100 KB) go to the arena and back
// at every malloc and free of a thread holding a few, so threads doing that
// take the arena lock many times; contended takes can never outnumber takes.
TEST(CarveThreads, LockStatisticsCountTakesAndWaits) {
    carve_stats before;
    carve_stats_read(&before);
    ASSERT_GE(before.lock_count, 2u);
    ASSERT_LE(before.lock_count, static_cast<size_t>(CARVE_STATS_LOCKS));
    EXPECT_STREQ(before.locks[0].name, "arena");
    EXPECT_STREQ(before.locks[1].name, "large cache");
    constexpr int kThreads = 4, kRounds = 200;
    std::atomic<long> failed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++)
        threads.emplace_back([&] {
            for (int r = 0; r < kRounds; r++) {
                void *p[8];
                for (void *&q : p)
                    if ((q = carve_malloc(100000)) == nullptr)
                        failed++;
                for (void *q : p)
                    carve_free(q);
                void *big = carve_malloc(1 << 20);  // the large cache's lock
                if (big == nullptr)
                    failed++;
                carve_free(big);
            }
        });
    for (auto &t : threads)
        t.join();
    carve_stats after;
    carve_stats_read(&after);
    EXPECT_EQ(failed.load(), 0);
    ASSERT_EQ(after.lock_count, before.lock_count);
    for (size_t i = 0; i < after.lock_count; i++) {
        EXPECT_GE(after.locks[i].acquired, before.locks[i].acquired) << after.locks[i].name;
        EXPECT_GE(after.locks[i].contended, before.locks[i].contended) << after.locks[i].name;
        EXPECT_LE(after.locks[i].contended, after.locks[i].acquired) << after.locks[i].name;
    }
    // 8 one-block pages a round at the least (spares aside) come from the
    // arena, and each large free puts its mapping in the cache, locked
    // (debug mode gives large blocks mappings of their own, uncached).
    EXPECT_GE(after.locks[0].acquired - before.locks[0].acquired, static_cast<size_t>(kRounds));
    if (!carve_test::debug_mode()) {
        EXPECT_GE(after.locks[1].acquired - before.locks[1].acquired,
                  static_cast<size_t>(kThreads * kRounds));
    }
}

}  // namespace
