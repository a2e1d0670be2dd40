/*
 * random_sizes: a power-law mix of sizes and lifetimes, T threads.
 *
 * Sizes follow a power law, as in most programs: a size class 16<<k is
 * picked with probability 2^-(k+1), then a size inside it, up to 64 KiB
 * (half of the blocks are 16..31 bytes, 1 in 64 is over 1 KiB, 1 in 4096
 * is 32..64 KiB). Lifetimes are mixed too: half of the blocks are freed at
 * once, most others replace a block in a small, often-renewed set
 * (short-lived), some in a large set (long-lived). This measures the whole
 * allocator at once, size classes, caches and large-block paths, and the
 * memory that such a mix leaves behind.
 *
 * usage: random_sizes THREADS SCALE
 */
#include "common.h"

#define SHORT_SLOTS 256
#define LONG_SLOTS 20000

struct worker {
    int id;
    long ops;
    uint64_t alloc_sum, free_sum;
};

static size_t power_law_size(uint64_t *rng)
{
    uint64_t r = rng_next(rng);
    int k = r ? __builtin_ctzll(r) : 12;
    size_t lo, hi;
    if (k > 12)
        k = 12;
    lo = (size_t)16 << k;
    hi = k == 12 ? 65536 : (lo * 2) - 1;
    return rng_range(rng, lo, hi);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    void **shorts = calloc(SHORT_SLOTS, sizeof(void *));
    void **longs = calloc(LONG_SLOTS, sizeof(void *));
    uint64_t rng = 31337 + (uint64_t)w->id, alloc_sum = 0, free_sum = 0;
    if (shorts == NULL || longs == NULL)
        die("calloc failed");
    for (long n = 0; n < w->ops; n++) {
        size_t size = power_law_size(&rng);
        uint64_t seed = ((uint64_t)(w->id + 1) << 40) | (uint64_t)n;
        unsigned kind = (unsigned)(rng_next(&rng) % 16);
        void *p = tb_new(size, seed), **slot;
        alloc_sum += block_hash(size, seed);
        if (kind < 8) { /* dies at once */
            free_sum += tb_free(p, "random_sizes");
            continue;
        }
        slot = kind < 15 ? &shorts[rng_next(&rng) % SHORT_SLOTS] : &longs[rng_next(&rng) % LONG_SLOTS];
        if (*slot != NULL)
            free_sum += tb_free(*slot, "random_sizes");
        *slot = p;
    }
    for (int i = 0; i < SHORT_SLOTS; i++)
        if (shorts[i] != NULL)
            free_sum += tb_free(shorts[i], "random_sizes (end)");
    for (int i = 0; i < LONG_SLOTS; i++)
        if (longs[i] != NULL)
            free_sum += tb_free(longs[i], "random_sizes (end)");
    free(shorts);
    free(longs);
    w->alloc_sum = alloc_sum; /* once: see run_threads */
    w->free_sum = free_sum;
    return NULL;
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "");
    long ops = scaled(a.scale, 10000000, 1000) / a.threads;
    struct worker *w = xmalloc((size_t)a.threads * sizeof *w);
    uint64_t alloc_sum = 0, free_sum = 0;

    report_malloc_provider();
    for (int t = 0; t < a.threads; t++)
        w[t] = (struct worker){ .id = t, .ops = ops };
    run_threads(a.threads, work, w, sizeof *w);
    for (int t = 0; t < a.threads; t++) {
        alloc_sum += w[t].alloc_sum;
        free_sum += w[t].free_sum;
    }
    if (alloc_sum != free_sum)
        die("random_sizes: sums of blocks freed and allocated differ");
    printf("ok ops=%ld checksum=%016llx\n", ops * a.threads, (unsigned long long)free_sum);
    free(w);
    return 0;
}
