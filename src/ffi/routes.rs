//! Where each memory function of each domain goes: one word per function
//! and domain, chosen whenever the domain's state changes and read by the
//! export on every call, which then tail-calls it (two instructions: the
//! table's address, the indirect jump).
//!
//! What is fixed between state changes is bound here rather than tested
//! per call:
//!
//! * **plain**: the domain is served by the pools with nothing over them
//!   (the default for mem, object and `PyCore_*`). The target is the
//!   pooled fast path itself, with no state test: the same four functions
//!   for every plain domain.
//! * **forward**: a libpython comes after this library in the lookup order
//!   (`LD_PRELOAD`, or linked before it), so its calls reach our exports:
//!   while CPython's table for the domain is ours, the exports' targets are
//!   our hook functions with the domain's context bound (what CPython's
//!   table would reach, without libpython's wrapper); otherwise libpython's
//!   own functions, so that CPython's dispatch (tracemalloc, its debug
//!   hooks, another table) stays exact (see [`crate::cpython`]).
//! * **redirected**: a table the program set with `PyMem_SetAllocator`,
//!   without a CPython ([`super::tables`]).
//! * **general**: anything else (debug hooks, the profiler, a malloc
//!   backend): the domain's state decides per call, out of the fast path.
//!
//! A free's route may be plain while its domain's allocations are not: a
//! malloc-backed domain without debug hooks frees through the ownership
//! test, like a plain one. Switching a domain to the debug hooks changes
//! the free route before the allocation routes, so that no block with a
//! debug header is ever freed by the plain route.
//!
//! Every change of a domain's state goes through this module ([`set`],
//! [`forward`], [`redirect`], [`enable_profiling`], [`enable_debug_hooks`]): under one
//! lock, it stores the new state in [`crate::domain`] and then points the
//! domain's routes at what that state calls for, so that the routes
//! published last are those of the state stored last. The domain module
//! below keeps the state and the general path's per-call dispatch on it,
//! and knows nothing of the routes.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

use super::{count_ok, size_ok};
use crate::allocator;
use crate::config::{MEM_POOLED_BY_DEFAULT, OBJ_POOLED_BY_DEFAULT, RAW_POOLED_BY_DEFAULT};
use crate::domain::{self, Domain, Setting};
use crate::profile;
use crate::sync::Locked;

#[cfg(any(test, not(target_arch = "x86_64")))]
use crate::setting::MallocFn;
#[cfg(not(target_arch = "x86_64"))]
use crate::setting::{CallocFn, ReallocFn};
pub(crate) use crate::setting::{FreeFn, Targets};

/// A domain's four targets (function pointers stored as words).
#[repr(C)]
struct DomainRoutes {
    malloc: AtomicPtr<()>,
    calloc: AtomicPtr<()>,
    realloc: AtomicPtr<()>,
    free: AtomicPtr<()>,
}

/// The plain targets, shared by every plain domain.
pub const PLAIN: Targets = Targets {
    malloc: plain_malloc,
    calloc: plain_calloc,
    realloc: plain_realloc,
    free: plain_free,
};

/// What a domain's routes point to (chosen by [`routes_for`]).
#[derive(Clone, Copy)]
struct Choice {
    /// Allocation targets: plain, general or forwarded.
    allocate: Targets,
    /// The free target (see the module documentation).
    free: FreeFn,
}

const fn initial(general: Targets, pooled: bool) -> DomainRoutes {
    let allocate = if pooled { PLAIN } else { general };
    DomainRoutes {
        malloc: AtomicPtr::new(allocate.malloc as *mut ()),
        calloc: AtomicPtr::new(allocate.calloc as *mut ()),
        realloc: AtomicPtr::new(allocate.realloc as *mut ()),
        free: AtomicPtr::new(plain_free as *mut ()),
    }
}

/// Indexed by `Domain as usize`: raw, mem, object, core. Until the
/// environment is read (at load), the build's defaults.
#[repr(C, align(64))]
pub(crate) struct Routes([DomainRoutes; 4]);

pub(crate) static ROUTES: Routes = Routes([
    initial(super::pymem::RAW_GENERAL, RAW_POOLED_BY_DEFAULT),
    initial(super::pymem::MEM_GENERAL, MEM_POOLED_BY_DEFAULT),
    initial(super::objimpl::OBJECT_GENERAL, OBJ_POOLED_BY_DEFAULT),
    initial(super::core::CORE_GENERAL, true),
]);

