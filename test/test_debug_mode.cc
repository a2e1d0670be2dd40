// test_debug_mode.cc: debug mode's own workings: debug=page's limits (it
// falls back to canaries before the map limit, keeps two kernel mappings a
// block, bounds what it holds back in address space), checks switched on at
// run time, a raised SIGSEGV; the cheap checks of release builds
// (debug=none); and the malloc family's behaviour kept under every debug
// mode. Each test runs inside a death-test child (debug_util.h).

#include <carve.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "util.h"
#include "debug_util.h"

namespace {

using carve_test::enable;
using carve_test::flip;
using carve_test::kDefault;
using carve_test::let_segv_through;
using carve_test::line;
using carve_test::opaque;
using carve_test::opaque_ptr;

class CarveDebugMode : public carve_test::ThreadsafeDeathTest {};

// ---- debug=page's limits, checks switched on later ----------------------------

// debug=page gives every block two of vm.max_map_count's mappings. At the
// limit itself, the fallback's own chunk could not be mapped and malloc
// failed: it falls back at half of them, and the program can still map.
TEST_F(CarveDebugMode, PageModeFallsBackToCanariesBeforeTheMapLimit) {
    size_t max_maps = 0;
    if (FILE *f = fopen("/proc/sys/vm/max_map_count", "r")) {
        if (fscanf(f, "%zu", &max_maps) != 1)
            max_maps = 0;
        fclose(f);
    }
    if (max_maps == 0 || max_maps > 262144)
        GTEST_SKIP() << "vm.max_map_count is " << max_maps << ": too many blocks to reach half";
    if (carve_test::kSanitized)
        GTEST_SKIP() << "the sanitizer's runtime maps shadow memory of its own per mapping";
    EXPECT_EXIT(
        {
            enable("debug=page");
            const size_t n = max_maps / 2 + 2000;
            std::vector<void *> blocks;
            for (size_t i = 0; i < n; i++) {
                void *p = carve_malloc(opaque(100));
                CHILD_CHECK(p != nullptr);
                blocks.push_back(p);
            }
            std::vector<void *> own;
            for (int i = 0; i < 1000; i++) {
                void *m = mmap(nullptr, 4096, i % 2 ? PROT_READ : PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                CHILD_CHECK(m != MAP_FAILED);
                own.push_back(m);
            }
            for (void *p : blocks)
                carve_free(p);
            _exit(0);
        },
        ::testing::ExitedWithCode(0),
        "carve: debug=page: no more mappings for small blocks \\([0-9]+ in use, at most "
        "[0-9]+: 2 each, half of vm.max_map_count\\)");
}

// The kernel mappings a block in its own mapping takes: 2 (block and
// guard) while live, and still 2 once freed or shrunk in place (the freed
// part merges with the guard), which is what debug=page's budget assumes.
size_t count_maps() {
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == nullptr)
        return 0;
    size_t n = 0;
    for (int c; (c = fgetc(f)) != EOF;)
        n += c == '\n';
    fclose(f);
    return n;
}

TEST_F(CarveDebugMode, FreedAndShrunkMappedBlocksKeepTwoKernelMappingsEach) {
    if (carve_test::kSanitized)
        GTEST_SKIP() << "the sanitizer's runtime adds mappings of its own per mapping";
    EXPECT_EXIT(
        {
            enable("debug=guards+canary+quarantine");
            constexpr int kBlocks = 200;
            std::vector<void *> v;
            const size_t before = count_maps();
            for (int i = 0; i < kBlocks; i++)
                v.push_back(carve_malloc(opaque(300000)));
            const size_t live = count_maps();
            for (void *&p : v) {
                p = carve_realloc(p, opaque(160000)); // shrinks in place
                CHILD_CHECK(p != nullptr);
            }
            const size_t shrunk = count_maps();
            for (void *p : v)
                carve_free(p);
            const size_t freed = count_maps();
            fprintf(stderr, "mappings: %zu before, %zu live, %zu shrunk, %zu freed\n", before,
                    live, shrunk, freed);
            CHILD_CHECK(live <= before + 2 * kBlocks + 16);
            CHILD_CHECK(shrunk <= before + 2 * kBlocks + 16);
            CHILD_CHECK(freed <= before + 2 * kBlocks + 16);
            _exit(0);
        },
        ::testing::ExitedWithCode(0), "");
}

// Freed mappings held back under debug=page are bounded in address space
// too: a program under RLIMIT_AS that frees 1 GiB blocks in a loop must not
// run out of it (with 2048 mappings held, it failed at the 8th).
TEST_F(CarveDebugMode, HeldBackMappingsAreBoundedInAddressSpace) {
    if (carve_test::kSanitized)
        GTEST_SKIP() << "the sanitizer's runtime needs more address space than the limit leaves";
    EXPECT_EXIT(
        {
            enable("debug=page");
            FILE *f = fopen("/proc/self/statm", "r");
            unsigned long pages = 0;
            CHILD_CHECK(f != nullptr && fscanf(f, "%lu", &pages) == 1);
            fclose(f);
            struct rlimit rl;
            rl.rlim_cur = rl.rlim_max =
                pages * static_cast<size_t>(sysconf(_SC_PAGESIZE)) + (size_t{4} << 30);
            CHILD_CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
            for (int i = 0; i < 20; i++) {
                void *p = carve_malloc(opaque(size_t{1} << 30));
                CHILD_CHECK(p != nullptr);
                carve_free(p);
            }
            _exit(0);
        },
        ::testing::ExitedWithCode(0), "");
}

// Checks switched on at run time apply to blocks made from then on: a
// block mapped before canaries were on has none, and its free must not
// report one broken.
TEST_F(CarveDebugMode, CanariesSwitchedOnLaterAreNotCheckedOnOlderMappedBlocks) {
    for (size_t size : {size_t{48}, size_t{300000}}) {
        EXPECT_EXIT(
            {
                enable("debug=page");
                void *p = carve_malloc(opaque(size));
                CHILD_CHECK(p != nullptr);
                CHILD_CHECK(carve_option_set("debug=page+canary") == 0);
                carve_free(p);
                _exit(0);
            },
            ::testing::ExitedWithCode(0), "")
            << "size " << size;
    }
}

// The guard-page handler is for faults: a SIGSEGV sent with kill or raise
// still kills, as it would without carve.
TEST_F(CarveDebugMode, ARaisedSegvStillKills) {
    let_segv_through();
    EXPECT_EXIT(
        {
            enable("debug=guards");
            carve_free(carve_malloc(opaque(1 << 20)));
            raise(SIGSEGV);
            _exit(0);
        },
        ::testing::KilledBySignal(SIGSEGV), "");
}

// ---- release builds' cheap checks ----------------------------------------------

TEST_F(CarveDebugMode, ReleaseStopsImmediateDoubleFreeOfSmallBlock) {
    EXPECT_DEATH(
        {
            enable("debug=none");
            void *p = carve_malloc(opaque(40));
            carve_free(p);
            carve_free(p);
        },
        line("double free", "class 48 bytes", "free"));
}

TEST_F(CarveDebugMode, ReleaseStopsDoubleFreeOfLargeBlock) {
    EXPECT_DEATH(
        {
            enable("debug=none");
            void *p = carve_malloc(opaque(1 << 20));
            carve_free(p);
            carve_free(p);
        },
        line("invalid free", "not allocated by carve, or already freed", "free"));
}

// glibc stops on a broken chunk header; carve's large blocks end their
// header with a check word right before the block, so a write just before
// one (an underflow of 1 byte or more) stops free, realloc and
// malloc_usable_size instead of letting them unmap what broken fields say.
TEST_F(CarveDebugMode, ReleaseStopsWriteJustBeforeLargeBlock) {
    for (size_t back : {size_t{1}, size_t{8}, size_t{30}}) {
        EXPECT_DEATH(
            {
                enable("debug=none");
                char *p = static_cast<char *>(carve_malloc(opaque(1 << 20)));
                flip(p - back); // a write that changes the byte
                carve_free(p);
            },
            line("heap corruption", "large block header broken: a write before the block\\?",
                 "free"))
            << back << " bytes before";
    }
    EXPECT_DEATH(
        {
            enable("debug=none");
            char *p = static_cast<char *>(carve_malloc(opaque(3 << 20)));
            flip(p - 1);
            p = static_cast<char *>(carve_realloc(p, opaque(5 << 20)));
        },
        line("heap corruption", "large block header broken: a write before the block\\?",
             "realloc"));
}

// The check follows every change of the header: realloc in place, grown
// by mremap, moved; aligned blocks; blocks taken from the cache.
TEST_F(CarveDebugMode, LargeBlockHeaderCheckFollowsReallocAndReuse) {
    EXPECT_EXIT(
        {
            enable("debug=none");
            for (int round = 0; round < 3; round++) {
                char *p = static_cast<char *>(carve_malloc(opaque(300000)));
                void *blocker = carve_malloc(opaque(1 << 20));
                for (size_t n : {size_t{400000}, size_t{4} << 20, size_t{300000},
                                 size_t{9} << 20, size_t{280000}}) {
                    p = static_cast<char *>(carve_realloc(p, opaque(n)));
                    CHILD_CHECK(p != nullptr && carve_malloc_usable_size(p) >= n);
                }
                void *a = carve_aligned_alloc(1 << 16, opaque(1 << 20));
                void *b = carve_aligned_alloc(8 << 20, opaque(1 << 20));
                CHILD_CHECK(a != nullptr && b != nullptr);
                carve_free(a);
                carve_free(b);
                carve_free(blocker);
                carve_free(p);
            }
            _exit(0);
        },
        ::testing::ExitedWithCode(0), "");
}

TEST_F(CarveDebugMode, ReleaseStopsFreeOfStackPointer) {
    EXPECT_DEATH(
        {
            enable("debug=none");
            char on_stack[64];
            carve_free(opaque_ptr(on_stack));
        },
        line("invalid free", "not allocated by carve, or already freed", "free"));
}

TEST_F(CarveDebugMode, ReleaseStopsMisalignedInteriorPointer) {
    EXPECT_DEATH(
        {
            enable("debug=none");
            char *p = static_cast<char *>(carve_malloc(opaque(40)));
            carve_free(opaque_ptr(p + 4));
        },
        line("invalid free",
             "interior pointer: offset 4 of the block at 0x[0-9a-f]+, class 48 bytes",
             "free"));
}

TEST_F(CarveDebugMode, ReleaseStopsInteriorPointerFromAnotherThread) {
    EXPECT_DEATH(
        {
            enable("debug=none");
            char *p = static_cast<char *>(carve_malloc(opaque(64)));
            std::thread t([p] { carve_free(opaque_ptr(p + 16)); });
            t.join();
        },
        "carve: invalid free of 0x[0-9a-f]+ \\(.*\\) in free\\(\\)");
}

// ---- debug mode keeps the malloc family's behaviour -------------------------------
// Checked in a child that must exit 0.

void exercise_family(bool junk, int many_count) {
    // usable size is what was asked for; junk on malloc, zeros on calloc
    for (size_t n : {size_t{0}, size_t{1}, size_t{24}, size_t{100}, size_t{5000}, size_t{300000}}) {
        unsigned char *p = static_cast<unsigned char *>(carve_malloc(opaque(n)));
        CHILD_CHECK(p != nullptr);
        CHILD_CHECK(carve_malloc_usable_size(p) == n);
        CHILD_CHECK(reinterpret_cast<uintptr_t>(p) % (n <= 8 ? 8 : 16) == 0);
        for (size_t i = 0; junk && i < n; i++)
            CHILD_CHECK(p[i] == 0xA5);
        memset(p, 0x3c, n);
        carve_free(p);
        unsigned char *z = static_cast<unsigned char *>(carve_calloc(opaque(n), 1));
        CHILD_CHECK(z != nullptr);
        for (size_t i = 0; i < n; i++)
            CHILD_CHECK(z[i] == 0);
        carve_free_sized(z, n);
    }
    // realloc keeps the contents, growing and shrinking, small and large
    size_t have = 10;
    unsigned char *p = static_cast<unsigned char *>(carve_malloc(have));
    for (size_t i = 0; i < have; i++)
        p[i] = static_cast<unsigned char>(i * 7);
    for (size_t n : {size_t{100}, size_t{70}, size_t{5000}, size_t{400000}, size_t{300000},
                     size_t{3000000}, size_t{50}, size_t{20}}) {
        p = static_cast<unsigned char *>(carve_realloc(p, opaque(n)));
        CHILD_CHECK(p != nullptr);
        CHILD_CHECK(carve_malloc_usable_size(p) == n);
        size_t keep = n < have ? n : have;
        for (size_t i = 0; i < keep; i++)
            CHILD_CHECK(p[i] == static_cast<unsigned char>(i * 7));
        for (size_t i = 0; i < n; i++)
            p[i] = static_cast<unsigned char>(i * 7);
        have = n;
    }
    CHILD_CHECK(carve_realloc(p, 0) == nullptr);
    // alignment
    for (size_t align : {size_t{8}, size_t{16}, size_t{64}, size_t{4096}, size_t{65536},
                         size_t{1} << 20, size_t{8} << 20}) {
        for (size_t n : {size_t{1}, size_t{100}, size_t{70000}, size_t{1} << 20}) {
            void *q = carve_aligned_alloc(align, opaque(n));
            CHILD_CHECK(q != nullptr);
            CHILD_CHECK(reinterpret_cast<uintptr_t>(q) % align == 0);
            CHILD_CHECK(carve_malloc_usable_size(q) >= n);
            memset(q, 1, n);
            carve_free(q);
            void *m = nullptr;
            CHILD_CHECK(carve_posix_memalign(&m, align, opaque(n)) == 0);
            CHILD_CHECK(reinterpret_cast<uintptr_t>(m) % align == 0);
            memset(m, 2, n);
            carve_free(m);
        }
    }
    void *v = carve_valloc(opaque(100));
    CHILD_CHECK(reinterpret_cast<uintptr_t>(v) % 4096 == 0);
    carve_free(v);
    // failures are still failures
    errno = 0;
    CHILD_CHECK(carve_malloc(opaque(SIZE_MAX)) == nullptr && errno == ENOMEM);
    // blocks handed between threads
    std::vector<void *> blocks(2000);
    std::thread producer([&] {
        for (size_t i = 0; i < blocks.size(); i++) {
            blocks[i] = carve_malloc(opaque(16 + i % 300));
            memset(blocks[i], 9, 16 + i % 300);
        }
    });
    producer.join();
    std::thread consumer([&] {
        for (void *b : blocks)
            carve_free(b);
    });
    consumer.join();
    // many blocks, more than the quarantine holds
    std::vector<void *> many;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < many_count; i++)
            many.push_back(carve_malloc(opaque(16 + (i % 64) * 16)));
        for (void *b : many)
            carve_free(b);
        many.clear();
    }
}

TEST_F(CarveDebugMode, DebugModeKeepsMallocBehaviour) {
    for (const char *options : {kDefault, "debug=all", "debug=canary", "debug=junk+quarantine",
                                "debug=guards+quarantine,quarantine=64k"}) {
        EXPECT_EXIT(
            {
                enable(options);
                // debug=all gives each block a mapping: fewer blocks
                exercise_family(strstr(options, "junk") || strstr(options, "all"),
                                static_cast<int>(carve_test::scaled(
                                    strstr(options, "all") ? 1000 : 20000, 100)));
                _exit(0);
            },
            ::testing::ExitedWithCode(0), "")
            << options;
    }
}

}  // namespace
