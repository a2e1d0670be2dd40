/*
 * phases: does memory go back to the kernel between the phases of a program?
 *
 * One thread grows a heap of small blocks of mixed sizes (16..512 bytes) to
 * a target (1 GiB at scale 1), frees about 90% of it, pauses 300 ms (the
 * program is idle, as between requests or jobs), regrows to the target with
 * the same mix of sizes, and so on for ROUNDS rounds (default 3).
 *
 * The 90% is freed in long runs, so that whole pages empty out in every
 * size class, not just holes inside pages: blocks are allocated in batches
 * (BATCH blocks, at least 20,000 and about 1/16 of the target), and of each
 * batch the first 90% are freed and the last 10% kept. An allocator that
 * takes its blocks of one size class in address order then sees, in each
 * class, long runs of freed blocks (the first 90% of a batch) between short
 * runs of live ones; at 1 GiB a batch holds about 7,000 blocks of 32 bytes,
 * over three 64 KiB pages. A shrink frees, besides, every block still live
 * from the previous round (the kept 10%), so the live set after each
 * shrink is about 10% of the target, whatever the round.
 *
 * A sampler thread reads /proc/self/smaps_rollup every 50 ms (not faster: a
 * read walks the page tables, about 20 ms per GiB of 4 KiB pages here; when
 * one read takes more than a fifth of the period, the next waits five times
 * as long as it took, so that the sampler never takes more than a fifth of
 * a CPU) from the start to the end of the last pause, and the program prints
 *
 *   mean_resident_kib=<time average of Rss - LazyFree>
 *   mean_rss_kib=<time average of Rss, as top and ps show it> peak_rss_kib=<max Rss>
 *
 * (each sample counts for the time until the next one, so that a late or
 * slow sample does not skew the mean; without smaps_rollup: Rss from
 * /proc/self/statm, LazyFree taken as 0).
 * Rss - LazyFree leaves out what was given back with MADV_FREE and not yet
 * taken by the kernel: that memory is reclaimable at once. The time the
 * program spends paused is a large part of the run, so an allocator that
 * gives memory back only while it is being called keeps it for the pauses.
 * It also prints, per round, Rss and LazyFree at the end of each phase
 * ("mem rN/grown", "mem rN/shrunk", "mem rN/paused").
 *
 * usage: phases THREADS SCALE [ROUNDS]   (THREADS is ignored)
 */
#include "common.h"
#include <stdatomic.h>
#include <sys/mman.h>

#define MIN_SIZE 16
#define MAX_SIZE 512
#define KEEP_PERCENT 10 /* the last 10% of each batch stays live */
#define PAUSE_MS 300
#define SAMPLE_MS 50

/* ---- the sampler ---------------------------------------------------- */

static struct {
    atomic_int stop;
    long samples;
    double start, last_time; /* seconds */
    double last_resident;    /* KiB, the last sample's Rss - LazyFree */
    double last_rss;         /* KiB, the last sample's Rss (as top shows it) */
    double area;             /* KiB x seconds, up to the last sample */
    double rss_area;         /* the same for Rss */
    double read_time;        /* seconds spent reading, in all */
    long peak_rss;           /* KiB */
    int smaps;
} sampler;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Takes one sample; returns how long the read took (seconds). */
static double sample(void)
{
    double t = now_s(), took;
    struct mem_now m = mem_now();
    took = now_s() - t;
    sampler.read_time += took;
    if (m.rss_kib < 0)
        return took;
    if (sampler.samples++ == 0)
        sampler.start = t;
    else {
        sampler.area += sampler.last_resident * (t - sampler.last_time);
        sampler.rss_area += sampler.last_rss * (t - sampler.last_time);
    }
    sampler.last_time = t;
    sampler.last_resident = (double)(m.rss_kib - m.lazyfree_kib);
    sampler.last_rss = (double)m.rss_kib;
    if (m.rss_kib > sampler.peak_rss)
        sampler.peak_rss = m.rss_kib;
    sampler.smaps = m.smaps;
    return took;
}

static void *sampler_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&sampler.stop)) {
        double took = sample();
        long wait_ms = SAMPLE_MS;
        if (took * 1000.0 * 5 > SAMPLE_MS)
            wait_ms = (long)(took * 1000.0 * 5);
        sleep_ms(wait_ms);
    }
    sample(); /* the end of the last pause */
    return NULL;
}

static double sampler_mean(double area, double last)
{
    double span = sampler.last_time - sampler.start;
    return span > 0 ? area / span : last;
}

/* ---- the heap ------------------------------------------------------- */

