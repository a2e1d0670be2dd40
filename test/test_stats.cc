// test_stats.cc: what carve says about its memory: mallinfo2 and the legacy
// mallinfo, malloc_info's XML, carve_stats_read (live blocks, large blocks
// and classes; figures that stay consistent while other threads allocate;
// the lock counters), the per-class figures, and malloc_stats and
// carve_stats_print.

#include <carve.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "util.h"
#include "purge_util.h"

namespace {

using carve_test::kMiB;
using carve_test::Stats;

// ---- mallinfo2, mallinfo ---------------------------------------------------

TEST(CarveMallinfo2, ReportsLiveBlocksAndMappedMemory) {
    std::vector<void *> blocks;
    for (int i = 0; i < 1000; i++) {
        void *p = carve_malloc(1000);
        ASSERT_NE(p, nullptr);
        memset(p, 1, 1000);
        blocks.push_back(p);
    }
    void *big = carve_malloc(4 << 20);
    ASSERT_NE(big, nullptr);
    memset(big, 1, 4 << 20);

    struct carve_mallinfo2 mi = carve_mallinfo2();
    EXPECT_GT(mi.arena, 0u);
    EXPECT_GT(mi.uordblks, 0u);
    EXPECT_GE(mi.uordblks, 1000u * 1000u) << "1000 live blocks of 1000 bytes";
    EXPECT_GE(mi.arena, 1000u * 1000u);
    EXPECT_GE(mi.hblks, 1u) << "a 4 MiB block is live";
    EXPECT_GE(mi.hblkhd, size_t{4} << 20) << "a 4 MiB block is live";

    for (void *p : blocks)
        carve_free(p);
    carve_free(big);
}

// glibc: uordblks and fordblks split arena (the non-mmapped heap); blocks
// in their own mappings are counted in hblks/hblkhd only, so that
// uordblks + hblkhd is what the program has allocated.
TEST(CarveMallinfo2, LargeBlocksCountInHblkhdNotUordblks) {
    void *small = carve_malloc(100);
    ASSERT_NE(small, nullptr);
    struct carve_mallinfo2 before = carve_mallinfo2();
    const size_t n = size_t{64} << 20;
    void *big = carve_malloc(n);
    ASSERT_NE(big, nullptr);
    memset(big, 1, n);
    struct carve_mallinfo2 after = carve_mallinfo2();
    EXPECT_GE(after.hblkhd - before.hblkhd, n);
    EXPECT_LT(after.uordblks - before.uordblks, size_t{1} << 20)
        << "a " << n << "-byte mapped block was counted in uordblks as well as hblkhd";
    EXPECT_LE(after.uordblks, after.arena) << "uordblks is part of arena";
    EXPECT_EQ(after.uordblks + after.fordblks, after.arena);
    carve_free(big);
    carve_free(small);
}

// The legacy mallinfo: the same figures in ints, capped rather than
// wrapped (glibc's wrap past 2 GiB).
TEST(CarveMallinfo, MatchesMallinfo2WithinIntRange) {
    std::vector<void *> blocks;
    for (int i = 0; i < 500; i++) {
        blocks.push_back(carve_malloc(700));
        ASSERT_NE(blocks.back(), nullptr);
    }
    void *big = carve_malloc(3 << 20);
    ASSERT_NE(big, nullptr);
    struct carve_mallinfo2 m2 = carve_mallinfo2();
    struct carve_mallinfo m = carve_mallinfo();
    auto capped = [](size_t v) { return v > INT_MAX ? INT_MAX : static_cast<int>(v); };
    EXPECT_EQ(m.arena, capped(m2.arena));
    EXPECT_EQ(m.hblks, capped(m2.hblks));
    EXPECT_EQ(m.hblkhd, capped(m2.hblkhd));
    EXPECT_EQ(m.uordblks, capped(m2.uordblks));
    EXPECT_EQ(m.fordblks, capped(m2.fordblks));
    EXPECT_GE(m.hblkhd, 3 << 20);
    EXPECT_GE(m.uordblks, 500 * 700);
    EXPECT_GE(m.arena, 0) << "capped, never wrapped negative";
    for (void *p : blocks)
        carve_free(p);
    carve_free(big);
}

// ---- malloc_info ----------------------------------------------------------

// The figure of one XML element, e.g. xml_figure(x, "<total type=\"mmap\"", "count").
long long xml_figure(const std::string &xml, const std::string &element, const char *attr) {
    size_t at = xml.find(element);
    if (at == std::string::npos)
        return -1;
    size_t end = xml.find("/>", at);
    std::string key = std::string(attr) + "=\"";
    size_t k = xml.find(key, at);
    if (k == std::string::npos || k > end)
        return -1;
    return std::stoll(xml.substr(k + key.size()));
}

std::string malloc_info_text(int *rc) {
    char *buf = nullptr;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == nullptr)
        return "";
    *rc = carve_malloc_info(0, f);
    fclose(f);
    std::string s(buf, len);
    free(buf);  // open_memstream's buffer: the C library's malloc
    return s;
}

