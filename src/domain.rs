//! The domains of the memory API — raw (`PyMem_Raw*`), memory
//! (`PyMem_*`), object (`PyObject_*`), plus the pooled allocator's own
//! family (`PyCore_*`) — what serves each, and the per-call dispatch that
//! follows it.
//!
//! The 2002 proposal's "configure option": each domain is served either by
//! libc malloc or by the pooled allocator, optionally under the debug hooks
//! (see [`crate::debug`]). The build sets the default
//! (`make PYMALLOC_MEM=malloc`); the environment overrides it at load time
//! ([`crate::options`]), with CPython's `PYTHONMALLOC` names in `PYMALLOC`:
//!
//! | `PYMALLOC`       | raw            | mem, object      | PyCore_*        |
//! |------------------|----------------|------------------|-----------------|
//! | `pymalloc`       | malloc         | pymalloc         | pymalloc        |
//! | `malloc`         | malloc         | malloc           | pymalloc        |
//! | `debug`, `pymalloc_debug` | malloc + debug | pymalloc + debug | pymalloc + debug |
//! | `malloc_debug`   | malloc + debug | malloc + debug   | pymalloc + debug |
//!
//! and per domain in `PYMALLOC_RAW`, `PYMALLOC_MEM`, `PYMALLOC_OBJ` (the
//! same four names without `debug`). `PyMem_SetupDebugHooks()` turns the
//! debug hooks on over whatever serves each domain.
//!
//! Without the debug hooks, free and realloc ask the address map who owns
//! a block, so a block always returns to the allocator that made it. With
//! them, each domain checks that its blocks come back through its own
//! family.
//!
//! This module holds each domain's state and dispatches on it per call
//! (the general path). It does not change the state itself: the C ABI's
//! routes do, because each change must republish where the domain's
//! exports jump, atomically with the new state (`ffi::routes`, above this
//! module: the targets it chooses are C functions of the ABI, and the
//! general ones call back into the dispatch here). The state byte's
//! layout stays private to this module: the routes change it with
//! [`with_setting`] and [`with_profiling`] and read it with [`is_plain`]
//! and [`frees_plain`].
//!
//! The domain types themselves are in the leaf module [`crate::setting`]
//! (re-exported here), so that the debug hooks and the profiler, which this
//! module calls, can name a domain without importing it.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::allocator;
use crate::config::{MEM_POOLED_BY_DEFAULT, OBJ_POOLED_BY_DEFAULT, RAW_POOLED_BY_DEFAULT};
use crate::debug;
use crate::profile;
use crate::system;

pub use crate::setting::{Backend, Domain, Setting};

/// The build's setting of each domain, in `[raw, mem, obj, core]` order
/// (`make PYMALLOC_MEM=malloc`): what serves it until the environment is
/// read, and unless the environment says otherwise.
pub const DEFAULT_SETTINGS: [Setting; 4] = [
    Setting::plain(RAW_POOLED_BY_DEFAULT),
    Setting::plain(MEM_POOLED_BY_DEFAULT),
    Setting::plain(OBJ_POOLED_BY_DEFAULT),
    Setting::plain(true),
];

const POOLED: u8 = 1;
const DEBUG: u8 = 2;
/// The profiler counts this domain's requests (see [`crate::profile`]).
const PROFILE: u8 = 4;

const fn encode(setting: Setting) -> u8 {
    (matches!(setting.backend, Backend::Pymalloc) as u8) | if setting.debug { DEBUG } else { 0 }
}

const fn decode(state: u8) -> Setting {
    Setting {
        backend: if state & POOLED != 0 {
            Backend::Pymalloc
        } else {
            Backend::Malloc
        },
        debug: state & DEBUG != 0,
    }
}

/// Each domain's state byte: its setting, and whether the profiler counts
/// its requests. Read by the general routes per call and by statistics;
/// the exports read the routes chosen from it (`ffi::routes`).
static STATE: [AtomicU8; 4] = [
    AtomicU8::new(encode(DEFAULT_SETTINGS[0])),
    AtomicU8::new(encode(DEFAULT_SETTINGS[1])),
    AtomicU8::new(encode(DEFAULT_SETTINGS[2])),
    AtomicU8::new(encode(DEFAULT_SETTINGS[3])),
];

/// Whether each domain's exports are forwarded to libpython's functions
/// of the same names (set once, by `ffi::routes::forward`), for the
/// statistics.
static FORWARDED: [AtomicBool; 4] = [const { AtomicBool::new(false) }; 4];

/// Everything about how `domain` is served, in one byte: zero bits other
/// than `POOLED` mean the plain pooled fast path.
#[inline(always)]
pub fn state(domain: Domain) -> u8 {
    STATE[domain as usize].load(Ordering::Relaxed)
}

/// Store `domain`'s new state. Only the routes' state changes call it,
/// serialised by their lock, and then point the domain's exports at what
/// the new state calls for (`ffi::routes`).
pub(crate) fn store_state(domain: Domain, state: u8) {
    STATE[domain as usize].store(state, Ordering::Relaxed);
}

/// `state` with `setting` in place of its setting (the profiler's bit
/// kept). `PyCore_*` is always served by the pools.
pub(crate) const fn with_setting(domain: Domain, state: u8, setting: Setting) -> u8 {
    let backend = match domain {
        Domain::Core => Backend::Pymalloc,
        _ => setting.backend,
    };
    encode(Setting { backend, ..setting }) | (state & PROFILE)
}

