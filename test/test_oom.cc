// test_oom.cc: allocation short of address space (issue #20). Under
// RLIMIT_AS every path must fail cleanly: NULL with errno ENOMEM (for
// posix_memalign, ENOMEM returned with *memptr and errno untouched), every
// block allocated before the failure intact, and frees making room again
// for blocks of the freed size and for smaller ones.
//
// Each test runs in a child process, which limits its address space to
// what it uses plus a margin: the limit cannot be raised back, and the
// googletest process needs its memory. The child's vectors are reserved
// before the limit (the C library's malloc, which they use, is under it).

#include <carve.h>

#include "util.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

namespace {

using carve_test::kMiB;
using carve_test::opaque;

// The children's exit codes, the same in every test.
enum Code { kNeverFailed = 2, kNotEnomem, kDamaged, kNoReuse, kNoSmaller, kBadBlock, kTooFew,
            kNotUsable, kSkip = 77 };
const char kCodes[] =
    "exit 2: no allocation failed within the limit, 3: NULL without ENOMEM, 4: a block "
    "allocated before the failure was damaged, 5: after frees an allocation of the freed size "
    "failed, 6: after frees a smaller allocation failed, 7: misaligned, calloc not zero, or a "
    "failed posix_memalign touched *memptr or errno, 8: a failure before the margin was used "
    "up, 9: the block realloc could not grow was not usable; 1000 + n: signal n (see stderr)";

constexpr size_t kMid = 16 << 10;        // blocks up to this are marked whole
constexpr size_t kSmallMax = 256 << 10;  // the biggest small block
constexpr size_t kStride = 64 << 10;     // bigger blocks are marked once per stride
constexpr size_t kMaxBlocks = 1 << 20;   // more: the limit does not hold

// A failure in the child: what went wrong on stderr (unbuffered: no
// malloc), and its code.
int fail(int code, const char *what, size_t n) {
    fprintf(stderr, "test_oom child: %s (%zu)\n", what, n);
    return code;
}

// Returns fail(...) when cond holds; returns the code expr gives, if any.
#define OOM_FAIL_IF(cond, ...) do { if (cond) return fail(__VA_ARGS__); } while (0)
#define OOM_CHECK(expr) do { if (const int c_ = (expr)) return c_; } while (0)

// The address space this process uses now (VmSize), 0 if unreadable.
size_t address_space() {
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == nullptr)
        return 0;
    unsigned long pages = 0;
    const int got = fscanf(f, "%lu", &pages);
    fclose(f);
    return got == 1 ? pages * static_cast<size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

struct Blk {
    unsigned char *p;
    size_t n;
    unsigned seed;
};
unsigned next_seed = 1;
using Vec = std::vector<Blk>;
using Vecs = std::initializer_list<Vec *>;

// Reserves the vectors, then limits the address space to what is in use
// plus margin (false if it cannot). carve has started already, through the
// fork or here: what its reservation has left comes on top of the margin.
bool limit_address_space(size_t margin, Vecs vs) {
    for (Vec *v : vs)
        v->reserve(kMaxBlocks);
    carve_free(carve_malloc(opaque(64)));
    const size_t used = address_space();
    struct rlimit rl;
    if (used == 0 || getrlimit(RLIMIT_AS, &rl) != 0)
        return false;
    rl.rlim_cur = used + margin;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max)
        return false;
    return setrlimit(RLIMIT_AS, &rl) == 0;
}

// Blocks carry carve_test::fill's position-dependent pattern: whole up to
// 16 KiB, above that 64 bytes every 64 KiB and the last 64. Touching every
// page of the hundreds of MiB allocated here costs seconds of page faults
// on a virtual machine; the marks still catch a block handed out twice, a
// header or free list written into one, a realloc that lost or shifted a
// range. op: 'w' writes the marks, 'r' checks them, '0' checks for zeros.
bool spots(unsigned char *p, size_t n, unsigned seed, char op) {
    for (size_t at = 0; at < n; at = at + kStride < n - 64 ? at + kStride : n - 64) {
        const size_t end = n <= kMid ? n : at + 64;
        for (size_t i = at; i < end; i += 8) {
            const uint64_t w = op == '0' ? 0 : carve_test::pattern_word(i / 8, seed);
            const size_t len = end - i < 8 ? end - i : 8;
            if (op == 'w')
                memcpy(p + i, &w, len);
            else if (memcmp(p + i, &w, len) != 0)
                return false;
        }
        if (end == n)
            break;
    }
    return true;
}

