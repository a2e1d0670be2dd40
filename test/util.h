// util.h: helpers shared by the test files: the CARVE_TEST_SCALE knob
// (sanitizer runs scale heavy tests down), the status of a child process,
// patterns that detect any byte a block lost (a random fill with a
// checksum, and a position-dependent pattern), blocks with their checksum,
// carve_stats_read figures, RSS, sizes passed through a volatile, wall-clock
// budgets, and the debug-mode skip.
#ifndef CARVE_TEST_UTIL_H
#define CARVE_TEST_UTIL_H

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cerrno>
#include <csignal>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <carve.h>

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

// CARVE_SANITIZED: built with ThreadSanitizer or AddressSanitizer (gcc
// defines __SANITIZE_*__, clang answers __has_feature), whose runtimes map
// shadow memory of their own: RSS counts it, and they need the address
// space and kernel mappings that some tests use up on purpose.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define CARVE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define CARVE_SANITIZED 1
#endif
#endif

// CARVE_TSAN: built with ThreadSanitizer alone (its runtime tears down a
// thread's state in the last destructor round, and cannot start threads
// after a multithreaded fork).
#if defined(__SANITIZE_THREAD__)
#define CARVE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CARVE_TSAN 1
#endif
#endif

namespace carve_test {

#ifdef CARVE_SANITIZED
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// The wait status of child pid (waitpid through EINTR), or -1 when waitpid
// failed.
inline int wait_child(pid_t pid) {
    int status = 0;
    pid_t w;
    do {
        w = waitpid(pid, &status, 0);
    } while (w == -1 && errno == EINTR);
    return w == pid ? status : -1;
}

inline bool child_ok(int status) { return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

// "exited with 3", "killed by signal 14 (SIGALRM: deadlock?)", for messages.
inline std::string child_outcome(int status) {
    if (status == -1)
        return "could not be waited for";
    if (WIFSIGNALED(status))
        return "killed by signal " + std::to_string(WTERMSIG(status)) +
               (WTERMSIG(status) == SIGALRM ? " (SIGALRM: deadlock?)" : "");
    return "exited with " + std::to_string(WEXITSTATUS(status));
}

// The factor heavy tests multiply their counts by (CARVE_TEST_SCALE, 1.0).
inline double test_scale() {
    static const double scale = [] {
        const char *s = getenv("CARVE_TEST_SCALE");
        if (s == nullptr || *s == '\0')
            return 1.0;
        char *end = nullptr;
        double v = strtod(s, &end);
        return (end != s && v > 0.0) ? v : 1.0;
    }();
    return scale;
}

// n scaled by CARVE_TEST_SCALE, never below lo.
inline size_t scaled(size_t n, size_t lo = 1) {
    double v = static_cast<double>(n) * test_scale();
    size_t r = static_cast<size_t>(v);
    return r < lo ? lo : r;
}

inline uint64_t checksum(const void *p, size_t n) {
    const unsigned char *b = static_cast<const unsigned char *>(p);
    uint64_t h = 0xcbf29ce484222325ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

inline void fill_random(void *p, size_t n, uint64_t seed) {
    unsigned char *b = static_cast<unsigned char *>(p);
    uint64_t x = seed * 0x9E3779B97F4A7C15ull | 1;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(b + i, &x, 8);
    }
    for (; i < n; i++)
        b[i] = static_cast<unsigned char>(x >> (8 * (i & 7)));
}

// The process's resident memory, from /proc/self/statm (0 if unreadable).
inline size_t rss_bytes() {
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == nullptr)
        return 0;
    unsigned long size = 0, resident = 0;
    int got = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    if (got != 2)
        return 0;
    return static_cast<size_t>(resident) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// Debug mode (./configure --enable-debug, CARVE_OPTIONS=debug=...) answers
// the requested size from malloc_usable_size and holds freed blocks in a
// quarantine: tests of the release layout, statistics, reuse and purging
// skip there.
inline bool debug_mode() {
    void *p = carve_malloc(17);
    const size_t u = carve_malloc_usable_size(p);
    carve_free(p);
    return u == 17;
}

constexpr size_t kMiB = size_t(1) << 20;

inline void sleep_ms(unsigned ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Sizes passed through a volatile so that the compiler neither folds the
// call nor warns about an impossible request (nor sees the bug a debug test
// makes on purpose).
inline size_t opaque(size_t n) {
    volatile size_t v = n;
    return v;
}

inline bool is_aligned(const void *p, size_t alignment) {
    return (reinterpret_cast<uintptr_t>(p) & (alignment - 1)) == 0;
}

// A position-dependent pattern (each 8-byte word differs), so that a block
// copied to a shifted place or copied in part is caught. Byte i of a block
// is byte i % 8 of pattern_word(i / 8, seed).
inline uint64_t pattern_word(size_t i, unsigned seed) {
    uint64_t x = (uint64_t{seed} << 32) ^ (i * 0x9E3779B97F4A7C15ull);
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    return x ^ (x >> 32);
}

inline void fill(void *p, size_t n, unsigned seed) {
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
inline size_t first_mismatch(const void *p, size_t n, unsigned seed) {
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
inline size_t first_nonzero(const void *p, size_t n) {
    const unsigned char *b = static_cast<const unsigned char *>(p);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        if (w != 0)
            break;
    }
    for (; i < n; i++)
        if (b[i] != 0)
            return i;
    return n;
}

// Sizes from tiny to large (carve's large blocks start above 256 KiB).
inline const std::vector<size_t> &assorted_sizes() {
    static const std::vector<size_t> sizes = {
        1,     2,     7,      8,      9,      15,     16,     17,      24,
        31,    32,    33,     48,     64,     100,    127,    128,     129,
        255,   256,   257,    500,    1000,   1024,   1025,   4095,    4096,
        4097,  5000,  12345,  32768,  40000,  65536,  65537,  100000,  131072,
        200000, 262143, 262144, 262145, 300000, 1 << 20, (1 << 20) + 1,
        (4 << 20) + 12345, 16 << 20};
    return sizes;
}

// Mostly small, some medium, a few large blocks.
inline size_t thread_size(std::mt19937_64 &rng) {
    uint64_t r = rng() % 1000;
    if (r < 950)
        return 1 + rng() % 1024;
    if (r < 998)
        return 1025 + rng() % (64 << 10);
    return 300000 + rng() % (1 << 20);  // large blocks
}

// A block filled with a random pattern, and its checksum.
struct Block {
    unsigned char *p;
    size_t size;
    uint64_t sum;
};

// Allocates n bytes, fills them from seed and records the checksum.
inline bool make_block(Block &b, size_t n, uint64_t seed) {
    b.p = static_cast<unsigned char *>(carve_malloc(n));
    b.size = n;
    if (b.p == nullptr)
        return false;
    fill_random(b.p, n, seed);
    b.sum = checksum(b.p, n);
    return true;
}

inline bool intact(const Block &b) { return checksum(b.p, b.size) == b.sum; }

// carve_stats_read at construction, and figures drawn from it.
struct Stats {
    carve_stats s;
    Stats() { carve_stats_read(&s); }
    size_t pages() const {
        size_t n = 0;
        for (size_t c = 0; c < s.class_count; c++)
            n += s.classes[c].pages;
        return n;
    }
    size_t live_blocks() const {
        size_t n = 0;
        for (size_t c = 0; c < s.class_count; c++)
            n += s.classes[c].live;
        return n;
    }
    // Slices touched and not purged, without the large blocks and the cache.
    size_t small_committed() const { return s.committed - s.large_mapped - s.large_cached; }
    // The class that serves a request of n bytes (the smallest that fits).
    size_t class_of(size_t n) const {
        for (size_t c = 0; c < s.class_count; c++)
            if (s.classes[c].size >= n)
                return c;
        return s.class_count;
    }
};

// Wall-clock budget of a loop whose cost depends on the machine.
class TimeBudget {
public:
    explicit TimeBudget(double seconds)
        : end_(std::chrono::steady_clock::now() +
               std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                   std::chrono::duration<double>(seconds))) {}
    bool spent() const { return std::chrono::steady_clock::now() >= end_; }

private:
    std::chrono::steady_clock::time_point end_;
};

// Runs fn in a child process (for what cannot be undone in this one: a
// seccomp filter, mlockall, a purger thread); returns its exit status,
// 1000 + n when a signal n killed it, -1 when fork failed.
inline int run_in_child(int (*fn)(), unsigned alarm_s = 20) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == -1)
        return -1;
    if (pid == 0) {
        alarm(alarm_s);
        _exit(fn());
    }
    int status = wait_child(pid);
    if (status == -1)
        return -1;
    if (WIFSIGNALED(status))
        return 1000 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

}  // namespace carve_test

// For tests of what debug mode changes on purpose.
#define CARVE_SKIP_IN_DEBUG_MODE()                                                        \
    do {                                                                                  \
        if (carve_test::debug_mode())                                                     \
            GTEST_SKIP() << "debug mode: release layout, statistics, reuse and purging only"; \
    } while (0)

#endif  // CARVE_TEST_UTIL_H
