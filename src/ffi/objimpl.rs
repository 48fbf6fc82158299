//! The object heap (`PyObject_*`) and typed object creation, with the
//! names and contracts of CPython's `Include/objimpl.h`. The functions
//! behind the `PyObject_New`/`NewVar`/`GC_New`/`GC_NewVar` macros keep
//! CPython's exported names, so code built against CPython links here.
#![allow(non_snake_case)]

use core::ffi::c_void;
use core::ptr::null_mut;

use super::{
    calloc_export, count_ok, free_export, malloc_export, realloc_export, size_ok,
    through_live_table,
};
use crate::cpython_dispatch;
use crate::domain::{self, Domain};
use crate::object::{self, PyObject, PyTypeObject, PyVarObject, Py_ssize_t};

/// Object heap: allocate `size` bytes (pooled by default). Zero bytes give
/// a distinct non-NULL pointer; NULL on failure or `size > PY_SSIZE_T_MAX`.
/// Release with `PyObject_Free`.
#[unsafe(no_mangle)]
pub extern "C" fn PyObject_Malloc(size: usize) -> *mut c_void {
    malloc_export(Domain::Obj, size, object_malloc_other)
}

#[cold]
#[inline(never)]
fn object_malloc_other(state: u8, size: usize) -> *mut c_void {
    if !size_ok(size) {
        return null_mut();
    }
    through_live_table!(state, Domain::Obj => malloc(size));
    crate::forward_to_cpython!(state => PyObject_Malloc as unsafe extern "C" fn(usize) -> *mut c_void,
        size);
    domain::malloc_in(Domain::Obj, state, size).cast()
}

/// Object heap: allocate `nelem * elsize` zeroed bytes; NULL on overflow.
#[unsafe(no_mangle)]
pub extern "C" fn PyObject_Calloc(nelem: usize, elsize: usize) -> *mut c_void {
    calloc_export(Domain::Obj, nelem, elsize, object_calloc_other)
}

#[cold]
#[inline(never)]
fn object_calloc_other(state: u8, nelem: usize, elsize: usize) -> *mut c_void {
    if !count_ok(nelem, elsize) {
        return null_mut();
    }
    through_live_table!(state, Domain::Obj => calloc(nelem, elsize));
    crate::forward_to_cpython!(state => PyObject_Calloc as unsafe extern "C" fn(usize, usize) -> *mut c_void,
        nelem,
        elsize);
    domain::calloc(Domain::Obj, nelem, elsize).cast()
}

/// Object heap: resize; `ptr == NULL` allocates. On failure NULL, and
/// `ptr` stays valid.
///
/// # Safety
/// `ptr` is NULL or a live object-heap block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyObject_Realloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    // SAFETY: guaranteed by the caller.
    unsafe { realloc_export(Domain::Obj, ptr, new_size, object_realloc_other) }
}

/// # Safety
/// As for `PyObject_Realloc`.
#[cold]
#[inline(never)]
unsafe fn object_realloc_other(state: u8, ptr: *mut c_void, new_size: usize) -> *mut c_void {
    if !size_ok(new_size) {
        return null_mut();
    }
    through_live_table!(state, Domain::Obj => realloc(ptr.cast(), new_size));
    crate::forward_to_cpython!(state => PyObject_Realloc as unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
        ptr,
        new_size);
    // SAFETY: guaranteed by the caller.
    unsafe { domain::realloc(Domain::Obj, ptr.cast(), new_size, "PyObject_Realloc").cast() }
}

/// Object heap: release; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or a live object-heap block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyObject_Free(ptr: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { free_export(Domain::Obj, ptr, object_free_other) }
}

/// # Safety
/// As for `PyObject_Free`.
#[cold]
#[inline(never)]
unsafe fn object_free_other(state: u8, ptr: *mut c_void) {
    if state & domain::LIVE_TABLE != 0 {
        // SAFETY: the state says the live table's address is known; the
        // block is the domain's (caller).
        return unsafe { cpython_dispatch::free(Domain::Obj, ptr.cast()) };
    }
    if state & domain::FREE_SLOW != 0 {
        crate::forward_to_cpython!(state => PyObject_Free as unsafe extern "C" fn(*mut c_void), ptr);
    }
    // SAFETY: guaranteed by the caller.
    unsafe { domain::free_in(Domain::Obj, state, ptr.cast(), "PyObject_Free") }
}

