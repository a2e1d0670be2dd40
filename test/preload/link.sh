# link.sh: install carve into a staging directory and use it the ways a
# program would: (a) linked with pkg-config, (b) linked statically, (c) from
# C++, (d) through the carve-run wrapper, (e) opened with dlopen, (f) the
# carve_ names only, beside glibc's malloc (pkg-config carve-prefixed); and
# (g) the installed header under every C and C++ standard, pedantic.
. "$(dirname "$0")/common.sh"
CC=${CC:-cc}
CXX=${CXX:-c++}
need_prog make pkg-config "$CC" "$CXX" find readelf
[ -f "${CARVE_BUILDDIR:-}/Makefile" ] || fail "CARVE_BUILDDIR=${CARVE_BUILDDIR:-} is not a configured build tree"

# ---- install into the staging directory -------------------------------------
stage="$TMP/stage"
# A make of our own: not a part of the make check that may be running us.
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES \
    make -C "$CARVE_BUILDDIR" install DESTDIR="$stage" >"$TMP/install.log" 2>&1 || {
    tail -n 30 "$TMP/install.log" >&2
    fail "make install DESTDIR=$stage failed"
}
pc=$(find "$stage" -name carve.pc -type f | head -n 1)
so=$(find "$stage" -name libcarve.so -print | head -n 1)
header=$(find "$stage" -name carve.h -type f | head -n 1)
wrapper=$(find "$stage" -name carve-run -type f | head -n 1)
[ -n "$pc" ] || fail "carve.pc was not installed"
[ -n "$so" ] || fail "libcarve.so was not installed"
[ -n "$header" ] || fail "carve.h was not installed"
[ -n "$wrapper" ] || fail "carve-run was not installed"
libdir=$(dirname "$so")
msg "installed: $(cd "$stage" && find . -type f -o -type l | sort | tr '\n' ' ')"

PKG_CONFIG_PATH=$(dirname "$pc")
PKG_CONFIG_SYSROOT_DIR=$stage
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
cflags=$(pkg-config --cflags carve) || fail "pkg-config --cflags carve failed"
libs=$(pkg-config --libs carve) || fail "pkg-config --libs carve failed"
libs_L=$(pkg-config --libs-only-L carve)
msg "pkg-config carve: cflags '$cflags', libs '$libs'"
case "$cflags $libs" in
*"$stage"*) ;;
*) fail "pkg-config's flags do not point into the staging directory" ;;
esac

cd "$TMP" || fail "cd $TMP"

# build OUTPUT COMPILER ARGS...: compile, failing with the compiler's words.
build() {
    out=$1
    shift
    "$@" -o "$out" >"$TMP/$out.build.log" 2>&1 || {
        cat "$TMP/$out.build.log" >&2
        fail "could not build $out: $*"
    }
}

# expect_run WHAT EXPECTED_STATUS CMD...: run, print the output, check status.
expect_run() {
    what=$1
    want=$2
    shift 2
    $TIMEOUT "$@" >"$TMP/run.out" 2>&1
    status=$?
    sed "s/^/    /" "$TMP/run.out"
    [ "$status" -eq "$want" ] || fail "$what: exit status $status, expected $want"
    msg "$what: exit status $status as expected"
}

