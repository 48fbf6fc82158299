/* fork() while other threads are busy inside the allocator.
 *
 * Worker threads allocate, free, trade blocks with each other (cross-thread
 * frees) and trim, without pause. Meanwhile the main thread forks 200
 * times. Each child, alone with the forking thread and with the heaps of
 * threads that do not exist in it:
 *   - finds the blocks allocated before the fork (by main and by the
 *     workers) intact, and frees them;
 *   - allocates, verifies and frees a few thousand blocks of every size;
 *   - most children first start a thread that does the same (it gets a
 *     heap of its own: the heaps of the parent's other threads may have
 *     been caught mid-update, so the child never reuses them), and trims;
 *   - _exit(0)s.
 * The parent waits for each child with a deadline: a child that deadlocks
 * on a lock held by a parent thread at fork time fails the test. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pymalloc.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* In the parent: print and exit. In a child: print with write(2), which
 * takes no stdio lock, and _exit. */
static int in_child;
static void fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));
static void fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s%s:%d: CHECK(%s) failed: ", in_child ? "[child] " : "",
                     file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof msg)
        n += vsnprintf(msg + n, sizeof msg - n, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof msg - 1)
        n = (int)sizeof msg - 2;
    msg[n++] = '\n';
    if (write(2, msg, (size_t)n) < 0) {
        /* nothing more to do */
    }
    if (in_child)
        _exit(1);
    exit(1);
}
#define CHECK(cond, ...) \
    do { if (!(cond)) fail(__FILE__, __LINE__, #cond, __VA_ARGS__); } while (0)

#ifndef FORKS
#define FORKS 200
#endif
#define WORKERS 3
#define SLOTS 512
#define BURST 48
#define CHILD_BLOCKS 4000
#define CHILD_DEADLINE_SECONDS 10

static uint32_t next_random(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

static void fill(unsigned char *p, size_t size, uint32_t tag)
{
    for (size_t i = 0; i < size; i++)
        p[i] = (unsigned char)(tag ^ (i * 29));
}

static int intact(const unsigned char *p, size_t size, uint32_t tag)
{
    for (size_t i = 0; i < size; i++)
        if (p[i] != (unsigned char)(tag ^ (i * 29)))
            return 0;
    return 1;
}

/* The workers' own blocks carry the pattern at both ends only (the whole
 * block up to 16 bytes), so that the workers spend their time in the
 * allocator rather than in memset. */
static void stamp(unsigned char *p, size_t size, uint32_t tag)
{
    if (size <= 16) {
        fill(p, size, tag);
        return;
    }
    fill(p, 8, tag);
    fill(p + size - 8, 8, ~tag);
}

static int stamped(const unsigned char *p, size_t size, uint32_t tag)
{
    if (size <= 16)
        return intact(p, size, tag);
    return intact(p, 8, tag) && intact(p + size - 8, 8, ~tag);
}

/* Blocks the child frees; the free function matches the allocating one. */
typedef struct {
    unsigned char *p;
    size_t size;
    uint32_t tag;
    void (*free)(void *);
} kept;

/* --- parent: the busy workers -------------------------------------------- */

/* Under AddressSanitizer, malloc() is ASan's; the libasan of GCC 12 does not
 * hold its allocator lock across fork(), so a child that calls malloc while
 * a parent thread was inside it can hang in ASan itself. There the workers
 * keep to the pooled sizes (which never call malloc); elsewhere they also
 * make blocks above the threshold, which the library hands to malloc. */
#if defined(__SANITIZE_ADDRESS__)
#define WORKER_MAX_SIZE 512
#else
#define WORKER_MAX_SIZE 2048
#endif

static atomic_int stop;

/* A one-slot mailbox per worker: a block the previous worker sends it to
 * free (a cross-thread free). */
static _Atomic(kept *) mailbox[WORKERS];

/* Per worker, blocks allocated before the first fork and never touched
 * afterwards: the child checks and frees them (they belong to heaps whose
 * threads the child does not have). */
#define WORKER_KEPT 64
static kept worker_kept[WORKERS][WORKER_KEPT];
static pthread_barrier_t workers_ready;

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint32_t rng = 0x1234567u + 7919u * (uint32_t)id;
    for (int i = 0; i < WORKER_KEPT; i++) {
        kept *k = &worker_kept[id][i];
        k->size = 1 + next_random(&rng) % 512;
        k->tag = next_random(&rng);
        k->free = (i & 1) ? PyObject_Free : PyMem_Free;
        k->p = (i & 1) ? PyObject_Malloc(k->size) : PyMem_Malloc(k->size);
        CHECK(k->p != NULL, "worker allocation failed");
        fill(k->p, k->size, k->tag);
    }
    pthread_barrier_wait(&workers_ready);

    kept slots[SLOTS];
    memset(slots, 0, sizeof slots);
    unsigned long ops = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint32_t r = next_random(&rng);
        kept *s = &slots[r % SLOTS];
        if (s->p) {
            CHECK(stamped(s->p, s->size, s->tag), "worker %d: block %p of %zu bytes corrupted", id,
                  (void *)s->p, s->size);
            s->free(s->p);
            s->p = NULL;
        }
        s->size = 1 + (r >> 9) % WORKER_MAX_SIZE;
        s->tag = r;
        switch ((r >> 24) & 3) {
        case 0: s->p = PyMem_Malloc(s->size); s->free = PyMem_Free; break;
        case 1: s->p = PyObject_Malloc(s->size); s->free = PyObject_Free; break;
        case 2: s->p = PyCore_Malloc(s->size); s->free = PyCore_Free; break;
        default:
            s->p = PyObject_Calloc(1, s->size);
            s->free = PyObject_Free;
            CHECK(s->p == NULL || s->p[0] == 0, "calloc'd block not zeroed");
            break;
        }
        CHECK(s->p != NULL, "allocation of %zu bytes failed", s->size);
        stamp(s->p, s->size, s->tag);

        /* A burst of blocks of one size, allocated then freed: it runs
         * through free lists to their end, so pools are carved, filled up
         * and emptied all the time. */
        void *burst[BURST];
        size_t burst_size = 1 + (r >> 3) % 512;
        for (int i = 0; i < BURST; i++)
            burst[i] = PyObject_Malloc(burst_size);
        for (int i = 0; i < BURST; i++) {
            CHECK(burst[i] != NULL, "allocation of %zu bytes failed", burst_size);
            PyObject_Free(burst[i]);
        }

        /* Trade a block with the next worker now and then. */
        if ((r & 63) == 0) {
            kept *mine = PyObject_Malloc(sizeof(kept));
            CHECK(mine != NULL, "allocation failed");
            *mine = *s;
            s->p = NULL;
            kept *old = atomic_exchange(&mailbox[(id + 1) % WORKERS], mine);
            if (old) { /* the next worker has not taken its previous one */
                CHECK(stamped(old->p, old->size, old->tag), "traded block corrupted");
                old->free(old->p);
                PyObject_Free(old);
            }
        }
        kept *in = atomic_exchange(&mailbox[id], NULL);
        if (in) {
            CHECK(stamped(in->p, in->size, in->tag), "worker %d: received block corrupted", id);
            in->free(in->p);
            PyObject_Free(in);
        }
        if ((++ops & 0x3fff) == 0)
            PyCore_Trim();
    }
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].p)
            slots[i].free(slots[i].p);
    return NULL;
}

