# gcc.sh: gcc -O2 compiles a generated C file of a thousand functions
# with and without carve; the two object files must be identical.
. "$(dirname "$0")/common.sh"
CC_PROG=${CARVE_TEST_CC:-gcc}
need_prog "$CC_PROG"
check_preload

# Functions with loops, switches, structs and calls between them, so that
# every pass of the optimizer has work (and memory) to handle.
awk -v n=1000 'BEGIN {
    print "#include <stddef.h>"
    print "struct pt { int x, y; double w; struct pt *next; };"
    print "static unsigned mix(unsigned a, unsigned b) { return (a * 2654435761u) ^ (b >> 3); }"
    for (i = 0; i < n; i++) {
        printf "unsigned fn%d(const struct pt *p, unsigned k, const int *v, size_t len) {\n", i
        printf "    unsigned acc = %du + k;\n", i * 7 + 1
        if (i % 10 == 0) {
            # one in ten has a loop with a switch
            printf "    for (size_t j = 0; j < len; j++) {\n"
            printf "        switch ((v[j] + %d) %% 4) {\n", i
            printf "        case 0: acc += mix(acc, (unsigned)v[j]) * %d; break;\n", i % 13 + 1
            printf "        case 1: acc ^= (unsigned)(p ? p->x * %d + p->y : 0); break;\n", i % 7 + 2
            printf "        case 2: if (p && p->next) acc += (unsigned)p->next->w; break;\n"
            printf "        default: acc -= (unsigned)j << %d;\n", i % 9
            printf "        }\n    }\n"
        } else {
            printf "    if (p && len > %d) acc += (unsigned)(p->x * v[%d]) ^ mix(acc, %du);\n", i % 8, i % 8, i
            printf "    else acc = acc * %du + (unsigned)len;\n", i % 31 + 2
        }
        if (i > 0)
            printf "    if (k > %d) acc += fn%d(p, k - 1, v, len / 2);\n", i % 50 + 3, int(i / 3)
        printf "    return acc;\n}\n"
    }
    printf "unsigned (*const table[%d])(const struct pt *, unsigned, const int *, size_t) = {\n", n
    for (i = 0; i < n; i++)
        printf "    fn%d,\n", i
    print "};"
}' </dev/null >"$TMP/gen.c" || fail "could not generate the C file"
msg "generated $(wc -l <"$TMP/gen.c") lines of C"

cd "$TMP" || fail "cd $TMP"
run_both gcc sh -c '"$0" -O2 -g -frandom-seed=carve -c gen.c -o "gen-$CARVE_RUN.o"' "$CC_PROG"
same_files gen-plain.o gen-carve.o "object files from gcc -O2 -g"
pass
