/* Threads freeing each other's blocks, and threads that come and go while
 * their blocks live on. More threads than cores; every block carries a
 * pattern that the freeing thread verifies. */
#include <pymalloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED); \
    fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

#define PRODUCERS 4
#define CONSUMERS 4
#define PER_PRODUCER 200000
#define QUEUE 1024

/* A bounded queue of blocks, guarded by a mutex. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    unsigned char *items[QUEUE];
    size_t sizes[QUEUE];
    int head, count, producers_left;
} queue = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, {0}, 0, 0, PRODUCERS };

static unsigned char mark(size_t size) { return (unsigned char)(size * 37 + 11); }

static void *producer(void *arg)
{
    uint64_t r = (uintptr_t)arg * 2654435761u + 1;
    for (int i = 0; i < PER_PRODUCER; i++) {
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        size_t size = 1 + r % 512;
        unsigned char *p = (i & 1) ? PyObject_Malloc(size) : PyMem_Malloc(size);
        memset(p, mark(size), size);
        pthread_mutex_lock(&queue.lock);
        while (queue.count == QUEUE)
            pthread_cond_wait(&queue.not_full, &queue.lock);
        int slot = (queue.head + queue.count) % QUEUE;
        queue.items[slot] = p;
        queue.sizes[slot] = size | ((size_t)(i & 1) << 31);
        queue.count++;
        pthread_cond_signal(&queue.not_empty);
        pthread_mutex_unlock(&queue.lock);
    }
    pthread_mutex_lock(&queue.lock);
    queue.producers_left--;
    pthread_cond_broadcast(&queue.not_empty);
    pthread_mutex_unlock(&queue.lock);
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&queue.lock);
        while (queue.count == 0 && queue.producers_left > 0)
            pthread_cond_wait(&queue.not_empty, &queue.lock);
        if (queue.count == 0) {
            pthread_mutex_unlock(&queue.lock);
            return NULL;
        }
        unsigned char *p = queue.items[queue.head];
        size_t tagged = queue.sizes[queue.head], size = tagged & 0x7fffffff;
        queue.head = (queue.head + 1) % QUEUE;
        queue.count--;
        pthread_cond_signal(&queue.not_full);
        pthread_mutex_unlock(&queue.lock);
        for (size_t i = 0; i < size; i++)
            if (p[i] != mark(size)) {
                CHECK(0, "block of %zu bytes corrupted at %zu in transit", size, i);
                break;
            }
        if (tagged >> 31)
            PyObject_Free(p);
        else
            PyMem_Free(p);
    }
}

static PyCoreStats stats(void)
{
    PyCoreStats s;
    s.version = PYCORE_STATS_VERSION;
    PyCore_GetStats(&s);
    return s;
}

static size_t blocks_in_use(void)
{
    PyCoreStats s = stats();
    size_t total = 0;
    for (unsigned i = 0; i < s.num_classes; i++)
        total += s.classes[i].blocks_in_use;
    return total;
}

/* Short-lived threads whose blocks outlive them. */
#define ROUNDS 40
#define PER_THREAD 3000
static unsigned char *kept[ROUNDS][4][PER_THREAD];

static void *short_lived(void *arg)
{
    unsigned char **mine = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        size_t size = 1 + (i * 17) % 400;
        mine[i] = PyObject_Malloc(size);
        memset(mine[i], mark(size), size);
    }
    return NULL;
}

static void verify_and_free(unsigned char **blocks)
{
    for (int i = 0; i < PER_THREAD; i++) {
        size_t size = 1 + (i * 17) % 400;
        CHECK(blocks[i][0] == mark(size) && blocks[i][size - 1] == mark(size), "block outliving its thread");
        PyObject_Free(blocks[i]);
    }
}

int main(void)
{
    pthread_t threads[PRODUCERS + CONSUMERS];
    size_t start = blocks_in_use();

    for (intptr_t i = 0; i < PRODUCERS; i++)
        pthread_create(&threads[i], NULL, producer, (void *)(i + 1));
    for (int i = 0; i < CONSUMERS; i++)
        pthread_create(&threads[PRODUCERS + i], NULL, consumer, NULL);

    /* Meanwhile, threads come and go whose blocks outlive them. */
    for (int round = 0; round < ROUNDS; round++) {
        pthread_t t[4];
        for (int k = 0; k < 4; k++)
            pthread_create(&t[k], NULL, short_lived, kept[round][k]);
        for (int k = 0; k < 4; k++)
            pthread_join(t[k], NULL);
        if (round >= 3)                      /* free what threads three rounds ago made */
            for (int k = 0; k < 4; k++)
                verify_and_free(kept[round - 3][k]);
    }
    for (int round = ROUNDS - 3; round < ROUNDS; round++)
        for (int k = 0; k < 4; k++)
            verify_and_free(kept[round][k]);

    for (int i = 0; i < PRODUCERS + CONSUMERS; i++)
        pthread_join(threads[i], NULL);
    PyCoreStats s = stats();
    CHECK(s.cross_thread_frees > 0, "frees by consumers are cross-thread (%llu counted)",
          (unsigned long long)s.cross_thread_frees);
    if (!failures)
        printf("ok: %d producers -> %d consumers, %d blocks, %llu cross-thread frees collected, "
               "while %d short-lived threads came and went\n", PRODUCERS, CONSUMERS, PRODUCERS * PER_PRODUCER,
               (unsigned long long)s.cross_thread_frees, 4 * ROUNDS);
    PyCore_Trim();
    s = stats();
    size_t heaps = s.heaps_live + s.heaps_abandoned + s.heaps_free;
    CHECK(blocks_in_use() == start, "every block came back: %zu in use, %zu at start", blocks_in_use(), start);
    CHECK(heaps <= 2 * (PRODUCERS + CONSUMERS) + 1, "heaps are reused: %zu exist after %d threads", heaps,
          PRODUCERS + CONSUMERS + 4 * ROUNDS);
    CHECK(s.pools_given_back > 0, "pools of dead threads' heaps went back to the arenas");
    CHECK(s.abandoned_pools == 0, "after a trim no abandoned heap holds pools (%zu)", s.abandoned_pools);
    CHECK(s.arenas_current <= 1, "arenas went back to the OS: %llu mapped (the trim unmaps free arenas)",
          (unsigned long long)s.arenas_current);
    if (!failures)
        printf("ok: every block came back; %zu heaps in all, %llu pools given back, %llu of %llu arenas unmapped\n",
               heaps, (unsigned long long)s.pools_given_back, (unsigned long long)s.arenas_reclaimed,
               (unsigned long long)s.arenas_allocated_total);
    return failures ? 1 : 0;
}
