/* pairs: one allocation workload through one allocator, for instruction
 * counting under valgrind --tool=callgrind.
 *
 *   pairs LIBRARY MALLOC FREE N [pair|churn|teardown|sweep]
 *
 * LIBRARY "-" looks the functions up in the process's global scope (for an
 * allocator preloaded as malloc).
 *
 * Run it twice, with N and with 0, under callgrind: the difference divided
 * by N is the instructions one operation costs (loading, start-up and the
 * workload's set-up cancel out). Sizes come from fixed tables or a fixed
 * random sequence, so both runs differ only in the N operations.
 *
 *   pair      N malloc+free pairs (the hot path: one live block of each size
 *             is kept, so no pool empties);
 *   churn     100,000 live blocks; each operation frees a random one and
 *             allocates a replacement of a random Python-like size (as the
 *             C benchmark's churn workload);
 *   teardown  N allocations of Python-like sizes, then N frees in the same
 *             order; per operation, so a malloc and a free count as two;
 *   sweep     the C benchmark's size-class sweep: for each class size 16,
 *             32, ..., 512 bytes, 1,000 allocations then their 1,000 frees;
 *             N operations (a multiple of 64,000, one round of the 32
 *             sizes), a malloc and a free counting as two. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned sizes[16] = { 16, 24, 32, 48, 64, 32, 40, 56, 100, 24, 200, 32, 64, 480, 16, 48 };

static void *(*allocate)(size_t);
static void (*release)(void *);

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* 16..512 bytes, about 80 % in 16..64 (benches/c/bench.c) */
static size_t python_size(uint64_t *s)
{
    uint64_t r = next_random(s);
    if ((r & 0xff) < 205)
        return 16 + ((r >> 8) % 49);
    return 16 + ((r >> 8) % 497);
}

static void pair(long n)
{
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
}

#define LIVE 100000
static void churn(long n)
{
    static char *live[LIVE];
    uint64_t s = 7;
    for (long i = 0; i < LIVE; i++)
        live[i] = allocate(python_size(&s));
    for (long i = 0; i < n; i++) {
        size_t slot = next_random(&s) % LIVE;
        release(live[slot]);
        live[slot] = allocate(python_size(&s));
        live[slot][0] = 1;
    }
    for (long i = 0; i < LIVE; i++)
        release(live[i]);
}

static void teardown(long n)
{
    char **blocks = malloc((n > 0 ? n : 1) * sizeof *blocks);
    uint64_t s = 3;
    for (long i = 0; i < n; i++) {
        blocks[i] = allocate(python_size(&s));
        blocks[i][0] = 1;
    }
    for (long i = 0; i < n; i++)
        release(blocks[i]);
    free(blocks);
}

static void sweep(long n)
{
    enum { BATCH = 1000 };
    static char *batch[BATCH];
    for (long round = 0; round < n / (2 * BATCH * 32); round++)
        for (size_t size = 16; size <= 512; size += 16) {
            for (int i = 0; i < BATCH; i++) {
                batch[i] = allocate(size);
                batch[i][0] = 1;
            }
            for (int i = 0; i < BATCH; i++)
                release(batch[i]);
        }
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: pairs LIBRARY MALLOC FREE N [pair|churn|teardown|sweep]\n");
        return 2;
    }
    int global_scope = !strcmp(argv[1], "-");
    void *handle = global_scope ? RTLD_DEFAULT : dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!global_scope && !handle) {
        fprintf(stderr, "pairs: %s\n", dlerror());
        return 2;
    }
    allocate = (void *(*)(size_t))dlsym(handle, argv[2]);
    release = (void (*)(void *))dlsym(handle, argv[3]);
    long n = atol(argv[4]);
    const char *workload = argc == 6 ? argv[5] : "pair";
    if (!allocate || !release) {
        fprintf(stderr, "pairs: %s or %s not found\n", argv[2], argv[3]);
        return 2;
    }
    if (!strcmp(workload, "pair"))
        pair(n);
    else if (!strcmp(workload, "churn"))
        churn(n);
    else if (!strcmp(workload, "teardown"))
        teardown(n);
    else if (!strcmp(workload, "sweep"))
        sweep(n);
    else {
        fprintf(stderr, "pairs: unknown workload %s (pair, churn, teardown or sweep)\n", workload);
        return 2;
    }
    return 0;
}