/// `state` with the profiler counting the domain's requests.
pub(crate) const fn with_profiling(state: u8) -> u8 {
    state | PROFILE
}

/// Whether a domain in `state` allocates through the plain pooled fast
/// path: the pools, nothing over them.
pub(crate) const fn is_plain(state: u8) -> bool {
    state == POOLED
}

/// Whether a domain in `state` frees through the plain path (no debug
/// header on its blocks: ownership decides who frees them).
pub(crate) const fn frees_plain(state: u8) -> bool {
    state & DEBUG == 0
}

/// Record that `domain`'s exports are forwarded to libpython (see
/// [`forwarding`]).
pub(crate) fn mark_forwarded(domain: Domain) {
    FORWARDED[domain as usize].store(true, Ordering::Relaxed);
}

/// Whether `domain`'s exports are forwarded to libpython's functions of
/// the same names (`ffi::routes::forward`).
pub fn forwarding(domain: Domain) -> bool {
    FORWARDED[domain as usize].load(Ordering::Relaxed)
}

/// Whether each domain's exports, forwarded, serve the pools directly
/// because CPython's table for the domain is ours (for the statistics).
static DIRECT: [AtomicBool; 4] = [const { AtomicBool::new(false) }; 4];

/// Record whether `domain`'s forwarded exports now serve the pools
/// directly (see [`crate::cpython::follow_live_tables`]).
pub(crate) fn mark_direct(domain: Domain, direct: bool) {
    DIRECT[domain as usize].store(direct, Ordering::Relaxed);
}

/// Whether `domain`'s exports, which lead to libpython, serve the pools
/// directly while CPython's table for the domain is ours.
pub fn serving_directly(domain: Domain) -> bool {
    DIRECT[domain as usize].load(Ordering::Relaxed)
}

pub fn setting(domain: Domain) -> Setting {
    decode(state(domain))
}

pub fn backend(domain: Domain) -> Backend {
    setting(domain).backend
}

#[inline(always)]
pub fn malloc(domain: Domain, size: usize) -> *mut u8 {
    let state = state(domain);
    if state == POOLED {
        allocator::malloc(size)
    } else {
        malloc_other(domain, state, size)
    }
}

#[inline(never)]
fn malloc_other(domain: Domain, state: u8, size: usize) -> *mut u8 {
    if state & PROFILE != 0 {
        profile::record(profile::Event::Malloc, domain, size);
    }
    match decode(state) {
        Setting {
            debug: true,
            backend,
        } => debug::malloc(domain, backend, size),
        Setting {
            backend: Backend::Pymalloc,
            ..
        } => allocator::malloc(size),
        Setting {
            backend: Backend::Malloc,
            ..
        } => system::malloc(size),
    }
}

#[inline(always)]
pub fn calloc(domain: Domain, count: usize, size: usize) -> *mut u8 {
    if state(domain) & PROFILE != 0 {
        profile::record(profile::Event::Calloc, domain, count.saturating_mul(size));
    }
    let setting = setting(domain);
    match (setting.debug, setting.backend) {
        (false, Backend::Pymalloc) => allocator::calloc(count, size),
        (false, Backend::Malloc) => system::calloc(count, size),
        (true, backend) => debug::calloc(domain, backend, count, size),
    }
}

/// # Safety
/// `block` is null or a live block of `domain`. `function` names the API
/// function for reports.
#[inline(always)]
pub unsafe fn realloc(domain: Domain, block: *mut u8, size: usize, function: &str) -> *mut u8 {
    let state = state(domain);
    if state & PROFILE != 0 {
        // SAFETY: guaranteed by the caller.
        unsafe { record_realloc(domain, state, block, size) };
    }
    let setting = decode(state);
    if setting.debug {
        // SAFETY: guaranteed by the caller.
        return unsafe { debug::realloc(domain, setting.backend, block, size, function) };
    }
    if block.is_null() {
        return malloc(domain, size);
    }
    // SAFETY: guaranteed by the caller.
    unsafe { allocator::realloc(block, size) }
}

/// # Safety
/// `block` is null or a live block of `domain`.
#[inline(always)]
pub unsafe fn free(domain: Domain, block: *mut u8, function: &str) {
    if state(domain) & DEBUG == 0 {
        // SAFETY: guaranteed by the caller.
        unsafe { allocator::free(block) }
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { debug::free(domain, block, function) }
    }
}

/// # Safety
/// `block` is null or a live block of `domain`.
#[cold]
unsafe fn record_realloc(domain: Domain, state: u8, block: *mut u8, size: usize) {
    let old_size = if block.is_null() {
        Some(0)
    } else if state & DEBUG != 0 {
        // SAFETY: a live debug block (caller).
        Some(unsafe { debug::requested_size(block) })
    } else if allocator::owns(block) {
        // SAFETY: a live pooled block (caller).
        Some(unsafe { crate::heap::block_usable_size(block) })
    } else {
        // SAFETY: not ours, so a live libc block (caller).
        Some(unsafe { libc::malloc_usable_size(block.cast()) })
    };
    profile::record_realloc(domain, old_size, size);
}
