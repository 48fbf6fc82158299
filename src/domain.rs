//! The domains of the memory API — raw (`PyMem_Raw*`), memory
//! (`PyMem_*`), object (`PyObject_*`), plus the pooled allocator's own
//! family (`PyCore_*`) — what serves each, and where each domain's
//! exports go (its routes, [`crate::ffi::routes`]).
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
//! The domain types themselves are in the leaf module [`crate::setting`]
//! (re-exported here), so that the debug hooks and the profiler, which this
//! module calls, can name a domain without importing it.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::allocator;
use crate::config::{MEM_POOLED_BY_DEFAULT, OBJ_POOLED_BY_DEFAULT, RAW_POOLED_BY_DEFAULT};
use crate::debug;
use crate::ffi::routes::{Choice, Targets, PLAIN};
use crate::profile;
use crate::sync::Locked;
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
/// the exports read the routes chosen from it ([`crate::ffi::routes`]).
static STATE: [AtomicU8; 4] = [
    AtomicU8::new(encode(DEFAULT_SETTINGS[0])),
    AtomicU8::new(encode(DEFAULT_SETTINGS[1])),
    AtomicU8::new(encode(DEFAULT_SETTINGS[2])),
    AtomicU8::new(encode(DEFAULT_SETTINGS[3])),
];

/// Serialises state changes, so that the routes published last are those
/// of the state stored last; holds, per domain, the targets its exports
/// are forwarded to, if any (see [`forward`]). A leaf lock: nothing is
/// taken under it.
static STATE_CHANGE: Locked<[Option<Targets>; 4]> = Locked::new([None; 4]);

/// Take the state-change lock before `fork()` (see [`fork`](crate::fork)
/// for the order of all the locks).
pub(crate) fn lock_for_fork() {
    STATE_CHANGE.acquire_for_fork();
}

/// Release the state-change lock after `fork()`, in the parent or the child.
pub(crate) fn unlock_after_fork(in_child: bool) {
    STATE_CHANGE.release_after_fork(in_child);
}

/// Everything about how `domain` is served, in one byte: zero bits other
/// than `POOLED` mean the plain pooled fast path.
#[inline(always)]
pub fn state(domain: Domain) -> u8 {
    STATE[domain as usize].load(Ordering::Relaxed)
}

/// Change `domain`'s state to `update(old)` and point its exports'
/// routes at what the new state calls for. Every change goes through here.
fn update_state(domain: Domain, update: impl FnOnce(u8) -> u8) {
    let forwarded = STATE_CHANGE.lock();
    let slot = &STATE[domain as usize];
    let new = update(slot.load(Ordering::Relaxed));
    slot.store(new, Ordering::Relaxed);
    crate::ffi::routes::set(
        domain as usize,
        routes_for(domain, new, forwarded[domain as usize]),
    );
}

/// The targets `domain`'s exports call in state `state`, or `forwarded`
/// whatever the state (see [`crate::ffi::routes`]).
fn routes_for(domain: Domain, state: u8, forwarded: Option<Targets>) -> Choice {
    if let Some(elsewhere) = forwarded {
        return Choice {
            allocate: elsewhere,
            free: elsewhere.free,
        };
    }
    let general = match domain {
        Domain::Raw => crate::ffi::pymem::RAW_GENERAL,
        Domain::Mem => crate::ffi::pymem::MEM_GENERAL,
        Domain::Obj => crate::ffi::objimpl::OBJECT_GENERAL,
        Domain::Core => crate::ffi::core::CORE_GENERAL,
    };
    Choice {
        allocate: if state == POOLED { PLAIN } else { general },
        free: if state & DEBUG == 0 {
            PLAIN.free
        } else {
            general.free
        },
    }
}

pub fn setting(domain: Domain) -> Setting {
    decode(state(domain))
}

pub fn backend(domain: Domain) -> Backend {
    setting(domain).backend
}

pub fn set(domain: Domain, setting: Setting) {
    let backend = match domain {
        Domain::Core => Backend::Pymalloc,
        _ => setting.backend,
    };
    let encoded = encode(Setting { backend, ..setting });
    update_state(domain, |old| encoded | (old & PROFILE));
}

/// From now on, `domain`'s exports call `targets` (another allocator's
/// functions of the same names and contracts), whatever the domain's
/// state: the CPython integration passes libpython's own functions when a
/// libpython comes after us in lookup order ([`crate::cpython`]).
pub fn forward(domain: Domain, targets: Targets) {
    let mut forwarded = STATE_CHANGE.lock();
    forwarded[domain as usize] = Some(targets);
    let choice = routes_for(domain, state(domain), Some(targets));
    crate::ffi::routes::set(domain as usize, choice);
}

/// Whether `domain`'s exports are forwarded (see [`forward`]).
pub fn forwarding(domain: Domain) -> bool {
    STATE_CHANGE.lock()[domain as usize].is_some()
}

/// Route every domain's requests through the profiler from now on.
pub fn enable_profiling() {
    profile::enable();
    for domain in Domain::WITH_CORE {
        update_state(domain, |old| old | PROFILE);
    }
}

/// `PyMem_SetupDebugHooks`: the debug hooks over whatever serves each
/// domain. Blocks allocated before have no debug header: call it before
/// allocating.
pub fn enable_debug_hooks() {
    for domain in Domain::WITH_CORE {
        set(domain, setting(domain).with_debug(true));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MALLOC: Setting = Setting::plain(false);
    const POOL: Setting = Setting::plain(true);

    /// The exports' routes follow the domain's state: the plain targets
    /// only while nothing is over the pools (a malloc backend still frees
    /// through the plain route, where ownership decides), never with the
    /// debug hooks, whose blocks carry a header.
    #[test]
    fn routes_follow_the_domains_state() {
        use crate::ffi::routes;
        let raw = Domain::Raw as usize;
        let plain_malloc = || routes::malloc(raw) as usize == PLAIN.malloc as usize;
        let plain_free = || routes::free(raw) as usize == PLAIN.free as usize;
        let saved = setting(Domain::Raw);
        set(Domain::Raw, MALLOC);
        assert!(!plain_malloc() && plain_free(), "malloc backend");
        set(
            Domain::Raw,
            Setting {
                debug: true,
                ..MALLOC
            },
        );
        assert!(!plain_malloc() && !plain_free(), "debug hooks");
        set(Domain::Raw, POOL);
        assert!(plain_malloc() && plain_free(), "pooled");
        set(
            Domain::Raw,
            Setting {
                debug: true,
                ..POOL
            },
        );
        assert!(!plain_malloc() && !plain_free(), "pooled, debug hooks");
        set(Domain::Raw, saved);
    }
}
