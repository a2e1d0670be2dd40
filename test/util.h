// util.h: helpers shared by the test files: the CARVE_TEST_SCALE knob
// (sanitizer runs scale heavy tests down), and a pattern fill with a
// checksum to detect any byte a block lost, RSS, and the debug-mode skip.
#ifndef CARVE_TEST_UTIL_H
#define CARVE_TEST_UTIL_H

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cerrno>
#include <csignal>
#include <string>

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

}  // namespace carve_test

// For tests of what debug mode changes on purpose.
#define CARVE_SKIP_IN_DEBUG_MODE()                                                        \
    do {                                                                                  \
        if (carve_test::debug_mode())                                                     \
            GTEST_SKIP() << "debug mode: release layout, statistics, reuse and purging only"; \
    } while (0)

#endif  // CARVE_TEST_UTIL_H
