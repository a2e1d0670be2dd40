#!/bin/sh
# test/fuzz/fuzz.sh: runs the libFuzzer harness (test/fuzz/fuzz_api.c) for a
# bounded time, with carve's defaults and then in debug mode. Built and run
# by `make check` after `configure --enable-fuzz` (test/run's "fuzz" build).
#
#   CARVE_FUZZ_SECONDS  time for the default-options run (default 45 s; the
#                       debug-mode run gets half of it)
#
# A failure leaves the input as fuzz-crash-* in the build directory, and the
# log ends with the calls that led to it; replay it with
#   test/fuzz_api fuzz-crash-<sha1>
# (some failures need the allocator state that earlier inputs left: the
# log's call trace then says what happened).
set -u
bin="${CARVE_BUILDDIR:-.}/test/fuzz_api"
secs="${CARVE_FUZZ_SECONDS:-45}"
[ -x "$bin" ] || { echo "fuzz.sh: $bin is missing (configure --enable-fuzz)"; exit 99; }
corpus=$(mktemp -d) || exit 99
trap 'rm -rf "$corpus" "$corpus.log"' EXIT

run() { # name, seconds, seed, environment...
    name="$1" t="$2" seed="$3"
    shift 3
    echo "== fuzz ($name): $t s"
    env "$@" "$bin" -max_total_time="$t" -seed="$seed" -timeout=60 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="${CARVE_BUILDDIR:-.}/fuzz-" "$corpus" \
        >"$corpus.log" 2>&1
    rc=$?
    # libFuzzer's progress lines and dictionary say little in a test log
    grep -v -e '^#[0-9]' -e '^INFO:' -e 'NEW_FUNC' -e '^"' -e '^######' "$corpus.log"
    rm -f "$corpus.log"
    if [ "$rc" -ne 0 ]; then
        echo "fuzz.sh: $name: failed (exit $rc)"
        return 1
    fi
}

rm -f "${CARVE_BUILDDIR:-.}"/fuzz-*
run defaults "$secs" 1 CARVE_OPTIONS= || exit 1
run debug $((secs / 2)) 2 CARVE_OPTIONS=debug=all || exit 1
echo "fuzz.sh: no failure"