int verify(Vecs vs) {
    for (const Vec *v : vs)
        for (const Blk &b : *v)
            OOM_FAIL_IF(!spots(b.p, b.n, b.seed, 'r'), kDamaged, "block damaged, size", b.n);
    return 0;
}

// One block of n bytes from alloc, checked (alignment; zeros for calloc),
// marked and kept in v: 0; -1 for NULL with ENOMEM; else a code.
int take(Vec &v, void *(*alloc)(size_t), size_t n, size_t align, bool zeroed) {
    errno = 0;
    unsigned char *p = static_cast<unsigned char *>(alloc(opaque(n)));
    if (p == nullptr)
        return errno == ENOMEM ? -1 : fail(kNotEnomem, "NULL without ENOMEM, size", n);
    OOM_FAIL_IF(!carve_test::is_aligned(p, align), kBadBlock, "misaligned block, alignment", align);
    OOM_FAIL_IF(zeroed && !spots(p, n, 0, '0'), kBadBlock, "calloc block not zero, size", n);
    v.push_back({p, n, next_seed});
    spots(p, n, next_seed++, 'w');
    return 0;
}

// Blocks of n bytes until one fails with ENOMEM (0), else a code.
int fill_until_failure(Vec &v, void *(*alloc)(size_t), size_t n, size_t align = 16,
                       bool zeroed = false) {
    while (v.size() < kMaxBlocks)
        if (const int r = take(v, alloc, n, align, zeroed))
            return r == -1 ? 0 : r;
    return fail(kNeverFailed, "no failure, blocks of", n);
}

// count more blocks, after frees: code when one fails.
int again(Vec &v, void *(*alloc)(size_t), size_t n, size_t count, int code, size_t align = 16,
          bool zeroed = false) {
    for (size_t i = 0; i < count; i++)
        if (const int r = take(v, alloc, n, align, zeroed))
            return r == -1 ? fail(code, "ENOMEM after frees, size", n) : r;
    return 0;
}

// Frees the newest count blocks of v (the newest pages: they empty, and go
// back to the arena for any class).
void free_newest(Vec &v, size_t count) {
    for (; count > 0 && !v.empty(); count--) {
        carve_free(v.back().p);
        v.pop_back();
    }
}

void *plain(size_t n) { return carve_malloc(n); }
void *zeroed(size_t n) { return carve_calloc(1, n); }
template <size_t A> void *aligned(size_t n) { return carve_aligned_alloc(A, n); }
template <size_t A> void *memaligned(size_t n) {
    void *p = nullptr;
    errno = carve_posix_memalign(&p, A, n);
    return errno == 0 ? p : nullptr;
}

// Verifies each vector and frees its blocks: 0, or kDamaged.
int verify_and_free(Vecs vs) {
    OOM_CHECK(verify(vs));
    for (Vec *v : vs)
        free_newest(*v, v->size());
    return 0;
}

// Runs fn in a child and expects exit 0. Skipped under the sanitizers,
// whose shadow memory does not fit under the limit, and in debug mode,
// whose quarantine keeps freed blocks from coming back.
void run(int (*fn)()) {
    if (carve_test::kSanitized)
        GTEST_SKIP() << "the sanitizer's shadow memory does not fit under RLIMIT_AS";
    CARVE_SKIP_IN_DEBUG_MODE();
    const int r = carve_test::run_in_child(fn, 30);
    if (r == kSkip)
        GTEST_SKIP() << "cannot set RLIMIT_AS here";
    EXPECT_EQ(r, 0) << kCodes;
}

