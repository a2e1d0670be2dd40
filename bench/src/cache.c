/*
 * cache: false-sharing probes, after Hoard's cache-thrash and cache-scratch.
 *
 * Each thread allocates a small object (8 bytes), writes every byte of it
 * in a tight loop, checks it, frees it, and starts again. If the allocator
 * puts objects of different threads in one cache line, the line bounces
 * between cores and the loop runs many times slower.
 *
 *  thrash:  every thread allocates its own objects (active false sharing:
 *           does the allocator hand neighbouring blocks to different threads?)
 *  scratch: the main thread first allocates one object per thread, side by
 *           side, and each thread frees the one it is given before starting
 *           its loop (passive false sharing: does a freed block go back to
 *           the thread that frees it, next to another thread's objects?)
 *
 * usage: cache THREADS SCALE thrash|scratch
 */
#include "common.h"

#define OBJ_SIZE 8
#define WRITES 20000 /* passes over the object per round */

struct worker {
    int id;
    long rounds;
    void *given; /* scratch: the object from the main thread */
    uint64_t sum;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    uint64_t sum = 0;
    if (w->given != NULL)
        free(w->given);
    for (long r = 0; r < w->rounds; r++) {
        volatile unsigned char *p = xmalloc(OBJ_SIZE);
        unsigned char start = (unsigned char)(w->id * 31 + r);
        for (int j = 0; j < OBJ_SIZE; j++)
            p[j] = start;
        for (int n = 0; n < WRITES; n++)
            for (int j = 0; j < OBJ_SIZE; j++)
                p[j]++;
        for (int j = 0; j < OBJ_SIZE; j++) {
            if (p[j] != (unsigned char)(start + WRITES))
                die("cache: object %p byte %d is %u, expected %u", (void *)p, j, p[j],
                    (unsigned char)(start + WRITES));
            sum += p[j] * (uint64_t)(j + 1);
        }
        free((void *)p);
    }
    w->sum = sum; /* once: see run_threads */
    return NULL;
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "thrash|scratch");
    const char *mode = a.argc > 0 ? a.argv[0] : "";
    int scratch = strcmp(mode, "scratch") == 0;
    long rounds = scaled(a.scale, 10000, a.threads) / a.threads;
    struct worker *w = xmalloc((size_t)a.threads * sizeof *w);
    uint64_t sum = 0;

    if (!scratch && strcmp(mode, "thrash") != 0)
        die("cache: mode must be thrash or scratch, not '%s'", mode);
    report_malloc_provider();
    for (int t = 0; t < a.threads; t++)
        w[t] = (struct worker){ .id = t, .rounds = rounds,
                                .given = scratch ? xmalloc(OBJ_SIZE) : NULL };
    run_threads(a.threads, work, w, sizeof *w);
    for (int t = 0; t < a.threads; t++)
        sum += w[t].sum;
    printf("ok rounds=%ld checksum=%016llx\n", rounds * a.threads, (unsigned long long)sum);
    free(w);
    return 0;
}
