/*
 * debug.h: debug mode (debug.c), switched on by ./configure --enable-debug
 * or CARVE_OPTIONS=debug=..., and the reports of bad pointers that release
 * builds share with it.
 *
 * api.c calls in here only from its slow paths: a thread in debug mode
 * keeps the empty heap (its allocations all miss the fast path) and its
 * pages have an owner id that no thread has (its frees all miss the owner's
 * fast path), so the release fast paths carry no debug test.
 */
#ifndef CARVE_DEBUG_H
#define CARVE_DEBUG_H

#include "internal.h"

/* What free() passes for "no size given" (free_sized() passes its size). */
#define CV_NO_SIZE SIZE_MAX

/* Initialises carve when needed; true when debug mode is on. */
bool cv_debug_on(void);

/* The malloc family in debug mode; func names the entry point in reports. */
void *cv_debug_alloc(size_t size, size_t align, bool zero, const char *func);
void cv_debug_free(void *p, size_t size, const char *func);
void *cv_debug_realloc(void *p, size_t size, const char *func);
size_t cv_debug_usable(void *p, const char *func);

/* Release builds' reports: p is no block start (what is there is
 * described), and the owner's cheap double-free test fired. Neither
 * returns; the second is not declared noreturn so that the free fast path
 * reaches it by a tail jump (a noreturn call needs a stack frame: clang
 * then pushes one on every free). */
__attribute__((noreturn, cold)) void cv_debug_bad_pointer(void *p, const char *what,
                                                          const char *func);
__attribute__((cold)) void cv_debug_double_free(const page_t *page, void *p, const char *func);

/* The quarantine's lock, for statistics. */
const cv_lock_t *cv_debug_lock_stats(void);

/* init.c's fork handlers: the quarantine's lock. */
void cv_debug_fork_prepare(void);
void cv_debug_fork_parent(void);
void cv_debug_fork_child(void);

/* Test hook: read CARVE_OPTIONS again (after setenv) and give up the
 * calling thread's heap, so that a test can switch debug mode on in a
 * death-test child. Not for programs: other threads keep their heaps. */
void cv_debug_reinit(void);

#endif /* CARVE_DEBUG_H */
