/*
 * bits.h: runs of bits in a chunk's 64-slice bitmaps (arena.c), a bit per
 * slice, bit 0 the header slice.
 *
 * Pure functions, apart from arena.c so that the unit tests
 * (test/unit/test_run_finder.cc) can check them against a plain loop over
 * every bit; static inline, as they were static in arena.c, so that the
 * compiler makes of them what it made before.
 */
#ifndef CARVE_BITS_H
#define CARVE_BITS_H

#include <stdint.h>

/* First slice of a run of n free slices (clear bits of used), or 0 (the
 * header slice is never free, so 0 means none). n is 1 to 63. */
static inline unsigned cv_bits_find_run(uint64_t used, unsigned n) {
    uint64_t starts = ~used;
    for (unsigned k = 1; k < n; k++)
        starts &= ~used >> k;
    /* The shifts fill with zeros from the top, so no run can start where
     * it would pass slice 63. */
    return starts ? (unsigned)__builtin_ctzll(starts) : 0;
}

/* Bits first .. first + n - 1; n is 1 to 64, first + n at most 64. */
static inline uint64_t cv_bits_run_mask(unsigned first, unsigned n) {
    uint64_t bits = n >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1);
    return bits << first;
}

/* The first run of set bits of a non-empty slice bitmap: its length, and
 * its start in *first. Bit 0 (the header) is never set in the bitmaps this
 * walks, so the shifted complement always has a zero bit to find. */
static inline unsigned cv_bits_next_run(uint64_t slices, unsigned *first) {
    *first = (unsigned)__builtin_ctzll(slices);
    return (unsigned)__builtin_ctzll(~(slices >> *first));
}

#endif /* CARVE_BITS_H */
