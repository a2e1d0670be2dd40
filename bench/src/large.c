/*
 * large: big blocks, 64 KiB to 32 MiB, T threads.
 *
 * Each thread keeps four big blocks; at each step it replaces one of them,
 * at random, by a new block of a log-uniform size between 64 KiB and
 * 32 MiB, which it touches entirely (memset) as a program would. Before a
 * block is freed one byte per page and its last byte are checked. This
 * measures the large-block path: mmap/munmap versus reuse, page faults on
 * fresh memory, and how much memory stays mapped (peak RSS).
 *
 * usage: large THREADS SCALE
 */
#include "common.h"

#define KEEP 4

struct big {
    unsigned char *p;
    size_t size;
    unsigned char value;
};

struct worker {
    int id;
    long steps;
    uint64_t sum;
};

static uint64_t check_and_free(struct big *b)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < b->size; i += 4096)
        if (b->p[i] != b->value)
            die("large: block %p (size %zu) damaged at byte %zu", (void *)b->p, b->size, i);
    if (b->p[b->size - 1] != b->value)
        die("large: block %p (size %zu) damaged at its end", (void *)b->p, b->size);
    sum = b->size * b->value;
    free(b->p);
    b->p = NULL;
    return sum;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    struct big keep[KEEP] = { { 0 } };
    uint64_t rng = 555 + (uint64_t)w->id, sum = 0;
    for (long n = 0; n < w->steps; n++) {
        struct big *b = &keep[rng_next(&rng) % KEEP];
        int k = (int)rng_range(&rng, 16, 24);
        if (b->p != NULL)
            sum += check_and_free(b);
        b->size = rng_range(&rng, (size_t)1 << k, (size_t)2 << k);
        b->value = (unsigned char)(1 + n % 255);
        b->p = xmalloc(b->size);
        memset(b->p, b->value, b->size);
    }
    for (int i = 0; i < KEEP; i++)
        if (keep[i].p != NULL)
            sum += check_and_free(&keep[i]);
    w->sum = sum; /* once: see run_threads */
    return NULL;
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "");
    long steps = scaled(a.scale, 250, a.threads) / a.threads;
    struct worker *w = xmalloc((size_t)a.threads * sizeof *w);
    uint64_t sum = 0;

    report_malloc_provider();
    for (int t = 0; t < a.threads; t++)
        w[t] = (struct worker){ .id = t, .steps = steps };
    run_threads(a.threads, work, w, sizeof *w);
    for (int t = 0; t < a.threads; t++)
        sum += w[t].sum;
    printf("ok steps=%ld checksum=%016llx\n", steps * a.threads, (unsigned long long)sum);
    free(w);
    return 0;
}
