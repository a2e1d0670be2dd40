// test_msg.cc: formatting without malloc (cv_msg_format, src/msg.c).
//
// carve formats its error lines and statistics itself (stdio may call
// malloc). cv_msg_format knows %s %d %u %zu %zx %p %c and %%, with a width
// and '-'. Where the C library agrees (everything but %p, and the unknown
// conversions), each format is checked against snprintf for every buffer
// size from 1 byte to past the whole text: the same bytes, the same
// truncation, a NUL always, nothing written past the buffer, and the
// length written returned.

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "probe.h"
#include "unit.h"

namespace {

constexpr size_t kBuf = 96;
constexpr char kUntouched = 0x7f;

// Formats with both, into every buffer size up to the whole text and one
// more, and compares all kBuf bytes of the two buffers.
#define EXPECT_LIKE_SNPRINTF(fmt, ...)                                                   \
    do {                                                                                 \
        char full[kBuf];                                                                 \
        const int len = snprintf(full, sizeof full, fmt, __VA_ARGS__);                   \
        ASSERT_GE(len, 0);                                                               \
        ASSERT_LT(static_cast<size_t>(len), kBuf - 1);                                   \
        for (size_t cap = 1; cap <= static_cast<size_t>(len) + 1; cap++) {              \
            char ours[kBuf], libc[kBuf];                                                 \
            memset(ours, kUntouched, sizeof ours);                                       \
            memset(libc, kUntouched, sizeof libc);                                       \
            const size_t n = cv_msg_format(ours, cap, fmt, __VA_ARGS__);                 \
            snprintf(libc, cap, fmt, __VA_ARGS__);                                       \
            EXPECT_EQ(std::string(ours, kBuf), std::string(libc, kBuf))                  \
                << "format \"" << fmt << "\", buffer of " << cap << ": \"" << ours       \
                << "\" where snprintf wrote \"" << libc << "\"";                         \
            EXPECT_EQ(n, std::min(static_cast<size_t>(len), cap - 1))                    \
                << "format \"" << fmt << "\", buffer of " << cap;                        \
        }                                                                                \
    } while (0)

TEST(MsgFormat, Strings) {
    EXPECT_LIKE_SNPRINTF("%s", "carve");
    EXPECT_LIKE_SNPRINTF("[%s] [%s]", "", "two words");
    EXPECT_LIKE_SNPRINTF("no conversion at all%s", "");
}

TEST(MsgFormat, SignedAndUnsignedIntegers) {
    EXPECT_LIKE_SNPRINTF("%d %d %d", 0, 42, -42);
    EXPECT_LIKE_SNPRINTF("%d|%d", INT_MAX, INT_MIN);
    EXPECT_LIKE_SNPRINTF("%u %u", 0u, UINT_MAX);
}

TEST(MsgFormat, SizesInDecimalAndHex) {
    EXPECT_LIKE_SNPRINTF("%zu %zu", size_t{0}, SIZE_MAX);
    EXPECT_LIKE_SNPRINTF("%zx %zx %zx", size_t{0}, size_t{0xdeadbeef}, SIZE_MAX);
    EXPECT_LIKE_SNPRINTF("%zu bytes in %u chunks", size_t{4194304}, 3u);
}

TEST(MsgFormat, CharactersAndPercent) {
    EXPECT_LIKE_SNPRINTF("%c%c%c", 'a', '-', 'z');
    EXPECT_LIKE_SNPRINTF("100%% of %s", "it");
}

TEST(MsgFormat, WidthsPadOnTheLeftAndWithMinusOnTheRight) {
    EXPECT_LIKE_SNPRINTF("[%8s]", "abc");
    EXPECT_LIKE_SNPRINTF("[%-8s]", "abc");
    EXPECT_LIKE_SNPRINTF("[%6d] [%-6d]", -42, 17);
    EXPECT_LIKE_SNPRINTF("[%12zu] [%-5u]", size_t{123456}, 9u);
    EXPECT_LIKE_SNPRINTF("[%3s]", "longer than the width");
    EXPECT_LIKE_SNPRINTF("%-10s%10zu", "class 8", size_t{65536});
}

// %p is "0x" and lower-case hex, also for NULL (glibc writes "(nil)").
TEST(MsgFormat, PointersInHex) {
    char buf[64];
    int x;
    char want[64];
    snprintf(want, sizeof want, "at 0x%jx.", static_cast<uintmax_t>(reinterpret_cast<uintptr_t>(&x)));
    EXPECT_EQ(cv_msg_format(buf, sizeof buf, "at %p.", static_cast<void *>(&x)), strlen(want));
    EXPECT_STREQ(buf, want);
    cv_msg_format(buf, sizeof buf, "%p", static_cast<void *>(nullptr));
    EXPECT_STREQ(buf, "0x0");
    cv_msg_format(buf, sizeof buf, "%p", reinterpret_cast<void *>(uintptr_t{0xabcdef0}));
    EXPECT_STREQ(buf, "0xabcdef0");
}

TEST(MsgFormat, ANullStringPrintsNull) {
    char buf[32];
    const char *volatile none = nullptr;  // hidden from -Wformat-overflow
    cv_msg_format(buf, sizeof buf, "<%s>", none);
    EXPECT_STREQ(buf, "<(null)>");
}

// A conversion it does not know is a '?', and takes no argument.
TEST(MsgFormat, AnUnknownConversionIsAQuestionMark) {
    char buf[32];
    const char *fmt = "a%qb%s";  // not a literal: the compiler would refuse %q
    cv_msg_format(buf, sizeof buf, fmt, "c");
    EXPECT_STREQ(buf, "a?bc");
}

TEST(MsgFormat, ABufferOfOneByteHoldsTheNulAlone) {
    char buf[4] = {'x', 'x', 'x', 'x'};
    EXPECT_EQ(cv_msg_format(buf, 1, "%s", "anything"), 0u);
    EXPECT_EQ(buf[0], '\0');
    EXPECT_EQ(buf[1], 'x');
}

TEST(MsgFormat, ABufferOfNoBytesIsLeftAlone) {
    char buf[2] = {'x', 'x'};
    cv_msg_format(buf, 0, "%s", "anything");
    EXPECT_EQ(buf[0], 'x');
    EXPECT_EQ(buf[1], 'x');
}

// Long output: the same text as snprintf, cut at the buffer's end.
TEST(MsgFormat, OutputLongerThanTheBufferIsCutAndTerminated) {
    const std::string word(300, 'w');
    char ours[128], libc[128];
    memset(ours, kUntouched, sizeof ours);
    const size_t n = cv_msg_format(ours, 100, "%s|%zu|%s", word.c_str(), SIZE_MAX, "end");
    snprintf(libc, 100, "%s|%zu|%s", word.c_str(), SIZE_MAX, "end");
    EXPECT_EQ(n, 99u);
    EXPECT_STREQ(ours, libc);
    for (size_t i = 100; i < sizeof ours; i++)
        ASSERT_EQ(ours[i], kUntouched) << "byte " << i << " written, past a buffer of 100";
}

}  // namespace
