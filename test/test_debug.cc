// test_debug.cc: debug mode (CARVE_OPTIONS=debug=..., ./configure
// --enable-debug) and the cheap checks of release builds. One death test per
// detection, with the exact line carve must print.
//
// Debug mode is read once, when carve starts, and applies to the whole
// process, so each test switches it on inside a death-test child: the
// "threadsafe" style re-executes the test binary for the child, which then
// starts carve afresh; enable() sets CARVE_OPTIONS and calls carve's test
// hook cv_debug_reinit(), which reads the options again (and drops the
// calling thread's heap, should carve have started already). The parent,
// which runs every other suite, never enters debug mode.

#include <carve.h>

#include <gtest/gtest.h>

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

// carve's test hook (src/debug.c): hidden, reachable in the static link.
extern "C" void cv_debug_reinit(void);

namespace {

// Sizes and offsets through a volatile, so that the compiler neither sees
// the bug (and warns, or drops the access) nor folds the call.
size_t opaque(size_t n) {
    volatile size_t v = n;
    return v;
}

void *opaque_ptr(void *p) {
    void *volatile v = p;
    return v;
}

void poke(void *p, size_t offset, char value) {
    static_cast<volatile char *>(opaque_ptr(p))[opaque(offset)] = value;
}

// Inverts the byte at p: a write that surely changes it (a fixed value
// matches what is there one time in 256).
void flip(void *p) {
    volatile char *c = static_cast<volatile char *>(opaque_ptr(p));
    *c = static_cast<char>(~*c);
}

// The checks of --enable-debug builds (all but page).
const char kDefault[] = "debug=guards+canary+junk+quarantine+free";

void enable(const char *options) {
    setenv("CARVE_OPTIONS", options, 1);
    cv_debug_reinit();
}

// Sanitizer runtimes catch SIGSEGV themselves and exit with a code of their
// own; the guard-page tests want the plain signal. Children inherit this.
void let_segv_through() {
    for (const char *var : {"ASAN_OPTIONS", "TSAN_OPTIONS", "UBSAN_OPTIONS"}) {
        const char *old = getenv(var);
        std::string v = old && *old ? std::string(old) + ":handle_segv=0" : "handle_segv=0";
        setenv(var, v.c_str(), 1);
    }
}

// Inside a child (no gtest assertion works there): report and exit 1.
#define CHILD_CHECK(cond)                                                          \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__);      \
            _exit(1);                                                              \
        }                                                                          \
    } while (0)

class CarveDebug : public ::testing::Test {
  protected:
    void SetUp() override {
#ifdef GTEST_FLAG_SET
        GTEST_FLAG_SET(death_test_style, "threadsafe");
#else
        ::testing::FLAGS_gtest_death_test_style = "threadsafe";
#endif
    }
};

const char kAddr[] = "0x[0-9a-f]+";

std::string line(const std::string &what, const std::string &detail, const std::string &func) {
    return "carve: " + what + " of " + kAddr + " \\(" + detail + "\\) in " + func + "\\(\\)";
}

// ---- guard pages ----------------------------------------------------------

TEST_F(CarveDebug, OneByteOverflowOfLargeBlockFaultsOnGuardPage) {
    let_segv_through();
    for (size_t size : {size_t{1} << 20, size_t{300000}, size_t{4} << 20}) {
        EXPECT_EXIT(
            {
                enable("debug=guards");
                void *p = carve_malloc(opaque(size));
                poke(p, size, 1);
            },
            ::testing::KilledBySignal(SIGSEGV),
            "carve: heap overflow \\(guard page hit\\) of 0x[0-9a-f]+ \\(requested [0-9]+ bytes, own "
            "mapping; 0 bytes past its end\\) at the faulting instruction")
            << "size " << size;
    }
}

TEST_F(CarveDebug, LargeBlockReadPastEndFaults) {
    let_segv_through();
    EXPECT_EXIT(
        {
            enable(kDefault);
            char *p = static_cast<char *>(carve_malloc(opaque(512 << 10)));
            volatile char c = static_cast<volatile char *>(opaque_ptr(p))[opaque(512 << 10)];
            (void)c;
        },
        ::testing::KilledBySignal(SIGSEGV), "");
}

TEST_F(CarveDebug, PageModePutsEverySmallBlockAgainstAGuardPage) {
    let_segv_through();
    for (size_t size : {size_t{8}, size_t{32}, size_t{4096}, size_t{100000}}) {
        EXPECT_EXIT(
            {
                enable("debug=page");
                void *p = carve_malloc(opaque(size));
                poke(p, size, 1);
            },
            ::testing::KilledBySignal(SIGSEGV), "")
            << "size " << size;
    }
}