/// Point `domain`'s routes at `choice`: the free route first when it
/// leaves the plain path (see the module documentation), last otherwise.
fn publish(domain: usize, choice: Choice) {
    let routes = &ROUTES.0[domain];
    let free_leaves_plain = choice.free as *const () != plain_free as *const ();
    if free_leaves_plain {
        routes.free.store(choice.free as *mut (), Ordering::Release);
    }
    routes
        .malloc
        .store(choice.allocate.malloc as *mut (), Ordering::Release);
    routes
        .calloc
        .store(choice.allocate.calloc as *mut (), Ordering::Release);
    routes
        .realloc
        .store(choice.allocate.realloc as *mut (), Ordering::Release);
    if !free_leaves_plain {
        routes.free.store(choice.free as *mut (), Ordering::Release);
    }
}

// ---------------------------------------------------------------------------
// State changes: each stores the domain's new state, then its routes.

/// Serialises state changes, so that the routes published last are those
/// of the state stored last; holds, per domain, the targets its exports
/// are redirected to, if any (see [`redirect`]). A leaf lock: nothing is
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

/// Change `domain`'s state to `update(old)` and point its exports'
/// routes at what the new state calls for. Every change goes through here.
fn update_state(domain: Domain, update: impl FnOnce(u8) -> u8) {
    let redirected = STATE_CHANGE.lock();
    let new = update(domain::state(domain));
    domain::store_state(domain, new);
    publish(
        domain as usize,
        routes_for(domain, new, redirected[domain as usize]),
    );
}

/// The targets `domain`'s exports call in state `state`, or `redirected`
/// whatever the state.
fn routes_for(domain: Domain, state: u8, redirected: Option<Targets>) -> Choice {
    if let Some(elsewhere) = redirected {
        return Choice {
            allocate: elsewhere,
            free: elsewhere.free,
        };
    }
    let general = general(domain);
    Choice {
        allocate: if domain::is_plain(state) {
            PLAIN
        } else {
            general
        },
        free: if domain::frees_plain(state) {
            PLAIN.free
        } else {
            general.free
        },
    }
}

/// `domain`'s general targets: its state decides per call.
pub(crate) fn general(domain: Domain) -> Targets {
    match domain {
        Domain::Raw => super::pymem::RAW_GENERAL,
        Domain::Mem => super::pymem::MEM_GENERAL,
        Domain::Obj => super::objimpl::OBJECT_GENERAL,
        Domain::Core => super::core::CORE_GENERAL,
    }
}

/// Serve `domain` as `setting` says from now on (`PyCore_*` always from
/// the pools).
pub fn set(domain: Domain, setting: Setting) {
    update_state(domain, |old| domain::with_setting(domain, old, setting));
}

/// From now on, `domain`'s exports call `targets` (another allocator's
/// functions of the same names and contracts), whatever the domain's
/// state: the CPython integration passes libpython's own functions, or
/// its direct targets, when a libpython comes after us in lookup order
/// ([`crate::cpython`]).
pub fn forward(domain: Domain, targets: Targets) {
    domain::mark_forwarded(domain);
    redirect(domain, Some(targets));
}

/// From now on, `domain`'s exports call `targets` whatever the domain's
/// state, or, with `None`, what its state calls for again: for
/// [`forward`], and for a table set with `PyMem_SetAllocator` without a
/// CPython ([`super::tables`]).
pub fn redirect(domain: Domain, targets: Option<Targets>) {
    let mut redirected = STATE_CHANGE.lock();
    redirected[domain as usize] = targets;
    let choice = routes_for(domain, domain::state(domain), targets);
    publish(domain as usize, choice);
}

/// Route every domain's requests through the profiler from now on.
pub fn enable_profiling() {
    profile::enable();
    for domain in Domain::WITH_CORE {
        update_state(domain, domain::with_profiling);
    }
}

/// `PyMem_SetupDebugHooks`: the debug hooks over whatever serves each
/// domain. Blocks allocated before have no debug header: call it before
/// allocating.
pub fn enable_debug_hooks() {
    for domain in Domain::WITH_CORE {
        set(domain, domain::setting(domain).with_debug(true));
    }
}

