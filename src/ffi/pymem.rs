//! The raw domain (`PyMem_Raw*`) and the memory domain (`PyMem_*`), with the
//! names and contracts of CPython's `Include/pymem.h`.

use core::ffi::c_void;

use super::general_targets;
use super::routes::{self, Targets};
use crate::domain::Domain;

/// Raw domain: allocate `size` bytes. Safe to call from any thread, with no
/// lock held. Zero bytes give a distinct non-NULL pointer; NULL on
/// failure or when `size > PY_SSIZE_T_MAX`. Release with `PyMem_RawFree`.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyMem_RawMalloc(size: usize) -> *mut c_void {
    routes::jump!(malloc, Domain::Raw, size)
}

/// Raw domain: allocate `nelem * elsize` zeroed bytes; NULL on overflow.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyMem_RawCalloc(nelem: usize, elsize: usize) -> *mut c_void {
    routes::jump!(calloc, Domain::Raw, nelem, elsize)
}

/// Raw domain: resize; `ptr == NULL` allocates, `new_size == 0` keeps a
/// distinct non-NULL block. On failure NULL, and `ptr` stays valid.
///
/// # Safety
/// `ptr` is NULL or a live raw-domain block.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyMem_RawRealloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    routes::jump!(realloc, Domain::Raw, ptr, new_size)
}

/// Raw domain: release; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or a live raw-domain block.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyMem_RawFree(ptr: *mut c_void) {
    routes::jump!(free, Domain::Raw, ptr)
}

/// Memory domain: allocate `size` bytes (pooled by default). Zero bytes give
/// a distinct non-NULL pointer; NULL on failure or `size > PY_SSIZE_T_MAX`.
/// Release with `PyMem_Free`.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyMem_Malloc(size: usize) -> *mut c_void {
    routes::jump!(malloc, Domain::Mem, size)
}

/// Memory domain: allocate `nelem * elsize` zeroed bytes; NULL on overflow.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub extern "C" fn PyMem_Calloc(nelem: usize, elsize: usize) -> *mut c_void {
    routes::jump!(calloc, Domain::Mem, nelem, elsize)
}

/// Memory domain: resize (see `PyMem_RawRealloc`).
///
/// # Safety
/// `ptr` is NULL or a live memory-domain block.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyMem_Realloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    routes::jump!(realloc, Domain::Mem, ptr, new_size)
}

/// Memory domain: release; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or a live memory-domain block.
#[unsafe(no_mangle)]
#[cfg_attr(target_arch = "x86_64", unsafe(naked))]
pub unsafe extern "C" fn PyMem_Free(ptr: *mut c_void) {
    routes::jump!(free, Domain::Mem, ptr)
}

/// The raw domain's general targets (see `routes`): its state decides.
pub(crate) const RAW_GENERAL: Targets = general_targets!(Domain::Raw, "PyMem_Raw");

/// The memory domain's general targets.
pub(crate) const MEM_GENERAL: Targets = general_targets!(Domain::Mem, "PyMem_");

/// Put the debug hooks over the allocator of every domain (and `PyCore_*`):
/// guard bytes, fill patterns, family ids and serial numbers, checked at
/// free and realloc (CPython's `PyMem_SetupDebugHooks`). Call it before
/// allocating: blocks allocated earlier carry no debug header.
#[unsafe(no_mangle)]
pub extern "C" fn PyMem_SetupDebugHooks() {
    crate::cpython::return_via_libpython!(PyMem_SetupDebugHooks as unsafe extern "C" fn(),);
    routes::enable_debug_hooks();
}