TEST_F(CarveDebug, PageModeFreedBlockFaultsOnUse) {
    let_segv_through();
    EXPECT_EXIT(
        {
            enable("debug=all");
            void *p = carve_malloc(opaque(64));
            carve_free(p);
            poke(p, 0, 1);
        },
        ::testing::KilledBySignal(SIGSEGV),
        "carve: use after free of 0x[0-9a-f]+ \\(requested 64 bytes, own mapping; offset 0\\)");
}

// debug=guards ends each page of small blocks with a PROT_NONE page. 1024-byte
// blocks fill a 64 KiB page exactly, so with the guard 60 fit and the last
// one ends against it: running 1 byte past that block's class size (over its
// canary and trailer, which debug=guards alone does not check) faults at once.
TEST_F(CarveDebug, OverflowPastLastBlockOfSmallPageFaultsOnGuardPage) {
    let_segv_through();
    EXPECT_EXIT(
        {
            enable("debug=guards");
            const size_t size = 1024 - 16; // class 1024 with debug's 16 bytes
            std::vector<char *> blocks;
            char *last = nullptr;
            for (int i = 0; i < 60; i++) {
                char *p = static_cast<char *>(carve_malloc(opaque(size)));
                CHILD_CHECK(p != nullptr);
                blocks.push_back(p);
                if (last == nullptr || p > last)
                    last = p;
            }
            // the last block ends on a kernel page boundary: the guard's
            CHILD_CHECK((reinterpret_cast<uintptr_t>(last) + 1024) % 4096 == 0);
            poke(last, 1023, 1); // its own last byte (trailer): fine
            poke(last, 1024, 1);
            _exit(0);
        },
        ::testing::KilledBySignal(SIGSEGV),
        "carve: heap overflow \\(guard page hit\\) past the block at 0x[0-9a-f]+ \\(class 1024 "
        "bytes, last of its page\\) at the faulting instruction");
}

// A program's own SIGSEGV handler stays in charge: carve only names guard
// page hits when nobody else listens for SIGSEGV.
TEST_F(CarveDebug, GuardHitLeavesTheProgramsSegvHandlerAlone) {
    let_segv_through();
    EXPECT_EXIT(
        {
            signal(SIGSEGV, [](int) { _exit(3); });
            enable("debug=guards");
            void *p = carve_malloc(opaque(1 << 20));
            poke(p, 1 << 20, 1);
        },
        ::testing::ExitedWithCode(3), "");
}

// Without guards the same page holds 64 blocks, and the guard goes back to
// read-write when the page is retired, so its memory serves again.
TEST_F(CarveDebug, SmallPageGuardIsLiftedWhenThePageIsFreed) {
    EXPECT_EXIT(
        {
            enable("debug=guards");
            std::vector<void *> blocks;
            for (int round = 0; round < 3; round++) {
                for (int i = 0; i < 600; i++)
                    blocks.push_back(carve_malloc(opaque(1000)));
                for (void *p : blocks)
                    carve_free(p);
                blocks.clear();
                carve_malloc_trim(0);
            }
            enable("debug=none");
            // release blocks now use the same slices, guard page included
            for (int i = 0; i < 2000; i++) {
                char *p = static_cast<char *>(carve_malloc(opaque(1024)));
                CHILD_CHECK(p != nullptr);
                memset(p, 1, 1024);
                blocks.push_back(p);
            }
            for (void *p : blocks)
                carve_free(p);
            _exit(0);
        },
        ::testing::ExitedWithCode(0), "");
}

// A size that is not a multiple of the alignment leaves a few bytes before
// the guard page: canary, checked on free.
TEST_F(CarveDebug, OverflowIntoGapBeforeGuardPageBreaksCanary) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(300001));
            poke(p, 300001, 1);
            carve_free(p);
        },
        line("heap overflow \\(canary broken\\)", "requested 300001 bytes, own mapping", "free"));
}

// ---- canaries -------------------------------------------------------------

TEST_F(CarveDebug, OneByteOverflowOfSmallBlockBreaksCanary) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(40));
            poke(p, 40, 0);
            carve_free(p);
        },
        line("heap overflow \\(canary broken\\)", "requested 40 bytes, class [0-9]+ bytes",
             "free"));
}

TEST_F(CarveDebug, CanaryIsCheckedOnRealloc) {
    EXPECT_DEATH(
        {
            enable("debug=canary");
            void *p = carve_malloc(opaque(100));
            poke(p, 107, 'x');
            p = carve_realloc(p, opaque(1000));
        },
        line("heap overflow \\(canary broken\\)", "requested 100 bytes, class [0-9]+ bytes",
             "realloc"));
}

