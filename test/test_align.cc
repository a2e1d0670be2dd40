// test_align.cc: the aligned entry points: posix_memalign, aligned_alloc,
// memalign, valloc and pvalloc, one behaviour per test (invalid and tiny
// alignments, huge sizes, errno); then every power-of-two alignment from 8
// bytes to 1 GiB through the three aligned entry points, with ordinary
// blocks allocated in between.

#include <carve.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "util.h"

namespace {

using carve_test::is_aligned;
using carve_test::opaque;

size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

constexpr int kErrnoSentinel = 4242;

enum class Api { kAlignedAlloc, kPosixMemalign, kMemalign };

const char *api_name(Api api) {
    switch (api) {
    case Api::kAlignedAlloc:
        return "aligned_alloc";
    case Api::kPosixMemalign:
        return "posix_memalign";
    case Api::kMemalign:
        return "memalign";
    }
    return "?";
}

void *aligned(Api api, size_t alignment, size_t size) {
    switch (api) {
    case Api::kAlignedAlloc:
        return carve_aligned_alloc(alignment, size);
    case Api::kPosixMemalign: {
        void *p = nullptr;
        return carve_posix_memalign(&p, alignment, size) == 0 ? p : nullptr;
    }
    case Api::kMemalign:
        return carve_memalign(alignment, size);
    }
    return nullptr;
}

struct Block {
    unsigned char *p;
    size_t size;
    unsigned char mark;
};

// Marks the first and last byte, so that overlapping blocks show up.
void mark(Block &b) {
    b.p[0] = b.mark;
    if (b.size > 1)
        b.p[b.size - 1] = static_cast<unsigned char>(b.mark ^ 0xff);
}

bool marks_intact(const Block &b) {
    return b.p[0] == b.mark &&
           (b.size == 1 || b.p[b.size - 1] == static_cast<unsigned char>(b.mark ^ 0xff));
}

// Sorted by address, no block may reach into the next one.
void expect_disjoint(std::vector<Block> blocks) {
    std::sort(blocks.begin(), blocks.end(),
              [](const Block &a, const Block &b) { return a.p < b.p; });
    for (size_t i = 1; i < blocks.size(); i++)
        EXPECT_LE(blocks[i - 1].p + blocks[i - 1].size, blocks[i].p)
            << "block " << static_cast<void *>(blocks[i - 1].p) << " of " << blocks[i - 1].size
            << " bytes overlaps " << static_cast<void *>(blocks[i].p);
}

// ---- posix_memalign -----------------------------------------------------

TEST(CarvePosixMemalign, InvalidAlignmentReturnsEinvalAndKeepsErrno) {
    const size_t bad[] = {0, 1, 2, 3, sizeof(void *) / 2, 12, 24, 48, 100, 4097, SIZE_MAX};
    for (size_t alignment : bad) {
        void *sentinel = reinterpret_cast<void *>(uintptr_t{0x1234560});
        void *p = sentinel;
        errno = kErrnoSentinel;
        int r = carve_posix_memalign(&p, alignment, 64);
        EXPECT_EQ(r, EINVAL) << "alignment " << alignment;
        EXPECT_EQ(errno, kErrnoSentinel) << "alignment " << alignment << " changed errno";
        EXPECT_TRUE(p == sentinel || p == nullptr)
            << "alignment " << alignment << " stored " << p;
        if (r == 0)
            carve_free(p);
    }
}

TEST(CarvePosixMemalign, SuccessReturnsZeroAlignedBlockAndKeepsErrno) {
    for (size_t alignment = sizeof(void *); alignment <= (size_t{1} << 22); alignment *= 2) {
        for (size_t n : {1, 64, 1000, 70000}) {
            void *p = nullptr;
            errno = kErrnoSentinel;
            int r = carve_posix_memalign(&p, alignment, n);
            ASSERT_EQ(r, 0) << "alignment " << alignment << " size " << n;
            EXPECT_EQ(errno, kErrnoSentinel) << "alignment " << alignment << " size " << n;
            ASSERT_NE(p, nullptr);
            EXPECT_TRUE(is_aligned(p, alignment)) << p << " alignment " << alignment;
            EXPECT_GE(carve_malloc_usable_size(p), n);
            memset(p, 0x11, n);
            carve_free(p);
        }
    }
}

TEST(CarvePosixMemalign, HugeSizeReturnsEnomemAndKeepsErrno) {
    struct {
        size_t alignment, size;
    } cases[] = {
        {16, SIZE_MAX},
        {64, SIZE_MAX - 100},
        {4096, SIZE_MAX - 4096},
        {4096, static_cast<size_t>(PTRDIFF_MAX) + 1},
        {size_t{1} << 22, size_t{1} << 62},
        {8, size_t{1} << 48},
    };
    for (const auto &c : cases) {
        void *p = nullptr;
        errno = kErrnoSentinel;
        int r = carve_posix_memalign(&p, c.alignment, opaque(c.size));
        EXPECT_EQ(r, ENOMEM) << "alignment " << c.alignment << " size " << c.size;
        EXPECT_EQ(errno, kErrnoSentinel) << "alignment " << c.alignment << " size " << c.size;
        if (r == 0)
            carve_free(p);
    }
}

// ---- aligned_alloc ------------------------------------------------------

TEST(CarveAlignedAlloc, NonPowerOfTwoAlignmentFailsWithEinval) {
    for (size_t alignment : {3, 6, 24, 48, 100, 4097, 12345, 3 << 20}) {
        errno = 0;
        void *p = carve_aligned_alloc(opaque(alignment), 64);
        EXPECT_EQ(p, nullptr) << "aligned_alloc(" << alignment << ", 64)";
        EXPECT_EQ(errno, EINVAL) << "aligned_alloc(" << alignment << ", 64)";
        if (p)
            carve_free(p);
    }
}

TEST(CarveAlignedAlloc, PowerOfTwoAlignmentsIncludingTinyOnesWork) {
    for (size_t alignment = 1; alignment <= (size_t{1} << 22); alignment *= 2) {
        for (size_t n : {size_t{1}, size_t{100}, alignment, 3 * alignment + 5}) {
            void *p = carve_aligned_alloc(alignment, n);
            ASSERT_NE(p, nullptr) << "aligned_alloc(" << alignment << ", " << n << ")";
            EXPECT_TRUE(is_aligned(p, alignment)) << p;
            EXPECT_GE(carve_malloc_usable_size(p), n);
            memset(p, 0x22, n);
            carve_free(p);
        }
    }
}

TEST(CarveAlignedAlloc, HugeSizeFailsWithEnomem) {
    for (size_t n : {SIZE_MAX, SIZE_MAX - 64, static_cast<size_t>(PTRDIFF_MAX) + 1}) {
        errno = 0;
        void *p = carve_aligned_alloc(64, opaque(n));
        EXPECT_EQ(p, nullptr) << n;
        EXPECT_EQ(errno, ENOMEM) << n;
        if (p)
            carve_free(p);
    }
}

// ---- memalign, valloc, pvalloc -----------------------------------------

TEST(CarveMemalign, NonPowerOfTwoAlignmentIsRoundedUp) {
    struct {
        size_t asked, expected;
    } cases[] = {{24, 32},     {48, 64},     {100, 128},          {3000, 4096},
                 {5000, 8192}, {100000, 131072}, {3 << 20, 4 << 20}};
    for (const auto &c : cases) {
        for (size_t n : {1, 100, 10000}) {
            void *p = carve_memalign(opaque(c.asked), n);
            ASSERT_NE(p, nullptr) << "memalign(" << c.asked << ", " << n << ")";
            EXPECT_TRUE(is_aligned(p, c.expected))
                << "memalign(" << c.asked << ", " << n << ") = " << p << " is not aligned to "
                << c.expected;
            EXPECT_GE(carve_malloc_usable_size(p), n);
            memset(p, 0x44, n);
            carve_free(p);
        }
    }
}

TEST(CarveMemalign, PowerOfTwoAndTinyAlignmentsWork) {
    for (size_t alignment : {0, 1, 2, 4, 8, 16, 64, 4096, 65536, 1 << 21}) {
        for (size_t n : {1, 17, 5000, 300000}) {
            void *p = carve_memalign(alignment, n);
            ASSERT_NE(p, nullptr) << "memalign(" << alignment << ", " << n << ")";
            if (alignment > 1) {
                EXPECT_TRUE(is_aligned(p, alignment)) << p;
            }
            EXPECT_TRUE(is_aligned(p, n >= 16 ? 16 : 8)) << p;
            EXPECT_GE(carve_malloc_usable_size(p), n);
            memset(p, 0x45, n);
            carve_free(p);
        }
    }
}

TEST(CarveValloc, ReturnsPageAlignedBlocks) {
    const size_t page = page_size();
    for (size_t n : {size_t{1}, size_t{100}, page - 1, page, page + 1, size_t{40000},
                     size_t{300000}, size_t{(1 << 20) + 1}}) {
        void *p = carve_valloc(n);
        ASSERT_NE(p, nullptr) << "valloc(" << n << ")";
        EXPECT_TRUE(is_aligned(p, page)) << "valloc(" << n << ") = " << p;
        EXPECT_GE(carve_malloc_usable_size(p), n);
        memset(p, 0x55, n);
        carve_free(p);
    }
}

TEST(CarvePvalloc, RoundsSizeUpToWholePages) {
    const size_t page = page_size();
    for (size_t n : {size_t{1}, size_t{100}, page - 1, page, page + 1, 3 * page + 5,
                     size_t{300000}, size_t{(1 << 20) + 1}}) {
        void *p = carve_pvalloc(n);
        ASSERT_NE(p, nullptr) << "pvalloc(" << n << ")";
        EXPECT_TRUE(is_aligned(p, page)) << "pvalloc(" << n << ") = " << p;
        const size_t rounded = round_up(n, page);
        ASSERT_GE(carve_malloc_usable_size(p), rounded) << "pvalloc(" << n << ")";
        memset(p, 0x66, rounded);  // the whole rounded size is ours
        carve_free(p);
    }
}

TEST(CarvePvalloc, ZeroSizeGivesOneUsablePage) {
    const size_t page = page_size();
    void *p = carve_pvalloc(0);
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(is_aligned(p, page)) << p;
    ASSERT_GE(carve_malloc_usable_size(p), page) << "pvalloc(0) must give a whole page";
    memset(p, 0x77, page);
    carve_free(p);
}

// ---- every alignment ------------------------------------------------------

TEST(CarveAlign, EveryPowerOfTwoAlignmentFrom8BytesTo1GiBIsHonoured) {
    const Api apis[] = {Api::kAlignedAlloc, Api::kPosixMemalign, Api::kMemalign};
    unsigned char next_mark = 1;
    for (unsigned shift = 3; shift <= 30; shift++) {
        const size_t alignment = size_t{1} << shift;
        std::vector<size_t> sizes;
        if (alignment >= (size_t{64} << 20))
            sizes = {1, 4096};
        else
            sizes = {1, alignment - 1, alignment, alignment + 1, 3 * alignment};
        std::sort(sizes.begin(), sizes.end());
        sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());

        // Blocks of this alignment stay live until the end of the round
        // (one at a time from 64 MiB up, to keep the address space modest).
        std::vector<Block> live;
        const bool hold = alignment < (size_t{64} << 20);
        for (Api api : apis) {
            for (size_t size : sizes) {
                // An ordinary block in between.
                const size_t filler_size = 24 + (next_mark * 97u) % 5000;
                Block filler{static_cast<unsigned char *>(carve_malloc(filler_size)), filler_size,
                             next_mark++};
                ASSERT_NE(filler.p, nullptr);
                ASSERT_TRUE(is_aligned(filler.p, 16));
                mark(filler);
                live.push_back(filler);

                void *p = aligned(api, alignment, size);
                ASSERT_NE(p, nullptr) << api_name(api) << "(" << alignment << ", " << size
                                      << ") failed";
                EXPECT_TRUE(is_aligned(p, alignment))
                    << api_name(api) << "(" << alignment << ", " << size << ") = " << p;
                EXPECT_GE(carve_malloc_usable_size(p), size)
                    << api_name(api) << "(" << alignment << ", " << size << ")";
                Block b{static_cast<unsigned char *>(p), size, next_mark++};
                mark(b);
                if (hold) {
                    live.push_back(b);
                } else {
                    EXPECT_TRUE(marks_intact(b));
                    carve_free(p);
                }
            }
        }
        for (const Block &b : live)
            EXPECT_TRUE(marks_intact(b)) << "block at " << static_cast<void *>(b.p) << " of "
                                         << b.size << " bytes, alignment " << alignment;
        expect_disjoint(live);
        for (const Block &b : live)
            carve_free(b.p);
        if (HasFatalFailure())
            return;
    }
}

