//! The C ABI. Each file here becomes one section of a generated header
//! (see `HEADERS` in build.rs): `core.rs` → the `PyCore_*` part of
//! `pymalloc/pymem.h`, `pymem.rs` → its CPython-named part, `objimpl.rs`
//! → `pymalloc/objimpl.h`. The functions only validate their arguments
//! (CPython's `PY_SSIZE_T_MAX` rules) and call the core.

use ::core::ffi::c_void;

use crate::domain::{self, Domain};

pub mod core;
pub mod objimpl;
pub mod pymem;

/// CPython's public wrappers refuse sizes above `PY_SSIZE_T_MAX` before any
/// allocator sees them.
#[inline(always)]
fn size_ok(size: usize) -> bool {
    size <= isize::MAX as usize
}

/// And element counts whose byte size would exceed it.
#[inline(always)]
fn count_ok(count: usize, size: usize) -> bool {
    size == 0 || count <= isize::MAX as usize / size
}

/// An export's allocation: the plain pooled fast path inline, anything
/// else through `other` (given the heap's state), kept out of line.
#[inline(always)]
fn malloc_export(domain: Domain, size: usize, other: fn(u8, usize) -> *mut c_void) -> *mut c_void {
    let state = domain::state(domain);
    match domain::malloc_plain(state, size) {
        Some(block) => block.cast(),
        None => other(state, size),
    }
}

/// An export's free: the plain pooled fast path inline, anything else
/// through `other`.
///
/// # Safety
/// `ptr` is NULL or a live block of `domain`.
#[inline(always)]
unsafe fn free_export(domain: Domain, ptr: *mut c_void, other: unsafe fn(u8, *mut c_void)) {
    let state = domain::state(domain);
    // SAFETY: guaranteed by the caller.
    unsafe {
        if !domain::free_plain(state, ptr.cast()) {
            other(state, ptr)
        }
    }
}
