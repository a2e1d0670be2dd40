/*
 * fragmentation: does freed memory get reused for other sizes?
 *
 * One thread grows a heap of mixed small blocks (16..512 bytes) to about
 * 256 MiB, frees 90% of them at random (leaving every page partly used),
 * then allocates about 100 MiB of blocks of other sizes (600 bytes to
 * 8 KiB). An allocator that can reuse the holes stays near its first peak;
 * one that cannot grows by the whole second phase. The peak RSS the runner
 * records is the measure here; the RSS at each phase end is printed too.
 *
 * usage: fragmentation THREADS SCALE   (THREADS is ignored)
 */
#include "common.h"

static void phase_end(const char *name)
{
    printf("rss %-8s %8ld KiB\n", name, rss_kib());
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "");
    size_t grow_bytes = (size_t)scaled(a.scale, 256L << 20, 1L << 20);
    size_t other_bytes = grow_bytes * 2 / 5;
    size_t cap = grow_bytes / 16 + 1, n = 0, m = 0, bytes;
    void **small = xmalloc(cap * sizeof *small), **other;
    uint64_t rng = 99, alloc_sum = 0, free_sum = 0;
    size_t kept = 0;

    report_malloc_provider();
    for (bytes = 0; bytes < grow_bytes && n < cap; n++) {
        size_t size = rng_range(&rng, 16, 512);
        small[n] = tb_new(size, n);
        alloc_sum += block_hash(size, n);
        bytes += size;
    }
    phase_end("grown");

    for (size_t i = 0; i < n; i++) {
        if (rng_next(&rng) % 10 != 0) {
            free_sum += tb_free(small[i], "fragmentation (free 90%)");
            small[i] = NULL;
        } else {
            kept++;
        }
    }
    phase_end("freed");

    other = xmalloc((other_bytes / 600 + 1) * sizeof *other);
    for (bytes = 0; bytes < other_bytes; m++) {
        size_t size = rng_range(&rng, 600, 8192);
        other[m] = tb_new(size, ((uint64_t)1 << 40) + m);
        alloc_sum += block_hash(size, ((uint64_t)1 << 40) + m);
        bytes += size;
    }
    phase_end("refilled");

    for (size_t i = 0; i < n; i++)
        if (small[i] != NULL)
            free_sum += tb_free(small[i], "fragmentation (survivors)");
    for (size_t i = 0; i < m; i++)
        free_sum += tb_free(other[i], "fragmentation (second phase)");
    phase_end("end");
    free(small);
    free(other);
    if (alloc_sum != free_sum)
        die("fragmentation: sums of blocks freed and allocated differ");
    printf("ok small=%zu kept=%zu other=%zu checksum=%016llx\n", n, kept, m,
           (unsigned long long)free_sum);
    return 0;
}
