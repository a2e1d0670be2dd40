// test_api.cc: every public carve_* entry point, one behaviour per test.
//
// The test process keeps the C library's malloc for itself (gtest, the
// standard library); only what is asked of carve_* here is carve's, so a
// carve pointer must never reach free() and the other way round.

#include <carve.h>

#include <malloc.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

namespace {

size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

bool is_aligned(const void *p, size_t alignment) {
    return (reinterpret_cast<uintptr_t>(p) & (alignment - 1)) == 0;
}

// Sizes passed through a volatile so that the compiler neither folds the
// call nor warns about an impossible request.
size_t opaque(size_t n) {
    volatile size_t v = n;
    return v;
}

// A position-dependent pattern (each 8-byte word differs), so that a block
// copied to a shifted place or copied in part is caught. Byte i of a block
// is byte i % 8 of pattern_word(i / 8, seed).
uint64_t pattern_word(size_t i, unsigned seed) {
    uint64_t x = (uint64_t{seed} << 32) ^ (i * 0x9E3779B97F4A7C15ull);
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    return x ^ (x >> 32);
}

void fill(void *p, size_t n, unsigned seed) {
    unsigned char *b = static_cast<unsigned char *>(p);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = pattern_word(i / 8, seed);
        memcpy(b + i, &w, 8);
    }
    uint64_t w = pattern_word(i / 8, seed);
    memcpy(b + i, &w, n - i);
}

// Index of the first byte that differs from the pattern, or n.
size_t first_mismatch(const void *p, size_t n, unsigned seed) {
    const unsigned char *b = static_cast<const unsigned char *>(p);
    for (size_t i = 0; i < n; i += 8) {
        const uint64_t w = pattern_word(i / 8, seed);
        unsigned char want[8];
        memcpy(want, &w, 8);
        const size_t len = n - i < 8 ? n - i : 8;
        if (memcmp(b + i, want, len) != 0)
            for (size_t k = 0; k < len; k++)
                if (b[i + k] != want[k])
                    return i + k;
    }
    return n;
}

// Index of the first non-zero byte, or n.
size_t first_nonzero(const void *p, size_t n) {
    const uint8_t *b = static_cast<const uint8_t *>(p);
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return i;
    return n;
}

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// Sizes from tiny to large (carve's large blocks start above 256 KiB).
const std::vector<size_t> &assorted_sizes() {
    static const std::vector<size_t> sizes = {
        1,     2,     7,      8,      9,      15,     16,     17,      24,
        31,    32,    33,     48,     64,     100,    127,    128,     129,
        255,   256,   257,    500,    1000,   1024,   1025,   4095,    4096,
        4097,  5000,  12345,  32768,  40000,  65536,  65537,  100000,  131072,
        200000, 262143, 262144, 262145, 300000, 1 << 20, (1 << 20) + 1,
        (4 << 20) + 12345, 16 << 20};
    return sizes;
}

constexpr int kErrnoSentinel = 4242;

// ---- malloc -------------------------------------------------------------

TEST(CarveMalloc, BlocksAreSixteenByteAlignedFromSixteenBytesUpAndEightBelow) {
    std::vector<void *> live;
    for (size_t n = 1; n <= 4096; n++) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr) << "size " << n;
        EXPECT_TRUE(is_aligned(p, n >= 16 ? 16 : 8)) << "size " << n << " gave " << p;
        memset(p, 0x5a, n);
        live.push_back(p);
    }
    for (size_t n : assorted_sizes()) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr) << "size " << n;
        EXPECT_TRUE(is_aligned(p, n >= 16 ? 16 : 8)) << "size " << n << " gave " << p;
        memset(p, 0x5a, n);
        live.push_back(p);
    }
    for (void *p : live)
        carve_free(p);
}

TEST(CarveMalloc, ZeroSizeGivesUniqueNonNullFreeablePointers) {
    void *a = carve_malloc(0);
    void *b = carve_malloc(0);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    EXPECT_NE(a, b);
    carve_free(a);
    carve_free(b);

    // Many at once are all distinct, and distinct from a 1-byte block.
    std::set<void *> seen;
    std::vector<void *> live;
    for (int i = 0; i < 1000; i++) {
        void *p = carve_malloc(0);
        ASSERT_NE(p, nullptr);
        EXPECT_TRUE(seen.insert(p).second) << "malloc(0) returned " << p << " twice";
        live.push_back(p);
    }
    void *one = carve_malloc(1);
    ASSERT_NE(one, nullptr);
    EXPECT_EQ(seen.count(one), 0u);
    carve_free(one);
    // A zero-size block can be grown like any other.
    void *grown = carve_realloc(live.back(), 100);
    ASSERT_NE(grown, nullptr);
    memset(grown, 1, 100);
    live.back() = grown;
    for (void *p : live)
        carve_free(p);
}

