//! The object domain (`PyObject_*`) and typed object creation, with the
//! names and contracts of CPython's `Include/objimpl.h`. The functions
//! behind the `PyObject_New`/`NewVar`/`GC_New`/`GC_NewVar` macros keep
//! CPython's exported names, so code built against CPython links here.
#![allow(non_snake_case)]

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

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

/// Where each typed-object export goes: this library's implementation, or
/// libpython's function of the same name when a libpython comes after this
/// library in lookup order (`LD_PRELOAD`, or linked before it), bound once
/// at load ([`bind_object_routes`]). As with the memory functions'
/// routes, the export is one indirect jump, with no per-call test.
#[repr(C)]
pub(crate) struct ObjectRoutes {
    init: AtomicPtr<()>,
    init_var: AtomicPtr<()>,
    new: AtomicPtr<()>,
    new_var: AtomicPtr<()>,
    gc_new: AtomicPtr<()>,
    gc_new_var: AtomicPtr<()>,
    gc_del: AtomicPtr<()>,
}

pub(crate) static OBJECT_ROUTES: ObjectRoutes = ObjectRoutes {
    init: AtomicPtr::new(own::init as *mut ()),
    init_var: AtomicPtr::new(own::init_var as *mut ()),
    new: AtomicPtr::new(own::new as *mut ()),
    new_var: AtomicPtr::new(own::new_var as *mut ()),
    gc_new: AtomicPtr::new(own::gc_new as *mut ()),
    gc_new_var: AtomicPtr::new(own::gc_new_var as *mut ()),
    gc_del: AtomicPtr::new(own::gc_del as *mut ()),
};

/// Point the typed-object exports at libpython's functions that
/// `cpython` found after this library (none when there is no libpython):
/// CPython's objects are then made by CPython, through its allocator
/// tables, whatever they hold (tracemalloc, its debug hooks, our hooks).
pub(crate) fn bind_object_routes() {
    let forwards = &crate::cpython::FORWARDS;
    let bindings = [
        (&OBJECT_ROUTES.init, &forwards.PyObject_Init),
        (&OBJECT_ROUTES.init_var, &forwards.PyObject_InitVar),
        (&OBJECT_ROUTES.new, &forwards._PyObject_New),
        (&OBJECT_ROUTES.new_var, &forwards._PyObject_NewVar),
        (&OBJECT_ROUTES.gc_new, &forwards._PyObject_GC_New),
        (&OBJECT_ROUTES.gc_new_var, &forwards._PyObject_GC_NewVar),
        (&OBJECT_ROUTES.gc_del, &forwards.PyObject_GC_Del),
    ];
    for (route, libpython) in bindings {
        let target = libpython.load(Ordering::Relaxed);
        if !target.is_null() {
            route.store(target.cast(), Ordering::Release);
        }
    }
}

/// The body of a typed-object export: continue in its route's target
/// with the export's arguments (see `routes::jump!`).
#[cfg(target_arch = "x86_64")]
macro_rules! object_jump {
    ($route:ident as $ty:ty, $($arg:expr),*) => {
        ::core::arch::naked_asm!(
            "jmp qword ptr [rip + {routes} + {offset}]",
            routes = sym OBJECT_ROUTES,
            offset = const ::core::mem::offset_of!(ObjectRoutes, $route),
        )
    };
}
#[cfg(not(target_arch = "x86_64"))]
macro_rules! object_jump {
    ($route:ident as $ty:ty, $($arg:expr),*) => {{
        let target = OBJECT_ROUTES.$route.load(Ordering::Acquire);
        // SAFETY: the route holds a function of this export's signature
        // (`OBJECT_ROUTES`, `bind_object_routes`); the caller guarantees
        // what it needs.
        unsafe { ::core::mem::transmute::<*mut (), $ty>(target)($($arg),*) }
    }};
}

/// This library's implementations of the typed-object exports.
mod own {
    use super::*;

    pub(super) unsafe extern "C" fn init(
        op: *mut PyObject,
        tp: *mut PyTypeObject,
    ) -> *mut PyObject {
        // SAFETY: the export's contract.
        unsafe { object::init(op, tp) }
    }

    pub(super) unsafe extern "C" fn init_var(
        op: *mut PyVarObject,
        tp: *mut PyTypeObject,
        size: Py_ssize_t,
    ) -> *mut PyVarObject {
        // SAFETY: the export's contract.
        unsafe { object::init_var(op, tp, size) }
    }

    pub(super) unsafe extern "C" fn new(tp: *mut PyTypeObject) -> *mut PyObject {
        // SAFETY: the export's contract.
        unsafe { object::new(tp) }
    }

