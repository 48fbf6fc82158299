//! The raw heap (`PyMem_Raw*`) and the memory heap (`PyMem_*`), with the
//! names and contracts of CPython's `Include/pymem.h`.

use core::ffi::c_void;
use core::ptr::null_mut;

use super::{
    calloc_export, count_ok, free_export, malloc_export, realloc_export, size_ok,
    through_live_table,
};
use crate::cpython_dispatch;
use crate::domain::{self, Domain};

/// Raw heap: allocate `size` bytes. Safe to call from any thread, with no
/// lock held. Zero bytes give a distinct non-NULL pointer; NULL on
/// failure or when `size > PY_SSIZE_T_MAX`. Release with `PyMem_RawFree`.
#[unsafe(no_mangle)]
pub extern "C" fn PyMem_RawMalloc(size: usize) -> *mut c_void {
    malloc_export(Domain::Raw, size, raw_malloc_other)
}

#[cold]
#[inline(never)]
fn raw_malloc_other(state: u8, size: usize) -> *mut c_void {
    if !size_ok(size) {
        return null_mut();
    }
    through_live_table!(state, Domain::Raw => malloc(size));
    crate::forward_to_cpython!(state => PyMem_RawMalloc as unsafe extern "C" fn(usize) -> *mut c_void,
        size);
    domain::malloc_in(Domain::Raw, state, size).cast()
}

/// Raw heap: allocate `nelem * elsize` zeroed bytes; NULL on overflow.
#[unsafe(no_mangle)]
pub extern "C" fn PyMem_RawCalloc(nelem: usize, elsize: usize) -> *mut c_void {
    calloc_export(Domain::Raw, nelem, elsize, raw_calloc_other)
}

#[cold]
#[inline(never)]
fn raw_calloc_other(state: u8, nelem: usize, elsize: usize) -> *mut c_void {
    if !count_ok(nelem, elsize) {
        return null_mut();
    }
    through_live_table!(state, Domain::Raw => calloc(nelem, elsize));
    crate::forward_to_cpython!(state => PyMem_RawCalloc as unsafe extern "C" fn(usize, usize) -> *mut c_void,
        nelem,
        elsize);
    domain::calloc(Domain::Raw, nelem, elsize).cast()
}

/// Raw heap: resize; `ptr == NULL` allocates, `new_size == 0` keeps a
/// distinct non-NULL block. On failure NULL, and `ptr` stays valid.
///
/// # Safety
/// `ptr` is NULL or a live raw-heap block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyMem_RawRealloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    // SAFETY: guaranteed by the caller.
    unsafe { realloc_export(Domain::Raw, ptr, new_size, raw_realloc_other) }
}

/// # Safety
/// As for `PyMem_RawRealloc`.
#[cold]
#[inline(never)]
unsafe fn raw_realloc_other(state: u8, ptr: *mut c_void, new_size: usize) -> *mut c_void {
    if !size_ok(new_size) {
        return null_mut();
    }
    through_live_table!(state, Domain::Raw => realloc(ptr.cast(), new_size));
    crate::forward_to_cpython!(state => PyMem_RawRealloc as unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
        ptr,
        new_size);
    // SAFETY: guaranteed by the caller.
    unsafe { domain::realloc(Domain::Raw, ptr.cast(), new_size, "PyMem_RawRealloc").cast() }
}

/// Raw heap: release; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or a live raw-heap block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyMem_RawFree(ptr: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { free_export(Domain::Raw, ptr, raw_free_other) }
}

/// # Safety
/// As for `PyMem_RawFree`.
#[cold]
#[inline(never)]
unsafe fn raw_free_other(state: u8, ptr: *mut c_void) {
    if state & domain::LIVE_TABLE != 0 {
        // SAFETY: the state says the live table's address is known; the
        // block is the domain's (caller).
        return unsafe { cpython_dispatch::free(Domain::Raw, ptr.cast()) };
    }
    if state & domain::FREE_SLOW != 0 {
        crate::forward_to_cpython!(state => PyMem_RawFree as unsafe extern "C" fn(*mut c_void), ptr);
    }
    // SAFETY: guaranteed by the caller.
    unsafe { domain::free_in(Domain::Raw, state, ptr.cast(), "PyMem_RawFree") }
}

