/*
 * larson_server: the Larson & Krishnan server benchmark, with the structure
 * of the public `larson` program that allocator suites run.
 *
 *  - The main thread allocates every block first (5,000 per worker, 8..999
 *    bytes), shuffles them and replaces 4x as many at random, as the public
 *    program's warm-up does: the workers start by freeing blocks that a
 *    thread which is still alive, but never allocates again, carved.
 *  - Each worker owns one slice of 5,000 slots and replaces a random one at
 *    a time: free the old block, allocate one of a random size, write its
 *    first two bytes. Almost every free is local; the data set is a few MiB,
 *    so blocks are cold when they come back.
 *  - After 500,000 replacements a worker starts its successor, which
 *    inherits its slots, and exits (detached): the successor frees blocks
 *    that a dead thread allocated, and heaps come and go all the time.
 *
 * The public program runs for a fixed time and reports throughput; here the
 * work is fixed (a number of generations per slice) so that the runner's
 * wall time compares allocators, and the rate is printed too. The checks
 * keep the benchmark's shape (the workers write two bytes of a block, and
 * read nothing of it before freeing it): each block's first word holds a
 * tag (kept in a side array too) and its last byte a mark, and every live
 * block is checked once at the end. The checksum covers the sizes and tags
 * allocated: it is the same for every allocator and every scheduling.
 *
 * Compiled as C (malloc/free) and, as larson_sized.cc, as C++ with new[]
 * and sized delete[] (operator delete[](p, size)), as the public program's
 * CPP and SIZED variants.
 *
 * usage: larson_server THREADS SCALE
 */
#include "common.h"
#include <stdatomic.h>

#define BLOCKS_PER_THREAD 5000
#define MIN_SIZE 8 /* at least the 8-byte tag */
#define MAX_SIZE 1000
#ifndef LIFETIME
#define LIFETIME 500000L /* replacements before a worker hands over */
#endif

#ifdef LARSON_SIZED
#define BLOCK_NEW(n) (new char[n])
#define BLOCK_DELETE(p, n) operator delete[]((p), (n))
#else
#define BLOCK_NEW(n) ((char *)malloc(n))
#define BLOCK_DELETE(p, n) free(p)
#endif

struct slice {
    char **block;
    size_t *size;
    uint64_t *tag;   /* what each block's first word must hold */
    uint64_t rng;
    long generations_left;
    long ops;        /* replacements done, all generations */
    uint64_t sum;    /* sizes and tags allocated */
    int threads;     /* generations started */
    char pad[64];
};

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static int slices_running;

/* What the first word of a block holds: its slot, size and a counter. */
static inline uint64_t block_tag(size_t slot, size_t size, uint64_t n)
{
    return mix64(((uint64_t)slot << 40) ^ ((uint64_t)size << 20) ^ n);
}

static char *new_block(size_t size, uint64_t tag)
{
    char *p = BLOCK_NEW(size);
    if (p == NULL)
        die("larson_server: allocating %zu bytes failed", size);
    memcpy(p, &tag, sizeof tag); /* MIN_SIZE >= 8 */
    if (size > 8)
        p[size - 1] = 'b';
    return p;
}

