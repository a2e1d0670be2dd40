// test_cgroup.cc: the cgroup memory limit (src/cgroup.c).
//
// cv_cgroup_parse_limit reads what a memory.max, memory.high or (v1)
// memory.limit_in_bytes file holds; cv_cgroup_limit_under takes the text of
// /proc/self/cgroup and the directory where the hierarchies are mounted,
// and returns the tightest limit of the process's cgroup and its
// ancestors. The tests build such trees in a temporary directory: cgroup
// v2, the hybrid layout (v2 under unified/), v1's memory controller, and
// files above the mount point, which must not be read.

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <sys/stat.h>
#include <unistd.h>

#include "probe.h"
#include "unit.h"

namespace {

constexpr size_t kGiB = size_t{1} << 30;

TEST(CgroupParse, ReadsTheNumberOfBytes) {
    EXPECT_EQ(cv_cgroup_parse_limit("1073741824\n"), kGiB);
    EXPECT_EQ(cv_cgroup_parse_limit("4096"), 4096u);
    EXPECT_EQ(cv_cgroup_parse_limit("1152921504606846975\n"), (size_t{1} << 60) - 1);
}

TEST(CgroupParse, MaxMeansNoLimit) {
    EXPECT_EQ(cv_cgroup_parse_limit("max\n"), 0u);
    EXPECT_EQ(cv_cgroup_parse_limit("max"), 0u);
}

// v1 has no "max": it writes the largest page-rounded number instead.
TEST(CgroupParse, VersionOnesHugeNumberMeansNoLimit) {
    EXPECT_EQ(cv_cgroup_parse_limit("9223372036854771712\n"), 0u);
    EXPECT_EQ(cv_cgroup_parse_limit("1152921504606846976\n"), 0u) << "2^60 and up";
}

TEST(CgroupParse, WhatIsNotANumberIsNoLimit) {
    EXPECT_EQ(cv_cgroup_parse_limit(""), 0u);
    EXPECT_EQ(cv_cgroup_parse_limit("\n"), 0u);
    EXPECT_EQ(cv_cgroup_parse_limit(" 4096"), 0u);
    EXPECT_EQ(cv_cgroup_parse_limit("-4096"), 0u);
    EXPECT_EQ(cv_cgroup_parse_limit("99999999999999999999999\n"), 0u) << "past 64 bits";
}

// A directory tree of its own, removed at the end of the test.
class CgroupTree : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/carve-unit-cgroup.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        top_ = tmpl;
        root_ = top_ + "/fs";
        ASSERT_EQ(mkdir(root_.c_str(), 0700), 0);
    }
    void TearDown() override {
        if (!top_.empty()) {
            ASSERT_EQ(system(("rm -rf '" + top_ + "'").c_str()), 0);
        }
    }
    // Writes text to root/path, making the directories on the way.
    void put(const std::string &path, const std::string &text) {
        std::string dir = root_;
        for (size_t at = 0; (at = path.find('/', at + 1)) != std::string::npos;) {
            dir = root_ + "/" + path.substr(0, at);
            mkdir(dir.c_str(), 0700);
        }
        FILE *f = fopen((root_ + "/" + path).c_str(), "w");
        ASSERT_NE(f, nullptr) << path;
        fputs(text.c_str(), f);
        fclose(f);
    }
    size_t limit(const std::string &self_cgroup) {
        return cv_cgroup_limit_under(self_cgroup.c_str(), root_.c_str());
    }
    std::string top_, root_;
};

TEST_F(CgroupTree, VersionTwoTakesTheTightestLimitUpTheTree) {
    put("a/b/c/memory.max", "max\n");
    put("a/b/memory.max", std::to_string(3 * kGiB) + "\n");
    put("a/memory.max", std::to_string(2 * kGiB) + "\n");
    put("a/b/c/memory.high", std::to_string(5 * kGiB) + "\n");
    EXPECT_EQ(limit("0::/a/b/c\n"), 2 * kGiB);
    put("a/b/c/memory.high", std::to_string(kGiB) + "\n");
    EXPECT_EQ(limit("0::/a/b/c\n"), kGiB) << "memory.high is a limit too";
}