TEST(CarveAlign, AlignedBlocksInterleavedWithMallocsStayDisjointAndIntact) {
    std::mt19937_64 rng(20240607);
    std::vector<Block> live;
    unsigned char next_mark = 1;
    for (int i = 0; i < 20000; i++) {
        const size_t size = 1 + rng() % 6000;
        Block b{nullptr, size, next_mark++};
        if (next_mark == 0)
            next_mark = 1;
        size_t alignment = 0;
        switch (rng() % 4) {
        case 0:
            b.p = static_cast<unsigned char *>(carve_malloc(size));
            break;
        default: {
            alignment = size_t{8} << (rng() % 14);  // 8 .. 64 KiB
            Api api = static_cast<Api>(rng() % 3);
            b.p = static_cast<unsigned char *>(aligned(api, alignment, size));
            ASSERT_NE(b.p, nullptr) << api_name(api) << "(" << alignment << ", " << size << ")";
            EXPECT_TRUE(is_aligned(b.p, alignment));
            break;
        }
        }
        ASSERT_NE(b.p, nullptr);
        EXPECT_GE(carve_malloc_usable_size(b.p), size);
        mark(b);
        live.push_back(b);
        // Free a random earlier block now and then, so that holes appear.
        if (rng() % 3 == 0) {
            size_t k = rng() % live.size();
            EXPECT_TRUE(marks_intact(live[k]));
            carve_free(live[k].p);
            live[k] = live.back();
            live.pop_back();
        }
    }
    for (const Block &b : live)
        EXPECT_TRUE(marks_intact(b));
    expect_disjoint(live);
    for (const Block &b : live)
        carve_free(b.p);
}

