// cxx_ops: every standard form of operator new and delete, run with carve
// preloaded (test/preload/cxx.sh). Checks that each form is carve's (the
// symbol's library, found with dladdr), that blocks are aligned, that
// failure calls the new-handler, throws std::bad_alloc through carve's
// frames and that the nothrow forms return nullptr, and that many threads
// allocating and deleting with sized delete keep their contents. Prints one
// line per check and "ok" at the end; exits 1 on the first failure.
//
// cxx_ops mismatch KIND makes one mismatched pair and exits 0 if nothing
// stopped it: new-free (new, then free), array-delete (new[], then
// delete), new-array-delete (new, then delete[]), malloc-delete.
#include <dlfcn.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const char *what) {
    std::printf("%s: %s\n", ok ? "ok" : "FAIL", what);
    if (!ok)
        failures++;
}

bool from_carve(const void *fn) {
    Dl_info info;
    return dladdr(fn, &info) != 0 && info.dli_fname != nullptr &&
           std::strstr(info.dli_fname, "libcarve") != nullptr;
}

// A size no allocator can serve, which the compiler cannot see through.
volatile size_t huge = SIZE_MAX / 4;

std::atomic<int> handler_calls{0};
void handler_once() {
    handler_calls++;
    std::set_new_handler(nullptr); // the next failure throws
}

struct handler_error {};
void handler_throws() { throw handler_error(); }

} // namespace