/* --- the child ------------------------------------------------------------ */

static kept main_kept[256];

static void check_and_free_kept(kept *k, int n, const char *whose)
{
    for (int i = 0; i < n; i++) {
        CHECK(intact(k[i].p, k[i].size, k[i].tag), "%s block %d (%p, %zu bytes) changed across fork",
              whose, i, (void *)k[i].p, k[i].size);
        k[i].free(k[i].p);
    }
}

static void allocate_verify_free(uint32_t seed)
{
    kept *b = PyMem_RawMalloc(CHILD_BLOCKS * sizeof(kept));
    CHECK(b != NULL, "raw allocation failed");
    uint32_t rng = seed | 1;
    for (int i = 0; i < CHILD_BLOCKS; i++) {
        b[i].size = 1 + next_random(&rng) % 600;
        b[i].tag = next_random(&rng);
        int pick = (int)(b[i].tag % 3);
        b[i].p = pick == 0 ? PyMem_Malloc(b[i].size)
               : pick == 1 ? PyObject_Malloc(b[i].size) : PyCore_Malloc(b[i].size);
        b[i].free = pick == 0 ? PyMem_Free : pick == 1 ? PyObject_Free : PyCore_Free;
        CHECK(b[i].p != NULL, "allocation of %zu bytes failed in the child", b[i].size);
        fill(b[i].p, b[i].size, b[i].tag);
    }
    /* Free every other one, reallocate some, then free the rest. */
    for (int i = 0; i < CHILD_BLOCKS; i += 2) {
        CHECK(intact(b[i].p, b[i].size, b[i].tag), "child block %d corrupted", i);
        b[i].free(b[i].p);
    }
    for (int i = 1; i < CHILD_BLOCKS; i += 2) {
        CHECK(intact(b[i].p, b[i].size, b[i].tag), "child block %d corrupted", i);
        if (b[i].free == PyObject_Free && b[i].size <= 512) {
            unsigned char *q = PyObject_Realloc(b[i].p, b[i].size * 2);
            CHECK(q != NULL, "realloc failed");
            CHECK(intact(q, b[i].size, b[i].tag), "realloc lost the contents");
            b[i].p = q;
        }
        b[i].free(b[i].p);
    }
    PyMem_RawFree(b);
}

static void *child_thread(void *arg)
{
    allocate_verify_free(0xABCD0000u + (uint32_t)(uintptr_t)arg);
    PyCore_Trim();
    return NULL;
}

