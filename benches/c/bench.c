/* bench: the same allocation workloads on several allocators, side by side
 * in one process run.
 *
 *   bench LIBPYMALLOC LIBPYTHON [--runs N] [--scale F] [--only WORKLOAD] [--allocator NAME]
 *   bench LIBPYMALLOC LIBPYTHON --burst [--runs N] [--scale F] [--gaps MS,MS...] [--allocator NAME]
 *
 * Allocators (each loaded with dlopen(RTLD_LOCAL) so that their malloc-
 * named symbols do not clash): pymalloc-rs through PyObject_Malloc/Free and
 * through PyCore_Malloc/Free; CPython's own pymalloc (PyObject_Malloc from
 * libpython, usable before Py_Initialize; not thread-safe, so it sits out
 * the threaded workloads); glibc malloc; mimalloc, jemalloc and tcmalloc
 * from their Debian packages (skipped, with a note, when missing).
 *
 * Workloads use a Python-like size mix: 16..512 bytes, most of them 16..64.
 * "teardown 1M" is each allocator's first teardown in its turn, after the
 * others ran (cold memory for an allocator that gives freed memory back);
 * "teardown 1M, again" follows an untimed one (warm memory).
 * Each is run N times per allocator (interleaved across allocators); the
 * table gives the median nanoseconds per operation and the ratio to
 * CPython's pymalloc (>1 = faster than CPython's pymalloc).
 *
 * --burst: repeated build-and-teardown (1M blocks built, then freed, ten
 * rounds), each allocator in a fresh process of its own (this program run
 * again with --burst-child), so that every allocator starts cold and none
 * finds memory another one left; with no gap between rounds and with each
 * gap of --gaps (default 0,50: milliseconds of work that does not allocate,
 * between one round's teardown and the next round's build). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *name;
    void *(*malloc)(size_t);
    void (*free)(void *);
    void *(*realloc)(void *, size_t);
    int thread_safe;
    int available;
    const char *why_missing;
} allocator;

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* xorshift64*, one state per thread */
static inline uint64_t next_random(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Python-like sizes: 16..512, about 80% in 16..64. */
static inline size_t python_size(uint64_t *s)
{
    uint64_t r = next_random(s);
    if ((r & 0xff) < 205)
        return 16 + ((r >> 8) % 49);
    return 16 + ((r >> 8) % 497);
}

static double scale = 1.0;
#define SCALED(n) ((long)((n) * scale))

/* --- workloads: each returns the number of operations it did ------------ */

static long pairs(const allocator *a)
{
    uint64_t s = 1;
    long n = SCALED(4000000);
    for (long i = 0; i < n; i++) {
        char *p = a->malloc(python_size(&s));
        p[0] = 1;
        a->free(p);
    }
    return n;
}

#define LIVE 100000
static long churn_with(const allocator *a, uint64_t seed, long n)
{
    char **live = calloc(LIVE, sizeof *live);
    uint64_t s = seed;
    for (long i = 0; i < LIVE; i++)
        live[i] = a->malloc(python_size(&s));
    for (long i = 0; i < n; i++) {
        size_t slot = next_random(&s) % LIVE;
        a->free(live[slot]);
        live[slot] = a->malloc(python_size(&s));
        live[slot][0] = 1;
    }
    for (long i = 0; i < LIVE; i++)
        a->free(live[i]);
    free(live);
    return n;
}

static long churn(const allocator *a)
{
    return churn_with(a, 7, SCALED(3000000));
}

static long teardown(const allocator *a)
{
    long n = SCALED(1000000);
    char **blocks = malloc(n * sizeof *blocks);
    uint64_t s = 3;
    for (long i = 0; i < n; i++) {
        blocks[i] = a->malloc(python_size(&s));
        blocks[i][0] = 1;
    }
    for (long i = 0; i < n; i++)
        a->free(blocks[i]);
    free(blocks);
    return 2 * n;
}

/* The same, after a first untimed teardown in the same turn: a program that
 * builds and frees large structures again and again, whose memory is warm
 * (still mapped) unless its allocator gave it back in between. */
static void teardown_untimed(const allocator *a)
{
    teardown(a);
}

/* Work that does not allocate, for `ms` milliseconds: what a program does
 * between rebuilding its structures (here, random numbers). */
static void busy_ms(double ms)
{
    uint64_t s = 5, sink = 0;
    double end = now_ns() + ms * 1e6;
    while (now_ns() < end)
        for (int i = 0; i < 1000; i++)
            sink += next_random(&s);
    __asm__ volatile("" : : "r"(sink));
}

/* One --burst child: ten rounds of building 1M blocks and freeing them,
 * `gap_ms` of work between rounds; prints each round's ns per operation. */
static int burst_child(const allocator *a, double gap_ms)
{
    enum { ROUNDS = 10 };
    long n = SCALED(1000000);
    /* The block array is allocated and touched before timing, so that the
     * rounds time the allocator alone. */
    char **blocks = malloc(n * sizeof *blocks);
    memset(blocks, 0, n * sizeof *blocks);
    for (int round = 0; round < ROUNDS; round++) {
        uint64_t s = 3;
        if (round > 0)
            busy_ms(gap_ms);
        double start = now_ns();
        for (long i = 0; i < n; i++) {
            blocks[i] = a->malloc(python_size(&s));
            blocks[i][0] = 1;
        }
        for (long i = 0; i < n; i++)
            a->free(blocks[i]);
        printf("%.4f\n", (now_ns() - start) / (2.0 * n));
    }
    free(blocks);
    return 0;
}

static long sweep(const allocator *a)
{
    enum { BATCH = 1000 };
    static char *batch[BATCH];
    long ops = 0, rounds = SCALED(40);
    for (long r = 0; r < rounds; r++)
        for (size_t size = 16; size <= 512; size += 16) {
            for (int i = 0; i < BATCH; i++)
                batch[i] = a->malloc(size);
            for (int i = 0; i < BATCH; i++)
                a->free(batch[i]);
            ops += 2 * BATCH;
        }
    return ops;
}

static long realloc_growth(const allocator *a)
{
    long ops = 0, buffers = SCALED(200000);
    for (long b = 0; b < buffers; b++) {
        size_t size = 16;
        char *p = a->malloc(size);
        p[0] = 1;
        while (size < 2048) {
            size += size / 2;
            p = a->realloc(p, size);
            p[size - 1] = 1;
            ops++;
        }
        a->free(p);
        ops += 2;
    }
    return ops;
}

/* producer/consumer: one thread allocates, the other frees */
#define RING 4096
typedef struct {
    const allocator *a;
    _Atomic(char *) slots[RING];
    long count;
} ring;

static void *consumer(void *arg)
{
    ring *r = arg;
    for (long i = 0; i < r->count; i++) {
        _Atomic(char *) *slot = &r->slots[i % RING];
        char *p;
        while ((p = atomic_load_explicit(slot, memory_order_acquire)) == NULL)
            ;
        atomic_store_explicit(slot, NULL, memory_order_relaxed);
        r->a->free(p);
    }
    return NULL;
}

static long producer_consumer(const allocator *a)
{
    static ring r;
    pthread_t thread;
    uint64_t s = 11;
    r.a = a;
    r.count = SCALED(2000000);
    for (int i = 0; i < RING; i++)
        atomic_store(&r.slots[i], NULL);
    pthread_create(&thread, NULL, consumer, &r);
    for (long i = 0; i < r.count; i++) {
        _Atomic(char *) *slot = &r.slots[i % RING];
        char *p = a->malloc(python_size(&s));
        p[0] = 1;
        while (atomic_load_explicit(slot, memory_order_acquire) != NULL)
            ;
        atomic_store_explicit(slot, p, memory_order_release);
    }
    pthread_join(thread, NULL);
    return r.count;
}

typedef struct {
    const allocator *a;
    uint64_t seed;
    long n;
} churn_job;

static void *churn_thread(void *arg)
{
    churn_job *job = arg;
    churn_with(job->a, job->seed, job->n);
    return NULL;
}

/* N threads each churning; reported per operation of all threads together
 * (so perfect scaling halves the figure with 2 threads). */
static long threads_churn(const allocator *a, int threads)
{
    pthread_t ids[64];
    churn_job jobs[64];
    long n = SCALED(3000000);
    for (int t = 0; t < threads; t++) {
        jobs[t] = (churn_job){ a, 100 + t, n };
        pthread_create(&ids[t], NULL, churn_thread, &jobs[t]);
    }
    for (int t = 0; t < threads; t++)
        pthread_join(ids[t], NULL);
    return n * threads;
}

static long threads1(const allocator *a) { return threads_churn(a, 1); }
static long threads2(const allocator *a) { return threads_churn(a, 2); }

typedef struct {
    const char *name;
    long (*run)(const allocator *);
    int threaded;
    void (*before)(const allocator *); /* untimed, right before each timed run */
} workload;

static const workload workloads[] = {
    { "pair (alloc+free)", pairs, 0, NULL },
    { "churn 100k live", churn, 0, NULL },
    { "teardown 1M", teardown, 0, NULL },
    { "teardown 1M, again", teardown, 0, teardown_untimed },
    { "size-class sweep", sweep, 0, NULL },
    { "realloc growth", realloc_growth, 0, NULL },
    { "producer/consumer", producer_consumer, 1, NULL },
    { "1 thread churn", threads1, 1, NULL },
    { "2 threads churn", threads2, 1, NULL },
};
#define NWORK (sizeof workloads / sizeof workloads[0])

/* --- loading allocators ---------------------------------------------------- */

static void load(allocator *a, const char *path, const char *m, const char *f, const char *r)
{
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        a->available = 0;
        a->why_missing = strdup(dlerror());
        return;
    }
    a->malloc = (void *(*)(size_t))dlsym(handle, m);
    a->free = (void (*)(void *))dlsym(handle, f);
    a->realloc = (void *(*)(void *, size_t))dlsym(handle, r);
    a->available = a->malloc && a->free && a->realloc;
    if (!a->available)
        a->why_missing = "symbols not found";
}

