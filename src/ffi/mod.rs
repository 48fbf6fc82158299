//! The C ABI. Each file here becomes one section of a generated header
//! (see `HEADERS` in build.rs): `core.rs` → the `PyCore_*` part of
//! `pymalloc/pymem.h`, `pymem.rs` → its CPython-named part, `objimpl.rs`
//! → `pymalloc/objimpl.h`. The memory functions (malloc, calloc, realloc
//! and free of each domain) tail-call the target their domain's state
//! selected ([`routes`]); the others validate their arguments (CPython's
//! `PY_SSIZE_T_MAX` rules) and call the core.

pub mod core;
pub mod objimpl;
pub mod pymem;
pub(crate) mod routes;
mod tables;

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

/// A domain's general targets (see [`routes`]): four functions that check
/// their arguments as CPython's wrappers do, then let the domain's state
/// decide (debug hooks, profiler, backend). `$prefix` names the API
/// family in reports (`PyMem_` gives `PyMem_Free`).
macro_rules! general_targets {
    ($domain:expr, $prefix:literal) => {{
        unsafe extern "C" fn malloc(size: usize) -> *mut ::core::ffi::c_void {
            if !$crate::ffi::size_ok(size) {
                return ::core::ptr::null_mut();
            }
            $crate::domain::malloc($domain, size).cast()
        }
        unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut ::core::ffi::c_void {
            if !$crate::ffi::count_ok(count, size) {
                return ::core::ptr::null_mut();
            }
            $crate::domain::calloc($domain, count, size).cast()
        }
        /// # Safety
        /// `block` is null or a live block of the domain.
        unsafe extern "C" fn realloc(
            block: *mut ::core::ffi::c_void,
            size: usize,
        ) -> *mut ::core::ffi::c_void {
            if !$crate::ffi::size_ok(size) {
                return ::core::ptr::null_mut();
            }
            // SAFETY: guaranteed by the caller.
            unsafe {
                $crate::domain::realloc($domain, block.cast(), size, concat!($prefix, "Realloc"))
                    .cast()
            }
        }
        /// # Safety
        /// `block` is null or a live block of the domain.
        unsafe extern "C" fn free(block: *mut ::core::ffi::c_void) {
            // SAFETY: guaranteed by the caller.
            unsafe { $crate::domain::free($domain, block.cast(), concat!($prefix, "Free")) }
        }
        $crate::ffi::routes::Targets {
            malloc,
            calloc,
            realloc,
            free,
        }
    }};
}
use general_targets;
