//! `PyMem_GetAllocator` and `PyMem_SetAllocator` in a program with no
//! libpython after this library (with one, they are libpython's, and our
//! exports follow its tables: see [`crate::cpython`]): CPython's contract
//! over this library's three domains.
//!
//! A domain is served as configured (its setting: the pools or libc, the
//! debug hooks, the profiler) until the program sets a table for it; from
//! then on the domain's exports call that table, until the program sets
//! the configured table back. `PyMem_GetAllocator` gives the table set, or
//! else the domain's *configured table*: functions that serve the domain
//! as configured, so that a table set over it (a hook that counts, traces
//! or fails on purpose, as CPython's documentation describes) can call it
//! for the real work. The debug hooks that `PyMem_SetupDebugHooks` turns
//! on go into the configured serving, beneath a table set over it.

use core::ffi::{c_uint, c_void};
use core::sync::atomic::{AtomicPtr, Ordering};

use super::routes::{self, Targets};
use crate::cpython::PyMemAllocatorEx;
use crate::domain::Domain;
use crate::sync::Locked;

type HookMalloc = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type HookCalloc = unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void;
type HookRealloc = unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void;
type HookFree = unsafe extern "C" fn(*mut c_void, *mut c_void);

/// A table set for a domain, its five words as atomics: the domain's
/// exports read them on every call. CPython's contract asks programs not
/// to set a table while others allocate; a program that does may see
/// words of two tables in one call, as under CPython, but no torn word.
struct SetTable {
    ctx: AtomicPtr<c_void>,
    malloc: AtomicPtr<c_void>,
    calloc: AtomicPtr<c_void>,
    realloc: AtomicPtr<c_void>,
    free: AtomicPtr<c_void>,
}

impl SetTable {
    const fn empty() -> SetTable {
        SetTable {
            ctx: AtomicPtr::new(core::ptr::null_mut()),
            malloc: AtomicPtr::new(core::ptr::null_mut()),
            calloc: AtomicPtr::new(core::ptr::null_mut()),
            realloc: AtomicPtr::new(core::ptr::null_mut()),
            free: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    fn store(&self, table: &PyMemAllocatorEx) {
        let word = |f: Option<*mut c_void>| f.unwrap_or(core::ptr::null_mut());
        self.ctx.store(table.ctx, Ordering::Release);
        self.malloc.store(
            word(table.malloc.map(|f| f as *mut c_void)),
            Ordering::Release,
        );
        self.calloc.store(
            word(table.calloc.map(|f| f as *mut c_void)),
            Ordering::Release,
        );
        self.realloc.store(
            word(table.realloc.map(|f| f as *mut c_void)),
            Ordering::Release,
        );
        self.free.store(
            word(table.free.map(|f| f as *mut c_void)),
            Ordering::Release,
        );
    }

    fn is_set(&self) -> bool {
        !self.malloc.load(Ordering::Acquire).is_null()
    }

    fn load(&self) -> PyMemAllocatorEx {
        let function = |word: &AtomicPtr<c_void>| {
            let address = word.load(Ordering::Acquire);
            (!address.is_null()).then_some(address)
        };
        // SAFETY: each word was stored from the function of the same
        // position in a complete table (`set`), or is null.
        unsafe {
            PyMemAllocatorEx {
                ctx: self.ctx.load(Ordering::Acquire),
                malloc: function(&self.malloc)
                    .map(|f| core::mem::transmute::<*mut c_void, HookMalloc>(f)),
                calloc: function(&self.calloc)
                    .map(|f| core::mem::transmute::<*mut c_void, HookCalloc>(f)),
                realloc: function(&self.realloc)
                    .map(|f| core::mem::transmute::<*mut c_void, HookRealloc>(f)),
                free: function(&self.free)
                    .map(|f| core::mem::transmute::<*mut c_void, HookFree>(f)),
            }
        }
    }
}

/// Per domain (raw, mem, object), the table set, if any.
static SET: [SetTable; 3] = [const { SetTable::empty() }; 3];

/// Serialises `PyMem_SetAllocator`, so that the table stored last is the
/// one the routes lead to.
static SETTING: Locked<()> = Locked::new(());

/// The domain numbered `domain` in CPython's `PyMemAllocatorDomain`.
fn domain_named(domain: c_uint) -> Option<Domain> {
    Domain::ALL.get(domain as usize).copied()
}

// ---------------------------------------------------------------------------
// The exports' targets while a table is set: the table's functions.

macro_rules! set_table_targets {
    ($module:ident, $index:expr) => {
        mod $module {
            use super::*;

            unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
                let table = &SET[$index];
                let function = table.malloc.load(Ordering::Acquire);
                // SAFETY: the routes lead here only while a complete
                // table is stored (`set`); the word is its malloc.
                unsafe {
                    core::mem::transmute::<*mut c_void, HookMalloc>(function)(
                        table.ctx.load(Ordering::Acquire),
                        size,
                    )
                }
            }

            unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
                let table = &SET[$index];
                let function = table.calloc.load(Ordering::Acquire);
                // SAFETY: as in `malloc`.
                unsafe {
                    core::mem::transmute::<*mut c_void, HookCalloc>(function)(
                        table.ctx.load(Ordering::Acquire),
                        count,
                        size,
                    )
                }
            }

            /// # Safety
            /// `block` is null or a live block of the table's allocator.
            unsafe extern "C" fn realloc(block: *mut c_void, size: usize) -> *mut c_void {
                let table = &SET[$index];
                let function = table.realloc.load(Ordering::Acquire);
                // SAFETY: as in `malloc`; the block is the caller's.
                unsafe {
                    core::mem::transmute::<*mut c_void, HookRealloc>(function)(
                        table.ctx.load(Ordering::Acquire),
                        block,
                        size,
                    )
                }
            }

            /// # Safety
            /// `block` is null or a live block of the table's allocator.
            unsafe extern "C" fn free(block: *mut c_void) {
                let table = &SET[$index];
                let function = table.free.load(Ordering::Acquire);
                // SAFETY: as in `realloc`.
                unsafe {
                    core::mem::transmute::<*mut c_void, HookFree>(function)(
                        table.ctx.load(Ordering::Acquire),
                        block,
                    )
                }
            }

            pub(super) const TARGETS: Targets = Targets {
                malloc,
                calloc,
                realloc,
                free,
            };
        }
    };
}

