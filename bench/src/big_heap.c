/*
 * big_heap: does the cost of a malloc grow with the size of the heap?
 *
 * One thread grows a heap of blocks of 3.5 to 4 KiB (one size class in
 * most allocators) to 1 GiB (at scale 1), then churns in it: it picks a
 * run of 256 consecutive blocks (about 1 MiB) at random, frees them, and
 * allocates 256 new ones in their place, over and over: a server with a
 * big, long-lived cache of page-sized entries that replaces them in
 * batches. Freeing blocks allocated one after another empties whole
 * pages, which go back to the allocator's shared pool and are taken again
 * at once, so an allocator whose page allocation walks the whole heap gets
 * slower as the heap grows. The growth phase builds the heap; its page
 * faults cost about the same in every allocator.
 *
 * usage: big_heap THREADS SCALE   (THREADS is ignored)
 */
#include "common.h"

#define RUN 256
#define MIN_SIZE 3585
#define MAX_SIZE 4096

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "");
    size_t target = (size_t)scaled(a.scale, 1L << 30, 4L << 20);
    long rounds = scaled(a.scale, 40000, 100);
    size_t cap = target / MIN_SIZE + RUN, n = 0, bytes = 0;
    void **live = xmalloc(cap * sizeof *live);
    uint64_t rng = 7, seed = 0, alloc_sum = 0, free_sum = 0;

    report_malloc_provider();
    while (bytes < target || n % RUN != 0) {
        size_t size = rng_range(&rng, MIN_SIZE, MAX_SIZE);
        live[n++] = tb_new(size, seed);
        alloc_sum += block_hash(size, seed++);
        bytes += size;
    }

    for (long r = 0; r < rounds; r++) {
        size_t start = (size_t)(rng_next(&rng) % (n / RUN)) * RUN;
        for (size_t i = start; i < start + RUN; i++)
            free_sum += tb_free(live[i], "big_heap");
        for (size_t i = start; i < start + RUN; i++) {
            size_t size = rng_range(&rng, MIN_SIZE, MAX_SIZE);
            live[i] = tb_new(size, seed);
            alloc_sum += block_hash(size, seed++);
        }
    }

    for (size_t i = 0; i < n; i++)
        free_sum += tb_free(live[i], "big_heap");
    free(live);
    if (alloc_sum != free_sum)
        die("big_heap: sums of blocks freed (%016llx) and allocated (%016llx) differ",
            (unsigned long long)free_sum, (unsigned long long)alloc_sum);
    printf("ok blocks=%zu rounds=%ld checksum=%016llx\n", n, rounds, (unsigned long long)free_sum);
    return 0;
}
