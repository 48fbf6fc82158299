/* pymalloc/pymem.h: the raw and memory domains, and the pooled allocator.
 *
 * Which API for which memory (the 2002 "Activating pymalloc" proposal):
 *
 *   PyMem_Raw{Malloc,Calloc,Realloc,Free}   raw memory: buffers that must be
 *                                           usable with no lock held, from any
 *                                           thread (served by malloc unless
 *                                           configured otherwise).
 *   PyMem_{Malloc,Calloc,Realloc,Free}      general-purpose memory of the
 *   PyMem_{MALLOC,REALLOC,FREE}             program: strings, arrays, buffers
 *   PyMem_{New,NEW,Resize,RESIZE,Del,DEL}   (pooled by default).
 *                                           The typed forms count elements of
 *                                           a type and refuse counts whose byte
 *                                           size would exceed PY_SSIZE_T_MAX.
 *   PyObject_*  (see pymalloc/objimpl.h)    memory for objects (pooled).
 *   PyCore_{Malloc,Calloc,Realloc,Free}     the pooled allocator itself,
 *                                           whatever the domains are set to.
 *
 * THE RULE: release a block with the family that allocated it.
 *
 *     char *s = PyMem_Malloc(n);    ...  PyMem_Free(s);      right
 *     char *s = PyMem_Malloc(n);    ...  PyObject_Free(s);   WRONG
 *     char *s = PyMem_Malloc(n);    ...  free(s);            WRONG
 *
 * Today the wrong lines may happen to work; they break as soon as a domain is
 * configured differently, or under the debug hooks, which report them.
 *
 * Common contract of every allocation function here: requests of zero
 * bytes return a distinct non-NULL pointer; sizes above PY_SSIZE_T_MAX and
 * element counts whose byte size would exceed it return NULL; failure
 * returns NULL and (for realloc) leaves the old block valid; free(NULL) does
 * nothing. Blocks are aligned to 16 bytes. All functions are thread-safe.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef Py_PYTHON_H
typedef ptrdiff_t Py_ssize_t;
#define PY_SSIZE_T_MAX ((Py_ssize_t)(((size_t)-1) >> 1))
#define PY_SSIZE_T_MIN (-PY_SSIZE_T_MAX - 1)

/* CPython's allocator hook table (Include/cpython/pymem.h, 3.5 and later):
 * what PyMem_GetAllocator and PyCore_GetAllocator fill, and what
 * PyMem_SetAllocator takes. */
typedef struct {
    void *ctx;                                   /* first argument of each */
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr);
} PyMemAllocatorEx;

/* CPython's allocator domains, for PyMem_GetAllocator and PyMem_SetAllocator. */
typedef enum {
    PYMEM_DOMAIN_RAW, /* PyMem_Raw* */
    PYMEM_DOMAIN_MEM, /* PyMem_* */
    PYMEM_DOMAIN_OBJ  /* PyObject_* */
} PyMemAllocatorDomain;
#endif