// 256 KiB blocks until one fails (the margin, 64 MiB, and what carve's
// reservation had left), then 16 KiB and 64-byte blocks in turn until both
// fail (the slices the 256 KiB pages left, and what the 64-byte page had
// left after them). Then half of each go, and as many blocks of each
// freed size come back, and smaller ones.
int small_blocks() {
    Vec big, mid, tiny, after;
    if (!limit_address_space(64 * kMiB, {&big, &mid, &tiny, &after}))
        return kSkip;
    OOM_CHECK(fill_until_failure(big, plain, kSmallMax));
    OOM_FAIL_IF(big.size() < 32 * kMiB / kSmallMax, kTooFew, "256 KiB blocks", big.size());
    for (bool more_mid = true, more_tiny = true; more_mid || more_tiny;) {
        OOM_FAIL_IF(mid.size() + tiny.size() >= kMaxBlocks, kNeverFailed, "no failure", 0);
        const int r_mid = more_mid ? take(mid, plain, kMid, 16, false) : -1;
        const int r_tiny = more_tiny ? take(tiny, plain, 64, 16, false) : -1;
        if (r_mid > 0 || r_tiny > 0)
            return r_mid > 0 ? r_mid : r_tiny;
        more_mid = r_mid == 0;
        more_tiny = r_tiny == 0;
    }
    OOM_CHECK(verify({&big, &mid, &tiny}));
    const size_t n_tiny = tiny.size() / 2, n_mid = mid.size() / 2, n_big = big.size() / 2;
    free_newest(tiny, n_tiny);
    OOM_CHECK(again(after, plain, 64, n_tiny, kNoReuse));
    free_newest(mid, n_mid);
    OOM_CHECK(again(after, plain, kMid, n_mid, kNoReuse));
    free_newest(big, n_big);
    OOM_CHECK(again(after, plain, kSmallMax, n_big / 2, kNoReuse));
    for (size_t n : {kMid, size_t{1000}, size_t{64}})
        OOM_CHECK(again(after, plain, n, 64, kNoSmaller));
    return verify_and_free({&big, &mid, &tiny, &after});
}

// 64 MiB blocks until one fails (a 256 MiB margin holds three: each is
// mapped with 4 MiB more, cut off after alignment), requests bigger than
// the margin; then one block goes, and a 64 MiB block comes back, and
// smaller ones.
int large_blocks() {
    const size_t kBlock = 64 * kMiB, kMargin = 256 * kMiB;
    Vec v, after;
    if (!limit_address_space(kMargin, {&v, &after}))
        return kSkip;
    OOM_CHECK(fill_until_failure(v, plain, kBlock));
    OOM_FAIL_IF(v.size() < 2, kTooFew, "64 MiB blocks before the failure", v.size());
    for (size_t n : {kMargin, kMargin * 4, size_t{1} << 40, SIZE_MAX / 2, SIZE_MAX}) {
        errno = 0;
        OOM_FAIL_IF(carve_malloc(opaque(n)) != nullptr, kNeverFailed, "malloc succeeded", n);
        OOM_FAIL_IF(errno != ENOMEM, kNotEnomem, "NULL without ENOMEM, size", n);
    }
    OOM_CHECK(verify({&v}));
    free_newest(v, 1);
    OOM_CHECK(again(after, plain, kBlock, 1, kNoReuse));
    for (size_t n : {kMiB, size_t{300000}, size_t{64}})
        OOM_CHECK(again(after, plain, n, 1, kNoSmaller));
    return verify_and_free({&v, &after});
}

// posix_memalign at the limit: ENOMEM returned, *memptr and errno left as
// they were (carve keeps errno there: api.c).
int memalign_fails(size_t align, size_t n) {
    void *const sentinel = reinterpret_cast<void *>(uintptr_t{0x5a5a5a50});
    void *p = sentinel;
    errno = EDOM;
    const int r = carve_posix_memalign(&p, opaque(align), opaque(n));
    OOM_FAIL_IF(r == 0, kNeverFailed, "posix_memalign succeeded, alignment", align);
    OOM_FAIL_IF(r != ENOMEM, kNotEnomem, "posix_memalign did not return ENOMEM", align);
    OOM_FAIL_IF(p != sentinel || errno != EDOM, kBadBlock, "*memptr or errno touched", align);
    return 0;
}

