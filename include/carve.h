/*
 * carve: a general-purpose memory allocator.
 *
 * libcarve exports the whole malloc family under the standard names (so that
 * linking it, or preloading it, replaces the C library's allocator) and the
 * same functions behind the carve_ prefix, declared here, for programs that
 * want carve beside another allocator.
 *
 * Semantics follow the C standard, POSIX and glibc: blocks of 16 bytes and
 * more are 16-byte aligned; malloc(0) returns a unique pointer that must be
 * freed; failure returns NULL with errno == ENOMEM; realloc(p, 0) frees p and
 * returns NULL, as glibc does.
 */
#ifndef CARVE_H
#define CARVE_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CARVE_VERSION_MAJOR 0
#define CARVE_VERSION_MINOR 1
#define CARVE_VERSION_PATCH 0
#define CARVE_VERSION "0.1.0"

/* One macro per arity, not a variadic one: the header must compile as C89
 * and C++98 under -pedantic, which have no variadic macros. */
#if defined(__GNUC__)
#define CARVE_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#define CARVE_ALLOC_SIZE(n) __attribute__((alloc_size(n)))
#define CARVE_ALLOC_SIZE2(n, m) __attribute__((alloc_size(n, m)))
#else
#define CARVE_MALLOC_ATTR
#define CARVE_ALLOC_SIZE(n)
#define CARVE_ALLOC_SIZE2(n, m)
#endif

CARVE_MALLOC_ATTR CARVE_ALLOC_SIZE(1) void *carve_malloc(size_t size);
void carve_free(void *ptr);
CARVE_MALLOC_ATTR CARVE_ALLOC_SIZE2(1, 2) void *carve_calloc(size_t nmemb, size_t size);
CARVE_ALLOC_SIZE(2) void *carve_realloc(void *ptr, size_t size);
CARVE_ALLOC_SIZE2(2, 3) void *carve_reallocarray(void *ptr, size_t nmemb, size_t size);

/* alignment must be a power of two; otherwise NULL with errno == EINVAL. */
CARVE_MALLOC_ATTR CARVE_ALLOC_SIZE(2) void *carve_aligned_alloc(size_t alignment, size_t size);
/* Returns 0, EINVAL (alignment not a power of two multiple of sizeof(void *))
 * or ENOMEM; never changes errno. */
int carve_posix_memalign(void **memptr, size_t alignment, size_t size);
/* glibc semantics: an alignment that is not a power of two is rounded up. */
CARVE_MALLOC_ATTR CARVE_ALLOC_SIZE(2) void *carve_memalign(size_t alignment, size_t size);
CARVE_MALLOC_ATTR CARVE_ALLOC_SIZE(1) void *carve_valloc(size_t size);
/* size rounded up to a multiple of the page size; pvalloc(0) gives one page. */
CARVE_MALLOC_ATTR void *carve_pvalloc(size_t size);

/* Bytes usable in the block (at least what was asked for); 0 for NULL. */
size_t carve_malloc_usable_size(void *ptr);
/* C23: size must be the size asked for when ptr was allocated. */
void carve_free_sized(void *ptr, size_t size);
void carve_free_aligned_sized(void *ptr, size_t alignment, size_t size);

/* Returns free memory to the kernel now; 1 if anything was released. */
int carve_malloc_trim(size_t pad);

/* What carve holds, in bytes unless said otherwise. "committed" is memory
 * carve has touched and not given back since (an upper bound of its share
 * of RSS); "purged" counts bytes given back to the kernel since start
 * (MADV_FREE'd memory stays in RSS until the kernel reclaims it). */
#define CARVE_STATS_CLASSES 64
struct carve_class_stats {
    size_t size;      /* block size of the class */
    size_t pages;     /* pages serving it now */
    size_t live;      /* blocks allocated and not freed (blocks in thread
                         caches are free; frees handed to another thread's
                         page count until that thread has collected them) */
    size_t mapped;    /* bytes of its pages */
    size_t committed; /* bytes of its pages touched so far */
    size_t purged;    /* bytes of freed pages of this class purged since start */
};
/* carve's locks: how often each was taken, and how often a thread found it
 * held by another and waited. */
#define CARVE_STATS_LOCKS 4
struct carve_lock_stats {
    const char *name; /* "arena", "large cache", "debug quarantine", "heaps" (every
                         thread heap's lock, summed: owners' slow paths, and other
                         threads' tries to take back pages they emptied) */
    size_t acquired;
    size_t contended;
};
struct carve_stats {
    size_t mapped;          /* chunks and large mappings (address space) */
    size_t committed;       /* touched and not purged: small slices + large */
    size_t purged;          /* small slices and cached large mappings given back */
    size_t lazy;            /* given back with MADV_FREE and not used since: the
                               kernel takes it when it needs memory, and until then
                               it stays in RSS (LazyFree in smaps) */
    size_t live;            /* bytes in live blocks, small (by class) and large */
    size_t chunks;          /* 4 MiB chunks mapped now */
    size_t large_live;      /* live large blocks (count) */
    size_t large_mapped;    /* bytes of live large blocks' mappings */
    size_t large_cached;    /* bytes of freed large mappings kept for reuse */
    size_t cgroup_limit;    /* the memory limit carve adapts to, 0 if none */
    size_t class_count;     /* entries used in classes[] */
    struct carve_class_stats classes[CARVE_STATS_CLASSES];
    size_t lock_count;      /* entries used in locks[] */
    struct carve_lock_stats locks[CARVE_STATS_LOCKS];
};
void carve_stats_read(struct carve_stats *stats);

/* Sets one option as CARVE_OPTIONS would ("purge=dontneed", "decay_ms=0");
 * 0 on success, -1 (and a message on stderr) otherwise. Options are read
 * without synchronisation: set them before starting threads. */
int carve_option_set(const char *key_value);

/* Human-readable statistics on stderr (carve_stats_print is the same). */
void carve_malloc_stats(void);
void carve_stats_print(void);

/* glibc-compatible summary; fields that have no meaning in carve are 0. */
struct carve_mallinfo2 {
    size_t arena;    /* bytes mapped for small and medium blocks */
    size_t ordblks;  /* 0: carve keeps no list of free chunks */
    size_t smblks;
    size_t hblks;    /* number of large mappings */
    size_t hblkhd;   /* bytes in large mappings */
    size_t usmblks;
    size_t fsmblks;
    size_t uordblks; /* bytes in live blocks (by size class) */
    size_t fordblks; /* bytes mapped but not in live blocks */
    size_t keepcost;
};
struct carve_mallinfo2 carve_mallinfo2(void);
/* The older mallinfo, with int fields (which glibc lets wrap past 2 GiB;
 * carve caps them at INT_MAX), for programs built before mallinfo2. */
struct carve_mallinfo {
    int arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};
struct carve_mallinfo carve_mallinfo(void);
/* glibc's malloc_info: an XML summary on fp, in glibc's elements (free
 * blocks by size class, totals, mapped address space). options must be 0
 * and fp not NULL, else it returns EINVAL (as glibc, errno untouched);
 * 0 on success, -1 if writing to fp failed. */
int carve_malloc_info(int options, FILE *fp);
/* glibc's tunables have no effect on carve; returns 1, as glibc does for
 * its parameters and unknown ones alike. */
int carve_mallopt(int param, int value);

#ifdef __cplusplus
}
#endif

#endif /* CARVE_H */
