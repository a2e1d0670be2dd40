/*
 * visible_rss: after a program frees what it allocated, how soon does the
 * RSS that top, ps and monitoring read (LazyFree included) fall?
 *
 * Each part runs in its own child process. It allocates about 1 GiB (times
 * SCALE) of blocks of 16..1024 bytes, frees them all, and then
 *
 *   busy: goes on with a little work, one malloc/free of 1..4 KiB every
 *         50 ms, as a server between requests;
 *   idle: makes no allocator call at all (it sleeps).
 *
 * It prints Rss and LazyFree ("mem PART/POINT rss_kib=N lazyfree_kib=M",
 * from /proc/self/smaps_rollup; without it, Rss from /proc/self/statm and
 * LazyFree 0) at the peak, right after the frees, and 0.5, 1, 2, 3 and 5 s
 * after them, and then
 *
 *   visible_ms PART=T   how long after the frees Rss first read below 10%
 *                       of the peak (checked every 50 ms; -1: not in 5 s)
 *   mean_resident_kib=  mean over the parts of Rss - LazyFree at the
 *                       deadline (busy: 2 s, idle: 5 s)
 *   mean_rss_kib=       the same for Rss, as top shows it
 *
 * MADV_FREE'd memory (LazyFree) is still in Rss until the kernel needs it:
 * what monitoring sees is Rss.
 *
 * usage: visible_rss THREADS SCALE [WATCH_MS]   (THREADS is ignored; WATCH_MS,
 * default 5000, ends the watch early: the points after it are left out)
 */
#include "common.h"
#include <sys/mman.h>

#define MIN_SIZE 16
#define MAX_SIZE 1024
#define STEP_MS 50

struct part_result {
    uint64_t alloc_sum, free_sum;
    long blocks;
    long peak_rss_kib;
    long visible_ms;
    long deadline_rss_kib, deadline_resident_kib;
};

static struct mem_now point(const char *part, const char *name, struct part_result *r)
{
    struct mem_now m = mem_now();
    printf("mem %s/%s rss_kib=%ld lazyfree_kib=%ld\n", part, name, m.rss_kib, m.lazyfree_kib);
    if (m.rss_kib > r->peak_rss_kib)
        r->peak_rss_kib = m.rss_kib;
    return m;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The little work of the busy part: one block, written and checked. */
static void nibble(uint64_t *rng)
{
    size_t size = rng_range(rng, 1024, 4096);
    unsigned char *p = xmalloc(size);
    memset(p, 0x3c, size);
    ESCAPE(p);
    if (p[size - 1] != 0x3c)
        die("visible_rss: a block lost its contents");
    free(p);
}

static long watch_ms = 5000;

static void part(double scale, int busy, struct part_result *r)
{
    const char *name = busy ? "busy" : "idle";
    size_t target = (size_t)scaled(scale, 1L << 30, 1L << 20), bytes = 0, n = 0;
    size_t cap = target / MIN_SIZE + 1;
    /* the program's own list of blocks, mapped directly: the same under
     * every allocator, and gone before the watch starts */
    void **blocks = mmap(NULL, cap * sizeof *blocks, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uint64_t rng = 4711;
    static const long marks[] = { 500, 1000, 2000, 3000, 5000 };
    static const char *const mark_names[] = { "0.5s", "1s", "2s", "3s", "5s" };
    long deadline = busy ? 2000 : 5000;
    unsigned n_marks = 0;
    unsigned next_mark = 0;

    while (n_marks < sizeof marks / sizeof marks[0] && marks[n_marks] <= watch_ms)
        n_marks++;
    if (deadline > watch_ms)
        deadline = marks[n_marks - 1];

    if (blocks == MAP_FAILED)
        die("visible_rss: mmap of the block list failed");
    while (bytes < target && n < cap) {
        size_t size = rng_range(&rng, MIN_SIZE, MAX_SIZE);
        blocks[n] = tb_new(size, n);
        r->alloc_sum += block_hash(size, n);
        bytes += size;
        n++;
    }
    point(name, "peak", r);
    for (size_t i = 0; i < n; i++)
        r->free_sum += tb_free(blocks[i], "visible_rss");
    munmap(blocks, cap * sizeof *blocks);
    point(name, "freed", r);
    r->blocks = (long)n;
    r->visible_ms = -1;

    double start = now_seconds();
    for (long t = 0; next_mark < n_marks;) {
        long wait = t + STEP_MS - (long)((now_seconds() - start) * 1000.0);
        if (wait > 0)
            sleep_ms(wait);
        t = (long)((now_seconds() - start) * 1000.0);
        if (busy)
            nibble(&rng);
        struct mem_now m = mem_now();
        if (r->visible_ms < 0 && m.rss_kib >= 0 && m.rss_kib * 10 < r->peak_rss_kib)
            r->visible_ms = t;
        if (t >= marks[next_mark]) {
            m = point(name, mark_names[next_mark], r);
            if (marks[next_mark] == deadline) {
                r->deadline_rss_kib = m.rss_kib;
                r->deadline_resident_kib = m.rss_kib - m.lazyfree_kib;
            }
            next_mark++;
        }
    }
}

static void busy_part(double scale, struct part_result *r) { part(scale, 1, r); }
static void idle_part(double scale, struct part_result *r) { part(scale, 0, r); }

/* One part, in a child process (common.h). */
struct part_call {
    void (*fn)(double, struct part_result *);
    double scale;
    struct part_result *r;
};

static void call_part(void *ctx)
{
    struct part_call *c = ctx;
    c->fn(c->scale, c->r);
}

static struct part_result run_part(void (*fn)(double, struct part_result *), double scale, const char *name)
{
    struct part_result r = { 0 };
    struct part_call c = { fn, scale, &r };
    char what[64];

    snprintf(what, sizeof what, "%s: the %s part", "visible_rss", name);
    run_in_child(call_part, &c, &r, sizeof r, what);
    if (r.alloc_sum != r.free_sum)
        die("%s: sums of blocks freed and allocated differ", what);
    return r;
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "[WATCH_MS]");
    struct part_result b, i;

    if (a.argc > 0)
        watch_ms = atol(a.argv[0]);
    if (watch_ms < 500)
        die("visible_rss: WATCH_MS below 500");
    report_malloc_provider();
    b = run_part(busy_part, a.scale, "busy");
    i = run_part(idle_part, a.scale, "idle");
    printf("visible_ms busy=%ld idle=%ld\n", b.visible_ms, i.visible_ms);
    printf("mean_resident_kib=%ld mean_rss_kib=%ld peak_rss_kib=%ld\n",
           (b.deadline_resident_kib + i.deadline_resident_kib) / 2,
           (b.deadline_rss_kib + i.deadline_rss_kib) / 2,
           b.peak_rss_kib > i.peak_rss_kib ? b.peak_rss_kib : i.peak_rss_kib);
    printf("ok blocks=%ld checksum=%016llx\n", b.blocks,
           (unsigned long long)(b.free_sum ^ (i.free_sum * PATTERN_K)));
    return 0;
}