TEST(CarveMalloc, ImpossibleSizesFailWithEnomem) {
    const size_t huge[] = {
        SIZE_MAX,
        SIZE_MAX - 1,
        SIZE_MAX - 15,
        SIZE_MAX - 4096,
        SIZE_MAX - (64u << 10),
        static_cast<size_t>(PTRDIFF_MAX) + 1,  // just above PTRDIFF_MAX
        static_cast<size_t>(PTRDIFF_MAX) + 4096,
        static_cast<size_t>(PTRDIFF_MAX),      // cannot be mapped either
        size_t{1} << 48,                       // beyond the user address space
    };
    for (size_t n : huge) {
        errno = 0;
        void *p = carve_malloc(opaque(n));
        EXPECT_EQ(p, nullptr) << "malloc(" << n << ")";
        EXPECT_EQ(errno, ENOMEM) << "malloc(" << n << ")";
        if (p)
            carve_free(p);
    }
    // Still works afterwards.
    void *p = carve_malloc(100);
    ASSERT_NE(p, nullptr);
    carve_free(p);
}

// Memory the machine cannot back: large blocks are mapped like glibc's
// (without MAP_NORESERVE), so the kernel's overcommit policy refuses them
// and the program hears ENOMEM at once, rather than being killed when it
// touches the block. (With vm.overcommit_memory=1 the kernel refuses
// nothing, for glibc either.)
TEST(CarveMalloc, MoreThanTheMachineCanBackFailsWithEnomem) {
    FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
    int mode = -1;
    if (f != nullptr) {
        if (fscanf(f, "%d", &mode) != 1)
            mode = -1;
        fclose(f);
    }
    if (mode != 0 && mode != 2)
        GTEST_SKIP() << "vm.overcommit_memory is " << mode << ": the kernel backs any mapping";
    struct sysinfo si;
    ASSERT_EQ(sysinfo(&si), 0);
    const size_t backing = (static_cast<size_t>(si.totalram) + si.totalswap) * si.mem_unit;
    const size_t n = 2 * backing + (size_t{1} << 30);
    errno = 0;
    void *p = carve_malloc(opaque(n));
    EXPECT_EQ(p, nullptr) << "malloc(" << n << ") on a machine with " << backing
                          << " bytes of memory and swap";
    EXPECT_EQ(errno, ENOMEM);
    carve_free(p);
    errno = 0;
    p = carve_calloc(opaque(n / 4096), 4096);
    EXPECT_EQ(p, nullptr) << "calloc";
    EXPECT_EQ(errno, ENOMEM);
    carve_free(p);
    errno = 0;
    p = carve_aligned_alloc(size_t{1} << 22, opaque(n));
    EXPECT_EQ(p, nullptr) << "aligned_alloc";
    EXPECT_EQ(errno, ENOMEM);
    carve_free(p);
    // a block grown past it stays where and what it was
    auto *q = static_cast<unsigned char *>(carve_malloc(1 << 20));
    ASSERT_NE(q, nullptr);
    memset(q, 0x5c, 1 << 20);
    errno = 0;
    void *r = carve_realloc(q, opaque(n));
    EXPECT_EQ(r, nullptr) << "realloc";
    EXPECT_EQ(errno, ENOMEM);
    if (r != nullptr)
        q = static_cast<unsigned char *>(r);
    EXPECT_EQ(q[(1 << 20) - 1], 0x5c);
    carve_free(q);
}

