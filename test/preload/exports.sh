# exports.sh: libcarve.so exports the whole malloc family under the standard
# names and under the carve_ prefix, and nothing else of its own.
. "$(dirname "$0")/common.sh"
need_prog nm

STANDARD="malloc free calloc realloc reallocarray aligned_alloc posix_memalign
memalign valloc pvalloc malloc_usable_size free_sized free_aligned_sized
malloc_trim malloc_stats mallinfo2 mallinfo malloc_info mallopt"
# carve_ names beyond the carve_ versions of the standard ones.
CARVE_EXTRA="carve_stats_print"

nm -D --defined-only "$CARVE_LIB" >"$TMP/nm.txt" 2>"$TMP/nm.err" ||
    fail "nm -D --defined-only $CARVE_LIB failed: $(cat "$TMP/nm.err")"
# The last field is the name; drop a symbol version (name@@VER, name@VER).
awk 'NF >= 2 { print $NF }' "$TMP/nm.txt" | sed 's/@.*//' | sort -u >"$TMP/names.txt"
msg "$(wc -l <"$TMP/names.txt") defined dynamic symbols in $CARVE_LIB"

missing=
for name in $STANDARD; do
    grep -qx "$name" "$TMP/names.txt" || missing="$missing $name"
    grep -qx "carve_$name" "$TMP/names.txt" || missing="$missing carve_$name"
done
for name in $CARVE_EXTRA; do
    grep -qx "$name" "$TMP/names.txt" || missing="$missing $name"
done
[ -z "$missing" ] || fail "not exported:$missing"
msg "all $(echo $STANDARD | wc -w) standard names and their carve_ versions are exported"

# Anything else must be a carve_ name, a __libc_ alias, another standard
# allocation name (legacy glibc ones, C++ operators new and delete), or a
# symbol the linker defines in every shared library.
extra=$(grep -v -x \
    -e 'carve_[A-Za-z0-9_]*' \
    -e '__libc_[A-Za-z0-9_]*' \
    -e 'cfree' -e 'malloc_size' -e 'malloc_good_size' \
    -e '_Zn[wa][mj].*' -e '_Zd[la]Pv.*' \
    -e '_init' -e '_fini' -e '_edata' -e '_end' -e '__bss_start' \
    "$TMP/names.txt" | while read -r name; do
        case " $(echo $STANDARD) " in
        *" $name "*) ;;
        *) printf ' %s' "$name" ;;
        esac
    done)
if [ -n "$extra" ]; then
    msg "exported symbols that are neither carve_* nor a standard allocation name:"
    awk -v list="$extra" 'BEGIN { n = split(list, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
        { name = $NF; sub(/@.*/, "", name); if (name in want) print "  " $0 }' "$TMP/nm.txt" >&2
    fail "unexpected exports:$extra"
fi
msg "no other symbols exported"
pass
