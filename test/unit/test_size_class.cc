// test_size_class.cc: the size classes from the inside (src/size_class.c
// and cv_size_class in internal.h).
//
// cv_size_class maps a request to a class by a table up to 512 bytes and
// by the highest bit above; cv_class_size holds each class's block size.
// The two are written separately, so these tests hold them against each
// other for every size up to SMALL_MAX: each size gets the smallest class
// that fits it. Then what the rest of carve relies on: 16-byte alignment
// from 16 bytes up, the class spacing, each page holding at least one
// block, and the division-free "is this offset a block start" constants.
// (test/test_size_class.cc checks what a program sees through
// carve_malloc_usable_size.)

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>

#include "probe.h"
#include "unit.h"

namespace {

constexpr unsigned kClasses = PROBE_CLASS_COUNT;

TEST(SizeClass, SizesRiseStrictlyFromEightToSmallMax) {
    EXPECT_EQ(cv_class_size[0], 8u);
    EXPECT_EQ(cv_class_size[kClasses - 1], PROBE_SMALL_MAX);
    for (unsigned c = 1; c < kClasses; c++)
        EXPECT_LT(cv_class_size[c - 1], cv_class_size[c]) << "class " << c;
}

TEST(SizeClass, EverySizeGetsTheSmallestClassThatFitsIt) {
    unsigned prev = 0;
    for (size_t size = 1; size <= PROBE_SMALL_MAX; size++) {
        const unsigned c = probe_size_class(size);
        ASSERT_LT(c, kClasses) << "size " << size;
        ASSERT_GE(cv_class_size[c], size) << "size " << size << " in class " << c << " ("
                                          << cv_class_size[c] << " bytes)";
        ASSERT_TRUE(c == 0 || cv_class_size[c - 1] < size)
            << "size " << size << " in class " << c << ", but class " << c - 1 << " ("
            << cv_class_size[c - 1] << " bytes) fits it";
        ASSERT_GE(c, prev) << "size " << size << " got a smaller class than size " << size - 1;
        prev = c;
    }
}

TEST(SizeClass, ZeroBytesGetTheSmallestClass) {
    EXPECT_EQ(probe_size_class(0), 0u);
}

TEST(SizeClass, EveryClassIsItsOwnSizesClass) {
    for (unsigned c = 0; c < kClasses; c++) {
        EXPECT_EQ(probe_size_class(cv_class_size[c]), c);
        if (c + 1 < kClasses) {
            EXPECT_EQ(probe_size_class(cv_class_size[c] + 1), c + 1);
        }
    }
}

TEST(SizeClass, FromSixteenBytesUpEveryClassIsAMultipleOfSixteen) {
    for (unsigned c = 0; c < kClasses; c++) {
        if (cv_class_size[c] >= PROBE_ALIGN_MIN) {
            EXPECT_EQ(cv_class_size[c] % PROBE_ALIGN_MIN, 0u) << "class " << c << ": "
                                                              << cv_class_size[c];
        }
    }
}

TEST(SizeClass, StepsOfSixteenToTwoFiftySixThirtyTwoToFiveTwelveThenFourPerDoubling) {
    unsigned c = 1;
    for (; cv_class_size[c] < 256; c++)
        EXPECT_EQ(cv_class_size[c + 1] - cv_class_size[c], 16u) << "class " << c;
    for (; cv_class_size[c] < 512; c++)
        EXPECT_EQ(cv_class_size[c + 1] - cv_class_size[c], 32u) << "class " << c;
    for (; c + 4 < kClasses; c++)
        EXPECT_EQ(cv_class_size[c + 4], 2 * cv_class_size[c]) << "class " << c;
}

// Waste is bounded by the spacing: at most a quarter above 512 bytes, an
// eighth (or 15 bytes) below.
TEST(SizeClass, WasteStaysWithinTheSpacing) {
    for (size_t size = 1; size <= PROBE_SMALL_MAX; size++) {
        const size_t block = cv_class_size[probe_size_class(size)];
        const size_t waste = block - size;
        if (size > 512) {
            ASSERT_LE(waste * 4, size) << "size " << size << " in a block of " << block;
        } else {
            ASSERT_TRUE(waste <= 15 || waste * 8 <= size)
                << "size " << size << " in a block of " << block;
        }
    }
}

TEST(SizeClass, EveryPageHoldsAtLeastOneBlockAndBigClassesExactlyOne) {
    for (unsigned c = 0; c < kClasses; c++) {
        const size_t page = cv_class_slices[c] * PROBE_SLICE_SIZE;
        ASSERT_GE(cv_class_slices[c], 1u) << "class " << c;
        EXPECT_GE(page / cv_class_size[c], 1u) << "class " << c;
        if (cv_class_size[c] > PROBE_SLICE_SIZE) {
            EXPECT_EQ(page / cv_class_size[c], 1u)
                << "class " << c << " (" << cv_class_size[c] << " bytes): " << page / cv_class_size[c]
                << " blocks a page";
        } else {
            EXPECT_EQ(cv_class_slices[c], 1u) << "class " << c << " fits one slice";
        }
    }
}

// cv_class_magic[c]: an offset n is a multiple of the class size d iff
// n * magic <= magic - 1 (mod 2^64), for every byte offset inside a page
// (cv_page_is_block checks pointers that a program passes to free).
TEST(SizeClass, MagicNumbersTellBlockStartsForEveryOffsetInAPage) {
    for (unsigned c = 0; c < kClasses; c++) {
        const uint64_t d = cv_class_size[c], magic = cv_class_magic[c];
        const uint64_t page = cv_class_slices[c] * PROBE_SLICE_SIZE;
        for (uint64_t n = 0; n <= page; n++) {
            const bool start = n * magic <= magic - 1;
            ASSERT_EQ(start, n % d == 0) << "class " << c << " (" << d << "), offset " << n;
        }
    }
}

// What a sized free accepts (free_sized, sized delete): the size that
// picks the class, or one realloc shrank the block to in place (half the
// class or more); with an alignment, also the first class from the
// request's up that is aligned enough (what aligned_alloc hands out).
TEST(SizeClass, SizedFreesAcceptWhatAnAllocationOfTheBlockCouldHaveAskedFor) {
    for (unsigned c = 0; c < kClasses; c++) {
        const size_t s = cv_class_size[c];
        for (size_t size = 0; size <= s + 64; size += (s > 4096 ? 61 : 1)) {
            const bool want = size <= s && (probe_size_class(size) == c || size >= s / 2);
            ASSERT_EQ(cv_class_may_serve(c, size, 0), want) << "class " << s << ", size " << size;
        }
    }
    const unsigned c4096 = probe_size_class(4096), c64 = probe_size_class(64);
    EXPECT_FALSE(cv_class_may_serve(c4096, 64, 0)) << "malloc(64) never gives a 4 KiB block";
    EXPECT_TRUE(cv_class_may_serve(c4096, 64, 4096)) << "aligned_alloc(4096, 64) does";
    EXPECT_FALSE(cv_class_may_serve(c4096, 64, 128)) << "aligned_alloc(128, 64) gives 128 bytes";
    EXPECT_FALSE(cv_class_may_serve(c64, 100, 0));
    EXPECT_TRUE(cv_class_may_serve(probe_size_class(16), 1, 16)) << "memalign(16, 1)";
}

}  // namespace

