//! The object domain (`PyObject_*`) and typed object creation, with the
//! names and contracts of CPython's `Include/objimpl.h`. The functions
//! behind the `PyObject_New`/`NewVar`/`GC_New`/`GC_NewVar` macros keep
//! CPython's exported names, so code built against CPython links here.
#![allow(non_snake_case)]

use core::ffi::c_void;

use super::general_targets;
use super::routes::{self, Targets};
use crate::domain::Domain;
use crate::object::{self, PyObject, PyTypeObject, PyVarObject, Py_ssize_t};

/// Object domain: allocate `size` bytes (pooled by default). Zero bytes give
/// a distinct non-NULL pointer; NULL on failure or `size > PY_SSIZE_T_MAX`.
/// Release with `PyObject_Free`.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyObject_Malloc(size: usize) -> *mut c_void {
    routes::jump!(malloc, Domain::Obj, size)
}

/// Object domain: allocate `nelem * elsize` zeroed bytes; NULL on overflow.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyObject_Calloc(nelem: usize, elsize: usize) -> *mut c_void {
    routes::jump!(calloc, Domain::Obj, nelem, elsize)
}

/// Object domain: resize; `ptr == NULL` allocates. On failure NULL, and
/// `ptr` stays valid.
///
/// # Safety
/// `ptr` is NULL or a live object-domain block.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyObject_Realloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    routes::jump!(realloc, Domain::Obj, ptr, new_size)
}

/// Object domain: release; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or a live object-domain block.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyObject_Free(ptr: *mut c_void) {
    routes::jump!(free, Domain::Obj, ptr)
}

/// The object domain's general targets (see `routes`): its state decides.
pub(crate) const OBJECT_GENERAL: Targets = general_targets!(Domain::Obj, "PyObject_");

/// Initialise freshly allocated storage as an object of type `tp`:
/// `ob_type = tp`, `ob_refcnt = 1` (and a reference to `tp` if it is a heap
/// type). Returns `op`; NULL if `op` is NULL.
///
/// # Safety
/// `op` is NULL or points to writable storage for a `PyObject`; `tp` is a
/// type object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyObject_Init(op: *mut PyObject, tp: *mut PyTypeObject) -> *mut PyObject {
    crate::cpython::return_via_libpython!(
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
    crate::cpython::return_via_libpython!(
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
/// object domain, initialised. NULL on failure. Release with `PyObject_Del`.
///
/// # Safety
/// `tp` is a type object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _PyObject_New(tp: *mut PyTypeObject) -> *mut PyObject {
    crate::cpython::return_via_libpython!(
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
    crate::cpython::return_via_libpython!(
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
    crate::cpython::return_via_libpython!(
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
    crate::cpython::return_via_libpython!(
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
    crate::cpython::return_via_libpython!(PyObject_GC_Del as unsafe extern "C" fn(*mut c_void), op);
    // SAFETY: guaranteed by the caller.
    unsafe { object::gc_del(op.cast()) }
}
