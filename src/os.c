/*
 * os.c: every kernel call carve makes, and the environment.
 *
 * Keeping mmap, mremap, madvise and munmap behind these few functions puts
 * the policy (what is reserved, what is given back and how) in the modules
 * above, and lets a test see every system call carve makes in one place.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <sys/mman.h>
#include <unistd.h>

extern char **environ;

/* Address space only: MAP_NORESERVE keeps untouched memory out of the
 * commit charge (except under strict overcommit, where callers retry
 * smaller). */
void *cv_os_map(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* A mapping of size bytes at an address aligned to align (a power of two
 * at least the page size): over-map, then cut the excess at both ends. */
void *cv_os_map_aligned(size_t size, size_t align) {
    if (size + align < size)
        return NULL;
    uint8_t *p = cv_os_map(size + align);
    if (p == NULL)
        return NULL;
    uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = a - (uintptr_t)p;
    size_t tail = align - head;
    if (head)
        munmap(p, head);
    if (tail)
        munmap((uint8_t *)a + size, tail);
    return (void *)a;
}

void cv_os_unmap(void *p, size_t size) {
    if (size)
        munmap(p, size);
}

bool cv_os_remap_inplace(void *p, size_t old_size, size_t new_size) {
    return mremap(p, old_size, new_size, 0) != MAP_FAILED;
}

/* Moves the pages of [p, p+old_size) to dest (replacing whatever mapping is
 * there), grown to new_size: no byte is copied. */
bool cv_os_remap_to(void *p, size_t old_size, size_t new_size, void *dest) {
    return mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, dest) != MAP_FAILED;
}

/* MADV_DONTNEED: the pages read as zero afterwards and leave RSS at once. */
void cv_os_purge(void *p, size_t size) {
    if (size)
        madvise(p, size, MADV_DONTNEED);
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