    pub(super) unsafe extern "C" fn new_var(
        tp: *mut PyTypeObject,
        nitems: Py_ssize_t,
    ) -> *mut PyVarObject {
        // SAFETY: the export's contract.
        unsafe { object::new_var(tp, nitems) }
    }

    pub(super) unsafe extern "C" fn gc_new(tp: *mut PyTypeObject) -> *mut PyObject {
        // SAFETY: the export's contract.
        unsafe { object::gc_new(tp) }
    }

    pub(super) unsafe extern "C" fn gc_new_var(
        tp: *mut PyTypeObject,
        nitems: Py_ssize_t,
    ) -> *mut PyVarObject {
        // SAFETY: the export's contract.
        unsafe { object::gc_new_var(tp, nitems) }
    }

    pub(super) unsafe extern "C" fn gc_del(op: *mut c_void) {
        // SAFETY: the export's contract.
        unsafe { object::gc_del(op.cast()) }
    }
}

/// Initialise freshly allocated storage as an object of type `tp`:
/// `ob_type = tp`, `ob_refcnt = 1` (and a reference to `tp` if it is a heap
/// type). Returns `op`; NULL if `op` is NULL.
///
/// # Safety
/// `op` is NULL or points to writable storage for a `PyObject`; `tp` is a
/// type object.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyObject_Init(op: *mut PyObject, tp: *mut PyTypeObject) -> *mut PyObject {
    object_jump!(
        init as unsafe extern "C" fn(*mut PyObject, *mut PyTypeObject) -> *mut PyObject,
        op,
        tp
    )
}

/// As `PyObject_Init`, and set `ob_size = size`.
///
/// # Safety
/// `op` is NULL or points to writable storage for a `PyVarObject`; `tp`
/// is a type object.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyObject_InitVar(
    op: *mut PyVarObject,
    tp: *mut PyTypeObject,
    size: Py_ssize_t,
) -> *mut PyVarObject {
    object_jump!(
        init_var
            as unsafe extern "C" fn(
                *mut PyVarObject,
                *mut PyTypeObject,
                Py_ssize_t,
            ) -> *mut PyVarObject,
        op,
        tp,
        size
    )
}

/// Behind `PyObject_New(type, tp)`: `tp->tp_basicsize` bytes from the
/// object domain, initialised. NULL on failure. Release with `PyObject_Del`.
///
/// # Safety
/// `tp` is a type object.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn _PyObject_New(tp: *mut PyTypeObject) -> *mut PyObject {
    object_jump!(
        new as unsafe extern "C" fn(*mut PyTypeObject) -> *mut PyObject,
        tp
    )
}

/// Behind `PyObject_NewVar(type, tp, n)`: `tp_basicsize + n * tp_itemsize`
/// bytes rounded up to a pointer multiple, initialised with `ob_size = n`.
/// NULL if `n < 0`, if the size overflows, or on failure.
///
/// # Safety
/// `tp` is a type object.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn _PyObject_NewVar(
    tp: *mut PyTypeObject,
    nitems: Py_ssize_t,
) -> *mut PyVarObject {
    object_jump!(
        new_var as unsafe extern "C" fn(*mut PyTypeObject, Py_ssize_t) -> *mut PyVarObject,
        tp,
        nitems
    )
}

/// Behind `PyObject_GC_New(type, tp)`: as `_PyObject_New`, with a zeroed
/// 16-byte GC header in front of the object. Release with `PyObject_GC_Del`.
///
/// # Safety
/// `tp` is a type object.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn _PyObject_GC_New(tp: *mut PyTypeObject) -> *mut PyObject {
    object_jump!(
        gc_new as unsafe extern "C" fn(*mut PyTypeObject) -> *mut PyObject,
        tp
    )
}

/// Behind `PyObject_GC_NewVar(type, tp, n)`: as `_PyObject_NewVar`, with
/// the GC header.
///
/// # Safety
/// `tp` is a type object.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn _PyObject_GC_NewVar(
    tp: *mut PyTypeObject,
    nitems: Py_ssize_t,
) -> *mut PyVarObject {
    object_jump!(
        gc_new_var as unsafe extern "C" fn(*mut PyTypeObject, Py_ssize_t) -> *mut PyVarObject,
        tp,
        nitems
    )
}

/// Release an object from `PyObject_GC_New`/`GC_NewVar` (header included).
/// NULL is ignored.
///
/// # Safety
/// `op` is NULL or a live GC object of this library.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyObject_GC_Del(op: *mut c_void) {
    object_jump!(gc_del as unsafe extern "C" fn(*mut c_void), op)
}