TEST(CarveAlign, AlignedBlocksAreWritableToTheirUsableSize) {
    for (size_t alignment : {64, 256, 4096, 65536, 1 << 21}) {
        for (size_t size : {1, 100, 5000, 70000, 300000}) {
            auto *p = static_cast<unsigned char *>(carve_aligned_alloc(alignment, size));
            ASSERT_NE(p, nullptr);
            const size_t u = carve_malloc_usable_size(p);
            ASSERT_GE(u, size);
            memset(p, 0xa5, u);
            auto *q = static_cast<unsigned char *>(carve_malloc(size));
            ASSERT_NE(q, nullptr);
            memset(q, 0x5a, size);
            for (size_t i = 0; i < u; i++)
                if (p[i] != 0xa5) {
                    ADD_FAILURE() << "aligned block changed at " << i;
                    break;
                }
            carve_free(q);
            carve_free(p);
        }
    }
}

// A request for 0 bytes still gets a block of its own, as malloc(0) does:
// at least one usable, writable byte, inside the block's own mapping. With
// an alignment of 4 MiB or more, carve once put the pointer at its
// mapping's end, in the chunk-map slot of whatever came next (found by
// test/fuzz/fuzz_api: a small chunk there lost its slot on the block's
// free, and its blocks were then "not allocated by carve").
TEST(CarveAlign, ZeroByteAlignedBlocksOwnAByteInsideTheirMapping) {
    const Api apis[] = {Api::kAlignedAlloc, Api::kPosixMemalign, Api::kMemalign};
    // debug mode answers the requested size, here 0
    const size_t least = carve_test::debug_mode() ? 0 : 1;
    for (Api api : apis) {
        for (unsigned shift = 3; shift <= 24; shift++) {
            const size_t alignment = size_t{1} << shift;
            auto *p = static_cast<unsigned char *>(aligned(api, alignment, 0));
            ASSERT_NE(p, nullptr) << api_name(api) << " alignment " << alignment;
            EXPECT_TRUE(is_aligned(p, alignment));
            const size_t u = carve_malloc_usable_size(p);
            EXPECT_GE(u, least) << api_name(api) << " alignment " << alignment;
            if (u > 0)
                memset(p, 0x5a, u);
            carve_free(p);
        }
    }
}

}  // namespace
