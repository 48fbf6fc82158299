/* pairs: N malloc+free pairs of a Python-like size mix through one
 * allocator, for instruction counting under valgrind --tool=callgrind.
 *
 *   pairs LIBRARY MALLOC FREE N
 *
 * Run it twice, with N and with 0, under callgrind: the difference divided
 * by N is the instructions one pair costs (loading and start-up cancel out).
 * The sizes come from a fixed table, so both runs differ only in the pairs. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static const unsigned sizes[16] = { 16, 24, 32, 48, 64, 32, 40, 56, 100, 24, 200, 32, 64, 480, 16, 48 };

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: pairs LIBRARY MALLOC FREE N\n");
        return 2;
    }
    void *handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        fprintf(stderr, "pairs: %s\n", dlerror());
        return 2;
    }
    void *(*allocate)(size_t) = (void *(*)(size_t))dlsym(handle, argv[2]);
    void (*release)(void *) = (void (*)(void *))dlsym(handle, argv[3]);
    long n = atol(argv[4]);
    if (!allocate || !release) {
        fprintf(stderr, "pairs: %s or %s not found\n", argv[2], argv[3]);
        return 2;
    }
    /* Warm up outside the measured difference, and keep one live block of
     * each size: the pairs then measure the hot path. (Without them,
     * CPython's pymalloc returns the emptied pool to its arena on every
     * free and takes a new pool on the next malloc: ~60 instructions more
     * per pair in this loop.) */
    static void *kept[16];
    for (int i = 0; i < 16; i++)
        kept[i] = allocate(sizes[i]);
    for (int i = 0; i < 64; i++)
        release(allocate(sizes[i % 16]));
    for (long i = 0; i < n; i++) {
        char *p = allocate(sizes[i & 15]);
        p[0] = 1;
        release(p);
    }
    for (int i = 0; i < 16; i++)
        release(kept[i]);
    return 0;
}