TEST_F(CarveDebug, CanaryFollowsAnInPlaceShrink) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(100));
            void *q = carve_realloc(p, opaque(60));
            if (q != p)
                _exit(3);  // shrinking to more than half stays in place
            poke(q, 60, 0);
            carve_free(q);
        },
        line("heap overflow \\(canary broken\\)", "requested 60 bytes, class [0-9]+ bytes",
             "free"));
}

TEST_F(CarveDebug, CanaryIsCheckedForEverySmallSize) {
    for (size_t size : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{1000},
                        size_t{65536}, size_t{200000}}) {
        EXPECT_DEATH(
            {
                enable("debug=canary");
                void *p = carve_malloc(opaque(size));
                poke(p, size, 0x11);
                carve_free(p);
            },
            "carve: heap overflow \\(canary broken\\) of 0x[0-9a-f]+ \\(requested " +
                std::to_string(size) + " bytes")
            << "size " << size;
    }
}

// ---- double and invalid free ----------------------------------------------

TEST_F(CarveDebug, DoubleFreeOfSmallBlock) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(40));
            carve_free(p);
            carve_free(p);
        },
        line("double free", "class [0-9]+ bytes", "free"));
}

TEST_F(CarveDebug, DoubleFreeNotInARow) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(40));
            void *others[100];
            for (void *&o : others)
                o = carve_malloc(opaque(40));
            carve_free(p);
            for (void *o : others)
                carve_free(o);
            carve_free(p);
        },
        line("double free", "class [0-9]+ bytes", "free"));
}

TEST_F(CarveDebug, DoubleFreeOfLargeBlock) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(1 << 20));
            carve_free(p);
            carve_free(p);
        },
        line("double free", "requested 1048576 bytes, own mapping", "free"));
}

TEST_F(CarveDebug, ReallocOfFreedBlock) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(40));
            carve_free(p);
            p = carve_realloc(p, opaque(80));
        },
        line("double free", "class [0-9]+ bytes", "realloc"));
}

TEST_F(CarveDebug, UsableSizeOfFreedBlock) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(40));
            carve_free(p);
            (void)carve_malloc_usable_size(p);
        },
        line("use after free", "class [0-9]+ bytes", "malloc_usable_size"));
}

TEST_F(CarveDebug, FreeOfStackPointer) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            char on_stack[64];
            carve_free(opaque_ptr(on_stack));
        },
        line("invalid free", "not allocated by carve, or already freed", "free"));
}

TEST_F(CarveDebug, FreeOfInteriorPointer) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            char *p = static_cast<char *>(carve_malloc(opaque(40)));
            carve_free(opaque_ptr(p + 16));
        },
        line("invalid free",
             "interior pointer: offset 16 of the block at 0x[0-9a-f]+, class [0-9]+ bytes",
             "free"));
}

// The next block of the same page, carved but never handed out.
TEST_F(CarveDebug, FreeOfBlockNeverHandedOut) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            char *p = static_cast<char *>(carve_malloc(opaque(40)));
            carve_free(opaque_ptr(p + 64));
        },
        "carve: invalid free.* of 0x[0-9a-f]+ \\(.*class 64 bytes\\) in free\\(\\)");
}

// An overflow that runs past the canary into the block's trailer.
TEST_F(CarveDebug, LongOverflowBreaksTrailer) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            char *p = static_cast<char *>(carve_malloc(opaque(40)));
            memset(opaque_ptr(p), 'x', opaque(64));
            carve_free(p);
        },
        line("invalid free or heap overflow", "block trailer broken, class 64 bytes", "free"));
}

TEST_F(CarveDebug, FreeOfInteriorPointerOfLargeBlock) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            char *p = static_cast<char *>(carve_malloc(opaque(1 << 20)));
            carve_free(opaque_ptr(p + 4096));
        },
        line("invalid free",
             "interior pointer: offset 4096 of the 1048576-byte block at 0x[0-9a-f]+",
             "free"));
}

TEST_F(CarveDebug, ReallocOfInteriorPointer) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            char *p = static_cast<char *>(carve_malloc(opaque(100)));
            (void)carve_realloc(opaque_ptr(p + 32), opaque(10));
        },
        line("invalid realloc", "interior pointer: offset 32 of the block .*", "realloc"));
}

TEST_F(CarveDebug, UsableSizeOfInteriorPointer) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            char *p = static_cast<char *>(carve_malloc(opaque(100)));
            (void)carve_malloc_usable_size(opaque_ptr(p + 8));
        },
        line("invalid pointer", "interior pointer: offset 8 of the block .*",
             "malloc_usable_size"));
}

