// test_random.cc: one million random operations over up to 10,000 live
// blocks. Every block holds a pattern derived from (slot, generation) and is
// checked in full before it is freed or reallocated; one differing byte
// fails the test. The seed is fixed and printed (CARVE_TEST_SEED overrides).

#include <carve.h>

#include <gtest/gtest.h>

#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "util.h"

namespace {

using carve_test::first_nonzero;

constexpr size_t kSlots = 10000;
constexpr long kOperations = 1000000;

uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

// Word i of a block with the given seed; bytes past the last whole word take
// the low bytes of the next word value.
inline uint64_t pattern_word(uint64_t seed, size_t i) {
    return seed ^ (i * 0x9E3779B97F4A7C15ull) ^ (i << 40);
}

void fill(void *p, size_t n, uint64_t seed) {
    unsigned char *b = static_cast<unsigned char *>(p);
    size_t words = n / 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t w = pattern_word(seed, i);
        memcpy(b + 8 * i, &w, 8);
    }
    uint64_t w = pattern_word(seed, words);
    memcpy(b + 8 * words, &w, n % 8);
}

// Offset of the first byte that differs, or n.
size_t first_mismatch(const void *p, size_t n, uint64_t seed) {
    const unsigned char *b = static_cast<const unsigned char *>(p);
    size_t words = n / 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t w;
        memcpy(&w, b + 8 * i, 8);
        if (w != pattern_word(seed, i)) {
            uint64_t want = pattern_word(seed, i);
            for (size_t k = 0; k < 8; k++)
                if (b[8 * i + k] != reinterpret_cast<const unsigned char *>(&want)[k])
                    return 8 * i + k;
        }
    }
    uint64_t want = pattern_word(seed, words);
    for (size_t k = 0; k < n % 8; k++)
        if (b[8 * words + k] != reinterpret_cast<const unsigned char *>(&want)[k])
            return 8 * words + k;
    return n;
}

enum class Kind : uint8_t { kPlain, kAlignedAlloc, kPosixMemalign, kMemalign };

struct Slot {
    void *p = nullptr;
    size_t size = 0;
    size_t alignment = 0;  // for the aligned kinds
    uint64_t gen = 0;
    Kind kind = Kind::kPlain;
};

class Random {
  public:
    explicit Random(uint64_t seed) : rng_(seed) {}
    uint64_t next() { return rng_(); }
    uint64_t below(uint64_t n) { return next() % n; }
    // Mostly <= 512, some up to 64 KiB, rarely up to 2 MiB; both spread
    // log-uniformly so that every class sees use.
    size_t size() {
        uint64_t r = below(10000);
        if (r < 9400)
            return below(2) ? 1 + below(128) : 1 + below(512);
        if (r < 9995)
            return log_uniform(513, 64 << 10);
        return log_uniform((64 << 10) + 1, 2 << 20);
    }

  private:
    size_t log_uniform(size_t lo, size_t hi) {
        unsigned lo_bits = 64 - __builtin_clzll(lo);
        unsigned hi_bits = 64 - __builtin_clzll(hi);
        unsigned bits = lo_bits + static_cast<unsigned>(below(hi_bits - lo_bits + 1));
        size_t top = size_t{1} << bits;
        size_t n = (top >> 1) + below(top >> 1);
        return n < lo ? lo : n > hi ? hi : n;
    }
    std::mt19937_64 rng_;
};

uint64_t seed_from_env() {
    const char *s = getenv("CARVE_TEST_SEED");
    return s && *s ? strtoull(s, nullptr, 0) : 0xC0FFEE2024ull;
}

class RandomOps {
  public:
    explicit RandomOps(uint64_t seed) : rnd_(seed), slots_(kSlots) {}

    // Returns false (after a test failure) at the first difference.
    bool run(long operations) {
        size_t active = kSlots;
        for (op_ = 0; op_ < operations; op_++) {
            // Phases: the range of slots in use changes every 50,000 ops, so
            // the live count swings between tens and thousands.
            if (op_ % 50000 == 0) {
                active = size_t{16} << rnd_.below(10);
                if (active > kSlots)
                    active = kSlots;
                if (op_ % 200000 == 0)
                    active = kSlots;
                // Free what is outside the new range, checking it.
                for (size_t i = active; i < kSlots; i++)
                    if (slots_[i].p && !release(i, false))
                        return false;
            }
            const size_t i = rnd_.below(active);
            if (!(slots_[i].p ? change(i) : allocate(i)))
                return false;
        }
        for (size_t i = 0; i < kSlots; i++)
            if (slots_[i].p && !release(i, false))
                return false;
        return true;
    }

    void print_summary(uint64_t seed) const {
        printf("random ops: seed 0x%" PRIx64 ", %ld operations, %zu allocations, %zu reallocs,"
               " %zu frees, %.1f MiB checked, peak %zu live blocks\n",
               seed, op_, allocations_, reallocs_, frees_,
               static_cast<double>(bytes_checked_) / (1 << 20), peak_live_);
    }

  private:
    uint64_t seed_of(size_t slot, uint64_t gen) const { return mix64((uint64_t{slot} << 40) ^ gen); }

    bool verify(size_t i, const char *before) {
        Slot &s = slots_[i];
        bytes_checked_ += s.size;
        size_t bad = first_mismatch(s.p, s.size, seed_of(i, s.gen));
        if (bad != s.size) {
            ADD_FAILURE() << "operation " << op_ << ": before " << before << ", slot " << i
                          << " (generation " << s.gen << ", " << s.size << " bytes at " << s.p
                          << ") differs at offset " << bad;
            return false;
        }
        return true;
    }

