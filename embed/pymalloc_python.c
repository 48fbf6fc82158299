/* pymalloc-python: the python3 command with pymalloc-rs serving CPython's
 * memory and object domains from the first allocation on.
 *
 * It is CPython's own `python3` main program plus the lines an embedder
 * adds: include <pymalloc.h>, call PyCore_InstallHooks() before the
 * interpreter starts, link with -lpymalloc. Arguments and behaviour are
 * python3's. As with python3, PYTHONMALLOC, PYTHONDEVMODE=1 or -X dev
 * select CPython's own allocators instead (CPython re-installs them during
 * pre-initialisation); PYMALLOC_CPYTHON=0 runs without the hooks.
 */
#include <Python.h>
#include <pymalloc.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    const char *enabled = getenv("PYMALLOC_CPYTHON");

    if (enabled == NULL || strcmp(enabled, "0") != 0) {
        if (PyCore_InstallHooks() != 0)
            return 1;
    }
    return Py_BytesMain(argc, argv);
}
