/* fork() from a process whose other threads are busy inside the allocator,
 * many times: each child allocates, verifies and frees, with blocks made
 * before the fork still intact, and exits; a child that does not finish
 * within a deadline (a lock inherited in the held state) fails the test. */
#include <pymalloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FORKS 200
#define WORKERS 3

static atomic_int stop;

static void *busy(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg;
    void *slots[256] = { 0 };
    while (!atomic_load(&stop)) {
        seed = seed * 1103515245 + 12345;
        int i = (seed >> 8) % 256;
        PyObject_Free(slots[i]);
        slots[i] = PyObject_Malloc(1 + (seed >> 16) % 2000); /* small and large: every path */
        if ((seed & 0xfff) == 0)
            PyCore_Trim();                                   /* the arena lock too */
    }
    for (int i = 0; i < 256; i++)
        PyObject_Free(slots[i]);
    return NULL;
}

/* Under AddressSanitizer, libc's malloc is ASan's, whose allocator lock is
 * not taken around fork() by gcc 12's libasan: a child that calls it while
 * a parent thread held it deadlocks inside ASan. There the child sticks to
 * pooled sizes (only this library's locks are then in play); the plain
 * build also exercises sizes that go to glibc, whose malloc is fork-safe. */
#if defined(__SANITIZE_ADDRESS__)
#define CHILD_MAX_SIZE 512
#define BEFORE_MAX_SIZE 512
#else
#define CHILD_MAX_SIZE 600
#define BEFORE_MAX_SIZE 700
#endif

static int child_work(char *before, size_t before_size)
{
    for (size_t i = 0; i < before_size; i++)
        if (before[i] != (char)(i * 3))
            return 3;
    PyObject_Free(before);
    static char *blocks[5000];
    for (int i = 0; i < 5000; i++) {
        blocks[i] = PyObject_Malloc(1 + i % CHILD_MAX_SIZE);
        memset(blocks[i], i & 0x7f, 1 + i % CHILD_MAX_SIZE);
    }
    for (int i = 0; i < 5000; i++) {
        if (blocks[i][i % CHILD_MAX_SIZE] != (i & 0x7f))
            return 4;
        PyObject_Free(blocks[i]);
    }
    return 0;
}

static int wait_with_deadline(pid_t pid, int seconds)
{
    struct timespec pause = { 0, 2000000 };
    int status;
    for (int waited = 0; waited < seconds * 500; waited++) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        nanosleep(&pause, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

int main(void)
{
    pthread_t workers[WORKERS];
    int failures = 0;
    for (size_t i = 0; i < WORKERS; i++)
        pthread_create(&workers[i], NULL, busy, (void *)(i + 1));
    for (int f = 0; f < FORKS; f++) {
        size_t size = 1 + f % BEFORE_MAX_SIZE;
        char *before = PyObject_Malloc(size);
        for (size_t i = 0; i < size; i++)
            before[i] = (char)(i * 3);
        pid_t pid = fork();
        if (pid == 0)
            _exit(child_work(before, size));
        int result = wait_with_deadline(pid, 10);
        if (result != 0) {
            fprintf(stderr, "FAIL: fork %d: child %s (%d)\n", f, result < 0 ? "deadlocked (killed after 10 s)" :
                    "failed", result);
            failures++;
        }
        PyObject_Free(before);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(workers[i], NULL);
    if (!failures)
        printf("ok: %d forks while %d threads allocate; every child allocated, verified and exited\n", FORKS, WORKERS);
    return failures ? 1 : 0;
}
