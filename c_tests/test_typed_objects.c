/* PyObject_New/NewVar/Del, PyObject_GC_New/GC_NewVar/GC_Del and
 * PyObject_Init on user-defined types, as a C extension writes them, and
 * CPython's 64-bit layout of the object structures. */
#include <pymalloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

typedef struct {
    PyObject_HEAD
    double x, y;
} Point;

typedef struct {
    PyObject_VAR_HEAD
    long items[1];
} Vector;

static PyTypeObject PointType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "test.Point",
    .tp_basicsize = sizeof(Point),
};

static PyTypeObject VectorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "test.Vector",
    .tp_basicsize = offsetof(Vector, items),
    .tp_itemsize = sizeof(long),
};

static PyTypeObject HeapPointType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "test.HeapPoint",
    .tp_basicsize = sizeof(Point),
    .tp_flags = Py_TPFLAGS_HEAPTYPE,
};

static size_t live_blocks(void)
{
    PyCoreStats s;
    size_t total = 0;
    s.version = PYCORE_STATS_VERSION;
    PyCore_GetStats(&s);
    for (unsigned i = 0; i < s.num_classes; i++)
        total += s.classes[i].blocks_in_use;
    return total;
}

int main(void)
{
    CHECK(offsetof(PyObject, ob_refcnt) == 0 && offsetof(PyObject, ob_type) == 8, "PyObject layout");
    CHECK(offsetof(PyVarObject, ob_size) == 16, "PyVarObject layout");
    CHECK(offsetof(PyTypeObject, tp_name) == 24 && offsetof(PyTypeObject, tp_basicsize) == 32
          && offsetof(PyTypeObject, tp_itemsize) == 40 && offsetof(PyTypeObject, tp_flags) == 168,
          "PyTypeObject layout");

    Point *p = PyObject_New(Point, &PointType);
    CHECK(p && Py_TYPE(p) == &PointType && Py_REFCNT(p) == 1, "PyObject_New initialises type and refcount");
    CHECK(((uintptr_t)p & 15) == 0, "objects are 16-byte aligned");
    p->x = 1.5;
    PyObject_Del(p);

    Py_ssize_t before = Py_REFCNT(&HeapPointType);
    Point *h = PyObject_NEW(Point, &HeapPointType);
    CHECK(Py_REFCNT(&HeapPointType) == before + 1, "instances take a reference to a heap type");
    PyObject_DEL(h);

    Vector *v = PyObject_NewVar(Vector, &VectorType, 100);
    CHECK(v && Py_SIZE(v) == 100 && Py_TYPE(v) == &VectorType, "PyObject_NewVar sets ob_size");
    for (long i = 0; i < 100; i++)
        v->items[i] = i * i; /* the whole variable part is usable */
    CHECK(v->items[99] == 99 * 99, "items");
    PyObject_Del(v);
    CHECK(PyObject_NewVar(Vector, &VectorType, -1) == NULL, "a negative item count gives NULL");
    CHECK(PyObject_NewVar(Vector, &VectorType, PY_SSIZE_T_MAX / 4) == NULL, "an overflowing size gives NULL");
    CHECK(_PyObject_VAR_SIZE(&VectorType, 3) == 48, "_PyObject_VAR_SIZE rounds to a pointer multiple");

    Point *g = PyObject_GC_New(Point, &PointType);
    const unsigned char *gc_head = (const unsigned char *)g - 16;
    int zero = 1;
    for (int i = 0; i < 16; i++)
        zero &= gc_head[i] == 0;
    CHECK(g && zero && Py_REFCNT(g) == 1, "PyObject_GC_New: zeroed 16-byte GC header before the object");
    CHECK(((uintptr_t)g & 15) == 0, "GC objects are 16-byte aligned");
    PyObject_GC_Del(g);
    Vector *gv = PyObject_GC_NewVar(Vector, &VectorType, 10);
    CHECK(gv && Py_SIZE(gv) == 10, "PyObject_GC_NewVar");
    gv->items[9] = 9;
    PyObject_GC_Del(gv);
    PyObject_GC_Del(NULL);
    CHECK(PyObject_GC_NewVar(Vector, &VectorType, -5) == NULL, "GC var object with a negative count");

    Point *storage = PyObject_Malloc(sizeof(Point));
    CHECK(PyObject_INIT(storage, &PointType) == (PyObject *)storage && Py_REFCNT(storage) == 1, "PyObject_INIT");
    PyObject_Free(storage);
    CHECK(PyObject_Init(NULL, &PointType) == NULL, "PyObject_Init(NULL) gives NULL");
    Vector *vstorage = PyObject_Malloc(_PyObject_VAR_SIZE(&VectorType, 4));
    CHECK(PyObject_INIT_VAR(vstorage, &VectorType, 4) == (PyVarObject *)vstorage && Py_SIZE(vstorage) == 4,
          "PyObject_INIT_VAR");
    PyObject_Free(vstorage);

    /* Many objects of each kind; afterwards the pools hold as many blocks
     * as before (exact: this process allocates nothing else meanwhile). */
    size_t start = live_blocks();
    static void *objects[100000];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 100000; i++) {
            switch (i % 4) {
            case 0: objects[i] = PyObject_New(Point, &PointType); break;
            case 1: objects[i] = PyObject_NewVar(Vector, &VectorType, i % 50); break;
            case 2: objects[i] = PyObject_GC_New(Point, &PointType); break;
            default: objects[i] = PyObject_GC_NewVar(Vector, &VectorType, i % 30); break;
            }
        }
        for (int i = 0; i < 100000; i++) {
            if (i % 4 < 2)
                PyObject_Del(objects[i]);
            else
                PyObject_GC_Del(objects[i]);
        }
    }
    CHECK(live_blocks() == start, "every object's block is back (%zu live, %zu at start)", live_blocks(), start);
    if (!failures)
        puts("ok: typed objects, GC objects, init macros, layout, and no block left behind");
    return failures ? 1 : 0;
}