TEST_F(CarveDebug, FreeSizedWithWrongSize) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(40));
            carve_free_sized(p, opaque(41));
        },
        line("free_sized with wrong size", "requested 40, given 41", "free_sized"));
}

TEST_F(CarveDebug, FreeSizedWithWrongSizeOfLargeBlock) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(1 << 20));
            carve_free_sized(p, opaque(1 << 19));
        },
        line("free_sized with wrong size", "requested 1048576, given 524288", "free_sized"));
}

TEST_F(CarveDebug, FreeAlignedSizedWithWrongSize) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_aligned_alloc(64, opaque(128));
            carve_free_aligned_sized(p, 64, opaque(100));
        },
        line("free_aligned_sized with wrong size", "requested 128, given 100",
             "free_aligned_sized"));
}

// ---- junk, poison, quarantine ---------------------------------------------

// Without quarantine the block comes back at once; malloc finds the write.
TEST_F(CarveDebug, UseAfterFreeBreaksPoisonSeenByMalloc) {
    EXPECT_DEATH(
        {
            enable("debug=junk+free");
            void *p = carve_malloc(opaque(40));
            carve_free(p);
            poke(p, 20, 7);
            for (int i = 0; i < 10000; i++)
                carve_free(carve_malloc(opaque(40)));
        },
        line("use after free \\(poison broken\\)", "class [0-9]+ bytes, written at offset 20",
             "malloc"));
}

// With quarantine the block is checked when it leaves, pushed out by others.
TEST_F(CarveDebug, UseAfterFreeBreaksPoisonSeenOnLeavingQuarantine) {
    EXPECT_DEATH(
        {
            enable("debug=junk+quarantine+free,quarantine=4k");
            void *p = carve_malloc(opaque(40));
            carve_free(p);
            poke(p, 8, 7);
            for (int i = 0; i < 1000; i++)
                carve_free(carve_malloc(opaque(40)));
        },
        line("use after free \\(poison broken\\)", "class [0-9]+ bytes, written at offset 8",
             "free"));
}

// A write to the free-list link of a block in quarantine is caught too.
TEST_F(CarveDebug, UseAfterFreeOfFirstWord) {
    EXPECT_DEATH(
        {
            enable("debug=junk+quarantine+free,quarantine=4k");
            void *p = carve_malloc(opaque(40));
            carve_free(p);
            poke(p, 0, 7);
            for (int i = 0; i < 1000; i++)
                carve_free(carve_malloc(opaque(40)));
        },
        line("use after free \\(poison broken\\)", "class [0-9]+ bytes, written at offset 0",
             "free"));
}

// Still in quarantine when the program ends: checked at exit.
TEST_F(CarveDebug, UseAfterFreeFoundAtExit) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(40));
            carve_free(p);
            poke(p, 30, 7);
            exit(0);
        },
        line("use after free \\(poison broken\\)", "class [0-9]+ bytes, written at offset 30",
             "exit"));
}

// Each check alone must still stop what the release build stops: a double
// free (the trailer says "freed" whatever the checks), also through realloc.
TEST_F(CarveDebug, EveryDebugModeStopsADoubleFree) {
    for (const char *mode : {"debug=guards", "debug=canary", "debug=junk", "debug=quarantine",
                             "debug=page"}) {
        EXPECT_DEATH(
            {
                enable(mode);
                void *p = carve_malloc(opaque(40));
                carve_free(p);
                carve_free(p);
            },
            "carve: double free of 0x[0-9a-f]+ \\(.*\\) in free\\(\\)")
            << mode;
        EXPECT_DEATH(
            {
                enable(mode);
                void *p = carve_malloc(opaque(40));
                carve_free(p);
                p = carve_realloc(p, opaque(80));
            },
            "carve: double free of 0x[0-9a-f]+ \\(.*\\) in realloc\\(\\)")
            << mode;
    }
}

// An overflow that runs past a block's canary and trailer into the next,
// free, block reaches that block's free-list link first: the malloc that
// would follow the broken link names the overflowing block instead (it
// crashed inside carve with SIGBUS under debug=canary).
TEST_F(CarveDebug, OverflowIntoTheNextFreeBlockNamesTheBlockThatOverflowed) {
    for (const char *mode : {"debug=canary", kDefault}) {
        EXPECT_DEATH(
            {
                enable(mode);
                char *p = static_cast<char *>(carve_malloc(opaque(40))); // class 64
                memset(opaque_ptr(p), 'x', opaque(40 + 24 + 8));
                for (int i = 0; i < 3; i++)
                    (void)!carve_malloc(opaque(40));
                carve_free(p);
            },
            line("heap overflow", "class 64 bytes; it ran into the next block's free-list link",
                 "malloc"))
            << mode;
    }
}

