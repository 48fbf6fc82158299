/* Macro forms. In CPython 3.x they are the functions (no inline fast path);
 * they exist so that code written for either spelling compiles. */
#define PyMem_MALLOC(n)         PyMem_Malloc(n)
#define PyMem_REALLOC(p, n)     PyMem_Realloc((p), (n))
#define PyMem_FREE(p)           PyMem_Free(p)

/* PyMem_New(type, n): room for n objects of type, or NULL if n * sizeof(type)
 * would exceed PY_SSIZE_T_MAX. */
#define PyMem_New(type, n) \
  ( ((size_t)(n) > PY_SSIZE_T_MAX / sizeof(type)) ? NULL : \
        ( (type *) PyMem_Malloc((n) * sizeof(type)) ) )
#define PyMem_NEW(type, n)      PyMem_New(type, n)

/* PyMem_Resize(p, type, n): resize p to n objects of type and assign the
 * result to p. On failure p becomes NULL (the old block is not freed: keep
 * a copy of p if you need to release it). */
#define PyMem_Resize(p, type, n) \
  ( (p) = ((size_t)(n) > PY_SSIZE_T_MAX / sizeof(type)) ? NULL : \
        (type *) PyMem_Realloc((p), (n) * sizeof(type)) )
#define PyMem_RESIZE(p, type, n) PyMem_Resize(p, type, n)

#define PyMem_Del               PyMem_Free
#define PyMem_DEL               PyMem_Free
