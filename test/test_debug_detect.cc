// test_debug_detect.cc: what debug mode (CARVE_OPTIONS=debug=...,
// ./configure --enable-debug) catches: overflows onto guard pages and
// through canaries, double and invalid frees, writes to freed blocks
// (poison, quarantine), underflows, and the backtrace that ends a report.
// One death test per detection, with the exact line carve must print; each
// switches debug mode on inside the death-test child (debug_util.h).

#include <carve.h>

#include <gtest/gtest.h>

#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "util.h"
#include "debug_util.h"

namespace {

using carve_test::enable;
using carve_test::kDefault;
using carve_test::let_segv_through;
using carve_test::line;
using carve_test::opaque;
using carve_test::opaque_ptr;
using carve_test::poke;

class CarveDebug : public carve_test::ThreadsafeDeathTest {};

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

}  // namespace