TEST_F(CgroupTree, NoLimitAnywhereIsZero) {
    put("a/b/memory.max", "max\n");
    put("a/memory.max", "max\n");
    EXPECT_EQ(limit("0::/a/b\n"), 0u);
    EXPECT_EQ(limit("0::/x/y\n"), 0u) << "a cgroup without files";
    EXPECT_EQ(limit(""), 0u);
}

TEST_F(CgroupTree, TheRootCgroupAndATrailingSlashAreRead) {
    put("memory.max", std::to_string(7 * kGiB) + "\n");
    EXPECT_EQ(limit("0::/\n"), 7 * kGiB);
    put("a/memory.max", std::to_string(kGiB) + "\n");
    EXPECT_EQ(limit("0::/a/\n"), kGiB);
    EXPECT_EQ(limit("0::/a"), kGiB) << "the last line without its newline";
}

// The walk goes up to the mount point and no further.
TEST_F(CgroupTree, NothingAboveTheMountPointIsRead) {
    FILE *f = fopen((top_ + "/memory.max").c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs("4096\n", f);
    fclose(f);
    put("a/memory.max", "max\n");
    EXPECT_EQ(limit("0::/a\n"), 0u);
}

TEST_F(CgroupTree, HybridLayoutsHaveVersionTwoUnderUnified) {
    put("unified/svc/memory.max", std::to_string(3 * kGiB) + "\n");
    EXPECT_EQ(limit("0::/svc\n"), 3 * kGiB);
}

TEST_F(CgroupTree, VersionOneReadsTheMemoryControllersHierarchy) {
    put("memory/job/memory.limit_in_bytes", std::to_string(6 * kGiB) + "\n");
    put("memory/memory.limit_in_bytes", "9223372036854771712\n");
    EXPECT_EQ(limit("4:memory:/job\n"), 6 * kGiB);
    EXPECT_EQ(limit("7:cpu,cpuacct:/other\n4:cpuset,memory,pids:/job\n"), 6 * kGiB)
        << "memory among other controllers";
    // a v1 line's files are not v2's, and the reverse
    put("job/memory.max", std::to_string(kGiB) + "\n");
    EXPECT_EQ(limit("4:memory:/job\n"), 6 * kGiB);
}

TEST_F(CgroupTree, OnlyTheWholeWordMemoryNamesTheController) {
    put("memory/job/memory.limit_in_bytes", std::to_string(kGiB) + "\n");
    EXPECT_EQ(limit("4:memoryx:/job\n"), 0u);
    EXPECT_EQ(limit("4:xmemory:/job\n"), 0u);
    EXPECT_EQ(limit("4:cpu,memory_cg:/job\n"), 0u);
    EXPECT_EQ(limit("4:cpu,memory:/job\n"), kGiB);
}

TEST_F(CgroupTree, AProcessInBothHierarchiesGetsTheTighterLimit) {
    put("memory/job/memory.limit_in_bytes", std::to_string(6 * kGiB) + "\n");
    put("job/memory.max", std::to_string(4 * kGiB) + "\n");
    EXPECT_EQ(limit("4:memory:/job\n0::/job\n"), 4 * kGiB);
    put("job/memory.max", std::to_string(8 * kGiB) + "\n");
    EXPECT_EQ(limit("4:memory:/job\n0::/job\n"), 6 * kGiB);
}

TEST_F(CgroupTree, ALineWithoutTwoColonsIsSkipped) {
    put("job/memory.max", std::to_string(kGiB) + "\n");
    EXPECT_EQ(limit("garbage\n0::/job\n"), kGiB);
    EXPECT_EQ(limit("0:/job\n"), 0u);
}

}  // namespace
