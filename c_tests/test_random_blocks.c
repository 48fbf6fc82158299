/* A million blocks of random sizes, through every family, filled with a
 * pattern, some resized, freed in random order with every byte checked
 * before each realloc and free. usage: test_random_blocks [SEED] */
#include <pymalloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNT 1000000

typedef struct {
    unsigned char *p;
    uint32_t size;
    uint8_t family;
} block;

static uint64_t rng;
static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t random_size(void)
{
    uint64_t r = next_random() % 10000;
    if (r < 8800) return next_random() % 513;          /* 0..512 */
    if (r < 9950) return 513 + next_random() % 7680;   /* up to 8 KiB */
    if (r < 9999) return next_random() % (64 << 10);   /* up to 64 KiB */
    return next_random() % (1 << 20);                  /* up to 1 MiB */
}

static void *(*const mallocs[])(size_t) = { PyMem_RawMalloc, PyMem_Malloc, PyObject_Malloc, PyCore_Malloc };
static void *(*const reallocs[])(void *, size_t) = { PyMem_RawRealloc, PyMem_Realloc, PyObject_Realloc, PyCore_Realloc };
static void (*const frees[])(void *) = { PyMem_RawFree, PyMem_Free, PyObject_Free, PyCore_Free };

static unsigned char byte_of(size_t index, size_t offset) { return (unsigned char)((index * 131 + offset * 7) | 1); }

static void fill(const block *b, size_t index)
{
    for (size_t i = 0; i < b->size; i++)
        b->p[i] = byte_of(index, i);
}

static int check(const block *b, size_t index, size_t n, uint64_t seed, const char *when)
{
    for (size_t i = 0; i < n; i++)
        if (b->p[i] != byte_of(index, i)) {
            fprintf(stderr, "FAIL (seed %llu): block %zu of %u bytes, byte %zu corrupted %s\n",
                    (unsigned long long)seed, index, b->size, i, when);
            return 0;
        }
    if (((uintptr_t)b->p & 15) != 0) {
        fprintf(stderr, "FAIL (seed %llu): block %zu misaligned\n", (unsigned long long)seed, index);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 20261124;
    block *blocks = malloc(COUNT * sizeof *blocks);
    size_t *order = malloc(COUNT * sizeof *order);
    rng = seed | 1;
    printf("seed %llu\n", (unsigned long long)seed);
    for (size_t i = 0; i < COUNT; i++) {
        blocks[i].size = (uint32_t)random_size();
        blocks[i].family = (uint8_t)(next_random() % 4);
        blocks[i].p = mallocs[blocks[i].family](blocks[i].size);
        if (!blocks[i].p) {
            fprintf(stderr, "FAIL: allocation %zu of %u bytes returned NULL\n", i, blocks[i].size);
            return 1;
        }
        fill(&blocks[i], i);
        order[i] = i;
    }
    for (size_t i = 0; i < COUNT; i += 10) {          /* resize a tenth */
        size_t size = random_size(), kept;
        if (!check(&blocks[i], i, blocks[i].size, seed, "before realloc"))
            return 1;
        blocks[i].p = reallocs[blocks[i].family](blocks[i].p, size);
        kept = size < blocks[i].size ? size : blocks[i].size;
        if (!check(&blocks[i], i, kept, seed, "after realloc"))
            return 1;
        blocks[i].size = (uint32_t)size;
        fill(&blocks[i], i);
    }
    for (size_t i = COUNT - 1; i > 0; i--) {           /* Fisher-Yates */
        size_t j = next_random() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t k = 0; k < COUNT; k++) {
        size_t i = order[k];
        if (!check(&blocks[i], i, blocks[i].size, seed, "before free"))
            return 1;
        frees[blocks[i].family](blocks[i].p);
    }
    free(blocks);
    free(order);
    puts("ok: one million random blocks verified and freed in random order");
    return 0;
}