    bool check_alignment(size_t i) {
        const Slot &s = slots_[i];
        size_t want = s.kind == Kind::kPlain ? (s.size >= 16 ? 16 : 8) : s.alignment;
        if (want < 8)
            want = 8;
        if (reinterpret_cast<uintptr_t>(s.p) % want != 0) {
            ADD_FAILURE() << "operation " << op_ << ": block of " << s.size << " bytes at " << s.p
                          << " is not aligned to " << want;
            return false;
        }
        return true;
    }

    void stamp(size_t i) {
        Slot &s = slots_[i];
        s.gen = ++generation_;
        fill(s.p, s.size, seed_of(i, s.gen));
    }

    bool allocate(size_t i) {
        Slot &s = slots_[i];
        s.size = rnd_.size();
        s.kind = Kind::kPlain;
        s.alignment = 0;
        uint64_t r = rnd_.below(100);
        if (r < 55) {
            s.p = carve_malloc(s.size);
        } else if (r < 75) {
            static const size_t elem[] = {1, 2, 4, 8, 16, 24};
            size_t e = elem[rnd_.below(6)];
            size_t nmemb = (s.size + e - 1) / e;
            s.size = nmemb * e;
            s.p = carve_calloc(nmemb, e);
            if (s.p) {
                size_t bad = first_nonzero(s.p, s.size);
                if (bad != s.size) {
                    ADD_FAILURE() << "operation " << op_ << ": calloc(" << nmemb << ", " << e
                                  << ") has a non-zero byte at offset " << bad;
                    return false;
                }
            }
        } else if (r < 80) {
            s.p = carve_realloc(nullptr, s.size);
        } else {
            s.alignment = size_t{16} << rnd_.below(9);  // 16 .. 4096
            if (r < 88) {
                s.kind = Kind::kAlignedAlloc;
                s.p = carve_aligned_alloc(s.alignment, s.size);
            } else if (r < 94) {
                s.kind = Kind::kPosixMemalign;
                if (carve_posix_memalign(&s.p, s.alignment, s.size) != 0)
                    s.p = nullptr;
            } else {
                s.kind = Kind::kMemalign;
                s.p = carve_memalign(s.alignment, s.size);
            }
        }
        if (!s.p) {
            ADD_FAILURE() << "operation " << op_ << ": allocating " << s.size << " bytes failed";
            return false;
        }
        allocations_++;
        live_++;
        if (live_ > peak_live_)
            peak_live_ = live_;
        if (carve_malloc_usable_size(s.p) < s.size) {
            ADD_FAILURE() << "operation " << op_ << ": usable size "
                          << carve_malloc_usable_size(s.p) << " < " << s.size;
            return false;
        }
        if (!check_alignment(i))
            return false;
        stamp(i);
        return true;
    }

    bool release(size_t i, bool sized) {
        Slot &s = slots_[i];
        if (!verify(i, "free"))
            return false;
        if (sized && s.kind == Kind::kPlain)
            carve_free_sized(s.p, s.size);
        else if (sized && s.kind == Kind::kAlignedAlloc)
            carve_free_aligned_sized(s.p, s.alignment, s.size);
        else
            carve_free(s.p);
        s.p = nullptr;
        frees_++;
        live_--;
        return true;
    }

    bool change(size_t i) {
        uint64_t r = rnd_.below(100);
        if (r < 40)
            return release(i, false);
        if (r < 65)
            return release(i, true);
        // realloc: check, move, check the surviving prefix, restamp
        Slot &s = slots_[i];
        if (!verify(i, "realloc"))
            return false;
        size_t n = rnd_.below(4) == 0 ? s.size / 2 + rnd_.below(s.size / 2 + 1) : rnd_.size();
        if (n == 0)
            n = 1;
        void *q = carve_realloc(s.p, n);
        if (!q) {
            ADD_FAILURE() << "operation " << op_ << ": realloc to " << n << " failed";
            return false;
        }
        reallocs_++;
        const size_t old_size = s.size;
        s.p = q;
        s.size = n < old_size ? n : old_size;
        if (!verify(i, "realloc (the kept prefix after it)"))
            return false;
        s.size = n;
        s.kind = Kind::kPlain;
        s.alignment = 0;
        if (carve_malloc_usable_size(s.p) < n) {
            ADD_FAILURE() << "operation " << op_ << ": usable size after realloc "
                          << carve_malloc_usable_size(s.p) << " < " << n;
            return false;
        }
        if (!check_alignment(i))
            return false;
        stamp(i);
        return true;
    }

    Random rnd_;
    std::vector<Slot> slots_;
    long op_ = 0;
    uint64_t generation_ = 0;
    size_t allocations_ = 0, reallocs_ = 0, frees_ = 0, live_ = 0, peak_live_ = 0;
    size_t bytes_checked_ = 0;
};

TEST(CarveRandom, MillionRandomOperationsNeverCorruptABlock) {
    const uint64_t seed = seed_from_env();
    printf("random ops: seed 0x%" PRIx64 " (set CARVE_TEST_SEED to change)\n", seed);
    RecordProperty("seed", std::to_string(seed));
    RandomOps ops(seed);
    bool ok = ops.run(kOperations);
    ops.print_summary(seed);
    EXPECT_TRUE(ok) << "seed 0x" << std::hex << seed;
}

}  // namespace
