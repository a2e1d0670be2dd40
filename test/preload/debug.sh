# debug.sh: debug mode under LD_PRELOAD. A small C program with a known heap
# bug (compiled here) must die with carve's line naming the bug when run
# with CARVE_OPTIONS=debug=all (or the checks that catch it), and carve must
# say nothing about it with debug mode off. A clean program must run
# cleanly in debug mode.
. "$(dirname "$0")/common.sh"
CC=${CC:-cc}
need_prog "$CC"
check_preload

cat >"$TMP/bugs.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* through a volatile, so that the compiler keeps the bug as written */
static void *volatile sink;
static size_t opaque(size_t n) { volatile size_t v = n; return v; }

int main(int argc, char **argv) {
    const char *bug = argc > 1 ? argv[1] : "none";
    char *p = malloc(opaque(40));
    sink = p;
    if (strcmp(bug, "overflow") == 0) {
        /* a classic: strcpy of a string as long as the buffer, plus NUL */
        char text[41];
        memset(text, 'x', 40);
        text[40] = '\0';
        strcpy((char *)sink, text);
        free(p);
    } else if (strcmp(bug, "double-free") == 0) {
        free(p);
        free((void *)sink);
    } else if (strcmp(bug, "use-after-free") == 0) {
        free(p);
        ((volatile char *)sink)[12] = 1;
        for (int i = 0; i < 100000; i++) {
            sink = malloc(opaque(40));
            free((void *)sink);
        }
    } else if (strcmp(bug, "large-overflow") == 0) {
        char *big = malloc(opaque(1 << 20));
        ((volatile char *)big)[opaque(1 << 20)] = 1;
        free(big);
    } else {
        /* a clean run: a little of everything */
        char *q = calloc(100, 3);
        q = realloc(q, 5000);
        q = realloc(q, 100);
        free(q);
        void *a = aligned_alloc(4096, 8192);
        free(a);
        free(p);
        puts("clean");
    }
    return 0;
}
C
"$CC" -O1 -o "$TMP/bugs" "$TMP/bugs.c" 2>"$TMP/cc.err" || fail "cannot compile the test program: $(cat "$TMP/cc.err")"

# run OPTIONS BUG: stderr in $TMP/err, exit status in $status
run() {
    CARVE_OPTIONS="$1" LD_PRELOAD="$CARVE_LIB" $TIMEOUT "$TMP/bugs" "$2" >"$TMP/out" 2>"$TMP/err"
    status=$?
}

# expect_report OPTIONS BUG REGEX: dies with the carve line
expect_report() {
    run "$1" "$2"
    [ "$status" -ne 0 ] || fail "$2 with CARVE_OPTIONS=$1: exit status 0, no report"
    grep -Eq "$3" "$TMP/err" ||
        fail "$2 with CARVE_OPTIONS=$1: no line matching '$3' on stderr: $(head -n 5 "$TMP/err")"
    msg "$2 with $1: $(head -n 1 "$TMP/err")"
}

# expect_no_report BUG: debug mode off (debug=none: an --enable-debug build
# has it on by default), carve reports no debug finding (the program may or
# may not crash)
expect_no_report() {
    run debug=none "$1"
    if grep -Eq 'carve: (heap overflow|use after free|double free)' "$TMP/err"; then
        fail "$1 without debug mode: carve reported a debug finding: $(head -n 1 "$TMP/err")"
    fi
    msg "$1 without debug mode: exit status $status, no debug report"
}

addr='0x[0-9a-f]+'
run debug=all clean
[ "$status" -eq 0 ] || fail "a clean program died in debug mode: $(head -n 5 "$TMP/err")"
grep -q '^clean$' "$TMP/out" || fail "a clean program printed $(cat "$TMP/out") in debug mode"
[ ! -s "$TMP/err" ] || fail "a clean program made carve print in debug mode: $(head -n 3 "$TMP/err")"
msg "clean program: no report in debug mode"

expect_report debug=all overflow "^carve: heap overflow \\(canary broken\\) of $addr \\(requested 40 bytes, own mapping\\) in free\\(\\)$"
expect_report debug=guards+canary+junk+quarantine+free overflow \
    "^carve: heap overflow \\(canary broken\\) of $addr \\(requested 40 bytes, class [0-9]+ bytes\\) in free\\(\\)$"
expect_report debug=all double-free "^carve: double free of $addr \\(requested 40 bytes, own mapping\\) in free\\(\\)$"
expect_report debug=canary+free double-free "^carve: double free of $addr \\(class [0-9]+ bytes\\) in free\\(\\)$"
expect_report debug=junk+free use-after-free \
    "^carve: use after free \\(poison broken\\) of $addr \\(class [0-9]+ bytes, written at offset 12\\) in (malloc|free|exit)\\(\\)$"
grep -q '^carve: backtrace' "$TMP/err" || fail "no backtrace after the report: $(cat "$TMP/err")"

run debug=guards large-overflow
[ "$status" -eq 139 ] || [ "$status" -eq $((128 + 11)) ] ||
    fail "large-overflow with debug=guards: exit status $status, not SIGSEGV"
grep -Eq "^carve: heap overflow \\(guard page hit\\) of $addr \\(requested 1048576 bytes, own mapping; 0 bytes past its end\\) at the faulting instruction$" "$TMP/err" ||
    fail "large-overflow with debug=guards: no guard page line: $(head -n 3 "$TMP/err")"
msg "large-overflow with debug=guards: SIGSEGV on the guard page: $(head -n 1 "$TMP/err")"

run debug=all use-after-free
[ "$status" -eq 139 ] || fail "use-after-free with debug=all: exit status $status, not SIGSEGV"
grep -Eq "^carve: use after free of $addr \\(requested 40 bytes, own mapping; offset 12\\) at the faulting instruction$" "$TMP/err" ||
    fail "use-after-free with debug=all: no line naming it: $(head -n 3 "$TMP/err")"
msg "use-after-free with debug=all: $(head -n 1 "$TMP/err")"

for bug in overflow use-after-free large-overflow; do
    expect_no_report "$bug"
done
pass