// 16 MiB blocks aligned to 2 MiB (large blocks) until one fails, then
// 256 KiB and 16 KiB blocks aligned to 4 KiB (small blocks, from classes
// aligned so), from aligned_alloc and posix_memalign. Then two 2 MiB-
// aligned blocks and half of the 4 KiB-aligned ones go, and blocks of the
// freed sizes and smaller come back, aligned.
int aligned_blocks() {
    const size_t k2M = 2 * kMiB, k4K = 4096, kHuge = 16 * kMiB;
    Vec huge, big, mid, after;
    if (!limit_address_space(256 * kMiB, {&huge, &big, &mid, &after}))
        return kSkip;
    OOM_CHECK(fill_until_failure(huge, aligned<k2M>, kHuge, k2M));
    OOM_FAIL_IF(huge.size() < 4, kTooFew, "2 MiB-aligned blocks before the failure", huge.size());
    OOM_CHECK(memalign_fails(k2M, kHuge));
    OOM_CHECK(fill_until_failure(big, aligned<k4K>, kSmallMax, k4K));
    OOM_CHECK(fill_until_failure(mid, memaligned<k4K>, kMid, k4K));
    OOM_CHECK(memalign_fails(k4K, kMid));
    OOM_CHECK(memalign_fails(k4K, kSmallMax));
    OOM_CHECK(memalign_fails(k2M, kHuge));
    OOM_CHECK(verify({&huge, &big, &mid}));
    free_newest(huge, 2);
    OOM_CHECK(again(after, memaligned<k2M>, kHuge, 1, kNoReuse, k2M));
    OOM_CHECK(again(after, aligned<k2M>, kHuge, 1, kNoReuse, k2M));
    const size_t n_big = big.size() / 2, n_mid = mid.size() / 2;
    free_newest(mid, n_mid);
    OOM_CHECK(again(after, memaligned<k4K>, kMid, n_mid, kNoReuse, k4K));
    free_newest(big, n_big);
    OOM_CHECK(again(after, aligned<k4K>, kSmallMax, n_big / 2, kNoReuse, k4K));
    OOM_CHECK(again(after, memaligned<k4K>, k4K, 64, kNoSmaller, k4K));
    return verify_and_free({&huge, &big, &mid, &after});
}

// One block grown by realloc, doubling from 1 KiB through the small
// classes to large blocks, then by eighths, until realloc fails (the
// marks checked at each step): the block must then be intact, usable to
// its end, shrunk and grown back, and freeable; after the free a block of
// its size comes back, and a small one.
int realloc_growth() {
    const unsigned seed = 7;
    Vec after;
    if (!limit_address_space(256 * kMiB, {&after}))
        return kSkip;
    size_t n = 1024;
    unsigned char *p = static_cast<unsigned char *>(carve_malloc(opaque(n)));
    OOM_FAIL_IF(p == nullptr, kTooFew, "first block", n);
    spots(p, n, seed, 'w');
    for (bool doubling = true;;) {
        const size_t grown = doubling ? n * 2 : n + (n / 8 & ~size_t{7});
        OOM_FAIL_IF(grown > (size_t{64} << 30), kNeverFailed, "realloc never failed, size", n);
        errno = 0;
        unsigned char *q = static_cast<unsigned char *>(carve_realloc(p, opaque(grown)));
        OOM_FAIL_IF(q == nullptr && errno != ENOMEM, kNotEnomem, "realloc without ENOMEM", grown);
        if (!spots(q == nullptr ? p : q, n, seed, 'r'))
            return fail(kDamaged, q == nullptr ? "failed realloc damaged the block, size"
                                               : "realloc lost bytes, size", n);
        if (q == nullptr && !doubling)
            break;
        doubling = doubling && q != nullptr;  // then closer to the limit
        if (q != nullptr) {
            spots(q, grown, seed, 'w');
            p = q;
            n = grown;
        }
    }
    OOM_FAIL_IF(n < 64 * kMiB, kTooFew, "realloc failed early, size", n);
    OOM_FAIL_IF(carve_malloc_usable_size(p) < n, kNotUsable, "usable size below the size, size", n);
    p[n - 1] ^= 0xff;  // writable to its end (the shrink below drops that byte)
    spots(p, n / 2, seed, 'w');  // the marks of the shrunk size
    unsigned char *q = static_cast<unsigned char *>(carve_realloc(p, opaque(n / 2)));
    OOM_FAIL_IF(q == nullptr || !spots(q, n / 2, seed, 'r'), kNotUsable, "shrinking failed", n);
    p = static_cast<unsigned char *>(carve_realloc(q, opaque(n)));
    OOM_FAIL_IF(p == nullptr, kNotUsable, "growing it back failed, size", n);
    OOM_FAIL_IF(!spots(p, n / 2, seed, 'r'), kDamaged, "shrunk block lost bytes, size", n);
    carve_free(p);
    OOM_CHECK(again(after, plain, n, 1, kNoReuse));
    OOM_CHECK(again(after, plain, 100, 1, kNoSmaller));
    return verify_and_free({&after});
}