// One mismatched pair of the given kind, through pointers the compiler
// cannot see through (it would warn, or drop the pair).
int mismatch(const char *kind) {
    void *volatile p = nullptr;
    if (std::strcmp(kind, "new-free") == 0) {
        p = ::operator new(40);
        std::free(p);
    } else if (std::strcmp(kind, "array-delete") == 0) {
        p = ::operator new[](40);
        ::operator delete(p);
    } else if (std::strcmp(kind, "new-array-delete") == 0) {
        p = ::operator new(100000);
        ::operator delete[](p);
    } else if (std::strcmp(kind, "malloc-delete") == 0) {
        p = std::malloc(40);
        ::operator delete(p);
    } else {
        std::fprintf(stderr, "unknown mismatch %s\n", kind);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && std::strcmp(argv[1], "mismatch") == 0)
        return mismatch(argv[2]);
    using std::align_val_t;
    using std::nothrow_t;
    const struct {
        const char *name;
        const void *fn;
    } forms[] = {
        {"new(size_t)", reinterpret_cast<const void *>(static_cast<void *(*)(size_t)>(&::operator new))},
        {"new[](size_t)", reinterpret_cast<const void *>(static_cast<void *(*)(size_t)>(&::operator new[]))},
        {"new(size_t, nothrow)", reinterpret_cast<const void *>(
             static_cast<void *(*)(size_t, const nothrow_t &) noexcept>(&::operator new))},
        {"new[](size_t, nothrow)", reinterpret_cast<const void *>(
             static_cast<void *(*)(size_t, const nothrow_t &) noexcept>(&::operator new[]))},
        {"new(size_t, align)",
         reinterpret_cast<const void *>(static_cast<void *(*)(size_t, align_val_t)>(&::operator new))},
        {"new[](size_t, align)",
         reinterpret_cast<const void *>(static_cast<void *(*)(size_t, align_val_t)>(&::operator new[]))},
        {"new(size_t, align, nothrow)",
         reinterpret_cast<const void *>(
             static_cast<void *(*)(size_t, align_val_t, const nothrow_t &) noexcept>(&::operator new))},
        {"new[](size_t, align, nothrow)",
         reinterpret_cast<const void *>(
             static_cast<void *(*)(size_t, align_val_t, const nothrow_t &) noexcept>(&::operator new[]))},
        {"delete(void *)", reinterpret_cast<const void *>(static_cast<void (*)(void *) noexcept>(&::operator delete))},
        {"delete[](void *)",
         reinterpret_cast<const void *>(static_cast<void (*)(void *) noexcept>(&::operator delete[]))},
        {"delete(void *, size_t)",
         reinterpret_cast<const void *>(static_cast<void (*)(void *, size_t) noexcept>(&::operator delete))},
        {"delete[](void *, size_t)",
         reinterpret_cast<const void *>(static_cast<void (*)(void *, size_t) noexcept>(&::operator delete[]))},
        {"delete(void *, align)", reinterpret_cast<const void *>(
                                       static_cast<void (*)(void *, align_val_t) noexcept>(&::operator delete))},
        {"delete[](void *, align)",
         reinterpret_cast<const void *>(static_cast<void (*)(void *, align_val_t) noexcept>(&::operator delete[]))},
        {"delete(void *, size_t, align)",
         reinterpret_cast<const void *>(
             static_cast<void (*)(void *, size_t, align_val_t) noexcept>(&::operator delete))},
        {"delete[](void *, size_t, align)",
         reinterpret_cast<const void *>(
             static_cast<void (*)(void *, size_t, align_val_t) noexcept>(&::operator delete[]))},
        {"delete(void *, nothrow)", reinterpret_cast<const void *>(
                                         static_cast<void (*)(void *, const nothrow_t &) noexcept>(&::operator delete))},
        {"delete[](void *, nothrow)",
         reinterpret_cast<const void *>(
             static_cast<void (*)(void *, const nothrow_t &) noexcept>(&::operator delete[]))},
        {"delete(void *, align, nothrow)",
         reinterpret_cast<const void *>(
             static_cast<void (*)(void *, align_val_t, const nothrow_t &) noexcept>(&::operator delete))},
        {"delete[](void *, align, nothrow)",
         reinterpret_cast<const void *>(
             static_cast<void (*)(void *, align_val_t, const nothrow_t &) noexcept>(&::operator delete[]))},
    };
    for (const auto &f : forms)
        check(from_carve(f.fn), (std::string("carve's operator ") + f.name).c_str());

    // each form in use, with its matching delete
    for (size_t n : {1, 100, 5000, 300000}) {
        char *p = static_cast<char *>(::operator new(n));
        std::memset(p, 1, n);
        ::operator delete(p, n);
        char *a = new char[n];
        std::memset(a, 2, n);
        delete[] a;
        for (size_t al : {64, 4096, 65536, 1 << 21}) {
            void *q = ::operator new(n, align_val_t(al));
            check(reinterpret_cast<uintptr_t>(q) % al == 0, "new(size, align) is aligned");
            std::memset(q, 3, n);
            ::operator delete(q, n, align_val_t(al));
            q = ::operator new[](n, align_val_t(al), std::nothrow);
            check(q != nullptr && reinterpret_cast<uintptr_t>(q) % al == 0, "new[](size, align, nothrow)");
            ::operator delete[](q, align_val_t(al), std::nothrow);
        }
        void *r = ::operator new(n, std::nothrow);
        check(r != nullptr, "new(size, nothrow)");
        ::operator delete(r, std::nothrow);
    }

    // failure: bad_alloc, the nothrow forms' nullptr, the new-handler
    bool threw = false;
    try {
        void *p = ::operator new(huge);
        ::operator delete(p);
    } catch (const std::bad_alloc &e) {
        threw = std::strcmp(e.what(), "std::bad_alloc") == 0;
    }
    check(threw, "new of an impossible size throws std::bad_alloc");
    threw = false;
    try {
        void *p = ::operator new[](huge, align_val_t(4096));
        ::operator delete[](p);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw, "aligned new[] of an impossible size throws std::bad_alloc");
    check(::operator new(huge, std::nothrow) == nullptr, "nothrow new of an impossible size is nullptr");
    check(::operator new[](huge, align_val_t(64), std::nothrow) == nullptr,
          "aligned nothrow new[] of an impossible size is nullptr");
    std::set_new_handler(handler_once);
    threw = false;
    try {
        void *p = ::operator new(huge);
        ::operator delete(p);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw && handler_calls == 1, "new calls the new-handler, then throws once none is left");
    std::set_new_handler(handler_throws);
    bool own = false;
    try {
        void *p = ::operator new(huge);
        ::operator delete(p);
    } catch (const handler_error &) {
        own = true;
    }
    std::set_new_handler(nullptr);
    check(own, "a new-handler's own exception reaches the caller");

    // threads: new[] and sized delete[], contents kept
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++)
        threads.emplace_back([t, &bad] {
            std::vector<std::pair<unsigned char *, size_t>> live;
            uint64_t rng = 88172645463325252ull + t;
            for (int i = 0; i < 200000; i++) {
                rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
                size_t n = 1 + rng % 2000;
                auto *p = new unsigned char[n];
                std::memset(p, static_cast<int>(n & 0xff), n);
                live.emplace_back(p, n);
                if (live.size() > 500) {
                    size_t k = rng % live.size();
                    auto [q, m] = live[k];
                    if (q[0] != (m & 0xff) || q[m - 1] != (m & 0xff))
                        bad++;
                    ::operator delete[](q, m);
                    live[k] = live.back();
                    live.pop_back();
                }
            }
            for (auto [q, m] : live)
                ::operator delete[](q, m);
        });
    for (auto &th : threads)
        th.join();
    check(bad == 0, "blocks of new[] keep their contents until sized delete[]");

    if (failures != 0) {
        std::printf("%d checks failed\n", failures);
        return 1;
    }
    std::printf("ok\n");
    return 0;
}