/* The allocators, in the table's order. `arg`: the library is the command
 * line's argument 1 (LIBPYMALLOC) or 2 (LIBPYTHON), or with 0 `library`;
 * no library is this process's malloc. `preload`: measured as malloc in a
 * child run with the library in LD_PRELOAD (jemalloc refuses dlopen:
 * static TLS). */
typedef struct {
    const char *name, *library, *m, *f, *r;
    int arg, thread_safe, preload;
} allocator_spec;
enum { CPYTHON, OURS_OBJ, OURS_CORE, GLIBC, MIMALLOC, JEMALLOC, TCMALLOC, NSPECS };
static const allocator_spec specs[NSPECS] = {
    [CPYTHON] = { "CPython 3.11 pymalloc", NULL, "PyObject_Malloc", "PyObject_Free", "PyObject_Realloc", 2, 0, 0 },
    [OURS_OBJ] = { "pymalloc-rs PyObject_*", NULL, "PyObject_Malloc", "PyObject_Free", "PyObject_Realloc", 1, 1, 0 },
    [OURS_CORE] = { "pymalloc-rs PyCore_*", NULL, "PyCore_Malloc", "PyCore_Free", "PyCore_Realloc", 1, 1, 0 },
    [GLIBC] = { "glibc malloc", NULL, "malloc", "free", "realloc", 0, 1, 0 },
    [MIMALLOC] = { "mimalloc 2.0", "libmimalloc.so.2", "mi_malloc", "mi_free", "mi_realloc", 0, 1, 0 },
    [JEMALLOC] = { "jemalloc 5.3", "libjemalloc.so.2", "malloc", "free", "realloc", 0, 1, 1 },
    [TCMALLOC] = { "tcmalloc (gperftools)", "libtcmalloc_minimal.so.4", "tc_malloc", "tc_free", "tc_realloc", 0, 1, 0 },
};

