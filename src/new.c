/*
 * new.c: what C++'s operator new does when memory runs out (api.c defines
 * the operators themselves).
 *
 * The standard's order: call the installed new-handler and try again, for
 * as long as there is one (it may free memory, install another handler or
 * throw); with none left, throw std::bad_alloc, or return NULL for the
 * nothrow forms. carve is a C library that links no C++ runtime, so it
 * reaches the program's through weak references: a program that calls
 * operator new has libstdc++ (or libc++abi) loaded, and with it these
 * symbols. Without them (nothing C++ in the process) nobody calls new, and
 * a failure would stop with carve's one-line message instead.
 *
 * std::bad_alloc is thrown as the Itanium C++ ABI lays it out: an object
 * whose one word is the vtable pointer (the symbol's address plus two
 * words: offset to top and type info come first), thrown with its type
 * info and destructor, as `throw std::bad_alloc()` compiles to.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dlfcn.h>

typedef void (*new_handler_t)(void);

/* std::get_new_handler(), and the pieces of a throw */
extern new_handler_t _ZSt15get_new_handlerv(void) __attribute__((weak));
extern void *__cxa_allocate_exception(size_t size) __attribute__((weak));
extern void __cxa_throw(void *obj, void *type, void (*destroy)(void *))
    __attribute__((weak, noreturn));
extern char _ZTISt9bad_alloc[] __attribute__((weak)); /* typeinfo for std::bad_alloc */
extern void *_ZTVSt9bad_alloc[] __attribute__((weak)); /* vtable for std::bad_alloc */
extern void _ZNSt9bad_allocD1Ev(void *self) __attribute__((weak)); /* ~bad_alloc() */

static __attribute__((noreturn)) void throw_bad_alloc(size_t size) {
    if (__cxa_allocate_exception != NULL && __cxa_throw != NULL && _ZTISt9bad_alloc != NULL &&
        _ZTVSt9bad_alloc != NULL && _ZNSt9bad_allocD1Ev != NULL) {
        void **e = __cxa_allocate_exception(sizeof(void *));
        e[0] = &_ZTVSt9bad_alloc[2];
        __cxa_throw(e, _ZTISt9bad_alloc, _ZNSt9bad_allocD1Ev);
    }
    char detail[64];
    cv_msg_format(detail, sizeof detail, "%zu bytes, no C++ runtime to throw", size);
    cv_msg_fatal("out of memory", NULL, detail, "operator new");
}

/* func: "operator new" or "operator new[]", for the retry (api.c, as
 * debug mode records which made a block). */
static new_handler_t current_handler(void) {
    return _ZSt15get_new_handlerv != NULL ? _ZSt15get_new_handlerv() : NULL;
}

static void *runtime_nothrow(size_t size, size_t align, bool array);

void *cv_new_failed(size_t size, size_t align, bool nothrow, const char *func) {
    /* A handler may throw, which a nothrow form must turn into NULL: C
     * cannot catch, so the C++ runtime's nothrow form does it around the
     * throwing one (carve's). */
    if (nothrow)
        return current_handler() != NULL ? runtime_nothrow(size, align, func[sizeof "operator new" - 1] == '[')
                                         : NULL;
    for (;;) {
        new_handler_t handler = current_handler();
        if (handler == NULL)
            break;
        handler(); /* may throw: that is the handler's answer */
        void *p = cv_new_retry(size, align, func);
        if (p != NULL)
            return p;
    }
    throw_bad_alloc(size);
}

/* ---- a program's own basic operators --------------------------------------
 * The basic operators as the program links them: the symbols, resolved
 * by the dynamic linker (or the static one) to the program's definitions
 * when it has them, and carve's own by names no program replaces
 * (api.c). Compared once: the state is a plain word any thread may set to
 * the same value. */
extern void *sym_new(size_t size) __asm__("_Znwm");
extern void *sym_new_aligned(size_t size, size_t align) __asm__("_ZnwmSt11align_val_t");
extern void sym_delete(void *p) __asm__("_ZdlPv");
extern void sym_delete_aligned(void *p, size_t align) __asm__("_ZdlPvSt11align_val_t");
void *cv_cxx_own_new(size_t size);
void *cv_cxx_own_new_aligned(size_t size, size_t align);
void cv_cxx_own_delete(void *p);
void cv_cxx_own_delete_aligned(void *p, size_t align);

int cv_cxx_state;

bool cv_cxx_replaced(void) {
    int state = CV_PEEK(cv_cxx_state);
    if (state == CXX_UNKNOWN) {
        bool own = sym_new == cv_cxx_own_new && sym_new_aligned == cv_cxx_own_new_aligned &&
                   sym_delete == cv_cxx_own_delete &&
                   sym_delete_aligned == cv_cxx_own_delete_aligned;
        state = own ? CXX_OWN : CXX_REPLACED;
        CV_SET(cv_cxx_state, state);
    }
    return state == CXX_REPLACED;
}

void *cv_cxx_basic_new(size_t size) {
    return sym_new(size);
}

void *cv_cxx_basic_new_aligned(size_t size, size_t align) {
    return sym_new_aligned(size, align);
}

void cv_cxx_basic_delete(void *p, size_t align) {
    if (align == 0)
        sym_delete(p);
    else
        sym_delete_aligned(p, align);
}

/* The C++ runtime's nothrow new (or new[]), found past carve: it calls
 * the basic form the program links (carve's, or its own) inside a try
 * block, and turns std::bad_alloc into NULL, which C cannot catch. NULL
 * without such a runtime (a static link). */
static void *runtime_nothrow_fn(size_t align, bool array) {
    static const char *const names[2][2] = {
        {"_ZnwmRKSt9nothrow_t", "_ZnwmSt11align_val_tRKSt9nothrow_t"},
        {"_ZnamRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t"},
    };
    return dlsym(RTLD_NEXT, names[array][align != 0]);
}

static void *call_nothrow(void *fn, size_t size, size_t align) {
    static const char tag = 0; /* std::nothrow is an empty object */
    if (align == 0)
        return ((void *(*)(size_t, const void *))fn)(size, &tag);
    return ((void *(*)(size_t, size_t, const void *))fn)(size, align, &tag);
}

static void *runtime_nothrow(size_t size, size_t align, bool array) {
    void *fn = runtime_nothrow_fn(align, array);
    return fn != NULL ? call_nothrow(fn, size, align) : NULL;
}

/* The nothrow forms of a program that replaced the basic ones: through the
 * runtime's, or the replaced basic form as it is without one. */
void *cv_cxx_basic_new_nothrow(size_t size, size_t align) {
    void *fn = runtime_nothrow_fn(align, false);
    if (fn != NULL)
        return call_nothrow(fn, size, align);
    return align == 0 ? sym_new(size) : sym_new_aligned(size, align);
}
