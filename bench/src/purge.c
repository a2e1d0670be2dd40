/*
 * purge: once a program has freed its memory, how soon does it leave?
 *
 * Two parts, each in its own child process (so that what one leaves behind
 * does not show in the other):
 *
 *  small: allocate about 1 GiB (times SCALE) of blocks of 16..512 bytes,
 *         then free them all;
 *  large: allocate one 512 MiB block (times SCALE), touch all of it, free it.
 *
 * At four points of each part it prints the process's Rss and LazyFree
 * (from /proc/self/smaps_rollup; without it, Rss from /proc/self/statm and
 * LazyFree 0), as lines "mem PART/POINT rss_kib=N lazyfree_kib=M":
 *
 *   peak    everything allocated;
 *   freed   right after the last free;
 *   waited  after 300 ms without any call to the allocator (carve's default
 *           decay is 50 ms; this is what an allocator with a background
 *           purger, or one that purges at free, gives back while the program
 *           is idle);
 *   +1MiB   after one more malloc of 1 MiB, touched and freed: a program
 *           usually goes on allocating, and an allocator that purges from
 *           its slow paths (carve by default) purges there.
 *
 * The program then prints "mean_resident_kib=<mean over the two parts of
 * Rss - LazyFree at +1MiB>": what is still really held once the memory had
 * time to go back (LazyFree pages are still counted in Rss, but the kernel
 * takes them whenever it needs them), and "mean_rss_kib=" the same of Rss,
 * as top and ps show it.
 *
 * usage: purge THREADS SCALE   (THREADS is ignored)
 */
#include "common.h"

#define MIN_SIZE 16
#define MAX_SIZE 512
#define WAIT_MS 300
#define POKE_SIZE ((size_t)1 << 20)

struct part_result {
    uint64_t alloc_sum, free_sum;
    long blocks;
    long peak_rss_kib;
    long final_resident_kib;
    long final_rss_kib;
};

static long point(const char *part, const char *name, struct part_result *r)
{
    struct mem_now m = mem_now();
    printf("mem %s/%s rss_kib=%ld lazyfree_kib=%ld\n", part, name, m.rss_kib, m.lazyfree_kib);
    if (m.rss_kib > r->peak_rss_kib)
        r->peak_rss_kib = m.rss_kib;
    return m.rss_kib - m.lazyfree_kib;
}

/* After the wait: one more malloc/free of 1 MiB, touched. */
static void poke(void)
{
    unsigned char *p = xmalloc(POKE_SIZE);
    memset(p, 0x5a, POKE_SIZE);
    ESCAPE(p);
    if (p[POKE_SIZE - 1] != 0x5a)
        die("purge: the 1 MiB block lost its contents");
    free(p);
}

static void wait_and_poke(const char *part, struct part_result *r)
{
    sleep_ms(WAIT_MS);
    point(part, "waited", r);
    poke();
    r->final_resident_kib = point(part, "+1MiB", r);
    r->final_rss_kib = mem_now().rss_kib;
}

static void small_part(double scale, struct part_result *r)
{
    size_t target = (size_t)scaled(scale, 1L << 30, 1L << 20), bytes = 0, n = 0;
    size_t cap = target / MIN_SIZE + 1;
    void **blocks = xmalloc(cap * sizeof *blocks);
    uint64_t rng = 777;

    while (bytes < target && n < cap) {
        size_t size = rng_range(&rng, MIN_SIZE, MAX_SIZE);
        blocks[n] = tb_new(size, n);
        r->alloc_sum += block_hash(size, n);
        bytes += size;
        n++;
    }
    point("small", "peak", r);
    for (size_t i = 0; i < n; i++)
        r->free_sum += tb_free(blocks[i], "purge (small)");
    free(blocks);
    point("small", "freed", r);
    wait_and_poke("small", r);
    r->blocks = (long)n;
}

static void large_part(double scale, struct part_result *r)
{
    size_t size = (size_t)scaled(scale, 512L << 20, 1L << 20);
    unsigned char *p = xmalloc(size);
    memset(p, 0xa7, size);
    r->alloc_sum = size * 0xa7ULL;
    point("large", "peak", r);
    for (size_t i = 0; i < size; i += 4096)
        if (p[i] != 0xa7)
            die("purge: the large block is damaged at byte %zu", i);
    if (p[size - 1] != 0xa7)
        die("purge: the large block is damaged at its end");
    free(p);
    r->free_sum = size * 0xa7ULL;
    point("large", "freed", r);
    wait_and_poke("large", r);
    r->blocks = 1;
}

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

    snprintf(what, sizeof what, "%s: the %s part", "purge", name);
    run_in_child(call_part, &c, &r, sizeof r, what);
    if (r.alloc_sum != r.free_sum)
        die("%s: sums of blocks freed and allocated differ", what);
    return r;
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "");
    struct part_result s, l;

    report_malloc_provider();
    s = run_part(small_part, a.scale, "small");
    l = run_part(large_part, a.scale, "large");
    printf("mean_resident_kib=%ld mean_rss_kib=%ld peak_rss_kib=%ld\n",
           (s.final_resident_kib + l.final_resident_kib) / 2, (s.final_rss_kib + l.final_rss_kib) / 2,
           s.peak_rss_kib > l.peak_rss_kib ? s.peak_rss_kib : l.peak_rss_kib);
    printf("ok small_blocks=%ld checksum=%016llx\n", s.blocks,
           (unsigned long long)(s.free_sum ^ (l.free_sum * PATTERN_K)));
    return 0;
}