// A write just before a block in its own mapping: in padding or the header
// page's tail, where the release build's header check would have caught it.
TEST_F(CarveDebug, UnderflowOfABlockInItsOwnMapping) {
    for (size_t size : {size_t{300000}, size_t{1} << 20}) {
        EXPECT_DEATH(
            {
                enable(kDefault);
                char *p = static_cast<char *>(carve_malloc(opaque(size)));
                memset(static_cast<char *>(opaque_ptr(p)) - 16, 'A', 16);
                carve_free(p);
            },
            line("heap underflow \\(canary before the block broken\\)",
                 "requested " + std::to_string(size) + " bytes, own mapping", "free"))
            << "size " << size;
    }
}

// debug=page without quarantine: a freed block's pages are PROT_NONE, and
// the next malloc does not get the same address back (the mapping was
// unmapped, and the kernel handed it out again at once).
TEST_F(CarveDebug, PageModeWithoutQuarantineKeepsFreedBlocksFaulting) {
    let_segv_through();
    EXPECT_EXIT(
        {
            enable("debug=page");
            char *p = static_cast<char *>(carve_malloc(opaque(40)));
            carve_free(p);
            char *q = static_cast<char *>(carve_malloc(opaque(40)));
            CHILD_CHECK(q != p);
            poke(p, 0, 'Z');
        },
        ::testing::KilledBySignal(SIGSEGV),
        "carve: use after free of 0x[0-9a-f]+ \\(requested 40 bytes, own mapping; offset 0\\)");
}

// debug=page gives every block two of vm.max_map_count's mappings. At the
// limit itself, the fallback's own chunk could not be mapped and malloc
// failed: it falls back at half of them, and the program can still map.
TEST_F(CarveDebug, PageModeFallsBackToCanariesBeforeTheMapLimit) {
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

TEST_F(CarveDebug, FreedAndShrunkMappedBlocksKeepTwoKernelMappingsEach) {
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
TEST_F(CarveDebug, HeldBackMappingsAreBoundedInAddressSpace) {
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
TEST_F(CarveDebug, CanariesSwitchedOnLaterAreNotCheckedOnOlderMappedBlocks) {
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
TEST_F(CarveDebug, ARaisedSegvStillKills) {
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

// Debug mode cannot remember every freed block: a second free it does not
// recognise says so, as release builds do.
TEST_F(CarveDebug, DoubleFreeOfAChunkAlignedBlockSaysItMayBeFreedAlready) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_aligned_alloc(opaque(4 << 20), opaque(100));
            carve_free(p);
            carve_free(p);
        },
        line("invalid free", "not allocated by carve, or already freed", "free"));
}

// ---- the backtrace ----------------------------------------------------------

TEST_F(CarveDebug, ReportEndsWithBacktrace) {
    EXPECT_DEATH(
        {
            enable(kDefault);
            void *p = carve_malloc(opaque(40));
            carve_free(p);
            carve_free(p);
        },
        "carve: double free of .*\ncarve: backtrace \\([0-9]+ frames\\):\n.*\\[0x[0-9a-f]+\\]");
}

// ---- release builds' cheap checks ----------------------------------------------

TEST_F(CarveDebug, ReleaseStopsImmediateDoubleFreeOfSmallBlock) {
    EXPECT_DEATH(
        {
            enable("debug=none");
            void *p = carve_malloc(opaque(40));
            carve_free(p);
            carve_free(p);
        },
        line("double free", "class 48 bytes", "free"));
}

TEST_F(CarveDebug, ReleaseStopsDoubleFreeOfLargeBlock) {
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
TEST_F(CarveDebug, ReleaseStopsWriteJustBeforeLargeBlock) {
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
TEST_F(CarveDebug, LargeBlockHeaderCheckFollowsReallocAndReuse) {
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

TEST_F(CarveDebug, ReleaseStopsFreeOfStackPointer) {
    EXPECT_DEATH(
        {
            enable("debug=none");
            char on_stack[64];
            carve_free(opaque_ptr(on_stack));
        },
        line("invalid free", "not allocated by carve, or already freed", "free"));
}

TEST_F(CarveDebug, ReleaseStopsMisalignedInteriorPointer) {
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

TEST_F(CarveDebug, ReleaseStopsInteriorPointerFromAnotherThread) {
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

TEST_F(CarveDebug, DebugModeKeepsMallocBehaviour) {
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
