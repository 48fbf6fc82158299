//! The system allocator (libc `malloc`): it serves requests above the
//! small-request threshold, the domains configured as `malloc`, and every
//! pointer the address map says is not ours.
//!
//! Zero-byte requests become one-byte requests so that the result is a
//! distinct non-NULL pointer, as CPython's contract requires.

use core::ffi::c_void;

#[inline]
pub fn malloc(size: usize) -> *mut u8 {
    // SAFETY: malloc accepts any size and reports failure as NULL.
    unsafe { libc::malloc(size.max(1)).cast() }
}

#[inline]
pub fn calloc(count: usize, size: usize) -> *mut u8 {
    let (count, size) = if count == 0 || size == 0 {
        (1, 1)
    } else {
        (count, size)
    };
    // SAFETY: calloc checks the multiplication itself and reports failure as NULL.
    unsafe { libc::calloc(count, size).cast() }
}

/// # Safety
/// `block` is null or a live block from this module's functions.
#[inline]
pub unsafe fn realloc(block: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: guaranteed by the caller.
    unsafe { libc::realloc(block.cast::<c_void>(), size.max(1)).cast() }
}

/// # Safety
/// `block` is null or a live block from this module's functions.
#[inline]
pub unsafe fn free(block: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { libc::free(block.cast()) }
}