set_table_targets!(set_raw, 0);
set_table_targets!(set_mem, 1);
set_table_targets!(set_obj, 2);

fn set_table_targets(domain: Domain) -> Targets {
    match domain {
        Domain::Raw => set_raw::TARGETS,
        Domain::Mem => set_mem::TARGETS,
        _ => set_obj::TARGETS,
    }
}

// ---------------------------------------------------------------------------
// The configured tables: the domain served as its setting says.

/// The configured tables' contexts: one byte per domain, whose address
/// names the domain.
static CONFIGURED: [u8; 3] = [0; 3];

fn configured_context(domain: Domain) -> *mut c_void {
    (&CONFIGURED[domain as usize] as *const u8)
        .cast_mut()
        .cast()
}

/// The domain whose configured table has context `ctx`, if it is one.
fn configured_domain(ctx: *mut c_void) -> Option<Domain> {
    Domain::ALL
        .into_iter()
        .find(|&domain| configured_context(domain) == ctx)
}

fn general_of_context(ctx: *mut c_void) -> Targets {
    routes::general(configured_domain(ctx).unwrap_or(Domain::Raw))
}

unsafe extern "C" fn configured_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the general targets take any size.
    unsafe { (general_of_context(ctx).malloc)(size) }
}

unsafe extern "C" fn configured_calloc(ctx: *mut c_void, count: usize, size: usize) -> *mut c_void {
    // SAFETY: as above.
    unsafe { (general_of_context(ctx).calloc)(count, size) }
}

/// # Safety
/// `block` is null or a live block of the domain as configured.
unsafe extern "C" fn configured_realloc(
    ctx: *mut c_void,
    block: *mut c_void,
    size: usize,
) -> *mut c_void {
    // SAFETY: guaranteed by the caller.
    unsafe { (general_of_context(ctx).realloc)(block, size) }
}

/// # Safety
/// As for `configured_realloc`.
unsafe extern "C" fn configured_free(ctx: *mut c_void, block: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { (general_of_context(ctx).free)(block) }
}

fn configured_table(domain: Domain) -> PyMemAllocatorEx {
    PyMemAllocatorEx {
        ctx: configured_context(domain),
        malloc: Some(configured_malloc),
        calloc: Some(configured_calloc),
        realloc: Some(configured_realloc),
        free: Some(configured_free),
    }
}

// ---------------------------------------------------------------------------
// The exports' bodies.

/// `PyMem_GetAllocator` without libpython: the table set for `domain`, or
/// its configured table; for a number that names no domain, a table of
/// nulls (as CPython gives).
///
/// # Safety
/// `allocator` is null or points to a writable `PyMemAllocatorEx`.
pub(super) unsafe fn get(domain: c_uint, allocator: *mut PyMemAllocatorEx) {
    if allocator.is_null() {
        crate::report::message(format_args!(
            "PyMem_GetAllocator: the allocator argument is NULL; nothing written"
        ));
        return;
    }
    let table = match domain_named(domain) {
        Some(domain) if SET[domain as usize].is_set() => SET[domain as usize].load(),
        Some(domain) => configured_table(domain),
        None => PyMemAllocatorEx::EMPTY,
    };
    // SAFETY: guaranteed by the caller.
    unsafe { allocator.write(table) };
}

