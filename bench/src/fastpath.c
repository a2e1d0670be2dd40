/*
 * fastpath: the cost of the allocator's common case, one thread.
 *
 * Phase 1 does malloc/free pairs of small sizes (16..128 bytes, cycling),
 * which a good allocator serves from a per-thread cache in a few dozen
 * instructions. Phase 2 allocates many blocks, then frees them all (in
 * allocation order, then in reverse), which exercises the refill and flush
 * paths behind that cache. Each block carries its index in its first and
 * last word, checked before it is freed.
 *
 * usage: fastpath THREADS SCALE [all|pairs] [PAIRS]
 *   THREADS is ignored (always one thread); "pairs" runs phase 1 only, with
 *   exactly PAIRS iterations when given (the callgrind mode uses that).
 */
#include "common.h"

static uint64_t pairs(long n)
{
    uint64_t sum = 0;
    for (long i = 0; i < n; i++) {
        size_t size = 16 + (size_t)(i & 7) * 16;
        uint64_t *p = malloc(size);
        if (p == NULL)
            die("malloc(%zu) returned NULL", size);
        p[0] = (uint64_t)i;
        p[size / 8 - 1] = ~(uint64_t)i;
        ESCAPE(p);
        if (p[0] != (uint64_t)i || p[size / 8 - 1] != ~(uint64_t)i)
            die("pairs: block %p of size %zu damaged", (void *)p, size);
        sum += p[0] ^ (size << 40);
        free(p);
    }
    return sum;
}

static uint64_t many_then_free(long rounds, long count)
{
    uint64_t **blocks = xmalloc((size_t)count * sizeof *blocks);
    uint64_t sum = 0;
    for (long r = 0; r < rounds; r++) {
        for (long i = 0; i < count; i++) {
            size_t size = 16 + (size_t)((i + r) & 7) * 16;
            uint64_t *p = xmalloc(size);
            p[0] = (uint64_t)i;
            p[size / 8 - 1] = (uint64_t)i * 3 + size;
            blocks[i] = p;
        }
        for (long k = 0; k < count; k++) {
            long i = (r & 1) ? count - 1 - k : k;
            size_t size = 16 + (size_t)((i + r) & 7) * 16;
            uint64_t *p = blocks[i];
            if (p[0] != (uint64_t)i || p[size / 8 - 1] != (uint64_t)i * 3 + size)
                die("many-then-free: block %p (size %zu, index %ld) damaged", (void *)p, size, i);
            sum += p[0] + size;
            free(p);
        }
    }
    free(blocks);
    return sum;
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "[all|pairs] [PAIRS]");
    const char *mode = a.argc > 0 ? a.argv[0] : "all";
    long npairs = a.argc > 1 ? atol(a.argv[1]) : scaled(a.scale, 30000000, 1000);
    uint64_t sum;

    report_malloc_provider();
    if (strcmp(mode, "pairs") == 0) {
        sum = pairs(npairs);
    } else if (strcmp(mode, "all") == 0) {
        sum = pairs(npairs);
        sum += many_then_free(20, scaled(a.scale, 250000, 1000));
    } else {
        die("unknown mode '%s' (all or pairs)", mode);
    }
    printf("ok pairs=%ld checksum=%016llx\n", npairs, (unsigned long long)sum);
    return 0;
}
