/*
 * os.c: every kernel call carve makes, and the environment.
 *
 * Keeping mmap, mremap, madvise and munmap behind these few functions puts
 * the policy (what is reserved, what is given back and how) in the modules
 * above, and lets a test see every system call carve makes in one place.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* The value of call, with errno as it was before it. carve's kernel calls
 * keep errno: a failure is the caller's to handle (retry smaller, move the
 * block, or give up and set ENOMEM), and a malloc or free that succeeds
 * must not change errno. */
#define KEEP_ERRNO(call)                                                                     \
    __extension__({                                                                          \
        int saved_ = errno;                                                                  \
        __typeof__(call) r_ = (call);                                                        \
        errno = saved_;                                                                      \
        r_;                                                                                  \
    })

/* reserve: address space only, MAP_NORESERVE keeping untouched memory out
 * of the commit charge (the arena's reservations and bookkeeping: except
 * under strict overcommit, where callers retry smaller). Without it the
 * kernel's overcommit policy applies, as to glibc's mmap'd chunks: a large
 * block the size of a user's request must fail with ENOMEM when it cannot
 * be backed (malloc of 64 GiB on a 24 GiB machine without swap succeeded,
 * and the program would have been killed on touching it). */
static void *map(size_t size, bool reserve) {
    void *p = KEEP_ERRNO(mmap(NULL, size, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | (reserve ? MAP_NORESERVE : 0), -1, 0));
    return p == MAP_FAILED ? NULL : p;
}

void *cv_os_map(size_t size) {
    return map(size, true);
}

/* A mapping of size bytes at an address aligned to align (a power of two
 * at least the page size): over-map, then cut the excess at both ends. */
void *cv_os_map_aligned(size_t size, size_t align, bool reserve) {
    if (size + align < size)
        return NULL;
    uint8_t *p = map(size + align, reserve);
    if (p == NULL)
        return NULL;
    uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = a - (uintptr_t)p;
    size_t tail = align - head;
    if (head)
        cv_os_unmap(p, head);
    if (tail)
        cv_os_unmap((uint8_t *)a + size, tail);
    return (void *)a;
}

/* Asks for transparent huge pages (where THP is in "madvise" mode): one
 * fault per 2 MiB instead of 512. */
void cv_os_hugepage(void *p, size_t size) {
#ifdef MADV_HUGEPAGE
    madvise(p, size, MADV_HUGEPAGE);
#else
    (void)p;
    (void)size;
#endif
}

/* free() unmaps, and must not change errno (munmap can fail: splitting
 * the reservation's mapping at vm.max_map_count). */
bool cv_os_unmap(void *p, size_t size) {
    return size == 0 || KEEP_ERRNO(munmap(p, size)) == 0;
}

/* Debug mode's guard pages: PROT_NONE (rw false) or back to read-write.
 * False when the kernel refuses (vm.max_map_count reached: each guard page
 * splits a mapping in two). */
bool cv_os_protect(void *p, size_t size, bool rw) {
    return KEEP_ERRNO(mprotect(p, size, rw ? PROT_READ | PROT_WRITE : PROT_NONE)) == 0;
}

/* [p, p+size) leaves RSS and any access faults (debug mode's freed blocks
 * and shrunk tails). Dropped and protected in place rather than replaced
 * by a fresh mapping: the range then keeps its mapping's flags and merges
 * with the guard page after it (mprotect'ed the same way), so a freed or
 * shrunk block stays at 2 of vm.max_map_count's mappings; a fresh
 * MAP_NORESERVE mapping there made 3, once blocks were mapped without
 * MAP_NORESERVE. */
bool cv_os_discard(void *p, size_t size) {
    return KEEP_ERRNO(madvise(p, size, MADV_DONTNEED) == 0 && mprotect(p, size, PROT_NONE) == 0);
}

/* Fails (ENOMEM) whenever the address space after p is taken: the caller
 * then moves the block, and a realloc or malloc that succeeds that way must
 * leave errno as it was. */
bool cv_os_remap_inplace(void *p, size_t old_size, size_t new_size) {
    return KEEP_ERRNO(mremap(p, old_size, new_size, 0)) != MAP_FAILED;
}

/* Moves the pages of [p, p+old_size) to dest (replacing whatever mapping is
 * there), grown to new_size: no byte is copied. */