// Short of address space (RLIMIT_AS), carve reserves smaller and smaller
// ranges until one fits: a malloc that succeeds that way leaves errno alone
// (it was ENOMEM from the refused tries).
int mallocs_short_of_address_space_leave_errno_alone() {
    struct rlimit rl;
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f == nullptr || fscanf(f, "%lu", &pages) != 1)
        return 77;
    fclose(f);
    const size_t vm = pages * static_cast<size_t>(sysconf(_SC_PAGESIZE));
    rl.rlim_cur = rl.rlim_max = vm + (size_t{100} << 20);
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        return 77;
    for (size_t total = 0; total < (size_t{300} << 20); total += 8000) {
        errno = 0;
        void *p = carve_malloc(8000);
        if (p == nullptr)
            return errno == ENOMEM ? 0 : 3;  // at the limit: fine, if it says so
        if (errno != 0)
            return 2;
        memset(p, 1, 8000);
    }
    return 0;
}

TEST(CarveMalloc, ASuccessfulMallocShortOfAddressSpaceLeavesErrnoAlone) {
    if (carve_test::kSanitized)
        GTEST_SKIP() << "the sanitizer's runtime needs more address space than the limit leaves";
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT_NE(pid, -1);
    if (pid == 0)
        _exit(mallocs_short_of_address_space_leave_errno_alone());
    const int status = carve_test::wait_child(pid);
    if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 77)
        GTEST_SKIP() << "cannot set RLIMIT_AS here";
    EXPECT_TRUE(carve_test::child_ok(status))
        << carve_test::child_outcome(status) << " (2: errno changed by a malloc that succeeded)";
}

// ---- calloc -------------------------------------------------------------

TEST(CarveCalloc, ReturnsZeroedMemory) {
    for (size_t n : assorted_sizes()) {
        void *p = carve_calloc(1, n);
        ASSERT_NE(p, nullptr) << n;
        EXPECT_EQ(first_nonzero(p, n), n) << "calloc(1, " << n << ")";
        carve_free(p);
        p = carve_calloc(n, 1);
        ASSERT_NE(p, nullptr) << n;
        EXPECT_EQ(first_nonzero(p, n), n) << "calloc(" << n << ", 1)";
        carve_free(p);
    }
}

TEST(CarveCalloc, ZeroCountOrZeroSizeGivesFreeablePointer) {
    void *a = carve_calloc(0, 16);
    void *b = carve_calloc(16, 0);
    void *c = carve_calloc(0, 0);
    EXPECT_NE(a, nullptr);
    EXPECT_NE(b, nullptr);
    EXPECT_NE(c, nullptr);
    if (a && b) {
        EXPECT_NE(a, b);
    }
    carve_free(a);
    carve_free(b);
    carve_free(c);
}

// Blocks that were written and freed come back zeroed from calloc.
void calloc_reuses_dirty_blocks(size_t size, size_t count) {
    std::vector<void *> blocks;
    for (size_t i = 0; i < count; i++) {
        void *p = carve_malloc(size);
        ASSERT_NE(p, nullptr);
        memset(p, 0xff, carve_malloc_usable_size(p));
        blocks.push_back(p);
    }
    for (void *p : blocks)
        carve_free(p);
    blocks.clear();
    for (size_t i = 0; i < count; i++) {
        // Alternate the split between nmemb and size.
        void *p = (i & 1) ? carve_calloc(1, size) : carve_calloc(size, 1);
        ASSERT_NE(p, nullptr);
        size_t bad = first_nonzero(p, size);
        EXPECT_EQ(bad, size) << "calloc of " << size << " bytes (block " << i
                             << ") has a non-zero byte at offset " << bad;
        if (bad != size) {
            carve_free(p);
            break;
        }
        memset(p, 0xff, size);  // dirty again for the next one
        blocks.push_back(p);
    }
    for (void *p : blocks)
        carve_free(p);
    // Once more after they were freed dirty a second time, as an array.
    if (size % 8 == 0) {
        void *p = carve_calloc(size / 8, 8);
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(first_nonzero(p, size), size) << "calloc(" << size / 8 << ", 8)";
        carve_free(p);
    }
}

TEST(CarveCalloc, ZeroesReusedDirtySmallBlocks) {
    for (size_t size : {1, 8, 16, 24, 48, 100, 512, 1000, 4096, 5000})
        calloc_reuses_dirty_blocks(size, 2000);
}

TEST(CarveCalloc, ZeroesReusedDirtyMediumBlocks) {
    for (size_t size : {40000, 100000, 262144})
        calloc_reuses_dirty_blocks(size, 100);
}

