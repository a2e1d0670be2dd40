/*
 * common.h: the few helpers the workloads share (header only, so that each
 * workload still builds alone with `cc -O2 -pthread x.c`).
 *
 *  - arguments: every program takes THREADS and SCALE first; SCALE is a
 *    factor applied to the amount of work (1 = the default benchmark size).
 *  - a small deterministic PRNG (splitmix64), so that every run of a
 *    workload does the same allocations, whatever the allocator or the
 *    scheduling.
 *  - tagged blocks: tb_new() fills a block with a pattern derived from a
 *    seed, tb_free() checks it before freeing it, which detects blocks that
 *    overlap, blocks handed out twice and damaged contents. tb_free()
 *    returns a hash of (size, seed); workloads add these up (addition
 *    commutes, so the sum does not depend on which thread freed which
 *    block) and print the sum as their checksum.
 *  - report_malloc_provider(): prints on stderr the file that provides
 *    `malloc` in this process, so that the runner can check that LD_PRELOAD
 *    really took effect.
 *  - mem_now(): Rss and LazyFree of the process (/proc/self/smaps_rollup,
 *    read without malloc), for the workloads that measure how memory goes
 *    back to the kernel (phases, purge).
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define UNUSED __attribute__((unused))

/* Tell the compiler that p escapes: keeps it from removing malloc/free
 * pairs or stores whose results it could otherwise prove unused. */
#define ESCAPE(p) __asm__ volatile("" : : "r"(p) : "memory")

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2), unused));
static void die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("FAIL: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static UNUSED void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL)
        die("malloc(%zu) returned NULL", n);
    if (((uintptr_t)p & (n >= 16 ? 15 : 7)) != 0)
        die("malloc(%zu) returned misaligned %p", n, p);
    return p;
}

/* ---- arguments ------------------------------------------------------ */

struct args {
    int threads;
    double scale;
    int argc;    /* the rest, after THREADS and SCALE */
    char **argv;
};

static UNUSED struct args parse_args(int argc, char **argv, const char *usage)
{
    struct args a;
    if (argc < 3) {
        fprintf(stderr, "usage: %s THREADS SCALE %s\n", argv[0], usage);
        exit(2);
    }
    a.threads = atoi(argv[1]);
    a.scale = atof(argv[2]);
    if (a.threads < 1 || a.threads > 1024 || !(a.scale > 0)) {
        fprintf(stderr, "%s: bad THREADS or SCALE (%s %s)\n", argv[0], argv[1], argv[2]);
        exit(2);
    }
    a.argc = argc - 3;
    a.argv = argv + 3;
    return a;
}

/* base * scale, at least min */
static UNUSED long scaled(double scale, long base, long min)
{
    long n = (long)(base * scale);
    return n < min ? min : n;
}

/* ---- random numbers (splitmix64) ------------------------------------ */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rng_next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ULL;
    return mix64(*s);
}

/* uniform in [lo, hi] */
static inline size_t rng_range(uint64_t *s, size_t lo, size_t hi)
{
    return lo + (size_t)(rng_next(s) % (hi - lo + 1));
}

/* ---- block patterns ------------------------------------------------- */

#define PATTERN_K 0x9e3779b97f4a7c15ULL

/* The hash of a block of this size and seed: what tb_free() returns, and
 * what workloads add up when they allocate, to compare. */
static inline uint64_t block_hash(size_t size, uint64_t seed)
{
    return mix64(seed ^ (size * 0x100000001b3ULL));
}

/* ---- tagged blocks ----------------------------------------------------
 * A block that carries its own size and seed in its first 16 bytes, so
 * that any thread can check it without bookkeeping. After the header, one
 * word per 64 bytes and the last word hold the pattern: every cache line of
 * the block is written, as a program would, and a block handed out twice,
 * or overlapping another, is caught without paying for a full fill.
 * Sizes are at least 16. */

static inline uint64_t tb_word(uint64_t v, size_t i) { return v + i * PATTERN_K; }

static UNUSED void *tb_new(size_t size, uint64_t seed)
{
    uint64_t *p = (uint64_t *)xmalloc(size), v = mix64(seed);
    size_t n = size / 8, i;
    p[0] = size;
    p[1] = seed;
    for (i = 2; i < n; i += 8)
        p[i] = tb_word(v, i);
    if (n > 2)
        p[n - 1] = tb_word(v, n - 1);
    return p;
}

/* Checks and frees a tagged block; returns its hash. */
static UNUSED uint64_t tb_free(void *block, const char *what)
{
    uint64_t *p = (uint64_t *)block;
    uint64_t size = p[0], seed = p[1], v = mix64(seed);
    size_t n = size / 8, i;
    if (size < 16 || size > ((uint64_t)1 << 34))
        die("%s: block %p has a damaged header (size %llu)", what, block, (unsigned long long)size);
    for (i = 2; i < n; i += 8)
        if (p[i] != tb_word(v, i))
            die("%s: block %p (size %llu) damaged at byte %zu", what, block, (unsigned long long)size, i * 8);
    if (n > 2 && p[n - 1] != tb_word(v, n - 1))
        die("%s: block %p (size %llu) damaged at its end", what, block, (unsigned long long)size);
    free(p);
    return block_hash(size, seed);
}

/* ---- environment ----------------------------------------------------- */

