/*
 * api_cxx.h: C++'s operators new and delete, a part of api.c's translation
 * unit (included once, from its interposing build), so that they inline
 * the same fast paths as malloc and free. new.c has what they do when
 * memory runs out and when the program replaces the basic ones.
 */
#ifndef CARVE_API_CXX_H
#define CARVE_API_CXX_H

/* ---- C++ operators new and delete --------------------------------------
 * Here rather than left to libstdc++, whose operators reach malloc and
 * free through two or three more calls, and whose sized delete throws the
 * size away. Defined under their mangled names (Itanium C++ ABI, size_t =
 * unsigned long), so that libcarve needs no C++ runtime; what new does when
 * memory runs out (the new-handler, std::bad_alloc) is in new.c. The
 * names assume an LP64 size_t (unsigned long, "m"). */
#if __SIZEOF_SIZE_T__ == 8 && __SIZEOF_LONG__ == 8
/* weak: a program that defines an operator itself, linked statically
 * with libcarve.a, keeps its own without a clash */
#define CXX(mangled) __asm__(#mangled) __attribute__((visibility("default"), weak))
/* new and new[] differ only in their names, which debug mode records to
 * stop a mismatched pair (new[] freed by delete, new by free). */
#define NEW "operator new"
#define NEW_ARRAY "operator new[]"
#define DELETE "operator delete"
#define DELETE_ARRAY "operator delete[]"

static CARVE_NOINLINE void *new_slow(heap_t *heap, size_t size, bool zero) {
    return alloc_slow_as(heap, size, zero, NEW, true);
}

static CARVE_NOINLINE void *new_array_slow(heap_t *heap, size_t size, bool zero) {
    return alloc_slow_as(heap, size, zero, NEW_ARRAY, true);
}

/* std::align_val_t is a size_t. An alignment that is not a power of two
 * is undefined behaviour in C++; it fails as aligned_alloc's does. */
static void *new_aligned(size_t size, size_t align, bool nothrow, const char *func) {
    void *p = is_pow2(align) ? alloc_aligned(align, size, func) : NULL;
    return likely(p != NULL) ? p : cv_new_failed(size, align, nothrow, func);
}

/* new.c's retry once a new-handler ran: the same allocation again. */
void *cv_new_retry(size_t size, size_t align, const char *func) {
    if (align != 0)
        return is_pow2(align) ? alloc_aligned(align, size, func) : NULL;
    return cv_heap_alloc_with(cv_tl_heap, size, false,
                              func[sizeof NEW - 1] == '[' ? new_array_slow : new_slow);
}

/* The standard's derived forms (new[], the nothrow forms, delete[], the
 * sized and nothrow deletes) call the basic ones, new(size_t) and
 * delete(void *) and their aligned twins, which a program may replace
 * alone (a pool of its own): then they must reach the program's, not
 * carve's. new.c finds out once (cv_cxx_replaced) and calls them. */
#define FORWARD_IF_REPLACED(derived, call)                                           \
    do {                                                                             \
        if ((derived) && unlikely(cv_cxx_state != CXX_OWN) && cv_cxx_replaced())    \
            return call;                                                             \
    } while (0)

#define DEFINE_NEW(name, mangled, slow, func, derived)                               \
    void *name(size_t size) CXX(mangled);                                            \
    void *name(size_t size) {                                                        \
        FORWARD_IF_REPLACED(derived, cv_cxx_basic_new(size));                        \
        void *p = cv_heap_alloc_with(cv_tl_heap, size, false, slow);                 \
        return likely(p != NULL) ? p : cv_new_failed(size, 0, false, func);          \
    }                                                                                \
    void *name##_nothrow(size_t size, const void *tag) CXX(mangled##RKSt9nothrow_t); \
    void *name##_nothrow(size_t size, const void *tag) {                             \
        (void)tag;                                                                   \
        FORWARD_IF_REPLACED(1, cv_cxx_basic_new_nothrow(size, 0));                   \
        void *p = cv_heap_alloc_with(cv_tl_heap, size, false, slow);                 \
        return likely(p != NULL) ? p : cv_new_failed(size, 0, true, func);           \
    }                                                                                \
    void *name##_aligned(size_t size, size_t align) CXX(mangled##St11align_val_t);   \
    void *name##_aligned(size_t size, size_t align) {                                \
        FORWARD_IF_REPLACED(derived, cv_cxx_basic_new_aligned(size, align));         \
        return new_aligned(size, align, false, func);                                \
    }                                                                                \
    void *name##_aligned_nothrow(size_t size, size_t align, const void *tag)         \
        CXX(mangled##St11align_val_tRKSt9nothrow_t);                                 \
    void *name##_aligned_nothrow(size_t size, size_t align, const void *tag) {       \
        (void)tag;                                                                   \
        FORWARD_IF_REPLACED(1, cv_cxx_basic_new_nothrow(size, align));               \
        return new_aligned(size, align, true, func);                                 \
    }

