//! The C ABI. Each file here becomes one section of a generated header
//! (see `HEADERS` in build.rs): `core.rs` → the `PyCore_*` part of
//! `pymalloc/pymem.h`, `pymem.rs` → its CPython-named part, `objimpl.rs`
//! → `pymalloc/objimpl.h`. The functions only validate their arguments
//! (CPython's `PY_SSIZE_T_MAX` rules) and call the core.

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
