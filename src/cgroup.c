/*
 * cgroup.c: the memory limit of carve's cgroup, and whether carve is near it.
 *
 * Pages given back with MADV_FREE stay charged to the cgroup until the
 * kernel reclaims them, and near memory.max the kernel throttles or kills
 * before it gets there. carve reads its cgroup's limit at start (v2
 * memory.max and memory.high of the cgroup and its ancestors, or v1
 * memory.limit_in_bytes) and, once what it holds passes 3/4 of the limit,
 * purge.c purges at once and with MADV_DONTNEED, and large.c stops caching
 * freed mappings.
 */
#include "internal.h"

static struct {
    size_t limit; /* bytes, 0 if none; written once, at initialisation */
} cgroup;

/* The content of a memory.max, memory.high or memory.limit_in_bytes file:
 * bytes, 0 for no limit. */
size_t cv_cgroup_parse_limit(const char *s) {
    size_t v;
    if (cv_msg_parse_uint(s, strlen(s), &v) == 0)
        return 0; /* "max" (or a number past size_t: no limit either) */
    /* v1 reports "no limit" as a huge page-rounded number */
    return v >= ((size_t)1 << 60) ? 0 : v;
}

static size_t min_limit(size_t a, size_t b) {
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

/* path = dir + "/" + file, bounded. */
static void join(char *out, size_t cap, const char *dir, size_t dlen, const char *file) {
    size_t n = dlen < cap - 1 ? dlen : cap - 1;
    memcpy(out, dir, n);
    out[n] = '\0';
    cv_msg_format(out + n, cap - n, "/%s", file);
}

static size_t limit_in(const char *dir, size_t dlen, const char *file) {
    char path[512], buf[64];
    join(path, sizeof path, dir, dlen, file);
    if (cv_os_read_file(path, buf, sizeof buf) == 0)
        return 0;
    return cv_cgroup_parse_limit(buf);
}

/* The tightest limit along the cgroup path and its ancestors, under root
 * (v2: memory.max and memory.high; v1: memory.limit_in_bytes). */
static size_t cgroup_walk(const char *root, const char *cg_path, size_t len, bool v2) {
    char dir[512];
    size_t n = cv_msg_format(dir, sizeof dir, "%s", root);
    if (n + len >= sizeof dir)
        return 0;
    memcpy(dir + n, cg_path, len);
    size_t dlen = n + len;
    while (dlen > 0 && dir[dlen - 1] == '/')
        dlen--;
    size_t limit = 0;
    for (;;) {
        if (v2) {
            limit = min_limit(limit, limit_in(dir, dlen, "memory.max"));
            limit = min_limit(limit, limit_in(dir, dlen, "memory.high"));
        } else {
            limit = min_limit(limit, limit_in(dir, dlen, "memory.limit_in_bytes"));
        }
        if (dlen <= n)
            break;
        while (dlen > n && dir[dlen - 1] != '/')
            dlen--;
        if (dlen > n)
            dlen--; /* drop the '/' */
    }
    return limit;
}

/* The tightest limit of the cgroups that self_cgroup (what
 * /proc/self/cgroup reads) names, in the hierarchies mounted under root:
 * v2 at root and root/unified (hybrid layouts), v1's memory controller at
 * root/memory. A parameter, not a constant, so that the unit tests can
 * build such a tree in a directory of their own. */
size_t cv_cgroup_limit_under(const char *self_cgroup, const char *root) {
    char unified[256], memory[256];
    cv_msg_format(unified, sizeof unified, "%s/unified", root);
    cv_msg_format(memory, sizeof memory, "%s/memory", root);
    size_t limit = 0;
    for (const char *line = self_cgroup; *line;) {
        const char *end = line;
        while (*end && *end != '\n')
            end++;
        /* "id:controllers:path" */
        const char *c1 = line;
        while (c1 < end && *c1 != ':')
            c1++;
        const char *c2 = c1 < end ? c1 + 1 : end;
        while (c2 < end && *c2 != ':')
            c2++;
        if (c2 < end) {
            const char *ctl = c1 + 1;
            size_t ctl_len = (size_t)(c2 - ctl);
            const char *path = c2 + 1;
            size_t plen = (size_t)(end - path);
            if (ctl_len == 0 && line[0] == '0') {
                limit = min_limit(limit, cgroup_walk(root, path, plen, true));
                /* hybrid layouts mount the v2 hierarchy here */
                limit = min_limit(limit, cgroup_walk(unified, path, plen, true));
            } else {
                for (const char *w = ctl; w + 6 <= c2; w++) {
                    if (strncmp(w, "memory", 6) == 0 && (w == ctl || w[-1] == ',') &&
                        (w + 6 == c2 || w[6] == ',')) {
                        limit = min_limit(limit, cgroup_walk(memory, path, plen, false));
                        break;
                    }
                }
            }
        }
        line = *end ? end + 1 : end;
    }
    return limit;
}

void cv_cgroup_init(void) {
    char buf[2048];
    if (cv_options.cgroup)
        cgroup.limit = cv_os_read_file("/proc/self/cgroup", buf, sizeof buf) != 0
                           ? cv_cgroup_limit_under(buf, "/sys/fs/cgroup")
                           : 0;
}

size_t cv_cgroup_limit(void) {
    return cgroup.limit;
}

/* What carve holds in memory, by its own accounting: touched slices that
 * were not purged or were purged lazily (still charged to the cgroup),
 * live large blocks and the large cache, lazy entries included. */
static size_t held_bytes(void) {
    return atomic_load_explicit(&cv_stats.small_committed, memory_order_relaxed) +
           atomic_load_explicit(&cv_stats.small_lazy, memory_order_relaxed) +
           atomic_load_explicit(&cv_stats.large_bytes, memory_order_relaxed) +
           atomic_load_explicit(&cv_stats.large_cached, memory_order_relaxed) +
           atomic_load_explicit(&cv_stats.large_lazy, memory_order_relaxed);
}

bool cv_cgroup_pressure(void) {
    return cgroup.limit != 0 && held_bytes() >= cgroup.limit / 4 * 3;
}

