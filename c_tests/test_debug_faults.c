/* The debug hooks catch each kind of misuse, report it in CPython's layout
 * and abort; with PYMALLOC_DEBUG_ACTION=warn they report and continue.
 *
 * Each fault runs in a child: this program re-executes itself with
 * PYMALLOC=debug (read when the library loads) and the fault's name, and
 * the parent checks how the child ended and what it wrote to stderr. */
#include <pymalloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

#define EXPECT(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

typedef void *(*alloc_fn)(size_t);
typedef void (*free_fn)(void *);

static const struct family {
    char id;
    alloc_fn alloc;
    free_fn release;
} families[] = {
    { 'r', PyMem_RawMalloc, PyMem_RawFree },
    { 'm', PyMem_Malloc, PyMem_Free },
    { 'o', PyObject_Malloc, PyObject_Free },
    { 'c', PyCore_Malloc, PyCore_Free },
};

static const struct family *family(char id)
{
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (families[i].id == id)
            return &families[i];
    return NULL;
}

/* Child side: commit the fault named by `fault`. Returns if not stopped. */
static void commit(const char *fault)
{
    char *p = PyMem_Malloc(16);

    if (strcmp(fault, "overflow") == 0) {
        p[16] = 'x';                      /* one byte past the end */
        PyMem_Free(p);
    } else if (strcmp(fault, "underflow") == 0) {
        p[-1] = 'x';                      /* one byte before the start */
        PyMem_Free(p);
    } else if (strcmp(fault, "double-free") == 0) {
        PyMem_Free(p);
        PyMem_Free(p);
    } else if (strcmp(fault, "realloc-freed") == 0) {
        PyMem_Free(p);
        p = PyMem_Realloc(p, 64);
    } else if (strcmp(fault, "foreign") == 0) {
        char *q = calloc(1, 64);          /* never allocated by this API */
        PyMem_Free(q + 32);
    } else if (strcmp(fault, "check") == 0) {
        p[16] = 'y';
        PyCore_CheckBlock(p);
    } else if (strcmp(fault, "leaks") == 0) {
        /* Leave three blocks behind for the leak report at exit. */
        PyObject_Malloc(40);
        PyObject_Malloc(40);
        PyMem_RawMalloc(1000);
        PyMem_Free(p);
    } else if (strncmp(fault, "mismatch-", 9) == 0) {
        /* "mismatch-XY": allocate with family X, free with family Y */
        const struct family *by = family(fault[9]), *with = family(fault[10]);
        void *block = by->alloc(24);
        with->release(block);
    }
    puts("continued");
}

struct outcome {
    int signaled, signal, exit_code;
    char err[16384], out[256];
};

static void run_child(const char *self, const char *fault, const char *action, struct outcome *o);

/* PYMALLOC_LEAKS=1 lists the live debug blocks at exit by family and class. */
static void expect_leak_report(const char *self)
{
    struct outcome o;
    setenv("PYMALLOC_LEAKS", "1", 1);
    run_child(self, "leaks", NULL, &o);
    unsetenv("PYMALLOC_LEAKS");
    EXPECT(!o.signaled && o.exit_code == 0, "leaks: the child must exit normally:\n%s", o.err);
    EXPECT(strstr(o.err, "pymalloc leak report: 3 live debug blocks at exit") != NULL, "leak count:\n%s", o.err);
    EXPECT(strstr(o.err, "'o'          48           2              80") != NULL, "object blocks:\n%s", o.err);
    EXPECT(strstr(o.err, "'r'       large           1            1000") != NULL, "raw block:\n%s", o.err);
    printf("ok: %-14s -> leak report by family and size class\n", "leaks");
}

