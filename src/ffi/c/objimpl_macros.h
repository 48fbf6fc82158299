#define PyObject_MALLOC         PyObject_Malloc
#define PyObject_REALLOC        PyObject_Realloc
#define PyObject_FREE           PyObject_Free
#define PyObject_Del            PyObject_Free
#define PyObject_DEL            PyObject_Free

/* Bytes of an object of type tp, and of one with n items (rounded up to a
 * multiple of the pointer size, as CPython does). */
#define _PyObject_SIZE(tp) ((tp)->tp_basicsize)
#define _PyObject_VAR_SIZE(tp, n) \
    ((size_t)(((size_t)(tp)->tp_basicsize + (size_t)(n) * (size_t)(tp)->tp_itemsize \
               + (sizeof(void *) - 1)) & ~(sizeof(void *) - 1)))

#define PyObject_New(type, typeobj) ((type *)_PyObject_New(typeobj))
#define PyObject_NewVar(type, typeobj, n) \
    ((type *)_PyObject_NewVar((typeobj), (n)))
#define PyObject_NEW(type, typeobj)          PyObject_New(type, typeobj)
#define PyObject_NEW_VAR(type, typeobj, n)   PyObject_NewVar(type, typeobj, n)
#define PyObject_INIT(op, typeobj) \
    PyObject_Init(_PyObject_CAST(op), (typeobj))
#define PyObject_INIT_VAR(op, typeobj, size) \
    PyObject_InitVar(_PyVarObject_CAST(op), (typeobj), (size))

#define PyObject_GC_New(type, typeobj) ((type *)_PyObject_GC_New(typeobj))
#define PyObject_GC_NewVar(type, typeobj, n) \
    ((type *)_PyObject_GC_NewVar((typeobj), (n)))
