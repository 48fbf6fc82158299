//! The raw heap (`PyMem_Raw*`) and the memory heap (`PyMem_*`), with the
//! names and contracts of CPython's `Include/pymem.h`.

use core::ffi::c_void;

use super::general_targets;
use super::routes::{self, Targets};
use crate::domain::{self, Domain};

/// Raw heap: allocate `size` bytes. Safe to call from any thread, with no
/// lock held. Zero bytes give a distinct non-NULL pointer; NULL on
/// failure or when `size > PY_SSIZE_T_MAX`. Release with `PyMem_RawFree`.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyMem_RawMalloc(size: usize) -> *mut c_void {
    routes::jump!(malloc, Domain::Raw, size)
}

/// Raw heap: allocate `nelem * elsize` zeroed bytes; NULL on overflow.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyMem_RawCalloc(nelem: usize, elsize: usize) -> *mut c_void {
    routes::jump!(calloc, Domain::Raw, nelem, elsize)
}

/// Raw heap: resize; `ptr == NULL` allocates, `new_size == 0` keeps a
/// distinct non-NULL block. On failure NULL, and `ptr` stays valid.
///
/// # Safety
/// `ptr` is NULL or a live raw-heap block.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyMem_RawRealloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    routes::jump!(realloc, Domain::Raw, ptr, new_size)
}

/// Raw heap: release; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or a live raw-heap block.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyMem_RawFree(ptr: *mut c_void) {
    routes::jump!(free, Domain::Raw, ptr)
}

/// Memory heap: allocate `size` bytes (pooled by default). Zero bytes give
/// a distinct non-NULL pointer; NULL on failure or `size > PY_SSIZE_T_MAX`.
/// Release with `PyMem_Free`.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyMem_Malloc(size: usize) -> *mut c_void {
    routes::jump!(malloc, Domain::Mem, size)
}

/// Memory heap: allocate `nelem * elsize` zeroed bytes; NULL on overflow.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyMem_Calloc(nelem: usize, elsize: usize) -> *mut c_void {
    routes::jump!(calloc, Domain::Mem, nelem, elsize)
}

/// Memory heap: resize (see `PyMem_RawRealloc`).
///
/// # Safety
/// `ptr` is NULL or a live memory-heap block.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyMem_Realloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    routes::jump!(realloc, Domain::Mem, ptr, new_size)
}

/// Memory heap: release; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or a live memory-heap block.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyMem_Free(ptr: *mut c_void) {
    routes::jump!(free, Domain::Mem, ptr)
}

/// The raw heap's general targets (see `routes`): its state decides.
pub(crate) const RAW_GENERAL: Targets = general_targets!(Domain::Raw, "PyMem_Raw");

/// The memory heap's general targets.
pub(crate) const MEM_GENERAL: Targets = general_targets!(Domain::Mem, "PyMem_");

/// Put the debug hooks over the allocator of every heap (and `PyCore_*`):
/// guard bytes, fill patterns, family ids and serial numbers, checked at
/// free and realloc (CPython's `PyMem_SetupDebugHooks`). Call it before
/// allocating: blocks allocated earlier carry no debug header.
#[unsafe(no_mangle)]
pub extern "C" fn PyMem_SetupDebugHooks() {
    crate::cpython::return_via_libpython!(PyMem_SetupDebugHooks as unsafe extern "C" fn(),);
    domain::enable_debug_hooks();
}
