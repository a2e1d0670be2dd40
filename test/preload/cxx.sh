# cxx.sh: a C++ program with carve preloaded gets carve's operators new and
# delete, every standard form (test/progs/cxx_ops.cc says what it checks).
. "$(dirname "$0")/common.sh"
CXX=${CXX:-c++}
need_prog "$CXX"
require_lib

src="${CARVE_SRCDIR:-.}/test/progs/cxx_ops.cc"
"$CXX" -std=c++17 -O2 -pthread -o "$TMP/cxx_ops" "$src" -ldl >"$TMP/build.log" 2>&1 || {
    cat "$TMP/build.log" >&2
    fail "$CXX could not build $src"
}
# Without carve, the operators are libstdc++'s: the program must say so,
# which shows that its check can fail.
"$TMP/cxx_ops" >"$TMP/plain.out" 2>&1
grep -q "^FAIL: carve's operator new(size_t)$" "$TMP/plain.out" ||
    fail "without carve the program did not see another library's operator new"
LD_PRELOAD="$CARVE_LIB" "$TMP/cxx_ops" >"$TMP/carve.out" 2>&1 || {
    grep -v '^ok' "$TMP/carve.out" >&2
    fail "with carve preloaded: $(grep -c '^FAIL' "$TMP/carve.out") checks failed"
}
msg "$(grep -c '^ok:' "$TMP/carve.out") checks passed with carve preloaded"
pass
