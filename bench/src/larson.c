/*
 * larson: server-style churn, after the Larson & Krishnan benchmark.
 *
 * A shared array of slots holds live blocks. Each of T threads repeatedly
 * picks a random slot, allocates a new block of random size (16..1024
 * bytes), fills it, swaps it into the slot, and checks and frees the block
 * that was there, which another thread (or the main thread, which filled
 * the array) usually allocated. This is what a server does with requests
 * handed between worker threads: it measures the remote-free path and how
 * well the allocator keeps memory from piling up in the wrong thread.
 *
 * Every block is filled with a pattern; the sum of the hashes of all blocks
 * freed must equal the sum of those allocated, and it is the printed
 * checksum (the same for every allocator and every scheduling).
 *
 * usage: larson THREADS SCALE
 */
#include "common.h"
#include <stdatomic.h>

#define SLOTS 20000
#define MIN_SIZE 16
#define MAX_SIZE 1024

static _Atomic(void *) slots[SLOTS];

struct worker {
    int id;
    long ops;
    uint64_t alloc_sum, free_sum;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = 1000 + (uint64_t)w->id, alloc_sum = 0, free_sum = 0;
    for (long n = 0; n < w->ops; n++) {
        size_t slot = rng_range(&rng, 0, SLOTS - 1);
        size_t size = rng_range(&rng, MIN_SIZE, MAX_SIZE);
        uint64_t seed = ((uint64_t)(w->id + 1) << 40) | (uint64_t)n;
        void *fresh = tb_new(size, seed), *old;
        alloc_sum += block_hash(size, seed);
        old = atomic_exchange(&slots[slot], fresh);
        if (old != NULL)
            free_sum += tb_free(old, "larson");
    }
    w->alloc_sum = alloc_sum; /* once: see run_threads */
    w->free_sum = free_sum;
    return NULL;
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "");
    long total_ops = scaled(a.scale, 6000000, 1000);
    struct worker *w = xmalloc((size_t)a.threads * sizeof *w);
    uint64_t rng = 1, alloc_sum = 0, free_sum = 0;

    report_malloc_provider();
    for (size_t i = 0; i < SLOTS; i++) {
        size_t size = rng_range(&rng, MIN_SIZE, MAX_SIZE);
        atomic_store(&slots[i], tb_new(size, i));
        alloc_sum += block_hash(size, i);
    }
    for (int t = 0; t < a.threads; t++)
        w[t] = (struct worker){ .id = t, .ops = total_ops / a.threads };
    run_threads(a.threads, work, w, sizeof *w);
    for (int t = 0; t < a.threads; t++) {
        alloc_sum += w[t].alloc_sum;
        free_sum += w[t].free_sum;
    }
    for (size_t i = 0; i < SLOTS; i++)
        free_sum += tb_free(atomic_exchange(&slots[i], NULL), "larson (final)");
    if (alloc_sum != free_sum)
        die("larson: blocks freed (%016llx) differ from blocks allocated (%016llx)",
            (unsigned long long)free_sum, (unsigned long long)alloc_sum);
    printf("ok ops=%ld checksum=%016llx\n", total_ops / a.threads * a.threads,
           (unsigned long long)free_sum);
    free(w);
    return 0;
}
