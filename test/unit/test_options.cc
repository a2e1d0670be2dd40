// test_options.cc: CARVE_OPTIONS parsing (src/options.c).
//
// cv_options_set takes one "key=value" item, cv_options_parse the whole
// CARVE_OPTIONS variable. Each kind of value is tried with what it must
// accept and what it must refuse; a refused value leaves the option as it
// was and says so on stderr. The defaults are checked for the options that
// the environment did not set. Every test restores cv_options.

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "probe.h"
#include "unit.h"

namespace {

using carve_unit::SavedOptions;

probe_options current() {
    probe_options o{};
    probe_options_get(&o);
    return o;
}

bool set(const std::string &item) { return cv_options_set(item.c_str()); }

// Whether CARVE_OPTIONS names key (then its default is not what we see).
bool env_names(const char *key) {
    const char *env = getenv("CARVE_OPTIONS");
    if (env == nullptr)
        return false;
    const std::string s = std::string(",") + env, k = std::string(",") + key;
    const size_t at = s.find(k);
    return at != std::string::npos &&
           (at + k.size() == s.size() || s[at + k.size()] == '=' || s[at + k.size()] == ',');
}

class Options : public SavedOptions {};

TEST_F(Options, DefaultsAreTheDocumentedOnes) {
    const probe_options o = current();
    if (!env_names("stats")) {
        EXPECT_FALSE(o.stats_at_exit);
    }
    if (!env_names("purge")) {
        EXPECT_EQ(o.purge, unsigned{PROBE_PURGE_STAGED});
    }
    if (!env_names("decay_ms")) {
        EXPECT_EQ(o.decay_ms, 50u);
    }
    if (!env_names("lazy_ms")) {
        EXPECT_EQ(o.lazy_ms, 1000u);
    }
    if (!env_names("background")) {
        EXPECT_EQ(o.background, unsigned{PROBE_BACKGROUND_AUTO});
    }
    if (!env_names("cgroup")) {
        EXPECT_TRUE(o.cgroup);
    }
    if (!env_names("debug")) {
        EXPECT_EQ(o.debug, probe_config_debug() ? PROBE_DEBUG_ALL & ~PROBE_DEBUG_PAGE : 0u);
    }
    if (!env_names("quarantine")) {
        EXPECT_EQ(o.quarantine, size_t{16} << 20);
    }
    if (!env_names("thp")) {
        EXPECT_FALSE(o.thp);
    }
}

TEST_F(Options, BooleansTakeOneTrueYesOnAndZeroFalseNoOff) {
    for (const char *v : {"1", "true", "yes", "on"}) {
        ASSERT_TRUE(set("thp=0"));
        EXPECT_TRUE(set(std::string("thp=") + v)) << v;
        EXPECT_TRUE(current().thp) << v;
    }
    for (const char *v : {"0", "false", "no", "off"}) {
        ASSERT_TRUE(set("thp=1"));
        EXPECT_TRUE(set(std::string("thp=") + v)) << v;
        EXPECT_FALSE(current().thp) << v;
    }
    ASSERT_TRUE(set("stats=0"));
    EXPECT_TRUE(set("stats")) << "a key alone means =1";
    EXPECT_TRUE(current().stats_at_exit);
}

TEST_F(Options, BooleansRefuseAnythingElseAndKeepTheirValue) {
    ASSERT_TRUE(set("thp=1"));
    for (const char *v : {"", "2", "True", "YES", "tru", "onn", "-1", "1 "}) {
        EXPECT_FALSE(set(std::string("thp=") + v)) << "'" << v << "'";
        EXPECT_TRUE(current().thp) << "'" << v << "' changed the option";
    }
}

TEST_F(Options, DecayTakesMillisecondsUpToThirtyTwoBitsWithABinarySuffix) {
    EXPECT_TRUE(set("decay_ms=0"));
    EXPECT_EQ(current().decay_ms, 0u);
    EXPECT_TRUE(set("decay_ms=1234"));
    EXPECT_EQ(current().decay_ms, 1234u);
    EXPECT_TRUE(set("decay_ms=4294967295"));
    EXPECT_EQ(current().decay_ms, 4294967295u);
    EXPECT_TRUE(set("decay_ms=2k"));
    EXPECT_EQ(current().decay_ms, 2048u);
    EXPECT_TRUE(set("lazy_ms=3K"));
    EXPECT_EQ(current().lazy_ms, 3072u);
}

TEST_F(Options, DecayRefusesBadNumbersAndKeepsItsValue) {
    ASSERT_TRUE(set("decay_ms=77"));
    for (const char *v : {"", "-1", "12x", "k", "1kb", "1.5", " 5", "0x10", "4294967296", "4g",
                          "18446744073709551616"}) {
        EXPECT_FALSE(set(std::string("decay_ms=") + v)) << "'" << v << "'";
        EXPECT_EQ(current().decay_ms, 77u) << "'" << v << "' changed the option";
    }
}

TEST_F(Options, SizesTakeSuffixesAndRefuseWhatOverflows) {
    EXPECT_TRUE(set("quarantine=1g"));
    EXPECT_EQ(current().quarantine, size_t{1} << 30);
    EXPECT_TRUE(set("quarantine=5M"));
    EXPECT_EQ(current().quarantine, size_t{5} << 20);
    EXPECT_TRUE(set("quarantine=0"));
    EXPECT_EQ(current().quarantine, 0u);
    EXPECT_TRUE(set("quarantine=4611686018427387904"));
    EXPECT_EQ(current().quarantine, size_t{1} << 62);
    ASSERT_TRUE(set("quarantine=4096"));
    for (const char *v : {"18446744073709551616", "17179869184g", "1t", "m", ""}) {
        EXPECT_FALSE(set(std::string("quarantine=") + v)) << "'" << v << "'";
        EXPECT_EQ(current().quarantine, 4096u) << "'" << v << "' changed the option";
    }
}

TEST_F(Options, PurgeTakesItsFourWords) {
    const struct {
        const char *word;
        unsigned mode;
    } words[] = {{"staged", PROBE_PURGE_STAGED}, {"free", PROBE_PURGE_FREE},
                 {"dontneed", PROBE_PURGE_DONTNEED}, {"none", PROBE_PURGE_NONE}};
    for (const auto &w : words) {
        EXPECT_TRUE(set(std::string("purge=") + w.word)) << w.word;
        EXPECT_EQ(current().purge, w.mode) << w.word;
    }
    for (const char *v : {"", "Staged", "stage", "dontneeds", "0", "1"}) {
        EXPECT_FALSE(set(std::string("purge=") + v)) << "'" << v << "'";
        EXPECT_EQ(current().purge, unsigned{PROBE_PURGE_NONE}) << "'" << v << "'";
    }
}

TEST_F(Options, BackgroundTakesAutoOrABoolean) {
    EXPECT_TRUE(set("background=0"));
    EXPECT_EQ(current().background, unsigned{PROBE_BACKGROUND_OFF});
    EXPECT_TRUE(set("background=on"));
    EXPECT_EQ(current().background, unsigned{PROBE_BACKGROUND_ON});
    EXPECT_TRUE(set("background=auto"));
    EXPECT_EQ(current().background, unsigned{PROBE_BACKGROUND_AUTO});
    EXPECT_FALSE(set("background=2"));
    EXPECT_FALSE(set("background=Auto"));
    EXPECT_EQ(current().background, unsigned{PROBE_BACKGROUND_AUTO});
}

TEST_F(Options, DebugTakesCheckNamesJoinedByPlusBarOrSemicolon) {
    EXPECT_TRUE(set("debug=guards+canary"));
    EXPECT_EQ(current().debug, PROBE_DEBUG_GUARDS | PROBE_DEBUG_CANARY);
    EXPECT_TRUE(set("debug=junk|page;free"));
    EXPECT_EQ(current().debug, PROBE_DEBUG_JUNK | PROBE_DEBUG_PAGE | PROBE_DEBUG_FREE_CHECKS);
    EXPECT_TRUE(set("debug=quarantine"));
    EXPECT_EQ(current().debug, unsigned{PROBE_DEBUG_QUARANTINE});
    EXPECT_TRUE(set("debug=all"));
    EXPECT_EQ(current().debug, unsigned{PROBE_DEBUG_ALL});
    EXPECT_TRUE(set("debug=1")) << "1: every check but one block a page";
    EXPECT_EQ(current().debug, PROBE_DEBUG_ALL & ~PROBE_DEBUG_PAGE);
    EXPECT_TRUE(set("debug=none"));
    EXPECT_EQ(current().debug, 0u);
    ASSERT_TRUE(set("debug=junk"));
    for (const char *v : {"", "guards+bogus", "+guards", "guard", "Guards", "guards,canary"}) {
        EXPECT_FALSE(set(std::string("debug=") + v)) << "'" << v << "'";
        EXPECT_EQ(current().debug, unsigned{PROBE_DEBUG_JUNK}) << "'" << v << "' changed it";
    }
}

TEST_F(Options, UnknownKeysAndPrefixesOfKeysAreRefused) {
    const probe_options before = current();
    for (const char *item : {"decay=5", "decay_m=5", "decay_mss=5", "DECAY_MS=5", "=5", "",
                             "thp_=1", "nonsense"}) {
        EXPECT_FALSE(set(item)) << "'" << item << "'";
    }
    const probe_options after = current();
    EXPECT_EQ(after.decay_ms, before.decay_ms);
    EXPECT_EQ(after.thp, before.thp);
}

TEST_F(Options, ARefusedValueIsNamedOnStderr) {
    ::testing::internal::CaptureStderr();
    const bool ok = set("decay_ms=12x");
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_FALSE(ok);
    EXPECT_NE(err.find("bad value '12x' for option decay_ms"), std::string::npos) << err;

    // a long value is cut in the message, not past its buffer
    ::testing::internal::CaptureStderr();
    EXPECT_FALSE(set("lazy_ms=" + std::string(200, '9')));
    const std::string long_err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(long_err.find("'" + std::string(63, '9') + "' for option lazy_ms"), std::string::npos)
        << long_err;

    ::testing::internal::CaptureStderr();
    EXPECT_FALSE(set("decay=5"));
    const std::string unknown = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(unknown.find("unknown option 'decay'"), std::string::npos) << unknown;
}

// The whole variable: items split at commas, empty items skipped, and a bad
// item refused without stopping the ones after it.
TEST_F(Options, TheVariableIsReadItemByItem) {
    const char *old = getenv("CARVE_OPTIONS");
    const std::string saved = old ? old : "";
    ASSERT_TRUE(set("purge=free"));
    ASSERT_TRUE(set("thp=0"));
    setenv("CARVE_OPTIONS", "decay_ms=7,,bogus=1,purge=nope,lazy_ms=9,thp", 1);
    ::testing::internal::CaptureStderr();
    cv_options_parse();
    const std::string err = ::testing::internal::GetCapturedStderr();
    if (old)
        setenv("CARVE_OPTIONS", saved.c_str(), 1);
    else
        unsetenv("CARVE_OPTIONS");
    const probe_options o = current();
    EXPECT_EQ(o.decay_ms, 7u);
    EXPECT_EQ(o.lazy_ms, 9u) << "an item after the bad ones was not read";
    EXPECT_EQ(o.purge, unsigned{PROBE_PURGE_FREE}) << "a bad value changed the option";
    EXPECT_TRUE(o.thp);
    EXPECT_NE(err.find("unknown option 'bogus'"), std::string::npos) << err;
    EXPECT_NE(err.find("bad value 'nope' for option purge"), std::string::npos) << err;
}

}  // namespace