TEST(CarveMallocInfo, WritesGlibcXmlWithFreeBlocksAndMappedBlocks) {
    CARVE_SKIP_IN_DEBUG_MODE();
    constexpr size_t kSize = 2000, kCount = 400;
    std::vector<void *> blocks;
    for (size_t i = 0; i < kCount; i++) {
        blocks.push_back(carve_malloc(kSize));
        ASSERT_NE(blocks.back(), nullptr);
        memset(blocks.back(), 3, kSize);
    }
    void *big = carve_malloc(5 << 20);
    ASSERT_NE(big, nullptr);
    for (size_t i = 0; i < kCount; i += 2)  // half free, the pages stay
        carve_free(blocks[i]);

    int rc = 1;
    const std::string xml = malloc_info_text(&rc);
    EXPECT_EQ(rc, 0);
    ASSERT_EQ(xml.rfind("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n", 0), 0u) << xml;
    ASSERT_GE(xml.size(), 10u);
    EXPECT_EQ(xml.substr(xml.size() - 10), "</malloc>\n") << xml;
    // The size range that holds kSize lists at least the blocks freed here.
    bool found = false;
    for (size_t at = xml.find("<size "); at != std::string::npos; at = xml.find("<size ", at + 1)) {
        std::string line = xml.substr(at, xml.find("/>", at) - at);
        long long from = xml_figure(line, "<size", "from"), to = xml_figure(line, "<size", "to");
        long long count = xml_figure(line, "<size", "count"), total = xml_figure(line, "<size", "total");
        ASSERT_TRUE(from >= 1 && from <= to && count > 0 && total == count * to) << line;
        if (from <= static_cast<long long>(kSize) && static_cast<long long>(kSize) <= to) {
            found = true;
            EXPECT_GE(count, static_cast<long long>(kCount / 2)) << line;
        }
    }
    EXPECT_TRUE(found) << "no <size> element for " << kSize << " bytes:\n" << xml;
    // The top-level totals: the big block is mapped; the arena's memory is
    // what mallinfo2 calls arena.
    const size_t tail = xml.rfind("</heap>");
    ASSERT_NE(tail, std::string::npos);
    const std::string totals = xml.substr(tail);
    EXPECT_GE(xml_figure(totals, "<total type=\"mmap\"", "count"), 1);
    EXPECT_GE(xml_figure(totals, "<total type=\"mmap\"", "size"), 5ll << 20);
    struct carve_mallinfo2 mi = carve_mallinfo2();
    EXPECT_EQ(xml_figure(totals, "<system type=\"current\"", "size"), static_cast<long long>(mi.arena));
    EXPECT_GE(xml_figure(totals, "<system type=\"max\"", "size"), static_cast<long long>(mi.arena));

    for (size_t i = 1; i < kCount; i += 2)
        carve_free(blocks[i]);
    carve_free(big);
}

TEST(CarveMallocInfo, RejectsOptionsOtherThanZero) {
    char *buf = nullptr;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ASSERT_NE(f, nullptr);
    errno = 0;
    EXPECT_EQ(carve_malloc_info(1, f), EINVAL) << "glibc returns the error";
    EXPECT_EQ(errno, 0) << "and leaves errno alone";
    EXPECT_EQ(carve_malloc_info(0, nullptr), EINVAL);
    EXPECT_EQ(errno, 0);
    fclose(f);
    EXPECT_EQ(len, 0u) << "nothing written";
    free(buf);
}

// ---- carve_stats_read -----------------------------------------------------