TEST(CarveCalloc, ZeroesReusedDirtyLargeBlocks) {
    for (size_t size : {1 << 20, (1 << 20) + 100, 4 << 20})
        calloc_reuses_dirty_blocks(size, 8);
}

TEST(CarveCalloc, OverflowingProductFailsWithEnomem) {
    struct {
        size_t nmemb, size;
    } cases[] = {
        {SIZE_MAX, 2},
        {2, SIZE_MAX},
        {SIZE_MAX, SIZE_MAX},
        {size_t{1} << 32, size_t{1} << 32},            // wraps to 0
        {(size_t{1} << 32) + 1, size_t{1} << 32},      // wraps to 2^32
        {SIZE_MAX / 16 + 1, 16},                       // wraps to 0
        {SIZE_MAX / 3 + 1, 3},                         // wraps to a small number
        {size_t{1} << 62, 2},                          // 2^63 > PTRDIFF_MAX
    };
    for (const auto &c : cases) {
        errno = 0;
        void *p = carve_calloc(opaque(c.nmemb), opaque(c.size));
        EXPECT_EQ(p, nullptr) << "calloc(" << c.nmemb << ", " << c.size << ")";
        EXPECT_EQ(errno, ENOMEM) << "calloc(" << c.nmemb << ", " << c.size << ")";
        if (p)
            carve_free(p);
    }
}

// ---- realloc ------------------------------------------------------------

TEST(CarveRealloc, NullPointerActsLikeMalloc) {
    for (size_t n : assorted_sizes()) {
        void *p = carve_realloc(nullptr, n);
        ASSERT_NE(p, nullptr) << n;
        EXPECT_TRUE(is_aligned(p, n >= 16 ? 16 : 8)) << n;
        EXPECT_GE(carve_malloc_usable_size(p), n);
        memset(p, 0x33, n);
        carve_free(p);
    }
}

TEST(CarveRealloc, ZeroSizeFreesAndReturnsNull) {
    for (size_t n : {1, 100, 5000, 40000, 300000, 1 << 20}) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr);
        memset(p, 1, n);
        EXPECT_EQ(carve_realloc(p, 0), nullptr) << "realloc(malloc(" << n << "), 0)";
    }
}

TEST(CarveRealloc, ZeroSizeReallyReleasesTheBlock) {
    // If realloc(p, 0) leaked, this loop would hold 200 MB.
    struct carve_mallinfo2 before = carve_mallinfo2();
    for (int i = 0; i < 200000; i++) {
        void *p = carve_malloc(1000);
        ASSERT_NE(p, nullptr);
        static_cast<char *>(p)[0] = 1;
        ASSERT_EQ(carve_realloc(p, 0), nullptr);
    }
    struct carve_mallinfo2 after = carve_mallinfo2();
    size_t grew = (after.arena + after.hblkhd) - std::min(after.arena + after.hblkhd,
                                                           before.arena + before.hblkhd);
    EXPECT_LT(grew, size_t{32} << 20) << "heap grew by " << grew << " bytes";
}

TEST(CarveRealloc, GrowingKeepsContents) {
    void *p = carve_malloc(10);
    ASSERT_NE(p, nullptr);
    fill(p, 10, 1);
    size_t have = 10;
    for (size_t n : {100, 1000, 50000, 400000, 3000000}) {
        p = carve_realloc(p, n);
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(first_mismatch(p, have, 1), have) << "after growing to " << n;
        fill(p, n, 1);
        have = n;
    }
    carve_free(p);
}

TEST(CarveRealloc, ShrinkingToHalfOrMoreStaysInPlaceAndKeepsContents) {
    for (size_t old_size : {32, 100, 1000, 5000, 40000, 200000, 300000, 1 << 20, 8 << 20}) {
        void *probe = carve_malloc(old_size);
        ASSERT_NE(probe, nullptr);
        const size_t usable = carve_malloc_usable_size(probe);
        carve_free(probe);
        for (size_t new_size : {usable - 1, usable * 3 / 4, usable / 2 + 1}) {
            void *p = carve_malloc(old_size);
            ASSERT_NE(p, nullptr);
            fill(p, old_size, 7);
            void *q = carve_realloc(p, new_size);
            ASSERT_NE(q, nullptr);
            EXPECT_EQ(q, p) << "realloc from " << old_size << " (usable " << usable
                            << ") down to " << new_size << " moved the block";
            size_t keep = std::min(old_size, new_size);
            EXPECT_EQ(first_mismatch(q, keep, 7), keep)
                << "shrink " << old_size << " -> " << new_size;
            EXPECT_GE(carve_malloc_usable_size(q), new_size);
            carve_free(q);
        }
    }
}

