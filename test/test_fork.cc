// test_fork.cc: fork() while other threads allocate: 100 and then 1,000
// forks whose children free blocks of the parent and allocate small, medium
// and large ones (calloc and realloc too), and a child that takes over the
// pages of the parent's other threads.
//
// CARVE_TEST_SCALE (default 1.0) scales the fork count; test/run may set 0.1
// for the sanitizer builds. The thousand forks also stop at a wall-clock
// budget (4 s, after a minimum count), since fork costs 10 to 100 times more
// in some virtual machines and under the sanitizers; they print a NOTE when
// they do.

#include <carve.h>

#include "util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using carve_test::Block;
using carve_test::checksum;
using carve_test::fill_random;
using carve_test::intact;
using carve_test::make_block;
using carve_test::scaled;
using carve_test::Stats;
using carve_test::thread_size;
using carve_test::TimeBudget;

// A block and its checksum.
using Owned = carve_test::Block;

// Aborts the process with a message if the test is still running after
// `seconds`: a deadlock becomes a failure instead of a hung test run.
class Watchdog {
public:
    Watchdog(const char *what, unsigned seconds)
        : thread_([this, what, seconds] {
              std::unique_lock<std::mutex> lock(mutex_);
              if (!cv_.wait_for(lock, std::chrono::seconds(seconds), [this] { return done_; })) {
                  fprintf(stderr, "%s: still running after %u s (deadlock?)\n", what, seconds);
                  abort();
              }
          }) {}
    ~Watchdog() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            done_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread thread_;
};

// ---- fork while threads allocate ----------------------------------------

