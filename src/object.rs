//! Typed objects: `PyObject_New/NewVar/Del` and `PyObject_GC_New/NewVar/Del`
//! — storage from the object domain plus CPython's initialisation (type set,
//! reference count 1, `ob_size` for variable-size objects).
//!
//! The structures mirror CPython's 64-bit layout (offsets checked below):
//! `ob_refcnt` 0, `ob_type` 8, `ob_size` 16; in the type, `tp_name` 24,
//! `tp_basicsize` 32, `tp_itemsize` 40, `tp_flags` 168. So the same code
//! works on real CPython objects and type objects.
//!
//! GC objects carry CPython's 16-byte `PyGC_Head` in front of the object,
//! zeroed (untracked): `PyObject_GC_Del(op)` frees `op - 16`.

use core::ptr;

use crate::domain::{self, Domain};

#[allow(non_camel_case_types)]
pub type Py_ssize_t = isize;

#[repr(C)]
pub struct PyObject {
    pub ob_refcnt: Py_ssize_t,
    pub ob_type: *mut PyTypeObject,
}

#[repr(C)]
pub struct PyVarObject {
    pub ob_base: PyObject,
    pub ob_size: Py_ssize_t,
}

/// The leading part of CPython's `PyTypeObject`, up to `tp_flags`.
#[repr(C)]
pub struct PyTypeObject {
    pub ob_base: PyVarObject,
    pub tp_name: *const core::ffi::c_char,
    pub tp_basicsize: Py_ssize_t,
    pub tp_itemsize: Py_ssize_t,
    /// `tp_dealloc` .. `tp_as_buffer`: slots this library does not use.
    pub tp_slots: [*mut core::ffi::c_void; 15],
    pub tp_flags: core::ffi::c_ulong,
}

/// `Py_TPFLAGS_HEAPTYPE`: instances hold a reference to their type.
pub const PY_TPFLAGS_HEAPTYPE: core::ffi::c_ulong = 1 << 9;
/// Size of CPython's `PyGC_Head` (two words), placed before GC objects.
pub const GC_HEAD_SIZE: usize = 16;

/// `_PyObject_SIZE(tp)`, or `None` when the type's size is negative.
fn object_size(tp: &PyTypeObject) -> Option<usize> {
    usize::try_from(tp.tp_basicsize).ok()
}

/// `_PyObject_VAR_SIZE(tp, n)`: basic size plus `n` items, rounded up to a
/// multiple of the pointer size; `None` on a negative count or overflow.
pub fn var_size(tp: &PyTypeObject, items: Py_ssize_t) -> Option<usize> {
    let basic = usize::try_from(tp.tp_basicsize).ok()?;
    let item = usize::try_from(tp.tp_itemsize).ok()?;
    let items = usize::try_from(items).ok()?;
    let word = core::mem::size_of::<usize>();
    let size = item
        .checked_mul(items)?
        .checked_add(basic)?
        .checked_add(word - 1)?
        & !(word - 1);
    (size <= isize::MAX as usize).then_some(size)
}

/// `PyObject_Init`: set the type and a reference count of 1 (and take a
/// reference to a heap type, as CPython does).
///
/// # Safety
/// `op` is null or points to at least `sizeof(PyObject)` writable bytes;
/// `tp` points to a type object.
pub unsafe fn init(op: *mut PyObject, tp: *mut PyTypeObject) -> *mut PyObject {
    if op.is_null() {
        return op;
    }
    // SAFETY: guaranteed by the caller.
    unsafe {
        (*op).ob_type = tp;
        if (*tp).tp_flags & PY_TPFLAGS_HEAPTYPE != 0 {
            (*tp).ob_base.ob_base.ob_refcnt += 1;
        }
        (*op).ob_refcnt = 1;
    }
    op
}

/// `PyObject_InitVar`: as `init`, and set `ob_size`.
///
/// # Safety
/// As for `init`, with room for a `PyVarObject`.
pub unsafe fn init_var(
    op: *mut PyVarObject,
    tp: *mut PyTypeObject,
    size: Py_ssize_t,
) -> *mut PyVarObject {
    if op.is_null() {
        return op;
    }
    // SAFETY: guaranteed by the caller.
    unsafe {
        (*op).ob_size = size;
        init(op.cast(), tp);
    }
    op
}

/// `PyObject_New`: allocate `tp_basicsize` bytes from the object domain.
///
/// # Safety
/// `tp` points to a type object.
pub unsafe fn new(tp: *mut PyTypeObject) -> *mut PyObject {
    // SAFETY: guaranteed by the caller.
    let Some(size) = object_size(unsafe { &*tp }) else {
        return ptr::null_mut();
    };
    let op = domain::malloc(Domain::Obj, size).cast::<PyObject>();
    // SAFETY: `op` is null or a fresh block of at least `size` bytes,
    // which covers a PyObject for any type CPython would accept.
    unsafe { init(op, tp) }
}

/// `PyObject_NewVar`: allocate a variable-size object of `items` items.
///
/// # Safety
/// `tp` points to a type object.
pub unsafe fn new_var(tp: *mut PyTypeObject, items: Py_ssize_t) -> *mut PyVarObject {
    // SAFETY: guaranteed by the caller.
    let Some(size) = var_size(unsafe { &*tp }, items) else {
        return ptr::null_mut();
    };
    let op = domain::malloc(Domain::Obj, size).cast::<PyVarObject>();
    // SAFETY: as in `new`.
    unsafe { init_var(op, tp, items) }
}