TEST(CarveRealloc, ImpossibleSizeFailsAndKeepsOriginalBlock) {
    for (size_t n : {100, 40000, 1 << 20}) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr);
        fill(p, n, 3);
        for (size_t huge : {SIZE_MAX, SIZE_MAX - 4096, static_cast<size_t>(PTRDIFF_MAX) + 1,
                            size_t{1} << 48}) {
            errno = 0;
            void *q = carve_realloc(p, opaque(huge));
            EXPECT_EQ(q, nullptr) << "realloc(" << n << "-byte block, " << huge << ")";
            EXPECT_EQ(errno, ENOMEM) << "realloc(" << n << "-byte block, " << huge << ")";
            if (q) {  // should not happen; keep going with what we got
                p = q;
                fill(p, n, 3);
            }
            EXPECT_EQ(first_mismatch(p, n, 3), n) << "original block changed";
        }
        // The original block is still valid: it can be grown and freed.
        void *q = carve_realloc(p, n * 2);
        ASSERT_NE(q, nullptr);
        EXPECT_EQ(first_mismatch(q, n, 3), n);
        carve_free(q);
    }
}

// ---- reallocarray -------------------------------------------------------

TEST(CarveReallocarray, GrowsLikeReallocAndKeepsContents) {
    void *p = carve_reallocarray(nullptr, 10, 10);
    ASSERT_NE(p, nullptr);
    fill(p, 100, 5);
    p = carve_reallocarray(p, 1000, 10);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(first_mismatch(p, 100, 5), 100u);
    EXPECT_GE(carve_malloc_usable_size(p), 10000u);
    memset(p, 0, 10000);
    carve_free(p);
}

TEST(CarveReallocarray, OverflowFailsWithEnomemAndLeavesBlockIntact) {
    for (size_t n : {100, 40000, 1 << 20}) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr);
        fill(p, n, 9);
        struct {
            size_t nmemb, size;
        } cases[] = {
            {SIZE_MAX / 2 + 1, 2},                  // wraps to 0
            {size_t{1} << 32, (size_t{1} << 32) + 1},  // wraps to 2^32
            {SIZE_MAX, SIZE_MAX},
            {3, SIZE_MAX / 3 + 1},
        };
        for (const auto &c : cases) {
            errno = 0;
            void *q = carve_reallocarray(p, opaque(c.nmemb), opaque(c.size));
            EXPECT_EQ(q, nullptr) << "reallocarray(p, " << c.nmemb << ", " << c.size << ")";
            EXPECT_EQ(errno, ENOMEM);
            if (q) {
                p = q;
                fill(p, n, 9);
            }
            EXPECT_EQ(first_mismatch(p, n, 9), n) << "original block changed";
        }
        void *q = carve_realloc(p, n + 1);
        ASSERT_NE(q, nullptr);
        EXPECT_EQ(first_mismatch(q, n, 9), n);
        carve_free(q);
    }
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

// ---- malloc_usable_size ---------------------------------------------------

TEST(CarveMallocUsableSize, IsZeroForNull) { EXPECT_EQ(carve_malloc_usable_size(nullptr), 0u); }

TEST(CarveMallocUsableSize, CoversRequestAndIsWritableWithoutHurtingNeighbours) {
    for (size_t n : assorted_sizes()) {
        const size_t count = n <= 4096 ? 64 : n <= 262144 ? 8 : 2;
        std::vector<void *> blocks;
        std::vector<size_t> usable;
        for (size_t i = 0; i < count; i++) {
            void *p = carve_malloc(n);
            ASSERT_NE(p, nullptr);
            size_t u = carve_malloc_usable_size(p);
            EXPECT_GE(u, n) << "usable size of a " << n << "-byte block";
            fill(p, u, static_cast<unsigned>(i));
            blocks.push_back(p);
            usable.push_back(u);
        }
        for (size_t i = 0; i < count; i++) {
            EXPECT_EQ(first_mismatch(blocks[i], usable[i], static_cast<unsigned>(i)), usable[i])
                << "block " << i << " of size " << n << " was overwritten by a neighbour";
            carve_free(blocks[i]);
        }
    }
}