static allocator system_allocator(const char *name)
{
    return (allocator){ .name = name, .malloc = malloc, .free = free, .realloc = realloc, .thread_safe = 1,
                        .available = 1 };
}

static allocator make_allocator(const allocator_spec *spec, char **argv)
{
    allocator a;
    if (!spec->arg && !spec->library)
        return system_allocator(spec->name);
    a = (allocator){ .name = spec->name, .thread_safe = spec->thread_safe };
    load(&a, spec->arg ? argv[spec->arg] : spec->library, spec->m, spec->f, spec->r);
    return a;
}

/* Run `command` (this program again, as a child) and read the `count`
 * numbers it prints; 0 when it fails. */
static int read_child(const char *command, double *values, size_t count)
{
    FILE *child = popen(command, "r");
    if (!child)
        return 0;
    for (size_t i = 0; i < count; i++)
        if (fscanf(child, "%lf", &values[i]) != 1) {
            pclose(child);
            return 0;
        }
    return pclose(child) == 0;
}

/* Run this program again with `library` preloaded, measuring only the
 * system allocator, and read its medians (one line per workload). */
static int preloaded_column(const char *self, char **argv, int argc, const char *name, const char *library,
                            double *medians)
{
    char command[4096];
    size_t used = (size_t)snprintf(command, sizeof command, "LD_PRELOAD=%s '%s'", library, self);
    for (int i = 1; i < argc; i++)
        used += (size_t)snprintf(command + used, sizeof command - used, " '%s'", argv[i]);
    snprintf(command + used, sizeof command - used, " --system-only '%s'", name);
    return read_child(command, medians, NWORK);
}

