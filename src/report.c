/*
 * report.c: what carve prints when a program misuses the heap, release
 * and debug builds alike: one line, "carve: <what> of 0x<addr> (<detail>)
 * in <function>()", then a backtrace and abort() (msg.c's fatal path).
 *
 * The release build's reports (a pointer that is no block start, described
 * by what is there; the owner's double-free test) and debug mode's (broken
 * canaries, trailers, poison and free-list links; wrong sizes) read only
 * memory that the chunk map says is carve's.
 */
#include "debug.h"

const char *cv_report_invalid_what(enum path path) {
    return path == PATH_FREE ? "invalid free" : path == PATH_REALLOC ? "invalid realloc"
                                                                      : "invalid pointer";
}

void cv_report_double_free(const page_t *page, void *p, const char *func) {
    char detail[64];
    if (page == NULL) /* from a bin: the block is a MAP_SMALL chunk's */
        page = dbg_page_of((uintptr_t)p);
    cv_msg_format(detail, sizeof detail, "class %u bytes", page->block_size);
    cv_msg_fatal("double free", p, detail, func);
}

/* What is at a, a pointer that is not a block's start: the block it falls
 * inside, free memory of carve, or nothing of carve's. Reads only memory
 * that the chunk map says is carve's. */
static CARVE_COLD __attribute__((noreturn)) void bad_pointer(uintptr_t a, const char *what,
                                                            const char *func) {
    char detail[128];
    unsigned kind = cv_map_kind(a);
    if (kind == MAP_SMALL) {
        page_t *page = dbg_page_of(a);
        size_t bs = page->block_size;
        size_t off = a - (uintptr_t)page->start;
        if (page->reserved != 0 && bs != 0 && off < (size_t)page->reserved * bs) {
            uintptr_t b = a - off % bs;
            if (a == b) /* a block start past what the page has handed out */
                cv_msg_format(detail, sizeof detail,
                              "not a block that was handed out, class %zu bytes", bs);
            else
                cv_msg_format(detail, sizeof detail,
                              "interior pointer: offset %zu of the block at %p, class %zu bytes",
                              (size_t)(a - b), (void *)b, bs);
        } else {
            cv_msg_format(detail, sizeof detail, "no block there: free memory of carve");
        }
    } else if (kind == MAP_DEBUG) {
        const dmap_t *h = (const dmap_t *)(a & ~(uintptr_t)CHUNK_MASK);
        bool live = h->magic == DMAP_LIVE, freed = h->magic == DMAP_FREED;
        if ((live || freed) && a >= h->user && a < h->end)
            cv_msg_format(detail, sizeof detail,
                          "interior pointer: offset %zu of the %s%zu-byte block at %p",
                          (size_t)(a - h->user), freed ? "freed " : "", h->requested,
                          (void *)h->user);
        else
            cv_msg_format(detail, sizeof detail, "no block there");
    } else if (kind == MAP_LARGE || kind == MAP_LARGE_PREV) {
        uintptr_t slot = a & ~(uintptr_t)CHUNK_MASK;
        const large_t *h = (const large_t *)(kind == MAP_LARGE_PREV ? slot - CHUNK_SIZE : slot);
        uintptr_t user = (uintptr_t)h + h->offset;
        if (h->magic == LARGE_MAGIC && a > user && a < user + cv_large_usable(h))
            cv_msg_format(detail, sizeof detail,
                          "interior pointer: offset %zu of the large block at %p",
                          (size_t)(a - user), (void *)user);
        else
            cv_msg_format(detail, sizeof detail, "no block there");
    } else {
        /* A large block's second free also finds its slot cleared, and so
         * does a mapping's that has left the quarantine (or never entered:
         * alignments of a chunk or more keep the release layout). */
        cv_msg_format(detail, sizeof detail, "not allocated by carve, or already freed");
    }
    cv_msg_fatal(what, (void *)a, detail, func);
}

void cv_report_bad_pointer(void *p, const char *what, const char *func) {
    bad_pointer((uintptr_t)p, what, func);
}

