/*
 * size_class.c: the size classes.
 *
 * 8 bytes, then steps of 16 up to 256 and of 32 up to 512 (eight classes
 * per doubling from 128, as tcmalloc), then four per doubling up to
 * SMALL_MAX (256 KiB), the spacing jemalloc uses (worst-case internal waste
 * 25% just above a power of two). Why eight below 512: blocks of a few
 * hundred bytes are a large part of most heaps, and for sizes spread evenly
 * over 16..512 the waste falls from 8.3% to 4.4% (a heap of such blocks
 * peaks lower: doc/design.md, "Size classes"), for 16 more classes, which
 * cost nothing until used (pages are carved lazily). 61 classes in
 * all: carve_stats has room for 64. Every class from 16 bytes up is a multiple
 * of 16, which gives the ABI's 16-byte alignment; a class's blocks are
 * aligned to its lowest set bit (pages start on 64 KiB boundaries), which
 * the aligned allocation path uses to serve small alignments from pages.
 */
#include "internal.h"

#define CLASS_SIZES(X)                                                                     \
    X(8) X(16) X(32) X(48) X(64) X(80) X(96) X(112) X(128) X(144) X(160) X(176) X(192)     \
    X(208) X(224) X(240) X(256) X(288) X(320) X(352) X(384) X(416) X(448) X(480) X(512)    \
    X(640) X(768) X(896) X(1024) X(1280) X(1536) X(1792) X(2048) X(2560) X(3072)           \
    X(3584) X(4096) X(5120) X(6144) X(7168) X(8192) X(10240) X(12288) X(14336) X(16384)    \
    X(20480) X(24576) X(28672) X(32768) X(40960) X(49152) X(57344) X(65536) X(81920)       \
    X(98304) X(114688) X(131072) X(163840) X(196608) X(229376) X(262144)

#define SIZE(d) d,
const uint32_t cv_class_size[CLASS_COUNT] = {CLASS_SIZES(SIZE)};
#define ONE(d) +1
_Static_assert(0 CLASS_SIZES(ONE) == CLASS_COUNT, "CLASS_COUNT is the number of classes");
_Static_assert(CLASS_COUNT <= CARVE_STATS_CLASSES, "carve_stats must have room for every class");

/* For the "is this the start of a block" test without a division (Lemire,
 * Kaser and Kurz, "Faster remainder by direct computation", 2019): for a
 * 32-bit n, n is a multiple of d iff n * c <= c - 1 (mod 2^64) with
 * c = 2^64 / d + 1. A division showed in larson's profile (remote frees
 * check their pointer; figure: doc/measurements.md). */
#define MAGIC(d) (UINT64_MAX / (d) + 1),
const uint64_t cv_class_magic[CLASS_COUNT] = {CLASS_SIZES(MAGIC)};

/* (size + 7) / 8 -> class, for sizes up to 512. */
const uint8_t cv_class_small[] = {
    0, 0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
    14, 14, 15, 15, 16, 16, 17, 17, 17, 17, 18, 18, 18, 18, 19, 19, 19, 19, 20, 20, 20, 20,
    21, 21, 21, 21, 22, 22, 22, 22, 23, 23, 23, 23, 24, 24, 24, 24,
};

/* Slices (64 KiB) per page. A class whose block fits in a slice has
 * one-slice pages: a used block stays touched until its whole page empties,
 * and with 8-block pages (up to 512 KiB) each class of 10 to 64 KiB kept its
 * own high-water mark of blocks in every thread; pages of 1 to 6 blocks
 * empty and go back to the arena, for any class and thread to reuse
 * (less peak RSS, same speed: doc/design.md, "Size classes"). Bigger classes have
 * one block a page, for the same reason: their 8-block pages (up to 1 MiB)
 * kept, per thread and class, every block a buffer grown by realloc had
 * passed through. A thread keeps a few such pages empty as spares, so that
 * holding several blocks does not cost an arena trip for each (heap.c).
 * With both, a buffer grown by realloc leaves much less behind it
 * (realloc_growth's peak RSS: doc/design.md, "Size classes"). Pages are
 * carved lazily, so a page's address space costs no memory until its
 * blocks are used. */
#define S(n) (uint8_t)(n)
const uint8_t cv_class_slices[] = {
    /* 8 .. 8192: one slice */
    S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1),
    S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1),
    S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1),
    S(1), S(1),
    /* 10240 .. 65536: one slice, 6 to 1 blocks */
    S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1),
    /* 81920 .. 262144: one block */
    S(2), S(2), S(2), S(2), S(3), S(3), S(4), S(4),
};
_Static_assert(sizeof cv_class_slices == CLASS_COUNT, "one entry per class");
_Static_assert(sizeof cv_class_small == 512 / 8 + 1, "one entry per 8 bytes up to 512");

/* Could a block of class c have been handed out for a request of size
 * bytes (with alignment align, 0 when the call had none)? The class that
 * malloc, calloc and new pick; one that realloc kept in place when
 * shrinking (down to half the class); and, with an alignment, an aligned
 * allocation's (the first class from the request's up whose natural
 * alignment is enough: api.c's alloc_aligned). Without one, as C23 says
 * of free_sized, the block must be malloc's, calloc's or realloc's. */
bool cv_class_may_serve(unsigned c, size_t size, size_t align) {
    size_t s = cv_class_size[c];
    if (size > s)
        return false;
    if (align > ALIGN_MIN && (s & -s) < align)
        return false;
    unsigned want = cv_size_class(size < ALIGN_MIN && align != 0 ? ALIGN_MIN : size);
    if (want == c || size >= s / 2)
        return true;
    if (align <= ALIGN_MIN) /* malloc's class for the size (at least align) */
        return false;
    /* the first class from want up aligned enough: none before c may be */
    for (unsigned k = want; k < c; k++) {
        size_t t = cv_class_size[k];
        if ((t & -t) >= align)
            return false;
    }
    return true;
}