/// Initialise freshly allocated storage as an object of type `tp`:
/// `ob_type = tp`, `ob_refcnt = 1` (and a reference to `tp` if it is a heap
/// type). Returns `op`; NULL if `op` is NULL.
///
/// # Safety
/// `op` is NULL or points to writable storage for a `PyObject`; `tp` is a
/// type object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyObject_Init(op: *mut PyObject, tp: *mut PyTypeObject) -> *mut PyObject {
    crate::forward_to_cpython!(
        PyObject_Init as unsafe extern "C" fn(*mut PyObject, *mut PyTypeObject) -> *mut PyObject,
        op,
        tp
    );
    // SAFETY: guaranteed by the caller.
    unsafe { object::init(op, tp) }
}

/// As `PyObject_Init`, and set `ob_size = size`.
///
/// # Safety
/// `op` is NULL or points to writable storage for a `PyVarObject`; `tp`
/// is a type object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyObject_InitVar(
    op: *mut PyVarObject,
    tp: *mut PyTypeObject,
    size: Py_ssize_t,
) -> *mut PyVarObject {
    crate::forward_to_cpython!(
        PyObject_InitVar
            as unsafe extern "C" fn(
                *mut PyVarObject,
                *mut PyTypeObject,
                Py_ssize_t,
            ) -> *mut PyVarObject,
        op,
        tp,
        size
    );
    // SAFETY: guaranteed by the caller.
    unsafe { object::init_var(op, tp, size) }
}

/// Behind `PyObject_New(type, tp)`: `tp->tp_basicsize` bytes from the
/// object heap, initialised. NULL on failure. Release with `PyObject_Del`.
///
/// # Safety
/// `tp` is a type object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _PyObject_New(tp: *mut PyTypeObject) -> *mut PyObject {
    crate::forward_to_cpython!(
        _PyObject_New as unsafe extern "C" fn(*mut PyTypeObject) -> *mut PyObject,
        tp
    );
    // SAFETY: guaranteed by the caller.
    unsafe { object::new(tp) }
}

/// Behind `PyObject_NewVar(type, tp, n)`: `tp_basicsize + n * tp_itemsize`
/// bytes rounded up to a pointer multiple, initialised with `ob_size = n`.
/// NULL if `n < 0`, if the size overflows, or on failure.
///
/// # Safety
/// `tp` is a type object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _PyObject_NewVar(
    tp: *mut PyTypeObject,
    nitems: Py_ssize_t,
) -> *mut PyVarObject {
    crate::forward_to_cpython!(
        _PyObject_NewVar as unsafe extern "C" fn(*mut PyTypeObject, Py_ssize_t) -> *mut PyVarObject,
        tp,
        nitems
    );
    // SAFETY: guaranteed by the caller.
    unsafe { object::new_var(tp, nitems) }
}

/// Behind `PyObject_GC_New(type, tp)`: as `_PyObject_New`, with a zeroed
/// 16-byte GC header in front of the object. Release with `PyObject_GC_Del`.
///
/// # Safety
/// `tp` is a type object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _PyObject_GC_New(tp: *mut PyTypeObject) -> *mut PyObject {
    crate::forward_to_cpython!(
        _PyObject_GC_New as unsafe extern "C" fn(*mut PyTypeObject) -> *mut PyObject,
        tp
    );
    // SAFETY: guaranteed by the caller.
    unsafe { object::gc_new(tp) }
}

/// Behind `PyObject_GC_NewVar(type, tp, n)`: as `_PyObject_NewVar`, with
/// the GC header.
///
/// # Safety
/// `tp` is a type object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _PyObject_GC_NewVar(
    tp: *mut PyTypeObject,
    nitems: Py_ssize_t,
) -> *mut PyVarObject {
    crate::forward_to_cpython!(
        _PyObject_GC_NewVar
            as unsafe extern "C" fn(*mut PyTypeObject, Py_ssize_t) -> *mut PyVarObject,
        tp,
        nitems
    );
    // SAFETY: guaranteed by the caller.
    unsafe { object::gc_new_var(tp, nitems) }
}

/// Release an object from `PyObject_GC_New`/`GC_NewVar` (header included).
/// NULL is ignored.
///
/// # Safety
/// `op` is NULL or a live GC object of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyObject_GC_Del(op: *mut c_void) {
    crate::forward_to_cpython!(PyObject_GC_Del as unsafe extern "C" fn(*mut c_void), op);
    // SAFETY: guaranteed by the caller.
    unsafe { object::gc_del(op.cast()) }
}
