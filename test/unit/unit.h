// unit.h: helpers of the unit tests (test/unit/carve_unit): options saved
// and restored around each test, and the mock clock.
//
// The unit tests call carve's internals directly (probe.h), in a process
// whose malloc is the C library's: carve's state (the arena, the large
// cache, the options, the statistics) belongs to these tests alone, but it
// is one state for all of them, so each test restores the options it
// changed and measures the statistics as differences.
#ifndef CARVE_UNIT_H
#define CARVE_UNIT_H

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <gtest/gtest.h>

#include "probe.h"

namespace carve_unit {

constexpr size_t kSlice = PROBE_SLICE_SIZE;
constexpr size_t kMiB = size_t{1} << 20;

// Every test leaves cv_options as it found them.
class SavedOptions : public ::testing::Test {
protected:
    void SetUp() override { probe_options_get(&saved_); }
    void TearDown() override { probe_options_put(&saved_); }

private:
    probe_options saved_{};
};

// The mock clock (cv_os_clock_mock). Each test starts a fresh stretch of
// time, well past the real clock and past every time an earlier test set:
// slices freed by an earlier test are then older than any decay, and the
// purge pass's own rate limit (half a decay period since the last pass)
// never holds back the first pass of a test.
class MockClock {
public:
    // Starts the stretch; returns its first millisecond.
    uint64_t start() {
        probe_clock_set(0);
        uint64_t real = cv_os_now_ms();
        now_ = (real > last() ? real : last()) + 1000000;
        set(now_);
        return now_;
    }
    void set(uint64_t ms) {
        now_ = ms;
        if (ms > last())
            last() = ms;
        probe_clock_set(ms);
    }
    uint64_t now() const { return now_; }
    // Back to the real clock.
    static void stop() { probe_clock_set(0); }

private:
    // the latest time any test set
    static uint64_t &last() {
        static uint64_t ms = 0;
        return ms;
    }
    uint64_t now_ = 0;
};

}  // namespace carve_unit

#endif  // CARVE_UNIT_H