/// `PyMem_SetAllocator` without libpython: from now on `domain`'s exports
/// call `*allocator`'s functions, or serve as configured again when it is
/// the domain's configured table. A number that names no domain, a null
/// pointer or a table with a null function set nothing, with a message on
/// stderr.
///
/// # Safety
/// `allocator` is null or points to a readable `PyMemAllocatorEx` whose
/// functions honour CPython's contract for the domain; blocks allocated
/// before are freed through the new table (CPython's rule: a table set
/// after allocations must wrap the one it replaces).
pub(super) unsafe fn set(domain: c_uint, allocator: *const PyMemAllocatorEx) {
    let Some(named) = domain_named(domain) else {
        crate::report::message(format_args!(
            "PyMem_SetAllocator: {domain} is not a domain (PYMEM_DOMAIN_RAW 0, \
             PYMEM_DOMAIN_MEM 1, PYMEM_DOMAIN_OBJ 2); nothing set"
        ));
        return;
    };
    if allocator.is_null() {
        crate::report::message(format_args!(
            "PyMem_SetAllocator: the allocator argument is NULL; nothing set"
        ));
        return;
    }
    // SAFETY: guaranteed by the caller.
    let table = unsafe { allocator.read() };
    if table.malloc.is_none()
        || table.calloc.is_none()
        || table.realloc.is_none()
        || table.free.is_none()
    {
        crate::report::message(format_args!(
            "PyMem_SetAllocator: the table for the {} domain has a NULL function; nothing set",
            named.name()
        ));
        return;
    }
    let _guard = SETTING.lock();
    if configured_domain(table.ctx) == Some(named) {
        routes::redirect(named, None);
        SET[named as usize].store(&PyMemAllocatorEx::EMPTY);
    } else {
        SET[named as usize].store(&table);
        routes::redirect(named, Some(set_table_targets(named)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static BELOW: [SetTable; 1] = [const { SetTable::empty() }];

    unsafe extern "C" fn counting_malloc(_: *mut c_void, size: usize) -> *mut c_void {
        CALLS.fetch_add(1, Ordering::Relaxed);
        let below = BELOW[0].load();
        // SAFETY: the configured table stored by the test.
        unsafe { (below.malloc.unwrap())(below.ctx, size) }
    }
    unsafe extern "C" fn counting_calloc(_: *mut c_void, count: usize, size: usize) -> *mut c_void {
        let below = BELOW[0].load();
        // SAFETY: as above.
        unsafe { (below.calloc.unwrap())(below.ctx, count, size) }
    }
    unsafe extern "C" fn counting_realloc(
        _: *mut c_void,
        block: *mut c_void,
        size: usize,
    ) -> *mut c_void {
        let below = BELOW[0].load();
        // SAFETY: as above.
        unsafe { (below.realloc.unwrap())(below.ctx, block, size) }
    }
    unsafe extern "C" fn counting_free(_: *mut c_void, block: *mut c_void) {
        let below = BELOW[0].load();
        // SAFETY: as above.
        unsafe { (below.free.unwrap())(below.ctx, block) }
    }

    /// A table set over the configured one sees the domain's calls and
    /// serves them through it; setting the configured table back ends the
    /// redirection; what names no domain, or a table with a null
    /// function, sets nothing.
    #[test]
    fn a_table_set_over_the_configured_one_sees_every_call() {
        let mem = Domain::Mem as c_uint;
        let mut configured = PyMemAllocatorEx::EMPTY;
        // SAFETY: a writable table.
        unsafe { get(mem, &mut configured) };
        assert_eq!(configured.ctx, configured_context(Domain::Mem));
        BELOW[0].store(&configured);
        let counting = PyMemAllocatorEx {
            ctx: core::ptr::null_mut(),
            malloc: Some(counting_malloc),
            calloc: Some(counting_calloc),
            realloc: Some(counting_realloc),
            free: Some(counting_free),
        };
        // SAFETY: a complete table that wraps the configured one.
        unsafe { set(mem, &counting) };
        let malloc = routes::malloc(Domain::Mem as usize);
        let free = routes::free(Domain::Mem as usize);
        let before = CALLS.load(Ordering::Relaxed);
        // SAFETY: the domain's own routes, a block freed once.
        unsafe {
            let block = malloc(40);
            assert!(!block.is_null());
            assert!(
                crate::allocator::owns(block.cast()),
                "served by the pools beneath"
            );
            free(block);
        }
        assert_eq!(CALLS.load(Ordering::Relaxed), before + 1);
        let mut got = configured;
        // SAFETY: a writable table.
        unsafe { get(mem, &mut got) };
        assert_eq!(
            got.malloc.map(|f| f as *const ()),
            Some(counting_malloc as *const ())
        );

        // Not a domain; a null function: nothing set.
        // SAFETY: tables readable.
        unsafe {
            set(7, &configured);
            set(
                mem,
                &PyMemAllocatorEx {
                    free: None,
                    ..configured
                },
            );
        }
        // SAFETY: a writable table.
        unsafe { get(mem, &mut got) };
        assert_eq!(
            got.malloc.map(|f| f as *const ()),
            Some(counting_malloc as *const ())
        );

        // SAFETY: the configured table, as `get` gave it.
        unsafe { set(mem, &configured) };
        let malloc = routes::malloc(Domain::Mem as usize);
        let free = routes::free(Domain::Mem as usize);
        let before = CALLS.load(Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { free(malloc(40)) };
        assert_eq!(
            CALLS.load(Ordering::Relaxed),
            before,
            "no longer redirected"
        );
        // SAFETY: a writable table.
        unsafe { get(mem, &mut got) };
        assert_eq!(got.ctx, configured_context(Domain::Mem));
    }
}