// ---- free, free_sized, free_aligned_sized --------------------------------

TEST(CarveFree, NullIsANoOp) {
    carve_free(nullptr);
    carve_free_sized(nullptr, 0);
    carve_free_sized(nullptr, 100);
    carve_free_aligned_sized(nullptr, 64, 0);
    SUCCEED();
}

TEST(CarveFreeSized, CorrectSizesReleaseBlocksOfEveryKind) {
    // A long-lived block next to the churn must stay intact.
    void *keeper = carve_malloc(1000);
    ASSERT_NE(keeper, nullptr);
    fill(keeper, 1000, 11);
    for (int round = 0; round < 50; round++) {
        for (size_t n : assorted_sizes()) {
            if (round > 2 && n > 262144)
                continue;  // large blocks: a few rounds are enough
            void *p = carve_malloc(n);
            ASSERT_NE(p, nullptr);
            memset(p, 1, n);
            carve_free_sized(p, n);

            const size_t nmemb = n % 4 == 0 ? 4 : 1;
            p = carve_calloc(nmemb, n / nmemb);
            ASSERT_NE(p, nullptr);
            carve_free_sized(p, n);

            p = carve_malloc(n / 2 + 1);
            ASSERT_NE(p, nullptr);
            p = carve_realloc(p, n);
            ASSERT_NE(p, nullptr);
            memset(p, 2, n);
            carve_free_sized(p, n);

            for (size_t alignment : {16, 64, 4096}) {
                p = carve_aligned_alloc(alignment, n);
                ASSERT_NE(p, nullptr);
                memset(p, 3, n);
                carve_free_aligned_sized(p, alignment, n);
            }
        }
    }
    EXPECT_EQ(first_mismatch(keeper, 1000, 11), 1000u);
    carve_free_sized(keeper, 1000);
}

// ---- malloc_trim ----------------------------------------------------------

TEST(CarveMallocTrim, ReturnsZeroOrOneAndLiveBlocksSurvive) {
    std::vector<std::pair<void *, size_t>> live, dead;
    size_t i = 0;
    for (size_t round = 0; round < 2; round++)
        for (size_t n : assorted_sizes()) {
            for (int k = 0; k < (n <= 4096 ? 200 : 2); k++, i++) {
                void *p = carve_malloc(n);
                ASSERT_NE(p, nullptr);
                fill(p, n, static_cast<unsigned>(i));
                (i % 4 == 0 ? live : dead).push_back({p, i});
            }
        }
    for (auto &b : dead)
        carve_free(b.first);
    dead.clear();

    for (size_t pad : {size_t{0}, size_t{1} << 20, size_t{0}}) {
        int r = carve_malloc_trim(pad);
        EXPECT_TRUE(r == 0 || r == 1) << "malloc_trim(" << pad << ") returned " << r;
    }
    // Contents of live blocks are intact: recompute each block's size.
    i = 0;
    size_t li = 0;
    for (size_t round = 0; round < 2; round++)
        for (size_t n : assorted_sizes())
            for (int k = 0; k < (n <= 4096 ? 200 : 2); k++, i++) {
                if (i % 4 != 0)
                    continue;
                ASSERT_LT(li, live.size());
                auto &b = live[li++];
                ASSERT_EQ(b.second, i);
                EXPECT_EQ(first_mismatch(b.first, n, static_cast<unsigned>(i)), n)
                    << "block of " << n << " bytes changed by malloc_trim";
            }
    // And the heap still works.
    for (size_t n : assorted_sizes()) {
        void *p = carve_malloc(n);
        ASSERT_NE(p, nullptr);
        fill(p, n, 99);
        EXPECT_EQ(first_mismatch(p, n, 99), n);
        carve_free(p);
    }
    for (auto &b : live)
        carve_free(b.first);
    EXPECT_GE(carve_malloc_trim(0), 0);
}

// ---- mallinfo2, mallopt, statistics ----------------------------------------

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

