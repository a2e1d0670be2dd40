// test_size_class.cc: the size classes as a program sees them, through
// carve_malloc_usable_size: enough room, never less for a bigger request,
// bounded waste, a handful of classes per doubling, 16-byte granularity.

#include <carve.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include "util.h"

namespace {

constexpr size_t kSmallMax = size_t{256} << 10;  // largest size with a class
constexpr size_t kLargest = 300000;              // a little into large blocks

struct Sample {
    size_t size;
    size_t usable;
};

// Every size up to 4096, every 16th up to 64 KiB, every 64th above, plus
// each power of two and quarter-power of two and their neighbours.
std::vector<size_t> sampled_sizes() {
    std::set<size_t> sizes;
    for (size_t n = 1; n <= 4096; n++)
        sizes.insert(n);
    for (size_t n = 4096; n <= 65536; n += 16)
        sizes.insert(n);
    for (size_t n = 65536; n <= kLargest; n += 64)
        sizes.insert(n);
    for (size_t p = 4096; p <= kLargest; p *= 2)
        for (size_t q : {p, p + p / 4, p + p / 2, p + 3 * p / 4})
            for (size_t n : {q - 1, q, q + 1})
                if (n <= kLargest)
                    sizes.insert(n);
    return std::vector<size_t>(sizes.begin(), sizes.end());
}

// Measured once: usable size of a fresh block of each sampled size.
const std::vector<Sample> &samples() {
    static const std::vector<Sample> table = [] {
        std::vector<Sample> t;
        for (size_t n : sampled_sizes()) {
            void *p = carve_malloc(n);
            if (!p) {
                ADD_FAILURE() << "carve_malloc(" << n << ") returned NULL";
                continue;
            }
            t.push_back({n, carve_malloc_usable_size(p)});
            carve_free(p);
        }
        return t;
    }();
    return table;
}

TEST(CarveSizeClass, UsableSizeIsAtLeastTheRequestForEverySize) {
    ASSERT_FALSE(samples().empty());
    int failures = 0;
    for (const Sample &s : samples()) {
        if (s.usable < s.size && failures++ < 20)
            ADD_FAILURE() << "usable(malloc(" << s.size << ")) = " << s.usable;
    }
    EXPECT_EQ(failures, 0);
}

TEST(CarveSizeClass, UsableSizeNeverShrinksAsTheRequestGrows) {
    int failures = 0;
    const auto &t = samples();
    for (size_t i = 1; i < t.size(); i++) {
        if (t[i].usable < t[i - 1].usable && failures++ < 20)
            ADD_FAILURE() << "usable(" << t[i - 1].size << ") = " << t[i - 1].usable
                          << " but usable(" << t[i].size << ") = " << t[i].usable;
    }
    EXPECT_EQ(failures, 0);
}

TEST(CarveSizeClass, SameRequestAlwaysGetsTheSameUsableSize) {
    // With many blocks of one size live at once (several pages of a class).
    for (size_t n : {1, 8, 24, 100, 1000, 3000, 20000, 100000, 262144}) {
        std::vector<void *> blocks;
        std::set<size_t> usable;
        for (int i = 0; i < (n <= 4096 ? 3000 : 40); i++) {
            void *p = carve_malloc(n);
            ASSERT_NE(p, nullptr);
            usable.insert(carve_malloc_usable_size(p));
            blocks.push_back(p);
        }
        EXPECT_EQ(usable.size(), 1u) << "size " << n << " got " << usable.size()
                                     << " different usable sizes";
        for (void *p : blocks)
            carve_free(p);
    }
}

TEST(CarveSizeClass, WasteIsAtMostAQuarterPlusSixteenUpTo256KiB) {
    int failures = 0;
    for (const Sample &s : samples()) {
        if (s.size > kSmallMax)
            break;
        bool ok = s.size < 16 ? s.usable <= 16
                              : static_cast<double>(s.usable) <= s.size * 1.25 + 16;
        if (!ok && failures++ < 20)
            ADD_FAILURE() << "malloc(" << s.size << ") has usable size " << s.usable
                          << ", more than size * 1.25 + 16";
    }
    EXPECT_EQ(failures, 0);
}

// Eight classes per doubling up to 512 bytes (steps of 16, then 32): blocks
// of a few hundred bytes are much of most heaps (size_class.c).
TEST(CarveSizeClass, WasteIsAtMostFifteenBytesOrAnEighthUpTo512) {
    CARVE_SKIP_IN_DEBUG_MODE();

    int failures = 0;
    for (const Sample &s : samples()) {
        if (s.size > 512)
            break;
        if (s.usable > s.size + std::max<size_t>(15, s.size / 8) && failures++ < 20)
            ADD_FAILURE() << "malloc(" << s.size << ") has usable size " << s.usable;
    }
    EXPECT_EQ(failures, 0);
}

TEST(CarveSizeClass, LargeBlocksWasteAtMostAPageAndAHeader) {
    int failures = 0;
    for (const Sample &s : samples()) {
        if (s.size <= kSmallMax)
            continue;
        if (s.usable > s.size + 4096 + 64 && failures++ < 20)
            ADD_FAILURE() << "large malloc(" << s.size << ") has usable size " << s.usable;
    }
    EXPECT_EQ(failures, 0);
    // Bigger ones too, one by one.
    for (size_t n : {size_t{1} << 20, (size_t{1} << 20) + 1, size_t{3000000},
                     (size_t{16} << 20) + 12345}) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr);
        size_t u = carve_malloc_usable_size(p);
        EXPECT_GE(u, n);
        EXPECT_LE(u, n + 4096 + 64) << "large malloc(" << n << ")";
        carve_free(p);
    }
}

