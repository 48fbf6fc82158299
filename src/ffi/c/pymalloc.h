/* pymalloc.h: the whole pymalloc-rs API.
 *
 * pymalloc-rs is CPython's small-object allocator as a C library. Include
 * this header alone, or after CPython's <Python.h>: CPython then provides
 * the PyMem_* and PyObject_* declarations and macros, and this library adds
 * what CPython lacks (PyCore_*).
 *
 * Link with -lpymalloc (pkg-config --cflags --libs pymalloc).
 */
#ifndef PYMALLOC_H
#define PYMALLOC_H

#include "pymalloc/pymem.h"
#include "pymalloc/objimpl.h"

#endif /* PYMALLOC_H */
