// purge_util.h: helpers of the tests that purge (test_purge.cc,
// test_purge_child.cc, test_large.cc, and the per-class statistics of
// test_stats.cc): small blocks allocated and checked by the megabyte, a
// slow-path event that runs a purge pass when one is due, and a fixture that
// puts the purge options at purge=free, decay_ms=50, background=0 before
// and after each test.
#ifndef CARVE_TEST_PURGE_UTIL_H
#define CARVE_TEST_PURGE_UTIL_H

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include <carve.h>

#include <gtest/gtest.h>

#include "util.h"

namespace carve_test {

// Small blocks of mixed sizes (16..max_size, a few up to 64 KiB when
// max_size allows) until total bytes were asked for, each filled with its
// own pattern. Empty vector if an allocation failed.
inline std::vector<Block> alloc_small(size_t total, uint64_t seed, size_t max_size = 4096) {
    std::mt19937_64 rng(seed);
    std::vector<Block> v;
    size_t sum = 0;
    while (sum < total) {
        size_t n = 16 + rng() % (max_size - 15);
        if (max_size > 4096 && rng() % 32 == 0)
            n = 4097 + rng() % (64 * 1024 - 4096);
        auto *p = static_cast<unsigned char *>(carve_malloc(n));
        if (p == nullptr) {
            for (Block &b : v)
                carve_free(b.p);
            return {};
        }
        fill_random(p, n, rng());
        v.push_back({p, n, checksum(p, n)});
        sum += n;
    }
    return v;
}

// Frees every block; returns how many had changed.
inline size_t free_all(std::vector<Block> &v) {
    size_t bad = 0;
    for (Block &b : v) {
        if (checksum(b.p, b.size) != b.sum)
            bad++;
        carve_free(b.p);
    }
    v.clear();
    return bad;
}

// RSS counts the sanitizer's shadow memory too.
constexpr bool kShadowedRss = carve_test::kSanitized;

// A slow-path event that runs a purge pass when one is due: freeing a large
// block (which also goes through the large cache).
inline void tick() {
    void *p = carve_malloc(kMiB);
    ASSERT_NE(p, nullptr);
    static_cast<unsigned char *>(p)[0] = 1;
    carve_free(p);
}

inline bool set_option(const char *kv) { return carve_option_set(kv) == 0; }

inline void set_defaults() {
    EXPECT_TRUE(set_option("purge=free"));
    EXPECT_TRUE(set_option("decay_ms=50"));
    EXPECT_TRUE(set_option("background=0"));
}

// Every test starts from these options and leaves them so.
class PurgeDefaults : public ::testing::Test {
protected:
    void SetUp() override {
        set_defaults();
        carve_malloc_trim(0);
    }
    void TearDown() override {
        set_defaults();
        carve_malloc_trim(0);
    }
};

}  // namespace carve_test

#endif  // CARVE_TEST_PURGE_UTIL_H