TEST(CarveSizeClass, AboutFourClassesPerDoublingFrom128BytesTo256KiB) {
    CARVE_SKIP_IN_DEBUG_MODE();

    for (size_t low = 128; low < kSmallMax; low *= 2) {
        std::set<size_t> distinct;
        for (const Sample &s : samples())
            if (s.size > low && s.size <= 2 * low)
                distinct.insert(s.usable);
        EXPECT_GE(distinct.size(), 2u) << "sizes in (" << low << ", " << 2 * low << "]";
        EXPECT_LE(distinct.size(), 8u) << "sizes in (" << low << ", " << 2 * low << "]";
    }
}

TEST(CarveSizeClass, UsableSizesFromSixteenUpAreMultiplesOfSixteen) {
    CARVE_SKIP_IN_DEBUG_MODE();

    int failures = 0;
    for (const Sample &s : samples()) {
        if (s.usable >= 16 && s.usable % 16 != 0 && failures++ < 20)
            ADD_FAILURE() << "usable(malloc(" << s.size << ")) = " << s.usable;
    }
    EXPECT_EQ(failures, 0);
}

TEST(CarveSizeClass, WholeUsableSizeOfEveryClassIsWritable) {
    // One block per distinct usable size, written to the end, all live at
    // once, then checked: a usable size that overlaps the next block shows.
    std::vector<std::pair<unsigned char *, size_t>> blocks;
    size_t last = 0;
    for (const Sample &s : samples()) {
        if (s.usable == last)
            continue;
        last = s.usable;
        for (int copy = 0; copy < 3; copy++) {
            auto *p = static_cast<unsigned char *>(carve_malloc(s.size));
            ASSERT_NE(p, nullptr);
            size_t u = carve_malloc_usable_size(p);
            memset(p, static_cast<int>(blocks.size() & 0xff), u);
            blocks.push_back({p, u});
        }
    }
    for (size_t i = 0; i < blocks.size(); i++) {
        const unsigned char want = static_cast<unsigned char>(i & 0xff);
        for (size_t k = 0; k < blocks[i].second; k++)
            if (blocks[i].first[k] != want) {
                ADD_FAILURE() << "block " << i << " of usable size " << blocks[i].second
                              << " changed at offset " << k;
                break;
            }
        carve_free(blocks[i].first);
    }
}

}  // namespace