/* Resident set size now, in KiB, from /proc/self/statm. */
static UNUSED long rss_kib(void)
{
    long pages_total = 0, pages_res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &pages_total, &pages_res) != 2)
        pages_res = -1;
    fclose(f);
    return pages_res < 0 ? -1 : pages_res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Reads a whole small /proc file into buf (NUL-terminated) with open/read:
 * no stdio buffer and no malloc, so that a sampler thread can call it
 * without touching the allocator it measures. Returns the length or -1. */
static UNUSED long read_proc_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    ssize_t n;
    if (fd < 0)
        return -1;
    while (len + 1 < size && (n = read(fd, buf + len, size - 1 - len)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return -1;
        }
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (long)len;
}

/* The value of the line "Key:   N kB" of a /proc file, or -1. */
static UNUSED long proc_field_kib(const char *text, const char *key)
{
    size_t klen = strlen(key);
    const char *p = text;
    while (p != NULL && *p != '\0') {
        if (strncmp(p, key, klen) == 0 && p[klen] == ':')
            return strtol(p + klen + 1, NULL, 10);
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return -1;
}

/* Memory of this process as the kernel counts it: Rss, and the part of it
 * that is LazyFree (pages given back with MADV_FREE that the kernel has not
 * taken yet: still in RSS, but reclaimable at once). Rss - LazyFree is what
 * the process really holds. From /proc/self/smaps_rollup (Linux 4.14+);
 * without it, Rss from /proc/self/statm and LazyFree 0 (then `smaps` is 0).
 * Costs a walk of the page tables: a few ms on a big heap, so do not call it
 * more often than every 50 ms or so. */
struct mem_now {
    long rss_kib, lazyfree_kib;
    int smaps;
};

static UNUSED struct mem_now mem_now(void)
{
    struct mem_now m = { -1, 0, 0 };
    char buf[4096];
    long pages_total, pages_res;
    if (read_proc_file("/proc/self/smaps_rollup", buf, sizeof buf) > 0) {
        m.rss_kib = proc_field_kib(buf, "Rss");
        m.lazyfree_kib = proc_field_kib(buf, "LazyFree");
        if (m.lazyfree_kib < 0)
            m.lazyfree_kib = 0;
        if (m.rss_kib >= 0) {
            m.smaps = 1;
            return m;
        }
    }
    m.lazyfree_kib = 0;
    if (read_proc_file("/proc/self/statm", buf, sizeof buf) > 0 &&
        sscanf(buf, "%ld %ld", &pages_total, &pages_res) == 2)
        m.rss_kib = pages_res * (sysconf(_SC_PAGESIZE) / 1024);
    return m;
}

/* Sleeps ms milliseconds (restarting after signals). */
static UNUSED void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Prints on stderr which shared object provides malloc here. */
static UNUSED void report_malloc_provider(void)
{
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, "malloc");
    if (sym != NULL && dladdr(sym, &info) && info.dli_fname != NULL)
        fprintf(stderr, "malloc-from: %s\n", info.dli_fname);
    else
        fprintf(stderr, "malloc-from: unknown\n");
}

/* Starts n threads running fn(arg + i * argsize) and waits for them all. */
/* Runs fn on n threads, thread i given args + i * argsize. The args sit side
 * by side in one block: a thread must keep its running counters in locals
 * and store them there once at the end. Counters updated in place on every
 * operation share cache lines between threads, and the benchmark then
 * measures that false sharing, more or less of it depending only on where
 * the allocator happened to put the array (64-byte aligned under carve,
 * jemalloc and mimalloc; 16 under glibc: random_sizes ran 35% faster). */
static UNUSED void run_threads(int n, void *(*fn)(void *), void *args, size_t argsize)
{
    pthread_t *t = (pthread_t *)calloc((size_t)n, sizeof *t);
    int i, rc;
    if (t == NULL)
        die("calloc for %d threads failed", n);
    for (i = 0; i < n; i++)
        if ((rc = pthread_create(&t[i], NULL, fn, (char *)args + (size_t)i * argsize)) != 0)
            die("pthread_create: %s", strerror(rc));
    for (i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    free(t);
}

/* Runs body(ctx) in a child process, so that what one part of a workload
 * leaves behind does not show in the next; the child then sends the size
 * bytes at result (which body filled in) back through a pipe, into the
 * parent's result. Dies unless the child exits 0 having reported. */
static UNUSED void run_in_child(void (*body)(void *ctx), void *ctx, void *result, size_t size,
                                const char *what)
{
    int fds[2], status;
    ssize_t got;
    pid_t pid;

    fflush(stdout); /* or the child would print it again */
    if (pipe(fds) != 0)
        die("%s: pipe: %s", what, strerror(errno));
    pid = fork();
    if (pid < 0)
        die("%s: fork: %s", what, strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        body(ctx);
        fflush(stdout);
        if (write(fds[1], result, size) != (ssize_t)size)
            die("%s: write to the parent: %s", what, strerror(errno));
        _exit(0);
    }
    close(fds[1]);
    do
        got = read(fds[0], result, size);
    while (got < 0 && errno == EINTR);
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            die("%s: waitpid: %s", what, strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("%s failed (status %d)", what, status);
    if (got != (ssize_t)size)
        die("%s reported nothing", what);
}

#endif
