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

# A program that replaces only the basic new and delete: every derived form
# it uses reaches them, with carve preloaded as without it.
rsrc="${CARVE_SRCDIR:-.}/test/progs/cxx_replace.cc"
"$CXX" -std=c++17 -O2 -o "$TMP/cxx_replace" "$rsrc" >"$TMP/build2.log" 2>&1 || {
    cat "$TMP/build2.log" >&2
    fail "$CXX could not build $rsrc"
}
"$TMP/cxx_replace" >"$TMP/r.out" 2>&1 || fail "without carve: $(cat "$TMP/r.out")"
LD_PRELOAD="$CARVE_LIB" "$TMP/cxx_replace" >"$TMP/r.out" 2>&1 ||
    fail "a program's own basic operators with carve preloaded: $(head -n 3 "$TMP/r.out")"
msg "a program that replaces the basic new and delete keeps them for every form"

# Debug mode: the same checks pass (no pair of the program is taken for a
# mismatch), and each mismatched pair stops with its line; release builds
# let the pairs through (they cost nothing to check only in debug mode).
debug="debug=guards+canary+junk+quarantine+free"
CARVE_OPTIONS=$debug LD_PRELOAD="$CARVE_LIB" "$TMP/cxx_ops" >"$TMP/debug.out" 2>&1 || {
    grep -v '^ok' "$TMP/debug.out" | head -n 20 >&2
    fail "with carve preloaded in debug mode ($debug): checks failed"
}
for pair in "new-free:operator new:free" "array-delete:operator new\[\]:operator delete" \
            "new-array-delete:operator new:operator delete\[\]" "malloc-delete:malloc:operator delete"; do
    kind=${pair%%:*}
    rest=${pair#*:}
    made=${rest%%:*}
    freed=${rest#*:}
    LD_PRELOAD="$CARVE_LIB" "$TMP/cxx_ops" mismatch "$kind" >"$TMP/m.out" 2>&1 ||
        fail "release build: the $kind pair stopped the program: $(head -n 1 "$TMP/m.out")"
    # (in a subshell that goes on after it, so that no shell reports the abort)
    (CARVE_OPTIONS=$debug LD_PRELOAD="$CARVE_LIB" "$TMP/cxx_ops" mismatch "$kind" >"$TMP/m.out" 2>&1
     echo $? >"$TMP/m.rc") 2>/dev/null
    [ "$(cat "$TMP/m.rc")" != 0 ] || fail "debug mode let the $kind pair through"
    grep -Eq "^carve: mismatched free of 0x[0-9a-f]+ \(allocated by $made\) in $freed\(\)" "$TMP/m.out" ||
        fail "debug mode, $kind: expected 'mismatched free ... allocated by $made ... in $freed()', got: $(head -n 1 "$TMP/m.out")"
done
msg "debug mode: the checks pass, and new/free, new[]/delete, new/delete[], malloc/delete stop"
pass