DEFINE_NEW(cv_cxx_new, _Znwm, new_slow, NEW, 0)
DEFINE_NEW(cv_cxx_new_array, _Znam, new_array_slow, NEW_ARRAY, 1)

/* Every delete is a free; the sized ones pass their size on, which is
 * checked as free_sized's (check_size; debug mode: against the request).
 * The nothrow argument changes nothing. */
#define DEFINE_DELETE(name, mangled, func, derived)                                  \
    void name(void *p) CXX(mangled);                                                 \
    void name(void *p) {                                                             \
        FORWARD_IF_REPLACED(derived, cv_cxx_basic_delete(p, 0));                     \
        do_free(p, CV_NO_SIZE, func);                                                \
    }                                                                                \
    void name##_sized(void *p, size_t size) CXX(mangled##m);                          \
    void name##_sized(void *p, size_t size) {                                        \
        FORWARD_IF_REPLACED(1, cv_cxx_basic_delete(p, 0));                           \
        do_free(p, size, func);                                                      \
    }                                                                                \
    void name##_aligned(void *p, size_t align) CXX(mangled##St11align_val_t);        \
    void name##_aligned(void *p, size_t align) {                                     \
        FORWARD_IF_REPLACED(derived, cv_cxx_basic_delete(p, align));                 \
        do_free(p, CV_NO_SIZE, func);                                                \
    }                                                                                \
    void name##_sized_aligned(void *p, size_t size, size_t align)                    \
        CXX(mangled##mSt11align_val_t);                                              \
    void name##_sized_aligned(void *p, size_t size, size_t align) {                  \
        FORWARD_IF_REPLACED(1, cv_cxx_basic_delete(p, align));                       \
        do_free_with(p, size, align, func);                                          \
    }                                                                                \
    void name##_nothrow(void *p, const void *tag) CXX(mangled##RKSt9nothrow_t);      \
    void name##_nothrow(void *p, const void *tag) {                                  \
        (void)tag;                                                                   \
        FORWARD_IF_REPLACED(1, cv_cxx_basic_delete(p, 0));                           \
        do_free(p, CV_NO_SIZE, func);                                                \
    }                                                                                \
    void name##_aligned_nothrow(void *p, size_t align, const void *tag)              \
        CXX(mangled##St11align_val_tRKSt9nothrow_t);                                 \
    void name##_aligned_nothrow(void *p, size_t align, const void *tag) {            \
        (void)tag;                                                                   \
        FORWARD_IF_REPLACED(1, cv_cxx_basic_delete(p, align));                       \
        do_free(p, CV_NO_SIZE, func);                                                \
    }

DEFINE_DELETE(cv_cxx_delete, _ZdlPv, DELETE, 0)
DEFINE_DELETE(cv_cxx_delete_array, _ZdaPv, DELETE_ARRAY, 1)

/* carve's own basic operators, by a name no program replaces: new.c tells
 * them from what the program links (an alias names its target by symbol) */
#define OWN(type, name, target) type name __attribute__((alias(#target), visibility("hidden")))
OWN(void *, cv_cxx_own_new(size_t size), _Znwm);
OWN(void *, cv_cxx_own_new_aligned(size_t size, size_t align), _ZnwmSt11align_val_t);
OWN(void, cv_cxx_own_delete(void *p), _ZdlPv);
OWN(void, cv_cxx_own_delete_aligned(void *p, size_t align), _ZdlPvSt11align_val_t);
#endif /* LP64 */

#endif /* CARVE_API_CXX_H */