TEST(CarveStatsRead, CountsLiveBlocksLargeBlocksAndClasses) {
    CARVE_SKIP_IN_DEBUG_MODE();

    struct carve_stats before;
    carve_stats_read(&before);

    std::vector<void *> blocks;
    for (int i = 0; i < 1000; i++) {
        void *p = carve_malloc(1000);
        ASSERT_NE(p, nullptr);
        memset(p, 1, 1000);
        blocks.push_back(p);
    }
    const size_t block_size = carve_malloc_usable_size(blocks[0]);
    void *big = carve_malloc(4 << 20);
    ASSERT_NE(big, nullptr);
    memset(big, 1, 4 << 20);

    struct carve_stats s;
    carve_stats_read(&s);
    EXPECT_GE(s.live, before.live + 1000u * 1000u + (4u << 20));
    EXPECT_GE(s.mapped, s.committed) << "committed memory is part of the mapped memory";
    EXPECT_GE(s.committed, 1000u * 1000u + (4u << 20));
    EXPECT_GE(s.chunks, 1u);
    EXPECT_GE(s.large_live, before.large_live + 1);
    EXPECT_GE(s.large_mapped, before.large_mapped + (4u << 20));
    ASSERT_GT(s.class_count, 0u);
    ASSERT_LE(s.class_count, static_cast<size_t>(CARVE_STATS_CLASSES));
    bool found = false;
    for (size_t i = 0; i < s.class_count; i++) {
        if (i > 0) {
            EXPECT_GT(s.classes[i].size, s.classes[i - 1].size) << "class " << i;
        }
        EXPECT_GE(s.classes[i].mapped, s.classes[i].live * s.classes[i].size) << "class " << i;
        if (s.classes[i].size == block_size) {
            found = true;
            EXPECT_GE(s.classes[i].live, 1000u) << "class of " << block_size << " bytes";
            EXPECT_GE(s.classes[i].pages, 1u);
        }
    }
    EXPECT_TRUE(found) << "no class of " << block_size << " bytes in carve_stats_read";

    for (void *p : blocks)
        carve_free(p);
    carve_free(big);
    struct carve_stats after;
    carve_stats_read(&after);
    EXPECT_LE(after.live + 1000u * 1000u + (4u << 20), s.live) << "freed blocks still count as live";
    EXPECT_LT(after.large_live, s.large_live);
}

