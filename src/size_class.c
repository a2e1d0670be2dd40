/*
 * size_class.c: the size classes.
 *
 * 8 bytes, then 16..128 in steps of 16, then four classes per doubling up to
 * SMALL_MAX (256 KiB): the spacing jemalloc uses, worst-case internal waste
 * 25% just above a power of two. Every class from 16 bytes up is a multiple
 * of 16, which gives the ABI's 16-byte alignment; a class's blocks are
 * aligned to its lowest set bit (pages start on 64 KiB boundaries), which
 * the aligned allocation path uses to serve small alignments from pages.
 */
#include "internal.h"

const uint32_t cv_class_size[CLASS_COUNT] = {
    8,      16,     32,     48,     64,     80,     96,     112,    128,
    160,    192,    224,    256,    320,    384,    448,    512,    640,
    768,    896,    1024,   1280,   1536,   1792,   2048,   2560,   3072,
    3584,   4096,   5120,   6144,   7168,   8192,   10240,  12288,  14336,
    16384,  20480,  24576,  28672,  32768,  40960,  49152,  57344,  65536,
    81920,  98304,  114688, 131072, 163840, 196608, 229376, 262144,
};

/* (size + 7) / 8 -> class, for sizes up to 128. */
const uint8_t cv_class_small[17] = {0, 0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8};

/* Slices (64 KiB) per page: enough for at least 8 blocks, at most 16 slices
 * (1 MiB), so the biggest classes hold 4 blocks a page. Pages are carved
 * lazily, so a big page costs address space, not memory. */
#define S(n) (uint8_t)(n)
const uint8_t cv_class_slices[CLASS_COUNT] = {
    /* 8 .. 8192: one slice */
    S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1),
    S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1), S(1),
    S(1), S(1), S(1), S(1), S(1), S(1), S(1),
    /* 10240 .. 14336 */ S(2), S(2), S(2),
    /* 16384 .. 28672 */ S(2), S(3), S(3), S(4),
    /* 32768 .. 57344 */ S(4), S(5), S(6), S(7),
    /* 65536 .. 114688 */ S(8), S(10), S(12), S(14),
    /* 131072 .. 262144 */ S(16), S(16), S(16), S(16), S(16),
};