// n * size overflowing: NULL and ENOMEM, with no address space taken.
int calloc_overflows() {
    const size_t before = address_space(), half = SIZE_MAX / 2 + 1;
    const size_t pairs[][2] = {
        {half, 2}, {2, half}, {SIZE_MAX, SIZE_MAX}, {size_t{1} << 32, size_t{1} << 32}};
    for (const auto &pair : pairs) {
        errno = 0;
        const void *p = carve_calloc(opaque(pair[0]), opaque(pair[1]));
        OOM_FAIL_IF(p != nullptr, kNeverFailed, "calloc with n * size overflowing, n", pair[0]);
        OOM_FAIL_IF(errno != ENOMEM, kNotEnomem, "calloc overflow without ENOMEM, n", pair[0]);
    }
    OOM_FAIL_IF(address_space() != before, kBadBlock, "calloc overflow took address space", 0);
    return 0;
}

// The overflows before the limit, at it and past it; 16 MiB, 256 KiB and
// 16 KiB calloc blocks until each fails, all zero. After frees, calloc of
// the freed sizes (dirty memory: freed blocks, a cached mapping) and of
// smaller ones returns zeroed blocks.
int calloc_blocks() {
    const size_t kHuge = 16 * kMiB;
    Vec huge, big, mid, after;
    OOM_CHECK(calloc_overflows());
    if (!limit_address_space(256 * kMiB, {&huge, &big, &mid, &after}))
        return kSkip;
    OOM_CHECK(calloc_overflows());
    OOM_CHECK(fill_until_failure(huge, zeroed, kHuge, 16, true));
    OOM_FAIL_IF(huge.size() < 4, kTooFew, "16 MiB calloc blocks before the failure", huge.size());
    OOM_CHECK(fill_until_failure(big, zeroed, kSmallMax, 16, true));
    OOM_CHECK(fill_until_failure(mid, zeroed, kMid, 16, true));
    OOM_CHECK(calloc_overflows());
    OOM_CHECK(verify({&huge, &big, &mid}));
    free_newest(huge, 2);
    OOM_CHECK(again(after, zeroed, kHuge, 1, kNoReuse, 16, true));
    const size_t n_big = big.size() / 2, n_mid = mid.size() / 2;
    free_newest(mid, n_mid);
    OOM_CHECK(again(after, zeroed, kMid, n_mid, kNoReuse, 16, true));
    free_newest(big, n_big);
    OOM_CHECK(again(after, zeroed, kSmallMax, n_big / 2, kNoReuse, 16, true));
    OOM_CHECK(again(after, zeroed, 100, 64, kNoSmaller, 16, true));
    return verify_and_free({&huge, &big, &mid, &after});
}

}  // namespace

TEST(CarveOom, SmallBlocksFailCleanly) { run(small_blocks); }
TEST(CarveOom, LargeBlocksFailCleanly) { run(large_blocks); }
TEST(CarveOom, AlignedBlocksFailCleanly) { run(aligned_blocks); }
TEST(CarveOom, ReallocGrowthFailsCleanly) { run(realloc_growth); }
TEST(CarveOom, CallocFailsCleanly) { run(calloc_blocks); }