/* One line, then the backtrace and abort (cv_msg_fatal). */
void cv_report_block(const char *what, uintptr_t b,
                                                             size_t requested, size_t bs,
                                                             bool known, const char *func) {
    char detail[96];
    if (known)
        cv_msg_format(detail, sizeof detail, "requested %zu bytes, class %zu bytes", requested, bs);
    else
        cv_msg_format(detail, sizeof detail, "class %zu bytes", bs);
    cv_msg_fatal(what, (void *)b, detail, func);
}

/* Neither live nor freed: a block never handed out (a stale or made-up
 * pointer), or an overflow that ran past the canary into the trailer. */
void cv_report_trailer(uintptr_t b, size_t bs,
                                                               enum path path, const char *func) {
    char what[64], detail[64];
    cv_msg_format(what, sizeof what, "%s or heap overflow", cv_report_invalid_what(path));
    cv_msg_format(detail, sizeof detail, "block trailer broken, class %zu bytes", bs);
    cv_msg_fatal(what, (void *)b, detail, func);
}

/* The free-list link of the free block at b (its first word) is broken.
 * The block before it is the usual culprit: an overflow that ran past its
 * canary and trailer lands there first. */
void cv_report_link(const page_t *page, uintptr_t b,
                                                            size_t bs, const char *func) {
    if (b > (uintptr_t)page->start) {
        uintptr_t prev = b - bs;
        uint64_t t = *trailer_of(prev, bs);
        unsigned fam;
        size_t r = live_size(t, prev, &fam);
        bool live = r <= bs - OVERHEAD;
        if ((!live && t != freed_word(prev, bs)) ||
            (live && (cv_options.debug & DEBUG_CANARY) &&
             first_not((const uint8_t *)prev + r, bs - TRAILER - r, CANARY_BYTE) !=
                 bs - TRAILER - r)) {
            char detail[96];
            cv_msg_format(detail, sizeof detail,
                          "class %zu bytes; it ran into the next block's free-list link", bs);
            cv_msg_fatal("heap overflow", (void *)prev, detail, func);
        }
    }
    cv_msg_fatal("use after free (free-list link broken)", (void *)b, "the block's first word",
                 func);
}

void cv_report_map(const char *what, const dmap_t *h,
                                                           const char *func) {
    char detail[96];
    cv_msg_format(detail, sizeof detail, "requested %zu bytes, own mapping", h->requested);
    cv_msg_fatal(what, (void *)h->user, detail, func);
}

void cv_report_poison(uintptr_t b, size_t bs, size_t at,
                                                              const char *func) {
    char detail[96];
    cv_msg_format(detail, sizeof detail, "class %zu bytes, written at offset %zu", bs, at);
    cv_msg_fatal("use after free (poison broken)", (void *)b, detail, func);
}

void cv_report_size(uintptr_t b, size_t requested,
                                                            size_t given, const char *func) {
    char detail[96];
    cv_msg_format(detail, sizeof detail, "requested %zu, given %zu", requested, given);
    char what[48];
    cv_msg_format(what, sizeof what, "%s with wrong size", func);
    cv_msg_fatal(what, (void *)b, detail, func);
}

/* A sized free whose size no allocation of the block could have asked
 * for (release builds: the block's class is all carve knows of it), or an
 * aligned one of a block not so aligned. */
void cv_report_wrong_size(uintptr_t b, size_t usable, size_t given, size_t align,
                          const char *func) {
    char detail[112];
    if (align != 0)
        cv_msg_format(detail, sizeof detail, "a block of %zu bytes, given size %zu, alignment %zu",
                      usable, given, align);
    else
        cv_msg_format(detail, sizeof detail, "a block of %zu bytes, given size %zu", usable, given);
    char what[48];
    cv_msg_format(what, sizeof what, "%s with wrong size", func);
    cv_msg_fatal(what, (void *)b, detail, func);
}

/* A block freed by a call of another family than the one that made it. */
void cv_report_mismatch(uintptr_t b, unsigned family, const char *func) {
    static const char *const made_by[] = {"malloc", "operator new", "operator new[]"};
    char detail[64];
    cv_msg_format(detail, sizeof detail, "allocated by %s", made_by[family]);
    cv_msg_fatal("mismatched free", (void *)b, detail, func);
}
