/* The four API families of pymalloc.h as a table, for tests that run the
 * same checks through each. */
#ifndef PYMALLOC_TEST_FAMILIES_H
#define PYMALLOC_TEST_FAMILIES_H

#include <pymalloc.h>

typedef struct {
    const char *name;
    void *(*malloc)(size_t);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void (*free)(void *);
} family;

static const family families[] = {
    { "PyMem_Raw", PyMem_RawMalloc, PyMem_RawCalloc, PyMem_RawRealloc, PyMem_RawFree },
    { "PyMem", PyMem_Malloc, PyMem_Calloc, PyMem_Realloc, PyMem_Free },
    { "PyObject", PyObject_Malloc, PyObject_Calloc, PyObject_Realloc, PyObject_Free },
    { "PyCore", PyCore_Malloc, PyCore_Calloc, PyCore_Realloc, PyCore_Free },
};
#define NFAMILIES (sizeof families / sizeof families[0])

#endif
