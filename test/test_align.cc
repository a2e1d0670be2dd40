// test_align.cc: every power-of-two alignment from 8 bytes to 1 GiB through
// the three aligned entry points, with ordinary blocks allocated in between.

#include <carve.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "util.h"

namespace {

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

bool is_aligned(const void *p, size_t alignment) {
    return (reinterpret_cast<uintptr_t>(p) & (alignment - 1)) == 0;
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