# ---- (a) shared, through pkg-config -----------------------------------------
cat >prog_a.c <<'C'
#define _GNU_SOURCE
#include <carve.h>
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    /* The process's first allocation starts carve up (cgroup files that
     * may not exist, ...): a malloc that succeeds leaves errno alone. */
    errno = 0;
    void *first = malloc(100);
    if (first == NULL || errno != 0) {
        printf("the first malloc returned %p and set errno to %d\n", first, errno);
        return 1;
    }
    free(first);
    Dl_info info;
    if (dladdr((void *)carve_malloc, &info) && info.dli_fname)
        printf("carve_malloc comes from %s\n", info.dli_fname);
    void *c = carve_malloc(1);
    void *m = malloc(1);
    if (!c || !m)
        return 1;
    size_t cu = carve_malloc_usable_size(c), mu = malloc_usable_size(m);
    size_t cross = carve_malloc_usable_size(m);
    printf("carve_malloc_usable_size(carve_malloc(1)) = %zu\n", cu);
    printf("malloc_usable_size(malloc(1)) = %zu\n", mu);
    printf("carve_malloc_usable_size(malloc(1)) = %zu\n", cross);
    free(c);        /* each frees the other's block: they are the same heap */
    carve_free(m);
    if (cu != mu || cross != mu) {
        puts("malloc is not carve's");
        return 1;
    }
    if (mu >= 24) {
        puts("malloc(1) has 24 usable bytes or more, like glibc's");
        return 1;
    }
    char *s = strdup("carve");
    char *t = realloc(s, 100000);
    if (!t || strcmp(t, "carve") != 0)
        return 1;
    free(t);
    puts("malloc is carve's");
    return 0;
}
C
build prog_a "$CC" prog_a.c $cflags $libs -ldl
readelf -d prog_a | grep -q 'NEEDED.*libcarve' || fail "(a) prog_a does not need libcarve.so"
expect_run "(a) shared link with pkg-config" 0 env LD_LIBRARY_PATH="$libdir" ./prog_a
grep -q "comes from $libdir/" "$TMP/run.out" || fail "(a) carve did not come from the staged library"

# ---- (b) static ----------------------------------------------------------
if [ -f "$libdir/libcarve.a" ]; then
    build prog_b "$CC" prog_a.c $cflags $libs_L -Wl,-Bstatic -lcarve -Wl,-Bdynamic -pthread -ldl
    if readelf -d prog_b | grep -q 'NEEDED.*libcarve'; then
        fail "(b) prog_b needs libcarve.so although it was linked statically"
    fi
    expect_run "(b) static link with libcarve.a" 0 env -u LD_LIBRARY_PATH -u LD_PRELOAD ./prog_b
else
    msg "(b) SKIPPED: no libcarve.a installed (configured with --disable-static?)"
fi

# ---- (c) C++, shared ---------------------------------------------------------
cat >prog_c.cc <<'CC'
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>
#ifdef WITH_CARVE
#include <carve.h>
#include <malloc.h>
#endif

int main() {
#ifdef WITH_CARVE
    char *probe = new char[1];
    std::size_t a = malloc_usable_size(probe), b = carve_malloc_usable_size(probe);
    delete[] probe;
    if (a != b || a >= 24) {
        std::printf("operator new does not use carve (%zu, %zu)\n", a, b);
        return 1;
    }
#endif
    unsigned long sum = 0;
    std::map<std::string, std::vector<int>> m;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 20000; i++) {
            std::string key = "key" + std::to_string((i * 7919 + round) % 30011);
            auto &v = m[key];
            v.push_back(i);
            if (v.size() > 8)
                v.erase(v.begin(), v.begin() + 4);
        }
        for (auto it = m.begin(); it != m.end();) {
            sum = sum * 31 + it->first.size() + it->second.size();
            if (it->second.size() % 3 == 0)
                it = m.erase(it);
            else
                ++it;
        }
        std::vector<std::unique_ptr<std::string>> strings;
        for (int i = 0; i < 50000; i++)
            strings.emplace_back(new std::string(static_cast<std::size_t>(i % 300), 'a' + i % 26));
        for (std::size_t i = 0; i < strings.size(); i += 3)
            strings[i].reset();
        for (auto &s : strings)
            if (s)
                sum += s->size();
        int *arr = new int[100000];
        for (int i = 0; i < 100000; i++)
            arr[i] = i ^ round;
        sum += static_cast<unsigned long>(arr[round * 1000]);
        delete[] arr;
    }
    std::printf("map %zu entries, checksum %lu\n", m.size(), sum);
    return 0;
}
CC
build prog_c "$CXX" -DWITH_CARVE prog_c.cc $cflags $libs
build prog_c_plain "$CXX" prog_c.cc
expect_run "(c) C++ program linked with carve" 0 env LD_LIBRARY_PATH="$libdir" ./prog_c
mv "$TMP/run.out" "$TMP/c.carve"
expect_run "(c) the same C++ program without carve" 0 ./prog_c_plain
cmp -s "$TMP/c.carve" "$TMP/run.out" || fail "(c) the C++ program's output differs with carve"
msg "(c) same output with and without carve"