/// Memory heap: allocate `size` bytes (pooled by default). Zero bytes give
/// a distinct non-NULL pointer; NULL on failure or `size > PY_SSIZE_T_MAX`.
/// Release with `PyMem_Free`.
#[unsafe(no_mangle)]
pub extern "C" fn PyMem_Malloc(size: usize) -> *mut c_void {
    malloc_export(Domain::Mem, size, mem_malloc_other)
}

#[cold]
#[inline(never)]
fn mem_malloc_other(state: u8, size: usize) -> *mut c_void {
    if !size_ok(size) {
        return null_mut();
    }
    through_live_table!(state, Domain::Mem => malloc(size));
    crate::forward_to_cpython!(state => PyMem_Malloc as unsafe extern "C" fn(usize) -> *mut c_void,
        size);
    domain::malloc_in(Domain::Mem, state, size).cast()
}

/// Memory heap: allocate `nelem * elsize` zeroed bytes; NULL on overflow.
#[unsafe(no_mangle)]
pub extern "C" fn PyMem_Calloc(nelem: usize, elsize: usize) -> *mut c_void {
    calloc_export(Domain::Mem, nelem, elsize, mem_calloc_other)
}

#[cold]
#[inline(never)]
fn mem_calloc_other(state: u8, nelem: usize, elsize: usize) -> *mut c_void {
    if !count_ok(nelem, elsize) {
        return null_mut();
    }
    through_live_table!(state, Domain::Mem => calloc(nelem, elsize));
    crate::forward_to_cpython!(state => PyMem_Calloc as unsafe extern "C" fn(usize, usize) -> *mut c_void,
        nelem,
        elsize);
    domain::calloc(Domain::Mem, nelem, elsize).cast()
}

/// Memory heap: resize (see `PyMem_RawRealloc`).
///
/// # Safety
/// `ptr` is NULL or a live memory-heap block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyMem_Realloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    // SAFETY: guaranteed by the caller.
    unsafe { realloc_export(Domain::Mem, ptr, new_size, mem_realloc_other) }
}

/// # Safety
/// As for `PyMem_Realloc`.
#[cold]
#[inline(never)]
unsafe fn mem_realloc_other(state: u8, ptr: *mut c_void, new_size: usize) -> *mut c_void {
    if !size_ok(new_size) {
        return null_mut();
    }
    through_live_table!(state, Domain::Mem => realloc(ptr.cast(), new_size));
    crate::forward_to_cpython!(state => PyMem_Realloc as unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
        ptr,
        new_size);
    // SAFETY: guaranteed by the caller.
    unsafe { domain::realloc(Domain::Mem, ptr.cast(), new_size, "PyMem_Realloc").cast() }
}

/// Memory heap: release; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or a live memory-heap block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyMem_Free(ptr: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { free_export(Domain::Mem, ptr, mem_free_other) }
}

/// # Safety
/// As for `PyMem_Free`.
#[cold]
#[inline(never)]
unsafe fn mem_free_other(state: u8, ptr: *mut c_void) {
    if state & domain::LIVE_TABLE != 0 {
        // SAFETY: the state says the live table's address is known; the
        // block is the domain's (caller).
        return unsafe { cpython_dispatch::free(Domain::Mem, ptr.cast()) };
    }
    if state & domain::FREE_SLOW != 0 {
        crate::forward_to_cpython!(state => PyMem_Free as unsafe extern "C" fn(*mut c_void), ptr);
    }
    // SAFETY: guaranteed by the caller.
    unsafe { domain::free_in(Domain::Mem, state, ptr.cast(), "PyMem_Free") }
}

/// Put the debug hooks over the allocator of every heap (and `PyCore_*`):
/// guard bytes, fill patterns, family ids and serial numbers, checked at
/// free and realloc (CPython's `PyMem_SetupDebugHooks`). Call it before
/// allocating: blocks allocated earlier carry no debug header.
#[unsafe(no_mangle)]
pub extern "C" fn PyMem_SetupDebugHooks() {
    crate::forward_to_cpython!(PyMem_SetupDebugHooks as unsafe extern "C" fn(),);
    domain::enable_debug_hooks();
}