// Statistics read while other threads allocate, free each other's blocks
// and exit: every figure stays self-consistent (and the ThreadSanitizer
// build checks that the walk reads the owners' fields without a race).
TEST(CarveStatsRead, StatisticsReadWhileThreadsAllocateStayConsistent) {
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
TEST(CarveStatsRead, LockStatisticsCountTakesAndWaits) {
    carve_stats before;
    carve_stats_read(&before);
    ASSERT_GE(before.lock_count, 2u);
    ASSERT_LE(before.lock_count, static_cast<size_t>(CARVE_STATS_LOCKS));
    EXPECT_STREQ(before.locks[0].name, "arena");
    EXPECT_STREQ(before.locks[1].name, "large cache");
    ASSERT_EQ(before.lock_count, 4u);
    EXPECT_STREQ(before.locks[3].name, "heaps"); // every thread heap's, summed
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
    // each thread's heap: taken in its slow paths (its first malloc at least)
    EXPECT_GE(after.locks[3].acquired - before.locks[3].acquired, static_cast<size_t>(kThreads));
    EXPECT_GE(after.locks[0].acquired - before.locks[0].acquired, static_cast<size_t>(kRounds));
    if (!carve_test::debug_mode()) {
        EXPECT_GE(after.locks[1].acquired - before.locks[1].acquired,
                  static_cast<size_t>(kThreads * kRounds));
    }
}

// ---- malloc_stats, carve_stats_print -----------------------------------------

TEST(CarveStats, MallocStatsAndStatsPrintWriteToStderr) {
    void *p = carve_malloc(1000);
    void *q = carve_malloc(2 << 20);
    ASSERT_NE(p, nullptr);
    ASSERT_NE(q, nullptr);

    testing::internal::CaptureStderr();
    carve_malloc_stats();
    std::string a = testing::internal::GetCapturedStderr();
    testing::internal::CaptureStderr();
    carve_stats_print();
    std::string b = testing::internal::GetCapturedStderr();
    EXPECT_FALSE(a.empty()) << "carve_malloc_stats printed nothing";
    EXPECT_FALSE(b.empty()) << "carve_stats_print printed nothing";

    carve_free(p);
    carve_free(q);
}

// ---- per-class statistics ---------------------------------------------------

// Each test starts and ends with the purge options of purge_util.h (no
// background purger), as the purge tests do.
class CarveClassStats : public carve_test::PurgeDefaults {};

TEST_F(CarveClassStats, PerClassStatisticsAreConsistent) {
    CARVE_SKIP_IN_DEBUG_MODE();

    const size_t sizes[] = {24, 100, 1000, 5000, 40000, 200000};
    const Stats s0;
    std::vector<std::vector<void *>> blocks;
    std::vector<size_t> counts;
    for (size_t size : sizes) {
        size_t n = std::min<size_t>(20000, std::max<size_t>(64, 2 * kMiB / size));
        std::vector<void *> v;
        for (size_t i = 0; i < n; i++) {
            void *p = carve_malloc(size);
            ASSERT_NE(p, nullptr);
            memset(p, 0x3c, size);
            v.push_back(p);
        }
        blocks.push_back(v);
        counts.push_back(n);
    }
    void *large = carve_malloc(5 * kMiB);
    ASSERT_NE(large, nullptr);
    memset(large, 1, 5 * kMiB);

    const Stats s1;
    const carve_stats &st = s1.s;
    ASSERT_GT(st.class_count, 0u);
    ASSERT_LE(st.class_count, static_cast<size_t>(CARVE_STATS_CLASSES));
    size_t live_bytes = 0, class_mapped = 0, class_committed = 0;
    for (size_t c = 0; c < st.class_count; c++) {
        const carve_class_stats &k = st.classes[c];
        SCOPED_TRACE("class " + std::to_string(k.size));
        if (c > 0) {
            EXPECT_GT(k.size, st.classes[c - 1].size);
        }
        EXPECT_LE(k.committed, k.mapped);
        EXPECT_GE(k.committed, k.live * k.size);
        if (k.pages > 0) {
            EXPECT_EQ(k.mapped % k.pages, 0u) << "pages of one class have one size";
            EXPECT_GE(k.mapped / k.pages, k.size) << "a page holds a block";
            // classes up to 64 KiB have one-slice pages (1 to 6 blocks
            // above 8 KiB); bigger ones, one block in as few slices as hold
            // it (debug pages keep room for 3 blocks and a guard)
            const size_t slice = 64 * 1024, page = k.mapped / k.pages;
            if (k.size <= slice) {
                EXPECT_EQ(page, slice);
            } else if (!carve_test::debug_mode()) {
                EXPECT_EQ(page, (k.size + slice - 1) / slice * slice) << "a page for one block";
            }
        } else {
            EXPECT_EQ(k.mapped, 0u);
            EXPECT_EQ(k.live, 0u);
        }
        live_bytes += k.live * k.size;
        class_mapped += k.mapped;
        class_committed += k.committed;
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const size_t c = s1.class_of(sizes[i]);
        ASSERT_LT(c, st.class_count);
        const carve_class_stats &k = st.classes[c];
        SCOPED_TRACE("size " + std::to_string(sizes[i]));
        EXPECT_GE(k.live, s0.s.classes[c].live + counts[i]);
        EXPECT_GE(k.mapped, k.committed);
        EXPECT_GE(k.committed, k.live * k.size);
        EXPECT_GE(k.live * k.size, counts[i] * sizes[i]);
        EXPECT_LE(k.size, sizes[i] + sizes[i] / 4 + 16) << "the class wastes more than 25%";
    }
    EXPECT_EQ(st.live, live_bytes + st.large_mapped);
    EXPECT_GE(st.large_live, s0.s.large_live + 1);
    EXPECT_GE(st.large_mapped, 5 * kMiB);
    EXPECT_LE(class_mapped, st.chunks * 4 * kMiB);
    EXPECT_EQ(st.mapped, st.chunks * 4 * kMiB + st.large_mapped + st.large_cached);
    EXPECT_LE(st.committed, st.mapped);
    EXPECT_GE(st.committed, class_committed + st.large_mapped + st.large_cached);
    EXPECT_GE(st.committed, st.live);

    // Frees by the owning thread show at once.
    for (size_t i = 0; i < blocks.size(); i++) {
        const size_t c = s1.class_of(sizes[i]);
        for (size_t j = 0; j < blocks[i].size(); j += 2)
            carve_free(blocks[i][j]);
        const Stats s2;
        EXPECT_EQ(s2.s.classes[c].live, st.classes[c].live - (blocks[i].size() + 1) / 2)
            << "size " << sizes[i];
        for (size_t j = 1; j < blocks[i].size(); j += 2)
            carve_free(blocks[i][j]);
        const Stats s3;
        EXPECT_EQ(s3.s.classes[c].live, s0.s.classes[c].live) << "size " << sizes[i];
    }
    carve_free(large);
    const Stats s4;
    EXPECT_EQ(s4.s.large_live, s0.s.large_live);
    EXPECT_EQ(s4.s.live, s0.s.live);
}

}  // namespace
