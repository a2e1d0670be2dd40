// test_api.cc: the basic entry points, one behaviour per test: malloc and
// calloc (alignment, zero sizes, zeroed memory, impossible sizes and errno),
// malloc_usable_size, free, free_sized and free_aligned_sized, malloc_trim.
// realloc and reallocarray are in test_realloc.cc, the aligned entry points
// in test_align.cc, the statistics in test_stats.cc, the options in
// test_options.cc.
//
// The test process keeps the C library's malloc for itself (gtest, the
// standard library); only what is asked of carve_* here is carve's, so a
// carve pointer must never reach free() and the other way round.

#include <carve.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

namespace {

using carve_test::assorted_sizes;
using carve_test::fill;
using carve_test::first_mismatch;
using carve_test::first_nonzero;
using carve_test::is_aligned;
using carve_test::opaque;

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

}  // namespace