/// The body of an export: continue in its route's target, with the
/// export's arguments. On x86-64 the export is a naked function whose
/// whole body is one indirect jump through the route (the table is in
/// this library, addressed relative to the instruction); elsewhere a
/// call of the loaded target in tail position.
#[cfg(target_arch = "x86_64")]
macro_rules! jump {
    ($op:ident, $domain:expr, $($arg:expr),*) => {
        ::core::arch::naked_asm!(
            "jmp qword ptr [rip + {routes} + {offset}]",
            routes = sym $crate::ffi::routes::ROUTES,
            offset = const $crate::ffi::routes::offset($domain as usize, $crate::ffi::routes::Op::$op),
        )
    };
}
#[cfg(not(target_arch = "x86_64"))]
macro_rules! jump {
    ($op:ident, $domain:expr, $($arg:expr),*) => {
        // SAFETY: the export's caller guarantees what the target needs.
        unsafe { $crate::ffi::routes::$op($domain as usize)($($arg),*) }
    };
}
pub(crate) use jump;

/// The four memory functions, in the order of a domain's routes.
#[cfg(target_arch = "x86_64")]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy)]
pub enum Op {
    malloc = 0,
    calloc = 1,
    realloc = 2,
    free = 3,
}

/// Byte offset of `domain`'s route for `op` in the table.
#[cfg(target_arch = "x86_64")]
pub const fn offset(domain: usize, op: Op) -> usize {
    (domain * 4 + op as usize) * core::mem::size_of::<AtomicPtr<()>>()
}

// The route readers: the bodies of the exports where they are not one
// naked jump (`jump!` off x86-64), and the tests.

/// The current malloc target of `domain`.
#[cfg(any(test, not(target_arch = "x86_64")))]
#[inline(always)]
pub fn malloc(domain: usize) -> MallocFn {
    let target = ROUTES.0[domain].malloc.load(Ordering::Acquire);
    // SAFETY: the routes only ever hold `MallocFn`s (see `publish`,
    // `initial`).
    unsafe { core::mem::transmute::<*mut (), MallocFn>(target) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn calloc(domain: usize) -> CallocFn {
    let target = ROUTES.0[domain].calloc.load(Ordering::Acquire);
    // SAFETY: as in `malloc`.
    unsafe { core::mem::transmute::<*mut (), CallocFn>(target) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn realloc(domain: usize) -> ReallocFn {
    let target = ROUTES.0[domain].realloc.load(Ordering::Acquire);
    // SAFETY: as in `malloc`.
    unsafe { core::mem::transmute::<*mut (), ReallocFn>(target) }
}

#[cfg(any(test, not(target_arch = "x86_64")))]
#[inline(always)]
pub fn free(domain: usize) -> FreeFn {
    let target = ROUTES.0[domain].free.load(Ordering::Acquire);
    // SAFETY: as in `malloc`.
    unsafe { core::mem::transmute::<*mut (), FreeFn>(target) }
}

// ---------------------------------------------------------------------------
// The plain targets: the pools, nothing over them, no state test.

unsafe extern "C" fn plain_malloc(size: usize) -> *mut c_void {
    match allocator::malloc_small(size) {
        Some(block) => block.cast(),
        None => plain_malloc_other(size),
    }
}

/// Zero, large and invalid sizes, out of line.
#[cold]
#[inline(never)]
fn plain_malloc_other(size: usize) -> *mut c_void {
    if !size_ok(size) {
        return core::ptr::null_mut();
    }
    allocator::malloc(size).cast()
}

unsafe extern "C" fn plain_calloc(count: usize, size: usize) -> *mut c_void {
    match allocator::calloc_small(count, size) {
        Some(block) => block.cast(),
        None => plain_calloc_other(count, size),
    }
}

#[cold]
#[inline(never)]
fn plain_calloc_other(count: usize, size: usize) -> *mut c_void {
    if !count_ok(count, size) {
        return core::ptr::null_mut();
    }
    allocator::calloc_unpooled(&allocator::System, count, size).cast()
}

/// # Safety
/// `block` is null or a live block of the domain.
unsafe extern "C" fn plain_realloc(block: *mut c_void, size: usize) -> *mut c_void {
    if !size_ok(size) {
        return core::ptr::null_mut();
    }
    // SAFETY: guaranteed by the caller; a plain domain's blocks carry no
    // header.
    unsafe { allocator::realloc(block.cast(), size).cast() }
}

/// # Safety
/// `block` is null or a live block without a debug header (of the pools
/// or of libc: ownership decides).
unsafe extern "C" fn plain_free(block: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { allocator::free(block.cast()) }
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
        let raw = Domain::Raw as usize;
        let plain_malloc = || malloc(raw) as usize == PLAIN.malloc as usize;
        let plain_free = || free(raw) as usize == PLAIN.free as usize;
        let saved = domain::setting(Domain::Raw);
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