static void *worker(void *arg)
{
    struct slice *s = (struct slice *)arg;
    uint64_t rng = s->rng, sum = s->sum;
    long base = s->ops;
    for (long n = 0; n < LIFETIME; n++) {
        size_t victim = (size_t)(rng_next(&rng) % BLOCKS_PER_THREAD);
        BLOCK_DELETE(s->block[victim], s->size[victim]);
        size_t size = MIN_SIZE + (size_t)(rng_next(&rng) % (MAX_SIZE - MIN_SIZE));
        uint64_t tag = block_tag(victim, size, (uint64_t)(base + n));
        s->block[victim] = new_block(size, tag);
        s->size[victim] = size;
        s->tag[victim] = tag;
        sum += size ^ tag;
    }
    s->rng = rng;
    s->sum = sum;
    s->ops = base + LIFETIME;
    s->threads++;
    if (--s->generations_left > 0) {
        /* the successor inherits the slots; this thread exits */
        pthread_t t;
        pthread_attr_t attr;
        int rc;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if ((rc = pthread_create(&t, &attr, worker, s)) != 0)
            die("pthread_create: %s", strerror(rc));
        pthread_attr_destroy(&attr);
        return NULL;
    }
    pthread_mutex_lock(&done_lock);
    if (--slices_running == 0)
        pthread_cond_signal(&done_cond);
    pthread_mutex_unlock(&done_lock);
    return NULL;
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "");
    /* 48M replacements in all, whatever the thread count */
    long generations = scaled(a.scale, 96, 1) / a.threads;
    size_t total = (size_t)a.threads * BLOCKS_PER_THREAD;
    char **block = (char **)xmalloc(total * sizeof *block);
    size_t *size = (size_t *)xmalloc(total * sizeof *size);
    uint64_t *tag = (uint64_t *)xmalloc(total * sizeof *tag);
    struct slice *s = (struct slice *)xmalloc((size_t)a.threads * sizeof *s);
    uint64_t rng = 4141, sum = 0;
    struct timespec t0, t1;

    if (generations < 1)
        generations = 1;
    report_malloc_provider();
    /* warm-up, in the main thread: allocate, shuffle, replace 4x */
    for (size_t i = 0; i < total; i++) {
        size[i] = MIN_SIZE + (size_t)(rng_next(&rng) % (MAX_SIZE - MIN_SIZE));
        block[i] = new_block(size[i], block_tag(i, size[i], 0));
    }
    for (size_t i = total; i > 1; i--) {
        size_t j = (size_t)(rng_next(&rng) % i);
        char *bp = block[j];
        size_t sz = size[j];
        block[j] = block[i - 1];
        size[j] = size[i - 1];
        block[i - 1] = bp;
        size[i - 1] = sz;
    }
    for (size_t n = 0; n < 4 * total; n++) {
        size_t victim = (size_t)(rng_next(&rng) % total);
        BLOCK_DELETE(block[victim], size[victim]);
        size[victim] = MIN_SIZE + (size_t)(rng_next(&rng) % (MAX_SIZE - MIN_SIZE));
        block[victim] = new_block(size[victim], block_tag(victim, size[victim], 0));
    }
    for (size_t i = 0; i < total; i++) {
        tag[i] = block_tag(i, size[i], 0);
        sum += size[i] ^ tag[i];
    }

    clock_gettime(CLOCK_MONOTONIC, &t0);
    slices_running = a.threads;
    for (int t = 0; t < a.threads; t++) {
        s[t].block = block + (size_t)t * BLOCKS_PER_THREAD;
        s[t].size = size + (size_t)t * BLOCKS_PER_THREAD;
        s[t].tag = tag + (size_t)t * BLOCKS_PER_THREAD;
        s[t].rng = 1000 + (uint64_t)t;
        s[t].generations_left = generations;
        s[t].ops = 0;
        s[t].sum = 0;
        s[t].threads = 0;
    }
    for (int t = 0; t < a.threads; t++) {
        pthread_t th;
        int rc;
        if ((rc = pthread_create(&th, NULL, worker, &s[t])) != 0)
            die("pthread_create: %s", strerror(rc));
        pthread_detach(th);
    }
    pthread_mutex_lock(&done_lock);
    while (slices_running > 0)
        pthread_cond_wait(&done_cond, &done_lock);
    pthread_mutex_unlock(&done_lock);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    long ops = 0;
    int threads = 0;
    for (int t = 0; t < a.threads; t++) {
        ops += s[t].ops;
        threads += s[t].threads;
        sum += s[t].sum;
    }
    /* every live block still holds its tag and mark */
    for (size_t k = 0; k < total; k++) {
        char *p = block[k];
        uint64_t got;
        memcpy(&got, p, sizeof got);
        if (got != tag[k] || (size[k] > 8 && p[size[k] - 1] != 'b'))
            die("larson_server: block %p (slot %zu, %zu bytes) was overwritten", (void *)p, k, size[k]);
        BLOCK_DELETE(p, size[k]);
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "larson_server: %ld replacements by %d threads in %.3f s: %.0f per second\n", ops,
            threads, secs, (double)ops / secs);
    printf("ok ops=%ld threads=%d checksum=%016llx\n", ops, threads, (unsigned long long)sum);
    free(block);
    free(size);
    free(tag);
    free(s);
    return 0;
}