static void **live;      /* blocks in allocation order; [0, old) from earlier rounds */
static size_t n_live;
static uint64_t alloc_sum, free_sum;

/* "mem rN/what rss_kib=... lazyfree_kib=..." (the runner shows these lines
 * in a table of their own) */
static void phase_end(int round, const char *what, size_t blocks)
{
    struct mem_now m = mem_now();
    printf("mem r%d/%s rss_kib=%ld lazyfree_kib=%ld\n", round, what, m.rss_kib, m.lazyfree_kib);
    printf("    blocks live %zu, resident %ld KiB, at %.2f s\n", blocks, m.rss_kib - m.lazyfree_kib,
           now_s() - sampler.start);
}

static size_t block_size(void *p) { return (size_t)((uint64_t *)p)[0]; }

static void release(void *p, size_t *bytes)
{
    *bytes -= block_size(p);
    free_sum += tb_free(p, "phases");
}

int main(int argc, char **argv)
{
    struct args a = parse_args(argc, argv, "[ROUNDS]");
    size_t target = (size_t)scaled(a.scale, 1L << 30, 1L << 20);
    int rounds = a.argc > 0 ? atoi(a.argv[0]) : 3;
    size_t batch = target / 16 / ((MIN_SIZE + MAX_SIZE) / 2);
    size_t cap = target / MIN_SIZE + 1, bytes = 0, total = 0;
    uint64_t rng = 4242;
    pthread_t tid;
    int rc;

    if (rounds < 1)
        die("phases: bad ROUNDS %s", a.argv[0]);
    if (batch < 20000)
        batch = 20000;
    /* the list of blocks is the program's own bookkeeping, the same under
     * every allocator: mapped directly (only what is used gets touched) */
    live = mmap(NULL, cap * sizeof *live, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                -1, 0);
    if (live == MAP_FAILED)
        die("phases: mmap of %zu bytes for the block list failed", cap * sizeof *live);

    report_malloc_provider();
    if ((rc = pthread_create(&tid, NULL, sampler_main, NULL)) != 0)
        die("pthread_create: %s", strerror(rc));

    for (int round = 1; round <= rounds; round++) {
        size_t old = n_live, kept = 0, start;
        /* grow: append blocks up to the target */
        while (bytes < target && n_live < cap) {
            size_t size = rng_range(&rng, MIN_SIZE, MAX_SIZE);
            uint64_t seed = ((uint64_t)round << 40) | total++;
            live[n_live++] = tb_new(size, seed);
            alloc_sum += block_hash(size, seed);
            bytes += size;
        }
        phase_end(round, "grown", n_live);

        /* shrink: what the previous round kept, then of each batch of this
         * round the first 90%; the survivors move to the front */
        for (size_t i = 0; i < old; i++)
            release(live[i], &bytes);
        for (start = old; start < n_live; start += batch) {
            size_t len = n_live - start < batch ? n_live - start : batch;
            size_t keep_from = start + len - len * KEEP_PERCENT / 100;
            for (size_t i = start; i < keep_from; i++)
                release(live[i], &bytes);
            for (size_t i = keep_from; i < start + len; i++)
                live[kept++] = live[i];
        }
        n_live = kept;
        phase_end(round, "shrunk", n_live);

        sleep_ms(PAUSE_MS);
        phase_end(round, "paused", n_live);
    }

    atomic_store(&sampler.stop, 1);
    pthread_join(tid, NULL);

    for (size_t i = 0; i < n_live; i++)
        release(live[i], &bytes);
    munmap(live, cap * sizeof *live);
    if (alloc_sum != free_sum || bytes != 0)
        die("phases: sums of blocks freed (%016llx) and allocated (%016llx) differ",
            (unsigned long long)free_sum, (unsigned long long)alloc_sum);
    if (sampler.samples == 0)
        die("phases: could not read /proc/self/smaps_rollup or /proc/self/statm");
    printf("mean_resident_kib=%.0f mean_rss_kib=%.0f peak_rss_kib=%ld\n",
           sampler_mean(sampler.area, sampler.last_resident),
           sampler_mean(sampler.rss_area, sampler.last_rss), sampler.peak_rss);
    printf("sampler: %ld samples over %.2f s from %s, %.1f ms a read\n", sampler.samples,
           sampler.last_time - sampler.start, sampler.smaps ? "smaps_rollup" : "statm",
           sampler.read_time * 1000.0 / (double)sampler.samples);
    printf("ok rounds=%d target=%zu batch=%zu blocks=%llu checksum=%016llx\n", rounds, target, batch,
           (unsigned long long)total, (unsigned long long)free_sum);
    return 0;
}
