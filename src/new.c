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
#include "internal.h"

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
void *cv_new_failed(size_t size, size_t align, bool nothrow, const char *func) {
    for (;;) {
        new_handler_t handler = _ZSt15get_new_handlerv != NULL ? _ZSt15get_new_handlerv() : NULL;
        if (handler == NULL)
            break;
        handler(); /* may throw: that is the handler's answer */
        void *p = cv_new_retry(size, align, func);
        if (p != NULL)
            return p;
    }
    if (nothrow)
        return NULL;
    throw_bad_alloc(size);
}