static int compare_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* --- --burst: every allocator in a fresh process -------------------------- */

enum { BURST_ROUNDS = 10, MAXGAPS = 8, MAXBURSTRUNS = 64 };

/* One --burst child: this program again for allocator `index` and
 * `gap_ms` (with the library preloaded where the spec says so); its
 * rounds' ns per operation into `rounds`. */
static int burst_run(const char *self, char **argv, int index, double gap_ms, double *rounds)
{
    char command[4096];
    const allocator_spec *spec = &specs[index];
    snprintf(command, sizeof command, "%s%s%s'%s' '%s' '%s' --scale %g --burst-child %d %g",
             spec->preload ? "LD_PRELOAD=" : "", spec->preload ? spec->library : "", spec->preload ? " " : "",
             self, argv[1], argv[2], scale, index, gap_ms);
    return read_child(command, rounds, BURST_ROUNDS);
}

static double median_of(double *values, int count)
{
    qsort(values, count, sizeof(double), compare_double);
    return values[count / 2];
}

/* ns per operation over a child's rounds (each round does as many). */
static double mean_of(const double rounds[BURST_ROUNDS])
{
    double sum = 0;
    for (int k = 0; k < BURST_ROUNDS; k++)
        sum += rounds[k];
    return sum / BURST_ROUNDS;
}

static void burst_row(const char *label, double medians[NSPECS], const int *measured)
{
    printf("| %s |", label);
    for (int i = 0; i < NSPECS; i++)
        if (measured[i])
            printf(" %.2f (%.2fx) |", medians[i], measured[CPYTHON] ? medians[CPYTHON] / medians[i] : 0);
    printf("\n");
}

/* The parent of --burst: runs the children (the allocators in a rotating
 * order, so that none always follows the same one) and prints the table. */