TEST(CarveFork, ForkWhileOtherThreadsAllocateGivesAWorkingChildHeap) {
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

// ---- fork under load ---------------------------------------------------

size_t churn_size(std::mt19937_64 &rng) {
    uint64_t r = rng() % 1000;
    if (r < 900)
        return 1 + rng() % 1024;
    if (r < 997)
        return 1025 + rng() % (64 << 10);
    return 300000 + rng() % (1 << 20);
}

// Threads that allocate and free until destroyed (also when a test
// returns early on a fatal failure).
class Churners {
public:
    explicit Churners(int count) {
        for (int t = 0; t < count; t++)
            threads_.emplace_back([this, t] { run(t); });
        while (rounds_.load() < 1000)
            std::this_thread::yield();
    }
    ~Churners() { stop(); }
    void stop() {
        stop_ = true;
        for (auto &t : threads_)
            if (t.joinable())
                t.join();
    }
    long bad() const { return bad_.load(); }

private:
    void run(int id) {
        std::mt19937_64 rng(900 + id);
        std::vector<Block> v(48, Block{nullptr, 0, 0});
        while (!stop_.load(std::memory_order_relaxed)) {
            Block &b = v[rng() % v.size()];
            if (b.p) {
                if (!intact(b))
                    bad_++;
                carve_free(b.p);
                b.p = nullptr;
            }
            size_t n = churn_size(rng);
            b.p = static_cast<unsigned char *>(carve_malloc(n));
            if (b.p == nullptr) {
                bad_++;
                break;
            }
            // Only the head of big blocks is written: page faults are slow
            // in some virtual machines, and this test is about fork.
            b.size = std::min<size_t>(n, 8192);
            fill_random(b.p, b.size, rng());
            b.sum = checksum(b.p, b.size);
            rounds_++;
        }
        for (Block &b : v)
            if (b.p) {
                if (!intact(b))
                    bad_++;
                carve_free(b.p);
            }
    }

    std::atomic<bool> stop_{false};
    std::atomic<long> bad_{0}, rounds_{0};
    std::vector<std::thread> threads_;
};

// What a child does after fork: frees blocks of the parent, allocates
// small, medium and large blocks (calloc too), grows one with realloc.
// Returns 0 or the number of the first check that failed.
int child_work(const Block &mine, unsigned char *big, size_t big_size) {
    int status = 0;
    if (!intact(mine))
        status = 2;
    carve_free(mine.p);
    if (big[0] != 0x5a || big[big_size - 1] != 0x5a)
        status = 3;
    carve_free(big);
    void *keep[48];
    for (int k = 0; k < 48; k++) {
        size_t n = (k % 16 == 15) ? 300000 + static_cast<size_t>(k) * 4096
                                  : 1 + static_cast<size_t>(k) * 83;
        auto *p = static_cast<unsigned char *>(carve_malloc(n));
        keep[k] = p;
        if (p == nullptr) {
            status = 4;
            continue;
        }
        p[0] = static_cast<unsigned char>(k);
        p[n - 1] = static_cast<unsigned char>(k);
        if (p[0] != k || p[n - 1] != k)
            status = 5;
    }
    void *grown = carve_realloc(keep[47], 4 << 20);  // large: mremap in the child
    if (grown == nullptr || static_cast<unsigned char *>(grown)[0] != 47)
        status = 6;
    else
        keep[47] = grown;
    for (int k = 0; k < 48; k++)
        carve_free(keep[k]);
    for (size_t n : {size_t(100), size_t(40000), size_t(1) << 20}) {
        auto *z = static_cast<unsigned char *>(carve_calloc(1, n));
        if (z == nullptr || z[0] != 0 || z[n / 2] != 0 || z[n - 1] != 0)
            status = 7;
        carve_free(z);
    }
    return status;
}

TEST(CarveFork, ThousandForksWhileThreadsAllocateGiveWorkingChildren) {
    constexpr int kMinForks = 20;
    const int forks = static_cast<int>(scaled(1000, kMinForks));
    Watchdog watchdog("CarveHeaps.ThousandForks", 240);
    Churners churners(3);

    // fork() costs from 0.1 ms to over 100 ms (virtual machines, sanitizers,
    // three busy threads on two cores; on the 2-core CI VM about 20-35 ms,
    // most of it the busy threads' copy-on-write faults after each fork):
    // 45 s lets a plain build make all 1,000; sanitizer runs scale both the
    // count and the budget down, and stop early, after enough forks, rather
    // than blow CI's time.
    const TimeBudget budget(std::max(4.0, 45.0 * carve_test::test_scale()));
    int failures = 0, done = 0;
    constexpr size_t kBig = 512 * 1024;
    for (; done < forks && failures < 5; done++) {
        if (done >= kMinForks && budget.spent())
            break;
        Block mine;
        ASSERT_TRUE(make_block(mine, 64 + static_cast<size_t>(done % 200) * 13,
                               static_cast<uint64_t>(done)));
        auto *big = static_cast<unsigned char *>(carve_malloc(kBig));  // large, from before fork
        ASSERT_NE(big, nullptr);
        big[0] = big[kBig - 1] = 0x5a;

        pid_t pid = fork();
        ASSERT_NE(pid, -1) << "fork " << done << ": " << strerror(errno);
        if (pid == 0) {
            alarm(10);  // a deadlock in the child ends it with SIGALRM
            _exit(child_work(mine, big, kBig));
        }
        const int status = carve_test::wait_child(pid);
        ASSERT_NE(status, -1);
        if (!carve_test::child_ok(status)) {
            failures++;
            ADD_FAILURE() << "fork " << done << ": child " << carve_test::child_outcome(status);
        }
        EXPECT_TRUE(intact(mine)) << "the child's free changed the parent's block";
        EXPECT_TRUE(big[0] == 0x5a && big[kBig - 1] == 0x5a);
        carve_free(mine.p);
        carve_free(big);
    }
    churners.stop();
    RecordProperty("forks", done);
    if (done < forks)
        printf("[   NOTE   ] %d of %d forks within the time budget\n", done, forks);
    EXPECT_EQ(churners.bad(), 0) << "blocks of the busy threads changed";
    EXPECT_EQ(failures, 0);
}

// ---- the child takes over the parent's pages ---------------------------

// After fork only the forking thread lives on; the pages of the parent's
// other threads must not stay theirs. The child frees those threads' blocks
// (also from a thread it starts, which glibc puts on a dead thread's stack,
// with that thread's id), and allocates as many again: the blocks must be
// counted free, and the pages reused rather than new ones taken.
TEST(CarveFork, AForkedChildTakesOverThePagesOfTheParentsOtherThreads) {
    CARVE_SKIP_IN_DEBUG_MODE();
    constexpr size_t kSize = 96, kPerThread = 20000, kThreads = 2;
    std::vector<Block> blocks(kThreads * kPerThread);
    std::mutex mutex;
    std::condition_variable cv;
    size_t ready = 0;
    bool forked = false;
    std::vector<std::thread> threads;
    for (size_t t = 0; t < kThreads; t++) {
        threads.emplace_back([&, t] {
            for (size_t i = 0; i < kPerThread; i++)
                if (!make_block(blocks[t * kPerThread + i], kSize, t * 977 + i))
                    blocks[t * kPerThread + i].p = nullptr;
            std::unique_lock<std::mutex> lock(mutex);
            ready++;
            cv.notify_all();
            cv.wait(lock, [&] { return forked; });  // alive, and idle, at the fork
        });
    }
    {
        std::unique_lock<std::mutex> lock(mutex);
        cv.wait(lock, [&] { return ready == kThreads; });
    }
    for (const Block &b : blocks)
        ASSERT_NE(b.p, nullptr);

    Watchdog watchdog("fork child takes over pages", 60);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        const Stats start;
        const size_t c = start.class_of(kSize);
        int status = 0;
        // Half freed by the forking thread, half by a thread of the child
        // (ThreadSanitizer cannot start threads after a multithreaded fork).
        auto free_range = [&](size_t from, size_t to) {
            for (size_t i = from; i < to; i++) {
                if (!intact(blocks[i]))
                    status = 2;
                carve_free(blocks[i].p);
            }
        };
        free_range(0, blocks.size() / 2);
#ifdef CARVE_TSAN
        free_range(blocks.size() / 2, blocks.size());
#else
        std::thread helper(free_range, blocks.size() / 2, blocks.size());
        helper.join();
#endif
        carve_malloc_trim(0);
        const Stats freed;
        if (freed.s.classes[c].live > 1000)
            status = 3;  // the frees were never collected
        std::vector<Block> again(blocks.size());
        for (size_t i = 0; i < again.size(); i++)
            if (!make_block(again[i], kSize, i))
                status = 4;
        const Stats refilled;
        // 40,000 blocks of 96 bytes fill about 59 pages of 64 KiB.
        if (refilled.s.classes[c].pages > start.s.classes[c].pages + 8)
            status = 5;  // new pages instead of the freed ones
        for (const Block &b : again) {
            if (!intact(b))
                status = 6;
            carve_free(b.p);
        }
        if (status != 0)
            fprintf(stderr, "child: class %zu: %zu pages at fork, live %zu after the frees, "
                            "%zu pages after as many allocations again\n",
                    start.s.classes[c].size, start.s.classes[c].pages, freed.s.classes[c].live,
                    refilled.s.classes[c].pages);
        _exit(status);
    }
    const int status = carve_test::wait_child(pid);
    EXPECT_TRUE(carve_test::child_ok(status))
        << "child " << carve_test::child_outcome(status) << " (2: a block changed, 3: frees not collected, 4: malloc failed, "
           "5: pages not reused, 6: a new block changed)";
    {
        std::lock_guard<std::mutex> lock(mutex);
        forked = true;
    }
    cv.notify_all();
    for (auto &t : threads)
        t.join();
    for (const Block &b : blocks) {
        EXPECT_TRUE(intact(b)) << "the parent's copy changed";
        carve_free(b.p);
    }
}

}  // namespace
