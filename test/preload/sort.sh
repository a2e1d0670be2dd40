# sort.sh: sort a generated file of a million lines (text, numeric, byte
# order, with a small buffer that forces merges of temporary files) with and
# without carve; the outputs must be identical.
. "$(dirname "$0")/common.sh"
need_prog sort awk
check_preload

# Deterministic lines: a word, a number, a mixed-case tag, and some length.
awk -v n=1000000 'BEGIN {
    x = 12345
    for (i = 0; i < n; i++) {
        x = (x * 69069 + 1) % 4294967296
        w = ""
        len = 3 + x % 9
        for (k = 0; k < len; k++)
            w = w sprintf("%c", 97 + int(x / (k * 7 + 1)) % 26)
        printf "%s %d %s%d %s\n", w, int(x / 3) % 1000000 - 500000, \
            (x % 3 ? "Tag" : "tag"), x % 1000, (i % 11 ? "" : "padding-" w w)
    }
}' </dev/null >"$TMP/input.txt" || fail "could not generate the input"
msg "input: $(wc -l <"$TMP/input.txt") lines, $(wc -c <"$TMP/input.txt") bytes"

cd "$TMP" || fail "cd $TMP"
run_both sort sort input.txt
run_both sort-n sort -n -k2,2 -s input.txt
run_both sort-c env LC_ALL=C sort input.txt
run_both sort-merge sort -S 1M -T "$TMP" --parallel=2 -k3,3 -k1,1r input.txt
run_both sort-u sort -u -k1,1 input.txt
pass "5 sorts of $(wc -l <input.txt) lines"
