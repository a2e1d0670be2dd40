// test_options.cc: carve_option_set and mallopt: known options taken,
// unknown ones and values that are no value refused with a message, every
// mallopt parameter accepted as glibc does; and what the thp option does to
// big blocks: huge pages asked for or not (also for a block from the large
// cache), and resident only where written by default.

#include <carve.h>

#include <malloc.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include "util.h"

namespace {

// ---- mallopt ----------------------------------------------------------------

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

// ---- carve_option_set -------------------------------------------------------

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

}  // namespace