# ---- (d) the carve-run wrapper ------------------------------------------------
cat >prog_d.c <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

/* Not linked with carve: finds it only when preloaded. */
int main(void) {
    size_t (*usable)(void *) =
        (size_t (*)(void *))dlsym(RTLD_DEFAULT, "carve_malloc_usable_size");
    void *m = malloc(1);
    size_t mu = malloc_usable_size(m);
    printf("malloc_usable_size(malloc(1)) = %zu\n", mu);
    if (!usable) {
        puts("carve is not loaded");
        return 1;
    }
    size_t cu = usable(m);
    printf("carve_malloc_usable_size(malloc(1)) = %zu\n", cu);
    free(m);
    if (cu != mu || mu >= 24) {
        puts("malloc is not carve's");
        return 1;
    }
    puts("malloc is carve's");
    return 0;
}
C
build prog_d "$CC" prog_d.c -ldl
expect_run "(d) without the wrapper the check fails" 1 env -u LD_PRELOAD ./prog_d
expect_run "(d) carve-run sh -c 'echo ok'" 0 env CARVE_LIB="$so" "$wrapper" sh -c 'echo ok'
[ "$(cat "$TMP/run.out")" = ok ] || fail "(d) carve-run sh -c 'echo ok' printed something else"
expect_run "(d) carve-run ./prog_d" 0 env CARVE_LIB="$so" "$wrapper" ./prog_d
expect_run "(d) carve-run --help" 0 "$wrapper" --help
grep -q "usage: carve-run" "$TMP/run.out" || fail "(d) carve-run --help printed no usage"
# a program that never allocates still gets carve's options read
expect_run "(d) CARVE_OPTIONS=help carve-run true" 0 env CARVE_OPTIONS=help CARVE_LIB="$so" "$wrapper" true
grep -q "CARVE_OPTIONS=key=value" "$TMP/run.out" || fail "(d) CARVE_OPTIONS=help printed nothing for true"

# ---- (e) dlopen at run time ------------------------------------------------------
cat >prog_e.c <<'C'
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void *(*c_malloc)(size_t);
static void *(*c_realloc)(void *, size_t);
static void (*c_free)(void *);
static size_t (*c_usable)(void *);

static int churn(unsigned seed) {
    void *ring[64] = {0};
    for (unsigned i = 0; i < 20000; i++) {
        unsigned k = (i * 2654435761u + seed) % 64;
        if (ring[k]) {
            if (*(unsigned char *)ring[k] != (unsigned char)k)
                return 1;
            c_free(ring[k]);
        }
        size_t n = 1 + (i * 131u + seed) % 5000;
        ring[k] = c_malloc(n);
        if (!ring[k] || c_usable(ring[k]) < n)
            return 1;
        memset(ring[k], k, n);
    }
    for (int k = 0; k < 64; k++)
        c_free(ring[k]);
    return 0;
}

static void *thread_main(void *arg) {
    return (void *)(size_t)churn((unsigned)(size_t)arg);
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("dlopen failed: %s\n", dlerror());
        return 1;
    }
    c_malloc = (void *(*)(size_t))dlsym(h, "carve_malloc");
    c_realloc = (void *(*)(void *, size_t))dlsym(h, "carve_realloc");
    c_free = (void (*)(void *))dlsym(h, "carve_free");
    c_usable = (size_t (*)(void *))dlsym(h, "carve_malloc_usable_size");
    if (!c_malloc || !c_realloc || !c_free || !c_usable) {
        puts("dlsym failed");
        return 1;
    }
    if (churn(1))
        return 1;
    char *big = c_malloc(1 << 20);
    if (!big)
        return 1;
    memset(big, 7, 1 << 20);
    big = c_realloc(big, 3 << 20);
    if (!big || big[(1 << 20) - 1] != 7)
        return 1;
    c_free(big);
    pthread_t t;
    void *ret = (void *)1;
    if (pthread_create(&t, NULL, thread_main, (void *)2) || pthread_join(t, &ret) || ret)
        return 1;
    dlclose(h);
    puts("dlopen, dlsym carve_malloc, use and free: ok");
    return 0;
}
C
build prog_e "$CC" prog_e.c -ldl -pthread
expect_run "(e) dlopen of the staged libcarve.so" 0 env -u LD_PRELOAD ./prog_e "$so"