static void child(int n)
{
    in_child = 1;
    alarm(CHILD_DEADLINE_SECONDS); /* belt and braces: the parent also watches */
    /* Three children in four start with a new thread: it adopts the heap of
     * one of the parent's threads, as that thread left it at the fork. */
    pthread_t t;
    int with_thread = n % 4 != 3;
    if (with_thread)
        CHECK(pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)n) == 0,
              "pthread_create in the child failed");
    check_and_free_kept(main_kept, 256, "main's");
    /* The workers' kept blocks: worker n % WORKERS's in every child, so
     * that frees into every abandoned heap are exercised. */
    check_and_free_kept(worker_kept[n % WORKERS], WORKER_KEPT, "a worker's");
    allocate_verify_free(0x5EED0000u + (uint32_t)n);
    if (with_thread)
        pthread_join(t, NULL);
    PyCore_Trim();
    PyCoreStats st;
    memset(&st, 0, sizeof st);
    st.version = PYCORE_STATS_VERSION;
    CHECK(PyCore_GetStats(&st) == 0, "PyCore_GetStats failed in the child");
    CHECK(st.heaps_live >= 1, "no live heap in the child");
    _exit(0);
}

/* --- the parent ------------------------------------------------------------ */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait for `pid` until the deadline; kill it (and fail) if it is late. */
static void wait_with_deadline(pid_t pid, int n)
{
    double deadline = now() + CHILD_DEADLINE_SECONDS + 5;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        CHECK(r >= 0 || errno == EINTR, "waitpid: %s", strerror(errno));
        if (r == pid) {
            if (WIFSIGNALED(status))
                CHECK(0, "child %d (pid %d) killed by signal %d (%s)%s", n, (int)pid,
                      WTERMSIG(status), strsignal(WTERMSIG(status)),
                      WTERMSIG(status) == SIGALRM ? ": it hung (deadlock after fork?)" : "");
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d (pid %d) exited with %d",
                  n, (int)pid, WEXITSTATUS(status));
            return;
        }
        if (now() > deadline) {
            fprintf(stderr, "child %d (pid %d) still running after %d s: deadlocked? "
                    "(left stopped for a debugger: gdb -p %d)\n",
                    n, (int)pid, CHILD_DEADLINE_SECONDS + 5, (int)pid);
            kill(pid, SIGSTOP);
            CHECK(0, "child %d hung", n);
        }
        struct timespec pause = { 0, 200 * 1000 };
        nanosleep(&pause, NULL);
    }
}

int main(void)
{
    double t0 = now();
    /* No core files from children that fail on purpose or by a bug. */
    struct rlimit no_core = { 0, 0 };
    setrlimit(RLIMIT_CORE, &no_core);

    uint32_t rng = 42;
    for (int i = 0; i < 256; i++) {
        kept *k = &main_kept[i];
        k->size = 1 + next_random(&rng) % 512;
        k->tag = next_random(&rng);
        switch (i % 4) {
        case 0: k->p = PyMem_Malloc(k->size); k->free = PyMem_Free; break;
        case 1: k->p = PyObject_Malloc(k->size); k->free = PyObject_Free; break;
        case 2: k->p = PyCore_Malloc(k->size); k->free = PyCore_Free; break;
        default: k->p = PyMem_RawMalloc(k->size); k->free = PyMem_RawFree; break;
        }
        CHECK(k->p != NULL, "allocation failed");
        fill(k->p, k->size, k->tag);
    }

    pthread_barrier_init(&workers_ready, NULL, WORKERS + 1);
    pthread_t workers[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        CHECK(pthread_create(&workers[i], NULL, worker, (void *)(intptr_t)i) == 0, "pthread_create");
    pthread_barrier_wait(&workers_ready);

    for (int n = 0; n < FORKS; n++) {
        /* Let the workers get back into the allocator between forks. */
        struct timespec pause = { 0, 100 * 1000 };
        nanosleep(&pause, NULL);
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0)
            child(n);
        wait_with_deadline(pid, n);
    }

    atomic_store(&stop, 1);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(workers[i], NULL);
    for (int i = 0; i < WORKERS; i++) {
        kept *in = atomic_exchange(&mailbox[i], NULL);
        if (in) {
            CHECK(stamped(in->p, in->size, in->tag), "traded block corrupted");
            in->free(in->p);
            PyObject_Free(in);
        }
    }
    /* The parent's copies of the kept blocks are untouched by the children. */
    check_and_free_kept(main_kept, 256, "main's (in the parent)");
    for (int i = 0; i < WORKERS; i++)
        check_and_free_kept(worker_kept[i], WORKER_KEPT, "a worker's (in the parent)");
    pthread_barrier_destroy(&workers_ready);
    printf("test_fork: %d forks with %d busy threads, every child finished in time (%.2f s)\n",
           FORKS, WORKERS, now() - t0);
    return 0;
}
