/* pymalloc/objimpl.h: the object domain and typed object creation.
 *
 *   PyObject_{Malloc,Calloc,Realloc,Free}   storage for objects (pooled).
 *   PyObject_{MALLOC,REALLOC,FREE}          macro forms of the same.
 *   PyObject_{New,NewVar,Del}               create / destroy a typed object:
 *                                           storage from the object domain,
 *                                           then ob_type set, ob_refcnt = 1,
 *                                           ob_size = n for NewVar.
 *   PyObject_GC_{New,NewVar,Del}            the same for objects that carry
 *                                           CPython's 16-byte GC header in
 *                                           front of them (zeroed).
 *
 * Creating an object is two steps, storage then initialisation; the
 * storage can come from elsewhere and be initialised with PyObject_Init /
 * PyObject_InitVar. Release an object with the family that made it:
 * PyObject_New -> PyObject_Del, PyObject_GC_New -> PyObject_GC_Del.
 *
 * The structures below have CPython's 64-bit layout (ob_refcnt at 0,
 * ob_type 8, ob_size 16; tp_name 24, tp_basicsize 32, tp_itemsize 40,
 * tp_flags 168), so the same code works on real CPython objects.
 */

#include "pymem.h"

#ifndef Py_PYTHON_H
struct _typeobject;

typedef struct _object {
    Py_ssize_t ob_refcnt;
    struct _typeobject *ob_type;
} PyObject;

typedef struct {
    PyObject ob_base;
    Py_ssize_t ob_size; /* number of items in the variable part */
} PyVarObject;

#define PyObject_HEAD      PyObject ob_base;
#define PyObject_VAR_HEAD  PyVarObject ob_base;
#define PyObject_HEAD_INIT(type) { 1, (type) },
#define PyVarObject_HEAD_INIT(type, size) { PyObject_HEAD_INIT(type) (size) },

typedef void (*destructor)(PyObject *);

/* The leading part of CPython's PyTypeObject, up to tp_flags. Slots this
 * library does not use are untyped; their names follow CPython's. */
typedef struct _typeobject {
    PyVarObject ob_base;
    const char *tp_name;
    Py_ssize_t tp_basicsize, tp_itemsize; /* for allocation */
    destructor tp_dealloc;
    Py_ssize_t tp_vectorcall_offset;
    void *tp_getattr, *tp_setattr, *tp_as_async, *tp_repr;
    void *tp_as_number, *tp_as_sequence, *tp_as_mapping;
    void *tp_hash, *tp_call, *tp_str, *tp_getattro, *tp_setattro;
    void *tp_as_buffer;
    unsigned long tp_flags;
} PyTypeObject;

/* Instances of a heap type hold a reference to it (PyObject_Init takes it). */
#define Py_TPFLAGS_HEAPTYPE (1UL << 9)

#define _PyObject_CAST(op)    ((PyObject *)(op))
#define _PyVarObject_CAST(op) ((PyVarObject *)(op))
#define Py_REFCNT(ob) (_PyObject_CAST(ob)->ob_refcnt)
#define Py_TYPE(ob)   (_PyObject_CAST(ob)->ob_type)
#define Py_SIZE(ob)   (_PyVarObject_CAST(ob)->ob_size)
#endif /* !Py_PYTHON_H */