TEST(CarveMallopt, AcceptsEveryParameterAsGlibcDoes) {
    // glibc's mallopt returns 1 for its own parameters and for unknown ones
    // alike (and jemalloc and mimalloc leave mallopt to glibc): a program
    // that checks the result (if (!mallopt(M_ARENA_MAX, 1)) fail) must not
    // fail under carve, whose own tuning has no such knobs to turn.
    for (int param : {M_MXFAST, M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX,
                      M_CHECK_ACTION, M_PERTURB, M_ARENA_TEST, M_ARENA_MAX, 12345, -12345}) {
        errno = 0;
        EXPECT_EQ(carve_mallopt(param, 1), 1) << "mallopt(" << param << ", 1)";
        EXPECT_EQ(errno, 0);
    }
    void *p = carve_malloc(100);
    ASSERT_NE(p, nullptr);
    carve_free(p);
}

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

TEST(CarveOptionSet, AcceptsKnownOptionsAndRejectsOthersWithAMessage) {
    // A value equal to the default, so that later tests see no change.
    EXPECT_EQ(carve_option_set("stats=0"), 0);

    testing::internal::CaptureStderr();
    int unknown = carve_option_set("no_such_option=1");
    int bad_value = carve_option_set("decay_ms=soon");
    // A unit with no number, or an empty debug list, is no value (it was
    // taken as 0: no decay, no large cache; no debug checks).
    int bare_unit = carve_option_set("decay_ms=k");
    int bare_size_unit = carve_option_set("quarantine=M");
    int empty_debug = carve_option_set("debug=");
    std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(unknown, -1);
    EXPECT_EQ(bad_value, -1);
    EXPECT_EQ(bare_unit, -1);
    EXPECT_EQ(bare_size_unit, -1);
    EXPECT_EQ(empty_debug, -1);
    EXPECT_FALSE(err.empty()) << "a rejected option should say why on stderr";

    void *p = carve_malloc(100);
    ASSERT_NE(p, nullptr);
    carve_free(p);
}

// The VmFlags line of the mapping that holds p in /proc/self/smaps ("" if
// none): "hg" in it means MADV_HUGEPAGE.
std::string vm_flags_of(const void *p) {
    std::ifstream smaps("/proc/self/smaps");
    std::string line;
    bool inside = false;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    while (std::getline(smaps, line)) {
        unsigned long lo, hi;
        char dash;
        std::istringstream head(line);
        if (line.find(':') == std::string::npos || line.find(':') > line.find(' ')) {
            if (head >> std::hex >> lo >> dash >> hi && dash == '-')
                inside = lo <= a && a < hi;
            continue;
        }
        if (inside && line.rfind("VmFlags:", 0) == 0)
            return line;
    }
    return "";
}

bool has_flag(const std::string &flags, const char *flag) {
    std::istringstream words(flags);
    std::string w;
    while (words >> w)
        if (w == flag)
            return true;
    return false;
}

// Puts thp and decay_ms back to their defaults when a test ends, even
// through a failed ASSERT.
struct DefaultThpAndDecay {
    ~DefaultThpAndDecay() {
        EXPECT_EQ(carve_option_set("thp=0"), 0);
        EXPECT_EQ(carve_option_set("decay_ms=50"), 0);
        carve_malloc_trim(0);
    }
};

TEST(CarveOptionSet, ThpDecidesWhetherBigBlocksAskForHugePages) {
    CARVE_SKIP_IN_DEBUG_MODE();  // debug mode maps blocks its own way
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) != 0)
        GTEST_SKIP() << "no transparent huge pages in this kernel";
    constexpr size_t kSize = size_t(8) << 20;
    DefaultThpAndDecay restore;
    // No large cache, so that each block is mapped afresh.
    ASSERT_EQ(carve_option_set("decay_ms=0"), 0);
    carve_malloc_trim(0);

    ASSERT_EQ(carve_option_set("thp=1"), 0);
    void *on = carve_malloc(kSize);
    ASSERT_NE(on, nullptr);
    const std::string with = vm_flags_of(on);
    carve_free(on);

    ASSERT_EQ(carve_option_set("thp=0"), 0);
    void *off = carve_malloc(kSize);
    ASSERT_NE(off, nullptr);
    memset(off, 1, kSize);
    const std::string without = vm_flags_of(off);
    carve_free(off);

    ASSERT_FALSE(with.empty()) << "no mapping of the block in /proc/self/smaps";
    EXPECT_TRUE(has_flag(with, "hg")) << "thp=1: " << with;
    EXPECT_FALSE(has_flag(without, "hg")) << "thp=0: " << without;
}

