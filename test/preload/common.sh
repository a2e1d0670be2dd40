# common.sh: helpers for the preload tests, sourced by each of them.
#
# The tests run real programs twice, once plain and once with carve in
# LD_PRELOAD, and compare what they print. They install nothing: a missing
# program is a skip (exit 77). Environment (set by make check):
#   CARVE_LIB       absolute path of the built libcarve.so
#   CARVE_BUILDDIR  top build directory
#   CARVE_SRCDIR    top source directory

TEST_NAME=$(basename "$0" .sh)

msg() {
    printf '%s: %s\n' "$TEST_NAME" "$*"
}

fail() {
    printf '%s: FAIL: %s\n' "$TEST_NAME" "$*" >&2
    exit 1
}

skip() {
    printf '%s: SKIP: %s\n' "$TEST_NAME" "$*"
    exit 77
}

pass() {
    printf '%s: PASS%s\n' "$TEST_NAME" "${1:+: $1}"
    exit 0
}

# The library under test must exist; everything else depends on it.
require_lib() {
    [ -n "${CARVE_LIB:-}" ] || fail "CARVE_LIB is not set (run through make check)"
    [ -f "$CARVE_LIB" ] || fail "CARVE_LIB=$CARVE_LIB does not exist (build first)"
}

# need_prog NAME...: skip the test when one of the programs is missing.
need_prog() {
    for prog in "$@"; do
        command -v "$prog" >/dev/null 2>&1 || skip "$prog not found (not installed)"
    done
}

# A private temporary directory, removed on exit (KEEP_TMP=1 keeps it).
TMP=$(mktemp -d "${TMPDIR:-/tmp}/carve-$TEST_NAME.XXXXXX") || fail "mktemp failed"
cleanup() {
    if [ -n "${KEEP_TMP:-}" ]; then
        msg "keeping $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# A hung program must not hang make check.
if command -v timeout >/dev/null 2>&1; then
    TIMEOUT="timeout ${CARVE_TEST_TIMEOUT:-600}"
else
    TIMEOUT=
fi

# with_carve CMD...: run CMD with carve preloaded (ahead of any other preload).
with_carve() {
    LD_PRELOAD="$CARVE_LIB${LD_PRELOAD:+ $LD_PRELOAD}" "$@"
}

# Checks that preloading works at all: the dynamic loader maps carve into a
# preloaded process and says nothing about it on stderr.
check_preload() {
    with_carve cat /proc/self/maps >"$TMP/maps.txt" 2>"$TMP/maps.err" ||
        fail "cat /proc/self/maps with carve preloaded failed: $(cat "$TMP/maps.err")"
    grep -q "$(basename "$CARVE_LIB")" "$TMP/maps.txt" ||
        fail "$CARVE_LIB is not mapped into a preloaded process: $(cat "$TMP/maps.err")"
    if grep -q 'ld\.so' "$TMP/maps.err"; then
        fail "the dynamic loader complained: $(cat "$TMP/maps.err")"
    fi
}

# run_both NAME CMD...: runs CMD plain and with carve preloaded, in the current
# directory; stdout goes to $TMP/NAME.plain and $TMP/NAME.carve, stderr to
# the same with .err. The variable CARVE_RUN (plain or carve) is exported to
# CMD so that it can keep its files apart. Fails when the exit statuses or
# the outputs differ, or when the preloaded run printed a loader error.
run_both() {
    name=$1
    shift
    t0=$(date +%s%N)
    CARVE_RUN=plain $TIMEOUT "$@" >"$TMP/$name.plain" 2>"$TMP/$name.plain.err"
    plain_status=$?
    t1=$(date +%s%N)
    CARVE_RUN=carve LD_PRELOAD="$CARVE_LIB${LD_PRELOAD:+ $LD_PRELOAD}" \
        $TIMEOUT "$@" >"$TMP/$name.carve" 2>"$TMP/$name.carve.err"
    carve_status=$?
    t2=$(date +%s%N)
    msg "$name: $* (wall time plain $(( (t1 - t0) / 1000000 )) ms, carve $(( (t2 - t1) / 1000000 )) ms)"
    msg "$name: exit status plain $plain_status, carve $carve_status;" \
        "output $(wc -c <"$TMP/$name.plain") / $(wc -c <"$TMP/$name.carve") bytes," \
        "cksum $(cksum <"$TMP/$name.plain" | cut -d' ' -f1) / $(cksum <"$TMP/$name.carve" | cut -d' ' -f1)"
    if grep -q 'ld\.so.*\(cannot be preloaded\|ERROR\)' "$TMP/$name.carve.err"; then
        fail "$name: carve was not preloaded: $(head -n 3 "$TMP/$name.carve.err")"
    fi
    if [ "$carve_status" -ne "$plain_status" ]; then
        msg "$name: stderr of the preloaded run:"
        head -n 20 "$TMP/$name.carve.err" >&2
        fail "$name: exit status $carve_status with carve, $plain_status without"
    fi
    if ! cmp -s "$TMP/$name.plain" "$TMP/$name.carve"; then
        msg "$name: first differences (plain <, carve >):"
        diff "$TMP/$name.plain" "$TMP/$name.carve" | head -n 20 >&2
        fail "$name: output differs with carve preloaded"
    fi
    msg "$name: same output with and without carve"
    return 0
}

# same_files A B WHAT: cmp two files that must be identical.
same_files() {
    [ -f "$1" ] || fail "$3: $1 was not produced"
    [ -f "$2" ] || fail "$3: $2 was not produced"
    if cmp "$1" "$2" >"$TMP/cmp.out" 2>&1; then
        msg "$3: identical ($(wc -c <"$1") bytes, cksum $(cksum <"$1" | cut -d' ' -f1))"
    else
        fail "$3: files differ: $(cat "$TMP/cmp.out")"
    fi
}

require_lib
