// cxx_replace: a program that replaces only the basic operator new and
// operator delete (a pool of its own), as the standard allows; the derived
// forms it then uses (sized delete, new[] and delete[], the nothrow forms)
// must reach its replacements, as libstdc++'s do, even with carve
// preloaded (test/preload/cxx.sh). Prints "ok" and exits 0, or says what
// went wrong.
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <new>

namespace {
alignas(16) char pool[1 << 20];
size_t used;
long news, deletes;

bool in_pool(const void *p) {
    return static_cast<const char *>(p) >= pool && static_cast<const char *>(p) < pool + sizeof pool;
}
} // namespace

void *operator new(std::size_t n) {
    void *p = pool + used;
    used += (n + 15) & ~static_cast<std::size_t>(15);
    if (used > sizeof pool)
        throw std::bad_alloc();
    news++;
    return p;
}

void operator delete(void *p) noexcept {
    if (p == nullptr)
        return;
    if (!in_pool(p)) {
        std::printf("FAIL: delete of %p, not from the pool\n", p);
        std::exit(1);
    }
    deletes++;
}

struct S {
    int a[5];
};
struct T {
    ~T() {}
    int b[3];
};

int main() {
    S *s = new S;         // new(size_t)
    delete s;             // sized delete -> delete(void *)
    T *t = new T[4];      // new[] -> new(size_t)
    delete[] t;           // sized delete[] -> delete(void *)
    int *i = new (std::nothrow) int(3); // nothrow new -> new(size_t)
    delete i;
    char *c = new char[10];
    delete[] c;
    if (news != 4 || deletes != 4) {
        std::printf("FAIL: %ld news and %ld deletes reached the replacements, not 4 and 4\n", news,
                    deletes);
        return 1;
    }
    std::printf("ok\n");
    return 0;
}