static void run_child(const char *self, const char *fault, const char *action, struct outcome *o)
{
    int err_pipe[2], out_pipe[2], status;
    pid_t pid;
    ssize_t n;
    size_t used = 0;

    memset(o, 0, sizeof *o);
    if (pipe(err_pipe) != 0 || pipe(out_pipe) != 0) {
        perror("pipe");
        exit(2);
    }
    pid = fork();
    if (pid == 0) {
        dup2(err_pipe[1], 2);
        dup2(out_pipe[1], 1);
        setenv("PYMALLOC", "debug", 1);
        if (action)
            setenv("PYMALLOC_DEBUG_ACTION", action, 1);
        else
            unsetenv("PYMALLOC_DEBUG_ACTION");
        execl(self, self, "--child", fault, (char *)NULL);
        _exit(127);
    }
    close(err_pipe[1]);
    close(out_pipe[1]);
    while ((n = read(err_pipe[0], o->err + used, sizeof o->err - 1 - used)) > 0)
        used += (size_t)n;
    n = read(out_pipe[0], o->out, sizeof o->out - 1);
    o->out[n > 0 ? n : 0] = '\0';
    close(err_pipe[0]);
    close(out_pipe[0]);
    waitpid(pid, &status, 0);
    o->signaled = WIFSIGNALED(status);
    o->signal = o->signaled ? WTERMSIG(status) : 0;
    o->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect_fault(const char *self, const char *fault, const char *function, const char *message,
                         const char *detail)
{
    struct outcome o;
    char fatal[256];

    run_child(self, fault, NULL, &o);
    EXPECT(o.signaled && o.signal == SIGABRT, "%s: the child must abort (signal %d, exit %d); stderr:\n%s",
           fault, o.signal, o.exit_code, o.err);
    EXPECT(strstr(o.err, "Debug memory block at address p=0x") != NULL, "%s: report header missing:\n%s",
           fault, o.err);
    snprintf(fatal, sizeof fatal, "Fatal pymalloc error: %s: %s", function, message);
    EXPECT(strstr(o.err, fatal) != NULL, "%s: expected \"%s\" in:\n%s", fault, fatal, o.err);
    if (detail)
        EXPECT(strstr(o.err, detail) != NULL, "%s: expected \"%s\" in:\n%s", fault, detail, o.err);
    EXPECT(strstr(o.out, "continued") == NULL, "%s: the child went on after the fault", fault);

    run_child(self, fault, "warn", &o);
    EXPECT(!o.signaled && o.exit_code == 0, "%s (warn): the child must continue and exit 0 (signal %d); stderr:\n%s",
           fault, o.signal, o.err);
    EXPECT(strstr(o.err, fatal) != NULL, "%s (warn): the report must still be given:\n%s", fault, o.err);
    EXPECT(strstr(o.out, "continued") != NULL, "%s (warn): the child did not continue", fault);
    printf("ok: %-14s -> %s\n", fault, message);
}

int main(int argc, char **argv)
{
    static const char ids[] = "rmoc";

    if (argc == 3 && strcmp(argv[1], "--child") == 0) {
        commit(argv[2]);
        return 0;
    }
    expect_fault(argv[0], "overflow", "PyMem_Free", "bad trailing pad byte", "at tail+0: 0x78 *** OUCH");
    expect_fault(argv[0], "underflow", "PyMem_Free", "bad leading pad byte", "at p-1: 0x78 *** OUCH");
    expect_fault(argv[0], "double-free", "PyMem_Free", "bad ID: Allocated using API '\\xdd', verified using API 'm'",
                 "already freed");
    expect_fault(argv[0], "realloc-freed", "PyMem_Realloc",
                 "bad ID: Allocated using API '\\xdd', verified using API 'm'", "already freed");
    expect_fault(argv[0], "foreign", "PyMem_Free", "bad ID", "not a block of the debug allocator");
    expect_fault(argv[0], "check", "PyCore_CheckBlock", "bad trailing pad byte", "at tail+0: 0x79 *** OUCH");
    expect_leak_report(argv[0]);
    for (const char *by = ids; *by; by++) {
        for (const char *with = ids; *with; with++) {
            char fault[32], message[96];
            static const char *frees[] = { "PyMem_RawFree", "PyMem_Free", "PyObject_Free", "PyCore_Free" };

            if (*by == *with)
                continue;
            snprintf(fault, sizeof fault, "mismatch-%c%c", *by, *with);
            snprintf(message, sizeof message, "bad ID: Allocated using API '%c', verified using API '%c'", *by, *with);
            expect_fault(argv[0], fault, frees[strchr(ids, *with) - ids], message, "FORBIDDENBYTE, as expected");
        }
    }
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    return 0;
}
