//! The raw domain (`PyMem_Raw*`) and the memory domain (`PyMem_*`), with the
//! names and contracts of CPython's `Include/pymem.h`.

use core::ffi::{c_uint, c_void};

use super::general_targets;
use super::routes::{self, Targets};
use crate::cpython::PyMemAllocatorEx;
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
    if crate::cpython::setup_debug_hooks_in_libpython() {
        return;
    }
    routes::enable_debug_hooks();
}

/// CPython's `PyMemAllocatorDomain`: `PYMEM_DOMAIN_RAW` (0),
/// `PYMEM_DOMAIN_MEM` (1), `PYMEM_DOMAIN_OBJ` (2).
pub type PyMemAllocatorDomain = c_uint;

/// Fill `*allocator` with the allocator table of `domain`: the table set
/// with `PyMem_SetAllocator`, or else one whose functions serve the domain
/// as configured (pools or malloc, debug hooks), for a table set over it
/// to call. A number that names no domain gives a table of NULLs. With a
/// CPython in the process after this library (LD_PRELOAD), CPython's own
/// `PyMem_GetAllocator`.
///
/// # Safety
/// `allocator` points to a writable `PyMemAllocatorEx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyMem_GetAllocator(
    domain: PyMemAllocatorDomain,
    allocator: *mut PyMemAllocatorEx,
) {
    crate::cpython::return_via_libpython!(
        PyMem_GetAllocator as unsafe extern "C" fn(PyMemAllocatorDomain, *mut PyMemAllocatorEx),
        domain,
        allocator
    );
    // SAFETY: guaranteed by the caller.
    unsafe { super::tables::get(domain, allocator) }
}

/// From now on, serve `domain` with the functions of `*allocator` (copied):
/// every call of the domain's functions goes to them, until the table that
/// `PyMem_GetAllocator` gave is set back. Set a table before the domain's
/// first allocation, or one that wraps the table it replaces (got with
/// `PyMem_GetAllocator`) and hands it the blocks it did not allocate.
/// A number that names no domain, NULL, or a table with a NULL function
/// set nothing (a message on stderr says so). With a CPython in the
/// process after this library (LD_PRELOAD), CPython's own
/// `PyMem_SetAllocator`.
///
/// # Safety
/// `allocator` points to a readable `PyMemAllocatorEx` whose functions
/// honour the domain's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyMem_SetAllocator(
    domain: PyMemAllocatorDomain,
    allocator: *mut PyMemAllocatorEx,
) {
    // SAFETY: guaranteed by the caller.
    if unsafe { crate::cpython::set_allocator_in_libpython(domain, allocator) } {
        return;
    }
    // SAFETY: guaranteed by the caller.
    unsafe { super::tables::set(domain, allocator) }
}
