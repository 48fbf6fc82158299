/* The umbrella header compiles on its own under strict C99 (and as C++),
 * and every macro expands to valid code. */
#include <pymalloc.h>

typedef struct {
    PyObject_VAR_HEAD
    double items[1];
} Vector;

static PyTypeObject VectorType;

int main(void)
{
    int *numbers = PyMem_New(int, 4);
    int *grown;
    Vector *v;
    void *raw = PyMem_RawMalloc(8), *core = PyCore_Malloc(8);
    char *bytes = (char *)PyObject_MALLOC(3);

    VectorType.tp_name = "header_alone.Vector";
    VectorType.tp_basicsize = (Py_ssize_t)(sizeof(Vector) - sizeof(double));
    VectorType.tp_itemsize = (Py_ssize_t)sizeof(double);
    if (numbers == NULL || raw == NULL || core == NULL || bytes == NULL)
        return 1;
    grown = numbers;
    PyMem_Resize(grown, int, 64);
    if (grown == NULL)
        return 2;
    PyMem_Del(grown);
    v = PyObject_NewVar(Vector, &VectorType, 3);
    if (v == NULL || Py_SIZE(v) != 3 || Py_TYPE(v) != &VectorType || Py_REFCNT(v) != 1)
        return 3;
    PyObject_Del(v);
    bytes = (char *)PyObject_REALLOC(bytes, 700);
    PyObject_FREE(bytes);
    PyMem_RawFree(raw);
    PyCore_Free(core);
    return PyCore_GetBackendName(PYCORE_DOMAIN_OBJ) == NULL;
}
