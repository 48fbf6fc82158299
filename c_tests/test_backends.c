/* The domains' backends chosen by the environment at load time: the program
 * re-executes itself under each setting and checks, in the child, what
 * serves each domain; an invalid value must abort with a clear message. */
#include <pymalloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* Child: "raw mem obj" expected names; check names and where blocks come from. */
static int child(const char *raw, const char *mem, const char *obj)
{
    const char *want[3] = { raw, mem, obj };
    void *(*mallocs[3])(size_t) = { PyMem_RawMalloc, PyMem_Malloc, PyObject_Malloc };
    void (*frees[3])(void *) = { PyMem_RawFree, PyMem_Free, PyObject_Free };
    for (int d = 0; d < 3; d++) {
        const char *name = PyCore_GetBackendName(d);
        if (strcmp(name, want[d]) != 0) {
            fprintf(stderr, "domain %d is %s, expected %s\n", d, name, want[d]);
            return 10 + d;
        }
        void *p = mallocs[d](48);
        int pooled = PyCore_IsPooled(p);
        int expected_pooled = strncmp(name, "pymalloc", 8) == 0;
        frees[d](p);
        if (pooled != expected_pooled) {
            fprintf(stderr, "domain %d (%s): a 48-byte block is%s pooled\n", d, name, pooled ? "" : " not");
            return 20 + d;
        }
    }
    return 0;
}

static int run(const char *self, const char *const env[], const char *raw, const char *mem, const char *obj, char *err,
               size_t err_size)
{
    int fds[2], status;
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        unsetenv("PYMALLOC");
        unsetenv("PYMALLOC_RAW");
        unsetenv("PYMALLOC_MEM");
        unsetenv("PYMALLOC_OBJ");
        for (int i = 0; env[i]; i += 2)
            setenv(env[i], env[i + 1], 1);
        execl(self, self, "--child", raw, mem, obj, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    ssize_t n = read(fds[0], err, err_size - 1);
    err[n > 0 ? n : 0] = '\0';
    close(fds[0]);
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
    char err[4096];
    if (argc == 5 && strcmp(argv[1], "--child") == 0)
        return child(argv[2], argv[3], argv[4]);

    static const struct {
        const char *env[5];
        const char *raw, *mem, *obj;
    } cases[] = {
        { { NULL }, "malloc", "pymalloc", "pymalloc" },
        { { "PYMALLOC", "malloc", NULL }, "malloc", "malloc", "malloc" },
        { { "PYMALLOC", "pymalloc", NULL }, "malloc", "pymalloc", "pymalloc" },
        { { "PYMALLOC_OBJ", "malloc", NULL }, "malloc", "pymalloc", "malloc" },
        { { "PYMALLOC_RAW", "pymalloc", NULL }, "pymalloc", "pymalloc", "pymalloc" },
        { { "PYMALLOC", "debug", NULL }, "malloc_debug", "pymalloc_debug", "pymalloc_debug" },
        { { "PYMALLOC", "malloc_debug", NULL }, "malloc_debug", "malloc_debug", "malloc_debug" },
        { { "PYMALLOC", "malloc", "PYMALLOC_MEM", "pymalloc_debug" }, "malloc", "pymalloc_debug", "malloc" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int result = run(argv[0], cases[i].env, cases[i].raw, cases[i].mem, cases[i].obj, err, sizeof err);
        CHECK(result == 0, "case %zu (%s=%s): child exited %d: %s", i, cases[i].env[0] ? cases[i].env[0] : "-",
              cases[i].env[1] ? cases[i].env[1] : "-", result, err);
    }
    const char *bad[] = { "PYMALLOC", "bogus", NULL };
    int result = run(argv[0], bad, "malloc", "pymalloc", "pymalloc", err, sizeof err);
    CHECK(result == 128 + SIGABRT, "PYMALLOC=bogus must abort (got %d)", result);
    CHECK(strstr(err, "invalid PYMALLOC=\"bogus\"") != NULL, "the message names the variable and value: %s", err);
    const char *bad_heap[] = { "PYMALLOC_MEM", "tcmalloc", NULL };
    result = run(argv[0], bad_heap, "malloc", "pymalloc", "pymalloc", err, sizeof err);
    CHECK(result == 128 + SIGABRT && strstr(err, "PYMALLOC_MEM") != NULL, "PYMALLOC_MEM=tcmalloc aborts: %s", err);
    if (!failures)
        puts("ok: PYMALLOC, PYMALLOC_RAW/MEM/OBJ select each domain's backend; invalid values abort with a message");
    return failures ? 1 : 0;
}