// Found in review: a block that reused a cached mapping kept the advice the
// mapping was made with, so thp=0 set at run time did not hold for it.
TEST(CarveOptionSet, ThpSetAtRunTimeHoldsForBlocksFromTheLargeCache) {
    CARVE_SKIP_IN_DEBUG_MODE();
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) != 0)
        GTEST_SKIP() << "no transparent huge pages in this kernel";
    constexpr size_t kSize = size_t(8) << 20;
    DefaultThpAndDecay restore;
    carve_malloc_trim(0);  // an empty large cache

    ASSERT_EQ(carve_option_set("thp=1"), 0);
    void *on = carve_malloc(kSize);
    ASSERT_NE(on, nullptr);
    const std::string with = vm_flags_of(on);
    carve_free(on);  // waits in the large cache (decay_ms=50)

    ASSERT_EQ(carve_option_set("thp=0"), 0);
    void *off = carve_malloc(kSize);
    ASSERT_NE(off, nullptr);
    const std::string without = vm_flags_of(off);
    carve_free(off);

    ASSERT_TRUE(has_flag(with, "hg")) << "thp=1: " << with;
    EXPECT_FALSE(has_flag(without, "hg")) << "thp=0, block after a cached one: " << without;
}

// A THP setting: the word in brackets of this file ("" if unreadable).
std::string thp_setting(const std::string &file) {
    std::ifstream f(file);
    std::string line;
    std::getline(f, line);
    const size_t open = line.find('['), close = line.find(']');
    return open != std::string::npos && close > open ? line.substr(open + 1, close - open - 1) : "";
}

// Does the kernel give anonymous memory pages bigger than 4 KiB unasked?
// THP "always", or a multi-size THP size (hugepages-<N>kB) set to "always",
// or to "inherit" under "always".
bool kernel_gives_big_pages_unasked() {
    const std::string dir = "/sys/kernel/mm/transparent_hugepage/";
    const std::string top = thp_setting(dir + "enabled");
    if (top == "always")
        return true;
    for (unsigned kib = 8; kib <= 2048; kib *= 2) {
        const std::string size = thp_setting(dir + "hugepages-" + std::to_string(kib) + "kB/enabled");
        if (size == "always" || (size == "inherit" && top == "always"))
            return true;
    }
    return false;
}

// Huge pages are off by default (doc/design.md, "Huge pages"): a big table
// written sparsely is resident only where it was written. With thp=1 as
// the default, every 2 MiB written once was resident whole.
TEST(CarveOptionSet, BigBlocksAreResidentOnlyWhereWrittenByDefault) {
    CARVE_SKIP_IN_DEBUG_MODE();
    const char *env = getenv("CARVE_OPTIONS");
    if (env != nullptr && strstr(env, "thp") != nullptr)
        GTEST_SKIP() << "CARVE_OPTIONS sets thp: " << env;
    if (kernel_gives_big_pages_unasked())
        GTEST_SKIP() << "this kernel's THP settings give big pages without MADV_HUGEPAGE";
    constexpr size_t kSize = size_t(64) << 20, kStride = size_t(64) << 10;
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    if (page >= kStride / 4)
        GTEST_SKIP() << "pages of " << page << " bytes: too few in a stride to tell";
    DefaultThpAndDecay restore;
    carve_malloc_trim(0);  // an empty large cache: a fresh mapping

    auto *p = static_cast<unsigned char *>(carve_calloc(1, kSize));
    ASSERT_NE(p, nullptr);
    for (size_t i = 0; i < kSize; i += kStride)
        p[i] = 1;
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
    const size_t pages = (reinterpret_cast<uintptr_t>(p) + kSize - lo + page - 1) / page;
    std::vector<unsigned char> in_core(pages);
    ASSERT_EQ(mincore(reinterpret_cast<void *>(lo), pages * page, in_core.data()), 0) << strerror(errno);
    size_t resident = 0;
    for (unsigned char c : in_core)
        resident += c & 1;
    const std::string flags = vm_flags_of(p);
    carve_free(p);

    EXPECT_FALSE(has_flag(flags, "hg")) << flags;
    // 1,024 pages written; huge pages would make it all 16,384.
    EXPECT_LE(resident, 2 * kSize / kStride) << resident << " of " << pages << " pages resident";
}

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

}  // namespace