bool cv_os_remap_to(void *p, size_t old_size, size_t new_size, void *dest) {
    return KEEP_ERRNO(mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, dest)) !=
           MAP_FAILED;
}

/* The kernel has no MADV_FREE (Linux before 4.5): MADV_DONTNEED for good. */
static _Atomic bool madv_free_broken;

/* Whether a purge now uses MADV_DONTNEED (pages read as zero after it) or
 * MADV_FREE. A zero-length call checks the advice (and the alignment of
 * the address, so one aligned for any page size) and touches nothing. */
static bool purge_dontneed(bool dontneed) {
#ifdef MADV_FREE
    if (dontneed || atomic_load_explicit(&madv_free_broken, memory_order_relaxed))
        return true;
    static _Atomic bool probed;
    if (!atomic_load_explicit(&probed, memory_order_relaxed)) {
        if (KEEP_ERRNO(madvise((void *)(uintptr_t)CHUNK_SIZE, 0, MADV_FREE)) != 0)
            atomic_store_explicit(&madv_free_broken, true, memory_order_relaxed);
        atomic_store_explicit(&probed, true, memory_order_relaxed);
    }
    return atomic_load_explicit(&madv_free_broken, memory_order_relaxed);
#else
    (void)dontneed;
    return true;
#endif
}

/* Gives the pages' memory back; returns true when they now read as zero.
 * MADV_FREE (Linux 4.5) is cheap and lazy: the kernel takes the pages only
 * under memory pressure, and a page written again before that is simply
 * kept; but they stay in RSS until taken. MADV_DONTNEED drops them at once
 * and they fault in as zero. Where the kernel has no MADV_FREE carve uses
 * MADV_DONTNEED for good. Both fail on locked memory (mlock): the pages
 * then keep what they hold, and saying so keeps calloc clearing them.
 * errno is left as it was: free() purges, and must not change it. */
bool cv_os_purge(void *p, size_t size, bool dontneed) {
    if (size == 0)
        return false;
    int saved = errno;
    bool zero = false;
#ifdef MADV_FREE
    /* a failure here is this range's (locked memory): the probe in
     * purge_dontneed decides for good whether the kernel has MADV_FREE */
    if (!purge_dontneed(dontneed) && madvise(p, size, MADV_FREE) == 0)
        goto out;
#endif
    zero = madvise(p, size, MADV_DONTNEED) == 0;
out:
    errno = saved;
    return zero;
}

/* Faults in [p, p+size) for writing in one call (MADV_POPULATE_WRITE,
 * Linux 5.14): a heap growing into fresh or purged memory otherwise takes
 * one page fault per 4 KiB page it touches. A kernel without it (EINVAL)
 * is not asked again; any other failure (ENOMEM) leaves the pages to fault
 * in as they are touched, as they would have. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
static _Atomic bool populate_broken;

void cv_os_populate(void *p, size_t size) {
    if (atomic_load_explicit(&populate_broken, memory_order_relaxed))
        return;
    int saved = errno;
    if (madvise(p, size, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
        atomic_store_explicit(&populate_broken, true, memory_order_relaxed);
    errno = saved;
}

/* A purge pass gives back many short runs (the free slices between live
 * pages): one madvise each is dear on a virtual machine, most of it the
 * TLB flush, while process_madvise(2) takes many ranges at once, for a
 * fraction of the time of one call per range (figures: doc/design.md,
 * "Giving memory back (purge.c)"; doc/measurements.md). Recent kernels
 * allow it: 6.13 opened every advice to a process's own memory, and the
 * PIDFD_SELF_THREAD sentinel that came after names it with no file
 * descriptor, so nothing needs redoing after fork. Older kernels,
 * and any error, get one madvise per range from then on.
 *
 * A seccomp filter installed after carve started may kill the process on a
 * system call it does not list (sshd's sandbox, Chromium's renderers; and
 * /etc/ld.so.preload puts carve into them): malloc's usual calls are
 * allowed there, process_madvise is not. So a batch goes through it only
 * while the calling thread's status reads "Seccomp: 0" (filters are per
 * thread and never removed: the first sign of one, or a status that cannot
 * be read, ends batching for the process). Reading it costs three cheap
 * calls, so batches shorter than BATCH_MIN are not worth it. */
#define PIDFD_SELF_THREAD_ (-10000)
static _Atomic bool batch_off;