# ---- (f) carve_ beside glibc's malloc: libcarve_prefixed ---------------------
ppc=$(find "$stage" -name carve-prefixed.pc -type f | head -n 1)
[ -n "$ppc" ] || fail "(f) carve-prefixed.pc was not installed"
plibs=$(pkg-config --libs carve-prefixed) || fail "(f) pkg-config --libs carve-prefixed failed"
plibs_L=$(pkg-config --libs-only-L carve-prefixed)
cat >prog_f.c <<'C'
#include <carve.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t carve_live(void) {
    static struct carve_stats s;
    carve_stats_read(&s);
    return s.live;
}

/* malloc stays the C library's; carve_malloc is carve's. */
int main(void) {
    size_t before = carve_live();
    char *g = malloc(1000), *c = carve_malloc(1000);
    if (!g || !c)
        return 1;
    memset(g, 1, 1000);
    memset(c, 2, 1000);
    size_t after = carve_live();
    printf("carve live bytes: %zu before, %zu after malloc(1000) and carve_malloc(1000)\n",
           before, after);
    if (after - before != carve_malloc_usable_size(c)) {
        puts("malloc went to carve, or carve_malloc was not counted");
        return 1;
    }
    void *g1 = malloc(1), *c1 = carve_malloc(1);
    size_t gu = malloc_usable_size(g1), cu = carve_malloc_usable_size(c1);
    printf("malloc_usable_size(malloc(1)) = %zu, carve_malloc_usable_size(carve_malloc(1)) = %zu\n",
           gu, cu);
    if (gu < 24 || cu >= 24) {
        puts("the two allocators are not the ones expected");
        return 1;
    }
    free(g1);
    carve_free(c1);
    c = carve_realloc(c, 1 << 20);
    if (!c || c[999] != 2)
        return 1;
    free(g);
    carve_free(c);
    puts("malloc is glibc's, carve_malloc is carve's");
    return 0;
}
C
build prog_f "$CC" prog_f.c $cflags $plibs
nm -D prog_f | grep -q ' U malloc' || fail "(f) prog_f does not take malloc from a shared library"
expect_run "(f) carve_ API beside glibc's malloc, shared" 0 env -u LD_PRELOAD LD_LIBRARY_PATH="$libdir" ./prog_f
if [ -f "$libdir/libcarve_prefixed.a" ]; then
    build prog_f_static "$CC" prog_f.c $cflags $plibs_L -Wl,-Bstatic -lcarve_prefixed -Wl,-Bdynamic -pthread
    expect_run "(f) carve_ API beside glibc's malloc, static" 0 env -u LD_PRELOAD -u LD_LIBRARY_PATH ./prog_f_static
fi

# ---- (g) the header, strictly --------------------------------------------------
printf '#include <carve.h>\nint main(void) { void *p = carve_malloc(1); carve_free(p); return 0; }\n' >h.c
cp h.c h.cc
for std in c89 c99 c11 c17; do
    build "h_$std.o" "$CC" -std=$std -Wall -Wextra -pedantic -Werror $cflags -c h.c
done
for std in c++98 c++11 c++17; do
    build "h_$std.o" "$CXX" -std=$std -Wall -Wextra -pedantic -Werror $cflags -c h.cc
done
msg "(g) carve.h compiles as C89, C99, C11, C17, C++98, C++11 and C++17 with -pedantic -Werror"

pass "pkg-config link, static link, C++, carve-run, dlopen, the prefixed library and the header all work"
