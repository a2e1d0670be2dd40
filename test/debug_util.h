// debug_util.h: helpers of the debug-mode tests (test_debug_detect.cc,
// test_debug_mode.cc): writes the compiler cannot see through, debug mode
// switched on inside a death-test child, the line carve must print, and a
// fixture for the "threadsafe" death-test style.
//
// Debug mode is read once, when carve starts, and applies to the whole
// process, so each test switches it on inside a death-test child: the
// "threadsafe" style re-executes the test binary for the child, which then
// starts carve afresh; enable() sets CARVE_OPTIONS and calls carve's test
// hook cv_debug_reinit(), which reads the options again (and drops the
// calling thread's heap, should carve have started already). The parent,
// which runs every other suite, never enters debug mode.
#ifndef CARVE_TEST_DEBUG_UTIL_H
#define CARVE_TEST_DEBUG_UTIL_H

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <carve.h>

#include <gtest/gtest.h>

#include <unistd.h>

#include "util.h"

// carve's test hook (src/debug.c): hidden, reachable in the static link.
extern "C" void cv_debug_reinit(void);

// Inside a child (no gtest assertion works there): report and exit 1.
#define CHILD_CHECK(cond)                                                          \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__);      \
            _exit(1);                                                              \
        }                                                                          \
    } while (0)

namespace carve_test {

// Offsets through a volatile (util.h's opaque), and pointers too, so that
// the compiler neither sees the bug (and warns, or drops the access) nor
// folds the call.
inline void *opaque_ptr(void *p) {
    void *volatile v = p;
    return v;
}

inline void poke(void *p, size_t offset, char value) {
    static_cast<volatile char *>(opaque_ptr(p))[opaque(offset)] = value;
}

// Inverts the byte at p: a write that surely changes it (a fixed value
// matches what is there one time in 256).
inline void flip(void *p) {
    volatile char *c = static_cast<volatile char *>(opaque_ptr(p));
    *c = static_cast<char>(~*c);
}

// The checks of --enable-debug builds (all but page).
const char kDefault[] = "debug=guards+canary+junk+quarantine+free";

inline void enable(const char *options) {
    setenv("CARVE_OPTIONS", options, 1);
    cv_debug_reinit();
}

// Sanitizer runtimes catch SIGSEGV themselves and exit with a code of their
// own; the guard-page tests want the plain signal. Children inherit this.
inline void let_segv_through() {
    for (const char *var : {"ASAN_OPTIONS", "TSAN_OPTIONS", "UBSAN_OPTIONS"}) {
        const char *old = getenv(var);
        std::string v = old && *old ? std::string(old) + ":handle_segv=0" : "handle_segv=0";
        setenv(var, v.c_str(), 1);
    }
}

// Death tests in the "threadsafe" style (see above).
class ThreadsafeDeathTest : public ::testing::Test {
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

// The first line of a report, as a regular expression: what befell the
// block at an address, the detail in brackets, and the call that found it.
inline std::string line(const std::string &what, const std::string &detail, const std::string &func) {
    return "carve: " + what + " of " + kAddr + " \\(" + detail + "\\) in " + func + "\\(\\)";
}

}  // namespace carve_test

#endif  // CARVE_TEST_DEBUG_UTIL_H