static bool seccomp_free(void) {
    char buf[3072];
    if (cv_os_read_file("/proc/thread-self/status", buf, sizeof buf) == 0)
        return false;
    const char *f = strstr(buf, "\nSeccomp:");
    if (f == NULL) /* a kernel without seccomp, or a status longer than buf */
        return false;
    f += strlen("\nSeccomp:");
    while (*f == ' ' || *f == '\t')
        f++;
    return *f == '0';
}

/* Whether this thread runs under a seccomp filter (or its status cannot
 * be read): such a filter may forbid, or kill on, what carve would do. */
bool cv_os_seccomp_filtered(void) {
    return !seccomp_free();
}

void cv_os_purge_add(os_purge_batch_t *b, void *p, size_t size) {
    CV_ASSERT(b->n < OS_PURGE_BATCH);
    b->range[b->n].base = p;
    b->range[b->n].len = size;
    b->n++;
}

uint64_t cv_os_purge_flush(const os_purge_batch_t *b) {
    unsigned done = 0;
    uint64_t zeroed = 0;
    int saved = errno;
    bool dontneed = purge_dontneed(b->dontneed);
#if defined(SYS_process_madvise) && defined(MADV_FREE)
    if (b->n >= BATCH_MIN && !atomic_load_explicit(&batch_off, memory_order_relaxed)) {
        _Static_assert(sizeof b->range[0] == sizeof(struct iovec), "iovec layout");
        long r = -1;
        if (seccomp_free())
            r = syscall(SYS_process_madvise, PIDFD_SELF_THREAD_, (const struct iovec *)b->range,
                        (size_t)b->n, dontneed ? MADV_DONTNEED : MADV_FREE, 0u);
        if (r < 0) {
            atomic_store_explicit(&batch_off, true, memory_order_relaxed);
        } else {
            /* a short count (not seen in practice): the rest one by one */
            size_t left = (size_t)r;
            while (done < b->n && left >= b->range[done].len)
                left -= b->range[done++].len;
            _Static_assert(OS_PURGE_BATCH <= 64, "one bit of the result per range");
            if (dontneed)
                zeroed = done == 64 ? ~(uint64_t)0 : ((uint64_t)1 << done) - 1;
        }
    }
#endif
    for (unsigned i = done; i < b->n; i++) {
        if (cv_os_purge(b->range[i].base, b->range[i].len, dontneed))
            zeroed |= (uint64_t)1 << i;
    }
    errno = saved;
    return zeroed;
}

/* Never set outside the unit tests (internal.h). */
_Atomic uint64_t cv_os_clock_mock;

uint64_t cv_os_now_ms(void) {
    uint64_t mock = atomic_load_explicit(&cv_os_clock_mock, memory_order_relaxed);
    if (unlikely(mock != 0))
        return mock;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void cv_os_sleep_ms(unsigned ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A whole small file (for /proc and /sys) into buf, NUL-terminated; 0 when
 * it cannot be read. open/read/close only: stdio would allocate. */
static size_t read_file(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return n;
}

/* Files that may well not exist (cgroup v1 or v2 limits): errno is kept,
 * since the first malloc reads them. */
size_t cv_os_read_file(const char *path, char *buf, size_t cap) {
    return KEEP_ERRNO(read_file(path, buf, cap));
}

void cv_os_write_stderr(const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* getenv without the C library: environ may be unset when the dynamic
 * loader makes the first malloc call, and nothing here may allocate. */
const char *cv_os_getenv(const char *name) {
    char **env = environ;
    if (env == NULL)
        return NULL;
    size_t n = strlen(name);
    for (; *env != NULL; env++) {
        if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
            return *env + n + 1;
    }
    return NULL;
}

size_t cv_os_page_size(void) {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : CARVE_PAGE;
}

/* A detached thread of carve's own (the purger, the signal service), with
 * every signal blocked: it inherits the mask of the thread that starts it,
 * and a signal the program blocks in its own threads, to take it with
 * sigwait, must not be delivered to carve's thread and run its default
 * action there (SIGUSR1 killed the process). errno is kept. */
bool cv_os_thread_start(void *(*fn)(void *)) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int saved = errno;
    bool ok = pthread_create(&t, &attr, fn, NULL) == 0;
    errno = saved;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return ok;
}

/* The calling thread's name in top -H, ps -L and /proc/PID/task/TID/comm. */
void cv_os_thread_name(const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
}