static int burst(char **argv, int runs, const char *gaps_text, const char *only_allocator)
{
    static double times[NSPECS][MAXGAPS][MAXBURSTRUNS][BURST_ROUNDS];
    double gaps[MAXGAPS];
    int ngaps = 0, measured[NSPECS];
    for (const char *p = gaps_text; *p && ngaps < MAXGAPS;) {
        char *end;
        gaps[ngaps++] = strtod(p, &end);
        p = *end == ',' ? end + 1 : end + strlen(end);
    }
    for (int i = 0; i < NSPECS; i++)
        measured[i] = !only_allocator || strstr(specs[i].name, only_allocator);
    for (int run = 0; run < runs; run++)
        for (int g = 0; g < ngaps; g++)
            for (int k = 0; k < NSPECS; k++) {
                int i = (k + run) % NSPECS;
                if (measured[i] && !burst_run(argv[0], argv, i, gaps[g], times[i][g][run])) {
                    printf("note: %s not measured (its child failed)\n", specs[i].name);
                    measured[i] = 0;
                }
            }

    printf("\nrepeated build-and-teardown: %d rounds of %ld blocks built then freed, each allocator in a fresh "
           "process; ns per operation, median of %d runs (ratio: CPython pymalloc time / this time)\n\n",
           BURST_ROUNDS, SCALED(1000000), runs);
    printf("| workload |");
    for (int i = 0; i < NSPECS; i++)
        if (measured[i])
            printf(" %s%s |", specs[i].name, specs[i].preload ? " (LD_PRELOAD)" : "");
    printf("\n|---|");
    for (int i = 0; i < NSPECS; i++)
        if (measured[i])
            printf("---|");
    printf("\n");
    for (int g = 0; g < ngaps; g++) {
        double all[NSPECS] = { 0 }, first[NSPECS] = { 0 }, rest[NSPECS] = { 0 };
        char label[128];
        for (int i = 0; i < NSPECS; i++) {
            double a[MAXBURSTRUNS], f[MAXBURSTRUNS], r[MAXBURSTRUNS];
            if (!measured[i])
                continue;
            for (int run = 0; run < runs; run++) {
                double *rounds = times[i][g][run], later[BURST_ROUNDS - 1];
                a[run] = mean_of(rounds);
                f[run] = rounds[0];
                memcpy(later, rounds + 1, sizeof later);
                r[run] = median_of(later, BURST_ROUNDS - 1);
            }
            all[i] = median_of(a, runs);
            first[i] = median_of(f, runs);
            rest[i] = median_of(r, runs);
        }
        if (gaps[g] == 0)
            snprintf(label, sizeof label, "burst 1M x%d, no gap", BURST_ROUNDS);
        else
            snprintf(label, sizeof label, "burst 1M x%d, %g ms of work between rounds", BURST_ROUNDS, gaps[g]);
        burst_row(label, all, measured);
        burst_row("  round 1 (cold)", first, measured);
        burst_row("  rounds 2-10 (median)", rest, measured);
        if (measured[MIMALLOC] && measured[TCMALLOC]) {
            /* The runs of one round of the loop above are close in time:
             * a ratio within a run cancels the machine's drift between
             * runs, which the medians above keep. */
            printf("|   paired: best of mimalloc and tcmalloc / this, median of the runs' ratios |");
            for (int i = 0; i < NSPECS; i++) {
                double ratios[MAXBURSTRUNS];
                if (!measured[i])
                    continue;
                for (int run = 0; run < runs; run++) {
                    double best = fmin(mean_of(times[MIMALLOC][g][run]), mean_of(times[TCMALLOC][g][run]));
                    ratios[run] = best / mean_of(times[i][g][run]);
                }
                printf(" %.2fx |", median_of(ratios, runs));
            }
            printf("\n");
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    enum { MAXA = 8, MAXRUNS = 64 };
    allocator allocators[MAXA];
    int n = 0, runs = 5;
    const char *only = NULL, *system_name = NULL, *only_allocator = NULL, *gaps = "0,50";
    int burst_mode = 0, burst_index = -1;
    double burst_gap = 0;
    static double results[MAXA][NWORK][MAXRUNS];

    if (argc < 3) {
        fprintf(stderr, "usage: bench LIBPYMALLOC LIBPYTHON [--runs N] [--scale F] [--only WORKLOAD]\n"
                        "       bench LIBPYMALLOC LIBPYTHON --burst [--runs N] [--scale F] [--gaps MS,MS...]\n");
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--allocator") && i + 1 < argc)
            only_allocator = argv[++i];
        else if (!strcmp(argv[i], "--system-only") && i + 1 < argc)
            system_name = argv[++i];
        else if (!strcmp(argv[i], "--burst"))
            burst_mode = 1;
        else if (!strcmp(argv[i], "--gaps") && i + 1 < argc)
            gaps = argv[++i];
        else if (!strcmp(argv[i], "--burst-child") && i + 2 < argc) {
            burst_index = atoi(argv[++i]);
            burst_gap = atof(argv[++i]);
        }
    }
    if (runs < 1 || runs > MAXRUNS)
        runs = 5;

    if (burst_index >= 0 && burst_index < NSPECS) {
        /* Child mode of --burst: one allocator, ten rounds. A preloaded
         * allocator is this process's malloc. */
        const allocator_spec *spec = &specs[burst_index];
        allocator a = spec->preload ? system_allocator(spec->name) : make_allocator(spec, argv);
        if (!a.available) {
            fprintf(stderr, "%s: %s\n", a.name, a.why_missing);
            return 3;
        }
        return burst_child(&a, burst_gap);
    }
    if (burst_mode)
        return burst(argv, runs, gaps, only_allocator);

    if (system_name) {
        /* Child mode (see preloaded_column): the process was started with
         * an allocator in LD_PRELOAD, so malloc is that allocator. */
        allocator system = system_allocator(system_name);
        for (size_t w = 0; w < NWORK; w++) {
            double times[MAXRUNS];
            if (only && !strstr(workloads[w].name, only)) {
                printf("0\n");
                continue;
            }
            for (int run = 0; run < runs; run++) {
                if (workloads[w].before)
                    workloads[w].before(&system);
                double start = now_ns();
                long ops = workloads[w].run(&system);
                times[run] = (now_ns() - start) / ops;
            }
            qsort(times, runs, sizeof(double), compare_double);
            printf("%.4f\n", times[runs / 2]);
        }
        return 0;
    }

    allocator all[NSPECS];
    for (int i = 0; i < NSPECS; i++)
        all[i] = make_allocator(&specs[i], argv);
    static double preloaded[NWORK];
    int preloaded_jemalloc = 0;
    for (int i = 0; i < NSPECS; i++) {
        if (only_allocator && !strstr(all[i].name, only_allocator))
            continue;
        if (all[i].available)
            allocators[n++] = all[i];
        else if (specs[i].preload && preloaded_column(argv[0], argv, argc, "jemalloc 5.3 (LD_PRELOAD)",
                                                         "libjemalloc.so.2", preloaded))
            preloaded_jemalloc = 1;
        else
            printf("note: %s not measured: %s\n", all[i].name, all[i].why_missing);
    }
    if (preloaded_jemalloc)
        printf("note: jemalloc cannot be dlopen'ed (%s); it was measured in a child process with "
               "LD_PRELOAD=libjemalloc.so.2, not interleaved with the others\n", all[JEMALLOC].why_missing);

    /* Run order: the table's, except that pymalloc-rs's two columns (one
     * allocator, two entry points) are not run back to back: the second
     * would find the memory the first just freed still mapped, and its
     * first teardown would not be cold as everyone else's is. */
    int order[MAXA], ordered = 0, core_at = -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(allocators[i].name, specs[OURS_CORE].name))
            core_at = i;
    for (int i = 0; i < n; i++) {
        if (i == core_at)
            continue;
        order[ordered++] = i;
        if (core_at >= 0 && !strcmp(allocators[i].name, specs[GLIBC].name))
            order[ordered++] = core_at, core_at = -1;
    }
    if (core_at >= 0)
        order[ordered++] = core_at;

    for (size_t w = 0; w < NWORK; w++) {
        if (only && !strstr(workloads[w].name, only))
            continue;
        for (int run = 0; run < runs; run++)
            for (int k = 0; k < n; k++) {
                int i = order[k];
                if (workloads[w].threaded && !allocators[i].thread_safe) {
                    results[i][w][run] = 0;
                    continue;
                }
                if (workloads[w].before)
                    workloads[w].before(&allocators[i]);
                double start = now_ns();
                long ops = workloads[w].run(&allocators[i]);
                results[i][w][run] = (now_ns() - start) / ops;
            }
    }

    printf("\nns per operation, median of %d interleaved runs (ratio: CPython pymalloc time / this time)\n\n",
           runs);
    printf("| workload |");
    for (int i = 0; i < n; i++)
        printf(" %s |", allocators[i].name);
    if (preloaded_jemalloc)
        printf(" jemalloc 5.3 (LD_PRELOAD) |");
    printf("\n|---|");
    for (int i = 0; i < n + preloaded_jemalloc; i++)
        printf("---|");
    printf("\n");
    for (size_t w = 0; w < NWORK; w++) {
        double medians[MAXA], base = 0;
        if (only && !strstr(workloads[w].name, only))
            continue;
        for (int i = 0; i < n; i++) {
            qsort(results[i][w], runs, sizeof(double), compare_double);
            medians[i] = results[i][w][runs / 2];
        }
        for (int i = 0; i < n; i++)
            if (!strcmp(allocators[i].name, "CPython 3.11 pymalloc"))
                base = medians[i];
        if (base == 0) /* threaded workloads: compare with glibc */
            for (int i = 0; i < n; i++)
                if (!strcmp(allocators[i].name, "glibc malloc"))
                    base = -medians[i];
        printf("| %s%s |", workloads[w].name, base < 0 ? " (ratio vs glibc)" : "");
        for (int i = 0; i < n; i++) {
            if (medians[i] == 0)
                printf(" n/a (not thread-safe) |");
            else
                printf(" %.2f (%.2fx) |", medians[i], (base < 0 ? -base : base) / medians[i]);
        }
        if (preloaded_jemalloc)
            printf(" %.2f (%.2fx) |", preloaded[w], (base < 0 ? -base : base) / preloaded[w]);
        printf("\n");
    }
    return 0;
}
