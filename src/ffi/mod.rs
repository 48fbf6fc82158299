//! The C ABI. Each file here becomes one section of a generated header
//! (see `HEADERS` in build.rs): `core.rs` → the `PyCore_*` part of
//! `pymalloc/pymem.h`, `pymem.rs` → its CPython-named part, `objimpl.rs`
//! → `pymalloc/objimpl.h`. The functions only validate their arguments
//! (CPython's `PY_SSIZE_T_MAX` rules) and call the core.

use ::core::ffi::c_void;

use crate::allocator;
use crate::arena_space;
use crate::cpython_dispatch;
use crate::domain::{self, Domain};
use crate::heap;

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

/// An export's allocation: the pooled fast path inline when the heap is
/// plainly pooled (no debug hooks, profiler, forwarding or malloc
/// backend), or when, inside a CPython, its live table is ours (one path
/// for both, so that neither pays for the other beyond its test);
/// anything else through `other` (given the heap's state), kept out of
/// line.
#[inline(always)]
fn malloc_export(domain: Domain, size: usize, other: fn(u8, usize) -> *mut c_void) -> *mut c_void {
    let state = domain::state(domain);
    if pooled_in_place(domain, state) {
        if let Some(block) = allocator::malloc_small(size) {
            return block.cast();
        }
    }
    other(state, size)
}

/// An export's calloc: as `malloc_export`, for a small product (zeroed
/// inline); anything else (overflow, zero, large) through `other`.
#[inline(always)]
fn calloc_export(
    domain: Domain,
    count: usize,
    size: usize,
    other: fn(u8, usize, usize) -> *mut c_void,
) -> *mut c_void {
    let state = domain::state(domain);
    if pooled_in_place(domain, state) {
        if let Some(block) = allocator::calloc_small(count, size) {
            return block.cast();
        }
    }
    other(state, count, size)
}

/// An export's realloc: as `malloc_export`, when the pools alone serve
/// it (see `allocator::realloc_small`); anything else through `other`.
///
/// # Safety
/// `ptr` is NULL or a live block of `domain`.
#[inline(always)]
unsafe fn realloc_export(
    domain: Domain,
    ptr: *mut c_void,
    size: usize,
    other: unsafe fn(u8, *mut c_void, usize) -> *mut c_void,
) -> *mut c_void {
    let state = domain::state(domain);
    // SAFETY: guaranteed by the caller; a domain served by the pools in
    // place has no debug headers on its blocks.
    unsafe {
        if pooled_in_place(domain, state) {
            if let Some(block) = allocator::realloc_small(ptr.cast(), size) {
                return block.cast();
            }
        }
        other(state, ptr, size)
    }
}

/// Whether the pools serve `domain` directly: its state is plain pooled,
/// or CPython's live table for it is ours.
#[inline(always)]
fn pooled_in_place(domain: Domain, state: u8) -> bool {
    state == domain::PLAIN_POOLED || cpython_dispatch::table_is_ours(domain)
}

/// An export's free. A block of the arena space, of a domain whose
/// blocks may go straight back to the pools (no debug header, no
/// forwarding), is freed inline after one compare (see
/// `arena_space::frees_directly`); inside a CPython whose live table is
/// ours, a block of the arena space too. Anything else (null, foreign
/// blocks, debug hooks, forwarding) goes to `other`, out of line, with the
/// domain's state.
///
/// # Safety
/// `ptr` is NULL or a live block of `domain`.
#[inline(always)]
unsafe fn free_export(domain: Domain, ptr: *mut c_void, other: unsafe fn(u8, *mut c_void)) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if arena_space::frees_directly(domain as usize, ptr as usize) {
            // A live block (caller) of the span is in one of our arenas,
            // and the domain's blocks carry no header.
            heap::free(ptr.cast());
            return;
        }
        if cpython_dispatch::free_if_ours(domain, ptr.cast()) {
            return;
        }
        other(domain::state(domain), ptr)
    }
}

/// Inside a CPython whose live table is known (`LIVE_TABLE` in `state`),
/// return what libpython's function of the same name returns after its
/// argument checks: the domain's table called. Nothing happens when the
/// table is not known (the export goes on to forward to libpython).
macro_rules! through_live_table {
    ($state:expr, $domain:expr => $call:ident($($arg:expr),*)) => {
        if $state & $crate::domain::LIVE_TABLE != 0 {
            // SAFETY: the state says the live table's address is known;
            // the arguments are the export's, checked as CPython does.
            #[allow(unused_unsafe)]
            return unsafe { $crate::cpython_dispatch::$call($domain, $($arg),*) }.cast();
        }
    };
}
pub(crate) use through_live_table;
