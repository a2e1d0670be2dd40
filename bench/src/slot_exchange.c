/*
 * slot_exchange: threads hand objects to each other through a shared array
 * of slots, as a server's workers do with requests and buffers.
 *
 * Each of T threads repeatedly allocates a block of 16..1,016 bytes, writes
 * its header (size and a seed) and its last byte, swaps it into a random
 * slot with one atomic exchange, and frees the block it took out. With T
 * threads a block is freed by another thread than the one that allocated it
 * about (T-1)/T of the time: half at 2 threads. The freeing thread reads
 * the block only one time in 64 (its header and last byte, checked), so that
 * the cost of the first touch of a block another core wrote falls where the
 * allocator puts it (a free that writes a link into the block takes it),
 * not in the program; main checks every block left at the end. Unlike
 * `larson`, which writes and checks every cache line of a block, this
 * measures the allocator's remote-free path.
 *
 * The checksum is the sum of the hashes of the blocks allocated (the same
 * for every allocator and scheduling); a damaged block, checked, stops the
 * run.
 *
 * usage: slot_exchange THREADS SCALE
 */
#include "common.h"
#include <stdatomic.h>

#define SLOTS 16384
#define MIN_SIZE 16
#define MAX_SIZE 1016

static _Atomic(uint64_t *) slots[SLOTS];

struct worker {
    int id;
    long ops;
    uint64_t alloc_sum;
    char pad[64];
};

static uint64_t *new_block(size_t size, uint64_t seed)
{
    uint64_t *p = (uint64_t *)xmalloc(size);
    p[0] = size;
    p[1] = seed;
    if (size > 16) /* a 16-byte block is all header */
        ((unsigned char *)p)[size - 1] = (unsigned char)seed;
    return p;
}

/* Checks the header and the last byte. */
static void check_block(const uint64_t *p)
{
    uint64_t size = p[0], seed = p[1];
    if (size < MIN_SIZE || size > MAX_SIZE ||
        (size > 16 && ((const unsigned char *)p)[size - 1] != (unsigned char)seed))
        die("slot_exchange: block %p was overwritten (size word %llu)", (const void *)p,
            (unsigned long long)size);
}

static void *work(void *arg)
{
    struct worker *w = (struct worker *)arg;
    uint64_t rng = 77 + (uint64_t)w->id, alloc_sum = 0;
    for (long n = 0; n < w->ops; n++) {
        size_t slot = (size_t)(rng_next(&rng) % SLOTS);
        size_t size = rng_range(&rng, MIN_SIZE, MAX_SIZE);
        uint64_t seed = ((uint64_t)(w->id + 1) << 40) | (uint64_t)n;
        uint64_t *old = atomic_exchange(&slots[slot], new_block(size, seed));
        alloc_sum += block_hash(size, seed);
        if (old != NULL) {
            if ((n & 63) == 0)
                check_block(old);
            free(old);
        }
    }
    w->alloc_sum = alloc_sum; /* once: see run_threads */
    return NULL;
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "");
    long total_ops = scaled(a.scale, 16000000, 1000);
    struct worker *w = (struct worker *)xmalloc((size_t)a.threads * sizeof *w);
    uint64_t alloc_sum = 0;

    report_malloc_provider();
    for (int t = 0; t < a.threads; t++)
        w[t] = (struct worker){ .id = t, .ops = total_ops / a.threads };
    run_threads(a.threads, work, w, sizeof *w);
    for (int t = 0; t < a.threads; t++)
        alloc_sum += w[t].alloc_sum;
    for (size_t i = 0; i < SLOTS; i++) {
        uint64_t *p = atomic_exchange(&slots[i], NULL);
        if (p != NULL) {
            check_block(p);
            free(p);
        }
    }
    printf("ok ops=%ld checksum=%016llx\n", total_ops / a.threads * a.threads, (unsigned long long)alloc_sum);
    free(w);
    return 0;
}
