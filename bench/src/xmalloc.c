/*
 * xmalloc: producer/consumer, after xmalloc-test.
 *
 * Half of the threads allocate blocks (16..512 bytes), fill them, and pass
 * them in batches of 64 through a lock-protected ring; the other half take
 * the batches, check the blocks and free them. Every block dies in a thread
 * that did not allocate it, and the allocating threads never see their
 * memory come back directly: this measures the remote-free path and how
 * freed memory flows back to the threads that allocate (allocators that
 * cache freed blocks per thread can also grow without bound here).
 *
 * usage: xmalloc THREADS SCALE   (at least 2 threads run: 1 producer, 1 consumer)
 */
#include "common.h"

#define BATCH 64
#define RING 32 /* batches in flight at most */

struct batch {
    void *blocks[BATCH];
    int n;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    struct batch ring[RING];
    int head, count, producers_left;
} q = { .lock = PTHREAD_MUTEX_INITIALIZER,
        .not_empty = PTHREAD_COND_INITIALIZER,
        .not_full = PTHREAD_COND_INITIALIZER };

struct worker {
    int id;
    long blocks;              /* for producers: how many to make */
    uint64_t alloc_sum, free_sum;
    long freed;
};

static void put(const struct batch *b)
{
    pthread_mutex_lock(&q.lock);
    while (q.count == RING)
        pthread_cond_wait(&q.not_full, &q.lock);
    q.ring[(q.head + q.count) % RING] = *b;
    q.count++;
    pthread_cond_signal(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
}

/* Returns 0 when all producers are done and the ring is empty. */
static int take(struct batch *b)
{
    pthread_mutex_lock(&q.lock);
    while (q.count == 0 && q.producers_left > 0)
        pthread_cond_wait(&q.not_empty, &q.lock);
    if (q.count == 0) {
        pthread_mutex_unlock(&q.lock);
        return 0;
    }
    *b = q.ring[q.head];
    q.head = (q.head + 1) % RING;
    q.count--;
    pthread_cond_signal(&q.not_full);
    pthread_mutex_unlock(&q.lock);
    return 1;
}

static void *producer(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = 7000 + (uint64_t)w->id, alloc_sum = 0;
    struct batch b = { .n = 0 };
    for (long i = 0; i < w->blocks; i++) {
        size_t size = rng_range(&rng, 16, 512);
        uint64_t seed = ((uint64_t)(w->id + 1) << 40) | (uint64_t)i;
        b.blocks[b.n++] = tb_new(size, seed);
        alloc_sum += block_hash(size, seed);
        if (b.n == BATCH || i == w->blocks - 1) {
            put(&b);
            b.n = 0;
        }
    }
    w->alloc_sum = alloc_sum; /* once: see run_threads */
    pthread_mutex_lock(&q.lock);
    if (--q.producers_left == 0)
        pthread_cond_broadcast(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
    return NULL;
}

static void *consumer(void *arg)
{
    struct worker *w = arg;
    struct batch b;
    uint64_t free_sum = 0;
    long freed = 0;
    while (take(&b)) {
        for (int i = 0; i < b.n; i++)
            free_sum += tb_free(b.blocks[i], "xmalloc");
        freed += b.n;
    }
    w->free_sum = free_sum; /* once: see run_threads */
    w->freed = freed;
    return NULL;
}

static void *role(void *arg)
{
    struct worker *w = arg;
    return w->blocks > 0 ? producer(arg) : consumer(arg);
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "");
    int threads = a.threads < 2 ? 2 : a.threads;
    int producers = threads / 2;
    long total = scaled(a.scale, 8000000, 1000) / producers * producers;
    struct worker *w = xmalloc((size_t)threads * sizeof *w);
    uint64_t alloc_sum = 0, free_sum = 0;
    long freed = 0;

    report_malloc_provider();
    q.producers_left = producers;
    for (int t = 0; t < threads; t++)
        w[t] = (struct worker){ .id = t, .blocks = t < producers ? total / producers : 0 };
    run_threads(threads, role, w, sizeof *w);
    for (int t = 0; t < threads; t++) {
        alloc_sum += w[t].alloc_sum;
        free_sum += w[t].free_sum;
        freed += w[t].freed;
    }
    if (freed != total || alloc_sum != free_sum)
        die("xmalloc: %ld blocks made, %ld freed; sums %016llx vs %016llx", total, freed,
            (unsigned long long)alloc_sum, (unsigned long long)free_sum);
    printf("ok blocks=%ld checksum=%016llx\n", total, (unsigned long long)free_sum);
    free(w);
    return 0;
}
