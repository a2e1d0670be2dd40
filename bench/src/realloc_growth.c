/*
 * realloc_growth: buffers grown step by step with realloc, T threads.
 *
 * Each thread keeps 32 buffers growing at once (so that they do not simply
 * extend in place at the end of the heap), appending 1..64 bytes at a time
 * until each reaches its target length (256 B .. 256 KiB, log-uniform).
 * Half of the buffers grow as naive string builders do (realloc to the
 * exact new length at every append), half as vectors do (capacity doubled
 * when full). When a buffer is complete its whole content is checked, then
 * it is freed and a new one started. This measures realloc: growing in
 * place, moving, and the size classes the copies go through.
 *
 * usage: realloc_growth THREADS SCALE
 */
#include "common.h"

#define LIVE 32

struct buffer {
    unsigned char *data;
    size_t len, cap, target;
    uint64_t seed;
    int exact;
};

struct worker {
    int id;
    long buffers;
    uint64_t sum;
};

static inline unsigned char byte_at(uint64_t seed, size_t i)
{
    return (unsigned char)(seed + i * 13 + (i >> 8) * 7);
}

static void start(struct buffer *b, uint64_t *rng, uint64_t seed)
{
    int k = (int)rng_range(rng, 8, 17);
    b->data = NULL;
    b->len = b->cap = 0;
    b->target = rng_range(rng, (size_t)1 << k, ((size_t)2 << k) - 1);
    b->seed = seed;
    b->exact = (int)(seed & 1);
}

static uint64_t finish(struct buffer *b)
{
    uint64_t h = 0;
    for (size_t i = 0; i < b->len; i++) {
        if (b->data[i] != byte_at(b->seed, i))
            die("realloc_growth: buffer %p (length %zu) damaged at byte %zu", (void *)b->data,
                b->len, i);
        h = h * 31 + b->data[i];
    }
    free(b->data);
    return h + b->len;
}

/* Appends one chunk; returns 1 when the buffer reached its target. */
static int append(struct buffer *b, uint64_t *rng)
{
    size_t chunk = rng_range(rng, 1, 64);
    if (b->len + chunk > b->target)
        chunk = b->target - b->len;
    if (b->len + chunk > b->cap) {
        size_t cap = b->exact ? b->len + chunk : (b->cap ? b->cap * 2 : 16);
        unsigned char *p;
        while (cap < b->len + chunk)
            cap *= 2;
        if (b->len > 0 && b->data[b->len - 1] != byte_at(b->seed, b->len - 1))
            die("realloc_growth: buffer %p damaged before realloc", (void *)b->data);
        p = realloc(b->data, cap);
        if (p == NULL)
            die("realloc(%p, %zu) returned NULL", (void *)b->data, cap);
        if (b->len > 0 && (p[0] != byte_at(b->seed, 0) || p[b->len - 1] != byte_at(b->seed, b->len - 1)))
            die("realloc_growth: realloc to %zu lost the content (now at %p)", cap, (void *)p);
        b->data = p;
        b->cap = cap;
    }
    for (size_t i = 0; i < chunk; i++)
        b->data[b->len + i] = byte_at(b->seed, b->len + i);
    b->len += chunk;
    return b->len == b->target;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    struct buffer live[LIVE];
    uint64_t rng = 4242 + (uint64_t)w->id, next = (uint64_t)w->id << 32;
    uint64_t sum = 0;
    long done = 0;
    for (int i = 0; i < LIVE; i++)
        start(&live[i], &rng, next++);
    while (done < w->buffers) {
        for (int i = 0; i < LIVE && done < w->buffers; i++) {
            if (append(&live[i], &rng)) {
                sum += finish(&live[i]);
                done++;
                start(&live[i], &rng, next++);
            }
        }
    }
    for (int i = 0; i < LIVE; i++)
        free(live[i].data); /* unfinished: not counted */
    w->sum = sum; /* once: see run_threads */
    return NULL;
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "");
    long buffers = scaled(a.scale, 4000, a.threads) / a.threads;
    struct worker *w = xmalloc((size_t)a.threads * sizeof *w);
    uint64_t sum = 0;

    report_malloc_provider();
    for (int t = 0; t < a.threads; t++)
        w[t] = (struct worker){ .id = t, .buffers = buffers };
    run_threads(a.threads, work, w, sizeof *w);
    for (int t = 0; t < a.threads; t++)
        sum += w[t].sum;
    printf("ok buffers=%ld checksum=%016llx\n", buffers * a.threads, (unsigned long long)sum);
    free(w);
    return 0;
}