/// Storage for a GC object of `size` bytes: a zeroed GC head, then the
/// object. Returns the object's address.
fn gc_alloc(size: usize) -> *mut u8 {
    let Some(total) = size
        .checked_add(GC_HEAD_SIZE)
        .filter(|&t| t <= isize::MAX as usize)
    else {
        return ptr::null_mut();
    };
    let memory = domain::malloc(Domain::Obj, total);
    if memory.is_null() {
        return memory;
    }
    // SAFETY: the block holds `total` bytes; the head is its first 16.
    unsafe {
        ptr::write_bytes(memory, 0, GC_HEAD_SIZE);
        memory.add(GC_HEAD_SIZE)
    }
}

/// `PyObject_GC_New`.
///
/// # Safety
/// `tp` points to a type object.
pub unsafe fn gc_new(tp: *mut PyTypeObject) -> *mut PyObject {
    // SAFETY: guaranteed by the caller.
    let Some(size) = object_size(unsafe { &*tp }) else {
        return ptr::null_mut();
    };
    // SAFETY: null or a fresh object of `size` bytes.
    unsafe { init(gc_alloc(size).cast(), tp) }
}

/// `PyObject_GC_NewVar`.
///
/// # Safety
/// `tp` points to a type object.
pub unsafe fn gc_new_var(tp: *mut PyTypeObject, items: Py_ssize_t) -> *mut PyVarObject {
    // SAFETY: guaranteed by the caller.
    let Some(size) = var_size(unsafe { &*tp }, items) else {
        return ptr::null_mut();
    };
    // SAFETY: null or a fresh object of `size` bytes.
    unsafe { init_var(gc_alloc(size).cast(), tp, items) }
}

/// `PyObject_GC_Del`: free a GC object (its head included).
///
/// # Safety
/// `op` is null or an object from `gc_new`/`gc_new_var`, not freed since.
pub unsafe fn gc_del(op: *mut u8) {
    if !op.is_null() {
        // SAFETY: the block starts GC_HEAD_SIZE bytes before the object.
        unsafe { domain::free(Domain::Obj, op.sub(GC_HEAD_SIZE), "PyObject_GC_Del") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn layout_matches_cpython_64_bit() {
        assert_eq!(offset_of!(PyObject, ob_refcnt), 0);
        assert_eq!(offset_of!(PyObject, ob_type), 8);
        assert_eq!(offset_of!(PyVarObject, ob_size), 16);
        assert_eq!(offset_of!(PyTypeObject, tp_name), 24);
        assert_eq!(offset_of!(PyTypeObject, tp_basicsize), 32);
        assert_eq!(offset_of!(PyTypeObject, tp_itemsize), 40);
        assert_eq!(offset_of!(PyTypeObject, tp_slots), 48);
        assert_eq!(offset_of!(PyTypeObject, tp_flags), 168);
    }

    fn type_object(basic: isize, item: isize, flags: core::ffi::c_ulong) -> PyTypeObject {
        PyTypeObject {
            ob_base: PyVarObject {
                ob_base: PyObject {
                    ob_refcnt: 1,
                    ob_type: ptr::null_mut(),
                },
                ob_size: 0,
            },
            tp_name: c"test.Type".as_ptr(),
            tp_basicsize: basic,
            tp_itemsize: item,
            tp_slots: [ptr::null_mut(); 15],
            tp_flags: flags,
        }
    }

    #[test]
    fn var_size_rounds_like_cpython_and_rejects_overflow() {
        let tp = type_object(24, 1, 0);
        assert_eq!(var_size(&tp, 0), Some(24));
        assert_eq!(var_size(&tp, 1), Some(32));
        assert_eq!(var_size(&tp, 8), Some(32));
        assert_eq!(var_size(&tp, 9), Some(40));
        assert_eq!(var_size(&tp, -1), None);
        assert_eq!(var_size(&type_object(24, 8, 0), isize::MAX), None);
        assert_eq!(var_size(&type_object(24, 8, 0), isize::MAX / 8), None);
    }

    #[test]
    fn objects_are_initialised_and_heap_types_referenced() {
        let mut tp = type_object(32, 8, PY_TPFLAGS_HEAPTYPE);
        let tp_ptr: *mut PyTypeObject = &mut tp;
        // SAFETY: a valid type object; objects are freed with their family.
        unsafe {
            let op = new(tp_ptr);
            assert_eq!((*op).ob_refcnt, 1);
            assert_eq!((*op).ob_type, tp_ptr);
            assert_eq!(tp.ob_base.ob_base.ob_refcnt, 2);
            domain::free(Domain::Obj, op.cast(), "PyObject_Free");

            let var = gc_new_var(tp_ptr, 5);
            assert_eq!((*var).ob_size, 5);
            let head = var.cast::<u8>().sub(GC_HEAD_SIZE);
            assert!((0..GC_HEAD_SIZE).all(|i| *head.add(i) == 0));
            gc_del(var.cast());
            assert!(new_var(tp_ptr, -1).is_null());
        }
    }
}
