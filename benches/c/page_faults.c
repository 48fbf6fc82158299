/* page_faults: what a first touch of fresh anonymous memory costs on this
 * machine, the floor under any allocator's cold teardown (the C
 * benchmark's "teardown 1M" row: every allocator that gave its memory back
 * must fault it in again).
 *
 *   page_faults [MiB] [rounds]
 *
 * For each way of bringing 4 KiB pages in, the nanoseconds per page:
 *   touch            one write per page (a page fault each);
 *   populate N KiB   madvise(MADV_POPULATE_WRITE) over N KiB at a time (one
 *                    system call brings N KiB in: no fault per page);
 *   huge pages       madvise(MADV_HUGEPAGE) over 2 MiB-aligned memory, then
 *                    one write per 4 KiB page;
 * then "rewrite" (writing every cache line of the pages already in) and
 * "give back" (madvise(MADV_DONTNEED), as an allocator returning memory).
 * Each way runs `rounds` times; the median is printed. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define PAGE 4096ul
#define HUGE (2ul << 20)

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* 2 MiB-aligned fresh anonymous memory of `bytes`, inside a mapping of
 * `bytes + HUGE` that starts at *mapping */
static char *fresh(size_t bytes, char **mapping)
{
    char *p = mmap(NULL, bytes + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    *mapping = p;
    return (char *)(((unsigned long)p + HUGE - 1) & ~(HUGE - 1));
}

typedef struct {
    const char *name;
    size_t chunk; /* populate step in bytes; 0: touch; 1: huge pages + touch */
} way;

int main(int argc, char **argv)
{
    size_t bytes = (argc > 1 ? strtoul(argv[1], NULL, 10) : 128) << 20;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    const way ways[] = {
        { "touch", 0 },           { "populate 16 KiB", 16 << 10 }, { "populate 64 KiB", 64 << 10 },
        { "populate 256 KiB", 256 << 10 }, { "populate 1 MiB", 1 << 20 }, { "huge pages", 1 },
    };
    size_t pages = bytes / PAGE;
    if (rounds < 1 || rounds > 99 || pages == 0) {
        fprintf(stderr, "usage: page_faults [MiB] [rounds 1..99]\n");
        return 2;
    }
    printf("| way | bring in (ns/page) | rewrite (ns/page) | give back (ns/page) |\n|---|---|---|---|\n");
    for (size_t w = 0; w < sizeof ways / sizeof ways[0]; w++) {
        double in[99], again[99], out[99];
        for (int r = 0; r < rounds; r++) {
            char *mapping;
            char *p = fresh(bytes, &mapping);
            double t0 = now_ns();
            if (ways[w].chunk == 0 || ways[w].chunk == 1) {
                if (ways[w].chunk == 1 && madvise(p, bytes, MADV_HUGEPAGE) != 0)
                    perror("madvise(MADV_HUGEPAGE)");
                for (size_t i = 0; i < bytes; i += PAGE)
                    p[i] = 1;
            } else {
                for (size_t i = 0; i < bytes; i += ways[w].chunk)
                    if (madvise(p + i, ways[w].chunk, MADV_POPULATE_WRITE) != 0) {
                        perror("madvise(MADV_POPULATE_WRITE)");
                        return 1;
                    }
            }
            double t1 = now_ns();
            for (size_t i = 0; i < bytes; i += 64)
                p[i] = 2;
            double t2 = now_ns();
            madvise(p, bytes, MADV_DONTNEED);
            double t3 = now_ns();
            in[r] = (t1 - t0) / pages;
            again[r] = (t2 - t1) / pages;
            out[r] = (t3 - t2) / pages;
            munmap(mapping, bytes + HUGE);
        }
        qsort(in, rounds, sizeof(double), compare_double);
        qsort(again, rounds, sizeof(double), compare_double);
        qsort(out, rounds, sizeof(double), compare_double);
        printf("| %s | %.0f | %.0f | %.0f |\n", ways[w].name, in[rounds / 2], again[rounds / 2], out[rounds / 2]);
    }
    return 0;
}
