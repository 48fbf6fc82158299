/* Installing the hooks into a running interpreter (after Py_Initialize):
 * blocks CPython's own pymalloc allocated before the installation must be
 * freed and resized correctly through our tables, which hand pointers they
 * do not own to the allocator they replaced. */
#include <Python.h>
#include <pymalloc.h>
#include <stdio.h>
#include <string.h>

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); return 1; } } while (0)

#define BEFORE 10000

int main(void)
{
    static char *early_obj[BEFORE], *early_mem[BEFORE];
    PyObject *early_list;
    char *late;
    int i;

    Py_Initialize();
    for (i = 0; i < BEFORE; i++) {
        early_obj[i] = PyObject_Malloc(1 + i % 700);
        early_mem[i] = PyMem_Malloc(1 + i % 300);
        CHECK(early_obj[i] && early_mem[i], "allocation before install");
        CHECK(!PyCore_IsPooled(early_obj[i]), "CPython's own pymalloc serves before install");
        memset(early_obj[i], 'o', 1 + i % 700);
        memset(early_mem[i], 'm', 1 + i % 300);
    }
    early_list = PyList_New(0);
    for (i = 0; i < 1000; i++) {
        PyObject *item = PyLong_FromLong(1000000 + i);
        PyList_Append(early_list, item);
        Py_DECREF(item);
    }

    CHECK(PyCore_InstallHooks() == 0, "PyCore_InstallHooks in a running interpreter");
    CHECK(PyCore_InstallHooks() == 0, "installing twice is harmless");

    late = PyObject_Malloc(40);
    CHECK(late && PyCore_IsPooled(late), "after install, small object blocks come from our pools");
    PyObject_Free(late);

    for (i = 0; i < BEFORE; i += 2) {
        /* Resize a pre-install block: stays with CPython's allocator. */
        char *grown = PyObject_Realloc(early_obj[i], 2000);
        CHECK(grown != NULL, "realloc of a pre-install block");
        CHECK(grown[0] == 'o' && grown[i % 700] == 'o', "content kept by realloc");
        early_obj[i] = grown;
    }
    for (i = 0; i < BEFORE; i++) {
        PyObject_Free(early_obj[i]);
        PyMem_Free(early_mem[i]);
    }
    Py_DECREF(early_list); /* its items were allocated before the install */

    CHECK(PyRun_SimpleString(
        "import json\n"
        "data = {str(i): [i, str(i) * 3, (i, i + 1.5)] for i in range(20000)}\n"
        "assert json.loads(json.dumps(data)) == json.loads(json.dumps(data))\n") == 0,
        "Python code runs after a run-time install");
    CHECK(Py_FinalizeEx() == 0, "Py_FinalizeEx");
    puts("ok: run-time install wraps CPython's allocator; pre-install blocks freed through it");
    return 0;
}
