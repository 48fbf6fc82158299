/* Included after CPython's own headers, pymalloc.h declares only what
 * CPython lacks (PyCore_*), without conflicting with Python.h. This
 * program links against libpymalloc alone (no libpython): the PyCore_*
 * functions need nothing from CPython. */
#include <Python.h>
#include <pymalloc.h>

int main(void)
{
    PyCoreStats stats;
    char *block = PyCore_Malloc(100);

    if (block == NULL || !PyCore_IsPooled(block))
        return 1;
    PyCore_Free(block);
    stats.version = PYCORE_STATS_VERSION;
    if (PyCore_GetStats(&stats) != 0 || stats.small_request_threshold == 0)
        return 2;
    return 0;
}
