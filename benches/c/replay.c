/* replay: time the allocator on a request-size distribution taken from an
 * allocation profile (PYMALLOC_PROFILE), for scripts/tune.py.
 *
 * usage: replay DISTRIBUTION [OPS]
 *   DISTRIBUTION: lines "size count" (sizes with their request counts)
 * A live set of 50,000 slots is churned: each operation frees a random
 * slot's block (if any) and puts a new block of a size drawn from the
 * distribution there, touching its first and last byte. Prints the median
 * nanoseconds per operation over 5 rounds. */
#include <pymalloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define LIVE 50000
#define ROUNDS 5

static uint64_t state = 0x9E3779B97F4A7C15ull;

static uint64_t next_random(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    size_t *sizes = NULL, *cumulative = NULL, n = 0, capacity = 0, total = 0;
    long ops = argc > 2 ? atol(argv[2]) : 4000000;
    unsigned long long size, count;
    static char *live[LIVE];
    double results[ROUNDS];
    FILE *in;

    if (argc < 2 || !(in = fopen(argv[1], "r"))) {
        fprintf(stderr, "usage: replay DISTRIBUTION [OPS]\n");
        return 2;
    }
    while (fscanf(in, "%llu %llu", &size, &count) == 2) {
        if (n == capacity) {
            capacity = capacity ? capacity * 2 : 1024;
            sizes = realloc(sizes, capacity * sizeof *sizes);
            cumulative = realloc(cumulative, capacity * sizeof *cumulative);
        }
        total += count;
        sizes[n] = size;
        cumulative[n++] = total;
    }
    fclose(in);
    if (n == 0) {
        fprintf(stderr, "replay: empty distribution\n");
        return 2;
    }
    for (int round = 0; round < ROUNDS; round++) {
        struct timespec start, end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (long op = 0; op < ops; op++) {
            size_t slot = next_random() % LIVE, pick = next_random() % total, lo = 0, hi = n - 1;
            while (lo < hi) {                     /* first cumulative > pick */
                size_t mid = (lo + hi) / 2;
                if (cumulative[mid] > pick)
                    hi = mid;
                else
                    lo = mid + 1;
            }
            PyObject_Free(live[slot]);
            live[slot] = PyObject_Malloc(sizes[lo]);
            if (sizes[lo]) {
                live[slot][0] = 1;
                live[slot][sizes[lo] - 1] = 1;
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &end);
        results[round] = ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) / ops;
    }
    qsort(results, ROUNDS, sizeof results[0], compare_double);
    printf("%.2f\n", results[ROUNDS / 2]);
    return 0;
}
