/* CPython's debug hooks work on top of our tables: PyMem_SetupDebugHooks()
 * wraps whatever is installed, so with our hooks below them a buffer
 * overflow must still be caught and reported in CPython's format. The
 * faulty part runs in a child process, whose abort and report we check. */
#include <Python.h>
#include <pymalloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); return 1; } } while (0)

static int child(void)
{
    char *block;

    if (PyCore_InstallHooks() != 0)
        return 2;
    PyMem_SetupDebugHooks();
    Py_Initialize();
    block = PyMem_Malloc(16);
    /* The debug header sits in front of the block, inside our pool. */
    if (!PyCore_IsPooled(block) || (unsigned char)block[0] != 0xCD)
        return 3;
    PyMem_Free(block);
    PyRun_SimpleString("import _testcapi\n_testcapi.pymem_buffer_overflow()\n");
    return 4; /* not reached: the overflow is fatal */
}

int main(int argc, char **argv)
{
    int pipe_fds[2], status;
    char report[16384];
    size_t used = 0;
    ssize_t n;
    pid_t pid;

    (void)argc;
    (void)argv;
    CHECK(pipe(pipe_fds) == 0, "pipe");
    pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        dup2(pipe_fds[1], 2);
        close(pipe_fds[0]);
        _exit(child());
    }
    close(pipe_fds[1]);
    while ((n = read(pipe_fds[0], report + used, sizeof report - 1 - used)) > 0)
        used += (size_t)n;
    report[used] = '\0';
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
          "child must abort on the overflow (status %d); its stderr:\n%s", status, report);
    CHECK(strstr(report, "Debug memory block at address p=") != NULL, "CPython's report header:\n%s", report);
    CHECK(strstr(report, "bad trailing pad byte") != NULL, "the fault is named:\n%s", report);
    CHECK(strstr(report, "*** OUCH") != NULL, "the overwritten byte is marked:\n%s", report);
    puts("ok: PyMem_SetupDebugHooks over our tables catches a buffer overflow");
    return 0;
}
